//! The dispatcher of one Webhook, as Kubernetes objects.
//!
//! - ConfigMap `sluice-dispatcher-<webhook>`, key `dispatch.json`: the [`DispatchConfig`];
//! - Secret `sluice-dispatcher-<webhook>`: the broker URI and the signing secret(s);
//! - ServiceAccount, Role and RoleBinding `sluice-dispatcher-<webhook>`: read this Webhook and
//!   write its status, nothing else;
//! - Deployment `sluice-dispatcher-<webhook>`: `sluice dispatcher`, hardened, probed on the
//!   admin port, rolled by a checksum of the configuration and secrets.

use std::collections::BTreeMap;

use k8s_openapi::{
    ByteString,
    api::{
        apps::v1::{Deployment, DeploymentSpec},
        core::v1::{
            Capabilities, ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, EnvVar, EnvVarSource,
            HTTPGetAction, ObjectFieldSelector, PodSecurityContext, PodSpec, PodTemplateSpec, Probe,
            ResourceRequirements, SeccompProfile, Secret, SecretKeySelector, SecurityContext, ServiceAccount, Volume,
            VolumeMount,
        },
        rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject},
    },
    apimachinery::pkg::{api::resource::Quantity, apis::meta::v1::LabelSelector, util::intstr::IntOrString},
};
use kube::{Resource, ResourceExt, api::ObjectMeta};

use crate::{
    api::{ApiVersionPolicy, EventTopic, Subscription, Webhook, subscription::Ordering},
    dispatch::config::{
        CircuitBreakerConfig, DispatchConfig, EgressConfig, RateLimitConfig, SubscriptionRoute, checksum,
    },
    topology::names,
    versions::{
        TopicVersions,
        lifecycle::{PinError, resolve},
    },
};

/// Where the ConfigMap is mounted and the key the configuration is under.
pub const CONFIG_DIR: &str = "/etc/sluice";
pub const CONFIG_KEY: &str = "dispatch.json";
/// The pod template annotation that rolls the Deployment when the configuration or the
/// secrets change.
pub const CHECKSUM_ANNOTATION: &str = "sluice.dev/config-checksum";
/// The label naming the Webhook on every object (and the pods).
pub const WEBHOOK_LABEL: &str = "sluice.dev/webhook";
/// The `app.kubernetes.io/name` of dispatcher pods.
pub const APP_NAME: &str = "sluice-dispatcher";
/// Secret keys.
pub const BROKER_URI_KEY: &str = "broker-uri";
pub const SIGNING_KEY: &str = "signing-secret";
pub const PREVIOUS_SIGNING_KEY: &str = "previous-signing-secret";
pub const PREVIOUS_EXPIRES_KEY: &str = "previous-signing-secret-expires";
/// The admin port (/metrics, /healthz, /readyz) inside the pod.
pub const ADMIN_PORT: i32 = 8080;

/// Operator-wide settings for every dispatcher.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The operator's own image: the dispatcher is the same binary.
    pub image: String,
    pub image_pull_policy: String,
    /// The admin egress allowlist and whether private ranges are refused.
    pub egress: EgressConfig,
    /// Log format passed to the dispatchers (`plain` or `json`).
    pub log_format: String,
}

/// The secrets a dispatcher gets as environment variables.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretMaterial {
    pub broker_uri: String,
    pub signing: String,
    /// The previous signing secret and when (unix seconds) it stops being used.
    pub previous: Option<(String, i64)>,
}

impl std::fmt::Debug for SecretMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretMaterial")
            .field("previous_expires", &self.previous.as_ref().map(|p| p.1))
            .finish_non_exhaustive()
    }
}

/// Name of the Deployment, ConfigMap, Secret, ServiceAccount, Role and RoleBinding.
pub fn name(webhook: &str) -> String {
    format!("sluice-dispatcher-{webhook}")
}

