//! store: the control plane's memory, in SQLite through sqlx.
//!
//! The schema lives in `migrations/`, embedded in the binary and applied on open; the database
//! runs in WAL mode. Queries are runtime `query_as` with portable SQL (no SQLite-only syntax
//! outside this module), so the store can move to PostgreSQL behind the same interface.
//! This module knows rows and transactions; it never decides what to apply.

mod changes;
mod claims;
mod cron;
pub mod events;
mod history;
mod nodes;
pub mod seal;
mod services;
mod tokens;

pub use changes::Change;
pub use claims::ClaimRecord;
pub use events::{EventRecord, NewEvent};
pub use history::{Outcome, Pin, Revision, SyncOutcome, SyncRecord};
pub use nodes::NodeRecord;
pub use services::{Allocations, DNS_ADDRESS, NODE_PORTS, ServiceWants, allocate};
pub use tokens::{AUDIT_LIMIT, AuditRecord, TokenRecord};

use crate::diag::Pos;
use crate::manifest::{Kind, Object, Resource};
use crate::sync::CommitInfo;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};
use sqlx::{FromRow, SqlitePool};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the state file {0} does not exist")]
    Missing(PathBuf),
    #[error("opening the database {path} failed")]
    Open {
        path: PathBuf,
        #[source]
        source: sqlx::Error,
    },
    #[error("migrating the database {path} failed")]
    Migrate {
        path: PathBuf,
        #[source]
        source: sqlx::migrate::MigrateError,
    },
    #[error("database query failed")]
    Query(#[from] sqlx::Error),
    #[error(
        "the stored object {kind} {namespace}/{name} is unreadable; the database was written by another version of berth or edited by hand"
    )]
    Corrupt {
        kind: String,
        namespace: String,
        name: String,
        #[source]
        source: serde_json::Error,
    },
    #[error(
        "the sync record of commit {commit} has the unknown outcome {outcome:?}; the database was written by another version of berth or edited by hand"
    )]
    UnknownOutcome { commit: String, outcome: String },
    #[error(
        "the store's key {path}: {reason}; the key that seals secret values is kept beside the database or given by BERTH_STORE_KEY"
    )]
    Key { path: PathBuf, reason: String },
}

/// Counts one more change to what plans are made from (the applied objects, the verdicts on
/// revisions, the pins): a plan recorded before it is stale.
const BUMP_STATE_INDEX: &str = "INSERT INTO control (key, value) VALUES ('state_index', '1') \
     ON CONFLICT (key) DO UPDATE SET value = CAST(CAST(control.value AS INTEGER) + 1 AS TEXT)";

pub struct Store {
    pool: SqlitePool,
    sealer: seal::Sealer,
    /// When events were last pruned past their bounds (`events`).
    events_pruned_at: std::sync::atomic::AtomicI64,
}

/// What berth last applied: the commit and its objects.
#[derive(Debug, Clone, Default)]
pub struct Applied {
    pub commit: Option<CommitInfo>,
    pub resources: Vec<Arc<Resource>>,
}

#[derive(FromRow)]
struct AppliedRow {
    kind: String,
    namespace: String,
    name: String,
    file: String,
    line: i64,
    canonical: String,
    sensitive_digests: String,
}

#[derive(FromRow)]
struct CommitRow {
    sha: String,
    author: String,
    message: String,
    committed_at: i64,
}

impl Store {
    /// Opens the database at `path`, creating it when it does not exist, and migrates it.
    pub async fn open(path: &Path) -> Result<Store, StoreError> {
        Self::connect(path, true).await
    }

    /// Opens an existing database; a missing file is an error, never an empty state.
    pub async fn open_existing(path: &Path) -> Result<Store, StoreError> {
        if !path.exists() {
            return Err(StoreError::Missing(path.to_owned()));
        }
        Self::connect(path, false).await
    }

