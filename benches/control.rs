//! The control plane, measured as a whole: a real `berth server` process following a real
//! repository, with nodes speaking the real agent protocol.
//!
//! - `scale`: 1,000 hollow nodes (the real agent code over an in-memory container runtime, as
//!   Kubernetes' kubemark runs the real kubelet over a fake one) and one commit of 1,000
//!   Deployments of 100 replicas: placements per second from the commit to 100,000 pods
//!   assigned, and to 100,000 pods started on the hollow nodes.
//! - `memory`: the server's resident memory following 1,000 workloads (one replica each, on
//!   20 hollow nodes), and after the scale run.
//! - `ready`: commit to the first new pod running and ready on the local Docker engine (image
//!   present), median of 11 commits, with a real `berth agent` process.
//!
//! - `ui`: the time to answer each web page and the status API with 1,000 workloads.
//! - `usage`: the server's CPU with 1,000 hollow nodes of 10 pods heartbeating every 2 s,
//!   without and with their pods' usage (sampled every 10 s) in the heartbeats.
//! - `logs`: log throughput through a real agent and server on the local engine: `berth logs`
//!   of a container that wrote 200,000 lines (median of 5), and `berth logs -f` of 100,000
//!   lines as a container writes them; lines a second, and the CPU the server and the agent
//!   spend per line.
//!
//! - `tls`: with 1,000 hollow nodes over plain HTTP and over HTTPS with node certificates: a
//!   node's report and assignment long-poll latency, a request on a new
//!   connection, and the server's CPU and memory.
//!
//! `cargo bench --bench control [scale|memory|ready|ui|usage|logs|tls]` (all by default). The hollow runtime
//! is a measuring instrument; no functional test uses it.

#[path = "../tests/it/images.rs"]
#[allow(dead_code)]
mod images;

#[allow(dead_code)]
#[path = "common/process.rs"]
mod process;
use process::{cpu_ticks, rss_mib};

use berth::nodes::netns::Check;
use berth::nodes::runtime::{ContainerInfo, ContainerRuntime, ContainerSpec, ContainerState, RuntimeError};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// An in-memory container engine: containers are records that run as soon as they start.
#[derive(Default)]
struct Hollow {
    containers: Mutex<HashMap<String, ContainerInfo>>,
    next: AtomicUsize,
    /// Shared by all hollow nodes: app containers started.
    started: Arc<AtomicUsize>,
}

impl Hollow {
    fn new(started: Arc<AtomicUsize>) -> Hollow {
        Hollow { started, ..Hollow::default() }
    }

    fn with<T>(&self, id: &str, f: impl FnOnce(&mut ContainerInfo) -> T) -> Result<T, RuntimeError> {
        let mut containers = self.containers.lock().unwrap();
        let info = containers.get_mut(id).ok_or_else(|| RuntimeError::NotFound { container: id.to_owned() })?;
        Ok(f(info))
    }
}

impl ContainerRuntime for Hollow {
    async fn ensure_image(&self, _image: &str) -> Result<bool, RuntimeError> {
        Ok(false)
    }

    async fn import_image(&self, _image: &str, _rootfs: Vec<u8>, _command: &[&str]) -> Result<(), RuntimeError> {
        Ok(())
    }

    async fn create(&self, spec: &ContainerSpec) -> Result<String, RuntimeError> {
        let id = format!("{:064x}", self.next.fetch_add(1, Ordering::Relaxed) + 1);
        let info = ContainerInfo {
            id: id.clone(),
            name: spec.name.clone(),
            labels: spec.labels.clone(),
            state: ContainerState::Created,
            exit_code: None,
            started_at: None,
            finished_at: None,
            error: None,
            oom_killed: false,
            published: Vec::new(),
            pid: None,
        };
        self.containers.lock().unwrap().insert(id.clone(), info);
        Ok(id)
    }

    async fn start(&self, id: &str) -> Result<(), RuntimeError> {
        let app = self.with(id, |info| {
            info.state = ContainerState::Running;
            info.started_at = Some("2026-11-22T00:00:00.000000000Z".to_owned());
            info.pid = Some(1);
            info.labels.get(berth::nodes::pods::labels::ROLE).is_some_and(|r| r == "container")
        })?;
        if app {
            self.started.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }

    async fn stop(&self, id: &str, _grace: Duration) -> Result<(), RuntimeError> {
        self.with(id, |info| {
            info.state = ContainerState::Exited;
            info.exit_code = Some(0);
        })
    }

    async fn remove(&self, id: &str) -> Result<(), RuntimeError> {
        self.containers.lock().unwrap().remove(id);
        Ok(())
    }

    async fn inspect(&self, id: &str) -> Result<ContainerInfo, RuntimeError> {
        self.with(id, |info| info.clone())
    }

    async fn list(&self, labels: &[(&str, &str)]) -> Result<Vec<ContainerInfo>, RuntimeError> {
        let containers = self.containers.lock().unwrap();
        Ok(containers
            .values()
            .filter(|c| labels.iter().all(|(k, v)| c.labels.get(*k).is_some_and(|x| x == v)))
            .cloned()
            .collect())
    }

    async fn ping(&self) -> Result<(), RuntimeError> {
        Ok(())
    }

    async fn image_user(&self, _image: &str) -> Result<Option<String>, RuntimeError> {
        Ok(None)
    }

    async fn volume_path(&self, name: &str) -> Result<std::path::PathBuf, RuntimeError> {
        Err(RuntimeError::NotFound { container: format!("volume {name}: hollow nodes keep no files") })
    }

    async fn create_volume(&self, _name: &str, _labels: &BTreeMap<String, String>) -> Result<(), RuntimeError> {
        Ok(())
    }

    async fn remove_volume(&self, _name: &str) -> Result<(), RuntimeError> {
        Ok(())
    }

    async fn list_volumes(&self, _labels: &[(&str, &str)]) -> Result<Vec<String>, RuntimeError> {
        Ok(Vec::new())
    }

    fn events(&self, _node: &str) -> impl futures_util::Stream<Item = ()> + Send + 'static {
        futures_util::stream::pending()
    }

