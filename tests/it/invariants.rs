//! Property tests of the shards: random interleavings of alarms, clears, mutes, heartbeats,
//! station commands, gateway presence changes and ticks over the scenario registry
//! (`tests/scenarios/registry.csv`, two shards built like the engine builds them), checked
//! after every step and after a final 2 h of ticks:
//!
//! - at most one open incident per house, in the shards (`open_incidents()`) and in the
//!   emitted `fw.incidents` stream, and both agree;
//! - per incident: `at_ms` non-decreasing, equal to the step's time, never before
//!   `opened_at_ms` (nor are confirmed/acked/on_scene/closed), points never lost, the
//!   escalation level never decreases and stays within 119; no record after closing;
//! - every `fw.alarms` record belongs to the house's open incident, which lists its point;
//! - commands succeed exactly for the open incident's id, and a rejected one writes nothing;
//! - every incident opened is closed or at level 3 (119) after the final 2 h;
//! - the insurance timeline verifies (`ChainHeads::verify_next`) and holds exactly one
//!   record per closed incident of an insured house, written with the closing.
//!
//! Contract checks that the engine once failed have their own tests: no per-point offline
//! trouble while the point's gateway is down, dedup for the whole window, unique incident
//! ids.

use crate::scenarios::{registry, Engine, SHARDS, T0};
use firewatch::config::PipelineConfig;
use firewatch::pipeline::chain::ChainHeads;
use firewatch::pipeline::incident::{is_closed, Command};
use firewatch::pipeline::shard::RECENT_ALARMS;
use firewatch::pipeline::{shard_of_house, BatchCtx, Outcome, RoutedEvent, ShardRules};
use firewatch::registry::Registry;
use firewatch::restore::Restored;
use firewatch::sink::{OutRecord, Topic};
use firewatch_proto::{
    AlarmRecord, EscalationLevel, EventKind, IncidentRecord, InsuranceTimelineRecord, PointEvent,
    RejectReason, TroubleRecord,
};
use proptest::prelude::*;
use prost::Message;
use rustc_hash::FxHashMap;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

/// Points of the scenario registry.
const POINTS: usize = 9;
/// Houses of the scenario registry.
const HOUSES: [u32; 4] = [1, 2, 3, 4];
/// Gateways of the scenario registry.
const GATEWAYS: [&str; 4] = ["gw-1", "gw-2", "gw-3", "gw-4"];
const ALARM_KINDS: [EventKind; 5] = [
    EventKind::SmokeAlarm,
    EventKind::SmokeAlarm,
    EventKind::HeatAlarm,
    EventKind::GasAlarm,
    EventKind::ManualAlarm,
];
const COMMANDS: [Command; 4] = [
    Command::Ack,
    Command::OnScene,
    Command::Resolve,
    Command::FalseAlarm,
];

#[derive(Debug, Clone)]
enum Step {
    Alarm {
        point: usize,
        kind: usize,
        seq: u32,
    },
    Clear {
        point: usize,
        seq: u32,
    },
    Mute {
        point: usize,
        seq: u32,
    },
    Heartbeat {
        point: usize,
        seq: u32,
    },
    Command {
        house: usize,
        cmd: usize,
        wrong_id: bool,
    },
    Gateway {
        gw: usize,
        up: bool,
    },
    Tick {
        secs: i64,
    },
}

fn step() -> impl Strategy<Value = Step> {
    let point = 0..POINTS;
    let seq = 1..12u32;
    prop_oneof![
        5 => (point.clone(), 0..ALARM_KINDS.len(), seq.clone())
            .prop_map(|(point, kind, seq)| Step::Alarm { point, kind, seq }),
        3 => (point.clone(), seq.clone()).prop_map(|(point, seq)| Step::Clear { point, seq }),
        1 => (point.clone(), seq).prop_map(|(point, seq)| Step::Mute { point, seq }),
        3 => (point, 1..10_000u32).prop_map(|(point, seq)| Step::Heartbeat { point, seq }),
        4 => (0..HOUSES.len(), 0..COMMANDS.len(), prop::bool::weighted(0.15))
            .prop_map(|(house, cmd, wrong_id)| Step::Command { house, cmd, wrong_id }),
        1 => (0..GATEWAYS.len(), any::<bool>()).prop_map(|(gw, up)| Step::Gateway { gw, up }),
        5 => prop_oneof![Just(0i64), 1..30i64, 0..=400i64].prop_map(|secs| Step::Tick { secs }),
    ]
}

