//! plan: what it takes to go from the observed state to the desired one, as data.
//!
//! [`plan`] is a pure function of the desired and observed objects: no I/O, no async, no clock,
//! no database. For each object it says create, update, delete or unchanged, which fields
//! changed, what rolls (how many replicas restart, in which batches under the strategy), and the
//! risks a reviewer should see first. [`render`] turns a [`Plan`] into text, markdown or JSON.
//! Secret values never reach a plan: objects arrive redacted, with digests to compare.

pub mod render;
pub mod rollout;
pub mod schedule;

use crate::manifest::types::*;
use crate::manifest::{Kind, Object, ObjectKey, Resource, SENSITIVE};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::sync::Arc;

/// One side of a plan: a set of objects and what to call it.
#[derive(Debug, Clone)]
pub struct State {
    /// A commit sha, or a description such as `observed state`.
    pub revision: String,
    /// A line to show beside the revision, such as the commit message.
    pub title: String,
    /// Shared with the loaded commit it may come from: taking a side clones one pointer.
    pub resources: Arc<[Arc<Resource>]>,
    /// The rollout of each workload, when computed with the resources (which are then sorted
    /// by key); a plan computes what is missing.
    pub rollouts: rollout::Rollouts,
}

impl State {
    /// A state whose rollouts the plan computes.
    pub fn new(
        revision: impl Into<String>,
        title: impl Into<String>,
        resources: impl Into<Arc<[Arc<Resource>]>>,
    ) -> State {
        State {
            revision: revision.into(),
            title: title.into(),
            resources: resources.into(),
            rollouts: rollout::Rollouts::default(),
        }
    }

    /// The resources in key order, with their rollouts when this state carries them.
    fn sorted(&self) -> (std::borrow::Cow<'_, [Arc<Resource>]>, Option<&rollout::Rollouts>) {
        if self.rollouts.fits(&self.resources) {
            debug_assert!(self.resources.is_sorted_by(|a, b| a.key <= b.key));
            return (std::borrow::Cow::Borrowed(&self.resources), Some(&self.rollouts));
        }
        (sorted(&self.resources), None)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Create,
    Update,
    Delete,
    Unchanged,
}

/// How much a risk deserves a reviewer's attention. Ordered: worse compares greater.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RiskLevel {
    Low,
    Medium,
    High,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Risk {
    pub level: RiskLevel,
    pub message: String,
}

/// How a workload's replicas change; in JSON, the variant's name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum RolloutStrategy {
    /// A new workload: its replicas start.
    Create,
    /// New pods replace old ones under maxSurge and maxUnavailable.
    RollingUpdate,
    /// Every old pod stops before the new ones start.
    Recreate,
    /// A bare Pod (or a DaemonSet pod) stops and starts again with the new spec.
    Replace,
    /// The same template at another number of replicas.
    Scale,
    /// A DaemonSet under `OnDelete`: a pod takes the new template when it is deleted.
    OnDelete,
    /// The workload goes: its replicas stop.
    Delete,
    /// The workload goes from Git but keeps running (`berth.dev/prune: "false"`).
    Keep,
}

/// What happens to a workload's replicas.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rollout {
    pub strategy: RolloutStrategy,
    /// Desired replicas after the change; `None` for a DaemonSet (one per matching node).
    pub replicas: Option<i32>,
    /// Replicas that are stopped and started again with the new template.
    pub restarts: Option<i32>,
    /// Restart batch sizes, in order.
    pub batches: Vec<i32>,
    pub description: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Change {
    pub action: Action,
    pub kind: Kind,
    pub namespace: String,
    pub name: String,
    /// Where the desired object is declared (where it was, for a delete).
    pub file: String,
    pub line: u32,
    /// Paths of the fields that differ, such as `spec.template.spec.containers[0].image`.
    pub fields: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rollout: Option<Rollout>,
    pub risks: Vec<Risk>,
    /// A unified diff of the object as YAML, secret values redacted.
    pub diff: String,
    /// A delete that does not happen: the object carries `berth.dev/prune: "false"`.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub kept: bool,
    /// The earlier commit whose spec an update brings back, as after a `git revert`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restores: Option<Restored>,
    /// ConfigMap and Secret values the workload's pods read that change, such as
    /// `ConfigMap shop/settings key GREETING changed`: they roll the workload, unless it carries
    /// `berth.dev/restart-on-config-change: "false"`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub config_changes: Vec<String>,
    /// The workload opted out of rolling on config changes: its pods keep the old values.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub config_held: bool,
    /// `PreSync` or `PostSync` for a sync hook Job: the plan lists PreSync hooks first and
    /// PostSync hooks last, in the order they run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hook: Option<&'static str>,
    /// Claims whose data this change deletes (a StatefulSet whose retention policy says
    /// Delete, deleted or scaled down): the commit waits for an approval.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub deletes_data: Vec<String>,
}

/// An earlier commit whose version of an object a change brings back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Restored {
    pub commit: String,
    pub message: String,
}

/// Names, for each update, the earlier commit that introduced the spec it brings back.
/// `earlier(key, hash)` looks a spec up in the history the caller has (revisions or Git).
pub fn note_restores<C: Into<Restored>>(
    plan: &mut Plan,
    desired: &[Arc<Resource>],
    mut earlier: impl FnMut(&ObjectKey, &str) -> Option<C>,
) {
    for change in plan.changes.iter_mut().filter(|c| c.action == Action::Update) {
        let key = change.key();
        let Ok(index) = desired.binary_search_by(|r| r.key.cmp(&key)) else { continue };
        change.restores = earlier(&key, &desired[index].hash).map(Into::into);
    }
}

