//! [`LogReader`]: sequential reader of one topic that can follow a live writer, possibly in
//! another process. It only ever consumes complete, crc-valid frames with the expected offset;
//! a partial frame at the end of the newest segment is "not yet written" and re-read later.

use std::fs::File;
use std::path::{Path, PathBuf};

use super::segment::{self, io_err, FrameCursor, Step};
use super::{validate_topic, LogError, Record, StartAt};

/// Sequential reader of one topic; may run in another process while the engine writes.
pub struct LogReader {
    topic_dir: PathBuf,
    /// Records with a lower offset are skipped without being materialised.
    target: u64,
    current: Option<Current>,
}

/// The segment being read.
struct Current {
    base: u64,
    cursor: FrameCursor,
    /// Offset the next frame must carry.
    expected: u64,
}

enum Advance {
    /// A frame was consumed; `None` when it was below the target and skipped.
    Record(Option<Record>),
    /// Nothing more right now.
    AtEnd,
}

/// Why a segment yielded no frame.
enum EndKind {
    Clean,
    Torn(&'static str),
}

fn open_segment(topic_dir: &Path, base: u64) -> Result<Current, LogError> {
    let path = segment::segment_path(topic_dir, base);
    let file = File::open(&path).map_err(|e| io_err(&path, e))?;
    Ok(Current {
        base,
        cursor: FrameCursor::new(file, path, 0)?,
        expected: base,
    })
}

fn corrupt(cur: &Current, position: u64, detail: String) -> LogError {
    LogError::Corrupt {
        path: cur.cursor.path().to_path_buf(),
        position,
        detail,
    }
}

impl LogReader {
    /// Opens a reader on `topic` under `dir`. The topic may not exist yet: the reader then
    /// behaves as empty and picks it up once segments appear. `StartAt::End` scans only the
    /// last segment; `StartAt::Offset(n)` starts in the segment holding `n`.
    pub fn open(dir: &Path, topic: &str, start: StartAt) -> Result<LogReader, LogError> {
        validate_topic(topic)?;
        let mut reader = LogReader {
            topic_dir: dir.join(topic),
            target: 0,
            current: None,
        };
        match start {
            StartAt::Beginning => {}
            StartAt::Offset(n) => reader.target = n,
            StartAt::End => {
                if let Some(&last) = segment::list_segments(&reader.topic_dir)?.last() {
                    reader.current = Some(open_segment(&reader.topic_dir, last)?);
                    reader.target = u64::MAX;
                    while let Advance::Record(_) = reader.advance()? {}
                    reader.target = reader.current.as_ref().map_or(last, |c| c.expected);
                }
            }
        }
        Ok(reader)
    }

    /// Next record, or `Ok(None)` at the current end; call again later to follow a growing
    /// log across new segments. A partial frame (or a complete one with a bad crc and nothing
    /// after it) at the end of the newest segment is not consumed and is retried on the next
    /// call. Damage followed by more data, or in an older segment, is `Err(Corrupt)`; the
    /// position is kept, so a later call retries the same frame.
    #[allow(clippy::should_implement_trait)] // fallible and resumable, unlike Iterator::next
    pub fn next(&mut self) -> Result<Option<Record>, LogError> {
        loop {
            match self.advance()? {
                Advance::Record(Some(record)) => return Ok(Some(record)),
                Advance::Record(None) => {}
                Advance::AtEnd => return Ok(None),
            }
        }
    }

    /// Offset of the next record this reader will return (once it exists).
    pub fn next_offset(&self) -> u64 {
        self.current
            .as_ref()
            .map_or(self.target, |c| c.expected.max(self.target))
    }

    /// All records currently in the topic, from the beginning (empty for a missing topic).
    pub fn read_all(dir: &Path, topic: &str) -> Result<Vec<Record>, LogError> {
        let mut reader = LogReader::open(dir, topic, StartAt::Beginning)?;
        let mut records = Vec::new();
        while let Some(record) = reader.next()? {
            records.push(record);
        }
        Ok(records)
    }

