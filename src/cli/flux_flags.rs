//! The flags of Flux's image-reflector-controller v1.2.0 that `serve` takes besides its
//! own, with Flux's syntax (Go's `pflag`: booleans bare or `--flag=true|false`, durations
//! as Go writes them), meanings and defaults, so Flux's Deployment args start this binary
//! unchanged. Flags of Flux's Badger store mean nothing here: they are accepted, and one
//! log line says they are ignored.

use std::collections::BTreeMap;
use std::time::Duration;

/// A Go duration flag value ("750ms", "15m0s", "1h").
pub fn go_duration(s: &str) -> Result<Duration, String> {
    crate::api::parse_duration(s).map_err(|e| e.to_string())
}

/// Feature gates Flux's image-reflector-controller v1.2.0 knows, with their defaults.
pub const FEATURE_GATES: [(&str, bool); 3] = [
    ("CacheSecretsAndConfigMaps", false),
    ("FluxStorage", false),
    ("ObjectLevelWorkloadIdentity", false),
];

/// `--feature-gates A=true,B=false`: only the gates Flux's controller knows, each with a
/// boolean, as Flux refuses anything else.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FeatureGates(pub BTreeMap<String, bool>);

impl FeatureGates {
    /// Whether `gate` is on (its default when not given).
    pub fn enabled(&self, gate: &str) -> bool {
        self.0.get(gate).copied().unwrap_or_else(|| {
            FEATURE_GATES
                .iter()
                .find(|(name, _)| *name == gate)
                .is_some_and(|(_, default)| *default)
        })
    }
}

/// Parses one `--feature-gates` value (the flag may be repeated; later values win).
pub fn feature_gates(s: &str) -> Result<FeatureGates, String> {
    let mut gates = BTreeMap::new();
    for pair in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (name, value) = pair
            .split_once('=')
            .ok_or_else(|| format!("{pair:?} is not NAME=true|false"))?;
        let value = match value.trim() {
            "true" | "True" | "TRUE" | "1" | "t" | "T" => true,
            "false" | "False" | "FALSE" | "0" | "f" | "F" => false,
            other => return Err(format!("{name}: {other:?} is not true or false")),
        };
        let name = name.trim();
        if !FEATURE_GATES.iter().any(|(known, _)| *known == name) {
            let known: Vec<&str> = FEATURE_GATES.iter().map(|(n, _)| *n).collect();
            return Err(format!(
                "feature gate {name:?} is not supported; the gates are {}",
                known.join(", ")
            ));
        }
        gates.insert(name.to_string(), value);
    }
    Ok(FeatureGates(gates))
}

/// Flux's flags that have no counterpart among image-reflector's own.
#[derive(clap::Args, Debug, Clone)]
pub struct FluxFlags {
    /// Address of notification-controller's event receiver (e.g.
    /// `http://notification-controller.flux-system.svc.cluster.local./`): every event is
    /// also posted there in Flux's event format.
    #[arg(long, value_parser = crate::controller::events::flux::events_addr)]
    pub events_addr: Option<url::Url>,
    /// Feature gates, `NAME=true|false,...`: CacheSecretsAndConfigMaps, FluxStorage,
    /// ObjectLevelWorkloadIdentity (see the README for what each means here).
    #[arg(long, value_parser = feature_gates, action = clap::ArgAction::Append)]
    pub feature_gates: Vec<FeatureGates>,
    /// First delay of the retry backoff after a failed reconcile; it doubles per failure.
    #[arg(long, default_value = "750ms", value_parser = go_duration)]
    pub min_retry_delay: Duration,
    /// Upper bound of the retry backoff.
    #[arg(long, default_value = "15m", value_parser = go_duration)]
    pub max_retry_delay: Duration,
    /// How long a replica waits before it takes over a Lease that was not renewed.
    #[arg(long, default_value = "35s", value_parser = go_duration)]
    pub leader_election_lease_duration: Duration,
    /// How long the leader keeps retrying a failed renewal before it gives up leadership.
    #[arg(long, default_value = "30s", value_parser = go_duration)]
    pub leader_election_renew_deadline: Duration,
    /// How often replicas try to acquire the Lease, and the leader renews it.
    #[arg(long, default_value = "5s", value_parser = go_duration)]
    pub leader_election_retry_period: Duration,
    /// Release the Lease on shutdown, so another replica leads at once.
    #[arg(long, default_value_t = true, num_args = 0..=1, require_equals = true,
          default_missing_value = "true", action = clap::ArgAction::Set)]
    pub leader_election_release_on_cancel: bool,
    /// Flux watches Secrets and ConfigMaps with these labels for changes. image-reflector
    /// watches every Secret an ImageRepository uses (metadata only), labelled or not.
    #[arg(long, default_value = "reconcile.fluxcd.io/watch=Enabled")]
    pub watch_configs_label_selector: String,
    /// Largest number of cloud tokens and registry credentials kept in the token cache
    /// (0 disables it).
    #[arg(long, default_value_t = 100)]
    pub token_cache_max_size: usize,
    /// Longest time a cached cloud token or registry credential is used (at most 1h).
    #[arg(long, default_value = "1h", value_parser = go_duration)]
    pub token_cache_max_duration: Duration,
    /// The kubeconfig file (default: in-cluster configuration, else KUBECONFIG or
    /// ~/.kube/config).
    #[arg(long)]
    pub kubeconfig: Option<std::path::PathBuf>,
    /// Flux's Badger garbage collection interval in minutes: ignored (the tag store
    /// removes an object's tags when the object goes).
    #[arg(long)]
    pub gc_interval: Option<u16>,
    /// Flux's Badger value log size: ignored (no Badger here).
    #[arg(long)]
    pub storage_value_log_file_size: Option<i64>,
    /// Flux's filesystem-storage compression threshold in KiB: ignored (the tag store
    /// always deflates tag lists over 4 KiB).
    #[arg(long)]
    pub storage_compression_threshold: Option<i64>,
    /// Log in to ECR with the controller's own AWS identity for `provider: generic`
    /// repositories on an ECR host that have no credentials of their own (the seed's
    /// EKS flag).
    #[arg(long, default_value_t = false, num_args = 0..=1, require_equals = true,
          default_missing_value = "true", action = clap::ArgAction::Set)]
    pub aws_autologin_for_ecr: bool,
    /// The same for Artifact Registry and GCR hosts, with the controller's GCP identity.
    #[arg(long, default_value_t = false, num_args = 0..=1, require_equals = true,
          default_missing_value = "true", action = clap::ArgAction::Set)]
    pub gcp_autologin_for_gcr: bool,
    /// The same for ACR hosts with the controller's Azure identity.
    #[arg(long, default_value_t = false, num_args = 0..=1, require_equals = true,
          default_missing_value = "true", action = clap::ArgAction::Set)]
    pub azure_autologin_for_acr: bool,
}

