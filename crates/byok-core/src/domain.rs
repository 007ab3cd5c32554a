//! Domain types: users, tiers, providers, keys and gateway tokens.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::CoreError;
pub use crate::tier::Tier;

/// Identifier of a user (a UUID; with Keycloak, the token's `sub`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct UserId(pub Uuid);

impl UserId {
    /// A fresh random (v4) id.
    pub fn new_random() -> Self {
        Self(Uuid::new_v4())
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Tier rules that answer with a [`CoreError`] (the type itself is in its own leaf module).
impl Tier {
    /// `Ok` when this tier reaches `required`, else [`CoreError::UpgradeRequired`].
    pub fn require(self, required: Tier) -> Result<(), CoreError> {
        if self.allows(required) {
            Ok(())
        } else {
            Err(CoreError::UpgradeRequired {
                current: self,
                required,
            })
        }
    }
}

impl FromStr for Tier {
    type Err = CoreError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Tier::ALL
            .into_iter()
            .find(|t| t.as_str().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| {
                CoreError::invalid(
                    "invalid_tier",
                    "tier must be one of trial, free, starter, professional, enterprise",
                )
            })
    }
}

/// The providers a user can store a key for.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderId {
    Openai,
    Anthropic,
    Huggingface,
    Cohere,
    Together,
    Perplexity,
    Groq,
    Openrouter,
    Ollama,
    Custom,
}

impl ProviderId {
    /// Every provider, in the order the API lists them.
    pub const ALL: [ProviderId; 10] = [
        ProviderId::Openai,
        ProviderId::Anthropic,
        ProviderId::Huggingface,
        ProviderId::Cohere,
        ProviderId::Together,
        ProviderId::Perplexity,
        ProviderId::Groq,
        ProviderId::Openrouter,
        ProviderId::Ollama,
        ProviderId::Custom,
    ];

    /// The lowercase id (`openai`), as stored and in URLs.
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderId::Openai => "openai",
            ProviderId::Anthropic => "anthropic",
            ProviderId::Huggingface => "huggingface",
            ProviderId::Cohere => "cohere",
            ProviderId::Together => "together",
            ProviderId::Perplexity => "perplexity",
            ProviderId::Groq => "groq",
            ProviderId::Openrouter => "openrouter",
            ProviderId::Ollama => "ollama",
            ProviderId::Custom => "custom",
        }
    }

    /// Human-readable name, as the legacy front end shows it.
    pub fn display_name(self) -> &'static str {
        match self {
            ProviderId::Openai => "OpenAI",
            ProviderId::Anthropic => "Anthropic",
            ProviderId::Huggingface => "HuggingFace",
            ProviderId::Cohere => "Cohere",
            ProviderId::Together => "Together AI",
            ProviderId::Perplexity => "Perplexity",
            ProviderId::Groq => "Groq",
            ProviderId::Openrouter => "OpenRouter",
            ProviderId::Ollama => "Ollama",
            ProviderId::Custom => "Custom (OpenAI-compatible)",
        }
    }

    /// The key-format rule for this provider.
    pub fn key_format(self) -> KeyFormat {
        let (prefix, min_len) = match self {
            ProviderId::Openai => (Some("sk-"), 20),
            ProviderId::Anthropic => (Some("sk-ant-"), 20),
            ProviderId::Huggingface => (Some("hf_"), 20),
            ProviderId::Perplexity => (Some("pplx-"), 20),
            ProviderId::Groq => (Some("gsk_"), 20),
            ProviderId::Openrouter => (Some("sk-or-v1-"), 20),
            ProviderId::Cohere | ProviderId::Together => (None, 20),
            ProviderId::Ollama => (None, 0),
            ProviderId::Custom => (None, 8),
        };
        KeyFormat {
            prefix,
            min_len,
            max_len: ApiKey::MAX_LEN,
        }
    }

    /// Whether a key for this provider needs an `endpoint` (custom OpenAI-compatible servers).
    pub fn requires_endpoint(self) -> bool {
        matches!(self, ProviderId::Custom)
    }
}

