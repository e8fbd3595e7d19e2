//! The web UI and the JSON API through the router itself, without a socket: a real repository,
//! a real SQLite file and the real control loop, requests handed to the router as a service.

use crate::support::TestRepo;
use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use berth::server::agent_api::AgentApi;
use berth::server::api::Access;
use berth::server::control::{self, ControlConfig, ControlPlane};
use berth::store::Store;
use berth::sync::Loader;
use std::sync::Arc;
use std::time::Duration;
use tower::ServiceExt;

const TOKEN: &str = "ui-test-token";
const SECRET_VALUE: &str = "hunter2-never-shown";

struct Served {
    router: Router,
    plane: Arc<ControlPlane>,
    shutdown: tokio_util::sync::CancellationToken,
    _db: tempfile::TempDir,
    sha: String,
}

impl Drop for Served {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

fn manifests(repo: &TestRepo) {
    let app = crate::images::deployment("web", Some("shop"), 2, "v1", None).replace(
        "          readinessProbe:",
        "          env: [{name: PASSWORD, valueFrom: {secretKeyRef: {name: creds, key: password}}}]\n          readinessProbe:",
    );
    repo.write("ns.yaml", "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n");
    repo.write("web.yaml", &app);
    repo.write(
        "secret.yaml",
        &format!("apiVersion: v1\nkind: Secret\nmetadata: {{name: creds, namespace: shop}}\nstringData: {{password: {SECRET_VALUE}}}\n"),
    );
    repo.write(
        "svc.yaml",
        "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: shop}\nspec:\n  type: NodePort\n  selector: {app: web}\n  ports: [{port: 80, targetPort: 8080, nodePort: 30080}]\n",
    );
}

async fn serve(reads_need_token: bool) -> (Served, TestRepo) {
    serve_with(reads_need_token, |_| {}).await
}

async fn serve_with(reads_need_token: bool, more: impl FnOnce(&TestRepo)) -> (Served, TestRepo) {
    let mut repo = TestRepo::new();
    manifests(&repo);
    more(&repo);
    let sha = repo.commit("shop v1 <script>alert(1)</script>");
    let db = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(&db.path().join("berth.db")).await.unwrap());
    let agents = AgentApi::new(store.clone(), "join");
    let plane = ControlPlane::new(store, Loader::open(repo.path()).unwrap(), agents.clone(), ControlConfig::default());
    let access = Access::new(TOKEN, reads_need_token, Some("hook-secret"));
    let router = agents
        .router()
        .merge(berth::server::api::router(plane.clone(), access.clone()))
        .merge(berth::server::ui::router(plane.clone(), access));
    let shutdown = tokio_util::sync::CancellationToken::new();
    tokio::spawn(control::run(plane.clone(), shutdown.clone()));
    let mut updates = plane.status.subscribe();
    tokio::time::timeout(Duration::from_secs(30), async {
        while updates.borrow_and_update().workloads.is_empty() {
            updates.changed().await.unwrap();
        }
    })
    .await
    .expect("the control loop to take the commit");
    (Served { router, plane, shutdown, _db: db, sha }, repo)
}

async fn call(router: &Router, request: Request<Body>) -> (StatusCode, String, axum::http::HeaderMap) {
    let response = router.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let body = axum::body::to_bytes(response.into_body(), 16 << 20).await.unwrap();
    (status, String::from_utf8_lossy(&body).into_owned(), headers)
}

async fn get(router: &Router, path: &str) -> (StatusCode, String) {
    let (status, body, _) = call(router, Request::get(path).body(Body::empty()).unwrap()).await;
    (status, body)
}

async fn get_with(router: &Router, path: &str, token: &str) -> (StatusCode, String) {
    let request = Request::get(path).header("authorization", format!("Bearer {token}")).body(Body::empty()).unwrap();
    let (status, body, _) = call(router, request).await;
    (status, body)
}

