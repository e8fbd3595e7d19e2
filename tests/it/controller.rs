//! The controller end to end: a real Git repository, the agent API over a real SQLite file, and
//! two `berth agent` processes on the real engine, each its own node on its own 127.0.0.x.

use crate::agent::{TestNode, docker, wait_for};
use crate::support::TestRepo;
use berth::apply::controller::{Controller, ControllerConfig, ReconcileSummary};
use berth::nodes::pods::labels;
use berth::nodes::runtime::ContainerRuntime;
use berth::server::agent_api::AgentApi;
use berth::store::Store;
use berth::sync::Loader;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const TOKEN: &str = "controller-test-token";

fn deployment(replicas: u32, version: &str, surge: u32, unavailable: u32) -> String {
    crate::images::deployment("web", Some("shop"), replicas, version, Some((surge, unavailable)))
}

struct Cluster {
    api: AgentApi,
    controller: Controller<AgentApi>,
    agents: Vec<(TestNode, Child)>,
    shutdown: CancellationToken,
    _db: tempfile::TempDir,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for (_, child) in &mut self.agents {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.shutdown.cancel();
    }
}

async fn cluster(test: &str, addresses: &[&str], grace: i64) -> Cluster {
    docker().await;
    let db = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(&db.path().join("berth.db")).await.unwrap());
    let api = AgentApi::new(store.clone(), TOKEN);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let shutdown = CancellationToken::new();
    let (router, stop) = (api.router(), shutdown.clone());
    tokio::spawn(async move { axum::serve(listener, router).with_graceful_shutdown(stop.cancelled_owned()).await });
    let mut agents = Vec::new();
    for (index, address) in addresses.iter().enumerate() {
        let node = TestNode::new(&format!("{test}{index}"));
        let child = Command::new(env!("CARGO_BIN_EXE_berth"))
            .args([
                "agent",
                "--server",
                &url,
                "--join-token",
                TOKEN,
                "--name",
                &node.name,
                "--address",
                address,
                "--heartbeat-seconds",
                "1",
            ])
            .arg("--state-dir")
            .arg(node.state.path())
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        agents.push((node, child));
    }
    let controller = Controller::new(store.clone(), api.clone(), ControllerConfig { node_grace_seconds: grace });
    for (node, _) in &agents {
        wait_for("the agent to join", Duration::from_secs(30), || async {
            store.node(&node.name).await.unwrap().is_some()
        })
        .await;
    }
    Cluster { api, controller, agents, shutdown, _db: db }
}

fn now() -> i64 {
    berth::server::now()
}

/// Reconciles every 200 ms until `done` holds for a pass; returns every pass's summary.
async fn drive(
    cluster: &Cluster,
    loaded: &berth::sync::Loaded,
    what: &str,
    done: impl Fn(&ReconcileSummary) -> bool,
) -> Vec<ReconcileSummary> {
    let mut passes = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let summary = cluster.controller.reconcile(loaded, &Default::default(), now()).await.unwrap();
        let finished = done(&summary);
        passes.push(summary);
        if finished {
            return passes;
        }
        assert!(std::time::Instant::now() < deadline, "timed out waiting for {what}: {:?}", passes.last());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Every container of the test's nodes, as (node, pod, running).
async fn containers(cluster: &Cluster) -> Vec<(String, String)> {
    let docker = docker().await;
    let mut all = Vec::new();
    for (node, _) in &cluster.agents {
        for info in docker.list(&[(labels::NODE, &node.name), (labels::ROLE, "container")]).await.unwrap() {
            if info.state == berth::nodes::runtime::ContainerState::Running {
                all.push((node.name.clone(), info.labels[labels::POD].clone()));
            }
        }
    }
    all.sort();
    all
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deployment_is_spread_rolled_out_within_its_limits_and_pruned() {
    let cluster = cluster("roll", &["127.0.0.2", "127.0.0.3"], 30).await;
    let mut repo = TestRepo::new();
    repo.write("web.yaml", &deployment(4, "v1", 1, 1));
    repo.commit("v1");
    let mut loader = Loader::open(repo.path()).unwrap();
    let v1 = loader.load("HEAD").unwrap();
    assert!(v1.is_valid(), "{:?}", v1.diagnostics);
    drive(&cluster, &v1, "4 ready replicas", |s| s.complete() && s.workloads[0].available == 4).await;
    let running = containers(&cluster).await;
    assert_eq!(running.len(), 4, "{running:?}");
    let on_first = running.iter().filter(|(n, _)| *n == cluster.agents[0].0.name).count();
    assert_eq!(on_first, 2, "replicas are spread across the two nodes: {running:?}");

    repo.write("web.yaml", &deployment(4, "v2", 1, 1));
    repo.commit("v2");
    let v2 = loader.load("HEAD").unwrap();
    let passes = drive(&cluster, &v2, "the rollout to complete", |s| s.complete() && s.workloads[0].updated == 4).await;
    for pass in &passes {
        let web = &pass.workloads[0];
        assert!(web.total <= 5, "more than replicas + maxSurge pods: {web:?}");
        assert!(web.available >= 3, "fewer than replicas - maxUnavailable available: {web:?}");
    }
    // The last old pod leaves its node an assignment round trip after the rollout completes.
    let hash = berth::apply::pods::template_hash(v2.resources.iter().find(|r| r.key.name == "web").unwrap());
    wait_for("exactly the four new pods to run", Duration::from_secs(30), || async {
        let running = containers(&cluster).await;
        running.len() == 4 && running.iter().all(|(_, pod)| pod.contains(&hash))
    })
    .await;

    repo.clear().write("other.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: left\ndata:\n  a: b\n");
    repo.commit("remove web");
    let pruned = loader.load("HEAD").unwrap();
    drive(&cluster, &pruned, "the pods to be removed", |s| s.workloads.is_empty() && s.nodes_changed == 0).await;
    wait_for("the containers to go", Duration::from_secs(30), || async { containers(&cluster).await.is_empty() }).await;
    let _ = &cluster.api;
}

#[tokio::test(flavor = "multi_thread")]
async fn pods_of_a_lost_node_move_and_return_nowhere() {
    let mut cluster = cluster("loss", &["127.0.0.4", "127.0.0.5"], 3).await;
    let mut repo = TestRepo::new();
    repo.write("web.yaml", &deployment(2, "v1", 1, 1));
    repo.commit("v1");
    let loaded = Loader::open(repo.path()).unwrap().load("HEAD").unwrap();
    drive(&cluster, &loaded, "2 ready replicas", |s| s.complete()).await;
    // Stop the second node's agent: its pods keep running, but it no longer heartbeats.
    let (lost, mut child) = cluster.agents.remove(1);
    child.kill().unwrap();
    child.wait().unwrap();
    drive(&cluster, &loaded, "both replicas on the remaining node", |s| {
        s.ready_nodes == 1 && s.complete() && s.workloads[0].available == 2
    })
    .await;
    let running = containers(&cluster).await;
    assert_eq!(running.iter().filter(|(n, _)| *n == cluster.agents[0].0.name).count(), 2);
    let (_, assigned) = cluster.api.store().assignment(&lost.name).await.unwrap();
    assert!(assigned.is_empty(), "the lost node is told to run nothing, so its stale pods go when it returns");
}
