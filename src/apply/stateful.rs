//! A StatefulSet's next step. Pure: its spec and its pods in, the ordinals to start and the pods
//! to stop out; the clock is an argument.
//!
//! Pods are named `<name>-<ordinal>` and keep that name, and their claims, through every
//! restart, update and move. At most one pod of an ordinal exists: an ordinal whose pod is still
//! stopping is not started again until it is gone. OrderedReady starts ordinals one at a time
//! from 0, each available before the next, and stops them from the highest; Parallel starts
//! and stops them all at once. A RollingUpdate replaces pods from the highest ordinal down to
//! `partition`, at most `maxUnavailable` unavailable at a time; OnDelete leaves running pods on
//! their template. Level-triggered, like the other steps.

use crate::manifest::types::{IntOrString, PodManagementPolicy, StatefulSetSpec, StatefulSetStrategyType};

/// One pod of the StatefulSet as the controller sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrdinalPod {
    pub name: String,
    pub ordinal: usize,
    pub template_hash: String,
    /// When it last became ready; `None` while unready.
    pub ready_since: Option<i64>,
}

/// What one pass does for a StatefulSet, and where it stands.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StatefulStep {
    /// Ordinals to start, lowest first.
    pub create: Vec<usize>,
    /// Pods to stop, by name.
    pub delete: Vec<String>,
    /// Pods of the current template among the wanted ordinals.
    pub updated: usize,
    /// Pods of the wanted ordinals ready for minReadySeconds.
    pub available: usize,
    pub complete: bool,
}

/// How the spec rolls: `(ordered, on_delete, partition, max_unavailable)`.
fn shape(spec: &StatefulSetSpec, replicas: usize) -> (bool, bool, usize, usize) {
    let ordered = spec.pod_management_policy != Some(PodManagementPolicy::Parallel);
    let strategy = spec.update_strategy.as_ref();
    let on_delete = strategy.and_then(|s| s.strategy_type) == Some(StatefulSetStrategyType::OnDelete);
    let rolling = strategy.and_then(|s| s.rolling_update.as_ref());
    let partition = rolling.and_then(|r| r.partition).map_or(0, |p| usize::try_from(p).unwrap_or(0));
    let max_unavailable = rolling
        .and_then(|r| r.max_unavailable.clone())
        .unwrap_or(IntOrString::Int(1))
        .scaled(i32::try_from(replicas).unwrap_or(i32::MAX).max(1), false)
        .unwrap_or(1)
        .max(1);
    (ordered, on_delete, partition, usize::try_from(max_unavailable).unwrap_or(1))
}

/// The next step towards `spec.replicas` pods of `template_hash`. `pods` are the StatefulSet's
/// pods that run or start on Ready nodes; `stopping` holds the ordinals whose earlier pod has
/// not yet stopped.
pub fn step(
    spec: &StatefulSetSpec,
    template_hash: &str,
    pods: &[OrdinalPod],
    stopping: &[usize],
    now: i64,
) -> StatefulStep {
    let replicas = usize::try_from(spec.replicas.unwrap_or(1).max(0)).unwrap_or(0);
    let (ordered, on_delete, partition, max_unavailable) = shape(spec, replicas);
    let min_ready = i64::from(spec.min_ready_seconds.unwrap_or(0).max(0));
    let available = |pod: &OrdinalPod| pod.ready_since.is_some_and(|since| now - since >= min_ready);
    let at = |ordinal: usize| pods.iter().find(|p| p.ordinal == ordinal);
    let mut step = StatefulStep::default();

    // Start the missing ordinals: all of them, or under OrderedReady the first one missing
    // once every ordinal below it is available.
    for ordinal in 0..replicas {
        match at(ordinal) {
            Some(pod) if ordered && !available(pod) => break,
            Some(_) => {}
            None if stopping.contains(&ordinal) => {
                if ordered {
                    break;
                }
            }
            None => {
                step.create.push(ordinal);
                if ordered {
                    break;
                }
            }
        }
    }

    // Ordinals past `replicas` stop: all at once, or under OrderedReady the highest first, one
    // at a time, while the ones below it are available.
    let mut condemned: Vec<&OrdinalPod> = pods.iter().filter(|p| p.ordinal >= replicas).collect();
    condemned.sort_by_key(|p| std::cmp::Reverse(p.ordinal));
    let settled = (0..replicas).all(|o| at(o).is_some_and(available));
    if ordered {
        let stopping_past = stopping.iter().any(|o| *o >= replicas);
        if let Some(highest) = condemned.first().filter(|_| settled && !stopping_past) {
            step.delete.push(highest.name.clone());
        }
    } else {
        step.delete.extend(condemned.iter().map(|p| p.name.clone()));
    }

    // A rolling update replaces the outdated pods at or above the partition, highest first,
    // keeping at most maxUnavailable of the wanted ordinals unavailable.
    if !on_delete {
        let unavailable = (0..replicas).filter(|o| !at(*o).is_some_and(available)).count();
        let mut budget = max_unavailable.saturating_sub(unavailable);
        let all_there = (0..replicas).all(|o| at(o).is_some());
        let mut outdated: Vec<&OrdinalPod> = pods
            .iter()
            .filter(|p| p.ordinal < replicas && p.ordinal >= partition && p.template_hash != template_hash)
            .collect();
        outdated.sort_by_key(|p| std::cmp::Reverse(p.ordinal));
        for pod in outdated {
            // An unavailable outdated pod is replaced at once: it serves nothing.
            if !available(pod) && all_there {
                step.delete.push(pod.name.clone());
                continue;
            }
            if budget == 0 || !all_there {
                break;
            }
            budget -= 1;
            step.delete.push(pod.name.clone());
        }
    }

    step.updated = pods.iter().filter(|p| p.ordinal < replicas && p.template_hash == template_hash).count();
    step.available = pods.iter().filter(|p| p.ordinal < replicas && available(p)).count();
    let current = |pod: &OrdinalPod| on_delete || pod.ordinal < partition || pod.template_hash == template_hash;
    step.complete = step.create.is_empty()
        && step.delete.is_empty()
        && stopping.is_empty()
        && condemned.is_empty()
        && (0..replicas).all(|o| at(o).is_some_and(|p| available(p) && current(p)));
    step
}

