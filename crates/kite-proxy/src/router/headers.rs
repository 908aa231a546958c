//! The headers a hop sets, strips and rewrites: Envoy's connection
//! manager's (request id, forwarding, B3 trace context, client
//! certificate), hop-by-hop removal, and a route's header operations.

use std::net::SocketAddr;

use http::{HeaderMap, HeaderName, HeaderValue, header};

use super::{Shared, chance};
use crate::config::{HeaderOps, HttpManager};

const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("proxy-connection"),
    HeaderName::from_static("keep-alive"),
    header::TRANSFER_ENCODING,
    header::TE,
    header::TRAILER,
    header::UPGRADE,
    header::PROXY_AUTHORIZATION,
];

const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_B3_TRACEID: HeaderName = HeaderName::from_static("x-b3-traceid");
const X_B3_SPANID: HeaderName = HeaderName::from_static("x-b3-spanid");
const X_B3_PARENTSPANID: HeaderName = HeaderName::from_static("x-b3-parentspanid");
const X_B3_SAMPLED: HeaderName = HeaderName::from_static("x-b3-sampled");

/// Headers Envoy's connection manager sets on every request.
pub(super) fn prepare_headers(headers: &mut HeaderMap, hcm: &HttpManager, peer: SocketAddr) {
    strip_hop_by_hop(headers);
    if !headers.contains_key(X_REQUEST_ID) {
        headers.insert(X_REQUEST_ID, uuid_v4());
    }
    if hcm.use_remote_address {
        let ip = peer.ip().to_string();
        let xff = match headers.get(X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
            Some(existing) => format!("{existing}, {ip}"),
            None => ip,
        };
        if let Ok(v) = HeaderValue::from_str(&xff) {
            headers.insert(X_FORWARDED_FOR, v);
        }
    }
    headers
        .entry(X_FORWARDED_PROTO)
        .or_insert(HeaderValue::from_static("http"));
    trace_context(headers);
}

/// B3 context as Istio's proxies set it: a new trace at the first hop
/// (sampled at Istio's default 1 %), and a new span for every hop after, so
/// that apps that propagate the headers stitch one trace.
fn trace_context(headers: &mut HeaderMap) {
    let span = || hex_value(u128::from(fastrand::u64(1..)), 16);
    match (
        headers.contains_key(X_B3_TRACEID),
        headers.get(X_B3_SPANID).cloned(),
    ) {
        (true, Some(parent)) => {
            headers.insert(X_B3_PARENTSPANID, parent);
            headers.insert(X_B3_SPANID, span());
        }
        (true, None) => {
            headers.insert(X_B3_SPANID, span());
        }
        (false, _) => {
            headers.insert(X_B3_TRACEID, hex_value(fastrand::u128(1..), 32));
            headers.insert(X_B3_SPANID, span());
            headers.insert(
                X_B3_SAMPLED,
                HeaderValue::from_static(if chance(10_000) { "1" } else { "0" }),
            );
        }
    }
}

/// The low `digits` hex digits of `n`, as a header value.
fn hex_value(n: u128, digits: usize) -> HeaderValue {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut buf = [0u8; 32];
    for (i, b) in buf[..digits].iter_mut().enumerate() {
        *b = HEX[((n >> (4 * (digits - 1 - i))) & 0xf) as usize];
    }
    HeaderValue::from_bytes(&buf[..digits]).unwrap_or(HeaderValue::from_static("0"))
}

/// `x-forwarded-client-cert` as Istio's sidecars set it on mTLS
/// connections (SANITIZE_SET): whatever the client sent is replaced by
/// this proxy's identity (`By`) and the peer's (`URI`).
pub(super) fn client_cert_header(
    shared: &Shared,
    peer: Option<&kite_identity::SpiffeId>,
    headers: &mut HeaderMap,
) {
    headers.remove("x-forwarded-client-cert");
    let own = match shared.identity.as_ref().map(|w| w.borrow().clone()) {
        Some(crate::identity::Status::Ready(a)) => a.id.to_string(),
        _ => return,
    };
    let Some(peer) = peer else { return };
    if let Ok(v) = HeaderValue::from_str(&format!("By={own};URI={peer}")) {
        headers.insert(HeaderName::from_static("x-forwarded-client-cert"), v);
    }
}

pub(super) fn is_websocket(headers: &HeaderMap) -> bool {
    headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

pub(super) fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Headers the Connection header names are hop-by-hop too; most
    // messages name none or only standard ones.
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|s| HeaderName::from_bytes(s.trim().as_bytes()).ok())
        .collect();
    for h in HOP_BY_HOP.iter().chain(&named) {
        headers.remove(h);
    }
}

fn uuid_v4() -> HeaderValue {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut b = fastrand::u128(..).to_be_bytes();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let mut out = [0u8; 36];
    let mut i = 0;
    for (n, x) in b.iter().enumerate() {
        if matches!(n, 4 | 6 | 8 | 10) {
            out[i] = b'-';
            i += 1;
        }
        out[i] = HEX[usize::from(x >> 4)];
        out[i + 1] = HEX[usize::from(x & 0xf)];
        i += 2;
    }
    HeaderValue::from_bytes(&out).unwrap_or(HeaderValue::from_static("0"))
}

pub(super) fn apply_ops(headers: &mut HeaderMap, ops: &HeaderOps) {
    for name in &ops.remove {
        headers.remove(name);
    }
    for (name, value, overwrite) in &ops.add {
        if *overwrite {
            headers.insert(name.clone(), value.clone());
        } else {
            headers.append(name.clone(), value.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_version_4_uuids() {
        let id = uuid_v4();
        let s = id.to_str().unwrap();
        let groups: Vec<usize> = s.split('-').map(str::len).collect();
        assert_eq!(groups, [8, 4, 4, 4, 12], "{s}");
        assert_eq!(&s[14..15], "4", "version nibble: {s}");
        assert!(matches!(&s[19..20], "8" | "9" | "a" | "b"), "variant: {s}");
        assert!(
            s.bytes()
                .all(|c| c == b'-' || c.is_ascii_digit() || (b'a'..=b'f').contains(&c)),
            "{s}"
        );
        assert_ne!(uuid_v4(), uuid_v4());
    }

    #[test]
    fn trace_ids_keep_their_width() {
        assert_eq!(hex_value(0xabc, 16), "0000000000000abc");
        assert_eq!(hex_value(u128::MAX, 32), "f".repeat(32).as_str());
    }

    #[test]
    fn a_hop_starts_a_child_span_of_the_callers() {
        let mut h = HeaderMap::new();
        h.insert(X_B3_TRACEID, HeaderValue::from_static("463ac35c9f6413ad"));
        h.insert(X_B3_SPANID, HeaderValue::from_static("a2fb4a1d1a96d312"));
        trace_context(&mut h);
        assert_eq!(h[X_B3_TRACEID], "463ac35c9f6413ad");
        assert_eq!(h[X_B3_PARENTSPANID], "a2fb4a1d1a96d312");
        assert_eq!(h[X_B3_SPANID].len(), 16);
        assert_ne!(h[X_B3_SPANID], "a2fb4a1d1a96d312");

        let mut fresh = HeaderMap::new();
        trace_context(&mut fresh);
        assert_eq!(fresh[X_B3_TRACEID].len(), 32);
        assert!(matches!(fresh[X_B3_SAMPLED].to_str(), Ok("0" | "1")));
    }

    #[test]
    fn hop_by_hop_headers_go_with_the_ones_connection_names() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, X-Private"),
        );
        h.insert("x-private", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        h.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        let left: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
        assert_eq!(left, ["x-kept"]);
    }
}
