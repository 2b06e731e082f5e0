//! The incident of a house: confirmation (double knock), nuisance filtering, latching, the
//! 1-3-5 deadlines and escalation, and station commands. Pure: every method takes `now_ms`
//! and appends the records it produces.

use crate::sink::{OutRecord, Topic};
use firewatch_proto::{
    DispatchRecord, Escalation, EscalationLevel, EventKind, IncidentRecord, IncidentState,
    Location, PointAlarm, RoomType,
};

/// Timing rules of incidents (from `[pipeline]`, in ms).
#[derive(Debug, Clone)]
pub struct IncidentRules {
    /// Second detector window.
    pub double_knock_ms: i64,
    /// Same-detector re-alarm window.
    pub realarm_ms: i64,
    /// Persistence that confirms.
    pub verification_ms: i64,
    /// Kitchen/studio clear window for nuisance.
    pub nuisance_ms: i64,
    /// Re-escalation period after the handled deadline.
    pub escalation_repeat_ms: i64,
}

/// 1-3-5 deadlines (ms from opening) and the class name.
#[derive(Debug, Clone)]
pub struct Deadlines {
    /// Station class name.
    pub class: String,
    /// Ack deadline.
    pub ack_ms: i64,
    /// On-scene deadline.
    pub on_scene_ms: i64,
    /// Handled deadline.
    pub handled_ms: i64,
}

/// A point in alarm within an incident.
#[derive(Debug, Clone, Copy)]
struct ActivePoint {
    point_id: u64,
    since_ms: i64,
    last_alarm_ms: i64,
}

/// An open incident.
#[derive(Debug, Clone)]
pub struct Incident {
    /// The running record (every transition emits a copy).
    pub rec: IncidentRecord,
    active: Vec<ActivePoint>,
    last_alarm: Vec<(u64, i64)>,
    last_escalation_ms: i64,
}

/// What a station asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// Acknowledge.
    Ack,
    /// On scene (also confirms).
    OnScene,
    /// Handled: closes as resolved.
    Resolve,
    /// Closes as a false alarm.
    FalseAlarm,
}

impl Command {
    /// The command of a wire `CommandKind` value (`None` for unspecified or unknown),
    /// shared by the MQTT and the Kafka command paths.
    pub fn from_kind(kind: i32) -> Option<Command> {
        match firewatch_proto::CommandKind::try_from(kind) {
            Ok(firewatch_proto::CommandKind::Ack) => Some(Command::Ack),
            Ok(firewatch_proto::CommandKind::OnScene) => Some(Command::OnScene),
            Ok(firewatch_proto::CommandKind::Resolve) => Some(Command::Resolve),
            Ok(firewatch_proto::CommandKind::FalseAlarm) => Some(Command::FalseAlarm),
            _ => None,
        }
    }
}

/// The incident id of a house opened at `opened_ms`; `n` > 0 tells apart incidents of one
/// house opened in the same millisecond (one closed and the next opened by one batch).
pub fn incident_id(house: u32, opened_ms: i64, n: u32) -> String {
    if n == 0 {
        format!("inc-{house}-{opened_ms}")
    } else {
        format!("inc-{house}-{opened_ms}-{n}")
    }
}

/// The house of an incident id (`inc-{house}-{ms}` or `inc-{house}-{ms}-{n}`).
pub fn house_of_incident(id: &str) -> Option<u32> {
    let mut parts = id.strip_prefix("inc-")?.split('-');
    let house = parts.next()?.parse().ok()?;
    parts.next()?.parse::<i64>().ok()?;
    if let Some(n) = parts.next() {
        n.parse::<u32>().ok()?;
    }
    parts.next().is_none().then_some(house)
}

/// Whether a state is closed.
pub fn is_closed(state: i32) -> bool {
    [
        IncidentState::Resolved,
        IncidentState::FalseAlarm,
        IncidentState::Nuisance,
    ]
    .iter()
    .any(|s| *s as i32 == state)
}

