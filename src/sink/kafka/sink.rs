//! The Kafka sink thread: groups and delivery reports, the outage spool and its replay.
//!
//! **Direct:** each [`SinkMsg`] is a group; its records are produced and its acks released
//! once every record has a successful delivery report.
//!
//! **Spooling:** when the oldest unfinished group has waited `kafka.spool.after`, or
//! librdkafka's queue is full, the sink purges librdkafka's *queued* (never sent) records
//! into the spool, and from then on appends every new group's records to the spool and
//! syncs it before releasing the group's acks. Records already in flight stay with
//! librdkafka (no duplicates). When the spool is full the sink stops reading its channel
//! (back-pressure: shards, ingest, then gateways wait, and get no acks).
//!
//! **Replaying:** once every directly produced record is reported (Kafka answers again),
//! the spool is replayed in order, at most `replay_window` records in flight; new groups
//! keep going to the spool behind them, so per-key order holds. When the replay has caught
//! up, the coalesced point-status records are sent and the sink goes direct again.
//!
//! A final delivery error (too large, authorization, unknown topic) keeps the record in the
//! local refused store (`data_dir/kafka-refused`, same topic names, `firewatch tail
//! --dir`), counts it, and reports it on `fw.deadletter` (reason `kafka_refused`).
//! `/readyz` is not ready while spooling or replaying.

use super::wal::{wal_index, WalCursor};
use super::{headers, instance_name, producer_config, KafkaSinkError};
use crate::config::KafkaConfig;
use crate::eventlog::EventLog;
use crate::sink::acks::{AckPublisher, AckReleaser};
use crate::sink::spool::{Spool, SpoolError, SpoolLimits};
use crate::sink::{BatchAck, DeadLetter, OutRecord, SinkMsg, Topic};
use crate::telemetry::{names, Health};
use firewatch_proto::RejectReason;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{
    BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext, PurgeConfig,
};
use rdkafka::ClientContext;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

const _: () = assert!(usize::BITS == 64, "delivery tags need 64-bit usize");
const TAG_SHIFT: u32 = 62;
const TAG_MASK: usize = (1 << TAG_SHIFT) - 1;
/// A record of a group (low bits: group id).
const TAG_GROUP: usize = 0;
/// A replayed spool record (low bits: spool offset).
const TAG_REPLAY: usize = 1;
/// A dead letter about a refused record (no group).
const TAG_NOTICE: usize = 2;

fn tag(kind: usize, n: u64) -> usize {
    (kind << TAG_SHIFT) | (n as usize & TAG_MASK)
}

/// Bytes of a refused record's value kept in its dead letter.
const REFUSED_RAW_BYTES: usize = 1024;
/// How long shutdown waits for Kafka before purging into the spool, and for the replay.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// A failed delivery: the error and the record.
struct Failed {
    error: KafkaError,
    topic: String,
    record: OutRecord,
}

/// A delivery report: the tag, and on failure the record.
type Report = (usize, Option<Box<Failed>>);

/// Forwards delivery reports from `poll` to the sink loop.
pub struct DeliveryContext {
    tx: crossbeam_channel::Sender<Report>,
}

impl ClientContext for DeliveryContext {}

impl ProducerContext for DeliveryContext {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, tag: usize) {
        let report = match result {
            Ok(_) => (tag, None),
            Err((e, m)) => {
                let failed = Failed {
                    error: e.clone(),
                    topic: m.topic().to_string(),
                    record: OutRecord {
                        topic: Topic::DeadLetter,
                        key: m.key().unwrap_or_default().to_vec(),
                        value: m.payload().unwrap_or_default().to_vec(),
                        ts_ms: m.timestamp().to_millis().unwrap_or(0),
                    },
                };
                (tag, Some(Box::new(failed)))
            }
        };
        let _ = self.tx.send(report);
    }
}

struct Group {
    remaining: usize,
    acks: Vec<Arc<BatchAck>>,
    shard: Option<usize>,
    started: Instant,
    /// Last local-log offset per WAL topic among its records.
    wal_hi: [Option<u64>; 5],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Direct,
    Spool,
}

