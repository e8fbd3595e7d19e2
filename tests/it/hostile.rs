//! Issue 13: a committer cannot reach beyond the pod. Hostile values inside valid structures are
//! located errors, and where validation could have a gap the agent still holds the line: files
//! stay under the pod's folder, names on the engine never collide, secret values never appear
//! in a finding.

use crate::agent::{TestNode, converge_until_gone, docker, pod, wait_for};
use crate::images::container;
use crate::manifests::single_file_diagnostics;
use crate::support::{TestRepo, berth};
use berth::manifest::types::*;
use berth::nodes::docker::Docker;
use berth::nodes::pods::{PodManager, engine_name, labels};
use berth::nodes::protocol::PodPhase;
use berth::nodes::runtime::{ContainerRuntime, ContainerState};
use berth::sync::Loader;
use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use std::time::Duration;

const POD_WITH_FILES: &str = "apiVersion: v1
kind: ConfigMap
metadata:
  name: conf
data:
  k: v
---
apiVersion: v1
kind: Pod
metadata:
  name: p
spec:
  containers:
    - name: app
      image: registry.example/app:1
      ports:
        - containerPort: 15001
        - containerPort: 15053
      volumeMounts:
        - name: files
          mountPath: /etc/app
          subPath: ../../etc
  volumes:
    - name: files
      configMap:
        name: conf
        defaultMode: 999
        items:
          - key: k
            path: ../../../../../../tmp/x
          - key: k
            path: /etc/cron.d/x
          - key: k
            path: ok/./x
          - key: k
            path: fine.conf
            mode: 07777
";

/// Issue 13 findings 1, 4 and 5: traversal in `items[].path` and `subPath`, modes out of range
/// and berth's own ports are errors at the field.
#[test]
fn volume_paths_modes_and_reserved_ports_are_located_errors() {
    let found = single_file_diagnostics("pod.yaml", POD_WITH_FILES);
    let expected = [
        "pod.yaml:17:26: error: Pod default/p: spec.containers[0].ports[0].containerPort: port 15001 is kept by berth inside every pod",
        "pod.yaml:18:26: error: Pod default/p: spec.containers[0].ports[1].containerPort: port 15053 is kept by berth inside every pod",
        "pod.yaml:22:20: error: Pod default/p: spec.containers[0].volumeMounts[0].subPath: subPath must be a relative path inside the volume",
        "pod.yaml:27:22: error: Pod default/p: spec.volumes[0].configMap.defaultMode: mode 01747 is out of range",
        "pod.yaml:30:19: error: Pod default/p: spec.volumes[0].configMap.items[0].path: `../../../../../../tmp/x` is not a relative path inside the volume",
        "pod.yaml:32:19: error: Pod default/p: spec.volumes[0].configMap.items[1].path: `/etc/cron.d/x` is not a relative path inside the volume",
        "pod.yaml:34:19: error: Pod default/p: spec.volumes[0].configMap.items[2].path: `ok/./x` is not a relative path inside the volume",
        "pod.yaml:37:19: error: Pod default/p: spec.volumes[0].configMap.items[3].mode: mode 07777 is out of range",
    ];
    assert_eq!(found.len(), expected.len(), "{found:#?}");
    let found_all = &found;
    for (found, expected) in found.iter().zip(expected) {
        assert!(found.starts_with(expected), "\n found: {found}\nwanted: {expected}\n all: {found_all:#?}");
    }
}

/// Issue 13 finding 4: `0440` is octal as Kubernetes reads it, and so are `0o440` and 288.
#[test]
fn file_modes_are_read_as_kubernetes_reads_them() {
    for written in ["0440", "0o440", "288"] {
        let text = POD_WITH_FILES
            .replace("defaultMode: 999", &format!("defaultMode: {written}"))
            .replace("mode: 07777", "mode: 0600")
            .replace("          - key: k\n            path: ../../../../../../tmp/x\n", "")
            .replace("          - key: k\n            path: /etc/cron.d/x\n", "")
            .replace("          - key: k\n            path: ok/./x\n", "")
            .replace("          subPath: ../../etc\n", "")
            .replace(
                "        - containerPort: 15001\n        - containerPort: 15053\n",
                "        - containerPort: 80\n",
            );
        let parsed = berth::manifest::parse_file("pod.yaml", &text);
        assert!(parsed.diagnostics.is_empty(), "{written}: {:?}", parsed.diagnostics);
        let pod = parsed.resources.iter().find(|r| r.key.name == "p").unwrap();
        let canonical = pod.canonical_value();
        let source = &canonical["spec"]["volumes"][0]["configMap"];
        assert_eq!(source["defaultMode"], 0o440, "{written}");
        assert_eq!(source["items"][0]["mode"], 0o600, "{written}");
    }
}

