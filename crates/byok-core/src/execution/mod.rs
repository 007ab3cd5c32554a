//! Execution servers: where users' agents run code. Typed, validated connection configs per
//! server type; secret fields are sealed (encrypted) before storage and masked in every
//! response.
//!
//! - [`server`]: the entity ([`ExecutionServer`], [`ServerType`]) and its name and path rules;
//! - [`config`]: what a client may send as a connection config, per type;
//! - [`seal`]: sealing, masking, opening and re-sealing a config's secrets;
//! - [`host_key`]: the pinned SSH host key;
//! - [`request`]: a command to run ([`ExecRequest`]), its [`ExecResult`], a [`ServerTest`].
//!
//! The backend port is [`crate::ports::ExecutionBackend`] and the error [`ExecError`] is in
//! [`crate::error`]; both are re-exported here.

pub mod config;
pub mod host_key;
pub mod request;
pub mod seal;
pub mod server;

pub use crate::error::ExecError;
pub use crate::ports::ExecutionBackend;
pub use config::MASK;
pub use host_key::{HOST_KEY_FIELD, pin_host_key, pinned_host_key};
pub use request::{
    CommandSpec, DEFAULT_EXEC_TIMEOUT_SECS, DEFAULT_MAX_OUTPUT, ExecRequest, ExecResult,
    MAX_EXEC_TIMEOUT_SECS, MAX_STDIN, ServerTest,
};
pub use seal::{
    OpenConfig, config_is_current, mask_config, open_config, reseal_config, reveal_config,
    seal_config,
};
pub use server::{ExecutionServer, ServerType, validate_name, validate_workspace};
