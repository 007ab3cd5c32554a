//! Tests of the gateway-token service ([`TokenService`]), over the in-memory user store.

use super::*;
use crate::testing::MemUsers;

#[test]
fn hash_is_sha256_hex() {
    assert_eq!(
        hash_token("abc"),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
}

/// Answers every account lookup with "no such account".
struct NoAccounts;

#[async_trait]
impl TierSource for NoAccounts {
    async fn tier(&self, _: &str) -> Result<Option<Tier>, CoreError> {
        Ok(None)
    }
    async fn account(&self, _: &str) -> Result<Option<ExternalAccount>, CoreError> {
        Ok(None)
    }
}

/// Knows every account, disabled.
struct DisabledAccounts;

#[async_trait]
impl TierSource for DisabledAccounts {
    async fn tier(&self, _: &str) -> Result<Option<Tier>, CoreError> {
        Ok(None)
    }
    async fn account(&self, _: &str) -> Result<Option<ExternalAccount>, CoreError> {
        Ok(Some(ExternalAccount {
            enabled: false,
            tier: None,
        }))
    }
}

#[tokio::test]
async fn only_users_an_issuer_may_own_follow_its_accounts() {
    let external = UserOrigin::External {
        issuer: "https://kc/realms/r".into(),
    };
    let none: Arc<dyn TierSource> = Arc::new(NoAccounts);
    let disabled: Arc<dyn TierSource> = Arc::new(DisabledAccounts);
    for (origin, source, refused) in [
        (UserOrigin::Local, &none, false),
        (UserOrigin::Local, &disabled, false),
        // Stored before origins were recorded: the bootstrap admin of an upgraded service
        // (no account at the provider) keeps working ...
        (UserOrigin::Unknown, &none, false),
        // ... and a Keycloak user from before the upgrade, disabled there, is refused.
        (UserOrigin::Unknown, &disabled, true),
        (external.clone(), &none, true),
        (external.clone(), &disabled, true),
    ] {
        let mem = Arc::new(MemUsers::new());
        let svc = TokenService::new(mem.clone(), mem.clone(), Duration::ZERO)
            .with_identity_refresh(source.clone(), Duration::from_secs(60));
        let user = svc
            .create_user("a@example.com", Tier::Starter)
            .await
            .unwrap();
        mem.insert(User {
            origin: origin.clone(),
            ..user
        });
        let t = svc.issue(user.id, "t", None).await.unwrap();
        assert_eq!(
            svc.authenticate(&t.token).await.is_err(),
            refused,
            "{origin:?}"
        );
    }
}

#[tokio::test]
async fn an_outage_keeps_known_tokens_and_revocations() {
    let mem = Arc::new(MemUsers::new());
    let stale = Arc::new(StaleIfError::new(Duration::from_secs(60)));
    // TTL zero: every check asks the store, so every check during the outage is stale.
    let svc = TokenService::new(mem.clone(), mem.clone(), Duration::ZERO)
        .with_stale_if_error(stale.clone());
    let user = svc
        .create_user("a@example.com", Tier::Starter)
        .await
        .unwrap();
    let kept = svc.issue(user.id, "kept", None).await.unwrap();
    let revoked = svc.issue(user.id, "revoked", None).await.unwrap();
    let unseen = svc.issue(user.id, "unseen", None).await.unwrap();
    let junk = SecretString::from(format!("byok_{}", "x".repeat(43)));
    for t in [&kept.token, &revoked.token] {
        svc.authenticate(t).await.unwrap();
    }
    assert!(svc.authenticate(&junk).await.is_err());
    svc.revoke(user.id, revoked.record.id).await.unwrap();

    mem.set_failing(true);
    let who = svc.authenticate(&kept.token).await.unwrap();
    assert_eq!(who.user_id, user.id, "a token seen before the outage works");
    assert!(
        matches!(
            svc.authenticate(&revoked.token).await,
            Err(CoreError::Unauthenticated)
        ),
        "a revocation seen before the outage holds"
    );
    assert!(
        matches!(
            svc.authenticate(&junk).await,
            Err(CoreError::Unauthenticated)
        ),
        "a refusal stands too"
    );
    assert!(
        matches!(
            svc.authenticate(&unseen.token).await,
            Err(CoreError::Store(StoreError::Unavailable(_)))
        ),
        "a token never seen cannot be checked"
    );
    assert_eq!(stale.served()[0].1, 3);
    assert!(stale.failing());

    mem.set_failing(false);
    svc.authenticate(&unseen.token).await.unwrap();
    assert!(!stale.failing(), "the store answers again");
}

#[tokio::test]
async fn a_revocation_read_from_the_store_replaces_the_cached_acceptance() {
    let mem = Arc::new(MemUsers::new());
    let svc = TokenService::new(mem.clone(), mem.clone(), Duration::ZERO)
        .with_stale_if_error(Arc::new(StaleIfError::new(Duration::from_secs(60))));
    let user = svc
        .create_user("a@example.com", Tier::Starter)
        .await
        .unwrap();
    let t = svc.issue(user.id, "t", None).await.unwrap();
    svc.authenticate(&t.token).await.unwrap();
    // Revoked behind this process's back (another replica, its notification missed).
    mem.revoke(user.id, t.record.id).await.unwrap();
    assert!(svc.authenticate(&t.token).await.is_err());
    mem.set_failing(true);
    assert!(
        matches!(
            svc.authenticate(&t.token).await,
            Err(CoreError::Unauthenticated)
        ),
        "the acceptance read before the revocation never comes back"
    );
}
