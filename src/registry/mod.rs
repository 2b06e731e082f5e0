//! Point registry: every monitored point of the city, where it is, and which gateway
//! reports it. Loaded once at start-up from a CSV file; lookups are read-only after that.
//!
//! # CSV format
//!
//! One row per monitored point (detector). UTF-8, comma-separated, no quoting (no field may
//! contain a comma). Line endings `\n` or `\r\n`. The first line that is neither blank nor a
//! comment must be exactly this header:
//!
//! ```text
//! point_id,gateway_id,device_class,room_id,room_type,house_id,village_id,station_id,town_id,policy_id
//! ```
//!
//! Lines starting with `#` and blank lines are skipped anywhere in the file. Every other
//! line has exactly these ten fields:
//!
//! | field          | type      | rules                                                              |
//! |----------------|-----------|--------------------------------------------------------------------|
//! | `point_id`     | u64       | > 0, unique in the file (a duplicate names both lines)             |
//! | `gateway_id`   | string    | 1 to 64 characters of `[A-Za-z0-9_-]`; it is the MQTT username     |
//! | `device_class` | name      | `[a-z0-9_]+`, e.g. `polled`, `lora`, `nbiot`; at most 255 distinct |
//! | `room_id`      | u32       | the room the point is in                                           |
//! | `room_type`    | name      | lowercase: `bedroom`, `kitchen`, `studio`, `corridor`, `stairwell`, `living_room`, `bathroom`, `storage`, `shop` |
//! | `house_id`     | u32       | rental house; belongs to exactly one village                       |
//! | `village_id`   | u32       | belongs to exactly one station                                     |
//! | `station_id`   | u32       | grassroots fire station; belongs to exactly one town               |
//! | `town_id`      | u32       | town (its town centre station)                                     |
//! | `policy_id`    | u32       | insurance policy of the house; `0` = house not insured             |
//!
//! Numbers are plain decimal digits (no sign, no spaces). The engine configuration maps each
//! `device_class` name to a heartbeat interval. A house listed under two villages, a village
//! under two stations or a station under two towns is an error naming the line. Rows may come
//! in any order; the registry keeps the file order ([`Registry::write_csv`] writes it back).
//!
//! ```text
//! point_id,gateway_id,device_class,room_id,room_type,house_id,village_id,station_id,town_id,policy_id
//! # house 1, insured; house 2, not insured
//! 1,gw-000001,polled,1,kitchen,1,1,1,1,1
//! 2,gw-000001,polled,2,bedroom,1,1,1,1,1
//! 3,gw-000001,polled,3,shop,2,1,1,1,0
//! ```
//!
//! Every error names the file, the line and the field, e.g.
//! `registry.csv line 17: field `room_type`: unknown room type "garage" (...)`.
//!
//! # Indices
//!
//! Points get a dense [`PointIdx`] `0..len` in file order; gateways a dense [`GatewayIdx`]
//! and device classes a `u8`, both in order of first appearance in the file. The registry
//! built by [`generate`] lists its device classes as `polled`, `lora`, `nbiot`.

use std::fmt;
use std::io::{self, Write};
use std::path::Path;
use std::time::Instant;

use firewatch_proto::RoomType;
use rustc_hash::FxHashMap;

mod generate;
mod parse;
pub use generate::{generate, GenerateOptions, DEVICE_CLASSES, TOWNS};

/// Dense index of a point, `0..Registry::len()`, in file order.
pub type PointIdx = u32;
/// Dense index of a gateway, `0..Registry::gateway_count()`.
pub type GatewayIdx = u32;

/// The header line a registry CSV must start with.
pub const HEADER: &str =
    "point_id,gateway_id,device_class,room_id,room_type,house_id,village_id,station_id,town_id,policy_id";
/// Most distinct device classes a registry may name (`PointInfo::class` is a `u8`).
pub const MAX_DEVICE_CLASSES: usize = 255;
/// Longest gateway id accepted.
pub const MAX_GATEWAY_ID_LEN: usize = 64;

const FIELDS: [&str; 10] = [
    "point_id",
    "gateway_id",
    "device_class",
    "room_id",
    "room_type",
    "house_id",
    "village_id",
    "station_id",
    "town_id",
    "policy_id",
];

