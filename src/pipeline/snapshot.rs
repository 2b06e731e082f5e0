//! Point-state snapshots for restart safety: each shard writes
//! `state/points-{shard}.snap` (every `pipeline.snapshot_interval` and at shutdown),
//! atomically (temp file, fsync, rename). A snapshot is keyed by point id, so it can be
//! loaded with a different shard count. Open incidents and insurance chains are not
//! snapshotted: they are rebuilt from the log (see `app::restore`).
//!
//! Format: magic `FWSNAP01`, count u64, then per point `point_id u64, last_seen_ms i64,
//! recent RECENT (8) × (u32, u32), last_hb_seq u32, deadline_s u32, offline_since_s u32,
//! trouble_since_s 3 × u32, state u8, flags u8, battery u8, ring u8`, then crc32 of all
//! preceding bytes.

use super::shard::{PointSlot, RECENT};
use rustc_hash::FxHashMap;
use std::io::Write;
use std::path::Path;

const MAGIC: &[u8; 8] = b"FWSNAP02";
const ENTRY: usize = 8 + 8 + RECENT * 8 + 4 + 4 + 4 + 12 + 4;

/// Errors reading or writing snapshots.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// I/O.
    #[error("snapshot {path}: {source}")]
    Io {
        /// File.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// Not a valid snapshot (ignored by the loader, which starts from the log instead).
    #[error("snapshot {path}: {detail}")]
    Invalid {
        /// File.
        path: String,
        /// Why.
        detail: String,
    },
}

/// Encodes points.
pub fn encode<'a>(points: impl Iterator<Item = (u64, &'a PointSlot)>) -> Vec<u8> {
    let mut body = Vec::new();
    let mut n = 0u64;
    for (id, s) in points {
        n += 1;
        body.extend_from_slice(&id.to_le_bytes());
        body.extend_from_slice(&s.last_seen_ms.to_le_bytes());
        for (a, b) in s.recent {
            body.extend_from_slice(&a.to_le_bytes());
            body.extend_from_slice(&b.to_le_bytes());
        }
        for v in [s.last_hb_seq, s.deadline_s, s.offline_since_s] {
            body.extend_from_slice(&v.to_le_bytes());
        }
        for v in s.trouble_since_s {
            body.extend_from_slice(&v.to_le_bytes());
        }
        body.extend_from_slice(&[s.state, s.flags, s.battery, s.ring]);
    }
    let mut out = Vec::with_capacity(body.len() + 20);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&n.to_le_bytes());
    out.extend_from_slice(&body);
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

/// Decodes a snapshot into `into` (point id → slot).
pub fn decode(bytes: &[u8], into: &mut FxHashMap<u64, PointSlot>) -> Result<(), String> {
    if bytes.len() < 20 || &bytes[..8] != MAGIC {
        return Err("bad magic or too short".into());
    }
    let (data, crc) = bytes.split_at(bytes.len() - 4);
    if crc32fast::hash(data) != u32_at(crc, 0) {
        return Err("checksum mismatch".into());
    }
    let n = u64_at(data, 8) as usize;
    let body = &data[16..];
    if body.len() != n.checked_mul(ENTRY).ok_or("count overflow")? {
        return Err("length does not match count".into());
    }
    for e in body.chunks_exact(ENTRY) {
        let mut at = 0usize;
        let mut u32s = |n: usize| {
            let v = (0..n).map(|i| u32_at(e, at + 4 * i)).collect::<Vec<_>>();
            at += 4 * n;
            v
        };
        let id_lo = u32s(2);
        let seen = u32s(2);
        let recent_raw = u32s(2 * RECENT);
        let rest = u32s(6);
        let tail = &e[at..at + 4];
        let mut recent = [(0u32, 0u32); RECENT];
        for (i, r) in recent.iter_mut().enumerate() {
            *r = (recent_raw[2 * i], recent_raw[2 * i + 1]);
        }
        let slot = PointSlot {
            last_seen_ms: (u64::from(seen[0]) | (u64::from(seen[1]) << 32)) as i64,
            recent,
            last_hb_seq: rest[0],
            deadline_s: rest[1],
            offline_since_s: rest[2],
            trouble_since_s: [rest[3], rest[4], rest[5]],
            state: tail[0],
            flags: tail[1],
            battery: tail[2],
            ring: tail[3],
        };
        let id = u64::from(id_lo[0]) | (u64::from(id_lo[1]) << 32);
        // Several files may hold a point (the shard count changed): the newest wins.
        match into.get(&id) {
            Some(old) if old.last_seen_ms > slot.last_seen_ms => {}
            _ => {
                into.insert(id, slot);
            }
        }
    }
    Ok(())
}

/// Writes `bytes` to `dir/points-{shard}.snap` atomically.
pub fn write(dir: &Path, shard: usize, bytes: &[u8]) -> Result<(), SnapshotError> {
    let io = |path: &Path| {
        let path = path.display().to_string();
        move |source| SnapshotError::Io { path, source }
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let path = dir.join(format!("points-{shard}.snap"));
    let tmp = dir.join(format!("points-{shard}.snap.tmp"));
    let mut f = std::fs::File::create(&tmp).map_err(io(&tmp))?;
    f.write_all(bytes).map_err(io(&tmp))?;
    f.sync_data().map_err(io(&tmp))?;
    std::fs::rename(&tmp, &path).map_err(io(&path))?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Loads every `points-*.snap` under `dir`; invalid files are skipped with a warning.
pub fn load_all(dir: &Path) -> FxHashMap<u64, PointSlot> {
    let mut map = FxHashMap::default();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return map;
    };
    for e in entries.flatten() {
        let path = e.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if !(name.starts_with("points-") && name.ends_with(".snap")) {
            continue;
        }
        match std::fs::read(&path) {
            Ok(bytes) => {
                if let Err(detail) = decode(&bytes, &mut map) {
                    tracing::warn!(path = %path.display(), detail, "ignoring invalid snapshot");
                }
            }
            Err(e) => tracing::warn!(path = %path.display(), error = %e, "cannot read snapshot"),
        }
    }
    map
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_corruption() {
        let a = PointSlot {
            last_seen_ms: 5,
            state: 1,
            battery: 80,
            recent: [
                (1, 2),
                (3, 4),
                (0, 0),
                (9, 9),
                (5, 5),
                (6, 6),
                (7, 7),
                (8, 8),
            ],
            trouble_since_s: [1, 2, 3],
            ..Default::default()
        };
        let b = PointSlot {
            deadline_s: 77,
            flags: 3,
            ..Default::default()
        };
        let bytes = encode(vec![(10u64, &a), (11u64, &b)].into_iter());
        let mut m = FxHashMap::default();
        decode(&bytes, &mut m).unwrap();
        assert_eq!(m[&10], a);
        assert_eq!(m[&11], b);
        let mut bad = bytes.clone();
        bad[20] ^= 1;
        assert!(decode(&bad, &mut FxHashMap::default()).is_err());
        assert!(decode(&bytes[..bytes.len() - 1], &mut FxHashMap::default()).is_err());
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), 0, &bytes).unwrap();
        std::fs::write(dir.path().join("points-1.snap"), b"garbage").unwrap();
        assert_eq!(load_all(dir.path()).len(), 2);
    }
}
