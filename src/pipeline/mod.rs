//! The sharded pipeline: a router that splits uplink batches by house onto shard threads,
//! two bounded lanes per shard (alarms never wait behind heartbeats), and the shard loop.
//!
//! Routing: `shard = hash(house_id) % N`; every point of a house lives on one shard, which
//! owns its state outright. Thread hops per event: ingest → shard → sink.

pub mod aggregate;
pub mod chain;
pub mod incident;
pub mod shard;
pub mod snapshot;
pub mod timers;

use crate::registry::{PointIdx, Registry};
use crate::sink::{BatchAck, SinkMsg};
use crate::telemetry::names;
use crossbeam_channel::{Receiver, Sender, TrySendError};
use firewatch_proto::{EventKind, PointEvent};
pub use shard::{BatchCtx, Outcome, RoutedEvent, Shard, ShardRules};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A batch part for one shard lane.
#[derive(Debug)]
pub struct EventBatch {
    /// Events of this part.
    pub events: Vec<RoutedEvent>,
    /// Batch context.
    pub ctx: BatchCtx,
    /// The batch's pending ack (this part holds one share); none for coalesced heartbeats.
    pub ack: Option<Arc<BatchAck>>,
}

/// Messages to a shard.
#[derive(Debug)]
pub enum ShardMsg {
    /// Events to process.
    Events(EventBatch),
    /// A station command for an incident of `house` (ownership already checked).
    Command {
        /// House of the incident.
        house: u32,
        /// Incident id.
        incident_id: String,
        /// What to do.
        command: incident::Command,
        /// Who.
        operator: String,
        /// The commanding station (for dead letters).
        station: u32,
    },
    /// A gateway's connection went down or came back; `locals` are its points here.
    Gateway {
        /// Shard-local indexes.
        locals: Vec<u32>,
        /// Connected again?
        up: bool,
    },
}

/// Where each point lives.
#[derive(Debug, Clone, Copy)]
struct Placement {
    shard: u16,
    local: u32,
}

/// The shard of a house: a multiplicative hash, stable across restarts for a shard count.
pub fn shard_of_house(house: u32, shards: usize) -> usize {
    let h = u64::from(house).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    ((h >> 32) % shards as u64) as usize
}

/// Senders of one shard's lanes.
#[derive(Clone)]
struct Lanes {
    alarm: Sender<ShardMsg>,
    normal: Sender<ShardMsg>,
}

/// Splits batches by shard and lane. Owned by the ingest thread.
pub struct Router {
    placement: Vec<Placement>,
    lanes: Vec<Lanes>,
    /// Reusable per-shard, per-lane buffers.
    parts: Vec<[Vec<RoutedEvent>; 2]>,
    /// Heartbeats coalesced while a shard's normal lane was full: the latest per point.
    pending: Vec<rustc_hash::FxHashMap<u32, RoutedEvent>>,
    shed: metrics::Counter,
}

/// The receiving ends for one shard thread.
pub struct ShardInputs {
    /// Alarm-class events, troubles, commands, presence.
    pub alarm: Receiver<ShardMsg>,
    /// Heartbeats and the rest.
    pub normal: Receiver<ShardMsg>,
    /// Registry indexes of the points this shard owns (position = shard-local index).
    pub globals: Vec<PointIdx>,
}

impl Router {
    /// Places every registry point and creates `shards` pairs of lanes of `capacity` batches.
    pub fn new(registry: &Registry, shards: usize, capacity: usize) -> (Router, Vec<ShardInputs>) {
        let shards = shards.max(1);
        let mut globals: Vec<Vec<PointIdx>> = vec![Vec::new(); shards];
        let placement = (0..registry.len() as u32)
            .map(|idx| {
                let s = shard_of_house(registry.info(idx).house, shards);
                let local = globals[s].len() as u32;
                globals[s].push(idx);
                Placement {
                    shard: s as u16,
                    local,
                }
            })
            .collect();
        let mut lanes = Vec::with_capacity(shards);
        let mut inputs = Vec::with_capacity(shards);
        for g in globals {
            let (atx, arx) = crossbeam_channel::bounded(capacity);
            let (ntx, nrx) = crossbeam_channel::bounded(capacity);
            lanes.push(Lanes {
                alarm: atx,
                normal: ntx,
            });
            inputs.push(ShardInputs {
                alarm: arx,
                normal: nrx,
                globals: g,
            });
        }
        let router = Router {
            placement,
            lanes,
            parts: (0..shards).map(|_| Default::default()).collect(),
            pending: (0..shards).map(|_| Default::default()).collect(),
            shed: metrics::counter!(names::PIPELINE_SHED_EVENTS_TOTAL, "kind" => "heartbeat"),
        };
        (router, inputs)
    }

