//! Volume claims: where each claim's volume is and what it asked for (`volume_claims`). The
//! controller binds a claim to the node of its first pod and keeps every later pod there;
//! a row goes only with `berth delete pvc`, or when its StatefulSet's retention policy says so.

use super::{Store, StoreError};
use serde::{Deserialize, Serialize};

/// A claim as the control plane keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClaimRecord {
    pub namespace: String,
    pub name: String,
    /// The node its volume is on; `None` until its first pod is placed.
    pub node: Option<String>,
    /// `requests.storage` as written; empty when it asks for no size.
    pub storage: String,
    /// kubectl's short forms, comma-separated (`RWO`).
    pub access_modes: String,
    pub storage_class: String,
    /// `PersistentVolumeClaim`, or `StatefulSet/<name>` for a claim of a template.
    pub owner: String,
    pub created_at: i64,
    /// Since when no declared object names it.
    pub orphaned_at: Option<i64>,
    /// Its StatefulSet's retention policy, as last declared: the claim goes with the
    /// StatefulSet (`whenDeleted: Delete`), or when its ordinal is scaled away (`whenScaled`).
    pub delete_when_deleted: bool,
    pub delete_when_scaled: bool,
}

type Row = (String, String, Option<String>, String, String, String, String, i64, Option<i64>, bool, bool);

impl Store {
    /// Every claim, by namespace and name.
    pub async fn volume_claims(&self) -> Result<Vec<ClaimRecord>, StoreError> {
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT namespace, name, node, storage, access_modes, storage_class, owner, created_at, orphaned_at, \
             delete_when_deleted, delete_when_scaled FROM volume_claims ORDER BY namespace, name",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(
                |(
                    namespace,
                    name,
                    node,
                    storage,
                    access_modes,
                    storage_class,
                    owner,
                    created_at,
                    orphaned_at,
                    delete_when_deleted,
                    delete_when_scaled,
                )| ClaimRecord {
                    namespace,
                    name,
                    node,
                    storage,
                    access_modes,
                    storage_class,
                    owner,
                    created_at,
                    orphaned_at,
                    delete_when_deleted,
                    delete_when_scaled,
                },
            )
            .collect())
    }

    /// Writes these claims (new or changed), in one transaction.
    pub async fn write_volume_claims(&self, claims: &[ClaimRecord]) -> Result<(), StoreError> {
        let mut transaction = self.pool.begin().await?;
        for claim in claims {
            sqlx::query(
                "INSERT INTO volume_claims \
                 (namespace, name, node, storage, access_modes, storage_class, owner, created_at, orphaned_at, \
                 delete_when_deleted, delete_when_scaled) \
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) \
                 ON CONFLICT (namespace, name) DO UPDATE SET node = excluded.node, storage = excluded.storage, \
                 access_modes = excluded.access_modes, storage_class = excluded.storage_class, \
                 owner = excluded.owner, orphaned_at = excluded.orphaned_at, \
                 delete_when_deleted = excluded.delete_when_deleted, delete_when_scaled = excluded.delete_when_scaled",
            )
            .bind(&claim.namespace)
            .bind(&claim.name)
            .bind(&claim.node)
            .bind(&claim.storage)
            .bind(&claim.access_modes)
            .bind(&claim.storage_class)
            .bind(&claim.owner)
            .bind(claim.created_at)
            .bind(claim.orphaned_at)
            .bind(claim.delete_when_deleted)
            .bind(claim.delete_when_scaled)
            .execute(&mut *transaction)
            .await?;
        }
        transaction.commit().await?;
        Ok(())
    }

    /// Forgets a claim whose volume was removed; true when there was one.
    pub async fn delete_volume_claim(&self, namespace: &str, name: &str) -> Result<bool, StoreError> {
        let result = sqlx::query("DELETE FROM volume_claims WHERE namespace = ? AND name = ?")
            .bind(namespace)
            .bind(name)
            .execute(&self.pool)
            .await?;
        Ok(result.rows_affected() > 0)
    }
}
