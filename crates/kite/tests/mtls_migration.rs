//! Istio's "Mutual TLS Migration" task (istio-api.md §3.11) on `kite up`:
//! httpbin and curl in namespaces foo and bar (sidecars injected), curl in
//! legacy (none); every pair talks; httpbin sees the caller's identity in
//! `x-forwarded-client-cert`; STRICT in foo shuts out legacy from foo only;
//! mesh-wide STRICT shuts it out everywhere while meshed pairs keep working.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::{
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use serde_json::Value;
use support::{Sidecar, get, sample, up::Up};

/// The address of the pod of `app` in `namespace`, once it runs.
async fn pod(up: &Up, namespace: &str, app: &str) -> IpAddr {
    up.pods(namespace, app, 1).await[0].1
}

/// A request from a curl pod: through its sidecar when it has one, else
/// straight to the httpbin pod's port as an app without a sidecar does.
async fn call(from: Option<IpAddr>, ns: &str, httpbin: IpAddr) -> Option<u16> {
    let attempt = async {
        match from {
            Some(sidecar) => {
                get(
                    SocketAddr::new(sidecar, 15001),
                    &format!("http://httpbin.{ns}:8000/ip"),
                    &[],
                )
                .await
            }
            None => get(SocketAddr::new(httpbin, 8080), "/ip", &[]).await,
        }
    };
    match tokio::time::timeout(Duration::from_secs(5), attempt).await {
        Ok(Ok(r)) => Some(r.status),
        _ => None,
    }
}

/// Polls until `call` gives `want` (None = no HTTP answer).
async fn expect(from: Option<IpAddr>, ns: &str, httpbin: IpAddr, want: Option<u16>, why: &str) {
    let mut got = None;
    for _ in 0..50 {
        got = call(from, ns, httpbin).await;
        if got == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{why}: wanted {want:?}, got {got:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_migration_with_kite_sidecars() {
    migration(
        Sidecar::Kite,
        24 + u8::try_from(std::process::id() % 3).unwrap() * 8,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_migration_with_envoy_sidecars() {
    migration(
        Sidecar::Envoy,
        28 + u8::try_from(std::process::id() % 3).unwrap() * 8,
    )
    .await;
}

async fn migration(sidecar: Sidecar, net: u8) {
    let up = Up::start("mtls-migration", sidecar, net, &[]).await;
    let namespaces = up.file(
        "namespaces",
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: foo, labels: {istio-injection: enabled}}\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: bar, labels: {istio-injection: enabled}}\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: legacy}\n",
    );
    up.kite(&["apply", "-f", &namespaces]);
    for ns in ["foo", "bar"] {
        up.kite(&[
            "apply",
            "-n",
            ns,
            "-f",
            &sample("httpbin/httpbin.yaml"),
            "-f",
            &sample("curl/curl.yaml"),
        ]);
    }
    up.kite(&["apply", "-n", "legacy", "-f", &sample("curl/curl.yaml")]);
    let httpbin = [
        ("foo", pod(&up, "foo", "httpbin").await),
        ("bar", pod(&up, "bar", "httpbin").await),
    ];
    let clients = [
        ("foo", Some(pod(&up, "foo", "curl").await)),
        ("bar", Some(pod(&up, "bar", "curl").await)),
        ("legacy", None),
    ];
    let log = std::fs::read_to_string(&up.proc.log).unwrap();
    assert!(
        log.contains("legacy/curl-") && log.contains("(no sidecar)"),
        "{log}"
    );

    // Every client reaches every httpbin (PERMISSIVE by default).
    for (from_ns, from) in clients {
        for (to_ns, ip) in httpbin {
            expect(
                from,
                to_ns,
                ip,
                Some(200),
                &format!("curl.{from_ns} → httpbin.{to_ns}"),
            )
            .await;
        }
    }
    // httpbin sees who called over mTLS.
    let r = get(
        SocketAddr::new(clients[0].1.unwrap(), 15001),
        "http://httpbin.foo:8000/headers",
        &[],
    )
    .await
    .unwrap();
    let body: Value = serde_json::from_slice(&r.body).unwrap();
    // Envoy adds Hash= and Subject= fields; both name the two identities.
    let xfcc = body["headers"]["X-Forwarded-Client-Cert"][0]
        .as_str()
        .unwrap_or_default();
    assert!(
        xfcc.contains("By=spiffe://cluster.local/ns/foo/sa/httpbin")
            && xfcc.contains("URI=spiffe://cluster.local/ns/foo/sa/curl"),
        "{sidecar:?}: {body:#}"
    );
    assert_eq!(
        body["headers"]["Host"][0], "httpbin.foo:8000",
        "the app sees the authority the caller used"
    );

    // STRICT in foo: legacy is shut out of foo only.
    let foo_strict = up.file(
        "foo-strict",
        "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: default, namespace: foo}\nspec:\n  mtls: {mode: STRICT}\n",
    );
    up.kite(&["apply", "-f", &foo_strict]);
    expect(
        None,
        "foo",
        httpbin[0].1,
        None,
        "legacy → httpbin.foo under STRICT in foo",
    )
    .await;
    expect(None, "bar", httpbin[1].1, Some(200), "legacy → httpbin.bar").await;
    for (from_ns, from) in &clients[..2] {
        expect(
            *from,
            "foo",
            httpbin[0].1,
            Some(200),
            &format!("curl.{from_ns} → httpbin.foo"),
        )
        .await;
    }
    // Mesh-wide STRICT: legacy reaches nothing; meshed pairs all work.
    let mesh_strict = up.file(
        "mesh-strict",
        "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: default, namespace: istio-system}\nspec:\n  mtls: {mode: STRICT}\n",
    );
    up.kite(&["apply", "-f", &mesh_strict]);
    expect(
        None,
        "bar",
        httpbin[1].1,
        None,
        "legacy → httpbin.bar under mesh-wide STRICT",
    )
    .await;
    for (from_ns, from) in &clients[..2] {
        for (to_ns, ip) in httpbin {
            expect(
                *from,
                to_ns,
                ip,
                Some(200),
                &format!("curl.{from_ns} → httpbin.{to_ns} (STRICT)"),
            )
            .await;
        }
    }
    // Removing the workloads stops their pods.
    up.kite(&["delete", "-n", "legacy", "-f", &sample("curl/curl.yaml")]);
    for _ in 0..100 {
        if std::fs::read_to_string(&up.proc.log)
            .unwrap_or_default()
            .contains("stopped pod legacy/curl-")
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        std::fs::read_to_string(&up.proc.log)
            .unwrap()
            .contains("stopped pod legacy/curl-")
    );
}
