//! The Webhook controller: gather the Subscriptions targeting the Webhook, their broker and
//! the signing secret → render the dispatcher (pure, in [`crate::workload::dispatcher`]) →
//! apply its ServiceAccount, Role, RoleBinding, Secret, ConfigMap and Deployment, all owned
//! by the Webhook → summarize what the dispatcher pods report into status, conditions and
//! Events (circuit opened/closed, disabled/enabled). Owned objects go with the Webhook
//! through garbage collection, so no finalizer is needed.

mod fresh;
mod routes;
mod summary;

pub use fresh::{Fresh, key as fresh_key};

use std::{borrow::Cow, sync::Arc, time::Duration};

use k8s_openapi::{
    api::{
        apps::v1::Deployment,
        core::v1::{Pod, Secret},
    },
    jiff::Timestamp,
};
use kube::{
    Api, Resource, ResourceExt,
    api::{ListParams, Patch, PatchParams},
    runtime::{controller::Action, events::EventType},
};
use serde::Serialize;
use serde_json::json;
use tracing::{debug, info, instrument};

use super::{
    Context, Error, MANAGER,
    conditions::{Conditions, Outcome, ready_condition},
    status,
};
use crate::{
    api::{
        Webhook, WebhookStatus,
        webhook::{CircuitState, DeliveryCounts},
    },
    dispatch::{
        config::checksum,
        signing::{SigningKey, generate_secret},
    },
    workload::dispatcher::{self as render, SecretMaterial},
};
use summary::DisableReason;

pub const KIND: &str = "Webhook";
pub const CIRCUIT_OPEN: &str = "CircuitOpen";
pub const DISABLED: &str = "Disabled";
/// How long the previous signing secret keeps signing after a change.
pub const ROTATION_OVERLAP: Duration = Duration::from_secs(24 * 3600);

/// Reconciles one Webhook.
#[instrument(skip_all, fields(namespace = webhook.namespace().unwrap_or_default(), name = webhook.name_any()))]
pub async fn reconcile(webhook: Arc<Webhook>, ctx: Arc<Context>) -> Result<Action, Error> {
    super::measured(KIND, webhook.as_ref(), &ctx, run(&webhook, &ctx)).await
}

async fn run(webhook: &Webhook, ctx: &Context) -> Result<Action, Error> {
    let namespace = webhook.namespace().ok_or(Error::NotNamespaced)?;
    let key = fresh_key(&namespace, &webhook.name_any());
    if webhook.meta().deletion_timestamp.is_some() {
        ctx.webhooks.forget(&key);
        return Ok(Action::await_change());
    }
    let api = Api::<Webhook>::namespaced(ctx.client.clone(), &namespace);
    // Woken only by the pods' reports: summarize them against what was applied last time.
    let reused = ctx.webhooks.get(&key, webhook, ctx.settings.resync / 2);
    let reused = reused.and_then(|last| last.with_reports(webhook, &status::current(webhook)));
    let (webhook, result) = if let Some(last) = reused {
        debug!("Only the dispatchers' reports changed; summarizing them.");
        (Cow::Borrowed(webhook), Ok(last))
    } else {
        status::mark_reconciling(&api, webhook).await?;
        let (patched, pods) = retire_gone_pods(&api, webhook, ctx, &namespace).await?;
        let webhook = patched.map_or(Cow::Borrowed(webhook), Cow::Owned);
        let result = Box::pin(converge(&webhook, ctx, &namespace, &status::current(webhook.as_ref()), pods)).await;
        match &result {
            Ok(c) => ctx.webhooks.put(key, &webhook, Converged { rotated: false, ..c.clone() }),
            Err(_) => ctx.webhooks.forget(&key),
        }
        (webhook, result)
    };
    let webhook = webhook.as_ref();
    let previous = status::current(webhook);
    let mut next = previous.clone();
    summary::summarize(&mut next);
    let outcome = match &result {
        Ok(c) => {
            next.deployment = Some(c.deployment.clone());
            next.ready_replicas = Some(c.ready_replicas);
            next.signing_secret = Some(c.signing_secret.clone());
            next.broker_conflicts.clone_from(&c.other_broker);
            next.disabled_generation = c.disabled.as_ref().map(|_| webhook.metadata.generation.unwrap_or_default());
            c.outcome(webhook)
        }
        Err(e) => status::failure_outcome(e),
    };
    let mut conditions = Conditions::from_status(&next.conditions, webhook.metadata.generation, Timestamp::now());
    conditions.outcome(&outcome);
    let open = next.circuit == Some(CircuitState::Open);
    let circuit_note = if open { "The endpoint keeps failing; messages wait in the broker" } else { "" };
    conditions.set(CIRCUIT_OPEN, open, if open { "FailureRatioExceeded" } else { "Closed" }, circuit_note);
    match result.as_ref().ok().and_then(|c| c.disabled.as_ref()) {
        Some((reason, message)) => conditions.set(DISABLED, true, reason, message),
        None => conditions.set(DISABLED, false, "Enabled", ""),
    };
    next.conditions = conditions.into_vec();
    next.observed_generation = webhook.metadata.generation;

    report_events(webhook, ctx, &previous, &next, &result).await;
    status::apply_status(&api, &webhook.name_any(), Some(&previous), &next).await?;
    result.map(|c| {
        if c.ready_replicas < c.replicas {
            Action::requeue(Duration::from_secs(10))
        } else if let Some(due) = c.auto_disable_in.filter(|due| *due < ctx.settings.resync) {
            // Failing everywhere: look again when spec.autoDisableAfter is reached.
            Action::requeue(due + Duration::from_secs(1))
        } else {
            ctx.resync()
        }
    })
}

