//! Route tables: virtual hosts, matches and where each route goes, from
//! Kite's and Envoy's dumps.

use super::*;

/// The shortest three domains, then how many more there are.
pub(super) fn domains(list: &[Value]) -> String {
    let mut names: Vec<&str> = list.iter().filter_map(Value::as_str).collect();
    names.sort_by_key(|d| d.len());
    match names.len() {
        0 => "-".to_owned(),
        n if n > 3 => format!("{} +{} more", names[..3].join(", "), n - 3),
        _ => names.join(", "),
    }
}

pub(super) fn routes_table(format: Format, route_configs: &[Value]) -> String {
    let mut configs: Vec<&Value> = route_configs.iter().collect();
    configs.sort_by_key(|rc| s(&rc["name"]));
    let mut rows = Vec::new();
    for rc in configs {
        for vh in rc["virtual_hosts"].as_array().into_iter().flatten() {
            let domain_list = vh["domains"].as_array().cloned().unwrap_or_default();
            for r in vh["routes"].as_array().into_iter().flatten() {
                let (matcher, dest) = match format {
                    Format::Kite => kite_route(r),
                    Format::Envoy => envoy_route(r),
                };
                rows.push(vec![
                    or_dash(s(&rc["name"])),
                    or_dash(s(&vh["name"])),
                    domains(&domain_list),
                    or_dash(&matcher),
                    or_dash(s(&r["name"])),
                    or_dash(&dest),
                ]);
            }
        }
    }
    table(
        &[
            "NAME",
            "VHOST NAME",
            "DOMAINS",
            "MATCH",
            "ROUTE",
            "DESTINATION",
        ],
        &rows,
    )
}

/// Clusters with their share of the traffic when there are several.
pub(super) fn weighted<'a>(clusters: impl Iterator<Item = &'a Value>) -> String {
    let list: Vec<(&str, u64)> = clusters
        .map(|c| (s(&c["name"]), c["weight"].as_u64().unwrap_or(0)))
        .collect();
    let total: u64 = list.iter().map(|(_, w)| w).sum();
    match list.as_slice() {
        [(name, _)] => (*name).to_owned(),
        _ => list
            .iter()
            .map(|(name, w)| {
                let percent = (w * 100 + total / 2).checked_div(total).unwrap_or(0);
                format!("{name} ({percent}%)")
            })
            .collect::<Vec<_>>()
            .join(", "),
    }
}

/// (match, destination) of a route in Kite's dump, where matchers are
/// written in Rust's debug notation: `Prefix("/")`,
/// `end-userSome(Exact("jason"))`.
pub(super) fn kite_route(r: &Value) -> (String, String) {
    let mut conds = Vec::new();
    let path = s(&r["match"]);
    conds.push(match debug_call(path) {
        Some(("Prefix", p)) => format!("{p}*"),
        Some(("Exact", p)) => p,
        Some(("Regex", p)) => format!("regex {}", strip_anchors(&p)),
        _ => path.to_owned(),
    });
    for h in r["headers"].as_array().into_iter().flatten().map(s) {
        let (name, matcher) = match h.find("Some(") {
            Some(i) => (&h[..i], debug_call(&h[i..]).map(|(_, m)| m)),
            None => (h.strip_suffix("None").unwrap_or(h), None),
        };
        conds.push(match matcher.as_deref().and_then(debug_call) {
            Some((kind, v)) => header_cond(name, kind, &v, false),
            None => name.to_owned(),
        });
    }
    let action = &r["action"];
    let mut dest = if let Some(clusters) = action["clusters"].as_array() {
        weighted(clusters.iter())
    } else if action.get("redirect").is_some() {
        "redirect".to_owned()
    } else if let Some(status) = action["direct_response"].as_u64() {
        format!("direct response {status}")
    } else {
        String::new()
    };
    if !r["fault"].is_null() {
        dest.push_str(" [fault]");
    }
    (conds.join(" "), dest)
}

