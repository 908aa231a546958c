//! The control plane's HTTP API (port 15014): what `kite apply`, `kite
//! delete` and `kite get` talk to, plus debug endpoints listing connected
//! proxies and their config.

use std::{net::SocketAddr, sync::Arc, time::UNIX_EPOCH};

use bytes::Bytes;
use http::{Method, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::{body::Incoming, service::service_fn};
use hyper_util::rt::TokioIo;
use kite_config::{Diagnostic, Kind, load_str};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tracing::{debug, info};

use crate::{Control, store::Key};

/// Config documents are small; a bound keeps a bad client from exhausting
/// memory.
const MAX_BODY: usize = 16 << 20;

type Response = http::Response<Full<Bytes>>;

pub(crate) async fn serve(listener: TcpListener, control: Arc<Control>) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(conn) => conn,
            Err(error) => {
                debug!(%error, "accept failed");
                continue;
            }
        };
        let control = control.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let control = control.clone();
                async move { Ok::<_, std::convert::Infallible>(handle(&control, req, peer).await) }
            });
            if let Err(error) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await
            {
                debug!(%error, "API connection ended with an error");
            }
        });
    }
}

async fn handle(control: &Control, req: http::Request<Incoming>, peer: SocketAddr) -> Response {
    let (parts, body) = req.into_parts();
    let body = match Limited::new(body, MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => return error(StatusCode::BAD_REQUEST, &format!("reading body: {e}")),
    };
    let path = parts.uri.path();
    let query = parts.uri.query().unwrap_or_default();
    let param = |name: &str| {
        query
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.to_owned())
    };
    let rsp = match (&parts.method, path) {
        (&Method::GET, "/ready") => text(StatusCode::OK, "ready\n"),
        (&Method::POST, "/apis/apply") => {
            let file = param("file").unwrap_or_else(|| "request".into());
            apply(control, &file, &body)
        }
        (&Method::POST, "/apis/delete") => {
            let file = param("file").unwrap_or_else(|| "request".into());
            delete(control, &file, &body)
        }
        (&Method::GET, "/apis/objects") => get(control, param("kind"), param("namespace")),
        (&Method::POST, "/apis/tokens") => token(control, &body),
        (&Method::GET, "/ca/root") => match control.citadel.lock().clone() {
            Some(c) => text_owned(StatusCode::OK, c.ca.root_pem()),
            None => error(StatusCode::NOT_FOUND, "this control plane runs no CA"),
        },
        (&Method::GET, "/debug/connections") => connections(control),
        (&Method::GET, "/debug/config_dump") => match param("proxy") {
            Some(proxy) => config_dump(control, &proxy),
            None => error(
                StatusCode::BAD_REQUEST,
                "name the proxy: ?proxy=<node id or workload name>",
            ),
        },
        _ => error(
            StatusCode::NOT_FOUND,
            &format!("no such endpoint: {} {path}", parts.method),
        ),
    };
    info!(method = %parts.method, path, status = rsp.status().as_u16(), %peer, "api");
    rsp
}

fn apply(control: &Control, file: &str, body: &[u8]) -> Response {
    let text = String::from_utf8_lossy(body);
    let loaded = load_str(file, &text);
    if loaded.has_errors() {
        // Nothing of a request with an invalid object is applied, so the
        // config being served stays exactly as it was.
        return json_response(
            StatusCode::UNPROCESSABLE_ENTITY,
            &json!({
                "error": "invalid configuration; nothing was applied",
                "diagnostics": diagnostics(&loaded.diagnostics),
            }),
        );
    }
    let (applied, warnings) = control.store.apply(loaded.objects);
    let mut all = loaded.diagnostics;
    all.extend(warnings);
    json_response(
        StatusCode::OK,
        &json!({"applied": applied, "diagnostics": diagnostics(&all)}),
    )
}

fn delete(control: &Control, file: &str, body: &[u8]) -> Response {
    let text = String::from_utf8_lossy(body);
    let loaded = load_str(file, &text);
    let keys: Vec<Key> = loaded.objects.iter().map(|o| o.key()).collect();
    if keys.is_empty() && loaded.has_errors() {
        return json_response(
            StatusCode::UNPROCESSABLE_ENTITY,
            &json!({"error": "no object could be read", "diagnostics": diagnostics(&loaded.diagnostics)}),
        );
    }
    let deleted = control.store.delete(&keys);
    let entry = |k: &Key| json!({"kind": k.0, "namespace": k.1, "name": k.2});
    let not_found: Vec<Value> = keys
        .iter()
        .filter(|k| !deleted.contains(k))
        .map(entry)
        .collect();
    json_response(
        StatusCode::OK,
        &json!({"deleted": deleted.iter().map(entry).collect::<Vec<_>>(), "notFound": not_found}),
    )
}

