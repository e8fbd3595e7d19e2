//! sync: Git commits in, validated desired state out.
//!
//! A [`Loader`] resolves a revision of a repository, reads the manifest files straight from the
//! commit's tree (never a checkout), and parses them into a [`Loaded`] commit. Parsed files are
//! cached by Git blob id and whole commits by commit id, so loading a commit twice, or a commit
//! that changed one file, does the least work. Remote repositories live in a local clone cache
//! that is fetched, never cloned again.
//!
//! Paths are bounded to the repository: a symlink that leaves it is an error, never followed.
//! This module reads Git and files; it never writes to the store or talks to nodes.

pub mod config;
mod kustomized;

use crate::diag::{self, Diagnostic, Pos};
use crate::manifest::{self, ParsedFile, Resource, validate, yaml};
use crate::plan;
use config::{CONFIG_FILE, Config};
use git2::{ObjectType, Oid, Repository, TreeWalkMode, TreeWalkResult};
use serde::Serialize;
use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("{path} is not inside a Git repository")]
    NotARepository {
        path: PathBuf,
        #[source]
        source: git2::Error,
    },
    #[error("{path} is outside the repository at {repository}")]
    OutsideRepository { path: PathBuf, repository: PathBuf },
    #[error("revision `{rev}` was not found in {repository}")]
    UnknownRevision {
        rev: String,
        repository: String,
        #[source]
        source: git2::Error,
    },
    #[error("the manifest root `{root}` does not exist at commit {commit}")]
    MissingRoot { root: String, commit: String },
    #[error("fetching {url} failed")]
    Fetch {
        url: String,
        #[source]
        source: git2::Error,
    },
    #[error("reading the repository failed")]
    Git(#[from] git2::Error),
    #[error("reading the repository stopped unexpectedly: {0}")]
    Panicked(String),
    #[error("reading {path} failed")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Who made a commit and why, as history and plans show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CommitInfo {
    pub sha: String,
    pub author: String,
    /// The first line of the message.
    pub message: String,
    /// Seconds since the Unix epoch.
    pub time: i64,
}

impl From<CommitInfo> for crate::plan::Restored {
    fn from(commit: CommitInfo) -> Self {
        crate::plan::Restored { commit: commit.sha, message: commit.message }
    }
}

impl CommitInfo {
    pub fn short(&self) -> &str {
        &self.sha[..self.sha.len().min(7)]
    }
}

/// The desired state one commit declares, with every finding. Only a commit without errors may
/// be applied or planned against.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub commit: CommitInfo,
    pub config: Config,
    /// Objects that loaded without errors, sorted by key.
    /// Shared: a plan's side takes it without touching each object.
    pub resources: Arc<[Arc<Resource>]>,
    /// Errors and warnings, sorted by file and position.
    pub diagnostics: Vec<Diagnostic>,
    /// How many manifest files were read.
    pub files: usize,
    /// The values of the commit's Secrets, for the controller only; `Debug` shows keys only.
    pub secrets: std::collections::BTreeMap<manifest::ObjectKey, Arc<manifest::SecretData>>,
    /// The rollout of each workload, beside `resources`.
    pub rollouts: plan::rollout::Rollouts,
}

impl Loaded {
    pub fn error_count(&self) -> usize {
        self.diagnostics.iter().filter(|d| d.is_error()).count()
    }

    pub fn warning_count(&self) -> usize {
        self.diagnostics.len() - self.error_count()
    }

    pub fn is_valid(&self) -> bool {
        self.error_count() == 0
    }

    /// This commit as one side of a plan, its rollouts included.
    pub fn state(&self) -> plan::State {
        plan::State {
            revision: self.commit.sha.clone(),
            title: self.commit.message.clone(),
            resources: self.resources.clone(),
            rollouts: self.rollouts.clone(),
        }
    }
}

/// How often the caches were used: a test and the benchmark read these.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    pub commit_hits: u64,
    pub commit_loads: u64,
    pub file_hits: u64,
    pub file_parses: u64,
    /// Kustomization folders rendered, and renders reused because no file they read changed.
    pub renders: u64,
    pub render_hits: u64,
}

