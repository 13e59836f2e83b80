//! Setting kstatus conditions the way Flux does: one entry per type, `lastTransitionTime`
//! moved only when the status flips, `observedGeneration` stamped on each.

use crate::api::{PROGRESSING, READY, RECONCILING, STALLED};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// Sets (or replaces) the condition of `type_`. Keeps `lastTransitionTime` when the status
/// is unchanged, so rewriting the same verdict does not change the object.
pub fn set(
    conditions: &mut Vec<Condition>,
    type_: &str,
    status: bool,
    reason: &str,
    message: &str,
    generation: Option<i64>,
    now: jiff::Timestamp,
) {
    let status = if status { "True" } else { "False" };
    set_status(conditions, type_, status, reason, message, generation, now)
}

/// Work in progress, as Flux marks it before a scan it was asked for: Reconciling=True
/// with reason `Progressing` and the message, and Ready=Unknown with the same when there
/// is no Ready verdict yet (an earlier verdict stays until the work is done).
pub fn progressing(
    conditions: &mut Vec<Condition>,
    message: &str,
    generation: Option<i64>,
    now: jiff::Timestamp,
) {
    set(
        conditions,
        RECONCILING,
        true,
        PROGRESSING,
        message,
        generation,
        now,
    );
    if get(conditions, READY).is_none_or(|c| c.status == "Unknown") {
        set_status(
            conditions,
            READY,
            "Unknown",
            PROGRESSING,
            message,
            generation,
            now,
        );
    }
}

fn set_status(
    conditions: &mut Vec<Condition>,
    type_: &str,
    status: &str,
    reason: &str,
    message: &str,
    generation: Option<i64>,
    now: jiff::Timestamp,
) {
    let transition = conditions
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or(Time(now));
    let condition = Condition {
        type_: type_.to_string(),
        status: status.to_string(),
        reason: reason.to_string(),
        message: truncate(message),
        observed_generation: generation,
        last_transition_time: transition,
    };
    match conditions.iter_mut().find(|c| c.type_ == type_) {
        Some(existing) => *existing = condition,
        None => conditions.push(condition),
    }
    sort(conditions);
}

/// The object cannot progress until its spec changes: Ready=False and Stalled=True with
/// the same reason and message, and no Reconciling.
pub fn stalled(
    conditions: &mut Vec<Condition>,
    reason: &str,
    message: &str,
    generation: Option<i64>,
    now: jiff::Timestamp,
) {
    set(conditions, READY, false, reason, message, generation, now);
    set(conditions, STALLED, true, reason, message, generation, now);
    remove(conditions, RECONCILING);
}

/// Done: Ready=True with the reason and message, no Reconciling, no Stalled.
pub fn ready(
    conditions: &mut Vec<Condition>,
    reason: &str,
    message: &str,
    generation: Option<i64>,
    now: jiff::Timestamp,
) {
    set(conditions, READY, true, reason, message, generation, now);
    remove(conditions, RECONCILING);
    remove(conditions, STALLED);
}

/// Not ready for now, but not stalled: Ready=False with the reason and message, no
/// Stalled (Reconciling is the caller's to say).
pub fn not_ready(
    conditions: &mut Vec<Condition>,
    reason: &str,
    message: &str,
    generation: Option<i64>,
    now: jiff::Timestamp,
) {
    set(conditions, READY, false, reason, message, generation, now);
    remove(conditions, STALLED);
}

/// What Flux records of a suspended object, which it does not reconcile otherwise: the
/// reconcile request counts as handled, and a new generation as observed while the last
/// verdict is Ready or Stalled (so `kubectl wait` and Flux's health checks do not see it
/// as forever in progress).
pub fn record_while_suspended(
    conditions: &[Condition],
    observed_generation: &mut Option<i64>,
    last_handled_reconcile_at: &mut Option<String>,
    generation: Option<i64>,
    requested_at: Option<&str>,
) {
    if let Some(at) = requested_at {
        *last_handled_reconcile_at = Some(at.to_string());
    }
    if is_true(conditions, READY) || is_true(conditions, STALLED) {
        *observed_generation = generation;
    }
}

/// Removes the condition of `type_` (negative-polarity conditions are absent when false).
pub fn remove(conditions: &mut Vec<Condition>, type_: &str) {
    conditions.retain(|c| c.type_ != type_);
}

