//! Command-line options of `loadgen`.

use clap::{Parser, ValueEnum};
use std::path::PathBuf;

/// What a run simulates on top of the steady background of heartbeats and random alarms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Scenario {
    /// Heartbeats spread evenly (at --rate, or per device class with
    /// --heartbeat-from-class) and random alarms at --alarm-rate.
    Steady,
    /// Steady, plus a fire in one house that spreads to the houses of its gateway and
    /// village, plus a district-wide burst of alarms (--storm-at, --storm-secs,
    /// --storm-rate).
    Storm,
    /// Steady, plus a share of the gateways (--outage-share) dropping their connections
    /// abruptly at --outage-at and reconnecting with jittered exponential back-off once the
    /// outage (--outage-secs) is over.
    Outage,
    /// Steady, plus kitchen and studio smoke alarms that clear 2-10 s later
    /// (--nuisance-rate), one per house.
    Nuisance,
    /// Steady, plus a share of the gateways (--bad-share) also sending malformed protobuf,
    /// oversize payloads, foreign-point events, batches naming another gateway and
    /// publishes on another gateway's topic (--bad-rate).
    Bad,
}

/// What counts as the broker's acknowledgement of a published batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AckMode {
    /// firewatch's application-level `UplinkAck` on fw/v1/gw/{gateway}/ack, sent once the
    /// batch's alarms are durable; the gateway subscribes to it.
    App,
    /// The MQTT QoS-1 PUBACK of the publish (for brokers without an application ack, e.g.
    /// Mosquitto): every alarm of the batch counts as acked when its PUBACK arrives. No
    /// ack subscription is made.
    Puback,
}

/// How the values of `--kafka-topic` records are decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum KafkaValue {
    /// A firewatch `AlarmRecord` per record (the engine's Kafka sink, topic fw.alarms).
    AlarmRecord,
    /// The gateway's `UplinkBatch` as published over MQTT (a plain MQTT-to-Kafka bridge).
    UplinkBatch,
}

impl Scenario {
    /// Lowercase name.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Steady => "steady",
            Scenario::Storm => "storm",
            Scenario::Outage => "outage",
            Scenario::Nuisance => "nuisance",
            Scenario::Bad => "bad",
        }
    }
}

/// Simulated gateways and detectors that drive a firewatch engine over MQTT and measure it.
///
/// Every selected gateway connects with its own MQTT session (username and client id = the
/// gateway id), publishes protobuf `UplinkBatch`es on an open-loop schedule and waits for
/// the engine's `UplinkAck`s. Alarm latency is measured from each alarm's intended send time
/// to the receipt of the first ack that names it (coordinated-omission safe); heartbeat
/// latency likewise, to the ack of the batch that carried it. Unacked alarms are
/// retransmitted; the exit code is 1 when any sent alarm was lost (never acked, rejected,
/// or missing from the output: fw.alarms with --log-dir, or --observe-mqtt / --kafka-brokers).
///
/// Against a plain MQTT broker (Mosquitto): --ack puback --observe-mqtt. benches/run.sh runs
/// the scenarios at fixed sizes against firewatch, Mosquitto and a Mosquitto-to-Kafka bridge.
#[derive(Debug, Clone, Parser)]
#[command(name = "loadgen", version)]
pub struct Args {
    /// What to simulate on top of the steady background.
    #[arg(long, value_enum, default_value_t = Scenario::Steady)]
    pub scenario: Scenario,

    /// Registry CSV naming the gateways and points to simulate.
    #[arg(long, default_value = "config/registry.sample.csv")]
    pub registry: PathBuf,

    /// MQTT broker host of the engine.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,

    /// MQTT 3.1.1 port of the engine.
    #[arg(long, default_value_t = 1883)]
    pub port: u16,

    /// Password every gateway authenticates with.
    #[arg(long, default_value = firewatch::auth::DEV_SECRET)]
    pub secret: String,

    /// Number of gateways to simulate, the first N of the registry (default: all).
    #[arg(long)]
    pub gateways: Option<usize>,

    /// Cap on the number of points used, spread over the chosen gateways in proportion to
    /// their size (default: every point of the chosen gateways).
    #[arg(long)]
    pub points: Option<usize>,

    /// Total heartbeat rate in events per second, split evenly over the gateways (ignored
    /// with --heartbeat-from-class).
    #[arg(long, default_value_t = 1000.0)]
    pub rate: f64,

    /// Send each point's heartbeats at the interval of its registry device class (the
    /// engine's default `pipeline.device_classes`: polled 60 s, lora 3600 s, nbiot
    /// 86400 s; each point at a random phase) instead of --rate. The synthetic city of
    /// 800,000 points (60% polled, 30% lora, 10% nbiot gateways) gives about 8,100
    /// heartbeats/s; were every point polled, 13,300/s.
    #[arg(long)]
    pub heartbeat_from_class: bool,

    /// Total background alarm rate in alarms per second, split evenly over the gateways.
    #[arg(long, default_value_t = 10.0)]
    pub alarm_rate: f64,

