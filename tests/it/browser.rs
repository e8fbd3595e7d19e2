//! The web UI in a real headless browser: Debian's chromium driven through chromium-driver
//! (WebDriver over HTTP on 127.0.0.1), looking at a running `berth up` with real pods.

use crate::agent::{TestNode, docker, wait_for};
use crate::server::{Process, free_port, terminate};
use crate::support::TestRepo;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(90);
/// The W3C WebDriver key of an element reference.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A WebDriver session on a chromedriver of our own, ended and stopped on drop.
struct Browser {
    http: reqwest::Client,
    base: String,
    _driver: Process,
}

impl Browser {
    async fn start() -> Browser {
        let port = free_port();
        let driver = Command::new("chromedriver")
            .args([format!("--port={port}"), "--allowed-ips=127.0.0.1".to_owned()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver is missing: install Debian's chromium and chromium-driver (test.sh does)");
        let http = reqwest::Client::new();
        let root = format!("http://127.0.0.1:{port}");
        wait_for("chromedriver to listen", LIMIT, || async { http.get(format!("{root}/status")).send().await.is_ok() })
            .await;
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         "--window-size=1200,900", "--no-first-run", "--no-default-browser-check"]
            }
        }}});
        let session: Value =
            http.post(format!("{root}/session")).json(&capabilities).send().await.unwrap().json().await.unwrap();
        let id = session["value"]["sessionId"].as_str().unwrap_or_else(|| panic!("no session: {session}")).to_owned();
        Browser { http, base: format!("{root}/session/{id}"), _driver: Process(driver) }
    }

    async fn command(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let answer: Value = request.send().await.unwrap().json().await.unwrap();
        answer["value"].clone()
    }

    async fn open(&self, url: &str) {
        self.command(reqwest::Method::POST, "/url", Some(json!({"url": url}))).await;
    }

    /// Runs `script` in the page and returns what it returns.
    async fn run(&self, script: &str) -> Value {
        self.command(reqwest::Method::POST, "/execute/sync", Some(json!({"script": script, "args": []}))).await
    }

    async fn text(&self, selector: &str) -> String {
        let found = self
            .command(reqwest::Method::POST, "/element", Some(json!({"using": "css selector", "value": selector})))
            .await;
        let Some(element) = found[ELEMENT].as_str() else { return String::new() };
        self.command(reqwest::Method::GET, &format!("/element/{element}/text"), None)
            .await
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    async fn screenshot(&self, path: &Path) {
        let encoded = self.command(reqwest::Method::GET, "/screenshot", None).await;
        let png = decode_base64(encoded.as_str().expect("a screenshot"));
        assert!(png.starts_with(b"\x89PNG"), "the screenshot is not a PNG");
        std::fs::write(path, png).unwrap();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Ending the session closes chromium; the driver process is killed after. Drop runs
        // inside the test's runtime, so the request goes from a thread of its own.
        let url = self.base.clone();
        let _ = std::thread::spawn(move || {
            if let Ok(runtime) = tokio::runtime::Builder::new_current_thread().enable_all().build() {
                runtime.block_on(async {
                    let _ = reqwest::Client::new().delete(&url).send().await;
                });
            }
        })
        .join();
    }
}

fn decode_base64(text: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    };
    let digits: Vec<u8> = text.bytes().filter_map(value).collect();
    let mut out = Vec::with_capacity(digits.len() * 3 / 4);
    for chunk in digits.chunks(4) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, d)| n | (u32::from(*d) << (18 - 6 * i)));
        let bytes = n.to_be_bytes();
        out.extend_from_slice(&bytes[1..chunk.len()]);
    }
    out
}

/// Where the screenshots go: the test's output folder under the target directory.
fn output_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("ui-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn app(version: &str, min_ready: u32) -> String {
    crate::images::deployment("web", Some("shop"), 2, version, Some((1, 0)))
        .replace("  replicas: 2\n", &format!("  replicas: 2\n  minReadySeconds: {min_ready}\n"))
}

