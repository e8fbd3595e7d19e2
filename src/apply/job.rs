//! A Job's next step, pure and level-triggered: from its spec, its pods and what their nodes
//! report, which pods to start and stop, and where the Job stands.
//!
//! A Job runs once per spec (its rollout hash): the control loop's revisions remember that a
//! spec finished ([`JobRecord`]), so a finished Job whose pods are gone (after its TTL) is
//! not run again, and a changed spec runs again. Failed pods stay (their logs can be read)
//! until the Job finishes and its TTL passes; each retry waits 10 s, doubled per failure up to
//! 6 minutes, as Kubernetes' backoff does.

use crate::manifest::types::{
    CompletionMode, ExitCodeOperator, JobSpec, PodFailurePolicyAction, PodFailurePolicyRule, RestartPolicy,
};
use crate::nodes::protocol::{PodAssignment, PodPhase, PodStatus};
use std::collections::{BTreeSet, HashMap};

/// The first retry's delay; each further failure doubles it.
pub const BACKOFF_BASE_SECONDS: i64 = 10;
/// The longest a retry waits.
pub const BACKOFF_MAX_SECONDS: i64 = 360;

/// What the control loop remembers of a Job's run of one spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobRecord {
    pub spec_hash: String,
    /// The commit whose run it is: a hook that runs at every sync has a run per commit.
    pub commit: String,
    pub started_at: i64,
    /// When it finished, whether it failed, and the reason it says.
    pub finished: Option<(i64, bool, String)>,
}

/// A pod of a Job, as the step reads it.
#[derive(Debug, Clone)]
pub struct JobPod<'a> {
    pub pod: &'a PodAssignment,
    pub report: Option<&'a PodStatus>,
    /// When the controller first saw it failed.
    pub failed_since: Option<i64>,
}

/// Where a Job stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobState {
    /// Not started: a PostSync hook waits for the rest of its commit, or a Job for the
    /// commit's PreSync hooks.
    Waiting,
    Running,
    Suspended,
    Complete,
    Failed(String),
}

/// One pod to start: its index (an Indexed Job's) and its attempt, unique among the Job's pods.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Start {
    pub index: Option<usize>,
    pub attempt: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobStep {
    pub start: Vec<Start>,
    pub delete: Vec<String>,
    pub state: JobState,
    pub active: usize,
    pub succeeded: usize,
    /// Failures counted toward backoffLimit.
    pub failed: usize,
    /// Why no pod starts now although one is due: a backoff, with the seconds left.
    pub waiting: Option<String>,
}

/// The index of an Indexed Job's pod and its attempt, from its name (`NAME-HASH-INDEX-ATTEMPT`),
/// or the attempt alone (`NAME-HASH-ATTEMPT`).
pub fn parse_name(pod: &str, indexed: bool) -> (Option<usize>, usize) {
    let mut parts = pod.rsplit('-');
    let attempt = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    let index = if indexed { parts.next().and_then(|p| p.parse().ok()) } else { None };
    (index, attempt)
}

/// The reason a failed pod's policy rule gives, and its action: the first rule that matches a
/// container's exit code. `None` when no rule matches (the failure counts).
fn rule_for<'r>(rules: &'r [PodFailurePolicyRule], report: &PodStatus) -> Option<(&'r PodFailurePolicyRule, String)> {
    for rule in rules {
        let codes = &rule.on_exit_codes;
        for container in &report.containers {
            if codes.container_name.as_ref().is_some_and(|name| name != &container.name) {
                continue;
            }
            let Some(code) = container.exit_code.filter(|c| *c != 0) else { continue };
            let listed = codes.values.iter().any(|v| i64::from(*v) == code);
            if listed == (codes.operator == ExitCodeOperator::In) {
                return Some((rule, format!("container {} exited with code {code}", container.name)));
            }
        }
    }
    None
}

/// How a failed pod ended, in words: its first container that exited with an error.
fn ending(report: Option<&PodStatus>) -> String {
    let Some(report) = report else { return "it failed".to_owned() };
    for container in &report.containers {
        if let Some(code) = container.exit_code.filter(|c| *c != 0) {
            return match &container.last_output {
                Some(output) => format!("container {} exited with code {code}: {output}", container.name),
                None => format!("container {} exited with code {code}", container.name),
            };
        }
    }
    "it failed".to_owned()
}

