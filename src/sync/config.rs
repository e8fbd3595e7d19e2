//! `berth.yaml`: berth's own settings, read from the manifest root of the commit being loaded.
//!
//! Unknown keys are errors with a suggestion, like in manifests. Settings that later parts of berth
//! act on (sync and prune policy) are added here as those parts land.

use crate::diag::{Diagnostic, Pos};
use crate::manifest::{de, yaml};
use serde::Deserialize;

pub const CONFIG_FILE: &str = "berth.yaml";

#[derive(Debug, Clone, PartialEq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Config {
    /// Glob patterns, relative to the manifest root, of the files to read. `*` matches within one
    /// path segment, `**` any number of folders. Defaults to every `.yaml` and `.yml` file.
    #[serde(default = "default_include")]
    pub include: Vec<String>,
    /// Glob patterns of files to skip, applied after `include`.
    #[serde(default)]
    pub exclude: Vec<String>,
    /// How the server applies new commits.
    #[serde(default)]
    pub sync: SyncSettings,
    /// What an object of a kind from an API group Kubernetes does not serve is: `skip` (a
    /// warning; the default) or `error`.
    #[serde(default)]
    pub custom_resources: CustomResources,
    /// Secrets kept encrypted in Git.
    #[serde(default)]
    pub secrets: SecretsSettings,
}

/// Secrets kept encrypted in Git with SOPS and age.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecretsSettings {
    /// The age public keys (`age1...`) `berth secret encrypt` encrypts for: the server's, and
    /// those of the people who edit the secrets.
    #[serde(default)]
    pub age_recipients: Vec<String>,
    /// More fields that may be SOPS-encrypted besides a Secret's `data` and `stringData`, as
    /// `KIND.FIELD` (`ConfigMap.data`). They are hidden in Git only: once decrypted they show
    /// as the rest of their object does.
    #[serde(default)]
    pub encrypted_fields: Vec<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum CustomResources {
    #[default]
    Skip,
    Error,
}

/// How the server applies new commits of the branch it follows.
#[derive(Debug, Clone, PartialEq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SyncSettings {
    /// `auto` applies each new commit; `manual` makes each wait for `berth sync --approve`.
    #[serde(default)]
    pub policy: SyncPolicy,
    /// A commit that would delete more than this percentage of the applied objects waits for an
    /// approval, even under the `auto` policy.
    #[serde(default = "default_prune_threshold")]
    #[schemars(range(min = 0, max = 100))]
    pub prune_threshold: u8,
}

fn default_prune_threshold() -> u8 {
    50
}

