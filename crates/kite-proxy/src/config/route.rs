//! Route configurations: virtual hosts, matches, actions.

use envoy_types::pb::envoy::config::core::v3::config_source::ConfigSourceSpecifier;

use super::*;

impl TryFrom<&Any> for RouteConfig {
    type Error = Unsupported;

    fn try_from(any: &Any) -> Result<Self, Unsupported> {
        let rc: RouteConfiguration = decode(any, "route configuration")?;
        let name = format!("route configuration {}", rc.name);
        let vhosts = rc
            .virtual_hosts
            .iter()
            .map(|vh| vhost(vh, &name))
            .collect::<Result<_, _>>()?;
        let vhds = match &rc.vhds {
            None => false,
            Some(v) => match v
                .config_source
                .as_ref()
                .and_then(|c| c.config_source_specifier.as_ref())
            {
                Some(ConfigSourceSpecifier::Ads(_)) => true,
                _ => {
                    return Err(bad(
                        &name,
                        "VHDS is supported from the ADS server only (vhds.config_source: ads)",
                    ));
                }
            },
        };
        Ok(RouteConfig {
            name: rc.name,
            vhosts,
            vhds,
        })
    }
}

impl VirtualHost {
    /// A virtual host from VHDS, under its resource name.
    pub fn from_vhds(name: &str, any: &Any) -> Result<Self, Unsupported> {
        let resource = format!("virtual host {name}");
        if any.type_url != kite_xds::type_url::VIRTUAL_HOST {
            return Err(bad(
                &resource,
                format!("a {} is not a virtual host", any.type_url),
            ));
        }
        let vh: PbVirtualHost = decode(any, &resource)?;
        vhost(&vh, "VHDS")
    }
}

fn vhost(vh: &PbVirtualHost, parent: &str) -> Result<VirtualHost, Unsupported> {
    let name = format!("{parent} virtual host {}", vh.name);
    if !vh.typed_per_filter_config.is_empty() {
        return Err(bad(&name, "virtual-host filter config is not supported"));
    }
    Ok(VirtualHost {
        name: vh.name.clone(),
        domains: vh.domains.iter().map(|d| d.to_ascii_lowercase()).collect(),
        routes: vh
            .routes
            .iter()
            .map(|r| route(r, &name))
            .collect::<Result<_, _>>()?,
    })
}

fn header_ops(
    add: &[HeaderValueOption],
    remove: &[String],
    resource: &str,
) -> Result<HeaderOps, Unsupported> {
    let mut ops = HeaderOps::default();
    for opt in add {
        let Some(h) = &opt.header else { continue };
        let name = HeaderName::from_bytes(h.key.as_bytes())
            .map_err(|_| bad(resource, format!("bad header name {:?}", h.key)))?;
        let value = HeaderValue::from_str(&h.value)
            .map_err(|_| bad(resource, format!("bad header value for {}", h.key)))?;
        let overwrite = matches!(
            HeaderAppendAction::try_from(opt.append_action),
            Ok(HeaderAppendAction::OverwriteIfExistsOrAdd | HeaderAppendAction::OverwriteIfExists)
        );
        ops.add.push((name, value, overwrite));
    }
    for r in remove {
        ops.remove.push(
            HeaderName::from_bytes(r.as_bytes())
                .map_err(|_| bad(resource, format!("bad header name {r:?}")))?,
        );
    }
    Ok(ops)
}

fn regex(pattern: &str, resource: &str) -> Result<Regex, Unsupported> {
    // Envoy's RE2 matches the whole input.
    Regex::new(&format!("^(?:{pattern})$"))
        .map_err(|e| bad(resource, format!("regex {pattern:?}: {e}")))
}

fn str_match(m: &StringMatcher, resource: &str) -> Result<StrMatch, Unsupported> {
    if m.ignore_case {
        return Err(bad(
            resource,
            "case-insensitive string matches are not supported",
        ));
    }
    Ok(match &m.match_pattern {
        Some(MatchPattern::Exact(s)) => StrMatch::Exact(s.clone()),
        Some(MatchPattern::Prefix(s)) => StrMatch::Prefix(s.clone()),
        Some(MatchPattern::Suffix(s)) => StrMatch::Suffix(s.clone()),
        Some(MatchPattern::Contains(s)) => StrMatch::Contains(s.clone()),
        Some(MatchPattern::SafeRegex(r)) => StrMatch::Regex(regex(&r.regex, resource)?),
        _ => return Err(bad(resource, "unsupported string matcher")),
    })
}

