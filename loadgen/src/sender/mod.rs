//! One gateway's sender: an open-loop schedule of heartbeats, alarms and scenario events,
//! batching, the unacked-alarm store with retransmission, ack bookkeeping, the outage
//! (abrupt drop, back-off, reconnect) and bad input.
//!
//! Events are due at fixed times from the common start: heartbeats at `hb_rate` per second
//! (cycling through the gateway's points) or per point at its device class interval,
//! background alarms at `alarm_rate` per second (random points), scripted events at their
//! planned times. Each event keeps its intended send time, and latency is measured from then
//! to the receipt of the ack, so a slow engine (or a stalled sender, or a gateway that was
//! down) shows up in the latency instead of silently lowering the offered load.
//!
//! Modules: `schedule` (what falls due when), `publish` (batching and the unacked
//! store), `acks` (ack bookkeeping and latency), `outage` (drop, back-off, reconnect),
//! `bad` (malformed and foreign input).

mod acks;
mod bad;
pub mod hists;
mod outage;
mod publish;
mod schedule;

pub use bad::OVERSIZE_BYTES;

use crate::cli::AckMode;
use crate::link::{Link, LinkConfig, LinkState};
use crate::plan::GatewayPlan;
use crate::report::{BadCounters, Counters};
use crate::scenario::{BadTarget, GatewayExtras, Scripted, Source};
use crate::timeline::Timeline;
use bad::BadKind;
use firewatch_proto::PointEvent;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// The run's common timing, shared by all gateways.
pub struct Schedule {
    /// Time zero of every gateway's schedule.
    pub start: Instant,
    /// Unix ms at `start` (for `device_time_ms`).
    pub wall_start_ms: i64,
    /// Sending length.
    pub duration: Duration,
    /// Extra time after sending for outstanding acks.
    pub drain: Duration,
    /// Events intended before `start + warmup` stay out of the histograms.
    pub warmup: Duration,
    /// Heartbeats per second per gateway (rate mode).
    pub hb_rate: f64,
    /// Heartbeats per point at its device class interval instead of `hb_rate`.
    pub hb_from_class: bool,
    /// Background alarms per second per gateway.
    pub alarm_rate: f64,
    /// Bad publishes per second of a bad gateway.
    pub bad_rate: f64,
    /// Most events in one batch.
    pub batch: usize,
    /// Heartbeat batching interval.
    pub tick: Duration,
    /// Unacked alarms are sent again after this long.
    pub retransmit_after: Duration,
    /// First `device_seq` of every point.
    pub seq_base: u32,
    /// Per-second counters of the run.
    pub timeline: Arc<Timeline>,
    /// Latency histograms of the whole run.
    pub hists: Arc<hists::RunHists>,
    /// Where reconnecting gateways connect.
    pub link: LinkConfig,
}

/// One acked alarm, for the latency-over-time plot.
#[derive(Debug, Clone, Copy)]
pub struct AlarmSample {
    /// Intended send time, ms from the start.
    pub at_ms: u32,
    /// Latency, µs.
    pub latency_us: u64,
}

/// What the outage did to one gateway.
#[derive(Debug, Clone, Copy, Default)]
pub struct OutageResult {
    /// The connection was dropped.
    pub went_down: bool,
    /// Connection attempts after the drop.
    pub attempts: u64,
    /// Seconds from the end of the outage to the new subscription.
    pub reconnect_secs: Option<f64>,
}

/// What one gateway did.
pub struct GatewayResult {
    /// Counters.
    pub counters: Counters,
    /// Bad input counters.
    pub bad: BadCounters,
    /// Every acked alarm (warmup included).
    pub samples: Vec<AlarmSample>,
    /// Every alarm sent, as (point_id, device_seq).
    pub sent_alarms: Vec<(u64, u32)>,
    /// Nuisance alarms sent / acked; points whose nuisance clear was sent.
    pub nuisance_sent: u64,
    /// Of those, acked.
    pub nuisance_acked: u64,
    /// Points whose nuisance clear was published.
    pub nuisance_cleared: Vec<u64>,
    /// Time of the last publish with new (not retransmitted) events, if any.
    pub last_publish: Option<Instant>,
    /// Some connect succeeded.
    pub ever_connected: bool,
    /// Connection errors over all the gateway's sessions.
    pub connection_errors: u64,
    /// Undecodable ack payloads.
    pub bad_acks: u64,
    /// Outage figures.
    pub outage: OutageResult,
    /// The poll task of the last session (ends after the disconnect).
    pub poller: Option<JoinHandle<()>>,
}

struct PendingAlarm {
    key: (u64, u32),
    event: PointEvent,
    intended: Instant,
    source: Source,
}

struct Unacked {
    event: PointEvent,
    intended: Instant,
    last_sent: Instant,
    queued: bool,
    source: Source,
}

enum BatchKind {
    /// Ordinary traffic.
    Good {
        alarms: Vec<(u64, u32)>,
        hb_intended: Vec<Instant>,
    },
    /// Foreign-point alarms (bad).
    Foreign,
    /// A batch naming another gateway (bad).
    Mismatch,
}

