//! The deployment manifests: `kubectl apply -k manifests/` installs everything, the
//! Deployment is locked down as the issue asks, RBAC grants no more than the controllers
//! use, and every flag the Deployment passes exists.

use serde_yaml_ng::Value;
use std::path::Path;
use std::process::Command;

fn rendered() -> Vec<Value> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new("kubectl")
        .arg("kustomize")
        .arg(root.join("manifests"))
        .output()
        .expect("kubectl is needed (scripts/install-test-deps.sh checks for it)");
    assert!(
        out.status.success(),
        "kubectl kustomize manifests failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("UTF-8 YAML");
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).expect("valid YAML document"))
        .collect()
}

fn of_kind<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter()
        .filter(|d| d["kind"].as_str() == Some(kind))
        .collect()
}

#[test]
fn the_kustomization_installs_crds_rbac_deployment_and_webhooks() {
    let docs = rendered();
    for kind in [
        "CustomResourceDefinition",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "Deployment",
        "Service",
        "MutatingWebhookConfiguration",
        "ValidatingWebhookConfiguration",
        "Certificate",
    ] {
        assert!(!of_kind(&docs, kind).is_empty(), "no {kind} in manifests/");
    }
    assert_eq!(of_kind(&docs, "CustomResourceDefinition").len(), 2);
}

#[test]
fn the_deployment_runs_locked_down_with_probes_and_a_store_volume() {
    let docs = rendered();
    let deployment = of_kind(&docs, "Deployment")[0];
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], Value::from(true));
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"],
        Value::from("RuntimeDefault")
    );
    let container = &pod["containers"][0];
    let sc = &container["securityContext"];
    assert_eq!(sc["readOnlyRootFilesystem"], Value::from(true));
    assert_eq!(sc["allowPrivilegeEscalation"], Value::from(false));
    assert_eq!(sc["capabilities"]["drop"][0], Value::from("ALL"));
    assert_eq!(
        container["readinessProbe"]["httpGet"]["path"],
        Value::from("/readyz")
    );
    assert_eq!(
        container["livenessProbe"]["httpGet"]["path"],
        Value::from("/healthz")
    );
    let mounts: Vec<&str> = container["volumeMounts"]
        .as_sequence()
        .expect("volume mounts")
        .iter()
        .filter_map(|m| m["mountPath"].as_str())
        .collect();
    assert!(
        mounts.contains(&"/data"),
        "the tag store needs a volume: {mounts:?}"
    );
    let args: Vec<&str> = container["args"]
        .as_sequence()
        .expect("args")
        .iter()
        .filter_map(|a| a.as_str())
        .collect();
    assert!(args.iter().any(|a| a.starts_with("--storage-path=/data")));
}

#[test]
fn every_flag_the_deployment_passes_exists() {
    let docs = rendered();
    let deployment = of_kind(&docs, "Deployment")[0];
    let args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_sequence()
        .expect("args")
        .clone();
    let help = Command::new(env!("CARGO_BIN_EXE_image-reflector"))
        .args(["serve", "--help"])
        .output()
        .expect("run image-reflector serve --help");
    let help = String::from_utf8_lossy(&help.stdout);
    for arg in args.iter().filter_map(|a| a.as_str()) {
        if let Some(flag) = arg.strip_prefix("--") {
            let name = flag.split('=').next().unwrap_or(flag);
            assert!(
                help.contains(&format!("--{name}")),
                "the Deployment passes --{name}, which `serve` does not have"
            );
        }
    }
}

#[test]
fn rbac_grants_no_wildcards_and_only_reads_secrets() {
    let docs = rendered();
    for role in of_kind(&docs, "ClusterRole")
        .into_iter()
        .chain(of_kind(&docs, "Role"))
    {
        for rule in role["rules"].as_sequence().expect("rules") {
            for field in ["apiGroups", "resources", "verbs"] {
                let values = rule[field].as_sequence().expect("list");
                assert!(
                    !values.iter().any(|v| v.as_str() == Some("*")),
                    "wildcard in {field} of {:?}",
                    role["metadata"]["name"]
                );
            }
            let resources: Vec<&str> = rule["resources"]
                .as_sequence()
                .expect("resources")
                .iter()
                .filter_map(|v| v.as_str())
                .collect();
            if resources.contains(&"secrets") {
                let verbs: Vec<&str> = rule["verbs"]
                    .as_sequence()
                    .expect("verbs")
                    .iter()
                    .filter_map(|v| v.as_str())
                    .collect();
                assert_eq!(verbs, ["get", "list", "watch"], "secrets are only read");
            }
        }
    }
}

#[test]
fn the_service_account_of_the_deployment_is_bound_to_the_roles() {
    let docs = rendered();
    let sa =
        of_kind(&docs, "Deployment")[0]["spec"]["template"]["spec"]["serviceAccountName"].clone();
    for binding in of_kind(&docs, "ClusterRoleBinding")
        .into_iter()
        .chain(of_kind(&docs, "RoleBinding"))
    {
        assert_eq!(binding["subjects"][0]["name"], sa);
    }
    assert_eq!(of_kind(&docs, "ServiceAccount")[0]["metadata"]["name"], sa);
}
