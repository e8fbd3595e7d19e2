//! The control plane's loop: follow a branch, load each new commit once, and reconcile the nodes
//! to the last commit that loaded without errors.
//!
//! A commit that fails to load, parse or validate changes nothing: the last good commit keeps
//! running and the status says why. A local repository is polled every 500 ms, so a new commit
//! is seen within a second. Everything the loop decides is written to the store first, so a
//! restarted server resumes where it stopped.

use crate::apply::controller::{Controller, ControllerConfig, ReconcileSummary};
use crate::server::agent_api::AgentApi;
use crate::store::Store;
use crate::sync::{Loaded, Loader, SyncError};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// What the loop last did, for `berth up`'s progress and, later, the status API.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SyncStatus {
    /// The commit at the head of the branch.
    pub head: Option<String>,
    /// The commit being applied: the newest one that loaded without errors.
    pub applied: Option<String>,
    pub applied_message: String,
    /// Why the head commit is not applied, when it failed to load.
    pub failed: Option<String>,
    pub last_pass: Option<ReconcileSummary>,
    /// True once every workload of the applied commit is complete.
    pub synced: bool,
}

#[derive(Debug, Clone)]
pub struct ControlConfig {
    pub branch: String,
    pub poll_interval: Duration,
    pub reconcile_interval: Duration,
    pub controller: ControllerConfig,
}

impl Default for ControlConfig {
    fn default() -> Self {
        ControlConfig {
            branch: "HEAD".into(),
            poll_interval: Duration::from_millis(500),
            reconcile_interval: Duration::from_millis(500),
            controller: ControllerConfig::default(),
        }
    }
}

/// Runs the loop until `shutdown` is cancelled; publishes its status on `status`.
pub async fn run(
    loader: Loader,
    store: Arc<Store>,
    api: AgentApi,
    config: ControlConfig,
    status: watch::Sender<SyncStatus>,
    shutdown: CancellationToken,
) {
    let loader = Arc::new(Mutex::new(loader));
    let controller = Controller::new(store.clone(), api, config.controller.clone());
    let mut desired: Option<Arc<Loaded>> = None;
    let mut head: Option<String> = None;
    let mut interval = tokio::time::interval(config.poll_interval.min(config.reconcile_interval));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = interval.tick() => {}
        }
        let branch = config.branch.clone();
        let loader_for_load = loader.clone();
        let known_head = head.clone();
        // Git is blocking: resolve and load off the async threads.
        let loaded = tokio::task::spawn_blocking(move || -> Result<Option<Arc<Loaded>>, SyncError> {
            let mut loader = loader_for_load.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let sha = loader.resolve(&branch)?.sha;
            if known_head.as_deref() == Some(sha.as_str()) {
                return Ok(None);
            }
            loader.load(&sha).map(Some)
        })
        .await;
        match loaded {
            Ok(Ok(Some(commit))) => {
                head = Some(commit.commit.sha.clone());
                if let Err(error) = store.record_commit(&commit.commit, crate::server::now()).await {
                    tracing::warn!(%error, "Recording a commit failed.");
                }
                if commit.is_valid() {
                    tracing::info!(commit = %commit.commit.short(), message = %commit.commit.message, "Syncing a new commit.");
                    status.send_modify(|s| {
                        s.head = head.clone();
                        s.applied = Some(commit.commit.sha.clone());
                        s.applied_message = commit.commit.message.clone();
                        s.failed = None;
                        s.synced = false;
                    });
                    desired = Some(commit);
                } else {
                    let first =
                        commit.diagnostics.iter().find(|d| d.is_error()).map(ToString::to_string).unwrap_or_default();
                    let reason = format!(
                        "commit {} has {} errors, so nothing of it is applied; the first: {first}",
                        commit.commit.short(),
                        commit.error_count()
                    );
                    tracing::warn!(%reason, "A commit failed to load.");
                    status.send_modify(|s| {
                        s.head = head.clone();
                        s.failed = Some(reason);
                    });
                }
            }
            Ok(Ok(None)) => {}
            Ok(Err(error)) => {
                tracing::warn!(%error, "Reading the repository failed.");
                status.send_modify(|s| s.failed = Some(error.to_string()));
            }
            Err(error) => tracing::error!(%error, "The repository task panicked."),
        }

        let Some(commit) = &desired else { continue };
        match controller.reconcile(commit, crate::server::now()).await {
            Ok(summary) => {
                let synced = summary.complete() && summary.ready_nodes > 0;
                if synced && !status.borrow().synced {
                    if let Err(error) =
                        store.record_applied(&commit.commit, &commit.resources, crate::server::now()).await
                    {
                        tracing::warn!(%error, "Recording the applied commit failed.");
                    }
                    tracing::info!(commit = %commit.commit.short(), "Synced.");
                }
                status.send_modify(|s| {
                    s.synced = synced;
                    s.last_pass = Some(summary);
                });
            }
            Err(error) => tracing::warn!(%error, "Reconciling failed; trying again."),
        }
    }
}
