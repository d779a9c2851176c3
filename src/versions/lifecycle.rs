//! Versions over time: each version's state by the clock, when the next one changes, which
//! policy governs a topic, the version a Subscription's pin resolves to, and the migration
//! board (per version, its state and the Subscriptions on it).

use std::cmp::Ordering;

use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;

use crate::api::{
    ApiVersionPolicy, ApiVersionPolicySpec,
    api_version_policy::{ApiVersion, VersionState, VersionStatus},
};

/// `version`'s state at `now`: Current when the policy says so, then Sunset, Deprecated or
/// Supported by its dates.
pub fn state(policy: &ApiVersionPolicySpec, version: &ApiVersion, now: Timestamp) -> VersionState {
    let passed = |at: Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>| at.is_some_and(|t| t.0 <= now);
    if version.name == policy.current {
        VersionState::Current
    } else if passed(version.sunset_at.as_ref()) {
        VersionState::Sunset
    } else if passed(version.deprecated_at.as_ref()) {
        VersionState::Deprecated
    } else {
        VersionState::Supported
    }
}

/// The next instant after `now` at which a version of `policy` changes state.
pub fn next_transition(policy: &ApiVersionPolicySpec, now: Timestamp) -> Option<Timestamp> {
    policy.versions.iter().filter_map(|v| next_change(policy, v, now)).min()
}

/// The next instant after `now` at which `version` changes state (the current one never does).
pub fn next_change(policy: &ApiVersionPolicySpec, version: &ApiVersion, now: Timestamp) -> Option<Timestamp> {
    if version.name == policy.current {
        return None;
    }
    [version.deprecated_at.as_ref(), version.sunset_at.as_ref()]
        .into_iter()
        .flatten()
        .map(|t| t.0)
        .filter(|t| *t > now)
        .min()
}

/// The policy that governs `topic` among `policies` (one namespace's): the oldest naming it.
/// Creation times have a resolution of one second; within the same second the one that already
/// governs keeps governing, and then names decide. Every other policy naming the topic is in
/// conflict with it.
pub fn governing<'a>(
    policies: impl IntoIterator<Item = &'a ApiVersionPolicy>,
    topic: &str,
) -> Option<&'a ApiVersionPolicy> {
    policies.into_iter().filter(|p| p.spec.topic_ref.name == topic).min_by(|a, b| seniority(a, b))
}

fn seniority(a: &ApiVersionPolicy, b: &ApiVersionPolicy) -> Ordering {
    let created = |p: &ApiVersionPolicy| p.metadata.creation_timestamp.as_ref().map(|t| t.0);
    // Not yet created (no timestamp) sorts last.
    match (created(a), created(b)) {
        (Some(x), Some(y)) => x.cmp(&y),
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => Ordering::Equal,
    }
    .then_with(|| governs(b).cmp(&governs(a)))
    .then_with(|| a.name_any().cmp(&b.name_any()))
}

/// Whether a policy's status says it governs its topic: it has been judged, and not in conflict.
fn governs(policy: &ApiVersionPolicy) -> bool {
    let ready = policy.status.as_ref().and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"));
    ready.is_some_and(|c| c.reason != "Conflict" && c.reason != "Reconciling")
}

/// Why a Subscription's pin does not resolve.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PinError {
    #[error(
        "spec.eventVersion is {pin}, but topic {topic} has no ApiVersionPolicy: create one that lists {pin}, or remove spec.eventVersion"
    )]
    NoVersionPolicy { pin: String, topic: String },
    #[error("spec.eventVersion {pin} is not a version of ApiVersionPolicy {policy}, which lists {}", .known.join(", "))]
    UnknownVersion { pin: String, policy: String, known: Vec<String> },
}

