//! Runs assigned pods on a container runtime: the part of the agent that touches containers.
//!
//! [`PodManager::converge`] is one level-triggered pass: it lists the containers this node owns,
//! compares them with the assigned pods and takes every step that is due: create a pod, replace
//! one whose spec hash changed, restart an exited container under its restart policy and
//! backoff, bring back a container removed by hand, and stop and remove a pod no longer assigned.
//! Calling it twice in a row changes nothing the second time.
//!
//! Ownership is two facts together: the berth labels on a container and its id in the node's
//! inventory file, written before the container starts. A container that only looks like ours
//! (same labels, similar name) is never touched.

use super::protocol::{ContainerStateName, ContainerStatus, HostPort, PodAssignment, PodPhase, PodStatus};
use super::runtime::{
    ContainerInfo, ContainerRuntime, ContainerSpec, ContainerState, Mount, MountSource, Network, PublishedPort,
    RuntimeError, Security,
};
use super::sandbox;
use crate::manifest::types::{Container, Protocol, RestartPolicy};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The labels berth puts on every container and volume it creates.
pub mod labels {
    pub const NODE: &str = "berth.dev/node";
    pub const NAMESPACE: &str = "berth.dev/namespace";
    pub const POD: &str = "berth.dev/pod";
    pub const WORKLOAD_KIND: &str = "berth.dev/workload-kind";
    pub const WORKLOAD_NAME: &str = "berth.dev/workload-name";
    pub const REVISION: &str = "berth.dev/revision";
    pub const SPEC_HASH: &str = "berth.dev/spec-hash";
    pub const POD_UID: &str = "berth.dev/pod-uid";
    /// `sandbox` or `container`.
    pub const ROLE: &str = "berth.dev/role";
    pub const CONTAINER: &str = "berth.dev/container";
    /// 0 for the first run of a container, one more for every restart.
    pub const ATTEMPT: &str = "berth.dev/attempt";
    pub const GRACE_SECONDS: &str = "berth.dev/grace-seconds";
    pub const RESTART_POLICY: &str = "berth.dev/restart-policy";
    /// The container's preStop hook, resolved (`hooks::Hook` as JSON): it is run when the
    /// container stops, whether or not its pod is still assigned.
    pub const PRE_STOP: &str = "berth.dev/pre-stop";
    /// The claim a claim's volume holds the data of.
    pub const CLAIM: &str = "berth.dev/claim";
}

#[derive(Debug, thiserror::Error)]
pub enum PodError {
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error("writing {path} failed")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the inventory {path} is unreadable; move it away only if no container of this node runs")]
    Inventory {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("pod {pod}: {reason}")]
    Routing { pod: String, reason: String },
    #[error(transparent)]
    Files(#[from] super::files::FilesError),
    #[error("hostPath {path} resolves on this node to {resolved}: {reason}; mount the folder itself")]
    HostPath { path: String, resolved: String, reason: String },
    /// The container's securityContext cannot be met (Kubernetes' CreateContainerConfigError).
    #[error("container {container}: {reason}")]
    Security { container: String, reason: String },
}

#[derive(Debug, Clone)]
pub struct PodManagerConfig {
    pub node: String,
    /// The node's address: ports are published on it.
    pub address: String,
    pub state_dir: PathBuf,
    /// Where the files of Secret volumes live: a tmpfs (`/dev/shm`) when the node has one, as
    /// the kubelet keeps them, so no secret value reaches the node's disk; outside the state
    /// folder, removed with the pod.
    pub secrets_dir: PathBuf,
    /// The first restart delay of a crashing container; it doubles with every restart.
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    /// The node's service proxy: pods get its resolver, their namespace's redirect rules and
    /// the service variables. Without it pods get the engine's resolver and no services.
    pub mesh: Option<Arc<super::proxy::Mesh>>,
}

impl PodManagerConfig {
    pub fn new(node: &str, address: &str, state_dir: &Path) -> Self {
        PodManagerConfig {
            node: node.to_owned(),
            address: address.to_owned(),
            state_dir: state_dir.to_owned(),
            secrets_dir: secrets_dir_for(state_dir),
            backoff_base: Duration::from_secs(10),
            backoff_max: Duration::from_secs(300),
            mesh: None,
        }
    }
}

/// The secrets folder of the agent whose state is `state_dir`: on `/dev/shm`, named after the
/// state folder so that agents on one machine never share one; in the state folder when the
/// machine has no `/dev/shm`.
fn secrets_dir_for(state_dir: &Path) -> PathBuf {
    let shm = Path::new("/dev/shm");
    if !shm.is_dir() {
        return state_dir.join("secrets");
    }
    let absolute = std::path::absolute(state_dir).unwrap_or_else(|_| state_dir.to_owned());
    let digest = crate::manifest::hex_digest(absolute.as_os_str().as_encoded_bytes());
    shm.join(format!("berth-{}", &digest[..16]))
}

/// The ids of the containers and the names of the volumes this node created.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct Inventory {
    containers: BTreeSet<String>,
    volumes: BTreeSet<String>,
    /// The volumes of claims: they outlive pods, and go only when the server asks.
    #[serde(default)]
    claims: BTreeSet<String>,
}

/// The engine's name for the volume of claim `namespace/claim` on `node`. Apart from pods'
/// names (`berth_...`), and injective for the reason [`engine_name`] is.
pub fn claim_volume_name(node: &str, namespace: &str, claim: &str) -> String {
    format!("berthclaim_{node}_{namespace}_{claim}")
}

/// Why a container waits instead of running.
#[derive(Debug, Clone)]
struct Waiting {
    reason: String,
    until: Instant,
    failures: u32,
    /// The configuration cannot be met as it is (a runAsNonRoot image that runs as root): no
    /// retry helps until the assignment changes, but it is tried again after the backoff.
    config_error: bool,
}

pub struct PodManager<R: ContainerRuntime> {
    runtime: Arc<R>,
    config: PodManagerConfig,
    inventory: Mutex<Inventory>,
    /// Per `namespace/pod/container`: a restart or pull waiting for its backoff to pass.
    waiting: Mutex<HashMap<String, Waiting>>,
    /// Images seen present on the engine; a create that fails forgets them all.
    present_images: Mutex<BTreeSet<String>>,
    /// Per `namespace/pod/container`: the image pulled for it, and how long that took.
    pulls: Mutex<HashMap<String, String>>,
    /// Per container id and probe kind: the probe's counts and result.
    probes: Mutex<HashMap<(String, ProbeKind), ProbeState>>,
    /// Per `namespace/pod/container`: why its previous attempt ended, and whether a probe ended
    /// it; shown until the next attempt ends.
    stopped_because: Mutex<HashMap<String, (String, bool)>>,
    /// Pods no longer assigned whose containers were asked to stop, by `namespace/pod`: when.
    /// They stop in the background, each within its grace period, and are removed by the first
    /// pass that finds none of their containers running; meanwhile they are reported
    /// `terminating`.
    stopping: Mutex<HashMap<String, Instant>>,
    /// Per container id that ended with an error: its last lines (`output_of`), read once.
    outputs: Mutex<HashMap<String, Option<String>>>,
}

/// How many lines of an ended container's output are shown.
const OUTPUT_LINES: usize = 3;
/// At most this many characters of them.
const OUTPUT_CHARS: usize = 300;

/// The values `container` of `assignment` got from Secrets: its variables from them, and the
/// files of the pod's secret volumes. What a container's output shows is never one of them.
pub fn secret_values<'a>(assignment: &'a PodAssignment, container: &str) -> Vec<&'a str> {
    let names = assignment.secret_env.get(container).map(Vec::as_slice).unwrap_or_default();
    let env = assignment.env.get(container).map(Vec::as_slice).unwrap_or_default();
    let mut hidden: Vec<&str> =
        env.iter().filter(|(name, _)| names.contains(name)).map(|(_, value)| value.as_str()).collect();
    for volume in assignment.spec.volumes.iter().filter(|v| v.secret.is_some()) {
        for contents in assignment.files.get(&volume.name).into_iter().flatten().map(|(_, c)| c) {
            if let Ok(text) = std::str::from_utf8(contents) {
                hidden.push(text.trim());
            }
        }
    }
    hidden
}

/// `text` with every value of `hidden` (of 4 characters or more) replaced by `(hidden)`.
pub fn hide(text: &str, hidden: &[&str]) -> String {
    let mut text = text.to_owned();
    for value in hidden.iter().filter(|v| v.len() >= 4) {
        text = text.replace(value, "(hidden)");
    }
    text
}

/// An ended container's last lines as one line (` / ` between them), with every value in
/// `hidden` replaced; empty lines are left out, and the whole cut to `OUTPUT_CHARS`.
fn summarize_output(text: &str, hidden: &[&str]) -> String {
    let mut lines: Vec<String> = text.lines().map(str::trim).filter(|l| !l.is_empty()).map(str::to_owned).collect();
    let keep = lines.len().saturating_sub(OUTPUT_LINES);
    lines.drain(..keep);
    let summary = hide(&lines.join(" / "), hidden);
    match summary.char_indices().nth(OUTPUT_CHARS) {
        Some((cut, _)) => format!("{}...", &summary[..cut]),
        None => summary,
    }
}

#[cfg(test)]
mod output_tests {
    use super::*;

