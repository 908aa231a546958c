//! reviews: two reviews of the book; v2 and v3 add star ratings from the
//! ratings service, black and red.

use std::{collections::HashMap, time::Duration};

use http::{HeaderValue, Method, StatusCode, header};
use serde::Serialize;
use serde_json::{Value, json};

use crate::{
    Client, Env, Error, propagate,
    server::{self, App, Request, Response},
};

const UNAVAILABLE: &str = "Ratings service is currently unavailable";
const REVIEWS: [(&str, &str); 2] = [
    (
        "Reviewer1",
        "An extremely entertaining play by Shakespeare. The slapstick humour is refreshing!",
    ),
    (
        "Reviewer2",
        "Absolutely fun and entertaining. The play lacks thematic depth when compared to other plays by Shakespeare.",
    ),
];

pub struct Reviews {
    podname: String,
    clustername: String,
    /// `None` for v1, which never calls ratings.
    ratings: Option<RatingsCall>,
}

struct RatingsCall {
    client: Client,
    base: String,
    color: String,
    timeout: Duration,
}

#[derive(Serialize)]
struct Body {
    id: String,
    podname: String,
    clustername: String,
    reviews: Vec<Review>,
}

#[derive(Serialize)]
struct Review {
    reviewer: &'static str,
    text: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    rating: Option<Rating>,
}

#[derive(Serialize)]
#[serde(untagged)]
enum Rating {
    Stars { stars: i64, color: String },
    Error { error: &'static str },
}

// === impl Reviews ===

impl Reviews {
    pub fn from_env(version: &str, env: &Env) -> Result<Self, Error> {
        let (ratings_default, color_default) = match version {
            "v1" => ("false", "black"),
            "v2" => ("true", "black"),
            "v3" => ("true", "red"),
            _ => {
                return Err(Error::UnknownVersion {
                    service: "reviews",
                    version: version.to_owned(),
                    known: "v1, v2, v3",
                });
            }
        };
        let enabled = env
            .get_or("ENABLE_RATINGS", ratings_default)
            .eq_ignore_ascii_case("true");
        let color = env.get_or("STAR_COLOR", color_default).to_owned();
        let ratings = if enabled {
            let domain = env
                .get("SERVICES_DOMAIN")
                .map(|d| format!(".{d}"))
                .unwrap_or_default();
            let host = env.get_or("RATINGS_HOSTNAME", "ratings");
            let port = env.get_or("RATINGS_SERVICE_PORT", "9080");
            // Upstream waits for ratings much longer with black stars than
            // with any other colour; the fault-injection tasks depend on it.
            let timeout = if color == "black" {
                Duration::from_secs(10)
            } else {
                Duration::from_millis(2500)
            };
            Some(RatingsCall {
                client: Client::from_env(env)?,
                base: format!("http://{host}{domain}:{port}/ratings"),
                color,
                timeout,
            })
        } else {
            None
        };
        Ok(Self {
            podname: env
                .get("HOSTNAME")
                .map(str::to_owned)
                .unwrap_or_else(system_hostname),
            clustername: env.get_or("CLUSTER_NAME", "null").to_owned(),
            ratings,
        })
    }

