//! Importing provider keys from the legacy service (its `user_provider_keys` table or its
//! Keycloak attributes) into the configured key store.
//!
//! Idempotent: a key the target already holds with the same plaintext is `unchanged`; a
//! different key already in the target is kept (`kept_existing`) unless `overwrite`. Keys are
//! decrypted with the key ring (the legacy `ENCRYPTION_KEY` must be in it) and written
//! re-encrypted under the primary key, with their preview computed once. Nothing here prints
//! or logs a key.

use secrecy::ExposeSecret;

use crate::domain::{KeyMetadata, KeyPreview, NewStoredKey, ProviderId, UserId};
use crate::error::CoreError;
use crate::ports::{KeyRepository, SecretCipher};
use crate::services::external_user_id;

/// One key as the legacy service stored it.
#[derive(Debug, Clone)]
pub struct LegacyKey {
    /// The legacy user id (a Keycloak subject).
    pub user_ref: String,
    /// The legacy provider id.
    pub provider: String,
    /// Fernet token.
    pub ciphertext: String,
    pub enabled: bool,
    pub metadata: KeyMetadata,
}

/// What an import did, by outcome.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ImportReport {
    pub read: u64,
    pub imported: u64,
    pub unchanged: u64,
    pub kept_existing: u64,
    /// Disabled in the legacy store (the legacy delete only disabled): not imported.
    pub disabled: u64,
    /// Unknown provider or user id.
    pub invalid: u64,
    /// No key of the ring decrypts it.
    pub undecryptable: u64,
}

/// Imports `rows` into `target`. `issuer` maps non-UUID legacy user ids the way the
/// authenticator does (see [`external_user_id`]).
pub async fn import_legacy_keys(
    rows: impl IntoIterator<Item = LegacyKey>,
    target: &dyn KeyRepository,
    cipher: &dyn SecretCipher,
    issuer: &str,
    overwrite: bool,
) -> Result<ImportReport, CoreError> {
    let mut report = ImportReport::default();
    for row in rows {
        report.read += 1;
        if !row.enabled {
            report.disabled += 1;
            continue;
        }
        let (Ok(provider), false) = (
            row.provider.trim().parse::<ProviderId>(),
            row.user_ref.trim().is_empty(),
        ) else {
            report.invalid += 1;
            continue;
        };
        let user: UserId = external_user_id(issuer, row.user_ref.trim());
        let plain = match cipher.decrypt(&row.ciphertext) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(provider = %provider, error = %e, "legacy key not imported");
                report.undecryptable += 1;
                continue;
            }
        };
        if let Some(existing) = target.get(user, provider).await? {
            let same = cipher
                .decrypt(&existing.ciphertext)
                .is_ok_and(|p| p.expose_secret() == plain.expose_secret());
            if same {
                report.unchanged += 1;
                continue;
            }
            if !overwrite {
                report.kept_existing += 1;
                continue;
            }
        }
        let ciphertext = cipher.encrypt(&plain)?;
        target
            .upsert(NewStoredKey {
                user_id: user,
                provider,
                ciphertext,
                key_preview: KeyPreview::of(plain.expose_secret()),
                metadata: row.metadata,
            })
            .await?;
        report.imported += 1;
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret;

    use super::*;
    use crate::testing::{MemKeys, ToyCipher};

    const ISSUER: &str = "https://id.example/realms/byok";

    fn row(user: &str, provider: &str, ciphertext: &str, enabled: bool) -> LegacyKey {
        LegacyKey {
            user_ref: user.into(),
            provider: provider.into(),
            ciphertext: ciphertext.into(),
            enabled,
            metadata: KeyMetadata::default(),
        }
    }

    #[tokio::test]
    async fn legacy_keys_are_imported_re_encrypted_and_idempotently() {
        let keys = MemKeys::new();
        let legacy = || {
            vec![
                row(
                    "alice",
                    "openai",
                    &ToyCipher::old_token("sk-alice-key"),
                    true,
                ),
                row("alice", "groq", &ToyCipher::old_token("gsk-off"), false),
                row("bob", "nosuch", &ToyCipher::old_token("x"), true),
                row("", "openai", &ToyCipher::old_token("x"), true),
                row("carol", "openai", "garbage", true),
            ]
        };
        let report = import_legacy_keys(legacy(), &keys, &ToyCipher, ISSUER, false)
            .await
            .unwrap();
        assert_eq!(report.read, 5);
        assert_eq!(report.imported, 1);
        assert_eq!(report.disabled, 1);
        assert_eq!(report.invalid, 2);
        assert_eq!(report.undecryptable, 1);
        let alice = external_user_id(ISSUER, "alice");
        let stored = keys.get(alice, ProviderId::Openai).await.unwrap().unwrap();
        assert!(ToyCipher.is_current(&stored.ciphertext), "re-encrypted");
        assert_eq!(
            ToyCipher
                .decrypt(&stored.ciphertext)
                .unwrap()
                .expose_secret(),
            "sk-alice-key"
        );

        let again = import_legacy_keys(legacy(), &keys, &ToyCipher, ISSUER, false)
            .await
            .unwrap();
        assert_eq!((again.imported, again.unchanged), (0, 1));

        let changed = vec![row(
            "alice",
            "openai",
            &ToyCipher::old_token("sk-new"),
            true,
        )];
        let kept = import_legacy_keys(changed.clone(), &keys, &ToyCipher, ISSUER, false)
            .await
            .unwrap();
        assert_eq!(kept.kept_existing, 1);
        let over = import_legacy_keys(changed, &keys, &ToyCipher, ISSUER, true)
            .await
            .unwrap();
        assert_eq!(over.imported, 1);
        let stored = keys.get(alice, ProviderId::Openai).await.unwrap().unwrap();
        assert_eq!(
            ToyCipher
                .decrypt(&stored.ciphertext)
                .unwrap()
                .expose_secret(),
            "sk-new"
        );
    }
}
