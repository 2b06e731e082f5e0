//! The writer side: [`EventLog`] owns every topic under one directory, appends records into
//! per-segment memory buffers, rolls segments, flushes/fsyncs and recovers torn tails on open.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, ErrorKind, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use super::segment::{self, encode_frame, frame_len, io_err, FrameCursor};
use super::{validate_topic, LogError, Recovery};

/// Buffered bytes of a segment above which an append first writes the buffer out.
const WRITE_THRESHOLD: usize = 256 * 1024;

/// Writer for all topics under one directory; a single-threaded owner (it is `Send`).
///
/// Dropping it writes out buffered records (without fsync); only [`EventLog::flush`] with
/// `sync = true` makes them durable.
pub struct EventLog {
    dir: PathBuf,
    segment_bytes: u64,
    topics: BTreeMap<String, Topic>,
    recoveries: Vec<Recovery>,
    bytes_appended: u64,
    /// `dir` gained topic directories since the last sync.
    dir_dirty: bool,
    /// `dir` itself was created by `open` and its parent is not yet synced.
    parent_dirty: bool,
}

struct Topic {
    dir: PathBuf,
    next_offset: u64,
    active: Option<Segment>,
    /// Rolled segments written since the last sync.
    sealed_unsynced: Vec<Segment>,
    /// The topic directory gained segment files since the last sync.
    dir_dirty: bool,
}

struct Segment {
    path: PathBuf,
    file: File,
    /// Logical size: bytes on file plus bytes buffered.
    size: u64,
    buf: Vec<u8>,
    /// Bytes were appended since the last fdatasync.
    unsynced: bool,
}

impl Segment {
    /// Writes the whole buffer; on error the unwritten rest stays buffered for a retry.
    fn write_pending(&mut self) -> Result<(), LogError> {
        while !self.buf.is_empty() {
            match self.file.write(&self.buf) {
                Ok(0) => return Err(io_err(&self.path, io::Error::from(ErrorKind::WriteZero))),
                Ok(n) => {
                    self.buf.drain(..n);
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(io_err(&self.path, e)),
            }
        }
        Ok(())
    }

    fn sync(&mut self) -> Result<(), LogError> {
        if self.unsynced {
            self.file.sync_data().map_err(|e| io_err(&self.path, e))?;
            self.unsynced = false;
        }
        Ok(())
    }
}

fn sync_dir(path: &Path) -> Result<(), LogError> {
    File::open(path)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_err(path, e))
}

impl Topic {
    fn append(
        &mut self,
        segment_bytes: u64,
        ts: i64,
        key: &[u8],
        value: &[u8],
        flen: usize,
    ) -> Result<u64, LogError> {
        let roll = match &self.active {
            None => true,
            Some(seg) => seg.size > 0 && seg.size.saturating_add(flen as u64) > segment_bytes,
        };
        if roll {
            self.roll()?;
        }
        let Some(seg) = self.active.as_mut() else {
            return Err(io_err(&self.dir, io::Error::other("no active segment")));
        };
        if !seg.buf.is_empty() && seg.buf.len() + flen > WRITE_THRESHOLD {
            seg.write_pending()?;
        }
        let offset = self.next_offset;
        encode_frame(&mut seg.buf, offset, ts, key, value);
        seg.size += flen as u64;
        seg.unsynced = true;
        self.next_offset += 1;
        Ok(offset)
    }