impl Incident {
    /// Opens an incident for an alarm of `point_id`.
    #[allow(clippy::too_many_arguments)]
    pub fn open(
        id: String,
        point_id: u64,
        kind: EventKind,
        device_ms: i64,
        location: Location,
        device_class: &str,
        first_alarm_hash: Vec<u8>,
        d: &Deadlines,
        now_ms: i64,
    ) -> Incident {
        let rec = IncidentRecord {
            incident_id: id,
            transition: "opened".into(),
            state: IncidentState::Unverified as i32,
            location: Some(location),
            points: vec![point_id],
            first_point_id: point_id,
            first_kind: kind as i32,
            first_alarm_device_ms: device_ms,
            opened_at_ms: now_ms,
            escalation_level: EscalationLevel::Station as i32,
            active_points: 1,
            at_ms: now_ms,
            first_alarm_hash,
            ack_deadline_ms: now_ms + d.ack_ms,
            on_scene_deadline_ms: now_ms + d.on_scene_ms,
            handled_deadline_ms: now_ms + d.handled_ms,
            station_class: d.class.clone(),
            device_class: device_class.to_string(),
            active_point_ids: vec![point_id],
            ..Default::default()
        };
        Incident {
            rec,
            active: vec![ActivePoint {
                point_id,
                since_ms: now_ms,
                last_alarm_ms: now_ms,
            }],
            last_alarm: vec![(point_id, now_ms)],
            last_escalation_ms: now_ms,
        }
    }

    /// Restores an open incident from its latest record (after a restart). Alarm clocks
    /// come from `point_alarms`; a record without them (older engine) falls back to the
    /// opening time.
    pub fn restore(rec: IncidentRecord) -> Incident {
        let clock = |p: u64| rec.point_alarms.iter().find(|a| a.point_id == p);
        let active = rec
            .active_point_ids
            .iter()
            .map(|&p| {
                let c = clock(p);
                ActivePoint {
                    point_id: p,
                    since_ms: c.map_or(rec.opened_at_ms, |c| c.active_since_ms),
                    last_alarm_ms: c.map_or(rec.opened_at_ms, |c| c.last_alarm_ms),
                }
            })
            .collect();
        let last_escalation_ms = rec.escalations.last().map_or(rec.opened_at_ms, |e| e.at_ms);
        let last_alarm = rec
            .points
            .iter()
            .map(|&p| (p, clock(p).map_or(rec.opened_at_ms, |c| c.last_alarm_ms)))
            .collect();
        Incident {
            rec,
            active,
            last_alarm,
            last_escalation_ms,
        }
    }

    /// House of the incident.
    pub fn house(&self) -> u32 {
        self.rec.location.map_or(0, |l| l.house_id)
    }

    fn emit(&mut self, transition: &str, now_ms: i64, out: &mut Vec<OutRecord>) {
        self.rec.transition = transition.to_string();
        self.rec.at_ms = now_ms;
        self.rec.active_points = self.active.len() as u32;
        self.rec.active_point_ids = self.active.iter().map(|a| a.point_id).collect();
        self.rec.point_alarms = self
            .last_alarm
            .iter()
            .map(|&(point_id, last_alarm_ms)| PointAlarm {
                point_id,
                active_since_ms: self
                    .active
                    .iter()
                    .find(|a| a.point_id == point_id)
                    .map_or(0, |a| a.since_ms),
                last_alarm_ms,
            })
            .collect();
        out.push(OutRecord::new(
            Topic::Incidents,
            self.house(),
            &self.rec,
            now_ms,
        ));
    }

    /// Emits the "opened" record (and confirms at once for heat/manual alarms).
    pub fn emit_opened(&mut self, now_ms: i64, out: &mut Vec<OutRecord>) {
        self.emit("opened", now_ms, out);
        let kind = EventKind::try_from(self.rec.first_kind).unwrap_or(EventKind::Unspecified);
        if matches!(kind, EventKind::HeatAlarm | EventKind::ManualAlarm) {
            self.confirm(kind.wire_name(), now_ms, out);
        }
    }

    /// Whether the incident is confirmed.
    pub fn confirmed(&self) -> bool {
        self.rec.confirmed_at_ms != 0
    }

