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
// Parsing

#[derive(Debug, Clone)]
enum IncRef {
    Open,
    Last,
    Id(String),
}

#[derive(Debug, Clone)]
enum Action {
    Event {
        points: Vec<u64>,
        kind: EventKind,
        seq: u32,
        repeat: u32,
        via: Vec<String>,
        battery: u32,
        value: f32,
    },
    Command {
        house: u32,
        incident: IncRef,
        cmd: Command,
        operator: String,
    },
    Gateway {
        id: String,
        up: bool,
    },
    Tick,
    Restart {
        resume_ms: i64,
    },
    End,
}

#[derive(Debug, Clone)]
struct Input {
    at_ms: i64,
    line: usize,
    action: Action,
}

struct Scenario {
    name: String,
    text: String,
    config: PipelineConfig,
    show: BTreeSet<&'static str>,
    hide: BTreeSet<&'static str>,
    inputs: Vec<Input>,
    expected: Option<Vec<String>>,
    hand_written: bool,
}

/// `30s`, `1.5s`, `500ms`, `2m`, `1h` → ms.
fn parse_duration_ms(s: &str) -> Result<i64, String> {
    let (num, unit) = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .map(|i| s.split_at(i))
        .ok_or_else(|| format!("duration {s:?} has no unit"))?;
    let mult = match unit {
        "ms" => 1.0,
        "s" => 1000.0,
        "m" => 60_000.0,
        "h" => 3_600_000.0,
        _ => return Err(format!("duration {s:?}: unknown unit {unit:?}")),
    };
    let v: f64 = num
        .parse()
        .map_err(|_| format!("duration {s:?}: bad number"))?;
    Ok((v * mult).round() as i64)
}

fn duration(s: &str) -> Result<Duration, String> {
    Ok(Duration::from_millis(parse_duration_ms(s)? as u64))
}

fn apply_config(cfg: &mut PipelineConfig, kv: &str) -> Result<(), String> {
    let (key, value) = kv
        .split_once('=')
        .ok_or_else(|| format!("config {kv:?}: expected KEY=VALUE"))?;
    if let Some(class) = key.strip_prefix("device_class.") {
        let (hb, grace) = value
            .split_once('+')
            .ok_or_else(|| format!("config {key}: expected INTERVAL+GRACE"))?;
        cfg.device_classes.insert(
            class.to_string(),
            DeviceClassConfig {
                heartbeat_interval: duration(hb)?,
                grace: duration(grace)?,
            },
        );
        return Ok(());
    }
    if let Some(class) = key.strip_prefix("station_class.") {
        let parts: Vec<&str> = value.split('/').collect();
        let [ack, on_scene, handled] = parts[..] else {
            return Err(format!("config {key}: expected ACK/ON_SCENE/HANDLED"));
        };
        let d = cfg
            .station_classes
            .get_mut(class)
            .ok_or_else(|| format!("config {key}: unknown station class"))?;
        d.ack = duration(ack)?;
        d.on_scene = duration(on_scene)?;
        d.handled = duration(handled)?;
        return Ok(());
    }
    let d = duration(value)?;
    let field = match key {
        "dedup_window" => &mut cfg.dedup_window,
        "double_knock_window" => &mut cfg.double_knock_window,
        "realarm_window" => &mut cfg.realarm_window,
        "verification_timeout" => &mut cfg.verification_timeout,
        "nuisance_window" => &mut cfg.nuisance_window,
        "escalation_repeat" => &mut cfg.escalation_repeat,
        "risk_interval" => &mut cfg.risk_interval,
        "coverage_interval" => &mut cfg.coverage_interval,
        _ => return Err(format!("config: unknown key {key:?}")),
    };
    *field = d;
    Ok(())
}

fn topic_name(name: &str) -> Result<&'static str, String> {
    Topic::from_name(name)
        .map(Topic::name)
        .ok_or_else(|| format!("unknown topic {name:?}"))
}

fn kv_args(words: &[&str]) -> Result<HashMap<String, String>, String> {
    words
        .iter()
        .map(|w| {
            w.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .ok_or_else(|| format!("expected key=value, got {w:?}"))
        })
        .collect()
}

fn take<'a>(args: &'a HashMap<String, String>, key: &str) -> Result<&'a str, String> {
    args.get(key)
        .map(String::as_str)
        .ok_or_else(|| format!("missing {key}="))
}

