//! The Kafka sink against a real Kafka-protocol broker (tansu 0.6, memory storage, started
//! here on a loopback port): records on every topic the slice produces, with keys, headers
//! and protobuf values, read back by an independent rdkafka consumer.

use crate::harness::*;
use firewatch::config::SinkKind;
use firewatch_proto::{AckStatus, AlarmRecord, DispatchRecord, EventKind, IncidentRecord};
use prost::Message as _;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A tansu broker on a free port, killed on drop.
pub struct Tansu {
    child: Child,
    pub addr: String,
}

impl Drop for Tansu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts tansu, or `None` (outside CI only) when it is not installed.
pub fn tansu() -> Option<Tansu> {
    let port = free_port();
    let url = format!("tcp://127.0.0.1:{port}");
    let spawned = Command::new("tansu")
        .args([
            "broker",
            "--listener-url",
            &url,
            "--advertised-listener-url",
            &url,
        ])
        .args(["--storage-engine", "memory://tansu/"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    let child = match spawned {
        Ok(c) => c,
        Err(e) => {
            assert!(std::env::var("CI").is_err(), "CI must install tansu: {e}");
            eprintln!("skipping: tansu not installed ({e})");
            return None;
        }
    };
    let addr = format!("127.0.0.1:{port}");
    eventually(20, "tansu listening", || {
        std::net::TcpStream::connect(&addr).is_ok()
    });
    Some(Tansu { child, addr })
}

/// (key, value, headers) of a consumed record.
type Consumed = (Vec<u8>, Vec<u8>, Vec<(String, String)>);

fn consume(brokers: &str, topic: &str, partitions: i32, want: usize) -> Vec<Consumed> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "firewatch-test")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while out.len() < want && Instant::now() < deadline {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
            let headers = m
                .headers()
                .map(|h| {
                    h.iter()
                        .map(|x| {
                            (
                                x.key.to_string(),
                                String::from_utf8_lossy(x.value.unwrap_or_default()).into_owned(),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            out.push((
                m.key().unwrap_or_default().to_vec(),
                m.payload().unwrap_or_default().to_vec(),
                headers,
            ));
        }
    }
    out
}

#[test]
fn kafka_sink_delivers_keyed_protobuf_records_with_headers_before_acking() {
    let Some(broker) = tansu() else { return };
    let mut fx = Fixture::new(400);
    fx.config.sink.kind = SinkKind::Kafka;
    fx.config.kafka.brokers = broker.addr.clone();
    fx.config.kafka.partitions = 3;
    let engine = fx.start();
    // The engine created its output topics and the station-command input topic.
    let admin: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &broker.addr)
        .create()
        .unwrap();
    let md = admin.fetch_metadata(None, Duration::from_secs(10)).unwrap();
    let have: Vec<&str> = md.topics().iter().map(|t| t.name()).collect();
    for t in [
        "fw.alarms",
        "fw.point-status",
        "fw.deadletter",
        "fw.station-commands",
    ] {
        assert!(have.contains(&t), "{t} not created: {have:?}");
    }
    let (gw, points) = fx.gateway(0);
    let (_, info) = fx.registry.lookup(points[0]).unwrap();
    let info = *info;
    let mut g = Gateway::connect(fx.v4_port(), &gw);
    g.subscribe_acks();
    g.send_batch(&batch(
        &gw,
        1,
        vec![
            event(points[0], EventKind::Heartbeat, 1),
            event(points[0], EventKind::HeatAlarm, 2),
        ],
    ));
    let ack = g
        .next_ack(Duration::from_secs(30))
        .expect("ack after Kafka delivery");
    assert_eq!(ack.status, AckStatus::Accepted as i32);
    assert_eq!(ack.durable.len(), 1);

    // The ack came after the delivery report: the records are there.
    let alarms = consume(&broker.addr, "fw.alarms", 3, 1);
    assert_eq!(alarms.len(), 1, "fw.alarms");
    let (key, value, headers) = &alarms[0];
    assert_eq!(key, &info.house.to_string().into_bytes());
    let a = AlarmRecord::decode(value.as_slice()).unwrap();
    assert_eq!(
        (a.point_id, a.device_seq, a.kind),
        (points[0], 2, EventKind::HeatAlarm as i32)
    );
    let h = |k: &str| headers.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    assert_eq!(h("schema").as_deref(), Some("firewatch.v1.AlarmRecord"));
    assert_eq!(h("schema-version").as_deref(), Some("1"));
    assert!(
        h("engine").is_some() && h("ingest-ts-ms").is_some(),
        "{headers:?}"
    );

    // A heat alarm opens and confirms at once: incident records and a dispatch by town.
    let incidents = consume(&broker.addr, "fw.incidents", 3, 2);
    let transitions: Vec<String> = incidents
        .iter()
        .map(|(_, v, _)| IncidentRecord::decode(v.as_slice()).unwrap().transition)
        .collect();
    assert_eq!(transitions, vec!["opened", "confirmed"]);
    let dispatch = consume(&broker.addr, "fw.dispatch", 3, 1);
    assert_eq!(dispatch.len(), 1);
    assert_eq!(dispatch[0].0, info.town.to_string().into_bytes());
    let d = DispatchRecord::decode(dispatch[0].1.as_slice()).unwrap();
    assert_eq!(d.house_id, info.house);
    let status = consume(&broker.addr, "fw.point-status", 3, 1);
    assert_eq!(status.len(), 1);
    assert_eq!(status[0].0, points[0].to_string().into_bytes());

    // The state topics are also kept locally for restart safety.
    assert_eq!(
        read_topic::<AlarmRecord>(&fx.log_dir(), "fw.alarms").len(),
        1
    );
    assert!(
        read_topic::<firewatch_proto::PointStatusRecord>(&fx.log_dir(), "fw.point-status")
            .is_empty()
    );
    engine.shutdown().unwrap();
}
