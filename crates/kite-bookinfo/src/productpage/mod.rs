//! productpage: the front end. Calls details and reviews for the HTML page,
//! and each back end for its `/api/v1` route, with upstream's timeouts,
//! retries, error mapping and header propagation.

mod page;

use std::{collections::BTreeMap, fmt::Write as _, time::Duration};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use serde_json::{Value, json};
use tokio::sync::Mutex;

use crate::{
    Client, Env, Error, propagate,
    server::{self, App, Request, Response},
    session,
};

const CALL_TIMEOUT: Duration = Duration::from_secs(3);
const REVIEWS_ATTEMPTS: usize = 2;
const STYLESHEET: &str = include_str!("assets/tailwind.css");
const AVATAR: &[u8] = include_bytes!("assets/izzy.png");

pub struct Productpage {
    client: Client,
    details: Backend,
    reviews: Backend,
    ratings: Backend,
    flood_factor: usize,
    /// `request_result_total` by (destination app, response code).
    results: Mutex<BTreeMap<(&'static str, u16), u64>>,
}

struct Backend {
    app: &'static str,
    base: String,
    error: &'static str,
}

/// The outcome of one back-end call as productpage keeps it: the status
/// (500 when no response came) and either the body or the fixed error.
#[derive(Debug)]
struct Outcome {
    status: StatusCode,
    body: Value,
}

// === impl Productpage ===

impl Productpage {
    pub fn from_env(version: &str, env: &Env) -> Result<Self, Error> {
        let flood_default = match version {
            "v1" => "0",
            "v-flooding" => "100",
            _ => {
                return Err(Error::UnknownVersion {
                    service: "productpage",
                    version: version.to_owned(),
                    known: "v1, v-flooding",
                });
            }
        };
        let flood = env.get_or("FLOOD_FACTOR", flood_default);
        let flood_factor = flood.trim().parse().map_err(|_| Error::BadEnv {
            name: "FLOOD_FACTOR",
            value: flood.to_owned(),
            reason: "expected a non-negative integer",
        })?;
        let domain = env
            .get("SERVICES_DOMAIN")
            .map(|d| format!(".{d}"))
            .unwrap_or_default();
        let base = |service: &str, host_var: &str, port_var: &str| {
            format!(
                "http://{}{domain}:{}/{service}",
                env.get_or(host_var, service),
                env.get_or(port_var, "9080")
            )
        };
        Ok(Self {
            client: Client::from_env(env)?,
            details: Backend {
                app: "details",
                base: base("details", "DETAILS_HOSTNAME", "DETAILS_SERVICE_PORT"),
                error: "Sorry, product details are currently unavailable for this book.",
            },
            reviews: Backend {
                app: "reviews",
                base: base("reviews", "REVIEWS_HOSTNAME", "REVIEWS_SERVICE_PORT"),
                error: "Sorry, product reviews are currently unavailable for this book.",
            },
            ratings: Backend {
                app: "ratings",
                base: base("ratings", "RATINGS_HOSTNAME", "RATINGS_SERVICE_PORT"),
                error: "Sorry, product ratings are currently unavailable for this book.",
            },
            flood_factor,
            results: Mutex::default(),
        })
    }

    /// Calls `backend` for product `id`, retrying any failure up to
    /// `attempts` times, each attempt bounded by the same timeout.
    async fn call(
        &self,
        backend: &Backend,
        id: &str,
        headers: &HeaderMap,
        attempts: usize,
    ) -> Outcome {
        let url = format!("{}/{id}", backend.base);
        let mut status = StatusCode::INTERNAL_SERVER_ERROR;
        for _ in 0..attempts {
            match self.client.get(&url, headers.clone(), CALL_TIMEOUT).await {
                Ok(reply) if reply.status == StatusCode::OK => {
                    if let Ok(body) = serde_json::from_slice(&reply.body) {
                        self.count(backend.app, StatusCode::OK).await;
                        return Outcome {
                            status: StatusCode::OK,
                            body,
                        };
                    }
                    tracing::info!(%url, "back end answered 200 with a body that is not JSON");
                    status = StatusCode::INTERNAL_SERVER_ERROR;
                }
                Ok(reply) => {
                    tracing::info!(%url, status = reply.status.as_u16(), "back end failed");
                    status = reply.status;
                }
                Err(error) => {
                    tracing::info!(%url, %error, "back end failed");
                    status = StatusCode::INTERNAL_SERVER_ERROR;
                }
            }
        }
        self.count(backend.app, status).await;
        Outcome {
            status,
            body: json!({ "error": backend.error }),
        }
    }