#[tokio::test(flavor = "multi_thread")]
async fn the_ui_follows_a_commit_live_in_a_real_browser() {
    docker().await;
    let mut repo = TestRepo::new();
    repo.write("ns.yaml", "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n");
    repo.write("web.yaml", &app("v1", 0));
    repo.write(
        "svc.yaml",
        "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: shop}\nspec:\n  selector: {app: web}\n  ports: [{port: 80}]\n",
    );
    let image = crate::images::busybox();
    repo.write(
        "ticker.yaml",
        &format!(
            "apiVersion: v1
kind: Pod
metadata: {{name: ticker, namespace: shop}}
spec:
  terminationGracePeriodSeconds: 0
  containers:
    - name: ticker
      image: {image}
      command: [sh, -c, 'i=0; while true; do i=$((i+1)); echo tick $i; sleep 1; done']
"
        ),
    );
    repo.commit("shop v1");
    let node = TestNode::new("ui");
    let listen = format!("127.0.0.1:{}", free_port());
    let up = Process(
        Command::new(env!("CARGO_BIN_EXE_berth"))
            .args(["up", "--listen", &listen, "--name", &node.name])
            .arg(repo.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let browser = Browser::start().await;
    let root = format!("http://{listen}");
    wait_for("berth up to answer", LIMIT, || async { reqwest::get(format!("{root}/")).await.is_ok() }).await;
    browser.open(&format!("{root}/")).await;
    wait_for("the overview to say Synced and Healthy", LIMIT, || async {
        browser.text(".summary .badge[title=sync]").await == "Synced"
            && browser.text(".summary .badge[title=health]").await == "Healthy"
    })
    .await;
    assert!(browser.text("main").await.contains("shop v1"), "the overview names the applied commit");
    // A mark in the page: it survives only if the page is never reloaded.
    browser.run("window.berthMark = 'still here'; return true;").await;

    // A new commit: the same page turns Progressing, then Synced, on its own.
    repo.write("web.yaml", &app("v2", 3));
    repo.commit("shop v2");
    wait_for("the overview to say Progressing", LIMIT, || async {
        browser.text(".summary .badge[title=health]").await == "Progressing"
    })
    .await;
    wait_for("the overview to say Synced again", LIMIT, || async {
        browser.text(".summary .badge[title=sync]").await == "Synced"
            && browser.text(".summary .badge[title=health]").await == "Healthy"
            && browser.text("main").await.contains("shop v2")
    })
    .await;
    assert_eq!(browser.run("return window.berthMark;").await, "still here", "the page was reloaded");
    let dir = output_dir();
    browser.screenshot(&dir.join("overview.png")).await;

    // The plan page shows the diff of the last commit.
    browser.open(&format!("{root}/plan")).await;
    let plan = browser.text("main").await;
    assert!(plan.contains("~ update Deployment shop/web"), "{plan}");
    assert!(plan.contains("echo v2 > /tmp/version") && plan.contains("minReadySeconds: 3"), "{plan}");
    let added = browser.run("return document.querySelectorAll('pre.diff .add').length;").await;
    assert!(added.as_u64().unwrap_or(0) >= 2, "additions are marked: {added}");

    // A workload page: pods per node, history by commit.
    browser.open(&format!("{root}/workloads/deployment/shop/web")).await;
    let page = browser.text("main").await;
    assert!(page.contains(&node.name) && page.contains("shop v2") && page.contains("healthy"), "{page}");
    let removed = browser
        .run("return Array.from(document.querySelectorAll('pre.diff .del')).map(e => e.textContent.trim());")
        .await;
    assert_eq!(
        removed,
        json!(["-            - echo v1 > /tmp/version; exec sleep 3600", "-  minReadySeconds: 0"]),
        "only the changed lines are marked removed, not YAML list items"
    );
    browser.screenshot(&dir.join("workload.png")).await;
    // At phone width nothing spills out sideways but the tables' own scroll boxes.
    browser.command(reqwest::Method::POST, "/window/rect", Some(json!({"width": 390, "height": 844}))).await;
    let overflow = browser.run("return document.documentElement.scrollWidth <= window.innerWidth + 1;").await;
    assert_eq!(overflow, true, "the workload page scrolls sideways at phone width");
    browser.screenshot(&dir.join("workload-phone.png")).await;

    browser.command(reqwest::Method::POST, "/window/rect", Some(json!({"width": 1200, "height": 900}))).await;

    // A pod's page: its containers and events, and its log following live, with a pause.
    browser.open(&format!("{root}/pods/shop/ticker")).await;
    let page = browser.text("main").await;
    assert!(page.contains("Containers") && page.contains("Scheduled"), "{page}");
    let ticks = || async {
        let text = browser.run("return document.getElementById('log').textContent;").await;
        text.as_str()
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.strip_prefix("tick ")?.parse::<u64>().ok())
            .collect::<Vec<u64>>()
    };
    let shown = ticks().await.len();
    wait_for("new lines to show without a reload", LIMIT, || async { ticks().await.len() >= shown + 3 }).await;
    browser.run("document.getElementById('log-pause').click(); return true;").await;
    let paused = ticks().await;
    wait_for("the held-back count while paused", LIMIT, || async {
        browser.text("#log-note").await.contains("new lines held back")
    })
    .await;
    assert_eq!(ticks().await, paused, "a paused log shows nothing new");
    browser.run("document.getElementById('log-pause').click(); return true;").await;
    wait_for("the held lines after Resume", LIMIT, || async { ticks().await.len() > paused.len() + 1 }).await;
    let seen = ticks().await;
    let first = seen[0];
    assert_eq!(seen, (first..first + seen.len() as u64).collect::<Vec<_>>(), "every line once, in order");
    browser.screenshot(&dir.join("pod.png")).await;

    // The container's next attempt follows on the same page.
    let container = String::from_utf8(
        Command::new("docker")
            .args([
                "ps",
                "-q",
                "--filter",
                "label=berth.dev/pod=ticker",
                "--filter",
                "label=berth.dev/container=ticker",
            ])
            .args(["--filter", &format!("label=berth.dev/node={}", node.name)])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let container = container.trim();
    assert!(!container.is_empty(), "the ticker's container runs");
    let before = ticks().await.len();
    assert!(Command::new("docker").args(["kill", container]).status().unwrap().success());
    wait_for("the next attempt's first lines", LIMIT, || async {
        let now = ticks().await;
        now.len() > before && now[before..].contains(&1)
    })
    .await;

    terminate(&up.0);
    drop(up);
}
