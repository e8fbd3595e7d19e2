//! Issue 21: TLS everywhere. `berth server` speaks HTTPS with a CA of its own; agents join
//! with a `K10<hash>::<secret>` token that pins that CA and hold client certificates of their
//! node; the CLI trusts the server through its state folder, BERTH_CA_FILE or `berth login`;
//! `berth node remove` revokes a node at once and moves its pods.

use crate::agent::wait_for;
use crate::control::{Cluster, app, synced};
use crate::server::free_port;
use crate::support::TestRepo;
use serde_json::Value;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const LIMIT: Duration = Duration::from_secs(90);

/// Runs an agent that is expected to give up: its exit code and what it printed.
fn agent_that_stops(server: &str, token: &str, name: &str, extra: &[&str]) -> (i32, String) {
    let state = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["agent", "--server", server, "--join-token", token, "--name", name, "--address", "127.0.0.1"])
        .args(extra)
        .arg("--state-dir")
        .arg(state.path())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let code = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status.code().unwrap_or(-1);
        }
        if Instant::now() > deadline {
            child.kill().unwrap();
            panic!("the agent with token {token} did not give up");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(!state.path().join("credential.json").exists(), "no credential was saved: {stderr}");
    (code, stderr)
}

/// An HTTP client that trusts the cluster's CA and presents `certificate` with `key` (PEM).
fn client_presenting(cluster: &Cluster, certificate: &str, key: &str) -> reqwest::Client {
    let identity = std::sync::Arc::new(berth::tls::NodeIdentity::default());
    identity.set(certificate, key).unwrap();
    let roots = berth::tls::read_certificates(&cluster.ca_file()).unwrap();
    berth::tls::http_client(&berth::tls::Trust::Roots(roots), Some(identity))
        .unwrap()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// A node's own certificate, key and credential, as its agent keeps them.
fn node_files(state: &Path) -> (String, String, String) {
    let certificate: Value =
        serde_json::from_slice(&std::fs::read(state.join("node-certificate.json")).unwrap()).unwrap();
    let credential: Value = serde_json::from_slice(&std::fs::read(state.join("credential.json")).unwrap()).unwrap();
    (
        certificate["certificate"].as_str().unwrap().to_owned(),
        std::fs::read_to_string(state.join("node-key.pem")).unwrap(),
        credential["credential"].as_str().unwrap().to_owned(),
    )
}

/// What a node's call answers: its status, or the error of a connection the server refused.
async fn node_call(http: &reqwest::Client, cluster: &Cluster, node: &str, credential: &str) -> Result<u16, String> {
    let url = format!("{}/api/v1/agent/nodes/{node}/assignment?after=0&waitSeconds=0", cluster.url());
    match http.get(url).bearer_auth(credential).send().await {
        Ok(response) => Ok(response.status().as_u16()),
        Err(error) => Err(berth::error_chain(&error)),
    }
}

/// Asks the tunnel at `address:port` for `target` on its node: the answer byte, or why there
/// was none.
async fn through_tunnel(
    config: std::sync::Arc<rustls::ClientConfig>,
    address: &str,
    port: u16,
    target: u16,
) -> Result<u8, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let socket = tokio::net::TcpStream::connect((address, port)).await.map_err(|e| e.to_string())?;
    let name = rustls_pki_types::ServerName::IpAddress(address.parse::<std::net::IpAddr>().unwrap().into());
    let connect = tokio_rustls::TlsConnector::from(config).connect(name, socket);
    let mut stream = tokio::time::timeout(Duration::from_secs(5), connect)
        .await
        .map_err(|_| "handshake timed out".to_owned())?
        .map_err(|e| e.to_string())?;
    stream.write_all(&target.to_be_bytes()).await.map_err(|e| e.to_string())?;
    let mut answer = [0u8; 1];
    tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut answer))
        .await
        .map_err(|_| "no answer".to_owned())?
        .map_err(|e| e.to_string())?;
    Ok(answer[0])
}

fn pods_by_node(pods: &Value) -> Vec<(String, bool)> {
    let mut out: Vec<(String, bool)> = pods
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["workload"] == "app")
        .map(|p| (p["node"].as_str().unwrap_or_default().to_owned(), p["ready"] == true))
        .collect();
    out.sort();
    out
}

