//! One shard's state machine: pure functions of an event, a command, a gateway presence
//! change or a tick, and `now`.
//!
//! A shard owns the points of the houses hashed to it (dense `Vec` by shard-local index:
//! no locks, no hashing on the heartbeat path), their supervision timers (a [`TimerWheel`]),
//! the open incident of each of its houses, its houses' risk counters and the insurance
//! chains of their policies.

use super::aggregate::{risk_record, Coverage, HouseStats};
use super::chain::ChainHeads;
use super::incident::{Command, Deadlines, Incident, IncidentRules};
use super::timers::TimerWheel;
use crate::config::PipelineConfig;
use crate::registry::{PointIdx, PointInfo, Registry};
use crate::sink::{OutRecord, Topic};
use firewatch_proto::{
    AlarmRecord, EventKind, IncidentRecord, Location, PointEvent, PointState, PointStatusRecord,
    RejectReason, TroubleRecord,
};
use prost::Message;
use rustc_hash::FxHashMap;
use sha2::{Digest, Sha256};
use std::sync::Arc;

/// 2020-01-01T00:00:00Z in Unix ms: the epoch of the compact per-point timestamps.
const EPOCH_MS: i64 = 1_577_836_800_000;
/// Recent sequence numbers kept per point for dedup: the first `RECENT_ALARMS` for
/// alarm-class events, the rest for other non-heartbeat events (so clears, tests and
/// troubles never push an alarm out of the dedup memory).
pub const RECENT: usize = 8;
/// How many of those are for alarm-class events.
pub const RECENT_ALARMS: usize = 6;
/// Battery level at or above which a low-battery trouble is restored.
const BATTERY_RESTORE_PCT: u32 = 25;

const FLAG_LOW_BATTERY: u8 = 1;
const FLAG_TAMPER: u8 = 2;
const FLAG_FAULT: u8 = 4;
/// The point's gateway is disconnected: not supervised per point (one gateway trouble).
const FLAG_GATEWAY_DOWN: u8 = 8;
const TROUBLE_FLAGS: [(u8, &str, &str); 3] = [
    (FLAG_LOW_BATTERY, "low_battery", "battery_restored"),
    (FLAG_TAMPER, "tamper", "tamper_clear"),
    (FLAG_FAULT, "fault", "fault_clear"),
];

const STATE_UNKNOWN: u8 = 0;
const ONLINE: u8 = PointState::Online as u8;
const OFFLINE: u8 = PointState::Offline as u8;
const UNREACHABLE: u8 = PointState::Unreachable as u8;

/// Hot state of one point (104 bytes).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PointSlot {
    /// Last event, Unix ms.
    pub last_seen_ms: i64,
    /// (device_seq, seconds since EPOCH_MS) of recent non-heartbeat events; 0 s = empty.
    pub recent: [(u32, u32); RECENT],
    /// Last heartbeat sequence.
    pub last_hb_seq: u32,
    /// Supervision deadline (seconds since EPOCH_MS); 0 = none.
    pub deadline_s: u32,
    /// When the point went offline (seconds since EPOCH_MS).
    pub offline_since_s: u32,
    /// When each trouble flag was raised.
    pub trouble_since_s: [u32; 3],
    /// `PointState` as u8 (0 = never seen).
    pub state: u8,
    /// Trouble flags.
    pub flags: u8,
    /// Last battery level.
    pub battery: u8,
    /// Next dedup ring slots: alarms in the low nibble, other events in the high nibble.
    pub ring: u8,
}

/// Stores `seq` in the alarm or the other part of a slot's dedup memory.
fn remember(slot: &mut PointSlot, alarm: bool, seq: u32, at_s: u32) {
    let (base, len, shift) = if alarm {
        (0, RECENT_ALARMS, 0)
    } else {
        (RECENT_ALARMS, RECENT - RECENT_ALARMS, 4)
    };
    let idx = usize::from((slot.ring >> shift) & 0xF) % len;
    slot.recent[base + idx] = (seq, at_s);
    let next = ((idx + 1) % len) as u8;
    slot.ring = (slot.ring & !(0xF << shift)) | (next << shift);
}

