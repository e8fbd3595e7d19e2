//! Revisions, pins and sync records in the store: the control plane's decisions per commit.

use super::{Store, StoreError};
use crate::manifest::{Kind, ObjectKey};
use crate::sync::CommitInfo;
use sqlx::FromRow;

/// How a revision's rollout ended, or that it has not yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Progressing,
    Healthy,
    Failed,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Progressing => "progressing",
            Outcome::Healthy => "healthy",
            Outcome::Failed => "failed",
        }
    }

    fn parse(text: &str) -> Outcome {
        match text {
            "healthy" => Outcome::Healthy,
            "failed" => Outcome::Failed,
            _ => Outcome::Progressing,
        }
    }
}

/// What became of a commit the server saw: the sync record's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SyncOutcome {
    /// Waits for `berth sync --approve` (manual policy, or over the prune threshold).
    Waiting,
    /// Being applied.
    Progressing,
    /// Applied, and every workload is healthy.
    Synced,
    /// Applied, and a workload is not healthy.
    Degraded,
    /// Did not load: nothing of it is applied.
    Failed,
    /// The branch moved on before it was applied or finished.
    Superseded,
}

impl SyncOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            SyncOutcome::Waiting => "waiting",
            SyncOutcome::Progressing => "progressing",
            SyncOutcome::Synced => "synced",
            SyncOutcome::Degraded => "degraded",
            SyncOutcome::Failed => "failed",
            SyncOutcome::Superseded => "superseded",
        }
    }

    fn parse(text: &str) -> Option<SyncOutcome> {
        [
            SyncOutcome::Waiting,
            SyncOutcome::Progressing,
            SyncOutcome::Synced,
            SyncOutcome::Degraded,
            SyncOutcome::Failed,
            SyncOutcome::Superseded,
        ]
        .into_iter()
        .find(|o| o.as_str() == text)
    }

    /// Whether the sync is over: nothing more will be done for its commit.
    pub fn is_final(self) -> bool {
        !matches!(self, SyncOutcome::Waiting | SyncOutcome::Progressing)
    }
}

impl std::fmt::Display for SyncOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One spec of a workload, as a commit introduced it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Revision {
    #[serde(skip)]
    pub key: ObjectKey,
    pub commit: CommitInfo,
    pub spec_hash: String,
    pub started_at: i64,
    pub finished_at: Option<i64>,
    pub outcome: Outcome,
    pub reason: String,
}

/// A workload held at an earlier commit's spec until the branch head moves away from `head`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Pin {
    #[serde(skip)]
    pub key: ObjectKey,
    pub commit: String,
    pub head: String,
    pub pinned_at: i64,
}

/// What became of one commit the server saw.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SyncRecord {
    pub commit: CommitInfo,
    pub seen_at: i64,
    pub outcome: SyncOutcome,
    pub reason: String,
    pub state_index: i64,
    pub approved_at: Option<i64>,
    pub finished_at: Option<i64>,
    #[serde(skip)]
    pub plan_text: String,
    #[serde(skip)]
    pub plan_json: String,
}

#[derive(FromRow)]
struct RevisionRow {
    kind: String,
    namespace: String,
    name: String,
    commit_sha: String,
    author: String,
    message: String,
    committed_at: i64,
    spec_hash: String,
    started_at: i64,
    finished_at: Option<i64>,
    outcome: String,
    reason: String,
}

#[derive(FromRow)]
struct PinRow {
    kind: String,
    namespace: String,
    name: String,
    commit_sha: String,
    head_sha: String,
    pinned_at: i64,
}

#[derive(FromRow)]
struct SyncRow {
    commit_sha: String,
    author: String,
    message: String,
    committed_at: i64,
    seen_at: i64,
    outcome: String,
    reason: String,
    state_index: i64,
    approved_at: Option<i64>,
    finished_at: Option<i64>,
    plan_text: String,
    plan_json: String,
}

fn key_of(kind: &str, namespace: String, name: String) -> Result<ObjectKey, StoreError> {
    let kind = Kind::from_name(kind).ok_or_else(|| StoreError::Corrupt {
        kind: kind.to_owned(),
        namespace: namespace.clone(),
        name: name.clone(),
        source: serde::de::Error::custom(format!("unknown kind {kind}")),
    })?;
    Ok(ObjectKey { kind, namespace, name })
}

impl RevisionRow {
    fn into_revision(self) -> Result<Revision, StoreError> {
        Ok(Revision {
            key: key_of(&self.kind, self.namespace, self.name)?,
            commit: CommitInfo {
                sha: self.commit_sha,
                author: self.author,
                message: self.message,
                time: self.committed_at,
            },
            spec_hash: self.spec_hash,
            started_at: self.started_at,
            finished_at: self.finished_at,
            outcome: Outcome::parse(&self.outcome),
            reason: self.reason,
        })
    }
}

