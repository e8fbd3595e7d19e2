//! Helpers shared by the integration tests: real Git repositories in temporary folders, the
//! real `berth` binary, and snapshot files updated with `UPDATE_EXPECT=1`.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A Git repository in a temporary folder. Commits carry a fixed author and time, so their
/// shas are the same on every run and can appear in snapshots.
pub struct TestRepo {
    pub dir: tempfile::TempDir,
    pub repo: git2::Repository,
    tick: i64,
}

impl TestRepo {
    pub fn new() -> TestRepo {
        let dir = tempfile::tempdir().expect("temp dir");
        let repo = git2::Repository::init(dir.path()).expect("git init");
        repo.set_head("refs/heads/main").expect("set HEAD");
        TestRepo { dir, repo, tick: 0 }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn write(&self, relative: &str, text: &str) -> &Self {
        let path = self.dir.path().join(relative);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(path, text).expect("write");
        self
    }

    /// Removes every file but `.git`, to lay a new state out.
    pub fn clear(&self) -> &Self {
        for entry in std::fs::read_dir(self.dir.path()).expect("read dir") {
            let entry = entry.expect("entry");
            if entry.file_name() == ".git" {
                continue;
            }
            let path = entry.path();
            if path.is_dir() {
                std::fs::remove_dir_all(path).expect("rm dir");
            } else {
                std::fs::remove_file(path).expect("rm");
            }
        }
        self
    }

    /// Commits the whole work tree (additions, changes, deletions); returns the sha.
    pub fn commit(&mut self, message: &str) -> String {
        let mut index = self.repo.index().expect("index");
        index.add_all(["*"], git2::IndexAddOption::DEFAULT, None).expect("add");
        index.update_all(["*"], None).expect("update");
        index.write().expect("write index");
        let tree_id = index.write_tree().expect("tree");
        let tree = self.repo.find_tree(tree_id).expect("find tree");
        self.tick += 60;
        let signature =
            git2::Signature::new("Ada Lovelace", "ada@example.test", &git2::Time::new(1_767_225_600 + self.tick, 0))
                .expect("signature");
        let parent = self.repo.head().ok().and_then(|h| h.peel_to_commit().ok());
        let parents: Vec<&git2::Commit<'_>> = parent.iter().collect();
        let id = self.repo.commit(Some("HEAD"), &signature, &signature, message, &tree, &parents).expect("commit");
        id.to_string()
    }

    pub fn tag(&self, name: &str) {
        let head = self.repo.head().unwrap().peel_to_commit().unwrap();
        self.repo.tag_lightweight(name, head.as_object(), false).expect("tag");
    }
}

/// Runs the `berth` binary with `args` in `dir`; returns (exit code, stdout, stderr).
pub fn berth(dir: &Path, args: &[&str]) -> (i32, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(args)
        .current_dir(dir)
        .env("NO_COLOR", "1")
        .output()
        .expect("run berth");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// Compares `actual` with the snapshot file; with `UPDATE_EXPECT=1` writes it instead.
pub fn check_snapshot(path: &Path, actual: &str) {
    if std::env::var_os("UPDATE_EXPECT").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(path)
        .unwrap_or_else(|_| panic!("missing snapshot {}; run with UPDATE_EXPECT=1 to create it", path.display()));
    if expected != actual {
        let diff = similar::TextDiff::from_lines(expected.as_str(), actual)
            .unified_diff()
            .header("expected", "actual")
            .to_string();
        panic!("snapshot {} differs (run with UPDATE_EXPECT=1 to accept):\n{diff}", path.display());
    }
}
