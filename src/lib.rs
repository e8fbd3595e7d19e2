//! berth: a declarative GitOps reconciler for containers on plain Docker hosts.
//!
//! The library holds every part; `src/main.rs` is the command line that wires them together.
//! See ARCHITECTURE.md for the map.

pub mod apply;
pub mod client;
pub mod diag;
pub mod health;
pub mod kustomize;
pub mod manifest;
pub mod nodes;
pub mod parallel;
pub mod plan;
pub mod private;
pub mod retry;
pub mod server;
pub mod store;
pub mod sync;
pub mod terminal;
pub mod tls;

/// Every JSON Schema berth publishes, `(file name, schema)`: one per kind, and `berth.yaml`'s.
pub fn schemas() -> Vec<(String, serde_json::Value)> {
    let mut out = manifest::schema::schemas();
    out.push(("berth-config.json".into(), manifest::schema::schema_of::<sync::config::Config>()));
    out
}

/// An error and every cause under it, joined with `: ` (HTTP clients keep the reason, a TLS
/// failure say, in a cause).
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let more = cause.to_string();
        if !text.contains(&more) {
            text = format!("{text}: {more}");
        }
        source = cause.source();
    }
    text
}

/// Locks a mutex and goes on after a panic in another holder: what berth guards with mutexes
/// (caches, the latest value of something) stays usable, and a pass rebuilds it anyway.
pub(crate) fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
