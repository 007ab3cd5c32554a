//! The provider catalogue.

use byok_core::ProviderId;

/// How the key travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthStyle {
    /// `Authorization: Bearer <key>`.
    Bearer,
    /// `x-api-key: <key>` plus `anthropic-version`.
    AnthropicHeaders,
}

/// The wire format of a provider's chat endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChatWire {
    /// `POST {base}{chat_path}` in OpenAI Chat Completions format.
    OpenAi,
    /// `POST {base}/v1/messages` in Anthropic Messages format.
    Anthropic,
}

/// The request that checks a key without spending tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeSpec {
    /// `GET` unless a body is given (then `POST` with that JSON body).
    pub path: &'static str,
    /// An absolute probe URL used while the base URL is the built-in one (HuggingFace and
    /// Cohere check keys on a different host than they serve chat on).
    pub default_url: Option<&'static str>,
    pub body: Option<&'static str>,
    /// Non-2xx statuses that still prove the key was accepted (the request itself was refused).
    pub accepted_statuses: &'static [u16],
}

/// One catalogue entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderSpec {
    pub id: ProviderId,
    /// Base URL without trailing slash; `None` when the user must supply an endpoint.
    pub base_url: Option<String>,
    /// Whether `base_url` came from `BYOK_PROVIDER_<ID>_BASE_URL`.
    pub base_overridden: bool,
    pub auth: AuthStyle,
    pub probe: ProbeSpec,
    /// Chat wire format and path under the base URL (or under the user's endpoint).
    pub chat: ChatWire,
    pub chat_path: &'static str,
}

const fn get(path: &'static str) -> ProbeSpec {
    ProbeSpec {
        path,
        default_url: None,
        body: None,
        accepted_statuses: &[],
    }
}

const fn get_at(url: &'static str, path: &'static str) -> ProbeSpec {
    ProbeSpec {
        path,
        default_url: Some(url),
        body: None,
        accepted_statuses: &[],
    }
}

