//! The CLI's side of the user API: requests to a running server, and the kubectl-style tables
//! and descriptions that print what it answers.

use serde_json::Value;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// The server's address when none is given.
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:7420";

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach the berth server at {server}: {reason}; {hint}")]
    Unreachable { server: String, reason: String, hint: &'static str },
    #[error("{message} (HTTP {status} from {server})")]
    Refused { server: String, status: u16, message: String },
    #[error("the server at {server} answered something that is not berth's API: {source}")]
    Unreadable {
        server: String,
        #[source]
        source: reqwest::Error,
    },
}

#[derive(Clone)]
pub struct Client {
    server: String,
    token: Option<String>,
    http: reqwest::Client,
}

impl Client {
    pub fn new(server: &str, token: Option<String>) -> Client {
        Client { server: server.trim_end_matches('/').to_owned(), token, http: reqwest::Client::new() }
    }

    /// A client of the server a [`Reach`] found, trusting what it says to trust.
    pub fn connect(reach: Reach) -> Result<Client, crate::tls::TlsError> {
        let http = match &reach.trust {
            Some(trust) if reach.server.starts_with("https://") => crate::tls::http_client(trust, None)?
                .build()
                .map_err(|e| crate::tls::TlsError::Rustls(rustls::Error::General(e.to_string())))?,
            _ => reqwest::Client::new(),
        };
        Ok(Client { server: reach.server.trim_end_matches('/').to_owned(), token: reach.token, http })
    }

    fn unreachable(&self, error: &reqwest::Error) -> ClientError {
        let reason = crate::error_chain(error);
        let hint = if reason.contains("certificate") || reason.contains("UnknownIssuer") {
            "trust the server's CA: set BERTH_CA_FILE (or --ca-file) to its ca.pem, or run `berth login`"
        } else {
            "is `berth server` or `berth up` running there?"
        };
        ClientError::Unreachable { server: self.server.clone(), reason, hint }
    }

    pub async fn get(&self, path: &str) -> Result<Value, ClientError> {
        self.send(self.http.get(format!("{}{path}", self.server))).await
    }

    /// A text answer (a log), or the error the server gave.
    pub async fn get_text(&self, path: &str) -> Result<String, ClientError> {
        self.get_streamed(path)
            .await?
            .text()
            .await
            .map_err(|source| ClientError::Unreadable { server: self.server.clone(), source })
    }

    /// A response whose body is read as it comes (a followed log), once the server took the
    /// request.
    pub async fn get_streamed(&self, path: &str) -> Result<reqwest::Response, ClientError> {
        let mut request = self.http.get(format!("{}{path}", self.server));
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.map_err(|source| self.unreachable(&source))?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let body: Value = response.json().await.unwrap_or_default();
        let message = body.get("error").and_then(Value::as_str).unwrap_or("the request failed").to_owned();
        Err(ClientError::Refused { server: self.server.clone(), status: status.as_u16(), message })
    }