impl Change {
    pub fn key(&self) -> ObjectKey {
        ObjectKey { kind: self.kind, namespace: self.namespace.clone(), name: self.name.clone() }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    pub create: usize,
    pub update: usize,
    pub delete: usize,
    pub unchanged: usize,
}

impl Summary {
    pub fn has_changes(&self) -> bool {
        self.create + self.update + self.delete > 0
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlanRisk {
    pub level: RiskLevel,
    pub object: String,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Plan {
    pub format_version: u32,
    pub from: String,
    pub from_title: String,
    pub to: String,
    pub to_title: String,
    pub summary: Summary,
    /// Every risk of every change, worst first.
    pub risks: Vec<PlanRisk>,
    /// One entry per object that is created, updated or deleted, in apply order; unchanged
    /// objects are only counted.
    pub changes: Vec<Change>,
    /// Workloads that stay at another commit's pod template whatever this plan says, and why:
    /// a `berth rollback` pin, or a rollout that failed. Only a plan made against what runs has
    /// them.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub held: Vec<Held>,
    /// The program: what happens to every workload's pods, in key order. The control loop
    /// carries out exactly these steps for the commit the plan is applied for.
    pub steps: Vec<WorkloadStep>,
    /// Where the first pods of each workload that starts some would go, as the scheduler says
    /// it when the plan is made against the nodes (`schedule::forecast`). Not part of the
    /// program, nor of `planDigest`: each batch is placed when it starts, against the nodes as
    /// they are then.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub placements: Vec<schedule::Forecast>,
    /// Changes that cannot be carried out, as Kubernetes refuses them (a StatefulSet's claim
    /// templates): a plan with any is never applied.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub refusals: Vec<String>,
}

/// What happens to one workload's pods when a plan is carried out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StepAction {
    /// A new workload: its pods start.
    Create,
    /// A new pod template: new pods replace the old ones, under the workload's strategy.
    Roll,
    /// The same pod template at another number of replicas.
    Scale,
    /// The pods stay as they are.
    Keep,
    /// Held at another commit's pod template (see `held`).
    Held,
    /// Gone from Git: its pods stop.
    Delete,
    /// Gone from Git but annotated `berth.dev/prune: "false"`: its pods stay.
    Orphan,
}

/// One workload's step: the commit whose pod template its pods run and that template's hash
/// (the middle of the pods' names), at how many replicas.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadStep {
    pub kind: Kind,
    pub namespace: String,
    pub name: String,
    pub action: StepAction,
    pub commit: String,
    pub template: String,
    /// `None` for a DaemonSet (one per matching node) and a Pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,
    /// Where the workload goes back to when the rollout of this template fails: its newest
    /// healthy revision with another template. Only a plan made against what runs has it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_failure: Option<Fallback>,
}

impl WorkloadStep {
    pub fn key(&self) -> ObjectKey {
        ObjectKey { kind: self.kind, namespace: self.namespace.clone(), name: self.name.clone() }
    }
}

/// A commit's pod template a workload falls back to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Fallback {
    pub commit: String,
    pub template: String,
}

/// A workload held at an earlier commit's pod template.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Held {
    pub kind: Kind,
    pub namespace: String,
    pub name: String,
    /// The commit whose pod template it runs.
    pub commit: String,
    pub reason: String,
}

/// Compares the desired objects with the observed ones.
pub fn plan(desired: &State, observed: &State) -> Plan {
    let (desired_sorted, desired_rollouts) = desired.sorted();
    let (observed_sorted, observed_rollouts) = observed.sorted();
    let mut changes = Vec::new();
    let mut summary = Summary::default();
    // Both sides in key order: one merge pass pairs them up, and the changes come out in
    // apply order.
    let (mut d, mut o) = (0, 0);
    let mut steps = Steps::default();
    // What a side does not carry is computed here, its config index made only then.
    let desired_side = Side::new(&desired_sorted, desired_rollouts);
    let observed_side = Side::new(&observed_sorted, observed_rollouts);
    let changed_configs = std::cell::OnceCell::new();
    let mut refusals = Vec::new();
    loop {
        let change = match (desired_sorted.get(d), observed_sorted.get(o)) {
            (None, None) => break,
            (Some(new), Some(old)) if Arc::ptr_eq(new, old) || new.key == old.key => {
                let same = Arc::ptr_eq(new, old) || old.hash == new.hash;
                let (at_desired, at_observed) = (d, o);
                d += 1;
                o += 1;
                if !new.key.kind.is_workload() {
                    if same {
                        summary.unchanged += 1;
                        continue;
                    }
                    updated(old, new, Vec::new())
                } else {
                    if let Some(refusal) = refused_update(old, new) {
                        refusals.push(refusal);
                    }
                    // What each side's pods read, as one digest: equal digests, equal values.
                    // The same object reading nothing that changed reads the same values: when
                    // the observed side carries no rollouts, the desired one serves both.
                    let after = desired_side.rollout(at_desired, new);
                    let before = if same
                        && observed_side.rollouts.is_none()
                        && !rollout::reads_any(
                            new,
                            changed_configs.get_or_init(|| desired_side.configs().changed(observed_side.configs())),
                        ) {
                        after.clone()
                    } else {
                        observed_side.rollout(at_observed, old)
                    };
                    steps.pair(old, &before, new, &after);
                    let config_changes = if before.config == after.config {
                        Vec::new()
                    } else {
                        config_changes(old, &observed_sorted, new, &desired_sorted)
                    };
                    if same && config_changes.is_empty() && !new.runs_every_sync() {
                        summary.unchanged += 1;
                        continue;
                    }
                    updated(old, new, config_changes)
                }
            }
            (Some(new), None) => {
                steps.created(new, &desired_side, d);
                d += 1;
                created(new)
            }
            (Some(new), Some(old)) if new.key < old.key => {
                steps.created(new, &desired_side, d);
                d += 1;
                created(new)
            }
            (_, Some(old)) => {
                steps.deleted(old, &observed_side, o);
                o += 1;
                deleted(old)
            }
        };
        match change.action {
            _ if change.kept => summary.unchanged += 1,
            Action::Create => summary.create += 1,
            Action::Update => summary.update += 1,
            Action::Delete => summary.delete += 1,
            Action::Unchanged => summary.unchanged += 1,
        }
        changes.push(change);
    }

    // Hooks in the order they run: PreSync first, PostSync last; the rest by key between.
    changes.sort_by_key(|c| match c.hook {
        Some("PreSync") => 0,
        Some(_) => 2,
        None => 1,
    });
    let mut risks = Vec::new();
    for change in &changes {
        for risk in &change.risks {
            risks.push(PlanRisk { level: risk.level, object: change.key().to_string(), message: risk.message.clone() });
        }
    }
    risks.sort_by_key(|risk| std::cmp::Reverse(risk.level));
    Plan {
        format_version: 1,
        from: observed.revision.clone(),
        from_title: observed.title.clone(),
        to: desired.revision.clone(),
        to_title: desired.title.clone(),
        summary,
        risks,
        changes,
        held: Vec::new(),
        placements: Vec::new(),
        steps: steps.finish(&desired.revision, &observed.revision),
        refusals,
    }
}