    /// Base offset of the first segment after `base`, if one exists now.
    fn segment_after(&self, base: u64) -> Result<Option<u64>, LogError> {
        Ok(segment::list_segments(&self.topic_dir)?
            .into_iter()
            .find(|&b| b > base))
    }

    /// Consumes at most one frame.
    fn advance(&mut self) -> Result<Advance, LogError> {
        if self.current.is_none() {
            let segments = segment::list_segments(&self.topic_dir)?;
            let start = segments
                .iter()
                .rev()
                .find(|&&b| b <= self.target)
                .or(segments.first());
            let Some(&base) = start else {
                return Ok(Advance::AtEnd);
            };
            self.current = Some(open_segment(&self.topic_dir, base)?);
        }
        // Set once a newer segment was seen: the current one is then complete on disk.
        let mut sealed_by: Option<u64> = None;
        loop {
            let Some(cur) = self.current.as_mut() else {
                return Ok(Advance::AtEnd);
            };
            let pos = cur.cursor.pos();
            let end = match cur.cursor.next_frame()? {
                Step::Frame(f) => {
                    if f.offset != cur.expected {
                        let detail =
                            format!("offset {} where {} was expected", f.offset, cur.expected);
                        cur.cursor.reset()?;
                        return Err(corrupt(cur, pos, detail));
                    }
                    let record = (f.offset >= self.target).then(|| Record {
                        offset: f.offset,
                        timestamp_ms: f.timestamp_ms,
                        key: f.key.to_vec(),
                        value: f.value.to_vec(),
                    });
                    let len = f.frame_len;
                    cur.cursor.advance(len);
                    cur.expected += 1;
                    return Ok(Advance::Record(record));
                }
                Step::End => EndKind::Clean,
                Step::Incomplete => EndKind::Torn("incomplete frame"),
                Step::BadCrc { trailing: false } => EndKind::Torn("crc mismatch"),
                Step::BadCrc { trailing: true } => {
                    cur.cursor.reset()?;
                    return Err(corrupt(cur, pos, "crc mismatch".to_string()));
                }
                Step::Corrupt(detail) => {
                    cur.cursor.reset()?;
                    return Err(corrupt(cur, pos, detail));
                }
            };
            // Drop stale buffered bytes so the next read sees the file as it is now.
            cur.cursor.reset()?;
            let Some(next_base) = sealed_by else {
                let base = cur.base;
                match self.segment_after(base)? {
                    None => return Ok(Advance::AtEnd),
                    // The writer finishes a segment before creating the next: read it once more.
                    Some(next) => sealed_by = Some(next),
                }
                continue;
            };
            match end {
                EndKind::Torn(what) => {
                    return Err(corrupt(
                        cur,
                        pos,
                        format!("{what} in a segment followed by segment {next_base}"),
                    ));
                }
                EndKind::Clean if next_base != cur.expected => {
                    let detail = format!(
                        "next segment starts at offset {next_base}, expected {}",
                        cur.expected
                    );
                    return Err(corrupt(cur, pos, detail));
                }
                EndKind::Clean => {
                    self.current = Some(open_segment(&self.topic_dir, next_base)?);
                    sealed_by = None;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::EventLog;
    use super::*;
    use std::fs::{self, OpenOptions};
    use std::io::Write;

    fn append_n(log: &mut EventLog, topic: &str, range: std::ops::Range<u64>) {
        for i in range {
            assert_eq!(
                log.append(topic, i as i64, b"key", format!("value {i:04}").as_bytes())
                    .unwrap(),
                i
            );
        }
    }

    fn drain(reader: &mut LogReader) -> Vec<u64> {
        let mut offsets = Vec::new();
        while let Some(r) = reader.next().unwrap() {
            assert_eq!(r.value, format!("value {:04}", r.offset).into_bytes());
            offsets.push(r.offset);
        }
        offsets
    }

    fn last_segment(dir: &Path, topic: &str) -> PathBuf {
        let tdir = dir.join(topic);
        segment::segment_path(
            &tdir,
            *segment::list_segments(&tdir).unwrap().last().unwrap(),
        )
    }

    #[test]
    fn follows_writer_across_segment_rolls() {
        let dir = tempfile::tempdir().unwrap();
        let mut reader = LogReader::open(dir.path(), "t", StartAt::Beginning).unwrap();
        let mut at_end = LogReader::open(dir.path(), "t", StartAt::End).unwrap();
        assert_eq!(reader.next().unwrap(), None, "topic does not exist yet");
        let mut log = EventLog::open(dir.path(), 200).unwrap();
        append_n(&mut log, "t", 0..3);
        assert_eq!(reader.next().unwrap(), None, "still buffered in the writer");
        log.flush(false).unwrap();
        assert_eq!(drain(&mut reader), vec![0, 1, 2]);
        append_n(&mut log, "t", 3..20);
        log.flush(false).unwrap();
        assert!(segment::list_segments(&dir.path().join("t")).unwrap().len() > 3);
        assert_eq!(drain(&mut reader), (3..20).collect::<Vec<_>>());
        assert_eq!(drain(&mut at_end), (0..20).collect::<Vec<_>>());
        assert_eq!(reader.next_offset(), 20);
        append_n(&mut log, "t", 20..21);
        log.flush(true).unwrap();
        assert_eq!(drain(&mut reader), vec![20]);
    }

    #[test]
    fn start_at_end_and_offset() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = EventLog::open(dir.path(), 150).unwrap();
        append_n(&mut log, "t", 0..30);
        log.flush(false).unwrap();
        let bases = segment::list_segments(&dir.path().join("t")).unwrap();
        assert!(bases.len() > 5);
        let mut end = LogReader::open(dir.path(), "t", StartAt::End).unwrap();
        assert_eq!(end.next_offset(), 30);
        assert_eq!(end.next().unwrap(), None);
        for n in [0, 1, bases[2], bases[2] + 1, bases[3] - 1, 29, 30, 35] {
            let mut r = LogReader::open(dir.path(), "t", StartAt::Offset(n)).unwrap();
            assert_eq!(
                drain(&mut r),
                (n.min(30)..30).collect::<Vec<_>>(),
                "offset {n}"
            );
        }
        let mut beyond = LogReader::open(dir.path(), "t", StartAt::Offset(32)).unwrap();
        append_n(&mut log, "t", 30..34);
        log.flush(false).unwrap();
        assert_eq!(drain(&mut end), vec![30, 31, 32, 33]);
        assert_eq!(drain(&mut beyond), vec![32, 33]);
    }

    #[test]
    fn partial_tail_is_not_yet_written() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = EventLog::open(dir.path(), 1 << 20).unwrap();
        append_n(&mut log, "t", 0..3);
        drop(log);
        let mut reader = LogReader::open(dir.path(), "t", StartAt::Beginning).unwrap();
        assert_eq!(drain(&mut reader), vec![0, 1, 2]);
        let mut frame = Vec::new();
        segment::encode_frame(&mut frame, 3, 3, b"key", b"value 0003");
        let mut f = OpenOptions::new()
            .append(true)
            .open(last_segment(dir.path(), "t"))
            .unwrap();
        for cut in [3, 8, frame.len() - 1] {
            f.write_all(&frame[..cut]).unwrap();
            assert_eq!(reader.next().unwrap(), None, "cut {cut}");
            assert_eq!(reader.next().unwrap(), None, "cut {cut} again");
            f.set_len(fs::metadata(last_segment(dir.path(), "t")).unwrap().len() - cut as u64)
                .unwrap();
        }
        f.write_all(&frame[..10]).unwrap();
        assert_eq!(reader.next().unwrap(), None);
        f.write_all(&frame[10..]).unwrap();
        assert_eq!(drain(&mut reader), vec![3]);
        let log = EventLog::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(log.next_offset("t"), 4);
    }

    #[test]
    fn picks_up_rewrite_after_writer_recovery() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = EventLog::open(dir.path(), 1 << 20).unwrap();
        append_n(&mut log, "t", 0..2);
        drop(log);
        let mut frame = Vec::new();
        segment::encode_frame(&mut frame, 2, 0, b"key", b"torn record, never completed");
        let path = last_segment(dir.path(), "t");
        OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(&frame[..frame.len() / 2])
            .unwrap();
        let mut reader = LogReader::open(dir.path(), "t", StartAt::Beginning).unwrap();
        assert_eq!(drain(&mut reader), vec![0, 1]);
        let mut log = EventLog::open(dir.path(), 1 << 20).unwrap();
        assert!(log.recoveries()[0].truncated_bytes > 0);
        append_n(&mut log, "t", 2..4);
        log.flush(false).unwrap();
        assert_eq!(drain(&mut reader), vec![2, 3]);
    }

    #[test]
    fn corruption_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = EventLog::open(dir.path(), 100).unwrap();
        append_n(&mut log, "t", 0..6);
        drop(log);
        let tdir = dir.path().join("t");
        let bases = segment::list_segments(&tdir).unwrap();
        assert_eq!(
            bases,
            vec![0, 2, 4],
            "two 41-byte frames per 100-byte segment"
        );
        let frame_len = segment::frame_len(3, 10).unwrap();
        let flip = |path: &Path, at: usize| {
            let mut data = fs::read(path).unwrap();
            data[at] ^= 0x40;
            fs::write(path, &data).unwrap();
        };
        // Bad crc on the final record of the newest segment: may still be in flight.
        let last = segment::segment_path(&tdir, 4);
        flip(&last, frame_len + 20);
        let all = LogReader::read_all(dir.path(), "t").unwrap();
        assert_eq!(all.len(), 5);
        // Followed by more data, it is corruption.
        let mut frame = Vec::new();
        segment::encode_frame(&mut frame, 6, 6, b"key", b"value 0006");
        OpenOptions::new()
            .append(true)
            .open(&last)
            .unwrap()
            .write_all(&frame)
            .unwrap();
        let err = LogReader::read_all(dir.path(), "t").unwrap_err();
        assert!(
            matches!(&err, LogError::Corrupt { position, .. } if *position == frame_len as u64),
            "{err}"
        );
        // In an older segment, too; the reader stays put and reports it again.
        flip(&segment::segment_path(&tdir, bases[1]), 20);
        let mut reader = LogReader::open(dir.path(), "t", StartAt::Beginning).unwrap();
        let mut got = Vec::new();
        let err = loop {
            match reader.next() {
                Ok(Some(r)) => got.push(r.offset),
                Ok(None) => panic!("corruption not reported"),
                Err(e) => break e,
            }
        };
        assert_eq!(got, (0..bases[1]).collect::<Vec<_>>());
        assert!(matches!(err, LogError::Corrupt { .. }));
        assert!(matches!(reader.next(), Err(LogError::Corrupt { .. })));
        // A truncated older segment (gap before the next one) is corruption as well.
        let first = segment::segment_path(&tdir, bases[0]);
        let len = fs::metadata(&first).unwrap().len();
        OpenOptions::new()
            .write(true)
            .open(&first)
            .unwrap()
            .set_len(len - 1)
            .unwrap();
        let err = LogReader::read_all(dir.path(), "t").unwrap_err();
        assert!(err.to_string().contains("incomplete frame"), "{err}");
    }

    #[test]
    fn concurrent_reader_sees_dense_offsets() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_path_buf();
        const N: u64 = 3000;
        let writer = std::thread::spawn(move || {
            let mut log = EventLog::open(&path, 4096).unwrap();
            for i in 0..N {
                log.append("live", i as i64, b"key", format!("value {i:04}").as_bytes())
                    .unwrap();
                if i % 7 == 0 {
                    log.flush(false).unwrap();
                }
            }
        });
        let mut reader = LogReader::open(dir.path(), "live", StartAt::Beginning).unwrap();
        let mut next = 0;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while next < N {
            assert!(
                std::time::Instant::now() < deadline,
                "reader stalled at {next}"
            );
            match reader.next().unwrap() {
                Some(r) => {
                    assert_eq!(r.offset, next);
                    next += 1;
                }
                None => std::thread::yield_now(),
            }
        }
        writer.join().unwrap();
        assert_eq!(reader.next().unwrap(), None);
    }
}
