//! The Kafka sink (rdkafka `BaseProducer`, polled by the sink thread).
//!
//! Every [`SinkMsg`] becomes a *group*: its records are produced (idempotent, acks=all),
//! and its gateway acks are released only when the delivery report of every record of the
//! group — and of every group before it — has arrived. Groups are released in order, so
//! an ack also implies that the dead letters sent before it are delivered.
//!
//! Restart safety does not depend on reading Kafka back: the records the engine rebuilds
//! its state from (`fw.alarms`, `fw.incidents`, `fw.insurance.timeline`) are also written
//! to the local embedded log and synced before the group's acks go out.
//!
//! Failures: while Kafka is down or slow, librdkafka keeps retrying (`message.timeout.ms=0`)
//! and its queue fills; the sink then blocks (back-pressure to shards, ingest, and finally
//! gateways, which get no acks and retransmit). `/readyz` reports not ready while the oldest
//! group waits longer than 10 s. A final delivery error (message too large, unknown topic,
//! authorization) puts the record in the local spool (`data_dir/spool`, same topic names,
//! readable with `firewatch tail --dir`) with a counter; the record is then durable
//! locally, so its ack is released.

use super::acks::{AckPublisher, AckReleaser};
use super::{BatchAck, SinkMsg, Topic};
use crate::config::KafkaConfig;
use crate::eventlog::EventLog;
use crate::telemetry::{names, Health};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::ClientContext;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Errors setting up Kafka.
#[derive(Debug, thiserror::Error)]
pub enum KafkaSinkError {
    /// The client could not be created (bad property).
    #[error("kafka client: {0}")]
    Client(String),
    /// Topics could not be created or checked.
    #[error("kafka topic {topic}: {detail}")]
    Topic {
        /// Topic.
        topic: String,
        /// What the cluster said.
        detail: String,
    },
}

/// The engine's producer defaults; `[kafka.properties]` overrides them.
pub fn producer_config(cfg: &KafkaConfig) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &cfg.brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("compression.type", "lz4")
        .set("linger.ms", "5")
        .set("message.timeout.ms", "0")
        .set("queue.buffering.max.messages", "1000000")
        .set("queue.buffering.max.kbytes", "1048576")
        .set("batch.num.messages", "10000");
    for (k, v) in &cfg.properties {
        c.set(k, v);
    }
    c
}

/// The schema (protobuf message) of a topic's values, sent as a record header.
pub fn schema_of(topic: Topic) -> &'static str {
    match topic {
        Topic::Alarms => "firewatch.v1.AlarmRecord",
        Topic::Incidents => "firewatch.v1.IncidentRecord",
        Topic::Dispatch => "firewatch.v1.DispatchRecord",
        Topic::PointStatus => "firewatch.v1.PointStatusRecord",
        Topic::Troubles => "firewatch.v1.TroubleRecord",
        Topic::InsuranceTimeline => "firewatch.v1.InsuranceTimelineRecord",
        Topic::InsuranceRisk => "firewatch.v1.RiskRecord",
        Topic::Coverage => "firewatch.v1.CoverageRecord",
        Topic::DeadLetter => "firewatch.v1.DeadLetterRecord",
    }
}

/// Creates the engine's topics that do not exist yet (`fw.point-status` compacted).
pub fn create_topics(cfg: &KafkaConfig) -> Result<(), KafkaSinkError> {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &cfg.brokers);
    for (k, v) in &cfg.properties {
        if k.starts_with("security.") || k.starts_with("sasl.") || k.starts_with("ssl.") {
            c.set(k, v);
        }
    }
    let admin: AdminClient<DefaultClientContext> = c
        .create()
        .map_err(|e| KafkaSinkError::Client(e.to_string()))?;
    let names: Vec<String> = Topic::ALL
        .iter()
        .map(|t| format!("{}{}", cfg.topic_prefix, t.name()))
        .collect();
    let topics: Vec<NewTopic> = Topic::ALL
        .iter()
        .zip(&names)
        .map(|(t, name)| {
            let nt = NewTopic::new(
                name,
                cfg.partitions,
                TopicReplication::Fixed(cfg.replication_factor),
            );
            if *t == Topic::PointStatus {
                nt.set("cleanup.policy", "compact")
            } else {
                nt
            }
        })
        .collect();
    let opts = AdminOptions::new()
        .operation_timeout(Some(cfg.startup_timeout))
        .request_timeout(Some(cfg.startup_timeout));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| KafkaSinkError::Client(e.to_string()))?;
    let results = rt
        .block_on(admin.create_topics(topics.iter(), &opts))
        .map_err(|e| KafkaSinkError::Topic {
            topic: "*".into(),
            detail: e.to_string(),
        })?;
    for r in results {
        match r {
            Ok(name) => tracing::info!(topic = %name, "kafka topic created"),
            Err((name, RDKafkaErrorCode::TopicAlreadyExists)) => {
                tracing::debug!(topic = %name, "kafka topic exists")
            }
            Err((name, code)) => {
                return Err(KafkaSinkError::Topic {
                    topic: name,
                    detail: code.to_string(),
                })
            }
        }
    }
    Ok(())
}

