//! The BYOK gateway service: configuration, authentication, HTTP routes, OpenAPI, CLI.
//! Handlers stay thin: they parse and authenticate, call a `byok-core` service and map the
//! result (errors through `error::ApiError`).

pub mod app;
pub mod auth;
pub mod cli;
pub mod commands;
pub mod config;
pub mod db_health;
pub mod error;
pub mod extract;
pub mod gateway;
pub mod metrics;
pub mod middleware;
pub mod openapi;
pub mod routes;
pub mod state;
pub mod telemetry;
pub mod trace;
pub mod usage;
