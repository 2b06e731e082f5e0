//! Per-second counters of the whole run, shared by every gateway task (relaxed atomics,
//! one slot per second from the schedule start), read live by the progress bar and at the
//! end by the report and the plot.

use std::sync::atomic::{AtomicU64, Ordering};
use tokio::time::Instant;

/// What is counted per second.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(usize)]
pub enum Field {
    /// Events published for the first time (heartbeats, alarms, clears).
    EventsSent,
    /// Alarms published for the first time.
    AlarmsSent,
    /// Events of batches acked ACCEPTED (counted at the ack's receipt).
    EventsAcked,
    /// Distinct alarms first named in an ack's `durable` list.
    AlarmsAcked,
    /// Alarm retransmissions.
    Retransmissions,
    /// Bad publishes (bad scenario).
    BadSent,
    /// Rejections of bad input observed in acks (bad scenario).
    BadRejected,
}

/// Number of [`Field`]s.
pub const FIELDS: usize = 7;

/// The counters.
pub struct Timeline {
    start: Instant,
    slots: Vec<[AtomicU64; FIELDS]>,
}

impl Timeline {
    /// `secs` one-second slots from `start`; later times count in the last slot.
    pub fn new(start: Instant, secs: usize) -> Timeline {
        Timeline {
            start,
            slots: (0..secs.max(1))
                .map(|_| std::array::from_fn(|_| AtomicU64::new(0)))
                .collect(),
        }
    }

    /// The slot of `at` (times before the start count in slot 0).
    pub fn slot_of(&self, at: Instant) -> usize {
        let s = at.saturating_duration_since(self.start).as_secs() as usize;
        s.min(self.slots.len() - 1)
    }

    /// Adds `n` to `field` in the second of `at`.
    pub fn add(&self, at: Instant, field: Field, n: u64) {
        if n > 0 {
            self.slots[self.slot_of(at)][field as usize].fetch_add(n, Ordering::Relaxed);
        }
    }

    /// Sum of every slot, per field.
    pub fn totals(&self) -> [u64; FIELDS] {
        let mut t = [0u64; FIELDS];
        for s in &self.slots {
            for (ti, v) in t.iter_mut().zip(s) {
                *ti += v.load(Ordering::Relaxed);
            }
        }
        t
    }

    /// Every slot's counters.
    pub fn snapshot(&self) -> Vec<[u64; FIELDS]> {
        self.slots
            .iter()
            .map(|s| std::array::from_fn(|i| s[i].load(Ordering::Relaxed)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn slots_and_clamping() {
        let start = Instant::now();
        let t = Timeline::new(start, 3);
        t.add(start, Field::EventsSent, 2);
        t.add(start + Duration::from_millis(1500), Field::EventsSent, 3);
        t.add(start + Duration::from_secs(100), Field::AlarmsSent, 1);
        let s = t.snapshot();
        assert_eq!(s[0][Field::EventsSent as usize], 2);
        assert_eq!(s[1][Field::EventsSent as usize], 3);
        assert_eq!(s[2][Field::AlarmsSent as usize], 1);
        assert_eq!(t.totals()[Field::EventsSent as usize], 5);
    }
}
