//! Istio's locality load balancing: per-client priorities by nearness and
//! failover region, or `distribute` weights, once outlier detection is on.

use envoy_types::pb::{
    envoy::config::{
        cluster::v3::Cluster,
        endpoint::v3::{ClusterLoadAssignment, LocalityLbEndpoints},
    },
    google::protobuf::UInt32Value,
};

use super::clusters::Policy;

/// Istio's locality load balancing for a client in `client`
/// (`region/zone/subzone`), active once outlier detection is configured:
/// a `distribute` rule for the client's locality weighs the localities;
/// otherwise each locality gets a priority by how near it is (same subzone,
/// zone, region, then the `failover` region, then the rest), so traffic
/// stays near and moves out as outlier detection ejects what is near.
pub(super) fn locality_lb(
    cla: &mut ClusterLoadAssignment,
    cluster: &mut Cluster,
    policy: &Policy,
    client: &str,
) {
    use envoy_types::pb::envoy::{
        config::cluster::v3::cluster::CommonLbConfig, r#type::v3::Percent,
    };
    let Some(outlier) = &policy.outlier_detection else {
        return;
    };
    // Istio's minHealthPercent (default 0: never balance over ejected hosts).
    let common = cluster
        .common_lb_config
        .get_or_insert_with(CommonLbConfig::default);
    common.healthy_panic_threshold = Some(Percent {
        value: f64::from(outlier.min_health_percent.unwrap_or(0).max(0)),
    });
    let setting = policy
        .load_balancer
        .as_ref()
        .and_then(|lb| lb.locality_lb_setting.as_ref());
    if client.is_empty() || setting.and_then(|s| s.enabled) == Some(false) {
        return;
    }
    let locality = |g: &LocalityLbEndpoints| {
        g.locality
            .as_ref()
            .map(|l| format!("{}/{}/{}", l.region, l.zone, l.sub_zone))
            .unwrap_or_default()
    };
    if let Some(rule) = setting.and_then(|s| {
        s.distribute
            .iter()
            .find(|d| locality_matches(&d.from, client))
    }) {
        let localities: Vec<String> = cla.endpoints.iter().map(locality).collect();
        for (group, loc) in cla.endpoints.iter_mut().zip(&localities) {
            // A `to` entry's share is split among the localities it matches.
            let weight = rule
                .to
                .iter()
                .find(|(pattern, _)| locality_matches(pattern, loc))
                .map_or(0, |(pattern, share)| {
                    let n = localities
                        .iter()
                        .filter(|l| locality_matches(pattern, l))
                        .count();
                    share * 1000 / u32::try_from(n.max(1)).unwrap_or(1)
                });
            group.load_balancing_weight = Some(UInt32Value { value: weight });
        }
        cla.endpoints.retain(|g| {
            g.load_balancing_weight
                .as_ref()
                .is_some_and(|w| w.value > 0)
        });
        common.locality_config_specifier = Some(
            envoy_types::pb::envoy::config::cluster::v3::cluster::common_lb_config::LocalityConfigSpecifier::LocalityWeightedLbConfig(Default::default()),
        );
        return;
    }
    let mine: Vec<&str> = client.splitn(3, '/').collect();
    let part = |i: usize| mine.get(i).copied().unwrap_or_default();
    let failover_to: Vec<&str> = setting
        .into_iter()
        .flat_map(|s| &s.failover)
        .filter(|f| f.from == part(0))
        .map(|f| f.to.as_str())
        .collect();
    let raw: Vec<u32> = cla
        .endpoints
        .iter()
        .map(|g| {
            let l = g.locality.clone().unwrap_or_default();
            match (
                l.region == part(0),
                l.zone == part(1),
                l.sub_zone == part(2),
            ) {
                (true, true, true) => 0,
                (true, true, false) => 1,
                (true, false, _) => 2,
                _ if failover_to.contains(&l.region.as_str()) => 3,
                _ => 4,
            }
        })
        .collect();
    // Envoy wants priorities numbered from 0 without gaps.
    let mut levels = raw.clone();
    levels.sort_unstable();
    levels.dedup();
    for (group, p) in cla.endpoints.iter_mut().zip(raw) {
        group.priority =
            u32::try_from(levels.iter().position(|l| *l == p).unwrap_or(0)).unwrap_or(0);
    }
}

