//! Writing status: server-side apply of the whole status with the controller's field
//! manager, skipped when nothing changed so steady state costs no API writes. Every kind's
//! status starts with `observedGeneration` and `conditions`; [`Reconciled`] gives the drivers
//! one way to handle both.

use std::fmt::Debug;

use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Condition, jiff::Timestamp};
use kube::{
    Api, Resource, ResourceExt,
    api::{Patch, PatchParams},
};
use serde::{Serialize, de::DeserializeOwned};
use serde_json::json;

use super::{
    Error, MANAGER,
    conditions::{Conditions, Outcome},
};
use crate::api::{
    ApiVersionPolicy, ApiVersionPolicyStatus, EventTopic, EventTopicStatus, Subscription, SubscriptionStatus, Webhook,
    WebhookStatus,
};

/// A resource whose status carries `observedGeneration` and conditions.
pub trait Reconciled: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug {
    type Status: Clone + Default + PartialEq + Serialize;
    fn status(&self) -> Option<&Self::Status>;
    fn conditions(&self) -> &[Condition];
    fn core(status: &mut Self::Status) -> (&mut Option<i64>, &mut Vec<Condition>);
    /// Status fields written by someone else (a Webhook's dispatcher pods): never applied
    /// by the controller, so it never takes them over with a stale copy.
    const FOREIGN_STATUS: &'static [&'static str];
}

macro_rules! reconciled {
    ($($kind:ty => $status:ty $(, foreign $($field:literal)*)?);*) => {$(
        impl Reconciled for $kind {
            type Status = $status;
            fn status(&self) -> Option<&$status> {
                self.status.as_ref()
            }
            fn conditions(&self) -> &[Condition] {
                self.status.as_ref().map(|s| s.conditions.as_slice()).unwrap_or_default()
            }
            fn core(status: &mut $status) -> (&mut Option<i64>, &mut Vec<Condition>) {
                (&mut status.observed_generation, &mut status.conditions)
            }
            const FOREIGN_STATUS: &'static [&'static str] = &[$($($field),*)?];
        }
    )*};
}

reconciled!(
    EventTopic => EventTopicStatus;
    Subscription => SubscriptionStatus;
    // The pods' own reports, and the totals folded from them by a JSON patch.
    Webhook => WebhookStatus, foreign "dispatchers" "retired";
    ApiVersionPolicy => ApiVersionPolicyStatus
);

/// Whether `obj` is Ready for its current spec (its Ready condition is True and observed this
/// generation).
pub fn ready_for_spec<K: Reconciled>(obj: &K) -> bool {
    super::conditions::ready_condition(obj.conditions())
        .is_some_and(|c| c.status == "True" && c.observed_generation == obj.meta().generation)
}

/// What `obj`'s Ready condition says (`reason: message`), for a message about waiting on it.
pub fn readiness(obj: &impl Reconciled) -> String {
    super::conditions::ready_condition(obj.conditions())
        .map_or_else(|| "not reconciled yet".to_owned(), |c| format!("{}: {}", c.reason, c.message))
}

/// The object's current status, or an empty one.
pub fn current<K: Reconciled>(obj: &K) -> K::Status {
    obj.status().cloned().unwrap_or_default()
}

/// `previous` with this generation observed and the conditions set from `outcome`.
pub fn with_outcome<K: Reconciled>(obj: &K, previous: &K::Status, outcome: &Outcome) -> K::Status {
    let mut status = previous.clone();
    let (generation, conditions) = K::core(&mut status);
    let mut next = Conditions::from_status(conditions, obj.meta().generation, Timestamp::now());
    next.outcome(outcome);
    *generation = obj.meta().generation;
    *conditions = next.into_vec();
    status
}

/// Records that a new generation is being worked on, before anything else happens, so
/// kstatus and `kubectl wait` never take a fresh or changed object for a finished one.
pub async fn mark_reconciling<K: Reconciled>(api: &Api<K>, obj: &K) -> Result<(), Error> {
    let before = current(obj);
    let mut status = before.clone();
    let (generation, conditions) = K::core(&mut status);
    if obj.meta().deletion_timestamp.is_some() || *generation == obj.meta().generation {
        return Ok(());
    }
    let mut next = Conditions::from_status(conditions, obj.meta().generation, Timestamp::now());
    next.reconciling(&format!("Reconciling generation {}", obj.meta().generation.unwrap_or_default()));
    *generation = obj.meta().generation;
    *conditions = next.into_vec();
    apply_status(api, &obj.name_any(), Some(&before), &status).await.map(|_| ())
}

/// Applies `status` (all but [`Reconciled::FOREIGN_STATUS`]) to the object `name` unless it
/// equals `current`.
pub async fn apply_status<K: Reconciled>(
    api: &Api<K>,
    name: &str,
    current: Option<&K::Status>,
    status: &K::Status,
) -> Result<bool, Error> {
    if current == Some(status) {
        return Ok(false);
    }
    let mut status = serde_json::to_value(status).map_err(|e| Error::InvalidSpec(e.to_string()))?;
    if let Some(fields) = status.as_object_mut() {
        for field in K::FOREIGN_STATUS {
            fields.remove(*field);
        }
    }
    let body = json!({ "apiVersion": K::api_version(&()), "kind": K::kind(&()), "status": status });
    api.patch_status(name, &PatchParams::apply(MANAGER).force(), &Patch::Apply(&body))
        .await
        .map_err(Error::kube("update status"))?;
    Ok(true)
}

/// The outcome a failed reconcile reports.
pub fn failure_outcome(e: &Error) -> Outcome {
    if e.needs_human() {
        Outcome::Stalled { reason: e.category(), message: e.to_string() }
    } else {
        Outcome::Progressing { reason: e.category(), message: e.to_string() }
    }
}
