//! The agent protocol: every message between the control plane and a node agent, in one place.
//!
//! Both sides use these types; they are the only types of `nodes` that derive serde traits.
//! The control plane resolves ConfigMap and Secret references before it assigns a pod, so an
//! agent never reads the store and a pod starts with exactly the values its assignment carries.

use crate::manifest::Kind;
pub use crate::manifest::quantity::Resources;
use crate::manifest::types::PodSpec;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The address every pod's resolver is given: the node's proxy answers it, and the control
/// plane keeps it out of the service addresses it hands out.
pub const DNS_ADDRESS: std::net::Ipv4Addr = std::net::Ipv4Addr::new(127, 77, 0, 10);

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
    /// A digest of the ConfigMap and Secret values the pod was given; empty when it reads none
    /// (or was assigned by an earlier berth). Tells which pods run older configuration.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub config_hash: String,
    /// Unique to this pod: a pod made again under the same name (a rollback to a template
    /// whose pods just stopped) is another pod, and a report of the earlier one never stands
    /// for it.
    #[serde(default)]
    pub uid: String,
    pub spec: PodSpec,
    /// Each container's complete environment, in order: `envFrom` first, then `env`, literal
    /// values and resolved `valueFrom` references alike, so a later name overrides an earlier
    /// one as in Kubernetes. The agent adds nothing to it and reads nothing of `spec.env`.
    #[serde(default)]
    pub env: BTreeMap<String, Vec<(String, String)>>,
    /// The files of configMap and secret volumes: volume name, then path inside the volume.
    #[serde(default)]
    pub files: BTreeMap<String, BTreeMap<String, Vec<u8>>>,
    /// Per container, the names in `env` whose values come from Secrets: what the agent hides
    /// when it shows a container's output.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub secret_env: BTreeMap<String, Vec<String>>,
    /// Variables of `env` and files of downwardAPI volumes whose value is the node's
    /// (`fieldRef` of `spec.nodeName`, `status.hostIP`, `status.podIP`, a `resourceFieldRef` of
    /// a limit that is not set): the controller fills them when it places the pod. Never sent
    /// or stored.
    #[serde(skip)]
    pub node_env: Vec<NodeEnv>,
}

/// A variable of a pod's environment, or a file of its downwardAPI volumes, that waits for the
/// pod's node.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeEnv {
    pub target: NodeTarget,
    pub value: NodeValue,
}

#[derive(Debug, Clone, PartialEq)]
pub enum NodeTarget {
    /// A variable, by its place in the container's `env` list.
    Env { container: String, index: usize },
    /// A file of a volume, by its path in the volume.
    File { volume: String, path: String },
}

#[derive(Debug, Clone, PartialEq)]
pub enum NodeValue {
    Name,
    Address,
    /// A resource of `container` whose amount is the node's allocatable when not set.
    Resource {
        field: crate::manifest::downward::ResourceField,
        container: String,
        divisor: i128,
    },
}

/// The lifecycle phase of a pod, as Kubernetes names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PodPhase {
    Pending,
    Running,
    Succeeded,
    Failed,
}

impl PodPhase {
    /// Kubernetes' word for the phase.
    pub fn as_str(self) -> &'static str {
        match self {
            PodPhase::Pending => "Pending",
            PodPhase::Running => "Running",
            PodPhase::Succeeded => "Succeeded",
            PodPhase::Failed => "Failed",
        }
    }
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
    /// Why the container is not running as it should now: a pull failure, a crash it waits to
    /// restart from, a failed probe. It belongs to the current attempt and goes with it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// Kubernetes' word for a container that is not simply running: `ContainerCreating`,
    /// `CrashLoopBackOff`, `ImagePullBackOff`, `CreateContainerError`, `Completed`, `Error`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// How the previous attempt ended, when the container was restarted, with its last
    /// output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_termination: Option<String>,
    /// The last lines the current attempt wrote, once it ended with an error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_output: Option<String>,
    /// How many times the current attempt's probes have failed, all told.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub probe_failures: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container_id: Option<String>,
    /// The node pulled the container's image for it: which, and how long it took.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pulled: Option<String>,
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
    /// The `uid` of the assignment this status is of.
    #[serde(default)]
    pub uid: String,
    pub phase: PodPhase,
    pub ready: bool,
    pub containers: Vec<ContainerStatus>,
    pub host_ports: Vec<HostPort>,
    /// The workload the pod belongs to, so a pod that is no longer assigned still counts for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload_kind: Option<Kind>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub workload_name: String,
    /// Its node stops it: it is no longer assigned and its containers have not all gone yet.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub terminating: bool,
}