/// Name of the Secret the operator generates when the Webhook names none.
pub fn generated_signing_secret(webhook: &str) -> String {
    format!("sluice-signing-{webhook}")
}

/// How the dispatcher consumes a Subscription, given the retry queues that exist for it.
pub fn route(namespace: &str, sub: &Subscription) -> Result<SubscriptionRoute, String> {
    let name = sub.name_any();
    let schedule = sub
        .spec
        .retry
        .schedule
        .iter()
        .map(|d| d.duration().map_err(|e| format!("subscription {name}: retry schedule: {e}")))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(SubscriptionRoute {
        queue: names::work_queue(namespace, &name),
        retry_queues: (1..=schedule.len()).map(|step| names::retry_queue(namespace, &name, step)).collect(),
        schedule,
        dead_letter_queue: names::dead_letter_queue(namespace, &name),
        ordered: sub.spec.ordering == Ordering::Ordered,
        topic: None,
        version: None,
        name,
    })
}

/// A route with the rendering of its topic's events, when they are rendered.
#[derive(Debug, Clone, PartialEq)]
pub struct RenderedRoute {
    pub route: SubscriptionRoute,
    /// The topic's name and rendering; none: bodies pass through untouched.
    pub rendering: Option<(String, TopicVersions)>,
}

/// `route` (of Subscription `sub` on `topic`) with how its events are rendered: when the
/// topic has a catalog or a `policy`, the topic's rendering and the version `sub` receives.
/// Fails when `sub`'s pin does not resolve.
pub fn rendering(
    mut route: SubscriptionRoute,
    sub: &Subscription,
    topic: &EventTopic,
    policy: Option<&ApiVersionPolicy>,
) -> Result<RenderedRoute, PinError> {
    let name = topic.name_any();
    // First: a pin needs a policy, even on a topic that would otherwise pass bodies through.
    let version = resolve(policy, &name, sub.spec.event_version.as_deref())?;
    let versions = TopicVersions::new(&topic.spec.events, policy.map(|p| &p.spec));
    if versions.is_passthrough() {
        return Ok(RenderedRoute { route, rendering: None });
    }
    route.topic = Some(name.clone());
    route.version = version.map(|v| v.name.clone());
    Ok(RenderedRoute { route, rendering: Some((name, versions)) })
}

/// The dispatch configuration of `webhook` delivering `routes`, rendering the events of
/// `topics`. A disabled Webhook's dispatcher consumes nothing, like a suspended one.
pub fn config(
    webhook: &Webhook,
    routes: Vec<SubscriptionRoute>,
    topics: BTreeMap<String, TopicVersions>,
    settings: &Settings,
    disabled: bool,
) -> Result<DispatchConfig, String> {
    let spec = &webhook.spec;
    let duration = |what: &str, d: &crate::api::GoDuration| d.duration().map_err(|e| format!("spec.{what}: {e}"));
    let cb = &spec.circuit_breaker;
    let positive = |v: i32| u32::try_from(v.max(1)).unwrap_or(1);
    Ok(DispatchConfig {
        namespace: webhook.namespace().unwrap_or_default(),
        webhook: webhook.name_any(),
        url: spec.url.clone(),
        headers: spec.headers.clone(),
        timeout: duration("timeout", &spec.timeout)?,
        connect_timeout: duration("connectTimeout", &spec.connect_timeout)?,
        max_in_flight: u16::try_from(spec.max_in_flight.clamp(1, 1024)).unwrap_or(64),
        rate_limit: spec.rate_limit.as_ref().map(|r| RateLimitConfig {
            per_second: positive(r.per_second),
            burst: positive(r.burst.unwrap_or(r.per_second)),
        }),
        circuit_breaker: CircuitBreakerConfig {
            failure_ratio: cb.failure_ratio,
            min_attempts: positive(cb.min_attempts),
            window: duration("circuitBreaker.window", &cb.window)?,
            open_for: duration("circuitBreaker.openFor", &cb.open_for)?,
        },
        suspend: spec.suspend || disabled,
        egress: settings.egress.clone(),
        subscriptions: routes,
        topics,
    })
}

