//! The Subscription controller: dereference the topic (and webhook) → build the desired
//! queues, ladder, bindings and policies → apply them to the topic's broker → redrive the
//! dead-letter queue when asked → report status, Events and metrics. A finalizer guards the
//! queues; `deletionPolicy` (Retain by default) decides whether they go too.

mod apply;
mod version;

use std::sync::Arc;

use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};
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
    conditions::{Conditions, Outcome, ready_condition},
    status, topic_broker,
};
use crate::{
    api::{
        DeletionPolicy, EventTopic, Subscription, SubscriptionStatus, Webhook, api_version_policy::VersionState,
        subscription::RedriveStatus,
    },
    broker::{
        Broker, BrokerKey,
        mover::{Headers, move_messages},
        pool::ResolveError,
    },
    topology::{
        Binding,
        subscription::{SubscriptionTopology, TopicBinding, desired},
    },
};

pub const KIND: &str = "Subscription";
const FINALIZER: &str = "sluice.dev/queues";
/// Setting this annotation to a new value moves the dead-letter queue back to the work queue.
pub const REDRIVE_ANNOTATION: &str = "sluice.dev/redrive";

/// Reconciles one Subscription.
#[instrument(skip_all, fields(namespace = sub.namespace().unwrap_or_default(), name = sub.name_any()))]
pub async fn reconcile(sub: Arc<Subscription>, ctx: Arc<Context>) -> Result<Action, Error> {
    super::measured(KIND, sub.as_ref(), &ctx, run(sub.clone(), &ctx)).await
}

async fn run(sub: Arc<Subscription>, ctx: &Context) -> Result<Action, Error> {
    let namespace = sub.namespace().ok_or(Error::NotNamespaced)?;
    let api = Api::<Subscription>::namespaced(ctx.client.clone(), &namespace);
    status::mark_reconciling(&api, sub.as_ref()).await?;
    finalizer(&api, FINALIZER, sub, |event| async {
        match event {
            Finalizer::Apply(sub) => reconcile_live(&api, &sub, ctx).await,
            Finalizer::Cleanup(sub) => cleanup(&sub, ctx).await,
        }
    })
    .await
    .map_err(Error::from_finalizer)
}

/// What a successful apply produced.
struct Converged {
    topology: SubscriptionTopology,
    broker: String,
    applied: apply::Applied,
    redrive: Option<RedriveStatus>,
    /// Set when the queues are in place but deliveries cannot start yet.
    waiting: Option<Error>,
    /// The event version it receives.
    version: version::Assessed,
}

async fn reconcile_live(api: &Api<Subscription>, sub: &Subscription, ctx: &Context) -> Result<Action, Error> {
    let result = converge(sub, ctx).await;
    let previous = status::current(sub);
    let outcome = match &result {
        Ok(Converged { waiting: None, topology, broker, .. }) => Outcome::Ready {
            reason: "Ready",
            message: format!(
                "Queue {} is bound to {} on broker {broker}",
                topology.work_queue.name,
                exchange(topology)
            ),
        },
        Ok(Converged { waiting: Some(e), .. }) | Err(e) => status::failure_outcome(e),
    };
    report_events(sub, ctx, &previous, &result, &outcome).await;

    let mut next = status::with_outcome(sub, &previous, &outcome);
    if let Ok(c) = &result {
        next.version.clone_from(&c.version.resolved);
        let mut conditions = Conditions::from_status(&next.conditions, sub.metadata.generation, Timestamp::now());
        match &c.version.sunset {
            Some(message) => {
                conditions.set(version::VERSION_SUNSET, true, "VersionSunset", message);
            }
            None if c.version.resolved.is_some() || conditions.get(version::VERSION_SUNSET).is_some() => {
                conditions.set(version::VERSION_SUNSET, false, "NotSunset", "");
            }
            None => {}
        }
        next.conditions = conditions.into_vec();
        let t = &c.topology;
        next.queue = Some(t.work_queue.name.clone());
        next.dead_letter_queue = Some(t.dead_letter_queue.name.clone());
        next.retry_queues = t.retry_queues.iter().map(|q| q.name.clone()).collect();
        next.bindings = t.bindings.iter().map(describe).collect();
        next.exchange = Some(exchange(t).to_owned());
        next.broker = Some(c.broker.clone());
        next.messages = Some(c.applied.counts.clone());
        if c.redrive.is_some() {
            next.redrive.clone_from(&c.redrive);
        }
        let counts = &c.applied.counts;
        let namespace = sub.namespace().unwrap_or_default();
        ctx.metrics.set_queue_messages(
            &namespace,
            &sub.name_any(),
            counts.ready + counts.unacknowledged,
            counts.retrying,
            counts.dead_lettered,
        );
    }
    status::apply_status(api, &sub.name_any(), Some(&previous), &next).await?;
    // A version's state follows the clock: look again right after it changes.
    result.map(|c| ctx.resync_or_at(c.version.next_transition))
}