impl fmt::Display for ProviderId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ProviderId {
    type Err = CoreError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ProviderId::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| CoreError::NotFound {
                code: "unknown_provider",
                message: "unknown provider; see GET /api/v1/byok/providers".into(),
            })
    }
}

/// What a key for a provider must look like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyFormat {
    /// Required prefix, if the provider's keys have a recognisable one.
    pub prefix: Option<&'static str>,
    pub min_len: usize,
    pub max_len: usize,
}

impl KeyFormat {
    /// A short description for the providers listing (`key_format`).
    pub fn describe(&self) -> String {
        match self.prefix {
            Some(p) => format!("{p}..."),
            None => "any".to_string(),
        }
    }
}

/// A provider API key. Never printed: `Debug` is redacted and there is no `Display`.
#[derive(Clone)]
pub struct ApiKey(SecretString);

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey([REDACTED])")
    }
}

impl ApiKey {
    /// The longest key accepted, in bytes.
    pub const MAX_LEN: usize = 512;

    /// Validates `raw` against `provider`'s key format.
    ///
    /// Rules: trimmed of surrounding whitespace; printable ASCII without spaces; the
    /// provider's prefix (an `sk-ant-` key is never an OpenAI key, an `sk-or-` key never an
    /// OpenAI key); length within bounds. Error messages never echo the key.
    pub fn parse(provider: ProviderId, raw: &str) -> Result<Self, CoreError> {
        let key = raw.trim();
        // Ollama takes no key: an empty one is stored and nothing is sent upstream.
        if key.is_empty() && provider == ProviderId::Ollama {
            return Ok(Self(SecretString::from(String::new())));
        }
        if key.is_empty() {
            return Err(CoreError::invalid("key_required", "key must not be empty"));
        }
        if !key.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(CoreError::invalid(
                "invalid_key_format",
                "key must be printable ASCII without spaces",
            ));
        }
        let format = provider.key_format();
        if key.len() < format.min_len || key.len() > format.max_len {
            return Err(CoreError::invalid(
                "invalid_key_format",
                format!(
                    "{} keys must be {} to {} characters long",
                    provider.display_name(),
                    format.min_len,
                    format.max_len
                ),
            ));
        }
        if let Some(prefix) = format.prefix
            && !key.starts_with(prefix)
        {
            return Err(CoreError::invalid(
                "invalid_key_format",
                format!("{} keys start with '{prefix}'", provider.display_name()),
            ));
        }
        if provider == ProviderId::Openai
            && (key.starts_with("sk-ant-") || key.starts_with("sk-or-"))
        {
            return Err(CoreError::invalid(
                "invalid_key_format",
                "this looks like an Anthropic or OpenRouter key, not an OpenAI key",
            ));
        }
        Ok(Self(SecretString::from(key.to_owned())))
    }

    /// Wraps a decrypted secret without validation (it was validated when stored).
    pub fn from_secret(secret: SecretString) -> Self {
        Self(secret)
    }

    /// The key itself, for the one place that sends it upstream.
    pub fn secret(&self) -> &SecretString {
        &self.0
    }

    /// The key itself. Call only at the point of use (an outbound header).
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }

    /// The stored, displayable hint: first 4 + `...` + last 4 characters, `****` for keys under 20.
    pub fn preview(&self) -> KeyPreview {
        KeyPreview::of(self.expose())
    }
}

/// A displayable hint of a key, computed once when the key is written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct KeyPreview(String);

impl KeyPreview {
    /// The preview of `key`: its first and last 4 characters (`sk-a...wxyz`), or `****` when
    /// the key is shorter than 20 characters.
    pub fn of(key: &str) -> Self {
        let chars: Vec<char> = key.chars().collect();
        // Below 20 characters, 8 shown characters would give away too much of the key.
        if chars.len() < 20 {
            return Self("****".into());
        }
        let head: String = chars[..4].iter().collect();
        let tail: String = chars[chars.len() - 4..].iter().collect();
        Self(format!("{head}...{tail}"))
    }

    /// Wraps a preview read back from the store.
    pub fn from_stored(s: String) -> Self {
        Self(s)
    }

    /// The preview as shown.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Result of the last key test.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TestStatus {
    /// The provider accepted the key.
    Valid,
    /// The provider rejected the key (401/403).
    Invalid,
    /// The test could not decide (timeout, 429, 5xx, unreachable).
    Error,
    /// Never tested, or the provider has no usable probe.
    Unknown,
}