fn num<T: std::str::FromStr>(args: &HashMap<String, String>, key: &str) -> Result<T, String> {
    take(args, key)?
        .parse()
        .map_err(|_| format!("{key}= is not a number"))
}

fn check_keys(args: &HashMap<String, String>, allowed: &[&str]) -> Result<(), String> {
    match args.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(k) => Err(format!("unknown argument {k}=")),
        None => Ok(()),
    }
}

fn parse_action(words: &[&str]) -> Result<Action, String> {
    let Some((&verb, rest)) = words.split_first() else {
        return Err("missing action".into());
    };
    match verb {
        "event" => {
            let args = kv_args(rest)?;
            check_keys(
                &args,
                &["point", "kind", "seq", "repeat", "via", "battery", "value"],
            )?;
            let points = take(&args, "point")?
                .split(',')
                .map(|p| p.parse().map_err(|_| format!("bad point id {p:?}")))
                .collect::<Result<Vec<u64>, String>>()?;
            let kind_name = take(&args, "kind")?;
            let kind = EventKind::from_wire_name(kind_name)
                .ok_or_else(|| format!("unknown event kind {kind_name:?}"))?;
            Ok(Action::Event {
                points,
                kind,
                seq: num(&args, "seq")?,
                repeat: if args.contains_key("repeat") {
                    num(&args, "repeat")?
                } else {
                    1
                },
                via: args
                    .get("via")
                    .map(|v| v.split(',').map(str::to_string).collect())
                    .unwrap_or_default(),
                battery: if args.contains_key("battery") {
                    num(&args, "battery")?
                } else {
                    0
                },
                value: if args.contains_key("value") {
                    num(&args, "value")?
                } else {
                    0.0
                },
            })
        }
        "command" => {
            let args = kv_args(rest)?;
            check_keys(&args, &["house", "incident", "kind", "operator"])?;
            let cmd = match take(&args, "kind")? {
                "ack" => Command::Ack,
                "on_scene" => Command::OnScene,
                "resolve" => Command::Resolve,
                "false_alarm" => Command::FalseAlarm,
                other => return Err(format!("unknown command kind {other:?}")),
            };
            let incident = match take(&args, "incident")? {
                "open" => IncRef::Open,
                "last" => IncRef::Last,
                id => IncRef::Id(id.to_string()),
            };
            Ok(Action::Command {
                house: num(&args, "house")?,
                incident,
                cmd,
                operator: args.get("operator").cloned().unwrap_or_default(),
            })
        }
        "gateway" => match rest {
            [id, "down"] => Ok(Action::Gateway {
                id: id.to_string(),
                up: false,
            }),
            [id, "up"] => Ok(Action::Gateway {
                id: id.to_string(),
                up: true,
            }),
            _ => Err("expected: gateway GW down|up".into()),
        },
        "tick" if rest.is_empty() => Ok(Action::Tick),
        "end" if rest.is_empty() => Ok(Action::End),
        "restart" => {
            let args = kv_args(rest)?;
            check_keys(&args, &["resume"])?;
            let resume = parse_duration_ms(take(&args, "resume")?)?;
            Ok(Action::Restart {
                resume_ms: T0 + resume,
            })
        }
        other => Err(format!("unknown action {other:?}")),
    }
}

fn parse(name: &str, text: &str) -> Result<Scenario, String> {
    let mut sc = Scenario {
        name: name.to_string(),
        text: text.to_string(),
        config: PipelineConfig::default(),
        show: BTreeSet::new(),
        hide: BTreeSet::new(),
        inputs: Vec::new(),
        expected: None,
        hand_written: false,
    };
    let mut last_ms = T0;
    for (i, raw) in text.lines().enumerate() {
        let line_no = i + 1;
        let err = |e: String| format!("{name}.scn line {line_no}: {e}");
        if raw.trim_end() == SEPARATOR {
            let rest: Vec<String> = text
                .lines()
                .skip(line_no)
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(str::to_string)
                .collect();
            sc.expected = Some(rest);
            break;
        }
        let line = raw.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let words: Vec<&str> = line.split_whitespace().collect();
        match words[0] {
            "config" => {
                if !sc.inputs.is_empty() {
                    return Err(err("config must come before the first input".into()));
                }
                for kv in &words[1..] {
                    apply_config(&mut sc.config, kv).map_err(err)?;
                }
            }
            "golden" if words[1..] == ["hand-written"] => sc.hand_written = true,
            "show" => {
                for t in &words[1..] {
                    sc.show.insert(topic_name(t).map_err(err)?);
                }
            }
            "hide" => {
                for t in &words[1..] {
                    sc.hide.insert(topic_name(t).map_err(err)?);
                }
            }
            w if w.starts_with('@') => {
                let at_ms = T0 + parse_duration_ms(&w[1..]).map_err(err)?;
                if at_ms < last_ms {
                    return Err(err("inputs must be in time order".into()));
                }
                last_ms = at_ms;
                let action = parse_action(&words[1..]).map_err(err)?;
                sc.inputs.push(Input {
                    at_ms,
                    line: line_no,
                    action,
                });
            }
            other => return Err(err(format!("unknown directive {other:?}"))),
        }
    }
    Ok(sc)
}