/// Seconds since EPOCH_MS (>= 1, so 0 keeps meaning "unset").
pub fn secs(now_ms: i64) -> u32 {
    ((now_ms - EPOCH_MS) / 1000).clamp(1, i64::from(u32::MAX)) as u32
}

fn ms_of(s: u32) -> i64 {
    EPOCH_MS + i64::from(s) * 1000
}

/// An event routed to this shard.
#[derive(Debug, Clone)]
pub struct RoutedEvent {
    /// Registry index of the point.
    pub point: PointIdx,
    /// Shard-local index.
    pub local: u32,
    /// The event as received.
    pub event: PointEvent,
}

/// Context shared by the events of one batch.
#[derive(Debug, Clone)]
pub struct BatchCtx {
    /// Gateway that sent it.
    pub gateway_id: Arc<str>,
    /// Its sequence number.
    pub batch_seq: u64,
    /// Engine receive time, Unix ms.
    pub received_ms: i64,
}

/// What became of one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Processed.
    Accepted,
    /// Seen before within the dedup window; discarded on purpose.
    Duplicate,
    /// Not a point of this shard (a routing bug); ignored and counted.
    Misrouted,
}

/// The rules every shard applies, resolved from `[pipeline]` against the registry.
#[derive(Debug, Clone)]
pub struct ShardRules {
    /// Dedup window, seconds.
    pub dedup_window_s: u32,
    /// Incident timing.
    pub incidents: IncidentRules,
    /// (interval + grace) in seconds per registry device class index.
    pub supervision_s: Vec<u32>,
    /// 1-3-5 deadlines of stations with a non-default class.
    pub station_deadlines: FxHashMap<u32, Deadlines>,
    /// Deadlines of every other station.
    pub default_deadlines: Deadlines,
    /// `fw.insurance.risk` period.
    pub risk_interval_ms: i64,
    /// `fw.coverage` period.
    pub coverage_interval_ms: i64,
}

impl ShardRules {
    /// Resolves the rules; `Err` names a registry device class the config lacks.
    pub fn new(cfg: &PipelineConfig, registry: &Registry) -> Result<ShardRules, String> {
        let ms = |d: std::time::Duration| d.as_millis() as i64;
        let mut supervision_s = Vec::new();
        for class in registry.device_classes() {
            let c = cfg.device_classes.get(class).ok_or_else(|| {
                format!("registry device class {class:?} has no [pipeline.device_classes.{class}]")
            })?;
            supervision_s.push(
                (c.heartbeat_interval + c.grace)
                    .as_secs()
                    .clamp(1, u64::from(u32::MAX)) as u32,
            );
        }
        let deadlines = |name: &str| {
            cfg.station_classes.get(name).map(|d| Deadlines {
                class: name.to_string(),
                ack_ms: ms(d.ack),
                on_scene_ms: ms(d.on_scene),
                handled_ms: ms(d.handled),
            })
        };
        let default_deadlines = deadlines(&cfg.default_station_class).ok_or_else(|| {
            format!(
                "station class {:?} is not defined",
                cfg.default_station_class
            )
        })?;
        let mut station_deadlines = FxHashMap::default();
        for (station, class) in &cfg.station_class_of {
            let id: u32 = station
                .parse()
                .map_err(|_| format!("station id {station:?} is not a number"))?;
            station_deadlines.insert(
                id,
                deadlines(class)
                    .ok_or_else(|| format!("station class {class:?} is not defined"))?,
            );
        }
        Ok(ShardRules {
            dedup_window_s: cfg.dedup_window.as_secs().clamp(1, u64::from(u32::MAX)) as u32,
            incidents: IncidentRules {
                double_knock_ms: ms(cfg.double_knock_window),
                realarm_ms: ms(cfg.realarm_window),
                verification_ms: ms(cfg.verification_timeout),
                nuisance_ms: ms(cfg.nuisance_window),
                escalation_repeat_ms: ms(cfg.escalation_repeat),
            },
            supervision_s,
            station_deadlines,
            default_deadlines,
            risk_interval_ms: ms(cfg.risk_interval),
            coverage_interval_ms: ms(cfg.coverage_interval),
        })
    }

