//! Golden scenarios: each `tests/scenarios/*.scn` file holds an input trace and, below it,
//! the exact records the shards must produce for it. The shards are driven through their
//! pure API (`on_event`, `on_tick`, `on_command`, `on_gateway`) with scenario time; no
//! threads, no clock.
//!
//! # File format
//!
//! ```text
//! # comment (anywhere in the input part; blank lines are skipped too)
//! config device_class.polled=1h+10m   # PipelineConfig overrides, before the first input
//! show fw.insurance.risk               # also render a topic hidden by default
//! hide fw.troubles                     # do not render a topic
//! @0s    event point=11 kind=smoke_alarm seq=1
//! @0s    event point=31,32,33 kind=heartbeat seq=1          # several points, one each
//! @0s    event point=11 kind=smoke_alarm seq=7 repeat=50 via=gw-1,gw-2,gw-3
//! @20s   command house=1 incident=open kind=ack operator=li
//! @30s   restart resume=40s
//! @70s   gateway gw-3 down
//! @5m    end
//! --- expected
//! +0s fw.alarms key=1 point=11 kind=smoke_alarm seq=1 gw=gw-1 house=1 room=101 room_type=bedroom
//! ...
//! ```
//!
//! Times are relative to `T0` = 1_800_000_000_000 ms (`@30s`, `@1.5s`, `@500ms`, `@2m`,
//! `@1h`); inputs must be in time order.
//!
//! Inputs:
//! - `event point=P[,P…] kind=K seq=S [repeat=N] [via=GW[,GW…]] [battery=B] [value=V]`:
//!   delivers the event `repeat` times through each gateway of `via` (default: the point's
//!   own gateway), i.e. `repeat × |via|` `on_event` calls, each with its own batch context
//!   (gateway, fresh batch seq, received = now). `kind` is a wire name (`smoke_alarm`,
//!   `heartbeat`, `alarm_clear`, …).
//! - `command house=H incident=REF kind=ack|on_scene|resolve|false_alarm [operator=O]`:
//!   `REF` is `open` (the house's open incident, `none` if there is none), `last` (the last
//!   incident id of the house seen on `fw.incidents`, even if closed) or a literal id.
//!   (Station ownership is checked by ingest, not here.)
//! - `gateway GW down|up`: `on_gateway` on every shard holding points of `GW`.
//! - `tick`: one extra tick at that time (the harness ticks every second anyway).
//! - `restart resume=T`: the engine stops at this time (after its tick of this second);
//!   every record produced so far is written to an embedded event log, every shard's points
//!   are snapshotted (`snapshot::encode`/`decode`); fresh shards are built at `T` with
//!   `restore::from_log` + `restore::build_shards`; ticking resumes at `T`. No input may
//!   fall inside the outage.
//! - `end`: run (ticking) until this time; default: the time of the last input.
//!
//! Ticks: `on_tick` runs at every whole second from T0 to the end, so timers fire at their
//! exact second; inputs at a second are applied before that second's tick. Two shards
//! (houses 2 and 3 on shard 0, houses 1 and 4 on shard 1); on a tick, shard 0's records
//! come before shard 1's.
//!
//! # Expected output
//!
//! One line per record in production order: `+TIME TOPIC key=KEY fields…` (TIME = the
//! record's `ts_ms`), with the fields that matter per topic (see [`render`]); timestamps are
//! relative to T0 and omitted when unset. Harness lines start with `!`:
//! `! duplicate point=P seq=S count=N` (deliveries answered `Outcome::Duplicate` by one
//! input line), `! command … -> REASON` (a rejected command; accepted ones print nothing
//! themselves), `! engine stopped` / `! engine restarted …`.
//!
//! Filter (deterministic): `fw.point-status` records with cause `first_seen` are hidden
//! unless the scenario says `show fw.point-status`; `fw.insurance.risk` and `fw.coverage`
//! are hidden unless shown; `hide TOPIC` hides any topic. Hidden records are still written
//! to the log at a restart and still checked by the harness (the timeline chain verifies,
//! incident records are self-consistent).
//!
//! `UPDATE_GOLDEN=1 cargo test --test it scenarios` rewrites the expected part of every
//! scenario that runs; review each change against the alarm semantics before keeping it.
//! A scenario whose input part has the line `golden hand-written` (an expected output
//! written by hand before the engine got it right: a regression test) is never rewritten.

