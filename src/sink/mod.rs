//! Sinks: where output records become durable, and where gateway acks are released.
//!
//! Shards and ingest send [`SinkMsg`]s over one bounded channel to the sink thread. The
//! sink appends every record, makes the group durable (fsync per policy), and only then
//! completes the [`BatchAck`]s that rode along; the last part of a batch to become durable
//! publishes the `UplinkAck` to the gateway.

pub mod acks;
pub mod embedded;
pub mod kafka;
pub mod spool;

use crate::telemetry::names;
use bytes::Bytes;
use firewatch_proto::{DeadLetterRecord, EventRef, RejectReason, RejectedEvent};
use prost::Message;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// The output topics (DESIGN.md, docs/topics.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Topic {
    /// `fw.alarms`, key house_id.
    Alarms,
    /// `fw.incidents`, key house_id.
    Incidents,
    /// `fw.dispatch`, key town_id.
    Dispatch,
    /// `fw.point-status`, key point_id.
    PointStatus,
    /// `fw.troubles`, key station_id.
    Troubles,
    /// `fw.insurance.timeline`, key policy_id.
    InsuranceTimeline,
    /// `fw.insurance.risk`, key policy_id.
    InsuranceRisk,
    /// `fw.coverage`, key village_id.
    Coverage,
    /// `fw.deadletter`, key gateway_id.
    DeadLetter,
}

impl Topic {
    /// Every topic.
    pub const ALL: [Topic; 9] = [
        Topic::Alarms,
        Topic::Incidents,
        Topic::Dispatch,
        Topic::PointStatus,
        Topic::Troubles,
        Topic::InsuranceTimeline,
        Topic::InsuranceRisk,
        Topic::Coverage,
        Topic::DeadLetter,
    ];

    /// The topic's name.
    pub fn name(self) -> &'static str {
        match self {
            Topic::Alarms => "fw.alarms",
            Topic::Incidents => "fw.incidents",
            Topic::Dispatch => "fw.dispatch",
            Topic::PointStatus => "fw.point-status",
            Topic::Troubles => "fw.troubles",
            Topic::InsuranceTimeline => "fw.insurance.timeline",
            Topic::InsuranceRisk => "fw.insurance.risk",
            Topic::Coverage => "fw.coverage",
            Topic::DeadLetter => "fw.deadletter",
        }
    }

    /// Looks a topic up by name.
    pub fn from_name(name: &str) -> Option<Topic> {
        Topic::ALL.into_iter().find(|t| t.name() == name)
    }
}

/// One record for a topic: key and protobuf-encoded value.
#[derive(Debug, Clone, PartialEq)]
pub struct OutRecord {
    /// Destination.
    pub topic: Topic,
    /// Partitioning key (decimal id, or gateway id).
    pub key: Vec<u8>,
    /// Protobuf value.
    pub value: Vec<u8>,
    /// Engine time the record was produced, Unix ms.
    pub ts_ms: i64,
}

impl OutRecord {
    /// Encodes `msg` as a record.
    pub fn new(topic: Topic, key: impl ToString, msg: &impl Message, ts_ms: i64) -> Self {
        OutRecord {
            topic,
            key: key.to_string().into_bytes(),
            value: msg.encode_to_vec(),
            ts_ms,
        }
    }
}

/// The pending acknowledgement of one uplink batch. Each shard part of the batch holds a
/// clone; the sink completes a part once that part's records are durable, and the part that
/// completes last publishes the ack.
#[derive(Debug)]
pub struct BatchAck {
    /// Gateway to ack.
    pub gateway_id: Arc<str>,
    /// Its batch sequence.
    pub batch_seq: u64,
    /// Alarm-class events of the batch (durable once the ack is sent).
    pub durable: Vec<EventRef>,
    /// Events ingest rejected.
    pub rejected: Vec<RejectedEvent>,
    /// When ingest received the batch.
    pub received: Instant,
    /// Shard parts still in flight.
    remaining: AtomicU32,
    /// Set when a whole-batch rejection should be acked as REJECTED.
    pub rejection: Option<(RejectReason, String)>,
    /// Whether the batch carried an alarm-class event (latency class).
    pub has_alarm: bool,
    /// Extra rejections found by shards.
    pub late_rejected: Mutex<Vec<RejectedEvent>>,
    /// The batch came as JSON: ack as JSON on `…/ack/json`.
    pub json: bool,
    /// Instead of publishing an `UplinkAck`, signal here once durable (a barrier behind a
    /// Kafka station command: its records are durable when this fires).
    pub notify: Option<crossbeam_channel::Sender<()>>,
}

impl BatchAck {
    /// A pending ack awaiting `parts` shard parts.
    pub fn new(
        gateway_id: Arc<str>,
        batch_seq: u64,
        durable: Vec<EventRef>,
        rejected: Vec<RejectedEvent>,
        received: Instant,
        parts: u32,
    ) -> Self {
        let has_alarm = !durable.is_empty();
        BatchAck {
            gateway_id,
            batch_seq,
            durable,
            rejected,
            received,
            remaining: AtomicU32::new(parts),
            rejection: None,
            has_alarm,
            late_rejected: Mutex::new(Vec::new()),
            json: false,
            notify: None,
        }
    }

    /// Marks one part durable; true when it was the last one.
    pub fn complete_part(&self) -> bool {
        self.remaining.fetch_sub(1, Ordering::AcqRel) == 1
    }
}

/// A message to the sink thread.
#[derive(Debug, Default)]
pub struct SinkMsg {
    /// Records to make durable.
    pub records: Vec<OutRecord>,
    /// Ack parts that complete when these records are durable.
    pub acks: Vec<Arc<BatchAck>>,
    /// Shard that produced it (for per-shard latency), if any.
    pub shard: Option<usize>,
}

