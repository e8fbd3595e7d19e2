//! Test images, built on this machine: nothing is pulled from a registry. Shared by the tests
//! and the agent benchmark.

use berth::manifest::types::Container;
use berth::nodes::docker::Docker;
use berth::nodes::runtime::ContainerRuntime;
use berth::nodes::tar::{TarEntry, TarFile, archive};

/// Debian's static busybox with the tools the tests use, imported as an image. Its tag is a
/// digest of the archive, so a changed image is a new image, never a stale one.
const REPOSITORY: &str = "berth-test/busybox";

const TOOLS: [&str; 18] = [
    "sh", "sleep", "httpd", "nc", "cat", "echo", "wget", "ls", "test", "true", "false", "mkdir", "rm", "kill", "touch",
    "stty", "yes", "head",
];

fn rootfs() -> &'static (String, Vec<u8>) {
    static ROOTFS: std::sync::OnceLock<(String, Vec<u8>)> = std::sync::OnceLock::new();
    ROOTFS.get_or_init(|| {
        let busybox = std::fs::read("/bin/busybox")
            .expect("/bin/busybox is missing: install Debian's busybox-static (test.sh does)");
        let links: Vec<String> = TOOLS.iter().map(|t| format!("bin/{t}")).collect();
        let mut entries = vec![
            TarEntry::Dir { path: "tmp", mode: 0o1777 },
            TarEntry::Dir { path: "bin", mode: 0o755 },
            TarEntry::File(TarFile { path: "bin/busybox", mode: 0o755, contents: &busybox }),
        ];
        entries.extend(links.iter().map(|path| TarEntry::Symlink { path, target: "busybox" }));
        let rootfs = archive(&entries);
        (format!("{REPOSITORY}:{}", &berth::manifest::hex_digest(&rootfs)[..12]), rootfs)
    })
}

/// The test image's name.
pub fn busybox() -> &'static str {
    &rootfs().0
}

/// Imports the test image unless it is present.
pub async fn import_busybox(docker: &Docker) {
    let (name, rootfs) = rootfs();
    docker.import_image(name, rootfs.clone(), &["sh"]).await.expect("import the busybox test image");
}

/// A container of the test image running `sh -c script`.
pub fn container(name: &str, script: &str) -> Container {
    Container {
        name: name.to_owned(),
        image: busybox().to_owned(),
        command: vec!["sh".to_owned(), "-c".to_owned(), script.to_owned()],
        args: Vec::new(),
        working_dir: None,
        env: Vec::new(),
        env_from: Vec::new(),
        ports: Vec::new(),
        resources: None,
        startup_probe: None,
        liveness_probe: None,
        readiness_probe: None,
        volume_mounts: Vec::new(),
        security_context: None,
        lifecycle: None,
        restart_policy: None,
    }
}

/// A Deployment of the test image whose pods turn ready once they have written `version`:
/// `name` in `namespace` (the default one when `None`), with an optional maxSurge and
/// maxUnavailable.
pub fn deployment(
    name: &str,
    namespace: Option<&str>,
    replicas: u32,
    version: &str,
    limits: Option<(u32, u32)>,
) -> String {
    let image = busybox();
    let namespace = namespace.map(|n| format!("\n  namespace: {n}")).unwrap_or_default();
    let strategy = limits
        .map(|(surge, unavailable)| {
            format!("\n  strategy:\n    rollingUpdate: {{maxSurge: {surge}, maxUnavailable: {unavailable}}}")
        })
        .unwrap_or_default();
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}{namespace}
spec:
  replicas: {replicas}
  selector:
    matchLabels: {{app: {name}}}{strategy}
  template:
    metadata:
      labels: {{app: {name}}}
    spec:
      terminationGracePeriodSeconds: 0
      containers:
        - name: {name}
          image: {image}
          command: ["sh", "-c", "echo {version} > /tmp/version; exec sleep 3600"]
          readinessProbe:
            exec: {{command: ["cat", "/tmp/version"]}}
            periodSeconds: 1
"#
    )
}