    async fn check_in_pod(&self, _sandbox: &str, _check: &Check, _timeout: Duration) -> Result<(), String> {
        Ok(())
    }

    async fn connect_in_pod(
        &self,
        _sandbox: &str,
        port: u16,
        _timeout: Duration,
    ) -> Result<tokio::net::TcpStream, String> {
        Err(format!("a hollow node has no port {port}"))
    }

    async fn exec(&self, _id: &str, _command: &[String], _timeout: Duration) -> Result<i64, RuntimeError> {
        Ok(0)
    }

    async fn exec_output(
        &self,
        _id: &str,
        _command: &[String],
        _stdin: Option<&[u8]>,
        _timeout: Duration,
    ) -> Result<(i64, String), RuntimeError> {
        Ok((0, String::new()))
    }

    async fn exec_attached(
        &self,
        id: &str,
        _command: &[String],
        _tty: bool,
        _stdin: bool,
    ) -> Result<berth::nodes::runtime::AttachedExec, RuntimeError> {
        Err(RuntimeError::Engine { action: format!("exec in {id}"), reason: "a hollow node runs nothing".into() })
    }

    fn follow_logs(&self, _id: &str, _tail: Option<u64>, _since: Option<i64>) -> berth::nodes::runtime::OutputChunks {
        Box::pin(futures_util::stream::empty())
    }

    async fn resize_exec(&self, _exec_id: &str, _columns: u16, _rows: u16) -> Result<(), RuntimeError> {
        Ok(())
    }

    async fn exec_exit_code(&self, _exec_id: &str) -> Result<i64, RuntimeError> {
        Ok(0)
    }

    async fn logs(
        &self,
        id: &str,
        _tail: Option<u64>,
        _since: Option<i64>,
        _timestamps: bool,
    ) -> Result<String, RuntimeError> {
        self.with(id, |_| String::new())
    }

    /// Every hollow container uses a hundredth of a core and 8 MiB, so that usage is sampled,
    /// reported and kept by the server as for real ones.
    async fn usage(&self, id: &str) -> Option<berth::nodes::usage::Reading> {
        static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
        self.with(id, |_| ()).ok()?;
        let elapsed = START.get_or_init(std::time::Instant::now).elapsed().as_nanos();
        let cpu_ns = u64::try_from(elapsed / 100).unwrap_or(u64::MAX);
        Some(berth::nodes::usage::Reading { cpu_ns, memory_bytes: 8 << 20 })
    }
}

/// A server process, killed when dropped.
struct Server {
    child: Child,
    listen: String,
    db: std::path::PathBuf,
    /// Whether it speaks HTTPS (with its own CA) rather than plain HTTP.
    tls: bool,
}

impl Server {
    fn token(&self) -> String {
        std::fs::read_to_string(self.db.with_file_name("api-token")).unwrap_or_default().trim().to_owned()
    }

    fn url(&self) -> String {
        format!("{}://{}", if self.tls { "https" } else { "http" }, self.listen)
    }

    /// The join token: over TLS, `K10<hash of the CA>::bench`, once the server has made its CA.
    fn join_token(&self) -> String {
        if !self.tls {
            return "bench".into();
        }
        let ca = self.db.with_file_name(berth::tls::CA_FILE);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(certificates) = berth::tls::read_certificates(&ca) {
                return format!("K10{}::bench", berth::tls::fingerprint(&certificates[0]));
            }
            assert!(Instant::now() < deadline, "the server made no CA");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn start_server(repo: &Path, state: &Path) -> Server {
    start_server_with(repo, state, false)
}

/// A server over plain HTTP, or (`tls`) over HTTPS with its own CA.
fn start_server_with(repo: &Path, state: &Path, tls: bool) -> Server {
    let listen = format!("127.0.0.1:{}", free_port());
    let db = state.join("berth.db");
    let child = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["server", "--join-token", "bench", "--listen", &listen, "--node-grace-seconds", "60"])
        .args((!tls).then_some("--insecure-http"))
        .arg("--repo")
        .arg(repo)
        .arg("--db")
        .arg(&db)
        .env("RUST_LOG", "error")
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    Server { child, listen, db, tls }
}

fn git(repo: &Path, args: &[&str]) {
    let status = Command::new("git")
        .args(args)
        .current_dir(repo)
        .env("GIT_AUTHOR_NAME", "bench")
        .env("GIT_AUTHOR_EMAIL", "bench@example.test")
        .env("GIT_COMMITTER_NAME", "bench")
        .env("GIT_COMMITTER_EMAIL", "bench@example.test")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "git {args:?}");
}

