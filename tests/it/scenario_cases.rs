//! The scenario harness: the real control loop over a real Git repository and a real SQLite
//! file, with hollow nodes (in-memory kubelets that speak to the store as the agent API does)
//! and a clock the harness advances. It plays a list of events and, after every step, checks
//! the invariants below against a small model of what should be. A failing list is shrunk to
//! the fewest events that still fail.
//!
//! Invariants (the README's definitions of sync and health are these):
//! 1. The applied commit is the newest valid branch-head commit that needs no approval, or the
//!    approved one while a newer one waits; never another.
//! 2. `sync` is Synced if and only if: the head commit loaded without errors and is applied,
//!    nothing waits for approval, nothing is pinned, the applied objects are the head's, and
//!    every workload's pods on Ready nodes are exactly its replicas, all of the head's revision
//!    and configuration, all reported ready, none stopping.
//! 3. No two assigned pods share a name; a pod on a NotReady node is never counted ready nor
//!    routed to.
//! 4. A rollout never adds a pod beyond replicas + maxSurge, and never takes available pods
//!    below replicas - maxUnavailable.
//! 5. Only the head commit can wait for approval; a broken or waiting commit deletes nothing;
//!    an approval applies the plan it approved, and a stale one is refused and changes nothing.

use berth::apply::pods::{Sources, config_hash, rollout_hash};
use berth::manifest::Kind;
use berth::nodes::protocol::{
    ContainerStateName, ContainerStatus, Heartbeat, JoinRequest, PodAssignment, PodPhase, PodStatus, Resources,
};
use berth::server::agent_api::AgentApi;
use berth::server::control::{self, ControlConfig, ControlLoop, ControlPlane, Sync};
use berth::store::{Store, SyncOutcome};
use berth::sync::Loader;
use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Workloads the scenarios play with: (max surge, max unavailable) of each.
const APPS: [(u32, u32); 3] = [(1, 0), (1, 1), (0, 1)];
const NODES: usize = 3;
const NODE_GRACE: i64 = 10;
const START: i64 = 1_900_000_000;

/// One thing that happens to the system.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A commit that changes one field of the head's spec.
    Scale(usize, u8),
    Image(usize, u8),
    /// A commit whose image of the app crashes at start.
    Crashing(usize),
    /// A commit that changes the ConfigMap every app reads.
    Config(u8),
    /// A commit with an error in it.
    Break,
    Delete(usize),
    Add(usize),
    /// A commit that switches `sync.policy` (true: manual).
    Policy(bool),
    /// A commit that deletes every app: more than the prune threshold.
    DeleteAll,
    /// The branch reset to an earlier commit of its history.
    Rewind(usize),
    /// A revert commit of the head.
    Revert,
    /// `berth sync --approve` of the head with the state index shown now.
    Approve,
    /// An approval with a state index from before, or of a commit that is not the head.
    ApproveStale,
    /// `berth rollback deployment/appN`.
    Rollback(usize),
    NodeDown(usize),
    NodeUp(usize),
    /// A container of the n-th running pod exits and restarts.
    Crash(usize),
    ServerRestart,
    AgentRestart(usize),
    /// Time passes: seconds.
    Wait(u8),
}

pub fn event() -> impl Strategy<Value = Event> {
    let app = 0..APPS.len();
    let node = 0..NODES;
    prop_oneof![
        3 => (app.clone(), 0u8..4).prop_map(|(a, r)| Event::Scale(a, r)),
        3 => (app.clone(), 1u8..4).prop_map(|(a, v)| Event::Image(a, v)),
        1 => app.clone().prop_map(Event::Crashing),
        2 => (0u8..3).prop_map(Event::Config),
        1 => Just(Event::Break),
        1 => app.clone().prop_map(Event::Delete),
        1 => app.clone().prop_map(Event::Add),
        1 => any::<bool>().prop_map(Event::Policy),
        1 => Just(Event::DeleteAll),
        1 => (0usize..4).prop_map(Event::Rewind),
        1 => Just(Event::Revert),
        2 => Just(Event::Approve),
        1 => Just(Event::ApproveStale),
        1 => app.prop_map(Event::Rollback),
        1 => node.clone().prop_map(Event::NodeDown),
        2 => node.clone().prop_map(Event::NodeUp),
        1 => (0usize..8).prop_map(Event::Crash),
        1 => Just(Event::ServerRestart),
        1 => node.prop_map(Event::AgentRestart),
        8 => (1u8..16).prop_map(Event::Wait),
    ]
}

/// What a commit declares, in the model's terms.
#[derive(Debug, Clone, PartialEq)]
struct Spec {
    manual: bool,
    broken: bool,
    greeting: u8,
    apps: [Option<App>; 3],
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct App {
    replicas: u8,
    version: u8,
    crash: bool,
}

impl Spec {
    fn first() -> Spec {
        let app = App { replicas: 2, version: 1, crash: false };
        Spec { manual: false, broken: false, greeting: 0, apps: [Some(app), Some(app), Some(app)] }
    }