    async fn count(&self, app: &'static str, status: StatusCode) {
        *self
            .results
            .lock()
            .await
            .entry((app, status.as_u16()))
            .or_default() += 1;
    }

    async fn product_page(&self, req: &Request) -> Response {
        let user = session::user(req.headers());
        let headers = propagate::productpage(req.headers(), user.as_deref());
        self.flood(&headers);
        let details = self.call(&self.details, "0", &headers, 1).await;
        let reviews = self
            .call(&self.reviews, "0", &headers, REVIEWS_ATTEMPTS)
            .await;
        let html = page::product(&product(), user.as_deref(), &details, &reviews);
        server::text(StatusCode::OK, "text/html; charset=utf-8", html)
    }

    /// Extra reviews calls whose answers are thrown away: load generation
    /// that the flooding image is made for.
    fn flood(&self, headers: &HeaderMap) {
        for _ in 0..self.flood_factor {
            let client = self.client.clone();
            let url = format!("{}/0", self.reviews.base);
            let headers = headers.clone();
            tokio::spawn(async move {
                let _ = client.get(&url, headers, CALL_TIMEOUT).await;
            });
        }
    }

    async fn api(&self, req: &Request, rest: &str) -> Response {
        if rest.is_empty() {
            return server::json(StatusCode::OK, &json!([product()]));
        }
        let user = session::user(req.headers());
        let headers = propagate::productpage(req.headers(), user.as_deref());
        let outcome = match rest.split_once('/') {
            None => self.call(&self.details, rest, &headers, 1).await,
            Some((id, "reviews")) => {
                self.call(&self.reviews, id, &headers, REVIEWS_ATTEMPTS)
                    .await
            }
            Some((id, "ratings")) => self.call(&self.ratings, id, &headers, 1).await,
            Some(_) => return server::not_found(),
        };
        server::json(outcome.status, &outcome.body)
    }

