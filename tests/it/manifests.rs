//! Validation of manifests as a user meets it: `berth validate` on real repositories, every
//! finding with file:line:col, the object and the field.

use crate::support::{TestRepo, berth, check_snapshot, fixtures};
use berth::sync::Loader;

/// Every file of `tests/fixtures/invalid` is committed to one repository; `berth validate`
/// must report every problem in all of them (not only the first), in a stable order.
#[test]
fn validate_reports_every_problem_with_its_position() {
    let mut repo = TestRepo::new();
    let dir = fixtures().join("invalid");
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml") {
            repo.write(path.file_name().unwrap().to_str().unwrap(), &std::fs::read_to_string(&path).unwrap());
        }
    }
    repo.commit("invalid manifests");
    let (code, stdout, stderr) = berth(repo.path(), &["validate"]);
    assert_eq!(code, 1, "errors give exit code 1; stderr: {stderr}");
    check_snapshot(&fixtures().join("invalid.expected"), &stdout);

    let (code, stdout, _) = berth(repo.path(), &["validate", "-o", "json"]);
    assert_eq!(code, 1);
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let diagnostics = report["diagnostics"].as_array().unwrap();
    assert_eq!(
        report["errors"].as_u64().unwrap() as usize,
        diagnostics.iter().filter(|d| d["severity"] == "error").count()
    );
    let typo = diagnostics.iter().find(|d| d["field"] == "spec.replicaz").expect("the replicaz typo is reported");
    assert_eq!(typo["file"], "typos.yaml");
    assert_eq!(typo["line"], 10);
    assert_eq!(typo["column"], 3);
    assert_eq!(typo["object"], "Deployment shop/web");
    assert_eq!(typo["help"], "did you mean `replicas`?");
}

#[test]
fn warnings_alone_pass_validation() {
    let mut repo = TestRepo::new();
    repo.write(
        "pod.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\nspec:\n  serviceAccountName: x\n  containers:\n    - name: c\n      image: registry.example/c:1\n",
    );
    repo.commit("pod");
    let (code, stdout, _) = berth(repo.path(), &["validate"]);
    assert_eq!(code, 0, "{stdout}");
    assert!(stdout.contains("pod.yaml:6:3: warning: Pod default/p: spec.serviceAccountName: field is accepted but not acted on by berth (berth has no service accounts)"), "{stdout}");
    assert!(stdout.contains("1 objects in 1 files, 0 errors, 1 warnings"), "{stdout}");
}

pub fn single_file_diagnostics(name: &str, text: &str) -> Vec<String> {
    let mut repo = TestRepo::new();
    repo.write(name, text);
    repo.commit("one file");
    let mut loader = Loader::open(repo.path()).unwrap();
    loader.load("HEAD").unwrap().diagnostics.iter().map(ToString::to_string).collect()
}

#[test]
fn an_alias_bomb_is_refused() {
    let mut text = String::from("a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
    for level in 1..12 {
        let previous = format!("*a{}", level - 1);
        text.push_str(&format!("a{level}: &a{level} [{}]\n", vec![previous; 10].join(", ")));
    }
    let found = single_file_diagnostics("bomb.yaml", &text);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].starts_with("bomb.yaml:6:"), "{found:?}");
    assert!(found[0].contains("aliases expand this file to more than 250000 nodes"), "{found:?}");
}

#[test]
fn deep_nesting_is_refused() {
    let mut block = String::new();
    for level in 0..100 {
        block.push_str(&format!("{}k{level}:\n", "  ".repeat(level)));
    }
    let found = single_file_diagnostics("block.yaml", &block);
    assert_eq!(found, ["block.yaml:65:129: error: nesting is deeper than 64 levels"]);

    let depth = 100_000;
    let flow = format!("a: {}{}\n", "[".repeat(depth), "]".repeat(depth));
    let found = single_file_diagnostics("flow.yaml", &flow);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].starts_with("flow.yaml:1:") && found[0].ends_with("error: nesting is too deep"), "{found:?}");
}

#[test]
fn a_huge_file_is_refused_before_it_is_parsed() {
    let line = "# padding padding padding padding padding padding padding padding padding\n";
    let text = line.repeat(2 * 1024 * 1024 / line.len());
    let found = single_file_diagnostics("huge.yaml", &text);
    assert_eq!(found.len(), 1);
    assert!(found[0].starts_with("huge.yaml:1:1: error: file is 2097"), "{found:?}");
    assert!(
        found[0].ends_with("bytes, larger than the limit of 1048576 bytes (split it into several files)"),
        "{found:?}"
    );
}

#[test]
fn non_utf8_is_an_error() {
    let mut repo = TestRepo::new();
    std::fs::write(repo.path().join("latin1.yaml"), b"data: caf\xe9\n").unwrap();
    repo.commit("latin1");
    let mut loader = Loader::open(repo.path()).unwrap();
    let found: Vec<String> = loader.load("HEAD").unwrap().diagnostics.iter().map(ToString::to_string).collect();
    assert_eq!(found, ["latin1.yaml:1:1: error: file is not UTF-8 text"]);
}

#[test]
fn symlinks_that_leave_the_repository_are_not_followed() {
    let mut repo = TestRepo::new();
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("secret.yaml"), "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: stolen\n")
        .unwrap();
    // Not a .yaml file, so only the symlink that points at it reads it.
    repo.write("real/ns.manifest", "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: inside\n");
    std::os::unix::fs::symlink(outside.path().join("secret.yaml"), repo.path().join("absolute.yaml")).unwrap();
    std::os::unix::fs::symlink("../../../../../../../../etc/hostname", repo.path().join("relative.yaml")).unwrap();
    std::os::unix::fs::symlink("real/ns.manifest", repo.path().join("inside.yaml")).unwrap();
    repo.commit("links");

    let mut loader = Loader::open(repo.path()).unwrap();
    let loaded = loader.load("HEAD").unwrap();
    let found: Vec<String> = loaded.diagnostics.iter().map(ToString::to_string).collect();
    assert_eq!(found.len(), 2, "{found:?}");
    assert!(found[0].starts_with("absolute.yaml:1:1: error: symlink points outside the repository"), "{found:?}");
    assert!(found[1].starts_with("relative.yaml:1:1: error: symlink points outside the repository"), "{found:?}");
    assert!(loaded.resources.iter().all(|r| r.key.name != "stolen"));
    // A symlink that stays inside the repository is followed.
    assert!(loaded.resources.iter().any(|r| r.key.name == "inside" && r.file == "inside.yaml"));

    // The work tree is bounded the same way.
    let worktree = loader.load_worktree().unwrap();
    let found: Vec<String> = worktree.diagnostics.iter().map(ToString::to_string).collect();
    assert!(
        found.iter().any(|d| d.starts_with("absolute.yaml:1:1: error: symlink points outside the repository")),
        "{found:?}"
    );
    assert!(worktree.resources.iter().all(|r| r.key.name != "stolen"));
}

