//! Wiring and lifecycle: start order, the ingest thread, and shutdown order.
//!
//! Start: registry → credentials → embedded log (recovery) → sink thread → shard threads →
//! broker router and links → Kafka command consumer (kafka sink only) → ingest thread →
//! MQTT listeners → HTTP → ready.
//! Stop: not ready → MQTT listeners and connections dropped (no new input) → ingest drains
//! what the broker already holds → command consumer stops (drops its lane senders) → shard
//! lanes close and drain → sink drains, fsyncs (Kafka: delivers or spools) → exit.

use crate::auth::Credentials;
use crate::config::Config;
use crate::config::SinkKind;
use crate::eventlog::EventLog;
use crate::ingest::{broker, guard, Ingest};
use crate::pipeline::{self, aggregate::Coverage, snapshot, Router, Shard, ShardRules};
use crate::registry::Registry;
use crate::sink::{embedded::EmbeddedSink, kafka, DeadLetterTx};
use crate::telemetry::{self, names, Health};
use anyhow::Context;
use rumqttd::Notification;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// A running engine.
pub struct Engine {
    /// MQTT 3.1.1 address.
    pub mqtt_v4: Option<SocketAddr>,
    /// MQTT 5 address.
    pub mqtt_v5: Option<SocketAddr>,
    /// HTTP address (actual, after binding).
    pub http: SocketAddr,
    /// Readiness.
    pub health: Health,
    runtime: Option<tokio::runtime::Runtime>,
    http_shutdown: tokio::sync::watch::Sender<bool>,
    stop_ingest: Arc<AtomicBool>,
    presence: Arc<guard::Presence>,
    ingest: Option<JoinHandle<()>>,
    stop_commands: Arc<AtomicBool>,
    commands: Option<JoinHandle<()>>,
    shards: Vec<JoinHandle<()>>,
    sink: Option<JoinHandle<()>>,
}