/// The delay before the retry after `failures` counted failures.
pub fn backoff(failures: usize) -> i64 {
    let doublings = u32::try_from(failures.saturating_sub(1)).unwrap_or(u32::MAX).min(10);
    (BACKOFF_BASE_SECONDS << doublings).min(BACKOFF_MAX_SECONDS)
}

/// Decides a Job's next step. `pods` are its pods of this spec; `older` the names of its pods
/// of another spec (they are deleted); `record` what the loop remembers of this spec's run.
pub fn step(spec: &JobSpec, pods: &[JobPod<'_>], older: &[String], record: Option<&JobRecord>, now: i64) -> JobStep {
    let indexed = spec.completion_mode == Some(CompletionMode::Indexed);
    let mut out = JobStep {
        start: Vec::new(),
        delete: older.to_vec(),
        state: JobState::Running,
        active: 0,
        succeeded: 0,
        failed: 0,
        waiting: None,
    };
    let phase = |p: &JobPod<'_>| p.report.map(|r| r.phase);
    let succeeded: Vec<&JobPod<'_>> = pods.iter().filter(|p| phase(p) == Some(PodPhase::Succeeded)).collect();
    let failed: Vec<&JobPod<'_>> = pods.iter().filter(|p| phase(p) == Some(PodPhase::Failed)).collect();
    let active: Vec<&JobPod<'_>> =
        pods.iter().filter(|p| !matches!(phase(p), Some(PodPhase::Succeeded | PodPhase::Failed))).collect();
    out.succeeded = succeeded.len();
    out.active = active.len();

    // A finished run stays finished: its pods stay until the TTL passes, and none starts.
    if let Some((at, failed_run, reason)) = record.and_then(|r| r.finished.clone()) {
        out.state = if failed_run { JobState::Failed(reason) } else { JobState::Complete };
        out.delete.extend(active.iter().map(|p| p.pod.pod.clone()));
        if spec.ttl_seconds_after_finished.is_some_and(|ttl| now >= at + i64::from(ttl)) {
            out.delete.extend(pods.iter().map(|p| p.pod.pod.clone()));
        }
        out.delete.sort();
        out.delete.dedup();
        out.active = 0;
        out.failed = failed.len();
        return out;
    }

    // Failures: a failed pod under Never (unless a rule ignores it or fails the Job at once),
    // and every container restart under OnFailure.
    let rules = spec.pod_failure_policy.as_ref().map(|p| p.rules.as_slice()).unwrap_or_default();
    let mut fail_now: Option<String> = None;
    let mut counted: Vec<&JobPod<'_>> = Vec::new();
    for pod in &failed {
        match pod.report.and_then(|r| rule_for(rules, r)) {
            Some((rule, what)) if rule.action == PodFailurePolicyAction::FailJob => {
                fail_now.get_or_insert(format!(
                    "PodFailurePolicy: pod {} failed ({what}), which a FailJob rule matches",
                    pod.pod.pod
                ));
            }
            Some((rule, _)) if rule.action == PodFailurePolicyAction::Ignore => {}
            _ => counted.push(pod),
        }
    }
    let restarts: usize = if spec.template.spec.restart_policy == Some(RestartPolicy::OnFailure) {
        pods.iter().filter_map(|p| p.report).flat_map(|r| r.containers.iter().map(|c| c.restart_count as usize)).sum()
    } else {
        0
    };
    out.failed = counted.len() + restarts;
    let backoff_limit = usize::try_from(spec.backoff_limit.unwrap_or(6)).unwrap_or(0);
    let started = record.map_or(now, |r| r.started_at);

    let done = if indexed {
        let completions = usize::try_from(spec.completions.unwrap_or(1)).unwrap_or(0);
        let indexes: BTreeSet<usize> =
            succeeded.iter().filter_map(|p| parse_name(&p.pod.pod, true).0).filter(|i| *i < completions).collect();
        indexes.len() >= completions
    } else {
        match spec.completions {
            Some(completions) => out.succeeded >= usize::try_from(completions).unwrap_or(0),
            // A work queue: done when one succeeded and none runs.
            None => out.succeeded > 0 && active.is_empty(),
        }
    };
    let failure = if let Some(reason) = fail_now {
        Some(reason)
    } else if out.failed > backoff_limit {
        let last = counted.iter().max_by_key(|p| parse_name(&p.pod.pod, indexed).1);
        let how = last.map(|p| format!("; the last: pod {}: {}", p.pod.pod, ending(p.report))).unwrap_or_default();
        Some(format!("BackoffLimitExceeded: {} failures, more than backoffLimit {backoff_limit}{how}", out.failed))
    } else {
        spec.active_deadline_seconds
            .filter(|d| now - started >= *d)
            .map(|d| format!("DeadlineExceeded: the Job ran longer than activeDeadlineSeconds ({d} s)"))
    };
    if done || failure.is_some() {
        out.state = match failure.filter(|_| !done) {
            Some(reason) => JobState::Failed(reason),
            None => JobState::Complete,
        };
        out.delete.extend(active.iter().map(|p| p.pod.pod.clone()));
        out.active = 0;
        return out;
    }
    if spec.suspend == Some(true) {
        out.state = JobState::Suspended;
        out.delete.extend(active.iter().map(|p| p.pod.pod.clone()));
        out.active = 0;
        return out;
    }

    // Start what is due, after the backoff of the last counted failure.
    if !counted.is_empty() || restarts > 0 {
        let last_failure = counted.iter().filter_map(|p| p.failed_since).max();
        if let Some(since) = last_failure {
            let due = since + backoff(out.failed);
            if now < due {
                out.waiting =
                    Some(format!("a retry waits {} s more (backoff after {} failures)", due - now, out.failed));
                return out;
            }
        }
    }
    let parallelism = usize::try_from(spec.parallelism.unwrap_or(1)).unwrap_or(0);
    let mut next_attempt: HashMap<Option<usize>, usize> = HashMap::new();
    for pod in pods {
        let (index, attempt) = parse_name(&pod.pod.pod, indexed);
        let next = next_attempt.entry(index).or_default();
        *next = (*next).max(attempt + 1);
    }
    // Attempts also count the pods of other specs, so that a name is never reused at once.
    for name in older {
        let (index, attempt) = parse_name(name, indexed);
        let next = next_attempt.entry(index).or_default();
        *next = (*next).max(attempt + 1);
    }
    let room = parallelism.saturating_sub(active.len());
    if indexed {
        let completions = usize::try_from(spec.completions.unwrap_or(1)).unwrap_or(0);
        let busy: BTreeSet<usize> =
            succeeded.iter().chain(&active).filter_map(|p| parse_name(&p.pod.pod, true).0).collect();
        for index in (0..completions).filter(|i| !busy.contains(i)).take(room) {
            let attempt = next_attempt.get(&Some(index)).copied().unwrap_or(0);
            out.start.push(Start { index: Some(index), attempt });
        }
    } else {
        let wanted = match spec.completions {
            Some(completions) => {
                usize::try_from(completions).unwrap_or(0).saturating_sub(out.succeeded).saturating_sub(active.len())
            }
            // A work queue starts no new pod once one succeeded.
            None if out.succeeded > 0 => 0,
            None => parallelism,
        };
        let first = next_attempt.get(&None).copied().unwrap_or(0);
        out.start.extend((first..first + wanted.min(room)).map(|attempt| Start { index: None, attempt }));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::Kind;
    use crate::manifest::types::{PodFailurePolicy, PodFailurePolicyOnExitCodes, PodTemplateSpec};
    use crate::nodes::protocol::{ContainerStateName, ContainerStatus};

    fn spec(completions: Option<i32>, parallelism: i32, backoff_limit: i32) -> JobSpec {
        let template: PodTemplateSpec = serde_json::from_value(serde_json::json!({
            "spec": {"restartPolicy": "Never", "containers": [{"name": "main", "image": "x"}]}
        }))
        .unwrap();
        JobSpec {
            template,
            completions,
            parallelism: Some(parallelism),
            backoff_limit: Some(backoff_limit),
            active_deadline_seconds: None,
            ttl_seconds_after_finished: None,
            completion_mode: None,
            suspend: None,
            pod_failure_policy: None,
        }
    }

    fn assignment(name: &str) -> PodAssignment {
        PodAssignment {
            pod: name.into(),
            namespace: "ns".into(),
            workload_kind: Kind::Job,
            workload_name: "migrate".into(),
            revision: "c".into(),
            spec_hash: "h".into(),
            config_hash: String::new(),
            uid: name.into(),
            spec: serde_json::from_value(serde_json::json!({"containers": []})).unwrap(),
            env: Default::default(),
            files: Default::default(),
            secret_env: Default::default(),
            node_env: Vec::new(),
        }
    }

    fn report(name: &str, phase: PodPhase, exit: Option<i64>) -> PodStatus {
        PodStatus {
            pod: name.into(),
            namespace: "ns".into(),
            spec_hash: "h".into(),
            uid: name.into(),
            phase,
            ready: false,
            containers: vec![ContainerStatus {
                name: "main".into(),
                state: if exit.is_some() { ContainerStateName::Terminated } else { ContainerStateName::Running },
                ready: false,
                restart_count: 0,
                exit_code: exit,
                last_error: None,
                reason: None,
                last_termination: None,
                last_output: None,
                probe_failures: 0,
                container_id: None,
                pulled: None,
            }],
            host_ports: Vec::new(),
            workload_kind: Some(Kind::Job),
            workload_name: "migrate".into(),
            terminating: false,
        }
    }

    /// A pod as (name, phase, exit code, failed since).
    type Given<'a> = (&'a str, Option<PodPhase>, Option<i64>, Option<i64>);
    type Owned = (String, Option<PodPhase>, Option<i64>, Option<i64>);

    /// Runs the step over `pods`.
    fn run(spec: &JobSpec, pods: &[Given<'_>], record: Option<&JobRecord>, now: i64) -> JobStep {
        let assignments: Vec<PodAssignment> = pods.iter().map(|(n, ..)| assignment(n)).collect();
        let reports: Vec<Option<PodStatus>> =
            pods.iter().map(|(n, phase, exit, _)| phase.map(|p| report(n, p, *exit))).collect();
        let views: Vec<JobPod<'_>> = assignments
            .iter()
            .zip(&reports)
            .zip(pods)
            .map(|((pod, report), (.., since))| JobPod { pod, report: report.as_ref(), failed_since: *since })
            .collect();
        step(spec, &views, &[], record, now)
    }

    #[test]
    fn completions_run_parallelism_at_a_time_until_done() {
        let job = spec(Some(3), 2, 6);
        let first = run(&job, &[], None, 0);
        assert_eq!(first.start, vec![Start { index: None, attempt: 0 }, Start { index: None, attempt: 1 }]);
        let running = [("m-h-0", Some(PodPhase::Running), None, None), ("m-h-1", Some(PodPhase::Running), None, None)];
        assert!(run(&job, &running, None, 1).start.is_empty());
        let one_done =
            [("m-h-0", Some(PodPhase::Succeeded), Some(0), None), ("m-h-1", Some(PodPhase::Running), None, None)];
        let step = run(&job, &one_done, None, 2);
        assert_eq!(step.start, vec![Start { index: None, attempt: 2 }]);
        let all_done = [
            ("m-h-0", Some(PodPhase::Succeeded), Some(0), None),
            ("m-h-1", Some(PodPhase::Succeeded), Some(0), None),
            ("m-h-2", Some(PodPhase::Succeeded), Some(0), None),
        ];
        let step = run(&job, &all_done, None, 3);
        assert_eq!((step.state, step.succeeded, step.start.len()), (JobState::Complete, 3, 0));
    }

    #[test]
    fn failures_back_off_then_exhaust_the_limit() {
        let job = spec(Some(1), 1, 2);
        let failed_once = [("m-h-0", Some(PodPhase::Failed), Some(1), Some(100))];
        let waiting = run(&job, &failed_once, None, 105);
        assert!(waiting.start.is_empty() && waiting.waiting.is_some(), "{waiting:?}");
        let retry = run(&job, &failed_once, None, 110);
        assert_eq!(retry.start, vec![Start { index: None, attempt: 1 }]);
        let twice = [
            ("m-h-0", Some(PodPhase::Failed), Some(1), Some(100)),
            ("m-h-1", Some(PodPhase::Failed), Some(1), Some(120)),
        ];
        assert!(run(&job, &twice, None, 135).start.is_empty(), "the second retry waits 20 s");
        assert_eq!(run(&job, &twice, None, 140).start.len(), 1);
        let thrice = [
            ("m-h-0", Some(PodPhase::Failed), Some(1), Some(100)),
            ("m-h-1", Some(PodPhase::Failed), Some(1), Some(120)),
            ("m-h-2", Some(PodPhase::Failed), Some(3), Some(150)),
        ];
        let step = run(&job, &thrice, None, 150);
        match step.state {
            JobState::Failed(reason) => {
                assert!(reason.starts_with("BackoffLimitExceeded: 3 failures, more than backoffLimit 2"), "{reason}");
                assert!(reason.contains("m-h-2") && reason.contains("exited with code 3"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(backoff(1), 10);
        assert_eq!(backoff(2), 20);
        assert_eq!(backoff(40), BACKOFF_MAX_SECONDS);
    }

    #[test]
    fn an_indexed_job_runs_each_index_until_it_succeeds() {
        let mut job = spec(Some(3), 3, 6);
        job.completion_mode = Some(CompletionMode::Indexed);
        let first = run(&job, &[], None, 0);
        let indexes: Vec<Option<usize>> = first.start.iter().map(|s| s.index).collect();
        assert_eq!(indexes, vec![Some(0), Some(1), Some(2)]);
        let pods = [
            ("m-h-0-0", Some(PodPhase::Succeeded), Some(0), None),
            ("m-h-1-0", Some(PodPhase::Failed), Some(1), Some(0)),
            ("m-h-2-0", Some(PodPhase::Running), None, None),
        ];
        let step = run(&job, &pods, None, 100);
        assert_eq!(step.start, vec![Start { index: Some(1), attempt: 1 }]);
    }

    #[test]
    fn a_finished_run_is_not_run_again_and_goes_after_its_ttl() {
        let mut job = spec(Some(1), 1, 6);
        job.ttl_seconds_after_finished = Some(60);
        let record = JobRecord {
            spec_hash: "h".into(),
            commit: "c".into(),
            started_at: 0,
            finished: Some((10, false, String::new())),
        };
        let done = [("m-h-0", Some(PodPhase::Succeeded), Some(0), None)];
        let step = run(&job, &done, Some(&record), 20);
        assert_eq!((step.state.clone(), step.delete.len(), step.start.len()), (JobState::Complete, 0, 0));
        let step = run(&job, &done, Some(&record), 70);
        assert_eq!(step.delete, vec!["m-h-0".to_owned()]);
        // With its pods gone, it stays complete and starts nothing.
        let step = run(&job, &[], Some(&record), 80);
        assert_eq!((step.state, step.start.len()), (JobState::Complete, 0));
    }

    #[test]
    fn a_failure_policy_fails_at_once_or_ignores() {
        let mut job = spec(Some(1), 1, 6);
        let rule = |action, values: Vec<i32>| PodFailurePolicyRule {
            action,
            on_exit_codes: PodFailurePolicyOnExitCodes { container_name: None, operator: ExitCodeOperator::In, values },
        };
        job.pod_failure_policy = Some(PodFailurePolicy {
            rules: vec![
                rule(PodFailurePolicyAction::FailJob, vec![42]),
                rule(PodFailurePolicyAction::Ignore, vec![137]),
            ],
        });
        let fatal = [("m-h-0", Some(PodPhase::Failed), Some(42), Some(0))];
        assert!(matches!(run(&job, &fatal, None, 1).state, JobState::Failed(r) if r.contains("code 42")));
        let ignored = [("m-h-0", Some(PodPhase::Failed), Some(137), Some(0))];
        let step = run(&job, &ignored, None, 1);
        assert_eq!((step.failed, step.start.len()), (0, 1), "an ignored failure is retried at once");
    }

    #[test]
    fn a_deadline_fails_the_job_and_stops_its_pods() {
        let mut job = spec(Some(1), 1, 6);
        job.active_deadline_seconds = Some(30);
        let record = JobRecord { spec_hash: "h".into(), commit: "c".into(), started_at: 0, finished: None };
        let running = [("m-h-0", Some(PodPhase::Running), None, None)];
        assert_eq!(run(&job, &running, Some(&record), 29).state, JobState::Running);
        let step = run(&job, &running, Some(&record), 30);
        assert!(matches!(step.state, JobState::Failed(ref r) if r.starts_with("DeadlineExceeded")), "{step:?}");
        assert_eq!(step.delete, vec!["m-h-0".to_owned()]);
    }

    /// A Job driven to its end by random pod outcomes: at every step it never runs more than
    /// `parallelism` pods, never starts more than it still needs, names every pod afresh, stops
    /// only its own pods, and it ends, Complete or Failed, within a bounded number of steps.
    #[test]
    fn a_job_under_random_outcomes_keeps_its_invariants_and_ends() {
        use proptest::prelude::*;
        let config = proptest::test_runner::Config { cases: 64, ..Default::default() };
        let strategy = (1i32..5, 1i32..4, 0i32..4, any::<bool>(), proptest::collection::vec(0u8..3, 1..200));
        proptest::test_runner::TestRunner::new(config)
            .run(&strategy, |(completions, parallelism, backoff_limit, indexed, mut outcomes)| {
                // Some pod ends at some point; one that runs forever keeps its Job running.
                if outcomes.iter().all(|o| *o == 2) {
                    outcomes.push(0);
                }
                let mut job = spec(Some(completions), parallelism, backoff_limit);
                if indexed {
                    job.completion_mode = Some(CompletionMode::Indexed);
                }
                // Each pod: name, phase, exit code, failed since.
                let mut pods: Vec<Owned> = Vec::new();
                let mut seen: std::collections::HashSet<String> = std::collections::HashSet::new();
                let mut outcomes = outcomes.into_iter().cycle();
                let mut now = 0;
                for _ in 0..2000 {
                    let given: Vec<Given<'_>> = pods.iter().map(|(n, p, e, f)| (n.as_str(), *p, *e, *f)).collect();
                    let step = run(&job, &given, None, now);
                    let active = pods.iter().filter(|p| p.1 == Some(PodPhase::Running)).count();
                    for name in &step.delete {
                        prop_assert!(pods.iter().any(|p| &p.0 == name), "deletes a pod it does not have: {name}");
                    }
                    match step.state {
                        JobState::Complete | JobState::Failed(_) => {
                            prop_assert!(step.start.is_empty());
                            return Ok(());
                        }
                        _ => {}
                    }
                    prop_assert!(active + step.start.len() <= parallelism as usize, "{step:?}");
                    let succeeded = pods.iter().filter(|p| p.1 == Some(PodPhase::Succeeded)).count();
                    if !indexed {
                        prop_assert!(succeeded + active + step.start.len() <= completions as usize, "{step:?}");
                    }
                    for start in &step.start {
                        let name = match start.index {
                            Some(index) => {
                                prop_assert!(index < completions as usize);
                                format!("m-h-{index}-{}", start.attempt)
                            }
                            None => format!("m-h-{}", start.attempt),
                        };
                        prop_assert!(seen.insert(name.clone()), "a name is used twice: {name}");
                        pods.push((name, Some(PodPhase::Running), None, None));
                    }
                    // The nodes: each running pod succeeds, fails or keeps running.
                    for pod in pods.iter_mut().filter(|p| p.1 == Some(PodPhase::Running)) {
                        match outcomes.next().unwrap_or(0) {
                            0 => *pod = (pod.0.clone(), Some(PodPhase::Succeeded), Some(0), None),
                            1 => *pod = (pod.0.clone(), Some(PodPhase::Failed), Some(1), Some(now)),
                            _ => {}
                        }
                    }
                    now += 30;
                }
                prop_assert!(false, "the Job did not end");
                Ok(())
            })
            .unwrap();
    }
}
