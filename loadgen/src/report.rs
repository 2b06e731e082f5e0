//! The run report: counters summed over gateways, latency summaries, the log check and the
//! engine's resource use; printed as a table and optionally written as JSON (and, by
//! `output`, as Markdown and SVG).

use crate::cli::{AckMode, Scenario};
use crate::scenario::ScenarioInfo;
use hdrhistogram::Histogram;
use serde::Serialize;
use std::collections::BTreeMap;
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
    /// Non-alarm scripted events published (nuisance clears).
    pub clears_sent: u64,
    /// Events of batches acked ACCEPTED.
    pub events_acked: u64,
    /// Batches in flight when their gateway dropped its connection (outage); never acked.
    pub batches_lost: u64,
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
        self.clears_sent += o.clears_sent;
        self.events_acked += o.events_acked;
        self.batches_lost += o.batches_lost;
    }
}

/// What the bad gateways sent and what the engine answered (bad scenario).
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct BadCounters {
    /// Undecodable protobuf payloads published.
    pub malformed_sent: u64,
    /// Payloads over 64 KiB published.
    pub oversize_sent: u64,
    /// Batches of foreign-point alarms published.
    pub foreign_batches_sent: u64,
    /// Foreign-point alarms in them.
    pub foreign_events_sent: u64,
    /// Batches naming another gateway published.
    pub mismatch_sent: u64,
    /// Publishes on another gateway's topic (no ack is expected).
    pub wrong_topic_sent: u64,
    /// REJECTED acks with reason decode_error.
    pub malformed_rejected: u64,
    /// REJECTED acks with reason oversize.
    pub oversize_rejected: u64,
    /// Foreign-point events listed as rejected in acks.
    pub foreign_events_rejected: u64,
    /// REJECTED acks with reason gateway_mismatch.
    pub mismatch_rejected: u64,
    /// Foreign-point alarms the engine named durable: a failure.
    pub foreign_alarms_accepted: u64,
    /// Batches naming another gateway acked ACCEPTED: a failure.
    pub mismatch_accepted: u64,
}

impl BadCounters {
    /// Adds `o` field by field.
    pub fn add(&mut self, o: &BadCounters) {
        self.malformed_sent += o.malformed_sent;
        self.oversize_sent += o.oversize_sent;
        self.foreign_batches_sent += o.foreign_batches_sent;
        self.foreign_events_sent += o.foreign_events_sent;
        self.mismatch_sent += o.mismatch_sent;
        self.wrong_topic_sent += o.wrong_topic_sent;
        self.malformed_rejected += o.malformed_rejected;
        self.oversize_rejected += o.oversize_rejected;
        self.foreign_events_rejected += o.foreign_events_rejected;
        self.mismatch_rejected += o.mismatch_rejected;
        self.foreign_alarms_accepted += o.foreign_alarms_accepted;
        self.mismatch_accepted += o.mismatch_accepted;
    }

    /// Bad publishes of any kind.
    pub fn sent(&self) -> u64 {
        self.malformed_sent
            + self.oversize_sent
            + self.foreign_batches_sent
            + self.mismatch_sent
            + self.wrong_topic_sent
    }
}

/// The bad scenario's figures.
#[derive(Debug, Clone, Serialize)]
pub struct BadReport {
    /// Gateways that sent bad input.
    pub gateways: usize,
    /// Sent and rejected, summed.
    #[serde(flatten)]
    pub counters: BadCounters,
    /// fw.deadletter records of this run's gateways since its start, by reason
    /// (with --log-dir).
    pub deadletter_by_reason: Option<BTreeMap<String, u64>>,
}

/// The outage scenario's figures.
#[derive(Debug, Clone, Serialize)]
pub struct OutageReport {
    /// Gateways that went down.
    pub gateways_down: usize,
    /// Of those, gateways subscribed again by the end.
    pub gateways_reconnected: usize,
    /// Connection attempts after the drop: failed ones during the outage (back-off) plus
    /// real connects and their retries after it.
    pub reconnect_attempts: u64,
    /// Seconds from the end of the outage until the last gateway was subscribed again.
    pub secs_to_all_reconnected: Option<f64>,
    /// Median of the same per gateway.
    pub reconnect_p50_secs: Option<f64>,
    /// Batches in flight at the drop (never acked).
    pub batches_lost: u64,
}

/// The nuisance scenario's figures.
#[derive(Debug, Clone, Serialize)]
pub struct NuisanceReport {
    /// Kitchen/studio smoke alarms sent.
    pub alarms_sent: u64,
    /// Their clears sent.
    pub clears_sent: u64,
    /// Of the alarms, acked.
    pub alarms_acked: u64,
    /// fw.incidents records with transition "nuisance" for those points since the start
    /// (with --log-dir).
    pub incidents_nuisance: Option<u64>,
}

