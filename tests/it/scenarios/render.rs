//! Rendering output records as golden lines.

use super::format::*;
use super::*;

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

pub(super) fn ids(v: &[u64]) -> String {
    if v.is_empty() {
        "-".to_string()
    } else {
        v.iter().map(u64::to_string).collect::<Vec<_>>().join(",")
    }
}

pub(super) fn name<E: EnumName>(v: i32) -> String {
    E::wire_name(v).unwrap_or_else(|| v.to_string())
}

/// Appends ` key=+Ns` when `ms` is set.
pub(super) fn stamp(s: &mut String, key: &str, ms: i64) {
    if ms != 0 {
        let _ = write!(s, " {key}={}", rel(ms));
    }
}

pub(super) fn escalations(i: &IncidentRecord) -> String {
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

pub(super) fn incident_fields(i: &IncidentRecord) -> String {
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
pub(super) fn render(r: &OutRecord, sc: &Scenario) -> Option<String> {
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
