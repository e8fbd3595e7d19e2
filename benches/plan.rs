//! Parse, validate and plan a synthetic repository of 10,000 objects in 1,000 files.
//!
//! Reports medians (and p90) of:
//! - cold: a fresh loader (no caches) loads and validates the commit, then plans it against an
//!   empty observed state, so all 10,000 objects are creates with full diffs (the worst case);
//! - cold, commit against its parent: a fresh loader loads both commits and plans between them;
//! - re-plan: a loader that holds the parent loads a commit that changed one file and plans it
//!   against the parent (the file cache by blob id does the rest);
//! - hostile inputs: an alias bomb, deep nesting and an oversize file, each refused.
//!
//! Run with `cargo bench --bench plan`; set BENCH_QUICK=1 for a short run, PROFILE_REPLAN=1 to run
//! only re-plans (800 of them), for a profiler such as `perf record`.

use berth::plan::{self, State};
use berth::sync::{Loaded, Loader};
use std::path::Path;
use std::time::{Duration, Instant};

const FILES: usize = 1_000;
const OBJECTS_PER_FILE: usize = 10;

fn file_text(file: usize, version: usize) -> String {
    let namespace = format!("team-{:03}", file % 100);
    let mut docs = Vec::new();
    for slot in 0..OBJECTS_PER_FILE / 5 {
        let app = format!("app-{file:04}-{slot}");
        docs.push(format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {app}-config\n  namespace: {namespace}\n  labels:\n    app: {app}\ndata:\n  LOG_LEVEL: info\n  FEATURE_FLAGS: \"a,b,c\"\n  settings.ini: |\n    [server]\n    port = 8080\n    version = {version}\n"
        ));
        docs.push(format!(
            "apiVersion: v1\nkind: Secret\nmetadata:\n  name: {app}-secret\n  namespace: {namespace}\ntype: Opaque\ndata:\n  password: cGFzc3dvcmQ=\nstringData:\n  token: token-{file}-{slot}\n"
        ));
        docs.push(format!(
            r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: {app}
  namespace: {namespace}
  labels:
    app: {app}
    app.kubernetes.io/part-of: bench
spec:
  replicas: 3
  selector:
    matchLabels:
      app: {app}
  strategy:
    rollingUpdate:
      maxSurge: 25%
      maxUnavailable: 1
  template:
    metadata:
      labels:
        app: {app}
    spec:
      containers:
        - name: main
          image: registry.example/{app}:1.{version}.0
          args: ["--listen", "0.0.0.0:8080"]
          ports:
            - name: http
              containerPort: 8080
          env:
            - name: LOG_LEVEL
              valueFrom:
                configMapKeyRef:
                  name: {app}-config
                  key: LOG_LEVEL
            - name: PASSWORD
              valueFrom:
                secretKeyRef:
                  name: {app}-secret
                  key: password
          resources:
            requests:
              cpu: 100m
              memory: 64Mi
            limits:
              memory: 128Mi
          readinessProbe:
            httpGet:
              path: /ready
              port: http
          livenessProbe:
            tcpSocket:
              port: http
          volumeMounts:
            - name: config
              mountPath: /etc/app
      volumes:
        - name: config
          configMap:
            name: {app}-config
"#
        ));
        docs.push(format!(
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: {app}\n  namespace: {namespace}\nspec:\n  selector:\n    app: {app}\n  ports:\n    - name: http\n      port: 80\n      targetPort: http\n"
        ));
        docs.push(format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {app}-extra\n  namespace: {namespace}\ndata:\n  note: \"generated for the benchmark\"\n"
        ));
    }
    docs.join("---\n")
}

struct Repo {
    _dir: tempfile::TempDir,
    repo: git2::Repository,
    path: std::path::PathBuf,
}

impl Repo {
    fn commit(&self, message: &str) -> String {
        let mut index = self.repo.index().unwrap();
        index.add_all(["*"], git2::IndexAddOption::DEFAULT, None).unwrap();
        index.write().unwrap();
        let tree = self.repo.find_tree(index.write_tree().unwrap()).unwrap();
        let signature = git2::Signature::now("bench", "bench@example.test").unwrap();
        let parent = self.repo.head().ok().and_then(|h| h.peel_to_commit().ok());
        let parents: Vec<&git2::Commit<'_>> = parent.iter().collect();
        self.repo.commit(Some("HEAD"), &signature, &signature, message, &tree, &parents).unwrap().to_string()
    }
}

