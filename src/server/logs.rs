//! Following a container's log as it is written, across its restarts: the lines come from the
//! pod's node over a session (`AgentRequest::log_stream`: the agent follows the engine's log,
//! each line after its time, Secret values hidden). A [`Follower`] keeps the time of the last
//! line it gave, so the container's next attempt, or a caller resuming from that time, never
//! sees a line twice. The UI's pod page and `berth logs -f` both read through one.

use super::AppError;
use super::api;
use super::control::ControlPlane;
use crate::nodes::protocol::{AgentRequest, LogRequest};
use axum::http::StatusCode;
use chrono::{DateTime, FixedOffset};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncReadExt as _;

/// The lines a pod's page shows before it follows.
pub const FIRST_LINES: u64 = 200;
/// How long a follower waits before asking the node again, once a stream ended or failed.
const AGAIN: Duration = Duration::from_secs(2);

/// Where a follow starts.
#[derive(Debug, Clone, Default)]
pub struct Follow {
    /// The container; `None` for the pod's only one.
    pub container: Option<String>,
    /// Only lines after this time (what the caller already has).
    pub after: Option<DateTime<FixedOffset>>,
    /// Else: only lines since this time (seconds since the epoch) ...
    pub since: Option<i64>,
    /// ... or only the last lines (none: all of them).
    pub tail: Option<u64>,
}

/// What a follower gives next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Followed {
    /// New lines, each after its RFC 3339 time, and the last one's time.
    Lines { text: String, last: DateTime<FixedOffset> },
    /// The stream stopped or could not start for now (said once while it lasts).
    Note(String),
    /// The pod is gone: nothing more comes.
    Gone(String),
}

/// A log line's time and the rest of it; `None` for a line without one.
pub fn stamped(line: &str) -> Option<(DateTime<FixedOffset>, &str)> {
    let (stamp, rest) = line.split_once(' ').unwrap_or((line, ""));
    DateTime::parse_from_rfc3339(stamp).ok().map(|at| (at, rest))
}

type Session = tokio::io::BufReader<hyper_util::rt::TokioIo<hyper::upgrade::Upgraded>>;

pub struct Follower {
    plane: Arc<ControlPlane>,
    namespace: String,
    name: String,
    follow: Follow,
    reader: Option<Session>,
    /// The start of a line not ended yet.
    partial: Vec<u8>,
    /// The last note given, so that a lasting condition is said once.
    noted: Option<String>,
    pause: bool,
    gone: bool,
}

impl Follower {
    pub fn new(plane: Arc<ControlPlane>, namespace: String, name: String, follow: Follow) -> Follower {
        Follower {
            plane,
            namespace,
            name,
            follow,
            reader: None,
            partial: Vec::new(),
            noted: None,
            pause: false,
            gone: false,
        }
    }

    /// The next lines or note; `None` once the pod is gone.
    pub async fn next(&mut self) -> Option<Followed> {
        loop {
            if self.gone {
                return None;
            }
            if self.pause {
                self.pause = false;
                tokio::time::sleep(AGAIN).await;
            }
            let Some(reader) = self.reader.as_mut() else {
                let (since, tail) = match self.follow.after {
                    Some(after) => (Some(after.timestamp()), None),
                    None => (self.follow.since, self.follow.tail),
                };
                let opening = open(
                    self.plane.clone(),
                    self.namespace.clone(),
                    self.name.clone(),
                    self.follow.container.clone(),
                    since,
                    tail,
                );
                match opening.await {
                    Ok(reader) => self.reader = Some(reader),
                    Err(error) if error.status == StatusCode::NOT_FOUND => {
                        self.gone = true;
                        return Some(Followed::Gone(error.message));
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
                // What was shown so far stays the start: the next attempt follows from it.
                if self.follow.after.is_none() {
                    self.follow.since = Some(crate::server::now());
                    self.follow.tail = None;
                }
                if let Some(note) = self.note("the container stopped; its next attempt follows when it starts".into()) {
                    return Some(note);
                }
                continue;
            }
            self.partial.extend_from_slice(&buffer[..read]);
            let Some(end) = self.partial.iter().rposition(|b| *b == b'\n') else { continue };
            let complete: Vec<u8> = self.partial.drain(..=end).collect();
            let mut text = String::new();
            for line in String::from_utf8_lossy(&complete).lines() {
                let Some((at, _)) = stamped(line) else { continue };
                if self.follow.after.is_some_and(|after| at <= after) {
                    continue;
                }
                self.follow.after = Some(at);
                text.push_str(line);
                text.push('\n');
            }
            if let (false, Some(last)) = (text.is_empty(), self.follow.after) {
                self.noted = None;
                return Some(Followed::Lines { text, last });
            }
        }
    }

    /// A note, unless it was the last one given.
    fn note(&mut self, message: String) -> Option<Followed> {
        if self.noted.as_ref() == Some(&message) {
            return None;
        }
        self.noted = Some(message.clone());
        Some(Followed::Note(message))
    }
}

/// Asks the pod's node for the container's log, since `since` (seconds) or its last `tail`
/// lines. Owns what it needs: the follower holding a session is not shared across threads.
async fn open(
    plane: Arc<ControlPlane>,
    namespace: String,
    name: String,
    container: Option<String>,
    since: Option<i64>,
    tail: Option<u64>,
) -> Result<Session, AppError> {
    let (pod, assignment) = api::assigned_pod(&plane, &namespace, &name).await?;
    let container = api::container_of(&namespace, &name, assignment.as_ref(), container)?;
    let request = LogRequest { namespace, pod: name, container, previous: false, tail, since, timestamps: true };
    let asked = AgentRequest { log_stream: Some(request), ..AgentRequest::default() };
    let session =
        plane.api.open_session(&pod.node, asked).await.map_err(|why| AppError::new(StatusCode::BAD_GATEWAY, why))?;
    let mut reader = tokio::io::BufReader::new(session);
    crate::nodes::session::read_answer(&mut reader).await.map_err(|why| AppError::new(StatusCode::BAD_GATEWAY, why))?;
    Ok(reader)
}
