//! Record framing (encode/decode) and sequential scanning of segment files.
//!
//! A frame is `len: u32 LE | crc: u32 LE | body`, where `crc` is CRC-32 (crc32fast) of the body
//! and the body is `offset: u64 LE | timestamp_ms: i64 LE | key_len: u32 LE | key | value`.
//! [`FrameCursor`] reads frames from a file through a reusable buffer; it never panics on
//! malformed input and reports torn or corrupt frames to the caller, which decides between
//! truncation (writer recovery), "not yet written" and an error (reader).

use std::fs::{self, File};
use std::io::{self, ErrorKind, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use super::LogError;

/// Bytes before the body: `len` and `crc`.
pub(crate) const FRAME_HEADER_LEN: usize = 8;
/// Fixed part of the body: `offset`, `timestamp_ms`, `key_len`.
pub(crate) const BODY_FIXED_LEN: usize = 20;
/// Largest accepted body (`len`), 16 MiB.
pub const MAX_BODY_LEN: usize = 16 * 1024 * 1024;
/// Minimum size of one read from a segment file.
const READ_CHUNK: usize = 64 * 1024;
/// Segment file name suffix.
const SEGMENT_SUFFIX: &str = ".log";
/// Digits of the zero-padded base offset in a segment file name.
const SEGMENT_DIGITS: usize = 20;

/// Total frame size for a record, or `RecordTooLarge` when the body exceeds [`MAX_BODY_LEN`].
pub(crate) fn frame_len(key_len: usize, value_len: usize) -> Result<usize, LogError> {
    let body = BODY_FIXED_LEN
        .checked_add(key_len)
        .and_then(|n| n.checked_add(value_len))
        .ok_or(LogError::RecordTooLarge(usize::MAX))?;
    if body > MAX_BODY_LEN {
        return Err(LogError::RecordTooLarge(body));
    }
    Ok(FRAME_HEADER_LEN + body)
}

/// Appends one encoded frame to `buf`. The caller must have checked the size with [`frame_len`].
pub(crate) fn encode_frame(
    buf: &mut Vec<u8>,
    offset: u64,
    timestamp_ms: i64,
    key: &[u8],
    value: &[u8],
) {
    let body_len = BODY_FIXED_LEN + key.len() + value.len();
    let start = buf.len();
    buf.reserve(FRAME_HEADER_LEN + body_len);
    // Sizes are bounded by MAX_BODY_LEN, so the casts below cannot truncate.
    buf.extend_from_slice(&(body_len as u32).to_le_bytes());
    buf.extend_from_slice(&[0u8; 4]);
    buf.extend_from_slice(&offset.to_le_bytes());
    buf.extend_from_slice(&timestamp_ms.to_le_bytes());
    buf.extend_from_slice(&(key.len() as u32).to_le_bytes());
    buf.extend_from_slice(key);
    buf.extend_from_slice(value);
    let crc = crc32fast::hash(&buf[start + FRAME_HEADER_LEN..]);
    buf[start + 4..start + FRAME_HEADER_LEN].copy_from_slice(&crc.to_le_bytes());
}

/// A decoded frame borrowing its key and value from the scan buffer.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct FrameRef<'a> {
    pub offset: u64,
    pub timestamp_ms: i64,
    pub key: &'a [u8],
    pub value: &'a [u8],
    /// Header plus body length, i.e. how far to advance past this frame.
    pub frame_len: usize,
}

/// Result of decoding the bytes at a frame boundary.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Decoded<'a> {
    /// A complete frame with a valid crc and a well-formed body.
    Frame(FrameRef<'a>),
    /// Fewer bytes than the header, or than the header's `len`, announce.
    Incomplete,
    /// A complete frame whose crc does not match its body; `frame_len` bytes long.
    BadCrc { frame_len: usize },
    /// Structurally impossible frame (oversize/undersize len, key longer than body).
    Corrupt(String),
}

