//! The control plane's loop: follow a branch, load each new commit once, decide whether to apply
//! it, and reconcile the nodes to it.
//!
//! A commit that fails to load, parse or validate changes nothing: the last good commit keeps
//! running and the status says why. Each commit seen gets a sync record with its plan against
//! the applied state. Under `sync.policy: manual`, or when a commit would delete more of the
//! applied objects than `sync.pruneThreshold` allows, the commit waits for an approval of exactly
//! that plan. Every workload spec a commit introduces is a revision: a rollout that crash-loops
//! or misses its progress deadline fails, and the workload goes back to its last healthy revision
//! until its spec changes in Git. `berth rollback` pins a workload to an earlier commit until the
//! branch moves. Everything the loop decides is written to the store first, so a restarted server
//! resumes where it stopped.

use crate::apply::controller::{Controller, ControllerConfig, ReconcileSummary, Targets, WorkloadStatus, request_of};
use crate::apply::pods::{Sources, revision_hash};
use crate::manifest::Resource;
use crate::plan::schedule::{self, Forecast, NodeInfo};
use crate::plan::{self, State};
use crate::server::agent_api::AgentApi;
use crate::server::decide::{self, Approval, Decision, Event, Memory, Planned, Seen, template_at};
use crate::server::status;
use crate::server::verdicts::judge_step;
use crate::store::{Revision, Store, StoreError};
use crate::sync::{CommitInfo, Loaded, Loader, SyncError};
use serde::Serialize;
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

pub use super::actions::{ApproveError, RollbackError, RollbackPlan, approve, rollback};
pub use super::status::{Health, Sync, WorkloadHealth};

/// What the loop last did: for `berth up`'s progress, the status API and the web UI.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SyncStatus {
    pub repository: String,
    pub branch: String,
    /// The commit at the head of the branch.
    pub head: Option<CommitInfo>,
    /// The commit being applied: the newest one that loaded without errors and was let through.
    pub applied: Option<String>,
    pub applied_message: String,
    /// Why the head commit is not applied, when it failed to load.
    pub failed: Option<String>,
    /// Why the head commit waits for an approval, when it does.
    pub waiting: Option<String>,
    pub sync: Sync,
    pub sync_reason: String,
    pub health: Health,
    pub health_reason: String,
    /// The one sentence that matters most: why it is not Synced and Healthy, or that it is.
    pub reason: String,
    pub workloads: Vec<WorkloadHealth>,
    /// The CronJobs and their runs (`/api/v1/cronjobs`).
    #[serde(skip)]
    pub cron_jobs: Vec<status::CronJobView>,
    #[serde(skip)]
    pub last_pass: Option<ReconcileSummary>,
    /// Synced and Healthy.
    pub synced: bool,
    pub ready_nodes: usize,
    /// Seconds since the epoch of the last pass.
    pub updated_at: i64,
}

#[derive(Debug, Clone)]
pub struct ControlConfig {
    pub branch: String,
    pub poll_interval: Duration,
    pub reconcile_interval: Duration,
    /// For a remote repository: how often it is fetched (a webhook fetches at once).
    pub fetch_interval: Option<Duration>,
    pub controller: ControllerConfig,
}

impl Default for ControlConfig {
    fn default() -> Self {
        ControlConfig {
            branch: "HEAD".into(),
            poll_interval: Duration::from_millis(500),
            reconcile_interval: Duration::from_millis(500),
            fetch_interval: None,
            controller: ControllerConfig::default(),
        }
    }
}

/// What the loop and the user API share.
/// The shortest time between two passes that reports asked for.
const REPORT_PASS_GAP: std::time::Duration = std::time::Duration::from_millis(100);

pub struct ControlPlane {
    pub store: Arc<Store>,
    pub loader: Arc<Mutex<Loader>>,
    pub api: AgentApi,
    pub config: ControlConfig,
    pub status: watch::Sender<SyncStatus>,
    /// Wakes the loop before its next tick: after an approval, a rollback or a webhook.
    pub wake: Notify,
    /// The commit being applied, for the API's views of services and plans.
    pub desired: Mutex<Option<Arc<Loaded>>>,
    /// What the loop counts as it runs, for `/metrics`.
    pub metrics: super::metrics::ServerMetrics,
    fetch_requested: std::sync::atomic::AtomicBool,
    /// Runs of CronJobs asked for by hand (`berth create job --from`), for the next pass.
    pub manual_runs: Mutex<Vec<(crate::manifest::ObjectKey, String)>>,
}