impl TestStatus {
    /// The lowercase name (`valid`), as stored.
    pub fn as_str(self) -> &'static str {
        match self {
            TestStatus::Valid => "valid",
            TestStatus::Invalid => "invalid",
            TestStatus::Error => "error",
            TestStatus::Unknown => "unknown",
        }
    }
}

impl FromStr for TestStatus {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "valid" => Ok(Self::Valid),
            "invalid" => Ok(Self::Invalid),
            "error" => Ok(Self::Error),
            "unknown" => Ok(Self::Unknown),
            _ => Err(()),
        }
    }
}

/// The non-secret fields kept with a stored key (legacy `metadata` JSON).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyMetadata {
    /// User-given label (legacy field name `name`).
    #[serde(rename = "name", default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub added_date: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_tested: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_status: Option<TestStatus>,
}

impl KeyMetadata {
    /// Reads stored metadata leniently: rows written by the legacy Python service carry naive
    /// ISO timestamps (`2024-05-01T10:00:00.123456`, taken as UTC) and may hold unknown
    /// fields or values; unreadable fields become `None` instead of failing the row.
    pub fn from_json_lenient(v: &serde_json::Value) -> Self {
        let text = |k: &str| v.get(k).and_then(|x| x.as_str()).map(str::to_owned);
        let time = |k: &str| text(k).and_then(|t| parse_lenient_time(&t));
        Self {
            label: text("name").or_else(|| text("label")),
            added_date: time("added_date"),
            endpoint: text("endpoint").filter(|e| !e.is_empty()),
            last_tested: time("last_tested"),
            test_status: text("test_status").and_then(|s| s.parse().ok()),
        }
    }

    /// The JSON stored in the `metadata` column.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or_else(|_| serde_json::json!({}))
    }
}

/// RFC 3339, or a naive ISO-8601 date-time taken as UTC.
pub fn parse_lenient_time(s: &str) -> Option<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.with_timezone(&Utc));
    }
    chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f")
        .ok()
        .map(|n| n.and_utc())
}

/// A key row as stored: the secret only as ciphertext.
#[derive(Debug, Clone)]
pub struct StoredKey {
    pub id: Uuid,
    pub user_id: UserId,
    pub provider: ProviderId,
    /// Fernet token of the key.
    pub ciphertext: String,
    pub key_preview: KeyPreview,
    pub enabled: bool,
    pub metadata: KeyMetadata,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A key to write (insert, or replace the user's key for that provider).
#[derive(Debug, Clone)]
pub struct NewStoredKey {
    pub user_id: UserId,
    pub provider: ProviderId,
    pub ciphertext: String,
    pub key_preview: KeyPreview,
    pub metadata: KeyMetadata,
}

/// A local user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub id: UserId,
    pub email: String,
    pub tier: Tier,
    pub created_at: DateTime<Utc>,
    /// Who authenticates this user.
    pub origin: UserOrigin,
}

/// Who vouches for a user: this service (gateway tokens only) or an identity provider.
/// External subjects live in their own namespace: a provider's subject never becomes a local
/// user, nor a user of another provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserOrigin {
    /// Created by this service (CLI, bootstrap).
    Local,
    /// Created on first sight of a token from this issuer.
    External { issuer: String },
    /// Stored before the origin was recorded (see `UserRepository::ensure_external`).
    Unknown,
}

impl UserOrigin {
    /// The stored form: `local`, the issuer URL, or nothing.
    pub fn as_stored(&self) -> Option<&str> {
        match self {
            UserOrigin::Local => Some("local"),
            UserOrigin::External { issuer } => Some(issuer),
            UserOrigin::Unknown => None,
        }
    }

    /// The origin as stored (`local`, an issuer URL, or NULL for rows older than origins).
    pub fn from_stored(s: Option<String>) -> Self {
        match s {
            None => UserOrigin::Unknown,
            Some(s) if s == "local" => UserOrigin::Local,
            Some(issuer) => UserOrigin::External { issuer },
        }
    }
}