/// Issue 13 finding 3: no finding about a Secret's value quotes it, in text or JSON.
#[test]
fn secret_values_never_appear_in_findings() {
    let mut repo = TestRepo::new();
    repo.write(
        "secret.yaml",
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: s\nstringData:\n  pin: 7731946\n  flag: true\n  ratio: 0.918273\n  list: [8812734]\ndata:\n  raw: 99887766\n",
    );
    repo.commit("secret");
    for format in ["text", "json"] {
        let (code, stdout, stderr) = berth(repo.path(), &["validate", "-o", format]);
        assert_eq!(code, 1, "{stdout}{stderr}");
        for value in ["7731946", "true`", "0.918273", "8812734", "99887766"] {
            assert!(
                !stdout.contains(value) && !stderr.contains(value),
                "{format} output shows {value}:\n{stdout}{stderr}"
            );
        }
        assert!(stdout.contains("(value hidden)"), "{stdout}");
        assert!(stdout.contains("stringData.pin"), "the field is still named: {stdout}");
    }
    // A ConfigMap's values are not secret: its findings say what to quote.
    let found = single_file_diagnostics(
        "cm.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c\ndata:\n  port: 8080\n",
    );
    assert!(found[0].contains("quote the value: \"8080\""), "{found:?}");
}

/// Issue 13 finding 6: requests summed without a wrap; a pod no node could ever hold is
/// pending with that reason.
#[test]
fn requests_no_node_can_hold_are_pending_with_that_reason() {
    let text = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: big\nspec:\n  containers:\n".to_owned()
        + &["a", "b", "c"]
            .map(|name| {
                format!("    - name: {name}\n      image: registry.example/x:1\n      resources:\n        requests:\n          memory: 9E\n          cpu: \"9000000000000000\"\n")
            })
            .concat();
    let parsed = berth::manifest::parse_file("big.yaml", &text);
    assert!(parsed.diagnostics.is_empty(), "{:?}", parsed.diagnostics);
    let berth::manifest::Object::Pod(pod) = &parsed.resources[0].object else { panic!("not a pod") };
    let requests = berth::plan::schedule::requests(&pod.spec);
    assert_eq!(requests.memory_bytes, u64::MAX, "three times 9E saturates instead of wrapping");
    assert_eq!(requests.cpu_millis, u64::MAX);

    let node = berth::plan::schedule::NodeInfo {
        name: "n1".into(),
        ready: true,
        labels: BTreeMap::new(),
        allocatable: berth::nodes::protocol::Resources { cpu_millis: 2000, memory_bytes: 24 << 30 },
    };
    let request = berth::plan::schedule::PodRequest {
        pod: "big".into(),
        workload: "big".into(),
        requests,
        node_selector: BTreeMap::new(),
        pinned: None,
    };
    let placed = berth::plan::schedule::schedule(&[node], &[], &[request]);
    let berth::plan::schedule::Placement::Unschedulable(reason) = &placed[0].1 else { panic!("{placed:?}") };
    assert!(reason.contains("requests more cpu than any node has (2000m at most)"), "{reason}");
}

/// Issue 13 finding 7: a folder symlink that leaves the repository is an error at its path;
/// one inside is named as not followed; an excluded one is left alone.
#[test]
fn folder_symlinks_are_located() {
    let mut repo = TestRepo::new();
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("ns.yaml"), "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: stolen\n")
        .unwrap();
    repo.write("apps/ns.yaml", "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: inside\n");
    std::os::unix::fs::symlink(outside.path(), repo.path().join("elsewhere")).unwrap();
    std::os::unix::fs::symlink("apps", repo.path().join("again")).unwrap();
    repo.commit("links");
    let mut loader = Loader::open(repo.path()).unwrap();
    let loaded = loader.load("HEAD").unwrap();
    let found: Vec<String> = loaded.diagnostics.iter().map(ToString::to_string).collect();
    assert_eq!(found.len(), 2, "{found:?}");
    assert!(found[0].starts_with("again:1:1: warning: symlinked folder (to `apps`) is not followed"), "{found:?}");
    assert!(found[1].starts_with("elsewhere:1:1: error: symlink points outside the repository"), "{found:?}");
    assert!(found[1].contains("exclude: [\"elsewhere\"]"), "{found:?}");
    let worktree = loader.load_worktree().unwrap();
    let found: Vec<String> = worktree.diagnostics.iter().map(ToString::to_string).collect();
    assert!(found.iter().any(|d| d.starts_with("elsewhere:1:1: error: symlink points outside")), "{found:?}");
    assert!(worktree.resources.iter().all(|r| r.key.name != "stolen"));

    repo.write("berth.yaml", "exclude: [elsewhere]\n");
    repo.commit("exclude the link");
    let loaded = loader.load("HEAD").unwrap();
    assert!(!loaded.diagnostics.iter().any(|d| d.is_error()), "{:?}", loaded.diagnostics);
}