    /// Seals the active segment (its bytes are written out before the new file appears, so a
    /// reader that sees the new segment finds the old one complete) and starts a new one.
    fn roll(&mut self) -> Result<(), LogError> {
        if let Some(old) = self.active.as_mut() {
            old.write_pending()?;
        }
        let path = segment::segment_path(&self.dir, self.next_offset);
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| io_err(&path, e))?;
        self.dir_dirty = true;
        tracing::debug!(path = %path.display(), base_offset = self.next_offset, "created segment");
        let new = Segment {
            path,
            file,
            size: 0,
            buf: Vec::new(),
            unsynced: false,
        };
        if let Some(old) = self.active.replace(new) {
            if old.unsynced {
                self.sealed_unsynced.push(old);
            }
        }
        Ok(())
    }

    fn flush(&mut self, sync: bool) -> Result<(), LogError> {
        if let Some(seg) = self.active.as_mut() {
            seg.write_pending()?;
        }
        if sync {
            while let Some(seg) = self.sealed_unsynced.last_mut() {
                seg.sync()?;
                self.sealed_unsynced.pop();
            }
            if let Some(seg) = self.active.as_mut() {
                seg.sync()?;
            }
            if self.dir_dirty {
                sync_dir(&self.dir)?;
                self.dir_dirty = false;
            }
        }
        Ok(())
    }
}

/// Scans the last segment of `name`, truncates a torn/corrupt tail and returns its state.
fn recover_topic(topic_dir: PathBuf, name: &str) -> Result<(Topic, Recovery), LogError> {
    let mut topic = Topic {
        dir: topic_dir,
        next_offset: 0,
        active: None,
        sealed_unsynced: Vec::new(),
        dir_dirty: false,
    };
    let Some(&base) = segment::list_segments(&topic.dir)?.last() else {
        let rec = Recovery {
            topic: name.to_string(),
            next_offset: 0,
            truncated_bytes: 0,
        };
        return Ok((topic, rec));
    };
    let path = segment::segment_path(&topic.dir, base);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .map_err(|e| io_err(&path, e))?;
    let file_len = file.metadata().map_err(|e| io_err(&path, e))?.len();
    let mut cursor = FrameCursor::new(file, path.clone(), 0)?;
    let scan = segment::scan_segment(&mut cursor, base)?;
    let mut file = cursor.into_file();
    let truncated_bytes = file_len.saturating_sub(scan.valid_len);
    if truncated_bytes > 0 {
        file.set_len(scan.valid_len)
            .and_then(|()| file.sync_all())
            .map_err(|e| io_err(&path, e))?;
        let detail = scan.stop.as_deref().unwrap_or("trailing bytes");
        tracing::warn!(
            topic = name,
            truncated_bytes,
            position = scan.valid_len,
            detail,
            path = %path.display(),
            "truncated torn tail"
        );
    }
    file.seek(SeekFrom::Start(scan.valid_len))
        .map_err(|e| io_err(&path, e))?;
    topic.next_offset = scan.next_offset;
    topic.active = Some(Segment {
        path,
        file,
        size: scan.valid_len,
        buf: Vec::new(),
        unsynced: false,
    });
    let rec = Recovery {
        topic: name.to_string(),
        next_offset: scan.next_offset,
        truncated_bytes,
    };
    Ok((topic, rec))
}

impl EventLog {
    /// Opens (creating) `dir` and recovers every existing topic directory: the last segment of
    /// each topic is scanned and truncated (and fsynced) at the first torn or corrupt record;
    /// offsets resume after the last good record. Earlier segments are trusted.
    pub fn open(dir: &Path, segment_bytes: u64) -> Result<EventLog, LogError> {
        let existed = dir.is_dir();
        fs::create_dir_all(dir).map_err(|e| io_err(dir, e))?;
        let mut log = EventLog {
            dir: dir.to_path_buf(),
            segment_bytes,
            topics: BTreeMap::new(),
            recoveries: Vec::new(),
            bytes_appended: 0,
            dir_dirty: false,
            parent_dirty: !existed,
        };
        for name in super::list_topics(dir)? {
            let (topic, rec) = recover_topic(dir.join(&name), &name)?;
            tracing::debug!(topic = %name, next_offset = rec.next_offset, "recovered topic");
            log.recoveries.push(rec);
            log.topics.insert(name, topic);
        }
        Ok(log)
    }

    /// What recovery found for each topic that existed at open, sorted by topic.
    pub fn recoveries(&self) -> &[Recovery] {
        &self.recoveries
    }