    #[test]
    fn an_ended_containers_output_is_its_last_lines_with_secrets_hidden() {
        let text = "starting\n\nloading /etc/app.conf\nusing token s3cr3t-token\nboom: cannot open /etc/app.conf\n";
        assert_eq!(
            summarize_output(text, &["s3cr3t-token", "ab"]),
            "loading /etc/app.conf / using token (hidden) / boom: cannot open /etc/app.conf"
        );
        assert_eq!(summarize_output("", &[]), "");
        let long = "x".repeat(1000);
        assert_eq!(summarize_output(&long, &[]).chars().count(), OUTPUT_CHARS + 3);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum ProbeKind {
    Startup,
    Liveness,
    Readiness,
}

impl ProbeKind {
    fn word(self) -> &'static str {
        match self {
            ProbeKind::Startup => "startup",
            ProbeKind::Liveness => "liveness",
            ProbeKind::Readiness => "readiness",
        }
    }
}

#[derive(Debug, Clone)]
struct ProbeState {
    /// When the agent first saw the container running: initialDelaySeconds counts from here.
    since: Instant,
    last_run: Option<Instant>,
    successes: u32,
    failures: u32,
    /// Startup: has passed. Readiness: is ready. Liveness: unused.
    passed: bool,
    last_error: Option<String>,
    /// Every failure of this probe on this container, for the Unhealthy event's count.
    total_failures: u32,
}

/// What a probe pass changed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ProbeSummary {
    pub probes_run: usize,
    /// The probes that failed this pass.
    pub failures: Vec<ProbeFailure>,
    /// Readiness flipped for some container.
    pub readiness_changed: bool,
    /// Containers stopped because their liveness or startup probe failed.
    pub containers_stopped: usize,
}

/// A probe that failed once: which container's, and which probe (`liveness`, `readiness`,
/// `startup`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeFailure {
    pub namespace: String,
    pub pod: String,
    pub container: String,
    pub probe: &'static str,
}

/// What one converge pass did, and when the next one is due at the latest.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ConvergeSummary {
    pub pods_created: usize,
    pub pods_removed: usize,
    pub containers_restarted: usize,
    /// The earliest moment a waiting restart or pull becomes due.
    pub next_due: Option<Instant>,
}

/// The containers of one pod on this node.
#[derive(Debug, Default)]
struct ObservedPod {
    sandbox: Option<ContainerInfo>,
    /// Per container name, every attempt, latest last.
    containers: BTreeMap<String, Vec<ContainerInfo>>,
    spec_hash: String,
    uid: String,
    namespace: String,
    pod: String,
}

impl ObservedPod {
    /// Whether these containers are the assigned pod, not an earlier one of the same name.
    fn is(&self, assignment: &PodAssignment) -> bool {
        self.spec_hash == assignment.spec_hash && self.uid == assignment.uid
    }
}

/// A name on the engine for the parts of a pod's identity (node, namespace, pod, then a
/// container and attempt or a volume). Injective: every part is a DNS name, which never holds
/// `_`, so `_` between them cannot be read two ways (`team/x-app` and `team-x/app` differ).
pub fn engine_name(parts: &[&str]) -> String {
    let mut name = String::from("berth");
    for part in parts {
        name.push('_');
        name.push_str(part);
    }
    name
}

fn pod_key(namespace: &str, pod: &str) -> String {
    format!("{namespace}/{pod}")
}

/// How often a stopping pod is looked at, besides the engine's events.
const STOPPING_CHECK: Duration = Duration::from_millis(500);

/// The pod's termination grace period, from the labels of its containers.
fn grace_of(pod: &ObservedPod) -> Duration {
    pod.containers
        .values()
        .flatten()
        .chain(pod.sandbox.iter())
        .find_map(|c| c.labels.get(labels::GRACE_SECONDS))
        .and_then(|g| g.parse().ok())
        .map_or(Duration::from_secs(30), Duration::from_secs)
}

fn attempt_of(info: &ContainerInfo) -> u32 {
    info.labels.get(labels::ATTEMPT).and_then(|a| a.parse().ok()).unwrap_or(0)
}

impl<R: ContainerRuntime> PodManager<R> {
    /// Loads the node's inventory from its state folder and makes the sandbox image present.
    pub async fn new(runtime: Arc<R>, config: PodManagerConfig) -> Result<Self, PodError> {
        crate::private::private_dir(&config.state_dir)
            .map_err(|source| PodError::Io { path: config.state_dir.clone(), source })?;
        let path = config.state_dir.join("inventory.json");
        let inventory = match std::fs::read(&path) {
            Ok(bytes) => {
                serde_json::from_slice(&bytes).map_err(|source| PodError::Inventory { path: path.clone(), source })?
            }
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Inventory::default(),
            Err(source) => return Err(PodError::Io { path, source }),
        };
        runtime.import_image(&sandbox::image_name(), sandbox::rootfs(), &["/pause"]).await?;
        Ok(PodManager {
            runtime,
            config,
            inventory: Mutex::new(inventory),
            waiting: Mutex::new(HashMap::new()),
            present_images: Mutex::new(BTreeSet::new()),
            pulls: Mutex::new(HashMap::new()),
            probes: Mutex::new(HashMap::new()),
            stopped_because: Mutex::new(HashMap::new()),
            stopping: Mutex::new(HashMap::new()),
            outputs: Mutex::new(HashMap::new()),
        })
    }

    /// The last lines container `id` of `assignment` wrote, read once from the engine, with the
    /// values the pod got from Secrets hidden.
    async fn output_of(&self, assignment: &PodAssignment, container: &str, id: &str) -> Option<String> {
        if let Some(known) = self.outputs.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get(id) {
            return known.clone();
        }
        let text = self.runtime.logs(id, Some(OUTPUT_LINES as u64 * 4), None, false).await.ok();
        let hidden = secret_values(assignment, container);
        let summary = text.map(|t| summarize_output(&t, &hidden)).filter(|s| !s.is_empty());
        self.outputs.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(id.to_owned(), summary.clone());
        summary
    }

    pub fn runtime(&self) -> &Arc<R> {
        &self.runtime
    }