/// One second of the run (from the schedule start).
#[derive(Debug, Clone, Serialize)]
pub struct SecondRow {
    /// Second.
    pub t: u32,
    /// Events first published.
    pub events_sent: u64,
    /// Alarms first published.
    pub alarms_sent: u64,
    /// Events of batches acked ACCEPTED.
    pub events_acked: u64,
    /// Alarms first acked durable.
    pub alarms_acked: u64,
    /// This run's alarms appended to fw.alarms (record time; with --log-dir).
    pub alarms_observed: Option<u64>,
    /// Alarm retransmissions.
    pub retransmissions: u64,
    /// Bad publishes.
    pub bad_sent: u64,
    /// Rejections of bad input observed.
    pub bad_rejected: u64,
    /// Alarms intended in this second that were acked (all sources, warmup included).
    pub alarm_latency_n: u64,
    /// Their median latency, ms.
    pub alarm_latency_p50_ms: f64,
    /// Their 99th percentile, ms.
    pub alarm_latency_p99_ms: f64,
    /// Their largest latency, ms.
    pub alarm_latency_max_ms: f64,
}

/// The engine's own figures from /metrics over the run.
#[derive(Debug, Clone, Serialize)]
pub struct EngineMetrics {
    /// Where they came from.
    pub url: String,
    /// firewatch_process_resident_memory_bytes at the end, MiB.
    pub rss_mb: f64,
    /// Largest value scraped, MiB.
    pub peak_rss_mb: f64,
    /// firewatch_process_cpu_seconds_total over the run.
    pub cpu_seconds: f64,
    /// `cpu_seconds` over the wall time: average cores busy.
    pub avg_cores: f64,
    /// firewatch_pipeline_shed_events_total over the run.
    pub shed_events: u64,
    /// firewatch_ingest_lost_messages_total over the run.
    pub lost_messages: u64,
    /// firewatch_deadletter_rejects_total over the run.
    pub deadletter_rejects: u64,
    /// The same by reason.
    pub deadletter_by_reason: BTreeMap<String, u64>,
    /// firewatch_deadletter_suppressed_total over the run.
    pub deadletter_suppressed: u64,
    /// firewatch_ingest_events_total over the run.
    pub ingest_events: u64,
    /// firewatch_sink_acks_total over the run (compare with acks_received).
    pub acks_published: u64,
    /// One scrape per second.
    pub samples: Vec<MetricsSample>,
}

