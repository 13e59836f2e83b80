//! The real kubectl against the `kube-standin` binary: apply (client- and server-side),
//! get with printer columns, get -o yaml, describe with events, annotate, label, delete,
//! on custom resources, Secrets and Namespaces; schema errors; and the admission path
//! through a real HTTPS webhook server.

mod support;

use base64::Engine;
use serde_json::{Value, json};

use support::webhooks::Webhooks;
use support::{Running, certs::TestCa, fixtures};

fn crds_arg() -> String {
    fixtures().join("crds").display().to_string()
}

const WIDGET: &str = "apiVersion: example.test/v1
kind: Widget
metadata:
  name: w1
spec:
  image: ghcr.io/acme/app
  size: small
";

fn yaml_of(out: &str) -> Value {
    serde_yaml_ng::from_str(out).expect("kubectl printed YAML")
}

#[test]
fn kubectl_applies_gets_describes_annotates_labels_and_deletes_a_custom_resource() {
    let api = Running::start(&["--addr", "127.0.0.1:0", "--crds", &crds_arg()]);
    assert!(api.url.starts_with("http://127.0.0.1:"), "{}", api.url);
    let k = api.kubectl();
    let f = k.file("w.yaml", WIDGET);
    let f = f.to_str().unwrap();
    assert_eq!(
        k.ok(&["apply", "-f", f]).trim(),
        "widget.example.test/w1 created"
    );

    let table = k.ok(&["get", "widgets"]);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(
        lines[0].split_whitespace().collect::<Vec<_>>(),
        vec!["NAME", "IMAGE", "TAGS", "READY", "AGE"]
    );
    assert!(lines[1].starts_with("w1 "), "{table}");
    assert!(lines[1].contains("ghcr.io/acme/app"), "{table}");
    let wide = k.ok(&["get", "wd", "-o", "wide"]);
    assert!(wide.lines().next().unwrap().contains("INTERVAL"), "{wide}");
    assert!(
        wide.contains("5m"),
        "the schema default shows in -o wide: {wide}"
    );

    let obj = yaml_of(&k.ok(&["get", "widget", "w1", "-o", "yaml"]));
    assert_eq!(obj["spec"]["interval"], "5m", "OpenAPI default applied");
    assert_eq!(obj["metadata"]["generation"], 1);
    assert!(obj.get("status").is_none());
    assert!(!obj["metadata"]["uid"].as_str().unwrap().is_empty());
    let rv1 = obj["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();

    assert_eq!(
        k.ok(&["apply", "-f", f]).trim(),
        "widget.example.test/w1 unchanged"
    );
    let again = yaml_of(&k.ok(&["get", "widget", "w1", "-o", "yaml"]));
    assert_eq!(
        again["metadata"]["resourceVersion"],
        rv1.as_str(),
        "no-op write not persisted"
    );

    let f2 = k.file("w2.yaml", &WIDGET.replace("small", "large"));
    assert_eq!(
        k.ok(&["apply", "-f", f2.to_str().unwrap()]).trim(),
        "widget.example.test/w1 configured"
    );
    assert_eq!(
        k.ok(&["annotate", "widget", "w1", "note=hi"]).trim(),
        "widget.example.test/w1 annotated"
    );
    assert_eq!(
        k.ok(&["label", "widget", "w1", "team=a"]).trim(),
        "widget.example.test/w1 labeled"
    );
    let obj = yaml_of(&k.ok(&["get", "widget", "w1", "-o", "yaml"]));
    assert_eq!(obj["spec"]["size"], "large");
    assert_eq!(
        obj["metadata"]["generation"], 2,
        "spec change bumps generation, metadata changes do not"
    );
    assert_eq!(obj["metadata"]["annotations"]["note"], "hi");
    assert_eq!(obj["metadata"]["labels"]["team"], "a");
    assert_eq!(
        k.ok(&["get", "widgets", "-l", "team=a", "-o", "name"])
            .trim(),
        "widget.example.test/w1"
    );
    assert_eq!(
        k.ok(&["get", "widgets", "-l", "team=b", "-o", "name"])
            .trim(),
        ""
    );

    // An events.k8s.io/v1 Event shows in describe, which reads core/v1 Events.
    let uid = obj["metadata"]["uid"].as_str().unwrap();
    let ev = k.file(
        "ev.yaml",
        &format!(
            "apiVersion: events.k8s.io/v1
kind: Event
metadata: {{name: w1.scan, namespace: default}}
eventTime: \"2026-01-01T00:00:00.000000Z\"
reportingController: example.test/widget-controller
reportingInstance: widget-controller-0
action: Scan
reason: Scanned
note: found 3 tags
type: Normal
regarding: {{apiVersion: example.test/v1, kind: Widget, name: w1, namespace: default, uid: {uid}}}
"
        ),
    );
    k.ok(&["create", "-f", ev.to_str().unwrap()]);
    let described = k.ok(&["describe", "widget", "w1"]);
    assert!(described.contains("Name:         w1"), "{described}");
    let event_line = described
        .lines()
        .find(|l| l.contains("Scanned"))
        .unwrap_or_else(|| panic!("no event in describe:\n{described}"));
    for part in ["Normal", "example.test/widget-controller", "found 3 tags"] {
        assert!(event_line.contains(part), "{event_line}");
    }
    let core = yaml_of(&k.ok(&["get", "events.v1.", "w1.scan", "-o", "yaml"]));
    assert_eq!(core["involvedObject"]["name"], "w1");
    assert_eq!(core["message"], "found 3 tags");

    assert_eq!(
        k.ok(&["delete", "widget", "w1"]).trim(),
        "widget.example.test \"w1\" deleted"
    );
    let gone = k.run(&["get", "widget", "w1"]);
    assert_eq!(gone.code, 1);
    assert_eq!(
        gone.stderr.trim(),
        "Error from server (NotFound): widgets.example.test \"w1\" not found"
    );
}

#[test]
fn kubectl_server_side_apply_creates_updates_and_drops_fields_no_longer_applied() {
    let api = Running::start(&["--crds", &crds_arg()]);
    let k = api.kubectl();
    let f = k.file("w.yaml", WIDGET);
    let f = f.to_str().unwrap();
    assert_eq!(
        k.ok(&["apply", "--server-side", "-f", f]).trim(),
        "widget.example.test/w1 serverside-applied"
    );
    let f2 = k.file(
        "w2.yaml",
        &WIDGET.replace("  size: small\n", "  suspend: true\n"),
    );
    k.ok(&["apply", "--server-side", "-f", f2.to_str().unwrap()]);
    let obj = yaml_of(&k.ok(&["get", "widget", "w1", "-o", "yaml"]));
    assert!(obj["spec"].get("size").is_none(), "{obj}");
    assert_eq!(obj["spec"]["suspend"], true);
    assert_eq!(obj["metadata"]["generation"], 2);
}

#[test]
fn kubectl_manages_namespaces_and_secrets() {
    let api = Running::start(&[]);
    let k = api.kubectl();
    let f = k.file(
        "s.yaml",
        "apiVersion: v1
kind: Namespace
metadata:
  name: team-a
  labels: {tier: back}
---
apiVersion: v1
kind: Secret
metadata:
  name: creds
  namespace: team-a
stringData:
  username: bob
---
apiVersion: v1
kind: Service
metadata:
  name: hooks
  namespace: team-a
spec:
  ports: [{port: 443, targetPort: 9443}]
",
    );
    let f = f.to_str().unwrap();
    assert_eq!(
        k.ok(&["apply", "-f", f]),
        "namespace/team-a created\nsecret/creds created\nservice/hooks created\n"
    );
    let svc = k.ok(&["get", "services", "-n", "team-a"]);
    assert_eq!(
        svc.lines()
            .nth(1)
            .unwrap()
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>(),
        vec!["hooks", "ClusterIP", "443/TCP"]
    );
    let ns = k.ok(&["get", "namespaces"]);
    let row = ns.lines().find(|l| l.starts_with("team-a")).unwrap();
    assert_eq!(row.split_whitespace().nth(1), Some("Active"), "{ns}");
    assert!(ns.lines().any(|l| l.starts_with("default ")), "{ns}");
    let secrets = k.ok(&["get", "secrets", "-n", "team-a"]);
    assert_eq!(
        secrets
            .lines()
            .nth(1)
            .unwrap()
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>(),
        vec!["creds", "Opaque", "1"]
    );
    let s = yaml_of(&k.ok(&["get", "secret", "creds", "-n", "team-a", "-o", "yaml"]));
    assert_eq!(s["data"]["username"], "Ym9i", "stringData folded into data");
    assert!(s.get("stringData").is_none());

    k.ok(&["label", "namespace", "team-a", "env=test"]);
    k.ok(&["annotate", "secret", "creds", "-n", "team-a", "owner=ops"]);
    let ns = yaml_of(&k.ok(&["get", "ns", "team-a", "-o", "yaml"]));
    assert_eq!(ns["metadata"]["labels"]["env"], "test");
    assert_eq!(
        ns["metadata"]["labels"]["kubernetes.io/metadata.name"],
        "team-a"
    );
    let described = k.ok(&["describe", "secret", "creds", "-n", "team-a"]);
    assert!(described.contains("owner: ops"), "{described}");
    assert!(described.contains("username:  3 bytes"), "{described}");

    let f2 = k.file(
        "s2.yaml",
        &std::fs::read_to_string(f).unwrap().replace("bob", "alice"),
    );
    k.ok(&["apply", "--server-side", "-f", f2.to_str().unwrap()]);
    let s = yaml_of(&k.ok(&["get", "secret", "creds", "-n", "team-a", "-o", "yaml"]));
    assert_eq!(s["data"]["username"], "YWxpY2U=");

    k.ok(&["delete", "namespace", "team-a"]);
    let r = k.run(&["get", "secret", "creds", "-n", "team-a"]);
    assert_eq!(
        r.code, 1,
        "the namespace's objects went with it: {}",
        r.stdout
    );
    let lone = k.file(
        "lone.yaml",
        "apiVersion: v1\nkind: Secret\nmetadata: {name: x, namespace: team-a}\ndata: {a: Yg==}\n",
    );
    let r = k.apply_fails(&lone);
    assert!(
        r.stderr.contains("namespaces \"team-a\" not found"),
        "{}",
        r.stderr
    );
}

#[test]
fn schema_violations_reach_kubectl_worded_as_the_api_server_words_them() {
    let api = Running::start(&["--crds", &crds_arg()]);
    let k = api.kubectl();
    let bad = k.file(
        "bad.yaml",
        &WIDGET
            .replace("ghcr.io/acme/app", "UPPER")
            .replace("small", "huge"),
    );
    let r = k.apply_fails(&bad);
    assert!(
        r.stderr.contains(r#"The Widget "w1" is invalid: "#),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains(r#"spec.image: Invalid value: "UPPER": spec.image in body should match '^[a-z0-9./-]+$'"#),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains(
            r#"spec.size: Unsupported value: "huge": supported values: "small", "large""#
        ),
        "{}",
        r.stderr
    );
    let unknown = k.file("unknown.yaml", &format!("{WIDGET}  colour: red\n"));
    let r = k.apply_fails(&unknown);
    assert!(
        r.stderr
            .contains(r#"strict decoding error: unknown field "spec.colour""#),
        "{}",
        r.stderr
    );
}

#[test]
fn crds_applied_through_the_api_are_served_at_once() {
    let api = Running::start(&[]);
    let k = api.kubectl();
    let crd = fixtures().join("crds/widgets.yaml");
    k.ok(&["apply", "-f", crd.to_str().unwrap()]);
    let f = k.file("w.yaml", WIDGET);
    assert_eq!(
        k.ok(&["apply", "-f", f.to_str().unwrap()]).trim(),
        "widget.example.test/w1 created"
    );
    k.ok(&["delete", "crd", "widgets.example.test"]);
    let r = k.run(&["get", "widgets"]);
    assert_eq!(r.code, 1, "{}", r.stdout);
}

// ------------------------------------------------------------------ admission

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn hook(name: &str, path: &str, ca_b64: &str, extra: Value) -> Value {
    let mut h = json!({
        "name": name,
        "admissionReviewVersions": ["v1"],
        "sideEffects": "None",
        "clientConfig": {"service": {"namespace": "webhooks", "name": "widget-hooks", "path": path}, "caBundle": ca_b64},
        "rules": [{"operations": ["CREATE", "UPDATE"], "apiGroups": ["example.test"],
                   "apiVersions": ["v1"], "resources": ["widgets"]}],
        "objectSelector": {"matchExpressions": [{"key": "unreachable", "operator": "DoesNotExist"}]},
    });
    if let (Some(h), Some(e)) = (h.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            h.insert(k.clone(), v.clone());
        }
    }
    h
}

/// A stand-in with mutating and validating webhooks served by `Webhooks` through
/// `--service webhooks/widget-hooks=ADDR`, plus two webhooks pointing at a closed port
/// (one `Fail`, one `Ignore`) for objects labelled `unreachable`.
fn admission_setup(cert_names: &[&str]) -> (Running, Webhooks, tempfile::TempDir) {
    let ca = TestCa::new("kube-standin test CA");
    let leaf = ca.server(cert_names);
    let hooks = Webhooks::start(&leaf.cert_pem, &leaf.key_pem);
    let ca_b64 = base64::engine::general_purpose::STANDARD.encode(&ca.cert_pem);
    let dead = format!("https://127.0.0.1:{}/dead", free_port());
    let unreachable = |name: &str, policy: &str, value: &str| {
        json!({
            "name": name, "admissionReviewVersions": ["v1"], "sideEffects": "None",
            "failurePolicy": policy, "timeoutSeconds": 2,
            "clientConfig": {"url": dead, "caBundle": ca_b64},
            "rules": [{"operations": ["CREATE"], "apiGroups": ["example.test"], "apiVersions": ["*"], "resources": ["widgets"]}],
            "objectSelector": {"matchLabels": {"unreachable": value}},
        })
    };
    let dir = tempfile::tempdir().unwrap();
    let mutating = json!({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": "widget-mutators"},
        "webhooks": [
            hook("bytes.mutate.example.test", "/mutate-bytes", &ca_b64, json!({})),
            hook("b64.mutate.example.test", "/mutate-b64", &ca_b64, json!({})),
            unreachable("fail.example.test", "Fail", "fail"),
            unreachable("ignore.example.test", "Ignore", "ignore"),
            hook("slow.example.test", "/slow", &ca_b64, json!({"timeoutSeconds": 1,
                "objectSelector": {"matchLabels": {"slow": "yes"}}})),
        ],
    });
    let validating = json!({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": "widget-validators"},
        "webhooks": [
            hook("validate.example.test", "/validate", &ca_b64,
                json!({"namespaceSelector": {"matchExpressions": [{"key": "skip-webhooks", "operator": "DoesNotExist"}]}})),
            hook("side-effects.example.test", "/validate", &ca_b64,
                json!({"sideEffects": "Unknown", "objectSelector": {"matchLabels": {"side-effects": "yes"}}})),
        ],
    });
    std::fs::write(
        dir.path().join("webhooks.yaml"),
        format!("{mutating}\n---\n{validating}\n"),
    )
    .unwrap();
    let service = format!("webhooks/widget-hooks={}", hooks.addr);
    let api = Running::start(&[
        "--crds",
        &crds_arg(),
        "--webhooks",
        dir.path().to_str().unwrap(),
        "--service",
        &service,
    ]);
    (api, hooks, dir)
}

#[test]
fn mutating_webhooks_patch_the_object_and_validating_webhooks_see_the_result() {
    let (api, hooks, _dir) = admission_setup(&["widget-hooks.webhooks.svc"]);
    let k = api.kubectl();
    let f = k.file("w.yaml", WIDGET);
    k.ok(&["apply", "-f", f.to_str().unwrap()]);
    let obj = yaml_of(&k.ok(&["get", "widget", "w1", "-o", "yaml"]));
    assert_eq!(
        obj["metadata"]["annotations"]["mutated-bytes"], "yes",
        "{obj}"
    );
    assert_eq!(
        obj["metadata"]["annotations"]["mutated-b64"], "yes",
        "{obj}"
    );

    let mutate = hooks.seen("/mutate-bytes");
    let req = &mutate[0]["request"];
    assert_eq!(mutate[0]["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(req["operation"], "CREATE");
    assert_eq!(
        req["kind"],
        json!({"group": "example.test", "version": "v1", "kind": "Widget"})
    );
    assert_eq!(
        req["resource"],
        json!({"group": "example.test", "version": "v1", "resource": "widgets"})
    );
    assert_eq!(req["requestKind"], req["kind"]);
    assert_eq!(req["namespace"], "default");
    assert_eq!(req["name"], "w1");
    assert_eq!(req["dryRun"], false);
    assert_eq!(req["options"]["kind"], "CreateOptions");
    assert_eq!(req["userInfo"]["username"], "kube-standin-admin");
    assert_eq!(req["oldObject"], Value::Null);
    assert_eq!(
        req["object"]["spec"]["interval"], "5m",
        "defaults before admission"
    );
    assert!(
        req["object"]["metadata"].get("uid").is_none(),
        "mutators see the object before uid is set"
    );
    let validate = hooks.seen("/validate");
    let vobj = &validate[0]["request"]["object"];
    assert_eq!(
        vobj["metadata"]["annotations"]["mutated-b64"], "yes",
        "validators see mutations"
    );
    assert!(
        vobj["metadata"]["uid"].is_string(),
        "validators see the final object"
    );

    // An update is admitted as UPDATE with the old object.
    k.ok(&["label", "widget", "w1", "x=y"]);
    let last = hooks.seen("/validate").pop().unwrap();
    assert_eq!(last["request"]["operation"], "UPDATE");
    assert_eq!(last["request"]["oldObject"]["metadata"]["name"], "w1");
    assert_eq!(last["request"]["options"]["kind"], "UpdateOptions");
}

#[test]
fn a_webhook_denial_reaches_kubectl_with_the_api_server_wording_and_exit_code_1() {
    let (api, _hooks, _dir) = admission_setup(&["widget-hooks.webhooks.svc"]);
    let k = api.kubectl();
    let f = k.file("large.yaml", &WIDGET.replace("small", "large"));
    let r = k.apply_fails(&f);
    let path = f.display();
    assert_eq!(
        r.stderr.trim(),
        format!(
            "Error from server (Forbidden): error when creating \"{path}\": admission webhook \"validate.example.test\" denied the request: spec.size: large widgets are not allowed here"
        )
    );
    assert_eq!(k.run(&["get", "widget", "w1"]).code, 1, "nothing stored");

    // Without a reason: code 400 and kubectl's plain "Error from server:".
    let plain = k.file(
        "plain.yaml",
        &WIDGET.replace("name: w1", "name: deny-plain"),
    );
    let r = k.apply_fails(&plain);
    assert_eq!(
        r.stderr.trim(),
        format!(
            "Error from server: error when creating \"{}\": admission webhook \"validate.example.test\" denied the request: plain denial",
            plain.display()
        )
    );

    // The validating webhook's namespaceSelector leaves out namespaces labelled skip-webhooks.
    let ns = k.file(
        "ns.yaml",
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: free, labels: {skip-webhooks: \"yes\"}}\n",
    );
    k.ok(&["apply", "-f", ns.to_str().unwrap()]);
    k.ok(&["apply", "-n", "free", "-f", f.to_str().unwrap()]);
}

#[test]
fn webhook_warnings_are_printed_by_kubectl() {
    let (api, _hooks, _dir) = admission_setup(&["widget-hooks.webhooks.svc"]);
    let k = api.kubectl();
    let f = k.file("warn.yaml", &WIDGET.replace("name: w1", "name: warn-me"));
    let r = k.run(&["apply", "-f", f.to_str().unwrap()]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stderr
            .contains("Warning: spec.interval: 5m is the default; consider 1h"),
        "{}",
        r.stderr
    );
}

#[test]
fn an_unreachable_webhook_fails_the_request_under_fail_and_is_skipped_under_ignore() {
    let (api, _hooks, _dir) = admission_setup(&["widget-hooks.webhooks.svc"]);
    let k = api.kubectl();
    let ignore = k.file(
        "ignore.yaml",
        &WIDGET.replace(
            "name: w1",
            "name: w-ignore\n  labels: {unreachable: ignore}",
        ),
    );
    k.ok(&["apply", "-f", ignore.to_str().unwrap()]);
    let fail = k.file(
        "fail.yaml",
        &WIDGET.replace("name: w1", "name: w-fail\n  labels: {unreachable: fail}"),
    );
    let r = k.apply_fails(&fail);
    let want = format!(
        "Error from server (InternalError): error when creating \"{}\": Internal error occurred: failed calling webhook \"fail.example.test\": failed to call webhook: Post \"https://127.0.0.1:",
        fail.display()
    );
    assert!(r.stderr.starts_with(&want), "{}", r.stderr);
    assert!(
        r.stderr.trim().ends_with(
            "/dead?timeout=2s\": dial tcp 127.0.0.1:PORT: connect: connection refused"
                .replace("PORT", &dead_port(&r.stderr))
                .as_str()
        ),
        "{}",
        r.stderr
    );
}

#[test]
fn a_webhook_certificate_not_naming_the_service_is_refused() {
    let (api, _hooks, _dir) = admission_setup(&["someone-else.webhooks.svc"]);
    let k = api.kubectl();
    let f = k.file("w.yaml", WIDGET);
    let r = k.apply_fails(&f);
    assert!(
        r.stderr.contains("failed calling webhook \"bytes.mutate.example.test\": failed to call webhook: Post \"https://widget-hooks.webhooks.svc:443/mutate-bytes?timeout=10s\": "),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.to_lowercase().contains("certificate"),
        "{}",
        r.stderr
    );
}

#[test]
fn kubectl_applies_and_lists_the_projects_image_repositories_and_policies() {
    let crds = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../manifests/crds");
    let api = Running::start(&["--crds", crds.to_str().unwrap()]);
    let k = api.kubectl();
    let f = k.file(
        "podinfo.yaml",
        "apiVersion: image.toolkit.fluxcd.io/v1
kind: ImageRepository
metadata:
  name: podinfo
spec:
  image: ghcr.io/stefanprodan/podinfo
  interval: 5m
---
apiVersion: image.toolkit.fluxcd.io/v1
kind: ImagePolicy
metadata:
  name: podinfo
spec:
  imageRepositoryRef:
    name: podinfo
  policy:
    semver:
      range: 5.0.x
",
    );
    assert_eq!(
        k.ok(&["apply", "-f", f.to_str().unwrap()]),
        "imagerepository.image.toolkit.fluxcd.io/podinfo created\nimagepolicy.image.toolkit.fluxcd.io/podinfo created\n"
    );
    let table = k.ok(&["get", "imagerepositories"]);
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        vec!["NAME", "IMAGE", "TAGS", "READY", "STATUS", "AGE"],
        "{table}"
    );
    assert!(
        table
            .lines()
            .nth(1)
            .unwrap()
            .contains("ghcr.io/stefanprodan/podinfo")
    );
    let wide = k.ok(&["get", "imagerepository", "podinfo", "-o", "wide"]);
    assert!(wide.contains("LAST SCAN"), "{wide}");

    let repo = yaml_of(&k.ok(&["get", "imagerepository", "podinfo", "-o", "yaml"]));
    assert_eq!(repo["apiVersion"], "image.toolkit.fluxcd.io/v1");
    assert_eq!(repo["spec"]["provider"], "generic", "schema default");
    assert_eq!(
        repo["status"]["observedGeneration"], -1,
        "status default applied on read"
    );
    let beta = yaml_of(&k.ok(&[
        "get",
        "imagerepositories.v1beta2.image.toolkit.fluxcd.io",
        "podinfo",
        "-o",
        "yaml",
    ]));
    assert_eq!(
        beta["apiVersion"], "image.toolkit.fluxcd.io/v1beta2",
        "one store, every served version"
    );
    assert_eq!(beta["spec"]["image"], "ghcr.io/stefanprodan/podinfo");

    let policies = k.ok(&["get", "imagepolicies"]);
    assert!(
        policies.lines().nth(1).unwrap().starts_with("podinfo "),
        "{policies}"
    );
    let bad = k.file(
        "bad.yaml",
        "apiVersion: image.toolkit.fluxcd.io/v1
kind: ImageRepository
metadata:
  name: bad
spec:
  image: ghcr.io/stefanprodan/podinfo
  interval: often
",
    );
    let r = k.apply_fails(&bad);
    assert!(
        r.stderr.contains(
            "The ImageRepository \"bad\" is invalid: spec.interval: Invalid value: \"often\""
        ),
        "{}",
        r.stderr
    );
}

#[test]
fn a_webhook_slower_than_its_timeout_fails_the_request() {
    let (api, _hooks, _dir) = admission_setup(&["widget-hooks.webhooks.svc"]);
    let k = api.kubectl();
    let f = k.file(
        "slow.yaml",
        &WIDGET.replace("name: w1", "name: slow\n  labels: {slow: \"yes\"}"),
    );
    let started = std::time::Instant::now();
    let r = k.apply_fails(&f);
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "gave up after timeoutSeconds (1 s), not after the webhook's 15 s"
    );
    assert!(
        r.stderr.trim().ends_with(
            "Internal error occurred: failed calling webhook \"slow.example.test\": failed to call webhook: Post \"https://widget-hooks.webhooks.svc:443/slow?timeout=1s\": context deadline exceeded"
        ),
        "{}",
        r.stderr
    );
}

#[test]
fn a_server_dry_run_is_refused_by_a_webhook_with_side_effects() {
    let (api, hooks, _dir) = admission_setup(&["widget-hooks.webhooks.svc"]);
    let k = api.kubectl();
    let plain = k.file("plain.yaml", WIDGET);
    k.ok(&["apply", "--dry-run=server", "-f", plain.to_str().unwrap()]);
    let dry = hooks.seen("/validate");
    assert_eq!(dry.last().unwrap()["request"]["dryRun"], true);
    assert_eq!(
        k.run(&["get", "widget", "w1"]).code,
        1,
        "a dry run stores nothing"
    );

    let f = k.file(
        "side.yaml",
        &WIDGET.replace("name: w1", "name: side\n  labels: {side-effects: \"yes\"}"),
    );
    let r = k.run(&["apply", "--dry-run=server", "-f", f.to_str().unwrap()]);
    assert_eq!(r.code, 1);
    assert_eq!(
        r.stderr.trim(),
        format!(
            "Error from server (BadRequest): error when creating \"{}\": admission webhook \"side-effects.example.test\" does not support dry run",
            f.display()
        )
    );
    k.ok(&["apply", "-f", f.to_str().unwrap()]);
}

#[test]
fn kubectl_get_watch_prints_rows_as_objects_change() {
    let api = Running::start(&["--crds", &crds_arg()]);
    let k = api.kubectl();
    let f = k.file("w.yaml", WIDGET);
    k.ok(&["apply", "-f", f.to_str().unwrap()]);
    let mut watch = k.spawn(&["get", "widgets", "-w"]);
    let first = watch.lines_until(2, std::time::Duration::from_secs(10));
    k.ok(&["label", "widget", "w1", "a=b"]);
    let next = watch.lines_until(1, std::time::Duration::from_secs(10));
    assert_eq!(
        first[0].split_whitespace().collect::<Vec<_>>(),
        vec!["NAME", "IMAGE", "TAGS", "READY", "AGE"]
    );
    assert!(first[1].starts_with("w1 "), "{first:?}");
    assert!(next[0].starts_with("w1 "), "{next:?}");
}

#[test]
fn the_binary_exits_cleanly_on_sigterm() {
    let mut api = Running::start(&[]);
    let pid = api.child.id().to_string();
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        if let Some(code) = api.child.try_wait().unwrap() {
            assert!(code.success(), "{code}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "still running 10 s after SIGTERM"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// The port in `Post "https://127.0.0.1:PORT/dead...`.
fn dead_port(stderr: &str) -> String {
    let after = stderr.split("https://127.0.0.1:").nth(1).unwrap_or("");
    after.chars().take_while(|c| c.is_ascii_digit()).collect()
}
