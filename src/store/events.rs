//! Events (`events`): what happened to pods and workloads, deduplicated with counts, kept for
//! [`EVENT_AGE_SECONDS`] and at most [`EVENT_LIMIT`] of them.

use super::{Store, StoreError};
use serde::{Deserialize, Serialize};

/// Events older than this are dropped.
pub const EVENT_AGE_SECONDS: i64 = 3600;
/// At most this many events are kept; the oldest go first.
pub const EVENT_LIMIT: i64 = 2000;

/// An event as it happens: the same one again (object, reason and message) counts up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEvent {
    pub namespace: String,
    /// `Pod/web-7f9c-0`, `Deployment/web`.
    pub object: String,
    /// For a pod, its workload (`Deployment/web`); empty otherwise.
    pub owner: String,
    /// `Normal` or `Warning`.
    pub kind: &'static str,
    pub reason: String,
    pub message: String,
}

/// An event as kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EventRecord {
    pub namespace: String,
    pub object: String,
    #[serde(skip_serializing_if = "String::is_empty", default)]
    pub owner: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub reason: String,
    pub message: String,
    pub count: i64,
    pub first_seen: i64,
    pub last_seen: i64,
}

type Row = (String, String, String, String, String, String, i64, i64, i64);

impl Store {
    /// Records `events` at `now` in one transaction, and drops what is past the bounds.
    pub async fn add_events(&self, events: &[NewEvent], now: i64) -> Result<(), StoreError> {
        if events.is_empty() {
            return Ok(());
        }
        let mut transaction = self.pool.begin().await?;
        for event in events {
            sqlx::query(
                "INSERT INTO events (namespace, object, owner, type, reason, message, count, first_seen, last_seen) \
                 VALUES (?, ?, ?, ?, ?, ?, 1, ?, ?) \
                 ON CONFLICT (namespace, object, reason, message) DO UPDATE SET count = count + 1, \
                 last_seen = excluded.last_seen, type = excluded.type",
            )
            .bind(&event.namespace)
            .bind(&event.object)
            .bind(&event.owner)
            .bind(event.kind)
            .bind(&event.reason)
            .bind(&event.message)
            .bind(now)
            .bind(now)
            .execute(&mut *transaction)
            .await?;
        }
        sqlx::query("DELETE FROM events WHERE last_seen < ?")
            .bind(now - EVENT_AGE_SECONDS)
            .execute(&mut *transaction)
            .await?;
        sqlx::query(
            "DELETE FROM events WHERE id NOT IN (SELECT id FROM events ORDER BY last_seen DESC, id DESC LIMIT ?)",
        )
        .bind(EVENT_LIMIT)
        .execute(&mut *transaction)
        .await?;
        transaction.commit().await?;
        Ok(())
    }

    /// Every event kept, oldest last seen first.
    pub async fn events(&self) -> Result<Vec<EventRecord>, StoreError> {
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT namespace, object, owner, type, reason, message, count, first_seen, last_seen FROM events \
             ORDER BY last_seen, id",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(namespace, object, owner, kind, reason, message, count, first_seen, last_seen)| EventRecord {
                namespace,
                object,
                owner,
                kind,
                reason,
                message,
                count,
                first_seen,
                last_seen,
            })
            .collect())
    }
}
