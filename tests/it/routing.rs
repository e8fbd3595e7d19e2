//! Service routing as users meet it: `berth server` and two `berth agent` processes, each its
//! own node on 127.0.x.y, on this machine's engine. Names resolve inside pods and connections
//! reach ready pods on either node; NodePorts answer on every node; an unready pod gets nothing;
//! a service removed from Git frees its port and name; and a rollout and a rollback under a
//! steady stream of requests drop none of them.

use crate::agent::wait_for;
use crate::control::{Cluster, git};
use crate::support::TestRepo;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const LIMIT: Duration = Duration::from_secs(90);

/// A Deployment `web` in namespace `shop` whose pods answer `GET /` with `<pod> <version>`
/// and are ready while `/www/ready` exists, after `ready_delay` seconds.
fn web(version: &str, ready_delay: u32) -> String {
    let image = crate::images::busybox();
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: shop
spec:
  replicas: 3
  selector:
    matchLabels: {{app: web}}
  strategy:
    rollingUpdate: {{maxSurge: 1, maxUnavailable: 0}}
  template:
    metadata:
      labels: {{app: web}}
    spec:
      terminationGracePeriodSeconds: 2
      containers:
        - name: web
          image: {image}
          command: ["sh", "-c", "mkdir -p /www && echo $(cat /etc/hostname) {version} > /www/index.html && touch /www/ready && exec httpd -f -p 8080 -h /www"]
          ports:
            - name: http
              containerPort: 8080
          readinessProbe:
            httpGet: {{path: /ready, port: http}}
            periodSeconds: 1
            initialDelaySeconds: {ready_delay}
"#
    )
}

const WEB_SERVICE: &str = r#"apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: shop
spec:
  type: NodePort
  selector: {app: web}
  ports:
    - name: http
      port: 80
      targetPort: http
"#;

const WEB_PODS_SERVICE: &str = r#"apiVersion: v1
kind: Service
metadata:
  name: web-pods
  namespace: shop
spec:
  clusterIP: None
  selector: {app: web}
  ports:
    - port: 8080
"#;

fn client_app(generation: u32) -> String {
    let image = crate::images::busybox();
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: client
  namespace: shop
spec:
  replicas: 1
  selector:
    matchLabels: {{app: client}}
  template:
    metadata:
      labels: {{app: client}}
    spec:
      terminationGracePeriodSeconds: 0
      containers:
        - name: client
          image: {image}
          command: ["sh", "-c", "exec sleep 3600"]
          env:
            - name: GENERATION
              value: "{generation}"
"#
    )
}

/// The pods of a workload: name to (node, ready).
async fn pods(cluster: &Cluster, workload: &str) -> BTreeMap<String, (String, bool)> {
    let pods = cluster.get("/api/v1/pods").await;
    pods.as_array()
        .unwrap()
        .iter()
        // What is assigned: not what a node stops, or a lost node last said it ran.
        .filter(|p| p["workload"] == workload && p["status"] != "Terminating" && p["status"] != "Unknown")
        .map(|p| (p["name"].as_str().unwrap().to_owned(), (p["node"].as_str().unwrap().to_owned(), p["ready"] == true)))
        .collect()
}

/// The engine's name of a pod's container.
fn container_name(node: &str, pod: &str, container: &str) -> String {
    berth::nodes::pods::engine_name(&[node, "shop", pod, container, "0"])
}

/// `GET /` from inside a pod: busybox's `nc` resolves the name with the pod's resolver. The
/// body, or why it failed.
fn get_from(container: &str, host: &str, port: u16) -> Result<String, String> {
    let (code, text) = exec(container, &format!("printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 {host} {port}"));
    match text.split_once("\r\n\r\n") {
        Some((head, body)) if code == 0 && head.starts_with("HTTP/1.") && head.contains(" 200 ") => Ok(body.to_owned()),
        _ => Err(format!("exit code {code}: {text}")),
    }
}

/// Runs a command in a container; its exit code and output.
fn exec(container: &str, script: &str) -> (i32, String) {
    let output = Command::new("docker").args(["exec", container, "sh", "-c", script]).output().unwrap();
    let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&output.stderr));
    (output.status.code().unwrap_or(-1), text)
}

