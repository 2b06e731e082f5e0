//! `loadgen`: simulated gateways and detectors that drive a firewatch engine over MQTT.
//!
//! Phases: connect the gateways (paced at `--connect-rate`), run the open-loop schedule for
//! `--duration` seconds, drain outstanding acks for up to `--drain-secs`, then optionally
//! check `fw.alarms` (`--log-dir`) and report. Exit code 1 when a sent alarm was never
//! acked, was rejected, or is missing from the log, when a due alarm was never sent, or
//! when a gateway never connected.

mod cli;
mod engine;
mod link;
mod logcheck;
mod plan;
mod report;
mod sender;

use anyhow::Context;
use clap::Parser;
use cli::Args;
use firewatch::registry::Registry;
use link::{Link, LinkConfig};
use report::{new_histogram, Counters, LatencySummary, Report};
use sender::{GatewayResult, Schedule};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// How long the poll tasks get to send DISCONNECT at the end.
const DISCONNECT_GRACE: Duration = Duration::from_secs(2);
/// How long the log check keeps following `fw.alarms` for missing alarms.
const LOG_WAIT: Duration = Duration::from_secs(3);

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
    match runtime.block_on(run(args)) {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => std::process::ExitCode::FAILURE,
        Err(e) => {
            eprintln!("loadgen: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// The whole run; `Ok(true)` when it passed.
async fn run(args: Args) -> anyhow::Result<bool> {
    args.validate()?;
    let registry = Registry::load(&args.registry)
        .with_context(|| format!("loading registry {}", args.registry.display()))?;
    let plans = plan::select(&registry, args.gateways, args.points);
    anyhow::ensure!(
        !plans.is_empty(),
        "no gateway with points selected from {}",
        args.registry.display()
    );
    drop(registry);
    let gateways = plans.len();
    let points: usize = plans.iter().map(|p| p.points.len()).sum();
    let seed = args
        .seed
        .unwrap_or_else(|| firewatch::clock::unix_ms() as u64);
    eprintln!(
        "loadgen: {gateways} gateways, {points} points -> {}:{}; {} heartbeats/s + {} alarms/s for {} s",
        args.host, args.port, args.rate, args.alarm_rate, args.duration
    );

    let probe = args
        .engine_pid
        .map(engine::EngineProbe::start)
        .transpose()?;
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                eprintln!("loadgen: interrupted; stopping the schedule and draining");
                stop.store(true, Ordering::Relaxed);
            }
        });
    }

    // Connect phase.
    let cfg = LinkConfig {
        host: args.host.clone(),
        port: args.port,
        secret: args.secret.clone(),
    };
    let connected = Arc::new(AtomicUsize::new(0));
    let t0 = Instant::now();
    let mut links: Vec<Link> = Vec::with_capacity(gateways);
    let mut pollers = Vec::with_capacity(gateways);
    for (i, p) in plans.iter().enumerate() {
        tokio::time::sleep_until(t0 + Duration::from_secs_f64(i as f64 / args.connect_rate)).await;
        let (link, poller) = link::spawn(&p.id, &cfg, connected.clone());
        links.push(link);
        pollers.push(poller);
    }
    let connect_deadline =
        t0 + Duration::from_secs_f64(gateways as f64 / args.connect_rate + args.connect_timeout);
    while connected.load(Ordering::Acquire) < gateways
        && Instant::now() < connect_deadline
        && !stop.load(Ordering::Relaxed)
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let connect_secs = t0.elapsed().as_secs_f64();
    eprintln!(
        "loadgen: {} of {gateways} gateways connected in {connect_secs:.2} s; sending",
        connected.load(Ordering::Acquire)
    );

    // Sending and draining.
    let start = Instant::now() + Duration::from_millis(100);
    let sched = Arc::new(Schedule {
        start,
        wall_start_ms: firewatch::clock::unix_ms() + 100,
        duration: Duration::from_secs_f64(args.duration),
        drain: Duration::from_secs_f64(args.drain_secs),
        hb_rate: args.rate / gateways as f64,
        alarm_rate: args.alarm_rate / gateways as f64,
        batch: args.batch,
        tick: Duration::from_millis(args.tick_ms),
        retransmit_after: Duration::from_secs_f64(args.retransmit_secs),
        // Distinct per run (10 ms clock, wrapping), so that a rerun against the same engine
        // is not deduplicated against the previous run's (point_id, device_seq) pairs.
        seq_base: (firewatch::clock::unix_ms() / 10) as u32,
    });
    let mut states = Vec::with_capacity(gateways);
    let mut senders = Vec::with_capacity(gateways);
    for (i, (p, link)) in plans.into_iter().zip(links).enumerate() {
        states.push(link.state.clone());
        let gw_seed = seed ^ (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        senders.push(tokio::spawn(sender::run(
            p,
            link,
            sched.clone(),
            stop.clone(),
            gw_seed,
        )));
    }
    let mut results: Vec<GatewayResult> = Vec::with_capacity(gateways);
    for s in senders {
        results.push(s.await.context("a gateway sender task failed")?);
    }
    let grace = Instant::now() + DISCONNECT_GRACE;
    for mut p in pollers {
        if tokio::time::timeout_at(grace, &mut p).await.is_err() {
            p.abort();
        }
    }

    // Summaries.
    let mut counters = Counters::default();
    let mut latency = new_histogram();
    let mut rtt = new_histogram();
    let mut sent_alarms = Vec::new();
    let mut last_publish: Option<Instant> = None;
    for r in &results {
        counters.add(&r.counters);
        latency
            .add(&r.latency)
            .context("merging latency histograms")?;
        rtt.add(&r.rtt).context("merging rtt histograms")?;
        sent_alarms.extend_from_slice(&r.sent_alarms);
        last_publish = last_publish.max(r.last_publish);
    }
    let send_secs = last_publish.map_or(0.0, |t| t.saturating_duration_since(start).as_secs_f64());
    let events_sent = counters.heartbeats_sent + counters.alarms_sent;
    let engine = probe.and_then(engine::EngineProbe::finish);
    if args.engine_pid.is_some() && engine.is_none() {
        eprintln!("loadgen: the engine process is gone; no resource figures");
    }
    let log = match args.log_dir.clone() {
        Some(dir) => Some(
            tokio::task::spawn_blocking(move || logcheck::check(&dir, &sent_alarms, LOG_WAIT))
                .await
                .context("log check task failed")??,
        ),
        None => None,
    };
    let mut report = Report {
        gateways,
        gateways_connected: states
            .iter()
            .filter(|s| s.ever_connected.load(Ordering::Acquire))
            .count(),
        points,
        connection_errors: states
            .iter()
            .map(|s| s.connection_errors.load(Ordering::Relaxed))
            .sum(),
        bad_ack_payloads: states
            .iter()
            .map(|s| s.bad_acks.load(Ordering::Relaxed))
            .sum(),
        connect_secs,
        target_rate: args.rate,
        target_alarm_rate: args.alarm_rate,
        events_sent,
        counters,
        send_secs,
        achieved_rate: if send_secs > 0.0 {
            events_sent as f64 / send_secs
        } else {
            0.0
        },
        alarm_latency: LatencySummary::of(&latency),
        ack_rtt: LatencySummary::of(&rtt),
        log,
        engine,
        failures: Vec::new(),
    };
    report.judge();
    println!("loadgen report");
    print!("{}", report.table());
    if let Some(path) = &args.json {
        report.write_json(path)?;
    }
    Ok(report.failures.is_empty())
}
