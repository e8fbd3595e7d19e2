//! The next step of a workload's rollout. Pure: the workload's wishes and its pods in, the pods to
//! create and delete out; the clock is an argument.
//!
//! Level-triggered: the step depends only on what exists now, so calling it again after a crash,
//! or twice in a row, gives the same answer. A rolling update keeps at most `replicas + maxSurge`
//! pods and at least `replicas - maxUnavailable` available ones, where a pod is available once it
//! has been ready for `minReadySeconds`. Recreate deletes every old pod before it creates a new
//! one. Pods of the current template are "updated"; all others are old.

use crate::manifest::defaults::{DEFAULT_SURGE, DEFAULT_UNAVAILABLE};
use crate::manifest::types::{DeploymentStrategyType, IntOrString, RollingUpdate};
use crate::manifest::{Kind, Object, Resource};
use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::sync::Arc;

/// A short, stable hash of what a pod runs: the pod spec with the template's labels and
/// annotations. A change to it means new pods.
pub fn template_hash(resource: &Resource) -> String {
    resource.template_hash.to_string()
}

/// What the replicas of a workload are named and rolled by: its pod template and, unless it
/// opts out (`berth.dev/restart-on-config-change: "false"`), the ConfigMap and Secret values its
/// pods read (their digests, from `resources`, the objects of the same commit), so a changed
/// value rolls the workload out like a changed template. The middle of its pods' names.
pub fn rollout_hash(resource: &Resource, resources: &[Arc<Resource>]) -> String {
    if !resource.restarts_on_config_change() {
        return template_hash(resource);
    }
    rollout_hash_of(resource, config_hash(resource, resources).as_deref())
}

/// [`rollout_hash`] from a config hash already computed.
pub fn rollout_hash_of(resource: &Resource, config: Option<&str>) -> String {
    match config.filter(|_| resource.restarts_on_config_change()) {
        None => template_hash(resource),
        Some(config) => {
            crate::manifest::hex_digest(format!("{}/{config}", resource.template_hash).as_bytes())[..10].to_owned()
        }
    }
}

/// A digest of the ConfigMap and Secret values the pods of `resource` read (their digests, from
/// the commit's `resources`); `None` when they read none.
pub fn config_hash(resource: &Resource, resources: &[Arc<Resource>]) -> Option<String> {
    short_config_hash(resource.config_inputs_digest(crate::manifest::digests_in(resources, &resource.key.namespace)))
}

/// The config hash is the first 16 hex digits of the inputs' digest.
fn short_config_hash(digest: Option<String>) -> Option<String> {
    digest.map(|mut digest| {
        digest.truncate(16);
        digest
    })
}

/// The ConfigMaps and Secrets of one side of a plan, by kind, namespace and name, in one compact
/// list: a plan looks up every value every workload reads on both sides, and a search through
/// this list stays in the cache where one through the resources follows a pointer per step.
pub struct ConfigIndex<'a> {
    entries: Vec<ConfigEntry<'a>>,
}

/// One ConfigMap or Secret: kind, namespace, name, hash, value digests.
type ConfigEntry<'a> = (Kind, &'a str, &'a str, &'a str, &'a BTreeMap<String, String>);

impl<'a> ConfigIndex<'a> {
    /// `resources` sorted by key, as a commit's and a plan's are.
    pub fn new(resources: &'a [Arc<Resource>]) -> ConfigIndex<'a> {
        // Each kind is one run of the sorted resources; the runs in kind order keep the key order.
        let of_kind = |kind: Kind| {
            let start = resources.partition_point(|r| r.key.kind < kind);
            let end = resources.partition_point(|r| r.key.kind <= kind);
            resources[start..end].iter()
        };
        let entries = of_kind(Kind::ConfigMap)
            .chain(of_kind(Kind::Secret))
            .map(|r| (r.key.kind, r.key.namespace.as_str(), r.key.name.as_str(), r.hash.as_str(), r.value_digests()))
            .collect();
        ConfigIndex { entries }
    }

    fn get(&self, kind: Kind, namespace: &str, name: &str) -> Option<&'a BTreeMap<String, String>> {
        let index = self.entries.binary_search_by(|e| (e.0, e.1, e.2).cmp(&(kind, namespace, name))).ok()?;
        Some(self.entries[index].4)
    }