fn commit_all(repo: &Path, message: &str) {
    git(repo, &["add", "-A"]);
    git(repo, &["commit", "-qm", message]);
}

fn new_repo() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    git(dir.path(), &["init", "-q", "-b", "main"]);
    std::fs::create_dir_all(dir.path().join("apps")).unwrap();
    std::fs::write(dir.path().join("apps/README.md"), "manifests\n").unwrap();
    commit_all(dir.path(), "empty");
    dir
}

/// `count` Deployments of `replicas` tiny pods each, 100 to a file; with `BENCH_SERVICES=1`
/// each has a Service too.
fn write_workloads(repo: &Path, count: usize, replicas: usize) {
    let with_services = std::env::var("BENCH_SERVICES").is_ok_and(|v| v == "1");
    for file in 0..count.div_ceil(100) {
        let mut text = String::new();
        for i in file * 100..((file + 1) * 100).min(count) {
            text.push_str(&format!(
                "---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: w{i}}}\nspec:\n  replicas: {replicas}\n  \
                 selector: {{matchLabels: {{app: w{i}}}}}\n  template:\n    metadata: {{labels: {{app: w{i}}}}}\n    spec:\n      \
                 containers:\n        - name: app\n          image: example.test/app:1.0\n          \
                 resources: {{requests: {{cpu: 5m, memory: 8Mi}}}}\n"
            ));
            if with_services {
                text.push_str(&format!(
                    "---\napiVersion: v1\nkind: Service\nmetadata: {{name: w{i}}}\nspec:\n  selector: {{app: w{i}}}\n  \
                     ports: [{{port: 80, targetPort: 8080}}]\n"
                ));
            }
        }
        std::fs::write(repo.join(format!("apps/w{file:03}.yaml")), text).unwrap();
    }
}

async fn count(db: &Path, sql: &str) -> i64 {
    let Ok(store) = sqlx::SqlitePool::connect(&format!("sqlite://{}?mode=ro", db.display())).await else { return 0 };
    let value: i64 = sqlx::query_scalar(sql).fetch_one(&store).await.unwrap_or(0);
    store.close().await;
    value
}

