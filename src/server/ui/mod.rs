//! The web UI: server-rendered pages (askama) on the API's port, kept live by server-sent
//! events.
//!
//! Every page is complete HTML that reads well without JavaScript. With it, `live.js` listens
//! on `/ui/events`, which speaks only when what a page shows changed (not at every pass), and
//! then fetches the same page with `X-Berth-Fragment: 1` to swap in the new `<main>`. The pages
//! read the same views as the JSON API, so no page can show what the API does not: no secret
//! value reaches either.

use super::AppError;
use super::api::{self, Access};
use super::control::{ControlPlane, Health, Sync, SyncStatus};
use crate::manifest::ObjectKey;
use crate::store::{SyncOutcome, SyncRecord};
use askama::Template;
use axum::Router;
use axum::extract::{Form, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use std::fmt::Write as _;
use std::sync::Arc;

mod pod;

#[derive(Clone)]
struct Ui {
    plane: Arc<ControlPlane>,
    access: Access,
}

pub fn router(plane: Arc<ControlPlane>, access: Access) -> Router {
    Router::new()
        .route("/", get(overview))
        .route("/workloads", get(workloads))
        .route("/workloads/{kind}/{namespace}/{name}", get(workload))
        .route("/plan", get(plan))
        .route("/syncs", get(syncs))
        .route("/syncs/{sha}", get(sync))
        .route("/nodes", get(nodes))
        .route("/services", get(services))
        .route("/volumes", get(volumes))
        .route("/audit", get(audit))
        .route("/pods/{namespace}/{name}", get(pod::page))
        .route("/ui/pods/{namespace}/{name}/log", get(pod::log))
        .route("/ui/syncs/{sha}/approve", post(approve))
        .route("/ui/login", get(login_form).post(login))
        .route("/ui/events", get(events))
        .route("/ui/style.css", get(|| async { ([(header::CONTENT_TYPE, "text/css")], STYLE) }))
        .route("/ui/live.js", get(|| async { ([(header::CONTENT_TYPE, "text/javascript")], LIVE) }))
        .with_state(Ui { plane, access })
}

const STYLE: &str = include_str!("../../../templates/style.css");
const LIVE: &str = include_str!("../../../templates/live.js");
const TOKEN_COOKIE: &str = "berth_token";

const NAV: [(&str, &str); 8] = [
    ("/", "Overview"),
    ("/workloads", "Workloads"),
    ("/plan", "Plan"),
    ("/nodes", "Nodes"),
    ("/services", "Services"),
    ("/volumes", "Volumes"),
    ("/syncs", "Syncs"),
    ("/audit", "Audit"),
];

#[derive(Template)]
#[template(path = "base.html")]
struct Page<'a> {
    title: &'a str,
    active: &'a str,
    nav: &'a [(&'a str, &'a str)],
    live: bool,
    body: String,
}

/// A page's answer: the whole document, or only its `<main>` for `live.js`.
fn page(headers: &HeaderMap, title: &str, active: &str, body: impl Template) -> Result<Response, AppError> {
    let body = body.render().map_err(render_error)?;
    if headers.get("x-berth-fragment").is_some() {
        return Ok(Html(body).into_response());
    }
    let html = Page { title, active, nav: &NAV, live: true, body }.render().map_err(render_error)?;
    let mut response = Html(html).into_response();
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

fn render_error(error: askama::Error) -> AppError {
    tracing::error!(%error, "Rendering a page failed.");
    AppError::new(StatusCode::INTERNAL_SERVER_ERROR, "rendering the page failed; see the server's log")
}

/// The token the sign-in form keeps in its cookie, if any.
fn signed_in_token(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| c.trim().strip_prefix(TOKEN_COOKIE).and_then(|v| v.strip_prefix('=')).map(str::to_owned))
}

impl Ui {
    /// The name of the token signed in with, when there is one that is valid.
    fn signed_in(&self, headers: &HeaderMap) -> Option<String> {
        signed_in_token(headers).and_then(|token| self.access.identify(&token, super::now()).ok()).map(|c| c.name)
    }

    /// Reads need the token on a listener that is not loopback: as a header or the cookie the
    /// login form sets. The error is the handler's whole answer (a redirect to the form).
    #[allow(clippy::result_large_err)]
    fn read(&self, headers: &HeaderMap) -> Result<(), Response> {
        self.allow(headers, super::access::Role::Viewer)
    }

    /// As [`Ui::read`], for what needs `role` off loopback (a deployer for logs). The UI shows
    /// every namespace, so a token kept to some namespaces is refused.
    #[allow(clippy::result_large_err)]
    fn allow(&self, headers: &HeaderMap, role: super::access::Role) -> Result<(), Response> {
        if !self.access.reads_need_token() {
            return Ok(());
        }
        let bearer = super::agent_api::bearer(headers).ok().map(str::to_owned);
        match signed_in_token(headers).or(bearer).map(|token| self.access.identify(&token, super::now())) {
            Some(Ok(caller)) if caller.role < role => Err(AppError::new(
                StatusCode::FORBIDDEN,
                format!(
                    "the token `{}` is a {}; this page needs the role {}",
                    caller.name,
                    caller.role.as_str(),
                    role.as_str()
                ),
            )
            .into_response()),
            Some(Ok(caller)) => caller.cluster_wide("the web UI").map_err(IntoResponse::into_response),
            _ => Err(Redirect::to("/ui/login").into_response()),
        }
    }
}

