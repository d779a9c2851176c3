//! Applying a desired topology: read what the broker has, create only what is missing, and
//! refuse (rather than silently replace) objects that exist with other settings. In steady
//! state this is reads only, so a resync never turns into a re-declare storm.

use serde_json::Value;

use std::time::Duration;

use super::{
    Broker, BrokerError, ManagementClient,
    management::{BindingInfo, ExchangeInfo, QueueInfo},
};
use crate::topology::{
    Binding, Exchange, Queue, Topology,
    subscription::{Policy, shared_policies},
};

/// How long a check of the shared policies stays good for the whole broker.
const SHARED_POLICY_CHECK: Duration = Duration::from_secs(60);

/// What a sync changed on the broker.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SyncReport {
    /// Objects that were missing and have been created, e.g. `exchange sluice.shop.orders`.
    pub created: Vec<String>,
    /// Objects that existed with other settings and were brought back to the spec.
    pub updated: Vec<String>,
    /// Objects the spec no longer asks for that were removed.
    pub removed: Vec<String>,
}

impl SyncReport {
    pub fn changed(&self) -> bool {
        !self.created.is_empty() || !self.updated.is_empty() || !self.removed.is_empty()
    }

    /// Adds what `other` changed to this report.
    pub fn extend(&mut self, other: Self) {
        self.created.extend(other.created);
        self.updated.extend(other.updated);
        self.removed.extend(other.removed);
    }
}

/// Makes the broker hold the policies every Sluice broker needs (the defaults of work,
/// dead-letter and unroutable queues), checking at most once a minute per broker. Called
/// before any queue is declared, so no queue runs without its limits.
pub async fn sync_shared_policies(broker: &Broker) -> Result<SyncReport, BrokerError> {
    let mut report = SyncReport::default();
    if broker.verified_within("shared-policies", SHARED_POLICY_CHECK) {
        return Ok(report);
    }
    for policy in &shared_policies() {
        sync_policy(&broker.management, policy, &mut report).await?;
    }
    broker.mark_verified("shared-policies");
    Ok(report)
}

/// Makes the broker hold `topology`, creating what is missing.
pub async fn sync_topology(client: &ManagementClient, topology: &Topology) -> Result<SyncReport, BrokerError> {
    let mut report = SyncReport::default();
    for exchange in &topology.exchanges {
        sync_exchange(client, exchange, &mut report).await?;
    }
    for queue in &topology.queues {
        sync_queue(client, queue, &mut report).await?;
    }
    for binding in &topology.bindings {
        sync_binding(client, binding, &mut report).await?;
    }
    Ok(report)
}

/// Deletes the exchanges and queues of `topology` (their bindings go with them). Missing
/// objects are fine: deletion is idempotent. An object with the right name but other
/// settings was never ours, so it is left alone.
pub async fn delete_topology(client: &ManagementClient, topology: &Topology) -> Result<(), BrokerError> {
    for exchange in topology.exchanges.iter().rev() {
        if let Some(have) = client.get_exchange(&exchange.name).await?
            && exchange_conflict(exchange, &have).is_none()
        {
            client.delete_exchange(&exchange.name).await?;
        }
    }
    for queue in &topology.queues {
        if let Some(have) = client.get_queue(&queue.name).await?
            && queue_conflict(queue, &have).is_none()
        {
            client.delete_queue(&queue.name).await?;
        }
    }
    Ok(())
}

async fn sync_exchange(client: &ManagementClient, want: &Exchange, report: &mut SyncReport) -> Result<(), BrokerError> {
    match client.get_exchange(&want.name).await? {
        None => {
            client.put_exchange(&want.name, want.kind, &want.arguments).await?;
            report.created.push(format!("exchange {}", want.name));
            Ok(())
        }
        Some(have) => exchange_conflict(want, &have)
            .map_or(Ok(()), |detail| Err(BrokerError::Conflict { object: format!("exchange {}", want.name), detail })),
    }
}

/// Describes how an existing exchange differs from the desired one, if it does.
pub fn exchange_conflict(want: &Exchange, have: &ExchangeInfo) -> Option<String> {
    if have.kind != want.kind {
        return Some(format!("type is {}, want {}", have.kind, want.kind));
    }
    if !have.durable || have.auto_delete || have.internal {
        return Some("it is not a plain durable exchange".to_owned());
    }
    if have.arguments != want.arguments {
        return Some(format!("arguments are {}, want {}", json(&have.arguments), json(&want.arguments)));
    }
    None
}

