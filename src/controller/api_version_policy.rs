//! The ApiVersionPolicy controller: find the policy's topic → make sure no older policy governs
//! it → dry-run every catalog example down the version chain → count the Subscriptions on each
//! version (the migration board) → report status and Events, and look again when the next
//! version changes state. A policy owns nothing on the broker, so it has no finalizer.

use std::sync::Arc;

use k8s_openapi::jiff::Timestamp;
use kube::{
    Api, ResourceExt,
    api::ListParams,
    runtime::{controller::Action, events::EventType},
};
use tracing::instrument;

use super::{
    Context, Error,
    conditions::{Outcome, ready_condition},
    status,
};
use crate::{
    api::{
        ApiVersionPolicy, ApiVersionPolicyStatus, EventTopic, Subscription,
        api_version_policy::{VersionState, VersionStatus},
    },
    versions::{
        TopicVersions,
        dry_run::{Checked, dry_run},
        lifecycle::{Board, board, governing, next_transition},
    },
};

pub const KIND: &str = "ApiVersionPolicy";

/// Reconciles one ApiVersionPolicy.
#[instrument(skip_all, fields(namespace = policy.namespace().unwrap_or_default(), name = policy.name_any()))]
pub async fn reconcile(policy: Arc<ApiVersionPolicy>, ctx: Arc<Context>) -> Result<Action, Error> {
    super::measured(KIND, policy.as_ref(), &ctx, run(&policy, &ctx)).await
}

/// What one look at the policy found.
struct Looked {
    board: Option<Board>,
    checked: Checked,
    /// Why the policy is not Ready, when it is not.
    problem: Option<Error>,
}

async fn run(policy: &ApiVersionPolicy, ctx: &Context) -> Result<Action, Error> {
    let namespace = policy.namespace().ok_or(Error::NotNamespaced)?;
    if policy.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let api = Api::<ApiVersionPolicy>::namespaced(ctx.client.clone(), &namespace);
    status::mark_reconciling(&api, policy).await?;
    let now = Timestamp::now();
    let looked = look(policy, ctx, &namespace, now).await?;
    let previous = status::current(policy);
    let topic = &policy.spec.topic_ref.name;
    let outcome = match &looked.problem {
        None => Outcome::Ready { reason: "Ready", message: ready_message(policy, &looked) },
        Some(e) => status::failure_outcome(e),
    };
    let mut next = status::with_outcome(policy, &previous, &outcome);
    // A policy in conflict keeps no board.
    let board = looked.board.map(|b| (b.versions, b.deprecated_in_use, b.sunset_in_use));
    (next.versions, next.deprecated_in_use, next.sunset_in_use) = match board {
        Some((versions, deprecated, sunset)) => (versions, Some(deprecated), Some(sunset)),
        None => (Vec::new(), None, None),
    };
    let due = next_transition(&policy.spec, now);
    next.next_transition = due.map(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time);
    report_events(policy, ctx, &previous, &next, looked.problem.as_ref(), topic).await;
    status::apply_status(&api, &policy.name_any(), Some(&previous), &next).await?;
    // States follow the clock: look again right after the next instant one changes.
    Ok(ctx.resync_or_at(due))
}