/// Why an update cannot be made, as Kubernetes refuses it: a StatefulSet's claim templates are
/// fixed once it exists, since the claims made from them hold data.
fn refused_update(old: &Resource, new: &Resource) -> Option<String> {
    let (Object::StatefulSet(before), Object::StatefulSet(after)) = (&old.object, &new.object) else { return None };
    if before.spec.volume_claim_templates == after.spec.volume_claim_templates {
        return None;
    }
    Some(format!(
        "{}: volumeClaimTemplates cannot change once the StatefulSet exists ({}:{}): the claims made from them hold data. \
         Revert the change, or give the StatefulSet a new name (its old claims stay, orphaned, until `berth delete pvc`)",
        new.key, new.file, new.pos.line
    ))
}

/// Every workload's step, desired ones and those Git no longer declares, gathered while the plan
/// pairs up both sides, each with its rollout hash computed once.
#[derive(Default)]
struct Steps {
    /// Steps at the desired commit, and those at the observed one (deleted or orphaned).
    desired: Vec<WorkloadStep>,
    observed: Vec<WorkloadStep>,
}

impl Steps {
    fn step(resource: &Resource, action: StepAction, template: String) -> WorkloadStep {
        WorkloadStep {
            kind: resource.key.kind,
            namespace: resource.key.namespace.clone(),
            name: resource.key.name.clone(),
            action,
            commit: String::new(),
            template,
            replicas: resource.object.replicas(),
            on_failure: None,
        }
    }

    /// A workload on both sides, with its rollout on each.
    fn pair(&mut self, old: &Resource, before: &rollout::Rollout, new: &Resource, after: &rollout::Rollout) {
        let same_inputs = old.template_hash == new.template_hash
            && old.restarts_on_config_change() == new.restarts_on_config_change()
            && before.config == after.config;
        // A hook that runs at every sync runs again at every commit, whatever changed.
        let action = if (!same_inputs && before.hash != after.hash) || new.runs_every_sync() {
            StepAction::Roll
        } else if old.object.replicas() != new.object.replicas() {
            StepAction::Scale
        } else {
            StepAction::Keep
        };
        self.desired.push(Self::step(new, action, after.hash.to_string()));
    }

    /// The object at `index` of the desired side, which the observed one lacks.
    fn created(&mut self, new: &Resource, side: &Side<'_>, index: usize) {
        if new.key.kind.is_workload() {
            let template = side.rollout(index, new).hash.to_string();
            self.desired.push(Self::step(new, StepAction::Create, template));
        }
    }

    /// The object at `index` of the observed side, which the desired one lacks.
    fn deleted(&mut self, old: &Resource, side: &Side<'_>, index: usize) {
        if old.key.kind.is_workload() {
            let action = if old.is_kept() { StepAction::Orphan } else { StepAction::Delete };
            let template = side.rollout(index, old).hash.to_string();
            self.observed.push(Self::step(old, action, template));
        }
    }

    /// The steps in key order, each naming the commit it runs at.
    fn finish(self, desired: &str, observed: &str) -> Vec<WorkloadStep> {
        let mut steps = Vec::with_capacity(self.desired.len() + self.observed.len());
        for (mut step, commit) in
            self.desired.into_iter().map(|s| (s, desired)).chain(self.observed.into_iter().map(|s| (s, observed)))
        {
            step.commit = commit.to_owned();
            steps.push(step);
        }
        steps.sort_by(|a, b| (a.kind, &a.namespace, &a.name).cmp(&(b.kind, &b.namespace, &b.name)));
        steps
    }
}

/// One side of a plan: its resources in key order, the rollouts it carries, and a config index
/// made the first time a rollout it does not carry is needed.
struct Side<'a> {
    resources: &'a [Arc<Resource>],
    rollouts: Option<&'a rollout::Rollouts>,
    configs: std::cell::OnceCell<rollout::ConfigIndex<'a>>,
}

impl<'a> Side<'a> {
    fn new(resources: &'a [Arc<Resource>], rollouts: Option<&'a rollout::Rollouts>) -> Side<'a> {
        Side { resources, rollouts, configs: std::cell::OnceCell::new() }
    }

    /// The rollout of `resource`, the workload at `index`.
    fn rollout(&self, index: usize, resource: &Resource) -> std::borrow::Cow<'a, rollout::Rollout> {
        match self.rollouts.and_then(|r| r.get(index)) {
            Some(rollout) => std::borrow::Cow::Borrowed(rollout),
            None => std::borrow::Cow::Owned(rollout::Rollout::of(resource, self.configs())),
        }
    }

    fn configs(&self) -> &rollout::ConfigIndex<'a> {
        self.configs.get_or_init(|| rollout::ConfigIndex::new(self.resources))
    }
}

/// The resources in key order; borrowed as they are when already sorted, as loaders give them.
fn sorted(resources: &[Arc<Resource>]) -> std::borrow::Cow<'_, [Arc<Resource>]> {
    if resources.is_sorted_by(|a, b| a.key <= b.key) {
        std::borrow::Cow::Borrowed(resources)
    } else {
        let mut owned = resources.to_vec();
        owned.sort_by(|a, b| a.key.cmp(&b.key));
        std::borrow::Cow::Owned(owned)
    }
}

fn change(action: Action, resource: &Resource) -> Change {
    Change {
        action,
        kind: resource.key.kind,
        namespace: resource.key.namespace.clone(),
        name: resource.key.name.clone(),
        file: resource.file.clone(),
        line: resource.pos.line,
        fields: Vec::new(),
        rollout: None,
        risks: Vec::new(),
        diff: String::new(),
        kept: false,
        restores: None,
        config_changes: Vec::new(),
        config_held: false,
        deletes_data: Vec::new(),
        hook: [crate::manifest::Hook::PreSync, crate::manifest::Hook::PostSync]
            .into_iter()
            .find(|hook| resource.is_hook(*hook))
            .map(crate::manifest::Hook::name),
    }
}

