//! The container runtime boundary: what the agent needs from an engine, in berth's words.
//!
//! [`ContainerRuntime`] is implemented by [`super::docker::Docker`] for real nodes; the
//! simulated nodes of the scale benchmarks will implement it in memory. Nothing above this trait
//! names bollard or Docker's API types.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("image {image} is not present and pulling it failed: {reason}")]
    Pull { image: String, reason: String },
    #[error("container {container} was not found")]
    NotFound { container: String },
    #[error("the container engine refused {action}: {reason}")]
    Engine { action: String, reason: String },
}

/// Which stream of an attached command a chunk of output came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputStream {
    Stdout,
    Stderr,
}

/// What an attached command writes, piece by piece, as it writes it.
pub type OutputChunks =
    std::pin::Pin<Box<dyn futures_util::Stream<Item = Result<(OutputStream, Vec<u8>), RuntimeError>> + Send>>;

/// A command running in a container, attached: what it writes, what it reads.
pub struct AttachedExec {
    /// The engine's id of the command, for [`ContainerRuntime::resize_exec`] and its exit code.
    pub exec_id: String,
    pub output: OutputChunks,
    pub input: std::pin::Pin<Box<dyn tokio::io::AsyncWrite + Send>>,
}

/// A port published on the node: `host_port` 0 lets the engine choose one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishedPort {
    pub container_port: u16,
    pub protocol: crate::manifest::types::Protocol,
    pub host_ip: String,
    pub host_port: u16,
}

/// What a container sees of the filesystem besides its image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MountSource {
    /// An engine-managed volume, by name.
    Volume(String),
    /// A path on the node.
    Bind(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub source: MountSource,
    pub target: String,
    pub read_only: bool,
}

/// Whose network namespace a container uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Network {
    /// Its own, publishing these ports, with these resolver settings (the engine's when
    /// `None`): a pod sandbox.
    Own { hostname: String, ports: Vec<PublishedPort>, dns: Option<super::proxy::DnsConfig> },
    /// The namespace of another container (a pod's sandbox).
    JoinContainer(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerSpec {
    pub name: String,
    pub image: String,
    /// Replaces the image's entrypoint when set (Kubernetes' `command`).
    pub entrypoint: Option<Vec<String>>,
    /// Replaces the image's command when set (Kubernetes' `args`).
    pub args: Option<Vec<String>>,
    pub env: Vec<(String, String)>,
    pub working_dir: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub network: Network,
    pub mounts: Vec<Mount>,
    pub memory_limit_bytes: Option<i64>,
    pub cpu_limit_nanos: Option<i64>,
    pub security: Security,
}

/// What a container runs as and may do, resolved from the pod's and the container's
/// `securityContext` ([`super::security`]). The default is the engine's default.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Security {
    /// `uid` or `uid:gid`; the image's user when `None`.
    pub user: Option<String>,
    /// Supplementary group ids.
    pub groups: Vec<String>,
    pub read_only_root: bool,
    pub capabilities_added: Vec<String>,
    pub capabilities_dropped: Vec<String>,
    pub no_new_privileges: bool,
    pub seccomp_unconfined: bool,
    pub privileged: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContainerState {
    Created,
    Running,
    Exited,
    /// Paused, restarting, removing, dead: states berth does not put containers in.
    Other,
}

/// What the engine says about one container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerInfo {
    pub id: String,
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub state: ContainerState,
    pub exit_code: Option<i64>,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub error: Option<String>,
    pub oom_killed: bool,
    /// Ports published on the node, as the engine reports them.
    pub published: Vec<PublishedPort>,
    /// The process id of the container's first process while it runs.
    pub pid: Option<i64>,
}

