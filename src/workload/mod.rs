//! Pure builders of the Kubernetes objects the operator runs for a Webhook: the dispatch
//! configuration and the dispatcher's ConfigMap, Secret, ServiceAccount, Role, RoleBinding
//! and Deployment. No I/O here: the Webhook driver gathers the inputs and applies the result.

pub mod dispatcher;
