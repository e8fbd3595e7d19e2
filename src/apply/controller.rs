//! The controller: one reconcile pass from a loaded commit and what the nodes report to the
//! assignment of every node.
//!
//! Level-triggered. Each pass reads the nodes, their assignments and their reports from the
//! store, asks [`crate::plan::rollout::step`] what each workload needs next, schedules new pods with
//! [`crate::plan::schedule`], drops the pods of workloads the commit no longer declares and of
//! nodes that stopped heartbeating, and writes the assignments that changed. It keeps no state
//! of its own but when pods turned ready (for minReadySeconds), so a restarted control plane
//! resumes from the store. It is only ever given a commit that loaded without errors.

use super::cron;
use super::job;
use super::pods::{Replica, Sources, assignment, rollout_hash};
use super::stateful;
use crate::lock;
use crate::manifest::types::{CronJob, Job, ObjectMeta, PersistentVolumeClaimSpec};
use crate::manifest::types::{DaemonSetStrategyType, IntOrString};
use crate::manifest::{Kind, Object, ObjectKey, Resource};
use crate::nodes::protocol::{PodAssignment, PodPhase, PodStatus, RouteTable, ServiceRoute};
use crate::plan::rollout::{self, PodView, Strategy, Wishes};
use crate::plan::schedule::{self, NodeInfo, Placement, PodRequest, requests};
use crate::store::events::EventRecorder;
use crate::store::{Allocations, ClaimRecord, NewEvent, ServiceWants, Store, StoreError};
use crate::sync::Loaded;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};

#[derive(Debug, Clone)]
pub struct ControllerConfig {
    /// A node that has not heartbeaten for this long is NotReady: its pods are scheduled elsewhere.
    pub node_grace_seconds: i64,
}

impl Default for ControllerConfig {
    fn default() -> Self {
        ControllerConfig { node_grace_seconds: 30 }
    }
}

/// A Normal event of `pod`, owned by its workload.
fn pod_event(pod: &PodAssignment, reason: &str, message: String) -> NewEvent {
    NewEvent {
        namespace: pod.namespace.clone(),
        object: format!("Pod/{}", pod.pod),
        owner: format!("{}/{}", pod.workload_kind, pod.workload_name),
        kind: "Normal",
        reason: reason.to_owned(),
        message,
    }
}

/// Where one workload stands after a pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkloadStatus {
    pub key: ObjectKey,
    /// Wished replicas; `None` for a DaemonSet.
    pub replicas: Option<i32>,
    pub updated: usize,
    pub available: usize,
    pub total: usize,
    pub complete: bool,
    /// Why pods wait to be placed, such as `0/3 nodes fit: 2 insufficient memory`.
    pub unschedulable: Vec<String>,
    /// The commit whose spec the workload was reconciled to.
    pub revision: String,
    /// Why the new pods are failing (a container restarting over and over), when they are.
    pub failure: Option<String>,
    /// Pods that run older ConfigMap or Secret values because the workload keeps its pods on a
    /// config change (`berth.dev/restart-on-config-change: "false"`).
    pub stale_config: Vec<String>,
    /// Its pods that still run on a Ready node but are on their way out: draining from the
    /// routes, or no longer assigned and not yet reported gone. A workload is complete only
    /// when none are left.
    pub terminating: usize,
    /// A Job's run: where it stands and its pods' counts.
    pub job: Option<JobProgress>,
    /// Why it does not start yet: it waits for the commit's PreSync hooks, or it is a PostSync
    /// hook and the rest of the commit is not yet healthy.
    pub waiting: Option<String>,
}

/// Where a Job's run of its current spec stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobProgress {
    pub state: job::JobState,
    pub active: usize,
    pub succeeded: usize,
    /// Failures counted toward backoffLimit.
    pub failed: usize,
    /// `spec.completions`; `None` for a work queue.
    pub completions: Option<i32>,
    /// Why no pod starts now although one is due (a backoff).
    pub waiting: Option<String>,
}

/// A container that restarted this often without becoming ready is crash-looping.
pub const CRASH_LOOP_RESTARTS: u32 = 3;

/// What each workload is reconciled to, besides the commit's own spec.
#[derive(Debug, Default, Clone)]
pub struct Targets {
    /// Workloads held at another commit's spec: a rollback, by hand or after a failed rollout.
    pub overrides: HashMap<ObjectKey, Arc<Loaded>>,
    /// Workloads gone from the commit whose pods stay (annotation `berth.dev/prune: "false"`).
    pub retained: BTreeSet<ObjectKey>,
    /// Workloads left as they run, with the reason: what their commit gives is not what the
    /// plan being carried out names.
    pub frozen: HashMap<ObjectKey, String>,
    /// What the loop remembers of each Job's latest run: a spec that finished is not run again.
    pub jobs: HashMap<ObjectKey, job::JobRecord>,
    /// Runs of CronJobs asked for by hand: the CronJob and the Job's name.
    pub manual_runs: Vec<(ObjectKey, String)>,
    /// Workloads (and CronJobs) of the commit that do not start yet, with the reason: the
    /// commit's PreSync hooks have not all completed.
    pub waiting: HashMap<ObjectKey, String>,
}

/// Where one CronJob stands: what the loop remembers of it, its runs' statuses, and its next
/// time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CronJobStatus {
    pub key: ObjectKey,
    pub state: cron::CronState,
    /// Why a due run does not start (suspended, Forbid).
    pub held: Option<String>,
    pub next: Option<i64>,
    /// The status of each of its runs (Jobs) kept.
    pub runs: Vec<WorkloadStatus>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReconcileSummary {
    /// The workloads of the commit. A CronJob's runs are not among them: they come and go on
    /// its schedule, and do not make a commit progressing or degraded.
    pub workloads: Vec<WorkloadStatus>,
    pub cron_jobs: Vec<CronJobStatus>,
    /// Nodes whose assignment this pass changed.
    pub nodes_changed: usize,
    pub ready_nodes: usize,
    /// Pods of workloads the commit no longer declares that still run or stop on Ready nodes.
    pub pruning: usize,
}

impl ReconcileSummary {
    pub fn complete(&self) -> bool {
        self.pruning == 0 && self.workloads.iter().all(|w| w.complete)
    }
}

/// How the controller reaches the nodes: it hands them their pods and the route table, and
/// learns which table each routes by. The server's agent API is one.
pub trait Nodes: Send + Sync + 'static {
    /// Replaces what several nodes must run, in one transaction, and wakes their agents; the
    /// assignments written, with their generations.
    fn assign_many(
        &self,
        changes: Vec<(String, Vec<PodAssignment>)>,
    ) -> impl std::future::Future<Output = Result<Vec<(String, u64, Vec<PodAssignment>)>, StoreError>> + Send;
    /// Publishes the route table when it changed; its version.
    fn publish_routes(&self, services: Vec<ServiceRoute>) -> u64;
    /// The route table as last published.
    fn routes(&self) -> Arc<RouteTable>;
    /// The version of the route table `node` routes by, as far as is known.
    fn routes_acked(&self, node: &str) -> u64;
    /// A pod's CPU (millicores) and memory (bytes) in use, averaged over the `window` seconds
    /// before `now`, as its node's samples say; `None` when none was sampled in it. What an
    /// autoscaler reads.
    fn pod_usage(&self, namespace: &str, pod: &str, window: i64, now: i64) -> Option<(u64, u64)>;
    /// Asks `node` to remove the volume of a claim, with its data; whether it had one.
    fn remove_claim(
        &self,
        node: &str,
        namespace: &str,
        claim: &str,
    ) -> impl std::future::Future<Output = Result<bool, String>> + Send + 'static;
}