    /// Shard count.
    pub fn shards(&self) -> usize {
        self.lanes.len()
    }

    /// Offers the coalesced heartbeats to their shards again (called before every batch
    /// and when ingest is idle); they stay pending while a lane is still full.
    pub fn flush_pending(&mut self) {
        for (s, pending) in self.pending.iter_mut().enumerate() {
            if pending.is_empty() {
                continue;
            }
            let events: Vec<RoutedEvent> = pending.drain().map(|(_, e)| e).collect();
            let ctx = BatchCtx {
                gateway_id: Arc::from(""),
                batch_seq: 0,
                received_ms: crate::clock::unix_ms(),
            };
            let msg = ShardMsg::Events(EventBatch {
                events,
                ctx,
                ack: None,
            });
            if let Err(TrySendError::Full(ShardMsg::Events(b))) = self.lanes[s].normal.try_send(msg)
            {
                pending.extend(b.events.into_iter().map(|e| (e.local, e)));
            }
        }
    }

    /// Heartbeats waiting to be offered again.
    pub fn pending_heartbeats(&self) -> usize {
        self.pending.iter().map(|p| p.len()).sum()
    }

    /// (shard, shard-local index) of a point.
    pub fn place(&self, point: PointIdx) -> Option<(usize, u32)> {
        self.placement
            .get(point as usize)
            .map(|p| (p.shard as usize, p.local))
    }

    /// Senders of every shard's alarm lane, by shard (for the Kafka station-command
    /// consumer); a holder keeps the lanes open, so it must drop them before shards stop.
    pub fn priority_senders(&self) -> Vec<Sender<ShardMsg>> {
        self.lanes.iter().map(|l| l.alarm.clone()).collect()
    }

    /// Sends a message to a shard's alarm lane (blocking: commands and presence are never shed).
    pub fn send_priority(&self, shard: usize, msg: ShardMsg) {
        if let Some(l) = self.lanes.get(shard) {
            let _ = l.alarm.send(msg);
        }
    }

    /// Tells every shard that holds points of a gateway that it went down or came back.
    pub fn gateway_presence(&self, points: &[PointIdx], up: bool) {
        let mut per: Vec<Vec<u32>> = vec![Vec::new(); self.lanes.len()];
        for &p in points {
            if let Some((s, local)) = self.place(p) {
                per[s].push(local);
            }
        }
        for (s, locals) in per.into_iter().enumerate() {
            if !locals.is_empty() {
                self.send_priority(s, ShardMsg::Gateway { locals, up });
            }
        }
    }

