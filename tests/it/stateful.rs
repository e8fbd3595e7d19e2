//! Issue 17: StatefulSets and claims on the real engine. Each ordinal keeps its name, its claim
//! and its node through a rolling update, a killed container, an agent restart, a server
//! restart and a scale down and up; pods start in order; each pod has a DNS name; a claim's
//! pods wait for its node; an orphaned claim's data goes only when asked.

use crate::agent::wait_for;
use crate::control::Cluster;
use crate::support::TestRepo;
use serde_json::Value;
use std::process::Command;
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(120);

fn stateful_set(replicas: u32, version: &str) -> String {
    let image = crate::images::busybox();
    format!(
        "apiVersion: v1
kind: Service
metadata: {{name: db}}
spec:
  clusterIP: None
  selector: {{app: db}}
  ports: [{{name: http, port: 8080}}]
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {{name: db}}
spec:
  serviceName: db
  replicas: {replicas}
  selector: {{matchLabels: {{app: db}}}}
  template:
    metadata:
      labels: {{app: db}}
      annotations: {{version: '{version}'}}
    spec:
      terminationGracePeriodSeconds: 0
      containers:
        - name: db
          image: {image}
          env:
            - name: POD
              valueFrom: {{fieldRef: {{fieldPath: metadata.name}}}}
          command:
            - sh
            - -c
            - 'test -f /data/who || echo $POD > /data/who; echo {version} >> /data/log; (sleep 1; touch /tmp/ready) & exec httpd -f -p 8080 -h /data'
          ports: [{{containerPort: 8080}}]
          readinessProbe:
            exec: {{command: [test, -f, /tmp/ready]}}
            periodSeconds: 1
          volumeMounts: [{{name: data, mountPath: /data}}]
  volumeClaimTemplates:
    - metadata: {{name: data}}
      spec:
        accessModes: [ReadWriteOnce]
        resources: {{requests: {{storage: 1Gi}}}}
"
    )
}

fn synced(status: &Value) -> bool {
    status["sync"] == "Synced" && status["health"] == "Healthy"
}

/// The StatefulSet's pods: name to node, of those assigned and not stopping.
async fn pods(cluster: &Cluster) -> Vec<(String, String)> {
    let pods = cluster.get("/api/v1/pods").await;
    let mut out: Vec<(String, String)> = pods
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["name"].as_str().is_some_and(|n| n.starts_with("db-")) && p["status"] != "Terminating")
        .map(|p| (p["name"].as_str().unwrap().to_owned(), p["node"].as_str().unwrap_or_default().to_owned()))
        .collect();
    out.sort();
    out
}

/// What `berth exec POD -- CMD...` prints, which must succeed.
fn exec(cluster: &Cluster, dir: &std::path::Path, pod: &str, command: &[&str]) -> String {
    let mut args = vec!["exec", pod, "--"];
    args.extend_from_slice(command);
    let (code, out, err) = cluster.cli(dir, &args, true);
    assert_eq!(code, 0, "exec {pod} {command:?}: {err}");
    out
}

