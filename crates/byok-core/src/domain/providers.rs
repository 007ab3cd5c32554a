//! The providers a user can store a key for, and what their keys look like.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::CoreError;

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
    /// Ollama Cloud (`https://ollama.com`), which the legacy front end offers.
    #[serde(rename = "ollama_cloud")]
    OllamaCloud,
    Custom,
}

impl ProviderId {
    /// Every provider, in the order the API lists them.
    pub const ALL: [ProviderId; 11] = [
        ProviderId::Openai,
        ProviderId::Anthropic,
        ProviderId::Huggingface,
        ProviderId::Cohere,
        ProviderId::Together,
        ProviderId::Perplexity,
        ProviderId::Groq,
        ProviderId::Openrouter,
        ProviderId::Ollama,
        ProviderId::OllamaCloud,
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
            ProviderId::OllamaCloud => "ollama_cloud",
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
            ProviderId::OllamaCloud => "Ollama Cloud",
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
            // The legacy service accepted Ollama Cloud keys of 10 characters or more.
            ProviderId::OllamaCloud => (None, 10),
            ProviderId::Custom => (None, 8),
        };
        KeyFormat {
            prefix,
            min_len,
            max_len: KeyFormat::MAX_LEN,
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
    /// The longest key accepted for any provider, in bytes ([`crate::domain::ApiKey::MAX_LEN`]).
    pub const MAX_LEN: usize = 512;

    /// A short description for the providers listing (`key_format`).
    pub fn describe(&self) -> String {
        match self.prefix {
            Some(p) => format!("{p}..."),
            None => "any".to_string(),
        }
    }
}