/// `POST /api/v1/agent/join`, authorized by the cluster's join token: an agent trades the token
/// for a credential of its own node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JoinRequest {
    pub node: String,
    pub address: String,
    pub labels: BTreeMap<String, String>,
    pub capacity: Resources,
    /// The node's public key (P-256, uncompressed point, base64) to certify, over TLS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JoinResponse {
    pub node: String,
    /// The node's secret; the server keeps only its digest.
    pub credential: String,
    /// The node's client certificate, when it joined over TLS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate: Option<NodeCertificate>,
}

/// `POST /api/v1/agent/nodes/{node}/certificate`: a new client certificate for a new key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CertificateRequest {
    /// P-256, uncompressed point, base64.
    pub public_key: String,
}

/// A node's client certificate, signed by the cluster's CA.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeCertificate {
    /// The certificate in PEM.
    pub certificate: String,
    /// The CA's certificate in PEM.
    pub ca: String,
    /// When the certificate expires, in Unix seconds.
    pub expires: i64,
}

/// `POST /api/v1/agent/nodes/{node}/heartbeat`, authorized by the node's credential.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Heartbeat {
    pub address: String,
    pub labels: BTreeMap<String, String>,
    pub capacity: Resources,
    pub allocatable: Resources,
    /// The node's last usage sample, once it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<NodeUsage>,
    /// The port on the node's address where other nodes' service traffic comes in over mutual
    /// TLS, when the node has a certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tunnel_port: Option<u16>,
}

/// A node's resource usage at one sample: the node's, and each running container's.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeUsage {
    /// When it was sampled, in seconds since the epoch.
    pub sampled_at: i64,
    /// The time the CPU rates are averaged over, in milliseconds.
    pub window_ms: u64,
    /// The node's CPU in use, in millicores; `None` until a second sample gives a rate.
    pub cpu_millis: Option<u64>,
    /// The node's memory in use, in bytes.
    pub memory_bytes: Option<u64>,
    /// The pods with a rate for at least one container.
    pub pods: Vec<PodUsage>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodUsage {
    pub namespace: String,
    pub pod: String,
    pub containers: Vec<ContainerUsage>,
}

impl PodUsage {
    /// The pod's usage: its containers' summed (millicores, bytes).
    pub fn total(&self) -> (u64, u64) {
        self.containers
            .iter()
            .fold((0, 0), |(cpu, memory), c| (cpu.saturating_add(c.cpu_millis), memory.saturating_add(c.memory_bytes)))
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerUsage {
    pub name: String,
    pub cpu_millis: u64,
    /// CPU time the container used since it started, in nanoseconds.
    #[serde(default)]
    pub cpu_ns: u64,
    /// The working set: memory in use without the page cache the kernel can take back.
    pub memory_bytes: u64,
}

/// `GET /api/v1/agent/nodes/{node}/assignment?after=G&waitSeconds=S`: the full list of pods the
/// node must run. The server answers at once when its generation is newer than `after`, and
/// otherwise when it changes or the wait ends. An agent that missed assignments converges
/// exactly as one that saw them all: every answer is the whole desired state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Assignment {
    pub generation: u64,
    pub pods: Vec<PodAssignment>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AssignmentQuery {
    #[serde(default)]
    pub after: u64,
    #[serde(default)]
    pub wait_seconds: u64,
}

/// `POST /api/v1/agent/nodes/{node}/report`: what really runs for the node's assigned pods.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    /// The assignment generation the agent was converging to.
    pub generation: u64,
    pub pods: Vec<PodStatus>,
}

/// The body of every error answer of the API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
}

/// `GET /api/v1/agent/nodes/{node}/routes?after=V&waitSeconds=S`: every service of the cluster
/// with the ready pods behind it. Long-polled like the assignment; asking for versions after `V`
/// tells the server that the node routes by version `V`, so it knows when a pod that is about
/// to stop has left every node's routing.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RouteTable {
    pub version: u64,
    pub services: Vec<ServiceRoute>,
    /// The nodes that take service traffic over mutual TLS, and the certificates that are
    /// theirs: a node tunnels to another node's endpoints, and takes tunnels only from these.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub peers: Vec<TunnelPeer>,
}

/// Where a node takes tunnelled service traffic, and the fingerprints of its certificates.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TunnelPeer {
    pub node: String,
    pub address: String,
    pub port: u16,
    pub certificates: Vec<String>,
}

