//! ratings: star ratings per product, kept in memory (v1) and the fault-demo
//! variants of the upstream images.

use std::{collections::HashMap, time::Duration};

use http::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::{sync::Mutex, time::Instant};

use crate::{
    Env, Error,
    server::{self, App, Request, Response},
};

pub struct Ratings {
    variant: Variant,
    started: Instant,
    /// Ratings POSTed per product id; unknown ids get the defaults.
    posted: Mutex<HashMap<i64, Value>>,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Variant {
    V1,
    /// 503 on about half of the GETs.
    Faulty,
    /// About half of the GETs take 7 s.
    Delayed,
    /// Alternates between normal and 503 every minute.
    Unavailable,
    /// Alternates every 15 minutes; unhealthy also fails `/health`.
    Unhealthy,
}

// === impl Ratings ===

impl Ratings {
    pub fn from_env(version: &str, _env: &Env) -> Result<Self, Error> {
        let variant = match version {
            "v1" => Variant::V1,
            "v-faulty" => Variant::Faulty,
            "v-delayed" => Variant::Delayed,
            "v-unavailable" => Variant::Unavailable,
            "v-unhealthy" => Variant::Unhealthy,
            "v2" => {
                return Err(Error::Unsupported {
                    service: "ratings",
                    version: version.to_owned(),
                    reason: "the database-backed ratings (MongoDB/MySQL) are not built yet; use v1",
                });
            }
            _ => {
                return Err(Error::UnknownVersion {
                    service: "ratings",
                    version: version.to_owned(),
                    known: "v1, v-faulty, v-delayed, v-unavailable, v-unhealthy",
                });
            }
        };
        Ok(Self {
            variant,
            started: Instant::now(),
            posted: Mutex::default(),
        })
    }

    fn failing(&self) -> bool {
        let period = match self.variant {
            Variant::Unavailable => Duration::from_secs(60),
            Variant::Unhealthy => Duration::from_secs(15 * 60),
            _ => return false,
        };
        (self.started.elapsed().as_secs() / period.as_secs()) % 2 == 1
    }

    async fn get(&self, id: i64) -> Response {
        let unavailable = match self.variant {
            Variant::V1 | Variant::Delayed => false,
            Variant::Faulty => fastrand::bool(),
            Variant::Unavailable | Variant::Unhealthy => self.failing(),
        };
        if unavailable {
            return server::json(
                StatusCode::SERVICE_UNAVAILABLE,
                &json!({"error": "Service unavailable"}),
            );
        }
        if self.variant == Variant::Delayed && fastrand::bool() {
            tokio::time::sleep(Duration::from_secs(7)).await;
        }
        let stored = self.posted.lock().await.get(&id).cloned();
        let body = stored
            .unwrap_or_else(|| json!({"id": id, "ratings": {"Reviewer1": 5, "Reviewer2": 4}}));
        server::json(StatusCode::OK, &body)
    }

    async fn post(&self, id: i64, body: &[u8]) -> Response {
        let Ok(ratings) = serde_json::from_slice::<Value>(body) else {
            return server::json(
                StatusCode::BAD_REQUEST,
                &json!({"error": "please provide valid ratings JSON"}),
            );
        };
        let stored = json!({"id": id, "ratings": ratings});
        self.posted.lock().await.insert(id, stored.clone());
        server::json(StatusCode::OK, &stored)
    }
}

impl App for Ratings {
    async fn handle(&self, req: Request) -> Response {
        let path = req.uri().path();
        if path == "/health" {
            return if self.variant == Variant::Unhealthy && self.failing() {
                server::json(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    &json!({"status": "Ratings is not healthy"}),
                )
            } else {
                server::json(StatusCode::OK, &json!({"status": "Ratings is healthy"}))
            };
        }
        if !path.starts_with("/ratings/") {
            return server::not_found();
        }
        let id = path.rsplit('/').next().and_then(server::parse_id);
        match (req.method(), id) {
            (_, None) if matches!(*req.method(), Method::GET | Method::POST) => server::json(
                StatusCode::BAD_REQUEST,
                &json!({"error": "please provide numeric product ID"}),
            ),
            (&Method::GET, Some(id)) => self.get(id).await,
            (&Method::POST, Some(id)) => self.post(id, req.body()).await,
            _ => server::not_found(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    async fn call(app: &Ratings, method: Method, path: &str, body: &str) -> (u16, String) {
        let req = http::Request::builder()
            .method(method)
            .uri(path)
            .body(bytes::Bytes::from(body.to_owned()))
            .unwrap();
        let rsp = app.handle(req).await;
        let status = rsp.status().as_u16();
        let body = rsp.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8(body.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn v1_routes() {
        let app = Ratings::from_env("v1", &Env::default()).unwrap();
        assert_eq!(
            call(&app, Method::GET, "/ratings/0", "").await,
            (
                200,
                r#"{"id":0,"ratings":{"Reviewer1":5,"Reviewer2":4}}"#.into()
            )
        );
        assert_eq!(
            call(&app, Method::GET, "/ratings/", "").await,
            (
                400,
                r#"{"error":"please provide numeric product ID"}"#.into()
            )
        );
        assert_eq!(
            call(&app, Method::POST, "/ratings/1", "{nope").await,
            (
                400,
                r#"{"error":"please provide valid ratings JSON"}"#.into()
            )
        );
        let posted = r#"{"id":1,"ratings":{"Reviewer1":1,"Reviewer2":2}}"#;
        assert_eq!(
            call(
                &app,
                Method::POST,
                "/ratings/1",
                r#"{"Reviewer1":1,"Reviewer2":2}"#
            )
            .await,
            (200, posted.into())
        );
        assert_eq!(
            call(&app, Method::GET, "/ratings/1", "").await,
            (200, posted.into())
        );
        assert_eq!(call(&app, Method::GET, "/other", "").await.0, 404);
    }

    #[tokio::test]
    async fn faulty_fails_some_requests() {
        let app = Ratings::from_env("v-faulty", &Env::default()).unwrap();
        let mut statuses = Vec::new();
        for _ in 0..64 {
            statuses.push(call(&app, Method::GET, "/ratings/0", "").await.0);
        }
        assert!(statuses.contains(&503) && statuses.contains(&200));
    }

    #[test]
    fn database_version_is_refused_clearly() {
        let err = Ratings::from_env("v2", &Env::default()).err().unwrap();
        assert!(err.to_string().contains("not built yet"), "{err}");
    }
}