fn le_u32(b: &[u8], at: usize) -> Option<u32> {
    let s = b.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

fn le_u64(b: &[u8], at: usize) -> Option<u64> {
    let s = b.get(at..at.checked_add(8)?)?;
    let mut a = [0u8; 8];
    a.copy_from_slice(s);
    Some(u64::from_le_bytes(a))
}

/// Decodes the frame at the start of `bytes` (which may hold more data after it).
pub(crate) fn decode_frame(bytes: &[u8]) -> Decoded<'_> {
    let (Some(len), Some(crc)) = (le_u32(bytes, 0), le_u32(bytes, 4)) else {
        return Decoded::Incomplete;
    };
    let len = len as usize;
    if len > MAX_BODY_LEN {
        return Decoded::Corrupt(format!("frame length {len} exceeds maximum {MAX_BODY_LEN}"));
    }
    if len < BODY_FIXED_LEN {
        return Decoded::Corrupt(format!("frame length {len} below minimum {BODY_FIXED_LEN}"));
    }
    let frame_len = FRAME_HEADER_LEN + len;
    let Some(body) = bytes.get(FRAME_HEADER_LEN..frame_len) else {
        return Decoded::Incomplete;
    };
    if crc32fast::hash(body) != crc {
        return Decoded::BadCrc { frame_len };
    }
    let (Some(offset), Some(ts), Some(key_len)) =
        (le_u64(body, 0), le_u64(body, 8), le_u32(body, 16))
    else {
        return Decoded::Corrupt("short body".to_string());
    };
    let key_end = BODY_FIXED_LEN.saturating_add(key_len as usize);
    if key_end > len {
        return Decoded::Corrupt(format!("key length {key_len} exceeds body length {len}"));
    }
    let (Some(key), Some(value)) = (body.get(BODY_FIXED_LEN..key_end), body.get(key_end..)) else {
        return Decoded::Corrupt("short body".to_string());
    };
    Decoded::Frame(FrameRef {
        offset,
        timestamp_ms: ts as i64,
        key,
        value,
        frame_len,
    })
}

/// What [`FrameCursor::next_frame`] found at the current position.
#[derive(Debug)]
pub(crate) enum Step<'a> {
    /// A valid frame; call [`FrameCursor::advance`] with its `frame_len` to consume it.
    Frame(FrameRef<'a>),
    /// End of file exactly at a frame boundary.
    End,
    /// Some bytes, but not a complete frame, before end of file.
    Incomplete,
    /// A complete frame with a bad crc; `trailing` tells whether more bytes follow it.
    BadCrc { trailing: bool },
    /// Malformed frame header or body.
    Corrupt(String),
}

/// Sequential frame reader over one segment file, tracking the byte position of the next frame.
///
/// The file's OS cursor always sits at `pos + buffered bytes`, so reading simply continues
/// where the last read stopped; appended data becomes visible on the next call.
pub(crate) struct FrameCursor {
    file: File,
    path: PathBuf,
    buf: Vec<u8>,
    start: usize,
    pos: u64,
}

impl FrameCursor {
    /// Wraps `file`, positioned (by seeking) at byte `pos`.
    pub(crate) fn new(mut file: File, path: PathBuf, pos: u64) -> Result<FrameCursor, LogError> {
        file.seek(SeekFrom::Start(pos))
            .map_err(|e| io_err(&path, e))?;
        Ok(FrameCursor {
            file,
            path,
            buf: Vec::new(),
            start: 0,
            pos,
        })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Byte position of the next (unconsumed) frame.
    pub(crate) fn pos(&self) -> u64 {
        self.pos
    }

    /// Gives back the file (its OS cursor position is unspecified).
    pub(crate) fn into_file(self) -> File {
        self.file
    }

    fn available(&self) -> usize {
        self.buf.len() - self.start
    }

    /// Reads until at least `need` bytes are buffered past the cursor or end of file.
    fn fill(&mut self, need: usize) -> Result<usize, LogError> {
        while self.available() < need {
            if self.start > 0 {
                self.buf.drain(..self.start);
                self.start = 0;
            }
            let old = self.buf.len();
            let want = (need - old).max(READ_CHUNK);
            self.buf.resize(old + want, 0);
            match self.file.read(&mut self.buf[old..]) {
                Ok(0) => {
                    self.buf.truncate(old);
                    break;
                }
                Ok(n) => self.buf.truncate(old + n),
                Err(e) if e.kind() == ErrorKind::Interrupted => self.buf.truncate(old),
                Err(e) => {
                    self.buf.truncate(old);
                    return Err(io_err(&self.path, e));
                }
            }
        }
        Ok(self.available())
    }

    /// Decodes the frame at the current position without consuming it.
    pub(crate) fn next_frame(&mut self) -> Result<Step<'_>, LogError> {
        if self.fill(FRAME_HEADER_LEN)? == 0 {
            return Ok(Step::End);
        }
        let need = match le_u32(&self.buf[self.start..], 0) {
            Some(len) if (len as usize) <= MAX_BODY_LEN => FRAME_HEADER_LEN + len as usize,
            _ => FRAME_HEADER_LEN,
        };
        // One extra byte tells a bad crc at the very end apart from one followed by data.
        let available = self.fill(need + 1)?;
        match decode_frame(&self.buf[self.start..]) {
            Decoded::Frame(f) => Ok(Step::Frame(f)),
            Decoded::Incomplete => Ok(Step::Incomplete),
            Decoded::BadCrc { frame_len } => Ok(Step::BadCrc {
                trailing: available > frame_len,
            }),
            Decoded::Corrupt(detail) => Ok(Step::Corrupt(detail)),
        }
    }

