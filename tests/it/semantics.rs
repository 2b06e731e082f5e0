//! Alarm semantics end to end over MQTT: station commands and their ownership, gateway
//! outages aggregated into one trouble, and a kill -9 restart in the middle of an open
//! incident (deadlines still fire, no duplicate alarm, no false offline flood).

use crate::harness::*;
use firewatch::auth::DEV_SECRET;
use firewatch_proto::{
    AlarmRecord, DeadLetterRecord, EventKind, IncidentRecord, RejectReason, TroubleRecord,
};
use std::collections::HashSet;
use std::time::{Duration, Instant};

fn incidents(fx: &Fixture) -> Vec<IncidentRecord> {
    read_topic::<IncidentRecord>(&fx.log_dir(), "fw.incidents")
        .into_iter()
        .map(|(_, r)| r)
        .collect()
}

fn troubles(fx: &Fixture) -> Vec<TroubleRecord> {
    read_topic::<TroubleRecord>(&fx.log_dir(), "fw.troubles")
        .into_iter()
        .map(|(_, r)| r)
        .collect()
}

fn dead(fx: &Fixture, reason: RejectReason) -> Vec<DeadLetterRecord> {
    read_topic::<DeadLetterRecord>(&fx.log_dir(), "fw.deadletter")
        .into_iter()
        .map(|(_, r)| r)
        .filter(|d| d.reason == reason as i32)
        .collect()
}

