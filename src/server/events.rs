//! Events from what a node reports, pure: the report before and after, the events between
//! them. A container that started, restarted after a crash (BackOff), failed a probe
//! (Unhealthy), was killed for memory (OOMKilled), or whose image could not be pulled (Failed).

use crate::manifest::ObjectKey;
use crate::nodes::protocol::{ContainerStateName, ContainerStatus, PodPhase, PodStatus};
use crate::store::{Change, NewEvent, Outcome, SyncOutcome};

/// At most this many of one event from one report: counts beyond it are not worth the writes.
const MAX_REPEATS: u32 = 20;

/// The events that tell what changed from `before` to `after`, one node's reports.
pub fn from_reports(node: &str, before: &[PodStatus], after: &[PodStatus]) -> Vec<NewEvent> {
    let mut events = Vec::new();
    for pod in after {
        let earlier = before.iter().find(|b| b.namespace == pod.namespace && b.pod == pod.pod && b.uid == pod.uid);
        let owner = pod.workload_kind.map(|kind| format!("{kind}/{}", pod.workload_name)).unwrap_or_default();
        let event = |kind: &'static str, reason: &str, message: String| NewEvent {
            namespace: pod.namespace.clone(),
            object: format!("Pod/{}", pod.pod),
            owner: owner.clone(),
            kind,
            reason: reason.to_owned(),
            message,
        };
        for container in &pod.containers {
            let was: Option<&ContainerStatus> =
                earlier.and_then(|e| e.containers.iter().find(|c| c.name == container.name));
            let name = &container.name;
            if let Some(pulled) = container.pulled.as_ref().filter(|p| Some(*p) != was.and_then(|w| w.pulled.as_ref()))
            {
                events.push(event("Normal", "Pulled", format!("container {name}: {pulled}")));
            }
            let new_attempt =
                container.container_id.as_ref().filter(|id| Some(*id) != was.and_then(|w| w.container_id.as_ref()));
            if new_attempt.is_some() {
                events.push(event("Normal", "Created", format!("created container {name}")));
            }
            let restarted = was.is_some_and(|w| container.restart_count > w.restart_count);
            if restarted {
                let how = container.last_termination.as_deref().unwrap_or("it stopped");
                events.push(event(
                    "Warning",
                    "BackOff",
                    format!("back-off restarting failed container {name} in pod {}: {how}", pod.pod),
                ));
                if how.contains("OOMKilled") {
                    events.push(event("Warning", "OOMKilled", format!("container {name} ran out of memory")));
                }
            }
            let running = container.state == ContainerStateName::Running;
            let was_running = was.is_some_and(|w| w.state == ContainerStateName::Running);
            if running && (!was_running || restarted) {
                events.push(event("Normal", "Started", format!("started container {name} on node {node}")));
            }
            // Each failed probe is one more of the same Unhealthy event (its count), as many
            // as failed since the last report, up to a bound.
            let same_attempt = was.filter(|w| w.container_id == container.container_id);
            let new_failures = container.probe_failures.saturating_sub(same_attempt.map_or(0, |w| w.probe_failures));
            if new_failures > 0 {
                let error =
                    container.last_error.as_deref().filter(|e| e.contains(" probe")).unwrap_or("a probe failed");
                let unhealthy = event("Warning", "Unhealthy", format!("container {name}: {error}"));
                events.extend(std::iter::repeat_n(unhealthy, new_failures.min(MAX_REPEATS) as usize));
            }
            let error = container.last_error.as_deref();
            let was_error = was.and_then(|w| w.last_error.as_deref());
            if let Some(error) = error.filter(|e| Some(*e) != was_error) {
                if matches!(container.reason.as_deref(), Some("ImagePullBackOff" | "ErrImagePull")) {
                    events.push(event("Warning", "Failed", format!("container {name}: {error}")));
                }
            }
        }
        let finished = |p: &PodStatus| matches!(p.phase, PodPhase::Succeeded | PodPhase::Failed);
        if finished(pod) && !earlier.is_some_and(finished) {
            let (kind, reason) =
                if pod.phase == PodPhase::Succeeded { ("Normal", "Completed") } else { ("Warning", "Failed") };
            events.push(event(kind, reason, format!("pod {} {}", pod.pod, pod.phase.as_str().to_lowercase())));
        }
    }
    events
}

