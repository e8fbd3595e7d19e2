//! Test images, built on this machine: nothing is pulled from a registry. Shared by the tests
//! and the agent benchmark.

use berth::nodes::docker::Docker;
use berth::nodes::runtime::ContainerRuntime;
use berth::nodes::tar::{TarEntry, TarFile, archive};

/// Debian's static busybox with the tools the tests use, imported as an image.
pub const BUSYBOX: &str = "berth-test/busybox:1.35";

pub async fn import_busybox(docker: &Docker) {
    let busybox =
        std::fs::read("/bin/busybox").expect("/bin/busybox is missing: install Debian's busybox-static (test.sh does)");
    let tools = [
        "sh", "sleep", "httpd", "nc", "cat", "echo", "wget", "ls", "test", "true", "false", "mkdir", "rm", "kill",
        "touch",
    ];
    let links: Vec<String> = tools.iter().map(|t| format!("bin/{t}")).collect();
    let mut entries = vec![TarEntry::File(TarFile { path: "bin/busybox", mode: 0o755, contents: &busybox })];
    entries.extend(links.iter().map(|path| TarEntry::Symlink { path, target: "busybox" }));
    docker.import_image(BUSYBOX, archive(&entries), &["sh"]).await.expect("import the busybox test image");
}
