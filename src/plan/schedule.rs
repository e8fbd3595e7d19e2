//! The scheduler: which node runs each pod. Pure: nodes and pods in, placements out.
//!
//! A node fits a pod when it is Ready, carries every label of the pod's nodeSelector, and has
//! the pod's CPU and memory requests left in its allocatable after the pods already placed on
//! it. Among the nodes that fit, a pod goes where its workload has the fewest replicas (spread),
//! then where the most of the node is free, then by name, so the same input always gives the
//! same placements. A pod no node fits stays pending with the reason, counted per cause as
//! Kubernetes says it: `0/3 nodes fit: 2 insufficient memory, 1 node selector mismatch`.

use crate::manifest::quantity::Resources;
use crate::manifest::types::{Labels, PodSpec};
use crate::manifest::{Kind, Resource};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeInfo {
    pub name: String,
    pub ready: bool,
    pub labels: Labels,
    pub allocatable: Resources,
}

/// A pod that runs, or is being placed: what it takes from its node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodRequest {
    pub pod: String,
    /// Replicas of one workload are spread across nodes.
    pub workload: String,
    pub requests: Resources,
    pub node_selector: Labels,
    /// A DaemonSet's pod belongs to one node; it fits there or stays pending.
    pub pinned: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placement {
    Node(String),
    Unschedulable(String),
}

/// Places `pending` pods onto `nodes`, which already run `placed` (pod, node) pairs.
pub fn schedule(
    nodes: &[NodeInfo],
    placed: &[(PodRequest, String)],
    pending: &[PodRequest],
) -> Vec<(String, Placement)> {
    let index: HashMap<&str, usize> = nodes.iter().enumerate().map(|(i, n)| (n.name.as_str(), i)).collect();
    let mut used = vec![Resources::default(); nodes.len()];
    // Per workload, its replicas on each node (by node index).
    let mut per_workload: HashMap<&str, Vec<u32>> = HashMap::new();
    for (pod, node) in placed {
        if let Some(&i) = index.get(node.as_str()) {
            used[i] = used[i].plus(pod.requests);
            per_workload.entry(pod.workload.as_str()).or_insert_with(|| vec![0; nodes.len()])[i] += 1;
        }
    }
    let mut placements = Vec::with_capacity(pending.len());
    for pod in pending {
        let replicas_on = per_workload.entry(pod.workload.as_str()).or_insert_with(|| vec![0; nodes.len()]);
        let mut best: Option<(u32, u64, &str, usize)> = None;
        let mut reasons = Reasons::default();
        let candidates: Box<dyn Iterator<Item = usize>> = match &pod.pinned {
            Some(node) => Box::new(index.get(node.as_str()).copied().into_iter()),
            None => Box::new(0..nodes.len()),
        };
        for i in candidates {
            let node = &nodes[i];
            if !node.ready {
                reasons.not_ready += 1;
                continue;
            }
            if !pod.node_selector.iter().all(|(k, v)| node.labels.get(k) == Some(v)) {
                reasons.selector += 1;
                continue;
            }
            let free_cpu = node.allocatable.cpu_millis.saturating_sub(used[i].cpu_millis);
            let free_memory = node.allocatable.memory_bytes.saturating_sub(used[i].memory_bytes);
            let cpu_short = pod.requests.cpu_millis > free_cpu;
            let memory_short = pod.requests.memory_bytes > free_memory;
            if cpu_short || memory_short {
                reasons.cpu += u32::from(cpu_short);
                reasons.memory += u32::from(memory_short);
                continue;
            }
            let replicas = replicas_on[i];
            // Free share of the node after this pod, in parts per million of the scarcer resource.
            let share = |free: u64, request: u64, total: u64| {
                let parts = u128::from(free - request) * 1_000_000;
                u64::try_from(parts.checked_div(u128::from(total)).unwrap_or(0)).unwrap_or(u64::MAX)
            };
            let free = share(free_cpu, pod.requests.cpu_millis, node.allocatable.cpu_millis).min(share(
                free_memory,
                pod.requests.memory_bytes,
                node.allocatable.memory_bytes,
            ));
            let better = match best {
                None => true,
                Some((best_replicas, best_free, best_name, _)) => {
                    (replicas, std::cmp::Reverse(free), node.name.as_str())
                        < (best_replicas, std::cmp::Reverse(best_free), best_name)
                }
            };
            if better {
                best = Some((replicas, free, &node.name, i));
            }
        }
        match best {
            Some((_, _, name, i)) => {
                used[i] = used[i].plus(pod.requests);
                replicas_on[i] += 1;
                placements.push((pod.pod.clone(), Placement::Node(name.to_owned())));
            }
            None => {
                let considered = if pod.pinned.is_some() { 1 } else { nodes.len() };
                let largest = nodes.iter().fold(Resources::default(), |most, node| Resources {
                    cpu_millis: most.cpu_millis.max(node.allocatable.cpu_millis),
                    memory_bytes: most.memory_bytes.max(node.allocatable.memory_bytes),
                });
                let reason = match &pod.pinned {
                    Some(node) if !index.contains_key(node.as_str()) => format!("node {node} is gone"),
                    _ if !nodes.is_empty() && pod.requests.cpu_millis > largest.cpu_millis => format!(
                        "{}; it requests more cpu than any node has ({}m at most)",
                        reasons.describe(considered),
                        largest.cpu_millis
                    ),
                    _ if !nodes.is_empty() && pod.requests.memory_bytes > largest.memory_bytes => format!(
                        "{}; it requests more memory than any node has ({} MiB at most)",
                        reasons.describe(considered),
                        largest.memory_bytes >> 20
                    ),
                    _ => reasons.describe(considered),
                };
                placements.push((pod.pod.clone(), Placement::Unschedulable(reason)));
            }
        }
    }
    placements
}