    /// The ConfigMaps and Secrets that differ between two sides (new, gone or changed), in key
    /// order; usually none or a few.
    pub fn changed(&self, other: &ConfigIndex<'a>) -> Vec<(Kind, &'a str, &'a str)> {
        let (mut a, mut b) = (self.entries.iter().peekable(), other.entries.iter().peekable());
        let mut changed = Vec::new();
        loop {
            let (key_a, key_b) = (a.peek().map(|e| (e.0, e.1, e.2)), b.peek().map(|e| (e.0, e.1, e.2)));
            // A side that has run out sorts after every key of the other.
            let order = match (key_a, key_b) {
                (None, None) => return changed,
                (Some(_), None) => Ordering::Less,
                (None, Some(_)) => Ordering::Greater,
                (Some(x), Some(y)) => x.cmp(&y),
            };
            match order {
                Ordering::Equal => {
                    let (x, y) = (a.next(), b.next());
                    if x.map(|e| e.3) != y.map(|e| e.3) {
                        changed.extend(key_a);
                    }
                }
                Ordering::Less => {
                    a.next();
                    changed.extend(key_a);
                }
                Ordering::Greater => {
                    b.next();
                    changed.extend(key_b);
                }
            }
        }
    }

    /// [`config_hash`] through the index.
    pub fn config_hash(&self, resource: &Resource) -> Option<String> {
        if resource.config_reads.is_empty() {
            return None;
        }
        let namespace = resource.key.namespace.as_str();
        short_config_hash(resource.config_inputs_digest(|kind, name| self.get(kind, namespace, name)))
    }
}

/// Whether `resource` reads one of `changed` (from [`ConfigIndex::changed`]).
pub fn reads_any(resource: &Resource, changed: &[(Kind, &str, &str)]) -> bool {
    !changed.is_empty()
        && resource
            .config_reads
            .iter()
            .any(|read| changed.binary_search(&(read.kind, resource.key.namespace.as_str(), &*read.name)).is_ok())
}

/// What one workload's pods are named and rolled by at one commit: the [`config_hash`] of the
/// values they read (`None` when they read none) and the [`rollout_hash`] it makes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rollout {
    pub config: Option<Arc<str>>,
    pub hash: Arc<str>,
}

impl Rollout {
    /// Of `resource`, a workload, with the ConfigMaps and Secrets of its commit in `configs`.
    pub fn of(resource: &Resource, configs: &ConfigIndex<'_>) -> Rollout {
        let config = configs.config_hash(resource);
        let hash = rollout_hash_of(resource, config.as_deref());
        Rollout { config: config.map(Arc::from), hash: Arc::from(hash) }
    }
}

/// The [`Rollout`] of every workload of one commit, by position in its resources sorted by key
/// (`None` at the other kinds): what a plan compares, computed once per commit.
#[derive(Debug, Clone, Default)]
pub struct Rollouts(Arc<[Option<Rollout>]>);

impl Rollouts {
    /// Of `resources`, sorted by key. `previous` is another commit's resources with their
    /// rollouts: a workload that is the very same object there and reads no ConfigMap or Secret
    /// that differs between the two keeps its rollout, so a commit that changes one file costs
    /// the workloads of that file (and those reading its values), not all of them.
    pub fn of(resources: &[Arc<Resource>], previous: Option<(&[Arc<Resource>], &Rollouts)>) -> Rollouts {
        let configs = ConfigIndex::new(resources);
        let before_configs;
        let mut reuse = None;
        if let Some((before, rollouts)) = previous.filter(|(before, rollouts)| before.len() == rollouts.0.len()) {
            let at: std::collections::HashMap<*const Resource, &Rollout> = before
                .iter()
                .zip(rollouts.0.iter())
                .filter_map(|(r, rollout)| Some((Arc::as_ptr(r), rollout.as_ref()?)))
                .collect();
            before_configs = ConfigIndex::new(before);
            reuse = Some((at, configs.changed(&before_configs)));
        }
        let rollouts = resources
            .iter()
            .map(|resource| {
                if !resource.key.kind.is_workload() {
                    return None;
                }
                let kept = reuse.as_ref().and_then(|(at, changed)| {
                    let kept = at.get(&Arc::as_ptr(resource))?;
                    (!reads_any(resource, changed)).then(|| (*kept).clone())
                });
                Some(kept.unwrap_or_else(|| Rollout::of(resource, &configs)))
            })
            .collect();
        Rollouts(rollouts)
    }

