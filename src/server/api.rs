//! The user API: what the CLI and the web UI read and do, as JSON under `/api/v1`.
//!
//! Reads are open on a loopback listener and need the API token on any other; every change
//! (approve a sync, roll back) needs the token. The token is made on the server's first start
//! and kept in its state folder; the server keeps its digest and compares in constant time. A
//! node's credential opens only the agent API. No answer carries a secret value: objects come
//! from the store's canonical form, where Secret values are digests.

pub use super::access::Access;
use super::access::{Caller, Role};
use super::control::{self, ControlPlane, SyncStatus, WorkloadHealth};
use super::status::CronJobView;
use super::{AppError, now};
use crate::manifest::{Kind, Object, ObjectKey};
use crate::nodes::protocol::{AgentRequest, PodAssignment, PodStatus, Resources};
use crate::store::{Pin, Revision, SyncRecord};
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::Extensions;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::routing::{get, post};
use axum::{Json, Router};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::sync::Arc;
use subtle::ConstantTimeEq;

/// The largest webhook body accepted.
pub const WEBHOOK_BODY_LIMIT: usize = 5 * 1024 * 1024;

/// Records what a caller did and how it ended in the audit log. A failure to record is logged:
/// the action has happened either way.
pub(crate) async fn audit<T, E: std::fmt::Display>(
    plane: &ControlPlane,
    caller: &Caller,
    extensions: &Extensions,
    action: &str,
    object: String,
    outcome: &Result<T, E>,
) {
    let address = extensions
        .get::<axum::extract::ConnectInfo<super::listen::Peer>>()
        .map(|info| info.0.address.ip().to_string())
        .unwrap_or_default();
    let record = crate::store::AuditRecord {
        at: now(),
        who: caller.name.clone(),
        action: action.to_owned(),
        object,
        address,
        outcome: match outcome {
            Ok(_) => "ok".to_owned(),
            Err(error) => error.to_string(),
        },
    };
    if let Err(error) = plane.store.audit(&record).await {
        tracing::error!(%error, action, who = %record.who, "Recording an action in the audit log failed.");
    }
}

#[derive(Clone)]
struct Api {
    plane: Arc<ControlPlane>,
    access: Access,
}

pub fn router(plane: Arc<ControlPlane>, access: Access) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/api/v1/status", get(status))
        .route("/api/v1/workloads", get(workloads))
        .route("/api/v1/workloads/{kind}/{namespace}/{name}", get(workload))
        .route("/api/v1/workloads/{kind}/{namespace}/{name}/history", get(history))
        .route("/api/v1/workloads/{kind}/{namespace}/{name}/rollback", post(rollback))
        .route("/api/v1/jobs", get(jobs))
        .route("/api/v1/cronjobs", get(cron_jobs))
        .route("/api/v1/cronjobs/{namespace}/{name}/run", post(run_cron_job))
        .route("/api/v1/pods", get(pods))
        .route("/api/v1/pods/{namespace}/{name}", get(pod_detail))
        .route("/api/v1/pods/{namespace}/{name}/logs", get(pod_logs))
        .route("/api/v1/pods/{namespace}/{name}/exec", post(pod_exec).get(pod_exec_session))
        .route("/api/v1/pods/{namespace}/{name}/portforward", get(pod_port_forward))
        .route("/api/v1/nodes", get(nodes))
        .route("/api/v1/nodes/{name}", axum::routing::delete(remove_node))
        .route("/api/v1/pvcs", get(claims))
        .route("/api/v1/events", get(events))
        .route("/api/v1/pvcs/{namespace}/{name}", axum::routing::delete(delete_claim))
        .route("/api/v1/watch/{what}", get(watch))
        .route("/api/v1/top/pods", get(top_pods))
        .route("/api/v1/top/nodes", get(top_nodes))
        .route("/api/v1/services", get(services))
        .route("/api/v1/syncs", get(syncs))
        .route("/api/v1/syncs/{sha}", get(sync))
        .route("/api/v1/syncs/{sha}/approve", post(approve))
        .route("/api/v1/plan", get(plan))
        .route("/api/v1/tokens", get(tokens).post(create_token))
        .route("/api/v1/tokens/{name}", axum::routing::delete(revoke_token))
        .route("/api/v1/audit", get(audit_log))
        .route("/api/v1/webhooks/git", post(webhook).layer(DefaultBodyLimit::max(WEBHOOK_BODY_LIMIT)))
        .layer(axum::middleware::from_fn_with_state(Api { plane: plane.clone(), access: access.clone() }, refusals))
        .with_state(Api { plane, access })
}

/// What an action route is called in the audit log, from its method and path; `None` for
/// reads (and the webhook, which has a secret of its own).
fn action_of(method: &axum::http::Method, path: &str) -> Option<&'static str> {
    let segments: Vec<&str> = path.trim_start_matches("/api/v1/").split('/').collect();
    let last = segments.last().copied().unwrap_or_default();
    Some(match (method.as_str(), segments.first().copied().unwrap_or_default(), last) {
        (_, "pods", "exec") => "exec",
        (_, "pods", "portforward") => "port-forward",
        ("GET", "pods", "logs") => "logs",
        ("POST", "workloads", "rollback") => "rollback",
        ("POST", "syncs", "approve") => "approve",
        ("POST", "cronjobs", "run") => "run-cronjob",
        ("DELETE", "pvcs", _) => "delete-pvc",
        ("POST", "tokens", _) => "token-create",
        ("DELETE", "tokens", _) => "token-revoke",
        ("DELETE", "nodes", _) => "node-remove",
        ("GET", "tokens" | "audit", _) => "read-access",
        _ => return None,
    })
}

/// Records in the audit log every action refused for want of a token or a right (401, 403),
/// with the token's name when it names one: the handlers record what they were allowed to do.
async fn refusals(
    State(api): State<Api>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let Some(action) = action_of(request.method(), request.uri().path()) else {
        return next.run(request).await;
    };
    // Who asked is looked up only if the answer is a refusal.
    let token = super::agent_api::bearer(request.headers()).ok().map(str::to_owned);
    let object = request.uri().path().trim_start_matches("/api/v1/").to_owned();
    // Only the caller's address is kept: an upgrade's handle stays with the request alone.
    let mut extensions = Extensions::new();
    if let Some(info) = request.extensions().get::<axum::extract::ConnectInfo<super::listen::Peer>>() {
        extensions.insert(info.clone());
    }
    let response = next.run(request).await;
    let status = response.status();
    if !matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) {
        return response;
    }
    let (parts, body) = response.into_parts();
    let bytes = axum::body::to_bytes(body, 64 * 1024).await.unwrap_or_default();
    let message = serde_json::from_slice::<serde_json::Value>(&bytes)
        .ok()
        .and_then(|v| v["error"].as_str().map(str::to_owned))
        .unwrap_or_else(|| status.to_string());
    let caller = Caller::named(api.access.name_of(token.as_deref()));
    let refused: Result<(), String> = Err(format!("refused ({}): {message}", status.as_u16()));
    audit(&api.plane, &caller, &extensions, action, object, &refused).await;
    axum::response::Response::from_parts(parts, axum::body::Body::from(bytes))
}

/// The overall status with counts, as `berth status` and the overview show it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusView {
    #[serde(flatten)]
    pub status: SyncStatus,
    pub counts: Counts,
    pub last_sync: Option<SyncRecord>,
}

#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Counts {
    pub workloads: BTreeMap<String, usize>,
    pub pods: usize,
    pub pods_ready: usize,
    pub nodes: usize,
    pub nodes_ready: usize,
    pub services: usize,
    pub services_without_endpoints: usize,
}

/// The process answers: open without a token, for a supervisor's liveness check.
async fn healthz() -> &'static str {
    "ok\n"
}

/// Whether the server can do its work: the store answers and the branch head was read. Open
/// without a token; a line per check, `[+]` or `[-]`, as Kubernetes' `/readyz?verbose` says it,
/// and 503 when one fails.
async fn readyz(State(api): State<Api>) -> (StatusCode, String) {
    let store = match api.plane.store.ping().await {
        Ok(()) => Ok("the store answers".to_owned()),
        Err(error) => Err(format!("the store does not answer: {error}")),
    };
    let head = match api.plane.status.borrow().head.as_ref() {
        Some(head) => Ok(format!("the branch head {} is read", head.short())),
        None => Err("the branch head has not been read yet".to_owned()),
    };
    let (ready, text) = crate::health::answer(&[("store", store), ("head", head)]);
    (if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE }, text)
}

/// Prometheus text: what the loop counts and the cluster as the views say it now. Reads need
/// the token off loopback, as every other read does.
async fn metrics(State(api): State<Api>, headers: HeaderMap) -> Result<impl IntoResponse, AppError> {
    api.access.read(&headers)?.cluster_wide("the metrics")?;
    let pods = pod_views(&api.plane).await?;
    let nodes = node_views(&api.plane).await?;
    let workloads = api.plane.status.borrow().workloads.clone();
    let usage = api.plane.api.usage().pods();
    let text = api.plane.metrics.encode(&pods, &nodes, &workloads, &usage);
    Ok(([(axum::http::header::CONTENT_TYPE, super::metrics::CONTENT_TYPE)], text))
}