// ---- formatting helpers: everything that becomes HTML outside askama is escaped here ----

pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Days since 1970-01-01 to a civil date (proleptic Gregorian).
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// `2026-11-22 03:14:05 UTC`.
pub fn exact(seconds: i64) -> String {
    let (year, month, day) = civil(seconds.div_euclid(86_400));
    let rest = seconds.rem_euclid(86_400);
    format!("{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC", rest / 3600, rest % 3600 / 60, rest % 60)
}

/// `3 min ago`, `2 h ago`, `5 days ago`.
pub fn ago(seconds: i64, now: i64) -> String {
    let delta = (now - seconds).max(0);
    match delta {
        d if d < 60 => format!("{d} s ago"),
        d if d < 3600 => format!("{} min ago", d / 60),
        d if d < 2 * 86_400 => format!("{} h ago", d / 3600),
        d => format!("{} days ago", d / 86_400),
    }
}

/// A `<time>` that reads "3 min ago" and shows the exact time on hover.
fn time(seconds: i64, now: i64) -> String {
    let exact = exact(seconds);
    let iso = exact.replace(" UTC", "Z").replacen(' ', "T", 1);
    format!("<time datetime=\"{iso}\" title=\"{exact}\">{}</time>", ago(seconds, now))
}

/// The web page of a commit, for repositories on hosts whose URL scheme is known.
pub fn commit_url(repository: &str, sha: &str) -> Option<String> {
    let rest = repository
        .strip_prefix("https://")
        .or_else(|| repository.strip_prefix("http://"))
        .or_else(|| repository.strip_prefix("ssh://git@"))
        .map(str::to_owned)
        .or_else(|| repository.strip_prefix("git@").map(|r| r.replacen(':', "/", 1)))?;
    let rest = rest.trim_end_matches('/').trim_end_matches(".git");
    let (host, path) = rest.split_once('/')?;
    let host = host.rsplit('@').next()?;
    let kind = match host {
        "github.com" | "codeberg.org" | "gitea.com" => "commit",
        "gitlab.com" => "-/commit",
        "bitbucket.org" => "commits",
        _ => return None,
    };
    if path.split('/').count() < 2 || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    Some(format!("https://{host}/{path}/{kind}/{sha}"))
}

/// A commit as a short sha (linked when the host is known), its message, author and age.
fn commit(repository: &str, sha: &str, message: &str, author: &str, time_of: Option<i64>, now: i64) -> String {
    let short = escape(&sha[..sha.len().min(7)]);
    let mut html = match commit_url(repository, sha) {
        Some(url) => format!("<a href=\"{}\"><code>{short}</code></a>", escape(&url)),
        None => format!("<code title=\"{}\">{short}</code>", escape(sha)),
    };
    if !message.is_empty() {
        let _ = write!(html, " {}", escape(message));
    }
    if !author.is_empty() {
        let _ = write!(html, " <span class=\"muted\">by {}", escape(author));
        if let Some(at) = time_of {
            let _ = write!(html, ", {}", time(at, now));
        }
        html.push_str("</span>");
    }
    html
}

/// One event as a list item's HTML: when, the reason (marked as a warning or not), the object
/// when the list is about more than one, how many times, and the message.
fn event_line(event: &crate::store::EventRecord, now: i64, with_object: bool) -> String {
    let count = if event.count > 1 { format!(" (x{})", event.count) } else { String::new() };
    let object = if with_object { format!(" {}", escape(&event.object)) } else { String::new() };
    format!(
        "{} <strong class=\"{}\">{}</strong>{object}{count}: {}",
        time(event.last_seen, now),
        if event.kind == "Warning" { "warning" } else { "normal" },
        escape(&event.reason),
        escape(&event.message)
    )
}

fn health_class(health: &str) -> String {
    health.to_ascii_lowercase()
}

/// A plan or diff as HTML: escaped, additions and removals marked. Diff lines carry their
/// marker (`+`, `-`, `@`, space) after `indent` spaces: 0 in a raw diff, 4 in a plan's text.
fn diff_html(text: &str, indent: usize) -> String {
    let mut html = String::with_capacity(text.len() + text.len() / 4);
    for line in text.lines() {
        let marker = line.as_bytes().get(indent).filter(|_| line.as_bytes()[..indent].iter().all(|b| *b == b' '));
        let class = match marker {
            Some(b'+') => Some("add"),
            Some(b'-') => Some("del"),
            Some(b'@') => Some("hunk"),
            _ => None,
        };
        match class {
            Some(class) => {
                let _ = writeln!(html, "<span class=\"{class}\">{}</span>", escape(line));
            }
            None => {
                let _ = writeln!(html, "{}", escape(line));
            }
        }
    }
    html
}

// ---- pages ----

