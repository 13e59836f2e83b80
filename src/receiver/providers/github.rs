//! GitHub Container Registry through GitHub webhooks: the `package` event (and the older
//! `registry_package`, which GitHub still sends), actions `published` and `updated`, for
//! container packages. The image is `package_version.package_url` without its tag
//! (`ghcr.io/OWNER/NAME`, lower case), else the registry URL and the package name; the
//! tag is `package_version.container_metadata.tag.name` (empty for the untagged
//! manifests of a multi-platform push, which we ignore). `ping` (sent when the hook is
//! created) and every other event are ignored. The delivery id is `X-GitHub-Delivery`.

use super::{Notification, PayloadError, Provider, Push, json, non_empty, split_reference};
use axum::http::HeaderMap;
use serde::Deserialize;

#[derive(Deserialize)]
struct Payload {
    #[serde(default)]
    action: Option<String>,
    #[serde(default)]
    package: Option<Package>,
    #[serde(default)]
    registry_package: Option<Package>,
}

#[derive(Deserialize)]
struct Package {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    package_type: Option<String>,
    #[serde(default)]
    ecosystem: Option<String>,
    #[serde(default)]
    owner: Option<Owner>,
    #[serde(default)]
    package_version: Option<PackageVersion>,
    #[serde(default)]
    registry: Option<Registry>,
}

#[derive(Deserialize)]
struct Owner {
    #[serde(default)]
    login: Option<String>,
}

#[derive(Deserialize)]
struct PackageVersion {
    #[serde(default)]
    package_url: Option<String>,
    #[serde(default)]
    container_metadata: Option<ContainerMetadata>,
}

#[derive(Deserialize)]
struct ContainerMetadata {
    #[serde(default)]
    tag: Option<Tag>,
}

#[derive(Deserialize)]
struct Tag {
    #[serde(default)]
    name: Option<String>,
}

#[derive(Deserialize)]
struct Registry {
    #[serde(default)]
    url: Option<String>,
}

pub(super) fn parse(headers: &HeaderMap, body: &[u8]) -> Result<Notification, PayloadError> {
    let event = headers
        .get("x-github-event")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if event != "package" && event != "registry_package" {
        // `ping`, or an event the hook should not have been subscribed to.
        return Ok(Notification::ignored());
    }
    let payload: Payload = json(Provider::Github, body)?;
    let delivery = headers
        .get("x-github-delivery")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    if !matches!(payload.action.as_deref(), Some("published" | "updated")) {
        return Ok(Notification::ignored());
    }
    let Some(package) = payload.package.or(payload.registry_package) else {
        return Err(PayloadError::Invalid {
            provider: Provider::Github,
            field: "package",
            problem: format!("missing in a {event} event"),
        });
    };
    let kind = package
        .package_type
        .as_deref()
        .or(package.ecosystem.as_deref())
        .unwrap_or_default()
        .to_ascii_lowercase();
    if kind != "container" && kind != "docker" {
        return Ok(Notification::ignored());
    }
    let version = package.package_version;
    let tag = version
        .as_ref()
        .and_then(|v| v.container_metadata.as_ref())
        .and_then(|m| m.tag.as_ref())
        .and_then(|t| non_empty(t.name.clone()));
    let Some(tag) = tag else {
        return Ok(Notification::ignored());
    };
    let from_url = version
        .and_then(|v| non_empty(v.package_url))
        .map(|url| split_reference(&url).0.to_string())
        .filter(|r| r.contains('/'));
    let name = non_empty(package.name).map(|n| n.replace("%2F", "/").replace("%2f", "/"));
    let repository = match (from_url, name) {
        (Some(repository), _) => repository,
        (None, Some(name)) => {
            let base = package
                .registry
                .and_then(|r| non_empty(r.url))
                .map(|url| {
                    url.trim_start_matches("https://")
                        .trim_start_matches("http://")
                        .trim_end_matches('/')
                        .to_string()
                })
                .or_else(|| {
                    let owner = non_empty(package.namespace)
                        .or_else(|| package.owner.and_then(|o| non_empty(o.login)))?;
                    Some(format!("ghcr.io/{owner}"))
                });
            match base {
                Some(base) => format!("{base}/{name}"),
                None => {
                    return Err(PayloadError::Invalid {
                        provider: Provider::Github,
                        field: "package.registry.url",
                        problem: "missing, and so are package.namespace and package.owner".into(),
                    });
                }
            }
        }
        (None, None) => {
            return Err(PayloadError::Invalid {
                provider: Provider::Github,
                field: "package.name",
                problem: "missing".into(),
            });
        }
    };
    Ok(Notification::one(Push {
        // GHCR names are lower case; owners' logins often are not.
        repository: repository.to_ascii_lowercase(),
        tag: Some(tag),
        id: delivery,
    }))
}

#[cfg(test)]
mod tests {
    use super::super::testdata;
    use super::*;

    fn headers(event: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("x-github-event", event.parse().unwrap());
        h.insert(
            "x-github-delivery",
            "72d3162e-cc78-11e3-81ab-4c9367dc0958".parse().unwrap(),
        );
        h
    }

    #[test]
    fn a_published_container_version_names_the_ghcr_image_and_tag() {
        let n = parse(
            &headers("package"),
            &testdata("github-package-published.json"),
        )
        .unwrap();
        assert_eq!(
            n.pushes,
            [Push {
                repository: "ghcr.io/acme-corp/web".into(),
                tag: Some("2.3.1".into()),
                id: Some("72d3162e-cc78-11e3-81ab-4c9367dc0958".into()),
            }]
        );
    }

    #[test]
    fn the_older_registry_package_event_without_a_package_url_uses_the_registry_url() {
        let n = parse(
            &headers("registry_package"),
            &testdata("github-registry-package-published.json"),
        )
        .unwrap();
        assert_eq!(n.pushes[0].repository, "ghcr.io/octo-user/tools/builder");
        assert_eq!(n.pushes[0].tag.as_deref(), Some("v0.9.0"));
    }

    #[test]
    fn untagged_versions_other_package_types_pings_and_other_events_are_ignored() {
        for (event, file) in [
            ("package", "github-package-untagged.json"),
            ("package", "github-package-npm.json"),
            ("ping", "github-ping.json"),
            ("push", "github-ping.json"),
        ] {
            let n = parse(&headers(event), &testdata(file)).unwrap();
            assert!(n.pushes.is_empty(), "{event} {file}");
            assert_eq!(n.ignored, 1, "{event} {file}");
        }
    }

    #[test]
    fn a_package_event_that_is_not_json_is_refused() {
        assert!(parse(&headers("package"), b"{").is_err());
        assert!(parse(&headers("package"), br#"{"action":"published"}"#).is_err());
    }
}
