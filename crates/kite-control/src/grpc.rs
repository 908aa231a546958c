//! gRPC framing of the ADS stream, done here rather than by tonic: tonic
//! keeps, per stream, an encode buffer as large as the largest response and
//! a decode buffer as large as the largest request, for as long as the
//! stream lives. A proxy's first CDS response is megabytes at scale, and
//! its EDS requests name every cluster, so with a thousand proxies those
//! buffers would be most of the control plane's memory. Here every message
//! is framed into a buffer of its own size, freed once written.

use std::{convert::Infallible, sync::Arc};

use bytes::{Buf, Bytes, BytesMut};
use http::{HeaderMap, HeaderValue};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use kite_xds::{
    Request,
    ads::{AdsServer, Encoded, SnapshotSource},
    pb::envoy::service::discovery::v3::DeltaDiscoveryRequest,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

pub(crate) const STREAM_PATH: &str =
    "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources";
pub(crate) const DELTA_PATH: &str =
    "/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources";
/// gRPC's length-prefixed message header: compressed flag, 4-byte length.
const HEADER: usize = 5;
/// Pieces of a response smaller than this are copied together into one
/// frame rather than sent as frames of their own.
const GATHER: usize = 16 << 10;
/// Requests are names and versions; a bound keeps a bad client from
/// exhausting memory.
const MAX_REQUEST: usize = 16 << 20;

type Frames = mpsc::Receiver<Result<Frame<Bytes>, Infallible>>;

/// Serves one StreamAggregatedResources call.
pub(crate) async fn stream<S: SnapshotSource>(
    ads: Arc<AdsServer<S>>,
    request: http::Request<Incoming>,
) -> http::Response<tonic::body::Body> {
    let (first, requests) = match first_of(request, Request::decode).await {
        Ok(call) => call,
        Err(refused) => return refused,
    };
    match ads.open(first, ReceiverStream::new(requests)) {
        Ok(responses) => respond(responses),
        Err(status) => trailers_only(&status),
    }
}

/// Reads a call's requests, decoded by `decode`: the first, and the rest
/// as they come; or the response refusing the call.
async fn first_of<T: Send + 'static, E: std::fmt::Display>(
    request: http::Request<Incoming>,
    decode: impl Fn(Bytes) -> Result<T, E> + Send + 'static,
) -> Result<(T, mpsc::Receiver<Result<T, Status>>), http::Response<tonic::body::Body>> {
    let (requests_tx, mut requests) = mpsc::channel(16);
    tokio::spawn(read_requests(request.into_body(), requests_tx, move |m| {
        decode(m).map_err(|e| Status::invalid_argument(format!("decoding a request: {e}")))
    }));
    match requests.recv().await {
        Some(Ok(first)) => Ok((first, requests)),
        Some(Err(status)) => Err(trailers_only(&status)),
        None => Err(trailers_only(&Status::invalid_argument(
            "stream closed before the first request",
        ))),
    }
}

/// Serves one DeltaAggregatedResources call (VHDS): small messages, but a
/// thousand streams, each of which tonic would give buffers of its own.
pub(crate) async fn delta<S: SnapshotSource>(
    ads: Arc<AdsServer<S>>,
    request: http::Request<Incoming>,
) -> http::Response<tonic::body::Body> {
    use prost::Message as _;
    let (first, requests) = match first_of(request, DeltaDiscoveryRequest::decode).await {
        Ok(call) => call,
        Err(refused) => return refused,
    };
    let mut responses = match ads.open_delta(first, ReceiverStream::new(requests)) {
        Ok(rx) => rx,
        Err(status) => return trailers_only(&status),
    };
    let (encoded_tx, encoded) = mpsc::channel(4);
    tokio::spawn(async move {
        while let Some(rsp) = responses.recv().await {
            let rsp = rsp.map(|r| Encoded {
                chunks: vec![Bytes::from(r.encode_to_vec())],
            });
            if encoded_tx.send(rsp).await.is_err() {
                return;
            }
        }
    });
    respond(encoded)
}

/// The streamed response: `responses` framed, then the status.
fn respond(
    responses: mpsc::Receiver<Result<Encoded, Status>>,
) -> http::Response<tonic::body::Body> {
    let (frames_tx, frames): (_, Frames) = mpsc::channel(4);
    tokio::spawn(write_responses(responses, frames_tx));
    let body = StreamBody::new(ReceiverStream::new(frames));
    let mut rsp = http::Response::new(tonic::body::Body::new(body));
    rsp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    rsp
}