#[derive(Template)]
#[template(path = "overview.html")]
struct Overview {
    status: HealthView,
    repository: String,
    branch: String,
    head: Option<String>,
    applied: Option<String>,
    last_sync: Option<String>,
    workloads_total: usize,
    workloads_by_health: Vec<(String, usize)>,
    pods: usize,
    pods_ready: usize,
    nodes: usize,
    nodes_ready: usize,
    services: usize,
    services_without_endpoints: usize,
    plan_summary: Option<String>,
}

struct HealthView {
    sync: String,
    sync_class: String,
    health: String,
    health_class: String,
    reason: String,
}

async fn overview(State(ui): State<Ui>, headers: HeaderMap) -> Result<Response, Response> {
    ui.read(&headers)?;
    let body = overview_body(&ui.plane).await.map_err(IntoResponse::into_response)?;
    page(&headers, "Overview", "Overview", body).map_err(IntoResponse::into_response)
}

async fn overview_body(plane: &ControlPlane) -> Result<Overview, AppError> {
    let now = super::now();
    let view = api::status_view(plane).await?;
    let status = &view.status;
    let repository = status.repository.clone();
    let applied_commit = match &status.applied {
        Some(sha) => {
            let record = plane.store.sync(sha).await?;
            let (author, at) =
                record.as_ref().map_or((String::new(), None), |r| (r.commit.author.clone(), Some(r.commit.time)));
            Some(commit(&repository, sha, &status.applied_message, &author, at, now))
        }
        None => None,
    };
    let last_sync = view.last_sync.as_ref().map(|s| {
        format!(
            "{} <span class=\"badge {}\">{}</span> {}{}",
            commit(&repository, &s.commit.sha, &s.commit.message, "", None, now),
            s.outcome,
            s.outcome,
            time(s.finished_at.unwrap_or(s.seen_at), now),
            if s.reason.is_empty() { String::new() } else { format!(": {}", escape(&s.reason)) }
        )
    });
    // The newest sync record's plan, said as what it is: pending only while it waits or is
    // being carried out; a finished one is history.
    let plan_summary = view.last_sync.as_ref().and_then(|s| {
        let line = s.plan_text.lines().find(|l| l.starts_with("Plan:"))?;
        let short = &s.commit.sha[..s.commit.sha.len().min(7)];
        Some(match s.outcome {
            SyncOutcome::Waiting => format!("Commit {short} waits for approval. {line}"),
            SyncOutcome::Progressing => format!("Commit {short} is being applied. {line}"),
            SyncOutcome::Synced => format!("Nothing pending: commit {short} is applied. Its plan was: {line}"),
            outcome => format!("Nothing pending. The plan of commit {short} ({outcome}) was: {line}"),
        })
    });
    let mut by_health: Vec<(String, usize)> = view.counts.workloads.iter().map(|(k, v)| (k.clone(), *v)).collect();
    by_health.sort();
    Ok(Overview {
        status: HealthView {
            sync: status.sync.as_str().to_owned(),
            sync_class: health_class(status.sync.as_str()),
            health: status.health.as_str().to_owned(),
            health_class: health_class(status.health.as_str()),
            reason: status.reason.clone(),
        },
        branch: status.branch.clone(),
        head: status.head.as_ref().map(|h| commit(&repository, &h.sha, &h.message, &h.author, Some(h.time), now)),
        applied: applied_commit,
        repository,
        last_sync,
        workloads_total: status.workloads.len(),
        workloads_by_health: by_health,
        pods: view.counts.pods,
        pods_ready: view.counts.pods_ready,
        nodes: view.counts.nodes,
        nodes_ready: view.counts.nodes_ready,
        services: view.counts.services,
        services_without_endpoints: view.counts.services_without_endpoints,
        plan_summary,
    })
}

#[derive(Template)]
#[template(path = "workloads.html")]
struct Workloads {
    namespaces: Vec<String>,
    namespace: String,
    healths: Vec<String>,
    health: String,
    rows: Vec<WorkloadRow>,
}

struct WorkloadRow {
    kind: String,
    namespace: String,
    name: String,
    href: String,
    ready: String,
    revision: String,
    sync: String,
    sync_class: String,
    health: String,
    health_class: String,
    reason: String,
}

#[derive(Debug, Default, Deserialize)]
struct WorkloadFilter {
    #[serde(default)]
    namespace: String,
    #[serde(default)]
    status: String,
}

async fn workloads(
    State(ui): State<Ui>,
    headers: HeaderMap,
    Query(filter): Query<WorkloadFilter>,
) -> Result<Response, Response> {
    ui.read(&headers)?;
    page(&headers, "Workloads", "Workloads", workloads_body(&ui.plane.status.borrow(), &filter))
        .map_err(IntoResponse::into_response)
}

