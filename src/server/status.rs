//! Status, derived: each workload's sync and health and the whole's, from what a control pass
//! saw. Pure: no store, no clock, no I/O; `control::publish` gathers the facts and calls in.
//! The README's definition of Synced is `overall`'s, and the scenario harness checks it.

use crate::apply::controller::{CronJobStatus, JobProgress, WorkloadStatus};
use crate::apply::job::JobState;
use crate::manifest::types::CronJobSpec;
use crate::store::{Outcome, Pin, Revision};
use serde::Serialize;

/// Whether what runs is what the branch head says, in the words of Argo CD.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub enum Sync {
    /// The live plan of the head against what runs is empty.
    Synced,
    OutOfSync,
    /// Not known: the head commit failed to load, or no node is Ready to tell.
    #[default]
    Unknown,
}

impl Sync {
    pub fn as_str(self) -> &'static str {
        match self {
            Sync::Synced => "Synced",
            Sync::OutOfSync => "OutOfSync",
            Sync::Unknown => "Unknown",
        }
    }
}

/// How what runs is doing, in the words of Argo CD. Ordered from best to worst: the whole is
/// as healthy as its least healthy workload.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub enum Health {
    Healthy,
    /// Rolling out or rolling back, within its progress deadline.
    Progressing,
    /// No node is Ready to say, or no commit is applied yet.
    #[default]
    Unknown,
    /// Wants pods and has none: none could be placed.
    Missing,
    /// A rollout failed or its pods crash-loop.
    Degraded,
}

impl Health {
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Healthy => "Healthy",
            Health::Progressing => "Progressing",
            Health::Degraded => "Degraded",
            Health::Missing => "Missing",
            Health::Unknown => "Unknown",
        }
    }
}

/// One workload as the status shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadHealth {
    pub kind: String,
    pub namespace: String,
    pub name: String,
    pub sync: Sync,
    pub health: Health,
    /// Why it is not Synced and Healthy; empty when it is.
    pub reason: String,
    /// Wished replicas; `None` for a DaemonSet.
    pub replicas: Option<i32>,
    pub ready: usize,
    pub updated: usize,
    pub total: usize,
    /// Pods of it that are stopping (out of every count above).
    pub terminating: usize,
    /// The commit whose spec runs (or rolls out).
    pub revision: String,
    pub revision_message: String,
    /// Set when `berth rollback` holds the workload at an earlier commit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pinned: Option<String>,
    /// A Job's run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job: Option<JobView>,
}

/// A Job's run as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct JobView {
    /// `Running`, `Suspended`, `Complete` or `Failed`.
    pub status: String,
    pub active: usize,
    pub succeeded: usize,
    pub failed: usize,
    pub completions: Option<i32>,
    /// When the run of this spec started and finished (seconds since the epoch).
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
}

impl JobView {
    pub fn of(job: &JobProgress, run: Option<&Revision>) -> JobView {
        let status = match job.state {
            JobState::Waiting => "Waiting",
            JobState::Running => "Running",
            JobState::Suspended => "Suspended",
            JobState::Complete => "Complete",
            JobState::Failed(_) => "Failed",
        };
        JobView {
            status: status.to_owned(),
            active: job.active,
            succeeded: job.succeeded,
            failed: job.failed,
            completions: job.completions,
            started_at: run.map(|r| r.started_at),
            finished_at: run.and_then(|r| r.finished_at),
        }
    }
}

/// A CronJob as the API shows it: its schedule, its runs and when it runs next.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CronJobView {
    pub namespace: String,
    pub name: String,
    pub schedule: String,
    /// UTC when unset.
    pub time_zone: Option<String>,
    pub suspend: bool,
    /// Runs under way.
    pub active: usize,
    /// The schedule time of the last run started on schedule (seconds since the epoch).
    pub last_schedule: Option<i64>,
    pub next_schedule: Option<i64>,
    /// Why a due run does not start now (suspended, concurrencyPolicy Forbid).
    pub held: Option<String>,
    /// Its runs kept, oldest first.
    pub runs: Vec<CronRunView>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CronRunView {
    /// The Job's name, such as `nightly-29441280`.
    pub name: String,
    pub status: String,
    pub succeeded: usize,
    pub failed: usize,
    pub scheduled: i64,
    pub finished_at: Option<i64>,
    /// Why it failed, when it did.
    pub reason: String,
    pub completions: Option<i32>,
}

