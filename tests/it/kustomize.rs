//! The kustomize compatibility set: each folder of `tests/fixtures/kustomize` is a repository
//! whose `expected.yaml` names the kustomization to render (`# render: DIR`) and holds what
//! berth renders of it: findings first, then each object with the file it came from.
//! The reference is kustomize v5.4's documented behaviour (see the set's README).

use crate::support::{check_snapshot, fixtures};
use berth::kustomize::{self, DirFiles};

fn render_case(top: &std::path::Path, header: &str) -> String {
    let dir = header.strip_prefix("# render: ").unwrap_or_default().trim();
    let files = DirFiles { top: std::fs::canonicalize(top).unwrap() };
    let output = kustomize::render(&files, dir);
    let mut text = format!("# render: {dir}\n");
    for diagnostic in &output.diagnostics {
        text.push_str(&format!("# {diagnostic}\n"));
    }
    for object in &output.objects {
        text.push_str(&format!("---\n# from: {}\n", object.file));
        text.push_str(&kustomize::tree::emit(&object.node));
    }
    text
}

#[test]
fn the_compatibility_set_renders_as_written() {
    let set = fixtures().join("kustomize");
    let mut cases: Vec<_> =
        std::fs::read_dir(&set).unwrap().map(|e| e.unwrap().path()).filter(|p| p.is_dir()).collect();
    cases.sort();
    assert!(cases.len() >= 7, "the set has {} cases", cases.len());
    for case in cases {
        let expected = case.join("expected.yaml");
        let header = std::fs::read_to_string(&expected).unwrap();
        let header = header.lines().next().unwrap_or_default().to_owned();
        check_snapshot(&expected, &render_case(&case, &header));
    }
}

const DEPLOYMENT: &str = "apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
        - name: web
          image: shop/web:1.0
          envFrom:
            - configMapRef: {name: settings}
";

fn shop(repo: &crate::support::TestRepo, greeting: &str) {
    repo.write(
        "base/kustomization.yaml",
        "resources: [deployment.yaml]\nconfigMapGenerator:\n  - name: settings\n    literals: [GREETING=hello]\n",
    );
    repo.write("base/deployment.yaml", DEPLOYMENT);
    repo.write(
        "overlays/prod/kustomization.yaml",
        &format!(
            "resources: [../../base]\nnamespace: prod\nconfigMapGenerator:\n  - name: settings\n    behavior: merge\n    literals: [\"GREETING={greeting}\"]\n"
        ),
    );
    repo.write("overlays/prod/namespace.yaml", "apiVersion: v1\nkind: Namespace\nmetadata: {name: prod}\n");
    repo.write("plain/namespace.yaml", "apiVersion: v1\nkind: Namespace\nmetadata: {name: plain}\n");
}

fn keys_of(loaded: &berth::sync::Loaded) -> Vec<String> {
    loaded.resources.iter().map(|r| r.key.to_string()).collect()
}

#[test]
fn an_overlay_as_the_manifest_root_is_its_rendered_objects() {
    let mut repo = crate::support::TestRepo::new();
    shop(&repo, "hello prod");
    repo.commit("shop");
    let mut loader = berth::sync::Loader::open(&repo.path().join("overlays/prod")).unwrap();
    let loaded = loader.load("HEAD").unwrap();
    assert!(loaded.is_valid(), "{:#?}", loaded.diagnostics);
    let keys = keys_of(&loaded);
    assert_eq!(keys.len(), 2, "{keys:?}");
    assert!(keys[0].starts_with("ConfigMap prod/settings-"), "{keys:?}");
    assert_eq!(keys[1], "Deployment prod/web");
    // The namespace.yaml beside the kustomization is not a resource of it, so it is not read.
    let config = &loaded.resources[0];
    let deployment = &loaded.resources[1];
    assert_eq!(deployment.file, "../../base/deployment.yaml (via kustomization.yaml)");
    assert_eq!(config.file, "../../base/kustomization.yaml (via kustomization.yaml)");
    let reads: Vec<String> = deployment.config_reads.iter().map(|r| format!("{r:?}")).collect();
    assert!(reads.iter().any(|r| r.contains(&config.key.name)), "the workload reads the hashed name: {reads:?}");

    // A change to the overlay's generator renames the ConfigMap, and the workload follows.
    shop(&repo, "hello again");
    repo.commit("new greeting");
    let next = loader.load("HEAD").unwrap();
    assert_ne!(next.resources[0].key.name, config.key.name);
    assert_ne!(next.resources[1].hash, deployment.hash);
    let stats = loader.stats();
    assert_eq!((stats.renders, stats.render_hits), (2, 0));

    // A commit that changes nothing the render read reuses it.
    repo.write("plain/other.yaml", "apiVersion: v1\nkind: Namespace\nmetadata: {name: other}\n");
    repo.commit("elsewhere");
    let again = loader.load("HEAD").unwrap();
    assert_eq!(keys_of(&again), keys_of(&next));
    let stats = loader.stats();
    assert_eq!((stats.renders, stats.render_hits), (2, 1));
}

