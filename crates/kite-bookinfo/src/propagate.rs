//! Which inbound headers each app copies onto its outbound calls.

use http::{HeaderMap, HeaderName, HeaderValue};

/// Copied verbatim by productpage. B3 is handled apart (re-emitted from the
/// parsed context) and `end-user` comes from the session, never the client.
const PRODUCTPAGE_COPIED: &[&str] = &[
    "x-request-id",
    "x-ot-span-context",
    "x-datadog-trace-id",
    "x-datadog-parent-id",
    "x-datadog-sampling-priority",
    "traceparent",
    "tracestate",
    "x-cloud-trace-context",
    "grpc-trace-bin",
    "sw8",
    "user-agent",
    "cookie",
    "authorization",
    "jwt",
];

/// Copied verbatim by reviews (to ratings) and details v2 (to its book API).
const FORWARDED: &[&str] = &[
    "x-request-id",
    "x-b3-traceid",
    "x-b3-spanid",
    "x-b3-parentspanid",
    "x-b3-sampled",
    "x-b3-flags",
    "x-ot-span-context",
    "x-datadog-trace-id",
    "x-datadog-parent-id",
    "x-datadog-sampling-priority",
    "traceparent",
    "tracestate",
    "x-cloud-trace-context",
    "grpc-trace-bin",
    "sw8",
    "user-agent",
    "cookie",
    "authorization",
    "jwt",
    "end-user",
];

/// productpage's outbound headers: the B3 context re-emitted as an
/// OpenTelemetry B3 multi-header propagator writes it, the fixed copy list,
/// and `end-user` from the logged-in session only.
pub(crate) fn productpage(inbound: &HeaderMap, user: Option<&str>) -> HeaderMap {
    let mut out = copy(inbound, PRODUCTPAGE_COPIED);
    if let Some(ctx) = B3::extract(inbound) {
        ctx.inject(&mut out);
    }
    if let Some(value) = user.and_then(|u| HeaderValue::from_str(u).ok()) {
        out.insert(HeaderName::from_static("end-user"), value);
    }
    out
}

/// reviews' and details v2's outbound headers.
pub(crate) fn forwarded(inbound: &HeaderMap) -> HeaderMap {
    copy(inbound, FORWARDED)
}