    /// The rollout of the workload at `index` of the resources these were made of.
    pub fn get(&self, index: usize) -> Option<&Rollout> {
        self.0.get(index)?.as_ref()
    }

    /// Whether these were made of `resources` (as many entries as objects).
    pub fn fits(&self, resources: &[Arc<Resource>]) -> bool {
        self.0.len() == resources.len()
    }
}

/// A pod of the workload as the control plane sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodView {
    pub name: String,
    pub template_hash: String,
    pub ordinal: usize,
    /// Seconds since the Unix epoch at which the pod last became ready; `None` while unready.
    pub ready_since: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Strategy {
    RollingUpdate { max_surge: IntOrString, max_unavailable: IntOrString },
    Recreate,
}

impl Strategy {
    /// A rolling update with Kubernetes' defaults (25% each) for what `rolling` leaves out.
    pub fn rolling(rolling: Option<&RollingUpdate>) -> Strategy {
        let or = |value: Option<&IntOrString>, default: &str| {
            value.cloned().unwrap_or_else(|| IntOrString::String(default.to_owned()))
        };
        Strategy::RollingUpdate {
            max_surge: or(rolling.and_then(|r| r.max_surge.as_ref()), DEFAULT_SURGE),
            max_unavailable: or(rolling.and_then(|r| r.max_unavailable.as_ref()), DEFAULT_UNAVAILABLE),
        }
    }