/// One scrape.
#[derive(Debug, Clone, Serialize)]
pub struct MetricsSample {
    /// Seconds from the schedule start (negative during the connect phase).
    pub t: f64,
    /// Resident memory, MiB.
    pub rss_mb: f64,
    /// CPU seconds since the engine started.
    pub cpu_seconds: f64,
    /// Shed heartbeats since the engine started.
    pub shed_events: f64,
    /// Lost broker messages since the engine started.
    pub lost_messages: f64,
    /// Dead-letter rejects since the engine started.
    pub deadletter_rejects: f64,
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

/// What the output (`fw.alarms` of the embedded log, an MQTT subscriber or a Kafka topic)
/// held for the sent alarms.
#[derive(Debug, Clone, Serialize)]
pub struct LogCheck {
    /// What was observed, e.g. "fw.alarms in data/log".
    pub source: String,
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
    /// Intended send time to first appearance on the output (the record time in the log,
    /// which is the shard's processing time, before append and fsync; arrival at the
    /// subscriber or consumer), millisecond resolution, after warmup.
    pub latency: Option<LatencySummary>,
    /// This run's alarms per second of record time (from the schedule start).
    #[serde(skip)]
    pub observed_per_sec: Vec<u64>,
}

impl LogCheck {
    /// The summary of one observer's counts: `missing` in any order, `latency` in µs.
    pub fn summarise(
        source: String,
        records_read: u64,
        alarms_observed: u64,
        duplicates: u64,
        mut missing: Vec<(u64, u32)>,
        latency: &Histogram<u64>,
        observed_per_sec: Vec<u64>,
    ) -> LogCheck {
        missing.sort_unstable();
        LogCheck {
            source,
            records_read,
            alarms_observed,
            alarms_missing: missing.len() as u64,
            duplicates,
            missing_sample: missing.into_iter().take(10).collect(),
            latency: (!latency.is_empty()).then(|| LatencySummary::of(latency)),
            observed_per_sec,
        }
    }
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
    /// The system under test (`--label`).
    pub label: String,
    /// What acknowledged a batch (`--ack`).
    pub ack: AckMode,
    /// The scenario run.
    pub scenario: Scenario,
    /// Seconds of sending asked for.
    pub duration_secs: f64,
    /// Seconds at the start left out of the latency histograms.
    pub warmup_secs: f64,
    /// Heartbeats at each point's device-class interval instead of --rate.
    pub heartbeat_from_class: bool,
    /// What the scenario planned.
    pub plan: ScenarioInfo,
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
    /// Seconds the connect phase took (until every ack subscription was granted).
    pub connect_secs: f64,
    /// Target heartbeat rate, events/s (the sum of 1/interval with --heartbeat-from-class).
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
    /// Alarm latency: intended send time to first ack naming the alarm (after warmup).
    pub alarm_latency: LatencySummary,
    /// The same per source (background, fire, storm, nuisance, outage), where any.
    pub alarm_latency_by_source: BTreeMap<String, LatencySummary>,
    /// Heartbeat latency: intended send time to the ack of the batch carrying it.
    pub heartbeat_latency: LatencySummary,
    /// Batch publish to ack receipt.
    pub ack_rtt: LatencySummary,
    /// The engine's ack stamp (`acked_at_ms`, taken when the ack is handed to the broker)
    /// to its receipt at the gateway: the broker's outbound share of the round trip
    /// (wall clock, ms resolution; loadgen and engine on one machine).
    pub ack_transit: LatencySummary,
    /// Per-second counters and alarm latency.
    pub timeline: Vec<SecondRow>,
    /// With --log-dir, --observe-mqtt or --kafka-brokers.
    pub log: Option<LogCheck>,
    /// With --engine-pid.
    pub engine: Option<EngineUsage>,
    /// The load generator's own use (from /proc/self): a generator near its CPU limit
    /// measures itself, not the engine.
    pub loadgen: Option<EngineUsage>,
    /// With --metrics-url.
    pub engine_metrics: Option<EngineMetrics>,
    /// Outage scenario.
    pub outage: Option<OutageReport>,
    /// Nuisance scenario.
    pub nuisance: Option<NuisanceReport>,
    /// Bad scenario.
    pub bad: Option<BadReport>,
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
                    "{} sent alarms are missing from the output, {} (e.g. {:?})",
                    log.alarms_missing, log.source, log.missing_sample
                ));
            }
        }
        if let Some(o) = &self.outage {
            if o.gateways_reconnected < o.gateways_down {
                f.push(format!(
                    "{} of {} gateways never reconnected after the outage",
                    o.gateways_down - o.gateways_reconnected,
                    o.gateways_down
                ));
            }
        }
        if let Some(b) = &self.bad {
            if b.counters.foreign_alarms_accepted > 0 {
                f.push(format!(
                    "the engine accepted {} alarms for points of another gateway",
                    b.counters.foreign_alarms_accepted
                ));
            }
            if b.counters.mismatch_accepted > 0 {
                f.push(format!(
                    "the engine accepted {} batches naming another gateway",
                    b.counters.mismatch_accepted
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
            "system",
            format!(
                "{} (ack: {})",
                self.label,
                match self.ack {
                    AckMode::App => "app-level UplinkAck",
                    AckMode::Puback => "MQTT PUBACK",
                }
            ),
        );
        row(
            "scenario",
            format!(
                "{} ({} s{}{})",
                self.scenario.name(),
                self.duration_secs,
                if self.warmup_secs > 0.0 {
                    format!(", {} s warmup", self.warmup_secs)
                } else {
                    String::new()
                },
                if self.heartbeat_from_class {
                    ", heartbeats per device class"
                } else {
                    ""
                }
            ),
        );
        row(
            "gateways connected",
            format!(
                "{} / {} ({} points, {:.2} s)",
                self.gateways_connected, self.gateways, self.points, self.connect_secs
            ),
        );
        row(
            "connection errors",
            format!(
                "{} ({} undecodable acks)",
                self.connection_errors, self.bad_ack_payloads
            ),
        );
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
        for (src, l) in &self.alarm_latency_by_source {
            row(
                &format!("  {src}"),
                format!(
                    "p50 {:.2}  p99 {:.2}  max {:.2}  (n={})",
                    l.p50_ms, l.p99_ms, l.max_ms, l.count
                ),
            );
        }
        let h = &self.heartbeat_latency;
        row(
            "heartbeat latency ms",
            format!(
                "p50 {:.2}  p90 {:.2}  p99 {:.2}  max {:.2}  (n={})",
                h.p50_ms, h.p90_ms, h.p99_ms, h.max_ms, h.count
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
        let t = &self.ack_transit;
        if t.count > 0 {
            row(
                "ack transit ms",
                format!(
                    "p50 {:.2}  p99 {:.2}  max {:.2}  (engine ack stamp to receipt, n={})",
                    t.p50_ms, t.p99_ms, t.max_ms, t.count
                ),
            );
        }
        row(
            "send rate events/s",
            format!(
                "{:.1} achieved over {:.2} s (target {:.1} + {:.1} alarms)",
                self.achieved_rate, self.send_secs, self.target_rate, self.target_alarm_rate
            ),
        );
        if let Some(log) = &self.log {
            row(
                "output",
                format!(
                    "{} observed, {} missing, {} duplicates ({} records read; {})",
                    log.alarms_observed,
                    log.alarms_missing,
                    log.duplicates,
                    log.records_read,
                    log.source
                ),
            );
            if let Some(l) = &log.latency {
                row(
                    "alarm to output ms",
                    format!(
                        "p50 {:.2}  p90 {:.2}  p99 {:.2}  max {:.2}  (n={})",
                        l.p50_ms, l.p90_ms, l.p99_ms, l.max_ms, l.count
                    ),
                );
            }
        }
        let p = &self.plan;
        if self.scenario == Scenario::Storm {
            row(
                "storm",
                format!(
                    "fire in house {} (village {}): {} alarms in {} houses; burst {} alarms",
                    p.fire_house.unwrap_or(0),
                    p.fire_village.unwrap_or(0),
                    p.fire_alarms_planned,
                    p.fire_houses,
                    p.storm_alarms_planned
                ),
            );
        }
        if let Some(o) = &self.outage {
            row(
                "outage",
                format!(
                    "{} gateways down, {} reconnected, {} attempts, all in {} (p50 {}), {} batches lost",
                    o.gateways_down,
                    o.gateways_reconnected,
                    o.reconnect_attempts,
                    secs(o.secs_to_all_reconnected),
                    secs(o.reconnect_p50_secs),
                    o.batches_lost
                ),
            );
        }
        if let Some(n) = &self.nuisance {
            row(
                "nuisance",
                format!(
                    "{} alarms ({} acked), {} clears; fw.incidents nuisance: {}",
                    n.alarms_sent,
                    n.alarms_acked,
                    n.clears_sent,
                    n.incidents_nuisance
                        .map_or("-".to_string(), |v| v.to_string())
                ),
            );
        }
        if let Some(b) = &self.bad {
            let k = &b.counters;
            row(
                "bad input sent",
                format!(
                    "{} gateways: {} malformed, {} oversize, {} foreign batches ({} alarms), {} mismatched, {} wrong topic",
                    b.gateways,
                    k.malformed_sent,
                    k.oversize_sent,
                    k.foreign_batches_sent,
                    k.foreign_events_sent,
                    k.mismatch_sent,
                    k.wrong_topic_sent
                ),
            );
            row(
                "bad input rejected",
                format!(
                    "{} decode_error, {} oversize, {} foreign_point, {} gateway_mismatch; {} accepted",
                    k.malformed_rejected,
                    k.oversize_rejected,
                    k.foreign_events_rejected,
                    k.mismatch_rejected,
                    k.foreign_alarms_accepted + k.mismatch_accepted
                ),
            );
            if let Some(dl) = &b.deadletter_by_reason {
                let list: Vec<String> = dl.iter().map(|(r, n)| format!("{r} {n}")).collect();
                row("fw.deadletter", list.join(", "));
            }
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
        if let Some(e) = &self.loadgen {
            row(
                "loadgen itself",
                format!(
                    "RSS {:.1} MB, CPU {:.2} s ({:.2} cores)",
                    e.rss_mb, e.cpu_seconds, e.avg_cores
                ),
            );
        }
        if let Some(m) = &self.engine_metrics {
            row(
                "engine /metrics",
                format!(
                    "RSS {:.1} MB (peak {:.1}), CPU {:.2} s ({:.2} cores), {} ingest events, {} acks published",
                    m.rss_mb, m.peak_rss_mb, m.cpu_seconds, m.avg_cores, m.ingest_events, m.acks_published
                ),
            );
            row(
                "engine shed/lost/rejects",
                format!(
                    "{} shed heartbeats, {} lost messages, {} dead-letter rejects ({} suppressed)",
                    m.shed_events, m.lost_messages, m.deadletter_rejects, m.deadletter_suppressed
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

/// `12.34 s` or `-`.
pub fn secs(v: Option<f64>) -> String {
    v.map_or("-".to_string(), |s| format!("{s:.2} s"))
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
