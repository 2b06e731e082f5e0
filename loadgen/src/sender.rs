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

use crate::link::{self, Ack, Link, LinkConfig, LinkState};
use crate::plan::GatewayPlan;
use crate::report::{new_histogram, BadCounters, Counters};
use crate::scenario::{BadTarget, GatewayExtras, Scripted, Source, ALARM_KINDS, SOURCES};
use crate::timeline::{Field, Timeline};
use firewatch_proto::{AckStatus, EventKind, PointEvent, RejectReason, UplinkBatch};
use hdrhistogram::Histogram;
use prost::Message;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rumqttc::QoS;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Size of the oversize payloads of the bad scenario (the engine's limit is 64 KiB).
pub const OVERSIZE_BYTES: usize = 70_000;

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
    /// Alarm latency per [`Source`] (index), µs from intended send time to first ack.
    pub latency: Vec<Histogram<u64>>,
    /// Heartbeat latency, µs from intended send time to the ack of its batch.
    pub hb_latency: Histogram<u64>,
    /// Batch ack round trip, µs from publish to ack receipt.
    pub rtt: Histogram<u64>,
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

#[derive(Clone, Copy)]
enum BadKind {
    Malformed,
    Oversize,
    Foreign,
    Mismatch,
    WrongTopic,
}

const BAD_KINDS: [BadKind; 5] = [
    BadKind::Malformed,
    BadKind::Oversize,
    BadKind::Foreign,
    BadKind::Mismatch,
    BadKind::WrongTopic,
];

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
    // Results.
    counters: Counters,
    badc: BadCounters,
    latency: Vec<Histogram<u64>>,
    hb_latency: Histogram<u64>,
    rtt: Histogram<u64>,
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
            counters: Counters::default(),
            badc: BadCounters::default(),
            latency: SOURCES.iter().map(|_| new_histogram()).collect(),
            hb_latency: new_histogram(),
            rtt: new_histogram(),
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

    fn timeline(&self) -> &Timeline {
        &self.sched.timeline
    }

    /// The gateway is down or not yet subscribed again (outage).
    fn offline(&self) -> bool {
        !matches!(self.phase, Phase::Up)
    }

    /// Intended time of the next background alarm, if any are sent.
    fn next_alarm_at(&self) -> Option<Instant> {
        let rate = self.alarm_rate;
        (rate > 0.0).then(|| {
            let secs = (self.alarm_k as f64 + self.alarm_phase) / rate;
            self.sched.start + Duration::from_secs_f64(secs)
        })
    }

    fn next_script_at(&self) -> Option<Instant> {
        self.script.front().map(|s| self.sched.start + s.at)
    }

    fn next_bad_at(&self) -> Option<Instant> {
        let rate = self.sched.bad_rate;
        (self.bad.is_some() && rate > 0.0).then(|| {
            let secs = (self.bad_k as f64 + self.bad_phase) / rate;
            self.sched.start + Duration::from_secs_f64(secs)
        })
    }

    fn next_outage_wake(&self) -> Option<Instant> {
        match (&self.phase, self.outage) {
            (Phase::Up, Some((down, _))) if !self.outage_result.went_down => Some(down),
            (Phase::Down { next_attempt, .. }, _) => Some(*next_attempt),
            _ => None,
        }
    }

    /// Takes the cumulative figures of a session that ends.
    fn absorb_state(&mut self, state: &LinkState) {
        self.ever_connected |= state.ever_connected.load(Ordering::Acquire);
        self.connection_errors += state.connection_errors.load(Ordering::Relaxed);
        self.bad_acks += state.bad_acks.load(Ordering::Relaxed);
    }

    /// The outage state machine: drop the connection at the outage start, fail the
    /// attempts made while the outage lasts (jittered exponential back-off), then connect
    /// for real; Up again once the new session's ack subscription is granted.
    fn outage_step(&mut self, now: Instant, session: &mut Option<Session>) {
        let Some((down_at, up_at)) = self.outage else {
            return;
        };
        match &mut self.phase {
            Phase::Up => {
                if self.outage_result.went_down || now < down_at || down_at >= self.send_until {
                    return;
                }
                self.outage_result.went_down = true;
                if let Some(s) = session.take() {
                    // Abrupt: no DISCONNECT, the socket just closes with the event loop.
                    s.poller.abort();
                    self.absorb_state(&s.link.state);
                }
                // What was in flight on the dead connection is never acked; every unacked
                // alarm goes again on the new one, and counts as delayed by the outage.
                self.counters.batches_lost += self.inflight.len() as u64;
                self.inflight.clear();
                self.bad_zero_acks_due = 0;
                for u in self.unacked.values_mut() {
                    u.source = Source::Outage;
                }
                self.phase = Phase::Down {
                    failures: 0,
                    next_attempt: now + link::backoff(1),
                };
            }
            Phase::Down {
                failures,
                next_attempt,
            } => {
                if now < *next_attempt {
                    return;
                }
                self.outage_result.attempts += 1;
                if now < up_at {
                    *failures += 1;
                    *next_attempt = now + link::backoff(*failures + 1);
                    return;
                }
                let (l, p) = link::spawn(
                    &self.plan.id,
                    &self.sched.link,
                    Arc::new(AtomicUsize::new(0)),
                );
                *session = Some(Session { link: l, poller: p });
                self.phase = Phase::Reconnecting;
            }
            Phase::Reconnecting => {
                let Some(s) = session.as_ref() else {
                    return;
                };
                if !s.link.state.subscribed.load(Ordering::Acquire) {
                    return;
                }
                let at = s.link.state.subscribed_at().unwrap_or(now);
                self.outage_result.reconnect_secs =
                    Some(at.saturating_duration_since(up_at).as_secs_f64());
                // The real connects after the first one were the poll task's retries.
                self.outage_result.attempts +=
                    s.link.state.connection_errors.load(Ordering::Relaxed);
                self.phase = Phase::Up;
                let keys: Vec<(u64, u32)> = self
                    .unacked
                    .iter_mut()
                    .filter(|(_, u)| !u.queued)
                    .map(|(k, u)| {
                        u.queued = true;
                        *k
                    })
                    .collect();
                self.retransmit.extend(keys);
            }
        }
    }

    fn alarm_event(&mut self, local: usize, kind: EventKind, at: Instant) -> PendingAlarm {
        let device_seq = self.seq(local);
        let point_id = self.plan.points[local].id;
        let event = PointEvent {
            point_id,
            kind: kind as i32,
            device_seq,
            device_time_ms: self.wall_ms(at),
            value: self.rng.gen_range(0.5..20.0),
            battery_pct: self.rng.gen_range(60..=100),
            rssi_dbm: self.rng.gen_range(-110..=-50),
        };
        PendingAlarm {
            key: (point_id, device_seq),
            event,
            intended: at,
            source: Source::Background,
        }
    }

    /// Queues everything due up to `now` (and not after the end of sending).
    fn schedule(&mut self, now: Instant) {
        let upto = now.min(self.send_until);
        if upto < self.sched.start {
            return;
        }
        let offline = self.offline();
        // Heartbeats.
        if self.sched.hb_from_class {
            while let Some(&Reverse((at, l))) = self.hb_heap.peek() {
                if at > upto {
                    break;
                }
                self.hb_heap.pop();
                self.hb_backlog.push_back((l, at));
                let every = Duration::from_secs_f64(self.plan.points[l as usize].hb_interval_secs);
                self.hb_heap.push(Reverse((at + every, l)));
            }
        } else if self.sched.hb_rate > 0.0 {
            let rate = self.sched.hb_rate;
            let elapsed = (upto - self.sched.start).as_secs_f64();
            let due = (elapsed * rate + self.hb_phase).floor() as u64;
            while self.hb_scheduled < due {
                self.hb_scheduled += 1;
                let at = self.sched.start
                    + Duration::from_secs_f64(
                        ((self.hb_scheduled as f64 - self.hb_phase) / rate).max(0.0),
                    );
                let l = self.hb_cursor as u32;
                self.hb_cursor = (self.hb_cursor + 1) % self.plan.points.len();
                self.hb_backlog.push_back((l, at));
            }
        }
        // Background alarms.
        while let Some(at) = self.next_alarm_at().filter(|&at| at <= upto) {
            self.alarm_k += 1;
            let local = match &self.background {
                Some(list) => list[self.rng.gen_range(0..list.len())] as usize,
                None => self.rng.gen_range(0..self.plan.points.len()),
            };
            let kind = ALARM_KINDS[self.rng.gen_range(0..ALARM_KINDS.len())];
            let mut a = self.alarm_event(local, kind, at);
            if offline {
                a.source = Source::Outage;
            }
            self.alarms.push_back(a);
        }
        // Scripted events.
        while let Some(s) = self.script.front().copied() {
            let at = self.sched.start + s.at;
            if at > upto {
                break;
            }
            self.script.pop_front();
            let local = s.local as usize;
            if s.kind.is_alarm() {
                let mut a = self.alarm_event(local, s.kind, at);
                a.source = if offline { Source::Outage } else { s.source };
                self.alarms.push_back(a);
            } else {
                let device_seq = self.seq(local);
                let event = PointEvent {
                    point_id: self.plan.points[local].id,
                    kind: s.kind as i32,
                    device_seq,
                    device_time_ms: self.wall_ms(at),
                    value: 0.0,
                    battery_pct: 90,
                    rssi_dbm: -75,
                };
                self.others.push_back((event, s.source));
            }
        }
        // Bad input: only what falls due while connected is sent.
        while self.next_bad_at().is_some_and(|at| at <= upto) {
            let kind = BAD_KINDS[(self.bad_k % BAD_KINDS.len() as u64) as usize];
            self.bad_k += 1;
            if !offline {
                self.bad_queue.push_back(kind);
            }
        }
    }

    /// Queues every unacked alarm whose last transmission is older than the timeout.
    fn queue_retransmits(&mut self, now: Instant) {
        let after = self.sched.retransmit_after;
        for (key, u) in self.unacked.iter_mut() {
            if !u.queued && now.saturating_duration_since(u.last_sent) >= after {
                u.queued = true;
                self.retransmit.push_back(*key);
            }
        }
    }

    fn heartbeat(&mut self, local: usize, wall_now: i64) -> PointEvent {
        let device_seq = self.seq(local);
        PointEvent {
            point_id: self.plan.points[local].id,
            kind: EventKind::Heartbeat as i32,
            device_seq,
            device_time_ms: wall_now,
            value: 0.0,
            battery_pct: 90,
            rssi_dbm: -80,
        }
    }

    /// Publishes everything queued, in batches of at most `batch` events: retransmissions
    /// first, then new alarms, then other scripted events, then heartbeats. Stops when the
    /// client's queue is full.
    fn flush(&mut self, client: &rumqttc::AsyncClient, now: Instant) {
        let max = self.sched.batch;
        loop {
            let mut events = Vec::with_capacity(max);
            let mut alarm_keys = Vec::new();
            let mut rt_taken = 0;
            for key in self.retransmit.iter() {
                if events.len() == max {
                    break;
                }
                rt_taken += 1;
                if let Some(u) = self.unacked.get(key) {
                    events.push(u.event);
                    alarm_keys.push(*key);
                }
            }
            let rt_sent = alarm_keys.len();
            let new_alarms = self.alarms.len().min(max - events.len());
            for a in self.alarms.iter().take(new_alarms) {
                events.push(a.event);
                alarm_keys.push(a.key);
            }
            let others = self.others.len().min(max - events.len());
            for (e, _) in self.others.iter().take(others) {
                events.push(*e);
            }
            let hbs = self.hb_backlog.len().min(max - events.len());
            let wall_now = self.wall_ms(now);
            let mut hb_intended = Vec::with_capacity(hbs);
            for i in 0..hbs {
                let (l, at) = self.hb_backlog[i];
                hb_intended.push(at);
                let ev = self.heartbeat(l as usize, wall_now);
                events.push(ev);
            }
            if events.is_empty() {
                // Only stale retransmit entries (acked meanwhile) were left.
                self.retransmit.drain(..rt_taken);
                return;
            }
            let batch_seq = self.batch_seq + 1;
            let n = events.len() as u64;
            let payload = UplinkBatch {
                gateway_id: self.plan.id.clone(),
                batch_seq,
                sent_at_ms: wall_now,
                events,
            }
            .encode_to_vec();
            if client
                .try_publish(self.topic.clone(), QoS::AtLeastOnce, false, payload)
                .is_err()
            {
                // The heartbeats keep their places; their device_seqs are simply skipped.
                self.counters.publish_stalls += 1;
                return;
            }
            self.batch_seq = batch_seq;
            let fresh = (new_alarms + others + hbs) as u64;
            if fresh > 0 {
                self.last_publish = Some(now);
            }
            self.counters.batches_sent += 1;
            for key in self.retransmit.drain(..rt_taken) {
                if let Some(u) = self.unacked.get_mut(&key) {
                    u.queued = false;
                    u.last_sent = now;
                }
            }
            self.counters.retransmissions += rt_sent as u64;
            for a in self.alarms.drain(..new_alarms) {
                self.sent_alarms.push(a.key);
                if a.source == Source::Nuisance {
                    self.nuisance_sent += 1;
                }
                self.unacked.insert(
                    a.key,
                    Unacked {
                        event: a.event,
                        intended: a.intended,
                        last_sent: now,
                        queued: false,
                        source: a.source,
                    },
                );
            }
            for (e, source) in self.others.drain(..others) {
                if source == Source::Nuisance && e.kind == EventKind::AlarmClear as i32 {
                    self.nuisance_cleared.push(e.point_id);
                }
            }
            self.counters.clears_sent += others as u64;
            self.counters.alarms_sent += new_alarms as u64;
            self.hb_backlog.drain(..hbs);
            self.counters.heartbeats_sent += hbs as u64;
            let tl = self.timeline();
            tl.add(now, Field::EventsSent, fresh);
            tl.add(now, Field::AlarmsSent, new_alarms as u64);
            tl.add(now, Field::Retransmissions, rt_sent as u64);
            self.inflight.insert(
                batch_seq,
                InFlight {
                    sent: now,
                    events: n,
                    kind: BatchKind::Good {
                        alarms: alarm_keys,
                        hb_intended,
                    },
                },
            );
        }
    }

    /// Publishes the queued bad input (bad scenario).
    fn flush_bad(&mut self, client: &rumqttc::AsyncClient, now: Instant) {
        let Some(target) = self.bad.clone() else {
            return;
        };
        while let Some(&kind) = self.bad_queue.front() {
            let wall_now = self.wall_ms(now);
            let batch_seq = self.batch_seq + 1;
            let mut topic = self.topic.clone();
            let mut inflight = None;
            let payload = match kind {
                BadKind::Malformed => {
                    // Field 1 (gateway_id) claims far more bytes than follow.
                    let mut p = vec![0x0a, 0xff, 0xff, 0xff, 0x0f];
                    p.extend_from_slice(b"not a batch");
                    p
                }
                BadKind::Oversize => {
                    // A valid batch padded with an unknown 70 kB field: refused for its size.
                    let mut p = UplinkBatch {
                        gateway_id: self.plan.id.clone(),
                        batch_seq,
                        sent_at_ms: wall_now,
                        events: vec![],
                    }
                    .encode_to_vec();
                    let pad = OVERSIZE_BYTES - p.len() - 4;
                    p.push(0x7a); // field 15, length-delimited
                    prost::encoding::encode_varint(pad as u64, &mut p);
                    p.resize(p.len() + pad, 0x55);
                    p
                }
                BadKind::Foreign => {
                    let events: Vec<PointEvent> = target
                        .foreign_points
                        .iter()
                        .map(|&point_id| PointEvent {
                            point_id,
                            kind: EventKind::SmokeAlarm as i32,
                            device_seq: self.rng.gen(),
                            device_time_ms: wall_now,
                            value: 1.0,
                            battery_pct: 90,
                            rssi_dbm: -70,
                        })
                        .collect();
                    inflight = Some((BatchKind::Foreign, events.len() as u64));
                    UplinkBatch {
                        gateway_id: self.plan.id.clone(),
                        batch_seq,
                        sent_at_ms: wall_now,
                        events,
                    }
                    .encode_to_vec()
                }
                BadKind::Mismatch => {
                    let ev = self.heartbeat(0, wall_now);
                    inflight = Some((BatchKind::Mismatch, 1));
                    UplinkBatch {
                        gateway_id: target.other_id.clone(),
                        batch_seq,
                        sent_at_ms: wall_now,
                        events: vec![ev],
                    }
                    .encode_to_vec()
                }
                BadKind::WrongTopic => {
                    topic = format!("fw/v1/gw/{}/up", target.other_id);
                    UplinkBatch {
                        gateway_id: String::new(),
                        batch_seq,
                        sent_at_ms: wall_now,
                        events: target
                            .foreign_points
                            .iter()
                            .map(|&point_id| PointEvent {
                                point_id,
                                kind: EventKind::Heartbeat as i32,
                                device_seq: self.rng.gen(),
                                device_time_ms: wall_now,
                                value: 0.0,
                                battery_pct: 90,
                                rssi_dbm: -70,
                            })
                            .collect(),
                    }
                    .encode_to_vec()
                }
            };
            if client
                .try_publish(topic, QoS::AtLeastOnce, false, payload)
                .is_err()
            {
                self.counters.publish_stalls += 1;
                return;
            }
            self.bad_queue.pop_front();
            self.timeline().add(now, Field::BadSent, 1);
            let b = &mut self.badc;
            match kind {
                BadKind::Malformed => {
                    b.malformed_sent += 1;
                    self.bad_zero_acks_due += 1;
                }
                BadKind::Oversize => {
                    b.oversize_sent += 1;
                    self.bad_zero_acks_due += 1;
                }
                BadKind::Foreign => {
                    b.foreign_batches_sent += 1;
                    b.foreign_events_sent += target.foreign_points.len() as u64;
                }
                BadKind::Mismatch => b.mismatch_sent += 1,
                BadKind::WrongTopic => b.wrong_topic_sent += 1,
            }
            if let Some((kind, events)) = inflight {
                self.batch_seq = batch_seq;
                self.inflight.insert(
                    batch_seq,
                    InFlight {
                        sent: now,
                        events,
                        kind,
                    },
                );
            }
        }
    }

    fn on_ack(&mut self, ack: Ack) {
        let Ack { received, ack } = ack;
        self.counters.acks_received += 1;
        let rejected = ack.status == AckStatus::Rejected as i32;
        if ack.batch_seq == 0 && rejected && self.bad_zero_acks_due > 0 {
            let reason = RejectReason::try_from(ack.reason).unwrap_or_default();
            match reason {
                RejectReason::DecodeError => self.badc.malformed_rejected += 1,
                RejectReason::Oversize => self.badc.oversize_rejected += 1,
                _ => {
                    self.counters.acks_rejected += 1;
                    return;
                }
            }
            self.bad_zero_acks_due -= 1;
            self.timeline().add(received, Field::BadRejected, 1);
            return;
        }
        let Some(batch) = self.inflight.remove(&ack.batch_seq) else {
            self.counters.acks_unknown_batch += 1;
            if rejected {
                self.counters.acks_rejected += 1;
            }
            return;
        };
        match batch.kind {
            BatchKind::Foreign => {
                let n = ack
                    .rejected
                    .iter()
                    .filter(|r| r.reason == RejectReason::ForeignPoint as i32)
                    .count() as u64;
                self.badc.foreign_events_rejected += n;
                self.badc.foreign_alarms_accepted += ack.durable.len() as u64;
                self.timeline().add(received, Field::BadRejected, n);
            }
            BatchKind::Mismatch => {
                if rejected && ack.reason == RejectReason::GatewayMismatch as i32 {
                    self.badc.mismatch_rejected += 1;
                    self.timeline().add(received, Field::BadRejected, 1);
                } else if !rejected {
                    self.badc.mismatch_accepted += 1;
                }
            }
            BatchKind::Good {
                alarms,
                hb_intended,
            } => {
                if rejected {
                    self.counters.acks_rejected += 1;
                    self.counters.rejected_events += batch.events;
                    for key in alarms {
                        if self.unacked.remove(&key).is_some() {
                            self.counters.alarms_rejected += 1;
                        }
                    }
                    return;
                }
                record(
                    &mut self.rtt,
                    received.saturating_duration_since(batch.sent),
                );
                self.counters.events_acked += batch.events;
                self.timeline()
                    .add(received, Field::EventsAcked, batch.events);
                for at in hb_intended {
                    if at >= self.warm_from {
                        record(&mut self.hb_latency, received.saturating_duration_since(at));
                    }
                }
                for r in &ack.rejected {
                    self.counters.rejected_events += 1;
                    if self.unacked.remove(&(r.point_id, r.device_seq)).is_some() {
                        self.counters.alarms_rejected += 1;
                    }
                }
                let mut acked = 0;
                for d in &ack.durable {
                    if let Some(u) = self.unacked.remove(&(d.point_id, d.device_seq)) {
                        let lat = received.saturating_duration_since(u.intended);
                        if u.intended >= self.warm_from {
                            record(&mut self.latency[u.source as usize], lat);
                        }
                        if u.source == Source::Nuisance {
                            self.nuisance_acked += 1;
                        }
                        self.samples.push(AlarmSample {
                            at_ms: u
                                .intended
                                .saturating_duration_since(self.sched.start)
                                .as_millis()
                                .min(u32::MAX as u128) as u32,
                            latency_us: lat.as_micros().min(u64::MAX as u128) as u64,
                        });
                        acked += 1;
                    }
                }
                self.counters.alarms_acked += acked;
                self.timeline().add(received, Field::AlarmsAcked, acked);
            }
        }
    }

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
            latency: self.latency,
            hb_latency: self.hb_latency,
            rtt: self.rtt,
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

fn record(h: &mut Histogram<u64>, d: Duration) {
    h.saturating_record(d.as_micros().min(u128::from(u64::MAX)) as u64);
}
