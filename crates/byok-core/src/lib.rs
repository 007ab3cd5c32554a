#![doc = include_str!("../README.md")]
#![warn(unreachable_pub)]

pub mod client_addr;
pub mod domain;
pub mod error;
pub mod execution;
pub mod json;
pub mod origin;
pub mod policy;
pub mod ports;
pub mod routing;
pub mod services;
#[cfg(any(test, feature = "test-util"))]
pub mod testing;
mod tier;

pub use domain::*;
pub use error::{CoreError, CryptoError, StoreError};

// The crates the ports' signatures use, so an adapter or a test double needs no version of
// its own that could drift from core's.
pub use async_trait;
pub use chrono;
pub use secrecy;
pub use serde_json;
pub use uuid;