/// A rejection to be recorded on `fw.deadletter`.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    /// Authenticated publisher, if known.
    pub gateway_id: String,
    /// The MQTT topic (as the client sent it).
    pub topic: String,
    /// Why.
    pub reason: RejectReason,
    /// Detail for people.
    pub detail: String,
    /// The payload (cut by the sender).
    pub raw: Bytes,
    /// For single-event rejects.
    pub point_id: u64,
    /// For single-event rejects.
    pub device_seq: u32,
}

impl DeadLetter {
    /// The `fw.deadletter` record, keeping at most `max_raw` payload bytes.
    pub fn to_record(&self, now_ms: i64, max_raw: usize) -> OutRecord {
        let raw = &self.raw[..self.raw.len().min(max_raw)];
        let rec = DeadLetterRecord {
            gateway_id: self.gateway_id.clone(),
            topic: self.topic.clone(),
            reason: self.reason as i32,
            detail: self.detail.clone(),
            raw: raw.to_vec(),
            raw_len: u32::try_from(self.raw.len()).unwrap_or(u32::MAX),
            received_at_ms: now_ms,
            point_id: self.point_id,
            device_seq: self.device_seq,
        };
        OutRecord::new(Topic::DeadLetter, &self.gateway_id, &rec, now_ms)
    }
}

/// A cloneable, never-blocking sender of dead letters, usable from network threads.
/// Every rejection is counted by reason; records beyond the per-identity rate are counted as
/// suppressed instead of written, so one misbehaving gateway cannot flood the log.
#[derive(Clone)]
pub struct DeadLetterTx {
    tx: crossbeam_channel::Sender<SinkMsg>,
    limiter: Arc<Mutex<RateLimiter>>,
    max_raw: usize,
}

impl DeadLetterTx {
    /// A sender into the sink channel.
    pub fn new(tx: crossbeam_channel::Sender<SinkMsg>, per_sec: u32, max_raw: usize) -> Self {
        DeadLetterTx {
            tx,
            limiter: Arc::new(Mutex::new(RateLimiter::new(per_sec))),
            max_raw,
        }
    }

    /// Counts and (rate permitting) records `dl`. Never blocks.
    pub fn send(&self, dl: DeadLetter) {
        let reason = dl.reason.wire_name();
        metrics::counter!(names::DEADLETTER_REJECTS_TOTAL, "reason" => reason).increment(1);
        let now_ms = crate::clock::unix_ms();
        let allowed = self
            .limiter
            .lock()
            .map(|mut l| l.allow(&dl.gateway_id, now_ms))
            .unwrap_or(true);
        if !allowed {
            metrics::counter!(names::DEADLETTER_SUPPRESSED_TOTAL).increment(1);
            return;
        }
        let msg = SinkMsg {
            records: vec![dl.to_record(now_ms, self.max_raw)],
            ..Default::default()
        };
        if self.tx.try_send(msg).is_err() {
            metrics::counter!(names::DEADLETTER_SUPPRESSED_TOTAL).increment(1);
        }
    }

    /// Whether `who` may write another dead-letter record now (consumes one token).
    pub fn allow(&self, who: &str) -> bool {
        let now_ms = crate::clock::unix_ms();
        self.limiter
            .lock()
            .map(|mut l| l.allow(who, now_ms))
            .unwrap_or(true)
    }

    /// Bytes of raw payload kept.
    pub fn max_raw(&self) -> usize {
        self.max_raw
    }
}

/// Fixed-window per-identity limiter (one-second windows).
pub struct RateLimiter {
    per_sec: u32,
    window_start_ms: i64,
    counts: std::collections::HashMap<String, u32>,
}

impl RateLimiter {
    /// `per_sec` records per identity per second.
    pub fn new(per_sec: u32) -> Self {
        RateLimiter {
            per_sec,
            window_start_ms: 0,
            counts: Default::default(),
        }
    }

    /// Consumes one token for `who` at `now_ms`.
    pub fn allow(&mut self, who: &str, now_ms: i64) -> bool {
        if now_ms - self.window_start_ms >= 1000 {
            self.window_start_ms = now_ms;
            self.counts.clear();
        }
        let n = match self.counts.get_mut(who) {
            Some(n) => n,
            None => self.counts.entry(who.to_string()).or_insert(0),
        };
        *n += 1;
        *n <= self.per_sec
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names_round_trip() {
        for t in Topic::ALL {
            assert_eq!(Topic::from_name(t.name()), Some(t));
        }
        assert_eq!(Topic::from_name("fw.nope"), None);
    }

    #[test]
    fn batch_ack_completes_on_last_part_only() {
        let a = BatchAck::new("g".into(), 1, vec![], vec![], Instant::now(), 3);
        assert!(!a.complete_part());
        assert!(!a.complete_part());
        assert!(a.complete_part());
    }

    #[test]
    fn rate_limiter_windows() {
        let mut l = RateLimiter::new(2);
        assert!(l.allow("a", 0));
        assert!(l.allow("a", 10));
        assert!(!l.allow("a", 20));
        assert!(l.allow("b", 20));
        assert!(l.allow("a", 1000));
    }

    #[test]
    fn deadletter_record_cuts_raw() {
        let dl = DeadLetter {
            gateway_id: "gw".into(),
            topic: "t".into(),
            reason: RejectReason::DecodeError,
            detail: "x".into(),
            raw: Bytes::from(vec![7u8; 100]),
            point_id: 0,
            device_seq: 0,
        };
        let r = dl.to_record(5, 10);
        let d = DeadLetterRecord::decode(r.value.as_slice()).unwrap();
        assert_eq!(d.raw.len(), 10);
        assert_eq!(d.raw_len, 100);
        assert_eq!(r.key, b"gw");
    }
}