    pub async fn delete(&self, path: &str) -> Result<Value, ClientError> {
        self.send(self.http.delete(format!("{}{path}", self.server))).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> Result<Value, ClientError> {
        self.send(self.http.post(format!("{}{path}", self.server)).json(body)).await
    }

    /// Follows a server-sent event stream of lists (`/api/v1/watch/...`): `each` gets every list
    /// the server sends, until it returns false or the stream ends.
    pub async fn watch(&self, path: &str, mut each: impl FnMut(Value) -> bool) -> Result<(), ClientError> {
        let mut request = self.http.get(format!("{}{path}", self.server));
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        let mut response = request.send().await.map_err(|source| self.unreachable(&source))?;
        if !response.status().is_success() {
            let status = response.status().as_u16();
            let body: Value = response.json().await.unwrap_or_default();
            let message = body.get("error").and_then(Value::as_str).unwrap_or("the request failed").to_owned();
            return Err(ClientError::Refused { server: self.server.clone(), status, message });
        }
        let mut pending = String::new();
        loop {
            let chunk = response
                .chunk()
                .await
                .map_err(|source| ClientError::Unreadable { server: self.server.clone(), source })?;
            let Some(chunk) = chunk else { return Ok(()) };
            pending.push_str(&String::from_utf8_lossy(&chunk));
            // Events end with an empty line; only `data:` lines carry the list.
            while let Some(end) = pending.find("\n\n") {
                let event: String = pending.drain(..end + 2).collect();
                let data: String = event
                    .lines()
                    .filter_map(|l| l.strip_prefix("data:"))
                    .map(str::trim_start)
                    .collect::<Vec<_>>()
                    .join("\n");
                if data.is_empty() {
                    continue;
                }
                if let Ok(list) = serde_json::from_str::<Value>(&data)
                    && !each(list)
                {
                    return Ok(());
                }
            }
        }
    }

    /// One port-forward connection to `port` of pod `namespace/pod`, once its node said it
    /// reached the port: the bytes of the pod's port, both ways.
    pub async fn port_forward(
        &self,
        namespace: &str,
        pod: &str,
        port: u16,
    ) -> Result<tokio::io::BufReader<reqwest::Upgraded>, ClientError> {
        let path = format!("/api/v1/pods/{namespace}/{pod}/portforward");
        self.open_session(&path, &[("port", port.to_string())]).await
    }

    /// `command` running in a container of pod `namespace/pod`, attached: [`attach`] carries
    /// the user's terminal to it. With `tty`, on a terminal of `size` (columns, rows).
    #[expect(clippy::too_many_arguments, reason = "each is one of exec's own options")]
    pub async fn exec_session(
        &self,
        namespace: &str,
        pod: &str,
        container: Option<&str>,
        command: &[String],
        tty: bool,
        stdin: bool,
        size: Option<(u16, u16)>,
    ) -> Result<tokio::io::BufReader<reqwest::Upgraded>, ClientError> {
        let path = format!("/api/v1/pods/{namespace}/{pod}/exec");
        let mut query = vec![
            ("command", serde_json::to_string(command).expect("strings serialize")),
            ("tty", tty.to_string()),
            ("stdin", stdin.to_string()),
        ];
        if let Some(container) = container {
            query.push(("container", container.to_owned()));
        }
        if let Some((columns, rows)) = size {
            query.extend([("columns", columns.to_string()), ("rows", rows.to_string())]);
        }
        self.open_session(&path, &query).await
    }

    /// An upgraded session at `path`, once the node at its end answered that it is open.
    async fn open_session(
        &self,
        path: &str,
        query: &[(&str, String)],
    ) -> Result<tokio::io::BufReader<reqwest::Upgraded>, ClientError> {
        let mut request = self
            .http
            .get(format!("{}{path}", self.server))
            .query(query)
            .header(reqwest::header::CONNECTION, "upgrade")
            .header(reqwest::header::UPGRADE, crate::nodes::session::PROTOCOL);
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.map_err(|source| self.unreachable(&source))?;
        let status = response.status();
        if status != reqwest::StatusCode::SWITCHING_PROTOCOLS {
            let body: Value = response.json().await.unwrap_or_default();
            let message = body.get("error").and_then(Value::as_str).unwrap_or("the request failed").to_owned();
            return Err(ClientError::Refused { server: self.server.clone(), status: status.as_u16(), message });
        }
        let upgraded = response.upgrade().await.map_err(|source| self.unreachable(&source))?;
        let mut session = tokio::io::BufReader::new(upgraded);
        crate::nodes::session::read_answer(&mut session).await.map_err(|message| ClientError::Refused {
            server: self.server.clone(),
            status: 502,
            message,
        })?;
        Ok(session)
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> Result<Value, ClientError> {
        let request = match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        };
        let response = request.send().await.map_err(|source| self.unreachable(&source))?;
        let status = response.status();
        let body: Value =
            response.json().await.map_err(|source| ClientError::Unreadable { server: self.server.clone(), source })?;
        if status.is_success() {
            Ok(body)
        } else {
            let message = body.get("error").and_then(Value::as_str).unwrap_or("the request failed").to_owned();
            Err(ClientError::Refused { server: self.server.clone(), status: status.as_u16(), message })
        }
    }
}

/// The API token: `BERTH_TOKEN`, else the file given, else `.berth/api-token` in this folder or
/// the nearest one above it (where `berth up` keeps it), else `api-token` here (a server's state
/// folder).
pub fn find_token(file: Option<&Path>) -> std::io::Result<Option<String>> {
    Ok(token_and_file(file)?.0)
}

/// The API token, and the file it was read from.
fn token_and_file(file: Option<&Path>) -> std::io::Result<(Option<String>, Option<PathBuf>)> {
    if let Ok(token) = std::env::var("BERTH_TOKEN")
        && !token.trim().is_empty()
    {
        return Ok((Some(token.trim().to_owned()), None));
    }
    if let Some(file) = file {
        return std::fs::read_to_string(file).map(|t| (Some(t.trim().to_owned()), Some(file.to_owned())));
    }
    Ok(match state_file("api-token") {
        Some(found) => (std::fs::read_to_string(&found).ok().map(|t| t.trim().to_owned()), Some(found)),
        None => (None, None),
    })
}

/// A file of a berth state folder, found as the API token is: `.berth/NAME` here or in the
/// nearest folder above that has one, else `NAME` here when this is a server's state folder
/// (it holds `api-token`).
fn state_file(name: &str) -> Option<PathBuf> {
    let here = std::env::current_dir().ok()?;
    let mut dir = Some(here.clone());
    while let Some(at) = dir {
        let candidate = at.join(".berth").join(name);
        if candidate.is_file() {
            return Some(candidate);
        }
        dir = at.parent().map(Path::to_path_buf);
    }
    let candidate = here.join(name);
    (here.join("api-token").is_file() && candidate.is_file()).then_some(candidate)
}

/// How the CLI reaches a server: its URL, the token, and whom to trust for `https://`.
#[derive(Debug, Clone)]
pub struct Reach {
    pub server: String,
    pub token: Option<String>,
    /// None: the system's roots.
    pub trust: Option<crate::tls::Trust>,
    /// Where the trusted CA came from, to name it in errors.
    pub ca_source: Option<String>,
}

/// Finds how to reach the server: `server` (`--server`, `BERTH_SERVER`), else the one last
/// logged in to, else the local default. The token: `BERTH_TOKEN`, else `token_file`, else the
/// login's for that server, else the state folder's. The CA: `BERTH_CA_FILE`, else `ca_file`,
/// else the login's, else `ca.pem` beside the token file (or in the state folder found as the
/// token is), else the system's roots.
pub fn reach(server: Option<&str>, token_file: Option<&Path>, ca_file: Option<&Path>) -> Result<Reach, String> {
    let login = LoginConfig::read().unwrap_or_default();
    let server =
        server.map(str::to_owned).or_else(|| login.current.clone()).unwrap_or_else(|| DEFAULT_SERVER.to_owned());
    let server = server.trim_end_matches('/').to_owned();
    let logged_in = login.servers.get(&server);
    let env_token = std::env::var("BERTH_TOKEN").ok().filter(|t| !t.trim().is_empty());
    let (token, token_file) = match (env_token, token_file, logged_in) {
        (None, None, Some(entry)) => (Some(entry.token.clone()), None),
        _ => token_and_file(token_file)
            .map_err(|e| format!("reading the token file {}: {e}", token_file.unwrap_or(Path::new("")).display()))?,
    };
    let env_ca = std::env::var_os("BERTH_CA_FILE").filter(|v| !v.is_empty()).map(PathBuf::from);
    let ca_path =
        env_ca.or_else(|| ca_file.map(Path::to_path_buf)).map(|path| (path.clone(), path.display().to_string()));
    let (trust, ca_source) = if let Some((path, source)) = ca_path {
        let roots = crate::tls::read_certificates(&path).map_err(|e| e.to_string())?;
        (Some(crate::tls::Trust::Roots(roots)), Some(source))
    } else if let Some(pem) = logged_in.and_then(|entry| entry.ca.as_deref()) {
        let roots: Vec<_> =
            rustls_pki_types::pem::PemObject::pem_slice_iter(pem.as_bytes()).filter_map(Result::ok).collect();
        (Some(crate::tls::Trust::Roots(roots)), Some("the CA kept by `berth login`".to_owned()))
    } else {
        let beside = token_file.as_deref().and_then(Path::parent).map(|dir| dir.join(crate::tls::CA_FILE));
        match beside.filter(|p| p.is_file()).or_else(|| state_file(crate::tls::CA_FILE)) {
            Some(path) => {
                let roots = crate::tls::read_certificates(&path).map_err(|e| e.to_string())?;
                (Some(crate::tls::Trust::Roots(roots)), Some(path.display().to_string()))
            }
            None => (Some(crate::tls::Trust::System), None),
        }
    };
    Ok(Reach { server, token, trust, ca_source })
}

/// What `berth login` keeps: per server URL, its token and the CA trusted for it.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct LoginConfig {
    /// The server logged in to last: the one the CLI talks to when none is named.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current: Option<String>,
    #[serde(default)]
    pub servers: std::collections::BTreeMap<String, LoggedIn>,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct LoggedIn {
    pub token: String,
    /// The CA's certificate (PEM) trusted at login; None to use the system's roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<String>,
}

impl LoginConfig {
    /// `BERTH_CONFIG`, else `$XDG_CONFIG_HOME/berth/config.json`, else `~/.config/berth/config.json`.
    pub fn path() -> Option<PathBuf> {
        if let Some(path) = std::env::var_os("BERTH_CONFIG").filter(|v| !v.is_empty()) {
            return Some(PathBuf::from(path));
        }
        let base = std::env::var_os("XDG_CONFIG_HOME")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").filter(|v| !v.is_empty()).map(|h| PathBuf::from(h).join(".config")))?;
        Some(base.join("berth").join("config.json"))
    }