/// The names of a StatefulSet's pods: `<name>-<ordinal>`.
pub fn pod_name(stateful_set: &str, ordinal: usize) -> String {
    format!("{stateful_set}-{ordinal}")
}

/// The claim of `template` for the pod `pod`: `<template>-<pod>`, as Kubernetes names it.
pub fn claim_name(template: &str, pod: &str) -> String {
    format!("{template}-{pod}")
}

/// The ordinal of a StatefulSet's pod, from its name.
pub fn ordinal_of(stateful_set: &str, pod: &str) -> Option<usize> {
    let rest = pod.strip_prefix(stateful_set)?.strip_prefix('-')?;
    if rest.is_empty() || (rest.len() > 1 && rest.starts_with('0')) || !rest.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    rest.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::types::{
        LabelSelector, PodSpec, PodTemplateSpec, StatefulSetRollingUpdate, StatefulSetUpdateStrategy, TemplateMeta,
    };

    fn spec(replicas: i32, parallel: bool, partition: i32) -> StatefulSetSpec {
        StatefulSetSpec {
            replicas: Some(replicas),
            selector: LabelSelector::default(),
            template: PodTemplateSpec {
                metadata: TemplateMeta::default(),
                spec: serde_json::from_value::<PodSpec>(serde_json::json!({"containers": []})).unwrap(),
            },
            service_name: None,
            volume_claim_templates: Vec::new(),
            pod_management_policy: Some(if parallel {
                PodManagementPolicy::Parallel
            } else {
                PodManagementPolicy::OrderedReady
            }),
            update_strategy: Some(StatefulSetUpdateStrategy {
                strategy_type: Some(StatefulSetStrategyType::RollingUpdate),
                rolling_update: Some(StatefulSetRollingUpdate {
                    partition: Some(partition),
                    max_unavailable: Some(IntOrString::Int(1)),
                }),
            }),
            min_ready_seconds: Some(0),
            revision_history_limit: None,
            persistent_volume_claim_retention_policy: None,
        }
    }

    fn pod(ordinal: usize, hash: &str, ready: bool) -> OrdinalPod {
        OrdinalPod {
            name: pod_name("db", ordinal),
            ordinal,
            template_hash: hash.into(),
            ready_since: ready.then_some(0),
        }
    }

    #[test]
    fn ordered_ready_starts_one_ordinal_at_a_time() {
        let spec = spec(3, false, 0);
        assert_eq!(step(&spec, "a", &[], &[], 10).create, vec![0]);
        assert_eq!(step(&spec, "a", &[pod(0, "a", false)], &[], 10).create, Vec::<usize>::new());
        assert_eq!(step(&spec, "a", &[pod(0, "a", true)], &[], 10).create, vec![1]);
        let done = step(&spec, "a", &[pod(0, "a", true), pod(1, "a", true), pod(2, "a", true)], &[], 10);
        assert!(done.complete && done.create.is_empty() && done.delete.is_empty());
    }

    #[test]
    fn parallel_starts_and_stops_all_at_once() {
        let spec = spec(3, true, 0);
        assert_eq!(step(&spec, "a", &[], &[], 10).create, vec![0, 1, 2]);
        let down = super::step(
            &super::tests::spec(1, true, 0),
            "a",
            &[pod(0, "a", true), pod(1, "a", true), pod(2, "a", false)],
            &[],
            10,
        );
        assert_eq!(down.delete, vec!["db-2".to_owned(), "db-1".to_owned()]);
    }

    #[test]
    fn scale_down_stops_the_highest_ordinal_first_and_waits_for_it() {
        let spec = spec(1, false, 0);
        let pods = [pod(0, "a", true), pod(1, "a", true), pod(2, "a", true)];
        assert_eq!(step(&spec, "a", &pods, &[], 10).delete, vec!["db-2".to_owned()]);
        assert!(step(&spec, "a", &pods[..2], &[2], 10).delete.is_empty(), "db-2 is still stopping");
        assert_eq!(step(&spec, "a", &pods[..2], &[], 10).delete, vec!["db-1".to_owned()]);
    }

    #[test]
    fn a_rolling_update_goes_from_the_highest_ordinal_down_to_the_partition() {
        let spec = spec(3, false, 1);
        let pods = [pod(0, "old", true), pod(1, "old", true), pod(2, "old", true)];
        assert_eq!(step(&spec, "new", &pods, &[], 10).delete, vec!["db-2".to_owned()]);
        // db-2 gone and stopping: nothing else moves, and it is not started again yet.
        let step2 = step(&spec, "new", &pods[..2], &[2], 10);
        assert!(step2.delete.is_empty() && step2.create.is_empty());
        let step3 = step(&spec, "new", &pods[..2], &[], 10);
        assert_eq!(step3.create, vec![2]);
        let pods = [pod(0, "old", true), pod(1, "old", true), pod(2, "new", true)];
        assert_eq!(step(&spec, "new", &pods, &[], 10).delete, vec!["db-1".to_owned()]);
        let pods = [pod(0, "old", true), pod(1, "new", true), pod(2, "new", true)];
        let done = step(&spec, "new", &pods, &[], 10);
        assert!(done.delete.is_empty() && done.complete, "db-0 is below the partition");
    }

    #[test]
    fn a_stopping_ordinal_is_never_started_twice() {
        let spec = spec(3, true, 0);
        let created = step(&spec, "a", &[pod(0, "a", true)], &[1], 10).create;
        assert_eq!(created, vec![2]);
    }

    #[test]
    fn ordinals_read_only_from_the_statefulsets_own_names() {
        assert_eq!(ordinal_of("db", "db-12"), Some(12));
        assert_eq!(ordinal_of("db", "db-01"), None);
        assert_eq!(ordinal_of("db", "db-x"), None);
        assert_eq!(ordinal_of("db", "dbx-1"), None);
        assert_eq!(ordinal_of("db-1", "db-1-0"), Some(0));
    }

    /// Invariants over random pod sets: never two pods of an ordinal made, never an ordinal
    /// started while it stops, OrderedReady never starts more than one, and a step that
    /// deletes or creates nothing while incomplete waits on something unready or stopping.
    #[test]
    fn random_steps_keep_their_invariants() {
        let mut seed = 0x5eed_u64;
        let mut next = |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        for _ in 0..20_000 {
            let replicas = next(5) as i32;
            let parallel = next(2) == 0;
            let spec = spec(replicas, parallel, next(4) as i32);
            let mut pods = Vec::new();
            let mut stopping = Vec::new();
            for ordinal in 0..6usize {
                match next(4) {
                    0 => {}
                    1 => stopping.push(ordinal),
                    _ => pods.push(pod(ordinal, if next(2) == 0 { "a" } else { "b" }, next(3) != 0)),
                }
            }
            let result = step(&spec, "a", &pods, &stopping, 10);
            for ordinal in &result.create {
                assert!(pods.iter().all(|p| p.ordinal != *ordinal), "{ordinal} exists");
                assert!(!stopping.contains(ordinal), "{ordinal} stops");
                assert!((*ordinal as i32) < replicas);
            }
            if !parallel {
                assert!(result.create.len() <= 1);
            }
            let mut deleted = result.delete.clone();
            deleted.sort();
            deleted.dedup();
            assert_eq!(deleted.len(), result.delete.len(), "a pod deleted twice");
            if result.complete {
                assert!(result.create.is_empty() && result.delete.is_empty() && stopping.is_empty());
                assert_eq!(result.available, replicas as usize);
            }
        }
    }
}