    fn files(&self) -> BTreeMap<String, String> {
        let mut files = BTreeMap::new();
        let policy = if self.manual { "manual" } else { "auto" };
        files.insert("berth.yaml".to_owned(), format!("sync:\n  policy: {policy}\n"));
        files.insert(
            "settings.yaml".to_owned(),
            format!(
                "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\ndata:\n  greeting: \"hello {}\"\n",
                self.greeting
            ),
        );
        if self.broken {
            files.insert(
                "broken.yaml".to_owned(),
                "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: broken\ndatta:\n  a: b\n".to_owned(),
            );
        }
        for (i, app) in self.apps.iter().enumerate() {
            let Some(app) = app else { continue };
            let (surge, unavailable) = APPS[i];
            let image = if app.crash { format!("app{i}:crash") } else { format!("app{i}:v{}", app.version) };
            // app2 keeps its pods on a config change.
            let annotations =
                if i == 2 { "  annotations:\n    berth.dev/restart-on-config-change: \"false\"\n" } else { "" };
            let replicas = if self.broken && i == 0 { "replicaz" } else { "replicas" };
            files.insert(
                format!("app{i}.yaml"),
                format!(
                    "apiVersion: apps/v1
kind: Deployment
metadata:
  name: app{i}
{annotations}spec:
  {replicas}: {}
  progressDeadlineSeconds: 120
  strategy:
    type: RollingUpdate
    rollingUpdate:
      maxSurge: {surge}
      maxUnavailable: {unavailable}
  selector:
    matchLabels:
      app: app{i}
  template:
    metadata:
      labels:
        app: app{i}
    spec:
      terminationGracePeriodSeconds: 2
      containers:
        - name: main
          image: {image}
          ports:
            - containerPort: 80
          env:
            - name: GREETING
              valueFrom:
                configMapKeyRef:
                  name: settings
                  key: greeting
---
apiVersion: v1
kind: Service
metadata:
  name: app{i}
spec:
  selector:
    app: app{i}
  ports:
    - port: 80
",
                    app.replicas
                ),
            );
        }
        files
    }

    /// Object keys as `Kind/name`.
    fn objects(&self) -> BTreeSet<String> {
        let mut keys = BTreeSet::from(["ConfigMap/settings".to_owned()]);
        for (i, app) in self.apps.iter().enumerate() {
            if app.is_some() {
                keys.insert(format!("Deployment/app{i}"));
                keys.insert(format!("Service/app{i}"));
            }
        }
        keys
    }
}

/// A commit of the branch, with the spec it declares.
#[derive(Debug, Clone)]
struct Commit {
    sha: String,
    oid: git2::Oid,
    spec: Spec,
}

/// The branch, written with git2 straight into the object database.
struct Repo {
    git: git2::Repository,
    path: PathBuf,
    /// The branch's first-parent history, oldest first.
    chain: Vec<Commit>,
    made: usize,
}

impl Repo {
    fn new(path: &Path) -> Repo {
        let git = git2::Repository::init(path).unwrap();
        git.set_head("refs/heads/main").unwrap();
        Repo { git, path: path.to_owned(), chain: Vec::new(), made: 0 }
    }

    fn commit(&mut self, spec: Spec, message: &str) -> Commit {
        let mut tree = self.git.treebuilder(None).unwrap();
        for (name, text) in spec.files() {
            let blob = self.git.blob(text.as_bytes()).unwrap();
            tree.insert(&name, blob, 0o100644).unwrap();
        }
        let tree = self.git.find_tree(tree.write().unwrap()).unwrap();
        self.made += 1;
        let time = git2::Time::new(START + self.made as i64, 0);
        let signature = git2::Signature::new("scenario", "scenario@example.test", &time).unwrap();
        let parent = self.chain.last().map(|c| self.git.find_commit(c.oid).unwrap());
        let parents: Vec<&git2::Commit<'_>> = parent.iter().collect();
        let message = format!("{message} ({})", self.made);
        let oid = self.git.commit(None, &signature, &signature, &message, &tree, &parents).unwrap();
        self.git.reference("refs/heads/main", oid, true, "scenario").unwrap();
        let commit = Commit { sha: oid.to_string(), oid, spec };
        self.chain.push(commit.clone());
        commit
    }

    fn rewind(&mut self, back: usize) {
        let keep = self.chain.len().saturating_sub(back).max(1);
        self.chain.truncate(keep);
        let head = self.chain.last().unwrap().oid;
        self.git.reference("refs/heads/main", head, true, "rewind").unwrap();
    }

    fn head(&self) -> &Commit {
        self.chain.last().unwrap()
    }
}

/// A pod a hollow node runs.
#[derive(Debug, Clone)]
struct Running {
    assignment: PodAssignment,
    started: i64,
    restarts: u32,
    /// Set once it is no longer assigned: when its grace period ends.
    stopping_until: Option<i64>,
}

/// An in-memory kubelet: it heartbeats, follows its assignment, runs pods that turn ready a
/// second after they start (or crash over and over, for a `:crash` image), stops pods that are
/// no longer assigned within their grace period, and reports.
struct HollowNode {
    name: String,
    up: bool,
    pods: BTreeMap<(String, String), Running>,
    last_report: Option<(u64, Vec<PodStatus>)>,
}

impl HollowNode {
    fn new(index: usize) -> HollowNode {
        HollowNode { name: format!("node{index}"), up: true, pods: BTreeMap::new(), last_report: None }
    }

