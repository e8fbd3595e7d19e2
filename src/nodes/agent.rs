//! The node agent's process: join, heartbeat, follow the assignment, converge, probe, report.
//!
//! It fails closed: without a saved node credential or a join token it does not start. It never
//! converges before the control plane has answered with an assignment, so a restarted agent
//! adopts its running pods instead of reading "nothing assigned" into a teardown. Stopping the
//! agent stops no workload: containers run on without it, and the next agent adopts them.

use super::pods::labels;
use super::pods::{PodError, PodManager, PodManagerConfig};
use super::protocol::{
    AgentAnswer, AgentRequest, Assignment, CertificateRequest, ErrorBody, ExecRequest, Heartbeat, JoinRequest,
    JoinResponse, LogRequest, NodeCertificate, NodeUsage, PodStatus, Report, Resources, RouteTable,
};
use super::proxy::{Mesh, host_resolvers};
use super::runtime::{ContainerRuntime, ContainerState};
use crate::retry::Retry;
use crate::tls::{JoinToken, NodeIdentity, Trust};
use futures_util::StreamExt;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// The control plane's base URL, such as `http://127.0.0.1:7420`.
    pub server: String,
    pub join_token: Option<String>,
    pub node: String,
    pub address: String,
    pub labels: BTreeMap<String, String>,
    pub state_dir: PathBuf,
    pub heartbeat_interval: Duration,
    /// A full converge pass runs at least this often, whatever else happens.
    pub resync_interval: Duration,
    /// How often probes are looked at; a probe's own period decides when it runs.
    pub probe_interval: Duration,
    pub backoff_base: Duration,
    /// Whether the node runs the service proxy and DNS for its pods.
    pub routing: bool,
    /// Where `/healthz`, `/readyz` and `/metrics` are served; nowhere when `None`.
    pub metrics_listen: Option<String>,
    /// The token `/metrics` asks for; needed for a listener off loopback.
    pub metrics_token: Option<String>,
    /// How often each container's CPU and memory, and the node's, are sampled.
    pub usage_interval: Duration,
    /// CA certificates to trust for an `https://` server when the join token pins none.
    pub ca_file: Option<PathBuf>,
}

impl AgentConfig {
    pub fn new(server: &str, node: &str, address: &str, state_dir: &Path) -> AgentConfig {
        AgentConfig {
            server: server.trim_end_matches('/').to_owned(),
            join_token: None,
            node: node.to_owned(),
            address: address.to_owned(),
            labels: BTreeMap::new(),
            state_dir: state_dir.to_owned(),
            heartbeat_interval: Duration::from_secs(2),
            resync_interval: Duration::from_secs(10),
            probe_interval: Duration::from_millis(500),
            backoff_base: Duration::from_secs(10),
            routing: true,
            metrics_listen: None,
            metrics_token: None,
            usage_interval: Duration::from_secs(10),
            ca_file: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(
        "no credentials: {state_dir} holds no node credential and no join token was given; pass --join-token with the \
         server's join token to join, or --state-dir with this node's state folder"
    )]
    NoCredentials { state_dir: PathBuf },
    #[error("the server at {server} refused to let node {node} join: {message}")]
    JoinRefused { server: String, node: String, message: String },
    #[error(
        "--metrics-listen {address} is not a loopback address: give --metrics-token (or BERTH_METRICS_TOKEN) so only scrapers that hold it read /metrics"
    )]
    MetricsOpen { address: String },
    #[error("listening for /metrics on {address} failed")]
    Listen {
        address: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the server at {server} did not answer")]
    Unreachable {
        server: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("the credential in {path} is unreadable; remove it to join again with a join token")]
    Credential {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("writing {path} failed")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Pods(#[from] PodError),
    #[error("{0}")]
    Tls(#[from] crate::tls::TlsError),
    #[error("refusing the server at {server}: {message}")]
    Untrusted { server: String, message: String },
    #[error(
        "the join token pins the server's CA, but {server} is plain HTTP off this host: use the server's https:// URL so the token's secret is not sent in the clear"
    )]
    PinOverHttp { server: String },
    #[error(
        "the node address `{address}` is not an IP address; pass --address with the address this node's ports listen on"
    )]
    Address { address: String },
}

/// What the agent keeps in its state folder to prove who it is.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct SavedCredential {
    server: String,
    node: String,
    credential: String,
    /// The CA the join token pinned (SHA-256 of its certificate), kept for every later start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ca_hash: Option<String>,
}

/// The credential's file in the agent's state folder.
const CREDENTIAL_FILE: &str = "credential.json";
/// The node's private key (PEM), made on the node; only its public half leaves it.
const KEY_FILE: &str = "node-key.pem";
/// The node's client certificate as the server issued it, with when to renew it.
const CERTIFICATE_FILE: &str = "node-certificate.json";

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct SavedCertificate {
    #[serde(flatten)]
    issued: NodeCertificate,
    /// Unix seconds after which the agent asks for a new certificate: two thirds into its life.
    renew_at: i64,
}

fn unix_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

/// Keeps a certificate the server issued for the key in `key_pem`, and presents it from now on.
fn keep_certificate(
    state_dir: &Path,
    identity: &NodeIdentity,
    issued: NodeCertificate,
    key_pem: &str,
) -> Result<SavedCertificate, AgentError> {
    let now = unix_now();
    let saved = SavedCertificate { renew_at: now + (issued.expires - now).max(0) * 2 / 3, issued };
    identity.set(&saved.issued.certificate, key_pem)?;
    let write = |name: &str, bytes: &[u8]| {
        let path = state_dir.join(name);
        crate::private::write_private(&path, bytes).map_err(|source| AgentError::Io { path, source })
    };
    write(KEY_FILE, key_pem.as_bytes())?;
    write(CERTIFICATE_FILE, &serde_json::to_vec_pretty(&saved).unwrap_or_default())?;
    Ok(saved)
}