    async fn metrics(&self) -> Response {
        let mut out = String::from(
            "# HELP request_result_total Response code and destination\n# TYPE request_result_total counter\n",
        );
        for ((app, code), n) in self.results.lock().await.iter() {
            let _ = writeln!(
                out,
                "request_result_total{{destination_app=\"{app}\",response_code=\"{code}\"}} {n}"
            );
        }
        server::text(
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            out,
        )
    }
}

impl App for Productpage {
    async fn handle(&self, req: Request) -> Response {
        let path = req.uri().path().to_owned();
        let method = req.method().clone();
        let get = method == Method::GET || method == Method::HEAD;
        match path.as_str() {
            "/" | "/index.html" if get => {
                server::text(StatusCode::OK, "text/html; charset=utf-8", page::landing())
            }
            "/productpage" if get => self.product_page(&req).await,
            "/login" if method == Method::POST => login(&req),
            "/logout" if get => logout(&req),
            "/health" if get => server::text(
                StatusCode::OK,
                "text/html; charset=utf-8",
                "Product page is healthy".to_owned(),
            ),
            "/metrics" if get => self.metrics().await,
            "/static/tailwind/tailwind.css" if get => server::text(
                StatusCode::OK,
                "text/css; charset=utf-8",
                STYLESHEET.to_owned(),
            ),
            "/static/img/izzy.png" if get => {
                server::with_type(StatusCode::OK, "image/png", Bytes::from_static(AVATAR))
            }
            "/" | "/index.html" | "/productpage" | "/login" | "/logout" | "/health"
            | "/metrics" => method_not_allowed(),
            _ => match path.strip_prefix("/api/v1/products") {
                Some(rest) if rest.is_empty() || rest.starts_with('/') => {
                    if !get {
                        return method_not_allowed();
                    }
                    self.api(&req, rest.trim_start_matches('/')).await
                }
                _ => server::not_found(),
            },
        }
    }
}

fn product() -> Value {
    json!({
        "id": 0,
        "title": "The Comedy of Errors",
        "descriptionHtml": "<a href=\"https://en.wikipedia.org/wiki/The_Comedy_of_Errors\">Wikipedia Summary</a>: \
            An early and very short comedy by <b>William Shakespeare</b>, in which two pairs of \
            identical twins separated at birth cause a day of mistaken identities, slapstick and \
            puns in the city of Ephesus."
    })
}

/// Stores the submitted user name in the session and sends the browser back
/// where it came from.
fn login(req: &Request) -> Response {
    let form = form_fields(req.body());
    let query = req.uri().query().map(|q| form_fields(q.as_bytes()));
    let user = form
        .iter()
        .chain(query.iter().flatten())
        .find(|(k, _)| k == "username")
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    let cookie = if user.is_empty() {
        clear_cookie()
    } else {
        format!(
            "{}={}; HttpOnly; Path=/",
            session::COOKIE,
            session::sign(&user)
        )
    };
    redirect_back(req, &cookie)
}

fn logout(req: &Request) -> Response {
    redirect_back(req, &clear_cookie())
}

fn clear_cookie() -> String {
    format!(
        "{}=; Expires=Thu, 01 Jan 1970 00:00:00 GMT; Max-Age=0; HttpOnly; Path=/",
        session::COOKIE
    )
}

fn redirect_back(req: &Request, cookie: &str) -> Response {
    let location = req
        .headers()
        .get(header::REFERER)
        .cloned()
        .unwrap_or_else(|| HeaderValue::from_static("/productpage"));
    let mut rsp = server::text(
        StatusCode::FOUND,
        "text/html; charset=utf-8",
        "<!doctype html>\n<title>Redirecting...</title>\n<h1>Redirecting...</h1>\n".to_owned(),
    );
    rsp.headers_mut().insert(header::LOCATION, location);
    if let Ok(cookie) = HeaderValue::from_str(cookie) {
        rsp.headers_mut().insert(header::SET_COOKIE, cookie);
    }
    rsp
}

fn method_not_allowed() -> Response {
    server::text(
        StatusCode::METHOD_NOT_ALLOWED,
        "text/html; charset=utf-8",
        "<!doctype html>\n<title>405 Method Not Allowed</title>\n<h1>Method Not Allowed</h1>\n"
            .to_owned(),
    )
}

/// `application/x-www-form-urlencoded` pairs.
fn form_fields(body: &[u8]) -> Vec<(String, String)> {
    String::from_utf8_lossy(body)
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let hex = |b: u8| (b as char).to_digit(16);
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%' && i + 2 < bytes.len())
            .then(|| Some(hex(bytes[i + 1])? * 16 + hex(bytes[i + 2])?))
            .flatten();
        match (bytes[i], escaped) {
            (_, Some(b)) => {
                out.push(b as u8);
                i += 3;
                continue;
            }
            (b'+', None) => out.push(b' '),
            (b, None) => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_decoding() {
        assert_eq!(
            form_fields(b"username=jason&passwd=a%20b+c%2"),
            vec![
                ("username".to_owned(), "jason".to_owned()),
                ("passwd".to_owned(), "a b c%2".to_owned())
            ]
        );
        assert_eq!(percent_decode("%C3%A9t%C3%A9%zz"), "\u{e9}t\u{e9}%zz");
    }

    #[test]
    fn backends_from_env() {
        let env: Env = [
            ("DETAILS_HOSTNAME", "127.0.0.2"),
            ("DETAILS_SERVICE_PORT", "9081"),
            ("SERVICES_DOMAIN", "default.svc.cluster.local"),
        ]
        .into_iter()
        .collect();
        let pp = Productpage::from_env("v1", &env).unwrap();
        assert_eq!(
            pp.details.base,
            "http://127.0.0.2.default.svc.cluster.local:9081/details"
        );
        assert_eq!(
            pp.reviews.base,
            "http://reviews.default.svc.cluster.local:9080/reviews"
        );
        assert_eq!(pp.flood_factor, 0);
        assert_eq!(
            Productpage::from_env("v-flooding", &Env::default())
                .unwrap()
                .flood_factor,
            100
        );
        let bad: Env = [("FLOOD_FACTOR", "lots")].into_iter().collect();
        assert!(Productpage::from_env("v1", &bad).is_err());
    }
}