    fn capacity() -> Resources {
        Resources { cpu_millis: 64_000, memory_bytes: 256 << 30 }
    }

    async fn join(&self, store: &Store, now: i64) {
        let request = JoinRequest {
            node: self.name.clone(),
            address: "127.0.0.1".into(),
            labels: BTreeMap::new(),
            capacity: Self::capacity(),
            public_key: None,
        };
        assert!(store.add_node(&request, "digest", now).await.unwrap());
    }

    async fn act(&mut self, store: &Store, api: &AgentApi, now: i64) {
        if !self.up {
            return;
        }
        let beat = Heartbeat {
            address: "127.0.0.1".into(),
            labels: BTreeMap::new(),
            capacity: Self::capacity(),
            allocatable: Self::capacity(),
            usage: None,
            tunnel_port: None,
        };
        store.record_heartbeat(&self.name, &beat, now).await.unwrap();
        let (generation, assigned) = store.assignment(&self.name).await.unwrap();
        let wanted: HashMap<(String, String), &PodAssignment> =
            assigned.iter().map(|p| ((p.namespace.clone(), p.pod.clone()), p)).collect();
        // Pods that are no longer assigned stop within their grace; one replaced under the
        // same name stops at once, before its successor starts.
        self.pods.retain(|key, pod| match wanted.get(key) {
            Some(w) if w.uid == pod.assignment.uid => true,
            Some(_) => false,
            None => {
                let grace = pod.assignment.spec.termination_grace_period_seconds.unwrap_or(30).min(2);
                let until = *pod.stopping_until.get_or_insert(now + grace);
                now < until
            }
        });
        for (key, assignment) in &wanted {
            self.pods.entry(key.clone()).or_insert_with(|| Running {
                assignment: (*assignment).clone(),
                started: now,
                restarts: 0,
                stopping_until: None,
            });
        }
        for pod in self.pods.values_mut().filter(|p| p.stopping_until.is_none() && crashes(&p.assignment)) {
            pod.restarts += 1;
        }
        let statuses: Vec<PodStatus> = self.pods.values().map(|p| status_of(p, now)).collect();
        if self.last_report.as_ref().is_none_or(|(g, s)| *g != generation || *s != statuses) {
            store.record_report(&self.name, generation, &statuses, now).await.unwrap();
            self.last_report = Some((generation, statuses));
        }
        api.ack_routes(&self.name, api.routes().version);
    }
}

fn crashes(assignment: &PodAssignment) -> bool {
    assignment.spec.containers.iter().any(|c| c.image.ends_with(":crash"))
}

fn status_of(pod: &Running, now: i64) -> PodStatus {
    let crashing = crashes(&pod.assignment);
    let stopping = pod.stopping_until.is_some();
    let ready = !crashing && !stopping && now > pod.started;
    let containers = pod
        .assignment
        .spec
        .containers
        .iter()
        .map(|c| ContainerStatus {
            name: c.name.clone(),
            state: if crashing { ContainerStateName::Waiting } else { ContainerStateName::Running },
            ready,
            restart_count: pod.restarts,
            exit_code: crashing.then_some(1),
            last_error: None,
            reason: crashing.then(|| "CrashLoopBackOff".to_owned()),
            last_termination: None,
            last_output: None,
            probe_failures: 0,
            container_id: Some(format!("{}-{}", pod.assignment.uid, pod.restarts)),
            pulled: None,
        })
        .collect();
    PodStatus {
        pod: pod.assignment.pod.clone(),
        namespace: pod.assignment.namespace.clone(),
        spec_hash: pod.assignment.spec_hash.clone(),
        uid: pod.assignment.uid.clone(),
        phase: PodPhase::Running,
        ready,
        containers,
        host_ports: Vec::new(),
        workload_kind: Some(pod.assignment.workload_kind),
        workload_name: pod.assignment.workload_name.clone(),
        terminating: stopping,
    }
}

/// What happened in one played list, for the long runs' report.
#[derive(Debug, Default, Clone, Copy)]
pub struct Stats {
    pub steps: usize,
    pub synced_steps: usize,
    pub commits: usize,
    pub approvals: usize,
}

/// The system under test and the model beside it.
struct World {
    _dir: tempfile::TempDir,
    db: PathBuf,
    repo: Repo,
    store: Arc<Store>,
    control: ControlLoop,
    nodes: Vec<HollowNode>,
    now: i64,
    /// The model's applied commit.
    expected: Option<String>,
    /// The model's view: the head waits for an approval.
    waiting: bool,
    stats: Stats,
    /// Per workload: (replicas, available) after the last step.
    before: HashMap<String, (usize, usize, usize)>,
    /// The uids of the pods assigned so far: a pod not among them was made in this step.
    seen: BTreeSet<String>,
    /// The last approval taken: the commit and the digest of the plan approved.
    approved: Option<(String, String)>,
}

fn config() -> ControlConfig {
    let mut config = ControlConfig::default();
    config.controller.node_grace_seconds = NODE_GRACE;
    config
}

async fn open_loop(repo: &Path, db: &Path) -> (Arc<Store>, ControlLoop) {
    let store = Arc::new(Store::open(db).await.unwrap());
    let api = AgentApi::new(store.clone(), "scenario");
    let plane = ControlPlane::new(store.clone(), Loader::open(repo).unwrap(), api, config());
    (store, ControlLoop::new(plane).await)
}

fn scratch() -> tempfile::TempDir {
    // A real SQLite file, on memory-backed storage where there is some: thousands of runs.
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        if let Ok(dir) = tempfile::Builder::new().prefix("berth-scenario").tempdir_in(shm) {
            return dir;
        }
    }
    tempfile::tempdir().unwrap()
}

