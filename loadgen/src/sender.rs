//! One gateway's sender: an open-loop schedule of heartbeats and alarms, batching, the
//! unacked-alarm store with retransmission, and ack bookkeeping.
//!
//! Events are due at fixed times from the common start: heartbeats at `hb_rate` per second
//! (cycling through the gateway's points), alarms at `alarm_rate` per second (random points).
//! Each alarm keeps its intended send time, and its latency is measured from then to the
//! receipt of the first ack naming it, so a slow engine (or a stalled sender) shows up in
//! the latency instead of silently lowering the offered load.

use crate::link::{Ack, Link};
use crate::plan::GatewayPlan;
use crate::report::{new_histogram, Counters};
use firewatch_proto::{AckStatus, EventKind, PointEvent, UplinkBatch};
use hdrhistogram::Histogram;
use prost::Message;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rumqttc::QoS;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// Alarm kinds the generator sends.
const ALARM_KINDS: [EventKind; 4] = [
    EventKind::SmokeAlarm,
    EventKind::HeatAlarm,
    EventKind::GasAlarm,
    EventKind::ManualAlarm,
];

/// The run's common timing, shared by all gateways.
#[derive(Debug, Clone)]
pub struct Schedule {
    /// Time zero of every gateway's schedule.
    pub start: Instant,
    /// Unix ms at `start` (for `device_time_ms`).
    pub wall_start_ms: i64,
    /// Sending length.
    pub duration: Duration,
    /// Extra time after sending for outstanding acks.
    pub drain: Duration,
    /// Heartbeats per second per gateway.
    pub hb_rate: f64,
    /// Alarms per second per gateway.
    pub alarm_rate: f64,
    /// Most events in one batch.
    pub batch: usize,
    /// Heartbeat batching interval.
    pub tick: Duration,
    /// Unacked alarms are sent again after this long.
    pub retransmit_after: Duration,
    /// First `device_seq` of every point.
    pub seq_base: u32,
}

/// What one gateway did.
pub struct GatewayResult {
    /// Counters.
    pub counters: Counters,
    /// Alarm latency, µs from intended send time to first ack naming it.
    pub latency: Histogram<u64>,
    /// Batch ack round trip, µs from publish to ack receipt.
    pub rtt: Histogram<u64>,
    /// Every alarm sent, as (point_id, device_seq).
    pub sent_alarms: Vec<(u64, u32)>,
    /// Time of the last publish with new (not retransmitted) events, if any.
    pub last_publish: Option<Instant>,
}

struct PendingAlarm {
    key: (u64, u32),
    event: PointEvent,
    intended: Instant,
}

struct Unacked {
    event: PointEvent,
    intended: Instant,
    last_sent: Instant,
    queued: bool,
}

struct InFlight {
    sent: Instant,
    events: u64,
    alarms: Vec<(u64, u32)>,
}

struct Gateway {
    plan: GatewayPlan,
    topic: String,
    sched: Arc<Schedule>,
    rng: StdRng,
    send_until: Instant,
    next_seq: Vec<u32>,
    hb_phase: f64,
    hb_scheduled: u64,
    hb_backlog: u64,
    hb_cursor: usize,
    alarm_phase: f64,
    alarm_k: u64,
    alarms: VecDeque<PendingAlarm>,
    retransmit: VecDeque<(u64, u32)>,
    unacked: HashMap<(u64, u32), Unacked>,
    inflight: HashMap<u64, InFlight>,
    batch_seq: u64,
    counters: Counters,
    latency: Histogram<u64>,
    rtt: Histogram<u64>,
    sent_alarms: Vec<(u64, u32)>,
    last_publish: Option<Instant>,
}