/// One manifest file found in a commit or work tree, before parsing.
struct FileEntry {
    path: String,
    blob: Oid,
}

pub struct Loader {
    repo: Repository,
    /// Where the manifests live, relative to the repository's top, `/`-separated; empty for the top.
    root: String,
    /// What to call the repository in messages: its path or URL.
    location: String,
    commits: HashMap<Oid, Arc<Loaded>>,
    /// The commit loaded last: the next one's rollouts start from its own.
    last: Option<Arc<Loaded>>,
    files: HashMap<(Oid, String), Arc<ParsedFile>>,
    renders: kustomized::Renders,
    stats: CacheStats,
    /// The operator's host-access policy every file is checked under.
    policy: Arc<manifest::policy::Policy>,
    /// The age identities SOPS-encrypted files are decrypted with.
    keys: Option<Arc<manifest::sops::Keys>>,
    limits: Limits,
}

/// What one commit may declare at most: past these it is an error, not a burden on the server
/// and its nodes (a typo such as `replicas: 100000` would otherwise make that many pods wait).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_objects: usize,
    /// Replicas summed over every workload (a Pod is one, a DaemonSet one per node: counted one).
    pub max_replicas: u64,
    /// The manifest files' bytes, summed.
    pub max_bytes: u64,
}

impl Default for Limits {
    /// Room for a large single team: 50,000 objects, 10,000 replicas, 128 MiB of manifests.
    fn default() -> Self {
        Limits { max_objects: 50_000, max_replicas: 10_000, max_bytes: 128 * 1024 * 1024 }
    }
}

/// Symlinks are followed at most this many hops, inside the repository only.
const MAX_SYMLINK_HOPS: usize = 8;

impl Loader {
    /// Opens the repository that holds `path`; `path` itself (a folder inside it) becomes the
    /// manifest root.
    pub fn open(path: &Path) -> Result<Loader, SyncError> {
        let absolute = std::fs::canonicalize(path).map_err(|source| SyncError::Io { path: path.to_owned(), source })?;
        let repo = Repository::discover(&absolute)
            .map_err(|source| SyncError::NotARepository { path: path.to_owned(), source })?;
        let top = repo.workdir().map(Path::to_path_buf).unwrap_or_else(|| repo.path().to_path_buf());
        let top = std::fs::canonicalize(&top).map_err(|source| SyncError::Io { path: top.clone(), source })?;
        let relative = absolute
            .strip_prefix(&top)
            .map_err(|_| SyncError::OutsideRepository { path: path.to_owned(), repository: top.clone() })?;
        let root = relative.components().filter_map(|c| c.as_os_str().to_str()).collect::<Vec<_>>().join("/");
        Ok(Self::new(repo, root, top.display().to_string()))
    }

    /// Opens a remote repository (https, ssh or file URL) through a clone cache under
    /// `cache_dir`, fetching it first. `subdir` is the manifest root inside it.
    pub fn remote(url: &str, cache_dir: &Path, subdir: &str) -> Result<Loader, SyncError> {
        let dir = cache_dir.join(&manifest::hex_digest(url.as_bytes())[..16]);
        let repo = match Repository::open_bare(&dir) {
            Ok(repo) => repo,
            Err(_) => {
                std::fs::create_dir_all(&dir).map_err(|source| SyncError::Io { path: dir.clone(), source })?;
                let repo = Repository::init_bare(&dir)?;
                repo.remote("origin", url)?;
                repo
            }
        };
        let root = normalize_relative(subdir)
            .ok_or_else(|| SyncError::OutsideRepository { path: subdir.into(), repository: dir.clone() })?;
        let mut loader = Self::new(repo, root, url.to_owned());
        loader.fetch()?;
        Ok(loader)
    }

    fn new(repo: Repository, root: String, location: String) -> Loader {
        Loader {
            repo,
            root,
            location,
            commits: HashMap::new(),
            last: None,
            files: HashMap::new(),
            renders: kustomized::Renders::default(),
            stats: CacheStats::default(),
            policy: Arc::default(),
            keys: None,
            limits: Limits::default(),
        }
    }