impl ControlPlane {
    pub fn new(store: Arc<Store>, loader: Loader, api: AgentApi, config: ControlConfig) -> Arc<ControlPlane> {
        let status = SyncStatus {
            repository: loader.location().to_owned(),
            branch: config.branch.clone(),
            ..SyncStatus::default()
        };
        Arc::new(ControlPlane {
            store,
            loader: Arc::new(Mutex::new(loader)),
            api,
            config,
            status: watch::channel(status).0,
            wake: Notify::new(),
            desired: Mutex::new(None),
            fetch_requested: std::sync::atomic::AtomicBool::new(false),
            manual_runs: Mutex::new(Vec::new()),
            metrics: Default::default(),
        })
    }

    /// Asks the loop to fetch the remote now (a webhook's push notice).
    pub fn request_fetch(&self) {
        self.fetch_requested.store(true, std::sync::atomic::Ordering::SeqCst);
        self.wake.notify_one();
    }

    /// Loads a commit off the async threads (Git is blocking); the loader caches it.
    pub async fn load(&self, rev: &str) -> Result<Arc<Loaded>, SyncError> {
        let loader = self.loader.clone();
        let rev = rev.to_owned();
        tokio::task::spawn_blocking(move || {
            let mut loader = crate::lock(&loader);
            loader.load(&rev)
        })
        .await
        .unwrap_or_else(|error| Err(SyncError::Panicked(error.to_string())))
    }

    /// Resolves a revision (a branch, a sha or a prefix of one) off the async threads.
    pub async fn resolve(&self, rev: &str) -> Result<CommitInfo, SyncError> {
        let loader = self.loader.clone();
        let rev = rev.to_owned();
        tokio::task::spawn_blocking(move || {
            let loader = crate::lock(&loader);
            loader.resolve(&rev)
        })
        .await
        .unwrap_or_else(|error| Err(SyncError::Panicked(error.to_string())))
    }

    /// The plan from the applied state to `commit`, and the state index it was made at.
    pub async fn plan_against_applied(&self, commit: &Loaded) -> Result<(plan::Plan, i64), StoreError> {
        let (plan, index, _) = self.plan_with_applied(commit, crate::server::now()).await?;
        Ok((plan, index))
    }

    /// `plan_against_applied` at `now` (which nodes are Ready for the scheduler's forecast),
    /// with the applied objects it was made from.
    async fn plan_with_applied(
        &self,
        commit: &Loaded,
        now: i64,
    ) -> Result<(plan::Plan, i64, Vec<Arc<Resource>>), StoreError> {
        let index = self.store.state_index().await?;
        let applied = self.store.applied().await?;
        let observed = State::new(
            applied.commit.as_ref().map_or_else(|| "nothing applied".to_owned(), |c| c.sha.clone()),
            applied.commit.as_ref().map_or_else(String::new, |c| c.message.clone()),
            applied.resources.clone(),
        );
        let desired = commit.state();
        let mut plan = plan::plan(&desired, &observed);
        let revisions = self.store.all_revisions().await?;
        let sources = Sources::new(&commit.resources, &commit.secrets);
        plan::note_restores(&mut plan, &commit.resources, |key, _| {
            let resource = commit.resources.iter().find(|r| &r.key == key)?;
            let hash = revision_hash(resource, &sources);
            revisions.iter().rev().find(|r| &r.key == key && r.spec_hash == hash).map(|r| r.commit.clone())
        });
        // What stays held whatever the plan says: a pin holds while its commit stays applied,
        // a failed spec until Git changes it.
        let applying = crate::lock(&self.desired).as_ref().is_some_and(|d| d.commit.sha == commit.commit.sha);
        let pins = if applying { self.store.pins().await? } else { Vec::new() };
        // What stays held whatever the commit says: a pin holds while its commit stays
        // applied, a failed spec until Git changes it; a template not yet proved healthy says
        // where it goes back to should it fail.
        let mut held = Vec::new();
        for step in &mut plan.steps {
            let key = step.key();
            let hold = match pins.iter().find(|p| p.key == key && p.head == commit.commit.sha) {
                Some(pin) => match self.load(&pin.commit).await.ok().and_then(|c| template_at(&c, &key)) {
                    Some(template) => {
                        step.action = plan::StepAction::Held;
                        step.commit = pin.commit.clone();
                        step.template = template;
                        Some((
                            pin.commit.clone(),
                            "pinned by `berth rollback` until a new commit is applied".to_owned(),
                        ))
                    }
                    None => None,
                },
                None => {
                    let history: Vec<Revision> = revisions.iter().filter(|r| r.key == key).cloned().collect();
                    judge_step(step, &history)
                }
            };
            if let Some((commit, reason)) = hold {
                held.push(plan::Held { kind: key.kind, namespace: key.namespace, name: key.name, commit, reason });
            }
        }
        plan.held = held;
        plan.placements = self.forecast(&plan, commit, now).await?;
        Ok((plan, index, applied.resources))
    }

