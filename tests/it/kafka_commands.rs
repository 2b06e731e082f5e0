//! The `fw.station-commands` Kafka consumer against librdkafka's mock cluster: a valid
//! command is applied (its incident transition reaches `fw.incidents`), invalid and
//! foreign ones land on `fw.deadletter` with a reason, and every offset is committed —
//! the valid one only after the command's records are durable.

use crate::harness::*;
use crate::kafka_faults::{consume_all, kafka_fixture, mock, PARTITIONS};
use firewatch_proto::{
    AckStatus, CommandKind, DeadLetterRecord, EventKind, IncidentRecord, RejectReason,
    StationCommand,
};
use prost::Message as _;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use std::time::Duration;

fn command(station: u32, incident: &str, kind: CommandKind) -> Vec<u8> {
    StationCommand {
        station_id: station,
        incident_id: incident.into(),
        kind: kind as i32,
        operator: "wang".into(),
        issued_at_ms: firewatch::clock::unix_ms(),
        note: String::new(),
    }
    .encode_to_vec()
}

/// Committed offsets of the engine's group equal the end of every partition.
fn all_committed(brokers: &str) -> bool {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "firewatch-engine")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        tpl.add_partition("fw.station-commands", p);
    }
    let Ok(committed) = c.committed_offsets(tpl, Duration::from_secs(5)) else {
        return false;
    };
    (0..PARTITIONS).all(|p| {
        let (_, high) = c
            .fetch_watermarks("fw.station-commands", p, Duration::from_secs(5))
            .unwrap();
        let got = committed
            .find_partition("fw.station-commands", p)
            .map(|e| e.offset());
        high == 0 || got == Some(Offset::Offset(high))
    })
}

#[test]
fn kafka_station_commands_are_applied_then_committed_and_bad_ones_dead_lettered() {
    let cluster = mock();
    let brokers = cluster.bootstrap_servers();
    let mut fx = kafka_fixture(&brokers);
    fx.config.kafka.consume_commands = true;
    let engine = fx.start();
    let (gw, points) = fx.gateway(0);
    let (_, info) = fx.registry.lookup(points[0]).unwrap();
    let info = *info;
    let mut g = Gateway::connect(fx.v4_port(), &gw);
    g.subscribe_acks();
    g.send_batch(&batch(
        &gw,
        1,
        vec![event(points[0], EventKind::HeatAlarm, 1)],
    ));
    let ack = g.next_ack(Duration::from_secs(30)).expect("ack");
    assert_eq!(ack.status, AckStatus::Accepted as i32);
    let incident = read_topic::<IncidentRecord>(&fx.log_dir(), "fw.incidents")[0]
        .1
        .incident_id
        .clone();

    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .create()
        .unwrap();
    let station = info.station.to_string();
    let foreign = info.station + 1000;
    let foreign_key = foreign.to_string();
    let valid = command(info.station, &incident, CommandKind::Ack);
    let other = command(foreign, &incident, CommandKind::Ack);
    for (key, value) in [
        (station.as_str(), valid.as_slice()),
        (foreign_key.as_str(), other.as_slice()),
        (station.as_str(), &[0xff, 0xff, 0xff][..]),
    ] {
        producer
            .send(
                BaseRecord::<str, [u8]>::to("fw.station-commands")
                    .key(key)
                    .payload(value),
            )
            .unwrap();
    }
    producer.flush(Duration::from_secs(10)).unwrap();

    eventually(60, "acked transition on fw.incidents", || {
        consume_all(&brokers, "fw.incidents").iter().any(|(_, v)| {
            let i = IncidentRecord::decode(v.as_slice()).unwrap();
            i.incident_id == incident && i.transition == "acked" && i.operator == "wang"
        })
    });
    eventually(60, "both rejections on fw.deadletter", || {
        let reasons: Vec<i32> = consume_all(&brokers, "fw.deadletter")
            .iter()
            .map(|(_, v)| DeadLetterRecord::decode(v.as_slice()).unwrap())
            .filter(|d| d.topic == "fw.station-commands")
            .map(|d| d.reason)
            .collect();
        reasons.contains(&(RejectReason::ForeignIncident as i32))
            && reasons.contains(&(RejectReason::InvalidCommand as i32))
    });
    eventually(60, "every command offset committed", || {
        all_committed(&brokers)
    });
    let m = http_get(fx.config.http.listen, "/metrics").1;
    assert_eq!(
        metric(
            &m,
            "firewatch_ingest_kafka_commands_total{result=\"applied\"}"
        ),
        1.0
    );
    assert_eq!(
        metric(
            &m,
            "firewatch_ingest_kafka_commands_total{result=\"rejected\"}"
        ),
        2.0
    );
    engine.shutdown().unwrap();
}
