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
        text.push_str(&berth::manifest::yaml::emit(&object.node));
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

/// A repository held in memory, for renders of generated or mutated inputs.
struct Memory(std::collections::BTreeMap<String, Vec<u8>>);

impl kustomize::Files for Memory {
    fn read(&self, path: &str) -> Option<Vec<u8>> {
        self.0.get(path).cloned()
    }

    fn is_dir(&self, path: &str) -> bool {
        path.is_empty() || self.0.keys().any(|k| k.strip_prefix(path).is_some_and(|rest| rest.starts_with('/')))
    }
}

/// Every case of the compatibility set as (the folder it renders, its files).
fn cases_in_memory() -> Vec<(String, Memory)> {
    let set = fixtures().join("kustomize");
    let mut cases = Vec::new();
    for entry in std::fs::read_dir(&set).unwrap() {
        let case = entry.unwrap().path();
        if !case.is_dir() {
            continue;
        }
        let mut files = std::collections::BTreeMap::new();
        let mut stack = vec![case.clone()];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    stack.push(path);
                } else {
                    let relative = path.strip_prefix(&case).unwrap().to_string_lossy().into_owned();
                    files.insert(relative, std::fs::read(&path).unwrap());
                }
            }
        }
        let header = String::from_utf8_lossy(&files["expected.yaml"]).lines().next().unwrap_or_default().to_owned();
        let dir = header.strip_prefix("# render: ").unwrap_or_default().trim().to_owned();
        files.remove("expected.yaml");
        cases.push((dir, Memory(files)));
    }
    cases.sort_by(|a, b| a.0.cmp(&b.0));
    cases
}

#[test]
fn rendering_survives_mutated_kustomizations() {
    use crate::fuzz::fuzz_cases::{LIMIT, mutate, mutation};
    use proptest::test_runner::{Config, TestRunner};
    let cases = cases_in_memory();
    let count = std::env::var("BERTH_FUZZ_CASES").ok().and_then(|c| c.parse::<u32>().ok()).unwrap_or(10_000) / 5;
    let mut runner = TestRunner::new(Config { cases: count, failure_persistence: None, ..Config::default() });
    let slowest = std::cell::Cell::new(std::time::Duration::ZERO);
    let strategy = (0..cases.len(), 0usize..64, proptest::collection::vec(mutation(), 1..6));
    runner
        .run(&strategy, |(case, file, mutations)| {
            let (dir, files) = &cases[case];
            let names: Vec<&String> = files.0.keys().collect();
            let name = names[file % names.len()].clone();
            let mut mutated = files.0.clone();
            let text = String::from_utf8_lossy(&files.0[&name]).into_owned();
            mutated.insert(name, mutate(&text, &mutations).into_bytes());
            let start = std::time::Instant::now();
            let output = kustomize::render(&Memory(mutated), dir);
            let took = start.elapsed();
            slowest.set(slowest.get().max(took));
            proptest::prop_assert!(took < LIMIT, "a render took {took:?}");
            // Every finding names a file and a line.
            for diagnostic in &output.diagnostics {
                proptest::prop_assert!(!diagnostic.file.is_empty() && diagnostic.line > 0, "{diagnostic}");
            }
            Ok(())
        })
        .unwrap_or_else(|failure| panic!("mutated kustomization: {failure}"));
    assert!(slowest.get() < LIMIT);
}

#[test]
fn hostile_kustomizations_end_in_errors_quickly() {
    let mut files = std::collections::BTreeMap::new();
    // A diamond of bases ten levels deep, each including the next level 50 times over.
    for level in 0..10 {
        let next: Vec<String> = (0..50).map(|_| format!("../l{}", level + 1)).collect();
        files
            .insert(format!("l{level}/kustomization.yaml"), format!("resources: [{}]\n", next.join(", ")).into_bytes());
    }
    files.insert("l10/kustomization.yaml".into(), b"resources: [pod.yaml]\n".to_vec());
    files.insert(
        "l10/pod.yaml".into(),
        b"apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: [{name: c, image: x}]}\n".to_vec(),
    );
    // A JSON patch whose copies double the object at each step.
    let copies: String = (0..60).map(|i| format!("  - {{op: copy, from: /spec, path: /spec/c{i}}}\n")).collect();
    files.insert(
        "copy/kustomization.yaml".into(),
        format!(
            "resources: [../l10/pod.yaml]\npatches:\n- target: {{kind: Pod}}\n  patch: |-\n{}",
            copies.replace("  - ", "    - ")
        )
        .into_bytes(),
    );
    // Replacements that copy an object's spec into itself, again and again.
    let replacements: String = (0..60)
        .map(|i| format!("  - source: {{kind: Pod, fieldPath: spec}}\n    targets: [{{select: {{kind: Pod}}, fieldPaths: [spec.r{i}], options: {{create: true}}}}]\n"))
        .collect();
    files.insert(
        "replace/kustomization.yaml".into(),
        format!("resources: [../l10/pod.yaml]\nreplacements:\n{replacements}").into_bytes(),
    );
    let memory = Memory(files);
    for (dir, expected) in
        [("l0", "declared twice"), ("copy", "copies make the object more than"), ("replace", "more than the limit of")]
    {
        let start = std::time::Instant::now();
        let output = kustomize::render(&memory, dir);
        let took = start.elapsed();
        assert!(took < std::time::Duration::from_secs(1), "{dir} took {took:?}");
        assert!(output.objects.is_empty(), "{dir}: a failed render gives no objects");
        let shown: Vec<String> = output.diagnostics.iter().map(|d| d.to_string()).collect();
        assert!(shown.iter().any(|d| d.contains(expected)), "{dir}: {shown:#?}");
    }
}

