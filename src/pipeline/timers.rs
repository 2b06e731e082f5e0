//! A hashed timer wheel of one-second buckets for point supervision deadlines.
//!
//! Re-arming never searches: a new deadline is pushed into its bucket and the point's slot
//! remembers the current one; when a bucket fires, entries whose slot moved on are stale
//! and skipped. Each heartbeat adds one entry and each entry is looked at once, so the
//! cost grows with events and expiries, never with the number of points. Deadlines beyond
//! the wheel's horizon wait in an overflow list that is re-filed once per revolution.

/// Seconds covered by one revolution (about 36 h: every device class fits).
pub const HORIZON_S: u32 = 1 << 17;

/// The wheel. Times are seconds on the caller's clock.
pub struct TimerWheel {
    buckets: Vec<Vec<u32>>,
    overflow: Vec<(u32, u32)>,
    /// Last second processed.
    cursor: u32,
    len: usize,
}

impl TimerWheel {
    /// An empty wheel whose clock starts at `now_s`.
    pub fn new(now_s: u32) -> Self {
        TimerWheel {
            buckets: vec![Vec::new(); HORIZON_S as usize],
            overflow: Vec::new(),
            cursor: now_s,
            len: 0,
        }
    }

    /// Entries held (including stale ones).
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when nothing is scheduled.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Schedules `item` at second `at_s` (a time in the past fires on the next advance).
    pub fn insert(&mut self, item: u32, at_s: u32) {
        let at_s = at_s.max(self.cursor + 1);
        if at_s - self.cursor >= HORIZON_S {
            self.overflow.push((item, at_s));
        } else {
            self.buckets[(at_s % HORIZON_S) as usize].push(item);
        }
        self.len += 1;
    }

    /// Fires every bucket up to and including `now_s`, calling `fire(item, second)`.
    pub fn advance(&mut self, now_s: u32, mut fire: impl FnMut(u32, u32)) {
        if now_s.saturating_sub(self.cursor) > HORIZON_S {
            // A long pause (the process was stopped): everything in the wheel is overdue.
            // Fire it in order, then the overdue part of the overflow, and re-file the rest.
            for sec in self.cursor + 1..=self.cursor + HORIZON_S {
                let idx = (sec % HORIZON_S) as usize;
                let items = std::mem::take(&mut self.buckets[idx]);
                self.len -= items.len();
                for item in items {
                    fire(item, sec);
                }
            }
            self.cursor = now_s;
            let mut pending = std::mem::take(&mut self.overflow);
            self.len -= pending.len();
            pending.sort_by_key(|&(_, at)| at);
            for (item, at) in pending {
                if at <= now_s {
                    fire(item, at);
                } else {
                    self.insert(item, at);
                }
            }
            return;
        }
        while self.cursor < now_s {
            self.cursor += 1;
            let sec = self.cursor;
            let idx = (sec % HORIZON_S) as usize;
            if !self.buckets[idx].is_empty() {
                let mut items = std::mem::take(&mut self.buckets[idx]);
                self.len -= items.len();
                for item in &items {
                    fire(*item, sec);
                }
                // Give the allocation back for reuse.
                items.clear();
                if self.buckets[idx].is_empty() {
                    self.buckets[idx] = items;
                }
            }
            if idx == 0 && !self.overflow.is_empty() {
                let pending = std::mem::take(&mut self.overflow);
                self.len -= pending.len();
                for (item, at) in pending {
                    if at <= sec {
                        fire(item, at);
                    } else {
                        self.insert(item, at);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fires_in_order_at_the_right_second() {
        let mut w = TimerWheel::new(100);
        w.insert(1, 105);
        w.insert(2, 103);
        w.insert(3, 50); // past: next second
        let mut fired = Vec::new();
        w.advance(104, |i, s| fired.push((i, s)));
        assert_eq!(fired, vec![(3, 101), (2, 103)]);
        w.advance(110, |i, s| fired.push((i, s)));
        assert_eq!(fired.last(), Some(&(1, 105)));
        assert!(w.is_empty());
    }

    #[test]
    fn far_deadlines_survive_revolutions() {
        let mut w = TimerWheel::new(0);
        w.insert(7, HORIZON_S + 10);
        w.insert(8, 2 * HORIZON_S + 5);
        let mut fired = Vec::new();
        for t in (0..=3 * HORIZON_S).step_by(1000) {
            w.advance(t, |i, s| fired.push((i, s)));
        }
        assert_eq!(fired, vec![(7, HORIZON_S + 10), (8, 2 * HORIZON_S + 5)]);
        // The same in one long jump.
        let mut w = TimerWheel::new(0);
        w.insert(7, HORIZON_S + 10);
        w.insert(8, 2 * HORIZON_S + 5);
        w.insert(9, 3);
        let mut fired = Vec::new();
        w.advance(3 * HORIZON_S, |i, s| fired.push((i, s)));
        assert_eq!(
            fired,
            vec![(9, 3), (7, HORIZON_S + 10), (8, 2 * HORIZON_S + 5)]
        );
    }

    #[test]
    fn a_long_pause_still_fires_everything() {
        let mut w = TimerWheel::new(0);
        w.insert(1, 10);
        w.insert(2, 1000);
        let mut fired = Vec::new();
        w.advance(10 * HORIZON_S, |i, _| fired.push(i));
        assert_eq!(fired, vec![1, 2]);
    }
}