/// A node's assignment at a generation.
type Generation = (u64, Arc<Vec<PodAssignment>>);

pub struct Controller<N: Nodes> {
    store: Arc<Store>,
    api: N,
    config: ControllerConfig,
    /// When the controller first saw each pod ready, by `namespace/pod`.
    ready_since: Mutex<HashMap<String, i64>>,
    /// The Ready nodes of the last pass: a change is a NodeReady or NodeNotReady event.
    ready_nodes: Mutex<Option<BTreeSet<String>>>,
    /// When it first saw each pod failed, by `namespace/pod`: a Job's retry backs off from it.
    failed_since: Mutex<HashMap<String, i64>>,
    /// Each node's assignment as last read or written, by generation: re-read only when the
    /// generation in the store differs.
    assignments: Mutex<HashMap<String, Generation>>,
    /// Pods on their way out that were routed to: kept running until every Ready node routes
    /// by a table without them, by `(namespace, pod)`.
    leaving: Mutex<HashMap<(String, String), Leaving>>,
    /// The services' addresses, for the services they were allocated for.
    allocations: Mutex<Option<(Vec<ServiceWants>, Allocations)>>,
    /// Claims whose volume a node is asked to remove, by `(namespace, claim)`, since when.
    removing_claims: Mutex<HashMap<(String, String), i64>>,
    /// Writes the events of passes, a lasting condition's again only every half minute.
    events: EventRecorder,
}

/// A claim removal that has not finished after this long is asked for again.
const CLAIM_REMOVAL_RETRY_SECONDS: i64 = 30;

/// A pod taken out of the routes before it stops.
#[derive(Debug, Clone, Copy)]
struct Leaving {
    since: i64,
    /// The first route table version without it.
    version: Option<u64>,
}

/// The longest a leaving pod waits for a node that does not confirm the routes without it.
pub const DRAIN_LIMIT_SECONDS: i64 = 5;

fn workload_of(pod: &PodAssignment) -> ObjectKey {
    ObjectKey { kind: pod.workload_kind, namespace: pod.namespace.clone(), name: pod.workload_name.clone() }
}

fn ordinal_of(pod: &str) -> usize {
    pod.rsplit('-').next().and_then(|o| o.parse().ok()).unwrap_or(usize::MAX)
}

impl<N: Nodes> Controller<N> {
    pub fn new(store: Arc<Store>, api: N, config: ControllerConfig) -> Controller<N> {
        Controller {
            store,
            api,
            config,
            ready_since: Mutex::new(HashMap::new()),
            ready_nodes: Mutex::new(None),
            failed_since: Mutex::new(HashMap::new()),
            assignments: Mutex::new(HashMap::new()),
            leaving: Mutex::new(HashMap::new()),
            allocations: Mutex::new(None),
            removing_claims: Mutex::new(HashMap::new()),
            events: EventRecorder::default(),
        }
    }