/// The node's certificate and key as saved, presented from now on; None when there is none.
fn load_certificate(state_dir: &Path, identity: &NodeIdentity) -> Result<Option<SavedCertificate>, AgentError> {
    let path = state_dir.join(CERTIFICATE_FILE);
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(AgentError::Io { path, source }),
    };
    let saved: SavedCertificate =
        serde_json::from_slice(&bytes).map_err(|source| AgentError::Credential { path: path.clone(), source })?;
    let key_path = state_dir.join(KEY_FILE);
    let key = std::fs::read_to_string(&key_path).map_err(|source| AgentError::Io { path: key_path, source })?;
    identity.set(&saved.issued.certificate, &key)?;
    Ok(Some(saved))
}

/// Whom the agent trusts for an `https://` server: the CA its join token (or saved credential)
/// pins, else the CA file it was given, else the system's roots. None for plain HTTP.
fn trust_for(config: &AgentConfig, saved: Option<&SavedCredential>) -> Result<Option<Trust>, AgentError> {
    let pinned = config
        .join_token
        .as_deref()
        .and_then(|t| JoinToken::parse(t).ok())
        .and_then(|t| t.ca_hash)
        .or_else(|| saved.and_then(|s| s.ca_hash.clone()));
    if !config.server.starts_with("https://") {
        let loopback = reqwest::Url::parse(&config.server).ok().is_some_and(|url| {
            let host = url.host_str().unwrap_or_default().trim_start_matches('[').trim_end_matches(']').to_owned();
            host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
        });
        if pinned.is_some() && saved.is_none() && !loopback {
            return Err(AgentError::PinOverHttp { server: config.server.clone() });
        }
        return Ok(None);
    }
    Ok(Some(match (pinned, &config.ca_file) {
        (Some(hash), _) => Trust::Pinned(hash),
        (None, Some(file)) => Trust::Roots(crate::tls::read_certificates(file)?),
        (None, None) => Trust::System,
    }))
}

/// The saved credential, if the node has joined.
fn saved_credential(state_dir: &Path) -> Result<Option<SavedCredential>, AgentError> {
    let path = state_dir.join(CREDENTIAL_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|source| AgentError::Credential { path, source }),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(AgentError::Io { path, source }),
    }
}

/// An authenticated client of the agent API.
#[derive(Clone)]
struct ApiClient {
    /// Made anew when the node's certificate is renewed, so that no pooled connection goes on
    /// presenting the old one.
    http: Arc<std::sync::RwLock<reqwest::Client>>,
    make_http: Arc<dyn Fn() -> Result<reqwest::Client, AgentError> + Send + Sync>,
    base: String,
    node: String,
    credential: String,
    /// The certificate the node presents over TLS.
    identity: Arc<NodeIdentity>,
}

impl ApiClient {
    fn http(&self) -> reqwest::Client {
        self.http.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    fn url(&self, what: &str) -> String {
        format!("{}/api/v1/agent/nodes/{}/{what}", self.base, self.node)
    }

    async fn post<T: serde::Serialize>(&self, what: &str, body: &T) -> Result<(), String> {
        let response = self
            .http()
            .post(self.url(what))
            .bearer_auth(&self.credential)
            .json(body)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        check(response).await.map(|_| ())
    }

    async fn heartbeat(&self, beat: &Heartbeat) -> Result<(), String> {
        self.post("heartbeat", beat).await
    }

    /// Long-polls `what` (the assignment or the route table) for a version other than `after`,
    /// or the server's requests.
    async fn poll<T: serde::de::DeserializeOwned>(&self, what: &str, after: u64, wait: Duration) -> Result<T, String> {
        let response = self
            .http()
            .get(self.url(what))
            .query(&[("after", after), ("waitSeconds", wait.as_secs())])
            .timeout(wait + Duration::from_secs(10))
            .bearer_auth(&self.credential)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        check(response).await?.json().await.map_err(|e| e.to_string())
    }

    async fn report(&self, report: &Report) -> Result<(), String> {
        self.post("report", report).await
    }

    async fn answer(&self, id: u64, answer: &AgentAnswer) -> Result<(), String> {
        self.post(&format!("requests/{id}"), answer).await
    }
}

/// Turns an error answer into its message.
async fn check(response: reqwest::Response) -> Result<reqwest::Response, String> {
    if response.status().is_success() {
        return Ok(response);
    }
    let status = response.status();
    let body = response.json::<ErrorBody>().await.map(|b| b.error).unwrap_or_default();
    Err(format!("{status}: {body}"))
}

/// This machine's CPU and memory.
pub fn capacity() -> Resources {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
    let memory_kib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .unwrap_or(0);
    Resources { cpu_millis: cpus * 1000, memory_bytes: memory_kib * 1024 }
}

/// Joins with the join token and saves the credential (and, over TLS, the certificate) it gets.
async fn join(
    config: &AgentConfig,
    http: &reqwest::Client,
    identity: &NodeIdentity,
    tls: bool,
) -> Result<SavedCredential, AgentError> {
    let Some(token) = &config.join_token else {
        return Err(AgentError::NoCredentials { state_dir: config.state_dir.clone() });
    };
    let token = JoinToken::parse(token)?;
    let key = if tls { Some(NodeIdentity::new_key()?) } else { None };
    use base64::Engine as _;
    let request = JoinRequest {
        node: config.node.clone(),
        address: config.address.clone(),
        labels: config.labels.clone(),
        capacity: capacity(),
        public_key: key.as_ref().map(|(_, public)| base64::engine::general_purpose::STANDARD.encode(public)),
    };
    let response = match http
        .post(format!("{}/api/v1/agent/join", config.server))
        .bearer_auth(&token.secret)
        .json(&request)
        .send()
        .await
    {
        Ok(response) => response,
        Err(source) => {
            let message = crate::error_chain(&source);
            // A server that is there but shows another CA is not one to keep trying.
            if message.contains("does not chain to the CA") || message.contains("invalid peer certificate") {
                return Err(AgentError::Untrusted { server: config.server.clone(), message });
            }
            return Err(AgentError::Unreachable { server: config.server.clone(), source });
        }
    };
    let joined: JoinResponse = match check(response).await {
        Ok(response) => {
            response.json().await.map_err(|source| AgentError::Unreachable { server: config.server.clone(), source })?
        }
        Err(message) => {
            return Err(AgentError::JoinRefused { server: config.server.clone(), node: config.node.clone(), message });
        }
    };
    let saved = SavedCredential {
        server: config.server.clone(),
        node: joined.node,
        credential: joined.credential,
        ca_hash: token.ca_hash,
    };
    crate::private::private_dir(&config.state_dir)
        .map_err(|source| AgentError::Io { path: config.state_dir.clone(), source })?;
    if let (Some((key_pem, _)), Some(issued)) = (&key, joined.certificate) {
        keep_certificate(&config.state_dir, identity, issued, key_pem)?;
    }
    let path = config.state_dir.join(CREDENTIAL_FILE);
    let write = || -> std::io::Result<()> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut file = std::fs::OpenOptions::new().create_new(true).write(true).mode(0o600).open(&path)?;
        file.write_all(&serde_json::to_vec_pretty(&saved).unwrap_or_default())?;
        file.sync_all()
    };
    write().map_err(|source| AgentError::Io { path: path.clone(), source })?;
    tracing::info!(node = %saved.node, tls, "Joined the cluster; the node credential is saved.");
    Ok(saved)
}