    /// Consumes `n` buffered bytes (a frame returned by [`FrameCursor::next_frame`]).
    pub(crate) fn advance(&mut self, n: usize) {
        let n = n.min(self.available());
        self.start += n;
        self.pos += n as u64;
    }

    /// Drops buffered bytes past the cursor and seeks back to it, so that a later read sees
    /// the file's current content (a torn tail may since have been truncated and rewritten).
    pub(crate) fn reset(&mut self) -> Result<(), LogError> {
        if self.available() > 0 {
            self.buf.clear();
            self.start = 0;
            self.file
                .seek(SeekFrom::Start(self.pos))
                .map_err(|e| io_err(&self.path, e))?;
        }
        Ok(())
    }
}

/// Outcome of validating a whole segment from its start.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct ScanOutcome {
    /// Length of the valid prefix (end of the last good frame).
    pub valid_len: u64,
    /// Offset following the last good frame (the base offset if there is none).
    pub next_offset: u64,
    /// Why scanning stopped before end of file, if it did.
    pub stop: Option<String>,
}

/// Scans a segment from byte 0, requiring dense offsets starting at `base_offset`, and stops
/// at the first torn or corrupt frame.
pub(crate) fn scan_segment(
    cursor: &mut FrameCursor,
    base_offset: u64,
) -> Result<ScanOutcome, LogError> {
    let mut expected = base_offset;
    let stop = loop {
        let (len, offset) = match cursor.next_frame()? {
            Step::End => break None,
            Step::Incomplete => break Some("incomplete frame".to_string()),
            Step::BadCrc { .. } => break Some("crc mismatch".to_string()),
            Step::Corrupt(detail) => break Some(detail),
            Step::Frame(f) => (f.frame_len, f.offset),
        };
        if offset != expected {
            break Some(format!("offset {offset} where {expected} was expected"));
        }
        cursor.advance(len);
        expected += 1;
    };
    Ok(ScanOutcome {
        valid_len: cursor.pos(),
        next_offset: expected,
        stop,
    })
}

/// Path of the segment starting at `base_offset` inside `topic_dir`.
pub(crate) fn segment_path(topic_dir: &Path, base_offset: u64) -> PathBuf {
    topic_dir.join(format!("{base_offset:020}{SEGMENT_SUFFIX}"))
}

/// Parses a segment file name (`{base_offset:020}.log`).
pub(crate) fn parse_segment_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(SEGMENT_SUFFIX)?;
    if digits.len() != SEGMENT_DIGITS || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Base offsets of the segments in `topic_dir`, ascending; empty if the directory is missing.
pub(crate) fn list_segments(topic_dir: &Path) -> Result<Vec<u64>, LogError> {
    let entries = match fs::read_dir(topic_dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err(topic_dir, e)),
    };
    let mut bases = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| io_err(topic_dir, e))?;
        if let Some(base) = entry.file_name().to_str().and_then(parse_segment_name) {
            bases.push(base);
        }
    }
    bases.sort_unstable();
    Ok(bases)
}

