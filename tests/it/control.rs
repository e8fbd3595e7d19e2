//! The control plane as users run it: a `berth server` process following a real repository,
//! `berth agent` processes as nodes on this machine's engine (each on its own 127.0.0.x), and
//! the CLI and JSON API against them. Rollbacks (automatic, pinned and by `git revert`), sync
//! approval, prune safety, webhooks and a server killed in the middle of a rollout.

use crate::agent::{TestNode, docker, wait_for};
use crate::server::{Process, free_port, terminate};
use crate::support::{TestRepo, berth};
use berth::client::Client;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

const JOIN_TOKEN: &str = "control-test";
const LIMIT: Duration = Duration::from_secs(90);

/// A server and its agents, stopped (and their containers removed) when dropped.
pub(crate) struct Cluster {
    pub(crate) listen: String,
    db: tempfile::TempDir,
    repo_arg: String,
    server_args: Vec<String>,
    server: Option<Process>,
    /// Node `i` listens on 127.0.`subnet`.`i + 2`.
    subnet: u8,
    agents: Vec<Process>,
    /// More arguments for every agent, with `{address}` standing for the node's address.
    agent_args: Vec<String>,
    pub(crate) nodes: Vec<TestNode>,
    pub(crate) client: Client,
    /// Where the server's and agents' logs go, at debug level, for a test that reads them.
    logs: Option<PathBuf>,
}

impl Cluster {
    pub(crate) async fn start(test: &str, repo: &str, nodes: usize, server_args: &[&str]) -> Cluster {
        Self::start_on(test, repo, nodes, server_args, 0).await
    }

    /// Node `i` listens on 127.0.`subnet`.`i + 2`: tests that run at the same time and listen
    /// on node ports use subnets of their own.
    pub(crate) async fn start_on(test: &str, repo: &str, nodes: usize, server_args: &[&str], subnet: u8) -> Cluster {
        Self::start_with_agents(test, repo, nodes, server_args, subnet, &[]).await
    }

    /// As `start_on`, with more arguments for every agent (`{address}` is the node's address).
    pub(crate) async fn start_with_agents(
        test: &str,
        repo: &str,
        nodes: usize,
        server_args: &[&str],
        subnet: u8,
        agent_args: &[&str],
    ) -> Cluster {
        Self::start_logged(test, repo, nodes, server_args, subnet, agent_args, None).await
    }

    /// As `start_with_agents`, with every process's log at debug level in files in `logs`.
    pub(crate) async fn start_logged(
        test: &str,
        repo: &str,
        nodes: usize,
        server_args: &[&str],
        subnet: u8,
        agent_args: &[&str],
        logs: Option<PathBuf>,
    ) -> Cluster {
        docker().await;
        let listen = format!("127.0.0.1:{}", free_port());
        let mut cluster = Cluster {
            client: Client::new(&format!("http://{listen}"), None),
            listen,
            db: tempfile::tempdir().unwrap(),
            repo_arg: repo.to_owned(),
            server_args: server_args.iter().map(|s| (*s).to_owned()).collect(),
            server: None,
            agent_args: agent_args.iter().map(|s| (*s).to_owned()).collect(),
            subnet,
            agents: Vec::new(),
            nodes: (0..nodes).map(|i| TestNode::new(&format!("{test}{i}"))).collect(),
            logs,
        };
        cluster.start_server();
        if cluster.tls() {
            let ca = cluster.ca_file();
            wait_for("the server to write its CA", LIMIT, || async { berth::tls::read_certificates(&ca).is_ok() })
                .await;
        }
        for i in 0..nodes {
            let agent = cluster.agent(i);
            cluster.agents.push(agent);
        }
        let token_file = cluster.db.path().join("api-token");
        wait_for("the server to write its API token", LIMIT, || async { token_file.exists() }).await;
        cluster.client = cluster.client_with(Some(cluster.token()));
        // The token is written before the listener is bound.
        let healthz = format!("{}/healthz", cluster.url());
        let http = cluster.http();
        wait_for("the server to answer", LIMIT, || async { http.get(&healthz).send().await.is_ok() }).await;
        cluster
    }

    pub(crate) fn start_server(&mut self) {
        let server = Command::new(env!("CARGO_BIN_EXE_berth"))
            .args(["server", "--join-token", JOIN_TOKEN, "--listen", &self.listen, "--node-grace-seconds", "5"])
            .args(["--repo", &self.repo_arg])
            .arg("--db")
            .arg(self.db.path().join("berth.db"))
            .args(&self.server_args)
            .env("RUST_LOG", self.log_level())
            .stderr(self.log_to("server"))
            .spawn()
            .unwrap();
        self.server = Some(Process(server));
    }

    /// Whether the server speaks HTTPS: unless the test asked for `--insecure-http`.
    pub(crate) fn tls(&self) -> bool {
        !self.server_args.iter().any(|a| a == "--insecure-http")
    }

    /// The server's base URL.
    pub(crate) fn url(&self) -> String {
        format!("{}://{}", if self.tls() { "https" } else { "http" }, self.listen)
    }

    /// The CA certificate the server made in its state folder.
    pub(crate) fn ca_file(&self) -> PathBuf {
        self.db.path().join(berth::tls::CA_FILE)
    }

    /// The join token agents use: over TLS, in k3s' shape with the hash of the server's CA.
    pub(crate) fn join_token(&self) -> String {
        if !self.tls() {
            return JOIN_TOKEN.to_owned();
        }
        let ca = berth::tls::read_certificates(&self.ca_file()).unwrap();
        format!("K10{}::{JOIN_TOKEN}", berth::tls::fingerprint(&ca[0]))
    }

    /// An HTTP client that trusts the server's CA.
    pub(crate) fn http(&self) -> reqwest::Client {
        self.http_builder().build().unwrap()
    }

    pub(crate) fn http_builder(&self) -> reqwest::ClientBuilder {
        if !self.tls() {
            return reqwest::Client::builder();
        }
        let roots = berth::tls::read_certificates(&self.ca_file()).unwrap();
        berth::tls::http_client(&berth::tls::Trust::Roots(roots), None).unwrap()
    }

    /// An API client of this server with `token`.
    pub(crate) fn client_with(&self, token: Option<String>) -> Client {
        let trust =
            self.tls().then(|| berth::tls::Trust::Roots(berth::tls::read_certificates(&self.ca_file()).unwrap()));
        Client::connect(berth::client::Reach { server: self.url(), token, trust, ca_source: None }).unwrap()
    }

    /// The CLI with this server's URL and CA.
    pub(crate) fn command(&self) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_berth"));
        command.env("BERTH_SERVER", self.url()).env("BERTH_CA_FILE", self.ca_file());
        command.env("BERTH_CONFIG", self.db.path().join("no-login.json"));
        command
    }

    /// The status and text of a GET of `path` on the server.
    pub(crate) async fn get_text(&self, path: &str, token: Option<&str>) -> (u16, String) {
        get_text_with(&self.http(), &format!("{}{path}", self.url()), token).await
    }

    /// `kill -9`: no chance to finish anything.
    pub(crate) fn kill_server(&mut self) {
        if let Some(mut server) = self.server.take() {
            server.0.kill().unwrap();
            server.0.wait().unwrap();
        }
    }

    /// Starts node `i`'s agent: it joins, or comes back with its saved credential.
    fn agent(&self, i: usize) -> Process {
        let node = &self.nodes[i];
        let address = format!("127.0.{}.{}", self.subnet, i + 2);
        let agent = Command::new(env!("CARGO_BIN_EXE_berth"))
            .args(["agent", "--server", &self.url(), "--join-token", &self.join_token()])
            .args(["--name", &node.name, "--address", &address])
            .args(self.agent_args.iter().map(|a| a.replace("{address}", &address)))
            .args(["--heartbeat-seconds", "1", "--restart-backoff-ms", "300"])
            .arg("--state-dir")
            .arg(node.state.path())
            .env("RUST_LOG", self.log_level())
            .stderr(self.log_to(&node.name))
            .spawn()
            .unwrap();
        Process(agent)
    }

    /// `kill -9` node `i`'s agent and start it again; its pods run on meanwhile.
    pub(crate) fn restart_agent(&mut self, i: usize) {
        self.kill_agent(i);
        self.agents[i] = self.agent(i);
    }

    /// Stops node `i`'s agent for good (its pods keep running): the node goes NotReady.
    pub(crate) fn kill_agent(&mut self, i: usize) {
        let agent = &mut self.agents[i].0;
        agent.kill().unwrap();
        agent.wait().unwrap();
    }

    fn log_to(&self, name: &str) -> Stdio {
        match &self.logs {
            Some(dir) => Stdio::from(std::fs::File::create(dir.join(format!("{name}.log"))).unwrap()),
            None => log_to(name),
        }
    }

    fn log_level(&self) -> String {
        if self.logs.is_some() { "debug".into() } else { log_level() }
    }

    pub(crate) fn token(&self) -> String {
        std::fs::read_to_string(self.db.path().join("api-token")).unwrap().trim().to_owned()
    }

    pub(crate) fn token_file(&self) -> PathBuf {
        self.db.path().join("api-token")
    }

    pub(crate) async fn get(&self, path: &str) -> Value {
        self.client.get(path).await.unwrap_or_else(|e| panic!("GET {path}: {e}"))
    }

    /// Waits until the status answers and `condition` holds of it; returns that status.
    pub(crate) async fn wait_status(&self, what: &str, condition: impl Fn(&Value) -> bool) -> Value {
        let mut last = Value::Null;
        let deadline = std::time::Instant::now() + LIMIT;
        loop {
            if let Ok(status) = self.client.get("/api/v1/status").await {
                if condition(&status) {
                    return status;
                }
                last = status;
            }
            assert!(std::time::Instant::now() < deadline, "timed out waiting for {what}; last status: {last:#}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Runs the CLI against this server from `dir`, with no token unless `token` is set.
    pub(crate) fn cli(&self, dir: &Path, args: &[&str], token: bool) -> (i32, String, String) {
        self.cli_with_input(dir, args, token, None)
    }

    /// `cli` with `input` on the command's standard input; `--server` goes right after the
    /// subcommand, so that arguments after `--` stay the user's.
    pub(crate) fn cli_with_input(
        &self,
        dir: &Path,
        args: &[&str],
        token: bool,
        input: Option<&str>,
    ) -> (i32, String, String) {
        use std::io::Write as _;
        let mut command = self.command();
        // `token create`, `node remove`: the subcommand has an action of its own.
        let split = if matches!(args.first(), Some(&"token" | &"node")) { 2 } else { 1 };
        let (first, rest) = args.split_at(split.min(args.len()));
        command.args(first).args(["--server", &self.url()]).args(rest).current_dir(dir);
        command.env_remove("BERTH_TOKEN").env("NO_COLOR", "1");
        if token {
            command.env("BERTH_TOKEN", self.token());
        }
        command.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = command.spawn().unwrap();
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(input.unwrap_or_default().as_bytes()).unwrap();
        drop(stdin);
        let output = child.wait_with_output().unwrap();
        (
            output.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    }
}

/// With `BERTH_TEST_LOGS=DIR`, the processes' logs go to files there, at `RUST_LOG` level.
fn log_to(name: &str) -> Stdio {
    match std::env::var_os("BERTH_TEST_LOGS") {
        Some(dir) => {
            std::fs::create_dir_all(&dir).unwrap();
            let path = Path::new(&dir).join(format!("{name}-{}.log", std::process::id()));
            Stdio::from(std::fs::OpenOptions::new().create(true).append(true).open(path).unwrap())
        }
        None => Stdio::null(),
    }
}

fn log_level() -> String {
    std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into())
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for agent in &self.agents {
            terminate(&agent.0);
        }
        if let Some(server) = &self.server {
            terminate(&server.0);
        }
    }
}

pub(crate) fn app(replicas: u32, version: &str) -> String {
    crate::images::deployment("app", None, replicas, version, Some((1, 0)))
}

/// A version whose container exits at once, every time.
fn crashing_app(replicas: u32) -> String {
    app(replicas, "bad").replace("echo bad > /tmp/version; exec sleep 3600", "echo crashing; exit 3")
}

fn workload<'a>(status: &'a Value, name: &str) -> Option<&'a Value> {
    status["workloads"].as_array()?.iter().find(|w| w["name"] == name)
}

/// Whether a workload is `state`: "Synced" means Synced and Healthy; any other word is either
/// axis's.
fn health_is(status: &Value, name: &str, state: &str) -> bool {
    workload(status, name).is_some_and(|w| match state {
        "Synced" => w["sync"] == "Synced" && w["health"] == "Healthy",
        _ => w["sync"] == state || w["health"] == state,
    })
}

/// Synced and Healthy: the nodes run the applied commit and it is available.
pub(crate) fn synced(status: &Value) -> bool {
    status["sync"] == "Synced" && status["health"] == "Healthy"
}

/// The revisions (commit shas) of the ready pods of `app`.
async fn ready_revisions(cluster: &Cluster) -> Vec<String> {
    let pods = cluster.get("/api/v1/pods").await;
    let mut revisions: Vec<String> = pods
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["workload"] == "app" && p["ready"] == true)
        .map(|p| p["revision"].as_str().unwrap().to_owned())
        .collect();
    revisions.sort();
    revisions
}

pub(crate) fn git(repo: &Path, args: &[&str]) {
    let status = Command::new("git")
        .args(args)
        .current_dir(repo)
        .env("GIT_AUTHOR_NAME", "Grace Hopper")
        .env("GIT_AUTHOR_EMAIL", "grace@example.test")
        .env("GIT_COMMITTER_NAME", "Grace Hopper")
        .env("GIT_COMMITTER_EMAIL", "grace@example.test")
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "git {args:?} failed");
}

