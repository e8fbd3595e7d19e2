//! The loader's fuzz campaign, shared by the test (a bounded number of cases) and
//! `cargo bench --bench fuzz` (long campaigns): random YAML-shaped text, and valid manifests with
//! hostile mutations, through `berth::manifest::parse_file` and the checks across objects.
//!
//! Each input must end without a panic, within a second, and no finding may quote a value of a
//! Secret's `data` or `stringData` (each case plants a fresh canary value there).

use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use std::time::{Duration, Instant};

/// The longest one input may take to load.
pub const LIMIT: Duration = Duration::from_secs(1);

const SEEDS: [&str; 6] = [
    include_str!("../../examples/repo/web/deployment.yaml"),
    include_str!("../../examples/repo/api/deployment.yaml"),
    include_str!("../../examples/repo/kv/kv.yaml"),
    include_str!("../../examples/repo/config/settings.yaml"),
    include_str!("../../examples/repo/namespace.yaml"),
    // A SOPS-encrypted Secret, decrypted with its identity below: mutations reach the decryptor.
    include_str!("../data/sops/secret.age.yaml"),
];

/// The identity of the SOPS seed.
static SOPS_KEYS: std::sync::LazyLock<berth::manifest::sops::Keys> = std::sync::LazyLock::new(|| {
    berth::manifest::sops::Keys::parse(include_str!("../data/sops/age.txt")).expect("the seed's identity")
});

/// Pieces of YAML and of Kubernetes manifests that parsers and validators trip over.
const TOKENS: &[&str] = &[
    "\n",
    "\n  ",
    "\n    ",
    "  ",
    "- ",
    ": ",
    ":",
    "[",
    "]",
    "{",
    "}",
    ",",
    "&a ",
    "*a",
    "&b ",
    "*b",
    "<<: ",
    "<<: *a",
    "? ",
    "|",
    "|-",
    ">",
    "#",
    "\"",
    "'",
    "\\",
    "\t",
    "!!str ",
    "!!int ",
    "!custom ",
    "%YAML 1.1\n",
    "---\n",
    "...\n",
    "\u{feff}",
    "é",
    "\u{0}",
    "~",
    "null",
    "true",
    "0x7f",
    "0o777",
    "0777",
    "08",
    "-1",
    "9E",
    "1e400",
    ".nan",
    "1.5Gi",
    "apiVersion: v1",
    "apiVersion: apps/v1",
    "kind: Pod",
    "kind: Deployment",
    "kind: Secret",
    "kind: List",
    "kind: Service",
    "metadata:",
    "$patch: delete",
    "$patch: replace",
    "- op: copy\n  from: /\n  path: /x",
    "resources: [., ..]",
    "components: [.]",
    "name: x",
    "namespace: ns",
    "spec:",
    "containers:",
    "image: i",
    "items:",
    "path: ../../x",
    "volumes:",
    "configMap:",
    "defaultMode: 0440",
    "replicas: 3",
    "selector:",
    "matchLabels:",
    "template:",
    "ports:",
    "containerPort: 15001",
    "stringData:",
    "data:",
    "key: k",
    "x",
    "y",
    "a",
    "b",
];

/// Values a committer might put anywhere a value goes.
const HOSTILE: &[&str] = &[
    "../../../../etc/passwd",
    "/etc/shadow",
    "''",
    "\"\"",
    "~",
    "-1",
    "0",
    "4294967297",
    "9223372036854775808",
    "99999999999999999999999",
    "9E",
    "1e308",
    "-0.0",
    ".inf",
    "0777",
    "07777",
    "0o999",
    "0x",
    "true",
    "[]",
    "{}",
    "[[[[[[[[",
    "*a",
    "&a x",
    "\"\\u0000\"",
    "\"\\uD800\"",
    "é\u{301}",
    "\u{202e}evil",
    "{{ .Values.x }}",
    "!!binary aGk=",
    "[a, *a]",
    "{a: 1, a: 2}",
    "- a",
    "|\n  x",
    "15053",
    "SCTP",
    "1m",
    "-5Gi",
];

#[derive(Debug, Clone)]
pub enum Mutation {
    /// Replace the value after the first `: ` of a line.
    Value {
        line: usize,
        value: usize,
    },
    DeleteLine {
        line: usize,
    },
    DuplicateLine {
        line: usize,
    },
    /// Move a line two columns left or right.
    Indent {
        line: usize,
        deeper: bool,
    },
    InsertToken {
        line: usize,
        token: usize,
    },
}

/// A Secret whose value is a canary of some YAML type, placed under `data` or `stringData`.
#[derive(Debug, Clone)]
pub struct Canary {
    pub value: String,
    pub under_data: bool,
}

fn canary() -> impl Strategy<Value = Canary> {
    let value = prop_oneof![
        (1_000_000u64..9_000_000_000).prop_map(|n| n.to_string()),
        (1_000_000u64..9_000_000).prop_map(|n| format!("{n}.{}", n % 997)),
        (1_000_000u64..9_000_000).prop_map(|n| format!("[{n}]")),
        (1_000_000u64..9_000_000).prop_map(|n| format!("{{k: {n}}}")),
        (1_000_000u64..9_000_000).prop_map(|n| format!("0x{n:x}")),
        (1_000_000u64..9_000_000).prop_map(|n| format!("secret-{n}")),
    ];
    (value, any::<bool>()).prop_map(|(value, under_data)| Canary { value, under_data })
}