/// Starts every part of the engine; returns once it is ready.
pub fn start(config: Config) -> anyhow::Result<Engine> {
    let t0 = Instant::now();
    let registry = Arc::new(
        Registry::load(&config.registry.path)
            .with_context(|| format!("loading registry {}", config.registry.path.display()))?,
    );
    let rules = Arc::new(ShardRules::new(&config.pipeline, &registry).map_err(anyhow::Error::msg)?);
    metrics::gauge!(names::REGISTRY_POINTS).set(registry.len() as f64);
    tracing::info!(
        points = registry.len(),
        gateways = registry.gateway_count(),
        houses = registry.house_count(),
        elapsed_ms = t0.elapsed().as_millis() as u64,
        "registry loaded"
    );
    let credentials = Credentials::load(&config.mqtt.credentials)?;
    tracing::info!(identities = credentials.len(), "credentials loaded");

    let log_dir = config.log_dir();
    let log = EventLog::open(&log_dir, config.sink.embedded.segment_bytes)
        .with_context(|| format!("opening embedded log {}", log_dir.display()))?;
    for r in log.recoveries() {
        if r.truncated_bytes > 0 {
            tracing::warn!(topic = %r.topic, truncated_bytes = r.truncated_bytes, "truncated torn log tail");
        }
    }

    // Restart safety: rebuild what the log knows, then load the point snapshots.
    let start_ms = crate::clock::unix_ms();
    let t1 = Instant::now();
    let restored = crate::restore::from_log(
        &log_dir,
        start_ms,
        config.pipeline.dedup_window.as_millis() as i64,
    )?;
    let saved = snapshot::load_all(&config.state_dir());
    tracing::info!(
        open_incidents = restored.incidents.len(),
        chains = restored.chains.len(),
        recent_alarms = restored.recent_alarms.len(),
        snapshot_points = saved.len(),
        scanned = restored.scanned,
        elapsed_ms = t1.elapsed().as_millis() as u64,
        "state restored"
    );

    let health = Health::default();
    let shards = config.pipeline.shard_count();
    let (sink_tx, sink_rx) = crossbeam_channel::bounded(shards * 64 + 1024);
    let deadletter = DeadLetterTx::new(
        sink_tx.clone(),
        config.mqtt.deadletter_per_gateway_per_sec,
        config.mqtt.deadletter_raw_bytes,
    );

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("firewatch-net")
        .enable_all()
        .build()?;

    let (presence_tx, presence_rx) = crossbeam_channel::bounded(65_536);
    let presence = Arc::new(guard::Presence::with_events(presence_tx));
    let shared = Arc::new(guard::GuardShared {
        credentials,
        deadletter: deadletter.clone(),
        presence: presence.clone(),
    });
    let links = broker::start(&config.mqtt, shared, runtime.handle())?;

    let sink_thread = std::thread::Builder::new().name("firewatch-sink".into());
    let sink = match config.sink.kind {
        SinkKind::Embedded => {
            let sink = EmbeddedSink::new(
                log,
                config.sink.embedded.fsync,
                config.sink.embedded.max_batch_records,
                sink_rx,
                Box::new(links.acks),
                health.clone(),
                shards,
            );
            sink_thread.spawn(move || {
                let log = sink.run();
                tracing::info!(
                    topics = log.topics().len(),
                    "embedded log flushed and synced"
                );
            })?
        }
        SinkKind::Kafka => {
            if config.kafka.create_topics {
                kafka::create_topics(&config.kafka)
                    .with_context(|| format!("creating topics on {}", config.kafka.brokers))?;
            }
            let refused_dir = config.data_dir.join("kafka-refused");
            let refused = EventLog::open(&refused_dir, config.sink.embedded.segment_bytes)
                .with_context(|| format!("opening {}", refused_dir.display()))?;
            let local = kafka::LocalStores {
                state_log: log,
                log_dir: log_dir.clone(),
                refused,
                spool_dir: config.kafka_spool_dir(),
            };
            let sink = kafka::KafkaSink::new(
                &config.kafka,
                sink_rx,
                Box::new(links.acks),
                health.clone(),
                shards,
                local,
            )?;
            tracing::info!(brokers = %config.kafka.brokers, "kafka sink ready");
            sink_thread.spawn(move || {
                sink.run();
                tracing::info!("kafka sink flushed");
            })?
        }
    };

    let (router, inputs) = Router::new(&registry, shards, config.pipeline.channel_capacity);
    let coverage = Arc::new(Coverage::new(&registry));
    let globals: Vec<Vec<u32>> = inputs.iter().map(|i| i.globals.clone()).collect();
    let built = crate::restore::build_shards(
        &registry, &rules, &coverage, &router, &globals, restored, &saved, start_ms,
    );
    drop(saved);

    let mut shard_threads = Vec::with_capacity(shards);
    for (id, (input, shard)) in inputs.into_iter().zip(built).enumerate() {
        let tx = sink_tx.clone();
        let tick = config.pipeline.tick_interval;
        let every = config.pipeline.snapshot_interval;
        let dir = config.state_dir();
        shard_threads.push(
            std::thread::Builder::new()
                .name(format!("firewatch-shard-{id}"))
                .spawn(move || {
                    let save = |s: &Shard| {
                        let bytes = snapshot::encode(s.snapshot());
                        if let Err(e) = snapshot::write(&dir, id, &bytes) {
                            tracing::error!(shard = id, error = %e, "snapshot failed");
                        }
                    };
                    let shard = pipeline::run_shard(id, shard, input, tx, tick, every, save);
                    save(&shard);
                })?,
        );
    }

    // The Kafka station-command consumer feeds the shards' alarm lanes directly.
    let stop_commands = Arc::new(AtomicBool::new(false));
    let commands = if config.sink.kind == SinkKind::Kafka && config.kafka.consume_commands {
        let consumer = kafka::commands::CommandConsumer::new(
            &config.kafka,
            &registry,
            router.priority_senders(),
            deadletter.clone(),
            stop_commands.clone(),
        )?;
        Some(
            std::thread::Builder::new()
                .name("firewatch-commands".into())
                .spawn(move || consumer.run())?,
        )
    } else {
        None
    };

    let ingest = Ingest::new(
        registry.clone(),
        router,
        deadletter,
        sink_tx,
        config.mqtt.max_payload_bytes,
        config.mqtt.max_events_per_batch,
    );
    let stop_ingest = Arc::new(AtomicBool::new(false));
    let stop = stop_ingest.clone();
    let (uplink_rx, uplink_tx) = (links.uplink_rx, links.uplink_tx);
    let acks_rx = links.acks_rx;
    let ingest = std::thread::Builder::new()
        .name("firewatch-ingest".into())
        .spawn(move || run_ingest(ingest, uplink_rx, uplink_tx, acks_rx, presence_rx, stop))?;

    let (http_shutdown, http_rx) = tokio::sync::watch::channel(false);
    let (http, http_fut) = runtime.block_on(telemetry::serve_http(
        config.http.listen,
        health.clone(),
        http_rx,
    ))?;
    runtime.spawn(http_fut);

    health.set_ready(true);
    tracing::info!(
        mqtt_v4 = ?config.mqtt.listen_v4,
        mqtt_v5 = ?config.mqtt.listen_v5,
        http = %http,
        log_dir = %log_dir.display(),
        shards,
        startup_ms = t0.elapsed().as_millis() as u64,
        "firewatch ready"
    );
    Ok(Engine {
        mqtt_v4: config.mqtt.listen_v4,
        mqtt_v5: config.mqtt.listen_v5,
        http,
        health,
        runtime: Some(runtime),
        http_shutdown,
        stop_ingest,
        presence,
        ingest: Some(ingest),
        stop_commands,
        commands,
        shards: shard_threads,
        sink: Some(sink),
    })
}