impl CronJobView {
    pub fn of(status: &CronJobStatus, spec: Option<&CronJobSpec>) -> CronJobView {
        let runs = status
            .state
            .runs
            .iter()
            .map(|run| {
                let job = status.runs.iter().find(|r| r.key.name == run.name).and_then(|r| r.job.as_ref());
                let view = job.map(|j| JobView::of(j, None));
                CronRunView {
                    name: run.name.clone(),
                    status: view.as_ref().map_or_else(|| "Pending".to_owned(), |v| v.status.clone()),
                    succeeded: view.as_ref().map_or(0, |v| v.succeeded),
                    failed: view.as_ref().map_or(0, |v| v.failed),
                    scheduled: run.scheduled,
                    finished_at: run.finished.as_ref().map(|f| f.0),
                    reason: run.finished.as_ref().map(|f| f.2.clone()).unwrap_or_default(),
                    completions: view.as_ref().and_then(|v| v.completions),
                }
            })
            .collect();
        CronJobView {
            namespace: status.key.namespace.clone(),
            name: status.key.name.clone(),
            schedule: spec.map(|s| s.schedule.clone()).unwrap_or_default(),
            time_zone: spec.and_then(|s| s.time_zone.clone()),
            suspend: spec.is_some_and(|s| s.suspend == Some(true)),
            active: status.state.active().count(),
            last_schedule: status.state.last_scheduled,
            next_schedule: status.next,
            held: status.held.clone(),
            runs,
        }
    }
}

/// One Job for `berth get jobs`: a Job of the commit, or a CronJob's run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct JobRow {
    pub namespace: String,
    pub name: String,
    pub status: String,
    pub succeeded: usize,
    pub completions: Option<i32>,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    pub reason: String,
    /// The CronJob that made it, for a run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cron_job: Option<String>,
}

/// Every Job: the commit's and the CronJobs' runs, by namespace and name.
pub fn job_rows(workloads: &[WorkloadHealth], cron_jobs: &[CronJobView]) -> Vec<JobRow> {
    let mut rows: Vec<JobRow> = workloads
        .iter()
        .filter_map(|w| {
            let job = w.job.as_ref()?;
            Some(JobRow {
                namespace: w.namespace.clone(),
                name: w.name.clone(),
                status: job.status.clone(),
                succeeded: job.succeeded,
                completions: job.completions,
                started_at: job.started_at,
                finished_at: job.finished_at,
                reason: w.reason.clone(),
                cron_job: None,
            })
        })
        .collect();
    for cron_job in cron_jobs {
        rows.extend(cron_job.runs.iter().map(|run| JobRow {
            namespace: cron_job.namespace.clone(),
            name: run.name.clone(),
            status: run.status.clone(),
            succeeded: run.succeeded,
            completions: run.completions,
            started_at: Some(run.scheduled),
            finished_at: run.finished_at,
            reason: run.reason.clone(),
            cron_job: Some(cron_job.name.clone()),
        }));
    }
    rows.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    rows
}

/// A Job's two axes: its spec is applied as Git says once it runs, so it is Synced; its
/// health is its run's.
fn job_health(job: &JobProgress) -> (Sync, Health, String) {
    let done = match job.completions {
        Some(n) => format!("{}/{n} succeeded", job.succeeded),
        None => format!("{} succeeded", job.succeeded),
    };
    match &job.state {
        JobState::Complete => (Sync::Synced, Health::Healthy, String::new()),
        JobState::Failed(reason) => (
            Sync::Synced,
            Health::Degraded,
            format!(
                "the Job failed: {}; change its spec in Git to run it again",
                reason.trim_start_matches("the Job failed: ")
            ),
        ),
        JobState::Suspended => (Sync::Synced, Health::Healthy, format!("suspended: {done}, none running")),
        JobState::Waiting => {
            (Sync::OutOfSync, Health::Progressing, job.waiting.clone().unwrap_or_else(|| "waits to start".to_owned()))
        }
        JobState::Running => {
            let waiting = job.waiting.as_ref().map(|w| format!("; {w}")).unwrap_or_default();
            (
                Sync::Synced,
                Health::Progressing,
                format!("running: {done}, {} active, {} failed{waiting}", job.active, job.failed),
            )
        }
    }
}

