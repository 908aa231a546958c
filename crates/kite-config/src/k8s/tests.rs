use super::*;
use crate::test_util::{SAMPLES, errors_at, sample_docs};

fn spec_of(doc: &serde_yaml::Value) -> serde_yaml::Value {
    doc.get("spec").cloned().unwrap_or_default()
}

#[test]
fn samples_load_cleanly() {
    let mut counts = BTreeMap::<&str, usize>::new();
    for (file, doc) in sample_docs() {
        let api_version = doc.get("apiVersion").and_then(serde_yaml::Value::as_str);
        let kind = doc.get("kind").and_then(serde_yaml::Value::as_str);
        let (kind, errors) = match (api_version, kind) {
            (Some("v1"), Some("Service")) => {
                ("Service", errors_at::<ServiceSpec>(spec_of(&doc), "spec"))
            }
            (Some("apps/v1"), Some("Deployment")) => (
                "Deployment",
                errors_at::<DeploymentSpec>(spec_of(&doc), "spec"),
            ),
            (Some("v1"), Some("Pod")) => ("Pod", errors_at::<PodSpec>(spec_of(&doc), "spec")),
            (Some("v1"), Some("Secret")) => ("Secret", errors_at::<Secret>(doc.clone(), "")),
            _ => continue,
        };
        *counts.entry(kind).or_default() += 1;
        assert!(
            errors.is_empty(),
            "{} {kind} {:?}: {errors:?}",
            file.display(),
            doc.get("metadata")
        );
    }
    assert!(
        counts.get("Service").is_some_and(|&n| n >= 40),
        "{counts:?}"
    );
    assert!(
        counts.get("Deployment").is_some_and(|&n| n >= 40),
        "{counts:?}"
    );
    assert_eq!(counts.get("Secret"), Some(&1), "{counts:?}");
}

#[test]
fn bookinfo_shapes() {
    let text = std::fs::read_to_string(format!(
        "{SAMPLES}/samples/bookinfo/platform/kube/bookinfo.yaml"
    ))
    .expect("bookinfo.yaml");
    let mut deployments = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(&text) {
        let doc = serde_yaml::Value::deserialize(doc).expect("valid YAML");
        if doc.get("kind").and_then(serde_yaml::Value::as_str) == Some("Deployment") {
            let spec: DeploymentSpec =
                serde_yaml::from_value(spec_of(&doc)).expect("deployment parses");
            deployments.push(spec);
        }
    }
    let reviews = deployments
        .iter()
        .find(|d| {
            d.template
                .metadata
                .labels
                .get("app")
                .is_some_and(|a| a == "reviews")
        })
        .expect("a reviews deployment");
    assert_eq!(reviews.replicas(), 1);
    assert_eq!(reviews.template.spec.service_account(), "bookinfo-reviews");
    assert_eq!(reviews.template.spec.named_port("http"), None);
    assert!(
        reviews.template.spec.containers[0]
            .env
            .iter()
            .any(|e| e.name == "LOG_DIR")
    );

    let mysql = std::fs::read_to_string(format!(
        "{SAMPLES}/samples/bookinfo/platform/kube/bookinfo-mysql.yaml"
    ))
    .expect("bookinfo-mysql.yaml");
    let secret_doc = serde_yaml::Deserializer::from_str(&mysql)
        .map(|d| serde_yaml::Value::deserialize(d).expect("valid YAML"))
        .find(|d| d.get("kind").and_then(serde_yaml::Value::as_str) == Some("Secret"))
        .expect("a Secret");
    let secret: Secret = serde_yaml::from_value(secret_doc).expect("secret parses");
    assert_eq!(secret.secret_type(), "Opaque");
    assert_eq!(
        secret.decoded("rootpasswd").as_deref(),
        Some(&b"password"[..])
    );
    assert_eq!(secret.decoded("missing"), None);
}

#[test]
fn defaults_and_helpers() {
    let pod: PodSpec = serde_yaml::from_str("containers: [{name: a, image: b}]").expect("parses");
    assert_eq!(pod.service_account(), "default");
    let pod: PodSpec =
        serde_yaml::from_str("{serviceAccount: old, containers: []}").expect("parses");
    assert_eq!(pod.service_account(), "old");

    let port: ServicePort = serde_yaml::from_str("port: 80").expect("parses");
    assert_eq!(port.protocol, "TCP");
    assert_eq!(port.target_port_number(), Some(80));
    let port: ServicePort = serde_yaml::from_str("{port: 80, targetPort: 8080}").expect("parses");
    assert_eq!(port.target_port_number(), Some(8080));
    let port: ServicePort = serde_yaml::from_str("{port: 80, targetPort: http}").expect("parses");
    assert_eq!(port.target_port_number(), None);

    let d: DeploymentSpec = serde_yaml::from_str("replicas: 0").expect("parses");
    assert_eq!(d.replicas(), 0);
    assert_eq!(DeploymentSpec::default().replicas(), 1);

    let sel: LabelSelector = serde_yaml::from_str(
            "{matchLabels: {app: a}, matchExpressions: [{key: version, operator: NotIn, values: [v3]}]}",
        )
        .expect("parses");
    let labels = |pairs: &[(&str, &str)]| -> Labels {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    };
    assert!(sel.matches(&labels(&[("app", "a"), ("version", "v1")])));
    assert!(sel.matches(&labels(&[("app", "a")])));
    assert!(!sel.matches(&labels(&[("app", "a"), ("version", "v3")])));
    assert!(!sel.matches(&labels(&[("version", "v1")])));
}

