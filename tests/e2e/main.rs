//! The end-to-end tier: real RabbitMQ, a real control plane (etcd, kube-apiserver with RBAC,
//! kube-controller-manager, kwok), and the controller running as a process under the Helm
//! chart's ServiceAccount. Run with `make e2e`.

// Each test holds the serial lock for its whole run, across awaits, on its own runtime: that
// is the point of the lock, not an accident.
#![allow(clippy::await_holding_lock)]
// Tables of cases read better long.
#![allow(clippy::too_many_lines, clippy::needless_pass_by_value)]

mod admission;
mod broker_faults;
mod dispatcher;
mod event_topic;
mod harness;
mod leader;
mod receiver;
mod subscription;
mod versions;
mod webhook;