fn route_match(m: &PbRouteMatch, resource: &str) -> Result<RouteMatch, Unsupported> {
    let path = match &m.path_specifier {
        Some(PathSpecifier::Prefix(p)) => PathMatch::Prefix(p.clone()),
        Some(PathSpecifier::Path(p)) => PathMatch::Exact(p.clone()),
        Some(PathSpecifier::SafeRegex(r)) => PathMatch::Regex(regex(&r.regex, resource)?),
        Some(PathSpecifier::ConnectMatcher(_)) => PathMatch::Connect,
        _ => return Err(bad(resource, "unsupported path matcher")),
    };
    let headers = m
        .headers
        .iter()
        .map(|h: &HeaderMatcher| {
            let matcher = match &h.header_match_specifier {
                Some(HeaderMatchSpecifier::StringMatch(s)) => Some(str_match(s, resource)?),
                Some(HeaderMatchSpecifier::PresentMatch(true)) | None => None,
                _ => {
                    return Err(bad(
                        resource,
                        format!("unsupported match on header {}", h.name),
                    ));
                }
            };
            Ok(HeaderMatch {
                name: h.name.to_ascii_lowercase(),
                matcher,
                invert: h.invert_match,
            })
        })
        .collect::<Result<_, _>>()?;
    let query = m
        .query_parameters
        .iter()
        .map(|q| {
            let matcher = match &q.query_parameter_match_specifier {
                Some(QueryParameterMatchSpecifier::StringMatch(s)) => Some(str_match(s, resource)?),
                Some(QueryParameterMatchSpecifier::PresentMatch(true)) | None => None,
                _ => {
                    return Err(bad(
                        resource,
                        format!("unsupported match on query parameter {}", q.name),
                    ));
                }
            };
            Ok((q.name.clone(), matcher))
        })
        .collect::<Result<_, _>>()?;
    Ok(RouteMatch {
        path,
        case_sensitive: m.case_sensitive.as_ref().is_none_or(|b| b.value),
        headers,
        query,
    })
}