    /// Most events in one published batch.
    #[arg(long, default_value_t = 50)]
    pub batch: usize,

    /// Seconds of sending (the schedule starts once the gateways are connected).
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,

    /// Seconds at the start of the schedule whose events are left out of the latency
    /// histograms (they still count as sent, acked and checked).
    #[arg(long, default_value_t = 0.0)]
    pub warmup: f64,

    /// Gateways connecting per second during the connect phase.
    #[arg(long, default_value_t = 500.0)]
    pub connect_rate: f64,

    /// Seconds to wait for the connect phase beyond the time --connect-rate needs.
    #[arg(long, default_value_t = 10.0)]
    pub connect_timeout: f64,

    /// Interval in milliseconds at which a gateway batches its due heartbeats (alarms are
    /// sent as soon as they are due).
    #[arg(long, default_value_t = 50)]
    pub tick_ms: u64,

    /// Seconds after which an alarm that no ack has named is sent again.
    #[arg(long, default_value_t = 5.0)]
    pub retransmit_secs: f64,

    /// Seconds to wait for outstanding acks after sending stops.
    #[arg(long, default_value_t = 5.0)]
    pub drain_secs: f64,

    /// storm: seconds into the schedule at which the house fire and the burst begin.
    #[arg(long, default_value_t = 2.0)]
    pub storm_at: f64,

    /// storm: length of the district-wide burst in seconds.
    #[arg(long, default_value_t = 10.0)]
    pub storm_secs: f64,

    /// storm: alarms per second of the burst, on random points of every simulated gateway
    /// (10 s at 1000/s = 10,000 alarms).
    #[arg(long, default_value_t = 1000.0)]
    pub storm_rate: f64,

    /// storm: seconds over which the fire spreads to the other houses of the first house's
    /// gateway, and then again to the rest of its village (each house's detectors all
    /// alarm within 3 s of its ignition). Events that would fall after --duration are not
    /// sent.
    #[arg(long, default_value_t = 10.0)]
    pub fire_spread_secs: f64,

    /// outage: seconds into the schedule at which the gateways drop their connections.
    #[arg(long, default_value_t = 3.0)]
    pub outage_at: f64,

    /// outage: seconds the outage lasts; reconnect attempts fail until then.
    #[arg(long, default_value_t = 5.0)]
    pub outage_secs: f64,

    /// outage: share of the gateways that go down (0..1).
    #[arg(long, default_value_t = 0.2)]
    pub outage_share: f64,

    /// nuisance: kitchen/studio smoke alarms per second, each on a point of a house not
    /// used before in the run, each cleared 2-10 s later (pairs whose clear would fall
    /// after --duration are not sent). Background alarms avoid those houses.
    #[arg(long, default_value_t = 2.0)]
    pub nuisance_rate: f64,

    /// bad: share of the gateways that also send bad input (0..1).
    #[arg(long, default_value_t = 0.1)]
    pub bad_share: f64,

    /// bad: bad publishes per second of each bad gateway, cycling through malformed
    /// protobuf, oversize payload (> 64 KiB), foreign-point alarms, batch naming another
    /// gateway and publish on another gateway's topic (the engine writes at most 20
    /// dead letters per gateway per second).
    #[arg(long, default_value_t = 2.0)]
    pub bad_rate: f64,

    /// How a batch counts as acked: `app` (firewatch's UplinkAck, alarms durable) or
    /// `puback` (the QoS-1 PUBACK, for a plain MQTT broker such as Mosquitto; not with
    /// --scenario bad).
    #[arg(long, value_enum, default_value_t = AckMode::App)]
    pub ack: AckMode,

    /// Name of the system under test, put in the report (e.g. firewatch, mosquitto,
    /// mosquitto+bridge).
    #[arg(long, default_value = "firewatch")]
    pub label: String,

    /// Observe the output on the same MQTT broker: a subscriber on fw/v1/gw/+/up (QoS 1)
    /// counts each sent alarm's arrival, duplicates and latency from its intended send
    /// time (for a plain broker such as Mosquitto; firewatch refuses that subscription).
    #[arg(long)]
    pub observe_mqtt: bool,

    /// Observe the output on Kafka: bootstrap servers of a consumer on --kafka-topic that
    /// counts each sent alarm's arrival, duplicates and latency from its intended send
    /// time. The consumer starts at the topic's end before the schedule begins.
    #[arg(long)]
    pub kafka_brokers: Option<String>,

    /// Kafka topic to observe (with --kafka-brokers).
    #[arg(long, default_value = "fw.alarms")]
    pub kafka_topic: String,

    /// How the --kafka-topic values are decoded: `alarm-record` (the engine's Kafka sink)
    /// or `uplink-batch` (a bridge forwarding the MQTT payloads).
    #[arg(long, value_enum, default_value_t = KafkaValue::AlarmRecord)]
    pub kafka_value: KafkaValue,