    /// Appends one record (creating the topic on first use) into a memory buffer and returns
    /// its offset. Nothing reaches the file before [`EventLog::flush`], a segment roll or a
    /// full buffer. On error the record was not appended.
    pub fn append(
        &mut self,
        topic: &str,
        timestamp_ms: i64,
        key: &[u8],
        value: &[u8],
    ) -> Result<u64, LogError> {
        let flen = frame_len(key.len(), value.len())?;
        if !self.topics.contains_key(topic) {
            validate_topic(topic)?;
            let topic_dir = self.dir.join(topic);
            fs::create_dir_all(&topic_dir).map_err(|e| io_err(&topic_dir, e))?;
            self.dir_dirty = true;
            let t = Topic {
                dir: topic_dir,
                next_offset: 0,
                active: None,
                sealed_unsynced: Vec::new(),
                dir_dirty: true,
            };
            self.topics.insert(topic.to_string(), t);
        }
        let Some(t) = self.topics.get_mut(topic) else {
            return Err(LogError::InvalidTopic(topic.to_string()));
        };
        let offset = t.append(self.segment_bytes, timestamp_ms, key, value, flen)?;
        self.bytes_appended += flen as u64;
        Ok(offset)
    }

    /// Writes all buffered bytes to the files; with `sync` also fdatasyncs every segment
    /// written since the last sync, and the directories that gained entries. After
    /// `flush(true)` returns `Ok`, every appended record survives a crash or power loss.
    pub fn flush(&mut self, sync: bool) -> Result<(), LogError> {
        for topic in self.topics.values_mut() {
            topic.flush(sync)?;
        }
        if sync && self.dir_dirty {
            sync_dir(&self.dir)?;
            self.dir_dirty = false;
        }
        if sync && self.parent_dirty {
            let parent = match self.dir.parent() {
                Some(p) if !p.as_os_str().is_empty() => p,
                _ => Path::new("."),
            };
            sync_dir(parent)?;
            self.parent_dirty = false;
        }
        Ok(())
    }

    /// The offset the next append to `topic` gets; 0 for an unknown topic.
    pub fn next_offset(&self, topic: &str) -> u64 {
        self.topics.get(topic).map_or(0, |t| t.next_offset)
    }

    /// Known topics (recovered or appended to), sorted.
    pub fn topics(&self) -> Vec<String> {
        self.topics.keys().cloned().collect()
    }

    /// Frame bytes appended so far by this process, for metrics.
    pub fn bytes_appended(&self) -> u64 {
        self.bytes_appended
    }
}

