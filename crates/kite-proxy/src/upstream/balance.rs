//! Envoy's balancing over priorities and localities: how much load each
//! priority level takes given its health, and a locality by its weight.

use crate::config::Endpoint;

/// Envoy's overprovisioning factor: a level at 72 % health still takes all
/// of its load.
const OVERPROVISIONING: f64 = 1.4;

/// The share of a group's load it can take: its healthy fraction,
/// overprovisioned, at most 1.
fn availability(healthy: usize, total: usize) -> f64 {
    if total == 0 {
        return 0.0;
    }
    (OVERPROVISIONING * healthy as f64 / total as f64).min(1.0)
}

/// Envoy's priority load: the first priority takes what its health allows,
/// the next the rest of it, and so on; normalised when the levels together
/// are not healthy enough to carry everything. Picks one level by load.
pub(super) fn pick_priority(all: &[Endpoint], healthy: &[&Endpoint]) -> u32 {
    let mut levels: Vec<u32> = all.iter().map(|e| e.priority).collect();
    levels.sort_unstable();
    levels.dedup();
    if levels.len() < 2 {
        return levels.first().copied().unwrap_or(0);
    }
    let health: Vec<f64> = levels
        .iter()
        .map(|p| {
            availability(
                healthy.iter().filter(|e| e.priority == *p).count(),
                all.iter().filter(|e| e.priority == *p).count(),
            )
        })
        .collect();
    let sum: f64 = health.iter().sum();
    let mut loads = Vec::with_capacity(levels.len());
    let mut remaining = 1.0f64;
    for h in &health {
        let share = if sum < 1.0 {
            h / sum.max(f64::EPSILON)
        } else {
            h.min(remaining)
        };
        remaining = (remaining - share).max(0.0);
        loads.push(share);
    }
    let mut at = fastrand::f64() * loads.iter().sum::<f64>();
    for (p, load) in levels.iter().zip(&loads) {
        if at < *load {
            return *p;
        }
        at -= load;
    }
    levels[0]
}

/// Locality-weighted balancing: a locality by its weight times its
/// availability, then the hosts in it.
pub(super) fn pick_locality<'a>(all: &[Endpoint], pool: Vec<&'a Endpoint>) -> Vec<&'a Endpoint> {
    let mut localities: Vec<(&str, f64)> = Vec::new();
    for e in &pool {
        if localities.iter().any(|(l, _)| *l == e.locality) {
            continue;
        }
        let healthy = pool.iter().filter(|h| h.locality == e.locality).count();
        let total = all
            .iter()
            .filter(|a| a.locality == e.locality && a.priority == e.priority)
            .count();
        localities.push((
            e.locality.as_str(),
            f64::from(e.locality_weight) * availability(healthy, total),
        ));
    }
    let total: f64 = localities.iter().map(|(_, w)| w).sum();
    if total <= 0.0 {
        return pool;
    }
    let mut at = fastrand::f64() * total;
    let mut chosen = localities[0].0;
    for (l, w) in &localities {
        if at < *w {
            chosen = l;
            break;
        }
        at -= w;
    }
    let chosen = chosen.to_owned();
    pool.into_iter().filter(|e| e.locality == chosen).collect()
}