fn steps() -> impl Strategy<Value = Vec<Step>> {
    prop::collection::vec(step(), 100..300)
}

/// What one incident looked like so far in the stream.
#[derive(Debug)]
struct Track {
    house: u32,
    opened_at: i64,
    last_at: i64,
    level: i32,
    points: Vec<u64>,
    closed: bool,
}

/// Violations found, by kind.
#[derive(Debug, Default)]
struct Violations {
    /// Of the invariants the engine must hold (asserted by `invariants_hold`).
    core: Vec<String>,
    /// A per-point offline trouble while the point's gateway is down.
    offline_while_gateway_down: Vec<String>,
    /// An alarm-class (point, seq) accepted twice within the dedup window.
    dedup: Vec<String>,
    /// An incident id opened again after it closed.
    id_reused: Vec<String>,
}

struct Checker {
    registry: Arc<Registry>,
    engine: Engine,
    now: i64,
    batch_seq: u64,
    dedup_ms: i64,
    tracks: HashMap<String, Track>,
    open_by_house: BTreeMap<u32, String>,
    chain: ChainHeads,
    closings_insured: u64,
    timeline_records: u64,
    accepted_alarms: HashMap<(u64, u32), i64>,
    recent_alarm_seqs: HashMap<u64, std::collections::VecDeque<u32>>,
    gateways_down: HashSet<u32>,
    v: Violations,
}

impl Checker {
    fn new() -> Checker {
        let registry = Arc::new(registry());
        assert_eq!(registry.len(), POINTS);
        let cfg = PipelineConfig::default();
        let rules = Arc::new(ShardRules::new(&cfg, &registry).unwrap());
        let engine = Engine::start(
            &registry,
            &rules,
            Restored::default(),
            &FxHashMap::default(),
            T0,
        );
        Checker {
            registry,
            engine,
            now: T0,
            batch_seq: 0,
            dedup_ms: cfg.dedup_window.as_millis() as i64,
            tracks: HashMap::new(),
            open_by_house: BTreeMap::new(),
            chain: ChainHeads::default(),
            closings_insured: 0,
            timeline_records: 0,
            accepted_alarms: HashMap::new(),
            recent_alarm_seqs: HashMap::new(),
            gateways_down: HashSet::new(),
            v: Violations::default(),
        }
    }

    fn core(&mut self, msg: String) {
        self.v
            .core
            .push(format!("t=+{}s: {msg}", (self.now - T0) / 1000));
    }

    fn event(&mut self, point: usize, kind: EventKind, seq: u32) {
        let idx = point as u32;
        let point_id = self.registry.point_id(idx);
        let (s, local) = self.engine.router.place(idx).unwrap();
        let gw = self.registry.gateway_id(self.registry.info(idx).gateway);
        self.batch_seq += 1;
        let ctx = BatchCtx {
            gateway_id: gw.into(),
            batch_seq: self.batch_seq,
            received_ms: self.now,
        };
        let ev = RoutedEvent {
            point: idx,
            local,
            event: PointEvent {
                point_id,
                kind: kind as i32,
                device_seq: seq,
                device_time_ms: self.now,
                ..Default::default()
            },
        };
        let mut out = Vec::new();
        let outcome = self.engine.shards[s].on_event(&ev, &ctx, self.now, &mut out);
        if outcome == Outcome::Duplicate && !out.is_empty() {
            self.core(format!("a duplicate of point {point_id} wrote records"));
        }
        if outcome == Outcome::Misrouted {
            self.core(format!("point {point_id} misrouted"));
        }
        self.records(&out);
    }

