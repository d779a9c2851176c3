//! The EventTopic controller: validate the catalog → resolve the broker → build the desired
//! exchange topology → sync it (creating only what is missing) → report status and Events.
//! A finalizer guards the broker objects; `deletionPolicy` decides whether they go too.

use std::sync::Arc;

use kube::{
    Api, ResourceExt,
    runtime::{
        controller::Action,
        events::EventType,
        finalizer::{Event as Finalizer, finalizer},
    },
};
use tracing::{info, instrument};

use super::{
    Context, Error,
    conditions::{Outcome, READY},
    status, topic_broker,
};
use crate::{
    api::{DeletionPolicy, EventTopic, EventTopicStatus, event_topic::EventType as CatalogEntry},
    broker::{SyncReport, delete_topology, pool::ResolveError, sync::sync_shared_policies, sync_topology},
    topology::event_topic::{TopicTopology, desired},
};

pub const KIND: &str = "EventTopic";
const FINALIZER: &str = "sluice.dev/topology";

/// Reconciles one EventTopic.
#[instrument(skip_all, fields(namespace = topic.namespace().unwrap_or_default(), name = topic.name_any()))]
pub async fn reconcile(topic: Arc<EventTopic>, ctx: Arc<Context>) -> Result<Action, Error> {
    super::measured(KIND, topic.as_ref(), &ctx, run(topic.clone(), &ctx)).await
}

async fn run(topic: Arc<EventTopic>, ctx: &Context) -> Result<Action, Error> {
    let namespace = topic.namespace().ok_or(Error::NotNamespaced)?;
    let api = Api::<EventTopic>::namespaced(ctx.client.clone(), &namespace);
    status::mark_reconciling(&api, topic.as_ref()).await?;
    finalizer(&api, FINALIZER, topic, |event| async {
        match event {
            Finalizer::Apply(topic) => apply(&api, &topic, ctx).await,
            Finalizer::Cleanup(topic) => cleanup(&topic, ctx).await,
        }
    })
    .await
    .map_err(Error::from_finalizer)
}

/// What a successful sync produced.
struct Converged {
    topology: TopicTopology,
    broker: String,
    report: SyncReport,
}

async fn apply(api: &Api<EventTopic>, topic: &EventTopic, ctx: &Context) -> Result<Action, Error> {
    let result = converge(topic, ctx).await;
    let previous = status::current(topic);
    let outcome = match &result {
        Ok(c) => Outcome::Ready {
            reason: "Ready",
            message: format!("Exchange {} is declared on broker {}", c.topology.exchange, c.broker),
        },
        Err(e) => status::failure_outcome(e),
    };
    report_events(topic, ctx, &previous, &result, &outcome).await;

    let mut status = status::with_outcome(topic, &previous, &outcome);
    status.event_types = Some(i32::try_from(topic.spec.events.len()).unwrap_or(i32::MAX));
    if let Ok(c) = &result {
        status.exchange = Some(c.topology.exchange.clone());
        status.alternate_exchange = Some(c.topology.alternate_exchange.clone());
        status.unroutable_queue = Some(c.topology.unroutable_queue.clone());
        status.broker = Some(c.broker.clone());
    }
    status::apply_status(api, &topic.name_any(), Some(&previous), &status).await?;
    result.map(|_| ctx.resync())
}

async fn converge(topic: &EventTopic, ctx: &Context) -> Result<Converged, Error> {
    let namespace = topic.namespace().ok_or(Error::NotNamespaced)?;
    validate_catalog(&topic.spec.events)?;
    let key = topic_broker(topic);
    let broker = ctx.brokers.resolve(&key).await?;
    broker.ensure_up()?;
    let topology = desired(&namespace, &topic.name_any(), topic.spec.exchange_type);
    // The unroutable queue's policy (no delivery limit) before the queue itself.
    let mut report = sync_shared_policies(&broker).await?;
    report.extend(sync_topology(&broker.management, &topology.topology).await?);
    Ok(Converged { topology, broker: key.status_name().to_owned(), report })
}

/// Every schema in the catalog must compile; dispatchers validate payloads with them.
fn validate_catalog(events: &[CatalogEntry]) -> Result<(), Error> {
    for event in events {
        for version in &event.versions {
            if let Some(schema) = &version.schema
                && let Err(e) = jsonschema::validator_for(schema)
            {
                return Err(Error::InvalidSpec(format!(
                    "spec.events[{}].versions[{}].schema is not a valid JSON Schema: {e}",
                    event.event_type, version.name
                )));
            }
        }
    }
    Ok(())
}

