//! Releasing gateway acks once a batch's records are durable (shared by every sink), and
//! the ingest → durable+acked latency histograms.

use super::{BatchAck, SinkMsg};
use crate::telemetry::{latency::LatencyHistogram, names};
use firewatch_proto::{AckStatus, UplinkAck};
use prost::Message;
use std::sync::Arc;
use std::time::Instant;

/// Publishes an `UplinkAck` to a gateway (the broker's local link in the engine; a
/// recorder in tests).
pub trait AckPublisher: Send {
    /// Publishes `payload` on `topic`.
    fn publish(&mut self, topic: String, payload: Vec<u8>) -> Result<(), String>;
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

/// Completes ack parts and publishes the acks of finished batches.
pub struct AckReleaser {
    acks: Box<dyn AckPublisher>,
    /// Per shard (last index: ingest-originated), [alarm, other].
    hist: Vec<[LatencyHistogram; 2]>,
}

impl AckReleaser {
    /// A releaser for `shards` shards.
    pub fn new(acks: Box<dyn AckPublisher>, shards: usize) -> Self {
        AckReleaser {
            acks,
            hist: (0..=shards).map(|_| Default::default()).collect(),
        }
    }

    /// The records of these messages are durable: complete their ack parts.
    pub fn release(&mut self, batch: impl IntoIterator<Item = SinkMsg>) {
        for m in batch {
            self.release_one(m.shard, m.acks);
        }
    }

    /// Completes the parts of one message.
    pub fn release_one(&mut self, shard: Option<usize>, acks: Vec<Arc<BatchAck>>) {
        let now = Instant::now();
        let now_ms = crate::clock::unix_ms();
        let last = self.hist.len() - 1;
        let h = shard.map_or(last, |s| s.min(last));
        for a in acks {
            if !a.complete_part() {
                continue;
            }
            if let Some(n) = &a.notify {
                let _ = n.send(());
                continue;
            }
            self.hist[h][usize::from(!a.has_alarm)].record(now - a.received);
            self.publish_ack(&a, now_ms);
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

    /// Exports and resets the latency histograms as quantile gauges.
    pub fn export(&mut self) {
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