    fn apply(&mut self, step: &Step) {
        match *step {
            Step::Alarm { point, kind, seq } => self.event(point, ALARM_KINDS[kind], seq),
            Step::Clear { point, seq } => self.event(point, EventKind::AlarmClear, seq),
            Step::Mute { point, seq } => self.event(point, EventKind::Mute, seq),
            Step::Heartbeat { point, seq } => self.event(point, EventKind::Heartbeat, seq),
            Step::Command {
                house,
                cmd,
                wrong_id,
            } => {
                let house = HOUSES[house];
                let open = self
                    .engine
                    .open_incident(house)
                    .map(|r| r.incident_id.clone());
                let id = match (&open, wrong_id) {
                    (Some(id), false) => id.clone(),
                    _ => format!("inc-{house}-1"),
                };
                let mut out = Vec::new();
                let s = shard_of_house(house, SHARDS);
                let res = self.engine.shards[s].on_command(
                    house,
                    &id,
                    COMMANDS[cmd],
                    "op",
                    self.now,
                    &mut out,
                );
                match (res, open.is_some() && !wrong_id) {
                    (Ok(()), true) => {}
                    (Err(RejectReason::UnknownIncident), false) if out.is_empty() => {}
                    (res, expected_ok) => self.core(format!(
                        "command {id} for house {house}: {res:?}, expected ok: {expected_ok}, \
                         {} records",
                        out.len()
                    )),
                }
                self.records(&out);
            }
            Step::Gateway { gw, up } => {
                let g = self.registry.gateway_idx(GATEWAYS[gw]).unwrap();
                if up {
                    self.gateways_down.remove(&g);
                } else {
                    self.gateways_down.insert(g);
                }
                self.engine.gateway(GATEWAYS[gw], up, self.now);
            }
            Step::Tick { secs } => self.tick(secs * 1000),
        }
        self.cross_check();
    }

    fn tick(&mut self, advance_ms: i64) {
        self.now += advance_ms;
        let mut out = Vec::new();
        self.engine.tick(self.now, &mut out);
        self.records(&out);
    }

    /// Checks the records of one step (one event, command or tick).
    fn records(&mut self, out: &[OutRecord]) {
        let mut closings: Vec<(String, i32)> = Vec::new();
        let mut timelines: Vec<(String, i32)> = Vec::new();
        let mut alarms: Vec<(u64, u32)> = Vec::new();
        for r in out {
            if r.ts_ms != self.now {
                self.core(format!("{} record at {} != now", r.topic.name(), r.ts_ms));
            }
            match r.topic {
                Topic::Incidents => {
                    let i = IncidentRecord::decode(r.value.as_slice()).unwrap();
                    if let Some(c) = self.incident(&i) {
                        closings.push(c);
                    }
                }
                Topic::InsuranceTimeline => {
                    let t = InsuranceTimelineRecord::decode(r.value.as_slice()).unwrap();
                    self.timeline_records += 1;
                    if let Err(e) = self.chain.verify_next(&t, self.timeline_records) {
                        self.core(format!("timeline does not verify: {e}"));
                    }
                    let i = t.incident.unwrap_or_default();
                    let policy = i.location.map_or(0, |l| l.policy_id);
                    if policy == 0 || policy != t.policy_id {
                        self.core(format!(
                            "timeline record of policy {} for {} (policy {policy})",
                            t.policy_id, i.incident_id
                        ));
                    }
                    timelines.push((i.incident_id, i.state));
                }
                Topic::Alarms => {
                    let a = AlarmRecord::decode(r.value.as_slice()).unwrap();
                    let key = (a.point_id, a.device_seq);
                    // Dedup memory is bounded: the point's last RECENT_ALARMS alarm seqs.
                    // Beyond that a retransmission may be accepted again (fail-safe: a
                    // duplicate record rather than a dropped alarm), so only a repeat of
                    // one of those is a violation.
                    let recent = self.recent_alarm_seqs.entry(a.point_id).or_default();
                    // The engine remembers every alarm it accepts (also one accepted again
                    // after the window), in a ring of RECENT_ALARMS: mirror exactly that.
                    let remembered = recent.contains(&a.device_seq);
                    recent.push_back(a.device_seq);
                    if recent.len() > RECENT_ALARMS {
                        recent.pop_front();
                    }
                    if let Some(&prev) = self.accepted_alarms.get(&key) {
                        if remembered && self.now - prev <= self.dedup_ms {
                            self.v.dedup.push(format!(
                                "point {} seq {} accepted at +{}s and again at +{}s",
                                a.point_id,
                                a.device_seq,
                                (prev - T0) / 1000,
                                (self.now - T0) / 1000
                            ));
                        }
                    }
                    self.accepted_alarms.insert(key, self.now);
                    alarms.push((a.point_id, a.location.unwrap_or_default().house_id));
                }
                Topic::Troubles => {
                    let t = TroubleRecord::decode(r.value.as_slice()).unwrap();
                    if t.kind == "offline" && t.active {
                        let (_, info) = self.registry.lookup(t.point_id).unwrap();
                        if self.gateways_down.contains(&info.gateway) {
                            self.v.offline_while_gateway_down.push(format!(
                                "t=+{}s: point {} offline while {} is down",
                                (self.now - T0) / 1000,
                                t.point_id,
                                t.gateway_id
                            ));
                        }
                    }
                }
                _ => {}
            }
        }
        // Exactly one timeline record per closing of an insured house, with the closing.
        if closings != timelines {
            self.core(format!(
                "closings of insured houses {closings:?} but timeline records {timelines:?}"
            ));
        }
        // Every accepted alarm belongs to its house's open incident.
        for (point, house) in alarms {
            let ok = self
                .open_by_house
                .get(&house)
                .and_then(|id| self.tracks.get(id))
                .is_some_and(|t| t.points.contains(&point));
            if !ok {
                self.core(format!(
                    "alarm of point {point} in house {house} without an open incident listing it"
                ));
            }
        }
    }