#[derive(Default)]
struct Reasons {
    not_ready: u32,
    selector: u32,
    cpu: u32,
    memory: u32,
}

impl Reasons {
    fn describe(&self, nodes: usize) -> String {
        let mut parts = Vec::new();
        for (count, what) in [
            (self.cpu, "insufficient cpu"),
            (self.memory, "insufficient memory"),
            (self.selector, "node selector mismatch"),
            (self.not_ready, "not ready"),
        ] {
            if count > 0 {
                parts.push(format!("{count} {what}"));
            }
        }
        if parts.is_empty() {
            format!("0/{nodes} nodes fit: no nodes")
        } else {
            format!("0/{nodes} nodes fit: {}", parts.join(", "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn node(name: &str, cpu: u64, memory_mib: u64, labels: &[(&str, &str)]) -> NodeInfo {
        NodeInfo {
            name: name.into(),
            ready: true,
            labels: labels.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
            allocatable: Resources { cpu_millis: cpu, memory_bytes: memory_mib << 20 },
        }
    }

    fn pod(name: &str, workload: &str, cpu: u64, memory_mib: u64) -> PodRequest {
        PodRequest {
            pod: name.into(),
            workload: workload.into(),
            requests: Resources { cpu_millis: cpu, memory_bytes: memory_mib << 20 },
            node_selector: BTreeMap::new(),
            pinned: None,
        }
    }

    #[test]
    fn a_pods_requests_count_init_containers_and_sidecars_as_kubernetes_does() {
        let container = |name: &str, cpu: &str, sidecar: bool| {
            let mut value = serde_json::json!({"name": name, "image": "x:1", "resources": {"requests": {"cpu": cpu}}});
            if sidecar {
                value["restartPolicy"] = "Always".into();
            }
            value
        };
        let spec = |init: Vec<serde_json::Value>, apps: Vec<serde_json::Value>| -> PodSpec {
            serde_json::from_value(serde_json::json!({"initContainers": init, "containers": apps})).unwrap()
        };
        let cpu = |spec: &PodSpec| requests(spec).cpu_millis;
        // Apps sum; a bigger init container wins.
        assert_eq!(
            cpu(&spec(
                vec![container("i", "100m", false)],
                vec![container("a", "200m", false), container("b", "300m", false)]
            )),
            500
        );
        assert_eq!(cpu(&spec(vec![container("i", "2", false)], vec![container("a", "200m", false)])), 2000);
        // A sidecar runs beside everything after it: the init container after it, and the apps.
        let with_sidecar =
            spec(vec![container("s", "250m", true), container("i", "1", false)], vec![container("a", "500m", false)]);
        assert_eq!(cpu(&with_sidecar), 1250);
        let small_init = spec(
            vec![container("s", "250m", true), container("i", "100m", false)],
            vec![container("a", "500m", false)],
        );
        assert_eq!(cpu(&small_init), 750);
    }

    #[test]
    fn replicas_spread_across_nodes() {
        let nodes = [node("a", 4000, 4096, &[]), node("b", 4000, 4096, &[]), node("c", 4000, 4096, &[])];
        let pending: Vec<_> = (0..6).map(|i| pod(&format!("web-{i}"), "web", 100, 64)).collect();
        let placed = schedule(&nodes, &[], &pending);
        let mut per_node: BTreeMap<String, u32> = BTreeMap::new();
        for (_, placement) in &placed {
            let Placement::Node(node) = placement else { panic!("{placement:?}") };
            *per_node.entry(node.clone()).or_default() += 1;
        }
        assert_eq!(per_node.values().copied().collect::<Vec<_>>(), [2, 2, 2]);
    }

    #[test]
    fn requests_selectors_and_readiness_decide_what_fits() {
        let mut nodes =
            [node("a", 1000, 256, &[]), node("b", 8000, 8192, &[("disk", "ssd")]), node("c", 8000, 8192, &[])];
        nodes[2].ready = false;
        let mut big = pod("db-0", "db", 500, 1024);
        big.node_selector.insert("disk".into(), "ssd".into());
        let placed = schedule(&nodes, &[], &[big.clone()]);
        assert_eq!(placed[0].1, Placement::Node("b".into()));

        // b is now full for another 7.5 GiB pod; a lacks memory; c is not ready.
        let mut huge = pod("db-1", "db", 500, 7680);
        huge.node_selector.clear();
        let placed = schedule(&nodes, &[(big, "b".into())], &[huge]);
        assert_eq!(placed[0].1, Placement::Unschedulable("0/3 nodes fit: 2 insufficient memory, 1 not ready".into()));

        let mut picky = pod("x", "x", 10, 10);
        picky.node_selector.insert("zone".into(), "mars".into());
        let placed = schedule(&nodes, &[], &[picky]);
        assert_eq!(
            placed[0].1,
            Placement::Unschedulable("0/3 nodes fit: 2 node selector mismatch, 1 not ready".into())
        );
    }

    #[test]
    fn pinned_pods_go_to_their_node_or_nowhere() {
        let nodes = [node("a", 1000, 1024, &[]), node("b", 1000, 1024, &[])];
        let mut daemon = pod("agent-b", "agent", 100, 100);
        daemon.pinned = Some("b".into());
        assert_eq!(schedule(&nodes, &[], &[daemon.clone()])[0].1, Placement::Node("b".into()));
        daemon.pinned = Some("gone".into());
        assert_eq!(schedule(&nodes, &[], &[daemon])[0].1, Placement::Unschedulable("node gone is gone".into()));
    }
}

/// Requests of a pod, as Kubernetes reckons them: the sum of its containers' and sidecars',
/// saturating (three containers asking for `9E` each is more than any node, not a small number
/// after a wrap), or an init container's with the sidecars before it when that is more (init
/// containers run one at a time, before the others).
pub fn requests(spec: &PodSpec) -> Resources {
    effective(spec, |r| &r.requests)
}

/// Limits of a pod, reckoned as its requests are (a container without one counts as none).
pub fn limits(spec: &PodSpec) -> Resources {
    effective(spec, |r| &r.limits)
}

type Pick = fn(&crate::manifest::types::ResourceRequirements) -> &BTreeMap<String, crate::manifest::quantity::Quantity>;

/// Sidecars (init containers with `restartPolicy: Always`) run from their turn on, beside
/// whatever starts after them: each init container counts with the sidecars before it, and
/// the containers with every sidecar.
fn effective(spec: &PodSpec, pick: Pick) -> Resources {
    let most = |a: Resources, b: Resources| Resources {
        cpu_millis: a.cpu_millis.max(b.cpu_millis),
        memory_bytes: a.memory_bytes.max(b.memory_bytes),
    };
    let mut sidecars = Resources::default();
    let mut peak = Resources::default();
    for init in &spec.init_containers {
        if init.is_sidecar() {
            sidecars = sidecars.plus(amount(init, pick));
        } else {
            peak = most(peak, sidecars.plus(amount(init, pick)));
        }
    }
    let apps = spec.containers.iter().fold(sidecars, |total, c| total.plus(amount(c, pick)));
    most(peak, apps)
}

fn amount(container: &crate::manifest::types::Container, pick: Pick) -> Resources {
    // Validation refuses negative quantities; a value past u64 is more than any node has.
    let clamp = |value: i128| u64::try_from(value.max(0)).unwrap_or(u64::MAX);
    let Some(resources) = &container.resources else { return Resources::default() };
    Resources {
        cpu_millis: pick(resources).get("cpu").map_or(0, |q| clamp(q.millis())),
        memory_bytes: pick(resources).get("memory").map_or(0, |q| clamp(q.millis() / 1000)),
    }
}

/// Where the first pods a plan starts for a workload would go, as the scheduler says it at
/// the time the plan is made. The controller places each batch when it starts it, against the
/// nodes as they are then; this says it ahead, for the reviewer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Forecast {
    pub kind: Kind,
    pub namespace: String,
    pub name: String,
    /// The pods of the first batch, by node.
    pub nodes: BTreeMap<String, u32>,
    /// Pods of the first batch no node fits now, with the scheduler's reason.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub pending: Vec<String>,
}

/// The placements of the pods each change of `plan` starts first: a new workload's replicas
/// (a DaemonSet's one per Ready matching node), the replicas a scale-up adds, the first batch of
/// a rollout. `placed` are the pods that run now; each forecast counts the ones before it.
pub fn forecast(
    plan: &super::Plan,
    desired: &[Arc<Resource>],
    nodes: &[NodeInfo],
    placed: &[(PodRequest, String)],
) -> Vec<Forecast> {
    let mut placed = placed.to_vec();
    let mut forecasts = Vec::new();
    for change in &plan.changes {
        let Some(rollout) = &change.rollout else { continue };
        if !matches!(change.action, super::Action::Create | super::Action::Update) {
            continue;
        }
        let key = change.key();
        let Ok(index) = desired.binary_search_by(|r| r.key.cmp(&key)) else { continue };
        let resource = &desired[index];
        let Some(spec) = resource.object.pod_spec() else { continue };
        let workload = format!("{}/{}/{}", key.kind.name(), key.namespace, key.name);
        let request = |ordinal: usize, pinned: Option<String>| PodRequest {
            pod: format!("{}/{}-planned-{ordinal}", key.namespace, key.name),
            workload: workload.clone(),
            requests: requests(spec),
            node_selector: spec.node_selector.clone(),
            pinned,
        };
        let running = placed.iter().filter(|(p, _)| p.workload == workload).count();
        let pending: Vec<PodRequest> = if key.kind == Kind::DaemonSet {
            if change.action == super::Action::Update && rollout.restarts.unwrap_or(0) == 0 {
                continue;
            }
            let on: std::collections::BTreeSet<&str> =
                placed.iter().filter(|(p, _)| p.workload == workload).map(|(_, n)| n.as_str()).collect();
            nodes
                .iter()
                .filter(|n| n.ready && spec.node_selector.iter().all(|(k, v)| n.labels.get(k) == Some(v)))
                .filter(|n| change.action == super::Action::Update || !on.contains(n.name.as_str()))
                .take(if change.action == super::Action::Update { first_batch(rollout) } else { usize::MAX })
                .enumerate()
                .map(|(i, n)| request(i, Some(n.name.clone())))
                .collect()
        } else {
            let count = match rollout.strategy {
                super::RolloutStrategy::Create | super::RolloutStrategy::Scale => {
                    usize::try_from(rollout.replicas.unwrap_or(0)).unwrap_or(0).saturating_sub(running)
                }
                _ => first_batch(rollout),
            };
            (0..count).map(|i| request(i, None)).collect()
        };
        if pending.is_empty() {
            continue;
        }
        let mut forecast = Forecast {
            kind: key.kind,
            namespace: key.namespace.clone(),
            name: key.name.clone(),
            nodes: BTreeMap::new(),
            pending: Vec::new(),
        };
        let mut reasons: BTreeMap<String, u32> = BTreeMap::new();
        for (pod, (_, placement)) in pending.iter().zip(schedule(nodes, &placed, &pending)) {
            match placement {
                Placement::Node(node) => {
                    *forecast.nodes.entry(node.clone()).or_default() += 1;
                    placed.push((pod.clone(), node));
                }
                Placement::Unschedulable(reason) => *reasons.entry(reason).or_default() += 1,
            }
        }
        forecast.pending = reasons
            .into_iter()
            .map(|(reason, pods)| {
                format!("{} pending: {reason}", if pods == 1 { "1 pod".to_owned() } else { format!("{pods} pods") })
            })
            .collect();
        forecasts.push(forecast);
    }
    forecasts
}

/// How many new pods a rollout starts in its first batch.
fn first_batch(rollout: &super::Rollout) -> usize {
    let first = rollout.batches.first().copied().or(rollout.restarts).or(rollout.replicas).unwrap_or(0);
    usize::try_from(first).unwrap_or(0)
}