/// The ingest thread: reads the uplink link, answers `Unschedule`, and feeds the router.
fn run_ingest(
    mut ingest: Ingest,
    mut rx: rumqttd::local::LinkRx,
    _tx: rumqttd::local::LinkTx,
    _acks_rx: rumqttd::local::LinkRx,
    presence: crossbeam_channel::Receiver<(Arc<str>, bool)>,
    stop: Arc<AtomicBool>,
) {
    let mut idle_since: Option<Instant> = None;
    loop {
        while let Ok((who, up)) = presence.try_recv() {
            ingest.on_presence(&who, up, crate::clock::unix_ms());
        }
        let deadline = Instant::now() + Duration::from_millis(50);
        match rx.recv_deadline(deadline) {
            Ok(Some(Notification::Forward(f))) => {
                idle_since = None;
                if let Some((_, offset)) = f.cursor {
                    ingest.observe_offset(offset);
                }
                let received = Instant::now();
                ingest.handle(
                    &f.publish.topic,
                    f.publish.payload,
                    received,
                    crate::clock::unix_ms(),
                );
            }
            Ok(Some(Notification::Unschedule)) => {
                if let Err(e) = rx.ready() {
                    tracing::error!(error = %e, "cannot reschedule the uplink link");
                }
            }
            Ok(Some(_)) | Ok(None) => {}
            Err(rumqttd::local::LinkError::RecvTimeout(flume::RecvTimeoutError::Timeout)) => {
                ingest.idle();
                if stop.load(Ordering::SeqCst) {
                    // Drain: stop once the broker has had nothing for us for 200 ms.
                    let since = *idle_since.get_or_insert_with(Instant::now);
                    if since.elapsed() >= Duration::from_millis(200) {
                        break;
                    }
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "uplink link failed; ingest stops");
                break;
            }
        }
    }
    // Dropping `ingest` closes the shard lanes.
}

impl Engine {
    /// Stops in order and waits until every accepted record is durable.
    pub fn shutdown(mut self) -> anyhow::Result<()> {
        self.health.set_ready(false);
        tracing::info!("shutting down: closing listeners");
        // Closing every connection now is a shutdown, not a gateway outage.
        self.presence.close();
        let _ = self.http_shutdown.send(true);
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_timeout(Duration::from_secs(2));
        }
        self.stop_ingest.store(true, Ordering::SeqCst);
        if let Some(h) = self.ingest.take() {
            h.join()
                .map_err(|_| anyhow::anyhow!("ingest thread panicked"))?;
        }
        // The command consumer holds lane senders: it must go before the shards can stop.
        self.stop_commands.store(true, Ordering::SeqCst);
        if let Some(h) = self.commands.take() {
            h.join()
                .map_err(|_| anyhow::anyhow!("command consumer thread panicked"))?;
        }
        for h in self.shards.drain(..) {
            h.join()
                .map_err(|_| anyhow::anyhow!("shard thread panicked"))?;
        }
        if let Some(h) = self.sink.take() {
            h.join()
                .map_err(|_| anyhow::anyhow!("sink thread panicked"))?;
        }
        tracing::info!("firewatch stopped");
        Ok(())
    }
}