fn workloads_body(status: &SyncStatus, filter: &WorkloadFilter) -> Workloads {
    let now = super::now();
    let mut namespaces: Vec<String> = status.workloads.iter().map(|w| w.namespace.clone()).collect();
    namespaces.sort();
    namespaces.dedup();
    let rows = status
        .workloads
        .iter()
        .filter(|w| filter.namespace.is_empty() || w.namespace == filter.namespace)
        .filter(|w| filter.status.is_empty() || [w.sync.as_str(), w.health.as_str()].contains(&filter.status.as_str()))
        .map(|w| WorkloadRow {
            kind: w.kind.clone(),
            namespace: w.namespace.clone(),
            name: w.name.clone(),
            href: format!("/workloads/{}/{}/{}", w.kind.to_ascii_lowercase(), w.namespace, w.name),
            ready: format!("{}/{}", w.ready, w.replicas.map_or(w.total, |r| r.max(0) as usize)),
            revision: commit(&status.repository, &w.revision, &w.revision_message, "", None, now),
            sync: w.sync.as_str().to_owned(),
            sync_class: health_class(w.sync.as_str()),
            health: w.health.as_str().to_owned(),
            health_class: health_class(w.health.as_str()),
            reason: w.reason.clone(),
        })
        .collect();
    Workloads {
        namespaces,
        namespace: filter.namespace.clone(),
        healths: [Sync::Synced, Sync::OutOfSync]
            .iter()
            .map(|s| s.as_str())
            .chain(
                [Health::Healthy, Health::Progressing, Health::Degraded, Health::Missing, Health::Unknown]
                    .iter()
                    .map(|h| h.as_str()),
            )
            .map(str::to_owned)
            .collect(),
        health: filter.status.clone(),
        rows,
    }
}

#[derive(Template)]
#[template(path = "workload.html")]
struct WorkloadPage {
    kind: String,
    namespace: String,
    name: String,
    sync: String,
    sync_class: String,
    health: String,
    health_class: String,
    reason: String,
    pinned: Option<String>,
    ready: usize,
    wanted: String,
    updated: usize,
    total: usize,
    revision: String,
    rollout: String,
    pods: Vec<PodRow>,
    history: Vec<HistoryRow>,
    diff: Option<String>,
    diff_title: String,
    events: Vec<String>,
}

struct PodRow {
    node: String,
    name: String,
    phase: String,
    ready: bool,
    restarts: u32,
    last_error: String,
    cpu: String,
    memory: String,
    /// Inline SVG made of numbers only (`sparkline`).
    graph: String,
}

fn millicores(value: u64) -> String {
    format!("{value}m")
}

fn mebibytes(value: u64) -> String {
    format!("{} MiB", value / (1024 * 1024))
}

/// What is in use against what is asked for: `250m (requests 100m, limits 500m)`; what is not
/// asked for is left out, and nothing is in use until a first sample.
fn against(used: Option<u64>, requests: u64, limits: u64, unit: fn(u64) -> String) -> String {
    let Some(used) = used else { return "not sampled yet".to_owned() };
    let mut asked = Vec::new();
    if requests > 0 {
        asked.push(format!("requests {}", unit(requests)));
    }
    if limits > 0 {
        asked.push(format!("limits {}", unit(limits)));
    }
    if asked.is_empty() { unit(used) } else { format!("{} ({})", unit(used), asked.join(", ")) }
}

/// A graph of the last hour, CPU solid and memory dashed, each against its own largest value:
/// inline SVG written from numbers only, so nothing in it needs escaping. Empty below two points.
fn sparkline(points: &[super::usage::Point], now: i64) -> String {
    if points.len() < 2 {
        return String::new();
    }
    let (width, height) = (120.0, 28.0);
    let span = super::usage::HISTORY_SECONDS as f64;
    let line = |value: fn(&super::usage::Point) -> u64| {
        let largest = points.iter().map(value).max().unwrap_or(0).max(1) as f64;
        points
            .iter()
            .map(|p| {
                let x = width * (1.0 - ((now - p.at) as f64 / span).clamp(0.0, 1.0));
                let y = height - 2.0 - (height - 4.0) * value(p) as f64 / largest;
                format!("{x:.1},{y:.1}")
            })
            .collect::<Vec<_>>()
            .join(" ")
    };
    let last = points[points.len() - 1];
    format!(
        "<svg class=\"spark\" viewBox=\"0 0 120 28\" width=\"120\" height=\"28\" role=\"img\" aria-label=\"CPU and memory over the last hour, now {}m and {} MiB\"><polyline class=\"cpu\" points=\"{}\"/><polyline class=\"memory\" points=\"{}\"/></svg>",
        last.cpu_millis,
        last.memory_bytes / (1024 * 1024),
        line(|p| p.cpu_millis),
        line(|p| p.memory_bytes),
    )
}

struct HistoryRow {
    commit: String,
    author: String,
    started: String,
    outcome: String,
    reason: String,
}

async fn workload(
    State(ui): State<Ui>,
    headers: HeaderMap,
    Path((kind, namespace, name)): Path<(String, String, String)>,
) -> Result<Response, Response> {
    ui.read(&headers)?;
    let kind = crate::manifest::Kind::from_cli(&kind).filter(|k| k.is_workload()).ok_or_else(|| {
        AppError::new(StatusCode::NOT_FOUND, format!("`{kind}` is not a workload kind")).into_response()
    })?;
    let key = ObjectKey { kind, namespace, name };
    let body = workload_body(&ui.plane, &key).await.map_err(IntoResponse::into_response)?;
    page(&headers, &format!("{} {}", key.kind, key.qualified_name()), "Workloads", body)
        .map_err(IntoResponse::into_response)
}