fn created(new: &Resource) -> Change {
    let mut created = change(Action::Create, new);
    created.diff = render::whole('+', &render::to_yaml(&new.canonical_value()));
    if let Some(replicas) = new.object.replicas() {
        created.rollout = Some(Rollout {
            strategy: RolloutStrategy::Create,
            replicas: Some(replicas),
            restarts: None,
            batches: Vec::new(),
            description: match &new.object {
                Object::StatefulSet(stateful_set) => stateful_start(&new.key.name, &stateful_set.spec, replicas),
                _ => format!("starts {}", count(replicas, "replica")),
            },
        });
    } else if new.key.kind == Kind::DaemonSet {
        created.rollout = Some(Rollout {
            strategy: RolloutStrategy::Create,
            replicas: None,
            restarts: None,
            batches: Vec::new(),
            description: "starts one replica on every matching node".into(),
        });
    } else if let Object::CronJob(cron_job) = &new.object {
        let spec = &cron_job.spec;
        created.rollout = Some(Rollout {
            strategy: RolloutStrategy::Create,
            replicas: None,
            restarts: None,
            batches: Vec::new(),
            description: format!(
                "runs its Job on the schedule `{}` ({}){}: {}",
                spec.schedule,
                spec.time_zone.as_deref().unwrap_or("UTC"),
                if spec.suspend == Some(true) { ", suspended" } else { "" },
                job_shape(&spec.job_template.spec)
            ),
        });
    } else if let Object::Job(job) = &new.object {
        created.rollout = Some(Rollout {
            strategy: RolloutStrategy::Create,
            replicas: None,
            restarts: None,
            batches: Vec::new(),
            description: format!("runs the Job once: {}", job_shape(&job.spec)),
        });
    }
    created.risks = image_risks(None, &new.object);
    created.risks.extend(host_risks(None, new));
    created
}

/// A host folder a workload starts to mount is the node's own data in a container: high risk,
/// whatever the host-access policy lets through.
fn host_risks(old: Option<&Resource>, new: &Resource) -> Vec<Risk> {
    let Some(spec) = new.object.pod_spec() else { return Vec::new() };
    let before = old.and_then(|o| o.object.pod_spec());
    spec.volumes
        .iter()
        .filter_map(|volume| {
            let path = &volume.host_path.as_ref()?.path;
            let mounted_before =
                before.is_some_and(|b| b.volumes.iter().any(|v| v.host_path.as_ref().is_some_and(|h| &h.path == path)));
            if mounted_before {
                return None;
            }
            let mounts = spec.all_containers().flat_map(|c| &c.volume_mounts).filter(|m| m.name == volume.name);
            let writable = mounts.clone().any(|m| m.read_only != Some(true));
            Some(Risk {
                level: RiskLevel::High,
                message: format!(
                    "mounts the node's {path} ({}, volume `{}`): what is there on each node is the container's",
                    if writable { "writable" } else { "read-only" },
                    volume.name
                ),
            })
        })
        .collect()
}

/// How a Job runs, in words: what completes it and how many pods at a time.
fn job_shape(spec: &crate::manifest::types::JobSpec) -> String {
    let parallelism = spec.parallelism.unwrap_or(1);
    let indexed = spec.completion_mode == Some(crate::manifest::types::CompletionMode::Indexed);
    let what = match spec.completions {
        Some(n) if indexed => format!("indexes 0 to {} each succeed once", n - 1),
        Some(1) => "1 pod succeeds".to_owned(),
        Some(n) => format!("{} succeed", count(n, "pod")),
        None => "one pod succeeds (a work queue)".to_owned(),
    };
    let retries = match spec.backoff_limit.unwrap_or(6) {
        1 => "1 retry".to_owned(),
        n => format!("{n} retries"),
    };
    format!("{what}, {parallelism} at a time, up to {retries}")
}

fn deleted(old: &Resource) -> Change {
    let mut deleted = change(Action::Delete, old);
    deleted.diff = render::whole('-', &render::to_yaml(&old.canonical_value()));
    if old.is_kept() {
        deleted.kept = true;
        deleted.risks.push(Risk {
            level: RiskLevel::Low,
            message: format!(
                "kept: {} carries berth.dev/prune: \"false\", so it keeps running, no longer managed",
                old.key
            ),
        });
        deleted.rollout = old.object.replicas().map(|replicas| Rollout {
            strategy: RolloutStrategy::Keep,
            replicas: Some(replicas),
            restarts: None,
            batches: Vec::new(),
            description: "keeps running (berth.dev/prune: \"false\")".into(),
        });
        return deleted;
    }
    let what = match (old.key.kind, old.object.replicas()) {
        (Kind::Namespace, _) => format!("deletes namespace {}", old.key.name),
        (Kind::PersistentVolumeClaim, _) => format!(
            "deletes claim {}: its volume and the data in it stay on their node, orphaned, until `berth delete pvc {}`; the commit waits for an approval",
            old.key.qualified_name(),
            old.key.name
        ),
        (Kind::DaemonSet, _) => format!("deletes {}: its replica on every node stops", old.key),
        (_, Some(replicas)) if old.key.kind != Kind::Pod => {
            let verb = if replicas == 1 { "stops" } else { "stop" };
            format!("deletes {}: its {} {verb}", old.key, count(replicas, "replica"))
        }
        _ => format!("deletes {}", old.key),
    };
    let level = if old.key.kind.is_workload() || matches!(old.key.kind, Kind::Namespace | Kind::PersistentVolumeClaim) {
        RiskLevel::High
    } else {
        RiskLevel::Medium
    };
    deleted.risks.push(Risk { level, message: what });
    if let Object::StatefulSet(stateful_set) = &old.object {
        let policy = stateful_set.spec.persistent_volume_claim_retention_policy.as_ref();
        let deletes = policy.and_then(|p| p.when_deleted) == Some(crate::manifest::types::ClaimRetention::Delete);
        if deletes && !stateful_set.spec.volume_claim_templates.is_empty() {
            deleted.deletes_data =
                stateful_claims(&old.key.name, &stateful_set.spec, 0..stateful_set.spec.replicas.unwrap_or(1));
            deleted.risks.push(Risk {
                level: RiskLevel::High,
                message: format!(
                    "deletes the data of its claims ({}, and any of higher ordinals) once its pods stop (persistentVolumeClaimRetentionPolicy whenDeleted: Delete); the commit waits for an approval",
                    deleted.deletes_data.join(", ")
                ),
            });
        }
        for template in stateful_set.spec.volume_claim_templates.iter().filter(|_| !deletes) {
            deleted.risks.push(Risk {
                level: RiskLevel::Medium,
                message: format!(
                    "its claims {}-{}-N and their data are kept, orphaned, until `berth delete pvc`",
                    template.metadata.name, old.key.name
                ),
            });
        }
    }
    if let Some(spec) = old.object.pod_spec() {
        for volume in spec.volumes.iter().filter(|v| v.empty_dir.is_some()) {
            deleted.risks.push(Risk {
                level: RiskLevel::Medium,
                message: format!("emptyDir volume `{}` and the data in it are discarded", volume.name),
            });
        }
    }
    if old.object.replicas().is_some() || old.key.kind == Kind::DaemonSet {
        deleted.rollout = Some(Rollout {
            strategy: RolloutStrategy::Delete,
            replicas: Some(0),
            restarts: None,
            batches: Vec::new(),
            description: match old.object.replicas() {
                Some(replicas) => format!("stops {}", count(replicas, "replica")),
                None => "stops the replica on every node".into(),
            },
        });
    }
    deleted
}

