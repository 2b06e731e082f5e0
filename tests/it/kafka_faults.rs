//! Kafka fault tests against librdkafka's mock cluster (`rdkafka::mocking::MockCluster`, in
//! this process, on a loopback port): the broker down for an outage during an alarm storm,
//! the engine killed with SIGKILL mid-storm, and the broker refusing records. Each ends in
//! an exact count: every alarm the simulated gateways sent is on `fw.alarms`, and every
//! incident record the engine made is on `fw.incidents` exactly once.
//!
//! The outage lasts `FIREWATCH_TEST_OUTAGE_SECS` (default 30) seconds.

use crate::harness::*;
use firewatch::config::SinkKind;
use firewatch_proto::{
    AckStatus, AlarmRecord, DeadLetterRecord, EventKind, RejectReason, UplinkBatch,
};
use prost::Message as _;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

pub const PARTITIONS: i32 = 3;

fn outage() -> Duration {
    let secs = std::env::var("FIREWATCH_TEST_OUTAGE_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30);
    Duration::from_secs(secs)
}

/// A one-broker mock cluster with the engine's topics (the mock has no CreateTopics API,
/// so the engine's own topic creation is tested against tansu in `kafka.rs`).
pub fn mock() -> MockCluster<'static, DefaultProducerContext> {
    let m = MockCluster::new(1).expect("librdkafka mock cluster");
    for t in firewatch::sink::Topic::ALL {
        m.create_topic(t.name(), PARTITIONS, 1).unwrap();
    }
    m.create_topic("fw.station-commands", PARTITIONS, 1)
        .unwrap();
    m
}

/// Every record of `topic` up to the high watermarks: (key, value).
pub fn consume_all(brokers: &str, topic: &str) -> Vec<(Vec<u8>, Vec<u8>)> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "firewatch-fault-test")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    let mut high = HashMap::new();
    for p in 0..PARTITIONS {
        let (_, h) = consumer
            .fetch_watermarks(topic, p, Duration::from_secs(10))
            .unwrap();
        high.insert(p, h);
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let mut out = Vec::new();
    let mut next: HashMap<i32, i64> = HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while high
        .iter()
        .any(|(p, h)| next.get(p).copied().unwrap_or(0) < *h)
    {
        assert!(Instant::now() < deadline, "reading {topic} back timed out");
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
            next.insert(m.partition(), m.offset() + 1);
            if m.offset() < high[&m.partition()] {
                out.push((
                    m.key().unwrap_or_default().to_vec(),
                    m.payload().unwrap_or_default().to_vec(),
                ));
            }
        }
    }
    out
}

fn multiset(values: impl IntoIterator<Item = Vec<u8>>) -> BTreeMap<Vec<u8>, usize> {
    let mut m = BTreeMap::new();
    for v in values {
        *m.entry(v).or_insert(0) += 1;
    }
    m
}

/// A gateway that keeps every alarm until it is acked and retransmits it.
struct SimGateway {
    g: Gateway,
    points: Vec<u64>,
    seq: u32,
    unacked: BTreeMap<u64, (Instant, UplinkBatch)>,
    sent: HashSet<(u64, u32)>,
    acked: HashSet<(u64, u32)>,
}

impl SimGateway {
    fn new(fx: &Fixture, n: u32, seq0: u32) -> SimGateway {
        let (id, points) = fx.gateway(n);
        let mut g = Gateway::connect(fx.v4_port(), &id);
        g.subscribe_acks();
        SimGateway {
            g,
            points,
            seq: seq0,
            unacked: BTreeMap::new(),
            sent: HashSet::new(),
            acked: HashSet::new(),
        }
    }

    fn reconnect(&mut self, fx: &Fixture, n: u32) {
        let (id, _) = fx.gateway(n);
        self.g = Gateway::connect(fx.v4_port(), &id);
        self.g.subscribe_acks();
    }

    /// One batch: an alarm on the next point and a heartbeat.
    fn send_alarm(&mut self) {
        self.seq += 1;
        let p = self.points[self.seq as usize % self.points.len()];
        let hb = self.points[(self.seq as usize + 1) % self.points.len()];
        let b = batch(
            &self.g.id,
            u64::from(self.seq),
            vec![
                event(p, EventKind::SmokeAlarm, self.seq),
                event(hb, EventKind::Heartbeat, self.seq),
            ],
        );
        self.sent.insert((p, self.seq));
        self.g.send_batch(&b);
        self.unacked.insert(b.batch_seq, (Instant::now(), b));
    }