async fn sync_queue(client: &ManagementClient, want: &Queue, report: &mut SyncReport) -> Result<(), BrokerError> {
    match client.get_queue(&want.name).await? {
        None => {
            client.put_queue(&want.name, &want.arguments).await?;
            report.created.push(format!("queue {}", want.name));
            Ok(())
        }
        Some(have) => queue_conflict(want, &have)
            .map_or(Ok(()), |detail| Err(BrokerError::Conflict { object: format!("queue {}", want.name), detail })),
    }
}

/// Describes how an existing queue differs from the desired one, if it does. Arguments the
/// broker added are fine; the ones we set must match.
pub fn queue_conflict(want: &Queue, have: &QueueInfo) -> Option<String> {
    if !have.durable || have.auto_delete {
        return Some("it is not a durable queue".to_owned());
    }
    if want.arguments.iter().any(|(k, v)| have.arguments.get(k) != Some(v)) {
        return Some(format!("arguments are {}, want {}", json(&have.arguments), json(&want.arguments)));
    }
    None
}

async fn sync_binding(client: &ManagementClient, want: &Binding, report: &mut SyncReport) -> Result<(), BrokerError> {
    let existing = client.list_bindings(&want.source, &want.queue).await?;
    if !existing.iter().any(|have| binding_matches(want, have)) {
        client.create_binding(&want.source, &want.queue, &want.routing_key, &want.arguments).await?;
        report.created.push(format!("binding {} -> {} ({:?})", want.source, want.queue, want.routing_key));
    }
    Ok(())
}

fn binding_matches(want: &Binding, have: &BindingInfo) -> bool {
    have.routing_key == want.routing_key
        && have.arguments.len() == want.arguments.len()
        && want.arguments.iter().all(|(k, v)| have.arguments.get(k).and_then(Value::as_str) == Some(v))
}

/// Makes `want` exist with exactly its pattern, priority and definition.
pub async fn sync_policy(client: &ManagementClient, want: &Policy, report: &mut SyncReport) -> Result<(), BrokerError> {
    let put = || client.put_policy(&want.name, &want.pattern, want.priority, &want.definition);
    match client.get_policy(&want.name).await? {
        None => {
            put().await?;
            report.created.push(format!("policy {}", want.name));
        }
        Some(have)
            if have.pattern != want.pattern
                || have.priority != want.priority
                || have.definition != want.definition
                || have.apply_to != "queues" =>
        {
            put().await?;
            report.updated.push(format!("policy {}", want.name));
        }
        Some(_) => {}
    }
    Ok(())
}

/// Removes policy `name` if it exists.
pub async fn remove_policy(client: &ManagementClient, name: &str, report: &mut SyncReport) -> Result<(), BrokerError> {
    if client.get_policy(name).await?.is_some() {
        client.delete_policy(name).await?;
        report.removed.push(format!("policy {name}"));
    }
    Ok(())
}

/// Makes the bindings from `source` to `queue` exactly `want`: missing ones are created,
/// ones the spec no longer asks for are removed.
pub async fn sync_bindings(
    client: &ManagementClient,
    source: &str,
    queue: &str,
    want: &[Binding],
    report: &mut SyncReport,
) -> Result<(), BrokerError> {
    let have = client.list_bindings(source, queue).await?;
    for w in want {
        if !have.iter().any(|h| binding_matches(w, h)) {
            client.create_binding(source, queue, &w.routing_key, &w.arguments).await?;
            report.created.push(format!("binding {source} -> {queue} ({:?})", w.routing_key));
        }
    }
    for h in &have {
        if !want.iter().any(|w| binding_matches(w, h)) {
            client.delete_binding(source, queue, &h.properties_key).await?;
            report.removed.push(format!("binding {source} -> {queue} ({:?})", h.routing_key));
        }
    }
    Ok(())
}

fn json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topology::Arguments;

    fn info(kind: &str, arguments: Arguments) -> ExchangeInfo {
        ExchangeInfo { kind: kind.to_owned(), durable: true, auto_delete: false, internal: false, arguments }
    }

    #[test]
    fn an_identical_exchange_is_no_conflict() {
        let args = Arguments::from([("alternate-exchange".to_owned(), Value::from("ae"))]);
        let want = Exchange { name: "x".into(), kind: "topic", arguments: args.clone() };
        assert_eq!(exchange_conflict(&want, &info("topic", args)), None);
    }

    #[test]
    fn a_different_type_or_argument_is_a_conflict_that_says_what_differs() {
        let want = Exchange { name: "x".into(), kind: "topic", arguments: Arguments::new() };
        assert_eq!(exchange_conflict(&want, &info("fanout", Arguments::new())).unwrap(), "type is fanout, want topic");
        let args = Arguments::from([("alternate-exchange".to_owned(), Value::from("other"))]);
        assert_eq!(
            exchange_conflict(&want, &info("topic", args)).unwrap(),
            r#"arguments are {"alternate-exchange":"other"}, want {}"#
        );
    }
}
