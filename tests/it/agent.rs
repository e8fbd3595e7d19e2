//! The node agent's pod layer against the real Docker engine on this machine. Images are built
//! locally (busybox from Debian's busybox-static); nothing is pulled from a registry. These tests
//! fail, never skip, when no engine answers.

use berth::manifest::Kind;
use berth::manifest::types::*;
use berth::nodes::docker::Docker;
use berth::nodes::pods::{PodManager, PodManagerConfig, labels};
use berth::nodes::protocol::{ContainerStateName, PodAssignment, PodPhase, PodStatus};
use berth::nodes::runtime::{ContainerRuntime, ContainerState};
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Connects to the engine and makes the test image present.
pub async fn docker() -> Docker {
    let docker = Docker::connect().await.unwrap_or_else(|error| {
        panic!(
            "these tests need the Docker engine on this machine and none answered ({error}); start it (CI={:?})",
            std::env::var("CI")
        )
    });
    crate::images::import_busybox(&docker).await;
    docker
}

/// A node of one test: a unique name, a state folder, and cleanup of everything labelled for it,
/// even when the test panics.
pub struct TestNode {
    pub name: String,
    pub state: tempfile::TempDir,
}

impl TestNode {
    pub fn new(test: &str) -> TestNode {
        let suffix: u32 = std::process::id() ^ (Instant::now().elapsed().subsec_nanos());
        TestNode { name: format!("t{}-{test}", suffix % 100_000), state: tempfile::tempdir().unwrap() }
    }

    pub fn config(&self) -> PodManagerConfig {
        let mut config = PodManagerConfig::new(&self.name, "127.0.0.1", self.state.path());
        config.backoff_base = Duration::from_millis(300);
        config.backoff_max = Duration::from_secs(5);
        config
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        let filter = format!("label={}={}", labels::NODE, self.name);
        let listed = std::process::Command::new("docker").args(["ps", "-aq", "--filter", &filter]).output();
        if let Ok(output) = listed {
            let ids: Vec<String> =
                String::from_utf8_lossy(&output.stdout).split_whitespace().map(str::to_owned).collect();
            if !ids.is_empty() {
                let _ = std::process::Command::new("docker").arg("rm").arg("-f").args(&ids).output();
            }
        }
        let volumes = std::process::Command::new("docker").args(["volume", "ls", "-q", "--filter", &filter]).output();
        if let Ok(output) = volumes {
            for volume in String::from_utf8_lossy(&output.stdout).split_whitespace() {
                let _ = std::process::Command::new("docker").args(["volume", "rm", "-f", volume]).output();
            }
        }
        // Its Secret volume files live on /dev/shm, outside its state folder: they go with it.
        let _ = std::fs::remove_dir_all(self.config().secrets_dir);
    }
}

