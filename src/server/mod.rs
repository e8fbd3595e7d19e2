//! server: the control plane's HTTP side (axum).
//!
//! Today it serves the agent API ([`agent_api`]); the user API, webhooks, metrics and the web UI
//! join it on the same port. Handlers return [`AppError`], which answers with a status and a
//! JSON body naming what went wrong; no handler answers with a secret value.

pub mod access;
pub mod actions;
pub mod agent_api;
pub mod api;
pub mod control;
pub mod decide;
pub mod events;
pub mod listen;
pub mod logs;
pub mod metrics;
pub mod status;
pub mod ui;
pub mod usage;
pub mod verdicts;

use crate::nodes::protocol::ErrorBody;
use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

/// An error answer: a status and a message for the caller.
#[derive(Debug)]
pub struct AppError {
    pub status: StatusCode,
    pub message: String,
}

impl AppError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        AppError { status, message: message.into() }
    }
}

impl std::fmt::Display for AppError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl From<crate::store::StoreError> for AppError {
    fn from(error: crate::store::StoreError) -> Self {
        tracing::error!(%error, "Store request failed.");
        AppError::new(StatusCode::INTERNAL_SERVER_ERROR, "the control plane's store failed; see its log")
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        (self.status, Json(ErrorBody { error: self.message })).into_response()
    }
}

/// Seconds since the Unix epoch: the clock of the edges.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(0))
}