/// Events: what was created or repaired, and failures when the Ready reason changes (the
/// recorder folds repeats into a series; this keeps a retry loop from adding new ones).
async fn report_events(
    topic: &EventTopic,
    ctx: &Context,
    previous: &EventTopicStatus,
    result: &Result<Converged, Error>,
    outcome: &Outcome,
) {
    let was = super::conditions::ready_condition(&previous.conditions);
    match result {
        Ok(c) if c.report.changed() && previous.exchange.is_some() => {
            ctx.metrics.drift_repaired(KIND, c.report.created.len());
            let note = format!("Re-created objects missing on the broker: {}", c.report.created.join(", "));
            info!(repaired = ?c.report.created, "Drift repaired.");
            ctx.publish(topic, EventType::Warning, "DriftRepaired", "Reconcile", note).await;
        }
        Ok(c) if c.report.changed() => {
            let note = format!(
                "Declared {} exchange {} with alternate exchange {} on broker {}",
                topic.spec.exchange_type.as_str(),
                c.topology.exchange,
                c.topology.alternate_exchange,
                c.broker
            );
            ctx.publish(topic, EventType::Normal, "Created", "Reconcile", note).await;
        }
        Ok(c) if was.is_some_and(|w| w.type_ == READY && w.status == "False") => {
            let note = format!("Exchange {} is available again", c.topology.exchange);
            ctx.publish(topic, EventType::Normal, "Recovered", "Reconcile", note).await;
        }
        Ok(_) => {}
        Err(e) => {
            if was.is_none_or(|w| w.reason != outcome.reason() || w.status == "True") {
                ctx.publish(topic, EventType::Warning, e.category(), "Reconcile", e.to_string()).await;
            }
        }
    }
}

async fn cleanup(topic: &EventTopic, ctx: &Context) -> Result<Action, Error> {
    let namespace = topic.namespace().ok_or(Error::NotNamespaced)?;
    let topology = desired(&namespace, &topic.name_any(), topic.spec.exchange_type);
    if topic.spec.deletion_policy == DeletionPolicy::Retain {
        let note = format!("Kept exchange {} on the broker (deletionPolicy Retain)", topology.exchange);
        ctx.publish(topic, EventType::Normal, "Retained", "Delete", note).await;
        return Ok(Action::await_change());
    }
    let broker = match ctx.brokers.resolve(&topic_broker(topic)).await {
        Ok(b) => b,
        // Without credentials nothing can be deleted; holding the object forever would only
        // block namespace deletion, so say so and let it go.
        Err(e @ ResolveError::SecretMissing { .. }) => {
            let note = format!("Left exchange {} on the broker: {e}", topology.exchange);
            ctx.publish(topic, EventType::Warning, "BrokerSecretMissing", "Delete", note).await;
            return Ok(Action::await_change());
        }
        Err(e) => return Err(e.into()),
    };
    let deleted = async {
        broker.ensure_up()?;
        delete_topology(&broker.management, &topology.topology).await?;
        Ok::<_, Error>(())
    }
    .await;
    if let Err(e) = deleted {
        ctx.publish(topic, EventType::Warning, e.category(), "Delete", format!("Cannot delete exchange yet: {e}"))
            .await;
        return Err(e);
    }
    let note = format!("Deleted exchange {}, its alternate exchange and unroutable queue", topology.exchange);
    ctx.publish(topic, EventType::Normal, "Deleted", "Delete", note).await;
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::event_topic::EventVersionSchema;

    fn entry(schema: serde_json::Value) -> CatalogEntry {
        CatalogEntry {
            event_type: "order.created".into(),
            description: None,
            versions: vec![EventVersionSchema { name: "v1".into(), schema: Some(schema), examples: Vec::new() }],
        }
    }

    #[test]
    fn a_catalog_with_valid_schemas_passes() {
        let schema = serde_json::json!({"type": "object", "required": ["id"]});
        assert!(validate_catalog(&[entry(schema)]).is_ok());
    }

    #[test]
    fn an_invalid_schema_names_the_event_and_version() {
        let err = validate_catalog(&[entry(serde_json::json!({"type": "no-such-type"}))]).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("invalid spec: spec.events[order.created].versions[v1].schema is not a valid JSON Schema")
        );
        assert!(err.awaits_change());
    }
}