/// The sink's local stores: the state log (WAL topics) and its directory, the refused-record
/// store, and the outage spool's directory.
pub struct LocalStores {
    /// The local embedded log, opened (restart state).
    pub state_log: EventLog,
    /// Its directory (the WAL cursor lives there).
    pub log_dir: std::path::PathBuf,
    /// Records Kafka refused for good.
    pub refused: EventLog,
    /// The outage spool directory.
    pub spool_dir: std::path::PathBuf,
}

/// The Kafka sink thread's state.
pub struct KafkaSink {
    producer: BaseProducer<DeliveryContext>,
    reports: crossbeam_channel::Receiver<Report>,
    prefix: String,
    /// Full topic names (prefix included), by `Topic as usize`.
    topic_names: Vec<String>,
    instance: String,
    rx: crossbeam_channel::Receiver<SinkMsg>,
    acks: AckReleaser,
    health: Health,
    /// Local copy of the WAL topics (restart safety).
    state_log: EventLog,
    wal: WalCursor,
    /// Records Kafka refused for good.
    refused: EventLog,
    spool: Spool,
    spool_after: Duration,
    replay_window: usize,
    groups: VecDeque<Group>,
    first_group: usize,
    mode: Mode,
    /// Group records produced and not yet reported.
    direct_inflight: usize,
    /// A replayed record librdkafka had no room for.
    replay_retry: Option<(u64, OutRecord)>,
    last_confirm: Instant,
    last_purge: Instant,
    full: bool,
}

impl KafkaSink {
    /// Creates the producer (topics must exist: [`super::create_topics`]) and opens the
    /// spool; records a crash left unaccounted for in the state log are spooled first.
    pub fn new(
        cfg: &KafkaConfig,
        rx: crossbeam_channel::Receiver<SinkMsg>,
        acks: Box<dyn AckPublisher>,
        health: Health,
        shards: usize,
        local: LocalStores,
    ) -> Result<Self, KafkaSinkError> {
        let LocalStores {
            state_log,
            log_dir,
            refused,
            spool_dir,
        } = local;
        let (tx, reports) = crossbeam_channel::unbounded();
        let producer: BaseProducer<DeliveryContext> = producer_config(cfg)
            .create_with_context(DeliveryContext { tx })
            .map_err(|e| KafkaSinkError::Client(e.to_string()))?;
        let limits = SpoolLimits {
            max_bytes: cfg.spool.max_bytes,
            segment_bytes: cfg.spool.segment_bytes,
            coalesce_percent: cfg.spool.coalesce_percent,
        };
        let mut spool = Spool::open(&spool_dir, limits)?;
        let (mut wal, tail) = WalCursor::open(&log_dir, &state_log)?;
        if !tail.is_empty() {
            tracing::warn!(
                records = tail.len(),
                "records of the local state log not known to be in kafka; spooled for replay"
            );
            spool.append(&tail)?;
            metrics::counter!(names::SINK_SPOOLED_RECORDS_TOTAL).increment(tail.len() as u64);
        }
        wal.caught_up(&state_log)?;
        let mode = if spool.is_empty() {
            Mode::Direct
        } else {
            tracing::info!(
                records = spool.depth(),
                "kafka spool not empty; replaying before new records"
            );
            Mode::Spool
        };
        health.set_degraded(mode == Mode::Spool);
        Ok(KafkaSink {
            producer,
            reports,
            prefix: cfg.topic_prefix.clone(),
            topic_names: Topic::ALL
                .iter()
                .map(|t| format!("{}{}", cfg.topic_prefix, t.name()))
                .collect(),
            instance: instance_name(),
            rx,
            acks: AckReleaser::new(acks, shards),
            health,
            state_log,
            wal,
            refused,
            spool,
            spool_after: cfg.spool.after,
            replay_window: cfg.spool.replay_window,
            groups: VecDeque::new(),
            first_group: 0,
            mode,
            direct_inflight: 0,
            replay_retry: None,
            last_confirm: Instant::now(),
            last_purge: Instant::now(),
            full: false,
        })
    }

