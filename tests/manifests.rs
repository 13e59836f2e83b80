//! The deployment manifests: `kubectl apply -k manifests/` installs everything, the
//! Deployment is locked down as the issue asks, RBAC grants no more than the controllers
//! use, every flag the Deployment passes exists, and the CRDs state every fact of Flux's
//! v1 CRDs (kept in `tests/data/flux-v1-crd-facts.txt`, checked against Flux's own).

use serde_yaml_ng::Value;
use std::path::Path;
use std::process::Command;

fn rendered() -> Vec<Value> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new(test_support::go_tool("kubectl"))
        .arg("kustomize")
        .arg(root.join("manifests"))
        .output()
        .expect("run kubectl kustomize");
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
fn the_receiver_service_reaches_the_receiver_port_the_deployment_listens_on() {
    let docs = rendered();
    let container = &of_kind(&docs, "Deployment")[0]["spec"]["template"]["spec"]["containers"][0];
    let port = container["ports"]
        .as_sequence()
        .expect("ports")
        .iter()
        .find(|p| p["name"].as_str() == Some("receiver"))
        .expect("a port named receiver");
    let listen = format!(
        "--receiver-addr=:{}",
        port["containerPort"].as_u64().expect("containerPort")
    );
    assert!(
        container["args"]
            .as_sequence()
            .expect("args")
            .iter()
            .any(|a| a.as_str() == Some(listen.as_str())),
        "the Deployment passes {listen}"
    );
    let service = of_kind(&docs, "Service")
        .into_iter()
        .find(|s| s["metadata"]["name"].as_str() == Some("image-reflector-receiver"))
        .expect("the receiver's Service");
    assert_eq!(
        service["spec"]["ports"][0]["targetPort"],
        Value::from("receiver")
    );
    assert_eq!(
        service["spec"]["selector"],
        of_kind(&docs, "Deployment")[0]["spec"]["selector"]["matchLabels"]
    );
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

/// Flux's v1 CRD facts, as the project keeps them (see `test_support::crd_facts`).
const FLUX_FACTS: &str = "tests/data/flux-v1-crd-facts.txt";

fn committed_flux_facts() -> std::collections::BTreeSet<String> {
    let path = test_support::repo_root().join(FLUX_FACTS);
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect()
}

#[test]
fn our_crds_state_every_fact_of_fluxs_v1_crds() {
    let ours: std::collections::BTreeSet<String> = image_reflector::api::all_crds()
        .iter()
        .map(|crd| serde_json::to_value(crd).expect("CRD JSON"))
        .flat_map(|crd| test_support::crd_facts::facts(&crd))
        .collect();
    let flux = committed_flux_facts();
    assert!(flux.len() > 100, "{FLUX_FACTS} holds {} facts", flux.len());
    let missing: Vec<&String> = flux.difference(&ours).collect();
    assert!(
        missing.is_empty(),
        "facts of Flux's v1 CRDs that ours do not state:\n{}",
        missing
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    );
    // Every served version prints Flux's v1 columns.
    for crd in image_reflector::api::all_crds() {
        let crd = serde_json::to_value(&crd).expect("CRD JSON");
        let name = crd["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        for version in crd["spec"]["versions"].as_array().expect("versions") {
            let line = format!(
                "{name} v1 additionalPrinterColumns {}",
                version["additionalPrinterColumns"]
            );
            assert!(
                flux.contains(&line),
                "{name} {}: printer columns differ from Flux's",
                version["name"]
            );
        }
    }
}

#[test]
fn the_kept_flux_facts_are_those_of_fluxs_own_crds() {
    let dir = test_support::repo_root().join("target/control-plane/flux-crds/image-reflector");
    let mut theirs = std::collections::BTreeSet::new();
    for kind in ["imagerepositories", "imagepolicies"] {
        let path = dir.join(format!("image.toolkit.fluxcd.io_{kind}.yaml"));
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!(
                "reading Flux's CRD {}: {e}; `make control-plane` fetches it with Flux's controller",
                path.display()
            )
        });
        let crd: serde_json::Value = serde_yaml_ng::from_str(&text).expect("Flux's CRD parses");
        theirs.extend(test_support::crd_facts::facts(&crd));
    }
    if std::env::var_os("UPDATE_FLUX_FACTS").is_some() {
        let mut text = String::from(
            "# Facts of Flux's image-reflector-controller v1 CRDs that image-reflector's CRDs must\n# state (tests/manifests.rs). Regenerate: UPDATE_FLUX_FACTS=1 cargo test --test manifests\n",
        );
        for fact in &theirs {
            text.push_str(fact);
            text.push('\n');
        }
        std::fs::write(test_support::repo_root().join(FLUX_FACTS), text).expect("write facts");
    }
    let kept = committed_flux_facts();
    let gone: Vec<&String> = kept.difference(&theirs).collect();
    let new: Vec<&String> = theirs.difference(&kept).collect();
    assert!(
        gone.is_empty() && new.is_empty(),
        "{FLUX_FACTS} differs from Flux's CRDs (UPDATE_FLUX_FACTS=1 rewrites it)\nonly kept:\n{gone:#?}\nonly Flux's:\n{new:#?}"
    );
}
