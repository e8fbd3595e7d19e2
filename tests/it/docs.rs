//! What users read must match what the code does: generated schemas, the README's manifest
//! reference, and the example repository.

use crate::support::check_snapshot;
use berth::sync::Loader;
use std::path::Path;

fn project() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn schemas_are_current() {
    let schemas = berth::schemas();
    assert_eq!(schemas.len(), 14);
    for (name, schema) in schemas {
        assert_eq!(schema["$schema"], "http://json-schema.org/draft-07/schema#", "{name}");
        check_snapshot(
            &project().join("schemas").join(&name),
            &(serde_json::to_string_pretty(&schema).unwrap() + "\n"),
        );
    }
    let deployment: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(project().join("schemas/deployment.json")).unwrap()).unwrap();
    assert_eq!(deployment["properties"]["kind"]["const"], "Deployment");
    assert_eq!(deployment["properties"]["apiVersion"]["const"], "apps/v1");
}

#[test]
fn readme_reference_is_current() {
    let readme = std::fs::read_to_string(project().join("README.md")).unwrap();
    let start = "<!-- reference:start -->\n";
    let end = "<!-- reference:end -->";
    let (before, rest) = readme.split_once(start).expect("README has the reference start marker");
    let (_, after) = rest.split_once(end).expect("README has the reference end marker");
    let expected = format!("{before}{start}{}{end}{after}", berth::manifest::schema::reference_markdown());
    check_snapshot(&project().join("README.md"), &expected);
}

#[test]
fn example_repository_validates_cleanly() {
    let mut loader = Loader::open(&project().join("examples/repo")).unwrap();
    let loaded = loader.load_worktree().unwrap();
    let found: Vec<String> = loaded.diagnostics.iter().map(ToString::to_string).collect();
    assert!(found.is_empty(), "{found:#?}");
    let kinds: Vec<String> = loaded.resources.iter().map(|r| r.key.to_string()).collect();
    for expected in
        ["ConfigMap shop/shop-settings", "Secret shop/api-credentials", "Service shop/web", "Deployment shop/api"]
    {
        assert!(kinds.iter().any(|k| k == expected), "{expected} missing from {kinds:?}");
    }
}
