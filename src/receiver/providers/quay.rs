//! Quay's "Repository Push" notification (quay.io and Red Hat Quay): `docker_url` names
//! the repository with the Quay host, `updated_tags` lists the tags (a list; older Quay
//! versions sent an object of tag to image id). Quay does not sign deliveries, so the
//! secret is in the URL.

use super::{Notification, PayloadError, Provider, Push, json, non_empty};
use serde::Deserialize;
use std::collections::BTreeMap;

#[derive(Deserialize)]
struct Payload {
    #[serde(default)]
    docker_url: Option<String>,
    #[serde(default)]
    repository: Option<String>,
    #[serde(default)]
    updated_tags: Option<Tags>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Tags {
    List(Vec<String>),
    Map(BTreeMap<String, serde_json::Value>),
}

pub(super) fn parse(body: &[u8]) -> Result<Notification, PayloadError> {
    let payload: Payload = json(Provider::Quay, body)?;
    let repository = match (non_empty(payload.docker_url), non_empty(payload.repository)) {
        (Some(url), _) => url,
        (None, Some(path)) => format!("quay.io/{path}"),
        (None, None) => {
            return Err(PayloadError::Invalid {
                provider: Provider::Quay,
                field: "docker_url",
                problem: "missing (is this a Repository Push notification?)".into(),
            });
        }
    };
    let tags: Vec<String> = match payload.updated_tags {
        Some(Tags::List(tags)) => tags,
        Some(Tags::Map(tags)) => tags.into_keys().collect(),
        None => Vec::new(),
    };
    let mut notification = Notification::default();
    for tag in tags.into_iter().filter(|t| !t.is_empty()) {
        notification.pushes.push(Push {
            repository: repository.clone(),
            tag: Some(tag),
            id: None,
        });
    }
    if notification.pushes.is_empty() {
        notification.ignored = 1;
    }
    Ok(notification)
}

#[cfg(test)]
mod tests {
    use super::super::testdata;
    use super::*;

    #[test]
    fn a_push_reports_every_updated_tag() {
        let n = parse(&testdata("quay-repo-push.json")).unwrap();
        let tags: Vec<_> = n.pushes.iter().map(|p| p.tag.clone().unwrap()).collect();
        assert_eq!(tags, ["2.3.1", "latest"]);
        assert!(n.pushes.iter().all(|p| p.repository == "quay.io/acme/web"));
    }

    #[test]
    fn the_older_object_of_tags_and_a_self_hosted_quay_work() {
        let n = parse(&testdata("quay-repo-push-legacy.json")).unwrap();
        assert_eq!(n.pushes[0].repository, "quay.example.internal/acme/builder");
        assert_eq!(n.pushes[0].tag.as_deref(), Some("v0.9.0"));
    }

    #[test]
    fn other_notifications_are_refused_or_ignored() {
        assert!(parse(br#"{"build_id":"1"}"#).is_err());
        let n = parse(br#"{"docker_url":"quay.io/a/b","updated_tags":[]}"#).unwrap();
        assert_eq!(n.ignored, 1);
    }
}
