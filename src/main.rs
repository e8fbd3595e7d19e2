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
    /// How `server`, `agent` and `up` write their log on stderr: `text` (coloured only on a
    /// terminal) or `json`, one object per line.
    #[arg(long, global = true, value_enum, default_value = "text")]
    log_format: LogFormat,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum LogFormat {
    Text,
    Json,
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
    /// The operator's host-access policy (YAML) to check under [default: berth's default policy].
    #[arg(long)]
    policy: Option<PathBuf>,
    /// An age identity file (0600) to decrypt SOPS-encrypted manifests with.
    #[arg(long, env = "SOPS_AGE_KEY_FILE")]
    age_key_file: Option<PathBuf>,
    #[command(flatten)]
    limits: LimitArgs,
}

/// What one commit may declare at most; a commit beyond them is an error.
#[derive(clap::Args, Clone, Copy)]
struct LimitArgs {
    /// Objects in one commit.
    #[arg(long, default_value_t = berth::sync::Limits::default().max_objects)]
    max_objects: usize,
    /// Replicas summed over the workloads of one commit.
    #[arg(long, default_value_t = berth::sync::Limits::default().max_replicas)]
    max_replicas: u64,
    /// Bytes of manifest files in one commit.
    #[arg(long, default_value_t = berth::sync::Limits::default().max_bytes)]
    max_bytes: u64,
}

impl LimitArgs {
    fn limits(self) -> berth::sync::Limits {
        berth::sync::Limits {
            max_objects: self.max_objects,
            max_replicas: self.max_replicas,
            max_bytes: self.max_bytes,
        }
    }
}

/// How `berth server` speaks TLS.
#[derive(clap::Args)]
struct TlsArgs {
    /// Serve plain HTTP instead of HTTPS: accepted only with a loopback --listen address.
    #[arg(long)]
    insecure_http: bool,
    /// Another name (DNS name or IP address) the serving certificate is valid for; repeat for
    /// more. The listen address (for 0.0.0.0, every address of this host) is always in it.
    #[arg(long = "tls-san", value_delimiter = ',')]
    sans: Vec<String>,
    /// Serve this certificate chain (PEM) instead of one signed by berth's own CA; with --tls-key.
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --tls-cert.
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Seconds a node's client certificate is valid; agents renew it two thirds in.
    #[arg(long, default_value_t = berth::tls::NODE_LIFETIME.as_secs(), hide = true)]
    node_certificate_seconds: u64,
}

/// TLS as the server will speak it; None for plain HTTP.
struct TlsSetup {
    sans: Vec<String>,
    operator: Option<(PathBuf, PathBuf)>,
    node_lifetime: std::time::Duration,
}

impl TlsArgs {
    fn check(self, listen: &str) -> Result<Option<TlsSetup>> {
        if self.insecure_http {
            let loopback = listen
                .parse::<std::net::SocketAddr>()
                .map(|a| a.ip().is_loopback())
                .unwrap_or_else(|_| listen.starts_with("localhost:"));
            if !loopback {
                bail!(
                    "--insecure-http serves plain HTTP and is accepted only on a loopback --listen address, not {listen}; drop it to serve HTTPS"
                );
            }
            if self.tls_cert.is_some() {
                bail!("--insecure-http and --tls-cert contradict each other; give one");
            }
            return Ok(None);
        }
        Ok(Some(TlsSetup {
            sans: self.sans.into_iter().filter(|s| !s.is_empty()).collect(),
            operator: self.tls_cert.zip(self.tls_key),
            node_lifetime: std::time::Duration::from_secs(self.node_certificate_seconds.max(10)),
        }))
    }
}

/// How to reach a running server.
#[derive(clap::Args)]
struct ServerArgs {
    /// The server's URL [default: the one `berth login` kept, else http://127.0.0.1:7420].
    #[arg(long, env = "BERTH_SERVER")]
    server: Option<String>,
    /// A file holding the API token [default: BERTH_TOKEN, else .berth/api-token here or above].
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// The CA certificate (PEM) to trust for an https:// server [default: BERTH_CA_FILE, else the
    /// login's, else ca.pem beside the token file, else the system's roots].
    #[arg(long)]
    ca_file: Option<PathBuf>,
    #[arg(short = 'o', long = "output", value_enum, default_value = "table")]
    output: Output,
}

#[derive(Subcommand)]
enum SecretAction {
    /// Rewrite FILE with its Secrets' data and stringData encrypted, in SOPS' format, for the
    /// age recipients of berth.yaml (`secrets.ageRecipients`, found beside FILE or above).
    Encrypt {
        file: PathBuf,
        /// An age recipient to encrypt for instead of berth.yaml's; repeat for more.
        #[arg(long = "recipient", short = 'r')]
        recipients: Vec<String>,
    },
    /// Open FILE decrypted in $EDITOR, then encrypt it again for the same recipients.
    Edit {
        file: PathBuf,
        /// An age identity file (0600) that decrypts FILE.
        #[arg(long, env = "SOPS_AGE_KEY_FILE")]
        age_key_file: PathBuf,
    },
}

#[derive(Subcommand)]
enum NodeAction {
    /// Revoke a node: its certificate and credential stop working at once, and its pods are
    /// placed on other nodes. Its containers are not stopped; stop its agent and them by hand.
    Remove {
        name: String,
        /// Do not ask on a terminal first.
        #[arg(long, short = 'y')]
        yes: bool,
        #[command(flatten)]
        server: ServerArgs,
    },
}

