//! nodes: the node agent and the control plane's view of nodes.
//!
//! The agent runs the pods assigned to its node on a container engine and reports what really
//! runs. [`runtime`] is the engine boundary, [`docker`] its Docker implementation, [`sandbox`]
//! the pod sandbox image the agent imports from bytes it carries. The agent never touches a
//! container that berth did not create.

pub mod agent;
pub mod docker;
pub mod files;
pub mod hooks;
pub mod metrics;
pub mod netns;
pub mod pods;
pub mod protocol;
pub mod proxy;
pub mod redact;
pub mod runtime;
pub mod sandbox;
pub mod security;
pub mod session;
pub mod tar;
pub mod usage;