    /// NodeNotReady and NodeReady events for the nodes whose readiness changed since the last
    /// pass (none on the first: what was before is not known).
    async fn tell_node_changes(&self, nodes: &[crate::store::NodeRecord], ready: &BTreeSet<&str>, now: i64) {
        let now_ready: BTreeSet<String> = ready.iter().map(|n| (*n).to_owned()).collect();
        let before = lock(&self.ready_nodes).replace(now_ready.clone());
        let Some(before) = before.filter(|b| *b != now_ready) else { return };
        let node_event = |name: &str, kind: &'static str, reason: &str, message: String| NewEvent {
            namespace: String::new(),
            object: format!("Node/{name}"),
            owner: String::new(),
            kind,
            reason: reason.to_owned(),
            message,
        };
        let mut events = Vec::new();
        for node in nodes {
            let name = node.name.as_str();
            if before.contains(name) && !now_ready.contains(name) {
                let silent = now - node.last_heartbeat;
                events.push(node_event(
                    name,
                    "Warning",
                    "NodeNotReady",
                    format!("node {name} has not heartbeaten for {silent} s; pods that can move are placed elsewhere"),
                ));
            } else if !before.contains(name) && now_ready.contains(name) {
                events.push(node_event(name, "Normal", "NodeReady", format!("node {name} is Ready")));
            }
        }
        self.events.record(&self.store, events, now).await;
    }

    /// One pass towards `desired` at time `now` (seconds since the Unix epoch).
    pub async fn reconcile(
        &self,
        desired: &Loaded,
        targets: &Targets,
        now: i64,
    ) -> Result<ReconcileSummary, StoreError> {
        let nodes = self.store.nodes().await?;
        let ready: BTreeSet<&str> = nodes
            .iter()
            .filter(|n| now - n.last_heartbeat <= self.config.node_grace_seconds)
            .map(|n| n.name.as_str())
            .collect();
        self.tell_node_changes(&nodes, &ready, now).await;
        let generations: HashMap<String, u64> = self.store.assignment_generations().await?.into_iter().collect();
        let mut stored: BTreeMap<String, Arc<Vec<PodAssignment>>> = BTreeMap::new();
        for node in &nodes {
            let generation = generations.get(&node.name).copied().unwrap_or(0);
            let cached =
                lock(&self.assignments).get(&node.name).filter(|(g, _)| *g == generation).map(|(_, p)| p.clone());
            let pods = match cached {
                Some(pods) => pods,
                None => {
                    let (generation, mut pods) = self.store.assignment(&node.name).await?;
                    pods.sort_by(|a, b| (&a.namespace, &a.pod).cmp(&(&b.namespace, &b.pod)));
                    let pods = Arc::new(pods);
                    lock(&self.assignments).insert(node.name.clone(), (generation, pods.clone()));
                    pods
                }
            };
            stored.insert(node.name.clone(), pods);
        }
        // A report stands for a pod only when it is of the pod assigned there now: not of an
        // earlier pod of the same name on its way out.
        let uids: HashMap<(&str, &str, &str), &str> = stored
            .iter()
            .flat_map(|(node, pods)| {
                pods.iter().map(move |p| ((node.as_str(), p.namespace.as_str(), p.pod.as_str()), p.uid.as_str()))
            })
            .collect();
        let mut reports: HashMap<String, PodStatus> = HashMap::new();
        // Pods a Ready node reports that it is not assigned (any more): they are stopping.
        let mut unassigned: Vec<PodStatus> = Vec::new();
        for (node, status) in self.store.all_reports().await? {
            if !ready.contains(node.as_str()) {
                continue;
            }
            let current = uids.get(&(node.as_str(), status.namespace.as_str(), status.pod.as_str()));
            if current == Some(&status.uid.as_str()) {
                reports.insert(format!("{}/{}", status.namespace, status.pod), status);
            } else {
                unassigned.push(status);
            }
        }
        let ready_since = {
            let mut ready_since = lock(&self.ready_since);
            ready_since.retain(|key, _| reports.get(key).is_some_and(|r| r.ready));
            for (key, status) in &reports {
                if status.ready {
                    ready_since.entry(key.clone()).or_insert(now);
                }
            }
            ready_since.clone()
        };
        let failed_since = {
            let mut failed_since = lock(&self.failed_since);
            failed_since.retain(|key, _| reports.get(key).is_some_and(|r| r.phase == PodPhase::Failed));
            for (key, status) in &reports {
                if status.phase == PodPhase::Failed {
                    failed_since.entry(key.clone()).or_insert(now);
                }
            }
            failed_since.clone()
        };
        let node_infos: Vec<NodeInfo> = nodes
            .iter()
            .map(|n| NodeInfo {
                name: n.name.clone(),
                ready: ready.contains(n.name.as_str()),
                labels: n.labels.clone(),
                allocatable: n.allocatable,
            })
            .collect();

        // Each CronJob's step: the runs it starts, stops and forgets; its runs are Jobs of
        // their own, declared while the CronJob keeps them.
        // A state that does not read (written by another berth) starts afresh.
        let mut crons: BTreeMap<(String, String), cron::CronState> = self
            .store
            .cron_states()
            .await?
            .into_iter()
            .filter_map(|(id, text)| Some((id, serde_json::from_str(&text).ok()?)))
            .collect();
        let before = crons.clone();
        let mut cron_steps: Vec<(ObjectKey, cron::CronStep)> = Vec::new();
        let mut spawned: Vec<(Arc<Resource>, (String, String))> = Vec::new();
        for resource in desired.resources.iter().filter(|r| r.key.kind == Kind::CronJob) {
            let Object::CronJob(cron_job) = &resource.object else { continue };
            if targets.waiting.contains_key(&resource.key) {
                continue;
            }
            let id = (resource.key.namespace.clone(), resource.key.name.clone());
            let state = crons.entry(id.clone()).or_insert_with(|| cron::CronState { since: now, ..Default::default() });
            let step = cron::step(&cron_job.spec, state, now);
            state.runs.retain(|r| !step.stop.contains(&r.name) && !step.drop.contains(&r.name));
            if let Some(due) = step.start {
                state.last_scheduled = Some(due);
                let name = cron::run_name(&resource.key.name, due);
                if !state.runs.iter().any(|r| r.name == name) {
                    state.runs.push(cron::Run { name, scheduled: due, manual: false, finished: None });
                }
            }
            for (_, name) in targets.manual_runs.iter().filter(|(key, _)| key == &resource.key) {
                if !state.runs.iter().any(|r| &r.name == name) {
                    state.runs.push(cron::Run { name: name.clone(), scheduled: now, manual: true, finished: None });
                }
            }
            for run in &state.runs {
                spawned.push((Arc::new(spawned_job(resource, cron_job, &run.name)), id.clone()));
            }
            cron_steps.push((resource.key.clone(), step));
        }
        let gone: Vec<(String, String)> = crons
            .keys()
            .filter(|(ns, name)| {
                !desired
                    .resources
                    .iter()
                    .any(|r| r.key.kind == Kind::CronJob && &r.key.namespace == ns && &r.key.name == name)
            })
            .cloned()
            .collect();
        for id in &gone {
            crons.remove(id);
        }

        let declared: BTreeSet<ObjectKey> = desired
            .resources
            .iter()
            .filter(|r| r.key.kind.is_workload())
            .map(|r| r.key.clone())
            .chain(spawned.iter().map(|(r, _)| r.key.clone()))
            .chain(targets.retained.iter().cloned())
            .collect();

        let sources = Sources::new(&desired.resources, &desired.secrets);
        // Each workload's pods, with their nodes: gathered once, not once per workload. Pods on
        // their way out count as gone, as terminating pods do in Kubernetes.
        let leaving = lock(&self.leaving).clone();
        let mut by_workload: HashMap<ObjectKey, Vec<(&str, &PodAssignment)>> = HashMap::new();
        for (node, pods) in stored.iter().filter(|(node, _)| ready.contains(node.as_str())) {
            for pod in pods.iter() {
                let workload = workload_of(pod);
                if declared.contains(&workload) && !leaving.contains_key(&(pod.namespace.clone(), pod.pod.clone())) {
                    by_workload.entry(workload).or_default().push((node.as_str(), pod));
                }
            }
        }
        // Pods that still stop (draining from the routes, or no longer assigned but reported by
        // a Ready node): a StatefulSet does not start their ordinal again until they are gone.
        let stopping_pods: HashSet<(String, String)> =
            leaving.keys().cloned().chain(unassigned.iter().map(|s| (s.namespace.clone(), s.pod.clone()))).collect();
        let mut deletes: HashSet<(String, String)> = HashSet::new();
        let mut pending: Vec<(PodRequest, PodAssignment, ObjectKey)> = Vec::new();
        let mut statuses = Vec::new();
        // PostSync hooks come last: they start once everything else of the commit is complete.
        let (post_sync, others): (Vec<&Arc<Resource>>, Vec<&Arc<Resource>>) = desired
            .resources
            .iter()
            .filter(|r| r.key.kind.is_workload())
            .partition(|r| r.is_hook(crate::manifest::Hook::PostSync));
        let others_count = others.len();
        for (index, resource) in others.into_iter().chain(post_sync).enumerate() {
            let current = by_workload.remove(&resource.key).unwrap_or_default();
            if let Some(reason) = targets.frozen.get(&resource.key) {
                statuses.push(frozen(resource, &current, &reports, &desired.commit.sha, reason));
                continue;
            }
            let waiting = targets.waiting.get(&resource.key).cloned().or_else(|| {
                let rest_complete = statuses.iter().take(others_count).all(|s| s.complete);
                (index >= others_count && !rest_complete)
                    .then(|| "the PostSync hook waits until the rest of the commit is healthy".to_owned())
            });
            if let Some(reason) = waiting {
                let mut status = frozen(resource, &current, &reports, &desired.commit.sha, "");
                status.failure = None;
                if let Object::Job(job) = &resource.object {
                    status.job = Some(JobProgress {
                        state: job::JobState::Waiting,
                        active: 0,
                        succeeded: 0,
                        failed: 0,
                        completions: job.spec.completions,
                        waiting: Some(reason.clone()),
                    });
                }
                status.waiting = Some(reason);
                statuses.push(status);
                continue;
            }
            let mut step = Step {
                current,
                ready_since: &ready_since,
                failed_since: &failed_since,
                reports: &reports,
                deletes: &mut deletes,
                stopping: &stopping_pods,
                job: targets.jobs.get(&resource.key),
            };
            let status = match targets
                .overrides
                .get(&resource.key)
                .and_then(|commit| commit.resources.iter().find(|r| r.key == resource.key).map(|r| (commit, r)))
            {
                // A held workload runs its earlier pod template, at the replicas Git has now:
                // a rollback restores the template, as `kubectl rollout undo` does.
                Some((commit, held)) => {
                    let sources = Sources::new(&commit.resources, &commit.secrets);
                    let replicas = resource.object.replicas();
                    let target = Target { resource: held, commit, sources: &sources, replicas };
                    plan_workload(&target, &node_infos, &mut step, &mut pending, now)
                }
                None => {
                    let replicas = resource.object.replicas();
                    let target = Target { resource, commit: desired, sources: &sources, replicas };
                    plan_workload(&target, &node_infos, &mut step, &mut pending, now)
                }
            };
            statuses.push(status);
        }
        // The CronJobs' runs, with the record of each run for its Job's step; how each ends is
        // remembered in the CronJob's state.
        let mut runs: Vec<WorkloadStatus> = Vec::new();
        for (resource, id) in &spawned {
            let current = by_workload.remove(&resource.key).unwrap_or_default();
            let state = crons.get(id);
            let run = state.and_then(|s| s.runs.iter().find(|r| r.name == resource.key.name));
            let record = run.map(|run| job::JobRecord {
                spec_hash: rollout_hash(resource, &sources),
                commit: desired.commit.sha.clone(),
                started_at: run.scheduled,
                finished: run.finished.clone(),
            });
            let mut step = Step {
                current,
                ready_since: &ready_since,
                failed_since: &failed_since,
                reports: &reports,
                deletes: &mut deletes,
                stopping: &stopping_pods,
                job: record.as_ref(),
            };
            let target = Target { resource, commit: desired, sources: &sources, replicas: None };
            let status = plan_workload(&target, &node_infos, &mut step, &mut pending, now);
            let ended = match status.job.as_ref().map(|j| &j.state) {
                Some(job::JobState::Complete) => Some((now, false, String::new())),
                Some(job::JobState::Failed(reason)) => Some((now, true, reason.clone())),
                _ => None,
            };
            if let (Some(ended), Some(state)) = (ended, crons.get_mut(id)) {
                if let Some(run) = state.runs.iter_mut().find(|r| r.name == resource.key.name && r.finished.is_none()) {
                    run.finished = Some(ended);
                }
            }
            runs.push(status);
        }
        let changed: BTreeMap<(String, String), String> = crons
            .iter()
            .filter(|(id, state)| before.get(*id) != Some(*state))
            .map(|(id, state)| (id.clone(), serde_json::to_string(state).unwrap_or_default()))
            .collect();
        if !changed.is_empty() || !gone.is_empty() {
            self.store.write_cron_states(&changed, &gone).await?;
        }
        let cron_jobs: Vec<CronJobStatus> = cron_steps
            .into_iter()
            .map(|(key, step)| {
                let id = (key.namespace.clone(), key.name.clone());
                let state = crons.get(&id).cloned().unwrap_or_default();
                let runs = runs
                    .iter()
                    .filter(|r| state.runs.iter().any(|run| run.name == r.key.name && r.key.namespace == key.namespace))
                    .cloned()
                    .collect();
                CronJobStatus { key, state, held: step.held, next: step.next, runs }
            })
            .collect();
        // What stays of each node's assignment: not on a NotReady node (its pods count as lost
        // and are placed elsewhere), and not on its way out: of a declared workload, not
        // deleted by a step, or still draining from the routes.
        let table = self.api.routes();
        let routed: HashSet<(&str, &str)> = table
            .services
            .iter()
            .flat_map(|s| s.endpoints.iter().map(move |e| (s.namespace.as_str(), e.pod.as_str())))
            .collect();
        let min_acked = ready.iter().map(|node| self.api.routes_acked(node)).min().unwrap_or(u64::MAX);
        let mut draining: HashMap<(String, String), Leaving> = HashMap::new();
        let mut gone: HashSet<(String, String)> = HashSet::new();
        let mut events: Vec<NewEvent> = Vec::new();
        for pods in stored.iter().filter(|(node, _)| ready.contains(node.as_str())).map(|(_, pods)| pods) {
            for pod in pods.iter() {
                let key = (pod.namespace.clone(), pod.pod.clone());
                let leaves =
                    leaving.contains_key(&key) || !declared.contains(&workload_of(pod)) || deletes.contains(&key);
                if !leaves {
                    continue;
                }
                let drained = match leaving.get(&key) {
                    Some(l) => l.version.is_some_and(|v| min_acked >= v) || now - l.since >= DRAIN_LIMIT_SECONDS,
                    None => !routed.contains(&(pod.namespace.as_str(), pod.pod.as_str())),
                };
                if drained {
                    if let Some(l) = leaving.get(&key) {
                        tracing::debug!(pod = %key.1, version = ?l.version, min_acked, "Drained from the routes; stopping.");
                    }
                    events.push(pod_event(pod, "Killing", format!("stopping pod {}", pod.pod)));
                    gone.insert(key);
                } else {
                    let entry = leaving.get(&key).copied().unwrap_or(Leaving { since: now, version: None });
                    draining.insert(key, entry);
                }
            }
        }
        let keeps = |node: &str, pod: &PodAssignment| {
            ready.contains(node) && !gone.contains(&(pod.namespace.clone(), pod.pod.clone()))
        };

        // Claims: a pod whose claim is on a node goes there, and waits while that node is not
        // Ready; a claim with no node yet goes where its first pod is placed.
        let mut claims: BTreeMap<(String, String), ClaimRecord> =
            self.store.volume_claims().await?.into_iter().map(|c| ((c.namespace.clone(), c.name.clone()), c)).collect();
        let claims_before = claims.clone();
        let mut placing: HashSet<(String, String)> = HashSet::new();
        pending.retain_mut(|(request, pod, workload)| {
            let mut nodes: BTreeSet<&str> = BTreeSet::new();
            let mut unbound = Vec::new();
            for claim in super::pods::claims_of(pod) {
                let id = (pod.namespace.clone(), claim.to_owned());
                match claims.get(&id).and_then(|c| c.node.as_deref()) {
                    Some(node) => {
                        nodes.insert(node);
                    }
                    None => unbound.push(id),
                }
            }
            let wait = |reason: String, statuses: &mut Vec<WorkloadStatus>| {
                if let Some(status) = statuses.iter_mut().find(|s| &s.key == workload) {
                    status.complete = false;
                    status.unschedulable.push(reason);
                }
            };
            if nodes.len() > 1 {
                let names: Vec<&str> = nodes.iter().copied().collect();
                wait(
                    format!("pod {}: its claims are on different nodes ({}), so it fits on none", pod.pod, names.join(", ")),
                    &mut statuses,
                );
                return false;
            }
            if let Some(node) = nodes.first() {
                if !ready.contains(node) {
                    let claim = super::pods::claims_of(pod)
                        .find(|c| claims.get(&(pod.namespace.clone(), (*c).to_owned())).and_then(|r| r.node.as_deref()) == Some(*node))
                        .unwrap_or_default();
                    let state = if nodes_known(&node_infos, node) { "which is NotReady" } else { "which is gone" };
                    wait(
                        format!(
                            "pod {} waits: volume {claim} is on node {node}, {state}; it is never made again empty elsewhere",
                            pod.pod
                        ),
                        &mut statuses,
                    );
                    return false;
                }
                request.pinned = Some((*node).to_owned());
            }
            // Two new pods of one claim in a pass: the second follows the first next pass.
            if unbound.iter().any(|id| placing.contains(id)) {
                return false;
            }
            placing.extend(unbound);
            true
        });

        // Place what is new, with what stays counted as running.
        let placed: Vec<(PodRequest, String)> = stored
            .iter()
            .flat_map(|(node, pods)| {
                pods.iter().filter(|p| keeps(node, p)).map(move |p| (request_of(p, None), node.clone()))
            })
            .collect();
        let requests: Vec<PodRequest> = pending.iter().map(|(request, _, _)| request.clone()).collect();
        let mut additions: BTreeMap<String, Vec<PodAssignment>> = BTreeMap::new();
        for ((_, mut pod, workload), (_, placement)) in
            pending.into_iter().zip(schedule::schedule(&node_infos, &placed, &requests))
        {
            match placement {
                Placement::Node(node) => {
                    for claim in super::pods::claims_of(&pod) {
                        let id = (pod.namespace.clone(), claim.to_owned());
                        if claims.get(&id).is_some_and(|c| c.node.is_some()) {
                            continue;
                        }
                        let record = claims
                            .entry(id)
                            .or_insert_with(|| new_claim(&desired.resources, &pod.namespace, claim, now));
                        record.node = Some(node.clone());
                    }
                    if let Some(record) = nodes.iter().find(|n| n.name == node) {
                        let allocatable = (record.allocatable.cpu_millis, record.allocatable.memory_bytes);
                        super::pods::place(&mut pod, &record.name, &record.address, allocatable);
                    }
                    let message = format!("assigned {}/{} to node {node}", pod.namespace, pod.pod);
                    events.push(pod_event(&pod, "Scheduled", message));
                    additions.entry(node).or_default().push(pod);
                }
                Placement::Unschedulable(reason) => {
                    events.push(NewEvent {
                        namespace: workload.namespace.clone(),
                        object: format!("{}/{}", workload.kind, workload.name),
                        owner: String::new(),
                        kind: "Warning",
                        reason: "FailedScheduling".to_owned(),
                        message: reason.clone(),
                    });
                    if let Some(status) = statuses.iter_mut().find(|s| s.key == workload) {
                        status.complete = false;
                        status.unschedulable.push(reason);
                    }
                }
            }
        }

        // Claims the commit declares are recorded (Pending until a pod is placed); a claim no
        // object declares any more is orphaned, its data kept.
        for resource in desired.resources.iter().filter(|r| r.key.kind == Kind::PersistentVolumeClaim) {
            let id = (resource.key.namespace.clone(), resource.key.name.clone());
            let fresh = new_claim(&desired.resources, &id.0, &id.1, now);
            let record = claims.entry(id).or_insert_with(|| fresh.clone());
            record.storage = fresh.storage;
            record.access_modes = fresh.access_modes;
            record.storage_class = fresh.storage_class;
            record.owner = fresh.owner;
        }
        // Claims whose StatefulSet's retention policy says they go: with the StatefulSet, or
        // when their ordinal is scaled away, once no pod mounts them. The commit that does it
        // waited for an approval (`server::verdicts`).
        let mounted: HashSet<(&str, &str)> = stored
            .values()
            .flat_map(|pods| pods.iter())
            .chain(additions.values().flatten())
            .flat_map(|pod| super::pods::claims_of(pod).map(|claim| (pod.namespace.as_str(), claim)))
            .collect();
        let mut expired: Vec<(String, String, Option<String>)> = Vec::new();
        for record in claims.values_mut() {
            let declaration = claim_declaration(&desired.resources, &record.namespace, &record.name);
            match (declaration.is_some(), record.orphaned_at) {
                (true, Some(_)) => record.orphaned_at = None,
                (false, None) => record.orphaned_at = Some(now),
                _ => {}
            }
            if let Some(declaration) = &declaration {
                record.delete_when_deleted = declaration.delete_when_deleted;
                record.delete_when_scaled = declaration.delete_when_scaled;
            }
            let pod_of_claim = declaration.as_ref().and_then(|d| d.pod.clone());
            let due = match &declaration {
                Some(d) => d.delete_when_scaled && d.scaled_away,
                None => record.delete_when_deleted && record.owner.starts_with("StatefulSet/"),
            };
            let in_use = mounted.contains(&(record.namespace.as_str(), record.name.as_str()))
                || pod_of_claim.is_some_and(|pod| stopping_pods.contains(&(record.namespace.clone(), pod)));
            if due && !in_use {
                expired.push((record.namespace.clone(), record.name.clone(), record.node.clone()));
            }
        }
        let changed_claims: Vec<ClaimRecord> = claims
            .values()
            .filter(|c| claims_before.get(&(c.namespace.clone(), c.name.clone())) != Some(*c))
            .cloned()
            .collect();
        if !changed_claims.is_empty() {
            // Before any pod is assigned: a claim's node is durable before its pod writes data.
            self.store.write_volume_claims(&changed_claims).await?;
        }
        self.remove_claims(expired, &ready, now).await?;

        // Only the nodes whose assignment changes are copied and written.
        let mut changes: Vec<(String, Vec<PodAssignment>)> = Vec::new();
        for node in &nodes {
            let before = &stored[&node.name];
            let added = additions.remove(&node.name).unwrap_or_default();
            if !ready.contains(node.name.as_str()) {
                // A NotReady node is told to run nothing, so its stale pods go when it returns.
                if !before.is_empty() {
                    changes.push((node.name.clone(), Vec::new()));
                }
                continue;
            }
            if added.is_empty() && before.iter().all(|p| keeps(&node.name, p)) {
                continue;
            }
            let mut pods: Vec<PodAssignment> =
                before.iter().filter(|p| keeps(&node.name, p)).cloned().chain(added).collect();
            pods.sort_by(|a, b| (&a.namespace, &a.pod).cmp(&(&b.namespace, &b.pod)));
            if pods.as_slice() != before.as_slice() {
                changes.push((node.name.clone(), pods));
            }
        }
        // Routes first: a pod leaves every node's routing before its node is told to stop it.
        // Pods that stop in this pass stay out too: their nodes are told next.
        let unrouted: HashSet<(String, String)> = draining.keys().chain(gone.iter()).cloned().collect();
        let version = self.publish_routes(desired, targets, &nodes, &ready, &stored, &reports, &unrouted).await?;
        if !draining.is_empty() {
            tracing::debug!(version, leaving = ?draining.keys().map(|k| &k.1).collect::<Vec<_>>(), "Draining.");
        }
        let draining_now: HashSet<(String, String)> = draining.keys().cloned().collect();
        *lock(&self.leaving) = draining
            .into_iter()
            .map(|(key, leaving)| (key, Leaving { version: leaving.version.or(Some(version)), ..leaving }))
            .collect();

        for status in statuses.iter().filter(|s| !s.unschedulable.is_empty()) {
            for reason in status.unschedulable.iter().filter(|r| r.contains(" waits: volume ")) {
                events.push(NewEvent {
                    namespace: status.key.namespace.clone(),
                    object: format!("{}/{}", status.key.kind, status.key.name),
                    owner: String::new(),
                    kind: "Warning",
                    reason: "FailedScheduling".to_owned(),
                    message: reason.clone(),
                });
            }
        }
        self.events.record(&self.store, events, now).await;
        let nodes_changed = changes.len();
        if !changes.is_empty() {
            let written = self.api.assign_many(changes).await?;
            let mut cache = lock(&self.assignments);
            for (node, generation, pods) in written {
                cache.insert(node, (generation, Arc::new(pods)));
            }
        }
        // After this pass, what is on its way out: pods draining from the routes, and pods a
        // Ready node reports that it is no longer told to run. They count until they are gone.
        let mut stopping: HashMap<ObjectKey, usize> = HashMap::new();
        for pods in stored.iter().filter(|(node, _)| ready.contains(node.as_str())).map(|(_, pods)| pods) {
            for pod in pods.iter().filter(|p| draining_now.contains(&(p.namespace.clone(), p.pod.clone()))) {
                *stopping.entry(workload_of(pod)).or_default() += 1;
            }
        }
        let reported_gone = reports.values().filter(|r| gone.contains(&(r.namespace.clone(), r.pod.clone())));
        for status in unassigned.iter().chain(reported_gone) {
            if let Some(kind) = status.workload_kind {
                let key = ObjectKey { kind, namespace: status.namespace.clone(), name: status.workload_name.clone() };
                *stopping.entry(key).or_default() += 1;
            }
        }
        for status in &mut statuses {
            status.terminating = stopping.get(&status.key).copied().unwrap_or(0);
            if status.terminating > 0 {
                status.complete = false;
            }
        }
        let pruning = stopping.iter().filter(|(key, _)| !declared.contains(*key)).map(|(_, n)| n).sum();
        Ok(ReconcileSummary { workloads: statuses, cron_jobs, nodes_changed, ready_nodes: ready.len(), pruning })
    }
}

