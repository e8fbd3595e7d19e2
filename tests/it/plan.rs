//! Plan snapshots: every folder under `tests/fixtures/plan` holds `before.yaml` and
//! `after.yaml`, committed in that order to a real repository; the plan between them is
//! compared in all three formats. Adding a case is adding a folder.

use crate::support::{TestRepo, berth, check_snapshot, fixtures};
use berth::plan::{self, State, render};
use berth::sync::Loader;

/// The `before.yaml` and `after.yaml` of a plan fixture.
fn fixture_pair(case: &str) -> (String, String) {
    let dir = fixtures().join("plan").join(case);
    (
        std::fs::read_to_string(dir.join("before.yaml")).unwrap(),
        std::fs::read_to_string(dir.join("after.yaml")).unwrap(),
    )
}

fn plan_between(before: &str, after: &str) -> (plan::Plan, TestRepo, String, String) {
    let mut repo = TestRepo::new();
    repo.write("manifests.yaml", before);
    let from = repo.commit("before");
    repo.clear().write("manifests.yaml", after);
    let to = repo.commit("after");
    let mut loader = Loader::open(repo.path()).unwrap();
    let old = loader.load(&from).unwrap();
    let new = loader.load(&to).unwrap();
    assert!(old.is_valid(), "before.yaml has errors: {:#?}", old.diagnostics);
    assert!(new.is_valid(), "after.yaml has errors: {:#?}", new.diagnostics);
    let plan = plan::plan(&new.state(), &old.state());
    // The rollouts a loader carries are what a plan computes without them.
    let bare = |loaded: &berth::sync::Loaded| {
        State::new(loaded.commit.sha.clone(), loaded.commit.message.clone(), loaded.resources.clone())
    };
    assert_eq!(plan::plan(&bare(&new), &bare(&old)), plan, "a plan from carried rollouts differs");
    (plan, repo, from, to)
}

#[test]
fn plan_snapshots() {
    let root = fixtures().join("plan");
    let mut cases: Vec<_> = std::fs::read_dir(&root).unwrap().map(|e| e.unwrap().path()).collect();
    cases.sort();
    assert!(cases.len() >= 8, "expected the plan fixtures, found {}", cases.len());
    for case in cases {
        let (before, after) = fixture_pair(case.file_name().unwrap().to_str().unwrap());
        let (plan, _repo, _, _) = plan_between(&before, &after);
        check_snapshot(&case.join("plan.txt"), &render::text(&plan, false));
        check_snapshot(&case.join("plan.md"), &render::markdown(&plan));
        check_snapshot(&case.join("plan.json"), &render::json(&plan));
    }
}

#[test]
fn secret_values_never_appear_in_any_format() {
    let (before, after) = fixture_pair("secret-change");
    let (plan, _repo, _, _) = plan_between(&before, &after);
    // The fixture's values, plain and base64-encoded.
    let values =
        ["hunter2", "aHVudGVyMg==", "correct-horse", "Y29ycmVjdC1ob3JzZQ==", "s3cr3t-token", "new-token-value"];
    for output in [render::text(&plan, true), render::markdown(&plan), render::json(&plan)] {
        for value in values {
            assert!(!output.contains(value), "secret value {value:?} leaked into:\n{output}");
        }
        assert!(output.contains("(sensitive value changed)"), "changed value not marked in:\n{output}");
    }
}

#[test]
fn plan_command_exit_codes_gate_ci() {
    let (before, after) = fixture_pair("image-change");
    let (_, repo, from, to) = plan_between(&before, &after);
    let (code, stdout, _) = berth(repo.path(), &["plan", "--from", &from, "--to", &to]);
    assert_eq!(code, 2, "changes give exit code 2:\n{stdout}");
    assert!(stdout.contains("Plan: 0 to create, 1 to update, 0 to delete, 1 unchanged."), "{stdout}");
    assert!(!stdout.contains('\x1b'), "NO_COLOR output must be plain");

    let (code, stdout, _) = berth(repo.path(), &["plan", "--from", &to, "--to", &to]);
    assert_eq!(code, 0, "no changes give exit code 0:\n{stdout}");

    // Without --from, a commit is compared with its parent: what the commit changes.
    let (code, stdout, _) = berth(repo.path(), &["plan", "--format", "json"]);
    assert_eq!(code, 2);
    let json: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(json["from"], from.as_str());
    assert_eq!(json["to"], to.as_str());
    assert_eq!(json["summary"]["update"], 1);
    assert_eq!(json["changes"].as_array().unwrap().len(), 1, "unchanged objects are counted, not listed");
    assert_eq!(json["changes"][0]["action"], "update");
    assert_eq!(json["changes"][0]["kind"], "Deployment");

    let (code, _, stderr) = berth(repo.path(), &["plan", "--from", "no-such-branch"]);
    assert_eq!(code, 1, "an error gives exit code 1");
    assert!(stderr.contains("revision `no-such-branch` was not found"), "{stderr}");

    let (code, _, stderr) = berth(repo.path(), &["plan", "--no-such-flag"]);
    assert_eq!(code, 1, "a usage error is an error, not 'changes': {stderr}");
}