fn labels(webhook: &Webhook) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".to_owned(), APP_NAME.to_owned()),
        ("app.kubernetes.io/instance".to_owned(), webhook.name_any()),
        ("app.kubernetes.io/managed-by".to_owned(), "sluice".to_owned()),
        (WEBHOOK_LABEL.to_owned(), webhook.name_any()),
    ])
}

/// The labels selecting a Webhook's dispatcher pods.
pub fn selector(webhook: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".to_owned(), APP_NAME.to_owned()),
        (WEBHOOK_LABEL.to_owned(), webhook.to_owned()),
    ])
}

fn meta(webhook: &Webhook, name: String) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: webhook.namespace(),
        labels: Some(labels(webhook)),
        owner_references: webhook.controller_owner_ref(&()).map(|o| vec![o]),
        ..ObjectMeta::default()
    }
}

pub fn config_map(webhook: &Webhook, rendered: &str) -> ConfigMap {
    ConfigMap {
        metadata: meta(webhook, name(&webhook.name_any())),
        data: Some(BTreeMap::from([(CONFIG_KEY.to_owned(), rendered.to_owned())])),
        ..ConfigMap::default()
    }
}

pub fn secret(webhook: &Webhook, material: &SecretMaterial) -> Secret {
    let mut data = BTreeMap::from([
        (BROKER_URI_KEY.to_owned(), ByteString(material.broker_uri.clone().into_bytes())),
        (SIGNING_KEY.to_owned(), ByteString(material.signing.clone().into_bytes())),
    ]);
    if let Some((previous, expires)) = &material.previous {
        data.insert(PREVIOUS_SIGNING_KEY.to_owned(), ByteString(previous.clone().into_bytes()));
        data.insert(PREVIOUS_EXPIRES_KEY.to_owned(), ByteString(expires.to_string().into_bytes()));
    }
    Secret {
        metadata: meta(webhook, name(&webhook.name_any())),
        type_: Some("Opaque".to_owned()),
        data: Some(data),
        ..Secret::default()
    }
}

/// The generated signing secret (only when the Webhook names none).
pub fn signing_secret(webhook: &Webhook, secret: &str) -> Secret {
    Secret {
        metadata: meta(webhook, generated_signing_secret(&webhook.name_any())),
        type_: Some("Opaque".to_owned()),
        data: Some(BTreeMap::from([("secret".to_owned(), ByteString(secret.as_bytes().to_vec()))])),
        ..Secret::default()
    }
}

pub fn service_account(webhook: &Webhook) -> ServiceAccount {
    ServiceAccount { metadata: meta(webhook, name(&webhook.name_any())), ..ServiceAccount::default() }
}

/// Read this one Webhook and write its status: what reporting delivery status needs.
pub fn role(webhook: &Webhook) -> Role {
    let only = Some(vec![webhook.name_any()]);
    let group = Some(vec![Webhook::group(&()).into_owned()]);
    Role {
        metadata: meta(webhook, name(&webhook.name_any())),
        rules: Some(vec![
            PolicyRule {
                api_groups: group.clone(),
                resources: Some(vec!["webhooks".to_owned()]),
                resource_names: only.clone(),
                verbs: vec!["get".to_owned()],
                ..PolicyRule::default()
            },
            PolicyRule {
                api_groups: group,
                resources: Some(vec!["webhooks/status".to_owned()]),
                resource_names: only,
                verbs: vec!["get".to_owned(), "patch".to_owned()],
                ..PolicyRule::default()
            },
        ]),
    }
}

pub fn role_binding(webhook: &Webhook) -> RoleBinding {
    let name = name(&webhook.name_any());
    RoleBinding {
        metadata: meta(webhook, name.clone()),
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".to_owned(),
            kind: "Role".to_owned(),
            name: name.clone(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".to_owned(),
            name,
            namespace: webhook.namespace(),
            ..Subject::default()
        }]),
    }
}

