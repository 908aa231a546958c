use std::path::PathBuf;

use super::*;
use crate::diag::Severity;
use crate::test_util::{errors, sample_docs, yaml_docs};

/// Telemetry YAML from Istio's observability tasks and API reference.
const DOCS_YAML: &str = r#"
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: mesh-default, namespace: istio-system}
spec:
  accessLogging:
    - providers:
      - name: envoy
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: sleep-logging, namespace: default}
spec:
  selector:
    matchLabels:
      app: sleep
  accessLogging:
  - providers:
    - name: otel
    filter:
      expression: response.code >= 400
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: namespace-no-log, namespace: foo}
spec:
  accessLogging:
  - disabled: true
    match:
      mode: SERVER
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: mesh-default, namespace: istio-system}
spec:
  tracing:
  - providers:
    - name: "zipkin"
    randomSamplingPercentage: 100.00
    customTags:
      "provider":
        literal:
          value: "zipkin"
      "cluster_id":
        environment:
          name: ISTIO_META_CLUSTER_ID
          defaultValue: Kubernetes
      "user-agent":
        header:
          name: user-agent
      "path":
        formatter:
          value: "%REQ(:PATH)%"
---
apiVersion: telemetry.istio.io/v1alpha1
kind: Telemetry
metadata: {name: foo-tracing, namespace: bar}
spec:
  selector:
    matchLabels:
      service.istio.io/canonical-name: foo
  tracing:
  - disableSpanReporting: true
    match:
      mode: CLIENT
    useRequestIdForTraceSampling: false
    enableIstioTags: true
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: namespace-metrics, namespace: istio-system}
spec:
  metrics:
  - providers:
    - name: prometheus
    overrides:
    - match:
        metric: REQUEST_COUNT
        mode: CLIENT_AND_SERVER
      tagOverrides:
        request_host:
          value: "request.host"
        destination_port:
          value: "string(destination.port)"
    - match:
        metric: ALL_METRICS
      tagOverrides:
        grpc_response_status:
          operation: REMOVE
    - match:
        metric: REQUEST_DURATION
        mode: SERVER
      disabled: true
    - match:
        customMetric: my_custom_metric
      disabled: true
    - tagOverrides:
        request_method:
          operation: UPSERT
          value: "request.method"
    reportingInterval: 5s
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: waypoint, namespace: default}
spec:
  targetRefs:
  - kind: Gateway
    group: gateway.networking.k8s.io
    name: waypoint
  tracing:
  - randomSamplingPercentage: 10
"#;

#[test]
fn samples_and_docs_load_cleanly() {
    let mut checked = 0;
    let docs = sample_docs().into_iter().chain(
        yaml_docs(DOCS_YAML)
            .into_iter()
            .map(|d| (PathBuf::from("docs"), d)),
    );
    for (file, doc) in docs {
        let api_version = doc.get("apiVersion").and_then(serde_yaml::Value::as_str);
        let kind = doc.get("kind").and_then(serde_yaml::Value::as_str);
        if !api_version.is_some_and(|v| v.starts_with("telemetry.istio.io/"))
            || kind != Some("Telemetry")
        {
            continue;
        }
        checked += 1;
        let spec = doc.get("spec").cloned().unwrap_or_default();
        let errors = errors::<Telemetry>(spec);
        assert!(errors.is_empty(), "{}: {errors:?}", file.display());
    }
    assert!(checked >= 8, "only {checked} Telemetry documents checked");
}

#[test]
fn typed_views() {
    let t: Telemetry = serde_yaml::from_str(
        "tracing: [{providers: [{name: otel-tracing}], randomSamplingPercentage: 0, \
             customTags: {a: {header: {name: x-a, defaultValue: none}}}}]",
    )
    .expect("parses");
    assert_eq!(t.tracing[0].random_sampling_percentage, Some(0.0));
    assert_eq!(t.tracing[0].disable_span_reporting, None);
    assert_eq!(
        t.tracing[0].custom_tags["a"].source(),
        Some(TagSource::Header {
            name: "x-a",
            default_value: "none"
        })
    );
    let both = CustomTag {
        literal: Some(LiteralTag { value: "a".into() }),
        formatter: Some(FormatterTag { value: "b".into() }),
        ..CustomTag::default()
    };
    assert_eq!(both.source(), None);

    let m: MetricSelector = serde_yaml::from_str("mode: SERVER").expect("parses");
    assert_eq!(m.istio_metric(), Some(IstioMetric::AllMetrics));
    assert_eq!(
        IstioMetric::TcpSentBytes.prometheus_names(),
        ["istio_tcp_sent_bytes_total"]
    );
    let o: TagOverride = serde_yaml::from_str("value: request.host").expect("parses");
    assert_eq!(o.operation, TagOperation::Upsert);
}

