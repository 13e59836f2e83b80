//! image-reflector: Flux's ImageRepository and ImagePolicy, reimplemented in Rust.
//!
//! The pure parts (`reference`, `policy`, the admission rules in `admission::validate`)
//! know nothing of HTTP or Kubernetes clients; the rest wires them to the API server,
//! registries and HTTPS.

#![forbid(unsafe_code)]

pub mod admission;
pub mod api;
pub mod cli;
pub mod controller;
#[doc(hidden)]
pub mod fuzzing;
pub mod metrics;
pub mod policy;
pub mod process_metrics;
pub mod receiver;
pub mod reference;
pub mod scanner;
pub mod server;
pub mod store;
pub mod telemetry;