/// Asks for a new certificate for a new key, and presents it from now on.
async fn renew_certificate(client: &ApiClient, state_dir: &Path) -> Result<SavedCertificate, String> {
    let (key_pem, public) = NodeIdentity::new_key().map_err(|e| e.to_string())?;
    use base64::Engine as _;
    let request = CertificateRequest { public_key: base64::engine::general_purpose::STANDARD.encode(public) };
    let response = client
        .http()
        .post(client.url("certificate"))
        .bearer_auth(&client.credential)
        .json(&request)
        .send()
        .await
        .map_err(|e| crate::error_chain(&e))?;
    let issued: NodeCertificate = check(response).await?.json().await.map_err(|e| e.to_string())?;
    let saved = keep_certificate(state_dir, &client.identity, issued, &key_pem).map_err(|e| e.to_string())?;
    let fresh = (client.make_http)().map_err(|e| e.to_string())?;
    *client.http.write().unwrap_or_else(std::sync::PoisonError::into_inner) = fresh;
    Ok(saved)
}

/// Renews the node's certificate two thirds into its life, for as long as the agent runs.
async fn keep_certificate_fresh(client: ApiClient, state_dir: PathBuf, mut renew_at: i64, shutdown: CancellationToken) {
    let mut renewing = Retry::new("renewing the node certificate", Duration::from_secs(1), Duration::from_secs(60));
    loop {
        let wait = Duration::from_secs(u64::try_from(renew_at - unix_now()).unwrap_or(0));
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
        match renew_certificate(&client, &state_dir).await {
            Ok(saved) => {
                renewing.succeeded();
                tracing::info!(expires = saved.issued.expires, "Renewed the node certificate.");
                renew_at = saved.renew_at;
            }
            Err(error) => {
                let pause = renewing.failed(&error);
                renew_at = unix_now() + i64::try_from(pause.as_secs()).unwrap_or(60).max(1);
            }
        }
    }
}

