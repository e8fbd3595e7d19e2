//! The `berth agent` process against the control plane's agent API, both real: the API served on
//! 127.0.0.1 over a real SQLite file, the agent binary on the real Docker engine.

use crate::agent::{TestNode, container, docker, pod, wait_for};
use berth::nodes::protocol::{PodAssignment, PodPhase, PodStatus};
use berth::nodes::runtime::{ContainerRuntime, ContainerState};
use berth::server::agent_api::AgentApi;
use berth::store::Store;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const JOIN_TOKEN: &str = "join-token-for-tests";

struct TestServer {
    url: String,
    api: AgentApi,
    shutdown: CancellationToken,
    _dir: tempfile::TempDir,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn server() -> TestServer {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(&dir.path().join("berth.db")).await.unwrap());
    let api = AgentApi::new(store, JOIN_TOKEN);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let shutdown = CancellationToken::new();
    let router = api.router();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        axum::serve(listener, router).with_graceful_shutdown(stop.cancelled_owned()).await.unwrap();
    });
    TestServer { url, api, shutdown, _dir: dir }
}

fn agent(server: &TestServer, node: &TestNode, state_dir: &std::path::Path, token: Option<&str>) -> Child {
    let mut command = Command::new(env!("CARGO_BIN_EXE_berth"));
    command
        .args([
            "agent",
            "--server",
            &server.url,
            "--name",
            &node.name,
            "--heartbeat-seconds",
            "1",
            "--labels",
            "zone=a,disk=ssd",
        ])
        .arg("--state-dir")
        .arg(state_dir)
        .env("RUST_LOG", "warn")
        .env_remove("BERTH_JOIN_TOKEN")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if let Some(token) = token {
        command.args(["--join-token", token]);
    }
    command.spawn().expect("start berth agent")
}

fn stderr_of(child: Child) -> (i32, String) {
    let output = child.wait_with_output().unwrap();
    (output.status.code().unwrap_or(-1), String::from_utf8_lossy(&output.stderr).into_owned())
}

async fn reports(server: &TestServer, node: &TestNode) -> Vec<PodStatus> {
    server.api.store().reports(&node.name).await.unwrap()
}

async fn running_and_ready(server: &TestServer, node: &TestNode, pods: &[PodAssignment]) -> bool {
    let reported = reports(server, node).await;
    reported.len() == pods.len()
        && pods.iter().all(|p| {
            reported
                .iter()
                .any(|r| r.pod == p.pod && r.spec_hash == p.spec_hash && r.phase == PodPhase::Running && r.ready)
        })
}

/// Every container of the node with the time it started, sorted.
async fn started(docker: &berth::nodes::docker::Docker, node: &TestNode) -> Vec<(String, Option<String>)> {
    let mut all = Vec::new();
    for info in docker.list(&[(berth::nodes::pods::labels::NODE, &node.name)]).await.unwrap() {
        all.push((info.id.clone(), docker.inspect(&info.id).await.unwrap().started_at));
    }
    all.sort();
    all
}

fn terminate(child: &Child) {
    // SAFETY: sending a signal to our own child process.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
}