impl World {
    async fn new() -> World {
        let dir = scratch();
        let mut repo = Repo::new(&dir.path().join("repo"));
        repo.commit(Spec::first(), "first");
        let db = dir.path().join("berth.db");
        let (store, control) = open_loop(&repo.path, &db).await;
        let nodes: Vec<HollowNode> = (0..NODES).map(HollowNode::new).collect();
        for node in &nodes {
            node.join(&store, START).await;
        }
        let expected = Some(repo.head().sha.clone());
        World {
            _dir: dir,
            db,
            repo,
            store,
            control,
            nodes,
            now: START,
            expected,
            waiting: false,
            stats: Stats::default(),
            before: HashMap::new(),
            seen: BTreeSet::new(),
            approved: None,
        }
    }

    fn plane(&self) -> &Arc<ControlPlane> {
        self.control.plane()
    }

    /// A new commit from the head's spec; the model decides whether it is applied.
    async fn commit(&mut self, edit: impl FnOnce(&mut Spec), message: &str) -> Result<(), String> {
        let mut spec = self.repo.head().spec.clone();
        spec.broken = false;
        edit(&mut spec);
        self.repo.commit(spec, message);
        self.head_moved().await
    }

    /// The model's rule: a valid head that needs no approval is applied at once; otherwise the
    /// applied commit stays.
    async fn head_moved(&mut self) -> Result<(), String> {
        self.stats.commits += 1;
        let head = self.repo.head().clone();
        self.waiting = false;
        if head.spec.broken {
            return Ok(());
        }
        if self.expected.as_deref() == Some(head.sha.as_str()) {
            return Ok(());
        }
        if self.needs_approval(&head.spec).await? {
            self.waiting = true;
        } else {
            self.expected = Some(head.sha.clone());
        }
        Ok(())
    }

    /// Manual policy, or more than half the applied objects deleted.
    async fn needs_approval(&self, spec: &Spec) -> Result<bool, String> {
        if spec.manual {
            return Ok(true);
        }
        let applied = self.store.applied().await.map_err(|e| e.to_string())?;
        let applied: BTreeSet<String> =
            applied.resources.iter().map(|r| format!("{}/{}", r.key.kind.name(), r.key.name)).collect();
        let deletes = applied.difference(&spec.objects()).count();
        Ok(!applied.is_empty() && deletes * 100 > 50 * applied.len())
    }

    async fn apply(&mut self, event: &Event) -> Result<(), String> {
        match event {
            Event::Scale(i, replicas) => {
                let (i, replicas) = (*i, *replicas);
                self.commit(|s| s.apps[i] = s.apps[i].map(|a| App { replicas, ..a }), "scale").await?
            }
            Event::Image(i, version) => {
                let (i, version) = (*i, *version);
                self.commit(|s| s.apps[i] = s.apps[i].map(|a| App { version, crash: false, ..a }), "image").await?
            }
            Event::Crashing(i) => {
                let i = *i;
                self.commit(|s| s.apps[i] = s.apps[i].map(|a| App { crash: true, ..a }), "crashing image").await?
            }
            Event::Config(value) => {
                let value = *value;
                self.commit(|s| s.greeting = value, "config").await?
            }
            Event::Break => self.commit(|s| s.broken = true, "broken").await?,
            Event::Delete(i) => {
                let i = *i;
                self.commit(|s| s.apps[i] = None, "delete").await?
            }
            Event::Add(i) => {
                let i = *i;
                self.commit(
                    |s| {
                        s.apps[i].get_or_insert(App { replicas: 1, version: 1, crash: false });
                    },
                    "add",
                )
                .await?
            }
            Event::Policy(manual) => {
                let manual = *manual;
                self.commit(|s| s.manual = manual, "policy").await?
            }
            Event::DeleteAll => self.commit(|s| s.apps = [None, None, None], "delete all").await?,
            Event::Rewind(back) => {
                if self.repo.chain.len() > 1 {
                    self.repo.rewind(back + 1);
                    self.head_moved().await?;
                }
            }
            Event::Revert => {
                if self.repo.chain.len() > 1 {
                    let parent = self.repo.chain[self.repo.chain.len() - 2].spec.clone();
                    self.repo.commit(parent, "revert");
                    self.head_moved().await?;
                }
            }
            Event::Approve => self.approve().await?,
            Event::ApproveStale => self.approve_stale().await?,
            Event::Rollback(i) => {
                let key = berth::manifest::ObjectKey {
                    kind: Kind::Deployment,
                    namespace: "default".into(),
                    name: format!("app{i}"),
                };
                // Refused when there is nothing to go back to; either way it must not fail.
                let _ = control::rollback(self.plane(), &key, None, false).await;
            }
            Event::NodeDown(n) => self.nodes[*n].up = false,
            Event::NodeUp(n) => self.nodes[*n].up = true,
            Event::Crash(n) => {
                let mut running: Vec<&mut Running> = self
                    .nodes
                    .iter_mut()
                    .filter(|node| node.up)
                    .flat_map(|node| node.pods.values_mut())
                    .filter(|p| p.stopping_until.is_none())
                    .collect();
                if !running.is_empty() {
                    let count = running.len();
                    let pod = &mut running[n % count];
                    pod.restarts += 1;
                    pod.started = self.now;
                }
            }
            Event::ServerRestart => {
                let (store, control) = open_loop(&self.repo.path, &self.db).await;
                self.store = store;
                self.control = control;
            }
            Event::AgentRestart(n) => self.nodes[*n].last_report = None,
            Event::Wait(seconds) => self.now += i64::from(*seconds) - 1,
        }
        Ok(())
    }

