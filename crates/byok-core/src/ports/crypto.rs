//! The encryption port: secrets at rest.

use secrecy::SecretString;

use crate::error::CryptoError;

/// Symmetric encryption of secrets at rest (implemented by `byok-crypto` with Fernet).
pub trait SecretCipher: Send + Sync + 'static {
    /// Encrypts `plaintext` under the current (primary) key. The result is ASCII.
    fn encrypt(&self, plaintext: &SecretString) -> Result<String, CryptoError>;
    /// Decrypts a token written under any key of the ring.
    /// MUST return [`CryptoError::UnknownKey`] when no key authenticates a well-formed token and
    /// [`CryptoError::Malformed`] when the input is not a token; never a wrong plaintext.
    fn decrypt(&self, token: &str) -> Result<SecretString, CryptoError>;
    /// Whether `token` was written by the primary key (rotation skips those).
    fn is_current(&self, token: &str) -> bool;
}