/// What a successful apply produced.
#[derive(Clone)]
pub struct Converged {
    deployment: String,
    replicas: i32,
    ready_replicas: i32,
    signing_secret: String,
    subscriptions: usize,
    /// Set when the Webhook is (still, or newly) disabled: the reason and why.
    disabled: Option<(&'static str, String)>,
    /// When every dispatcher fails: how long until `spec.autoDisableAfter` is reached.
    auto_disable_in: Option<Duration>,
    rotated: bool,
    /// The checksum of the configuration with delivery enabled (the pods report theirs).
    enabled_checksum: String,
    /// The dispatcher pods running (not terminating) when this was applied.
    pods: Vec<String>,
    /// Subscriptions targeting the Webhook on another broker than its dispatcher's.
    other_broker: Vec<String>,
}

impl Converged {
    /// This result with the pods' current reports: `None` when a report comes from a pod that
    /// was not running then, or when they change whether the Webhook is disabled (which changes
    /// the configuration): both need a full reconcile.
    fn with_reports(self, webhook: &Webhook, status: &WebhookStatus) -> Option<Self> {
        if status.dispatchers.iter().any(|r| !self.pods.contains(&r.pod)) {
            return None;
        }
        let (disabled, auto_disable_in) = disabled(webhook, status, &self.enabled_checksum);
        (disabled.is_some() == self.disabled.is_some()).then_some(Self { disabled, auto_disable_in, ..self })
    }