    fn deadlines(&self, station: u32) -> &Deadlines {
        self.station_deadlines
            .get(&station)
            .unwrap_or(&self.default_deadlines)
    }
}

/// The registry location of a point, as carried in records.
pub fn location(info: &PointInfo) -> Location {
    Location {
        town_id: info.town,
        station_id: info.station,
        village_id: info.village,
        house_id: info.house,
        room_id: info.room,
        room_type: info.room_type as i32,
        policy_id: info.policy,
    }
}

/// Per-shard state.
pub struct Shard {
    registry: Arc<Registry>,
    rules: Arc<ShardRules>,
    globals: Vec<PointIdx>,
    points: Vec<PointSlot>,
    wheel: TimerWheel,
    incidents: FxHashMap<u32, Incident>,
    /// (ms, n) of each house's latest opening, to keep incident ids unique.
    last_opened: FxHashMap<u32, (i64, u32)>,
    chain: ChainHeads,
    houses: FxHashMap<u32, HouseStats>,
    coverage: Arc<Coverage>,
    emit_coverage: bool,
    online: u64,
    window_start_ms: i64,
    next_risk_ms: i64,
    next_coverage_ms: i64,
}

impl Shard {
    /// A shard owning the registry points `globals` (shard-local index = position), with
    /// clocks starting at `start_ms`. Every point is armed for supervision from the start.
    /// `emit_coverage`: this shard writes the (global) coverage records.
    pub fn new(
        registry: Arc<Registry>,
        rules: Arc<ShardRules>,
        globals: Vec<PointIdx>,
        coverage: Arc<Coverage>,
        emit_coverage: bool,
        start_ms: i64,
    ) -> Self {
        let mut shard = Shard {
            points: vec![PointSlot::default(); globals.len()],
            wheel: TimerWheel::new(secs(start_ms)),
            registry,
            rules,
            globals,
            incidents: FxHashMap::default(),
            last_opened: FxHashMap::default(),
            chain: ChainHeads::default(),
            houses: FxHashMap::default(),
            coverage,
            emit_coverage,
            online: 0,
            window_start_ms: start_ms,
            next_risk_ms: 0,
            next_coverage_ms: 0,
        };
        shard.next_risk_ms = start_ms + shard.rules.risk_interval_ms;
        shard.next_coverage_ms = start_ms + shard.rules.coverage_interval_ms;
        for local in 0..shard.points.len() as u32 {
            shard.arm(local, start_ms);
        }
        shard
    }

    /// Points currently online.
    pub fn online(&self) -> u64 {
        self.online
    }

    /// Open incidents.
    pub fn open_incidents(&self) -> impl Iterator<Item = &IncidentRecord> {
        self.incidents.values().map(|i| &i.rec)
    }

    /// Supervision timer entries held.
    pub fn timer_entries(&self) -> usize {
        self.wheel.len()
    }

    fn arm(&mut self, local: u32, from_ms: i64) {
        let info = self.registry.info(self.globals[local as usize]);
        let s = secs(from_ms)
            + self
                .rules
                .supervision_s
                .get(info.class as usize)
                .copied()
                .unwrap_or(u32::MAX / 4);
        self.points[local as usize].deadline_s = s;
        self.wheel.insert(local, s);
    }

    fn set_state(&mut self, local: u32, state: u8) {
        let slot = &mut self.points[local as usize];
        let was_online = slot.state == ONLINE;
        slot.state = state;
        let village = self.registry.info(self.globals[local as usize]).village;
        match (was_online, state == ONLINE) {
            (false, true) => {
                self.online += 1;
                self.coverage.add(village, 1);
            }
            (true, false) => {
                self.online -= 1;
                self.coverage.add(village, -1);
            }
            _ => {}
        }
    }