async fn manager(node: &TestNode, docker: &Docker) -> PodManager<Docker> {
    PodManager::new(Arc::new(docker.clone()), node.config()).await.unwrap()
}

fn config_volume(name: &str, items: &[(&str, Option<i32>)]) -> Volume {
    Volume {
        name: name.into(),
        empty_dir: None,
        host_path: None,
        config_map: Some(ConfigMapVolumeSource {
            name: "conf".into(),
            items: items
                .iter()
                .map(|(path, mode)| KeyToPath { key: "k".into(), path: (*path).into(), mode: *mode })
                .collect(),
            default_mode: Some(0o440),
            optional: None,
        }),
        secret: None,
        downward_api: None,
        persistent_volume_claim: None,
    }
}

/// Issue 13 finding 1, at the agent: an assignment that skipped validation still writes
/// nothing outside the pod's folder, and item modes are applied.
#[tokio::test]
async fn volume_files_never_leave_the_pod_folder() {
    let docker = docker().await;
    let node = TestNode::new("beneath");
    let manager = manager(&node, &docker).await;
    let outside = tempfile::tempdir().unwrap();
    let escape = outside.path().join("escaped");
    let traversal = format!("{}{}", "../".repeat(12), escape.display().to_string().trim_start_matches('/'));
    let hostile_paths = [traversal.as_str(), escape.to_str().unwrap(), "link/x", "a/../../../x"];

    // One pod per path, each with a symlink planted in its volume's folder before it starts.
    let mut desired = Vec::new();
    for (index, path) in hostile_paths.iter().enumerate() {
        let name = format!("hostile-{index}");
        let mut hostile = pod(&name, vec![container("main", "sleep 3600")]);
        hostile.spec.volumes.push(config_volume("files", &[(path, None)]));
        hostile.files.insert("files".into(), BTreeMap::from([((*path).to_owned(), b"owned".to_vec())]));
        let planted = node.state.path().join(format!("pods/shop_{name}/volumes/files"));
        std::fs::create_dir_all(&planted).unwrap();
        std::os::unix::fs::symlink(outside.path(), planted.join("link")).unwrap();
        desired.push(hostile);
    }

    let mut good = pod("good", vec![container("main", "cat /etc/app/conf/app.conf; sleep 3600")]);
    good.spec.volumes.push(config_volume("files", &[("conf/app.conf", Some(0o600)), ("plain", None)]));
    good.spec.containers[0].volume_mounts.push(VolumeMount {
        name: "files".into(),
        mount_path: "/etc/app".into(),
        read_only: None,
        sub_path: None,
    });
    good.files.insert(
        "files".into(),
        BTreeMap::from([("conf/app.conf".to_owned(), b"port = 80\n".to_vec()), ("plain".to_owned(), b"p".to_vec())]),
    );
    desired.push(good);
    manager.converge(&desired).await.unwrap();

    assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0, "a file was written outside the pod's folder");
    let statuses = manager.observe(&desired).await.unwrap();
    for status in statuses.iter().filter(|s| s.pod.starts_with("hostile")) {
        assert_eq!(status.phase, PodPhase::Pending, "{status:?}");
        let error = status.containers[0].last_error.clone().unwrap_or_default();
        assert!(error.contains("beneath the volume folder") || error.contains("not a relative path"), "{error}");
    }

    let files = node.state.path().join("pods/shop_good/volumes/files");
    let mode = |path: &str| std::fs::metadata(files.join(path)).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode("conf/app.conf"), 0o600, "an item's mode wins");
    assert_eq!(mode("plain"), 0o440, "defaultMode applies to the others");
    wait_for("the good pod to run", Duration::from_secs(20), || async {
        manager.observe(&desired).await.unwrap().iter().any(|s| s.pod == "good" && s.phase == PodPhase::Running)
    })
    .await;
    converge_until_gone(&manager, &[]).await;
    assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);
}