/// The checksum that rolls the Deployment: the rendered configuration and the secrets.
pub fn rollout_checksum(rendered: &str, material: &SecretMaterial) -> String {
    let mut bytes = rendered.as_bytes().to_vec();
    for part in [&material.broker_uri, &material.signing] {
        bytes.push(0);
        bytes.extend_from_slice(part.as_bytes());
    }
    if let Some((previous, expires)) = &material.previous {
        bytes.push(0);
        bytes.extend_from_slice(previous.as_bytes());
        bytes.extend_from_slice(&expires.to_be_bytes());
    }
    checksum(&bytes)
}

/// The dispatcher container: `sluice dispatcher`, secrets from the dispatcher Secret,
/// probed on the admin port, locked down.
fn container(name: &str, settings: &Settings) -> Container {
    let from_secret = |env: &str, key: &str, optional: bool| EnvVar {
        name: env.to_owned(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: name.to_owned(),
                key: key.to_owned(),
                optional: optional.then_some(true),
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    };
    let plain =
        |env: &str, value: &str| EnvVar { name: env.to_owned(), value: Some(value.to_owned()), ..EnvVar::default() };
    let probe = |path: &str, period: i32| Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_owned()),
            port: IntOrString::String("admin".to_owned()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(3),
        ..Probe::default()
    };
    Container {
        name: "dispatcher".to_owned(),
        image: Some(settings.image.clone()),
        image_pull_policy: Some(settings.image_pull_policy.clone()),
        args: Some(vec!["dispatcher".to_owned(), "--config".to_owned(), format!("{CONFIG_DIR}/{CONFIG_KEY}")]),
        env: Some(vec![
            EnvVar {
                name: "POD_NAME".to_owned(),
                value_from: Some(EnvVarSource {
                    field_ref: Some(ObjectFieldSelector {
                        field_path: "metadata.name".to_owned(),
                        ..ObjectFieldSelector::default()
                    }),
                    ..EnvVarSource::default()
                }),
                ..EnvVar::default()
            },
            plain("SLUICE_LOG_FORMAT", &settings.log_format),
            from_secret("SLUICE_BROKER_URI", BROKER_URI_KEY, false),
            from_secret("SLUICE_SIGNING_SECRET", SIGNING_KEY, false),
            from_secret("SLUICE_PREVIOUS_SIGNING_SECRET", PREVIOUS_SIGNING_KEY, true),
            from_secret("SLUICE_PREVIOUS_SECRET_EXPIRES", PREVIOUS_EXPIRES_KEY, true),
        ]),
        ports: Some(vec![ContainerPort {
            name: Some("admin".to_owned()),
            container_port: ADMIN_PORT,
            protocol: Some("TCP".to_owned()),
            ..ContainerPort::default()
        }]),
        readiness_probe: Some(probe("/readyz", 5)),
        liveness_probe: Some(probe("/healthz", 10)),
        resources: Some(ResourceRequirements {
            requests: Some(BTreeMap::from([
                ("cpu".to_owned(), Quantity("50m".to_owned())),
                ("memory".to_owned(), Quantity("32Mi".to_owned())),
            ])),
            limits: Some(BTreeMap::from([("memory".to_owned(), Quantity("128Mi".to_owned()))])),
            ..ResourceRequirements::default()
        }),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            capabilities: Some(Capabilities { drop: Some(vec!["ALL".to_owned()]), ..Capabilities::default() }),
            ..SecurityContext::default()
        }),
        volume_mounts: Some(vec![VolumeMount {
            name: "config".to_owned(),
            mount_path: CONFIG_DIR.to_owned(),
            read_only: Some(true),
            ..VolumeMount::default()
        }]),
        ..Container::default()
    }
}

