//! Ack bookkeeping: durable alarms leave the unacked store and go into the latency
//! histograms; rejected batches and events, bad-input verdicts.

use super::{hists, AlarmSample, BatchKind, Gateway};
use crate::link::Ack;
use crate::scenario::Source;
use crate::timeline::Field;
use firewatch_proto::{AckStatus, EventRef, RejectReason, UplinkAck};
use std::time::Duration;

impl Gateway {
    pub(super) fn on_ack(&mut self, ack: Ack) {
        let Ack {
            received,
            ack,
            puback,
        } = ack;
        let ack = match puback {
            Some(ordinal) => match self.puback_as_ack(ordinal) {
                Some(ack) => ack,
                None => return,
            },
            None => ack,
        };
        self.counters.acks_received += 1;
        if ack.acked_at_ms > 0 {
            let transit = firewatch::clock::unix_ms().saturating_sub(ack.acked_at_ms);
            self.hists
                .record(hists::TRANSIT, Duration::from_millis(transit.max(0) as u64));
        }
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
                self.hists
                    .record(hists::RTT, received.saturating_duration_since(batch.sent));
                self.counters.events_acked += batch.events;
                self.timeline()
                    .add(received, Field::EventsAcked, batch.events);
                for at in hb_intended {
                    if at >= self.warm_from {
                        self.hists
                            .record(hists::HEARTBEAT, received.saturating_duration_since(at));
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
                            self.hists.record(u.source as usize, lat);
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

    /// `--ack puback`: the PUBACK of the session's publish `ordinal` as an ack naming every
    /// alarm of its batch durable (a plain broker has no other verdict).
    fn puback_as_ack(&mut self, ordinal: u64) -> Option<UplinkAck> {
        let batch_seq = self.pub_batches.remove(&ordinal)?;
        let batch = self.inflight.get(&batch_seq)?;
        let durable = match &batch.kind {
            BatchKind::Good { alarms, .. } => alarms
                .iter()
                .map(|&(point_id, device_seq)| EventRef {
                    point_id,
                    device_seq,
                })
                .collect(),
            _ => Vec::new(),
        };
        Some(UplinkAck {
            gateway_id: self.plan.id.clone(),
            batch_seq,
            status: AckStatus::Accepted as i32,
            durable,
            ..UplinkAck::default()
        })
    }
}