/// Polls `condition` until it holds or `limit` passes; the deadline is a failure.
pub async fn wait_for<F, Fut>(what: &str, limit: Duration, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    while !condition().await {
        assert!(Instant::now() < deadline, "timed out after {limit:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub use crate::images::container;

pub fn pod(name: &str, containers: Vec<Container>) -> PodAssignment {
    PodAssignment {
        pod: name.to_owned(),
        namespace: "shop".to_owned(),
        workload_kind: Kind::Deployment,
        workload_name: "web".to_owned(),
        revision: "0123456789abcdef0123456789abcdef01234567".to_owned(),
        spec_hash: "hash-1".to_owned(),
        config_hash: String::new(),
        uid: format!("uid-{name}"),
        spec: PodSpec {
            init_containers: Vec::new(),
            containers,
            volumes: Vec::new(),
            node_selector: BTreeMap::new(),
            restart_policy: Some(RestartPolicy::Always),
            termination_grace_period_seconds: Some(1),
            security_context: None,
        },
        env: BTreeMap::new(),
        files: BTreeMap::new(),
        secret_env: BTreeMap::new(),
        node_env: Vec::new(),
    }
}

async fn manager(node: &TestNode, docker: &Docker) -> PodManager<Docker> {
    PodManager::new(Arc::new(docker.clone()), node.config()).await.unwrap()
}

/// Converges towards `desired` until no other pod is left on the node (pods that are no longer
/// assigned stop in the background, within their grace); the pods removed on the way.
pub(crate) async fn converge_until_gone(manager: &PodManager<Docker>, desired: &[PodAssignment]) -> usize {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut removed = 0;
    loop {
        removed += manager.converge(desired).await.unwrap().pods_removed;
        let statuses = manager.observe(desired).await.unwrap();
        if statuses.iter().all(|s| !s.terminating) {
            return removed;
        }
        assert!(Instant::now() < deadline, "pods still stop after a minute: {statuses:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn status(manager: &PodManager<Docker>, desired: &[PodAssignment]) -> PodStatus {
    manager.observe(desired).await.unwrap().remove(0)
}

async fn exec_output(docker: &Docker, id: &str, script: &str) -> String {
    let output = std::process::Command::new("docker").args(["exec", id, "sh", "-c", script]).output().unwrap();
    let _ = docker;
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[tokio::test]
async fn pods_are_created_replaced_and_removed() {
    let docker = docker().await;
    let node = TestNode::new("life");
    let manager = manager(&node, &docker).await;
    let mut desired = vec![pod("web-1", vec![container("main", "sleep 3600")])];
    desired[0].spec.volumes.push(Volume {
        name: "scratch".into(),
        empty_dir: Some(EmptyDirVolumeSource {}),
        host_path: None,
        config_map: None,
        secret: None,
        downward_api: None,
        persistent_volume_claim: None,
    });

    let summary = manager.converge(&desired).await.unwrap();
    assert_eq!(summary.pods_created, 1);
    let first = status(&manager, &desired).await;
    assert_eq!(first.phase, PodPhase::Running);
    assert_eq!(first.containers[0].state, ContainerStateName::Running);
    let first_id = first.containers[0].container_id.clone().unwrap();
    let info = docker.inspect(&first_id).await.unwrap();
    for (key, value) in [
        (labels::NODE, node.name.as_str()),
        (labels::NAMESPACE, "shop"),
        (labels::POD, "web-1"),
        (labels::WORKLOAD_KIND, "Deployment"),
        (labels::WORKLOAD_NAME, "web"),
        (labels::SPEC_HASH, "hash-1"),
        (labels::CONTAINER, "main"),
    ] {
        assert_eq!(info.labels.get(key).map(String::as_str), Some(value), "label {key}");
    }
    assert_eq!(info.labels[labels::REVISION], desired[0].revision);
    // Its log rotates: it never fills the node's disk.
    let logging = std::process::Command::new("docker")
        .args(["inspect", "-f", "{{.HostConfig.LogConfig.Type}} {{index .HostConfig.LogConfig.Config \"max-size\"}} {{index .HostConfig.LogConfig.Config \"max-file\"}}", &first_id])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&logging.stdout).trim(), "json-file 10m 3");
    let volume = berth::nodes::pods::engine_name(&[&node.name, "shop", "web-1", "scratch"]);
    assert!(docker.client().inspect_volume(&volume).await.is_ok(), "the emptyDir volume exists");

    // Converging again changes nothing.
    let again = manager.converge(&desired).await.unwrap();
    assert_eq!((again.pods_created, again.pods_removed, again.containers_restarted), (0, 0, 0));
    assert_eq!(status(&manager, &desired).await.containers[0].container_id.as_deref(), Some(first_id.as_str()));

    // A new spec hash replaces the pod.
    desired[0].spec_hash = "hash-2".into();
    let replaced = manager.converge(&desired).await.unwrap();
    assert_eq!((replaced.pods_created, replaced.pods_removed), (1, 1));
    let second = status(&manager, &desired).await;
    assert_ne!(second.containers[0].container_id.as_deref(), Some(first_id.as_str()));
    assert!(matches!(docker.inspect(&first_id).await, Err(berth::nodes::runtime::RuntimeError::NotFound { .. })));

    // No longer assigned: stopped, removed, with its emptyDir volume.
    let first = manager.converge(&[]).await.unwrap();
    assert_eq!(first.pods_removed, 0, "a pod that is no longer assigned stops in the background");
    let stopping = manager.observe(&[]).await.unwrap();
    assert!(stopping.iter().all(|s| s.terminating && !s.ready), "it is reported stopping: {stopping:?}");
    assert_eq!(converge_until_gone(&manager, &[]).await, 1);
    assert!(manager.observe(&[]).await.unwrap().is_empty(), "nothing is reported once it is gone");
    assert!(docker.list(&[(labels::NODE, &node.name)]).await.unwrap().is_empty());
    assert!(docker.client().inspect_volume(&volume).await.is_err(), "the emptyDir volume is removed with its pod");
}

#[tokio::test]
async fn containers_of_a_pod_share_localhost_and_an_empty_dir() {
    let docker = docker().await;
    let node = TestNode::new("share");
    let manager = manager(&node, &docker).await;
    let mut server = container("server", "mkdir -p /shared/www && httpd -f -p 8080 -h /shared/www");
    server.ports.push(ContainerPort {
        name: Some("http".into()),
        container_port: 8080,
        host_port: None,
        protocol: Some(Protocol::Tcp),
    });
    let writer = container(
        "writer",
        "echo hello-from-writer > /shared/www/index.html; until wget -q -O /shared/got http://127.0.0.1:8080/index.html; do sleep 0.2; done; sleep 3600",
    );
    let mut desired = vec![pod("pair", vec![server, writer])];
    desired[0].spec.volumes.push(Volume {
        name: "shared".into(),
        empty_dir: Some(EmptyDirVolumeSource {}),
        host_path: None,
        config_map: None,
        secret: None,
        downward_api: None,
        persistent_volume_claim: None,
    });
    for container in &mut desired[0].spec.containers {
        container.volume_mounts.push(VolumeMount {
            name: "shared".into(),
            mount_path: "/shared".into(),
            read_only: None,
            sub_path: None,
        });
    }
    manager.converge(&desired).await.unwrap();
    let writer_id = status(&manager, &desired).await.containers[1].container_id.clone().unwrap();
    wait_for("the writer to fetch the page over localhost", Duration::from_secs(20), || async {
        exec_output(&docker, &writer_id, "cat /shared/got 2>/dev/null").await.trim() == "hello-from-writer"
    })
    .await;

    // The port is published on the node's address and reported back.
    let reported = status(&manager, &desired).await.host_ports;
    assert_eq!(reported.len(), 1, "{reported:?}");
    assert_eq!((reported[0].container_port, reported[0].host_ip.as_str()), (8080, "127.0.0.1"));
    let address = format!("127.0.0.1:{}", reported[0].host_port);
    wait_for("the published port to answer", Duration::from_secs(20), || {
        let address = address.clone();
        async move {
            use std::io::{Read, Write};
            let Ok(mut stream) = std::net::TcpStream::connect(&address) else { return false };
            let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
            let _ = stream.write_all(b"GET /index.html HTTP/1.0\r\n\r\n");
            let mut body = String::new();
            stream.read_to_string(&mut body).is_ok() && body.contains("hello-from-writer")
        }
    })
    .await;
}

#[tokio::test]
async fn config_map_files_and_env_appear_in_the_container() {
    let docker = docker().await;
    let node = TestNode::new("files");
    let manager = manager(&node, &docker).await;
    let mut main = container("main", "sleep 3600");
    main.volume_mounts.push(VolumeMount {
        name: "config".into(),
        mount_path: "/etc/app".into(),
        read_only: None,
        sub_path: None,
    });
    let mut desired = vec![pod("cfg", vec![main])];
    desired[0].spec.volumes.push(Volume {
        name: "config".into(),
        empty_dir: None,
        host_path: None,
        config_map: Some(ConfigMapVolumeSource {
            name: "settings".into(),
            items: Vec::new(),
            default_mode: Some(0o644),
            optional: None,
        }),
        secret: None,
        downward_api: None,
        persistent_volume_claim: None,
    });
    desired[0].files.insert("config".into(), BTreeMap::from([("app.conf".to_owned(), b"greeting = hello\n".to_vec())]));
    desired[0].env.insert("main".into(), vec![("GREETING".into(), "hello from env".into())]);
    manager.converge(&desired).await.unwrap();
    let id = status(&manager, &desired).await.containers[0].container_id.clone().unwrap();
    assert_eq!(exec_output(&docker, &id, "cat /etc/app/app.conf").await, "greeting = hello\n");
    assert_eq!(exec_output(&docker, &id, "echo \"$GREETING\"").await, "hello from env\n");
    let write = exec_output(&docker, &id, "echo x > /etc/app/new 2>/dev/null && echo writable || echo read-only").await;
    assert_eq!(write.trim(), "read-only", "configMap volumes are mounted read-only");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(node.state.path().join("pods")).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o700, "pod files on the node are the agent's alone");
}

#[tokio::test]
async fn a_crashing_container_restarts_with_growing_backoff() {
    let docker = docker().await;
    let node = TestNode::new("crash");
    let manager = manager(&node, &docker).await;
    let desired = vec![pod("crash", vec![container("main", "exit 3")])];
    manager.converge(&desired).await.unwrap();
    // Record when each attempt is first seen running or exited.
    let mut seen: Vec<(u32, Instant)> = vec![(0, Instant::now())];
    let deadline = Instant::now() + Duration::from_secs(30);
    while seen.len() < 4 {
        assert!(Instant::now() < deadline, "only {} attempts in 30 s: {seen:?}", seen.len());
        manager.converge(&desired).await.unwrap();
        let now = status(&manager, &desired).await;
        let attempt = now.containers[0].restart_count;
        if attempt > seen.last().unwrap().0 {
            seen.push((attempt, Instant::now()));
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let attempts: Vec<u32> = seen.iter().map(|(a, _)| *a).collect();
    assert_eq!(attempts, [0, 1, 2, 3], "every restart is counted");
    let gaps: Vec<Duration> = seen.windows(2).map(|w| w[1].1 - w[0].1).collect();
    // The backoff is 300 ms, 600 ms, 1200 ms: each gap is at least its backoff.
    for (gap, minimum) in gaps.iter().zip([300, 600, 1200]) {
        assert!(*gap >= Duration::from_millis(minimum), "gaps {gaps:?} are shorter than the backoff");
    }
    assert!(gaps[2] > gaps[0], "the backoff grows: {gaps:?}");
    let last = status(&manager, &desired).await;
    let shown = format!("{:?} {:?}", last.containers[0].last_error, last.containers[0].last_termination);
    assert!(shown.contains("exited with code 3"), "the reason of the last crash stays visible: {last:?}");
    // Issue 11, defect 4: between attempts it is CrashLoopBackOff with the exit code and the
    // time left, never a flip between Failed and Running.
    wait_for("the container to back off", Duration::from_secs(20), || async {
        manager.converge(&desired).await.unwrap();
        let now = status(&manager, &desired).await;
        let container = &now.containers[0];
        container.reason.as_deref() == Some("CrashLoopBackOff")
            && container.last_error.as_deref().is_some_and(|e| {
                e.starts_with("container main exited with code 3 (") && e.contains("restarts); restarting ")
            })
    })
    .await;
}

#[tokio::test]
async fn restart_policies_decide_what_restarts() {
    let docker = docker().await;
    let node = TestNode::new("policy");
    let manager = manager(&node, &docker).await;
    let mut done = pod("done", vec![container("main", "exit 0")]);
    done.spec.restart_policy = Some(RestartPolicy::OnFailure);
    let mut never = pod("never", vec![container("main", "exit 4")]);
    never.spec.restart_policy = Some(RestartPolicy::Never);
    let desired = vec![done, never];
    manager.converge(&desired).await.unwrap();
    wait_for("both pods to finish", Duration::from_secs(20), || async {
        manager.observe(&desired).await.unwrap().iter().all(|p| p.containers[0].state == ContainerStateName::Terminated)
    })
    .await;
    for _ in 0..3 {
        let summary = manager.converge(&desired).await.unwrap();
        assert_eq!(summary.containers_restarted, 0);
    }
    let statuses = manager.observe(&desired).await.unwrap();
    assert_eq!(statuses[0].phase, PodPhase::Succeeded);
    assert_eq!(statuses[1].phase, PodPhase::Failed);
    assert_eq!(statuses[1].containers[0].exit_code, Some(4));
}

#[tokio::test]
async fn a_restarted_agent_adopts_its_containers() {
    let docker = docker().await;
    let node = TestNode::new("adopt");
    let desired = vec![pod("keep", vec![container("main", "sleep 3600"), container("side", "sleep 3600")])];
    let before = {
        let manager = manager(&node, &docker).await;
        manager.converge(&desired).await.unwrap();
        status(&manager, &desired).await
        // The manager is dropped here, as a killed agent would be: nothing runs on drop.
    };
    let mut started = Vec::new();
    for container in &before.containers {
        started.push(docker.inspect(container.container_id.as_deref().unwrap()).await.unwrap().started_at);
    }
    let manager = manager(&node, &docker).await;
    let summary = manager.converge(&desired).await.unwrap();
    assert_eq!((summary.pods_created, summary.pods_removed, summary.containers_restarted), (0, 0, 0));
    let after = status(&manager, &desired).await;
    for (index, container) in after.containers.iter().enumerate() {
        assert_eq!(container.container_id, before.containers[index].container_id, "container ids are unchanged");
        assert_eq!(container.restart_count, 0);
        let info = docker.inspect(container.container_id.as_deref().unwrap()).await.unwrap();
        assert_eq!(info.started_at, started[index], "the container was not restarted");
        assert_eq!(info.state, ContainerState::Running);
    }
}

#[tokio::test]
async fn containers_berth_did_not_create_are_never_touched() {
    let docker = docker().await;
    let node = TestNode::new("foreign");
    let manager = manager(&node, &docker).await;
    // A container that copies berth's labels for this node, with a berth-like name.
    let mut copied = BTreeMap::new();
    for (key, value) in [
        (labels::NODE, node.name.as_str()),
        (labels::NAMESPACE, "shop"),
        (labels::POD, "intruder"),
        (labels::ROLE, "container"),
        (labels::CONTAINER, "main"),
        (labels::SPEC_HASH, "x"),
    ] {
        copied.insert(key.to_owned(), value.to_owned());
    }
    let spec = berth::nodes::runtime::ContainerSpec {
        name: berth::nodes::pods::engine_name(&[&node.name, "shop", "intruder", "main", "0"]),
        image: crate::images::busybox().into(),
        entrypoint: Some(vec!["sleep".into(), "3600".into()]),
        args: None,
        env: Vec::new(),
        working_dir: None,
        labels: copied,
        network: berth::nodes::runtime::Network::Own { hostname: "intruder".into(), ports: Vec::new(), dns: None },
        mounts: Vec::new(),
        memory_limit_bytes: None,
        cpu_limit_nanos: None,
        security: Default::default(),
    };
    let foreign = docker.create(&spec).await.unwrap();
    docker.start(&foreign).await.unwrap();

    let summary = manager.converge(&[]).await.unwrap();
    assert_eq!(summary.pods_removed, 0);

    // Assigned a pod whose container name the foreign container holds: berth reports it on that
    // pod and leaves the foreign container alone; other pods are not held up.
    let desired = vec![
        pod("intruder", vec![container("main", "sleep 3600")]),
        pod("neighbour", vec![container("main", "sleep 3600")]),
    ];
    manager.converge(&desired).await.unwrap();
    let statuses = manager.observe(&desired).await.unwrap();
    let error = statuses[0].containers[0].last_error.clone().unwrap_or_default();
    assert!(error.contains("creating berth_"), "{error} {statuses:?}");
    assert_eq!(statuses[1].phase, PodPhase::Running, "the other pod runs");
    manager.converge(&[]).await.unwrap();
    let info = docker.inspect(&foreign).await.unwrap();
    assert_eq!(info.state, ContainerState::Running, "the foreign container still runs");

    // Issue 11, defect 4: once the name is free the pod runs, and the 409 of the earlier
    // attempt is not shown on it.
    docker.remove(&foreign).await.unwrap();
    wait_for("the intruder pod to run", Duration::from_secs(20), || async {
        manager.converge(&desired).await.unwrap();
        manager.observe(&desired).await.unwrap()[0].phase == PodPhase::Running
    })
    .await;
    let statuses = manager.observe(&desired).await.unwrap();
    assert_eq!(statuses[0].containers[0].last_error, None, "{statuses:?}");
}

#[tokio::test]
async fn a_missing_image_is_reported_and_not_pulled_in_a_hot_loop() {
    let docker = docker().await;
    let node = TestNode::new("pull");
    let manager = manager(&node, &docker).await;
    // A registry on a closed loopback port: the pull fails at once and never leaves the machine.
    let mut missing = container("main", "true");
    missing.image = "127.0.0.1:9/berth-test/missing:1".into();
    let desired = vec![pod("missing", vec![missing])];
    let first = manager.converge(&desired).await.unwrap();
    assert_eq!(first.pods_created, 0);
    let due = first.next_due.expect("a retry is scheduled");
    assert!(due > Instant::now(), "the retry waits for its backoff");
    let status = status(&manager, &desired).await;
    assert_eq!(status.phase, PodPhase::Pending);
    let error = status.containers[0].last_error.clone().unwrap_or_default();
    assert!(error.contains("127.0.0.1:9/berth-test/missing:1 is not present and pulling it failed"), "{error}");
    // Converging again before the backoff passes does not pull again: the deadline is unchanged.
    let second = manager.converge(&desired).await.unwrap();
    assert_eq!(second.next_due, Some(due));
}

/// One turn of the agent's loop: probes, then a converge pass.
async fn tick(manager: &PodManager<Docker>, desired: &[PodAssignment]) {
    manager.probe(desired).await.unwrap();
    manager.converge(desired).await.unwrap();
}

fn probe(handler: &str, target: &str) -> Probe {
    let port = IntOrString::String("http".into());
    Probe {
        http_get: (handler == "http").then(|| HttpGetAction {
            path: Some(target.into()),
            port: port.clone(),
            scheme: None,
            http_headers: Vec::new(),
        }),
        tcp_socket: (handler == "tcp").then(|| TcpSocketAction { port: port.clone() }),
        exec: (handler == "exec").then(|| ExecAction { command: vec!["sh".into(), "-c".into(), target.into()] }),
        initial_delay_seconds: Some(0),
        period_seconds: Some(1),
        timeout_seconds: Some(1),
        success_threshold: Some(1),
        failure_threshold: Some(1),
    }
}

#[tokio::test]
async fn readiness_follows_the_probe_and_startup_gates_it() {
    let docker = docker().await;
    let node = TestNode::new("ready");
    let manager = manager(&node, &docker).await;
    // The server starts listening only after two seconds: the startup probe holds readiness back.
    let mut server = container("server", "mkdir -p /www && sleep 2 && httpd -f -p 8080 -h /www");
    server.ports.push(ContainerPort {
        name: Some("http".into()),
        container_port: 8080,
        host_port: None,
        protocol: None,
    });
    server.startup_probe = Some(Box::new(Probe { failure_threshold: Some(30), ..probe("tcp", "") }));
    server.readiness_probe = Some(Box::new(probe("http", "/ready.html")));
    let desired = vec![pod("ready", vec![server])];
    manager.converge(&desired).await.unwrap();
    let id = status(&manager, &desired).await.containers[0].container_id.clone().unwrap();

    // Listening, but /ready.html answers 404: not ready, and the status says why.
    wait_for("the readiness probe to fail on a 404", Duration::from_secs(20), || async {
        tick(&manager, &desired).await;
        let now = status(&manager, &desired).await;
        now.containers[0]
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("readiness probe: HTTP GET /ready.html answered 404"))
    })
    .await;
    assert!(!status(&manager, &desired).await.ready);

    exec_output(&docker, &id, "echo ok > /www/ready.html").await;
    wait_for("the pod to turn ready", Duration::from_secs(20), || async {
        tick(&manager, &desired).await;
        status(&manager, &desired).await.ready
    })
    .await;

    exec_output(&docker, &id, "rm /www/ready.html").await;
    wait_for("the pod to turn unready", Duration::from_secs(20), || async {
        tick(&manager, &desired).await;
        !status(&manager, &desired).await.ready
    })
    .await;
    assert_eq!(status(&manager, &desired).await.containers[0].restart_count, 0, "readiness never restarts a container");
}

#[tokio::test]
async fn a_failing_liveness_probe_restarts_the_container() {
    let docker = docker().await;
    let node = TestNode::new("alive");
    let manager = manager(&node, &docker).await;
    let mut main = container("main", "touch /tmp/alive; exec sleep 3600");
    // An initial delay, as a real manifest would have: the probe must not race the touch.
    main.liveness_probe =
        Some(Box::new(Probe { initial_delay_seconds: Some(1), ..probe("exec", "test -f /tmp/alive") }));
    let desired = vec![pod("alive", vec![main])];
    manager.converge(&desired).await.unwrap();
    let first = status(&manager, &desired).await.containers[0].container_id.clone().unwrap();
    wait_for("the container to be healthy", Duration::from_secs(10), || async {
        exec_output(&docker, &first, "test -f /tmp/alive && echo yes").await.trim() == "yes"
    })
    .await;
    // Healthy probes for a few periods: the container is left alone.
    let healthy_until = Instant::now() + Duration::from_millis(2500);
    while Instant::now() < healthy_until {
        tick(&manager, &desired).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let healthy = status(&manager, &desired).await;
    assert_eq!(healthy.containers[0].restart_count, 0, "{healthy:?}");
    assert_eq!(healthy.containers[0].container_id.as_deref(), Some(first.as_str()));

    exec_output(&docker, &first, "rm /tmp/alive").await;
    wait_for("the container to be restarted", Duration::from_secs(20), || async {
        tick(&manager, &desired).await;
        let now = status(&manager, &desired).await;
        now.containers[0].restart_count == 1 && now.containers[0].state == ContainerStateName::Running
    })
    .await;
    let now = status(&manager, &desired).await;
    // The restarted container runs; how the previous attempt ended is its last termination.
    let ended = now.containers[0].last_termination.clone().unwrap_or_default();
    assert!(ended.contains("liveness probe failed 1 times: command exited with code 1"), "{now:?}");
    assert_ne!(now.containers[0].container_id.as_deref(), Some(first.as_str()));
}

#[tokio::test]
async fn removal_is_graceful_and_limits_and_host_paths_apply() {
    let docker = docker().await;
    let node = TestNode::new("grace");
    let manager = manager(&node, &docker).await;
    let host_dir = tempfile::tempdir().unwrap();
    // On SIGTERM the process writes a marker through a hostPath mount and exits cleanly.
    let mut main =
        container("main", "trap 'echo got-sigterm > /host/marker; exit 0' TERM; while true; do sleep 0.1; done");
    main.volume_mounts.push(VolumeMount {
        name: "host".into(),
        mount_path: "/host".into(),
        read_only: None,
        sub_path: None,
    });
    main.resources = Some(ResourceRequirements {
        requests: BTreeMap::from([("cpu".to_owned(), Quantity::parse("100m").unwrap())]),
        limits: BTreeMap::from([
            ("cpu".to_owned(), Quantity::parse("500m").unwrap()),
            ("memory".to_owned(), Quantity::parse("64Mi").unwrap()),
        ]),
    });
    let mut desired = vec![pod("grace", vec![main])];
    desired[0].spec.termination_grace_period_seconds = Some(10);
    desired[0].spec.volumes.push(Volume {
        name: "host".into(),
        empty_dir: None,
        host_path: Some(HostPathVolumeSource { path: host_dir.path().display().to_string() }),
        config_map: None,
        secret: None,
        downward_api: None,
        persistent_volume_claim: None,
    });
    manager.converge(&desired).await.unwrap();
    let id = status(&manager, &desired).await.containers[0].container_id.clone().unwrap();
    let inspected = docker.client().inspect_container(&id, None).await.unwrap();
    let host_config = inspected.host_config.unwrap();
    assert_eq!(host_config.memory, Some(64 * 1024 * 1024), "the memory limit is applied");
    assert_eq!(host_config.nano_cpus, Some(500_000_000), "the CPU limit is applied");

    let start = Instant::now();
    assert_eq!(converge_until_gone(&manager, &[]).await, 1);
    assert_eq!(std::fs::read_to_string(host_dir.path().join("marker")).unwrap(), "got-sigterm\n");
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "a process that exits on SIGTERM is not held for the whole grace period"
    );
}

#[tokio::test]
async fn a_leaving_pod_in_its_grace_period_does_not_hold_up_a_new_one() {
    let docker = docker().await;
    let node = TestNode::new("overlap");
    let manager = Arc::new(manager(&node, &docker).await);
    let mut old = pod("old", vec![container("main", "trap '' TERM; while true; do sleep 0.1; done")]);
    old.spec.termination_grace_period_seconds = Some(3);
    manager.converge(&[old.clone()]).await.unwrap();
    let old_id = status(&manager, &[old]).await.containers[0].container_id.clone().unwrap();

    let new = vec![pod("new", vec![container("main", "sleep 3600")])];
    let summary = manager.converge(&new).await.unwrap();
    assert_eq!((summary.pods_created, summary.pods_removed), (1, 0), "the old pod stops in the background");
    wait_for("the new pod to run", Duration::from_secs(20), || async {
        status(&manager, &new).await.phase == PodPhase::Running
    })
    .await;
    assert_eq!(
        docker.inspect(&old_id).await.unwrap().state,
        ContainerState::Running,
        "the old pod is still in its grace period"
    );
    // Meanwhile the node reports it as stopping, after the assigned pods.
    let statuses = manager.observe(&new).await.unwrap();
    let old_status = statuses.iter().find(|s| s.pod == "old").expect("the stopping pod is reported");
    assert!(old_status.terminating && !old_status.ready, "{old_status:?}");
    assert!(!statuses[0].terminating);
    assert_eq!(converge_until_gone(&manager, &new).await, 1);
    assert!(matches!(docker.inspect(&old_id).await, Err(berth::nodes::runtime::RuntimeError::NotFound { .. })));
}

/// Issue 14: the control plane judges a hostPath as written; on the node a symlink could lead
/// it into the host's own folders or the agent's state. The agent resolves it first and refuses
/// such a mount, naming both paths; a plain folder still mounts.
#[tokio::test]
async fn a_host_path_that_resolves_into_a_denied_folder_is_not_mounted() {
    let docker = docker().await;
    let node = TestNode::new("symlink");
    let manager = manager(&node, &docker).await;
    let links = tempfile::tempdir().unwrap();
    let to_state = links.path().join("state");
    let to_etc = links.path().join("etc");
    std::os::unix::fs::symlink(node.state.path(), &to_state).unwrap();
    std::os::unix::fs::symlink("/etc", &to_etc).unwrap();
    let plain = links.path().join("plain");
    std::fs::create_dir(&plain).unwrap();
    let with_host = |name: &str, path: &std::path::Path| {
        let mut main = container("main", "sleep 3600");
        main.volume_mounts.push(VolumeMount {
            name: "host".into(),
            mount_path: "/host".into(),
            read_only: None,
            sub_path: None,
        });
        let mut pod = pod(name, vec![main]);
        pod.spec.volumes.push(Volume {
            name: "host".into(),
            empty_dir: None,
            host_path: Some(HostPathVolumeSource { path: path.display().to_string() }),
            config_map: None,
            secret: None,
            downward_api: None,
            persistent_volume_claim: None,
        });
        pod
    };
    let desired = vec![with_host("state", &to_state), with_host("etc", &to_etc), with_host("plain", &plain)];
    manager.converge(&desired).await.unwrap();
    let statuses = manager.observe(&desired).await.unwrap();
    let state_error = statuses[0].containers[0].last_error.clone().unwrap_or_default();
    assert!(
        state_error.contains(&format!("hostPath {} resolves on this node to", to_state.display()))
            && state_error.contains("this agent's state folder"),
        "{statuses:?}"
    );
    let etc_error = statuses[1].containers[0].last_error.clone().unwrap_or_default();
    assert!(
        etc_error.contains("resolves on this node to /etc: /etc is denied by the host-access policy"),
        "{statuses:?}"
    );
    assert_eq!(statuses[0].phase, PodPhase::Pending, "{statuses:?}");
    assert_eq!(statuses[1].phase, PodPhase::Pending, "{statuses:?}");
    wait_for("the plain hostPath pod to run", Duration::from_secs(20), || async {
        manager.observe(&desired).await.unwrap()[2].phase == PodPhase::Running
    })
    .await;
    converge_until_gone(&manager, &[]).await;
}

/// Issue 18 (and issue 14's `restricted` level, which needs it): the securityContext fields
/// the engine can honor reach it. The container runs as the user and groups asked, its root
/// filesystem is read-only, it keeps only the capability added back, and gains no privilege;
/// the pod's fsGroup owns its emptyDir (writable by that user) and its configMap files.
#[tokio::test]
async fn a_security_context_reaches_the_engine() {
    let docker = docker().await;
    let node = TestNode::new("secctx");
    let manager = manager(&node, &docker).await;
    let mut main = container("main", "sleep 3600");
    main.security_context = Some(SecurityContext {
        read_only_root_filesystem: Some(true),
        allow_privilege_escalation: Some(false),
        capabilities: Some(Capabilities { add: vec!["NET_BIND_SERVICE".into()], drop: vec!["ALL".into()] }),
        ..Default::default()
    });
    for (name, path) in [("scratch", "/data"), ("config", "/etc/app")] {
        main.volume_mounts.push(VolumeMount {
            name: name.into(),
            mount_path: path.into(),
            read_only: None,
            sub_path: None,
        });
    }
    let mut desired = vec![pod("secctx", vec![main])];
    desired[0].spec.security_context = Some(PodSecurityContext {
        run_as_user: Some(1000),
        run_as_group: Some(3000),
        fs_group: Some(2000),
        supplemental_groups: vec![4000],
        ..Default::default()
    });
    desired[0].spec.volumes.push(Volume {
        name: "scratch".into(),
        empty_dir: Some(EmptyDirVolumeSource {}),
        host_path: None,
        config_map: None,
        secret: None,
        downward_api: None,
        persistent_volume_claim: None,
    });
    desired[0].spec.volumes.push(Volume {
        name: "config".into(),
        empty_dir: None,
        host_path: None,
        config_map: Some(ConfigMapVolumeSource {
            name: "settings".into(),
            items: Vec::new(),
            // Only the owner (root on the node) may read it, but for the fsGroup.
            default_mode: Some(0o400),
            optional: None,
        }),
        secret: None,
        downward_api: None,
        persistent_volume_claim: None,
    });
    desired[0].files.insert("config".into(), BTreeMap::from([("app.conf".to_owned(), b"greeting = hello\n".to_vec())]));
    manager.converge(&desired).await.unwrap();
    let id = status(&manager, &desired).await.containers[0].container_id.clone().expect("the container runs");

    let inspected = docker.client().inspect_container(&id, None).await.unwrap();
    assert_eq!(inspected.config.unwrap().user.as_deref(), Some("1000:3000"));
    let host = inspected.host_config.unwrap();
    assert_eq!(host.readonly_rootfs, Some(true));
    assert_eq!(host.cap_drop, Some(vec!["ALL".to_owned()]));
    assert_eq!(host.cap_add, Some(vec!["NET_BIND_SERVICE".to_owned()]));
    assert_eq!(host.group_add, Some(vec!["2000".to_owned(), "4000".to_owned()]));
    assert_eq!(host.security_opt, Some(vec!["no-new-privileges:true".to_owned()]));
    assert_ne!(host.privileged, Some(true));

    // What the process sees: its ids, a read-only root, a writable emptyDir owned by the
    // fsGroup, the configMap file readable through the group, and no effective capability
    // but the one added back (CAP_NET_BIND_SERVICE is bit 10).
    assert_eq!(exec_output(&docker, &id, "id -u; id -g; id -G").await, "1000\n3000\n3000 2000 4000\n");
    let root = exec_output(&docker, &id, "touch /made 2>/dev/null && echo writable || echo read-only").await;
    assert_eq!(root.trim(), "read-only");
    let scratch = exec_output(&docker, &id, "touch /data/made && stat -c '%g %a' /data && stat -c %g /data/made").await;
    assert_eq!(scratch, "2000 2777\n2000\n", "the emptyDir is the fsGroup's, setgid, writable by the user");
    assert_eq!(exec_output(&docker, &id, "cat /etc/app/app.conf").await, "greeting = hello\n");
    let capabilities = exec_output(&docker, &id, "grep -E '^Cap(Eff|Bnd)' /proc/self/status").await;
    assert_eq!(capabilities, "CapEff:\t0000000000000000\nCapBnd:\t0000000000000400\n", "{capabilities}");
    let no_new = exec_output(&docker, &id, "grep NoNewPrivs /proc/self/status").await;
    assert_eq!(no_new.split_whitespace().collect::<Vec<_>>(), ["NoNewPrivs:", "1"]);
}

/// Issue 18: a container with runAsNonRoot whose image runs as root is not started; the pod
/// waits with Kubernetes' reason and says why, and runs once the manifest names a user.
#[tokio::test]
async fn run_as_non_root_refuses_an_image_that_runs_as_root() {
    let docker = docker().await;
    let node = TestNode::new("nonroot");
    let manager = manager(&node, &docker).await;
    let mut desired = vec![pod("nonroot", vec![container("main", "sleep 3600")])];
    desired[0].spec.security_context = Some(PodSecurityContext { run_as_non_root: Some(true), ..Default::default() });
    manager.converge(&desired).await.unwrap();
    let refused = status(&manager, &desired).await;
    assert_eq!(refused.phase, PodPhase::Pending);
    let main = &refused.containers[0];
    assert_eq!(main.reason.as_deref(), Some("CreateContainerConfigError"), "{refused:?}");
    let error = main.last_error.clone().unwrap_or_default();
    assert!(
        error.contains("container main: runAsNonRoot is set and image") && error.contains("runs as root"),
        "{error}"
    );
    let filter = format!("label={}={}", labels::NODE, node.name);
    let made = std::process::Command::new("docker").args(["ps", "-aq", "--filter", &filter]).output().unwrap();
    assert!(made.stdout.is_empty(), "nothing of the pod was made, not even its sandbox");

    // The manifest names a user: a new assignment (a new spec) runs.
    let mut fixed = desired.clone();
    fixed[0].spec.security_context.as_mut().unwrap().run_as_user = Some(1000);
    fixed[0].spec_hash = "hash-2".into();
    fixed[0].uid = "uid-nonroot-2".into();
    wait_for("the pod with a non-root user to run", Duration::from_secs(30), || async {
        manager.converge(&fixed).await.unwrap();
        manager.observe(&fixed).await.unwrap()[0].phase == PodPhase::Running
    })
    .await;
    let id = status(&manager, &fixed).await.containers[0].container_id.clone().unwrap();
    assert_eq!(exec_output(&docker, &id, "id -u").await, "1000\n");
}

/// A hostPath volume on a fresh temporary folder, mounted at `/host`.
fn with_host_folder(pod: &mut PodAssignment, folder: &std::path::Path) {
    for container in &mut pod.spec.containers {
        container.volume_mounts.push(VolumeMount {
            name: "host".into(),
            mount_path: "/host".into(),
            read_only: None,
            sub_path: None,
        });
    }
    pod.spec.volumes.push(Volume {
        name: "host".into(),
        empty_dir: None,
        host_path: Some(HostPathVolumeSource { path: folder.display().to_string() }),
        config_map: None,
        secret: None,
        downward_api: None,
        persistent_volume_claim: None,
    });
}

fn exec_hook(script: &str) -> LifecycleHandler {
    LifecycleHandler {
        exec: Some(ExecAction { command: vec!["sh".into(), "-c".into(), script.into()] }),
        ..Default::default()
    }
}

/// Issue 18: the preStop hook runs before SIGTERM, within the grace period, also when the pod
/// is no longer assigned (its hook travels with the container); postStart runs right after
/// the start.
#[tokio::test]
async fn pre_stop_runs_before_sigterm_and_post_start_after_the_start() {
    let docker = docker().await;
    let node = TestNode::new("hooks");
    let manager = manager(&node, &docker).await;
    let host = tempfile::tempdir().unwrap();
    let mut main = container("main", "trap 'echo sigterm >> /host/log; exit 0' TERM; while true; do sleep 0.1; done");
    main.lifecycle = Some(Lifecycle {
        post_start: Some(exec_hook("echo post-start >> /host/log")),
        pre_stop: Some(exec_hook("echo pre-stop >> /host/log")),
    });
    let mut desired = vec![pod("hooks", vec![main])];
    desired[0].spec.termination_grace_period_seconds = Some(10);
    with_host_folder(&mut desired[0], host.path());
    manager.converge(&desired).await.unwrap();
    assert_eq!(status(&manager, &desired).await.phase, PodPhase::Running);
    let log = host.path().join("log");
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "post-start\n");

    assert_eq!(converge_until_gone(&manager, &[]).await, 1);
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "post-start\npre-stop\nsigterm\n");
}

/// Issue 18: a postStart hook that fails kills the container, which restarts under the
/// restart policy, and the reason stays on the container.
#[tokio::test]
async fn a_failing_post_start_hook_kills_the_container() {
    let docker = docker().await;
    let node = TestNode::new("poststart");
    let manager = manager(&node, &docker).await;
    let mut main = container("main", "sleep 3600");
    main.lifecycle = Some(Lifecycle { post_start: Some(exec_hook("exit 7")), pre_stop: None });
    let desired = vec![pod("poststart", vec![main])];
    manager.converge(&desired).await.unwrap();
    let killed = status(&manager, &desired).await;
    let main = &killed.containers[0];
    assert_ne!(main.state, ContainerStateName::Running, "{killed:?}");
    wait_for("the killed container to be restarted with the hook's reason", Duration::from_secs(30), || async {
        tick(&manager, &desired).await;
        let status = manager.observe(&desired).await.unwrap().remove(0);
        let main = &status.containers[0];
        main.restart_count >= 1
            && main.last_termination.as_deref() == Some("postStart hook failed: command exited with code 7")
    })
    .await;
}
