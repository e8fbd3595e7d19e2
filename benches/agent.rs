//! The node agent's figures, on the real Docker engine:
//! - overhead per pod start: a converge pass that starts one pod, against raw engine calls that
//!   create and start the same two containers (sandbox and app);
//! - resident memory and CPU of the `berth agent` process, idle, running 50 pods, sampling
//!   their usage every 10 s;
//! - time from a container dying to the agent's report saying so.
//!
//! Medians over repeated runs. `cargo bench --bench agent`; BENCH_QUICK=1 for a short run.

// Shared with the tests, which use more of it than this benchmark does.
#[allow(dead_code)]
#[path = "../tests/it/images.rs"]
mod images;

#[allow(dead_code)]
#[path = "common/process.rs"]
mod process;

use berth::manifest::Kind;
use berth::manifest::types::{PodSpec, RestartPolicy};
use berth::nodes::docker::Docker;
use berth::nodes::pods::{PodManager, PodManagerConfig, labels};
use berth::nodes::protocol::{PodAssignment, PodPhase};
use berth::nodes::runtime::{ContainerRuntime, ContainerSpec, Network};
use berth::server::agent_api::AgentApi;
use berth::store::Store;
use process::{cpu_ticks, rss_kib};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn pod(name: &str) -> PodAssignment {
    PodAssignment {
        pod: name.into(),
        namespace: "bench".into(),
        workload_kind: Kind::Deployment,
        workload_name: "bench".into(),
        revision: "0".repeat(40),
        spec_hash: "h".into(),
        config_hash: String::new(),
        uid: format!("uid-{name}"),
        spec: PodSpec {
            init_containers: Vec::new(),
            containers: vec![images::container("main", "exec sleep 3600")],
            volumes: Vec::new(),
            node_selector: BTreeMap::new(),
            restart_policy: Some(RestartPolicy::Always),
            termination_grace_period_seconds: Some(0),
            security_context: None,
        },
        env: BTreeMap::new(),
        files: BTreeMap::new(),
        secret_env: BTreeMap::new(),
        node_env: Vec::new(),
    }
}

fn cleanup(node: &str) {
    let filter = format!("label={}={node}", labels::NODE);
    if let Ok(output) = std::process::Command::new("docker").args(["ps", "-aq", "--filter", &filter]).output() {
        let ids: Vec<String> = String::from_utf8_lossy(&output.stdout).split_whitespace().map(str::to_owned).collect();
        if !ids.is_empty() {
            let _ = std::process::Command::new("docker").arg("rm").arg("-f").args(&ids).output();
        }
    }
}

