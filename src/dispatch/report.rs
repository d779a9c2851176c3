//! What a dispatcher pod tells its Webhook: delivery counters, the last success and failure,
//! consecutive failures, its circuit state and whether the endpoint answered 410 Gone.
//!
//! Each pod server-side-applies only its own entry of `status.dispatchers` (a list keyed by
//! pod name) under its own field manager, so replicas never conflict and the operator's
//! summary fields stay the operator's. The pod's ServiceAccount may read its Webhook and
//! patch its status, nothing else. After a container restart in the same pod the counters
//! continue from the entry already there.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};
use kube::{
    Api,
    api::{Patch, PatchParams},
};
use serde_json::json;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::api::{Webhook, webhook::CircuitState as ReportedCircuit, webhook::DispatcherReport};

/// How often a changed report is written.
const INTERVAL: Duration = Duration::from_secs(3);
/// How often an unchanged report is written again.
const REFRESH: Duration = Duration::from_secs(30);

/// The running tally of one dispatcher process, shared by the delivery tasks.
#[derive(Default)]
pub struct Stats {
    report: Mutex<DispatcherReport>,
}

impl Stats {
    fn with(&self, f: impl FnOnce(&mut DispatcherReport)) {
        let mut report = self.report.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut report);
    }

    /// A 2xx answer.
    pub fn delivered(&self, code: u16) {
        self.with(|r| {
            r.delivered += 1;
            r.last_success_time = Some(now());
            r.last_status_code = Some(i32::from(code));
            r.consecutive_failures = 0;
            r.failing_since = None;
        });
    }

    /// A failed attempt: an HTTP status outside 2xx, or no answer (`None`).
    pub fn failed(&self, code: Option<u16>) {
        self.with(|r| {
            let at = now();
            r.failed += 1;
            r.last_status_code = code.map(i32::from);
            r.consecutive_failures += 1;
            if r.failing_since.is_none() {
                r.failing_since = Some(at.clone());
            }
            r.last_failure_time = Some(at);
        });
    }

    pub fn dead_lettered(&self) {
        self.with(|r| r.dead_lettered += 1);
    }

    pub fn circuit(&self, open: bool) {
        self.with(|r| r.circuit = if open { ReportedCircuit::Open } else { ReportedCircuit::Closed });
    }

    pub fn gone(&self) {
        self.with(|r| r.gone = true);
    }

    pub fn snapshot(&self) -> DispatcherReport {
        self.report.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// Continues from an earlier report of the same pod (a restarted container).
    fn resume(&self, earlier: &DispatcherReport) {
        self.with(|r| {
            r.delivered += earlier.delivered;
            r.failed += earlier.failed;
            r.dead_lettered += earlier.dead_lettered;
            if r.last_success_time.is_none() {
                r.last_success_time.clone_from(&earlier.last_success_time);
            }
            if r.last_failure_time.is_none() {
                r.last_failure_time.clone_from(&earlier.last_failure_time);
                r.failing_since.clone_from(&earlier.failing_since);
                r.consecutive_failures += earlier.consecutive_failures;
            }
            if r.last_status_code.is_none() {
                r.last_status_code = earlier.last_status_code;
            }
        });
    }
}

fn now() -> Time {
    Time(Timestamp::now())
}

/// Writes this pod's report to its Webhook's status.
pub struct Reporter {
    pub api: Api<Webhook>,
    pub webhook: String,
    pub pod: String,
    /// Checksum of the dispatch configuration this pod runs.
    pub config: String,
    pub stats: Arc<Stats>,
}

impl Reporter {
    /// Picks up the pod's earlier counts, then reports every few seconds while anything
    /// changed, and once more when stopping.
    pub async fn run(self, stop: CancellationToken) {
        // Writing before the earlier report is read would set this pod's counts back.
        loop {
            match self.api.get_opt(&self.webhook).await {
                Ok(webhook) => {
                    let earlier =
                        webhook.iter().flat_map(|w| &w.status).flat_map(|s| &s.dispatchers).find(|d| d.pod == self.pod);
                    if let Some(earlier) = earlier {
                        info!(delivered = earlier.delivered, "Continuing this pod's earlier report.");
                        self.stats.resume(earlier);
                    }
                    break;
                }
                Err(e) => warn!(error = %e, "Cannot read the Webhook yet; retrying."),
            }
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(INTERVAL) => {}
            }
        }
        let mut written: Option<DispatcherReport> = None;
        let mut last_write = std::time::Instant::now();
        loop {
            let stopping = tokio::select! {
                () = stop.cancelled() => true,
                () = tokio::time::sleep(INTERVAL) => false,
            };
            let mut report = self.stats.snapshot();
            report.pod.clone_from(&self.pod);
            report.config.clone_from(&self.config);
            // Unchanged reports are still rewritten now and then, so a report that someone
            // else overwrote or that never arrived is put right.
            if written.as_ref() != Some(&report) || last_write.elapsed() >= REFRESH {
                match self.write(&report).await {
                    Ok(()) => {
                        written = Some(report);
                        last_write = std::time::Instant::now();
                    }
                    Err(e) => warn!(error = %e, "Cannot report delivery status to the Webhook."),
                }
            }
            if stopping {
                return;
            }
        }
    }

    async fn write(&self, report: &DispatcherReport) -> Result<(), kube::Error> {
        let body = json!({
            "apiVersion": "sluice.dev/v1alpha1",
            "kind": "Webhook",
            "status": { "dispatchers": [report] },
        });
        let manager = format!("sluice-dispatcher-{}", self.pod);
        self.api.patch_status(&self.webhook, &PatchParams::apply(&manager).force(), &Patch::Apply(&body)).await?;
        debug!(delivered = report.delivered, failed = report.failed, "Reported.");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_success_ends_a_failure_streak() {
        let stats = Stats::default();
        stats.failed(Some(500));
        stats.failed(None);
        let r = stats.snapshot();
        assert_eq!((r.failed, r.consecutive_failures, r.last_status_code), (2, 2, None));
        assert!(r.failing_since.is_some() && r.last_success_time.is_none());
        stats.delivered(204);
        stats.dead_lettered();
        let r = stats.snapshot();
        assert_eq!((r.delivered, r.failed, r.dead_lettered, r.consecutive_failures), (1, 2, 1, 0));
        assert_eq!(r.last_status_code, Some(204));
        assert!(r.failing_since.is_none() && r.last_success_time.is_some());
    }

    #[test]
    fn a_restarted_container_continues_its_pods_counts() {
        let stats = Stats::default();
        stats.delivered(200);
        let earlier = DispatcherReport { delivered: 10, failed: 3, dead_lettered: 1, ..DispatcherReport::default() };
        stats.resume(&earlier);
        let r = stats.snapshot();
        assert_eq!((r.delivered, r.failed, r.dead_lettered), (11, 3, 1));
        assert_eq!(r.last_status_code, Some(200));
    }
}