struct InFlight {
    sent: Instant,
    events: u64,
    kind: BatchKind,
}

enum Phase {
    Up,
    Down {
        failures: u32,
        next_attempt: Instant,
    },
    Reconnecting,
}

struct Session {
    link: Link,
    poller: JoinHandle<()>,
}

struct Gateway {
    plan: GatewayPlan,
    topic: String,
    sched: Arc<Schedule>,
    rng: StdRng,
    send_until: Instant,
    warm_from: Instant,
    next_seq: Vec<u32>,
    // Heartbeats.
    hb_phase: f64,
    hb_scheduled: u64,
    hb_cursor: usize,
    hb_heap: BinaryHeap<Reverse<(Instant, u32)>>,
    hb_backlog: VecDeque<(u32, Instant)>,
    // Background alarms.
    alarm_rate: f64,
    background: Option<Vec<u32>>,
    alarm_phase: f64,
    alarm_k: u64,
    // Scripted events.
    script: VecDeque<Scripted>,
    others: VecDeque<(PointEvent, Source)>,
    // Bad input.
    bad: Option<BadTarget>,
    bad_phase: f64,
    bad_k: u64,
    bad_queue: VecDeque<BadKind>,
    bad_zero_acks_due: u64,
    // Outage.
    outage: Option<(Instant, Instant)>,
    phase: Phase,
    // Sending state.
    alarms: VecDeque<PendingAlarm>,
    retransmit: VecDeque<(u64, u32)>,
    unacked: HashMap<(u64, u32), Unacked>,
    inflight: HashMap<u64, InFlight>,
    batch_seq: u64,
    /// Successful `try_publish`es of the current session (`--ack puback` ordinals).
    session_pubs: u64,
    /// `--ack puback`: publish ordinal of the session -> batch_seq.
    pub_batches: HashMap<u64, u64>,
    // Results.
    counters: Counters,
    badc: BadCounters,
    /// Alarm latency per source, heartbeat latency and ack round trip, merged into the
    /// run's histograms ([`hists`]).
    hists: hists::Recorder,
    samples: Vec<AlarmSample>,
    sent_alarms: Vec<(u64, u32)>,
    nuisance_sent: u64,
    nuisance_acked: u64,
    nuisance_cleared: Vec<u64>,
    last_publish: Option<Instant>,
    outage_result: OutageResult,
    ever_connected: bool,
    connection_errors: u64,
    bad_acks: u64,
}

/// Runs gateway `plan` over `link` until its sending and draining are over.
pub async fn run(
    plan: GatewayPlan,
    extras: GatewayExtras,
    first: (Link, JoinHandle<()>),
    sched: Arc<Schedule>,
    stop: Arc<AtomicBool>,
    seed: u64,
) -> GatewayResult {
    let mut g = Gateway::new(plan, extras, sched.clone(), seed);
    let mut session = Some(Session {
        link: first.0,
        poller: first.1,
    });
    let mut next_tick = sched.start + sched.tick.mul_f64(g.rng.gen::<f64>());
    loop {
        let now = Instant::now();
        if stop.load(Ordering::Relaxed) && g.send_until > now {
            g.send_until = now.max(sched.start);
        }
        let drain_until = g.send_until + sched.drain;
        g.outage_step(now, &mut session);
        g.schedule(now);
        g.queue_retransmits(now);
        if let Some(s) = &session {
            if s.link.state.subscribed.load(Ordering::Acquire) {
                g.flush(&s.link.client, now);
                g.flush_bad(&s.link.client, now);
            }
        }
        if (now >= g.send_until && g.idle()) || now >= drain_until {
            break;
        }
        while next_tick <= now {
            next_tick += sched.tick;
        }
        let mut wake = next_tick.min(drain_until);
        for at in [g.next_alarm_at(), g.next_script_at(), g.next_bad_at()]
            .into_iter()
            .flatten()
        {
            if at <= g.send_until {
                wake = wake.min(at);
            }
        }
        if let Some(at) = g.next_outage_wake() {
            wake = wake.min(at.max(now));
        }
        match session.as_mut() {
            Some(s) => {
                tokio::select! {
                    _ = tokio::time::sleep_until(wake) => {}
                    ack = s.link.acks.recv() => match ack {
                        Some(ack) => {
                            g.on_ack(ack);
                            while let Ok(ack) = s.link.acks.try_recv() {
                                g.on_ack(ack);
                            }
                        }
                        // The poll task ended (it does not while the sender runs); wait.
                        None => tokio::time::sleep_until(wake).await,
                    },
                }
            }
            None => tokio::time::sleep_until(wake).await,
        }
    }
    let mut poller = None;
    if let Some(mut s) = session {
        while let Ok(ack) = s.link.acks.try_recv() {
            g.on_ack(ack);
        }
        s.link.state.stopping.store(true, Ordering::Release);
        let _ = s.link.client.try_disconnect();
        g.absorb_state(&s.link.state);
        poller = Some(s.poller);
    }
    let mut r = g.finish();
    r.poller = poller;
    r
}