    /// Where the scheduler would place the first pods `plan` starts, on the nodes Ready at `now`
    /// with the pods they run.
    async fn forecast(&self, plan: &plan::Plan, commit: &Loaded, now: i64) -> Result<Vec<Forecast>, StoreError> {
        if !plan.changes.iter().any(|c| c.rollout.is_some()) {
            return Ok(Vec::new());
        }
        let grace = self.config.controller.node_grace_seconds;
        let mut nodes = Vec::new();
        let mut placed = Vec::new();
        for node in self.store.nodes().await? {
            let ready = now - node.last_heartbeat <= grace;
            if ready {
                let (_, pods) = self.store.assignment(&node.name).await?;
                placed.extend(pods.iter().map(|pod| (request_of(pod, None), node.name.clone())));
            }
            nodes.push(NodeInfo { name: node.name, ready, labels: node.labels, allocatable: node.allocatable });
        }
        Ok(schedule::forecast(plan, &commit.resources, &nodes, &placed))
    }
}

/// The loop's memory (`decide::Memory`, everything in it also in the store) and when it last
/// fetched.
struct LoopState {
    memory: Memory,
    last_fetch: Option<Instant>,
}

/// The loop, one pass at a time: `run` drives it on the wall clock; a test or a simulation
/// drives it with a clock of its own.
pub struct ControlLoop {
    plane: Arc<ControlPlane>,
    controller: Controller<AgentApi>,
    state: LoopState,
}

impl ControlLoop {
    /// Picks up where a previous server on the same store stopped.
    pub async fn new(plane: Arc<ControlPlane>) -> ControlLoop {
        let controller = Controller::new(plane.store.clone(), plane.api.clone(), plane.config.controller.clone());
        let mut state = LoopState { memory: Memory::default(), last_fetch: None };
        if let Err(error) = restore(&plane, &mut state.memory).await {
            tracing::error!(%error, "Reading the control plane's state failed; starting from the branch head.");
        }
        ControlLoop { plane, controller, state }
    }

    /// One pass at `now` (seconds since the Unix epoch): read, decide, write, act, judge,
    /// publish (see `decide`).
    pub async fn step(&mut self, now: i64) -> Result<(), PassError> {
        pass(&self.plane, &self.controller, &mut self.state, now).await
    }

    pub fn plane(&self) -> &Arc<ControlPlane> {
        &self.plane
    }
}

/// Runs the loop until `shutdown` is cancelled; publishes its status on `plane.status`.
pub async fn run(plane: Arc<ControlPlane>, shutdown: CancellationToken) {
    let mut control = ControlLoop::new(plane.clone()).await;
    let mut interval = tokio::time::interval(plane.config.poll_interval.min(plane.config.reconcile_interval));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut passes: u64 = 0;
    let mut last_pass = tokio::time::Instant::now();
    let mut retry = crate::retry::Retry::new("A control pass", Duration::from_millis(500), Duration::from_secs(30));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = interval.tick() => {}
            _ = plane.wake.notified() => {}
            // A report can take a pod out of the routes: look at once, but not more often than
            // every REPORT_PASS_GAP however many nodes report.
            _ = plane.api.reported() => tokio::time::sleep_until(last_pass + REPORT_PASS_GAP).await,
        }
        last_pass = tokio::time::Instant::now();
        let head = control.state.memory.head.clone();
        let started = std::time::Instant::now();
        let stepped = control.step(crate::server::now()).await;
        plane.metrics.pass(started.elapsed().as_secs_f64(), stepped.is_err());
        match stepped {
            Ok(()) => retry.succeeded(),
            // A branch that went away, a store that cannot be written: try again, less often
            // the longer it lasts, and say so once.
            Err(error) => {
                let pause = retry.failed(&error);
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(pause) => {}
                }
            }
        }
        passes += 1;
        if control.state.memory.head != head || passes % 20 == 0 {
            release_free_memory();
        }
    }
}