fn post(path: &str, body: &str, token: Option<&str>, form: bool) -> Request<Body> {
    let mut request = Request::post(path)
        .header("content-type", if form { "application/x-www-form-urlencoded" } else { "application/json" });
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    request.body(Body::from(body.to_owned())).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn every_page_and_api_route_answers_without_a_secret() {
    let (served, _repo) = serve(false).await;
    let short = &served.sha[..7];
    let pages = [
        ("/", vec!["<h1>Overview</h1>", "Unknown", "no node is Ready", short, "is being applied. Plan: 4 to create"]),
        ("/workloads", vec!["<table>", "web", "Deployment", "shop"]),
        ("/workloads?namespace=shop&status=Unknown", vec!["<a href=\"/workloads/deployment/shop/web\">web</a>"]),
        ("/workloads?namespace=nowhere", vec!["No workload matches."]),
        (
            "/workloads/deployment/shop/web",
            vec!["Deployment shop/web", "History", "started rolling out", "Last change", "RolloutStarted"],
        ),
        ("/plan", vec!["Plan: 4 to create", "+ create Deployment shop/web", "password: (sensitive)"]),
        ("/syncs", vec![short, "progressing", "/syncs/"]),
        (&format!("/syncs/{}", served.sha), vec!["Plan: 4 to create"]),
        ("/nodes", vec!["No node has joined"]),
        ("/services", vec!["NodePort", "80 → 8080 (node port 30080)/TCP", "0/0"]),
        ("/volumes", vec!["<h1>Volumes</h1>", "No claim yet"]),
        ("/audit", vec!["<h1>Audit</h1>", "Nothing has been done yet"]),
    ];
    for (path, expected) in &pages {
        let (status, body) = get(&served.router, path).await;
        assert_eq!(status, StatusCode::OK, "{path}: {body}");
        assert!(body.starts_with("<!doctype html>") && body.contains("<main id=\"main\""), "{path} is not a full page");
        assert!(body.contains("aria-current=\"page\""), "{path} marks no section as current");
        for text in expected {
            assert!(body.contains(text), "{path} lacks {text:?}:\n{body}");
        }
        assert!(!body.contains(SECRET_VALUE), "{path} shows the secret value");
        assert!(!body.contains("<script>alert(1)</script>"), "{path} does not escape a commit message");
        // The fragment live.js asks for is the page's <main> alone.
        let request = Request::get(*path).header("x-berth-fragment", "1").body(Body::empty()).unwrap();
        let (status, fragment, _) = call(&served.router, request).await;
        assert_eq!(status, StatusCode::OK);
        assert!(fragment.trim_start().starts_with("<h1>") && !fragment.contains("<html"), "{path} fragment");
    }
    let (status, css) = get(&served.router, "/ui/style.css").await;
    assert!(status == StatusCode::OK && css.contains(".badge"));
    let (status, js) = get(&served.router, "/ui/live.js").await;
    assert!(status == StatusCode::OK && js.contains("EventSource"));

    let api = [
        "/api/v1/status",
        "/api/v1/workloads",
        "/api/v1/workloads/deployment/shop/web",
        "/api/v1/workloads/deploy/shop/web/history",
        "/api/v1/pods",
        "/api/v1/nodes",
        "/api/v1/pvcs",
        "/api/v1/services",
        "/api/v1/syncs",
        &format!("/api/v1/syncs/{short}"),
        "/api/v1/plan",
        &format!("/api/v1/plan?rev={short}"),
    ];
    for path in api {
        let (status, body) = get(&served.router, path).await;
        assert_eq!(status, StatusCode::OK, "{path}: {body}");
        let json: serde_json::Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}"));
        assert!(!json.is_null());
        assert!(!body.contains(SECRET_VALUE), "{path} answers the secret value");
    }
    let (status, body) = get(&served.router, "/api/v1/workloads/secret/shop/creds").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(body.contains("is not a workload kind"), "{body}");
    let (status, _) = get(&served.router, "/api/v1/syncs/0000000").await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Changes need the token; a wrong one is refused the same way.
    let approve = format!("/api/v1/syncs/{}/approve", served.sha);
    for token in [None, Some("wrong")] {
        let (status, body, _) = call(&served.router, post(&approve, "{}", token, false)).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
        let rollback = post("/api/v1/workloads/deployment/shop/web/rollback", "{}", token, false);
        assert_eq!(call(&served.router, rollback).await.0, StatusCode::UNAUTHORIZED);
        let form = post(&format!("/ui/syncs/{}/approve", served.sha), "token=wrong&state_index=0", None, true);
        assert_eq!(call(&served.router, form).await.0, StatusCode::UNAUTHORIZED);
    }
    // Each refusal is in the audit log: the API's and the page's.
    let (_, log) = get_with(&served.router, "/api/v1/audit", TOKEN).await;
    let refused = log.matches("refused (401)").count();
    assert_eq!(refused, 2 * 3, "{log}");
    assert!(log.contains("(no token)") && log.contains("(a wrong token)"), "{log}");
    // Deleting a claim needs the token; with it, an unknown claim is not found.
    let delete = |token: Option<&str>| {
        let mut request = Request::delete("/api/v1/pvcs/shop/data-db-0");
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        request.body(Body::empty()).unwrap()
    };
    assert_eq!(call(&served.router, delete(None)).await.0, StatusCode::UNAUTHORIZED);
    let (status, body, _) = call(&served.router, delete(Some(TOKEN))).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert!(body.contains("no claim shop/data-db-0"), "{body}");
    // With the token: this commit is not waiting, and there is no earlier revision.
    let (status, body, _) = call(&served.router, post(&approve, "{}", Some(TOKEN), false)).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(body.contains("is not waiting for approval"), "{body}");
    let rollback = post("/api/v1/workloads/deployment/shop/web/rollback", "{}", Some(TOKEN), false);
    let (status, body, _) = call(&served.router, rollback).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(body.contains("no earlier healthy revision"), "{body}");
    // A webhook without a signature fetches nothing.
    let (status, _, _) = call(&served.router, post("/api/v1/webhooks/git", "{}", None, false)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // The agent API takes no user token.
    let heartbeat = r#"{"address": "127.0.0.1", "labels": {}, "capacity": {"cpuMillis": 1, "memoryBytes": 1}, "allocatable": {"cpuMillis": 1, "memoryBytes": 1}}"#;
    let (status, _, _) =
        call(&served.router, post("/api/v1/agent/nodes/x/heartbeat", heartbeat, Some(TOKEN), false)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    drop(served.plane.status.subscribe());
}

#[tokio::test(flavor = "multi_thread")]
async fn off_loopback_every_read_needs_the_token() {
    let (served, _repo) = serve(true).await;
    let (status, _, headers) = call(&served.router, Request::get("/").body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(headers["location"], "/ui/login");
    let (status, _) = get(&served.router, "/api/v1/status").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, form) = get(&served.router, "/ui/login").await;
    assert!(status == StatusCode::OK && form.contains("type=\"password\""));

    let (status, _, headers) = call(&served.router, post("/ui/login", "token=wrong", None, true)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(!headers.contains_key("set-cookie"));
    let (status, _, headers) = call(&served.router, post("/ui/login", &format!("token={TOKEN}"), None, true)).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let cookie = headers["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_owned();
    assert!(headers["set-cookie"].to_str().unwrap().contains("HttpOnly"));
    let request = Request::get("/workloads").header("cookie", &cookie).body(Body::empty()).unwrap();
    let (status, body, _) = call(&served.router, request).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // Signed in, the plan's Approve acts as that token when its field is left empty.
    let request = Request::get("/plan").header("cookie", &cookie).body(Body::empty()).unwrap();
    let (status, body, _) = call(&served.router, request).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let approve = |cookie: Option<&str>| {
        let mut request = Request::post(format!("/ui/syncs/{}/approve", served.sha))
            .header("content-type", "application/x-www-form-urlencoded");
        if let Some(cookie) = cookie {
            request = request.header("cookie", cookie);
        }
        request.body(Body::from("token=&state_index=0")).unwrap()
    };
    assert_eq!(call(&served.router, approve(None)).await.0, StatusCode::UNAUTHORIZED);
    let (status, body, _) = call(&served.router, approve(Some(&cookie))).await;
    assert_eq!(status, StatusCode::CONFLICT, "the signed-in token was used: {body}");
    let (_, log) = get_with(&served.router, "/api/v1/audit", TOKEN).await;
    assert!(log.contains("\"who\":\"admin\",\"action\":\"approve\""), "{log}");
    let request =
        Request::get("/api/v1/status").header("authorization", format!("Bearer {TOKEN}")).body(Body::empty()).unwrap();
    assert_eq!(call(&served.router, request).await.0, StatusCode::OK);
}

#[test]
fn times_and_commit_links_read_well() {
    use berth::server::ui::{ago, commit_url, escape, exact};
    assert_eq!(exact(0), "1970-01-01 00:00:00 UTC");
    assert_eq!(exact(1_795_316_045), "2026-11-22 02:54:05 UTC");
    assert_eq!(exact(951_782_400), "2000-02-29 00:00:00 UTC");
    assert_eq!(ago(100, 130), "30 s ago");
    assert_eq!(ago(0, 180), "3 min ago");
    assert_eq!(ago(0, 3 * 3600), "3 h ago");
    assert_eq!(ago(0, 5 * 86_400), "5 days ago");
    let sha = "0123456789abcdef0123456789abcdef01234567";
    assert_eq!(
        commit_url("https://github.com/acme/shop.git", sha).as_deref(),
        Some("https://github.com/acme/shop/commit/0123456789abcdef0123456789abcdef01234567")
    );
    assert_eq!(
        commit_url("git@gitlab.com:acme/shop.git", sha).as_deref(),
        Some("https://gitlab.com/acme/shop/-/commit/0123456789abcdef0123456789abcdef01234567")
    );
    assert_eq!(commit_url("/srv/git/shop", sha), None);
    assert_eq!(commit_url("https://git.internal.example/acme/shop", sha), None);
    assert_eq!(escape("<a href=\"x\">&'"), "&lt;a href=&quot;x&quot;&gt;&amp;&#39;");
}

/// Who must hold what for a route: the least role, and how namespaces bound it.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Scope {
    /// A list: filtered to the caller's namespaces.
    List,
    /// One object read by namespace: another namespace answers as a missing one does.
    Object,
    /// An action in a namespace: 403 outside the caller's, whether the object exists or not.
    Act,
    /// Spans every namespace: 403 for a token kept to some.
    Cluster,
}

/// One request with a bearer token: its status and body.
async fn send(router: &Router, method: &str, path: &str, body: &str, token: &str) -> (StatusCode, String) {
    let request = Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {token}"))
        .body(Body::from(body.to_owned()))
        .unwrap();
    let response = router.clone().oneshot(request).await.unwrap();
    let status = response.status();
    // A watch streams for ever: its status is enough.
    if path.contains("/watch/") && status == StatusCode::OK {
        return (status, String::new());
    }
    let bytes = axum::body::to_bytes(response.into_body(), 16 << 20).await.unwrap();
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

/// Issue 22: every route of the user API, for each role, kept to the namespace `shop` or not,
/// asked about `shop` (allowed) and `bank` (forbidden).
#[tokio::test(flavor = "multi_thread")]
async fn every_route_answers_each_role_in_an_allowed_and_a_forbidden_namespace() {
    let (served, _repo) = serve_with(true, |repo| {
        repo.write("ns-bank.yaml", "apiVersion: v1\nkind: Namespace\nmetadata: {name: bank}\n");
        repo.write("bank.yaml", &crate::images::deployment("web", Some("bank"), 1, "v1", None));
    })
    .await;
    let router = &served.router;
    // Tokens for each role, kept to shop or not, made by the built-in admin.
    let mut tokens = Vec::new();
    for role in ["viewer", "deployer", "admin"] {
        for kept in [true, false] {
            let name = format!("{role}-{}", if kept { "shop" } else { "all" });
            let body = serde_json::json!({
                "name": name, "role": role, "namespaces": if kept { vec!["shop"] } else { vec![] },
            });
            let (status, made) = send(router, "POST", "/api/v1/tokens", &body.to_string(), TOKEN).await;
            assert_eq!(status, StatusCode::CREATED, "{made}");
            let made: serde_json::Value = serde_json::from_str(&made).unwrap();
            tokens.push((role, kept, made["token"].as_str().unwrap().to_owned()));
        }
    }
    let rank = |role: &str| ["viewer", "deployer", "admin"].iter().position(|r| *r == role).unwrap();

    let sha = served.sha.clone();
    let routes: Vec<(&str, String, &str, &str, Scope)> = vec![
        ("GET", "/api/v1/status".into(), "", "viewer", Scope::Cluster),
        ("GET", "/metrics".into(), "", "viewer", Scope::Cluster),
        ("GET", "/api/v1/workloads".into(), "", "viewer", Scope::List),
        ("GET", "/api/v1/workloads/deployment/{ns}/web".into(), "", "viewer", Scope::Object),
        ("GET", "/api/v1/workloads/deployment/{ns}/web/history".into(), "", "viewer", Scope::Object),
        ("POST", "/api/v1/workloads/deployment/{ns}/web/rollback".into(), r#"{"dryRun":true}"#, "deployer", Scope::Act),
        ("POST", "/api/v1/workloads/deployment/{ns}/nothing/rollback".into(), "{}", "deployer", Scope::Act),
        ("GET", "/api/v1/jobs".into(), "", "viewer", Scope::List),
        ("GET", "/api/v1/cronjobs".into(), "", "viewer", Scope::List),
        ("POST", "/api/v1/cronjobs/{ns}/nightly/run".into(), r#"{"name":"now"}"#, "deployer", Scope::Act),
        ("GET", "/api/v1/pods".into(), "", "viewer", Scope::List),
        ("GET", "/api/v1/pods/{ns}/web-0".into(), "", "viewer", Scope::Object),
        ("GET", "/api/v1/pods/{ns}/web-0/logs".into(), "", "deployer", Scope::Act),
        ("POST", "/api/v1/pods/{ns}/web-0/exec".into(), r#"{"command":["true"]}"#, "admin", Scope::Act),
        ("GET", "/api/v1/pods/{ns}/web-0/exec?command=%5B%22sh%22%5D".into(), "", "admin", Scope::Act),
        ("GET", "/api/v1/pods/{ns}/web-0/portforward?port=80".into(), "", "admin", Scope::Act),
        ("GET", "/api/v1/nodes".into(), "", "viewer", Scope::Cluster),
        ("GET", "/api/v1/pvcs".into(), "", "viewer", Scope::List),
        ("DELETE", "/api/v1/pvcs/{ns}/data".into(), "", "deployer", Scope::Act),
        ("GET", "/api/v1/events".into(), "", "viewer", Scope::List),
        ("GET", "/api/v1/watch/workloads".into(), "", "viewer", Scope::List),
        ("GET", "/api/v1/watch/nodes".into(), "", "viewer", Scope::Cluster),
        ("GET", "/api/v1/top/pods".into(), "", "viewer", Scope::List),
        ("GET", "/api/v1/top/nodes".into(), "", "viewer", Scope::Cluster),
        ("GET", "/api/v1/services".into(), "", "viewer", Scope::List),
        ("GET", "/api/v1/syncs".into(), "", "viewer", Scope::Cluster),
        ("GET", format!("/api/v1/syncs/{sha}"), "", "viewer", Scope::Cluster),
        ("POST", format!("/api/v1/syncs/{sha}/approve"), r#"{"stateIndex":-1}"#, "deployer", Scope::Cluster),
        ("GET", "/api/v1/plan".into(), "", "viewer", Scope::Cluster),
        ("GET", "/api/v1/tokens".into(), "", "admin", Scope::Cluster),
        ("POST", "/api/v1/tokens".into(), r#"{"name":"bad name","role":"viewer"}"#, "admin", Scope::Cluster),
        ("DELETE", "/api/v1/tokens/nobody".into(), "", "admin", Scope::Cluster),
        ("GET", "/api/v1/audit".into(), "", "admin", Scope::Cluster),
    ];
    let mut checked = 0;
    for (method, path, body, least, scope) in &routes {
        for (role, kept, token) in &tokens {
            for ns in ["shop", "bank"] {
                let path = path.replace("{ns}", ns);
                let (status, answer) = send(router, method, &path, body, token).await;
                let case = format!("{method} {path} as {role} (kept to shop: {kept}): {status} {answer}");
                checked += 1;
                if rank(role) < rank(least) {
                    assert_eq!(status, StatusCode::FORBIDDEN, "{case}");
                    assert!(answer.contains(&format!("is a {role}")), "{case}");
                    continue;
                }
                let allowed = !matches!(status, StatusCode::FORBIDDEN | StatusCode::UNAUTHORIZED);
                match scope {
                    Scope::Cluster => assert_eq!(allowed, !kept, "{case}"),
                    Scope::Act => assert_eq!(allowed, !*kept || ns == "shop", "{case}"),
                    Scope::List => {
                        assert_eq!(status, StatusCode::OK, "{case}");
                        assert!(!(*kept && answer.contains("\"namespace\":\"bank\"")), "{case}");
                    }
                    Scope::Object if *kept && ns == "bank" => {
                        // As for a namespace that does not exist.
                        let missing = path.replace("/bank/", "/nowhere/");
                        let (status_missing, answer_missing) = send(router, method, &missing, body, token).await;
                        assert_eq!(
                            (status, answer.replace("bank", "nowhere")),
                            (status_missing, answer_missing),
                            "{case}"
                        );
                    }
                    Scope::Object => assert!(allowed, "{case}"),
                }
            }
        }
    }
    assert_eq!(checked, routes.len() * tokens.len() * 2);
    // The lists a token kept to shop gets do have bank's objects for one that sees all.
    let all = &tokens.iter().find(|t| t.0 == "viewer" && !t.1).unwrap().2;
    let (_, workloads) = send(router, "GET", "/api/v1/workloads", "", all).await;
    assert!(workloads.contains("\"namespace\":\"bank\"") && workloads.contains("\"namespace\":\"shop\""));

    // A revoked token stops at once; a wrong one and none are 401.
    let (status, _) = send(router, "DELETE", "/api/v1/tokens/viewer-all", "", TOKEN).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(send(router, "GET", "/api/v1/workloads", "", all).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(send(router, "GET", "/api/v1/workloads", "", "berth_wrong").await.0, StatusCode::UNAUTHORIZED);
    // Names are not reused, and listing never shows a token.
    let again = serde_json::json!({ "name": "viewer-all", "role": "viewer" }).to_string();
    assert_eq!(send(router, "POST", "/api/v1/tokens", &again, TOKEN).await.0, StatusCode::CONFLICT);
    let (_, listed) = send(router, "GET", "/api/v1/tokens", "", TOKEN).await;
    assert!(tokens.iter().all(|(_, _, token)| !listed.contains(token.as_str())), "{listed}");
    assert!(listed.contains("\"revokedAt\":"), "{listed}");
    // The audit log names who made and revoked tokens.
    let (_, log) = send(router, "GET", "/api/v1/audit", "", TOKEN).await;
    let log: serde_json::Value = serde_json::from_str(&log).unwrap();
    let entries: Vec<(String, String, String)> = log
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            let text = |key: &str| a[key].as_str().unwrap().to_owned();
            (text("who"), text("action"), text("outcome"))
        })
        .collect();
    let count = |action: &str, outcome: &dyn Fn(&str) -> bool| {
        entries.iter().filter(|(_, a, o)| a == action && outcome(o)).count()
    };
    assert!(entries.iter().any(|(who, action, _)| who == "admin" && action == "token-revoke"), "{log:#}");
    assert_eq!(count("token-create", &|o| o == "ok"), 6, "{log:#}");
    // Allowed but failed: the bad name, asked twice by the admin that sees all, and the reused name.
    assert_eq!(count("token-create", &|o| o != "ok" && !o.starts_with("refused")), 2 + 1, "{log:#}");
    // Refused, with who asked: the viewers and deployers (by role), the admin kept to shop
    // (by namespace), each asked twice.
    assert_eq!(count("token-create", &|o| o.starts_with("refused (403)")), 10, "{log:#}");
    let refused_rollback = entries.iter().find(|(who, action, outcome)| {
        who == "viewer-shop" && action == "rollback" && outcome.starts_with("refused (403)")
    });
    assert!(refused_rollback.is_some_and(|r| r.2.contains("is a viewer")), "{log:#}");
    // A wrong token is refused and recorded as such.
    assert_eq!(send(router, "POST", "/api/v1/syncs/x/approve", "{}", "berth_nope").await.0, StatusCode::UNAUTHORIZED);
    let (_, log) = send(router, "GET", "/api/v1/audit", "", TOKEN).await;
    assert!(log.contains("(a wrong token)") && log.contains("refused (401)"), "{log}");
    // The UI's audit page is an admin's; the web UI as a whole is for tokens that see everything.
    let page = |token: String| {
        Request::get("/audit").header("authorization", format!("Bearer {token}")).body(Body::empty()).unwrap()
    };
    let (status, html, _) = call(router, page(TOKEN.to_owned())).await;
    assert!(status == StatusCode::OK && html.contains("token-revoke") && html.contains("viewer-all"), "{html}");
    let deployer = tokens.iter().find(|t| t.0 == "deployer" && !t.1).unwrap().2.clone();
    let (status, html, _) = call(router, page(deployer)).await;
    assert!(status == StatusCode::FORBIDDEN && html.contains("this page needs the role admin"), "{html}");
    let kept = tokens.iter().find(|t| t.0 == "viewer" && t.1).unwrap().2.clone();
    let request =
        Request::get("/workloads").header("authorization", format!("Bearer {kept}")).body(Body::empty()).unwrap();
    let (status, html, _) = call(router, request).await;
    assert!(status == StatusCode::FORBIDDEN && html.contains("spans every namespace"), "{html}");
}
