//! The `firewatch` command: `run`, `tail`, `registry generate`.

use clap::{Parser, Subcommand};
use firewatch::config::Config;
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "firewatch",
    version,
    about = "Alarm ingestion and event-stream engine for networked fire detectors"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the engine (embedded MQTT broker, pipeline, embedded log).
    Run {
        /// Config file; defaults apply when omitted. FIREWATCH__SECTION__KEY overrides.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Print a topic of the embedded log as JSON lines.
    Tail {
        /// Topic, e.g. fw.alarms.
        topic: String,
        /// Start at the first record (default: the last --last records).
        #[arg(long)]
        from_beginning: bool,
        /// Keep printing new records as they are written.
        #[arg(long)]
        follow: bool,
        /// Without --from-beginning: how many of the latest records to print first.
        #[arg(long, default_value_t = 10)]
        last: u64,
        /// Config file (to find the log directory).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Log directory (overrides the config).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Verify the hash chains of fw.insurance.timeline in the embedded log.
    VerifyChain {
        /// Config file (to find the log directory).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Log directory (overrides the config).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Registry tools.
    Registry {
        #[command(subcommand)]
        command: RegistryCommand,
    },
}

#[derive(Subcommand)]
enum RegistryCommand {
    /// Write a synthetic Yiwu-like city and its credentials file.
    Generate {
        /// Number of monitored points.
        #[arg(long)]
        points: usize,
        /// Registry CSV to write.
        #[arg(long)]
        out: PathBuf,
        /// Random seed.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Credentials file to write (default: next to --out, `credentials.csv`).
        #[arg(long)]
        credentials: Option<PathBuf>,
        /// Secret of every generated gateway and station (default: the dev secret).
        #[arg(long, default_value = firewatch::auth::DEV_SECRET)]
        secret: String,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Run { config } => {
            let config = Config::load(config.as_deref(), std::env::vars())?;
            firewatch::telemetry::init_tracing(&config.log);
            firewatch::telemetry::prometheus();
            let engine = firewatch::app::start(config)?;
            wait_for_signal()?;
            engine.shutdown()
        }
        Command::Tail {
            topic,
            from_beginning,
            follow,
            last,
            config,
            dir,
        } => {
            let dir = match dir {
                Some(d) => d,
                None => Config::load(config.as_deref(), std::env::vars())?.log_dir(),
            };
            let opts = firewatch::cli::TailOptions {
                dir,
                topic,
                from_beginning,
                last,
                follow,
            };
            let stdout = std::io::stdout();
            firewatch::cli::tail(&opts, &mut stdout.lock())?;
            Ok(())
        }
        Command::VerifyChain { config, dir } => {
            let dir = match dir {
                Some(d) => d,
                None => Config::load(config.as_deref(), std::env::vars())?.log_dir(),
            };
            let r = firewatch::cli::verify_chain(&dir)?;
            println!(
                "ok: {} records in {} policy chains verify",
                r.records, r.policies
            );
            Ok(())
        }
        Command::Registry {
            command:
                RegistryCommand::Generate {
                    points,
                    out,
                    seed,
                    credentials,
                    secret,
                },
        } => {
            let credentials = credentials.unwrap_or_else(|| out.with_file_name("credentials.csv"));
            let t = std::time::Instant::now();
            let reg = firewatch::cli::generate_registry(points, seed, &out, &credentials, &secret)?;
            eprintln!(
                "wrote {} points, {} gateways, {} houses to {} and credentials to {} in {:.2?}",
                reg.len(),
                reg.gateway_count(),
                reg.house_count(),
                out.display(),
                credentials.display(),
                t.elapsed()
            );
            Ok(())
        }
    }
}

fn wait_for_signal() -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => r?,
            _ = term.recv() => {}
        }
        tracing::info!("signal received");
        Ok::<_, anyhow::Error>(())
    })
}