/// The values a workload's pods read that differ between the two sides, said per key.
fn config_changes(
    old: &Resource,
    observed: &[Arc<Resource>],
    new: &Resource,
    desired: &[Arc<Resource>],
) -> Vec<String> {
    let namespace = &new.key.namespace;
    let before = old.config_inputs(crate::manifest::digests_in(observed, namespace));
    let after = new.config_inputs(crate::manifest::digests_in(desired, namespace));
    let mut inputs: Vec<&crate::manifest::ConfigInput> = before.keys().chain(after.keys()).collect();
    inputs.sort();
    inputs.dedup();
    inputs
        .into_iter()
        .filter_map(|input| {
            let what = match (before.get(input).cloned().flatten(), after.get(input).cloned().flatten()) {
                (a, b) if a == b => return None,
                (None, Some(_)) => "is new",
                (Some(_), None) => "is gone",
                _ => "changed",
            };
            Some(format!("{} {namespace}/{} key {} {what}", input.kind, input.name, input.key))
        })
        .collect()
}

fn updated(old: &Resource, new: &Resource, config_changes: Vec<String>) -> Change {
    let mut updated = change(Action::Update, new);
    let rolls_for_config = !config_changes.is_empty() && new.restarts_on_config_change();
    updated.config_held = !config_changes.is_empty() && !rolls_for_config;
    updated.config_changes = config_changes;
    let old_canonical = &old.canonical_value();
    let mut new_canonical = new.canonical_value();
    if new.key.kind == Kind::Secret {
        mark_changed_secrets(old, new, &mut new_canonical);
    }
    let mut fields = Vec::new();
    changed_fields(old_canonical, &new_canonical, &mut String::new(), &mut fields);
    updated.fields = fields;
    updated.diff = render::diff(&render::to_yaml(old_canonical), &render::to_yaml(&new_canonical));
    // Only the values changed, and the workload keeps its pods when they do: nothing rolls.
    updated.rollout =
        if old.hash == new.hash && !rolls_for_config { None } else { rollout(old, new, rolls_for_config) };
    updated.risks = update_risks(old, new, updated.rollout.as_ref());
    updated.risks.extend(host_risks(Some(old), new));
    if let (Object::StatefulSet(stateful_set), Some(before), Some(after)) =
        (&new.object, old.object.replicas(), new.object.replicas())
    {
        let policy = stateful_set.spec.persistent_volume_claim_retention_policy.as_ref();
        if after < before && policy.and_then(|p| p.when_scaled) == Some(crate::manifest::types::ClaimRetention::Delete)
        {
            updated.deletes_data = stateful_claims(&new.key.name, &stateful_set.spec, after..before);
            updated.risks.push(Risk {
                level: RiskLevel::High,
                message: format!(
                    "deletes the data of {} once their pods stop (persistentVolumeClaimRetentionPolicy whenScaled: Delete); the commit waits for an approval",
                    updated.deletes_data.join(", ")
                ),
            });
        }
    }
    updated
}

/// The claims of ordinals `ordinals` of a StatefulSet: `data-db-1` for template `data`.
fn stateful_claims(
    name: &str,
    spec: &crate::manifest::types::StatefulSetSpec,
    ordinals: std::ops::Range<i32>,
) -> Vec<String> {
    let mut claims = Vec::new();
    for ordinal in ordinals {
        for template in &spec.volume_claim_templates {
            claims.push(format!("{}-{name}-{ordinal}", template.metadata.name));
        }
    }
    claims
}

/// Shows a changed secret value as `(sensitive value changed)` on the new side; values never
/// leave the digests.
fn mark_changed_secrets(old: &Resource, new: &Resource, new_canonical: &mut Value) {
    let Some(Value::Object(data)) = new_canonical.get_mut("data") else { return };
    for (key, value) in data.iter_mut() {
        let before = old.sensitive_digests.get(key);
        if before.is_some() && before != new.sensitive_digests.get(key) {
            *value = Value::String("(sensitive value changed)".into());
        }
    }
}