/// The version a Subscription on `topic` pinned to `pin` receives under `policy`: the pin, or
/// the current version without one; `None` when there is no policy and no pin.
pub fn resolve<'a>(
    policy: Option<&'a ApiVersionPolicy>,
    topic: &str,
    pin: Option<&str>,
) -> Result<Option<&'a ApiVersion>, PinError> {
    let Some(policy) = policy else {
        return match pin {
            Some(pin) => Err(PinError::NoVersionPolicy { pin: pin.to_owned(), topic: topic.to_owned() }),
            None => Ok(None),
        };
    };
    let name = pin.unwrap_or(&policy.spec.current);
    policy.spec.versions.iter().find(|v| v.name == name).map(Some).ok_or_else(|| PinError::UnknownVersion {
        pin: name.to_owned(),
        policy: policy.name_any(),
        known: policy.spec.versions.iter().map(|v| v.name.clone()).collect(),
    })
}

/// The migration board of a policy.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Board {
    pub versions: Vec<VersionStatus>,
    /// Subscriptions on Deprecated versions.
    pub deprecated_in_use: i32,
    /// Subscriptions on Sunset versions.
    pub sunset_in_use: i32,
}

/// Per version of `policy` at `now`: its state, how many of `subscriptions` (name and pin)
/// receive it, and the names of those on a deprecated or sunset version. Pins the policy does
/// not list count nowhere (those Subscriptions say so themselves).
pub fn board<'a>(
    policy: &ApiVersionPolicySpec,
    subscriptions: impl IntoIterator<Item = (&'a str, Option<&'a str>)>,
    now: Timestamp,
) -> Board {
    let mut versions: Vec<VersionStatus> = policy
        .versions
        .iter()
        .map(|v| VersionStatus {
            name: v.name.clone(),
            state: state(policy, v, now),
            subscriptions: 0,
            pinned: Vec::new(),
        })
        .collect();
    for (name, pin) in subscriptions {
        let on = pin.unwrap_or(&policy.current);
        if let Some(v) = versions.iter_mut().find(|v| v.name == on) {
            v.subscriptions += 1;
            if matches!(v.state, VersionState::Deprecated | VersionState::Sunset) {
                v.pinned.push(name.to_owned());
            }
        }
    }
    let in_state = |s: VersionState| versions.iter().filter(|v| v.state == s).map(|v| v.subscriptions).sum();
    let (deprecated_in_use, sunset_in_use) = (in_state(VersionState::Deprecated), in_state(VersionState::Sunset));
    for v in &mut versions {
        v.pinned.sort();
    }
    Board { versions, deprecated_in_use, sunset_in_use }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use serde_json::json;

    use super::*;
    use crate::api::api_version_policy::VersionState::{Current, Deprecated, Sunset, Supported};

    fn at(rfc3339: &str) -> Timestamp {
        rfc3339.parse().expect("time")
    }

    fn policy(name: &str, created: Option<&str>) -> ApiVersionPolicy {
        let mut p: ApiVersionPolicy = serde_json::from_value(json!({
            "apiVersion": "sluice.dev/v1alpha1", "kind": "ApiVersionPolicy", "metadata": {"name": name, "namespace": "shop"},
            "spec": {"topicRef": {"name": "orders"}, "current": "v3", "versions": [
                {"name": "v3"},
                {"name": "v2", "deprecatedAt": "2026-06-01T00:00:00Z", "successor": "v3"},
                {"name": "v1", "deprecatedAt": "2026-01-01T00:00:00Z", "sunsetAt": "2026-12-01T00:00:00Z", "successor": "v2"},
                {"name": "v0", "deprecatedAt": "2027-01-01T00:00:00Z", "successor": "v1"}
            ]}
        }))
        .expect("policy");
        p.metadata.creation_timestamp = created.map(|c| Time(at(c)));
        p
    }

    #[test]
    fn states_follow_the_clock() {
        let p = policy("versions", None).spec;
        let states = |now| p.versions.iter().map(|v| state(&p, v, at(now))).collect::<Vec<_>>();
        assert_eq!(states("2025-12-31T23:59:59Z"), [Current, Supported, Supported, Supported]);
        assert_eq!(states("2026-01-01T00:00:00Z"), [Current, Supported, Deprecated, Supported]);
        assert_eq!(states("2026-06-01T00:00:00Z"), [Current, Deprecated, Deprecated, Supported]);
        assert_eq!(states("2026-12-01T00:00:00Z"), [Current, Deprecated, Sunset, Supported]);
        assert_eq!(states("2027-01-01T00:00:00Z"), [Current, Deprecated, Sunset, Deprecated]);
    }

    #[test]
    fn the_next_transition_is_the_nearest_date_still_ahead() {
        let p = policy("versions", None).spec;
        assert_eq!(next_transition(&p, at("2025-01-01T00:00:00Z")), Some(at("2026-01-01T00:00:00Z")));
        assert_eq!(
            next_transition(&p, at("2026-01-01T00:00:00Z")),
            Some(at("2026-06-01T00:00:00Z")),
            "strictly after now"
        );
        assert_eq!(next_transition(&p, at("2026-07-01T00:00:00Z")), Some(at("2026-12-01T00:00:00Z")));
        assert_eq!(next_transition(&p, at("2027-01-01T00:00:00Z")), None);
    }

    #[test]
    fn the_oldest_policy_of_a_topic_governs_it() {
        let older = policy("b-versions", Some("2026-01-01T00:00:00Z"));
        let newer = policy("a-versions", Some("2026-02-01T00:00:00Z"));
        let twin = policy("c-versions", Some("2026-01-01T00:00:00Z"));
        let all = [newer.clone(), twin.clone(), older.clone()];
        assert_eq!(
            governing(&all, "orders").map(ResourceExt::name_any).as_deref(),
            Some("b-versions"),
            "by age, then name"
        );
        assert!(governing(&all, "payments").is_none());
        let mut other = older;
        other.spec.topic_ref.name = "payments".into();
        assert_eq!(
            governing(&[newer, other, twin], "orders").map(ResourceExt::name_any).as_deref(),
            Some("c-versions")
        );
    }

    #[test]
    fn pins_resolve_or_say_what_is_known() {
        let p = policy("orders-versions", None);
        assert_eq!(resolve(Some(&p), "orders", None).expect("current").map(|v| v.name.as_str()), Some("v3"));
        assert_eq!(resolve(Some(&p), "orders", Some("v1")).expect("pinned").map(|v| v.name.as_str()), Some("v1"));
        assert_eq!(
            resolve(Some(&p), "orders", Some("v9")).unwrap_err().to_string(),
            "spec.eventVersion v9 is not a version of ApiVersionPolicy orders-versions, which lists v3, v2, v1, v0"
        );
        assert_eq!(resolve(None, "orders", None), Ok(None));
        assert_eq!(
            resolve(None, "orders", Some("v1")).unwrap_err().to_string(),
            "spec.eventVersion is v1, but topic orders has no ApiVersionPolicy: create one that lists v1, or remove spec.eventVersion"
        );
    }

    #[test]
    fn the_board_counts_subscriptions_per_version_and_names_those_on_old_ones() {
        let p = policy("versions", None).spec;
        let subs = [
            ("billing", None),
            ("audit", Some("v3")),
            ("legacy-b", Some("v1")),
            ("legacy-a", Some("v1")),
            ("crm", Some("v2")),
            ("lost", Some("v9")),
        ];
        let board = board(&p, subs, at("2026-12-02T00:00:00Z"));
        let rows: Vec<_> =
            board.versions.iter().map(|v| (v.name.as_str(), v.state, v.subscriptions, v.pinned.clone())).collect();
        assert_eq!(
            rows,
            [
                ("v3", Current, 2, vec![]),
                ("v2", Deprecated, 1, vec!["crm".to_owned()]),
                ("v1", Sunset, 2, vec!["legacy-a".to_owned(), "legacy-b".to_owned()]),
                ("v0", Supported, 0, vec![])
            ]
        );
        assert_eq!((board.deprecated_in_use, board.sunset_in_use), (1, 2));
    }
}