    /// Checks one incident record; returns (id, state) when it closed an insured house's
    /// incident.
    fn incident(&mut self, i: &IncidentRecord) -> Option<(String, i32)> {
        let loc = i.location.unwrap_or_default();
        let house = loc.house_id;
        let id = i.incident_id.clone();
        if i.at_ms != self.now {
            self.core(format!("{id}: at_ms {} != now", i.at_ms));
        }
        for (what, at) in [
            ("confirmed", i.confirmed_at_ms),
            ("acked", i.acked_at_ms),
            ("on_scene", i.on_scene_at_ms),
            ("closed", i.closed_at_ms),
            ("at", i.at_ms),
        ] {
            if at != 0 && at < i.opened_at_ms {
                self.core(format!(
                    "{id}: {what} {at} before opened {}",
                    i.opened_at_ms
                ));
            }
        }
        if i.escalation_level > EscalationLevel::Dispatch119 as i32 {
            self.core(format!("{id}: escalation level {}", i.escalation_level));
        }
        if i.transition == "opened" {
            if let Some(other) = self.open_by_house.get(&house) {
                let other = other.clone();
                self.core(format!(
                    "{id} opened while {other} is open in house {house}"
                ));
            }
            if self.tracks.get(&id).is_some_and(|t| t.closed) {
                self.v
                    .id_reused
                    .push(format!("{id} opened again after it closed"));
            }
            self.tracks.insert(
                id.clone(),
                Track {
                    house,
                    opened_at: i.opened_at_ms,
                    last_at: i.at_ms,
                    level: i.escalation_level,
                    points: i.points.clone(),
                    closed: false,
                },
            );
            self.open_by_house.insert(house, id.clone());
        } else {
            let mut errs = Vec::new();
            match self.tracks.get_mut(&id) {
                None => errs.push(format!("{id}: {} before opened", i.transition)),
                Some(t) => {
                    if t.closed {
                        errs.push(format!("{id}: {} after it closed", i.transition));
                    }
                    if i.at_ms < t.last_at {
                        errs.push(format!("{id}: at_ms went back"));
                    }
                    if i.opened_at_ms != t.opened_at || house != t.house {
                        errs.push(format!("{id}: opened_at or house changed"));
                    }
                    if i.escalation_level < t.level {
                        errs.push(format!("{id}: escalation level went down"));
                    }
                    if let Some(p) = t.points.iter().find(|p| !i.points.contains(p)) {
                        errs.push(format!("{id}: lost point {p}"));
                    }
                    t.last_at = i.at_ms;
                    t.level = i.escalation_level;
                    t.points = i.points.clone();
                }
            }
            for e in errs {
                self.core(e);
            }
        }
        if is_closed(i.state) {
            if i.closed_at_ms != i.at_ms {
                self.core(format!(
                    "{id}: closed_at {} != at {}",
                    i.closed_at_ms, i.at_ms
                ));
            }
            if let Some(t) = self.tracks.get_mut(&id) {
                t.closed = true;
            }
            if self.open_by_house.get(&house) == Some(&id) {
                self.open_by_house.remove(&house);
            }
            if loc.policy_id != 0 {
                self.closings_insured += 1;
                return Some((id, i.state));
            }
        }
        None
    }