async fn workload_body(plane: &ControlPlane, key: &ObjectKey) -> Result<WorkloadPage, AppError> {
    let now = super::now();
    let view = api::workload_view(plane, key).await?;
    let repository = plane.status.borrow().repository.clone();
    let w = &view.workload;
    let usage = plane.api.usage();
    let sampled = usage.pods();
    let samples: std::collections::HashMap<(&str, &str), &super::usage::PodSample> =
        sampled.iter().map(|s| ((s.namespace.as_str(), s.pod.as_str()), s)).collect();
    let syncs = plane.store.syncs(20).await?;
    // The plan that concerns this workload now: a waiting commit's, else the applied one's.
    let current = syncs
        .iter()
        .find(|s| s.outcome == SyncOutcome::Waiting)
        .or_else(|| syncs.iter().find(|s| s.commit.sha == w.revision || s.outcome == SyncOutcome::Progressing));
    let change = current.and_then(|s| {
        let plan: serde_json::Value = serde_json::from_str(&s.plan_json).ok()?;
        plan["changes"]
            .as_array()?
            .iter()
            .find(|c| {
                c["kind"] == key.kind.name()
                    && c["namespace"] == key.namespace.as_str()
                    && c["name"] == key.name.as_str()
            })
            .cloned()
    });
    let batches: Vec<usize> = change
        .as_ref()
        .and_then(|c| {
            c["rollout"]["batches"]
                .as_array()
                .map(|b| b.iter().filter_map(|n| n.as_u64()).map(|n| n as usize).collect())
        })
        .unwrap_or_default();
    let rollout = if w.health == Health::Progressing && !batches.is_empty() {
        let mut done = 0;
        let batch = batches.iter().take_while(|b| {
            done += **b;
            done <= w.updated
        });
        let current_batch = (batch.count() + 1).min(batches.len());
        format!(
            "batch {current_batch} of {}: {} of {} replicas updated",
            batches.len(),
            w.updated,
            batches.iter().sum::<usize>()
        )
    } else if w.health == Health::Progressing {
        format!("rolling out: {} updated, {} ready", w.updated, w.ready)
    } else {
        "no rollout in progress".to_owned()
    };
    let mut events = Vec::new();
    for revision in &view.history {
        let what = commit(&repository, &revision.commit.sha, &revision.commit.message, "", None, now);
        if let Some(finished) = revision.finished_at {
            let outcome = match revision.outcome {
                crate::store::Outcome::Healthy => "became healthy".to_owned(),
                crate::store::Outcome::Failed => format!("failed: {}", escape(&revision.reason)),
                crate::store::Outcome::Progressing => "progressing".to_owned(),
            };
            events.push(format!("{} {what} {outcome}", time(finished, now)));
        }
        events.push(format!("{} {what} started rolling out", time(revision.started_at, now)));
    }
    // What happened to the workload and its pods, newest first, before its revisions' story.
    let kind = key.kind.name();
    let recorded = plane.store.events().await?;
    let mut told: Vec<String> = recorded
        .iter()
        .filter(|e| e.namespace == key.namespace && super::events::is_about(&e.object, &e.owner, kind, &key.name))
        .rev()
        .take(50)
        .map(|e| event_line(e, now, true))
        .collect();
    told.append(&mut events);
    let mut events = told;
    if let Some(pin) = &view.pin {
        events.insert(
            0,
            format!(
                "{} pinned to <code>{}</code> by a rollback",
                time(pin.pinned_at, now),
                escape(&pin.commit[..pin.commit.len().min(7)])
            ),
        );
    }
    Ok(WorkloadPage {
        kind: w.kind.clone(),
        namespace: w.namespace.clone(),
        name: w.name.clone(),
        sync: w.sync.as_str().to_owned(),
        sync_class: health_class(w.sync.as_str()),
        health: w.health.as_str().to_owned(),
        health_class: health_class(w.health.as_str()),
        reason: w.reason.clone(),
        pinned: view.pin.as_ref().map(|p| commit(&repository, &p.commit, "", "", None, now)),
        ready: w.ready,
        wanted: w.replicas.map_or_else(|| "one per node".to_owned(), |r| r.to_string()),
        updated: w.updated,
        total: w.total,
        revision: commit(&repository, &w.revision, &w.revision_message, "", None, now),
        rollout,
        pods: view
            .pods
            .iter()
            .map(|p| {
                let sample = samples.get(&(p.namespace.as_str(), p.name.as_str()));
                PodRow {
                    node: p.node.clone(),
                    name: p.name.clone(),
                    phase: p.status.clone(),
                    ready: p.ready,
                    restarts: p.restarts,
                    last_error: p.last_error.clone().unwrap_or_default(),
                    cpu: against(sample.map(|s| s.cpu_millis), p.requests.cpu_millis, p.limits.cpu_millis, millicores),
                    memory: against(
                        sample.map(|s| s.memory_bytes),
                        p.requests.memory_bytes,
                        p.limits.memory_bytes,
                        mebibytes,
                    ),
                    graph: sparkline(&usage.pod_history(&p.namespace, &p.name), now),
                }
            })
            .collect(),
        history: view
            .history
            .iter()
            .map(|r| HistoryRow {
                commit: commit(&repository, &r.commit.sha, &r.commit.message, "", None, now),
                author: r.commit.author.clone(),
                started: time(r.started_at, now),
                outcome: r.outcome.as_str().to_owned(),
                reason: r.reason.clone(),
            })
            .collect(),
        diff: change.filter(|c| c["action"] != "unchanged").and_then(|c| c["diff"].as_str().map(|d| diff_html(d, 0))),
        diff_title: if current.is_some_and(|s| s.outcome == SyncOutcome::Waiting) {
            "Pending change"
        } else {
            "Last change"
        }
        .to_owned(),
        events,
    })
}

