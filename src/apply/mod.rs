//! apply: the controller that converges nodes to a plan, one step per wake-up.
//!
//! Level-triggered: it re-reads desired and observed state on every trigger and advances each
//! rollout by one step stored in SQLite. It must never act on a commit that failed to load, and
//! never delete what berth did not create. [`pods`] turns workloads into the pod assignments
//! agents run; the loop that schedules and rolls them out arrives with the control plane.

pub mod controller;
pub mod cron;
pub mod job;
pub mod pods;
pub mod routes;
pub mod stateful;
