//! The Kafka sink's outage spool: a bounded, crash-safe local queue of output records, built
//! on the embedded log ([`crate::eventlog`]).
//!
//! While Kafka is down or slow, the sink appends records here and syncs them before the
//! gateway acks of their group go out. When Kafka is back it replays them in spool order
//! (before any new record, so per-key order holds) and confirms each delivery report.
//!
//! # On disk
//!
//! ```text
//! {dir}/records/{base_offset:020}.log   one embedded-log topic, every output topic mixed
//! {dir}/cursor                          decimal offset of the first unconfirmed record
//! ```
//!
//! A record's key and timestamp are the output record's; its value is one byte of
//! [`Topic`] index followed by the protobuf value. The cursor is replaced atomically
//! (write, fsync, rename, fsync directory) and may lag behind the deliveries (a crash then
//! replays a few records twice: at-least-once, never loss). Segments wholly below the
//! cursor are deleted.
//!
//! # Bound
//!
//! `max_bytes` bounds the segment files on disk. Above `coalesce_percent` of it,
//! `fw.point-status` records (heartbeat-derived, compacted downstream) are no longer
//! appended but kept in memory, the latest per point, and sent when the replay has caught
//! up; alarms and every other record are never evicted or coalesced. When an append would
//! pass `max_bytes` the caller must wait ([`Spool::has_room`]) — the sink stops acking.

use super::{OutRecord, Topic};
use crate::eventlog::{EventLog, LogError, LogReader, Record, StartAt};
use std::collections::{HashMap, VecDeque};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

/// The embedded-log topic holding the spool.
const SPOOL_TOPIC: &str = "records";