/// Hands memory the allocator keeps free back to the system. A new commit's parse and plan
/// leave many freed pages behind in glibc's arenas; trimming keeps the server's resident
/// memory close to what it uses.
fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free pages; it touches no live allocation.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Picks up where a previous server stopped: the commit it was applying, revisions and pins.
async fn restore(plane: &ControlPlane, memory: &mut Memory) -> Result<(), Box<dyn std::error::Error>> {
    for revision in plane.store.all_revisions().await? {
        memory.revisions.entry(revision.key.clone()).or_default().push(revision);
    }
    if let Some(sha) = plane.store.control_value("desired_commit").await? {
        let commit = plane.load(&sha).await?;
        memory.retained = decide::kept(&plane.store.applied().await?.resources, &commit);
        memory.pins = plane.store.pins().await?.into_iter().filter(|p| p.head == sha).collect();
        let applied = plane.store.control_value("applied_commit").await?;
        memory.applied_recorded = applied.as_deref() == Some(sha.as_str());
        let record = plane.store.sync(&sha).await?;
        memory.sync_outcome = record.as_ref().map(|r| r.outcome);
        *crate::lock(&plane.desired) = Some(commit.clone());
        // The plan being carried out goes on; one made by a berth that wrote no steps, or
        // whose templates this berth computes otherwise, is made again.
        let steps = record.as_ref().and_then(|r| steps_of(&r.plan_json));
        memory.program = match steps.filter(|steps| program_fits(steps, &commit)) {
            Some(steps) => steps,
            None => {
                tracing::info!(commit = %commit.commit.short(), "The plan being carried out was made again.");
                plane.plan_against_applied(&commit).await?.0.steps
            }
        };
        plane.status.send_modify(|s| {
            s.applied = Some(commit.commit.sha.clone());
            s.applied_message = commit.commit.message.clone();
        });
        memory.desired = Some(commit);
    }
    Ok(())
}

#[derive(Debug, thiserror::Error)]
pub enum PassError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Sync(#[from] SyncError),
}

/// One pass: read what the decisions need once; decide in pure code what becomes of the head
/// and of an approval; write that in one transaction; decide what each workload runs; let the
/// controller act; judge what the nodes run and write that in one transaction; publish.
async fn pass(
    plane: &ControlPlane,
    controller: &Controller<AgentApi>,
    state: &mut LoopState,
    now: i64,
) -> Result<(), PassError> {
    fetch_if_due(plane, state).await;
    let started = Instant::now();
    let seen = read(plane, &state.memory, now).await?;
    plane.metrics.read(started.elapsed().as_secs_f64());
    let decision = decide::commits(&seen, &state.memory);
    carry_out(plane, &mut state.memory, decision).await?;
    let memory = &mut state.memory;
    let Some(desired) = memory.desired.clone() else {
        publish(plane, memory, None, now);
        return Ok(());
    };
    let mut targets = targets(plane, memory, &desired).await;
    targets.manual_runs = std::mem::take(&mut *crate::lock(&plane.manual_runs));
    hold_for_hooks(plane, memory, &desired, &mut targets, now).await?;
    let summary = controller.reconcile(&desired, &targets, now).await?;
    let judged = decide::judge(memory, &desired, &targets, &summary, now);
    carry_out(plane, memory, judged).await?;
    publish(plane, memory, Some(&summary), now);
    Ok(())
}

