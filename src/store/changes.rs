//! The control loop's writes as values: a pass decides a list of [`Change`]s in pure code, and
//! [`Store::write`] makes them in one transaction, before the pass acts on them.

use super::{BUMP_STATE_INDEX, Outcome, Revision, Store, StoreError, SyncOutcome, SyncRecord};
use crate::manifest::{ObjectKey, Resource};
use crate::sync::CommitInfo;
use sqlx::SqliteConnection;
use std::sync::Arc;

/// One write of the control loop.
#[derive(Debug, Clone)]
pub enum Change {
    /// A commit the server saw, once; a second one for the same commit changes nothing.
    Commit {
        commit: CommitInfo,
        seen_at: i64,
    },
    /// A commit's sync record, once; a second one for the same commit changes nothing.
    AddSync(SyncRecord),
    /// A waiting commit's plan, made again against a state that moved.
    Replan {
        commit: String,
        state_index: i64,
        text: String,
        json: String,
    },
    /// What became of a commit; `finished` stamps the end.
    SyncOutcome {
        commit: String,
        outcome: SyncOutcome,
        reason: String,
        finished: Option<i64>,
    },
    /// An approval of a waiting commit.
    Approve {
        commit: String,
        at: i64,
    },
    /// A revision; one at a commit that had one before (the branch came back to it) starts
    /// again, as the newest.
    AddRevision(Revision),
    /// The verdict on a rolling revision. It changes what a plan says, so plans made before
    /// are stale.
    FinishRevision {
        key: ObjectKey,
        commit: String,
        outcome: Outcome,
        reason: String,
        at: i64,
    },
    /// Drops the pins made while another commit was the head: Git has moved since.
    DropPinsNotAt(String),
    SetControl(&'static str, String),
    ClearControl(&'static str),
    /// `resources` of `commit` are now what runs, replacing the previous applied set.
    Applied {
        commit: CommitInfo,
        resources: Vec<Arc<Resource>>,
        at: i64,
    },
}

impl Change {
    /// Whether the change moves what plans are made from (the state index).
    pub fn moves_state(&self) -> bool {
        matches!(self, Change::FinishRevision { .. } | Change::Applied { .. })
    }
}

impl Store {
    /// Makes `changes` in order, in one transaction: all of them or none.
    pub async fn write(&self, changes: &[Change]) -> Result<(), StoreError> {
        if changes.is_empty() {
            return Ok(());
        }
        let mut transaction = self.pool.begin().await?;
        for change in changes {
            make(&mut transaction, change).await?;
        }
        transaction.commit().await?;
        Ok(())
    }
}

async fn make(conn: &mut SqliteConnection, change: &Change) -> Result<(), StoreError> {
    match change {
        Change::Commit { commit, seen_at } => record_commit(conn, commit, *seen_at).await?,
        Change::AddSync(record) => {
            sqlx::query(
                "INSERT INTO syncs (commit_sha, seen_at, outcome, reason, state_index, plan_text, plan_json, approved_at, finished_at) \
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (commit_sha) DO NOTHING",
            )
            .bind(&record.commit.sha)
            .bind(record.seen_at)
            .bind(record.outcome.as_str())
            .bind(&record.reason)
            .bind(record.state_index)
            .bind(&record.plan_text)
            .bind(&record.plan_json)
            .bind(record.approved_at)
            .bind(record.finished_at)
            .execute(&mut *conn)
            .await?;
        }
        Change::Replan { commit, state_index, text, json } => {
            sqlx::query("UPDATE syncs SET state_index = ?, plan_text = ?, plan_json = ? WHERE commit_sha = ?")
                .bind(state_index)
                .bind(text)
                .bind(json)
                .bind(commit)
                .execute(&mut *conn)
                .await?;
        }
        Change::SyncOutcome { commit, outcome, reason, finished } => {
            sqlx::query(
                "UPDATE syncs SET outcome = ?, reason = ?, finished_at = COALESCE(?, finished_at) WHERE commit_sha = ?",
            )
            .bind(outcome.as_str())
            .bind(reason)
            .bind(finished)
            .bind(commit)
            .execute(&mut *conn)
            .await?;
        }
        Change::Approve { commit, at } => {
            sqlx::query(
                "UPDATE syncs SET approved_at = ?, outcome = 'progressing', reason = 'approved' WHERE commit_sha = ?",
            )
            .bind(at)
            .bind(commit)
            .execute(&mut *conn)
            .await?;
        }
        Change::AddRevision(revision) => {
            sqlx::query("DELETE FROM revisions WHERE kind = ? AND namespace = ? AND name = ? AND commit_sha = ?")
                .bind(revision.key.kind.name())
                .bind(&revision.key.namespace)
                .bind(&revision.key.name)
                .bind(&revision.commit.sha)
                .execute(&mut *conn)
                .await?;
            sqlx::query(
                "INSERT INTO revisions (kind, namespace, name, commit_sha, spec_hash, started_at, finished_at, outcome, reason) \
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(revision.key.kind.name())
            .bind(&revision.key.namespace)
            .bind(&revision.key.name)
            .bind(&revision.commit.sha)
            .bind(&revision.spec_hash)
            .bind(revision.started_at)
            .bind(revision.finished_at)
            .bind(revision.outcome.as_str())
            .bind(&revision.reason)
            .execute(&mut *conn)
            .await?;
        }
        Change::FinishRevision { key, commit, outcome, reason, at } => {
            sqlx::query(
                "UPDATE revisions SET outcome = ?, reason = ?, finished_at = ? \
                 WHERE kind = ? AND namespace = ? AND name = ? AND commit_sha = ?",
            )
            .bind(outcome.as_str())
            .bind(reason)
            .bind(at)
            .bind(key.kind.name())
            .bind(&key.namespace)
            .bind(&key.name)
            .bind(commit)
            .execute(&mut *conn)
            .await?;
            sqlx::query(BUMP_STATE_INDEX).execute(&mut *conn).await?;
        }
        Change::DropPinsNotAt(head) => {
            sqlx::query("DELETE FROM pins WHERE head_sha <> ?").bind(head).execute(&mut *conn).await?;
        }
        Change::SetControl(key, value) => set_control(conn, key, value).await?,
        Change::ClearControl(key) => {
            sqlx::query("DELETE FROM control WHERE key = ?").bind(key).execute(&mut *conn).await?;
        }
        Change::Applied { commit, resources, at } => {
            record_commit(conn, commit, *at).await?;
            sqlx::query("DELETE FROM applied_objects").execute(&mut *conn).await?;
            for resource in resources {
                let digests = serde_json::to_string(&resource.sensitive_digests).unwrap_or_else(|_| "{}".into());
                sqlx::query(
                    "INSERT INTO applied_objects (kind, namespace, name, commit_sha, file, line, spec_hash, canonical, sensitive_digests, applied_at) \
                     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                )
                .bind(resource.key.kind.name())
                .bind(&resource.key.namespace)
                .bind(&resource.key.name)
                .bind(&commit.sha)
                .bind(&resource.file)
                .bind(i64::from(resource.pos.line))
                .bind(&resource.hash)
                .bind(&*resource.canonical)
                .bind(digests)
                .bind(at)
                .execute(&mut *conn)
                .await?;
            }
            set_control(conn, "applied_commit", &commit.sha).await?;
            // The applied state moved: plans made before are stale.
            sqlx::query(BUMP_STATE_INDEX).execute(&mut *conn).await?;
        }
    }
    Ok(())
}

async fn record_commit(conn: &mut SqliteConnection, commit: &CommitInfo, now: i64) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO commits (sha, author, message, committed_at, seen_at) VALUES (?, ?, ?, ?, ?) ON CONFLICT (sha) DO NOTHING",
    )
    .bind(&commit.sha)
    .bind(&commit.author)
    .bind(&commit.message)
    .bind(commit.time)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

async fn set_control(conn: &mut SqliteConnection, key: &str, value: &str) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO control (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
    )
    .bind(key)
    .bind(value)
    .execute(&mut *conn)
    .await?;
    Ok(())
}