pub(crate) fn head(repo: &TestRepo) -> String {
    repo.repo.head().unwrap().peel_to_commit().unwrap().id().to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_crashing_rollout_rolls_back_by_itself_and_git_revert_restores() {
    let mut repo = TestRepo::new();
    repo.write("app.yaml", &app(2, "v1"));
    let v1 = repo.commit("v1");
    let cluster = Cluster::start("crash", repo.path().to_str().unwrap(), 2, &[]).await;
    cluster.wait_status("v1 to be synced", |s| synced(s) && s["applied"] == v1).await;

    repo.write("app.yaml", &crashing_app(2));
    let bad = repo.commit("v2 that crashes");
    let status = cluster
        .wait_status("the crashing rollout to fail", |s| health_is(s, "app", "Degraded") && s["health"] == "Degraded")
        .await;
    let reason = workload(&status, "app").unwrap()["reason"].as_str().unwrap().to_owned();
    assert!(reason.contains(&format!("rollout of {} failed", &bad[..7])), "{reason}");
    // Issue 11, defect 4: the crash is named, not the readiness probe that failed before it.
    assert!(reason.contains("crash-loop") && reason.contains("exited with code 3"), "{reason}");
    // Issue 19: what the container wrote last is in the reason.
    assert!(reason.contains("exited with code 3: crashing ("), "{reason}");
    assert!(!reason.contains("probe"), "{reason}");
    assert!(reason.contains(&format!("rolled back to {} \"v1\"", &v1[..7])), "{reason}");
    // Issue 12: the plan of the head against what runs says the workload is held, and why.
    let live = cluster.get("/api/v1/plan?rev=HEAD").await;
    let held = &live["plan"]["held"][0];
    assert_eq!((&held["name"], &held["commit"]), (&json!("app"), &json!(v1)), "{live:#}");
    assert!(held["reason"].as_str().unwrap().contains(&format!("failed at commit {}", &bad[..7])), "{live:#}");
    assert!(live["planText"].as_str().unwrap().contains("= held Deployment default/app"), "{live:#}");
    assert!(live["plan"]["planDigest"].as_str().is_some_and(|d| d.len() == 64), "{live:#}");
    // Back on v1: both replicas ready, the crashing surge pod gone.
    wait_for("v1 pods only", LIMIT, || async {
        let pods = cluster.get("/api/v1/pods").await;
        let app_pods: Vec<&Value> = pods.as_array().unwrap().iter().filter(|p| p["workload"] == "app").collect();
        app_pods.len() == 2 && app_pods.iter().all(|p| p["revision"] == v1 && p["ready"] == true)
    })
    .await;

    // History says what happened; the sync record of the bad commit is degraded.
    let history = cluster.get("/api/v1/workloads/deployment/default/app/history").await;
    let outcomes: Vec<(&str, &str)> = history
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["commit"]["sha"].as_str().unwrap(), r["outcome"].as_str().unwrap()))
        .collect();
    assert_eq!(outcomes, vec![(bad.as_str(), "failed"), (v1.as_str(), "healthy")]);
    let (code, table, _) = cluster.cli(repo.path(), &["history", "deployment/app"], false);
    assert_eq!(code, 0);
    assert!(table.starts_with("COMMIT") && table.contains("failed") && table.contains("Ada Lovelace"), "{table}");
    let sync = cluster.get(&format!("/api/v1/syncs/{bad}")).await;
    assert_eq!(sync["outcome"], "degraded", "{sync:#}");

    // A commit that leaves the failed spec as it is does not retry it.
    repo.write("other.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: other}\ndata: {a: b}\n");
    let unrelated = repo.commit("an unrelated change");
    let seen = cluster.wait_status("the unrelated commit", |s| s["head"]["sha"] == unrelated).await;
    cluster
        .wait_status("two more passes", |s| s["updatedAt"].as_i64() > seen["updatedAt"].as_i64().map(|t| t + 1))
        .await;
    assert_eq!(ready_revisions(&cluster).await, vec![v1.clone(), v1.clone()]);
    assert!(health_is(&cluster.get("/api/v1/status").await, "app", "Degraded"));

    // git revert: the plan names the commit whose spec comes back, and the workload is healthy.
    git(repo.path(), &["revert", "--no-edit", &bad]);
    let revert = head(&repo);
    let (code, plan, _) = crate::support::berth(repo.path(), &["plan"]);
    assert_eq!(code, 2, "{plan}");
    assert!(plan.contains(&format!("restores the spec of commit {} \"v1\"", &v1[..7])), "{plan}");
    cluster
        .wait_status("the revert to be synced", |s| {
            synced(s) && s["applied"] == revert && health_is(s, "app", "Synced")
        })
        .await;
    // Against what runs (v1 since the rollback) the revert changes nothing.
    let sync = cluster.get(&format!("/api/v1/syncs/{revert}")).await;
    let text = sync["planText"].as_str().unwrap();
    assert!(text.contains("0 to update, 0 to delete"), "{text}");
    // The same template as v1: the running pods stay, nothing restarts.
    assert_eq!(ready_revisions(&cluster).await, vec![v1.clone(), v1]);
}

#[tokio::test(flavor = "multi_thread")]
async fn rollback_pins_a_workload_until_the_branch_moves() {
    let mut repo = TestRepo::new();
    repo.write("app.yaml", &app(1, "v1"));
    let v1 = repo.commit("v1");
    repo.write("app.yaml", &app(1, "v2"));
    let cluster = Cluster::start("pin", repo.path().to_str().unwrap(), 1, &[]).await;
    cluster.wait_status("v1", |s| synced(s) && s["applied"] == v1).await;
    let v2 = repo.commit("v2");
    cluster.wait_status("v2", |s| synced(s) && s["applied"] == v2).await;

    // The read-only views, as tables.
    let here = repo.path();
    let (code, status, _) = cluster.cli(here, &["status"], false);
    assert_eq!(code, 0);
    assert!(
        status.contains("Sync:       Synced")
            && status.contains("Health:     Healthy")
            && status.contains("Pods:       1/1 ready"),
        "{status}"
    );
    let (_, nodes, _) = cluster.cli(here, &["get", "nodes"], false);
    assert!(nodes.starts_with("NAME") && nodes.contains(&cluster.nodes[0].name) && nodes.contains("Ready"), "{nodes}");
    let (_, pods, _) = cluster.cli(here, &["get", "pods", "-n", "default"], false);
    assert!(pods.lines().nth(1).is_some_and(|l| l.contains("1/1") && l.contains("Running")), "{pods}");
    let (_, syncs, _) = cluster.cli(here, &["get", "syncs"], false);
    assert!(syncs.lines().nth(1).is_some_and(|l| l.starts_with(&v2[..7]) && l.contains("synced")), "{syncs}");
    let (code, _, stderr) = cluster.cli(here, &["get", "secrets"], false);
    assert_eq!(code, 1);
    assert!(
        stderr.contains("choose workloads, jobs, cronjobs, pods, pvc, events, nodes, services or syncs"),
        "{stderr}"
    );

    // Without the token a rollback is refused and changes nothing.
    let elsewhere = tempfile::tempdir().unwrap();
    let (code, _, stderr) = cluster.cli(elsewhere.path(), &["rollback", "deployment/app"], false);
    assert_eq!(code, 1);
    assert!(stderr.contains("needs the API token"), "{stderr}");

    let (code, stdout, stderr) = cluster.cli(elsewhere.path(), &["rollback", "deployment/app"], true);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains(&format!("held at commit {}", &v1[..7])), "{stdout}");
    // The audit log says who rolled back, from where, and that it worked (the preview is not
    // an action, so it is not there).
    let (code, audit, stderr) = cluster.cli(elsewhere.path(), &["audit", "--since", "1h"], true);
    assert_eq!(code, 0, "{stderr}");
    let rows: Vec<&str> = audit.lines().filter(|l| l.contains("rollback")).collect();
    assert_eq!(rows.len(), 2, "{audit}");
    // The attempt without a token first, refused; then the admin's.
    assert!(rows[0].contains("(no token)") && rows[0].contains("refused (401)"), "{audit}");
    for word in ["admin", "Deployment default/app", "127.0.0.1", "ok"] {
        assert!(rows[1].contains(word), "{word}: {audit}");
    }
    let status = cluster
        .wait_status("the pinned rollback", |s| {
            health_is(s, "app", "OutOfSync") && health_is(s, "app", "Healthy") && s["sync"] == "OutOfSync"
        })
        .await;
    assert!(workload(&status, "app").unwrap()["reason"].as_str().unwrap().contains("until a new commit is applied"));
    assert_eq!(ready_revisions(&cluster).await, vec![v1.clone()]);
    let (_, describe, _) = cluster.cli(elsewhere.path(), &["describe", "deployment/app"], false);
    assert!(describe.contains(&format!("Pinned:     to commit {}", &v1[..7])), "{describe}");
    let (_, json_out, _) = cluster.cli(elsewhere.path(), &["get", "workloads", "-o", "json"], false);
    let workloads: Value = serde_json::from_str(&json_out).unwrap();
    assert_eq!(workloads[0]["pinned"], v1.as_str());
    let (_, yaml_out, _) = cluster.cli(elsewhere.path(), &["get", "workloads", "-o", "yaml"], false);
    assert!(yaml_out.contains("sync: OutOfSync"), "{yaml_out}");

    // A new commit lifts the pin.
    repo.write("app.yaml", &app(1, "v3"));
    let v3 = repo.commit("v3");
    cluster.wait_status("v3", |s| synced(s) && s["applied"] == v3).await;
    assert_eq!(ready_revisions(&cluster).await, vec![v3.clone()]);

    // `berth plan --server`: a commit against what the server has applied.
    let (code, same, stderr) = cluster.cli(repo.path(), &["plan"], false);
    assert_eq!(code, 0, "{same}{stderr}");
    assert!(same.contains("Plan: 0 to create, 0 to update, 0 to delete, 1 unchanged."), "{same}");
    assert!(same.contains("against the server's applied state at index"), "{same}");
    let (code, back, _) = cluster.cli(repo.path(), &["plan", "--to", &v1], false);
    assert_eq!(code, 2, "{back}");
    assert!(back.contains("~ update Deployment default/app"), "{back}");

    // Rolling back with `git revert`: the plan names the commit whose spec comes back.
    git(repo.path(), &["revert", "--no-edit", &v3]);
    let revert = head(&repo);
    cluster.wait_status("the revert", |s| synced(s) && s["applied"] == revert).await;
    let sync = cluster.get(&format!("/api/v1/syncs/{revert}")).await;
    let text = sync["planText"].as_str().unwrap();
    assert!(text.contains(&format!("restores the spec of commit {} \"v2\"", &v2[..7])), "{text}");
    wait_for("v2's spec to run again", LIMIT, || async { ready_revisions(&cluster).await == vec![revert.clone()] })
        .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn manual_sync_and_mass_deletes_wait_for_an_approval_of_the_plan_shown() {
    let mut repo = TestRepo::new();
    let config_map =
        |name: &str| format!("apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: {name}}}\ndata: {{a: b}}\n");
    let kept = app(1, "v1").replace("  name: app\n", "  name: app\n  annotations: {berth.dev/prune: \"false\"}\n");
    repo.write("berth.yaml", "sync:\n  policy: manual\n");
    repo.write("app.yaml", &kept).write("a.yaml", &config_map("a")).write("b.yaml", &config_map("b"));
    let first = repo.commit("first");
    let cluster = Cluster::start("manual", repo.path().to_str().unwrap(), 1, &[]).await;
    let status = cluster.wait_status("the commit to wait", |s| s["sync"] == "OutOfSync").await;
    assert!(
        status["reason"].as_str().unwrap().contains(&format!("berth sync --approve {}", &first[..7])),
        "{status:#}"
    );
    assert_eq!(cluster.get("/api/v1/pods").await, json!([]), "a waiting commit runs nothing");

    let elsewhere = tempfile::tempdir().unwrap();
    let (code, shown, _) = cluster.cli(elsewhere.path(), &["sync"], false);
    assert_eq!(code, 0);
    assert!(shown.contains("+ create Deployment default/app") && shown.contains("is waiting"), "{shown}");
    let (code, _, stderr) = cluster.cli(elsewhere.path(), &["sync", "--approve"], false);
    assert_eq!(code, 1);
    assert!(stderr.contains("needs the API token"), "{stderr}");
    // An approval of a plan made at another state index is refused.
    let stale = cluster.client.post(&format!("/api/v1/syncs/{first}/approve"), &json!({"stateIndex": 99})).await;
    let error = stale.unwrap_err().to_string();
    assert!(error.contains("the applied state moved since the plan was made"), "{error}");

    // Named tokens: a viewer may not approve; a deployer may, and the audit log names it.
    let named = |name: &str, role: &str| {
        let (code, token, stderr) = cluster.cli(elsewhere.path(), &["token", "create", name, "--role", role], true);
        assert_eq!(code, 0, "{stderr}");
        assert_eq!(token.lines().count(), 1, "the token alone on stdout: {token}");
        let file = elsewhere.path().join(name);
        std::fs::write(&file, token.trim()).unwrap();
        file.to_str().unwrap().to_owned()
    };
    let viewer = named("look", "viewer");
    let (code, _, stderr) = cluster.cli(elsewhere.path(), &["sync", "--approve", "--token-file", &viewer], false);
    assert_eq!(code, 1);
    assert!(stderr.contains("the token `look` is a viewer"), "{stderr}");
    let deployer = named("ci", "deployer");
    let (code, _, stderr) = cluster.cli(elsewhere.path(), &["sync", "--approve", "--token-file", &deployer], false);
    assert_eq!(code, 0, "{stderr}");
    cluster.wait_status("the approved commit", |s| synced(s) && s["applied"] == first).await;
    let (code, audit, stderr) = cluster.cli(elsewhere.path(), &["audit"], true);
    assert_eq!(code, 0, "{stderr}");
    let approved =
        audit.lines().find(|l| l.contains(" ci ") && l.contains("approve")).unwrap_or_else(|| panic!("{audit}"));
    for word in ["ci", &format!("commit {first}"), "127.0.0.1", "ok"] {
        assert!(approved.contains(word), "{word}: {audit}");
    }
    let (code, listed, _) = cluster.cli(elsewhere.path(), &["token", "list"], true);
    assert_eq!(code, 0);
    assert!(listed.contains("look") && listed.contains("viewer") && listed.contains("active"), "{listed}");
    let (code, _, _) = cluster.cli(elsewhere.path(), &["token", "revoke", "look"], true);
    assert_eq!(code, 0);
    let (code, _, stderr) = cluster.cli(elsewhere.path(), &["get", "workloads", "--token-file", &viewer], false);
    assert_eq!(code, 1, "a revoked token is refused at once");
    assert!(stderr.contains("revoked"), "{stderr}");
    let token_file = cluster.token_file();

    // The plan says where the scheduler would start the new pods, on the node that is Ready.
    repo.write("app.yaml", &kept.replace("replicas: 1", "replicas: 3"));
    let scaled = repo.commit("three replicas");
    cluster.wait_status("the scale-up to wait", |s| s["head"]["sha"] == scaled && s["sync"] == "OutOfSync").await;
    let plan = cluster.get(&format!("/api/v1/syncs/{scaled}")).await;
    let text = plan["planText"].as_str().unwrap();
    let node = &cluster.nodes[0].name;
    assert!(text.contains(&format!("first pods on {node} (2)")), "{text}");
    assert_eq!(plan["plan"]["placements"][0]["nodes"][node.as_str()], 2, "{plan:#}");
    let (code, _, stderr) =
        cluster.cli(elsewhere.path(), &["sync", "--approve", "--token-file", token_file.to_str().unwrap()], false);
    assert_eq!(code, 0, "{stderr}");
    cluster.wait_status("the scale-up", |s| synced(s) && s["applied"] == scaled).await;

    // Auto policy, but removing the three objects (two deleted, one kept) is over the threshold.
    std::fs::remove_file(repo.path().join("app.yaml")).unwrap();
    std::fs::remove_file(repo.path().join("a.yaml")).unwrap();
    std::fs::remove_file(repo.path().join("b.yaml")).unwrap();
    repo.write("berth.yaml", "sync:\n  policy: auto\n");
    repo.write("c.yaml", &config_map("c"));
    let mass = repo.commit("remove almost everything");
    let status =
        cluster.wait_status("the mass delete to wait", |s| s["head"]["sha"] == mass && s["sync"] == "OutOfSync").await;
    assert!(status["reason"].as_str().unwrap().contains("would delete 2 of the 3 applied objects"), "{status:#}");
    let plan = cluster.get(&format!("/api/v1/syncs/{mass}")).await;
    let text = plan["planText"].as_str().unwrap();
    assert!(text.contains("= keep Deployment default/app"), "{text}");
    cluster
        .client
        .post(&format!("/api/v1/syncs/{mass}/approve"), &json!({"stateIndex": plan["stateIndex"]}))
        .await
        .unwrap();
    cluster.wait_status("the mass delete", |s| synced(s) && s["applied"] == mass).await;
    // The kept Deployment's pods run on, no longer managed.
    assert_eq!(crate::server::running(&cluster.nodes[0].name).await.len(), 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_signed_webhook_fetches_a_remote_at_once() {
    let mut repo = TestRepo::new();
    repo.write("app.yaml", &app(1, "v1"));
    let v1 = repo.commit("v1");
    let url = format!("file://{}", repo.path().display());
    let secret = "webhook-secret";
    let cluster =
        Cluster::start("hook", &url, 1, &["--branch", "main", "--fetch-interval", "3600", "--webhook-secret", secret])
            .await;
    cluster.wait_status("v1", |s| synced(s) && s["applied"] == v1).await;
    repo.write("app.yaml", &app(1, "v2"));
    let v2 = repo.commit("v2");

    let http = cluster.http();
    let hook = format!("{}/api/v1/webhooks/git", cluster.url());
    let body = serde_json::to_vec(&json!({"ref": "refs/heads/main", "after": v2})).unwrap();
    let unsigned = http.post(&hook).body(body.clone()).send().await.unwrap();
    assert_eq!(unsigned.status(), 401);
    let forged = http
        .post(&hook)
        .header("X-Hub-Signature-256", format!("sha256={}", "00".repeat(32)))
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 401);
    let huge = http.post(&hook).body(vec![b' '; 6 * 1024 * 1024]).send().await.unwrap();
    assert_eq!(huge.status(), 413, "the body size is capped");
    assert_eq!(cluster.get("/api/v1/status").await["head"]["sha"], v1, "a refused webhook fetches nothing");

    use hmac::Mac;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(&body);
    let signature: String = mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect();
    let signed =
        http.post(&hook).header("X-Hub-Signature-256", format!("sha256={signature}")).body(body).send().await.unwrap();
    assert_eq!(signed.status(), 202);
    // The fetch interval is an hour: only the webhook explains seeing v2.
    cluster.wait_status("v2 after the webhook", |s| synced(s) && s["applied"] == v2).await;

    // Gitea signs the same way under its own header; GitLab sends the secret itself.
    let gitea = http.post(&hook).header("X-Gitea-Signature", "11".repeat(32)).body("{}").send().await.unwrap();
    assert_eq!(gitea.status(), 401);
    let gitlab = http.post(&hook).header("X-Gitlab-Token", secret).body("{}").send().await.unwrap();
    assert_eq!(gitlab.status(), 202);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_server_killed_mid_rollout_resumes_with_no_duplicate_or_missing_pods() {
    let mut repo = TestRepo::new();
    let slow = |version: &str| app(4, version).replace("  replicas: 4\n", "  replicas: 4\n  minReadySeconds: 2\n");
    repo.write("app.yaml", &slow("v1"));
    let v1 = repo.commit("v1");
    let mut cluster = Cluster::start("kill", repo.path().to_str().unwrap(), 2, &[]).await;
    cluster.wait_status("v1", |s| synced(s) && s["applied"] == v1).await;

    repo.write("app.yaml", &slow("v2"));
    let v2 = repo.commit("v2");
    wait_for("the rollout to be half way", LIMIT, || async {
        let revisions = ready_revisions(&cluster).await;
        revisions.contains(&v1) && revisions.contains(&v2)
    })
    .await;
    cluster.kill_server();
    cluster.start_server();
    cluster.wait_status("v2 after the restart", |s| synced(s) && s["applied"] == v2).await;

    // Exactly four pods, all v2, each once, running on the nodes' engine.
    let pods = cluster.get("/api/v1/pods").await;
    let mut names: Vec<&str> = pods.as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), 4, "{pods:#}");
    assert_eq!(ready_revisions(&cluster).await, vec![v2.clone(); 4]);
    wait_for("the engine to run exactly the assigned pods", LIMIT, || async {
        let mut running = Vec::new();
        for node in &cluster.nodes {
            running.extend(crate::server::running(&node.name).await);
        }
        running.sort();
        running == names
    })
    .await;
}