impl<N: Nodes> Controller<N> {
    /// Removes the volumes of claims their retention policy lets go, each in the background on
    /// its node (tried again after a while if it fails); a claim on no node is only forgotten,
    /// and one on a node that is not Ready waits for it.
    async fn remove_claims(
        &self,
        expired: Vec<(String, String, Option<String>)>,
        ready: &BTreeSet<&str>,
        now: i64,
    ) -> Result<(), StoreError> {
        let mut forget = Vec::new();
        let mut start = Vec::new();
        {
            let mut removing = lock(&self.removing_claims);
            removing.retain(|key, since| {
                now - *since < CLAIM_REMOVAL_RETRY_SECONDS
                    && expired.iter().any(|(ns, name, _)| (ns, name) == (&key.0, &key.1))
            });
            for (namespace, claim, node) in expired {
                match node {
                    None => forget.push((namespace, claim)),
                    Some(node) if ready.contains(node.as_str()) => {
                        let key = (namespace.clone(), claim.clone());
                        if let std::collections::hash_map::Entry::Vacant(entry) = removing.entry(key) {
                            entry.insert(now);
                            start.push((node, namespace, claim));
                        }
                    }
                    Some(_) => {}
                }
            }
        }
        for (namespace, claim) in forget {
            self.store.delete_volume_claim(&namespace, &claim).await?;
        }
        for (node, namespace, claim) in start {
            let removal = self.api.remove_claim(&node, &namespace, &claim);
            let store = self.store.clone();
            tokio::spawn(async move {
                match removal.await {
                    Ok(_) => {
                        tracing::info!(%namespace, %claim, %node, "Removed a claim's volume, as its retention policy says.");
                        if let Err(error) = store.delete_volume_claim(&namespace, &claim).await {
                            tracing::warn!(%error, "Forgetting a removed claim failed; it is removed again.");
                        }
                    }
                    Err(error) => {
                        tracing::warn!(%namespace, %claim, %node, %error, "Removing a claim's volume failed; it is tried again.");
                    }
                }
            });
        }
        Ok(())
    }