/// Waits until `name` has `ready` endpoints in the routes.
async fn routed(cluster: &Cluster, name: &str, ready: usize, what: &str) {
    wait_for(what, LIMIT, || async {
        let services = cluster.get("/api/v1/services").await;
        services.as_array().unwrap().iter().any(|s| s["name"] == name && s["endpointsReady"] == ready)
    })
    .await;
}

fn service<'a>(services: &'a Value, name: &str) -> &'a Value {
    services.as_array().unwrap().iter().find(|s| s["name"] == name).unwrap_or_else(|| panic!("{name}: {services:#}"))
}

/// One GET on a new connection; the body.
async fn fetch(http: &reqwest::Client, url: &str) -> Result<String, String> {
    let response = http.get(url).send().await.map_err(|e| format!("{e:?}"))?;
    let status = response.status();
    let body = response.text().await.map_err(|e| format!("{e:?}"))?;
    if !status.is_success() {
        return Err(format!("{status}: {body}"));
    }
    Ok(body)
}

fn http() -> reqwest::Client {
    reqwest::Client::builder().pool_max_idle_per_host(0).timeout(Duration::from_secs(5)).build().unwrap()
}

/// The pods that answered `count` requests to `url`.
async fn responders(http: &reqwest::Client, url: &str, count: usize) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    for _ in 0..count {
        let body = fetch(http, url).await.unwrap_or_else(|e| panic!("GET {url}: {e}"));
        seen.insert(body.split_whitespace().next().unwrap().to_owned());
    }
    seen
}

/// A cluster of two nodes on 127.0.`subnet`.x following `repo`, both Ready before anything is
/// deployed, so that replicas spread over both.
async fn two_nodes(repo: &mut TestRepo, test: &str, subnet: u8) -> Cluster {
    repo.write("README.md", "manifests\n");
    repo.commit("nothing yet");
    let agent_args = ["--metrics-listen", "{address}:19092"];
    let cluster = Cluster::start_with_agents(test, repo.path().to_str().unwrap(), 2, &[], subnet, &agent_args).await;
    cluster.wait_status("both nodes", |s| s["readyNodes"] == 2).await;
    cluster
}

fn ready_web(status: &Value) -> bool {
    status["sync"] == "Synced" && status["health"] == "Healthy"
}