impl Drop for EventLog {
    fn drop(&mut self) {
        if let Err(error) = self.flush(false) {
            tracing::warn!(%error, "flush on drop failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{LogReader, Record};
    use super::*;

    fn read_all(dir: &Path, topic: &str) -> Vec<Record> {
        LogReader::read_all(dir, topic).unwrap()
    }

    fn last_segment(dir: &Path, topic: &str) -> PathBuf {
        let tdir = dir.join(topic);
        let base = *segment::list_segments(&tdir).unwrap().last().unwrap();
        segment::segment_path(&tdir, base)
    }

    fn value(i: u64) -> Vec<u8> {
        format!("value-{i}-{}", "x".repeat((i % 7) as usize * 10)).into_bytes()
    }

    fn fill(log: &mut EventLog, topic: &str, range: std::ops::Range<u64>) {
        for i in range {
            assert_eq!(
                log.append(topic, i as i64, format!("k{i}").as_bytes(), &value(i))
                    .unwrap(),
                i
            );
        }
    }

    fn check(records: &[Record], n: u64) {
        assert_eq!(records.len() as u64, n);
        for (i, r) in records.iter().enumerate() {
            let i = i as u64;
            assert_eq!((r.offset, r.timestamp_ms), (i, i as i64));
            assert_eq!(
                (r.key.as_slice(), r.value.clone()),
                (format!("k{i}").as_bytes(), value(i))
            );
        }
    }

    #[test]
    fn event_log_is_send() {
        fn assert_send<T: Send>() {}
        assert_send::<EventLog>();
    }

    #[test]
    fn round_trip_across_rolls_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = EventLog::open(dir.path(), 300).unwrap();
        assert!(log.recoveries().is_empty());
        fill(&mut log, "alarms", 0..50);
        assert_eq!(log.append("other", 1, b"", b"").unwrap(), 0);
        log.flush(true).unwrap();
        assert!(log.bytes_appended() > 50 * 28);
        drop(log);
        let segments = segment::list_segments(&dir.path().join("alarms")).unwrap();
        assert!(segments.len() > 5, "{segments:?}");
        for &base in &segments {
            let len = fs::metadata(segment::segment_path(&dir.path().join("alarms"), base))
                .unwrap()
                .len();
            assert!(len <= 300, "segment {base} has {len} bytes");
        }
        check(&read_all(dir.path(), "alarms"), 50);

        let mut log = EventLog::open(dir.path(), 300).unwrap();
        let recs = log.recoveries().to_vec();
        assert_eq!(recs.len(), 2);
        assert_eq!(
            recs[0],
            Recovery {
                topic: "alarms".into(),
                next_offset: 50,
                truncated_bytes: 0
            }
        );
        assert_eq!(log.topics(), vec!["alarms", "other"]);
        assert_eq!(
            (
                log.next_offset("alarms"),
                log.next_offset("other"),
                log.next_offset("nope")
            ),
            (50, 1, 0)
        );
        fill(&mut log, "alarms", 50..80);
        drop(log); // drop writes buffered records out
        check(&read_all(dir.path(), "alarms"), 80);
    }

    #[test]
    fn oversize_record_gets_own_segment_and_limit_enforced() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = EventLog::open(dir.path(), 100).unwrap();
        log.append("t", 0, b"", b"small").unwrap();
        log.append("t", 1, b"", &[7u8; 500]).unwrap();
        log.append("t", 2, b"", b"small").unwrap();
        let big = vec![0u8; super::super::MAX_BODY_LEN];
        assert!(matches!(
            log.append("t", 3, b"", &big),
            Err(LogError::RecordTooLarge(_))
        ));
        assert_eq!(log.next_offset("t"), 3);
        log.flush(false).unwrap();
        assert_eq!(
            segment::list_segments(&dir.path().join("t")).unwrap(),
            vec![0, 1, 2]
        );
        assert_eq!(read_all(dir.path(), "t")[1].value, vec![7u8; 500]);
    }

    #[test]
    fn invalid_topics_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = EventLog::open(dir.path(), 1 << 20).unwrap();
        for bad in ["", ".", "..", "../escape", "a/b", "UPPER", &"a".repeat(101)] {
            assert!(
                matches!(
                    log.append(bad, 0, b"", b"v"),
                    Err(LogError::InvalidTopic(_))
                ),
                "{bad:?}"
            );
            assert!(matches!(
                LogReader::open(dir.path(), bad, super::super::StartAt::Beginning),
                Err(LogError::InvalidTopic(_))
            ));
        }
        assert!(log.topics().is_empty());
        assert!(fs::read_dir(dir.path()).unwrap().next().is_none());
    }