use firewatch::config::{DeviceClassConfig, PipelineConfig};
use firewatch::eventlog::EventLog;
use firewatch::pipeline::aggregate::Coverage;
use firewatch::pipeline::chain::ChainHeads;
use firewatch::pipeline::incident::Command;
use firewatch::pipeline::shard::PointSlot;
use firewatch::pipeline::{
    shard_of_house, snapshot, BatchCtx, Outcome, RoutedEvent, Router, Shard, ShardRules,
};
use firewatch::registry::Registry;
use firewatch::restore::{self, Restored};
use firewatch::sink::{OutRecord, Topic};
use firewatch_proto::{
    AlarmRecord, CoverageRecord, DeadLetterRecord, DispatchRecord, EnumName, EscalationLevel,
    EventKind, IncidentRecord, IncidentState, InsuranceTimelineRecord, PointEvent, PointState,
    PointStatusRecord, RejectReason, RiskRecord, RoomType, TroubleRecord,
};
use prost::Message;
use rustc_hash::FxHashMap;
use std::collections::{BTreeSet, HashMap};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

mod format;
mod render;
use format::*;
use render::*;

/// Scenario time zero, Unix ms.
pub const T0: i64 = 1_800_000_000_000;
/// Shards the scenarios run on.
pub const SHARDS: usize = 2;
const SEPARATOR: &str = "--- expected";

/// The scenario directory.
pub fn scenario_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/scenarios")
}

/// The scenario registry (`tests/scenarios/registry.csv`).
pub fn registry() -> Registry {
    let path = scenario_dir().join("registry.csv");
    let text = std::fs::read_to_string(&path).unwrap();
    Registry::parse(&text, "registry.csv").unwrap()
}

// ---------------------------------------------------------------------------------------
// Running

/// Shards built the way the engine builds them (router placement, `restore::build_shards`).
pub struct Engine {
    /// The registry.
    pub registry: Arc<Registry>,
    /// Placement of points.
    pub router: Router,
    /// The shards.
    pub shards: Vec<Shard>,
}

impl Engine {
    /// Fresh (or restored) shards starting at `start_ms`.
    pub fn start(
        registry: &Arc<Registry>,
        rules: &Arc<ShardRules>,
        restored: Restored,
        saved: &FxHashMap<u64, PointSlot>,
        start_ms: i64,
    ) -> Engine {
        let (router, inputs) = Router::new(registry, SHARDS, 16);
        let globals: Vec<_> = inputs.iter().map(|i| i.globals.clone()).collect();
        let coverage = Arc::new(Coverage::new(registry));
        let shards = restore::build_shards(
            registry, rules, &coverage, &router, &globals, restored, saved, start_ms,
        );
        Engine {
            registry: registry.clone(),
            router,
            shards,
        }
    }

    /// (shard, local) of a point id.
    pub fn place(&self, point_id: u64) -> (usize, u32, u32) {
        let (idx, _) = self
            .registry
            .lookup(point_id)
            .unwrap_or_else(|| panic!("point {point_id} is not in the registry"));
        let (s, local) = self.router.place(idx).unwrap();
        (s, local, idx)
    }

    /// The open incident of a house, if any.
    pub fn open_incident(&self, house: u32) -> Option<&IncidentRecord> {
        self.shards[shard_of_house(house, SHARDS)]
            .open_incidents()
            .find(|r| r.location.is_some_and(|l| l.house_id == house))
    }

    /// Ticks every shard at `now_ms`.
    pub fn tick(&mut self, now_ms: i64, out: &mut Vec<OutRecord>) {
        for s in &mut self.shards {
            s.on_tick(now_ms, out);
        }
    }

    /// Presence change of a gateway.
    pub fn gateway(&mut self, gateway_id: &str, up: bool, now_ms: i64) {
        let gw = self
            .registry
            .gateway_idx(gateway_id)
            .unwrap_or_else(|| panic!("gateway {gateway_id} is not in the registry"));
        let mut per: Vec<Vec<u32>> = vec![Vec::new(); self.shards.len()];
        for &p in self.registry.gateway_points(gw) {
            let (s, local) = self.router.place(p).unwrap();
            per[s].push(local);
        }
        for (s, locals) in per.iter().enumerate() {
            if !locals.is_empty() {
                self.shards[s].on_gateway(locals, up, now_ms);
            }
        }
    }
}