    /// Routes accepted events. `make_ack(parts)` builds the batch's pending ack once the
    /// number of parts is known; with no parts it is returned for the caller to complete.
    ///
    /// Alarm lanes block when full (alarms are never shed). A full normal lane sheds the
    /// part's heartbeats (counted) and sends its other events by the alarm lane.
    pub fn route(
        &mut self,
        events: impl Iterator<Item = (PointIdx, PointEvent)>,
        ctx: &BatchCtx,
        make_ack: impl FnOnce(u32) -> BatchAck,
    ) -> Option<Arc<BatchAck>> {
        self.flush_pending();
        for (point, event) in events {
            let Some(p) = self.placement.get(point as usize).copied() else {
                continue;
            };
            let kind = EventKind::try_from(event.kind).unwrap_or(EventKind::Unspecified);
            let lane = usize::from(!is_priority(kind));
            self.parts[p.shard as usize][lane].push(RoutedEvent {
                point,
                local: p.local,
                event,
            });
        }
        let n_parts = self
            .parts
            .iter()
            .flatten()
            .filter(|v| !v.is_empty())
            .count() as u32;
        let ack = Arc::new(make_ack(n_parts.max(1)));
        if n_parts == 0 {
            return Some(ack);
        }
        for (s, parts) in self.parts.iter_mut().enumerate() {
            let [alarm, normal] = parts;
            if !alarm.is_empty() {
                let msg = ShardMsg::Events(EventBatch {
                    events: std::mem::take(alarm),
                    ctx: ctx.clone(),
                    ack: Some(ack.clone()),
                });
                // Blocking: back-pressure, never loss. Fails only when the shard is gone.
                let _ = self.lanes[s].alarm.send(msg);
            }
            if !normal.is_empty() {
                let msg = ShardMsg::Events(EventBatch {
                    events: std::mem::take(normal),
                    ctx: ctx.clone(),
                    ack: Some(ack.clone()),
                });
                match self.lanes[s].normal.try_send(msg) {
                    Ok(()) | Err(TrySendError::Disconnected(_)) => {}
                    Err(TrySendError::Full(ShardMsg::Events(mut b))) => {
                        // Overload: heartbeats are coalesced (only a point's latest matters);
                        // everything else still goes, by the lane that blocks.
                        let pending = &mut self.pending[s];
                        let shed = &self.shed;
                        b.events.retain(|e| {
                            if e.event.kind != EventKind::Heartbeat as i32 {
                                return true;
                            }
                            if pending.insert(e.local, e.clone()).is_some() {
                                shed.increment(1);
                            }
                            false
                        });
                        let _ = self.lanes[s].alarm.send(ShardMsg::Events(b));
                    }
                    Err(TrySendError::Full(other)) => {
                        let _ = self.lanes[s].alarm.send(other);
                    }
                }
            }
        }
        None
    }
}

/// Kinds that take the alarm lane: fire alarms, and the clears and mutes that belong to
/// their incidents (kept in order with them). Troubles, tests and heartbeats take the
/// normal lane, which a shard drains only when no alarm waits.
pub fn is_priority(kind: EventKind) -> bool {
    kind.is_alarm() || matches!(kind, EventKind::AlarmClear | EventKind::Mute)
}