/// What the commit decisions of a pass need, read once: the head, and when it moved or an
/// approval of it waits, its commit, its sync record and its plan against the applied state.
async fn read(plane: &ControlPlane, memory: &Memory, now: i64) -> Result<Seen, PassError> {
    let head = plane.resolve(&plane.config.branch).await?;
    let moved = memory.head.as_deref() != Some(head.sha.as_str());
    let approval = match plane.store.control_value("approved_commit").await? {
        Some(commit) => Some(Approval { commit, digest: plane.store.control_value("approved_digest").await? }),
        None => None,
    };
    let approved = approval.as_ref().is_some_and(|a| a.commit == head.sha);
    let (commit, record) = if moved || approved {
        (Some(plane.load(&head.sha).await?), plane.store.sync(&head.sha).await?)
    } else {
        (None, None)
    };
    let previous = match memory.head.as_deref().filter(|_| moved) {
        Some(previous) => plane.store.sync(previous).await?,
        None => None,
    };
    let planned = match &commit {
        Some(commit) if decide::wants_plan(memory, &head, Some(commit), record.as_ref(), approval.as_ref()) => {
            let (plan, index, applied) = plane.plan_with_applied(commit, now).await?;
            Some(Planned { plan, index, kept: applied })
        }
        _ => None,
    };
    let pins = plane.store.pins().await?;
    Ok(Seen { now, head, commit, record, previous, approval, planned, pins })
}

/// Writes a decision's changes in one transaction, then takes it into the loop's memory and
/// says what it means on the status, the log and the metrics.
async fn carry_out(plane: &ControlPlane, memory: &mut Memory, decision: Decision) -> Result<(), PassError> {
    if !decision.changes.is_empty() {
        let started = Instant::now();
        plane.store.write(&decision.changes).await?;
        plane.metrics.store_write(started.elapsed().as_secs_f64());
        let events = super::events::from_changes(&decision.changes);
        if let Err(error) = plane.store.add_events(&events, crate::server::now()).await {
            tracing::warn!(%error, "Recording events failed.");
        }
    }
    for event in &decision.events {
        match event {
            Event::LoadFailed { reason } => tracing::warn!(%reason, "A commit failed to load."),
            Event::Waits { commit, reason } => tracing::info!(%commit, %reason, "A commit waits for approval."),
            Event::ApprovalDropped { commit } => {
                tracing::warn!(%commit, "What runs changed after the approval; review the plan again and approve it.")
            }
            Event::Adopted { commit, message } => tracing::info!(%commit, %message, "Syncing a commit."),
            Event::PinsLifted { count, commit } => {
                tracing::info!(lifted = count, %commit, "A new commit is applied: rollback pins are lifted.")
            }
            Event::RolloutFailed { workload, commit, reason } => {
                tracing::warn!(%workload, %commit, %reason, "A rollout failed; rolling back.")
            }
            Event::Finished(outcome) => plane.metrics.sync_finished(outcome.as_str()),
            Event::RolloutFinished { outcome, seconds } => plane.metrics.rollout(outcome.as_str(), *seconds),
            Event::SyncTook { outcome, seconds } => plane.metrics.sync_took(outcome.as_str(), *seconds),
            Event::Synced { commit, committed_at } => {
                plane.metrics.synced(*committed_at, crate::server::now());
                tracing::info!(%commit, "Synced.");
            }
        }
    }
    if decision.head.is_some() || decision.failed.is_some() || decision.waiting.is_some() || decision.adopt.is_some() {
        plane.status.send_modify(|s| {
            if let Some(head) = &decision.head {
                s.head = Some(head.clone());
                s.failed = None;
                s.waiting = None;
            }
            if let Some(failed) = &decision.failed {
                s.failed = Some(failed.clone());
            }
            if let Some(waiting) = &decision.waiting {
                s.waiting.clone_from(waiting);
            }
            if let Some(adopt) = &decision.adopt {
                s.applied = Some(adopt.commit.commit.sha.clone());
                s.applied_message = adopt.commit.commit.message.clone();
                // Until this pass publishes, nothing is known of the new commit on the nodes:
                // the previous commit's axes would say it is Synced.
                let reason = format!("commit {} is being applied", adopt.commit.commit.short());
                s.synced = false;
                s.sync = status::Sync::OutOfSync;
                s.sync_reason.clone_from(&reason);
                s.health = status::Health::Progressing;
                s.health_reason.clone_from(&reason);
                // The rows of workloads the commit changes are the previous commit's too: they
                // wait for the pass as well, at the replicas the commit asks.
                for row in &mut s.workloads {
                    let step = adopt
                        .program
                        .iter()
                        .find(|w| w.kind.name() == row.kind && w.namespace == row.namespace && w.name == row.name);
                    if step.is_some_and(|w| matches!(w.action, plan::StepAction::Keep | plan::StepAction::Orphan)) {
                        continue;
                    }
                    row.sync = status::Sync::OutOfSync;
                    row.health = status::Health::Progressing;
                    row.reason.clone_from(&reason);
                    if let Some(replicas) = step.and_then(|w| w.replicas) {
                        row.replicas = Some(replicas);
                    }
                }
                s.reason = reason;
            }
        });
    }
    if let Some(adopt) = &decision.adopt {
        *crate::lock(&plane.desired) = Some(adopt.commit.clone());
    }
    memory.apply(decision);
    Ok(())
}