    fn status(&self, local: u32, cause: &str, now_ms: i64, out: &mut Vec<OutRecord>) {
        let idx = self.globals[local as usize];
        let slot = &self.points[local as usize];
        let point_id = self.registry.point_id(idx);
        let rec = PointStatusRecord {
            point_id,
            state: i32::from(slot.state),
            low_battery: slot.flags & FLAG_LOW_BATTERY != 0,
            tamper: slot.flags & FLAG_TAMPER != 0,
            fault: slot.flags & FLAG_FAULT != 0,
            battery_pct: u32::from(slot.battery),
            last_seen_ms: slot.last_seen_ms,
            changed_at_ms: now_ms,
            cause: cause.to_string(),
            location: Some(location(self.registry.info(idx))),
        };
        out.push(OutRecord::new(Topic::PointStatus, point_id, &rec, now_ms));
    }

    fn trouble(
        &mut self,
        local: u32,
        kind: &str,
        active: bool,
        since_ms: i64,
        now_ms: i64,
        out: &mut Vec<OutRecord>,
    ) {
        let idx = self.globals[local as usize];
        let info = *self.registry.info(idx);
        let rec = TroubleRecord {
            kind: kind.to_string(),
            active,
            station_id: info.station,
            point_id: self.registry.point_id(idx),
            gateway_id: self.registry.gateway_id(info.gateway).to_string(),
            points_affected: 1,
            location: Some(location(&info)),
            at_ms: now_ms,
            since_ms,
        };
        out.push(OutRecord::new(Topic::Troubles, info.station, &rec, now_ms));
        if info.policy != 0 {
            let h = self.houses.entry(info.house).or_default();
            if active {
                h.troubles += 1;
            } else {
                h.repaired += 1;
                h.repair_ms += (now_ms - since_ms).max(0);
            }
        }
    }

    /// Processes one event at `now_ms`, appending the records it produces to `out`.
    pub fn on_event(
        &mut self,
        ev: &RoutedEvent,
        ctx: &BatchCtx,
        now_ms: i64,
        out: &mut Vec<OutRecord>,
    ) -> Outcome {
        let local = ev.local;
        if self.globals.get(local as usize) != Some(&ev.point) {
            return Outcome::Misrouted;
        }
        let kind = EventKind::try_from(ev.event.kind).unwrap_or(EventKind::Unspecified);
        if self.is_duplicate(local, kind, ev.event.device_seq, now_ms) {
            return Outcome::Duplicate;
        }
        let info = *self.registry.info(ev.point);
        // The gateway-down flag stays until the gateway's presence says it is back: events
        // of its last connection may still be in the lanes after the disconnect.
        self.points[local as usize].last_seen_ms = now_ms;
        self.arm(local, now_ms);
        match self.points[local as usize].state {
            ONLINE => {}
            STATE_UNKNOWN => {
                self.set_state(local, ONLINE);
                self.status(local, "first_seen", now_ms, out);
            }
            OFFLINE => {
                let since = ms_of(self.points[local as usize].offline_since_s);
                self.set_state(local, ONLINE);
                self.status(local, "back_online", now_ms, out);
                self.trouble(local, "offline", false, since, now_ms, out);
            }
            _ => {
                self.set_state(local, ONLINE);
                self.status(local, "back_online", now_ms, out);
            }
        }
        self.update_flags(local, kind, ev.event.battery_pct, now_ms, out);
        let point_id = self.registry.point_id(ev.point);
        if kind.is_alarm() {
            let rec = AlarmRecord {
                point_id,
                kind: kind as i32,
                device_seq: ev.event.device_seq,
                device_time_ms: ev.event.device_time_ms,
                received_at_ms: ctx.received_ms,
                gateway_id: ctx.gateway_id.to_string(),
                batch_seq: ctx.batch_seq,
                value: ev.event.value,
                location: Some(location(&info)),
                device_class: self.registry.device_class_name(info.class).to_string(),
            };
            out.push(OutRecord::new(Topic::Alarms, info.house, &rec, now_ms));
            if info.policy != 0 {
                self.houses.entry(info.house).or_default().alarms += 1;
            }
            self.alarm_incident(&info, point_id, kind, &ev.event, now_ms, out);
        } else if kind == EventKind::AlarmClear {
            if let Some(inc) = self.incidents.get_mut(&info.house) {
                let nuisance = inc.on_clear(
                    point_id,
                    info.room_type as i32,
                    &self.rules.incidents,
                    now_ms,
                    out,
                );
                if nuisance {
                    if info.policy != 0 {
                        self.houses.entry(info.house).or_default().nuisance += 1;
                    }
                    self.close_incident(info.house, out);
                }
            }
        } else if kind == EventKind::Mute {
            if let Some(inc) = self.incidents.get_mut(&info.house) {
                inc.on_mute(now_ms, out);
            }
        }
        Outcome::Accepted
    }

