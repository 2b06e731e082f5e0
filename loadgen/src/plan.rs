//! Which gateways and points a run simulates, chosen from the registry.

use firewatch::registry::Registry;
use firewatch_proto::RoomType;
use std::collections::BTreeMap;
use std::time::Duration;

/// Heartbeat interval of a device class the engine's defaults do not name.
const DEFAULT_INTERVAL_SECS: f64 = 60.0;

/// One simulated point and what the scenarios need to know about it.
#[derive(Debug, Clone, Copy)]
pub struct PointPlan {
    /// Registry point id.
    pub id: u64,
    /// Heartbeat interval of its device class, seconds.
    pub hb_interval_secs: f64,
    /// Room type (kitchens and studios are nuisance candidates).
    pub room_type: RoomType,
    /// House id.
    pub house: u32,
    /// Village id.
    pub village: u32,
}

/// One simulated gateway: its id and the points it reports.
#[derive(Debug, Clone)]
pub struct GatewayPlan {
    /// Gateway id (MQTT username and client id).
    pub id: String,
    /// Points of the gateway in use (never empty).
    pub points: Vec<PointPlan>,
}

/// Heartbeat intervals by device class name: the engine's defaults
/// (`pipeline.device_classes`).
pub fn default_intervals() -> BTreeMap<String, Duration> {
    firewatch::config::Config::default()
        .pipeline
        .device_classes
        .into_iter()
        .map(|(k, v)| (k, v.heartbeat_interval))
        .collect()
}

/// The first `gateways` gateways of the registry, with at most `points` points in all,
/// shared out in proportion to each gateway's size. Gateways left with no point are dropped.
pub fn select(
    registry: &Registry,
    gateways: Option<usize>,
    points: Option<usize>,
) -> Vec<GatewayPlan> {
    let count = gateways.unwrap_or(usize::MAX).min(registry.gateway_count());
    let intervals = default_intervals();
    let class_secs: Vec<f64> = registry
        .device_classes()
        .iter()
        .map(|c| {
            intervals
                .get(c)
                .map_or(DEFAULT_INTERVAL_SECS, |d| d.as_secs_f64())
        })
        .collect();
    let all: Vec<(String, Vec<PointPlan>)> = (0..count as u32)
        .map(|g| {
            let pts = registry
                .gateway_points(g)
                .iter()
                .map(|&idx| {
                    let info = registry.info(idx);
                    PointPlan {
                        id: registry.point_id(idx),
                        hb_interval_secs: class_secs
                            .get(info.class as usize)
                            .copied()
                            .unwrap_or(DEFAULT_INTERVAL_SECS),
                        room_type: info.room_type,
                        house: info.house,
                        village: info.village,
                    }
                })
                .collect();
            (registry.gateway_id(g).to_string(), pts)
        })
        .collect();
    let total: usize = all.iter().map(|(_, p)| p.len()).sum();
    let cap = points.unwrap_or(total).min(total);
    let quotas = quotas(&all.iter().map(|(_, p)| p.len()).collect::<Vec<_>>(), cap);
    all.into_iter()
        .zip(quotas)
        .filter(|(_, q)| *q > 0)
        .map(|((id, mut pts), q)| {
            pts.truncate(q);
            GatewayPlan { id, points: pts }
        })
        .collect()
}

/// Splits `cap` over groups of the given sizes in proportion (largest remainder first by
/// order), never giving a group more than its size.
fn quotas(sizes: &[usize], cap: usize) -> Vec<usize> {
    let total: usize = sizes.iter().sum();
    if total == 0 {
        return vec![0; sizes.len()];
    }
    let cap = cap.min(total);
    let mut q: Vec<usize> = sizes
        .iter()
        .map(|&s| (s as u128 * cap as u128 / total as u128) as usize)
        .collect();
    let mut left = cap - q.iter().sum::<usize>();
    while left > 0 {
        let mut gave = false;
        for (qi, &s) in q.iter_mut().zip(sizes) {
            if left > 0 && *qi < s {
                *qi += 1;
                left -= 1;
                gave = true;
            }
        }
        if !gave {
            break;
        }
    }
    q
}

#[cfg(test)]
mod tests {
    use super::quotas;

    #[test]
    fn quotas_are_proportional_and_exact() {
        assert_eq!(quotas(&[10, 10, 10], 30), vec![10, 10, 10]);
        assert_eq!(quotas(&[10, 10, 10], 3), vec![1, 1, 1]);
        assert_eq!(quotas(&[10, 10, 10], 4), vec![2, 1, 1]);
        assert_eq!(quotas(&[1, 100], 10).iter().sum::<usize>(), 10);
        assert_eq!(quotas(&[2, 2], 10), vec![2, 2]);
        assert_eq!(quotas(&[], 5), Vec::<usize>::new());
    }
}
