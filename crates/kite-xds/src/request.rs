//! A DiscoveryRequest whose resource names stay in the buffer they came
//! in. A proxy repeats every name it wants in every request, ACKs
//! included: at scale that is thousands of EDS names per ACK, nearly always
//! the same as last time. Decoding them into strings per ACK was most of
//! the control plane's CPU during a push; here they are compared in place
//! and copied only when they changed.

use std::ops::Range;

use bytes::{Buf, Bytes};
use envoy_types::pb::{
    envoy::{config::core::v3::Node, service::discovery::v3::DiscoveryRequest},
    google::rpc::Status as RpcStatus,
};
use prost::{DecodeError, Message, encoding::decode_varint};

/// `DiscoveryRequest.resource_names`.
const RESOURCE_NAMES: u64 = 3;

fn skip(at: &[u8], n: usize) -> Result<&[u8], RequestError> {
    at.get(n..)
        .ok_or(RequestError::Malformed("a field runs past the message"))
}

/// The fields of a request the server acts on.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Request {
    pub version_info: String,
    pub node: Option<Node>,
    pub type_url: String,
    pub response_nonce: String,
    pub error_detail: Option<RpcStatus>,
    names: RawNames,
}

#[derive(Clone, Debug, PartialEq)]
enum RawNames {
    /// The encoded request, and where in it its `resource_names` fields
    /// are: from the first to the last, with no other field between them
    /// when `contiguous` (as every encoder writes them, in field order).
    Encoded {
        buf: Bytes,
        span: Range<usize>,
        contiguous: bool,
    },
    Decoded(Vec<String>),
}

#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error("malformed request: {0}")]
    Malformed(&'static str),
    #[error(transparent)]
    Decode(#[from] DecodeError),
}

/// Every field of a DiscoveryRequest but the names.
#[derive(Clone, PartialEq, prost::Message)]
struct Head {
    #[prost(string, tag = "1")]
    version_info: String,
    #[prost(message, optional, tag = "2")]
    node: Option<Node>,
    #[prost(string, tag = "4")]
    type_url: String,
    #[prost(string, tag = "5")]
    response_nonce: String,
    #[prost(message, optional, tag = "6")]
    error_detail: Option<RpcStatus>,
}

/// The `resource_names` of an encoded request, in order.
struct Scan<'a> {
    buf: &'a [u8],
}

impl Default for RawNames {
    fn default() -> Self {
        Self::Decoded(Vec::new())
    }
}

// === impl Request ===

impl Request {
    /// Decodes `buf`, one encoded DiscoveryRequest, keeping the names in
    /// it: one pass finds them and sets the other fields apart, which are
    /// decoded as usual.
    pub fn decode(buf: Bytes) -> Result<Self, RequestError> {
        let mut rest = Vec::new();
        let mut span: Option<Range<usize>> = None;
        let mut contiguous = true;
        let mut at = &buf[..];
        while !at.is_empty() {
            let start = buf.len() - at.len();
            let key = decode_varint(&mut at)?;
            match key & 7 {
                0 => {
                    decode_varint(&mut at)?;
                }
                1 => at = skip(at, 8)?,
                2 => {
                    let len = usize::try_from(decode_varint(&mut at)?)
                        .map_err(|_| RequestError::Malformed("a length out of range"))?;
                    at = skip(at, len)?;
                }
                5 => at = skip(at, 4)?,
                _ => return Err(RequestError::Malformed("an unexpected wire type")),
            }
            let end = buf.len() - at.len();
            if key == RESOURCE_NAMES << 3 | 2 {
                match &mut span {
                    Some(s) => {
                        contiguous &= s.end == start;
                        s.end = end;
                    }
                    None => span = Some(start..end),
                }
            } else {
                rest.extend_from_slice(&buf[start..end]);
            }
        }
        let head = Head::decode(rest.as_slice())?;
        Ok(Self {
            version_info: head.version_info,
            node: head.node,
            type_url: head.type_url,
            response_nonce: head.response_nonce,
            error_detail: head.error_detail,
            names: RawNames::Encoded {
                buf,
                span: span.unwrap_or(0..0),
                contiguous,
            },
        })
    }

