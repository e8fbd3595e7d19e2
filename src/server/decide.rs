//! What one pass of the control loop decides, in pure code: no store, no Git, no clock.
//!
//! A pass is a pipeline. `control` reads what it needs once ([`Seen`]), [`commits`] decides
//! what becomes of the head commit and of a pending approval (recorded, waiting, failed,
//! adopted with its plan's steps as the program), [`targets`] says what each workload runs,
//! and the decisions are written in one transaction before the controller acts on them. The
//! controller's summary of what the nodes run comes back to [`judge`]: verdicts on rolling
//! revisions, the commit's outcome, the applied objects once it is complete; those are written
//! in one transaction too, before the status is published. [`Memory`] is the loop's memory:
//! everything in it is also in the store, and it changes only by [`Memory::apply`] after a
//! write succeeded.

use crate::apply::controller::{ReconcileSummary, Targets};
use crate::apply::pods::{Sources, revision_hash};
use crate::manifest::{Kind, Object, ObjectKey, Resource};
use crate::plan::{self, render};
use crate::server::verdicts::{verdict, wait_reason};
use crate::store::{Change, Outcome, Pin, Revision, SyncOutcome, SyncRecord};
use crate::sync::{CommitInfo, Loaded};
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

/// The progress deadline of a workload that names none, as Kubernetes has it.
const PROGRESS_DEADLINE_SECONDS: i32 = 600;

/// The loop's memory; everything in it is also in the store.
#[derive(Default)]
pub struct Memory {
    pub head: Option<String>,
    /// The commit being applied.
    pub desired: Option<Arc<Loaded>>,
    /// Revisions by workload, oldest first.
    pub revisions: HashMap<ObjectKey, Vec<Revision>>,
    /// The pins that hold while `desired` is applied.
    pub pins: Vec<Pin>,
    /// Objects applied before, gone from `desired`, and annotated to be kept.
    pub retained: Vec<Arc<Resource>>,
    /// The steps of the plan being carried out for `desired`, in key order: what each
    /// workload runs. Only a failed rollout (to the step's `on_failure`) and a `berth rollback`
    /// pin depart from them.
    pub program: Vec<plan::WorkloadStep>,
    /// The workloads left as they run last pass, with the reason.
    pub frozen: HashMap<ObjectKey, String>,
    /// Earlier commits that workloads are held at, by sha.
    pub commits: HashMap<String, Arc<Loaded>>,
    /// The outcome last written to the desired commit's sync record.
    pub sync_outcome: Option<SyncOutcome>,
    /// When this server adopted the desired commit (unknown after a restart).
    pub adopted_at: Option<i64>,
    pub applied_recorded: bool,
    /// When the PreSync hooks of a commit (by sha) completed and its rollout began.
    pub hooks_done: Option<(String, i64)>,
    /// The applied commit a commit's workloads are held at while its PreSync hooks run.
    pub hooks_base: Option<Arc<Loaded>>,
}

impl Memory {
    fn desired_sha(&self) -> Option<&str> {
        self.desired.as_ref().map(|d| d.commit.sha.as_str())
    }

    /// Takes in a decision whose changes are in the store.
    pub fn apply(&mut self, decision: Decision) {
        if let Some(head) = decision.head {
            self.head = Some(head.sha);
        }
        if let Some(adopt) = decision.adopt {
            self.sync_outcome = Some(SyncOutcome::Progressing);
            self.adopted_at = Some(adopt.at);
            self.applied_recorded = false;
            self.program = adopt.program;
            self.retained = adopt.retained;
            self.desired = Some(adopt.commit);
        }
        if let Some(pins) = decision.pins {
            self.pins = pins;
        }
        for change in decision.changes {
            match change {
                Change::AddRevision(revision) => {
                    let history = self.revisions.entry(revision.key.clone()).or_default();
                    // The store keeps one revision per commit: one made again (a rewind)
                    // replaces it.
                    history.retain(|r| r.commit.sha != revision.commit.sha);
                    history.push(revision);
                }
                Change::FinishRevision { key, commit, outcome, reason, at } => {
                    let latest =
                        self.revisions.get_mut(&key).and_then(|h| h.iter_mut().rev().find(|r| r.commit.sha == commit));
                    if let Some(latest) = latest {
                        latest.outcome = outcome;
                        latest.reason = reason;
                        latest.finished_at = Some(at);
                    }
                }
                Change::SyncOutcome { commit, outcome, .. } if self.desired_sha() == Some(commit.as_str()) => {
                    self.sync_outcome = Some(outcome);
                }
                Change::Applied { commit, .. } if self.desired_sha() == Some(commit.sha.as_str()) => {
                    self.applied_recorded = true;
                }
                _ => {}
            }
        }
    }
}