struct Run<'a> {
    sc: &'a Scenario,
    registry: Arc<Registry>,
    rules: Arc<ShardRules>,
    engine: Engine,
    /// Every record produced, in order.
    all: Vec<OutRecord>,
    /// Records already written to the log.
    written: usize,
    log_dir: tempfile::TempDir,
    lines: Vec<String>,
    batch_seq: u64,
    last_incident: HashMap<u32, String>,
    chain: ChainHeads,
    down_until: Option<i64>,
}

impl Run<'_> {
    fn emit(&mut self, out: Vec<OutRecord>) {
        for r in out {
            self.check(&r);
            if let Some(line) = render(&r, self.sc) {
                self.lines.push(line);
            }
            self.all.push(r);
        }
    }

    /// Checks that hold for every record of every scenario.
    fn check(&mut self, r: &OutRecord) {
        match r.topic {
            Topic::Incidents => {
                let i = IncidentRecord::decode(r.value.as_slice()).unwrap();
                assert_eq!(i.at_ms, r.ts_ms, "{}: incident at_ms", self.sc.name);
                let house = i.location.unwrap_or_default().house_id;
                assert_eq!(r.key, house.to_string().into_bytes());
                self.last_incident.insert(house, i.incident_id.clone());
            }
            Topic::InsuranceTimeline => {
                let t = InsuranceTimelineRecord::decode(r.value.as_slice()).unwrap();
                self.chain
                    .verify_next(&t, 0)
                    .unwrap_or_else(|e| panic!("{}: timeline: {e}", self.sc.name));
            }
            _ => {}
        }
    }

    fn tick(&mut self, now_ms: i64) {
        let mut out = Vec::new();
        self.engine.tick(now_ms, &mut out);
        self.emit(out);
    }

    fn apply(&mut self, input: &Input) {
        let now = input.at_ms;
        let ctx_err = |e: &str| format!("{}.scn line {}: {e}", self.sc.name, input.line);
        if let Some(until) = self.down_until {
            assert!(
                now >= until,
                "{}",
                ctx_err("input while the engine is down")
            );
        }
        match &input.action {
            Action::Event {
                points,
                kind,
                seq,
                repeat,
                via,
                battery,
                value,
            } => {
                for &point_id in points {
                    let (s, local, idx) = self.engine.place(point_id);
                    let own = self
                        .registry
                        .gateway_id(self.registry.info(idx).gateway)
                        .to_string();
                    let via = if via.is_empty() {
                        vec![own]
                    } else {
                        via.clone()
                    };
                    let ev = RoutedEvent {
                        point: idx,
                        local,
                        event: PointEvent {
                            point_id,
                            kind: *kind as i32,
                            device_seq: *seq,
                            device_time_ms: now,
                            value: *value,
                            battery_pct: *battery,
                            rssi_dbm: 0,
                        },
                    };
                    let mut dups = 0;
                    let mut out = Vec::new();
                    for _ in 0..*repeat {
                        for gw in &via {
                            self.batch_seq += 1;
                            let ctx = BatchCtx {
                                gateway_id: gw.as_str().into(),
                                batch_seq: self.batch_seq,
                                received_ms: now,
                            };
                            match self.engine.shards[s].on_event(&ev, &ctx, now, &mut out) {
                                Outcome::Accepted => {}
                                Outcome::Duplicate => dups += 1,
                                Outcome::Misrouted => panic!("{}", ctx_err("misrouted")),
                            }
                        }
                    }
                    self.emit(out);
                    if dups > 0 {
                        self.lines.push(format!(
                            "{} ! duplicate point={point_id} seq={seq} count={dups}",
                            rel(now)
                        ));
                    }
                }
            }
            Action::Command {
                house,
                incident,
                cmd,
                operator,
            } => {
                let id = match incident {
                    IncRef::Open => self
                        .engine
                        .open_incident(*house)
                        .map_or_else(|| "none".to_string(), |r| r.incident_id.clone()),
                    IncRef::Last => self
                        .last_incident
                        .get(house)
                        .cloned()
                        .unwrap_or_else(|| "none".to_string()),
                    IncRef::Id(id) => id.clone(),
                };
                let mut out = Vec::new();
                let s = shard_of_house(*house, SHARDS);
                let res =
                    self.engine.shards[s].on_command(*house, &id, *cmd, operator, now, &mut out);
                if let Err(reason) = res {
                    assert!(
                        out.is_empty(),
                        "{}",
                        ctx_err("a rejected command wrote records")
                    );
                    self.lines.push(format!(
                        "{} ! command house={house} incident={id} kind={} -> {}",
                        rel(now),
                        command_name(*cmd),
                        reason.wire_name()
                    ));
                }
                self.emit(out);
            }
            Action::Gateway { id, up } => self.engine.gateway(id, *up, now),
            Action::Tick => self.tick(now),
            Action::End => {}
            Action::Restart { resume_ms } => self.restart(now, *resume_ms),
        }
    }

    fn restart(&mut self, stop_ms: i64, resume_ms: i64) {
        self.lines
            .push(format!("{} ! engine stopped", rel(stop_ms)));
        let dir = self.log_dir.path().join("log");
        let mut log = EventLog::open(&dir, 1 << 20).unwrap();
        for r in &self.all[self.written..] {
            log.append(r.topic.name(), r.ts_ms, &r.key, &r.value)
                .unwrap();
        }
        log.flush(true).unwrap();
        drop(log);
        self.written = self.all.len();
        let mut saved = FxHashMap::default();
        for s in &self.engine.shards {
            let bytes = snapshot::encode(s.snapshot());
            snapshot::decode(&bytes, &mut saved).unwrap();
        }
        let dedup_ms = self.sc.config.dedup_window.as_millis() as i64;
        let restored = restore::from_log(&dir, resume_ms, dedup_ms).unwrap();
        self.lines.push(format!(
            "{} ! engine restarted incidents={} chains={} recent_alarms={}",
            rel(resume_ms),
            restored.incidents.len(),
            restored.chains.len(),
            restored.recent_alarms.len()
        ));
        self.engine = Engine::start(&self.registry, &self.rules, restored, &saved, resume_ms);
        self.down_until = Some(resume_ms);
    }
}