/// `Variant(inner)` → (`Variant`, inner), with a quoted inner string
/// unquoted.
fn debug_call(v: &str) -> Option<(&str, String)> {
    let open = v.find('(')?;
    let inner = v[open + 1..].strip_suffix(')')?;
    let inner = if inner.starts_with('"') {
        serde_json::from_str::<String>(inner).unwrap_or_else(|_| inner.trim_matches('"').to_owned())
    } else if let Some((_, regex)) = debug_call(inner).filter(|(k, _)| *k == "Regex") {
        regex
    } else {
        inner.to_owned()
    };
    Some((&v[..open], inner))
}

/// Kite anchors its regexes as `^(?:…)$`; show the pattern as written.
fn strip_anchors(re: &str) -> &str {
    re.strip_prefix("^(?:")
        .and_then(|r| r.strip_suffix(")$"))
        .unwrap_or(re)
}

fn header_cond(name: &str, kind: &str, v: &str, invert: bool) -> String {
    let not = if invert { "!" } else { "" };
    match kind {
        "Exact" | "exact" => format!("{not}{name}={v}"),
        "Prefix" | "prefix" => format!("{not}{name}={v}*"),
        "Suffix" | "suffix" => format!("{not}{name}=*{v}"),
        "Contains" | "contains" => format!("{not}{name}=*{v}*"),
        "Regex" | "safe_regex" => format!("{not}{name}~{}", strip_anchors(v)),
        _ => format!("{not}{name}"),
    }
}

/// (match, destination) of a route in Envoy's dump.
pub(super) fn envoy_route(r: &Value) -> (String, String) {
    let m = &r["match"];
    let mut conds = Vec::new();
    if let Some(p) = m["prefix"].as_str() {
        conds.push(format!("{p}*"));
    } else if let Some(p) = m["path"].as_str() {
        conds.push(p.to_owned());
    } else if let Some(p) = m["path_separated_prefix"].as_str() {
        conds.push(format!("{p}/*"));
    } else if let Some(p) = m["safe_regex"]["regex"].as_str() {
        conds.push(format!("regex {p}"));
    }
    for h in m["headers"].as_array().into_iter().flatten() {
        let name = s(&h["name"]);
        let invert = h["invert_match"].as_bool().unwrap_or(false);
        let sm = if h["string_match"].is_object() {
            &h["string_match"]
        } else {
            h
        };
        let cond = if let Some(v) = sm["exact"].as_str().or(sm["exact_match"].as_str()) {
            header_cond(name, "exact", v, invert)
        } else if let Some(v) = sm["prefix"].as_str().or(sm["prefix_match"].as_str()) {
            header_cond(name, "prefix", v, invert)
        } else if let Some(v) = sm["suffix"].as_str().or(sm["suffix_match"].as_str()) {
            header_cond(name, "suffix", v, invert)
        } else if let Some(v) = sm["contains"].as_str().or(sm["contains_match"].as_str()) {
            header_cond(name, "contains", v, invert)
        } else if let Some(v) = sm["safe_regex"]["regex"]
            .as_str()
            .or(sm["safe_regex_match"]["regex"].as_str())
        {
            header_cond(name, "safe_regex", v, invert)
        } else {
            header_cond(name, "present", "", invert)
        };
        conds.push(cond);
    }
    let mut dest = if r["route"].is_object() {
        let route = &r["route"];
        if let Some(c) = route["cluster"].as_str() {
            c.to_owned()
        } else if let Some(list) = route["weighted_clusters"]["clusters"].as_array() {
            weighted(list.iter())
        } else if let Some(h) = route["cluster_header"].as_str() {
            format!("cluster from header {h}")
        } else {
            String::new()
        }
    } else if r["redirect"].is_object() {
        let rd = &r["redirect"];
        let target = format!(
            "{}{}",
            s(&rd["host_redirect"]),
            rd["path_redirect"]
                .as_str()
                .or(rd["prefix_rewrite"].as_str())
                .unwrap_or_default()
        );
        if target.is_empty() {
            "redirect".to_owned()
        } else {
            format!("redirect {target}")
        }
    } else if let Some(status) = r["direct_response"]["status"].as_u64() {
        format!("direct response {status}")
    } else {
        String::new()
    };
    let has_fault = r["typed_per_filter_config"]
        .as_object()
        .is_some_and(|m| m.keys().any(|k| k.contains("fault")));
    if has_fault {
        dest.push_str(" [fault]");
    }
    (conds.join(" "), dest)
}
