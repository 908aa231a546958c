use std::path::PathBuf;

use super::*;
use crate::common::Validate;
use crate::diag::Severity;
use crate::test_util::{errors, sample_docs, str_field, yaml_docs};

/// Networking YAML from Istio's task pages and API reference, in the
/// older shapes the samples no longer use (integer `percent`,
/// `consecutiveErrors`, locality settings, egress TLS origination).
const DOCS_YAML: &str = r#"
apiVersion: networking.istio.io/v1alpha3
kind: VirtualService
metadata: {name: ratings, namespace: default}
spec:
  hosts: [ratings]
  http:
  - match:
    - headers:
        end-user:
          exact: jason
    fault:
      delay:
        percent: 100
        fixedDelay: 7s
      abort:
        percent: 10
        httpStatus: 500
    route:
    - destination: {host: ratings, subset: v1}
  - route:
    - destination: {host: ratings, subset: v1}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: httpbin, namespace: default}
spec:
  hosts: [httpbin]
  http:
  - route:
    - destination: {host: httpbin, subset: v1}
      weight: 100
    mirror: {host: httpbin, subset: v2}
    mirrorPercentage: {value: 100.0}
    retries: {attempts: 3, perTryTimeout: 2s, retryOn: "gateway-error,connect-failure,503"}
    timeout: 0.5s
    corsPolicy:
      allowOrigins: [{exact: "https://example.com"}]
      allowMethods: [POST, GET]
      maxAge: 24h
    headers:
      request: {set: {x-test: "1"}}
      response: {remove: [foo]}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: redirects, namespace: default}
spec:
  hosts: [example.com]
  http:
  - match: [{uri: {prefix: /old}}]
    redirect: {uri: /new, redirectCode: 308}
  - match: [{uri: {regex: "^/v[0-9]+/.*"}}]
    rewrite: {uriRegexRewrite: {match: "^/v[0-9]+/(.*)", rewrite: "/\\1"}}
    route: [{destination: {host: example.com, port: {number: 80}}}]
  - directResponse: {status: 503, body: {string: "unavailable"}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: tls-routing, namespace: default}
spec:
  hosts: ["*.example.com"]
  gateways: [mesh]
  tls:
  - match: [{port: 443, sniHosts: [a.example.com]}]
    route: [{destination: {host: a.example.com}}]
  tcp:
  - match: [{port: 31400, destinationSubnets: [10.0.0.0/8]}]
    route:
    - destination: {host: tcp-echo, subset: v1}
      weight: 80
    - destination: {host: tcp-echo, subset: v2}
      weight: 20
---
apiVersion: networking.istio.io/v1alpha3
kind: DestinationRule
metadata: {name: httpbin, namespace: default}
spec:
  host: httpbin
  trafficPolicy:
    connectionPool:
      tcp: {maxConnections: 1, connectTimeout: 30ms, tcpKeepalive: {time: 7200s, interval: 75s}}
      http: {http1MaxPendingRequests: 1, maxRequestsPerConnection: 1, http2MaxRequests: 10, h2UpgradePolicy: UPGRADE}
    outlierDetection:
      consecutive5xxErrors: 1
      interval: 1s
      baseEjectionTime: 3m
      maxEjectionPercent: 100
    loadBalancer:
      localityLbSetting:
        enabled: true
        failover: [{from: us-east, to: eu-west}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: egress, namespace: default}
