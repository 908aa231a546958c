//! Translation of one revision from the previous one's parts.

use kite_xds::type_url;

use super::*;

const MESH: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: reviews}
spec:
  selector: {app: reviews}
  ports: [{name: http, port: 9080}]
---
apiVersion: v1
kind: Service
metadata: {name: ratings}
spec:
  selector: {app: ratings}
  ports: [{name: http, port: 9080}, {name: tcp, port: 3306}]
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: reviews-v1-a}
spec: {address: 127.9.0.2, labels: {app: reviews, version: v1}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: ratings-v1-a}
spec: {address: 127.9.0.3, labels: {app: ratings, version: v1}}
"#;

const REVIEWS_VS: &str = r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - match: [{headers: {end-user: {exact: jason}}}]
    route: [{destination: {host: reviews}}]
    timeout: 3s
  - route: [{destination: {host: ratings}}]
"#;

/// The translation tests' sidecar, as Kite's proxy or as Envoy.
fn sidecar(kite: bool) -> Proxy {
    Proxy {
        kite,
        ..translate::tests::proxy()
    }
}

/// What a proxy is sent, decoded, with its VHDS virtual hosts.
fn sent(snapshot: &Snapshot) -> Vec<String> {
    let mut out: Vec<String> = [type_url::CLUSTER, type_url::ENDPOINT, type_url::ROUTE]
        .into_iter()
        .flat_map(|t| {
            snapshot
                .resources(t)
                .into_iter()
                .map(|(n, a)| format!("{n} {a:?}"))
        })
        .collect();
    for v in snapshot.vhosts.values() {
        out.extend(v.decode_all().into_iter().map(|vh| format!("{vh:?}")));
    }
    out
}

#[test]
fn a_virtual_service_change_translates_just_its_hosts_to_what_a_whole_translation_makes() {
    let store = Store::default();
    store.apply_yaml(MESH);
    for kite in [true, false] {
        let proxy = sidecar(kite);
        let mut first = Translation::of(store.current(), None);
        let before = first.snapshot(&proxy, "cluster.local");
        let registry = first.registry.clone();

        // Added, changed, then deleted.
        let mut previous = first;
        for step in [REVIEWS_VS, &REVIEWS_VS.replace("3s", "5s"), ""] {
            if step.is_empty() {
                let key = store
                    .current()
                    .objects
                    .keys()
                    .find(|k| k.0 == "VirtualService")
                    .cloned()
                    .unwrap();
                store.delete(&[(*key).clone()]);
            } else {
                store.apply_yaml(step);
            }
            let config = store.current();
            let mut next = Translation::of(config.clone(), Some(previous));
            assert!(
                Arc::ptr_eq(&next.registry, &registry),
                "the registry is kept"
            );
            let patched = next.snapshot(&proxy, "cluster.local");
            let whole =
                translate::snapshot(&config, &Registry::build(&config), &proxy, "cluster.local");
            assert_eq!(sent(&patched), sent(&whole), "kite: {kite}, step {step}");
            assert_eq!(patched.vhosts.is_empty(), !kite);
            // (Later steps may compact the table, which wastes nothing.)
            if kite && step == REVIEWS_VS {
                assert!(
                    patched.vhosts["http_proxy"].wasted() > 0,
                    "patched, not translated whole"
                );
            }
            if !step.is_empty() {
                assert_ne!(sent(&patched), sent(&before));
            }
            previous = next;
        }
        assert_eq!(
            sent(&previous.snapshot(&proxy, "cluster.local")),
            sent(&before)
        );
    }
}

#[test]
fn route_views_share_the_virtual_hosts_they_encode_alike() {
    let store = Store::default();
    store.apply_yaml(MESH);
    // Most services are in neither proxy's namespace, as at scale.
    for name in ["a", "b", "c", "d", "e"] {
        store.apply_yaml(&format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: third}}\n\
             spec: {{ports: [{{name: http, port: 80}}]}}\n"
        ));
    }
    let elsewhere = Proxy {
        id: "sidecar~127.9.0.9~client.other~other.svc.cluster.local".into(),
        namespace: "other".into(),
        ..sidecar(true)
    };
    let mut translation = Translation::of(store.current(), None);
    let here = translation.snapshot(&sidecar(true), "cluster.local");
    let there = translation.snapshot(&elsewhere, "cluster.local");
    let (here, there) = (&here.vhosts["http_proxy"], &there.vhosts["http_proxy"]);
    assert!(there.shares_buffer_with(here));
    // Each as a translation of its own view alone makes it.
    let config = store.current();
    let registry = Registry::build(&config);
    for (proxy, table) in [(sidecar(true), here), (elsewhere, there)] {
        let alone = translate::snapshot(&config, &registry, &proxy, "cluster.local");
        assert_eq!(
            table.decode_all(),
            alone.vhosts["http_proxy"].decode_all(),
            "{}",
            proxy.namespace
        );
    }
    // Reached by short names in its own namespace only.
    assert!(here.resolve("reviews:9080").is_some());
    assert!(there.resolve("reviews:9080").is_none());
    assert!(there.resolve("reviews.default:9080").is_some());
}