    /// Builds the route table from the services of `desired` and the ready pods on Ready nodes,
    /// without the pods that are leaving, and publishes it. Returns its version.
    #[allow(clippy::too_many_arguments)]
    async fn publish_routes(
        &self,
        desired: &Loaded,
        targets: &Targets,
        nodes: &[crate::store::NodeRecord],
        ready: &BTreeSet<&str>,
        stored: &BTreeMap<String, Arc<Vec<PodAssignment>>>,
        reports: &HashMap<String, PodStatus>,
        leaving: &HashSet<(String, String)>,
    ) -> Result<u64, StoreError> {
        let wants = super::routes::wants(&desired.resources);
        let cached = lock(&self.allocations).as_ref().filter(|(w, _)| *w == wants).map(|(_, a)| a.clone());
        let allocations = match cached {
            Some(allocations) => allocations,
            None => {
                let allocations = self.store.allocate_services(&wants).await?;
                *lock(&self.allocations) = Some((wants.clone(), allocations.clone()));
                allocations
            }
        };
        if wants.is_empty() {
            return Ok(self.api.publish_routes(Vec::new()));
        }
        let labels_of = |pod: &PodAssignment| {
            let key = workload_of(pod);
            targets
                .overrides
                .get(&key)
                .and_then(|commit| find(&commit.resources, &key))
                .or_else(|| find(&desired.resources, &key))
                .and_then(|r| r.object.pod_labels())
        };
        let empty = crate::manifest::types::Labels::new();
        let mut pods = Vec::new();
        for node in nodes.iter().filter(|n| ready.contains(n.name.as_str())) {
            for pod in stored[&node.name].iter() {
                let Some(status) = reports.get(&format!("{}/{}", pod.namespace, pod.pod)) else { continue };
                pods.push(super::routes::RoutedPod {
                    node: &node.name,
                    host_ip: &node.address,
                    pod,
                    labels: labels_of(pod).unwrap_or(&empty),
                    status,
                });
            }
        }
        let services = super::routes::build(&desired.resources, &allocations, &pods, leaving);
        Ok(self.api.publish_routes(services))
    }
}