/// Decodes length-prefixed requests from the body as they complete.
async fn read_requests<T>(
    mut body: Incoming,
    tx: mpsc::Sender<Result<T, Status>>,
    decode: impl Fn(Bytes) -> Result<T, Status>,
) {
    let mut buf = BytesMut::new();
    loop {
        // Whole messages first.
        while buf.len() >= HEADER {
            if buf[0] != 0 {
                let _ = tx
                    .send(Err(Status::unimplemented(
                        "compressed requests are not supported",
                    )))
                    .await;
                return;
            }
            let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
            if len > MAX_REQUEST {
                let _ = tx
                    .send(Err(Status::resource_exhausted(format!(
                        "a request of {len} bytes is over the limit of {MAX_REQUEST}"
                    ))))
                    .await;
                return;
            }
            if buf.len() < HEADER + len {
                buf.reserve(HEADER + len - buf.len());
                break;
            }
            buf.advance(HEADER);
            let message = buf.split_to(len);
            let decoded = decode(message.freeze());
            if buf.is_empty() {
                // Start afresh, so a large request's buffer does not live on.
                buf = BytesMut::new();
            }
            let failed = decoded.is_err();
            if tx.send(decoded).await.is_err() || failed {
                return;
            }
        }
        match body.frame().await {
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    buf.extend_from_slice(&data);
                }
            }
            Some(Err(e)) => {
                let _ = tx
                    .send(Err(Status::unavailable(format!("reading requests: {e}"))))
                    .await;
                return;
            }
            None => return,
        }
    }
}

/// Frames each response, then the status. A response's pieces that are
/// slices of shared parts (most of a large one) are written as they are;
/// small pieces are gathered into a buffer of their own, so that a
/// response is a few HTTP/2 frames, not one per resource.
async fn write_responses(
    mut responses: mpsc::Receiver<Result<Encoded, Status>>,
    frames: mpsc::Sender<Result<Frame<Bytes>, Infallible>>,
) {
    let status = loop {
        match responses.recv().await {
            Some(Ok(rsp)) => {
                let len = rsp.len();
                let Ok(len32) = u32::try_from(len) else {
                    break Status::internal(format!("a response of {len} bytes is too large"));
                };
                let mut out = Vec::new();
                let mut small = Vec::with_capacity(HEADER);
                small.push(0);
                small.extend_from_slice(&len32.to_be_bytes());
                for chunk in rsp.chunks {
                    if chunk.len() < GATHER {
                        small.extend_from_slice(&chunk);
                    } else {
                        if !small.is_empty() {
                            out.push(Bytes::from(std::mem::take(&mut small)));
                        }
                        out.push(chunk);
                    }
                }
                if !small.is_empty() {
                    out.push(Bytes::from(small));
                }
                for data in out {
                    if frames.send(Ok(Frame::data(data))).await.is_err() {
                        // The proxy went away.
                        return;
                    }
                }
            }
            Some(Err(status)) => break status,
            None => break Status::ok(""),
        }
    };
    let _ = frames
        .send(Ok(Frame::trailers(status_headers(&status))))
        .await;
}

fn status_headers(status: &Status) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert("grpc-status", HeaderValue::from(i32::from(status.code())));
    if !status.message().is_empty() {
        // Header values must be visible ASCII; gRPC percent-encodes the rest.
        let message: String = status
            .message()
            .bytes()
            .flat_map(|b| {
                if (0x20..0x7f).contains(&b) && b != b'%' {
                    vec![char::from(b)]
                } else {
                    format!("%{b:02X}").chars().collect()
                }
            })
            .collect();
        if let Ok(v) = HeaderValue::from_str(&message) {
            headers.insert("grpc-message", v);
        }
    }
    headers
}

/// A call refused before any response: the status in the headers.
fn trailers_only(status: &Status) -> http::Response<tonic::body::Body> {
    let mut rsp = http::Response::new(tonic::body::Body::empty());
    let headers = rsp.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    headers.extend(status_headers(status));
    rsp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_messages_are_percent_encoded() {
        let h = status_headers(&Status::failed_precondition("proxy x: bad ~ 100% é"));
        assert_eq!(h["grpc-status"], "9");
        assert_eq!(h["grpc-message"], "proxy x: bad ~ 100%25 %C3%A9");
    }
}
