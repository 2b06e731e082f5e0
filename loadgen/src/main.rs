//! `loadgen`: simulated gateways and detectors that drive a firewatch engine over MQTT.
//! Exit code 1 when any sent alarm was lost (see the library's [`loadgen::run`]).

use clap::Parser;
use loadgen::Args;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("loadgen: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let stop = Arc::new(AtomicBool::new(false));
    let result = runtime.block_on(async {
        {
            let stop = stop.clone();
            tokio::spawn(async move {
                if tokio::signal::ctrl_c().await.is_ok() {
                    eprintln!("loadgen: interrupted; stopping the schedule and draining");
                    stop.store(true, Ordering::Relaxed);
                }
            });
        }
        loadgen::run(args, stop).await
    });
    match result {
        Ok(report) => {
            println!("loadgen report");
            print!("{}", report.table());
            if report.failures.is_empty() {
                std::process::ExitCode::SUCCESS
            } else {
                std::process::ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("loadgen: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