async fn status(State(api): State<Api>, headers: HeaderMap) -> Result<Json<StatusView>, AppError> {
    api.access.read(&headers)?.cluster_wide("the overall status")?;
    Ok(Json(status_view(&api.plane).await?))
}

pub async fn status_view(plane: &ControlPlane) -> Result<StatusView, AppError> {
    let status = plane.status.borrow().clone();
    let mut counts = Counts::default();
    for workload in &status.workloads {
        *counts.workloads.entry(workload.health.as_str().to_owned()).or_default() += 1;
    }
    let pods = pod_views(plane).await?;
    counts.pods = pods.len();
    counts.pods_ready = pods.iter().filter(|p| p.ready).count();
    let nodes = node_views(plane).await?;
    counts.nodes = nodes.len();
    counts.nodes_ready = nodes.iter().filter(|n| n.status == "Ready").count();
    let services = service_views(plane, &pods);
    counts.services = services.len();
    counts.services_without_endpoints = services.iter().filter(|s| s.endpoints_ready == 0).count();
    let last_sync = plane.store.syncs(1).await?.into_iter().next();
    Ok(StatusView { status, counts, last_sync })
}

/// What `GET /api/v1/watch/{what}` follows: the lists `berth get` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Watched {
    Workloads,
    Jobs,
    CronJobs,
    Pods,
    Nodes,
    Services,
    Syncs,
    Events,
}

impl Watched {
    pub fn parse(what: &str) -> Option<Watched> {
        Some(match what {
            "workloads" => Watched::Workloads,
            "jobs" => Watched::Jobs,
            "cronjobs" => Watched::CronJobs,
            "pods" => Watched::Pods,
            "nodes" => Watched::Nodes,
            "services" => Watched::Services,
            "syncs" => Watched::Syncs,
            "events" => Watched::Events,
            _ => return None,
        })
    }

    /// The list as its `GET` answers it.
    async fn list(self, plane: &ControlPlane) -> Result<serde_json::Value, AppError> {
        let value = match self {
            Watched::Workloads => serde_json::to_value(plane.status.borrow().workloads.clone()),
            Watched::Jobs => {
                let status = plane.status.borrow();
                serde_json::to_value(super::status::job_rows(&status.workloads, &status.cron_jobs))
            }
            Watched::CronJobs => serde_json::to_value(plane.status.borrow().cron_jobs.clone()),
            Watched::Pods => serde_json::to_value(pod_views(plane).await?),
            Watched::Nodes => serde_json::to_value(node_views(plane).await?),
            Watched::Services => serde_json::to_value(service_views(plane, &pod_views(plane).await?)),
            Watched::Syncs => serde_json::to_value(plane.store.syncs(100).await?),
            Watched::Events => serde_json::to_value(plane.store.events().await?),
        };
        Ok(value.unwrap_or_default())
    }
}

/// The shortest time between two looks of a watch: a burst of passes is one look.
const WATCH_GAP: std::time::Duration = std::time::Duration::from_millis(200);

