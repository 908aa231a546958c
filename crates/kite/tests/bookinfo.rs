//! End-to-end tests of `kite bookinfo` against docs/bookinfo-wire.md: real
//! service processes on loopback, observed through a recording forward proxy
//! and stand-in back-ends.

// The helpers below are not `#[test]` functions, so `allow-unwrap-in-tests`
// does not reach them; panicking is exactly how they should fail.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::handshake;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{HeaderMap, Request, Response, Uri};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Mutex;

type Env = Vec<(String, String)>;

const DETAILS_SORRY: &str = "Sorry, product details are currently unavailable for this book.";
const REVIEWS_SORRY: &str = "Sorry, product reviews are currently unavailable for this book.";
const RATINGS_DOWN: &str = "Ratings service is currently unavailable";

static NEXT_HOST: AtomicU32 = AtomicU32::new(1);

/// Every listener gets a loopback address of its own (127.128.0.0/9, keyed by
/// pid), so parallel tests and concurrent test binaries never race for ports
/// and a "down" address is guaranteed to have nothing behind it.
fn next_ip() -> IpAddr {
    let n = NEXT_HOST.fetch_add(1, Ordering::Relaxed);
    assert!(n < 255, "out of loopback addresses");
    let pid = std::process::id() & 0x7fff;
    IpAddr::V4(Ipv4Addr::from(0x7f80_0000 | (pid << 8) | n))
}

fn kv(pairs: &[(&str, &str)]) -> Env {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn peer(prefix: &str, addr: SocketAddr) -> Env {
    vec![
        (format!("{prefix}_HOSTNAME"), addr.ip().to_string()),
        (format!("{prefix}_SERVICE_PORT"), addr.port().to_string()),
    ]
}

struct Service {
    name: String,
    addr: SocketAddr,
    child: Child,
    log: PathBuf,
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            eprintln!("----- {} {}:\n{log}", self.name, self.log.display());
        } else {
            let _ = std::fs::remove_file(&self.log);
        }
    }
}

