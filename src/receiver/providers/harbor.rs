//! Harbor's project webhooks, in either payload format: "Default" (`type:
//! PUSH_ARTIFACT`, `event_data.resources[]`; Harbor 1.x said `pushImage`) and
//! "CloudEvents" (`type: harbor.artifact.pushed`, `data.resources[]`). Each resource's
//! `resource_url` is `HOST/PROJECT/REPOSITORY:TAG`. Harbor sends the policy's "Auth
//! Header" as the `Authorization` header. (Harbor's own registry also speaks
//! distribution notifications: `/hooks/distribution` works for it too.)

use super::{Notification, PayloadError, Provider, Push, json, non_empty, split_reference};
use serde::Deserialize;

#[derive(Deserialize)]
struct Payload {
    #[serde(rename = "type")]
    kind: String,
    /// CloudEvents: the event's id.
    #[serde(default)]
    id: Option<String>,
    /// Default format.
    #[serde(default)]
    event_data: Option<EventData>,
    /// CloudEvents format.
    #[serde(default)]
    data: Option<EventData>,
}

#[derive(Deserialize)]
struct EventData {
    #[serde(default)]
    resources: Vec<Resource>,
    #[serde(default)]
    repository: Option<Repository>,
}

#[derive(Deserialize)]
struct Resource {
    #[serde(default)]
    tag: Option<String>,
    #[serde(default)]
    resource_url: Option<String>,
}

#[derive(Deserialize)]
struct Repository {
    #[serde(default)]
    repo_full_name: Option<String>,
}

enum Kind {
    Pushed,
    Deleted,
    Other,
}

fn kind(name: &str) -> Kind {
    match name {
        "PUSH_ARTIFACT" | "pushImage" | "harbor.artifact.pushed" => Kind::Pushed,
        "DELETE_ARTIFACT" | "deleteImage" | "harbor.artifact.deleted" => Kind::Deleted,
        _ => Kind::Other,
    }
}

pub(super) fn parse(body: &[u8], registry: Option<&str>) -> Result<Notification, PayloadError> {
    let payload: Payload = json(Provider::Harbor, body)?;
    let deleted = match kind(&payload.kind) {
        Kind::Pushed => false,
        Kind::Deleted => true,
        Kind::Other => return Ok(Notification::ignored()),
    };
    let Some(data) = payload.event_data.or(payload.data) else {
        return Err(PayloadError::Invalid {
            provider: Provider::Harbor,
            field: "event_data",
            problem: format!("missing in a {} event", payload.kind),
        });
    };
    let full_name = data.repository.and_then(|r| non_empty(r.repo_full_name));
    let id = non_empty(payload.id);
    let mut notification = Notification::default();
    for resource in data.resources {
        let from_url = resource.resource_url.as_deref().map(split_reference);
        let tag = non_empty(resource.tag)
            .or_else(|| from_url.and_then(|(_, tag)| tag).map(str::to_string));
        if tag.is_none() && !deleted {
            notification.ignored += 1;
            continue;
        }
        let repository = match (registry, &full_name, from_url) {
            (Some(host), Some(path), _) => format!("{host}/{path}"),
            (_, _, Some((repository, _))) if !repository.is_empty() => repository.to_string(),
            _ => {
                return Err(PayloadError::Invalid {
                    provider: Provider::Harbor,
                    field: "event_data.resources[].resource_url",
                    problem: "missing; add ?registry=HOST to the endpoint URL".into(),
                });
            }
        };
        notification.pushes.push(Push {
            repository,
            tag,
            id: id.clone(),
        });
    }
    Ok(notification)
}

#[cfg(test)]
mod tests {
    use super::super::testdata;
    use super::*;

    #[test]
    fn both_payload_formats_report_the_pushed_tag_with_the_harbor_host() {
        for file in [
            "harbor-push-artifact.json",
            "harbor-cloudevents-pushed.json",
        ] {
            let n = parse(&testdata(file), None).unwrap();
            assert_eq!(n.pushes.len(), 1, "{file}");
            assert_eq!(n.pushes[0].repository, "harbor.example.com/acme/web");
            assert_eq!(n.pushes[0].tag.as_deref(), Some("2.3.1"));
        }
        let n = parse(&testdata("harbor-cloudevents-pushed.json"), None).unwrap();
        assert_eq!(
            n.pushes[0].id.as_deref(),
            Some("4b1c7f52-2f1e-4d7e-9a43-5d1f2e3c4b5a")
        );
    }

    #[test]
    fn deletions_rescan_and_pulls_are_ignored() {
        let n = parse(&testdata("harbor-delete-artifact.json"), None).unwrap();
        assert_eq!(n.pushes[0].tag.as_deref(), Some("2.3.0"));
        let n = parse(&testdata("harbor-pull-artifact.json"), None).unwrap();
        assert!(n.pushes.is_empty());
        assert_eq!(n.ignored, 1);
    }

    #[test]
    fn a_registry_in_the_url_names_the_host_harbor_is_reached_by() {
        let n = parse(
            &testdata("harbor-push-artifact.json"),
            Some("harbor.internal:8443"),
        )
        .unwrap();
        assert_eq!(n.pushes[0].repository, "harbor.internal:8443/acme/web");
    }

    #[test]
    fn a_push_without_event_data_is_refused() {
        assert!(parse(br#"{"type":"PUSH_ARTIFACT"}"#, None).is_err());
        assert!(parse(br#"{"event_data":{}}"#, None).is_err());
    }
}