fn state(loaded: &Loaded) -> State {
    loaded.state()
}

fn empty() -> State {
    State::new("empty", "", Vec::new())
}

fn report(name: &str, mut samples: Vec<Duration>, goal: Option<Duration>) {
    samples.sort();
    let median = samples[samples.len() / 2];
    let p90 = samples[(samples.len() * 9 / 10).min(samples.len() - 1)];
    let goal = goal.map_or(String::new(), |g| {
        format!("  goal {:>8.2} ms  ratio {:.2}", g.as_secs_f64() * 1e3, median.as_secs_f64() / g.as_secs_f64())
    });
    println!(
        "{name:<58} median {:>8.2} ms  p90 {:>8.2} ms  (n={}){goal}",
        median.as_secs_f64() * 1e3,
        p90.as_secs_f64() * 1e3,
        samples.len()
    );
}

fn main() {
    let quick = std::env::var_os("BENCH_QUICK").is_some();
    let runs = if quick { 3 } else { 15 };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    let repo = Repo { repo: git2::Repository::init(&path).unwrap(), _dir: dir, path };
    for file in 0..FILES {
        let sub = repo.path.join(format!("team-{:03}", file % 100));
        std::fs::create_dir_all(&sub).unwrap();
        std::fs::write(sub.join(format!("app-{file:04}.yaml")), file_text(file, 0)).unwrap();
    }
    let base = repo.commit("base");
    let mut edits = Vec::new();
    for run in 0..runs.max(5) * 2 {
        let file = (run * 37) % FILES;
        let path = repo.path.join(format!("team-{:03}/app-{file:04}.yaml", file % 100));
        let original = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, file_text(file, run + 1)).unwrap();
        edits.push(repo.commit(&format!("edit {run}")));
        std::fs::write(&path, original).unwrap();
        repo.commit("restore");
    }

    // Sanity: the synthetic repository is valid and has the size the goal speaks of.
    let mut loader = Loader::open(&repo.path).unwrap();
    let loaded = loader.load(&base).unwrap();
    assert!(loaded.is_valid(), "{:?}", &loaded.diagnostics[..loaded.diagnostics.len().min(5)]);
    assert_eq!(loaded.resources.len(), FILES * OBJECTS_PER_FILE);
    assert_eq!(loaded.files, FILES);
    println!(
        "synthetic repository: {} objects in {} files, {} warnings",
        loaded.resources.len(),
        loaded.files,
        loaded.warning_count()
    );
    if let Some(first) = loaded.diagnostics.first() {
        println!("  first warning: {first}");
    }

    // Only re-plans, for a profiler: no timing, no report.
    if std::env::var_os("PROFILE_REPLAN").is_some() {
        let mut loader = Loader::open(&repo.path).unwrap();
        let old = loader.load(&base).unwrap();
        let observed = state(&old);
        let news: Vec<_> = edits.iter().map(|e| loader.load(e).unwrap()).collect();
        for _ in 0..40 {
            for new in &news {
                std::hint::black_box(plan::plan(&state(new), &observed));
            }
        }
        return;
    }
    let mut cold = Vec::new();
    let mut cold_load = Vec::new();
    for _ in 0..runs {
        let start = Instant::now();
        let mut loader = Loader::open(&repo.path).unwrap();
        let loaded = loader.load(&base).unwrap();
        cold_load.push(start.elapsed());
        let plan = plan::plan(&state(&loaded), &empty());
        cold.push(start.elapsed());
        assert_eq!(plan.summary.create, FILES * OBJECTS_PER_FILE);
    }
    report("cold: load + validate 10,000 objects", cold_load.clone(), None);
    report("cold: load + validate + plan all as creates (full diffs)", cold, Some(Duration::from_millis(300)));

    let mut cold_pair = Vec::new();
    for edit in edits.iter().take(runs) {
        let start = Instant::now();
        let mut loader = Loader::open(&repo.path).unwrap();
        let old = loader.load(&base).unwrap();
        let new = loader.load(edit).unwrap();
        let plan = plan::plan(&state(&new), &state(&old));
        cold_pair.push(start.elapsed());
        assert_eq!(plan.summary.update, 4);
    }
    report("cold: load both commits + plan a commit against its parent", cold_pair, Some(Duration::from_millis(300)));

    let mut loader = Loader::open(&repo.path).unwrap();
    let old = loader.load(&base).unwrap();
    let observed = state(&old);
    let mut replan = Vec::new();
    let mut replan_load = Vec::new();
    let mut replan_across = Vec::new();
    for edit in &edits {
        let start = Instant::now();
        let new = loader.load(edit).unwrap();
        replan_load.push(start.elapsed());
        let plan = plan::plan(&state(&new), &observed);
        replan.push(start.elapsed());
        let across = Instant::now();
        std::hint::black_box(berth::manifest::validate::across(&new.resources, &[]));
        replan_across.push(across.elapsed());
        assert_eq!(plan.summary.update, 4, "one file changed: its two Deployments and two ConfigMaps");
    }
    let stats = loader.stats();
    assert_eq!(stats.file_parses as usize, FILES + edits.len(), "one parse per changed file");
    let hot: Vec<Duration> = (0..30)
        .map(|_| {
            let start = Instant::now();
            std::hint::black_box(berth::manifest::validate::across(&old.resources, &[]));
            start.elapsed()
        })
        .collect();
    report("  the checks across objects, repeated on the same objects", hot, None);
    report("  of which: load the commit (checks across objects included)", replan_load, None);
    report("  of which, measured apart: the checks across objects", replan_across, None);
    report("re-plan after a one-file change (warm caches)", replan, Some(Duration::from_millis(10)));

    kustomized(runs, &cold_load);
    hostile(&repo.path);
}