impl FluxFlags {
    /// The clouds whose registries `generic` repositories log in to (autologin flags).
    pub fn autologin(&self) -> Vec<crate::scanner::cloud::Cloud> {
        use crate::scanner::cloud::Cloud;
        [
            (Cloud::Aws, self.aws_autologin_for_ecr),
            (Cloud::Azure, self.azure_autologin_for_acr),
            (Cloud::Gcp, self.gcp_autologin_for_gcr),
        ]
        .into_iter()
        .filter_map(|(c, on)| on.then_some(c))
        .collect()
    }

    /// The feature gates, later `--feature-gates` values overriding earlier ones.
    pub fn gates(&self) -> FeatureGates {
        let mut all = BTreeMap::new();
        for g in &self.feature_gates {
            all.extend(g.0.clone());
        }
        FeatureGates(all)
    }

    /// What the process says at start about flags that change nothing here.
    pub fn notices(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.gc_interval.is_some() {
            out.push("--gc-interval is ignored: there is no Badger database to collect; an object's tags leave the store with the object".to_string());
        }
        if self.storage_value_log_file_size.is_some() {
            out.push(
                "--storage-value-log-file-size is ignored: there is no Badger database".to_string(),
            );
        }
        if self.storage_compression_threshold.is_some() {
            out.push("--storage-compression-threshold is ignored: the tag store deflates every tag list over 4 KiB".to_string());
        }
        let gates = self.gates();
        if gates.enabled("FluxStorage") {
            out.push("feature gate FluxStorage changes nothing: the tag store is always a directory of checksummed files".to_string());
        }
        if gates.0.contains_key("CacheSecretsAndConfigMaps") {
            out.push("feature gate CacheSecretsAndConfigMaps changes nothing: Secrets are watched as metadata only and read when a scan needs them".to_string());
        }
        if self.token_cache_max_duration > crate::scanner::cloud::MAX_DURATION {
            out.push(format!(
                "--token-cache-max-duration {}s is more than Flux's ceiling of an hour; tokens are kept for an hour at most",
                self.token_cache_max_duration.as_secs()
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn feature_gates_take_known_names_with_booleans_and_name_the_known_ones_otherwise() {
        let g = feature_gates("FluxStorage=true, ObjectLevelWorkloadIdentity=false").unwrap();
        assert!(g.enabled("FluxStorage"));
        assert!(!g.enabled("ObjectLevelWorkloadIdentity"));
        assert!(!g.enabled("CacheSecretsAndConfigMaps"));
        let e = feature_gates("Nope=true").unwrap_err();
        assert!(e.contains("\"Nope\" is not supported"), "{e}");
        assert!(e.contains("FluxStorage"), "{e}");
        assert!(
            feature_gates("FluxStorage=yes")
                .unwrap_err()
                .contains("true or false")
        );
        assert!(
            feature_gates("FluxStorage")
                .unwrap_err()
                .contains("NAME=true|false")
        );
        assert_eq!(feature_gates("").unwrap(), FeatureGates::default());
    }
}
