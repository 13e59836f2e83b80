//! Test harness shared by the integration test binaries. Each binary uses only part of it.
#![allow(dead_code)]

pub mod certs;
pub mod cluster;
pub mod fake_registry;
pub mod proxy;
pub mod registry;
pub mod token_server;
pub mod webhook;