    #[test]
    fn torn_tail_at_every_byte() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = EventLog::open(dir.path(), 400).unwrap();
        fill(&mut log, "t", 0..20);
        drop(log);
        let path = last_segment(dir.path(), "t");
        let full = fs::read(&path).unwrap();
        let last_len = frame_len(3, value(19).len()).unwrap();
        let record_start = full.len() - last_len;
        for cut in record_start..full.len() {
            fs::write(&path, &full[..cut]).unwrap();
            let mut log = EventLog::open(dir.path(), 400).unwrap();
            let rec = &log.recoveries()[0];
            assert_eq!(
                (rec.next_offset, rec.truncated_bytes),
                (19, (cut - record_start) as u64),
                "cut {cut}"
            );
            assert_eq!(fs::metadata(&path).unwrap().len(), record_start as u64);
            check(&read_all(dir.path(), "t"), 19);
            fill(&mut log, "t", 19..21);
            log.flush(true).unwrap();
            drop(log);
            check(&read_all(dir.path(), "t"), 21);
        }
    }

    #[test]
    fn garbage_tail_truncated() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = EventLog::open(dir.path(), 1 << 20).unwrap();
        fill(&mut log, "t", 0..5);
        drop(log);
        let path = last_segment(dir.path(), "t");
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(&[0xAB; 1000]).unwrap();
        let mut log = EventLog::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(log.recoveries()[0].truncated_bytes, 1000);
        fill(&mut log, "t", 5..6);
        drop(log);
        check(&read_all(dir.path(), "t"), 6);
    }

    #[test]
    fn valid_frame_with_wrong_offset_truncated() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = EventLog::open(dir.path(), 1 << 20).unwrap();
        fill(&mut log, "t", 0..3);
        drop(log);
        let path = last_segment(dir.path(), "t");
        let mut data = fs::read(&path).unwrap();
        let good = data.len();
        encode_frame(&mut data, 1, 0, b"dup", b"replayed offset");
        fs::write(&path, &data).unwrap();
        let log = EventLog::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(log.next_offset("t"), 3);
        assert_eq!(
            log.recoveries()[0].truncated_bytes,
            (data.len() - good) as u64
        );
    }

    #[test]
    fn crc_corruption_mid_segment_truncates_there() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = EventLog::open(dir.path(), 1 << 20).unwrap();
        fill(&mut log, "t", 0..10);
        drop(log);
        let path = last_segment(dir.path(), "t");
        let mut data = fs::read(&path).unwrap();
        let start4: usize = (0..4).map(|i| frame_len(2, value(i).len()).unwrap()).sum();
        data[start4 + 20] ^= 0x01; // inside record 4's body
        fs::write(&path, &data).unwrap();
        let log = EventLog::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(log.next_offset("t"), 4);
        assert_eq!(
            log.recoveries()[0].truncated_bytes,
            (data.len() - start4) as u64
        );
        drop(log);
        check(&read_all(dir.path(), "t"), 4);
    }

    #[test]
    fn garbage_only_last_segment_resumes_at_its_base() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = EventLog::open(dir.path(), 200).unwrap();
        fill(&mut log, "t", 0..10);
        drop(log);
        let path = last_segment(dir.path(), "t");
        let base =
            segment::parse_segment_name(path.file_name().unwrap().to_str().unwrap()).unwrap();
        assert!(base > 0);
        fs::write(&path, b"\x01\x02garbage").unwrap();
        let mut log = EventLog::open(dir.path(), 200).unwrap();
        assert_eq!(log.next_offset("t"), base);
        fill(&mut log, "t", base..12);
        log.flush(true).unwrap();
        drop(log);
        check(&read_all(dir.path(), "t"), 12);
    }

    #[test]
    fn flush_sync_and_empty_topic_dir() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("nested").join("log");
        let mut log = EventLog::open(&root, 64).unwrap();
        log.flush(true).unwrap();
        fill(&mut log, "t", 0..6);
        log.flush(true).unwrap();
        log.flush(true).unwrap();
        check(&read_all(&root, "t"), 6);
        fs::create_dir(root.join("empty")).unwrap();
        std::mem::forget(log); // simulated crash: no drop-time flush
        let log = EventLog::open(&root, 64).unwrap();
        assert_eq!(
            log.recoveries()[0],
            Recovery {
                topic: "empty".into(),
                next_offset: 0,
                truncated_bytes: 0
            }
        );
        assert_eq!(log.next_offset("t"), 6);
    }
}