    /// Refuses commits beyond `limits` from now on.
    pub fn set_limits(&mut self, limits: Limits) {
        if self.limits != limits {
            self.limits = limits;
            self.commits.clear();
        }
    }

    /// Decrypts SOPS-encrypted files with `keys` from now on.
    pub fn set_age_keys(&mut self, keys: Option<manifest::sops::Keys>) {
        self.keys = keys.map(Arc::new);
        self.commits.clear();
        self.files.clear();
        self.renders = kustomized::Renders::default();
    }

    /// Checks every file under the operator's host-access `policy` from now on.
    pub fn set_policy(&mut self, policy: manifest::policy::Policy) {
        if *self.policy != policy {
            self.policy = Arc::new(policy);
            self.commits.clear();
            self.files.clear();
        }
    }

    /// Fetches every branch and tag of a remote repository's `origin` into the clone cache, and
    /// points HEAD at the remote's default branch.
    pub fn fetch(&mut self) -> Result<(), SyncError> {
        let url = self.location.clone();
        let fetch_error = |source| SyncError::Fetch { url: url.clone(), source };
        let mut remote = self.repo.find_remote("origin")?;
        let default_branch = {
            let connection =
                remote.connect_auth(git2::Direction::Fetch, Some(callbacks()), None).map_err(fetch_error)?;
            connection.default_branch().ok().and_then(|b| b.as_str().map(str::to_owned))
        };
        let mut options = git2::FetchOptions::new();
        options.remote_callbacks(callbacks()).prune(git2::FetchPrune::On).download_tags(git2::AutotagOption::All);
        remote
            .fetch(&["+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*"], Some(&mut options), None)
            .map_err(fetch_error)?;
        if let Some(branch) = default_branch {
            self.repo.set_head(&branch)?;
        }
        Ok(())
    }

    pub fn location(&self) -> &str {
        &self.location
    }

    /// The top of the repository's work tree, for a local repository that has one.
    pub fn workdir(&self) -> Option<&Path> {
        self.repo.workdir()
    }

    /// The manifest root inside the repository, `/`-separated, empty for the top.
    pub fn root(&self) -> &str {
        &self.root
    }

    pub fn stats(&self) -> CacheStats {
        CacheStats { renders: self.renders.renders, render_hits: self.renders.hits, ..self.stats }
    }

    /// Resolves a branch, tag, short or full sha, or `HEAD` to a commit.
    /// The repository's branches, by name.
    pub fn branches(&self) -> Vec<String> {
        let Ok(branches) = self.repo.branches(Some(git2::BranchType::Local)) else { return Vec::new() };
        let mut names: Vec<String> =
            branches.filter_map(|b| b.ok()?.0.name().ok().flatten().map(str::to_owned)).collect();
        names.sort();
        names
    }

    pub fn resolve(&self, rev: &str) -> Result<CommitInfo, SyncError> {
        let commit = self.find_commit(rev)?;
        Ok(commit_info(&commit))
    }