    /// Runs until every sender is gone and every record is delivered or spooled.
    pub fn run(mut self) {
        let mut last_export = Instant::now();
        let mut closing: Option<Instant> = None;
        let mut purged_all = false;
        loop {
            if closing.is_none() {
                match self.rx.recv_timeout(Duration::from_millis(5)) {
                    Ok(m) => {
                        let mut batch = vec![m];
                        while batch.len() < 1024 {
                            match self.rx.try_recv() {
                                Ok(m) => batch.push(m),
                                Err(_) => break,
                            }
                        }
                        self.accept(batch);
                    }
                    Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
                    Err(crossbeam_channel::RecvTimeoutError::Disconnected) => {
                        closing = Some(Instant::now())
                    }
                }
            }
            let idle = if closing.is_some() { 10 } else { 0 };
            self.step(Duration::from_millis(idle));
            if last_export.elapsed() >= Duration::from_secs(1) {
                self.export();
                last_export = Instant::now();
            }
            if let Some(since) = closing {
                if !purged_all && !self.groups.is_empty() && since.elapsed() > SHUTDOWN_GRACE / 2 {
                    // Kafka is not answering: keep what librdkafka holds in the spool.
                    purged_all = true;
                    self.purge(PurgeConfig::default().queue().inflight());
                }
                let replaying = self.last_confirm.elapsed() < Duration::from_secs(2);
                let spool_done = self.spool.is_empty()
                    || (!replaying && self.spool.in_flight() == 0)
                    || since.elapsed() > SHUTDOWN_GRACE;
                if self.groups.is_empty() && spool_done {
                    break;
                }
            }
        }
        self.export();
        if let Err(e) = self.wal.persist() {
            tracing::error!(error = %e, "kafka cursor persist failed");
        }
        if !self.spool.is_empty() {
            tracing::warn!(
                records = self.spool.depth(),
                "kafka sink stopped with records in the spool; they are replayed at the next start"
            );
        }
    }

    /// One turn: poll, reports, spooling decisions, replay, readiness.
    fn step(&mut self, poll: Duration) {
        self.producer.poll(poll);
        self.drain_reports();
        let slow = self
            .groups
            .front()
            .is_some_and(|g| g.remaining > 0 && g.started.elapsed() > self.spool_after);
        if slow && self.direct_inflight > 0 {
            match self.mode {
                Mode::Direct => self.enter_spool("kafka is not confirming deliveries"),
                // Records retried by librdkafka go back to its queue: spool them too.
                Mode::Spool if self.last_purge.elapsed() > self.spool_after => {
                    self.purge(PurgeConfig::default().queue())
                }
                Mode::Spool => {}
            }
        }
        if self.mode == Mode::Spool {
            self.pump_replay();
        }
        let degraded = self.mode == Mode::Spool || slow;
        if degraded != self.health.is_degraded() {
            self.health.set_degraded(degraded);
            if !degraded {
                tracing::info!("kafka deliveries flowing again; spool replayed");
            }
        }
    }

    fn enter_spool(&mut self, why: &str) {
        tracing::warn!(
            reason = why,
            pending_groups = self.groups.len(),
            "kafka sink spooling to local disk"
        );
        self.mode = Mode::Spool;
        self.health.set_degraded(true);
        self.purge(PurgeConfig::default().queue());
    }

    /// Purges librdkafka and spools the purged records (served synchronously, so they stay
    /// ahead of anything spooled after them).
    fn purge(&mut self, flags: PurgeConfig) {
        self.last_purge = Instant::now();
        self.producer.purge(flags);
        for _ in 0..100 {
            self.producer.poll(Duration::ZERO);
            if self.reports.is_empty() {
                break;
            }
            self.drain_reports();
        }
    }

