//! The generic form, for anything that can send JSON: `{"image": "REPOSITORY", "tag":
//! "TAG"}`. `image` may carry the tag itself (`registry/app:1.2`); `tag` may be left out
//! (then every ImageRepository of the image rescans).

use super::{Notification, PayloadError, Provider, Push, json, non_empty, split_reference};
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Payload {
    image: String,
    #[serde(default)]
    tag: Option<String>,
}

pub(super) fn parse(body: &[u8]) -> Result<Notification, PayloadError> {
    let payload: Payload = json(Provider::Generic, body)?;
    let (repository, tag_in_image) = split_reference(payload.image.trim());
    if repository.is_empty() {
        return Err(PayloadError::Invalid {
            provider: Provider::Generic,
            field: "image",
            problem: "is empty; give the repository, e.g. \"ghcr.io/org/app\"".into(),
        });
    }
    Ok(Notification::one(Push {
        repository: repository.to_string(),
        tag: non_empty(payload.tag).or_else(|| tag_in_image.map(str::to_string)),
        id: None,
    }))
}

#[cfg(test)]
mod tests {
    use super::super::testdata;
    use super::*;

    #[test]
    fn image_and_tag_are_read_as_written() {
        let n = parse(&testdata("generic.json")).unwrap();
        assert_eq!(n.pushes[0].repository, "registry.example.com:5000/team/app");
        assert_eq!(n.pushes[0].tag.as_deref(), Some("1.4.0"));
    }

    #[test]
    fn a_tag_in_the_image_counts_and_no_tag_is_allowed() {
        let n = parse(br#"{"image":"ghcr.io/a/b:2.0"}"#).unwrap();
        assert_eq!(n.pushes[0].repository, "ghcr.io/a/b");
        assert_eq!(n.pushes[0].tag.as_deref(), Some("2.0"));
        let n = parse(br#"{"image":"ghcr.io/a/b"}"#).unwrap();
        assert_eq!(n.pushes[0].tag, None);
    }

    #[test]
    fn missing_empty_or_unknown_fields_are_refused() {
        for body in [
            &br#"{}"#[..],
            br#"{"image":""}"#,
            br#"{"image":"a","tags":["1"]}"#,
            br#"{"image":3}"#,
            br#"[]"#,
        ] {
            assert!(parse(body).is_err(), "{}", String::from_utf8_lossy(body));
        }
    }
}