/// What `--for KIND/NAME` names: the kind as events name it (`Pod`, `Deployment`, `Node`,
/// `Commit`) and the name; an error that says what is wrong.
pub fn parse_target(target: &str) -> Result<(String, String), String> {
    let (kind, name) =
        target.split_once('/').ok_or_else(|| format!("`{target}` is not KIND/NAME, such as pod/web-0"))?;
    let kind = match kind.to_lowercase().as_str() {
        "node" | "nodes" | "no" => "Node".to_owned(),
        "commit" | "commits" => "Commit".to_owned(),
        other => match crate::manifest::Kind::from_cli(other) {
            Some(kind) => kind.name().to_owned(),
            None => return Err(format!("`{kind}` is not a kind berth runs, nor node or commit")),
        },
    };
    Ok((kind, name.to_owned()))
}

/// Whether an event about `object` (`Pod/web-7f9c-0`), a pod of `owner` (`Deployment/web`)
/// when it is one, is one of `kind/name`'s: its own, or for a workload its pods'.
pub fn is_about(object: &str, owner: &str, kind: &str, name: &str) -> bool {
    [object, owner].into_iter().any(|o| o.split_once('/').is_some_and(|(k, n)| k == kind && n == name))
}

/// The events of what the control loop decided: a sync started, waits, failed, finished; a
/// workload's rollout started, finished or failed. A sync's events are about its commit
/// (`Commit/1a2b3c4`, no namespace); a rollout's about its workload.
pub fn from_changes(changes: &[Change]) -> Vec<NewEvent> {
    let sync = |sha: &str, kind: &'static str, reason: &str, message: String| NewEvent {
        namespace: String::new(),
        object: format!("Commit/{}", &sha[..sha.len().min(7)]),
        owner: String::new(),
        kind,
        reason: reason.to_owned(),
        message,
    };
    let rollout = |key: &ObjectKey, kind: &'static str, reason: &str, message: String| NewEvent {
        namespace: key.namespace.clone(),
        object: format!("{}/{}", key.kind, key.name),
        owner: String::new(),
        kind,
        reason: reason.to_owned(),
        message,
    };
    let of_sync = |sha: &str, outcome: SyncOutcome, reason: &str, message: &str| -> Option<NewEvent> {
        let said = |fallback: &str| if reason.is_empty() { fallback.to_owned() } else { reason.to_owned() };
        Some(match outcome {
            SyncOutcome::Waiting => sync(sha, "Normal", "SyncWaiting", said("waits for approval")),
            SyncOutcome::Progressing => sync(sha, "Normal", "SyncStarted", format!("applying: {message}")),
            SyncOutcome::Synced => sync(sha, "Normal", "Synced", "applied, and every workload is healthy".to_owned()),
            SyncOutcome::Degraded => sync(sha, "Warning", "SyncDegraded", said("a workload is not healthy")),
            SyncOutcome::Failed => sync(sha, "Warning", "SyncFailed", said("the commit failed")),
            SyncOutcome::Superseded => {
                sync(sha, "Normal", "SyncSuperseded", said("the branch moved on before it finished"))
            }
        })
    };
    changes
        .iter()
        .filter_map(|change| match change {
            Change::AddSync(record) => of_sync(
                &record.commit.sha,
                record.outcome,
                &record.reason,
                record.commit.message.lines().next().unwrap_or(""),
            ),
            Change::SyncOutcome { commit, outcome, reason, .. } => of_sync(commit, *outcome, reason, "approved"),
            Change::AddRevision(revision) => {
                let at = revision.commit.short();
                Some(match revision.outcome {
                    Outcome::Failed => rollout(&revision.key, "Warning", "RolloutFailed", revision.reason.clone()),
                    _ => rollout(
                        &revision.key,
                        "Normal",
                        "RolloutStarted",
                        format!("rolling out the spec of commit {at}"),
                    ),
                })
            }
            Change::FinishRevision { key, commit, outcome, reason, .. } => {
                let at = &commit[..commit.len().min(7)];
                Some(match outcome {
                    Outcome::Failed => {
                        rollout(key, "Warning", "RolloutFailed", format!("commit {at}: {reason}; rolling back"))
                    }
                    _ => rollout(key, "Normal", "RolloutFinished", format!("the spec of commit {at} is rolled out")),
                })
            }
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(restarts: u32, state: ContainerStateName, error: Option<&str>) -> PodStatus {
        PodStatus {
            pod: "web-0".into(),
            namespace: "shop".into(),
            spec_hash: "h".into(),
            uid: "u".into(),
            phase: PodPhase::Running,
            ready: false,
            containers: vec![ContainerStatus {
                name: "main".into(),
                state,
                ready: false,
                restart_count: restarts,
                exit_code: None,
                last_error: error.map(str::to_owned),
                reason: None,
                last_termination: (restarts > 0).then(|| "exited with code 1: boom".to_owned()),
                last_output: None,
                probe_failures: u32::from(error.is_some_and(|e| e.contains(" probe"))),
                container_id: None,
                pulled: None,
            }],
            host_ports: Vec::new(),
            workload_kind: None,
            workload_name: String::new(),
            terminating: false,
        }
    }

    fn reasons(events: &[NewEvent]) -> Vec<&str> {
        events.iter().map(|e| e.reason.as_str()).collect()
    }

    #[test]
    fn a_start_a_crash_and_a_failed_probe_are_events() {
        let running = pod(0, ContainerStateName::Running, None);
        assert_eq!(reasons(&from_reports("n1", &[], std::slice::from_ref(&running))), ["Started"]);
        assert!(from_reports("n1", std::slice::from_ref(&running), std::slice::from_ref(&running)).is_empty());
        let crashed = pod(1, ContainerStateName::Waiting, None);
        let events = from_reports("n1", std::slice::from_ref(&running), std::slice::from_ref(&crashed));
        assert_eq!(reasons(&events), ["BackOff"]);
        assert!(events[0].message.contains("exited with code 1: boom"), "{events:?}");
        let unhealthy = pod(1, ContainerStateName::Running, Some("readiness probe: HTTP 500"));
        let events = from_reports("n1", std::slice::from_ref(&crashed), std::slice::from_ref(&unhealthy));
        assert_eq!(reasons(&events), ["Started", "Unhealthy"]);
        assert_eq!(events[1].object, "Pod/web-0");

        // The same probe failing again, three times since the last report, is three more.
        let mut again = unhealthy.clone();
        again.containers[0].probe_failures = 4;
        let events = from_reports("n1", std::slice::from_ref(&unhealthy), std::slice::from_ref(&again));
        assert_eq!(reasons(&events), ["Unhealthy"; 3]);
        // A new attempt counts from nothing.
        let mut restarted = again.clone();
        restarted.containers[0].container_id = Some("second".into());
        restarted.containers[0].probe_failures = 1;
        let events = from_reports("n1", std::slice::from_ref(&again), std::slice::from_ref(&restarted));
        assert_eq!(reasons(&events), ["Created", "Unhealthy"]);
    }

    #[test]
    fn a_pull_and_each_new_attempt_are_events_once() {
        let mut created = pod(0, ContainerStateName::Waiting, None);
        created.containers[0].pulled = Some("pulled image app:1 in 2.5 s".into());
        created.containers[0].container_id = Some("first".into());
        let events = from_reports("n1", &[], std::slice::from_ref(&created));
        assert_eq!(reasons(&events), ["Pulled", "Created"]);
        assert_eq!(events[0].message, "container main: pulled image app:1 in 2.5 s");
        let mut running = created.clone();
        running.containers[0].state = ContainerStateName::Running;
        assert_eq!(
            reasons(&from_reports("n1", std::slice::from_ref(&created), std::slice::from_ref(&running))),
            ["Started"]
        );
        // The next attempt is a new container, not a new pull.
        let mut again = pod(1, ContainerStateName::Running, None);
        again.containers[0].pulled = running.containers[0].pulled.clone();
        again.containers[0].container_id = Some("second".into());
        let events = from_reports("n1", std::slice::from_ref(&running), std::slice::from_ref(&again));
        assert_eq!(reasons(&events), ["Created", "BackOff", "Started"]);
    }

    #[test]
    fn an_event_is_about_its_object_and_a_workloads_are_about_its_pods_only() {
        assert!(is_about("Pod/web-7f9c-0", "Deployment/web", "Deployment", "web"));
        assert!(is_about("Deployment/web", "", "Deployment", "web"));
        assert!(is_about("Pod/web-7f9c-0", "Deployment/web", "Pod", "web-7f9c-0"));
        // A workload whose name begins another's does not take its pods.
        assert!(!is_about("Pod/web-api-7f9c-0", "Deployment/web-api", "Deployment", "web"));
        assert!(!is_about("Pod/web-0", "StatefulSet/web", "Deployment", "web"));
        assert_eq!(parse_target("node/n1"), Ok(("Node".to_owned(), "n1".to_owned())));
        assert_eq!(parse_target("deploy/web"), Ok(("Deployment".to_owned(), "web".to_owned())));
        assert!(parse_target("web").unwrap_err().contains("KIND/NAME"));
        assert!(parse_target("widget/web").unwrap_err().contains("not a kind"));
    }
}