    /// The requested names as sent, undecoded.
    pub fn names(&self) -> impl Iterator<Item = &[u8]> + '_ {
        let (encoded, decoded) = match &self.names {
            RawNames::Encoded { buf, span, .. } => (
                Some(Scan {
                    buf: &buf[span.clone()],
                }),
                None,
            ),
            RawNames::Decoded(names) => (None, Some(names.iter().map(String::as_bytes))),
        };
        encoded
            .into_iter()
            .flatten()
            .chain(decoded.into_iter().flatten())
    }

    /// The requested names as their `resource_names` fields, in one piece
    /// as sent, when they were sent in one piece.
    pub fn encoded_names(&self) -> Option<&[u8]> {
        match &self.names {
            RawNames::Encoded {
                buf,
                span,
                contiguous: true,
            } => Some(&buf[span.clone()]),
            _ => None,
        }
    }

    /// The requested names as strings; a name that is not UTF-8 (no proxy
    /// sends one) is kept lossily, and then matches no resource.
    pub fn names_owned(&self) -> Vec<String> {
        match &self.names {
            RawNames::Decoded(names) => names.clone(),
            RawNames::Encoded { .. } => self
                .names()
                .map(|n| String::from_utf8_lossy(n).into_owned())
                .collect(),
        }
    }
}

impl From<DiscoveryRequest> for Request {
    fn from(req: DiscoveryRequest) -> Self {
        Self {
            version_info: req.version_info,
            node: req.node,
            type_url: req.type_url,
            response_nonce: req.response_nonce,
            error_detail: req.error_detail,
            names: RawNames::Decoded(req.resource_names),
        }
    }
}

// === impl Scan ===

impl<'a> Iterator for Scan<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        // The message was walked whole before, so it is well-formed; a
        // malformed rest just ends the names.
        while self.buf.has_remaining() {
            let key = decode_varint(&mut self.buf).ok()?;
            match key & 7 {
                0 => {
                    decode_varint(&mut self.buf).ok()?;
                }
                1 => self.skip(8)?,
                2 => {
                    let len = usize::try_from(decode_varint(&mut self.buf).ok()?).ok()?;
                    if len > self.buf.len() {
                        return None;
                    }
                    let (field, rest) = self.buf.split_at(len);
                    self.buf = rest;
                    if key >> 3 == RESOURCE_NAMES {
                        return Some(field);
                    }
                }
                5 => self.skip(4)?,
                // Groups are not in DiscoveryRequest.
                _ => return None,
            }
        }
        None
    }
}

impl Scan<'_> {
    fn skip(&mut self, n: usize) -> Option<()> {
        if n > self.buf.len() {
            self.buf = &[];
            return None;
        }
        self.buf = &self.buf[n..];
        Some(())
    }
}

#[cfg(test)]
mod tests {
    use envoy_types::pb::envoy::config::core::v3::Node;

    use super::*;

    #[test]
    fn names_are_read_in_place_and_the_rest_decoded() {
        let req = DiscoveryRequest {
            version_info: "v1".into(),
            node: Some(Node {
                id: "sidecar~1.2.3.4~a.b~b.svc.cluster.local".into(),
                ..Default::default()
            }),
            resource_names: vec!["outbound|80||a".into(), String::new(), "é".into()],
            type_url: crate::type_url::ENDPOINT.into(),
            response_nonce: "7".into(),
            error_detail: Some(RpcStatus {
                code: 3,
                message: "bad".into(),
                details: vec![],
            }),
            ..Default::default()
        };
        let decoded = Request::decode(Bytes::from(req.encode_to_vec())).unwrap();
        let from = Request::from(req.clone());
        for r in [&decoded, &from] {
            assert_eq!(r.version_info, "v1");
            assert_eq!(r.node, req.node);
            assert_eq!(r.type_url, req.type_url);
            assert_eq!(r.response_nonce, "7");
            assert_eq!(r.error_detail, req.error_detail);
            assert_eq!(r.names_owned(), req.resource_names);
            let names: Vec<&[u8]> = r.names().collect();
            assert_eq!(names, [&b"outbound|80||a"[..], b"", "é".as_bytes()]);
        }
        let mut expected = Vec::new();
        for n in &req.resource_names {
            prost::encoding::string::encode(3, n, &mut expected);
        }
        assert_eq!(decoded.encoded_names(), Some(expected.as_slice()));
        assert_eq!(from.encoded_names(), None);
    }

    #[test]
    fn names_between_other_fields_are_found() {
        let mut buf = Vec::new();
        prost::encoding::string::encode(3, &"a".to_owned(), &mut buf);
        prost::encoding::string::encode(4, &"t".to_owned(), &mut buf);
        prost::encoding::string::encode(3, &"b".to_owned(), &mut buf);
        let r = Request::decode(Bytes::from(buf)).unwrap();
        assert_eq!(r.type_url, "t");
        assert_eq!(r.names_owned(), ["a", "b"]);
        assert_eq!(r.encoded_names(), None);
    }

    #[test]
    fn malformed_requests_are_refused() {
        assert!(Request::decode(Bytes::from_static(&[0x1a, 0x05, b'a'])).is_err());
    }
}
