//! Test harness shared by the integration test binaries. Each binary uses only part of it.
#![allow(dead_code)]

pub mod certs;
pub mod webhook;
