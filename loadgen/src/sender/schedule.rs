//! When events fall due: heartbeats (rate or device class), background alarms, scripted
//! scenario events and bad input, queued up to `now`; retransmission timeouts.

use super::bad::BAD_KINDS;
use super::{Gateway, PendingAlarm};
use crate::scenario::{Source, ALARM_KINDS};
use firewatch_proto::{EventKind, PointEvent};
use rand::Rng;
use std::cmp::Reverse;
use std::time::Duration;
use tokio::time::Instant;

impl Gateway {
    /// Intended time of the next background alarm, if any are sent.
    pub(super) fn next_alarm_at(&self) -> Option<Instant> {
        let rate = self.alarm_rate;
        (rate > 0.0).then(|| {
            let secs = (self.alarm_k as f64 + self.alarm_phase) / rate;
            self.sched.start + Duration::from_secs_f64(secs)
        })
    }

    pub(super) fn next_script_at(&self) -> Option<Instant> {
        self.script.front().map(|s| self.sched.start + s.at)
    }

    pub(super) fn next_bad_at(&self) -> Option<Instant> {
        let rate = self.sched.bad_rate;
        (self.bad.is_some() && rate > 0.0).then(|| {
            let secs = (self.bad_k as f64 + self.bad_phase) / rate;
            self.sched.start + Duration::from_secs_f64(secs)
        })
    }

    pub(super) fn alarm_event(
        &mut self,
        local: usize,
        kind: EventKind,
        at: Instant,
    ) -> PendingAlarm {
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
    pub(super) fn schedule(&mut self, now: Instant) {
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
    pub(super) fn queue_retransmits(&mut self, now: Instant) {
        let after = self.sched.retransmit_after;
        for (key, u) in self.unacked.iter_mut() {
            if !u.queued && now.saturating_duration_since(u.last_sent) >= after {
                u.queued = true;
                self.retransmit.push_back(*key);
            }
        }
    }

    pub(super) fn heartbeat(&mut self, local: usize, wall_now: i64) -> PointEvent {
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
}
