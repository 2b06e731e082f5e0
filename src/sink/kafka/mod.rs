//! Kafka: producer and admin configuration, topic creation, record headers; the sink loop
//! is in [`sink`], the restart write-ahead cursor in [`wal`], the station-command consumer
//! in [`commands`].
//!
//! Every [`super::SinkMsg`] becomes a *group*: its records are produced (idempotent,
//! acks=all), or written to the outage spool ([`super::spool`]) while Kafka is down or
//! slow, and its gateway acks are released once every record of the group is durable
//! (delivery report, or spool fsync). docs/kafka.md describes the whole behaviour.

pub mod commands;
pub mod sink;
pub mod wal;

use super::Topic;
use crate::config::KafkaConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::message::{Header, OwnedHeaders};
pub use sink::{KafkaSink, LocalStores};

/// The input topic of station commands (before the prefix).
pub const COMMANDS_TOPIC: &str = "fw.station-commands";

/// Errors setting up Kafka.
#[derive(Debug, thiserror::Error)]
pub enum KafkaSinkError {
    /// The client could not be created (bad property).
    #[error("kafka client: {0}")]
    Client(String),
    /// The local spool or state log failed.
    #[error("kafka spool: {0}")]
    Spool(#[from] super::spool::SpoolError),
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

/// The client properties that reach the cluster securely (SASL/TLS) for admin and consumer
/// clients; tuning properties are the producer's.
pub fn client_config(cfg: &KafkaConfig) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &cfg.brokers);
    for (k, v) in &cfg.properties {
        if k.starts_with("security.") || k.starts_with("sasl.") || k.starts_with("ssl.") {
            c.set(k, v);
        }
    }
    c
}

/// Creates the engine's topics that do not exist yet (`fw.point-status` compacted), and
/// the `fw.station-commands` input topic when the command consumer is on.
pub fn create_topics(cfg: &KafkaConfig) -> Result<(), KafkaSinkError> {
    let admin: AdminClient<DefaultClientContext> = client_config(cfg)
        .create()
        .map_err(|e| KafkaSinkError::Client(e.to_string()))?;
    let mut names: Vec<(Option<Topic>, String)> = Topic::ALL
        .iter()
        .map(|t| (Some(*t), format!("{}{}", cfg.topic_prefix, t.name())))
        .collect();
    if cfg.consume_commands {
        names.push((None, format!("{}{COMMANDS_TOPIC}", cfg.topic_prefix)));
    }
    let topics: Vec<NewTopic> = names
        .iter()
        .map(|(t, name)| {
            let nt = NewTopic::new(
                name,
                cfg.partitions,
                TopicReplication::Fixed(cfg.replication_factor),
            );
            if *t == Some(Topic::PointStatus) {
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

/// The headers of a record: schema name and version, engine instance, ingest time.
pub fn headers(topic: Topic, instance: &str, ts_ms: i64) -> OwnedHeaders {
    let ingest = ts_ms.to_string();
    OwnedHeaders::new()
        .insert(Header {
            key: "schema",
            value: Some(schema_of(topic)),
        })
        .insert(Header {
            key: "schema-version",
            value: Some("1"),
        })
        .insert(Header {
            key: "engine",
            value: Some(instance),
        })
        .insert(Header {
            key: "ingest-ts-ms",
            value: Some(ingest.as_str()),
        })
}

/// This engine instance's name for the `engine` header.
pub fn instance_name() -> String {
    std::env::var("HOSTNAME").unwrap_or_else(|_| format!("pid-{}", std::process::id()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn properties_override_defaults_and_only_security_reaches_admin() {
        let mut cfg = KafkaConfig::default();
        cfg.properties.insert("linger.ms".into(), "50".into());
        cfg.properties
            .insert("security.protocol".into(), "sasl_ssl".into());
        let p = producer_config(&cfg);
        assert_eq!(p.get("linger.ms"), Some("50"));
        assert_eq!(p.get("enable.idempotence"), Some("true"));
        let c = client_config(&cfg);
        assert_eq!(c.get("security.protocol"), Some("sasl_ssl"));
        assert_eq!(c.get("linger.ms"), None);
    }

    #[test]
    fn every_topic_has_a_schema() {
        for t in Topic::ALL {
            assert!(schema_of(t).starts_with("firewatch.v1."));
        }
    }
}
