//! Istio's helloworld sample (`examples-helloworld-v1`/`-v2`, port 5000),
//! the workload of the locality load-balancing tasks: `GET /hello` names
//! the version and the pod that answered.

use http::{Method, StatusCode};

use crate::{
    Env, Error,
    server::{self, App, Request, Response},
};

pub struct Helloworld {
    version: String,
    instance: String,
}

impl Helloworld {
    /// The image's version unless `SERVICE_VERSION` says otherwise, as the
    /// upstream image reads it; the instance is `HOSTNAME`, the pod name.
    pub fn from_env(version: &str, env: &Env) -> Result<Self, Error> {
        Ok(Self {
            version: env.get_or("SERVICE_VERSION", version).to_owned(),
            instance: env.get_or("HOSTNAME", "").to_owned(),
        })
    }
}

impl App for Helloworld {
    async fn handle(&self, req: Request) -> Response {
        if req.method() != Method::GET && req.method() != Method::HEAD {
            return server::not_found();
        }
        match req.uri().path() {
            "/hello" => server::text(
                StatusCode::OK,
                "text/html; charset=utf-8",
                format!(
                    "Hello version: {}, instance: {}\n",
                    self.version, self.instance
                ),
            ),
            "/health" => server::text(
                StatusCode::OK,
                "text/html; charset=utf-8",
                "Helloworld is healthy".to_owned(),
            ),
            _ => server::not_found(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn hello_names_version_and_instance() {
        let env: Env = [("HOSTNAME", "helloworld-v2-abc")].into_iter().collect();
        let app = Helloworld::from_env("v2", &env).unwrap();
        let rsp = app
            .handle(
                http::Request::builder()
                    .uri("/hello")
                    .body(bytes::Bytes::new())
                    .unwrap(),
            )
            .await;
        assert_eq!(rsp.status(), 200);
        let body = rsp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(
            &body[..],
            b"Hello version: v2, instance: helloworld-v2-abc\n"
        );
    }
}