/// Agents join over HTTPS with the pinned token and run pods; an agent whose token pins another
/// CA, or that trusts no CA of this server, gives up before it sends its secret. Node
/// certificates open only their own node: a forged one, one from another CA, another node's,
/// and one of a removed node are refused, and a removed node's pods move.
#[tokio::test]
async fn agents_join_over_https_pinned_and_node_certificates_open_only_their_node() {
    let mut repo = TestRepo::new();
    repo.write("app.yaml", &app(2, "v1"));
    let v1 = repo.commit("v1");
    let server_args = ["--node-certificate-seconds", "15"];
    let agent_args = ["--metrics-listen", "{address}:19094"];
    let cluster =
        Cluster::start_with_agents("tls", repo.path().to_str().unwrap(), 2, &server_args, 31, &agent_args).await;
    assert!(cluster.url().starts_with("https://"), "the server speaks HTTPS by default");
    cluster.wait_status("v1 on both nodes", |s| synced(s) && s["applied"] == v1).await;
    let nodes: Vec<String> = cluster.nodes.iter().map(|n| n.name.clone()).collect();

    // A token pinning another CA: refused during the handshake, before the secret is sent.
    let elsewhere = tempfile::tempdir().unwrap();
    let other = berth::tls::Authority::load_or_create(elsewhere.path()).unwrap();
    let wrong_pin = format!("K10{}::control-test", other.fingerprint());
    let (code, stderr) = agent_that_stops(&cluster.url(), &wrong_pin, "impostor", &[]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("does not chain to the CA the join token pins"), "{stderr}");
    // A bare secret over https trusts the system's roots, which do not hold berth's CA.
    let (code, stderr) = agent_that_stops(&cluster.url(), "control-test", "rootless", &[]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("refusing the server") && stderr.contains("certificate"), "{stderr}");
    let listed = cluster.get("/api/v1/nodes").await.to_string();
    for name in ["impostor", "rootless"] {
        assert!(!listed.contains(name), "{name} never joined: {listed}");
    }

    let (certificate0, key0, credential0) = node_files(cluster.nodes[0].state.path());
    let (certificate1, key1, _) = node_files(cluster.nodes[1].state.path());
    // Node 0's own certificate and credential open its API.
    let own = client_presenting(&cluster, &certificate0, &key0);
    assert_eq!(node_call(&own, &cluster, &nodes[0], &credential0).await, Ok(200));
    // Without a certificate, the credential alone opens nothing.
    assert_eq!(node_call(&cluster.http(), &cluster, &nodes[0], &credential0).await, Ok(401));
    // Another node's valid certificate does not open node 0.
    let neighbour = client_presenting(&cluster, &certificate1, &key1);
    assert_eq!(node_call(&neighbour, &cluster, &nodes[0], &credential0).await, Ok(401));
    // A self-signed certificate naming node 0, and one from another berth CA: the handshake fails.
    let forged = rcgen::generate_simple_self_signed(vec![nodes[0].clone()]).unwrap();
    let forger = client_presenting(&cluster, &forged.cert.pem(), &forged.signing_key.serialize_pem());
    let refused = node_call(&forger, &cluster, &nodes[0], &credential0).await;
    assert!(refused.is_err(), "a forged certificate is refused in the handshake: {refused:?}");
    let (other_key, other_public) = berth::tls::NodeIdentity::new_key().unwrap();
    let stranger = other.certify_node(&nodes[0], None, &other_public, Duration::from_secs(3600)).unwrap();
    let outsider = client_presenting(&cluster, &stranger.pem, &other_key);
    let refused = node_call(&outsider, &cluster, &nodes[0], &credential0).await;
    assert!(refused.is_err(), "a certificate of another CA is refused in the handshake: {refused:?}");

    // Certificates are renewed two thirds into their life (15 s here), and the node stays Ready.
    wait_for("node 0 to renew its certificate", LIMIT, || async {
        node_files(cluster.nodes[0].state.path()).0 != certificate0
    })
    .await;
    let (renewed, renewed_key, _) = node_files(cluster.nodes[0].state.path());
    let fresh = client_presenting(&cluster, &renewed, &renewed_key);
    assert_eq!(node_call(&fresh, &cluster, &nodes[0], &credential0).await, Ok(200));
    repo.write("app.yaml", &app(2, "v2"));
    let v2 = repo.commit("v2");
    cluster.wait_status("v2 after the renewal", |s| synced(s) && s["applied"] == v2).await;

    // Node 1's tunnel for service traffic takes only nodes of this cluster: not a connection
    // without a certificate, a forged one, or one of another CA. A node's own certificate
    // opens it, for ports of endpoints on node 1 only.
    let address1 = "127.0.31.3";
    let listed = cluster.get("/api/v1/nodes").await;
    let node1 = listed.as_array().unwrap().iter().find(|n| n["name"] == nodes[1].as_str()).unwrap();
    let tunnel = node1["tunnelPort"].as_u64().expect("node 1 announces its tunnel") as u16;
    let ca_pem = std::fs::read_to_string(cluster.ca_file()).unwrap();
    let as_node = |certificate: &str, key: &str| {
        let identity = std::sync::Arc::new(berth::tls::NodeIdentity::default());
        identity.set(certificate, key).unwrap();
        berth::tls::tunnel_configs(&ca_pem, identity).unwrap().1
    };
    let roots = berth::tls::read_certificates(&cluster.ca_file()).unwrap();
    let anonymous = std::sync::Arc::new(berth::tls::client_config(&berth::tls::Trust::Roots(roots), None).unwrap());
    let mut plain = tokio::net::TcpStream::connect((address1, tunnel)).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut plain, &[0x1f, 0x90]).await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::io::AsyncReadExt::read_to_end(&mut plain, &mut answer).await;
    assert_ne!(answer, vec![0u8], "plain bytes open no tunnel");
    for (what, config) in [
        ("no certificate", anonymous),
        ("a self-signed certificate", as_node(&forged.cert.pem(), &forged.signing_key.serialize_pem())),
        ("a certificate of another CA", as_node(&stranger.pem, &other_key)),
    ] {
        let refused = through_tunnel(config, address1, tunnel, 8080).await;
        assert!(refused.is_err(), "{what} opens no tunnel: {refused:?}");
    }
    wait_for("node 0's certificate to open node 1's tunnel", LIMIT, || async {
        let (certificate, key, _) = node_files(cluster.nodes[0].state.path());
        // Not an endpoint's port: the tunnel opened, and says no to the port.
        through_tunnel(as_node(&certificate, &key), address1, tunnel, 9).await == Ok(1)
    })
    .await;
    let (_, metrics) = crate::control::get_text(&format!("http://{address1}:19094/metrics"), None).await;
    let refusals = crate::control::sample(&metrics, "berth_agent_tunnel_refusals_total", &[]);
    assert!(refusals.is_some_and(|n| n >= 4.0), "node 1 counted the refusals: {metrics}");

    // Removing node 0 revokes it at once and moves its pods to node 1.
    let dir = repo.path();
    let (code, _, stderr) = cluster.cli(dir, &["node", "remove", &nodes[0]], true);
    assert_eq!(code, 1, "off a terminal, removal needs --yes: {stderr}");
    assert!(stderr.contains("confirm with --yes"), "{stderr}");
    let (code, out, stderr) = cluster.cli(dir, &["node", "remove", &nodes[0], "--yes"], true);
    assert_eq!(code, 0, "{stderr}");
    assert!(out.contains("removed"), "{out}");
    assert_eq!(node_call(&fresh, &cluster, &nodes[0], &credential0).await, Ok(401));
    let (code, _, stderr) = cluster.cli(dir, &["node", "remove", &nodes[0], "--yes"], true);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("no node is named"), "{stderr}");
    // Its certificate no longer opens other nodes' tunnels either, once they have the new routes.
    let (certificate, key, _) = node_files(cluster.nodes[0].state.path());
    let removed = as_node(&certificate, &key);
    wait_for("node 1's tunnel to refuse the removed node", LIMIT, || async {
        through_tunnel(removed.clone(), address1, tunnel, 9).await.is_err()
    })
    .await;
    let deadline = Instant::now() + LIMIT;
    loop {
        let pods = pods_by_node(&cluster.get("/api/v1/pods").await);
        if pods.len() == 2 && pods.iter().all(|(node, ready)| *node == nodes[1] && *ready) {
            break;
        }
        assert!(Instant::now() < deadline, "the pods did not move to {}: {pods:?}", nodes[1]);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (code, audit, _) = cluster.cli(dir, &["audit"], true);
    assert_eq!(code, 0);
    assert!(audit.contains("node-remove") && audit.contains(&format!("node {}", nodes[0])), "{audit}");
}

