//! Nodes, their assignments and their reports, in the store.

use super::{Store, StoreError};
use crate::nodes::protocol::{Heartbeat, JoinRequest, PodAssignment, PodStatus, Resources};
use sqlx::FromRow;
use std::collections::BTreeMap;

/// A node as the control plane knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeRecord {
    pub name: String,
    pub credential_digest: String,
    pub address: String,
    pub labels: BTreeMap<String, String>,
    pub capacity: Resources,
    pub allocatable: Resources,
    pub joined_at: i64,
    pub last_heartbeat: i64,
    /// The fingerprints of the node's client certificates that open its API: the current one
    /// and the one it replaced.
    pub certificates: Vec<String>,
    /// When the current certificate expires (Unix seconds).
    pub certificate_expires: Option<i64>,
}

#[derive(FromRow)]
struct NodeRow {
    name: String,
    credential_digest: String,
    address: String,
    labels: String,
    capacity: String,
    allocatable: String,
    joined_at: i64,
    last_heartbeat: i64,
    certificate: Option<String>,
    previous_certificate: Option<String>,
    certificate_expires: Option<i64>,
}

fn corrupt(what: &str, name: &str, source: serde_json::Error) -> StoreError {
    StoreError::Corrupt { kind: what.to_owned(), namespace: String::new(), name: name.to_owned(), source }
}

impl NodeRow {
    fn into_record(self) -> Result<NodeRecord, StoreError> {
        let name = self.name.clone();
        Ok(NodeRecord {
            labels: serde_json::from_str(&self.labels).map_err(|e| corrupt("Node", &name, e))?,
            capacity: serde_json::from_str(&self.capacity).map_err(|e| corrupt("Node", &name, e))?,
            allocatable: serde_json::from_str(&self.allocatable).map_err(|e| corrupt("Node", &name, e))?,
            name: self.name,
            credential_digest: self.credential_digest,
            address: self.address,
            joined_at: self.joined_at,
            last_heartbeat: self.last_heartbeat,
            certificates: self.certificate.into_iter().chain(self.previous_certificate).collect(),
            certificate_expires: self.certificate_expires,
        })
    }
}

fn json<T: serde::Serialize>(value: &T) -> String {
    // Protocol types are plain data with string keys; serializing them cannot fail.
    serde_json::to_string(value).unwrap_or_default()
}

impl Store {
    /// Adds a node with the digest of its new credential. Returns false, changing nothing, when a
    /// node of that name exists already.
    pub async fn add_node(&self, request: &JoinRequest, credential_digest: &str, now: i64) -> Result<bool, StoreError> {
        let result = sqlx::query(
            "INSERT INTO nodes (name, credential_digest, address, labels, capacity, allocatable, joined_at, last_heartbeat) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (name) DO NOTHING",
        )
        .bind(&request.node)
        .bind(credential_digest)
        .bind(&request.address)
        .bind(json(&request.labels))
        .bind(json(&request.capacity))
        .bind(json(&request.capacity))
        .bind(now)
        .bind(now)
        .execute(&self.pool)
        .await?;
        if result.rows_affected() == 1 {
            sqlx::query(
                "INSERT INTO assignments (node, generation, pods) VALUES (?, 0, '[]') ON CONFLICT (node) DO NOTHING",
            )
            .bind(&request.node)
            .execute(&self.pool)
            .await?;
        }
        Ok(result.rows_affected() == 1)
    }

    /// Pins `fingerprint` as the node's client certificate; the one it replaces stays valid
    /// until it expires, for connections opened before. False when there is no such node.
    pub async fn set_node_certificate(&self, name: &str, fingerprint: &str, expires: i64) -> Result<bool, StoreError> {
        let result = sqlx::query(
            "UPDATE nodes SET previous_certificate = certificate, certificate = ?, certificate_expires = ? WHERE name = ?",
        )
        .bind(fingerprint)
        .bind(expires)
        .bind(name)
        .execute(&self.pool)
        .await?;
        Ok(result.rows_affected() == 1)
    }

    /// Removes a node: its credential and certificates stop opening anything, and what it was
    /// assigned and reported is forgotten, so its pods are placed elsewhere. False when there
    /// is no such node.
    pub async fn remove_node(&self, name: &str) -> Result<bool, StoreError> {
        let mut transaction = self.pool.begin().await?;
        sqlx::query("DELETE FROM pod_reports WHERE node = ?").bind(name).execute(&mut *transaction).await?;
        sqlx::query("DELETE FROM assignments WHERE node = ?").bind(name).execute(&mut *transaction).await?;
        let result = sqlx::query("DELETE FROM nodes WHERE name = ?").bind(name).execute(&mut *transaction).await?;
        transaction.commit().await?;
        Ok(result.rows_affected() == 1)
    }

    pub async fn node(&self, name: &str) -> Result<Option<NodeRecord>, StoreError> {
        let row = sqlx::query_as::<_, NodeRow>("SELECT * FROM nodes WHERE name = ?")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        row.map(NodeRow::into_record).transpose()
    }

    pub async fn nodes(&self) -> Result<Vec<NodeRecord>, StoreError> {
        let rows = sqlx::query_as::<_, NodeRow>("SELECT * FROM nodes ORDER BY name").fetch_all(&self.pool).await?;
        rows.into_iter().map(NodeRow::into_record).collect()
    }