/// Issue 15: valid Kubernetes YAML that berth used to reject loads, with warnings at most.
#[test]
fn kubernetes_yaml_that_berth_used_to_reject_loads() {
    let kubectl_style = "\u{feff}apiVersion: apps/v1
kind: Deployment
metadata:
  creationTimestamp: null
  labels: {app: web}
  name: web
spec:
  replicas: 1
  selector:
    matchLabels: {app: web}
  strategy: {}
  template:
    metadata:
      creationTimestamp: null
      name: ignored
      labels: {app: web}
    spec:
      volumes:
        - name: scratch
      containers:
        - name: web
          image: registry.example/web:1
          command:
          args:
          env:
          envFrom:
          ports:
          volumeMounts:
            - {name: scratch, mountPath: /scratch}
          readinessProbe:
            httpGet: {path: /, port: http}
      initContainers:
status: {}
";
    let mut repo = TestRepo::new();
    repo.write("web.yaml", &kubectl_style.replace("      initContainers:\n", ""));
    repo.write(
        "merge.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata: {name: merged}\nspec:\n  containers:\n    - &base\n      name: app\n      image: registry.example/app:1\n    - <<: *base\n      name: sidecar\n",
    );
    repo.write(
        "list.yaml",
        "apiVersion: v1\nkind: List\nitems:\n  - apiVersion: v1\n    kind: ConfigMap\n    metadata: {name: a}\n  - apiVersion: v1\n    kind: ConfigMap\n    metadata: {name: b}\n",
    );
    repo.commit("real-world yaml");
    let mut loader = Loader::open(repo.path()).unwrap();
    let loaded = loader.load("HEAD").unwrap();
    let errors: Vec<String> = loaded.diagnostics.iter().filter(|d| d.is_error()).map(ToString::to_string).collect();
    assert!(errors.is_empty(), "{errors:#?}");
    let names: Vec<&str> = loaded.resources.iter().map(|r| r.key.name.as_str()).collect();
    for name in ["web", "merged", "a", "b"] {
        assert!(names.contains(&name), "{name} is not loaded: {names:?}");
    }
    let warnings: Vec<String> = loaded.diagnostics.iter().map(ToString::to_string).collect();
    assert!(
        warnings
            .iter()
            .any(|w| w
                .contains("readinessProbe.httpGet.port: no port named `http` in this container: the probe will fail")),
        "{warnings:#?}"
    );
    assert!(warnings.iter().any(|w| w.contains("spec.template.metadata.name: field is accepted")), "{warnings:#?}");
    let web = loaded.resources.iter().find(|r| r.key.name == "web").unwrap();
    let volume = &web.canonical_value()["spec"]["template"]["spec"]["volumes"][0];
    assert_eq!(volume["emptyDir"], serde_json::json!({}), "a volume with only a name is an emptyDir");
    let merged = loaded.resources.iter().find(|r| r.key.name == "merged").unwrap();
    let containers = &merged.canonical_value()["spec"]["containers"];
    assert_eq!(containers[1]["name"], "sidecar");
    assert_eq!(containers[1]["image"], "registry.example/app:1", "merged from the first container");
}

/// Issue 15: real names are not typos. Kinds with no meaning on berth's nodes load with one
/// warning per kind; custom resources are skipped (or refused when berth.yaml says so); removed
/// API versions say what replaces them; files that are not manifests say how to exclude them.
#[test]
fn every_kind_a_real_repository_holds_is_known() {
    let mut repo = TestRepo::new();
    let account = |name: &str| format!("apiVersion: v1\nkind: ServiceAccount\nmetadata: {{name: {name}}}\n");
    repo.write("accounts.yaml", &format!("{}---\n{}", account("a"), account("b")));
    repo.write("more.yaml", &account("c"));
    repo.write("rbac.yaml", "apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata: {name: r}\nrules: []\n");
    repo.write("api.yaml", "apiVersion: apiregistration.k8s.io/v1\nkind: APIService\nmetadata: {name: v1.metrics}\n");
    repo.write(
        "monitor.yaml",
        "apiVersion: monitoring.coreos.com/v1\nkind: ServiceMonitor\nmetadata: {name: web}\nspec: {}\n",
    );
    repo.write("old.yaml", "apiVersion: extensions/v1beta1\nkind: Deployment\nmetadata: {name: old}\nspec: {}\n");
    repo.write("chart/Chart.yaml", "name: shop\nversion: 1.0.0\n");
    repo.write(
        "chart/templates/web.yaml",
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {{ .Release.Name }}\n{{- if .Values.x }}\n  labels: {}\n{{- end }}\n",
    );
    repo.write(
        "stateful.yaml",
        "apiVersion: autoscaling/v2\nkind: HorizontalPodAutoscaler\nmetadata: {name: db}\nspec: {}\n",
    );
    repo.commit("a real repository");
    let mut loader = Loader::open(repo.path()).unwrap();
    let found: Vec<String> = loader.load("HEAD").unwrap().diagnostics.iter().map(ToString::to_string).collect();
    let has = |needle: &str| found.iter().filter(|d| d.contains(needle)).count();
    assert_eq!(has("kind `ServiceAccount` is accepted but not acted on by berth"), 1, "{found:#?}");
    assert_eq!(has("2 more objects of this kind are not acted on either"), 1, "{found:#?}");
    assert_eq!(has("warning: kind: kind `Role` is accepted"), 1, "{found:#?}");
    assert_eq!(has("warning: kind: kind `APIService` is accepted"), 1, "{found:#?}");
    assert_eq!(has("did you mean"), 0, "{found:#?}");
    assert_eq!(
        has("monitor.yaml:2:7: warning: kind: custom resource ServiceMonitor (monitoring.coreos.com/v1) is skipped"),
        1,
        "{found:#?}"
    );
    assert_eq!(
        has(
            "old.yaml:1:13: error: apiVersion: Deployment is no longer served as `extensions/v1beta1` (write apps/v1 (removed in Kubernetes 1.16))"
        ),
        1,
        "{found:#?}"
    );
    assert_eq!(
        has(
            "chart/Chart.yaml:1:1: error: not a Kubernetes manifest (no kind) (exclude it in berth.yaml: `exclude: [\"chart/Chart.yaml\"]`)"
        ),
        1,
        "{found:#?}"
    );
    assert_eq!(has("chart/templates/web.yaml:1:1: error: Helm templates are not rendered by berth"), 1, "{found:#?}");
    assert_eq!(found.iter().filter(|d| d.starts_with("chart/templates/web.yaml")).count(), 1, "{found:#?}");
    assert_eq!(has("kind `HorizontalPodAutoscaler` is not supported by berth yet"), 1, "{found:#?}");

    repo.write("berth.yaml", "customResources: error\nexclude: [chart/, old.yaml, stateful.yaml]\n");
    repo.commit("refuse custom resources");
    let loaded = loader.load("HEAD").unwrap();
    let errors: Vec<String> = loaded.diagnostics.iter().filter(|d| d.is_error()).map(ToString::to_string).collect();
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert!(errors[0].contains("custom resource ServiceMonitor"), "{errors:#?}");
}

