//! Reads the engine's `fw.alarms` topic (`--log-dir`) and checks that every alarm the run
//! sent was written, and written once.

use crate::report::LogCheck;
use firewatch::eventlog::{LogReader, StartAt};
use firewatch_proto::AlarmRecord;
use prost::Message;
use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

/// Topic of accepted alarms.
const TOPIC: &str = "fw.alarms";

/// Reads `fw.alarms` under `dir` from the beginning; while sent alarms are still missing it
/// keeps following the log for up to `wait`. Blocking: run it off the async threads.
pub fn check(dir: &Path, sent: &[(u64, u32)], wait: Duration) -> anyhow::Result<LogCheck> {
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
                    1 => observed += 1,
                    _ => duplicates += 1,
                }
            }
        }
        if observed as usize == seen.len() || Instant::now() >= deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut missing: Vec<(u64, u32)> = seen
        .iter()
        .filter(|(_, &n)| n == 0)
        .map(|(&k, _)| k)
        .collect();
    missing.sort_unstable();
    Ok(LogCheck {
        records_read,
        alarms_observed: observed,
        alarms_missing: missing.len() as u64,
        duplicates,
        missing_sample: missing.into_iter().take(10).collect(),
    })
}