    fn outcome(&self, webhook: &Webhook) -> Outcome {
        if let Some((reason, message)) = &self.disabled {
            return Outcome::Stalled {
                reason: "Disabled",
                message: format!(
                    "{message} ({reason}); messages are kept in the queues. Change the spec to re-enable delivery"
                ),
            };
        }
        if self.ready_replicas < 1 {
            return Outcome::Progressing {
                reason: "DispatcherStarting",
                message: format!("Deployment {} has no ready dispatcher yet", self.deployment),
            };
        }
        let paused = if webhook.spec.suspend { ", delivery suspended" } else { "" };
        let left_out = if self.other_broker.is_empty() {
            String::new()
        } else {
            format!(
                "; not delivered, their topics live on another broker than the others': {}",
                self.other_broker.join(", ")
            )
        };
        Outcome::Ready {
            reason: if webhook.spec.suspend { "Suspended" } else { "Ready" },
            message: format!(
                "Deployment {} delivers {} Subscription(s) with {}/{} dispatcher(s) ready{paused}{left_out}",
                self.deployment, self.subscriptions, self.ready_replicas, self.replicas
            ),
        }
    }
}

async fn converge(
    webhook: &Webhook,
    ctx: &Context,
    namespace: &str,
    previous: &WebhookStatus,
    pods: Vec<String>,
) -> Result<Converged, Error> {
    let name = webhook.name_any();
    let object = render::name(&name);
    let routes::Delivering { subscriptions: routes, topics, broker, other_broker } =
        routes::routes(webhook, ctx, namespace).await?;
    let broker = ctx.brokers.resolve(&broker).await?;
    let (signing, signing_secret) = signing_secret(webhook, ctx, namespace).await?;
    let secrets = Api::<Secret>::namespaced(ctx.client.clone(), namespace);
    let existing = secrets.get_opt(&object).await.map_err(Error::kube("read the dispatcher Secret"))?;
    let (material, rotated) = rotate(existing.as_ref(), broker.config.amqp_uri.clone(), signing);

    let settings = &ctx.settings.dispatcher;
    let enabled =
        render::config(webhook, routes.clone(), topics.clone(), settings, false).map_err(Error::InvalidSpec)?;
    let enabled_checksum = checksum(enabled.render().as_bytes());
    let (disabled, auto_disable_in) = disabled(webhook, previous, &enabled_checksum);
    let config = if disabled.is_some() {
        render::config(webhook, routes, topics, settings, true).map_err(Error::InvalidSpec)?
    } else {
        enabled
    };
    let rendered = config.render();
    let rollout = render::rollout_checksum(&rendered, &material);

    apply(ctx, namespace, &render::service_account(webhook)).await?;
    apply(ctx, namespace, &render::role(webhook)).await?;
    apply(ctx, namespace, &render::role_binding(webhook)).await?;
    apply(ctx, namespace, &render::secret(webhook, &material)).await?;
    apply(ctx, namespace, &render::config_map(webhook, &rendered)).await?;
    let deployment: Deployment = apply(ctx, namespace, &render::deployment(webhook, settings, &rollout)).await?;
    let ready_replicas = deployment.status.as_ref().and_then(|s| s.ready_replicas).unwrap_or(0);
    Ok(Converged {
        deployment: object,
        replicas: webhook.spec.replicas,
        ready_replicas,
        signing_secret,
        subscriptions: config.subscriptions.len(),
        disabled,
        auto_disable_in,
        rotated,
        enabled_checksum,
        pods,
        other_broker,
    })
}

/// Server-side applies one owned object and returns it as the apiserver has it.
async fn apply<K>(ctx: &Context, namespace: &str, object: &K) -> Result<K, Error>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + Serialize
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let api = Api::<K>::namespaced(ctx.client.clone(), namespace);
    let mut body = serde_json::to_value(object).map_err(|e| Error::InvalidSpec(e.to_string()))?;
    body["apiVersion"] = json!(K::api_version(&()));
    body["kind"] = json!(K::kind(&()));
    api.patch(&object.name_any(), &PatchParams::apply(MANAGER).force(), &Patch::Apply(&body))
        .await
        .map_err(Error::kube("apply a dispatcher object"))
}

/// The signing secret and the Secret it is read from: the one the spec names, or one the
/// operator generates (once) and owns.
async fn signing_secret(webhook: &Webhook, ctx: &Context, namespace: &str) -> Result<(String, String), Error> {
    let secrets = Api::<Secret>::namespaced(ctx.client.clone(), namespace);
    let (secret_name, key) = match &webhook.spec.signing {
        Some(s) => (s.secret_ref.name.clone(), s.secret_ref.key.clone()),
        None => (render::generated_signing_secret(&webhook.name_any()), "secret".to_owned()),
    };
    let found = secrets.get_opt(&secret_name).await.map_err(Error::kube("read the signing Secret"))?;
    let value = found.as_ref().and_then(|s| s.data.as_ref()).and_then(|d| d.get(&key)).map(|v| v.0.clone());
    let value = match (value, &webhook.spec.signing) {
        (Some(bytes), _) => String::from_utf8(bytes).map_err(|_| {
            Error::SigningSecret(format!("key {key:?} of Secret {namespace}/{secret_name} is not UTF-8 text"))
        })?,
        (None, Some(_)) => {
            return Err(Error::SigningSecret(format!(
                "Secret {namespace}/{secret_name} {} key {key:?}; create it with a whsec_ secret (or remove spec.signing to have one generated)",
                if found.is_some() { "has no" } else { "does not exist, so there is no" }
            )));
        }
        (None, None) => {
            let generated = generate_secret();
            apply(ctx, namespace, &render::signing_secret(webhook, &generated)).await?;
            info!(secret = %secret_name, "Generated a signing secret.");
            generated
        }
    };
    let value = value.trim().to_owned();
    SigningKey::parse(&value).map_err(|e| {
        Error::SigningSecret(format!(
            "key {key:?} of Secret {namespace}/{secret_name} is not a usable signing secret: {e}"
        ))
    })?;
    Ok((value, secret_name))
}

