//! The happy path: a gateway's batch becomes durable records and an ack.

use crate::harness::*;
use firewatch_proto::{AckStatus, AlarmRecord, EventKind, PointStatusRecord, RoomType};
use std::time::Duration;

#[test]
fn protobuf_batch_is_acked_after_the_alarm_is_durable() {
    let fx = Fixture::new(400);
    let engine = fx.start();
    let (gw, points) = fx.gateway(0);
    let mut g = Gateway::connect(fx.v4_port(), &gw);
    g.subscribe_acks();
    let b = batch(
        &gw,
        1,
        vec![
            event(points[0], EventKind::Heartbeat, 1),
            event(points[1], EventKind::Heartbeat, 1),
            event(points[2], EventKind::SmokeAlarm, 2),
        ],
    );
    g.send_batch(&b);
    let ack = g.next_ack(Duration::from_secs(10)).expect("ack");
    assert_eq!(ack.status, AckStatus::Accepted as i32);
    assert_eq!(ack.batch_seq, 1);
    assert_eq!(ack.gateway_id, gw);
    assert_eq!(ack.durable.len(), 1);
    assert_eq!(
        (ack.durable[0].point_id, ack.durable[0].device_seq),
        (points[2], 2)
    );
    assert!(ack.rejected.is_empty());

    // The ack promises durability: the alarm is in the log now, with registry context.
    let alarms = read_topic::<AlarmRecord>(&fx.log_dir(), "fw.alarms");
    assert_eq!(alarms.len(), 1);
    let (rec, a) = &alarms[0];
    let (_, info) = fx.registry.lookup(points[2]).unwrap();
    assert_eq!(a.point_id, points[2]);
    assert_eq!(a.kind, EventKind::SmokeAlarm as i32);
    assert_eq!(a.gateway_id, gw);
    let loc = a.location.unwrap();
    assert_eq!(loc.house_id, info.house);
    assert_eq!(loc.town_id, info.town);
    assert_eq!(loc.room_type, info.room_type as i32);
    assert_ne!(loc.room_type, RoomType::Unspecified as i32);
    assert_eq!(rec.key, info.house.to_string().into_bytes());
    // All three points were seen for the first time.
    let status = read_topic::<PointStatusRecord>(&fx.log_dir(), "fw.point-status");
    assert_eq!(status.len(), 3);

    // The same batch again (a retransmission) is acked but adds no alarm.
    g.send_batch(&b);
    let ack = g.next_ack(Duration::from_secs(10)).expect("second ack");
    assert_eq!(ack.status, AckStatus::Accepted as i32);
    assert_eq!(
        read_topic::<AlarmRecord>(&fx.log_dir(), "fw.alarms").len(),
        1
    );

    // tail prints it as JSON with names, through the same reader.
    let mut out = Vec::new();
    let opts = firewatch::cli::TailOptions {
        dir: fx.log_dir(),
        topic: "fw.alarms".into(),
        from_beginning: true,
        last: 10,
        follow: false,
    };
    firewatch::cli::tail(&opts, &mut out).unwrap();
    let line = String::from_utf8(out).unwrap();
    assert!(line.contains("\"kind\":\"smoke_alarm\""), "{line}");
    assert!(
        line.contains(&format!("\"point_id\":{}", points[2])),
        "{line}"
    );

    let (code, text) = http_get(engine.http, "/metrics");
    assert_eq!(code, 200);
    assert!(
        metric(&text, "firewatch_sink_records_total{topic=\"fw.alarms\"}") >= 1.0,
        "{text}"
    );
    assert!(metric(&text, "firewatch_ingest_events_total{kind=\"smoke_alarm\"}") >= 2.0);
    assert!(metric(&text, "firewatch_pipeline_duplicates_total") >= 3.0);
    assert_eq!(http_get(engine.http, "/readyz").0, 200);
    assert_eq!(http_get(engine.http, "/healthz").0, 200);
    engine.shutdown().unwrap();
}

#[test]
fn json_batch_is_acked_in_json() {
    let fx = Fixture::new(400);
    let engine = fx.start();
    let (gw, points) = fx.gateway(1);
    let mut g = Gateway::connect(fx.v4_port(), &gw);
    g.subscribe_acks();
    let json = format!(
        r#"{{"gateway_id":"{gw}","batch_seq":42,"events":[
            {{"point_id":{},"kind":"heartbeat","device_seq":1}},
            {{"point_id":{},"kind":"heat_alarm","device_seq":7,"value":68.5}}]}}"#,
        points[0], points[1]
    );
    g.publish("up/json", json.into_bytes());
    let ack = g.next_ack(Duration::from_secs(10)).expect("ack");
    assert_eq!(ack.status, AckStatus::Accepted as i32);
    assert_eq!(ack.batch_seq, 42);
    assert_eq!(ack.durable.len(), 1);
    let alarms = read_topic::<AlarmRecord>(&fx.log_dir(), "fw.alarms");
    assert_eq!(alarms.len(), 1);
    assert_eq!(alarms[0].1.kind, EventKind::HeatAlarm as i32);
    assert_eq!(alarms[0].1.value, 68.5);
    engine.shutdown().unwrap();
}

