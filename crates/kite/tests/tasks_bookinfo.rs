//! Istio's traffic-management tasks on BookInfo (istio-api.md §3.2, §3.3,
//! §3.5) on `kite up`, as the docs run them, once with Kite sidecars and
//! once with Envoy sidecars on Kite's control plane: fault injection,
//! weighted traffic shifting across every weight file, and request
//! timeouts with the per-request override.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use support::{
    Sidecar,
    bookinfo::{login, page, versions},
    get, sample,
    up::Up,
};

/// One mesh at a time: the shares and delays below are about routing, not
/// about two meshes contending for two cores.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn net(slot: u8) -> u8 {
    140 + u8::try_from(std::process::id() % 4).unwrap() * 12 + slot * 2
}

fn networking(file: &str) -> String {
    sample(&format!("bookinfo/networking/{file}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bookinfo_tasks_with_kite_sidecars() {
    let _serial = SERIAL.lock().await;
    bookinfo_tasks(Sidecar::Kite, net(0)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bookinfo_tasks_with_envoy_sidecars() {
    let _serial = SERIAL.lock().await;
    bookinfo_tasks(Sidecar::Envoy, net(1)).await;
}

async fn bookinfo_tasks(sidecar: Sidecar, net: u8) {
    let up = Up::start("tasks-bookinfo", sidecar, net, &[]).await;
    let gw = SocketAddr::new(up.gateway_ip, 8080);
    up.synced().await;
    fault_injection(&up, gw).await;
    traffic_shifting(&up, gw).await;
    request_timeouts(&up, gw).await;
}

/// §3.2: the jason delay shows the reviews error after productpage's two
/// 3 s attempts; the jason abort shows ratings unavailable; the details
/// abort gives 555 on the API route.
async fn fault_injection(up: &Up, gw: SocketAddr) {
    up.apply(&[
        &networking("virtual-service-all-v1.yaml"),
        &networking("virtual-service-reviews-test-v2.yaml"),
        &networking("virtual-service-ratings-test-delay.yaml"),
    ])
    .await;
    let jason = login(gw, "jason").await;
    let started = Instant::now();
    let text = page(gw, Some(&jason)).await;
    let took = started.elapsed();
    assert!(
        text.contains("Error fetching product reviews")
            && text.contains("Sorry, product reviews are currently unavailable for this book."),
        "jason's page under the 7 s ratings delay:\n{text}"
    );
    assert!(text.contains("Book Details"), "details still render");
    assert!(
        took >= Duration::from_secs(6),
        "productpage waits twice 3 s for reviews; the page came after {took:?}"
    );
    let anonymous = page(gw, None).await;
    assert!(
        !anonymous.contains("Error fetching product reviews")
            && anonymous.contains("Reviews served by: reviews-v1-"),
        "{anonymous}"
    );

    up.apply(&[&networking("virtual-service-ratings-test-abort.yaml")])
        .await;
    let text = page(gw, Some(&jason)).await;
    assert!(
        text.contains("Reviews served by: reviews-v2-")
            && text.contains("Ratings service is currently unavailable"),
        "jason's page under the ratings abort:\n{text}"
    );
    assert!(
        !page(gw, None)
            .await
            .contains("Ratings service is currently unavailable")
    );
    up.delete(&[&networking("virtual-service-ratings-test-abort.yaml")])
        .await;

    up.apply(&[&networking("fault-injection-details-v1.yaml")])
        .await;
    let text = page(gw, None).await;
    assert!(
        text.contains("Error fetching product details")
            && text.contains("Sorry, product details are currently unavailable for this book."),
        "{text}"
    );
    let api = get(gw, "/api/v1/products/0", &[]).await.unwrap();
    assert_eq!(api.status, 555, "{}", api.text());
    // A client sidecar calling details directly sees Envoy's abort body.
    let pp = up.pod("productpage").await;
    let direct = get(
        SocketAddr::new(pp, 15001),
        "http://details:9080/details/0",
        &[],
    )
    .await
    .unwrap();
    assert_eq!(
        (direct.status, direct.text().as_str()),
        (555, "fault filter abort")
    );
    up.delete(&[
        &networking("fault-injection-details-v1.yaml"),
        &networking("virtual-service-reviews-test-v2.yaml"),
    ])
    .await;
    // The details DestinationRule the fault file replaced comes back.
    up.apply(&[&networking("destination-rule-all.yaml")]).await;
}

/// The share of each reviews version over `n` anonymous page loads.
async fn shares(gw: SocketAddr, n: usize) -> [usize; 3] {
    versions(gw, None, n).await
}

/// §3.3: every weight file, statistically (binomial bounds of four standard
/// deviations over 200 loads: a false alarm in about 1 run in 10,000).
async fn traffic_shifting(up: &Up, gw: SocketAddr) {
    up.apply(&[&networking("virtual-service-all-v1.yaml")])
        .await;
    assert_eq!(shares(gw, 30).await, [30, 0, 0], "all-v1");
    for (file, check) in [
        (
            "virtual-service-reviews-50-v3.yaml",
            (|s: [usize; 3]| s[1] == 0 && (72..=128).contains(&s[2])) as fn([usize; 3]) -> bool,
        ),
        ("virtual-service-reviews-80-20.yaml", |s| {
            s[2] == 0 && (17..=63).contains(&s[1])
        }),
        ("virtual-service-reviews-90-10.yaml", |s| {
            s[2] == 0 && (3..=37).contains(&s[1])
        }),
        ("virtual-service-reviews-v2-v3.yaml", |s| {
            s[0] == 0 && (72..=128).contains(&s[2])
        }),
        ("virtual-service-reviews-v3.yaml", |s| s == [0, 0, 200]),
    ] {
        up.apply(&[&networking(file)]).await;
        let seen = shares(gw, 200).await;
        assert!(check(seen), "{file}: [v1, v2, v3] = {seen:?}");
    }
    // jason-v2-v3: jason on v2, everyone else on v3.
    up.apply(&[&networking("virtual-service-reviews-jason-v2-v3.yaml")])
        .await;
    let jason = login(gw, "jason").await;
    assert_eq!(versions(gw, Some(&jason), 10).await, [0, 10, 0]);
    assert_eq!(shares(gw, 10).await, [0, 0, 10]);
}

const REVIEWS_V2: &str = "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
spec:
  hosts:
  - reviews
  http:
  - route:
    - destination:
        host: reviews
        subset: v2
";

const RATINGS_DELAY_2S: &str = "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: ratings
spec:
  hosts:
  - ratings
  http:
  - fault:
      delay:
        percentage:
          value: 100
        fixedDelay: 2s
    route:
    - destination:
        host: ratings
        subset: v1
";

/// §3.5: ratings delayed 2 s makes the page slow but whole; a 0.5 s timeout
/// on reviews makes productpage give up (twice) and show the error; a
/// client sidecar calling reviews gets 504 `upstream request timeout`.
async fn request_timeouts(up: &Up, gw: SocketAddr) {
    up.apply(&[&networking("virtual-service-all-v1.yaml")])
        .await;
    let reviews = up.file("reviews-v2", REVIEWS_V2);
    let ratings = up.file("ratings-delay", RATINGS_DELAY_2S);
    up.apply(&[&reviews, &ratings]).await;
    let started = Instant::now();
    let text = page(gw, None).await;
    assert!(
        text.contains("Reviews served by: reviews-v2-") && text.contains("text-black-500"),
        "black stars after the delay:\n{text}"
    );
    // The delay happened (Envoy's timers may fire a hair early).
    assert!(started.elapsed() >= Duration::from_millis(1900));

    let with_timeout = up.file(
        "reviews-timeout",
        &format!("{REVIEWS_V2}    timeout: 0.5s\n"),
    );
    up.apply(&[&with_timeout]).await;
    let text = page(gw, None).await;
    assert!(
        text.contains("Sorry, product reviews are currently unavailable for this book."),
        "{text}"
    );
    let pp = SocketAddr::new(up.pod("productpage").await, 15001);
    let started = Instant::now();
    let direct = get(pp, "http://reviews:9080/reviews/0", &[]).await.unwrap();
    assert_eq!(
        (direct.status, direct.text().as_str()),
        (504, "upstream request timeout")
    );
    assert!(started.elapsed() >= Duration::from_millis(450));
    up.delete(&[&with_timeout, &ratings]).await;
}