/// Where a point is and how it reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PointInfo {
    /// The gateway that reports the point.
    pub gateway: GatewayIdx,
    /// Index into [`Registry::device_classes`].
    pub class: u8,
    /// What kind of room the point is in.
    pub room_type: RoomType,
    /// `room_id`.
    pub room: u32,
    /// `house_id`: the rental house.
    pub house: u32,
    /// `village_id`.
    pub village: u32,
    /// `station_id`: the grassroots fire station responsible.
    pub station: u32,
    /// `town_id`.
    pub town: u32,
    /// `policy_id`: insurance policy of the house; 0 = not insured.
    pub policy: u32,
}

/// Why a registry could not be loaded. Every variant names the file; all but `Io` and
/// `MissingHeader` name the line, and field-level problems name the field.
#[derive(Debug, thiserror::Error)]
#[allow(missing_docs)] // fields: `file` the source name, `line` 1-based
pub enum RegistryError {
    /// The file could not be read.
    #[error("{file}: {source}")]
    Io {
        file: String,
        #[source]
        source: io::Error,
    },
    /// The file is not UTF-8; `line` holds the first invalid byte.
    #[error("{file} line {line}: not valid UTF-8")]
    NotUtf8 { file: String, line: usize },
    /// Nothing but blank lines and comments.
    #[error("{file}: missing header line; expected `{HEADER}`")]
    MissingHeader { file: String },
    /// The first data line is not exactly [`HEADER`].
    #[error("{file} line {line}: bad header: {detail}; expected exactly `{HEADER}`")]
    BadHeader {
        file: String,
        line: usize,
        detail: String,
    },
    /// A row without exactly ten fields.
    #[error("{file} line {line}: expected 10 comma-separated fields, found {found} ({detail})")]
    FieldCount {
        file: String,
        line: usize,
        found: usize,
        detail: String,
    },
    /// A field that does not parse or is out of range; `field` is its header name.
    #[error("{file} line {line}: field `{field}`: {message}")]
    Field {
        file: String,
        line: usize,
        field: &'static str,
        message: String,
    },
    /// A point id seen before, on `first_line`.
    #[error("{file} line {line}: field `point_id`: duplicate point id {point_id} (first on line {first_line})")]
    DuplicatePoint {
        file: String,
        line: usize,
        point_id: u64,
        first_line: usize,
    },
    /// A house in two villages, a village under two stations or a station in two towns.
    #[error(
        "{file} line {line}: field `{field}`: {child} {child_id} is in {parent} {parent_id} here \
         but in {parent} {previous_parent_id} on line {previous_line}"
    )]
    Hierarchy {
        file: String,
        line: usize,
        field: &'static str,
        child: &'static str,
        child_id: u32,
        parent: &'static str,
        parent_id: u32,
        previous_parent_id: u32,
        previous_line: usize,
    },
    /// More rows than a [`PointIdx`] can number.
    #[error("{file} line {line}: too many points (at most {max})", max = PointIdx::MAX)]
    TooManyPoints { file: String, line: usize },
}

/// The loaded registry. Compact: one `u64` id and one [`PointInfo`] per point, a hash map
/// id -> index, interned gateway ids with their points in CSR form, device class names.
pub struct Registry {
    ids: Vec<u64>,
    infos: Vec<PointInfo>,
    index: FxHashMap<u64, PointIdx>,
    gateway_names: Vec<Box<str>>,
    gateway_index: FxHashMap<Box<str>, GatewayIdx>,
    /// `gateway_members[gateway_offsets[g]..gateway_offsets[g + 1]]` are gateway g's points.
    gateway_offsets: Vec<u32>,
    gateway_members: Vec<PointIdx>,
    classes: Vec<String>,
    house_count: usize,
    village_count: usize,
}

/// Everything but the per-gateway CSR arrays; shared by the parser and the generator.
pub(crate) struct Parts {
    pub(crate) ids: Vec<u64>,
    pub(crate) infos: Vec<PointInfo>,
    pub(crate) index: FxHashMap<u64, PointIdx>,
    pub(crate) gateway_names: Vec<Box<str>>,
    pub(crate) gateway_index: FxHashMap<Box<str>, GatewayIdx>,
    pub(crate) classes: Vec<String>,
    pub(crate) house_count: usize,
    pub(crate) village_count: usize,
}

