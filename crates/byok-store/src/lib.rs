#![doc = include_str!("../README.md")]

mod backend;
mod database;
mod error;
mod legacy_sessions;
mod migrate;
mod notify;
mod options;
mod pg_tls;
mod pool;
mod rate;
mod repos;
mod schema;
mod sqlite;
mod types;

pub use backend::{Backend, parse_url};
pub use database::{Database, PoolStatus};
pub use legacy_sessions::RedisLegacySessions;
pub use notify::listen_invalidations;
pub use options::DbOptions;
pub use rate::RedisRateLimiter;
pub use types::{DbJson, DbUuid};