/// Issue 11, defect 1: an approval is taken once. Commits after it (back under the auto policy)
/// are applied, also after a restart; none is recorded as superseded by the approved one.
#[tokio::test(flavor = "multi_thread")]
async fn an_approval_does_not_freeze_later_commits() {
    let mut repo = TestRepo::new();
    let settings = |greeting: &str| {
        format!("apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: settings}}\ndata: {{GREETING: {greeting}}}\n")
    };
    repo.write("berth.yaml", "sync:\n  policy: manual\n");
    repo.write("app.yaml", &app(1, "v1")).write("settings.yaml", &settings("hello"));
    let approved = repo.commit("manual");
    let mut cluster = Cluster::start("approve", repo.path().to_str().unwrap(), 1, &[]).await;
    cluster.wait_status("the commit to wait", |s| s["sync"] == "OutOfSync" && s["head"]["sha"] == approved).await;
    let sync = cluster.get(&format!("/api/v1/syncs/{approved}")).await;
    cluster
        .client
        .post(&format!("/api/v1/syncs/{approved}/approve"), &json!({"stateIndex": sync["stateIndex"]}))
        .await
        .unwrap();
    cluster.wait_status("the approved commit", |s| synced(s) && s["applied"] == approved).await;

    repo.write("berth.yaml", "sync:\n  policy: auto\n").write("settings.yaml", &settings("hi"));
    let auto = repo.commit("back to auto");
    cluster.wait_status("the auto commit", |s| synced(s) && s["applied"] == auto).await;
    repo.write("settings.yaml", &settings("hey"));
    let later = repo.commit("another config change");
    cluster.wait_status("the later commit", |s| synced(s) && s["applied"] == later).await;
    for sha in [&auto, &later] {
        let record = cluster.get(&format!("/api/v1/syncs/{sha}")).await;
        assert_eq!(record["outcome"], "synced", "{record:#}");
    }
    let plan = cluster.get("/api/v1/plan?rev=HEAD").await;
    assert_eq!(plan["hasChanges"], false, "{plan:#}");

    cluster.kill_server();
    cluster.start_server();
    repo.write("settings.yaml", &settings("howdy"));
    let after_restart = repo.commit("after a restart");
    cluster.wait_status("the commit after a restart", |s| synced(s) && s["applied"] == after_restart).await;
    let status = cluster.get("/api/v1/status").await;
    assert_eq!(status["applied"], after_restart.as_str(), "{status:#}");
}

/// Issue 11, defect 2: moving the branch back to an earlier commit applies that commit, and its
/// plan says whose spec it restores.
#[tokio::test(flavor = "multi_thread")]
async fn a_rewound_branch_is_applied() {
    let mut repo = TestRepo::new();
    repo.write("app.yaml", &app(1, "v1"));
    let v1 = repo.commit("v1");
    let cluster = Cluster::start("rewind", repo.path().to_str().unwrap(), 1, &[]).await;
    cluster.wait_status("v1", |s| synced(s) && s["applied"] == v1).await;
    repo.write("app.yaml", &app(1, "v2"));
    let v2 = repo.commit("v2");
    cluster.wait_status("v2", |s| synced(s) && s["applied"] == v2).await;
    wait_for("v2 to run", LIMIT, || async { ready_revisions(&cluster).await == vec![v2.clone()] }).await;

    git(repo.path(), &["reset", "--hard", &v1]);
    cluster.wait_status("the rewind", |s| s["head"]["sha"] == v1 && s["applied"] == v1 && synced(s)).await;
    wait_for("v1 to run again", LIMIT, || async { ready_revisions(&cluster).await == vec![v1.clone()] }).await;
    let sync = cluster.get(&format!("/api/v1/syncs/{v1}")).await;
    let text = sync["planText"].as_str().unwrap();
    assert!(text.contains(&format!("restores the spec of commit {} \"v1\"", &v1[..7])), "{text}");
    let plan = cluster.get("/api/v1/plan?rev=HEAD").await;
    assert_eq!(plan["hasChanges"], false, "{plan:#}");
}

/// Issue 11, defect 5: a rollback restores the pod template, not a commit that only changed
/// replicas, and leaves replicas as Git has them; it says what it does before doing it; a
/// commit that waits for approval does not lift it.
#[tokio::test(flavor = "multi_thread")]
async fn a_rollback_restores_the_template_and_keeps_the_replicas() {
    let mut repo = TestRepo::new();
    repo.write("app.yaml", &app(1, "v1"));
    let v1 = repo.commit("v1");
    let cluster = Cluster::start("undo", repo.path().to_str().unwrap(), 1, &[]).await;
    cluster.wait_status("v1", |s| synced(s) && s["applied"] == v1).await;
    repo.write("app.yaml", &app(1, "v2"));
    let v2 = repo.commit("v2");
    cluster.wait_status("v2", |s| synced(s) && s["applied"] == v2).await;
    repo.write("app.yaml", &app(3, "v2"));
    let scaled = repo.commit("three replicas");
    cluster.wait_status("the scale-up", |s| synced(s) && s["applied"] == scaled).await;

    let here = repo.path();
    let (code, stdout, stderr) = cluster.cli(here, &["rollback", "deployment/app"], true);
    assert_eq!(code, 0, "{stderr}");
    let said = format!("the pod template of commit {} \"v1\" comes back", &v1[..7]);
    assert!(stdout.contains(&said) && stdout.contains("replicas stay 3 as Git has them"), "{stdout}");
    assert!(stdout.contains(&format!("held at commit {}", &v1[..7])), "{stdout}");
    wait_for("three pods of v1's template", LIMIT, || async {
        ready_revisions(&cluster).await == vec![v1.clone(), v1.clone(), v1.clone()]
    })
    .await;

    // A commit that waits for approval leaves the pin in place.
    repo.write("berth.yaml", "sync:\n  policy: manual\n");
    let waiting = repo.commit("manual from now on");
    cluster.wait_status("the commit to wait", |s| s["head"]["sha"] == waiting && s["waiting"].is_string()).await;
    let status = cluster.get("/api/v1/status").await;
    assert_eq!(workload(&status, "app").unwrap()["pinned"], v1.as_str(), "{status:#}");
    assert_eq!(ready_revisions(&cluster).await, vec![v1.clone(), v1.clone(), v1]);
}

/// Issue 11, defect 3: a changed ConfigMap value rolls the workloads that read it, health-gated,
/// and the plan says why; a workload that opts out is out of sync and names its stale pods.
#[tokio::test(flavor = "multi_thread")]
async fn a_config_change_rolls_the_workloads_that_read_it() {
    let mut repo = TestRepo::new();
    let settings = |greeting: &str| {
        format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: settings}}\ndata: {{GREETING: {greeting}, OTHER: x}}\n"
        )
    };
    let reading = |name: &str, opt_out: bool| {
        let annotation = if opt_out { "\n  annotations: {berth.dev/restart-on-config-change: \"false\"}" } else { "" };
        crate::images::deployment(name, None, 2, "v1", Some((1, 0)))
            .replacen(&format!("  name: {name}\n"), &format!("  name: {name}{annotation}\n"), 1)
            .replace(
                "          readinessProbe:",
                "          env: [{name: GREETING, valueFrom: {configMapKeyRef: {name: settings, key: GREETING}}}]\n          readinessProbe:",
            )
    };
    repo.write("settings.yaml", &settings("hello"));
    repo.write("app.yaml", &reading("app", false)).write("held.yaml", &reading("held", true));
    let first = repo.commit("settings and two readers");
    let cluster = Cluster::start("config", repo.path().to_str().unwrap(), 1, &[]).await;
    cluster.wait_status("the first commit", |s| synced(s) && s["applied"] == first).await;
    let app_before = pod_names(&cluster, "app").await;
    let held_before = pod_names(&cluster, "held").await;

    // A key no pod reads changes nothing.
    repo.write("settings.yaml", &settings("hello").replace("OTHER: x", "OTHER: y"));
    let other = repo.commit("a key nobody reads");
    cluster.wait_status("the unread change", |s| synced(s) && s["applied"] == other).await;
    assert_eq!(pod_names(&cluster, "app").await, app_before);

    repo.write("settings.yaml", &settings("bonjour").replace("OTHER: x", "OTHER: y"));
    let change = repo.commit("new greeting");
    // The status names a new head a moment before its sync record is written.
    let record = format!("/api/v1/syncs/{change}");
    wait_for("the new greeting's sync record", LIMIT, || async { cluster.client.get(&record).await.is_ok() }).await;
    let sync = cluster.get(&record).await;
    let text = sync["planText"].as_str().unwrap();
    assert!(text.contains("~ update Deployment default/app"), "{text}");
    assert!(text.contains("rolls because ConfigMap default/settings key GREETING changed"), "{text}");
    assert!(text.contains("keeps its pods (berth.dev/restart-on-config-change: \"false\") although ConfigMap default/settings key GREETING changed"), "{text}");
    let status = cluster
        .wait_status("the roll and the held workload", |s| {
            s["applied"] == change && health_is(s, "app", "Synced") && health_is(s, "held", "OutOfSync")
        })
        .await;
    assert_eq!(status["sync"], "OutOfSync", "{status:#}");
    let reason = workload(&status, "held").unwrap()["reason"].as_str().unwrap().to_owned();
    assert!(held_before.iter().all(|pod| reason.contains(pod.as_str())), "{reason}");
    let app_after = pod_names(&cluster, "app").await;
    assert_eq!(app_after.len(), 2);
    assert!(app_after.iter().all(|p| !app_before.contains(p)), "new pods: {app_before:?} -> {app_after:?}");
    assert_eq!(pod_names(&cluster, "held").await, held_before, "the held workload keeps its pods");
    // The new pods read the new value.
    let node = &cluster.nodes[0].name;
    let container = berth::nodes::pods::engine_name(&[node, "default", &app_after[0], "app", "0"]);
    let output = Command::new("docker").args(["exec", &container, "sh", "-c", "echo $GREETING"]).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), "bonjour");
}

/// The names of a workload's pods, sorted.
async fn pod_names(cluster: &Cluster, workload: &str) -> Vec<String> {
    let pods = cluster.get("/api/v1/pods").await;
    let mut names: Vec<String> = pods
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["workload"] == workload)
        .map(|p| p["name"].as_str().unwrap().to_owned())
        .collect();
    names.sort();
    names
}