    /// Reads acks for up to `d`.
    fn pump(&mut self, d: Duration) {
        let deadline = Instant::now() + d;
        while let Some(ack) = self
            .g
            .next_ack(deadline.saturating_duration_since(Instant::now()))
        {
            assert_eq!(ack.status, AckStatus::Accepted as i32, "{ack:?}");
            self.unacked.remove(&ack.batch_seq);
            self.acked
                .extend(ack.durable.iter().map(|e| (e.point_id, e.device_seq)));
            if Instant::now() >= deadline {
                break;
            }
        }
    }

    /// Sends again every batch unacked for longer than `after`.
    fn retransmit(&mut self, after: Duration) {
        let now = Instant::now();
        let due: Vec<u64> = self
            .unacked
            .iter()
            .filter(|(_, (t, _))| now.duration_since(*t) >= after)
            .map(|(s, _)| *s)
            .collect();
        for s in due {
            if let Some((t, b)) = self.unacked.get_mut(&s) {
                *t = now;
                self.g.send_batch(b);
            }
        }
    }
}

fn storm(gws: &mut [SimGateway], d: Duration) {
    let end = Instant::now() + d;
    while Instant::now() < end {
        for g in gws.iter_mut() {
            g.send_alarm();
            g.pump(Duration::from_millis(10));
            g.retransmit(Duration::from_secs(5));
        }
    }
}

fn settle(gws: &mut [SimGateway], secs: u64) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while gws.iter().any(|g| !g.unacked.is_empty()) {
        assert!(
            Instant::now() < deadline,
            "gateways still hold unacked alarms: {}",
            gws.iter().map(|g| g.unacked.len()).sum::<usize>()
        );
        for g in gws.iter_mut() {
            g.pump(Duration::from_millis(50));
            g.retransmit(Duration::from_secs(3));
        }
    }
}

fn metrics(fx: &Fixture) -> String {
    http_get(fx.config.http.listen, "/metrics").1
}

pub fn kafka_fixture(brokers: &str) -> Fixture {
    let mut fx = Fixture::new(400);
    fx.config.sink.kind = SinkKind::Kafka;
    fx.config.kafka.brokers = brokers.to_string();
    fx.config.kafka.partitions = PARTITIONS;
    fx.config.kafka.create_topics = false;
    fx.config.kafka.spool.after = Duration::from_secs(2);
    fx.config.kafka.consume_commands = false;
    fx
}

/// The exact checks: every sent alarm is in the engine's log and on `fw.alarms`; the
/// Kafka topics hold the engine's alarm and incident records (`dups_ok`: at least once,
/// distinct equal; otherwise exactly once). Returns the duplicate count.
fn check_exact(fx: &Fixture, brokers: &str, sent: &HashSet<(u64, u32)>, dups_ok: bool) -> usize {
    let local_alarms: Vec<Vec<u8>> =
        firewatch::eventlog::LogReader::read_all(&fx.log_dir(), "fw.alarms")
            .unwrap()
            .into_iter()
            .map(|r| r.value)
            .collect();
    let local_ids: HashSet<(u64, u32)> = local_alarms
        .iter()
        .map(|v| {
            let a = AlarmRecord::decode(v.as_slice()).unwrap();
            (a.point_id, a.device_seq)
        })
        .collect();
    assert_eq!(local_ids.len(), local_alarms.len(), "engine log duplicates");
    assert_eq!(&local_ids, sent, "engine log alarms != sent alarms");
    let mut dups = 0;
    for topic in ["fw.alarms", "fw.incidents"] {
        let local = multiset(
            firewatch::eventlog::LogReader::read_all(&fx.log_dir(), topic)
                .unwrap()
                .into_iter()
                .map(|r| r.value),
        );
        let remote = multiset(consume_all(brokers, topic).into_iter().map(|(_, v)| v));
        assert!(!local.is_empty(), "{topic}: nothing made");
        if dups_ok {
            let lk: HashSet<_> = local.keys().collect();
            let rk: HashSet<_> = remote.keys().collect();
            assert_eq!(lk, rk, "{topic}: distinct records differ");
            dups += remote.values().map(|n| n - 1).sum::<usize>();
        } else {
            let missing = local.keys().filter(|k| !remote.contains_key(*k)).count();
            let extra: usize = remote
                .iter()
                .map(|(k, n)| n.saturating_sub(local.get(k).copied().unwrap_or(0)))
                .sum();
            assert_eq!(
                (missing, extra),
                (0, 0),
                "{topic}: {missing} records missing on kafka, {extra} extra"
            );
            assert_eq!(local, remote, "{topic}: not exactly once");
        }
    }
    dups
}