#[tokio::test(flavor = "multi_thread")]
async fn services_resolve_balance_across_nodes_and_free_their_port_when_gone() {
    let mut repo = TestRepo::new();
    let mut cluster = two_nodes(&mut repo, "route", 10).await;
    repo.write("web.yaml", &web("v1", 0));
    repo.write("services.yaml", &format!("{WEB_SERVICE}---\n{WEB_PODS_SERVICE}"));
    repo.write("client.yaml", &client_app(1));
    let first = repo.commit("web, its services and a client");
    cluster.wait_status("the first sync", |s| ready_web(s) && s["applied"] == first).await;

    let services = cluster.get("/api/v1/services").await;
    let web_service = service(&services, "web");
    let node_port = web_service["ports"][0]["nodePort"].as_u64().expect("a node port is allocated") as u16;
    assert!((30000..=32767).contains(&node_port));
    let cluster_ip = web_service["clusterIP"].as_str().unwrap().to_owned();
    assert!(cluster_ip.starts_with("127.77."), "{cluster_ip}");
    assert!(service(&services, "web-pods")["clusterIP"].is_null());

    let web_pods = pods(&cluster, "web").await;
    routed(&cluster, "web", 3, "the routes to hold all three web pods").await;
    let nodes: BTreeSet<&String> = web_pods.values().map(|(node, _)| node).collect();
    assert_eq!(nodes.len(), 2, "three replicas are spread over both nodes: {web_pods:?}");
    let all: BTreeSet<String> = web_pods.keys().cloned().collect();

    // By name, from a pod, to pods on both nodes; the short name, with the namespace, and the
    // full name.
    let (client_pod, (client_node, _)) = pods(&cluster, "client").await.into_iter().next().unwrap();
    let client = container_name(&client_node, &client_pod, "client");
    for name in ["web", "web.shop", "web.shop.svc.cluster.local"] {
        let body = get_from(&client, name, 80).unwrap_or_else(|e| panic!("GET http://{name}/ from {client}: {e}"));
        assert!(all.contains(body.split_whitespace().next().unwrap_or("")), "{name}: {body}");
    }
    let mut seen = BTreeSet::new();
    for _ in 0..9 {
        let body = get_from(&client, "web", 80).unwrap();
        seen.insert(body.split_whitespace().next().unwrap().to_owned());
    }
    assert_eq!(seen, all, "requests from one pod are balanced over all ready pods on both nodes");
    // The headless name resolves to the pods themselves, on the container port.
    let body = get_from(&client, "web-pods", 8080).unwrap();
    assert!(all.contains(body.split_whitespace().next().unwrap_or("")), "{body}");

    // Every node answers on the node port, and reaches the pods on both nodes.
    let http = http();
    for address in ["127.0.10.2", "127.0.10.3"] {
        assert_eq!(responders(&http, &format!("http://{address}:{node_port}/"), 9).await, all, "node {address}");
    }

    // A pod started after the service exists gets its variables.
    repo.write("client.yaml", &client_app(2));
    repo.commit("a new client");
    wait_for("the new client to run", LIMIT, || async {
        let clients = pods(&cluster, "client").await;
        clients.len() == 1 && !clients.contains_key(&client_pod) && clients.values().all(|(_, ready)| *ready)
    })
    .await;
    let (client_pod, (client_node, _)) = pods(&cluster, "client").await.into_iter().next().unwrap();
    let client = container_name(&client_node, &client_pod, "client");
    let (_, variables) = exec(&client, "echo $WEB_SERVICE_HOST $WEB_SERVICE_PORT $WEB_PORT");
    assert_eq!(variables.trim(), format!("{cluster_ip} 80 tcp://{cluster_ip}:80"));

    // An unready pod gets nothing, through any node, and comes back when ready again.
    let (unready, (unready_node, _)) = web_pods.iter().next().unwrap();
    let unready_container = container_name(unready_node, unready, "web");
    assert_eq!(exec(&unready_container, "rm /www/ready").0, 0);
    wait_for("the pod to turn unready", LIMIT, || async { !pods(&cluster, "web").await[unready].1 }).await;
    let mut others = all.clone();
    others.remove(unready);
    routed(&cluster, "web", 2, "the routes to drop the unready pod").await;
    for address in ["127.0.10.2", "127.0.10.3"] {
        assert_eq!(responders(&http, &format!("http://{address}:{node_port}/"), 12).await, others, "node {address}");
    }
    // Each node's /metrics counts its proxy's connections per service, and the failed probe.
    let scrape = |address: String| async move {
        crate::control::get_text(&format!("http://{address}:19092/metrics"), None).await.1
    };
    let mut connections = 0.0;
    for address in ["127.0.10.2", "127.0.10.3"] {
        let text = scrape(address.to_owned()).await;
        // Traffic to the other node's pods went through its tunnel: mutual TLS between the two
        // agents, each on its own loopback address, both ways.
        for direction in ["out", "in"] {
            let tunnelled =
                crate::control::sample(&text, "berth_agent_tunnel_connections_total", &[("direction", direction)]);
            assert!(tunnelled.is_some_and(|n| n >= 1.0), "node {address} tunnelled {direction}: {text}");
        }
        connections += crate::control::sample(&text, "berth_agent_proxy_connections_total", &[("service", "shop/web")])
            .unwrap_or(0.0);
    }
    assert!(
        connections >= 18.0,
        "the node ports and the client took at least 18 connections to shop/web: {connections}"
    );
    let unready_index = cluster.nodes.iter().position(|n| &n.name == unready_node).unwrap();
    let text = scrape(format!("127.0.10.{}", unready_index + 2)).await;
    let failed = crate::control::sample(
        &text,
        "berth_agent_probe_failures_total",
        &[("pod", unready.as_str()), ("container", "web"), ("probe", "readiness")],
    );
    assert!(failed.is_some_and(|n| n >= 1.0), "the readiness probe of {unready} failed: {text}");
    assert_eq!(exec(&unready_container, "touch /www/ready").0, 0);
    wait_for("the pod to be routed again", LIMIT, || async {
        responders(&http, &format!("http://127.0.10.2:{node_port}/"), 6).await == all
    })
    .await;

    // A killed agent leaves its pods running; the new one serves their service connections
    // and DNS again.
    let client_node_index = cluster.nodes.iter().position(|n| n.name == client_node).unwrap();
    cluster.restart_agent(client_node_index);
    wait_for("the restarted agent to route the client's connections", LIMIT, || async {
        get_from(&client, "web", 80).is_ok()
    })
    .await;

    // Removed from Git: the port closes on every node and the name stops resolving; another
    // service can take the port.
    repo.write("services.yaml", WEB_PODS_SERVICE);
    repo.commit("no web service");
    wait_for("the node port to close on both nodes", LIMIT, || async {
        ["127.0.10.2", "127.0.10.3"].iter().all(|address| std::net::TcpStream::connect((*address, node_port)).is_err())
    })
    .await;
    let error = get_from(&client, "web", 80).unwrap_err();
    assert!(error.contains("bad address"), "the name is gone: {error}");
    let taken = WEB_SERVICE
        .replace("name: web\n", "name: front\n")
        .replace("      targetPort: http\n", &format!("      targetPort: http\n      nodePort: {node_port}\n"));
    repo.write("services.yaml", &format!("{taken}---\n{WEB_PODS_SERVICE}"));
    repo.commit("front takes the freed port");
    wait_for("the freed port to serve the new service", LIMIT, || async {
        fetch(&http, &format!("http://127.0.10.3:{node_port}/")).await.is_ok()
    })
    .await;
    get_from(&client, "front", 80).unwrap();

    // A node that goes NotReady gets no more traffic from the other: its pods leave the routes
    // (though they run on) and the pods that replace them serve.
    let lost = cluster.nodes[1].name.clone();
    cluster.kill_agent(1);
    wait_for("the lost node's pods to leave the routes", LIMIT, || async {
        let services = cluster.get("/api/v1/services").await;
        let endpoints = service(&services, "front")["endpoints"].as_array().unwrap().clone();
        endpoints.len() == 3 && endpoints.iter().all(|e| e.as_str().unwrap().contains("@127.0.10.2:"))
    })
    .await;
    let serving = responders(&http, &format!("http://127.0.10.2:{node_port}/"), 12).await;
    let web_pods = pods(&cluster, "web").await;
    assert!(
        serving.iter().all(|pod| web_pods.get(pod).is_some_and(|(node, _)| node != &lost)),
        "only pods of the Ready node answer: {serving:?} of {web_pods:?}"
    );
}