/// Runs the agent until `shutdown` is cancelled. The pods keep running after it returns.
pub async fn run<R: ContainerRuntime>(
    config: AgentConfig,
    runtime: Arc<R>,
    shutdown: CancellationToken,
) -> Result<(), AgentError> {
    // The agent's folder holds its credential and the files of Secret volumes: its own alone.
    crate::private::private_dir(&config.state_dir)
        .map_err(|source| AgentError::Io { path: config.state_dir.clone(), source })?;
    for name in [CREDENTIAL_FILE, "inventory.json", KEY_FILE, CERTIFICATE_FILE] {
        let path = config.state_dir.join(name);
        crate::private::private_file(&path).map_err(|source| AgentError::Io { path, source })?;
    }
    // Health and metrics answer from the start: /readyz says when the node has not joined yet.
    let metrics = Arc::new(super::metrics::AgentMetrics::default());
    let mut tasks = JoinSet::new();
    if let Some(address) = &config.metrics_listen {
        let listener = tokio::net::TcpListener::bind(address)
            .await
            .map_err(|source| AgentError::Listen { address: address.clone(), source })?;
        let loopback = listener.local_addr().is_ok_and(|a| a.ip().is_loopback());
        if !loopback && config.metrics_token.is_none() {
            return Err(AgentError::MetricsOpen { address: address.clone() });
        }
        tracing::info!(address = %listener.local_addr().map_or_else(|_| address.clone(), |a| a.to_string()), "Serving /healthz, /readyz and /metrics.");
        let router = super::metrics::router(metrics.clone(), runtime.clone(), config.metrics_token.clone());
        let stop = shutdown.clone();
        tasks.spawn(async move {
            use std::future::IntoFuture;
            let serve = axum::serve(listener, router).with_graceful_shutdown(stop.cancelled_owned());
            if let Err(error) = serve.into_future().await {
                tracing::error!(%error, "The metrics listener stopped.");
            }
        });
    }
    let mut saved = saved_credential(&config.state_dir)?;
    let trust = trust_for(&config, saved.as_ref())?;
    let identity = Arc::new(NodeIdentity::default());
    let mut certificate = load_certificate(&config.state_dir, &identity)?;
    let make_http = {
        let (trust, identity, server) = (trust.clone(), identity.clone(), config.server.clone());
        Arc::new(move || -> Result<reqwest::Client, AgentError> {
            let builder = match &trust {
                Some(trust) => crate::tls::http_client(trust, Some(identity.clone()))?,
                None => reqwest::Client::builder(),
            };
            builder
                .connect_timeout(Duration::from_secs(5))
                .timeout(Duration::from_secs(30))
                .build()
                .map_err(|source| AgentError::Unreachable { server: server.clone(), source })
        })
    };
    let http = make_http()?;
    // An unreachable server is normal at boot or while it restarts: keep trying. A refusal is
    // final, and so is a missing credential or a server that shows another CA.
    let mut joining = Retry::new("reaching the server to join", Duration::from_millis(250), Duration::from_secs(10));
    while saved.is_none() {
        match join(&config, &http, &identity, trust.is_some()).await {
            Err(AgentError::Unreachable { server, source }) => {
                let pause = joining.failed(&format!("{server}: {}", crate::error_chain(&source)));
                tokio::select! {
                    _ = shutdown.cancelled() => return Ok(()),
                    _ = tokio::time::sleep(pause) => {}
                }
            }
            other => {
                saved = Some(other?);
                certificate = load_certificate(&config.state_dir, &identity)?;
            }
        }
    }
    let saved = saved.expect("joined above");
    // The join's connection presented no certificate yet: none of it is pooled for later calls.
    drop(http);
    let client = ApiClient {
        http: Arc::new(std::sync::RwLock::new(make_http()?)),
        make_http,
        base: config.server.clone(),
        node: saved.node.clone(),
        credential: saved.credential.clone(),
        identity: identity.clone(),
    };
    if trust.is_some() {
        // A node that joined before the server spoke TLS asks for its first certificate now.
        let mut certifying =
            Retry::new("getting a node certificate", Duration::from_millis(250), Duration::from_secs(10));
        while certificate.is_none() {
            match renew_certificate(&client, &config.state_dir).await {
                Ok(saved) => certificate = Some(saved),
                Err(error) => {
                    let pause = certifying.failed(&error);
                    tokio::select! {
                        _ = shutdown.cancelled() => return Ok(()),
                        _ = tokio::time::sleep(pause) => {}
                    }
                }
            }
        }
    }
    if let Some(certificate) = &certificate {
        tasks.spawn(keep_certificate_fresh(
            client.clone(),
            config.state_dir.clone(),
            certificate.renew_at,
            shutdown.clone(),
        ));
    }
    let _ = metrics.joined.set(saved.node.clone());

    let mut manager_config = PodManagerConfig::new(&saved.node, &config.address, &config.state_dir);
    manager_config.backoff_base = config.backoff_base;
    let mesh = if config.routing {
        let address = config.address.parse().map_err(|_| AgentError::Address { address: config.address.clone() })?;
        Some(Mesh::new(&saved.node, address, host_resolvers()))
    } else {
        None
    };
    manager_config.mesh = mesh.clone();
    if let Some(mesh) = &mesh {
        let _ = metrics.mesh.set(mesh.clone());
    }
    // With a certificate, service traffic from other nodes comes in over mutual TLS.
    let tunnel_port = match (&mesh, &certificate) {
        (Some(mesh), Some(saved)) => {
            let (server, client) = crate::tls::tunnel_configs(&saved.issued.ca, identity.clone())?;
            match mesh.start_tunnel(server, client).await {
                Ok(port) => Some(port),
                Err(error) => {
                    tracing::warn!(%error, address = %config.address, "The tunnel for other nodes' service traffic cannot listen; they reach this node's pods directly.");
                    None
                }
            }
        }
        _ => None,
    };
    let manager = Arc::new(PodManager::new(runtime.clone(), manager_config).await?);

    let (assignments, mut assignment) = watch::channel::<Option<Assignment>>(None);
    let wake = Arc::new(Notify::new());
    let usage = Arc::new(Mutex::new(None));
    tasks.spawn(sample_usage(
        runtime.clone(),
        saved.node.clone(),
        config.usage_interval,
        usage.clone(),
        metrics.clone(),
        shutdown.clone(),
    ));
    tasks.spawn(heartbeats(client.clone(), config.clone(), usage, tunnel_port, shutdown.clone()));
    tasks.spawn(serve_requests(
        client.clone(),
        runtime.clone(),
        manager.clone(),
        saved.node.clone(),
        assignment.clone(),
        shutdown.clone(),
    ));
    tasks.spawn(follow_assignment(client.clone(), assignments, shutdown.clone()));
    if let Some(mesh) = mesh {
        tasks.spawn(follow_routes(client.clone(), mesh, shutdown.clone()));
    }
    {
        let events = runtime.events(&saved.node);
        let wake = wake.clone();
        let shutdown = shutdown.clone();
        tasks.spawn(async move {
            let mut events = std::pin::pin!(events);
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    event = events.next() => match event {
                        Some(()) => wake.notify_one(),
                        None => break,
                    },
                }
            }
        });
    }

    let mut last_report: Option<(u64, Vec<PodStatus>)> = None;
    let mut last_report_at = Instant::now();
    // Engine failures are retried at the loop's own pace; these only keep the log to one line
    // per change of state.
    let pace = config.probe_interval;
    let mut converging = Retry::new("converging pods on the engine", pace, pace);
    let mut probing = Retry::new("probing pods", pace, pace);
    let mut observing = Retry::new("observing pods on the engine", pace, pace);
    let mut reporting = Retry::new("reporting to the server", Duration::from_millis(500), Duration::from_secs(10));
    let mut report_not_before = Instant::now();
    let mut last_converge = Instant::now() - config.resync_interval;
    let mut converge_now = true;
    while !shutdown.is_cancelled() {
        let current = assignment.borrow_and_update().clone();
        let mut next_due = None;
        if let Some(current) = &current {
            if converge_now || last_converge.elapsed() >= config.resync_interval {
                let started = Instant::now();
                let converged = manager.converge(&current.pods).await;
                metrics.converge_seconds.observe(started.elapsed().as_secs_f64());
                match converged {
                    Ok(summary) => {
                        converging.succeeded();
                        next_due = summary.next_due;
                    }
                    Err(error) => {
                        converging.failed(&error);
                    }
                }
                last_converge = Instant::now();
            }
            match manager.probe(&current.pods).await {
                Ok(summary) => {
                    metrics.probed(&summary.failures);
                    probing.succeeded();
                }
                Err(error) => {
                    probing.failed(&error);
                }
            }
            match manager.observe(&current.pods).await {
                Ok(statuses) => {
                    observing.succeeded();
                    metrics.observed(&statuses);
                    let changed = last_report.as_ref().is_none_or(|(g, s)| *g != current.generation || *s != statuses);
                    let due = changed || last_report_at.elapsed() >= config.resync_interval;
                    if due && Instant::now() >= report_not_before {
                        let report = Report { generation: current.generation, pods: statuses.clone() };
                        match client.report(&report).await {
                            Ok(()) => {
                                metrics.reports.inc();
                                reporting.succeeded();
                                last_report = Some((current.generation, statuses));
                                last_report_at = Instant::now();
                            }
                            Err(error) => {
                                metrics.report_failures.inc();
                                report_not_before = Instant::now() + reporting.failed(&error);
                            }
                        }
                    }
                }
                Err(error) => {
                    observing.failed(&error);
                }
            }
        }
        let mut deadline = tokio::time::Instant::now() + config.probe_interval;
        if let Some(due) = next_due {
            deadline = deadline.min(tokio::time::Instant::from_std(due));
        }
        converge_now = tokio::select! {
            _ = shutdown.cancelled() => false,
            _ = assignment.changed() => true,
            _ = wake.notified() => true,
            _ = tokio::time::sleep_until(deadline) => next_due.is_some_and(|due| due <= Instant::now()),
        };
    }
    tasks.abort_all();
    while tasks.join_next().await.is_some() {}
    tracing::info!(node = %saved.node, "Agent stopped; its pods keep running.");
    Ok(())
}

