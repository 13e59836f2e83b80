//! Leader election on a `coordination.k8s.io/v1` Lease, as client-go does it (and Flux's
//! `--leader-election-*` flags configure it): every `retry_period` a replica tries to
//! take the lease and the holder renews it; another replica takes it over only once
//! `lease_duration` has passed since the last renewal; a holder whose renewals keep
//! failing gives leadership up once `renew_deadline` has passed since its last success.
//! Every replica serves the webhooks regardless; only the leader runs the reconcilers.
//!
//! Writes are optimistic (`PUT` with the resourceVersion read), so two replicas racing for
//! an expired lease cannot both win: the loser gets 409 Conflict and tries again later.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::Client;
use kube::api::{Api, PostParams};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// How a replica competes for the lease.
#[derive(Clone, Debug)]
pub struct LeaderConfig {
    pub namespace: String,
    pub lease_name: String,
    /// This replica's identity (the pod name, by default the host name plus a random suffix).
    pub identity: String,
    /// How long after the last renewal another replica may take the lease.
    pub lease_duration: Duration,
    /// How long the holder keeps retrying failed renewals before it gives up.
    pub renew_deadline: Duration,
    /// How often replicas try to take the lease, and the holder renews it.
    pub retry_period: Duration,
    /// Whether the holder releases the lease when it stops.
    pub release_on_cancel: bool,
}

impl LeaderConfig {
    pub fn new(namespace: &str, lease_name: &str, identity: &str) -> LeaderConfig {
        LeaderConfig {
            namespace: namespace.to_string(),
            lease_name: lease_name.to_string(),
            identity: identity.to_string(),
            lease_duration: Duration::from_secs(35),
            renew_deadline: Duration::from_secs(30),
            retry_period: Duration::from_secs(5),
            release_on_cancel: true,
        }
    }
}

/// Leadership as seen by this replica: `true` while it holds the lease.
pub type Leadership = watch::Receiver<bool>;

/// Runs the election loop in the background. The returned receiver turns `true` when this
/// replica becomes leader and `false` when it loses the lease (then the caller should stop
/// reconciling at once; the process exits so a fresh start re-syncs its caches). When
/// `stop` is cancelled the loop ends and, if this replica leads, releases the lease so
/// another replica takes over at once instead of after `lease_duration`.
pub fn spawn(client: Client, config: LeaderConfig, stop: CancellationToken) -> Leadership {
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        let api: Api<Lease> = Api::namespaced(client, &config.namespace);
        let mut leading = false;
        let mut last_renewal: Option<tokio::time::Instant> = None;
        loop {
            if stop.is_cancelled() {
                if leading && config.release_on_cancel {
                    match release(&api, &config).await {
                        Ok(()) => {
                            info!(lease = %config.lease_name, "leader election: released the lease")
                        }
                        Err(e) => {
                            warn!(lease = %config.lease_name, error = %e, "leader election: releasing the lease failed")
                        }
                    }
                }
                return;
            }
            let still_fresh = |last: Option<tokio::time::Instant>| {
                last.is_some_and(|t| t.elapsed() < config.renew_deadline)
            };
            let now_leading = match try_acquire_or_renew(&api, &config).await {
                Ok(Attempt::Held) => {
                    last_renewal = Some(tokio::time::Instant::now());
                    true
                }
                Ok(Attempt::HeldByOther) => false,
                // A conflicting write or a failed request: the holder keeps leading while
                // its last renewal is within the renew deadline, and tries again.
                Ok(Attempt::Conflict) => leading && still_fresh(last_renewal),
                Err(err) => {
                    warn!(lease = %config.lease_name, error = %err, "leader election: lease update failed");
                    leading && still_fresh(last_renewal)
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
            tokio::select! {
                _ = tokio::time::sleep(config.retry_period) => {}
                _ = stop.cancelled() => {}
            }
        }
    });
    rx
}

/// Gives the lease up: no holder, expired at once (as client-go's ReleaseOnCancel).
async fn release(api: &Api<Lease>, config: &LeaderConfig) -> Result<(), kube::Error> {
    let Some(mut lease) = api.get_opt(&config.lease_name).await? else {
        return Ok(());
    };
    let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
    if spec.holder_identity.as_deref() != Some(config.identity.as_str()) {
        return Ok(());
    }
    spec.holder_identity = None;
    spec.lease_duration_seconds = Some(1);
    spec.renew_time = Some(MicroTime(jiff::Timestamp::now()));
    api.replace(&config.lease_name, &PostParams::default(), &lease)
        .await
        .map(|_| ())
}

/// What one attempt to take or renew the lease found.
enum Attempt {
    /// This replica holds the lease (took or renewed it).
    Held,
    /// Another replica holds it and its lease has not expired.
    HeldByOther,
    /// Another write won the race (409 Conflict).
    Conflict,
}

/// Reads the lease and takes or renews it when allowed.
async fn try_acquire_or_renew(
    api: &Api<Lease>,
    config: &LeaderConfig,
) -> Result<Attempt, kube::Error> {
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
            Ok(_) => Ok(Attempt::Held),
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(Attempt::Conflict),
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
            return Ok(Attempt::HeldByOther);
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
        Ok(_) => Ok(Attempt::Held),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(Attempt::Conflict),
        Err(err) => Err(err),
    }
}