#[test]
fn stations_command_their_own_incidents_only() {
    let fx = Fixture::new(2000);
    let engine = fx.start();
    // A gateway whose first point is in an insured house.
    let g = (0..fx.registry.gateway_count() as u32)
        .find(|&g| fx.registry.info(fx.registry.gateway_points(g)[0]).policy != 0)
        .unwrap();
    let (gw, points) = fx.gateway(g);
    let info = *fx.registry.lookup(points[0]).unwrap().1;
    let other = (0..fx.registry.len() as u32)
        .map(|i| fx.registry.info(i).station)
        .find(|&s| s != info.station)
        .unwrap();

    let mut gwc = Gateway::connect(fx.v4_port(), &gw);
    gwc.subscribe_acks();
    gwc.send_batch(&batch(
        &gw,
        1,
        vec![event(points[0], EventKind::SmokeAlarm, 1)],
    ));
    gwc.next_ack(Duration::from_secs(10)).expect("ack");
    let opened = incidents(&fx);
    assert_eq!(opened.len(), 1);
    assert_eq!(opened[0].transition, "opened");
    let id = opened[0].incident_id.clone();

    let own = format!("station-{}", info.station);
    let mut st = Gateway::connect_as(fx.v4_port(), &own, &own, DEV_SECRET).unwrap();
    let mut intruder =
        Gateway::connect_as(fx.v4_port(), "x", &format!("station-{other}"), DEV_SECRET).unwrap();
    let cmd = |kind: &str| {
        format!(r#"{{"incident_id":"{id}","kind":"{kind}","operator":"li"}}"#).into_bytes()
    };
    let qos = rumqttc::QoS::AtLeastOnce;
    // Another station, on its own topic: the incident is not its to command.
    intruder
        .client
        .publish(
            format!("fw/v1/station/{other}/cmd/json"),
            qos,
            false,
            cmd("resolve"),
        )
        .unwrap();
    // Another station, on this station's topic: wrong topic.
    intruder
        .client
        .publish(
            format!("fw/v1/station/{}/cmd/json", info.station),
            qos,
            false,
            cmd("resolve"),
        )
        .unwrap();
    eventually(10, "foreign-incident and wrong-topic dead letters", || {
        intruder.pump(Duration::from_millis(50), |_| false);
        !dead(&fx, RejectReason::ForeignIncident).is_empty()
            && !dead(&fx, RejectReason::WrongTopic).is_empty()
    });
    assert!(
        incidents(&fx).iter().all(|i| i.transition != "resolved"),
        "the intruder changed nothing"
    );

    // The owning station acks (JSON) and resolves (protobuf).
    st.client
        .publish(
            format!("fw/v1/station/{}/cmd/json", info.station),
            qos,
            false,
            cmd("ack"),
        )
        .unwrap();
    use prost::Message;
    let resolve = firewatch_proto::StationCommand {
        station_id: info.station,
        incident_id: id.clone(),
        kind: firewatch_proto::CommandKind::Resolve as i32,
        operator: "li".into(),
        issued_at_ms: 0,
        note: String::new(),
    };
    eventually(10, "acked", || {
        st.pump(Duration::from_millis(50), |_| false);
        incidents(&fx)
            .iter()
            .any(|i| i.transition == "acked" && i.operator == "li")
    });
    st.client
        .publish(
            format!("fw/v1/station/{}/cmd", info.station),
            qos,
            false,
            resolve.encode_to_vec(),
        )
        .unwrap();
    eventually(10, "resolved", || {
        st.pump(Duration::from_millis(50), |_| false);
        incidents(&fx).iter().any(|i| i.transition == "resolved")
    });
    // A command for a closed incident is dead-lettered by the shard.
    st.client
        .publish(
            format!("fw/v1/station/{}/cmd/json", info.station),
            qos,
            false,
            cmd("ack"),
        )
        .unwrap();
    eventually(10, "unknown-incident dead letter", || {
        st.pump(Duration::from_millis(50), |_| false);
        !dead(&fx, RejectReason::UnknownIncident).is_empty()
    });
    // The insured house's closed incident is on the timeline, and the chain verifies.
    let report = firewatch::cli::verify_chain(&fx.log_dir()).unwrap();
    assert_eq!(report.records, 1);
    engine.shutdown().unwrap();
}

#[test]
fn a_gateway_outage_is_one_trouble_each_way() {
    let fx = Fixture::new(400);
    let engine = fx.start();
    let (gw, points) = fx.gateway(0);
    let mut g = Gateway::connect(fx.v4_port(), &gw);
    g.subscribe_acks();
    let hb: Vec<_> = points
        .iter()
        .map(|&p| event(p, EventKind::Heartbeat, 1))
        .collect();
    g.send_batch(&batch(&gw, 1, hb));
    g.next_ack(Duration::from_secs(10)).expect("ack");
    drop(g); // the TCP connection closes without DISCONNECT, as when a gateway loses power
    eventually(10, "gateway_offline trouble", || {
        troubles(&fx)
            .iter()
            .any(|t| t.kind == "gateway_offline" && t.active)
    });
    let mut g = Gateway::connect(fx.v4_port(), &gw);
    g.subscribe_acks();
    eventually(10, "gateway restore", || {
        troubles(&fx)
            .iter()
            .any(|t| t.kind == "gateway_offline" && !t.active)
    });
    let t = troubles(&fx);
    let gw_t: Vec<_> = t.iter().filter(|t| t.gateway_id == gw).collect();
    assert_eq!(
        gw_t.len(),
        2,
        "exactly one trouble down and one up, no per-point records: {gw_t:?}"
    );
    assert_eq!(gw_t[0].points_affected as usize, points.len());
    assert!(gw_t[1].since_ms == gw_t[0].at_ms && gw_t[1].at_ms >= gw_t[0].at_ms);
    engine.shutdown().unwrap();
    // A clean shutdown closes every connection but is not an outage.
    assert_eq!(
        troubles(&fx)
            .iter()
            .filter(|t| t.kind == "gateway_offline")
            .count(),
        2
    );
}

const SHORT: &str = r#"snapshot_interval = "1s"
[pipeline.station_classes.grassroots]
ack = "3s"
on_scene = "6s"
handled = "9s"
[pipeline.device_classes.polled]
heartbeat_interval = "1s"
grace = "3s"
[pipeline.device_classes.lora]
heartbeat_interval = "1h"
grace = "10m"
[pipeline.device_classes.nbiot]
heartbeat_interval = "1day"
grace = "1h"
"#;

#[test]
fn kill_9_in_an_open_incident_keeps_its_deadlines_and_floods_nothing() {
    let fx = Fixture::new(2000);
    let cfg = write_config(&fx, SHORT);
    let mut child = spawn_engine(&fx, &cfg);
    let g = (0..fx.registry.gateway_count() as u32)
        .find(|&g| {
            fx.registry
                .device_class_name(fx.registry.info(fx.registry.gateway_points(g)[0]).class)
                == "polled"
        })
        .expect("a polled gateway");
    let (gw, points) = fx.gateway(g);
    let alarm = event(points[0], EventKind::SmokeAlarm, 1);
    let mut seq = 1u32;
    let heartbeat = |c: &mut Gateway, seq: &mut u32, alarm: Option<firewatch_proto::PointEvent>| {
        *seq += 1;
        let mut evs: Vec<_> = points
            .iter()
            .map(|&p| event(p, EventKind::Heartbeat, *seq))
            .collect();
        evs.extend(alarm);
        c.send_batch(&batch(&gw, u64::from(*seq), evs));
        c.next_ack(Duration::from_secs(10)).expect("ack");
    };
    let mut c = Gateway::connect(fx.v4_port(), &gw);
    c.subscribe_acks();
    heartbeat(&mut c, &mut seq, Some(alarm));
    for _ in 0..3 {
        std::thread::sleep(Duration::from_millis(300));
        heartbeat(&mut c, &mut seq, None);
    }
    child.kill().unwrap();
    child.wait().unwrap();
    drop(c);
    // Down for longer than the points' supervision window (1 s + 3 s).
    std::thread::sleep(Duration::from_secs(5));
    let mut child = spawn_engine(&fx, &cfg);
    let restarted_ms = firewatch::clock::unix_ms();
    let mut c = Gateway::connect(fx.v4_port(), &gw);
    c.subscribe_acks();
    // The gateway never saw an ack for nothing here, but retransmits the alarm anyway.
    heartbeat(&mut c, &mut seq, Some(alarm));
    let until = Instant::now() + Duration::from_secs(4);
    while Instant::now() < until {
        std::thread::sleep(Duration::from_millis(300));
        heartbeat(&mut c, &mut seq, None);
    }
    eventually(20, "ack escalation after the restart", || {
        incidents(&fx)
            .iter()
            .any(|i| i.transition == "escalated" && i.escalations.iter().any(|e| e.missed == "ack"))
    });
    let inc = incidents(&fx);
    let ids: HashSet<&str> = inc.iter().map(|i| i.incident_id.as_str()).collect();
    assert_eq!(ids.len(), 1, "one incident across the restart: {ids:?}");
    let esc = inc.iter().find(|i| i.transition == "escalated").unwrap();
    assert!(
        esc.at_ms >= esc.ack_deadline_ms,
        "escalated before its deadline"
    );
    assert_eq!(
        esc.ack_deadline_ms,
        esc.opened_at_ms + 3000,
        "deadline kept from the original opening"
    );
    let alarms: Vec<_> = read_topic::<AlarmRecord>(&fx.log_dir(), "fw.alarms")
        .into_iter()
        .filter(|(_, a)| a.point_id == points[0] && a.device_seq == 1)
        .collect();
    assert_eq!(alarms.len(), 1, "the retransmitted alarm is a duplicate");
    let ours: HashSet<u64> = points.iter().copied().collect();
    let false_offline: Vec<_> = troubles(&fx)
        .into_iter()
        .filter(|t| {
            t.kind == "offline"
                && t.active
                && ours.contains(&t.point_id)
                && t.at_ms >= restarted_ms - 10_000
        })
        .collect();
    assert!(
        false_offline.is_empty(),
        "no offline trouble for points that kept heartbeating: {false_offline:?}"
    );
    let pid = child.id().to_string();
    std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(child.wait().unwrap().success());
}