impl Gateway {
    fn new(plan: GatewayPlan, extras: GatewayExtras, sched: Arc<Schedule>, seed: u64) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let topic = format!("fw/v1/gw/{}/up", plan.id);
        let mut hb_heap = BinaryHeap::new();
        if sched.hb_from_class {
            for (l, p) in plan.points.iter().enumerate() {
                let first = p.hb_interval_secs * rng.gen::<f64>();
                hb_heap.push(Reverse((
                    sched.start + Duration::from_secs_f64(first),
                    l as u32,
                )));
            }
        }
        let alarm_rate = match &extras.background {
            Some(b) if b.is_empty() => 0.0,
            _ => sched.alarm_rate,
        };
        let outage = extras
            .outage
            .map(|(down, up)| (sched.start + down, sched.start + up));
        Gateway {
            next_seq: vec![sched.seq_base; plan.points.len()],
            hb_phase: rng.gen(),
            alarm_phase: rng.gen(),
            bad_phase: rng.gen(),
            hb_cursor: rng.gen_range(0..plan.points.len().max(1)),
            send_until: sched.start + sched.duration,
            warm_from: sched.start + sched.warmup,
            plan,
            topic,
            rng,
            hb_scheduled: 0,
            hb_heap,
            hb_backlog: VecDeque::new(),
            alarm_rate,
            background: extras.background,
            alarm_k: 0,
            script: extras.script.into(),
            others: VecDeque::new(),
            bad: extras.bad,
            bad_k: 0,
            bad_queue: VecDeque::new(),
            bad_zero_acks_due: 0,
            outage,
            phase: Phase::Up,
            alarms: VecDeque::new(),
            retransmit: VecDeque::new(),
            unacked: HashMap::new(),
            inflight: HashMap::new(),
            batch_seq: 0,
            session_pubs: 0,
            pub_batches: HashMap::new(),
            counters: Counters::default(),
            badc: BadCounters::default(),
            hists: hists::Recorder::new(sched.hists.clone()),
            samples: Vec::new(),
            sent_alarms: Vec::new(),
            nuisance_sent: 0,
            nuisance_acked: 0,
            nuisance_cleared: Vec::new(),
            last_publish: None,
            outage_result: OutageResult::default(),
            ever_connected: false,
            connection_errors: 0,
            bad_acks: 0,
            sched,
        }
    }

    fn seq(&mut self, local: usize) -> u32 {
        let s = self.next_seq[local];
        self.next_seq[local] = s.wrapping_add(1);
        s
    }

    fn wall_ms(&self, at: Instant) -> i64 {
        let off = at.saturating_duration_since(self.sched.start).as_millis() as i64;
        self.sched.wall_start_ms + off
    }

    /// Counts a successful publish of the session; with `--ack puback`, remembers which
    /// batch its PUBACK will acknowledge.
    fn published(&mut self, batch_seq: u64) {
        self.session_pubs += 1;
        if self.sched.link.ack == AckMode::Puback {
            self.pub_batches.insert(self.session_pubs, batch_seq);
        }
    }

    fn timeline(&self) -> &Timeline {
        &self.sched.timeline
    }

    /// The gateway is down or not yet subscribed again (outage).
    fn offline(&self) -> bool {
        !matches!(self.phase, Phase::Up)
    }

    /// Takes the cumulative figures of a session that ends.
    fn absorb_state(&mut self, state: &LinkState) {
        self.ever_connected |= state.ever_connected.load(Ordering::Acquire);
        self.connection_errors += state.connection_errors.load(Ordering::Relaxed);
        self.bad_acks += state.bad_acks.load(Ordering::Relaxed);
    }

    /// The outage state machine: drop the connection at the outage start, fail the
    /// Nothing left to send and nothing awaiting an ack.
    fn idle(&self) -> bool {
        self.hb_backlog.is_empty()
            && self.alarms.is_empty()
            && self.others.is_empty()
            && self.bad_queue.is_empty()
            && self.unacked.is_empty()
            && self.inflight.is_empty()
            && self.bad_zero_acks_due == 0
            && matches!(self.phase, Phase::Up)
    }

    fn finish(mut self) -> GatewayResult {
        self.counters.alarms_unacked = self.unacked.len() as u64;
        self.counters.batches_unacked = self
            .inflight
            .values()
            .filter(|b| matches!(b.kind, BatchKind::Good { .. }))
            .count() as u64;
        self.counters.alarms_unsent = self.alarms.len() as u64;
        self.counters.events_unsent =
            (self.hb_backlog.len() + self.alarms.len() + self.others.len()) as u64;
        GatewayResult {
            counters: self.counters,
            bad: self.badc,
            samples: self.samples,
            sent_alarms: self.sent_alarms,
            nuisance_sent: self.nuisance_sent,
            nuisance_acked: self.nuisance_acked,
            nuisance_cleared: self.nuisance_cleared,
            last_publish: self.last_publish,
            ever_connected: self.ever_connected,
            connection_errors: self.connection_errors,
            bad_acks: self.bad_acks,
            outage: self.outage_result,
            poller: None,
        }
    }
}
