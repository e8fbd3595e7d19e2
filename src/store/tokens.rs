//! Named API tokens (`tokens`) and the audit log (`audit`). A token is kept as its digest only.

use super::{Store, StoreError};
use serde::{Deserialize, Serialize};

/// A named token as kept: never the token itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenRecord {
    pub name: String,
    #[serde(skip)]
    pub digest: [u8; 32],
    pub role: String,
    /// Empty: every namespace.
    pub namespaces: Vec<String>,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub revoked_at: Option<i64>,
}

/// One line of the audit log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditRecord {
    pub at: i64,
    /// The token's name (`admin` for the server's own `api-token`).
    pub who: String,
    /// `approve`, `rollback`, `exec`, `token-create`...
    pub action: String,
    /// What it was done to: `Deployment/shop/web`, `commit 1a2b3c4`, `token ci`.
    pub object: String,
    /// The caller's address.
    pub address: String,
    /// `ok`, or why it did not happen.
    pub outcome: String,
}

/// The audit log keeps this many lines; the oldest go first.
pub const AUDIT_LIMIT: i64 = 100_000;

type TokenRow = (String, Vec<u8>, String, String, i64, Option<i64>, Option<i64>);

fn token_of(row: TokenRow) -> Result<TokenRecord, StoreError> {
    let (name, digest, role, namespaces, created_at, expires_at, revoked_at) = row;
    let corrupt = |reason: String| StoreError::Corrupt {
        kind: "Token".into(),
        namespace: String::new(),
        name: name.clone(),
        source: serde_json::Error::io(std::io::Error::other(reason)),
    };
    let digest = <[u8; 32]>::try_from(digest.as_slice()).map_err(|_| corrupt("its digest is not 32 bytes".into()))?;
    let namespaces = serde_json::from_str(&namespaces).map_err(|e| corrupt(e.to_string()))?;
    Ok(TokenRecord { name, digest, role, namespaces, created_at, expires_at, revoked_at })
}

impl Store {
    /// Adds a token; false when the name is taken (by a live or a revoked token).
    pub async fn add_token(&self, token: &TokenRecord) -> Result<bool, StoreError> {
        let namespaces = serde_json::to_string(&token.namespaces).unwrap_or_else(|_| "[]".into());
        let done = sqlx::query(
            "INSERT INTO tokens (name, digest, role, namespaces, created_at, expires_at, revoked_at) \
             VALUES (?, ?, ?, ?, ?, ?, NULL) ON CONFLICT DO NOTHING",
        )
        .bind(&token.name)
        .bind(token.digest.as_slice())
        .bind(&token.role)
        .bind(namespaces)
        .bind(token.created_at)
        .bind(token.expires_at)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Every token, revoked ones too, by name.
    pub async fn tokens(&self) -> Result<Vec<TokenRecord>, StoreError> {
        let rows: Vec<TokenRow> = sqlx::query_as(
            "SELECT name, digest, role, namespaces, created_at, expires_at, revoked_at FROM tokens ORDER BY name",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(token_of).collect()
    }

    /// Revokes the live token `name`; false when there is none.
    pub async fn revoke_token(&self, name: &str, now: i64) -> Result<bool, StoreError> {
        let done = sqlx::query("UPDATE tokens SET revoked_at = ? WHERE name = ? AND revoked_at IS NULL")
            .bind(now)
            .bind(name)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Appends to the audit log, dropping the oldest lines past [`AUDIT_LIMIT`].
    pub async fn audit(&self, record: &AuditRecord) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        let id = sqlx::query("INSERT INTO audit (at, who, action, object, address, outcome) VALUES (?, ?, ?, ?, ?, ?)")
            .bind(record.at)
            .bind(&record.who)
            .bind(&record.action)
            .bind(&record.object)
            .bind(&record.address)
            .bind(&record.outcome)
            .execute(&mut *tx)
            .await?
            .last_insert_rowid();
        sqlx::query("DELETE FROM audit WHERE id <= ?").bind(id - AUDIT_LIMIT).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(())
    }

    /// The audit log since `since`, oldest first.
    pub async fn audit_log(&self, since: i64) -> Result<Vec<AuditRecord>, StoreError> {
        let rows: Vec<(i64, String, String, String, String, String)> =
            sqlx::query_as("SELECT at, who, action, object, address, outcome FROM audit WHERE at >= ? ORDER BY id")
                .bind(since)
                .fetch_all(&self.pool)
                .await?;
        Ok(rows
            .into_iter()
            .map(|(at, who, action, object, address, outcome)| AuditRecord {
                at,
                who,
                action,
                object,
                address,
                outcome,
            })
            .collect())
    }
}
