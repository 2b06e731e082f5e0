//! Restart safety of the Kafka sink: the local state log as a write-ahead log.
//!
//! The records a restart rebuilds state from, and the life-safety ones (`fw.alarms`,
//! `fw.incidents`, `fw.dispatch`, `fw.troubles`, `fw.insurance.timeline`), are appended to
//! the local embedded log and synced before their group's acks go out. A cursor file
//! (`{log_dir}/kafka-cursor`, `topic offset` lines) records, per topic, the offset below
//! which every record is accounted for — delivered to Kafka or synced into the outage
//! spool. It advances only over the in-order prefix of finished groups and is persisted
//! about once a second; after a crash the records from the cursor to the end of the log
//! go to the spool again (at-least-once: a record delivered just before the crash can
//! reach Kafka twice; none is lost, although gateways' retransmissions are deduplicated
//! against this same log).

use crate::eventlog::{EventLog, LogReader, StartAt};
use crate::sink::spool::{write_atomic, SpoolError};
use crate::sink::{OutRecord, Topic};
use std::path::{Path, PathBuf};

/// Topics kept in the local log by the Kafka sink.
pub const WAL_TOPICS: [Topic; 5] = [
    Topic::Alarms,
    Topic::Incidents,
    Topic::Dispatch,
    Topic::Troubles,
    Topic::InsuranceTimeline,
];

/// Index of a topic in [`WAL_TOPICS`].
pub fn wal_index(t: Topic) -> Option<usize> {
    WAL_TOPICS.iter().position(|&w| w == t)
}

/// Parses cursor file text; unknown topics are ignored, missing ones are `None`.
pub fn parse(text: &str) -> Result<[Option<u64>; 5], String> {
    let mut out = [None; 5];
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let mut it = line.split_whitespace();
        let (Some(name), Some(n), None) = (it.next(), it.next(), it.next()) else {
            return Err(format!("bad cursor line {line:?}"));
        };
        let n: u64 = n.parse().map_err(|_| format!("bad offset in {line:?}"))?;
        if let Some(i) = Topic::from_name(name).and_then(wal_index) {
            out[i] = Some(n);
        }
    }
    Ok(out)
}

/// Formats cursor file text.
pub fn format(offsets: &[u64; 5]) -> String {
    WAL_TOPICS
        .iter()
        .zip(offsets)
        .map(|(t, o)| format!("{} {o}\n", t.name()))
        .collect()
}

/// The persisted per-topic cursor.
pub struct WalCursor {
    path: PathBuf,
    offsets: [u64; 5],
    persisted: [u64; 5],
}

impl WalCursor {
    /// Loads the cursor of the log in `log_dir`. Without a cursor file (first start with
    /// Kafka) everything already in the log counts as delivered. Returns the records past
    /// the cursor, which a crash left unaccounted for; call [`WalCursor::caught_up`] once
    /// they are spooled.
    pub fn open(log_dir: &Path, log: &EventLog) -> Result<(WalCursor, Vec<OutRecord>), SpoolError> {
        let path = log_dir.join("kafka-cursor");
        let ends: [u64; 5] = std::array::from_fn(|i| log.next_offset(WAL_TOPICS[i].name()));
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => Some(t),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(source) => return Err(SpoolError::Io { path, source }),
        };
        let Some(text) = text else {
            let mut c = WalCursor {
                path,
                offsets: ends,
                persisted: [u64::MAX; 5],
            };
            c.persist()?;
            return Ok((c, Vec::new()));
        };
        let saved = parse(&text).map_err(|detail| SpoolError::Damaged { offset: 0, detail })?;
        let mut tail = Vec::new();
        let mut offsets = [0; 5];
        for (i, t) in WAL_TOPICS.iter().enumerate() {
            let from = saved[i].unwrap_or(ends[i]).min(ends[i]);
            offsets[i] = from;
            let mut r = LogReader::open(log_dir, t.name(), StartAt::Offset(from))?;
            while r.next_offset() < ends[i] {
                let Some(rec) = r.next()? else { break };
                tail.push(OutRecord {
                    topic: *t,
                    key: rec.key,
                    value: rec.value,
                    ts_ms: rec.timestamp_ms,
                });
            }
        }
        Ok((
            WalCursor {
                path,
                offsets,
                persisted: offsets,
            },
            tail,
        ))
    }

    /// Everything in the log up to `log`'s ends is accounted for (spooled); persists.
    pub fn caught_up(&mut self, log: &EventLog) -> Result<(), SpoolError> {
        for (i, t) in WAL_TOPICS.iter().enumerate() {
            self.offsets[i] = self.offsets[i].max(log.next_offset(t.name()));
        }
        self.persist()
    }

    /// Records of topic `i` below `next` are accounted for.
    pub fn advance(&mut self, i: usize, next: u64) {
        self.offsets[i] = self.offsets[i].max(next);
    }

    /// Writes the cursor if it moved.
    pub fn persist(&mut self) -> Result<(), SpoolError> {
        if self.offsets != self.persisted {
            write_atomic(&self.path, &format(&self.offsets))?;
            self.persisted = self.offsets;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_text_round_trips_and_rejects_garbage() {
        let o = [1, 2, 3, 4, 5];
        let p = parse(&format(&o)).unwrap();
        assert_eq!(p, o.map(Some));
        assert_eq!(parse("fw.alarms 7\nfw.other 9\n").unwrap()[0], Some(7));
        assert!(parse("fw.alarms x\n").is_err());
        assert!(parse("fw.alarms 1 2\n").is_err());
    }

    #[test]
    fn unaccounted_tail_comes_back_after_a_crash() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = EventLog::open(dir.path(), 4096).unwrap();
        for i in 0..3u8 {
            log.append("fw.alarms", 1, b"h", &[i]).unwrap();
        }
        log.flush(true).unwrap();
        // First start: what is there counts as delivered.
        let (mut c, tail) = WalCursor::open(dir.path(), &log).unwrap();
        assert!(tail.is_empty());
        for i in 3..6u8 {
            log.append("fw.alarms", 1, b"h", &[i]).unwrap();
        }
        log.append("fw.incidents", 1, b"h", &[9]).unwrap();
        log.flush(true).unwrap();
        c.advance(0, 4);
        c.persist().unwrap();
        drop(c);
        // "Crash": offsets 4, 5 of fw.alarms and 0 of fw.incidents were never accounted for.
        let (mut c, tail) = WalCursor::open(dir.path(), &log).unwrap();
        let got: Vec<(Topic, u8)> = tail.iter().map(|r| (r.topic, r.value[0])).collect();
        assert_eq!(
            got,
            vec![
                (Topic::Alarms, 4),
                (Topic::Alarms, 5),
                (Topic::Incidents, 9)
            ]
        );
        c.caught_up(&log).unwrap();
        let (_, tail) = WalCursor::open(dir.path(), &log).unwrap();
        assert!(tail.is_empty());
    }
}