impl Registry {
    /// Reads and parses a registry file; errors name the file as `path` displays.
    pub fn load(path: &Path) -> Result<Registry, RegistryError> {
        let file = path.display().to_string();
        let started = Instant::now();
        let bytes = std::fs::read(path).map_err(|source| RegistryError::Io {
            file: file.clone(),
            source,
        })?;
        let text = match std::str::from_utf8(&bytes) {
            Ok(text) => text,
            Err(e) => {
                let valid = bytes.get(..e.valid_up_to()).unwrap_or_default();
                let line = 1 + valid.iter().filter(|&&b| b == b'\n').count();
                return Err(RegistryError::NotUtf8 { file, line });
            }
        };
        let registry = Self::parse(text, &file)?;
        tracing::debug!(
            file = %file,
            points = registry.len(),
            gateways = registry.gateway_count(),
            houses = registry.house_count(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "registry loaded"
        );
        Ok(registry)
    }

    /// Parses registry CSV text; `source_name` is the file name used in errors.
    pub fn parse(text: &str, source_name: &str) -> Result<Registry, RegistryError> {
        parse::Parser::new(text, source_name)
            .run()
            .map(Registry::assemble)
    }

    pub(crate) fn assemble(parts: Parts) -> Registry {
        let gateways = parts.gateway_names.len();
        let mut offsets = vec![0u32; gateways + 1];
        for info in &parts.infos {
            offsets[info.gateway as usize + 1] += 1;
        }
        for g in 0..gateways {
            offsets[g + 1] += offsets[g];
        }
        let mut cursor = offsets[..gateways].to_vec();
        let mut members = vec![0 as PointIdx; parts.infos.len()];
        for (i, info) in parts.infos.iter().enumerate() {
            let slot = &mut cursor[info.gateway as usize];
            members[*slot as usize] = i as PointIdx;
            *slot += 1;
        }
        Registry {
            ids: parts.ids,
            infos: parts.infos,
            index: parts.index,
            gateway_names: parts.gateway_names,
            gateway_index: parts.gateway_index,
            gateway_offsets: offsets,
            gateway_members: members,
            classes: parts.classes,
            house_count: parts.house_count,
            village_count: parts.village_count,
        }
    }

    /// Number of points.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// No points at all.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// The point with this id: one hash probe.
    #[inline]
    pub fn lookup(&self, point_id: u64) -> Option<(PointIdx, &PointInfo)> {
        let idx = *self.index.get(&point_id)?;
        self.infos.get(idx as usize).map(|info| (idx, info))
    }

    /// Where point `idx` is. Panics if `idx >= self.len()`.
    #[inline]
    pub fn info(&self, idx: PointIdx) -> &PointInfo {
        &self.infos[idx as usize]
    }

    /// The CSV `point_id` of point `idx`. Panics if `idx >= self.len()`.
    #[inline]
    pub fn point_id(&self, idx: PointIdx) -> u64 {
        self.ids[idx as usize]
    }

    /// All points in file order: `(point_id, info)`; the position is the [`PointIdx`].
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (u64, &PointInfo)> + '_ {
        self.ids.iter().copied().zip(self.infos.iter())
    }

    /// Number of distinct gateways.
    pub fn gateway_count(&self) -> usize {
        self.gateway_names.len()
    }

    /// The gateway with this id (MQTT username).
    pub fn gateway_idx(&self, gateway_id: &str) -> Option<GatewayIdx> {
        self.gateway_index.get(gateway_id).copied()
    }

    /// The id (MQTT username) of gateway `gw`. Panics if `gw >= self.gateway_count()`.
    pub fn gateway_id(&self, gw: GatewayIdx) -> &str {
        &self.gateway_names[gw as usize]
    }

    /// The points reported by gateway `gw`, in file order. Panics if `gw` is out of range.
    pub fn gateway_points(&self, gw: GatewayIdx) -> &[PointIdx] {
        let g = gw as usize;
        let (start, end) = (self.gateway_offsets[g], self.gateway_offsets[g + 1]);
        &self.gateway_members[start as usize..end as usize]
    }

    /// Device class names; the index is [`PointInfo::class`].
    pub fn device_classes(&self) -> &[String] {
        &self.classes
    }

    /// The name of a device class. Panics if `class` is not an index into
    /// [`Self::device_classes`].
    pub fn device_class_name(&self, class: u8) -> &str {
        &self.classes[class as usize]
    }

    /// Number of distinct houses.
    pub fn house_count(&self) -> usize {
        self.house_count
    }

    /// Number of distinct villages.
    pub fn village_count(&self) -> usize {
        self.village_count
    }

