//! `berth server` and `berth up` as users run them: real processes, a real repository, the
//! real engine.

use crate::agent::{TestNode, docker, wait_for};
use crate::support::TestRepo;
use berth::nodes::pods::labels;
use berth::nodes::runtime::{ContainerRuntime, ContainerState};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

fn manifest(version: &str, replicas: u32) -> String {
    crate::images::deployment("app", None, replicas, version, None)
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A child process that is killed if the test ends early, so a failing test leaves nothing running.
pub struct Process(pub Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn terminate(child: &Child) {
    // SAFETY: sending a signal to our own child process.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
}

/// The running app containers of a node, by pod name.
pub async fn running(node: &str) -> Vec<String> {
    let docker = docker().await;
    let mut pods: Vec<String> = docker
        .list(&[(labels::NODE, node), (labels::ROLE, "container")])
        .await
        .unwrap()
        .into_iter()
        .filter(|c| c.state == ContainerState::Running)
        .map(|c| c.labels[labels::POD].clone())
        .collect();
    pods.sort();
    pods
}

#[tokio::test(flavor = "multi_thread")]
async fn a_server_follows_commits_and_a_broken_commit_changes_nothing() {
    docker().await;
    let mut repo = TestRepo::new();
    repo.write("app.yaml", &manifest("v1", 2));
    repo.commit("two replicas");
    let node = TestNode::new("srv");
    let db_dir = tempfile::tempdir().unwrap();
    let listen = format!("127.0.0.1:{}", free_port());
    let mut server = Process(
        Command::new(env!("CARGO_BIN_EXE_berth"))
            .args(["server", "--join-token", "server-test", "--insecure-http", "--listen", &listen])
            .arg("--repo")
            .arg(repo.path())
            .arg("--db")
            .arg(db_dir.path().join("berth.db"))
            .env("RUST_LOG", "warn")
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut agent = Process(
        Command::new(env!("CARGO_BIN_EXE_berth"))
            .args([
                "agent",
                "--server",
                &format!("http://{listen}"),
                "--join-token",
                "server-test",
                "--name",
                &node.name,
                "--heartbeat-seconds",
                "1",
            ])
            .arg("--state-dir")
            .arg(node.state.path())
            .env("RUST_LOG", "warn")
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );

    wait_for("two replicas to run", Duration::from_secs(60), || async { running(&node.name).await.len() == 2 }).await;
    let before = running(&node.name).await;

    // A commit with an error: nothing of it is applied, nothing running is touched.
    repo.write("app.yaml", &manifest("v2", 3).replace("replicas: 3", "replicaz: 3"));
    let broken = repo.commit("broken");
    let client = berth::client::Client::new(&format!("http://{listen}"), None);
    wait_for("the broken commit to be refused", Duration::from_secs(60), || async {
        let status = client.get("/api/v1/status").await.unwrap_or_default();
        status["sync"] == "Unknown" && !status["failed"].is_null() && status["head"]["sha"] == broken.as_str()
    })
    .await;
    let status = client.get("/api/v1/status").await.unwrap();
    let reason = status["reason"].as_str().unwrap();
    assert!(reason.contains("app.yaml:") && reason.contains("replicaz"), "{reason}");
    assert_eq!(running(&node.name).await, before, "a broken commit changed what runs");

    // The fix is seen and applied.
    repo.write("app.yaml", &manifest("v2", 3));
    repo.commit("three replicas of v2");
    wait_for("three new replicas", Duration::from_secs(60), || async {
        let now = running(&node.name).await;
        now.len() == 3 && now.iter().all(|p| !before.contains(p))
    })
    .await;

    terminate(&agent.0);
    terminate(&server.0);
    assert!(agent.0.wait().unwrap().success());
    assert!(server.0.wait().unwrap().success());
}

#[tokio::test(flavor = "multi_thread")]
async fn berth_up_runs_a_repository_on_this_machine() {
    docker().await;
    let mut repo = TestRepo::new();
    let service = "---\napiVersion: v1\nkind: Service\nmetadata: {name: app}\nspec:\n  type: NodePort\n  \
                   selector: {app: app}\n  ports: [{port: 80}]\n";
    repo.write("deploy/app.yaml", &format!("{}{service}", manifest("v1", 1)));
    repo.commit("one replica");
    let node = TestNode::new("up");
    let listen = format!("127.0.0.1:{}", free_port());
    let mut up = Process(
        Command::new(env!("CARGO_BIN_EXE_berth"))
            .args(["up", "--listen", &listen, "--name", &node.name])
            .arg(repo.path().join("deploy"))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_for("the replica to run", Duration::from_secs(60), || async { running(&node.name).await.len() == 1 }).await;
    let state = repo.path().join(".berth");
    wait_for("the commit to be recorded as synced", Duration::from_secs(60), || async {
        let Ok(store) = berth::store::Store::open_existing(&state.join("berth.db")).await else { return false };
        let synced = store.applied().await.is_ok_and(|a| a.commit.is_some());
        store.close().await;
        synced
    })
    .await;
    assert!(state.join("berth.db").exists() && state.join("join-token").exists());
    assert_eq!(
        std::fs::read_to_string(state.join(".gitignore")).unwrap(),
        "*\n",
        "the state folder keeps itself out of Git"
    );
    let statuses = repo.repo.statuses(None).unwrap();
    let seen: Vec<String> = statuses
        .iter()
        .filter(|s| !s.status().contains(git2::Status::IGNORED))
        .filter_map(|s| s.path().map(str::to_owned))
        .collect();
    assert!(seen.iter().all(|p| !p.starts_with(".berth")), "berth up left files for Git to see: {seen:?}");

    terminate(&up.0);
    let mut stdout = String::new();
    std::io::Read::read_to_string(up.0.stdout.as_mut().unwrap(), &mut stdout).unwrap();
    assert!(up.0.wait().unwrap().success());
    assert!(stdout.contains("berth is up: web UI and API on http://"), "{stdout}");
    assert!(stdout.contains("synced ") && stdout.contains("default/app 1/1"), "{stdout}");
    assert!(stdout.contains("service default/app: http://127.0.0.1:3"), "the node port is announced: {stdout}");
    assert!(stdout.contains("berth stopped; the pods keep running"), "{stdout}");
    assert_eq!(running(&node.name).await.len(), 1, "stopping berth up stops no pod");
}

/// Waits for a child to exit within `limit`; the deadline is a failure.
fn exit_within(child: &mut Child, limit: Duration, what: &str) -> std::process::ExitStatus {
    let deadline = std::time::Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(std::time::Instant::now() < deadline, "{what} did not exit within {limit:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Issue 11, defects 8 and 9: a second server on the same database refuses at once; SIGTERM
/// ends a server with open long polls within 2 s, pods untouched; an agent whose server is
/// away logs one warning per thing that fails, not one per attempt.
#[tokio::test(flavor = "multi_thread")]
async fn a_server_holds_its_database_stops_at_once_and_agents_stay_quiet() {
    docker().await;
    let mut repo = TestRepo::new();
    repo.write("app.yaml", &manifest("v1", 1));
    repo.commit("one replica");
    let node = TestNode::new("quiet");
    let db_dir = tempfile::tempdir().unwrap();
    let db = db_dir.path().join("berth.db");
    let listen = format!("127.0.0.1:{}", free_port());
    let server_command = |listen: &str| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_berth"));
        command
            .args(["server", "--join-token", "quiet-test", "--insecure-http", "--listen", listen])
            .arg("--repo")
            .arg(repo.path())
            .arg("--db")
            .arg(&db)
            .env("RUST_LOG", "warn");
        command
    };
    let mut server = Process(server_command(&listen).stderr(Stdio::null()).spawn().unwrap());
    let agent_log = db_dir.path().join("agent.log");
    let _agent = Process(
        Command::new(env!("CARGO_BIN_EXE_berth"))
            .args(["agent", "--server", &format!("http://{listen}"), "--join-token", "quiet-test"])
            .args(["--name", &node.name, "--heartbeat-seconds", "1"])
            .arg("--state-dir")
            .arg(node.state.path())
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stderr(std::fs::File::create(&agent_log).unwrap())
            .spawn()
            .unwrap(),
    );
    wait_for("the replica to run", Duration::from_secs(60), || async { running(&node.name).await.len() == 1 }).await;
    let pods = running(&node.name).await;

    let second_listen = format!("127.0.0.1:{}", free_port());
    let mut second = Process(server_command(&second_listen).stderr(Stdio::piped()).spawn().unwrap());
    let status = exit_within(&mut second.0, Duration::from_secs(10), "the second server");
    let mut stderr = String::new();
    std::io::Read::read_to_string(second.0.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("another berth server uses") && stderr.contains("berth.db.lock"), "{stderr}");

    // The agent holds a long poll open on the server now.
    let started = std::time::Instant::now();
    terminate(&server.0);
    assert!(exit_within(&mut server.0, Duration::from_secs(2), "the server after SIGTERM").success());
    let took = started.elapsed();
    assert_eq!(running(&node.name).await, pods, "stopping the server touches no pod");

    // The server stays away for a while of the agent's retries, then comes back.
    let log = || std::fs::read_to_string(&agent_log).unwrap_or_default();
    wait_for("the agent to notice", Duration::from_secs(30), || async { log().contains("WARN") }).await;
    let away = std::time::Instant::now();
    wait_for("five seconds of retries", Duration::from_secs(10), || async { away.elapsed() >= Duration::from_secs(5) })
        .await;
    let mut server = Process(server_command(&listen).stderr(Stdio::null()).spawn().unwrap());
    wait_for("the agent to report again", Duration::from_secs(60), || async { log().contains("Works again") }).await;
    // One line when failures start, per loop that talks to the server (heartbeats, reports, the
    // assignment, the routes, the server's requests), and one for joining, when the agent
    // started before the server listened.
    let warnings: Vec<String> = log().lines().filter(|l| l.contains("WARN")).map(str::to_owned).collect();
    assert!(
        warnings.len() <= 6,
        "{} warnings while the server was away {took:?}:\n{}",
        warnings.len(),
        warnings.join("\n")
    );
    terminate(&server.0);
    assert!(exit_within(&mut server.0, Duration::from_secs(2), "the restarted server").success());
}
