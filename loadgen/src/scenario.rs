//! What each scenario adds to the steady background, worked out before the run: scripted
//! events per gateway (fire, storm burst, nuisance pairs), which gateways go down in an
//! outage, which send bad input, and which points background alarms avoid.

use crate::cli::{Args, Scenario};
use crate::plan::GatewayPlan;
use firewatch_proto::{EventKind, RoomType};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::Rng;
use serde::Serialize;
use std::collections::{HashMap, HashSet};
use std::time::Duration;

/// Alarm kinds the generator sends.
pub const ALARM_KINDS: [EventKind; 4] = [
    EventKind::SmokeAlarm,
    EventKind::HeatAlarm,
    EventKind::GasAlarm,
    EventKind::ManualAlarm,
];

/// Seconds within which every detector of a burning house alarms.
const HOUSE_SPREAD_SECS: f64 = 3.0;
/// Delay range of a nuisance alarm's clear, seconds.
const NUISANCE_CLEAR_SECS: (f64, f64) = (2.0, 10.0);
/// Foreign points a bad gateway sends events for.
const FOREIGN_POINTS: usize = 3;

/// Why an alarm was sent: its latency is reported per source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(usize)]
pub enum Source {
    /// Random alarms at --alarm-rate.
    Background,
    /// The house fire of the storm scenario and its spread.
    Fire,
    /// The storm scenario's district-wide burst.
    Storm,
    /// Kitchen/studio smoke alarms that clear (nuisance scenario).
    Nuisance,
    /// Alarms that fell due while their gateway was down, or were in flight when it went
    /// down (outage scenario): their latency includes the outage.
    Outage,
}

/// Every source, in index order.
pub const SOURCES: [Source; 5] = [
    Source::Background,
    Source::Fire,
    Source::Storm,
    Source::Nuisance,
    Source::Outage,
];

impl Source {
    /// Lowercase name.
    pub fn name(self) -> &'static str {
        match self {
            Source::Background => "background",
            Source::Fire => "fire",
            Source::Storm => "storm",
            Source::Nuisance => "nuisance",
            Source::Outage => "outage",
        }
    }
}

/// One scripted event of a gateway.
#[derive(Debug, Clone, Copy)]
pub struct Scripted {
    /// Intended send time, from the schedule start.
    pub at: Duration,
    /// Index of the point in the gateway's plan.
    pub local: u32,
    /// Event kind (alarm-class kinds are tracked until acked; others are sent once).
    pub kind: EventKind,
    /// Why it is sent.
    pub source: Source,
}

/// Whom a bad gateway impersonates.
#[derive(Debug, Clone)]
pub struct BadTarget {
    /// Another simulated gateway's id (topic and `gateway_id` of the bad publishes).
    pub other_id: String,
    /// Some of that gateway's point ids (foreign-point events).
    pub foreign_points: Vec<u64>,
}

/// The scenario's part of one gateway.
#[derive(Debug, Clone, Default)]
pub struct GatewayExtras {
    /// Scripted events, by time.
    pub script: Vec<Scripted>,
    /// Points background alarms may use (local indices); `None`: every point.
    pub background: Option<Vec<u32>>,
    /// Outage: (down at, network back at), from the schedule start.
    pub outage: Option<(Duration, Duration)>,
    /// Bad input to send.
    pub bad: Option<BadTarget>,
}

/// What the scenario planned, for the report.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ScenarioInfo {
    /// House of the storm's fire.
    pub fire_house: Option<u32>,
    /// Village of the storm's fire.
    pub fire_village: Option<u32>,
    /// Houses the fire reaches (the first included) within --duration.
    pub fire_houses: usize,
    /// Fire alarms planned within --duration.
    pub fire_alarms_planned: u64,
    /// Burst alarms planned within --duration.
    pub storm_alarms_planned: u64,
    /// Nuisance alarm/clear pairs planned within --duration.
    pub nuisance_pairs_planned: u64,
    /// Kitchen/studio houses available for nuisance alarms.
    pub nuisance_candidates: usize,
    /// Gateways that go down (outage).
    pub outage_gateways: usize,
    /// Gateways that send bad input (bad).
    pub bad_gateways: usize,
}