async fn look(policy: &ApiVersionPolicy, ctx: &Context, namespace: &str, now: Timestamp) -> Result<Looked, Error> {
    let topic = &policy.spec.topic_ref.name;
    let policies = Api::<ApiVersionPolicy>::namespaced(ctx.client.clone(), namespace)
        .list(&ListParams::default())
        .await
        .map_err(Error::kube("list ApiVersionPolicies"))?;
    let first = governing(&policies.items, topic).map(ResourceExt::name_any);
    if let Some(first) = first.filter(|f| *f != policy.name_any()) {
        let problem = Error::Conflict(format!(
            "ApiVersionPolicy {first} already governs EventTopic {topic} (one policy per topic): merge these versions into {first}, or delete it and keep this one"
        ));
        return Ok(Looked { board: None, checked: Checked::default(), problem: Some(problem) });
    }
    let subscriptions = Api::<Subscription>::namespaced(ctx.client.clone(), namespace)
        .list(&ListParams::default())
        .await
        .map_err(Error::kube("list Subscriptions"))?;
    let pins = subscriptions
        .items
        .iter()
        .filter(|s| s.spec.topic_ref.name == *topic)
        .map(|s| (s.metadata.name.as_deref().unwrap_or_default(), s.spec.event_version.as_deref()));
    let board = Some(board(&policy.spec, pins, now));
    let found = Api::<EventTopic>::namespaced(ctx.client.clone(), namespace)
        .get_opt(topic)
        .await
        .map_err(Error::kube("read the EventTopic"))?;
    let Some(found) = found else {
        let problem = Error::TopicNotFound(format!(
            "EventTopic {namespace}/{topic} does not exist; the policy applies once it does"
        ));
        return Ok(Looked { board, checked: Checked::default(), problem: Some(problem) });
    };
    let (checked, problem) = match dry_run(&TopicVersions::with_examples(&found.spec.events, Some(&policy.spec))) {
        Ok(checked) => (checked, None),
        Err(e) => (Checked::default(), Some(Error::ConversionInvalid(format!("conversion dry run failed: {e}")))),
    };
    Ok(Looked { board, checked, problem })
}

fn ready_message(policy: &ApiVersionPolicy, looked: &Looked) -> String {
    let (subscriptions, deprecated, sunset) = looked.board.as_ref().map_or((0, 0, 0), |b| {
        (b.versions.iter().map(|v| v.subscriptions).sum::<i32>(), b.deprecated_in_use, b.sunset_in_use)
    });
    format!(
        "Governs EventTopic {}: current version {}, {subscriptions} Subscription(s), {deprecated} on deprecated and {sunset} on sunset versions; {} example(s) rendered through {} version step(s)",
        policy.spec.topic_ref.name, policy.spec.current, looked.checked.examples, looked.checked.steps
    )
}

/// Events: failures when the Ready reason changes, recovery, and each version that became
/// deprecated or reached its sunset, with the Subscriptions still on it.
async fn report_events(
    policy: &ApiVersionPolicy,
    ctx: &Context,
    previous: &ApiVersionPolicyStatus,
    next: &ApiVersionPolicyStatus,
    problem: Option<&Error>,
    topic: &str,
) {
    let was = ready_condition(&previous.conditions);
    match problem {
        Some(e) if was.is_none_or(|w| w.reason != e.category() || w.status == "True") => {
            ctx.publish(policy, EventType::Warning, e.category(), "Reconcile", e.to_string()).await;
        }
        None if was.is_some_and(|w| w.status == "False") => {
            let note = format!("The policy governs EventTopic {topic} again");
            ctx.publish(policy, EventType::Normal, "Recovered", "Reconcile", note).await;
        }
        Some(_) | None => {}
    }
    for version in &next.versions {
        let before = previous.versions.iter().find(|v| v.name == version.name).map(|v| v.state);
        let (reason, what) = match version.state {
            VersionState::Deprecated => ("VersionDeprecated", "is deprecated"),
            VersionState::Sunset => ("VersionSunset", "has reached its sunset"),
            VersionState::Current | VersionState::Supported => continue,
        };
        if before.is_some_and(|b| b != version.state) {
            let on = on_version(version);
            let note = format!("Version {} of EventTopic {topic} {what}; {on}", version.name);
            ctx.publish(policy, EventType::Warning, reason, "Reconcile", note).await;
        }
    }
}

fn on_version(version: &VersionStatus) -> String {
    if version.pinned.is_empty() {
        "no Subscription is on it".to_owned()
    } else {
        format!("Subscriptions still on it: {}", version.pinned.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_subscriptions_left_on_a_version_are_named() {
        let row = |pinned: &[&str]| VersionStatus {
            name: "v1".into(),
            state: VersionState::Sunset,
            subscriptions: i32::try_from(pinned.len()).unwrap_or_default(),
            pinned: pinned.iter().map(|s| (*s).to_owned()).collect(),
        };
        assert_eq!(on_version(&row(&[])), "no Subscription is on it");
        assert_eq!(on_version(&row(&["audit", "crm"])), "Subscriptions still on it: audit, crm");
    }
}
