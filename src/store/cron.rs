//! What the control plane remembers of each CronJob (`apply::cron::CronState`), by namespace
//! and name.

use super::{Store, StoreError};
use crate::apply::cron::CronState;
use std::collections::BTreeMap;

impl Store {
    /// Every CronJob's state. A row that does not read (written by another berth) reads as none.
    pub async fn cron_states(&self) -> Result<BTreeMap<(String, String), CronState>, StoreError> {
        let rows: Vec<(String, String, String)> =
            sqlx::query_as("SELECT namespace, name, state FROM cron_jobs").fetch_all(&self.pool).await?;
        Ok(rows
            .into_iter()
            .filter_map(|(namespace, name, state)| Some(((namespace, name), serde_json::from_str(&state).ok()?)))
            .collect())
    }

    /// Writes the states that changed and removes those of CronJobs gone, in one transaction.
    pub async fn write_cron_states(
        &self,
        changed: &BTreeMap<(String, String), CronState>,
        gone: &[(String, String)],
    ) -> Result<(), StoreError> {
        let mut transaction = self.pool.begin().await?;
        for ((namespace, name), state) in changed {
            let text = serde_json::to_string(state).unwrap_or_default();
            sqlx::query(
                "INSERT INTO cron_jobs (namespace, name, state) VALUES (?, ?, ?) \
                 ON CONFLICT (namespace, name) DO UPDATE SET state = excluded.state",
            )
            .bind(namespace)
            .bind(name)
            .bind(text)
            .execute(&mut *transaction)
            .await?;
        }
        for (namespace, name) in gone {
            sqlx::query("DELETE FROM cron_jobs WHERE namespace = ? AND name = ?")
                .bind(namespace)
                .bind(name)
                .execute(&mut *transaction)
                .await?;
        }
        transaction.commit().await?;
        Ok(())
    }
}
