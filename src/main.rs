//! The `berth` command line: parses arguments, wires the library's parts together, prints.
//!
//! Exit codes: 0 success (for `plan`: no changes), 2 `plan` found changes, 1 any error, usage
//! errors included, so that CI can gate on `berth plan`.

use anyhow::{Context, Result, bail};
use berth::diag::Diagnostic;
use berth::plan::{self, State, render};
use berth::store::Store;

use berth::sync::{Loaded, Loader, SyncError};
use clap::{Parser, Subcommand, ValueEnum};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

#[derive(Parser)]
#[command(name = "berth", version, about = "A declarative GitOps reconciler for containers on plain Docker hosts")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum ValidateFormat {
    Text,
    Json,
}

#[derive(Clone, Copy, ValueEnum)]
enum PlanFormat {
    Text,
    Markdown,
    Json,
}

/// Where the manifests come from: a local repository (or a folder inside one), or a remote URL.
#[derive(clap::Args)]
struct SourceArgs {
    /// A repository, a folder inside one (the manifest root), or a remote URL (https, ssh, file).
    #[arg(default_value = ".")]
    path: String,
    /// For a remote URL: the manifest root inside the repository.
    #[arg(long, default_value = "")]
    subdir: String,
    /// Where remote repositories are cached [default: $XDG_CACHE_HOME/berth/repos].
    #[arg(long)]
    cache_dir: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Check the manifests of a commit and print every error and warning.
    Validate {
        #[command(flatten)]
        source: SourceArgs,
        /// The revision to check: a branch, tag, sha or HEAD.
        #[arg(long, default_value = "HEAD", conflicts_with = "worktree")]
        rev: String,
        /// Check the files as they are on disk, uncommitted changes included.
        #[arg(long)]
        worktree: bool,
        #[arg(short = 'o', long = "output", value_enum, default_value = "text")]
        format: ValidateFormat,
    },
    /// Show what applying a commit would change. Exit code 0: no changes, 2: changes, 1: error.
    Plan {
        #[command(flatten)]
        source: SourceArgs,
        /// The revision to compare with [default: the parent of --to].
        #[arg(long, conflicts_with = "state")]
        from: Option<String>,
        /// The revision to apply.
        #[arg(long, default_value = "HEAD", conflicts_with = "worktree")]
        to: String,
        /// Compare with the observed state in this berth SQLite file instead of a commit.
        #[arg(long)]
        state: Option<PathBuf>,
        /// Plan the files as they are on disk, uncommitted changes included.
        #[arg(long)]
        worktree: bool,
        #[arg(long, value_enum, default_value = "text")]
        format: PlanFormat,
    },
    /// Run the node agent: join the control plane, run the pods assigned to this node on the
    /// local Docker engine, and report what runs. Stopping it stops no pod.
    Agent {
        /// The control plane's URL.
        #[arg(long)]
        server: String,
        /// The cluster's join token; needed only until the node has joined.
        #[arg(long, env = "BERTH_JOIN_TOKEN", hide_env_values = true)]
        join_token: Option<String>,
        /// The node's name [default: the host name].
        #[arg(long)]
        name: Option<String>,
        /// The address pods' ports are published on, and other nodes reach this one by.
        #[arg(long, default_value = "127.0.0.1")]
        address: String,
        /// Node labels, for nodeSelector: `k=v,k2=v2`.
        #[arg(long, value_delimiter = ',')]
        labels: Vec<String>,
        /// Where the node keeps its credential, inventory and pod files.
        #[arg(long, default_value = "/var/lib/berth/agent")]
        state_dir: PathBuf,
        /// Seconds between heartbeats.
        #[arg(long, default_value_t = 2)]
        heartbeat_seconds: u64,
    },
    /// Run the control plane: follow a repository's branch and converge the joined nodes to it.
    Server {
        /// A local repository, or a folder inside one (the manifest root).
        #[arg(long)]
        repo: PathBuf,
        /// The branch to follow [default: the checked-out branch].
        #[arg(long, default_value = "HEAD")]
        branch: String,
        /// The SQLite file of the control plane.
        #[arg(long, default_value = "berth.db")]
        db: PathBuf,
        #[arg(long, default_value = "127.0.0.1:7420")]
        listen: String,
        /// The token agents join with [default: made on first start and kept beside the database].
        #[arg(long, env = "BERTH_JOIN_TOKEN", hide_env_values = true)]
        join_token: Option<String>,
        /// Seconds without a heartbeat before a node is NotReady and its pods move.
        #[arg(long, default_value_t = 30)]
        node_grace_seconds: i64,
    },
    /// Run berth on this machine: the control plane following PATH's checked-out branch, and one
    /// agent on the local Docker engine, with their state under `.berth/` in the repository.
    Up {
        /// A repository, or a folder inside one (the manifest root).
        #[arg(default_value = ".")]
        path: PathBuf,
        #[arg(long, default_value = "127.0.0.1:7420")]
        listen: String,
        /// The local node's name [default: the host name].
        #[arg(long)]
        name: Option<String>,
    },
    /// Write the JSON Schemas of every kind (draft-07, for yaml-language-server).
    Schemas {
        #[arg(long, default_value = "schemas")]
        out: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            let _ = error.print();
            return if error.use_stderr() { ExitCode::from(1) } else { ExitCode::SUCCESS };
        }
    };
    match run(cli) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(1)
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Validate { source, rev, worktree, format } => validate(&source, &rev, worktree, format),
        Command::Plan { source, from, to, state, worktree, format } => {
            plan_command(&source, from, &to, state.as_deref(), worktree, format)
        }
        Command::Agent { server, join_token, name, address, labels, state_dir, heartbeat_seconds } => {
            let name = match name {
                Some(name) => name,
                None => std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_lowercase())?,
            };
            let mut config = berth::nodes::agent::AgentConfig::new(&server, &name, &address, &state_dir);
            config.join_token = join_token;
            config.heartbeat_interval = std::time::Duration::from_secs(heartbeat_seconds.max(1));
            for label in labels.iter().filter(|l| !l.is_empty()) {
                let (key, value) =
                    label.split_once('=').with_context(|| format!("label `{label}` is not key=value"))?;
                config.labels.insert(key.to_owned(), value.to_owned());
            }
            init_logging();
            let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
            runtime.block_on(async {
                let docker =
                    berth::nodes::docker::Docker::connect().await.context("connecting to the Docker engine")?;
                let shutdown = tokio_util::sync::CancellationToken::new();
                let signals = shutdown.clone();
                let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
                let agent = berth::nodes::agent::run(config, std::sync::Arc::new(docker), shutdown.clone());
                tokio::pin!(agent);
                tokio::select! {
                    result = &mut agent => return result.map_err(anyhow::Error::from),
                    _ = terminate.recv() => signals.cancel(),
                    _ = tokio::signal::ctrl_c() => signals.cancel(),
                }
                agent.await.map_err(anyhow::Error::from)
            })?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Server { repo, branch, db, listen, join_token, node_grace_seconds } => {
            init_logging();
            let state_dir = db
                .parent()
                .map(Path::to_path_buf)
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or_else(|| PathBuf::from("."));
            let token = match join_token {
                Some(token) => token,
                None => join_token_in(&state_dir)?,
            };
            let loader = Loader::open(&repo)?;
            let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
            runtime.block_on(async {
                let shutdown = tokio_util::sync::CancellationToken::new();
                let (status, _) = tokio::sync::watch::channel(berth::server::control::SyncStatus::default());
                let mut tasks = serve_control_plane(
                    loader,
                    &db,
                    &listen,
                    &token,
                    &branch,
                    node_grace_seconds,
                    status,
                    shutdown.clone(),
                )
                .await?;
                eprintln!("berth server: following {} of {} on http://{listen}", branch, repo.display());
                wait_for_signal().await;
                shutdown.cancel();
                while tasks.join_next().await.is_some() {}
                anyhow::Ok(())
            })?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Up { path, listen, name } => up(&path, &listen, name),
        Command::Schemas { out } => {
            std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
            for (name, schema) in berth::manifest::schema::schemas() {
                let path = out.join(name);
                std::fs::write(&path, serde_json::to_string_pretty(&schema)? + "\n")
                    .with_context(|| format!("writing {}", path.display()))?;
                println!("{}", path.display());
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The join token kept in `state_dir`, made on first use (readable by its owner only).
fn join_token_in(state_dir: &Path) -> Result<String> {
    let path = state_dir.join("join-token");
    if let Ok(token) = std::fs::read_to_string(&path) {
        return Ok(token.trim().to_owned());
    }
    std::fs::create_dir_all(state_dir).with_context(|| format!("creating {}", state_dir.display()))?;
    let mut bytes = [0u8; 24];
    rand::fill(&mut bytes);
    let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .create_new(true)
        .write(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("writing {}", path.display()))?;
    file.write_all(token.as_bytes())?;
    Ok(token)
}

async fn wait_for_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = terminate => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

/// Starts the agent API and the control loop; both stop when `shutdown` is cancelled.
#[allow(clippy::too_many_arguments)]
async fn serve_control_plane(
    loader: Loader,
    db: &Path,
    listen: &str,
    token: &str,
    branch: &str,
    node_grace_seconds: i64,
    status: tokio::sync::watch::Sender<berth::server::control::SyncStatus>,
    shutdown: tokio_util::sync::CancellationToken,
) -> Result<tokio::task::JoinSet<()>> {
    let store = Arc::new(Store::open(db).await.with_context(|| format!("opening {}", db.display()))?);
    let api = berth::server::agent_api::AgentApi::new(store.clone(), token);
    let listener = tokio::net::TcpListener::bind(listen).await.with_context(|| format!("listening on {listen}"))?;
    let mut tasks = tokio::task::JoinSet::new();
    let router = api.router();
    let stop = shutdown.clone();
    tasks.spawn(async move {
        if let Err(error) = axum::serve(listener, router).with_graceful_shutdown(stop.cancelled_owned()).await {
            tracing::error!(%error, "The HTTP server stopped.");
        }
    });
    let mut config = berth::server::control::ControlConfig { branch: branch.to_owned(), ..Default::default() };
    config.controller.node_grace_seconds = node_grace_seconds;
    tasks.spawn(berth::server::control::run(loader, store, api, config, status, shutdown));
    Ok(tasks)
}

/// `berth up`: the control plane and one local agent in this process.
fn up(path: &Path, listen: &str, name: Option<String>) -> Result<ExitCode> {
    let loader = Loader::open(path)?;
    let top = loader.workdir().map(Path::to_path_buf).context("berth up needs a repository with a work tree")?;
    let state = top.join(".berth");
    std::fs::create_dir_all(&state).with_context(|| format!("creating {}", state.display()))?;
    // The state folder is the machine's, never the repository's.
    std::fs::write(state.join(".gitignore"), "*\n")?;
    let token = join_token_in(&state)?;
    let name = match name {
        Some(name) => name,
        None => std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_lowercase())
            .unwrap_or_else(|_| "local".into()),
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    runtime.block_on(async {
        let docker =
            berth::nodes::docker::Docker::connect().await.context("connecting to the Docker engine; is it running?")?;
        let shutdown = tokio_util::sync::CancellationToken::new();
        let (status, mut updates) = tokio::sync::watch::channel(berth::server::control::SyncStatus::default());
        let mut tasks =
            serve_control_plane(loader, &state.join("berth.db"), listen, &token, "HEAD", 30, status, shutdown.clone())
                .await?;
        let mut agent_config = berth::nodes::agent::AgentConfig::new(
            &format!("http://{listen}"),
            &name,
            "127.0.0.1",
            &state.join("agent"),
        );
        agent_config.join_token = Some(token.clone());
        let agent_shutdown = shutdown.clone();
        tasks.spawn(async move {
            if let Err(error) = berth::nodes::agent::run(agent_config, Arc::new(docker), agent_shutdown).await {
                eprintln!("berth up: the local agent stopped: {error}");
            }
        });
        println!("berth is up: control plane on http://{listen}, node {name}, state in {}", state.display());
        println!(
            "following the checked-out branch of {}; commit to deploy, Ctrl-C to stop (pods keep running)",
            top.display()
        );
        let mut last_line = String::new();
        loop {
            tokio::select! {
                _ = wait_for_signal() => break,
                changed = updates.changed() => {
                    if changed.is_err() {
                        break;
                    }
                }
            }
            let line = progress_line(&updates.borrow_and_update());
            if !line.is_empty() && line != last_line {
                println!("{line}");
                last_line = line;
            }
        }
        shutdown.cancel();
        while tasks.join_next().await.is_some() {}
        println!("berth stopped; the pods keep running and the next `berth up` adopts them");
        anyhow::Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}

/// One line of `berth up`'s progress: the commit, and each workload's ready replicas.
fn progress_line(status: &berth::server::control::SyncStatus) -> String {
    if let Some(failed) = &status.failed {
        return format!("not applied: {failed}");
    }
    let (Some(sha), Some(pass)) = (&status.applied, &status.last_pass) else { return String::new() };
    let state = if status.synced { "synced" } else { "progressing" };
    let workloads: Vec<String> = pass
        .workloads
        .iter()
        .map(|w| {
            let wanted = w.replicas.map_or_else(|| "all".to_owned(), |r| r.to_string());
            let mut text = format!("{} {}/{wanted}", w.key.qualified_name(), w.available);
            if let Some(reason) = w.unschedulable.first() {
                text.push_str(&format!(" (pending: {reason})"));
            }
            text
        })
        .collect();
    format!("{state} {} \"{}\": {}", &sha[..7.min(sha.len())], status.applied_message, workloads.join(", "))
}

/// Logs to stderr; `RUST_LOG` chooses what (default: info).
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
}

fn open_source(source: &SourceArgs) -> Result<Loader> {
    let is_url = source.path.contains("://")
        || (source.path.contains('@') && source.path.contains(':') && !Path::new(&source.path).exists());
    if is_url {
        let cache_dir = match &source.cache_dir {
            Some(dir) => dir.clone(),
            None => default_cache_dir().context("no cache folder: set --cache-dir or XDG_CACHE_HOME")?,
        };
        Ok(Loader::remote(&source.path, &cache_dir, &source.subdir)?)
    } else {
        if !source.subdir.is_empty() {
            bail!("--subdir is for remote URLs; for a local repository, pass the folder itself as PATH");
        }
        Ok(Loader::open(Path::new(&source.path))?)
    }
}

fn default_cache_dir() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("berth").join("repos"))
}

fn load(loader: &mut Loader, rev: &str, worktree: bool) -> Result<Arc<Loaded>> {
    if worktree { Ok(Arc::new(loader.load_worktree()?)) } else { Ok(loader.load(rev)?) }
}

fn validate(source: &SourceArgs, rev: &str, worktree: bool, format: ValidateFormat) -> Result<ExitCode> {
    let mut loader = open_source(source)?;
    let loaded = load(&mut loader, rev, worktree)?;
    match format {
        ValidateFormat::Json => {
            let report = serde_json::json!({
                "commit": loaded.commit,
                "files": loaded.files,
                "objects": loaded.resources.len(),
                "errors": loaded.error_count(),
                "warnings": loaded.warning_count(),
                "diagnostics": loaded.diagnostics,
            });
            println!("{}", serde_json::to_string_pretty(&report)?);
        }
        ValidateFormat::Text => {
            let mut out = anstream::stdout();
            for diagnostic in &loaded.diagnostics {
                writeln!(out, "{}", styled(diagnostic))?;
            }
            let what = if worktree {
                "the work tree".to_owned()
            } else {
                format!("commit {} ({})", loaded.commit.short(), loaded.commit.message)
            };
            writeln!(
                out,
                "{}: {} objects in {} files, {} errors, {} warnings",
                what,
                loaded.resources.len(),
                loaded.files,
                loaded.error_count(),
                loaded.warning_count()
            )?;
        }
    }
    Ok(if loaded.is_valid() { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

fn styled(diagnostic: &Diagnostic) -> String {
    let text = diagnostic.to_string();
    let (word, color) = if diagnostic.is_error() { (": error: ", "\x1b[1;31m") } else { (": warning: ", "\x1b[1;33m") };
    text.replacen(word, &format!(": {color}{}\x1b[0m: ", word.trim_matches([' ', ':'])), 1)
}

/// Refuses to plan against a commit with errors: a plan must never treat a broken commit as
/// "nothing declared".
fn require_valid(loaded: &Loaded, side: &str) -> Result<()> {
    if loaded.is_valid() {
        return Ok(());
    }
    let mut err = anstream::stderr();
    for diagnostic in loaded.diagnostics.iter().filter(|d| d.is_error()) {
        let _ = writeln!(err, "{}", styled(diagnostic));
    }
    bail!(
        "the {side} commit {} has {} errors, so nothing is planned; fix them (see `berth validate --rev {}`)",
        loaded.commit.short(),
        loaded.error_count(),
        loaded.commit.short()
    )
}

fn plan_command(
    source: &SourceArgs,
    from: Option<String>,
    to: &str,
    state: Option<&Path>,
    worktree: bool,
    format: PlanFormat,
) -> Result<ExitCode> {
    let mut loader = open_source(source)?;
    let desired_commit = load(&mut loader, to, worktree)?;
    require_valid(&desired_commit, "desired")?;
    let desired = State {
        revision: if worktree { "work tree".into() } else { desired_commit.commit.sha.clone() },
        title: desired_commit.commit.message.clone(),
        resources: desired_commit.resources.clone(),
    };
    let observed = match (state, from) {
        (Some(state), _) => {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            let applied = runtime
                .block_on(async {
                    let store = Store::open_existing(state).await?;
                    let applied = store.applied().await;
                    store.close().await;
                    applied
                })
                .with_context(|| format!("reading the observed state from {}", state.display()))?;
            State {
                revision: applied.commit.as_ref().map_or_else(|| "observed state".to_owned(), |c| c.sha.clone()),
                title: applied
                    .commit
                    .as_ref()
                    .map_or_else(|| "nothing applied yet".to_owned(), |c| format!("observed: {}", c.message)),
                resources: applied.resources,
            }
        }
        (None, from) => {
            let from = match from {
                Some(from) => from,
                None => {
                    let base = if worktree { "HEAD".to_owned() } else { format!("{}^", desired_commit.commit.sha) };
                    if loader.resolve(&base).is_err() {
                        // The first commit of a repository: everything is created.
                        let plan = plan::plan(
                            &desired,
                            &State { revision: "empty".into(), title: String::new(), resources: Vec::new() },
                        );
                        return print_plan(&plan, format);
                    }
                    base
                }
            };
            match loader.load(&from) {
                Ok(observed_commit) => {
                    require_valid(&observed_commit, "--from")?;
                    State {
                        revision: observed_commit.commit.sha.clone(),
                        title: observed_commit.commit.message.clone(),
                        resources: observed_commit.resources.clone(),
                    }
                }
                // An older commit from before the manifest folder existed declares nothing there.
                // Only the older side may be absent: a missing root on the desired side is an error.
                Err(SyncError::MissingRoot { .. }) => {
                    let info = loader.resolve(&from)?;
                    State {
                        revision: info.sha,
                        title: format!("{}; no manifests yet", info.message),
                        resources: Vec::new(),
                    }
                }
                Err(error) => return Err(error.into()),
            }
        }
    };
    print_plan(&plan::plan(&desired, &observed), format)
}

fn print_plan(plan: &plan::Plan, format: PlanFormat) -> Result<ExitCode> {
    let mut out = anstream::stdout();
    match format {
        PlanFormat::Text => write!(out, "{}", render::text(plan, true))?,
        PlanFormat::Markdown => write!(out, "{}", render::markdown(plan))?,
        PlanFormat::Json => write!(out, "{}", render::json(plan))?,
    }
    Ok(if plan.summary.has_changes() { ExitCode::from(2) } else { ExitCode::SUCCESS })
}
