//! The agent's own HTTP listener (`berth agent --metrics-listen ADDR`, off by default):
//! `/healthz` (the process answers), `/readyz` (the engine answers and the node has joined)
//! and `/metrics` (Prometheus text: pods by phase, container restarts, probe failures, each
//! container's and the node's CPU time and memory in use, the proxy's connections and errors
//! per service, converge passes and reports). It changes nothing and shows nothing of what pods hold.

use super::protocol::{PodPhase, PodStatus};
use super::runtime::ContainerRuntime;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};
use std::collections::BTreeSet;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, OnceLock};

/// A metric's labels, in order.
pub type Labels = Vec<(&'static str, String)>;

/// The content type of the Prometheus text format `/metrics` answers in.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// What the agent counts, and whether it has joined.
pub struct AgentMetrics {
    registry: Registry,
    pods: Family<Labels, Gauge>,
    restarts: Family<Labels, Counter>,
    /// The containers of the last report, so series of pods that are gone are dropped.
    containers: Mutex<BTreeSet<Labels>>,
    container_cpu: Family<Labels, Counter<f64, AtomicU64>>,
    container_memory: Family<Labels, Gauge>,
    /// The containers of the last usage sample, likewise.
    sampled: Mutex<BTreeSet<Labels>>,
    node_cpu: Counter<f64, AtomicU64>,
    node_memory: Gauge,
    probe_failures: Family<Labels, Counter>,
    /// The probe series, so those of containers that are gone are dropped.
    probed: Mutex<BTreeSet<Labels>>,
    proxy_connections: Family<Labels, Counter>,
    proxy_errors: Family<Labels, Counter>,
    /// Tunnels to and from other nodes, by `direction` (`out`, `in`), and those refused.
    tunnel_connections: Family<Labels, Counter>,
    tunnel_refusals: Counter,
    /// The node's proxy, read at each scrape; set once routing starts.
    pub mesh: OnceLock<Arc<super::proxy::Mesh>>,
    pub converge_seconds: Histogram,
    pub reports: Counter,
    pub report_failures: Counter,
    /// The node's name, once it has joined.
    pub joined: OnceLock<String>,
}

impl Default for AgentMetrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("berth_agent");
        let pods = Family::<Labels, Gauge>::default();
        registry.register("pods", "Pods assigned to this node, by phase", pods.clone());
        let restarts = Family::<Labels, Counter>::default();
        registry.register("container_restarts", "Restarts of each container of this node's pods", restarts.clone());
        let converge_seconds = Histogram::new(exponential_buckets(0.001, 4.0, 9));
        registry.register("converge_duration_seconds", "One converge pass over the engine", converge_seconds.clone());
        let reports = Counter::default();
        registry.register("reports", "Reports sent to the server", reports.clone());
        let report_failures = Counter::default();
        registry.register("report_failures", "Reports the server did not take", report_failures.clone());
        let container_cpu = Family::<Labels, Counter<f64, AtomicU64>>::default();
        registry.register_with_unit(
            "container_cpu_usage",
            "CPU time used by each running container of this node's pods",
            Unit::Seconds,
            container_cpu.clone(),
        );
        let container_memory = Family::<Labels, Gauge>::default();
        registry.register_with_unit(
            "container_memory_working_set",
            "Memory in use by each running container, without the page cache the kernel can take back",
            Unit::Bytes,
            container_memory.clone(),
        );
        let node_cpu = Counter::<f64, AtomicU64>::default();
        registry.register_with_unit(
            "node_cpu_usage",
            "CPU time the node used, on every core",
            Unit::Seconds,
            node_cpu.clone(),
        );
        let node_memory = Gauge::default();
        registry.register_with_unit("node_memory_used", "Memory in use on the node", Unit::Bytes, node_memory.clone());
        let probe_failures = Family::<Labels, Counter>::default();
        registry.register("probe_failures", "Probes that failed, per container and probe", probe_failures.clone());
        let proxy_connections = Family::<Labels, Counter>::default();
        registry.register(
            "proxy_connections",
            "Connections the node's proxy took for each service (virtual address or NodePort)",
            proxy_connections.clone(),
        );
        let proxy_errors = Family::<Labels, Counter>::default();
        registry.register(
            "proxy_errors",
            "Connections the node's proxy could not forward (no ready endpoint, or none answered)",
            proxy_errors.clone(),
        );
        let tunnel_connections = Family::<Labels, Counter>::default();
        registry.register(
            "tunnel_connections",
            "Service connections tunnelled over mutual TLS to other nodes (direction=out) and from them (direction=in)",
            tunnel_connections.clone(),
        );
        let tunnel_refusals = Counter::default();
        registry.register(
            "tunnel_refusals",
            "Connections to this node's tunnel refused: no valid node certificate, a node not in the route table, or no endpoint's port",
            tunnel_refusals.clone(),
        );
        AgentMetrics {
            registry,
            tunnel_connections,
            tunnel_refusals,
            pods,
            restarts,
            containers: Mutex::new(BTreeSet::new()),
            container_cpu,
            container_memory,
            sampled: Mutex::new(BTreeSet::new()),
            node_cpu,
            node_memory,
            probe_failures,
            probed: Mutex::new(BTreeSet::new()),
            proxy_connections,
            proxy_errors,
            mesh: OnceLock::new(),
            converge_seconds,
            reports,
            report_failures,
            joined: OnceLock::new(),
        }
    }
}