/// What the whole's status is derived from.
#[derive(Debug, Clone, Copy)]
pub struct Facts<'a> {
    /// Why the head commit does not load, when it does not.
    pub failed: Option<&'a str>,
    /// Why the head commit waits for an approval, when it does.
    pub waiting: Option<&'a str>,
    /// The short sha of the commit being applied.
    pub applied: Option<&'a str>,
    /// The head commit is the one being applied (or no head was read yet).
    pub head_applied: bool,
    pub ready_nodes: usize,
    /// Pods of workloads the commit no longer declares that still run or stop.
    pub pruning: usize,
    /// The applied objects are recorded as the commit's.
    pub applied_recorded: bool,
    pub workloads: &'a [WorkloadHealth],
}

/// The two axes of the whole, each with its reason, and the reason that matters most.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Axes {
    pub sync: Sync,
    pub sync_reason: String,
    pub health: Health,
    pub health_reason: String,
    pub reason: String,
}

const NO_NODE: &str = "no node is Ready: start `berth agent` on a machine, or check that agents reach this server";

/// Synced means exactly: the head commit loaded without errors and is the one applied, nothing
/// waits for an approval, no workload is held at another commit (a pin or a rollback after a
/// failed rollout), no pod of a dropped workload still runs, the applied objects are recorded,
/// and every workload's pods all run its revision with its current configuration, none of them
/// stopping, as reported by Ready nodes.
pub fn overall(facts: &Facts<'_>) -> Axes {
    let workloads = facts.workloads;
    let no_node = !workloads.is_empty() && facts.ready_nodes == 0;
    let (sync, sync_reason) = if let Some(failed) = facts.failed {
        let keeps = facts.applied.map(|a| format!("; commit {a} keeps running")).unwrap_or_default();
        (Sync::Unknown, format!("{failed}{keeps}"))
    } else if let Some(waiting) = facts.waiting {
        (Sync::OutOfSync, waiting.to_owned())
    } else if facts.applied.is_none() {
        (Sync::Unknown, "no commit without errors has been seen yet".to_owned())
    } else if !facts.head_applied {
        (Sync::OutOfSync, "the head commit is not applied yet".to_owned())
    } else if no_node {
        (Sync::Unknown, NO_NODE.to_owned())
    } else if facts.pruning > 0 {
        (Sync::OutOfSync, format!("{} pods of workloads the commit no longer declares are stopping", facts.pruning))
    } else if workloads.iter().any(|w| w.sync != Sync::Synced) {
        (Sync::OutOfSync, reasons_of(workloads.iter().filter(|w| w.sync != Sync::Synced)))
    } else if !facts.applied_recorded {
        (Sync::OutOfSync, "the applied objects are being recorded".to_owned())
    } else {
        (Sync::Synced, format!("the nodes run commit {}", facts.applied.unwrap_or_default()))
    };
    let worst = workloads.iter().map(|w| w.health).max().unwrap_or(Health::Healthy);
    let (health, health_reason) = if facts.applied.is_none() {
        (Health::Unknown, "no commit is applied yet".to_owned())
    } else if no_node {
        (Health::Unknown, NO_NODE.to_owned())
    } else if worst == Health::Healthy {
        (Health::Healthy, "every workload is available".to_owned())
    } else if worst == Health::Progressing {
        let rolling = workloads.iter().filter(|w| w.health == Health::Progressing).count();
        (Health::Progressing, format!("{rolling} of {} workloads are rolling out", workloads.len()))
    } else {
        (worst, reasons_of(workloads.iter().filter(|w| w.health == worst)))
    };
    // A head that does not load, then a failure, then what keeps it from Synced, then health.
    let reason = if facts.failed.is_some() || (health != Health::Degraded && sync != Sync::Synced) {
        sync_reason.clone()
    } else {
        health_reason.clone()
    };
    Axes { sync, sync_reason, health, health_reason, reason }
}