/// The CLI reaches an HTTPS server with BERTH_SERVER and BERTH_TOKEN alone in the server's state
/// folder, with BERTH_CA_FILE elsewhere, and through `berth login` with nothing but its config.
#[tokio::test]
async fn the_cli_trusts_the_server_through_its_state_folder_a_ca_file_or_a_login() {
    let mut repo = TestRepo::new();
    repo.write("app.yaml", &app(1, "v1"));
    repo.commit("v1");
    let cluster = Cluster::start_on("tlscli", repo.path().to_str().unwrap(), 0, &[], 32).await;
    let run = |dir: &Path, args: &[&str], env: &[(&str, &str)], input: &str| {
        use std::io::Write as _;
        let mut command = Command::new(env!("CARGO_BIN_EXE_berth"));
        command.args(args).current_dir(dir).env("NO_COLOR", "1");
        for name in ["BERTH_SERVER", "BERTH_TOKEN", "BERTH_CA_FILE", "BERTH_CONFIG"] {
            command.env_remove(name);
        }
        command.envs(env.iter().copied());
        command.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = command.spawn().unwrap();
        child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
        let output = child.wait_with_output().unwrap();
        (output.status.code().unwrap_or(-1), String::from_utf8_lossy(&output.stderr).into_owned())
    };
    let url = cluster.url();
    let token = cluster.token();
    let state = cluster.ca_file().parent().unwrap().to_owned();
    let elsewhere = tempfile::tempdir().unwrap();
    let config = elsewhere.path().join("config.json");
    let config = config.to_str().unwrap();
    let base = [("BERTH_SERVER", url.as_str()), ("BERTH_TOKEN", token.as_str()), ("BERTH_CONFIG", config)];

    let (code, stderr) = run(&state, &["get", "workloads"], &base, "");
    assert_eq!(code, 0, "in the state folder, ca.pem there is trusted: {stderr}");
    let (code, stderr) = run(elsewhere.path(), &["get", "workloads"], &base, "");
    assert_eq!(code, 1, "elsewhere, the system's roots do not hold berth's CA");
    assert!(stderr.contains("BERTH_CA_FILE") && stderr.contains("certificate"), "{stderr}");
    let ca = cluster.ca_file();
    let with_ca = [base[0], base[1], base[2], ("BERTH_CA_FILE", ca.to_str().unwrap())];
    let (code, stderr) = run(elsewhere.path(), &["get", "workloads"], &with_ca, "");
    assert_eq!(code, 0, "{stderr}");

    // `berth login`: the CA by fingerprint (a wrong one trusts nothing), the token on stdin.
    let hash = berth::tls::fingerprint(&berth::tls::read_certificates(&ca).unwrap()[0]);
    let only_config = [("BERTH_CONFIG", config)];
    let (code, stderr) =
        run(elsewhere.path(), &["login", &url, "--ca-fingerprint", &"ab".repeat(32)], &only_config, &token);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains(&format!("has the fingerprint {hash}")), "{stderr}");
    assert!(!Path::new(config).exists(), "nothing was kept");
    let (code, stderr) = run(elsewhere.path(), &["login", &url], &only_config, &token);
    assert_eq!(code, 1, "off a terminal, an unknown CA is not trusted without its fingerprint: {stderr}");
    assert!(stderr.contains(&hash) && stderr.contains("--ca-fingerprint"), "{stderr}");
    let colons = hash.as_bytes().chunks(2).map(|c| std::str::from_utf8(c).unwrap()).collect::<Vec<_>>().join(":");
    let (code, stderr) =
        run(elsewhere.path(), &["login", &url, "--ca-fingerprint", &colons.to_uppercase()], &only_config, &token);
    assert_eq!(code, 0, "{stderr}");
    let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(config).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600, "the login keeps a token: its file is private");
    let (code, stderr) = run(elsewhere.path(), &["get", "workloads"], &only_config, "");
    assert_eq!(code, 0, "after login, the config alone reaches the server: {stderr}");
    let (code, stderr) = run(elsewhere.path(), &["login", &url, "--ca-fingerprint", &hash], &only_config, "wrong");
    assert_eq!(code, 1, "a wrong token is not kept: {stderr}");
    let (code, _) = run(elsewhere.path(), &["get", "workloads"], &only_config, "");
    assert_eq!(code, 0, "the earlier login stands");

    // On a terminal, login shows the fingerprint and asks: no keeps nothing, yes trusts it.
    let fresh = elsewhere.path().join("terminal.json");
    for (answer, expected) in [("n\r", 1), ("y\r", 0)] {
        let terminal = crate::control::Terminal::open(30, 100);
        let mut login = terminal.spawn(
            Command::new(env!("CARGO_BIN_EXE_berth"))
                .args(["login", &url])
                .current_dir(elsewhere.path())
                .env("BERTH_TOKEN", &token)
                .env("BERTH_CONFIG", &fresh)
                .env_remove("BERTH_CA_FILE")
                .env_remove("BERTH_SERVER"),
        );
        terminal.wait_for("the question", 0, "Trust this CA? [y/N]").await;
        assert!(terminal.output().contains(&hash), "the fingerprint is shown: {}", terminal.output());
        terminal.type_in(answer);
        assert_eq!(
            crate::control::wait_child(&mut login, Duration::from_secs(20)).await,
            Some(expected),
            "{}",
            terminal.output()
        );
        assert_eq!(fresh.exists(), expected == 0, "{}", terminal.output());
    }
}

