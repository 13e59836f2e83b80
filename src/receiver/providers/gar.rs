//! Google Artifact Registry (and Container Registry) through a Pub/Sub push
//! subscription on the `gcr` topic: the push envelope `{"message": {"data": BASE64,
//! "messageId": ...}, "subscription": ...}` whose data is `{"action": "INSERT" |
//! "DELETE", "digest": "HOST/PROJECT/REPO/IMAGE@sha256:...", "tag":
//! "HOST/PROJECT/REPO/IMAGE:TAG"}` (`tag` absent for a push by digest).

use super::{Notification, PayloadError, Provider, Push, json, non_empty, split_reference};
use base64::Engine as _;
use serde::Deserialize;

#[derive(Deserialize)]
struct Envelope {
    message: Message,
}

#[derive(Deserialize)]
struct Message {
    #[serde(default)]
    data: Option<String>,
    #[serde(default, rename = "messageId")]
    message_id: Option<String>,
    /// Pub/Sub writes the id twice, in both spellings.
    #[serde(default, rename = "message_id")]
    message_id_snake: Option<String>,
}

#[derive(Deserialize)]
struct Data {
    action: String,
    #[serde(default)]
    digest: Option<String>,
    #[serde(default)]
    tag: Option<String>,
}

pub(super) fn parse(body: &[u8]) -> Result<Notification, PayloadError> {
    let envelope: Envelope = json(Provider::Gar, body)?;
    let invalid = |field, problem: &str| PayloadError::Invalid {
        provider: Provider::Gar,
        field,
        problem: problem.to_string(),
    };
    let data =
        non_empty(envelope.message.data).ok_or_else(|| invalid("message.data", "missing"))?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(data.trim())
        .map_err(|_| invalid("message.data", "is not base64"))?;
    let data: Data = json(Provider::Gar, &decoded)?;
    let deleted = match data.action.as_str() {
        "INSERT" => false,
        "DELETE" => true,
        _ => return Ok(Notification::ignored()),
    };
    let tagged = non_empty(data.tag);
    if tagged.is_none() && !deleted {
        // A push by digest: no tag list changes.
        return Ok(Notification::ignored());
    }
    let (repository, tag) = match (&tagged, non_empty(data.digest)) {
        (Some(reference), _) => {
            let (repository, tag) = split_reference(reference);
            (repository.to_string(), tag.map(str::to_string))
        }
        (None, Some(digest)) => (split_reference(&digest).0.to_string(), None),
        (None, None) => return Err(invalid("message.data", "names neither a tag nor a digest")),
    };
    Ok(Notification::one(Push {
        repository,
        tag,
        id: non_empty(envelope.message.message_id).or(non_empty(envelope.message.message_id_snake)),
    }))
}

#[cfg(test)]
mod tests {
    use super::super::testdata;
    use super::*;

    #[test]
    fn an_insert_with_a_tag_names_the_image_and_the_tag() {
        let n = parse(&testdata("gar-insert-tag.json")).unwrap();
        assert_eq!(
            n.pushes,
            [Push {
                repository: "europe-west1-docker.pkg.dev/acme-prod/images/web".into(),
                tag: Some("2.3.1".into()),
                id: Some("16273849501234".into()),
            }]
        );
        let n = parse(&testdata("gcr-insert-tag.json")).unwrap();
        assert_eq!(n.pushes[0].repository, "gcr.io/acme-prod/web");
    }

    #[test]
    fn an_untagged_insert_is_ignored_and_a_delete_rescans() {
        let n = parse(&testdata("gar-insert-digest.json")).unwrap();
        assert!(n.pushes.is_empty());
        let n = parse(&testdata("gar-delete-tag.json")).unwrap();
        assert_eq!(n.pushes[0].tag.as_deref(), Some("2.3.0"));
    }

    #[test]
    fn data_that_is_not_base64_json_is_refused() {
        assert!(parse(br#"{"message":{"data":"%%%"}}"#).is_err());
        assert!(parse(br#"{"message":{"data":"bm90IGpzb24="}}"#).is_err());
        assert!(parse(br#"{"message":{}}"#).is_err());
        assert!(parse(br#"{"subscription":"x"}"#).is_err());
    }
}
