//! The run report: counters summed over gateways, latency summaries, the log check and the
//! engine's resource use; printed as a table and optionally written as JSON.

use hdrhistogram::Histogram;
use serde::Serialize;
use std::fmt::Write as _;
use std::path::Path;

/// Counters of one gateway, or of the whole run once summed.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Counters {
    /// Heartbeat events published.
    pub heartbeats_sent: u64,
    /// Distinct alarms published (first transmissions).
    pub alarms_sent: u64,
    /// Alarm re-publications after the retransmit timeout.
    pub retransmissions: u64,
    /// Batches published.
    pub batches_sent: u64,
    /// Publish attempts refused because the client's queue was full.
    pub publish_stalls: u64,
    /// Acks received.
    pub acks_received: u64,
    /// Acks with status REJECTED.
    pub acks_rejected: u64,
    /// Acks whose batch_seq matched no outstanding batch (duplicates).
    pub acks_unknown_batch: u64,
    /// Published batches never acked.
    pub batches_unacked: u64,
    /// Events the engine rejected (listed in acks, or in rejected batches).
    pub rejected_events: u64,
    /// Distinct alarms named in some ack's `durable` list.
    pub alarms_acked: u64,
    /// Sent alarms neither acked nor rejected at the end.
    pub alarms_unacked: u64,
    /// Sent alarms the engine rejected.
    pub alarms_rejected: u64,
    /// Events due but never published (queued at the end).
    pub events_unsent: u64,
    /// Of those, alarms.
    pub alarms_unsent: u64,
}

impl Counters {
    /// Adds `o` field by field.
    pub fn add(&mut self, o: &Counters) {
        self.heartbeats_sent += o.heartbeats_sent;
        self.alarms_sent += o.alarms_sent;
        self.retransmissions += o.retransmissions;
        self.batches_sent += o.batches_sent;
        self.publish_stalls += o.publish_stalls;
        self.acks_received += o.acks_received;
        self.acks_rejected += o.acks_rejected;
        self.acks_unknown_batch += o.acks_unknown_batch;
        self.batches_unacked += o.batches_unacked;
        self.rejected_events += o.rejected_events;
        self.alarms_acked += o.alarms_acked;
        self.alarms_unacked += o.alarms_unacked;
        self.alarms_rejected += o.alarms_rejected;
        self.events_unsent += o.events_unsent;
        self.alarms_unsent += o.alarms_unsent;
    }
}

/// A histogram of microseconds, 1 µs to 1 h, 3 significant digits.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds")
}

/// Percentiles of a µs histogram, in milliseconds.
#[derive(Debug, Clone, Serialize)]
pub struct LatencySummary {
    /// Values recorded.
    pub count: u64,
    /// Mean.
    pub mean_ms: f64,
    /// Median.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// 99.9th percentile.
    pub p999_ms: f64,
    /// Largest value.
    pub max_ms: f64,
}

impl LatencySummary {
    /// Summary of `h` (all zero when empty).
    pub fn of(h: &Histogram<u64>) -> Self {
        let ms = |us: u64| us as f64 / 1000.0;
        let empty = h.is_empty();
        let q = |p: f64| {
            if empty {
                0.0
            } else {
                ms(h.value_at_quantile(p))
            }
        };
        LatencySummary {
            count: h.len(),
            mean_ms: if empty { 0.0 } else { h.mean() / 1000.0 },
            p50_ms: q(0.5),
            p90_ms: q(0.9),
            p99_ms: q(0.99),
            p999_ms: q(0.999),
            max_ms: if empty { 0.0 } else { ms(h.max()) },
        }
    }
}

/// What `fw.alarms` held for the sent alarms.
#[derive(Debug, Clone, Serialize)]
pub struct LogCheck {
    /// Records read from the topic (including other runs').
    pub records_read: u64,
    /// Sent alarms found at least once.
    pub alarms_observed: u64,
    /// Sent alarms not found.
    pub alarms_missing: u64,
    /// Extra records of sent alarms beyond the first.
    pub duplicates: u64,
    /// Up to ten missing (point_id, device_seq).
    pub missing_sample: Vec<(u64, u32)>,
}

/// The engine's resource use.
#[derive(Debug, Clone, Serialize)]
pub struct EngineUsage {
    /// Process id.
    pub pid: u32,
    /// Resident memory at the end, MiB.
    pub rss_mb: f64,
    /// Largest resident memory sampled during the run, MiB.
    pub peak_rss_mb: f64,
    /// CPU seconds (user + system) spent during the run.
    pub cpu_seconds: f64,
    /// `cpu_seconds` over the run's wall time: average cores busy.
    pub avg_cores: f64,
}

/// The whole report.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Gateways simulated.
    pub gateways: usize,
    /// Gateways that completed a connect at least once.
    pub gateways_connected: usize,
    /// Points simulated.
    pub points: usize,
    /// Connection errors (failed connects, dropped connections).
    pub connection_errors: u64,
    /// Ack payloads that did not decode.
    pub bad_ack_payloads: u64,
    /// Seconds the connect phase took.
    pub connect_secs: f64,
    /// Target heartbeat rate, events/s.
    pub target_rate: f64,
    /// Target alarm rate, alarms/s.
    pub target_alarm_rate: f64,
    /// Heartbeats + alarms (first transmissions).
    pub events_sent: u64,
    /// Counters summed over the gateways.
    #[serde(flatten)]
    pub counters: Counters,
    /// Seconds from schedule start to the last publish of new events.
    pub send_secs: f64,
    /// `events_sent / send_secs`.
    pub achieved_rate: f64,
    /// Alarm latency: intended send time to first ack naming the alarm.
    pub alarm_latency: LatencySummary,
    /// Batch publish to ack receipt.
    pub ack_rtt: LatencySummary,
    /// With --log-dir.
    pub log: Option<LogCheck>,
    /// With --engine-pid.
    pub engine: Option<EngineUsage>,
    /// Why the run failed; empty when it passed.
    pub failures: Vec<String>,
}