/// A server-sent event stream of one list: the whole list at once, then again each time it
/// changes (looked at after each pass of the control loop). `berth get -w` follows it.
async fn watch(
    State(api): State<Api>,
    headers: HeaderMap,
    Path(what): Path<String>,
) -> Result<Sse<impl futures_util::Stream<Item = Result<Event, std::convert::Infallible>>>, AppError> {
    let caller = api.access.read(&headers)?;
    let watched = Watched::parse(&what).ok_or_else(|| {
        AppError::new(
            StatusCode::NOT_FOUND,
            format!("cannot watch `{what}`: choose workloads, jobs, cronjobs, pods, events, nodes, services or syncs"),
        )
    })?;
    if matches!(watched, Watched::Nodes | Watched::Syncs) {
        caller.cluster_wide(&format!("the list of {what}"))?;
    }
    let receiver = api.plane.status.subscribe();
    let plane = api.plane.clone();
    let stream = futures_util::stream::unfold((receiver, String::new()), move |(mut receiver, mut last)| {
        let plane = plane.clone();
        let caller = caller.clone();
        async move {
            loop {
                receiver.borrow_and_update();
                let list = match watched.list(&plane).await {
                    Ok(list) => caller.visible_value(list).to_string(),
                    // The store failed: the stream ends, and the watcher says so.
                    Err(_) => return None,
                };
                if list != last {
                    last.clone_from(&list);
                    return Some((Ok(Event::default().event("list").data(list)), (receiver, last)));
                }
                receiver.changed().await.ok()?;
                tokio::time::sleep(WATCH_GAP).await;
            }
        }
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

async fn workloads(State(api): State<Api>, headers: HeaderMap) -> Result<Json<Vec<WorkloadHealth>>, AppError> {
    let caller = api.access.read(&headers)?;
    Ok(Json(caller.visible(api.plane.status.borrow().workloads.clone())))
}

async fn jobs(State(api): State<Api>, headers: HeaderMap) -> Result<Json<Vec<super::status::JobRow>>, AppError> {
    let caller = api.access.read(&headers)?;
    let status = api.plane.status.borrow();
    Ok(Json(caller.visible(super::status::job_rows(&status.workloads, &status.cron_jobs))))
}

async fn cron_jobs(State(api): State<Api>, headers: HeaderMap) -> Result<Json<Vec<CronJobView>>, AppError> {
    let caller = api.access.read(&headers)?;
    Ok(Json(caller.visible(api.plane.status.borrow().cron_jobs.clone())))
}

#[derive(Debug, Deserialize)]
struct RunRequest {
    /// The Job's name.
    name: String,
}

/// Starts a run of a CronJob now (`berth create job NAME --from=cronjob/NAME`), as the next pass
/// takes it; the CronJob's concurrency policy and schedule are not consulted, as in Kubernetes.
async fn run_cron_job(
    State(api): State<Api>,
    headers: HeaderMap,
    extensions: Extensions,
    Path((namespace, name)): Path<(String, String)>,
    Json(request): Json<RunRequest>,
) -> Result<(StatusCode, Json<serde_json::Value>), AppError> {
    let caller = api.access.authorize(&headers, Role::Deployer, "running a CronJob")?;
    caller.may_act_in(&namespace)?;
    let key = ObjectKey { kind: crate::manifest::Kind::CronJob, namespace, name };
    let object = format!("{key} as Job {}", request.name);
    let ran = start_cron_job(&api.plane, key, request.name);
    audit(&api.plane, &caller, &extensions, "run-cronjob", object, &ran).await;
    ran.map(|name| (StatusCode::ACCEPTED, Json(serde_json::json!({ "name": name }))))
}

/// Queues a run of a CronJob as the Job `job`, for the next pass.
fn start_cron_job(plane: &ControlPlane, key: ObjectKey, job: String) -> Result<String, AppError> {
    let declared =
        crate::lock(&plane.desired).as_ref().is_some_and(|d| d.resources.binary_search_by(|r| r.key.cmp(&key)).is_ok());
    if !declared {
        return Err(AppError::new(StatusCode::NOT_FOUND, format!("{key} is not in the applied commit")));
    }
    if job.len() > 52 || !crate::manifest::validate::is_dns_label(&job) {
        return Err(AppError::new(
            StatusCode::BAD_REQUEST,
            format!(
                "`{job}` is not a Job name: at most 52 lowercase letters, digits and '-', starting and ending with a letter or digit"
            ),
        ));
    }
    let taken = plane
        .status
        .borrow()
        .cron_jobs
        .iter()
        .any(|c| c.namespace == key.namespace && c.runs.iter().any(|r| r.name == job))
        || plane
            .status
            .borrow()
            .workloads
            .iter()
            .any(|w| w.kind == "Job" && w.namespace == key.namespace && w.name == job);
    if taken {
        return Err(AppError::new(
            StatusCode::CONFLICT,
            format!("a Job named {job} already exists in {}", key.namespace),
        ));
    }
    crate::lock(&plane.manual_runs).push((key, job.clone()));
    plane.wake.notify_one();
    Ok(job)
}

/// Everything about one workload: its status, pods, history and pin.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadView {
    pub workload: WorkloadHealth,
    pub pods: Vec<PodView>,
    pub history: Vec<Revision>,
    pub pin: Option<Pin>,
}

fn key_from(kind: &str, namespace: &str, name: &str) -> Result<ObjectKey, AppError> {
    let kind = Kind::from_cli(kind).filter(|k| k.is_workload()).ok_or_else(|| {
        AppError::new(
            StatusCode::NOT_FOUND,
            format!(
                "`{kind}` is not a workload kind; use deployment, daemonset, replicaset, replicationcontroller or pod"
            ),
        )
    })?;
    Ok(ObjectKey { kind, namespace: namespace.to_owned(), name: name.to_owned() })
}

async fn workload(
    State(api): State<Api>,
    headers: HeaderMap,
    Path((kind, namespace, name)): Path<(String, String, String)>,
) -> Result<Json<WorkloadView>, AppError> {
    let caller = api.access.read(&headers)?;
    let key = key_from(&kind, &namespace, &name)?;
    if !caller.sees(&key.namespace) {
        return Err(workload_missing(&key));
    }
    Ok(Json(workload_view(&api.plane, &key).await?))
}

/// The answer for a workload that is not there, or not the caller's to see.
fn workload_missing(key: &ObjectKey) -> AppError {
    AppError::new(
        StatusCode::NOT_FOUND,
        format!("{key} is not declared by the applied commit; see `berth get workloads`"),
    )
}

pub async fn workload_view(plane: &ControlPlane, key: &ObjectKey) -> Result<WorkloadView, AppError> {
    let workload = plane
        .status
        .borrow()
        .workloads
        .iter()
        .find(|w| w.kind == key.kind.name() && w.namespace == key.namespace && w.name == key.name)
        .cloned()
        .ok_or_else(|| workload_missing(key))?;
    let pods = pod_views(plane)
        .await?
        .into_iter()
        .filter(|p| p.workload == key.name && p.kind == key.kind.name())
        .filter(|p| p.namespace == key.namespace)
        .collect();
    let history = plane.store.revisions(key).await?;
    let pin = plane.store.pins().await?.into_iter().find(|p| &p.key == key);
    Ok(WorkloadView { workload, pods, history, pin })
}

async fn history(
    State(api): State<Api>,
    headers: HeaderMap,
    Path((kind, namespace, name)): Path<(String, String, String)>,
) -> Result<Json<Vec<Revision>>, AppError> {
    let caller = api.access.read(&headers)?;
    let key = key_from(&kind, &namespace, &name)?;
    if !caller.sees(&key.namespace) {
        return Ok(Json(Vec::new()));
    }
    Ok(Json(api.plane.store.revisions(&key).await?))
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RollbackRequest {
    /// A commit (sha, prefix, tag or branch); default: the last healthy revision before this one.
    #[serde(default)]
    pub to: Option<String>,
    /// Only say what the rollback would do.
    #[serde(default)]
    pub dry_run: bool,
}

async fn rollback(
    State(api): State<Api>,
    headers: HeaderMap,
    extensions: Extensions,
    Path((kind, namespace, name)): Path<(String, String, String)>,
    Json(request): Json<RollbackRequest>,
) -> Result<Json<control::RollbackPlan>, AppError> {
    let caller = api.access.authorize(&headers, Role::Deployer, "rolling back")?;
    caller.may_act_in(&namespace)?;
    let key = key_from(&kind, &namespace, &name)?;
    let done =
        control::rollback(&api.plane, &key, request.to.as_deref(), request.dry_run).await.map(Json).map_err(|error| {
            match error {
                control::RollbackError::Store(error) => error.into(),
                control::RollbackError::NoHead => AppError::new(StatusCode::SERVICE_UNAVAILABLE, error.to_string()),
                other => AppError::new(StatusCode::CONFLICT, other.to_string()),
            }
        });
    if !request.dry_run {
        audit(&api.plane, &caller, &extensions, "rollback", key.to_string(), &done).await;
    }
    done
}

/// One pod as a node was told to run it and reports it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PodView {
    pub namespace: String,
    pub name: String,
    pub node: String,
    pub kind: String,
    pub workload: String,
    pub revision: String,
    pub phase: String,
    /// What kubectl's STATUS column says: a container's reason (`CrashLoopBackOff`,
    /// `ContainerCreating`, ...) when it has one, else the phase.
    pub status: String,
    pub ready: bool,
    pub restarts: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// Labels of the pod's template, for services' selectors.
    #[serde(skip)]
    pub labels: BTreeMap<String, String>,
    #[serde(skip)]
    pub requests: Resources,
    #[serde(skip)]
    pub limits: Resources,
}

async fn pods(State(api): State<Api>, headers: HeaderMap) -> Result<Json<Vec<PodView>>, AppError> {
    let caller = api.access.read(&headers)?;
    Ok(Json(caller.visible(pod_views(&api.plane).await?)))
}

/// One pod in detail, as `berth describe pod/NAME` shows it: its row, each container's image,
/// state, restarts, how its last attempt ended and what it wrote last, and its usage.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PodDetailView {
    #[serde(flatten)]
    pub pod: PodView,
    pub requests: Resources,
    pub limits: Resources,
    pub images: BTreeMap<String, String>,
    /// The ports the containers declare, by name where they have one (`name` -> number), for
    /// a Service's named `targetPort`.
    pub named_ports: BTreeMap<String, u16>,
    pub init_containers: Vec<String>,
    pub containers: Vec<crate::nodes::protocol::ContainerStatus>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<super::usage::PodSample>,
}

/// The answer for a pod that is not there, or not the caller's to see.
fn pod_missing(namespace: &str, name: &str) -> AppError {
    AppError::new(StatusCode::NOT_FOUND, format!("no pod {namespace}/{name} is assigned; see `berth get pods`"))
}

/// A pod the API is asked about by name: its row and its assignment, or 404.
pub(crate) async fn assigned_pod(
    plane: &ControlPlane,
    namespace: &str,
    name: &str,
) -> Result<(PodView, Option<PodAssignment>), AppError> {
    let pod = pod_views(plane)
        .await?
        .into_iter()
        .find(|p| p.namespace == namespace && p.name == name)
        .ok_or_else(|| pod_missing(namespace, name))?;
    let (_, assigned) = plane.store.assignment(&pod.node).await?;
    let assignment = assigned.into_iter().find(|p| p.namespace == namespace && p.pod == name);
    Ok((pod, assignment))
}

async fn pod_detail(
    State(api): State<Api>,
    headers: HeaderMap,
    Path((namespace, name)): Path<(String, String)>,
) -> Result<Json<PodDetailView>, AppError> {
    let caller = api.access.read(&headers)?;
    if !caller.sees(&namespace) {
        return Err(pod_missing(&namespace, &name));
    }
    Ok(Json(pod_detail_view(&api.plane, &namespace, &name).await?.0))
}

/// One pod in detail, and what its node was told to run.
pub(crate) async fn pod_detail_view(
    plane: &ControlPlane,
    namespace: &str,
    name: &str,
) -> Result<(PodDetailView, Option<PodAssignment>), AppError> {
    let (pod, assignment) = assigned_pod(plane, namespace, name).await?;
    let assignment = assignment.as_ref();
    let report = plane.store.reports(&pod.node).await?.into_iter().find(|r| r.namespace == namespace && r.pod == name);
    let usage = plane.api.usage().pods().into_iter().find(|u| u.namespace == namespace && u.pod == name);
    let view = PodDetailView {
        requests: pod.requests,
        limits: pod.limits,
        images: assignment
            .map(|a| a.spec.all_containers().map(|c| (c.name.clone(), c.image.clone())).collect())
            .unwrap_or_default(),
        init_containers: assignment
            .map(|a| a.spec.init_containers.iter().map(|c| c.name.clone()).collect())
            .unwrap_or_default(),
        named_ports: assignment
            .into_iter()
            .flat_map(|a| a.spec.all_containers())
            .flat_map(|c| c.ports.iter())
            .filter_map(|p| Some((p.name.clone()?, u16::try_from(p.container_port).ok()?)))
            .collect(),
        containers: report.map(|r| r.containers).unwrap_or_default(),
        usage,
        pod,
    };
    Ok((view, assignment.cloned()))
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LogsQuery {
    #[serde(default)]
    pub container: Option<String>,
    #[serde(default)]
    pub previous: bool,
    #[serde(default)]
    pub tail: Option<u64>,
    /// Only what was written in the last this many seconds.
    #[serde(default)]
    pub since_seconds: Option<i64>,
    #[serde(default)]
    pub timestamps: bool,
    /// Stream what the container writes from then on, across its restarts, until the pod is
    /// gone (`server::logs`).
    #[serde(default)]
    pub follow: bool,
    /// With `follow`: only lines after this RFC 3339 time (the last one the caller has).
    #[serde(default)]
    pub since_time: Option<String>,
}

/// A container's log, read by its node over the node's own connection (`AgentApi::ask_logs`),
/// as text. The container may be left out when the pod has one.
async fn pod_logs(
    State(api): State<Api>,
    headers: HeaderMap,
    Path((namespace, name)): Path<(String, String)>,
    Query(query): Query<LogsQuery>,
) -> Result<axum::response::Response, AppError> {
    let caller = api.access.authorize(&headers, Role::Deployer, "reading logs")?;
    caller.may_act_in(&namespace)?;
    let plane = &api.plane;
    let (pod, assignment) = assigned_pod(plane, &namespace, &name).await?;
    let container = container_of(&namespace, &name, assignment.as_ref(), query.container.clone())?;
    if query.follow {
        return Ok(follow_log(plane.clone(), namespace, name, container, &query));
    }
    let request = crate::nodes::protocol::LogRequest {
        namespace,
        pod: name,
        container,
        previous: query.previous,
        tail: query.tail,
        since: query.since_seconds.map(|seconds| now() - seconds.max(0)),
        timestamps: query.timestamps,
    };
    match plane.api.ask_logs(&pod.node, request).await {
        Ok(text) => Ok(([(axum::http::header::CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response()),
        Err(reason) => Err(AppError::new(StatusCode::BAD_GATEWAY, reason)),
    }
}

/// A log followed as a streamed `text/plain` body: each line as the container writes it (after
/// its time with `timestamps`), until the pod is gone.
fn follow_log(
    plane: Arc<ControlPlane>,
    namespace: String,
    name: String,
    container: String,
    query: &LogsQuery,
) -> axum::response::Response {
    let after = query.since_time.as_deref().and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok());
    let follow = super::logs::Follow {
        container: Some(container),
        after,
        since: query.since_seconds.map(|seconds| now() - seconds.max(0)),
        tail: query.tail,
    };
    let follower = super::logs::Follower::new(plane, namespace, name, follow);
    let timestamps = query.timestamps;
    let stream = futures_util::stream::unfold(follower, move |mut follower| async move {
        loop {
            match follower.next().await? {
                super::logs::Followed::Lines { text, .. } => {
                    let text = if timestamps {
                        text
                    } else {
                        text.lines().filter_map(super::logs::stamped).fold(String::new(), |mut out, (_, line)| {
                            out.push_str(line);
                            out.push('\n');
                            out
                        })
                    };
                    return Some((Ok::<_, std::convert::Infallible>(Bytes::from(text)), follower));
                }
                super::logs::Followed::Note(_) => {}
                super::logs::Followed::Gone(_) => return None,
            }
        }
    });
    ([(axum::http::header::CONTENT_TYPE, "text/plain; charset=utf-8")], axum::body::Body::from_stream(stream))
        .into_response()
}

#[derive(Debug, Deserialize)]
struct PortForwardQuery {
    port: u16,
}

/// `berth port-forward`: one connection to a port on the pod's loopback, as an upgraded HTTP
/// connection (`Upgrade: berth-session`); needs the token. The pod's node dials back for it
/// (nodes only dial out) and the server splices the two; the first line on it is the node's
/// answer (`nodes::session`).
async fn pod_port_forward(
    State(api): State<Api>,
    Path((namespace, name)): Path<(String, String)>,
    Query(query): Query<PortForwardQuery>,
    request: axum::extract::Request,
) -> Result<axum::response::Response, AppError> {
    let caller = api.access.authorize(request.headers(), Role::Admin, "port-forwarding")?;
    caller.may_act_in(&namespace)?;
    upgrading(&request, "a port-forward")?;
    let found = assigned_pod(&api.plane, &namespace, &name).await;
    let object = format!("Pod {namespace}/{name} port {}", query.port);
    audit(&api.plane, &caller, request.extensions(), "port-forward", object, &found).await;
    let (pod, _) = found?;
    let forward = crate::nodes::protocol::PortForwardRequest { namespace, pod: name, port: query.port };
    let asked = AgentRequest { port_forward: Some(forward), ..AgentRequest::default() };
    splice_session(&api, &pod.node, asked, request).await
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ExecSessionQuery {
    container: Option<String>,
    /// The command and its arguments, as a JSON array.
    command: String,
    #[serde(default)]
    tty: bool,
    #[serde(default)]
    stdin: bool,
    columns: Option<u16>,
    rows: Option<u16>,
}

/// `berth exec`: a command in a pod's container attached to the caller, as an upgraded HTTP
/// connection carrying frames (`nodes::session::frame`): input and terminal size in, output and
/// the exit code out. Needs the token; the node dials back for it, as for a port-forward.
async fn pod_exec_session(
    State(api): State<Api>,
    Path((namespace, name)): Path<(String, String)>,
    Query(query): Query<ExecSessionQuery>,
    request: axum::extract::Request,
) -> Result<axum::response::Response, AppError> {
    let caller = api.access.authorize(request.headers(), Role::Admin, "exec")?;
    caller.may_act_in(&namespace)?;
    upgrading(&request, "an attached exec")?;
    let command: Vec<String> = serde_json::from_str(&query.command).map_err(|e| {
        AppError::new(StatusCode::BAD_REQUEST, format!("`command` must be a JSON array of strings: {e}"))
    })?;
    if command.is_empty() {
        return Err(AppError::new(StatusCode::BAD_REQUEST, "no command to run: give it after `--`"));
    }
    let found = assigned_pod(&api.plane, &namespace, &name).await;
    let object = format!("Pod {namespace}/{name}: {}", command.join(" "));
    audit(&api.plane, &caller, request.extensions(), "exec", object, &found).await;
    let (pod, assignment) = found?;
    let container = container_of(&namespace, &name, assignment.as_ref(), query.container)?;
    let exec = crate::nodes::protocol::ExecSessionRequest {
        namespace,
        pod: name,
        container,
        command,
        tty: query.tty,
        stdin: query.stdin,
        size: query.columns.zip(query.rows),
    };
    let asked = AgentRequest { exec_session: Some(exec), ..AgentRequest::default() };
    splice_session(&api, &pod.node, asked, request).await
}

/// Refuses a session's request that does not ask to upgrade.
fn upgrading(request: &axum::extract::Request, what: &str) -> Result<(), AppError> {
    let asked = request
        .headers()
        .get(axum::http::header::UPGRADE)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(crate::nodes::session::PROTOCOL.as_bytes()));
    if asked {
        Ok(())
    } else {
        Err(AppError::new(
            StatusCode::UPGRADE_REQUIRED,
            format!("{what} is an upgraded connection: send `Upgrade: {}`", crate::nodes::session::PROTOCOL),
        ))
    }
}

/// Asks `node` for the session `asked`, and once it dialed back, splices it to the caller's
/// upgraded connection.
async fn splice_session(
    api: &Api,
    node: &str,
    asked: AgentRequest,
    mut request: axum::extract::Request,
) -> Result<axum::response::Response, AppError> {
    let mut node =
        api.plane.api.open_session(node, asked).await.map_err(|e| AppError::new(StatusCode::BAD_GATEWAY, e))?;
    let client = hyper::upgrade::on(&mut request);
    tokio::spawn(async move {
        match client.await {
            Ok(upgraded) => {
                let mut client = hyper_util::rt::TokioIo::new(upgraded);
                let _ = tokio::io::copy_bidirectional(&mut client, &mut node).await;
            }
            Err(error) => tracing::debug!(%error, "A session's client went away before its upgrade."),
        }
    });
    Ok(super::agent_api::switching_protocols())
}

/// The container a request names (`-c`), or the pod's one container.
pub(crate) fn container_of(
    namespace: &str,
    name: &str,
    assignment: Option<&PodAssignment>,
    asked: Option<String>,
) -> Result<String, AppError> {
    let names: Vec<String> =
        assignment.map(|p| p.spec.all_containers().map(|c| c.name.clone()).collect()).unwrap_or_default();
    match asked {
        Some(container) if names.contains(&container) => Ok(container),
        Some(container) => Err(AppError::new(
            StatusCode::NOT_FOUND,
            format!("pod {namespace}/{name} has no container `{container}`; it has: {}", names.join(", ")),
        )),
        None if names.len() == 1 => Ok(names[0].clone()),
        None => Err(AppError::new(
            StatusCode::BAD_REQUEST,
            format!("pod {namespace}/{name} has several containers; choose one with -c: {}", names.join(", ")),
        )),
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ExecBody {
    container: Option<String>,
    command: Vec<String>,
    stdin: Option<String>,
    /// Defaults to 60; at most an hour.
    timeout_seconds: Option<u64>,
}

/// Runs a command in a pod's container (`berth exec`), through the node's own connection; needs
/// the token, as every change does. The output hides what the pod got from Secrets.
async fn pod_exec(
    State(api): State<Api>,
    headers: HeaderMap,
    extensions: Extensions,
    Path((namespace, name)): Path<(String, String)>,
    Json(body): Json<ExecBody>,
) -> Result<Json<serde_json::Value>, AppError> {
    let caller = api.access.authorize(&headers, Role::Admin, "exec")?;
    caller.may_act_in(&namespace)?;
    if body.command.is_empty() {
        return Err(AppError::new(StatusCode::BAD_REQUEST, "no command to run: give it after `--`"));
    }
    let plane = &api.plane;
    let found = assigned_pod(plane, &namespace, &name).await;
    let object = format!("Pod {namespace}/{name}: {}", body.command.join(" "));
    audit(plane, &caller, &extensions, "exec", object, &found).await;
    let (pod, assignment) = found?;
    let container = container_of(&namespace, &name, assignment.as_ref(), body.container)?;
    let request = crate::nodes::protocol::ExecRequest {
        namespace,
        pod: name,
        container,
        command: body.command,
        stdin: body.stdin,
        timeout_seconds: body.timeout_seconds.unwrap_or(60).clamp(1, 3600),
    };
    match plane.api.ask_exec(&pod.node, request).await {
        Ok((code, output)) => Ok(Json(serde_json::json!({ "exitCode": code, "output": output }))),
        Err(reason) => Err(AppError::new(StatusCode::BAD_GATEWAY, reason)),
    }
}

pub async fn pod_views(plane: &ControlPlane) -> Result<Vec<PodView>, AppError> {
    let desired = crate::lock(&plane.desired).clone();
    let grace = plane.config.controller.node_grace_seconds;
    let now = now();
    let mut views = Vec::new();
    for node in plane.store.nodes().await? {
        let node_ready = now - node.last_heartbeat <= grace;
        let (_, assigned) = plane.store.assignment(&node.name).await?;
        let reports: BTreeMap<String, PodStatus> = plane
            .store
            .reports(&node.name)
            .await?
            .into_iter()
            .map(|r| (format!("{}/{}", r.namespace, r.pod), r))
            .collect();
        for pod in &assigned {
            let report = reports.get(&format!("{}/{}", pod.namespace, pod.pod)).filter(|r| r.uid == pod.uid);
            views.push(pod_view(&node.name, pod, report, desired.as_deref()));
        }
        // What the node still reports but no longer runs by assignment: it is stopping.
        for report in reports.values() {
            if !assigned.iter().any(|p| p.namespace == report.namespace && p.pod == report.pod && p.uid == report.uid) {
                views.push(terminating_view(&node.name, report, node_ready));
            }
        }
    }
    views.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    Ok(views)
}

fn pod_view(
    node: &str,
    pod: &PodAssignment,
    report: Option<&PodStatus>,
    desired: Option<&crate::sync::Loaded>,
) -> PodView {
    let key = ObjectKey { kind: pod.workload_kind, namespace: pod.namespace.clone(), name: pod.workload_name.clone() };
    let labels = desired
        .and_then(|d| d.resources.binary_search_by(|r| r.key.cmp(&key)).ok().map(|i| &d.resources[i]))
        .and_then(|r| r.object.pod_labels().cloned())
        .unwrap_or_default();
    let requests = crate::plan::schedule::requests(&pod.spec);
    let limits = crate::plan::schedule::limits(&pod.spec);
    PodView {
        namespace: pod.namespace.clone(),
        name: pod.pod.clone(),
        node: node.to_owned(),
        kind: pod.workload_kind.name().to_owned(),
        workload: pod.workload_name.clone(),
        revision: pod.revision.clone(),
        phase: report.map_or_else(|| "Pending".to_owned(), |r| format!("{:?}", r.phase)),
        status: match report {
            None => "Pending".to_owned(),
            Some(r) => r.containers.iter().find_map(|c| c.reason.clone()).unwrap_or_else(|| format!("{:?}", r.phase)),
        },
        ready: report.is_some_and(|r| r.ready),
        restarts: report.map_or(0, |r| r.containers.iter().map(|c| c.restart_count).sum()),
        last_error: match report {
            None => Some(format!("node {node} has not reported this pod yet")),
            Some(r) => r.containers.iter().find_map(|c| c.last_error.clone()),
        },
        labels,
        requests,
        limits,
    }
}

/// A pod its node stops: shown as `Terminating` until the node reports it gone, as kubectl does;
/// `Unknown` while the node is NotReady (its pods are placed elsewhere, and it may still run
/// this one).
fn terminating_view(node: &str, report: &PodStatus, node_ready: bool) -> PodView {
    PodView {
        namespace: report.namespace.clone(),
        name: report.pod.clone(),
        node: node.to_owned(),
        kind: report.workload_kind.map_or_else(String::new, |k| k.name().to_owned()),
        workload: report.workload_name.clone(),
        revision: String::new(),
        phase: format!("{:?}", report.phase),
        status: if node_ready { "Terminating" } else { "Unknown" }.to_owned(),
        ready: false,
        restarts: report.containers.iter().map(|c| c.restart_count).sum(),
        last_error: (!node_ready)
            .then(|| format!("node {node} is NotReady: the pod was placed elsewhere; it goes once the node is back")),
        labels: BTreeMap::new(),
        requests: Resources::default(),
        limits: Resources::default(),
    }
}

/// One node, with what is placed on it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeView {
    pub name: String,
    /// `Ready` or `NotReady`.
    pub status: String,
    pub address: String,
    pub labels: BTreeMap<String, String>,
    pub capacity: Resources,
    pub allocatable: Resources,
    /// The sum of the requests of the pods assigned to it.
    pub allocated: Resources,
    pub pods: usize,
    pub last_heartbeat: i64,
    pub joined_at: i64,
    /// Where the node takes other nodes' service traffic over mutual TLS.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tunnel_port: Option<u16>,
    /// When the node's certificate expires (Unix seconds), over TLS.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub certificate_expires: Option<i64>,
}

/// A pod's last usage sample with what it asks for, as `berth top pods` shows it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PodTopView {
    pub namespace: String,
    pub name: String,
    pub node: String,
    pub sampled_at: i64,
    pub cpu_millis: u64,
    pub memory_bytes: u64,
    pub containers: Vec<crate::nodes::protocol::ContainerUsage>,
    pub requests: Resources,
    pub limits: Resources,
}

#[derive(Debug, Default, Deserialize)]
pub struct TopQuery {
    #[serde(default)]
    pub namespace: Option<String>,
    /// A label selector: `k=v`, `k!=v`, `k` and `!k`, comma-separated, all of which hold.
    #[serde(default)]
    pub selector: Option<String>,
}

/// One requirement of a label selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requirement {
    Equals(String, String),
    Differs(String, String),
    Exists(String),
    Absent(String),
}

impl Requirement {
    pub fn holds(&self, labels: &BTreeMap<String, String>) -> bool {
        match self {
            Requirement::Equals(k, v) => labels.get(k) == Some(v),
            Requirement::Differs(k, v) => labels.get(k) != Some(v),
            Requirement::Exists(k) => labels.contains_key(k),
            Requirement::Absent(k) => !labels.contains_key(k),
        }
    }
}

/// Reads a label selector as kubectl's `-l` takes it: `app=web,tier!=db,canary,!legacy`.
pub fn parse_selector(text: &str) -> Result<Vec<Requirement>, String> {
    let valid = |key: &str| {
        !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'))
    };
    let mut requirements = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let requirement = if let Some((key, value)) = part.split_once("!=") {
            Requirement::Differs(key.trim().to_owned(), value.trim().to_owned())
        } else if let Some((key, value)) = part.split_once("==").or_else(|| part.split_once('=')) {
            Requirement::Equals(key.trim().to_owned(), value.trim().to_owned())
        } else if let Some(key) = part.strip_prefix('!') {
            Requirement::Absent(key.trim().to_owned())
        } else {
            Requirement::Exists(part.to_owned())
        };
        let key = match &requirement {
            Requirement::Equals(k, _)
            | Requirement::Differs(k, _)
            | Requirement::Exists(k)
            | Requirement::Absent(k) => k,
        };
        if !valid(key) {
            return Err(format!(
                "the label selector `{text}` has `{part}`, which is not a requirement; write `key=value`, `key!=value`, `key` or `!key`, comma-separated"
            ));
        }
        requirements.push(requirement);
    }
    Ok(requirements)
}

async fn top_pods(
    State(api): State<Api>,
    headers: HeaderMap,
    Query(query): Query<TopQuery>,
) -> Result<Json<Vec<PodTopView>>, AppError> {
    let caller = api.access.read(&headers)?;
    let selector = parse_selector(query.selector.as_deref().unwrap_or_default())
        .map_err(|message| AppError::new(StatusCode::BAD_REQUEST, message))?;
    let pods: BTreeMap<(String, String), PodView> =
        pod_views(&api.plane).await?.into_iter().map(|p| ((p.namespace.clone(), p.name.clone()), p)).collect();
    let views = api
        .plane
        .api
        .usage()
        .pods()
        .into_iter()
        .filter(|s| query.namespace.as_deref().is_none_or(|ns| ns == s.namespace))
        .filter_map(|sample| {
            let pod = pods.get(&(sample.namespace.clone(), sample.pod.clone()))?;
            selector.iter().all(|r| r.holds(&pod.labels)).then_some(PodTopView {
                namespace: sample.namespace,
                name: sample.pod,
                node: sample.node,
                sampled_at: sample.sampled_at,
                cpu_millis: sample.cpu_millis,
                memory_bytes: sample.memory_bytes,
                containers: sample.containers,
                requests: pod.requests,
                limits: pod.limits,
            })
        })
        .collect();
    Ok(Json(caller.visible(views)))
}

/// A node's last usage sample against its allocatable, as `berth top nodes` shows it; the
/// usage fields are absent until the node's first sample with a rate.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeTopView {
    pub name: String,
    pub status: String,
    pub allocatable: Resources,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sampled_at: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_millis: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_bytes: Option<u64>,
}

async fn top_nodes(State(api): State<Api>, headers: HeaderMap) -> Result<Json<Vec<NodeTopView>>, AppError> {
    api.access.read(&headers)?.cluster_wide("the list of nodes")?;
    let usage = api.plane.api.usage();
    let views = node_views(&api.plane)
        .await?
        .into_iter()
        .map(|node| {
            let sample = usage.node(&node.name);
            NodeTopView {
                sampled_at: sample.as_ref().map(|s| s.sampled_at),
                cpu_millis: sample.as_ref().and_then(|s| s.cpu_millis),
                memory_bytes: sample.as_ref().and_then(|s| s.memory_bytes),
                name: node.name,
                status: node.status,
                allocatable: node.allocatable,
            }
        })
        .collect();
    Ok(Json(views))
}

#[derive(Debug, Deserialize)]
struct EventQuery {
    namespace: Option<String>,
    /// `KIND/NAME`: that object's events, and for a workload its pods' too.
    #[serde(rename = "for")]
    target: Option<String>,
}

/// Events, oldest last seen first (`berth get events`).
async fn events(
    State(api): State<Api>,
    headers: HeaderMap,
    Query(query): Query<EventQuery>,
) -> Result<Json<Vec<crate::store::EventRecord>>, AppError> {
    let caller = api.access.read(&headers)?;
    let target = match query.target.as_deref() {
        None => None,
        Some(target) => {
            Some(super::events::parse_target(target).map_err(|e| AppError::new(StatusCode::BAD_REQUEST, e))?)
        }
    };
    let events = api.plane.store.events().await?;
    Ok(Json(
        events
            .into_iter()
            .filter(|e| caller.sees_all() || caller.sees(&e.namespace))
            .filter(|e| query.namespace.as_ref().is_none_or(|ns| &e.namespace == ns))
            .filter(|e| {
                target.as_ref().is_none_or(|(kind, name)| super::events::is_about(&e.object, &e.owner, kind, name))
            })
            .collect(),
    ))
}

/// A claim as `berth get pvc` lists it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClaimView {
    pub namespace: String,
    pub name: String,
    /// Pending (no pod placed yet), Bound (its volume is on `node`), or Orphaned (no object of
    /// the applied commit declares it; its data stays until `berth delete pvc`).
    pub status: String,
    pub node: Option<String>,
    /// Whether `node` is Ready; a claim's pods wait while it is not.
    pub node_ready: bool,
    pub capacity: String,
    pub access_modes: String,
    pub storage_class: String,
    pub owner: String,
    pub created_at: i64,
    /// The pods that mount it now.
    pub used_by: Vec<String>,
}