// ---------------------------------------------------------------------------------------
// Rendering

/// Scenario time of an absolute timestamp: `+30s`, `+1.5s`.
pub fn rel(ms: i64) -> String {
    let d = ms - T0;
    let sign = if d < 0 { "-" } else { "+" };
    let d = d.abs();
    if d % 1000 == 0 {
        format!("{sign}{}s", d / 1000)
    } else {
        let frac = format!("{:03}", d % 1000);
        format!("{sign}{}.{}s", d / 1000, frac.trim_end_matches('0'))
    }
}

fn ids(v: &[u64]) -> String {
    if v.is_empty() {
        "-".to_string()
    } else {
        v.iter().map(u64::to_string).collect::<Vec<_>>().join(",")
    }
}

fn name<E: EnumName>(v: i32) -> String {
    E::wire_name(v).unwrap_or_else(|| v.to_string())
}

/// Appends ` key=+Ns` when `ms` is set.
fn stamp(s: &mut String, key: &str, ms: i64) {
    if ms != 0 {
        let _ = write!(s, " {key}={}", rel(ms));
    }
}

fn escalations(i: &IncidentRecord) -> String {
    if i.escalations.is_empty() {
        return "-".into();
    }
    i.escalations
        .iter()
        .map(|e| {
            format!(
                "{}:{}@{}",
                name::<EscalationLevel>(e.level),
                e.missed,
                rel(e.at_ms)
            )
        })
        .collect::<Vec<_>>()
        .join(",")
}

fn incident_fields(i: &IncidentRecord) -> String {
    let mut s = format!(
        "id={} state={} level={} points={} active={}",
        i.incident_id,
        name::<IncidentState>(i.state),
        name::<EscalationLevel>(i.escalation_level),
        ids(&i.points),
        ids(&i.active_point_ids),
    );
    if !i.confirm_reason.is_empty() {
        let _ = write!(s, " confirm_reason={}", i.confirm_reason);
    }
    stamp(&mut s, "confirmed", i.confirmed_at_ms);
    stamp(&mut s, "acked", i.acked_at_ms);
    stamp(&mut s, "on_scene", i.on_scene_at_ms);
    stamp(&mut s, "closed", i.closed_at_ms);
    if !i.operator.is_empty() {
        let _ = write!(s, " operator={}", i.operator);
    }
    s
}

