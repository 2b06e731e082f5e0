//! Unit tests of the shard state machine (scenario-level tests: tests/it/scenarios.rs).

use super::*;
use crate::registry::{generate, GenerateOptions};
use firewatch_proto::{DispatchRecord, EventKind as K, IncidentState};

const T0: i64 = 1_800_000_000_000;

fn setup() -> (Shard, Arc<Registry>, BatchCtx) {
    let reg = Arc::new(generate(&GenerateOptions {
        points: 200,
        seed: 1,
    }));
    let rules = Arc::new(ShardRules::new(&PipelineConfig::default(), &reg).unwrap());
    let cov = Arc::new(Coverage::new(&reg));
    let globals = (0..reg.len() as u32).collect();
    let shard = Shard::new(reg.clone(), rules, globals, cov, true, T0);
    let ctx = BatchCtx {
        gateway_id: "gw".into(),
        batch_seq: 1,
        received_ms: T0,
    };
    (shard, reg, ctx)
}

fn ev(point: u32, kind: K, seq: u32) -> RoutedEvent {
    RoutedEvent {
        point,
        local: point,
        event: PointEvent {
            kind: kind as i32,
            device_seq: seq,
            ..Default::default()
        },
    }
}

fn of(out: &[OutRecord], t: Topic) -> Vec<&OutRecord> {
    out.iter().filter(|r| r.topic == t).collect()
}

fn incidents(out: &[OutRecord]) -> Vec<IncidentRecord> {
    of(out, Topic::Incidents)
        .iter()
        .map(|r| IncidentRecord::decode(r.value.as_slice()).unwrap())
        .collect()
}

/// Two points of the same house, and whether the first is in a kitchen.
fn same_house(reg: &Registry) -> (u32, u32) {
    let a = 0u32;
    let b = (1..reg.len() as u32)
        .find(|&i| reg.info(i).house == reg.info(a).house)
        .unwrap();
    (a, b)
}

#[test]
fn alarm_produces_enriched_record_once() {
    let (mut s, reg, ctx) = setup();
    let mut out = Vec::new();
    assert_eq!(
        s.on_event(&ev(5, K::SmokeAlarm, 9), &ctx, T0, &mut out),
        Outcome::Accepted
    );
    let alarms = of(&out, Topic::Alarms);
    assert_eq!(alarms.len(), 1);
    let a = AlarmRecord::decode(alarms[0].value.as_slice()).unwrap();
    assert_eq!(a.point_id, reg.point_id(5));
    assert_eq!(a.location.unwrap().house_id, reg.info(5).house);
    out.clear();
    assert_eq!(
        s.on_event(&ev(5, K::SmokeAlarm, 9), &ctx, T0 + 1000, &mut out),
        Outcome::Duplicate
    );
    assert!(out.is_empty());
}

#[test]
fn second_detector_confirms_and_dispatches() {
    let (mut s, reg, ctx) = setup();
    let (a, b) = same_house(&reg);
    let mut out = Vec::new();
    s.on_event(&ev(a, K::SmokeAlarm, 1), &ctx, T0, &mut out);
    let inc = incidents(&out);
    assert_eq!(inc.len(), 1);
    assert_eq!(inc[0].transition, "opened");
    assert!(of(&out, Topic::Dispatch).is_empty());
    out.clear();
    s.on_event(&ev(b, K::SmokeAlarm, 1), &ctx, T0 + 30_000, &mut out);
    let inc = incidents(&out);
    assert_eq!(inc[0].transition, "confirmed");
    assert_eq!(inc[0].confirm_reason, "second_detector");
    assert_eq!(inc[0].state, IncidentState::Confirmed as i32);
    let d = DispatchRecord::decode(of(&out, Topic::Dispatch)[0].value.as_slice()).unwrap();
    assert_eq!(d.house_id, reg.info(a).house);
    assert_eq!(d.points.len(), 2);
}

#[test]
fn unacked_incident_walks_the_whole_chain() {
    let (mut s, _reg, ctx) = setup();
    let mut out = Vec::new();
    s.on_event(&ev(3, K::HeatAlarm, 1), &ctx, T0, &mut out);
    let mut levels = Vec::new();
    for t in (0..=700).map(|x| T0 + x * 1000) {
        out.clear();
        s.on_tick(t, &mut out);
        for i in incidents(&out)
            .into_iter()
            .filter(|i| i.transition == "escalated")
        {
            levels.push((i.escalation_level, (t - T0) / 1000));
        }
    }
    assert_eq!(levels, vec![(1, 60), (2, 180), (3, 300)]);
}

