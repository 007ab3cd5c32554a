//! Unit-test helpers shared by the core's modules.

use secrecy::{ExposeSecret, SecretString};

use crate::error::CryptoError;
use crate::ports::SecretCipher;

/// A reversible toy cipher (`enc:` + the reversed text), for unit tests only.
pub(crate) struct ToyCipher;

impl SecretCipher for ToyCipher {
    fn encrypt(&self, p: &SecretString) -> Result<String, CryptoError> {
        Ok(format!(
            "enc:{}",
            p.expose_secret().chars().rev().collect::<String>()
        ))
    }
    fn decrypt(&self, t: &str) -> Result<SecretString, CryptoError> {
        t.strip_prefix("enc:")
            .map(|s| SecretString::from(s.chars().rev().collect::<String>()))
            .ok_or(CryptoError::Malformed)
    }
    fn is_current(&self, _: &str) -> bool {
        true
    }
}