    /// How a replicated workload replaces its pods, and its minReadySeconds: the one reading
    /// of a manifest's strategy that the planner and the controller share. `None` for kinds
    /// that are not replicated (Pods, DaemonSets).
    pub fn of(resource: &Resource) -> Option<(Strategy, i32)> {
        match &resource.object {
            Object::Deployment(deployment) => {
                let strategy = deployment.spec.strategy.as_ref();
                let strategy = if strategy.and_then(|s| s.strategy_type) == Some(DeploymentStrategyType::Recreate) {
                    Strategy::Recreate
                } else {
                    Strategy::rolling(strategy.and_then(|s| s.rolling_update.as_ref()))
                };
                Some((strategy, deployment.spec.min_ready_seconds.unwrap_or(0)))
            }
            Object::ReplicaSet(rs) => Some((Strategy::rolling(None), rs.spec.min_ready_seconds.unwrap_or(0))),
            Object::ReplicationController(rc) => {
                Some((Strategy::rolling(None), rc.spec.min_ready_seconds.unwrap_or(0)))
            }
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wishes {
    pub replicas: i32,
    pub template_hash: String,
    pub strategy: Strategy,
    pub min_ready_seconds: i64,
}

/// What to do now, and where the rollout stands.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Step {
    /// Ordinals of pods of the current template to create.
    pub create: Vec<usize>,
    /// Names of pods to delete, unready and old ones first.
    pub delete: Vec<String>,
    /// Pods of the current template.
    pub updated: usize,
    /// Pods of the current template that are available.
    pub updated_available: usize,
    /// Available pods of any template.
    pub available: usize,
    /// Every pod of the workload.
    pub total: usize,
    /// True when exactly `replicas` pods of the current template exist and all are available.
    pub complete: bool,
}

fn available(pod: &PodView, wishes: &Wishes, now: i64) -> bool {
    pod.ready_since.is_some_and(|since| now - since >= wishes.min_ready_seconds)
}

/// Kubernetes' resolution of maxSurge (rounded up) and maxUnavailable (rounded down); when both
/// come to zero, one pod may be unavailable, or nothing could move.
pub fn limits(strategy: &Strategy, replicas: i32) -> (usize, usize) {
    match strategy {
        Strategy::Recreate => (0, usize::try_from(replicas).unwrap_or(0)),
        Strategy::RollingUpdate { max_surge, max_unavailable } => {
            let surge = max_surge.scaled(replicas, true).unwrap_or(0).max(0) as usize;
            let unavailable = max_unavailable.scaled(replicas, false).unwrap_or(0).max(0) as usize;
            if surge == 0 && unavailable == 0 { (0, 1) } else { (surge, unavailable) }
        }
    }
}

/// Deleting prefers what serves least: unready before ready, then the highest ordinals.
fn by_deletion_order(mut list: Vec<&PodView>) -> Vec<&PodView> {
    list.sort_by_key(|p| (p.ready_since.is_some(), std::cmp::Reverse(p.ordinal)));
    list
}

pub fn step(wishes: &Wishes, pods: &[PodView], now: i64) -> Step {
    let replicas = usize::try_from(wishes.replicas).unwrap_or(0);
    let (updated, old): (Vec<&PodView>, Vec<&PodView>) =
        pods.iter().partition(|p| p.template_hash == wishes.template_hash);
    let mut result = Step {
        updated: updated.len(),
        updated_available: updated.iter().filter(|p| available(p, wishes, now)).count(),
        available: pods.iter().filter(|p| available(p, wishes, now)).count(),
        total: pods.len(),
        ..Step::default()
    };
    let free_ordinals = |count: usize| -> Vec<usize> {
        let taken: std::collections::BTreeSet<usize> = updated.iter().map(|p| p.ordinal).collect();
        (0..).filter(|o| !taken.contains(o)).take(count).collect()
    };

    if old.is_empty() {
        // No rollout: scale the current template to the wished number.
        if updated.len() < replicas {
            result.create = free_ordinals(replicas - updated.len());
        } else if updated.len() > replicas {
            result.delete = by_deletion_order(updated.clone())
                .into_iter()
                .take(updated.len() - replicas)
                .map(|p| p.name.clone())
                .collect();
        }
        result.complete = updated.len() == replicas && result.updated_available == replicas;
        return result;
    }

    match &wishes.strategy {
        Strategy::Recreate => {
            // Every old pod goes first; the new ones start once none is left.
            result.delete = old.iter().map(|p| p.name.clone()).collect();
        }
        Strategy::RollingUpdate { .. } => {
            let (surge, unavailable) = limits(&wishes.strategy, wishes.replicas);
            let max_total = replicas + surge;
            let min_available = replicas.saturating_sub(unavailable);
            // Scale up the new template within the surge.
            let room = max_total.saturating_sub(pods.len());
            let wanted = replicas.saturating_sub(updated.len());
            result.create = free_ordinals(room.min(wanted));
            // Scale down old pods: unready ones cost no availability; ready ones only while
            // enough stay available, counting the new pods that are.
            let mut can_remove_available = result.available.saturating_sub(min_available);
            // Never keep more pods than needed once the new ones are ready.
            let excess = (pods.len() + result.create.len()).saturating_sub(replicas);
            for pod in by_deletion_order(old) {
                if result.delete.len() >= excess {
                    break;
                }
                if available(pod, wishes, now) {
                    if can_remove_available == 0 {
                        continue;
                    }
                    can_remove_available -= 1;
                }
                result.delete.push(pod.name.clone());
            }
        }
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_000;

    fn wishes(replicas: i32, surge: &str, unavailable: &str) -> Wishes {
        let value = |v: &str| v.parse::<i32>().map(IntOrString::Int).unwrap_or_else(|_| IntOrString::String(v.into()));
        Wishes {
            replicas,
            template_hash: "new".into(),
            strategy: Strategy::RollingUpdate { max_surge: value(surge), max_unavailable: value(unavailable) },
            min_ready_seconds: 0,
        }
    }

    fn pods(hash: &str, count: usize, ready: bool) -> Vec<PodView> {
        (0..count)
            .map(|ordinal| PodView {
                name: format!("{hash}-{ordinal}"),
                template_hash: hash.into(),
                ordinal,
                ready_since: ready.then_some(NOW - 60),
            })
            .collect()
    }

    /// Carries a step out: its deletes go, its creates appear, ready or not.
    fn apply(alive: &mut Vec<PodView>, step: Step, created_ready: bool) {
        alive.retain(|p| !step.delete.contains(&p.name));
        for ordinal in step.create {
            let ready_since = created_ready.then_some(NOW - 60);
            alive.push(PodView { name: format!("new-{ordinal}"), template_hash: "new".into(), ordinal, ready_since });
        }
    }

    /// Plays a rollout to its end: every created pod turns ready before the next step. Returns
    /// the pods alive after each step.
    fn play(wishes: &Wishes, start: Vec<PodView>) -> Vec<(usize, usize, usize)> {
        let mut alive = start;
        let mut trace = Vec::new();
        for _ in 0..50 {
            let next = step(wishes, &alive, NOW);
            if next.complete || (next.create.is_empty() && next.delete.is_empty()) {
                break;
            }
            apply(&mut alive, next, true);
            let available = alive.len();
            let new = alive.iter().filter(|p| p.template_hash == "new").count();
            trace.push((alive.len(), new, available));
        }
        trace
    }

    #[test]
    fn a_new_workload_starts_all_replicas() {
        let next = step(&wishes(3, "25%", "25%"), &[], NOW);
        assert_eq!(next.create, [0, 1, 2]);
        assert!(!next.complete);
        let running = step(&wishes(3, "25%", "25%"), &pods("new", 3, true), NOW);
        assert!(running.complete && running.create.is_empty() && running.delete.is_empty());
    }

    #[test]
    fn rolling_update_with_surge_one_and_no_unavailability() {
        let wishes = wishes(3, "1", "0");
        let trace = play(&wishes, pods("old", 3, true));
        // Never more than 4 pods, never fewer than 3 available.
        for (total, _, available) in &trace {
            assert!(*total <= 4 && *available >= 3, "{trace:?}");
        }
        assert_eq!(trace.last().map(|t| t.1), Some(3), "all replicas end on the new template: {trace:?}");
    }

    #[test]
    fn rolling_update_respects_both_limits_on_four_replicas() {
        let wishes = wishes(4, "25%", "25%");
        let first = step(&wishes, &pods("old", 4, true), NOW);
        assert_eq!(first.create, [0], "25% of 4 is one surge pod");
        assert_eq!(first.delete.len(), 1, "and one old pod may go: 25% unavailable");
        let trace = play(&wishes, pods("old", 4, true));
        for (total, _, available) in &trace {
            assert!(*total <= 5 && *available >= 3, "{trace:?}");
        }
    }

    #[test]
    fn crashing_new_pods_never_take_availability_below_the_floor() {
        let wishes = wishes(3, "1", "0");
        let mut alive = pods("old", 3, true);
        // Two steps with new pods that never turn ready.
        for _ in 0..3 {
            let next = step(&wishes, &alive, NOW);
            apply(&mut alive, next, false);
        }
        let old_left = alive.iter().filter(|p| p.template_hash == "old").count();
        assert_eq!(old_left, 3, "old pods stay while the new ones are not ready: {alive:?}");
        assert_eq!(alive.len(), 4, "and only maxSurge extra pods exist");
    }

    #[test]
    fn min_ready_seconds_delays_availability() {
        let mut wishes = wishes(1, "1", "0");
        wishes.min_ready_seconds = 30;
        let mut alive = pods("old", 1, true);
        alive.push(PodView {
            name: "new-0".into(),
            template_hash: "new".into(),
            ordinal: 0,
            ready_since: Some(NOW - 10),
        });
        assert!(step(&wishes, &alive, NOW).delete.is_empty(), "ready for 10 s of 30: the old pod stays");
        assert_eq!(step(&wishes, &alive, NOW + 25).delete, ["old-0"]);
    }

    #[test]
    fn recreate_removes_everything_old_before_creating() {
        let mut wishes = wishes(2, "1", "0");
        wishes.strategy = Strategy::Recreate;
        let first = step(&wishes, &pods("old", 2, true), NOW);
        assert_eq!((first.create.len(), first.delete.len()), (0, 2));
        let second = step(&wishes, &[], NOW);
        assert_eq!(second.create, [0, 1]);
    }

    #[test]
    fn scaling_keeps_the_template_and_removes_unready_first() {
        let mut current = pods("new", 3, true);
        current[0].ready_since = None;
        let down = step(&wishes(1, "25%", "25%"), &current, NOW);
        assert_eq!(down.delete, ["new-0", "new-2"]);
        let up = step(&wishes(5, "25%", "25%"), &pods("new", 3, true), NOW);
        assert_eq!(up.create, [3, 4]);
    }
}