    fn find_commit(&self, rev: &str) -> Result<git2::Commit<'_>, SyncError> {
        let unknown =
            |source| SyncError::UnknownRevision { rev: rev.to_owned(), repository: self.location.clone(), source };
        let object = self.repo.revparse_single(rev).map_err(unknown)?;
        object.peel_to_commit().map_err(unknown)
    }

    /// Loads the manifests of a commit: cached by commit id, files cached by blob id.
    pub fn load(&mut self, rev: &str) -> Result<Arc<Loaded>, SyncError> {
        let commit_id = self.find_commit(rev)?.id();
        if let Some(loaded) = self.commits.get(&commit_id) {
            self.stats.commit_hits += 1;
            return Ok(loaded.clone());
        }
        self.stats.commit_loads += 1;
        let (info, config, entries, units, diagnostics) = self.collect_commit(commit_id)?;
        let rendered = {
            let tree = self.repo.find_commit(commit_id)?.tree()?;
            let files = kustomized::TreeFiles { repo: &self.repo, tree };
            kustomized::render_all(&mut self.renders, &files, &self.root, &units, &self.policy, self.keys.as_deref())
        };
        let loaded = Arc::new(self.parse_entries(info, config, entries, diagnostics, rendered)?);
        self.commits.insert(commit_id, loaded.clone());
        self.last = Some(loaded.clone());
        Ok(loaded)
    }

    /// Finds the manifest files and the kustomization folders of a commit, and reads its
    /// `berth.yaml`.
    #[allow(clippy::type_complexity)]
    fn collect_commit(
        &self,
        commit_id: Oid,
    ) -> Result<(CommitInfo, Config, Vec<FileEntry>, Vec<String>, Vec<Diagnostic>), SyncError> {
        let commit = self.repo.find_commit(commit_id)?;
        let info = commit_info(&commit);
        let tree = commit.tree()?;
        let root_tree = if self.root.is_empty() {
            tree.clone()
        } else {
            let entry = tree
                .get_path(Path::new(&self.root))
                .map_err(|_| SyncError::MissingRoot { root: self.root.clone(), commit: info.sha.clone() })?;
            entry
                .to_object(&self.repo)?
                .peel_to_tree()
                .map_err(|_| SyncError::MissingRoot { root: self.root.clone(), commit: info.sha.clone() })?
        };

        let mut diagnostics = Vec::new();
        let (config, config_findings) = match root_tree.get_name(CONFIG_FILE) {
            Some(entry) => {
                let blob = self.repo.find_blob(entry.id())?;
                match std::str::from_utf8(blob.content()) {
                    Ok(text) => Config::parse(text),
                    Err(_) => {
                        (Config::default(), vec![Diagnostic::error(CONFIG_FILE, Pos::START, "file is not UTF-8 text")])
                    }
                }
            }
            None => (Config::default(), Vec::new()),
        };
        diagnostics.extend(config_findings);

        let mut candidates = Vec::new();
        root_tree.walk(TreeWalkMode::PreOrder, |dir, entry| {
            if entry.kind() == Some(ObjectType::Blob) {
                if let Some(name) = entry.name() {
                    candidates.push((format!("{dir}{name}"), entry.id(), entry.filemode()));
                }
            }
            TreeWalkResult::Ok
        })?;
        let selector = config.selector();
        let units = kustomized::units(candidates.iter().map(|(path, _, _)| path.as_str()))
            .into_iter()
            .filter(|unit| unit.is_empty() || selector.may_hold_manifests(unit))
            .collect::<Vec<_>>();
        candidates.retain(|(path, _, _)| !units.iter().any(|unit| kustomized::inside(path, unit)));
        let mut entries = Vec::new();
        for (path, blob, mode) in candidates {
            let link = mode == i32::from(git2::FileMode::Link);
            if !selector.selects(&path) {
                if link && selector.may_hold_manifests(&path) {
                    diagnostics.extend(self.unread_symlink(&tree, &path, blob));
                }
                continue;
            }
            if link {
                match self.follow_symlink(&tree, &path, blob) {
                    Ok(target) => entries.push(FileEntry { path, blob: target }),
                    Err(message) => diagnostics.push(
                        Diagnostic::error(&path, Pos::START, message)
                            .help("keep manifests inside the repository as regular files"),
                    ),
                }
            } else {
                entries.push(FileEntry { path, blob });
            }
        }
        Ok((info, config, entries, units, diagnostics))
    }

    /// Reads the manifests as they are in the work tree, uncommitted changes included, with the
    /// same rules as for a commit. Tagged with the HEAD commit it started from.
    pub fn load_worktree(&mut self) -> Result<Loaded, SyncError> {
        let top = self.repo.workdir().map(Path::to_path_buf).ok_or_else(|| SyncError::OutsideRepository {
            path: PathBuf::from(&self.location),
            repository: PathBuf::from(&self.location),
        })?;
        let top = std::fs::canonicalize(&top).map_err(|source| SyncError::Io { path: top.clone(), source })?;
        let mut info = self.resolve("HEAD")?;
        info.message = format!("work tree of {}", info.short());
        let root_dir = top.join(&self.root);
        let mut diagnostics = Vec::new();
        let config_path = root_dir.join(CONFIG_FILE);
        let config = match std::fs::read_to_string(&config_path) {
            Ok(text) => {
                let (config, findings) = Config::parse(&text);
                diagnostics.extend(findings);
                config
            }
            Err(_) => Config::default(),
        };
        let selector = config.selector();
        let mut entries = Vec::new();
        let mut kustomizations = Vec::new();
        let mut stack = vec![root_dir.clone()];
        while let Some(dir) = stack.pop() {
            let listing = std::fs::read_dir(&dir).map_err(|source| SyncError::Io { path: dir.clone(), source })?;
            for item in listing {
                let item = item.map_err(|source| SyncError::Io { path: dir.clone(), source })?;
                let path = item.path();
                let Ok(relative) = path.strip_prefix(&root_dir) else { continue };
                let relative =
                    relative.components().filter_map(|c| c.as_os_str().to_str()).collect::<Vec<_>>().join("/");
                if relative == ".git" || relative.starts_with(".git/") {
                    continue;
                }
                let file_type = item.file_type().map_err(|source| SyncError::Io { path: path.clone(), source })?;
                if file_type.is_dir() {
                    stack.push(path);
                    continue;
                }
                if crate::kustomize::FILE_NAMES.iter().any(|name| relative.rsplit('/').next() == Some(name)) {
                    kustomizations.push(relative.clone());
                }
                if !selector.selects(&relative) {
                    if file_type.is_symlink() && selector.may_hold_manifests(&relative) {
                        let at = Pos::START;
                        match std::fs::canonicalize(&path) {
                            Ok(real) if real.starts_with(&top) => {
                                if real.is_dir() {
                                    diagnostics.push(
                                        Diagnostic::warning(&relative, at, "symlinked folder is not followed").help(
                                            "berth reads the folder it points to under its own name when the patterns select it",
                                        ),
                                    );
                                }
                            }
                            _ => diagnostics.push(
                                Diagnostic::error(
                                    &relative,
                                    at,
                                    "symlink points outside the repository or to nothing; it is not followed",
                                )
                                .help(format!("remove it, or skip it in berth.yaml with `exclude: [\"{relative}\"]`")),
                            ),
                        }
                    }
                    continue;
                }
                let real = match std::fs::canonicalize(&path) {
                    Ok(real) if real.starts_with(&top) && real.is_file() => real,
                    _ => {
                        diagnostics.push(
                            Diagnostic::error(
                                &relative,
                                Pos::START,
                                "symlink points outside the repository or to nothing; it is not followed",
                            )
                            .help("keep manifests inside the repository as regular files"),
                        );
                        continue;
                    }
                };
                let size = std::fs::metadata(&real).map(|m| m.len()).unwrap_or(0);
                if size > yaml::MAX_FILE_BYTES as u64 {
                    diagnostics.push(
                        Diagnostic::error(
                            &relative,
                            Pos::START,
                            format!("file is {size} bytes, larger than the limit of {} bytes", yaml::MAX_FILE_BYTES),
                        )
                        .help("split it into several files"),
                    );
                    continue;
                }
                let bytes = std::fs::read(&real).map_err(|source| SyncError::Io { path: real.clone(), source })?;
                let blob = self.repo.blob(&bytes)?;
                entries.push(FileEntry { path: relative, blob });
            }
        }
        let units = kustomized::units(kustomizations.iter().map(String::as_str))
            .into_iter()
            .filter(|unit| unit.is_empty() || selector.may_hold_manifests(unit))
            .collect::<Vec<_>>();
        entries.retain(|entry| !units.iter().any(|unit| kustomized::inside(&entry.path, unit)));
        diagnostics.retain(|d| !units.iter().any(|unit| kustomized::inside(&d.file, unit)));
        let files = crate::kustomize::DirFiles { top };
        let rendered =
            kustomized::render_all(&mut self.renders, &files, &self.root, &units, &self.policy, self.keys.as_deref());
        self.parse_entries(info, config, entries, diagnostics, rendered)
    }

    /// What to say of a symlink the patterns do not select as a file: one that leaves the
    /// repository is an error (it may be a folder of manifests berth would not read), one to a
    /// folder inside it is not followed, and says so.
    fn unread_symlink(&self, tree: &git2::Tree<'_>, path: &str, link_blob: Oid) -> Option<Diagnostic> {
        let link_path = if self.root.is_empty() { path.to_owned() } else { format!("{}/{path}", self.root) };
        let target = self.repo.find_blob(link_blob).ok()?;
        let target = String::from_utf8_lossy(target.content()).into_owned();
        let parent = link_path.rsplit_once('/').map_or("", |(parent, _)| parent);
        let joined =
            if target.starts_with('/') || parent.is_empty() { target.clone() } else { format!("{parent}/{target}") };
        let exclude_help = format!("remove it, or skip it in berth.yaml with `exclude: [\"{path}\"]`");
        match normalize_relative(&joined) {
            None => Some(
                Diagnostic::error(
                    path,
                    Pos::START,
                    format!("symlink points outside the repository (to `{target}`); it is not followed"),
                )
                .help(exclude_help),
            ),
            Some(resolved) => match tree.get_path(Path::new(&resolved)).ok()?.kind() {
                Some(ObjectType::Tree) => Some(
                    Diagnostic::warning(path, Pos::START, format!("symlinked folder (to `{target}`) is not followed"))
                        .help("berth reads the folder it points to under its own name when the patterns select it"),
                ),
                _ => None,
            },
        }
    }

    /// Resolves a symlink stored in the commit to the blob it names, if it stays inside the
    /// repository; otherwise says why not.
    fn follow_symlink(&self, tree: &git2::Tree<'_>, path: &str, link_blob: Oid) -> Result<Oid, String> {
        let mut link_path = if self.root.is_empty() { path.to_owned() } else { format!("{}/{path}", self.root) };
        let mut blob = link_blob;
        for _ in 0..MAX_SYMLINK_HOPS {
            let target = self.repo.find_blob(blob).map_err(|e| e.message().to_owned())?;
            let target = String::from_utf8_lossy(target.content()).into_owned();
            let parent = link_path.rsplit_once('/').map_or("", |(parent, _)| parent);
            let joined = if target.starts_with('/') || parent.is_empty() {
                target.clone()
            } else {
                format!("{parent}/{target}")
            };
            let Some(resolved) = normalize_relative(&joined) else {
                return Err(format!("symlink points outside the repository (to `{target}`); it is not followed"));
            };
            let entry = tree
                .get_path(Path::new(&resolved))
                .map_err(|_| format!("symlink points to `{target}`, which is not in the commit"))?;
            match entry.kind() {
                Some(ObjectType::Blob) if entry.filemode() == i32::from(git2::FileMode::Link) => {
                    link_path = resolved;
                    blob = entry.id();
                }
                Some(ObjectType::Blob) => return Ok(entry.id()),
                _ => return Err(format!("symlink points to `{target}`, which is not a file")),
            }
        }
        Err(format!("symlink chain is longer than {MAX_SYMLINK_HOPS} links"))
    }

    fn parse_entries(
        &mut self,
        commit: CommitInfo,
        config: Config,
        entries: Vec<FileEntry>,
        mut diagnostics: Vec<Diagnostic>,
        rendered: kustomized::Rendered,
    ) -> Result<Loaded, SyncError> {
        let files = entries.len() + rendered.files;
        diagnostics.extend(rendered.diagnostics);
        // Read what the cache does not hold, then parse it on every core: files are independent.
        let mut to_parse: Vec<(Oid, String, Result<String, Diagnostic>)> = Vec::new();
        {
            let odb = self.repo.odb()?;
            for entry in &entries {
                if self.files.contains_key(&(entry.blob, entry.path.clone())) {
                    continue;
                }
                let (size, _) = odb.read_header(entry.blob)?;
                let text = if size > yaml::MAX_FILE_BYTES {
                    Err(Diagnostic::error(
                        &entry.path,
                        Pos::START,
                        format!("file is {size} bytes, larger than the limit of {} bytes", yaml::MAX_FILE_BYTES),
                    )
                    .help("split it into several files"))
                } else {
                    let blob = self.repo.find_blob(entry.blob)?;
                    String::from_utf8(blob.content().to_vec())
                        .map_err(|_| Diagnostic::error(&entry.path, Pos::START, "file is not UTF-8 text"))
                };
                to_parse.push((entry.blob, entry.path.clone(), text));
            }
        }
        self.stats.file_parses += to_parse.len() as u64;
        self.stats.file_hits += (entries.len() - to_parse.len()) as u64;
        for (blob, path, parsed) in parse_in_parallel(to_parse, &self.policy, self.keys.as_deref()) {
            self.files.insert((blob, path), Arc::new(parsed));
        }

        let mut resources = Vec::new();
        let mut secrets = std::collections::BTreeMap::new();
        let mut unloaded = Vec::new();
        let mut bytes = 0u64;
        let parsed_files = entries
            .into_iter()
            .filter_map(|entry| {
                let key = (entry.blob, entry.path);
                let parsed = self.files.get(&key)?.clone();
                Some((key.1, parsed))
            })
            .chain(rendered.parsed);
        for (path, parsed) in parsed_files {
            bytes += parsed.bytes as u64;
            if bytes > self.limits.max_bytes && bytes - parsed.bytes as u64 <= self.limits.max_bytes {
                diagnostics.push(
                    Diagnostic::error(
                        &path,
                        Pos::START,
                        format!("the manifests pass {} bytes here, the limit of one commit", self.limits.max_bytes),
                    )
                    .help("point berth at a smaller folder (--subdir), or have the operator raise --max-bytes"),
                );
            }
            if resources.len() <= self.limits.max_objects
                && resources.len() + parsed.resources.len() > self.limits.max_objects
            {
                let over = &parsed.resources[self.limits.max_objects - resources.len()];
                diagnostics.push(
                    Diagnostic::error(
                        &over.file,
                        over.pos,
                        format!(
                            "{} is object {} of this commit, past the limit of {}",
                            over.key,
                            self.limits.max_objects + 1,
                            self.limits.max_objects
                        ),
                    )
                    .help("split the repository, or have the operator raise --max-objects"),
                );
            }
            resources.extend(parsed.resources.iter().cloned());
            diagnostics.extend(parsed.diagnostics.iter().cloned());
            secrets.extend(parsed.secrets.iter().cloned());
            for field in parsed.encrypted.iter().filter(|f| !f.allowed(&config.secrets.encrypted_fields)) {
                diagnostics.push(
                    Diagnostic::error(
                        &field.file,
                        field.pos,
                        format!(
                            "{} of a {} is encrypted, but only a Secret's data and stringData may be",
                            field.path, field.kind
                        ),
                    )
                    .field(field.path.clone())
                    .help(format!(
                        "keep it in plain text, or allow it in berth.yaml: secrets: {{encryptedFields: [{}.{}]}}",
                        field.kind,
                        field.path.split('.').next().unwrap_or_default()
                    )),
                );
            }
            unloaded.extend(parsed.unloaded_templates.iter().cloned());
        }
        diagnostics.extend(validate::across(&resources, &unloaded));
        diagnostics.extend(self.replica_limit(&resources));
        resources.sort_unstable_by(|a, b| a.key.cmp(&b.key));
        diag::sort(&mut diagnostics);
        settle_kind_notices(&mut diagnostics, &config);
        let rollouts = plan::rollout::Rollouts::of(
            &resources,
            self.last.as_ref().map(|last| (&last.resources[..], &last.rollouts)),
        );
        Ok(Loaded { commit, config, resources: resources.into(), diagnostics, files, secrets, rollouts })
    }
}

