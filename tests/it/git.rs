//! The Git source: revisions, manifest roots, berth.yaml, caches, and remote clone caches, on
//! real repositories.

use crate::support::{TestRepo, berth};
use berth::sync::Loader;

const NAMESPACE: &str = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: NAME\n";

fn namespace(name: &str) -> String {
    NAMESPACE.replace("NAME", name)
}

fn names(loader: &mut Loader, rev: &str) -> Vec<String> {
    let loaded = loader.load(rev).unwrap();
    assert!(loaded.is_valid(), "{:#?}", loaded.diagnostics);
    loaded.resources.iter().map(|r| r.key.name.clone()).collect()
}

#[test]
fn reads_any_revision_from_the_commit_tree() {
    let mut repo = TestRepo::new();
    repo.write("a.yaml", &namespace("first"));
    let first = repo.commit("first");
    repo.tag("v1");
    repo.write("b.yaml", &namespace("second"));
    let second = repo.commit("second");
    // An uncommitted file is not read from a commit.
    repo.write("c.yaml", &namespace("uncommitted"));

    let mut loader = Loader::open(repo.path()).unwrap();
    assert_eq!(names(&mut loader, "HEAD"), ["first", "second"]);
    assert_eq!(names(&mut loader, "main"), ["first", "second"]);
    assert_eq!(names(&mut loader, "v1"), ["first"]);
    assert_eq!(names(&mut loader, &first[..7]), ["first"]);
    assert_eq!(names(&mut loader, &second), ["first", "second"]);
    assert_eq!(names(&mut loader, "HEAD~1"), ["first"]);
    let info = loader.resolve("v1").unwrap();
    assert_eq!(
        (info.sha.as_str(), info.author.as_str(), info.message.as_str()),
        (first.as_str(), "Ada Lovelace", "first")
    );

    let worktree = loader.load_worktree().unwrap();
    let worktree_names: Vec<&str> = worktree.resources.iter().map(|r| r.key.name.as_str()).collect();
    assert_eq!(worktree_names, ["first", "second", "uncommitted"]);

    let error = loader.load("nope").unwrap_err().to_string();
    assert!(error.starts_with("revision `nope` was not found in"), "{error}");
}

#[test]
fn a_folder_inside_the_repository_is_the_manifest_root() {
    let mut repo = TestRepo::new();
    repo.write("README.yaml", "not: a manifest\n");
    repo.write("deploy/prod/ns.yaml", &namespace("prod"));
    repo.write("deploy/staging/ns.yaml", &namespace("staging"));
    repo.commit("layout");
    let mut loader = Loader::open(&repo.path().join("deploy/prod")).unwrap();
    assert_eq!(loader.root(), "deploy/prod");
    assert_eq!(names(&mut loader, "HEAD"), ["prod"]);

    let (code, stdout, _) = berth(repo.path(), &["validate", "deploy/staging"]);
    assert_eq!(code, 0, "{stdout}");
    assert!(stdout.contains("1 objects in 1 files"), "{stdout}");

    std::fs::create_dir_all(repo.path().join("deploy/new")).unwrap();
    let error = Loader::open(&repo.path().join("deploy/new")).unwrap().load("HEAD").unwrap_err().to_string();
    assert!(error.starts_with("the manifest root `deploy/new` does not exist at commit"), "{error}");
}

#[test]
fn berth_yaml_chooses_the_files_and_rejects_unknown_keys() {
    let mut repo = TestRepo::new();
    repo.write("apps/web.yaml", &namespace("web"));
    repo.write("apps/drafts/wip.yaml", "this is: [not valid\n");
    repo.write("other/extra.yml", &namespace("extra"));
    repo.write(".github/workflows/ci.yml", "on: push\njobs: {}\n");
    repo.commit("no config: every yaml file but hidden folders");
    let mut loader = Loader::open(repo.path()).unwrap();
    let loaded = loader.load("HEAD").unwrap();
    assert_eq!(loaded.files, 3, "hidden folders are skipped");
    assert_eq!(loaded.error_count(), 1, "the draft is read without a berth.yaml");

    repo.write("berth.yaml", "include:\n  - \"apps/**\"\nexclude:\n  - apps/drafts/\n");
    repo.commit("config");
    assert_eq!(names(&mut loader, "HEAD"), ["web"]);

    repo.write("berth.yaml", "include:\n  - \"apps/**\"\nexcludes:\n  - apps/drafts/\n");
    repo.commit("typo in config");
    let found: Vec<String> = loader.load("HEAD").unwrap().diagnostics.iter().map(ToString::to_string).collect();
    assert!(
        found.contains(
            &"berth.yaml:3:1: error: excludes: unknown field `excludes` (did you mean `exclude`?)".to_owned()
        ),
        "{found:?}"
    );

    repo.write("berth.yaml", "include:\n  - \"../outside/**\"\n");
    repo.commit("escape");
    let found: Vec<String> = loader.load("HEAD").unwrap().diagnostics.iter().map(ToString::to_string).collect();
    assert!(found.iter().any(|d| d.contains("pattern `../outside/**` leaves the manifest root")), "{found:?}");
}

