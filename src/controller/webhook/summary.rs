//! Pure: from the dispatcher pods' reports to the Webhook's summary — totals that never go
//! back (a gone pod's counts are folded into `retired`), the newest success and failure, the
//! circuit state, and whether the Webhook must be disabled.

use std::time::Duration;

use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};

use crate::api::webhook::{CircuitState, DeliveryCounts, DispatcherReport, WebhookStatus};

/// Why a Webhook is disabled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DisableReason {
    /// The endpoint answered 410 Gone.
    Gone,
    /// Every attempt failed for `spec.autoDisableAfter`.
    FailingTooLong,
}

impl DisableReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Gone => "EndpointGone",
            Self::FailingTooLong => "FailingTooLong",
        }
    }
}

/// The reports of pods that no longer exist, by index (highest first), and the counters
/// they add to `retired`.
pub fn gone_pods(reports: &[DispatcherReport], live: &[String]) -> (Vec<usize>, DeliveryCounts) {
    let mut indexes = Vec::new();
    let mut folded = DeliveryCounts::default();
    for (i, r) in reports.iter().enumerate() {
        if !live.contains(&r.pod) {
            indexes.push(i);
            folded.delivered += r.delivered;
            folded.failed += r.failed;
            folded.dead_lettered += r.dead_lettered;
        }
    }
    indexes.reverse();
    (indexes, folded)
}

/// Fills the summary fields of `status` from its reports and retired counts.
pub fn summarize(status: &mut WebhookStatus) {
    let retired = status.retired.clone().unwrap_or_default();
    let reports = &status.dispatchers;
    let sum = |f: fn(&DispatcherReport) -> i64| reports.iter().map(f).sum::<i64>();
    status.delivered = Some(retired.delivered + sum(|r| r.delivered));
    status.failed = Some(retired.failed + sum(|r| r.failed));
    status.dead_lettered = Some(retired.dead_lettered + sum(|r| r.dead_lettered));
    let newest = |f: fn(&DispatcherReport) -> Option<&Time>| reports.iter().filter_map(f).max_by_key(|t| t.0).cloned();
    let last_success = newest(|r| r.last_success_time.as_ref());
    let last_failure = newest(|r| r.last_failure_time.as_ref());
    if last_success.is_some() {
        status.last_success_time = last_success;
    }
    if last_failure.is_some() {
        status.last_failure_time = last_failure;
    }
    // The status code of whichever pod attempted most recently; none when that attempt got no
    // response (a timeout, a refused connection).
    let latest =
        reports.iter().max_by_key(|r| r.last_success_time.iter().chain(&r.last_failure_time).map(|t| t.0).max());
    if let Some(latest) = latest {
        status.last_status_code = latest.last_status_code;
    }
    if !reports.is_empty() {
        status.consecutive_failures = Some(reports.iter().map(|r| r.consecutive_failures).sum());
    }
    status.circuit = Some(circuit(reports));
}

/// Open if any pod's circuit is open, half-open if any is probing, closed otherwise.
pub fn circuit(reports: &[DispatcherReport]) -> CircuitState {
    if reports.iter().any(|r| r.circuit == CircuitState::Open) {
        CircuitState::Open
    } else if reports.iter().any(|r| r.circuit == CircuitState::HalfOpen) {
        CircuitState::HalfOpen
    } else {
        CircuitState::Closed
    }
}

/// Whether the reports of pods running `config` (the enabled configuration) call for
/// disabling: a 410 Gone, or every such pod failing without a success for `after`.
pub fn disable(
    reports: &[DispatcherReport],
    config: &str,
    after: Duration,
    now: Timestamp,
) -> Option<(DisableReason, String)> {
    if let Some(r) = reports.iter().find(|r| r.config == config && r.gone) {
        return Some((DisableReason::Gone, format!("The endpoint answered 410 Gone (reported by pod {})", r.pod)));
    }
    let since = failing_since(reports, config)?;
    (now.duration_since(since).unsigned_abs() >= after).then(|| {
        (
            DisableReason::FailingTooLong,
            format!(
                "Every delivery attempt has failed since {since} (longer than spec.autoDisableAfter {}s)",
                after.as_secs()
            ),
        )
    })
}

/// How long until the pods running `config`, failing as they are now, reach `after` of
/// continuous failure: when to look again. `None` while any of them is not failing.
pub fn auto_disable_in(
    reports: &[DispatcherReport],
    config: &str,
    after: Duration,
    now: Timestamp,
) -> Option<Duration> {
    let failing = now.duration_since(failing_since(reports, config)?).unsigned_abs();
    Some(after.saturating_sub(failing))
}