/// Issue 11, defect 4: a scale-down is not Synced while the pods it stops run out their grace
/// period; they show as Terminating until their containers are gone.
#[tokio::test(flavor = "multi_thread")]
async fn a_scale_down_is_synced_only_once_its_pods_are_gone() {
    let mut repo = TestRepo::new();
    // `sleep` as a container's first process ignores SIGTERM: each stop takes the grace period.
    let slow =
        |replicas| app(replicas, "v1").replace("terminationGracePeriodSeconds: 0", "terminationGracePeriodSeconds: 4");
    repo.write("app.yaml", &slow(3));
    let three = repo.commit("three");
    let cluster = Cluster::start("scaledown", repo.path().to_str().unwrap(), 1, &[]).await;
    cluster.wait_status("three replicas", |s| synced(s) && s["applied"] == three).await;

    repo.write("app.yaml", &slow(1));
    let one = repo.commit("one");
    let terminating =
        |pods: &Value| pods.as_array().into_iter().flatten().filter(|p| p["status"] == "Terminating").count();
    // The status, then the pods, while the pods stop (each takes 4 s): a pod still stopping
    // after the status was read was on its way out when it was.
    let deadline = std::time::Instant::now() + LIMIT;
    let seen = loop {
        let status = cluster.get("/api/v1/status").await;
        let pods = cluster.get("/api/v1/pods").await;
        // Between the commit's adoption and the first pass that acts on it, the status says only
        // that the commit is being applied; the workload rows are the pass's to fill.
        let acted_on = !status["reason"].as_str().unwrap_or_default().contains("is being applied");
        if status["applied"] == one.as_str() {
            // Never the previous pass's word for the workload the commit scales down.
            let row = workload(&status, "app").unwrap();
            assert_ne!(row["sync"], "Synced", "{status:#}");
            assert_eq!(row["replicas"], 1, "{status:#}");
        }
        if terminating(&pods) > 0 && status["applied"] == one.as_str() && acted_on {
            break Some((pods, status));
        }
        assert!(std::time::Instant::now() < deadline, "no pod ever showed as Terminating: {pods:#}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let (pods, status) = seen.unwrap();
    assert_ne!(status["sync"], "Synced", "pods still stop: {pods:#} {status:#}");
    assert!(workload(&status, "app").unwrap()["terminating"].as_u64().unwrap() >= 1, "{status:#}");

    let status = cluster.wait_status("one replica, the others gone", |s| synced(s) && s["applied"] == one).await;
    let pods = cluster.get("/api/v1/pods").await;
    assert_eq!(terminating(&pods), 0, "{pods:#}");
    assert_eq!(pods.as_array().unwrap().len(), 1, "{pods:#}");
    assert_eq!(workload(&status, "app").unwrap()["terminating"], 0);
}

/// Issue 14: where secret values sit on disk. The server's and the agent's state folders are
/// their owner's alone (0700, files 0600); the store seals the assignments that carry the
/// values pods read, so neither the database nor its journals hold a value; and a Secret
/// volume's files live on a tmpfs outside the agent's folder, gone with the pod. The canary
/// reaches the container all the same.
#[tokio::test]
async fn secret_values_sit_nowhere_on_disk_but_in_the_pod() {
    use std::os::unix::fs::PermissionsExt;
    const CANARY: &str = "canary-3f9a1c77e2b04d58";
    let mut repo = TestRepo::new();
    repo.write(
        "secret.yaml",
        &format!("apiVersion: v1\nkind: Secret\nmetadata: {{name: creds}}\nstringData: {{token: {CANARY}}}\n"),
    );
    repo.write(
        "app.yaml",
        &format!(
            "{}      volumes: [{{name: creds, secret: {{secretName: creds}}}}]\n",
            crate::images::deployment("app", None, 1, "v1", None).replace(
                "          readinessProbe:",
                "          env: [{name: TOKEN, valueFrom: {secretKeyRef: {name: creds, key: token}}}]\n          volumeMounts: [{name: creds, mountPath: /creds}]\n          readinessProbe:",
            )
        ),
    );
    let first = repo.commit("a secret read two ways");
    let cluster = Cluster::start_on("canary", repo.path().to_str().unwrap(), 1, &[], 20).await;
    cluster.wait_status("the secret's reader", |s| synced(s) && s["applied"] == first).await;
    let pods = pod_names(&cluster, "app").await;
    let node = &cluster.nodes[0].name;
    let container = berth::nodes::pods::engine_name(&[node, "default", &pods[0], "app", "0"]);
    let read = Command::new("docker")
        .args(["exec", &container, "sh", "-c", "echo $TOKEN; cat /creds/token"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&read.stdout), format!("{CANARY}\n{CANARY}"), "the pod reads the value");

    let needles = [
        CANARY.as_bytes().to_vec(),
        base64::engine::Engine::encode(&base64::engine::general_purpose::STANDARD, CANARY).into_bytes(),
    ];
    let mut checked = 0;
    for folder in [cluster.db.path(), cluster.nodes[0].state.path()] {
        let mode = std::fs::metadata(folder).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700, "{} is {mode:o}", folder.display());
        let mut stack = vec![folder.to_path_buf()];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                let metadata = std::fs::symlink_metadata(&path).unwrap();
                if metadata.is_dir() {
                    stack.push(path);
                    continue;
                }
                // The database, its journals, tokens, the key, the lock, the credential and the
                // inventory: the owner's alone. (Files of ConfigMap volumes keep their modes.)
                if !path.starts_with(folder.join("pods")) {
                    assert_eq!(metadata.permissions().mode() & 0o077, 0, "{} is readable by others", path.display());
                }
                let bytes = std::fs::read(&path).unwrap();
                for needle in &needles {
                    assert!(
                        !bytes.windows(needle.len()).any(|w| w == needle.as_slice()),
                        "{} holds the secret value",
                        path.display()
                    );
                }
                checked += 1;
            }
        }
    }
    assert!(checked >= 6, "the database, its journal, tokens, key, lock and agent files were read: {checked}");
    assert!(cluster.db.path().join("berth.db-wal").exists(), "the write-ahead log was among them");

    // The volume's file is on the tmpfs, in a folder of the agent's own; it goes with the pod.
    let secrets = cluster.nodes[0].config().secrets_dir;
    assert!(secrets.starts_with("/dev/shm") && !secrets.starts_with(cluster.nodes[0].state.path()), "{secrets:?}");
    assert_eq!(std::fs::metadata(&secrets).unwrap().permissions().mode() & 0o777, 0o700);
    let pod_dir = secrets.join("pods").join(format!("default_{}", pods[0]));
    assert_eq!(std::fs::read_to_string(pod_dir.join("volumes/creds/token")).unwrap(), CANARY);
    repo.clear().write(
        "secret.yaml",
        &format!(
            "apiVersion: v1
kind: Secret
metadata: {{name: creds}}
stringData: {{token: {CANARY}}}
"
        ),
    );
    let gone = repo.commit("the reader goes");
    cluster.wait_status("the reader gone", |s| synced(s) && s["applied"] == gone).await;
    wait_for("the secret files to go with the pod", LIMIT, || async { !pod_dir.exists() }).await;
}

/// Issue 14: a commit the operator's host-access policy refuses is a failed commit on the
/// server, with the reason; the last good commit keeps running, its pods untouched.
#[tokio::test]
async fn a_commit_the_policy_refuses_fails_and_the_last_good_one_keeps_running() {
    let mut repo = TestRepo::new();
    repo.write("app.yaml", &crate::images::deployment("app", None, 1, "v1", None));
    let good = repo.commit("an app");
    let cluster = Cluster::start_on("policy", repo.path().to_str().unwrap(), 1, &[], 21).await;
    cluster.wait_status("the good commit", |s| synced(s) && s["applied"] == good).await;
    let before = pod_names(&cluster, "app").await;
    repo.write(
        "app.yaml",
        &format!(
            "{}      volumes: [{{name: engine, hostPath: {{path: /var/run/docker.sock}}}}]\n",
            crate::images::deployment("app", None, 1, "v2", None).replace(
                "          readinessProbe:",
                "          volumeMounts: [{name: engine, mountPath: /var/run/docker.sock}]\n          readinessProbe:",
            )
        ),
    );
    let bad = repo.commit("drive the host's engine");
    let status = cluster.wait_status("the refused commit", |s| s["head"]["sha"] == bad.as_str()).await;
    let reason = status["syncReason"].as_str().unwrap();
    assert_eq!(status["sync"], "Unknown", "{status:#}");
    assert!(reason.contains("/var/run/docker.sock is denied by the host-access policy"), "{status:#}");
    assert!(reason.contains(&format!("commit {} keeps running", &good[..7])), "{status:#}");
    assert_eq!(status["applied"], good, "{status:#}");
    assert_eq!(pod_names(&cluster, "app").await, before, "the running pods are untouched");
}

/// Reads Prometheus text as a scraper would; the value of the one sample of `name` whose labels
/// include `labels`, if there is one.
pub(crate) fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let lines = text.lines().map(|l| Ok(l.to_owned()));
    let scrape = prometheus_parse::Scrape::parse(lines).unwrap_or_else(|e| panic!("not Prometheus text: {e}\n{text}"));
    scrape.samples.iter().find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v))).map(
        |s| match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => f64::NAN,
        },
    )
}

pub(crate) async fn get_text(url: &str, token: Option<&str>) -> (u16, String) {
    get_text_with(&reqwest::Client::new(), url, token).await
}

async fn get_text_with(http: &reqwest::Client, url: &str, token: Option<&str>) -> (u16, String) {
    let mut request = http.get(url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap_or_else(|e| panic!("GET {url}: {e}"));
    (response.status().as_u16(), response.text().await.unwrap())
}

/// Issue 20: health and metrics answer on the server and on an agent started with
/// `--metrics-listen`. /metrics parses as Prometheus text, and the restart counters of both
/// move when a pod's container restarts.
#[tokio::test]
async fn health_and_metrics_answer_on_the_server_and_the_agent() {
    let mut repo = TestRepo::new();
    let crashing =
        crate::images::deployment("crashy", None, 1, "v1", None).replace("exec sleep 3600", "sleep 1; exit 3");
    repo.write("crashy.yaml", &crashing);
    repo.commit("a pod that restarts");
    let agent_args = ["--metrics-listen", "{address}:19090"];
    let cluster = Cluster::start_with_agents("metrics", repo.path().to_str().unwrap(), 1, &[], 22, &agent_args).await;
    let agent = "http://127.0.22.2:19090";

    assert_eq!(cluster.get_text("/healthz", None).await, (200, "ok\n".to_owned()));
    wait_for("the server to be ready", LIMIT, || async {
        let (code, text) = cluster.get_text("/readyz", None).await;
        code == 200 && text.contains("[+]store ok") && text.contains("[+]head ok")
    })
    .await;
    wait_for("the agent to answer /readyz, joined", LIMIT, || async {
        let Ok(response) = reqwest::get(format!("{agent}/readyz")).await else { return false };
        response.status() == 200
            && response.text().await.is_ok_and(|t| t.contains("[+]joined ok") && t.contains("[+]engine ok"))
    })
    .await;
    assert_eq!(get_text(&format!("{agent}/healthz"), None).await, (200, "ok\n".to_owned()));

    wait_for("the server's restart counter to move", LIMIT, || async {
        let (code, text) = cluster.get_text("/metrics", None).await;
        assert_eq!(code, 200, "{text}");
        sample(&text, "berth_pod_restarts_total", &[]).is_some_and(|v| v >= 1.0)
    })
    .await;
    let (_, text) = cluster.get_text("/metrics", None).await;
    assert_eq!(sample(&text, "berth_nodes", &[("status", "Ready")]), Some(1.0), "{text}");
    assert_eq!(sample(&text, "berth_pods", &[("phase", "Succeeded")]), Some(0.0), "{text}");
    assert!(sample(&text, "berth_control_passes_total", &[]).is_some_and(|v| v >= 1.0), "{text}");
    assert!(sample(&text, "berth_store_write_duration_seconds_count", &[]).is_some_and(|v| v >= 1.0), "{text}");
    assert!(sample(&text, "berth_control_read_duration_seconds_count", &[]).is_some_and(|v| v >= 1.0), "{text}");

    wait_for("the agent's restart counter to move", LIMIT, || async {
        let (code, text) = get_text(&format!("{agent}/metrics"), None).await;
        assert_eq!(code, 200, "{text}");
        sample(&text, "berth_agent_container_restarts_total", &[("container", "crashy")]).is_some_and(|v| v >= 1.0)
    })
    .await;
    let (_, text) = get_text(&format!("{agent}/metrics"), None).await;
    assert!(sample(&text, "berth_agent_reports_total", &[]).is_some_and(|v| v >= 1.0), "{text}");
    assert_eq!(
        sample(&text, "berth_agent_pods", &[("phase", "Running")]).unwrap_or(0.0)
            + sample(&text, "berth_agent_pods", &[("phase", "Pending")]).unwrap_or(0.0),
        1.0,
        "{text}"
    );
}

/// Issue 20: `berth top` shows what each pod's containers use, sampled by the agents. A
/// container burning a core reads 700-1000m within 30 s of turning ready, an idle one near 0;
/// the node shows its share of the allocatable; both /metrics carry each container's usage.
#[tokio::test]
async fn top_shows_a_busy_container_and_an_idle_one() {
    let mut repo = TestRepo::new();
    let busy =
        crate::images::deployment("burn", None, 1, "v1", None).replace("exec sleep 3600", "exec yes > /dev/null");
    repo.write("burn.yaml", &busy).write("idle.yaml", &crate::images::deployment("idle", None, 1, "v1", None));
    repo.commit("a busy pod and an idle one");
    let agent_args = ["--usage-seconds", "2", "--metrics-listen", "{address}:19091"];
    let cluster = Cluster::start_with_agents("top", repo.path().to_str().unwrap(), 1, &[], 23, &agent_args).await;
    cluster.wait_status("both pods to run", synced).await;

    let elsewhere = tempfile::tempdir().unwrap();
    let pods = || async { cluster.get("/api/v1/top/pods").await };
    let cpu_of = |pods: &Value, name: &str| {
        pods.as_array()?.iter().find(|p| p["name"].as_str().is_some_and(|n| n.starts_with(name)))?["cpuMillis"].as_u64()
    };
    wait_for("the busy container to read 700m or more", Duration::from_secs(30), || async {
        cpu_of(&pods().await, "burn-").is_some_and(|cpu| (700..=1100).contains(&cpu))
    })
    .await;
    let sampled = pods().await;
    let idle = cpu_of(&sampled, "idle-").expect("the idle pod is sampled too");
    assert!(idle <= 50, "an idle pod uses {idle}m: {sampled:#}");
    let burn = sampled.as_array().unwrap().iter().find(|p| p["name"].as_str().unwrap().starts_with("burn-")).unwrap();
    assert!(burn["memoryBytes"].as_u64().unwrap() > 0, "{burn:#}");
    assert_eq!(burn["containers"][0]["name"], "burn", "{burn:#}");

    // The tables, as kubectl top prints them.
    let (code, table, stderr) = cluster.cli(elsewhere.path(), &["top", "pods"], false);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        table.starts_with("NAMESPACE") && table.contains("CPU(cores)") && table.contains("MEMORY(bytes)"),
        "{table}"
    );
    let row = table.lines().find(|l| l.contains("burn-")).unwrap_or_else(|| panic!("{table}"));
    assert!(row.split_whitespace().nth(2).is_some_and(|cpu| cpu.ends_with('m')), "{row}");
    assert!(row.split_whitespace().nth(3).is_some_and(|memory| memory.ends_with("Mi")), "{row}");
    let (code, table, stderr) =
        cluster.cli(elsewhere.path(), &["top", "pods", "-n", "default", "-l", "app=burn", "--containers"], false);
    assert_eq!(code, 0, "{stderr}");
    let rows: Vec<&str> = table.lines().skip(1).collect();
    assert!(table.starts_with("POD") && rows.len() == 1 && rows[0].contains(" burn "), "{table}");
    let (code, _, stderr) = cluster.cli(elsewhere.path(), &["top", "pods", "-l", "app=nothing"], false);
    assert_eq!(code, 1);
    assert!(stderr.contains("no usage sampled yet"), "{stderr}");
    let (code, _, stderr) = cluster.cli(elsewhere.path(), &["top", "pods", "-l", "a b"], false);
    assert_eq!(code, 1);
    assert!(stderr.contains("is not a requirement"), "{stderr}");
    let (code, table, stderr) = cluster.cli(elsewhere.path(), &["top", "nodes"], false);
    assert_eq!(code, 0, "{stderr}");
    let node = &cluster.nodes[0].name;
    let row = table.lines().find(|l| l.starts_with(node.as_str())).unwrap_or_else(|| panic!("{table}"));
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert!(cells[1].ends_with('m') && cells[2].ends_with('%') && cells[4].ends_with('%'), "{table}");

    // The UI shows usage against what pods ask for, with a graph of the last hour.
    let ui = |path: &'static str| {
        let cluster = &cluster;
        async move { cluster.get_text(path, None).await.1 }
    };
    wait_for("the workload page to graph the busy pod", LIMIT, || async {
        let page = ui("/workloads/deployment/default/burn").await;
        page.contains("<th scope=\"col\">CPU</th>") && page.contains("<svg class=\"spark\"")
    })
    .await;
    let page = ui("/nodes").await;
    assert!(
        page.contains("<th scope=\"col\">CPU used</th>") && page.contains("m of ") && page.contains("%)"),
        "{page}"
    );

    // Both /metrics carry each container's usage.
    let (_, text) = cluster.get_text("/metrics", None).await;
    let used = sample(&text, "berth_container_cpu_usage_seconds_total", &[("container", "burn")]);
    assert!(used.is_some_and(|seconds| seconds > 0.5), "{text}");
    assert!(sample(&text, "berth_container_memory_working_set_bytes", &[("container", "idle")]).is_some(), "{text}");
    let rollouts = sample(&text, "berth_rollout_duration_seconds_count", &[("outcome", "healthy")]);
    assert_eq!(rollouts, Some(2.0), "both rollouts were healthy: {text}");
    let syncs = sample(&text, "berth_sync_duration_seconds_count", &[("outcome", "synced")]);
    assert_eq!(syncs, Some(1.0), "the commit was synced once: {text}");
    wait_for("the agent's CPU counter of the busy container", LIMIT, || async {
        let (_, text) = get_text("http://127.0.23.2:19091/metrics", None).await;
        sample(&text, "berth_agent_container_cpu_usage_seconds_total", &[("container", "burn")])
            .is_some_and(|s| s > 1.0)
            && sample(&text, "berth_agent_node_memory_used_bytes", &[]).is_some_and(|b| b > 0.0)
    })
    .await;
}