/// The engine operations the agent uses. Implementations must be safe to call concurrently.
pub trait ContainerRuntime: Send + Sync + 'static {
    /// Answers when the engine does.
    fn ping(&self) -> impl Future<Output = Result<(), RuntimeError>> + Send;
    /// Makes the image present: pulled when absent.
    fn ensure_image(&self, image: &str) -> impl Future<Output = Result<bool, RuntimeError>> + Send;
    /// Imports a root filesystem tar as an image with the given command, unless it is present.
    fn import_image(
        &self,
        image: &str,
        rootfs: Vec<u8>,
        command: &[&str],
    ) -> impl Future<Output = Result<(), RuntimeError>> + Send;
    fn create(&self, spec: &ContainerSpec) -> impl Future<Output = Result<String, RuntimeError>> + Send;
    fn start(&self, id: &str) -> impl Future<Output = Result<(), RuntimeError>> + Send;
    /// SIGTERM, then SIGKILL after `grace`.
    fn stop(&self, id: &str, grace: Duration) -> impl Future<Output = Result<(), RuntimeError>> + Send;
    /// Removes a container, killing it if it still runs.
    fn remove(&self, id: &str) -> impl Future<Output = Result<(), RuntimeError>> + Send;
    fn inspect(&self, id: &str) -> impl Future<Output = Result<ContainerInfo, RuntimeError>> + Send;
    /// Every container (running or not) that carries all of `labels`.
    fn list(&self, labels: &[(&str, &str)]) -> impl Future<Output = Result<Vec<ContainerInfo>, RuntimeError>> + Send;
    /// The user an image's processes run as (its `USER`), `None` when it names none.
    fn image_user(&self, image: &str) -> impl Future<Output = Result<Option<String>, RuntimeError>> + Send;
    /// Where a volume's files are on this node, for the agent to set their owner and mode.
    fn volume_path(&self, name: &str) -> impl Future<Output = Result<std::path::PathBuf, RuntimeError>> + Send;
    fn create_volume(
        &self,
        name: &str,
        labels: &BTreeMap<String, String>,
    ) -> impl Future<Output = Result<(), RuntimeError>> + Send;
    fn remove_volume(&self, name: &str) -> impl Future<Output = Result<(), RuntimeError>> + Send;
    /// The names of every volume that carries all of `labels`.
    fn list_volumes(&self, labels: &[(&str, &str)]) -> impl Future<Output = Result<Vec<String>, RuntimeError>> + Send;
    /// A stream that yields whenever a container labelled for `node` starts, dies or goes away;
    /// the agent converges at once instead of at its next resync.
    fn events(&self, node: &str) -> impl futures_util::Stream<Item = ()> + Send + 'static;
    /// Runs a network check on the loopback of the pod whose sandbox is `sandbox_id`.
    fn check_in_pod(
        &self,
        sandbox_id: &str,
        check: &super::netns::Check,
        timeout: Duration,
    ) -> impl Future<Output = Result<(), String>> + Send;
    /// A connection to `port` on the loopback of the pod whose sandbox is `sandbox_id`.
    fn connect_in_pod(
        &self,
        sandbox_id: &str,
        port: u16,
        timeout: Duration,
    ) -> impl Future<Output = Result<tokio::net::TcpStream, String>> + Send;
    /// Runs a command in a running container; returns its exit code, or an error after `timeout`.
    fn exec(
        &self,
        id: &str,
        command: &[String],
        timeout: Duration,
    ) -> impl Future<Output = Result<i64, RuntimeError>> + Send;
    /// Runs a command in a running container with `stdin` on its standard input; its exit code
    /// and what it wrote (stdout and stderr together, at most `EXEC_OUTPUT_LIMIT` bytes).
    fn exec_output(
        &self,
        id: &str,
        command: &[String],
        stdin: Option<&[u8]>,
        timeout: Duration,
    ) -> impl Future<Output = Result<(i64, String), RuntimeError>> + Send;
    /// Starts a command in a running container attached to its standard streams, for an
    /// interactive `berth exec`: with `tty`, on a terminal of its own (output on stdout only).
    fn exec_attached(
        &self,
        id: &str,
        command: &[String],
        tty: bool,
        stdin: bool,
    ) -> impl Future<Output = Result<AttachedExec, RuntimeError>> + Send;
    /// Sets the terminal size of an attached command started with `tty`.
    fn resize_exec(
        &self,
        exec_id: &str,
        columns: u16,
        rows: u16,
    ) -> impl Future<Output = Result<(), RuntimeError>> + Send;
    /// An attached command's exit code, once its output ended.
    fn exec_exit_code(&self, exec_id: &str) -> impl Future<Output = Result<i64, RuntimeError>> + Send;
    /// A running container's CPU time and memory in use; `None` when the engine cannot say.
    fn usage(&self, id: &str) -> impl Future<Output = Option<super::usage::Reading>> + Send;
    /// What a container writes, as it writes it, until it stops (or the stream is dropped):
    /// each line after its time, from the last `tail` lines (none: all) and since `since`.
    fn follow_logs(&self, id: &str, tail: Option<u64>, since: Option<i64>) -> OutputChunks;
    /// What a container wrote (stdout and stderr together): only the last `tail` lines, only
    /// since `since` (seconds since the epoch), each line after its time with `timestamps`.
    fn logs(
        &self,
        id: &str,
        tail: Option<u64>,
        since: Option<i64>,
        timestamps: bool,
    ) -> impl Future<Output = Result<String, RuntimeError>> + Send;
}
