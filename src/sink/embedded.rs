//! The embedded-log sink thread: group commit of every record that arrives, fsync per
//! policy, then the acks of the batches those records completed.

use super::{BatchAck, SinkMsg, Topic};
use crate::config::FsyncPolicy;
use crate::eventlog::{EventLog, LogError};
use crate::telemetry::{latency::LatencyHistogram, names, Health};
use firewatch_proto::{AckStatus, UplinkAck};
use prost::Message;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Publishes an `UplinkAck` to a gateway (the broker's local link in the engine; a
/// recorder in tests).
pub trait AckPublisher: Send {
    /// Publishes `payload` on `topic`.
    fn publish(&mut self, topic: String, payload: Vec<u8>) -> Result<(), String>;
}

/// Errors that stop the sink.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// The log could not be opened.
    #[error("embedded log: {0}")]
    Log(#[from] LogError),
}

/// The topic a gateway's acks go to.
pub fn ack_topic(gateway_id: &str, json: bool) -> String {
    if json {
        format!("fw/v1/gw/{gateway_id}/ack/json")
    } else {
        format!("fw/v1/gw/{gateway_id}/ack")
    }
}

/// Builds the `UplinkAck` for a completed batch.
pub fn build_ack(a: &BatchAck, now_ms: i64) -> UplinkAck {
    let mut rejected = a.rejected.clone();
    if let Ok(late) = a.late_rejected.lock() {
        rejected.extend(late.iter().cloned());
    }
    let (status, reason, detail) = match &a.rejection {
        Some((r, d)) => (AckStatus::Rejected, *r as i32, d.clone()),
        None => (AckStatus::Accepted, 0, String::new()),
    };
    UplinkAck {
        gateway_id: a.gateway_id.to_string(),
        batch_seq: a.batch_seq,
        status: status as i32,
        reason,
        detail,
        durable: if a.rejection.is_some() {
            Vec::new()
        } else {
            a.durable.clone()
        },
        rejected,
        acked_at_ms: now_ms,
    }
}

/// JSON form of an ack, for gateways that sent JSON.
pub fn ack_json(ack: &UplinkAck) -> Vec<u8> {
    serde_json::to_vec(ack).unwrap_or_default()
}

/// The sink thread's state.
pub struct EmbeddedSink {
    log: EventLog,
    fsync: FsyncPolicy,
    max_batch_records: usize,
    rx: crossbeam_channel::Receiver<SinkMsg>,
    acks: Box<dyn AckPublisher>,
    health: Health,
    /// Per shard (last index: ingest-originated), [alarm, other].
    hist: Vec<[LatencyHistogram; 2]>,
}

impl EmbeddedSink {
    /// A sink over an opened log.
    pub fn new(
        log: EventLog,
        fsync: FsyncPolicy,
        max_batch_records: usize,
        rx: crossbeam_channel::Receiver<SinkMsg>,
        acks: Box<dyn AckPublisher>,
        health: Health,
        shards: usize,
    ) -> Self {
        let hist = (0..=shards).map(|_| Default::default()).collect();
        EmbeddedSink {
            log,
            fsync,
            max_batch_records,
            rx,
            acks,
            health,
            hist,
        }
    }

    /// Runs until every sender is gone, then flushes and syncs the log.
    pub fn run(mut self) -> EventLog {
        let mut last_export = Instant::now();
        loop {
            let first = match self.rx.recv_timeout(Duration::from_millis(500)) {
                Ok(m) => m,
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => {
                    self.export();
                    last_export = Instant::now();
                    continue;
                }
                Err(crossbeam_channel::RecvTimeoutError::Disconnected) => break,
            };
            let mut n = first.records.len();
            let mut batch = vec![first];
            while n < self.max_batch_records {
                match self.rx.try_recv() {
                    Ok(m) => {
                        n += m.records.len();
                        batch.push(m);
                    }
                    Err(_) => break,
                }
            }
            metrics::gauge!(names::SINK_QUEUE_DEPTH).set(self.rx.len() as f64);
            self.write_durably(&batch);
            self.release_acks(batch);
            if last_export.elapsed() >= Duration::from_secs(1) {
                self.export();
                last_export = Instant::now();
            }
        }
        self.export();
        if let Err(e) = self.log.flush(true) {
            tracing::error!(error = %e, "final log flush failed");
        }
        self.log
    }

    /// Appends and flushes; on I/O failure keeps retrying (acks stay held, back-pressure
    /// builds upstream) and reports not-ready until the disk recovers.
    fn write_durably(&mut self, batch: &[SinkMsg]) {
        let mut per_topic = [0u64; Topic::ALL.len()];
        let before = self.log.bytes_appended();
        for m in batch {
            for r in &m.records {
                let mut backoff = Duration::from_millis(50);
                while let Err(e) = self.log.append(r.topic.name(), r.ts_ms, &r.key, &r.value) {
                    self.io_failure(&e, &mut backoff);
                }
                per_topic[r.topic as usize] += 1;
            }
        }
        let sync = self.fsync == FsyncPolicy::Batch;
        let mut backoff = Duration::from_millis(50);
        while let Err(e) = self.log.flush(sync) {
            self.io_failure(&e, &mut backoff);
        }
        if !self.health.is_ready() {
            tracing::info!("embedded log writable again");
            self.health.set_ready(true);
        }
        if sync {
            metrics::counter!(names::SINK_FSYNCS_TOTAL).increment(1);
        }
        metrics::counter!(names::SINK_WRITTEN_BYTES_TOTAL)
            .increment(self.log.bytes_appended() - before);
        for t in Topic::ALL {
            let c = per_topic[t as usize];
            if c > 0 {
                metrics::counter!(names::SINK_RECORDS_TOTAL, "topic" => t.name()).increment(c);
            }
        }
    }

    fn io_failure(&mut self, e: &LogError, backoff: &mut Duration) {
        metrics::counter!(names::SINK_ERRORS_TOTAL).increment(1);
        tracing::error!(error = %e, "embedded log write failed; holding acks and retrying");
        self.health.set_ready(false);
        std::thread::sleep(*backoff);
        *backoff = (*backoff * 2).min(Duration::from_secs(5));
    }

    fn release_acks(&mut self, batch: Vec<SinkMsg>) {
        let now = Instant::now();
        let now_ms = crate::clock::unix_ms();
        let last = self.hist.len() - 1;
        for m in batch {
            let h = m.shard.map_or(last, |s| s.min(last));
            for a in m.acks {
                if !a.complete_part() {
                    continue;
                }
                self.hist[h][usize::from(!a.has_alarm)].record(now - a.received);
                self.publish_ack(&a, now_ms);
            }
        }
    }

    fn publish_ack(&mut self, a: &Arc<BatchAck>, now_ms: i64) {
        let ack = build_ack(a, now_ms);
        let status = if a.rejection.is_some() {
            "rejected"
        } else {
            "accepted"
        };
        let payload = if a.json {
            ack_json(&ack)
        } else {
            ack.encode_to_vec()
        };
        match self.acks.publish(ack_topic(&a.gateway_id, a.json), payload) {
            Ok(()) => metrics::counter!(names::SINK_ACKS_TOTAL, "status" => status).increment(1),
            Err(e) => {
                metrics::counter!(names::SINK_ERRORS_TOTAL).increment(1);
                tracing::warn!(error = %e, "ack publish failed; the gateway will retransmit");
            }
        }
    }

    fn export(&mut self) {
        let last = self.hist.len() - 1;
        for (i, [alarm, other]) in self.hist.iter_mut().enumerate() {
            let shard = if i == last {
                "ingest".to_string()
            } else {
                i.to_string()
            };
            alarm.export_and_reset(
                names::SINK_INGEST_TO_DURABLE_SECONDS,
                &[("shard", shard.clone()), ("class", "alarm".into())],
            );
            other.export_and_reset(
                names::SINK_INGEST_TO_DURABLE_SECONDS,
                &[("shard", shard), ("class", "other".into())],
            );
        }
    }
}