    fn dispatch(&self, reason: &str, now_ms: i64, out: &mut Vec<OutRecord>) {
        let loc = self.rec.location.unwrap_or_default();
        let d = DispatchRecord {
            incident_id: self.rec.incident_id.clone(),
            reason: reason.into(),
            escalation_level: self.rec.escalation_level,
            town_id: loc.town_id,
            village_id: loc.village_id,
            house_id: loc.house_id,
            room_id: loc.room_id,
            room_type: loc.room_type,
            station_id: loc.station_id,
            points: self.rec.points.clone(),
            first_alarm_device_ms: self.rec.first_alarm_device_ms,
            first_alarm_at_ms: self.rec.opened_at_ms,
            confirmed_at_ms: self.rec.confirmed_at_ms,
            confirm_reason: self.rec.confirm_reason.clone(),
            at_ms: now_ms,
            first_kind: self.rec.first_kind,
        };
        out.push(OutRecord::new(Topic::Dispatch, loc.town_id, &d, now_ms));
    }

    fn confirm(&mut self, reason: &str, now_ms: i64, out: &mut Vec<OutRecord>) {
        if self.confirmed() {
            return;
        }
        self.rec.confirmed_at_ms = now_ms;
        self.rec.confirm_reason = reason.to_string();
        if self.rec.state == IncidentState::Unverified as i32 {
            self.rec.state = IncidentState::Confirmed as i32;
        }
        self.emit("confirmed", now_ms, out);
        self.dispatch("confirmed", now_ms, out);
    }

    /// Another alarm of the house while open.
    pub fn on_alarm(
        &mut self,
        point_id: u64,
        kind: EventKind,
        rules: &IncidentRules,
        now_ms: i64,
        out: &mut Vec<OutRecord>,
    ) {
        let known = self.rec.points.contains(&point_id);
        let prev_alarm = self
            .last_alarm
            .iter()
            .find(|(p, _)| *p == point_id)
            .map(|(_, t)| *t);
        match self.active.iter_mut().find(|a| a.point_id == point_id) {
            Some(a) => a.last_alarm_ms = now_ms,
            None => self.active.push(ActivePoint {
                point_id,
                since_ms: now_ms,
                last_alarm_ms: now_ms,
            }),
        }
        match self.last_alarm.iter_mut().find(|(p, _)| *p == point_id) {
            Some(e) => e.1 = now_ms,
            None => self.last_alarm.push((point_id, now_ms)),
        }
        if !known {
            self.rec.points.push(point_id);
            if !self.confirmed() && now_ms - self.rec.opened_at_ms <= rules.double_knock_ms {
                self.confirm("second_detector", now_ms, out);
            } else {
                self.emit("point_added", now_ms, out);
            }
        } else if !self.confirmed() && prev_alarm.is_some_and(|t| now_ms - t <= rules.realarm_ms) {
            self.confirm("re_alarm", now_ms, out);
        }
        if matches!(kind, EventKind::HeatAlarm | EventKind::ManualAlarm) {
            self.confirm(kind.wire_name(), now_ms, out);
        }
    }

    /// A point's alarm cleared. Returns true when the incident closed as a nuisance alarm.
    pub fn on_clear(
        &mut self,
        point_id: u64,
        room_type: i32,
        rules: &IncidentRules,
        now_ms: i64,
        out: &mut Vec<OutRecord>,
    ) -> bool {
        let before = self.active.len();
        self.active.retain(|a| a.point_id != point_id);
        if self.active.len() == before {
            return false;
        }
        let kitchen = room_type == RoomType::Kitchen as i32 || room_type == RoomType::Studio as i32;
        let smoke = self.rec.first_kind == EventKind::SmokeAlarm as i32;
        if !self.confirmed()
            && self.active.is_empty()
            && self.rec.points.len() == 1
            && kitchen
            && smoke
            && now_ms - self.rec.opened_at_ms <= rules.nuisance_ms
        {
            self.close(IncidentState::Nuisance, "nuisance", now_ms, out);
            return true;
        }
        self.emit("point_cleared", now_ms, out);
        false
    }

    /// A mute: recorded, closes nothing.
    pub fn on_mute(&mut self, now_ms: i64, out: &mut Vec<OutRecord>) {
        self.emit("muted", now_ms, out);
    }

    fn close(
        &mut self,
        state: IncidentState,
        transition: &str,
        now_ms: i64,
        out: &mut Vec<OutRecord>,
    ) {
        self.rec.state = state as i32;
        self.rec.closed_at_ms = now_ms;
        self.emit(transition, now_ms, out);
    }