    async fn reviews(&self, id: i64, req: &Request) -> Body {
        let stars = match &self.ratings {
            Some(call) => Some((call.fetch(id, req).await, &call.color)),
            None => None,
        };
        let reviews = REVIEWS
            .iter()
            .map(|(reviewer, text)| Review {
                reviewer,
                text,
                rating: stars.as_ref().map(|(stars, color)| {
                    match stars.as_ref().and_then(|s| s.get(*reviewer)) {
                        Some(stars) => Rating::Stars {
                            stars: *stars,
                            color: (*color).clone(),
                        },
                        None => Rating::Error { error: UNAVAILABLE },
                    }
                }),
            })
            .collect();
        Body {
            id: id.to_string(),
            podname: self.podname.clone(),
            clustername: self.clustername.clone(),
            reviews,
        }
    }
}

impl App for Reviews {
    async fn handle(&self, req: Request) -> Response {
        let path = req.uri().path();
        if req.method() != Method::GET {
            return server::not_found();
        }
        if path == "/health" {
            return server::json(StatusCode::OK, &json!({"status": "Reviews is healthy"}));
        }
        match path.strip_prefix("/reviews/").and_then(server::parse_id) {
            Some(id) => server::json(StatusCode::OK, &self.reviews(id, &req).await),
            None => server::not_found(),
        }
    }
}

// === impl RatingsCall ===

impl RatingsCall {
    /// Stars per reviewer, or `None` when ratings could not be had.
    async fn fetch(&self, id: i64, req: &Request) -> Option<HashMap<String, i64>> {
        let mut headers = propagate::forwarded(req.headers());
        headers.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
        let url = format!("{}/{id}", self.base);
        let reply = match self.client.get(&url, headers, self.timeout).await {
            Ok(reply) if reply.status == StatusCode::OK => reply,
            Ok(reply) => {
                tracing::info!(%url, status = reply.status.as_u16(), "ratings failed");
                return None;
            }
            Err(error) => {
                tracing::info!(%url, %error, "ratings failed");
                return None;
            }
        };
        let body: Value = serde_json::from_slice(&reply.body).ok()?;
        let stars = body.get("ratings")?.as_object()?;
        Some(
            stars
                .iter()
                .filter_map(|(reviewer, n)| Some((reviewer.clone(), n.as_i64()?)))
                .collect(),
        )
    }
}

fn system_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "unknown".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    async fn get(app: &Reviews, path: &str) -> (u16, Value) {
        let req = http::Request::builder()
            .uri(path)
            .body(bytes::Bytes::new())
            .unwrap();
        let rsp = app.handle(req).await;
        let status = rsp.status().as_u16();
        let body = rsp.into_body().collect().await.unwrap().to_bytes();
        (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
    }

    fn env(pairs: &[(&str, &str)]) -> Env {
        pairs.iter().copied().collect()
    }

    #[tokio::test]
    async fn v1_has_no_ratings() {
        let app = Reviews::from_env("v1", &env(&[("HOSTNAME", "reviews-v1-x")])).unwrap();
        let (status, body) = get(&app, "/reviews/0").await;
        assert_eq!(status, 200);
        assert_eq!(body["id"], "0");
        assert_eq!(body["podname"], "reviews-v1-x");
        assert_eq!(body["clustername"], "null");
        let reviews = body["reviews"].as_array().unwrap();
        assert_eq!(reviews.len(), 2);
        assert_eq!(reviews[0]["reviewer"], "Reviewer1");
        assert!(reviews.iter().all(|r| r.get("rating").is_none()));
        assert_eq!(get(&app, "/reviews/abc").await.0, 404);
        assert_eq!(get(&app, "/health").await.1["status"], "Reviews is healthy");
    }

    #[tokio::test]
    async fn unreachable_ratings_give_error_objects() {
        // Port 9 on loopback: nothing listens, so the connection is refused.
        let app = Reviews::from_env(
            "v3",
            &env(&[
                ("RATINGS_HOSTNAME", "127.0.0.1"),
                ("RATINGS_SERVICE_PORT", "9"),
                ("CLUSTER_NAME", "east"),
            ]),
        )
        .unwrap();
        let (status, body) = get(&app, "/reviews/7").await;
        assert_eq!(status, 200);
        assert_eq!(body["id"], "7");
        assert_eq!(body["clustername"], "east");
        for review in body["reviews"].as_array().unwrap() {
            assert_eq!(review["rating"]["error"], UNAVAILABLE);
        }
    }

    #[test]
    fn version_defaults_and_overrides() {
        let v2 = Reviews::from_env("v2", &Env::default()).unwrap();
        let call = v2.ratings.unwrap();
        assert_eq!(
            (call.color.as_str(), call.timeout),
            ("black", Duration::from_secs(10))
        );
        assert_eq!(call.base, "http://ratings:9080/ratings");
        let v3 = Reviews::from_env(
            "v3",
            &env(&[
                ("SERVICES_DOMAIN", "default.svc"),
                ("RATINGS_SERVICE_PORT", "1"),
            ]),
        )
        .unwrap();
        let call = v3.ratings.unwrap();
        assert_eq!(
            (call.color.as_str(), call.timeout),
            ("red", Duration::from_millis(2500))
        );
        assert_eq!(call.base, "http://ratings.default.svc:1/ratings");
        let off = Reviews::from_env("v3", &env(&[("ENABLE_RATINGS", "false")])).unwrap();
        assert!(off.ratings.is_none());
        let on = Reviews::from_env(
            "v1",
            &env(&[("ENABLE_RATINGS", "TRUE"), ("STAR_COLOR", "blue")]),
        )
        .unwrap();
        assert_eq!(on.ratings.unwrap().timeout, Duration::from_millis(2500));
        assert!(Reviews::from_env("v4", &Env::default()).is_err());
    }
}
