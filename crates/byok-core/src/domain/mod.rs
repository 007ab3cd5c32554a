//! Domain types: users, tiers, providers, keys, gateway tokens, settings and usage.
//!
//! One file per concern; every type is re-exported here (and from the crate root), so
//! `byok_core::domain::ApiKey` and `byok_core::ApiKey` name the same type.

mod keys;
mod providers;
mod settings;
mod tokens;
mod usage;
mod users;

pub use crate::tier::Tier;
pub use keys::*;
pub use providers::*;
pub use settings::*;
pub use tokens::*;
pub use usage::*;
pub use users::*;
