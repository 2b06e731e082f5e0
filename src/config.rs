//! Engine configuration: serde structs (`deny_unknown_fields`), defaults that match
//! `config/firewatch.toml`, an environment layer (`FIREWATCH__SECTION__KEY`) and
//! validation that names the offending key.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Errors from loading or validating configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The TOML did not parse or did not match the schema (the message names the key).
    #[error("invalid config {origin}: {message}")]
    Parse {
        /// File name or "environment".
        origin: String,
        /// What serde/toml said, including the key.
        message: String,
    },
    /// A value is out of range.
    #[error("invalid config key `{key}`: {message}")]
    Invalid {
        /// Dotted key, e.g. `pipeline.shards`.
        key: String,
        /// Why.
        message: String,
    },
}

/// The whole engine configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Directory for the embedded log and other state.
    pub data_dir: PathBuf,
    /// `[mqtt]`.
    pub mqtt: MqttConfig,
    /// `[http]`.
    pub http: HttpConfig,
    /// `[registry]`.
    pub registry: RegistryConfig,
    /// `[pipeline]`.
    pub pipeline: PipelineConfig,
    /// `[sink]`.
    pub sink: SinkConfig,
    /// `[kafka]` (used when `sink.kind = "kafka"`).
    pub kafka: KafkaConfig,
    /// `[log]`.
    pub log: LogConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("data"),
            mqtt: MqttConfig::default(),
            http: HttpConfig::default(),
            registry: RegistryConfig::default(),
            pipeline: PipelineConfig::default(),
            sink: SinkConfig::default(),
            kafka: KafkaConfig::default(),
            log: LogConfig::default(),
        }
    }
}

/// `[mqtt]`: the embedded broker.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MqttConfig {
    /// MQTT 3.1.1 listener.
    pub listen_v4: Option<SocketAddr>,
    /// MQTT 5 listener.
    pub listen_v5: Option<SocketAddr>,
    /// TLS for both listeners (PEM files).
    pub tls: Option<TlsConfig>,
    /// Credentials file (`username,role,hash` lines, see docs/security.md).
    pub credentials: PathBuf,
    /// Largest uplink payload the engine accepts; larger ones are dead-lettered.
    pub max_payload_bytes: usize,
    /// Hard limit at which the broker drops the connection (must exceed max_payload_bytes).
    pub max_packet_bytes: usize,
    /// Most events one batch may carry.
    pub max_events_per_batch: usize,
    /// Most concurrent connections.
    pub max_connections: usize,
    /// Time a new connection has to send CONNECT.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Bytes of uplink data rumqttd may buffer for the engine (segment size).
    pub uplink_segment_bytes: usize,
    /// Number of uplink segments kept.
    pub uplink_segment_count: usize,
    /// Bytes of recent acks rumqttd keeps per gateway subscription (two segments of this).
    /// Acks a gateway has not read when it is exceeded are dropped; the gateway retransmits
    /// its alarms. Memory: up to about 2 × this × 3.5 per subscribed gateway.
    pub ack_segment_bytes: usize,
    /// Dead-letter records per gateway per second (the counter always counts everything).
    pub deadletter_per_gateway_per_sec: u32,
    /// Bytes of raw payload kept in a dead-letter record.
    pub deadletter_raw_bytes: usize,
}

impl Default for MqttConfig {
    fn default() -> Self {
        MqttConfig {
            listen_v4: Some(SocketAddr::from(([0, 0, 0, 0], 1883))),
            listen_v5: Some(SocketAddr::from(([0, 0, 0, 0], 1884))),
            tls: None,
            credentials: PathBuf::from("config/credentials.sample.csv"),
            max_payload_bytes: 64 * 1024,
            max_packet_bytes: 1024 * 1024,
            max_events_per_batch: 1000,
            max_connections: 20_000,
            connect_timeout: Duration::from_secs(10),
            uplink_segment_bytes: 16 * 1024 * 1024,
            uplink_segment_count: 4,
            ack_segment_bytes: 8 * 1024,
            deadletter_per_gateway_per_sec: 20,
            deadletter_raw_bytes: 4096,
        }
    }
}