/// Errors of the spool.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// The underlying log failed.
    #[error("spool log: {0}")]
    Log(#[from] LogError),
    /// The cursor file or a segment could not be read, written or deleted.
    #[error("spool i/o on {path}: {source}")]
    Io {
        /// File.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// A spooled record that does not decode (bad topic byte).
    #[error("spool record {offset} is damaged: {detail}")]
    Damaged {
        /// Spool offset.
        offset: u64,
        /// What is wrong.
        detail: String,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SpoolError + '_ {
    move |source| SpoolError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Encodes a record's spool value: topic index byte, then the protobuf value.
pub fn encode_value(r: &OutRecord) -> Vec<u8> {
    let mut v = Vec::with_capacity(r.value.len() + 1);
    v.push(r.topic as u8);
    v.extend_from_slice(&r.value);
    v
}

/// Decodes a spooled record back into an output record.
pub fn decode_record(rec: Record) -> Result<OutRecord, SpoolError> {
    let Some((&t, value)) = rec.value.split_first() else {
        return Err(SpoolError::Damaged {
            offset: rec.offset,
            detail: "empty value".into(),
        });
    };
    let topic = Topic::ALL
        .get(usize::from(t))
        .copied()
        .ok_or(SpoolError::Damaged {
            offset: rec.offset,
            detail: format!("topic index {t}"),
        })?;
    Ok(OutRecord {
        topic,
        key: rec.key,
        value: value.to_vec(),
        ts_ms: rec.timestamp_ms,
    })
}

/// Delivery confirmations of replayed records, which may arrive out of order (partitions):
/// tracks the contiguous confirmed prefix.
#[derive(Debug, Default)]
pub struct ConfirmWindow {
    /// (offset, record timestamp, confirmed), offsets consecutive.
    pending: VecDeque<(u64, i64, bool)>,
}

impl ConfirmWindow {
    /// Notes that `offset` (the next consecutive one) was sent.
    pub fn sent(&mut self, offset: u64, ts_ms: i64) {
        self.pending.push_back((offset, ts_ms, false));
    }

    /// Marks `offset` confirmed; returns the new cursor (first unconfirmed offset) when the
    /// prefix grew.
    pub fn confirm(&mut self, offset: u64) -> Option<u64> {
        let first = self.pending.front()?.0;
        let i = usize::try_from(offset.checked_sub(first)?).ok()?;
        self.pending.get_mut(i)?.2 = true;
        let mut cursor = None;
        while let Some(&(o, _, true)) = self.pending.front() {
            self.pending.pop_front();
            cursor = Some(o + 1);
        }
        cursor
    }

    /// Records sent and not yet confirmed (or behind an unconfirmed one).
    pub fn len(&self) -> usize {
        self.pending.len()
    }

    /// True when nothing is outstanding.
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// Timestamp of the oldest outstanding record.
    pub fn oldest_ms(&self) -> Option<i64> {
        self.pending.front().map(|p| p.1)
    }

    /// Forgets everything outstanding (the records are still in the spool).
    pub fn clear(&mut self) {
        self.pending.clear();
    }
}

/// Reads the cursor file; 0 when there is none.
pub fn read_cursor(path: &Path) -> Result<u64, SpoolError> {
    match fs::read_to_string(path) {
        Ok(s) => s.trim().parse().map_err(|_| SpoolError::Damaged {
            offset: 0,
            detail: format!("cursor file {} holds {s:?}", path.display()),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(io(path)(e)),
    }
}

/// Replaces `path` with `text` atomically and durably.
pub fn write_atomic(path: &Path, text: &str) -> Result<(), SpoolError> {
    let tmp = path.with_extension("tmp");
    let mut f = fs::File::create(&tmp).map_err(io(&tmp))?;
    f.write_all(text.as_bytes()).map_err(io(&tmp))?;
    f.sync_data().map_err(io(&tmp))?;
    fs::rename(&tmp, path).map_err(io(path))?;
    if let Some(dir) = path.parent() {
        fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io(dir))?;
    }
    Ok(())
}

/// Segment base offsets under `topic_dir`, sorted, with each file's size.
fn segments(topic_dir: &Path) -> Result<Vec<(u64, u64, PathBuf)>, SpoolError> {
    let entries = match fs::read_dir(topic_dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io(topic_dir)(e)),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(io(topic_dir))?;
        let name = entry.file_name();
        let Some(base) = name
            .to_str()
            .and_then(|n| n.strip_suffix(".log"))
            .and_then(|n| n.parse::<u64>().ok())
        else {
            continue;
        };
        let len = entry.metadata().map_err(io(&entry.path()))?.len();
        out.push((base, len, entry.path()));
    }
    out.sort();
    Ok(out)
}

/// Segments that hold only records below `cursor` (never the last one).
pub fn deletable(bases: &[u64], cursor: u64) -> usize {
    bases.windows(2).take_while(|w| w[1] <= cursor).count()
}

/// Spool bounds (from `[kafka.spool]`).
#[derive(Debug, Clone, Copy)]
pub struct SpoolLimits {
    /// Most bytes of segment files.
    pub max_bytes: u64,
    /// Segment file size.
    pub segment_bytes: u64,
    /// Percent of `max_bytes` above which point-status records are coalesced.
    pub coalesce_percent: u8,
}

/// The outage spool.
pub struct Spool {
    dir: PathBuf,
    log: EventLog,
    reader: LogReader,
    peeked: Option<Record>,
    cursor: u64,
    persisted: u64,
    window: ConfirmWindow,
    limits: SpoolLimits,
    disk_bytes: u64,
    appended_at_measure: u64,
    coalesced: HashMap<Vec<u8>, OutRecord>,
}

impl Spool {
    /// Opens (creating) the spool under `dir`; replay resumes at the persisted cursor.
    pub fn open(dir: &Path, limits: SpoolLimits) -> Result<Spool, SpoolError> {
        let log = EventLog::open(dir, limits.segment_bytes)?;
        let next = log.next_offset(SPOOL_TOPIC);
        let cursor_path = dir.join("cursor");
        let mut cursor = read_cursor(&cursor_path)?;
        let first = segments(&dir.join(SPOOL_TOPIC))?.first().map_or(0, |s| s.0);
        if cursor > next || cursor < first {
            tracing::warn!(cursor, next, first, "spool cursor out of range; clamped");
            cursor = cursor.clamp(first, next);
        }
        let reader = LogReader::open(dir, SPOOL_TOPIC, StartAt::Offset(cursor))?;
        let mut s = Spool {
            dir: dir.to_path_buf(),
            log,
            reader,
            peeked: None,
            cursor,
            persisted: cursor,
            window: ConfirmWindow::default(),
            limits,
            disk_bytes: 0,
            appended_at_measure: 0,
            coalesced: HashMap::new(),
        };
        s.measure()?;
        Ok(s)
    }

    fn measure(&mut self) -> Result<(), SpoolError> {
        self.disk_bytes = segments(&self.dir.join(SPOOL_TOPIC))?
            .iter()
            .map(|s| s.1)
            .sum();
        self.appended_at_measure = self.log.bytes_appended();
        Ok(())
    }

    /// Bytes of segment files (approximately, between maintenance passes).
    pub fn bytes(&self) -> u64 {
        self.disk_bytes + (self.log.bytes_appended() - self.appended_at_measure)
    }

    /// Records appended and not yet confirmed delivered.
    pub fn depth(&self) -> u64 {
        self.log.next_offset(SPOOL_TOPIC) - self.cursor
    }

    /// Point-status records held in memory, coalesced.
    pub fn coalesced_len(&self) -> usize {
        self.coalesced.len()
    }

    /// Nothing left to replay (coalesced records included).
    pub fn is_empty(&self) -> bool {
        self.depth() == 0 && self.coalesced.is_empty()
    }

    /// Whether `bytes` more fit under the bound (an empty spool always takes a record).
    pub fn has_room(&self, bytes: u64) -> bool {
        self.depth() == 0 || self.bytes() + bytes <= self.limits.max_bytes
    }

    fn coalescing(&self) -> bool {
        self.bytes() * 100 >= self.limits.max_bytes * u64::from(self.limits.coalesce_percent)
    }

    /// Appends records (point-status ones coalesced in memory when near the bound) and
    /// syncs; after `Ok` they survive a crash. Returns how many were coalesced.
    pub fn append(&mut self, records: &[OutRecord]) -> Result<u64, SpoolError> {
        let coalescing = self.coalescing();
        let mut coalesced = 0;
        for r in records {
            if coalescing && r.topic == Topic::PointStatus {
                self.coalesced.insert(r.key.clone(), r.clone());
                coalesced += 1;
                continue;
            }
            self.log
                .append(SPOOL_TOPIC, r.ts_ms, &r.key, &encode_value(r))?;
        }
        self.log.flush(true)?;
        Ok(coalesced)
    }

    /// Frame bytes a record takes in the spool (for [`Spool::has_room`]).
    pub fn frame_bytes(r: &OutRecord) -> u64 {
        (8 + 20 + r.key.len() + r.value.len() + 1) as u64
    }

    /// The next record to replay (its spool offset) without sending it yet.
    pub fn peek(&mut self) -> Result<Option<(u64, &Record)>, SpoolError> {
        if self.peeked.is_none() {
            self.peeked = self.reader.next()?;
        }
        Ok(self.peeked.as_ref().map(|r| (r.offset, r)))
    }

    /// Takes the next record to replay and notes it as sent.
    pub fn take_next(&mut self) -> Result<Option<(u64, OutRecord)>, SpoolError> {
        self.peek()?;
        let Some(rec) = self.peeked.take() else {
            return Ok(None);
        };
        let offset = rec.offset;
        self.window.sent(offset, rec.timestamp_ms);
        Ok(Some((offset, decode_record(rec)?)))
    }

    /// Replayed records not yet confirmed.
    pub fn in_flight(&self) -> usize {
        self.window.len()
    }

    /// A replayed record was delivered (or dealt with for good).
    pub fn confirm(&mut self, offset: u64) {
        if let Some(c) = self.window.confirm(offset) {
            self.cursor = c;
        }
    }

    /// Forgets the replay in flight: it starts again at the cursor.
    pub fn rewind(&mut self) -> Result<(), SpoolError> {
        self.window.clear();
        self.peeked = None;
        self.reader = LogReader::open(&self.dir, SPOOL_TOPIC, StartAt::Offset(self.cursor))?;
        Ok(())
    }

    /// The coalesced point-status records, to send once the replay caught up.
    pub fn take_coalesced(&mut self) -> Vec<OutRecord> {
        self.coalesced.drain().map(|(_, r)| r).collect()
    }

    /// Timestamp of the oldest record not yet delivered.
    pub fn oldest_ms(&mut self) -> Option<i64> {
        if let Some(t) = self.window.oldest_ms() {
            return Some(t);
        }
        if self.depth() > 0 {
            if let Ok(Some((_, r))) = self.peek() {
                return Some(r.timestamp_ms);
            }
        }
        self.coalesced.values().map(|r| r.ts_ms).min()
    }

    /// Persists the cursor if it moved and deletes the segments it has passed.
    pub fn maintain(&mut self) -> Result<(), SpoolError> {
        if self.cursor == self.persisted {
            return Ok(());
        }
        write_atomic(&self.dir.join("cursor"), &format!("{}\n", self.cursor))?;
        self.persisted = self.cursor;
        let topic_dir = self.dir.join(SPOOL_TOPIC);
        let segs = segments(&topic_dir)?;
        let bases: Vec<u64> = segs.iter().map(|s| s.0).collect();
        let n = deletable(&bases, self.cursor);
        for (_, _, path) in &segs[..n] {
            fs::remove_file(path).map_err(io(path))?;
        }
        if n > 0 {
            fs::File::open(&topic_dir)
                .and_then(|d| d.sync_all())
                .map_err(io(&topic_dir))?;
        }
        self.measure()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(topic: Topic, key: &str, v: u8) -> OutRecord {
        OutRecord {
            topic,
            key: key.as_bytes().to_vec(),
            value: vec![v; 100],
            ts_ms: i64::from(v),
        }
    }

    fn limits(max_bytes: u64) -> SpoolLimits {
        SpoolLimits {
            max_bytes,
            segment_bytes: 4096,
            coalesce_percent: 50,
        }
    }

    #[test]
    fn envelope_round_trips_every_topic() {
        for t in Topic::ALL {
            let r = rec(t, "k", 3);
            let back = decode_record(Record {
                offset: 0,
                timestamp_ms: r.ts_ms,
                key: r.key.clone(),
                value: encode_value(&r),
            })
            .unwrap();
            assert_eq!(back, r);
        }
        let bad = Record {
            offset: 9,
            timestamp_ms: 0,
            key: vec![],
            value: vec![200],
        };
        assert!(matches!(
            decode_record(bad),
            Err(SpoolError::Damaged { offset: 9, .. })
        ));
    }

    #[test]
    fn confirm_window_tracks_the_contiguous_prefix() {
        let mut w = ConfirmWindow::default();
        for o in 10..15 {
            w.sent(o, o as i64);
        }
        assert_eq!(w.confirm(12), None);
        assert_eq!(w.confirm(10), Some(11));
        assert_eq!(w.oldest_ms(), Some(11));
        assert_eq!(w.confirm(11), Some(13));
        assert_eq!(w.confirm(99), None);
        assert_eq!(w.confirm(14), None);
        assert_eq!(w.confirm(13), Some(15));
        assert!(w.is_empty());
    }

    #[test]
    fn deletable_segments_stay_below_the_cursor_and_keep_the_last() {
        assert_eq!(deletable(&[], 5), 0);
        assert_eq!(deletable(&[0], 5), 0);
        assert_eq!(deletable(&[0, 10, 20], 9), 0);
        assert_eq!(deletable(&[0, 10, 20], 10), 1);
        assert_eq!(deletable(&[0, 10, 20], 25), 2);
    }

    #[test]
    fn replays_in_order_across_reopen_and_deletes_replayed_segments() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Spool::open(dir.path(), limits(1 << 20)).unwrap();
        let recs: Vec<_> = (0..100u8).map(|i| rec(Topic::Alarms, "h", i)).collect();
        s.append(&recs).unwrap();
        assert_eq!(s.depth(), 100);
        for i in 0..40u8 {
            let (o, r) = s.take_next().unwrap().unwrap();
            assert_eq!((o, r.value[0]), (u64::from(i), i));
        }
        for o in (0..40).rev() {
            s.confirm(o);
        }
        s.maintain().unwrap();
        assert_eq!(s.depth(), 60);
        let first_left = segments(&dir.path().join(SPOOL_TOPIC)).unwrap()[0].0;
        assert!(first_left > 0 && first_left <= 40, "{first_left}");
        // Sent but unconfirmed records come back after a crash (at-least-once).
        let _ = s.take_next().unwrap();
        drop(s);
        let mut s = Spool::open(dir.path(), limits(1 << 20)).unwrap();
        assert_eq!(s.depth(), 60);
        let (o, r) = s.take_next().unwrap().unwrap();
        assert_eq!((o, r.value[0]), (40, 40));
        assert_eq!(s.oldest_ms(), Some(40));
    }

    #[test]
    fn bound_coalesces_point_status_but_never_alarms() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Spool::open(dir.path(), limits(4000)).unwrap();
        let a = rec(Topic::Alarms, "h", 1);
        assert!(s.has_room(Spool::frame_bytes(&a)));
        let mut n = 0;
        while s.has_room(Spool::frame_bytes(&a)) {
            s.append(std::slice::from_ref(&a)).unwrap();
            n += 1;
        }
        assert!(n > 10, "{n}");
        assert!(!s.has_room(Spool::frame_bytes(&a)), "full");
        // Above the coalescing mark point-status records are kept in memory, latest per key.
        let c = s
            .append(&[
                rec(Topic::PointStatus, "p1", 1),
                rec(Topic::PointStatus, "p1", 2),
                rec(Topic::PointStatus, "p2", 3),
            ])
            .unwrap();
        assert_eq!((c, s.coalesced_len()), (3, 2));
        let mut kept = s.take_coalesced();
        kept.sort_by(|a, b| a.key.cmp(&b.key));
        assert_eq!(kept[0].value[0], 2);
        // Every alarm is still there, in order.
        let mut got = 0;
        while let Some((_, r)) = s.take_next().unwrap() {
            assert_eq!(r.topic, Topic::Alarms);
            got += 1;
        }
        assert_eq!(got, n);
    }
}
