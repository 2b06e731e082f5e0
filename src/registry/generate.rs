//! Synthetic registry of a Yiwu-like city, deterministic for a seed.
//!
//! Layout: 14 towns (town ids 1..=14); grassroots stations spread over the towns (84 at full
//! scale, about 6 per town, fewer for small point counts but at least one per town when there
//! are enough houses); 10 to 15 villages per station (fewer when a station has few houses);
//! rental houses of 8 to 22 rooms (mean 15) with about 9 monitored points each: one kitchen,
//! corridor and stairwells, often a living room, mostly bedrooms and studios, sometimes a
//! ground-floor shop (which may carry two detectors). Gateways serve up to 84 points (about
//! 80) of consecutive whole houses of one village and never span villages; each gateway has
//! one device class: `polled` (~60%), `lora` (~30%), `nbiot` (~10%). About 70% of houses
//! are insured, one policy each.
//!
//! Ids are dense from 1 in file order: point, room (monitored rooms only), house, village,
//! station, policy; gateways are named `gw-000001`, `gw-000002`, ...

use firewatch_proto::RoomType;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rustc_hash::FxHashMap;

use super::{GatewayIdx, Parts, PointIdx, PointInfo, Registry};

/// Number of towns in the generated city.
pub const TOWNS: u32 = 14;
/// Device classes of the generated registry, in `PointInfo::class` order.
pub const DEVICE_CLASSES: [&str; 3] = ["polled", "lora", "nbiot"];

const MAX_STATIONS: usize = 84;
/// Houses per station at which the full 84 stations are reached (~800,000 points).
const HOUSES_PER_STATION: usize = 1060;
/// A station gets at most one village per this many houses.
const MIN_HOUSES_PER_VILLAGE: usize = 30;
/// A gateway takes the next house of its village only if it stays within this many points.
const GATEWAY_MAX_POINTS: usize = 84;
const INSURED_SHARE: f64 = 0.7;

/// What to generate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GenerateOptions {
    /// Exactly this many points are produced (at most `u32::MAX`).
    pub points: usize,
    /// Seed of the `StdRng` that draws everything.
    pub seed: u64,
}

impl Default for GenerateOptions {
    /// The full city: 800,000 points, seed 1.
    fn default() -> Self {
        GenerateOptions {
            points: 800_000,
            seed: 1,
        }
    }
}

/// One generated point before placement: its room type and whether it shares the previous
/// point's room.
#[derive(Clone, Copy)]
struct Slot {
    room_type: RoomType,
    same_room: bool,
}

/// Generates the city registry; same options, same registry.
pub fn generate(opts: &GenerateOptions) -> Registry {
    let n = opts.points.min(PointIdx::MAX as usize);
    let mut rng = StdRng::seed_from_u64(opts.seed);

    // Houses first, until there are enough points; the last house may be cut short.
    let mut slots: Vec<Slot> = Vec::with_capacity(n + 32);
    let mut house_starts: Vec<usize> = Vec::with_capacity(n / 8 + 1);
    while slots.len() < n {
        house_starts.push(slots.len());
        push_house(&mut rng, &mut slots);
    }
    slots.truncate(n);
    let houses = house_starts.len();
    let house_end = |h: usize| house_starts.get(h + 1).copied().unwrap_or(n);

    // Stations per town, houses per station.
    let stations = match houses {
        h if h < TOWNS as usize => h,
        h => {
            ((h + HOUSES_PER_STATION / 2) / HOUSES_PER_STATION).clamp(TOWNS as usize, MAX_STATIONS)
        }
    };
    let towns_used = stations.min(TOWNS as usize);
    let extra_per_town = split(&mut rng, stations - towns_used, towns_used, 0);
    let houses_per_station = split(&mut rng, houses, stations, 1);

    let mut ids = Vec::with_capacity(n);
    let mut infos = Vec::with_capacity(n);
    let mut gateway_names: Vec<Box<str>> = Vec::with_capacity(n / 70 + 1);
    let (mut house, mut station, mut village, mut room, mut policy) =
        (0usize, 0u32, 0u32, 0u32, 0u32);
    for (t, extra) in extra_per_town.iter().enumerate() {
        let town = t as u32 + 1;
        for _ in 0..1 + extra {
            let station_houses = houses_per_station[station as usize];
            station += 1;
            let max_villages = (station_houses / MIN_HOUSES_PER_VILLAGE).max(1);
            let villages = rng.gen_range(10..=15usize).min(max_villages);
            for village_houses in split(&mut rng, station_houses, villages, 1) {
                village += 1;
                // Gateways of this village: (class, points so far), opened lazily.
                let mut open: Option<(u8, usize)> = None;
                for (k, &start) in house_starts[house..house + village_houses]
                    .iter()
                    .enumerate()
                {
                    let h = house + k;
                    let insured = rng.gen_bool(INSURED_SHARE);
                    let house_policy = if insured {
                        policy += 1;
                        policy
                    } else {
                        0
                    };
                    let end = house_end(h);
                    let points = end - start;
                    let (class, used) = match open {
                        Some((class, used)) if used + points <= GATEWAY_MAX_POINTS => (class, used),
                        _ => {
                            gateway_names.push(format!("gw-{:06}", gateway_names.len() + 1).into());
                            (pick_class(&mut rng), 0)
                        }
                    };
                    open = Some((class, used + points));
                    let gateway = (gateway_names.len() - 1) as GatewayIdx;
                    for (k, slot) in slots[start..end].iter().enumerate() {
                        if k == 0 || !slot.same_room {
                            room += 1;
                        }
                        ids.push(ids.len() as u64 + 1);
                        infos.push(PointInfo {
                            gateway,
                            class,
                            room_type: slot.room_type,
                            room,
                            house: h as u32 + 1,
                            village,
                            station,
                            town,
                            policy: house_policy,
                        });
                    }
                }
                house += village_houses;
            }
        }
    }

    let mut index = FxHashMap::with_capacity_and_hasher(ids.len(), Default::default());
    for (i, &id) in ids.iter().enumerate() {
        index.insert(id, i as PointIdx);
    }
    let gateway_index = gateway_names
        .iter()
        .enumerate()
        .map(|(g, name)| (name.clone(), g as GatewayIdx))
        .collect();
    Registry::assemble(Parts {
        ids,
        infos,
        index,
        gateway_names,
        gateway_index,
        classes: DEVICE_CLASSES.iter().map(|c| c.to_string()).collect(),
        house_count: houses,
        village_count: village as usize,
    })
}

