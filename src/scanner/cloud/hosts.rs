//! Which cloud registry a host is, and what a login for it needs: the ECR account and
//! region (`ACCOUNT.dkr.ecr[-fips].REGION.amazonaws.com[.cn]` and the other AWS
//! partitions), ECR Public (`public.ecr.aws`), ACR (`NAME.azurecr.io` and the sovereign
//! clouds' suffixes), GAR and GCR (`LOCATION-docker.pkg.dev`, `[REGION.]gcr.io`).
//! Pure: no I/O.

use super::{Cloud, CloudError, Step};
use std::sync::LazyLock;

/// The registry a login is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegistryTarget {
    /// A private ECR registry.
    Ecr {
        account: String,
        region: String,
        fips: bool,
    },
    /// `public.ecr.aws` (authorization in us-east-1).
    EcrPublic,
    /// An Azure Container Registry, by host.
    Acr { host: String },
    /// Artifact Registry or Container Registry: one access token serves every host.
    Gcp { host: String },
}

impl RegistryTarget {
    /// What a registry credential for this target depends on besides the identity (a
    /// part of its cache key): the ECR region, the ACR host; GCP tokens serve every
    /// registry.
    pub fn cache_input(&self) -> String {
        match self {
            RegistryTarget::Ecr { region, fips, .. } => {
                format!("ecr:{region}{}", if *fips { ":fips" } else { "" })
            }
            RegistryTarget::EcrPublic => "ecr-public".to_string(),
            RegistryTarget::Acr { host } => format!("acr:{host}"),
            RegistryTarget::Gcp { .. } => "gcp".to_string(),
        }
    }

    /// The AWS region a login for this target talks to (STS and ECR).
    pub fn aws_region(&self) -> Option<&str> {
        match self {
            RegistryTarget::Ecr { region, .. } => Some(region),
            RegistryTarget::EcrPublic => Some(ECR_PUBLIC_REGION),
            _ => None,
        }
    }
}

/// ECR Public issues authorization tokens in us-east-1 only.
pub const ECR_PUBLIC_REGION: &str = "us-east-1";
pub const ECR_PUBLIC_HOST: &str = "public.ecr.aws";

// The partitions' DNS suffixes as the ECR credential helper lists them.
static ECR: LazyLock<regex::Regex> = LazyLock::new(|| {
    regex::Regex::new(
        r"^([0-9]{12})\.dkr[.-]ecr(-fips)?\.([a-z0-9-]+)\.(amazonaws\.com(\.cn)?|amazonaws\.eu|sc2s\.sgov\.gov|c2s\.ic\.gov|cloud\.adc-e\.uk|csp\.hci\.ic\.gov|on\.aws)$",
    )
    .expect("static regex")
});
static ACR: LazyLock<regex::Regex> = LazyLock::new(|| {
    regex::Regex::new(r"^[a-z0-9][a-z0-9-]*\.azurecr\.(io|cn|de|us)$").expect("static regex")
});
static GCP: LazyLock<regex::Regex> = LazyLock::new(|| {
    regex::Regex::new(
        r"^(([a-z0-9-]+\.)?gcr\.io|[a-z0-9-]+-docker\.pkg\.dev|docker\.s3nsregistry\.fr)$",
    )
    .expect("static regex")
});

/// The cloud whose registries `registry` (`host[:port]`, as in image names) belongs to.
pub fn cloud_of(registry: &str) -> Option<Cloud> {
    Cloud::ALL
        .into_iter()
        .find(|c| target(*c, registry).is_ok())
}