/// Issue 15: a Service name is a DNS-1035 label, as Kubernetes asks; other kinds keep theirs.
#[test]
fn service_names_follow_kubernetes_rules() {
    let found = single_file_diagnostics(
        "svc.yaml",
        "apiVersion: v1\nkind: Service\nmetadata: {name: 1web}\nspec:\n  ports: [{port: 80}]\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: 1web}\n",
    );
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].starts_with("svc.yaml:3:18: error: Service default/1web: metadata.name: `1web` is not a valid Service name (use at most 63 lowercase letters, digits and `-`, starting with a letter"), "{found:?}");
}

/// Issue 15: real Kubernetes fields and values berth cannot run are refused with a reason, one
/// error per cause; and the warnings across objects point at the field they are about.
#[test]
fn kubernetes_fields_berth_cannot_run_are_refused_with_one_reason_each() {
    let mut repo = TestRepo::new();
    repo.write(
        "storage.yaml",
        "apiVersion: v1
kind: Pod
metadata: {name: storage}
spec:
  containers:
    - name: app
      image: registry.example/app:1
      env:
        - name: POD
          valueFrom:
            fieldRef: {fieldPath: status.phase}
      readinessProbe:
        grpc: {port: 9000}
        periodSeconds: 5
  volumes:
    - name: a
      nfs: {server: nfs.example, path: /x}
    - name: b
      iscsi: {targetPortal: 10.0.0.1, iqn: x, lun: 0}
    - name: c
      glusterfs: {endpoints: e, path: p}
    - name: d
      azureDisk: {diskName: d, diskURI: u}
",
    );
    repo.write(
        "gpu.yaml",
        "apiVersion: v1
kind: Pod
metadata: {name: gpu}
spec:
  containers:
    - name: app
      image: registry.example/app:1
      resources:
        limits: {nvidia.com/gpu: 1}
",
    );
    repo.write(
        "sctp.yaml",
        "apiVersion: v1
kind: Pod
metadata: {name: sctp, labels: {app: sctp}}
spec:
  containers:
    - name: app
      image: registry.example/app:1
      ports: [{containerPort: 9000, protocol: SCTP}]
---
apiVersion: v1
kind: Service
metadata: {name: sctp}
spec:
  selector: {app: sctp}
  ports: [{port: 9000}]
---
apiVersion: v1
kind: Service
metadata: {name: external}
spec:
  type: ExternalName
  externalName: db.example.com
---
apiVersion: v1
kind: Service
metadata: {name: nobody}
spec:
  ports: [{port: 80}]
  selector:
    app: nobody
",
    );
    repo.commit("fields berth cannot run");
    let mut loader = Loader::open(repo.path()).unwrap();
    let loaded = loader.load("HEAD").unwrap();
    let found: Vec<String> = loaded.diagnostics.iter().map(ToString::to_string).collect();
    let has = |needle: &str| found.iter().filter(|f| f.contains(needle)).count();
    for (needle, count) in [
        ("volumes[0].nfs: volume source `nfs` is not supported by berth", 1),
        ("volumes[1].iscsi: volume source `iscsi` is not supported by berth (berth's nodes mount emptyDir", 1),
        ("volumes[2].glusterfs: volume source `glusterfs` is not supported", 1),
        ("volumes[3].azureDisk: volume source `azureDisk` is not supported", 1),
        ("valueFrom.fieldRef.fieldPath: `status.phase` is not a field berth fills (use one of metadata.name", 1),
        ("set exactly one of", 0),
        ("readinessProbe.grpc: field `grpc` is not supported by berth", 1),
        ("a probe needs one of", 0),
        ("unknown field", 0),
        ("limits[\"nvidia.com/gpu\"]: extended resource `nvidia.com/gpu` is not supported by berth", 1),
        ("ports[0].protocol: `SCTP` is not supported by berth (berth's nodes route TCP and UDP only", 1),
        ("spec.type: `ExternalName` is not supported by berth (ExternalName services are not supported", 1),
        // The Service of the Pod that did not load is not also told that it matches nothing.
        ("Service default/sctp", 0),
        // A warning across objects points at the selector, not at the object's first line.
        ("sctp.yaml:29:3: warning: Service default/nobody: spec.selector: selector app=nobody matches no pod", 1),
    ] {
        assert_eq!(has(needle), count, "{needle:?} in {found:#?}");
    }
    assert_eq!(found.iter().filter(|f| f.contains(": error: ")).count(), 9, "{found:#?}");
}