fn pick_class(rng: &mut StdRng) -> u8 {
    match rng.gen::<f64>() {
        x if x < 0.6 => 0,
        x if x < 0.9 => 1,
        _ => 2,
    }
}

/// Splits `total` into `parts` random, roughly even shares (weights 0.6..1.4) of at least
/// `min_each` each; the shares sum to `total` (given `total >= parts * min_each`).
fn split(rng: &mut StdRng, total: usize, parts: usize, min_each: usize) -> Vec<usize> {
    if parts == 0 {
        return Vec::new();
    }
    let weights: Vec<f64> = (0..parts).map(|_| rng.gen_range(0.6..1.4)).collect();
    let sum: f64 = weights.iter().sum();
    let spare = total.saturating_sub(parts * min_each);
    let mut shares = Vec::with_capacity(parts);
    let (mut cumulative, mut given) = (0.0, 0usize);
    for (i, w) in weights.iter().enumerate() {
        cumulative += w;
        let upto = if i + 1 == parts {
            spare
        } else {
            ((cumulative / sum) * spare as f64).round() as usize
        };
        let upto = upto.clamp(given, spare);
        shares.push(min_each + upto - given);
        given = upto;
    }
    shares
}

/// Appends the monitored points of one house, ground floor first.
fn push_house(rng: &mut StdRng, out: &mut Vec<Slot>) {
    let rooms = 8 + rng.gen_range(0..=7usize) + rng.gen_range(0..=7usize);
    let floors = rooms.div_ceil(5);
    let shop = rng.gen_bool(0.25);
    let living = rng.gen_bool(0.3);
    let storage = rng.gen_bool(0.3);
    // Kitchen, one corridor/stairwell and one (unmonitored) bathroom per floor.
    let fixed = 1 + 2 * floors + usize::from(shop) + usize::from(living) + usize::from(storage);
    let sleeping = rooms.saturating_sub(fixed);
    let mut point = |room_type, same_room| {
        out.push(Slot {
            room_type,
            same_room,
        })
    };

    if shop {
        point(RoomType::Shop, false);
        if rng.gen_bool(0.5) {
            point(RoomType::Shop, true);
        }
    }
    point(RoomType::Kitchen, false);
    point(RoomType::Corridor, false);
    if living {
        point(RoomType::LivingRoom, false);
    }
    if storage && rng.gen_bool(0.5) {
        point(RoomType::Storage, false);
    }
    for floor in 0..floors {
        if floor > 0 {
            point(RoomType::Stairwell, false);
        }
        let on_floor = sleeping * (floor + 1) / floors - sleeping * floor / floors;
        for _ in 0..on_floor {
            let kind = if rng.gen_bool(0.65) {
                RoomType::Bedroom
            } else {
                RoomType::Studio
            };
            if rng.gen_bool(0.6) {
                point(kind, false);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustc_hash::FxHashSet;

    fn csv(r: &Registry) -> Vec<u8> {
        let mut out = Vec::new();
        r.write_csv(&mut out).expect("write to Vec");
        out
    }

    #[test]
    fn same_seed_same_bytes_other_seed_differs() {
        let a = csv(&generate(&GenerateOptions {
            points: 20_000,
            seed: 42,
        }));
        let b = csv(&generate(&GenerateOptions {
            points: 20_000,
            seed: 42,
        }));
        let c = csv(&generate(&GenerateOptions {
            points: 20_000,
            seed: 43,
        }));
        assert!(a == b, "same seed, different output");
        assert!(a != c, "different seeds, same output");
        assert_eq!(
            GenerateOptions::default(),
            GenerateOptions {
                points: 800_000,
                seed: 1
            }
        );
    }

    /// Invariants that hold at every size: exact count, dense ids in file order, layout.
    fn check_ids(r: &Registry, points: usize) {
        assert_eq!(r.len(), points);
        let towns_expected = r.house_count().min(TOWNS as usize);
        let (mut last, mut towns, mut stations, mut policies) = (None::<PointInfo>, 0, 0, 0);
        for (i, (id, p)) in r.iter().enumerate() {
            assert_eq!(id, i as u64 + 1);
            assert!(
                (1..=towns_expected as u32).contains(&p.town),
                "town {}",
                p.town
            );
            match last {
                None => assert_eq!(
                    (p.room, p.house, p.village, p.station, p.town),
                    (1, 1, 1, 1, 1)
                ),
                Some(q) => {
                    assert!(p.room == q.room || p.room == q.room + 1, "rooms dense");
                    assert!(p.house == q.house || p.house == q.house + 1, "houses dense");
                    assert!(
                        p.village == q.village || p.village == q.village + 1,
                        "villages dense"
                    );
                    assert!(
                        p.station == q.station || p.station == q.station + 1,
                        "stations dense"
                    );
                    assert!(p.town == q.town || p.town == q.town + 1, "towns in order");
                    if p.house == q.house {
                        assert_eq!(
                            (p.village, p.policy, p.gateway),
                            (q.village, q.policy, q.gateway),
                            "house {}",
                            p.house
                        );
                    } else if p.policy != 0 {
                        assert_eq!(p.policy, policies + 1, "policies dense, one per house");
                    }
                    if p.room == q.room {
                        assert_eq!(
                            (p.house, p.room_type),
                            (q.house, RoomType::Shop),
                            "only shops have two points"
                        );
                    }
                }
            }
            policies = policies.max(p.policy);
            towns = towns.max(p.town);
            stations = stations.max(p.station);
            last = Some(*p);
        }
        assert_eq!(last.map_or(0, |p| p.house as usize), r.house_count());
        assert_eq!(last.map_or(0, |p| p.village as usize), r.village_count());
        assert_eq!(towns as usize, towns_expected);
        assert!(stations as usize >= towns_expected && stations as usize <= MAX_STATIONS);
        assert_eq!(r.device_classes(), DEVICE_CLASSES);
        for g in 0..r.gateway_count() as GatewayIdx {
            assert_eq!(r.gateway_id(g), format!("gw-{:06}", g + 1));
        }
    }

    #[test]
    fn exact_point_counts_and_dense_ids() {
        for points in [0, 1, 2, 8, 9, 30, 127, 200, 1_000, 3_333] {
            let r = generate(&GenerateOptions {
                points,
                seed: points as u64,
            });
            check_ids(&r, points);
        }
        let r = generate(&GenerateOptions { points: 0, seed: 1 });
        assert!(r.is_empty());
        assert_eq!(
            (r.gateway_count(), r.house_count(), r.village_count()),
            (0, 0, 0)
        );
    }

    /// Gateways: whole consecutive houses of one village, one class, up to 84 points and
    /// at least 62 unless last of its village. Returns the sizes of full gateways.
    fn check_gateways(r: &Registry) -> Vec<usize> {
        let mut full = Vec::new();
        let mut house_gateway: FxHashMap<u32, GatewayIdx> = FxHashMap::default();
        for g in 0..r.gateway_count() as GatewayIdx {
            let pts = r.gateway_points(g);
            assert!(
                !pts.is_empty() && pts.len() <= GATEWAY_MAX_POINTS,
                "gateway {g}: {} points",
                pts.len()
            );
            assert!(
                pts.windows(2).all(|w| w[1] == w[0] + 1),
                "gateway {g}: points not consecutive"
            );
            let first = r.info(pts[0]);
            for &i in pts {
                let p = r.info(i);
                assert_eq!(p.gateway, g);
                assert_eq!(p.village, first.village, "gateway {g} spans villages");
                assert_eq!(p.class, first.class, "gateway {g} mixes device classes");
                let owner = *house_gateway.entry(p.house).or_insert(g);
                assert_eq!(owner, g, "house {} split over gateways", p.house);
            }
            let last = *pts.last().unwrap_or(&0) as usize;
            let next_same_village =
                last + 1 < r.len() && r.info(last as PointIdx + 1).village == first.village;
            if next_same_village {
                assert!(
                    pts.len() >= 62,
                    "gateway {g}: {} points but not the last of its village",
                    pts.len()
                );
                full.push(pts.len());
            }
        }
        assert_eq!(house_gateway.len(), r.house_count());
        full
    }

    #[test]
    fn city_structure() {
        let r = generate(&GenerateOptions {
            points: 50_000,
            seed: 5,
        });
        check_ids(&r, 50_000);
        let full = check_gateways(&r);
        let mean = full.iter().sum::<usize>() as f64 / full.len() as f64;
        assert!(
            (74.0..=84.0).contains(&mean),
            "mean points per full gateway {mean}"
        );
        let overall = r.len() as f64 / r.gateway_count() as f64;
        assert!(
            (65.0..=84.0).contains(&overall),
            "mean points per gateway {overall}"
        );

        let towns: FxHashSet<u32> = r.iter().map(|(_, p)| p.town).collect();
        assert_eq!(towns.len(), 14);
        let per_house = r.len() as f64 / r.house_count() as f64;
        assert!(
            (8.5..=9.5).contains(&per_house),
            "points per house {per_house}"
        );

        let mut class_gateways = [0usize; 3];
        for g in 0..r.gateway_count() as GatewayIdx {
            class_gateways[r.info(r.gateway_points(g)[0]).class as usize] += 1;
        }
        let share = |c: usize| class_gateways[c] as f64 / r.gateway_count() as f64;
        assert!(
            (share(0) - 0.6).abs() < 0.07
                && (share(1) - 0.3).abs() < 0.07
                && (share(2) - 0.1).abs() < 0.05
        );

        // Per house: one kitchen (but the last, possibly truncated), mostly bedrooms/studios.
        let mut kitchens: FxHashMap<u32, usize> = FxHashMap::default();
        let (mut sleeping, mut insured) = (0usize, FxHashSet::default());
        for (_, p) in r.iter() {
            *kitchens.entry(p.house).or_default() += usize::from(p.room_type == RoomType::Kitchen);
            sleeping += usize::from(matches!(p.room_type, RoomType::Bedroom | RoomType::Studio));
            if p.policy > 0 {
                insured.insert(p.policy);
            }
        }
        let last_house = r.house_count() as u32;
        assert!(kitchens
            .iter()
            .all(|(&h, &k)| k == 1 || (h == last_house && k == 0)));
        assert!(
            sleeping * 3 > r.len(),
            "bedrooms and studios: {sleeping} of {}",
            r.len()
        );
        let insured_share = insured.len() as f64 / r.house_count() as f64;
        assert!(
            (0.65..=0.75).contains(&insured_share),
            "insured {insured_share}"
        );
    }

    #[test]
    fn full_scale_layout() {
        let r = generate(&GenerateOptions::default());
        assert_eq!(r.len(), 800_000);
        let mut station_town: FxHashMap<u32, u32> = FxHashMap::default();
        let mut station_villages: FxHashMap<u32, FxHashSet<u32>> = FxHashMap::default();
        for (_, p) in r.iter() {
            station_town.insert(p.station, p.town);
            station_villages
                .entry(p.station)
                .or_default()
                .insert(p.village);
        }
        assert_eq!(station_town.len(), 84);
        let mut per_town = [0usize; 14];
        for town in station_town.values() {
            per_town[*town as usize - 1] += 1;
        }
        assert!(
            per_town.iter().all(|&n| (1..=12).contains(&n)),
            "stations per town {per_town:?}"
        );
        assert!(station_villages
            .values()
            .all(|v| (10..=15).contains(&v.len())));
        let houses = r.house_count();
        assert!((85_000..=93_000).contains(&houses), "houses {houses}");
    }
}