    fn is_duplicate(&mut self, local: u32, kind: EventKind, seq: u32, now_ms: i64) -> bool {
        let window = self.rules.dedup_window_s;
        let slot = &mut self.points[local as usize];
        let now_s = secs(now_ms);
        if kind == EventKind::Heartbeat {
            if slot.state != STATE_UNKNOWN && slot.last_hb_seq == seq && slot.last_seen_ms > 0 {
                return true;
            }
            slot.last_hb_seq = seq;
            return false;
        }
        let alarm = kind.is_alarm();
        let part = if alarm {
            0..RECENT_ALARMS
        } else {
            RECENT_ALARMS..RECENT
        };
        if slot.recent[part]
            .iter()
            .any(|&(s, at)| at != 0 && s == seq && now_s.saturating_sub(at) <= window)
        {
            return true;
        }
        remember(slot, alarm, seq, now_s);
        false
    }

    fn update_flags(
        &mut self,
        local: u32,
        kind: EventKind,
        battery_pct: u32,
        now_ms: i64,
        out: &mut Vec<OutRecord>,
    ) {
        let slot = &mut self.points[local as usize];
        let old = slot.flags;
        match kind {
            EventKind::LowBattery => slot.flags |= FLAG_LOW_BATTERY,
            EventKind::Tamper => slot.flags |= FLAG_TAMPER,
            EventKind::TamperClear => slot.flags &= !FLAG_TAMPER,
            EventKind::Fault => slot.flags |= FLAG_FAULT,
            EventKind::FaultClear => slot.flags &= !FLAG_FAULT,
            _ => {}
        }
        if battery_pct > 0 {
            slot.battery = battery_pct.min(100) as u8;
            if kind != EventKind::LowBattery && battery_pct >= BATTERY_RESTORE_PCT {
                slot.flags &= !FLAG_LOW_BATTERY;
            }
        }
        let new = slot.flags;
        if new == old {
            return;
        }
        for (i, (flag, raise, restore)) in TROUBLE_FLAGS.iter().enumerate() {
            match (old & flag != 0, new & flag != 0) {
                (false, true) => {
                    self.points[local as usize].trouble_since_s[i] = secs(now_ms);
                    self.status(local, raise, now_ms, out);
                    self.trouble(local, raise, true, now_ms, now_ms, out);
                }
                (true, false) => {
                    let since = ms_of(self.points[local as usize].trouble_since_s[i]);
                    self.status(local, restore, now_ms, out);
                    self.trouble(local, raise, false, since, now_ms, out);
                }
                _ => {}
            }
        }
    }

    fn alarm_incident(
        &mut self,
        info: &PointInfo,
        point_id: u64,
        kind: EventKind,
        ev: &PointEvent,
        now_ms: i64,
        out: &mut Vec<OutRecord>,
    ) {
        if let Some(inc) = self.incidents.get_mut(&info.house) {
            inc.on_alarm(point_id, kind, &self.rules.incidents, now_ms, out);
            return;
        }
        let hash: [u8; 32] = Sha256::digest(ev.encode_to_vec()).into();
        let n = match self.last_opened.get_mut(&info.house) {
            Some((ms, n)) if *ms == now_ms => {
                *n += 1;
                *n
            }
            _ => {
                self.last_opened.insert(info.house, (now_ms, 0));
                0
            }
        };
        let mut inc = Incident::open(
            super::incident::incident_id(info.house, now_ms, n),
            point_id,
            kind,
            ev.device_time_ms,
            location(info),
            self.registry.device_class_name(info.class),
            hash.to_vec(),
            self.rules.deadlines(info.station),
            now_ms,
        );
        inc.emit_opened(now_ms, out);
        self.incidents.insert(info.house, inc);
    }

