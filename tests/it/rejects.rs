//! Every reject path ends in a dead-letter record and a counter, and never stops a
//! well-behaved gateway on the same engine from being served.

use crate::harness::*;
use firewatch_proto::{AckStatus, AlarmRecord, DeadLetterRecord, EventKind, RejectReason};
use std::time::Duration;

fn deadletters(fx: &Fixture) -> Vec<DeadLetterRecord> {
    read_topic::<DeadLetterRecord>(&fx.log_dir(), "fw.deadletter")
        .into_iter()
        .map(|(_, d)| d)
        .collect()
}

fn has(fx: &Fixture, reason: RejectReason, gw: &str) -> bool {
    deadletters(fx)
        .iter()
        .any(|d| d.reason == reason as i32 && d.gateway_id == gw)
}

#[test]
fn every_reject_path_is_dead_lettered_and_good_gateways_keep_working() {
    let fx = Fixture::new(400);
    let engine = fx.start();
    let (bad_id, bad_points) = fx.gateway(0);
    let (good_id, good_points) = fx.gateway(1);
    let mut bad = Gateway::connect(fx.v4_port(), &bad_id);
    bad.subscribe_acks();
    let mut good = Gateway::connect(fx.v4_port(), &good_id);
    good.subscribe_acks();
    let mut good_seq = 0u64;
    let mut serve_good = |good: &mut Gateway| {
        good_seq += 1;
        let b = batch(
            &good_id,
            good_seq,
            vec![event(
                good_points[0],
                EventKind::SmokeAlarm,
                good_seq as u32,
            )],
        );
        good.send_batch(&b);
        let ack = good
            .next_ack(Duration::from_secs(10))
            .expect("good gateway ack");
        assert_eq!(ack.status, AckStatus::Accepted as i32);
        assert_eq!(ack.batch_seq, good_seq);
    };

    // 1. Bad protobuf: rejected ack, dead letter with the raw bytes.
    bad.publish("up", vec![0xff, 0xff, 0xff, 0x01, 0x02]);
    let ack = bad.next_ack(Duration::from_secs(10)).expect("reject ack");
    assert_eq!(ack.status, AckStatus::Rejected as i32);
    assert_eq!(ack.reason, RejectReason::DecodeError as i32);
    let d = deadletters(&fx);
    let d = d
        .iter()
        .find(|d| d.reason == RejectReason::DecodeError as i32)
        .expect("decode dead letter");
    assert_eq!(d.gateway_id, bad_id);
    assert_eq!(d.raw, vec![0xff, 0xff, 0xff, 0x01, 0x02]);
    assert_eq!(d.topic, format!("fw/v1/gw/{bad_id}/up"));
    serve_good(&mut good);

    // 1b. Bad JSON.
    bad.publish(
        "up/json",
        b"{\"batch_seq\": 1, \"events\": [{\"point_id\": 1, \"kind\": \"fire\"}]}".to_vec(),
    );
    let ack = bad
        .next_ack(Duration::from_secs(10))
        .expect("json reject ack");
    assert_eq!(ack.status, AckStatus::Rejected as i32);
    assert!(ack.detail.contains("fire"), "{}", ack.detail);

    // 2. Oversize (above max_payload_bytes, below the packet limit).
    bad.publish("up", vec![0u8; fx.config.mqtt.max_payload_bytes + 1]);
    let ack = bad.next_ack(Duration::from_secs(10)).expect("oversize ack");
    assert_eq!(ack.reason, RejectReason::Oversize as i32);
    let d = deadletters(&fx);
    let d = d
        .iter()
        .find(|d| d.reason == RejectReason::Oversize as i32)
        .unwrap();
    assert_eq!(d.raw_len as usize, fx.config.mqtt.max_payload_bytes + 1);
    assert_eq!(d.raw.len(), fx.config.mqtt.deadletter_raw_bytes);
    serve_good(&mut good);

    // 3. Unknown point and 4. a point of another gateway, next to a good event: the good
    // event is accepted, the two are rejected individually.
    let b = batch(
        &bad_id,
        10,
        vec![
            event(99_999_999, EventKind::SmokeAlarm, 1),
            event(good_points[3], EventKind::SmokeAlarm, 1),
            event(bad_points[0], EventKind::SmokeAlarm, 1),
        ],
    );
    bad.send_batch(&b);
    let ack = bad.next_ack(Duration::from_secs(10)).expect("partial ack");
    assert_eq!(ack.status, AckStatus::Accepted as i32);
    let mut reasons: Vec<(u64, i32)> = ack
        .rejected
        .iter()
        .map(|r| (r.point_id, r.reason))
        .collect();
    reasons.sort();
    let mut want = vec![
        (99_999_999, RejectReason::UnknownPoint as i32),
        (good_points[3], RejectReason::ForeignPoint as i32),
    ];
    want.sort();
    assert_eq!(reasons, want);
    assert_eq!(ack.durable.len(), 1);
    assert_eq!(ack.durable[0].point_id, bad_points[0]);
    assert!(has(&fx, RejectReason::UnknownPoint, &bad_id));
    assert!(has(&fx, RejectReason::ForeignPoint, &bad_id));
    let alarms = read_topic::<AlarmRecord>(&fx.log_dir(), "fw.alarms");
    assert!(alarms
        .iter()
        .all(|(_, a)| a.point_id != good_points[3] && a.point_id != 99_999_999));

    // 5. Publishing on another gateway's topic, and a batch naming another gateway.
    bad.client
        .publish(
            format!("fw/v1/gw/{good_id}/up"),
            rumqttc::QoS::AtLeastOnce,
            false,
            b"x".to_vec(),
        )
        .unwrap();
    eventually(10, "wrong_topic dead letter", || {
        bad.pump(Duration::from_millis(50), |_| false);
        has(&fx, RejectReason::WrongTopic, &bad_id)
    });
    let forged = batch(
        &good_id,
        11,
        vec![event(good_points[0], EventKind::SmokeAlarm, 99)],
    );
    use prost::Message;
    bad.publish("up", forged.encode_to_vec());
    let ack = bad.next_ack(Duration::from_secs(10)).expect("mismatch ack");
    assert_eq!(ack.reason, RejectReason::GatewayMismatch as i32);
    serve_good(&mut good);

    // 6. Wrong password: refused, dead-lettered; and another gateway's subscription.
    assert!(Gateway::connect_as(fx.v4_port(), "intruder", &good_id, "guess").is_err());
    eventually(10, "auth_failed dead letter", || {
        has(&fx, RejectReason::AuthFailed, &good_id)
    });
    bad.client
        .subscribe(format!("fw/v1/gw/{good_id}/ack"), rumqttc::QoS::AtMostOnce)
        .unwrap();
    assert!(
        !bad.stays_connected(Duration::from_secs(5)),
        "forbidden subscription must disconnect"
    );
    // The dead letter is written by the sink thread: wait for it, do not race it.
    eventually(10, "forbidden_subscription dead letter", || {
        has(&fx, RejectReason::ForbiddenSubscription, &bad_id)
    });

    // The good gateway was never disturbed, and its alarms are all there.
    serve_good(&mut good);
    let good_alarms = read_topic::<AlarmRecord>(&fx.log_dir(), "fw.alarms")
        .into_iter()
        .filter(|(_, a)| a.gateway_id == good_id)
        .count();
    assert_eq!(good_alarms, 4);

    let (_, text) = http_get(engine.http, "/metrics");
    for reason in [
        "decode_error",
        "oversize",
        "unknown_point",
        "foreign_point",
        "wrong_topic",
        "auth_failed",
        "gateway_mismatch",
        "forbidden_subscription",
    ] {
        let line = format!("firewatch_deadletter_rejects_total{{reason=\"{reason}\"}}");
        assert!(metric(&text, &line) >= 1.0, "{line} missing in\n{text}");
    }
    assert!(metric(&text, "firewatch_ingest_auth_failures_total") >= 1.0);
    engine.shutdown().unwrap();
}

#[test]
fn a_flooding_gateway_is_rate_limited_in_the_dead_letter_log_but_fully_counted() {
    let mut fx = Fixture::new(200);
    fx.config.mqtt.deadletter_per_gateway_per_sec = 3;
    let engine = fx.start();
    let (gw, _) = fx.gateway(0);
    let mut g = Gateway::connect(fx.v4_port(), &gw);
    g.subscribe_acks();
    for _ in 0..30 {
        g.publish("up", vec![0xff; 8]);
    }
    let mut acks = 0;
    while acks < 30 {
        g.next_ack(Duration::from_secs(10))
            .expect("every garbage batch is still answered");
        acks += 1;
    }
    let n = read_topic::<DeadLetterRecord>(&fx.log_dir(), "fw.deadletter").len();
    assert!((3..30).contains(&n), "{n} dead letters");
    let (_, text) = http_get(engine.http, "/metrics");
    assert!(metric(&text, "firewatch_deadletter_suppressed_total") >= 1.0);
    engine.shutdown().unwrap();
}