/// PEM files for the TLS listener.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// Server certificate chain.
    pub cert_path: PathBuf,
    /// Server private key.
    pub key_path: PathBuf,
    /// CA for client certificates (when mutual TLS is wanted).
    pub ca_path: Option<PathBuf>,
}

/// `[http]`: metrics and health.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Listen address of `/metrics`, `/healthz`, `/readyz`.
    pub listen: SocketAddr,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 9900)),
        }
    }
}

/// `[registry]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RegistryConfig {
    /// The registry CSV.
    pub path: PathBuf,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        RegistryConfig {
            path: PathBuf::from("config/registry.sample.csv"),
        }
    }
}

/// `[pipeline]`: shards, windows and timers.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PipelineConfig {
    /// Shard threads; 0 means one per core.
    pub shards: usize,
    /// Capacity (in batches) of each shard's input lanes.
    pub channel_capacity: usize,
    /// How often shards run their timers.
    #[serde(with = "humantime_serde")]
    pub tick_interval: Duration,
    /// Window in which a repeated (point_id, device_seq) is a duplicate.
    #[serde(with = "humantime_serde")]
    pub dedup_window: Duration,
    /// Heartbeat supervision per device class (keys are the registry's class names).
    pub device_classes: BTreeMap<String, DeviceClassConfig>,
    /// A second detector of the same house within this time of the first alarm confirms.
    #[serde(with = "humantime_serde")]
    pub double_knock_window: Duration,
    /// The same detector alarming again within this time confirms.
    #[serde(with = "humantime_serde")]
    pub realarm_window: Duration,
    /// An alarm still active this long after it began confirms (persistence).
    #[serde(with = "humantime_serde")]
    pub verification_timeout: Duration,
    /// A lone kitchen/studio smoke alarm that clears within this time is a nuisance alarm.
    #[serde(with = "humantime_serde")]
    pub nuisance_window: Duration,
    /// After the "handled" deadline is missed, escalate again this often until 119.
    #[serde(with = "humantime_serde")]
    pub escalation_repeat: Duration,
    /// Station class of stations not listed in `station_class_of`.
    pub default_station_class: String,
    /// 1-3-5 deadlines per station class.
    pub station_classes: BTreeMap<String, ResponseDeadlines>,
    /// Station id (as a string key) → station class.
    pub station_class_of: BTreeMap<String, String>,
    /// Period of `fw.insurance.risk` aggregates.
    #[serde(with = "humantime_serde")]
    pub risk_interval: Duration,
    /// Period of `fw.coverage` records.
    #[serde(with = "humantime_serde")]
    pub coverage_interval: Duration,
    /// How often shards snapshot point state to `data_dir/state` (also at shutdown).
    #[serde(with = "humantime_serde")]
    pub snapshot_interval: Duration,
}

/// The 1-3-5 deadlines of one station class, from an incident's opening.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResponseDeadlines {
    /// The station must acknowledge within this time.
    #[serde(with = "humantime_serde")]
    pub ack: Duration,
    /// The station must be on scene within this time.
    #[serde(with = "humantime_serde")]
    pub on_scene: Duration,
    /// The incident must be handled (resolved) within this time.
    #[serde(with = "humantime_serde")]
    pub handled: Duration,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        let class = |hb: u64, grace: u64| DeviceClassConfig {
            heartbeat_interval: Duration::from_secs(hb),
            grace: Duration::from_secs(grace),
        };
        let mut device_classes = BTreeMap::new();
        device_classes.insert("polled".to_string(), class(60, 30));
        device_classes.insert("lora".to_string(), class(3600, 600));
        device_classes.insert("nbiot".to_string(), class(86_400, 3600));
        let mut station_classes = BTreeMap::new();
        station_classes.insert(
            "grassroots".to_string(),
            ResponseDeadlines {
                ack: Duration::from_secs(60),
                on_scene: Duration::from_secs(180),
                handled: Duration::from_secs(300),
            },
        );
        PipelineConfig {
            shards: 0,
            channel_capacity: 1024,
            tick_interval: Duration::from_millis(100),
            dedup_window: Duration::from_secs(600),
            device_classes,
            double_knock_window: Duration::from_secs(120),
            realarm_window: Duration::from_secs(60),
            verification_timeout: Duration::from_secs(60),
            nuisance_window: Duration::from_secs(30),
            escalation_repeat: Duration::from_secs(120),
            default_station_class: "grassroots".to_string(),
            station_classes,
            station_class_of: BTreeMap::new(),
            risk_interval: Duration::from_secs(3600),
            coverage_interval: Duration::from_secs(3600),
            snapshot_interval: Duration::from_secs(60),
        }
    }
}