async fn spawn(name: &str, version: &str, env: Env) -> Service {
    let ip = next_ip();
    let probe = std::net::TcpListener::bind((ip, 0)).unwrap();
    let addr = SocketAddr::new(ip, probe.local_addr().unwrap().port());
    drop(probe);
    let pid = std::process::id();
    let log = std::env::temp_dir().join(format!("kite-test-{pid}-{ip}-{name}.log"));
    let file = std::fs::File::create(&log).unwrap();
    let listen = addr.to_string();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kite"));
    cmd.args(["bookinfo", name, "--version", version, "--listen", &listen]);
    // A clean environment: the runner's own HTTP_PROXY, HOSTNAME or
    // CLUSTER_NAME would otherwise leak into the services.
    cmd.env_clear().envs(env).env("NO_COLOR", "1");
    cmd.stdin(Stdio::null())
        .stdout(file.try_clone().unwrap())
        .stderr(file);
    if let Ok(filter) = std::env::var("RUST_LOG") {
        cmd.env("RUST_LOG", filter);
    }
    let child = cmd.spawn().unwrap();
    let mut service = Service {
        name: name.to_owned(),
        addr,
        child,
        log,
    };
    for _ in 0..200 {
        if let Ok(resp) = try_send(addr, "GET", "/health", &[], "").await
            && resp.status == 200
        {
            return service;
        }
        if let Some(status) = service.child.try_wait().unwrap() {
            panic!("{name} on {addr} exited with {status}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{name} on {addr} never became healthy");
}

async fn start_reviews(version: &str, ratings: SocketAddr, extra: Env) -> Service {
    let host = format!("reviews-{version}-test-abc");
    let env = [kv(&[("HOSTNAME", &host)]), peer("RATINGS", ratings), extra].concat();
    spawn("reviews", version, env).await
}

/// `backends` are the details, reviews and ratings addresses, in that order.
async fn start_productpage(backends: [SocketAddr; 3], extra: Env) -> Service {
    let names = ["DETAILS", "REVIEWS", "RATINGS"];
    let env = names
        .into_iter()
        .zip(backends)
        .flat_map(|(n, a)| peer(n, a));
    spawn("productpage", "v1", env.chain(extra).collect()).await
}

/// The full healthy topology with one reviews version.
struct Stack {
    pp: Service,
    reviews: Service,
    details: Service,
    _ratings: Service,
}

impl Stack {
    async fn start(version: &str, proxy: Option<&Proxy>, reviews_env: &[(&str, &str)]) -> Self {
        let via = proxy.map(Proxy::env).unwrap_or_default();
        let ratings = spawn("ratings", "v1", Env::new()).await;
        let details = spawn("details", "v1", Env::new()).await;
        let env = [kv(reviews_env), via.clone()].concat();
        let reviews = start_reviews(version, ratings.addr, env).await;
        let pp = start_productpage([details.addr, reviews.addr, ratings.addr], via).await;
        Self {
            pp,
            reviews,
            details,
            _ratings: ratings,
        }
    }
}

struct Resp {
    status: u16,
    headers: HeaderMap,
    body: Bytes,
}

impl Resp {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    fn header(&self, name: &str) -> Option<&str> {
        hv(&self.headers, name)
    }

    fn session_cookie(&self) -> String {
        let cookie = self
            .headers
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find(|v| v.starts_with("session="))
            .unwrap_or_else(|| panic!("no session cookie in {:?}", self.headers));
        cookie.split(';').next().unwrap().to_owned()
    }
}

fn hv<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

async fn try_send(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> anyhow::Result<Resp> {
    let exchange = async {
        let stream = TcpStream::connect(addr).await?;
        let (mut sender, conn) = handshake(TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        let mut req = Request::builder().method(method).uri(path);
        req = req.header("host", addr.to_string());
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        let req = req.body(Full::new(Bytes::from(body.to_owned())))?;
        let (parts, body) = sender.send_request(req).await?.into_parts();
        let body = body.collect().await?.to_bytes();
        let status = parts.status.as_u16();
        Ok(Resp {
            status,
            headers: parts.headers,
            body,
        })
    };
    // Only a guard against hanging forever; the slowest legitimate exchange
    // (two reviews timeouts) is far below it.
    tokio::time::timeout(Duration::from_secs(60), exchange).await?
}

async fn send(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Resp {
    try_send(addr, method, path, headers, body)
        .await
        .unwrap_or_else(|e| panic!("{method} http://{addr}{path}: {e}"))
}

async fn get(addr: SocketAddr, path: &str) -> Resp {
    send(addr, "GET", path, &[], "").await
}

async fn page(addr: SocketAddr, headers: &[(&str, &str)]) -> String {
    let resp = send(addr, "GET", "/productpage", headers, "").await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    resp.text()
}

fn assert_has(html: &str, needles: &[&str]) {
    for needle in needles {
        assert!(html.contains(needle), "missing {needle:?} in:\n{html}");
    }
}

fn assert_lacks(html: &str, needles: &[&str]) {
    for needle in needles {
        assert!(!html.contains(needle), "unexpected {needle:?} in:\n{html}");
    }
}

/// The first word after "Reviews served by:", skipping whitespace and tags.
fn served_by(html: &str) -> String {
    let (_, rest) = html
        .split_once("Reviews served by:")
        .unwrap_or_else(|| panic!("no 'Reviews served by:' in:\n{html}"));
    let mut rest = rest.trim_start();
    while let Some(tag) = rest.strip_prefix('<') {
        rest = tag.split_once('>').map_or("", |(_, r)| r).trim_start();
    }
    rest.chars()
        .take_while(|c| !c.is_whitespace() && *c != '<')
        .collect()
}

fn serve<F, Fut>(listener: TcpListener, handler: F)
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let handler = handler.clone();
            let service = service_fn(move |req| {
                let fut = handler(req);
                async move { Ok::<_, Infallible>(fut.await) }
            });
            let io = TokioIo::new(stream);
            tokio::spawn(http1::Builder::new().serve_connection(io, service));
        }
    });
}

fn plain(status: u16, body: &'static str) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .unwrap()
}

#[derive(Clone, Debug)]
struct Seen {
    uri: Uri,
    headers: HeaderMap,
}

/// Forward proxy that records every request the apps send through it.
struct Proxy {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Proxy {
    async fn start() -> Self {
        let listener = TcpListener::bind((next_ip(), 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        serve(listener, move |req| forward(req, log.clone()));
        Self { addr, seen }
    }

    fn env(&self) -> Env {
        kv(&[("HTTP_PROXY", &format!("http://{}", self.addr))])
    }

    async fn mark(&self) -> usize {
        self.seen.lock().await.len()
    }

    async fn since(&self, mark: usize, path_prefix: &str) -> Vec<Seen> {
        let seen = self.seen.lock().await;
        seen[mark..]
            .iter()
            .filter(|s| s.uri.path().starts_with(path_prefix))
            .cloned()
            .collect()
    }

    async fn one(&self, mark: usize, path_prefix: &str) -> Seen {
        let mut calls = self.since(mark, path_prefix).await;
        let n = calls.len();
        assert_eq!(
            n, 1,
            "expected one {path_prefix} request via the proxy: {calls:#?}"
        );
        calls.remove(0)
    }
}

async fn forward(req: Request<Incoming>, seen: Arc<Mutex<Vec<Seen>>>) -> Response<Full<Bytes>> {
    let (mut parts, body) = req.into_parts();
    seen.lock().await.push(Seen {
        uri: parts.uri.clone(),
        headers: parts.headers.clone(),
    });
    let body = body_bytes(body).await;
    let Some(authority) = parts.uri.authority().cloned() else {
        return plain(400, "absolute-form request expected");
    };
    let Ok(stream) = TcpStream::connect(authority.as_str()).await else {
        return plain(502, "upstream unreachable");
    };
    let origin_form = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    parts.uri = origin_form.parse().unwrap();
    parts.headers.remove("proxy-connection");
    let Ok((mut sender, conn)) = handshake(TokioIo::new(stream)).await else {
        return plain(502, "upstream handshake failed");
    };
    tokio::spawn(conn);
    let request = Request::from_parts(parts, Full::new(body));
    let Ok(resp) = sender.send_request(request).await else {
        return plain(502, "upstream failed");
    };
    let (mut parts, body) = resp.into_parts();
    let body = body_bytes(body).await;
    for name in ["connection", "transfer-encoding", "content-length"] {
        parts.headers.remove(name);
    }
    Response::from_parts(parts, Full::new(body))
}

async fn body_bytes(body: Incoming) -> Bytes {
    body.collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default()
}

fn down_addr() -> SocketAddr {
    SocketAddr::new(next_ip(), 9080)
}

/// Accepts, reads, never answers: a back-end slower than any client timeout.
async fn silent_backend() -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind((next_ip(), 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let count = Arc::new(AtomicUsize::new(0));
    let counter = count.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let hold = async {
                    while let Ok(n) = stream.read(&mut buf).await {
                        if n == 0 {
                            break;
                        }
                    }
                    std::future::pending::<()>().await;
                };
                let _ = tokio::time::timeout(Duration::from_secs(30), hold).await;
            });
        }
    });
    (addr, count)
}