fn command_name(c: Command) -> &'static str {
    match c {
        Command::Ack => "ack",
        Command::OnScene => "on_scene",
        Command::Resolve => "resolve",
        Command::FalseAlarm => "false_alarm",
    }
}

fn execute(sc: &Scenario) -> Vec<String> {
    let registry = Arc::new(registry());
    let rules = Arc::new(ShardRules::new(&sc.config, &registry).unwrap());
    let engine = Engine::start(
        &registry,
        &rules,
        Restored::default(),
        &FxHashMap::default(),
        T0,
    );
    let mut run = Run {
        sc,
        registry,
        rules,
        engine,
        all: Vec::new(),
        written: 0,
        log_dir: tempfile::tempdir().unwrap(),
        lines: Vec::new(),
        batch_seq: 0,
        last_incident: HashMap::new(),
        chain: ChainHeads::default(),
        down_until: None,
    };
    let end_ms = sc.inputs.last().map_or(T0, |i| i.at_ms);
    let mut next_tick = T0;
    for input in &sc.inputs {
        while next_tick < input.at_ms {
            run.tick(next_tick);
            next_tick += 1000;
        }
        if let Action::Restart { resume_ms } = input.action {
            while next_tick <= input.at_ms {
                run.tick(next_tick);
                next_tick += 1000;
            }
            assert!(resume_ms > input.at_ms, "resume must be after the stop");
            next_tick = resume_ms;
        }
        run.apply(input);
    }
    while next_tick <= end_ms {
        run.tick(next_tick);
        next_tick += 1000;
    }
    run.lines
}