impl PipelineConfig {
    /// Shard count after resolving 0 to the number of cores.
    pub fn shard_count(&self) -> usize {
        if self.shards == 0 {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            self.shards
        }
    }
}

/// Heartbeat supervision of one device class.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceClassConfig {
    /// How often the device heartbeats.
    #[serde(with = "humantime_serde")]
    pub heartbeat_interval: Duration,
    /// Extra time before a missing heartbeat makes the point offline.
    #[serde(with = "humantime_serde")]
    pub grace: Duration,
}

/// `[sink]`.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct SinkConfig {
    /// Which sink.
    pub kind: SinkKind,
    /// `[sink.embedded]`.
    pub embedded: EmbeddedSinkConfig,
}

/// Sink kinds built into this version.
#[derive(Debug, Clone, Copy, Deserialize, Default, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum SinkKind {
    /// The embedded segmented log under `data_dir`.
    #[default]
    Embedded,
    /// Kafka (`[kafka]`), with a local spool for records Kafka refuses.
    Kafka,
}

/// `[kafka]`: the production sink.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaConfig {
    /// `bootstrap.servers`.
    pub brokers: String,
    /// Prepended to every topic name (e.g. `"city1."`).
    pub topic_prefix: String,
    /// Create missing topics at start (admin API).
    pub create_topics: bool,
    /// Partitions of created topics.
    pub partitions: i32,
    /// Replication factor of created topics.
    pub replication_factor: i32,
    /// Time to wait for the cluster at start (topic creation).
    #[serde(with = "humantime_serde")]
    pub startup_timeout: std::time::Duration,
    /// Consume station commands from `fw.station-commands` (created as an input topic).
    pub consume_commands: bool,
    /// Consumer group of the station-command consumer.
    pub commands_group: String,
    /// `[kafka.spool]`: the local outage spool.
    pub spool: KafkaSpoolConfig,
    /// librdkafka properties passed through (SASL, TLS, tuning); they override the
    /// engine's defaults (docs/kafka.md).
    pub properties: BTreeMap<String, String>,
}

/// `[kafka.spool]`: records go to a local spool while Kafka is down or slow.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaSpoolConfig {
    /// Spool directory; relative paths are under `data_dir`.
    pub dir: PathBuf,
    /// Most bytes on disk; when full the engine stops acking (back-pressure).
    pub max_bytes: u64,
    /// Segment file size (replayed segments are deleted whole).
    pub segment_bytes: u64,
    /// Above this percent of `max_bytes`, `fw.point-status` records are coalesced.
    pub coalesce_percent: u8,
    /// Spool once the oldest undelivered record has waited this long.
    #[serde(with = "humantime_serde")]
    pub after: Duration,
    /// Most replayed records waiting for delivery reports at once.
    pub replay_window: usize,
}