    fn close_incident(&mut self, house: u32, out: &mut Vec<OutRecord>) {
        let Some(inc) = self.incidents.remove(&house) else {
            return;
        };
        let rec = inc.rec;
        let policy = rec.location.map_or(0, |l| l.policy_id);
        if policy == 0 {
            return;
        }
        let h = self.houses.entry(house).or_default();
        h.incidents += 1;
        if rec.acked_at_ms != 0 {
            h.acked += 1;
            h.ack_ms += rec.acked_at_ms - rec.opened_at_ms;
            h.acked_in_time += u32::from(rec.acked_at_ms < rec.ack_deadline_ms);
        }
        h.on_scene_in_time +=
            u32::from(rec.on_scene_at_ms != 0 && rec.on_scene_at_ms < rec.on_scene_deadline_ms);
        h.handled_in_time += u32::from(
            rec.state == firewatch_proto::IncidentState::Resolved as i32
                && rec.closed_at_ms < rec.handled_deadline_ms,
        );
        let at = rec.closed_at_ms;
        let sealed = self.chain.seal(policy, rec);
        out.push(OutRecord::new(
            Topic::InsuranceTimeline,
            policy,
            &sealed,
            at,
        ));
    }

    /// A station command for an incident of `house`; the ingest already checked that the
    /// station owns the house. `Err` when no such incident is open.
    pub fn on_command(
        &mut self,
        house: u32,
        incident_id: &str,
        cmd: Command,
        operator: &str,
        now_ms: i64,
        out: &mut Vec<OutRecord>,
    ) -> Result<(), RejectReason> {
        let Some(inc) = self.incidents.get_mut(&house) else {
            return Err(RejectReason::UnknownIncident);
        };
        if inc.rec.incident_id != incident_id {
            return Err(RejectReason::UnknownIncident);
        }
        if inc.on_command(cmd, operator, now_ms, out) {
            self.close_incident(house, out);
        }
        Ok(())
    }

    /// A gateway went down (`up = false`) or came back. While it is down its points here
    /// are not supervised one by one (ingest writes one aggregated trouble): online ones
    /// become unreachable, never-seen ones stay never-seen, without a record each. When it
    /// is back they are restored and re-armed from `now_ms`.
    pub fn on_gateway(&mut self, locals: &[u32], up: bool, now_ms: i64) {
        for &local in locals {
            let Some(slot) = self.points.get_mut(local as usize) else {
                continue;
            };
            if up {
                if slot.flags & FLAG_GATEWAY_DOWN == 0 {
                    continue;
                }
                slot.flags &= !FLAG_GATEWAY_DOWN;
                let state = slot.state;
                if state == UNREACHABLE {
                    self.set_state(local, ONLINE);
                }
                if state != OFFLINE {
                    self.arm(local, now_ms);
                }
            } else {
                slot.flags |= FLAG_GATEWAY_DOWN;
                if slot.state == ONLINE {
                    self.set_state(local, UNREACHABLE);
                }
            }
        }
    }

