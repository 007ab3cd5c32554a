use std::sync::Arc;
use std::time::Duration;

use secrecy::SecretString;

use super::*;
use crate::ports::UserRepository;
use crate::testing::{MemDirectory, MemLegacySessions, MemUsers};

const ISSUER: &str = "https://sso.example.com/realms/byok";
const TOKEN: &str = "Xk3Vq_9a-ZlegacySessionToken0123456789abcde";
const SUBJECT: &str = "6f1c2a0e-8d3b-4e5f-9a7b-0c1d2e3f4a5b";

fn doc(email: &str, tier: &str) -> String {
    format!(
        r#"{{"user": "{email}", "access_token": "eyJhbGciOiJSUzI1NiJ9.expired.sig", "subscription_tier": "{tier}", "created": 1700000000.5}}"#
    )
}

fn secret(t: &str) -> SecretString {
    SecretString::from(t.to_string())
}

fn account(subject: &str) -> DirectoryAccount {
    DirectoryAccount {
        subject: subject.into(),
        issuer: ISSUER.into(),
        email_verified: true,
        enabled: true,
        tier: None,
    }
}

struct World {
    sessions: Arc<MemLegacySessions>,
    users: Arc<MemUsers>,
    directory: Arc<MemDirectory>,
}

impl World {
    fn new() -> Self {
        Self {
            sessions: Arc::new(MemLegacySessions::new()),
            users: Arc::new(MemUsers::new()),
            directory: Arc::new(MemDirectory::new()),
        }
    }

    fn auth(&self, ttl: Duration) -> LegacySessionAuthenticator {
        LegacySessionAuthenticator::new(self.sessions.clone(), self.users.clone(), ttl)
    }

    fn auth_with_directory(&self, ttl: Duration) -> LegacySessionAuthenticator {
        self.auth(ttl).with_directory(self.directory.clone())
    }
}

fn refused(r: Result<Principal, CoreError>) -> bool {
    matches!(r, Err(CoreError::Unauthenticated))
}

#[tokio::test]
async fn a_local_user_is_found_by_the_sessions_email_and_cached() {
    let w = World::new();
    let local = w.users.create("dev@example.com", Tier::Free).await.unwrap();
    w.sessions.put(TOKEN, &doc("Dev@Example.com", "starter"));
    let auth = w.auth(Duration::from_secs(30));

    let who = auth.authenticate(&secret(TOKEN)).await.unwrap();
    assert_eq!(who.user_id, local.id);
    assert_eq!(who.email, "dev@example.com");
    assert_eq!(who.tier, Tier::Starter, "a local user: the session's tier");
    assert_eq!(who.token_id, None);
    assert_eq!(w.sessions.reads(), 1);

    // Cached: the store is not read again within the TTL, even once the session is gone.
    w.sessions.remove(TOKEN);
    assert_eq!(
        auth.authenticate(&secret(TOKEN)).await.unwrap().user_id,
        local.id
    );
    assert_eq!(w.sessions.reads(), 1);

    // Without a usable tier in the session, the stored one.
    let other = "Other_session_token_0123456789abcdefghijk";
    w.sessions.put(
        other,
        r#"{"user": {"email": "dev@example.com"}, "subscription_tier": "gold"}"#,
    );
    assert_eq!(
        auth.authenticate(&secret(other)).await.unwrap().tier,
        Tier::Free
    );
}