    /// Appends the WAL topics' records to the local log and syncs it; returns each
    /// message's last offset per WAL topic.
    fn keep_state(&mut self, batch: &[SinkMsg]) -> Vec<[Option<u64>; 5]> {
        let mut any = false;
        let mut his = Vec::with_capacity(batch.len());
        for m in batch {
            let mut hi = [None; 5];
            for r in &m.records {
                let Some(i) = wal_index(r.topic) else {
                    continue;
                };
                let mut backoff = Duration::from_millis(50);
                loop {
                    match self
                        .state_log
                        .append(r.topic.name(), r.ts_ms, &r.key, &r.value)
                    {
                        Ok(o) => {
                            hi[i] = Some(o);
                            break;
                        }
                        Err(e) => {
                            tracing::error!(error = %e, "local state log append failed; retrying");
                            self.backoff(&mut backoff);
                        }
                    }
                }
                any = true;
            }
            his.push(hi);
        }
        if any {
            let mut backoff = Duration::from_millis(50);
            while let Err(e) = self.state_log.flush(true) {
                tracing::error!(error = %e, "local state log sync failed; retrying");
                self.backoff(&mut backoff);
            }
        }
        his
    }

    fn backoff(&mut self, backoff: &mut Duration) {
        metrics::counter!(names::SINK_ERRORS_TOTAL).increment(1);
        self.health.set_degraded(true);
        std::thread::sleep(*backoff);
        *backoff = (*backoff * 2).min(Duration::from_secs(5));
    }

    /// Takes a batch of messages: each becomes a group, produced or spooled.
    fn accept(&mut self, batch: Vec<SinkMsg>) {
        let his = self.keep_state(&batch);
        let mut to_spool: Vec<(usize, Vec<OutRecord>)> = Vec::new();
        for (m, wal_hi) in batch.into_iter().zip(his) {
            let gid = self.first_group + self.groups.len();
            self.groups.push_back(Group {
                remaining: m.records.len(),
                acks: m.acks,
                shard: m.shard,
                started: Instant::now(),
                wal_hi,
            });
            let mut records = m.records.into_iter();
            if self.mode == Mode::Direct {
                for r in records.by_ref() {
                    if let Err(back) = self.produce_group_record(gid, r) {
                        self.enter_spool("librdkafka queue full");
                        to_spool.push((gid, vec![back]));
                        break;
                    }
                }
            }
            let rest: Vec<OutRecord> = records.collect();
            if !rest.is_empty() {
                to_spool.push((gid, rest));
            }
            // A group without records (e.g. only duplicates) is done at once.
            self.finish(gid, 0);
        }
        self.spool_groups(to_spool);
        self.release_ready();
    }

