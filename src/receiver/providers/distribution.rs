//! distribution's `notifications` (registry 2.x and 3.x, also GitLab's and Harbor's
//! registries): an envelope `{"events": [...]}`, one event per blob or manifest
//! push, pull, mount or deletion. A manifest push by tag, and any deletion, can change
//! the tag list; pulls, mounts, blob pushes and pushes by digest cannot.
//!
//! The repository's registry is the `Host` the client pushed to (`request.host`), else
//! the host of `target.url`; `?registry=HOST` in the endpoint URL overrides both, for a
//! registry pushed to under another name than the one ImageRepositories use.

use super::{Notification, PayloadError, Provider, Push, json, non_empty};
use serde::Deserialize;

#[derive(Deserialize)]
struct Envelope {
    events: Vec<Event>,
}

/// One event; ACR sends the same shape without the envelope.
#[derive(Deserialize)]
pub(super) struct Event {
    #[serde(default)]
    pub id: Option<String>,
    pub action: String,
    #[serde(default)]
    pub target: Target,
    #[serde(default)]
    pub request: Request,
}

#[derive(Deserialize, Default)]
pub(super) struct Target {
    #[serde(default)]
    pub repository: Option<String>,
    #[serde(default)]
    pub tag: Option<String>,
    #[serde(default)]
    pub url: Option<String>,
}

#[derive(Deserialize, Default)]
pub(super) struct Request {
    #[serde(default)]
    pub host: Option<String>,
}

pub(super) fn parse(body: &[u8], registry: Option<&str>) -> Result<Notification, PayloadError> {
    let envelope: Envelope = json(Provider::Distribution, body)?;
    let mut notification = Notification::default();
    for event in envelope.events {
        match push_of(Provider::Distribution, event, registry)? {
            Some(push) => notification.pushes.push(push),
            None => notification.ignored += 1,
        }
    }
    Ok(notification)
}

/// The push an event reports, or `None` when it cannot change a tag list.
pub(super) fn push_of(
    provider: Provider,
    event: Event,
    registry: Option<&str>,
) -> Result<Option<Push>, PayloadError> {
    let tag = non_empty(event.target.tag);
    let changes_tags = match event.action.as_str() {
        // Only manifests are pushed by tag: blob pushes and pushes by digest have none.
        "push" => tag.is_some(),
        "delete" => true,
        _ => false,
    };
    if !changes_tags {
        return Ok(None);
    }
    let Some(path) = non_empty(event.target.repository) else {
        return Err(PayloadError::Invalid {
            provider,
            field: "target.repository",
            problem: format!("missing in a {:?} event", event.action),
        });
    };
    let host = registry
        .map(str::to_string)
        .or_else(|| non_empty(event.request.host))
        .or_else(|| event.target.url.as_deref().and_then(url_host));
    let Some(host) = host else {
        return Err(PayloadError::Invalid {
            provider,
            field: "request.host",
            problem:
                "missing, and target.url names no host; add ?registry=HOST to the endpoint URL"
                    .into(),
        });
    };
    Ok(Some(Push {
        repository: format!("{host}/{path}"),
        tag,
        id: non_empty(event.id),
    }))
}

fn url_host(url: &str) -> Option<String> {
    let parsed = url::Url::parse(url).ok()?;
    let host = parsed.host_str()?;
    Some(match parsed.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::super::testdata;
    use super::*;

    fn pushes(file: &str) -> Notification {
        parse(&testdata(file), None).expect(file)
    }

    #[test]
    fn a_manifest_pushed_by_tag_is_a_push_of_that_tag_in_both_registry_versions() {
        for file in [
            "distribution-2.8-push-manifest.json",
            "distribution-3-push-manifest.json",
        ] {
            let n = pushes(file);
            assert_eq!(n.ignored, 0, "{file}");
            assert_eq!(n.pushes.len(), 1, "{file}");
            assert_eq!(n.pushes[0].repository, "registry.example.com:5000/team/app");
            assert_eq!(n.pushes[0].tag.as_deref(), Some("1.4.0"));
            assert!(n.pushes[0].id.is_some());
        }
    }

    #[test]
    fn blobs_and_pulls_are_ignored() {
        for file in [
            "distribution-2.8-push-blob.json",
            "distribution-2.8-pull.json",
        ] {
            let n = pushes(file);
            assert!(n.pushes.is_empty(), "{file}");
            assert_eq!(n.ignored, 1, "{file}");
        }
    }

    #[test]
    fn deletions_by_tag_or_by_digest_change_the_tags() {
        let n = pushes("distribution-2.8-delete-digest.json");
        assert_eq!(n.pushes.len(), 1);
        assert_eq!(n.pushes[0].tag, None);
        for file in [
            "distribution-2.8-delete-tag.json",
            "distribution-3-delete-tag.json",
        ] {
            let n = pushes(file);
            assert_eq!(n.pushes[0].tag.as_deref(), Some("1.4.0"), "{file}");
        }
    }

    #[test]
    fn an_envelope_of_several_events_reports_each_tag() {
        let n = pushes("distribution-2.8-envelope-of-four.json");
        let tags: Vec<_> = n.pushes.iter().map(|p| p.tag.as_deref()).collect();
        assert_eq!(tags, [Some("1.4.0"), Some("latest")]);
        assert_eq!(n.ignored, 2, "the blob and the pull");
    }

    #[test]
    fn the_registry_named_in_the_url_overrides_the_pushers_host() {
        let n = parse(
            &testdata("distribution-2.8-push-manifest.json"),
            Some("registry.internal"),
        )
        .unwrap();
        assert_eq!(n.pushes[0].repository, "registry.internal/team/app");
    }

    #[test]
    fn gitlab_registry_notifications_are_distribution_events() {
        let n = pushes("gitlab-push.json");
        assert_eq!(
            n.pushes[0].repository,
            "registry.gitlab.example.com/acme/web/frontend"
        );
        assert_eq!(n.pushes[0].tag.as_deref(), Some("2.3.1"));
    }

    #[test]
    fn without_a_request_host_the_targets_url_names_the_registry() {
        let body = br#"{"events":[{"id":"1","action":"push","target":{"mediaType":"application/vnd.oci.image.manifest.v1+json","repository":"a/b","tag":"1","url":"https://r.example:8443/v2/a/b/manifests/sha256:00"}}]}"#;
        let n = parse(body, None).unwrap();
        assert_eq!(n.pushes[0].repository, "r.example:8443/a/b");
    }

    #[test]
    fn malformed_envelopes_are_errors_that_say_what_is_wrong() {
        assert!(matches!(
            parse(b"{\"events\": 3}", None),
            Err(PayloadError::Json { .. })
        ));
        assert!(matches!(
            parse(b"not json", None),
            Err(PayloadError::Json { .. })
        ));
        let no_repo = br#"{"events":[{"action":"delete","target":{"digest":"sha256:00"},"request":{"host":"r"}}]}"#;
        let e = parse(no_repo, None).unwrap_err().to_string();
        assert!(e.contains("target.repository"), "{e}");
        let no_host = br#"{"events":[{"action":"delete","target":{"repository":"a/b"}}]}"#;
        let e = parse(no_host, None).unwrap_err().to_string();
        assert!(e.contains("?registry=HOST"), "{e}");
    }
}
