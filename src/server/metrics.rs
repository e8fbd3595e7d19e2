//! The control plane's `/metrics`, in the Prometheus text format (`prometheus-client`).
//!
//! What the loop measures as it runs (pass durations, sync outcomes, commit-to-synced latency)
//! lives in [`ServerMetrics`], kept by the [`super::control::ControlPlane`]. What describes the
//! cluster now (pods by phase, nodes, workload health, container restarts, each container's
//! CPU and memory at its node's last sample) is read from the
//! same views the API answers with, at each scrape, so the two never disagree.

use super::api::{NodeView, PodView};
use super::control::WorkloadHealth;
use super::usage::PodSample;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};
use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;

pub use crate::nodes::metrics::{CONTENT_TYPE, Labels};

/// What the control loop counts while it runs.
#[derive(Clone)]
pub struct ServerMetrics {
    pass_seconds: Histogram,
    passes: Counter,
    pass_failures: Counter,
    syncs: Family<Labels, Counter>,
    commit_to_synced_seconds: Histogram,
    rollout_seconds: Family<Labels, Histogram, fn() -> Histogram>,
    sync_seconds: Family<Labels, Histogram, fn() -> Histogram>,
    store_write_seconds: Histogram,
    read_seconds: Histogram,
}

/// From 1 s to about 4.5 hours.
fn long_buckets() -> Histogram {
    Histogram::new(exponential_buckets(1.0, 3.0, 10))
}

impl Default for ServerMetrics {
    fn default() -> Self {
        ServerMetrics {
            pass_seconds: Histogram::new(exponential_buckets(0.001, 4.0, 9)),
            passes: Counter::default(),
            pass_failures: Counter::default(),
            syncs: Family::default(),
            commit_to_synced_seconds: long_buckets(),
            rollout_seconds: Family::new_with_constructor(long_buckets),
            sync_seconds: Family::new_with_constructor(long_buckets),
            // From 100 µs to about 6.5 s.
            store_write_seconds: Histogram::new(exponential_buckets(0.0001, 4.0, 9)),
            read_seconds: Histogram::new(exponential_buckets(0.0001, 4.0, 9)),
        }
    }
}

impl ServerMetrics {
    /// One pass of the control loop, and whether it failed.
    pub fn pass(&self, seconds: f64, failed: bool) {
        self.pass_seconds.observe(seconds);
        self.passes.inc();
        if failed {
            self.pass_failures.inc();
        }
    }

    /// A commit's sync reached a final outcome (Synced, Degraded, Failed, Superseded).
    pub fn sync_finished(&self, outcome: &str) {
        self.syncs.get_or_create(&vec![("outcome", outcome.to_owned())]).inc();
    }

    /// A workload's rollout ended (`healthy` or `failed`) after `seconds`.
    pub fn rollout(&self, outcome: &str, seconds: i64) {
        self.rollout_seconds.get_or_create(&vec![("outcome", outcome.to_owned())]).observe(seconds.max(0) as f64);
    }

    /// A sync reached a final outcome (`synced` or `degraded`) `seconds` after its commit was
    /// adopted.
    pub fn sync_took(&self, outcome: &str, seconds: i64) {
        self.sync_seconds.get_or_create(&vec![("outcome", outcome.to_owned())]).observe(seconds.max(0) as f64);
    }

    /// One transaction of the control loop's decisions.
    pub fn store_write(&self, seconds: f64) {
        self.store_write_seconds.observe(seconds);
    }

    /// What a pass reads before it decides (the branch head, sync records, plans).
    pub fn read(&self, seconds: f64) {
        self.read_seconds.observe(seconds);
    }

    /// A commit made at `committed_at` is synced at `now` (seconds since the Unix epoch).
    pub fn synced(&self, committed_at: i64, now: i64) {
        self.commit_to_synced_seconds.observe((now - committed_at).max(0) as f64);
    }