impl Report {
    /// Fills `failures` from the numbers.
    pub fn judge(&mut self) {
        let c = &self.counters;
        let mut f = Vec::new();
        if self.gateways_connected < self.gateways {
            f.push(format!(
                "{} of {} gateways never connected",
                self.gateways - self.gateways_connected,
                self.gateways
            ));
        }
        if c.alarms_unacked > 0 {
            f.push(format!(
                "{} sent alarms were never acked (waited the drain time)",
                c.alarms_unacked
            ));
        }
        if c.alarms_unsent > 0 {
            f.push(format!(
                "{} alarms fell due but were never published",
                c.alarms_unsent
            ));
        }
        if c.alarms_rejected > 0 {
            f.push(format!(
                "{} sent alarms were rejected by the engine",
                c.alarms_rejected
            ));
        }
        if let Some(log) = &self.log {
            if log.alarms_missing > 0 {
                f.push(format!(
                    "{} sent alarms are missing from fw.alarms (e.g. {:?})",
                    log.alarms_missing, log.missing_sample
                ));
            }
        }
        self.failures = f;
    }

    /// The human-readable table.
    pub fn table(&self) -> String {
        let c = &self.counters;
        let mut s = String::new();
        let mut row = |k: &str, v: String| {
            let _ = writeln!(s, "  {k:<28} {v}");
        };
        row(
            "gateways connected",
            format!(
                "{} / {} ({} points, {:.2} s)",
                self.gateways_connected, self.gateways, self.points, self.connect_secs
            ),
        );
        row("connection errors", self.connection_errors.to_string());
        row(
            "events sent",
            format!(
                "{} ({} heartbeats, {} alarms)",
                self.events_sent, c.heartbeats_sent, c.alarms_sent
            ),
        );
        row(
            "events due but unsent",
            format!("{} ({} alarms)", c.events_unsent, c.alarms_unsent),
        );
        row(
            "batches sent",
            format!("{} ({} publish stalls)", c.batches_sent, c.publish_stalls),
        );
        row(
            "acks received",
            format!(
                "{} ({} rejected, {} duplicate, {} batches unacked)",
                c.acks_received, c.acks_rejected, c.acks_unknown_batch, c.batches_unacked
            ),
        );
        row("alarms acked", c.alarms_acked.to_string());
        row("alarms unacked at end", c.alarms_unacked.to_string());
        row("alarms rejected", c.alarms_rejected.to_string());
        row("retransmissions", c.retransmissions.to_string());
        row("rejected events", c.rejected_events.to_string());
        let l = &self.alarm_latency;
        row(
            "alarm latency ms",
            format!(
                "p50 {:.2}  p90 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2}  (n={})",
                l.p50_ms, l.p90_ms, l.p99_ms, l.p999_ms, l.max_ms, l.count
            ),
        );
        let r = &self.ack_rtt;
        row(
            "batch ack rtt ms",
            format!(
                "p50 {:.2}  p99 {:.2}  max {:.2}  (n={})",
                r.p50_ms, r.p99_ms, r.max_ms, r.count
            ),
        );
        row(
            "send rate events/s",
            format!(
                "{:.1} achieved over {:.2} s (target {:.1} + {:.1} alarms)",
                self.achieved_rate, self.send_secs, self.target_rate, self.target_alarm_rate
            ),
        );
        if let Some(log) = &self.log {
            row(
                "fw.alarms",
                format!(
                    "{} observed, {} missing, {} duplicates ({} records read)",
                    log.alarms_observed, log.alarms_missing, log.duplicates, log.records_read
                ),
            );
        }
        if let Some(e) = &self.engine {
            row(
                "engine",
                format!(
                    "pid {}: RSS {:.1} MB (peak {:.1}), CPU {:.2} s ({:.2} cores)",
                    e.pid, e.rss_mb, e.peak_rss_mb, e.cpu_seconds, e.avg_cores
                ),
            );
        }
        if self.failures.is_empty() {
            row("result", "PASS".into());
        } else {
            row("result", "FAIL".into());
            for why in &self.failures {
                let _ = writeln!(s, "    - {why}");
            }
        }
        s
    }

    /// Writes the report as pretty JSON to `path`.
    pub fn write_json(&self, path: &Path) -> anyhow::Result<()> {
        let text = serde_json::to_string_pretty(self)?;
        std::fs::write(path, text + "\n")
            .map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_summary_in_ms() {
        let mut h = new_histogram();
        for us in 1..=1000u64 {
            h.record(us * 1000).unwrap();
        }
        let s = LatencySummary::of(&h);
        assert_eq!(s.count, 1000);
        assert!((s.p50_ms - 500.0).abs() < 1.0);
        assert!((s.max_ms - 1000.0).abs() < 1.0);
        assert_eq!(LatencySummary::of(&new_histogram()).max_ms, 0.0);
    }
}