async fn claims(State(api): State<Api>, headers: HeaderMap) -> Result<Json<Vec<ClaimView>>, AppError> {
    let caller = api.access.read(&headers)?;
    Ok(Json(caller.visible(claim_views(&api.plane).await?)))
}

pub async fn claim_views(plane: &ControlPlane) -> Result<Vec<ClaimView>, AppError> {
    let grace = plane.config.controller.node_grace_seconds;
    let now = now();
    let nodes = plane.store.nodes().await?;
    let mut users: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    for node in &nodes {
        let (_, assigned) = plane.store.assignment(&node.name).await?;
        for pod in &assigned {
            for claim in crate::apply::pods::claims_of(pod) {
                users.entry((pod.namespace.clone(), claim.to_owned())).or_default().push(pod.pod.clone());
            }
        }
    }
    Ok(plane
        .store
        .volume_claims()
        .await?
        .into_iter()
        .map(|claim| {
            let node_ready = claim
                .node
                .as_ref()
                .is_some_and(|n| nodes.iter().any(|r| &r.name == n && now - r.last_heartbeat <= grace));
            ClaimView {
                status: match (&claim.node, claim.orphaned_at) {
                    (_, Some(_)) => "Orphaned",
                    (None, None) => "Pending",
                    (Some(_), None) => "Bound",
                }
                .to_owned(),
                used_by: users.remove(&(claim.namespace.clone(), claim.name.clone())).unwrap_or_default(),
                namespace: claim.namespace,
                name: claim.name,
                node: claim.node,
                node_ready,
                capacity: claim.storage,
                access_modes: claim.access_modes,
                storage_class: claim.storage_class,
                owner: claim.owner,
                created_at: claim.created_at,
            }
        })
        .collect())
}