#[test]
fn parsed_commits_and_files_are_cached() {
    let mut repo = TestRepo::new();
    for name in ["a", "b", "c"] {
        repo.write(&format!("{name}.yaml"), &namespace(name));
    }
    let first = repo.commit("three files");
    let mut loader = Loader::open(repo.path()).unwrap();
    loader.load(&first).unwrap();
    let stats = loader.stats();
    assert_eq!((stats.commit_loads, stats.commit_hits, stats.file_parses, stats.file_hits), (1, 0, 3, 0));

    // The same commit again, by another name: a cache hit, nothing parsed.
    loader.load("HEAD").unwrap();
    let stats = loader.stats();
    assert_eq!((stats.commit_loads, stats.commit_hits, stats.file_parses), (1, 1, 3));

    // A commit that changes one file parses only that file.
    repo.write("b.yaml", &namespace("b2"));
    repo.commit("one file changed");
    assert_eq!(names(&mut loader, "HEAD"), ["a", "b2", "c"]);
    let stats = loader.stats();
    assert_eq!((stats.commit_loads, stats.file_parses, stats.file_hits), (2, 4, 2));
}

#[test]
fn remote_repositories_go_through_a_clone_cache_that_is_fetched() {
    let mut origin = TestRepo::new();
    origin.write("deploy/ns.yaml", &namespace("one"));
    origin.commit("one");
    let url = format!("file://{}", origin.path().display());
    let cache = tempfile::tempdir().unwrap();

    let mut loader = Loader::remote(&url, cache.path(), "deploy").unwrap();
    assert_eq!(names(&mut loader, "HEAD"), ["one"]);
    assert_eq!(names(&mut loader, "main"), ["one"]);
    let clones: Vec<_> = std::fs::read_dir(cache.path()).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(clones.len(), 1);
    let marker = clones[0].join("berth-test-marker");
    std::fs::write(&marker, "still here").unwrap();

    origin.write("deploy/ns2.yaml", &namespace("two"));
    let second = origin.commit("two");
    origin.tag("v2");

    // A second open fetches into the same clone: the marker survives, the new commit appears.
    let mut loader = Loader::remote(&url, cache.path(), "deploy").unwrap();
    assert!(marker.exists(), "the clone cache was cloned again instead of fetched");
    assert_eq!(names(&mut loader, "HEAD"), ["one", "two"]);
    assert_eq!(names(&mut loader, "v2"), ["one", "two"]);
    assert_eq!(loader.resolve("main").unwrap().sha, second);

    // The CLI takes the URL too.
    let cache_arg = cache.path().to_str().unwrap();
    let (code, stdout, stderr) =
        berth(origin.path(), &["validate", &url, "--subdir", "deploy", "--cache-dir", cache_arg]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("2 objects in 2 files"), "{stdout}");

    let missing = format!("file://{}/does-not-exist", cache.path().display());
    let error = Loader::remote(&missing, cache.path(), "").err().expect("a missing remote is an error").to_string();
    assert!(error.starts_with("fetching file://"), "{error}");
}

#[test]
fn a_manifest_root_that_is_new_plans_as_creates() {
    let mut repo = TestRepo::new();
    repo.write("README.md", "docs only\n");
    repo.commit("before manifests");
    repo.write("deploy/ns.yaml", &namespace("new"));
    repo.commit("add manifests");
    let (code, stdout, stderr) = berth(repo.path(), &["plan", "deploy"]);
    assert_eq!(code, 2, "{stdout}{stderr}");
    assert!(stdout.contains("before manifests; no manifests yet"), "{stdout}");
    assert!(stdout.contains("Plan: 1 to create, 0 to update, 0 to delete, 0 unchanged."), "{stdout}");

    // On the desired side, a missing root is an error, never "nothing declared".
    let (code, _, stderr) = berth(repo.path(), &["plan", "deploy", "--to", "HEAD~1"]);
    assert_eq!(code, 1);
    assert!(stderr.contains("the manifest root `deploy` does not exist at commit"), "{stderr}");
}
