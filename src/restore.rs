//! Restart safety: what the shards need that is not in their snapshots is rebuilt from the
//! embedded log before the engine accepts input.
//! - open incidents: the latest `fw.incidents` record of every incident that is not closed
//!   (each record carries the whole incident, deadlines included, so timers fire at their
//!   original times);
//! - insurance chain heads: the latest `fw.insurance.timeline` record of every policy;
//! - dedup memory: `fw.alarms` records younger than the dedup window, so a gateway that
//!   retransmits an alarm whose ack the crash swallowed does not create a duplicate.

use crate::eventlog::{LogError, LogReader, StartAt};
use crate::pipeline::incident::is_closed;
use crate::sink::Topic;
use firewatch_proto::{AlarmRecord, IncidentRecord, InsuranceTimelineRecord};
use prost::Message;
use std::collections::HashMap;
use std::path::Path;

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