fn find<'r>(resources: &'r [Arc<Resource>], key: &ObjectKey) -> Option<&'r Resource> {
    resources.binary_search_by(|r| r.key.cmp(key)).ok().map(|i| &*resources[i])
}

/// The status of a workload left as it runs: nothing is created or deleted for it.
fn frozen(
    resource: &Resource,
    current: &[(&str, &PodAssignment)],
    reports: &HashMap<String, PodStatus>,
    revision: &str,
    reason: &str,
) -> WorkloadStatus {
    let ready =
        current.iter().filter(|(_, p)| reports.get(&format!("{}/{}", p.namespace, p.pod)).is_some_and(|r| r.ready));
    WorkloadStatus {
        key: resource.key.clone(),
        replicas: resource.object.replicas(),
        updated: 0,
        available: ready.count(),
        total: current.len(),
        complete: false,
        unschedulable: Vec::new(),
        revision: revision.to_owned(),
        failure: Some(reason.to_owned()),
        stale_config: Vec::new(),
        terminating: 0,
        job: None,
        waiting: None,
    }
}

/// One workload's share of a pass: its pods, what the nodes report, and where its deletes go.
struct Step<'a> {
    current: Vec<(&'a str, &'a PodAssignment)>,
    ready_since: &'a HashMap<String, i64>,
    failed_since: &'a HashMap<String, i64>,
    reports: &'a HashMap<String, PodStatus>,
    deletes: &'a mut HashSet<(String, String)>,
    /// Pods of every workload that still stop, by `(namespace, pod)`.
    stopping: &'a HashSet<(String, String)>,
    /// A Job's latest run, as the loop remembers it.
    job: Option<&'a job::JobRecord>,
}