/// Samples the CPU and memory of this node's running containers and of the node every
/// `every`, for the heartbeat (`latest`) and `/metrics`.
async fn sample_usage<R: ContainerRuntime>(
    runtime: Arc<R>,
    node: String,
    every: Duration,
    latest: Arc<Mutex<Option<NodeUsage>>>,
    metrics: Arc<super::metrics::AgentMetrics>,
    shutdown: CancellationToken,
) {
    let mut interval = tokio::time::interval(every);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut sampler = super::usage::Sampler::default();
    let mut listing = Retry::new("listing containers for their usage", every, every);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = interval.tick() => {}
        }
        let filter = [(labels::NODE, node.as_str()), (labels::ROLE, "container")];
        let containers = match runtime.list(&filter).await {
            Ok(containers) => {
                listing.succeeded();
                containers
            }
            Err(error) => {
                listing.failed(&error);
                continue;
            }
        };
        let mut seen = Vec::with_capacity(containers.len());
        for container in containers.into_iter().filter(|c| c.state == ContainerState::Running) {
            let Some(reading) = runtime.usage(&container.id).await else { continue };
            let label = |key: &str| container.labels.get(key).cloned().unwrap_or_default();
            seen.push(super::usage::Seen {
                namespace: label(labels::NAMESPACE),
                pod: label(labels::POD),
                container: label(labels::CONTAINER),
                id: container.id,
                reading,
            });
        }
        let node_reading = super::usage::read_node();
        metrics.sampled(&seen, node_reading);
        let sample = sampler.sample(node_reading, seen, Instant::now(), super::usage::epoch_seconds());
        *crate::lock(&latest) = Some(sample);
    }
}