/// The dispatcher's secrets. A changed signing secret keeps the previous one signing for
/// [`ROTATION_OVERLAP`]; an expired previous secret is dropped.
fn rotate(existing: Option<&Secret>, broker_uri: String, signing: String) -> (SecretMaterial, bool) {
    let data = existing.and_then(|s| s.data.as_ref());
    let text = |key: &str| data.and_then(|d| d.get(key)).and_then(|v| String::from_utf8(v.0.clone()).ok());
    let now = Timestamp::now().as_second();
    let current = text(render::SIGNING_KEY);
    let kept = text(render::PREVIOUS_SIGNING_KEY)
        .zip(text(render::PREVIOUS_EXPIRES_KEY).and_then(|t| t.parse::<i64>().ok()))
        .filter(|(_, expires)| *expires > now);
    match current {
        Some(old) if old != signing => {
            let expires = now + i64::try_from(ROTATION_OVERLAP.as_secs()).unwrap_or(i64::MAX);
            (SecretMaterial { broker_uri, signing, previous: Some((old, expires)) }, true)
        }
        _ => {
            let previous = kept.filter(|(p, _)| *p != signing);
            (SecretMaterial { broker_uri, signing, previous }, false)
        }
    }
}

/// Whether the Webhook is disabled: it was, at this very generation (any spec change
/// re-enables), or the pods running the enabled configuration now call for it. When it is not
/// but every pod fails: how long until `spec.autoDisableAfter` is reached.
fn disabled(
    webhook: &Webhook,
    previous: &WebhookStatus,
    enabled: &str,
) -> (Option<(&'static str, String)>, Option<Duration>) {
    let generation = webhook.metadata.generation;
    if previous.disabled_generation.is_some() && previous.disabled_generation == generation {
        let was = previous.conditions.iter().find(|c| c.type_ == DISABLED && c.status == "True");
        let disabled = was.map_or(("Disabled", "Delivery was disabled".to_owned()), |c| {
            (
                if c.reason == DisableReason::Gone.as_str() {
                    DisableReason::Gone.as_str()
                } else {
                    DisableReason::FailingTooLong.as_str()
                },
                c.message.clone(),
            )
        });
        return (Some(disabled), None);
    }
    // Admission refuses an unreadable duration; should one get through, it never disables.
    let after = webhook.spec.auto_disable_after.duration().unwrap_or(Duration::MAX);
    let now = Timestamp::now();
    match summary::disable(&previous.dispatchers, enabled, after, now) {
        Some((reason, message)) => (Some((reason.as_str(), message)), None),
        None => (None, summary::auto_disable_in(&previous.dispatchers, enabled, after, now)),
    }
}

/// Folds the reports of dispatcher pods that no longer exist into `status.retired`, in one
/// JSON patch that first tests that those reports are unchanged. Also returns the dispatcher
/// pods running (not terminating); none are listed while no pod has reported.
async fn retire_gone_pods(
    api: &Api<Webhook>,
    webhook: &Webhook,
    ctx: &Context,
    namespace: &str,
) -> Result<(Option<Webhook>, Vec<String>), Error> {
    let Some(status) = webhook.status.as_ref().filter(|s| !s.dispatchers.is_empty()) else {
        return Ok((None, Vec::new()));
    };
    let selector =
        render::selector(&webhook.name_any()).iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",");
    let pods = Api::<Pod>::namespaced(ctx.client.clone(), namespace)
        .list_metadata(&ListParams::default().labels(&selector))
        .await
        .map_err(Error::kube("list dispatcher pods"))?;
    let live: Vec<String> = pods.items.iter().map(ResourceExt::name_any).collect();
    let running = pods.items.iter().filter(|p| p.metadata.deletion_timestamp.is_none()).map(ResourceExt::name_any);
    let running = running.collect();
    let (indexes, folded) = summary::gone_pods(&status.dispatchers, &live);
    if indexes.is_empty() {
        return Ok((None, running));
    }
    let retired = status.retired.clone().unwrap_or_default();
    let total = DeliveryCounts {
        delivered: retired.delivered + folded.delivered,
        failed: retired.failed + folded.failed,
        dead_lettered: retired.dead_lettered + folded.dead_lettered,
    };
    let mut ops = Vec::new();
    for i in &indexes {
        ops.push(json!({"op": "test", "path": format!("/status/dispatchers/{i}"), "value": status.dispatchers[*i]}));
    }
    for i in &indexes {
        ops.push(json!({"op": "remove", "path": format!("/status/dispatchers/{i}")}));
    }
    ops.push(json!({"op": "add", "path": "/status/retired", "value": total}));
    let patch: json_patch::Patch = serde_json::from_value(json!(ops)).map_err(|e| Error::InvalidSpec(e.to_string()))?;
    match api.patch_status(&webhook.name_any(), &PatchParams::default(), &Patch::<()>::Json(patch)).await {
        Ok(patched) => {
            info!(pods = indexes.len(), "Folded the reports of dispatcher pods that are gone.");
            Ok((Some(patched), running))
        }
        Err(kube::Error::Api(s)) if s.code == 422 => Err(Error::StaleObject),
        Err(e) => Err(Error::kube("fold dispatcher reports")(e)),
    }
}

