//! A Subscription's event version: its pin (or the current version) resolved against the policy
//! governing its topic, that version's state by the clock, and what it means for delivery: a
//! pin nobody knows, a policy that is not Ready, or a version past its sunset under Block each
//! keep the Subscription's messages waiting in its queue until someone acts.

use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};
use kube::{Api, ResourceExt, api::ListParams};

use crate::{
    api::{
        ApiVersionPolicy, Subscription,
        api_version_policy::{Enforcement, VersionState},
        subscription::ResolvedVersion,
    },
    controller::{
        Context, Error,
        status::{readiness, ready_for_spec},
    },
    versions::lifecycle::{governing, next_change, resolve, state},
};

/// The condition saying whether a Subscription's version is past its sunset.
pub const VERSION_SUNSET: &str = "VersionSunset";

/// What a Subscription's version means for it now.
#[derive(Debug, Default)]
pub struct Assessed {
    /// The version it receives, and that version's state.
    pub resolved: Option<ResolvedVersion>,
    /// Why its deliveries cannot go on: they wait in the queue until this is fixed.
    pub problem: Option<Error>,
    /// When the version is past its sunset: what the VersionSunset condition says.
    pub sunset: Option<String>,
    /// Past its sunset under enforcement Block: nothing is delivered.
    pub blocked: bool,
    /// When its version next changes state.
    pub next_transition: Option<Timestamp>,
}

/// Reads the namespace's policies and assesses `sub`'s version, whose messages wait in `queue`.
pub async fn check(sub: &Subscription, ctx: &Context, namespace: &str, queue: &str) -> Result<Assessed, Error> {
    let policies = Api::<ApiVersionPolicy>::namespaced(ctx.client.clone(), namespace)
        .list(&ListParams::default())
        .await
        .map_err(Error::kube("list ApiVersionPolicies"))?;
    Ok(assess(&policies.items, sub, queue, Timestamp::now()))
}

/// Pure: `sub`'s version under the policy of its topic among `policies`, at `now`.
pub fn assess(policies: &[ApiVersionPolicy], sub: &Subscription, queue: &str, now: Timestamp) -> Assessed {
    let topic = &sub.spec.topic_ref.name;
    let policy = governing(policies, topic);
    let version = match resolve(policy, topic, sub.spec.event_version.as_deref()) {
        Ok(Some(version)) => version,
        Ok(None) => return Assessed::default(),
        Err(e) => return Assessed { problem: Some(e.into()), ..Assessed::default() },
    };
    // `resolve` found a version, so there is a policy.
    let Some(policy) = policy else { return Assessed::default() };
    let spec = &policy.spec;
    let current = state(spec, version, now);
    let resolved = ResolvedVersion { name: version.name.clone(), state: current, sunset_at: version.sunset_at.clone() };
    let next_transition = next_change(spec, version, now);
    let successor = version.successor.as_deref().map_or_else(String::new, |s| format!(" (its successor is {s})"));
    let mut assessed = Assessed { resolved: Some(resolved), next_transition, ..Assessed::default() };
    if current == VersionState::Sunset {
        let at = version.sunset_at.as_ref().map(|t| t.0.to_string()).unwrap_or_default();
        let message = match spec.enforcement {
            Enforcement::Block => format!(
                "version {} of EventTopic {topic} reached its sunset at {at} and ApiVersionPolicy {} blocks it: deliveries stopped, messages wait in queue {queue}; move spec.eventVersion to a newer version{successor} to receive them",
                version.name,
                policy.name_any()
            ),
            Enforcement::Warn => format!(
                "version {} of EventTopic {topic} reached its sunset at {at}; ApiVersionPolicy {} warns and deliveries go on: move spec.eventVersion to a newer version{successor}",
                version.name,
                policy.name_any()
            ),
        };
        if spec.enforcement == Enforcement::Block {
            assessed.problem = Some(Error::VersionSunset(message.clone()));
            assessed.blocked = true;
        }
        assessed.sunset = Some(message);
    }
    if !ready_for_spec(policy) && assessed.problem.is_none() {
        let why = readiness(policy);
        assessed.problem = Some(Error::VersionPolicyNotReady(format!(
            "ApiVersionPolicy {} is not Ready ({why}); events wait in queue {queue}, or keep the rendering they had, until it is",
            policy.name_any()
        )));
    }
    assessed
}