impl Default for KafkaSpoolConfig {
    fn default() -> Self {
        KafkaSpoolConfig {
            dir: PathBuf::from("kafka-spool"),
            max_bytes: 4 << 30,
            segment_bytes: 64 << 20,
            coalesce_percent: 80,
            after: Duration::from_secs(5),
            replay_window: 50_000,
        }
    }
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            brokers: "127.0.0.1:9092".into(),
            topic_prefix: String::new(),
            create_topics: true,
            partitions: 12,
            replication_factor: 1,
            startup_timeout: Duration::from_secs(30),
            consume_commands: true,
            commands_group: "firewatch-engine".into(),
            spool: KafkaSpoolConfig::default(),
            properties: BTreeMap::new(),
        }
    }
}

/// `[sink.embedded]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EmbeddedSinkConfig {
    /// Log directory; relative paths are under `data_dir`.
    pub dir: PathBuf,
    /// When records are fsynced.
    pub fsync: FsyncPolicy,
    /// Segment file size.
    pub segment_bytes: u64,
    /// Most records the writer gathers before one write+fsync.
    pub max_batch_records: usize,
}

impl Default for EmbeddedSinkConfig {
    fn default() -> Self {
        EmbeddedSinkConfig {
            dir: PathBuf::from("log"),
            fsync: FsyncPolicy::Batch,
            segment_bytes: 64 * 1024 * 1024,
            max_batch_records: 8192,
        }
    }
}

/// When the embedded log syncs to disk.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum FsyncPolicy {
    /// fdatasync each write batch before its acks go out (group commit). Survives power loss.
    Batch,
    /// Write to the OS only; acks after write(). Survives a process crash, not power loss.
    Never,
}

/// `[log]`: the engine's own diagnostics.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `text` or `json`.
    pub format: LogFormat,
    /// An env-filter directive, e.g. `info` or `firewatch=debug`.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Text,
            level: "info".into(),
        }
    }
}

/// Log line format.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// Human-readable.
    Text,
    /// One JSON object per line.
    Json,
}