impl AgentMetrics {
    /// Takes what one observation of the node's pods says.
    pub fn observed(&self, statuses: &[PodStatus]) {
        for phase in [PodPhase::Pending, PodPhase::Running, PodPhase::Succeeded, PodPhase::Failed] {
            let count = statuses.iter().filter(|s| s.phase == phase).count();
            self.pods
                .get_or_create(&vec![("phase", phase.as_str().to_owned())])
                .set(i64::try_from(count).unwrap_or(i64::MAX));
        }
        let mut seen = BTreeSet::new();
        for status in statuses {
            for container in &status.containers {
                let labels: Labels = vec![
                    ("namespace", status.namespace.clone()),
                    ("pod", status.pod.clone()),
                    ("container", container.name.clone()),
                ];
                let counter = self.restarts.get_or_create(&labels);
                let counted = counter.get();
                let restarts = u64::from(container.restart_count);
                if restarts > counted {
                    counter.inc_by(restarts - counted);
                }
                seen.insert(labels);
            }
        }
        let mut probed = crate::lock(&self.probed);
        probed.retain(|labels| {
            let here = seen.contains(&labels[..3]);
            if !here {
                self.probe_failures.remove(labels);
            }
            here
        });
        let mut containers = crate::lock(&self.containers);
        for gone in containers.difference(&seen) {
            self.restarts.remove(gone);
        }
        *containers = seen;
    }

    /// Counts the probes that failed in one probe pass.
    pub fn probed(&self, failures: &[super::pods::ProbeFailure]) {
        let mut probed = crate::lock(&self.probed);
        for failure in failures {
            let labels: Labels = vec![
                ("namespace", failure.namespace.clone()),
                ("pod", failure.pod.clone()),
                ("container", failure.container.clone()),
                ("probe", failure.probe.to_owned()),
            ];
            self.probe_failures.get_or_create(&labels).inc();
            probed.insert(labels);
        }
    }

    /// Brings the proxy's counts up to what it counted.
    fn count_traffic(&self) {
        let Some(mesh) = self.mesh.get() else { return };
        let tunnels = mesh.tunnel_counts();
        let out: Labels = vec![("direction", "out".to_owned())];
        let inward: Labels = vec![("direction", "in".to_owned())];
        // One family lock at a time: a guard held while another series is made would deadlock.
        let opened = self.tunnel_connections.get_or_create(&out).clone();
        let accepted = self.tunnel_connections.get_or_create(&inward).clone();
        for (counter, total) in
            [(opened, tunnels.opened), (accepted, tunnels.accepted), (self.tunnel_refusals.clone(), tunnels.refused)]
        {
            let counted = counter.get();
            if total > counted {
                counter.inc_by(total - counted);
            }
        }
        for (service, traffic) in mesh.traffic() {
            let labels: Labels = vec![("service", service)];
            for (family, total) in
                [(&self.proxy_connections, traffic.connections), (&self.proxy_errors, traffic.errors)]
            {
                let counter = family.get_or_create(&labels);
                let counted = counter.get();
                if total > counted {
                    counter.inc_by(total - counted);
                }
            }
        }
    }

