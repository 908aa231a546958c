use std::path::PathBuf;

use serde::de::DeserializeOwned;

use super::{authorization_policy::condition_key, *};
use crate::common::Validate;
use crate::diag::Severity;
use crate::test_util::{errors, sample_docs, str_field, yaml_docs};

/// Security YAML from Istio's task pages (authorization HTTP/TCP/JWT/
/// deny/ingress/custom, authentication policy, claim-to-header) and the
/// API reference examples.
const DOCS_YAML: &str = r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow-nothing, namespace: default}
spec:
  {}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: productpage-viewer, namespace: default}
spec:
  selector:
    matchLabels:
      app: productpage
  action: ALLOW
  rules:
  - to:
    - operation:
        methods: ["GET"]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: bookinfo-gateway-viewer, namespace: default}
spec:
  selector:
    matchLabels:
      gateway.networking.k8s.io/gateway-name: bookinfo-gateway
  action: ALLOW
  rules:
  - to:
    - operation:
        methods: ["GET"]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: details-viewer, namespace: default}
spec:
  selector:
    matchLabels:
      app: details
  action: ALLOW
  rules:
  - from:
    - source:
        principals: ["cluster.local/ns/default/sa/bookinfo-productpage"]
    to:
    - operation:
        methods: ["GET"]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: tcp-policy, namespace: foo}
spec:
  selector:
    matchLabels:
      app: tcp-echo
  action: ALLOW
  rules:
  - to:
    - operation:
        ports: ["9000", "9001"]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: tcp-policy, namespace: foo}
spec:
  selector:
    matchLabels:
      app: tcp-echo
  action: DENY
  rules:
  - to:
    - operation:
        methods: ["GET"]
        ports: ["9000"]
---
apiVersion: security.istio.io/v1beta1
kind: RequestAuthentication
metadata: {name: jwt-example, namespace: foo}
spec:
  selector:
    matchLabels:
      app: httpbin
  jwtRules:
  - issuer: "testing@secure.istio.io"
    jwksUri: "https://raw.githubusercontent.com/istio/istio/release-1.8/security/tools/jwt/samples/jwks.json"
---
apiVersion: security.istio.io/v1beta1
kind: AuthorizationPolicy
metadata: {name: require-jwt, namespace: foo}
spec:
  selector:
    matchLabels:
      app: httpbin
  action: ALLOW
  rules:
  - from:
    - source:
       requestPrincipals: ["testing@secure.istio.io/testing@secure.istio.io"]
    when:
    - key: request.auth.claims[groups]
      values: ["group1"]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-method-get, namespace: foo}
spec:
  selector:
    matchLabels:
      app: httpbin
  action: DENY
  rules:
  - to:
    - operation:
        methods: ["GET"]
    when:
    - key: request.headers[x-token]
      notValues: ["admin"]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow-path-ip, namespace: foo}
spec:
  selector:
    matchLabels:
      app: httpbin
  action: ALLOW
  rules:
  - to:
    - operation:
        paths: ["/ip"]
    when:
    - key: request.headers[x-token]
      values: ["admin"]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: ingress-policy, namespace: istio-system}
spec:
  selector:
    matchLabels:
      app: istio-ingressgateway
  action: ALLOW
  rules:
  - from:
    - source:
        ipBlocks: ["1.2.3.4", "5.6.7.0/24"]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: ingress-policy, namespace: foo}
spec:
  selector:
    matchLabels:
      istio.io/gateway-name: httpbin-gateway
  action: DENY
  rules:
  - from:
    - source:
        remoteIpBlocks: ["192.168.10.15"]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: ext-authz, namespace: foo}
spec:
  selector:
    matchLabels:
      app: httpbin
  action: CUSTOM
  provider:
    name: sample-ext-authz-grpc
  rules:
  - to:
    - operation:
        paths: ["/headers"]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: httpbin, namespace: foo}
spec:
  action: ALLOW
  rules:
  - from:
    - source:
        principals: ["cluster.local/ns/default/sa/sleep"]
    - source:
        namespaces: ["test"]
    to:
    - operation:
        methods: ["GET"]
        paths: ["/info*"]
    - operation:
        methods: ["POST"]
        paths: ["/data"]
    when:
    - key: request.auth.claims[iss]
      values: ["https://accounts.google.com"]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow-all, namespace: foo}
