//! What the nodes' heartbeats say of resource usage, kept in memory: each node's and each
//! pod's last sample, and a point about every [`POINT_SECONDS`] for the last
//! [`HISTORY_SECONDS`] (the UI's graphs), the newest sample last. Bounded: a series holds about
//! `HISTORY_SECONDS / POINT_SECONDS + 2` points, and a pod's series goes when its node's
//! sample no longer has it. Usage is not
//! written to the store: a restarted server knows it again within one sample.
//!
//! [`UsageBook::average`] is the one place that says a pod's usage over a window, for what
//! scales on it.

use crate::nodes::protocol::{ContainerUsage, NodeUsage};
use serde::Serialize;
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

/// The time between two points of a series.
pub const POINT_SECONDS: i64 = 30;
/// How far back a series goes.
pub const HISTORY_SECONDS: i64 = 3600;

/// Usage at one moment: CPU in millicores, memory in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Point {
    pub at: i64,
    pub cpu_millis: u64,
    pub memory_bytes: u64,
}

#[derive(Default)]
struct Series(VecDeque<Point>);

impl Series {
    /// Adds `point`: the last point is always the newest sample, and it stays in the series
    /// only once it is `POINT_SECONDS` after the one before it. Drops what is older than the
    /// history.
    fn add(&mut self, point: Point) {
        let len = self.0.len();
        // The newest point so far stays when it is far enough from the one before it.
        if len >= 2 && self.0[len - 1].at - self.0[len - 2].at < POINT_SECONDS {
            self.0[len - 1] = point;
        } else {
            self.0.push_back(point);
        }
        while self.0.front().is_some_and(|first| point.at - first.at > HISTORY_SECONDS) {
            self.0.pop_front();
        }
    }
}

struct PodEntry {
    node: String,
    containers: Vec<ContainerUsage>,
    latest: Point,
    series: Series,
}

#[derive(Default)]
struct NodeEntry {
    latest: Option<NodeUsage>,
    series: Series,
}

/// A pod's last sample, as `berth top pods` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PodSample {
    pub namespace: String,
    pub pod: String,
    pub node: String,
    pub sampled_at: i64,
    pub cpu_millis: u64,
    pub memory_bytes: u64,
    pub containers: Vec<ContainerUsage>,
}

#[derive(Default)]
pub struct UsageBook {
    inner: Mutex<Book>,
}

#[derive(Default)]
struct Book {
    nodes: HashMap<String, NodeEntry>,
    /// By (namespace, pod).
    pods: HashMap<(String, String), PodEntry>,
}

impl UsageBook {
    /// Takes a node's sample; the same sample again (heartbeats repeat it) changes nothing.
    pub fn record(&self, node: &str, usage: &NodeUsage) {
        let mut book = crate::lock(&self.inner);
        let entry = book.nodes.entry(node.to_owned()).or_default();
        if entry.latest.as_ref().is_some_and(|l| l.sampled_at >= usage.sampled_at) {
            return;
        }
        if let (Some(cpu_millis), Some(memory_bytes)) = (usage.cpu_millis, usage.memory_bytes) {
            entry.series.add(Point { at: usage.sampled_at, cpu_millis, memory_bytes });
        }
        entry.latest = Some(NodeUsage { pods: Vec::new(), ..usage.clone() });
        // The node's pods that this sample does not have no longer run there.
        let sampled: std::collections::HashSet<(&str, &str)> =
            usage.pods.iter().map(|p| (p.namespace.as_str(), p.pod.as_str())).collect();
        book.pods.retain(|(namespace, pod), entry| {
            entry.node != node || sampled.contains(&(namespace.as_str(), pod.as_str()))
        });
        for pod in &usage.pods {
            let (cpu_millis, memory_bytes) = pod.total();
            let point = Point { at: usage.sampled_at, cpu_millis, memory_bytes };
            let key = (pod.namespace.clone(), pod.pod.clone());
            let entry = book.pods.entry(key).or_insert_with(|| PodEntry {
                node: node.to_owned(),
                containers: Vec::new(),
                latest: point,
                series: Series::default(),
            });
            entry.node = node.to_owned();
            entry.containers.clone_from(&pod.containers);
            entry.latest = point;
            entry.series.add(point);
        }
    }

    /// Every pod's last sample, by namespace and name.
    pub fn pods(&self) -> Vec<PodSample> {
        let book = crate::lock(&self.inner);
        let mut pods: Vec<PodSample> = book
            .pods
            .iter()
            .map(|((namespace, pod), entry)| PodSample {
                namespace: namespace.clone(),
                pod: pod.clone(),
                node: entry.node.clone(),
                sampled_at: entry.latest.at,
                cpu_millis: entry.latest.cpu_millis,
                memory_bytes: entry.latest.memory_bytes,
                containers: entry.containers.clone(),
            })
            .collect();
        pods.sort_by(|a, b| (&a.namespace, &a.pod).cmp(&(&b.namespace, &b.pod)));
        pods
    }