    /// The shards and the stream agree on the open incidents, at most one per house.
    fn cross_check(&mut self) {
        let mut in_shards: BTreeMap<u32, String> = BTreeMap::new();
        let mut errs = Vec::new();
        for (k, s) in self.engine.shards.iter().enumerate() {
            for r in s.open_incidents() {
                let house = r.location.map_or(0, |l| l.house_id);
                if shard_of_house(house, SHARDS) != k {
                    errs.push(format!("incident of house {house} on shard {k}"));
                }
                if let Some(prev) = in_shards.insert(house, r.incident_id.clone()) {
                    errs.push(format!(
                        "house {house} has two open incidents: {prev}, {}",
                        r.incident_id
                    ));
                }
            }
        }
        if in_shards != self.open_by_house {
            errs.push(format!(
                "open incidents in the shards {in_shards:?} != in the stream {:?}",
                self.open_by_house
            ));
        }
        for e in errs {
            self.core(e);
        }
    }

    /// Ticks 2 h further (10 s steps), then checks that every incident is closed or at 119.
    fn finish(&mut self) {
        for _ in 0..720 {
            self.tick(10_000);
            self.cross_check();
        }
        let mut errs = Vec::new();
        for (id, t) in &self.tracks {
            if !t.closed && t.level != EscalationLevel::Dispatch119 as i32 {
                errs.push(format!(
                    "{id} neither closed nor at 119 after 2 h (level {})",
                    t.level
                ));
            }
        }
        for s in &self.engine.shards {
            for r in s.open_incidents() {
                if r.escalation_level != EscalationLevel::Dispatch119 as i32 {
                    errs.push(format!("{} still open below 119", r.incident_id));
                }
            }
        }
        if self.closings_insured != self.timeline_records {
            errs.push(format!(
                "{} insured closings, {} timeline records",
                self.closings_insured, self.timeline_records
            ));
        }
        for e in errs {
            self.core(e);
        }
    }
}

fn run(steps: &[Step]) -> Violations {
    let mut c = Checker::new();
    for s in steps {
        c.apply(s);
    }
    c.finish();
    c.v
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 64,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn invariants_hold(steps in steps()) {
        let v = run(&steps);
        prop_assert!(v.core.is_empty(), "{:#?}", v.core);
    }

    #[test]
    fn no_per_point_offline_trouble_while_the_gateway_is_down(steps in steps()) {
        let v = run(&steps);
        prop_assert!(v.offline_while_gateway_down.is_empty(), "{:#?}", v.offline_while_gateway_down);
    }

    #[test]
    fn dedup_holds_for_the_whole_window(steps in steps()) {
        let v = run(&steps);
        prop_assert!(v.dedup.is_empty(), "{:#?}", v.dedup);
    }

    #[test]
    fn incident_ids_are_never_reused(steps in steps()) {
        let v = run(&steps);
        prop_assert!(v.id_reused.is_empty(), "{:#?}", v.id_reused);
    }
}

/// The smallest reproduction of the incident id reuse: one batch (one `now`) from a kitchen
/// detector holding an alarm, its clear (a nuisance: the incident closes) and a new alarm.
#[test]
fn an_incident_reopened_in_the_same_millisecond_gets_a_new_id() {
    let mut c = Checker::new();
    let kitchen = (0..POINTS)
        .find(|&p| c.registry.point_id(p as u32) == 13)
        .unwrap();
    c.event(kitchen, EventKind::SmokeAlarm, 1);
    c.event(kitchen, EventKind::AlarmClear, 2);
    c.event(kitchen, EventKind::SmokeAlarm, 3);
    assert_eq!(c.open_by_house.len(), 1);
    assert!(c.v.id_reused.is_empty(), "{:?}", c.v.id_reused);
}

/// The checker itself: a clean, hand-made run has no violation, and a known bug's
/// reproduction is caught by the right category.
#[test]
fn the_checker_sees_what_it_should() {
    let v = run(&[
        Step::Heartbeat { point: 5, seq: 1 },
        Step::Alarm {
            point: 0,
            kind: 0,
            seq: 1,
        },
        Step::Tick { secs: 20 },
        Step::Command {
            house: 0,
            cmd: 0,
            wrong_id: false,
        },
        Step::Command {
            house: 0,
            cmd: 0,
            wrong_id: true,
        },
        Step::Alarm {
            point: 1,
            kind: 2,
            seq: 1,
        },
        Step::Command {
            house: 0,
            cmd: 2,
            wrong_id: false,
        },
        Step::Alarm {
            point: 3,
            kind: 0,
            seq: 1,
        },
        Step::Tick { secs: 5 },
        Step::Clear { point: 3, seq: 2 },
    ]);
    assert!(v.core.is_empty(), "{:#?}", v.core);
    assert!(v.dedup.is_empty() && v.id_reused.is_empty());
    assert!(v.offline_while_gateway_down.is_empty());
}