pub fn mutation() -> impl Strategy<Value = Mutation> {
    let line = 0usize..120;
    prop_oneof![
        (line.clone(), 0..HOSTILE.len()).prop_map(|(line, value)| Mutation::Value { line, value }),
        line.clone().prop_map(|line| Mutation::DeleteLine { line }),
        line.clone().prop_map(|line| Mutation::DuplicateLine { line }),
        (line.clone(), any::<bool>()).prop_map(|(line, deeper)| Mutation::Indent { line, deeper }),
        (line, 0..TOKENS.len()).prop_map(|(line, token)| Mutation::InsertToken { line, token }),
    ]
}

/// Applies mutations to a seed. The canary Secret is the first document of every input, so no
/// mutation after it can turn its value into something else.
pub fn mutate(seed: &str, mutations: &[Mutation]) -> String {
    let mut lines: Vec<String> = seed.lines().map(str::to_owned).collect();
    for mutation in mutations {
        if lines.is_empty() {
            break;
        }
        match *mutation {
            Mutation::Value { line, value } => {
                let count = lines.len();
                let line = &mut lines[line % count];
                if let Some(at) = line.find(": ") {
                    line.truncate(at + 2);
                    line.push_str(HOSTILE[value]);
                }
            }
            Mutation::DeleteLine { line } => {
                let at = line % lines.len();
                lines.remove(at);
            }
            Mutation::DuplicateLine { line } => {
                let at = line % lines.len();
                let copy = lines[at].clone();
                lines.insert(at, copy);
            }
            Mutation::Indent { line, deeper } => {
                let count = lines.len();
                let line = &mut lines[line % count];
                if deeper {
                    line.insert_str(0, "  ");
                } else if line.starts_with("  ") {
                    line.drain(..2);
                }
            }
            Mutation::InsertToken { line, token } => {
                let at = line % (lines.len() + 1);
                lines.insert(at, TOKENS[token].to_owned());
            }
        }
    }
    lines.join("\n")
}

fn secret_document(canary: &Canary) -> String {
    let section = if canary.under_data { "data" } else { "stringData" };
    format!("apiVersion: v1\nkind: Secret\nmetadata:\n  name: canary\n{section}:\n  value: {}\n---\n", canary.value)
}

/// What one campaign did.
#[derive(Debug, Default, Clone, Copy)]
pub struct Report {
    pub cases: u32,
    pub slowest: Duration,
}

/// Loads one input with every check; a panic, a slow load or a leaked canary fails the case.
fn check(text: &str, canary: &Canary, report: &std::cell::Cell<Report>) -> Result<(), TestCaseError> {
    let started = Instant::now();
    let loaded = std::panic::catch_unwind(|| {
        let policy = berth::manifest::policy::Policy::default();
        let parsed = berth::manifest::parse_file_keyed("fuzz.yaml", text, &policy, Some(&SOPS_KEYS));
        let across = berth::manifest::validate::across(&parsed.resources, &parsed.unloaded_templates);
        (parsed, across)
    });
    let elapsed = started.elapsed();
    let (parsed, across) = loaded.map_err(|_| TestCaseError::fail("the loader panicked"))?;
    // The quick digest of what a workload reads is the digest of the inputs as listed.
    let mut sorted = parsed.resources.clone();
    sorted.sort_by(|a, b| a.key.cmp(&b.key));
    for resource in &sorted {
        let digests = || berth::manifest::digests_in(&sorted, &resource.key.namespace);
        let inputs = resource.config_inputs(digests());
        let listed = (!inputs.is_empty()).then(|| berth::manifest::inputs_digest(&inputs));
        prop_assert_eq!(resource.config_inputs_digest(digests()), listed, "{}", resource.key);
    }
    let diagnostics = parsed.diagnostics;
    let mut current = report.get();
    current.cases += 1;
    current.slowest = current.slowest.max(elapsed);
    report.set(current);
    prop_assert!(elapsed < LIMIT, "took {elapsed:?}");
    let digits: String = canary.value.chars().filter(char::is_ascii_digit).collect();
    for diagnostic in diagnostics.iter().chain(&across) {
        let shown = format!("{diagnostic} {:?}", diagnostic.field);
        prop_assert!(!shown.contains(&canary.value), "a finding quotes the secret value: {shown}");
        prop_assert!(digits.len() < 7 || !shown.contains(&digits), "a finding quotes the secret value: {shown}");
    }
    Ok(())
}

/// Runs `cases` cases of each kind of input; returns the counts, or the first failure with its
/// shrunk input.
pub fn run(cases: u32) -> Result<Report, String> {
    let report = std::cell::Cell::new(Report::default());
    let config = Config { cases, failure_persistence: None, ..Config::default() };

    let mut runner = TestRunner::new(config.clone());
    let tokens = proptest::collection::vec(0..TOKENS.len(), 0..200);
    runner
        .run(&(tokens, canary()), |(tokens, canary)| {
            let text: String = tokens.iter().map(|t| TOKENS[*t]).collect();
            check(&format!("{}{text}\n", secret_document(&canary)), &canary, &report)
        })
        .map_err(|failure| format!("random YAML: {failure}"))?;

    let mut runner = TestRunner::new(config);
    let mutations = proptest::collection::vec(mutation(), 1..6);
    runner
        .run(&(0..SEEDS.len(), mutations, canary()), |(seed, mutations, canary)| {
            let text = format!("{}{}\n", secret_document(&canary), mutate(SEEDS[seed], &mutations));
            check(&text, &canary, &report)
        })
        .map_err(|failure| format!("mutated manifests: {failure}"))?;
    Ok(report.get())
}