    /// Whether it is closed.
    pub fn closed(&self) -> bool {
        is_closed(self.rec.state)
    }

    /// A station command. Returns true when it closed the incident.
    pub fn on_command(
        &mut self,
        cmd: Command,
        operator: &str,
        now_ms: i64,
        out: &mut Vec<OutRecord>,
    ) -> bool {
        self.rec.operator = operator.to_string();
        let progressed =
            |s: i32| s == IncidentState::Unverified as i32 || s == IncidentState::Confirmed as i32;
        match cmd {
            Command::Ack => {
                if self.rec.acked_at_ms == 0 {
                    self.rec.acked_at_ms = now_ms;
                }
                if progressed(self.rec.state) {
                    self.rec.state = IncidentState::Acked as i32;
                }
                self.emit("acked", now_ms, out);
            }
            Command::OnScene => {
                if self.rec.acked_at_ms == 0 {
                    self.rec.acked_at_ms = now_ms;
                }
                if self.rec.on_scene_at_ms == 0 {
                    self.rec.on_scene_at_ms = now_ms;
                }
                self.rec.state = IncidentState::OnScene as i32;
                self.emit("on_scene", now_ms, out);
                self.confirm("station_on_scene", now_ms, out);
            }
            Command::Resolve => {
                self.close(IncidentState::Resolved, "resolved", now_ms, out);
                return true;
            }
            Command::FalseAlarm => {
                self.close(IncidentState::FalseAlarm, "false_alarm", now_ms, out);
                return true;
            }
        }
        false
    }

    fn escalate(&mut self, missed: &str, now_ms: i64, out: &mut Vec<OutRecord>) {
        let level = (self.rec.escalation_level + 1).min(EscalationLevel::Dispatch119 as i32);
        self.rec.escalation_level = level;
        self.rec.escalations.push(Escalation {
            level,
            at_ms: now_ms,
            missed: missed.into(),
        });
        self.last_escalation_ms = now_ms;
        self.emit("escalated", now_ms, out);
        if level >= EscalationLevel::TownCentre as i32 {
            self.dispatch("escalated", now_ms, out);
        }
    }

    fn missed(&self, what: &str) -> bool {
        self.rec.escalations.iter().any(|e| e.missed == what)
    }

    /// Timers: persistence confirmation, missed deadlines, repeated escalation.
    pub fn on_tick(&mut self, rules: &IncidentRules, now_ms: i64, out: &mut Vec<OutRecord>) {
        if !self.confirmed()
            && self
                .active
                .iter()
                .any(|a| now_ms - a.since_ms >= rules.verification_ms)
        {
            self.confirm("persistence", now_ms, out);
        }
        if self.rec.acked_at_ms == 0 && now_ms >= self.rec.ack_deadline_ms && !self.missed("ack") {
            self.escalate("ack", now_ms, out);
        }
        if self.rec.on_scene_at_ms == 0
            && now_ms >= self.rec.on_scene_deadline_ms
            && !self.missed("on_scene")
        {
            self.escalate("on_scene", now_ms, out);
        }
        if now_ms >= self.rec.handled_deadline_ms && !self.missed("handled") {
            self.escalate("handled", now_ms, out);
        } else if self.missed("handled")
            && self.rec.escalation_level < EscalationLevel::Dispatch119 as i32
            && now_ms - self.last_escalation_ms >= rules.escalation_repeat_ms
        {
            self.escalate("repeat", now_ms, out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn incident_ids_round_trip() {
        assert_eq!(
            house_of_incident(&incident_id(42, 1_800_000_000_123, 0)),
            Some(42)
        );
        assert_eq!(
            house_of_incident(&incident_id(42, 1_800_000_000_123, 2)),
            Some(42)
        );
        assert_ne!(incident_id(42, 5, 0), incident_id(42, 5, 1));
        assert_eq!(house_of_incident("inc-4-5-6-7"), None);
        assert_eq!(house_of_incident("inc-x-1"), None);
        assert_eq!(house_of_incident("inc-4"), None);
        assert_eq!(house_of_incident("foo"), None);
    }
}
