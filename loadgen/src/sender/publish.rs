//! Publishing: queued retransmissions, alarms, scripted events and heartbeats packed into
//! `UplinkBatch`es; sent alarms go into the unacked store, batches into the in-flight map.

use super::{BatchKind, Gateway, InFlight, Unacked};
use crate::scenario::Source;
use crate::timeline::Field;
use firewatch_proto::{EventKind, UplinkBatch};
use prost::Message;
use rumqttc::QoS;
use tokio::time::Instant;

impl Gateway {
    /// Publishes everything queued, in batches of at most `batch` events: retransmissions
    /// first, then new alarms, then other scripted events, then heartbeats. Stops when the
    /// client's queue is full.
    pub(super) fn flush(&mut self, client: &rumqttc::AsyncClient, now: Instant) {
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
            self.published(batch_seq);
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
}