    /// Writes the registry in the CSV format above (header, then the rows in file order).
    /// Buffers internally.
    pub fn write_csv<W: Write>(&self, w: W) -> io::Result<()> {
        let mut w = io::BufWriter::with_capacity(1 << 16, w);
        writeln!(w, "{HEADER}")?;
        let room_names = room_type_names();
        for (id, p) in self.iter() {
            let room_type = room_names
                .iter()
                .find(|(t, _)| *t == p.room_type)
                .map_or("unspecified", |(_, name)| name.as_str());
            writeln!(
                w,
                "{id},{},{},{},{room_type},{},{},{},{},{}",
                self.gateway_id(p.gateway),
                self.device_class_name(p.class),
                p.room,
                p.house,
                p.village,
                p.station,
                p.town,
                p.policy
            )?;
        }
        w.flush()
    }
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registry")
            .field("points", &self.len())
            .field("gateways", &self.gateway_count())
            .field("houses", &self.house_count)
            .field("villages", &self.village_count)
            .field("device_classes", &self.classes)
            .finish()
    }
}

/// Known room types with their lowercase CSV names, from the proto enum.
pub(crate) fn room_type_names() -> Vec<(RoomType, String)> {
    (1..64)
        .filter_map(|v| RoomType::try_from(v).ok())
        .map(|t| (t, t.as_str_name().to_ascii_lowercase()))
        .collect()
}

