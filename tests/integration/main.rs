//! One integration-test binary: repositories on both databases, crypto interoperability,
//! and end-to-end tests against the real binary.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod api;
mod brigade;
mod console;
mod console_sessions;
mod crypto;
mod deploy;
mod docker;
mod gateway;
mod keycloak;
mod kubernetes;
mod legacy_frontend;
mod memory;
mod outage;
mod pg_tls;
mod repos;
mod scale;
mod sdk;
mod servers;
mod ssh;