/// What a pass read before it decides about commits.
pub struct Seen {
    pub now: i64,
    /// The head of the branch.
    pub head: CommitInfo,
    /// The head's commit: loaded when the head moved or an approval of it waits.
    pub commit: Option<Arc<Loaded>>,
    /// The head's sync record, read with `commit`.
    pub record: Option<SyncRecord>,
    /// The previous head's sync record, when the head moved.
    pub previous: Option<SyncRecord>,
    /// An approval the API wrote since the last pass.
    pub approval: Option<Approval>,
    /// The plan from the applied state to the head, when [`wants_plan`] says the decision
    /// needs one.
    pub planned: Option<Planned>,
    /// Every pin in the store.
    pub pins: Vec<Pin>,
}

/// An approval waiting to be taken: the commit, and the digest of the plan approved.
pub struct Approval {
    pub commit: String,
    pub digest: Option<String>,
}

/// A plan against the applied state, the state index it was made at, and the applied objects
/// annotated to be kept.
pub struct Planned {
    pub plan: plan::Plan,
    pub index: i64,
    pub kept: Vec<Arc<Resource>>,
}

/// What a pass decided: the store's changes, written in one transaction, and what follows from
/// them for the loop's memory, its status and its log.
#[derive(Default)]
pub struct Decision {
    pub changes: Vec<Change>,
    /// The new head, when it moved.
    pub head: Option<CommitInfo>,
    /// The commit adopted: from now on the one being applied.
    pub adopt: Option<Adopt>,
    /// The pins that hold from now on, when they are decided again.
    pub pins: Option<Vec<Pin>>,
    /// Why the head failed to load, when it did.
    pub failed: Option<String>,
    /// Why the head waits (`Some(Some)`), or that it no longer does (`Some(None)`).
    pub waiting: Option<Option<String>>,
    pub events: Vec<Event>,
}

pub struct Adopt {
    pub commit: Arc<Loaded>,
    pub program: Vec<plan::WorkloadStep>,
    pub retained: Vec<Arc<Resource>>,
    /// When it was adopted: its sync's start.
    pub at: i64,
}

/// What a decision tells the log and the metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    LoadFailed {
        reason: String,
    },
    Waits {
        commit: String,
        reason: String,
    },
    ApprovalDropped {
        commit: String,
    },
    Adopted {
        commit: String,
        message: String,
    },
    PinsLifted {
        count: usize,
        commit: String,
    },
    RolloutFailed {
        workload: ObjectKey,
        commit: String,
        reason: String,
    },
    /// The commit being applied reached a final outcome `seconds` after it was adopted.
    SyncTook {
        outcome: SyncOutcome,
        seconds: i64,
    },
    /// A rolling revision got its verdict, `seconds` after it started.
    RolloutFinished {
        outcome: Outcome,
        seconds: i64,
    },
    /// A sync record reached a final outcome.
    Finished(SyncOutcome),
    /// The commit being applied is Synced; it was committed at `committed_at`.
    Synced {
        commit: String,
        committed_at: i64,
    },
}

/// Whether deciding about the head needs its plan against the applied state: a valid head
/// that is not being applied, which is new (and not already waiting or failed) or approved.
pub fn wants_plan(
    memory: &Memory,
    head: &CommitInfo,
    commit: Option<&Loaded>,
    record: Option<&SyncRecord>,
    approval: Option<&Approval>,
) -> bool {
    let Some(commit) = commit.filter(|c| c.is_valid()) else { return false };
    if memory.desired_sha() == Some(commit.commit.sha.as_str()) {
        return false;
    }
    let moved = memory.head.as_deref() != Some(head.sha.as_str());
    let settled = record.is_some_and(|r| matches!(r.outcome, SyncOutcome::Waiting | SyncOutcome::Failed));
    (moved && !settled) || approval.is_some_and(|a| a.commit == head.sha)
}