fn builtin(id: ProviderId) -> ProviderSpec {
    use AuthStyle::*;
    let (base, auth, probe) = match id {
        ProviderId::Openai => (Some("https://api.openai.com/v1"), Bearer, get("/models")),
        ProviderId::Anthropic => (
            Some("https://api.anthropic.com"),
            AnthropicHeaders,
            get("/v1/models"),
        ),
        // Chat through the HuggingFace router (OpenAI-compatible); keys are checked on the hub.
        ProviderId::Huggingface => (
            Some("https://router.huggingface.co/v1"),
            Bearer,
            get_at("https://huggingface.co/api/whoami-v2", "/api/whoami-v2"),
        ),
        // Chat through Cohere's OpenAI-compatible API; keys are checked on its native API.
        ProviderId::Cohere => (
            Some("https://api.cohere.ai/compatibility/v1"),
            Bearer,
            get_at("https://api.cohere.com/v1/models", "/models"),
        ),
        ProviderId::Together => (Some("https://api.together.xyz/v1"), Bearer, get("/models")),
        ProviderId::Perplexity => (
            Some("https://api.perplexity.ai"),
            Bearer,
            ProbeSpec {
                path: "/chat/completions",
                default_url: None,
                body: Some(r#"{"model":"byok-key-probe","messages":[]}"#),
                accepted_statuses: &[400, 422],
            },
        ),
        ProviderId::Groq => (
            Some("https://api.groq.com/openai/v1"),
            Bearer,
            get("/models"),
        ),
        ProviderId::Openrouter => (Some("https://openrouter.ai/api/v1"), Bearer, get("/key")),
        // No default: a user's own Ollama server is their endpoint (checked by the target
        // policy); an operator-run one is BYOK_PROVIDER_OLLAMA_BASE_URL.
        ProviderId::Ollama => (None, Bearer, get("/api/tags")),
        // Ollama's hosted service: the API of a local server, keys as bearer tokens. Its
        // `/api/tags` answers without a key (the legacy service probed it: every key was
        // "valid"), so the probe is a chat request for a model that does not exist: 401/403
        // for a bad key, 400/404 once the key was accepted; nothing runs, no token is spent.
        ProviderId::OllamaCloud => (
            Some("https://ollama.com"),
            Bearer,
            ProbeSpec {
                path: "/api/chat",
                default_url: None,
                body: Some(r#"{"model":"byok-key-probe","messages":[],"stream":false}"#),
                accepted_statuses: &[400, 404],
            },
        ),
        ProviderId::Custom => (None, Bearer, get("/models")),
    };
    let (chat, chat_path) = match id {
        ProviderId::Anthropic => (ChatWire::Anthropic, "/v1/messages"),
        // The Ollama endpoint is the server root; its OpenAI-compatible API is under /v1.
        ProviderId::Ollama | ProviderId::OllamaCloud => (ChatWire::OpenAi, "/v1/chat/completions"),
        _ => (ChatWire::OpenAi, "/chat/completions"),
    };
    ProviderSpec {
        id,
        base_url: base.map(str::to_owned),
        base_overridden: false,
        auth,
        probe,
        chat,
        chat_path,
    }
}

/// All providers, with operator overrides applied.
#[derive(Debug, Clone)]
pub struct Catalogue {
    specs: Vec<ProviderSpec>,
}

impl Catalogue {
    /// The built-in catalogue.
    pub fn builtin() -> Self {
        Self {
            specs: ProviderId::ALL.into_iter().map(builtin).collect(),
        }
    }

    /// The built-in catalogue with `BYOK_PROVIDER_<ID>_BASE_URL` overrides read through `var`.
    pub fn from_env(var: impl Fn(&str) -> Option<String>) -> Result<Self, String> {
        let mut cat = Self::builtin();
        for spec in &mut cat.specs {
            let name = format!(
                "BYOK_PROVIDER_{}_BASE_URL",
                spec.id.as_str().to_ascii_uppercase()
            );
            if let Some(v) = var(&name).filter(|v| !v.trim().is_empty()) {
                let v = v.trim().trim_end_matches('/').to_string();
                if !(v.starts_with("http://") || v.starts_with("https://")) {
                    return Err(format!("{name} must be an http(s) URL"));
                }
                spec.base_url = Some(v);
                spec.base_overridden = true;
            }
        }
        Ok(cat)
    }

    pub fn get(&self, id: ProviderId) -> &ProviderSpec {
        // The catalogue holds every ProviderId (built from ProviderId::ALL).
        self.specs
            .iter()
            .find(|s| s.id == id)
            .unwrap_or(&self.specs[0])
    }

    pub fn iter(&self) -> impl Iterator<Item = &ProviderSpec> {
        self.specs.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_provider_is_catalogued_and_overridable() {
        let cat = Catalogue::from_env(|k| {
            (k == "BYOK_PROVIDER_OPENROUTER_BASE_URL").then(|| "http://127.0.0.1:9/x/".to_string())
        })
        .unwrap();
        for id in ProviderId::ALL {
            assert_eq!(cat.get(id).id, id);
        }
        assert_eq!(
            cat.get(ProviderId::Openrouter).base_url.as_deref(),
            Some("http://127.0.0.1:9/x")
        );
        assert_eq!(cat.get(ProviderId::Openrouter).probe.path, "/key");
        assert!(cat.get(ProviderId::Custom).base_url.is_none());
        assert_eq!(cat.get(ProviderId::Anthropic).chat, ChatWire::Anthropic);
        assert_eq!(
            cat.get(ProviderId::Ollama).chat_path,
            "/v1/chat/completions"
        );
        let cloud = cat.get(ProviderId::OllamaCloud);
        assert_eq!(cloud.base_url.as_deref(), Some("https://ollama.com"));
        assert_eq!(cloud.probe.path, "/api/chat");
        assert!(cloud.probe.body.is_some(), "a POST: /api/tags is public");
        assert_eq!(cloud.auth, AuthStyle::Bearer);
        assert_eq!(cloud.chat_path, "/v1/chat/completions");
        assert!(
            Catalogue::from_env(|k| (k == "BYOK_PROVIDER_OLLAMA_CLOUD_BASE_URL")
                .then(|| "http://127.0.0.1:9".to_string()))
            .unwrap()
            .get(ProviderId::OllamaCloud)
            .base_overridden
        );
        assert!(Catalogue::from_env(|_| Some("ftp://x".into())).is_err());
    }
}