#[test]
fn a_finding_about_a_patched_value_points_at_the_patch() {
    let mut repo = crate::support::TestRepo::new();
    shop(&repo, "hello prod");
    repo.write(
        "overlays/prod/kustomization.yaml",
        "resources: [../../base]\npatches:\n  - path: web-patch.yaml\n  - target: {kind: Deployment}\n    patch: |-\n      - {op: add, path: /spec/replicas, value: many}\n",
    );
    repo.write(
        "overlays/prod/web-patch.yaml",
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec:\n  template:\n    spec:\n      containers:\n        - name: web\n          imagePullPolicy: Sometimes\n",
    );
    repo.commit("bad patches");
    let mut loader = berth::sync::Loader::open(&repo.path().join("overlays/prod")).unwrap();
    let loaded = loader.load("HEAD").unwrap();
    assert!(!loaded.is_valid());
    let shown: Vec<String> = loaded.diagnostics.iter().map(|d| d.to_string()).collect();
    // The patch file's own line, not the base's.
    assert!(
        shown.iter().any(|d| d.starts_with("web-patch.yaml:9:28: warning") && d.contains("imagePullPolicy")),
        "{shown:#?}"
    );
    // An inline patch's value is at its entry of the kustomization.
    assert!(
        shown.iter().any(|d| d.starts_with("kustomization.yaml:4:5: error") && d.contains("replicas")),
        "{shown:#?}"
    );
}

/// Issue 22: a SOPS-encrypted resource of a kustomization is decrypted as it is read, before
/// the kustomization's namespace and labels change it (which would break its MAC), as Flux
/// does; without the identity the render fails and names the file.
#[test]
fn an_encrypted_resource_of_a_kustomization_is_decrypted_before_it_is_transformed() {
    use age::secrecy::ExposeSecret as _;
    let identity = age::x25519::Identity::generate();
    let secret = "apiVersion: v1\nkind: Secret\nmetadata: {name: creds}\nstringData: {password: kustomized-secret}\n";
    let sealed =
        berth::manifest::sops::encrypt_text(secret, &[identity.to_public().to_string()], "2026-12-05T10:00:00Z")
            .unwrap();
    let mut repo = crate::support::TestRepo::new();
    repo.write("kustomization.yaml", "namespace: shop\ncommonLabels: {team: a}\nresources: [secret.yaml]\n");
    repo.write("secret.yaml", &sealed);
    repo.commit("an encrypted secret in a kustomization");

    let mut loader = berth::sync::Loader::open(repo.path()).unwrap();
    let loaded = loader.load("HEAD").unwrap();
    assert!(!loaded.is_valid() && loaded.resources.is_empty());
    let shown: Vec<String> = loaded.diagnostics.iter().map(ToString::to_string).collect();
    assert!(
        shown.iter().any(|d| d.contains("cannot decrypt secret.yaml: no age identity is configured")),
        "{shown:#?}"
    );

    let keys = berth::manifest::sops::Keys::parse(identity.to_string().expose_secret()).unwrap();
    loader.set_age_keys(Some(keys));
    let loaded = loader.load("HEAD").unwrap();
    assert!(loaded.is_valid(), "{:#?}", loaded.diagnostics);
    assert_eq!(keys_of(&loaded), ["Secret shop/creds"]);
    let values = loaded.secrets.values().next().unwrap();
    assert_eq!(values.get("password"), Some(&b"kustomized-secret"[..]));
}