#[test]
fn base64() {
    assert_eq!(decode_base64("cGFzc3dvcmQ="), Some(b"password".to_vec()));
    assert_eq!(decode_base64("cGFzc3dvcmQ"), Some(b"password".to_vec()));
    assert_eq!(decode_base64("YQ=="), Some(b"a".to_vec()));
    assert_eq!(decode_base64("YWI="), Some(b"ab".to_vec()));
    assert_eq!(decode_base64("YWJj"), Some(b"abc".to_vec()));
    assert_eq!(decode_base64("YWJj\nZGVm"), Some(b"abcdef".to_vec()));
    assert_eq!(decode_base64("+/8="), Some(vec![0xfb, 0xff]));
    assert_eq!(decode_base64(""), Some(Vec::new()));
    for bad in ["Y", "YQ=", "YQ===", "Y=Q=", "YW J", "YW*j"] {
        assert_eq!(decode_base64(bad), None, "{bad}");
    }
}

#[test]
fn protocol_selection() {
    let port = |name: &str, app: Option<&str>, number: u32| ServicePort {
        name: name.to_owned(),
        port: number,
        app_protocol: app.map(str::to_owned),
        ..ServicePort::default()
    };
    let cases = [
        (port("http", None, 9080), Protocol::Http),
        (port("http-web", None, 9080), Protocol::Http),
        (port("HTTP2", None, 9080), Protocol::Http2),
        (port("grpc-web", None, 9080), Protocol::GrpcWeb),
        (port("grpc-web-x", None, 9080), Protocol::GrpcWeb),
        (port("grpc", None, 9080), Protocol::Grpc),
        (port("https-admin", None, 443), Protocol::Https),
        (port("tcp-other", None, 9001), Protocol::Tcp),
        (port("tls", None, 443), Protocol::Tls),
        (port("mongo", None, 27017), Protocol::Mongo),
        (port("mysql", None, 3306), Protocol::Mysql),
        (port("redis", None, 6379), Protocol::Redis),
        (port("web", None, 9080), Protocol::Unknown),
        (port("", None, 9080), Protocol::Unknown),
        (port("httpx", None, 9080), Protocol::Unknown),
        // Server-first protocols on their well-known ports are not sniffed.
        (port("web", None, 3306), Protocol::Tcp),
        (port("tcp", Some("http"), 9080), Protocol::Http),
        (port("http", Some("tcp"), 9080), Protocol::Tcp),
        (port("http", Some("custom"), 9080), Protocol::Unknown),
        (
            port("tcp", Some("kubernetes.io/h2c"), 9080),
            Protocol::Http2,
        ),
        (
            port("tcp", Some("kubernetes.io/wss"), 9080),
            Protocol::Https,
        ),
    ];
    for (p, want) in cases {
        assert_eq!(port_protocol(&p), want, "{p:?}");
    }
    let udp = ServicePort {
        protocol: "UDP".into(),
        ..port("http", None, 53)
    };
    assert_eq!(udp.protocol(), Protocol::Udp);
    assert!(Protocol::GrpcWeb.is_http());
    assert!(!Protocol::Https.is_http());
    assert!(Protocol::Https.is_tls());
    assert!(Protocol::Mongo.is_tcp());
    assert!(!Protocol::Unknown.is_http());
}