#[derive(Subcommand)]
enum TokenAction {
    /// Make a token and print it once, on its own line: viewer reads (never a secret value);
    /// deployer also approves, rolls back, runs CronJobs and reads logs; admin also execs,
    /// port-forwards and manages tokens.
    Create {
        /// Its name, as the audit log shows who acted.
        name: String,
        #[arg(long, value_parser = ["viewer", "deployer", "admin"])]
        role: String,
        /// A namespace it may see and act in; repeat for more. Without one: every namespace.
        #[arg(long = "namespace", short = 'n')]
        namespaces: Vec<String>,
        /// How long it lives: 12h, 30d. Without it: until revoked.
        #[arg(long)]
        expires: Option<String>,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// The tokens, revoked ones too; never the tokens themselves.
    List {
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Revoke a token: it stops working at once.
    Revoke {
        name: String,
        #[command(flatten)]
        server: ServerArgs,
    },
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Output {
    Table,
    Json,
    Yaml,
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
        /// Ask a running server for the plan of --to against its live applied state.
        #[arg(long, conflicts_with_all = ["state", "from", "worktree"])]
        server: Option<String>,
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
        /// Milliseconds before a failed container's first restart; each next wait doubles, up
        /// to five minutes.
        #[arg(long, default_value_t = 10_000)]
        restart_backoff_ms: u64,
        /// Serve /healthz, /readyz and /metrics (Prometheus text) on this address; off when
        /// not given.
        #[arg(long)]
        metrics_listen: Option<String>,
        /// The token /metrics asks for (`Authorization: Bearer TOKEN`); needed off loopback.
        #[arg(long, env = "BERTH_METRICS_TOKEN", hide_env_values = true)]
        metrics_token: Option<String>,
        /// Seconds between two samples of each container's CPU and memory.
        #[arg(long, default_value_t = 10)]
        usage_seconds: u64,
        /// CA certificates (PEM) to trust for an https:// server when the join token pins no CA
        /// (a plain secret); a `K10<hash>::<secret>` token pins the server's own CA instead.
        #[arg(long)]
        ca_file: Option<PathBuf>,
    },
    /// Run the control plane: follow a repository's branch and converge the joined nodes to it.
    Server {
        /// A local repository (or a folder inside one), or a remote URL (https, ssh, file).
        #[arg(long)]
        repo: String,
        /// The manifest root inside the repository.
        #[arg(long, default_value = "")]
        path: String,
        /// The branch to follow [default: the checked-out branch; for a remote, its default branch].
        #[arg(long, default_value = "HEAD")]
        branch: String,
        /// For a remote repository: seconds between fetches (a webhook fetches at once).
        #[arg(long, default_value_t = 30)]
        fetch_interval: u64,
        /// The shared secret of the Git host's push webhook (POST /api/v1/webhooks/git).
        #[arg(long, env = "BERTH_WEBHOOK_SECRET", hide_env_values = true)]
        webhook_secret: Option<String>,
        /// Where remote repositories are cached [default: beside the database].
        #[arg(long)]
        cache_dir: Option<PathBuf>,
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
        /// The host-access policy (YAML): what a manifest may ask of a node [default: berth's default policy].
        #[arg(long)]
        policy: Option<PathBuf>,
        /// An age identity file (0600) to decrypt SOPS-encrypted manifests with.
        #[arg(long, env = "SOPS_AGE_KEY_FILE")]
        age_key_file: Option<PathBuf>,
        #[command(flatten)]
        tls: TlsArgs,
        #[command(flatten)]
        limits: LimitArgs,
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
        /// The host-access policy (YAML): what a manifest may ask of a node [default: berth's default policy].
        #[arg(long)]
        policy: Option<PathBuf>,
        /// An age identity file (0600) to decrypt SOPS-encrypted manifests with.
        #[arg(long, env = "SOPS_AGE_KEY_FILE")]
        age_key_file: Option<PathBuf>,
        #[command(flatten)]
        limits: LimitArgs,
    },
    /// The overall status of a running server: commits, health and counts.
    Status {
        #[command(flatten)]
        server: ServerArgs,
    },
    /// List workloads, jobs, cronjobs, pods, pvc, nodes, services or syncs of a running server.
    Get {
        /// workloads, jobs, cronjobs, pods, pvc, events, nodes, services or syncs.
        what: String,
        /// Only this namespace [default: all].
        #[arg(short, long)]
        namespace: Option<String>,
        /// Print the table, then a row each time one changes, until interrupted.
        #[arg(short, long)]
        watch: bool,
        /// With `events`: only those of KIND/NAME (`pod/web-0`, `deploy/web`, `node/n1`), a
        /// workload's with its pods'.
        #[arg(long = "for", value_name = "KIND/NAME")]
        target: Option<String>,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// CPU and memory in use, as the nodes' agents sample them: `top pods` or `top nodes`.
    Top {
        /// pods or nodes.
        what: String,
        /// Only this namespace [default: all].
        #[arg(short, long)]
        namespace: Option<String>,
        /// Only pods whose labels match: `app=web,tier!=db,canary,!legacy`.
        #[arg(short = 'l', long)]
        selector: Option<String>,
        /// A row per container.
        #[arg(long)]
        containers: bool,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// What a pod's container wrote; for KIND/NAME, every pod of the workload, each line
    /// prefixed with `pod/container |`.
    Logs {
        /// A pod's name, or KIND/NAME such as deployment/web.
        target: String,
        #[arg(short, long, default_value = "default")]
        namespace: String,
        /// The container; needed when a pod has several.
        #[arg(short, long)]
        container: Option<String>,
        /// Every container of each pod.
        #[arg(long)]
        all_containers: bool,
        /// The attempt before the current one (kept until the next restart).
        #[arg(short, long)]
        previous: bool,
        /// Only the last N lines of each container.
        #[arg(long)]
        tail: Option<u64>,
        /// Only what was written in this last while: 30s, 10m, 2h.
        #[arg(long)]
        since: Option<String>,
        /// Each line after the time it was written.
        #[arg(long)]
        timestamps: bool,
        /// Keep printing what is written, across the container's restarts and, for KIND/NAME,
        /// the new pods of a rollout, until interrupted.
        #[arg(short, long)]
        follow: bool,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// One workload in detail: pods per node, rollout, history, pin.
    Describe {
        /// KIND/NAME, such as deployment/web.
        target: String,
        #[arg(short, long, default_value = "default")]
        namespace: String,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// A workload's revisions by commit: sha, author, time, outcome and message.
    History {
        /// KIND/NAME, such as deployment/web.
        target: String,
        #[arg(short, long, default_value = "default")]
        namespace: String,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Hold a workload at an earlier commit's pod template until a new commit is applied (needs the API token).
    Rollback {
        /// KIND/NAME, such as deployment/web.
        target: String,
        #[arg(short, long, default_value = "default")]
        namespace: String,
        /// The commit whose pod template comes back [default: the newest healthy revision with
        /// another template than the running one]. Replicas stay as Git has them.
        #[arg(long)]
        to: Option<String>,
        /// Do not ask on a terminal before rolling back.
        #[arg(long, short = 'y')]
        yes: bool,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Reach a pod's port from this machine: `berth port-forward POD|svc/NAME [LOCAL:]REMOTE`
    /// listens on 127.0.0.1:LOCAL (REMOTE when LOCAL is left out; `:REMOTE` picks a free port)
    /// and carries each connection to the pod through the server and the pod's node.
    #[command(name = "port-forward")]
    PortForward {
        /// A pod's name, or svc/NAME for one ready pod of a Service.
        target: String,
        /// [LOCAL:]REMOTE; for svc/NAME, REMOTE is the Service's port.
        ports: String,
        #[arg(short, long, default_value = "default")]
        namespace: String,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Run a command in a pod's container and exit with its exit code: `berth exec POD -- CMD...`.
    Exec {
        /// The pod's name, as `berth get pods` lists it.
        pod: String,
        /// The container [default: the pod's one container].
        #[arg(short, long)]
        container: Option<String>,
        #[arg(short, long, default_value = "default")]
        namespace: String,
        /// Pass this process's standard input to the command, as it is read.
        #[arg(short = 'i', long)]
        stdin: bool,
        /// Give the command a terminal, sized as this one and resized with it (with -i, for a
        /// shell: `berth exec -it POD -- sh`).
        #[arg(short = 't', long)]
        tty: bool,
        /// The command and its arguments, after `--`.
        #[arg(last = true, required = true)]
        command: Vec<String>,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Secrets kept encrypted in Git (SOPS with age): `secret encrypt FILE`, `secret edit FILE`.
    Secret {
        #[command(subcommand)]
        action: SecretAction,
    },
    /// Named API tokens, each with a role: `token create NAME --role viewer`, `token list`,
    /// `token revoke NAME` (needs an admin token).
    Token {
        #[command(subcommand)]
        action: TokenAction,
    },
    /// Nodes: `node remove NAME` revokes a node's certificate and credential at once and moves
    /// its pods to other nodes (needs an admin token).
    Node {
        #[command(subcommand)]
        action: NodeAction,
    },
    /// Trust a server and keep its URL, CA and token for later commands: shows the fingerprint
    /// of the CA the server presents and asks on a terminal before trusting it. The token comes
    /// from BERTH_TOKEN, --token-file, or standard input.
    Login {
        /// The server's URL, such as https://berth.example:7420.
        url: String,
        /// A file holding the API token.
        #[arg(long)]
        token_file: Option<PathBuf>,
        /// Trust the CA whose SHA-256 fingerprint (hex, colons allowed) is this, without asking;
        /// `berth server` prints it at start.
        #[arg(long)]
        ca_fingerprint: Option<String>,
        /// Trust this CA file (PEM) instead of the one the server presents.
        #[arg(long, env = "BERTH_CA_FILE")]
        ca_file: Option<PathBuf>,
    },
    /// What was done through the API, by which token, from where, and how it ended (needs an
    /// admin token).
    Audit {
        /// Only what is newer than this: 30s, 10m, 2h, 7d.
        #[arg(long)]
        since: Option<String>,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Remove an orphaned claim's volume and the data in it: `delete pvc NAME`. Everything else
    /// is deleted by removing it from Git.
    Delete {
        /// What to delete: pvc.
        what: String,
        /// Its name.
        name: String,
        #[arg(short, long, default_value = "default")]
        namespace: String,
        /// Do not ask on a terminal first.
        #[arg(long, short = 'y')]
        yes: bool,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Start something by hand: `create job NAME --from=cronjob/NIGHTLY` runs a CronJob's Job now.
    Create {
        /// What to create: job.
        what: String,
        /// Its name.
        name: String,
        /// What it is made from: cronjob/NAME.
        #[arg(long)]
        from: String,
        #[arg(short, long, default_value = "default")]
        namespace: String,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Show the plan of a commit that waits for approval; with --approve, apply exactly that plan.
    Sync {
        /// The waiting commit [default: the newest waiting one].
        commit: Option<String>,
        /// Approve the plan shown (needs the API token); refused if the applied state moved since.
        #[arg(long)]
        approve: bool,
        #[command(flatten)]
        server: ServerArgs,
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

/// Keeps glibc to one malloc arena. A long-running process with a few busy threads
/// otherwise keeps a 64 MiB arena per thread, mostly free but resident.
fn cap_malloc_arenas() {
    // SAFETY: mallopt only sets an allocator parameter; called before other threads exist.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    if matches!(cli.command, Command::Server { .. } | Command::Up { .. } | Command::Agent { .. }) {
        cap_malloc_arenas();
    }
    match cli.command {
        Command::Validate { source, rev, worktree, format } => validate(&source, &rev, worktree, format),
        Command::Plan { source, from, to, state, worktree, server: Some(server), format } => {
            let _ = (source, from, state, worktree);
            remote_plan(&server, &to, format)
        }
        Command::Plan { source, from, to, state, worktree, server: None, format } => {
            plan_command(&source, from, &to, state.as_deref(), worktree, format)
        }
        Command::Status { server } => client_command(&server, ClientCall::Status),
        Command::Get { what, namespace, watch, target, server } => {
            client_command(&server, ClientCall::Get { what, namespace, watch, target })
        }
        Command::Logs {
            target,
            namespace,
            container,
            all_containers,
            previous,
            tail,
            since,
            timestamps,
            follow,
            server,
        } => {
            if follow && previous {
                bail!("--previous and --follow do not go together: an earlier attempt writes nothing more");
            }
            let since_seconds = duration_flag("--since", since.as_deref())?;
            let logs = Logs {
                target,
                namespace,
                container,
                all_containers,
                previous,
                tail,
                since_seconds,
                timestamps,
                follow,
            };
            client_command(&server, ClientCall::Logs(logs))
        }
        Command::Top { what, namespace, selector, containers, server } => {
            client_command(&server, ClientCall::Top { what, namespace, selector, containers })
        }
        Command::Describe { target, namespace, server } => {
            client_command(&server, ClientCall::Describe { target, namespace })
        }
        Command::History { target, namespace, server } => {
            client_command(&server, ClientCall::History { target, namespace })
        }
        Command::Rollback { target, namespace, to, yes, server } => {
            client_command(&server, ClientCall::Rollback { target, namespace, to, yes })
        }
        Command::Sync { commit, approve, server } => client_command(&server, ClientCall::Sync { commit, approve }),
        Command::Exec { pod, container, namespace, stdin, tty, command, server } => {
            client_command(&server, ClientCall::Exec { pod, container, namespace, stdin, tty, command })
        }
        Command::Secret { action } => {
            match action {
                SecretAction::Encrypt { file, recipients } => secret_encrypt(&file, recipients)?,
                SecretAction::Edit { file, age_key_file } => secret_edit(&file, &age_key_file)?,
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Token { action } => match action {
            TokenAction::Create { name, role, namespaces, expires, server } => {
                let expires_in_seconds = duration_flag("--expires", expires.as_deref())?;
                client_command(&server, ClientCall::TokenCreate { name, role, namespaces, expires_in_seconds })
            }
            TokenAction::List { server } => client_command(&server, ClientCall::TokenList),
            TokenAction::Revoke { name, server } => client_command(&server, ClientCall::TokenRevoke { name }),
        },
        Command::Node { action: NodeAction::Remove { name, yes, server } } => {
            client_command(&server, ClientCall::NodeRemove { name, yes })
        }
        Command::Login { url, token_file, ca_fingerprint, ca_file } => {
            login(&url, token_file.as_deref(), ca_fingerprint.as_deref(), ca_file.as_deref())
        }
        Command::Audit { since, server } => {
            let since_seconds = duration_flag("--since", since.as_deref())?;
            client_command(&server, ClientCall::Audit { since_seconds })
        }
        Command::Delete { what, name, namespace, yes, server } => {
            if !matches!(what.as_str(), "pvc" | "pvcs" | "persistentvolumeclaim" | "persistentvolumeclaims") {
                bail!(
                    "cannot delete `{what}`: berth deletes what Git no longer declares; `delete pvc NAME` removes an orphaned claim's data"
                );
            }
            client_command(&server, ClientCall::DeleteClaim { name, namespace, yes })
        }
        Command::PortForward { target, ports, namespace, server } => {
            client_command(&server, ClientCall::PortForward { target, ports, namespace })
        }
        Command::Create { what, name, from, namespace, server } => {
            if !matches!(what.as_str(), "job" | "jobs") {
                bail!(
                    "cannot create `{what}`: berth creates a job from a cronjob (`create job NAME --from=cronjob/NAME`); everything else comes from Git"
                );
            }
            let Some(cron_job) = from
                .strip_prefix("cronjob/")
                .or_else(|| from.strip_prefix("cronjobs/"))
                .or_else(|| from.strip_prefix("cj/"))
            else {
                bail!("--from `{from}`: write cronjob/NAME");
            };
            client_command(&server, ClientCall::RunCronJob { name, cron_job: cron_job.to_owned(), namespace })
        }
        Command::Agent {
            server,
            join_token,
            name,
            address,
            labels,
            state_dir,
            heartbeat_seconds,
            restart_backoff_ms,
            metrics_listen,
            metrics_token,
            usage_seconds,
            ca_file,
        } => {
            let name = match name {
                Some(name) => name,
                None => std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_lowercase())?,
            };
            let mut config = berth::nodes::agent::AgentConfig::new(&server, &name, &address, &state_dir);
            config.join_token = join_token;
            config.heartbeat_interval = std::time::Duration::from_secs(heartbeat_seconds.max(1));
            config.backoff_base = std::time::Duration::from_millis(restart_backoff_ms.max(100));
            config.metrics_listen = metrics_listen;
            config.metrics_token = metrics_token;
            config.usage_interval = std::time::Duration::from_secs(usage_seconds.max(1));
            config.ca_file = ca_file;
            for label in labels.iter().filter(|l| !l.is_empty()) {
                let (key, value) =
                    label.split_once('=').with_context(|| format!("label `{label}` is not key=value"))?;
                config.labels.insert(key.to_owned(), value.to_owned());
            }
            init_logging(cli.log_format, "info");
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
        Command::Server {
            repo,
            path,
            branch,
            fetch_interval,
            webhook_secret,
            cache_dir,
            db,
            listen,
            join_token,
            node_grace_seconds,
            policy,
            age_key_file,
            tls,
            limits,
        } => {
            init_logging(cli.log_format, "info");
            let tls = tls.check(&listen)?;
            let state_dir = db
                .parent()
                .map(Path::to_path_buf)
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or_else(|| PathBuf::from("."));
            let (token, token_file) = match join_token {
                Some(token) => (token, None),
                None => (secret_in(&state_dir, "join-token")?, Some(state_dir.join("join-token"))),
            };
            let source = SourceArgs {
                path: repo.clone(),
                subdir: path.clone(),
                cache_dir: Some(cache_dir.unwrap_or_else(|| state_dir.join("repos"))),
                policy: None,
                // Set below, where a key file that cannot be used stops the server.
                age_key_file: None,
                limits,
            };
            let remote = is_url(&repo);
            let mut loader = if remote || path.is_empty() {
                open_source(&source)?
            } else {
                Loader::open(&Path::new(&repo).join(&path))?
            };
            loader.set_policy(read_policy(policy.as_deref(), &[&state_dir])?);
            loader.set_limits(limits.limits());
            loader.set_age_keys(age_keys(age_key_file.as_deref())?);
            // A branch that does not exist would only ever be a warning: refuse it now (for a
            // remote, the loader has fetched once already).
            if loader.resolve(&branch).is_err() {
                let branches = loader.branches();
                bail!(
                    "branch `{branch}` does not exist in {repo}; its branches: {}",
                    if branches.is_empty() { "none".to_owned() } else { branches.join(", ") }
                );
            }
            let mut config = berth::server::control::ControlConfig { branch: branch.clone(), ..Default::default() };
            config.controller.node_grace_seconds = node_grace_seconds;
            if remote {
                config.fetch_interval = Some(std::time::Duration::from_secs(fetch_interval.max(1)));
            }
            let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
            runtime.block_on(async {
                let shutdown = tokio_util::sync::CancellationToken::new();
                let served = serve_control_plane(
                    loader,
                    &db,
                    &listen,
                    &token,
                    token_file.as_deref(),
                    tls,
                    webhook_secret.as_deref(),
                    config,
                    shutdown.clone(),
                )
                .await?;
                let mut tasks = served.tasks;
                eprintln!(
                    "berth server: following {branch} of {repo} on {}://{listen}; API token in {}",
                    served.scheme,
                    state_dir.join("api-token").display()
                );
                if let Some(fingerprint) = &served.ca_fingerprint {
                    let join_with = match &token_file {
                        Some(file) => format!("the token in {}", file.display()),
                        None => format!("K10{fingerprint}::<the --join-token secret>"),
                    };
                    eprintln!("berth server: CA sha256 {fingerprint}; agents join with {join_with}");
                }
                wait_for_signal().await;
                shutdown.cancel();
                while tasks.join_next().await.is_some() {}
                anyhow::Ok(())
            })?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Up { path, listen, name, policy, age_key_file, limits } => {
            let keys = age_keys(age_key_file.as_deref())?;
            up(&path, &listen, name, policy.as_deref(), keys, limits, cli.log_format)
        }
        Command::Schemas { out } => {
            std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
            for (name, schema) in berth::schemas() {
                let path = out.join(name);
                std::fs::write(&path, serde_json::to_string_pretty(&schema)? + "\n")
                    .with_context(|| format!("writing {}", path.display()))?;
                println!("{}", path.display());
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// A token kept in `state_dir` under `name`, made on first use (readable by its owner only).
fn secret_in(state_dir: &Path, name: &str) -> Result<String> {
    let path = state_dir.join(name);
    if let Ok(token) = std::fs::read_to_string(&path) {
        berth::private::private_file(&path).with_context(|| format!("tightening {}", path.display()))?;
        return Ok(token.trim().to_owned());
    }
    berth::private::private_dir(state_dir).with_context(|| format!("creating {}", state_dir.display()))?;
    let mut bytes = [0u8; 24];
    rand::fill(&mut bytes);
    let token: String = hex::encode(bytes);
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

/// How long open requests may run on after a SIGTERM.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_millis(500);

struct Served {
    tasks: tokio::task::JoinSet<()>,
    plane: Arc<berth::server::control::ControlPlane>,
    /// `https` or `http`.
    scheme: &'static str,
    /// The fingerprint of the CA agents pin, when the server speaks TLS.
    ca_fingerprint: Option<String>,
    /// Held while this server runs: a second server on the same database refuses to start.
    _lock: std::fs::File,
}

/// Takes the lock beside the database (`<db>.lock`, mode 0600), or says who holds it. Two
/// servers writing one database would each act on the other's decisions.
fn lock_database(db: &Path) -> Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut name = db.file_name().map(std::ffi::OsString::from).unwrap_or_else(|| "berth.db".into());
    name.push(".lock");
    let path = db.with_file_name(name);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("opening the lock {}", path.display()))?;
    berth::private::private_file(&path).with_context(|| format!("tightening {}", path.display()))?;
    match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(file),
        Err(rustix::io::Errno::WOULDBLOCK) => anyhow::bail!(
            "another berth server uses {} (it holds {}); stop it first, or give this server its own --db",
            db.display(),
            path.display()
        ),
        Err(error) => Err(std::io::Error::from(error)).with_context(|| format!("locking {}", path.display())),
    }
}

/// Starts the HTTP side (agent API and user API) and the control loop; they stop when
/// `shutdown` is cancelled. The API token is made beside the database on first start. With
/// `tls`, the server speaks HTTPS with a certificate of its own CA (made beside the database on
/// first start) or the operator's, and the join token in `join_token_file` is rewritten in k3s'
/// shape with the hash of the CA agents are to pin.
#[allow(clippy::too_many_arguments)]
async fn serve_control_plane(
    loader: Loader,
    db: &Path,
    listen: &str,
    join_token: &str,
    join_token_file: Option<&Path>,
    tls: Option<TlsSetup>,
    webhook_secret: Option<&str>,
    config: berth::server::control::ControlConfig,
    shutdown: tokio_util::sync::CancellationToken,
) -> Result<Served> {
    let state_dir =
        db.parent().map(Path::to_path_buf).filter(|p| !p.as_os_str().is_empty()).unwrap_or_else(|| ".".into());
    berth::private::private_dir(&state_dir).with_context(|| format!("creating {}", state_dir.display()))?;
    let lock = lock_database(db)?;
    let api_token = secret_in(&state_dir, "api-token")?;
    let store = Arc::new(Store::open(db).await.with_context(|| format!("opening {}", db.display()))?);
    let listener = tokio::net::TcpListener::bind(listen).await.with_context(|| format!("listening on {listen}"))?;
    let local = listener.local_addr()?;
    let loopback = local.ip().is_loopback();
    let mut join = berth::tls::JoinToken::parse(join_token).context("reading the join token")?;
    let (server_tls, authority) = match &tls {
        None => (None, None),
        Some(setup) => {
            let authority = Arc::new(berth::tls::Authority::load_or_create(&state_dir)?);
            let (chain, key) = match &setup.operator {
                Some((cert, key)) => berth::tls::operator_certificate(cert, key)?,
                None => authority.serving(&berth::tls::server_names(local, &setup.sans))?,
            };
            // Agents pin the last certificate of the chain served: berth's CA, or the operator's
            // issuer when the chain file holds it.
            let anchor = berth::tls::fingerprint(chain.last().expect("a chain has a certificate"));
            if let Some(pinned) = &join.ca_hash
                && *pinned != anchor
            {
                bail!(
                    "the join token pins the CA {pinned}, but this server's is {anchor}; give the token's secret alone, or K10{anchor}::<secret>"
                );
            }
            join.ca_hash = Some(anchor);
            (Some(berth::tls::server_config(chain, key, authority.roots())?), Some(authority))
        }
    };
    if let Some(file) = join_token_file
        && std::fs::read_to_string(file).map(|t| t.trim().to_owned()).ok() != Some(join.render())
    {
        berth::private::write_private(file, join.render().as_bytes())
            .with_context(|| format!("writing {}", file.display()))?;
    }
    let ca_fingerprint = join.ca_hash.clone();
    let node_lifetime = tls.as_ref().map_or(berth::tls::NODE_LIFETIME, |t| t.node_lifetime);
    let scheme = if server_tls.is_some() { "https" } else { "http" };
    let listener = berth::server::listen::Incoming::new(listener, server_tls)?;
    let agents =
        berth::server::agent_api::AgentApi::with_authority(store.clone(), &join.render(), authority, node_lifetime);
    let plane = berth::server::control::ControlPlane::new(store, loader, agents.clone(), config);
    let access = berth::server::api::Access::new(&api_token, !loopback, webhook_secret);
    access.load_tokens(&plane.store).await.context("reading the API tokens from the store")?;
    let router = agents
        .router()
        .merge(berth::server::api::router(plane.clone(), access.clone()))
        .merge(berth::server::ui::router(plane.clone(), access));
    let mut tasks = tokio::task::JoinSet::new();
    let stop = shutdown.clone();
    tasks.spawn(async move {
        use std::future::IntoFuture;
        let serve = axum::serve(listener, router.into_make_service_with_connect_info::<berth::server::listen::Peer>())
            .with_graceful_shutdown(stop.clone().cancelled_owned());
        // Long polls and event streams would hold a graceful stop for up to a minute: answered
        // requests get a moment to finish, then the rest are cut (agents and browsers retry).
        let cut = async {
            stop.cancelled().await;
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        };
        tokio::select! {
            served = serve.into_future() => if let Err(error) = served {
                tracing::error!(%error, "The HTTP server stopped.");
            },
            () = cut => tracing::info!("Open long polls and event streams were cut at shutdown."),
        }
    });
    tasks.spawn(berth::server::control::run(plane.clone(), shutdown));
    Ok(Served { tasks, plane, scheme, ca_fingerprint, _lock: lock })
}

/// `berth up`: the control plane and one local agent in this process.
fn up(
    path: &Path,
    listen: &str,
    name: Option<String>,
    policy: Option<&Path>,
    keys: Option<berth::manifest::sops::Keys>,
    limits: LimitArgs,
    format: LogFormat,
) -> Result<ExitCode> {
    let mut loader = Loader::open(path)?;
    loader.set_limits(limits.limits());
    loader.set_age_keys(keys);
    let top = loader.workdir().map(Path::to_path_buf).context("berth up needs a repository with a work tree")?;
    let state = top.join(".berth");
    loader.set_policy(read_policy(policy, &[&state])?);
    berth::private::private_dir(&state).with_context(|| format!("creating {}", state.display()))?;
    // The state folder is the machine's, never the repository's.
    std::fs::write(state.join(".gitignore"), "*\n")?;
    let token = secret_in(&state, "join-token")?;
    let name = match name {
        Some(name) => name,
        None => std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_lowercase())
            .unwrap_or_else(|_| "local".into()),
    };
    init_logging(format, "warn");
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    runtime.block_on(async {
        let docker =
            berth::nodes::docker::Docker::connect().await.context("connecting to the Docker engine; is it running?")?;
        let shutdown = tokio_util::sync::CancellationToken::new();
        let config = berth::server::control::ControlConfig::default();
        let served = serve_control_plane(
            loader,
            &state.join("berth.db"),
            listen,
            &token,
            None,
            None,
            None,
            config,
            shutdown.clone(),
        )
        .await?;
        let mut tasks = served.tasks;
        let mut updates = served.plane.status.subscribe();
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
        println!("berth is up: web UI and API on http://{listen}/, node {name}, state in {}", state.display());
        println!(
            "following the checked-out branch of {}; commit to deploy, Ctrl-C to stop (pods keep running)",
            top.display()
        );
        let terminal = std::io::IsTerminal::is_terminal(&std::io::stdout());
        let mut last_line = String::new();
        let mut bar_shown = false;
        let mut announced = std::collections::BTreeSet::new();
        // One listener for the whole run: a signal that arrives while a status line is being
        // printed is kept for the next wait, not lost with a listener made anew each time.
        let signal = wait_for_signal();
        tokio::pin!(signal);
        loop {
            tokio::select! {
                _ = &mut signal => break,
                changed = updates.changed() => {
                    if changed.is_err() {
                        break;
                    }
                }
            }
            let status = updates.borrow_and_update().clone();
            let line = progress_line(&status);
            if line.is_empty() || line == last_line {
                continue;
            }
            if terminal && !status.synced && status.failed.is_none() && status.last_pass.is_some() {
                // One line redrawn in place while the commit rolls out.
                print!("\r\x1b[2K{}", progress_bar(&status));
                let _ = std::io::stdout().flush();
                bar_shown = true;
            } else {
                if bar_shown {
                    print!("\r\x1b[2K");
                    bar_shown = false;
                }
                println!("{line}");
            }
            last_line = line;
            if status.synced {
                // Where the services with node ports answer, once each.
                for service in &served.plane.api.routes().services {
                    for port in service.ports.iter().filter_map(|p| p.node_port) {
                        let address =
                            format!("service {}/{}: http://127.0.0.1:{port}/", service.namespace, service.name);
                        if announced.insert(address.clone()) {
                            println!("{address}");
                        }
                    }
                }
            }
        }
        if bar_shown {
            println!();
        }
        shutdown.cancel();
        while tasks.join_next().await.is_some() {}
        println!("berth stopped; the pods keep running and the next `berth up` adopts them");
        anyhow::Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}

/// `[#######-------] 7/12 ready  abc1234 "message"`: the rollout on a terminal.
fn progress_bar(status: &berth::server::control::SyncStatus) -> String {
    let wanted: usize = status.workloads.iter().map(|w| w.replicas.map_or(w.total.max(1), |r| r.max(0) as usize)).sum();
    let ready: usize = status.workloads.iter().map(|w| w.ready).sum::<usize>().min(wanted);
    const WIDTH: usize = 24;
    let filled = (ready * WIDTH).checked_div(wanted).unwrap_or(0);
    let sha = status.applied.as_deref().unwrap_or_default();
    format!(
        "[{}{}] {ready}/{wanted} ready  {} \"{}\"",
        "#".repeat(filled),
        "-".repeat(WIDTH - filled),
        &sha[..sha.len().min(7)],
        status.applied_message
    )
}

/// One line of `berth up`'s progress: the commit, and each workload's ready replicas.
fn progress_line(status: &berth::server::control::SyncStatus) -> String {
    if let Some(failed) = &status.failed {
        return format!("not applied: {failed}");
    }
    if let Some(waiting) = &status.waiting {
        return format!("waiting: {waiting}");
    }
    let (Some(sha), Some(pass)) = (&status.applied, &status.last_pass) else { return String::new() };
    if status.health == berth::server::control::Health::Degraded {
        return format!("degraded: {}", status.reason);
    }
    let state = if status.synced { "synced" } else { "progressing" };
    let workloads: Vec<String> = pass
        .workloads
        .iter()
        .map(|w| {
            let wanted = w.replicas.map_or_else(|| "all".to_owned(), |r| r.to_string());
            let mut text = match &w.job {
                // A Job counts successes, not running replicas.
                Some(job) => format!(
                    "{} {}/{} succeeded",
                    w.key.qualified_name(),
                    job.succeeded,
                    job.completions.map_or_else(|| "any".to_owned(), |c| c.to_string())
                ),
                None => format!("{} {}/{wanted}", w.key.qualified_name(), w.available),
            };
            if let Some(reason) = w.unschedulable.first() {
                text.push_str(&format!(" (pending: {reason})"));
            }
            text
        })
        .collect();
    format!("{state} {} \"{}\": {}", &sha[..7.min(sha.len())], status.applied_message, workloads.join(", "))
}

/// Logs to stderr in `format`; `RUST_LOG` chooses what (default: `level`). Text is coloured
/// only when stderr is a terminal, so a log written to a file holds no escape codes.
fn init_logging(format: LogFormat, level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())).try_init(),
    };
}

fn is_url(path: &str) -> bool {
    path.contains("://") || (path.contains('@') && path.contains(':') && !Path::new(path).exists())
}

/// The host-access policy from `file`, or the default; `state_folders` (berth's own) are denied
/// to hostPath either way.
fn read_policy(file: Option<&Path>, state_folders: &[&Path]) -> Result<berth::manifest::policy::Policy> {
    let mut policy = match file {
        Some(file) => {
            let text =
                std::fs::read_to_string(file).with_context(|| format!("reading the policy {}", file.display()))?;
            berth::manifest::policy::Policy::parse(&file.display().to_string(), &text).map_err(anyhow::Error::msg)?
        }
        None => berth::manifest::policy::Policy::default(),
    };
    for folder in state_folders {
        let absolute = std::path::absolute(folder).unwrap_or_else(|_| folder.to_path_buf());
        policy.deny_state_folder(&absolute);
    }
    Ok(policy)
}

fn open_source(source: &SourceArgs) -> Result<Loader> {
    let mut loader = open_source_unchecked(source)?;
    loader.set_policy(read_policy(source.policy.as_deref(), &[])?);
    loader.set_limits(source.limits.limits());
    // A key file these commands picked up from SOPS_AGE_KEY_FILE that cannot be used is said,
    // not fatal: encrypted files then fail with what to do, the rest is still checked.
    match age_keys(source.age_key_file.as_deref()) {
        Ok(keys) => loader.set_age_keys(keys),
        Err(error) => eprintln!("warning: {error:#}; encrypted files are not decrypted"),
    }
    Ok(loader)
}

/// The `secrets.ageRecipients` of the berth.yaml beside `file` or in a folder above it.
fn recipients_for(file: &Path) -> Result<Vec<String>> {
    let start = std::path::absolute(file)?;
    for folder in start.ancestors().skip(1) {
        let config = folder.join(berth::sync::config::CONFIG_FILE);
        if let Ok(text) = std::fs::read_to_string(&config) {
            let (parsed, findings) = berth::sync::config::Config::parse(&text);
            if let Some(error) = findings.iter().find(|d| d.is_error()) {
                bail!("{}: {error}", config.display());
            }
            if parsed.secrets.age_recipients.is_empty() {
                bail!(
                    "{} lists no secrets.ageRecipients; add the server's age public key there, or pass --recipient",
                    config.display()
                );
            }
            return Ok(parsed.secrets.age_recipients);
        }
        if folder.join(".git").exists() {
            break;
        }
    }
    bail!("no berth.yaml beside {} or above it lists secrets.ageRecipients; pass --recipient age1...", file.display())
}

fn rfc3339_now() -> String {
    chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// Writes `text` to `file` through a new file beside it, keeping the file's mode.
fn replace_file(file: &Path, text: &str) -> Result<()> {
    let folder = file.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let mut temporary = tempfile::NamedTempFile::new_in(folder)?;
    std::io::Write::write_all(&mut temporary, text.as_bytes())?;
    if let Ok(metadata) = std::fs::metadata(file) {
        std::fs::set_permissions(temporary.path(), metadata.permissions())?;
    }
    temporary.persist(file).map_err(|e| e.error).with_context(|| format!("writing {}", file.display()))?;
    Ok(())
}

/// `berth secret encrypt FILE`.
fn secret_encrypt(file: &Path, recipients: Vec<String>) -> Result<()> {
    let recipients = if recipients.is_empty() { recipients_for(file)? } else { recipients };
    let text = std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let sealed = berth::manifest::sops::encrypt_text(&text, &recipients, &rfc3339_now())
        .map_err(|e| anyhow::anyhow!("cannot encrypt {}: {e}", file.display()))?;
    replace_file(file, &sealed)?;
    eprintln!("{} encrypted for {}", file.display(), recipients.join(", "));
    Ok(())
}

/// `berth secret edit FILE`: decrypted into a private folder, edited, encrypted again; an
/// unchanged file is left as it was.
fn secret_edit(file: &Path, key_file: &Path) -> Result<()> {
    let keys = berth::manifest::sops::Keys::read(key_file).map_err(anyhow::Error::msg)?;
    let text = std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let (plain, mut recipients) = berth::manifest::sops::decrypt_text(&text, &keys)
        .map_err(|e| anyhow::anyhow!("cannot decrypt {}: {e}", file.display()))?;
    if recipients.is_empty() {
        recipients = recipients_for(file)?;
    }
    let folder = tempfile::Builder::new().prefix("berth-secret-").tempdir()?;
    berth::private::private_dir(folder.path())?;
    let name = file.file_name().map_or("secret.yaml".into(), |n| n.to_string_lossy().into_owned());
    let editing = folder.path().join(name);
    berth::private::write_private(&editing, plain.as_bytes())?;
    let editor = std::env::var("VISUAL").or_else(|_| std::env::var("EDITOR")).unwrap_or_else(|_| "vi".into());
    let status = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("{editor} \"$1\""))
        .arg("editor")
        .arg(&editing)
        .status()
        .with_context(|| format!("running the editor `{editor}`"))?;
    if !status.success() {
        bail!("the editor `{editor}` failed ({status}); {} is unchanged", file.display());
    }
    let edited = std::fs::read_to_string(&editing)?;
    if edited == plain {
        eprintln!("{} is unchanged", file.display());
        return Ok(());
    }
    let sealed = berth::manifest::sops::encrypt_text(&edited, &recipients, &rfc3339_now())
        .map_err(|e| anyhow::anyhow!("cannot encrypt the edited {}: {e}; it is unchanged", file.display()))?;
    replace_file(file, &sealed)?;
    eprintln!("{} encrypted again for {}", file.display(), recipients.join(", "));
    Ok(())
}

/// The age identities of `--age-key-file` (or `SOPS_AGE_KEY_FILE`), when one is given.
fn age_keys(file: Option<&Path>) -> Result<Option<berth::manifest::sops::Keys>> {
    file.map(|file| berth::manifest::sops::Keys::read(file).map_err(anyhow::Error::msg)).transpose()
}

fn open_source_unchecked(source: &SourceArgs) -> Result<Loader> {
    if is_url(&source.path) {
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
        ..desired_commit.state()
    };
    let server_hint = "`berth plan --server URL` compares with what a server runs";
    let compared_with_commit = |from: &str, parent: bool| {
        let what = if parent { "its parent" } else { "--from" };
        format!(
            "Compared with commit {} ({what}): what Git changes, not what runs; {server_hint}.",
            &from[..from.len().min(7)]
        )
    };
    let explicit_from = from.is_some();
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
            State::new(
                applied.commit.as_ref().map_or_else(|| "observed state".to_owned(), |c| c.sha.clone()),
                applied
                    .commit
                    .as_ref()
                    .map_or_else(|| "nothing applied yet".to_owned(), |c| format!("observed: {}", c.message)),
                applied.resources,
            )
        }
        (None, from) => {
            let from = match from {
                Some(from) => from,
                None => {
                    let base = if worktree { "HEAD".to_owned() } else { format!("{}^", desired_commit.commit.sha) };
                    if loader.resolve(&base).is_err() {
                        // The first commit of a repository: everything is created.
                        let plan = plan::plan(&desired, &State::new("empty", "", Vec::new()));
                        let compared = format!("Compared with nothing (the first commit): {server_hint}.");
                        return print_plan(&plan, format, &compared);
                    }
                    base
                }
            };
            match loader.load(&from) {
                Ok(observed_commit) => {
                    require_valid(&observed_commit, "--from")?;
                    let observed = observed_commit.state();
                    let mut plan = plan::plan(&desired, &observed);
                    note_restores_from_git(&mut loader, &mut plan, &desired.resources, &observed_commit.commit.sha);
                    let compared = compared_with_commit(&observed_commit.commit.sha, !explicit_from);
                    return print_plan(&plan, format, &compared);
                }
                // An older commit from before the manifest folder existed declares nothing there.
                // Only the older side may be absent: a missing root on the desired side is an error.
                Err(SyncError::MissingRoot { .. }) => {
                    let info = loader.resolve(&from)?;
                    let compared = compared_with_commit(&info.sha, !explicit_from);
                    let observed = State::new(info.sha, format!("{}; no manifests yet", info.message), Vec::new());
                    return print_plan(&plan::plan(&desired, &observed), format, &compared);
                }
                Err(error) => return Err(error.into()),
            }
        }
    };
    let compared = format!(
        "Compared with the objects recorded in {} (what a server applied when it wrote them).",
        state.map(|s| s.display().to_string()).unwrap_or_default()
    );
    print_plan(&plan::plan(&desired, &observed), format, &compared)
}

/// How far back `berth plan` looks for the commit whose spec an update brings back.
const RESTORE_LOOKBACK: usize = 20;

/// The first-parent ancestors of a commit, loaded as they are asked for.
struct Ancestors<'a> {
    loader: &'a mut Loader,
    next: Option<String>,
    loaded: Vec<Arc<Loaded>>,
}

impl Ancestors<'_> {
    /// The `index`-th ancestor (0 is the parent), within the lookback; `None` past the first
    /// commit or a commit with errors.
    fn get(&mut self, index: usize) -> Option<&Loaded> {
        while self.loaded.len() <= index {
            let rev = self.next.take().filter(|_| self.loaded.len() < RESTORE_LOOKBACK)?;
            let commit = self.loader.load(&rev).ok().filter(|c| c.is_valid())?;
            self.next = Some(format!("{}^", commit.commit.sha));
            self.loaded.push(commit);
        }
        self.loaded.get(index).map(|c| &**c)
    }

    fn hash(&mut self, index: usize, key: &berth::manifest::ObjectKey) -> Option<String> {
        let commit = self.get(index)?;
        commit.resources.binary_search_by(|r| r.key.cmp(key)).ok().map(|i| commit.resources[i].hash.clone())
    }
}

/// Names, for each update, the earlier commit that introduced the spec it brings back (after a
/// `git revert`), looking through the first-parent ancestors of `from`.
fn note_restores_from_git(
    loader: &mut Loader,
    plan: &mut plan::Plan,
    desired: &[Arc<berth::manifest::Resource>],
    from: &str,
) {
    if !plan.changes.iter().any(|c| c.action == plan::Action::Update) {
        return;
    }
    let mut ancestors = Ancestors { loader, next: Some(format!("{from}^")), loaded: Vec::new() };
    plan::note_restores(plan, desired, |key, hash| {
        // The nearest ancestor with this spec, then back while it stays: the oldest of that run
        // introduced it.
        let mut index = 0;
        while ancestors.hash(index, key).as_deref() != Some(hash) {
            ancestors.get(index)?;
            index += 1;
        }
        while ancestors.hash(index + 1, key).as_deref() == Some(hash) {
            index += 1;
        }
        ancestors.get(index).map(|c| c.commit.clone())
    });
}

/// Prints a plan, headed by what it compares with (text and markdown); JSON carries both sides
/// in `from` and `to`.
fn print_plan(plan: &plan::Plan, format: PlanFormat, compared: &str) -> Result<ExitCode> {
    let mut out = anstream::stdout();
    match format {
        PlanFormat::Text => write!(out, "{compared}\n{}", render::text(plan, true))?,
        PlanFormat::Markdown => write!(out, "> {compared}\n\n{}", render::markdown(plan))?,
        PlanFormat::Json => write!(out, "{}", render::json(plan))?,
    }
    if !plan.refusals.is_empty() {
        for refusal in &plan.refusals {
            eprintln!("error: {refusal}");
        }
        return Ok(ExitCode::from(1));
    }
    Ok(if plan.summary.has_changes() { ExitCode::from(2) } else { ExitCode::SUCCESS })
}

/// What `berth logs` asks for.
struct Logs {
    target: String,
    namespace: String,
    container: Option<String>,
    all_containers: bool,
    previous: bool,
    tail: Option<u64>,
    since_seconds: Option<i64>,
    timestamps: bool,
    follow: bool,
}

/// The pods `berth logs` reads: one by name, or every pod of a workload (KIND/NAME).
async fn log_pods(client: &berth::client::Client, logs: &Logs) -> anyhow::Result<Vec<String>> {
    if !logs.target.contains('/') {
        return Ok(vec![logs.target.clone()]);
    }
    let (kind, namespace, name) = berth::client::parse_target(&logs.target, &logs.namespace)
        .with_context(|| format!("`{}` is not a pod's name or KIND/NAME", logs.target))?;
    let kind = berth::manifest::Kind::from_cli(&kind).with_context(|| format!("`{kind}` is not a workload kind"))?;
    let all = client.get("/api/v1/pods").await?;
    let found: Vec<String> = all
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["namespace"] == namespace.as_str() && p["workload"] == name.as_str())
        .filter(|p| p["kind"] == kind.name() && p["status"] != "Terminating")
        .filter_map(|p| p["name"].as_str().map(str::to_owned))
        .collect();
    if found.is_empty() && !logs.follow {
        bail!("{} {namespace}/{name} has no pods; see `berth get pods`", kind.name());
    }
    Ok(found)
}

/// The containers of `pod` to read: every one with --all-containers, else the one asked for
/// (`None`: the pod's only container).
async fn log_containers(client: &berth::client::Client, logs: &Logs, pod: &str) -> anyhow::Result<Vec<Option<String>>> {
    if !logs.all_containers {
        return Ok(vec![logs.container.clone()]);
    }
    let detail = client.get(&format!("/api/v1/pods/{}/{pod}", logs.namespace)).await?;
    Ok(detail["images"].as_object().into_iter().flatten().map(|(name, _)| Some(name.clone())).collect())
}

fn log_label(pod: &str, container: Option<&str>) -> String {
    match container {
        Some(name) => format!("{pod}/{name}"),
        None => pod.to_owned(),
    }
}

/// One container's log as the server reads it from the node; `since_seconds` overrides
/// --since, and a follow always asks for timestamps.
async fn log_text(
    client: &berth::client::Client,
    logs: &Logs,
    pod: &str,
    container: Option<&str>,
    previous: bool,
    since_seconds: Option<i64>,
) -> anyhow::Result<String> {
    let mut pairs: Vec<(&str, String)> = Vec::new();
    if let Some(container) = container {
        pairs.push(("container", container.to_owned()));
    }
    if previous {
        pairs.push(("previous", "true".into()));
    }
    if let Some(tail) = logs.tail.filter(|_| since_seconds.is_none()) {
        pairs.push(("tail", tail.to_string()));
    }
    if let Some(since) = since_seconds.or(logs.since_seconds) {
        pairs.push(("sinceSeconds", since.to_string()));
    }
    if logs.timestamps || logs.follow {
        pairs.push(("timestamps", "true".into()));
    }
    let pairs: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let base = format!("/api/v1/pods/{}/{pod}", logs.namespace);
    Ok(client.get_text(&format!("{base}/logs?{}", berth::client::query(&pairs))).await?)
}

/// `berth logs -f`: one streamed follow per container (`logs?follow=true`; the server carries
/// it across the container's restarts and ends it when the pod is gone). For KIND/NAME the
/// workload's pods are looked up every second, and a new one's log followed from its first line.
async fn follow_logs(client: &berth::client::Client, logs: &Logs) -> anyhow::Result<()> {
    /// What a container's follow hands the printer.
    enum Message {
        Text(String),
        Ended((String, Option<String>), Option<String>),
    }
    let (sender, mut receiver) = tokio::sync::mpsc::channel::<Message>(64);
    let workload = logs.target.contains('/');
    let mut following: std::collections::HashSet<(String, Option<String>)> = std::collections::HashSet::new();
    let mut first = true;
    let mut look = tokio::time::interval(std::time::Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = look.tick(), if first || workload => {
                for pod in log_pods(client, logs).await? {
                    let containers = match log_containers(client, logs, &pod).await {
                        Ok(containers) => containers,
                        Err(error) if first && !workload => return Err(error),
                        // A pod that went away meanwhile: looked at again next time.
                        Err(_) => continue,
                    };
                    let prefixed = workload || containers.len() > 1;
                    for container in containers {
                        let key = (pod.clone(), container.clone());
                        if !following.insert(key.clone()) {
                            continue;
                        }
                        // The pods there at the start follow --tail and --since; a new pod
                        // of a rollout is followed from its first line.
                        let path = follow_path(logs, &pod, container.as_deref(), first);
                        let label = prefixed.then(|| log_label(&pod, container.as_deref()));
                        let (client, sender) = (client.clone(), sender.clone());
                        tokio::spawn(async move {
                            let error = follow_one(&client, &path, label.as_deref(), &sender).await.err();
                            let _ = sender.send(Message::Ended(key, error)).await;
                        });
                    }
                }
                first = false;
            }
            Some(message) = receiver.recv() => match message {
                Message::Text(text) => {
                    print!("{text}");
                    std::io::Write::flush(&mut std::io::stdout())?;
                }
                Message::Ended(key, error) => {
                    following.remove(&key);
                    if !workload {
                        if let Some(error) = error {
                            bail!(error);
                        }
                        eprintln!("pod {}/{} is gone", logs.namespace, logs.target);
                        return Ok(());
                    }
                }
            },
        }
    }

    /// Prints one container's followed log, each line after `label |` when given, until the
    /// server ends it.
    async fn follow_one(
        client: &berth::client::Client,
        path: &str,
        label: Option<&str>,
        sender: &tokio::sync::mpsc::Sender<Message>,
    ) -> Result<(), String> {
        let mut response = client.get_streamed(path).await.map_err(|e| e.to_string())?;
        let mut partial: Vec<u8> = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| format!("the log stream broke: {e}"))? {
            partial.extend_from_slice(&chunk);
            let Some(end) = partial.iter().rposition(|b| *b == b'\n') else { continue };
            let complete: Vec<u8> = partial.drain(..=end).collect();
            let text = String::from_utf8_lossy(&complete);
            let text = match label {
                Some(label) => text.lines().map(|line| format!("{label} | {line}\n")).collect(),
                None => text.into_owned(),
            };
            if sender.send(Message::Text(text)).await.is_err() {
                break;
            }
        }
        Ok(())
    }
}

/// The path that follows one container's log; `as_asked` applies --tail and --since.
fn follow_path(logs: &Logs, pod: &str, container: Option<&str>, as_asked: bool) -> String {
    let mut pairs: Vec<(&str, String)> = vec![("follow", "true".into())];
    if let Some(container) = container {
        pairs.push(("container", container.to_owned()));
    }
    if as_asked {
        if let Some(tail) = logs.tail {
            pairs.push(("tail", tail.to_string()));
        }
        if let Some(since) = logs.since_seconds {
            pairs.push(("sinceSeconds", since.to_string()));
        }
    }
    if logs.timestamps {
        pairs.push(("timestamps", "true".into()));
    }
    let pairs: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (*k, v.as_str())).collect();
    format!("/api/v1/pods/{}/{pod}/logs?{}", logs.namespace, berth::client::query(&pairs))
}

/// A duration flag's seconds (`30s`, `10m`, `2h`, `30d`), or an error that names the flag.
fn duration_flag(flag: &str, text: Option<&str>) -> Result<Option<i64>> {
    text.map(|text| {
        berth::client::parse_duration(text)
            .with_context(|| format!("{flag} `{text}` is not a duration; write it like 30s, 10m, 2h or 30d"))
    })
    .transpose()
}

/// A request of the CLI to a running server.
enum ClientCall {
    Status,
    Get { what: String, namespace: Option<String>, watch: bool, target: Option<String> },
    Top { what: String, namespace: Option<String>, selector: Option<String>, containers: bool },
    Logs(Logs),
    Describe { target: String, namespace: String },
    History { target: String, namespace: String },
    Rollback { target: String, namespace: String, to: Option<String>, yes: bool },
    Sync { commit: Option<String>, approve: bool },
    RunCronJob { name: String, cron_job: String, namespace: String },
    DeleteClaim { name: String, namespace: String, yes: bool },
    Exec { pod: String, container: Option<String>, namespace: String, stdin: bool, tty: bool, command: Vec<String> },
    PortForward { target: String, ports: String, namespace: String },
    TokenCreate { name: String, role: String, namespaces: Vec<String>, expires_in_seconds: Option<i64> },
    TokenList,
    TokenRevoke { name: String },
    Audit { since_seconds: Option<i64> },
    NodeRemove { name: String, yes: bool },
}

/// Asks `question` on a terminal; true when the answer is yes. Off a terminal it refuses with
/// `otherwise`, which says how to confirm without asking.
fn confirm(question: &str, otherwise: &str) -> Result<bool> {
    if !std::io::IsTerminal::is_terminal(&std::io::stdin()) {
        bail!("{otherwise}");
    }
    eprint!("{question} [y/N] ");
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer)?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes"))
}

/// `berth login URL`: trusts the server's CA (shown by fingerprint first), checks the token
/// against the server, and keeps URL, CA and token in the CLI's config file.
fn login(url: &str, token_file: Option<&Path>, fingerprint: Option<&str>, ca_file: Option<&Path>) -> Result<ExitCode> {
    let parsed = reqwest::Url::parse(url).with_context(|| format!("`{url}` is not a URL; write https://HOST:PORT"))?;
    let server = url.trim_end_matches('/').to_owned();
    let token = match berth::client::find_token(token_file).context("reading the token")? {
        Some(token) if std::env::var("BERTH_TOKEN").is_ok() || token_file.is_some() => token,
        _ if !std::io::IsTerminal::is_terminal(&std::io::stdin()) => {
            let mut line = String::new();
            std::io::stdin().read_line(&mut line)?;
            line.trim().to_owned()
        }
        _ => bail!("give the API token in BERTH_TOKEN, with --token-file, or on standard input"),
    };
    if token.is_empty() {
        bail!("the token is empty; give it in BERTH_TOKEN, with --token-file, or on standard input");
    }
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let ca = match (parsed.scheme(), ca_file) {
        ("https", Some(file)) => {
            berth::tls::read_certificates(file)?;
            Some(std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?)
        }
        ("https", None) => {
            let host = parsed.host_str().context("the URL names no host")?.to_owned();
            let port = parsed.port_or_known_default().unwrap_or(443);
            let chain = runtime
                .block_on(berth::tls::fetch_chain(&host, port))
                .with_context(|| format!("reaching {server} over TLS"))?;
            let anchor = chain.last().context("the server showed no certificate")?;
            let seen = berth::tls::fingerprint(anchor);
            match fingerprint.map(|f| f.replace(':', "").to_ascii_lowercase()) {
                Some(expected) if expected == seen => {}
                Some(expected) => {
                    bail!("the server's CA has the fingerprint {seen}, not {expected}; nothing was trusted or kept")
                }
                None => {
                    eprintln!("The server at {server} presents a certificate of the CA with SHA-256 fingerprint");
                    eprintln!("  {seen}");
                    eprintln!("Compare it with the `CA sha256` line `berth server` printed at start.");
                    if !confirm("Trust this CA?", "not on a terminal: pass --ca-fingerprint HASH to trust the CA")? {
                        eprintln!("Nothing was trusted or kept.");
                        return Ok(ExitCode::from(1));
                    }
                }
            }
            Some(pem::encode(&pem::Pem::new("CERTIFICATE", anchor.to_vec())))
        }
        _ => None,
    };
    let trust = match &ca {
        Some(pem) => Some(berth::tls::Trust::Roots(
            rustls_pki_types::pem::PemObject::pem_slice_iter(pem.as_bytes()).filter_map(Result::ok).collect(),
        )),
        None => Some(berth::tls::Trust::System),
    };
    let reach = berth::client::Reach { server: server.clone(), token: Some(token.clone()), trust, ca_source: None };
    let client = berth::client::Client::connect(reach)?;
    runtime.block_on(client.get("/api/v1/workloads")).context("checking the token against the server")?;
    let mut config = berth::client::LoginConfig::read().unwrap_or_default();
    config.servers.insert(server.clone(), berth::client::LoggedIn { token, ca });
    config.current = Some(server.clone());
    let path = config.write().context("keeping the login")?;
    eprintln!("Logged in to {server}; kept in {} (BERTH_SERVER or --server picks another).", path.display());
    Ok(ExitCode::SUCCESS)
}

/// `[LOCAL:]REMOTE` of `berth port-forward`: the local port (0 for any free one) and the remote.
fn forward_ports(ports: &str) -> Result<(u16, u16)> {
    let number = |text: &str, which: &str| -> Result<u16> {
        text.parse::<u16>().ok().filter(|p| *p > 0 || which == "local").ok_or_else(|| {
            anyhow::anyhow!(
                "`{ports}`: the {which} port `{text}` is not a port number; write [LOCAL:]REMOTE, such as 8080:80"
            )
        })
    };
    match ports.split_once(':') {
        Some(("", remote)) => Ok((0, number(remote, "remote")?)),
        Some((local, remote)) => Ok((number(local, "local")?, number(remote, "remote")?)),
        None => {
            let port = number(ports, "remote")?;
            Ok((port, port))
        }
    }
}

/// Runs `command` in a pod's container attached to this process: its input streamed with
/// `stdin`, on a raw terminal of this one's size with `tty` (resized with it). Returns the
/// command's exit code.
async fn exec(
    client: &berth::client::Client,
    namespace: &str,
    pod: &str,
    container: Option<&str>,
    command: &[String],
    stdin: bool,
    tty: bool,
) -> Result<i64> {
    use berth::client::Input;
    use std::io::IsTerminal as _;
    use std::os::fd::AsFd as _;
    let terminal = std::io::stdin();
    let tty = tty && {
        let is = terminal.is_terminal();
        if !is {
            eprintln!("Standard input is not a terminal: running the command without one (-t ignored).");
        }
        is
    };
    let size = if tty { berth::terminal::size(terminal.as_fd()) } else { None };
    let session = client.exec_session(namespace, pod, container, command, tty, stdin, size).await?;
    let (sender, receiver) = tokio::sync::mpsc::channel(16);
    if stdin {
        // A thread of its own: a read of a terminal blocks until a key is pressed, and this
        // process may end before then.
        let sender = sender.clone();
        std::thread::spawn(move || {
            let mut buffer = vec![0u8; 16 * 1024];
            loop {
                let input = match std::io::Read::read(&mut std::io::stdin(), &mut buffer) {
                    Ok(0) | Err(_) => Input::End,
                    Ok(n) => Input::Bytes(buffer[..n].to_vec()),
                };
                let end = matches!(input, Input::End);
                if sender.blocking_send(input).is_err() || end {
                    break;
                }
            }
        });
    }
    if tty {
        let sender = sender.clone();
        let mut resized = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::window_change())?;
        tokio::spawn(async move {
            while resized.recv().await.is_some() {
                if let Some((columns, rows)) = berth::terminal::size(std::io::stdin().as_fd())
                    && sender.send(Input::Size(columns, rows)).await.is_err()
                {
                    break;
                }
            }
        });
    }
    drop(sender);
    let raw = if tty { Some(berth::terminal::RawMode::enter(terminal.as_fd())?) } else { None };
    let code = berth::client::attach(session, receiver, tokio::io::stdout(), tokio::io::stderr()).await;
    drop(raw);
    code.map_err(|e| anyhow::anyhow!(e))
}

/// The pod and port a port-forward reaches: the pod named, or for svc/NAME one ready pod of the
/// Service and the target port of its port `port`.
async fn forward_target(
    client: &berth::client::Client,
    target: &str,
    namespace: &str,
    port: u16,
) -> Result<(String, u16)> {
    let Some(service) = target.strip_prefix("svc/").or_else(|| target.strip_prefix("service/")) else {
        return Ok((target.trim_start_matches("pod/").trim_start_matches("po/").to_owned(), port));
    };
    let services = client.get("/api/v1/services").await?;
    let found = services
        .as_array()
        .into_iter()
        .flatten()
        .find(|s| s["namespace"] == namespace && s["name"] == service)
        .ok_or_else(|| anyhow::anyhow!("no Service {namespace}/{service}; `berth get services` lists them"))?;
    let ports = found["ports"].as_array().map(Vec::as_slice).unwrap_or_default();
    let declared = ports.iter().find(|p| p["port"].as_u64() == Some(u64::from(port))).ok_or_else(|| {
        let have: Vec<String> = ports.iter().map(|p| p["port"].to_string()).collect();
        anyhow::anyhow!("Service {namespace}/{service} has no port {port}; it has: {}", have.join(", "))
    })?;
    let pod = found["endpoints"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e.as_str()?.split_once('@').map(|(pod, _)| pod.to_owned()))
        .next()
        .ok_or_else(|| anyhow::anyhow!("Service {namespace}/{service} has no ready pod to forward to"))?;
    let target_port = match &declared["targetPort"] {
        serde_json::Value::Number(n) => n.as_u64().and_then(|n| u16::try_from(n).ok()).unwrap_or(port),
        serde_json::Value::Null => port,
        serde_json::Value::String(text) if text.parse::<u16>().is_ok() => text.parse().unwrap_or(port),
        serde_json::Value::String(name) => {
            // A named port: the number the chosen pod's containers give that name.
            let detail = client.get(&format!("/api/v1/pods/{namespace}/{pod}")).await?;
            let number = detail["namedPorts"][name.as_str()].as_u64().and_then(|n| u16::try_from(n).ok());
            number.ok_or_else(|| {
                anyhow::anyhow!(
                    "Service {namespace}/{service}'s port {port} targets the port named `{name}`, which no container of pod {pod} declares"
                )
            })?
        }
        other => bail!("Service {namespace}/{service}'s port {port} has a targetPort berth cannot read: {other}"),
    };
    Ok((pod, target_port))
}

/// Prints one API answer as a table.
type Table<'a> = Box<dyn Fn(&serde_json::Value) -> String + 'a>;

fn client_for(args: &ServerArgs) -> Result<berth::client::Client> {
    let reach = berth::client::reach(args.server.as_deref(), args.token_file.as_deref(), args.ca_file.as_deref())
        .map_err(|e| anyhow::anyhow!(e))?;
    Ok(berth::client::Client::connect(reach)?)
}

/// The API path of a workload named `kind/name` or `kind/namespace/name`.
fn workload_path(target: &str, namespace: &str) -> Result<String> {
    let (kind, namespace, name) = berth::client::parse_target(target, namespace)
        .with_context(|| format!("`{target}` is not KIND/NAME; write it like deployment/web (and -n NAMESPACE)"))?;
    Ok(format!("/api/v1/workloads/{kind}/{namespace}/{name}"))
}

fn print_value(
    value: &serde_json::Value,
    output: Output,
    table: impl FnOnce(&serde_json::Value) -> String,
) -> Result<()> {
    let mut out = std::io::stdout().lock();
    match output {
        Output::Json => writeln!(out, "{}", serde_json::to_string_pretty(value)?)?,
        Output::Yaml => write!(out, "{}", render::to_yaml(value))?,
        Output::Table => write!(out, "{}", table(value))?,
    }
    Ok(())
}

/// The events of `target` at the end of a description, as kubectl prints them.
async fn print_events(
    client: &berth::client::Client,
    output: Output,
    target: &str,
    namespace: &str,
    now: i64,
) -> Result<()> {
    if output != Output::Table {
        return Ok(());
    }
    let events = client.get(&format!("/api/v1/events?namespace={namespace}&for={target}")).await?;
    let list = events.as_array().map(Vec::as_slice).unwrap_or_default();
    if list.is_empty() {
        println!("Events: <none>");
    } else {
        println!("Events:");
        for event in list {
            println!(
                "  {:<8} {:<17} {:>8}  x{:<4} {}: {}",
                event["type"].as_str().unwrap_or_default(),
                event["reason"].as_str().unwrap_or_default(),
                event["lastSeen"].as_i64().map_or_else(|| "?".to_owned(), |t| berth::client::age(t, now)),
                event["count"].as_i64().unwrap_or(1),
                event["object"].as_str().unwrap_or_default(),
                event["message"].as_str().unwrap_or_default(),
            );
        }
    }
    Ok(())
}

fn client_command(args: &ServerArgs, call: ClientCall) -> Result<ExitCode> {
    use berth::client as c;
    let client = client_for(args)?;
    let now = berth::server::now();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        match call {
            ClientCall::Status => {
                let status = client.get("/api/v1/status").await?;
                print_value(&status, args.output, |s| c::status_text(s, now))?;
                // Something is wrong that needs a person: a rollout failed, or the head commit
                // does not load.
                let degraded = matches!(status["health"].as_str(), Some("Degraded" | "Missing"));
                Ok(if degraded || !status["failed"].is_null() { ExitCode::from(1) } else { ExitCode::SUCCESS })
            }
            ClientCall::Get { what, namespace, watch, target } => {
                let ns = namespace.as_deref();
                let about = match target.as_deref() {
                    Some(_) if !matches!(what.to_lowercase().as_str(), "events" | "event" | "ev") => {
                        bail!("--for is for `berth get events`")
                    }
                    Some(target) => Some(berth::server::events::parse_target(target).map_err(|e| anyhow::anyhow!(e))?),
                    None => None,
                };
                let about = about.as_ref().map(|(kind, name)| (kind.as_str(), name.as_str()));
                let (path, table): (&str, Table<'_>) =
                    match what.to_lowercase().as_str() {
                        "workloads" | "workload" | "deployments" | "deploy" => {
                            ("/api/v1/workloads", Box::new(move |v| c::workloads_table(v, ns)))
                        }
                        "jobs" | "job" => ("/api/v1/jobs", Box::new(move |v| c::jobs_table(v, ns, now))),
                        "cronjobs" | "cronjob" | "cj" => {
                            ("/api/v1/cronjobs", Box::new(move |v| c::cron_jobs_table(v, ns, now)))
                        }
                        "pods" | "pod" | "po" => ("/api/v1/pods", Box::new(move |v| c::pods_table(v, ns))),
                        "events" | "event" | "ev" => {
                            ("/api/v1/events", Box::new(move |v| c::events_table(v, ns, about, now)))
                        }
                        "pvc" | "pvcs" | "persistentvolumeclaims" | "persistentvolumeclaim" => {
                            ("/api/v1/pvcs", Box::new(move |v| c::claims_table(v, ns, now)))
                        }
                        "nodes" | "node" | "no" => ("/api/v1/nodes", Box::new(move |v| c::nodes_table(v, now))),
                        "services" | "service" | "svc" => {
                            ("/api/v1/services", Box::new(move |v| c::services_table(v, ns)))
                        }
                        "syncs" | "sync" => ("/api/v1/syncs", Box::new(move |v| c::syncs_table(v, now))),
                        other => bail!("cannot list `{other}`: choose workloads, jobs, cronjobs, pods, pvc, events, nodes, services or syncs"),
                    };
                if watch {
                    if path == "/api/v1/pvcs" {
                        bail!("--watch does not follow claims; run `berth get pvc` again");
                    }
                    if args.output != Output::Table {
                        bail!("--watch prints tables; leave out -o");
                    }
                    let what = path.trim_start_matches("/api/v1/");
                    let mut before: Option<serde_json::Value> = None;
                    client
                        .watch(&format!("/api/v1/watch/{what}"), |list| {
                            let rows = c::watch_rows(before.as_ref(), &list, &*table);
                            print!("{rows}");
                            let _ = std::io::Write::flush(&mut std::io::stdout());
                            before = Some(list);
                            true
                        })
                        .await?;
                    bail!("the server ended the watch (it stopped, or its store failed); run it again");
                }
                let value = match (path, target) {
                    ("/api/v1/events", Some(target)) => client.get(&format!("{path}?for={target}")).await?,
                    _ => client.get(path).await?,
                };
                print_value(&value, args.output, table)?;
                Ok(ExitCode::SUCCESS)
            }
            ClientCall::Logs(logs) => {
                if logs.follow {
                    follow_logs(&client, &logs).await?;
                    return Ok(ExitCode::SUCCESS);
                }
                let pods = log_pods(&client, &logs).await?;
                let several_pods = pods.len() > 1;
                for pod in pods {
                    let containers = log_containers(&client, &logs, &pod).await?;
                    let prefixed = several_pods || containers.len() > 1;
                    for container in containers {
                        let text = log_text(&client, &logs, &pod, container.as_deref(), logs.previous, None).await?;
                        if prefixed {
                            print!("{}", c::prefixed(&log_label(&pod, container.as_deref()), &text));
                        } else {
                            print!("{text}");
                        }
                    }
                }
                Ok(ExitCode::SUCCESS)
            }
            ClientCall::Top { what, namespace, selector, containers } => {
                match what.to_lowercase().as_str() {
                    "pods" | "pod" | "po" => {
                        let mut pairs = Vec::new();
                        if let Some(namespace) = &namespace {
                            pairs.push(("namespace", namespace.as_str()));
                        }
                        if let Some(selector) = &selector {
                            pairs.push(("selector", selector.as_str()));
                        }
                        let value = client.get(&format!("/api/v1/top/pods?{}", c::query(&pairs))).await?;
                        if value.as_array().is_some_and(Vec::is_empty) {
                            bail!(
                                "no usage sampled yet for any pod{}: agents sample every 10 s and a rate needs two samples; try again shortly",
                                namespace.map(|ns| format!(" in namespace {ns}")).unwrap_or_default()
                            );
                        }
                        let all = namespace.is_none();
                        print_value(&value, args.output, |v| c::top_pods_table(v, all, containers))?;
                    }
                    "nodes" | "node" | "no" => {
                        let value = client.get("/api/v1/top/nodes").await?;
                        print_value(&value, args.output, c::top_nodes_table)?;
                    }
                    other => bail!("cannot show the usage of `{other}`: choose pods or nodes"),
                }
                Ok(ExitCode::SUCCESS)
            }
            ClientCall::Describe { target, namespace } => {
                // A pod by its name (`pod/web-7f9c2-0`) is described as a pod; a Pod manifest's
                // name that is not running falls back to the workload.
                if let Some((kind, namespace, name)) = c::parse_target(&target, &namespace)
                    && matches!(kind.to_lowercase().as_str(), "pod" | "pods" | "po")
                {
                    match client.get(&format!("/api/v1/pods/{namespace}/{name}")).await {
                        Ok(value) => {
                            print_value(&value, args.output, c::describe_pod_text)?;
                            print_events(&client, args.output, &format!("pod/{name}"), &namespace, now).await?;
                            return Ok(ExitCode::SUCCESS);
                        }
                        Err(c::ClientError::Refused { status: 404, .. }) => {}
                        Err(error) => return Err(error.into()),
                    }
                }
                let value = client.get(&workload_path(&target, &namespace)?).await?;
                print_value(&value, args.output, |v| c::describe_text(v, now))?;
                if let Some((kind, namespace, name)) = c::parse_target(&target, &namespace) {
                    print_events(&client, args.output, &format!("{kind}/{name}"), &namespace, now).await?;
                }
                Ok(ExitCode::SUCCESS)
            }
            ClientCall::History { target, namespace } => {
                let value = client.get(&format!("{}/history", workload_path(&target, &namespace)?)).await?;
                print_value(&value, args.output, |v| c::history_table(v, now))?;
                Ok(ExitCode::SUCCESS)
            }
            ClientCall::PortForward { target, ports, namespace } => {
                let (local, remote) = forward_ports(&ports)?;
                let (pod, port) = forward_target(&client, &target, &namespace, remote).await?;
                let listener = tokio::net::TcpListener::bind(("127.0.0.1", local))
                    .await
                    .with_context(|| format!("listening on 127.0.0.1:{local} failed; choose another local port"))?;
                println!("Forwarding from {} -> {pod}:{port}", listener.local_addr()?);
                std::io::Write::flush(&mut std::io::stdout())?;
                loop {
                    let (mut socket, _) = listener.accept().await?;
                    let (client, namespace, pod) = (client.clone(), namespace.clone(), pod.clone());
                    tokio::spawn(async move {
                        match client.port_forward(&namespace, &pod, port).await {
                            Ok(mut session) => {
                                let _ = tokio::io::copy_bidirectional(&mut socket, &mut session).await;
                            }
                            Err(error) => eprintln!("error: {error}"),
                        }
                    });
                }
            }
            ClientCall::Exec { pod, container, namespace, stdin, tty, command } => {
                let code = exec(&client, &namespace, &pod, container.as_deref(), &command, stdin, tty).await?;
                // The command's own exit code, as kubectl exec gives it.
                Ok(ExitCode::from(u8::try_from(code).unwrap_or(1)))
            }
            ClientCall::DeleteClaim { name, namespace, yes } => {
                let claims = client.get("/api/v1/pvcs").await?;
                let claim = claims
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|c| c["namespace"] == namespace.as_str() && c["name"] == name.as_str())
                    .cloned();
                let Some(claim) = claim else {
                    bail!("no claim {namespace}/{name}; `berth get pvc` lists them");
                };
                let node = claim["node"].as_str().unwrap_or("no node");
                if !yes
                    && !confirm(
                        &format!("Delete claim {namespace}/{name} and the data of its volume on {node}?"),
                        &format!("deleting claim {namespace}/{name} deletes its data on {node}; confirm with --yes"),
                    )?
                {
                    eprintln!("Nothing changed.");
                    return Ok(ExitCode::from(1));
                }
                let done = client.delete(&format!("/api/v1/pvcs/{namespace}/{name}")).await?;
                print_value(&done, args.output, |_| format!("persistentvolumeclaim/{name} deleted, with its data on {node}\n"))?;
                Ok(ExitCode::SUCCESS)
            }
            ClientCall::TokenCreate { name, role, namespaces, expires_in_seconds } => {
                let body = serde_json::json!({
                    "name": name, "role": role, "namespaces": namespaces, "expiresInSeconds": expires_in_seconds,
                });
                let made = client.post("/api/v1/tokens", &body).await?;
                // The token alone on stdout, to capture; what it is on stderr.
                print_value(&made, args.output, |made| format!("{}\n", made["token"].as_str().unwrap_or_default()))?;
                if args.output == Output::Table {
                    eprintln!("token {name} ({role}) made; it is shown only now");
                }
                Ok(ExitCode::SUCCESS)
            }
            ClientCall::TokenList => {
                let tokens = client.get("/api/v1/tokens").await?;
                print_value(&tokens, args.output, |tokens| c::tokens_table(tokens, now))?;
                Ok(ExitCode::SUCCESS)
            }
            ClientCall::NodeRemove { name, yes } => {
                if !yes
                    && !confirm(
                        &format!("Remove node {name}? Its certificate stops working and its pods move."),
                        &format!("removing node {name} revokes it and moves its pods; confirm with --yes"),
                    )?
                {
                    eprintln!("Nothing changed.");
                    return Ok(ExitCode::from(1));
                }
                let done = client.delete(&format!("/api/v1/nodes/{name}")).await?;
                print_value(&done, args.output, |_| {
                    format!("node/{name} removed; its certificate is revoked and its pods move to other nodes\n")
                })?;
                Ok(ExitCode::SUCCESS)
            }
            ClientCall::TokenRevoke { name } => {
                let done = client.delete(&format!("/api/v1/tokens/{name}")).await?;
                print_value(&done, args.output, |_| format!("token {name} revoked\n"))?;
                Ok(ExitCode::SUCCESS)
            }
            ClientCall::Audit { since_seconds } => {
                let path = match since_seconds {
                    Some(seconds) => format!("/api/v1/audit?sinceSeconds={seconds}"),
                    None => "/api/v1/audit".to_owned(),
                };
                let log = client.get(&path).await?;
                print_value(&log, args.output, |log| c::audit_table(log, now))?;
                Ok(ExitCode::SUCCESS)
            }
            ClientCall::RunCronJob { name, cron_job, namespace } => {
                let path = format!("/api/v1/cronjobs/{namespace}/{cron_job}/run");
                let done = client.post(&path, &serde_json::json!({ "name": name })).await?;
                print_value(&done, args.output, |_| {
                    format!("job.batch/{name} created from cronjob/{cron_job}; `berth get cronjobs -n {namespace}` shows its run\n")
                })?;
                Ok(ExitCode::SUCCESS)
            }
            ClientCall::Rollback { target, namespace, to, yes } => {
                let path = format!("{}/rollback", workload_path(&target, &namespace)?);
                // Say what it will do before doing it, and ask on a terminal.
                let preview = client.post(&path, &serde_json::json!({ "to": to, "dryRun": true })).await?;
                let summary = preview["summary"].as_str().unwrap_or_default().to_owned();
                if args.output == Output::Table {
                    println!("{summary}");
                }
                if !yes && std::io::IsTerminal::is_terminal(&std::io::stdin()) {
                    eprint!("Roll back? [y/N] ");
                    let mut answer = String::new();
                    std::io::stdin().read_line(&mut answer)?;
                    if !matches!(answer.trim(), "y" | "Y" | "yes") {
                        eprintln!("Nothing changed.");
                        return Ok(ExitCode::from(1));
                    }
                }
                let done = client.post(&path, &serde_json::json!({ "to": to })).await?;
                print_value(&done, args.output, |p| {
                    format!(
                        "{target} is held at commit {} until a new commit is applied; `berth describe {target} -n {namespace}` shows the rollback\n",
                        p["pin"]["commit"].as_str().map(|s| &s[..s.len().min(7)]).unwrap_or_default()
                    )
                })?;
                Ok(ExitCode::SUCCESS)
            }
            ClientCall::Sync { commit, approve } => {
                let sha = match commit {
                    Some(sha) => sha,
                    None => {
                        let syncs = client.get("/api/v1/syncs").await?;
                        let waiting = syncs
                            .as_array()
                            .into_iter()
                            .flatten()
                            .find(|s| s["outcome"] == "waiting")
                            .and_then(|s| s["commit"]["sha"].as_str().map(str::to_owned));
                        match waiting {
                            Some(sha) => sha,
                            None => {
                                println!("no commit waits for approval; `berth get syncs` lists what was seen");
                                return Ok(ExitCode::SUCCESS);
                            }
                        }
                    }
                };
                let record = client.get(&format!("/api/v1/syncs/{sha}")).await?;
                let index = record["stateIndex"].as_i64();
                if args.output == Output::Table {
                    print!("{}", record["planText"].as_str().unwrap_or_default());
                    println!(
                        "\ncommit {} is {}{} (state index {})",
                        &sha[..sha.len().min(7)],
                        record["outcome"].as_str().unwrap_or_default(),
                        record["reason"].as_str().filter(|r| !r.is_empty()).map(|r| format!(": {r}")).unwrap_or_default(),
                        index.unwrap_or_default()
                    );
                } else {
                    print_value(&record, args.output, |_| String::new())?;
                }
                if approve {
                    let full = record["commit"]["sha"].as_str().unwrap_or(&sha).to_owned();
                    client
                        .post(
                            &format!("/api/v1/syncs/{full}/approve"),
                            &serde_json::json!({ "stateIndex": index, "planDigest": record["plan"]["planDigest"] }),
                        )
                        .await?;
                    eprintln!(
                        "approved plan {}: the server carries out its steps, each workload to the pod template its step names (and back where it says so if a rollout fails); if what runs changes before the approval is taken, it is dropped and the commit waits with the new plan",
                        record["plan"]["planDigest"].as_str().unwrap_or("none recorded")
                    );
                }
                Ok(ExitCode::SUCCESS)
            }
        }
    })
}

/// `berth plan --server`: a commit against the live applied state of a running server.
fn remote_plan(server: &str, rev: &str, format: PlanFormat) -> Result<ExitCode> {
    let reach = berth::client::reach(Some(server), None, None).map_err(|e| anyhow::anyhow!(e))?;
    let client = berth::client::Client::connect(reach)?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let view = runtime.block_on(client.get(&format!("/api/v1/plan?rev={rev}")))?;
    let mut out = anstream::stdout();
    match format {
        PlanFormat::Json => writeln!(out, "{}", serde_json::to_string_pretty(&view["plan"])?)?,
        _ => {
            write!(out, "{}", view["planText"].as_str().unwrap_or_default())?;
            writeln!(out, "(against the server's applied state at index {})", view["stateIndex"])?;
        }
    }
    Ok(if view["hasChanges"].as_bool() == Some(true) { ExitCode::from(2) } else { ExitCode::SUCCESS })
}