async fn report_events(
    webhook: &Webhook,
    ctx: &Context,
    previous: &WebhookStatus,
    next: &WebhookStatus,
    result: &Result<Converged, Error>,
) {
    match result {
        Ok(c) => {
            if previous.deployment.is_none() {
                let note =
                    format!("Created dispatcher Deployment {} ({} Subscription(s))", c.deployment, c.subscriptions);
                ctx.publish(webhook, EventType::Normal, "Created", "Reconcile", note).await;
            }
            if c.rotated {
                let note = format!(
                    "The signing secret changed; requests carry signatures with both secrets for {}h",
                    ROTATION_OVERLAP.as_secs() / 3600
                );
                ctx.publish(webhook, EventType::Normal, "SecretRotated", "Reconcile", note).await;
            }
            let was_disabled = previous.disabled_generation.is_some();
            match (&c.disabled, was_disabled) {
                (Some((reason, message)), false) => {
                    ctx.publish(
                        webhook,
                        EventType::Warning,
                        DISABLED,
                        reason,
                        format!("{message}; delivery stopped, messages are kept"),
                    )
                    .await;
                }
                (None, true) => {
                    ctx.publish(
                        webhook,
                        EventType::Normal,
                        "Enabled",
                        "Reconcile",
                        "The spec changed; delivery resumes".to_owned(),
                    )
                    .await;
                }
                _ => {}
            }
        }
        Err(e) => {
            let was = ready_condition(&previous.conditions);
            if was.is_none_or(|w| w.reason != e.category() || w.status == "True") {
                ctx.publish(webhook, EventType::Warning, e.category(), "Reconcile", e.to_string()).await;
            }
        }
    }
    let (was, now) = (previous.circuit.unwrap_or_default(), next.circuit.unwrap_or_default());
    if was != CircuitState::Open && now == CircuitState::Open {
        let note =
            "Circuit opened: the endpoint keeps failing; consumption paused, messages wait in the broker".to_owned();
        ctx.publish(webhook, EventType::Warning, "CircuitOpened", "Deliver", note).await;
    } else if was == CircuitState::Open && now == CircuitState::Closed {
        let note = "Circuit closed: the endpoint answers again; delivery resumed".to_owned();
        ctx.publish(webhook, EventType::Normal, "CircuitClosed", "Deliver", note).await;
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::ByteString;

    use super::*;

    fn secret(pairs: &[(&str, &str)]) -> Secret {
        let data = pairs.iter().map(|(k, v)| ((*k).to_owned(), ByteString(v.as_bytes().to_vec()))).collect();
        Secret { data: Some(data), ..Secret::default() }
    }

    #[test]
    fn a_changed_secret_keeps_the_old_one_for_a_day() {
        let (m, rotated) = rotate(None, "amqp://b".into(), "whsec_new".into());
        assert!(!rotated && m.previous.is_none(), "first rendering");

        let existing = secret(&[(render::SIGNING_KEY, "whsec_old")]);
        let (m, rotated) = rotate(Some(&existing), "amqp://b".into(), "whsec_new".into());
        assert!(rotated);
        let (previous, expires) = m.previous.expect("previous kept");
        assert_eq!(previous, "whsec_old");
        let overlap = expires - Timestamp::now().as_second();
        assert!((86_390..=86_400).contains(&overlap), "{overlap}");

        let later = expires.to_string();
        let existing = secret(&[
            (render::SIGNING_KEY, "whsec_new"),
            (render::PREVIOUS_SIGNING_KEY, "whsec_old"),
            (render::PREVIOUS_EXPIRES_KEY, &later),
        ]);
        let (m, rotated) = rotate(Some(&existing), "amqp://b".into(), "whsec_new".into());
        assert!(!rotated);
        assert_eq!(m.previous, Some(("whsec_old".to_owned(), expires)), "still within the overlap");

        let lapsed = secret(&[
            (render::SIGNING_KEY, "whsec_new"),
            (render::PREVIOUS_SIGNING_KEY, "whsec_old"),
            (render::PREVIOUS_EXPIRES_KEY, "1"),
        ]);
        assert_eq!(rotate(Some(&lapsed), "amqp://b".into(), "whsec_new".into()).0.previous, None, "expired");
    }
}