/// Removes an orphaned claim and its volume, with the data in it (`berth delete pvc`). A claim
/// the applied commit declares is refused: remove it from Git first.
async fn delete_claim(
    State(api): State<Api>,
    headers: HeaderMap,
    extensions: Extensions,
    Path((namespace, name)): Path<(String, String)>,
) -> Result<Json<serde_json::Value>, AppError> {
    let caller = api.access.authorize(&headers, Role::Deployer, "deleting a claim")?;
    caller.may_act_in(&namespace)?;
    let deleted = delete_orphaned_claim(&api.plane, &namespace, &name).await;
    audit(
        &api.plane,
        &caller,
        &extensions,
        "delete-pvc",
        format!("PersistentVolumeClaim {namespace}/{name}"),
        &deleted,
    )
    .await;
    deleted.map(Json)
}

/// Deletes an orphaned claim and its volume on its node.
async fn delete_orphaned_claim(
    plane: &ControlPlane,
    namespace: &str,
    name: &str,
) -> Result<serde_json::Value, AppError> {
    let (namespace, name) = (namespace.to_owned(), name.to_owned());
    let views = claim_views(plane).await?;
    let Some(claim) = views.iter().find(|c| c.namespace == namespace && c.name == name) else {
        return Err(AppError::new(
            StatusCode::NOT_FOUND,
            format!("no claim {namespace}/{name}; `berth get pvc` lists them"),
        ));
    };
    if claim.status != "Orphaned" {
        return Err(AppError::new(
            StatusCode::CONFLICT,
            format!(
                "claim {namespace}/{name} is declared by {} in the applied commit: remove it from Git first; its data is kept until you delete it here",
                claim.owner
            ),
        ));
    }
    if !claim.used_by.is_empty() {
        return Err(AppError::new(
            StatusCode::CONFLICT,
            format!(
                "claim {namespace}/{name} is mounted by {}; it can be deleted once they are gone",
                claim.used_by.join(", ")
            ),
        ));
    }
    let mut removed = false;
    if let Some(node) = &claim.node {
        if !claim.node_ready {
            return Err(AppError::new(
                StatusCode::CONFLICT,
                format!(
                    "the volume of claim {namespace}/{name} is on node {node}, which is NotReady; delete it when the node is back"
                ),
            ));
        }
        removed = plane
            .api
            .ask_remove_claim(node, &namespace, &name)
            .await
            .map_err(|reason| AppError::new(StatusCode::BAD_GATEWAY, reason))?;
    }
    plane.store.delete_volume_claim(&namespace, &name).await?;
    Ok(serde_json::json!({ "deleted": format!("{namespace}/{name}"), "node": claim.node, "volumeRemoved": removed }))
}