/// Works out the scenario for `plans`; `extras[i]` belongs to `plans[i]`.
pub fn build(
    args: &Args,
    plans: &[GatewayPlan],
    rng: &mut StdRng,
) -> anyhow::Result<(Vec<GatewayExtras>, ScenarioInfo)> {
    let mut extras = vec![GatewayExtras::default(); plans.len()];
    let mut info = ScenarioInfo::default();
    let duration = args.duration;
    match args.scenario {
        Scenario::Steady => {}
        Scenario::Storm => storm(args, plans, rng, &mut extras, &mut info),
        Scenario::Outage => {
            let chosen = choose(plans.len(), args.outage_share, rng);
            let down = Duration::from_secs_f64(args.outage_at);
            let up = Duration::from_secs_f64(args.outage_at + args.outage_secs);
            for &g in &chosen {
                extras[g].outage = Some((down, up));
            }
            info.outage_gateways = chosen.len();
            if args.outage_at >= duration {
                eprintln!("loadgen: warning: --outage-at is not before --duration; no outage");
            }
        }
        Scenario::Nuisance => nuisance(args, plans, rng, &mut extras, &mut info),
        Scenario::Bad => {
            anyhow::ensure!(
                plans.len() >= 2,
                "the bad scenario needs at least 2 gateways (foreign points, another gateway's topic)"
            );
            let chosen = choose(plans.len(), args.bad_share, rng);
            for &g in &chosen {
                let victim = &plans[(g + 1) % plans.len()];
                extras[g].bad = Some(BadTarget {
                    other_id: victim.id.clone(),
                    foreign_points: victim
                        .points
                        .iter()
                        .take(FOREIGN_POINTS)
                        .map(|p| p.id)
                        .collect(),
                });
            }
            info.bad_gateways = chosen.len();
        }
    }
    for e in &mut extras {
        e.script.sort_by_key(|s| s.at);
    }
    Ok((extras, info))
}

/// `round(share * n)` distinct indices below `n` (at least one when share > 0).
fn choose(n: usize, share: f64, rng: &mut StdRng) -> Vec<usize> {
    if n == 0 || share <= 0.0 {
        return Vec::new();
    }
    let k = ((share * n as f64).round() as usize).clamp(1, n);
    let mut all: Vec<usize> = (0..n).collect();
    all.shuffle(rng);
    all.truncate(k);
    all.sort_unstable();
    all
}

fn random_alarm(rng: &mut StdRng) -> EventKind {
    ALARM_KINDS[rng.gen_range(0..ALARM_KINDS.len())]
}

/// Adds a scripted event when it falls before `end` seconds; true when added.
fn push_event(
    extras: &mut [GatewayExtras],
    end: f64,
    (g, l): (u32, u32),
    at: f64,
    kind: EventKind,
    source: Source,
) -> bool {
    if at >= end {
        return false;
    }
    extras[g as usize].script.push(Scripted {
        at: Duration::from_secs_f64(at),
        local: l,
        kind,
        source,
    });
    true
}