#[derive(Template)]
#[template(path = "plan.html")]
struct PlanPage {
    record: Option<PlanRecord>,
    /// The token the page's Approve acts as when its field is left empty.
    signed_in: Option<String>,
}

struct PlanRecord {
    sha: String,
    commit: String,
    outcome: String,
    outcome_class: String,
    reason: String,
    state_index: i64,
    plan_digest: String,
    waiting: bool,
    plan: String,
}

fn plan_record(repository: &str, record: &SyncRecord) -> PlanRecord {
    let now = super::now();
    PlanRecord {
        sha: record.commit.sha.clone(),
        commit: commit(
            repository,
            &record.commit.sha,
            &record.commit.message,
            &record.commit.author,
            Some(record.commit.time),
            now,
        ),
        outcome: record.outcome.to_string(),
        outcome_class: health_class(record.outcome.as_str()),
        reason: record.reason.clone(),
        state_index: record.state_index,
        plan_digest: super::control::plan_digest_of(&record.plan_json).unwrap_or_default(),
        waiting: record.outcome == SyncOutcome::Waiting,
        plan: diff_html(&record.plan_text, 4),
    }
}

async fn plan(State(ui): State<Ui>, headers: HeaderMap) -> Result<Response, Response> {
    ui.read(&headers)?;
    let syncs = ui.plane.store.syncs(50).await.map_err(|e| AppError::from(e).into_response())?;
    // The pending plan first: a commit waiting for approval; else the newest that loaded.
    let record = syncs
        .iter()
        .find(|s| s.outcome == SyncOutcome::Waiting)
        .or_else(|| syncs.iter().find(|s| s.outcome != SyncOutcome::Failed));
    let repository = ui.plane.status.borrow().repository.clone();
    let body = PlanPage { record: record.map(|r| plan_record(&repository, r)), signed_in: ui.signed_in(&headers) };
    page(&headers, "Plan", "Plan", body).map_err(IntoResponse::into_response)
}

async fn sync(State(ui): State<Ui>, headers: HeaderMap, Path(sha): Path<String>) -> Result<Response, Response> {
    ui.read(&headers)?;
    let record = ui.plane.store.sync(&sha).await.map_err(|e| AppError::from(e).into_response())?;
    let Some(record) = record else {
        return Err(AppError::new(StatusCode::NOT_FOUND, format!("no commit `{sha}` was seen")).into_response());
    };
    let repository = ui.plane.status.borrow().repository.clone();
    let body = PlanPage { record: Some(plan_record(&repository, &record)), signed_in: ui.signed_in(&headers) };
    page(&headers, "Plan", "Syncs", body).map_err(IntoResponse::into_response)
}

#[derive(Template)]
#[template(path = "syncs.html")]
struct Syncs {
    rows: Vec<SyncRow>,
}

struct SyncRow {
    sha: String,
    commit: String,
    author: String,
    seen: String,
    outcome: String,
    outcome_class: String,
    reason: String,
}

async fn syncs(State(ui): State<Ui>, headers: HeaderMap) -> Result<Response, Response> {
    ui.read(&headers)?;
    let now = super::now();
    let repository = ui.plane.status.borrow().repository.clone();
    let records = ui.plane.store.syncs(200).await.map_err(|e| AppError::from(e).into_response())?;
    let rows = records
        .iter()
        .map(|s| SyncRow {
            sha: s.commit.sha.clone(),
            commit: commit(&repository, &s.commit.sha, &s.commit.message, "", None, now),
            author: s.commit.author.clone(),
            seen: time(s.seen_at, now),
            outcome: s.outcome.to_string(),
            outcome_class: health_class(s.outcome.as_str()),
            reason: s.reason.clone(),
        })
        .collect();
    page(&headers, "Syncs", "Syncs", Syncs { rows }).map_err(IntoResponse::into_response)
}

#[derive(Template)]
#[template(path = "nodes.html")]
struct Nodes {
    rows: Vec<NodeRow>,
}

struct NodeRow {
    name: String,
    status: String,
    status_class: String,
    address: String,
    labels: String,
    cpu: String,
    memory: String,
    cpu_used: String,
    memory_used: String,
    /// Inline SVG made of numbers only (`sparkline`).
    graph: String,
    heartbeat: String,
    pods: usize,
}