#[test]
fn plan_refuses_a_broken_commit() {
    let mut repo = TestRepo::new();
    repo.write("a.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\ndata:\n  k: v\n");
    repo.commit("good");
    repo.write("a.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\ndatta:\n  k: v\n");
    repo.commit("broken");
    let (code, stdout, stderr) = berth(repo.path(), &["plan"]);
    assert_eq!(code, 1);
    assert!(
        stdout.is_empty(),
        "a broken commit must not print a plan (it would read as 'delete everything'): {stdout}"
    );
    assert!(
        stderr.contains("a.yaml:5:1: error: ConfigMap default/a: datta: unknown field `datta` (did you mean `data`?)"),
        "{stderr}"
    );
    assert!(stderr.contains("nothing is planned"), "{stderr}");
}

/// Issue 11, defect 6: the offline plan says what it compares with, and where to look for
/// what runs.
#[test]
fn the_offline_plan_says_what_it_compares() {
    let (before, after) = fixture_pair("image-change");
    let (_, repo, from, _) = plan_between(&before, &after);
    let (code, stdout, _) = berth(repo.path(), &["plan"]);
    assert_eq!(code, 2);
    let first = stdout.lines().next().unwrap();
    assert_eq!(
        first,
        format!(
            "Compared with commit {} (its parent): what Git changes, not what runs; `berth plan --server URL` compares with what a server runs.",
            &from[..7]
        )
    );
    let (_, markdown, _) = berth(repo.path(), &["plan", "--format", "markdown", "--from", &from]);
    assert!(markdown.starts_with(&format!("> Compared with commit {} (--from)", &from[..7])), "{markdown}");
}

/// Issue 15: scaling 3 -> 4 with a new image restarts the 3 that exist and starts 1, and a
/// deleted single replica "stops".
#[test]
fn a_rollout_that_also_scales_counts_what_restarts() {
    let deployment = |replicas: u32, image: &str| {
        format!(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: web}}\nspec:\n  replicas: {replicas}\n  selector: {{matchLabels: {{app: web}}}}\n  template:\n    metadata: {{labels: {{app: web}}}}\n    spec:\n      containers: [{{name: web, image: \"{image}\"}}]\n"
        )
    };
    let (plan, ..) = plan_between(&deployment(3, "registry.example/web:1"), &deployment(4, "registry.example/web:2"));
    let rollout = plan.changes[0].rollout.as_ref().unwrap();
    assert_eq!(rollout.restarts, Some(3));
    assert!(
        rollout
            .description
            .starts_with("rolling update: 3 replicas restart in 2 batches (2, 1) and 1 new replica starts;"),
        "{}",
        rollout.description
    );
    let (plan, ..) = plan_between(&deployment(1, "registry.example/web:1"), "");
    assert!(
        plan.risks.iter().any(|r| r.message == "deletes Deployment default/web: its 1 replica stops"),
        "{:?}",
        plan.risks
    );
}

/// Issue 15: turning a NodePort Service into ClusterIP releases its node port, allocated or given.
#[test]
fn releasing_an_allocated_node_port_is_a_risk() {
    let service = |kind: &str| {
        format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: web}}\nspec:\n  type: {kind}\n  selector: {{app: web}}\n  ports: [{{port: 80}}]\n"
        )
    };
    let (plan, ..) = plan_between(&service("NodePort"), &service("ClusterIP"));
    assert!(
        plan.risks
            .iter()
            .any(|r| r.message == "the node port allocated for port 80 is released: clients outside lose access"),
        "{:?}",
        plan.risks
    );
}

/// One commit of the repository the rollout property plays with: each app's image, which
/// ConfigMap it reads, whether it opts out of config restarts; each ConfigMap's value (`None`:
/// the ConfigMap is gone).
#[derive(Debug, Clone)]
struct RolloutSpec {
    apps: [(u8, usize, bool); 3],
    configs: [Option<u8>; 2],
}