/// When the first attempt of pod `pod`'s container started, from the engine, in nanoseconds.
fn started_at(node: &str, pod: &str, attempt: u32) -> String {
    let name = berth::nodes::pods::engine_name(&[node, "default", pod, "db", &attempt.to_string()]);
    let output = Command::new("docker").args(["inspect", "-f", "{{.State.StartedAt}}", &name]).output().unwrap();
    assert!(output.status.success(), "inspect {name}: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// Each ordinal reads its own name from its claim.
fn each_sees_its_own_data(cluster: &Cluster, dir: &std::path::Path, replicas: usize) {
    for ordinal in 0..replicas {
        let pod = format!("db-{ordinal}");
        assert_eq!(exec(cluster, dir, &pod, &["cat", "/data/who"]), format!("{pod}\n"), "{pod}'s claim");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stateful_set_keeps_each_ordinals_data_and_node_through_everything() {
    let mut repo = TestRepo::new();
    repo.write("db.yaml", &stateful_set(3, "v1"));
    repo.commit("a database of three");
    let mut cluster = Cluster::start_on("sts", repo.path().to_str().unwrap(), 2, &[], 41).await;
    let dir = repo.path().to_owned();
    cluster.wait_status("three ordinals to run", synced).await;
    let placed = pods(&cluster).await;
    assert_eq!(placed.iter().map(|(p, _)| p.as_str()).collect::<Vec<_>>(), ["db-0", "db-1", "db-2"]);

    // OrderedReady: each started only once the one before it was ready (a second after it
    // started), so their start times are a second apart at least, in order.
    let starts: Vec<chrono::DateTime<chrono::FixedOffset>> = placed
        .iter()
        .map(|(pod, node)| chrono::DateTime::parse_from_rfc3339(&started_at(node, pod, 0)).unwrap())
        .collect();
    for pair in starts.windows(2) {
        assert!(pair[1] - pair[0] >= chrono::TimeDelta::milliseconds(1000), "started in order: {starts:?}");
    }
    each_sees_its_own_data(&cluster, &dir, 3);

    // Every claim is Bound to the node of its pod.
    let claims = cluster.get("/api/v1/pvcs").await;
    for (pod, node) in &placed {
        let claim = claims.as_array().unwrap().iter().find(|c| c["name"] == format!("data-{pod}")).cloned();
        let claim = claim.unwrap_or_else(|| panic!("no claim data-{pod}: {claims:#}"));
        assert_eq!((claim["status"].as_str(), claim["node"].as_str()), (Some("Bound"), Some(node.as_str())));
        assert_eq!(claim["capacity"], "1Gi");
    }
    let (code, table, err) = cluster.cli(&dir, &["get", "pvc"], true);
    assert_eq!(code, 0, "{err}");
    assert!(table.contains("data-db-1") && table.contains("Bound") && table.contains("RWO"), "{table}");

    // Each pod has a name of its own through the headless service.
    let fetched =
        exec(&cluster, &dir, "db-0", &["wget", "-q", "-O", "-", "http://db-2.db.default.svc.cluster.local:8080/who"]);
    assert_eq!(fetched, "db-2\n");

    // A rolling update replaces the pods from the highest ordinal down, each on its claim's node.
    repo.write("db.yaml", &stateful_set(3, "v2"));
    let v2 = repo.commit("v2");
    cluster.wait_status("the update to finish", |s| synced(s) && s["applied"] == v2.as_str()).await;
    assert_eq!(pods(&cluster).await, placed, "each ordinal stays on its claim's node");
    each_sees_its_own_data(&cluster, &dir, 3);
    assert_eq!(exec(&cluster, &dir, "db-1", &["cat", "/data/log"]), "v1\nv2\n");
    let updated: Vec<String> = placed.iter().map(|(pod, node)| started_at(node, pod, 0)).collect();
    assert!(updated[2] < updated[1] && updated[1] < updated[0], "highest ordinal first: {updated:?}");

    // A killed container comes back to the same data.
    let (_, node1) = &placed[1];
    let container = berth::nodes::pods::engine_name(&[node1, "default", "db-1", "db", "0"]);
    assert!(Command::new("docker").args(["kill", &container]).status().unwrap().success());
    wait_for("db-1 to restart", LIMIT, || async {
        cluster.cli(&dir, &["exec", "db-1", "--", "cat", "/data/log"], true).1 == "v1\nv2\nv2\n"
    })
    .await;

    // Agent and server restarts change nothing.
    cluster.restart_agent(0);
    cluster.kill_server();
    cluster.start_server();
    cluster.wait_status("the restarted server to find all synced", synced).await;
    assert_eq!(pods(&cluster).await, placed);
    each_sees_its_own_data(&cluster, &dir, 3);

    // Scale 3 -> 1 -> 3: the claims stay, and the same ordinals find their data again.
    repo.write("db.yaml", &stateful_set(1, "v2"));
    let one = repo.commit("one");
    cluster.wait_status("the scale down", |s| synced(s) && s["applied"] == one.as_str()).await;
    assert_eq!(pods(&cluster).await.len(), 1);
    let claims = cluster.get("/api/v1/pvcs").await;
    assert_eq!(claims.as_array().unwrap().iter().filter(|c| c["status"] == "Bound").count(), 3, "{claims:#}");
    repo.write("db.yaml", &stateful_set(3, "v2"));
    let three = repo.commit("three again");
    cluster.wait_status("the scale up", |s| synced(s) && s["applied"] == three.as_str()).await;
    assert_eq!(pods(&cluster).await, placed);
    each_sees_its_own_data(&cluster, &dir, 3);
    assert_eq!(exec(&cluster, &dir, "db-2", &["cat", "/data/log"]), "v1\nv2\nv2\n");

    // The node of a claim goes away: its pod waits for it, never made again empty elsewhere.
    let (_, node2) = placed.iter().find(|(_, node)| *node == cluster.nodes[1].name).cloned().expect("a pod on node 1");
    cluster.kill_agent(1);
    let waiting = cluster
        .wait_status("a pod to wait for its claim's node", |s| {
            s.to_string().contains(&format!("is on node {node2}, which is NotReady"))
        })
        .await;
    assert_ne!(waiting["sync"], "Synced", "{waiting:#}");
    let node_events = cluster.get(&format!("/api/v1/events?for=node/{node2}")).await;
    assert!(node_events.to_string().contains("NodeNotReady"), "{node_events:#}");
    let lost: Vec<&String> = placed.iter().filter(|(_, node)| *node == node2).map(|(pod, _)| pod).collect();
    let now = pods(&cluster).await;
    for (pod, node) in &now {
        assert!(!lost.contains(&pod) || *node == node2, "{pod} was made again elsewhere: {now:?}");
    }

    // Gone from Git, the claims are orphaned and keep their data until deleted by hand.
    repo.write("db.yaml", "");
    repo.commit("no database");
    // Deleting every applied object waits for an approval of the plan, which says the data stays.
    let waiting = cluster.wait_status("the deletion to wait for an approval", |s| !s["waiting"].is_null()).await;
    assert!(waiting["waiting"].as_str().unwrap().contains("prune threshold"), "{waiting:#}");
    let (code, plan, err) = cluster.cli(&dir, &["sync"], true);
    assert_eq!(code, 0, "{err}");
    assert!(plan.contains("its claims data-db-N and their data are kept, orphaned"), "{plan}");
    let (code, _, err) = cluster.cli(&dir, &["sync", "--approve"], true);
    assert_eq!(code, 0, "{err}");
    wait_for("the claims to be orphaned", LIMIT, || async {
        let claims = cluster.get("/api/v1/pvcs").await;
        claims.as_array().is_some_and(|c| c.len() == 3 && c.iter().all(|c| c["status"] == "Orphaned"))
    })
    .await;
    let node0 = cluster.nodes[0].name.clone();
    let on_node0 = placed.iter().find(|(_, node)| *node == node0).map(|(pod, _)| format!("data-{pod}")).unwrap();
    let volume = berth::nodes::pods::claim_volume_name(&node0, "default", &on_node0);
    let volume_exists =
        |name: &str| Command::new("docker").args(["volume", "inspect", name]).output().unwrap().status.success();
    assert!(volume_exists(&volume), "an orphaned claim keeps its volume");
    let (code, _, err) = cluster.cli(&dir, &["delete", "pvc", &on_node0], true);
    assert_eq!(code, 1, "no --yes off a terminal: {err}");
    assert!(err.contains("confirm with --yes"), "{err}");
    wait_for("the pods on node 0 to be gone", LIMIT, || async {
        let (code, _, _) = cluster.cli(&dir, &["delete", "pvc", &on_node0, "--yes"], true);
        code == 0
    })
    .await;
    assert!(!volume_exists(&volume), "berth delete pvc removes the volume");
    let claims = cluster.get("/api/v1/pvcs").await;
    assert!(claims.as_array().unwrap().iter().all(|c| c["name"] != on_node0.as_str()), "{claims:#}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_delete_retention_policy_removes_scaled_away_claims_once_approved() {
    let image = crate::images::busybox();
    let cache = |replicas: u32| {
        format!(
            "apiVersion: apps/v1
kind: StatefulSet
metadata: {{name: cache}}
spec:
  replicas: {replicas}
  podManagementPolicy: Parallel
  persistentVolumeClaimRetentionPolicy: {{whenScaled: Delete}}
  selector: {{matchLabels: {{app: cache}}}}
  template:
    metadata: {{labels: {{app: cache}}}}
    spec:
      terminationGracePeriodSeconds: 0
      containers:
        - name: cache
          image: {image}
          command: [sh, -c, 'echo kept > /data/file; exec sleep 3600']
          volumeMounts: [{{name: data, mountPath: /data}}]
  volumeClaimTemplates:
    - metadata: {{name: data}}
      spec: {{accessModes: [ReadWriteOnce]}}
"
        )
    };
    let mut repo = TestRepo::new();
    repo.write("cache.yaml", &cache(2));
    repo.commit("two caches");
    let cluster = Cluster::start_on("retain", repo.path().to_str().unwrap(), 1, &[], 42).await;
    let dir = repo.path().to_owned();
    cluster.wait_status("two caches to run", synced).await;
    let node = cluster.nodes[0].name.clone();
    let volume = |claim: &str| berth::nodes::pods::claim_volume_name(&node, "default", claim);
    let exists =
        |name: String| Command::new("docker").args(["volume", "inspect", &name]).output().unwrap().status.success();
    assert!(exists(volume("data-cache-0")) && exists(volume("data-cache-1")));

    repo.write("cache.yaml", &cache(1));
    let one = repo.commit("one cache");
    let waiting = cluster.wait_status("the scale down to wait for an approval", |s| !s["waiting"].is_null()).await;
    assert!(waiting["waiting"].as_str().unwrap().contains("deletes the data of data-cache-1"), "{waiting:#}");
    assert!(exists(volume("data-cache-1")), "nothing is deleted before the approval");
    let (code, _, err) = cluster.cli(&dir, &["sync", "--approve"], true);
    assert_eq!(code, 0, "{err}");
    cluster.wait_status("the scale down", |s| synced(s) && s["applied"] == one.as_str()).await;
    wait_for("the scaled-away claim to go", LIMIT, || async {
        let claims = cluster.get("/api/v1/pvcs").await;
        claims.as_array().is_some_and(|c| c.len() == 1 && c[0]["name"] == "data-cache-0")
    })
    .await;
    assert!(!exists(volume("data-cache-1")), "its volume is removed");
    assert!(exists(volume("data-cache-0")), "the claim of the ordinal that stays is kept");
}