impl Loader {
    /// An error at the largest workload when the replicas of all of them pass the limit.
    fn replica_limit(&self, resources: &[Arc<manifest::Resource>]) -> Option<Diagnostic> {
        let replicas = |r: &manifest::Resource| match (&r.object, r.key.kind) {
            (_, manifest::Kind::DaemonSet) => 1,
            // A Job runs `parallelism` pods at a time.
            (manifest::Object::Job(job), _) => u64::try_from(job.spec.parallelism.unwrap_or(1).max(0)).unwrap_or(0),
            _ => u64::try_from(r.object.replicas().unwrap_or(0).max(0)).unwrap_or(0),
        };
        let total: u64 = resources.iter().map(|r| replicas(r)).sum();
        if total <= self.limits.max_replicas {
            return None;
        }
        let largest = resources.iter().max_by_key(|r| replicas(r))?;
        Some(
            Diagnostic::error(
                &largest.file,
                largest.pos_of("spec.replicas"),
                format!(
                    "the workloads of this commit ask for {total} replicas, more than the limit of {} ({} asks for {})",
                    self.limits.max_replicas,
                    largest.key,
                    replicas(largest)
                ),
            )
            .object(largest.key.to_string())
            .field("spec.replicas")
            .help("lower the replicas, or have the operator raise --max-replicas"),
        )
    }
}

