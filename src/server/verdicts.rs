//! The loop's verdicts, pure: whether a commit must wait for an approval, whether a rolling
//! revision is healthy or failed, and where a failed one goes back to. `control` acts on them.

use crate::apply::controller::WorkloadStatus;
use crate::plan;
use crate::store::{Outcome, Revision};
use crate::sync::Loaded;

/// Why a valid commit may not be applied without an approval, if it may not.
pub fn wait_reason(commit: &Loaded, plan: &plan::Plan) -> Option<String> {
    let short = commit.commit.short();
    // Every applied object is on the plan's observed side: updated, deleted (kept ones count
    // as unchanged) or unchanged.
    let applied = plan.summary.update + plan.summary.delete + plan.summary.unchanged;
    if commit.config.sync.policy == crate::sync::config::SyncPolicy::Manual {
        return Some(format!(
            "the sync policy is manual: review the plan (`berth plan --server`) and approve it with `berth sync --approve {short}`"
        ));
    }
    let claims: Vec<String> = plan
        .changes
        .iter()
        .filter(|c| {
            c.action == plan::Action::Delete && !c.kept && c.kind == crate::manifest::Kind::PersistentVolumeClaim
        })
        .map(|c| format!("{}/{}", c.namespace, c.name))
        .collect();
    let data: Vec<&str> = plan.changes.iter().flat_map(|c| c.deletes_data.iter().map(String::as_str)).collect();
    if !data.is_empty() {
        return Some(format!(
            "commit {short} deletes the data of {} (a StatefulSet's persistentVolumeClaimRetentionPolicy says Delete): \
             review the plan and approve it with `berth sync --approve {short}`",
            data.join(", ")
        ));
    }
    if !claims.is_empty() {
        return Some(format!(
            "commit {short} removes the claim(s) {} from Git: their data stays on their nodes, orphaned, until `berth delete pvc`; \
             review the plan and approve it with `berth sync --approve {short}`",
            claims.join(", ")
        ));
    }
    let deletes = plan.changes.iter().filter(|c| c.action == plan::Action::Delete && !c.kept).count();
    let threshold = usize::from(commit.config.sync.prune_threshold);
    if applied > 0 && deletes * 100 > threshold * applied {
        return Some(format!(
            "commit {short} would delete {deletes} of the {applied} applied objects, more than the prune threshold of {threshold}%: \
             review the plan and approve it with `berth sync --approve {short}`, or raise sync.pruneThreshold in berth.yaml"
        ));
    }
    None
}

/// What a plan made against what runs says of one workload, given its revisions (oldest
/// first): held at its newest healthy template when this template failed before (a failed
/// spec is not tried again until Git changes it), or, when this template has not yet proved
/// healthy, where it goes back to should its rollout fail. Returns the reason of a hold.
pub fn judge_step(step: &mut plan::WorkloadStep, history: &[Revision]) -> Option<(String, String)> {
    // A Job is not rolled back: a failed run stays failed until Git changes its spec, and
    // running an earlier spec again would run its work again.
    if matches!(step.action, plan::StepAction::Delete | plan::StepAction::Orphan)
        || step.kind == crate::manifest::Kind::Job
    {
        return None;
    }
    let newest_healthy_other =
        || history.iter().rev().find(|r| r.outcome == Outcome::Healthy && r.spec_hash != step.template).cloned();
    let this = history.iter().rev().find(|r| r.spec_hash == step.template);
    match this {
        Some(failed) if failed.outcome == Outcome::Failed => {
            let reason = |back_to: String| {
                format!(
                    "the rollout of this pod template failed at commit {} ({}); {back_to}, until a commit changes the template",
                    failed.commit.short(),
                    failed.reason
                )
            };
            match newest_healthy_other() {
                Some(healthy) => {
                    let why = reason(format!("it runs commit {}'s", healthy.commit.short()));
                    step.action = plan::StepAction::Held;
                    step.commit = healthy.commit.sha.clone();
                    step.template = healthy.spec_hash.clone();
                    Some((healthy.commit.sha, why))
                }
                None => Some((failed.commit.sha.clone(), reason("there is no earlier healthy revision".into()))),
            }
        }
        Some(healthy) if healthy.outcome == Outcome::Healthy => None,
        _ => {
            step.on_failure = newest_healthy_other()
                .map(|r| plan::Fallback { commit: r.commit.sha.clone(), template: r.spec_hash.clone() });
            None
        }
    }
}

