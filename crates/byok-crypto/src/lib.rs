#![doc = include_str!("../README.md")]

use base64::Engine;
use byok_core::CryptoError;
use byok_core::ports::SecretCipher;
use fernet::Fernet;
use secrecy::{ExposeSecret, SecretString};

/// Smallest possible token: version (1) + timestamp (8) + IV (16) + one block (16) + HMAC (32).
const MIN_TOKEN_BYTES: usize = 73;

/// A Fernet key ring: the first key encrypts, all keys decrypt.
pub struct FernetKeyRing {
    keys: Vec<Fernet>,
}

impl std::fmt::Debug for FernetKeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FernetKeyRing")
            .field("keys", &self.keys.len())
            .finish_non_exhaustive()
    }
}

impl FernetKeyRing {
    /// Parses `ENCRYPTION_KEY`: one or more comma-separated Fernet keys.
    /// Errors name the position of a bad entry, never its value.
    pub fn parse(value: &SecretString) -> Result<Self, CryptoError> {
        let raw = value.expose_secret();
        let mut keys = Vec::new();
        for (i, part) in raw.split(',').enumerate() {
            let part = part.trim();
            if part.is_empty() {
                return Err(CryptoError::InvalidKeyRing(format!(
                    "entry {} is empty (expected comma-separated Fernet keys)",
                    i + 1
                )));
            }
            let key = Fernet::new(part).ok_or_else(|| {
                CryptoError::InvalidKeyRing(format!(
                    "entry {} is not a Fernet key (expected URL-safe base64 of 32 bytes, \
                     e.g. from `byok-gateway generate-key`)",
                    i + 1
                ))
            })?;
            keys.push(key);
        }
        Ok(Self { keys })
    }

    /// A fresh random key, URL-safe base64 (what `ENCRYPTION_KEY` holds).
    pub fn generate_key() -> SecretString {
        SecretString::from(Fernet::generate_key())
    }

    /// A ring with one random key, for tests.
    pub fn for_testing() -> Self {
        Self {
            keys: Fernet::new(&Fernet::generate_key()).into_iter().collect(),
        }
    }

    /// Number of keys in the ring.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    fn primary(&self) -> Result<&Fernet, CryptoError> {
        self.keys
            .first()
            .ok_or_else(|| CryptoError::InvalidKeyRing("no key configured".into()))
    }
}

/// Structural check of a token, so that "not a token" and "no key fits" are told apart.
fn well_formed(token: &str) -> bool {
    let Ok(bytes) =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(token.trim_end_matches('='))
    else {
        return false;
    };
    bytes.len() >= MIN_TOKEN_BYTES && bytes[0] == 0x80 && (bytes.len() - 57) % 16 == 0
}

/// Decrypts without judging the token's timestamp, as Python's `Fernet.decrypt` does without a
/// TTL: a token written on a host whose clock ran ahead is still readable. (`Fernet::decrypt`
/// refuses timestamps more than 60 s in the future.)
fn decrypt_any_time(key: &Fernet, token: &str) -> Result<Vec<u8>, fernet::DecryptionError> {
    key.decrypt_at_time(token, None, u64::MAX - 120)
}

impl SecretCipher for FernetKeyRing {
    fn encrypt(&self, plaintext: &SecretString) -> Result<String, CryptoError> {
        Ok(self
            .primary()?
            .encrypt(plaintext.expose_secret().as_bytes()))
    }

    fn decrypt(&self, token: &str) -> Result<SecretString, CryptoError> {
        if !well_formed(token) {
            return Err(CryptoError::Malformed);
        }
        for key in &self.keys {
            if let Ok(plain) = decrypt_any_time(key, token) {
                return String::from_utf8(plain)
                    .map(SecretString::from)
                    .map_err(|_| CryptoError::Malformed);
            }
        }
        Err(CryptoError::UnknownKey)
    }

    fn is_current(&self, token: &str) -> bool {
        self.keys
            .first()
            .is_some_and(|k| decrypt_any_time(k, token).is_ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(keys: &[&SecretString]) -> FernetKeyRing {
        let joined = keys
            .iter()
            .map(|k| k.expose_secret().to_string())
            .collect::<Vec<_>>()
            .join(",");
        FernetKeyRing::parse(&SecretString::from(joined)).unwrap()
    }

    #[test]
    fn round_trip_and_rotation_semantics() {
        let old = FernetKeyRing::generate_key();
        let new = FernetKeyRing::generate_key();
        let before = ring(&[&old]);
        let token = before.encrypt(&SecretString::from("sk-secret")).unwrap();
        let during = ring(&[&new, &old]);
        assert_eq!(during.decrypt(&token).unwrap().expose_secret(), "sk-secret");
        assert!(!during.is_current(&token));
        let rotated = during.encrypt(&SecretString::from("sk-secret")).unwrap();
        assert!(during.is_current(&rotated));
        let after = ring(&[&new]);
        assert_eq!(after.decrypt(&token).unwrap_err(), CryptoError::UnknownKey);
        assert_eq!(
            after.decrypt(&rotated).unwrap().expose_secret(),
            "sk-secret"
        );
    }

    #[test]
    fn malformed_tokens_and_keys() {
        let r = FernetKeyRing::for_testing();
        assert_eq!(
            r.decrypt("not-a-token").unwrap_err(),
            CryptoError::Malformed
        );
        assert_eq!(r.decrypt("").unwrap_err(), CryptoError::Malformed);
        for bad in ["", "short", "a,b", ",", "abc!@#"] {
            let err = FernetKeyRing::parse(&SecretString::from(bad)).unwrap_err();
            assert!(matches!(err, CryptoError::InvalidKeyRing(_)));
        }
        let secret_looking = "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlYw";
        let msg = FernetKeyRing::parse(&SecretString::from(secret_looking))
            .unwrap_err()
            .to_string();
        assert!(!msg.contains(secret_looking));
    }

    #[test]
    fn debug_shows_no_key_material() {
        let k = FernetKeyRing::generate_key();
        let r = ring(&[&k]);
        assert!(!format!("{r:?}").contains(k.expose_secret()));
    }
}