impl RolloutSpec {
    fn write(&self, repo: &TestRepo) {
        repo.clear();
        let mut configs = String::new();
        for (i, value) in self.configs.iter().enumerate() {
            if let Some(value) = value {
                configs.push_str(&format!(
                    "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: conf-{i}}}\ndata: {{level: \"{value}\"}}\n---\n"
                ));
            }
        }
        configs.push_str("apiVersion: v1\nkind: Secret\nmetadata: {name: creds}\nstringData: {token: t}\n");
        repo.write("config.yaml", &configs);
        for (i, (image, reads, opts_out)) in self.apps.iter().enumerate() {
            let annotation = if *opts_out { "berth.dev/restart-on-config-change: \"false\"" } else { "{}" };
            let annotation = if *opts_out { format!("\n  annotations: {{{annotation}}}") } else { String::new() };
            repo.write(
                &format!("app-{i}.yaml"),
                &format!(
                    r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: app-{i}{annotation}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: app-{i}}}}}
  template:
    metadata: {{labels: {{app: app-{i}}}}}
    spec:
      containers:
        - name: main
          image: app:{image}
          env:
            - {{name: LEVEL, valueFrom: {{configMapKeyRef: {{name: conf-{reads}, key: level, optional: true}}}}}}
            - {{name: TOKEN, valueFrom: {{secretKeyRef: {{name: creds, key: token}}}}}}
"#
                ),
            );
        }
    }
}

fn rollout_spec() -> impl proptest::strategy::Strategy<Value = RolloutSpec> {
    use proptest::prelude::*;
    let app = (0u8..3, 0usize..2, proptest::bool::weighted(0.2));
    (
        [app.clone(), app.clone(), app],
        [proptest::option::weighted(0.8, 0u8..3), proptest::option::weighted(0.8, 0u8..3)],
    )
        .prop_map(|(apps, configs)| RolloutSpec { apps, configs })
}

proptest::proptest! {
    #![proptest_config(proptest::test_runner::Config { cases: 16, ..Default::default() })]

    /// A loader reuses the previous commit's rollouts for the workloads it shares with it: in
    /// whatever order commits load, each one's rollouts are what a fresh computation gives, and
    /// a plan made from them is the plan made without them.
    #[test]
    fn carried_rollouts_are_computed_ones(
        specs in proptest::collection::vec(rollout_spec(), 2..6),
        order in proptest::collection::vec(0usize..6, 1..10),
    ) {
        let mut repo = TestRepo::new();
        let commits: Vec<String> = specs
            .iter()
            .enumerate()
            .map(|(i, spec)| {
                spec.write(&repo);
                repo.commit(&format!("commit {i}"))
            })
            .collect();
        let mut loader = Loader::open(repo.path()).unwrap();
        let mut previous: Option<std::sync::Arc<berth::sync::Loaded>> = None;
        for pick in order {
            let loaded = loader.load(&commits[pick % commits.len()]).unwrap();
            proptest::prop_assert!(loaded.is_valid(), "{:?}", loaded.diagnostics);
            let fresh = plan::rollout::Rollouts::of(&loaded.resources, None);
            for (index, resource) in loaded.resources.iter().enumerate() {
                proptest::prop_assert_eq!(loaded.rollouts.get(index), fresh.get(index), "{}", resource.key);
            }
            if let Some(before) = &previous {
                let bare = |l: &berth::sync::Loaded| State::new(l.commit.sha.clone(), "", l.resources.clone());
                let carried = plan::plan(&loaded.state(), &before.state());
                let mut computed = plan::plan(&bare(&loaded), &bare(before));
                computed.from_title = carried.from_title.clone();
                computed.to_title = carried.to_title.clone();
                proptest::prop_assert_eq!(carried, computed);
            }
            previous = Some(loaded);
        }
    }
}