    pub async fn record_heartbeat(&self, name: &str, heartbeat: &Heartbeat, now: i64) -> Result<(), StoreError> {
        sqlx::query("UPDATE nodes SET address = ?, labels = ?, capacity = ?, allocatable = ?, last_heartbeat = ? WHERE name = ?")
            .bind(&heartbeat.address)
            .bind(json(&heartbeat.labels))
            .bind(json(&heartbeat.capacity))
            .bind(json(&heartbeat.allocatable))
            .bind(now)
            .bind(name)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Replaces a node's assignment; returns the new generation.
    pub async fn set_assignment(&self, node: &str, pods: &[PodAssignment]) -> Result<u64, StoreError> {
        let generation: i64 = sqlx::query_scalar(
            "INSERT INTO assignments (node, generation, pods) VALUES (?, 1, ?) \
             ON CONFLICT (node) DO UPDATE SET generation = assignments.generation + 1, pods = excluded.pods \
             RETURNING generation",
        )
        .bind(node)
        .bind(self.sealer.seal(&json(&pods))?)
        .fetch_one(&self.pool)
        .await?;
        Ok(u64::try_from(generation).unwrap_or(0))
    }

    /// Replaces the assignments of several nodes in one transaction; returns each node's new
    /// generation with its pods.
    pub async fn set_assignments(
        &self,
        changes: Vec<(String, Vec<PodAssignment>)>,
    ) -> Result<Vec<(String, u64, Vec<PodAssignment>)>, StoreError> {
        let mut transaction = self.pool.begin().await?;
        let mut written = Vec::with_capacity(changes.len());
        for (node, pods) in changes {
            let generation: i64 = sqlx::query_scalar(
                "INSERT INTO assignments (node, generation, pods) VALUES (?, 1, ?) \
                 ON CONFLICT (node) DO UPDATE SET generation = assignments.generation + 1, pods = excluded.pods \
                 RETURNING generation",
            )
            .bind(&node)
            .bind(self.sealer.seal(&json(&pods))?)
            .fetch_one(&mut *transaction)
            .await?;
            written.push((node, u64::try_from(generation).unwrap_or(0), pods));
        }
        transaction.commit().await?;
        Ok(written)
    }

    pub async fn assignment(&self, node: &str) -> Result<(u64, Vec<PodAssignment>), StoreError> {
        let row: Option<(i64, String)> = sqlx::query_as("SELECT generation, pods FROM assignments WHERE node = ?")
            .bind(node)
            .fetch_optional(&self.pool)
            .await?;
        match row {
            None => Ok((0, Vec::new())),
            Some((generation, pods)) => {
                let pods = self.sealer.unseal(&pods)?;
                let pods = serde_json::from_str(&pods).map_err(|e| corrupt("Assignment", node, e))?;
                Ok((u64::try_from(generation).unwrap_or(0), pods))
            }
        }
    }

    /// The assignment generation of every node, to see which changed since they were read.
    pub async fn assignment_generations(&self) -> Result<Vec<(String, u64)>, StoreError> {
        let rows: Vec<(String, i64)> =
            sqlx::query_as("SELECT node, generation FROM assignments").fetch_all(&self.pool).await?;
        Ok(rows.into_iter().map(|(node, generation)| (node, u64::try_from(generation).unwrap_or(0))).collect())
    }

    /// What every node last reported, in one read.
    pub async fn all_reports(&self) -> Result<Vec<(String, PodStatus)>, StoreError> {
        let rows: Vec<(String, String)> =
            sqlx::query_as("SELECT node, status FROM pod_reports").fetch_all(&self.pool).await?;
        rows.into_iter()
            .map(|(node, status)| {
                let status = serde_json::from_str(&status).map_err(|e| corrupt("PodStatus", &node, e))?;
                Ok((node, status))
            })
            .collect()
    }

    /// Replaces what a node last reported.
    pub async fn record_report(
        &self,
        node: &str,
        generation: u64,
        pods: &[PodStatus],
        now: i64,
    ) -> Result<(), StoreError> {
        let mut transaction = self.pool.begin().await?;
        sqlx::query("DELETE FROM pod_reports WHERE node = ?").bind(node).execute(&mut *transaction).await?;
        for pod in pods {
            sqlx::query("INSERT INTO pod_reports (node, namespace, pod, status, generation, reported_at) VALUES (?, ?, ?, ?, ?, ?)")
                .bind(node)
                .bind(&pod.namespace)
                .bind(&pod.pod)
                .bind(json(pod))
                .bind(i64::try_from(generation).unwrap_or(i64::MAX))
                .bind(now)
                .execute(&mut *transaction)
                .await?;
        }
        transaction.commit().await?;
        Ok(())
    }

    pub async fn reports(&self, node: &str) -> Result<Vec<PodStatus>, StoreError> {
        let rows: Vec<(String,)> =
            sqlx::query_as("SELECT status FROM pod_reports WHERE node = ? ORDER BY namespace, pod")
                .bind(node)
                .fetch_all(&self.pool)
                .await?;
        rows.into_iter()
            .map(|(status,)| serde_json::from_str(&status).map_err(|e| corrupt("PodStatus", node, e)))
            .collect()
    }
}