    fn lock_inventory(&self) -> std::sync::MutexGuard<'_, Inventory> {
        // A panic while holding the lock cannot leave the inventory half-written: every change
        // is one insert or remove.
        self.inventory.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn lock_waiting(&self) -> std::sync::MutexGuard<'_, HashMap<String, Waiting>> {
        self.waiting.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn lock_pulls(&self) -> std::sync::MutexGuard<'_, HashMap<String, String>> {
        crate::lock(&self.pulls)
    }

    fn lock_probes(&self) -> std::sync::MutexGuard<'_, HashMap<(String, ProbeKind), ProbeState>> {
        self.probes.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn lock_stopping(&self) -> std::sync::MutexGuard<'_, HashMap<String, Instant>> {
        crate::lock(&self.stopping)
    }

    fn lock_stopped(&self) -> std::sync::MutexGuard<'_, HashMap<String, (String, bool)>> {
        self.stopped_because.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Applies `change` to the inventory and writes it (write, rename). A crash of the agent
    /// cannot lose it: it is in the kernel's page cache. Only a power loss can, and then the loss
    /// is an entry, so a container is left behind unowned, never a foreign one touched;
    /// [`Self::sync_inventory`] makes it durable once per pass.
    fn record(&self, change: impl FnOnce(&mut Inventory)) -> Result<(), PodError> {
        let mut inventory = self.lock_inventory();
        change(&mut inventory);
        let path = self.config.state_dir.join("inventory.json");
        let temporary = self.config.state_dir.join("inventory.json.tmp");
        let bytes = serde_json::to_vec_pretty(&*inventory).unwrap_or_default();
        let write = || -> std::io::Result<()> {
            crate::private::write_private(&temporary, &bytes)?;
            std::fs::rename(&temporary, &path)
        };
        write().map_err(|source| PodError::Io { path, source })
    }

    /// Flushes the inventory and its folder to disk.
    fn sync_inventory(&self) -> Result<(), PodError> {
        let _guard = self.lock_inventory();
        let path = self.config.state_dir.join("inventory.json");
        let sync = |path: &Path| std::fs::File::open(path).and_then(|f| f.sync_all());
        match sync(&path).and_then(|()| sync(&self.config.state_dir)) {
            Ok(()) => Ok(()),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(PodError::Io { path, source }),
        }
    }

    /// Containers labelled for this node whose ids are in the inventory.
    async fn owned(&self) -> Result<Vec<ContainerInfo>, PodError> {
        let listed = self.runtime.list(&[(labels::NODE, &self.config.node)]).await?;
        let inventory = self.lock_inventory();
        Ok(listed.into_iter().filter(|c| inventory.containers.contains(&c.id)).collect())
    }

    async fn observed_pods(&self) -> Result<BTreeMap<String, ObservedPod>, PodError> {
        let mut pods: BTreeMap<String, ObservedPod> = BTreeMap::new();
        for info in self.owned().await? {
            let (Some(namespace), Some(pod)) = (info.labels.get(labels::NAMESPACE), info.labels.get(labels::POD))
            else {
                continue;
            };
            let entry = pods.entry(pod_key(namespace, pod)).or_default();
            entry.namespace.clone_from(namespace);
            entry.pod.clone_from(pod);
            entry.spec_hash = info.labels.get(labels::SPEC_HASH).cloned().unwrap_or_default();
            entry.uid = info.labels.get(labels::POD_UID).cloned().unwrap_or_default();
            if info.labels.get(labels::ROLE).map(String::as_str) == Some("sandbox") {
                entry.sandbox = Some(info);
            } else if let Some(name) = info.labels.get(labels::CONTAINER).cloned() {
                entry.containers.entry(name).or_default().push(info);
            }
        }
        for pod in pods.values_mut() {
            for attempts in pod.containers.values_mut() {
                attempts.sort_by_key(attempt_of);
            }
        }
        Ok(pods)
    }

    /// One level-triggered pass towards `desired`.
    pub async fn converge(&self, desired: &[PodAssignment]) -> Result<ConvergeSummary, PodError> {
        let mut summary = ConvergeSummary::default();
        let observed = self.observed_pods().await?;
        let desired_by_key: BTreeMap<String, &PodAssignment> =
            desired.iter().map(|p| (pod_key(&p.namespace, &p.pod), p)).collect();

        // Pods no longer assigned, or assigned with another spec, stop together: each honors its
        // own grace period, and none waits for another's.
        let mut leaving = Vec::new();
        for (key, pod) in &observed {
            let keep = desired_by_key.get(key).is_some_and(|d| pod.is(d));
            let sandbox_lost = pod.sandbox.as_ref().is_none_or(|s| s.state != ContainerState::Running);
            if !keep || sandbox_lost {
                leaving.push(key.clone());
            }
        }
        // A pod that is gone stops while the others are set up; only a pod replaced under the
        // same name (a new spec hash, a lost sandbox) must be gone before its successor starts.
        let (replaced, gone): (Vec<String>, Vec<String>) =
            leaving.into_iter().partition(|key| desired_by_key.contains_key(key));
        self.lock_waiting().retain(|key, _| desired_by_key.keys().any(|pod| key.starts_with(&format!("{pod}/"))));
        self.lock_pulls().retain(|key, _| desired_by_key.keys().any(|pod| key.starts_with(&format!("{pod}/"))));
        self.lock_stopping().retain(|key, _| gone.contains(key));
        let removing_gone = futures_util::future::join_all(
            gone.iter()
                .filter_map(|key| observed.get(key).map(|pod| (key, pod)))
                .map(|(key, pod)| self.retire(key, pod)),
        );
        let setting_up = async {
            let mut created = 0;
            let mut restarted = 0;
            let mut removed = 0;
            let replacements = replaced.iter().filter_map(|key| observed.get(key)).map(|pod| self.remove_pod(pod));
            for result in futures_util::future::join_all(replacements).await {
                match result {
                    Ok(()) => removed += 1,
                    Err(error) => self.removal_failed(&error),
                }
            }
            // One pod's failure (a name taken by a foreign container, an engine error) is that
            // pod's: it waits out a backoff and shows in its status, and the other pods go on.
            for (key, assignment) in &desired_by_key {
                let existing = observed.get(key).filter(|_| !replaced.contains(key));
                let result = match existing {
                    None => self.create_pod(assignment).await.map(|done| created += usize::from(done)),
                    Some(pod) => self.repair_pod(assignment, pod).await.map(|count| restarted += count),
                };
                if let Err(error) = result {
                    self.pod_failed(assignment, &error);
                }
            }
            (created, restarted, removed)
        };
        let (gone_results, (created, restarted, replaced_removed)) = tokio::join!(removing_gone, setting_up);
        summary.pods_created = created;
        summary.containers_restarted = restarted;
        summary.pods_removed = replaced_removed;
        for result in gone_results {
            match result {
                Ok(true) => summary.pods_removed += 1,
                Ok(false) => {}
                Err(error) => self.removal_failed(&error),
            }
        }
        summary.next_due = self.lock_waiting().values().map(|w| w.until).min();
        if !self.lock_stopping().is_empty() {
            // A stopping pod is looked at again soon, whether or not the engine says it died.
            let soon = Instant::now() + STOPPING_CHECK;
            summary.next_due = Some(summary.next_due.map_or(soon, |due| due.min(soon)));
        }
        if summary.pods_created + summary.pods_removed + summary.containers_restarted > 0 {
            self.sync_inventory()?;
        }
        Ok(summary)
    }

    /// A pod that could not be removed is tried again on the next pass.
    fn removal_failed(&self, error: &PodError) {
        tracing::warn!(node = %self.config.node, %error, "Removing a pod failed; it is tried again on the next pass.");
    }

    /// Records a pod's failure on each of its containers, to be retried after a growing backoff.
    fn pod_failed(&self, assignment: &PodAssignment, error: &PodError) {
        let mut waiting = self.lock_waiting();
        for container in &assignment.spec.containers {
            let key = format!("{}/{}", pod_key(&assignment.namespace, &assignment.pod), container.name);
            let failures = waiting.get(&key).map_or(0, |w| w.failures) + 1;
            let until = Instant::now() + self.backoff(failures);
            let config_error = matches!(error, PodError::Security { .. });
            waiting.insert(key, Waiting { reason: error.to_string(), until, failures, config_error });
        }
    }

    fn backoff(&self, failures: u32) -> Duration {
        let factor = 2u32.saturating_pow(failures.saturating_sub(1)).min(1 << 16);
        (self.config.backoff_base * factor).min(self.config.backoff_max)
    }

    /// Whether any container of the pod waits out a backoff.
    fn pod_waiting(&self, assignment: &PodAssignment) -> bool {
        let prefix = format!("{}/", pod_key(&assignment.namespace, &assignment.pod));
        let now = Instant::now();
        self.lock_waiting().iter().any(|(key, waiting)| key.starts_with(&prefix) && waiting.until > now)
    }

    /// Pulls every image of the pod; a failure waits out a growing backoff, never a hot loop.
    async fn ensure_images(&self, assignment: &PodAssignment) -> bool {
        let mut all_present = true;
        for container in assignment.spec.all_containers() {
            let key = format!("{}/{}", pod_key(&assignment.namespace, &assignment.pod), container.name);
            if self.lock_waiting().get(&key).is_some_and(|w| w.until > Instant::now()) {
                all_present = false;
                continue;
            }
            if self.present_images.lock().unwrap_or_else(std::sync::PoisonError::into_inner).contains(&container.image)
            {
                continue;
            }
            let started = Instant::now();
            match self.runtime.ensure_image(&container.image).await {
                Ok(pulled) => {
                    if pulled {
                        let took = started.elapsed().as_secs_f64();
                        self.lock_pulls()
                            .insert(key.clone(), format!("pulled image {} in {took:.1} s", container.image));
                    }
                    self.lock_waiting().remove(&key);
                    self.present_images
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .insert(container.image.clone());
                }
                Err(error) => {
                    all_present = false;
                    let mut waiting = self.lock_waiting();
                    let failures = waiting.get(&key).map_or(0, |w| w.failures) + 1;
                    let until = Instant::now() + self.backoff(failures);
                    waiting.insert(key, Waiting { reason: error.to_string(), until, failures, config_error: false });
                }
            }
        }
        all_present
    }

    fn pod_dir(&self, assignment_namespace: &str, pod: &str) -> PathBuf {
        self.config.state_dir.join("pods").join(format!("{assignment_namespace}_{pod}"))
    }

    fn secrets_pod_dir(&self, assignment_namespace: &str, pod: &str) -> PathBuf {
        self.config.secrets_dir.join("pods").join(format!("{assignment_namespace}_{pod}"))
    }

    fn base_labels(&self, assignment: &PodAssignment, role: &str) -> BTreeMap<String, String> {
        BTreeMap::from([
            (labels::NODE.to_owned(), self.config.node.clone()),
            (labels::NAMESPACE.to_owned(), assignment.namespace.clone()),
            (labels::POD.to_owned(), assignment.pod.clone()),
            (labels::WORKLOAD_KIND.to_owned(), assignment.workload_kind.name().to_owned()),
            (labels::WORKLOAD_NAME.to_owned(), assignment.workload_name.clone()),
            (labels::REVISION.to_owned(), assignment.revision.clone()),
            (labels::SPEC_HASH.to_owned(), assignment.spec_hash.clone()),
            (labels::POD_UID.to_owned(), assignment.uid.clone()),
            (labels::ROLE.to_owned(), role.to_owned()),
            (
                labels::GRACE_SECONDS.to_owned(),
                assignment.spec.termination_grace_period_seconds.unwrap_or(30).to_string(),
            ),
        ])
    }

    /// The engine's name for the emptyDir volume of a pod that exists. A pod created before
    /// names were made injective keeps the volume it has, under the name it was created with
    /// (a new pod always gets the injective name, so the fallback never picks another pod's).
    fn volume_name(&self, assignment: &PodAssignment, volume: &str) -> String {
        let name = engine_name(&[&self.config.node, &assignment.namespace, &assignment.pod, volume]);
        let inventory = self.lock_inventory();
        if !inventory.volumes.contains(&name) {
            let legacy = format!("berth-{}-{}-{}-{volume}", self.config.node, assignment.namespace, assignment.pod);
            if inventory.volumes.contains(&legacy) {
                return legacy;
            }
        }
        name
    }

    /// Creates and starts a pod: volumes, files, sandbox, containers. Returns false when it has
    /// to wait (an image could not be pulled).
    async fn create_pod(&self, assignment: &PodAssignment) -> Result<bool, PodError> {
        if self.pod_waiting(assignment) || !self.ensure_images(assignment).await {
            return Ok(false);
        }
        let spec = &assignment.spec;
        // A container whose securityContext cannot be met stops the pod before anything of it
        // is made, as the kubelet refuses to create it.
        for container in spec.all_containers() {
            self.security(assignment, container).await?;
        }
        for volume in spec.volumes.iter().filter(|v| v.empty_dir.is_some()) {
            let name = engine_name(&[&self.config.node, &assignment.namespace, &assignment.pod, &volume.name]);
            self.record(|inventory| {
                inventory.volumes.insert(name.clone());
            })?;
            self.runtime.create_volume(&name, &self.base_labels(assignment, "volume")).await?;
            self.open_empty_dir(assignment, &name).await?;
        }
        for claim in spec.volumes.iter().filter_map(|v| v.persistent_volume_claim.as_ref()) {
            self.open_claim(assignment, &claim.claim_name).await?;
        }
        self.write_files(assignment)?;

        let mut ports = Vec::new();
        for container in &spec.containers {
            for port in &container.ports {
                ports.push(PublishedPort {
                    container_port: u16::try_from(port.container_port).unwrap_or(0),
                    protocol: port.protocol.unwrap_or(Protocol::Tcp),
                    host_ip: self.config.address.clone(),
                    host_port: port.host_port.and_then(|p| u16::try_from(p).ok()).unwrap_or(0),
                });
            }
        }
        let sandbox_spec = ContainerSpec {
            name: engine_name(&[&self.config.node, &assignment.namespace, &assignment.pod]),
            image: sandbox::image_name(),
            entrypoint: None,
            args: None,
            env: Vec::new(),
            working_dir: None,
            labels: self.base_labels(assignment, "sandbox"),
            network: Network::Own {
                hostname: assignment.pod.clone(),
                ports,
                dns: self.config.mesh.as_ref().map(|_| super::proxy::dns_config(&assignment.namespace)),
            },
            mounts: Vec::new(),
            memory_limit_bytes: None,
            cpu_limit_nanos: None,
            security: Security::default(),
        };
        let sandbox_id = self.create_owned(&sandbox_spec).await?;
        self.runtime.start(&sandbox_id).await?;
        // Services are reachable before the first container starts.
        self.attach(assignment, &sandbox_id).await?;
        // Init containers run first, one at a time: the first starts now, the next ones and the
        // containers as each ends well (`repair_pod`, on the engine's event).
        match spec.init_containers.first() {
            Some(init) => {
                self.start_container(assignment, init, &sandbox_id, 0).await?;
            }
            None => {
                for container in &spec.containers {
                    self.start_container(assignment, container, &sandbox_id, 0).await?;
                }
            }
        }
        // An earlier failure to create this pod (a name in use, an engine error) was that
        // attempt's; it is not shown on the pod that now runs.
        let prefix = format!("{}/", pod_key(&assignment.namespace, &assignment.pod));
        self.lock_waiting().retain(|key, _| !key.starts_with(&prefix));
        self.lock_pulls().retain(|key, _| !key.starts_with(&prefix));
        Ok(true)
    }

    /// Sets up service routing in the pod's network namespace, when this node routes.
    async fn attach(&self, assignment: &PodAssignment, sandbox_id: &str) -> Result<(), PodError> {
        let Some(mesh) = &self.config.mesh else { return Ok(()) };
        if mesh.is_attached(&assignment.namespace, &assignment.pod) {
            return Ok(());
        }
        let Some(pid) = self.runtime.inspect(sandbox_id).await?.pid else { return Ok(()) };
        mesh.attach(&assignment.namespace, &assignment.pod, pid)
            .await
            .map_err(|reason| PodError::Routing { pod: assignment.pod.clone(), reason })
    }

    /// A container's environment: the variables of the services that exist now, then what the
    /// assignment gives, which wins for the same name.
    fn environment(&self, assignment: &PodAssignment, container: &Container) -> Vec<(String, String)> {
        let mut env = self.config.mesh.as_ref().map(|m| m.environment(&assignment.namespace)).unwrap_or_default();
        env.extend(assignment.env.get(&container.name).cloned().unwrap_or_default());
        env
    }

    /// Creates a container and records it in the inventory before anything can start it.
    async fn create_owned(&self, spec: &ContainerSpec) -> Result<String, PodError> {
        let id = match self.runtime.create(spec).await {
            Ok(id) => id,
            Err(error) => {
                // The image may have been removed behind the agent's back: look again next time.
                self.present_images.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clear();
                return Err(error.into());
            }
        };
        self.record(|inventory| {
            inventory.containers.insert(id.clone());
        })?;
        Ok(id)
    }

    async fn start_container(
        &self,
        assignment: &PodAssignment,
        container: &Container,
        sandbox_id: &str,
        attempt: u32,
    ) -> Result<String, PodError> {
        let mut labels = self.base_labels(assignment, "container");
        labels.insert(labels::CONTAINER.to_owned(), container.name.clone());
        labels.insert(labels::ATTEMPT.to_owned(), attempt.to_string());
        let policy = assignment.spec.restart_policy.unwrap_or(RestartPolicy::Always);
        labels.insert(labels::RESTART_POLICY.to_owned(), format!("{policy:?}"));
        let pre_stop = container.lifecycle.as_ref().and_then(|l| l.pre_stop.as_ref());
        match pre_stop.map(|handler| super::hooks::Hook::of(handler, container)) {
            Some(Ok(hook)) => {
                labels.insert(labels::PRE_STOP.to_owned(), serde_json::to_string(&hook).unwrap_or_default());
            }
            Some(Err(error)) => {
                tracing::warn!(node = %self.config.node, pod = %assignment.pod, container = %container.name, %error, "The preStop hook cannot run; the container stops without it.");
            }
            None => {}
        }
        let limits = container.resources.as_ref().map(|r| &r.limits);
        let security = self.security(assignment, container).await?;
        let spec = ContainerSpec {
            name: engine_name(&[
                &self.config.node,
                &assignment.namespace,
                &assignment.pod,
                &container.name,
                &attempt.to_string(),
            ]),
            image: container.image.clone(),
            entrypoint: (!container.command.is_empty()).then(|| container.command.clone()),
            args: (!container.args.is_empty()).then(|| container.args.clone()),
            env: self.environment(assignment, container),
            working_dir: container.working_dir.clone(),
            labels,
            network: Network::JoinContainer(sandbox_id.to_owned()),
            mounts: self.mounts(assignment, container)?,
            memory_limit_bytes: limits
                .and_then(|l| l.get("memory"))
                .map(|q| i64::try_from(q.millis() / 1000).unwrap_or(i64::MAX)),
            cpu_limit_nanos: limits
                .and_then(|l| l.get("cpu"))
                .map(|q| i64::try_from(q.millis() * 1_000_000).unwrap_or(i64::MAX)),
            security,
        };
        let id = self.create_owned(&spec).await?;
        self.runtime.start(&id).await?;
        self.post_start(assignment, container, &id, sandbox_id).await?;
        Ok(id)
    }

    /// Runs the container's postStart hook, if it has one. A hook that fails kills the
    /// container, which is then restarted under the pod's restart policy, as the kubelet does;
    /// the reason stays on the container's next attempt.
    async fn post_start(
        &self,
        assignment: &PodAssignment,
        container: &Container,
        id: &str,
        sandbox_id: &str,
    ) -> Result<(), PodError> {
        let Some(handler) = container.lifecycle.as_ref().and_then(|l| l.post_start.as_ref()) else { return Ok(()) };
        let result = match super::hooks::Hook::of(handler, container) {
            Ok(hook) => hook.run(&*self.runtime, id, Some(sandbox_id), super::hooks::POST_START_LIMIT).await,
            Err(error) => Err(error),
        };
        if let Err(error) = result {
            let reason = format!("postStart hook failed: {error}");
            tracing::warn!(node = %self.config.node, pod = %assignment.pod, container = %container.name, %reason, "Killing a container whose postStart hook failed.");
            let key = format!("{}/{}", pod_key(&assignment.namespace, &assignment.pod), container.name);
            self.lock_stopped().insert(key, (reason, true));
            self.runtime.stop(id, Duration::ZERO).await?;
        }
        Ok(())
    }

    /// What `container` runs as, from its own and its pod's securityContext; the image's user
    /// is asked of the engine only when the check needs it.
    async fn security(&self, assignment: &PodAssignment, container: &Container) -> Result<Security, PodError> {
        let pod = assignment.spec.security_context.as_ref();
        let image_user = match super::security::needs_image_user(pod, container) {
            true => self.runtime.image_user(&container.image).await?,
            false => None,
        };
        super::security::resolve(pod, container, image_user.as_deref())
            .map_err(|reason| PodError::Security { container: container.name.clone(), reason })
    }

    /// Gives a new emptyDir volume the owner and mode the kubelet gives one: writable by any
    /// user (0777), so a container that runs as a non-root user can use it; with the pod's
    /// `fsGroup`, owned by that group with the setgid bit, so what is made in it stays the
    /// group's.
    async fn open_empty_dir(&self, assignment: &PodAssignment, name: &str) -> Result<(), PodError> {
        let fs_group = fs_group(assignment);
        let path = match self.runtime.volume_path(name).await {
            Ok(path) => path,
            Err(error) if fs_group.is_none() => {
                tracing::warn!(node = %self.config.node, volume = %name, %error, "The volume's folder is not reachable; it keeps the engine's owner and mode.");
                return Ok(());
            }
            Err(error) => return Err(error.into()),
        };
        let result = (|| {
            if let Some(group) = fs_group {
                std::os::unix::fs::chown(&path, None, Some(group))?;
            }
            let mode = if fs_group.is_some() { 0o2777 } else { 0o777 };
            std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(mode))
        })();
        match result {
            Ok(()) => Ok(()),
            Err(error) if fs_group.is_none() => {
                tracing::warn!(node = %self.config.node, volume = %name, %error, "Opening the volume to every user failed; it keeps the engine's owner and mode.");
                Ok(())
            }
            Err(source) => Err(PodError::Io { path, source }),
        }
    }

    /// Makes the volume of a claim the first time a pod of this node uses it: owned by berth,
    /// labelled with the claim, opened to the pod's users as an emptyDir is. Its data stays
    /// when the pod goes. A volume of that name this node did not make is never used.
    async fn open_claim(&self, assignment: &PodAssignment, claim: &str) -> Result<(), PodError> {
        let name = claim_volume_name(&self.config.node, &assignment.namespace, claim);
        if self.lock_inventory().claims.contains(&name) {
            return Ok(());
        }
        let labels = [
            (labels::NODE, self.config.node.as_str()),
            (labels::NAMESPACE, assignment.namespace.as_str()),
            (labels::CLAIM, claim),
        ];
        let ours = self.runtime.list_volumes(&labels).await?.contains(&name);
        if !ours && self.runtime.volume_path(&name).await.is_ok() {
            return Err(PodError::Routing {
                pod: assignment.pod.clone(),
                reason: format!(
                    "a volume named {name} exists on node {} that berth did not make for claim {claim}; move it away",
                    self.config.node
                ),
            });
        }
        self.record(|inventory| {
            inventory.claims.insert(name.clone());
        })?;
        if !ours {
            let labels: BTreeMap<String, String> =
                labels.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
            self.runtime.create_volume(&name, &labels).await?;
            self.open_empty_dir(assignment, &name).await?;
        }
        Ok(())
    }

    /// Removes the volume of a claim, with its data, when this node made it and no container
    /// uses it: what `berth delete pvc` asks. False when this node has no such volume.
    pub async fn remove_claim(&self, namespace: &str, claim: &str) -> Result<bool, PodError> {
        let name = claim_volume_name(&self.config.node, namespace, claim);
        let labels =
            [(labels::NODE, self.config.node.as_str()), (labels::NAMESPACE, namespace), (labels::CLAIM, claim)];
        if !self.runtime.list_volumes(&labels).await?.contains(&name) {
            return Ok(false);
        }
        self.runtime.remove_volume(&name).await?;
        self.record(|inventory| {
            inventory.claims.remove(&name);
        })?;
        Ok(true)
    }

    /// The control plane judged a hostPath by how it is written; a symlink on the node can lead
    /// it elsewhere. A path that resolves into a folder the default host-access policy denies,
    /// while it was not written as one, is refused here (a path written as a denied one arrives
    /// only when the operator's policy allowed it), and so is any that is or holds this agent's
    /// state folder.
    fn check_resolved(&self, path: &str) -> Result<(), PodError> {
        use crate::manifest::policy::{Policy, normalize};
        let Ok(resolved) = std::fs::canonicalize(path) else { return Ok(()) };
        let (Some(written), Some(resolved)) = (normalize(path), resolved.to_str().and_then(normalize)) else {
            return Ok(());
        };
        if self.touches_state(&resolved) {
            let reason = "it is or holds this agent's state folder, which no pod may mount".to_owned();
            return Err(PodError::HostPath { path: path.to_owned(), resolved, reason });
        }
        let policy = Policy::default();
        if written == resolved || policy.host_path_refusal(&written).is_some() {
            return Ok(());
        }
        match policy.host_path_refusal(&resolved) {
            Some(reason) => Err(PodError::HostPath { path: path.to_owned(), resolved, reason }),
            None => Ok(()),
        }
    }

    fn touches_state(&self, resolved: &str) -> bool {
        use crate::manifest::policy::within;
        let Ok(state) = std::fs::canonicalize(&self.config.state_dir) else { return false };
        let state = state.display().to_string();
        within(resolved, &state) || within(&state, resolved)
    }

    fn mounts(&self, assignment: &PodAssignment, container: &Container) -> Result<Vec<Mount>, PodError> {
        let mut mounts = Vec::new();
        for mount in &container.volume_mounts {
            let Some(volume) = assignment.spec.volumes.iter().find(|v| v.name == mount.name) else { continue };
            let sub_path = mount.sub_path.as_deref().filter(|p| !p.is_empty());
            // The path must stay a plain relative one: no `..`, not absolute.
            if let Some(sub) = sub_path.filter(|sub| super::files::split_relative(sub).is_none()) {
                return Err(super::files::FilesError::OutsideVolume { path: sub.to_owned() }.into());
            }
            let (source, forced_read_only) = if volume.empty_dir.is_some() {
                (MountSource::Volume(self.volume_name(assignment, &volume.name)), false)
            } else if let Some(claim) = &volume.persistent_volume_claim {
                let name = claim_volume_name(&self.config.node, &assignment.namespace, &claim.claim_name);
                (MountSource::Volume(name), claim.read_only.unwrap_or(false))
            } else if let Some(host_path) = &volume.host_path {
                let path = match sub_path {
                    Some(sub) => format!("{}/{sub}", host_path.path.trim_end_matches('/')),
                    None => host_path.path.clone(),
                };
                self.check_resolved(&path)?;
                (MountSource::Bind(path), false)
            } else {
                let mut dir = self.volume_dir(assignment, volume)?;
                if let Some(sub) = sub_path {
                    dir = dir.join(sub);
                }
                (MountSource::Bind(dir.display().to_string()), true)
            };
            mounts.push(Mount {
                source,
                target: mount.mount_path.clone(),
                read_only: forced_read_only || mount.read_only.unwrap_or(false),
            });
        }
        Ok(mounts)
    }

    /// Writes the files of the pod's configMap, secret and downwardAPI volumes under the state
    /// folder. Every file is opened beneath its volume's folder ([`super::files`]), whatever its
    /// path says.
    fn write_files(&self, assignment: &PodAssignment) -> Result<(), PodError> {
        for volume in &assignment.spec.volumes {
            let (default_mode, modes): (Option<i32>, Vec<(&str, Option<i32>)>) =
                match (&volume.config_map, &volume.secret, &volume.downward_api) {
                    (Some(c), _, _) => (c.default_mode, c.items.iter().map(|i| (i.path.as_str(), i.mode)).collect()),
                    (_, Some(s), _) => (s.default_mode, s.items.iter().map(|i| (i.path.as_str(), i.mode)).collect()),
                    (_, _, Some(d)) => (d.default_mode, d.items.iter().map(|i| (i.path.as_str(), i.mode)).collect()),
                    _ => continue,
                };
            // Secret files are readable inside the pod as the manifest says, but the folder
            // that holds every pod's files on the node is the agent's alone.
            let root = if volume.secret.is_some() { &self.config.secrets_dir } else { &self.config.state_dir };
            let pods_root = root.join("pods");
            crate::private::private_dir(root).map_err(|source| PodError::Io { path: root.clone(), source })?;
            crate::private::private_dir(&pods_root)
                .map_err(|source| PodError::Io { path: pods_root.clone(), source })?;
            let dir = self.volume_dir(assignment, volume)?;
            std::fs::create_dir_all(&dir).map_err(|source| PodError::Io { path: dir.clone(), source })?;
            let folder = super::files::open_folder(&dir)?;
            for (relative, contents) in assignment.files.get(&volume.name).into_iter().flatten() {
                let mode = modes
                    .iter()
                    .find(|(path, _)| *path == relative.as_str())
                    .and_then(|(_, mode)| *mode)
                    .or(default_mode);
                let mode = mode.and_then(|m| u32::try_from(m).ok()).filter(|m| *m <= 0o777).unwrap_or(0o644);
                // With an fsGroup the group owns the file and may read it, as the kubelet sets it.
                let (mode, group) = match fs_group(assignment) {
                    Some(group) => (mode | 0o440, Some(group)),
                    None => (mode, None),
                };
                super::files::write_beneath(&folder, relative, contents, mode, group)?;
            }
        }
        Ok(())
    }

    /// The folder of one configMap or secret volume of a pod. The names come from the control
    /// plane, which validated them; the agent checks again that none can name another folder.
    fn volume_dir(
        &self,
        assignment: &PodAssignment,
        volume: &crate::manifest::types::Volume,
    ) -> Result<PathBuf, PodError> {
        use crate::manifest::validate::{is_dns_label, is_dns_subdomain};
        let name = &volume.name;
        if !is_dns_label(&assignment.namespace) || !is_dns_subdomain(&assignment.pod) || !is_dns_label(name) {
            return Err(PodError::Files(super::files::FilesError::OutsideVolume {
                path: format!("{}/{}/{name}", assignment.namespace, assignment.pod),
            }));
        }
        let pod_dir = if volume.secret.is_some() {
            self.secrets_pod_dir(&assignment.namespace, &assignment.pod)
        } else {
            self.pod_dir(&assignment.namespace, &assignment.pod)
        };
        Ok(pod_dir.join("volumes").join(name))
    }

    /// Restarts exited containers under the restart policy and backoff, and brings back
    /// containers that were removed. Returns how many containers it started.
    async fn repair_pod(&self, assignment: &PodAssignment, pod: &ObservedPod) -> Result<usize, PodError> {
        let Some(sandbox) = &pod.sandbox else { return Ok(0) };
        // After an agent restart, the proxy serves the pod again.
        self.attach(assignment, &sandbox.id).await?;
        let policy = assignment.spec.restart_policy.unwrap_or(RestartPolicy::Always);
        let mut started = 0;
        if !init_done(assignment, pod) {
            for init in &assignment.spec.init_containers {
                let attempts = pod.containers.get(&init.name).map(Vec::as_slice).unwrap_or_default();
                let key = format!("{}/{}", pod_key(&assignment.namespace, &assignment.pod), init.name);
                let Some(latest) = attempts.last() else {
                    if self.lock_waiting().get(&key).is_none_or(|w| w.until <= Instant::now()) {
                        self.start_container(assignment, init, &sandbox.id, 0).await?;
                        started += 1;
                    }
                    return Ok(started);
                };
                match latest.state {
                    // A sidecar that runs lets the next init container start.
                    ContainerState::Running if init.is_sidecar() => continue,
                    ContainerState::Running | ContainerState::Other => return Ok(started),
                    ContainerState::Exited if latest.exit_code == Some(0) && !init.is_sidecar() => continue,
                    // A failed init container is tried again, unless the pod never restarts; a
                    // sidecar always is.
                    _ if policy == RestartPolicy::Never && !init.is_sidecar() => return Ok(started),
                    _ => {
                        if self.restart_when_due(assignment, init, attempts, &key, &sandbox.id).await? {
                            started += 1;
                        }
                        return Ok(started);
                    }
                }
            }
        }
        for container in running_containers(&assignment.spec) {
            let policy = if container.is_sidecar() { RestartPolicy::Always } else { policy };
            let attempts = pod.containers.get(&container.name).map(Vec::as_slice).unwrap_or_default();
            let key = format!("{}/{}", pod_key(&assignment.namespace, &assignment.pod), container.name);
            let Some(latest) = attempts.last() else {
                // Removed by hand, or never created: it comes back, unless a failure to create
                // it is waiting out its backoff.
                if self.lock_waiting().get(&key).is_some_and(|w| w.until > Instant::now()) {
                    continue;
                }
                self.start_container(assignment, container, &sandbox.id, 0).await?;
                started += 1;
                continue;
            };
            if latest.state == ContainerState::Running || latest.state == ContainerState::Other {
                continue;
            }
            let failed = latest.exit_code.unwrap_or(0) != 0 || latest.state == ContainerState::Created;
            let restart = match policy {
                RestartPolicy::Always => true,
                RestartPolicy::OnFailure => failed,
                RestartPolicy::Never => false,
            };
            if !restart {
                continue;
            }
            if self.restart_when_due(assignment, container, attempts, &key, &sandbox.id).await? {
                started += 1;
            }
        }
        Ok(started)
    }

    /// Starts the next attempt of a container that ended, once its backoff is over; whether it
    /// did.
    async fn restart_when_due(
        &self,
        assignment: &PodAssignment,
        container: &Container,
        attempts: &[ContainerInfo],
        key: &str,
        sandbox_id: &str,
    ) -> Result<bool, PodError> {
        let Some(latest) = attempts.last() else { return Ok(false) };
        let attempt = attempt_of(latest) + 1;
        let now = Instant::now();
        let due = {
            let mut waiting = self.lock_waiting();
            let entry = waiting.entry(key.to_owned()).or_insert_with(|| {
                let reason = match latest.exit_code {
                    Some(code) if latest.oom_killed => format!("container exited with code {code}: out of memory"),
                    Some(code) => format!("container exited with code {code}"),
                    None => "container is not running".to_owned(),
                };
                Waiting { reason, until: now + self.backoff(attempt), failures: attempt, config_error: false }
            });
            entry.until <= now
        };
        if !due {
            return Ok(false);
        }
        // What the attempt wrote last is read before it is removed.
        let output = match latest.exit_code {
            Some(code) if code != 0 => self.output_of(assignment, &container.name, &latest.id).await,
            _ => None,
        };
        if let Some(waited) = self.lock_waiting().remove(key) {
            // Why the previous attempt ended stays visible on the next one; a probe's reason
            // is more telling than the exit code the stop produced.
            let mut stopped = self.lock_stopped();
            match stopped.get_mut(key) {
                Some((_, by_probe @ true)) => *by_probe = false,
                _ => {
                    let reason = match &output {
                        Some(output) => format!("{}: {output}", waited.reason),
                        None => waited.reason.clone(),
                    };
                    stopped.insert(key.to_owned(), (reason, false));
                }
            }
        }
        // The attempt that just ended stays until the next restart (`logs --previous` reads
        // it); the ones before it go.
        for old in &attempts[..attempts.len() - 1] {
            self.runtime.remove(&old.id).await?;
            self.record(|inventory| {
                inventory.containers.remove(&old.id);
            })?;
        }
        self.start_container(assignment, container, sandbox_id, attempt).await?;
        Ok(true)
    }

    /// The volumes of the inventory that belong to `pod`. Names made before they were injective
    /// (`berth-<node>-<ns>-<pod>-<volume>`) can be read two ways; those count only when the
    /// engine's labels say they are this pod's.
    async fn volumes_of(&self, pod: &ObservedPod) -> Result<Vec<String>, PodError> {
        let prefix = format!("{}_", engine_name(&[&self.config.node, &pod.namespace, &pod.pod]));
        let legacy_prefix = format!("berth-{}-{}-{}-", self.config.node, pod.namespace, pod.pod);
        let (mut volumes, legacy): (Vec<String>, Vec<String>) = self
            .lock_inventory()
            .volumes
            .iter()
            .filter(|v| v.starts_with(&prefix) || v.starts_with(&legacy_prefix))
            .cloned()
            .partition(|v| v.starts_with(&prefix));
        if !legacy.is_empty() {
            let labelled = self
                .runtime
                .list_volumes(&[
                    (labels::NODE, &self.config.node),
                    (labels::NAMESPACE, &pod.namespace),
                    (labels::POD, &pod.pod),
                ])
                .await?;
            volumes.extend(legacy.into_iter().filter(|v| labelled.contains(v)));
        }
        Ok(volumes)
    }

    /// A pod that is no longer assigned: asks its running containers to stop, each within the
    /// pod's grace period, in the background, and removes the pod once none of them runs.
    /// True when it was removed in this call.
    async fn retire(&self, key: &str, pod: &ObservedPod) -> Result<bool, PodError> {
        let running: Vec<&ContainerInfo> =
            pod.containers.values().flatten().filter(|c| c.state == ContainerState::Running).collect();
        if running.is_empty() {
            self.remove_pod(pod).await?;
            self.lock_stopping().remove(key);
            return Ok(true);
        }
        let grace = grace_of(pod);
        let asked = self.lock_stopping().get(key).copied();
        // Asked again only when a stop did not take (an engine error): after its grace and a margin.
        if asked.is_none_or(|at| at.elapsed() > grace + STOPPING_CHECK * 10) {
            if let Some(mesh) = &self.config.mesh {
                mesh.detach(&pod.namespace, &pod.pod);
            }
            let sandbox = pod.sandbox.as_ref().map(|s| s.id.clone());
            for container in running {
                let runtime = self.runtime.clone();
                let container = container.clone();
                let sandbox = sandbox.clone();
                tokio::spawn(async move {
                    if let Err(error) = super::hooks::stop(&*runtime, &container, sandbox.as_deref(), grace).await {
                        tracing::warn!(container = %container.id, %error, "Stopping a container failed; it is asked again.");
                    }
                });
            }
            self.lock_stopping().insert(key.to_owned(), Instant::now());
        }
        Ok(false)
    }

    /// Stops a pod's containers with its grace period (SIGTERM, wait, SIGKILL), then removes
    /// them, its sandbox, its emptyDir volumes and its files.
    async fn remove_pod(&self, pod: &ObservedPod) -> Result<(), PodError> {
        if let Some(mesh) = &self.config.mesh {
            mesh.detach(&pod.namespace, &pod.pod);
        }
        let all: Vec<&ContainerInfo> = pod.containers.values().flatten().collect();
        let grace = grace_of(pod);
        let sandbox = pod.sandbox.as_ref().map(|s| s.id.as_str());
        let stops = all
            .iter()
            .filter(|c| c.state == ContainerState::Running)
            .map(|c| super::hooks::stop(&*self.runtime, c, sandbox, grace));
        for result in futures_util::future::join_all(stops).await {
            result?;
        }
        for container in all.iter().copied().chain(pod.sandbox.iter()) {
            self.runtime.remove(&container.id).await?;
            self.record(|inventory| {
                inventory.containers.remove(&container.id);
            })?;
        }
        let volumes = self.volumes_of(pod).await?;
        for volume in volumes {
            self.runtime.remove_volume(&volume).await?;
            self.record(|inventory| {
                inventory.volumes.remove(&volume);
            })?;
        }
        for dir in [self.pod_dir(&pod.namespace, &pod.pod), self.secrets_pod_dir(&pod.namespace, &pod.pod)] {
            match std::fs::remove_dir_all(&dir) {
                Ok(()) => {}
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => return Err(PodError::Io { path: dir, source }),
            }
        }
        Ok(())
    }

    /// Runs every probe that is due, concurrently, and acts on the results: a failed liveness or
    /// startup probe stops the container (its restart policy and backoff take it from there); a
    /// readiness result changes what the status reports.
    pub async fn probe(&self, desired: &[PodAssignment]) -> Result<ProbeSummary, PodError> {
        let observed = self.observed_pods().await?;
        let now = Instant::now();
        let mut running_ids = Vec::new();
        let mut due = Vec::new();
        for assignment in desired {
            let key = pod_key(&assignment.namespace, &assignment.pod);
            let Some(pod) = observed.get(&key).filter(|p| p.is(assignment)) else { continue };
            let Some(sandbox) = &pod.sandbox else { continue };
            for container in running_containers(&assignment.spec) {
                let Some(latest) = pod.containers.get(&container.name).and_then(|a| a.last()) else { continue };
                if latest.state != ContainerState::Running {
                    continue;
                }
                running_ids.push(latest.id.clone());
                let mut probes = self.lock_probes();
                let startup_passed = match &container.startup_probe {
                    Some(_) => probes.get(&(latest.id.clone(), ProbeKind::Startup)).is_some_and(|s| s.passed),
                    None => true,
                };
                let kinds = [
                    (ProbeKind::Startup, container.startup_probe.as_ref().filter(|_| !startup_passed)),
                    (ProbeKind::Liveness, container.liveness_probe.as_ref().filter(|_| startup_passed)),
                    (ProbeKind::Readiness, container.readiness_probe.as_ref().filter(|_| startup_passed)),
                ];
                for (kind, probe) in kinds {
                    let Some(probe) = probe else { continue };
                    let state = probes.entry((latest.id.clone(), kind)).or_insert_with(|| ProbeState {
                        since: now,
                        last_run: None,
                        successes: 0,
                        failures: 0,
                        passed: false,
                        last_error: None,
                        total_failures: 0,
                    });
                    let delay =
                        Duration::from_secs(u64::try_from(probe.initial_delay_seconds.unwrap_or(0)).unwrap_or(0));
                    let period =
                        Duration::from_secs(u64::try_from(probe.period_seconds.unwrap_or(10).max(1)).unwrap_or(10));
                    let is_due = now >= state.since + delay && state.last_run.is_none_or(|last| now >= last + period);
                    if is_due {
                        state.last_run = Some(now);
                        due.push((
                            format!("{key}/{}", container.name),
                            latest.id.clone(),
                            sandbox.id.clone(),
                            kind,
                            probe.clone(),
                            container.clone(),
                            (assignment.namespace.clone(), assignment.pod.clone()),
                            secret_values(assignment, &container.name)
                                .into_iter()
                                .map(str::to_owned)
                                .collect::<Vec<_>>(),
                        ));
                    }
                }
            }
        }
        self.lock_probes().retain(|(id, _), _| running_ids.contains(id));

        let checks = due.iter().map(|(_, id, sandbox_id, _, probe, container, _, hidden)| {
            self.run_probe(id, sandbox_id, probe, container, hidden)
        });
        let results = futures_util::future::join_all(checks).await;
        let mut summary = ProbeSummary { probes_run: due.len(), ..ProbeSummary::default() };
        for ((key, id, _, kind, probe, container, (namespace, pod), _), result) in due.into_iter().zip(results) {
            if result.is_err() {
                summary.failures.push(ProbeFailure {
                    namespace,
                    pod,
                    container: container.name.clone(),
                    probe: kind.word(),
                });
            }
            let success_threshold = u32::try_from(probe.success_threshold.unwrap_or(1).max(1)).unwrap_or(1);
            let failure_threshold = u32::try_from(probe.failure_threshold.unwrap_or(3).max(1)).unwrap_or(3);
            let (stop, reason) = {
                let mut probes = self.lock_probes();
                let Some(state) = probes.get_mut(&(id.clone(), kind)) else { continue };
                match &result {
                    Ok(()) => {
                        state.successes += 1;
                        state.failures = 0;
                        state.last_error = None;
                    }
                    Err(error) => {
                        state.failures += 1;
                        state.total_failures = state.total_failures.saturating_add(1);
                        state.successes = 0;
                        state.last_error = Some(error.clone());
                    }
                }
                let was = state.passed;
                match kind {
                    ProbeKind::Startup | ProbeKind::Readiness if state.successes >= success_threshold => {
                        state.passed = true
                    }
                    ProbeKind::Readiness if state.failures >= failure_threshold => state.passed = false,
                    _ => {}
                }
                if kind == ProbeKind::Readiness && was != state.passed {
                    summary.readiness_changed = true;
                }
                let stop = kind != ProbeKind::Readiness && state.failures >= failure_threshold;
                (
                    stop,
                    format!(
                        "{} probe failed {} times: {}",
                        kind.word(),
                        state.failures,
                        state.last_error.clone().unwrap_or_default()
                    ),
                )
            };
            if stop {
                tracing::info!(node = %self.config.node, container = %key, %reason, "Stopping a container whose probe failed.");
                self.lock_stopped().insert(key, (reason, true));
                let grace = Duration::from_secs(1);
                self.runtime.stop(&id, grace).await?;
                self.lock_probes().retain(|(probed, _), _| probed != &id);
                summary.containers_stopped += 1;
            }
        }
        Ok(summary)
    }

    async fn run_probe(
        &self,
        container_id: &str,
        sandbox_id: &str,
        probe: &crate::manifest::types::Probe,
        container: &Container,
        hidden: &[String],
    ) -> Result<(), String> {
        let timeout = Duration::from_secs(u64::try_from(probe.timeout_seconds.unwrap_or(1).max(1)).unwrap_or(1));
        let port_of = |port| super::hooks::container_port(container, port);
        if let Some(exec) = &probe.exec {
            return match self.runtime.exec_output(container_id, &exec.command, None, timeout).await {
                Ok((0, _)) => Ok(()),
                Ok((code, output)) => {
                    let hidden: Vec<&str> = hidden.iter().map(String::as_str).collect();
                    match summarize_output(&output, &hidden) {
                        said if said.is_empty() => Err(format!("command exited with code {code}")),
                        said => Err(format!("command exited with code {code}: {said}")),
                    }
                }
                Err(error) => Err(error.to_string()),
            };
        }
        let check = if let Some(http) = &probe.http_get {
            super::netns::Check::Http {
                port: port_of(&http.port)?,
                path: http.path.clone().unwrap_or_else(|| "/".into()),
                headers: http.http_headers.iter().map(|h| (h.name.clone(), h.value.clone())).collect(),
            }
        } else if let Some(tcp) = &probe.tcp_socket {
            super::netns::Check::Tcp { port: port_of(&tcp.port)? }
        } else {
            return Ok(());
        };
        self.runtime.check_in_pod(sandbox_id, &check, timeout).await
    }

    /// What runs for each assigned pod, as the agent reports it.
    pub async fn observe(&self, desired: &[PodAssignment]) -> Result<Vec<PodStatus>, PodError> {
        let observed = self.observed_pods().await?;
        let waiting = self.lock_waiting().clone();
        let mut statuses = Vec::new();
        for assignment in desired {
            let key = pod_key(&assignment.namespace, &assignment.pod);
            let pod = observed.get(&key).filter(|p| p.is(assignment));
            let mut containers = Vec::new();
            for container in running_containers(&assignment.spec) {
                let latest = pod.and_then(|p| p.containers.get(&container.name)).and_then(|a| a.last());
                let wait = waiting.get(&format!("{key}/{}", container.name));
                let state = match latest.map(|c| c.state) {
                    Some(ContainerState::Running) => ContainerStateName::Running,
                    Some(ContainerState::Exited) if wait.is_none() => ContainerStateName::Terminated,
                    _ => ContainerStateName::Waiting,
                };
                let (ready, probe_error, probe_failures) = {
                    let probes = self.lock_probes();
                    let probe_passed = |kind: ProbeKind, configured: bool| {
                        !configured || latest.and_then(|c| probes.get(&(c.id.clone(), kind))).is_some_and(|p| p.passed)
                    };
                    let ready = state == ContainerStateName::Running
                        && probe_passed(ProbeKind::Startup, container.startup_probe.is_some())
                        && probe_passed(ProbeKind::Readiness, container.readiness_probe.is_some());
                    let probe_error = latest.and_then(|c| {
                        [ProbeKind::Startup, ProbeKind::Liveness, ProbeKind::Readiness].into_iter().find_map(|kind| {
                            probes
                                .get(&(c.id.clone(), kind))
                                .and_then(|p| p.last_error.clone())
                                .map(|e| format!("{} probe: {e}", kind.word()))
                        })
                    });
                    let probe_failures = latest.map_or(0, |c| {
                        [ProbeKind::Startup, ProbeKind::Liveness, ProbeKind::Readiness]
                            .into_iter()
                            .filter_map(|kind| probes.get(&(c.id.clone(), kind)))
                            .map(|p| p.total_failures)
                            .sum()
                    });
                    (ready, probe_error, probe_failures)
                };
                let stopped =
                    self.lock_stopped().get(&format!("{key}/{}", container.name)).map(|(reason, _)| reason.clone());
                let restart_count = latest.map_or(0, attempt_of);
                let exit_code = latest
                    .and_then(|c| c.exit_code)
                    .filter(|_| latest.is_some_and(|c| c.state == ContainerState::Exited));
                // What an attempt that ended with an error wrote last.
                let output = match latest.filter(|c| c.state == ContainerState::Exited && exit_code != Some(0)) {
                    Some(ended) => self.output_of(assignment, &container.name, &ended.id).await,
                    None => None,
                };
                let said = output.as_deref().map(|o| format!(": {o}")).unwrap_or_default();
                let now = Instant::now();
                // A wait whose time has come still says why, until the next attempt is made.
                // Kubernetes' words for a container that is not simply running, and what the
                // current attempt says about it; an older attempt's error is not this one's.
                let (reason, error) = match (latest.map(|c| c.state), wait) {
                    (Some(ContainerState::Exited), Some(w)) => (
                        Some("CrashLoopBackOff"),
                        Some(format!(
                            "container {} exited with code {} ({restart_count} restarts){said}; {}",
                            container.name,
                            exit_code.map_or_else(|| "?".to_owned(), |c| c.to_string()),
                            match w.until.saturating_duration_since(now).as_secs() {
                                0 => "restarting now".to_owned(),
                                left => format!("restarting in {left} s"),
                            }
                        )),
                    ),
                    (None, Some(w)) if w.reason.contains("pulling") => {
                        (Some("ImagePullBackOff"), Some(w.reason.clone()))
                    }
                    (None, Some(w)) if w.config_error => (Some("CreateContainerConfigError"), Some(w.reason.clone())),
                    (None, Some(w)) => (Some("CreateContainerError"), Some(w.reason.clone())),
                    (None, None) => (Some("ContainerCreating"), None),
                    (Some(ContainerState::Exited), None) if exit_code == Some(0) => (Some("Completed"), None),
                    (Some(ContainerState::Exited), None) => (
                        Some("Error"),
                        Some(format!(
                            "container {} exited with code {}{said}",
                            container.name,
                            exit_code.map_or_else(|| "?".to_owned(), |c| c.to_string())
                        )),
                    ),
                    _ => (None, None),
                };
                containers.push(ContainerStatus {
                    name: container.name.clone(),
                    state,
                    ready,
                    restart_count,
                    exit_code,
                    last_error: error.or(probe_error).or_else(|| latest.and_then(|c| c.error.clone())),
                    reason: reason.map(str::to_owned),
                    last_termination: stopped,
                    last_output: output,
                    probe_failures,
                    container_id: latest.map(|c| c.id.clone()),
                    pulled: self.lock_pulls().get(&format!("{key}/{}", container.name)).cloned(),
                });
            }
            let init = init_state(assignment, pod, &waiting);
            if let Some((reason, error, _)) = &init {
                for container in &mut containers {
                    container.state = ContainerStateName::Waiting;
                    container.ready = false;
                    container.reason = Some(reason.clone());
                    container.last_error.clone_from(error);
                }
            }
            let all_running =
                !containers.is_empty() && containers.iter().all(|c| c.state == ContainerStateName::Running);
            let all_terminated = containers.iter().all(|c| c.state == ContainerStateName::Terminated);
            let phase = if init.as_ref().is_some_and(|(_, _, failed)| *failed) {
                PodPhase::Failed
            } else if init.is_some() {
                PodPhase::Pending
            } else if all_terminated && !containers.is_empty() {
                if containers.iter().all(|c| c.exit_code == Some(0)) { PodPhase::Succeeded } else { PodPhase::Failed }
            } else if pod.is_some() && containers.iter().any(|c| c.container_id.is_some()) {
                PodPhase::Running
            } else {
                PodPhase::Pending
            };
            let host_ports = pod
                .and_then(|p| p.sandbox.as_ref())
                .map(|s| {
                    s.published
                        .iter()
                        .map(|p| HostPort {
                            container_port: p.container_port,
                            protocol: p.protocol,
                            host_ip: p.host_ip.clone(),
                            host_port: p.host_port,
                        })
                        .collect()
                })
                .unwrap_or_default();
            statuses.push(PodStatus {
                pod: assignment.pod.clone(),
                namespace: assignment.namespace.clone(),
                spec_hash: assignment.spec_hash.clone(),
                uid: assignment.uid.clone(),
                phase,
                ready: all_running && containers.iter().all(|c| c.ready),
                containers,
                host_ports,
                workload_kind: Some(assignment.workload_kind),
                workload_name: assignment.workload_name.clone(),
                terminating: false,
            });
        }
        // The outputs kept are those of containers that still exist.
        let present: BTreeSet<&str> =
            observed.values().flat_map(|p| p.containers.values().flatten().map(|c| c.id.as_str())).collect();
        self.outputs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .retain(|id, _| present.contains(id.as_str()));
        // Pods that run but are no longer assigned are stopping: reported so until they are
        // gone (one replaced under the same name is gone before its successor starts).
        for (key, pod) in &observed {
            if desired.iter().any(|d| pod_key(&d.namespace, &d.pod) == *key) {
                continue;
            }
            let label = |name: &str| {
                pod.containers.values().flatten().chain(pod.sandbox.iter()).find_map(|c| c.labels.get(name).cloned())
            };
            let containers: Vec<ContainerStatus> = pod
                .containers
                .iter()
                .filter_map(|(name, attempts)| attempts.last().map(|latest| (name, latest)))
                .map(|(name, latest)| ContainerStatus {
                    name: name.clone(),
                    state: if latest.state == ContainerState::Running {
                        ContainerStateName::Running
                    } else {
                        ContainerStateName::Terminated
                    },
                    ready: false,
                    restart_count: attempt_of(latest),
                    exit_code: latest.exit_code,
                    last_error: None,
                    reason: None,
                    last_termination: None,
                    last_output: None,
                    probe_failures: 0,
                    container_id: Some(latest.id.clone()),
                    pulled: None,
                })
                .collect();
            statuses.push(PodStatus {
                pod: pod.pod.clone(),
                namespace: pod.namespace.clone(),
                spec_hash: pod.spec_hash.clone(),
                uid: pod.uid.clone(),
                phase: PodPhase::Running,
                ready: false,
                containers,
                host_ports: Vec::new(),
                workload_kind: label(labels::WORKLOAD_KIND).and_then(|k| crate::manifest::Kind::from_name(&k)),
                workload_name: label(labels::WORKLOAD_NAME).unwrap_or_default(),
                terminating: true,
            });
        }
        Ok(statuses)
    }
}