/// Issue 20: `berth get pods -w` prints the table, then a row when a pod changes: here, when
/// the pod of a new commit turns ready. It follows the server's event stream; it does not poll.
#[tokio::test(flavor = "multi_thread")]
async fn get_pods_watch_prints_a_row_when_a_pod_turns_ready() {
    let mut repo = TestRepo::new();
    repo.write("config.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: settings}\ndata: {a: b}\n");
    repo.commit("nothing runs yet");
    let cluster = Cluster::start("watch", repo.path().to_str().unwrap(), 1, &[]).await;
    cluster.wait_status("the first commit", synced).await;

    let elsewhere = tempfile::tempdir().unwrap();
    let (_watcher, received) = watch_lines(&cluster, elsewhere.path(), "pods");
    let next_line = |limit: Duration| received.recv_timeout(limit).ok();
    let header = next_line(LIMIT).expect("the watch prints its table");
    assert!(header.starts_with("NAMESPACE") && header.contains("READY"), "{header}");

    repo.write("app.yaml", &app(1, "v1"));
    repo.commit("an app");
    let deadline = std::time::Instant::now() + LIMIT;
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let Some(line) = next_line(left) else {
            panic!("no ready row of the app within {LIMIT:?}; printed: {seen:#?}")
        };
        assert!(!line.starts_with("NAMESPACE"), "the header is printed once: {seen:#?} {line}");
        let ready = line.contains(" app-") && line.split_whitespace().nth(2) == Some("1/1");
        seen.push(line);
        if ready {
            break;
        }
    }
}

/// Issue 17: the downward API reaches a container's environment: the pod's own fields, its
/// template's labels, its node's name and address once placed, and its resources (a limit
/// that is not set is the node's allocatable).
#[tokio::test(flavor = "multi_thread")]
async fn field_and_resource_references_reach_the_environment() {
    let mut repo = TestRepo::new();
    let env = "          env:
            - {name: POD_NAME, valueFrom: {fieldRef: {fieldPath: metadata.name}}}
            - {name: POD_NAMESPACE, valueFrom: {fieldRef: {fieldPath: metadata.namespace}}}
            - {name: POD_UID, valueFrom: {fieldRef: {apiVersion: v1, fieldPath: metadata.uid}}}
            - {name: APP, valueFrom: {fieldRef: {fieldPath: \"metadata.labels['app']\"}}}
            - {name: NODE, valueFrom: {fieldRef: {fieldPath: spec.nodeName}}}
            - {name: HOST_IP, valueFrom: {fieldRef: {fieldPath: status.hostIP}}}
            - {name: POD_IP, valueFrom: {fieldRef: {fieldPath: status.podIP}}}
            - {name: CPU_MILLIS, valueFrom: {resourceFieldRef: {resource: requests.cpu, divisor: 1m}}}
            - {name: MEMORY_MIB, valueFrom: {resourceFieldRef: {containerName: downward, resource: limits.memory, divisor: 1Mi}}}
          resources:
            requests: {cpu: 150m}
          volumeMounts: [{name: about, mountPath: /etc/about}]
";
    let volume = "      volumes:
        - name: about
          downwardAPI:
            items:
              - {path: labels, fieldRef: {fieldPath: metadata.labels}}
              - {path: name, fieldRef: {fieldPath: metadata.name}}
              - {path: limits/memory, resourceFieldRef: {containerName: downward, resource: limits.memory, divisor: 1Mi}}
";
    let manifest = crate::images::deployment("downward", None, 1, "v1", None)
        .replace("          command:", &format!("{env}          command:"))
        .replace("      containers:", &format!("{volume}      containers:"));
    assert!(manifest.contains("POD_NAME"), "{manifest}");
    repo.write("downward.yaml", &manifest);
    repo.commit("a pod that reads itself");
    let cluster = Cluster::start_on("downward", repo.path().to_str().unwrap(), 1, &[], 24).await;
    cluster.wait_status("the pod to run", synced).await;
    let pods = cluster.get("/api/v1/pods").await;
    let pod = pods.as_array().unwrap().iter().find(|p| p["workload"] == "downward").expect("the pod").clone();
    let (name, node) = (pod["name"].as_str().unwrap(), pod["node"].as_str().unwrap());
    let container = berth::nodes::pods::engine_name(&[node, "default", name, "downward", "0"]);
    let script =
        "echo $POD_NAME $POD_NAMESPACE $APP $NODE $HOST_IP $POD_IP $CPU_MILLIS; echo $POD_UID; echo $MEMORY_MIB";
    let output = Command::new("docker").args(["exec", &container, "sh", "-c", script]).output().unwrap();
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines.first().copied(),
        Some(format!("{name} default downward {node} 127.0.24.2 127.0.24.2 150").as_str()),
        "{text}"
    );
    assert_eq!(lines.get(1).map(|uid| uid.len()), Some(16), "the pod's uid: {text}");
    let allocatable_mib = berth::nodes::agent::capacity().memory_bytes.div_ceil(1 << 20);
    assert_eq!(lines.get(2).copied(), Some(allocatable_mib.to_string().as_str()), "no memory limit: {text}");

    // The same fields as files of a downwardAPI volume.
    let script = "cat /etc/about/labels; echo; cat /etc/about/name; echo; cat /etc/about/limits/memory";
    let output = Command::new("docker").args(["exec", &container, "sh", "-c", script]).output().unwrap();
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    assert_eq!(text, format!("app=\"downward\"\n\n{name}\n{allocatable_mib}"), "{text}");
}

/// Issue 17: init containers run in order, each to a successful exit, before the containers
/// start; `get pods` shows `Init:N/M` meanwhile. A failing one holds the pod back and says so.
#[tokio::test(flavor = "multi_thread")]
async fn init_containers_run_in_order_before_the_containers() {
    let image = crate::images::busybox();
    let pod = |name: &str, first: &str| {
        format!(
            "apiVersion: v1
kind: Pod
metadata: {{name: {name}}}
spec:
  terminationGracePeriodSeconds: 0
  volumes: [{{name: work, emptyDir: {{}}}}]
  initContainers:
    - name: first
      image: {image}
      command: [sh, -c, '{first}']
      volumeMounts: [{{name: work, mountPath: /work}}]
    - name: second
      image: {image}
      command: [sh, -c, 'echo two >> /work/steps']
      volumeMounts: [{{name: work, mountPath: /work}}]
  containers:
    - name: app
      image: {image}
      command: [sh, -c, 'cat /work/steps > /tmp/seen; exec sleep 3600']
      volumeMounts: [{{name: work, mountPath: /work}}]
"
        )
    };
    let sidecar = format!(
        "apiVersion: v1
kind: Pod
metadata: {{name: sidecar}}
spec:
  terminationGracePeriodSeconds: 0
  volumes: [{{name: work, emptyDir: {{}}}}]
  initContainers:
    - name: helper
      image: {image}
      restartPolicy: Always
      command: [sh, -c, 'echo up >> /work/helper; exec sleep 3600']
      volumeMounts: [{{name: work, mountPath: /work}}]
    - name: setup
      image: {image}
      command: [sh, -c, 'cat /work/helper > /work/seen-by-setup']
      volumeMounts: [{{name: work, mountPath: /work}}]
  containers:
    - name: app
      image: {image}
      command: [sh, -c, 'exec sleep 3600']
      volumeMounts: [{{name: work, mountPath: /work}}]
"
    );
    let mut repo = TestRepo::new();
    repo.write("ordered.yaml", &pod("ordered", "sleep 3; echo one >> /work/steps"));
    repo.write("failing.yaml", &pod("failing", "echo nope; exit 3"));
    repo.write("sidecar.yaml", &sidecar);
    repo.commit("pods with init containers");
    let cluster = Cluster::start_on("init", repo.path().to_str().unwrap(), 1, &[], 25).await;
    let status_of = |pods: &Value, name: &str| {
        pods.as_array()
            .into_iter()
            .flatten()
            .find(|p| p["name"] == name)
            .map(|p| p["status"].as_str().unwrap_or_default().to_owned())
    };
    wait_for("the ordered pod to show its first init container running", LIMIT, || async {
        status_of(&cluster.get("/api/v1/pods").await, "ordered").as_deref() == Some("Init:0/2")
    })
    .await;
    wait_for("the ordered pod to run", LIMIT, || async {
        status_of(&cluster.get("/api/v1/pods").await, "ordered").as_deref() == Some("Running")
    })
    .await;
    let node = &cluster.nodes[0].name;
    let app = berth::nodes::pods::engine_name(&[node, "default", "ordered", "app", "0"]);
    let output = Command::new("docker").args(["exec", &app, "cat", "/tmp/seen"]).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&output.stdout), "one\ntwo\n", "the app saw both steps, in order");

    wait_for("the failing init container to hold its pod back", LIMIT, || async {
        let pods = cluster.get("/api/v1/pods").await;
        let failing = pods.as_array().unwrap().iter().find(|p| p["name"] == "failing").cloned().unwrap_or_default();
        matches!(failing["status"].as_str(), Some("Init:CrashLoopBackOff" | "Init:Error"))
            && failing["lastError"].as_str().is_some_and(|e| e.contains("init container first exited with code 3"))
    })
    .await;
    // A sidecar starts in its turn, runs beside the app, and comes back when it dies.
    wait_for("the pod with a sidecar to run", LIMIT, || async {
        status_of(&cluster.get("/api/v1/pods").await, "sidecar").as_deref() == Some("Running")
    })
    .await;
    let app = berth::nodes::pods::engine_name(&[node, "default", "sidecar", "app", "0"]);
    let seen = Command::new("docker").args(["exec", &app, "cat", "/work/seen-by-setup"]).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&seen.stdout), "up\n", "the init container after the sidecar saw it run");
    let helper = berth::nodes::pods::engine_name(&[node, "default", "sidecar", "helper", "0"]);
    assert!(Command::new("docker").args(["kill", &helper]).status().unwrap().success());
    let restarted = berth::nodes::pods::engine_name(&[node, "default", "sidecar", "helper", "1"]);
    wait_for("the sidecar to come back", LIMIT, || async {
        let output = Command::new("docker").args(["inspect", "-f", "{{.State.Running}}", &restarted]).output().unwrap();
        String::from_utf8_lossy(&output.stdout).trim() == "true"
    })
    .await;
    let twice = Command::new("docker").args(["exec", &app, "cat", "/work/helper"]).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&twice.stdout), "up\nup\n");

    let never_started = berth::nodes::pods::engine_name(&[node, "default", "failing", "app", "0"]);
    let inspected = Command::new("docker").args(["inspect", &never_started]).output().unwrap();
    assert!(!inspected.status.success(), "the app container of a pod whose init container fails is never made");
    let status = cluster.get("/api/v1/status").await;
    assert_ne!(status["sync"], "Synced", "{status:#}");
}