#[test]
fn broken_inputs_are_located() {
    let cases: &[(&str, &str, &str)] = &[
        // (spec, field, message fragment)
        (
            "tracing: [{randomSamplingPercentage: 150}]",
            "spec.tracing[0].randomSamplingPercentage",
            "must be in range [0.0, 100.0]",
        ),
        (
            "tracing: [{randomSamplingPercentage: -1}]",
            "spec.tracing[0].randomSamplingPercentage",
            "range",
        ),
        (
            "tracing: [{randomSamplingPercentage: .nan}]",
            "spec.tracing[0].randomSamplingPercentage",
            "range",
        ),
        (
            "tracing: [{randomSamplingPercentage: all}]",
            "spec.tracing[0].randomSamplingPercentage",
            "invalid type",
        ),
        (
            "tracing: [{providers: [{name: ''}]}]",
            "spec.tracing[0].providers[0].name",
            "may not be empty",
        ),
        (
            "tracing: [{sampling: 10}]",
            "spec.tracing[0].sampling",
            "unknown field `sampling`",
        ),
        (
            "tracing: [{match: {mode: BOTH}}]",
            "spec.tracing[0].match.mode",
            "unknown variant `BOTH`",
        ),
        (
            "tracing: [{customTags: {a: {}}}]",
            "spec.tracing[0].customTags.a",
            "exactly one of literal, environment, header and formatter",
        ),
        (
            "tracing: [{customTags: {a: {literal: {value: x}, header: {name: y}}}}]",
            "spec.tracing[0].customTags.a",
            "exactly one",
        ),
        (
            "tracing: [{customTags: {a: {environment: {defaultValue: x}}}}]",
            "spec.tracing[0].customTags.a.environment.name",
            "may not be empty",
        ),
        (
            "metrics: [{overrides: [{tagOverrides: {request_host: {operation: UPSERT}}}]}]",
            "spec.metrics[0].overrides[0].tagOverrides.request_host.value",
            "must be set when operation is UPSERT",
        ),
        (
            "metrics: [{overrides: [{tagOverrides: {response_code: {operation: REMOVE, value: x}}}]}]",
            "spec.metrics[0].overrides[0].tagOverrides.response_code.value",
            "only be set when operation is UPSERT",
        ),
        (
            "metrics: [{overrides: [{tagOverrides: {a: {operation: DELETE}}}]}]",
            "spec.metrics[0].overrides[0].tagOverrides.a.operation",
            "unknown variant `DELETE`",
        ),
        (
            "metrics: [{overrides: [{match: {metric: REQUEST_BYTES}}]}]",
            "spec.metrics[0].overrides[0].match.metric",
            "unknown variant `REQUEST_BYTES`",
        ),
        (
            "metrics: [{overrides: [{match: {metric: REQUEST_COUNT, customMetric: x}}]}]",
            "spec.metrics[0].overrides[0].match",
            "only one of metric and customMetric",
        ),
        (
            "metrics: [{overrides: [{match: {customMetric: ''}}]}]",
            "spec.metrics[0].overrides[0].match.customMetric",
            "may not be empty",
        ),
        (
            "metrics: [{providers: [{name: prometheus}, {}]}]",
            "spec.metrics[0].providers[1].name",
            "may not be empty",
        ),
        (
            "metrics: [{reportingInterval: 0s}]",
            "spec.metrics[0].reportingInterval",
            "at least 1ms",
        ),
        (
            "metrics: [{reportingInterval: often}]",
            "spec.metrics[0].reportingInterval",
            "invalid duration",
        ),
        (
            "accessLogging: [{filter: {expression: ''}}]",
            "spec.accessLogging[0].filter.expression",
            "may not be empty",
        ),
        (
            "accessLogging: [{providers: [{}]}]",
            "spec.accessLogging[0].providers[0].name",
            "may not be empty",
        ),
        (
            "accessLogging: [{log_format: {}}]",
            "spec.accessLogging[0].log_format",
            "unknown field",
        ),
        (
            "{selector: {matchLabels: {app: a}}, targetRefs: [{kind: Service, name: a}]}",
            "spec.targetRefs",
            "only one of selector, targetRef and targetRefs",
        ),
        (
            "targetRef: {kind: Service, name: a, namespace: other}",
            "spec.targetRef.namespace",
            "cross namespace",
        ),
        (
            "selector: {matchLabels: {'bad key': a}}",
            "spec.selector.matchLabels.bad key",
            "invalid label key",
        ),
    ];
    for &(spec, field, fragment) in cases {
        let value: serde_yaml::Value =
            serde_yaml::from_str(spec).unwrap_or_else(|e| panic!("{spec}: {e}"));
        let found = errors::<Telemetry>(value);
        assert!(
            found
                .iter()
                .any(|(f, m)| f == field && m.contains(fragment)),
            "{spec}: expected {field}: …{fragment}…, got {found:?}"
        );
    }
}

#[test]
fn multiple_tracing_entries_warn() {
    let t: Telemetry = serde_yaml::from_str(
        "tracing: [{providers: [{name: a}, {name: b}]}, {randomSamplingPercentage: 5}]",
    )
    .expect("parses");
    let mut cx = Ctx::new("default");
    t.validate(&mut cx);
    let warned: Vec<_> = cx
        .findings()
        .iter()
        .map(|f| (f.severity, f.field.as_str()))
        .collect();
    assert_eq!(
        warned,
        [
            (Severity::Warning, "spec.tracing"),
            (Severity::Warning, "spec.tracing[0].providers"),
        ]
    );
}
