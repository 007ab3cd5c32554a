//! Services: the business rules, written against the ports.

mod rotation;
mod tokens;
mod vault;

pub use rotation::{RotationReport, rotate_all};
pub use tokens::{IssuedToken, TokenAuthenticator, TokenService, hash_token};
pub use vault::{AddKey, KeySummary, KeyVault, KeyVaultStats, ProviderSummary, UserCredential};