async fn status_backend(status: u16) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind((next_ip(), 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let count = Arc::new(AtomicUsize::new(0));
    let counter = count.clone();
    serve(listener, move |_req| {
        counter.fetch_add(1, Ordering::SeqCst);
        async move { plain(status, r#"{"error":"stand-in failure"}"#) }
    });
    (addr, count)
}

// ---------------------------------------------------------------- pages

const PAGE_MARKERS: [&str; 10] = [
    "<title>Simple Bookstore App</title>",
    "The Comedy of Errors",
    "Book Details",
    "1234567890",
    "PublisherA",
    "paperback",
    "English",
    "Book Reviews",
    "Reviewer1",
    "Reviewer2",
];

async fn check_page(version: &str) {
    let stack = Stack::start(version, None, &[]).await;
    let html = page(stack.pp.addr, &[]).await;
    assert_has(&html, &PAGE_MARKERS);
    assert_eq!(served_by(&html), format!("reviews-{version}-test-abc"));
    if version == "v1" {
        assert_lacks(&html, &["glyphicon-star", "gap-x-1 text-"]);
        return;
    }
    let (color, other) = if version == "v2" {
        ("black", "red")
    } else {
        ("red", "black")
    };
    assert_has(&html, &[&format!("gap-x-1 text-{color}-500")]);
    assert_lacks(&html, &[&format!("gap-x-1 text-{other}-500")]);
    let filled = html.matches(r#"id="glyphicon glyphicon-star""#).count();
    let empty = html
        .matches(r#"id="glyphicon glyphicon-star-empty""#)
        .count();
    assert_eq!((filled, empty), (9, 1), "{html}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn page_with_reviews_v1() {
    check_page("v1").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn page_with_reviews_v2() {
    check_page("v2").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn page_with_reviews_v3() {
    check_page("v3").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn page_shows_cluster_name() {
    let stack = Stack::start("v1", None, &[("CLUSTER_NAME", "east")]).await;
    assert_has(&page(stack.pp.addr, &[]).await, &["on cluster east"]);
    let reviews = get(stack.pp.addr, "/api/v1/products/0/reviews").await;
    assert_eq!(reviews.json()["clustername"], "east");
}

// ---------------------------------------------------------------- login

fn assert_signed_out(html: &str) {
    assert_has(html, &["Sign in"]);
    assert_lacks(html, &["Sign out"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_session_and_end_user() {
    let proxy = Proxy::start().await;
    let stack = Stack::start("v2", Some(&proxy), &[]).await;
    let pp = stack.pp.addr;
    let referer = format!("http://{pp}/productpage");
    let form = [
        ("content-type", "application/x-www-form-urlencoded"),
        ("referer", referer.as_str()),
    ];
    let login = send(pp, "POST", "/login", &form, "username=jason&passwd=x").await;
    assert_eq!(login.status, 302, "{}", login.text());
    assert_eq!(login.header("location"), Some(referer.as_str()));
    let cookie = login.session_cookie();
    assert!(cookie.len() > "session=".len() + 10, "{cookie}");

    let mark = proxy.mark().await;
    assert_has(
        &page(pp, &[("cookie", &cookie)]).await,
        &["jason", "Sign out"],
    );
    for hop in ["/details/", "/reviews/", "/ratings/"] {
        let call = proxy.one(mark, hop).await;
        expect_headers(&call.headers, &[("end-user", Some("jason"))], hop);
    }

    let mark = proxy.mark().await;
    assert_signed_out(&page(pp, &[("end-user", "jason")]).await);
    for hop in ["/reviews/", "/ratings/"] {
        let call = proxy.one(mark, hop).await;
        expect_headers(&call.headers, &[("end-user", None)], hop);
    }

    // Flip a character near the end, inside the signature but away from the
    // last base64 digit, whose low bits a lenient decoder may ignore.
    let mut tampered: Vec<char> = cookie.chars().collect();
    let i = tampered.len() - 5;
    tampered[i] = if tampered[i] == 'A' { 'B' } else { 'A' };
    let tampered: String = tampered.into_iter().collect();
    assert_signed_out(&page(pp, &[("cookie", &tampered)]).await);

    let headers = [("cookie", cookie.as_str()), ("referer", referer.as_str())];
    let logout = send(pp, "GET", "/logout", &headers, "").await;
    assert_eq!(logout.status, 302, "{}", logout.text());
    assert_eq!(logout.header("location"), Some(referer.as_str()));
    let cleared = logout.session_cookie();
    assert_signed_out(&page(pp, &[("cookie", &cleared)]).await);
}

// ---------------------------------------------------------------- routes

async fn get_json(addr: SocketAddr, path: &str, status: u16) -> Value {
    let resp = get(addr, path).await;
    assert_eq!(resp.status, status, "GET {path}: {}", resp.text());
    resp.json()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn productpage_api_and_static_routes() {
    let stack = Stack::start("v2", None, &[]).await;
    let pp = stack.pp.addr;

    let products = get_json(pp, "/api/v1/products", 200).await;
    assert_eq!(products[0]["id"], 0, "{products}");
    assert_eq!(products[0]["title"], "The Comedy of Errors", "{products}");

    let details = get_json(pp, "/api/v1/products/0", 200).await;
    for key in ["id", "type", "publisher", "language", "ISBN-10", "ISBN-13"] {
        assert!(details.get(key).is_some(), "no {key} in {details}");
    }
    let summary = (&details["author"], &details["year"], &details["pages"]);
    assert_eq!(
        summary,
        (&json!("William Shakespeare"), &json!(1595), &json!(200))
    );

    let reviews = get_json(pp, "/api/v1/products/0/reviews", 200).await;
    assert_eq!(reviews["id"], "0", "{reviews}");
    assert_eq!(reviews["podname"], "reviews-v2-test-abc", "{reviews}");
    assert_eq!(reviews["clustername"], "null", "{reviews}");
    assert_eq!(
        reviews["reviews"].as_array().map(Vec::len),
        Some(2),
        "{reviews}"
    );

    let ratings = get_json(pp, "/api/v1/products/0/ratings", 200).await;
    assert_eq!(
        ratings,
        json!({"id": 0, "ratings": {"Reviewer1": 5, "Reviewer2": 4}})
    );

    let health = get(pp, "/health").await;
    assert_eq!(
        (health.status, health.text().trim()),
        (200, "Product page is healthy")
    );
    assert_eq!(get(pp, "/no/such/page").await.status, 404);

    let css = get(pp, "/static/tailwind/tailwind.css").await;
    assert_eq!(css.status, 200);
    let css_type = css.header("content-type").unwrap_or_default();
    assert!(css_type.starts_with("text/css"), "{css_type}");
    let png = get(pp, "/static/img/izzy.png").await;
    assert_eq!(
        (png.status, png.header("content-type")),
        (200, Some("image/png"))
    );
    assert!(png.body.starts_with(b"\x89PNG\r\n\x1a\n"));

    page(pp, &[]).await;
    let metrics = get(pp, "/metrics").await;
    assert_eq!(metrics.status, 200);
    let counter = r#"request_result_total{destination_app="details",response_code="200"}"#;
    assert_has(&metrics.text(), &[counter]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn details_reviews_ratings_routes() {
    let details = spawn("details", "v1", Env::new()).await;
    let ratings = spawn("ratings", "v1", Env::new()).await;
    let reviews = start_reviews("v1", ratings.addr, Env::new()).await;

    let book = get(details.addr, "/details/0").await;
    assert_eq!(book.status, 200);
    assert_eq!(
        book.text(),
        r#"{"id":0,"author":"William Shakespeare","year":1595,"type":"paperback","pages":200,"publisher":"PublisherA","language":"English","ISBN-10":"1234567890","ISBN-13":"123-1234567890"}"#
    );
    let bad_id = json!({"error": "please provide numeric product id"});
    assert_eq!(get_json(details.addr, "/details/abc", 400).await, bad_id);
    assert_eq!(get_json(details.addr, "/details", 400).await, bad_id);
    let healthy = json!({"status": "Details is healthy"});
    assert_eq!(get_json(details.addr, "/health", 200).await, healthy);

    assert_eq!(get(reviews.addr, "/reviews/abc").await.status, 404);
    assert_eq!(get(reviews.addr, "/health").await.status, 200);

    let bad_id = json!({"error": "please provide numeric product ID"});
    assert_eq!(get_json(ratings.addr, "/ratings/abc", 400).await, bad_id);
    let body = r#"{"Reviewer1":1,"Reviewer2":2}"#;
    let ct = [("content-type", "application/json")];
    let posted = send(ratings.addr, "POST", "/ratings/7", &ct, body).await;
    let stored = json!({"id": 7, "ratings": {"Reviewer1": 1, "Reviewer2": 2}});
    assert_eq!((posted.status, posted.json()), (200, stored.clone()));
    assert_eq!(get_json(ratings.addr, "/ratings/7", 200).await, stored);
    let invalid = send(ratings.addr, "POST", "/ratings/7", &ct, "{not json").await;
    let bad_json = json!({"error": "please provide valid ratings JSON"});
    assert_eq!((invalid.status, invalid.json()), (400, bad_json));
    let healthy = json!({"status": "Ratings is healthy"});
    assert_eq!(get_json(ratings.addr, "/health", 200).await, healthy);
}

// ---------------------------------------------------------------- propagation

const TRACEPARENT: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

const COPIED: [(&str, &str); 7] = [
    ("traceparent", TRACEPARENT),
    ("tracestate", "a=b"),
    ("sw8", "1-abc"),
    ("x-datadog-trace-id", "42"),
    ("authorization", "Bearer t"),
    ("jwt", "j"),
    ("user-agent", "probe/1"),
];

/// docs/bookinfo-wire.md §6: everything reviews copies on to ratings.
const PROPAGATED: &str = "x-request-id x-b3-traceid x-b3-spanid x-b3-parentspanid \
    x-b3-sampled x-b3-flags traceparent tracestate x-ot-span-context x-datadog-trace-id \
    x-datadog-parent-id x-datadog-sampling-priority x-cloud-trace-context grpc-trace-bin \
    sw8 end-user user-agent cookie authorization jwt";

fn expect_headers(h: &HeaderMap, want: &[(&str, Option<&str>)], hop: &str) {
    for (name, value) in want {
        assert_eq!(hv(h, name), *value, "{hop}: header {name} in {h:#?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_propagate_through_productpage_and_reviews() {
    let proxy = Proxy::start().await;
    let stack = Stack::start("v2", Some(&proxy), &[]).await;
    let mut inbound = vec![
        ("x-request-id", "req-1"),
        ("x-b3-traceid", "80f198ee56343ba8"),
        ("x-b3-spanid", "e457b5a2e4d86bd1"),
        ("x-b3-parentspanid", "05e3ac9a4f6e3b90"),
        ("x-b3-sampled", "1"),
        ("x-forwarded-for", "1.2.3.4"),
        ("x-custom", "nope"),
    ];
    inbound.extend(COPIED);
    let mark = proxy.mark().await;
    page(stack.pp.addr, &inbound).await;

    let mut want = vec![
        ("x-request-id", Some("req-1")),
        ("x-b3-traceid", Some("000000000000000080f198ee56343ba8")),
        ("x-b3-spanid", Some("e457b5a2e4d86bd1")),
        ("x-b3-sampled", Some("1")),
        ("x-b3-parentspanid", None),
        ("x-b3-flags", None),
        ("x-forwarded-for", None),
        ("x-custom", None),
    ];
    want.extend(COPIED.map(|(name, value)| (name, Some(value))));
    for (hop, target) in [
        ("/details/", stack.details.addr),
        ("/reviews/", stack.reviews.addr),
    ] {
        let call = proxy.one(mark, hop).await;
        let target = target.to_string();
        assert_eq!(
            call.uri.authority().map(|a| a.as_str()),
            Some(target.as_str())
        );
        expect_headers(&call.headers, &want, hop);
        expect_headers(&call.headers, &[("host", Some(&target))], hop);
    }

    let at_reviews = proxy.one(mark, "/reviews/").await.headers;
    let at_ratings = proxy.one(mark, "/ratings/").await.headers;
    let mut same: Vec<_> = PROPAGATED
        .split_whitespace()
        .map(|n| (n, hv(&at_reviews, n)))
        .collect();
    same.extend([("x-forwarded-for", None), ("x-custom", None)]);
    expect_headers(&at_ratings, &same, "reviews -> ratings");

    let direct = [
        ("x-request-id", "req-2"),
        ("x-b3-traceid", "0af7651916cd43dd8448eb211c80319c"),
        ("x-b3-spanid", "b7ad6b7169203331"),
        ("x-b3-parentspanid", "05e3ac9a4f6e3b90"),
        ("x-b3-sampled", "1"),
        ("x-b3-flags", "1"),
    ];
    let mark = proxy.mark().await;
    let resp = send(stack.reviews.addr, "GET", "/reviews/0", &direct, "").await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    let at_ratings = proxy.one(mark, "/ratings/").await.headers;
    let want = direct.map(|(name, value)| (name, Some(value)));
    expect_headers(&at_ratings, &want, "reviews -> ratings");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b3_sampled_default_and_single_header() {
    let proxy = Proxy::start().await;
    let stack = Stack::start("v1", Some(&proxy), &[]).await;
    let trace = "0af7651916cd43dd8448eb211c80319c";
    let span = "b7ad6b7169203331";

    let mark = proxy.mark().await;
    page(
        stack.pp.addr,
        &[("x-b3-traceid", trace), ("x-b3-spanid", span)],
    )
    .await;
    let want = [
        ("x-b3-traceid", Some(trace)),
        ("x-b3-spanid", Some(span)),
        ("x-b3-sampled", Some("0")),
    ];
    expect_headers(
        &proxy.one(mark, "/reviews/").await.headers,
        &want,
        "ids only",
    );

    let mark = proxy.mark().await;
    let single = format!("{trace}-{span}-1");
    page(stack.pp.addr, &[("b3", &single)]).await;
    let want = [
        ("x-b3-traceid", Some(trace)),
        ("x-b3-spanid", Some(span)),
        ("x-b3-sampled", Some("1")),
        ("b3", None),
    ];
    expect_headers(
        &proxy.one(mark, "/reviews/").await.headers,
        &want,
        "b3 only",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_proxy_bypasses_the_proxy() {
    let proxy = Proxy::start().await;
    let details = spawn("details", "v1", Env::new()).await;
    let reviews = start_reviews("v1", down_addr(), Env::new()).await;
    let no_proxy = format!("localhost,{}", details.addr.ip());
    let env = [proxy.env(), kv(&[("NO_PROXY", &no_proxy)])].concat();
    let pp = start_productpage([details.addr, reviews.addr, down_addr()], env).await;
    let mark = proxy.mark().await;
    let html = page(pp.addr, &[]).await;
    assert_has(&html, &["Book Details", "PublisherA", "Book Reviews"]);
    proxy.one(mark, "/reviews/").await;
    let proxied = proxy.since(mark, "/details/").await;
    assert!(
        proxied.is_empty(),
        "details went through the proxy: {proxied:#?}"
    );
}

// ---------------------------------------------------------------- failures

async fn assert_details_error(pp: SocketAddr) {
    let html = page(pp, &[]).await;
    assert_has(&html, &["Error fetching product details", DETAILS_SORRY]);
}

async fn assert_reviews_error(pp: SocketAddr) {
    let html = page(pp, &[]).await;
    assert_has(&html, &["Error fetching product reviews", REVIEWS_SORRY]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn details_down() {
    let reviews = start_reviews("v1", down_addr(), Env::new()).await;
    let pp = start_productpage([down_addr(), reviews.addr, down_addr()], Env::new()).await;
    assert_details_error(pp.addr).await;
    let api = get_json(pp.addr, "/api/v1/products/0", 500).await;
    assert_eq!(api, json!({"error": DETAILS_SORRY}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn details_slower_than_timeout() {
    let (silent, _) = silent_backend().await;
    let reviews = start_reviews("v1", down_addr(), Env::new()).await;
    let pp = start_productpage([silent, reviews.addr, down_addr()], Env::new()).await;
    assert_details_error(pp.addr).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reviews_down() {
    let details = spawn("details", "v1", Env::new()).await;
    let pp = start_productpage([details.addr, down_addr(), down_addr()], Env::new()).await;
    assert_reviews_error(pp.addr).await;
    let api = get_json(pp.addr, "/api/v1/products/0/reviews", 500).await;
    assert_eq!(api, json!({"error": REVIEWS_SORRY}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reviews_slower_than_timeout_is_tried_twice() {
    let (silent, connections) = silent_backend().await;
    let details = spawn("details", "v1", Env::new()).await;
    let pp = start_productpage([details.addr, silent, down_addr()], Env::new()).await;
    assert_reviews_error(pp.addr).await;
    assert_eq!(connections.load(Ordering::SeqCst), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reviews_503_is_tried_twice() {
    let (failing, requests) = status_backend(503).await;
    let details = spawn("details", "v1", Env::new()).await;
    let pp = start_productpage([details.addr, failing, down_addr()], Env::new()).await;
    assert_reviews_error(pp.addr).await;
    assert_eq!(requests.load(Ordering::SeqCst), 2);
    let api = get_json(pp.addr, "/api/v1/products/0/reviews", 503).await;
    assert_eq!(api, json!({"error": REVIEWS_SORRY}));
}

async fn assert_ratings_unavailable(version: &str, ratings: SocketAddr) {
    let details = spawn("details", "v1", Env::new()).await;
    let reviews = start_reviews(version, ratings, Env::new()).await;
    let pp = start_productpage([details.addr, reviews.addr, down_addr()], Env::new()).await;
    let html = page(pp.addr, &[]).await;
    assert_has(&html, &["Book Reviews", RATINGS_DOWN]);
    assert_lacks(&html, &[r#"glyphicon glyphicon-star""#]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ratings_down_with_reviews_v2() {
    assert_ratings_unavailable("v2", down_addr()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ratings_slower_than_timeout_with_reviews_v3() {
    let (silent, _) = silent_backend().await;
    assert_ratings_unavailable("v3", silent).await;
}