fn get(control: &Control, kind: Option<String>, namespace: Option<String>) -> Response {
    let kind_name = match kind.as_deref().map(|k| (k, Kind::from_cli(k))) {
        Some((_, Some(kind))) => Some(kind.name().to_owned()),
        Some((raw, None)) => Some(raw.to_owned()),
        None => None,
    };
    let snapshot = control.store.current();
    let items: Vec<Value> = snapshot
        .objects()
        .filter(|o| kind_name.as_deref().is_none_or(|k| o.kind_name == k))
        .filter(|o| namespace.as_deref().is_none_or(|n| o.meta.namespace == n))
        .map(kite_config::Object::to_json)
        .collect();
    json_response(
        StatusCode::OK,
        &json!({"revision": snapshot.revision, "items": items}),
    )
}

/// Mints a credential for one workload identity (local mode: `kite up`
/// asks for each pod and hands the token to that pod's sidecar only).
fn token(control: &Control, body: &[u8]) -> Response {
    let Some(citadel) = control.citadel.lock().clone() else {
        return error(StatusCode::NOT_FOUND, "this control plane runs no CA");
    };
    let req: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => return error(StatusCode::BAD_REQUEST, &format!("body is not JSON: {e}")),
    };
    let (Some(ns), Some(sa)) = (req["namespace"].as_str(), req["serviceAccount"].as_str()) else {
        return error(
            StatusCode::BAD_REQUEST,
            "namespace and serviceAccount are required",
        );
    };
    let (token, identity) = citadel.mint_token(ns, sa);
    json_response(
        StatusCode::OK,
        &json!({"token": token, "identity": identity.to_string(), "root": citadel.ca.root_pem()}),
    )
}

fn connections(control: &Control) -> Response {
    let list: Vec<Value> = control
        .connections()
        .list()
        .into_iter()
        .map(|c| {
            let types: serde_json::Map<String, Value> = c
                .types
                .iter()
                .map(|(url, s)| {
                    (
                        kite_xds::type_url::short(url).to_owned(),
                        json!({
                            "sentVersion": s.sent_version,
                            "ackedVersion": s.acked_version,
                            "pushes": s.pushes,
                            "acks": s.acks,
                            "nacks": s.nacks,
                            "resourceNames": s.resource_names.as_slice(),
                            "lastNack": s.last_nack.as_ref().map(|n| json!({
                                "version": n.version,
                                "message": n.message,
                                "at": n.at.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0),
                            })),
                        }),
                    )
                })
                .collect();
            json!({
                "id": c.id,
                "node": c.node_id,
                "generation": c.generation,
                "publishedGeneration": control.published_generation(&c.node_id),
                "cluster": c.cluster,
                "connectedAt": c.connected_at.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0),
                "types": types,
            })
        })
        .collect();
    json_response(
        StatusCode::OK,
        &json!({
            "revision": control.store.current().revision,
            "translatedRevision": control.translated_revision(),
            "proxies": list,
        }),
    )
}

fn config_dump(control: &Control, proxy: &str) -> Response {
    match control.dump(proxy) {
        Some(dump) => json_response(StatusCode::OK, &dump),
        None => error(
            StatusCode::NOT_FOUND,
            &format!("no connected proxy matches {proxy:?}"),
        ),
    }
}

pub(crate) fn diagnostics(diags: &[Diagnostic]) -> Vec<Value> {
    diags.iter().map(Diagnostic::to_json).collect()
}

fn json_response(status: StatusCode, body: &Value) -> Response {
    let mut bytes = serde_json::to_vec_pretty(body).unwrap_or_default();
    bytes.push(b'\n');
    let mut rsp = http::Response::new(Full::new(Bytes::from(bytes)));
    *rsp.status_mut() = status;
    rsp.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    rsp
}

fn text_owned(status: StatusCode, body: String) -> Response {
    let mut rsp = http::Response::new(Full::new(Bytes::from(body)));
    *rsp.status_mut() = status;
    rsp
}

fn text(status: StatusCode, body: &'static str) -> Response {
    let mut rsp = http::Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *rsp.status_mut() = status;
    rsp
}

fn error(status: StatusCode, message: &str) -> Response {
    json_response(status, &json!({"error": message}))
}