    async fn approve(&mut self) -> Result<(), String> {
        self.stats.approvals += 1;
        let head = self.repo.head().sha.clone();
        // As `berth sync --approve` does: the plan recorded for the head, named by its digest.
        // When the applied state moved since it was made, the approval is refused with the plan
        // made again, which is then approved.
        let recorded = self.store.sync(&head).await.map_err(|e| e.to_string())?;
        let digest = recorded.as_ref().and_then(|r| control::plan_digest_of(&r.plan_json));
        let mut result = control::approve(self.plane(), &head, None, digest.as_deref()).await;
        if let Err(control::ApproveError::PlanChanged { current, .. }) = &result {
            let current = current.clone();
            result = control::approve(self.plane(), &head, None, Some(&current)).await;
        }
        match (self.waiting, result) {
            (true, Ok(record)) => {
                if record.commit.sha != head {
                    return Err(format!("approved {} instead of the head {head}", record.commit.sha));
                }
                let digest = control::plan_digest_of(&record.plan_json).unwrap_or_default();
                self.approved = Some((head.clone(), digest));
                self.waiting = false;
                self.expected = Some(head);
                Ok(())
            }
            (true, Err(error)) => Err(format!("the head waits for approval, yet approving it failed: {error}")),
            (false, Ok(_)) => Err(format!("approving {head} was taken, though the model says it does not wait")),
            (false, Err(_)) => Ok(()),
        }
    }

    async fn approve_stale(&mut self) -> Result<(), String> {
        let head = self.repo.head().sha.clone();
        let index = self.store.state_index().await.map_err(|e| e.to_string())?;
        if let Ok(record) = control::approve(self.plane(), &head, Some(index - 1), None).await {
            return Err(format!("an approval with an old state index was taken for {}", record.commit.sha));
        }
        if let Ok(record) = control::approve(self.plane(), &head, Some(index), Some("0000")).await {
            return Err(format!("an approval of a plan that was never made was taken for {}", record.commit.sha));
        }
        let older: Vec<String> = self.repo.chain.iter().rev().skip(1).map(|c| c.sha.clone()).collect();
        for sha in older {
            if let Ok(record) = control::approve(self.plane(), &sha, None, None).await {
                return Err(format!("an approval of {} was taken while the head is {head}", record.commit.sha));
            }
        }
        Ok(())
    }

    /// Nodes act, then the loop makes one pass; then the invariants are checked.
    async fn tick(&mut self) -> Result<(), String> {
        self.now += 1;
        let api = self.plane().api.clone();
        for node in &mut self.nodes {
            node.act(&self.store, &api, self.now).await;
        }
        let applied_before = self.plane().status.borrow().applied.clone();
        self.control.step(self.now).await.map_err(|e| format!("the control pass failed: {e}"))?;
        self.stats.steps += 1;
        self.check(applied_before).await
    }

