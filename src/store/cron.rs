//! What the control plane remembers of each CronJob, by namespace and name: a JSON text the
//! controller reads and writes (`apply::cron::CronState`).

use super::{Store, StoreError};
use std::collections::BTreeMap;

impl Store {
    /// Every CronJob's state.
    pub async fn cron_states(&self) -> Result<BTreeMap<(String, String), String>, StoreError> {
        let rows: Vec<(String, String, String)> =
            sqlx::query_as("SELECT namespace, name, state FROM cron_jobs").fetch_all(&self.pool).await?;
        Ok(rows.into_iter().map(|(namespace, name, state)| ((namespace, name), state)).collect())
    }

    /// Writes the states that changed and removes those of CronJobs gone, in one transaction.
    pub async fn write_cron_states(
        &self,
        changed: &BTreeMap<(String, String), String>,
        gone: &[(String, String)],
    ) -> Result<(), StoreError> {
        let mut transaction = self.pool.begin().await?;
        for ((namespace, name), state) in changed {
            sqlx::query(
                "INSERT INTO cron_jobs (namespace, name, state) VALUES (?, ?, ?) \
                 ON CONFLICT (namespace, name) DO UPDATE SET state = excluded.state",
            )
            .bind(namespace)
            .bind(name)
            .bind(state)
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