spec:
  host: www.google.com
  trafficPolicy:
    portLevelSettings:
    - port: {number: 443}
      tls: {mode: SIMPLE, sni: www.google.com}
    - port: {number: 8443}
      tls: {mode: MUTUAL, credentialName: client-credential}
    loadBalancer:
      consistentHash:
        httpCookie: {name: user, ttl: 0s}
      localityLbSetting:
        distribute:
        - from: us-west/zone1/*
          to: {"us-west/zone1/*": 80, "us-west/zone2/*": 20}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: mygateway, namespace: default}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: ["ns1/*", "./reviews.example.com"]
    tls: {httpsRedirect: true}
  - port: {number: 443, name: https, protocol: HTTPS}
    hosts: ["*.example.com"]
    tls: {mode: SIMPLE, credentialName: example-cert, minProtocolVersion: TLSV1_2}
  - port: {number: 9443, name: mtls, protocol: HTTPS}
    hosts: ["*"]
    tls: {mode: MUTUAL, serverCertificate: /etc/c.pem, privateKey: /etc/k.pem, caCertificates: /etc/ca.pem}
  - port: {number: 15443, name: tls, protocol: TLS}
    hosts: ["*.local"]
    tls: {mode: AUTO_PASSTHROUGH}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: external-svc, namespace: default}
spec:
  hosts: [mymongodb.somedomain]
  addresses: [192.192.192.192/24]
  ports: [{number: 27018, name: mongodb, protocol: MONGO}]
  location: MESH_INTERNAL
  resolution: STATIC
  endpoints:
  - address: 2.2.2.2
  - address: 3.3.3.3
    ports: {mongodb: 27019}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: wildcard, namespace: default}
spec:
  hosts: ["*.wikipedia.org"]
  ports: [{number: 443, name: https, protocol: HTTPS}]
  resolution: NONE
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default, namespace: bookinfo}
spec:
  workloadSelector: {labels: {app: ratings}}
  ingress:
  - port: {number: 9080, protocol: HTTP, name: somename}
    defaultEndpoint: unix:///var/run/someuds.sock
  egress:
  - port: {number: 9080, protocol: HTTP, name: egresshttp}
    hosts: ["prod-us1/*"]
  - hosts: ["./*", "istio-system/*", "~/*"]
  outboundTrafficPolicy: {mode: REGISTRY_ONLY}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: details-svc, namespace: default}
spec:
  serviceAccount: details-legacy
  address: 2.2.2.2
  labels: {app: details-legacy, instance-id: vm1}
  ports: {http: 9080}
---
apiVersion: networking.istio.io/v1
kind: WorkloadGroup
metadata: {name: reviews, namespace: bookinfo}
spec:
  metadata:
    labels: {app.kubernetes.io/name: reviews, app.kubernetes.io/version: "1.3.4"}
  template:
    ports: {grpc: 3550, http: 8080}
    serviceAccount: default
  probe:
    initialDelaySeconds: 5
    httpGet: {path: /ready, port: 8080}
"#;

fn errors_of(kind: &str, spec: serde_yaml::Value) -> Vec<(String, String)> {
    match kind {
        "VirtualService" => errors::<VirtualService>(spec),
        "DestinationRule" => errors::<DestinationRule>(spec),
        "Gateway" => errors::<Gateway>(spec),
        "ServiceEntry" => errors::<ServiceEntry>(spec),
        "Sidecar" => errors::<Sidecar>(spec),
        "WorkloadEntry" => errors::<WorkloadEntry>(spec),
        "WorkloadGroup" => errors::<WorkloadGroup>(spec),
        other => panic!("unexpected networking kind {other}"),
    }
}

/// (kind, errors) for a `networking.istio.io` document Kite models.
fn check_doc(doc: &serde_yaml::Value) -> Option<(String, Vec<(String, String)>)> {
    let group = str_field(doc, "apiVersion")
        .split('/')
        .next()
        .unwrap_or_default();
    let kind = str_field(doc, "kind");
    let modelled = [
        "VirtualService",
        "DestinationRule",
        "Gateway",
        "ServiceEntry",
        "Sidecar",
        "WorkloadEntry",
        "WorkloadGroup",
    ];
    if group != "networking.istio.io" || !modelled.contains(&kind) {
        return None;
    }
    let spec = match doc.get("spec") {
        Some(serde_yaml::Value::Null) | None => serde_yaml::Value::Mapping(Default::default()),
        Some(spec) => spec.clone(),
    };
    Some((kind.to_owned(), errors_of(kind, spec)))
}

#[test]
fn samples_and_docs_load_cleanly() {
    let mut checked = 0;
    let docs = sample_docs().into_iter().chain(
        yaml_docs(DOCS_YAML)
            .into_iter()
            .map(|d| (PathBuf::from("docs"), d)),
    );
    for (file, doc) in docs {
        if let Some((kind, errors)) = check_doc(&doc) {
            checked += 1;
            assert!(
                errors.is_empty(),
                "{} {kind} {:?}: {errors:?}",
                file.display(),
                doc.get("metadata")
            );
        }
    }
    assert!(checked >= 50, "only {checked} networking documents checked");
}

#[test]
fn broken_inputs_are_located() {
    const ROUTE: &str = "route: [{destination: {host: reviews}}]";
    let vs = |http: &str| format!("{{hosts: [reviews], http: [{http}]}}");
    let cases: Vec<(&str, String, &str, &str)> = vec![
            // (kind, spec, field, message fragment)
            (
                "DestinationRule",
                "{host: reviews, subsets: [{name: v1, lables: {version: v1}}]}".into(),
                "spec.subsets[0].lables",
                "unknown field `lables`",
            ),
            (
                "VirtualService",
                vs(&format!("{{{ROUTE}, timeout: 5x}}")),
                "spec.http[0].timeout",
                "invalid duration \"5x\"",
            ),
            (
                "VirtualService",
                vs(&format!("{{match: [{{uri: {{regex: '(['}}}}], {ROUTE}}}")),
                "spec.http[0].match[0].uri.regex",
                "invalid regex",
            ),
            (
                "VirtualService",
                vs(&format!(
                    "{{match: [{{headers: {{End-User: {{exact: jason}}}}}}], {ROUTE}}}"
                )),
                "spec.http[0].match[0].headers.End-User",
                "header name \"End-User\" must be lower case",
            ),
            (
                "VirtualService",
                vs("{route: [{destination: {host: a}}, {destination: {host: b}}]}"),
                "spec.http[0].route",
                "weights of all destinations are zero",
            ),
            (
                "VirtualService",
                vs("{route: [{destination: {host: a}, weight: 5}, {destination: {host: b}, weight: -5}]}"),
                "spec.http[0].route[1].weight",
                "weight -5 is negative",
            ),
            (
                "VirtualService",
                vs(&format!("{{{ROUTE}, retries: {{attempts: 3, retryOn: '5xx,5xxx'}}}}")),
                "spec.http[0].retries.retryOn",
                "unknown retryOn condition \"5xxx\"",
            ),
            (
                "VirtualService",
                vs(&format!("{{{ROUTE}, fault: {{abort: {{percentage: {{value: 10}}}}}}}}")),
                "spec.http[0].fault.abort",
                "abort needs one of httpStatus, grpcStatus or http2Error",
            ),
            (
                "VirtualService",
                vs(&format!("{{{ROUTE}, fault: {{abort: {{httpStatus: 700}}}}}}")),
                "spec.http[0].fault.abort.httpStatus",
                "httpStatus 700 is outside 200–599",
            ),
            (
                "VirtualService",
                vs(&format!(
                    "{{{ROUTE}, fault: {{delay: {{fixedDelay: 5s, percentage: {{value: 150}}}}}}}}"
                )),
                "spec.http[0].fault.delay.percentage",
                "percentage 150 is outside 0–100",
            ),
            (
                "VirtualService",
                vs(&format!("{{{ROUTE}, fault: {{delay: {{percent: 50}}}}}}")),
                "spec.http[0].fault.delay",
                "delay needs fixedDelay or exponentialDelay",
            ),
            (
                "VirtualService",
                vs(&format!("{{{ROUTE}, redirect: {{uri: /x}}}}")),
                "spec.http[0].redirect",
                "redirect cannot be combined with route",
            ),
            (
                "VirtualService",
                vs("{match: [{uri: {prefix: /}}]}"),
                "spec.http[0]",
                "one of route, redirect, directResponse or delegate is required",
            ),
            (
                "VirtualService",
                vs("{redirect: {uri: /x, redirectCode: 200}}"),
                "spec.http[0].redirect.redirectCode",
                "redirectCode 200 is outside 300–399",
            ),
            (
                "VirtualService",
                vs("{route: [{destination: {subset: v1}}]}"),
                "spec.http[0].route[0].destination.host",
                "destination host is required",
            ),
            (
                "VirtualService",
                vs("{route: [{destination: {host: a, port: {number: 70000}}}]}"),
                "spec.http[0].route[0].destination.port.number",
                "port number 70000",
            ),
            (
                "VirtualService",
                "{http: [{route: [{destination: {host: a}}]}]}".into(),
                "spec.hosts",
                "at least one host is required",
            ),
            (
                "VirtualService",
                "{hosts: ['*'], http: [{route: [{destination: {host: a}}]}]}".into(),
                "spec.hosts[0]",
                "wildcard host \"*\" is not allowed",
            ),
            (
                "VirtualService",
                "{hosts: [a.com], tls: [{match: [{port: 443}], route: [{destination: {host: a.com}}]}]}"
                    .into(),
                "spec.tls[0].match[0].sniHosts",
                "sniHosts is required",
            ),
            (
                "VirtualService",
                "{hosts: [a], tcp: [{match: [{port: 9000}]}]}".into(),
                "spec.tcp[0].route",
                "at least one route destination is required",
            ),
            (
                "DestinationRule",
                "{host: reviews, subsets: [{name: v1, labels: {version: v1}}, {name: v1, labels: {version: v2}}]}"
                    .into(),
                "spec.subsets[1].name",
                "duplicate subset name \"v1\"",
            ),
            (
                "DestinationRule",
                "{host: reviews, trafficPolicy: {loadBalancer: {simple: RANDOM, consistentHash: {useSourceIp: true}}}}"
                    .into(),
                "spec.trafficPolicy.loadBalancer",
                "set only one of simple and consistentHash",
            ),
            (
                "DestinationRule",
                "{host: reviews, trafficPolicy: {loadBalancer: {consistentHash: {}}}}".into(),
                "spec.trafficPolicy.loadBalancer.consistentHash",
                "exactly one of",
            ),
            (
                "DestinationRule",
                "{host: reviews, trafficPolicy: {tls: {mode: SUPER_MUTUAL}}}".into(),
                "spec.trafficPolicy.tls.mode",
                "unknown variant `SUPER_MUTUAL`",
            ),
            (
                "DestinationRule",
                "{host: reviews, trafficPolicy: {tls: {mode: MUTUAL, clientCertificate: /c.pem}}}"
                    .into(),
                "spec.trafficPolicy.tls",
                "MUTUAL mode needs clientCertificate and privateKey",
            ),
            (
                "DestinationRule",
                "{host: reviews, trafficPolicy: {outlierDetection: {maxEjectionPercent: 150}}}"
                    .into(),
                "spec.trafficPolicy.outlierDetection.maxEjectionPercent",
                "maxEjectionPercent 150 is outside 0–100",
            ),
            (
                "DestinationRule",
                "{host: reviews, trafficPolicy: {connectionPool: {http: {http1MaxPendingRequests: -1}}}}"
                    .into(),
                "spec.trafficPolicy.connectionPool.http.http1MaxPendingRequests",
                "must not be negative",
            ),
            (
                "DestinationRule",
                "{host: r, trafficPolicy: {loadBalancer: {localityLbSetting: {distribute: [{from: a/*, to: {a/*: 70, b/*: 20}}]}}}}"
                    .into(),
                "spec.trafficPolicy.loadBalancer.localityLbSetting.distribute[0].to",
                "weights sum to 90",
            ),
            (
                "DestinationRule",
                "{host: r, trafficPolicy: {portLevelSettings: [{tls: {mode: SIMPLE}}]}}".into(),
                "spec.trafficPolicy.portLevelSettings[0].port",
                "port is required",
            ),
            (
                "Gateway",
                "{selector: {istio: ingressgateway}, servers: [{port: {number: 80, name: http, protocol: HTTP}}]}"
                    .into(),
                "spec.servers[0].hosts",
                "at least one host is required",
            ),
            (
                "Gateway",
                "{servers: [{port: {number: 443, name: https, protocol: HTTPS}, hosts: ['*']}]}"
                    .into(),
                "spec.servers[0].tls",
                "protocol HTTPS needs tls settings",
            ),
            (
                "Gateway",
                "{servers: [{port: {number: 443, name: https, protocol: HTTPS}, hosts: ['*'], tls: {mode: SIMPLE}}]}"
                    .into(),
                "spec.servers[0].tls",
                "SIMPLE TLS needs credentialName(s) or serverCertificate and privateKey",
            ),
            (
                "Gateway",
                "{servers: [{port: {number: 80, name: http, protocol: HTTPX}, hosts: ['*']}]}".into(),
                "spec.servers[0].port.protocol",
                "unknown protocol \"HTTPX\"",
            ),
            (
                "Gateway",
                "{servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: ['*']}, {port: {number: 81, name: http, protocol: HTTP}, hosts: ['*']}]}"
                    .into(),
                "spec.servers[1].port.name",
                "duplicate server port name \"http\"",
            ),
            (
                "Gateway",
                "{}".into(),
                "spec.servers",
                "at least one server is required",
            ),
            (
                "ServiceEntry",
                "{hosts: [db.internal], ports: [{number: 5432, name: tcp, protocol: TCP}], resolution: STATIC}"
                    .into(),
                "spec.endpoints",
                "STATIC resolution needs endpoints or a workloadSelector",
            ),
            (
                "ServiceEntry",
                "{hosts: ['*.example.com'], ports: [{number: 80, name: http, protocol: HTTP}], resolution: DNS}"
                    .into(),
                "spec.hosts[0]",
                "cannot be resolved with DNS resolution",
            ),
            (
                "ServiceEntry",
                "{hosts: [a.com], addresses: [10.0.0.0/33], ports: [{number: 80, name: http, protocol: HTTP}]}"
                    .into(),
                "spec.addresses[0]",
                "invalid prefix length",
            ),
            (
                "ServiceEntry",
                "{hosts: [a.com], ports: [{number: 80, name: http, protocol: HTTP}, {number: 81, name: http, protocol: HTTP}]}"
                    .into(),
                "spec.ports[1].name",
                "duplicate port name \"http\"",
            ),
            (
                "ServiceEntry",
                "{hosts: [a.com], ports: [{number: 80, protocol: HTTP}]}".into(),
                "spec.ports[0].name",
                "port name is required",
            ),
            (
                "ServiceEntry",
                "{hosts: [a.com], resolution: DNSS}".into(),
                "spec.resolution",
                "unknown variant `DNSS`",
            ),
            (
                "Sidecar",
                "{egress: [{hosts: [reviews.default.svc.cluster.local]}]}".into(),
                "spec.egress[0].hosts[0]",
                "must be of the form namespace/dnsName",
            ),
            (
                "Sidecar",
                "{outboundTrafficPolicy: {mode: BLOCK}}".into(),
                "spec.outboundTrafficPolicy.mode",
                "unknown variant `BLOCK`",
            ),
            (
                "WorkloadEntry",
                "{labels: {app: vm}}".into(),
                "spec.address",
                "address is required",
            ),
            (
                "WorkloadEntry",
                "{address: 1.2.3.4, ports: {http: 0}}".into(),
                "spec.ports.http",
                "port number 0",
            ),
        ];
    for (kind, spec, field, fragment) in &cases {
        let value: serde_yaml::Value = serde_yaml::from_str(spec).expect("test YAML");
        let errors = errors_of(kind, value);
        assert!(
            errors
                .iter()
                .any(|(f, m)| f == field && m.contains(fragment)),
            "{kind} {spec}: expected {field}: …{fragment}…, got {errors:?}"
        );
    }
}

#[test]
fn old_and_new_shapes() {
    let vs: VirtualService = serde_yaml::from_str(
            "{hosts: [r], http: [{route: [{destination: {host: r, port: {number: 9080}}}], \
             mirror: {host: m}, mirrorPercent: 25, \
             fault: {delay: {fixedDelay: 7s, percent: 40}, abort: {httpStatus: 500, percentage: {value: 0.5}}}}]}",
        )
        .expect("parses");
    let route = &vs.http[0];
    assert_eq!(route.mirror_share(), 25.0);
    assert_eq!(route.route[0].destination.port_number(), Some(9080));
    let fault = route.fault.as_ref().expect("fault");
    assert_eq!(fault.delay.as_ref().map(Delay::percentage), Some(40.0));
    assert_eq!(fault.abort.as_ref().map(Abort::percentage), Some(0.5));
    assert_eq!(Delay::default().percentage(), 100.0);
    assert_eq!(HttpRoute::default().mirror_share(), 100.0);
    assert_eq!(Destination::default().port_number(), None);

    // The digit-bearing field names must round-trip exactly.
    let dr: DestinationRule = serde_yaml::from_str(
        "{host: r, trafficPolicy: {connectionPool: {http: {http1MaxPendingRequests: 1, \
             http2MaxRequests: 2, h2UpgradePolicy: DO_NOT_UPGRADE}}, \
             outlierDetection: {consecutive5xxErrors: 3}}}",
    )
    .expect("parses");
    let json = serde_json::to_string(&dr).expect("serializes");
    for name in [
        "\"http1MaxPendingRequests\":1",
        "\"http2MaxRequests\":2",
        "\"h2UpgradePolicy\":\"DO_NOT_UPGRADE\"",
        "\"consecutive5xxErrors\":3",
    ] {
        assert!(json.contains(name), "{name} missing from {json}");
    }
    let back: DestinationRule = serde_json::from_str(&json).expect("round-trips");
    assert_eq!(back, dr);

    let se: ServiceEntry = serde_yaml::from_str("{hosts: [a.com]}").expect("parses");
    assert_eq!(se.location, Location::MeshExternal);
    assert_eq!(se.resolution, Resolution::None);
    let gw: Gateway = serde_yaml::from_str(
        "{servers: [{port: {number: 15443, name: tls, protocol: TLS}, hosts: ['*'], tls: {}}]}",
    )
    .expect("parses");
    assert_eq!(
        gw.servers[0].tls.as_ref().map(|t| t.mode),
        Some(ServerTlsMode::Passthrough)
    );
    assert_eq!(
        OutboundTrafficPolicy::default().mode,
        OutboundMode::AllowAny
    );
    assert_eq!(ClientTlsSettings::default().mode, TlsMode::Disable);
}

#[test]
fn warnings_do_not_block() {
    let dr: DestinationRule = serde_yaml::from_str(
        "{host: r, trafficPolicy: {outlierDetection: {consecutiveErrors: 1}}}",
    )
    .expect("parses");
    let mut cx = Ctx::new("default");
    dr.validate(&mut cx);
    let found: Vec<_> = cx
        .findings()
        .iter()
        .map(|f| (f.severity, f.field.as_str()))
        .collect();
    assert_eq!(
        found,
        [(
            Severity::Warning,
            "spec.trafficPolicy.outlierDetection.consecutiveErrors"
        )]
    );
}

#[test]
fn host_helpers() {
    assert_eq!(
        expand_host("reviews", "default"),
        "reviews.default.svc.cluster.local"
    );
    assert_eq!(expand_host("reviews.prod", "default"), "reviews.prod");
    assert_eq!(
        expand_host("reviews.default.svc.cluster.local", "x"),
        "reviews.default.svc.cluster.local"
    );
    assert_eq!(expand_host("*", "default"), "*");
    assert_eq!(expand_host("*.example.com", "default"), "*.example.com");

    assert!(host_matches("*", "anything.example.com"));
    assert!(host_matches("reviews", "reviews"));
    assert!(host_matches("Reviews.Example.com", "reviews.example.com"));
    assert!(host_matches("*.example.com", "a.example.com"));
    assert!(host_matches("*.example.com", "a.b.example.com"));
    assert!(!host_matches("*.example.com", "example.com"));
    assert!(!host_matches("*.example.com", "badexample.com"));
    assert!(!host_matches("reviews", "ratings"));
    assert!(!host_matches("a.example.com", "*.example.com"));
}