    /// Engine log directory (`{data_dir}/log`): after the run, read `fw.alarms` there and
    /// check that every sent alarm was written exactly once; also count fw.incidents
    /// nuisance closures (nuisance) and fw.deadletter records by reason (bad).
    #[arg(long)]
    pub log_dir: Option<PathBuf>,

    /// Process id of the engine: report its RSS and CPU time over the run from /proc.
    #[arg(long)]
    pub engine_pid: Option<u32>,

    /// The engine's Prometheus endpoint, e.g. http://127.0.0.1:9900/metrics: report its
    /// process RSS and CPU, shed heartbeats, lost broker messages and dead-letter rejects
    /// over the run (scraped every second).
    #[arg(long)]
    pub metrics_url: Option<String>,

    /// Write the report as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,

    /// Write a Markdown summary (tables to paste into BENCHMARKS.md) to this file.
    #[arg(long)]
    pub markdown: Option<PathBuf>,

    /// Write an SVG plot of throughput and alarm latency over time to this file.
    #[arg(long)]
    pub plot: Option<PathBuf>,

    /// No progress bar (it is shown only when stderr is a terminal anyway).
    #[arg(long)]
    pub no_progress: bool,

    /// Seed of the random choices (alarm points, kinds, phases, scenario targets);
    /// default: from the clock.
    #[arg(long)]
    pub seed: Option<u64>,
}

impl Args {
    /// Parses options from strings (the first is the program name), as the command line.
    pub fn try_parse_strs<I, T>(args: I) -> Result<Args, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        <Args as Parser>::try_parse_from(args)
    }

    /// Rejects option values the run cannot work with.
    pub fn validate(&self) -> anyhow::Result<()> {
        let nonneg = |v: f64| v >= 0.0 && v.is_finite();
        let share = |v: f64| (0.0..=1.0).contains(&v);
        anyhow::ensure!(self.batch >= 1, "--batch must be at least 1");
        anyhow::ensure!(
            self.batch <= 1000,
            "--batch must be at most 1000 (mqtt.max_events_per_batch)"
        );
        anyhow::ensure!(nonneg(self.rate), "--rate must be >= 0");
        anyhow::ensure!(nonneg(self.alarm_rate), "--alarm-rate must be >= 0");
        anyhow::ensure!(
            self.duration > 0.0 && self.duration.is_finite(),
            "--duration must be > 0"
        );
        anyhow::ensure!(nonneg(self.warmup), "--warmup must be >= 0");
        anyhow::ensure!(
            self.warmup < self.duration,
            "--warmup must be shorter than --duration"
        );
        anyhow::ensure!(self.connect_rate > 0.0, "--connect-rate must be > 0");
        anyhow::ensure!(
            nonneg(self.connect_timeout),
            "--connect-timeout must be >= 0"
        );
        anyhow::ensure!(nonneg(self.drain_secs), "--drain-secs must be >= 0");
        anyhow::ensure!(
            self.retransmit_secs > 0.0 && self.retransmit_secs.is_finite(),
            "--retransmit-secs must be > 0"
        );
        anyhow::ensure!(self.tick_ms >= 1, "--tick-ms must be at least 1");
        anyhow::ensure!(nonneg(self.storm_at), "--storm-at must be >= 0");
        anyhow::ensure!(nonneg(self.storm_secs), "--storm-secs must be >= 0");
        anyhow::ensure!(nonneg(self.storm_rate), "--storm-rate must be >= 0");
        anyhow::ensure!(
            nonneg(self.fire_spread_secs),
            "--fire-spread-secs must be >= 0"
        );
        anyhow::ensure!(nonneg(self.outage_at), "--outage-at must be >= 0");
        anyhow::ensure!(nonneg(self.outage_secs), "--outage-secs must be >= 0");
        anyhow::ensure!(share(self.outage_share), "--outage-share must be in 0..1");
        anyhow::ensure!(nonneg(self.nuisance_rate), "--nuisance-rate must be >= 0");
        anyhow::ensure!(share(self.bad_share), "--bad-share must be in 0..1");
        anyhow::ensure!(nonneg(self.bad_rate), "--bad-rate must be >= 0");
        anyhow::ensure!(
            !(self.ack == AckMode::Puback && self.scenario == Scenario::Bad),
            "--ack puback cannot judge bad input (a plain broker accepts everything)"
        );
        let observers = usize::from(self.log_dir.is_some())
            + usize::from(self.observe_mqtt)
            + usize::from(self.kafka_brokers.is_some());
        anyhow::ensure!(
            observers <= 1,
            "choose one of --log-dir, --observe-mqtt and --kafka-brokers"
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_help_builds() {
        let a = Args::try_parse_strs(["loadgen"]).unwrap();
        a.validate().unwrap();
        assert_eq!(a.scenario, Scenario::Steady);
        use clap::CommandFactory;
        Args::command().debug_assert();
        let a = Args::try_parse_strs(["loadgen", "--scenario", "bad", "--bad-share", "2"]).unwrap();
        assert!(a.validate().is_err());
    }
}
