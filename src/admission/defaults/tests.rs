use super::*;
use serde_json::json;

/// `object` after the webhook's patch.
fn admit(mut object: Value) -> Value {
    let meta: ObjectMeta = serde_json::from_value(object["metadata"].clone()).unwrap();
    let ops = patch(Kind::ImageRepository, &meta, object.get("spec").cloned()).0;
    json_patch::patch(&mut object, &ops).unwrap();
    object
}

fn repository(interval: &str, timeout: Option<&str>, annotations: Value) -> Value {
    let mut spec = json!({"image": "a", "interval": interval});
    if let Some(timeout) = timeout {
        spec["timeout"] = json!(timeout);
    }
    json!({"metadata": {"name": "r", "annotations": annotations}, "spec": spec})
}

/// A stored object of interval `1h` whose timeout `10m` the webhook wrote, as kubectl
/// apply sends it when the manifest writes `manifest_timeout`.
fn applied_client_side(manifest_timeout: Option<&str>) -> Value {
    let mut manifest = json!({"spec": {"image": "a", "interval": "1h"}});
    if let Some(timeout) = manifest_timeout {
        manifest["spec"]["timeout"] = json!(timeout);
    }
    repository(
        "1h",
        Some("10m"),
        json!({
            DEFAULTED_TIMEOUT_ANNOTATION: "10m",
            LAST_APPLIED_ANNOTATION: manifest.to_string(),
        }),
    )
}

fn mark(object: &Value) -> Option<&str> {
    object["metadata"]["annotations"][DEFAULTED_TIMEOUT_ANNOTATION].as_str()
}

#[test]
fn defaults_the_timeout_to_the_interval_in_minutes_when_it_has_hours_and_marks_it() {
    for (interval, timeout) in [("10m", "10m"), ("2h", "120m")] {
        let object =
            admit(json!({"metadata": {"name": "r"}, "spec": {"image": "a", "interval": interval}}));
        assert_eq!(object["spec"]["timeout"], timeout);
        assert_eq!(mark(&object), Some(timeout));
    }
}

#[test]
fn a_defaulted_timeout_follows_a_new_interval_and_stays_marked() {
    let stored = admit(repository("10m", None, json!({})));
    let mut changed = stored.clone();
    changed["spec"]["interval"] = json!("1h");
    let admitted = admit(changed);
    assert_eq!(admitted["spec"]["timeout"], "60m");
    assert_eq!(mark(&admitted), Some("60m"));
    // Shorter too: the timeout never outgrows an interval it was not asked to.
    let mut shorter = admitted.clone();
    shorter["spec"]["interval"] = json!("2m");
    assert_eq!(admit(shorter)["spec"]["timeout"], "2m");
}

#[test]
fn defaulting_is_idempotent() {
    let once = admit(repository("10m", None, json!({})));
    let meta: ObjectMeta = serde_json::from_value(once["metadata"].clone()).unwrap();
    assert!(
        patch(Kind::ImageRepository, &meta, once.get("spec").cloned())
            .0
            .is_empty()
    );
}

#[test]
fn a_timeout_the_user_wrote_is_never_changed() {
    // Written at creation.
    let object = admit(repository("10m", Some("30s"), json!({})));
    assert_eq!(object["spec"]["timeout"], "30s");
    assert_eq!(mark(&object), None);
    // Changed from the defaulted one: the mark goes, and the next interval leaves it.
    let mut edited = admit(repository("10m", None, json!({})));
    edited["spec"]["timeout"] = json!("5m");
    let edited = admit(edited);
    assert_eq!(
        (edited["spec"]["timeout"].as_str(), mark(&edited)),
        (Some("5m"), None)
    );
    let mut later = edited.clone();
    later["spec"]["interval"] = json!("1h");
    assert_eq!(admit(later)["spec"]["timeout"], "5m");
}

#[test]
fn a_timeout_equal_to_the_default_is_the_users_when_their_configuration_names_it() {
    // Client-side apply of a manifest that now writes the same timeout as the default.
    let admitted = admit(applied_client_side(Some("10m")));
    assert_eq!(
        (admitted["spec"]["timeout"].as_str(), mark(&admitted)),
        (Some("10m"), None)
    );

    // Server-side apply: the applier's field set holds spec.timeout.
    let mut object = repository(
        "1h",
        Some("10m"),
        json!({DEFAULTED_TIMEOUT_ANNOTATION: "10m"}),
    );
    object["metadata"]["managedFields"] = json!([{
        "manager": "kubectl", "operation": "Apply", "apiVersion": "image.toolkit.fluxcd.io/v1",
        "fieldsType": "FieldsV1",
        "fieldsV1": {"f:spec": {"f:image": {}, "f:interval": {}, "f:timeout": {}}},
    }]);
    assert_eq!(admit(object)["spec"]["timeout"], "10m");
}

#[test]
fn a_last_applied_copy_without_a_timeout_leaves_it_following() {
    assert_eq!(admit(applied_client_side(None))["spec"]["timeout"], "60m");
}

#[test]
fn leaves_alone_what_it_cannot_read_and_image_policies() {
    let meta = ObjectMeta::default();
    for spec in [
        json!({"image": "a", "interval": "ten minutes"}),
        json!({"image": "a", "interval": 10}),
        json!({"image": "a"}),
    ] {
        assert!(
            patch(Kind::ImageRepository, &meta, Some(spec.clone()))
                .0
                .is_empty(),
            "{spec}"
        );
    }
    assert!(patch(Kind::ImageRepository, &meta, None).0.is_empty());
    // A marked timeout under an interval that no longer parses stays as it is.
    let object = repository(
        "ten minutes",
        Some("10m"),
        json!({DEFAULTED_TIMEOUT_ANNOTATION: "10m"}),
    );
    assert_eq!(admit(object)["spec"]["timeout"], "10m");
    let policy = json!({"imageRepositoryRef": {"name": "a"}, "policy": {"numerical": {}}});
    assert!(patch(Kind::ImagePolicy, &meta, Some(policy)).0.is_empty());
}
