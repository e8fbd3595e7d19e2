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

fn failed_scheduling(message: &str) -> berth::store::events::NewEvent {
    berth::store::events::NewEvent {
        namespace: "shop".to_owned(),
        object: "Deployment/web".to_owned(),
        owner: String::new(),
        kind: "Warning",
        reason: "FailedScheduling".to_owned(),
        message: message.to_owned(),
    }
}

/// A loop that passes every 100 ms writes a lasting condition's event twice a minute, not ten
/// times a second; the store stays within its bounds, pruned at most once a minute.
#[tokio::test]
async fn events_of_a_frequent_loop_are_rate_limited_and_bounded() {
    use berth::store::events::{EVENT_AGE_SECONDS, EVENT_LIMIT, EventRecorder, PRUNE_EVERY_SECONDS, REPEAT_SECONDS};
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("berth.db")).await.unwrap();
    let recorder = EventRecorder::default();
    let start = 1_767_225_700;
    // Ten passes a second for 65 s (time as whole seconds, as the controller's clock).
    for tenth in 0..650 {
        let now = start + tenth / 10;
        recorder.record(&store, vec![failed_scheduling("0/2 nodes fit: 2 lack memory")], now).await;
    }
    let events = store.events().await.unwrap();
    assert_eq!(events.len(), 1, "{events:?}");
    let expected = 65 / REPEAT_SECONDS + 1;
    assert_eq!(events[0].count, expected, "one write per {REPEAT_SECONDS} s: {events:?}");
    assert_eq!(events[0].first_seen, start);
    assert_eq!(events[0].last_seen, start + 2 * REPEAT_SECONDS);

    // Another message is another event, written at once.
    recorder.record(&store, vec![failed_scheduling("0/2 nodes fit: 2 lack cpu")], start + 65).await;
    assert_eq!(store.events().await.unwrap().len(), 2);

    // Past the count bound, pruning brings it back within a minute.
    let flood: Vec<_> = (0..EVENT_LIMIT + 50).map(|i| failed_scheduling(&format!("distinct condition {i}"))).collect();
    let later = start + 66;
    store.add_events(&flood, later).await.unwrap();
    store.add_events(&[], later + PRUNE_EVERY_SECONDS).await.unwrap();
    let kept = store.events().await.unwrap();
    assert_eq!(kept.len() as i64, EVENT_LIMIT);
    // And past the age bound, all of it goes.
    store.add_events(&[], later + EVENT_AGE_SECONDS + 2 * PRUNE_EVERY_SECONDS).await.unwrap();
    assert!(store.events().await.unwrap().is_empty());
}

/// Tokens are kept as digests and survive a restart; a name is never reused; a revoked token
/// stays listed; the audit log reads back what was written, from a time on.
#[tokio::test]
async fn tokens_and_the_audit_log_survive_a_reopen() {
    use berth::server::access::{Access, digest};
    use berth::store::{AuditRecord, TokenRecord};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("berth.db");
    let token = berth::server::access::new_token();
    {
        let store = Store::open(&path).await.unwrap();
        let record = TokenRecord {
            name: "ci".into(),
            digest: digest(&token),
            role: "deployer".into(),
            namespaces: vec!["shop".into()],
            created_at: 100,
            expires_at: None,
            revoked_at: None,
        };
        assert!(store.add_token(&record).await.unwrap());
        assert!(!store.add_token(&TokenRecord { digest: digest("other"), ..record }).await.unwrap(), "name taken");
        for (at, action) in [(10, "approve"), (20, "rollback")] {
            let line = AuditRecord {
                at,
                who: "ci".into(),
                action: action.into(),
                object: "x".into(),
                address: "127.0.0.1".into(),
                outcome: "ok".into(),
            };
            store.audit(&line).await.unwrap();
        }
    }
    let store = Store::open_existing(&path).await.unwrap();
    let access = Access::new("root", true, None);
    access.load_tokens(&store).await.unwrap();
    assert!(access.accepts(&token), "a token made before a restart works after it");
    let since: Vec<String> = store.audit_log(15).await.unwrap().into_iter().map(|a| a.action).collect();
    assert_eq!(since, ["rollback"]);
    // The token itself is nowhere in the database file.
    let bytes = std::fs::read(&path).unwrap();
    assert!(!bytes.windows(token.len()).any(|w| w == token.as_bytes()));
    assert!(store.revoke_token("ci", 200).await.unwrap());
    assert!(!store.revoke_token("ci", 201).await.unwrap(), "revoked once");
    access.load_tokens(&store).await.unwrap();
    assert!(!access.accepts(&token));
    assert_eq!(store.tokens().await.unwrap()[0].revoked_at, Some(200));
}