#[test]
fn mqtt5_listener_serves_gateways_too() {
    let fx = Fixture::new(200);
    let engine = fx.start();
    let (gw, points) = fx.gateway(0);
    let port = fx.config.mqtt.listen_v5.unwrap().port();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        use rumqttc::v5::{mqttbytes::QoS, AsyncClient, Event, Incoming, MqttOptions};
        let mut opts = MqttOptions::new(gw.clone(), "127.0.0.1", port);
        opts.set_credentials(gw.clone(), firewatch::auth::DEV_SECRET);
        let (client, mut ev) = AsyncClient::new(opts, 16);
        client
            .subscribe(format!("fw/v1/gw/{gw}/ack"), QoS::AtLeastOnce)
            .await
            .unwrap();
        let b = batch(&gw, 5, vec![event(points[0], EventKind::ManualAlarm, 1)]);
        use prost::Message;
        let mut sent = false;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let e = tokio::time::timeout_at(deadline, ev.poll())
                .await
                .expect("timeout")
                .unwrap();
            match e {
                Event::Incoming(Incoming::SubAck(_)) if !sent => {
                    client
                        .publish(
                            format!("fw/v1/gw/{gw}/up"),
                            QoS::AtLeastOnce,
                            false,
                            b.encode_to_vec(),
                        )
                        .await
                        .unwrap();
                    sent = true;
                }
                Event::Incoming(Incoming::Publish(p)) => {
                    let ack = firewatch_proto::UplinkAck::decode(p.payload.as_ref()).unwrap();
                    assert_eq!(ack.batch_seq, 5);
                    assert_eq!(ack.durable.len(), 1);
                    break;
                }
                _ => {}
            }
        }
    });
    assert_eq!(
        read_topic::<AlarmRecord>(&fx.log_dir(), "fw.alarms").len(),
        1
    );
    engine.shutdown().unwrap();
}

/// `-h -p -u -P -i` arguments of mosquitto_pub/mosquitto_sub for gateway `gw`.
fn mosquitto_login(port: &str, gw: &str, secret: &str, role: &str) -> Vec<String> {
    let id = format!("{gw}-{role}");
    [
        "-h",
        "127.0.0.1",
        "-p",
        port,
        "-u",
        gw,
        "-P",
        secret,
        "-i",
        &id,
    ]
    .map(String::from)
    .to_vec()
}

/// A person with Debian's mosquitto-clients can send the JSON form and read the JSON ack.
#[test]
fn mosquitto_clients_send_json_and_read_the_ack() {
    if std::process::Command::new("mosquitto_pub")
        .arg("--help")
        .output()
        .is_err()
    {
        assert!(
            std::env::var("CI").is_err(),
            "CI must install mosquitto-clients"
        );
        eprintln!("skipping: mosquitto_pub not installed");
        return;
    }
    let fx = Fixture::new(200);
    let engine = fx.start();
    let (gw, points) = fx.gateway(0);
    let port = fx.v4_port().to_string();
    let secret = firewatch::auth::DEV_SECRET;
    let sub = std::process::Command::new("mosquitto_sub")
        .args(mosquitto_login(&port, &gw, secret, "sub"))
        .args([
            "-q",
            "1",
            "-C",
            "1",
            "-W",
            "20",
            "-t",
            &format!("fw/v1/gw/{gw}/ack/json"),
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let json = format!(
        r#"{{"batch_seq":7,"events":[{{"point_id":{},"kind":"smoke_alarm","device_seq":3}}]}}"#,
        points[0]
    );
    let st = std::process::Command::new("mosquitto_pub")
        .args(mosquitto_login(&port, &gw, secret, "pub"))
        .args([
            "-q",
            "1",
            "-t",
            &format!("fw/v1/gw/{gw}/up/json"),
            "-m",
            &json,
        ])
        .status()
        .unwrap();
    assert!(st.success());
    let out = sub.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let ack: serde_json::Value =
        serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("{e}: {text:?}"));
    assert_eq!(ack["status"], "accepted");
    assert_eq!(ack["batch_seq"], 7);
    assert_eq!(ack["durable"][0]["point_id"], points[0]);
    assert_eq!(
        read_topic::<AlarmRecord>(&fx.log_dir(), "fw.alarms").len(),
        1
    );
    engine.shutdown().unwrap();
}
