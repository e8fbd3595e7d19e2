//! A pod's page: what `berth describe pod/NAME` says, its events, and its log, which follows
//! live (`/ui/pods/{namespace}/{name}/log`, server-sent events) with a pause button.
//!
//! The log arrives from the pod's node over a session (`AgentRequest::log_stream`): the node
//! dials back and writes each line after its time as the container writes it. The follower
//! keeps the time of the last line it sent, so a container's next attempt, or the browser's
//! reconnection (`Last-Event-ID`), continues after it without a line twice.

use super::{AppError, Ui, api};
use crate::nodes::protocol::{AgentRequest, LogRequest};
use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, FixedOffset};
use serde::Deserialize;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncReadExt as _;

/// The lines a pod's page shows before it follows.
const FIRST_LINES: u64 = 200;
/// How long a follower waits before asking the node again, once a stream ended or failed.
const AGAIN: Duration = Duration::from_secs(2);

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

/// A log line's time and the rest of it; `None` for a line without one.
fn stamped(line: &str) -> Option<(DateTime<FixedOffset>, &str)> {
    let (stamp, rest) = line.split_once(' ').unwrap_or((line, ""));
    DateTime::parse_from_rfc3339(stamp).ok().map(|at| (at, rest))
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
    ui.read(&headers)?;
    let resumed = headers.get("last-event-id").and_then(|v| v.to_str().ok()).map(str::to_owned);
    let after = resumed.or(query.after).and_then(|t| DateTime::parse_from_rfc3339(&t).ok());
    let follower = Follower {
        plane: ui.plane.clone(),
        namespace,
        name,
        container: query.container,
        after,
        reader: None,
        partial: Vec::new(),
        noted: None,
        pause: false,
        gone: false,
    };
    let stream = futures_util::stream::unfold(follower, |mut follower| async move {
        let event = follower.next().await?;
        Some((Ok(event), follower))
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

type Session = tokio::io::BufReader<hyper_util::rt::TokioIo<hyper::upgrade::Upgraded>>;

struct Follower {
    plane: Arc<super::ControlPlane>,
    namespace: String,
    name: String,
    container: Option<String>,
    /// The time of the last line sent.
    after: Option<DateTime<FixedOffset>>,
    reader: Option<Session>,
    /// The start of a line not ended yet.
    partial: Vec<u8>,
    /// The last note sent, so that a lasting condition is said once.
    noted: Option<String>,
    pause: bool,
    gone: bool,
}

impl Follower {
    async fn next(&mut self) -> Option<Event> {
        loop {
            if self.gone {
                return None;
            }
            if self.pause {
                self.pause = false;
                tokio::time::sleep(AGAIN).await;
            }
            let Some(reader) = self.reader.as_mut() else {
                let opening = open(
                    self.plane.clone(),
                    self.namespace.clone(),
                    self.name.clone(),
                    self.container.clone(),
                    self.after.map(|at| at.timestamp()),
                );
                match opening.await {
                    Ok(reader) => self.reader = Some(reader),
                    Err(error) if error.status == StatusCode::NOT_FOUND => {
                        self.gone = true;
                        return Some(Event::default().event("gone").data(error.message));
                    }
                    Err(error) => {
                        self.pause = true;
                        if let Some(note) = self.note(error.message) {
                            return Some(note);
                        }
                    }
                }
                continue;
            };
            let mut buffer = vec![0u8; 64 * 1024];
            let read = reader.read(&mut buffer).await.unwrap_or(0);
            if read == 0 {
                self.reader = None;
                self.pause = true;
                self.partial.clear();
                if let Some(note) = self.note("the container stopped; its next attempt shows here when it starts".into()) {
                    return Some(note);
                }
                continue;
            }
            self.partial.extend_from_slice(&buffer[..read]);
            let Some(end) = self.partial.iter().rposition(|b| *b == b'\n') else { continue };
            let complete: Vec<u8> = self.partial.drain(..=end).collect();
            let text = String::from_utf8_lossy(&complete);
            let mut lines = String::new();
            for (at, line) in text.lines().filter_map(stamped) {
                if self.after.is_some_and(|after| at <= after) {
                    continue;
                }
                self.after = Some(at);
                lines.push_str(line);
                lines.push('\n');
            }
            if lines.is_empty() {
                continue;
            }
            self.noted = None;
            let id = self.after.map(|at| at.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)).unwrap_or_default();
            return Some(Event::default().event("lines").id(id).data(lines.trim_end_matches('\n')));
        }
    }

    /// A note, unless it was the last one said.
    fn note(&mut self, message: String) -> Option<Event> {
        if self.noted.as_ref() == Some(&message) {
            return None;
        }
        self.noted = Some(message.clone());
        Some(Event::default().event("note").data(message))
    }

}

/// Asks the pod's node for the container's log since `since` (seconds; none: its last lines).
/// Owns what it needs: the follower holding a session is not shared across threads.
async fn open(
    plane: Arc<super::ControlPlane>,
    namespace: String,
    name: String,
    container: Option<String>,
    since: Option<i64>,
) -> Result<Session, AppError> {
    let (pod, assignment) = api::assigned_pod(&plane, &namespace, &name).await?;
    let container = api::container_of(&namespace, &name, assignment.as_ref(), container)?;
    let request = LogRequest {
        namespace,
        pod: name,
        container,
        previous: false,
        tail: if since.is_some() { None } else { Some(FIRST_LINES) },
        since,
        timestamps: true,
    };
    let asked = AgentRequest { log_stream: Some(request), ..AgentRequest::default() };
    let session =
        plane.api.open_session(&pod.node, asked).await.map_err(|why| AppError::new(StatusCode::BAD_GATEWAY, why))?;
    let mut reader = tokio::io::BufReader::new(session);
    crate::nodes::session::read_answer(&mut reader).await.map_err(|why| AppError::new(StatusCode::BAD_GATEWAY, why))?;
    Ok(reader)
}