/// What becomes of the head (recorded with its plan; failed, waiting or adopted) and of an
/// approval written since the last pass (taken if it names the plan as it is now, dropped
/// otherwise).
pub fn commits(seen: &Seen, memory: &Memory) -> Decision {
    let mut decision = Decision::default();
    let head = &seen.head;
    if memory.head.as_deref() != Some(head.sha.as_str()) {
        decision.head = Some(head.clone());
        decision.changes.push(Change::Commit { commit: head.clone(), seen_at: seen.now });
        // A commit that waited for an approval and is no longer the head can never be
        // applied: its approval would take the branch back behind the head.
        if let Some(previous) = seen.previous.as_ref().filter(|r| r.outcome == SyncOutcome::Waiting) {
            let reason = format!("the branch moved to {} before it was approved", head.short());
            finish(&mut decision, &previous.commit.sha, SyncOutcome::Superseded, reason, seen.now);
        }
        if let Some(commit) = &seen.commit {
            follow_head(&mut decision, seen, memory, commit);
        }
    }
    if let Some(approval) = &seen.approval {
        take_approval(&mut decision, seen, memory, approval);
    }
    // Pins hold while the commit they were made at is the one applied.
    let applying = decision.adopt.as_ref().map(|a| a.commit.commit.sha.as_str()).or(memory.desired_sha());
    decision.pins = Some(seen.pins.iter().filter(|p| applying == Some(p.head.as_str())).cloned().collect());
    decision
}

fn follow_head(decision: &mut Decision, seen: &Seen, memory: &Memory, commit: &Arc<Loaded>) {
    let now = seen.now;
    if !commit.is_valid() {
        let first = commit.diagnostics.iter().find(|d| d.is_error()).map(ToString::to_string).unwrap_or_default();
        let reason = format!(
            "commit {} has {} errors, so nothing of it is applied; the first: {first}",
            commit.commit.short(),
            commit.error_count()
        );
        if seen.record.is_none() {
            let record = record_of(&commit.commit, now, SyncOutcome::Failed, &reason, 0, String::new(), "{}".into());
            decision.changes.push(Change::AddSync(record));
            decision.events.push(Event::Finished(SyncOutcome::Failed));
        }
        decision.events.push(Event::LoadFailed { reason: reason.clone() });
        decision.failed = Some(reason);
        return;
    }
    if let Some(record) = &seen.record {
        match record.outcome {
            // Seen before this server started, or the branch came back to it: it still waits.
            SyncOutcome::Waiting => {
                decision.waiting = Some(Some(record.reason.clone()));
                return;
            }
            SyncOutcome::Failed => return,
            // Being applied already (a restart): keep going.
            _ if memory.desired_sha() == Some(commit.commit.sha.as_str()) => return,
            // The branch came back to a commit seen before (a reset, a force-push): the head
            // is the desired state whatever its history, so it is decided again, against what
            // is applied now.
            _ => {}
        }
    }
    let Some(planned) = &seen.planned else { return };
    let plan = &planned.plan;
    if let Some(first) = plan.refusals.first() {
        let reason = format!("commit {} is refused, so nothing of it is applied: {first}", commit.commit.short());
        if seen.record.is_none() {
            let record = record_of(
                &commit.commit,
                now,
                SyncOutcome::Failed,
                &reason,
                planned.index,
                render::text(plan, false),
                render::json(plan),
            );
            decision.changes.push(Change::AddSync(record));
            decision.events.push(Event::Finished(SyncOutcome::Failed));
        }
        decision.events.push(Event::LoadFailed { reason: reason.clone() });
        decision.failed = Some(reason);
        return;
    }
    let wait = wait_reason(commit, plan);
    let outcome = if wait.is_some() { SyncOutcome::Waiting } else { SyncOutcome::Progressing };
    let record = record_of(
        &commit.commit,
        now,
        outcome,
        wait.as_deref().unwrap_or(""),
        planned.index,
        render::text(plan, false),
        render::json(plan),
    );
    if seen.record.is_some() {
        let reason =
            if wait.is_some() { record.reason.clone() } else { "the branch came back to this commit".to_owned() };
        decision.changes.push(Change::Replan {
            commit: record.commit.sha.clone(),
            state_index: planned.index,
            text: record.plan_text,
            json: record.plan_json,
        });
        decision.changes.push(Change::SyncOutcome { commit: record.commit.sha, outcome, reason, finished: None });
    } else {
        decision.changes.push(Change::AddSync(record));
    }
    match wait {
        Some(reason) => {
            decision.events.push(Event::Waits { commit: commit.commit.short().to_owned(), reason: reason.clone() });
            decision.waiting = Some(Some(reason));
        }
        None => adopt(decision, seen, memory, commit.clone(), planned),
    }
}

