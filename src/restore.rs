//! Restart safety: what the shards need that is not in their snapshots is rebuilt from the
//! embedded log before the engine accepts input.
//! - open incidents: the latest `fw.incidents` record of every incident that is not closed
//!   (each record carries the whole incident, deadlines included, so timers fire at their
//!   original times);
//! - insurance chain heads: the latest `fw.insurance.timeline` record of every policy;
//! - dedup memory: `fw.alarms` records younger than the dedup window, so a gateway that
//!   retransmits an alarm whose ack the crash swallowed does not create a duplicate.

use crate::eventlog::{LogError, LogReader, StartAt};
use crate::pipeline::aggregate::Coverage;
use crate::pipeline::incident::is_closed;
use crate::pipeline::shard::PointSlot;
use crate::pipeline::{shard_of_house, Router, Shard, ShardRules};
use crate::registry::{PointIdx, Registry};
use crate::sink::Topic;
use firewatch_proto::{AlarmRecord, IncidentRecord, InsuranceTimelineRecord};
use prost::Message;
use rustc_hash::FxHashMap;
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

/// What the log says the shards must remember.
#[derive(Debug, Default)]
pub struct Restored {
    /// Open incidents.
    pub incidents: Vec<IncidentRecord>,
    /// Latest timeline record per policy.
    pub chains: Vec<InsuranceTimelineRecord>,
    /// Recent alarms: (point id, device seq, received ms).
    pub recent_alarms: Vec<(u64, u32, i64)>,
    /// Records scanned.
    pub scanned: u64,
}

fn scan<M: Message + Default>(
    dir: &Path,
    topic: Topic,
    mut f: impl FnMut(M),
) -> Result<u64, LogError> {
    let mut reader = LogReader::open(dir, topic.name(), StartAt::Beginning)?;
    let mut n = 0;
    while let Some(r) = reader.next()? {
        n += 1;
        if let Ok(m) = M::decode(r.value.as_slice()) {
            f(m);
        }
    }
    Ok(n)
}

/// Reads the log under `dir`.
pub fn from_log(dir: &Path, now_ms: i64, dedup_window_ms: i64) -> Result<Restored, LogError> {
    let mut out = Restored::default();
    let mut latest: HashMap<String, IncidentRecord> = HashMap::new();
    out.scanned += scan::<IncidentRecord>(dir, Topic::Incidents, |r| {
        latest.insert(r.incident_id.clone(), r);
    })?;
    out.incidents = latest
        .into_values()
        .filter(|r| !is_closed(r.state))
        .collect();
    out.incidents
        .sort_by(|a, b| a.incident_id.cmp(&b.incident_id));
    let mut heads: HashMap<u32, InsuranceTimelineRecord> = HashMap::new();
    out.scanned += scan::<InsuranceTimelineRecord>(dir, Topic::InsuranceTimeline, |r| {
        heads.insert(r.policy_id, r);
    })?;
    out.chains = heads.into_values().collect();
    out.scanned += scan::<AlarmRecord>(dir, Topic::Alarms, |a| {
        if now_ms - a.received_at_ms <= dedup_window_ms {
            out.recent_alarms
                .push((a.point_id, a.device_seq, a.received_at_ms));
        }
    })?;
    Ok(out)
}

/// Builds the shards (`globals[k]` = registry points of shard k) and gives each what the
/// log and the snapshots remember: point slots, open incidents, chain heads, recent alarms.
/// Shard 0 writes the coverage records.
#[allow(clippy::too_many_arguments)]
pub fn build_shards(
    registry: &Arc<Registry>,
    rules: &Arc<ShardRules>,
    coverage: &Arc<Coverage>,
    router: &Router,
    globals: &[Vec<PointIdx>],
    restored: Restored,
    saved: &FxHashMap<u64, PointSlot>,
    start_ms: i64,
) -> Vec<Shard> {
    let shards = globals.len();
    let mut built: Vec<Shard> = globals
        .iter()
        .enumerate()
        .map(|(id, g)| {
            let mut shard = Shard::new(
                registry.clone(),
                rules.clone(),
                g.clone(),
                coverage.clone(),
                id == 0,
                start_ms,
            );
            for (local, &idx) in g.iter().enumerate() {
                if let Some(slot) = saved.get(&registry.point_id(idx)) {
                    shard.restore_point(local as u32, slot, start_ms);
                }
            }
            shard
        })
        .collect();
    for rec in restored.incidents {
        let house = rec.location.map_or(0, |l| l.house_id);
        built[shard_of_house(house, shards)].restore_incident(rec);
    }
    for rec in &restored.chains {
        let house = rec
            .incident
            .as_ref()
            .and_then(|i| i.location)
            .map_or(0, |l| l.house_id);
        built[shard_of_house(house, shards)].restore_chain(rec);
    }
    for (point_id, seq, at) in restored.recent_alarms {
        if let Some((s, local)) = registry
            .lookup(point_id)
            .and_then(|(idx, _)| router.place(idx))
        {
            built[s].restore_alarm(local, seq, at);
        }
    }
    built
}