impl Config {
    /// Loads `path` (or only defaults when `None`), applies `FIREWATCH__…` variables from
    /// `env`, and validates.
    pub fn load(
        path: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let (mut value, origin) = match path {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                    path: p.to_path_buf(),
                    source,
                })?;
                let v: toml::Table = toml::from_str(&text).map_err(|e| ConfigError::Parse {
                    origin: p.display().to_string(),
                    message: e.to_string(),
                })?;
                (v, p.display().to_string())
            }
            None => (toml::Table::new(), "defaults".to_string()),
        };
        let mut from_env = false;
        for (k, v) in env {
            let Some(rest) = k.strip_prefix("FIREWATCH__") else {
                continue;
            };
            let path: Vec<String> = rest.split("__").map(|s| s.to_ascii_lowercase()).collect();
            set_path(&mut value, &path, parse_scalar(&v)).map_err(|message| {
                ConfigError::Invalid {
                    key: path.join("."),
                    message,
                }
            })?;
            from_env = true;
        }
        let origin = if from_env {
            format!("{origin} + environment")
        } else {
            origin
        };
        let config: Config =
            toml::Value::Table(value)
                .try_into()
                .map_err(|e: toml::de::Error| ConfigError::Parse {
                    origin,
                    message: e.to_string(),
                })?;
        config.validate()?;
        Ok(config)
    }

    /// Range checks that serde cannot express.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |key: &str, message: &str| {
            Err(ConfigError::Invalid {
                key: key.into(),
                message: message.into(),
            })
        };
        let m = &self.mqtt;
        if m.listen_v4.is_none() && m.listen_v5.is_none() {
            return bad(
                "mqtt.listen_v4",
                "at least one of listen_v4 and listen_v5 must be set",
            );
        }
        if m.max_payload_bytes == 0 || m.max_payload_bytes >= m.max_packet_bytes {
            return bad(
                "mqtt.max_payload_bytes",
                "must be > 0 and below mqtt.max_packet_bytes",
            );
        }
        if m.max_events_per_batch == 0 {
            return bad("mqtt.max_events_per_batch", "must be > 0");
        }
        if m.uplink_segment_bytes < 64 * 1024 || m.uplink_segment_count == 0 {
            return bad(
                "mqtt.uplink_segment_bytes",
                "must be at least 65536 bytes with uplink_segment_count >= 1",
            );
        }
        if m.ack_segment_bytes < 1024 {
            return bad(
                "mqtt.ack_segment_bytes",
                "must be at least 1024 (rumqttd limit)",
            );
        }
        if m.connect_timeout.is_zero() || m.connect_timeout > Duration::from_millis(65_535) {
            return bad(
                "mqtt.connect_timeout",
                "must be between 1ms and 65.535s (rumqttd limit)",
            );
        }
        if self.pipeline.shards > 256 {
            return bad("pipeline.shards", "at most 256");
        }
        if self.pipeline.channel_capacity == 0 {
            return bad("pipeline.channel_capacity", "must be > 0");
        }
        if self.pipeline.tick_interval.is_zero() {
            return bad("pipeline.tick_interval", "must be > 0");
        }
        let p = &self.pipeline;
        if !p.station_classes.contains_key(&p.default_station_class) {
            return bad(
                "pipeline.default_station_class",
                "must name a [pipeline.station_classes.*] entry",
            );
        }
        for (station, class) in &p.station_class_of {
            if station.parse::<u32>().is_err() {
                return bad(
                    &format!("pipeline.station_class_of.{station}"),
                    "key must be a station id",
                );
            }
            if !p.station_classes.contains_key(class) {
                return bad(
                    &format!("pipeline.station_class_of.{station}"),
                    "must name a [pipeline.station_classes.*] entry",
                );
            }
        }
        for (name, d) in &p.station_classes {
            if d.ack.is_zero() || d.on_scene < d.ack || d.handled < d.on_scene {
                return bad(
                    &format!("pipeline.station_classes.{name}"),
                    "deadlines must satisfy 0 < ack <= on_scene <= handled",
                );
            }
        }
        for (key, d) in [
            ("pipeline.escalation_repeat", p.escalation_repeat),
            ("pipeline.risk_interval", p.risk_interval),
            ("pipeline.coverage_interval", p.coverage_interval),
            ("pipeline.snapshot_interval", p.snapshot_interval),
        ] {
            if d.is_zero() {
                return bad(key, "must be > 0");
            }
        }
        for (name, c) in &self.pipeline.device_classes {
            if c.heartbeat_interval.is_zero() {
                return bad(
                    &format!("pipeline.device_classes.{name}.heartbeat_interval"),
                    "must be > 0",
                );
            }
        }
        if self.sink.embedded.segment_bytes < 4096 {
            return bad("sink.embedded.segment_bytes", "must be at least 4096");
        }
        if self.sink.kind == SinkKind::Kafka {
            if self.kafka.brokers.trim().is_empty() {
                return bad("kafka.brokers", "must name at least one broker");
            }
            if self.kafka.partitions < 1 || self.kafka.replication_factor < 1 {
                return bad(
                    "kafka.partitions",
                    "partitions and replication_factor must be >= 1",
                );
            }
            let sp = &self.kafka.spool;
            if sp.segment_bytes < 4096 {
                return bad("kafka.spool.segment_bytes", "must be at least 4096");
            }
            if sp.max_bytes < 2 * sp.segment_bytes {
                return bad(
                    "kafka.spool.max_bytes",
                    "must be at least twice kafka.spool.segment_bytes",
                );
            }
            if sp.coalesce_percent == 0 || sp.coalesce_percent > 100 {
                return bad("kafka.spool.coalesce_percent", "must be 1..=100");
            }
            if sp.after.is_zero() {
                return bad("kafka.spool.after", "must be > 0");
            }
            if sp.replay_window == 0 {
                return bad("kafka.spool.replay_window", "must be > 0");
            }
            if self.kafka.consume_commands && self.kafka.commands_group.trim().is_empty() {
                return bad("kafka.commands_group", "must not be empty");
            }
        }
        if self.sink.embedded.max_batch_records == 0 {
            return bad("sink.embedded.max_batch_records", "must be > 0");
        }
        Ok(())
    }

    /// Where shards keep their snapshots.
    pub fn state_dir(&self) -> PathBuf {
        self.data_dir.join("state")
    }

    /// The Kafka outage spool directory, resolved against `data_dir`.
    pub fn kafka_spool_dir(&self) -> PathBuf {
        self.data_dir.join(&self.kafka.spool.dir)
    }

    /// The embedded log directory, resolved against `data_dir`.
    pub fn log_dir(&self) -> PathBuf {
        self.data_dir.join(&self.sink.embedded.dir)
    }
}