    /// Every metric, the loop's and the cluster's as the views say it now.
    pub fn encode(
        &self,
        pods: &[PodView],
        nodes: &[NodeView],
        workloads: &[WorkloadHealth],
        usage: &[PodSample],
    ) -> String {
        let mut registry = Registry::with_prefix("berth");
        registry.register("control_pass_duration_seconds", "One pass of the control loop", self.pass_seconds.clone());
        registry.register("control_passes", "Passes of the control loop", self.passes.clone());
        registry.register(
            "control_pass_failures",
            "Passes that failed (a store or Git error)",
            self.pass_failures.clone(),
        );
        registry.register("syncs", "Commits whose sync finished, by outcome", self.syncs.clone());
        registry.register(
            "commit_to_synced_seconds",
            "From a commit's time to its sync being Synced",
            self.commit_to_synced_seconds.clone(),
        );
        registry.register(
            "rollout_duration_seconds",
            "From a workload's new revision to its verdict, by outcome (healthy or failed)",
            self.rollout_seconds.clone(),
        );
        registry.register(
            "sync_duration_seconds",
            "From a commit's adoption to its sync's final outcome, by outcome (synced or degraded)",
            self.sync_seconds.clone(),
        );
        registry.register(
            "store_write_duration_seconds",
            "One transaction of the control loop's decisions in the store",
            self.store_write_seconds.clone(),
        );
        registry.register(
            "control_read_duration_seconds",
            "What a pass of the control loop reads before it decides (Git head, store, plans)",
            self.read_seconds.clone(),
        );
        // A series per value seen, and one for each of `always` even at 0.
        let by = |name: &'static str, always: &[&str], values: &mut dyn Iterator<Item = String>| {
            let family = Family::<Labels, Gauge>::default();
            let mut counts: BTreeMap<String, i64> = always.iter().map(|v| ((*v).to_owned(), 0)).collect();
            for value in values {
                *counts.entry(value).or_default() += 1;
            }
            for (value, count) in counts {
                family.get_or_create(&vec![(name, value)]).set(count);
            }
            family
        };
        let phases = ["Pending", "Running", "Succeeded", "Failed"];
        registry.register(
            "pods",
            "Pods assigned to nodes, by phase",
            by("phase", &phases, &mut pods.iter().map(|p| p.phase.clone())),
        );
        let statuses = ["Ready", "NotReady"];
        registry.register(
            "nodes",
            "Nodes, by status",
            by("status", &statuses, &mut nodes.iter().map(|n| n.status.clone())),
        );
        registry.register(
            "workloads",
            "Workloads of the commit being applied, by health",
            by("health", &[], &mut workloads.iter().map(|w| w.health.as_str().to_owned())),
        );
        let restarts = Family::<Labels, Counter>::default();
        for pod in pods {
            let labels =
                vec![("namespace", pod.namespace.clone()), ("pod", pod.name.clone()), ("node", pod.node.clone())];
            restarts.get_or_create(&labels).inc_by(u64::from(pod.restarts));
        }
        registry.register("pod_restarts", "Container restarts of each pod, as its node reports them", restarts);
        let cpu = Family::<Labels, Counter<f64, AtomicU64>>::default();
        let memory = Family::<Labels, Gauge>::default();
        for pod in usage {
            for container in &pod.containers {
                let labels = vec![
                    ("namespace", pod.namespace.clone()),
                    ("pod", pod.pod.clone()),
                    ("container", container.name.clone()),
                    ("node", pod.node.clone()),
                ];
                cpu.get_or_create(&labels).inc_by(container.cpu_ns as f64 / 1e9);
                memory.get_or_create(&labels).set(i64::try_from(container.memory_bytes).unwrap_or(i64::MAX));
            }
        }
        registry.register_with_unit(
            "container_cpu_usage",
            "CPU time each running container used since it started, at its node's last sample",
            Unit::Seconds,
            cpu,
        );
        registry.register_with_unit(
            "container_memory_working_set",
            "Memory each running container used at its node's last sample",
            Unit::Bytes,
            memory,
        );
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &registry);
        text
    }
}
