//! The registry CSV parser (format: see the parent module). Single pass over the text;
//! rows grouped by gateway and house skip most hash probes.

use std::collections::hash_map::Entry;

use firewatch_proto::RoomType;
use rustc_hash::FxHashMap;

use super::{
    room_type_names, GatewayIdx, Parts, PointIdx, PointInfo, RegistryError, FIELDS, HEADER,
    MAX_DEVICE_CLASSES, MAX_GATEWAY_ID_LEN,
};

fn is_skipped(line: &str) -> bool {
    match line.as_bytes().first() {
        Some(b'#') | None => true,
        Some(b) if !b.is_ascii_whitespace() && b.is_ascii() => false,
        Some(_) => line.trim().is_empty(),
    }
}

/// Splits `line` at commas into `fields`; returns how many fields the line has (which may
/// be more than `fields` holds).
fn split_fields<'t>(line: &'t str, fields: &mut [&'t str; 10]) -> usize {
    let mut found = 0;
    let mut start = 0;
    for (i, &b) in line.as_bytes().iter().enumerate() {
        if b == b',' {
            if let Some(slot) = fields.get_mut(found) {
                // Commas are ASCII, so `start..i` lies on char boundaries.
                *slot = line.get(start..i).unwrap_or_default();
            }
            found += 1;
            start = i + 1;
        }
    }
    if let Some(slot) = fields.get_mut(found) {
        *slot = line.get(start..).unwrap_or_default();
    }
    found + 1
}

/// `(1-based line number, line without its `\r\n`)`, after a leading BOM.
fn numbered_lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    text.split('\n')
        .enumerate()
        .map(|(i, l)| (i + 1, l.strip_suffix('\r').unwrap_or(l)))
}

/// Line number of the `idx`-th data row (0-based); used only to report duplicates.
fn data_line(text: &str, idx: usize) -> usize {
    numbered_lines(text)
        .filter(|(_, l)| !is_skipped(l))
        .nth(idx + 1) // skip the header
        .map_or(0, |(n, _)| n)
}

#[inline]
fn parse_digits(s: &str) -> Option<u64> {
    if s.is_empty() || s.len() > 20 {
        return None;
    }
    let mut v: u64 = 0;
    for b in s.bytes() {
        let d = b.wrapping_sub(b'0');
        if d > 9 {
            return None;
        }
        v = v.checked_mul(10)?.checked_add(u64::from(d))?;
    }
    Some(v)
}

