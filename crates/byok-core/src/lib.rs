#![doc = include_str!("../README.md")]

pub mod domain;
pub mod error;
pub mod execution;
pub mod json;
pub mod policy;
pub mod ports;
pub mod routing;
pub mod services;
#[cfg(test)]
mod test_support;
mod tier;

pub use domain::*;
pub use error::{CoreError, CryptoError, StoreError};