    async fn check(&mut self, applied_before: Option<String>) -> Result<(), String> {
        let status = self.plane().status.borrow().clone();
        let head = self.repo.head().clone();

        // 1. The applied commit.
        if status.applied != self.expected {
            return Err(format!(
                "applied is {:?}, the model expects {:?} (head {}, broken {}, waiting {})",
                status.applied, self.expected, head.sha, head.spec.broken, self.waiting
            ));
        }
        if self.waiting && status.waiting.is_none() {
            return Err("the head waits for approval but the status does not say so".into());
        }
        if !self.waiting && status.waiting.is_some() {
            return Err(format!("the status says the head waits: {:?}", status.waiting));
        }
        if head.spec.broken && status.failed.is_none() {
            return Err("the head is broken but the status does not say so".into());
        }
        if head.spec.broken && status.sync != Sync::Unknown {
            return Err(format!("a broken head is {:?}, not Unknown", status.sync));
        }

        // 5. Only the head can wait (every tenth step: it reads every record).
        let records = if self.stats.steps % 10 == 0 {
            self.store.syncs(1000).await.map_err(|e| e.to_string())?
        } else {
            Vec::new()
        };
        for record in records {
            if record.outcome == SyncOutcome::Waiting && record.commit.sha != head.sha {
                return Err(format!("commit {} waits for approval though the head is {}", record.commit.sha, head.sha));
            }
        }

        // 2. Synced if and only if the definition holds.
        let nodes = self.store.nodes().await.map_err(|e| e.to_string())?;
        let ready: BTreeSet<String> =
            nodes.iter().filter(|n| self.now - n.last_heartbeat <= NODE_GRACE).map(|n| n.name.clone()).collect();
        let mut assigned: Vec<(String, PodAssignment)> = Vec::new();
        for node in &nodes {
            let (_, pods) = self.store.assignment(&node.name).await.map_err(|e| e.to_string())?;
            assigned.extend(pods.into_iter().map(|p| (node.name.clone(), p)));
        }
        let reports = self.store.all_reports().await.map_err(|e| e.to_string())?;
        let report_of = |node: &str, pod: &PodAssignment| {
            reports
                .iter()
                .find(|(n, r)| n == node && r.namespace == pod.namespace && r.pod == pod.pod && r.uid == pod.uid)
        };
        let routes = self.plane().api.routes();
        let routed: BTreeSet<(String, String)> =
            routes.services.iter().flat_map(|s| s.endpoints.iter().map(|e| (e.node.clone(), e.pod.clone()))).collect();

        // 3. Names, lost nodes.
        let mut names = BTreeSet::new();
        for (node, pod) in &assigned {
            if !names.insert((pod.namespace.clone(), pod.pod.clone())) {
                return Err(format!("two pods named {} are assigned (one on {node})", pod.pod));
            }
        }
        for (node, pod) in &routed {
            if !ready.contains(node) {
                return Err(format!("pod {pod} on NotReady node {node} is routed to"));
            }
        }
        for w in &status.workloads {
            let ready_pods = assigned
                .iter()
                .filter(|(n, p)| ready.contains(n) && p.workload_name == w.name)
                .filter(|(n, p)| report_of(n, p).is_some_and(|(_, r)| r.ready))
                .count();
            if w.ready > ready_pods {
                return Err(format!("{} counts {} ready, but Ready nodes report {ready_pods}", w.name, w.ready));
            }
        }

        // Why the definition of Synced does not hold, first reason first.
        let mut unmet: Vec<String> = Vec::new();
        if head.spec.broken {
            unmet.push("the head is broken".into());
        }
        if status.applied.as_deref() != Some(head.sha.as_str()) {
            unmet.push("the head is not applied".into());
        }
        if self
            .store
            .sync(&head.sha)
            .await
            .map_err(|e| e.to_string())?
            .is_some_and(|r| r.outcome == SyncOutcome::Waiting)
        {
            unmet.push("the head waits".into());
        }
        if !self.store.pins().await.map_err(|e| e.to_string())?.is_empty() {
            unmet.push("a workload is pinned".into());
        }
        let applied = self.store.applied().await.map_err(|e| e.to_string())?;
        let loaded = self.plane().load(&head.sha).await.map_err(|e| e.to_string())?;
        if unmet.is_empty() {
            let keys = |resources: &[Arc<berth::manifest::Resource>]| {
                resources.iter().map(|r| (r.key.clone(), r.hash.clone())).collect::<Vec<_>>()
            };
            if keys(&applied.resources) != keys(&loaded.resources) {
                unmet.push("the applied objects are not the head's".into());
            }
            let sources = Sources::new(&loaded.resources, &loaded.secrets);
            let workloads: Vec<_> = loaded.resources.iter().filter(|r| r.key.kind.is_workload()).collect();
            if !workloads.is_empty() && ready.is_empty() {
                unmet.push("no node is Ready".into());
            }
            for resource in &workloads {
                let revisions = self.store.revisions(&resource.key).await.map_err(|e| e.to_string())?;
                if revisions.first().is_some_and(|r| r.outcome == berth::store::Outcome::Failed) {
                    unmet.push(format!("{} is held at an earlier revision after a failed rollout", resource.key.name));
                }
                let hash = rollout_hash(resource, &sources);
                let config = config_hash(resource, &sources).unwrap_or_default();
                let replicas = resource.object.replicas().unwrap_or(0).max(0) as usize;
                let pods: Vec<&(String, PodAssignment)> = assigned
                    .iter()
                    .filter(|(n, p)| ready.contains(n) && p.workload_name == resource.key.name)
                    .collect();
                if pods.len() != replicas {
                    unmet.push(format!("{} has {} pods for {replicas} replicas", resource.key.name, pods.len()));
                }
                for (node, pod) in pods {
                    if pod.spec_hash != hash || (!pod.config_hash.is_empty() && pod.config_hash != config) {
                        unmet.push(format!("pod {} runs another revision or configuration", pod.pod));
                    }
                    if !report_of(node, pod).is_some_and(|(_, r)| r.ready) {
                        unmet.push(format!("pod {} is not reported ready", pod.pod));
                    }
                }
            }
            for (node, report) in &reports {
                let current = assigned.iter().any(|(n, p)| n == node && p.pod == report.pod && p.uid == report.uid);
                if ready.contains(node) && !current {
                    unmet.push(format!("pod {} still stops on {node}", report.pod));
                }
            }
            for (node, pod) in &assigned {
                if ready.contains(node) && !workloads.iter().any(|r| r.key.name == pod.workload_name) {
                    unmet.push(format!("pod {} of a workload the head does not declare runs", pod.pod));
                }
            }
        }
        match (status.sync == Sync::Synced, unmet.first()) {
            (true, Some(why)) => return Err(format!("status says Synced, but {why}")),
            (false, None) => {
                return Err(format!(
                    "every condition of Synced holds, but the status says {:?}: {}",
                    status.sync, status.sync_reason
                ));
            }
            _ => {}
        }
        if status.sync == Sync::Synced {
            self.stats.synced_steps += 1;
        }

        // 6. The plan is the program.
        self.check_program(&status, &assigned).await?;

        // 4. Rollout bounds, per workload whose replicas did not change in this step, at the
        // replicas of the commit being applied.
        let Some(applied_sha) = status.applied.clone() else { return Ok(()) };
        let loaded = self.plane().load(&applied_sha).await.map_err(|e| e.to_string())?;
        let mut now_counts = HashMap::new();
        for (i, (surge, unavailable)) in APPS.iter().enumerate() {
            let name = format!("app{i}");
            let Some(resource) = loaded.resources.iter().find(|r| r.key.kind == Kind::Deployment && r.key.name == name)
            else {
                continue;
            };
            let replicas = resource.object.replicas().unwrap_or(0).max(0) as usize;
            let pods: Vec<&(String, PodAssignment)> =
                assigned.iter().filter(|(n, p)| ready.contains(n) && p.workload_name == name).collect();
            let ready_pods = pods.iter().filter(|(n, p)| report_of(n, p).is_some_and(|(_, r)| r.ready)).count();
            // Leaving pods are ready but out of the routes; they count as gone.
            let available = pods.iter().filter(|(n, p)| routed.contains(&(n.clone(), p.pod.clone()))).count();
            let leaving = ready_pods - available.min(ready_pods);
            let counted = pods.len() - leaving;
            now_counts.insert(name.clone(), (replicas, counted, available));
            let Some(&(before_replicas, before_counted, before_available)) = self.before.get(&name) else { continue };
            if before_replicas != replicas || status.applied != applied_before {
                continue;
            }
            // 5. Nothing the applied commit declares is deleted (a broken or waiting head
            // changes nothing): a workload that had pods keeps some while its nodes stay up.
            if replicas > 0 && before_counted > 0 && pods.is_empty() && self.nodes.iter().all(|n| n.up) {
                return Err(format!("{name} lost every pod though the applied commit declares {replicas}"));
            }
            let ceiling = (replicas + *surge as usize).max(before_counted);
            if counted > ceiling {
                return Err(format!("{name} has {counted} pods, more than {replicas} + maxSurge {surge}"));
            }
            let floor = replicas.saturating_sub(*unavailable as usize).min(before_available);
            let lost_pod = self.nodes.iter().any(|n| !n.up) || available < floor && crash_in_step(&self.nodes, &name);
            if available < floor && !lost_pod {
                return Err(format!(
                    "{name} has {available} available pods, fewer than {replicas} - maxUnavailable {unavailable}"
                ));
            }
        }
        self.before = now_counts;
        Ok(())
    }
}