/// An approval is taken once: it makes its commit the one being applied, and is gone. An
/// approval of a commit that is no longer the head is dropped, so it can never take the branch
/// back behind a newer commit; one whose plan is not the plan as it is now is dropped too, and
/// the commit waits with the new plan.
fn take_approval(decision: &mut Decision, seen: &Seen, memory: &Memory, approval: &Approval) {
    let sha = approval.commit.as_str();
    let applying = decision.adopt.as_ref().map(|a| a.commit.commit.sha.as_str()).or(memory.desired_sha());
    if seen.head.sha == sha {
        if applying != Some(sha)
            && let Some(commit) = seen.commit.as_ref().filter(|c| c.is_valid())
            && let Some(planned) = &seen.planned
        {
            let plan = &planned.plan;
            if approval.digest.as_deref() == Some(render::digest(plan).as_str()) {
                adopt(decision, seen, memory, commit.clone(), planned);
                decision.waiting = Some(None);
            } else {
                decision.changes.push(Change::Replan {
                    commit: sha.to_owned(),
                    state_index: planned.index,
                    text: render::text(plan, false),
                    json: render::json(plan),
                });
                decision.events.push(Event::ApprovalDropped { commit: sha.to_owned() });
            }
        }
    } else {
        let reason = "the branch moved on before the approval was carried out".to_owned();
        finish(decision, sha, SyncOutcome::Superseded, reason, seen.now);
    }
    decision.changes.push(Change::ClearControl("approved_commit"));
}

/// Makes `commit` the one being applied: records new revisions of its workloads and what it
/// keeps from pruning, lifts the pins made at other commits, and marks an earlier unfinished
/// sync superseded.
fn adopt(decision: &mut Decision, seen: &Seen, memory: &Memory, commit: Arc<Loaded>, planned: &Planned) {
    let now = seen.now;
    let sha = commit.commit.sha.clone();
    decision
        .events
        .push(Event::Adopted { commit: commit.commit.short().to_owned(), message: commit.commit.message.clone() });
    if let Some(previous) = memory.desired_sha()
        && previous != sha
        && memory.sync_outcome == Some(SyncOutcome::Progressing)
    {
        let reason = format!("commit {} came before this one finished", commit.commit.short());
        finish(decision, previous, SyncOutcome::Superseded, reason, now);
    }
    let sources = Sources::new(&commit.resources, &commit.secrets);
    for resource in commit.resources.iter().filter(|r| r.key.kind.is_workload()) {
        let hash = revision_hash(resource, &sources);
        let history = memory.revisions.get(&resource.key).map(Vec::as_slice).unwrap_or_default();
        // A hook that runs at every sync has a revision, a run, per commit.
        let every_sync = resource.runs_every_sync();
        if history.last().is_some_and(|r| r.spec_hash == hash && (!every_sync || r.commit.sha == commit.commit.sha)) {
            continue;
        }
        let failed_before =
            history.iter().rev().find(|r| r.spec_hash == hash).filter(|r| r.outcome == Outcome::Failed && !every_sync);
        let (outcome, finished_at, reason) = match failed_before {
            Some(failed) => (
                Outcome::Failed,
                Some(now),
                format!(
                    "the same spec as commit {}, whose rollout failed; not retried until the spec changes",
                    failed.commit.short()
                ),
            ),
            None => (Outcome::Progressing, None, String::new()),
        };
        decision.changes.push(Change::AddRevision(Revision {
            key: resource.key.clone(),
            commit: commit.commit.clone(),
            spec_hash: hash,
            started_at: now,
            finished_at,
            outcome,
            reason,
        }));
    }
    let lifted = seen.pins.iter().filter(|p| p.head != sha).count();
    if lifted > 0 {
        decision.changes.push(Change::DropPinsNotAt(sha.clone()));
        decision.events.push(Event::PinsLifted { count: lifted, commit: commit.commit.short().to_owned() });
    }
    decision.changes.push(Change::SetControl("desired_commit", sha));
    let retained = kept(&planned.kept, &commit);
    decision.adopt = Some(Adopt { commit, program: planned.plan.steps.clone(), retained, at: now });
}

