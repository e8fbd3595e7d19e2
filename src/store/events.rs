//! Events (`events`): what happened to pods and workloads, deduplicated with counts, kept for
//! [`EVENT_AGE_SECONDS`] and at most [`EVENT_LIMIT`] of them.

use super::{Store, StoreError};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

/// Events older than this are dropped.
pub const EVENT_AGE_SECONDS: i64 = 3600;
/// At most this many events are kept; the oldest go first.
pub const EVENT_LIMIT: i64 = 2000;

/// Pruning past the bounds runs at most this often: the bounds are kept within a minute's worth
/// of events, and a write is one upsert per event rather than two full-table deletes.
pub const PRUNE_EVERY_SECONDS: i64 = 60;
/// A loop that passes often records the same event again only after this long: its count still
/// grows while the condition lasts, more slowly, as kubelet's event rate limit does.
pub const REPEAT_SECONDS: i64 = 30;

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
    /// Records `events` at `now` in one transaction, and drops what is past the bounds when the
    /// last pruning is [`PRUNE_EVERY_SECONDS`] old.
    pub async fn add_events(&self, events: &[NewEvent], now: i64) -> Result<(), StoreError> {
        let pruned = self.events_pruned_at.load(Ordering::Relaxed);
        if events.is_empty() && now - pruned < PRUNE_EVERY_SECONDS && now >= pruned {
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
        if now - pruned < PRUNE_EVERY_SECONDS && now >= pruned {
            transaction.commit().await?;
            return Ok(());
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
        self.events_pruned_at.store(now, Ordering::Relaxed);
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

type EventKey = (String, String, String, String);

/// Records the events of a loop that passes often (the controller): the same event again
/// within [`REPEAT_SECONDS`] is not written, and a failure to record is logged once per run of
/// failures, not once per pass.
#[derive(Debug, Default)]
pub struct EventRecorder {
    /// When each event was last written, by (namespace, object, reason, message).
    written: Mutex<HashMap<EventKey, i64>>,
    failing: AtomicBool,
}

impl EventRecorder {
    /// Writes those of `events` not written in the last [`REPEAT_SECONDS`]; a failure is
    /// logged, not returned: events never stop the loop that tells of them.
    pub async fn record(&self, store: &Store, events: Vec<NewEvent>, now: i64) {
        let due: Vec<NewEvent> = {
            let mut written = self.written.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            written.retain(|_, at| now - *at < REPEAT_SECONDS && *at <= now);
            events
                .into_iter()
                .filter(|event| {
                    let key =
                        (event.namespace.clone(), event.object.clone(), event.reason.clone(), event.message.clone());
                    match written.entry(key) {
                        std::collections::hash_map::Entry::Vacant(vacant) => {
                            vacant.insert(now);
                            true
                        }
                        std::collections::hash_map::Entry::Occupied(_) => false,
                    }
                })
                .collect()
        };
        match store.add_events(&due, now).await {
            Ok(()) => {
                if self.failing.swap(false, Ordering::Relaxed) {
                    tracing::info!("Recording events works again.");
                }
            }
            Err(error) => {
                if !self.failing.swap(true, Ordering::Relaxed) {
                    tracing::warn!(%error, "Recording events failed; logged again once it works.");
                }
                // Not written: tried again on the next pass.
                let mut written = self.written.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                for event in &due {
                    written.remove(&(
                        event.namespace.clone(),
                        event.object.clone(),
                        event.reason.clone(),
                        event.message.clone(),
                    ));
                }
            }
        }
    }
}
