//! Services: the business rules, written against the ports.

mod tokens;
mod vault;

pub use tokens::{IssuedToken, TokenAuthenticator, TokenService, hash_token};
pub use vault::{AddKey, KeySummary, KeyVault, KeyVaultStats, ProviderSummary, UserCredential};