/// One record as a golden line (without the time and topic prefix), or `None` when the
/// scenario filters it out.
fn render(r: &OutRecord, sc: &Scenario) -> Option<String> {
    let topic = r.topic.name();
    if sc.hide.contains(topic) {
        return None;
    }
    let key = String::from_utf8_lossy(&r.key).to_string();
    let v = r.value.as_slice();
    let body = match r.topic {
        Topic::Alarms => {
            let a = AlarmRecord::decode(v).unwrap();
            let l = a.location.unwrap_or_default();
            format!(
                "point={} kind={} seq={} gw={} house={} room={} room_type={}",
                a.point_id,
                name::<EventKind>(a.kind),
                a.device_seq,
                a.gateway_id,
                l.house_id,
                l.room_id,
                name::<RoomType>(l.room_type),
            )
        }
        Topic::Incidents => {
            let i = IncidentRecord::decode(v).unwrap();
            let mut s = format!("transition={} {}", i.transition, incident_fields(&i));
            if i.transition == "escalated" {
                if let Some(e) = i.escalations.last() {
                    let _ = write!(s, " missed={}", e.missed);
                }
            }
            s
        }
        Topic::Dispatch => {
            let d = DispatchRecord::decode(v).unwrap();
            let mut s = format!(
                "id={} reason={} level={} house={} station={} room={} points={} first_kind={}",
                d.incident_id,
                d.reason,
                name::<EscalationLevel>(d.escalation_level),
                d.house_id,
                d.station_id,
                d.room_id,
                ids(&d.points),
                name::<EventKind>(d.first_kind),
            );
            if !d.confirm_reason.is_empty() {
                let _ = write!(s, " confirm_reason={}", d.confirm_reason);
            }
            stamp(&mut s, "first_alarm", d.first_alarm_at_ms);
            stamp(&mut s, "confirmed", d.confirmed_at_ms);
            s
        }
        Topic::PointStatus => {
            let p = PointStatusRecord::decode(v).unwrap();
            if p.cause == "first_seen" && !sc.show.contains(topic) {
                return None;
            }
            let mut s = format!(
                "point={} state={} cause={}",
                p.point_id,
                name::<PointState>(p.state),
                p.cause
            );
            for (flag, on) in [
                ("low_battery", p.low_battery),
                ("tamper", p.tamper),
                ("fault", p.fault),
            ] {
                if on {
                    let _ = write!(s, " {flag}");
                }
            }
            if p.battery_pct != 0 {
                let _ = write!(s, " battery={}", p.battery_pct);
            }
            stamp(&mut s, "last_seen", p.last_seen_ms);
            s
        }
        Topic::Troubles => {
            let t = TroubleRecord::decode(v).unwrap();
            let mut s = format!(
                "kind={} active={} point={} gw={} points_affected={}",
                t.kind, t.active, t.point_id, t.gateway_id, t.points_affected
            );
            stamp(&mut s, "since", t.since_ms);
            s
        }
        Topic::InsuranceTimeline => {
            let t = InsuranceTimelineRecord::decode(v).unwrap();
            let i = t.incident.unwrap_or_default();
            let mut s = format!(
                "policy={} chain_seq={} id={} state={} house={} points={} first_kind={}",
                t.policy_id,
                t.chain_seq,
                i.incident_id,
                name::<IncidentState>(i.state),
                i.location.unwrap_or_default().house_id,
                ids(&i.points),
                name::<EventKind>(i.first_kind),
            );
            if !i.confirm_reason.is_empty() {
                let _ = write!(s, " confirm_reason={}", i.confirm_reason);
            }
            stamp(&mut s, "opened", i.opened_at_ms);
            stamp(&mut s, "confirmed", i.confirmed_at_ms);
            stamp(&mut s, "acked", i.acked_at_ms);
            stamp(&mut s, "on_scene", i.on_scene_at_ms);
            stamp(&mut s, "closed", i.closed_at_ms);
            let _ = write!(s, " escalations={}", escalations(&i));
            s
        }
        Topic::InsuranceRisk => {
            if !sc.show.contains(topic) {
                return None;
            }
            let k = RiskRecord::decode(v).unwrap();
            format!(
                "policy={} house={} window={}..{} points={} online={} alarms={} nuisance={} \
                 troubles={} repaired={} repair_ms={} incidents={} acked={} ack_ms={} \
                 acked_in_time={} on_scene_in_time={} handled_in_time={}",
                k.policy_id,
                k.house_id,
                rel(k.window_start_ms),
                rel(k.window_end_ms),
                k.points,
                k.points_online,
                k.alarms,
                k.nuisance_alarms,
                k.troubles,
                k.troubles_repaired,
                k.repair_ms_total,
                k.incidents,
                k.acked,
                k.ack_ms_total,
                k.acked_in_time,
                k.on_scene_in_time,
                k.handled_in_time,
            )
        }
        Topic::Coverage => {
            if !sc.show.contains(topic) {
                return None;
            }
            let c = CoverageRecord::decode(v).unwrap();
            format!(
                "village={} town={} online={}/{}",
                c.village_id, c.town_id, c.points_online, c.points_registered
            )
        }
        Topic::DeadLetter => {
            let d = DeadLetterRecord::decode(v).unwrap();
            format!(
                "gw={} reason={} point={} seq={}",
                d.gateway_id,
                name::<RejectReason>(d.reason),
                d.point_id,
                d.device_seq
            )
        }
    };
    Some(format!("{} {topic} key={key} {body}", rel(r.ts_ms)))
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