/// `--insecure-http` is refused off loopback, before anything is opened.
#[test]
fn insecure_http_is_refused_off_loopback() {
    let repo = TestRepo::new();
    let db = tempfile::tempdir().unwrap();
    let listen = format!("0.0.0.0:{}", free_port());
    let output = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["server", "--repo", repo.path().to_str().unwrap(), "--insecure-http", "--listen", &listen])
        .arg("--db")
        .arg(db.path().join("berth.db"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("--insecure-http serves plain HTTP and is accepted only on a loopback"), "{stderr}");
    assert!(!db.path().join("berth.db").exists(), "nothing was opened");
}

/// `--tls-cert`/`--tls-key` serve an operator's chain: the CLI trusts the operator's CA given in
/// BERTH_CA_FILE, and the join token file pins the last certificate of the chain.
#[test]
fn an_operators_certificate_is_served_and_pinned_by_the_join_token() {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let mut repo = TestRepo::new();
    repo.write("README.md", "manifests\n");
    repo.commit("nothing yet");
    let state = tempfile::tempdir().unwrap();
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["127.0.0.1".to_owned()]).unwrap().signed_by(&leaf_key, &issuer).unwrap();
    let (chain, key, ca_file) =
        (state.path().join("chain.pem"), state.path().join("key.pem"), state.path().join("op-ca.pem"));
    std::fs::write(&chain, leaf.pem() + &ca.pem()).unwrap();
    std::fs::write(&key, leaf_key.serialize_pem()).unwrap();
    std::fs::write(&ca_file, ca.pem()).unwrap();
    let listen = format!("127.0.0.1:{}", free_port());
    let mut server = crate::server::Process(
        Command::new(env!("CARGO_BIN_EXE_berth"))
            .args(["server", "--repo", repo.path().to_str().unwrap(), "--listen", &listen])
            .arg("--db")
            .arg(state.path().join("berth.db"))
            .arg("--tls-cert")
            .arg(&chain)
            .arg("--tls-key")
            .arg(&key)
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let elsewhere = tempfile::tempdir().unwrap();
    let cli = |ca: Option<&Path>| {
        let token = std::fs::read_to_string(state.path().join("api-token")).unwrap_or_default();
        let mut command = Command::new(env!("CARGO_BIN_EXE_berth"));
        command.args(["get", "nodes", "--server", &format!("https://{listen}")]).current_dir(elsewhere.path());
        command.env("BERTH_TOKEN", token.trim()).env("BERTH_CONFIG", elsewhere.path().join("none.json"));
        command.env_remove("BERTH_CA_FILE");
        if let Some(ca) = ca {
            command.env("BERTH_CA_FILE", ca);
        }
        let output = command.output().unwrap();
        (output.status.code(), String::from_utf8_lossy(&output.stderr).into_owned())
    };
    let deadline = Instant::now() + LIMIT;
    while cli(Some(&ca_file)).0 != Some(0) {
        assert!(server.0.try_wait().unwrap().is_none(), "the server stopped");
        assert!(
            Instant::now() < deadline,
            "the server did not answer over the operator's certificate: {:?}",
            cli(Some(&ca_file))
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // berth's own CA does not sign what this server serves.
    let (code, stderr) = cli(Some(&state.path().join(berth::tls::CA_FILE)));
    assert_eq!(code, Some(1), "{stderr}");
    let token = std::fs::read_to_string(state.path().join("join-token")).unwrap();
    let pinned = berth::tls::JoinToken::parse(&token).unwrap();
    assert_eq!(pinned.ca_hash, Some(berth::tls::fingerprint(ca.der())), "the token pins the operator's CA: {token}");
    drop(server);
}