/// One service: its addresses and its ready endpoints on every node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceRoute {
    pub namespace: String,
    pub name: String,
    /// The service's virtual address, which pods reach through the node's proxy; `None` for a
    /// headless service, whose name resolves to one address per ready pod instead.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster_ip: Option<String>,
    pub ports: Vec<RoutePort>,
    /// Ready pods, in a stable order.
    pub endpoints: Vec<Endpoint>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RoutePort {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub port: u16,
    /// Every node answers on it, for NodePort and LoadBalancer services.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_port: Option<u16>,
}

/// A ready pod behind a service, as reachable from any node: the node's address and the host
/// ports the pod's ports are published on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Endpoint {
    pub pod: String,
    pub node: String,
    pub host_ip: String,
    /// Service port to host port, for the ports whose target the pod publishes.
    pub ports: Vec<(u16, u16)>,
    /// A headless service's address for this pod, and its container ports to host ports.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod_ip: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pod_ports: Vec<(u16, u16)>,
}

/// `GET /api/v1/agent/nodes/{node}/requests?after=ID&waitSeconds=S`: what the server asks of
/// the node, long-polled over the connection the agent opens (nodes only dial out). The agent
/// answers each with `POST .../requests/{id}` and an [`AgentAnswer`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentRequest {
    pub id: u64,
    /// One of these: a container's log, or a command to run in it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logs: Option<LogRequest>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exec: Option<ExecRequest>,
    /// The volume of a claim to remove, with its data (`berth delete pvc`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remove_claim: Option<ClaimRequest>,
    /// A port-forward: the node dials `GET .../sessions/{id}` back, upgraded, and splices it
    /// to the port on the pod's loopback (`nodes::session`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_forward: Option<PortForwardRequest>,
    /// A command attached to the user's terminal: the node dials back as for a port-forward,
    /// and the session carries frames (`nodes::session::frame`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exec_session: Option<ExecSessionRequest>,
    /// A container's log as it is written, each line after its time: the node dials back and
    /// writes it on the session until the container stops.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_stream: Option<LogRequest>,
}

/// A command to run in a container attached to the user's terminal (`berth exec [-i] [-t]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExecSessionRequest {
    pub namespace: String,
    pub pod: String,
    pub container: String,
    pub command: Vec<String>,
    /// On a terminal of its own, sized `columns` x `rows` when both are given.
    #[serde(default)]
    pub tty: bool,
    /// Whether it reads the user's standard input.
    #[serde(default)]
    pub stdin: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<(u16, u16)>,
}

/// A port of a pod to reach, for `berth port-forward`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortForwardRequest {
    pub namespace: String,
    pub pod: String,
    pub port: u16,
}

/// A claim's volume on the node: namespace and claim name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClaimRequest {
    pub namespace: String,
    pub claim: String,
}

impl AgentRequest {
    /// The container the request is about: namespace, pod and container.
    pub fn container(&self) -> Option<(&str, &str, &str)> {
        match (self.logs.as_ref().or(self.log_stream.as_ref()), &self.exec, &self.exec_session) {
            (Some(l), _, _) => Some((&l.namespace, &l.pod, &l.container)),
            (_, Some(e), _) => Some((&e.namespace, &e.pod, &e.container)),
            (_, _, Some(e)) => Some((&e.namespace, &e.pod, &e.container)),
            _ => None,
        }
    }
}

/// A command to run in a running container (`berth exec`): its output and exit code come back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExecRequest {
    pub namespace: String,
    pub pod: String,
    pub container: String,
    pub command: Vec<String>,
    /// What the command reads on its standard input, all of it; none when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdin: Option<String>,
    /// The command is stopped waiting for after this long.
    pub timeout_seconds: u64,
}

/// The log of one container of a pod on the node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LogRequest {
    pub namespace: String,
    pub pod: String,
    pub container: String,
    /// The attempt before the current one (kept until the next restart).
    #[serde(default)]
    pub previous: bool,
    /// Only the last lines.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tail: Option<u64>,
    /// Only what was written since this time (seconds since the epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<i64>,
    #[serde(default)]
    pub timestamps: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentAnswer {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
    /// A command's exit code, for an exec request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i64>,
    /// Why there is no output, in words for the user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[expect(clippy::trivially_copy_pass_by_ref, reason = "serde's skip_serializing_if passes a reference")]
fn is_zero(n: &u32) -> bool {
    *n == 0
}