    async fn connect(path: &Path, create: bool) -> Result<Store, StoreError> {
        // The database holds node credential digests and the values pods read: its folder and
        // its files (with the journals SQLite makes beside it, which take the database's mode)
        // are the owner's alone. A new database is created 0600 before SQLite opens it.
        let io = |source| StoreError::Open { path: path.to_owned(), source: sqlx::Error::Io(source) };
        if create {
            if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                crate::private::private_dir(parent).map_err(io)?;
            }
            if !path.exists() {
                crate::private::create_private(path).map_err(io)?;
            }
        }
        for suffix in ["", "-wal", "-shm"] {
            let mut name = path.as_os_str().to_owned();
            name.push(suffix);
            crate::private::private_file(Path::new(&name)).map_err(io)?;
        }
        let sealer = seal::Sealer::for_database(path, create)?;
        let options = SqliteConnectOptions::from_str("sqlite://")
            .map_err(|source| StoreError::Open { path: path.to_owned(), source })?
            .filename(path)
            .create_if_missing(create)
            .journal_mode(SqliteJournalMode::Wal)
            // With a write-ahead log, NORMAL keeps the database consistent through a crash and
            // saves an fsync per transaction; a power cut may lose the last few, which the
            // loop and the agents simply do again.
            .synchronous(sqlx::sqlite::SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(std::time::Duration::from_secs(5))
            // 512 KiB of page cache per connection: the working set is small, and the
            // control plane's memory budget is tight.
            .pragma("cache_size", "-512");
        let pool = SqlitePoolOptions::new()
            .max_connections(2)
            .connect_with(options)
            .await
            .map_err(|source| StoreError::Open { path: path.to_owned(), source })?;
        sqlx::migrate!("./migrations")
            .run(&pool)
            .await
            .map_err(|source| StoreError::Migrate { path: path.to_owned(), source })?;
        Ok(Store { pool, sealer, events_pruned_at: std::sync::atomic::AtomicI64::new(i64::MIN / 2) })
    }

    /// Answers when the database does: what `/readyz` asks.
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query_scalar::<_, i64>("SELECT 1").fetch_one(&self.pool).await?;
        Ok(())
    }

    pub async fn journal_mode(&self) -> Result<String, StoreError> {
        Ok(sqlx::query_scalar("PRAGMA journal_mode").fetch_one(&self.pool).await?)
    }

    pub async fn record_commit(&self, commit: &CommitInfo, now: i64) -> Result<(), StoreError> {
        self.write(&[Change::Commit { commit: commit.clone(), seen_at: now }]).await
    }

    /// Records that `resources` of `commit` are now what runs: one transaction, replacing the
    /// previous applied set.
    pub async fn record_applied(
        &self,
        commit: &CommitInfo,
        resources: &[Arc<Resource>],
        now: i64,
    ) -> Result<(), StoreError> {
        self.write(&[Change::Applied { commit: commit.clone(), resources: resources.to_vec(), at: now }]).await
    }

    /// The objects as last applied, for the observed side of a plan.
    pub async fn applied(&self) -> Result<Applied, StoreError> {
        let commit_sha: Option<String> = sqlx::query_scalar("SELECT value FROM control WHERE key = 'applied_commit'")
            .fetch_optional(&self.pool)
            .await?;
        let commit = match commit_sha {
            Some(sha) => {
                sqlx::query_as::<_, CommitRow>("SELECT sha, author, message, committed_at FROM commits WHERE sha = ?")
                    .bind(sha)
                    .fetch_optional(&self.pool)
                    .await?
                    .map(|row| CommitInfo {
                        sha: row.sha,
                        author: row.author,
                        message: row.message,
                        time: row.committed_at,
                    })
            }
            None => None,
        };
        let rows = sqlx::query_as::<_, AppliedRow>("SELECT kind, namespace, name, file, line, canonical, sensitive_digests FROM applied_objects ORDER BY kind, namespace, name")
            .fetch_all(&self.pool)
            .await?;
        let mut resources = Vec::with_capacity(rows.len());
        for row in rows {
            let corrupt = |source| StoreError::Corrupt {
                kind: row.kind.clone(),
                namespace: row.namespace.clone(),
                name: row.name.clone(),
                source,
            };
            let kind = Kind::from_name(&row.kind)
                .ok_or_else(|| corrupt(serde::de::Error::custom(format!("unknown kind {}", row.kind))))?;
            let canonical: serde_json::Value = serde_json::from_str(&row.canonical).map_err(corrupt)?;
            let object = Object::from_canonical(kind, canonical).map_err(corrupt)?;
            let digests: BTreeMap<String, String> = serde_json::from_str(&row.sensitive_digests).map_err(corrupt)?;
            let pos = Pos::new(u32::try_from(row.line).unwrap_or(0), 1);
            resources.push(Arc::new(Resource::from_parts(&row.file, pos, object, digests, Vec::new())));
        }
        resources.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(Applied { commit, resources })
    }

    pub async fn close(self) {
        self.pool.close().await;
    }
}
