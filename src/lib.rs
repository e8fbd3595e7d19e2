//! berth: a declarative GitOps reconciler for containers on plain Docker hosts.
//!
//! The library holds every part; `src/main.rs` is the command line that wires them together.
//! See ARCHITECTURE.md for the map.

pub mod apply;
pub mod client;
pub mod diag;
pub mod manifest;
pub mod nodes;
pub mod plan;
pub mod server;
pub mod store;
pub mod sync;
