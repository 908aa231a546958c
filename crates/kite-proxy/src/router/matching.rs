//! Which virtual host and route a request takes: Envoy's domain order,
//! then the first route whose path, headers and query match.

use super::*;

/// A route table that takes its hosts by VHDS has no answer yet for the
/// request's host.
pub(super) struct Unanswered;

/// In route table `rc`, the first virtual host whose domains admit the
/// authority (exact, then the longest wildcard suffix, then prefix, then
/// `*`), then its first matching route. A host VHDS serves has an exact
/// domain, which wins; one VHDS has not answered for is `Unanswered` if
/// `ask`, else routed by the table alone.
pub(super) fn select<'a, B>(
    state: &'a State,
    rc: &str,
    authority: &str,
    req: &Request<B>,
    ask: bool,
) -> Result<Option<&'a Route>, Unanswered> {
    let Some(rc) = state.routes.get(rc) else {
        return Ok(None);
    };
    let vhost = match rc.vhds.then(|| state.vhds_host(&rc.name, authority)) {
        Some(Some(Some(vhost))) => Some(&**vhost),
        Some(None) if ask => return Err(Unanswered),
        _ => pick_vhost(&rc.vhosts, authority),
    };
    Ok(vhost.and_then(|vh| vh.routes.iter().find(|r| matches(r, req, authority))))
}

pub(super) fn pick_vhost<'a>(vhosts: &'a [VirtualHost], host: &str) -> Option<&'a VirtualHost> {
    let mut best: Option<(&VirtualHost, usize, u8)> = None;
    for vh in vhosts {
        for d in &vh.domains {
            let (rank, len) = if d == host {
                (3, d.len())
            } else if let Some(suffix) = d.strip_prefix('*').filter(|s| !s.is_empty()) {
                if host.ends_with(suffix) && host.len() > suffix.len() {
                    (2, suffix.len())
                } else {
                    continue;
                }
            } else if let Some(prefix) = d.strip_suffix('*').filter(|p| !p.is_empty()) {
                if host.starts_with(prefix) && host.len() > prefix.len() {
                    (1, prefix.len())
                } else {
                    continue;
                }
            } else if d == "*" {
                (0, 0)
            } else {
                continue;
            };
            if best.is_none_or(|(_, l, r)| (rank, len) > (r, l)) {
                best = Some((vh, len, rank));
            }
        }
    }
    best.map(|(vh, _, _)| vh)
}

pub(super) fn matches<B>(route: &Route, req: &Request<B>, authority: &str) -> bool {
    let m = &route.matcher;
    let path = req.uri().path();
    // CONNECT requests match only CONNECT routes, and only they do.
    if (req.method() == Method::CONNECT) != matches!(m.path, PathMatch::Connect) {
        return false;
    }
    let ok = match &m.path {
        PathMatch::Connect => true,
        PathMatch::Prefix(p) if m.case_sensitive => path.starts_with(p.as_str()),
        PathMatch::Prefix(p) => path
            .to_ascii_lowercase()
            .starts_with(&p.to_ascii_lowercase()),
        PathMatch::Exact(p) if m.case_sensitive => path == p,
        PathMatch::Exact(p) => path.eq_ignore_ascii_case(p),
        PathMatch::Regex(r) => r.is_match(path),
    };
    if !ok {
        return false;
    }
    if !m.headers.iter().all(|h| header_matches(h, req, authority)) {
        return false;
    }
    let query: Vec<(String, String)> = req
        .uri()
        .query()
        .unwrap_or_default()
        .split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (k.to_owned(), v.to_owned())
        })
        .collect();
    m.query.iter().all(|(name, matcher)| {
        query
            .iter()
            .find(|(k, _)| k == name)
            .is_some_and(|(_, v)| matcher.as_ref().is_none_or(|sm| str_matches(sm, v)))
    })
}

pub(super) fn header_matches<B>(h: &HeaderMatch, req: &Request<B>, authority: &str) -> bool {
    let value: Option<String> = match h.name.as_str() {
        ":method" => Some(req.method().as_str().to_owned()),
        ":authority" => Some(authority.to_owned()),
        ":path" => req.uri().path_and_query().map(|p| p.to_string()),
        ":scheme" => Some(req.uri().scheme_str().unwrap_or("http").to_owned()),
        name => {
            let values: Vec<&str> = req
                .headers()
                .get_all(name)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .collect();
            (!values.is_empty()).then(|| values.join(","))
        }
    };
    let hit = match (&value, &h.matcher) {
        (None, _) => false,
        (Some(_), None) => true,
        (Some(v), Some(sm)) => str_matches(sm, v),
    };
    hit != h.invert
}

pub(super) fn str_matches(m: &StrMatch, v: &str) -> bool {
    match m {
        StrMatch::Exact(s) => v == s,
        StrMatch::Prefix(s) => v.starts_with(s.as_str()),
        StrMatch::Suffix(s) => v.ends_with(s.as_str()),
        StrMatch::Contains(s) => v.contains(s.as_str()),
        StrMatch::Regex(r) => r.is_match(v),
    }
}