/// Whether a locality pattern (`region/zone/subzone`, `*` for any part,
/// missing parts matching anything) admits `locality`.
fn locality_matches(pattern: &str, locality: &str) -> bool {
    let mut actual = locality.split('/');
    pattern.split('/').all(|p| {
        let a = actual.next().unwrap_or_default();
        p == "*" || p == a
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::Endpoint as RegistryEndpoint;
    use crate::translate::clusters::assignment;
    use envoy_types::pb::envoy::config::cluster::v3::Cluster;
    use kite_config::networking::TrafficPolicy;

    fn endpoint(locality: &str) -> RegistryEndpoint {
        RegistryEndpoint {
            address: "127.0.0.1".to_owned(),
            port: 80,
            locality: locality.to_owned(),
            weight: 1,
            labels: Default::default(),
            service_account: String::new(),
        }
    }

    fn policy(json: &str) -> Policy {
        let tp: TrafficPolicy = serde_json::from_str(json).unwrap();
        Policy {
            load_balancer: tp.load_balancer,
            connection_pool: tp.connection_pool,
            outlier_detection: tp.outlier_detection,
            tls: tp.tls,
            retry_budget: tp.retry_budget,
        }
    }

    /// (locality, priority, weight) of each group.
    fn groups(cla: &ClusterLoadAssignment) -> Vec<(String, u32, u32)> {
        cla.endpoints
            .iter()
            .map(|g| {
                let l = g.locality.clone().unwrap_or_default();
                (
                    format!("{}/{}", l.region, l.zone),
                    g.priority,
                    g.load_balancing_weight.as_ref().map_or(0, |w| w.value),
                )
            })
            .collect()
    }

    #[test]
    fn failover_priorities_by_nearness_then_failover_region() {
        let eps: Vec<_> = ["r1/z1", "r1/z2", "r2/z3", "r3/z4"].map(endpoint).into();
        let mut cla = assignment("c", &eps);
        let mut cluster = Cluster::default();
        let p = policy(
            r#"{"loadBalancer": {"localityLbSetting": {"failover": [{"from": "r1", "to": "r3"}]}}, "outlierDetection": {"consecutive5xxErrors": 1}}"#,
        );
        locality_lb(&mut cla, &mut cluster, &p, "r1/z1");
        let prio: Vec<(String, u32)> = groups(&cla).into_iter().map(|(l, p, _)| (l, p)).collect();
        assert_eq!(
            prio,
            [("r1/z1", 0), ("r1/z2", 1), ("r2/z3", 3), ("r3/z4", 2)]
                .map(|(l, p)| (l.to_owned(), p))
        );
        let panic = cluster
            .common_lb_config
            .unwrap()
            .healthy_panic_threshold
            .unwrap();
        assert_eq!(panic.value, 0.0, "Istio's minHealthPercent default");
    }

    #[test]
    fn no_outlier_detection_no_locality_preference() {
        let eps: Vec<_> = ["r1/z1", "r2/z3"].map(endpoint).into();
        let mut cla = assignment("c", &eps);
        let mut cluster = Cluster::default();
        locality_lb(&mut cla, &mut cluster, &Policy::default(), "r1/z1");
        assert!(groups(&cla).iter().all(|(_, p, _)| *p == 0));
        assert!(cluster.common_lb_config.is_none());
    }

    #[test]
    fn distribute_weighs_localities() {
        let eps: Vec<_> = ["r1/z1", "r1/z2", "r2/z3", "r3/z4"].map(endpoint).into();
        let mut cla = assignment("c", &eps);
        let mut cluster = Cluster::default();
        let p = policy(
            r#"{"loadBalancer": {"localityLbSetting": {"distribute": [{"from": "r1/z1/*", "to": {"r1/z1/*": 70, "r1/z2/*": 20, "r3/*": 10}}]}}, "outlierDetection": {"consecutive5xxErrors": 5}}"#,
        );
        locality_lb(&mut cla, &mut cluster, &p, "r1/z1");
        assert_eq!(
            groups(&cla),
            [
                ("r1/z1", 0, 70_000),
                ("r1/z2", 0, 20_000),
                ("r3/z4", 0, 10_000)
            ]
            .map(|(l, p, w)| (l.to_owned(), p, w))
        );
        assert!(locality_matches("r1/*", "r1/z9/s"));
        assert!(!locality_matches("r1/z1/*", "r1/z2/"));
    }
}