async fn nodes(State(ui): State<Ui>, headers: HeaderMap) -> Result<Response, Response> {
    ui.read(&headers)?;
    let now = super::now();
    let views = api::node_views(&ui.plane).await.map_err(IntoResponse::into_response)?;
    let mib = |bytes: u64| bytes / (1024 * 1024);
    let usage = ui.plane.api.usage();
    let share = |used: Option<u64>, of: u64, unit: fn(u64) -> String| match used {
        None => "not sampled yet".to_owned(),
        Some(used) if of > 0 => format!("{} of {} ({}%)", unit(used), unit(of), used.saturating_mul(100) / of),
        Some(used) => unit(used),
    };
    let rows = views
        .into_iter()
        .map(|n| {
            let sample = usage.node(&n.name);
            NodeRow {
                cpu_used: share(sample.as_ref().and_then(|s| s.cpu_millis), n.allocatable.cpu_millis, millicores),
                memory_used: share(sample.as_ref().and_then(|s| s.memory_bytes), n.allocatable.memory_bytes, mebibytes),
                graph: sparkline(&usage.node_history(&n.name), now),
                status_class: if n.status == "Ready" { "synced".into() } else { "degraded".into() },
                labels: n.labels.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(", "),
                cpu: format!(
                    "{}m of {}m allocatable ({}m capacity)",
                    n.allocated.cpu_millis, n.allocatable.cpu_millis, n.capacity.cpu_millis
                ),
                memory: format!(
                    "{} MiB of {} MiB allocatable ({} MiB capacity)",
                    mib(n.allocated.memory_bytes),
                    mib(n.allocatable.memory_bytes),
                    mib(n.capacity.memory_bytes)
                ),
                heartbeat: time(n.last_heartbeat, now),
                name: n.name,
                status: n.status,
                address: n.address,
                pods: n.pods,
            }
        })
        .collect();
    page(&headers, "Nodes", "Nodes", Nodes { rows }).map_err(IntoResponse::into_response)
}

#[derive(Template)]
#[template(path = "services.html")]
struct Services {
    rows: Vec<ServiceRow>,
}

struct ServiceRow {
    addresses: String,
    namespace: String,
    name: String,
    kind: String,
    ports: String,
    endpoints: String,
}

async fn services(State(ui): State<Ui>, headers: HeaderMap) -> Result<Response, Response> {
    ui.read(&headers)?;
    let pods = api::pod_views(&ui.plane).await.map_err(IntoResponse::into_response)?;
    let nodes = api::node_views(&ui.plane).await.map_err(IntoResponse::into_response)?;
    let ready_nodes: Vec<String> = nodes.iter().filter(|n| n.status == "Ready").map(|n| n.address.clone()).collect();
    let rows = api::service_views(&ui.plane, &pods)
        .into_iter()
        .map(|s| ServiceRow {
            addresses: {
                let mut addresses = vec![
                    format!("{}.{}", s.name, s.namespace),
                    format!("{}.{}.svc.cluster.local", s.name, s.namespace),
                ];
                addresses.extend(s.cluster_ip.iter().cloned());
                for port in s.ports.iter().filter_map(|p| p.node_port) {
                    addresses.extend(ready_nodes.iter().map(|a| format!("{a}:{port}")));
                }
                addresses.join(", ")
            },
            kind: if s.headless { "ClusterIP (headless)".into() } else { s.service_type.clone() },
            ports: s
                .ports
                .iter()
                .map(|p| match p.node_port {
                    Some(node_port) => format!("{} → {} (node port {node_port})/{}", p.port, p.target_port, p.protocol),
                    None => format!("{} → {}/{}", p.port, p.target_port, p.protocol),
                })
                .collect::<Vec<_>>()
                .join(", "),
            endpoints: format!("{}/{}", s.endpoints_ready, s.endpoints_total),
            namespace: s.namespace,
            name: s.name,
        })
        .collect();
    page(&headers, "Services", "Services", Services { rows }).map_err(IntoResponse::into_response)
}

#[derive(Template)]
#[template(path = "volumes.html")]
struct Volumes {
    rows: Vec<VolumeRow>,
}

struct VolumeRow {
    namespace: String,
    name: String,
    status: String,
    status_class: &'static str,
    node: String,
    capacity: String,
    access_modes: String,
    owner: String,
    used_by: String,
    age: String,
}

async fn volumes(State(ui): State<Ui>, headers: HeaderMap) -> Result<Response, Response> {
    ui.read(&headers)?;
    let now = super::now();
    let views = api::claim_views(&ui.plane).await.map_err(IntoResponse::into_response)?;
    let rows = views
        .into_iter()
        .map(|c| VolumeRow {
            status_class: match (c.status.as_str(), c.node_ready) {
                ("Bound", true) => "synced",
                ("Bound", false) => "degraded",
                _ => "progressing",
            },
            node: match (&c.node, c.node_ready) {
                (Some(node), true) => node.clone(),
                (Some(node), false) => format!("{node} (NotReady: its pods wait)"),
                (None, _) => "none yet".to_owned(),
            },
            capacity: if c.capacity.is_empty() { "not asked".to_owned() } else { c.capacity },
            used_by: if c.used_by.is_empty() { "no pod".to_owned() } else { c.used_by.join(", ") },
            age: time(c.created_at, now),
            namespace: c.namespace,
            name: c.name,
            status: c.status,
            access_modes: c.access_modes,
            owner: c.owner,
        })
        .collect();
    page(&headers, "Volumes", "Volumes", Volumes { rows }).map_err(IntoResponse::into_response)
}