/// The applied objects annotated to be kept that `commit` no longer declares.
pub fn kept(applied: &[Arc<Resource>], commit: &Loaded) -> Vec<Arc<Resource>> {
    applied
        .iter()
        .filter(|r| r.is_kept() && commit.resources.binary_search_by(|d| d.key.cmp(&r.key)).is_err())
        .cloned()
        .collect()
}

fn finish(decision: &mut Decision, commit: &str, outcome: SyncOutcome, reason: String, now: i64) {
    decision.changes.push(Change::SyncOutcome { commit: commit.to_owned(), outcome, reason, finished: Some(now) });
    decision.events.push(Event::Finished(outcome));
}

fn record_of(
    commit: &CommitInfo,
    now: i64,
    outcome: SyncOutcome,
    reason: &str,
    state_index: i64,
    plan_text: String,
    plan_json: String,
) -> SyncRecord {
    SyncRecord {
        commit: commit.clone(),
        seen_at: now,
        outcome,
        reason: reason.to_owned(),
        state_index,
        approved_at: None,
        finished_at: None,
        plan_text,
        plan_json,
    }
}

/// The commit and pod template one workload runs this pass; `template: None` for a pin (any
/// template of that commit), `Some("")` when the program has no step for it.
pub struct Want {
    pub key: ObjectKey,
    pub commit: String,
    pub template: Option<String>,
}

/// What each workload of `desired` runs: its step in the program, or where the step says it
/// goes when its template failed (`on_failure`), or a `berth rollback` pin.
pub fn wanted(memory: &Memory, desired: &Loaded) -> Vec<Want> {
    let mut wanted = Vec::new();
    for resource in desired.resources.iter().filter(|r| r.key.kind.is_workload()) {
        let key = &resource.key;
        if let Some(pin) = memory.pins.iter().find(|p| &p.key == key) {
            wanted.push(Want { key: key.clone(), commit: pin.commit.clone(), template: None });
            continue;
        }
        let Ok(index) = memory
            .program
            .binary_search_by(|s| (s.kind, &s.namespace, &s.name).cmp(&(key.kind, &key.namespace, &key.name)))
        else {
            wanted.push(Want { key: key.clone(), commit: desired.commit.sha.clone(), template: Some(String::new()) });
            continue;
        };
        let step = &memory.program[index];
        let failed = memory
            .revisions
            .get(key)
            .and_then(|h| h.iter().rev().find(|r| r.spec_hash == step.template))
            .is_some_and(|r| r.outcome == Outcome::Failed);
        let (commit, template) = match (&step.on_failure, failed && step.action != plan::StepAction::Held) {
            (Some(back), true) => (back.commit.clone(), back.template.clone()),
            _ => (step.commit.clone(), step.template.clone()),
        };
        wanted.push(Want { key: key.clone(), commit, template: Some(template) });
    }
    wanted
}

/// The controller's targets from what each workload runs and the earlier commits loaded for
/// them (`commits`, by sha). A workload whose commit gives another template than the plan
/// names, or that has no step, is frozen: left as it runs, with the reason.
pub fn targets(
    memory: &Memory,
    desired: &Loaded,
    wanted: Vec<Want>,
    commits: &HashMap<String, Arc<Loaded>>,
) -> Targets {
    let mut targets = Targets {
        overrides: HashMap::new(),
        retained: memory.retained.iter().map(|r| r.key.clone()).collect(),
        frozen: HashMap::new(),
        jobs: job_records(memory),
        manual_runs: Vec::new(),
        waiting: HashMap::new(),
    };
    for Want { key, commit: sha, template } in wanted {
        let commit = if sha == desired.commit.sha { None } else { commits.get(&sha).cloned() };
        let given = template_at(commit.as_deref().unwrap_or(desired), &key);
        match template {
            Some(template) if given.as_deref() != Some(template.as_str()) => {
                let reason = if template.is_empty() {
                    "the plan being carried out has no step for it; it is left as it runs until a new plan is made"
                        .to_owned()
                } else {
                    format!(
                        "the plan being carried out runs its pod template {template} of commit {}, but that commit now gives {}; it is left as it runs",
                        &sha[..sha.len().min(7)],
                        given.as_deref().unwrap_or("nothing")
                    )
                };
                targets.frozen.insert(key, reason);
            }
            _ => {
                if let Some(commit) = commit {
                    targets.overrides.insert(key, commit);
                }
            }
        }
    }
    targets
}