/// Runs gateway `plan` over `link` until its sending and draining are over.
pub async fn run(
    plan: GatewayPlan,
    link: Link,
    sched: Arc<Schedule>,
    stop: Arc<AtomicBool>,
    seed: u64,
) -> GatewayResult {
    let Link {
        client,
        state,
        mut acks,
    } = link;
    let mut g = Gateway::new(plan, sched.clone(), seed);
    let mut acks_open = true;
    let mut next_tick = sched.start + sched.tick.mul_f64(g.rng.gen::<f64>());
    loop {
        let now = Instant::now();
        if stop.load(Ordering::Relaxed) && g.send_until > now {
            g.send_until = now.max(sched.start);
        }
        let drain_until = g.send_until + sched.drain;
        g.schedule(now);
        g.queue_retransmits(now);
        if state.subscribed.load(Ordering::Acquire) {
            g.flush(&client, now);
        }
        if (now >= g.send_until && g.idle()) || now >= drain_until {
            break;
        }
        while next_tick <= now {
            next_tick += sched.tick;
        }
        let mut wake = next_tick.min(drain_until);
        if let Some(at) = g.next_alarm_at() {
            if at <= g.send_until {
                wake = wake.min(at);
            }
        }
        tokio::select! {
            _ = tokio::time::sleep_until(wake) => {}
            ack = acks.recv(), if acks_open => match ack {
                Some(ack) => {
                    g.on_ack(ack);
                    while let Ok(ack) = acks.try_recv() {
                        g.on_ack(ack);
                    }
                }
                None => acks_open = false,
            },
        }
    }
    while let Ok(ack) = acks.try_recv() {
        g.on_ack(ack);
    }
    state.stopping.store(true, Ordering::Release);
    let _ = client.try_disconnect();
    g.finish()
}