/// Answers the server's requests (a container's log) over the connection this node opens:
/// nodes listen on no port for the server.
async fn serve_requests<R: ContainerRuntime>(
    client: ApiClient,
    runtime: Arc<R>,
    manager: Arc<PodManager<R>>,
    node: String,
    assignment: watch::Receiver<Option<Assignment>>,
    shutdown: CancellationToken,
) {
    let mut retry = Retry::new("fetching the server's requests", Duration::from_millis(500), Duration::from_secs(10));
    let mut answering = JoinSet::new();
    loop {
        let fetched = tokio::select! {
            _ = shutdown.cancelled() => return,
            // The server's requests for this node, long-polled (they have no versions).
            fetched = client.poll::<Vec<AgentRequest>>("requests", 0, Duration::from_secs(30)) => fetched,
        };
        match fetched {
            Ok(requests) => {
                retry.succeeded();
                for request in requests {
                    let (client, runtime, node) = (client.clone(), runtime.clone(), node.clone());
                    if let Some(forward) = request.port_forward.clone() {
                        answering.spawn(async move {
                            if let Err(error) = port_forward(&client, &*runtime, &node, request.id, &forward).await {
                                tracing::warn!(%error, pod = %forward.pod, port = forward.port, "A port-forward failed.");
                            }
                        });
                        continue;
                    }
                    // What the pod got from Secrets is hidden in what it wrote, as everywhere
                    // berth shows something.
                    let hidden = hidden_values(assignment.borrow().as_ref(), &request);
                    if let Some(logs) = request.log_stream.clone() {
                        answering.spawn(async move {
                            if let Err(error) = log_stream(&client, &*runtime, &node, request.id, &logs, &hidden).await {
                                tracing::debug!(%error, pod = %logs.pod, container = %logs.container, "A log stream ended.");
                            }
                        });
                        continue;
                    }
                    if let Some(exec) = request.exec_session.clone() {
                        answering.spawn(async move {
                            if let Err(error) =
                                exec_session(&client, runtime, &node, request.id, &exec, &hidden).await
                            {
                                tracing::warn!(%error, pod = %exec.pod, container = %exec.container, "An exec session failed.");
                            }
                        });
                        continue;
                    }
                    let manager = manager.clone();
                    answering.spawn(async move {
                        let hidden: Vec<&str> = hidden.iter().map(String::as_str).collect();
                        let answer = match (&request.logs, &request.exec) {
                            _ if request.remove_claim.is_some() => {
                                let claim = request.remove_claim.as_ref().expect("checked above");
                                match manager.remove_claim(&claim.namespace, &claim.claim).await {
                                    Ok(removed) => AgentAnswer {
                                        output: Some(if removed { "removed" } else { "absent" }.to_owned()),
                                        exit_code: None,
                                        error: None,
                                    },
                                    Err(error) => AgentAnswer {
                                        output: None,
                                        exit_code: None,
                                        error: Some(format!(
                                            "removing the volume of claim {}/{} failed: {error}",
                                            claim.namespace, claim.claim
                                        )),
                                    },
                                }
                            }
                            (Some(logs), _) => match container_log(&*runtime, &node, logs).await {
                                Ok(output) => AgentAnswer {
                                    output: Some(super::pods::hide(&output, &hidden)),
                                    exit_code: None,
                                    error: None,
                                },
                                Err(error) => AgentAnswer { output: None, exit_code: None, error: Some(error) },
                            },
                            (_, Some(exec)) => match container_exec(&*runtime, &node, exec).await {
                                Ok((code, output)) => AgentAnswer {
                                    output: Some(super::pods::hide(&output, &hidden)),
                                    exit_code: Some(code),
                                    error: None,
                                },
                                Err(error) => AgentAnswer { output: None, exit_code: None, error: Some(error) },
                            },
                            _ => AgentAnswer {
                                output: None,
                                exit_code: None,
                                error: Some("the agent does not know this request; upgrade it".into()),
                            },
                        };
                        if let Err(error) = client.answer(request.id, &answer).await {
                            tracing::warn!(%error, "Answering the server's request failed.");
                        }
                    });
                }
                while answering.try_join_next().is_some() {}
            }
            Err(error) => {
                if !pause_after_failure(retry.failed(&error), &shutdown).await {
                    return;
                }
            }
        }
    }
}

/// The values the pod a request is about got from Secrets, in the container it names.
fn hidden_values(assignment: Option<&Assignment>, request: &AgentRequest) -> Vec<String> {
    let Some((namespace, pod, container)) = request.container() else { return Vec::new() };
    assignment
        .and_then(|a| a.pods.iter().find(|p| p.namespace == namespace && p.pod == pod))
        .map(|p| super::pods::secret_values(p, container).into_iter().map(str::to_owned).collect())
        .unwrap_or_default()
}

/// Runs a request's command in the current attempt of its container, which must be running.
/// Dials the server back for port-forward session `id` and splices it to the pod's port, after
/// the answer line that says whether the port could be reached.
async fn port_forward<R: ContainerRuntime>(
    client: &ApiClient,
    runtime: &R,
    node: &str,
    id: u64,
    forward: &super::protocol::PortForwardRequest,
) -> Result<(), String> {
    let reached = async {
        let filter = [
            (labels::NODE, node),
            (labels::NAMESPACE, forward.namespace.as_str()),
            (labels::POD, forward.pod.as_str()),
            (labels::ROLE, "sandbox"),
        ];
        let sandboxes = runtime.list(&filter).await.map_err(|e| e.to_string())?;
        let sandbox = sandboxes
            .iter()
            .find(|c| c.state == super::runtime::ContainerState::Running)
            .ok_or_else(|| format!("pod {}/{} is not running on node {node}", forward.namespace, forward.pod))?;
        runtime.connect_in_pod(&sandbox.id, forward.port, Duration::from_secs(5)).await.map_err(|e| {
            format!(
                "pod {}/{}: {e}; is something listening on port {} in the pod?",
                forward.namespace, forward.pod, forward.port
            )
        })
    }
    .await;
    let mut session = dial_back(client, id, reached.as_ref().map(|_| ()).map_err(Clone::clone)).await?;
    let mut pod = reached?;
    tokio::io::copy_bidirectional(&mut session, &mut pod).await.map_err(|e| e.to_string())?;
    Ok(())
}

/// Dials the server back for session `id` and answers whether the session could open.
async fn dial_back(client: &ApiClient, id: u64, opened: Result<(), String>) -> Result<reqwest::Upgraded, String> {
    let response = client
        .http()
        .get(client.url(&format!("sessions/{id}")))
        .bearer_auth(&client.credential)
        .header(reqwest::header::CONNECTION, "upgrade")
        .header(reqwest::header::UPGRADE, super::session::PROTOCOL)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if response.status() != reqwest::StatusCode::SWITCHING_PROTOCOLS {
        return Err(check(response).await.err().unwrap_or_else(|| "the server did not upgrade the session".into()));
    }
    let mut session = response.upgrade().await.map_err(|e| e.to_string())?;
    super::session::answer(&mut session, &opened).await.map_err(|e| e.to_string())?;
    Ok(session)
}

/// How long output that may start a Secret value is held back before it is shown anyway: a
/// terminal must echo what is typed.
const HOLD_BACK: Duration = Duration::from_millis(50);

