//! The identity ports: authenticating a bearer credential, verifying an identity provider's
//! tokens, reading a tier where the provider keeps it.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use secrecy::SecretString;

use crate::domain::{Principal, Tier, UserId};
use crate::error::CoreError;

/// Turns a presented bearer credential into a principal. Implemented by
/// [`crate::services::TokenAuthenticator`] for gateway tokens; a JWT verifier plugs in beside it.
#[async_trait]
pub trait Authenticator: Send + Sync + 'static {
    /// MUST return [`CoreError::Unauthenticated`] for any credential it does not accept,
    /// without saying why (unknown, revoked and expired look the same to the caller).
    async fn authenticate(&self, credential: &SecretString) -> Result<Principal, CoreError>;
}

/// What an identity provider vouches for about a bearer token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExternalIdentity {
    /// The provider's subject, as a user id (see [`crate::services::external_user_id`]).
    pub user_id: UserId,
    /// The provider's subject, as sent.
    pub subject: String,
    /// The issuer that signed the token (the user's origin).
    pub issuer: String,
    /// The `email` claim, empty when absent.
    pub email: String,
    /// Whether the provider vouches for `email` (the `email_verified` claim is `true`); false
    /// when the claim is absent or anything else. An unverified email never links identities.
    pub email_verified: bool,
    /// The tier the token states (a claim or a role mapping), if any.
    pub tier: Option<Tier>,
    /// When the token expires.
    pub expires_at: DateTime<Utc>,
}

/// Verifies bearer tokens issued by an identity provider (OIDC JWTs).
#[async_trait]
pub trait TokenVerifier: Send + Sync + 'static {
    /// MUST return [`CoreError::Unauthenticated`] for any token it does not accept (bad
    /// signature, algorithm, issuer, audience, expiry), without saying why to the caller.
    /// Transient failures of the provider (its keys cannot be fetched) are
    /// [`CoreError::Unavailable`].
    async fn verify(&self, token: &str) -> Result<ExternalIdentity, CoreError>;
}

/// Reads a user's tier where the identity provider keeps it (e.g. a Keycloak attribute).
#[async_trait]
pub trait TierSource: Send + Sync + 'static {
    /// `None` when the provider has no tier for this subject.
    async fn tier(&self, subject: &str) -> Result<Option<Tier>, CoreError>;
    /// The account as the provider holds it now: enabled, and its tier. `Ok(None)` when the
    /// provider has no such account (deleted). Errors when the provider cannot be asked.
    /// The default knows only tiers and reports every account enabled.
    async fn account(&self, subject: &str) -> Result<Option<ExternalAccount>, CoreError> {
        Ok(Some(ExternalAccount {
            enabled: true,
            tier: self.tier(subject).await?,
        }))
    }
}

/// An account at the identity provider, as [`TierSource::account`] reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExternalAccount {
    pub enabled: bool,
    /// `None` when the provider keeps no tier for it.
    pub tier: Option<Tier>,
}

/// What a browser sign-in at the identity provider yields: an access token for the
/// [`Authenticator`] to check, and what the provider says of the operator role.
#[derive(Debug)]
pub struct BrowserSignIn {
    /// The provider's access token (checked like any bearer token before it is trusted).
    pub access_token: SecretString,
    /// `Some(true)` when the token carries the configured operator role, `Some(false)` when
    /// it does not, `None` when no operator role is configured (the stored role stands).
    pub operator: Option<bool>,
}

/// Signs people in at the identity provider in their browser: OpenID Connect's
/// authorization code flow with PKCE, state and nonce.
#[async_trait]
pub trait BrowserLogin: Send + Sync + 'static {
    /// The provider's authorization URL for one attempt (`code_challenge` is the S256
    /// challenge of the verifier the caller keeps).
    async fn authorization_url(
        &self,
        redirect_uri: &str,
        state: &str,
        nonce: &str,
        code_challenge: &str,
    ) -> Result<String, CoreError>;
    /// Exchanges an authorization code. MUST verify the returned ID token (signature,
    /// issuer, audience = this client, expiry, `nonce`) and return
    /// [`CoreError::Unauthenticated`] for anything it does not accept;
    /// [`CoreError::Unavailable`] when the provider cannot be reached.
    async fn exchange(
        &self,
        code: &str,
        code_verifier: &SecretString,
        redirect_uri: &str,
        nonce: &str,
    ) -> Result<BrowserSignIn, CoreError>;
}

/// An account of the identity provider, as [`IdentityDirectory::accounts_by_email`] finds it.
#[derive(Clone, PartialEq, Eq)]
pub struct DirectoryAccount {
    /// The provider's subject (Keycloak's user id).
    pub subject: String,
    /// The issuer the provider's tokens carry (`iss`), exactly as they carry it: users created
    /// from this account must have the origin a token of it would give them.
    pub issuer: String,
    /// Whether the provider vouches for the account's email (`emailVerified`).
    pub email_verified: bool,
    pub enabled: bool,
    /// The tier the provider keeps for the account (an attribute), if any.
    pub tier: Option<Tier>,
}

impl std::fmt::Debug for DirectoryAccount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DirectoryAccount")
            .field("subject", &self.subject)
            .field("email_verified", &self.email_verified)
            .field("enabled", &self.enabled)
            .field("tier", &self.tier)
            .finish_non_exhaustive()
    }
}

/// Looks accounts up at the identity provider (Keycloak's admin API).
#[async_trait]
pub trait IdentityDirectory: Send + Sync + 'static {
    /// The accounts whose email is `email` (compared case-insensitively, never as a prefix or
    /// a pattern); empty when there is none. [`CoreError::Unavailable`] when the provider
    /// cannot be asked.
    async fn accounts_by_email(&self, email: &str) -> Result<Vec<DirectoryAccount>, CoreError>;
}