#[test]
fn commands_close_and_timeline_is_chained() {
    let (mut s, reg, ctx) = setup();
    let p = (0..reg.len() as u32)
        .find(|&i| reg.info(i).policy != 0)
        .unwrap();
    let house = reg.info(p).house;
    let mut out = Vec::new();
    s.on_event(&ev(p, K::ManualAlarm, 1), &ctx, T0, &mut out);
    let id = incidents(&out)[0].incident_id.clone();
    out.clear();
    assert_eq!(
        s.on_command(house, "inc-nope", Command::Ack, "op", T0 + 1000, &mut out),
        Err(RejectReason::UnknownIncident)
    );
    s.on_command(house, &id, Command::Ack, "op", T0 + 10_000, &mut out)
        .unwrap();
    s.on_command(house, &id, Command::Resolve, "op", T0 + 20_000, &mut out)
        .unwrap();
    let tl = of(&out, Topic::InsuranceTimeline);
    assert_eq!(tl.len(), 1);
    let rec = firewatch_proto::InsuranceTimelineRecord::decode(tl[0].value.as_slice()).unwrap();
    assert_eq!(rec.chain_seq, 1);
    assert_eq!(rec.incident.unwrap().state, IncidentState::Resolved as i32);
    assert_eq!(s.open_incidents().count(), 0);
    assert_eq!(
        s.on_command(house, &id, Command::Ack, "op", T0 + 30_000, &mut out),
        Err(RejectReason::UnknownIncident)
    );
}

#[test]
fn missed_heartbeats_go_offline_once_and_restore() {
    let (mut s, reg, ctx) = setup();
    let mut out = Vec::new();
    // Point 0's class supervision window.
    let window = s.rules.supervision_s[reg.info(0).class as usize] as i64 * 1000;
    s.on_event(&ev(0, K::Heartbeat, 1), &ctx, T0, &mut out);
    out.clear();
    s.on_tick(T0 + window - 2000, &mut out);
    assert!(of(&out, Topic::Troubles).iter().all(|r| {
        TroubleRecord::decode(r.value.as_slice()).unwrap().point_id != reg.point_id(0)
    }));
    out.clear();
    s.on_tick(T0 + window + 1500, &mut out);
    let t: Vec<TroubleRecord> = of(&out, Topic::Troubles)
        .iter()
        .map(|r| TroubleRecord::decode(r.value.as_slice()).unwrap())
        .filter(|t| t.point_id == reg.point_id(0))
        .collect();
    assert_eq!(t.len(), 1);
    assert!(t[0].active);
    out.clear();
    s.on_event(&ev(0, K::Heartbeat, 2), &ctx, T0 + window + 5000, &mut out);
    let t: Vec<TroubleRecord> = of(&out, Topic::Troubles)
        .iter()
        .map(|r| TroubleRecord::decode(r.value.as_slice()).unwrap())
        .collect();
    assert_eq!(t.len(), 1);
    assert!(!t[0].active);
}

#[test]
fn out_of_range_local_index_is_ignored() {
    let (mut s, _, ctx) = setup();
    let mut out = Vec::new();
    let mut e = ev(1, K::SmokeAlarm, 1);
    e.local = 1_000_000;
    assert_eq!(s.on_event(&e, &ctx, T0, &mut out), Outcome::Misrouted);
    assert!(out.is_empty());
}

#[test]
fn hot_state_fits_the_budget() {
    // ARCHITECTURE.md and the notes state 104 bytes; the budget is 128.
    assert_eq!(std::mem::size_of::<PointSlot>(), 104);
}

#[test]
fn a_snapshot_never_brings_back_dedup_memory_ahead_of_the_log() {
    let (mut s, reg, ctx) = setup();
    let mut out = Vec::new();
    s.on_event(&ev(7, K::SmokeAlarm, 42), &ctx, T0, &mut out);
    let saved: Vec<(u64, PointSlot)> = s.snapshot().map(|(id, slot)| (id, *slot)).collect();
    let (mut fresh, _, _) = setup();
    for (local, (id, slot)) in saved.iter().enumerate() {
        assert_eq!(*id, reg.point_id(local as u32));
        fresh.restore_point(local as u32, slot, T0 + 5_000);
    }
    // The alarm's record may never have become durable: its retransmission must be accepted.
    out.clear();
    assert_eq!(
        fresh.on_event(&ev(7, K::SmokeAlarm, 42), &ctx, T0 + 6_000, &mut out),
        Outcome::Accepted
    );
    // What the log says is remembered.
    fresh.restore_alarm(8, 9, T0);
    assert_eq!(
        fresh.on_event(&ev(8, K::SmokeAlarm, 9), &ctx, T0 + 6_000, &mut out),
        Outcome::Duplicate
    );
}
