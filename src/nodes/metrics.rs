//! The agent's own HTTP listener (`berth agent --metrics-listen ADDR`, off by default):
//! `/healthz` (the process answers), `/readyz` (the engine answers and the node has joined)
//! and `/metrics` (Prometheus text: pods by phase, container restarts, converge passes and
//! reports). It changes nothing and shows nothing of what pods hold.

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
use prometheus_client::registry::Registry;
use std::collections::BTreeSet;
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
        AgentMetrics {
            registry,
            pods,
            restarts,
            containers: Mutex::new(BTreeSet::new()),
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
        let mut containers = crate::lock(&self.containers);
        for gone in containers.difference(&seen) {
            self.restarts.remove(gone);
        }
        *containers = seen;
    }

    /// The Prometheus text of every metric.
    pub fn encode(&self) -> String {
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