    /// Produces one record of group `gid`; gives it back when librdkafka's queue is full.
    fn produce_group_record(&mut self, gid: usize, r: OutRecord) -> Result<(), OutRecord> {
        let t = tag(TAG_GROUP, gid as u64);
        match self.send(&r, t) {
            Ok(()) => {
                self.direct_inflight += 1;
                Ok(())
            }
            Err(KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull)) => Err(r),
            Err(e) => {
                self.refuse(vec![(e, r)]);
                self.finish(gid, 1);
                Ok(())
            }
        }
    }

    fn send(&self, r: &OutRecord, t: usize) -> Result<(), KafkaError> {
        let topic = &self.topic_names[r.topic as usize];
        let record = BaseRecord::with_opaque_to(topic, t)
            .key(r.key.as_slice())
            .payload(r.value.as_slice())
            .timestamp(r.ts_ms)
            .headers(headers(r.topic, &self.instance, r.ts_ms));
        self.producer.send(record).map_err(|(e, _)| e)
    }

    /// Appends groups' records to the spool (one sync), waiting for room first (acks are
    /// held meanwhile: back-pressure), then finishes their parts.
    fn spool_groups(&mut self, parts: Vec<(usize, Vec<OutRecord>)>) {
        let mut chunk: Vec<(usize, Vec<OutRecord>)> = Vec::new();
        let mut chunk_bytes = 0;
        for (gid, records) in parts {
            let bytes: u64 = records.iter().map(Spool::frame_bytes).sum();
            if !self.spool.has_room(chunk_bytes + bytes) {
                self.write_spool(std::mem::take(&mut chunk));
                chunk_bytes = 0;
                self.wait_for_room(bytes);
            }
            chunk_bytes += bytes;
            chunk.push((gid, records));
        }
        self.write_spool(chunk);
    }

    fn wait_for_room(&mut self, bytes: u64) {
        if self.spool.has_room(bytes) {
            return;
        }
        self.full = true;
        tracing::warn!(
            bytes = self.spool.bytes(),
            "kafka spool full; acks held until kafka takes the replay"
        );
        let mut last_export = Instant::now();
        while !self.spool.has_room(bytes) {
            self.step(Duration::from_millis(10));
            if let Err(e) = self.spool.maintain() {
                tracing::error!(error = %e, "spool maintenance failed");
            }
            if last_export.elapsed() >= Duration::from_secs(1) {
                self.export();
                last_export = Instant::now();
            }
        }
        self.full = false;
    }

    fn write_spool(&mut self, parts: Vec<(usize, Vec<OutRecord>)>) {
        if parts.is_empty() {
            return;
        }
        let all: Vec<OutRecord> = parts.iter().flat_map(|(_, r)| r.iter().cloned()).collect();
        let mut backoff = Duration::from_millis(50);
        let coalesced = loop {
            match self.spool.append(&all) {
                Ok(c) => break c,
                Err(e) => {
                    tracing::error!(error = %e, "spool write failed; holding acks and retrying");
                    self.backoff(&mut backoff);
                }
            }
        };
        metrics::counter!(names::SINK_SPOOLED_RECORDS_TOTAL)
            .increment(all.len() as u64 - coalesced);
        if coalesced > 0 {
            metrics::counter!(names::SINK_SPOOL_COALESCED_RECORDS_TOTAL).increment(coalesced);
        }
        for (gid, records) in parts {
            self.finish(gid, records.len());
        }
    }

    /// Sends spooled records while the replay window has room and nothing direct is
    /// outstanding; goes direct again once the spool is replayed.
    fn pump_replay(&mut self) {
        if self.direct_inflight > 0 {
            return;
        }
        while self.spool.in_flight() < self.replay_window {
            let next = match self.replay_retry.take() {
                Some(r) => Some(r),
                None => match self.spool.take_next() {
                    Ok(n) => n,
                    Err(e) => {
                        self.spool_read_failed(&e);
                        return;
                    }
                },
            };
            let Some((offset, r)) = next else { break };
            match self.send(&r, tag(TAG_REPLAY, offset)) {
                Ok(()) => {}
                Err(KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull)) => {
                    self.replay_retry = Some((offset, r));
                    return;
                }
                Err(e) => {
                    self.refuse(vec![(e, r)]);
                    self.spool.confirm(offset);
                }
            }
        }
        if self.spool.depth() == 0 && self.spool.in_flight() == 0 && self.replay_retry.is_none() {
            let coalesced = self.spool.take_coalesced();
            if !coalesced.is_empty() {
                let gid = self.first_group + self.groups.len();
                self.groups.push_back(Group {
                    remaining: coalesced.len(),
                    acks: Vec::new(),
                    shard: None,
                    started: Instant::now(),
                    wal_hi: [None; 5],
                });
                let mut back = Vec::new();
                for r in coalesced {
                    if let Err(r) = self.produce_group_record(gid, r) {
                        back.push(r);
                    }
                }
                if !back.is_empty() {
                    // librdkafka is full again: they stay spooled.
                    self.spool_groups(vec![(gid, back)]);
                    return;
                }
            }
            self.mode = Mode::Direct;
            if let Err(e) = self.spool.maintain() {
                tracing::error!(error = %e, "spool maintenance failed");
            }
            tracing::info!("kafka spool replayed; producing directly again");
        }
    }

    fn spool_read_failed(&mut self, e: &SpoolError) {
        metrics::counter!(names::SINK_ERRORS_TOTAL).increment(1);
        tracing::error!(error = %e, "spool read failed; replay restarts at the cursor");
        if let Err(e) = self.spool.rewind() {
            tracing::error!(error = %e, "spool rewind failed");
        }
        std::thread::sleep(Duration::from_millis(100));
    }

    /// Keeps refused records locally, counts them and reports them on `fw.deadletter`.
    fn refuse(&mut self, refused: Vec<(KafkaError, OutRecord)>) {
        if refused.is_empty() {
            return;
        }
        for (e, r) in &refused {
            let code = match e {
                KafkaError::MessageProduction(c) => format!("{c:?}"),
                other => format!("{:?}", other.rdkafka_error_code()),
            };
            metrics::counter!(names::SINK_REFUSED_RECORDS_TOTAL,
                "topic" => r.topic.name(), "reason" => code)
            .increment(1);
            tracing::error!(topic = r.topic.name(), error = %e,
                "kafka refused a record for good; kept locally and reported on fw.deadletter");
            let mut backoff = Duration::from_millis(50);
            while let Err(e) = self
                .refused
                .append(r.topic.name(), r.ts_ms, &r.key, &r.value)
            {
                tracing::error!(error = %e, "refused-record store append failed; retrying");
                self.backoff(&mut backoff);
            }
        }
        let mut backoff = Duration::from_millis(50);
        while let Err(e) = self.refused.flush(true) {
            tracing::error!(error = %e, "refused-record store sync failed; retrying");
            self.backoff(&mut backoff);
        }
        let now_ms = crate::clock::unix_ms();
        for (e, r) in refused {
            if r.topic == Topic::DeadLetter {
                continue;
            }
            metrics::counter!(names::DEADLETTER_REJECTS_TOTAL, "reason" => "kafka_refused")
                .increment(1);
            let dl = DeadLetter {
                gateway_id: "engine".into(),
                topic: self.topic_names[r.topic as usize].clone(),
                reason: RejectReason::KafkaRefused,
                detail: format!(
                    "kafka refused a {} record (key {}): {e}; kept in data_dir/kafka-refused",
                    r.topic.name(),
                    String::from_utf8_lossy(&r.key)
                ),
                raw: bytes::Bytes::from(r.value),
                point_id: 0,
                device_seq: 0,
            };
            let rec = dl.to_record(now_ms, REFUSED_RAW_BYTES);
            // Best effort: a refused dead letter is only kept locally (no loop).
            let _ = self.send(&rec, tag(TAG_NOTICE, 0));
        }
    }

    fn drain_reports(&mut self) {
        let mut to_spool: Vec<(usize, Vec<OutRecord>)> = Vec::new();
        let mut refused = Vec::new();
        let mut refused_gids = Vec::new();
        let mut rewind = false;
        while let Ok((t, failed)) = self.reports.try_recv() {
            let (kind, n) = (t >> TAG_SHIFT, (t & TAG_MASK) as u64);
            let Some(f) = failed else {
                metrics::counter!(names::SINK_RECORDS_TOTAL, "topic" => "kafka").increment(1);
                match kind {
                    TAG_GROUP => {
                        self.direct_inflight = self.direct_inflight.saturating_sub(1);
                        self.finish(n as usize, 1);
                    }
                    TAG_REPLAY => {
                        self.spool.confirm(n);
                        self.last_confirm = Instant::now();
                        metrics::counter!(names::SINK_SPOOL_REPLAYED_RECORDS_TOTAL).increment(1);
                    }
                    _ => {}
                }
                continue;
            };
            let Failed {
                error,
                topic,
                mut record,
            } = *f;
            let local = topic.strip_prefix(self.prefix.as_str()).unwrap_or(&topic);
            record.topic = Topic::from_name(local).unwrap_or(Topic::DeadLetter);
            let purged = matches!(
                error,
                KafkaError::MessageProduction(
                    RDKafkaErrorCode::PurgeQueue | RDKafkaErrorCode::PurgeInflight
                )
            );
            match (kind, purged) {
                (TAG_GROUP, true) => {
                    self.direct_inflight = self.direct_inflight.saturating_sub(1);
                    to_spool.push((n as usize, vec![record]));
                }
                (TAG_GROUP, false) => {
                    self.direct_inflight = self.direct_inflight.saturating_sub(1);
                    metrics::counter!(names::SINK_DELIVERY_ERRORS_TOTAL).increment(1);
                    refused.push((error, record));
                    refused_gids.push(n as usize);
                }
                // Still in the spool: sent again from the cursor.
                (TAG_REPLAY, true) => rewind = true,
                (TAG_REPLAY, false) => {
                    metrics::counter!(names::SINK_DELIVERY_ERRORS_TOTAL).increment(1);
                    refused.push((error, record));
                    self.spool.confirm(n);
                }
                (_, true) => {}
                (_, false) => {
                    metrics::counter!(names::SINK_DELIVERY_ERRORS_TOTAL).increment(1);
                    refused.push((error, record));
                }
            }
        }
        // Purged records were accepted already: they go in even past the bound.
        if !to_spool.is_empty() {
            self.write_spool(to_spool);
        }
        self.refuse(refused);
        for gid in refused_gids {
            self.finish(gid, 1);
        }
        if rewind {
            self.replay_retry = None;
            if let Err(e) = self.spool.rewind() {
                self.spool_read_failed(&e);
            }
        }
        self.release_ready();
    }

    /// `n` records of group `gid` are durable; its acks go out when none is left.
    fn finish(&mut self, gid: usize, n: usize) {
        let Some(g) = gid
            .checked_sub(self.first_group)
            .and_then(|i| self.groups.get_mut(i))
        else {
            return;
        };
        g.remaining = g.remaining.saturating_sub(n);
        if g.remaining == 0 && !g.acks.is_empty() {
            let acks = std::mem::take(&mut g.acks);
            let shard = g.shard;
            self.acks.release_one(shard, acks);
        }
    }

    /// Retires finished groups from the front (in order), advancing the WAL cursor.
    fn release_ready(&mut self) {
        while self.groups.front().is_some_and(|g| g.remaining == 0) {
            if let Some(g) = self.groups.pop_front() {
                self.first_group += 1;
                for (i, hi) in g.wal_hi.iter().enumerate() {
                    if let Some(o) = hi {
                        self.wal.advance(i, o + 1);
                    }
                }
            }
        }
    }

    fn export(&mut self) {
        self.acks.export();
        metrics::gauge!(names::SINK_QUEUE_DEPTH).set(self.rx.len() as f64);
        metrics::gauge!(names::SINK_KAFKA_PENDING_GROUPS).set(self.groups.len() as f64);
        let state = match (self.full, self.mode) {
            (true, _) => 3,
            (false, Mode::Direct) => 0,
            (false, Mode::Spool) if self.last_confirm.elapsed() < self.spool_after => 2,
            (false, Mode::Spool) => 1,
        };
        metrics::gauge!(names::SINK_SPOOL_STATE).set(f64::from(state));
        metrics::gauge!(names::SINK_SPOOL_DEPTH_RECORDS)
            .set((self.spool.depth() + self.spool.coalesced_len() as u64) as f64);
        metrics::gauge!(names::SINK_SPOOL_DEPTH_BYTES).set(self.spool.bytes() as f64);
        let age = self.spool.oldest_ms().map_or(0.0, |t| {
            (crate::clock::unix_ms() - t).max(0) as f64 / 1000.0
        });
        metrics::gauge!(names::SINK_SPOOL_OLDEST_AGE_SECONDS).set(age);
        if let Err(e) = self.spool.maintain() {
            metrics::counter!(names::SINK_ERRORS_TOTAL).increment(1);
            tracing::error!(error = %e, "spool maintenance failed");
        }
        if let Err(e) = self.wal.persist() {
            metrics::counter!(names::SINK_ERRORS_TOTAL).increment(1);
            tracing::error!(error = %e, "kafka cursor persist failed");
        }
    }
}