/// The commit's PreSync hooks that have not completed for their spec, with the reason the rest
/// of the commit waits; `None` when there are none (the commit applies as a whole).
pub fn pre_sync_pending(memory: &Memory, desired: &Loaded) -> Option<String> {
    let mut running = Vec::new();
    let mut failed = Vec::new();
    for hook in desired.resources.iter().filter(|r| r.is_hook(crate::manifest::Hook::PreSync)) {
        let template = template_at(desired, &hook.key);
        let run = memory
            .revisions
            .get(&hook.key)
            .and_then(|h| h.iter().rev().find(|r| Some(&r.spec_hash) == template.as_ref()));
        match run.map(|r| (r.outcome, &r.reason)) {
            Some((Outcome::Healthy, _)) => {}
            Some((Outcome::Failed, reason)) => failed.push(format!("{}: {reason}", hook.key)),
            _ => running.push(hook.key.to_string()),
        }
    }
    let short = desired.commit.short();
    if !failed.is_empty() {
        return Some(format!(
            "the PreSync hook failed ({}); nothing else of commit {short} is applied, and what ran before keeps running",
            failed.join("; ")
        ));
    }
    (!running.is_empty()).then(|| format!("waits for the PreSync hook {} of commit {short}", running.join(", ")))
}

/// Holds the commit's workloads while its PreSync hooks run: each workload the applied commit
/// `base` runs stays at that commit's spec, a new one (or a new CronJob) does not start, and one
/// the commit removes keeps running. The hooks themselves run.
pub fn hold_for_hooks(desired: &Loaded, base: Option<&Arc<Loaded>>, reason: &str, targets: &mut Targets) {
    let in_base = |key: &ObjectKey| base.is_some_and(|b| b.resources.binary_search_by(|r| r.key.cmp(key)).is_ok());
    for resource in desired.resources.iter() {
        let key = &resource.key;
        let runs = key.kind.is_workload() || key.kind == Kind::CronJob;
        if !runs || resource.is_hook(crate::manifest::Hook::PreSync) || targets.overrides.contains_key(key) {
            continue;
        }
        match base.filter(|_| in_base(key)) {
            Some(base) if key.kind.is_workload() => {
                targets.overrides.insert(key.clone(), base.clone());
            }
            // A CronJob the applied commit has goes on with its schedule.
            Some(_) => {}
            None => {
                targets.waiting.insert(key.clone(), reason.to_owned());
            }
        }
    }
    if let Some(base) = base {
        for resource in base.resources.iter().filter(|r| r.key.kind.is_workload()) {
            if desired.resources.binary_search_by(|r| r.key.cmp(&resource.key)).is_err() {
                targets.retained.insert(resource.key.clone());
            }
        }
    }
}

/// Each Job's latest run, from its revisions: a spec that finished healthy or failed is not
/// run again.
fn job_records(memory: &Memory) -> HashMap<ObjectKey, crate::apply::job::JobRecord> {
    memory
        .revisions
        .iter()
        .filter(|(key, _)| key.kind == Kind::Job)
        .filter_map(|(key, history)| {
            let latest = history.last()?;
            let finished = match latest.outcome {
                Outcome::Progressing => None,
                outcome => Some((
                    latest.finished_at.unwrap_or(latest.started_at),
                    outcome == Outcome::Failed,
                    latest.reason.clone(),
                )),
            };
            let record = crate::apply::job::JobRecord {
                spec_hash: latest.spec_hash.clone(),
                commit: latest.commit.sha.clone(),
                started_at: latest.started_at,
                finished,
            };
            Some((key.clone(), record))
        })
        .collect()
}

/// The pod template hash of workload `key` at `commit`, when it declares it.
pub fn template_at(commit: &Loaded, key: &ObjectKey) -> Option<String> {
    let index = commit.resources.binary_search_by(|r| r.key.cmp(key)).ok()?;
    Some(plan::rollout::rollout_hash(&commit.resources[index], &commit.resources))
}

