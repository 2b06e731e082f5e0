//! Latency histograms shared by every gateway of a run.
//!
//! One full-range HdrHistogram (1 µs to 1 h, 3 significant digits, ~360 KB) per kind for
//! the whole run, not per gateway: per-gateway histograms cost 6 × 360 KB per gateway,
//! 13 GB of loadgen memory (and two cores of page faults) at 10,000 gateways. Each gateway
//! buffers its samples and merges them under the lock every [`FLUSH_AT`] samples and when
//! it finishes, so the lock is taken once per batch of samples, not per sample.

use crate::report::new_histogram;
use crate::scenario::SOURCES;
use hdrhistogram::Histogram;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// Kind index of heartbeat latency (intended send time to the ack of its batch).
pub const HEARTBEAT: usize = SOURCES.len();
/// Kind index of batch ack round trip (publish to ack receipt).
pub const RTT: usize = SOURCES.len() + 1;
/// Kind index of ack transit: the engine's `acked_at_ms` stamp to the gateway's receipt
/// (wall clock, ms resolution; meaningful when loadgen and engine share a clock).
pub const TRANSIT: usize = SOURCES.len() + 2;
/// Samples a gateway buffers before merging them.
const FLUSH_AT: usize = 256;

/// The run's histograms: alarm latency per source (by index), then [`HEARTBEAT`], [`RTT`],
/// [`TRANSIT`].
pub struct RunHists {
    hists: Mutex<Vec<Histogram<u64>>>,
}

impl Default for RunHists {
    fn default() -> Self {
        Self::new()
    }
}

impl RunHists {
    /// Empty histograms for every kind.
    pub fn new() -> Self {
        RunHists {
            hists: Mutex::new((0..=TRANSIT).map(|_| new_histogram()).collect()),
        }
    }

    /// A copy of the histograms (after every recorder has flushed).
    pub fn snapshot(&self) -> Vec<Histogram<u64>> {
        self.hists
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// One gateway's buffered view of the run's histograms.
pub struct Recorder {
    shared: Arc<RunHists>,
    buf: Vec<(u8, u64)>,
}

impl Recorder {
    /// A recorder merging into `shared`.
    pub fn new(shared: Arc<RunHists>) -> Self {
        Recorder {
            shared,
            buf: Vec::new(),
        }
    }

    /// Records `d` (µs, saturating) under `kind`.
    pub fn record(&mut self, kind: usize, d: Duration) {
        let us = d.as_micros().min(u128::from(u64::MAX)) as u64;
        self.buf.push((kind as u8, us));
        if self.buf.len() >= FLUSH_AT {
            self.flush();
        }
    }

    /// Merges the buffered samples into the shared histograms.
    pub fn flush(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        let mut h = self
            .shared
            .hists
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        for (kind, us) in self.buf.drain(..) {
            if let Some(hist) = h.get_mut(kind as usize) {
                hist.saturating_record(us);
            }
        }
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_from_many_recorders_all_arrive() {
        let shared = Arc::new(RunHists::new());
        for g in 0..10u64 {
            let mut r = Recorder::new(shared.clone());
            for i in 0..300 {
                r.record(RTT, Duration::from_micros(1000 + g * 300 + i));
            }
            r.record(HEARTBEAT, Duration::from_millis(5));
        }
        let h = shared.snapshot();
        assert_eq!(h[RTT].len(), 3000);
        assert_eq!(h[HEARTBEAT].len(), 10);
        assert_eq!(h[0].len(), 0);
        assert!(h[RTT].min() >= 1000 && h[RTT].max() <= 4_000);
    }
}