#[test]
fn kafka_broker_down_during_alarm_storm_spools_and_replays_every_alarm_once() {
    let cluster = mock();
    let brokers = cluster.bootstrap_servers();
    let fx = kafka_fixture(&brokers);
    let engine = fx.start();
    let mut gws: Vec<SimGateway> = (0..3).map(|n| SimGateway::new(&fx, n, 0)).collect();

    storm(&mut gws, Duration::from_secs(3));
    let acked_before: usize = gws.iter().map(|g| g.acked.len()).sum();
    assert!(acked_before > 0, "no acks with kafka up");

    cluster.broker_down(1).unwrap();
    let down = Instant::now();
    let mut saw_not_ready = false;
    let mut saw_spool = false;
    while down.elapsed() < outage() {
        storm(&mut gws, Duration::from_millis(500));
        saw_not_ready |= http_get(fx.config.http.listen, "/readyz").0 == 503;
        let m = metrics(&fx);
        saw_spool |= metric(&m, "firewatch_sink_spool_depth_records") > 0.0
            && metric(&m, "firewatch_sink_spool_state") > 0.0;
    }
    let acked_during: usize = gws.iter().map(|g| g.acked.len()).sum::<usize>() - acked_before;
    assert!(saw_not_ready, "/readyz stayed ready while kafka was down");
    assert!(saw_spool, "spool metrics never showed the outage");
    assert!(
        acked_during > 0,
        "no alarm acked during the outage (the spool should make them durable)"
    );

    cluster.broker_up(1).unwrap();
    storm(&mut gws, Duration::from_secs(2));
    settle(&mut gws, 180);
    eventually(180, "spool replayed and ready again", || {
        let m = metrics(&fx);
        http_get(fx.config.http.listen, "/readyz").0 == 200
            && metric(&m, "firewatch_sink_spool_depth_records") == 0.0
            && metric(&m, "firewatch_sink_spool_state") == 0.0
    });
    let m = metrics(&fx);
    assert!(metric(&m, "firewatch_sink_spool_replayed_records_total") > 0.0);
    engine.shutdown().unwrap();

    let sent: HashSet<(u64, u32)> = gws.iter().flat_map(|g| g.sent.iter().copied()).collect();
    let acked: HashSet<(u64, u32)> = gws.iter().flat_map(|g| g.acked.iter().copied()).collect();
    assert_eq!(sent, acked, "every sent alarm acked");
    check_exact(&fx, &brokers, &sent, false);
    eprintln!(
        "outage {:?}: {} alarms, {} acked during the outage",
        outage(),
        sent.len(),
        acked_during
    );
}

