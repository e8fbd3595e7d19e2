//! The agent API: joining, heartbeats, assignments (long-polled) and reports.
//!
//! An agent joins once with the cluster's join token and gets a credential of its own node; the
//! server keeps only the credential's digest. Every later call names the node in its path and
//! carries that credential; a credential of another node, a forged one, or the join token opens
//! nothing here. Tokens are compared in constant time.
//!
//! Over TLS, a node also proves itself with its client certificate: it sends a public key when
//! it joins and gets a certificate signed by the cluster's CA, which the server pins by
//! fingerprint. Every call must come on a connection that presented that certificate (or the
//! one it replaced at its last renewal); removing the node forgets both, so they stop working
//! on the next request, long polls included.

use super::listen::Presented;
use super::{AppError, now};
use crate::lock;
use crate::nodes::protocol::{
    AgentAnswer, AgentRequest, Assignment, AssignmentQuery, CertificateRequest, ExecRequest, Heartbeat, JoinRequest,
    JoinResponse, LogRequest, NodeCertificate, PodAssignment, Report, RouteTable, ServiceRoute,
};
use crate::store::Store;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use subtle::ConstantTimeEq;
use tokio::sync::{Notify, watch};

/// The longest an assignment request waits for a change.
pub const MAX_WAIT: Duration = Duration::from_secs(60);

#[derive(Clone)]
pub struct AgentApi {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<Store>,
    /// The join token's secret (without the CA hash of `K10<hash>::`).
    join_token: String,
    /// The CA that certifies nodes, when the server speaks TLS: then every node call needs the
    /// node's certificate.
    authority: Option<Arc<crate::tls::Authority>>,
    /// How long a node certificate is valid.
    node_lifetime: Duration,
    /// Per node, the latest assignment generation, to wake long polls.
    generations: Mutex<HashMap<String, watch::Sender<u64>>>,
    /// The route table every node follows, versioned.
    routes: watch::Sender<Arc<RouteTable>>,
    /// Per node, the route table version it routes by (what it asked for newer than).
    routes_acked: Mutex<HashMap<String, u64>>,
    /// The nodes that take tunnelled service traffic, from their heartbeats, and whether that
    /// changed since the route table was last published: the next publish carries them.
    peers: Mutex<(std::collections::BTreeMap<String, crate::nodes::protocol::TunnelPeer>, bool)>,
    /// Woken by every report, so that a pod turning unready leaves the routes at once.
    reported: Notify,
    /// What the heartbeats say of resource usage.
    usage: super::usage::UsageBook,
    /// Per node, what the server asks of it and waits for (`ask`).
    requests: Mutex<HashMap<String, NodeRequests>>,
    next_request: std::sync::atomic::AtomicU64,
    /// Sessions waiting for their node to dial back, by request id: the node, and where its
    /// upgraded connection goes.
    sessions: Mutex<HashMap<u64, (String, tokio::sync::oneshot::Sender<hyper::upgrade::OnUpgrade>)>>,
}

/// The requests of one node: those it has not fetched yet, and the answers awaited.
#[derive(Default)]
struct NodeRequests {
    pending: Vec<AgentRequest>,
    waiting: HashMap<u64, tokio::sync::oneshot::Sender<AgentAnswer>>,
    /// Rings when a request is queued, for the node's long poll.
    queued: Arc<Notify>,
}

/// The largest answer a node may post: a whole container log (the engine keeps at most
/// 3 x 10 MiB of it) with room for its JSON escaping; axum's default of 2 MiB refused logs of
/// some 40,000 lines.
const ANSWER_BODY_LIMIT: usize = 96 << 20;

/// How long the server waits for a node to answer a request.
const ANSWER_LIMIT: Duration = Duration::from_secs(20);

impl AgentApi {
    pub fn new(store: Arc<Store>, join_token: &str) -> AgentApi {
        AgentApi::with_authority(store, join_token, None, crate::tls::NODE_LIFETIME)
    }