/// Issue 13 finding 2: pods whose names ran together under the old scheme both run.
#[tokio::test]
async fn names_on_the_engine_never_collide() {
    let docker = docker().await;
    let node = TestNode::new("names");
    let manager = manager(&node, &docker).await;
    let mut team = pod("x-app", vec![container("main", "sleep 3600")]);
    team.namespace = "team".into();
    let mut team_x = pod("app", vec![container("main", "sleep 3600")]);
    team_x.namespace = "team-x".into();
    let plain = pod("p", vec![container("c", "sleep 3600")]);
    let lookalike = pod("p-c-0", vec![container("main", "sleep 3600")]);
    let desired = vec![team, team_x, plain, lookalike];
    manager.converge(&desired).await.unwrap();
    wait_for("all four pods to run", Duration::from_secs(30), || async {
        manager.observe(&desired).await.unwrap().iter().all(|s| s.phase == PodPhase::Running)
    })
    .await;
    let names: Vec<String> =
        docker.list(&[(labels::NODE, &node.name)]).await.unwrap().into_iter().map(|c| c.name).collect();
    assert_eq!(names.len(), 8, "four sandboxes and four containers: {names:?}");
    assert!(
        names.iter().any(|n| n.trim_start_matches('/') == engine_name(&[&node.name, "team", "x-app", "main", "0"]))
    );
}

/// Issue 13 finding 2: pods created under the old names are adopted, not restarted, and their
/// old-style volumes are removed with them, never another pod's.
#[tokio::test]
async fn pods_named_the_old_way_are_adopted() {
    let docker = docker().await;
    let node = TestNode::new("legacy");
    let desired = vec![pod("web-1", vec![container("main", "sleep 3600")])];
    let first = manager(&node, &docker).await;
    first.converge(&desired).await.unwrap();
    wait_for("the pod to run", Duration::from_secs(20), || async {
        first.observe(&desired).await.unwrap()[0].phase == PodPhase::Running
    })
    .await;
    drop(first);
    // Rename its containers to what the earlier agent called them, and give the inventory two
    // volumes named the old way: one of this pod, one of pod `web-1-data` whose volume was `x`
    // (`berth-<node>-shop-web-1-data-x` reads both ways).
    let before = docker.list(&[(labels::NODE, &node.name)]).await.unwrap();
    for info in &before {
        let legacy = match info.labels.get(labels::CONTAINER) {
            Some(container) => format!("berth-{}-shop-web-1-{container}-0", node.name),
            None => format!("berth-{}-shop-web-1", node.name),
        };
        let renamed = std::process::Command::new("docker").args(["rename", &info.id, &legacy]).status().unwrap();
        assert!(renamed.success());
    }
    let ours = format!("berth-{}-shop-web-1-cache", node.name);
    let theirs = format!("berth-{}-shop-web-1-data-x", node.name);
    for (volume, pod_name) in [(&ours, "web-1"), (&theirs, "web-1-data")] {
        let labels = BTreeMap::from([
            (labels::NODE.to_owned(), node.name.clone()),
            (labels::NAMESPACE.to_owned(), "shop".to_owned()),
            (labels::POD.to_owned(), pod_name.to_owned()),
        ]);
        docker.create_volume(volume, &labels).await.unwrap();
    }
    let inventory_path = node.state.path().join("inventory.json");
    let mut inventory: serde_json::Value = serde_json::from_slice(&std::fs::read(&inventory_path).unwrap()).unwrap();
    inventory["volumes"] = serde_json::json!([ours, theirs]);
    std::fs::write(&inventory_path, serde_json::to_vec(&inventory).unwrap()).unwrap();

    let second = manager(&node, &docker).await;
    let summary = second.converge(&desired).await.unwrap();
    assert_eq!((summary.pods_created, summary.pods_removed, summary.containers_restarted), (0, 0, 0));
    let after = docker.list(&[(labels::NODE, &node.name)]).await.unwrap();
    let ids = |list: &[berth::nodes::runtime::ContainerInfo]| {
        let mut ids: Vec<String> = list.iter().map(|c| c.id.clone()).collect();
        ids.sort();
        ids
    };
    assert_eq!(ids(&before), ids(&after), "the same containers run");
    assert!(after.iter().all(|c| c.state == ContainerState::Running));

    converge_until_gone(&second, &[]).await;
    assert!(docker.list(&[(labels::NODE, &node.name)]).await.unwrap().is_empty());
    assert!(docker.client().inspect_volume(&ours).await.is_err(), "the pod's old-style volume went with it");
    assert!(docker.client().inspect_volume(&theirs).await.is_ok(), "another pod's volume stays");
}