/// The login target for `registry` on `cloud`, or why the host is not one of its
/// registries.
pub fn target(cloud: Cloud, registry: &str) -> Result<RegistryTarget, CloudError> {
    let host = registry.to_ascii_lowercase();
    let found = match cloud {
        Cloud::Aws if host == ECR_PUBLIC_HOST => Some(RegistryTarget::EcrPublic),
        Cloud::Aws => ECR.captures(&host).map(|c| RegistryTarget::Ecr {
            account: c[1].to_string(),
            fips: c.get(2).is_some(),
            region: c[3].to_string(),
        }),
        Cloud::Azure => ACR
            .is_match(&host)
            .then(|| RegistryTarget::Acr { host: host.clone() }),
        Cloud::Gcp => GCP
            .is_match(&host)
            .then(|| RegistryTarget::Gcp { host: host.clone() }),
    };
    found.ok_or_else(|| {
        let expected = match cloud {
            Cloud::Aws => {
                "an ECR registry (ACCOUNT.dkr.ecr.REGION.amazonaws.com, or public.ecr.aws)"
            }
            Cloud::Azure => "an Azure Container Registry (NAME.azurecr.io)",
            Cloud::Gcp => "an Artifact Registry or Container Registry host (LOCATION-docker.pkg.dev, gcr.io, REGION.gcr.io)",
        };
        CloudError::new(
            cloud,
            Step::UnsupportedRegistry,
            format!(
                "{registry} is not {expected}; use provider generic for other registries"
            ),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ecr_hosts_give_their_account_and_region_in_every_partition() {
        let t = target(Cloud::Aws, "123456789012.dkr.ecr.us-east-1.amazonaws.com").unwrap();
        assert_eq!(
            t,
            RegistryTarget::Ecr {
                account: "123456789012".into(),
                region: "us-east-1".into(),
                fips: false
            }
        );
        assert_eq!(t.aws_region(), Some("us-east-1"));
        let fips = target(
            Cloud::Aws,
            "123456789012.dkr.ecr-fips.us-gov-west-1.amazonaws.com",
        );
        assert!(matches!(fips, Ok(RegistryTarget::Ecr { fips: true, .. })));
        let china = target(
            Cloud::Aws,
            "123456789012.dkr.ecr.cn-north-1.amazonaws.com.cn",
        );
        assert!(matches!(china, Ok(RegistryTarget::Ecr { region, .. }) if region == "cn-north-1"));
        let dual = target(Cloud::Aws, "123456789012.dkr-ecr.eu-west-1.on.aws");
        assert!(dual.is_ok());
        assert_eq!(
            target(Cloud::Aws, "public.ecr.aws").unwrap().aws_region(),
            Some("us-east-1")
        );
    }

    #[test]
    fn hosts_of_another_cloud_or_none_are_refused_naming_what_is_expected() {
        let e = target(Cloud::Aws, "ghcr.io").unwrap_err();
        assert_eq!(e.step, Step::UnsupportedRegistry);
        assert!(
            e.to_string().contains("ghcr.io is not an ECR registry"),
            "{e}"
        );
        // A port, a short account id or a look-alike suffix are not ECR.
        for host in [
            "123456789012.dkr.ecr.us-east-1.amazonaws.com:5000",
            "12345.dkr.ecr.us-east-1.amazonaws.com",
            "123456789012.dkr.ecr.us-east-1.amazonaws.com.evil.example",
        ] {
            assert!(target(Cloud::Aws, host).is_err(), "{host}");
        }
        assert!(target(Cloud::Azure, "myregistry.azurecr.io.example.com").is_err());
        assert!(target(Cloud::Gcp, "gcr.io.example.com").is_err());
    }

    #[test]
    fn acr_and_gcp_hosts_are_recognised() {
        assert_eq!(
            target(Cloud::Azure, "MyRegistry.azurecr.io").unwrap(),
            RegistryTarget::Acr {
                host: "myregistry.azurecr.io".into()
            }
        );
        assert!(target(Cloud::Azure, "r.azurecr.cn").is_ok());
        for host in [
            "gcr.io",
            "eu.gcr.io",
            "europe-west1-docker.pkg.dev",
            "us-docker.pkg.dev",
        ] {
            assert!(target(Cloud::Gcp, host).is_ok(), "{host}");
        }
        assert_eq!(cloud_of("us-docker.pkg.dev"), Some(Cloud::Gcp));
        assert_eq!(cloud_of("r.azurecr.io"), Some(Cloud::Azure));
        assert_eq!(
            cloud_of("123456789012.dkr.ecr.us-east-1.amazonaws.com"),
            Some(Cloud::Aws)
        );
        assert_eq!(cloud_of("ghcr.io"), None);
    }

    #[test]
    fn gcp_tokens_serve_every_registry_and_ecr_tokens_one_region() {
        let a = target(Cloud::Gcp, "gcr.io").unwrap();
        let b = target(Cloud::Gcp, "us-docker.pkg.dev").unwrap();
        assert_eq!(a.cache_input(), b.cache_input());
        let e1 = target(Cloud::Aws, "123456789012.dkr.ecr.us-east-1.amazonaws.com").unwrap();
        let e2 = target(Cloud::Aws, "210987654321.dkr.ecr.us-east-1.amazonaws.com").unwrap();
        let e3 = target(Cloud::Aws, "123456789012.dkr.ecr.eu-west-1.amazonaws.com").unwrap();
        assert_eq!(e1.cache_input(), e2.cache_input());
        assert_ne!(e1.cache_input(), e3.cache_input());
    }
}