    /// Takes one usage sample: each container's CPU time and memory, and the node's.
    pub fn sampled(&self, containers: &[super::usage::Seen], node: Option<super::usage::Reading>) {
        let seconds = |ns: u64| ns as f64 / 1e9;
        let mut seen = BTreeSet::new();
        for container in containers {
            let labels: Labels = vec![
                ("namespace", container.namespace.clone()),
                ("pod", container.pod.clone()),
                ("container", container.container.clone()),
            ];
            let used = seconds(container.reading.cpu_ns);
            let mut counter = self.container_cpu.get_or_create(&labels).clone();
            // A restarted container counts from zero again: so does its series.
            if used < counter.get() {
                self.container_cpu.remove(&labels);
                counter = self.container_cpu.get_or_create(&labels).clone();
            }
            counter.inc_by(used - counter.get());
            self.container_memory
                .get_or_create(&labels)
                .set(i64::try_from(container.reading.memory_bytes).unwrap_or(i64::MAX));
            seen.insert(labels);
        }
        let mut sampled = crate::lock(&self.sampled);
        for gone in sampled.difference(&seen) {
            self.container_cpu.remove(gone);
            self.container_memory.remove(gone);
        }
        *sampled = seen;
        if let Some(node) = node {
            let used = seconds(node.cpu_ns);
            if used > self.node_cpu.get() {
                self.node_cpu.inc_by(used - self.node_cpu.get());
            }
            self.node_memory.set(i64::try_from(node.memory_bytes).unwrap_or(i64::MAX));
        }
    }

    /// The Prometheus text of every metric.
    pub fn encode(&self) -> String {
        self.count_traffic();
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}

struct Served<R> {
    metrics: Arc<AgentMetrics>,
    runtime: Arc<R>,
    token: Option<String>,
}

/// The listener's routes. With `token`, `/metrics` answers only a request that bears it
/// (`Authorization: Bearer TOKEN`); health answers anyone.
pub fn router<R: ContainerRuntime>(metrics: Arc<AgentMetrics>, runtime: Arc<R>, token: Option<String>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz::<R>))
        .route("/metrics", get(metrics_text::<R>))
        .with_state(Arc::new(Served { metrics, runtime, token }))
}

async fn readyz<R: ContainerRuntime>(State(served): State<Arc<Served<R>>>) -> (StatusCode, String) {
    let engine = match served.runtime.ping().await {
        Ok(()) => Ok("the container engine answers".to_owned()),
        Err(error) => Err(error.to_string()),
    };
    let joined = match served.metrics.joined.get() {
        Some(node) => Ok(format!("joined as node {node}")),
        None => Err("not joined yet".to_owned()),
    };
    let (ready, text) = crate::health::answer(&[("engine", engine), ("joined", joined)]);
    (if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE }, text)
}

async fn metrics_text<R: ContainerRuntime>(
    State(served): State<Arc<Served<R>>>,
    headers: axum::http::HeaderMap,
) -> axum::response::Response {
    if let Some(token) = &served.token {
        use subtle::ConstantTimeEq;
        let given =
            headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
        if !given.is_some_and(|given| bool::from(given.as_bytes().ct_eq(token.as_bytes()))) {
            return (StatusCode::UNAUTHORIZED, "/metrics needs the metrics token: Authorization: Bearer TOKEN\n")
                .into_response();
        }
    }
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], served.metrics.encode()).into_response()
}