    /// An agent API that certifies nodes with `authority` (the server speaks TLS); each node
    /// certificate is valid for `node_lifetime`.
    pub fn with_authority(
        store: Arc<Store>,
        join_token: &str,
        authority: Option<Arc<crate::tls::Authority>>,
        node_lifetime: Duration,
    ) -> AgentApi {
        let secret = crate::tls::JoinToken::parse(join_token).map_or_else(|_| join_token.to_owned(), |t| t.secret);
        AgentApi {
            inner: Arc::new(Inner {
                store,
                join_token: secret,
                authority,
                node_lifetime,
                generations: Mutex::new(HashMap::new()),
                routes: watch::channel(Arc::new(RouteTable::default())).0,
                routes_acked: Mutex::new(HashMap::new()),
                peers: Mutex::new((std::collections::BTreeMap::new(), false)),
                reported: Notify::new(),
                usage: super::usage::UsageBook::default(),
                requests: Mutex::new(HashMap::new()),
                next_request: std::sync::atomic::AtomicU64::new(1),
                sessions: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// Resource usage as the nodes' heartbeats report it.
    pub fn usage(&self) -> &super::usage::UsageBook {
        &self.inner.usage
    }

    /// Asks `node` for a container's log over the node's own connection; the node's answer, or
    /// why there is none.
    pub async fn ask_logs(&self, node: &str, logs: LogRequest) -> Result<String, String> {
        let request = AgentRequest { logs: Some(logs), ..AgentRequest::default() };
        let answer = self.ask(node, request, ANSWER_LIMIT).await?;
        answer.output.ok_or_else(|| answer.error.unwrap_or_else(|| format!("node {node} gave no log")))
    }

    /// Asks `node` to run a command in a container; its exit code and output, or why it did not
    /// run.
    pub async fn ask_exec(&self, node: &str, exec: ExecRequest) -> Result<(i64, String), String> {
        let limit = Duration::from_secs(exec.timeout_seconds) + ANSWER_LIMIT;
        let answer = self.ask(node, AgentRequest { exec: Some(exec), ..AgentRequest::default() }, limit).await?;
        match (answer.exit_code, answer.output) {
            (Some(code), output) => Ok((code, output.unwrap_or_default())),
            _ => Err(answer.error.unwrap_or_else(|| format!("node {node} did not run the command"))),
        }
    }

    /// Asks `node` to remove the volume of a claim, with its data; whether it had one.
    pub async fn ask_remove_claim(&self, node: &str, namespace: &str, claim: &str) -> Result<bool, String> {
        let remove = crate::nodes::protocol::ClaimRequest { namespace: namespace.to_owned(), claim: claim.to_owned() };
        let request = AgentRequest { remove_claim: Some(remove), ..AgentRequest::default() };
        let answer = self.ask(node, request, ANSWER_LIMIT).await?;
        match (answer.output.as_deref(), answer.error) {
            (_, Some(error)) => Err(error),
            (Some("removed"), None) => Ok(true),
            _ => Ok(false),
        }
    }

    /// Asks `node` to open a session (a port-forward or an attached exec), and waits for the
    /// node to dial back: the node's connection, which starts with its answer line
    /// (`nodes::session`). `request` says which; its id is given here.
    pub async fn open_session(
        &self,
        node: &str,
        request: AgentRequest,
    ) -> Result<hyper_util::rt::TokioIo<hyper::upgrade::Upgraded>, String> {
        let id = self.inner.next_request.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (dialed, dialed_back) = tokio::sync::oneshot::channel();
        lock(&self.inner.sessions).insert(id, (node.to_owned(), dialed));
        {
            let mut requests = crate::lock(&self.inner.requests);
            let node_requests = requests.entry(node.to_owned()).or_default();
            node_requests.pending.push(AgentRequest { id, ..request });
            node_requests.queued.notify_one();
        }
        let result = tokio::time::timeout(ANSWER_LIMIT, dialed_back).await;
        lock(&self.inner.sessions).remove(&id);
        if let Some(node_requests) = crate::lock(&self.inner.requests).get_mut(node) {
            node_requests.pending.retain(|r| r.id != id);
        }
        let upgrade = match result {
            Ok(Ok(upgrade)) => upgrade,
            _ => {
                return Err(format!(
                    "node {node} did not open the session within {} s; it may be down (see `berth get nodes`) or run a berth agent without sessions",
                    ANSWER_LIMIT.as_secs()
                ));
            }
        };
        let upgraded = upgrade.await.map_err(|e| format!("node {node}'s session connection failed: {e}"))?;
        Ok(hyper_util::rt::TokioIo::new(upgraded))
    }

    /// Queues `request` for `node` and waits up to `limit` for the answer the node posts.
    async fn ask(&self, node: &str, mut request: AgentRequest, limit: Duration) -> Result<AgentAnswer, String> {
        let id = self.inner.next_request.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        request.id = id;
        let (answer, answered) = tokio::sync::oneshot::channel();
        {
            let mut requests = crate::lock(&self.inner.requests);
            let node_requests = requests.entry(node.to_owned()).or_default();
            node_requests.pending.push(request);
            node_requests.waiting.insert(id, answer);
            node_requests.queued.notify_one();
        }
        let result = tokio::time::timeout(limit, answered).await;
        let mut requests = crate::lock(&self.inner.requests);
        if let Some(node_requests) = requests.get_mut(node) {
            node_requests.pending.retain(|r| r.id != id);
            node_requests.waiting.remove(&id);
        }
        match result {
            Ok(Ok(answer)) => Ok(answer),
            _ => Err(format!(
                "node {node} did not answer within {} s; it may be down (see `berth get nodes`) or run a berth agent that cannot answer",
                limit.as_secs()
            )),
        }
    }

    pub fn router(&self) -> Router {
        Router::new()
            .route("/api/v1/agent/nodes/{node}/requests", get(requests))
            .route(
                "/api/v1/agent/nodes/{node}/requests/{id}",
                post(answer).layer(axum::extract::DefaultBodyLimit::max(ANSWER_BODY_LIMIT)),
            )
            .route("/api/v1/agent/nodes/{node}/sessions/{id}", get(session))
            .route("/api/v1/agent/join", post(join))
            .route("/api/v1/agent/nodes/{node}/heartbeat", post(heartbeat))
            .route("/api/v1/agent/nodes/{node}/assignment", get(assignment))
            .route("/api/v1/agent/nodes/{node}/report", post(report))
            .route("/api/v1/agent/nodes/{node}/routes", get(routes))
            .route("/api/v1/agent/nodes/{node}/certificate", post(certificate))
            .with_state(self.clone())
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.inner.store
    }

    fn generation_sender(&self, node: &str) -> watch::Sender<u64> {
        let mut generations = lock(&self.inner.generations);
        generations.entry(node.to_owned()).or_insert_with(|| watch::channel(0).0).clone()
    }

    /// Replaces what a node must run, and wakes its agent.
    pub async fn assign(&self, node: &str, pods: &[PodAssignment]) -> Result<u64, crate::store::StoreError> {
        let generation = self.inner.store.set_assignment(node, pods).await?;
        self.generation_sender(node).send_replace(generation);
        Ok(generation)
    }

    /// Replaces what several nodes must run in one transaction, then wakes their agents.
    pub async fn assign_many(
        &self,
        changes: Vec<(String, Vec<PodAssignment>)>,
    ) -> Result<Vec<(String, u64, Vec<PodAssignment>)>, crate::store::StoreError> {
        let written = self.inner.store.set_assignments(changes).await?;
        for (node, generation, _) in &written {
            self.generation_sender(node).send_replace(*generation);
        }
        Ok(written)
    }

    /// Publishes the route table when its services or the nodes' tunnels changed, and returns
    /// its version. Tunnels that changed between two passes go out together, once.
    pub fn publish_routes(&self, services: Vec<ServiceRoute>) -> u64 {
        let mut version = 0;
        self.inner.routes.send_if_modified(|table| {
            version = table.version;
            let peers = {
                let mut peers = lock(&self.inner.peers);
                let changed = std::mem::take(&mut peers.1);
                changed.then(|| peers.0.values().cloned().collect::<Vec<_>>())
            };
            if version != 0 && table.services == services && peers.is_none() {
                return false;
            }
            let peers = peers.unwrap_or_else(|| table.peers.clone());
            // Versions start from the clock, so an agent that followed an earlier server sees a
            // new table at once; they only grow while this server runs.
            let millis = u64::try_from(now()).unwrap_or(0) * 1000;
            version = if version == 0 { millis.max(1) } else { version + 1 };
            *table = Arc::new(RouteTable { version, services, peers });
            true
        });
        version
    }

    /// The route table as last published.
    pub fn routes(&self) -> Arc<RouteTable> {
        self.inner.routes.borrow().clone()
    }

    /// The version of the route table `node` routes by, as far as the server knows.
    pub fn routes_acked(&self, node: &str) -> u64 {
        lock(&self.inner.routes_acked).get(node).copied().unwrap_or(0)
    }

    /// Records that `node` routes by the table of `version` (it asked for tables after it).
    pub fn ack_routes(&self, node: &str, version: u64) {
        lock(&self.inner.routes_acked).insert(node.to_owned(), version);
    }

    /// Resolves when an agent has reported.
    pub async fn reported(&self) {
        self.inner.reported.notified().await;
    }

    /// The node named in the path, when the request carries its credential and, over TLS,
    /// comes on a connection that presented the node's certificate.
    async fn authorize(
        &self,
        headers: &HeaderMap,
        presented: &Presented,
        node: &str,
    ) -> Result<crate::store::NodeRecord, AppError> {
        let record = self.credential_holder(headers, node).await?;
        self.check_certificate(&record, presented)?;
        Ok(record)
    }

    /// Over TLS, whether the connection presented the node's certificate.
    fn check_certificate(&self, record: &crate::store::NodeRecord, presented: &Presented) -> Result<(), AppError> {
        let node = &record.name;
        if self.inner.authority.is_none() {
            return Ok(());
        }
        match &presented.0 {
            Some(fingerprint) if record.certificates.contains(fingerprint) => Ok(()),
            _ if record.certificates.is_empty() => Err(AppError::new(
                StatusCode::UNAUTHORIZED,
                format!("node {node} has no client certificate yet; an agent of this version asks for one at start"),
            )),
            Some(_) => Err(AppError::new(
                StatusCode::UNAUTHORIZED,
                format!("the client certificate is not node {node}'s (another node's, or one that was replaced)"),
            )),
            None => Err(AppError::new(
                StatusCode::UNAUTHORIZED,
                format!("node {node}'s calls need its client certificate; this connection presented none"),
            )),
        }
    }

    /// The node's record, when the request carries the node's credential.
    async fn credential_holder(&self, headers: &HeaderMap, node: &str) -> Result<crate::store::NodeRecord, AppError> {
        let presented = bearer(headers)?;
        let record = self.inner.store.node(node).await?;
        let digest = crate::manifest::hex_digest(presented.as_bytes());
        match record {
            Some(record) if bool::from(record.credential_digest.as_bytes().ct_eq(digest.as_bytes())) => Ok(record),
            _ => Err(AppError::new(StatusCode::UNAUTHORIZED, format!("the credential is not valid for node {node}"))),
        }
    }

    /// Signs a certificate for `node`'s key (valid for its `address` too) and pins it; None when
    /// the server has no CA.
    async fn certify(
        &self,
        node: &str,
        address: &str,
        public_key: Option<&str>,
    ) -> Result<Option<NodeCertificate>, AppError> {
        let Some(authority) = &self.inner.authority else {
            return Ok(None);
        };
        let public_key = public_key
            .ok_or_else(|| AppError::new(StatusCode::BAD_REQUEST, "a node joining over TLS sends `publicKey`"))?;
        use base64::Engine as _;
        let raw = base64::engine::general_purpose::STANDARD
            .decode(public_key)
            .ok()
            .filter(|raw| raw.len() == 65 && raw[0] == 4)
            .ok_or_else(|| {
                AppError::new(
                    StatusCode::BAD_REQUEST,
                    "`publicKey` is not a base64 P-256 point (65 bytes, uncompressed)",
                )
            })?;
        let issued = authority
            .certify_node(node, address.parse().ok(), &raw, self.inner.node_lifetime)
            .map_err(|e| AppError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
        if !self.inner.store.set_node_certificate(node, &issued.fingerprint, issued.expires).await? {
            return Err(AppError::new(StatusCode::NOT_FOUND, format!("node {node} does not exist (any more)")));
        }
        tracing::info!(%node, expires = issued.expires, "Certified the node's key.");
        Ok(Some(NodeCertificate { certificate: issued.pem, ca: authority.pem().to_owned(), expires: issued.expires }))
    }

    /// Records where `node` takes tunnelled traffic (or that it takes none); a change goes out
    /// with the next route table the control loop publishes.
    fn set_peer(&self, node: &str, peer: Option<crate::nodes::protocol::TunnelPeer>) {
        let mut peers = lock(&self.inner.peers);
        if peers.0.get(node) == peer.as_ref() {
            return;
        }
        match peer {
            Some(peer) => peers.0.insert(node.to_owned(), peer),
            None => peers.0.remove(node),
        };
        peers.1 = true;
    }

    /// The port where `node` takes tunnelled service traffic, as its heartbeats say.
    pub fn tunnel_port(&self, node: &str) -> Option<u16> {
        lock(&self.inner.peers).0.get(node).map(|peer| peer.port)
    }

    /// Forgets what this server holds in memory for a removed node, and wakes its long polls so
    /// they answer (refused) at once.
    pub fn forget(&self, node: &str) {
        self.set_peer(node, None);
        if let Some(generation) = lock(&self.inner.generations).remove(node) {
            generation.send_modify(|g| *g = u64::MAX);
        }
        lock(&self.inner.routes_acked).remove(node);
        if let Some(requests) = lock(&self.inner.requests).remove(node) {
            requests.queued.notify_waiters();
        }
    }
}

pub(crate) fn bearer(headers: &HeaderMap) -> Result<&str, AppError> {
    headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| AppError::new(StatusCode::UNAUTHORIZED, "missing `Authorization: Bearer ...`"))
}

async fn join(
    State(api): State<AgentApi>,
    headers: HeaderMap,
    Json(request): Json<JoinRequest>,
) -> Result<Json<JoinResponse>, AppError> {
    let token = bearer(&headers)?;
    if !bool::from(token.as_bytes().ct_eq(api.inner.join_token.as_bytes())) {
        return Err(AppError::new(StatusCode::UNAUTHORIZED, "the join token is not valid"));
    }
    if !crate::manifest::validate::is_dns_label(&request.node) {
        return Err(AppError::new(
            StatusCode::BAD_REQUEST,
            format!("`{}` is not a valid node name; use a DNS label", request.node),
        ));
    }
    let mut bytes = [0u8; 32];
    rand::fill(&mut bytes);
    let credential: String = hex::encode(bytes);
    let digest = crate::manifest::hex_digest(credential.as_bytes());
    if !api.inner.store.add_node(&request, &digest, now()).await? {
        return Err(AppError::new(
            StatusCode::CONFLICT,
            format!(
                "node {} has joined already with other credentials; give this agent another --name, or its original state folder",
                request.node
            ),
        ));
    }
    let certificate = match api.certify(&request.node, &request.address, request.public_key.as_deref()).await {
        Ok(certificate) => certificate,
        Err(error) => {
            // The name stays free for the agent's next try.
            let _ = api.inner.store.remove_node(&request.node).await;
            return Err(error);
        }
    };
    tracing::info!(node = %request.node, address = %request.address, "Node joined.");
    Ok(Json(JoinResponse { node: request.node, credential, certificate }))
}

async fn heartbeat(
    State(api): State<AgentApi>,
    Path(node): Path<String>,
    headers: HeaderMap,
    presented: Presented,
    Json(beat): Json<Heartbeat>,
) -> Result<StatusCode, AppError> {
    let record = api.authorize(&headers, &presented, &node).await?;
    api.inner.store.record_heartbeat(&node, &beat, now()).await?;
    let peer =
        beat.tunnel_port.filter(|_| !record.certificates.is_empty()).map(|port| crate::nodes::protocol::TunnelPeer {
            node: node.clone(),
            address: beat.address.clone(),
            port,
            certificates: record.certificates.clone(),
        });
    api.set_peer(&node, peer);
    if let Some(usage) = &beat.usage {
        api.inner.usage.record(&node, usage);
    }
    Ok(StatusCode::NO_CONTENT)
}

async fn assignment(
    State(api): State<AgentApi>,
    Path(node): Path<String>,
    headers: HeaderMap,
    presented: Presented,
    Query(query): Query<AssignmentQuery>,
) -> Result<Json<Assignment>, AppError> {
    api.authorize(&headers, &presented, &node).await?;
    let (generation, pods) = api.inner.store.assignment(&node).await?;
    if generation > query.after || query.wait_seconds == 0 {
        return Ok(Json(Assignment { generation, pods }));
    }
    let sender = api.generation_sender(&node);
    sender.send_if_modified(|current| {
        let newer = generation > *current;
        if newer {
            *current = generation;
        }
        newer
    });
    let mut receiver = sender.subscribe();
    let wait = Duration::from_secs(query.wait_seconds).min(MAX_WAIT);
    let _ = tokio::time::timeout(wait, receiver.wait_for(|g| *g > query.after)).await;
    // A node removed while it waited gets nothing more.
    api.authorize(&headers, &presented, &node).await?;
    let (generation, pods) = api.inner.store.assignment(&node).await?;
    Ok(Json(Assignment { generation, pods }))
}

async fn report(
    State(api): State<AgentApi>,
    Path(node): Path<String>,
    headers: HeaderMap,
    presented: Presented,
    Json(report): Json<Report>,
) -> Result<StatusCode, AppError> {
    api.authorize(&headers, &presented, &node).await?;
    let before = api.inner.store.reports(&node).await?;
    let now = now();
    api.inner.store.record_report(&node, report.generation, &report.pods, now).await?;
    api.inner.reported.notify_one();
    let events = super::events::from_reports(&node, &before, &report.pods);
    if let Err(error) = api.inner.store.add_events(&events, now).await {
        tracing::warn!(%node, %error, "Recording events failed; the report is kept.");
    }
    Ok(StatusCode::NO_CONTENT)
}

/// The route table, long-polled: answers once a table other than version `after` is published.
async fn routes(
    State(api): State<AgentApi>,
    Path(node): Path<String>,
    headers: HeaderMap,
    presented: Presented,
    Query(query): Query<AssignmentQuery>,
) -> Result<Json<RouteTable>, AppError> {
    api.authorize(&headers, &presented, &node).await?;
    api.ack_routes(&node, query.after);
    let mut receiver = api.inner.routes.subscribe();
    if query.wait_seconds > 0 {
        let wait = Duration::from_secs(query.wait_seconds).min(MAX_WAIT);
        let _ = tokio::time::timeout(wait, receiver.wait_for(|t| t.version != 0 && t.version != query.after)).await;
        api.authorize(&headers, &presented, &node).await?;
    }
    let table = receiver.borrow().clone();
    Ok(Json((*table).clone()))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RequestsQuery {
    #[serde(default)]
    wait_seconds: u64,
}

/// The node's long poll for requests: those queued for it, at once or when one comes.
async fn requests(
    State(api): State<AgentApi>,
    Path(node): Path<String>,
    headers: HeaderMap,
    presented: Presented,
    Query(query): Query<RequestsQuery>,
) -> Result<Json<Vec<AgentRequest>>, AppError> {
    api.authorize(&headers, &presented, &node).await?;
    let take = || {
        let mut requests = crate::lock(&api.inner.requests);
        let node_requests = requests.entry(node.clone()).or_default();
        (std::mem::take(&mut node_requests.pending), node_requests.queued.clone())
    };
    let (taken, queued) = take();
    if !taken.is_empty() || query.wait_seconds == 0 {
        return Ok(Json(taken));
    }
    let wait = Duration::from_secs(query.wait_seconds).min(MAX_WAIT);
    let _ = tokio::time::timeout(wait, queued.notified()).await;
    api.authorize(&headers, &presented, &node).await?;
    Ok(Json(take().0))
}

/// A node dialing back for a session the server asked it to open: upgraded, and handed to
/// whoever waits for it.
async fn session(
    State(api): State<AgentApi>,
    Path((node, id)): Path<(String, u64)>,
    presented: Presented,
    mut request: axum::extract::Request,
) -> Result<axum::response::Response, AppError> {
    api.authorize(request.headers(), &presented, &node).await?;
    let waiter = {
        let mut sessions = lock(&api.inner.sessions);
        match sessions.get(&id) {
            Some((owner, _)) if *owner == node => sessions.remove(&id).map(|(_, waiter)| waiter),
            _ => None,
        }
    };
    let Some(waiter) = waiter else {
        return Err(AppError::new(StatusCode::NOT_FOUND, format!("no session {id} waits for node {node}")));
    };
    let _ = waiter.send(hyper::upgrade::on(&mut request));
    Ok(switching_protocols())
}

/// A new client certificate for a new key: a renewal (on a connection with the current
/// certificate), or the first one of a node that joined before the server spoke TLS.
async fn certificate(
    State(api): State<AgentApi>,
    Path(node): Path<String>,
    headers: HeaderMap,
    presented: Presented,
    Json(request): Json<CertificateRequest>,
) -> Result<Json<NodeCertificate>, AppError> {
    let record = api.credential_holder(&headers, &node).await?;
    if !record.certificates.is_empty() {
        api.check_certificate(&record, &presented)?;
    }
    match api.certify(&node, &record.address, Some(&request.public_key)).await? {
        Some(certificate) => Ok(Json(certificate)),
        None => Err(AppError::new(
            StatusCode::NOT_FOUND,
            "this server speaks plain HTTP (--insecure-http) and certifies no node",
        )),
    }
}

/// The answer that turns a request into a session's connection.
pub(crate) fn switching_protocols() -> axum::response::Response {
    axum::response::Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(axum::http::header::CONNECTION, "upgrade")
        .header(axum::http::header::UPGRADE, crate::nodes::session::PROTOCOL)
        .body(axum::body::Body::empty())
        .expect("a fixed response")
}

/// A node's answer to one of its requests.
async fn answer(
    State(api): State<AgentApi>,
    Path((node, id)): Path<(String, u64)>,
    headers: HeaderMap,
    presented: Presented,
    Json(answer): Json<AgentAnswer>,
) -> Result<StatusCode, AppError> {
    api.authorize(&headers, &presented, &node).await?;
    let waiter = crate::lock(&api.inner.requests).get_mut(&node).and_then(|r| r.waiting.remove(&id));
    if let Some(waiter) = waiter {
        let _ = waiter.send(answer);
    }
    Ok(StatusCode::NO_CONTENT)
}

impl crate::apply::controller::Nodes for AgentApi {
    async fn assign_many(
        &self,
        changes: Vec<(String, Vec<PodAssignment>)>,
    ) -> Result<Vec<(String, u64, Vec<PodAssignment>)>, crate::store::StoreError> {
        AgentApi::assign_many(self, changes).await
    }

    fn publish_routes(&self, services: Vec<ServiceRoute>) -> u64 {
        AgentApi::publish_routes(self, services)
    }

    fn routes(&self) -> Arc<RouteTable> {
        AgentApi::routes(self)
    }

    fn routes_acked(&self, node: &str) -> u64 {
        AgentApi::routes_acked(self, node)
    }

    fn pod_usage(&self, namespace: &str, pod: &str, window: i64, now: i64) -> Option<(u64, u64)> {
        self.inner.usage.average(namespace, pod, window, now)
    }

    fn remove_claim(
        &self,
        node: &str,
        namespace: &str,
        claim: &str,
    ) -> impl std::future::Future<Output = Result<bool, String>> + Send + 'static {
        let api = self.clone();
        let (node, namespace, claim) = (node.to_owned(), namespace.to_owned(), claim.to_owned());
        async move { api.ask_remove_claim(&node, &namespace, &claim).await }
    }
}