/// Decides one workload's next step: deletes are added to `step.deletes`, creates to `pending`
/// for the scheduler.
fn plan_workload(
    target: &Target<'_>,
    nodes: &[NodeInfo],
    step_in: &mut Step<'_>,
    pending: &mut Vec<(PodRequest, PodAssignment, ObjectKey)>,
    now: i64,
) -> WorkloadStatus {
    let Target { resource, commit, sources, replicas } = *target;
    let key = resource.key.clone();
    let hash = rollout_hash(resource, sources);
    let ready_since = step_in.ready_since;
    let reports = step_in.reports;
    let current = &step_in.current;
    let view = |pod: &PodAssignment| PodView {
        name: pod.pod.clone(),
        template_hash: pod.spec_hash.clone(),
        ordinal: ordinal_of(&pod.pod),
        ready_since: ready_since.get(&format!("{}/{}", pod.namespace, pod.pod)).copied(),
    };
    let mut status = WorkloadStatus {
        key: key.clone(),
        replicas,
        updated: 0,
        available: 0,
        total: current.len(),
        complete: false,
        unschedulable: Vec::new(),
        revision: commit.commit.sha.clone(),
        failure: crash_loop(current.iter().map(|(_, p)| *p).filter(|p| p.spec_hash == hash), reports),
        stale_config: Vec::new(),
        terminating: 0,
        job: None,
        waiting: None,
    };
    if !resource.restarts_on_config_change() {
        let config = super::pods::config_hash(resource, sources).unwrap_or_default();
        status.stale_config = current
            .iter()
            .filter(|(_, p)| !p.config_hash.is_empty() && p.config_hash != config)
            .map(|(_, p)| p.pod.clone())
            .collect();
    }
    let mut delete: Vec<String> = Vec::new();
    let mut create: Vec<(Replica<'_>, Option<String>)> = Vec::new();
    // How many pods the workload runs when it is complete.
    let mut wanted = usize::try_from(replicas.unwrap_or(1)).unwrap_or(0);

    match &resource.object {
        Object::DaemonSet(daemon_set) => {
            let selector = &daemon_set.spec.template.spec.node_selector;
            let eligible: Vec<&NodeInfo> =
                nodes.iter().filter(|n| n.ready && selector.iter().all(|(k, v)| n.labels.get(k) == Some(v))).collect();
            let strategy = daemon_set.spec.update_strategy.as_ref();
            let on_delete = strategy.and_then(|s| s.strategy_type) == Some(DaemonSetStrategyType::OnDelete);
            let max_unavailable = strategy
                .and_then(|s| s.rolling_update.as_ref())
                .and_then(|r| r.max_unavailable.clone())
                .unwrap_or(IntOrString::Int(1))
                .scaled(i32::try_from(eligible.len()).unwrap_or(i32::MAX), false)
                .unwrap_or(1)
                .max(1) as usize;
            let mut replacing = current
                .iter()
                .filter(|(_, p)| {
                    p.spec_hash == hash && !ready_since.contains_key(&format!("{}/{}", p.namespace, p.pod))
                })
                .count();
            for (node, pod) in current {
                if !eligible.iter().any(|n| &n.name == node) {
                    delete.push(pod.pod.clone());
                }
            }
            for node in &eligible {
                let here: Vec<&PodAssignment> =
                    current.iter().filter(|(n, _)| *n == node.name).map(|(_, p)| *p).collect();
                let has_new = here.iter().any(|p| p.spec_hash == hash);
                let old: Vec<&&PodAssignment> = here.iter().filter(|p| p.spec_hash != hash).collect();
                if !has_new && old.is_empty() {
                    create.push((Replica::OnNode(&node.name), Some(node.name.clone())));
                } else if !has_new && !on_delete && replacing < max_unavailable {
                    replacing += 1;
                    delete.extend(old.iter().map(|p| p.pod.clone()));
                    create.push((Replica::OnNode(&node.name), Some(node.name.clone())));
                }
            }
            status.updated = current.iter().filter(|(_, p)| p.spec_hash == hash).count();
            status.available =
                current.iter().filter(|(_, p)| ready_since.contains_key(&format!("{}/{}", p.namespace, p.pod))).count();
            wanted = eligible.len();
            status.complete = create.is_empty()
                && delete.is_empty()
                && status.updated == eligible.len()
                && status.available == eligible.len();
        }
        Object::Job(job) => {
            let spec = &job.spec;
            // A hook that runs at every sync has a run per commit: the pods of an earlier
            // commit's run are older, as a changed spec's are.
            let every_sync = resource.runs_every_sync();
            let this_run = |p: &PodAssignment| p.spec_hash == hash && (!every_sync || p.revision == commit.commit.sha);
            let (this, older): (Vec<_>, Vec<_>) = current.iter().partition(|(_, p)| this_run(p));
            let older: Vec<String> = older.iter().map(|(_, p)| p.pod.clone()).collect();
            let pods: Vec<job::JobPod<'_>> = this
                .iter()
                .map(|(_, pod)| {
                    let key = format!("{}/{}", pod.namespace, pod.pod);
                    job::JobPod {
                        pod,
                        report: reports.get(&key),
                        failed_since: step_in.failed_since.get(&key).copied(),
                    }
                })
                .collect();
            let record = step_in.job.filter(|r| r.spec_hash == hash && (!every_sync || r.commit == commit.commit.sha));
            let step = job::step(spec, &pods, &older, record, now);
            delete = step.delete;
            create = step.start.into_iter().map(|start| (Replica::Job(start), None)).collect();
            status.failure = match &step.state {
                job::JobState::Failed(reason) => Some(reason.clone()),
                _ => None,
            };
            status.complete = step.state == job::JobState::Complete;
            status.updated = pods.len();
            status.available = step.succeeded;
            status.job = Some(JobProgress {
                state: step.state,
                active: step.active,
                succeeded: step.succeeded,
                failed: step.failed,
                completions: spec.completions,
                waiting: step.waiting,
            });
        }
        Object::StatefulSet(stateful_set) => {
            let name = key.name.as_str();
            let mut pods = Vec::new();
            for (_, pod) in current {
                match stateful::ordinal_of(name, &pod.pod) {
                    Some(ordinal) => pods.push(stateful::OrdinalPod {
                        name: pod.pod.clone(),
                        ordinal,
                        template_hash: pod.spec_hash.clone(),
                        ready_since: ready_since.get(&format!("{}/{}", pod.namespace, pod.pod)).copied(),
                    }),
                    // Not one of its ordinals (an earlier berth's name): it goes.
                    None => delete.push(pod.pod.clone()),
                }
            }
            let stopping: Vec<usize> = step_in
                .stopping
                .iter()
                .filter(|(namespace, _)| *namespace == key.namespace)
                .filter_map(|(_, pod)| stateful::ordinal_of(name, pod))
                .collect();
            let step = stateful::step(&stateful_set.spec, &hash, &pods, &stopping, now);
            delete.extend(step.delete);
            create = step.create.into_iter().map(|o| (Replica::Ordinal(o), None)).collect();
            status.updated = step.updated;
            status.available = step.available;
            status.complete = step.complete && delete.is_empty();
        }
        Object::Pod(_) => {
            match current.first() {
                None => create.push((Replica::Ordinal(0), None)),
                // A changed Pod is replaced on the node it runs on.
                Some((node, pod)) if pod.spec_hash != hash => {
                    delete.push(pod.pod.clone());
                    create.push((Replica::Ordinal(0), Some((*node).to_owned())));
                }
                Some(_) => {}
            }
            status.updated = current.iter().filter(|(_, p)| p.spec_hash == hash).count();
            status.available =
                current.iter().filter(|(_, p)| ready_since.contains_key(&format!("{}/{}", p.namespace, p.pod))).count();
            wanted = 1;
            status.complete = create.is_empty() && status.available == 1;
        }
        _ => {
            let (strategy, min_ready) = Strategy::of(resource).unwrap_or((Strategy::rolling(None), 0));
            let wishes = Wishes {
                replicas: replicas.unwrap_or(1),
                template_hash: hash.clone(),
                strategy,
                min_ready_seconds: i64::from(min_ready),
            };
            let views: Vec<PodView> = current.iter().map(|(_, p)| view(p)).collect();
            let step = rollout::step(&wishes, &views, now);
            delete = step.delete;
            create = step.create.into_iter().map(|o| (Replica::Ordinal(o), None)).collect();
            status.updated = step.updated;
            status.available = step.available;
            status.complete = step.complete;
        }
    }

    // The counts say what runs after this step: a pod it deletes is on its way out, not
    // available (what still stops is counted as terminating at the end of the pass).
    let deleted = current.iter().filter(|(_, p)| delete.contains(&p.pod)).count();
    for (_, pod) in current.iter().filter(|(_, p)| delete.contains(&p.pod)) {
        status.total -= 1;
        if pod.spec_hash == hash {
            status.updated = status.updated.saturating_sub(1);
        }
        if ready_since.contains_key(&format!("{}/{}", pod.namespace, pod.pod)) {
            status.available = status.available.saturating_sub(1);
        }
    }
    if deleted > 0 && status.job.is_none() {
        status.complete =
            create.is_empty() && status.total == wanted && status.updated == wanted && status.available == wanted;
    }
    for pod in delete {
        step_in.deletes.insert((key.namespace.clone(), pod));
    }
    for (replica, pinned) in create {
        match assignment(resource, &commit.commit.sha, replica, sources) {
            Ok(pod) => {
                let request = request_of(&pod, pinned);
                pending.push((request, pod, key.clone()));
            }
            Err(reason) => status.unschedulable.push(reason),
        }
    }
    status
}

fn nodes_known(nodes: &[NodeInfo], name: &str) -> bool {
    nodes.iter().any(|n| n.name == name)
}

/// What declares a claim in a commit.
pub struct ClaimDeclaration<'r> {
    pub spec: &'r PersistentVolumeClaimSpec,
    /// `PersistentVolumeClaim`, or `StatefulSet/<name>`.
    pub owner: String,
    /// For a StatefulSet's claim: its pod, whether its ordinal is past the replicas, and the
    /// StatefulSet's retention policy.
    pub pod: Option<String>,
    pub scaled_away: bool,
    pub delete_when_deleted: bool,
    pub delete_when_scaled: bool,
}