async fn converge(sub: &Subscription, ctx: &Context) -> Result<Converged, Error> {
    let namespace = sub.namespace().ok_or(Error::NotNamespaced)?;
    let name = sub.name_any();
    let topic = ready_topic(sub, ctx, &namespace).await?;
    let binding = TopicBinding {
        exchange: topic.status.as_ref().and_then(|s| s.exchange.clone()).unwrap_or_default(),
        kind: topic.spec.exchange_type,
    };
    let topology = desired(&namespace, &name, &sub.spec, &binding)?;
    let key = topic_broker(&topic);
    let broker = ctx.brokers.resolve(&key).await?;
    broker.ensure_up()?;
    let mut applied = apply::apply(&broker, &namespace, &name, &topology, &leftovers(sub)).await?;
    let redrive = redrive(sub, &broker, &topology).await?;
    if redrive.is_some() || !applied.moved.is_empty() {
        // The counts were read before the moves; status must show where the messages are now.
        applied.counts = apply::recount(&broker, &topology, &applied.counts).await?;
    }
    let mut version = version::check(sub, ctx, &namespace, &topology.work_queue.name).await?;
    let waiting = match version.problem.take() {
        Some(problem) => Some(problem),
        None => missing_webhook(sub, ctx, &namespace).await?,
    };
    Ok(Converged { topology, broker: key.status_name().to_owned(), applied, redrive, waiting, version })
}

/// After a successful apply of this very spec, status names every retry queue there is;
/// otherwise an earlier attempt may have left any step behind.
fn leftovers(sub: &Subscription) -> apply::Leftovers {
    let status = sub.status.as_ref();
    let settled = status::ready_for_spec(sub);
    match status {
        Some(s) if settled && s.queue.is_some() => apply::Leftovers::Recorded(s.retry_queues.clone()),
        _ => apply::Leftovers::AnyStep,
    }
}

/// The referenced topic, if it exists and is Ready for its current generation.
async fn ready_topic(sub: &Subscription, ctx: &Context, namespace: &str) -> Result<EventTopic, Error> {
    let name = &sub.spec.topic_ref.name;
    let topics = Api::<EventTopic>::namespaced(ctx.client.clone(), namespace);
    let topic = topics.get_opt(name).await.map_err(Error::kube("read the EventTopic"))?.ok_or_else(|| {
        Error::TopicNotReady(format!(
            "EventTopic {namespace}/{name} does not exist; the queues are created once it is Ready"
        ))
    })?;
    if !status::ready_for_spec(&topic) || topic.status.as_ref().and_then(|s| s.exchange.as_ref()).is_none() {
        let why = status::readiness(&topic);
        return Err(Error::TopicNotReady(format!("EventTopic {namespace}/{name} is not Ready ({why})")));
    }
    Ok(topic)
}

/// Why the Subscription's Webhook cannot deliver it: there is none, or it delivers from
/// another broker than this Subscription's topic lives on.
async fn missing_webhook(sub: &Subscription, ctx: &Context, namespace: &str) -> Result<Option<Error>, Error> {
    let Some(reference) = &sub.spec.webhook_ref else { return Ok(None) };
    let webhooks = Api::<Webhook>::namespaced(ctx.client.clone(), namespace);
    let found = webhooks.get_opt(&reference.name).await.map_err(Error::kube("read the Webhook"))?;
    let queue = crate::topology::names::work_queue(namespace, &sub.name_any());
    Ok(match found {
        None => Some(Error::WebhookNotFound(format!(
            "Webhook {namespace}/{} does not exist; events wait in queue {queue} until it does",
            reference.name
        ))),
        Some(w) if w.status.as_ref().is_some_and(|s| s.broker_conflicts.contains(&sub.name_any())) => {
            Some(Error::WebhookOnOtherBroker(format!(
                "Webhook {namespace}/{} delivers its other Subscriptions from another broker than topic {}'s, and one dispatcher connects to one broker: events wait in queue {queue}; point spec.webhookRef at a Webhook for this broker",
                reference.name, sub.spec.topic_ref.name
            )))
        }
        Some(_) => None,
    })
}