/// The scheduler's forecast in a plan: where the first pods of each workload that starts some
/// would go, what no node fits, in every rendering, and never in the digest.
#[test]
fn a_plan_says_where_its_first_pods_would_go() {
    use berth::manifest::quantity::Resources;
    use berth::plan::schedule::{NodeInfo, forecast};
    let workload = |kind: &str, name: &str, extra: &str, cpu: &str| {
        let replicas = if kind == "Deployment" { "  replicas: 3\n" } else { "" };
        format!(
            "apiVersion: apps/v1\nkind: {kind}\nmetadata:\n  name: {name}\nspec:\n{replicas}  selector:\n    matchLabels: {{app: {name}}}\n  template:\n    metadata:\n      labels: {{app: {name}}}\n    spec:\n{extra}      containers:\n        - name: {name}\n          image: {name}:1\n          resources:\n            requests: {{cpu: \"{cpu}\"}}\n"
        )
    };
    let after = [
        workload("Deployment", "web", "", "500m"),
        workload("DaemonSet", "edge", "      nodeSelector: {role: edge}\n", "100m"),
        workload("Deployment", "huge", "", "8"),
    ]
    .join("---\n");
    let (mut plan, repo, _, to) = plan_between("", &after);
    let node = |name: &str, ready: bool, labels: &[(&str, &str)]| NodeInfo {
        name: name.into(),
        ready,
        labels: labels.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
        allocatable: Resources { cpu_millis: 2000, memory_bytes: 4 << 30 },
    };
    let nodes = [node("n1", true, &[("role", "edge")]), node("n2", true, &[]), node("n3", false, &[("role", "edge")])];
    let mut loader = Loader::open(repo.path()).unwrap();
    let desired = loader.load(&to).unwrap();
    let digest = render::digest(&plan);
    plan.placements = forecast(&plan, &desired.resources, &nodes, &[]);
    let of = |name: &str| {
        plan.placements.iter().find(|f| f.name == name).unwrap_or_else(|| panic!("no forecast for {name}"))
    };
    let web = of("web");
    assert_eq!(web.nodes.values().sum::<u32>(), 3, "{web:?}");
    assert!(web.nodes.contains_key("n1") && web.nodes.contains_key("n2") && !web.nodes.contains_key("n3"), "{web:?}");
    assert!(web.pending.is_empty(), "{web:?}");
    let edge = of("edge");
    assert_eq!(edge.nodes.iter().map(|(n, c)| (n.as_str(), *c)).collect::<Vec<_>>(), vec![("n1", 1)], "{edge:?}");
    let huge = of("huge");
    assert!(huge.nodes.is_empty(), "{huge:?}");
    assert_eq!(huge.pending.len(), 1, "{huge:?}");
    assert!(huge.pending[0].starts_with("3 pods pending: 0/3 nodes fit"), "{huge:?}");
    assert!(huge.pending[0].contains("more cpu than any node has"), "{huge:?}");
    // The forecast is told, never approved: the digest is the program's.
    assert_eq!(render::digest(&plan), digest);
    let text = render::text(&plan, false);
    assert!(text.contains("first pods on n1 (1)"), "{text}");
    assert!(text.contains("3 pods pending: 0/3 nodes fit"), "{text}");
    assert!(render::markdown(&plan).contains("first pods on"), "{}", render::markdown(&plan));
    let json: serde_json::Value = serde_json::from_str(&render::json(&plan)).unwrap();
    assert_eq!(json["placements"].as_array().map(Vec::len), Some(3), "{json}");
    assert_eq!(json["planDigest"], digest.as_str());
}

/// Issue 18: a plan says when a Job runs, when it runs again (its spec changed) and when a
/// change only alters the run under way.
#[test]
fn a_plan_says_whether_a_job_runs_again() {
    let job = |parallelism: u32, image: &str| {
        format!(
            "apiVersion: batch/v1\nkind: Job\nmetadata: {{name: migrate}}\nspec:\n  completions: 3\n  parallelism: {parallelism}\n  template:\n    spec:\n      restartPolicy: Never\n      containers: [{{name: main, image: \"{image}\"}}]\n"
        )
    };
    let (plan, ..) = plan_between("", &job(2, "registry.example/migrate:1"));
    let rollout = plan.changes[0].rollout.as_ref().unwrap();
    assert_eq!(rollout.description, "runs the Job once: 3 pods succeed, 2 at a time, up to 6 retries");
    let (plan, ..) = plan_between(&job(2, "registry.example/migrate:1"), &job(2, "registry.example/migrate:2"));
    let rollout = plan.changes[0].rollout.as_ref().unwrap();
    assert!(rollout.description.starts_with("runs the Job again with its new spec"), "{}", rollout.description);
    let (plan, ..) = plan_between(&job(2, "registry.example/migrate:1"), &job(3, "registry.example/migrate:1"));
    let rollout = plan.changes[0].rollout.as_ref().unwrap();
    assert!(rollout.description.contains("the Job does not run again"), "{}", rollout.description);
}

/// Issue 18: the plan lists hooks in the order they run: PreSync first, PostSync last.
#[test]
fn a_plan_lists_hooks_in_the_order_they_run() {
    let job = |name: &str, hook: &str| {
        format!(
            "apiVersion: batch/v1\nkind: Job\nmetadata:\n  name: {name}\n  annotations: {{berth.dev/hook: {hook}}}\nspec:\n  template:\n    spec:\n      restartPolicy: Never\n      containers: [{{name: main, image: registry.example/{name}:1}}]\n"
        )
    };
    let after =
        [job("announce", "PostSync"), crate::images::deployment("web", None, 1, "v1", None), job("migrate", "PreSync")]
            .join("---\n");
    let (plan, ..) = plan_between("", &after);
    let order: Vec<(String, Option<&str>)> = plan.changes.iter().map(|c| (c.name.clone(), c.hook)).collect();
    assert_eq!(
        order,
        vec![("migrate".into(), Some("PreSync")), ("web".into(), None), ("announce".into(), Some("PostSync"))]
    );
    let text = berth::plan::render::text(&plan, false);
    assert!(text.contains("Job default/migrate [PreSync hook]"), "{text}");
}