pub(crate) fn io_err(path: &Path, source: io::Error) -> LogError {
    LogError::Io {
        path: path.to_path_buf(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn frame(offset: u64, key: &[u8], value: &[u8]) -> Vec<u8> {
        let mut buf = Vec::new();
        encode_frame(&mut buf, offset, -5, key, value);
        buf
    }

    #[test]
    fn encode_decode_round_trip() {
        let buf = frame(7, b"key", b"value");
        assert_eq!(buf.len(), frame_len(3, 5).unwrap());
        match decode_frame(&buf) {
            Decoded::Frame(f) => {
                assert_eq!(
                    (f.offset, f.timestamp_ms, f.key, f.value),
                    (7, -5, &b"key"[..], &b"value"[..])
                );
                assert_eq!(f.frame_len, buf.len());
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn every_prefix_is_incomplete() {
        let buf = frame(1, b"k", b"some value");
        for cut in 0..buf.len() {
            assert_eq!(decode_frame(&buf[..cut]), Decoded::Incomplete, "cut {cut}");
        }
    }

    #[test]
    fn every_bit_flip_is_detected() {
        let buf = frame(3, b"ab", b"cd");
        for i in 0..buf.len() * 8 {
            let mut bad = buf.clone();
            bad[i / 8] ^= 1 << (i % 8);
            assert!(
                !matches!(decode_frame(&bad), Decoded::Frame(_)),
                "bit {i} undetected"
            );
        }
    }

    #[test]
    fn structural_corruption() {
        let mut buf = vec![0u8; 16];
        assert!(
            matches!(decode_frame(&buf), Decoded::Corrupt(_)),
            "zero len"
        );
        buf[..4].copy_from_slice(&(MAX_BODY_LEN as u32 + 1).to_le_bytes());
        assert!(
            matches!(decode_frame(&buf), Decoded::Corrupt(_)),
            "oversize"
        );
        // Key length larger than the body, with a valid crc.
        let mut body = Vec::new();
        body.extend_from_slice(&0u64.to_le_bytes());
        body.extend_from_slice(&0i64.to_le_bytes());
        body.extend_from_slice(&100u32.to_le_bytes());
        body.extend_from_slice(b"xy");
        let mut buf = Vec::new();
        buf.extend_from_slice(&(body.len() as u32).to_le_bytes());
        buf.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
        buf.extend_from_slice(&body);
        assert!(matches!(decode_frame(&buf), Decoded::Corrupt(_)));
    }

    #[test]
    fn record_size_limit() {
        assert!(frame_len(0, MAX_BODY_LEN - BODY_FIXED_LEN).is_ok());
        assert!(matches!(
            frame_len(1, MAX_BODY_LEN - BODY_FIXED_LEN),
            Err(LogError::RecordTooLarge(_))
        ));
        assert!(matches!(
            frame_len(usize::MAX, 1),
            Err(LogError::RecordTooLarge(_))
        ));
    }

    #[test]
    fn segment_names() {
        let dir = tempfile::tempdir().unwrap();
        let p = segment_path(dir.path(), 42);
        assert_eq!(p.file_name().unwrap(), "00000000000000000042.log");
        assert_eq!(parse_segment_name("00000000000000000042.log"), Some(42));
        assert_eq!(parse_segment_name("42.log"), None);
        assert_eq!(parse_segment_name("0000000000000000004x.log"), None);
        assert_eq!(parse_segment_name("99999999999999999999.log"), None);
        for base in [5u64, 0, 1000] {
            File::create(segment_path(dir.path(), base)).unwrap();
        }
        File::create(dir.path().join("notes.txt")).unwrap();
        assert_eq!(list_segments(dir.path()).unwrap(), vec![0, 5, 1000]);
        assert_eq!(
            list_segments(&dir.path().join("missing")).unwrap(),
            Vec::<u64>::new()
        );
    }

    #[test]
    fn scan_stops_at_damage_and_cursor_follows_growth() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("seg.log");
        let mut data = Vec::new();
        for i in 10..13 {
            encode_frame(&mut data, i, 0, b"k", &vec![i as u8; 100_000]);
        }
        let good = data.len() as u64;
        data.extend_from_slice(&frame(14, b"", b"wrong offset"));
        fs::write(&path, &data).unwrap();
        let mut c = FrameCursor::new(File::open(&path).unwrap(), path.clone(), 0).unwrap();
        let out = scan_segment(&mut c, 10).unwrap();
        assert_eq!(out.valid_len, good);
        assert_eq!(out.next_offset, 13);
        assert!(out.stop.unwrap().contains("offset 14"));

        // A cursor at the end sees bytes appended later, and a partial frame as incomplete.
        fs::write(&path, &data[..good as usize]).unwrap();
        let mut c = FrameCursor::new(File::open(&path).unwrap(), path.clone(), good).unwrap();
        assert!(matches!(c.next_frame().unwrap(), Step::End));
        let next = frame(13, b"", b"later");
        let mut f = fs::OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(&next[..5]).unwrap();
        assert!(matches!(c.next_frame().unwrap(), Step::Incomplete));
        c.reset().unwrap();
        f.write_all(&next[5..]).unwrap();
        match c.next_frame().unwrap() {
            Step::Frame(fr) => assert_eq!((fr.offset, fr.value), (13, &b"later"[..])),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn bad_crc_trailing_flag() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("seg.log");
        let mut data = frame(0, b"k", b"v");
        data[10] ^= 0xff;
        fs::write(&path, &data).unwrap();
        let mut c = FrameCursor::new(File::open(&path).unwrap(), path.clone(), 0).unwrap();
        assert!(matches!(
            c.next_frame().unwrap(),
            Step::BadCrc { trailing: false }
        ));
        data.extend_from_slice(&frame(1, b"k", b"v"));
        fs::write(&path, &data).unwrap();
        let mut c = FrameCursor::new(File::open(&path).unwrap(), path.clone(), 0).unwrap();
        assert!(matches!(
            c.next_frame().unwrap(),
            Step::BadCrc { trailing: true }
        ));
    }
}
