//! Writing status: server-side apply of the whole status with the controller's field
//! manager, skipped when nothing changed so steady state costs no API writes.

use std::fmt::Debug;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{
    Api, Resource,
    api::{Patch, PatchParams},
};
use serde::{Serialize, de::DeserializeOwned};
use serde_json::json;

use super::{Error, MANAGER};
use crate::api::{ApiVersionPolicy, EventTopic, Subscription, Webhook};

/// Applies `status` to the object `name` unless it equals `current`.
pub async fn apply_status<K, S>(api: &Api<K>, name: &str, current: Option<&S>, status: &S) -> Result<bool, Error>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug,
    S: Serialize + PartialEq,
{
    if current == Some(status) {
        return Ok(false);
    }
    let body = json!({ "apiVersion": K::api_version(&()), "kind": K::kind(&()), "status": status });
    api.patch_status(name, &PatchParams::apply(MANAGER).force(), &Patch::Apply(&body))
        .await
        .map_err(Error::kube("update status"))?;
    Ok(true)
}

/// Resources whose status carries conditions.
pub trait HasConditions {
    fn conditions(&self) -> &[Condition];
}

macro_rules! has_conditions {
    ($($kind:ty),*) => {$(
        impl HasConditions for $kind {
            fn conditions(&self) -> &[Condition] {
                self.status.as_ref().map(|s| s.conditions.as_slice()).unwrap_or_default()
            }
        }
    )*};
}

has_conditions!(EventTopic, Subscription, Webhook, ApiVersionPolicy);
