//! Istio's locality load-balancing tasks (istio-api.md §3.8) on `kite up`,
//! with Kite sidecars and with Envoy sidecars: helloworld in four
//! localities (from each pod's `istio-locality` label), a client in
//! region1.zone1; failover follows nearness, then the `failover` region,
//! as outlier detection ejects what fails; `distribute` weighs localities.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::{
    collections::BTreeMap,
    net::{IpAddr, SocketAddr},
};

use support::{Sidecar, get, up::Up};

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn net(slot: u8) -> u8 {
    140 + u8::try_from(std::process::id() % 4).unwrap() * 12 + slot * 2
}

const LOCALITIES: [&str; 4] = [
    "region1.zone1",
    "region1.zone2",
    "region2.zone3",
    "region3.zone4",
];

/// The sample namespace, helloworld's Service, one helloworld Deployment
/// per locality (as the task's gen-helloworld.sh makes them) and the
/// client in region1.zone1.
fn workloads() -> String {
    let mut yaml = String::from(
        "apiVersion: v1
kind: Namespace
metadata:
  name: sample
  labels:
    istio-injection: enabled
---
apiVersion: v1
kind: Service
metadata:
  name: helloworld
  namespace: sample
  labels:
    app: helloworld
spec:
  ports:
  - port: 5000
    name: http
  selector:
    app: helloworld
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: curl
  namespace: sample
spec:
  replicas: 1
  selector:
    matchLabels:
      app: curl
  template:
    metadata:
      labels:
        app: curl
        istio-locality: region1.zone1
    spec:
      containers:
      - name: curl
        image: docker.io/curlimages/curl:8.16.0
        command: [\"/bin/sleep\", \"infinity\"]
",
    );
    for locality in LOCALITIES {
        let name = locality.replace('.', "-");
        yaml.push_str(&format!(
            "---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: helloworld-{name}
  namespace: sample
spec:
  replicas: 1
  selector:
    matchLabels:
      app: helloworld
      version: {locality}
  template:
    metadata:
      labels:
        app: helloworld
        version: {locality}
        istio-locality: {locality}
    spec:
      containers:
      - name: helloworld
        env:
        - name: SERVICE_VERSION
          value: {locality}
        image: docker.io/istio/examples-helloworld-v1
        ports:
        - containerPort: 5000
"
        ));
    }
    yaml
}

/// The task's DestinationRule, with `maxEjectionPercent: 100`: under the
/// default (10 %) Envoy ejects one host of the four at a time, and the task
/// fails three in turn.
const FAILOVER: &str = "apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: helloworld
  namespace: sample
spec:
  host: helloworld.sample.svc.cluster.local
  trafficPolicy:
    connectionPool:
      http:
        maxRequestsPerConnection: 1
    loadBalancer:
      simple: ROUND_ROBIN
      localityLbSetting:
        enabled: true
        failover:
          - from: region1
            to: region2
    outlierDetection:
      consecutive5xxErrors: 1
      interval: 1s
      baseEjectionTime: 1m
      maxEjectionPercent: 100
";

const DISTRIBUTE: &str = "apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: helloworld
  namespace: sample
spec:
  host: helloworld.sample.svc.cluster.local
  trafficPolicy:
    loadBalancer:
      localityLbSetting:
        enabled: true
        distribute:
        - from: region1/zone1/*
          to:
            \"region1/zone1/*\": 70
            \"region1/zone2/*\": 20
            \"region3/zone4/*\": 10
    outlierDetection:
      consecutive5xxErrors: 100
      interval: 1s
      baseEjectionTime: 1m
";

/// The locality named by one `/hello` answer, or the status on failure.
async fn hello(client: SocketAddr) -> Result<String, u16> {
    let r = get(client, "http://helloworld.sample:5000/hello", &[])
        .await
        .unwrap();
    if r.status != 200 {
        return Err(r.status);
    }
    let text = r.text();
    Ok(text
        .strip_prefix("Hello version: ")
        .and_then(|t| t.split(',').next())
        .unwrap_or_else(|| panic!("unexpected answer {text:?}"))
        .to_owned())
}

/// `n` answers, counted by locality.
async fn answers(client: SocketAddr, n: usize) -> BTreeMap<String, usize> {
    let mut seen = BTreeMap::new();
    for _ in 0..n {
        let key = match hello(client).await {
            Ok(locality) => locality,
            Err(status) => format!("HTTP {status}"),
        };
        *seen.entry(key).or_insert(0) += 1;
    }
    seen
}

/// Stops the app of the helloworld pod in `locality` (its sidecar stays,
/// answering 503), as the task drains that instance.
fn fail(pods: &[(String, IpAddr)], locality: &str) {
    let prefix = format!("helloworld-{}-", locality.replace('.', "-"));
    let (_, ip) = pods.iter().find(|(n, _)| n.starts_with(&prefix)).unwrap();
    let IpAddr::V4(v4) = ip else { unreachable!() };
    let [a, b, c, d] = v4.octets();
    let app = IpAddr::from([a, b + 1, c, d]);
    let pattern = format!("--listen {app}:5000");
    let status = std::process::Command::new("pkill")
        .args(["-f", "--", &pattern])
        .status()
        .unwrap();
    assert!(status.success(), "no app for {locality}");
    // pkill only signals: until the app has exited it may still answer.
    for _ in 0..100 {
        let alive = std::process::Command::new("pgrep")
            .args(["-f", "--", &pattern])
            .stdout(std::process::Stdio::null())
            .status()
            .unwrap();
        if !alive.success() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    panic!("the app for {locality} did not exit");
}

/// Once outlier detection has ejected what failed (a few failures at most
/// while the ejection takes effect), every answer comes from `locality`,
/// and none ever from a locality farther than it.
async fn settles_on(client: SocketAddr, locality: &str) {
    let mut failures = 0;
    loop {
        match hello(client).await {
            Ok(l) if l == locality => break,
            Ok(other) => panic!("on the way to {locality}, {other} answered"),
            Err(_) => failures += 1,
        }
        assert!(failures < 20, "{locality} never answered");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let seen = answers(client, 10).await;
    assert_eq!(
        seen,
        BTreeMap::from([(locality.to_owned(), 10)]),
        "after the failure everything should go to {locality}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locality_with_kite_sidecars() {
    let _serial = SERIAL.lock().await;
    locality(Sidecar::Kite, net(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locality_with_envoy_sidecars() {
    let _serial = SERIAL.lock().await;
    locality(Sidecar::Envoy, net(6)).await;
}

async fn locality(sidecar: Sidecar, net: u8) {
    let dir = std::env::temp_dir().join(format!("kite-locality-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let manifests = dir.join(format!("{sidecar:?}.yaml"));
    std::fs::write(&manifests, workloads()).unwrap();
    let up = Up::start(
        "tasks-locality",
        sidecar,
        net,
        &[manifests.to_str().unwrap()],
    )
    .await;
    let _ = std::fs::remove_file(&manifests);
    let pods = up.pods("sample", "helloworld", 4).await;
    let client = SocketAddr::new(up.pods("sample", "curl", 1).await[0].1, 15001);
    up.synced().await;

    // Without outlier detection locality does not count: every locality answers.
    let spread = answers(client, 40).await;
    assert_eq!(spread.len(), 4, "{spread:?}");

    // distribute: 70 / 20 / 10 from region1.zone1, nothing to region2.
    let distribute = up.file("distribute", DISTRIBUTE);
    up.apply(&[&distribute]).await;
    let seen = answers(client, 200).await;
    let share = |l: &str| seen.get(l).copied().unwrap_or(0);
    assert!(
        (112..=168).contains(&share("region1.zone1"))
            && (17..=63).contains(&share("region1.zone2"))
            && (3..=37).contains(&share("region3.zone4"))
            && share("region2.zone3") == 0,
        "70/20/10 over 200 requests: {seen:?}"
    );

    // failover: nearest first; region2 before region3 once region1 fails.
    let failover = up.file("failover", FAILOVER);
    up.apply(&[&failover]).await;
    assert_eq!(
        answers(client, 10).await,
        BTreeMap::from([("region1.zone1".to_owned(), 10)])
    );
    fail(&pods, "region1.zone1");
    settles_on(client, "region1.zone2").await;
    fail(&pods, "region1.zone2");
    settles_on(client, "region2.zone3").await;
    fail(&pods, "region2.zone3");
    settles_on(client, "region3.zone4").await;
}