    pub fn read() -> Option<LoginConfig> {
        let path = LoginConfig::path()?;
        let bytes = std::fs::read(&path).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Writes the config, readable by its owner alone.
    pub fn write(&self) -> std::io::Result<PathBuf> {
        let path = LoginConfig::path()
            .ok_or_else(|| std::io::Error::other("no HOME to keep the login in; set BERTH_CONFIG"))?;
        if let Some(dir) = path.parent() {
            crate::private::private_dir(dir)?;
        }
        crate::private::write_private(&path, &serde_json::to_vec_pretty(self).unwrap_or_default())?;
        Ok(path)
    }
}

/// Splits `deployment/web` or `deployment/shop/web` into kind, namespace and name.
pub fn parse_target(target: &str, namespace: &str) -> Option<(String, String, String)> {
    let parts: Vec<&str> = target.split('/').collect();
    match parts.as_slice() {
        [kind, name] if !kind.is_empty() && !name.is_empty() => {
            Some(((*kind).to_owned(), namespace.to_owned(), (*name).to_owned()))
        }
        [kind, ns, name] if !kind.is_empty() && !ns.is_empty() && !name.is_empty() => {
            Some(((*kind).to_owned(), (*ns).to_owned(), (*name).to_owned()))
        }
        _ => None,
    }
}

fn text(value: &Value) -> String {
    match value {
        Value::Null => "<none>".to_owned(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn short(sha: &str) -> &str {
    sha.get(..7).unwrap_or(sha)
}

/// "3m", "2h", "5d": how long ago `then` (seconds since the epoch) was.
pub fn age(then: i64, now: i64) -> String {
    let seconds = (now - then).max(0);
    match seconds {
        s if s < 120 => format!("{s}s"),
        s if s < 2 * 3600 => format!("{}m", s / 60),
        s if s < 2 * 86400 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}

/// `berth token list`.
pub fn tokens_table(tokens: &Value, now: i64) -> String {
    let rows: Vec<Vec<String>> = tokens
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| {
            let namespaces: Vec<&str> =
                t["namespaces"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
            let status = match (t["revokedAt"].as_i64(), t["expiresAt"].as_i64()) {
                (Some(at), _) => format!("revoked {} ago", age(at, now)),
                (None, Some(at)) if at <= now => "expired".to_owned(),
                (None, Some(at)) => format!("expires in {}", age(now, at)),
                (None, None) => "active".to_owned(),
            };
            vec![
                t["name"].as_str().unwrap_or_default().to_owned(),
                t["role"].as_str().unwrap_or_default().to_owned(),
                if namespaces.is_empty() { "*".to_owned() } else { namespaces.join(",") },
                age(t["createdAt"].as_i64().unwrap_or(now), now),
                status,
            ]
        })
        .collect();
    table(&["NAME", "ROLE", "NAMESPACES", "AGE", "STATUS"], &rows)
}

/// `berth audit`.
pub fn audit_table(log: &Value, now: i64) -> String {
    let rows: Vec<Vec<String>> = log
        .as_array()
        .into_iter()
        .flatten()
        .map(|a| {
            let cell = |key: &str| a[key].as_str().unwrap_or_default().to_owned();
            vec![
                age(a["at"].as_i64().unwrap_or(now), now),
                cell("who"),
                cell("action"),
                cell("object"),
                cell("address"),
                cell("outcome"),
            ]
        })
        .collect();
    table(&["AGE", "WHO", "ACTION", "OBJECT", "FROM", "OUTCOME"], &rows)
}

/// Columns padded to their widest cell, two spaces apart, as kubectl prints.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(width) = widths.get_mut(i) {
                *width = (*width).max(cell.chars().count());
            }
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<String>| {
        let last = cells.len().saturating_sub(1);
        let mut text = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i == last {
                text.push_str(cell);
            } else {
                let _ = write!(text, "{cell:<width$}  ", width = widths[i]);
            }
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(headers.iter().map(|h| (*h).to_owned()).collect());
    for row in rows {
        line(row.clone());
    }
    out
}

fn items(value: &Value) -> &[Value] {
    value.as_array().map_or(&[], Vec::as_slice)
}

fn in_namespace(item: &Value, namespace: Option<&str>) -> bool {
    namespace.is_none_or(|ns| item["namespace"].as_str() == Some(ns))
}

pub fn workloads_table(list: &Value, namespace: Option<&str>) -> String {
    let rows: Vec<Vec<String>> = items(list)
        .iter()
        .filter(|w| in_namespace(w, namespace))
        .map(|w| {
            let wanted = w["replicas"].as_i64().map_or_else(|| text(&w["total"]), |r| r.to_string());
            vec![
                text(&w["namespace"]),
                format!("{}/{}", text(&w["kind"]).to_lowercase(), text(&w["name"])),
                format!("{}/{wanted}", text(&w["ready"])),
                text(&w["updated"]),
                short(&text(&w["revision"])).to_owned(),
                text(&w["sync"]),
                text(&w["health"]),
                w["reason"].as_str().unwrap_or_default().to_owned(),
            ]
        })
        .collect();
    table(&["NAMESPACE", "NAME", "READY", "UP-TO-DATE", "REVISION", "SYNC", "HEALTH", "REASON"], &rows)
}

/// `get jobs`: every Job (the commit's and the CronJobs' runs), as kubectl shows them.
pub fn jobs_table(list: &Value, namespace: Option<&str>, now: i64) -> String {
    let rows: Vec<Vec<String>> = items(list)
        .iter()
        .filter(|j| in_namespace(j, namespace))
        .map(|j| {
            let completions = match j["completions"].as_i64() {
                Some(n) => format!("{}/{n}", text(&j["succeeded"])),
                None => format!("{}/1 of any", text(&j["succeeded"])),
            };
            let started = j["startedAt"].as_i64();
            let duration = started.map_or_else(String::new, |s| age(s, j["finishedAt"].as_i64().unwrap_or(now)));
            vec![
                text(&j["namespace"]),
                text(&j["name"]),
                text(&j["status"]),
                completions,
                duration,
                started.map_or_else(String::new, |s| age(s, now)),
                j["reason"].as_str().unwrap_or_default().to_owned(),
            ]
        })
        .collect();
    table(&["NAMESPACE", "NAME", "STATUS", "COMPLETIONS", "DURATION", "AGE", "REASON"], &rows)
}

/// `get cronjobs`: each CronJob's schedule and runs, as kubectl shows them, with the last run's
/// status.
pub fn cron_jobs_table(list: &Value, namespace: Option<&str>, now: i64) -> String {
    let rows: Vec<Vec<String>> = items(list)
        .iter()
        .filter(|c| in_namespace(c, namespace))
        .map(|c| {
            let when = |field: &str| c[field].as_i64();
            let last_run = c["runs"].as_array().and_then(|r| r.last());
            vec![
                text(&c["namespace"]),
                text(&c["name"]),
                text(&c["schedule"]),
                c["timeZone"].as_str().unwrap_or("UTC").to_owned(),
                c["suspend"]
                    .as_bool()
                    .unwrap_or_default()
                    .to_string()
                    .replace("false", "False")
                    .replace("true", "True"),
                text(&c["active"]),
                when("lastSchedule").map_or_else(|| "<none>".to_owned(), |t| age(t, now)),
                when("nextSchedule").map_or_else(|| "<none>".to_owned(), |t| format!("in {}", age(now, t))),
                last_run
                    .map_or_else(|| "<none>".to_owned(), |r| format!("{} {}", text(&r["name"]), text(&r["status"]))),
            ]
        })
        .collect();
    table(
        &["NAMESPACE", "NAME", "SCHEDULE", "TIMEZONE", "SUSPEND", "ACTIVE", "LAST SCHEDULE", "NEXT", "LAST RUN"],
        &rows,
    )
}

/// `get events`: LAST SEEN, TYPE, REASON, OBJECT, MESSAGE and how often it happened; only
/// those `about` an object (kind and name) when it is given. Events of nodes and commits
/// have no namespace (`-`).
pub fn events_table(list: &Value, namespace: Option<&str>, about: Option<(&str, &str)>, now: i64) -> String {
    let rows: Vec<Vec<String>> = items(list)
        .iter()
        .filter(|e| in_namespace(e, namespace))
        .filter(|e| {
            about.is_none_or(|(kind, name)| {
                let object = e["object"].as_str().unwrap_or_default();
                crate::server::events::is_about(object, e["owner"].as_str().unwrap_or_default(), kind, name)
            })
        })
        .map(|e| {
            vec![
                e["namespace"].as_str().filter(|ns| !ns.is_empty()).unwrap_or("-").to_owned(),
                e["lastSeen"].as_i64().map_or_else(|| "<none>".to_owned(), |t| age(t, now)),
                text(&e["type"]),
                text(&e["reason"]),
                text(&e["object"]),
                text(&e["count"]),
                text(&e["message"]),
            ]
        })
        .collect();
    table(&["NAMESPACE", "LAST SEEN", "TYPE", "REASON", "OBJECT", "COUNT", "MESSAGE"], &rows)
}

/// `get pvc`: each claim with where its volume is, as kubectl shows claims (NODE in place of
/// VOLUME: a claim's volume is on one node).
pub fn claims_table(list: &Value, namespace: Option<&str>, now: i64) -> String {
    let rows: Vec<Vec<String>> = items(list)
        .iter()
        .filter(|c| in_namespace(c, namespace))
        .map(|c| {
            let node = match (c["node"].as_str(), c["nodeReady"].as_bool()) {
                (Some(node), Some(false)) => format!("{node} (NotReady)"),
                (Some(node), _) => node.to_owned(),
                (None, _) => "<none>".to_owned(),
            };
            let or_none = |field: &str| match c[field].as_str() {
                Some("") | None => "<none>".to_owned(),
                Some(value) => value.to_owned(),
            };
            vec![
                text(&c["namespace"]),
                text(&c["name"]),
                text(&c["status"]),
                node,
                or_none("capacity"),
                or_none("accessModes"),
                or_none("storageClass"),
                c["createdAt"].as_i64().map_or_else(|| "<none>".to_owned(), |t| age(t, now)),
            ]
        })
        .collect();
    table(&["NAMESPACE", "NAME", "STATUS", "NODE", "CAPACITY", "ACCESS MODES", "STORAGECLASS", "AGE"], &rows)
}

pub fn pods_table(list: &Value, namespace: Option<&str>) -> String {
    let rows: Vec<Vec<String>> = items(list)
        .iter()
        .filter(|p| in_namespace(p, namespace))
        .map(|p| {
            vec![
                text(&p["namespace"]),
                text(&p["name"]),
                if p["ready"].as_bool() == Some(true) { "1/1".into() } else { "0/1".into() },
                p["status"].as_str().map_or_else(|| text(&p["phase"]), str::to_owned),
                text(&p["restarts"]),
                text(&p["node"]),
                short(&text(&p["revision"])).to_owned(),
                p["lastError"].as_str().unwrap_or_default().to_owned(),
            ]
        })
        .collect();
    table(&["NAMESPACE", "NAME", "READY", "STATUS", "RESTARTS", "NODE", "REVISION", "LAST ERROR"], &rows)
}

/// Lines of a log with a prefix each (`web-7f9c-0/web | `), as stern shows several
/// containers' logs together.
pub fn prefixed(prefix: &str, log: &str) -> String {
    log.lines().map(|line| format!("{prefix} | {line}\n")).collect()
}

/// Seconds in a duration as kubectl writes it: `30s`, `10m`, `2h`, `1h30m`.
pub fn parse_duration(text: &str) -> Option<i64> {
    let mut total = 0i64;
    let mut number = String::new();
    for c in text.chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            _ => return None,
        };
        total = total.checked_add(number.parse::<i64>().ok()?.checked_mul(unit)?)?;
        number.clear();
    }
    if !number.is_empty() || text.is_empty() { None } else { Some(total) }
}

/// A URL query string of `pairs`, each percent-encoded.
pub fn query(pairs: &[(&str, &str)]) -> String {
    let mut url = reqwest::Url::parse("http://localhost/").expect("a constant URL parses");
    url.query_pairs_mut().extend_pairs(pairs);
    url.query().unwrap_or_default().to_owned()
}

/// What `berth get -w` prints for one list the server sent: the whole table the first time,
/// then only the rows that are new or changed since `before`, without the header, as
/// `kubectl get -w` does. `table` renders a list.
pub fn watch_rows(before: Option<&Value>, now: &Value, table: &dyn Fn(&Value) -> String) -> String {
    let key = |item: &Value| match (item["commit"]["sha"].as_str(), item["object"].as_str()) {
        (Some(sha), _) => sha.to_owned(),
        // An event is the same event again when object, reason and message match.
        (None, Some(object)) => {
            format!("{}/{object}/{}/{}", text(&item["namespace"]), text(&item["reason"]), text(&item["message"]))
        }
        (None, None) => format!("{}/{}/{}", text(&item["namespace"]), text(&item["kind"]), text(&item["name"])),
    };
    let Some(before) = before else { return table(now) };
    let old: std::collections::HashMap<String, &Value> = items(before).iter().map(|i| (key(i), i)).collect();
    let changed: Vec<Value> = items(now).iter().filter(|i| old.get(&key(i)) != Some(i)).cloned().collect();
    if changed.is_empty() {
        return String::new();
    }
    let rendered = table(&Value::Array(changed));
    rendered.split_once('\n').map(|(_, rows)| rows.to_owned()).unwrap_or_default()
}

/// CPU as kubectl top shows it: millicores, `250m`.
fn millicores(value: &Value) -> String {
    format!("{}m", value.as_u64().unwrap_or(0))
}

/// `berth top pods`: kubectl's columns, with NAMESPACE when every namespace is shown, and a row
/// per container with `containers`.
pub fn top_pods_table(list: &Value, all_namespaces: bool, containers: bool) -> String {
    let mut headers = Vec::new();
    if all_namespaces {
        headers.push("NAMESPACE");
    }
    headers.push(if containers { "POD" } else { "NAME" });
    if containers {
        headers.push("NAME");
    }
    headers.extend(["CPU(cores)", "MEMORY(bytes)"]);
    let mut rows = Vec::new();
    for pod in items(list) {
        let mut lead = Vec::new();
        if all_namespaces {
            lead.push(text(&pod["namespace"]));
        }
        lead.push(text(&pod["name"]));
        if containers {
            for container in pod["containers"].as_array().into_iter().flatten() {
                let mut row = lead.clone();
                row.extend([
                    text(&container["name"]),
                    millicores(&container["cpuMillis"]),
                    mebibytes(&container["memoryBytes"]),
                ]);
                rows.push(row);
            }
        } else {
            lead.extend([millicores(&pod["cpuMillis"]), mebibytes(&pod["memoryBytes"])]);
            rows.push(lead);
        }
    }
    table(&headers, &rows)
}

/// `berth top nodes`: usage and its share of the allocatable; `<unknown>` until a node's first
/// sample, as kubectl says it.
pub fn top_nodes_table(list: &Value) -> String {
    let percent = |used: &Value, of: &Value| match (used.as_u64(), of.as_u64().filter(|n| *n > 0)) {
        (Some(used), Some(of)) => format!("{}%", used * 100 / of),
        _ => "<unknown>".to_owned(),
    };
    let or_unknown = |value: &Value, show: fn(&Value) -> String| {
        if value.is_null() { "<unknown>".to_owned() } else { show(value) }
    };
    let rows: Vec<Vec<String>> = items(list)
        .iter()
        .map(|n| {
            vec![
                text(&n["name"]),
                or_unknown(&n["cpuMillis"], millicores),
                percent(&n["cpuMillis"], &n["allocatable"]["cpuMillis"]),
                or_unknown(&n["memoryBytes"], mebibytes),
                percent(&n["memoryBytes"], &n["allocatable"]["memoryBytes"]),
            ]
        })
        .collect();
    table(&["NAME", "CPU(cores)", "CPU(%)", "MEMORY(bytes)", "MEMORY(%)"], &rows)
}

fn mebibytes(bytes: &Value) -> String {
    format!("{}Mi", bytes.as_u64().unwrap_or(0) / (1024 * 1024))
}

pub fn nodes_table(list: &Value, now: i64) -> String {
    let rows: Vec<Vec<String>> = items(list)
        .iter()
        .map(|n| {
            let labels: Vec<String> = n["labels"]
                .as_object()
                .map(|m| m.iter().map(|(k, v)| format!("{k}={}", text(v))).collect())
                .unwrap_or_default();
            vec![
                text(&n["name"]),
                text(&n["status"]),
                text(&n["address"]),
                text(&n["pods"]),
                format!("{}m/{}m", text(&n["allocated"]["cpuMillis"]), text(&n["allocatable"]["cpuMillis"])),
                format!(
                    "{}/{}",
                    mebibytes(&n["allocated"]["memoryBytes"]),
                    mebibytes(&n["allocatable"]["memoryBytes"])
                ),
                age(n["lastHeartbeat"].as_i64().unwrap_or(0), now),
                if labels.is_empty() { "<none>".into() } else { labels.join(",") },
            ]
        })
        .collect();
    table(&["NAME", "STATUS", "ADDRESS", "PODS", "CPU", "MEMORY", "HEARTBEAT", "LABELS"], &rows)
}

pub fn services_table(list: &Value, namespace: Option<&str>) -> String {
    let rows: Vec<Vec<String>> = items(list)
        .iter()
        .filter(|s| in_namespace(s, namespace))
        .map(|s| {
            let ports: Vec<String> = items(&s["ports"])
                .iter()
                .map(|p| match p["nodePort"].as_i64() {
                    Some(node_port) => format!("{}:{node_port}/{}", text(&p["port"]), text(&p["protocol"])),
                    None => format!("{}/{}", text(&p["port"]), text(&p["protocol"])),
                })
                .collect();
            vec![
                text(&s["namespace"]),
                text(&s["name"]),
                if s["headless"].as_bool() == Some(true) { "ClusterIP (headless)".into() } else { text(&s["type"]) },
                if s["clusterIP"].is_string() { text(&s["clusterIP"]) } else { "None".into() },
                ports.join(","),
                format!("{}/{}", text(&s["endpointsReady"]), text(&s["endpointsTotal"])),
            ]
        })
        .collect();
    table(&["NAMESPACE", "NAME", "TYPE", "CLUSTER-IP", "PORTS", "ENDPOINTS"], &rows)
}

pub fn syncs_table(list: &Value, now: i64) -> String {
    let rows: Vec<Vec<String>> = items(list)
        .iter()
        .map(|s| {
            vec![
                short(&text(&s["commit"]["sha"])).to_owned(),
                text(&s["commit"]["message"]),
                text(&s["commit"]["author"]),
                age(s["seenAt"].as_i64().unwrap_or(0), now),
                text(&s["outcome"]),
                s["reason"].as_str().unwrap_or_default().to_owned(),
            ]
        })
        .collect();
    table(&["COMMIT", "MESSAGE", "AUTHOR", "SEEN", "OUTCOME", "REASON"], &rows)
}

pub fn history_table(list: &Value, now: i64) -> String {
    let rows: Vec<Vec<String>> = items(list)
        .iter()
        .map(|r| {
            vec![
                short(&text(&r["commit"]["sha"])).to_owned(),
                text(&r["commit"]["author"]),
                age(r["commit"]["time"].as_i64().unwrap_or(0), now),
                text(&r["outcome"]),
                text(&r["commit"]["message"]),
                r["reason"].as_str().unwrap_or_default().to_owned(),
            ]
        })
        .collect();
    table(&["COMMIT", "AUTHOR", "COMMITTED", "OUTCOME", "MESSAGE", "REASON"], &rows)
}

/// `berth status`: the whole in a few lines.
pub fn status_text(status: &Value, now: i64) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "Repository: {} ({})", text(&status["repository"]), text(&status["branch"]));
    if let Some(head) = status["head"].as_object() {
        let _ = writeln!(
            out,
            "Head:       {} \"{}\" by {}, {} ago",
            short(&text(&head["sha"])),
            text(&head["message"]),
            text(&head["author"]),
            age(head["time"].as_i64().unwrap_or(0), now)
        );
    }
    if let Some(applied) = status["applied"].as_str() {
        let _ = writeln!(out, "Applied:    {} \"{}\"", short(applied), text(&status["appliedMessage"]));
    }
    let _ =
        writeln!(out, "Sync:       {}: {}", text(&status["sync"]), status["syncReason"].as_str().unwrap_or_default());
    let _ = writeln!(
        out,
        "Health:     {}: {}",
        text(&status["health"]),
        status["healthReason"].as_str().unwrap_or_default()
    );
    let counts = &status["counts"];
    let by_health: Vec<String> = counts["workloads"]
        .as_object()
        .map(|m| m.iter().map(|(k, v)| format!("{} {k}", text(v))).collect())
        .unwrap_or_default();
    let _ =
        writeln!(out, "Workloads:  {}", if by_health.is_empty() { "none".to_owned() } else { by_health.join(", ") });
    let _ = writeln!(out, "Pods:       {}/{} ready", text(&counts["podsReady"]), text(&counts["pods"]));
    let _ = writeln!(out, "Nodes:      {}/{} ready", text(&counts["nodesReady"]), text(&counts["nodes"]));
    let _ = writeln!(out, "Services:   {}", text(&counts["services"]));
    if let Some(sync) = status["lastSync"].as_object() {
        let _ = writeln!(
            out,
            "Last sync:  {} {} {} ago{}",
            short(&text(&sync["commit"]["sha"])),
            text(&sync["outcome"]),
            age(sync["finishedAt"].as_i64().or(sync["seenAt"].as_i64()).unwrap_or(0), now),
            sync["reason"].as_str().filter(|r| !r.is_empty()).map(|r| format!(": {r}")).unwrap_or_default()
        );
    }
    out
}

/// `berth describe`: one workload with its pods and history.
/// `berth describe pod/NAME`: the pod, then each container: state, restarts, how its last
/// attempt ended and what it wrote last.
pub fn describe_pod_text(view: &Value) -> String {
    let mut out = String::new();
    let row = |out: &mut String, label: &str, value: String| {
        let _ = writeln!(out, "{:<12}{value}", format!("{label}:"));
    };
    row(&mut out, "Name", text(&view["name"]));
    row(&mut out, "Namespace", text(&view["namespace"]));
    row(&mut out, "Node", text(&view["node"]));
    row(&mut out, "Workload", format!("{}/{}", text(&view["kind"]), text(&view["workload"])));
    row(&mut out, "Revision", short(&text(&view["revision"])).to_owned());
    let ready = if view["ready"] == true { "ready" } else { "not ready" };
    row(&mut out, "Status", format!("{} ({ready}), phase {}", text(&view["status"]), text(&view["phase"])));
    row(&mut out, "Restarts", text(&view["restarts"]));
    row(
        &mut out,
        "Requests",
        format!(
            "cpu {}, memory {}",
            millicores(&view["requests"]["cpuMillis"]),
            mebibytes(&view["requests"]["memoryBytes"])
        ),
    );
    if let Some(usage) = view["usage"].as_object() {
        row(
            &mut out,
            "Usage",
            format!("cpu {}, memory {}", millicores(&usage["cpuMillis"]), mebibytes(&usage["memoryBytes"])),
        );
    }
    if let Some(error) = view["lastError"].as_str() {
        row(&mut out, "Last error", error.to_owned());
    }
    let inits: Vec<&str> = view["initContainers"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
    if !inits.is_empty() {
        row(&mut out, "Init", inits.join(", "));
    }
    let _ = writeln!(out, "\nContainers:");
    for container in view["containers"].as_array().into_iter().flatten() {
        let name = text(&container["name"]);
        let _ = writeln!(out, "  {name}:");
        let field = |out: &mut String, label: &str, value: String| {
            let _ = writeln!(out, "    {:<15}{value}", format!("{label}:"));
        };
        if let Some(image) = view["images"][name.as_str()].as_str() {
            field(&mut out, "Image", image.to_owned());
        }
        let mut state = text(&container["state"]);
        if let Some(reason) = container["reason"].as_str() {
            state = format!("{state} ({reason})");
        }
        if let Some(code) = container["exitCode"].as_i64() {
            state = format!("{state}, exit code {code}");
        }
        field(&mut out, "State", state);
        field(&mut out, "Ready", text(&container["ready"]));
        field(&mut out, "Restarts", text(&container["restartCount"]));
        for (label, key) in [("Error", "lastError"), ("Last output", "lastOutput"), ("Last state", "lastTermination")] {
            if let Some(value) = container[key].as_str() {
                field(&mut out, label, value.to_owned());
            }
        }
    }
    out
}

pub fn describe_text(view: &Value, now: i64) -> String {
    let w = &view["workload"];
    let mut out = String::new();
    let _ = writeln!(out, "Name:       {}", text(&w["name"]));
    let _ = writeln!(out, "Namespace:  {}", text(&w["namespace"]));
    let _ = writeln!(out, "Kind:       {}", text(&w["kind"]));
    if let Some(job) = w["job"].as_object() {
        let completions = job["completions"].as_i64().map_or_else(|| "any one".to_owned(), |n| n.to_string());
        let _ = writeln!(out, "Status:     {}", text(&job["status"]));
        let _ = writeln!(
            out,
            "Pods:       {} succeeded of {completions}, {} active, {} failures counted",
            text(&job["succeeded"]),
            text(&job["active"]),
            text(&job["failed"])
        );
        if let Some(started) = job["startedAt"].as_i64() {
            let ended = job["finishedAt"].as_i64();
            let _ = writeln!(
                out,
                "Started:    {} ago, {} {}",
                age(started, now),
                if ended.is_some() { "ran" } else { "running for" },
                age(started, ended.unwrap_or(now))
            );
        }
    } else {
        let wanted = w["replicas"].as_i64().map_or_else(|| "one per node".to_owned(), |r| r.to_string());
        let _ = writeln!(
            out,
            "Replicas:   {wanted} desired, {} updated, {} total, {} available",
            text(&w["updated"]),
            text(&w["total"]),
            text(&w["ready"])
        );
    }
    let _ = writeln!(out, "Revision:   {} \"{}\"", short(&text(&w["revision"])), text(&w["revisionMessage"]));
    let _ = writeln!(out, "Sync:       {}", text(&w["sync"]));
    let _ = writeln!(out, "Health:     {}", text(&w["health"]));
    if let Some(reason) = w["reason"].as_str().filter(|r| !r.is_empty()) {
        let _ = writeln!(out, "Reason:     {reason}");
    }
    if let Some(pin) = view["pin"].as_object() {
        let _ = writeln!(
            out,
            "Pinned:     to commit {} by `berth rollback`, until a commit other than {} is applied",
            short(&text(&pin["commit"])),
            short(&text(&pin["head"]))
        );
    }
    let _ = writeln!(out, "\nPods:");
    let pods = pods_table(&view["pods"], None);
    for line in pods.lines() {
        let _ = writeln!(out, "  {line}");
    }
    let _ = writeln!(out, "\nHistory:");
    for line in history_table(&view["history"], now).lines() {
        let _ = writeln!(out, "  {line}");
    }
    out
}

/// What the user's side of an exec session sends: input as it is read, its end, and the
/// terminal's new size.
#[derive(Debug)]
pub enum Input {
    Bytes(Vec<u8>),
    End,
    Size(u16, u16),
}

/// Carries an exec session: `input` to the command, its output to `stdout` and `stderr` as it
/// comes. Returns the command's exit code.
pub async fn attach<S, O, E>(
    session: S,
    mut input: tokio::sync::mpsc::Receiver<Input>,
    mut stdout: O,
    mut stderr: E,
) -> Result<i64, String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + 'static,
    O: tokio::io::AsyncWrite + Unpin,
    E: tokio::io::AsyncWrite + Unpin,
{
    use crate::nodes::session::{frame, read_frame, size_payload, write_frame};
    use tokio::io::AsyncWriteExt as _;
    let (mut from_node, mut to_node) = tokio::io::split(session);
    let sending = tokio::spawn(async move {
        while let Some(next) = input.recv().await {
            let sent = match next {
                Input::Bytes(bytes) => write_frame(&mut to_node, frame::STDIN, &bytes).await,
                Input::End => write_frame(&mut to_node, frame::STDIN_END, b"").await,
                Input::Size(columns, rows) => {
                    write_frame(&mut to_node, frame::RESIZE, &size_payload(columns, rows)).await
                }
            };
            if sent.is_err() {
                break;
            }
        }
    });
    let result = async {
        loop {
            let Some((kind, payload)) =
                read_frame(&mut from_node).await.map_err(|e| format!("the exec session broke: {e}"))?
            else {
                return Err("the exec session ended before the command's exit code came".to_owned());
            };
            match kind {
                frame::STDOUT => {
                    stdout.write_all(&payload).await.map_err(|e| e.to_string())?;
                    stdout.flush().await.map_err(|e| e.to_string())?;
                }
                frame::STDERR => {
                    stderr.write_all(&payload).await.map_err(|e| e.to_string())?;
                    stderr.flush().await.map_err(|e| e.to_string())?;
                }
                frame::EXIT => {
                    let code = String::from_utf8_lossy(&payload);
                    return code.trim().parse::<i64>().map_err(|_| format!("the node sent exit code `{code}`"));
                }
                _ => {}
            }
        }
    }
    .await;
    sending.abort();
    result
}
