//! kill -9 while writing: the log reopens with no corrupt record and every acked alarm.

use crate::harness::*;
use firewatch_proto::{AckStatus, AlarmRecord, EventKind};
use std::collections::HashSet;
use std::process::Command;
use std::time::{Duration, Instant};

#[test]
fn kill_9_during_writes_loses_no_acked_alarm() {
    let fx = Fixture::new(800);
    let cfg = write_config(&fx, "");
    let mut child = spawn_engine(&fx, &cfg);
    let (gw, points) = fx.gateway(0);
    let mut g = Gateway::connect(fx.v4_port(), &gw);
    g.subscribe_acks();

    // Stream alarm batches without waiting; collect acks; kill mid-stream.
    let mut acked: HashSet<(u64, u32)> = HashSet::new();
    let mut seq = 0u32;
    let start = Instant::now();
    while acked.len() < 200 && start.elapsed() < Duration::from_secs(60) {
        for _ in 0..5 {
            seq += 1;
            let p = points[seq as usize % points.len()];
            let evs = vec![
                event(p, EventKind::SmokeAlarm, seq),
                event(points[0], EventKind::Heartbeat, seq),
            ];
            g.send_batch(&batch(&gw, u64::from(seq), evs));
        }
        while let Some(ack) = g.next_ack(Duration::from_millis(20)) {
            assert_eq!(ack.status, AckStatus::Accepted as i32);
            acked.extend(ack.durable.iter().map(|e| (e.point_id, e.device_seq)));
        }
    }
    // Keep publishing so the engine is mid-write when it dies.
    for _ in 0..50 {
        seq += 1;
        g.send_batch(&batch(
            &gw,
            u64::from(seq),
            vec![event(points[1], EventKind::SmokeAlarm, seq)],
        ));
    }
    std::thread::sleep(Duration::from_millis(5));
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert!(
        acked.len() >= 200,
        "only {} acked before the kill",
        acked.len()
    );

    // Restart: recovery must leave a log with no corrupt record (read_all would fail).
    let mut child = spawn_engine(&fx, &cfg);
    let alarms = read_topic::<AlarmRecord>(&fx.log_dir(), "fw.alarms");
    let present: HashSet<(u64, u32)> = alarms
        .iter()
        .map(|(_, a)| (a.point_id, a.device_seq))
        .collect();
    let missing: Vec<_> = acked.difference(&present).collect();
    assert!(
        missing.is_empty(),
        "{} acked alarms missing after kill -9: {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    let offsets: Vec<u64> = alarms.iter().map(|(r, _)| r.offset).collect();
    assert!(
        offsets.windows(2).all(|w| w[1] == w[0] + 1),
        "offsets dense"
    );

    // The restarted engine keeps appending after the recovered tail.
    let mut g = Gateway::connect(fx.v4_port(), &gw);
    g.subscribe_acks();
    g.send_batch(&batch(
        &gw,
        1_000_000,
        vec![event(points[2], EventKind::HeatAlarm, 1_000_000)],
    ));
    let ack = g
        .next_ack(Duration::from_secs(10))
        .expect("ack after restart");
    assert_eq!(ack.durable.len(), 1);
    let after = read_topic::<AlarmRecord>(&fx.log_dir(), "fw.alarms");
    assert_eq!(after.len(), alarms.len() + 1);

    // Clean shutdown on SIGTERM exits 0.
    let pid = child.id().to_string();
    Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "SIGTERM exit: {status:?}");
}
