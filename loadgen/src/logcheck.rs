//! Reads the engine's log (`--log-dir`): checks that every alarm the run sent was written to
//! `fw.alarms`, and written once; counts the run's nuisance closures in `fw.incidents` and
//! its gateways' records in `fw.deadletter` by reason.

use crate::report::{new_histogram, LogCheck};
use firewatch::eventlog::{LogReader, StartAt};
use firewatch_proto::{AlarmRecord, DeadLetterRecord, EnumName, IncidentRecord, RejectReason};
use prost::Message;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::time::{Duration, Instant};

/// Topic of accepted alarms.
const TOPIC: &str = "fw.alarms";
/// Topic of incident transitions.
const INCIDENTS: &str = "fw.incidents";
/// Topic of rejected input.
const DEADLETTER: &str = "fw.deadletter";

/// Reads `fw.alarms` under `dir` from the beginning; while sent alarms are still missing it
/// keeps following the log for up to `wait`. First appearances are counted per second of
/// record time from `start_ms` in `slots` slots (the last one takes the rest); the latency
/// from each alarm's intended time (`device_time_ms`) to its first record's time is kept for
/// alarms intended at or after `warm_from_ms`. Blocking: run it off the async threads.
pub fn check(
    dir: &Path,
    sent: &[(u64, u32)],
    wait: Duration,
    start_ms: i64,
    slots: usize,
    warm_from_ms: i64,
) -> anyhow::Result<LogCheck> {
    let slots = slots.max(1);
    let mut latency = new_histogram();
    let mut per_sec = vec![0u64; slots];
    let mut seen: HashMap<(u64, u32), u32> = sent.iter().map(|&k| (k, 0)).collect();
    let mut reader = LogReader::open(dir, TOPIC, StartAt::Beginning)
        .map_err(|e| anyhow::anyhow!("opening {TOPIC} in {}: {e}", dir.display()))?;
    let deadline = Instant::now() + wait;
    let mut records_read = 0u64;
    let mut observed = 0u64;
    let mut duplicates = 0u64;
    loop {
        while let Some(rec) = reader
            .next()
            .map_err(|e| anyhow::anyhow!("reading {TOPIC} in {}: {e}", dir.display()))?
        {
            records_read += 1;
            let Ok(alarm) = AlarmRecord::decode(rec.value.as_slice()) else {
                continue;
            };
            if let Some(n) = seen.get_mut(&(alarm.point_id, alarm.device_seq)) {
                *n += 1;
                match *n {
                    1 => {
                        observed += 1;
                        let sec = ((rec.timestamp_ms - start_ms).max(0) / 1000) as usize;
                        per_sec[sec.min(slots - 1)] += 1;
                        if alarm.device_time_ms >= warm_from_ms {
                            let ms = (rec.timestamp_ms - alarm.device_time_ms).max(0) as u64;
                            latency.saturating_record((ms * 1000).max(1));
                        }
                    }
                    _ => duplicates += 1,
                }
            }
        }
        if observed as usize == seen.len() || Instant::now() >= deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let missing: Vec<(u64, u32)> = seen
        .iter()
        .filter(|(_, &n)| n == 0)
        .map(|(&k, _)| k)
        .collect();
    Ok(LogCheck::summarise(
        format!("{TOPIC} in {}", dir.display()),
        records_read,
        observed,
        duplicates,
        missing,
        &latency,
        per_sec,
    ))
}

/// Counts `fw.incidents` records with transition "nuisance" whose first point is in
/// `points`, at or after `since_ms`; follows the log for up to `wait` while fewer than
/// `expect` were found. Blocking.
pub fn count_nuisance(
    dir: &Path,
    points: &HashSet<u64>,
    since_ms: i64,
    expect: u64,
    wait: Duration,
) -> anyhow::Result<u64> {
    let mut reader = LogReader::open(dir, INCIDENTS, StartAt::Beginning)
        .map_err(|e| anyhow::anyhow!("opening {INCIDENTS} in {}: {e}", dir.display()))?;
    let deadline = Instant::now() + wait;
    let mut found = 0u64;
    loop {
        while let Some(rec) = reader
            .next()
            .map_err(|e| anyhow::anyhow!("reading {INCIDENTS} in {}: {e}", dir.display()))?
        {
            let Ok(inc) = IncidentRecord::decode(rec.value.as_slice()) else {
                continue;
            };
            if inc.transition == "nuisance"
                && inc.at_ms >= since_ms
                && points.contains(&inc.first_point_id)
            {
                found += 1;
            }
        }
        if found >= expect || Instant::now() >= deadline {
            return Ok(found);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `fw.deadletter` records of `gateways` received at or after `since_ms`, by reason.
/// Blocking.
pub fn deadletters_by_reason(
    dir: &Path,
    gateways: &HashSet<String>,
    since_ms: i64,
) -> anyhow::Result<BTreeMap<String, u64>> {
    let mut reader = LogReader::open(dir, DEADLETTER, StartAt::Beginning)
        .map_err(|e| anyhow::anyhow!("opening {DEADLETTER} in {}: {e}", dir.display()))?;
    let mut by = BTreeMap::new();
    while let Some(rec) = reader
        .next()
        .map_err(|e| anyhow::anyhow!("reading {DEADLETTER} in {}: {e}", dir.display()))?
    {
        let Ok(dl) = DeadLetterRecord::decode(rec.value.as_slice()) else {
            continue;
        };
        if dl.received_at_ms >= since_ms && gateways.contains(&dl.gateway_id) {
            let reason = <RejectReason as EnumName>::wire_name(dl.reason)
                .unwrap_or_else(|| dl.reason.to_string());
            *by.entry(reason).or_default() += 1;
        }
    }
    Ok(by)
}