    /// A node's last sample, without its pods.
    pub fn node(&self, node: &str) -> Option<NodeUsage> {
        crate::lock(&self.inner).nodes.get(node).and_then(|n| n.latest.clone())
    }

    /// A pod's points of the last hour, oldest first.
    pub fn pod_history(&self, namespace: &str, pod: &str) -> Vec<Point> {
        let book = crate::lock(&self.inner);
        book.pods
            .get(&(namespace.to_owned(), pod.to_owned()))
            .map(|p| p.series.0.iter().copied().collect())
            .unwrap_or_default()
    }

    /// A node's points of the last hour, oldest first.
    pub fn node_history(&self, node: &str) -> Vec<Point> {
        let book = crate::lock(&self.inner);
        book.nodes.get(node).map(|n| n.series.0.iter().copied().collect()).unwrap_or_default()
    }

    /// A pod's usage averaged over the `window` seconds before `now` (its points in the window
    /// and its last sample): what an autoscaler reads. `None` when nothing was sampled in it.
    pub fn average(&self, namespace: &str, pod: &str, window: i64, now: i64) -> Option<(u64, u64)> {
        let book = crate::lock(&self.inner);
        let entry = book.pods.get(&(namespace.to_owned(), pod.to_owned()))?;
        let mut points: Vec<Point> = entry.series.0.iter().copied().filter(|p| now - p.at <= window).collect();
        if points.last() != Some(&entry.latest) && now - entry.latest.at <= window {
            points.push(entry.latest);
        }
        let count = u64::try_from(points.len()).ok().filter(|n| *n > 0)?;
        let cpu: u64 = points.iter().map(|p| p.cpu_millis).sum();
        let memory: u64 = points.iter().map(|p| p.memory_bytes).sum();
        Some((cpu / count, memory / count))
    }

    /// How many points are kept, over every series (what bounds its memory).
    pub fn points(&self) -> usize {
        let book = crate::lock(&self.inner);
        book.nodes.values().map(|n| n.series.0.len()).sum::<usize>()
            + book.pods.values().map(|p| p.series.0.len()).sum::<usize>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nodes::protocol::PodUsage;

    fn sample(at: i64, pods: &[(&str, u64)]) -> NodeUsage {
        NodeUsage {
            sampled_at: at,
            window_ms: 10_000,
            cpu_millis: Some(500),
            memory_bytes: Some(1 << 30),
            pods: pods
                .iter()
                .map(|(pod, cpu)| PodUsage {
                    namespace: "shop".into(),
                    pod: (*pod).into(),
                    containers: vec![
                        ContainerUsage { name: "app".into(), cpu_millis: *cpu, cpu_ns: 0, memory_bytes: 10 << 20 },
                        ContainerUsage { name: "log".into(), cpu_millis: 1, cpu_ns: 0, memory_bytes: 2 << 20 },
                    ],
                })
                .collect(),
        }
    }

    #[test]
    fn samples_become_series_of_the_last_hour_and_gone_pods_go() {
        let book = UsageBook::default();
        book.record("n1", &sample(1000, &[("web-0", 100), ("web-1", 300)]));
        // A heartbeat repeats the sample: nothing changes.
        book.record("n1", &sample(1000, &[("web-0", 900)]));
        let pods = book.pods();
        assert_eq!(pods.len(), 2);
        assert_eq!((pods[0].pod.as_str(), pods[0].cpu_millis, pods[0].memory_bytes), ("web-0", 101, 12 << 20));
        // Samples every 10 s for two hours: at most one point per 30 s, none older than an hour.
        for i in 1..=720 {
            book.record("n1", &sample(1000 + i * 10, &[("web-0", 100 + u64::try_from(i % 2).unwrap() * 100)]));
        }
        let history = book.pod_history("shop", "web-0");
        let bound = usize::try_from(HISTORY_SECONDS / POINT_SECONDS).unwrap() + 2;
        assert!((bound - 2..=bound).contains(&history.len()), "{} points: {history:?}", history.len());
        // Points at least POINT_SECONDS apart, but the newest, which is the last sample.
        let settled = &history[..history.len() - 1];
        assert!(settled.windows(2).all(|w| w[1].at - w[0].at >= POINT_SECONDS), "{history:?}");
        assert_eq!(history.last().map(|p| p.at), Some(1000 + 7200));
        assert!(history.first().is_some_and(|p| 1000 + 7200 - p.at <= HISTORY_SECONDS));
        assert_eq!(book.node_history("n1").len(), history.len());
        // web-1 is no longer in n1's samples: it is gone.
        assert!(book.pod_history("shop", "web-1").is_empty());
        assert_eq!(book.pods().len(), 1);
        // The average over a window of the points in it and the last sample.
        let now = 1000 + 7200;
        let (cpu, memory) = book.average("shop", "web-0", 60, now).unwrap();
        assert!((101..=201).contains(&cpu), "{cpu}");
        assert_eq!(memory, 12 << 20);
        assert_eq!(book.average("shop", "web-0", 60, now + 3600), None);
        assert_eq!(book.average("shop", "nothing", 60, now), None);
        assert_eq!(book.points(), 2 * history.len());
    }
}