/// An environment value as TOML: integers, floats and booleans keep their type, everything
/// else is a string.
fn parse_scalar(v: &str) -> toml::Value {
    if let Ok(i) = v.parse::<i64>() {
        toml::Value::Integer(i)
    } else if let Ok(b) = v.parse::<bool>() {
        toml::Value::Boolean(b)
    } else if let Ok(f) = v.parse::<f64>() {
        toml::Value::Float(f)
    } else {
        toml::Value::String(v.to_string())
    }
}

fn set_path(table: &mut toml::Table, path: &[String], value: toml::Value) -> Result<(), String> {
    match path {
        [] => Err("empty key".into()),
        [last] => {
            table.insert(last.clone(), value);
            Ok(())
        }
        [first, rest @ ..] => {
            let entry = table
                .entry(first.clone())
                .or_insert_with(|| toml::Value::Table(Default::default()));
            match entry {
                toml::Value::Table(t) => set_path(t, rest, value),
                _ => Err(format!("`{first}` is not a section")),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_str(text: &str, env: Vec<(&str, &str)>) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(&p, text).unwrap();
        Config::load(
            Some(&p),
            env.into_iter().map(|(a, b)| (a.to_string(), b.to_string())),
        )
    }

    #[test]
    fn shipped_config_equals_defaults() {
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/firewatch.toml");
        let c = Config::load(Some(&p), Vec::new()).unwrap();
        let d = Config::default();
        assert_eq!(format!("{c:?}"), format!("{d:?}"));
    }

    #[test]
    fn unknown_key_is_named() {
        let e = load_str("[pipeline]\nshardz = 3\n", vec![])
            .unwrap_err()
            .to_string();
        assert!(e.contains("shardz"), "{e}");
    }

    #[test]
    fn env_overrides_file_and_unknown_env_key_is_named() {
        let c = load_str(
            "[pipeline]\nshards = 3\n",
            vec![("FIREWATCH__PIPELINE__SHARDS", "5")],
        )
        .unwrap();
        assert_eq!(c.pipeline.shards, 5);
        let c = load_str("", vec![("FIREWATCH__HTTP__LISTEN", "127.0.0.1:1")]).unwrap();
        assert_eq!(c.http.listen.port(), 1);
        let e = load_str("", vec![("FIREWATCH__PIPELINE__NOPE", "1")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("nope"), "{e}");
    }

    #[test]
    fn validation_names_the_key() {
        let e = load_str("[mqtt]\nmax_payload_bytes = 0\n", vec![])
            .unwrap_err()
            .to_string();
        assert!(e.contains("mqtt.max_payload_bytes"), "{e}");
        let e = load_str("[pipeline]\nshards = 1000\n", vec![])
            .unwrap_err()
            .to_string();
        assert!(e.contains("pipeline.shards"), "{e}");
        let e = load_str(
            "[sink]\nkind = \"kafka\"\n[kafka.spool]\ncoalesce_percent = 0\n",
            vec![],
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("kafka.spool.coalesce_percent"), "{e}");
        let e = load_str("[kafka.spool]\nmax_byte = 1\n", vec![])
            .unwrap_err()
            .to_string();
        assert!(e.contains("max_byte"), "{e}");
    }
}