/// One warning per accepted kind (the first place it appears, with a count of the others), and
/// custom resources as errors when `berth.yaml` says `customResources: error`.
fn settle_kind_notices(diagnostics: &mut Vec<Diagnostic>, config: &Config) {
    use crate::manifest::kinds::{ACCEPTED_PREFIX, ACCEPTED_SUFFIX, CUSTOM_PREFIX};
    let mut counts: HashMap<String, usize> = HashMap::new();
    diagnostics.retain(|d| {
        let notice = d.severity == diag::Severity::Warning
            && d.message.starts_with(ACCEPTED_PREFIX)
            && d.message.ends_with(ACCEPTED_SUFFIX);
        if !notice {
            return true;
        }
        let count = counts.entry(d.message.clone()).or_default();
        *count += 1;
        *count == 1
    });
    for diagnostic in diagnostics.iter_mut() {
        if let Some(&count) = counts.get(&diagnostic.message).filter(|c| **c > 1) {
            let help = diagnostic.help.take().unwrap_or_default();
            diagnostic.help = Some(format!("{help}; {} more objects of this kind are not acted on either", count - 1));
        }
        if config.custom_resources == crate::sync::config::CustomResources::Error
            && diagnostic.message.starts_with(CUSTOM_PREFIX)
        {
            diagnostic.severity = diag::Severity::Error;
            diagnostic.help = Some("berth.yaml says `customResources: error`; remove the object or set `skip`".into());
        }
    }
}