spec:
  rules:
  - {}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: grafana-allow-tempo, namespace: monitoring}
spec:
  selector:
    matchLabels:
      app.kubernetes.io/name: grafana-tempo
  action: ALLOW
  rules:
    - from:
        - source:
            serviceAccounts:
              - monitoring/grafana-sa
      to:
        - operation:
            paths: ["/api/{*}/query", "/static/{**}"]
            ports: ["3200"]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: audit, namespace: ns1}
spec:
  selector:
    matchLabels:
      app: myapi
  action: AUDIT
  rules:
  - to:
    - operation:
        methods: ["GET"]
        paths: ["/user/profile/*"]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: waypoint, namespace: default}
spec:
  targetRefs:
  - kind: Service
    group: ""
    name: reviews
  action: DENY
  rules:
  - from:
    - source:
        notPrincipals: ["cluster.local/ns/default/sa/bookinfo-productpage"]
    when:
    - key: source.ip
      notValues: ["10.0.0.0/8", "fd00::/8"]
    - key: destination.port
      values: ["9080"]
    - key: experimental.envoy.filters.network.mysql_proxy[db.table]
      values: ["[update]"]
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: istio-system}
spec:
  mtls:
    mode: STRICT
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: httpbin, namespace: foo}
spec:
  selector:
    matchLabels:
      app: httpbin
  mtls:
    mode: STRICT
  portLevelMtls:
    8080:
      mode: DISABLE
---
apiVersion: security.istio.io/v1beta1
kind: PeerAuthentication
metadata: {name: default, namespace: foo}
spec:
  mtls:
    mode: PERMISSIVE
---
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: jwt-on-ingress, namespace: istio-system}
spec:
  selector:
    matchLabels:
      istio: ingressgateway
  jwtRules:
  - issuer: "testing@secure.istio.io"
    jwksUri: "https://raw.githubusercontent.com/istio/istio/master/security/tools/jwt/samples/jwks.json"
    outputClaimToHeaders:
    - header: "x-jwt-claim-foo"
      claim: "foo"
    fromHeaders:
    - name: x-jwt-assertion
      prefix: "Bearer "
    fromParams: ["my_token"]
    fromCookies: ["session"]
    outputPayloadToHeader: x-jwt-payload
    forwardOriginalToken: true
    audiences: ["bookstore_android.apps.example.com"]
    spaceDelimitedClaims: ["scope", "permission"]
    timeout: 20s
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: frontend-ingress, namespace: istio-system}
spec:
  selector:
    matchLabels:
      istio: ingressgateway
  action: DENY
  rules:
  - from:
    - source:
        notRequestPrincipals: ["*"]
    to:
    - operation:
        paths: ["/headers"]
"#;

fn warnings<T: DeserializeOwned + Validate>(spec: &str) -> Vec<String> {
    let spec: T = serde_yaml::from_str(spec).expect("spec parses");
    let mut cx = Ctx::new("default");
    spec.validate(&mut cx);
    cx.findings()
        .iter()
        .filter(|f| f.severity == Severity::Warning)
        .map(|f| f.field.clone())
        .collect()
}

fn check_doc(doc: &serde_yaml::Value) -> Option<Vec<(String, String)>> {
    let group = str_field(doc, "apiVersion")
        .split('/')
        .next()
        .unwrap_or_default();
    if group != "security.istio.io" {
        return None;
    }
    let spec = match doc.get("spec") {
        Some(serde_yaml::Value::Null) | None => serde_yaml::Value::Mapping(Default::default()),
        Some(spec) => spec.clone(),
    };
    Some(match str_field(doc, "kind") {
        "PeerAuthentication" => errors::<PeerAuthentication>(spec),
        "RequestAuthentication" => errors::<RequestAuthentication>(spec),
        "AuthorizationPolicy" => errors::<AuthorizationPolicy>(spec),
        other => panic!("unexpected security kind {other}"),
    })
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
        if let Some(errors) = check_doc(&doc) {
            checked += 1;
            assert!(
                errors.is_empty(),
                "{} {:?}: {errors:?}",
                file.display(),
                doc.get("metadata")
            );
        }
    }
    assert!(checked >= 20, "only {checked} security documents checked");
}

