//! One parser per provider's payload. Each turns a delivery's body (already
//! authenticated) into the pushes it reports: the repository as the provider names it and
//! the tag, if the event concerns one. Everything that does not change a repository's
//! tags (pulls, blob uploads, untagged manifests, pings, other package types) is counted
//! as ignored, not refused: a registry whose deliveries we answer with an error retries
//! them, and an event we have no use for is not the sender's mistake.
//!
//! The parsers are pure: no I/O, no clock. Their test data (`../testdata/`) was written
//! from each provider's documented payloads, or captured from the real registries this
//! project runs (Debian's docker-registry 2.8 and registry 3).

mod acr;
mod distribution;
mod dockerhub;
mod gar;
mod generic;
mod github;
mod harbor;
mod quay;

use axum::http::HeaderMap;

/// The registries and services whose push notifications the receiver understands, in
/// the order the README lists them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Provider {
    /// `notifications` of distribution (registry 2.x, 3.x; Harbor's and GitLab's
    /// registries speak it too).
    Distribution,
    /// GitLab's container registry: distribution notifications, configured in `gitlab.rb`.
    Gitlab,
    DockerHub,
    /// GitHub Container Registry through GitHub's `package` (and `registry_package`) events.
    Github,
    Quay,
    /// Harbor's project webhooks (default and CloudEvents payloads).
    Harbor,
    /// Azure Container Registry webhooks.
    Acr,
    /// Google Artifact Registry (and Container Registry) through a Pub/Sub push subscription.
    Gar,
    /// `{"image": "...", "tag": "..."}` from anything else (a CI step, a script).
    Generic,
}

/// How a provider proves a delivery is its own, as each documents it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthScheme {
    /// An `Authorization` header the registry is configured to send: `Bearer SECRET`,
    /// `Basic` with SECRET as the password, or SECRET itself.
    AuthorizationHeader,
    /// GitHub's `X-Hub-Signature-256: sha256=HMAC(SECRET, body)`.
    GithubSignature,
    /// The provider has no way to sign or add a header: SECRET is the last segment of the
    /// URL (`/hooks/PROVIDER/SECRET`).
    UrlToken,
    /// Either an `Authorization` header or `X-Signature: sha256=HMAC(SECRET, body)`.
    HeaderOrSignature,
}

impl Provider {
    /// Every provider, for listing them.
    pub const ALL: [Provider; 9] = [
        Provider::Distribution,
        Provider::Gitlab,
        Provider::DockerHub,
        Provider::Github,
        Provider::Quay,
        Provider::Harbor,
        Provider::Acr,
        Provider::Gar,
        Provider::Generic,
    ];

    /// The name in the URL (`/hooks/NAME`), the metric label and the Secret's key.
    pub const fn as_str(self) -> &'static str {
        match self {
            Provider::Distribution => "distribution",
            Provider::Gitlab => "gitlab",
            Provider::DockerHub => "dockerhub",
            Provider::Github => "github",
            Provider::Quay => "quay",
            Provider::Harbor => "harbor",
            Provider::Acr => "acr",
            Provider::Gar => "gar",
            Provider::Generic => "generic",
        }
    }

    /// The provider named in a URL, if any.
    pub fn from_name(name: &str) -> Option<Provider> {
        Provider::ALL.into_iter().find(|p| p.as_str() == name)
    }

    /// How deliveries of this provider are authenticated.
    pub const fn auth_scheme(self) -> AuthScheme {
        match self {
            Provider::Distribution | Provider::Gitlab | Provider::Harbor | Provider::Acr => {
                AuthScheme::AuthorizationHeader
            }
            Provider::Github => AuthScheme::GithubSignature,
            // Docker Hub and Quay send nothing but the URL; Pub/Sub's alternative, an
            // OIDC token signed by Google, needs Google's keys (see the README).
            Provider::DockerHub | Provider::Quay | Provider::Gar => AuthScheme::UrlToken,
            Provider::Generic => AuthScheme::HeaderOrSignature,
        }
    }

    /// Parses an authenticated delivery. `registry` (`?registry=HOST`) overrides the
    /// registry host where the payload names it as the pusher saw it (distribution,
    /// GitLab, ACR) or as Harbor's external URL; the others name their own registry.
    pub fn parse(
        self,
        headers: &HeaderMap,
        body: &[u8],
        registry: Option<&str>,
    ) -> Result<Notification, PayloadError> {
        match self {
            Provider::Distribution | Provider::Gitlab => distribution::parse(body, registry),
            Provider::DockerHub => dockerhub::parse(body),
            Provider::Github => github::parse(headers, body),
            Provider::Quay => quay::parse(body),
            Provider::Harbor => harbor::parse(body, registry),
            Provider::Acr => acr::parse(body, registry),
            Provider::Gar => gar::parse(body),
            Provider::Generic => generic::parse(body),
        }
    }
}