/// Issue 19: a crashing container's last lines are in its pod's status, and a value it got
/// from a Secret is hidden there.
#[tokio::test(flavor = "multi_thread")]
async fn a_crashing_containers_last_lines_show_with_secret_values_hidden() {
    let mut repo = TestRepo::new();
    let value = "hunter2-in-the-logs";
    repo.write(
        "secret.yaml",
        &format!("apiVersion: v1\nkind: Secret\nmetadata: {{name: creds}}\nstringData: {{password: {value}}}\n"),
    );
    let app = crate::images::deployment("leaky", None, 1, "v1", None)
        .replace(
            "          command:",
            "          env: [{name: PASSWORD, valueFrom: {secretKeyRef: {name: creds, key: password}}}]\n          command:",
        )
        .replace(
            "echo v1 > /tmp/version; exec sleep 3600",
            "echo connecting with $PASSWORD; echo fatal: cannot open /etc/app.conf; exit 1",
        );
    repo.write("leaky.yaml", &app);
    repo.commit("a pod that prints its secret and dies");
    let cluster = Cluster::start_on("leaky", repo.path().to_str().unwrap(), 1, &[], 26).await;
    wait_for("the crash's last lines in the pod's status", LIMIT, || async {
        let pods = cluster.get("/api/v1/pods").await;
        pods.to_string().contains("connecting with (hidden) / fatal: cannot open /etc/app.conf")
    })
    .await;
    let pods = cluster.get("/api/v1/pods").await;
    let name = pods[0]["name"].as_str().unwrap().to_owned();
    let detail = format!("/api/v1/pods/default/{name}");
    for path in ["/api/v1/pods", "/api/v1/status", "/api/v1/workloads/deployment/default/leaky", detail.as_str()] {
        let answer = cluster.get(path).await.to_string();
        assert!(!answer.contains(value), "{path} shows the secret value: {answer}");
    }
    // describe pod/NAME shows each container's state and what it wrote last.
    let elsewhere = tempfile::tempdir().unwrap();
    let (code, text, stderr) = cluster.cli(elsewhere.path(), &["describe", &format!("pod/{name}")], false);
    assert_eq!(code, 0, "{stderr}");
    assert!(text.contains(&format!("Name:       {name}")) && text.contains("Workload:   Deployment/leaky"), "{text}");
    assert!(
        text.contains("  leaky:\n") && text.contains("connecting with (hidden) / fatal: cannot open /etc/app.conf"),
        "{text}"
    );
    assert!(!text.contains(value), "{text}");
    let (code, _, stderr) = cluster.cli(elsewhere.path(), &["describe", "pod/nothing"], false);
    assert_eq!(code, 1, "{stderr}");

    // Its logs, read by its node: the current attempt, and the one before it.
    wait_for("a restart, so there is a previous attempt", LIMIT, || async {
        cluster.get("/api/v1/pods").await[0]["restarts"].as_u64().is_some_and(|r| r >= 1)
    })
    .await;
    for args in [vec!["logs", name.as_str()], vec!["logs", name.as_str(), "--previous", "--tail", "1"]] {
        let (code, text, stderr) = cluster.cli(elsewhere.path(), &args, true);
        assert_eq!(code, 0, "{args:?}: {stderr}");
        assert!(text.ends_with("fatal: cannot open /etc/app.conf\n"), "{args:?}: {text}");
        // What the container printed is there, but a value it got from a Secret is hidden.
        assert_eq!(text.contains("connecting with (hidden)"), args.len() == 2, "{args:?}: {text}");
        assert!(!text.contains(value), "{args:?}: {text}");
    }
    let (code, text, stderr) = cluster.cli(elsewhere.path(), &["logs", "deployment/leaky", "--tail", "1"], true);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(text, "fatal: cannot open /etc/app.conf\n", "one pod: no prefix");
    let (code, _, stderr) = cluster.cli(elsewhere.path(), &["logs", &name, "-c", "nothing"], true);
    assert_eq!(code, 1);
    assert!(stderr.contains("has no container `nothing`; it has: leaky"), "{stderr}");
}

/// Issue 19: `berth logs KIND/NAME` shows every pod of a workload, each line after its pod and
/// container, as stern does.
#[tokio::test(flavor = "multi_thread")]
async fn logs_of_a_workload_interleave_its_pods_with_a_prefix() {
    let mut repo = TestRepo::new();
    let chatty = crate::images::deployment("chatty", None, 2, "v1", None).replace(
        "echo v1 > /tmp/version; exec sleep 3600",
        "echo hello from $HOSTNAME; echo v1 > /tmp/version; exec sleep 3600",
    );
    repo.write("chatty.yaml", &chatty);
    repo.commit("two pods that say hello");
    let cluster = Cluster::start_on("logs", repo.path().to_str().unwrap(), 1, &[], 27).await;
    cluster.wait_status("both pods to run", synced).await;
    let elsewhere = tempfile::tempdir().unwrap();
    let (code, text, stderr) = cluster.cli(elsewhere.path(), &["logs", "deploy/chatty", "--timestamps"], true);
    assert_eq!(code, 0, "{stderr}");
    let pods = cluster.get("/api/v1/pods").await;
    for pod in pods.as_array().unwrap() {
        let name = pod["name"].as_str().unwrap();
        let line = text.lines().find(|l| l.starts_with(&format!("{name} | "))).unwrap_or_else(|| panic!("{text}"));
        // `--timestamps`: the time the line was written, then the line.
        assert!(line.ends_with(&format!(" hello from {name}")) && line.contains("T"), "{line}");
    }
    assert_eq!(text.lines().count(), 2, "{text}");
}

/// A Job of the test image whose one container runs `script`; `metadata` is a flow mapping and
/// `spec` lines of the Job's spec, indented by two.
fn job_manifest(metadata: &str, spec: &str, script: &str) -> String {
    let image = crate::images::busybox();
    format!(
        "apiVersion: batch/v1
kind: Job
metadata: {metadata}
spec:
{spec}
  template:
    spec:
      restartPolicy: Never
      terminationGracePeriodSeconds: 0
      containers:
        - name: main
          image: {image}
          command: [sh, -c, '{script}']
"
    )
}

/// Issue 18: Jobs run to completion, `parallelism` at a time; a failing one retries with a
/// backoff until `backoffLimit` and fails with the reason; an Indexed Job's pods see their
/// index. A finished Job is not run again by a later commit that leaves it as it is.
#[tokio::test(flavor = "multi_thread")]
async fn jobs_run_to_completion_or_fail_with_the_reason() {
    let job = |name: &str, spec: &str, script: &str| job_manifest(&format!("{{name: {name}}}"), spec, script);
    let mut repo = TestRepo::new();
    repo.write("three.yaml", &job("three", "  completions: 3\n  parallelism: 2", "echo working; sleep 1"));
    repo.write("failing.yaml", &job("failing", "  backoffLimit: 2", "echo cannot open /etc/app.conf; exit 3"));
    repo.write(
        "indexed.yaml",
        &job(
            "indexed",
            "  completions: 2\n  parallelism: 2\n  completionMode: Indexed",
            "echo index=$JOB_COMPLETION_INDEX",
        ),
    );
    repo.commit("three jobs");
    let cluster = Cluster::start("jobs", repo.path().to_str().unwrap(), 1, &[]).await;
    let job_of = |status: &Value, name: &str| workload(status, name).map(|w| w["job"].clone()).unwrap_or_default();

    let status = cluster
        .wait_status("the Jobs to finish", |s| {
            job_of(s, "three")["status"] == "Complete"
                && job_of(s, "indexed")["status"] == "Complete"
                && job_of(s, "failing")["status"] == "Failed"
        })
        .await;
    assert_eq!(job_of(&status, "three")["succeeded"], 3, "{status:#}");
    let failing = workload(&status, "failing").unwrap();
    assert_eq!(failing["health"], "Degraded", "{failing:#}");
    let reason = failing["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("BackoffLimitExceeded: 3 failures, more than backoffLimit 2"), "{reason}");
    assert!(reason.contains("exited with code 3: cannot open /etc/app.conf"), "{reason}");

    // Each index ran in a pod of its own and saw its index.
    let node = &cluster.nodes[0].name;
    let names = pod_names(&cluster, "indexed").await;
    assert_eq!(names.len(), 2, "{names:?}");
    for name in &names {
        let (index, _) = berth::apply::job::parse_name(name, true);
        let container = berth::nodes::pods::engine_name(&[node, "default", name, "main", "0"]);
        let output = Command::new("docker").args(["logs", &container]).output().unwrap();
        assert_eq!(String::from_utf8_lossy(&output.stdout), format!("index={}\n", index.unwrap()), "{name}");
    }

    // `get jobs` says the same.
    let (code, out, err) = cluster.cli(repo.path(), &["get", "jobs"], true);
    assert_eq!(code, 0, "{err}");
    let row =
        |name: &str| out.lines().find(|l| l.split_whitespace().nth(1) == Some(name)).unwrap_or_default().to_owned();
    assert!(row("three").contains("Complete") && row("three").contains("3/3"), "{out}");
    assert!(row("failing").contains("Failed"), "{out}");
    let (code, out, err) = cluster.cli(repo.path(), &["describe", "job/failing"], true);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("Status:     Failed") && out.contains("3 failures counted"), "{out}");
    assert!(out.contains("BackoffLimitExceeded") && out.contains("exited with code 3"), "{out}");

    // A later commit that leaves the Jobs as they are runs none of them again.
    let before = pod_names(&cluster, "three").await;
    repo.write("other.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: other}\ndata: {a: b}\n");
    let sha = repo.commit("an unrelated change");
    cluster
        .wait_status("the unrelated commit to be applied", |s| {
            s["applied"].as_str().is_some_and(|a| sha.starts_with(a))
        })
        .await;
    assert_eq!(pod_names(&cluster, "three").await, before, "a finished Job is not run again");
    let status = cluster.get("/api/v1/status").await;
    assert_eq!(job_of(&status, "three")["status"], "Complete", "{status:#}");
}

/// Issue 18: a CronJob's first run fires within its first minute and completes, without making
/// the commit progressing; `create job --from=cronjob/NAME` runs one at once; `get cronjobs`
/// shows the schedule and the last run.
#[tokio::test(flavor = "multi_thread")]
async fn a_cron_job_runs_on_its_schedule_and_by_hand() {
    let image = crate::images::busybox();
    let mut repo = TestRepo::new();
    repo.write(
        "tick.yaml",
        &format!(
            "apiVersion: batch/v1
kind: CronJob
metadata: {{name: tick}}
spec:
  schedule: '* * * * *'
  concurrencyPolicy: Forbid
  jobTemplate:
    spec:
      template:
        spec:
          restartPolicy: Never
          terminationGracePeriodSeconds: 0
          containers:
            - name: main
              image: {image}
              command: [sh, -c, 'echo tick']
"
        ),
    );
    repo.commit("a cron job");
    let cluster = Cluster::start("cron", repo.path().to_str().unwrap(), 1, &[]).await;
    let runs = |list: &Value| -> Vec<(String, String)> {
        list.as_array()
            .into_iter()
            .flatten()
            .filter(|c| c["name"] == "tick")
            .flat_map(|c| c["runs"].as_array().cloned().unwrap_or_default())
            .map(|r| {
                (r["name"].as_str().unwrap_or_default().to_owned(), r["status"].as_str().unwrap_or_default().to_owned())
            })
            .collect()
    };
    let deadline = Duration::from_secs(150);
    wait_for("the first scheduled run to complete", deadline, || async {
        runs(&cluster.get("/api/v1/cronjobs").await)
            .iter()
            .any(|(name, status)| name.starts_with("tick-") && status == "Complete")
    })
    .await;
    let status = cluster.get("/api/v1/status").await;
    assert!(synced(&status), "a CronJob's runs do not make the commit progressing: {status:#}");
    let list = cluster.get("/api/v1/cronjobs").await;
    let tick = &list[0];
    assert_eq!(tick["schedule"], "* * * * *", "{list:#}");
    let last = tick["lastSchedule"].as_i64().unwrap();
    assert_eq!(last % 60, 0, "runs are due on the minute: {list:#}");
    assert!(tick["nextSchedule"].as_i64().unwrap() > last, "{list:#}");

    let (code, out, err) = cluster.cli(repo.path(), &["create", "job", "by-hand", "--from=cronjob/tick"], true);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("job.batch/by-hand created from cronjob/tick"), "{out}");
    wait_for("the run by hand to complete", LIMIT, || async {
        runs(&cluster.get("/api/v1/cronjobs").await)
            .iter()
            .any(|(name, status)| name == "by-hand" && status == "Complete")
    })
    .await;
    let (code, _, err) = cluster.cli(repo.path(), &["create", "job", "by-hand", "--from=cronjob/tick"], true);
    assert_eq!(code, 1, "a name in use is refused");
    assert!(err.contains("already exists"), "{err}");
    let (code, out, err) = cluster.cli(repo.path(), &["get", "cronjobs"], true);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("tick") && out.contains("* * * * *") && out.contains("UTC"), "{out}");
    // `get jobs` lists the runs with the commit's Jobs.
    let (code, out, err) = cluster.cli(repo.path(), &["get", "jobs"], true);
    assert_eq!(code, 0, "{err}");
    let by_hand = out.lines().find(|l| l.split_whitespace().nth(1) == Some("by-hand")).unwrap_or_default();
    assert!(by_hand.contains("Complete") && by_hand.contains("1/1"), "{out}");
}