/// Runs one shard until both lanes are closed and drained; returns the shard (for the
/// final snapshot). `snapshot(shard)` runs every `snapshot_interval`.
pub fn run_shard(
    id: usize,
    mut shard: Shard,
    inputs: ShardInputs,
    sink: Sender<SinkMsg>,
    tick_interval: Duration,
    snapshot_interval: Duration,
    mut snapshot: impl FnMut(&Shard),
) -> Shard {
    let label = id.to_string();
    let processed_alarm = metrics::counter!(names::PIPELINE_EVENTS_TOTAL, "lane" => "alarm");
    let processed_normal = metrics::counter!(names::PIPELINE_EVENTS_TOTAL, "lane" => "normal");
    let dups = metrics::counter!(names::PIPELINE_DUPLICATES_TOTAL);
    let depth_a =
        metrics::gauge!(names::PIPELINE_QUEUE_DEPTH, "shard" => label.clone(), "lane" => "alarm");
    let depth_n =
        metrics::gauge!(names::PIPELINE_QUEUE_DEPTH, "shard" => label.clone(), "lane" => "normal");
    let online = metrics::gauge!(names::PIPELINE_ONLINE_POINTS, "shard" => label);
    let mut out = Vec::new();
    let mut next_tick = Instant::now() + tick_interval;
    let mut next_snapshot = Instant::now() + snapshot_interval;
    let (mut alarm_open, mut normal_open) = (true, true);
    while alarm_open || normal_open {
        // Priority drain: alarms first, always.
        let msg = match inputs.alarm.try_recv() {
            Ok(m) => Some((m, true)),
            Err(_) => match inputs.normal.try_recv() {
                Ok(m) => Some((m, false)),
                Err(_) => {
                    let timeout = next_tick.saturating_duration_since(Instant::now());
                    let mut sel = crossbeam_channel::Select::new();
                    let ia = alarm_open.then(|| sel.recv(&inputs.alarm));
                    let inn = normal_open.then(|| sel.recv(&inputs.normal));
                    match sel.select_timeout(timeout) {
                        Ok(op) if Some(op.index()) == ia => match op.recv(&inputs.alarm) {
                            Ok(m) => Some((m, true)),
                            Err(_) => {
                                alarm_open = false;
                                None
                            }
                        },
                        Ok(op) if Some(op.index()) == inn => match op.recv(&inputs.normal) {
                            Ok(m) => Some((m, false)),
                            Err(_) => {
                                normal_open = false;
                                None
                            }
                        },
                        Ok(_) | Err(_) => None,
                    }
                }
            },
        };
        match msg {
            Some((ShardMsg::Events(b), is_alarm)) => {
                let now_ms = crate::clock::unix_ms();
                let mut n_dup = 0u64;
                for ev in &b.events {
                    if shard.on_event(ev, &b.ctx, now_ms, &mut out) != Outcome::Accepted {
                        n_dup += 1;
                    }
                }
                dups.increment(n_dup);
                let c = if is_alarm {
                    &processed_alarm
                } else {
                    &processed_normal
                };
                c.increment(b.events.len() as u64);
                let msg = SinkMsg {
                    records: std::mem::take(&mut out),
                    acks: b.ack.into_iter().collect(),
                    shard: Some(id),
                };
                if sink.send(msg).is_err() {
                    tracing::error!(shard = id, "sink is gone; shard stops");
                    return shard;
                }
            }
            Some((
                ShardMsg::Command {
                    house,
                    incident_id,
                    command,
                    operator,
                    station,
                },
                _,
            )) => {
                let now_ms = crate::clock::unix_ms();
                if let Err(reason) =
                    shard.on_command(house, &incident_id, command, &operator, now_ms, &mut out)
                {
                    metrics::counter!(names::INGEST_REJECTED_TOTAL, "reason" => reason.wire_name())
                        .increment(1);
                    let dl = crate::sink::DeadLetter {
                        gateway_id: format!("station-{station}"),
                        topic: format!("fw/v1/station/{station}/cmd"),
                        reason,
                        detail: format!("incident {incident_id} is not open"),
                        raw: bytes::Bytes::new(),
                        point_id: 0,
                        device_seq: 0,
                    };
                    metrics::counter!(names::DEADLETTER_REJECTS_TOTAL, "reason" => reason.wire_name()).increment(1);
                    out.push(dl.to_record(now_ms, 0));
                }
                if !out.is_empty() {
                    let _ = sink.send(SinkMsg {
                        records: std::mem::take(&mut out),
                        acks: vec![],
                        shard: Some(id),
                    });
                }
            }
            Some((ShardMsg::Gateway { locals, up }, _)) => {
                shard.on_gateway(&locals, up, crate::clock::unix_ms());
            }
            None => {}
        }
        if Instant::now() >= next_tick {
            next_tick += tick_interval;
            if next_tick < Instant::now() {
                next_tick = Instant::now() + tick_interval;
            }
            shard.on_tick(crate::clock::unix_ms(), &mut out);
            if !out.is_empty() {
                let msg = SinkMsg {
                    records: std::mem::take(&mut out),
                    acks: vec![],
                    shard: Some(id),
                };
                let _ = sink.send(msg);
            }
            depth_a.set(inputs.alarm.len() as f64);
            depth_n.set(inputs.normal.len() as f64);
            online.set(shard.online() as f64);
            if Instant::now() >= next_snapshot {
                snapshot(&shard);
                next_snapshot = Instant::now() + snapshot_interval;
            }
        }
    }
    online.set(shard.online() as f64);
    shard
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::{generate, GenerateOptions};
    use std::collections::HashSet;

    #[test]
    fn houses_stay_on_one_shard_and_spread() {
        let reg = generate(&GenerateOptions {
            points: 5000,
            seed: 3,
        });
        let (router, inputs) = Router::new(&reg, 4, 8);
        let mut by_house = std::collections::HashMap::new();
        for idx in 0..reg.len() as u32 {
            let s = router.placement[idx as usize].shard;
            assert_eq!(*by_house.entry(reg.info(idx).house).or_insert(s), s);
        }
        let sizes: Vec<usize> = inputs.iter().map(|i| i.globals.len()).collect();
        assert_eq!(sizes.iter().sum::<usize>(), reg.len());
        assert!(sizes.iter().all(|&n| n > reg.len() / 8), "{sizes:?}");
        // Local indexes are dense per shard.
        for s in 0..4u16 {
            let locals: HashSet<u32> = router
                .placement
                .iter()
                .filter(|p| p.shard == s)
                .map(|p| p.local)
                .collect();
            assert_eq!(locals.len(), sizes[s as usize]);
            assert!(locals.iter().all(|&l| (l as usize) < sizes[s as usize]));
        }
    }

    #[test]
    fn route_splits_lanes_and_counts_parts() {
        let reg = generate(&GenerateOptions {
            points: 2000,
            seed: 3,
        });
        let (mut router, inputs) = Router::new(&reg, 2, 8);
        let ctx = BatchCtx {
            gateway_id: "g".into(),
            batch_seq: 1,
            received_ms: 0,
        };
        let ev = |kind: EventKind| PointEvent {
            kind: kind as i32,
            ..Default::default()
        };
        let events = vec![
            (0, ev(EventKind::Heartbeat)),
            (0, ev(EventKind::SmokeAlarm)),
        ];
        let mut parts_seen = 0;
        let none = router.route(events.into_iter(), &ctx, |p| {
            parts_seen = p;
            BatchAck::new("g".into(), 1, vec![], vec![], Instant::now(), p)
        });
        assert!(none.is_none());
        assert_eq!(parts_seen, 2);
        let s = router.placement[0].shard as usize;
        assert_eq!(inputs[s].alarm.len(), 1);
        assert_eq!(inputs[s].normal.len(), 1);
        let empty = router.route(std::iter::empty(), &ctx, |p| {
            BatchAck::new("g".into(), 2, vec![], vec![], Instant::now(), p)
        });
        assert!(empty.expect("no parts: ack returned").complete_part());
    }

    #[test]
    fn a_full_normal_lane_coalesces_heartbeats_and_keeps_the_rest() {
        let reg = generate(&GenerateOptions {
            points: 100,
            seed: 3,
        });
        // Lanes of 3: the normal lane is filled, the alarm lane has room for what follows.
        let (mut router, inputs) = Router::new(&reg, 1, 3);
        let ctx = BatchCtx {
            gateway_id: "g".into(),
            batch_seq: 1,
            received_ms: 0,
        };
        let ack = |p| BatchAck::new("g".into(), 1, vec![], vec![], Instant::now(), p);
        let hb = |seq| PointEvent {
            kind: EventKind::Heartbeat as i32,
            device_seq: seq,
            ..Default::default()
        };
        let fault = PointEvent {
            kind: EventKind::Fault as i32,
            ..Default::default()
        };
        for _ in 0..3 {
            router.route(vec![(0, hb(1))].into_iter(), &ctx, ack);
        }
        // The lane is full now: heartbeats of points 1 and 2 are coalesced, the fault goes by
        // the alarm lane; a newer heartbeat of point 1 supersedes the older one.
        router.route(
            vec![(1, hb(1)), (2, hb(1)), (3, fault)].into_iter(),
            &ctx,
            ack,
        );
        router.route(vec![(1, hb(2))].into_iter(), &ctx, ack);
        assert_eq!(router.pending_heartbeats(), 2);
        assert_eq!(inputs[0].normal.len(), 3);
        let Ok(ShardMsg::Events(b)) = inputs[0].alarm.try_recv() else {
            panic!("expected events")
        };
        assert_eq!(b.events.len(), 1);
        assert_eq!(b.events[0].event.kind, EventKind::Fault as i32);
        // The part that was all heartbeats still completes its batch's ack (empty part).
        let Ok(ShardMsg::Events(b)) = inputs[0].alarm.try_recv() else {
            panic!("expected a part")
        };
        assert!(b.events.is_empty() && b.ack.is_some());
        // Once the lane drains, the coalesced heartbeats go, the latest per point.
        while inputs[0].normal.try_recv().is_ok() {}
        router.flush_pending();
        assert_eq!(router.pending_heartbeats(), 0);
        let Ok(ShardMsg::Events(b)) = inputs[0].normal.try_recv() else {
            panic!("expected heartbeats")
        };
        assert!(b.ack.is_none());
        let mut seqs: Vec<(u32, u32)> = b
            .events
            .iter()
            .map(|e| (e.point, e.event.device_seq))
            .collect();
        seqs.sort();
        assert_eq!(seqs, vec![(1, 2), (2, 1)]);
    }
}
