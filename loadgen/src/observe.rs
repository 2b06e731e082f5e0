//! Live observers of the output, for systems whose output is not the engine's embedded log:
//! an MQTT subscriber on the uplink topics of a plain broker (`--observe-mqtt`, e.g.
//! Mosquitto, where "observed" means a subscriber received the publish) and a Kafka consumer
//! (`--kafka-brokers`: the engine's Kafka sink on fw.alarms, or a bridge's topic).
//!
//! Both record, per alarm (point_id, device_seq), how often it arrived and when it first
//! did; after the run [`Observer::finish`] turns that into the same [`LogCheck`] as the
//! embedded-log check, with the observation latency: arrival (wall clock) minus the alarm's
//! intended send time (its `device_time_ms`, so millisecond resolution).

use crate::cli::KafkaValue;
use crate::link::LinkConfig;
use crate::report::{new_histogram, LogCheck};
use firewatch_proto::{AlarmRecord, EventKind, UplinkBatch};
use prost::Message as _;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Uplink topics of every gateway.
pub const UPLINK_FILTER: &str = "fw/v1/gw/+/up";
/// How long an observer may take to be in place before the schedule starts.
const READY_TIMEOUT: Duration = Duration::from_secs(15);

/// First arrival of one alarm.
#[derive(Debug, Clone, Copy)]
struct Seen {
    count: u32,
    /// Arrival, Unix µs.
    first_us: i64,
    /// The alarm's intended send time, Unix ms.
    device_time_ms: i64,
}

#[derive(Default)]
struct Book {
    alarms: HashMap<(u64, u32), Seen>,
    records: u64,
}

/// What an observer saw so far, shared with its task.
#[derive(Default)]
struct Shared(Mutex<Book>);

impl Shared {
    fn record(&self, key: (u64, u32), device_time_ms: i64, now_us: i64) {
        let mut s = self.0.lock().unwrap_or_else(|e| e.into_inner());
        s.alarms
            .entry(key)
            .and_modify(|e| e.count += 1)
            .or_insert(Seen {
                count: 1,
                first_us: now_us,
                device_time_ms,
            });
    }

    fn record_message(&self) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).records += 1;
    }

    /// Alarms of an `UplinkBatch` payload.
    fn record_batch(&self, payload: &[u8], now_us: i64) {
        self.record_message();
        if let Ok(b) = UplinkBatch::decode(payload) {
            for e in &b.events {
                if EventKind::try_from(e.kind).is_ok_and(EventKind::is_alarm) {
                    self.record((e.point_id, e.device_seq), e.device_time_ms, now_us);
                }
            }
        }
    }
}

fn unix_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

enum Task {
    Tokio(tokio::task::JoinHandle<()>),
    Thread(std::thread::JoinHandle<()>),
}

/// A running observer.
pub struct Observer {
    /// What is observed, for the report.
    pub source: String,
    shared: Arc<Shared>,
    stop: Arc<AtomicBool>,
    task: Task,
}