/// What a steady client saw: per request, when it was sent and what came back.
type Log = Arc<Mutex<Vec<(Instant, Result<String, String>)>>>;

/// Sends `rate` requests a second to `url`, each on a new connection, until `stop` is set.
fn load(url: String, rate: u32, stop: Arc<std::sync::atomic::AtomicBool>) -> (Log, tokio::task::JoinHandle<()>) {
    let log: Log = Arc::new(Mutex::new(Vec::new()));
    let handle = {
        let log = log.clone();
        tokio::spawn(async move {
            let http = http();
            let mut ticks = tokio::time::interval(Duration::from_secs(1) / rate);
            let mut requests = tokio::task::JoinSet::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                ticks.tick().await;
                let (http, url, log) = (http.clone(), url.clone(), log.clone());
                requests.spawn(async move {
                    let sent = Instant::now();
                    let result = fetch(&http, &url).await;
                    log.lock().unwrap().push((sent, result));
                });
            }
            while requests.join_next().await.is_some() {}
        })
    };
    (log, handle)
}

/// Records when each pod of `web` was first seen ready, until `stop` is set.
fn watch_ready(
    cluster: &Cluster,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> (Arc<Mutex<BTreeMap<String, Instant>>>, tokio::task::JoinHandle<()>) {
    let ready: Arc<Mutex<BTreeMap<String, Instant>>> = Arc::new(Mutex::new(BTreeMap::new()));
    let client = cluster.client_with(None);
    let handle = {
        let ready = ready.clone();
        tokio::spawn(async move {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                if let Ok(pods) = client.get("/api/v1/pods").await {
                    let now = Instant::now();
                    for pod in pods.as_array().unwrap() {
                        if pod["workload"] == "web" && pod["ready"] == true {
                            ready.lock().unwrap().entry(pod["name"].as_str().unwrap().to_owned()).or_insert(now);
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    (ready, handle)
}

/// Runs `change` under a steady stream of requests to the node port until the cluster is
/// synced at the new head, and checks that no request failed and every answer came from a
/// pod that was ready. Returns the versions that answered.
async fn under_load(cluster: &Cluster, node_port: u16, change: impl FnOnce() -> String) -> BTreeSet<String> {
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (ready, watcher) = watch_ready(cluster, stop.clone());
    let (log, client) = load(format!("http://127.0.11.2:{node_port}/"), 200, stop.clone());
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = Instant::now();
    let started_wall = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
    let head = change();
    cluster.wait_status("the rollout to finish", |s| ready_web(s) && s["applied"] == head).await;
    // And a little longer, so the last old pods have stopped under load.
    wait_for("the old pods to be gone", LIMIT, || async { pods(cluster, "web").await.len() == 3 }).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    client.await.unwrap();
    watcher.await.unwrap();
    let took = started.elapsed();

    let log = log.lock().unwrap();
    let failures: Vec<&(Instant, Result<String, String>)> = log.iter().filter(|(_, r)| r.is_err()).collect();
    assert!(
        failures.is_empty(),
        "{} of {} requests failed during the rollout, the first (ms after the commit at {:?}): {:?}",
        failures.len(),
        log.len(),
        started_wall,
        failures
            .iter()
            .take(5)
            .map(|(sent, r)| (sent.saturating_duration_since(started).as_millis(), r))
            .collect::<Vec<_>>()
    );
    assert!(log.len() as f64 >= 150.0 * took.as_secs_f64(), "{} requests in {took:?}", log.len());
    let ready = ready.lock().unwrap();
    let mut versions = BTreeSet::new();
    let mut first_answer: BTreeMap<&str, Instant> = BTreeMap::new();
    for (sent, result) in log.iter() {
        let body = result.as_ref().unwrap();
        let mut words = body.split_whitespace();
        let pod = words.next().unwrap();
        versions.insert(words.next().unwrap_or_default().to_owned());
        first_answer.entry(pod).or_insert(*sent);
    }
    // A pod answers only once it is ready: its readiness comes seconds after its server
    // starts, so routing before readiness would show as answers well before it.
    for (pod, answered) in &first_answer {
        let seen_ready = ready.get(*pod).unwrap_or_else(|| panic!("{pod} answered but was never seen ready"));
        assert!(
            *answered + Duration::from_millis(500) >= *seen_ready,
            "{pod} answered {:?} before it was seen ready",
            seen_ready.duration_since(*answered)
        );
    }
    versions
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rollout_and_a_rollback_drop_no_request() {
    let mut repo = TestRepo::new();
    let cluster = two_nodes(&mut repo, "zero", 11).await;
    repo.write("web.yaml", &web("v1", 2));
    repo.write("services.yaml", WEB_SERVICE);
    let v1 = repo.commit("web v1");
    cluster.wait_status("v1", |s| ready_web(s) && s["applied"] == v1).await;
    let services = cluster.get("/api/v1/services").await;
    let node_port = service(&services, "web")["ports"][0]["nodePort"].as_u64().unwrap() as u16;
    routed(&cluster, "web", 3, "the routes to hold all three web pods").await;

    let versions = under_load(&cluster, node_port, || {
        repo.write("web.yaml", &web("v2", 2));
        repo.commit("web v2")
    })
    .await;
    assert_eq!(versions, BTreeSet::from(["v1".to_owned(), "v2".to_owned()]));
    assert!(pods(&cluster, "web").await.len() == 3);

    let path = repo.path().to_owned();
    let versions = under_load(&cluster, node_port, || {
        git(&path, &["revert", "--no-edit", "HEAD"]);
        crate::control::head(&repo)
    })
    .await;
    assert_eq!(versions, BTreeSet::from(["v1".to_owned(), "v2".to_owned()]), "the rollback goes back to v1");
}