impl SyncRow {
    fn into_record(self) -> Result<SyncRecord, StoreError> {
        let outcome = SyncOutcome::parse(&self.outcome).ok_or_else(|| StoreError::UnknownOutcome {
            commit: self.commit_sha.clone(),
            outcome: self.outcome.clone(),
        })?;
        Ok(SyncRecord {
            commit: CommitInfo {
                sha: self.commit_sha,
                author: self.author,
                message: self.message,
                time: self.committed_at,
            },
            seen_at: self.seen_at,
            outcome,
            reason: self.reason,
            state_index: self.state_index,
            approved_at: self.approved_at,
            finished_at: self.finished_at,
            plan_text: self.plan_text,
            plan_json: self.plan_json,
        })
    }
}

const REVISION_COLUMNS: &str = "r.kind, r.namespace, r.name, r.commit_sha, c.author, c.message, c.committed_at, \
     r.spec_hash, r.started_at, r.finished_at, r.outcome, r.reason \
     FROM revisions r JOIN commits c ON c.sha = r.commit_sha";

const SYNC_COLUMNS: &str = "s.commit_sha, c.author, c.message, c.committed_at, s.seen_at, s.outcome, s.reason, \
     s.state_index, s.approved_at, s.finished_at, s.plan_text, s.plan_json \
     FROM syncs s JOIN commits c ON c.sha = s.commit_sha";

impl Store {
    /// Every revision of every workload, oldest first.
    pub async fn all_revisions(&self) -> Result<Vec<Revision>, StoreError> {
        let rows =
            sqlx::query_as::<_, RevisionRow>(&format!("SELECT {REVISION_COLUMNS} ORDER BY r.started_at, r.rowid"))
                .fetch_all(&self.pool)
                .await?;
        rows.into_iter().map(RevisionRow::into_revision).collect()
    }

    /// The revisions of one workload, newest first.
    pub async fn revisions(&self, key: &ObjectKey) -> Result<Vec<Revision>, StoreError> {
        let rows = sqlx::query_as::<_, RevisionRow>(&format!(
            "SELECT {REVISION_COLUMNS} WHERE r.kind = ? AND r.namespace = ? AND r.name = ? \
             ORDER BY r.started_at DESC, r.rowid DESC"
        ))
        .bind(key.kind.name())
        .bind(&key.namespace)
        .bind(&key.name)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(RevisionRow::into_revision).collect()
    }

    pub async fn pins(&self) -> Result<Vec<Pin>, StoreError> {
        let rows = sqlx::query_as::<_, PinRow>(
            "SELECT kind, namespace, name, commit_sha, head_sha, pinned_at FROM pins ORDER BY kind, namespace, name",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|row| {
                Ok(Pin {
                    key: key_of(&row.kind, row.namespace, row.name)?,
                    commit: row.commit_sha,
                    head: row.head_sha,
                    pinned_at: row.pinned_at,
                })
            })
            .collect()
    }

    pub async fn set_pin(&self, pin: &Pin) -> Result<(), StoreError> {
        let mut transaction = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO pins (kind, namespace, name, commit_sha, head_sha, pinned_at) VALUES (?, ?, ?, ?, ?, ?) \
             ON CONFLICT (kind, namespace, name) DO UPDATE SET commit_sha = excluded.commit_sha, \
             head_sha = excluded.head_sha, pinned_at = excluded.pinned_at",
        )
        .bind(pin.key.kind.name())
        .bind(&pin.key.namespace)
        .bind(&pin.key.name)
        .bind(&pin.commit)
        .bind(&pin.head)
        .bind(pin.pinned_at)
        .execute(&mut *transaction)
        .await?;
        sqlx::query(super::BUMP_STATE_INDEX).execute(&mut *transaction).await?;
        transaction.commit().await?;
        Ok(())
    }

    /// The newest sync records first, at most `limit`.
    pub async fn syncs(&self, limit: i64) -> Result<Vec<SyncRecord>, StoreError> {
        let rows = sqlx::query_as::<_, SyncRow>(&format!(
            "SELECT {SYNC_COLUMNS} ORDER BY s.seen_at DESC, s.rowid DESC LIMIT ?"
        ))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(SyncRow::into_record).collect()
    }

    /// The sync record of a commit, by full sha or a unique prefix of at least 4 characters.
    pub async fn sync(&self, sha: &str) -> Result<Option<SyncRecord>, StoreError> {
        if sha.len() < 4 || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(None);
        }
        let rows = sqlx::query_as::<_, SyncRow>(&format!("SELECT {SYNC_COLUMNS} WHERE s.commit_sha LIKE ? LIMIT 2"))
            .bind(format!("{}%", sha.to_ascii_lowercase()))
            .fetch_all(&self.pool)
            .await?;
        if rows.len() == 1 { rows.into_iter().next().map(SyncRow::into_record).transpose() } else { Ok(None) }
    }

    /// A number that grows whenever the applied state changes: a plan made at one index is
    /// stale at another.
    pub async fn state_index(&self) -> Result<i64, StoreError> {
        Ok(self.control_value("state_index").await?.and_then(|v| v.parse().ok()).unwrap_or(0))
    }

    pub async fn control_value(&self, key: &str) -> Result<Option<String>, StoreError> {
        Ok(sqlx::query_scalar("SELECT value FROM control WHERE key = ?").bind(key).fetch_optional(&self.pool).await?)
    }
}