fn valid_gateway_id(s: &str) -> bool {
    (1..=MAX_GATEWAY_ID_LEN).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn valid_class_name(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// child id -> (parent id, line where first seen).
type Links = FxHashMap<u32, (u32, usize)>;

pub(super) struct Parser<'a> {
    text: &'a str,
    file: &'a str,
    room_types: Vec<(RoomType, String)>,
}

impl<'a> Parser<'a> {
    pub(super) fn new(text: &'a str, file: &'a str) -> Self {
        Parser {
            text,
            file,
            room_types: room_type_names(),
        }
    }

    #[cold]
    fn field_err(&self, line: usize, field: usize, message: String) -> RegistryError {
        RegistryError::Field {
            file: self.file.to_string(),
            line,
            field: FIELDS[field],
            message,
        }
    }

    #[inline]
    fn number(&self, line: usize, field: usize, s: &str) -> Result<u64, RegistryError> {
        match parse_digits(s) {
            Some(v) => Ok(v),
            None => Err(self.number_err(line, field, s, u64::MAX)),
        }
    }

    #[inline]
    fn u32(&self, line: usize, field: usize, s: &str) -> Result<u32, RegistryError> {
        match parse_digits(s).map(u32::try_from) {
            Some(Ok(v)) => Ok(v),
            _ => Err(self.number_err(line, field, s, u32::MAX.into())),
        }
    }

    #[cold]
    fn number_err(&self, line: usize, field: usize, s: &str, max: u64) -> RegistryError {
        let message = if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            format!("expected an unsigned decimal integer, found {s:?}")
        } else {
            format!("number {s} is too large (max {max})")
        };
        self.field_err(line, field, message)
    }

    #[inline]
    fn room_type(&self, line: usize, s: &str) -> Result<RoomType, RegistryError> {
        match self.room_types.iter().find(|(_, name)| name == s) {
            Some((t, _)) => Ok(*t),
            None => Err(self.room_type_err(line, s)),
        }
    }

    #[cold]
    fn room_type_err(&self, line: usize, s: &str) -> RegistryError {
        let hint = if self
            .room_types
            .iter()
            .any(|(_, n)| n.eq_ignore_ascii_case(s))
        {
            "room types are lowercase".to_string()
        } else {
            let known: Vec<&str> = self.room_types.iter().map(|(_, n)| n.as_str()).collect();
            format!("known: {}", known.join(", "))
        };
        self.field_err(line, 4, format!("unknown room type {s:?} ({hint})"))
    }

    #[allow(clippy::too_many_arguments)]
    fn link(
        &self,
        links: &mut Links,
        line: usize,
        field: usize,
        child: &'static str,
        child_id: u32,
        parent: &'static str,
        parent_id: u32,
    ) -> Result<(), RegistryError> {
        match links.entry(child_id) {
            Entry::Vacant(v) => {
                v.insert((parent_id, line));
                Ok(())
            }
            Entry::Occupied(o) => {
                let (previous_parent_id, previous_line) = *o.get();
                if previous_parent_id == parent_id {
                    return Ok(());
                }
                Err(RegistryError::Hierarchy {
                    file: self.file.to_string(),
                    line,
                    field: FIELDS[field],
                    child,
                    child_id,
                    parent,
                    parent_id,
                    previous_parent_id,
                    previous_line,
                })
            }
        }
    }

    fn check_header(&self, line: usize, header: &str) -> Result<(), RegistryError> {
        if header == HEADER {
            return Ok(());
        }
        let found: Vec<&str> = header.split(',').collect();
        let detail = match found.iter().zip(FIELDS).position(|(f, e)| *f != e) {
            Some(i) => format!(
                "column {} is {:?}, expected `{}`",
                i + 1,
                found[i],
                FIELDS[i]
            ),
            None if found.len() < FIELDS.len() => {
                format!("missing column `{}`", FIELDS[found.len()])
            }
            None => format!(
                "unexpected extra column {:?}",
                found.get(FIELDS.len()..).unwrap_or_default().join(",")
            ),
        };
        Err(RegistryError::BadHeader {
            file: self.file.to_string(),
            line,
            detail,
        })
    }

    pub(super) fn run(self) -> Result<Parts, RegistryError> {
        let file = self.file;
        let mut lines = numbered_lines(self.text).filter(|(_, l)| !is_skipped(l));
        let Some((header_line, header)) = lines.next() else {
            return Err(RegistryError::MissingHeader {
                file: file.to_string(),
            });
        };
        self.check_header(header_line, header)?;

        let estimate = self.text.as_bytes().iter().filter(|&&b| b == b'\n').count();
        let mut ids: Vec<u64> = Vec::with_capacity(estimate);
        let mut infos: Vec<PointInfo> = Vec::with_capacity(estimate);
        let mut gateway_names: Vec<Box<str>> = Vec::new();
        let mut gateway_index: FxHashMap<Box<str>, GatewayIdx> = FxHashMap::default();
        let mut classes: Vec<String> = Vec::new();
        let mut houses: Links =
            FxHashMap::with_capacity_and_hasher(estimate / 8, Default::default());
        let mut villages: Links = FxHashMap::default();
        let mut stations: Links = FxHashMap::default();

        // Rows are usually grouped by gateway and house: remember the previous row's values.
        let mut last_gateway: Option<(&str, GatewayIdx)> = None;
        let mut last_class: Option<(&str, u8)> = None;
        let mut last_place: Option<[u32; 4]> = None;

        for (line, text) in lines {
            let mut f = [""; 10];
            let found = split_fields(text, &mut f);
            if found != FIELDS.len() {
                let detail = if found < FIELDS.len() {
                    format!("missing `{}`", FIELDS[found])
                } else {
                    "extra fields after `policy_id`".to_string()
                };
                return Err(RegistryError::FieldCount {
                    file: file.to_string(),
                    line,
                    found,
                    detail,
                });
            }

            let point_id = self.number(line, 0, f[0])?;
            if point_id == 0 {
                return Err(self.field_err(line, 0, "point id must be > 0".to_string()));
            }

            let gateway = match last_gateway {
                Some((name, g)) if name == f[1] => g,
                _ => {
                    let g = match gateway_index.get(f[1]) {
                        Some(&g) => g,
                        None => {
                            if !valid_gateway_id(f[1]) {
                                let msg = format!(
                                    "invalid gateway id {:?}: expected 1 to {MAX_GATEWAY_ID_LEN} characters of [A-Za-z0-9_-]",
                                    f[1]
                                );
                                return Err(self.field_err(line, 1, msg));
                            }
                            let g = gateway_names.len() as GatewayIdx;
                            gateway_names.push(f[1].into());
                            gateway_index.insert(f[1].into(), g);
                            g
                        }
                    };
                    last_gateway = Some((f[1], g));
                    g
                }
            };

            let class = match last_class {
                Some((name, c)) if name == f[2] => c,
                _ => {
                    let c = match classes.iter().position(|c| c == f[2]) {
                        Some(c) => c,
                        None => {
                            if !valid_class_name(f[2]) {
                                let msg = format!(
                                    "invalid device class {:?}: expected a name of [a-z0-9_]+",
                                    f[2]
                                );
                                return Err(self.field_err(line, 2, msg));
                            }
                            if classes.len() >= MAX_DEVICE_CLASSES {
                                let msg = format!("device class {:?} is one too many (at most {MAX_DEVICE_CLASSES})", f[2]);
                                return Err(self.field_err(line, 2, msg));
                            }
                            classes.push(f[2].to_string());
                            classes.len() - 1
                        }
                    };
                    // c < MAX_DEVICE_CLASSES = 255, so it fits.
                    let c = c as u8;
                    last_class = Some((f[2], c));
                    c
                }
            };

            let room = self.u32(line, 3, f[3])?;
            let room_type = self.room_type(line, f[4])?;
            let place = [
                self.u32(line, 5, f[5])?,
                self.u32(line, 6, f[6])?,
                self.u32(line, 7, f[7])?,
                self.u32(line, 8, f[8])?,
            ];
            let policy = self.u32(line, 9, f[9])?;
            let [house, village, station, town] = place;
            if last_place != Some(place) {
                self.link(&mut houses, line, 6, "house", house, "village", village)?;
                self.link(
                    &mut villages,
                    line,
                    7,
                    "village",
                    village,
                    "station",
                    station,
                )?;
                self.link(&mut stations, line, 8, "station", station, "town", town)?;
                last_place = Some(place);
            }

            if ids.len() >= PointIdx::MAX as usize {
                return Err(RegistryError::TooManyPoints {
                    file: file.to_string(),
                    line,
                });
            }
            ids.push(point_id);
            infos.push(PointInfo {
                gateway,
                class,
                room_type,
                room,
                house,
                village,
                station,
                town,
                policy,
            });
        }

        // The id map is built after the rows: a tight insert loop overlaps its cache misses,
        // interleaved with parsing it would not. So duplicates are found after other errors.
        let mut index: FxHashMap<u64, PointIdx> =
            FxHashMap::with_capacity_and_hasher(ids.len(), Default::default());
        for (idx, &point_id) in ids.iter().enumerate() {
            // idx < PointIdx::MAX: checked for every row above.
            if let Some(first) = index.insert(point_id, idx as PointIdx) {
                return Err(RegistryError::DuplicatePoint {
                    file: file.to_string(),
                    line: data_line(self.text, idx),
                    point_id,
                    first_line: data_line(self.text, first as usize),
                });
            }
        }

        Ok(Parts {
            ids,
            infos,
            index,
            gateway_names,
            gateway_index,
            classes,
            house_count: houses.len(),
            village_count: villages.len(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Registry, RegistryError, HEADER};
    use firewatch_proto::RoomType;

    const ROW1: &str = "1,gw-1,polled,1,kitchen,1,1,1,1,5";
    const ROW2: &str = "2,gw-1,polled,2,bedroom,1,1,1,1,5";

    fn parse_rows(rows: &[&str]) -> Result<Registry, RegistryError> {
        let mut text = format!("{HEADER}\n");
        for row in rows {
            text.push_str(row);
            text.push('\n');
        }
        Registry::parse(&text, "registry.csv")
    }

    /// Parses header + rows and returns the error message; rows start on line 2.
    fn error(rows: &[&str]) -> String {
        match parse_rows(rows) {
            Ok(r) => panic!("expected an error, parsed {} points", r.len()),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn skips_comments_blank_lines_crlf_and_bom() {
        let text = format!(
            "\u{feff}# registry export\r\n\r\n{HEADER}\r\n# house 1\r\n{ROW1}\r\n   \r\n{ROW2}"
        );
        let r = Registry::parse(&text, "r.csv").expect("parses");
        assert_eq!(r.len(), 2);
        let (_, p) = r.lookup(2).expect("point 2");
        assert_eq!((p.room_type, p.policy), (RoomType::Bedroom, 5));
        assert_eq!(r.gateway_id(p.gateway), "gw-1");
    }

    #[test]
    fn bad_header() {
        let e = Registry::parse("point_id,gateway,device_class\n1,2,3\n", "registry.csv")
            .expect_err("bad header");
        assert!(matches!(e, RegistryError::BadHeader { line: 1, .. }));
        let msg = e.to_string();
        assert!(
            msg.starts_with(
                "registry.csv line 1: bad header: column 2 is \"gateway\", expected `gateway_id`"
            ),
            "{msg}"
        );
        assert!(
            msg.ends_with(&format!("expected exactly `{HEADER}`")),
            "{msg}"
        );

        let short = HEADER
            .rsplit_once(',')
            .map(|(head, _)| head)
            .unwrap_or_default();
        let msg = Registry::parse(&format!("# c\n{short}\n"), "r.csv")
            .expect_err("short")
            .to_string();
        assert!(
            msg.starts_with("r.csv line 2: bad header: missing column `policy_id`"),
            "{msg}"
        );
        let msg = Registry::parse(&format!("{HEADER},extra\n"), "r.csv")
            .expect_err("long")
            .to_string();
        assert!(
            msg.starts_with("r.csv line 1: bad header: unexpected extra column \"extra\""),
            "{msg}"
        );
        let msg = Registry::parse(&format!("{ROW1}\n"), "r.csv")
            .expect_err("no header")
            .to_string();
        assert!(
            msg.starts_with("r.csv line 1: bad header: column 1 is \"1\""),
            "{msg}"
        );

        let msg = Registry::parse("# only a comment\n\n", "r.csv")
            .expect_err("empty")
            .to_string();
        assert_eq!(
            msg,
            format!("r.csv: missing header line; expected `{HEADER}`")
        );
    }

    #[test]
    fn bad_numbers() {
        assert_eq!(
            error(&[ROW1, "2,gw-1,polled,2x,bedroom,1,1,1,1,5"]),
            "registry.csv line 3: field `room_id`: expected an unsigned decimal integer, found \"2x\""
        );
        assert_eq!(
            error(&["-1,gw-1,polled,2,bedroom,1,1,1,1,5"]),
            "registry.csv line 2: field `point_id`: expected an unsigned decimal integer, found \"-1\""
        );
        assert_eq!(
            error(&["1,gw-1,polled,2,bedroom,1,1,1,1,"]),
            "registry.csv line 2: field `policy_id`: expected an unsigned decimal integer, found \"\""
        );
        assert_eq!(
            error(&["1,gw-1,polled,2,bedroom, 1,1,1,1,5"]),
            "registry.csv line 2: field `house_id`: expected an unsigned decimal integer, found \" 1\""
        );
        assert_eq!(
            error(&["1,gw-1,polled,2,bedroom,1,1,1,4294967296,5"]),
            "registry.csv line 2: field `town_id`: number 4294967296 is too large (max 4294967295)"
        );
        assert_eq!(
            error(&["99999999999999999999,gw-1,polled,2,bedroom,1,1,1,1,5"]),
            "registry.csv line 2: field `point_id`: number 99999999999999999999 is too large \
             (max 18446744073709551615)"
        );
        assert_eq!(
            error(&["0,gw-1,polled,2,bedroom,1,1,1,1,5"]),
            "registry.csv line 2: field `point_id`: point id must be > 0"
        );
        // u64 ids beyond u32 are fine.
        let r =
            parse_rows(&["18446744073709551615,gw-1,polled,2,bedroom,1,1,1,1,5"]).expect("max u64");
        assert_eq!(r.point_id(0), u64::MAX);
    }

    #[test]
    fn wrong_field_count() {
        assert_eq!(
            error(&[ROW1, "2,gw-1,polled,2,bedroom,1,1,1,1"]),
            "registry.csv line 3: expected 10 comma-separated fields, found 9 (missing `policy_id`)"
        );
        assert_eq!(
            error(&["1,gw-1,polled,2,bedroom,1,1,1,1,5,6"]),
            "registry.csv line 2: expected 10 comma-separated fields, found 11 (extra fields after `policy_id`)"
        );
    }

    #[test]
    fn duplicate_point_names_both_lines() {
        let e = parse_rows(&[ROW1, "# between", ROW2, "1,gw-2,lora,3,studio,2,1,1,1,0"])
            .expect_err("duplicate");
        assert!(
            matches!(
                e,
                RegistryError::DuplicatePoint {
                    line: 5,
                    first_line: 2,
                    point_id: 1,
                    ..
                }
            ),
            "{e:?}"
        );
        assert_eq!(
            e.to_string(),
            "registry.csv line 5: field `point_id`: duplicate point id 1 (first on line 2)"
        );
    }

    #[test]
    fn unknown_room_type() {
        assert_eq!(
            error(&[ROW1, "2,gw-1,polled,2,garage,1,1,1,1,5"]),
            "registry.csv line 3: field `room_type`: unknown room type \"garage\" (known: bedroom, kitchen, \
             studio, corridor, stairwell, living_room, bathroom, storage, shop)"
        );
        assert_eq!(
            error(&["1,gw-1,polled,2,Kitchen,1,1,1,1,5"]),
            "registry.csv line 2: field `room_type`: unknown room type \"Kitchen\" (room types are lowercase)"
        );
        assert!(error(&["1,gw-1,polled,2,room_type_unspecified,1,1,1,1,5"])
            .contains("unknown room type"));
        assert!(error(&["1,gw-1,polled,2,,1,1,1,1,5"])
            .contains("field `room_type`: unknown room type \"\""));
    }

    #[test]
    fn hierarchy_violations() {
        assert_eq!(
            error(&[ROW1, ROW2, "3,gw-1,polled,3,bedroom,1,2,1,1,5"]),
            "registry.csv line 4: field `village_id`: house 1 is in village 2 here but in village 1 on line 2"
        );
        assert_eq!(
            error(&[ROW1, "3,gw-1,polled,3,bedroom,2,1,9,1,0"]),
            "registry.csv line 3: field `station_id`: village 1 is in station 9 here but in station 1 on line 2"
        );
        assert_eq!(
            error(&[ROW1, "3,gw-1,polled,3,bedroom,2,2,1,3,0"]),
            "registry.csv line 3: field `town_id`: station 1 is in town 3 here but in town 1 on line 2"
        );
        // Non-adjacent rows are checked too, not only changes from the previous row.
        assert!(error(&[ROW1, "3,gw-1,polled,3,bedroom,2,2,2,1,0", "4,gw-1,polled,4,bedroom,1,3,2,1,0"])
            .starts_with("registry.csv line 4: field `village_id`: house 1 is in village 3 here but in village 1 on line 2"));
        // Rows of one house need not be adjacent.
        parse_rows(&[ROW1, "3,gw-2,lora,3,bedroom,2,2,2,1,0", ROW2])
            .expect("interleaved houses are fine");
    }

    #[test]
    fn bad_gateway_id() {
        let long = "g".repeat(65);
        for bad in ["gw 1", "", "gw/1", "gw.1", "网关", long.as_str()] {
            let row = format!("1,{bad},polled,1,kitchen,1,1,1,1,0");
            let msg = error(&[&row]);
            assert_eq!(
                msg,
                format!(
                    "registry.csv line 2: field `gateway_id`: invalid gateway id {bad:?}: expected 1 to 64 \
                     characters of [A-Za-z0-9_-]"
                )
            );
        }
        let ok = "A-z_09".repeat(10) + "abcd";
        parse_rows(&[&format!("1,{ok},polled,1,kitchen,1,1,1,1,0")])
            .expect("64 characters are fine");
    }

    #[test]
    fn bad_device_class() {
        for bad in ["Polled", "", "lo-ra", "lora "] {
            let msg = error(&[&format!("1,gw-1,{bad},1,kitchen,1,1,1,1,0")]);
            let expected = format!(
                "registry.csv line 2: field `device_class`: invalid device class {bad:?}: expected a name of [a-z0-9_]+"
            );
            assert_eq!(msg, expected);
        }
    }

    #[test]
    fn at_most_255_device_classes() {
        let rows: Vec<String> = (1..=256)
            .map(|i| format!("{i},gw-1,class_{i},{i},bedroom,1,1,1,1,0"))
            .collect();
        let refs: Vec<&str> = rows.iter().map(String::as_str).collect();
        let r = parse_rows(&refs[..255]).expect("255 classes are fine");
        assert_eq!(r.device_classes().len(), 255);
        assert_eq!(r.device_class_name(r.info(254).class), "class_255");
        assert_eq!(
            error(&refs),
            "registry.csv line 257: field `device_class`: device class \"class_256\" is one too many (at most 255)"
        );
    }
}