/// Since when every pod running `config` has failed without a success in between; `None`
/// when there is no such pod or one of them is not failing.
fn failing_since(reports: &[DispatcherReport], config: &str) -> Option<Timestamp> {
    let current: Vec<&DispatcherReport> = reports.iter().filter(|r| r.config == config).collect();
    if current.is_empty() || current.iter().any(|r| r.failing_since.is_none()) {
        return None;
    }
    let since = current.iter().filter_map(|r| r.failing_since.as_ref()).map(|t| t.0).min()?;
    let succeeded_since = current.iter().filter_map(|r| r.last_success_time.as_ref()).any(|t| t.0 > since);
    (!succeeded_since).then_some(since)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> Time {
        Time(Timestamp::from_second(secs).expect("time"))
    }

    fn report(pod: &str, delivered: i64) -> DispatcherReport {
        DispatcherReport {
            pod: pod.into(),
            delivered,
            failed: 1,
            dead_lettered: 2,
            config: "c1".into(),
            ..Default::default()
        }
    }

    #[test]
    fn gone_pods_are_folded_into_retired() {
        let reports = vec![report("a", 10), report("b", 20), report("c", 30)];
        let (indexes, folded) = gone_pods(&reports, &["b".to_owned()]);
        assert_eq!(indexes, [2, 0], "highest index first, so removals do not shift each other");
        assert_eq!(folded, DeliveryCounts { delivered: 40, failed: 2, dead_lettered: 4 });
    }

    #[test]
    fn totals_add_retired_and_live_reports() {
        let mut status = WebhookStatus {
            retired: Some(DeliveryCounts { delivered: 100, failed: 5, dead_lettered: 1 }),
            dispatchers: vec![
                DispatcherReport { last_success_time: Some(at(100)), last_status_code: Some(200), ..report("a", 10) },
                DispatcherReport {
                    last_failure_time: Some(at(200)),
                    last_status_code: Some(503),
                    consecutive_failures: 3,
                    circuit: CircuitState::Open,
                    ..report("b", 20)
                },
            ],
            ..WebhookStatus::default()
        };
        summarize(&mut status);
        assert_eq!((status.delivered, status.failed, status.dead_lettered), (Some(130), Some(7), Some(5)));
        assert_eq!(status.last_success_time, Some(at(100)));
        assert_eq!(status.last_failure_time, Some(at(200)));
        assert_eq!(status.last_status_code, Some(503), "the most recent attempt's code");
        assert_eq!(status.consecutive_failures, Some(3));
        assert_eq!(status.circuit, Some(CircuitState::Open));
    }

    #[test]
    fn an_attempt_without_a_response_clears_the_last_status_code() {
        let mut status = WebhookStatus {
            last_status_code: Some(503),
            dispatchers: vec![DispatcherReport {
                last_failure_time: Some(at(300)),
                last_status_code: None,
                ..report("a", 0)
            }],
            ..WebhookStatus::default()
        };
        summarize(&mut status);
        assert_eq!(status.last_status_code, None, "the last attempt timed out: no code");
    }

    #[test]
    fn gone_disables_only_for_the_running_configuration() {
        let gone = DispatcherReport { gone: true, ..report("a", 0) };
        let now = Timestamp::from_second(1000).expect("now");
        let day = Duration::from_secs(86_400);
        assert_eq!(disable(std::slice::from_ref(&gone), "c1", day, now).map(|d| d.0), Some(DisableReason::Gone));
        assert_eq!(disable(&[gone], "c2", day, now), None, "a report from an older configuration");
    }

    #[test]
    fn failing_for_auto_disable_after_disables() {
        let failing = |pod: &str, since: i64| DispatcherReport { failing_since: Some(at(since)), ..report(pod, 0) };
        let after = Duration::from_secs(300);
        let now = |s| Timestamp::from_second(s).expect("now");
        let both = [failing("a", 1000), failing("b", 1100)];
        assert_eq!(disable(&both, "c1", after, now(1299)), None);
        assert_eq!(disable(&both, "c1", after, now(1300)).map(|d| d.0), Some(DisableReason::FailingTooLong));
        assert_eq!(
            auto_disable_in(&both, "c1", after, now(1200)),
            Some(Duration::from_secs(100)),
            "when to look again"
        );
        assert_eq!(auto_disable_in(&both, "c1", after, now(1400)), Some(Duration::ZERO));
        let one_healthy = [failing("a", 1000), report("b", 5)];
        assert_eq!(disable(&one_healthy, "c1", after, now(5000)), None, "a pod that is not failing");
        assert_eq!(auto_disable_in(&one_healthy, "c1", after, now(5000)), None);
        assert_eq!(disable(&[], "c1", after, now(5000)), None);
    }
}
