//! Re-encryption of every stored secret under the primary key (`byok-gateway rotate-keys`).

use crate::CoreError;
use crate::execution::{config_is_current, reseal_config};
use crate::ports::{KeyRotationRepository, SecretCipher, ServerRepository};

/// Counts reported by [`rotate_all`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RotationReport {
    /// Rows looked at.
    pub processed: u64,
    /// Rows re-encrypted under the primary key.
    pub rotated: u64,
    /// Rows already under the primary key.
    pub current: u64,
    /// Rows changed by someone else between read and write (they were written under the
    /// primary key by that writer, so nothing is lost).
    pub raced: u64,
    /// Rows that could not be decrypted with any key of the ring.
    pub failed: u64,
}

/// Walks every stored key in batches of `batch_size` (keyset pagination, so it is safe while
/// the service runs) and rewrites each ciphertext not written by the primary key. Each row
/// is replaced with a compare-and-swap, so a key the user changes meanwhile is never
/// overwritten with an older value. Undecryptable rows are counted and logged by id.
pub async fn rotate_all(
    keys: &dyn KeyRotationRepository,
    cipher: &dyn SecretCipher,
    batch_size: u32,
) -> Result<RotationReport, CoreError> {
    let mut report = RotationReport::default();
    let mut after = None;
    loop {
        let page = keys.ciphertext_page(after, batch_size.max(1)).await?;
        let Some(last) = page.last() else { break };
        after = Some(last.id);
        for row in page {
            report.processed += 1;
            if cipher.is_current(&row.ciphertext) {
                report.current += 1;
                continue;
            }
            let plain = match cipher.decrypt(&row.ciphertext) {
                Ok(p) => p,
                Err(e) => {
                    tracing::error!(row = %row.id, error = %e, "cannot rotate stored key");
                    report.failed += 1;
                    continue;
                }
            };
            let fresh = cipher.encrypt(&plain)?;
            if keys
                .replace_ciphertext(row.id, &row.ciphertext, &fresh)
                .await?
            {
                report.rotated += 1;
            } else {
                report.raced += 1;
            }
        }
    }
    Ok(report)
}

/// The same for execution servers: every sealed value of a connection config (SSH passwords
/// and keys, Kubernetes tokens, Docker TLS material and environment values) is re-encrypted
/// under the primary key; the config is replaced with a compare-and-swap on `updated_at`, so a
/// config the user changes meanwhile is never overwritten.
pub async fn rotate_servers(
    servers: &dyn ServerRepository,
    cipher: &dyn SecretCipher,
    batch_size: u32,
) -> Result<RotationReport, CoreError> {
    let mut report = RotationReport::default();
    let mut after = None;
    loop {
        let page = servers.server_page(after, batch_size.max(1)).await?;
        let Some(last) = page.last() else { break };
        after = Some(last.id);
        for server in page {
            report.processed += 1;
            if config_is_current(&server.connection_config, cipher) {
                report.current += 1;
                continue;
            }
            let fresh = match reseal_config(&server.connection_config, cipher) {
                Ok(c) => c,
                Err(e) => {
                    tracing::error!(server = %server.id, error = %e, "cannot rotate a server's secrets");
                    report.failed += 1;
                    continue;
                }
            };
            if servers
                .replace_sealed_config(server.id, server.updated_at, &fresh)
                .await?
            {
                report.rotated += 1;
            } else {
                report.raced += 1;
            }
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret;

    use super::*;
    use crate::domain::{KeyMetadata, KeyPreview, NewStoredKey, ProviderId, UserId};
    use crate::ports::KeyRepository;
    use crate::testing::{MemKeys, ToyCipher};

    #[tokio::test]
    async fn keys_under_a_retired_key_are_re_encrypted_once() {
        let keys = MemKeys::new();
        let user = UserId::new_random();
        for (provider, ciphertext) in [
            (ProviderId::Openai, ToyCipher::old_token("sk-old-one")),
            (ProviderId::Groq, ToyCipher::old_token("gsk-old-two")),
            (ProviderId::Anthropic, "enc:wen".to_string()),
            (ProviderId::Cohere, "garbage".to_string()),
        ] {
            keys.upsert(NewStoredKey {
                user_id: user,
                provider,
                ciphertext,
                key_preview: KeyPreview::of("x"),
                metadata: KeyMetadata::default(),
            })
            .await
            .unwrap();
        }
        let report = rotate_all(&keys, &ToyCipher, 2).await.unwrap();
        assert_eq!(report.processed, 4);
        assert_eq!(report.rotated, 2);
        assert_eq!(report.current, 1);
        assert_eq!(report.failed, 1);
        let openai = keys.get(user, ProviderId::Openai).await.unwrap().unwrap();
        assert!(ToyCipher.is_current(&openai.ciphertext));
        let plain = ToyCipher.decrypt(&openai.ciphertext).unwrap();
        assert_eq!(plain.expose_secret(), "sk-old-one");

        let again = rotate_all(&keys, &ToyCipher, 2).await.unwrap();
        assert_eq!((again.rotated, again.current, again.failed), (0, 3, 1));
    }
}