/// Runs an attached command for exec session `id`: the user's input and terminal size in, the
/// command's output out with Secret values hidden, its exit code last.
async fn exec_session<R: ContainerRuntime>(
    client: &ApiClient,
    runtime: Arc<R>,
    node: &str,
    id: u64,
    request: &super::protocol::ExecSessionRequest,
    hidden: &[String],
) -> Result<(), String> {
    use super::session::{frame, read_frame, write_frame};
    use tokio::io::AsyncWriteExt as _;
    let started = async {
        let container =
            running_container(&*runtime, node, &request.namespace, &request.pod, &request.container).await?;
        runtime
            .exec_attached(&container.id, &request.command, request.tty, request.stdin)
            .await
            .map_err(|e| e.to_string())
    }
    .await;
    let session = dial_back(client, id, started.as_ref().map(|_| ()).map_err(Clone::clone)).await?;
    let super::runtime::AttachedExec { exec_id, output, mut input } = started?;
    if let (true, Some((columns, rows))) = (request.tty, request.size) {
        let _ = runtime.resize_exec(&exec_id, columns, rows).await;
    }
    let (mut from_user, mut to_user) = tokio::io::split(session);
    // The user's side: input, its end, and the terminal's size, as they come.
    let feeding = {
        let (runtime, exec_id) = (runtime.clone(), exec_id.clone());
        tokio::spawn(async move {
            while let Ok(Some((kind, payload))) = read_frame(&mut from_user).await {
                match kind {
                    frame::STDIN if input.write_all(&payload).await.is_err() || input.flush().await.is_err() => break,
                    frame::STDIN_END => {
                        let _ = input.shutdown().await;
                    }
                    frame::RESIZE => {
                        if let Some((columns, rows)) = super::session::parse_size(&payload) {
                            let _ = runtime.resize_exec(&exec_id, columns, rows).await;
                        }
                    }
                    _ => {}
                }
            }
            // The user went away: a shell reads the end of its input and ends.
            let _ = input.shutdown().await;
        })
    };
    let mut output = super::redact::hide_output(output, hidden, HOLD_BACK);
    let result = async {
        while let Some(chunk) = output.next().await {
            match chunk {
                Ok((stream, bytes)) => {
                    let kind =
                        if stream == super::runtime::OutputStream::Stderr { frame::STDERR } else { frame::STDOUT };
                    write_frame(&mut to_user, kind, &bytes).await?;
                }
                Err(error) => {
                    let message = format!("the command's output broke: {error}\n");
                    write_frame(&mut to_user, frame::STDERR, message.as_bytes()).await?;
                    break;
                }
            }
        }
        let code = runtime.exec_exit_code(&exec_id).await.unwrap_or(-1);
        write_frame(&mut to_user, frame::EXIT, code.to_string().as_bytes()).await?;
        to_user.shutdown().await
    }
    .await;
    feeding.abort();
    result.map_err(|e| format!("the exec session broke: {e}"))
}

/// The current attempt of a container, which must be running.
async fn running_container<R: ContainerRuntime>(
    runtime: &R,
    node: &str,
    namespace: &str,
    pod: &str,
    container: &str,
) -> Result<super::runtime::ContainerInfo, String> {
    let filter =
        [(labels::NODE, node), (labels::NAMESPACE, namespace), (labels::POD, pod), (labels::CONTAINER, container)];
    let attempts = runtime.list(&filter).await.map_err(|e| e.to_string())?;
    let attempt = |c: &super::runtime::ContainerInfo| {
        c.labels.get(labels::ATTEMPT).and_then(|a| a.parse::<u32>().ok()).unwrap_or(0)
    };
    attempts
        .into_iter()
        .max_by_key(attempt)
        .filter(|c| c.state == super::runtime::ContainerState::Running)
        .ok_or_else(|| {
            format!(
                "container {container} of pod {namespace}/{pod} is not running on node {node}; `berth describe pod/{pod}` says why"
            )
        })
}

async fn container_exec<R: ContainerRuntime>(
    runtime: &R,
    node: &str,
    request: &ExecRequest,
) -> Result<(i64, String), String> {
    let container = running_container(runtime, node, &request.namespace, &request.pod, &request.container).await?;
    let timeout = Duration::from_secs(request.timeout_seconds.clamp(1, 3600));
    runtime
        .exec_output(&container.id, &request.command, request.stdin.as_deref().map(str::as_bytes), timeout)
        .await
        .map_err(|e| e.to_string())
}

/// The log of the container a request names: its current attempt, or the one before.
/// Streams a container's log for session `id` as the container writes it, each line after its
/// time, with Secret values hidden, until the container stops or the user goes away.
async fn log_stream<R: ContainerRuntime>(
    client: &ApiClient,
    runtime: &R,
    node: &str,
    id: u64,
    request: &LogRequest,
    hidden: &[String],
) -> Result<(), String> {
    use tokio::io::AsyncWriteExt as _;
    let found = log_attempt(runtime, node, request).await;
    let mut session = dial_back(client, id, found.as_ref().map(|_| ()).map_err(Clone::clone)).await?;
    let container = found?;
    let output = runtime.follow_logs(&container.id, request.tail, request.since);
    let mut output = super::redact::hide_output(output, hidden, HOLD_BACK);
    while let Some(chunk) = output.next().await {
        let Ok((_, bytes)) = chunk else { break };
        session.write_all(&bytes).await.map_err(|e| e.to_string())?;
        session.flush().await.map_err(|e| e.to_string())?;
    }
    session.shutdown().await.map_err(|e| e.to_string())
}

/// The attempt of a container a log request is about: the current one, or the one before.
async fn log_attempt<R: ContainerRuntime>(
    runtime: &R,
    node: &str,
    request: &LogRequest,
) -> Result<super::runtime::ContainerInfo, String> {
    let filter = [
        (labels::NODE, node),
        (labels::NAMESPACE, request.namespace.as_str()),
        (labels::POD, request.pod.as_str()),
        (labels::CONTAINER, request.container.as_str()),
    ];
    let mut attempts = runtime.list(&filter).await.map_err(|e| e.to_string())?;
    let attempt = |c: &super::runtime::ContainerInfo| {
        c.labels.get(labels::ATTEMPT).and_then(|a| a.parse::<u32>().ok()).unwrap_or(0)
    };
    attempts.sort_by_key(attempt);
    let chosen = match request.previous {
        false => attempts.last(),
        true => attempts.iter().rev().nth(1),
    };
    let Some(container) = chosen else {
        let what = if request.previous { "no previous attempt" } else { "no container" };
        return Err(format!(
            "container {} of pod {}/{} has {what} on node {node}",
            request.container, request.namespace, request.pod
        ));
    };
    Ok(container.clone())
}

