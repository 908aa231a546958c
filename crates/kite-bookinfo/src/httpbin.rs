//! httpbin (as Istio's sample runs it: mccutchen/go-httpbin on 8080), the
//! echo service of Istio's security and resilience tasks: what the request
//! looked like (`/headers`, `/get`, `/ip`, `/anything`), and chosen
//! failures (`/status/<code>`, `/delay/<seconds>`).

use std::{collections::BTreeMap, time::Duration};

use http::{Method, StatusCode};
use serde_json::{Value, json};

use crate::{
    Env, Error,
    server::{self, App, Request, Response},
};

/// go-httpbin caps delays at 10 s.
const MAX_DELAY: Duration = Duration::from_secs(10);

pub struct Httpbin;

impl Httpbin {
    pub fn from_env(version: &str, _env: &Env) -> Result<Self, Error> {
        match version {
            "v1" => Ok(Self),
            _ => Err(Error::UnknownVersion {
                service: "httpbin",
                version: version.to_owned(),
                known: "v1",
            }),
        }
    }
}

/// Header names as Go canonicalises them (`X-Forwarded-Client-Cert`), each
/// with its list of values, as go-httpbin answers.
fn headers(req: &Request) -> Value {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, value) in req.headers() {
        let canonical = name
            .as_str()
            .split('-')
            .map(|part| {
                let mut chars = part.chars();
                chars
                    .next()
                    .map(|c| c.to_ascii_uppercase().to_string() + chars.as_str())
                    .unwrap_or_default()
            })
            .collect::<Vec<_>>()
            .join("-");
        out.entry(canonical)
            .or_default()
            .push(value.to_str().unwrap_or_default().to_owned());
    }
    json!(out)
}

fn origin(req: &Request) -> String {
    req.headers()
        .get("x-forwarded-for")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .unwrap_or_default()
}

fn echo(req: &Request) -> Value {
    let args: BTreeMap<String, Vec<String>> = req
        .uri()
        .query()
        .unwrap_or_default()
        .split('&')
        .filter(|kv| !kv.is_empty())
        .fold(BTreeMap::new(), |mut m, kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            m.entry(k.to_owned()).or_default().push(v.to_owned());
            m
        });
    let host = req
        .headers()
        .get(http::header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    json!({
        "args": args,
        "headers": headers(req),
        "method": req.method().as_str(),
        "origin": origin(req),
        "url": format!("http://{host}{}", req.uri()),
    })
}

impl App for Httpbin {
    async fn handle(&self, req: Request) -> Response {
        let path = req.uri().path().to_owned();
        let get = req.method() == Method::GET || req.method() == Method::HEAD;
        match path.as_str() {
            "/headers" if get => server::json(StatusCode::OK, &json!({"headers": headers(&req)})),
            "/get" if get => server::json(StatusCode::OK, &echo(&req)),
            "/ip" if get => server::json(StatusCode::OK, &json!({"origin": origin(&req)})),
            "/user-agent" if get => server::json(
                StatusCode::OK,
                &json!({"user-agent": req.headers().get(http::header::USER_AGENT).and_then(|v| v.to_str().ok()).unwrap_or_default()}),
            ),
            p if p == "/anything" || p.starts_with("/anything/") => {
                server::json(StatusCode::OK, &echo(&req))
            }
            p if p.starts_with("/status/") => {
                // Several comma-separated codes: one of them at random.
                let codes: Vec<u16> = p["/status/".len()..]
                    .split(',')
                    .filter_map(|c| c.trim().parse().ok())
                    .filter(|c| (100..600).contains(c))
                    .collect();
                match codes.get(fastrand::usize(..codes.len().max(1))) {
                    Some(code) => server::text(
                        StatusCode::from_u16(*code).unwrap_or(StatusCode::OK),
                        "text/plain; charset=utf-8",
                        String::new(),
                    ),
                    None => server::text(
                        StatusCode::BAD_REQUEST,
                        "text/plain; charset=utf-8",
                        "invalid status code\n".into(),
                    ),
                }
            }
            p if p.starts_with("/delay/") => {
                let Ok(secs) = p["/delay/".len()..].parse::<f64>() else {
                    return server::text(
                        StatusCode::BAD_REQUEST,
                        "text/plain; charset=utf-8",
                        "invalid delay\n".into(),
                    );
                };
                let delay = Duration::try_from_secs_f64(secs.max(0.0))
                    .unwrap_or(MAX_DELAY)
                    .min(MAX_DELAY);
                tokio::time::sleep(delay).await;
                server::json(StatusCode::OK, &echo(&req))
            }
            _ => server::not_found(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    async fn call(path: &str, headers: &[(&str, &str)]) -> (u16, Value) {
        let mut b = http::Request::builder().uri(path);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let rsp = Httpbin.handle(b.body(bytes::Bytes::new()).unwrap()).await;
        let status = rsp.status().as_u16();
        let body = rsp.into_body().collect().await.unwrap().to_bytes();
        (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
    }

    #[tokio::test]
    async fn headers_are_canonical_lists() {
        let (status, body) = call(
            "/headers",
            &[
                ("x-forwarded-client-cert", "By=a;URI=b"),
                ("host", "httpbin:8000"),
            ],
        )
        .await;
        assert_eq!(status, 200);
        assert_eq!(
            body["headers"]["X-Forwarded-Client-Cert"],
            json!(["By=a;URI=b"])
        );
        assert_eq!(body["headers"]["Host"], json!(["httpbin:8000"]));
    }

    #[tokio::test]
    async fn status_and_echo() {
        assert_eq!(call("/status/418", &[]).await.0, 418);
        assert_eq!(call("/status/nope", &[]).await.0, 400);
        let (status, body) = call("/get?a=1&a=2", &[("host", "h")]).await;
        assert_eq!(status, 200);
        assert_eq!(body["args"]["a"], json!(["1", "2"]));
        assert_eq!(body["url"], "http://h/get?a=1&a=2");
        assert_eq!(call("/nothing-here", &[]).await.0, 404);
    }
}