#[tokio::test]
async fn unknown_expired_and_malformed_sessions_are_refused_and_refusals_cached_briefly() {
    let w = World::new();
    w.users
        .create("dev@example.com", Tier::Starter)
        .await
        .unwrap();
    let auth = w.auth(Duration::from_secs(30));
    assert!(refused(auth.authenticate(&secret(TOKEN)).await));
    assert!(refused(auth.authenticate(&secret(TOKEN)).await));
    assert_eq!(w.sessions.reads(), 1, "the refusal is cached");

    // Not a token at all: refused without a look-up.
    for bad in [
        "short",
        "has space 0123456789abcdef",
        "session:*0123456789abcdef",
        "",
    ] {
        assert!(refused(auth.authenticate(&secret(bad)).await), "{bad:?}");
    }
    assert!(refused(auth.authenticate(&secret(&"a".repeat(300))).await));
    assert_eq!(w.sessions.reads(), 1);

    // A pre-sign-in session (CSRF only, `user: null`) is no session.
    let pre = "Pre_signin_session_0123456789abcdefghijklm";
    w.sessions.put(pre, r#"{"user": null, "csrf_token": "x"}"#);
    assert!(refused(auth.authenticate(&secret(pre)).await));
    // Nor is a session whose user is not an email address.
    let odd = "Odd_session_token_0123456789abcdefghijklmn";
    w.sessions.put(odd, &doc("not-an-email", "starter"));
    assert!(refused(auth.authenticate(&secret(odd)).await));
    // A session of an email nobody here has, without a directory: refused.
    let stranger = "Stranger_session_0123456789abcdefghijklmn";
    w.sessions
        .put(stranger, &doc("stranger@example.com", "enterprise"));
    assert!(refused(auth.authenticate(&secret(stranger)).await));
    assert_eq!(w.users.count().await.unwrap(), 1, "nobody was created");
}

#[tokio::test]
async fn with_a_zero_ttl_a_signed_out_session_is_refused_at_once() {
    let w = World::new();
    w.users
        .create("dev@example.com", Tier::Starter)
        .await
        .unwrap();
    w.sessions.put(TOKEN, &doc("dev@example.com", "starter"));
    let auth = w.auth(Duration::ZERO);
    auth.authenticate(&secret(TOKEN)).await.unwrap();
    w.sessions.remove(TOKEN);
    assert!(refused(auth.authenticate(&secret(TOKEN)).await));
    // And a session that appears is accepted at once (refusals are not kept either).
    w.sessions.put(TOKEN, &doc("dev@example.com", "starter"));
    auth.authenticate(&secret(TOKEN)).await.unwrap();
    assert_eq!(w.sessions.reads(), 3);
}

#[tokio::test]
async fn an_unreachable_store_is_unavailable_not_a_refusal() {
    let w = World::new();
    w.users
        .create("dev@example.com", Tier::Starter)
        .await
        .unwrap();
    w.sessions.put(TOKEN, &doc("dev@example.com", "starter"));
    let auth = w.auth(Duration::from_secs(30));
    w.sessions.set_failing(true);
    assert!(matches!(
        auth.authenticate(&secret(TOKEN)).await,
        Err(CoreError::Unavailable { .. })
    ));
    w.sessions.set_failing(false);
    auth.authenticate(&secret(TOKEN)).await.unwrap();

    // The user store down: its error, not a cached refusal.
    let again = "Again_session_token_0123456789abcdefghijk";
    w.sessions.put(again, &doc("dev@example.com", "starter"));
    w.users.set_failing(true);
    assert!(matches!(
        auth.authenticate(&secret(again)).await,
        Err(CoreError::Store(StoreError::Unavailable(_)))
    ));
    w.users.set_failing(false);
    auth.authenticate(&secret(again)).await.unwrap();
}

#[tokio::test]
async fn a_new_keycloak_user_is_created_as_a_token_of_its_account_would_create_it() {
    let w = World::new();
    w.directory.add(
        "dev@example.com",
        DirectoryAccount {
            tier: Some(Tier::Professional),
            ..account(SUBJECT)
        },
    );
    // The session claims more than Keycloak says: Keycloak wins.
    w.sessions.put(TOKEN, &doc("DEV@example.com", "enterprise"));
    let auth = w.auth_with_directory(Duration::from_secs(30));
    let who = auth.authenticate(&secret(TOKEN)).await.unwrap();
    let id = external_user_id(ISSUER, SUBJECT);
    assert_eq!(who.user_id, id);
    assert_eq!(
        id.0.to_string(),
        SUBJECT,
        "Keycloak's UUID subjects are kept"
    );
    assert_eq!(
        who.tier,
        Tier::Professional,
        "never above what Keycloak says"
    );
    let stored = w.users.get(id).await.unwrap().unwrap();
    assert_eq!(
        stored.origin,
        UserOrigin::External {
            issuer: ISSUER.into()
        }
    );
    assert_eq!(
        stored.email, "dev@example.com",
        "the verified email is stored"
    );
    assert_eq!(stored.tier, Tier::Professional);
    assert_eq!(w.directory.lookups(), 1);

    // Without a tier at Keycloak, a new user takes the session's.
    let other = "Other_session_token_0123456789abcdefghijk";
    let sub2 = "7f1c2a0e-8d3b-4e5f-9a7b-0c1d2e3f4a5b";
    w.directory.add("two@example.com", account(sub2));
    w.sessions.put(other, &doc("two@example.com", "starter"));
    assert_eq!(
        auth.authenticate(&secret(other)).await.unwrap().tier,
        Tier::Starter
    );
}

#[tokio::test]
async fn keycloak_accounts_that_are_disabled_unverified_or_ambiguous_are_refused() {
    let w = World::new();
    // A local user with the email: still refused when the provider's account for the email is
    // not vouched for (anyone may type an address into an unverified account).
    w.users
        .create("dev@example.com", Tier::Starter)
        .await
        .unwrap();
    w.directory.add(
        "dev@example.com",
        DirectoryAccount {
            email_verified: false,
            ..account(SUBJECT)
        },
    );
    w.sessions.put(TOKEN, &doc("dev@example.com", "starter"));
    let auth = w.auth_with_directory(Duration::ZERO);
    assert!(refused(auth.authenticate(&secret(TOKEN)).await));

    w.directory.update(SUBJECT, |a| a.email_verified = true);
    auth.authenticate(&secret(TOKEN)).await.unwrap();

    w.directory.update(SUBJECT, |a| a.enabled = false);
    assert!(refused(auth.authenticate(&secret(TOKEN)).await), "disabled");

    w.directory.update(SUBJECT, |a| a.enabled = true);
    w.directory.add(
        "dev@example.com",
        account("8f1c2a0e-8d3b-4e5f-9a7b-0c1d2e3f4a5b"),
    );
    assert!(
        refused(auth.authenticate(&secret(TOKEN)).await),
        "two accounts"
    );

    w.directory.set_failing(true);
    assert!(matches!(
        auth.authenticate(&secret(TOKEN)).await,
        Err(CoreError::Unavailable { .. })
    ));
}

#[tokio::test]
async fn a_keycloak_user_must_still_be_the_account_with_the_email() {
    let w = World::new();
    let id = external_user_id(ISSUER, SUBJECT);
    // Created here by a JWT, with a tier snapshot from its claims.
    w.users
        .ensure_external(id, ISSUER, "dev@example.com", true, Tier::Professional)
        .await
        .unwrap();
    w.sessions.put(TOKEN, &doc("dev@example.com", "enterprise"));

    // Without a directory: the user with the email; its tier is what Keycloak last said.
    let plain = w.auth(Duration::ZERO);
    let who = plain.authenticate(&secret(TOKEN)).await.unwrap();
    assert_eq!((who.user_id, who.tier), (id, Tier::Professional));

    // With one: it must be that very account.
    let auth = w.auth_with_directory(Duration::ZERO);
    w.directory.add("dev@example.com", account(SUBJECT));
    let who = auth.authenticate(&secret(TOKEN)).await.unwrap();
    assert_eq!((who.user_id, who.tier), (id, Tier::Professional));
    w.directory
        .update(SUBJECT, |a| a.tier = Some(Tier::Starter));
    assert_eq!(
        auth.authenticate(&secret(TOKEN)).await.unwrap().tier,
        Tier::Starter,
        "the attribute, when Keycloak has one"
    );
    // The email now belongs to another account (or the account was deleted): refused.
    w.directory.update(SUBJECT, |a| {
        a.subject = "9f1c2a0e-8d3b-4e5f-9a7b-0c1d2e3f4a5b".into();
    });
    assert!(refused(auth.authenticate(&secret(TOKEN)).await));
}

#[tokio::test]
async fn an_account_whose_subject_is_a_local_user_is_refused() {
    let w = World::new();
    let local = w
        .users
        .create("admin@example.com", Tier::Enterprise)
        .await
        .unwrap();
    // An account whose subject is the local admin's id, with another email.
    w.directory
        .add("mallory@example.com", account(&local.id.0.to_string()));
    w.sessions
        .put(TOKEN, &doc("mallory@example.com", "starter"));
    let auth = w.auth_with_directory(Duration::ZERO);
    assert!(refused(auth.authenticate(&secret(TOKEN)).await));
    assert_eq!(
        w.users.get(local.id).await.unwrap().unwrap().origin,
        UserOrigin::Local,
        "untouched"
    );
}

#[tokio::test]
async fn a_tier_change_is_seen_once_the_user_is_forgotten() {
    let w = World::new();
    let id = external_user_id(ISSUER, SUBJECT);
    w.users
        .ensure_external(id, ISSUER, "dev@example.com", true, Tier::Starter)
        .await
        .unwrap();
    w.sessions.put(TOKEN, &doc("dev@example.com", "starter"));
    let auth = w.auth(Duration::from_secs(30));
    assert_eq!(
        auth.authenticate(&secret(TOKEN)).await.unwrap().tier,
        Tier::Starter
    );
    w.users.set_tier(id, Tier::Enterprise).await.unwrap();
    assert_eq!(
        auth.authenticate(&secret(TOKEN)).await.unwrap().tier,
        Tier::Starter,
        "cached"
    );
    auth.forget_user(id);
    assert_eq!(
        auth.authenticate(&secret(TOKEN)).await.unwrap().tier,
        Tier::Enterprise
    );
}

#[tokio::test]
async fn a_disabled_user_is_refused() {
    let w = World::new();
    let local = w
        .users
        .create("dev@example.com", Tier::Starter)
        .await
        .unwrap();
    w.sessions.put(TOKEN, &doc("dev@example.com", "starter"));
    let auth = w.auth(Duration::from_secs(30));
    assert!(auth.authenticate(&secret(TOKEN)).await.is_ok());
    w.users
        .set_disabled(local.id, Some(chrono::Utc::now()))
        .await
        .unwrap();
    auth.forget_user(local.id);
    assert!(refused(auth.authenticate(&secret(TOKEN)).await));
}
