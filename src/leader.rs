//! Leader election on a coordination.k8s.io Lease (kube-lease-manager): only the holder runs
//! the controllers; a standby takes over when the holder stops renewing, and a holder that
//! shuts down releases the lease so the hand-over is immediate.

use std::{future::Future, sync::Arc, time::Duration};

use kube::Client;
use kube_lease_manager::{LeaseManager, LeaseManagerBuilder};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::telemetry::health::{Health, Role};

/// Where the lease lives and how long it is valid.
#[derive(Clone, Debug)]
pub struct LeaseSettings {
    pub namespace: String,
    pub name: String,
    pub identity: String,
    /// Seconds a lease stays valid without renewal; a standby takes over after this.
    pub duration_secs: u64,
}

/// Runs `work` whenever this process holds the lease, until `stop` fires.
pub async fn lead<F, Fut>(
    client: Client,
    settings: LeaseSettings,
    health: Arc<Health>,
    stop: CancellationToken,
    work: F,
) where
    F: Fn(CancellationToken) -> Fut,
    Fut: Future<Output = ()>,
{
    health.set_role(Role::Standby);
    let Some(manager) = build_manager(client, &settings, &stop).await else {
        return;
    };
    let (mut is_leader, task) = manager.watch().await;
    info!(lease = %settings.name, identity = %settings.identity, "Waiting for the leader lease.");
    while wait_for(&mut is_leader, true, &stop).await {
        info!(identity = %settings.identity, "Acquired the leader lease; starting controllers.");
        health.set_role(Role::Leader);
        let token = stop.child_token();
        let running = work(token.clone());
        tokio::pin!(running);
        tokio::select! {
            () = &mut running => break,
            lost = wait_for(&mut is_leader, false, &stop) => {
                token.cancel();
                running.await;
                if !lost {
                    break;
                }
                warn!("Lost the leader lease; controllers stopped.");
                health.set_role(Role::Standby);
            }
        }
    }
    // Dropping the receiver makes the manager release the lease before its task ends.
    drop(is_leader);
    match task.await {
        Ok(Ok(_)) => info!("Released the leader lease."),
        Ok(Err(e)) => warn!(error = %e, "Failed to release the leader lease."),
        Err(e) => warn!(error = %e, "Lease task failed."),
    }
}

/// Waits until the leadership flag equals `want`; false when stopping or the lease task ended.
async fn wait_for(rx: &mut watch::Receiver<bool>, want: bool, stop: &CancellationToken) -> bool {
    loop {
        if stop.is_cancelled() {
            return false;
        }
        if *rx.borrow_and_update() == want {
            return true;
        }
        tokio::select! {
            () = stop.cancelled() => return false,
            changed = rx.changed() => if changed.is_err() { return false },
        }
    }
}

async fn build_manager(client: Client, s: &LeaseSettings, stop: &CancellationToken) -> Option<LeaseManager> {
    let mut delay = Duration::from_secs(1);
    loop {
        let built = LeaseManagerBuilder::new(client.clone(), &s.name)
            .with_namespace(&s.namespace)
            .with_identity(&s.identity)
            .with_duration(s.duration_secs)
            .with_grace((s.duration_secs / 3).max(1))
            .with_field_manager(format!("sluice-controller/{}", s.identity))
            .build()
            .await;
        match built {
            Ok(m) => return Some(m),
            Err(e) => warn!(error = %e, retry_in = ?delay, "Cannot set up the leader lease."),
        }
        tokio::select! {
            () = stop.cancelled() => return None,
            () = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(Duration::from_secs(30));
    }
}