/// The same 1,000 files as a kustomize base with a `prod` overlay, loaded cold, against the plain
/// files loaded cold: the goal is within twice the plain load.
fn kustomized(runs: usize, plain: &[Duration]) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    let repo = Repo { repo: git2::Repository::init(&path).unwrap(), _dir: dir, path };
    let mut resources = String::from("resources:\n");
    for file in 0..FILES {
        let relative = format!("team-{:03}/app-{file:04}.yaml", file % 100);
        let target = repo.path.join("base").join(&relative);
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        std::fs::write(target, file_text(file, 0)).unwrap();
        resources.push_str(&format!("  - {relative}\n"));
    }
    std::fs::write(repo.path.join("base/kustomization.yaml"), resources).unwrap();
    let overlay = repo.path.join("overlays/prod");
    std::fs::create_dir_all(&overlay).unwrap();
    std::fs::write(
        overlay.join("kustomization.yaml"),
        "resources: [../../base]\ncommonAnnotations:\n  environment: prod\n",
    )
    .unwrap();
    repo.commit("base and overlay");
    let mut samples = Vec::new();
    for _ in 0..runs {
        let start = Instant::now();
        let mut loader = Loader::open(&overlay).unwrap();
        let loaded = loader.load("HEAD").unwrap();
        samples.push(start.elapsed());
        assert!(loaded.is_valid(), "{:?}", &loaded.diagnostics[..loaded.diagnostics.len().min(5)]);
        assert_eq!(loaded.resources.len(), FILES * OBJECTS_PER_FILE);
    }
    let mut plain = plain.to_vec();
    plain.sort();
    let goal = plain[plain.len() / 2] * 2;
    report("cold: load + validate as base + overlay (goal: 2x plain)", samples, Some(goal));
}

fn hostile(dir: &Path) {
    let mut bomb = String::from("a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
    for level in 1..12 {
        bomb.push_str(&format!("a{level}: &a{level} [{}]\n", vec![format!("*a{}", level - 1); 10].join(", ")));
    }
    let mut nested = String::new();
    for level in 0..10_000 {
        nested.push_str(&format!("{}k:\n", " ".repeat(level)));
    }
    let flow = format!("a: {}{}\n", "[".repeat(1_000_000), "]".repeat(1_000_000));
    let huge = "# padding\n".repeat(2 * 1024 * 1024 / 10);
    for (name, text) in [
        ("alias bomb", bomb),
        ("block nesting 10,000 deep", nested),
        ("flow nesting 1,000,000 deep", flow),
        ("2 MiB file", huge),
    ] {
        let mut samples = Vec::new();
        for _ in 0..9 {
            let start = Instant::now();
            let parsed = berth::manifest::parse_file("hostile.yaml", &text);
            samples.push(start.elapsed());
            assert!(parsed.diagnostics.iter().any(|d| d.is_error()), "{name} was not refused");
        }
        report(&format!("refuse {name}"), samples, None);
    }
    let _ = dir;
}
