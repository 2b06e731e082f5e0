//! Embedded append-only segmented event log: the engine's default sink, a tiny local Kafka.
//!
//! # On-disk format
//!
//! ```text
//! {dir}/{topic}/{base_offset:020}.log
//! ```
//!
//! Each topic is a directory holding segment files named by the offset of their first record,
//! zero-padded to 20 digits. Topic names match `[a-z0-9._-]{1,100}` and are neither `.` nor
//! `..`. Offsets are per topic, dense and start at 0. A segment file is a plain concatenation
//! of frames:
//!
//! ```text
//! len: u32 LE            length of body
//! crc: u32 LE            CRC-32 (crc32fast) of body
//! body:
//!   offset: u64 LE
//!   timestamp_ms: i64 LE
//!   key_len: u32 LE
//!   key: [u8; key_len]
//!   value: [u8; len - 20 - key_len]
//! ```
//!
//! A body is at most [`MAX_BODY_LEN`] (16 MiB); a larger `len` on disk is corruption. The
//! writer rolls to a new segment (base offset = next offset) when appending would make the
//! active one exceed `segment_bytes`; a record larger than that gets a segment of its own.
//!
//! # Crash safety
//!
//! [`EventLog`] buffers appends in memory; [`EventLog::flush`] writes them out and, with
//! `sync`, fdatasyncs the touched segments (and directories that gained entries). On
//! [`EventLog::open`] the last segment of every topic is scanned and truncated at the first
//! torn or corrupt frame (short frame, crc mismatch, unexpected offset, bad length); earlier
//! segments are trusted. [`LogReader`] may run in another process while the writer appends:
//! it treats a partial frame at the end of the last segment as "not yet written".

mod reader;
mod segment;
mod writer;

use std::fs;
use std::io::{self, ErrorKind};
use std::path::{Path, PathBuf};

pub use reader::LogReader;
pub use segment::MAX_BODY_LEN;
pub use writer::EventLog;

/// Longest accepted topic name.
pub const MAX_TOPIC_LEN: usize = 100;

/// One stored record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub offset: u64,
    pub timestamp_ms: i64,
    pub key: Vec<u8>,
    pub value: Vec<u8>,
}

/// Errors of the event log.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// An operating-system error on `path`.
    #[error("i/o error on {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    /// A topic name outside `[a-z0-9._-]{1,100}` (or `.`/`..`).
    #[error("invalid topic name {0:?}")]
    InvalidTopic(String),
    /// An append whose body (20 bytes + key + value) exceeds [`MAX_BODY_LEN`].
    #[error("record body of {0} bytes exceeds the limit of {MAX_BODY_LEN} bytes")]
    RecordTooLarge(usize),
    /// Damaged data found by a reader (`position` is the byte offset of the bad frame).
    #[error("corrupt segment {path} at byte {position}: {detail}")]
    Corrupt {
        path: PathBuf,
        position: u64,
        detail: String,
    },
}

/// What recovery found when a topic was opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovery {
    pub topic: String,
    pub next_offset: u64,
    /// Bytes cut off the end of the last segment (torn or corrupt tail).
    pub truncated_bytes: u64,
}

/// Where a [`LogReader`] starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartAt {
    /// The first record of the topic.
    Beginning,
    /// After the last record present when the reader is opened.
    End,
    /// The record with this offset (or the first one after it once written).
    Offset(u64),
}

/// Checks a topic name: `[a-z0-9._-]`, 1 to 100 characters, not `.` or `..`.
pub fn validate_topic(topic: &str) -> Result<(), LogError> {
    let ok = !topic.is_empty()
        && topic.len() <= MAX_TOPIC_LEN
        && topic != "."
        && topic != ".."
        && topic
            .bytes()
            .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(LogError::InvalidTopic(topic.to_string()))
    }
}

/// The topic names present under `dir`, sorted; empty if `dir` does not exist.
pub fn list_topics(dir: &Path) -> Result<Vec<String>, LogError> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(segment::io_err(dir, e)),
    };
    let mut topics = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| segment::io_err(dir, e))?;
        let is_dir = entry
            .file_type()
            .map_err(|e| segment::io_err(&entry.path(), e))?
            .is_dir();
        if let (true, Some(name)) = (is_dir, entry.file_name().to_str()) {
            if validate_topic(name).is_ok() {
                topics.push(name.to_string());
            }
        }
    }
    topics.sort();
    Ok(topics)
}

#[cfg(test)]
mod tests {
    use super::segment::frame_len;
    use super::*;
    use proptest::prelude::*;

    fn last_segment(dir: &Path, topic: &str) -> PathBuf {
        let tdir = dir.join(topic);
        let base = *segment::list_segments(&tdir).unwrap().last().unwrap();
        segment::segment_path(&tdir, base)
    }