/// Issue 14: what a manifest may ask of a node is the operator's policy, not the committer's.
/// The default refuses the engine's socket, the host's own folders and privileged containers,
/// each at its line; what it lets through on the host is a high risk in the plan.
#[test]
fn the_host_access_policy_refuses_the_host_and_the_plan_names_what_it_allows() {
    let pod = |name: &str, path: &str, context: &str| {
        format!(
            "apiVersion: v1
kind: Pod
metadata: {{name: {name}}}
spec:
  containers:
    - name: app
      image: registry.example/app:1
      securityContext: {context}
      volumeMounts: [{{name: host, mountPath: /host}}]
  volumes:
    - name: host
      hostPath: {{path: {path}}}
"
        )
    };
    let mut repo = TestRepo::new();
    repo.write("socket.yaml", &pod("socket", "/var/run/docker.sock", "{}"));
    repo.write("root.yaml", &pod("root", "/", "{}"));
    repo.write("var.yaml", &pod("var", "/var/", "{}"));
    repo.write("climb.yaml", &pod("climb", "/srv/../etc", "{}"));
    repo.write("privileged.yaml", &pod("privileged", "/srv/data", "{privileged: true}"));
    repo.write("caps.yaml", &pod("caps", "/srv/data", "{capabilities: {add: [NET_BIND_SERVICE, SYS_ADMIN]}}"));
    repo.commit("asks for the host");
    let (code, out, err) = berth(repo.path(), &["validate", "."]);
    assert_eq!(code, 1, "{out}{err}");
    for needle in [
        "socket.yaml:12:24: error: Pod default/socket: spec.volumes[0].hostPath.path: /var/run/docker.sock is denied by the host-access policy: it gives a container the host itself",
        "root.yaml:12:24: error: Pod default/root: spec.volumes[0].hostPath.path: / is denied by the host-access policy",
        "var.yaml:12:24: error: Pod default/var: spec.volumes[0].hostPath.path: /var holds /var/run/docker.sock, which the host-access policy denies",
        "climb.yaml:12:24: error: Pod default/climb: spec.volumes[0].hostPath.path: write an absolute path without `..`",
        "privileged.yaml:8:37: error: Pod default/privileged: spec.containers[0].securityContext.privileged: privileged containers are refused",
        "caps.yaml:8:64: error: Pod default/caps: spec.containers[0].securityContext.capabilities.add[1]: capability SYS_ADMIN is beyond Docker's default set",
    ] {
        assert!(out.contains(needle), "{needle}\n{out}");
    }
    assert!(!out.contains("NET_BIND_SERVICE is beyond"), "{out}");

    // The operator allows the socket for a CI runner; a folder of its own is let through, and
    // the plan says what the container gets.
    let mut repo = TestRepo::new();
    repo.write("socket.yaml", &pod("socket", "/var/run/docker.sock", "{}"));
    repo.write("data.yaml", &pod("data", "/srv/data", "{}"));
    repo.commit("a runner and its data");
    let policy = repo.path().join("../policy.yaml");
    std::fs::write(&policy, "hostPath:\n  allow: [/var/run/docker.sock]\n").unwrap();
    let (code, out, err) = berth(repo.path(), &["validate", ".", "--policy", policy.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = berth(repo.path(), &["plan", ".", "--policy", policy.to_str().unwrap()]);
    assert_eq!(code, 2, "{out}{err}");
    assert!(out.contains("high   Pod default/data: mounts the node's /srv/data (writable, volume `host`)"), "{out}");
    assert!(out.contains("high   Pod default/socket: mounts the node's /var/run/docker.sock (writable"), "{out}");
    // Without the operator's word, the socket is refused again: the repository cannot relax it.
    let (code, out, _) = berth(repo.path(), &["validate", "."]);
    assert_eq!(code, 1, "{out}");

    // A baseline policy allows no host folder at all; a policy file with a typo is refused.
    std::fs::write(&policy, "level: baseline\n").unwrap();
    let (code, out, _) = berth(repo.path(), &["validate", ".", "--policy", policy.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(out.contains("data.yaml:12:24: error: Pod default/data: spec.volumes[0].hostPath.path: the policy's level `baseline` allows no hostPath volumes"), "{out}");
    std::fs::write(&policy, "hostPaths:\n  allow: []\n").unwrap();
    let (code, out, err) = berth(repo.path(), &["validate", ".", "--policy", policy.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}");
    assert!(err.contains("policy.yaml") && err.contains("unknown field `hostPaths`"), "{err}");
    // The server reads its policy before anything else: a bad one stops it at start.
    let db = repo.path().join("../server/berth.db");
    let args = ["server", "--repo", ".", "--db", db.to_str().unwrap(), "--listen", "127.0.0.1:0"];
    let (code, _, err) = berth(repo.path(), &[&args[..], &["--policy", policy.to_str().unwrap()]].concat());
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("unknown field `hostPaths`"), "{err}");
}

/// Issue 14: the `restricted` level, now that berth applies securityContext (issue 18). A
/// hardened Deployment loads; the example repository's ordinary one is told, at each
/// container, what it lacks; the default policy asks none of it.
#[test]
fn the_restricted_policy_level_asks_each_container_to_run_hardened() {
    let deployment = |name: &str, pod_context: &str, container_context: &str| {
        format!(
            "apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}}}
spec:
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata: {{labels: {{app: {name}}}}}
    spec:
      securityContext: {pod_context}
      containers:
        - name: app
          image: registry.example/app:1
          securityContext: {container_context}
"
        )
    };
    let mut repo = TestRepo::new();
    repo.write(
        "hardened.yaml",
        &deployment(
            "hardened",
            "{runAsNonRoot: true, runAsUser: 1000, seccompProfile: {type: RuntimeDefault}}",
            "{allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, capabilities: {drop: [ALL]}}",
        ),
    );
    repo.write("plain.yaml", &deployment("plain", "{}", "{}"));
    repo.commit("one hardened, one plain");
    let policy = repo.path().join("../restricted.yaml");
    std::fs::write(&policy, "level: restricted\n").unwrap();
    let (code, out, err) = berth(repo.path(), &["validate", ".", "--policy", policy.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}{err}");
    let errors: Vec<&str> = out.lines().filter(|l| l.contains(": error: ")).collect();
    assert!(
        errors.iter().all(|e| e.starts_with(
            "plain.yaml:13:28: error: Deployment default/plain: spec.template.spec.containers[0].securityContext."
        )),
        "{out}"
    );
    for field in ["allowPrivilegeEscalation", "runAsNonRoot", "seccompProfile", "capabilities.drop"] {
        assert!(
            errors.iter().any(|e| e.contains(&format!("securityContext.{field}: the policy's level `restricted`"))),
            "{field}: {out}"
        );
    }
    assert_eq!(errors.len(), 4, "{out}");
    let (code, out, err) = berth(repo.path(), &["validate", "."]);
    assert_eq!(code, 0, "the default level asks none of it: {out}{err}");
}

/// Issue 14: a commit beyond the limits is an error at the object that passes them, never a
/// burden on the server (`replicas: 100000` made that many pods wait in memory).
#[test]
fn a_commit_beyond_its_limits_is_refused_where_it_passes_them() {
    let deployment = |name: &str, replicas: u32| {
        format!(
            "apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata: {{labels: {{app: {name}}}}}
    spec:
      containers: [{{name: app, image: registry.example/app:1}}]
"
        )
    };
    let mut repo = TestRepo::new();
    repo.write("a.yaml", &deployment("small", 3));
    repo.write("b.yaml", &deployment("typo", 100_000));
    repo.commit("one zero too many");
    let (code, out, _) = berth(repo.path(), &["validate", "."]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("b.yaml:5:3: error: Deployment default/typo: spec.replicas: the workloads of this commit ask for 100003 replicas, more than the limit of 10000 (Deployment default/typo asks for 100000)"),
        "{out}"
    );
    // The operator's own limits; objects and bytes too.
    let (code, out, _) = berth(repo.path(), &["validate", ".", "--max-replicas", "200000"]);
    assert_eq!(code, 0, "{out}");
    let (code, out, _) = berth(repo.path(), &["validate", ".", "--max-replicas", "200000", "--max-objects", "1"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("b.yaml:1:1: error: Deployment default/typo is object 2 of this commit, past the limit of 1"),
        "{out}"
    );
    let (code, out, _) = berth(repo.path(), &["validate", ".", "--max-replicas", "200000", "--max-bytes", "300"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("b.yaml:1:1: error: the manifests pass 300 bytes here, the limit of one commit"), "{out}");
    // A server told to follow a branch that does not exist refuses at start, with the list.
    let db = repo.path().join("../server/berth.db");
    let (code, _, err) = berth(
        repo.path(),
        &["server", "--repo", ".", "--branch", "mian", "--db", db.to_str().unwrap(), "--listen", "127.0.0.1:0"],
    );
    assert_eq!(code, 1, "{err}");
    let branch = git2::Repository::open(repo.path()).unwrap().head().unwrap().shorthand().unwrap().to_owned();
    assert!(err.contains(&format!("branch `mian` does not exist in .; its branches: {branch}")), "{err}");
}

/// What a workload reads from ConfigMaps and Secrets, each value once: a whole object (a volume
/// without items, envFrom) with its keys, the keys named one by one (an absent one has no digest),
/// and nothing from an object that is not there, whatever order the pod spec names them in.
#[test]
fn a_workload_reads_each_config_value_once() {
    let text = r#"
apiVersion: v1
kind: ConfigMap
metadata: {name: app}
data: {b: "2", a: "1"}
---
apiVersion: v1
kind: Secret
metadata: {name: creds}
stringData: {token: t}
---
apiVersion: v1
kind: Pod
metadata: {name: reader}
spec:
  containers:
    - name: main
      image: app:1
      env:
        - {name: Z, valueFrom: {configMapKeyRef: {name: app, key: zz, optional: true}}}
        - {name: B, valueFrom: {configMapKeyRef: {name: app, key: b}}}
        - {name: T, valueFrom: {secretKeyRef: {name: creds, key: token}}}
      envFrom:
        - configMapRef: {name: absent, optional: true}
  volumes:
    - {name: conf, configMap: {name: app}}
    - {name: again, configMap: {name: app, items: [{key: a, path: a}]}}
"#;
    let parsed = berth::manifest::parse_file("app.yaml", text);
    assert!(parsed.diagnostics.iter().all(|d| !d.is_error()), "{:?}", parsed.diagnostics);
    let mut resources = parsed.resources.clone();
    resources.sort_by(|a, b| a.key.cmp(&b.key));
    let digest = |kind, name: &str, key: &str| {
        let object = berth::manifest::find_sorted(&resources, kind, "default", name).unwrap();
        object.value_digests().get(key).cloned()
    };
    let pod = resources.iter().find(|r| r.key.name == "reader").unwrap();
    let inputs = pod.config_inputs(berth::manifest::digests_in(&resources, "default"));
    let listed: Vec<(String, Option<String>)> = inputs.iter().map(|(i, d)| (i.to_string(), d.clone())).collect();
    use berth::manifest::Kind::{ConfigMap, Secret};
    let expected = vec![
        ("ConfigMap app key a".to_owned(), digest(ConfigMap, "app", "a")),
        ("ConfigMap app key b".to_owned(), digest(ConfigMap, "app", "b")),
        ("ConfigMap app key zz".to_owned(), None),
        ("Secret creds key token".to_owned(), digest(Secret, "creds", "token")),
    ];
    assert_eq!(listed, expected);
    assert!(expected.iter().filter(|(k, _)| !k.ends_with("zz")).all(|(_, d)| d.is_some()));
    let quick = pod.config_inputs_digest(berth::manifest::digests_in(&resources, "default"));
    assert_eq!(quick, Some(berth::manifest::inputs_digest(&inputs)));
}

/// Issue 18: ids in a securityContext are checked as Kubernetes' API server checks them, so a
/// negative or oversized one is an error at its line, not a container the node refuses later.
#[test]
fn security_context_ids_out_of_range_are_refused_at_their_line() {
    let mut repo = TestRepo::new();
    repo.write(
        "pod.yaml",
        "apiVersion: v1
kind: Pod
metadata: {name: ids}
spec:
  securityContext: {runAsUser: -1, fsGroup: 1000, supplementalGroups: [5, 4294967296]}
  containers:
    - name: app
      image: registry.example/app:1
      securityContext: {runAsGroup: 2147483648}
",
    );
    repo.commit("ids out of range");
    let (code, out, err) = berth(repo.path(), &["validate", "."]);
    assert_eq!(code, 1, "{out}{err}");
    for needle in [
        "pod.yaml:5:32: error: Pod default/ids: spec.securityContext.runAsUser: -1 is not a user or group id",
        "pod.yaml:5:75: error: Pod default/ids: spec.securityContext.supplementalGroups[1]: 4294967296 is not a user or group id",
        "pod.yaml:9:37: error: Pod default/ids: spec.containers[0].securityContext.runAsGroup: 2147483648 is not a user or group id",
    ] {
        assert!(out.contains(needle), "{needle}\n{out}");
    }
    assert_eq!(out.matches(": error: ").count(), 3, "{out}");
}

/// Issue 18: lifecycle hooks load as Kubernetes writes them, and a hook berth cannot run is
/// told so at its line: one handler each, no tcpSocket (Kubernetes does not run it either).
#[test]
fn lifecycle_hooks_are_checked_at_their_line() {
    let mut repo = TestRepo::new();
    repo.write(
        "pod.yaml",
        "apiVersion: v1
kind: Pod
metadata: {name: hooks}
spec:
  containers:
    - name: app
      image: registry.example/app:1
      ports: [{name: http, containerPort: 8080}]
      lifecycle:
        postStart: {httpGet: {port: admin, path: /warm}}
        preStop: {exec: {command: [drain]}, sleep: {seconds: 5}}
    - name: side
      image: registry.example/side:1
      lifecycle:
        postStart: {tcpSocket: {port: 80}}
        preStop: {sleep: {seconds: -1}}
",
    );
    repo.commit("hooks");
    let (code, out, err) = berth(repo.path(), &["validate", "."]);
    assert_eq!(code, 1, "{out}{err}");
    for needle in [
        "pod.yaml:10:37: warning: Pod default/hooks: spec.containers[0].lifecycle.postStart.httpGet.port: no port named `admin` in this container: the hook will fail",
        "pod.yaml:11:18: error: Pod default/hooks: spec.containers[0].lifecycle.preStop: a hook may have only one of exec, httpGet and sleep",
        "pod.yaml:15:21: error: Pod default/hooks: spec.containers[1].lifecycle.postStart.tcpSocket: field `tcpSocket` is not supported by berth (Kubernetes does not run tcpSocket hooks either; use exec, httpGet or sleep)",
        "pod.yaml:16:36: error: Pod default/hooks: spec.containers[1].lifecycle.preStop.sleep.seconds: must not be negative",
    ] {
        assert!(out.contains(needle), "{needle}\n{out}");
    }
    assert_eq!(out.matches(": error: ").count(), 3, "{out}");
}

/// Init containers are checked as containers are, and what Kubernetes refuses on one (a probe,
/// a lifecycle hook, a name a container also has) is an error at its line.
#[test]
fn init_containers_are_checked_as_kubernetes_checks_them() {
    let mut repo = TestRepo::new();
    repo.write(
        "pod.yaml",
        "apiVersion: v1
kind: Pod
metadata: {name: web}
spec:
  initContainers:
    - name: migrate
      image: registry.example/app:1
      readinessProbe:
        exec: {command: ['true']}
    - name: web
      image: registry.example/app:1
  containers:
    - name: web
      image: registry.example/app:1
---
apiVersion: v1
kind: Pod
metadata: {name: policies}
spec:
  initContainers:
    - name: once
      image: registry.example/app:1
      restartPolicy: OnFailure
  containers:
    - name: app
      image: registry.example/app:1
      restartPolicy: Always
---
apiVersion: v1
kind: Pod
metadata: {name: reads}
spec:
  initContainers:
    - name: setup
      image: registry.example/app:1
      env:
        - {name: SETTING, valueFrom: {configMapKeyRef: {name: missing, key: a}}}
  containers:
    - name: app
      image: registry.example/app:1
",
    );
    repo.commit("init containers");
    let mut loader = Loader::open(repo.path()).unwrap();
    let loaded = loader.load("HEAD").unwrap();
    let found: Vec<String> = loaded.diagnostics.iter().map(ToString::to_string).collect();
    let expected = [
        "pod.yaml:9:9: error: Pod default/web: spec.initContainers[0].readinessProbe: an init container cannot have `readinessProbe`",
        "pod.yaml:13:13: error: Pod default/web: spec.containers[0].name: container `web` is declared twice (the first is initContainers[1])",
        "pod.yaml:37:",
        "spec.initContainers[0].restartPolicy: an init container's restartPolicy can only be Always (a sidecar), not OnFailure",
        "spec.containers[0].restartPolicy: restartPolicy on a container is for sidecars, which are init containers",
    ];
    for needle in expected {
        assert_eq!(
            found.iter().filter(|f| f.starts_with(needle) || f.contains(needle)).count(),
            1,
            "{needle:?} in {found:#?}"
        );
    }
    assert!(
        found.iter().any(|f| f.starts_with("pod.yaml:37:")
            && f.contains("spec.initContainers[0].env[0]")
            && f.contains("missing")),
        "an init container's reference is checked: {found:#?}"
    );
    assert_eq!(found.len(), 5, "{found:#?}");
}

/// A downwardAPI volume's files name the pod's metadata or a container's resource, at paths
/// inside the volume; anything else is an error at its line.
#[test]
fn downward_api_volumes_are_checked_at_their_lines() {
    let mut repo = TestRepo::new();
    repo.write(
        "pod.yaml",
        "apiVersion: v1
kind: Pod
metadata: {name: p}
spec:
  volumes:
    - name: about
      downwardAPI:
        items:
          - {path: node, fieldRef: {fieldPath: spec.nodeName}}
          - {path: cpu, resourceFieldRef: {resource: limits.cpu}}
          - {path: ../up, fieldRef: {fieldPath: metadata.name}}
          - {path: ok, resourceFieldRef: {containerName: app, resource: requests.memory, divisor: 1Mi}}
  containers:
    - name: app
      image: registry.example/app:1
",
    );
    repo.commit("a downwardAPI volume");
    let mut loader = Loader::open(repo.path()).unwrap();
    let loaded = loader.load("HEAD").unwrap();
    let found: Vec<String> = loaded.diagnostics.iter().map(ToString::to_string).collect();
    for needle in [
        "pod.yaml:9:48: error: Pod default/p: spec.volumes[0].downwardAPI.items[0].fieldRef.fieldPath: a downwardAPI volume has no `spec.nodeName`",
        "spec.volumes[0].downwardAPI.items[1].resourceFieldRef.resource: a downwardAPI volume's resourceFieldRef needs `containerName`",
        "spec.volumes[0].downwardAPI.items[2].path: `../up` is not a relative path inside the volume",
    ] {
        assert_eq!(found.iter().filter(|f| f.contains(needle)).count(), 1, "{needle:?} in {found:#?}");
    }
    assert_eq!(found.len(), 3, "{found:#?}");
}

/// Issue 18: a Job loads as Kubernetes writes it, and what Kubernetes refuses in one (a
/// restart policy left out, an Indexed Job without completions) is an error at its line.
#[test]
fn jobs_are_checked_as_kubernetes_checks_them() {
    let mut repo = TestRepo::new();
    repo.write(
        "jobs.yaml",
        "apiVersion: batch/v1
kind: Job
metadata: {name: forever}
spec:
  template:
    spec:
      containers: [{name: main, image: registry.example/job:1}]
---
apiVersion: batch/v1
kind: Job
metadata: {name: indexed}
spec:
  completionMode: Indexed
  parallelism: 2
  backoffLimitPerIndex: 1
  podFailurePolicy:
    rules:
      - action: FailJob
        onExitCodes: {containerName: other, operator: In, values: [0, 42]}
  template:
    spec:
      restartPolicy: Never
      containers: [{name: main, image: registry.example/job:1}]
",
    );
    repo.commit("jobs");
    let (code, out, err) = berth(repo.path(), &["validate", "."]);
    assert_eq!(code, 1, "{out}{err}");
    for needle in [
        "jobs.yaml:7:7: error: Job default/forever: spec.template.spec.restartPolicy: a Job's pods need restartPolicy Never or OnFailure",
        "jobs.yaml:15:3: error: Job default/indexed: spec.backoffLimitPerIndex: field `backoffLimitPerIndex` is not supported by berth",
    ] {
        assert!(out.contains(needle), "{needle}\n{out}");
    }
    assert!(out.contains("an Indexed Job needs completions"), "{out}");
    assert!(out.contains("0 is success, never a failure's exit code"), "{out}");
    assert!(out.contains("the template has no container `other`"), "{out}");
}

/// Issue 18: a CronJob's schedule and time zone are checked where they are written.
#[test]
fn cron_jobs_are_checked_at_their_line() {
    let mut repo = TestRepo::new();
    let cron = |name: &str, schedule: &str, zone: &str| {
        format!(
            "apiVersion: batch/v1
kind: CronJob
metadata: {{name: {name}}}
spec:
  schedule: '{schedule}'
  timeZone: {zone}
  jobTemplate:
    spec:
      template:
        spec:
          restartPolicy: OnFailure
          containers: [{{name: main, image: registry.example/job:1}}]
"
        )
    };
    repo.write("good.yaml", &cron("nightly", "0 3 * * *", "Europe/Berlin"));
    repo.write("bad.yaml", &cron("broken", "0 25 * * *", "Mars/Olympus"));
    repo.write("tz.yaml", &cron("zoned", "TZ=UTC 0 3 * * *", "UTC"));
    repo.commit("cron jobs");
    let (code, out, err) = berth(repo.path(), &["validate", "."]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        out.contains(
            "bad.yaml:5:13: error: CronJob default/broken: spec.schedule: `0 25 * * *` is not a cron schedule"
        ),
        "{out}"
    );
    assert!(out.contains("bad.yaml:6:13: error: CronJob default/broken: spec.timeZone: `Mars/Olympus` is not a time zone of the IANA database"), "{out}");
    assert!(
        out.contains(
            "tz.yaml:5:13: error: CronJob default/zoned: spec.schedule: a time zone in the schedule is not supported"
        ),
        "{out}"
    );
    assert!(!out.contains("good.yaml"), "{out}");
}

/// Issue 18: sync hooks berth cannot run as Argo CD would are errors where they are written.
#[test]
fn hooks_berth_cannot_run_are_refused() {
    let mut repo = TestRepo::new();
    repo.write(
        "hooks.yaml",
        "apiVersion: v1
kind: ConfigMap
metadata:
  name: seed
  annotations: {argocd.argoproj.io/hook: PreSync}
---
apiVersion: batch/v1
kind: Job
metadata:
  name: cleanup
  annotations: {argocd.argoproj.io/hook: SyncFail, berth.dev/hook-policy: always}
spec:
  template:
    spec:
      restartPolicy: Never
      containers: [{name: main, image: registry.example/job:1}]
",
    );
    repo.commit("hooks");
    let (code, out, err) = berth(repo.path(), &["validate", "."]);
    assert_eq!(code, 1, "{out}{err}");
    for needle in [
        "hooks.yaml:5:42: error: ConfigMap default/seed: metadata.annotations[\"argocd.argoproj.io/hook\"]: berth runs sync hooks that are Jobs; this is a ConfigMap",
        "hooks.yaml:11:42: error: Job default/cleanup: metadata.annotations[\"argocd.argoproj.io/hook\"]: `SyncFail` hooks are not run by berth",
        "hooks.yaml:11:75: error: Job default/cleanup: metadata.annotations[\"berth.dev/hook-policy\"]: hook policy `always` is not one berth knows",
    ] {
        assert!(out.contains(needle), "{needle}\n{out}");
    }
}

/// Issue 17: StatefulSets and claims are checked where they are written, as Kubernetes checks
/// them, with what berth's node-local volumes cannot do said plainly.
#[test]
fn stateful_sets_and_claims_are_checked_as_kubernetes_checks_them() {
    let mut repo = TestRepo::new();
    repo.write(
        "db.yaml",
        "apiVersion: apps/v1
kind: StatefulSet
metadata: {name: db}
spec:
  serviceName: db
  selector: {matchLabels: {app: db}}
  persistentVolumeClaimRetentionPolicy: {whenDeleted: Delete}
  template:
    metadata: {labels: {app: db}}
    spec:
      containers:
        - name: main
          image: registry.example/db:1
          volumeMounts:
            - {name: data, mountPath: /data, subPath: pgdata}
            - {name: missing, mountPath: /missing}
            - {name: shared, mountPath: /shared}
      volumes:
        - name: shared
          persistentVolumeClaim: {claimName: nowhere}
  volumeClaimTemplates:
    - metadata: {name: data}
      spec:
        storageClassName: gp3
        resources: {requests: {storage: 1Gi, cpu: 1}}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: uploads}
spec:
  accessModes: [ReadWriteOnce]
  volumeName: pv-1
  resources: {requests: {storage: 5Gi}}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: raw}
spec:
  volumeMode: Block
",
    );
    repo.commit("a database");
    let (code, out, err) = berth(repo.path(), &["validate", "."]);
    assert_eq!(code, 1, "{out}{err}");
    for needle in [
        "db.yaml:15:55: error: StatefulSet default/db: spec.template.spec.containers[0].volumeMounts[0].subPath: berth mounts claim volume `data` whole",
        "db.yaml:16:22: error: StatefulSet default/db: spec.template.spec.containers[0].volumeMounts[1].name: no volume named `missing` in this pod",
        "db.yaml:24:27: error: StatefulSet default/db: spec.volumeClaimTemplates[0].spec.storageClassName: berth has no storage class `gp3`",
        "db.yaml:25:46: error: StatefulSet default/db: spec.volumeClaimTemplates[0].spec.resources.requests.cpu: a claim has no resource `cpu`",
        "db.yaml:32:3: error: PersistentVolumeClaim default/uploads: spec.volumeName: field `volumeName` is not supported by berth",
        "db.yaml:39:15: error: PersistentVolumeClaim default/raw: spec.volumeMode: `Block` is not supported by berth",
    ] {
        assert!(out.contains(needle), "{needle}\n{out}");
    }
    assert!(out.contains("raw block devices are not supported"), "{out}");

    // A claim a pod names must be in the commit.
    repo.write(
        "db.yaml",
        "apiVersion: v1
kind: Pod
metadata: {name: app}
spec:
  containers: [{name: main, image: registry.example/app:1, volumeMounts: [{name: files, mountPath: /files}]}]
  volumes: [{name: files, persistentVolumeClaim: {claimName: nowhere}}]
",
    );
    repo.commit("a pod of a missing claim");
    let (code, out, _) = berth(repo.path(), &["validate", "."]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("db.yaml:6:62: error: Pod default/app: spec.volumes[0].persistentVolumeClaim.claimName: PersistentVolumeClaim default/nowhere is not in this commit"),
        "{out}"
    );
}

/// Issue 22: a Secret that SOPS 3.7.0 encrypted for an age recipient (Flux's published test
/// file, `tests/data/sops/`) decrypts with that recipient's identity and its MAC holds; the
/// wrong key, no key and a changed value each fail the file with what to do.
#[test]
fn a_sops_age_secret_from_published_test_data_decrypts_and_its_mac_holds() {
    use berth::manifest::sops::Keys;
    let data = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/sops");
    let text = std::fs::read_to_string(data.join("secret.age.yaml")).unwrap();
    let keys = Keys::parse(&std::fs::read_to_string(data.join("age.txt")).unwrap()).unwrap();
    let policy = berth::manifest::policy::Policy::default();
    let parsed = berth::manifest::parse_file_keyed("secret.age.yaml", &text, &policy, Some(&keys));
    assert!(parsed.diagnostics.iter().all(|d| !d.is_error()), "{:?}", parsed.diagnostics);
    assert_eq!(parsed.resources.len(), 1);
    let (key, values) = &parsed.secrets[0];
    assert_eq!(key.name, "sops-age");
    let secret = String::from_utf8(values.get("secret").unwrap().to_vec()).unwrap();
    assert!(!secret.is_empty() && !secret.starts_with("ENC["), "{secret}");

    let error = |text: &str, keys: Option<&Keys>| {
        let parsed = berth::manifest::parse_file_keyed("secret.age.yaml", text, &policy, keys);
        assert!(parsed.resources.is_empty(), "nothing of a file that does not decrypt is read");
        parsed.diagnostics.iter().find(|d| d.is_error()).map(ToString::to_string).unwrap()
    };
    let other = Keys::parse(&age_identity()).unwrap();
    let wrong = error(&text, Some(&other));
    assert!(wrong.contains("cannot decrypt secret.age.yaml: no matching age identity"), "{wrong}");
    assert!(wrong.contains("age1l44xcng8dqj32nlv6d930qvvrny05hglzcv9qpc7kxjc6902ma4qufys29"), "{wrong}");
    assert!(error(&text, None).contains("no age identity is configured"));
    let renamed = text.replace("name: sops-age", "name: other");
    assert!(error(&renamed, Some(&keys)).contains("the MAC does not match"));
    // A value moved to another key does not decrypt: its path is part of what was sealed.
    let moved = text.replace("    secret: ENC", "    moved: ENC");
    assert!(error(&moved, Some(&keys)).contains("stringData.moved does not decrypt"));
}

/// A fresh age identity, as `age-keygen` prints it.
fn age_identity() -> String {
    use age::secrecy::ExposeSecret as _;
    age::x25519::Identity::generate().to_string().expose_secret().to_owned()
}

/// `berth secret encrypt` then `berth secret edit` (an editor that changes one value): the file
/// decrypts with the same code to the edited value, for the same recipient, and a key file
/// others may read is refused.
#[test]
fn secret_encrypt_and_edit_round_trip_through_the_same_decryption() {
    use age::secrecy::ExposeSecret as _;
    let repo = TestRepo::new();
    let identity = age::x25519::Identity::generate();
    let recipient = identity.to_public().to_string();
    repo.write("berth.yaml", &format!("secrets:\n  ageRecipients: [{recipient}]\n"));
    repo.write(
        "db/secret.yaml",
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: db\n  labels: {app: db}\nstringData:\n  password: old-value\n  port: \"5432\"\ndata:\n  cert: aGVsbG8=\n",
    );
    let (code, _, stderr) = berth(repo.path(), &["secret", "encrypt", "db/secret.yaml"]);
    assert_eq!(code, 0, "{stderr}");
    let (code, _, stderr) = berth(repo.path(), &["secret", "encrypt", "db/secret.yaml"]);
    assert_eq!(code, 1, "encrypting twice is refused");
    assert!(stderr.contains("encrypted already"), "{stderr}");

    let key_file = repo.path().join("key.txt");
    std::fs::write(&key_file, identity.to_string().expose_secret()).unwrap();
    std::fs::set_permissions(&key_file, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let key = key_file.to_str().unwrap();
    let (code, _, stderr) = berth(repo.path(), &["secret", "edit", "db/secret.yaml", "--age-key-file", key]);
    assert_eq!(code, 1);
    assert!(stderr.contains("chmod 600"), "{stderr}");
    std::fs::set_permissions(&key_file, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let edit = std::process::Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["secret", "edit", "db/secret.yaml", "--age-key-file", key])
        .current_dir(repo.path())
        .env("EDITOR", "sed -i s/old-value/new-value/")
        .env_remove("VISUAL")
        .output()
        .unwrap();
    assert!(edit.status.success(), "{}", String::from_utf8_lossy(&edit.stderr));

    let text = std::fs::read_to_string(repo.path().join("db/secret.yaml")).unwrap();
    assert!(!text.contains("new-value") && text.contains(&recipient) && text.contains("app: db"), "{text}");
    let keys = berth::manifest::sops::Keys::parse(identity.to_string().expose_secret()).unwrap();
    let parsed = berth::manifest::parse_file_keyed("secret.yaml", &text, &Default::default(), Some(&keys));
    assert!(parsed.diagnostics.iter().all(|d| !d.is_error()), "{:?}", parsed.diagnostics);
    let values = &parsed.secrets[0].1;
    assert_eq!(values.get("password"), Some(&b"new-value"[..]));
    assert_eq!(values.get("port"), Some(&b"5432"[..]));
    assert_eq!(values.get("cert"), Some(&b"hello"[..]));
}

/// Only a Secret's data and stringData may be encrypted, unless berth.yaml allows more
/// (`secrets.encryptedFields`); the error says how.
#[test]
fn an_encrypted_field_outside_a_secret_needs_berth_yaml_to_allow_it() {
    use age::secrecy::ExposeSecret as _;
    let identity = age::x25519::Identity::generate();
    let mut root = berth::manifest::yaml::parse(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: settings}\ndata: {url: https://internal}\n",
    )
    .unwrap()
    .remove(0)
    .root
    .unwrap();
    berth::manifest::sops::encrypt(&mut root, &[identity.to_public().to_string()], "^data$", "2026-12-05T10:00:00Z")
        .unwrap();
    let mut repo = TestRepo::new();
    repo.write("settings.yaml", &berth::manifest::yaml::emit(&root));
    repo.commit("an encrypted ConfigMap");
    let mut loader = Loader::open(repo.path()).unwrap();
    loader.set_age_keys(Some(berth::manifest::sops::Keys::parse(identity.to_string().expose_secret()).unwrap()));
    let loaded = loader.load("HEAD").unwrap();
    let shown: Vec<String> = loaded.diagnostics.iter().map(ToString::to_string).collect();
    assert!(
        shown.iter().any(|d| d.starts_with("settings.yaml:")
            && d.contains("data.url of a ConfigMap is encrypted, but only a Secret's data and stringData may be")
            && d.contains("encryptedFields: [ConfigMap.data]")),
        "{shown:#?}"
    );
    repo.write("berth.yaml", "secrets:\n  encryptedFields: [ConfigMap.data]\n");
    repo.commit("allowed");
    let loaded = loader.load("HEAD").unwrap();
    assert!(loaded.is_valid(), "{:#?}", loaded.diagnostics);
}

/// `berth validate` decrypts with SOPS_AGE_KEY_FILE; a key file others may read is a warning
/// there (the server refuses it), and the encrypted file then fails with what to do.
#[test]
fn validate_decrypts_with_the_key_file_of_the_environment() {
    use age::secrecy::ExposeSecret as _;
    let identity = age::x25519::Identity::generate();
    let secret = "apiVersion: v1\nkind: Secret\nmetadata: {name: creds}\nstringData: {password: v}\n";
    let sealed =
        berth::manifest::sops::encrypt_text(secret, &[identity.to_public().to_string()], "2026-12-05T10:00:00Z")
            .unwrap();
    let mut repo = TestRepo::new();
    repo.write("secret.yaml", &sealed);
    repo.commit("an encrypted secret");
    let key_file = repo.path().join(".key");
    std::fs::write(&key_file, identity.to_string().expose_secret()).unwrap();
    let validate = |mode: u32| {
        std::fs::set_permissions(&key_file, std::os::unix::fs::PermissionsExt::from_mode(mode)).unwrap();
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_berth"))
            .arg("validate")
            .current_dir(repo.path())
            .env("SOPS_AGE_KEY_FILE", &key_file)
            .env("NO_COLOR", "1")
            .output()
            .unwrap();
        (
            output.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr),
        )
    };
    let (code, said) = validate(0o600);
    assert_eq!(code, 0, "{said}");
    let (code, said) = validate(0o644);
    assert_eq!(code, 1, "{said}");
    assert!(said.contains("warning:") && said.contains("chmod 600"), "{said}");
    assert!(said.contains("cannot decrypt secret.yaml: no age identity is configured"), "{said}");
}