/// After the latest revision failed: the newest healthy revision with another spec.
pub fn rollback_target(history: &[Revision]) -> Option<&Revision> {
    let latest = history.last()?;
    if latest.outcome != Outcome::Failed {
        return None;
    }
    history.iter().rev().find(|r| r.outcome == Outcome::Healthy && r.spec_hash != latest.spec_hash)
}

/// The verdict on a rolling revision `elapsed` seconds after it started, under a progress
/// deadline of `deadline` seconds: healthy once complete, failed when its new pods crash-loop
/// or the deadline passed, none yet otherwise.
pub fn verdict(workload: &WorkloadStatus, elapsed: i64, deadline: i32) -> Option<(Outcome, String)> {
    // A Job has no progress deadline (its own is activeDeadlineSeconds): it is healthy when
    // complete and failed when it failed.
    if workload.job.is_some() {
        return match (&workload.failure, workload.complete) {
            (_, true) => Some((Outcome::Healthy, String::new())),
            (Some(failure), false) => Some((Outcome::Failed, format!("the Job failed: {failure}"))),
            (None, false) => None,
        };
    }
    if workload.complete {
        Some((Outcome::Healthy, String::new()))
    } else if let Some(failure) = &workload.failure {
        Some((Outcome::Failed, format!("its pods crash-loop: {failure}")))
    } else if elapsed > i64::from(deadline) {
        Some((
            Outcome::Failed,
            format!(
                "no complete rollout within progressDeadlineSeconds ({deadline} s): {}/{} available, {} updated{}",
                workload.available,
                workload.replicas.map_or_else(|| "all".to_owned(), |r| r.to_string()),
                workload.updated,
                workload.unschedulable.first().map(|u| format!("; {u}")).unwrap_or_default()
            ),
        ))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::{Kind, ObjectKey};
    use crate::sync::CommitInfo;

    fn status() -> WorkloadStatus {
        WorkloadStatus {
            key: ObjectKey { kind: Kind::Deployment, namespace: "shop".into(), name: "web".into() },
            replicas: Some(3),
            updated: 1,
            available: 2,
            total: 3,
            complete: false,
            unschedulable: Vec::new(),
            revision: "abc".into(),
            failure: None,
            stale_config: Vec::new(),
            terminating: 0,
            job: None,
            waiting: None,
        }
    }

    #[test]
    fn a_rolling_revision_is_judged_by_completion_crashes_and_its_deadline() {
        let crashing =
            WorkloadStatus { failure: Some("container web exited with code 1 (3 restarts)".into()), ..status() };
        let complete = WorkloadStatus { complete: true, ..status() };
        let unplaced = WorkloadStatus { unschedulable: vec!["0/2 nodes fit".into()], ..status() };
        type Case<'a> = (&'a str, WorkloadStatus, i64, Option<(Outcome, &'a str)>);
        let cases: Vec<Case<'_>> = vec![
            ("complete", complete.clone(), 0, Some((Outcome::Healthy, ""))),
            ("complete past the deadline", complete, 900, Some((Outcome::Healthy, ""))),
            ("crashing", crashing, 5, Some((Outcome::Failed, "its pods crash-loop: container web exited with code 1"))),
            ("within the deadline", status(), 600, None),
            ("past the deadline", status(), 601, Some((Outcome::Failed, "(600 s): 2/3 available, 1 updated"))),
            ("past it, unplaced", unplaced, 601, Some((Outcome::Failed, "1 updated; 0/2 nodes fit"))),
        ];
        for (name, workload, elapsed, expected) in cases {
            let got = verdict(&workload, elapsed, 600);
            match (got, expected) {
                (None, None) => {}
                (Some((outcome, reason)), Some((want, part))) => {
                    assert_eq!(outcome, want, "{name}");
                    assert!(reason.contains(part), "{name}: {reason:?} lacks {part:?}");
                }
                (got, want) => panic!("{name}: {got:?}, expected {want:?}"),
            }
        }
    }

    fn revision(sha: &str, hash: &str, outcome: Outcome) -> Revision {
        Revision {
            key: status().key,
            commit: CommitInfo { sha: sha.into(), author: "a".into(), message: String::new(), time: 0 },
            spec_hash: hash.into(),
            started_at: 0,
            finished_at: None,
            outcome,
            reason: String::new(),
        }
    }

    #[test]
    fn a_failed_revision_goes_back_to_the_newest_healthy_other_template() {
        use Outcome::*;
        let cases: Vec<(&str, Vec<Revision>, Option<&str>)> = vec![
            ("nothing", vec![], None),
            ("healthy latest", vec![revision("a", "h1", Healthy)], None),
            ("progressing latest", vec![revision("a", "h1", Healthy), revision("b", "h2", Progressing)], None),
            ("failed, one before", vec![revision("a", "h1", Healthy), revision("b", "h2", Failed)], Some("a")),
            (
                "the newest healthy",
                vec![revision("a", "h1", Healthy), revision("c", "h3", Healthy), revision("b", "h2", Failed)],
                Some("c"),
            ),
            (
                "never the failed template itself",
                vec![revision("a", "h1", Healthy), revision("c", "h2", Healthy), revision("b", "h2", Failed)],
                Some("a"),
            ),
            ("no healthy one", vec![revision("b", "h2", Failed)], None),
        ];
        for (name, history, expected) in cases {
            assert_eq!(rollback_target(&history).map(|r| r.commit.sha.as_str()), expected, "{name}");
        }
    }

    #[test]
    fn a_step_is_held_after_its_template_failed_and_names_its_fallback_until_proved() {
        use Outcome::*;
        use plan::StepAction::{Delete, Held, Roll};
        let step = |action| plan::WorkloadStep {
            kind: crate::manifest::Kind::Deployment,
            namespace: "default".into(),
            name: "web".into(),
            action,
            commit: "head".into(),
            template: "h2".into(),
            replicas: Some(2),
            on_failure: None,
        };
        // (name, history, action, runs (commit, template), on_failure commit, held)
        type Case =
            (&'static str, Vec<Revision>, plan::StepAction, (&'static str, &'static str), Option<&'static str>, bool);
        let cases: Vec<Case> = vec![
            ("new workload", vec![], Roll, ("head", "h2"), None, false),
            ("a new template", vec![revision("a", "h1", Healthy)], Roll, ("head", "h2"), Some("a"), false),
            (
                "still rolling",
                vec![revision("a", "h1", Healthy), revision("b", "h2", Progressing)],
                Roll,
                ("head", "h2"),
                Some("a"),
                false,
            ),
            (
                "proved healthy",
                vec![revision("a", "h1", Healthy), revision("b", "h2", Healthy)],
                Roll,
                ("head", "h2"),
                None,
                false,
            ),
            (
                "failed before",
                vec![revision("a", "h1", Healthy), revision("b", "h2", Failed)],
                Held,
                ("a", "h1"),
                None,
                true,
            ),
            ("failed, nothing healthy", vec![revision("b", "h2", Failed)], Roll, ("head", "h2"), None, true),
            ("deleted", vec![revision("b", "h2", Failed)], Delete, ("head", "h2"), None, false),
        ];
        for (name, history, action, (commit, template), on_failure, held) in cases {
            let mut step = step(if action == Held { Roll } else { action });
            let hold = judge_step(&mut step, &history);
            assert_eq!(step.action, action, "{name}");
            assert_eq!((step.commit.as_str(), step.template.as_str()), (commit, template), "{name}");
            assert_eq!(step.on_failure.as_ref().map(|f| f.commit.as_str()), on_failure, "{name}");
            assert_eq!(hold.is_some(), held, "{name}: {hold:?}");
        }
    }
}