async fn nodes(State(api): State<Api>, headers: HeaderMap) -> Result<Json<Vec<NodeView>>, AppError> {
    api.access.read(&headers)?.cluster_wide("the list of nodes")?;
    Ok(Json(node_views(&api.plane).await?))
}

pub async fn node_views(plane: &ControlPlane) -> Result<Vec<NodeView>, AppError> {
    let grace = plane.config.controller.node_grace_seconds;
    let now = now();
    let mut views = Vec::new();
    for node in plane.store.nodes().await? {
        let (_, assigned) = plane.store.assignment(&node.name).await?;
        let mut allocated = Resources::default();
        for pod in &assigned {
            let view = pod_view(&node.name, pod, None, None);
            allocated = allocated.plus(view.requests);
        }
        let tunnel_port = plane.api.tunnel_port(&node.name);
        views.push(NodeView {
            status: if now - node.last_heartbeat <= grace { "Ready" } else { "NotReady" }.to_owned(),
            name: node.name,
            address: node.address,
            labels: node.labels,
            capacity: node.capacity,
            allocatable: node.allocatable,
            allocated,
            pods: assigned.len(),
            last_heartbeat: node.last_heartbeat,
            joined_at: node.joined_at,
            tunnel_port,
            certificate_expires: node.certificate_expires,
        });
    }
    Ok(views)
}