fn route(r: &PbRoute, parent: &str) -> Result<Route, Unsupported> {
    let name = format!("{parent} route {}", r.name);
    let matcher = route_match(
        r.r#match
            .as_ref()
            .ok_or_else(|| bad(&name, "route without match"))?,
        &name,
    )?;
    let mut fault = None;
    for (filter, cfg) in &r.typed_per_filter_config {
        match filter.as_str() {
            "envoy.filters.http.fault" => {
                let f: HttpFault = decode(cfg, &name)?;
                fault = Some(Fault {
                    delay: f.delay.as_ref().and_then(|d| match &d.fault_delay_secifier {
                        Some(envoy_types::pb::envoy::extensions::filters::common::fault::v3::fault_delay::FaultDelaySecifier::FixedDelay(fd)) => {
                            Some((duration(fd), ppm(d.percentage.as_ref())))
                        }
                        _ => None,
                    }),
                    abort: match f.abort.as_ref() {
                        Some(a) => match a.error_type {
                            Some(ErrorType::HttpStatus(s)) => Some((
                                u16::try_from(s).map_err(|_| bad(&name, "abort status out of range"))?,
                                ppm(a.percentage.as_ref()),
                            )),
                            _ => return Err(bad(&name, "only HTTP status aborts are supported")),
                        },
                        None => None,
                    },
                });
            }
            // CORS policies are accepted; preflight handling lives in the
            // router. Kite answers preflights as Envoy's filter would only
            // once implemented, so a CORS policy is refused for now.
            other => {
                return Err(bad(
                    &name,
                    format!("per-route config for {other} is not supported yet"),
                ));
            }
        }
    }
    let action = match &r.action {
        Some(PbAction::Route(ra)) => {
            let clusters = match &ra.cluster_specifier {
                Some(ClusterSpecifier::Cluster(c)) => vec![WeightedCluster {
                    name: c.clone(),
                    weight: 1,
                    request_headers: HeaderOps::default(),
                    response_headers: HeaderOps::default(),
                }],
                Some(ClusterSpecifier::WeightedClusters(w)) => w
                    .clusters
                    .iter()
                    .map(|c| {
                        Ok(WeightedCluster {
                            name: c.name.clone(),
                            weight: c.weight.as_ref().map_or(0, |w| w.value),
                            request_headers: header_ops(
                                &c.request_headers_to_add,
                                &c.request_headers_to_remove,
                                &name,
                            )?,
                            response_headers: header_ops(
                                &c.response_headers_to_add,
                                &c.response_headers_to_remove,
                                &name,
                            )?,
                        })
                    })
                    .collect::<Result<_, Unsupported>>()?,
                _ => return Err(bad(&name, "unsupported cluster specifier")),
            };
            let retry = ra.retry_policy.as_ref().map(|p| {
                let mut rp = RetryPolicy {
                    num_retries: p.num_retries.as_ref().map_or(1, |n| n.value),
                    per_try_timeout: p
                        .per_try_timeout
                        .as_ref()
                        .map(duration)
                        .filter(|d| !d.is_zero()),
                    status_codes: p
                        .retriable_status_codes
                        .iter()
                        .filter_map(|c| u16::try_from(*c).ok())
                        .collect(),
                    other_hosts: p
                        .retry_host_predicate
                        .iter()
                        .any(|h| h.name == "envoy.retry_host_predicates.previous_hosts"),
                    ..Default::default()
                };
                for cond in p.retry_on.split(',').map(str::trim) {
                    match cond {
                        "5xx" => rp.on_5xx = true,
                        "gateway-error" => rp.on_gateway_error = true,
                        "reset" | "reset-before-request" => rp.on_reset = true,
                        "connect-failure" => rp.on_connect_failure = true,
                        "refused-stream" => rp.on_refused_stream = true,
                        "retriable-4xx" => rp.on_retriable_4xx = true,
                        "retriable-status-codes" => rp.on_status_codes = true,
                        "cancelled" => rp.grpc.push(1),
                        "deadline-exceeded" => rp.grpc.push(4),
                        "resource-exhausted" => rp.grpc.push(8),
                        "internal" => rp.grpc.push(13),
                        "unavailable" => rp.grpc.push(14),
                        _ => {}
                    }
                }
                rp
            });
            let hash = ra
                .hash_policy
                .iter()
                .filter_map(|h| match &h.policy_specifier {
                    Some(PolicySpecifier::Header(h)) => {
                        Some(HashOn::Header(h.header_name.to_ascii_lowercase()))
                    }
                    Some(PolicySpecifier::Cookie(c)) => Some(HashOn::Cookie(c.name.clone())),
                    Some(PolicySpecifier::ConnectionProperties(c)) if c.source_ip => {
                        Some(HashOn::SourceIp)
                    }
                    Some(PolicySpecifier::QueryParameter(q)) => Some(HashOn::Query(q.name.clone())),
                    _ => None,
                })
                .collect();
            Action::Route(RouteAction {
                clusters,
                // Envoy's default route timeout is 15 s; 0 disables it.
                timeout: match &ra.timeout {
                    None => Some(Duration::from_secs(15)),
                    Some(d) if duration(d).is_zero() => None,
                    Some(d) => Some(duration(d)),
                },
                retry,
                prefix_rewrite: (!ra.prefix_rewrite.is_empty()).then(|| ra.prefix_rewrite.clone()),
                regex_rewrite: match &ra.regex_rewrite {
                    Some(rr) => Some((
                        Regex::new(
                            &rr.pattern
                                .as_ref()
                                .map(|p| p.regex.clone())
                                .unwrap_or_default(),
                        )
                        .map_err(|e| bad(&name, format!("regex rewrite: {e}")))?,
                        rr.substitution.replace("\\", "$"),
                    )),
                    None => None,
                },
                host_rewrite: match &ra.host_rewrite_specifier {
                    Some(HostRewriteSpecifier::HostRewriteLiteral(h)) => Some(h.clone()),
                    None => None,
                    Some(_) => return Err(bad(&name, "only literal host rewrites are supported")),
                },
                mirrors: ra
                    .request_mirror_policies
                    .iter()
                    .map(|m| {
                        (
                            m.cluster.clone(),
                            ppm(m
                                .runtime_fraction
                                .as_ref()
                                .and_then(|f| f.default_value.as_ref())),
                        )
                    })
                    .collect(),
                hash,
                connect_tunnel: ra.upgrade_configs.iter().any(|u| {
                    u.upgrade_type.eq_ignore_ascii_case("CONNECT") && u.connect_config.is_some()
                }),
            })
        }
        Some(PbAction::Redirect(rd)) => Action::Redirect(Redirect {
            host: rd.host_redirect.clone(),
            path: match &rd.path_rewrite_specifier {
                Some(redirect_action::PathRewriteSpecifier::PathRedirect(p)) => p.clone(),
                _ => String::new(),
            },
            scheme: match &rd.scheme_rewrite_specifier {
                Some(redirect_action::SchemeRewriteSpecifier::SchemeRedirect(s)) => s.clone(),
                Some(redirect_action::SchemeRewriteSpecifier::HttpsRedirect(true)) => {
                    "https".to_owned()
                }
                _ => String::new(),
            },
            port: rd.port_redirect,
            status: match redirect_action::RedirectResponseCode::try_from(rd.response_code) {
                Ok(redirect_action::RedirectResponseCode::Found) => 302,
                Ok(redirect_action::RedirectResponseCode::SeeOther) => 303,
                Ok(redirect_action::RedirectResponseCode::TemporaryRedirect) => 307,
                Ok(redirect_action::RedirectResponseCode::PermanentRedirect) => 308,
                _ => 301,
            },
        }),
        Some(PbAction::DirectResponse(d)) => Action::Direct {
            status: u16::try_from(d.status).map_err(|_| bad(&name, "status out of range"))?,
            body: match d.body.as_ref().and_then(|b| b.specifier.as_ref()) {
                Some(data_source::Specifier::InlineString(s)) => s.clone(),
                Some(data_source::Specifier::InlineBytes(b)) => {
                    String::from_utf8_lossy(b).into_owned()
                }
                None => String::new(),
                Some(_) => return Err(bad(&name, "direct response bodies must be inline")),
            },
        },
        _ => return Err(bad(&name, "unsupported route action")),
    };
    Ok(Route {
        name: r.name.clone(),
        matcher,
        action,
        request_headers: header_ops(
            &r.request_headers_to_add,
            &r.request_headers_to_remove,
            &name,
        )?,
        response_headers: header_ops(
            &r.response_headers_to_add,
            &r.response_headers_to_remove,
            &name,
        )?,
        fault,
    })
}