async fn container_log<R: ContainerRuntime>(runtime: &R, node: &str, request: &LogRequest) -> Result<String, String> {
    let container = log_attempt(runtime, node, request).await?;
    runtime.logs(&container.id, request.tail, request.since, request.timestamps).await.map_err(|e| e.to_string())
}

async fn heartbeats(
    client: ApiClient,
    config: AgentConfig,
    usage: Arc<Mutex<Option<NodeUsage>>>,
    tunnel_port: Option<u16>,
    shutdown: CancellationToken,
) {
    let mut interval = tokio::time::interval(config.heartbeat_interval);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Heartbeats keep their own pace; only the log follows the state.
    let mut beating = Retry::new("sending a heartbeat", config.heartbeat_interval, config.heartbeat_interval);
    // A usage sample goes with the first heartbeat the server takes after it is made, not
    // with every one: heartbeats are more frequent than samples.
    let mut sent_sample = None;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = interval.tick() => {}
        }
        let capacity = capacity();
        let sample = crate::lock(&usage).clone().filter(|u| Some(u.sampled_at) != sent_sample);
        let sampled_at = sample.as_ref().map(|u| u.sampled_at);
        let beat = Heartbeat {
            address: config.address.clone(),
            labels: config.labels.clone(),
            capacity,
            allocatable: capacity,
            usage: sample,
            tunnel_port,
        };
        match client.heartbeat(&beat).await {
            Ok(()) => {
                beating.succeeded();
                if sampled_at.is_some() {
                    sent_sample = sampled_at;
                }
            }
            Err(error) => {
                beating.failed(&error);
            }
        }
    }
}

/// Waits out the pause a failure earned; false when the agent is stopping.
async fn pause_after_failure(pause: Duration, shutdown: &CancellationToken) -> bool {
    tokio::select! {
        _ = shutdown.cancelled() => false,
        _ = tokio::time::sleep(pause) => true,
    }
}

/// Long-polls the route table and programs the node's proxy with every new version.
async fn follow_routes(client: ApiClient, mesh: Arc<Mesh>, shutdown: CancellationToken) {
    let mut retry = Retry::new("fetching the routes", Duration::from_millis(500), Duration::from_secs(10));
    loop {
        let after = mesh.version();
        let answer = tokio::select! {
            _ = shutdown.cancelled() => return,
            answer = client.poll::<RouteTable>("routes", after, Duration::from_secs(30)) => answer,
        };
        match answer {
            Ok(table) => {
                retry.succeeded();
                if table.version != 0 && table.version != after {
                    mesh.update(&table).await;
                }
            }
            Err(error) => {
                if !pause_after_failure(retry.failed(&error), &shutdown).await {
                    return;
                }
            }
        }
    }
}

/// Long-polls the assignment and publishes every new generation.
async fn follow_assignment(
    client: ApiClient,
    assignments: watch::Sender<Option<Assignment>>,
    shutdown: CancellationToken,
) {
    let mut after = 0;
    let mut retry = Retry::new("fetching the assignment", Duration::from_millis(500), Duration::from_secs(10));
    loop {
        let wait = if after == 0 && assignments.borrow().is_none() { Duration::ZERO } else { Duration::from_secs(30) };
        let answer = tokio::select! {
            _ = shutdown.cancelled() => return,
            answer = client.poll::<Assignment>("assignment", after, wait) => answer,
        };
        match answer {
            Ok(assignment) => {
                retry.succeeded();
                let first = assignments.borrow().is_none();
                if first || assignment.generation != after {
                    after = assignment.generation;
                    assignments.send_replace(Some(assignment));
                }
            }
            Err(error) => {
                if !pause_after_failure(retry.failed(&error), &shutdown).await {
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(server: &str, token: Option<&str>) -> AgentConfig {
        let mut config = AgentConfig::new(server, "n1", "127.0.0.1", Path::new("/nonexistent"));
        config.join_token = token.map(str::to_owned);
        config
    }

    #[test]
    fn a_pinning_token_trusts_only_its_ca_and_is_never_sent_in_the_clear_off_this_host() {
        let hash = "ab".repeat(32);
        let pinned = format!("K10{hash}::secret");
        let trust = trust_for(&config("https://10.0.0.1:7420", Some(&pinned)), None).unwrap();
        assert!(matches!(trust, Some(Trust::Pinned(h)) if h == hash));
        // A bare secret over https: the system's roots.
        assert!(matches!(trust_for(&config("https://10.0.0.1:7420", Some("secret")), None), Ok(Some(Trust::System))));
        // Plain HTTP: refused off this host with a pin, allowed on loopback (`berth up`).
        for server in ["http://10.0.0.1:7420", "http://berth.example:7420"] {
            let refused = trust_for(&config(server, Some(&pinned)), None);
            assert!(matches!(refused, Err(AgentError::PinOverHttp { .. })), "{server}");
        }
        for server in ["http://127.0.0.1:7420", "http://[::1]:7420", "http://localhost:7420"] {
            assert!(matches!(trust_for(&config(server, Some(&pinned)), None), Ok(None)), "{server}");
        }
        // After joining, the saved pin holds without the token.
        let saved = SavedCredential {
            server: "https://10.0.0.1:7420".into(),
            node: "n1".into(),
            credential: "c".into(),
            ca_hash: Some(hash.clone()),
        };
        let trust = trust_for(&config("https://10.0.0.1:7420", None), Some(&saved)).unwrap();
        assert!(matches!(trust, Some(Trust::Pinned(h)) if h == hash));
    }
}