#[test]
fn a_scan_renders_each_kustomization_once_and_skips_bases() {
    let mut repo = crate::support::TestRepo::new();
    shop(&repo, "hello prod");
    repo.commit("shop");
    let mut loader = berth::sync::Loader::open(repo.path()).unwrap();
    let loaded = loader.load("HEAD").unwrap();
    assert!(loaded.is_valid(), "{:#?}", loaded.diagnostics);
    let keys = keys_of(&loaded);
    // The overlay's objects and the plain file; the base is not deployed on its own, and the
    // files under both kustomizations are not read as plain manifests.
    assert_eq!(keys.len(), 3, "{keys:?}");
    assert!(keys.contains(&"Namespace plain".to_owned()), "{keys:?}");
    assert!(keys.contains(&"Deployment prod/web".to_owned()), "{keys:?}");
    let warning =
        loaded.diagnostics.iter().find(|d| d.file == "base/kustomization.yaml").expect("a warning on the base");
    assert!(warning.message.contains("is a base of `overlays/prod`"), "{warning}");
    assert!(warning.help.as_deref().unwrap_or_default().contains("overlays/prod"), "{warning}");
}

#[test]
fn a_broken_kustomization_fails_the_commit_with_its_place() {
    let mut repo = crate::support::TestRepo::new();
    shop(&repo, "hello prod");
    repo.write(
        "overlays/prod/kustomization.yaml",
        "resources: [../../base]\nnamePrefx: prod-\npatches:\n  - path: ../../secrets.yaml\n",
    );
    repo.commit("typo");
    let mut loader = berth::sync::Loader::open(&repo.path().join("overlays/prod")).unwrap();
    let loaded = loader.load("HEAD").unwrap();
    assert!(!loaded.is_valid());
    assert!(loaded.resources.is_empty(), "nothing of a failed render is applied");
    let shown: Vec<String> = loaded.diagnostics.iter().map(|d| d.to_string()).collect();
    assert!(
        shown.iter().any(|d| d.starts_with("kustomization.yaml:2:1: error: namePrefx: unknown kustomization field")
            && d.contains("namePrefix")),
        "{shown:#?}"
    );
    assert!(
        shown.iter().any(|d| d.starts_with("kustomization.yaml:4:5: error: patches:")
            && d.contains("outside the kustomization's folder")),
        "{shown:#?}"
    );
}

#[test]
fn the_work_tree_renders_like_a_commit() {
    let mut repo = crate::support::TestRepo::new();
    shop(&repo, "hello prod");
    repo.commit("shop");
    shop(&repo, "uncommitted");
    let mut loader = berth::sync::Loader::open(&repo.path().join("overlays/prod")).unwrap();
    let committed = loader.load("HEAD").unwrap();
    let worktree = loader.load_worktree().unwrap();
    assert!(worktree.is_valid(), "{:#?}", worktree.diagnostics);
    assert_eq!(worktree.resources.len(), 2);
    assert_ne!(worktree.resources[0].key.name, committed.resources[0].key.name, "the uncommitted greeting is read");
}
