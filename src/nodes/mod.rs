//! nodes: the node agent and the control plane's view of nodes.
//!
//! It arrives with the node-agent work: agents join with a token, long-poll their assignment,
//! run pods on Docker through bollard and report what really runs. It must never touch a
//! container that berth did not create.
