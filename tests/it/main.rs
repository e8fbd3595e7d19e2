//! berth's integration tests: one binary, one module per area. Real Git repositories in
//! temporary folders, real SQLite files, the real `berth` binary.

mod images;
mod support;

mod agent;
mod agent_process;
mod browser;
mod control;
mod controller;
mod decide;
mod docs;
mod fuzz;
mod git;
mod hostile;
mod kubernetes;
mod kustomize;
mod layers;
mod manifests;
mod plan;
mod routing;
mod scenarios;
mod server;
mod stateful;
mod store;
mod tls;
mod ui;
