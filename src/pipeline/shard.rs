//! One shard's state machine: pure functions of an event (or a tick) and `now`.
//!
//! A shard owns the points of the houses hashed to it, in a dense `Vec` indexed by the
//! shard-local point number, so the hot path takes no locks and does no hashing.

use crate::registry::{PointIdx, PointInfo, Registry};
use crate::sink::{OutRecord, Topic};
use firewatch_proto::{
    AlarmRecord, EventKind, Location, PointEvent, PointState, PointStatusRecord,
};
use std::sync::Arc;

/// 2020-01-01T00:00:00Z in Unix ms: the epoch of the compact per-point timestamps.
const EPOCH_MS: i64 = 1_577_836_800_000;
/// Recent non-heartbeat sequence numbers kept per point for dedup.
const RECENT: usize = 4;
/// Battery level at or above which a low-battery trouble is restored.
const BATTERY_RESTORE_PCT: u32 = 25;

const FLAG_LOW_BATTERY: u8 = 1;
const FLAG_TAMPER: u8 = 2;
const FLAG_FAULT: u8 = 4;

/// Hot state of one point (48 bytes).
#[derive(Debug, Clone, Copy, Default)]
struct PointSlot {
    last_seen_ms: i64,
    /// (device_seq, seconds since EPOCH_MS) of recent non-heartbeat events; 0 s = empty.
    recent: [(u32, u32); RECENT],
    last_hb_seq: u32,
    state: u8,
    flags: u8,
    battery: u8,
    ring: u8,
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

/// Per-shard state.
pub struct Shard {
    registry: Arc<Registry>,
    points: Vec<PointSlot>,
    dedup_window_s: u32,
    online: u64,
}

fn secs(now_ms: i64) -> u32 {
    // Clamp to >= 1 so that 0 keeps meaning "empty".
    ((now_ms - EPOCH_MS) / 1000).clamp(1, i64::from(u32::MAX)) as u32
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

impl Shard {
    /// A shard owning `points` points (shard-local indexes `0..points`).
    pub fn new(registry: Arc<Registry>, points: usize, dedup_window: std::time::Duration) -> Self {
        Shard {
            registry,
            points: vec![PointSlot::default(); points],
            dedup_window_s: dedup_window.as_secs().clamp(1, u64::from(u32::MAX)) as u32,
            online: 0,
        }
    }

    /// Points currently online.
    pub fn online(&self) -> u64 {
        self.online
    }

    /// Processes one event at `now_ms`, appending the records it produces to `out`.
    pub fn on_event(
        &mut self,
        ev: &RoutedEvent,
        ctx: &BatchCtx,
        now_ms: i64,
        out: &mut Vec<OutRecord>,
    ) -> Outcome {
        let Some(slot) = self.points.get_mut(ev.local as usize) else {
            // The router only sends points it assigned here; never trust that blindly.
            return Outcome::Misrouted;
        };
        let kind = EventKind::try_from(ev.event.kind).unwrap_or(EventKind::Unspecified);
        let now_s = secs(now_ms);
        let seq = ev.event.device_seq;
        if kind == EventKind::Heartbeat {
            if slot.state != 0 && slot.last_hb_seq == seq && slot.last_seen_ms > 0 {
                slot.last_seen_ms = slot.last_seen_ms.max(now_ms);
                return Outcome::Duplicate;
            }
            slot.last_hb_seq = seq;
        } else {
            let window = self.dedup_window_s;
            if slot
                .recent
                .iter()
                .any(|&(s, at)| at != 0 && s == seq && now_s.saturating_sub(at) <= window)
            {
                return Outcome::Duplicate;
            }
            slot.recent[slot.ring as usize % RECENT] = (seq, now_s);
            slot.ring = (slot.ring + 1) % RECENT as u8;
        }
        slot.last_seen_ms = now_ms;
        let info = *self.registry.info(ev.point);

        let mut cause: Option<&'static str> = None;
        if slot.state != PointState::Online as u8 {
            if slot.state == 0 {
                cause = Some("first_seen");
            } else {
                cause = Some("back_online");
            }
            slot.state = PointState::Online as u8;
            self.online += 1;
        }
        let old_flags = slot.flags;
        match kind {
            EventKind::LowBattery => slot.flags |= FLAG_LOW_BATTERY,
            EventKind::Tamper => slot.flags |= FLAG_TAMPER,
            EventKind::TamperClear => slot.flags &= !FLAG_TAMPER,
            EventKind::Fault => slot.flags |= FLAG_FAULT,
            EventKind::FaultClear => slot.flags &= !FLAG_FAULT,
            _ => {}
        }
        if ev.event.battery_pct > 0 {
            slot.battery = ev.event.battery_pct.min(100) as u8;
            if kind != EventKind::LowBattery && ev.event.battery_pct >= BATTERY_RESTORE_PCT {
                slot.flags &= !FLAG_LOW_BATTERY;
            }
        }
        if slot.flags != old_flags && cause.is_none() {
            cause = Some(match kind {
                EventKind::LowBattery => "low_battery",
                EventKind::Tamper => "tamper",
                EventKind::TamperClear => "tamper_clear",
                EventKind::Fault => "fault",
                EventKind::FaultClear => "fault_clear",
                _ => "battery_restored",
            });
        }
        let slot = *slot;

        if kind.is_alarm() {
            let rec = AlarmRecord {
                point_id: self.registry.point_id(ev.point),
                kind: kind as i32,
                device_seq: seq,
                device_time_ms: ev.event.device_time_ms,
                received_at_ms: ctx.received_ms,
                gateway_id: ctx.gateway_id.to_string(),
                batch_seq: ctx.batch_seq,
                value: ev.event.value,
                location: Some(location(&info)),
                device_class: self.registry.device_class_name(info.class).to_string(),
            };
            out.push(OutRecord::new(Topic::Alarms, info.house, &rec, now_ms));
        }
        if let Some(cause) = cause {
            let point_id = self.registry.point_id(ev.point);
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
                location: Some(location(&info)),
            };
            out.push(OutRecord::new(Topic::PointStatus, point_id, &rec, now_ms));
        }
        Outcome::Accepted
    }

    /// Runs timers due at `now_ms`. Supervision and escalation timers plug in here.
    pub fn on_tick(&mut self, _now_ms: i64, _out: &mut Vec<OutRecord>) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::{generate, GenerateOptions};
    use firewatch_proto::EventKind as K;
    use prost::Message;

    fn setup() -> (Shard, Arc<Registry>, BatchCtx) {
        let reg = Arc::new(generate(&GenerateOptions {
            points: 200,
            seed: 1,
        }));
        let shard = Shard::new(reg.clone(), reg.len(), std::time::Duration::from_secs(600));
        let ctx = BatchCtx {
            gateway_id: "gw".into(),
            batch_seq: 1,
            received_ms: 0,
        };
        (shard, reg, ctx)
    }

    fn ev(point: u32, kind: K, seq: u32) -> RoutedEvent {
        RoutedEvent {
            point,
            local: point,
            event: PointEvent {
                point_id: 0,
                kind: kind as i32,
                device_seq: seq,
                ..Default::default()
            },
        }
    }

    const T0: i64 = 1_800_000_000_000;

    #[test]
    fn alarm_produces_enriched_record_once() {
        let (mut s, reg, ctx) = setup();
        let mut out = Vec::new();
        assert_eq!(
            s.on_event(&ev(5, K::SmokeAlarm, 9), &ctx, T0, &mut out),
            Outcome::Accepted
        );
        let alarms: Vec<_> = out.iter().filter(|r| r.topic == Topic::Alarms).collect();
        assert_eq!(alarms.len(), 1);
        let a = AlarmRecord::decode(alarms[0].value.as_slice()).unwrap();
        assert_eq!(a.point_id, reg.point_id(5));
        assert_eq!(a.location.unwrap().house_id, reg.info(5).house);
        assert_eq!(alarms[0].key, reg.info(5).house.to_string().into_bytes());
        out.clear();
        assert_eq!(
            s.on_event(&ev(5, K::SmokeAlarm, 9), &ctx, T0 + 1000, &mut out),
            Outcome::Duplicate
        );
        assert!(out.is_empty());
        // Outside the window the same seq is new again (device seq wrapped or reset).
        assert_eq!(
            s.on_event(
                &ev(5, K::SmokeAlarm, 9),
                &ctx,
                T0 + 601_000 + 1000,
                &mut out
            ),
            Outcome::Accepted
        );
    }

    #[test]
    fn status_changes_only_on_change() {
        let (mut s, _, ctx) = setup();
        let mut out = Vec::new();
        s.on_event(&ev(1, K::Heartbeat, 1), &ctx, T0, &mut out);
        assert_eq!(out.len(), 1, "first_seen");
        assert_eq!(s.online(), 1);
        out.clear();
        s.on_event(&ev(1, K::Heartbeat, 2), &ctx, T0 + 1, &mut out);
        assert!(out.is_empty());
        s.on_event(&ev(1, K::LowBattery, 3), &ctx, T0 + 2, &mut out);
        let st = PointStatusRecord::decode(out[0].value.as_slice()).unwrap();
        assert!(st.low_battery);
        assert_eq!(st.cause, "low_battery");
        out.clear();
        let mut hb = ev(1, K::Heartbeat, 4);
        hb.event.battery_pct = 90;
        s.on_event(&hb, &ctx, T0 + 3, &mut out);
        let st = PointStatusRecord::decode(out[0].value.as_slice()).unwrap();
        assert!(!st.low_battery);
        assert_eq!(st.battery_pct, 90);
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
}