impl Gateway {
    fn new(plan: GatewayPlan, sched: Arc<Schedule>, seed: u64) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let topic = format!("fw/v1/gw/{}/up", plan.id);
        Gateway {
            next_seq: vec![sched.seq_base; plan.points.len()],
            hb_phase: rng.gen(),
            alarm_phase: rng.gen(),
            hb_cursor: rng.gen_range(0..plan.points.len().max(1)),
            send_until: sched.start + sched.duration,
            plan,
            topic,
            rng,
            hb_scheduled: 0,
            hb_backlog: 0,
            alarm_k: 0,
            alarms: VecDeque::new(),
            retransmit: VecDeque::new(),
            unacked: HashMap::new(),
            inflight: HashMap::new(),
            batch_seq: 0,
            counters: Counters::default(),
            latency: new_histogram(),
            rtt: new_histogram(),
            sent_alarms: Vec::new(),
            last_publish: None,
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

    /// Intended time of the next alarm, if alarms are sent at all.
    fn next_alarm_at(&self) -> Option<Instant> {
        let rate = self.sched.alarm_rate;
        (rate > 0.0).then(|| {
            let secs = (self.alarm_k as f64 + self.alarm_phase) / rate;
            self.sched.start + Duration::from_secs_f64(secs)
        })
    }

    /// Queues everything due up to `now` (and not after the end of sending).
    fn schedule(&mut self, now: Instant) {
        let upto = now.min(self.send_until);
        if upto < self.sched.start {
            return;
        }
        let elapsed = (upto - self.sched.start).as_secs_f64();
        let due = (elapsed * self.sched.hb_rate + self.hb_phase).floor() as u64;
        if due > self.hb_scheduled {
            self.hb_backlog += due - self.hb_scheduled;
            self.hb_scheduled = due;
        }
        while let Some(at) = self.next_alarm_at().filter(|&at| at <= upto) {
            self.alarm_k += 1;
            let local = self.rng.gen_range(0..self.plan.points.len());
            let device_seq = self.seq(local);
            let kind = ALARM_KINDS[self.rng.gen_range(0..ALARM_KINDS.len())];
            let point_id = self.plan.points[local];
            let event = PointEvent {
                point_id,
                kind: kind as i32,
                device_seq,
                device_time_ms: self.wall_ms(at),
                value: self.rng.gen_range(0.5..20.0),
                battery_pct: self.rng.gen_range(60..=100),
                rssi_dbm: self.rng.gen_range(-110..=-50),
            };
            self.alarms.push_back(PendingAlarm {
                key: (point_id, device_seq),
                event,
                intended: at,
            });
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

    /// Publishes everything queued, in batches of at most `batch` events: retransmissions
    /// first, then new alarms, then heartbeats. Stops when the client's queue is full.
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
            let hbs = self.hb_backlog.min((max - events.len()) as u64);
            let wall_now = self.wall_ms(now);
            for _ in 0..hbs {
                let local = self.hb_cursor;
                self.hb_cursor = (self.hb_cursor + 1) % self.plan.points.len();
                let device_seq = self.seq(local);
                events.push(PointEvent {
                    point_id: self.plan.points[local],
                    kind: EventKind::Heartbeat as i32,
                    device_seq,
                    device_time_ms: wall_now,
                    value: 0.0,
                    battery_pct: 90,
                    rssi_dbm: -80,
                });
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
                self.counters.publish_stalls += 1;
                return;
            }
            self.batch_seq = batch_seq;
            if new_alarms > 0 || hbs > 0 {
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
                self.unacked.insert(
                    a.key,
                    Unacked {
                        event: a.event,
                        intended: a.intended,
                        last_sent: now,
                        queued: false,
                    },
                );
            }
            self.counters.alarms_sent += new_alarms as u64;
            self.hb_backlog -= hbs;
            self.counters.heartbeats_sent += hbs;
            self.inflight.insert(
                batch_seq,
                InFlight {
                    sent: now,
                    events: n,
                    alarms: alarm_keys,
                },
            );
        }
    }

    fn on_ack(&mut self, ack: Ack) {
        let Ack { received, ack } = ack;
        self.counters.acks_received += 1;
        let batch = self.inflight.remove(&ack.batch_seq);
        if ack.status == AckStatus::Rejected as i32 {
            self.counters.acks_rejected += 1;
            if let Some(b) = batch {
                self.counters.rejected_events += b.events;
                for key in b.alarms {
                    if self.unacked.remove(&key).is_some() {
                        self.counters.alarms_rejected += 1;
                    }
                }
            }
            return;
        }
        match batch {
            Some(b) => record(&mut self.rtt, received.saturating_duration_since(b.sent)),
            None => self.counters.acks_unknown_batch += 1,
        }
        for r in &ack.rejected {
            self.counters.rejected_events += 1;
            if self.unacked.remove(&(r.point_id, r.device_seq)).is_some() {
                self.counters.alarms_rejected += 1;
            }
        }
        for d in &ack.durable {
            if let Some(u) = self.unacked.remove(&(d.point_id, d.device_seq)) {
                record(
                    &mut self.latency,
                    received.saturating_duration_since(u.intended),
                );
                self.counters.alarms_acked += 1;
            }
        }
    }

    /// Nothing left to send and nothing awaiting an ack.
    fn idle(&self) -> bool {
        self.hb_backlog == 0
            && self.alarms.is_empty()
            && self.unacked.is_empty()
            && self.inflight.is_empty()
    }

    fn finish(mut self) -> GatewayResult {
        self.counters.alarms_unacked = self.unacked.len() as u64;
        self.counters.batches_unacked = self.inflight.len() as u64;
        self.counters.alarms_unsent = self.alarms.len() as u64;
        self.counters.events_unsent = self.hb_backlog + self.counters.alarms_unsent;
        GatewayResult {
            counters: self.counters,
            latency: self.latency,
            rtt: self.rtt,
            sent_alarms: self.sent_alarms,
            last_publish: self.last_publish,
        }
    }
}

fn record(h: &mut Histogram<u64>, d: Duration) {
    h.saturating_record(d.as_micros().min(u128::from(u64::MAX)) as u64);
}