#[test]
fn special_shapes() {
    let deny_all: AuthorizationPolicy = serde_yaml::from_str("{}").expect("parses");
    assert_eq!(deny_all.action, Action::Allow);
    assert!(deny_all.rules.is_empty());
    let allow_all: AuthorizationPolicy = serde_yaml::from_str("rules: [{}]").expect("parses");
    assert_eq!(allow_all.rules, vec![Rule::default()]);

    let pa: PeerAuthentication = serde_yaml::from_str(
            r#"{selector: {matchLabels: {app: a}}, portLevelMtls: {"8080": {mode: STRICT}, 9090: {mode: DISABLE}}}"#,
        )
        .expect("parses");
    assert_eq!(pa.mode(), MtlsMode::Unset);
    assert_eq!(pa.port_level_mtls[&8080].mode, MtlsMode::Strict);
    assert_eq!(pa.port_level_mtls[&9090].mode, MtlsMode::Disable);

    let ra: RequestAuthentication =
        serde_yaml::from_str("jwtRules: [{issuer: a, jwks_uri: 'https://a/k'}]").expect("parses");
    assert_eq!(ra.jwt_rules[0].jwks_uri, "https://a/k");

    // A DENY rule with only HTTP attributes denies all TCP traffic; Istio
    // warns rather than rejects.
    let w = warnings::<AuthorizationPolicy>(
        "{action: DENY, rules: [{to: [{operation: {methods: [GET]}}]}]}",
    );
    assert_eq!(w, ["spec.rules[0]"]);
    let w = warnings::<AuthorizationPolicy>("{rules: [{to: [{operation: {methods: [get]}}]}]}");
    assert_eq!(w, ["spec.rules[0].to[0].operation.methods[0]"]);
    let w = warnings::<RequestAuthentication>("jwtRules: [{jwksUri: 'https://a/k'}]");
    assert_eq!(w, ["spec.jwtRules[0].issuer"]);
}