/// `Kind ns/name: reason; ...` of some workloads.
fn reasons_of<'w>(workloads: impl Iterator<Item = &'w WorkloadHealth>) -> String {
    let reasons: Vec<String> =
        workloads.map(|w| format!("{} {}/{}: {}", w.kind, w.namespace, w.name, w.reason)).collect();
    reasons.join("; ")
}

/// What one workload's status is derived from, besides the controller's view of it.
#[derive(Debug, Clone)]
pub struct WorkloadFacts<'a> {
    /// Its revisions, oldest first.
    pub history: Option<&'a [Revision]>,
    /// A `berth rollback` pin that holds it.
    pub pin: Option<&'a Pin>,
    pub ready_nodes: usize,
    /// The message of the commit whose spec it runs.
    pub revision_message: String,
}

pub fn workload_health(w: &WorkloadStatus, facts: &WorkloadFacts<'_>) -> WorkloadHealth {
    let history = facts.history;
    let latest = history.and_then(|h| h.last());
    let short = |sha: &str| sha[..sha.len().min(7)].to_owned();
    let wanted = w.replicas.map_or_else(|| "all".to_owned(), |r| r.to_string());
    let stopping = if w.terminating > 0 { format!("; {} pods are stopping", w.terminating) } else { String::new() };
    let rolling = || {
        if let Some(unschedulable) = w.unschedulable.first() {
            let health = if w.total == 0 { Health::Missing } else { Health::Progressing };
            (health, format!("pods wait to be placed: {unschedulable}"))
        } else {
            (Health::Progressing, format!("{}/{wanted} available, {} updated{stopping}", w.available, w.updated))
        }
    };
    let (sync, health, reason) = if facts.ready_nodes == 0 {
        (Sync::Unknown, Health::Unknown, "no node is Ready".to_owned())
    } else if let Some(pin) = facts.pin {
        let verb = if w.complete { "held" } else { "rolling back" };
        let health = if w.complete { Health::Healthy } else { rolling().0 };
        (
            Sync::OutOfSync,
            health,
            format!("{verb} at commit {} by `berth rollback` until a new commit is applied", short(&pin.commit)),
        )
    } else if let Some(waiting) = &w.waiting {
        (Sync::OutOfSync, Health::Progressing, waiting.clone())
    } else if let Some(job) = &w.job {
        job_health(job)
    } else if let Some(latest) = latest.filter(|r| r.outcome == Outcome::Failed) {
        let back = match history.and_then(super::verdicts::rollback_target) {
            Some(healthy) => format!("rolled back to {} \"{}\"", healthy.commit.short(), healthy.commit.message),
            None => "no earlier healthy revision to roll back to".to_owned(),
        };
        (
            Sync::OutOfSync,
            Health::Degraded,
            format!(
                "rollout of {} failed: {}; {back}; fix the spec in Git to retry",
                latest.commit.short(),
                latest.reason
            ),
        )
    } else if let Some(failure) = &w.failure {
        (Sync::OutOfSync, Health::Degraded, failure.clone())
    } else if w.complete && !w.stale_config.is_empty() {
        (
            Sync::OutOfSync,
            Health::Healthy,
            format!(
                "pods {} run older ConfigMap or Secret values: the workload carries berth.dev/restart-on-config-change: \"false\"; they take the new values when they are replaced",
                w.stale_config.join(", ")
            ),
        )
    } else if w.complete {
        (Sync::Synced, Health::Healthy, String::new())
    } else {
        let (health, reason) = rolling();
        (Sync::OutOfSync, health, reason)
    };
    WorkloadHealth {
        kind: w.key.kind.name().to_owned(),
        namespace: w.key.namespace.clone(),
        name: w.key.name.clone(),
        sync,
        health,
        reason,
        replicas: w.replicas,
        ready: w.available,
        updated: w.updated,
        total: w.total,
        terminating: w.terminating,
        revision_message: facts.revision_message.clone(),
        revision: w.revision.clone(),
        pinned: facts.pin.map(|p| p.commit.clone()),
        job: w.job.as_ref().map(|job| JobView::of(job, latest)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::{Kind, ObjectKey};
    use crate::sync::CommitInfo;

    fn workload(sync: Sync, health: Health) -> WorkloadHealth {
        WorkloadHealth {
            kind: "Deployment".into(),
            namespace: "shop".into(),
            name: "web".into(),
            sync,
            health,
            reason: "why".into(),
            replicas: Some(2),
            ready: 2,
            updated: 2,
            total: 2,
            terminating: 0,
            revision: "abc".into(),
            revision_message: String::new(),
            pinned: None,
            job: None,
        }
    }

    fn facts(workloads: &[WorkloadHealth]) -> Facts<'_> {
        Facts {
            failed: None,
            waiting: None,
            applied: Some("abc1234"),
            head_applied: true,
            ready_nodes: 1,
            pruning: 0,
            applied_recorded: true,
            workloads,
        }
    }

    #[test]
    fn the_whole_is_synced_only_when_every_condition_holds() {
        let synced = [workload(Sync::Synced, Health::Healthy)];
        let rolling = [workload(Sync::OutOfSync, Health::Progressing), workload(Sync::Synced, Health::Healthy)];
        let degraded = [workload(Sync::OutOfSync, Health::Degraded)];
        let missing = [workload(Sync::OutOfSync, Health::Missing), workload(Sync::OutOfSync, Health::Progressing)];
        type Case<'a> = (&'a str, Facts<'a>, Sync, Health, &'a str);
        let cases: Vec<Case<'_>> = vec![
            ("all holds", facts(&synced), Sync::Synced, Health::Healthy, "every workload is available"),
            ("no workload at all", facts(&[]), Sync::Synced, Health::Healthy, "every workload is available"),
            (
                "the head fails",
                Facts { failed: Some("app.yaml:3:1: bad"), ..facts(&synced) },
                Sync::Unknown,
                Health::Healthy,
                "app.yaml:3:1: bad; commit abc1234 keeps running",
            ),
            (
                "the head waits",
                Facts { waiting: Some("manual"), ..facts(&synced) },
                Sync::OutOfSync,
                Health::Healthy,
                "manual",
            ),
            (
                "a first commit waits",
                Facts { waiting: Some("manual"), applied: None, ..facts(&[]) },
                Sync::OutOfSync,
                Health::Unknown,
                "manual",
            ),
            (
                "nothing applied",
                Facts { applied: None, ..facts(&[]) },
                Sync::Unknown,
                Health::Unknown,
                "no commit without errors has been seen yet",
            ),
            (
                "the head is not applied",
                Facts { head_applied: false, ..facts(&synced) },
                Sync::OutOfSync,
                Health::Healthy,
                "the head commit is not applied yet",
            ),
            ("no node", Facts { ready_nodes: 0, ..facts(&synced) }, Sync::Unknown, Health::Unknown, NO_NODE),
            (
                "no node, no workload",
                Facts { ready_nodes: 0, ..facts(&[]) },
                Sync::Synced,
                Health::Healthy,
                "every workload is available",
            ),
            (
                "dropped pods stop",
                Facts { pruning: 2, ..facts(&synced) },
                Sync::OutOfSync,
                Health::Healthy,
                "2 pods of workloads the commit no longer declares are stopping",
            ),
            (
                "not recorded yet",
                Facts { applied_recorded: false, ..facts(&synced) },
                Sync::OutOfSync,
                Health::Healthy,
                "the applied objects are being recorded",
            ),
            ("a rollout", facts(&rolling), Sync::OutOfSync, Health::Progressing, "Deployment shop/web: why"),
            ("a failure", facts(&degraded), Sync::OutOfSync, Health::Degraded, "Deployment shop/web: why"),
            (
                "missing is worse than rolling",
                facts(&missing),
                Sync::OutOfSync,
                Health::Missing,
                "Deployment shop/web: why; Deployment shop/web: why",
            ),
        ];
        for (name, facts, sync, health, reason) in cases {
            let axes = overall(&facts);
            assert_eq!((axes.sync, axes.health), (sync, health), "{name}: {axes:?}");
            assert_eq!(axes.reason, reason, "{name}: {axes:?}");
        }
    }

    fn status(complete: bool) -> WorkloadStatus {
        WorkloadStatus {
            key: ObjectKey { kind: Kind::Deployment, namespace: "shop".into(), name: "web".into() },
            replicas: Some(2),
            updated: 2,
            available: if complete { 2 } else { 1 },
            total: 2,
            complete,
            unschedulable: Vec::new(),
            revision: "abc1234def".into(),
            failure: None,
            stale_config: Vec::new(),
            terminating: 0,
            job: None,
            waiting: None,
        }
    }

    fn revision(sha: &str, hash: &str, outcome: Outcome) -> Revision {
        Revision {
            key: status(true).key,
            commit: CommitInfo { sha: sha.into(), author: "a".into(), message: format!("{sha} message"), time: 0 },
            spec_hash: hash.into(),
            started_at: 0,
            finished_at: None,
            outcome,
            reason: "its pods crash-loop".into(),
        }
    }

    #[test]
    fn a_workload_is_synced_only_when_complete_current_and_free() {
        let healthy = [revision("1111111", "h1", Outcome::Healthy)];
        let failed = [revision("1111111", "h1", Outcome::Healthy), revision("2222222", "h2", Outcome::Failed)];
        let pin = Pin { key: status(true).key, commit: "1111111aaa".into(), head: "abc".into(), pinned_at: 0 };
        let base =
            WorkloadFacts { history: Some(&healthy), pin: None, ready_nodes: 1, revision_message: String::new() };
        let stale = WorkloadStatus { stale_config: vec!["web-1".into()], ..status(true) };
        let crashing =
            WorkloadStatus { failure: Some("container web exited with code 1 (3 restarts)".into()), ..status(false) };
        let stopping = WorkloadStatus { terminating: 1, ..status(false) };
        let unplaced = WorkloadStatus { total: 0, unschedulable: vec!["0/1 nodes fit".into()], ..status(false) };
        let cases: Vec<(&str, WorkloadStatus, WorkloadFacts<'_>, Sync, Health, &str)> = vec![
            ("complete", status(true), base.clone(), Sync::Synced, Health::Healthy, ""),
            ("rolling", status(false), base.clone(), Sync::OutOfSync, Health::Progressing, "1/2 available, 2 updated"),
            ("stopping", stopping, base.clone(), Sync::OutOfSync, Health::Progressing, "pods are stopping"),
            (
                "unplaced",
                unplaced,
                base.clone(),
                Sync::OutOfSync,
                Health::Missing,
                "pods wait to be placed: 0/1 nodes fit",
            ),
            ("crashing", crashing, base.clone(), Sync::OutOfSync, Health::Degraded, "exited with code 1"),
            ("stale values", stale, base.clone(), Sync::OutOfSync, Health::Healthy, "pods web-1 run older ConfigMap"),
            (
                "pinned",
                status(true),
                WorkloadFacts { pin: Some(&pin), ..base.clone() },
                Sync::OutOfSync,
                Health::Healthy,
                "held at commit 1111111 by `berth rollback`",
            ),
            (
                "rolled back",
                status(true),
                WorkloadFacts { history: Some(&failed), ..base.clone() },
                Sync::OutOfSync,
                Health::Degraded,
                "rollout of 2222222 failed: its pods crash-loop; rolled back to 1111111",
            ),
            (
                "no node",
                status(true),
                WorkloadFacts { ready_nodes: 0, ..base.clone() },
                Sync::Unknown,
                Health::Unknown,
                "no node is Ready",
            ),
        ];
        for (name, w, facts, sync, health, reason) in cases {
            let shown = workload_health(&w, &facts);
            assert_eq!((shown.sync, shown.health), (sync, health), "{name}: {shown:?}");
            assert!(shown.reason.contains(reason), "{name}: {:?} lacks {reason:?}", shown.reason);
        }
    }
}
