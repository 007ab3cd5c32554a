//! In-memory fakes of the ports, one per port, for unit tests here and in other crates
//! (the `test-util` feature): a toy cipher, a key store with its rotation side, a key prober
//! that accepts every key, a settings store, a user store with its gateway tokens, an
//! execution-server store, the legacy front end's session store, an identity provider's
//! directory of accounts and its accounts by subject, and service-wide figures over records
//! held in memory.
//!
//! They keep the ports' contracts where a test can observe them (upsert replaces, record_test
//! and replace_ciphertext compare first, names and emails are unique, a user has one default
//! server, pages are ordered by id) and nothing more: no persistence, no concurrency
//! guarantees beyond a mutex.

mod accounts;
mod fail;
mod keys;
mod legacy_sessions;
mod servers;
mod settings;
mod stats;
mod users;

pub use accounts::MemAccounts;
pub use keys::{AlwaysValid, MemKeys, ToyCipher};
pub use legacy_sessions::{MemDirectory, MemLegacySessions};
pub use servers::MemServers;
pub use settings::MemSettings;
pub use stats::MemStats;
pub use users::MemUsers;