/// Whether a pod's init containers are behind it: each ended well, or a container of the pod
/// started already (its init containers ran before it, and their records may be gone since).
fn init_done(assignment: &PodAssignment, pod: &ObservedPod) -> bool {
    let ended_well = |c: &ContainerInfo| c.state == ContainerState::Exited && c.exit_code == Some(0);
    assignment.spec.containers.iter().any(|c| pod.containers.get(&c.name).is_some_and(|a| !a.is_empty()))
        || assignment.spec.init_containers.iter().all(|init| {
            let latest = pod.containers.get(&init.name).and_then(|a| a.last());
            match init.is_sidecar() {
                true => latest.is_some_and(|c| c.state == ContainerState::Running),
                false => latest.is_some_and(ended_well),
            }
        })
}

/// What runs for the pod's life once its init containers are behind it: the sidecars (init
/// containers with `restartPolicy: Always`), then the containers.
fn running_containers(spec: &crate::manifest::types::PodSpec) -> impl Iterator<Item = &Container> {
    spec.init_containers.iter().filter(|c| c.is_sidecar()).chain(&spec.containers)
}

/// Where a pod's init containers are, while they run or after one failed: the reason the
/// pod's containers show (`Init:1/2`, `Init:Error`, `Init:CrashLoopBackOff`, ...), the error to
/// show with it, and whether the pod has failed (an init container failed and the pod never
/// restarts). `None` once they are behind it.
fn init_state(
    assignment: &PodAssignment,
    pod: Option<&ObservedPod>,
    waiting: &HashMap<String, Waiting>,
) -> Option<(String, Option<String>, bool)> {
    let inits = &assignment.spec.init_containers;
    if inits.is_empty() || pod.is_some_and(|p| init_done(assignment, p)) {
        return None;
    }
    let total = inits.len();
    let key = pod_key(&assignment.namespace, &assignment.pod);
    let never = assignment.spec.restart_policy == Some(RestartPolicy::Never);
    for (done, init) in inits.iter().enumerate() {
        let latest = pod.and_then(|p| p.containers.get(&init.name)).and_then(|a| a.last());
        let wait = waiting.get(&format!("{key}/{}", init.name));
        let progress = format!("Init:{done}/{total}");
        return Some(match latest {
            Some(c) if c.state == ContainerState::Running && init.is_sidecar() => continue,
            Some(c) if c.state == ContainerState::Exited && c.exit_code == Some(0) && !init.is_sidecar() => continue,
            Some(c) if c.state == ContainerState::Running || c.state == ContainerState::Other => {
                (progress, None, false)
            }
            None => match wait {
                Some(w) if w.reason.contains("pulling") => {
                    ("Init:ImagePullBackOff".into(), Some(w.reason.clone()), false)
                }
                Some(w) => ("Init:CreateContainerError".into(), Some(w.reason.clone()), false),
                None => (progress, None, false),
            },
            Some(c) => {
                let error = format!(
                    "init container {} exited with code {}",
                    init.name,
                    c.exit_code.map_or_else(|| "?".to_owned(), |code| code.to_string())
                );
                match (never && !init.is_sidecar(), wait) {
                    (true, _) => ("Init:Error".into(), Some(error), true),
                    (false, Some(_)) => ("Init:CrashLoopBackOff".into(), Some(error), false),
                    (false, None) => ("Init:Error".into(), Some(error), false),
                }
            }
        });
    }
    None
}

/// The pod's `fsGroup`, when it names a valid group id.
fn fs_group(assignment: &PodAssignment) -> Option<u32> {
    assignment.spec.security_context.as_ref().and_then(|c| c.fs_group).and_then(|g| u32::try_from(g).ok())
}