impl std::fmt::Display for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One push (or deletion) a delivery reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Push {
    /// The repository as the provider names it, registry first when it names one
    /// (`ghcr.io/acme/web`, `acme/web` for Docker Hub). Canonicalised by the dispatcher.
    pub repository: String,
    /// The tag pushed or deleted; `None` when the event names only a digest (a deletion
    /// by digest removes the tags that pointed at it).
    pub tag: Option<String>,
    /// The provider's id of this event, when it has one, so a redelivery is recognised.
    pub id: Option<String>,
}

/// What a delivery reports.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Notification {
    pub pushes: Vec<Push>,
    /// Events that cannot change any tag list (pulls, blobs, untagged pushes, pings).
    pub ignored: usize,
}

impl Notification {
    fn ignored() -> Notification {
        Notification {
            pushes: Vec::new(),
            ignored: 1,
        }
    }

    fn one(push: Push) -> Notification {
        Notification {
            pushes: vec![push],
            ignored: 0,
        }
    }
}

/// Why a body is not a payload of its provider (answered with 400).
#[derive(Debug, thiserror::Error)]
pub enum PayloadError {
    #[error("the body is not JSON of a {provider} notification: {source}")]
    Json {
        provider: Provider,
        #[source]
        source: serde_json::Error,
    },
    #[error("{provider} notification: {field}: {problem}")]
    Invalid {
        provider: Provider,
        field: &'static str,
        problem: String,
    },
}

fn json<'a, T: serde::Deserialize<'a>>(
    provider: Provider,
    body: &'a [u8],
) -> Result<T, PayloadError> {
    serde_json::from_slice(body).map_err(|source| PayloadError::Json { provider, source })
}

/// Splits `host/path:tag` or `host/path@sha256:...` (as Harbor, GAR and GitHub write a
/// pushed image) into the repository and the tag. A `:` before the last `/` is a port.
pub(crate) fn split_reference(reference: &str) -> (&str, Option<&str>) {
    let name = reference
        .split_once('@')
        .map_or(reference, |(name, _)| name);
    let last_slash = name.rfind('/').map_or(0, |i| i + 1);
    match name[last_slash..].rfind(':') {
        Some(colon) => {
            let at = last_slash + colon;
            let tag = &name[at + 1..];
            (&name[..at], (!tag.is_empty()).then_some(tag))
        }
        None => (name, None),
    }
}

/// An empty string means absent, as several providers write it.
fn non_empty(s: Option<String>) -> Option<String> {
    s.filter(|s| !s.is_empty())
}

#[cfg(test)]
fn testdata(name: &str) -> Vec<u8> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("src/receiver/testdata")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_split_into_repository_and_tag_with_ports_kept() {
        assert_eq!(
            split_reference("harbor.example.com/acme/web:2.3.1"),
            ("harbor.example.com/acme/web", Some("2.3.1"))
        );
        assert_eq!(
            split_reference("registry:5000/acme/web"),
            ("registry:5000/acme/web", None)
        );
        assert_eq!(
            split_reference("registry:5000/acme/web:1.0"),
            ("registry:5000/acme/web", Some("1.0"))
        );
        assert_eq!(
            split_reference("gcr.io/p/web@sha256:abcd"),
            ("gcr.io/p/web", None)
        );
        assert_eq!(
            split_reference("gcr.io/p/web:1.0@sha256:abcd"),
            ("gcr.io/p/web", Some("1.0"))
        );
        assert_eq!(split_reference("ghcr.io/a/web:"), ("ghcr.io/a/web", None));
    }

    #[test]
    fn every_provider_is_found_by_its_name_and_nothing_else_is() {
        for p in Provider::ALL {
            assert_eq!(Provider::from_name(p.as_str()), Some(p));
        }
        assert_eq!(Provider::from_name("Docker"), None);
        assert_eq!(Provider::from_name(""), None);
    }
}
