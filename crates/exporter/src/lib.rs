//! svdm-exporter: serves one volume (a directory tree or a block device) read-only over HTTPS, checking the
//! caller's Kubernetes identity on every request and reporting activity through a Lease.
//!
//! Pure logic (paths, ranges, conditional requests, listings, auth decisions, caches) lives in small modules
//! with unit tests; I/O stays at the edges (`volume`, `block`, `body`, `tarball`, `server`).

pub mod activity;
pub mod auth;
pub mod block;
pub mod body;
pub mod cache;
pub mod conditional;
pub mod config;
pub mod conn;
pub mod headers;
pub mod listing;
pub mod logsafe;
pub mod metrics;
pub mod offload;
pub mod paths;
pub mod range;
pub mod routes;
pub mod server;
pub mod sys;
pub mod tarball;
pub mod throttle;
pub mod tls;
pub mod volume;
