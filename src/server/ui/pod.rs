//! A pod's page: what `berth describe pod/NAME` says, its events, and its log, which follows
//! live (`/ui/pods/{namespace}/{name}/log`, server-sent events) with a pause button.
//!
//! The log arrives from the pod's node over a session (`AgentRequest::log_stream`): the node
//! dials back and writes each line after its time as the container writes it. The follower
//! keeps the time of the last line it sent, so a container's next attempt, or the browser's
//! reconnection (`Last-Event-ID`), continues after it without a line twice.

use super::{AppError, Ui, api};
use crate::nodes::protocol::LogRequest;
use crate::server::logs::{FIRST_LINES, Follow, Followed, Follower, stamped};
use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use chrono::DateTime;
use serde::Deserialize;

#[derive(Debug, Deserialize)]
pub(super) struct LogQuery {
    container: Option<String>,
    /// Follow after this time (a line's RFC 3339 time): what the page already shows.
    after: Option<String>,
}

#[derive(Template)]
#[template(path = "pod.html")]
struct PodPage {
    namespace: String,
    name: String,
    node: String,
    workload: String,
    status: String,
    status_class: String,
    ready: bool,
    restarts: u32,
    last_error: String,
    containers: Vec<ContainerRow>,
    events: Vec<String>,
    /// The container whose log is shown, and the others to choose from.
    log_container: String,
    log_choices: Vec<String>,
    log: String,
    log_note: String,
    /// Where the page follows the log from (`/ui/pods/.../log?...`).
    log_stream: String,
}

struct ContainerRow {
    name: String,
    image: String,
    state: String,
    ready: bool,
    restarts: u32,
    last_termination: String,
    last_output: String,
}

pub(super) async fn page(
    State(ui): State<Ui>,
    headers: HeaderMap,
    Path((namespace, name)): Path<(String, String)>,
    Query(query): Query<LogQuery>,
) -> Result<Response, Response> {
    ui.read(&headers)?;
    let body = body(&ui, &namespace, &name, query.container).await.map_err(IntoResponse::into_response)?;
    super::page(&headers, &format!("Pod {namespace}/{name}"), "Workloads", body).map_err(IntoResponse::into_response)
}

async fn body(ui: &Ui, namespace: &str, name: &str, container: Option<String>) -> Result<PodPage, AppError> {
    let plane = &ui.plane;
    let now = crate::server::now();
    let (view, assignment) = api::pod_detail_view(plane, namespace, name).await?;
    let choices: Vec<String> = assignment
        .as_ref()
        .map(|a| a.spec.init_containers.iter().chain(&a.spec.containers).map(|c| c.name.clone()).collect())
        .unwrap_or_default();
    let first_app = assignment.as_ref().and_then(|a| a.spec.containers.first()).map(|c| c.name.clone());
    let log_container = container.filter(|c| choices.contains(c)).or(first_app).unwrap_or_default();
    let containers = view
        .containers
        .iter()
        .map(|c| ContainerRow {
            name: c.name.clone(),
            image: view.images.get(&c.name).cloned().unwrap_or_default(),
            state: c.reason.clone().unwrap_or_else(|| format!("{:?}", c.state)),
            ready: c.ready,
            restarts: c.restart_count,
            last_termination: c.last_termination.clone().unwrap_or_default(),
            last_output: c.last_output.clone().unwrap_or_default(),
        })
        .collect();
    let events = plane
        .store
        .events()
        .await?
        .iter()
        .filter(|e| e.namespace == namespace && e.object == format!("Pod/{name}"))
        .rev()
        .take(50)
        .map(|e| super::event_line(e, now, false))
        .collect();
    // The last lines now; the page follows from the last one's time.
    let request = LogRequest {
        namespace: namespace.to_owned(),
        pod: name.to_owned(),
        container: log_container.clone(),
        previous: false,
        tail: Some(FIRST_LINES),
        since: None,
        timestamps: true,
    };
    let (log, log_note, after) = match plane.api.ask_logs(&view.pod.node, request).await {
        Ok(text) => {
            let mut after = None;
            let mut shown = String::new();
            for (at, line) in text.lines().filter_map(stamped) {
                after = Some(at);
                shown.push_str(line);
                shown.push('\n');
            }
            (shown, String::new(), after)
        }
        Err(why) => (String::new(), why, None),
    };
    let mut stream = format!("/ui/pods/{namespace}/{name}/log?container={log_container}");
    if let Some(after) = after {
        stream.push_str(&format!("&after={}", after.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)));
    }
    let pod = view.pod;
    Ok(PodPage {
        namespace: pod.namespace,
        name: pod.name,
        node: pod.node,
        workload: format!("{}/{}", pod.kind, pod.workload),
        status_class: super::health_class(if pod.ready { "Healthy" } else { "Progressing" }),
        status: pod.status,
        ready: pod.ready,
        restarts: pod.restarts,
        last_error: pod.last_error.unwrap_or_default(),
        containers,
        events,
        log_choices: choices,
        log_container,
        log,
        log_note,
        log_stream: stream,
    })
}

/// `/ui/pods/{namespace}/{name}/log`: the container's new lines as server-sent events (`lines`,
/// with the last line's time as the event's id), `note` when the stream stops or cannot start
/// for a while, `gone` when the pod is.
pub(super) async fn log(
    State(ui): State<Ui>,
    headers: HeaderMap,
    Path((namespace, name)): Path<(String, String)>,
    Query(query): Query<LogQuery>,
) -> Result<Sse<impl futures_util::Stream<Item = Result<Event, std::convert::Infallible>>>, Response> {
    ui.allow(&headers, crate::server::access::Role::Deployer)?;
    let resumed = headers.get("last-event-id").and_then(|v| v.to_str().ok()).map(str::to_owned);
    let after = resumed.or(query.after).and_then(|t| DateTime::parse_from_rfc3339(&t).ok());
    let follow = Follow { container: query.container, after, since: None, tail: Some(FIRST_LINES) };
    let follower = Follower::new(ui.plane.clone(), namespace, name, follow);
    let stream = futures_util::stream::unfold(follower, |mut follower| async move {
        let event = match follower.next().await? {
            Followed::Lines { text, last } => {
                let lines: Vec<&str> = text.lines().filter_map(stamped).map(|(_, line)| line).collect();
                let id = last.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
                Event::default().event("lines").id(id).data(lines.join("\n"))
            }
            Followed::Note(note) => Event::default().event("note").data(note),
            Followed::Gone(why) => Event::default().event("gone").data(why),
        };
        Some((Ok(event), follower))
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}
