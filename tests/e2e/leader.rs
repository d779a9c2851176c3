//! Leader election: one replica reconciles, a standby takes over within the lease time when
//! the leader is killed, and a replica that is shut down releases the lease and exits 0.

use std::time::{Duration, Instant};

use kube::api::PostParams;
use serde_json::json;
use sluice::api::EventTopic;

use crate::{
    event_topic::topic,
    harness::{Controller, ControllerOpts, TestNamespace, admin, eventually, kubectl, serial},
};

const LEASE_SECONDS: u64 = 6;

fn holder(lease: &str) -> String {
    let (ok, out) = kubectl(&["get", "lease", lease, "-n", "sluice-system", "-o", "jsonpath={.spec.holderIdentity}"]);
    assert!(ok, "{out}");
    out.trim().to_owned()
}

#[tokio::test]
async fn a_standby_takes_over_within_the_lease_time() {
    let _serial = serial();
    let client = admin().await;
    let ns = TestNamespace::create(&client, "leader").await;
    let opts = ControllerOpts { lease_duration: LEASE_SECONDS, ..ControllerOpts::new("leader") };

    let mut first = Controller::start(&opts);
    first.wait_leader().await;
    let second = Controller::start(&opts);
    let standby = eventually("the second replica to stand by", Duration::from_secs(30), || second.ready()).await;
    assert!(standby.contains("standby"), "{standby}");
    assert_eq!(holder(&opts.lease), format!("e2e-{}", first.admin.port()));
    ns.api::<EventTopic>().create(&PostParams::default(), &topic("one", json!({}))).await.expect("create");
    ns.wait_ready("eventtopic/one");

    // SIGKILL: no release, the standby must wait for the lease to expire, then take over.
    first.kill();
    let killed = Instant::now();
    second.wait_leader().await;
    let took = killed.elapsed();
    assert!(took <= Duration::from_secs(LEASE_SECONDS + 5), "took {took:?} to take over a {LEASE_SECONDS}s lease");
    assert_eq!(holder(&opts.lease), format!("e2e-{}", second.admin.port()));
    ns.api::<EventTopic>().create(&PostParams::default(), &topic("two", json!({}))).await.expect("create");
    ns.wait_ready("eventtopic/two");

    // SIGTERM: a clean exit that releases the lease for the next replica.
    let mut second = second;
    let third = Controller::start(&opts);
    eventually("the third replica to stand by", Duration::from_secs(30), || third.ready()).await;
    assert_eq!(second.terminate(), Some(0), "graceful shutdown exits 0");
    assert!(second.log_text().contains("Released the leader lease."), "{}", second.log_text());
    third.wait_leader().await;
    assert_eq!(holder(&opts.lease), format!("e2e-{}", third.admin.port()));

    ns.teardown().await;
}