fn storm(
    args: &Args,
    plans: &[GatewayPlan],
    rng: &mut StdRng,
    extras: &mut [GatewayExtras],
    info: &mut ScenarioInfo,
) {
    let all: Vec<(u32, u32)> = plans
        .iter()
        .enumerate()
        .flat_map(|(g, p)| (0..p.points.len() as u32).map(move |l| (g as u32, l)))
        .collect();
    if all.is_empty() {
        return;
    }
    let end = args.duration;

    // The house fire: the first detector, then the rest of its house within a few seconds,
    // then the other houses of its gateway, then the rest of its village.
    let mut by_house: HashMap<u32, Vec<(u32, u32)>> = HashMap::new();
    for &(g, l) in &all {
        by_house
            .entry(plans[g as usize].points[l as usize].house)
            .or_default()
            .push((g, l));
    }
    let first = all[rng.gen_range(0..all.len())];
    let fp = plans[first.0 as usize].points[first.1 as usize];
    info.fire_house = Some(fp.house);
    info.fire_village = Some(fp.village);
    let t0 = args.storm_at;
    let mut fire = 0u64;
    let mut houses = 0usize;
    let mut burn = |rng: &mut StdRng, extras: &mut [GatewayExtras], house: u32, at: f64| {
        let mut n = 0u64;
        for &pt in &by_house[&house] {
            let (t, kind) = if pt == first {
                (t0, EventKind::SmokeAlarm)
            } else if rng.gen_bool(0.7) {
                (
                    at + rng.gen_range(0.05..HOUSE_SPREAD_SECS),
                    EventKind::SmokeAlarm,
                )
            } else {
                (
                    at + rng.gen_range(0.05..HOUSE_SPREAD_SECS),
                    EventKind::HeatAlarm,
                )
            };
            if push_event(extras, end, pt, t, kind, Source::Fire) {
                n += 1;
            }
        }
        if n > 0 {
            houses += 1;
        }
        fire += n;
    };
    burn(rng, extras, fp.house, t0);
    let mut seen: HashSet<u32> = HashSet::from([fp.house]);
    let gw_houses: Vec<u32> = plans[first.0 as usize]
        .points
        .iter()
        .map(|p| p.house)
        .filter(|h| seen.insert(*h))
        .collect();
    let village_houses: Vec<u32> = plans
        .iter()
        .flat_map(|p| p.points.iter())
        .filter(|p| p.village == fp.village)
        .map(|p| p.house)
        .filter(|h| seen.insert(*h))
        .collect();
    let spread = args.fire_spread_secs;
    for (wave, list) in [(0.0, &gw_houses), (spread, &village_houses)] {
        for &h in list.iter() {
            let ignite = t0 + HOUSE_SPREAD_SECS + wave + spread * rng.gen::<f64>();
            burn(rng, extras, h, ignite);
        }
    }
    info.fire_houses = houses;
    info.fire_alarms_planned = fire;

    // The district-wide burst, evenly spaced, on random points of every gateway.
    let mut burst = 0u64;
    if args.storm_rate > 0.0 {
        let n = (args.storm_rate * args.storm_secs).round() as u64;
        for i in 0..n {
            let at = args.storm_at + i as f64 / args.storm_rate;
            let pt = all[rng.gen_range(0..all.len())];
            let kind = random_alarm(rng);
            if !push_event(extras, end, pt, at, kind, Source::Storm) {
                break;
            }
            burst += 1;
        }
    }
    info.storm_alarms_planned = burst;
}

