//! Latency histograms (HdrHistogram, microsecond resolution) that are recorded on the hot
//! path without touching the metrics registry, and exported now and then as quantile gauges.

use hdrhistogram::Histogram;
use std::time::Duration;

/// Quantiles exported for every histogram.
pub const QUANTILES: [(f64, &str); 5] = [
    (0.5, "0.5"),
    (0.9, "0.9"),
    (0.99, "0.99"),
    (0.999, "0.999"),
    (1.0, "1"),
];

/// One latency series.
pub struct LatencyHistogram {
    hist: Histogram<u64>,
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        Self::new()
    }
}

impl LatencyHistogram {
    /// 1 µs .. 60 s at 3 significant digits.
    pub fn new() -> Self {
        // The bounds are constants that HdrHistogram accepts.
        let hist = Histogram::new_with_bounds(1, 60_000_000, 3).unwrap_or_else(|_| {
            Histogram::new(3).unwrap_or_else(|_| unreachable!("3 significant digits is valid"))
        });
        LatencyHistogram { hist }
    }

    /// Records one latency (saturating at the upper bound).
    pub fn record(&mut self, d: Duration) {
        let us = (d.as_micros() as u64).clamp(1, 60_000_000);
        self.hist.saturating_record(us);
    }

    /// Samples recorded.
    pub fn len(&self) -> u64 {
        self.hist.len()
    }

    /// True when nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.hist.is_empty()
    }

    /// Quantile in seconds.
    pub fn quantile_seconds(&self, q: f64) -> f64 {
        self.hist.value_at_quantile(q) as f64 / 1e6
    }

    /// Sets `name{quantile=…, labels…}` gauges from this window, then resets it.
    pub fn export_and_reset(&mut self, name: &'static str, labels: &[(&'static str, String)]) {
        if self.hist.is_empty() {
            return;
        }
        for (q, qs) in QUANTILES {
            let mut l: Vec<(&'static str, String)> = labels.to_vec();
            l.push(("quantile", qs.to_string()));
            metrics::gauge!(name, &l).set(self.quantile_seconds(q));
        }
        self.hist.reset();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_follow_samples() {
        let mut h = LatencyHistogram::new();
        for ms in 1..=100 {
            h.record(Duration::from_millis(ms));
        }
        assert_eq!(h.len(), 100);
        let p50 = h.quantile_seconds(0.5);
        assert!((0.049..0.051).contains(&p50), "{p50}");
        assert!(h.quantile_seconds(1.0) >= 0.0999);
        h.record(Duration::from_secs(3600));
        assert!(h.quantile_seconds(1.0) <= 60.1);
    }
}