impl Observer {
    /// Subscribes to [`UPLINK_FILTER`] on the broker of `cfg` (QoS 1) and returns once the
    /// subscription is granted.
    pub async fn mqtt(cfg: &LinkConfig) -> anyhow::Result<Observer> {
        let id = format!("loadgen-observer-{}", std::process::id());
        let mut opts = MqttOptions::new(&id, cfg.host.clone(), cfg.port);
        opts.set_credentials(&id, cfg.secret.clone());
        opts.set_keep_alive(Duration::from_secs(30));
        opts.set_max_packet_size(1 << 20, 1 << 20);
        opts.set_clean_session(true);
        let (client, mut eventloop) = AsyncClient::new(opts, 16);
        client
            .subscribe(UPLINK_FILTER, QoS::AtLeastOnce)
            .await
            .map_err(|e| anyhow::anyhow!("observer subscribe: {e}"))?;
        let granted = tokio::time::timeout(READY_TIMEOUT, async {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::SubAck(a))) => {
                        return Ok(a
                            .return_codes
                            .iter()
                            .all(|c| !matches!(c, rumqttc::SubscribeReasonCode::Failure)));
                    }
                    Ok(_) => {}
                    Err(e) => return Err(anyhow::anyhow!("observer connection: {e}")),
                }
            }
        })
        .await
        .map_err(|_| anyhow::anyhow!("observer: no SUBACK within {READY_TIMEOUT:?}"))??;
        anyhow::ensure!(granted, "observer: subscription to {UPLINK_FILTER} refused");
        let shared = Arc::new(Shared::default());
        let stop = Arc::new(AtomicBool::new(false));
        let (sh, st) = (shared.clone(), stop.clone());
        let task = tokio::spawn(async move {
            let _client = client;
            while !st.load(Ordering::Relaxed) {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        sh.record_batch(&p.payload, unix_us())
                    }
                    Ok(_) => {}
                    Err(e) => {
                        eprintln!("loadgen: observer: {e}");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
            }
        });
        Ok(Observer {
            source: format!("MQTT subscriber on {UPLINK_FILTER}"),
            shared,
            stop,
            task: Task::Tokio(task),
        })
    }

    /// Consumes `topic` from its current end (every partition), decoding values as
    /// `value`; returns once the consumer is positioned. Blocking: call it off the async
    /// threads (it starts a thread of its own).
    pub fn kafka(brokers: &str, topic: &str, value: KafkaValue) -> anyhow::Result<Observer> {
        use rdkafka::consumer::{BaseConsumer, Consumer};
        use rdkafka::message::Message;
        use rdkafka::{ClientConfig, Offset, TopicPartitionList};
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set(
                "group.id",
                format!("loadgen-observer-{}", std::process::id()),
            )
            .set("enable.auto.commit", "false")
            .set("fetch.wait.max.ms", "10")
            .set("fetch.min.bytes", "1")
            .create()
            .map_err(|e| anyhow::anyhow!("kafka consumer for {brokers}: {e}"))?;
        let md = consumer
            .fetch_metadata(Some(topic), READY_TIMEOUT)
            .map_err(|e| anyhow::anyhow!("kafka metadata of {topic} at {brokers}: {e}"))?;
        let partitions: Vec<i32> = md
            .topics()
            .iter()
            .filter(|t| t.name() == topic && t.error().is_none())
            .flat_map(|t| t.partitions().iter().map(|p| p.id()))
            .collect();
        anyhow::ensure!(
            !partitions.is_empty(),
            "kafka topic {topic} has no partitions at {brokers} (create it first)"
        );
        let mut tpl = TopicPartitionList::new();
        for &p in &partitions {
            // Start at the end: records of earlier runs are not read (they would not count
            // anyway: device_seqs are distinct per run).
            let at = match consumer.fetch_watermarks(topic, p, READY_TIMEOUT) {
                Ok((_, high)) => Offset::Offset(high),
                Err(_) => Offset::Beginning,
            };
            tpl.add_partition_offset(topic, p, at)
                .map_err(|e| anyhow::anyhow!("kafka assignment: {e}"))?;
        }
        consumer
            .assign(&tpl)
            .map_err(|e| anyhow::anyhow!("kafka assign {topic}: {e}"))?;
        let shared = Arc::new(Shared::default());
        let stop = Arc::new(AtomicBool::new(false));
        let (sh, st) = (shared.clone(), stop.clone());
        let task = std::thread::Builder::new()
            .name("kafka-observer".into())
            .spawn(move || {
                while !st.load(Ordering::Relaxed) {
                    match consumer.poll(Duration::from_millis(50)) {
                        Some(Ok(m)) => {
                            let now = unix_us();
                            let payload = m.payload().unwrap_or_default();
                            match value {
                                KafkaValue::UplinkBatch => sh.record_batch(payload, now),
                                KafkaValue::AlarmRecord => {
                                    sh.record_message();
                                    if let Ok(a) = AlarmRecord::decode(payload) {
                                        sh.record(
                                            (a.point_id, a.device_seq),
                                            a.device_time_ms,
                                            now,
                                        );
                                    }
                                }
                            }
                        }
                        Some(Err(e)) => eprintln!("loadgen: kafka observer: {e}"),
                        None => {}
                    }
                }
            })?;
        Ok(Observer {
            source: format!("Kafka topic {topic} at {brokers}"),
            shared,
            stop,
            task: Task::Thread(task),
        })
    }

    /// Waits up to `wait` for every `sent` alarm to arrive, stops the observer and
    /// summarises: arrivals per second from `start_ms` in `slots` slots, latency of the
    /// alarms intended at or after `warm_from_ms`.
    pub async fn finish(
        self,
        sent: &[(u64, u32)],
        wait: Duration,
        start_ms: i64,
        slots: usize,
        warm_from_ms: i64,
    ) -> LogCheck {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let seen = {
                let s = self.shared.0.lock().unwrap_or_else(|e| e.into_inner());
                sent.iter().filter(|k| s.alarms.contains_key(k)).count()
            };
            if seen == sent.len() || tokio::time::Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.stop.store(true, Ordering::Relaxed);
        match self.task {
            Task::Tokio(t) => t.abort(),
            Task::Thread(t) => {
                let _ = tokio::task::spawn_blocking(move || t.join()).await;
            }
        }
        let s = self.shared.0.lock().unwrap_or_else(|e| e.into_inner());
        let slots = slots.max(1);
        let mut per_sec = vec![0u64; slots];
        let mut latency = new_histogram();
        let (mut observed, mut duplicates) = (0u64, 0u64);
        let mut missing = Vec::new();
        for key in sent {
            match s.alarms.get(key) {
                Some(seen) => {
                    observed += 1;
                    duplicates += u64::from(seen.count - 1);
                    let sec = ((seen.first_us / 1000 - start_ms).max(0) / 1000) as usize;
                    per_sec[sec.min(slots - 1)] += 1;
                    if seen.device_time_ms >= warm_from_ms {
                        let us = (seen.first_us - seen.device_time_ms * 1000).max(0) as u64;
                        latency.saturating_record(us.max(1));
                    }
                }
                None => missing.push(*key),
            }
        }
        LogCheck::summarise(
            self.source,
            s.records,
            observed,
            duplicates,
            missing,
            &latency,
            per_sec,
        )
    }
}