fn nuisance(
    args: &Args,
    plans: &[GatewayPlan],
    rng: &mut StdRng,
    extras: &mut [GatewayExtras],
    info: &mut ScenarioInfo,
) {
    let mut seen = HashSet::new();
    let mut candidates: Vec<(u32, u32)> = Vec::new();
    for (g, p) in plans.iter().enumerate() {
        for (l, pt) in p.points.iter().enumerate() {
            if matches!(pt.room_type, RoomType::Kitchen | RoomType::Studio) && seen.insert(pt.house)
            {
                candidates.push((g as u32, l as u32));
            }
        }
    }
    candidates.shuffle(rng);
    info.nuisance_candidates = candidates.len();
    let mut used: HashSet<u32> = HashSet::new();
    let mut touched: HashSet<usize> = HashSet::new();
    if args.nuisance_rate > 0.0 {
        let phase: f64 = rng.gen::<f64>() / args.nuisance_rate;
        for (i, &(g, l)) in candidates.iter().enumerate() {
            let at = phase + i as f64 / args.nuisance_rate;
            // The clear comes 2-10 s later, and before the end of sending.
            let latest = NUISANCE_CLEAR_SECS.1.min(args.duration - at);
            if latest <= NUISANCE_CLEAR_SECS.0 {
                break;
            }
            let clear = at + rng.gen_range(NUISANCE_CLEAR_SECS.0..latest);
            let e = &mut extras[g as usize];
            e.script.push(Scripted {
                at: Duration::from_secs_f64(at),
                local: l,
                kind: EventKind::SmokeAlarm,
                source: Source::Nuisance,
            });
            e.script.push(Scripted {
                at: Duration::from_secs_f64(clear),
                local: l,
                kind: EventKind::AlarmClear,
                source: Source::Nuisance,
            });
            used.insert(plans[g as usize].points[l as usize].house);
            touched.insert(g as usize);
        }
    }
    info.nuisance_pairs_planned = used.len() as u64;
    if candidates.is_empty() {
        eprintln!("loadgen: warning: no kitchen or studio points among the simulated ones");
    } else if used.len() == candidates.len()
        && args.nuisance_rate * (args.duration - NUISANCE_CLEAR_SECS.0) > candidates.len() as f64
    {
        eprintln!(
            "loadgen: warning: only {} kitchen/studio houses for nuisance alarms; rate capped",
            candidates.len()
        );
    }
    for (g, p) in plans.iter().enumerate() {
        if touched.contains(&g) || p.points.iter().any(|pt| used.contains(&pt.house)) {
            extras[g].background = Some(
                (0..p.points.len() as u32)
                    .filter(|&l| !used.contains(&p.points[l as usize].house))
                    .collect(),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::PointPlan;
    use clap::Parser;
    use rand::SeedableRng;

    fn plans() -> Vec<GatewayPlan> {
        (0..4u32)
            .map(|g| GatewayPlan {
                id: format!("gw-{g}"),
                points: (0..20u32)
                    .map(|i| PointPlan {
                        id: (g * 100 + i + 1) as u64,
                        hb_interval_secs: 60.0,
                        room_type: if i % 5 == 0 {
                            RoomType::Kitchen
                        } else {
                            RoomType::Bedroom
                        },
                        house: g * 10 + i / 5,
                        village: g / 2,
                    })
                    .collect(),
            })
            .collect()
    }

    fn args(extra: &[&str]) -> Args {
        let mut v = vec!["loadgen"];
        v.extend_from_slice(extra);
        Args::parse_from(v)
    }

    #[test]
    fn storm_plans_fire_and_burst_within_duration() {
        let a = args(&[
            "--scenario",
            "storm",
            "--duration",
            "30",
            "--storm-at",
            "1",
            "--storm-secs",
            "2",
            "--storm-rate",
            "100",
        ]);
        let mut rng = StdRng::seed_from_u64(1);
        let (ex, info) = build(&a, &plans(), &mut rng).unwrap();
        assert_eq!(info.storm_alarms_planned, 200);
        // The whole village (two gateways of 4 houses of 5 points) burns.
        assert_eq!(info.fire_alarms_planned, 40);
        assert_eq!(info.fire_houses, 8);
        let scripted: usize = ex.iter().map(|e| e.script.len()).sum();
        assert_eq!(scripted, 240);
        for e in &ex {
            assert!(e.script.windows(2).all(|w| w[0].at <= w[1].at));
            assert!(e.script.iter().all(|s| s.at < Duration::from_secs(30)));
        }
    }

    #[test]
    fn nuisance_uses_each_house_once_and_background_avoids_it() {
        let a = args(&[
            "--scenario",
            "nuisance",
            "--duration",
            "60",
            "--nuisance-rate",
            "1",
        ]);
        let mut rng = StdRng::seed_from_u64(2);
        let p = plans();
        let (ex, info) = build(&a, &p, &mut rng).unwrap();
        assert_eq!(info.nuisance_candidates, 16);
        assert!(info.nuisance_pairs_planned >= 10, "{info:?}");
        let mut houses = HashSet::new();
        for (g, e) in ex.iter().enumerate() {
            for s in e.script.iter().filter(|s| s.kind == EventKind::SmokeAlarm) {
                let pt = p[g].points[s.local as usize];
                assert!(matches!(pt.room_type, RoomType::Kitchen));
                assert!(houses.insert(pt.house));
                let bg = e.background.as_ref().unwrap();
                assert!(bg
                    .iter()
                    .all(|&l| p[g].points[l as usize].house != pt.house));
            }
        }
    }

    #[test]
    fn outage_and_bad_choose_shares() {
        let mut rng = StdRng::seed_from_u64(3);
        let a = args(&["--scenario", "outage", "--outage-share", "0.5"]);
        let (ex, info) = build(&a, &plans(), &mut rng).unwrap();
        assert_eq!(info.outage_gateways, 2);
        assert_eq!(ex.iter().filter(|e| e.outage.is_some()).count(), 2);
        let a = args(&["--scenario", "bad", "--bad-share", "0.1"]);
        let (ex, info) = build(&a, &plans(), &mut rng).unwrap();
        assert_eq!(info.bad_gateways, 1);
        let (g, e) = ex
            .iter()
            .enumerate()
            .find(|(_, e)| e.bad.is_some())
            .unwrap();
        let b = e.bad.as_ref().unwrap();
        assert_ne!(b.other_id, format!("gw-{g}"));
        assert_eq!(b.foreign_points.len(), 3);
    }
}