/// Asserts that two registries hold the same points in the same order (device classes
/// compared by name: their numbering follows first appearance).
#[cfg(test)]
pub(crate) fn assert_same_points(a: &Registry, b: &Registry) {
    assert_eq!(a.len(), b.len());
    assert_eq!(a.gateway_count(), b.gateway_count());
    assert_eq!(
        (a.house_count(), a.village_count()),
        (b.house_count(), b.village_count())
    );
    for (idx, (id, pa)) in a.iter().enumerate() {
        let (bi, pb) = b.lookup(id).unwrap_or_else(|| panic!("point {id} missing"));
        assert_eq!(bi as usize, idx, "point {id}");
        assert_eq!(
            a.device_class_name(pa.class),
            b.device_class_name(pb.class),
            "point {id}"
        );
        assert_eq!(
            a.gateway_id(pa.gateway),
            b.gateway_id(pb.gateway),
            "point {id}"
        );
        assert_eq!(
            PointInfo { class: 0, ..*pa },
            PointInfo { class: 0, ..*pb },
            "point {id}"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    const SMALL: &str = "\
point_id,gateway_id,device_class,room_id,room_type,house_id,village_id,station_id,town_id,policy_id
# a comment
10,gw-a,lora,1,kitchen,1,1,1,1,7
11,gw-a,lora,2,bedroom,1,1,1,1,7

30,gw-b,polled,3,living_room,2,1,1,1,0
12,gw-a,nbiot,4,shop,3,2,1,1,8
";

    fn text_of(r: &Registry) -> String {
        let mut out = Vec::new();
        r.write_csv(&mut out).expect("write to Vec");
        String::from_utf8(out).expect("utf-8")
    }

    #[test]
    fn lookups_on_a_small_file() {
        let r = Registry::parse(SMALL, "small.csv").expect("parses");
        assert_eq!(r.len(), 4);
        assert!(!r.is_empty());
        assert_eq!(r.gateway_count(), 2);
        assert_eq!(r.house_count(), 3);
        assert_eq!(r.village_count(), 2);
        assert_eq!(r.device_classes(), ["lora", "polled", "nbiot"]);

        let (idx, p) = r.lookup(30).expect("point 30");
        assert_eq!(idx, 2);
        assert_eq!(r.point_id(idx), 30);
        assert_eq!(r.info(idx), p);
        assert_eq!(p.room_type, RoomType::LivingRoom);
        assert_eq!(
            (p.room, p.house, p.village, p.station, p.town, p.policy),
            (3, 2, 1, 1, 1, 0)
        );
        assert_eq!(r.device_class_name(p.class), "polled");
        assert_eq!(r.gateway_id(p.gateway), "gw-b");
        assert!(r.lookup(0).is_none());
        assert!(r.lookup(13).is_none());

        let a = r.gateway_idx("gw-a").expect("gw-a");
        assert_eq!(r.gateway_points(a), [0, 1, 3]);
        assert_eq!(r.gateway_points(r.gateway_idx("gw-b").expect("gw-b")), [2]);
        assert_eq!(r.gateway_idx("gw-c"), None);
        assert_eq!(r.info(3).room_type, RoomType::Shop);
        assert_eq!(r.device_class_name(r.info(3).class), "nbiot");
    }

    #[test]
    fn write_csv_keeps_the_format_and_order() {
        let r = Registry::parse(SMALL, "small.csv").expect("parses");
        let text = text_of(&r);
        let expected: Vec<&str> = SMALL
            .lines()
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .collect();
        assert_eq!(text.lines().collect::<Vec<_>>(), expected);
        assert_same_points(&r, &Registry::parse(&text, "again.csv").expect("reparses"));
    }

    #[test]
    fn header_only_is_an_empty_registry() {
        let r = Registry::parse(&format!("{HEADER}\n"), "empty.csv").expect("parses");
        assert!(r.is_empty());
        assert_eq!(
            (r.gateway_count(), r.house_count(), r.village_count()),
            (0, 0, 0)
        );
        assert_eq!(text_of(&r), format!("{HEADER}\n"));
    }

    #[test]
    fn generated_city_round_trips_through_csv() {
        let generated = generate(&GenerateOptions {
            points: 5_000,
            seed: 7,
        });
        let text = text_of(&generated);
        let parsed = Registry::parse(&text, "city.csv").expect("generated CSV parses");
        assert_eq!(parsed.len(), 5_000);
        assert_same_points(&generated, &parsed);
        assert_eq!(parsed.device_classes(), generated.device_classes());
        for gw in 0..generated.gateway_count() as GatewayIdx {
            assert_eq!(generated.gateway_points(gw), parsed.gateway_points(gw));
            assert_eq!(parsed.gateway_idx(generated.gateway_id(gw)), Some(gw));
        }
        assert_eq!(text_of(&parsed), text, "write_csv is stable");
    }

    #[test]
    fn load_reads_a_file_and_names_it_in_errors() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("registry.csv");
        let generated = generate(&GenerateOptions {
            points: 1_000,
            seed: 3,
        });
        generated
            .write_csv(std::fs::File::create(&path).expect("create"))
            .expect("write");
        assert_same_points(&generated, &Registry::load(&path).expect("loads"));

        let missing = dir.path().join("missing.csv");
        let err = Registry::load(&missing).expect_err("missing file");
        assert!(matches!(err, RegistryError::Io { .. }));
        assert!(
            err.to_string().starts_with(&missing.display().to_string()),
            "{err}"
        );

        let bad = dir.path().join("bad.csv");
        let mut bytes = format!("{HEADER}\n1,gw,polled,1,kitchen,1,1,1,1,0\n").into_bytes();
        bytes.extend_from_slice(b"2,gw,polled,1,kit\xffchen,1,1,1,1,0\n");
        std::fs::write(&bad, bytes).expect("write");
        let err = Registry::load(&bad).expect_err("not utf-8");
        assert_eq!(
            err.to_string(),
            format!("{} line 3: not valid UTF-8", bad.display())
        );
    }

    #[test]
    #[ignore = "timing: run with --release --ignored --nocapture"]
    fn timing_load_800k_points() {
        let started = Instant::now();
        let generated = generate(&GenerateOptions {
            points: 800_000,
            seed: 1,
        });
        let generate_time = started.elapsed();
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("registry.csv");
        generated
            .write_csv(std::fs::File::create(&path).expect("create"))
            .expect("write");
        let bytes = std::fs::metadata(&path).expect("metadata").len();

        let started = Instant::now();
        let loaded = Registry::load(&path).expect("loads");
        let load_time = started.elapsed();
        assert_eq!(loaded.len(), 800_000);

        let started = Instant::now();
        let mut houses = 0u64;
        for id in 1..=800_000u64 {
            houses += u64::from(loaded.lookup(id).map_or(0, |(_, p)| p.house));
        }
        let lookup_time = started.elapsed();
        assert!(houses > 0);
        assert_same_points(&generated, &loaded);
        println!(
            "generate 800k: {generate_time:?}; load {bytes} bytes ({} gateways, {} houses): {load_time:?}; \
             800k lookups: {lookup_time:?}",
            loaded.gateway_count(),
            loaded.house_count()
        );
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(24))]
        #[test]
        fn any_generated_city_round_trips(points in 0usize..4_000, seed: u64) {
            let generated = generate(&GenerateOptions { points, seed });
            proptest::prop_assert_eq!(generated.len(), points);
            let parsed = Registry::parse(&text_of(&generated), "city.csv").expect("parses");
            assert_same_points(&generated, &parsed);
        }
    }
}