/// Starts `nodes` hollow agents against `server`; returns when all have joined.
async fn hollow_nodes(
    server: &Server,
    nodes: usize,
    state: &Path,
    started: &Arc<AtomicUsize>,
    shutdown: &tokio_util::sync::CancellationToken,
    tune: Tune,
) {
    let token = server.join_token();
    for i in 0..nodes {
        let mut config = berth::nodes::agent::AgentConfig::new(
            &server.url(),
            &format!("hollow-{i:04}"),
            "127.0.0.1",
            &state.join(format!("n{i}")),
        );
        config.join_token = Some(token.clone());
        config.heartbeat_interval = Duration::from_secs(10);
        config.resync_interval = Duration::from_secs(60);
        // Hollow pods have no network namespace to route in.
        config.routing = false;
        tune(&mut config);
        let runtime = Arc::new(Hollow::new(started.clone()));
        let stop = shutdown.clone();
        tokio::spawn(async move {
            if let Err(error) = berth::nodes::agent::run(config, runtime, stop).await {
                eprintln!("hollow node {i}: {error}");
            }
        });
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    while count(&server.db, "SELECT COUNT(*) FROM nodes").await < nodes as i64 {
        assert!(Instant::now() < deadline, "hollow nodes did not join");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A server following a new repository, `nodes` hollow nodes joined to it, and a commit of
/// `workloads` Deployments of `replicas` each; time starts at the commit.
struct HollowCluster {
    _repo: tempfile::TempDir,
    _state: tempfile::TempDir,
    server: Server,
    started: Arc<AtomicUsize>,
    shutdown: tokio_util::sync::CancellationToken,
    committed: Instant,
}

async fn hollow_cluster(nodes: usize, workloads: usize, replicas: usize) -> HollowCluster {
    hollow_cluster_tuned(nodes, workloads, replicas, |_| {}).await
}

/// A change to each hollow agent's configuration.
type Tune = fn(&mut berth::nodes::agent::AgentConfig);

/// `hollow_cluster` with each agent's configuration changed by `tune`.
async fn hollow_cluster_tuned(nodes: usize, workloads: usize, replicas: usize, tune: Tune) -> HollowCluster {
    hollow_cluster_over(nodes, workloads, replicas, tune, false).await
}

/// `hollow_cluster_tuned` over plain HTTP, or (`tls`) HTTPS with node certificates.
async fn hollow_cluster_over(nodes: usize, workloads: usize, replicas: usize, tune: Tune, tls: bool) -> HollowCluster {
    let repo = new_repo();
    let state = tempfile::tempdir_in("/dev/shm").or_else(|_| tempfile::tempdir()).unwrap();
    let server = start_server_with(repo.path(), state.path(), tls);
    let started = Arc::new(AtomicUsize::new(0));
    let shutdown = tokio_util::sync::CancellationToken::new();
    hollow_nodes(&server, nodes, state.path(), &started, &shutdown, tune).await;
    write_workloads(repo.path(), workloads, replicas);
    commit_all(repo.path(), &format!("{workloads} deployments of {replicas}"));
    HollowCluster { _repo: repo, _state: state, server, started, shutdown, committed: Instant::now() }
}

const ASSIGNED: &str = "SELECT COALESCE(SUM(json_array_length(pods)), 0) FROM assignments";

async fn scale() {
    let (nodes, workloads, replicas) = (1000, 1000, 100);
    let pods = workloads * replicas;
    let cluster = hollow_cluster(nodes, workloads, replicas).await;
    let (server, started, shutdown, start) = (&cluster.server, &cluster.started, &cluster.shutdown, cluster.committed);
    let mut assigned_at = None;
    let deadline = start + Duration::from_secs(600);
    loop {
        if assigned_at.is_none() && count(&server.db, ASSIGNED).await >= pods as i64 {
            assigned_at = Some(start.elapsed());
        }
        if assigned_at.is_some() && started.load(Ordering::Relaxed) >= pods {
            break;
        }
        assert!(Instant::now() < deadline, "scale run incomplete: {} started", started.load(Ordering::Relaxed));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let running_at = start.elapsed();
    let assigned_at = assigned_at.unwrap();
    println!("scale: {pods} pods of {workloads} Deployments over {nodes} hollow nodes");
    println!(
        "  commit -> all assigned: {:.2} s = {:.0} placements/s (goal >= 10,000)",
        assigned_at.as_secs_f64(),
        pods as f64 / assigned_at.as_secs_f64()
    );
    println!(
        "  commit -> all started on the nodes: {:.2} s = {:.0} pods/s",
        running_at.as_secs_f64(),
        pods as f64 / running_at.as_secs_f64()
    );
    println!("  server resident memory with {pods} pods: {:.1} MiB", rss_mib(server.child.id()));
    shutdown.cancel();
}

async fn memory() {
    let (nodes, workloads) = (20, 1000);
    let cluster = hollow_cluster(nodes, workloads, 1).await;
    let (server, started, shutdown) = (&cluster.server, &cluster.started, &cluster.shutdown);
    let deadline = Instant::now() + Duration::from_secs(300);
    while started.load(Ordering::Relaxed) < workloads {
        assert!(Instant::now() < deadline, "memory run incomplete");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Settle a few passes, then sample.
    let mut samples = Vec::new();
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        samples.push(rss_mib(server.child.id()));
    }
    samples.sort_by(f64::total_cmp);
    if let Some(seconds) = std::env::var("BENCH_HOLD").ok().and_then(|s| s.parse().ok()) {
        println!("memory: server pid {} held for {seconds} s", server.child.id());
        tokio::time::sleep(Duration::from_secs(seconds)).await;
    }
    println!(
        "memory: server with {workloads} workloads on {nodes} nodes: RSS median {:.1} MiB, max {:.1} MiB (goal <= 50 MiB)",
        samples[samples.len() / 2],
        samples[samples.len() - 1]
    );
    shutdown.cancel();
}

/// The server's CPU with 1,000 hollow nodes of 10 pods each heartbeating every 2 s, as agents
/// do by default: once with no pod usage in the heartbeats, once with each pod's usage sampled
/// every 10 s. Over 30 s, once all usage has arrived.
async fn usage_load() {
    let cases: [(&str, Tune); 2] = [
        ("no usage in heartbeats", |config| {
            config.heartbeat_interval = Duration::from_secs(2);
            config.usage_interval = Duration::from_secs(86_400);
        }),
        ("usage every 10 s", |config| {
            config.heartbeat_interval = Duration::from_secs(2);
            config.usage_interval = Duration::from_secs(10);
        }),
    ];
    let (nodes, workloads, replicas) = (1000, 100, 100);
    let mut cores = Vec::new();
    for (label, tune) in cases {
        let cluster = hollow_cluster_tuned(nodes, workloads, replicas, tune).await;
        let deadline = Instant::now() + Duration::from_secs(300);
        while cluster.started.load(Ordering::Relaxed) < workloads * replicas {
            assert!(Instant::now() < deadline, "usage run incomplete");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        // Two samples give every pod a rate; then the load is steady.
        tokio::time::sleep(Duration::from_secs(25)).await;
        let sampled = reqwest::get(format!("http://{}/api/v1/top/pods", cluster.server.listen))
            .await
            .unwrap()
            .json::<serde_json::Value>()
            .await
            .unwrap()
            .as_array()
            .map_or(0, Vec::len);
        let window = Duration::from_secs(30);
        let before = cpu_ticks(cluster.server.child.id());
        tokio::time::sleep(window).await;
        let used = (cpu_ticks(cluster.server.child.id()) - before) as f64 / 100.0 / window.as_secs_f64();
        println!(
            "usage: server CPU with {nodes} hollow nodes heartbeating every 2 s, {label}: {used:.3} cores \
             ({sampled} pods with usage; RSS {:.1} MiB)",
            rss_mib(cluster.server.child.id())
        );
        cores.push(used);
        cluster.shutdown.cancel();
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    println!("usage: the usage in heartbeats costs the server {:.3} cores", cores[1] - cores[0]);
}

/// A node of the bench's own, joined as an agent joins, to time the agent API's calls.
struct Probe {
    http: reqwest::Client,
    base: String,
    credential: String,
    ca_hash: Option<String>,
    identity: Arc<berth::tls::NodeIdentity>,
}

impl Probe {
    /// A client of the server, presenting `identity` over TLS; with `idle` 0, every request
    /// opens a new connection.
    fn client(&self, identity: Option<Arc<berth::tls::NodeIdentity>>, idle: usize) -> reqwest::Client {
        let builder = match &self.ca_hash {
            Some(hash) => berth::tls::http_client(&berth::tls::Trust::Pinned(hash.clone()), identity).unwrap(),
            None => reqwest::Client::builder(),
        };
        builder.pool_max_idle_per_host(idle).build().unwrap()
    }

    async fn join(server: &Server) -> Probe {
        let token = berth::tls::JoinToken::parse(&server.join_token()).unwrap();
        let mut probe = Probe {
            http: reqwest::Client::new(),
            base: format!("{}/api/v1/agent/nodes/probe", server.url()),
            credential: String::new(),
            ca_hash: token.ca_hash.clone(),
            identity: Arc::new(berth::tls::NodeIdentity::default()),
        };
        let (key, public) = berth::tls::NodeIdentity::new_key().unwrap();
        use base64::Engine as _;
        let request = serde_json::json!({
            "node": "probe", "address": "127.0.0.1", "labels": {}, "capacity": {"cpuMillis": 0, "memoryBytes": 0},
            "publicKey": server.tls.then(|| base64::engine::general_purpose::STANDARD.encode(&public)),
        });
        let joined: serde_json::Value = probe
            .client(None, 1)
            .post(format!("{}/api/v1/agent/join", server.url()))
            .bearer_auth(&token.secret)
            .json(&request)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if let Some(certificate) = joined["certificate"]["certificate"].as_str() {
            probe.identity.set(certificate, &key).unwrap();
        }
        probe.credential = joined["credential"].as_str().unwrap().to_owned();
        probe.http = probe.client(Some(probe.identity.clone()), 1);
        probe
    }

    /// The time of each of `count` calls of `call` on one kept-alive connection.
    async fn time(&self, count: usize, call: impl Fn(&Probe) -> reqwest::RequestBuilder) -> Vec<Duration> {
        let mut samples = Vec::with_capacity(count);
        for _ in 0..count {
            let started = Instant::now();
            let response = call(self).bearer_auth(&self.credential).send().await.unwrap();
            assert!(response.status().is_success(), "{}", response.status());
            response.bytes().await.unwrap();
            samples.push(started.elapsed());
        }
        samples.sort();
        samples
    }
}

fn quantile(sorted: &[Duration], q: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * q).round() as usize]
}

/// Issue 21: what TLS costs with 1,000 hollow nodes (10 pods each, heartbeats every 2 s):
/// the latency of a node's report and of an assignment long poll
/// answered at once (kept-alive connection, median and p99 of 300), the same long poll on a new
/// connection each time (the handshake), and the server's CPU and memory over 30 s. Once over
/// plain HTTP, once over HTTPS with node certificates.
async fn tls() {
    let (nodes, workloads, replicas) = (1000, 100, 100);
    for tls in [false, true] {
        let label = if tls { "https + node certificates" } else { "plain http" };
        let cluster = hollow_cluster_over(
            nodes,
            workloads,
            replicas,
            |config| config.heartbeat_interval = Duration::from_secs(2),
            tls,
        )
        .await;
        let deadline = Instant::now() + Duration::from_secs(300);
        while cluster.started.load(Ordering::Relaxed) < workloads * replicas {
            assert!(Instant::now() < deadline, "tls run incomplete");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
        let probe = Probe::join(&cluster.server).await;
        let report = serde_json::json!({"generation": 0, "pods": []});
        let reports = probe.time(300, |p| p.http.post(format!("{}/report", p.base)).json(&report)).await;
        // The probe is assigned nothing (generation 0): a long poll would wait it out, so this
        // asks for the assignment as an agent does at start, answered at once.
        let polls = probe.time(300, |p| p.http.get(format!("{}/assignment?after=0&waitSeconds=0", p.base))).await;
        let mut fresh = Vec::new();
        for _ in 0..50 {
            let client = probe.client(Some(probe.identity.clone()), 0);
            let started = Instant::now();
            let response = client
                .get(format!("{}/assignment?after=0&waitSeconds=0", probe.base))
                .bearer_auth(&probe.credential)
                .send()
                .await
                .unwrap();
            assert!(response.status().is_success(), "{}", response.status());
            response.bytes().await.unwrap();
            fresh.push(started.elapsed());
        }
        fresh.sort();
        let window = Duration::from_secs(30);
        let before = cpu_ticks(cluster.server.child.id());
        tokio::time::sleep(window).await;
        let used = (cpu_ticks(cluster.server.child.id()) - before) as f64 / 100.0 / window.as_secs_f64();
        println!("tls: {label}, {nodes} hollow nodes running {} pods, heartbeats every 2 s", workloads * replicas);
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        println!(
            "  report: median {:.2} ms, p99 {:.2} ms; assignment (the long-poll endpoint, answered at once): median {:.2} ms, p99 {:.2} ms",
            ms(quantile(&reports, 0.5)),
            ms(quantile(&reports, 0.99)),
            ms(quantile(&polls, 0.5)),
            ms(quantile(&polls, 0.99))
        );
        println!(
            "  a request on a new connection: median {:.2} ms, p99 {:.2} ms",
            ms(quantile(&fresh, 0.5)),
            ms(quantile(&fresh, 0.99))
        );
        println!("  server CPU {used:.3} cores, RSS {:.1} MiB", rss_mib(cluster.server.child.id()));
        cluster.shutdown.cancel();
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

/// Time to answer each page with 1,000 workloads, over loopback, median of 21.
async fn ui() {
    let cluster = hollow_cluster(20, 1000, 1).await;
    let deadline = Instant::now() + Duration::from_secs(300);
    while cluster.started.load(Ordering::Relaxed) < 1000 {
        assert!(Instant::now() < deadline, "ui run incomplete");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let http = reqwest::Client::new();
    let base = format!("http://{}", cluster.server.listen);
    let pages = [
        "/",
        "/workloads",
        "/workloads/deployment/default/w500",
        "/plan",
        "/syncs",
        "/nodes",
        "/services",
        "/api/v1/status",
    ];
    for page in pages {
        let mut times = Vec::new();
        for _ in 0..21 {
            let start = Instant::now();
            let response = http.get(format!("{base}{page}")).send().await.unwrap();
            assert!(response.status().is_success(), "{page}: {}", response.status());
            let body = response.bytes().await.unwrap();
            times.push((start.elapsed(), body.len()));
        }
        times.sort();
        let (median, bytes) = times[times.len() / 2];
        println!(
            "ui: {page} with 1,000 workloads: median {:.1} ms, {} KiB (goal < 50 ms)",
            median.as_secs_f64() * 1000.0,
            bytes / 1024
        );
    }
    cluster.shutdown.cancel();
}

/// A server following a new repository, with the test image on the engine.
async fn engine_server() -> (tempfile::TempDir, tempfile::TempDir, Server) {
    let docker = berth::nodes::docker::Docker::connect().await.expect("the Docker engine");
    images::import_busybox(&docker).await;
    let repo = new_repo();
    let state = tempfile::tempdir().unwrap();
    let server = start_server(repo.path(), state.path());
    (repo, state, server)
}

/// A `berth agent` process on the engine, on 127.0.0.1; stopped, and its pods removed, when
/// dropped.
struct RealAgent {
    child: std::process::Child,
    node: String,
    _state: tempfile::TempDir,
}

impl RealAgent {
    fn start(server: &Server, name: &str) -> RealAgent {
        let node = format!("bench-{name}-{}", std::process::id());
        let state = tempfile::tempdir().unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_berth"))
            .args(["agent", "--server", &format!("http://{}", server.listen), "--join-token", "bench", "--name", &node])
            .args(["--heartbeat-seconds", "1", "--address", "127.0.0.1"])
            .arg("--state-dir")
            .arg(state.path())
            .env("RUST_LOG", "error")
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        RealAgent { child, node, _state: state }
    }
}

impl Drop for RealAgent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let filter = format!("label=berth.dev/node={}", self.node);
        let _ = Command::new("sh")
            .args(["-c", &format!("docker ps -aq --filter {filter} | xargs -r docker rm -f")])
            .output();
    }
}

async fn ready() {
    let (repo, _state, server) = engine_server().await;
    let agent = RealAgent::start(&server, "ready");
    let client = berth::client::Client::new(&format!("http://{}", server.listen), None);
    let manifest = |version: usize| {
        format!(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: ready}}\nspec:\n  replicas: 1\n  \
             strategy: {{rollingUpdate: {{maxSurge: 1, maxUnavailable: 0}}}}\n  selector: {{matchLabels: {{app: ready}}}}\n  \
             template:\n    metadata: {{labels: {{app: ready}}}}\n    spec:\n      terminationGracePeriodSeconds: 0\n      \
             containers:\n        - name: app\n          image: {}\n          command: [sleep, \"3600\"]\n          \
             env: [{{name: VERSION, value: \"{version}\"}}]\n",
            images::busybox()
        )
    };
    let mut times = Vec::new();
    for version in 0..12 {
        std::fs::write(repo.path().join("apps/ready.yaml"), manifest(version)).unwrap();
        commit_all(repo.path(), &format!("version {version}"));
        let sha = String::from_utf8(
            Command::new("git").args(["rev-parse", "HEAD"]).current_dir(repo.path()).output().unwrap().stdout,
        )
        .unwrap()
        .trim()
        .to_owned();
        let start = Instant::now();
        let deadline = start + Duration::from_secs(120);
        loop {
            let pods = client.get("/api/v1/pods").await.unwrap_or_default();
            let ready = pods.as_array().into_iter().flatten().any(|p| p["revision"] == sha && p["ready"] == true);
            if ready {
                break;
            }
            assert!(Instant::now() < deadline, "version {version} never became ready");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // The first commit also starts the agent's first pod from nothing; leave it out.
        if version > 0 {
            times.push(start.elapsed());
        }
        // Let the rollout finish before the next commit.
        let done = Instant::now() + Duration::from_secs(60);
        while client
            .get("/api/v1/status")
            .await
            .map(|s| s["sync"] != "Synced" || s["health"] != "Healthy")
            .unwrap_or(true)
        {
            assert!(Instant::now() < done, "rollout {version} did not finish");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "ready: commit -> first new pod running and ready, {} commits: p50 {:.0} ms, min {:.0} ms, max {:.0} ms (goal p50 <= 2000 ms)",
        times.len(),
        ms(times[times.len() / 2]),
        ms(times[0]),
        ms(times[times.len() - 1])
    );
    drop(agent);
}

/// Time from a pod turning unready to no new connection reaching it: two pods behind a
/// NodePort on a real agent; one loses its readiness file while a client opens a connection
/// every 5 ms. Measured from the moment the API first shows the pod unready (the agent probed
/// and reported), and from the file's removal (adds up to one probe period, 1 s).
/// How many lines `berth logs ARGS` prints, and how long it took.
fn count_log_lines(server: &Server, args: &[&str]) -> (usize, Duration) {
    let start = Instant::now();
    let output = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["logs", "--server", &format!("http://{}", server.listen)])
        .args(args)
        .env("BERTH_TOKEN", server.token())
        .output()
        .unwrap();
    assert!(output.status.success(), "berth logs failed: {}", String::from_utf8_lossy(&output.stderr));
    (output.stdout.iter().filter(|b| **b == b'\n').count(), start.elapsed())
}

async fn logs() {
    let (repo, _state, server) = engine_server().await;
    let agent = RealAgent::start(&server, "logs");
    let client = berth::client::Client::new(&format!("http://{}", server.listen), None);
    let line = "a line of log text, forty-five bytes or so ..";
    let pod = |name: &str, script: &str| {
        format!(
            "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  terminationGracePeriodSeconds: 0\n  \
             containers:\n    - name: app\n      image: {}\n      command: [sh, -c, '{script}']\n      \
             readinessProbe: {{exec: {{command: [test, -f, /tmp/ready]}}, periodSeconds: 1}}\n",
            images::busybox()
        )
    };
    let written = 200_000;
    let streamed = 100_000;
    let text = pod("chatty", &format!("yes \"{line}\" | head -n {written}; touch /tmp/ready; exec sleep 3600"))
        + &pod(
            "stream",
            &format!(
                "touch /tmp/ready; while [ ! -f /tmp/go ]; do sleep 0.1; done; yes \"{line}\" | head -n {streamed}; exec sleep 3600"
            ),
        );
    std::fs::write(repo.path().join("apps/logs.yaml"), text).unwrap();
    commit_all(repo.path(), "chatty pods");
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let pods = client.get("/api/v1/pods").await.unwrap_or_default();
        let ready = pods.as_array().into_iter().flatten().filter(|p| p["ready"] == true).count();
        if ready == 2 {
            break;
        }
        assert!(Instant::now() < deadline, "the chatty pods never became ready: {pods}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (server_pid, agent_pid) = (server.child.id(), agent.child.id());
    let cpu = || cpu_ticks(server_pid) + cpu_ticks(agent_pid);

    // Read whole, five times.
    let mut runs = Vec::new();
    for _ in 0..5 {
        let before = cpu();
        let (lines, took) = count_log_lines(&server, &["chatty"]);
        runs.push((took, lines, cpu() - before));
    }
    runs.sort();
    let (took, lines, ticks) = runs[runs.len() / 2];
    let rate = lines as f64 / took.as_secs_f64();
    println!(
        "logs: berth logs of {lines} lines: median {:.2} s = {:.0} lines/s; server+agent CPU {:.2} s ({:.1} us a line); runs {:?}",
        took.as_secs_f64(),
        rate,
        ticks as f64 / 100.0,
        ticks as f64 * 10_000.0 / lines as f64,
        runs.iter().map(|r| format!("{:.2}s", r.0.as_secs_f64())).collect::<Vec<_>>()
    );

    // Followed as it is written.
    let mut follow = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["logs", "-f", "stream", "--server", &format!("http://{}", server.listen)])
        .env("BERTH_TOKEN", server.token())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = follow.stdout.take().unwrap();
    let (counted, count) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead as _;
        let mut seen = 0usize;
        for _ in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            seen += 1;
            if seen == 1 || seen % 1000 == 0 {
                let _ = counted.send((seen, Instant::now()));
            }
        }
    });
    let before = cpu();
    let go = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["exec", "stream", "--server", &format!("http://{}", server.listen), "--", "touch", "/tmp/go"])
        .env("BERTH_TOKEN", server.token())
        .output()
        .unwrap();
    assert!(go.status.success(), "berth exec failed: {}", String::from_utf8_lossy(&go.stderr));
    let started = Instant::now();
    let mut first = None;
    let mut last = (0, started);
    while last.0 < streamed {
        let Ok(next) = count.recv_timeout(Duration::from_secs(60)) else { break };
        first.get_or_insert(next.1);
        last = next;
    }
    let ticks = cpu() - before;
    let _ = follow.kill();
    let _ = follow.wait();
    let took = last.1.duration_since(started);
    println!(
        "logs: berth logs -f: {} of {streamed} lines in {:.2} s from the trigger = {:.0} lines/s (first line after {:.0} ms); server+agent CPU {:.2} s ({:.1} us a line)",
        last.0,
        took.as_secs_f64(),
        last.0 as f64 / took.as_secs_f64(),
        first.map_or(0.0, |f| f.duration_since(started).as_secs_f64() * 1000.0),
        ticks as f64 / 100.0,
        ticks as f64 * 10_000.0 / last.0.max(1) as f64,
    );
    drop(agent);
    drop(server);
    drop(repo);
}

async fn unready() {
    let (repo, _state, server) = engine_server().await;
    let agent = RealAgent::start(&server, "unready");
    let node = agent.node.clone();
    let client = berth::client::Client::new(&format!("http://{}", server.listen), None);
    let manifest = format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: edge}}\nspec:\n  replicas: 2\n  \
         selector: {{matchLabels: {{app: edge}}}}\n  template:\n    metadata: {{labels: {{app: edge}}}}\n    spec:\n      \
         terminationGracePeriodSeconds: 0\n      containers:\n        - name: app\n          image: {}\n          \
         command: [sh, -c, \"mkdir -p /www && cat /etc/hostname > /www/index.html && touch /www/ready && exec httpd -f -p 8080 -h /www\"]\n          \
         ports: [{{containerPort: 8080}}]\n          \
         readinessProbe: {{exec: {{command: [test, -f, /www/ready]}}, periodSeconds: 1, failureThreshold: 1}}\n\
         ---\napiVersion: v1\nkind: Service\nmetadata: {{name: edge}}\nspec:\n  type: NodePort\n  selector: {{app: edge}}\n  \
         ports: [{{port: 80, targetPort: 8080}}]\n",
        images::busybox()
    );
    std::fs::write(repo.path().join("apps/edge.yaml"), manifest).unwrap();
    commit_all(repo.path(), "edge");
    let deadline = Instant::now() + Duration::from_secs(120);
    let (node_port, pod) = loop {
        let services = client.get("/api/v1/services").await.unwrap_or_default();
        let edge = services.as_array().into_iter().flatten().find(|s| s["name"] == "edge").cloned();
        if let Some(edge) = edge.filter(|e| e["endpointsReady"] == 2) {
            let pods = client.get("/api/v1/pods").await.unwrap();
            let pod = pods.as_array().unwrap().iter().find(|p| p["workload"] == "edge").unwrap()["name"].clone();
            break (edge["ports"][0]["nodePort"].as_u64().unwrap() as u16, pod.as_str().unwrap().to_owned());
        }
        assert!(Instant::now() < deadline, "edge never became ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let container = berth::nodes::pods::engine_name(&[&node, "default", &pod, "app", "0"]);
    let http = reqwest::Client::builder().pool_max_idle_per_host(0).timeout(Duration::from_secs(2)).build().unwrap();
    let url = format!("http://127.0.0.1:{node_port}/");
    let mut from_api = Vec::new();
    let mut from_removal = Vec::new();
    for _ in 0..7 {
        let removed = Instant::now();
        let status = Command::new("docker").args(["exec", &container, "rm", "/www/ready"]).status().unwrap();
        assert!(status.success());
        let mut seen_unready = None;
        let mut last_answer = removed;
        let mut quiet_since = Instant::now();
        // Until the pod has answered nothing for 2 s after the API showed it unready.
        while seen_unready.is_none() || quiet_since.elapsed() < Duration::from_secs(2) {
            if seen_unready.is_none() {
                let pods = client.get("/api/v1/pods").await.unwrap();
                if pods.as_array().unwrap().iter().any(|p| p["name"] == pod.as_str() && p["ready"] == false) {
                    seen_unready = Some(Instant::now());
                }
            }
            let sent = Instant::now();
            if let Ok(response) = http.get(&url).send().await
                && response.text().await.unwrap_or_default().trim() == pod
            {
                last_answer = sent;
                quiet_since = Instant::now();
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let seen_unready = seen_unready.unwrap();
        from_api.push(last_answer.saturating_duration_since(seen_unready));
        from_removal.push(last_answer.saturating_duration_since(removed));
        // Ready again, and answering, before the next round.
        let status = Command::new("docker").args(["exec", &container, "touch", "/www/ready"]).status().unwrap();
        assert!(status.success());
        let back = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(response) = http.get(&url).send().await
                && response.text().await.unwrap_or_default().trim() == pod
            {
                break;
            }
            assert!(Instant::now() < back, "the pod never came back");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    from_api.sort();
    from_removal.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "unready: last new connection reaching the pod, after the API showed it unready: median {:.0} ms, max {:.0} ms; \
         after its readiness file went (includes the 1 s probe period): median {:.0} ms, max {:.0} ms; {} rounds (goal <= 1000 ms)",
        ms(from_api[from_api.len() / 2]),
        ms(from_api[from_api.len() - 1]),
        ms(from_removal[from_removal.len() / 2]),
        ms(from_removal[from_removal.len() - 1]),
        from_api.len()
    );
    drop(agent);
}

fn main() {
    let which: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    let wants = |name: &str| which.is_empty() || which.iter().any(|w| w == name);
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(async {
        if wants("memory") {
            memory().await;
        }
        if wants("ready") {
            ready().await;
        }
        if wants("ui") {
            ui().await;
        }
        if wants("unready") {
            unready().await;
        }
        if wants("scale") {
            scale().await;
        }
        if wants("usage") {
            usage_load().await;
        }
        if wants("logs") {
            logs().await;
        }
        if wants("tls") {
            tls().await;
        }
    });
}