/// Issue 18: a PreSync hook Job runs to completion before the rest of its commit is applied,
/// and a PostSync one only after it is healthy; a failing PreSync hook fails the commit, nothing
/// else of it is applied, and the last good commit keeps running.
#[tokio::test(flavor = "multi_thread")]
async fn pre_sync_hooks_gate_the_commit_and_post_sync_hooks_follow_it() {
    let hook = |name: &str, hook: &str, script: &str| {
        job_manifest(
            &format!("{{name: {name}, annotations: {{argocd.argoproj.io/hook: {hook}}}}}"),
            "  backoffLimit: 0",
            script,
        )
    };
    let mut repo = TestRepo::new();
    repo.write("app.yaml", &app(1, "v1"));
    let first = repo.commit("v1");
    let cluster = Cluster::start("hooks", repo.path().to_str().unwrap(), 1, &[]).await;
    cluster.wait_status("v1", |s| synced(s) && s["applied"] == first).await;

    // A migration that takes a while, then v2; a PostSync Job after it.
    repo.write("migrate.yaml", &hook("migrate", "PreSync", "echo migrating; sleep 4"));
    repo.write("notify.yaml", &hook("notify", "PostSync", "echo released"));
    repo.write("app.yaml", &app(1, "v2"));
    let second = repo.commit("v2 with a migration");
    let status = cluster
        .wait_status("the migration to run", |s| {
            s["applied"] == second && workload(s, "migrate").is_some_and(|w| w["job"]["active"] == 1)
        })
        .await;
    // While it runs, v1 runs, and the PostSync hook has not started.
    assert_eq!(ready_revisions(&cluster).await, vec![first.clone()], "{status:#}");
    assert!(pod_names(&cluster, "notify").await.is_empty(), "the PostSync hook waits");
    assert_eq!(workload(&status, "notify").unwrap()["job"]["status"], "Waiting", "{status:#}");
    assert!(!synced(&status), "{status:#}");
    let status = cluster
        .wait_status("v2 and both hooks", |s| {
            synced(s)
                && s["applied"] == second
                && workload(s, "notify").is_some_and(|w| w["job"]["status"] == "Complete")
        })
        .await;
    assert_eq!(ready_revisions(&cluster).await, vec![second.clone()], "{status:#}");
    assert_eq!(workload(&status, "migrate").unwrap()["job"]["status"], "Complete");

    // A commit that leaves the migration as it is does not run it again; a hook that runs at
    // every sync runs again.
    let migrated = pod_names(&cluster, "migrate").await;
    repo.write(
        "stamp.yaml",
        &hook("stamp", "PreSync", "echo stamped")
            .replace("annotations: {", "annotations: {berth.dev/hook-policy: every-sync, "),
    );
    let stamped = repo.commit("a hook at every sync");
    cluster.wait_status("the stamp", |s| synced(s) && s["applied"] == stamped).await;
    let first_stamp = pod_names(&cluster, "stamp").await;
    repo.write("app.yaml", &app(1, "v2b"));
    let again = repo.commit("v2b");
    cluster.wait_status("v2b", |s| synced(s) && s["applied"] == again).await;
    assert_eq!(pod_names(&cluster, "migrate").await, migrated, "the unchanged migration did not run again");
    let stamps = pod_names(&cluster, "stamp").await;
    assert_ne!(stamps, first_stamp, "the every-sync hook ran again");
    let second = again;

    // A failing migration: nothing of v3 is applied, v2 keeps running.
    repo.write("migrate.yaml", &hook("migrate", "PreSync", "echo cannot reach the database; exit 3"));
    repo.write("app.yaml", &app(1, "v3"));
    repo.write("extra.yaml", &crate::images::deployment("extra", None, 1, "v3", Some((1, 0))));
    let third = repo.commit("v3 with a failing migration");
    let status = cluster
        .wait_status("the commit to fail on its hook", |s| {
            s["applied"] == third
                && s["health"] == "Degraded"
                && workload(s, "extra").is_some_and(|w| w["reason"].as_str().is_some_and(|r| r.contains("failed")))
        })
        .await;
    let reason = status["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("migrate"), "{status:#}");
    let migrate = workload(&status, "migrate").unwrap();
    let why = migrate["reason"].as_str().unwrap_or_default();
    assert!(why.contains("exited with code 3: cannot reach the database"), "{migrate:#}");
    let extra = workload(&status, "extra").unwrap();
    assert!(extra["reason"].as_str().unwrap_or_default().contains("PreSync hook failed"), "{extra:#}");
    assert_eq!(ready_revisions(&cluster).await, vec![second.clone()], "v2 keeps running");
    assert!(pod_names(&cluster, "extra").await.is_empty(), "nothing new of the failed commit starts");
}

/// Issue 19: `berth exec` runs a command in a pod's container through the node's own
/// connection: its output, its exit code as the CLI's, standard input with -i, values from
/// Secrets hidden, and the token required.
#[tokio::test(flavor = "multi_thread")]
async fn exec_runs_a_command_in_a_container_and_exits_with_its_code() {
    let image = crate::images::busybox();
    let mut repo = TestRepo::new();
    repo.write(
        "shell.yaml",
        &format!(
            "apiVersion: v1
kind: Secret
metadata: {{name: token}}
stringData: {{value: s3cr3t-canary}}
---
apiVersion: v1
kind: Pod
metadata: {{name: shell}}
spec:
  terminationGracePeriodSeconds: 0
  containers:
    - name: main
      image: {image}
      command: [sh, -c, 'exec sleep 3600']
      env:
        - name: TOKEN
          valueFrom: {{secretKeyRef: {{name: token, key: value}}}}
"
        ),
    );
    repo.commit("a shell");
    let cluster = Cluster::start("exec", repo.path().to_str().unwrap(), 1, &[]).await;
    cluster.wait_status("the shell to run", synced).await;
    let here = repo.path();

    let (code, out, err) =
        cluster.cli_with_input(here, &["exec", "shell", "--", "sh", "-c", "echo hi; exit 3"], true, None);
    assert_eq!((code, out.as_str()), (3, "hi\n"), "{err}");
    let (code, out, err) =
        cluster.cli_with_input(here, &["exec", "-i", "shell", "--", "cat"], true, Some("piped in\n"));
    assert_eq!((code, out.as_str()), (0, "piped in\n"), "{err}");
    let (code, out, err) =
        cluster.cli_with_input(here, &["exec", "shell", "--", "sh", "-c", "echo $TOKEN"], true, None);
    assert_eq!(code, 0, "{err}");
    assert!(!out.contains("s3cr3t-canary") && out.contains("(hidden)"), "{out}");
    let (code, _, err) = cluster.cli_with_input(here, &["exec", "shell", "-c", "other", "--", "true"], true, None);
    assert_eq!(code, 1);
    assert!(err.contains("has no container `other`"), "{err}");
    let elsewhere = tempfile::tempdir().unwrap();
    let (code, _, err) = cluster.cli_with_input(elsewhere.path(), &["exec", "shell", "--", "true"], false, None);
    assert_eq!(code, 1, "exec needs the token: {err}");
    // Output comes as it is written, not when the command ends.
    let mut slow = cluster
        .command()
        .args(["exec", "shell", "--"])
        .args(["sh", "-c", "echo first; sleep 30; echo never"])
        .env("BERTH_TOKEN", cluster.token())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut first = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(slow.stdout.as_mut().unwrap()), &mut first).unwrap();
    assert_eq!(first, "first\n");
    slow.kill().unwrap();
    slow.wait().unwrap();

    // A shell on a terminal: berth runs on a pseudo-terminal here, as it does under a person.
    let terminal = Terminal::open(30, 100);
    let mut shell = terminal.spawn(
        cluster
            .command()
            .args(["exec", "-it", "shell", "--", "sh"])
            .env("BERTH_TOKEN", cluster.token())
            .current_dir(here),
    );
    // Once the shell prompts, the local terminal is raw: what shows of the typing is the
    // container's terminal echoing it.
    terminal.wait_for("the shell's prompt", 0, "/ # ").await;
    let typed = terminal.output().len();
    terminal.type_in("stty size; echo typed-$((6*7)) $TOKEN\r");
    terminal.wait_for("the command typed echoed back", typed, "stty size; echo typed-$((6*7)) $TOKEN").await;
    terminal.wait_for("the shell's answer on a 100x30 terminal", typed, "30 100\r\ntyped-42 (hidden)").await;
    terminal.resize(40, 120);
    // The new size reaches the container's terminal on its own: asked until it shows.
    wait_for("the terminal's new size in the container", Duration::from_secs(20), || {
        terminal.type_in("stty size\r");
        let shown = terminal.output().contains("40 120");
        async move { shown }
    })
    .await;
    terminal.type_in("exit 7\r");
    let code = wait_child(&mut shell, Duration::from_secs(20)).await;
    assert_eq!(code, Some(7), "the shell's exit code is berth's: {}", terminal.output());
    assert!(!terminal.output().contains("s3cr3t-canary"));
}

/// A pseudo-terminal with a program on its other side, as a person's terminal is.
pub(crate) struct Terminal {
    master: std::fs::File,
    slave: std::os::fd::OwnedFd,
    output: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
}

impl Terminal {
    pub(crate) fn open(rows: u16, columns: u16) -> Terminal {
        use std::os::fd::FromRawFd as _;
        let (mut master, mut slave) = (0, 0);
        let size = libc::winsize { ws_row: rows, ws_col: columns, ws_xpixel: 0, ws_ypixel: 0 };
        // SAFETY: openpty writes two descriptors; the name pointer and termios may be null.
        let opened = unsafe {
            libc::openpty(&raw mut master, &raw mut slave, std::ptr::null_mut(), std::ptr::null(), &raw const size)
        };
        assert_eq!(opened, 0, "openpty: {}", std::io::Error::last_os_error());
        // SAFETY: both descriptors were just opened and are owned here alone.
        let (master, slave) = unsafe { (std::fs::File::from_raw_fd(master), std::os::fd::OwnedFd::from_raw_fd(slave)) };
        let output = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut reader = master.try_clone().unwrap();
        let seen = output.clone();
        std::thread::spawn(move || {
            let mut buffer = [0u8; 4096];
            while let Ok(n) = std::io::Read::read(&mut reader, &mut buffer) {
                if n == 0 {
                    break;
                }
                seen.lock().unwrap().extend_from_slice(&buffer[..n]);
            }
        });
        Terminal { master, slave, output }
    }

    /// Starts `command` in a session of its own whose controlling terminal this is.
    pub(crate) fn spawn(&self, command: &mut Command) -> std::process::Child {
        use std::os::unix::process::CommandExt as _;
        let io = || Stdio::from(self.slave.try_clone().unwrap());
        command.stdin(io()).stdout(io()).stderr(io());
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            command.pre_exec(|| {
                if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        command.spawn().unwrap()
    }

    pub(crate) fn type_in(&self, text: &str) {
        std::io::Write::write_all(&mut &self.master, text.as_bytes()).unwrap();
    }

    /// Resizes the terminal: the kernel tells the program on it with SIGWINCH.
    fn resize(&self, rows: u16, columns: u16) {
        use std::os::fd::AsRawFd as _;
        let size = libc::winsize { ws_row: rows, ws_col: columns, ws_xpixel: 0, ws_ypixel: 0 };
        // SAFETY: TIOCSWINSZ reads one winsize through a live pointer.
        assert_eq!(unsafe { libc::ioctl(self.master.as_raw_fd(), libc::TIOCSWINSZ, &raw const size) }, 0);
    }

    pub(crate) fn output(&self) -> String {
        String::from_utf8_lossy(&self.output.lock().unwrap()).into_owned()
    }

    /// Waits for `text` in what came after the first `from` bytes.
    pub(crate) async fn wait_for(&self, what: &str, from: usize, text: &str) {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while !self.output().get(from..).is_some_and(|after| after.contains(text)) {
            assert!(std::time::Instant::now() < deadline, "timed out waiting for {what}: {:?}", self.output());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// The exit code of `child` once it ends, within `limit`.
pub(crate) async fn wait_child(child: &mut std::process::Child, limit: Duration) -> Option<i32> {
    let deadline = std::time::Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code();
        }
        if std::time::Instant::now() > deadline {
            child.kill().unwrap();
            panic!("the process did not end within {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Follows `berth logs -f ARGS` in the background: what it printed so far, and the process.
fn follow(
    cluster: &Cluster,
    dir: &Path,
    args: &[&str],
) -> (std::sync::Arc<std::sync::Mutex<String>>, std::process::Child) {
    use std::io::BufRead as _;
    let mut command = cluster.command();
    command
        .args(["logs", "-f"])
        .args(args)
        .current_dir(dir)
        .env("BERTH_TOKEN", cluster.token())
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut child = command.spawn().unwrap();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let reader = std::io::BufReader::new(child.stdout.take().unwrap());
    let into = seen.clone();
    std::thread::spawn(move || {
        for line in reader.lines().map_while(Result::ok) {
            let mut text = into.lock().unwrap();
            text.push_str(&line);
            text.push('\n');
        }
    });
    (seen, child)
}

/// Issue 19: `logs -f` on a workload follows a rollout to the new pods, and on a pod follows
/// its container across restarts; no line is printed twice.
#[tokio::test(flavor = "multi_thread")]
async fn logs_follow_a_rollout_and_a_restarting_container() {
    let image = crate::images::busybox();
    let ticker = |version: &str| {
        format!(
            "apiVersion: apps/v1
kind: Deployment
metadata: {{name: ticker}}
spec:
  selector: {{matchLabels: {{app: ticker}}}}
  strategy: {{type: Recreate}}
  template:
    metadata: {{labels: {{app: ticker}}}}
    spec:
      terminationGracePeriodSeconds: 0
      containers:
        - name: main
          image: {image}
          command: [sh, -c, 'i=0; while true; do echo \"{version} line $i\"; i=$((i+1)); sleep 0.3; done']
"
        )
    };
    let crashy = format!(
        "apiVersion: v1
kind: Pod
metadata: {{name: crashy}}
spec:
  terminationGracePeriodSeconds: 0
  containers:
    - name: main
      image: {image}
      command: [sh, -c, 'echo attempt starts; sleep 1; echo attempt ends; exit 1']
"
    );
    let mut repo = TestRepo::new();
    repo.write("ticker.yaml", &ticker("v1"));
    repo.write("crashy.yaml", &crashy);
    repo.commit("v1");
    let cluster = Cluster::start("follow", repo.path().to_str().unwrap(), 1, &[]).await;
    cluster.wait_status("the ticker to run", |s| workload(s, "ticker").is_some_and(|w| w["ready"] == 1)).await;
    let (ticks, mut ticking) = follow(&cluster, repo.path(), &["deployment/ticker"]);
    let (attempts, mut crashing) = follow(&cluster, repo.path(), &["crashy"]);
    wait_for("v1 lines", LIMIT, || async { ticks.lock().unwrap().contains("v1 line 3") }).await;
    repo.write("ticker.yaml", &ticker("v2"));
    repo.commit("v2");
    wait_for("the follow to reach the new pod", LIMIT, || async { ticks.lock().unwrap().contains("v2 line 3") }).await;
    wait_for("two attempts of the crashing container", LIMIT, || async {
        attempts.lock().unwrap().matches("attempt starts").count() >= 2
    })
    .await;
    let _ = ticking.kill();
    let _ = crashing.kill();
    let text = ticks.lock().unwrap().clone();
    // Each pod's lines, in order, each once, with the pod as the prefix.
    for version in ["v1", "v2"] {
        let numbers: Vec<u64> =
            text.lines().filter_map(|l| l.split_once(&format!("| {version} line "))?.1.parse().ok()).collect();
        assert!(numbers.len() >= 3, "{text}");
        assert!(numbers.windows(2).all(|w| w[1] == w[0] + 1), "{version} lines once each, in order: {text}");
    }
    let attempts = attempts.lock().unwrap().clone();
    assert!(attempts.contains("attempt ends"), "the end of an attempt before its restart: {attempts}");
}

/// `berth get WHAT -w` run from `dir` (the token is found there, or not), and the lines it
/// prints as they come.
fn watch_lines(cluster: &Cluster, dir: &std::path::Path, what: &str) -> (Process, std::sync::mpsc::Receiver<String>) {
    let mut child = cluster.command();
    child
        .args(["get", what, "-w"])
        .current_dir(dir)
        .env_remove("BERTH_TOKEN")
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut watcher = Process(child.spawn().unwrap());
    let stdout = watcher.0.stdout.take().unwrap();
    let (lines, received) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines.send(line).is_err() {
                return;
            }
        }
    });
    (watcher, received)
}

/// Issue 19: events say what happened to pods, deduplicated with counts, in `get events` and at
/// the end of `describe`.
#[tokio::test(flavor = "multi_thread")]
async fn events_tell_of_scheduling_crashes_and_failed_probes_with_counts() {
    let image = crate::images::busybox();
    let mut repo = TestRepo::new();
    repo.write(
        "pods.yaml",
        &format!(
            "apiVersion: v1
kind: Pod
metadata: {{name: crash}}
spec:
  terminationGracePeriodSeconds: 0
  containers:
    - name: main
      image: {image}
      command: [sh, -c, 'echo boom; exit 1']
---
apiVersion: v1
kind: Pod
metadata: {{name: sick}}
spec:
  terminationGracePeriodSeconds: 0
  containers:
    - name: main
      image: {image}
      command: [sh, -c, 'exec sleep 3600']
      readinessProbe:
        exec: {{command: [sh, -c, 'echo not ready yet; exit 1']}}
        periodSeconds: 1
"
        ),
    );
    let sha = repo.commit("a crashing pod and an unready one");
    let cluster = Cluster::start_on("events", repo.path().to_str().unwrap(), 1, &[], 43).await;
    let find = |events: &Value, object: &str, reason: &str| {
        events.as_array().into_iter().flatten().find(|e| e["object"] == object && e["reason"] == reason).cloned()
    };
    wait_for("the crash to be counted twice", LIMIT, || async {
        let events = cluster.get("/api/v1/events").await;
        find(&events, "Pod/crash", "BackOff").is_some_and(|e| e["count"].as_i64() >= Some(2))
    })
    .await;
    wait_for("the failed probe to be told", LIMIT, || async {
        find(&cluster.get("/api/v1/events").await, "Pod/sick", "Unhealthy")
            .is_some_and(|e| e["count"].as_i64() >= Some(3))
    })
    .await;
    let unhealthy = find(&cluster.get("/api/v1/events?for=pod/sick").await, "Pod/sick", "Unhealthy").unwrap();
    assert!(
        unhealthy["message"].as_str().unwrap().contains("readiness probe: command exited with code 1: not ready yet"),
        "the probe's output: {unhealthy:#}"
    );
    let events = cluster.get("/api/v1/events?for=pod/crash").await;
    let back_off = find(&events, "Pod/crash", "BackOff").unwrap();
    assert_eq!(back_off["type"], "Warning");
    assert!(back_off["message"].as_str().unwrap().contains("exited with code 1"), "{back_off:#}");
    let scheduled = find(&events, "Pod/crash", "Scheduled").expect("a Scheduled event");
    assert!(scheduled["message"].as_str().unwrap().contains(&cluster.nodes[0].name), "{scheduled:#}");
    assert!(find(&events, "Pod/sick", "Unhealthy").is_none(), "--for keeps to its object");
    // Each attempt is a new container: one Created event, counted up.
    let created = find(&events, "Pod/crash", "Created").expect("a Created event");
    assert!(created["count"].as_i64() >= Some(2), "{created:#}");

    let here = repo.path();
    let (code, table, err) = cluster.cli(here, &["get", "events"], false);
    assert_eq!(code, 0, "{err}");
    assert!(table.contains("BackOff") && table.contains("Unhealthy") && table.contains("COUNT"), "{table}");
    // The sync is an event of its commit, with no namespace.
    let commit = format!("commit/{}", &sha[..7]);
    let (code, table, err) = cluster.cli(here, &["get", "events", "--for", &commit], false);
    assert_eq!(code, 0, "{err}");
    assert!(table.contains("SyncStarted") && !table.contains("BackOff"), "{table}");
    let started = table.lines().find(|l| l.contains("SyncStarted")).unwrap();
    assert!(started.starts_with("- "), "no namespace: {table}");
    let (code, _, err) = cluster.cli(here, &["get", "pods", "--for", "pod/crash"], false);
    assert_ne!(code, 0);
    assert!(err.contains("--for is for `berth get events`"), "{err}");
    let (code, described, err) = cluster.cli(here, &["describe", "pod/crash"], false);
    assert_eq!(code, 0, "{err}");
    let events_at = described.find("Events:").unwrap_or_else(|| panic!("{described}"));
    assert!(described[events_at..].contains("BackOff"), "{described}");

    // `get events -w` prints the table, then a row each time an event counts up: the probe
    // fails every second, so the Unhealthy row comes again with a higher count.
    let (_watcher, received) = watch_lines(&cluster, here, "events");
    let deadline = std::time::Instant::now() + LIMIT;
    let mut seen = Vec::new();
    let count_of = |line: &str| line.split_whitespace().nth(5).and_then(|c| c.parse::<i64>().ok());
    let mut counts = Vec::new();
    while counts.len() < 2 {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let Some(line) = received.recv_timeout(left).ok() else {
            panic!("no second Unhealthy row within {LIMIT:?}; printed: {seen:#?}")
        };
        if line.contains("Unhealthy") && line.contains("Pod/sick") {
            counts.extend(count_of(&line));
        }
        seen.push(line);
    }
    assert!(seen[0].starts_with("NAMESPACE"), "{seen:#?}");
    assert!(counts[1] > counts[0], "the count goes up: {seen:#?}");
}

/// Issue 19: `berth port-forward` reaches a pod's port from 127.0.0.1, through the server and
/// the connection the pod's node dials back; a Service's port too, and a closed port or a
/// caller without the token gets a clear refusal.
#[tokio::test(flavor = "multi_thread")]
async fn port_forward_serves_an_http_request_from_a_pod_and_a_service() {
    let image = crate::images::busybox();
    let mut repo = TestRepo::new();
    repo.write(
        "web.yaml",
        &format!(
            "apiVersion: v1
kind: Pod
metadata: {{name: web, labels: {{app: web}}}}
spec:
  terminationGracePeriodSeconds: 0
  containers:
    - name: main
      image: {image}
      command: [sh, -c, 'mkdir -p /www && echo hello through the tunnel > /www/index.html && exec httpd -f -p 8080 -h /www']
      ports: [{{containerPort: 8080, name: http}}]
      readinessProbe:
        tcpSocket: {{port: 8080}}
        periodSeconds: 1
---
apiVersion: v1
kind: Service
metadata: {{name: web}}
spec:
  selector: {{app: web}}
  ports: [{{name: plain, port: 80, targetPort: 8080}}, {{name: named, port: 81, targetPort: http}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: chatty}}
spec:
  terminationGracePeriodSeconds: 0
  containers:
    - name: main
      image: {image}
      command: [sh, -c, 'i=0; while [ $i -lt 60000 ]; do echo \"line $i of a log larger than two mebibytes\"; i=$((i+1)); done; touch /tmp/done; exec sleep 3600']
      readinessProbe:
        exec: {{command: [test, -f, /tmp/done]}}
        periodSeconds: 1
"
        ),
    );
    repo.commit("a web pod and its service");
    let cluster = Cluster::start_on("forward", repo.path().to_str().unwrap(), 1, &[], 44).await;
    cluster.wait_status("the pod to be ready", synced).await;

    let forward = |args: &[&str], token: bool| {
        let mut command = cluster.command();
        command.arg("port-forward").args(args);
        command.env_remove("BERTH_TOKEN").current_dir(std::env::temp_dir());
        if token {
            command.env("BERTH_TOKEN", cluster.token());
        }
        command.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut process = Process(command.spawn().unwrap());
        let stdout = process.0.stdout.take().unwrap();
        let mut line = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line).unwrap();
        let address = line
            .strip_prefix("Forwarding from ")
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_else(|| {
                let mut said = String::new();
                let _ = std::io::Read::read_to_string(process.0.stderr.as_mut().unwrap(), &mut said);
                panic!("no listening address printed: {line:?} {said}")
            })
            .to_owned();
        (process, address)
    };
    let fetch = |address: &str| -> String {
        use std::io::{Read as _, Write as _};
        let mut stream = std::net::TcpStream::connect(address).unwrap();
        stream.set_read_timeout(Some(LIMIT)).unwrap();
        stream.write_all(b"GET /index.html HTTP/1.0\r\nHost: web\r\n\r\n").unwrap();
        let mut answer = String::new();
        let _ = stream.read_to_string(&mut answer);
        answer
    };

    // A log of over 2 MiB comes whole through the node's answer.
    let (code, log, err) = cluster.cli(repo.path(), &["logs", "chatty"], true);
    assert_eq!(code, 0, "{err}");
    assert_eq!(log.lines().count(), 60000, "{err}");
    assert!(log.ends_with("line 59999 of a log larger than two mebibytes\n"));

    let (_pod, address) = forward(&["web", ":8080"], true);
    assert!(address.starts_with("127.0.0.1:"), "{address}");
    // Two connections, one after the other: each is a session of its own.
    for _ in 0..2 {
        let answer = fetch(&address);
        assert!(answer.starts_with("HTTP/1.") && answer.contains("hello through the tunnel"), "{answer}");
    }
    let (_service, address) = forward(&["svc/web", ":80"], true);
    let answer = fetch(&address);
    assert!(answer.contains("hello through the tunnel"), "{answer}");
    // A Service port whose targetPort is a container port's name.
    let (_named, address) = forward(&["svc/web", ":81"], true);
    let answer = fetch(&address);
    assert!(answer.contains("hello through the tunnel"), "{answer}");

    // A port nothing listens on: the connection ends, and the CLI says why.
    let (mut closed, address) = forward(&["web", ":9"], true);
    assert_eq!(fetch(&address), "", "nothing comes from a closed port");
    let mut stderr = closed.0.stderr.take().unwrap();
    let mut said = [0u8; 400];
    let n = std::io::Read::read(&mut stderr, &mut said).unwrap();
    let said = String::from_utf8_lossy(&said[..n]);
    assert!(said.contains("connecting to port 9 failed"), "{said}");

    // Without the token, the server refuses before it asks the node for anything.
    let (mut refused, address) = forward(&["web", ":8080"], false);
    assert_eq!(fetch(&address), "");
    let mut stderr = refused.0.stderr.take().unwrap();
    let mut said = [0u8; 400];
    let n = std::io::Read::read(&mut stderr, &mut said).unwrap();
    let said = String::from_utf8_lossy(&said[..n]);
    assert!(said.contains("401") || said.contains("token"), "{said}");
}

/// Issue 22: a Secret kept encrypted in Git. `berth secret encrypt` seals it for berth.yaml's
/// recipient, the server decrypts it with its age identity (as it does Flux's published SOPS
/// file), the values reach the container's env, and the plaintext is in no answer, page or
/// database file. A commit the server cannot decrypt fails and deletes nothing.
#[tokio::test(flavor = "multi_thread")]
async fn a_sops_encrypted_secret_reaches_the_container_and_nothing_else() {
    use age::secrecy::ExposeSecret as _;
    let canary = "canary-7f3a9c-never-in-the-clear";
    let identity = age::x25519::Identity::generate();
    let recipient = identity.to_public().to_string();
    let flux = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/sops");
    let keys = tempfile::tempdir().unwrap();
    let key_file = keys.path().join("age.txt");
    let flux_identity = std::fs::read_to_string(flux.join("age.txt")).unwrap();
    std::fs::write(&key_file, format!("{}\n{flux_identity}", identity.to_string().expose_secret())).unwrap();
    std::fs::set_permissions(&key_file, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();

    let mut repo = TestRepo::new();
    repo.write("berth.yaml", &format!("secrets:\n  ageRecipients: [{recipient}]\n"));
    repo.write(
        "secret.yaml",
        &format!("apiVersion: v1\nkind: Secret\nmetadata: {{name: creds}}\nstringData: {{token: {canary}}}\n"),
    );
    let (code, _, stderr) = berth(repo.path(), &["secret", "encrypt", "secret.yaml"]);
    assert_eq!(code, 0, "{stderr}");
    let sealed = std::fs::read_to_string(repo.path().join("secret.yaml")).unwrap();
    assert!(!sealed.contains(canary) && sealed.contains("ENC[AES256_GCM,") && sealed.contains(&recipient), "{sealed}");
    std::fs::copy(flux.join("secret.age.yaml"), repo.path().join("flux.yaml")).unwrap();
    let image = crate::images::busybox();
    repo.write(
        "app.yaml",
        &format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: app}}\nspec:\n  terminationGracePeriodSeconds: 0\n  containers:\n    - name: app\n      image: {image}\n      command: [sleep, '3600']\n      env:\n        - {{name: TOKEN, valueFrom: {{secretKeyRef: {{name: creds, key: token}}}}}}\n        - {{name: FLUX, valueFrom: {{secretKeyRef: {{name: sops-age, key: secret}}}}}}\n"
        ),
    );
    let first = repo.commit("an app and its encrypted secrets");
    let key_arg = key_file.to_str().unwrap().to_owned();
    let logs = tempfile::tempdir().unwrap();
    let cluster = Cluster::start_logged(
        "sops",
        repo.path().to_str().unwrap(),
        1,
        &["--age-key-file", &key_arg],
        44,
        &[],
        Some(logs.path().to_owned()),
    )
    .await;
    cluster.wait_status("the encrypted commit", |s| synced(s) && s["applied"] == first.as_str()).await;

    // The container got the plaintext (read past berth, straight from the engine).
    let container = berth::nodes::pods::engine_name(&[&cluster.nodes[0].name, "default", "app", "app", "0"]);
    let env = |name: &str| {
        let output =
            Command::new("docker").args(["exec", &container, "sh", "-c", &format!("echo ${name}")]).output().unwrap();
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    };
    assert_eq!(env("TOKEN"), canary);
    let flux_value = {
        let keys = berth::manifest::sops::Keys::parse(&flux_identity).unwrap();
        let text = std::fs::read_to_string(flux.join("secret.age.yaml")).unwrap();
        let parsed = berth::manifest::parse_file_keyed("flux.yaml", &text, &Default::default(), Some(&keys));
        String::from_utf8(parsed.secrets[0].1.get("secret").unwrap().to_vec()).unwrap()
    };
    assert_eq!(env("FLUX"), flux_value);

    // Nowhere else: not in an answer, a page, the logs berth serves, or the database files.
    let mut seen = String::new();
    for path in [
        "/api/v1/status",
        "/api/v1/plan",
        &format!("/api/v1/syncs/{first}"),
        "/api/v1/pods/default/app",
        "/api/v1/events",
    ] {
        seen.push_str(&cluster.client.get_text(path).await.unwrap());
    }
    for page in ["/", "/plan", &format!("/syncs/{first}"), "/pods/default/app", "/workloads"] {
        seen.push_str(&cluster.get_text(page, None).await.1);
    }
    let (_, described, _) = cluster.cli(repo.path(), &["describe", "pod/app"], true);
    seen.push_str(&described);
    for value in [canary, flux_value.as_str()] {
        assert!(!seen.contains(value), "a secret value is shown");
    }
    for file in std::fs::read_dir(cluster.db.path()).unwrap() {
        let bytes = std::fs::read(file.unwrap().path()).unwrap_or_default();
        assert!(!bytes.windows(canary.len()).any(|w| w == canary.as_bytes()), "the canary is in a state file");
    }
    // Nor in the server's or the agent's log, at debug level.
    let mut logged = 0;
    for file in std::fs::read_dir(logs.path()).unwrap() {
        let text = std::fs::read_to_string(file.unwrap().path()).unwrap_or_default();
        logged += text.len();
        for value in [canary, flux_value.as_str()] {
            assert!(!text.contains(value), "a secret value is in a log");
        }
    }
    assert!(logged > 0, "the processes logged something to look through");

    // A secret for a recipient the server has no identity of: the commit fails, the app runs on.
    let stranger = age::x25519::Identity::generate().to_public().to_string();
    repo.write("other.yaml", "apiVersion: v1\nkind: Secret\nmetadata: {name: other}\nstringData: {a: b}\n");
    let (code, _, stderr) = berth(repo.path(), &["secret", "encrypt", "other.yaml", "--recipient", &stranger]);
    assert_eq!(code, 0, "{stderr}");
    repo.write("app.yaml", "");
    let broken = repo.commit("a secret the server cannot read, and the app removed");
    let status = cluster
        .wait_status("the commit to fail", |s| s["head"]["sha"] == broken.as_str() && !s["failed"].is_null())
        .await;
    let reason = status["reason"].as_str().unwrap();
    assert!(reason.contains("cannot decrypt other.yaml: no matching age identity"), "{reason}");
    assert_eq!(status["applied"], first.as_str(), "{status:#}");
    assert_eq!(env("TOKEN"), canary, "the app of the last good commit runs on");

    // A new encrypted value: the plan says it changed, never what it is.
    let renewed = "renewed-canary-b81e";
    std::fs::remove_file(repo.path().join("other.yaml")).unwrap();
    git_restore(&repo, &first, "app.yaml");
    repo.write(
        "secret.yaml",
        &format!("apiVersion: v1\nkind: Secret\nmetadata: {{name: creds}}\nstringData: {{token: {renewed}}}\n"),
    );
    let (code, _, stderr) = berth(repo.path(), &["secret", "encrypt", "secret.yaml"]);
    assert_eq!(code, 0, "{stderr}");
    let third = repo.commit("a new token");
    cluster.wait_status("the new token", |s| synced(s) && s["applied"] == third.as_str()).await;
    let sync = cluster.client.get_text(&format!("/api/v1/syncs/{third}")).await.unwrap();
    assert!(sync.contains("(sensitive value changed)") && !sync.contains(renewed), "{sync}");
}

/// Puts back `file` as it was at `commit`.
fn git_restore(repo: &TestRepo, commit: &str, file: &str) {
    let status = Command::new("git").args(["checkout", commit, "--", file]).current_dir(repo.path()).status().unwrap();
    assert!(status.success());
}