/// A small line diff (longest common subsequence) for failure messages.
fn diff(expected: &[String], actual: &[String]) -> String {
    let (n, m) = (expected.len(), actual.len());
    let mut lcs = vec![vec![0u32; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            lcs[i][j] = if expected[i] == actual[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let (mut i, mut j) = (0, 0);
    let mut s = String::new();
    while i < n || j < m {
        if i < n && j < m && expected[i] == actual[j] {
            let _ = writeln!(s, "  {}", expected[i]);
            i += 1;
            j += 1;
        } else if j < m && (i == n || lcs[i][j + 1] >= lcs[i + 1][j]) {
            let _ = writeln!(s, "+ {}", actual[j]);
            j += 1;
        } else {
            let _ = writeln!(s, "- {}", expected[i]);
            i += 1;
        }
    }
    s
}

/// Runs `tests/scenarios/{name}.scn` and compares (or, with `UPDATE_GOLDEN=1`, rewrites)
/// its expected part.
fn golden(name: &str) {
    let path = scenario_dir().join(format!("{name}.scn"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let sc = parse(name, &text).unwrap_or_else(|e| panic!("{e}"));
    let actual = execute(&sc);
    if !sc.hand_written && std::env::var_os("UPDATE_GOLDEN").is_some_and(|v| v == "1") {
        let head = match sc.text.find(&format!("\n{SEPARATOR}")) {
            Some(i) => &sc.text[..i + 1],
            None => sc.text.as_str(),
        };
        let mut new = head.to_string();
        if !new.ends_with('\n') {
            new.push('\n');
        }
        new.push_str(SEPARATOR);
        new.push('\n');
        for l in &actual {
            new.push_str(l);
            new.push('\n');
        }
        std::fs::write(&path, new).unwrap();
        return;
    }
    let expected = sc.expected.unwrap_or_else(|| {
        panic!("{name}.scn has no `{SEPARATOR}` section (UPDATE_GOLDEN=1 writes one)")
    });
    if expected != actual {
        panic!(
            "scenario {name} ({}) differs from its golden output \
             (- expected, + actual; UPDATE_GOLDEN=1 rewrites after review):\n{}",
            path.display(),
            diff(&expected, &actual)
        );
    }
}

/// Every scenario file has a test below (the list is checked against the directory).
const SCENARIOS: &[&str] = &[
    "01_double_knock",
    "02_kitchen_nuisance",
    "03_heat_alarm",
    "04_escalation_chain",
    "05_station_in_time",
    "06_duplicate_storm",
    "07_gateway_outage",
    "08_missed_heartbeats",
    "09_unknown_incident_commands",
    "10_restart_mid_incident",
    "11_gateway_down_before_first_contact",
    "12_restart_keeps_alarm_clocks",
    "13_dedup_window_many_events",
];

#[test]
fn every_scenario_file_has_a_test() {
    let mut files: Vec<String> = std::fs::read_dir(scenario_dir())
        .unwrap()
        .filter_map(|e| {
            let name = e.ok()?.file_name().into_string().ok()?;
            name.strip_suffix(".scn").map(str::to_string)
        })
        .collect();
    files.sort();
    let mut known: Vec<String> = SCENARIOS.iter().map(|s| s.to_string()).collect();
    known.sort();
    assert_eq!(files, known);
}

#[test]
fn scenario_format_rejects_mistakes() {
    let bad = [
        "@0s event point=11 kind=smoke seq=1",
        "@0s event point=11 kind=smoke_alarm",
        "@0s event point=11 kind=smoke_alarm seq=1 colour=red",
        "@10s tick\n@5s tick",
        "@0s command house=1 incident=open kind=shout",
        "@0s tick\nconfig dedup_window=1s",
        "config no_such_key=1s",
        "show fw.nothing",
        "@5 tick",
    ];
    for text in bad {
        assert!(parse("bad", text).is_err(), "accepted: {text}");
    }
    let sc = parse(
        "ok",
        "config device_class.polled=1h+10m station_class.grassroots=30s/2m/4m\n@1.5s tick\n--- expected\n+1.5s x\n",
    )
    .unwrap();
    assert_eq!(sc.inputs[0].at_ms, T0 + 1500);
    assert_eq!(sc.expected.unwrap(), vec!["+1.5s x".to_string()]);
    assert_eq!(rel(T0 + 1500), "+1.5s");
    assert_eq!(rel(T0 + 90_000), "+90s");
}

#[test]
fn scenario_01_double_knock() {
    golden("01_double_knock");
}

#[test]
fn scenario_02_kitchen_nuisance() {
    golden("02_kitchen_nuisance");
}

#[test]
fn scenario_03_heat_alarm() {
    golden("03_heat_alarm");
}

#[test]
fn scenario_04_escalation_chain() {
    golden("04_escalation_chain");
}

#[test]
fn scenario_05_station_in_time() {
    golden("05_station_in_time");
}

#[test]
fn scenario_06_duplicate_storm() {
    golden("06_duplicate_storm");
}

#[test]
fn scenario_07_gateway_outage() {
    golden("07_gateway_outage");
}

#[test]
fn scenario_08_missed_heartbeats() {
    golden("08_missed_heartbeats");
}

#[test]
fn scenario_09_unknown_incident_commands() {
    golden("09_unknown_incident_commands");
}

#[test]
fn scenario_10_restart_mid_incident() {
    golden("10_restart_mid_incident");
}

#[test]
fn scenario_11_gateway_down_before_first_contact() {
    golden("11_gateway_down_before_first_contact");
}

#[test]
fn scenario_12_restart_keeps_alarm_clocks() {
    golden("12_restart_keeps_alarm_clocks");
}

#[test]
fn scenario_13_dedup_window_many_events() {
    golden("13_dedup_window_many_events");
}
