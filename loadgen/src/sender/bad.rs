//! Bad input of the `bad` scenario: undecodable protobuf, oversize payloads, foreign-point
//! alarms, batches naming another gateway and publishes on another gateway's topic.

use super::{BatchKind, Gateway, InFlight};
use crate::timeline::Field;
use firewatch_proto::{EventKind, PointEvent, UplinkBatch};
use prost::Message;
use rand::Rng;
use rumqttc::QoS;
use tokio::time::Instant;

/// Size of the oversize payloads of the bad scenario (the engine's limit is 64 KiB).
pub const OVERSIZE_BYTES: usize = 70_000;

#[derive(Clone, Copy)]
pub(super) enum BadKind {
    Malformed,
    Oversize,
    Foreign,
    Mismatch,
    WrongTopic,
}

pub(super) const BAD_KINDS: [BadKind; 5] = [
    BadKind::Malformed,
    BadKind::Oversize,
    BadKind::Foreign,
    BadKind::Mismatch,
    BadKind::WrongTopic,
];

impl Gateway {
    /// Publishes the queued bad input (bad scenario).
    pub(super) fn flush_bad(&mut self, client: &rumqttc::AsyncClient, now: Instant) {
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
            // Bad publishes without a batch of their own get an ordinal that names none.
            self.published(if inflight.is_some() { batch_seq } else { 0 });
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
}