/// What the nodes running the pass's targets say of the commit being applied: a verdict on
/// each rolling revision (healthy when complete, failed when its pods crash-loop or the
/// progress deadline passes), the commit's outcome, and the applied objects once everything
/// is complete.
pub fn judge(memory: &Memory, desired: &Loaded, targets: &Targets, summary: &ReconcileSummary, now: i64) -> Decision {
    let mut decision = Decision::default();
    let mut verdicts: HashMap<&ObjectKey, (Outcome, String)> = HashMap::new();
    for workload in &summary.workloads {
        // A workload that waits (for the PreSync hooks, or a PostSync hook for the rest) has
        // not started: no deadline runs for it yet.
        if targets.overrides.contains_key(&workload.key)
            || targets.frozen.contains_key(&workload.key)
            || workload.waiting.is_some()
        {
            continue;
        }
        let Some(latest) = memory.revisions.get(&workload.key).and_then(|h| h.last()) else { continue };
        if latest.outcome != Outcome::Progressing {
            continue;
        }
        let deadline = desired
            .resources
            .binary_search_by(|r| r.key.cmp(&workload.key))
            .ok()
            .and_then(|i| match &desired.resources[i].object {
                Object::Deployment(d) => d.spec.progress_deadline_seconds,
                _ => None,
            })
            .unwrap_or(PROGRESS_DEADLINE_SECONDS);
        // A commit held for its PreSync hooks starts rolling when they completed.
        let started = match &memory.hooks_done {
            Some((sha, at)) if *sha == latest.commit.sha => latest.started_at.max(*at),
            _ => latest.started_at,
        };
        let Some((outcome, reason)) = verdict(workload, now - started, deadline) else { continue };
        if outcome == Outcome::Failed {
            decision.events.push(Event::RolloutFailed {
                workload: workload.key.clone(),
                commit: latest.commit.short().to_owned(),
                reason: reason.clone(),
            });
        }
        decision.events.push(Event::RolloutFinished { outcome, seconds: now - latest.started_at });
        decision.changes.push(Change::FinishRevision {
            key: workload.key.clone(),
            commit: latest.commit.sha.clone(),
            outcome,
            reason: reason.clone(),
            at: now,
        });
        verdicts.insert(&workload.key, (outcome, reason));
    }
    let degraded: Vec<String> = summary
        .workloads
        .iter()
        .filter_map(|w| {
            let (outcome, reason) = match verdicts.get(&w.key) {
                Some((outcome, reason)) => (*outcome, reason.as_str()),
                None => memory.revisions.get(&w.key)?.last().map(|r| (r.outcome, r.reason.as_str()))?,
            };
            (outcome == Outcome::Failed).then(|| format!("{}: {reason}", w.key))
        })
        .collect();
    // Workloads need a Ready node to say they run; objects alone (ConfigMaps, Services) do not.
    let complete = summary.complete() && (summary.ready_nodes > 0 || summary.workloads.is_empty());
    let (outcome, reason) = if !degraded.is_empty() {
        (SyncOutcome::Degraded, degraded.join("; "))
    } else if complete {
        (SyncOutcome::Synced, String::new())
    } else {
        (SyncOutcome::Progressing, String::new())
    };
    let sha = desired.commit.sha.clone();
    if memory.sync_outcome != Some(outcome) {
        let finished = outcome.is_final().then_some(now);
        decision.changes.push(Change::SyncOutcome { commit: sha.clone(), outcome, reason, finished });
        if outcome.is_final() {
            decision.events.push(Event::Finished(outcome));
            if let Some(adopted) = memory.adopted_at {
                decision.events.push(Event::SyncTook { outcome, seconds: now - adopted });
            }
        }
        if outcome == SyncOutcome::Synced {
            decision
                .events
                .push(Event::Synced { commit: desired.commit.short().to_owned(), committed_at: desired.commit.time });
        }
    }
    if complete && !memory.applied_recorded {
        let resources = applied_resources(memory, desired, targets);
        decision.changes.push(Change::Applied { commit: desired.commit.clone(), resources, at: now });
    }
    decision
}

/// What runs once a commit is complete: its objects, with held workloads at their held spec
/// and kept objects as they were applied.
fn applied_resources(memory: &Memory, desired: &Loaded, targets: &Targets) -> Vec<Arc<Resource>> {
    let mut resources: Vec<Arc<Resource>> = desired
        .resources
        .iter()
        .map(|r| {
            targets.overrides.get(&r.key).and_then(|c| c.resources.iter().find(|o| o.key == r.key)).unwrap_or(r).clone()
        })
        .collect();
    let declared: BTreeSet<&ObjectKey> = resources.iter().map(|r| &r.key).collect::<BTreeSet<_>>();
    let kept: Vec<Arc<Resource>> = memory.retained.iter().filter(|r| !declared.contains(&r.key)).cloned().collect();
    resources.extend(kept);
    resources.sort_by(|a, b| a.key.cmp(&b.key));
    resources
}
