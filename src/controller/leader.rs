//! Leader election on a `coordination.k8s.io/v1` Lease, as controller-runtime does it:
//! the holder renews the lease every `renew_every`; another replica takes it over only
//! once `lease_duration` has passed since the last renewal. Every replica serves the
//! webhooks regardless; only the leader runs the reconcilers.
//!
//! Writes are optimistic (`PUT` with the resourceVersion read), so two replicas racing for
//! an expired lease cannot both win: the loser gets 409 Conflict and tries again later.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::Client;
use kube::api::{Api, PostParams};
use tokio::sync::watch;
use tracing::{info, warn};

/// How a replica competes for the lease.
#[derive(Clone, Debug)]
pub struct LeaderConfig {
    pub namespace: String,
    pub lease_name: String,
    /// This replica's identity (the pod name, by default the host name plus a random suffix).
    pub identity: String,
    pub lease_duration: Duration,
    pub renew_every: Duration,
    pub retry_every: Duration,
}

impl LeaderConfig {
    pub fn new(namespace: &str, lease_name: &str, identity: &str) -> LeaderConfig {
        LeaderConfig {
            namespace: namespace.to_string(),
            lease_name: lease_name.to_string(),
            identity: identity.to_string(),
            lease_duration: Duration::from_secs(35),
            renew_every: Duration::from_secs(10),
            retry_every: Duration::from_secs(2),
        }
    }
}

/// Leadership as seen by this replica: `true` while it holds the lease.
pub type Leadership = watch::Receiver<bool>;

/// Runs the election loop in the background. The returned receiver turns `true` when this
/// replica becomes leader and `false` when it loses the lease (then the caller should stop
/// reconciling at once; the process exits so a fresh start re-syncs its caches).
pub fn spawn(client: Client, config: LeaderConfig) -> Leadership {
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        let api: Api<Lease> = Api::namespaced(client, &config.namespace);
        let mut leading = false;
        loop {
            let outcome = try_acquire_or_renew(&api, &config).await;
            let now_leading = match outcome {
                Ok(held) => held,
                Err(err) => {
                    warn!(lease = %config.lease_name, error = %err, "leader election: lease update failed");
                    // Keep leadership only while the last renewal is still fresh.
                    false
                }
            };
            if now_leading != leading {
                leading = now_leading;
                if leading {
                    info!(lease = %config.lease_name, identity = %config.identity, "leader election: acquired the lease");
                } else {
                    warn!(lease = %config.lease_name, identity = %config.identity, "leader election: lost the lease");
                }
                if tx.send(leading).is_err() {
                    return;
                }
            }
            let wait = if leading {
                config.renew_every
            } else {
                config.retry_every
            };
            tokio::time::sleep(wait).await;
        }
    });
    rx
}

/// Reads the lease and takes or renews it when allowed. Ok(true) when this replica holds it.
async fn try_acquire_or_renew(
    api: &Api<Lease>,
    config: &LeaderConfig,
) -> Result<bool, kube::Error> {
    let now = jiff::Timestamp::now();
    let duration_secs = i32::try_from(config.lease_duration.as_secs()).unwrap_or(i32::MAX);
    let Some(mut lease) = api.get_opt(&config.lease_name).await? else {
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(config.lease_name.clone()),
                namespace: Some(config.namespace.clone()),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(config.identity.clone()),
                lease_duration_seconds: Some(duration_secs),
                acquire_time: Some(MicroTime(now)),
                renew_time: Some(MicroTime(now)),
                lease_transitions: Some(0),
                ..LeaseSpec::default()
            }),
        };
        return match api.create(&PostParams::default(), &lease).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
            Err(err) => Err(err),
        };
    };
    let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
    let holder = spec.holder_identity.clone().unwrap_or_default();
    let held_by_us = holder == config.identity;
    if !held_by_us && !holder.is_empty() {
        let lease_secs = spec.lease_duration_seconds.unwrap_or(duration_secs).max(1);
        let last = spec
            .renew_time
            .as_ref()
            .or(spec.acquire_time.as_ref())
            .map(|t| t.0);
        let expired = match last {
            Some(last) => now.duration_since(last).as_secs() >= i64::from(lease_secs),
            None => true,
        };
        if !expired {
            return Ok(false);
        }
    }
    if !held_by_us {
        spec.holder_identity = Some(config.identity.clone());
        spec.acquire_time = Some(MicroTime(now));
        spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0).saturating_add(1));
    }
    spec.lease_duration_seconds = Some(duration_secs);
    spec.renew_time = Some(MicroTime(now));
    match api
        .replace(&config.lease_name, &PostParams::default(), &lease)
        .await
    {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
        Err(err) => Err(err),
    }
}
