//! Periodic aggregates: per-house risk counters (`fw.insurance.risk`) owned by each shard,
//! and per-village online counts (`fw.coverage`) shared by all shards as atomics, since a
//! village's houses spread over shards.

use crate::registry::Registry;
use crate::sink::{OutRecord, Topic};
use firewatch_proto::{CoverageRecord, RiskRecord};
use rustc_hash::FxHashMap;
use std::sync::atomic::{AtomicI64, Ordering};

/// Risk counters of one house over the current window.
#[derive(Debug, Default, Clone, Copy)]
pub struct HouseStats {
    /// Alarm-class events accepted.
    pub alarms: u32,
    /// Incidents closed as nuisance.
    pub nuisance: u32,
    /// Troubles raised.
    pub troubles: u32,
    /// Troubles restored.
    pub repaired: u32,
    /// Sum of time-to-repair.
    pub repair_ms: i64,
    /// Incidents closed.
    pub incidents: u32,
    /// Acked within the ack deadline.
    pub acked_in_time: u32,
    /// On scene within the deadline.
    pub on_scene_in_time: u32,
    /// Resolved within the handled deadline.
    pub handled_in_time: u32,
    /// Sum of time-to-ack of acked incidents.
    pub ack_ms: i64,
    /// Acked incidents.
    pub acked: u32,
}

/// A `fw.insurance.risk` record for one house.
#[allow(clippy::too_many_arguments)]
pub fn risk_record(
    policy: u32,
    house: u32,
    start_ms: i64,
    end_ms: i64,
    points: u32,
    online: u32,
    s: &HouseStats,
) -> OutRecord {
    let rec = RiskRecord {
        policy_id: policy,
        house_id: house,
        window_start_ms: start_ms,
        window_end_ms: end_ms,
        points,
        points_online: online,
        online_ratio: if points == 0 {
            0.0
        } else {
            online as f32 / points as f32
        },
        alarms: s.alarms,
        nuisance_alarms: s.nuisance,
        troubles: s.troubles,
        troubles_repaired: s.repaired,
        repair_ms_total: s.repair_ms,
        incidents: s.incidents,
        acked_in_time: s.acked_in_time,
        on_scene_in_time: s.on_scene_in_time,
        handled_in_time: s.handled_in_time,
        ack_ms_total: s.ack_ms,
        acked: s.acked,
    };
    OutRecord::new(Topic::InsuranceRisk, policy, &rec, end_ms)
}

/// Points registered and online per village, shared by the shards.
pub struct Coverage {
    index: FxHashMap<u32, u32>,
    villages: Vec<(u32, u32, u32)>,
    online: Vec<AtomicI64>,
}

impl Coverage {
    /// Counts the registered points of every village.
    pub fn new(registry: &Registry) -> Self {
        let mut index = FxHashMap::default();
        let mut villages: Vec<(u32, u32, u32)> = Vec::new();
        for idx in 0..registry.len() as u32 {
            let info = registry.info(idx);
            let i = *index.entry(info.village).or_insert_with(|| {
                villages.push((info.village, info.town, 0));
                villages.len() as u32 - 1
            });
            villages[i as usize].2 += 1;
        }
        let online = villages.iter().map(|_| AtomicI64::new(0)).collect();
        Coverage {
            index,
            villages,
            online,
        }
    }

    /// Adds `delta` to the online count of `village`.
    pub fn add(&self, village: u32, delta: i64) {
        if let Some(&i) = self.index.get(&village) {
            self.online[i as usize].fetch_add(delta, Ordering::Relaxed);
        }
    }

    /// Online points of `village`.
    pub fn online(&self, village: u32) -> i64 {
        self.index
            .get(&village)
            .map_or(0, |&i| self.online[i as usize].load(Ordering::Relaxed))
    }

    /// One `fw.coverage` record per village.
    pub fn records(&self, now_ms: i64, out: &mut Vec<OutRecord>) {
        for (i, &(village, town, registered)) in self.villages.iter().enumerate() {
            let online = self.online[i]
                .load(Ordering::Relaxed)
                .clamp(0, i64::from(registered)) as u32;
            let rec = CoverageRecord {
                village_id: village,
                town_id: town,
                points_registered: registered,
                points_online: online,
                online_ratio: if registered == 0 {
                    0.0
                } else {
                    online as f32 / registered as f32
                },
                at_ms: now_ms,
            };
            out.push(OutRecord::new(Topic::Coverage, village, &rec, now_ms));
        }
    }
}
