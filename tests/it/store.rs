//! The SQLite store as the observed side of a plan: real database files.

use crate::support::{TestRepo, berth};
use berth::plan::{self, State};
use berth::store::Store;
use berth::sync::Loader;

const SECRET: &str =
    "apiVersion: v1\nkind: Secret\nmetadata:\n  name: db\nstringData:\n  password: plain-text-password\n";
const DEPLOYMENT: &str = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  replicas: 2\n  selector:\n    matchLabels:\n      app: web\n  template:\n    metadata:\n      labels:\n        app: web\n    spec:\n      containers:\n        - name: web\n          image: registry.example/web:1.0\n";

#[tokio::test]
async fn applied_objects_round_trip_and_stay_redacted() {
    let mut repo = TestRepo::new();
    repo.write("app.yaml", &format!("{SECRET}---\n{DEPLOYMENT}"));
    repo.commit("app");
    let mut loader = Loader::open(repo.path()).unwrap();
    let loaded = loader.load("HEAD").unwrap();

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("berth.db");
    let store = Store::open(&path).await.unwrap();
    assert_eq!(store.journal_mode().await.unwrap(), "wal");
    store.record_applied(&loaded.commit, &loaded.resources, 1_767_225_700).await.unwrap();
    let applied = store.applied().await.unwrap();
    assert_eq!(applied.commit.as_ref(), Some(&loaded.commit));
    assert_eq!(applied.resources.len(), 2);
    for (stored, original) in applied.resources.iter().zip(loaded.resources.iter()) {
        assert_eq!(stored.key, original.key);
        assert_eq!(stored.hash, original.hash, "{} changed on its way through the store", stored.key);
        assert_eq!(stored.canonical, original.canonical);
    }
    let desired = loaded.state();
    let observed = State::new("observed", "", applied.resources);
    assert!(!plan::plan(&desired, &observed).summary.has_changes());
    store.close().await;

    let raw = std::fs::read(&path).unwrap();
    let wal = std::fs::read(dir.path().join("berth.db-wal")).unwrap_or_default();
    for bytes in [raw, wal] {
        assert!(
            !String::from_utf8_lossy(&bytes).contains("plain-text-password"),
            "a secret value reached the database"
        );
    }
}

#[test]
fn plan_against_a_state_file() {
    let mut repo = TestRepo::new();
    repo.write("app.yaml", DEPLOYMENT);
    let first = repo.commit("first");
    repo.write("app.yaml", &DEPLOYMENT.replace("replicas: 2", "replicas: 3"));
    repo.commit("scale");

    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.db");
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let mut loader = Loader::open(repo.path()).unwrap();
        let loaded = loader.load(&first).unwrap();
        let store = Store::open(&state).await.unwrap();
        store.record_applied(&loaded.commit, &loaded.resources, 1_767_225_700).await.unwrap();
        store.close().await;
    });

    let state_arg = state.to_str().unwrap();
    let (code, stdout, stderr) = berth(repo.path(), &["plan", "--state", state_arg]);
    assert_eq!(code, 2, "{stdout}{stderr}");
    assert!(stdout.contains(&format!("berth plan: {} (observed: first) →", &first[..7])), "{stdout}");
    assert!(stdout.contains("rollout: scales from 2 to 3: 1 replica start, none restart"), "{stdout}");

    // A missing state file is an error, never "nothing is running" (which would plan creates).
    let missing = dir.path().join("missing.db");
    let (code, stdout, stderr) = berth(repo.path(), &["plan", "--state", missing.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(stdout.is_empty());
    assert!(stderr.contains("does not exist"), "{stderr}");
}