/// Creates and starts a sandbox and a container joined to it with raw engine calls, as a pod is;
/// returns how long that took, and removes them.
async fn raw_pod_start(docker: &Docker, node: &str, run: usize) -> Duration {
    let start = Instant::now();
    let mut labels = BTreeMap::from([(labels::NODE.to_owned(), format!("{node}-raw"))]);
    let sandbox = docker
        .create(&ContainerSpec {
            name: format!("{node}-raw-{run}"),
            image: berth::nodes::sandbox::image_name(),
            entrypoint: None,
            args: None,
            env: Vec::new(),
            working_dir: None,
            labels: labels.clone(),
            network: Network::Own { hostname: "raw".into(), ports: Vec::new(), dns: None },
            mounts: Vec::new(),
            memory_limit_bytes: None,
            cpu_limit_nanos: None,
            security: Default::default(),
        })
        .await
        .unwrap();
    docker.start(&sandbox).await.unwrap();
    labels.insert("role".into(), "app".into());
    let app = docker
        .create(&ContainerSpec {
            name: format!("{node}-raw-{run}-main"),
            image: images::busybox().into(),
            entrypoint: Some(vec!["sleep".into(), "3600".into()]),
            args: None,
            env: Vec::new(),
            working_dir: None,
            labels,
            network: Network::JoinContainer(sandbox.clone()),
            mounts: Vec::new(),
            memory_limit_bytes: None,
            cpu_limit_nanos: None,
            security: Default::default(),
        })
        .await
        .unwrap();
    docker.start(&app).await.unwrap();
    let elapsed = start.elapsed();
    docker.remove(&app).await.unwrap();
    docker.remove(&sandbox).await.unwrap();
    elapsed
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let quick = std::env::var_os("BENCH_QUICK").is_some();
    let runs = if quick { 5 } else { 21 };
    let docker = Docker::connect().await.expect("the Docker engine");
    images::import_busybox(&docker).await;
    let node = format!("bench{}", std::process::id());
    let state = tempfile::tempdir().unwrap();
    let manager = PodManager::new(Arc::new(docker.clone()), PodManagerConfig::new(&node, "127.0.0.1", state.path()))
        .await
        .unwrap();

    // Raw engine calls for the same two containers a pod is, interleaved with agent passes
    // (alternating which goes first) so that drift on a shared engine hits both alike.
    let mut raw = Vec::new();
    let mut agent = Vec::new();
    for run in 0..runs {
        for side in if run % 2 == 0 { [0, 1] } else { [1, 0] } {
            if side == 0 {
                raw.push(raw_pod_start(&docker, &node, run).await);
            } else {
                let desired = vec![pod(&format!("p{run}"))];
                let start = Instant::now();
                let summary = manager.converge(&desired).await.unwrap();
                agent.push(start.elapsed());
                assert_eq!(summary.pods_created, 1);
                // The pod stops in the background; the next start is measured once it is gone.
                while !manager.observe(&[]).await.unwrap().is_empty() {
                    manager.converge(&[]).await.unwrap();
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
    }
    let mut paired: Vec<f64> = raw.iter().zip(&agent).map(|(r, a)| ms(*a) - ms(*r)).collect();
    paired.sort_by(f64::total_cmp);
    let paired_median = paired[paired.len() / 2];
    let (raw_median, agent_median) = (median(raw), median(agent));
    let overhead = ms(agent_median) - ms(raw_median);
    println!("pod start, raw engine calls (sandbox + container)  median {:>7.2} ms  (n={runs})", ms(raw_median));
    println!("pod start, agent converge pass                      median {:>7.2} ms  (n={runs})", ms(agent_median));
    println!(
        "agent overhead per pod start (difference of medians)  {overhead:>+8.2} ms  goal 20.00 ms  ratio {:.2}",
        overhead / 20.0
    );
    println!("agent overhead per pod start (median of paired runs)  {paired_median:>+8.2} ms");
    cleanup(&node);
    cleanup(&format!("{node}-raw"));

    // The agent process, idle with 50 pods.
    let db = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(&db.path().join("berth.db")).await.unwrap());
    let api = AgentApi::new(store.clone(), "bench-token");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let router = api.router();
    let server = tokio::spawn(async move { axum::serve(listener, router).await });
    let agent_node = format!("{node}-agent");
    let agent_state = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["agent", "--server", &url, "--join-token", "bench-token", "--name", &agent_node])
        .arg("--state-dir")
        .arg(agent_state.path())
        .env("RUST_LOG", "warn")
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while store.node(&agent_node).await.unwrap().is_none() {
        assert!(Instant::now() < deadline, "the agent did not join");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let pods: Vec<PodAssignment> = (0..50).map(|i| pod(&format!("idle{i}"))).collect();
    api.assign(&agent_node, &pods).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let reported = store.reports(&agent_node).await.unwrap();
        if reported.len() == 50 && reported.iter().all(|p| p.phase == PodPhase::Running && p.ready) {
            break;
        }
        assert!(Instant::now() < deadline, "50 pods did not start in 120 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Sampling is on: the server holds the usage of all 50 pods before the measurement starts,
    // and the window holds several samples (every 10 s).
    let deadline = Instant::now() + Duration::from_secs(60);
    while api.usage().pods().len() < 50 {
        assert!(Instant::now() < deadline, "the usage of 50 pods did not arrive in 60 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let window = Duration::from_secs(if quick { 4 } else { 30 });
    let ticks_before = cpu_ticks(child.id());
    let mut rss = Vec::new();
    let started = Instant::now();
    while started.elapsed() < window {
        rss.push(rss_kib(child.id()));
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let ticks = cpu_ticks(child.id()) - ticks_before;
    let hertz = 100.0;
    rss.sort();
    let rss_median = rss[rss.len() / 2];
    println!(
        "agent resident memory, idle, 50 pods, sampling     median {:>7.2} MiB goal 20.00 MiB ratio {:.2}",
        rss_median as f64 / 1024.0,
        rss_median as f64 / 1024.0 / 20.0
    );
    println!(
        "agent CPU, idle, 50 pods, sampling                  {:>7.3} cores over {} s",
        ticks as f64 / hertz / window.as_secs_f64(),
        window.as_secs()
    );

    // Death to report.
    let mut latencies = Vec::new();
    for round in 0..runs.min(10) {
        let reported = store.reports(&agent_node).await.unwrap();
        let target = &reported[round];
        let id = target.containers[0].container_id.clone().unwrap();
        let start = Instant::now();
        docker.client().kill_container(&id, None::<bollard::query_parameters::KillContainerOptions>).await.unwrap();
        let deadline = start + Duration::from_secs(10);
        loop {
            let now = store.reports(&agent_node).await.unwrap();
            if now.iter().any(|p| p.pod == target.pod && !p.ready) {
                latencies.push(start.elapsed());
                break;
            }
            assert!(Instant::now() < deadline, "the death of {id} was not reported in 10 s");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    let death = median(latencies);
    println!(
        "container death to report                           median {:>7.2} ms  goal 1000.00 ms ratio {:.2}",
        ms(death),
        death.as_secs_f64()
    );

    child.kill().unwrap();
    child.wait().unwrap();
    server.abort();
    cleanup(&agent_node);
}
