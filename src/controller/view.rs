//! The admission webhooks' view of the cluster, read from the controllers' watched caches:
//! no API call per admission request.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Namespace;
use kube::core::PartialObjectMeta as PartialObjectMetadata;
use kube::runtime::reflector::{ObjectRef, Store};

use crate::admission::ClusterView;
use crate::api::ImageRepository;

/// Cross-namespace checks at admission, answered from the reflector stores.
#[derive(Clone)]
pub struct CacheView {
    pub repositories: Store<ImageRepository>,
    pub namespaces: Store<PartialObjectMetadata<Namespace>>,
}

impl ClusterView for CacheView {
    fn image_repository(&self, namespace: &str, name: &str) -> Option<Arc<ImageRepository>> {
        self.repositories
            .get(&ObjectRef::new(name).within(namespace))
    }

    fn namespace_labels(&self, namespace: &str) -> Option<BTreeMap<String, String>> {
        self.namespaces
            .get(&ObjectRef::new(namespace))
            .map(|ns| ns.metadata.labels.clone().unwrap_or_default())
    }
}
