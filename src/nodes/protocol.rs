//! The agent protocol: every message between the control plane and a node agent, in one place.
//!
//! Both sides use these types; they are the only types of `nodes` that derive serde traits.
//! The control plane resolves ConfigMap and Secret references before it assigns a pod, so an
//! agent never reads the store and a pod starts with exactly the values its assignment carries.

use crate::manifest::Kind;
use crate::manifest::types::PodSpec;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One pod the control plane assigns to a node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PodAssignment {
    /// Unique among the pods of a namespace, a DNS label such as `web-7f3c9`.
    pub pod: String,
    pub namespace: String,
    pub workload_kind: Kind,
    pub workload_name: String,
    /// The commit that introduced the pod template.
    pub revision: String,
    /// A hash of everything that, when changed, replaces the pod.
    pub spec_hash: String,
    pub spec: PodSpec,
    /// Each container's environment, references already resolved, in declaration order.
    #[serde(default)]
    pub env: BTreeMap<String, Vec<(String, String)>>,
    /// The files of configMap and secret volumes: volume name, then path inside the volume.
    #[serde(default)]
    pub files: BTreeMap<String, BTreeMap<String, Vec<u8>>>,
}

/// The lifecycle phase of a pod, as Kubernetes names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PodPhase {
    Pending,
    Running,
    Succeeded,
    Failed,
}

/// What one container of a pod is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ContainerStateName {
    Waiting,
    Running,
    Terminated,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerStatus {
    pub name: String,
    pub state: ContainerStateName,
    pub ready: bool,
    pub restart_count: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i64>,
    /// Why the container is not running as it should: a pull failure, a crash, a failed probe.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container_id: Option<String>,
}

/// A port of the pod reachable on the node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HostPort {
    pub container_port: u16,
    pub protocol: crate::manifest::types::Protocol,
    pub host_ip: String,
    pub host_port: u16,
}

/// What really runs for one pod on a node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodStatus {
    pub pod: String,
    pub namespace: String,
    pub spec_hash: String,
    pub phase: PodPhase,
    pub ready: bool,
    pub containers: Vec<ContainerStatus>,
    pub host_ports: Vec<HostPort>,
}
