//! What the user API asks of the control loop: approving the plan shown for a waiting commit,
//! and pinning a workload to an earlier commit (`berth rollback`). Each writes to the store and
//! wakes the loop, which carries it out on its next pass.

use crate::manifest::{ObjectKey, Resource};
use crate::plan::render;
use crate::server::control::{ControlPlane, plan_digest_of};
use crate::store::{Change, Outcome, Pin, StoreError, SyncOutcome, SyncRecord};
use crate::sync::Loaded;
use serde::Serialize;

/// Approves the plan shown for `sha` at `state_index`. Refuses a commit that is not waiting and
/// a plan made against a state that has moved since.
///
/// With `plan_digest`, the approval names the plan itself (its `planDigest`): it is taken only
/// when the plan recorded for the commit, made again first if the applied state moved, is
/// that very plan; otherwise it is refused with the plan as it is now.
pub async fn approve(
    plane: &ControlPlane,
    sha: &str,
    state_index: Option<i64>,
    plan_digest: Option<&str>,
) -> Result<SyncRecord, ApproveError> {
    let mut record = plane.store.sync(sha).await?.ok_or_else(|| ApproveError::Unknown(sha.to_owned()))?;
    if record.outcome != SyncOutcome::Waiting {
        return Err(ApproveError::NotWaiting { sha: record.commit.sha.clone(), outcome: record.outcome });
    }
    let current = plane.store.state_index().await?;
    let shown = state_index.unwrap_or(record.state_index);
    if record.state_index != current {
        // The recorded plan is older than what is applied now: make it again, so the record
        // and the next look show the truth.
        if let Ok(commit) = plane.load(&record.commit.sha).await {
            let (plan, index) = plane.plan_against_applied(&commit).await?;
            record.state_index = index;
            record.plan_text = render::text(&plan, false);
            record.plan_json = render::json(&plan);
            plane
                .store
                .write(&[Change::Replan {
                    commit: record.commit.sha.clone(),
                    state_index: index,
                    text: record.plan_text.clone(),
                    json: record.plan_json.clone(),
                }])
                .await?;
        }
    }
    match plan_digest {
        // The plan itself is named: it is taken if it is the plan recorded now.
        Some(digest) => {
            let recorded = plan_digest_of(&record.plan_json);
            if recorded.as_deref() != Some(digest) {
                return Err(ApproveError::PlanChanged {
                    shown: digest.to_owned(),
                    current: recorded.unwrap_or_default(),
                    plan_text: record.plan_text,
                    plan_json: record.plan_json,
                });
            }
        }
        // A plan made against the state applied now (the record's, made again, or a live one
        // the caller was shown) is the plan that will be carried out; any other is not.
        None if shown != current => return Err(ApproveError::Stale { shown, current }),
        None => {}
    }
    let digest = plan_digest_of(&record.plan_json).unwrap_or_default();
    plane
        .store
        .write(&[
            Change::Approve { commit: record.commit.sha.clone(), at: crate::server::now() },
            Change::SetControl("approved_digest", digest),
            Change::SetControl("approved_commit", record.commit.sha.clone()),
        ])
        .await?;
    plane.wake.notify_one();
    Ok(record)
}