/// A delivery report: group, and on failure the record to spool and why.
type Report = (usize, Option<(String, String, Vec<u8>, Vec<u8>, i64)>);

/// Forwards delivery reports from `poll` to the sink loop.
pub struct DeliveryContext {
    tx: crossbeam_channel::Sender<Report>,
}

impl ClientContext for DeliveryContext {}

impl ProducerContext for DeliveryContext {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, group: usize) {
        let report = match result {
            Ok(_) => (group, None),
            Err((e, m)) => {
                let ts = m.timestamp().to_millis().unwrap_or(0);
                let failed = (
                    e.to_string(),
                    m.topic().to_string(),
                    m.key().unwrap_or_default().to_vec(),
                    m.payload().unwrap_or_default().to_vec(),
                    ts,
                );
                (group, Some(failed))
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
}

/// The Kafka sink thread's state.
pub struct KafkaSink {
    producer: BaseProducer<DeliveryContext>,
    reports: crossbeam_channel::Receiver<Report>,
    prefix: String,
    /// Full topic names (prefix included), by `Topic as usize`.
    topic_names: Arc<Vec<String>>,
    instance: String,
    rx: crossbeam_channel::Receiver<SinkMsg>,
    acks: AckReleaser,
    health: Health,
    /// Local copy of the state topics (restart safety).
    state_log: EventLog,
    /// Records Kafka refused for good.
    spool: EventLog,
    groups: VecDeque<Group>,
    first_group: usize,
    was_stuck: bool,
}

/// Topics also kept in the local log: what a restart rebuilds state from.
fn is_state_topic(t: Topic) -> bool {
    matches!(
        t,
        Topic::Alarms | Topic::Incidents | Topic::InsuranceTimeline
    )
}

impl KafkaSink {
    /// Creates the producer (topics must exist: [`create_topics`]).
    pub fn new(
        cfg: &KafkaConfig,
        rx: crossbeam_channel::Receiver<SinkMsg>,
        acks: Box<dyn AckPublisher>,
        health: Health,
        shards: usize,
        state_log: EventLog,
        spool: EventLog,
    ) -> Result<Self, KafkaSinkError> {
        let (tx, reports) = crossbeam_channel::unbounded();
        let producer: BaseProducer<DeliveryContext> = producer_config(cfg)
            .create_with_context(DeliveryContext { tx })
            .map_err(|e| KafkaSinkError::Client(e.to_string()))?;
        let instance =
            std::env::var("HOSTNAME").unwrap_or_else(|_| format!("pid-{}", std::process::id()));
        Ok(KafkaSink {
            producer,
            reports,
            prefix: cfg.topic_prefix.clone(),
            topic_names: Arc::new(
                Topic::ALL
                    .iter()
                    .map(|t| format!("{}{}", cfg.topic_prefix, t.name()))
                    .collect(),
            ),
            instance,
            rx,
            acks: AckReleaser::new(acks, shards),
            health,
            state_log,
            spool,
            groups: VecDeque::new(),
            first_group: 0,
            was_stuck: false,
        })
    }

    /// Runs until every sender is gone and every record is delivered (or spooled).
    pub fn run(mut self) {
        let mut last_export = Instant::now();
        let mut open = true;
        while open || !self.groups.is_empty() {
            if open {
                match self.rx.recv_timeout(Duration::from_millis(5)) {
                    Ok(m) => {
                        let mut batch = vec![m];
                        while batch.len() < 1024 {
                            match self.rx.try_recv() {
                                Ok(m) => batch.push(m),
                                Err(_) => break,
                            }
                        }
                        self.keep_state(&batch);
                        for m in batch {
                            self.produce(m);
                        }
                    }
                    Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
                    Err(crossbeam_channel::RecvTimeoutError::Disconnected) => open = false,
                }
            }
            self.producer
                .poll(Duration::from_millis(if open { 0 } else { 10 }));
            self.drain_reports();
            self.check_health();
            if last_export.elapsed() >= Duration::from_secs(1) {
                self.acks.export();
                metrics::gauge!(names::SINK_QUEUE_DEPTH).set(self.rx.len() as f64);
                metrics::gauge!(names::SINK_KAFKA_PENDING_GROUPS).set(self.groups.len() as f64);
                last_export = Instant::now();
            }
        }
        let _ = self.producer.flush(Duration::from_secs(10));
        self.acks.export();
    }

    /// Appends the state topics' records to the local log and syncs it.
    fn keep_state(&mut self, batch: &[SinkMsg]) {
        let mut any = false;
        for m in batch {
            for r in m.records.iter().filter(|r| is_state_topic(r.topic)) {
                if let Err(e) = self
                    .state_log
                    .append(r.topic.name(), r.ts_ms, &r.key, &r.value)
                {
                    metrics::counter!(names::SINK_ERRORS_TOTAL).increment(1);
                    tracing::error!(error = %e, "local state log append failed");
                }
                any = true;
            }
        }
        if any {
            let mut backoff = Duration::from_millis(50);
            while let Err(e) = self.state_log.flush(true) {
                metrics::counter!(names::SINK_ERRORS_TOTAL).increment(1);
                tracing::error!(error = %e, "local state log sync failed; retrying");
                self.health.set_ready(false);
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }

    fn produce(&mut self, m: SinkMsg) {
        let gid = self.first_group + self.groups.len();
        self.groups.push_back(Group {
            remaining: m.records.len(),
            acks: m.acks,
            shard: m.shard,
            started: Instant::now(),
        });
        for r in &m.records {
            let names = self.topic_names.clone();
            let topic = &names[r.topic as usize];
            let ingest = r.ts_ms.to_string();
            let headers = OwnedHeaders::new()
                .insert(Header {
                    key: "schema",
                    value: Some(schema_of(r.topic)),
                })
                .insert(Header {
                    key: "schema-version",
                    value: Some("1"),
                })
                .insert(Header {
                    key: "engine",
                    value: Some(self.instance.as_str()),
                })
                .insert(Header {
                    key: "ingest-ts-ms",
                    value: Some(ingest.as_str()),
                });
            let mut record = BaseRecord::with_opaque_to(topic, gid)
                .key(r.key.as_slice())
                .payload(r.value.as_slice())
                .timestamp(r.ts_ms)
                .headers(headers);
            loop {
                match self.producer.send(record) {
                    Ok(()) => break,
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                        // Back-pressure: wait for the cluster, keep delivering reports.
                        record = back;
                        self.producer.poll(Duration::from_millis(10));
                        self.drain_reports();
                        self.check_health();
                    }
                    Err((e, _)) => {
                        // Refused before it was queued (e.g. too large): spool it.
                        let topic = topic.clone();
                        self.spool_record(&e.to_string(), &topic, &r.key, &r.value, r.ts_ms);
                        self.complete(gid);
                        break;
                    }
                }
            }
        }
        self.release_ready();
    }

    fn spool_record(&mut self, reason: &str, topic: &str, key: &[u8], value: &[u8], ts: i64) {
        metrics::counter!(names::SINK_SPOOLED_RECORDS_TOTAL).increment(1);
        tracing::error!(
            topic,
            reason,
            "kafka refused a record for good; kept in the local spool"
        );
        let local = topic.strip_prefix(self.prefix.as_str()).unwrap_or(topic);
        let mut backoff = Duration::from_millis(50);
        loop {
            let r = self
                .spool
                .append(local, ts, key, value)
                .and_then(|_| self.spool.flush(true));
            match r {
                Ok(()) => return,
                Err(e) => {
                    metrics::counter!(names::SINK_ERRORS_TOTAL).increment(1);
                    tracing::error!(error = %e, "spool write failed; retrying");
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    fn complete(&mut self, gid: usize) {
        if let Some(g) = gid
            .checked_sub(self.first_group)
            .and_then(|i| self.groups.get_mut(i))
        {
            g.remaining = g.remaining.saturating_sub(1);
        }
    }

    fn drain_reports(&mut self) {
        while let Ok((gid, failed)) = self.reports.try_recv() {
            if let Some((reason, topic, key, value, ts)) = failed {
                metrics::counter!(names::SINK_DELIVERY_ERRORS_TOTAL).increment(1);
                self.spool_record(&reason, &topic, &key, &value, ts);
            } else {
                metrics::counter!(names::SINK_RECORDS_TOTAL, "topic" => "kafka").increment(1);
            }
            self.complete(gid);
        }
        self.release_ready();
    }

    fn release_ready(&mut self) {
        while self.groups.front().is_some_and(|g| g.remaining == 0) {
            if let Some(g) = self.groups.pop_front() {
                self.first_group += 1;
                self.acks.release_one(g.shard, g.acks);
            }
        }
    }

    fn check_health(&mut self) {
        let stuck = self
            .groups
            .front()
            .is_some_and(|g| g.started.elapsed() > Duration::from_secs(10));
        // Only ever flips readiness off and back on; the app sets it at start.
        if stuck == self.health.is_ready() && (stuck || self.was_stuck) {
            self.was_stuck = stuck;
            self.health.set_ready(!stuck);
            if stuck {
                tracing::warn!(
                    pending = self.groups.len(),
                    "kafka is not confirming deliveries; acks are held"
                );
            } else {
                tracing::info!("kafka deliveries flowing again");
            }
        }
    }
}