    #[test]
    fn topic_names() {
        for ok in [
            "a",
            "alarms",
            "zone-1.fire_events",
            "0",
            "..a",
            "a..",
            &"x".repeat(100),
        ] {
            assert!(validate_topic(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            ".",
            "..",
            "Alarms",
            "a/b",
            "a b",
            "ä",
            "a\0",
            "../x",
            &"x".repeat(101),
        ] {
            assert!(
                matches!(validate_topic(bad), Err(LogError::InvalidTopic(t)) if t == bad),
                "{bad}"
            );
        }
    }

    #[test]
    fn list_topics_filters_entries() {
        let dir = tempfile::tempdir().unwrap();
        assert!(list_topics(&dir.path().join("missing")).unwrap().is_empty());
        for d in ["b", "a", "Bad", "c.d"] {
            fs::create_dir(dir.path().join(d)).unwrap();
        }
        fs::write(dir.path().join("file"), b"").unwrap();
        assert_eq!(list_topics(dir.path()).unwrap(), vec!["a", "b", "c.d"]);
    }

    #[test]
    fn errors_display_lowercase() {
        let e = LogError::Corrupt {
            path: PathBuf::from("/x/0.log"),
            position: 5,
            detail: "crc mismatch".into(),
        };
        assert_eq!(
            e.to_string(),
            "corrupt segment /x/0.log at byte 5: crc mismatch"
        );
        assert!(LogError::RecordTooLarge(1)
            .to_string()
            .starts_with("record body of 1 bytes"));
    }

    #[derive(Debug, Clone)]
    enum Op {
        Append {
            topic: usize,
            key: usize,
            value: usize,
        },
        Flush(bool),
        Reopen,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            8 => (0..3usize, 0..12usize, 0..300usize).prop_map(|(topic, key, value)| Op::Append { topic, key, value }),
            1 => any::<bool>().prop_map(Op::Flush),
            1 => Just(Op::Reopen),
        ]
    }

    const TOPICS: [&str; 3] = ["a", "b.c", "d-e"];

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        #[test]
        fn random_ops_then_truncation(
            ops in proptest::collection::vec(op(), 1..60),
            segment_bytes in 64u64..2048,
            cut in any::<prop::sample::Index>(),
            garbage in proptest::collection::vec(any::<u8>(), 0..20),
        ) {
            let dir = tempfile::tempdir().unwrap();
            let mut model: Vec<Vec<Record>> = vec![Vec::new(); 3];
            let mut log = EventLog::open(dir.path(), segment_bytes).unwrap();
            for (i, op) in ops.iter().enumerate() {
                match *op {
                    Op::Append { topic, key, value } => {
                        let r = Record {
                            offset: model[topic].len() as u64,
                            timestamp_ms: i as i64,
                            key: vec![i as u8; key],
                            value: vec![(i * 7) as u8; value],
                        };
                        let off = log.append(TOPICS[topic], r.timestamp_ms, &r.key, &r.value).unwrap();
                        prop_assert_eq!(off, r.offset);
                        model[topic].push(r);
                    }
                    Op::Flush(sync) => log.flush(sync).unwrap(),
                    Op::Reopen => {
                        drop(log);
                        log = EventLog::open(dir.path(), segment_bytes).unwrap();
                        for rec in log.recoveries() {
                            prop_assert_eq!(rec.truncated_bytes, 0);
                        }
                    }
                }
                for (t, name) in TOPICS.iter().enumerate() {
                    prop_assert_eq!(log.next_offset(name), model[t].len() as u64);
                }
            }
            drop(log);
            for (t, name) in TOPICS.iter().enumerate() {
                prop_assert_eq!(&LogReader::read_all(dir.path(), name).unwrap(), &model[t]);
            }

            // Truncate the final file of a topic that has records, then add garbage that is too
            // short to form a frame: recovery must yield exactly the complete-frame prefix.
            let Some(t) = (0..3).find(|&t| !model[t].is_empty()) else { return Ok(()) };
            let path = last_segment(dir.path(), TOPICS[t]);
            let base = segment::parse_segment_name(path.file_name().unwrap().to_str().unwrap()).unwrap();
            let data = fs::read(&path).unwrap();
            let cut = cut.index(data.len() + 1);
            let mut damaged = data[..cut].to_vec();
            damaged.extend_from_slice(&garbage);
            fs::write(&path, &damaged).unwrap();
            let mut expected = base;
            let mut end = 0;
            for r in &model[t][base as usize..] {
                end += frame_len(r.key.len(), r.value.len()).unwrap();
                if end > cut { break; }
                expected += 1;
            }
            let mut log = EventLog::open(dir.path(), segment_bytes).unwrap();
            prop_assert_eq!(log.next_offset(TOPICS[t]), expected);
            let got = LogReader::read_all(dir.path(), TOPICS[t]).unwrap();
            prop_assert_eq!(&got[..], &model[t][..expected as usize]);
            prop_assert_eq!(log.append(TOPICS[t], 0, b"k", b"after").unwrap(), expected);
            log.flush(true).unwrap();
            drop(log);
            let got = LogReader::read_all(dir.path(), TOPICS[t]).unwrap();
            prop_assert_eq!(got.len() as u64, expected + 1);
            prop_assert_eq!(&got[..expected as usize], &model[t][..expected as usize]);
        }
    }
}