#[tokio::test(flavor = "multi_thread")]
async fn an_agent_without_credentials_will_not_start() {
    let server = server().await;
    let node = TestNode::new("nocred");
    let child = agent(&server, &node, node.state.path(), None);
    let (code, stderr) = stderr_of(child);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("no credentials:"), "{stderr}");
    assert!(server.api.store().node(&node.name).await.unwrap().is_none());

    let wrong = agent(&server, &node, node.state.path(), Some("not-the-token"));
    let (code, stderr) = stderr_of(wrong);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("refused to let node") && stderr.contains("the join token is not valid"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_agent_joins_heartbeats_runs_its_assignment_and_reports() {
    let docker = docker().await;
    let server = server().await;
    let node = TestNode::new("join");
    let mut child = agent(&server, &node, node.state.path(), Some(JOIN_TOKEN));

    wait_for("the node to join and heartbeat", Duration::from_secs(30), || async {
        server
            .api
            .store()
            .node(&node.name)
            .await
            .unwrap()
            .is_some_and(|n| n.last_heartbeat > n.joined_at - 1 && n.capacity.cpu_millis > 0)
    })
    .await;
    let record = server.api.store().node(&node.name).await.unwrap().unwrap();
    assert_eq!(record.labels.get("zone").map(String::as_str), Some("a"));
    assert!(record.capacity.memory_bytes > 0);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(node.state.path().join("credential.json")).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "the credential is readable by its owner only");

    let pods = vec![pod("web-1", vec![container("main", "sleep 3600")])];
    server.api.assign(&node.name, &pods).await.unwrap();
    wait_for("the pod to be reported running and ready", Duration::from_secs(30), || {
        running_and_ready(&server, &node, &pods)
    })
    .await;
    let id = reports(&server, &node).await[0].containers[0].container_id.clone().unwrap();
    assert_eq!(docker.inspect(&id).await.unwrap().state, ContainerState::Running);

    // A dead container is seen through the engine's events and reported.
    let killed = Command::new("docker").args(["kill", &id]).output().unwrap();
    assert!(killed.status.success());
    wait_for("the death to be reported", Duration::from_secs(15), || async {
        reports(&server, &node)
            .await
            .first()
            .is_some_and(|p| p.containers[0].container_id.as_deref() != Some(id.as_str()) || !p.ready)
    })
    .await;

    // Another agent claiming the same name with other credentials is refused.
    let other_state = tempfile::tempdir().unwrap();
    let (code, stderr) = stderr_of(agent(&server, &node, other_state.path(), Some(JOIN_TOKEN)));
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("has joined already with other credentials"), "{stderr}");

    // A forged credential opens nothing.
    let forged = reqwest::Client::new()
        .get(format!("{}/api/v1/agent/nodes/{}/assignment", server.url, node.name))
        .bearer_auth("forged")
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), reqwest::StatusCode::UNAUTHORIZED);
    let join_token_as_credential = reqwest::Client::new()
        .get(format!("{}/api/v1/agent/nodes/{}/assignment", server.url, node.name))
        .bearer_auth(JOIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(join_token_as_credential.status(), reqwest::StatusCode::UNAUTHORIZED);

    // Removed from the assignment: the pod goes.
    server.api.assign(&node.name, &[]).await.unwrap();
    wait_for("the pod to be removed", Duration::from_secs(30), || async {
        docker.list(&[(berth::nodes::pods::labels::NODE, &node.name)]).await.unwrap().is_empty()
    })
    .await;
    child.kill().unwrap();
    child.wait().unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_agent_adopts_its_pods_and_a_stopped_one_stops_nothing() {
    let docker = docker().await;
    let server = server().await;
    let node = TestNode::new("kill9");
    let mut child = agent(&server, &node, node.state.path(), Some(JOIN_TOKEN));
    let pods = vec![pod("keep", vec![container("main", "sleep 3600"), container("side", "sleep 3600")])];
    wait_for("the node to join", Duration::from_secs(30), || async {
        server.api.store().node(&node.name).await.unwrap().is_some()
    })
    .await;
    server.api.assign(&node.name, &pods).await.unwrap();
    wait_for("the pod to run", Duration::from_secs(30), || running_and_ready(&server, &node, &pods)).await;
    let before = started(&docker, &node).await;
    assert_eq!(before.len(), 3, "a sandbox and two containers");

    // kill -9: no chance to clean up. The containers run on.
    child.kill().unwrap();
    child.wait().unwrap();
    for (id, _) in &before {
        assert_eq!(docker.inspect(id).await.unwrap().state, ContainerState::Running);
    }
    // A new agent, same state folder, no join token: it adopts, restarts nothing.
    let generation_before = server.api.assign(&node.name, &pods).await.unwrap();
    let child = agent(&server, &node, node.state.path(), None);
    wait_for("the new agent to report the new generation", Duration::from_secs(30), || async {
        running_and_ready(&server, &node, &pods).await && server.api.store().reports(&node.name).await.is_ok() && {
            let (generation, _) = server.api.store().assignment(&node.name).await.unwrap();
            generation == generation_before
        }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let after = started(&docker, &node).await;
    assert_eq!(after, before, "same containers, never restarted");
    assert!(reports(&server, &node).await[0].containers.iter().all(|c| c.restart_count == 0));

    // SIGTERM: the agent ends cleanly and the pod keeps running.
    terminate(&child);
    let (code, stderr) = stderr_of(child);
    assert_eq!(code, 0, "{stderr}");
    for (id, _) in &before {
        assert_eq!(
            docker.inspect(id).await.unwrap().state,
            ContainerState::Running,
            "stopping the agent stopped a workload"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_agent_that_missed_assignments_converges_to_the_latest() {
    let docker = docker().await;
    let server = server().await;
    let node = TestNode::new("missed");
    let child = agent(&server, &node, node.state.path(), Some(JOIN_TOKEN));
    wait_for("the node to join", Duration::from_secs(30), || async {
        server.api.store().node(&node.name).await.unwrap().is_some()
    })
    .await;
    let first = vec![pod("a", vec![container("main", "sleep 3600")]), pod("b", vec![container("main", "sleep 3600")])];
    server.api.assign(&node.name, &first).await.unwrap();
    wait_for("the first assignment to run", Duration::from_secs(30), || running_and_ready(&server, &node, &first))
        .await;
    terminate(&child);
    assert_eq!(stderr_of(child).0, 0);

    // Ten assignments while the agent is away; only the last one matters.
    let mut last = Vec::new();
    for round in 0..10 {
        last = vec![
            pod("b", vec![container("main", "sleep 3600")]),
            pod(&format!("c{round}"), vec![container("main", "sleep 3600")]),
        ];
        server.api.assign(&node.name, &last).await.unwrap();
    }
    let mut child = agent(&server, &node, node.state.path(), None);
    wait_for("the latest assignment to run", Duration::from_secs(30), || running_and_ready(&server, &node, &last))
        .await;
    let running: std::collections::BTreeSet<String> = docker
        .list(&[(berth::nodes::pods::labels::NODE, &node.name)])
        .await
        .unwrap()
        .into_iter()
        .filter_map(|c| c.labels.get(berth::nodes::pods::labels::POD).cloned())
        .collect();
    assert_eq!(running, ["b".to_owned(), "c9".to_owned()].into_iter().collect());
    child.kill().unwrap();
    child.wait().unwrap();
}