/// Parses files on as many threads as there are cores; the results keep the input's order.
fn parse_in_parallel(
    files: Vec<(Oid, String, Result<String, Diagnostic>)>,
    policy: &manifest::policy::Policy,
    keys: Option<&manifest::sops::Keys>,
) -> Vec<(Oid, String, ParsedFile)> {
    let parse = |(blob, path, text): (Oid, String, Result<String, Diagnostic>)| {
        let parsed = match text {
            Ok(text) => manifest::parse_file_keyed(&path, &text, policy, keys),
            Err(diagnostic) => ParsedFile { diagnostics: vec![diagnostic], ..ParsedFile::default() },
        };
        (blob, path, parsed)
    };
    crate::parallel::map(files, parse)
}

fn commit_info(commit: &git2::Commit<'_>) -> CommitInfo {
    CommitInfo {
        sha: commit.id().to_string(),
        author: commit.author().name().unwrap_or("unknown").to_owned(),
        message: commit.summary().unwrap_or("").to_owned(),
        time: commit.time().seconds(),
    }
}

/// Normalizes a `/`-separated path relative to the repository's top; `None` when it leaves the
/// repository (absolute, or `..` above the top).
fn normalize_relative(path: &str) -> Option<String> {
    let mut parts: Vec<&str> = Vec::new();
    for component in Path::new(path).components() {
        match component {
            Component::Normal(part) => parts.push(part.to_str()?),
            Component::CurDir => {}
            Component::ParentDir => {
                parts.pop()?;
            }
            Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    Some(parts.join("/"))
}

/// Credentials for fetching: the SSH agent for ssh URLs, Git's credential helpers for https.
fn callbacks() -> git2::RemoteCallbacks<'static> {
    let mut callbacks = git2::RemoteCallbacks::new();
    callbacks.credentials(|url, username, allowed| {
        if allowed.contains(git2::CredentialType::SSH_KEY) {
            return git2::Cred::ssh_key_from_agent(username.unwrap_or("git"));
        }
        if allowed.contains(git2::CredentialType::USER_PASS_PLAINTEXT) {
            if let Ok(config) = git2::Config::open_default() {
                return git2::Cred::credential_helper(&config, url, username);
            }
        }
        git2::Cred::default()
    });
    callbacks
}
