//! Lifecycle hooks: `postStart`, run right after a container starts, and `preStop`, run before
//! it is asked to stop, within the pod's grace period, as the kubelet runs them.
//!
//! A container that is stopped may no longer be assigned (its pod was pruned or replaced), so
//! its preStop hook travels with it: resolved when the container is made (a named port turned
//! into a number) and kept in a label of the container ([`super::pods::labels::PRE_STOP`]).
//! A hook never outlives the grace period: the stop that follows it gets what is left, and at
//! least [`MINIMUM_STOP_GRACE`], as the kubelet gives.

use super::netns::Check;
use super::runtime::{ContainerInfo, ContainerRuntime, RuntimeError};
use crate::manifest::types::{Container, IntOrString, LifecycleHandler};
use serde::{Deserialize, Serialize};
use std::time::{Duration, Instant};

/// What the container is given to stop after its preStop hook used the grace period up.
pub const MINIMUM_STOP_GRACE: Duration = Duration::from_secs(2);

/// How long a postStart hook may take before it counts as failed.
pub const POST_START_LIMIT: Duration = Duration::from_secs(30);

/// A hook, resolved for one container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "kind")]
pub enum Hook {
    Exec { command: Vec<String> },
    Http { port: u16, path: String, headers: Vec<(String, String)> },
    Sleep { seconds: u64 },
}

impl Hook {
    /// Resolves `handler` of `container`; a named port must be one of the container's.
    pub fn of(handler: &LifecycleHandler, container: &Container) -> Result<Hook, String> {
        if let Some(exec) = &handler.exec {
            return Ok(Hook::Exec { command: exec.command.clone() });
        }
        if let Some(http) = &handler.http_get {
            return Ok(Hook::Http {
                port: container_port(container, &http.port)?,
                path: http.path.clone().unwrap_or_else(|| "/".into()),
                headers: http.http_headers.iter().map(|h| (h.name.clone(), h.value.clone())).collect(),
            });
        }
        match &handler.sleep {
            Some(sleep) => Ok(Hook::Sleep { seconds: u64::try_from(sleep.seconds).unwrap_or(0) }),
            None => Err("the hook has none of exec, httpGet or sleep".into()),
        }
    }

    /// Runs the hook in the container `container_id` (exec) or its pod's network namespace
    /// (httpGet, through `sandbox_id`), giving up after `limit`.
    pub async fn run<R: ContainerRuntime>(
        &self,
        runtime: &R,
        container_id: &str,
        sandbox_id: Option<&str>,
        limit: Duration,
    ) -> Result<(), String> {
        match self {
            Hook::Exec { command } => match runtime.exec(container_id, command, limit).await {
                Ok(0) => Ok(()),
                Ok(code) => Err(format!("command exited with code {code}")),
                Err(error) => Err(error.to_string()),
            },
            Hook::Http { port, path, headers } => {
                let Some(sandbox) = sandbox_id else { return Err("the pod's sandbox is gone".into()) };
                let check = Check::Http { port: *port, path: path.clone(), headers: headers.clone() };
                runtime.check_in_pod(sandbox, &check, limit).await
            }
            Hook::Sleep { seconds } => {
                tokio::time::sleep(Duration::from_secs(*seconds).min(limit)).await;
                Ok(())
            }
        }
    }
}

/// The number of `port`, a number or the name of one of the container's ports.
pub fn container_port(container: &Container, port: &IntOrString) -> Result<u16, String> {
    match port {
        IntOrString::Int(n) => u16::try_from(*n).map_err(|_| format!("port {n} is out of range")),
        IntOrString::String(name) => container
            .ports
            .iter()
            .find(|p| p.name.as_deref() == Some(name.as_str()))
            .and_then(|p| u16::try_from(p.container_port).ok())
            .ok_or_else(|| format!("no port named {name}")),
    }
}

/// Stops a running container as the kubelet does: its preStop hook first (from its label),
/// then SIGTERM with the rest of `grace`, then SIGKILL. A failing hook is logged; the stop
/// goes on.
pub async fn stop<R: ContainerRuntime>(
    runtime: &R,
    container: &ContainerInfo,
    sandbox_id: Option<&str>,
    grace: Duration,
) -> Result<(), RuntimeError> {
    let started = Instant::now();
    if let Some(text) = container.labels.get(super::pods::labels::PRE_STOP) {
        match serde_json::from_str::<Hook>(text) {
            Ok(hook) => {
                if let Err(error) = hook.run(runtime, &container.id, sandbox_id, grace).await {
                    tracing::warn!(container = %container.name, %error, "A preStop hook failed; the container is stopped all the same.");
                }
            }
            Err(error) => {
                tracing::warn!(container = %container.name, %error, "A preStop hook label is unreadable; it is not run.")
            }
        }
    }
    let rest = grace.saturating_sub(started.elapsed()).max(MINIMUM_STOP_GRACE.min(grace));
    runtime.stop(&container.id, rest).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::types::{ContainerPort, ExecAction, HttpGetAction, SleepAction};

    #[test]
    fn hooks_resolve_named_ports_and_travel_as_labels() {
        let mut container: Container = serde_json::from_str(r#"{"name": "web", "image": "app:1"}"#).unwrap();
        container.ports.push(ContainerPort {
            name: Some("http".into()),
            container_port: 8080,
            host_port: None,
            protocol: None,
        });
        let http = LifecycleHandler {
            http_get: Some(HttpGetAction {
                path: None,
                port: IntOrString::String("http".into()),
                scheme: None,
                http_headers: Vec::new(),
            }),
            ..Default::default()
        };
        let hook = Hook::of(&http, &container).unwrap();
        assert_eq!(hook, Hook::Http { port: 8080, path: "/".into(), headers: Vec::new() });
        let label = serde_json::to_string(&hook).unwrap();
        assert_eq!(serde_json::from_str::<Hook>(&label).unwrap(), hook);

        let missing = LifecycleHandler {
            http_get: Some(HttpGetAction { port: IntOrString::String("admin".into()), ..http.http_get.unwrap() }),
            ..Default::default()
        };
        assert_eq!(Hook::of(&missing, &container), Err("no port named admin".into()));
        let exec = LifecycleHandler {
            exec: Some(ExecAction { command: vec!["sh".into(), "-c".into(), "drain".into()] }),
            ..Default::default()
        };
        assert_eq!(
            Hook::of(&exec, &container).unwrap(),
            Hook::Exec { command: vec!["sh".into(), "-c".into(), "drain".into()] }
        );
        let sleep = LifecycleHandler { sleep: Some(SleepAction { seconds: 5 }), ..Default::default() };
        assert_eq!(Hook::of(&sleep, &container).unwrap(), Hook::Sleep { seconds: 5 });
    }
}