#[derive(Debug, thiserror::Error)]
pub enum ApproveError {
    #[error("no commit {0} waits for approval; see `berth get syncs`")]
    Unknown(String),
    #[error("commit {sha} is not waiting for approval (it is {outcome})")]
    NotWaiting { sha: String, outcome: SyncOutcome },
    #[error(
        "the applied state moved since the plan was made (state index {shown}, now {current}); the plan was made again: review it and approve again"
    )]
    Stale { shown: i64, current: i64 },
    #[error(
        "the plan approved (digest {shown}) is not the plan recorded now (digest {current}): the applied state moved since it was made; review the plan as it is now and approve it"
    )]
    PlanChanged { shown: String, current: String, plan_text: String, plan_json: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What `berth rollback` does, said before it is done.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RollbackPlan {
    pub pin: Pin,
    /// One sentence: whose pod template comes back, what stays as Git has it, and until when.
    pub summary: String,
    /// False for a preview (`dryRun`): nothing was written.
    pub applied: bool,
}

/// Holds a workload at an earlier commit's pod template until a new commit is applied, like
/// `kubectl rollout undo`: the template comes back, the replicas stay as Git has them. Without
/// `to`, the newest healthy revision whose template differs from the one running. With
/// `dry_run`, only says what it would do.
pub async fn rollback(
    plane: &ControlPlane,
    key: &ObjectKey,
    to: Option<&str>,
    dry_run: bool,
) -> Result<RollbackPlan, RollbackError> {
    let status = plane.status.borrow().clone();
    // A pin holds while the commit applied now stays applied.
    let head = status.applied.clone().ok_or(RollbackError::NoHead)?;
    let history = plane.store.revisions(key).await?;
    if history.is_empty() {
        return Err(RollbackError::NoHistory(key.to_string()));
    }
    let declared = |commit: &Loaded| commit.resources.iter().find(|r| &r.key == key).cloned();
    let applied = plane.load(&head).await.map_err(|e| RollbackError::Target(e.to_string()))?;
    if declared(&applied).is_none() {
        return Err(RollbackError::NotDeclared { key: key.to_string(), commit: applied.commit.short().to_owned() });
    }
    let shown = status
        .workloads
        .iter()
        .find(|w| w.kind == key.kind.name() && w.namespace == key.namespace && w.name == key.name);
    let running_sha = shown.map_or_else(|| head.clone(), |w| w.revision.clone());
    let running = plane.load(&running_sha).await.ok().and_then(|c| declared(&c));
    let running_template = running.as_ref().map(|r| r.template_hash.clone());
    let sha = match to {
        Some(rev) => plane.resolve(rev).await.map_err(|e| RollbackError::Target(e.to_string()))?.sha,
        None => {
            let mut found = None;
            for revision in history.iter().filter(|r| r.outcome == Outcome::Healthy) {
                let Ok(commit) = plane.load(&revision.commit.sha).await else { continue };
                if declared(&commit).is_some_and(|r| Some(&r.template_hash) != running_template.as_ref()) {
                    found = Some(revision.commit.sha.clone());
                    break;
                }
            }
            found.ok_or_else(|| RollbackError::NoHealthy(key.to_string()))?
        }
    };
    let commit = plane.load(&sha).await.map_err(|e| RollbackError::Target(e.to_string()))?;
    if !commit.is_valid() {
        return Err(RollbackError::Target(format!(
            "commit {} has {} errors; pick another with `berth history {}`",
            commit.commit.short(),
            commit.error_count(),
            key.name
        )));
    }
    let Some(target) = declared(&commit) else {
        return Err(RollbackError::Target(format!("commit {} does not declare {key}", commit.commit.short())));
    };
    let replicas = shown.and_then(|w| w.replicas);
    let images = |resource: &Resource| {
        resource.object.pod_spec().map(|spec| spec.all_containers().map(|c| c.image.clone()).collect::<Vec<_>>())
    };
    let image_change = match (running.as_deref().and_then(images), images(&target)) {
        (Some(now), Some(then)) if now != then => format!(" (images {} -> {})", now.join(", "), then.join(", ")),
        _ => String::new(),
    };
    let summary = format!(
        "{key}: the pod template of commit {} \"{}\" comes back{image_change}; {}; held until a new commit is applied",
        commit.commit.short(),
        commit.commit.message.lines().next().unwrap_or_default(),
        match replicas {
            Some(replicas) => format!("replicas stay {replicas} as Git has them"),
            None => "which nodes run it stays as Git has it".to_owned(),
        },
    );
    let pin = Pin { key: key.clone(), commit: commit.commit.sha.clone(), head, pinned_at: crate::server::now() };
    if !dry_run {
        plane.store.record_commit(&commit.commit, crate::server::now()).await?;
        plane.store.set_pin(&pin).await?;
        plane.wake.notify_one();
    }
    Ok(RollbackPlan { pin, summary, applied: !dry_run })
}

#[derive(Debug, thiserror::Error)]
pub enum RollbackError {
    #[error("no commit is applied yet, so there is nothing to hold a workload against; try again once one is")]
    NoHead,
    #[error("{key} is not declared by the applied commit {commit}: there is nothing of it to hold")]
    NotDeclared { key: String, commit: String },
    #[error("{0} has no revisions: it was never rolled out by this server")]
    NoHistory(String),
    #[error("{0} has no earlier healthy revision; name one with --to SHA (see `berth history`)")]
    NoHealthy(String),
    #[error("cannot roll back to that commit: {0}")]
    Target(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}