#[test]
fn broken_inputs_are_located() {
    let cases: &[(&str, &str, &str, &str)] = &[
        // (kind, spec, field, message fragment)
        (
            "Service",
            "ports: [{name: http, port: 80}, {name: http, port: 81}]",
            "spec.ports[1].name",
            "duplicate port name",
        ),
        (
            "Service",
            "ports: [{name: http, port: 80}, {port: 81}]",
            "spec.ports[1].name",
            "must be named",
        ),
        (
            "Service",
            "ports: [{port: 0}]",
            "spec.ports[0].port",
            "outside 1–65535",
        ),
        (
            "Service",
            "ports: [{port: -1}]",
            "spec.ports[0].port",
            "invalid value",
        ),
        (
            "Service",
            "ports: [{port: 80, targetPort: 70000}]",
            "spec.ports[0].targetPort",
            "outside 1–65535",
        ),
        (
            "Service",
            "ports: [{port: 80, targetPort: Not_A_Name}]",
            "spec.ports[0].targetPort",
            "invalid port name",
        ),
        (
            "Service",
            "ports: [{port: 80, protocol: HTTP}]",
            "spec.ports[0].protocol",
            "unsupported protocol",
        ),
        (
            "Service",
            "ports: [{name: a, port: 80}, {name: b, port: 80}]",
            "spec.ports[1]",
            "duplicate port 80/TCP",
        ),
        (
            "Service",
            "ports: [{port: 80, nodePort: 30080}]",
            "spec.ports[0].nodePort",
            "may not be used with type ClusterIP",
        ),
        (
            "Service",
            "selector: {app: 'a b'}",
            "spec.selector.app",
            "invalid label value",
        ),
        ("Service", "{}", "spec.ports", "at least one port"),
        (
            "Service",
            "{type: Headless, ports: [{port: 1}]}",
            "spec.type",
            "unsupported value",
        ),
        (
            "Service",
            "{type: ExternalName}",
            "spec.externalName",
            "required",
        ),
        (
            "Service",
            "{clusterIP: none, ports: [{port: 1}]}",
            "spec.clusterIP",
            "not an IP address",
        ),
        (
            "Deployment",
            "selector: {matchLabels: {app: a}}\ntemplate: {metadata: {labels: {app: b}}, spec: {containers: [{name: c, image: i}]}}",
            "spec.template.metadata.labels",
            "selector does not match template labels",
        ),
        (
            "Deployment",
            "selector: {matchExpressions: [{key: app, operator: In, values: [a]}]}\ntemplate: {metadata: {labels: {app: b}}, spec: {containers: [{name: c, image: i}]}}",
            "spec.template.metadata.labels",
            "selector does not match template labels",
        ),
        (
            "Deployment",
            "selector: {matchExpressions: [{key: app, operator: Equals, values: [a]}]}\ntemplate: {metadata: {labels: {app: a}}, spec: {containers: [{name: c, image: i}]}}",
            "spec.selector.matchExpressions[0].operator",
            "unsupported operator",
        ),
        (
            "Deployment",
            "template: {spec: {containers: [{name: c, image: i}]}}",
            "spec.selector",
            "empty selector",
        ),
        (
            "Deployment",
            "selector: {matchLabels: {app: a}}\ntemplate: {metadata: {labels: {app: a}}, spec: {containers: [{name: c, image: i, ports: [{containerPort: 70000}]}]}}",
            "spec.template.spec.containers[0].ports[0].containerPort",
            "outside 1–65535",
        ),
        (
            "Deployment",
            "selector: {matchLabels: {app: a}}\ntemplate: {metadata: {labels: {app: a}}, spec: {containers: []}}",
            "spec.template.spec.containers",
            "at least one container",
        ),
        (
            "Deployment",
            "{replicas: many}",
            "spec.replicas",
            "invalid type",
        ),
        (
            "Pod",
            "containers: [{name: a, image: i}, {name: a, image: i}]",
            "spec.containers[1].name",
            "duplicate container name",
        ),
        (
            "Pod",
            "containers: [{name: a}]",
            "spec.containers[0].image",
            "needs an image",
        ),
        (
            "Pod",
            "containers: [{name: a, image: i, ports: [{containerPort: 80, name: http-metrics-port}]}]",
            "spec.containers[0].ports[0].name",
            "at most 15",
        ),
        (
            "Pod",
            "containers: [{name: a, image: i, ports: [{containerPort: 80, protocol: tcp}]}]",
            "spec.containers[0].ports[0].protocol",
            "unsupported protocol",
        ),
        (
            "Pod",
            "containers: [{name: a, image: i, env: [{value: x}]}]",
            "spec.containers[0].env[0].name",
            "required",
        ),
        (
            "Secret",
            "data: {password: 'not base64!'}",
            "data.password",
            "not valid base64",
        ),
        ("Secret", "data: {'a/b': YQ==}", "data.a/b", "invalid key"),
    ];
    for &(kind, spec, field, fragment) in cases {
        let value: serde_yaml::Value =
            serde_yaml::from_str(spec).unwrap_or_else(|e| panic!("{spec}: {e}"));
        let found = match kind {
            "Service" => errors_at::<ServiceSpec>(value, "spec"),
            "Deployment" => errors_at::<DeploymentSpec>(value, "spec"),
            "Pod" => errors_at::<PodSpec>(value, "spec"),
            _ => errors_at::<Secret>(value, ""),
        };
        assert!(
            found
                .iter()
                .any(|(f, m)| f == field && m.contains(fragment)),
            "{kind} {spec}: expected {field}: …{fragment}…, got {found:?}"
        );
    }
}