/// Collects the paths where two canonical values differ; lists of equal length are compared
/// item by item, others as a whole.
fn changed_fields(old: &Value, new: &Value, path: &mut String, out: &mut Vec<String>) {
    if old == new {
        return;
    }
    match (old, new) {
        (Value::Object(a), Value::Object(b)) => {
            let mut keys: Vec<&String> = a.keys().chain(b.keys().filter(|k| !a.contains_key(*k))).collect();
            keys.sort();
            for key in keys {
                let length = path.len();
                crate::manifest::de::push_key(path, key);
                changed_fields(a.get(key).unwrap_or(&Value::Null), b.get(key).unwrap_or(&Value::Null), path, out);
                path.truncate(length);
            }
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => {
            for (index, (x, y)) in a.iter().zip(b).enumerate() {
                let length = path.len();
                path.push_str(&format!("[{index}]"));
                changed_fields(x, y, path, out);
                path.truncate(length);
            }
        }
        _ => out.push(path.clone()),
    }
}

fn rollout(old: &Resource, new: &Resource, config_changed: bool) -> Option<Rollout> {
    let kind = new.key.kind;
    if !kind.is_workload() {
        return None;
    }
    let template_changed = kind != Kind::Pod && (old.template_hash != new.template_hash || config_changed);
    let (old_value, new_value) = (old.canonical_value(), new.canonical_value());
    let selector_changed = old_value.pointer("/spec/selector") != new_value.pointer("/spec/selector");
    let old_replicas = old.object.replicas();
    let replicas = new.object.replicas();

    if kind == Kind::Pod {
        return Some(Rollout {
            strategy: RolloutStrategy::Replace,
            replicas: Some(1),
            restarts: Some(1),
            batches: vec![1],
            description: "the pod is stopped and started again with the new spec".into(),
        });
    }
    if let Object::Job(job) = &new.object {
        return Some(if template_changed || new.runs_every_sync() {
            Rollout {
                strategy: RolloutStrategy::Replace,
                replicas: None,
                restarts: None,
                batches: Vec::new(),
                description: if template_changed {
                    format!(
                        "runs the Job again with its new spec ({}); the earlier run's pods stop, a running one included",
                        job_shape(&job.spec)
                    )
                } else {
                    format!(
                        "runs the hook again, as at every sync (berth.dev/hook-policy: every-sync): {}",
                        job_shape(&job.spec)
                    )
                },
            }
        } else {
            Rollout {
                strategy: RolloutStrategy::Scale,
                replicas: None,
                restarts: Some(0),
                batches: Vec::new(),
                description: "changes how the current run goes (parallelism, suspend, deadlines, backoffLimit, TTL); the Job does not run again".into(),
            }
        });
    }
    if selector_changed {
        let restarts = replicas;
        return Some(Rollout {
            strategy: RolloutStrategy::Replace,
            replicas,
            restarts,
            batches: restarts.into_iter().collect(),
            description: match replicas {
                Some(n) => format!("selector changed: all {} are replaced at once", count(n, "replica")),
                None => "selector changed: the replica on every node is replaced at once".into(),
            },
        });
    }
    if template_changed {
        return Some(match &new.object {
            Object::Deployment(deployment) => {
                let strategy = deployment.spec.strategy.as_ref();
                let replicas = replicas.unwrap_or(1);
                let existing = old_replicas.unwrap_or(1);
                if strategy.and_then(|s| s.strategy_type) == Some(DeploymentStrategyType::Recreate) {
                    let restarts = existing.min(replicas);
                    Rollout {
                        strategy: RolloutStrategy::Recreate,
                        replicas: Some(replicas),
                        restarts: Some(restarts),
                        batches: if restarts > 0 { vec![restarts] } else { Vec::new() },
                        description: format!(
                            "Recreate: all {} stop before the new ones start",
                            count(existing, "replica")
                        ),
                    }
                } else {
                    rolling(replicas, existing, strategy.and_then(|s| s.rolling_update.as_ref()))
                }
            }
            Object::ReplicaSet(_) | Object::ReplicationController(_) => {
                rolling(replicas.unwrap_or(1), old_replicas.unwrap_or(1), None)
            }
            Object::StatefulSet(stateful_set) => stateful_update(&new.key.name, &stateful_set.spec, old_replicas),
            Object::DaemonSet(daemon_set) => {
                let strategy = daemon_set.spec.update_strategy.as_ref();
                if strategy.and_then(|s| s.strategy_type) == Some(DaemonSetStrategyType::OnDelete) {
                    Rollout {
                        strategy: RolloutStrategy::OnDelete,
                        replicas: None,
                        restarts: Some(0),
                        batches: Vec::new(),
                        description: "OnDelete: replicas take the new template only when they are deleted".into(),
                    }
                } else {
                    let unavailable = strategy
                        .and_then(|s| s.rolling_update.as_ref())
                        .and_then(|r| r.max_unavailable.as_ref())
                        .map_or("1".to_owned(), ToString::to_string);
                    Rollout {
                        strategy: RolloutStrategy::RollingUpdate,
                        replicas: None,
                        restarts: None,
                        batches: Vec::new(),
                        description: format!(
                            "rolling update: the replica on every matching node restarts, {unavailable} node(s) at a time"
                        ),
                    }
                }
            }
            _ => return None,
        });
    }
    match (old_replicas, replicas) {
        (Some(before), Some(after)) if before != after && kind == Kind::StatefulSet => Some(Rollout {
            strategy: RolloutStrategy::Scale,
            replicas: Some(after),
            restarts: Some(0),
            batches: Vec::new(),
            description: {
                let name = &new.key.name;
                let ordered = !matches!(&new.object, Object::StatefulSet(s) if s.spec.pod_management_policy == Some(crate::manifest::types::PodManagementPolicy::Parallel));
                if after > before {
                    format!(
                        "scales from {before} to {after}: {} start{}, with the claims they had",
                        ordinals(name, before..after),
                        if ordered { " in order, each Ready before the next" } else { " at once" }
                    )
                } else {
                    let deletes = matches!(&new.object, Object::StatefulSet(s) if s.spec.persistent_volume_claim_retention_policy.as_ref().and_then(|p| p.when_scaled) == Some(crate::manifest::types::ClaimRetention::Delete));
                    format!(
                        "scales from {before} to {after}: {} stop{}; {}",
                        ordinals(name, (after..before).rev()),
                        if ordered { ", highest first, one at a time" } else { " at once" },
                        if deletes {
                            "their claims are deleted once they stop"
                        } else {
                            "their claims and data are kept"
                        }
                    )
                }
            },
        }),
        (Some(before), Some(after)) if before != after => Some(Rollout {
            strategy: RolloutStrategy::Scale,
            replicas: Some(after),
            restarts: Some(0),
            batches: Vec::new(),
            description: if after > before {
                format!("scales from {before} to {after}: {} start, none restart", count(after - before, "replica"))
            } else {
                format!("scales from {before} to {after}: {} stop, none restart", count(before - after, "replica"))
            },
        }),
        _ => None,
    }
}

/// `db-0, db-1, db-2` for those ordinals of StatefulSet `name` (the first ones and the last
/// when there are many).
fn ordinals(name: &str, range: impl Iterator<Item = i32>) -> String {
    let all: Vec<String> = range.map(|o| format!("{name}-{o}")).collect();
    if all.len() > 6 { format!("{}, ... {}", all[..3].join(", "), all[all.len() - 1]) } else { all.join(", ") }
}

/// How a new StatefulSet starts: its ordinals in order (or at once), with their claims.
fn stateful_start(name: &str, spec: &crate::manifest::types::StatefulSetSpec, replicas: i32) -> String {
    use crate::manifest::types::PodManagementPolicy;
    use std::fmt::Write as _;
    let how = if spec.pod_management_policy == Some(PodManagementPolicy::Parallel) {
        "at once"
    } else {
        "in order, each Ready before the next"
    };
    let mut text = format!("starts {} {how}: {}", count(replicas, "replica"), ordinals(name, 0..replicas));
    for template in &spec.volume_claim_templates {
        let size = template.spec.resources.as_ref().and_then(|r| r.requests.get("storage"));
        let _ = write!(
            text,
            "; each with claim {}-{name}-N{}, on the node of its first pod",
            template.metadata.name,
            size.map(|s| format!(" ({})", s.as_str())).unwrap_or_default()
        );
    }
    text
}

/// A StatefulSet's new template: replaced from the highest ordinal down to the partition, one
/// (or maxUnavailable) at a time; or, OnDelete, only as pods are made again.
fn stateful_update(name: &str, spec: &crate::manifest::types::StatefulSetSpec, existing: Option<i32>) -> Rollout {
    use crate::manifest::types::StatefulSetStrategyType;
    use std::fmt::Write as _;
    let replicas = spec.replicas.unwrap_or(1);
    let strategy = spec.update_strategy.as_ref();
    if strategy.and_then(|s| s.strategy_type) == Some(StatefulSetStrategyType::OnDelete) {
        return Rollout {
            strategy: RolloutStrategy::OnDelete,
            replicas: Some(replicas),
            restarts: Some(0),
            batches: Vec::new(),
            description: "OnDelete: pods take the new template only when they are made again".into(),
        };
    }
    let rolling = strategy.and_then(|s| s.rolling_update.as_ref());
    let partition = rolling.and_then(|r| r.partition).unwrap_or(0).clamp(0, replicas);
    let at_once = rolling.and_then(|r| r.max_unavailable.as_ref()).map_or("1".to_owned(), ToString::to_string);
    let restarts = existing.unwrap_or(replicas).min(replicas) - partition;
    let mut description = format!(
        "rolling update, highest ordinal first: {} restart{}, {at_once} at a time, each Ready before the next",
        ordinals(name, (partition..partition + restarts.max(0)).rev()),
        if restarts == 1 { "s" } else { "" },
    );
    if partition > 0 {
        let _ = write!(
            description,
            "; {} below the partition keep{} the old template",
            ordinals(name, 0..partition),
            if partition == 1 { "s" } else { "" }
        );
    }
    Rollout {
        strategy: RolloutStrategy::RollingUpdate,
        replicas: Some(replicas),
        restarts: Some(restarts.max(0)),
        batches: vec![1; usize::try_from(restarts.max(0)).unwrap_or(0)],
        description,
    }
}

/// A rolling update of `replicas` under maxSurge and maxUnavailable (Kubernetes' defaults of
/// 25% each when absent): each batch replaces up to surge + unavailable replicas.
/// A rolling update to `replicas` of the new template from `existing` replicas of the old one:
/// the replicas that exist restart (at most `replicas` of them), the rest start new.
fn rolling(replicas: i32, existing: i32, rolling_update: Option<&RollingUpdate>) -> Rollout {
    // The same limits the controller rolls by (`rollout::limits`): one model, one set of defaults.
    let strategy = rollout::Strategy::rolling(rolling_update);
    let (surge, unavailable) = rollout::limits(&strategy, replicas);
    let (surge, unavailable) =
        (i32::try_from(surge).unwrap_or(i32::MAX), i32::try_from(unavailable).unwrap_or(i32::MAX));
    let (surge_value, unavailable_value) = match &strategy {
        rollout::Strategy::RollingUpdate { max_surge, max_unavailable } => (max_surge.clone(), max_unavailable.clone()),
        rollout::Strategy::Recreate => (IntOrString::Int(0), IntOrString::Int(0)),
    };
    let step = surge.saturating_add(unavailable).max(1);
    let restarts = existing.clamp(0, replicas.max(0));
    let added = (replicas - existing).max(0);
    let mut batches = Vec::new();
    let mut left = restarts;
    while left > 0 {
        let batch = left.min(step);
        batches.push(batch);
        left -= batch;
    }
    let shape = if batches.is_empty() {
        String::new()
    } else if batches.len() == 1 {
        "in one batch".to_owned()
    } else {
        format!(
            "in {} batches ({})",
            batches.len(),
            batches.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
        )
    };
    let mut phrase = match restarts {
        0 => "none restart".to_owned(),
        1 => "1 replica restarts".to_owned(),
        n => format!("{n} replicas restart"),
    };
    if !shape.is_empty() {
        phrase = format!("{phrase} {shape}");
    }
    if added > 0 {
        let verb = if added == 1 { "starts" } else { "start" };
        phrase = format!("{phrase} and {} {verb}", count(added, "new replica"));
    }
    Rollout {
        strategy: RolloutStrategy::RollingUpdate,
        replicas: Some(replicas),
        restarts: Some(restarts),
        batches,
        description: format!(
            "rolling update: {phrase}; at most {} running (maxSurge {surge_value}), at least {} available (maxUnavailable {unavailable_value})",
            replicas.saturating_add(surge),
            replicas.saturating_sub(unavailable).max(0),
        ),
    }
}

fn update_risks(old: &Resource, new: &Resource, rollout: Option<&Rollout>) -> Vec<Risk> {
    let mut risks = Vec::new();
    let restarting = rollout.is_some_and(|r| {
        r.restarts.is_none_or(|n| n > 0) && !matches!(r.strategy, RolloutStrategy::Scale | RolloutStrategy::OnDelete)
    });
    if let Some(rollout) = rollout {
        match rollout.strategy {
            RolloutStrategy::Recreate => {
                risks.push(Risk { level: RiskLevel::High, message: format!("downtime: {}", rollout.description) })
            }
            RolloutStrategy::Replace if new.key.kind != Kind::Pod => {
                risks.push(Risk { level: RiskLevel::High, message: rollout.description.clone() })
            }
            RolloutStrategy::Replace => risks.push(Risk {
                level: RiskLevel::Medium,
                message: "downtime: the pod is stopped before it starts again".into(),
            }),
            _ => {}
        }
        if rollout.replicas == Some(0) && old.object.replicas().is_some_and(|n| n > 0) {
            risks.push(Risk {
                level: RiskLevel::High,
                message: "scales to 0 replicas: the workload stops serving".into(),
            });
        }
    }
    if let (Some(old_spec), Some(new_spec)) = (old.object.pod_spec(), new.object.pod_spec()) {
        for volume in &old_spec.volumes {
            match new_spec.volumes.iter().find(|v| v.name == volume.name) {
                None => risks.push(Risk {
                    level: RiskLevel::Medium,
                    message: format!("volume `{}` ({}) is no longer mounted", volume.name, volume_source(volume)),
                }),
                Some(now) if now.host_path != volume.host_path && volume.host_path.is_some() => risks.push(Risk {
                    level: RiskLevel::Medium,
                    message: format!(
                        "volume `{}` moves from {} to {}",
                        volume.name,
                        volume_source(volume),
                        volume_source(now)
                    ),
                }),
                Some(_) if restarting && volume.empty_dir.is_some() => risks.push(Risk {
                    level: RiskLevel::Medium,
                    message: format!("emptyDir volume `{}` is emptied as replicas restart", volume.name),
                }),
                Some(_) => {}
            }
        }
    }
    if new.key.kind == Kind::Secret {
        let mut changed: Vec<&str> = Vec::new();
        for (key, digest) in &new.sensitive_digests {
            if old.sensitive_digests.get(key).is_some_and(|before| before != digest) {
                changed.push(key);
            }
        }
        let removed: Vec<&str> = old
            .sensitive_digests
            .keys()
            .filter(|k| !new.sensitive_digests.contains_key(*k))
            .map(String::as_str)
            .collect();
        if !changed.is_empty() {
            risks.push(Risk {
                level: RiskLevel::Medium,
                message: format!(
                    "secret values change for {} (values not shown); pods read them when they start",
                    keys_list(&changed)
                ),
            });
        }
        if !removed.is_empty() {
            risks.push(Risk {
                level: RiskLevel::Medium,
                message: format!("secret keys removed: {}", keys_list(&removed)),
            });
        }
    }
    if let (Object::Service(before), Object::Service(after)) = (&old.object, &new.object) {
        for port in &before.spec.ports {
            let still = after.spec.ports.iter().find(|p| p.port == port.port && p.protocol == port.protocol);
            match still {
                None => risks.push(Risk {
                    level: RiskLevel::Medium,
                    message: format!("port {} is removed: its clients lose access", port.port),
                }),
                Some(now) => {
                    let before_type = before.spec.service_type.unwrap_or(ServiceType::ClusterIP);
                    let after_type = after.spec.service_type.unwrap_or(ServiceType::ClusterIP);
                    if port.node_port.is_none()
                        && before_type != ServiceType::ClusterIP
                        && after_type == ServiceType::ClusterIP
                    {
                        // berth allocated the node port; turning the Service into ClusterIP
                        // releases it just the same.
                        risks.push(Risk {
                            level: RiskLevel::Medium,
                            message: format!(
                                "the node port allocated for port {} is released: clients outside lose access",
                                port.port
                            ),
                        });
                    }
                    if let Some(node_port) = port.node_port {
                        if after_type == ServiceType::ClusterIP {
                            risks.push(Risk {
                                level: RiskLevel::Medium,
                                message: format!("node port {node_port} is released: clients outside lose access"),
                            });
                        } else if now.node_port.is_some_and(|n| n != node_port) {
                            risks.push(Risk {
                                level: RiskLevel::Medium,
                                message: format!(
                                    "node port changes from {node_port} to {}",
                                    now.node_port.unwrap_or_default()
                                ),
                            });
                        }
                    }
                }
            }
        }
    }
    risks.extend(image_risks(Some(&old.object), &new.object));
    risks
}

/// Images that are not pinned to a tag or digest: what runs could change without a commit.
fn image_risks(old: Option<&Object>, new: &Object) -> Vec<Risk> {
    let Some(spec) = new.pod_spec() else { return Vec::new() };
    let old_images: Vec<&str> = old
        .and_then(Object::pod_spec)
        .map(|s| s.all_containers().map(|c| c.image.as_str()).collect())
        .unwrap_or_default();
    spec.all_containers()
        .filter(|c| !old_images.contains(&c.image.as_str()))
        .filter(|c| {
            let name = c.image.rsplit('/').next().unwrap_or(&c.image);
            !c.image.contains('@') && (!name.contains(':') || name.ends_with(":latest"))
        })
        .map(|c| Risk {
            level: RiskLevel::Low,
            message: format!(
                "container `{}` runs `{}`, which is not pinned to a version: what runs can change without a commit",
                c.name, c.image
            ),
        })
        .collect()
}

fn volume_source(volume: &Volume) -> String {
    if let Some(host_path) = &volume.host_path {
        format!("hostPath {}", host_path.path)
    } else if volume.empty_dir.is_some() {
        "emptyDir".into()
    } else if let Some(config_map) = &volume.config_map {
        format!("configMap {}", config_map.name)
    } else if let Some(secret) = &volume.secret {
        format!("secret {}", secret.secret_name)
    } else {
        "no source".into()
    }
}

fn keys_list(keys: &[&str]) -> String {
    keys.iter().map(|k| format!("`{k}`")).collect::<Vec<_>>().join(", ")
}

fn count(n: i32, noun: &str) -> String {
    if n == 1 { format!("1 {noun}") } else { format!("{n} {noun}s") }
}

/// True when the value is the placeholder for a redacted secret value.
pub fn is_redacted(value: &str) -> bool {
    value == SENSITIVE || value == "(sensitive value changed)"
}
