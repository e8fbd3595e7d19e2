//! Issue 12: the layers point one way. A module's files name only the modules beneath it, so a
//! wrong-way `use` fails the build's tests. The rules are ARCHITECTURE.md's.

use std::path::Path;

/// Each module, and the modules it must not name.
const RULES: &[(&str, &[&str])] = &[
    ("manifest", &["sync", "plan", "apply", "nodes", "store", "server", "client"]),
    ("plan", &["sync", "apply", "nodes", "store", "server", "client"]),
    ("sync", &["apply", "nodes", "store", "server", "client"]),
    ("nodes", &["sync", "plan", "apply", "store", "server", "client"]),
    ("store", &["plan", "apply", "server", "client"]),
    ("apply", &["server", "client"]),
];

/// The top-level modules a file names through `crate::`, grouped imports included.
fn named_modules(text: &str) -> Vec<String> {
    let mut names = Vec::new();
    let ident = |rest: &str| rest.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect::<String>();
    for (at, _) in text.match_indices("crate::") {
        let rest = &text[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for part in group[..end].split(',') {
                names.push(ident(part.trim()));
            }
        } else {
            names.push(ident(rest));
        }
    }
    names
}

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn layers_point_one_way() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut violations = Vec::new();
    for (module, forbidden) in RULES {
        let mut files = Vec::new();
        rust_files(&src.join(module), &mut files);
        assert!(!files.is_empty(), "src/{module} has files");
        for file in files {
            let text = std::fs::read_to_string(&file).unwrap();
            if text.contains("super::super") {
                violations.push(format!("{}: reaches out with super::super", file.display()));
            }
            for name in named_modules(&text) {
                if forbidden.contains(&name.as_str()) {
                    violations.push(format!("{}: `{module}` names `crate::{name}`", file.display()));
                }
            }
        }
    }
    assert!(violations.is_empty(), "layering broken:\n{}", violations.join("\n"));
}

#[test]
fn the_layering_check_sees_grouped_and_plain_paths() {
    let names = named_modules("use crate::{nodes, store::Store};\nlet x = crate::server::now();");
    assert_eq!(names, ["nodes", "store", "server"]);
}