#[test]
fn kafka_refused_records_go_to_the_refused_store_and_deadletter_with_a_reason() {
    let cluster = mock();
    let brokers = cluster.bootstrap_servers();
    let fx = kafka_fixture(&brokers);
    let engine = fx.start();
    let mut gws: Vec<SimGateway> = (0..2).map(|n| SimGateway::new(&fx, n, 0)).collect();
    storm(&mut gws, Duration::from_secs(2));
    // One produce request answered "too large": its records are refused and reported.
    cluster.request_errors(
        RDKafkaApiKey::Produce,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE],
    );
    let deadline = Instant::now() + Duration::from_secs(120);
    while metric(&metrics(&fx), "firewatch_sink_refused_records_total") == 0.0 {
        assert!(Instant::now() < deadline, "injected error never hit");
        storm(&mut gws, Duration::from_millis(200));
    }
    settle(&mut gws, 120);
    eventually(60, "a kafka_refused dead letter on fw.deadletter", || {
        consume_all(&brokers, "fw.deadletter").iter().any(|(_, v)| {
            DeadLetterRecord::decode(v.as_slice()).unwrap().reason
                == RejectReason::KafkaRefused as i32
        })
    });
    // Then two answered "not authorized" (a dead letter may be refused too: kept locally).
    cluster.request_errors(
        RDKafkaApiKey::Produce,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED; 2],
    );
    storm(&mut gws, Duration::from_secs(3));
    settle(&mut gws, 120);
    let m = metrics(&fx);
    for reason in ["MessageSizeTooLarge", "TopicAuthorizationFailed"] {
        assert!(
            m.contains(&format!("reason=\"{reason}\"")),
            "no {reason} refusal counted"
        );
    }
    let refused_metric = metric(&metrics(&fx), "firewatch_sink_refused_records_total");
    engine.shutdown().unwrap();

    // Refused records are kept locally, one for one with the counter.
    let refused_dir = fx.config.data_dir.join("kafka-refused");
    let mut refused = 0usize;
    let mut refused_alarms = HashSet::new();
    for topic in firewatch::eventlog::list_topics(&refused_dir).unwrap() {
        let recs = firewatch::eventlog::LogReader::read_all(&refused_dir, &topic).unwrap();
        refused += recs.len();
        if topic == "fw.alarms" {
            for r in recs {
                let a = AlarmRecord::decode(r.value.as_slice()).unwrap();
                refused_alarms.insert((a.point_id, a.device_seq));
            }
        }
    }
    assert!(refused > 0, "the injected errors refused nothing");
    assert_eq!(refused as f64, refused_metric, "counter != refused store");

    // Every sent alarm is on fw.alarms or in the refused store: none is nowhere.
    let sent: HashSet<(u64, u32)> = gws.iter().flat_map(|g| g.sent.iter().copied()).collect();
    let on_kafka: HashSet<(u64, u32)> = consume_all(&brokers, "fw.alarms")
        .into_iter()
        .map(|(_, v)| {
            let a = AlarmRecord::decode(v.as_slice()).unwrap();
            (a.point_id, a.device_seq)
        })
        .collect();
    let everywhere: HashSet<_> = on_kafka.union(&refused_alarms).copied().collect();
    assert_eq!(everywhere, sent, "alarms neither on kafka nor kept");
    assert!(on_kafka.is_disjoint(&refused_alarms));

    // The refusals are reported on fw.deadletter with the reason (best effort: a dead
    // letter refused by the same injected error is only kept locally).
    let dls: Vec<DeadLetterRecord> = consume_all(&brokers, "fw.deadletter")
        .into_iter()
        .map(|(_, v)| DeadLetterRecord::decode(v.as_slice()).unwrap())
        .filter(|d| d.reason == RejectReason::KafkaRefused as i32)
        .collect();
    assert!(
        !dls.is_empty() && dls.len() <= refused,
        "{} dead letters",
        dls.len()
    );
    for d in &dls {
        assert!(d.detail.contains("kafka refused"), "{}", d.detail);
    }
    eprintln!(
        "refused {refused} records ({} alarms), {} reported on fw.deadletter",
        refused_alarms.len(),
        dls.len()
    );
}

#[test]
fn kafka_engine_sigkill_mid_storm_then_restart_delivers_every_alarm() {
    let cluster = mock();
    let brokers = cluster.bootstrap_servers();
    let fx = kafka_fixture(&brokers);
    let extra = format!(
        "\n[sink]\nkind = \"kafka\"\n[kafka]\nbrokers = \"{brokers}\"\npartitions = {PARTITIONS}\ncreate_topics = false\nconsume_commands = false\n[kafka.spool]\nafter = \"2s\"\n"
    );
    let cfg = write_config(&fx, &extra);
    let mut child = spawn_engine(&fx, &cfg);
    let mut gws: Vec<SimGateway> = (0..3).map(|n| SimGateway::new(&fx, n, 0)).collect();
    storm(&mut gws, Duration::from_secs(3));
    // Slow the broker so records are in flight when the engine dies.
    cluster
        .broker_round_trip_time(1, Duration::from_millis(500))
        .unwrap();
    storm(&mut gws, Duration::from_secs(2));
    for g in gws.iter_mut() {
        for _ in 0..20 {
            g.send_alarm();
        }
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    cluster
        .broker_round_trip_time(1, Duration::from_millis(0))
        .unwrap();

    let mut child = spawn_engine(&fx, &cfg);
    for (n, g) in gws.iter_mut().enumerate() {
        g.reconnect(&fx, n as u32);
        g.retransmit(Duration::ZERO);
    }
    storm(&mut gws, Duration::from_secs(2));
    settle(&mut gws, 180);
    eventually(120, "ready after replay", || {
        http_get(fx.config.http.listen, "/readyz").0 == 200
    });
    let pid = child.id().to_string();
    std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(child.wait().unwrap().success());

    let sent: HashSet<(u64, u32)> = gws.iter().flat_map(|g| g.sent.iter().copied()).collect();
    let dups = check_exact(&fx, &brokers, &sent, true);
    eprintln!(
        "sigkill: {} alarms, {dups} records delivered twice (at-least-once across a crash)",
        sent.len()
    );
}