    /// Runs everything due at `now_ms`: supervision expiries, incident timers, periodic
    /// aggregates.
    pub fn on_tick(&mut self, now_ms: i64, out: &mut Vec<OutRecord>) {
        let mut expired = Vec::new();
        self.wheel
            .advance(secs(now_ms), |local, s| expired.push((local, s)));
        for (local, s) in expired {
            let slot = self.points[local as usize];
            let supervised = (slot.state == ONLINE || slot.state == STATE_UNKNOWN)
                && slot.flags & FLAG_GATEWAY_DOWN == 0;
            if slot.deadline_s != s || !supervised {
                continue; // re-armed since, or not supervised now (offline, gateway down)
            }
            let cause = if slot.state == ONLINE {
                "heartbeat_missed"
            } else {
                "never_seen"
            };
            self.points[local as usize].offline_since_s = s;
            self.set_state(local, OFFLINE);
            self.status(local, cause, now_ms, out);
            self.trouble(local, "offline", true, ms_of(s), now_ms, out);
        }
        let rules = self.rules.clone();
        for inc in self.incidents.values_mut() {
            inc.on_tick(&rules.incidents, now_ms, out);
        }
        if now_ms >= self.next_risk_ms {
            self.emit_risk(now_ms, out);
            self.window_start_ms = now_ms;
            self.next_risk_ms = now_ms + self.rules.risk_interval_ms;
        }
        if self.emit_coverage && now_ms >= self.next_coverage_ms {
            self.coverage.records(now_ms, out);
            self.next_coverage_ms = now_ms + self.rules.coverage_interval_ms;
        }
    }

    fn emit_risk(&mut self, now_ms: i64, out: &mut Vec<OutRecord>) {
        // (policy, points, online) per insured house of this shard.
        let mut per_house: FxHashMap<u32, (u32, u32, u32)> = FxHashMap::default();
        for (local, &idx) in self.globals.iter().enumerate() {
            let info = self.registry.info(idx);
            if info.policy == 0 {
                continue;
            }
            let e = per_house.entry(info.house).or_insert((info.policy, 0, 0));
            e.1 += 1;
            e.2 += u32::from(self.points[local].state == ONLINE);
        }
        let mut houses: Vec<_> = per_house.into_iter().collect();
        houses.sort_unstable_by_key(|(h, _)| *h);
        for (house, (policy, points, online)) in houses {
            let stats = self.houses.get(&house).copied().unwrap_or_default();
            out.push(risk_record(
                policy,
                house,
                self.window_start_ms,
                now_ms,
                points,
                online,
                &stats,
            ));
        }
        self.houses.clear();
    }

    /// Restores an open incident (restart).
    pub fn restore_incident(&mut self, rec: IncidentRecord) {
        let inc = Incident::restore(rec);
        self.incidents.insert(inc.house(), inc);
    }

    /// Restores the head of a policy chain (restart).
    pub fn restore_chain(&mut self, rec: &firewatch_proto::InsuranceTimelineRecord) {
        self.chain.adopt(rec);
    }

    /// Seeds dedup with an alarm already in the log (restart).
    pub fn restore_alarm(&mut self, local: u32, device_seq: u32, at_ms: i64) {
        if let Some(slot) = self.points.get_mut(local as usize) {
            remember(slot, true, device_seq, secs(at_ms));
        }
    }

    /// Snapshot of every point: (point id, slot).
    pub fn snapshot(&self) -> impl Iterator<Item = (u64, &PointSlot)> {
        self.globals
            .iter()
            .zip(&self.points)
            .map(|(&idx, s)| (self.registry.point_id(idx), s))
    }

    /// Restores a point's slot (restart). Supervision restarts from `max(last_seen, start)`:
    /// the engine cannot claim a missed heartbeat while it was itself down.
    pub fn restore_point(&mut self, local: u32, saved: &PointSlot, start_ms: i64) {
        if local as usize >= self.points.len() {
            return;
        }
        let mut slot = *saved;
        // Dedup memory comes only from the durable log (`restore_alarm`): a snapshot can be
        // ahead of the log, and remembering a sequence whose record never became durable
        // would discard the gateway's retransmission of an unacked alarm.
        slot.recent = Default::default();
        slot.ring = 0;
        let state = std::mem::replace(&mut slot.state, STATE_UNKNOWN);
        self.points[local as usize] = slot;
        if state != STATE_UNKNOWN {
            self.set_state(local, state);
        }
        self.arm(local, start_ms.max(saved.last_seen_ms));
    }
}

#[cfg(test)]
#[path = "shard_tests.rs"]
mod tests;