async fn fetch_if_due(plane: &ControlPlane, state: &mut LoopState) {
    let Some(every) = plane.config.fetch_interval else { return };
    let requested = plane.fetch_requested.swap(false, std::sync::atomic::Ordering::SeqCst);
    if !requested && state.last_fetch.is_some_and(|at| at.elapsed() < every) {
        return;
    }
    state.last_fetch = Some(Instant::now());
    let loader = plane.loader.clone();
    let fetched = tokio::task::spawn_blocking(move || crate::lock(&loader).fetch()).await;
    match fetched {
        Ok(Ok(())) => {}
        Ok(Err(error)) => {
            tracing::warn!(%error, "Fetching the repository failed; the last fetched commit stays.");
            plane.status.send_modify(|s| s.failed = Some(format!("{error}; the last fetched commit stays")));
        }
        Err(error) => tracing::error!(%error, "The fetch task panicked."),
    }
}

/// The steps of a recorded plan JSON: the program its commit is carried out with.
pub fn steps_of(plan_json: &str) -> Option<Vec<plan::WorkloadStep>> {
    let mut plan: serde_json::Value = serde_json::from_str(plan_json).ok()?;
    serde_json::from_value(plan.get_mut("steps")?.take()).ok()
}

/// Whether stored steps are of `commit` as this berth reads it: a step for every workload, and
/// the commit's own templates where they run it.
fn program_fits(steps: &[plan::WorkloadStep], commit: &Loaded) -> bool {
    commit.resources.iter().filter(|r| r.key.kind.is_workload()).all(|resource| {
        steps.iter().find(|s| s.key() == resource.key).is_some_and(|step| {
            step.commit != commit.commit.sha || Some(&step.template) == template_at(commit, &resource.key).as_ref()
        })
    })
}

/// The `planDigest` of a recorded plan JSON.
pub fn plan_digest_of(plan_json: &str) -> Option<String> {
    let plan: serde_json::Value = serde_json::from_str(plan_json).ok()?;
    plan["planDigest"].as_str().map(str::to_owned)
}

/// What each workload runs this pass (`decide::wanted`, `decide::targets`), with the earlier
/// commits that names loaded from Git. A workload that departs from the plan is logged once.
async fn targets(plane: &ControlPlane, memory: &mut Memory, desired: &Loaded) -> Targets {
    let wanted = decide::wanted(memory, desired);
    for want in &wanted {
        let sha = &want.commit;
        if *sha == desired.commit.sha || memory.commits.contains_key(sha) {
            continue;
        }
        match plane.load(sha).await {
            Ok(commit) if commit.is_valid() => {
                memory.commits.insert(sha.clone(), commit);
            }
            Ok(_) => tracing::warn!(commit = %sha, "A rollback target has errors now; it is not used."),
            Err(error) => tracing::warn!(%error, commit = %sha, "Loading a rollback target failed."),
        }
    }
    let targets = decide::targets(memory, desired, wanted, &memory.commits);
    for (key, reason) in &targets.frozen {
        if memory.frozen.get(key) != Some(reason) {
            tracing::error!(workload = %key, %reason, "A workload departs from the plan; not touched.");
        }
    }
    let used: BTreeSet<&str> = targets.overrides.values().map(|c| c.commit.sha.as_str()).collect();
    memory.commits.retain(|sha, _| used.contains(sha.as_str()));
    memory.frozen.clone_from(&targets.frozen);
    targets
}

