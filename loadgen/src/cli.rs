//! Command-line options of `loadgen`.

use clap::Parser;
use std::path::PathBuf;

/// Simulated gateways and detectors that drive a firewatch engine over MQTT and measure it.
///
/// Every selected gateway connects with its own MQTT session (username and client id = the
/// gateway id), publishes protobuf `UplinkBatch`es on an open-loop schedule and waits for
/// the engine's `UplinkAck`s. Alarm latency is measured from each alarm's intended send time
/// to the receipt of the first ack that names it (coordinated-omission safe).
#[derive(Debug, Clone, Parser)]
#[command(name = "loadgen", version)]
pub struct Args {
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

    /// Total heartbeat rate in events per second, split evenly over the gateways.
    #[arg(long, default_value_t = 1000.0)]
    pub rate: f64,

    /// Total alarm rate in alarms per second, split evenly over the gateways.
    #[arg(long, default_value_t = 10.0)]
    pub alarm_rate: f64,

    /// Most events in one published batch.
    #[arg(long, default_value_t = 50)]
    pub batch: usize,

    /// Seconds of sending (the schedule starts once the gateways are connected).
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,

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

    /// Engine log directory (`{data_dir}/log`): after the run, read `fw.alarms` there and
    /// check that every sent alarm was written exactly once.
    #[arg(long)]
    pub log_dir: Option<PathBuf>,

    /// Process id of the engine: report its RSS and CPU time over the run.
    #[arg(long)]
    pub engine_pid: Option<u32>,

    /// Also write the report as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,

    /// Seed of the random choices (alarm points, kinds, phases); default: from the clock.
    #[arg(long)]
    pub seed: Option<u64>,
}

impl Args {
    /// Rejects option values the run cannot work with.
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(self.batch >= 1, "--batch must be at least 1");
        anyhow::ensure!(
            self.rate >= 0.0 && self.rate.is_finite(),
            "--rate must be >= 0"
        );
        anyhow::ensure!(
            self.alarm_rate >= 0.0 && self.alarm_rate.is_finite(),
            "--alarm-rate must be >= 0"
        );
        anyhow::ensure!(
            self.duration > 0.0 && self.duration.is_finite(),
            "--duration must be > 0"
        );
        anyhow::ensure!(self.connect_rate > 0.0, "--connect-rate must be > 0");
        anyhow::ensure!(
            self.connect_timeout >= 0.0,
            "--connect-timeout must be >= 0"
        );
        anyhow::ensure!(self.drain_secs >= 0.0, "--drain-secs must be >= 0");
        anyhow::ensure!(self.retransmit_secs > 0.0, "--retransmit-secs must be > 0");
        anyhow::ensure!(self.tick_ms >= 1, "--tick-ms must be at least 1");
        Ok(())
    }
}