/// An authenticated caller, as handlers see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub user_id: UserId,
    pub email: String,
    pub tier: Tier,
    /// The gateway token the request came with (`None` for a Keycloak JWT); per-token
    /// rate limits count against it.
    pub token_id: Option<Uuid>,
}

impl From<User> for Principal {
    fn from(u: User) -> Self {
        Self {
            user_id: u.id,
            email: u.email,
            tier: u.tier,
            token_id: None,
        }
    }
}

/// Validates and normalises an email address (lower-cased, trimmed, `local@domain`).
pub fn normalize_email(raw: &str) -> Result<String, CoreError> {
    let email = raw.trim().to_ascii_lowercase();
    let valid = email.len() <= 254
        && email
            .split_once('@')
            .is_some_and(|(l, d)| !l.is_empty() && !d.is_empty() && !d.contains('@'))
        && !email.chars().any(|c| c.is_whitespace() || c.is_control());
    if valid {
        Ok(email)
    } else {
        Err(CoreError::invalid(
            "invalid_email",
            "email must look like name@domain",
        ))
    }
}

/// A gateway token's stored record (never the token itself: only its SHA-256).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayToken {
    pub id: Uuid,
    pub user_id: UserId,
    pub name: String,
    /// The visible start of the token, e.g. `byok_Ab3dE6gH`.
    pub prefix: String,
    pub created_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub expires_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

impl GatewayToken {
    /// Neither revoked nor expired at `now`.
    pub fn is_active(&self, now: DateTime<Utc>) -> bool {
        self.revoked_at.is_none() && self.expires_at.is_none_or(|e| e > now)
    }
}

/// A gateway token to store.
#[derive(Debug, Clone)]
pub struct NewGatewayToken {
    pub id: Uuid,
    pub user_id: UserId,
    pub name: String,
    pub prefix: String,
    /// Lower-case hex SHA-256 of the whole token.
    pub hash: String,
    pub expires_at: Option<DateTime<Utc>>,
}

/// What happens when a user's own key fails upstream with 401, 403 or 429.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FallbackPolicy {
    /// Return the provider's error (the default: the platform's credit is never spent silently).
    #[default]
    UserOnly,
    /// Retry once on the system default, before any byte reached the client.
    UserThenSystem,
}

impl FallbackPolicy {
    /// The snake_case name (`user_then_system`), as stored and sent.
    pub fn as_str(self) -> &'static str {
        match self {
            FallbackPolicy::UserOnly => "user_only",
            FallbackPolicy::UserThenSystem => "user_then_system",
        }
    }
}

impl FromStr for FallbackPolicy {
    type Err = CoreError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "user_only" => Ok(Self::UserOnly),
            "user_then_system" => Ok(Self::UserThenSystem),
            _ => Err(CoreError::invalid(
                "invalid_fallback_policy",
                "fallback_policy must be user_only or user_then_system",
            )),
        }
    }
}

/// A user's gateway settings.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserSettings {
    pub fallback_policy: FallbackPolicy,
}

/// Whose credential served a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CredentialKind {
    /// The user's own key (BYOK).
    User,
    /// The system default.
    System,
}

impl CredentialKind {
    /// The lowercase name (`user`, `system`), as recorded in usage.
    pub fn as_str(self) -> &'static str {
        match self {
            CredentialKind::User => "user",
            CredentialKind::System => "system",
        }
    }
}

/// One gateway request, as recorded for usage statistics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageRecord {
    /// Unique per served request, made when it is served: a record written twice (a retried
    /// batch whose commit was not acknowledged, a replayed spool) is stored once.
    pub id: Uuid,
    pub user_id: UserId,
    pub provider: ProviderId,
    pub model: String,
    pub credential: CredentialKind,
    /// HTTP status returned to the client (200 for a stream that completed).
    pub status: u16,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub latency_ms: u64,
    pub at: DateTime<Utc>,
}

/// Usage per provider.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ProviderUsage {
    pub provider: String,
    pub requests: u64,
    pub byok_requests: u64,
    pub errors: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
}

