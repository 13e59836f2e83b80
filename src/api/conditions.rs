//! Condition types and reasons, as Flux's controllers write them (kstatus-compatible).

/// The condition every Flux object carries: `True` once the last reconcile succeeded.
pub const READY: &str = "Ready";
/// Present (status `True`) while the controller works on a new generation or a retry.
pub const RECONCILING: &str = "Reconciling";
/// Present (status `True`) when the object cannot progress without a change by a human.
pub const STALLED: &str = "Stalled";

/// Reconcile finished and the status is up to date.
pub const SUCCEEDED: &str = "Succeeded";
/// Generic failure.
pub const FAILURE: &str = "Failure";
/// A new generation was observed and is being worked on.
pub const NEW_GENERATION: &str = "NewGeneration";
/// The previous attempt failed and the controller retries with backoff.
pub const PROGRESSING_WITH_RETRY: &str = "ProgressingWithRetry";
/// Reason of Reconciling while a reconcile that was asked for runs (Flux's).
pub const PROGRESSING: &str = "Progressing";
/// Reason of an ImagePolicy with `digestReflectionPolicy: Always` and no interval (Flux's).
pub const INTERVAL_NOT_CONFIGURED: &str = "IntervalNotConfigured";
/// The spec can never work as written (spec.image, a policy that does not parse, ...).
pub const INVALID_POLICY: &str = "InvalidPolicy";
/// Object is suspended.
pub const SUSPENDED: &str = "Suspended";

/// ImageRepository: `spec.image` does not parse as a repository name.
pub const IMAGE_URL_INVALID: &str = "ImageURLInvalid";
/// ImageRepository: the registry refused the credentials, or they could not be obtained.
pub const AUTHENTICATION_FAILED: &str = "AuthenticationFailed";
/// ImageRepository: listing tags (or reading the tag store) failed.
pub const READ_OPERATION_FAILED: &str = "ReadOperationFailed";
/// ImageRepository: a scan is in progress.
pub const SCANNING: &str = "Scanning";

/// ImagePolicy: the referenced ImageRepository's accessFrom does not admit the policy.
pub const ACCESS_DENIED: &str = "AccessDenied";
/// ImagePolicy: the referenced ImageRepository is missing or not ready yet.
pub const DEPENDENCY_NOT_READY: &str = "DependencyNotReady";
/// ImagePolicy: reading the referenced ImageRepository.
pub const ACCESSING_REPOSITORY: &str = "AccessingRepository";
/// ImagePolicy: selecting the latest tag.
pub const APPLYING_POLICY: &str = "ApplyingPolicy";