/// What declares the claim `namespace/name` in a commit: a PersistentVolumeClaim, or a
/// StatefulSet's claim template (for any of its ordinals).
pub fn claim_declaration<'r>(
    resources: &'r [Arc<Resource>],
    namespace: &str,
    name: &str,
) -> Option<ClaimDeclaration<'r>> {
    use crate::manifest::types::ClaimRetention;
    resources.iter().filter(|r| r.key.namespace == namespace).find_map(|r| match &r.object {
        Object::PersistentVolumeClaim(claim) if r.key.name == name => Some(ClaimDeclaration {
            spec: &claim.spec,
            owner: Kind::PersistentVolumeClaim.name().to_owned(),
            pod: None,
            scaled_away: false,
            delete_when_deleted: false,
            delete_when_scaled: false,
        }),
        Object::StatefulSet(stateful_set) => stateful_set.spec.volume_claim_templates.iter().find_map(|t| {
            let pod = name.strip_prefix(t.metadata.name.as_str())?.strip_prefix('-')?;
            let ordinal = stateful::ordinal_of(&r.key.name, pod)?;
            let policy = stateful_set.spec.persistent_volume_claim_retention_policy.as_ref();
            let replicas = usize::try_from(stateful_set.spec.replicas.unwrap_or(1).max(0)).unwrap_or(0);
            Some(ClaimDeclaration {
                spec: &t.spec,
                owner: format!("StatefulSet/{}", r.key.name),
                pod: Some(pod.to_owned()),
                scaled_away: ordinal >= replicas,
                delete_when_deleted: policy.and_then(|p| p.when_deleted) == Some(ClaimRetention::Delete),
                delete_when_scaled: policy.and_then(|p| p.when_scaled) == Some(ClaimRetention::Delete),
            })
        }),
        _ => None,
    })
}

/// A claim's record as its declaration says, on no node yet.
fn new_claim(resources: &[Arc<Resource>], namespace: &str, name: &str, now: i64) -> ClaimRecord {
    let declaration = claim_declaration(resources, namespace, name);
    let spec = declaration.as_ref().map(|d| d.spec);
    ClaimRecord {
        namespace: namespace.to_owned(),
        name: name.to_owned(),
        node: None,
        storage: spec
            .and_then(|s| s.resources.as_ref())
            .and_then(|r| r.requests.get("storage"))
            .map(|q| q.as_str().to_owned())
            .unwrap_or_default(),
        access_modes: spec
            .map(|s| s.access_modes.iter().map(|m| m.short()).collect::<Vec<_>>().join(","))
            .unwrap_or_default(),
        storage_class: spec.and_then(|s| s.storage_class_name.clone()).unwrap_or_else(|| "local".to_owned()),
        delete_when_deleted: declaration.as_ref().is_some_and(|d| d.delete_when_deleted),
        delete_when_scaled: declaration.as_ref().is_some_and(|d| d.delete_when_scaled),
        owner: declaration.map(|d| d.owner).unwrap_or_default(),
        created_at: now,
        orphaned_at: None,
    }
}

/// The Job of a CronJob's run `name`: its job template, named for the run.
fn spawned_job(resource: &Resource, cron_job: &CronJob, name: &str) -> Resource {
    let template = &cron_job.spec.job_template;
    let mut metadata = ObjectMeta {
        name: name.to_owned(),
        namespace: Some(resource.key.namespace.clone()),
        labels: template.metadata.labels.clone(),
        annotations: template.metadata.annotations.clone(),
    };
    metadata.annotations.insert("berth.dev/created-by".to_owned(), format!("CronJob/{}", resource.key.name));
    let job = Job { api_version: "batch/v1".to_owned(), kind: "Job".to_owned(), metadata, spec: template.spec.clone() };
    Resource::new(&resource.file, resource.pos, Object::Job(job), resource.references.clone())
}

/// The spec one workload is reconciled to, with the commit it comes from.
#[derive(Clone, Copy)]
struct Target<'a> {
    resource: &'a Resource,
    commit: &'a Loaded,
    sources: &'a Sources<'a>,
    /// Wished replicas: always the branch head's, also for a workload held at an earlier
    /// commit's template.
    replicas: Option<i32>,
}

/// Names the first of `pods` with a container that keeps restarting without becoming ready.
fn crash_loop<'a>(
    pods: impl Iterator<Item = &'a PodAssignment>,
    reports: &HashMap<String, PodStatus>,
) -> Option<String> {
    for pod in pods {
        let Some(report) = reports.get(&format!("{}/{}", pod.namespace, pod.pod)) else { continue };
        for container in &report.containers {
            if container.restart_count >= CRASH_LOOP_RESTARTS && !container.ready {
                // Name the crash itself; a readiness probe that failed before it is a symptom.
                let ended = match (container.exit_code, &container.last_termination) {
                    (Some(code), _) => match &container.last_output {
                        Some(output) => format!("exited with code {code}: {output}"),
                        None => format!("exited with code {code}"),
                    },
                    (None, Some(previous)) => previous.strip_prefix("container ").unwrap_or(previous).to_owned(),
                    (None, None) => "keeps stopping".to_owned(),
                };
                return Some(format!(
                    "container {} of pod {} {ended} ({} restarts)",
                    container.name, pod.pod, container.restart_count
                ));
            }
        }
    }
    None
}

/// What a pod asks of the scheduler.
pub fn request_of(pod: &PodAssignment, pinned: Option<String>) -> PodRequest {
    PodRequest {
        pod: format!("{}/{}", pod.namespace, pod.pod),
        workload: format!("{}/{}/{}", pod.workload_kind.name(), pod.namespace, pod.workload_name),
        requests: requests(&pod.spec),
        node_selector: pod.spec.node_selector.clone(),
        pinned,
    }
}