/// While the commit's PreSync hooks have not completed, holds the rest of it at the applied
/// commit (loaded once); notes when they completed, for the rollout's deadline.
async fn hold_for_hooks(
    plane: &ControlPlane,
    memory: &mut Memory,
    desired: &Arc<Loaded>,
    targets: &mut Targets,
    now: i64,
) -> Result<(), StoreError> {
    let sha = &desired.commit.sha;
    let Some(reason) = decide::pre_sync_pending(memory, desired) else {
        let has_hooks = desired.resources.iter().any(|r| r.is_hook(crate::manifest::Hook::PreSync));
        if has_hooks && memory.hooks_done.as_ref().is_none_or(|(done, _)| done != sha) {
            memory.hooks_done = Some((sha.clone(), now));
        }
        memory.hooks_base = None;
        return Ok(());
    };
    let applied = plane.store.control_value("applied_commit").await?.filter(|applied| applied != sha);
    let cached = memory.hooks_base.as_ref().filter(|b| Some(&b.commit.sha) == applied.as_ref()).cloned();
    let base = match (cached, applied) {
        (Some(base), _) => Some(base),
        (None, Some(applied)) => match plane.load(&applied).await {
            Ok(commit) => Some(commit),
            Err(error) => {
                tracing::warn!(%error, commit = %applied, "Loading the applied commit to hold at failed.");
                None
            }
        },
        (None, None) => None,
    };
    memory.hooks_base.clone_from(&base);
    decide::hold_for_hooks(desired, base.as_ref(), &reason, targets);
    Ok(())
}

/// Publishes the status of the pass: each workload's sync and health, and the whole's
/// (`status::overall`, where Synced is defined).
fn publish(plane: &ControlPlane, state: &Memory, summary: Option<&ReconcileSummary>, now: i64) {
    let workloads: Vec<WorkloadHealth> = summary
        .map(|s| s.workloads.iter().map(|w| workload_health(state, w, s.ready_nodes)).collect())
        .unwrap_or_default();
    let spec_of = |key: &crate::manifest::ObjectKey| {
        let desired = state.desired.as_ref()?;
        let index = desired.resources.binary_search_by(|r| r.key.cmp(key)).ok()?;
        match &desired.resources[index].object {
            crate::manifest::Object::CronJob(cron_job) => Some(&cron_job.spec),
            _ => None,
        }
    };
    let cron_jobs: Vec<status::CronJobView> = summary
        .map(|s| s.cron_jobs.iter().map(|c| status::CronJobView::of(c, spec_of(&c.key))).collect())
        .unwrap_or_default();
    plane.status.send_modify(|status| {
        status.ready_nodes = summary.map_or(0, |s| s.ready_nodes);
        status.updated_at = now;
        let desired = state.desired.as_ref().map(|d| d.commit.sha.clone());
        let facts = status::Facts {
            failed: status.failed.as_deref(),
            waiting: status.waiting.as_deref(),
            applied: state.desired.as_ref().map(|d| d.commit.short()),
            head_applied: state.head.is_none() || state.head == desired,
            ready_nodes: status.ready_nodes,
            pruning: summary.map_or(0, |s| s.pruning),
            applied_recorded: state.applied_recorded,
            workloads: &workloads,
        };
        let axes = status::overall(&facts);
        status.synced = axes.sync == Sync::Synced && axes.health == Health::Healthy;
        status.sync = axes.sync;
        status.sync_reason = axes.sync_reason;
        status.health = axes.health;
        status.health_reason = axes.health_reason;
        status.reason = axes.reason;
        status.workloads = workloads;
        status.cron_jobs = cron_jobs;
        status.last_pass = summary.cloned();
    });
}

/// One workload's status, from what the loop remembers of it.
fn workload_health(state: &Memory, w: &WorkloadStatus, ready_nodes: usize) -> WorkloadHealth {
    let history = state.revisions.get(&w.key).map(Vec::as_slice);
    let message = history
        .and_then(|h| h.iter().rev().find(|r| r.commit.sha == w.revision))
        .map(|r| r.commit.message.clone())
        .or_else(|| state.commits.get(&w.revision).map(|c| c.commit.message.clone()))
        .or_else(|| state.desired.as_ref().filter(|d| d.commit.sha == w.revision).map(|d| d.commit.message.clone()))
        .unwrap_or_default();
    let facts = status::WorkloadFacts {
        history,
        pin: state.pins.iter().find(|p| p.key == w.key),
        ready_nodes,
        revision_message: message,
    };
    status::workload_health(w, &facts)
}