/// Moves the dead-letter queue back to the work queue when `sluice.dev/redrive` has a value
/// not handled yet.
async fn redrive(
    sub: &Subscription,
    broker: &Broker,
    t: &SubscriptionTopology,
) -> Result<Option<RedriveStatus>, Error> {
    let Some(value) = sub.annotations().get(REDRIVE_ANNOTATION).filter(|v| !v.is_empty()) else { return Ok(None) };
    let handled = sub.status.as_ref().and_then(|s| s.redrive.as_ref()).map(|r| r.value.as_str());
    if handled == Some(value.as_str()) {
        return Ok(None);
    }
    let moved = move_messages(broker, &t.dead_letter_queue.name, &t.work_queue.name, Headers::FreshStart).await?;
    info!(moved, value, "Dead-letter queue redriven.");
    Ok(Some(RedriveStatus {
        value: value.clone(),
        moved: i64::try_from(moved).unwrap_or(i64::MAX),
        time: Time(Timestamp::now()),
    }))
}

fn exchange(t: &SubscriptionTopology) -> &str {
    t.bindings.first().map_or("", |b| b.source.as_str())
}

/// How a binding reads in status: the routing key, the header match, or every event.
fn describe(b: &Binding) -> String {
    if b.arguments.is_empty() {
        return if b.routing_key.is_empty() { "(every event)".to_owned() } else { b.routing_key.clone() };
    }
    b.arguments.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",")
}

/// Events: creation, drift repairs, live changes, redrives, and failures when the Ready
/// reason changes.
async fn report_events(
    sub: &Subscription,
    ctx: &Context,
    previous: &SubscriptionStatus,
    result: &Result<Converged, Error>,
    outcome: &Outcome,
) {
    let was = ready_condition(&previous.conditions);
    if let Ok(c) = result {
        report_changes(sub, ctx, previous, c).await;
        report_version(sub, ctx, previous, &c.version).await;
        if c.waiting.is_none() && was.is_some_and(|w| w.status == "False") {
            let note = format!("Queue {} is bound and ready again", c.topology.work_queue.name);
            ctx.publish(sub, EventType::Normal, "Recovered", "Reconcile", note).await;
        }
    }
    let failure = match result {
        Ok(Converged { waiting: Some(e), .. }) | Err(e) => Some(e),
        Ok(_) => None,
    };
    if let Some(e) = failure
        && was.is_none_or(|w| w.reason != outcome.reason() || w.status == "True")
    {
        ctx.publish(sub, EventType::Warning, e.category(), "Reconcile", e.to_string()).await;
    }
}

/// What changed on the broker: first creation, a repair of drift (the spec did not change
/// but the broker did), or a live change of the spec; and redrives.
async fn report_changes(sub: &Subscription, ctx: &Context, previous: &SubscriptionStatus, c: &Converged) {
    let report = &c.applied.report;
    let was_ready = ready_condition(&previous.conditions).is_some_and(|w| w.status == "True");
    let unchanged_spec = previous.observed_generation == sub.metadata.generation;
    if !report.created.is_empty() && previous.queue.is_none() {
        let note = format!(
            "Declared queue {} with {} retry steps and dead-letter queue {} on broker {}",
            c.topology.work_queue.name,
            c.topology.retry_queues.len(),
            c.topology.dead_letter_queue.name,
            c.broker
        );
        ctx.publish(sub, EventType::Normal, "Created", "Reconcile", note).await;
    } else if was_ready && unchanged_spec && (!report.created.is_empty() || !report.updated.is_empty()) {
        let repaired: Vec<&String> = report.created.iter().chain(&report.updated).collect();
        ctx.metrics.drift_repaired(KIND, repaired.len());
        info!(repaired = ?repaired, "Drift repaired.");
        let note = format!("Restored objects changed or missing on the broker: {}", join(&repaired));
        ctx.publish(sub, EventType::Warning, "DriftRepaired", "Reconcile", note).await;
    } else if report.changed() {
        let changes: Vec<&String> = report.created.iter().chain(&report.updated).chain(&report.removed).collect();
        let moves = c
            .applied
            .moved
            .iter()
            .map(|(queue, n)| format!("; moved {n} waiting messages from {queue} back to the work queue"));
        let note = format!("Applied: {}{}", join(&changes), moves.collect::<String>());
        ctx.publish(sub, EventType::Normal, "Updated", "Reconcile", note).await;
    }
    if let Some(r) = &c.redrive {
        let note = format!(
            "Moved {} messages from {} back to {} ({REDRIVE_ANNOTATION}={})",
            r.moved, c.topology.dead_letter_queue.name, c.topology.work_queue.name, r.value
        );
        ctx.publish(sub, EventType::Normal, "Redriven", "Redrive", note).await;
    }
}