#[derive(Template)]
#[template(path = "audit.html")]
struct Audit {
    rows: Vec<AuditRow>,
}

struct AuditRow {
    when: String,
    who: String,
    action: String,
    object: String,
    address: String,
    ok: bool,
    outcome: String,
}

/// The audit log, newest first; off loopback it needs an admin token, as `berth audit` does.
async fn audit(State(ui): State<Ui>, headers: HeaderMap) -> Result<Response, Response> {
    ui.allow(&headers, super::access::Role::Admin)?;
    let now = super::now();
    let log = ui.plane.store.audit_log(0).await.map_err(|e| AppError::from(e).into_response())?;
    let rows = log
        .into_iter()
        .rev()
        .take(500)
        .map(|a| AuditRow {
            when: time(a.at, now),
            ok: a.outcome == "ok",
            who: a.who,
            action: a.action,
            object: a.object,
            address: a.address,
            outcome: a.outcome,
        })
        .collect();
    page(&headers, "Audit", "Audit", Audit { rows }).map_err(IntoResponse::into_response)
}

#[derive(Debug, Deserialize)]
struct ApproveForm {
    #[serde(default)]
    token: String,
    state_index: i64,
    #[serde(default)]
    plan_digest: String,
}

/// The Approve button: the API token from the form, and the plan shown (its digest and the
/// state index it was made at).
async fn approve(
    State(ui): State<Ui>,
    request_headers: HeaderMap,
    extensions: axum::http::Extensions,
    Path(sha): Path<String>,
    Form(form): Form<ApproveForm>,
) -> Response {
    // The token typed into the form, else the one signed in with.
    let token = Some(form.token.trim().to_owned())
        .filter(|t| !t.is_empty())
        .or_else(|| signed_in_token(&request_headers))
        .unwrap_or_default();
    let allowed = ui
        .access
        .authorize_token(Some(&token), super::access::Role::Deployer, "approving")
        .and_then(|caller| caller.cluster_wide("a commit's plan").map(|()| caller));
    let caller = match allowed {
        Ok(caller) => caller,
        Err(error) => {
            // Refused from the page: recorded as the API's refusals are.
            let who = ui.access.name_of(Some(&token));
            let refused: Result<(), String> = Err(format!("refused ({}): {}", error.status.as_u16(), error.message));
            let caller = super::access::Caller::named(who);
            super::api::audit(&ui.plane, &caller, &extensions, "approve", format!("commit {sha}"), &refused).await;
            return error.into_response();
        }
    };
    let digest = Some(form.plan_digest.as_str()).filter(|d| !d.is_empty());
    let approved = super::control::approve(&ui.plane, &sha, Some(form.state_index), digest).await;
    super::api::audit(&ui.plane, &caller, &extensions, "approve", format!("commit {sha}"), &approved).await;
    match approved {
        Ok(_) => Redirect::to("/plan").into_response(),
        Err(super::control::ApproveError::Store(error)) => AppError::from(error).into_response(),
        Err(error) => AppError::new(StatusCode::CONFLICT, error.to_string()).into_response(),
    }
}

async fn login_form() -> Html<&'static str> {
    Html(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>Sign in · berth</title><link rel=\"stylesheet\" href=\"/ui/style.css\"></head><body><main>\
         <h1>berth</h1><p>This server is not on loopback: enter its API token (the api-token file in its state folder).</p>\
         <form method=\"post\" action=\"/ui/login\"><label>API token <input type=\"password\" name=\"token\" required></label>\
         <button type=\"submit\">Sign in</button></form></main></body></html>",
    )
}

#[derive(Debug, Deserialize)]
struct LoginForm {
    token: String,
}

async fn login(State(ui): State<Ui>, Form(form): Form<LoginForm>) -> Response {
    let token = form.token.trim();
    if !ui.access.accepts(token) {
        return AppError::new(StatusCode::UNAUTHORIZED, "the API token is wrong").into_response();
    }
    let mut response = Redirect::to("/").into_response();
    if let Ok(cookie) = HeaderValue::from_str(&format!("{TOKEN_COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict")) {
        response.headers_mut().insert(header::SET_COOKIE, cookie);
    }
    response
}

/// What a page shows of the status, without the time of the pass: an event is sent only when
/// this changes.
fn visible(status: &SyncStatus) -> String {
    let mut shown = status.clone();
    shown.updated_at = 0;
    shown.last_pass = None;
    serde_json::to_string(&shown).unwrap_or_default()
}

async fn events(
    State(ui): State<Ui>,
    headers: HeaderMap,
) -> Result<Sse<impl futures_util::Stream<Item = Result<Event, std::convert::Infallible>>>, Response> {
    ui.read(&headers)?;
    let receiver = ui.plane.status.subscribe();
    let stream = futures_util::stream::unfold((receiver, String::new()), |(mut receiver, mut last)| async move {
        loop {
            let now = visible(&receiver.borrow_and_update());
            if now != last {
                last = now;
                let event = Event::default().event("status").data(super::now().to_string());
                return Some((Ok(event), (receiver, last)));
            }
            receiver.changed().await.ok()?;
        }
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}