/// A user's usage totals.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct UsageSummary {
    pub requests: u64,
    pub byok_requests: u64,
    pub system_requests: u64,
    pub errors: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub by_provider: Vec<ProviderUsage>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiers_are_ordered() {
        assert!(!Tier::Free.allows(Tier::Starter));
        assert!(!Tier::Trial.allows(Tier::Starter));
        assert!(Tier::Starter.allows(Tier::Starter));
        assert!(Tier::Enterprise.allows(Tier::Professional));
        assert_eq!("Professional".parse::<Tier>().unwrap(), Tier::Professional);
        assert!("gold".parse::<Tier>().is_err());
    }

    #[test]
    fn preview_shows_head_and_tail_only() {
        assert_eq!(
            KeyPreview::of("sk-abcdefghijklmnopqrstuvwxyz").as_str(),
            "sk-a...wxyz"
        );
        assert_eq!(KeyPreview::of("short").as_str(), "****");
        assert_eq!(
            KeyPreview::of("12345678901234567890").as_str(),
            "1234...7890"
        );
        assert_eq!(KeyPreview::of("1234567890123456789").as_str(), "****");
    }

    #[test]
    fn key_formats() {
        use ProviderId::*;
        assert!(ApiKey::parse(Openai, "sk-proj-abcdefghijklmnopqrstu").is_ok());
        assert!(ApiKey::parse(Openai, "sk-ant-abcdefghijklmnopqrstu").is_err());
        assert!(ApiKey::parse(Openai, "sk-or-v1-abcdefghijklmnopqrstu").is_err());
        assert!(ApiKey::parse(Anthropic, "sk-ant-api03-abcdefghijklmnop").is_ok());
        assert!(ApiKey::parse(Anthropic, "sk-abcdefghijklmnopqrstuvw").is_err());
        assert!(ApiKey::parse(Openrouter, "sk-or-v1-abcdefghijklmnopqrstu").is_ok());
        assert!(ApiKey::parse(Groq, "gsk_abcdefghijklmnopqrstu").is_ok());
        assert!(ApiKey::parse(Huggingface, "hf_abcdefghijklmnopqrstu").is_ok());
        assert!(ApiKey::parse(Perplexity, "pplx-abcdefghijklmnopqrstu").is_ok());
        assert!(ApiKey::parse(Openai, "sk-short").is_err());
        assert!(ApiKey::parse(Openai, "sk-with space abcdefghijklmnop").is_err());
        assert!(ApiKey::parse(Ollama, "x").is_ok());
        assert!(ApiKey::parse(Ollama, "").is_ok(), "Ollama takes no key");
        assert!(ApiKey::parse(Custom, "").is_err());
        let long = format!("sk-{}", "a".repeat(600));
        assert!(ApiKey::parse(Openai, &long).is_err());
    }

    #[test]
    fn api_key_debug_is_redacted() {
        let k = ApiKey::parse(ProviderId::Openai, "sk-secretsecretsecretsecret").unwrap();
        assert!(!format!("{k:?}").contains("secret"));
    }

    #[test]
    fn emails() {
        assert_eq!(normalize_email(" A@B.io ").unwrap(), "a@b.io");
        assert!(normalize_email("nope").is_err());
        assert!(normalize_email("a@b@c").is_err());
        assert!(normalize_email("@b").is_err());
    }

    #[test]
    fn legacy_metadata_reads_leniently() {
        let v = serde_json::json!({
            "name": "old", "added_date": "2024-05-01T10:00:00.123456",
            "test_status": "weird", "last_tested": 5, "extra": true
        });
        let m = KeyMetadata::from_json_lenient(&v);
        assert_eq!(m.label.as_deref(), Some("old"));
        assert!(m.added_date.is_some());
        assert_eq!(m.test_status, None);
        assert_eq!(m.last_tested, None);
        let back = KeyMetadata::from_json_lenient(&m.to_json());
        assert_eq!(back, m);
    }

    #[test]
    fn metadata_uses_legacy_field_names() {
        let m = KeyMetadata {
            label: Some("work".into()),
            test_status: Some(TestStatus::Valid),
            ..Default::default()
        };
        let v = serde_json::to_value(&m).unwrap();
        assert_eq!(v["name"], "work");
        assert_eq!(v["test_status"], "valid");
    }
}
