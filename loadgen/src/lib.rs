//! `loadgen`: simulated gateways and detectors that drive a firewatch engine over MQTT, as a
//! library (the `loadgen` binary and the integration tests use it).
//!
//! Phases of [`run`]: connect the gateways (paced at `--connect-rate`), run the open-loop
//! schedule of the scenario for `--duration` seconds, drain outstanding acks for up to
//! `--drain-secs`, then optionally check the engine's log (`--log-dir`) and report. The
//! report's `failures` are empty when no sent alarm was lost: every one acked (none
//! rejected), found in `fw.alarms` with `--log-dir`, every due alarm sent, every gateway
//! connected (and reconnected after an outage), and no bad input accepted.

pub mod cli;
pub mod engine;
pub mod link;
pub mod logcheck;
pub mod metrics;
pub mod observe;
pub mod output;
pub mod plan;
pub mod plot;
pub mod report;
pub mod scenario;
pub mod sender;
pub mod timeline;

pub use cli::{AckMode, Args, KafkaValue, Scenario};
pub use report::Report;

use anyhow::Context;
use firewatch::registry::Registry;
use link::{Link, LinkConfig};
use rand::rngs::StdRng;
use rand::SeedableRng;
use report::{
    new_histogram, BadCounters, BadReport, Counters, LatencySummary, NuisanceReport, OutageReport,
    SecondRow,
};
use scenario::SOURCES;
use sender::{AlarmSample, GatewayResult, Schedule};
use std::collections::{BTreeMap, HashSet};
use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use timeline::{Field, Timeline};
use tokio::time::Instant;

/// How long the poll tasks get to send DISCONNECT at the end.
const DISCONNECT_GRACE: Duration = Duration::from_secs(2);
/// How long the log check keeps following `fw.alarms` for missing alarms.
const LOG_WAIT: Duration = Duration::from_secs(3);
/// Timeline slots beyond the schedule and drain (reconnects, late acks).
const TIMELINE_SLACK_SECS: f64 = 5.0;

/// [`run`] on a runtime of its own, without a stop signal.
pub fn run_blocking(args: Args) -> anyhow::Result<Report> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(run(args, Arc::new(AtomicBool::new(false))))
}

