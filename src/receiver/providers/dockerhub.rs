//! Docker Hub repository webhooks: `push_data.tag` and `repository.repo_name`
//! (`acme/web`; official images may appear as `nginx` or `library/nginx`, which the
//! dispatcher canonicalises alike). Docker Hub neither signs deliveries nor lets you add
//! a header, so the secret is in the URL.

use super::{Notification, PayloadError, Provider, Push, json, non_empty};
use serde::Deserialize;

#[derive(Deserialize)]
struct Payload {
    push_data: PushData,
    repository: Repository,
}

#[derive(Deserialize)]
struct PushData {
    #[serde(default)]
    tag: Option<String>,
}

#[derive(Deserialize)]
struct Repository {
    #[serde(default)]
    repo_name: Option<String>,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    name: Option<String>,
}

pub(super) fn parse(body: &[u8]) -> Result<Notification, PayloadError> {
    let payload: Payload = json(Provider::DockerHub, body)?;
    let Some(tag) = non_empty(payload.push_data.tag) else {
        return Ok(Notification::ignored());
    };
    let r = payload.repository;
    let repository = match (
        non_empty(r.repo_name),
        non_empty(r.namespace),
        non_empty(r.name),
    ) {
        (Some(repo_name), _, _) => repo_name,
        (None, Some(namespace), Some(name)) => format!("{namespace}/{name}"),
        _ => {
            return Err(PayloadError::Invalid {
                provider: Provider::DockerHub,
                field: "repository.repo_name",
                problem: "missing".into(),
            });
        }
    };
    Ok(Notification::one(Push {
        repository: format!("docker.io/{repository}"),
        tag: Some(tag),
        id: None,
    }))
}

#[cfg(test)]
mod tests {
    use super::super::testdata;
    use super::*;

    #[test]
    fn a_push_names_the_docker_hub_repository_and_tag() {
        let n = parse(&testdata("dockerhub-push.json")).unwrap();
        assert_eq!(
            n.pushes,
            [Push {
                repository: "docker.io/acme/web".into(),
                tag: Some("2.3.1".into()),
                id: None
            }]
        );
    }

    #[test]
    fn an_official_image_is_named_without_its_library_prefix() {
        let n = parse(&testdata("dockerhub-push-official.json")).unwrap();
        assert_eq!(n.pushes[0].repository, "docker.io/nginx");
    }

    #[test]
    fn a_payload_without_push_data_is_refused() {
        assert!(parse(br#"{"repository":{"repo_name":"a/b"}}"#).is_err());
        assert!(parse(br#"{"push_data":{"tag":"1"},"repository":{}}"#).is_err());
    }
}