impl World {
    /// What runs is what the plan of the applied commit says: an approved commit is carried
    /// out with the very plan approved, and every pod made after it was adopted runs the pod
    /// template of its workload's step, the step's fallback once that template failed, or the
    /// template a `berth rollback` pinned.
    async fn check_program(
        &mut self,
        status: &control::SyncStatus,
        assigned: &[(String, PodAssignment)],
    ) -> Result<(), String> {
        let new: Vec<&PodAssignment> =
            assigned.iter().map(|(_, p)| p).filter(|p| !self.seen.contains(&p.uid)).collect();
        self.seen.extend(assigned.iter().map(|(_, p)| p.uid.clone()));
        let Some(applied) = status.applied.clone() else { return Ok(()) };
        // An approval holds for its adoption; the branch coming back to its commit later is
        // decided again.
        if self.approved.as_ref().is_some_and(|(sha, _)| *sha != applied) {
            self.approved = None;
        }
        let record = self.store.sync(&applied).await.map_err(|e| e.to_string())?;
        let Some(record) = record else { return Err(format!("the applied commit {applied} has no sync record")) };
        if let Some((sha, digest)) = &self.approved
            && *sha == applied
            && control::plan_digest_of(&record.plan_json).as_deref() != Some(digest.as_str())
        {
            return Err(format!("{applied} runs a plan other than the one approved ({digest})"));
        }
        let steps = control::steps_of(&record.plan_json)
            .ok_or_else(|| format!("the plan recorded for the applied commit {applied} has no steps"))?;
        let pins = self.store.pins().await.map_err(|e| e.to_string())?;
        for pod in new {
            let Some(step) = steps.iter().find(|s| s.kind == Kind::Deployment && s.name == pod.workload_name) else {
                return Err(format!("pod {} was made, but the plan of {applied} has no step for it", pod.pod));
            };
            let mut allowed = vec![step.template.clone()];
            allowed.extend(step.on_failure.iter().map(|f| f.template.clone()));
            for pin in pins.iter().filter(|p| p.key == step.key() && p.head == applied) {
                let loaded = self.plane().load(&pin.commit).await.map_err(|e| e.to_string())?;
                let sources = Sources::new(&loaded.resources, &loaded.secrets);
                if let Some(resource) = loaded.resources.iter().find(|r| r.key == pin.key) {
                    allowed.push(rollout_hash(resource, &sources));
                }
            }
            if !allowed.contains(&pod.spec_hash) {
                return Err(format!(
                    "pod {} runs template {}, but the plan of {applied} says {:?} ({:?})",
                    pod.pod, pod.spec_hash, step.action, allowed
                ));
            }
        }
        Ok(())
    }
}