/// Events when the Subscription's version becomes deprecated, or passes its sunset under Warn
/// (under Block, the Ready reason VersionSunset carries the Event).
async fn report_version(
    sub: &Subscription,
    ctx: &Context,
    previous: &SubscriptionStatus,
    assessed: &version::Assessed,
) {
    let Some(now) = &assessed.resolved else { return };
    let before = previous.version.as_ref().filter(|v| v.name == now.name).map(|v| v.state);
    let was_sunset = previous.conditions.iter().any(|c| c.type_ == version::VERSION_SUNSET && c.status == "True");
    if let Some(message) = assessed.sunset.as_ref().filter(|_| !was_sunset && !assessed.blocked) {
        ctx.publish(sub, EventType::Warning, "VersionSunset", "Deliver", message.clone()).await;
    } else if now.state == VersionState::Deprecated && before != Some(VersionState::Deprecated) {
        let note = format!(
            "Deliveries are rendered in deprecated {}: move spec.eventVersion to a newer version",
            version::describe(now)
        );
        ctx.publish(sub, EventType::Warning, "VersionDeprecated", "Deliver", note).await;
    }
}

fn join(items: &[&String]) -> String {
    items.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
}

async fn cleanup(sub: &Subscription, ctx: &Context) -> Result<Action, Error> {
    let namespace = sub.namespace().ok_or(Error::NotNamespaced)?;
    let name = sub.name_any();
    ctx.metrics.forget_queue_messages(&namespace, &name);
    let queue = crate::topology::names::work_queue(&namespace, &name);
    let established = sub.status.as_ref().and_then(|s| s.broker.clone());
    if sub.spec.deletion_policy == DeletionPolicy::Retain {
        if established.is_some() {
            let note = format!(
                "Kept queue {queue}, its retry and dead-letter queues and their messages (deletionPolicy Retain)"
            );
            ctx.publish(sub, EventType::Normal, "Retained", "Delete", note).await;
        }
        return Ok(Action::await_change());
    }
    let Some(broker) = established else { return Ok(Action::await_change()) };
    let key = BrokerKey::from_status(&namespace, &broker);
    let broker = match ctx.brokers.resolve(&key).await {
        Ok(b) => b,
        Err(e @ ResolveError::SecretMissing { .. }) => {
            let note = format!("Left queue {queue} on the broker: {e}");
            ctx.publish(sub, EventType::Warning, "BrokerSecretMissing", "Delete", note).await;
            return Ok(Action::await_change());
        }
        Err(e) => return Err(e.into()),
    };
    let deleted = async {
        broker.ensure_up()?;
        apply::delete_all(&broker, &namespace, &name).await?;
        Ok::<_, Error>(())
    }
    .await;
    if let Err(e) = deleted {
        ctx.publish(sub, EventType::Warning, e.category(), "Delete", format!("Cannot delete the queues yet: {e}"))
            .await;
        return Err(e);
    }
    let note = format!("Deleted queue {queue}, its retry and dead-letter queues and policies");
    ctx.publish(sub, EventType::Normal, "Deleted", "Delete", note).await;
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    #[test]
    fn bindings_read_naturally_in_status() {
        let b = |key: &str, args: &[(&str, &str)]| Binding {
            source: "x".into(),
            queue: "q".into(),
            routing_key: key.into(),
            arguments: args.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect::<BTreeMap<_, _>>(),
        };
        assert_eq!(describe(&b("order.*", &[])), "order.*");
        assert_eq!(describe(&b("", &[])), "(every event)");
        assert_eq!(describe(&b("", &[("region", "eu"), ("x-match", "all")])), "region=eu,x-match=all");
    }

    #[test]
    fn the_broker_in_status_round_trips() {
        let secret = BrokerKey::Secret { namespace: "shop".into(), name: "rabbit".into() };
        assert_eq!(secret.status_name(), "rabbit", "the Secret's name, as the docs say");
        assert_eq!(BrokerKey::from_status("shop", secret.status_name()), secret);
        assert_eq!(BrokerKey::from_status("shop", BrokerKey::Default.status_name()), BrokerKey::Default);
        assert_eq!(BrokerKey::from_status("other", "shop/rabbit"), secret, "what earlier versions wrote");
    }
}