/// One Service of the applied commit and the pods behind it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceView {
    pub namespace: String,
    pub name: String,
    #[serde(rename = "type")]
    pub service_type: String,
    pub headless: bool,
    /// The virtual address pods reach it on (127.77.0.0/16); none for a headless service.
    #[serde(rename = "clusterIP")]
    pub cluster_ip: Option<String>,
    pub ports: Vec<PortView>,
    pub selector: BTreeMap<String, String>,
    /// Pods in the routes now: ready, on a Ready node, publishing the target port.
    pub endpoints_ready: usize,
    /// Pods the selector matches.
    pub endpoints_total: usize,
    /// The ready endpoints, as `pod@node-address:host-port` of the first port.
    pub endpoints: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PortView {
    pub name: Option<String>,
    pub port: i32,
    pub target_port: String,
    pub node_port: Option<i32>,
    pub protocol: String,
}

async fn services(State(api): State<Api>, headers: HeaderMap) -> Result<Json<Vec<ServiceView>>, AppError> {
    let caller = api.access.read(&headers)?;
    let pods = pod_views(&api.plane).await?;
    Ok(Json(caller.visible(service_views(&api.plane, &pods))))
}

pub fn service_views(plane: &ControlPlane, pods: &[PodView]) -> Vec<ServiceView> {
    let desired = crate::lock(&plane.desired).clone();
    let Some(desired) = desired else { return Vec::new() };
    let routes = plane.api.routes();
    let by_name: std::collections::HashMap<(&str, &str), &crate::nodes::protocol::ServiceRoute> =
        routes.services.iter().map(|s| ((s.namespace.as_str(), s.name.as_str()), s)).collect();
    desired
        .resources
        .iter()
        .filter_map(|r| match &r.object {
            Object::Service(service) => Some((r, service)),
            _ => None,
        })
        .map(|(resource, service)| {
            let spec = &service.spec;
            let route = by_name.get(&(resource.key.namespace.as_str(), resource.key.name.as_str())).copied();
            let selected: Vec<&PodView> = pods
                .iter()
                .filter(|p| {
                    p.namespace == resource.key.namespace
                        && !spec.selector.is_empty()
                        && spec.selector.iter().all(|(k, v)| p.labels.get(k) == Some(v))
                })
                .collect();
            ServiceView {
                namespace: resource.key.namespace.clone(),
                name: resource.key.name.clone(),
                service_type: spec.service_type.map_or_else(|| "ClusterIP".to_owned(), |t| format!("{t:?}")),
                headless: spec.cluster_ip.as_deref() == Some("None"),
                cluster_ip: route.and_then(|r| r.cluster_ip.clone()),
                ports: spec
                    .ports
                    .iter()
                    .map(|p| PortView {
                        name: p.name.clone(),
                        port: p.port,
                        target_port: p.target_port.as_ref().map_or_else(|| p.port.to_string(), ToString::to_string),
                        node_port: route
                            .and_then(|r| r.ports.iter().find(|rp| i32::from(rp.port) == p.port))
                            .and_then(|rp| rp.node_port)
                            .map(i32::from)
                            .or(p.node_port),
                        protocol: p.protocol.map_or_else(|| "TCP".to_owned(), |p| format!("{p:?}").to_uppercase()),
                    })
                    .collect(),
                selector: spec.selector.clone(),
                endpoints_ready: route.map_or(0, |r| r.endpoints.len()),
                endpoints_total: selected.len(),
                endpoints: route
                    .map(|r| {
                        r.endpoints
                            .iter()
                            .map(|e| match e.ports.first() {
                                Some((_, host_port)) => format!("{}@{}:{host_port}", e.pod, e.host_ip),
                                None => format!("{}@{}", e.pod, e.host_ip),
                            })
                            .collect()
                    })
                    .unwrap_or_default(),
            }
        })
        .collect()
}

#[derive(Debug, Deserialize)]
struct Limit {
    #[serde(default = "default_limit")]
    limit: i64,
}

fn default_limit() -> i64 {
    100
}

async fn syncs(
    State(api): State<Api>,
    headers: HeaderMap,
    Query(limit): Query<Limit>,
) -> Result<Json<Vec<SyncRecord>>, AppError> {
    api.access.read(&headers)?.cluster_wide("the list of commits")?;
    Ok(Json(api.plane.store.syncs(limit.limit.clamp(1, 10_000)).await?))
}

/// A sync record with its plan.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SyncView {
    #[serde(flatten)]
    pub record: SyncRecord,
    pub plan_text: String,
    pub plan: serde_json::Value,
}

async fn sync(State(api): State<Api>, headers: HeaderMap, Path(sha): Path<String>) -> Result<Json<SyncView>, AppError> {
    api.access.read(&headers)?.cluster_wide("a commit's plan")?;
    let record = api.plane.store.sync(&sha).await?.ok_or_else(|| no_sync(&sha))?;
    Ok(Json(sync_view(record)))
}

pub fn sync_view(record: SyncRecord) -> SyncView {
    SyncView {
        plan: serde_json::from_str(&record.plan_json).unwrap_or(serde_json::Value::Null),
        plan_text: record.plan_text.clone(),
        record,
    }
}

fn no_sync(sha: &str) -> AppError {
    AppError::new(StatusCode::NOT_FOUND, format!("no commit `{sha}` was seen by the server; see `berth get syncs`"))
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApproveRequest {
    /// The state index the approved plan was shown with; the approval is refused when it moved.
    #[serde(default)]
    pub state_index: Option<i64>,
    /// The `planDigest` of the plan approved: it is taken only if it is the plan recorded now.
    #[serde(default)]
    pub plan_digest: Option<String>,
}

async fn approve(
    State(api): State<Api>,
    headers: HeaderMap,
    extensions: Extensions,
    Path(sha): Path<String>,
    Json(request): Json<ApproveRequest>,
) -> Result<axum::response::Response, AppError> {
    let caller = api.access.authorize(&headers, Role::Deployer, "approving")?;
    caller.cluster_wide("a commit's plan")?;
    let approved = control::approve(&api.plane, &sha, request.state_index, request.plan_digest.as_deref()).await;
    let outcome = approved.as_ref().map(|_| ()).map_err(|error| match error {
        control::ApproveError::PlanChanged { .. } => "refused: the plan changed since it was shown".to_owned(),
        other => other.to_string(),
    });
    audit(&api.plane, &caller, &extensions, "approve", format!("commit {sha}"), &outcome).await;
    match approved {
        Ok(record) => Ok(Json(record).into_response()),
        Err(control::ApproveError::Store(error)) => Err(error.into()),
        Err(error @ control::ApproveError::Unknown(_)) => Err(AppError::new(StatusCode::NOT_FOUND, error.to_string())),
        // Refused with the plan as it is now, to review and approve by its digest.
        Err(control::ApproveError::PlanChanged { shown, current, plan_text, plan_json }) => {
            let plan: serde_json::Value = serde_json::from_str(&plan_json).unwrap_or_default();
            let message = control::ApproveError::PlanChanged {
                shown,
                current: current.clone(),
                plan_text: String::new(),
                plan_json: String::new(),
            }
            .to_string();
            let body =
                serde_json::json!({ "error": message, "planDigest": current, "planText": plan_text, "plan": plan });
            Ok((StatusCode::CONFLICT, Json(body)).into_response())
        }
        Err(other) => Err(AppError::new(StatusCode::CONFLICT, other.to_string())),
    }
}

#[derive(Debug, Deserialize)]
struct PlanQuery {
    #[serde(default)]
    rev: Option<String>,
}

/// A commit's plan against the applied state, with the state index to approve it at.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PlanView {
    pub state_index: i64,
    pub has_changes: bool,
    pub plan_text: String,
    pub plan: serde_json::Value,
}

async fn plan(
    State(api): State<Api>,
    headers: HeaderMap,
    Query(query): Query<PlanQuery>,
) -> Result<Json<PlanView>, AppError> {
    api.access.read(&headers)?.cluster_wide("a commit's plan")?;
    let rev = query.rev.unwrap_or_else(|| api.plane.config.branch.clone());
    let commit = api.plane.load(&rev).await.map_err(|error| AppError::new(StatusCode::NOT_FOUND, error.to_string()))?;
    if !commit.is_valid() {
        let first = commit.diagnostics.iter().find(|d| d.is_error()).map(ToString::to_string).unwrap_or_default();
        return Err(AppError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!(
                "commit {} has {} errors, so nothing is planned; the first: {first}",
                commit.commit.short(),
                commit.error_count()
            ),
        ));
    }
    let (plan, state_index) = api.plane.plan_against_applied(&commit).await?;
    Ok(Json(PlanView {
        state_index,
        has_changes: plan.summary.has_changes(),
        plan_text: crate::plan::render::text(&plan, false),
        plan: serde_json::from_str(&crate::plan::render::json(&plan)).unwrap_or(serde_json::Value::Null),
    }))
}

