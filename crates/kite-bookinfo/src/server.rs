use std::{future::Future, net::SocketAddr, sync::Arc};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use http_body_util::{BodyExt, Either, Full, Limited, combinators::WithTrailers};
use hyper::{body::Incoming, service::service_fn};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tracing::{Instrument, debug, info, info_span};

/// Request bodies are forms and small JSON documents; anything larger is a
/// client error, not something to buffer.
const MAX_BODY: usize = 1 << 20;

pub(crate) type Request = http::Request<Bytes>;
pub(crate) type Response = http::Response<Full<Bytes>>;

/// Trailers to send after a response's body (gRPC's `grpc-status`), put in
/// the response's extensions by an app that needs them.
#[derive(Clone, Debug)]
pub(crate) struct Trailers(pub(crate) HeaderMap);

type Trailed = WithTrailers<
    Full<Bytes>,
    std::future::Ready<Option<Result<HeaderMap, std::convert::Infallible>>>,
>;

/// Which HTTP versions a server speaks on its cleartext port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Protocols {
    /// HTTP/1.1, as BookInfo's apps (Flask, Ruby, Node, Liberty) serve.
    Http1,
    /// HTTP/1.1 and HTTP/2 with prior knowledge (h2c), as Go's servers with
    /// h2c (fortio) serve.
    Http1AndH2c,
}

/// A BookInfo service: one handler over fully read requests.
pub(crate) trait App: Send + Sync + 'static {
    fn handle(&self, req: Request) -> impl Future<Output = Response> + Send;
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("accepting on {addr}: {source}")]
    Accept {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

pub(crate) async fn bind(addr: SocketAddr) -> Result<TcpListener, ServeError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Bind { addr, source })
}

/// Serves HTTP/1.1 with keep-alive until `shutdown` resolves.
pub(crate) async fn serve<A: App>(
    listener: TcpListener,
    app: Arc<A>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    serve_with(listener, app, Protocols::Http1, shutdown).await
}

/// Serves `protocols` until `shutdown` resolves.
pub(crate) async fn serve_with<A: App>(
    listener: TcpListener,
    app: Arc<A>,
    protocols: Protocols,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    let addr = listener.local_addr().map_err(|source| ServeError::Bind {
        addr: SocketAddr::from(([0, 0, 0, 0], 0)),
        source,
    })?;
    info!(%addr, "listening");
    tokio::pin!(shutdown);
    let mut next_id = 0u64;
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                // Per-connection failures (the peer reset before accept, fd
                // pressure) must not take the service down.
                Err(source) if is_transient(&source) => {
                    debug!(%source, "accept failed");
                    continue;
                }
                Err(source) => return Err(ServeError::Accept { addr, source }),
            },
            () = &mut shutdown => {
                info!(%addr, "shutting down");
                return Ok(());
            }
        };
        next_id += 1;
        let app = app.clone();
        let span = info_span!("conn", id = next_id, %peer);
        tokio::spawn(
            async move {
                let svc = service_fn(move |req| {
                    let app = app.clone();
                    async move {
                        Ok::<_, std::convert::Infallible>(with_trailers(dispatch(&*app, req).await))
                    }
                });
                let io = TokioIo::new(stream);
                let served = match protocols {
                    Protocols::Http1 => hyper::server::conn::http1::Builder::new()
                        .serve_connection(io, svc)
                        .await
                        .map_err(|e| e.to_string()),
                    Protocols::Http1AndH2c => hyper_util::server::conn::auto::Builder::new(
                        hyper_util::rt::TokioExecutor::new(),
                    )
                    .serve_connection(io, svc)
                    .await
                    .map_err(|e| e.to_string()),
                };
                if let Err(error) = served {
                    debug!(%error, "connection ended with an error");
                }
            }
            .instrument(span),
        );
    }
}

/// The response with its [`Trailers`] after the body, if it has any.
fn with_trailers(rsp: Response) -> http::Response<Either<Full<Bytes>, Trailed>> {
    let (mut parts, body) = rsp.into_parts();
    let body = match parts.extensions.remove::<Trailers>() {
        Some(Trailers(trailers)) => {
            Either::Right(body.with_trailers(std::future::ready(Some(Ok(trailers)))))
        }
        None => Either::Left(body),
    };
    http::Response::from_parts(parts, body)
}

fn is_transient(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionAborted | ConnectionReset | Interrupted | WouldBlock
    ) || e.raw_os_error() == Some(24) // EMFILE: wait for descriptors to free up
}

async fn dispatch<A: App>(app: &A, req: http::Request<Incoming>) -> Response {
    let (parts, body) = req.into_parts();
    let body = match Limited::new(body, MAX_BODY).collect().await {
        Ok(body) => body.to_bytes(),
        Err(error) => {
            debug!(%error, "reading request body");
            return text(
                StatusCode::BAD_REQUEST,
                "text/plain",
                "bad request body\n".to_owned(),
            );
        }
    };
    let method = parts.method.clone();
    let path = parts.uri.path().to_owned();
    let host = parts
        .headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let rsp = app.handle(http::Request::from_parts(parts, body)).await;
    info!(%method, path, host, status = rsp.status().as_u16(), "request");
    rsp
}

pub(crate) fn json(status: StatusCode, body: &impl serde::Serialize) -> Response {
    let body = serde_json::to_vec(body).unwrap_or_else(|_| b"{}".to_vec());
    with_type(status, "application/json", Bytes::from(body))
}

pub(crate) fn text(status: StatusCode, content_type: &'static str, body: String) -> Response {
    with_type(status, content_type, Bytes::from(body))
}

pub(crate) fn with_type(status: StatusCode, content_type: &'static str, body: Bytes) -> Response {
    let mut rsp = http::Response::new(Full::new(body));
    *rsp.status_mut() = status;
    rsp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    rsp
}

pub(crate) fn not_found() -> Response {
    text(
        StatusCode::NOT_FOUND,
        "text/html; charset=utf-8",
        "<!doctype html>\n<title>404 Not Found</title>\n<h1>Not Found</h1>\n<p>The requested URL was not found on the server.</p>\n".to_owned(),
    )
}

/// Parses an id the way JavaScript's `parseInt` and Ruby's `Integer` agree
/// on for the inputs BookInfo sees: an optional sign and decimal digits.
pub(crate) fn parse_id(segment: &str) -> Option<i64> {
    let digits = segment.strip_prefix(['+', '-']).unwrap_or(segment);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    segment.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids() {
        assert_eq!(parse_id("0"), Some(0));
        assert_eq!(parse_id("-3"), Some(-3));
        assert_eq!(parse_id("12"), Some(12));
        assert_eq!(parse_id(""), None);
        assert_eq!(parse_id("abc"), None);
        assert_eq!(parse_id("1a"), None);
        assert_eq!(parse_id("-"), None);
    }
}