/// Whether a pod of `name` restarted (a crash takes it out of the routes for a moment).
fn crash_in_step(nodes: &[HollowNode], name: &str) -> bool {
    nodes.iter().flat_map(|n| n.pods.values()).any(|p| p.assignment.workload_name == name && p.restarts > 0)
}

/// Plays `events`, one tick after each; the first broken invariant is the error, with the step.
pub fn play(events: &[Event]) -> Result<Stats, String> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let mut world = World::new().await;
        for _ in 0..3 {
            world.tick().await.map_err(|e| format!("before the first event: {e}"))?;
        }
        for (step, event) in events.iter().enumerate() {
            world.apply(event).await.map_err(|e| format!("step {step} ({event:?}): {e}"))?;
            world.tick().await.map_err(|e| format!("step {step} ({event:?}): {e}"))?;
        }
        Ok(world.stats)
    })
}

/// Issue 12: a plan approved by its digest after the applied state moved is refused, with the
/// plan as it is now, and that plan is then taken. Returns the refusal.
pub fn an_outdated_plan_is_refused() -> Result<String, String> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let mut world = World::new().await;
        for _ in 0..4 {
            world.tick().await?;
        }
        let index_before = world.store.state_index().await.map_err(|e| e.to_string())?;
        // A rollout in flight, then a commit that waits: its plan is made against the state
        // applied before the rollout finishes.
        world.apply(&Event::Image(0, 2)).await?;
        world.tick().await?;
        world.apply(&Event::Policy(true)).await?;
        world.tick().await?;
        let head = world.repo.head().sha.clone();
        let record = world.store.sync(&head).await.map_err(|e| e.to_string())?.ok_or("no record")?;
        let shown = control::plan_digest_of(&record.plan_json).ok_or("the plan has no digest")?;
        for _ in 0..20 {
            world.tick().await?;
        }
        let index_now = world.store.state_index().await.map_err(|e| e.to_string())?;
        if index_now == index_before {
            return Err("the applied state did not move".into());
        }
        let refusal = match control::approve(world.plane(), &head, None, Some(&shown)).await {
            Ok(_) => return Err("the outdated plan was approved".into()),
            Err(control::ApproveError::PlanChanged { current, plan_json, .. }) => {
                if current == shown || control::plan_digest_of(&plan_json).as_deref() != Some(current.as_str()) {
                    return Err("the refusal does not carry the plan as it is now".into());
                }
                control::approve(world.plane(), &head, None, Some(&current))
                    .await
                    .map_err(|e| format!("the plan as it is now was refused: {e}"))?;
                control::ApproveError::PlanChanged {
                    shown: shown.clone(),
                    current,
                    plan_text: String::new(),
                    plan_json,
                }
                .to_string()
            }
            Err(other) => return Err(format!("refused for another reason: {other}")),
        };
        world.waiting = false;
        world.expected = Some(head.clone());
        world.tick().await?;
        Ok(refusal)
    })
}

/// The fewest events of `events` that still fail: drop events while it keeps failing.
pub fn shrink(events: &[Event]) -> (Vec<Event>, String) {
    let mut events = events.to_vec();
    let mut error = play(&events).expect_err("the list to shrink fails");
    let mut chunk = events.len().div_ceil(2).max(1);
    loop {
        let mut removed = false;
        let mut start = 0;
        while start < events.len() {
            let end = (start + chunk).min(events.len());
            let mut candidate = events.clone();
            candidate.drain(start..end);
            match play(&candidate) {
                Err(e) => {
                    events = candidate;
                    error = e;
                    removed = true;
                }
                Ok(_) => start = end,
            }
        }
        if chunk == 1 && !removed {
            return (events, error);
        }
        chunk = (chunk / 2).max(1);
    }
}

/// Plays one generated list per seed, `steps` events each; a failure is shrunk and named by
/// its seed.
pub fn run_seeds(seeds: std::ops::Range<u64>, steps: usize) -> Result<Stats, String> {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
    let strategy = proptest::collection::vec(event(), steps);
    let mut total = Stats::default();
    for seed in seeds {
        let mut bytes = [0u8; 32];
        bytes[..8].copy_from_slice(&seed.to_le_bytes());
        let config = Config { cases: 1, failure_persistence: None, ..Config::default() };
        let mut runner = TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &bytes));
        let events = strategy.new_tree(&mut runner).map_err(|e| e.to_string())?.current();
        match play(&events) {
            Ok(stats) => {
                total.steps += stats.steps;
                total.synced_steps += stats.synced_steps;
                total.commits += stats.commits;
                total.approvals += stats.approvals;
            }
            Err(_) => {
                let (events, error) = shrink(&events);
                return Err(format!("seed {seed} fails: {error}\nshrunk to {} events: {events:?}", events.len()));
            }
        }
    }
    Ok(total)
}