/// The condition of `type_`, if present.
pub fn get<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// Whether the condition of `type_` is present with status `True`.
pub fn is_true(conditions: &[Condition], type_: &str) -> bool {
    get(conditions, type_).is_some_and(|c| c.status == "True")
}

/// Ready first, then Reconciling, then Stalled, then the rest by name: a stable order, so
/// equal verdicts serialise to equal bytes.
fn sort(conditions: &mut [Condition]) {
    let rank = |t: &str| match t {
        READY => 0,
        RECONCILING => 1,
        STALLED => 2,
        _ => 3,
    };
    conditions.sort_by(|a, b| {
        rank(&a.type_)
            .cmp(&rank(&b.type_))
            .then_with(|| a.type_.cmp(&b.type_))
    });
}

/// Condition messages are capped (the API allows 32 KiB; Flux keeps them short).
fn truncate(message: &str) -> String {
    const MAX: usize = 4096;
    if message.len() <= MAX {
        return message.to_string();
    }
    let mut end = MAX;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &message[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> jiff::Timestamp {
        jiff::Timestamp::from_second(secs).expect("valid timestamp")
    }

    #[test]
    fn rewriting_the_same_status_keeps_the_transition_time() {
        let mut c = Vec::new();
        set(
            &mut c,
            "Ready",
            true,
            "Succeeded",
            "found 3 tags",
            Some(1),
            at(100),
        );
        set(
            &mut c,
            "Ready",
            true,
            "Succeeded",
            "found 4 tags",
            Some(2),
            at(200),
        );
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].last_transition_time, Time(at(100)));
        assert_eq!(c[0].message, "found 4 tags");
        assert_eq!(c[0].observed_generation, Some(2));
    }

    #[test]
    fn flipping_the_status_moves_the_transition_time() {
        let mut c = Vec::new();
        set(&mut c, "Ready", true, "Succeeded", "ok", Some(1), at(100));
        set(
            &mut c,
            "Ready",
            false,
            "AuthenticationFailed",
            "401",
            Some(1),
            at(200),
        );
        assert_eq!(c[0].last_transition_time, Time(at(200)));
        assert_eq!(c[0].status, "False");
    }

    #[test]
    fn conditions_are_kept_in_a_stable_order() {
        let mut c = Vec::new();
        set(
            &mut c,
            "Stalled",
            true,
            "ImageURLInvalid",
            "bad",
            Some(1),
            at(1),
        );
        set(
            &mut c,
            "Ready",
            false,
            "ImageURLInvalid",
            "bad",
            Some(1),
            at(1),
        );
        let types: Vec<&str> = c.iter().map(|c| c.type_.as_str()).collect();
        assert_eq!(types, ["Ready", "Stalled"]);
        remove(&mut c, "Stalled");
        assert!(!is_true(&c, "Stalled"));
        assert!(get(&c, "Ready").is_some());
    }

    #[test]
    fn stalled_sets_ready_false_and_stalled_true_and_drops_reconciling() {
        let mut c = Vec::new();
        set(
            &mut c,
            "Reconciling",
            true,
            "ProgressingWithRetry",
            "retrying",
            Some(1),
            at(1),
        );
        stalled(&mut c, "ImageURLInvalid", "spec.image: bad", Some(2), at(2));
        let ready = get(&c, "Ready").expect("Ready");
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", "ImageURLInvalid")
        );
        assert!(is_true(&c, "Stalled"));
        assert!(get(&c, "Reconciling").is_none());
    }

    #[test]
    fn ready_clears_stalled_and_reconciling_and_not_ready_clears_only_stalled() {
        let mut c = Vec::new();
        stalled(&mut c, "ImageURLInvalid", "spec.image: bad", Some(1), at(1));
        set(
            &mut c,
            "Reconciling",
            true,
            "Progressing",
            "again",
            Some(1),
            at(1),
        );
        not_ready(&mut c, "AuthenticationFailed", "401", Some(2), at(2));
        assert!(!is_true(&c, "Ready"));
        assert!(get(&c, "Stalled").is_none());
        assert!(is_true(&c, "Reconciling"));
        ready(&mut c, "Succeeded", "found 3 tags", Some(3), at(3));
        assert!(is_true(&c, "Ready"));
        assert_eq!(c.len(), 1);
    }
}