impl Default for SyncSettings {
    fn default() -> Self {
        SyncSettings { policy: SyncPolicy::Auto, prune_threshold: default_prune_threshold() }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum SyncPolicy {
    #[default]
    Auto,
    Manual,
}

fn default_include() -> Vec<String> {
    vec!["**/*.yaml".to_owned(), "**/*.yml".to_owned()]
}

impl Default for Config {
    fn default() -> Self {
        Config {
            include: default_include(),
            exclude: Vec::new(),
            sync: SyncSettings::default(),
            custom_resources: CustomResources::Skip,
            secrets: SecretsSettings::default(),
        }
    }
}

impl Config {
    /// Reads `berth.yaml`; on any error the defaults are returned with the findings.
    pub fn parse(text: &str) -> (Config, Vec<Diagnostic>) {
        let mut findings = Vec::new();
        let documents = match yaml::parse(text) {
            Ok(documents) => documents,
            Err(error) => {
                findings.push(Diagnostic::error(CONFIG_FILE, error.pos, error.message));
                return (Config::default(), findings);
            }
        };
        let mut roots = documents.into_iter().filter_map(|d| d.root);
        let Some(root) = roots.next() else { return (Config::default(), findings) };
        if let Some(extra) = roots.next() {
            findings.push(Diagnostic::error(CONFIG_FILE, extra.pos, "berth.yaml must hold one document"));
        }
        let context = de::Context::new(CONFIG_FILE, "berth.yaml");
        let config = match de::from_node::<Config>(&root, &context) {
            Ok(config) => config,
            Err(error) => {
                findings.push(error.into_diagnostic(CONFIG_FILE, "berth.yaml", root.pos));
                Config::default()
            }
        };
        findings.extend(context.findings.into_inner().into_iter().map(|mut d| {
            d.object = None;
            d
        }));
        for (index, pattern) in config.include.iter().chain(&config.exclude).enumerate() {
            let field = if index < config.include.len() { "include" } else { "exclude" };
            let pos = root.get(field).map_or(Pos::default(), |n| n.pos);
            if let Err(error) = compile(pattern) {
                findings.push(
                    Diagnostic::error(
                        CONFIG_FILE,
                        pos,
                        format!("pattern `{pattern}` is not a valid glob: {}", error.kind()),
                    )
                    .field(field)
                    .help("use `*`, `?`, `**`, `[abc]` and `{a,b}`; escape a literal one with `\\`"),
                );
            }
            if pattern.starts_with('/') || pattern.split('/').any(|s| s == "..") {
                findings.push(
                    Diagnostic::error(CONFIG_FILE, pos, format!("pattern `{pattern}` leaves the manifest root"))
                        .field(field)
                        .help("patterns are relative to the folder that holds berth.yaml"),
                );
            }
        }
        if config.sync.prune_threshold > 100 {
            let pos = root.get("sync").and_then(|n| n.get("pruneThreshold")).map_or(Pos::default(), |n| n.pos);
            findings.push(
                Diagnostic::error(CONFIG_FILE, pos, format!("{} is not a percentage", config.sync.prune_threshold))
                    .field("sync.pruneThreshold")
                    .help("write a number from 0 to 100; 100 never waits"),
            );
        }
        (config, findings)
    }

    /// Whether berth reads the file at `path` (relative to the manifest root, `/`-separated).
    pub fn selects(&self, path: &str) -> bool {
        self.selector().selects(path)
    }

    /// The patterns compiled once, for a walk over many paths. A pattern that does not compile
    /// was reported by [`Config::parse`] and matches nothing.
    pub fn selector(&self) -> Selector {
        let build = |patterns: &[String]| {
            let mut set = globset::GlobSetBuilder::new();
            for pattern in patterns {
                if let Ok(glob) = compile(pattern) {
                    set.add(glob);
                }
            }
            set.build().unwrap_or_else(|_| globset::GlobSet::empty())
        };
        let names_hidden =
            self.include.iter().any(|p| p.split('/').any(|s| s.starts_with('.') && s != "." && s != ".."));
        Selector { include: build(&self.include), exclude: build(&self.exclude), names_hidden }
    }
}

/// `berth.yaml`'s include and exclude patterns, compiled.
pub struct Selector {
    include: globset::GlobSet,
    exclude: globset::GlobSet,
    /// Some include pattern names a hidden file or folder.
    names_hidden: bool,
}

impl Selector {
    /// Whether berth reads the file at `path` (relative to the manifest root, `/`-separated).
    pub fn selects(&self, path: &str) -> bool {
        if path == CONFIG_FILE {
            return false;
        }
        // Hidden folders and files (.github, .gitlab-ci.yml) hold other tools' YAML; they are read
        // only when a pattern names them.
        if !self.names_hidden && path.split('/').any(|s| s.starts_with('.')) {
            return false;
        }
        self.include.is_match(path) && !self.exclude.is_match(path)
    }

    /// Whether `path`, read as a folder, could hold files berth reads: it is not hidden and no
    /// exclude pattern names it or what is below it.
    pub fn may_hold_manifests(&self, path: &str) -> bool {
        let hidden = !self.names_hidden && path.split('/').any(|s| s.starts_with('.'));
        !hidden && !self.exclude.is_match(path) && !self.exclude.is_match(format!("{path}/x"))
    }
}

/// One pattern as a linear-time matcher: `*` and `?` within a segment, `**` across segments; a
/// pattern ending in `/` matches everything below that folder.
fn compile(pattern: &str) -> Result<globset::Glob, globset::Error> {
    let pattern = match pattern.strip_suffix('/') {
        Some(folder) => format!("{folder}/**"),
        None => pattern.to_owned(),
    };
    globset::GlobBuilder::new(&pattern).literal_separator(true).backslash_escape(true).build()
}

/// Matches a `/`-separated path against one pattern.
pub fn glob_matches(pattern: &str, path: &str) -> bool {
    compile(pattern).is_ok_and(|glob| glob.compile_matcher().is_match(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_like_gitignore_paths() {
        assert!(glob_matches("**/*.yaml", "a.yaml"));
        assert!(glob_matches("**/*.yaml", "apps/web/deploy.yaml"));
        assert!(!glob_matches("*.yaml", "apps/deploy.yaml"));
        assert!(glob_matches("drafts/", "drafts/x/y.yaml"));
        assert!(glob_matches("apps/*/v?.yml", "apps/web/v1.yml"));
        assert!(!glob_matches("apps/**", "other/a.yaml"));
        assert!(!Config::default().selects(".github/workflows/ci.yml"));
        assert!(!Config::default().selects("berth.yaml"));
    }

    /// Issue 13: a pattern that made a backtracking matcher take exponential time answers at once.
    #[test]
    fn patterns_match_in_linear_time() {
        let path = format!("{}.yaml", "a".repeat(60));
        let started = std::time::Instant::now();
        assert!(!glob_matches("*a*a*a*a*a*a*a*a*a*a*a*a*b", &path));
        assert!(!glob_matches("**/**/**/**/**/**/**/**/**/**/x", &"a/".repeat(40)));
        assert!(started.elapsed() < std::time::Duration::from_secs(1), "took {:?}", started.elapsed());
    }

    #[test]
    fn a_pattern_that_does_not_compile_is_located() {
        let (_, findings) = Config::parse("include: ['apps/[x']\n");
        assert_eq!(findings.len(), 1, "{findings:?}");
        assert!(findings[0].message.contains("not a valid glob"), "{}", findings[0].message);
        assert_eq!((findings[0].line, findings[0].column), (1, 10));
    }
}