/// The whole run. `stop` ends the schedule early (then the run drains and reports). Writes
/// the files of `--json`, `--markdown` and `--plot`.
pub async fn run(args: Args, stop: Arc<AtomicBool>) -> anyhow::Result<Report> {
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
    let mut rng = StdRng::seed_from_u64(seed);
    let (extras, plan_info) = scenario::build(&args, &plans, &mut rng)?;
    let target_rate = if args.heartbeat_from_class {
        plans
            .iter()
            .flat_map(|p| p.points.iter())
            .map(|p| 1.0 / p.hb_interval_secs)
            .sum()
    } else {
        args.rate
    };
    eprintln!(
        "loadgen: scenario {}: {gateways} gateways, {points} points -> {}:{}; {target_rate:.1} heartbeats/s{} + {} alarms/s for {} s (seed {seed})",
        args.scenario.name(),
        args.host,
        args.port,
        if args.heartbeat_from_class { " (device classes)" } else { "" },
        args.alarm_rate,
        args.duration
    );

    let self_probe = engine::EngineProbe::start(std::process::id()).ok();
    let probe = args
        .engine_pid
        .map(engine::EngineProbe::start)
        .transpose()?;
    if let Some(url) = &args.metrics_url {
        // Fail before connecting anything when the endpoint is wrong.
        metrics::get(&metrics::parse_url(url)?)
            .await
            .with_context(|| format!("--metrics-url {url}"))?;
    }

    // Connect phase.
    let cfg = LinkConfig {
        host: args.host.clone(),
        port: args.port,
        secret: args.secret.clone(),
        ack: args.ack,
    };
    let connected = Arc::new(AtomicUsize::new(0));
    let t0 = Instant::now();
    let mut links: Vec<(Link, tokio::task::JoinHandle<()>)> = Vec::with_capacity(gateways);
    for (i, p) in plans.iter().enumerate() {
        tokio::time::sleep_until(t0 + Duration::from_secs_f64(i as f64 / args.connect_rate)).await;
        links.push(link::spawn(&p.id, &cfg, connected.clone()));
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
        "loadgen: {} of {gateways} gateways connected and subscribed in {connect_secs:.2} s; sending",
        connected.load(Ordering::Acquire)
    );

    // The output observer is in place before the first event is due.
    let observer = if args.observe_mqtt {
        Some(observe::Observer::mqtt(&cfg).await?)
    } else if let Some(brokers) = args.kafka_brokers.clone() {
        let (topic, value) = (args.kafka_topic.clone(), args.kafka_value);
        Some(
            tokio::task::spawn_blocking(move || observe::Observer::kafka(&brokers, &topic, value))
                .await
                .context("kafka observer task failed")??,
        )
    } else {
        None
    };

    // Sending and draining.
    let start = Instant::now() + Duration::from_millis(100);
    let wall_start_ms = firewatch::clock::unix_ms() + 100;
    let slots = (args.duration + args.drain_secs + TIMELINE_SLACK_SECS).ceil() as usize;
    let timeline = Arc::new(Timeline::new(start, slots));
    let mprobe = match &args.metrics_url {
        Some(url) => Some(metrics::MetricsProbe::start(url, start).await?),
        None => None,
    };
    let hists = Arc::new(sender::hists::RunHists::new());
    let sched = Arc::new(Schedule {
        start,
        wall_start_ms,
        duration: Duration::from_secs_f64(args.duration),
        drain: Duration::from_secs_f64(args.drain_secs),
        warmup: Duration::from_secs_f64(args.warmup),
        hb_rate: args.rate / gateways as f64,
        hb_from_class: args.heartbeat_from_class,
        alarm_rate: args.alarm_rate / gateways as f64,
        bad_rate: args.bad_rate,
        batch: args.batch,
        tick: Duration::from_millis(args.tick_ms),
        retransmit_after: Duration::from_secs_f64(args.retransmit_secs),
        // Distinct per run (10 ms clock, wrapping), so that a rerun against the same engine
        // is not deduplicated against the previous run's (point_id, device_seq) pairs.
        seq_base: (firewatch::clock::unix_ms() / 10) as u32,
        timeline: timeline.clone(),
        hists: hists.clone(),
        link: cfg.clone(),
    });
    let bad_ids: HashSet<String> = plans
        .iter()
        .zip(&extras)
        .filter(|(_, e)| e.bad.is_some())
        .map(|(p, _)| p.id.clone())
        .collect();
    let mut senders = Vec::with_capacity(gateways);
    for (i, ((p, ex), first)) in plans.into_iter().zip(extras).zip(links).enumerate() {
        let gw_seed = seed ^ (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        senders.push(tokio::spawn(sender::run(
            p,
            ex,
            first,
            sched.clone(),
            stop.clone(),
            gw_seed,
        )));
    }
    let progress = (!args.no_progress && std::io::stderr().is_terminal())
        .then(|| spawn_progress(timeline.clone(), start, args.duration));
    let mut results: Vec<GatewayResult> = Vec::with_capacity(gateways);
    for s in senders {
        results.push(s.await.context("a gateway sender task failed")?);
    }
    if let Some((bar, task)) = progress {
        task.abort();
        bar.finish_and_clear();
    }
    let grace = Instant::now() + DISCONNECT_GRACE;
    for r in &mut results {
        if let Some(mut p) = r.poller.take() {
            if tokio::time::timeout_at(grace, &mut p).await.is_err() {
                p.abort();
            }
        }
    }

    // Summaries.
    let mut counters = Counters::default();
    let mut badc = BadCounters::default();
    // Every sender has finished (and so flushed its recorder): the run's histograms.
    let mut all = hists.snapshot();
    let transit = all.pop().context("transit histogram")?;
    let rtt = all.pop().context("rtt histogram")?;
    let hb_latency = all.pop().context("heartbeat histogram")?;
    let by_source = all;
    let mut sent_alarms = Vec::new();
    let mut samples: Vec<AlarmSample> = Vec::new();
    let mut last_publish: Option<Instant> = None;
    let mut nuisance_points: HashSet<u64> = HashSet::new();
    let (mut nuisance_sent, mut nuisance_acked) = (0u64, 0u64);
    let (mut gw_connected, mut conn_errors, mut bad_acks) = (0usize, 0u64, 0u64);
    let (mut down, mut reconnected, mut attempts) = (0usize, 0usize, 0u64);
    let mut reconnect_secs: Vec<f64> = Vec::new();
    for r in &results {
        counters.add(&r.counters);
        badc.add(&r.bad);
        sent_alarms.extend_from_slice(&r.sent_alarms);
        samples.extend_from_slice(&r.samples);
        last_publish = last_publish.max(r.last_publish);
        nuisance_points.extend(r.nuisance_cleared.iter().copied());
        nuisance_sent += r.nuisance_sent;
        nuisance_acked += r.nuisance_acked;
        gw_connected += usize::from(r.ever_connected);
        conn_errors += r.connection_errors;
        bad_acks += r.bad_acks;
        if r.outage.went_down {
            down += 1;
            attempts += r.outage.attempts;
            if let Some(s) = r.outage.reconnect_secs {
                reconnected += 1;
                reconnect_secs.push(s);
            }
        }
    }
    let mut latency = new_histogram();
    for h in &by_source {
        latency.add(h).context("merging latency histograms")?;
    }
    let send_secs = last_publish.map_or(0.0, |t| t.saturating_duration_since(start).as_secs_f64());
    let events_sent = counters.heartbeats_sent + counters.alarms_sent + counters.clears_sent;
    let engine = probe.and_then(engine::EngineProbe::finish);
    let loadgen_usage = self_probe.and_then(engine::EngineProbe::finish);
    if args.engine_pid.is_some() && engine.is_none() {
        eprintln!("loadgen: the engine process is gone; no resource figures");
    }
    let engine_metrics = match mprobe {
        Some(p) => {
            let m = p.finish().await;
            if m.is_none() {
                eprintln!("loadgen: the engine's /metrics did not answer at the end");
            }
            m
        }
        None => None,
    };

    let mut nuisance_incidents = None;
    let mut deadletters = None;
    let warm_from_ms = wall_start_ms + (args.warmup * 1000.0) as i64;
    let log = match (args.log_dir.clone(), observer) {
        (None, Some(obs)) => Some(
            obs.finish(&sent_alarms, LOG_WAIT, wall_start_ms, slots, warm_from_ms)
                .await,
        ),
        (Some(dir), _) => {
            let since = wall_start_ms - 100;
            let want_nuisance = args.scenario == Scenario::Nuisance;
            let want_dead = args.scenario == Scenario::Bad;
            let (log, nui, dead) = tokio::task::spawn_blocking(move || {
                let log = logcheck::check(
                    &dir,
                    &sent_alarms,
                    LOG_WAIT,
                    wall_start_ms,
                    slots,
                    warm_from_ms,
                )?;
                let nui = if want_nuisance {
                    let expect = nuisance_points.len() as u64;
                    Some(logcheck::count_nuisance(
                        &dir,
                        &nuisance_points,
                        since,
                        expect,
                        LOG_WAIT,
                    )?)
                } else {
                    None
                };
                let dead = if want_dead {
                    Some(logcheck::deadletters_by_reason(&dir, &bad_ids, since)?)
                } else {
                    None
                };
                anyhow::Ok((log, nui, dead))
            })
            .await
            .context("log check task failed")??;
            nuisance_incidents = nui;
            deadletters = dead;
            Some(log)
        }
        (None, None) => None,
    };

    let timeline_rows = rows(&timeline, &samples, log.as_ref());
    let alarm_latency_by_source: BTreeMap<String, LatencySummary> = SOURCES
        .iter()
        .zip(&by_source)
        .filter(|(_, h)| !h.is_empty())
        .map(|(s, h)| (s.name().to_string(), LatencySummary::of(h)))
        .collect();
    reconnect_secs.sort_by(f64::total_cmp);
    let mut report = Report {
        label: args.label.clone(),
        ack: args.ack,
        scenario: args.scenario,
        duration_secs: args.duration,
        warmup_secs: args.warmup,
        heartbeat_from_class: args.heartbeat_from_class,
        plan: plan_info.clone(),
        gateways,
        gateways_connected: gw_connected,
        points,
        connection_errors: conn_errors,
        bad_ack_payloads: bad_acks,
        connect_secs,
        target_rate,
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
        alarm_latency_by_source,
        heartbeat_latency: LatencySummary::of(&hb_latency),
        ack_rtt: LatencySummary::of(&rtt),
        ack_transit: LatencySummary::of(&transit),
        timeline: timeline_rows,
        log,
        engine,
        loadgen: loadgen_usage,
        engine_metrics,
        outage: (args.scenario == Scenario::Outage).then(|| OutageReport {
            gateways_down: down,
            gateways_reconnected: reconnected,
            reconnect_attempts: attempts,
            secs_to_all_reconnected: reconnect_secs.last().copied(),
            reconnect_p50_secs: reconnect_secs.get(reconnect_secs.len() / 2).copied(),
            batches_lost: counters.batches_lost,
        }),
        nuisance: (args.scenario == Scenario::Nuisance).then_some(NuisanceReport {
            alarms_sent: nuisance_sent,
            clears_sent: counters.clears_sent,
            alarms_acked: nuisance_acked,
            incidents_nuisance: nuisance_incidents,
        }),
        bad: (args.scenario == Scenario::Bad).then_some(BadReport {
            gateways: plan_info.bad_gateways,
            counters: badc,
            deadletter_by_reason: deadletters,
        }),
        failures: Vec::new(),
    };
    report.judge();
    if let Some(path) = &args.json {
        report.write_json(path)?;
    }
    if let Some(path) = &args.markdown {
        std::fs::write(path, output::markdown(&report))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(path) = &args.plot {
        plot::write_svg(&report, path).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(report)
}

/// The per-second rows: the shared counters, the log's observed alarms and the latency of
/// the alarms intended in each second.
fn rows(
    timeline: &Timeline,
    samples: &[AlarmSample],
    log: Option<&report::LogCheck>,
) -> Vec<SecondRow> {
    let snap = timeline.snapshot();
    let mut per_sec: Vec<Vec<u64>> = vec![Vec::new(); snap.len()];
    for s in samples {
        let i = ((s.at_ms / 1000) as usize).min(snap.len() - 1);
        per_sec[i].push(s.latency_us);
    }
    // Trailing seconds with nothing in them are left out.
    let used = snap
        .iter()
        .zip(&per_sec)
        .enumerate()
        .filter(|(i, (c, l))| {
            c.iter().any(|&v| v > 0)
                || !l.is_empty()
                || log.is_some_and(|g| g.observed_per_sec.get(*i).is_some_and(|&n| n > 0))
        })
        .map(|(i, _)| i + 1)
        .max()
        .unwrap_or(0);
    (0..used)
        .map(|i| {
            let c = &snap[i];
            let lat = &mut per_sec[i];
            lat.sort_unstable();
            let q = |p: f64| -> f64 {
                if lat.is_empty() {
                    0.0
                } else {
                    let idx = ((lat.len() as f64 * p).ceil() as usize).clamp(1, lat.len()) - 1;
                    lat[idx] as f64 / 1000.0
                }
            };
            SecondRow {
                t: i as u32,
                events_sent: c[Field::EventsSent as usize],
                alarms_sent: c[Field::AlarmsSent as usize],
                events_acked: c[Field::EventsAcked as usize],
                alarms_acked: c[Field::AlarmsAcked as usize],
                alarms_observed: log.map(|g| g.observed_per_sec.get(i).copied().unwrap_or(0)),
                retransmissions: c[Field::Retransmissions as usize],
                bad_sent: c[Field::BadSent as usize],
                bad_rejected: c[Field::BadRejected as usize],
                alarm_latency_n: lat.len() as u64,
                alarm_latency_p50_ms: q(0.5),
                alarm_latency_p99_ms: q(0.99),
                alarm_latency_max_ms: q(1.0),
            }
        })
        .collect()
}

/// A progress bar on stderr while the schedule runs (and drains), fed from the timeline.
fn spawn_progress(
    timeline: Arc<Timeline>,
    start: Instant,
    duration: f64,
) -> (indicatif::ProgressBar, tokio::task::JoinHandle<()>) {
    let total_ms = (duration * 1000.0) as u64;
    let bar = indicatif::ProgressBar::with_draw_target(
        Some(total_ms),
        indicatif::ProgressDrawTarget::stderr(),
    );
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{spinner} [{elapsed_precise}] {wide_bar} {percent:>3}% {msg}",
    ) {
        bar.set_style(style);
    }
    let b = bar.clone();
    let task = tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_millis(250));
        loop {
            every.tick().await;
            let t = timeline.totals();
            let elapsed = Instant::now().saturating_duration_since(start).as_millis() as u64;
            b.set_position(elapsed.min(total_ms));
            let phase = if elapsed >= total_ms {
                "draining; "
            } else {
                ""
            };
            b.set_message(format!(
                "{phase}sent {} ({} alarms), acked {} ({} alarms), {} retransmitted",
                t[Field::EventsSent as usize],
                t[Field::AlarmsSent as usize],
                t[Field::EventsAcked as usize],
                t[Field::AlarmsAcked as usize],
                t[Field::Retransmissions as usize]
            ));
        }
    });
    (bar, task)
}
