//! Cross-namespace access: may an ImagePolicy in one namespace use an ImageRepository in
//! another? Pure, shared by the validating webhook and the ImagePolicy controller.

use super::{ImageRepository, NamespaceSelector};
use kube::ResourceExt;
use std::collections::BTreeMap;
use std::fmt;

/// Why a policy namespace may not reference a repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessDenied {
    /// `namespace/name` of the ImageRepository.
    pub repository: String,
    /// The namespace of the ImagePolicy.
    pub policy_namespace: String,
    /// The repository's `spec.accessFrom.namespaceSelectors`, if any.
    pub selectors: Option<Vec<NamespaceSelector>>,
    /// The labels of the policy's namespace.
    pub namespace_labels: BTreeMap<String, String>,
    /// Cross-namespace references are switched off for the whole controller.
    pub cross_namespace_refs_disabled: bool,
}

fn labels_text(labels: &BTreeMap<String, String>) -> String {
    if labels.is_empty() {
        return "{}".to_string();
    }
    let inner: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!("{{{}}}", inner.join(", "))
}

impl fmt::Display for AccessDenied {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.cross_namespace_refs_disabled {
            return write!(
                f,
                "ImageRepository {} is in another namespace than the ImagePolicy (namespace {:?}) and cross-namespace references are disabled (--no-cross-namespace-refs); move the policy or the repository into one namespace",
                self.repository, self.policy_namespace
            );
        }
        match &self.selectors {
            None => write!(
                f,
                "ImageRepository {} has no spec.accessFrom, so only ImagePolicies in its own namespace may use it; to admit namespace {:?} (labels {}) add spec.accessFrom.namespaceSelectors matching its labels",
                self.repository,
                self.policy_namespace,
                labels_text(&self.namespace_labels)
            ),
            Some(selectors) => {
                let sel: Vec<String> = selectors
                    .iter()
                    .map(|s| labels_text(s.match_labels.as_ref().unwrap_or(&BTreeMap::new())))
                    .collect();
                write!(
                    f,
                    "ImageRepository {} admits namespaces matching [{}] (spec.accessFrom.namespaceSelectors[].matchLabels), and namespace {:?} has labels {}, which match none; label the namespace or extend the selectors",
                    self.repository,
                    sel.join(", "),
                    self.policy_namespace,
                    labels_text(&self.namespace_labels)
                )
            }
        }
    }
}

impl std::error::Error for AccessDenied {}

/// Decides whether an ImagePolicy in `policy_namespace` (whose labels are
/// `namespace_labels`) may use `repo`: always in the repository's own namespace; otherwise
/// only if cross-namespace references are enabled and any of the repository's namespace
/// selectors matches (all of its `matchLabels`; an empty selector matches every
/// namespace). No `accessFrom` means other namespaces are denied.
pub fn access_allowed(
    repo: &ImageRepository,
    policy_namespace: &str,
    namespace_labels: &BTreeMap<String, String>,
    no_cross_namespace_refs: bool,
) -> Result<(), AccessDenied> {
    let repo_namespace = repo.namespace().unwrap_or_default();
    if repo_namespace == policy_namespace {
        return Ok(());
    }
    let denied = |selectors: Option<Vec<NamespaceSelector>>| AccessDenied {
        repository: format!("{}/{}", repo_namespace, repo.name_any()),
        policy_namespace: policy_namespace.to_string(),
        selectors,
        namespace_labels: namespace_labels.clone(),
        cross_namespace_refs_disabled: no_cross_namespace_refs,
    };
    if no_cross_namespace_refs {
        return Err(denied(
            repo.spec
                .access_from
                .as_ref()
                .map(|a| a.namespace_selectors.clone()),
        ));
    }
    let Some(access_from) = &repo.spec.access_from else {
        return Err(denied(None));
    };
    let admitted = access_from.namespace_selectors.iter().any(|selector| {
        selector
            .match_labels
            .as_ref()
            .map(|labels| {
                labels
                    .iter()
                    .all(|(k, v)| namespace_labels.get(k) == Some(v))
            })
            .unwrap_or(true)
    });
    if admitted {
        Ok(())
    } else {
        Err(denied(Some(access_from.namespace_selectors.clone())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{AccessFrom, ImageRepositorySpec};

    fn repo(namespace: &str, access_from: Option<AccessFrom>) -> ImageRepository {
        let mut r = ImageRepository::new(
            "app",
            ImageRepositorySpec {
                image: "ghcr.io/org/app".into(),
                interval: "5m".into(),
                access_from,
                ..Default::default()
            },
        );
        r.metadata.namespace = Some(namespace.into());
        r
    }

    fn selector(pairs: &[(&str, &str)]) -> NamespaceSelector {
        NamespaceSelector {
            match_labels: Some(
                pairs
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
        }
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn same_namespace_is_always_allowed() {
        assert!(access_allowed(&repo("apps", None), "apps", &labels(&[]), true).is_ok());
    }

    #[test]
    fn no_access_from_denies_other_namespaces() {
        let err =
            access_allowed(&repo("apps", None), "flux-system", &labels(&[]), false).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("apps/app") && msg.contains("no spec.accessFrom"),
            "{msg}"
        );
    }

    #[test]
    fn a_selector_whose_labels_all_match_admits() {
        let r = repo(
            "apps",
            Some(AccessFrom {
                namespace_selectors: vec![
                    selector(&[("team", "x")]),
                    selector(&[
                        ("kubernetes.io/metadata.name", "flux-system"),
                        ("env", "prod"),
                    ]),
                ],
            }),
        );
        let ns = labels(&[
            ("kubernetes.io/metadata.name", "flux-system"),
            ("env", "prod"),
        ]);
        assert!(access_allowed(&r, "flux-system", &ns, false).is_ok());
        let partial = labels(&[("kubernetes.io/metadata.name", "flux-system")]);
        let msg = access_allowed(&r, "flux-system", &partial, false)
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("team=x") && msg.contains("kubernetes.io/metadata.name=flux-system"),
            "{msg}"
        );
    }

    #[test]
    fn an_empty_selector_admits_every_namespace() {
        let r = repo(
            "apps",
            Some(AccessFrom {
                namespace_selectors: vec![NamespaceSelector {
                    match_labels: Some(BTreeMap::new()),
                }],
            }),
        );
        assert!(access_allowed(&r, "anywhere", &labels(&[]), false).is_ok());
        let r = repo(
            "apps",
            Some(AccessFrom {
                namespace_selectors: vec![NamespaceSelector::default()],
            }),
        );
        assert!(access_allowed(&r, "anywhere", &labels(&[]), false).is_ok());
    }

    #[test]
    fn empty_selector_list_denies() {
        let r = repo(
            "apps",
            Some(AccessFrom {
                namespace_selectors: vec![],
            }),
        );
        assert!(access_allowed(&r, "other", &labels(&[]), false).is_err());
    }

    #[test]
    fn disabled_cross_namespace_refs_deny_even_an_open_repository() {
        let r = repo(
            "apps",
            Some(AccessFrom {
                namespace_selectors: vec![NamespaceSelector::default()],
            }),
        );
        let msg = access_allowed(&r, "other", &labels(&[]), true)
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("cross-namespace references are disabled"),
            "{msg}"
        );
    }
}
