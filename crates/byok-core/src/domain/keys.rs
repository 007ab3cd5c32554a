//! Provider keys: the secret itself, its preview, its test status, its stored row.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::providers::{KeyFormat, ProviderId};
use super::users::UserId;
use crate::error::CoreError;

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
    pub const MAX_LEN: usize = KeyFormat::MAX_LEN;

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

    /// The key's last four characters, when the preview shows them (not for `****`).
    pub fn tail(&self) -> Option<&str> {
        let (_, tail) = self.0.rsplit_once("...")?;
        (!tail.is_empty()).then_some(tail)
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

#[cfg(test)]
mod tests {
    use super::*;

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
        // Ollama Cloud: no prefix, 10+ characters, as the legacy service accepted.
        assert!(ApiKey::parse(OllamaCloud, "0123456789").is_ok());
        assert!(ApiKey::parse(OllamaCloud, "012345678").is_err());
        assert!(
            ApiKey::parse(OllamaCloud, "").is_err(),
            "a hosted service needs a key"
        );
        assert_eq!(OllamaCloud.key_format().describe(), "any");
        assert_eq!("ollama_cloud".parse::<ProviderId>().unwrap(), OllamaCloud);
        assert_eq!(
            serde_json::to_value(OllamaCloud).unwrap(),
            serde_json::json!("ollama_cloud")
        );
        let long = format!("sk-{}", "a".repeat(600));
        assert!(ApiKey::parse(Openai, &long).is_err());
    }

    #[test]
    fn api_key_debug_is_redacted() {
        let k = ApiKey::parse(ProviderId::Openai, "sk-secretsecretsecretsecret").unwrap();
        assert!(!format!("{k:?}").contains("secret"));
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