/// A push notice from GitHub, GitLab or Gitea: checked, then it only triggers a fetch. The
/// body never carries desired state; what is deployed is read from Git.
async fn webhook(
    State(api): State<Api>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, Json<serde_json::Value>), AppError> {
    let Some(secret) = &api.access.webhook_secret else {
        return Err(AppError::new(
            StatusCode::NOT_FOUND,
            "no webhook secret is configured; start the server with --webhook-secret or BERTH_WEBHOOK_SECRET",
        ));
    };
    verify_webhook(secret, &headers, &body)?;
    let reference = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v.get("ref").and_then(|r| r.as_str()).map(str::to_owned));
    let branch = &api.plane.config.branch;
    let ours = match &reference {
        Some(reference) => {
            branch == "HEAD" || reference == branch || reference.strip_prefix("refs/heads/") == Some(branch)
        }
        // A ping or an event without a ref: fetching is harmless.
        None => true,
    };
    if ours {
        api.plane.request_fetch();
    }
    let answer = serde_json::json!({ "fetch": ours, "ref": reference });
    Ok((StatusCode::ACCEPTED, Json(answer)))
}

/// Checks a webhook's signature: GitHub's `X-Hub-Signature-256: sha256=<hex>` and Gitea's
/// `X-Gitea-Signature: <hex>` are HMAC-SHA256 of the raw body; GitLab sends the secret itself
/// in `X-Gitlab-Token`. Every comparison is constant-time.
pub fn verify_webhook(secret: &str, headers: &HeaderMap, body: &[u8]) -> Result<(), AppError> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let refuse = |why: &str| AppError::new(StatusCode::UNAUTHORIZED, why.to_owned());
    let signature = header("x-hub-signature-256")
        .and_then(|v| v.strip_prefix("sha256="))
        .or_else(|| header("x-gitea-signature"))
        .or_else(|| header("x-gogs-signature"));
    if let Some(signature) = signature {
        let expected = decode_hex(signature.trim()).ok_or_else(|| refuse("the webhook signature is not hex"))?;
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes())
            .map_err(|_| refuse("the webhook secret is unusable"))?;
        mac.update(body);
        return mac
            .verify_slice(&expected)
            .map_err(|_| refuse("the webhook signature does not match the body; check the secret on both sides"));
    }
    if let Some(token) = header("x-gitlab-token") {
        let a: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let b: [u8; 32] = Sha256::digest(secret.as_bytes()).into();
        return if bool::from(a.ct_eq(&b)) {
            Ok(())
        } else {
            Err(refuse("the X-Gitlab-Token does not match the webhook secret"))
        };
    }
    Err(refuse(
        "the webhook is not signed: set the secret in the Git host's webhook settings (X-Hub-Signature-256, X-Gitea-Signature or X-Gitlab-Token)",
    ))
}

fn decode_hex(text: &str) -> Option<Vec<u8>> {
    if text.len() % 2 != 0 {
        return None;
    }
    (0..text.len()).step_by(2).map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok()).collect()
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenRequest {
    pub name: String,
    pub role: String,
    /// Empty: every namespace.
    #[serde(default)]
    pub namespaces: Vec<String>,
    /// How long the token lives; forever when absent.
    #[serde(default)]
    pub expires_in_seconds: Option<i64>,
}

/// A token made now: the only answer that carries it.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreatedToken {
    #[serde(flatten)]
    pub record: crate::store::TokenRecord,
    pub token: String,
}

async fn tokens(State(api): State<Api>, headers: HeaderMap) -> Result<Json<Vec<crate::store::TokenRecord>>, AppError> {
    let caller = api.access.authorize(&headers, Role::Admin, "listing tokens")?;
    caller.cluster_wide("managing tokens")?;
    Ok(Json(api.plane.store.tokens().await?))
}

async fn create_token(
    State(api): State<Api>,
    headers: HeaderMap,
    extensions: Extensions,
    Json(request): Json<TokenRequest>,
) -> Result<(StatusCode, Json<CreatedToken>), AppError> {
    let caller = api.access.authorize(&headers, Role::Admin, "making tokens")?;
    caller.cluster_wide("managing tokens")?;
    let made = make_token(&api, request).await;
    let object = match &made {
        Ok(made) => format!("token {} ({})", made.record.name, made.record.role),
        Err(_) => "token".to_owned(),
    };
    audit(&api.plane, &caller, &extensions, "token-create", object, &made).await;
    Ok((StatusCode::CREATED, Json(made?)))
}

async fn make_token(api: &Api, request: TokenRequest) -> Result<CreatedToken, AppError> {
    let bad = |message: String| AppError::new(StatusCode::BAD_REQUEST, message);
    let name = request.name;
    if !crate::manifest::validate::is_dns_label(&name) {
        return Err(bad(format!("the token name `{name}` must be a DNS label: lowercase letters, digits and '-'")));
    }
    if [super::access::ADMIN, super::access::ANONYMOUS].contains(&name.as_str()) {
        return Err(bad(format!("the name `{name}` is berth's own; choose another")));
    }
    let role = Role::parse(&request.role)
        .ok_or_else(|| bad(format!("the role `{}` is not viewer, deployer or admin", request.role)))?;
    if let Some(namespace) = request.namespaces.iter().find(|n| !crate::manifest::validate::is_dns_label(n)) {
        return Err(bad(format!("`{namespace}` is not a namespace name")));
    }
    if request.expires_in_seconds.is_some_and(|s| s <= 0) {
        return Err(bad("the expiry must be in the future".to_owned()));
    }
    let token = super::access::new_token();
    let now = now();
    let mut namespaces = request.namespaces;
    namespaces.sort();
    namespaces.dedup();
    let record = crate::store::TokenRecord {
        name: name.clone(),
        digest: super::access::digest(&token),
        role: role.as_str().to_owned(),
        namespaces,
        created_at: now,
        expires_at: request.expires_in_seconds.map(|s| now.saturating_add(s)),
        revoked_at: None,
    };
    if !api.plane.store.add_token(&record).await? {
        return Err(AppError::new(
            StatusCode::CONFLICT,
            format!("a token named `{name}` exists (or was revoked); names are not reused, choose another"),
        ));
    }
    api.access.add(record.clone());
    Ok(CreatedToken { record, token })
}

async fn revoke_token(
    State(api): State<Api>,
    headers: HeaderMap,
    extensions: Extensions,
    Path(name): Path<String>,
) -> Result<Json<serde_json::Value>, AppError> {
    let caller = api.access.authorize(&headers, Role::Admin, "revoking tokens")?;
    caller.cluster_wide("managing tokens")?;
    let revoked = match api.plane.store.revoke_token(&name, now()).await {
        Ok(true) => {
            api.access.revoke(&name);
            Ok(serde_json::json!({ "revoked": name }))
        }
        Ok(false) => Err(AppError::new(
            StatusCode::NOT_FOUND,
            format!("no live token is named `{name}`; `berth token list` shows them"),
        )),
        Err(error) => Err(AppError::from(error)),
    };
    audit(&api.plane, &caller, &extensions, "token-revoke", format!("token {name}"), &revoked).await;
    revoked.map(Json)
}

/// `berth node remove NAME`: the node's credential and certificate stop working at once, and
/// its pods are placed on other nodes at the next pass. Its containers are not stopped: a
/// removed node is no longer told anything.
async fn remove_node(
    State(api): State<Api>,
    headers: HeaderMap,
    extensions: Extensions,
    Path(name): Path<String>,
) -> Result<Json<serde_json::Value>, AppError> {
    let caller = api.access.authorize(&headers, Role::Admin, "removing nodes")?;
    caller.cluster_wide("removing nodes")?;
    let removed = match api.plane.store.remove_node(&name).await {
        Ok(true) => {
            api.plane.api.forget(&name);
            api.plane.wake.notify_one();
            Ok(serde_json::json!({ "removed": name }))
        }
        Ok(false) => Err(AppError::new(
            StatusCode::NOT_FOUND,
            format!("no node is named `{name}`; `berth get nodes` lists them"),
        )),
        Err(error) => Err(AppError::from(error)),
    };
    audit(&api.plane, &caller, &extensions, "node-remove", format!("node {name}"), &removed).await;
    removed.map(Json)
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct AuditQuery {
    #[serde(default)]
    since_seconds: Option<i64>,
}

async fn audit_log(
    State(api): State<Api>,
    headers: HeaderMap,
    Query(query): Query<AuditQuery>,
) -> Result<Json<Vec<crate::store::AuditRecord>>, AppError> {
    let caller = api.access.authorize(&headers, Role::Admin, "reading the audit log")?;
    caller.cluster_wide("the audit log")?;
    let since = query.since_seconds.map_or(0, |s| now() - s.max(0));
    Ok(Json(api.plane.store.audit_log(since).await?))
}