fn copy(inbound: &HeaderMap, names: &[&'static str]) -> HeaderMap {
    let mut out = HeaderMap::new();
    for name in names {
        if let Some(value) = inbound.get(*name) {
            out.insert(HeaderName::from_static(name), value.clone());
        }
    }
    out
}

/// A B3 trace context; ids are kept as validated lower-case hex.
#[derive(Debug, PartialEq)]
struct B3 {
    trace_id: String,
    span_id: String,
    sampled: bool,
}

// === impl B3 ===

impl B3 {
    /// Multi-header form first; the single `b3` header is used only when it is
    /// the sole context the request carries.
    fn extract(headers: &HeaderMap) -> Option<Self> {
        let get = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        if let (Some(trace), Some(span)) = (get("x-b3-traceid"), get("x-b3-spanid")) {
            let sampled = matches!(get("x-b3-sampled"), Some("1" | "true" | "d"))
                || get("x-b3-flags") == Some("1");
            return Self::new(trace, span, sampled);
        }
        let single = get("b3")?;
        let mut fields = single.split('-');
        let (trace, span) = (fields.next()?, fields.next()?);
        let sampled = matches!(fields.next(), Some("1" | "d"));
        Self::new(trace, span, sampled)
    }

    fn new(trace: &str, span: &str, sampled: bool) -> Option<Self> {
        let valid = |id: &str, lens: &[usize]| {
            lens.contains(&id.len())
                && id.bytes().all(|b| b.is_ascii_hexdigit())
                && id.bytes().any(|b| b != b'0')
        };
        if !valid(trace, &[16, 32]) || !valid(span, &[16]) {
            return None;
        }
        Some(Self {
            trace_id: format!("{:0>32}", trace.to_ascii_lowercase()),
            span_id: span.to_ascii_lowercase(),
            sampled,
        })
    }

    fn inject(&self, out: &mut HeaderMap) {
        let mut put = |name: &'static str, value: &str| {
            if let Ok(value) = HeaderValue::from_str(value) {
                out.insert(HeaderName::from_static(name), value);
            }
        };
        put("x-b3-traceid", &self.trace_id);
        put("x-b3-spanid", &self.span_id);
        put("x-b3-sampled", if self.sampled { "1" } else { "0" });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| {
                (
                    HeaderName::from_bytes(k.as_bytes()).unwrap(),
                    HeaderValue::from_str(v).unwrap(),
                )
            })
            .collect()
    }

    fn get<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
        h.get(name).map(|v| v.to_str().unwrap())
    }

    #[test]
    fn productpage_pads_trace_id_and_drops_parent() {
        let out = productpage(
            &headers(&[
                ("x-request-id", "r1"),
                ("x-b3-traceid", "80F198EE56343BA8"),
                ("x-b3-spanid", "e457b5a2e4d86bd1"),
                ("x-b3-parentspanid", "05e3ac9a4f6e3b90"),
                ("x-b3-sampled", "1"),
                ("x-b3-flags", "0"),
                ("sw8", "1-abc"),
                ("x-forwarded-for", "1.2.3.4"),
                ("host", "productpage"),
            ]),
            None,
        );
        assert_eq!(get(&out, "x-request-id"), Some("r1"));
        assert_eq!(
            get(&out, "x-b3-traceid"),
            Some("000000000000000080f198ee56343ba8")
        );
        assert_eq!(get(&out, "x-b3-spanid"), Some("e457b5a2e4d86bd1"));
        assert_eq!(get(&out, "x-b3-sampled"), Some("1"));
        assert_eq!(get(&out, "x-b3-parentspanid"), None);
        assert_eq!(get(&out, "x-b3-flags"), None);
        assert_eq!(get(&out, "sw8"), Some("1-abc"));
        assert_eq!(get(&out, "x-forwarded-for"), None);
        assert_eq!(get(&out, "host"), None);
    }

    #[test]
    fn productpage_sampling_flags() {
        let ids = [
            ("x-b3-traceid", "0af7651916cd43dd8448eb211c80319c"),
            ("x-b3-spanid", "b7ad6b7169203331"),
        ];
        let out = productpage(&headers(&ids), None);
        assert_eq!(get(&out, "x-b3-sampled"), Some("0"));
        let mut debug = ids.to_vec();
        debug.push(("x-b3-flags", "1"));
        assert_eq!(
            get(&productpage(&headers(&debug), None), "x-b3-sampled"),
            Some("1")
        );
    }

    #[test]
    fn productpage_ignores_invalid_b3() {
        for bad in [
            [("x-b3-traceid", "xyz"), ("x-b3-spanid", "b7ad6b7169203331")],
            [
                ("x-b3-traceid", "0000000000000000"),
                ("x-b3-spanid", "b7ad6b7169203331"),
            ],
            [
                ("x-b3-traceid", "80f198ee56343ba8"),
                ("x-b3-spanid", "b7ad"),
            ],
        ] {
            let out = productpage(&headers(&bad), None);
            assert!(out.is_empty(), "{bad:?} gave {out:?}");
        }
    }

    #[test]
    fn productpage_converts_single_b3() {
        let out = productpage(
            &headers(&[(
                "b3",
                "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1-05e3ac9a4f6e3b90",
            )]),
            None,
        );
        assert_eq!(get(&out, "b3"), None);
        assert_eq!(
            get(&out, "x-b3-traceid"),
            Some("80f198ee56343ba864fe8b2a57d3eff7")
        );
        assert_eq!(get(&out, "x-b3-spanid"), Some("e457b5a2e4d86bd1"));
        assert_eq!(get(&out, "x-b3-sampled"), Some("1"));
        // A sampling-only b3 header carries no context.
        assert!(productpage(&headers(&[("b3", "1")]), None).is_empty());
    }

    #[test]
    fn end_user_only_from_session() {
        let inbound = headers(&[("end-user", "mallory"), ("cookie", "session=x")]);
        let anonymous = productpage(&inbound, None);
        assert_eq!(get(&anonymous, "end-user"), None);
        assert_eq!(get(&anonymous, "cookie"), Some("session=x"));
        let jason = productpage(&inbound, Some("jason"));
        assert_eq!(get(&jason, "end-user"), Some("jason"));
    }

    #[test]
    fn reviews_copies_all_b3_and_end_user() {
        let out = forwarded(&headers(&[
            ("x-b3-parentspanid", "05e3ac9a4f6e3b90"),
            ("x-b3-flags", "1"),
            ("end-user", "jason"),
            ("b3", "1"),
            ("accept", "text/html"),
        ]));
        assert_eq!(get(&out, "x-b3-parentspanid"), Some("05e3ac9a4f6e3b90"));
        assert_eq!(get(&out, "x-b3-flags"), Some("1"));
        assert_eq!(get(&out, "end-user"), Some("jason"));
        assert_eq!(get(&out, "b3"), None);
        assert_eq!(get(&out, "accept"), None);
    }
}
