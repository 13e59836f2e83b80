use super::*;
use base64::Engine as _;

fn annotations(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn service_account_annotations_give_the_impersonated_account_and_the_provider() {
    let id = identity(
        "apps",
        "puller",
        &annotations(&[
            (
                SERVICE_ACCOUNT_ANNOTATION,
                "reader@my-project.iam.gserviceaccount.com",
            ),
            (
                PROVIDER_ANNOTATION,
                "projects/123/locations/global/workloadIdentityPools/pool/providers/k8s",
            ),
        ]),
    )
    .unwrap();
    assert_eq!(
        id.email.as_deref(),
        Some("reader@my-project.iam.gserviceaccount.com")
    );
    assert_eq!(
        id.provider_audience.as_deref(),
        Some(
            "//iam.googleapis.com/projects/123/locations/global/workloadIdentityPools/pool/providers/k8s"
        )
    );
    assert_eq!(identity("a", "b", &BTreeMap::new()).unwrap().key(), "|");
    let e = identity(
        "apps",
        "puller",
        &annotations(&[(SERVICE_ACCOUNT_ANNOTATION, "reader")]),
    )
    .unwrap_err();
    assert_eq!(e.step, Step::NoIdentity);
    assert!(
        e.to_string().contains("is not a service account e-mail"),
        "{e}"
    );
    assert!(identity("a", "b", &annotations(&[(PROVIDER_ANNOTATION, "pool")])).is_err());
}

#[tokio::test]
async fn subject_tokens_come_from_files_as_text_or_json() {
    let dir = tempfile::tempdir().unwrap();
    let text = dir.path().join("t");
    std::fs::write(&text, "jwt-text\n").unwrap();
    let json = dir.path().join("j");
    std::fs::write(&json, r#"{"id_token":"jwt-json"}"#).unwrap();
    let m = CloudMetrics::default();
    let http = reqwest::Client::new();
    let source = |file: &std::path::Path, format: Option<SourceFormat>| CredentialSource {
        file: Some(file.display().to_string()),
        format,
        ..Default::default()
    };
    assert_eq!(
        subject_token(&m, &http, &source(&text, None))
            .await
            .unwrap(),
        "jwt-text"
    );
    let f = SourceFormat {
        kind: "json".into(),
        subject_token_field_name: Some("id_token".into()),
    };
    assert_eq!(
        subject_token(&m, &http, &source(&json, Some(f)))
            .await
            .unwrap(),
        "jwt-json"
    );
}

#[test]
fn service_account_keys_sign_rs256_assertions() {
    let key = rcgen::KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_2048)
        .unwrap();
    let jwt = signed_assertion(
        "sa@p.iam.gserviceaccount.com",
        Some("kid1"),
        &key.serialize_pem(),
        OAUTH2_TOKEN_URL,
    )
    .unwrap();
    let parts: Vec<&str> = jwt.split('.').collect();
    assert_eq!(parts.len(), 3);
    let claims: serde_json::Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(parts[1])
            .unwrap(),
    )
    .unwrap();
    assert_eq!(claims["aud"], OAUTH2_TOKEN_URL);
    assert!(signed_assertion("x", None, "not a key", OAUTH2_TOKEN_URL).is_err());
}