/// A version name and state, for Events.
pub fn describe(resolved: &ResolvedVersion) -> String {
    let sunset = resolved.sunset_at.as_ref().map_or_else(String::new, |t: &Time| format!(", sunset at {}", t.0));
    format!("version {} ({}{sunset})", resolved.name, resolved.state.as_str())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn policy(enforcement: &str, ready: bool) -> ApiVersionPolicy {
        let status = ready.then(|| {
            json!({"observedGeneration": 1, "conditions": [{"type": "Ready", "status": "True", "reason": "Ready", "message": "",
                   "lastTransitionTime": "2026-01-01T00:00:00Z", "observedGeneration": 1}]})
        });
        serde_json::from_value(json!({
            "apiVersion": "sluice.dev/v1alpha1", "kind": "ApiVersionPolicy",
            "metadata": {"name": "orders-versions", "namespace": "shop", "generation": 1},
            "spec": {"topicRef": {"name": "orders"}, "current": "v3", "enforcement": enforcement, "versions": [
                {"name": "v3"},
                {"name": "v2", "deprecatedAt": "2026-06-01T00:00:00Z", "successor": "v3"},
                {"name": "v1", "deprecatedAt": "2026-01-01T00:00:00Z", "sunsetAt": "2026-12-01T00:00:00Z", "successor": "v2"}
            ]},
            "status": status
        }))
        .expect("policy")
    }

    fn sub(pin: Option<&str>) -> Subscription {
        serde_json::from_value(json!({
            "apiVersion": "sluice.dev/v1alpha1", "kind": "Subscription", "metadata": {"name": "billing", "namespace": "shop"},
            "spec": {"topicRef": {"name": "orders"}, "eventVersion": pin}
        }))
        .expect("subscription")
    }

    fn at(rfc3339: &str) -> Timestamp {
        rfc3339.parse().expect("time")
    }

    #[test]
    fn an_unpinned_subscription_gets_the_current_version_and_none_without_a_policy() {
        let a = assess(&[policy("Block", true)], &sub(None), "q", at("2026-07-01T00:00:00Z"));
        let resolved = a.resolved.expect("resolved");
        assert_eq!((resolved.name.as_str(), resolved.state), ("v3", VersionState::Current));
        assert!(a.problem.is_none() && a.sunset.is_none() && a.next_transition.is_none());
        let none = assess(&[], &sub(None), "q", at("2026-07-01T00:00:00Z"));
        assert!(none.resolved.is_none() && none.problem.is_none());
    }

    #[test]
    fn a_pin_without_a_policy_or_unknown_to_it_waits_for_a_fix() {
        let no_policy = assess(&[], &sub(Some("v1")), "q", at("2026-07-01T00:00:00Z"));
        assert_eq!(no_policy.problem.map(|e| e.category()), Some("NoVersionPolicy"));
        let unknown = assess(&[policy("Block", true)], &sub(Some("v9")), "q", at("2026-07-01T00:00:00Z"));
        let e = unknown.problem.expect("problem");
        assert_eq!(e.category(), "UnknownVersion");
        assert!(e.to_string().ends_with("which lists v3, v2, v1"), "{e}");
    }

    #[test]
    fn a_deprecated_pin_is_delivered_and_looked_at_again_at_its_sunset() {
        let a = assess(&[policy("Block", true)], &sub(Some("v1")), "q", at("2026-07-01T00:00:00Z"));
        assert_eq!(a.resolved.as_ref().map(|r| r.state), Some(VersionState::Deprecated));
        assert!(a.problem.is_none());
        assert_eq!(a.next_transition, Some(at("2026-12-01T00:00:00Z")));
        let early = assess(&[policy("Block", true)], &sub(Some("v2")), "q", at("2026-05-01T00:00:00Z"));
        assert_eq!(early.resolved.map(|r| r.state), Some(VersionState::Supported));
        assert_eq!(early.next_transition, Some(at("2026-06-01T00:00:00Z")));
    }

    #[test]
    fn past_its_sunset_block_stops_delivery_and_warn_only_says_so() {
        let blocked =
            assess(&[policy("Block", true)], &sub(Some("v1")), "sluice.shop.billing", at("2026-12-01T00:00:00Z"));
        let e = blocked.problem.expect("blocked");
        assert_eq!(e.category(), "VersionSunset");
        assert!(e.to_string().contains("messages wait in queue sluice.shop.billing"), "{e}");
        assert!(e.to_string().contains("(its successor is v2)"), "{e}");
        assert!(blocked.blocked && blocked.next_transition.is_none());
        assert_eq!(blocked.sunset, Some(e.to_string()), "the VersionSunset condition says what Ready says");
        let warned = assess(&[policy("Warn", true)], &sub(Some("v1")), "q", at("2026-12-02T00:00:00Z"));
        assert!(warned.problem.is_none() && !warned.blocked, "Warn keeps delivering");
        assert!(warned.sunset.expect("condition").contains("deliveries go on"));
    }

    #[test]
    fn a_policy_not_ready_for_its_spec_holds_the_rendering_back() {
        let a = assess(&[policy("Block", false)], &sub(Some("v2")), "q", at("2026-07-01T00:00:00Z"));
        assert_eq!(a.problem.map(|e| e.category()), Some("VersionPolicyNotReady"));
        assert_eq!(a.resolved.map(|r| r.name), Some("v2".to_owned()), "the status still shows the version");
    }
}
