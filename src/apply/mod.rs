//! apply: the controller that converges nodes to a plan, one step per wake-up.
//!
//! It arrives with the control-plane work: level-triggered, it re-reads desired and observed
//! state on every trigger and advances each rollout by one step stored in SQLite. It must never
//! act on a commit that failed to load, and never delete what berth did not create.