pub fn deployment(webhook: &Webhook, settings: &Settings, rollout: &str) -> Deployment {
    let name = name(&webhook.name_any());
    let container = container(&name, settings);
    let pod_labels = labels(webhook);
    Deployment {
        metadata: meta(webhook, name.clone()),
        spec: Some(DeploymentSpec {
            replicas: Some(webhook.spec.replicas),
            selector: LabelSelector { match_labels: Some(selector(&webhook.name_any())), ..LabelSelector::default() },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    annotations: Some(BTreeMap::from([(CHECKSUM_ANNOTATION.to_owned(), rollout.to_owned())])),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    service_account_name: Some(name.clone()),
                    automount_service_account_token: Some(true),
                    termination_grace_period_seconds: Some(30),
                    security_context: Some(PodSecurityContext {
                        run_as_non_root: Some(true),
                        run_as_user: Some(65532),
                        run_as_group: Some(65532),
                        seccomp_profile: Some(SeccompProfile {
                            type_: "RuntimeDefault".to_owned(),
                            ..SeccompProfile::default()
                        }),
                        ..PodSecurityContext::default()
                    }),
                    containers: vec![container],
                    volumes: Some(vec![Volume {
                        name: "config".to_owned(),
                        config_map: Some(ConfigMapVolumeSource {
                            name: name.clone(),
                            ..ConfigMapVolumeSource::default()
                        }),
                        ..Volume::default()
                    }]),
                    ..PodSpec::default()
                }),
            },
            ..DeploymentSpec::default()
        }),
        ..Deployment::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::WebhookSpec;

    fn webhook(yaml: &str) -> Webhook {
        let spec: WebhookSpec = serde_yaml::from_str(yaml).expect("spec");
        let mut w = Webhook::new("billing", spec);
        w.metadata.namespace = Some("shop".into());
        w.metadata.uid = Some("uid-1".into());
        w
    }

    fn settings() -> Settings {
        Settings {
            image: "ghcr.io/sluice/sluice:0.1.0".into(),
            image_pull_policy: "IfNotPresent".into(),
            egress: EgressConfig { allow: vec!["127.0.0.0/8".into()], refuse_private: false },
            log_format: "json".into(),
        }
    }

    fn subscription(yaml: &str) -> Subscription {
        let spec = serde_yaml::from_str(yaml).expect("spec");
        Subscription::new("orders-to-billing", spec)
    }

    #[test]
    fn the_config_carries_the_webhook_and_every_route() {
        let w =
            webhook("url: https://billing.example.com/hooks\nrateLimit: {perSecond: 50}\nheaders: {X-Team: billing}");
        let sub = subscription(
            "topicRef: {name: orders}\nwebhookRef: {name: billing}\nordering: Ordered\nretry: {schedule: [1s, 2m]}",
        );
        let route = route("shop", &sub).expect("route");
        assert_eq!(route.queue, "sluice.shop.orders-to-billing");
        assert_eq!(
            route.retry_queues,
            ["sluice.shop.orders-to-billing.retry.1", "sluice.shop.orders-to-billing.retry.2"]
        );
        assert_eq!(route.schedule, [std::time::Duration::from_secs(1), std::time::Duration::from_secs(120)]);
        assert_eq!(route.dead_letter_queue, "sluice.shop.orders-to-billing.dlq");
        assert!(route.ordered);

        let c = config(&w, vec![route.clone()], BTreeMap::new(), &settings(), false).expect("config");
        assert_eq!((c.namespace.as_str(), c.webhook.as_str()), ("shop", "billing"));
        assert_eq!(c.timeout, std::time::Duration::from_secs(15));
        assert_eq!(c.connect_timeout, std::time::Duration::from_secs(5));
        assert_eq!(c.max_in_flight, 64);
        assert_eq!(c.rate_limit, Some(RateLimitConfig { per_second: 50, burst: 50 }));
        assert_eq!(c.headers.get("X-Team").map(String::as_str), Some("billing"));
        assert_eq!(c.egress.allow, ["127.0.0.0/8"]);
        assert_eq!(c.subscriptions, [route]);
        assert!(!c.suspend);
        assert!(
            config(&w, vec![], BTreeMap::new(), &settings(), true).expect("config").suspend,
            "disabled consumes nothing"
        );
    }

    #[test]
    fn a_route_renders_what_its_topic_declares_in_the_version_it_pinned() {
        let topic: EventTopic = serde_json::from_value(serde_json::json!({
            "apiVersion": "sluice.dev/v1alpha1", "kind": "EventTopic", "metadata": {"name": "orders", "namespace": "shop"},
            "spec": {"events": [{"type": "order.created", "versions": [{"name": "v2", "schema": {"type": "object"},
                                 "examples": [{"id": "o-1"}]}]}]}
        }))
        .expect("topic");
        let policy: ApiVersionPolicy = serde_json::from_value(serde_json::json!({
            "apiVersion": "sluice.dev/v1alpha1", "kind": "ApiVersionPolicy", "metadata": {"name": "orders-versions", "namespace": "shop"},
            "spec": {"topicRef": {"name": "orders"}, "current": "v2", "versions": [{"name": "v2"}, {"name": "v1"}]}
        }))
        .expect("policy");
        let sub = |pin: &str| subscription(&format!("topicRef: {{name: orders}}\neventVersion: {pin}"));
        let unpinned = subscription("topicRef: {name: orders}");
        let base = route("shop", &unpinned).expect("route");

        let pinned = rendering(base.clone(), &sub("v1"), &topic, Some(&policy)).expect("v1");
        assert_eq!((pinned.route.topic.as_deref(), pinned.route.version.as_deref()), (Some("orders"), Some("v1")));
        let (name, versions) = pinned.rendering.expect("rendered");
        assert_eq!(name, "orders");
        assert!(versions.events[0].versions[0].examples.is_empty(), "examples stay out of the ConfigMap");
        assert_eq!(versions.policy.map(|p| p.current).as_deref(), Some("v2"));
        let current = rendering(base.clone(), &unpinned, &topic, Some(&policy)).expect("current");
        assert_eq!(current.route.version.as_deref(), Some("v2"), "unpinned: the policy's current version");
        assert!(rendering(base.clone(), &sub("v9"), &topic, Some(&policy)).is_err(), "an unknown pin");

        let plain: EventTopic = serde_json::from_value(serde_json::json!({
            "apiVersion": "sluice.dev/v1alpha1", "kind": "EventTopic", "metadata": {"name": "audit", "namespace": "shop"}, "spec": {}
        }))
        .expect("topic");
        assert!(
            rendering(base.clone(), &sub("v1"), &plain, None).is_err(),
            "a pin without a policy is never passed through"
        );
        let passthrough = rendering(base, &unpinned, &plain, None).expect("passthrough");
        assert!(
            passthrough.rendering.is_none() && passthrough.route.topic.is_none() && passthrough.route.version.is_none()
        );
    }

    #[test]
    fn the_deployment_is_hardened_probed_and_rolled_by_the_checksum() {
        let w = webhook("url: https://billing.example.com/hooks\nreplicas: 3");
        let d = deployment(&w, &settings(), "abc123");
        assert_eq!(d.metadata.name.as_deref(), Some("sluice-dispatcher-billing"));
        let owner = &d.metadata.owner_references.as_ref().expect("owned")[0];
        assert_eq!((owner.kind.as_str(), owner.controller), ("Webhook", Some(true)));
        let spec = d.spec.expect("spec");
        assert_eq!(spec.replicas, Some(3));
        let template = spec.template;
        let annotations = template.metadata.as_ref().and_then(|m| m.annotations.clone()).expect("annotations");
        assert_eq!(annotations.get(CHECKSUM_ANNOTATION).map(String::as_str), Some("abc123"));
        let labels = template.metadata.and_then(|m| m.labels).expect("labels");
        for (k, v) in spec.selector.match_labels.expect("selector") {
            assert_eq!(labels.get(&k), Some(&v), "the selector matches the pods");
        }
        let pod = template.spec.expect("pod");
        assert_eq!(pod.service_account_name.as_deref(), Some("sluice-dispatcher-billing"));
        let psc = pod.security_context.expect("pod security");
        assert_eq!(psc.run_as_non_root, Some(true));
        assert_eq!(psc.seccomp_profile.map(|s| s.type_).as_deref(), Some("RuntimeDefault"));
        let c = &pod.containers[0];
        assert_eq!(c.image.as_deref(), Some("ghcr.io/sluice/sluice:0.1.0"));
        assert_eq!(
            c.args.as_deref().map(|a| a.join(" ")).as_deref(),
            Some("dispatcher --config /etc/sluice/dispatch.json")
        );
        let sc = c.security_context.as_ref().expect("container security");
        assert_eq!(
            (sc.allow_privilege_escalation, sc.read_only_root_filesystem, sc.run_as_non_root),
            (Some(false), Some(true), Some(true))
        );
        assert_eq!(sc.capabilities.as_ref().and_then(|c| c.drop.clone()), Some(vec!["ALL".to_owned()]));
        let probe = |p: &Option<Probe>| p.as_ref().and_then(|p| p.http_get.as_ref()).and_then(|h| h.path.clone());
        assert_eq!(probe(&c.readiness_probe).as_deref(), Some("/readyz"));
        assert_eq!(probe(&c.liveness_probe).as_deref(), Some("/healthz"));
        let env: Vec<&str> = c.env.iter().flatten().map(|e| e.name.as_str()).collect();
        assert_eq!(
            env,
            [
                "POD_NAME",
                "SLUICE_LOG_FORMAT",
                "SLUICE_BROKER_URI",
                "SLUICE_SIGNING_SECRET",
                "SLUICE_PREVIOUS_SIGNING_SECRET",
                "SLUICE_PREVIOUS_SECRET_EXPIRES"
            ]
        );
        assert!(c.env.iter().flatten().all(|e| e.value.as_deref() != Some("whsec_")), "no secret is inlined");
    }

    #[test]
    fn the_checksum_changes_with_the_config_and_each_secret() {
        let m = SecretMaterial { broker_uri: "amqp://a".into(), signing: "whsec_a".into(), previous: None };
        let base = rollout_checksum("{}", &m);
        assert_eq!(base, rollout_checksum("{}", &m.clone()));
        assert_ne!(base, rollout_checksum("{ }", &m));
        assert_ne!(base, rollout_checksum("{}", &SecretMaterial { signing: "whsec_b".into(), ..m.clone() }));
        assert_ne!(base, rollout_checksum("{}", &SecretMaterial { broker_uri: "amqp://b".into(), ..m.clone() }));
        let rotated = SecretMaterial { previous: Some(("whsec_0".into(), 100)), ..m.clone() };
        assert_ne!(base, rollout_checksum("{}", &rotated));
        assert!(!format!("{rotated:?}").contains("whsec"), "Debug shows no secret");
    }

    #[test]
    fn the_role_reads_one_webhook_and_writes_its_status_only() {
        let w = webhook("url: https://billing.example.com/hooks");
        let rules = role(&w).rules.expect("rules");
        for r in &rules {
            assert_eq!(r.resource_names.as_deref(), Some(&["billing".to_owned()][..]));
            assert!(r.verbs.iter().all(|v| v == "get" || v == "patch"));
        }
        let resources: Vec<String> = rules.iter().flat_map(|r| r.resources.clone().unwrap_or_default()).collect();
        assert_eq!(resources, ["webhooks", "webhooks/status"]);
        let binding = role_binding(&w);
        assert_eq!(binding.role_ref.name, "sluice-dispatcher-billing");
        assert_eq!(binding.subjects.expect("subjects")[0].name, "sluice-dispatcher-billing");
    }
}