#[test]
fn broken_inputs_are_located() {
    let cases: &[(&str, &str, &str, &str)] = &[
        // (kind, spec, field, message fragment)
        (
            "AuthorizationPolicy",
            "rules: [{form: [{source: {namespaces: [a]}}]}]",
            "spec.rules[0].form",
            "unknown field `form`",
        ),
        (
            "AuthorizationPolicy",
            "action: ALOW",
            "spec.action",
            "unknown variant `ALOW`",
        ),
        (
            "AuthorizationPolicy",
            "action: allow",
            "spec.action",
            "unknown variant",
        ),
        (
            "AuthorizationPolicy",
            "{action: CUSTOM, rules: [{}]}",
            "spec.provider",
            "`provider.name` must not be empty",
        ),
        (
            "AuthorizationPolicy",
            "{action: CUSTOM, provider: {name: ''}, rules: [{}]}",
            "spec.provider.name",
            "must not be empty",
        ),
        (
            "AuthorizationPolicy",
            "{action: CUSTOM, provider: {name: x}}",
            "spec.rules",
            "CUSTOM action without rules",
        ),
        (
            "AuthorizationPolicy",
            "{provider: {name: x}, rules: [{}]}",
            "spec.provider",
            "only be set with the CUSTOM action, found ALLOW",
        ),
        (
            "AuthorizationPolicy",
            "action: DENY",
            "spec.rules",
            "DENY action without rules",
        ),
        (
            "AuthorizationPolicy",
            "{action: CUSTOM, provider: {name: x}, rules: [{from: [{source: {principals: [a]}}]}]}",
            "spec.rules[0].from[0].source.principals",
            "not supported with the CUSTOM action",
        ),
        (
            "AuthorizationPolicy",
            "rules: [{when: [{key: 'request.auth.claims[groups]'}, {key: source.pod, values: [a]}]}]",
            "spec.rules[0].when[1].key",
            "unknown attribute: source.pod",
        ),
        (
            "AuthorizationPolicy",
            "rules: [{when: [{key: 'request.auth.claims[groups]'}]}]",
            "spec.rules[0].when[0]",
            "at least one of `values` or `notValues`",
        ),
        (
            "AuthorizationPolicy",
            "rules: [{when: [{key: 'request.headers[]', values: [a]}]}]",
            "spec.rules[0].when[0].key",
            "bad key",
        ),
        (
            "AuthorizationPolicy",
            "rules: [{when: [{key: 'request.headers[a][b]', values: [a]}]}]",
            "spec.rules[0].when[0].key",
            "bad key",
        ),
        (
            "AuthorizationPolicy",
            "rules: [{when: [{key: 'destination.labels[app]', values: [a]}]}]",
            "spec.rules[0].when[0].key",
            "replaced by the workload selector",
        ),
        (
            "AuthorizationPolicy",
            "rules: [{when: [{key: source.ip, values: [10.0.0.0/33]}]}]",
            "spec.rules[0].when[0].values[0]",
            "bad CIDR range",
        ),
        (
            "AuthorizationPolicy",
            "rules: [{when: [{key: destination.port, notValues: ['80', http]}]}]",
            "spec.rules[0].when[0].notValues[1]",
            "bad port",
        ),
        (
            "AuthorizationPolicy",
            "rules: [{from: [{source: {ipBlocks: [1.2.3.4, 1.2.3.256]}}]}]",
            "spec.rules[0].from[0].source.ipBlocks[1]",
            "bad IP address (1.2.3.256)",
        ),
        (
            "AuthorizationPolicy",
            "rules: [{from: [{source: {remoteIpBlocks: ['fd00::/129']}}]}]",
            "spec.rules[0].from[0].source.remoteIpBlocks[0]",
            "prefix length",
        ),
        (
            "AuthorizationPolicy",
            "rules: [{to: [{operation: {ports: ['80', '0x50']}}]}]",
            "spec.rules[0].to[0].operation.ports[1]",
            "bad port (\"0x50\")",
        ),
        (
            "AuthorizationPolicy",
            "rules: [{to: [{operation: {notPorts: ['70000']}}]}]",
            "spec.rules[0].to[0].operation.notPorts[0]",
            "1–65535",
        ),
        (
            "AuthorizationPolicy",
            "rules: [{to: [{operation: {paths: ['']}}]}]",
            "spec.rules[0].to[0].operation.paths[0]",
            "empty value",
        ),
        (
            "AuthorizationPolicy",
            "rules: [{to: [{operation: {paths: ['/a/{**}/b/{*}']}}]}]",
            "spec.rules[0].to[0].operation.paths[0]",
            "must be the last operator",
        ),
        (
            "AuthorizationPolicy",
            "rules: [{from: [{}]}]",
            "spec.rules[0].from[0].source",
            "`from.source` must not be empty",
        ),
        (
            "AuthorizationPolicy",
            "rules: [{to: [{operation: {}}]}]",
            "spec.rules[0].to[0].operation",
            "`to.operation` must not be empty",
        ),
        (
            "AuthorizationPolicy",
            "rules: [{from: [{source: {namespaces: ['']}}]}]",
            "spec.rules[0].from[0].source.namespaces[0]",
            "empty value",
        ),
        (
            "AuthorizationPolicy",
            "rules: [{from: [{source: {namespaces: [a], serviceAccounts: [a/b]}}]}]",
            "spec.rules[0].from[0].source.serviceAccounts",
            "cannot set serviceAccounts with namespaces or principals",
        ),
        (
            "AuthorizationPolicy",
            "rules: [{from: [{source: {serviceAccounts: [a/b/c]}}]}]",
            "spec.rules[0].from[0].source.serviceAccounts[0]",
            "expected format",
        ),
        (
            "AuthorizationPolicy",
            "{selector: {matchLabels: {app: a}}, targetRef: {kind: Gateway, group: gateway.networking.k8s.io, name: gw}}",
            "spec.targetRef",
            "only one of selector, targetRef and targetRefs",
        ),
        (
            "AuthorizationPolicy",
            "targetRefs: [{kind: Deployment, group: apps, name: x}]",
            "spec.targetRefs[0]",
            "targetRef must be to",
        ),
        (
            "AuthorizationPolicy",
            "selector: {matchLabels: {app: 'a*'}}",
            "spec.selector.matchLabels.app",
            "invalid label value",
        ),
        (
            "RequestAuthentication",
            "jwtRules: [{jwks: '{\"keys\": []}'}]",
            "spec.jwtRules[0].issuer",
            "issuer must be set",
        ),
        (
            "RequestAuthentication",
            "jwtRules: [{issuer: a, jwksUri: 'https://a/k', jwks: '{\"keys\": []}'}]",
            "spec.jwtRules[0].jwks",
            "only one of jwks and jwksUri",
        ),
        (
            "RequestAuthentication",
            "jwtRules: [{issuer: a, jwksUri: 'ftp://a/k'}]",
            "spec.jwtRules[0].jwksUri",
            "scheme \"ftp\" is not supported",
        ),
        (
            "RequestAuthentication",
            "jwtRules: [{issuer: a, jwksUri: 'https:///k'}]",
            "spec.jwtRules[0].jwksUri",
            "no host",
        ),
        (
            "RequestAuthentication",
            "jwtRules: [{issuer: a, jwks: 'not json'}]",
            "spec.jwtRules[0].jwks",
            "jwks parse error",
        ),
        (
            "RequestAuthentication",
            "jwtRules: [{issuer: a, fromHeaders: [{name: x}, {prefix: 'Bearer '}]}]",
            "spec.jwtRules[0].fromHeaders[1].name",
            "non-empty",
        ),
        (
            "RequestAuthentication",
            "jwtRules: [{issuer: a, outputClaimToHeaders: [{header: 'x y', claim: c}]}]",
            "spec.jwtRules[0].outputClaimToHeaders[0].header",
            "not valid",
        ),
        (
            "RequestAuthentication",
            "jwtRules: [{issuer: a, outputClaimToHeaders: [{header: Host, claim: c}]}]",
            "spec.jwtRules[0].outputClaimToHeaders[0].header",
            "reserved",
        ),
        (
            "RequestAuthentication",
            "jwtRules: [{issuer: a, timeout: 0s}]",
            "spec.jwtRules[0].timeout",
            "at least 1ms",
        ),
        (
            "RequestAuthentication",
            "jwtRules: [{issuer: a, timeout: soon}]",
            "spec.jwtRules[0].timeout",
            "invalid duration",
        ),
        (
            "RequestAuthentication",
            "jwtRules: [{issuer: a, jwksUri: 'https://a/k', jwks_uri: 'https://a/k'}]",
            "spec.jwtRules[0]",
            "duplicate field",
        ),
        (
            "PeerAuthentication",
            "{mtls: {mode: STRICT}, portLevelMtls: {8080: {mode: DISABLE}}}",
            "spec.portLevelMtls",
            "needs a selector",
        ),
        (
            "PeerAuthentication",
            "mtls: {mode: strict}",
            "spec.mtls.mode",
            "unknown variant `strict`",
        ),
        (
            "PeerAuthentication",
            "mtls: {mode: MUTUAL}",
            "spec.mtls.mode",
            "unknown variant",
        ),
        (
            "PeerAuthentication",
            "{selector: {matchLabels: {app: a}}, portLevelMtls: {0: {mode: DISABLE}}}",
            "spec.portLevelMtls.0",
            "outside 1–65535",
        ),
        (
            "PeerAuthentication",
            "{selector: {matchLabels: {app: a}}, portLevelMtls: {http: {mode: DISABLE}}}",
            "spec.portLevelMtls.http",
            "not a number",
        ),
        (
            "PeerAuthentication",
            "targetRef: {kind: Service, name: a}",
            "spec.targetRef",
            "unknown field",
        ),
    ];
    for &(kind, spec, field, fragment) in cases {
        let value: serde_yaml::Value =
            serde_yaml::from_str(spec).unwrap_or_else(|e| panic!("{spec}: {e}"));
        let found = match kind {
            "PeerAuthentication" => errors::<PeerAuthentication>(value),
            "RequestAuthentication" => errors::<RequestAuthentication>(value),
            _ => errors::<AuthorizationPolicy>(value),
        };
        assert!(
            found
                .iter()
                .any(|(f, m)| f == field && m.contains(fragment)),
            "{kind} {spec}: expected {field}: …{fragment}…, got {found:?}"
        );
    }
}

#[test]
fn condition_keys() {
    for ok in [
        "request.headers[User-Agent]",
        "request.auth.claims[iss]",
        "request.auth.claims[nested][key]",
        "source.trustDomain",
        "connection.sni",
        "experimental.envoy.filters.network.mysql_proxy[db.table]",
    ] {
        assert!(condition_key(ok).is_ok(), "{ok}");
    }
    for bad in [
        "request.headers",
        "request.headers[a",
        "request.auth.claims[]",
        "request.auth.claims[a]b",
        "experimental.envoy.filters.[a]",
        "destination.namespace",
        "destination.user",
    ] {
        assert!(condition_key(bad).is_err(), "{bad}");
    }
}
