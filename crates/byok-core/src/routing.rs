//! Model routing: which provider serves a requested model name, and under which name.
//!
//! The rule, in order:
//! 1. an operator alias (`BYOK_MODEL_ALIASES`, `alias=target`) replaces the requested name;
//! 2. `provider/model` with a known provider id (`openai/gpt-4o`, `groq/llama-3.3-70b-versatile`,
//!    `openrouter/anthropic/claude-sonnet-4.5`) selects that provider, the rest is the model;
//! 3. a bare name maps by family: `claude-*` → anthropic; `gpt-*`, `chatgpt-*`, `o1*`, `o3*`,
//!    `o4*` → openai; `command*` → cohere; `sonar*` → perplexity;
//! 4. anything else (`meta-llama/llama-3.3-70b-instruct`, an unknown bare name) can only be
//!    served by the system default, and only when that default is OpenRouter (it knows every
//!    vendor's models by `vendor/model`); otherwise it is an unknown model (404).
//!
//! When the system default serves a request, the model is renamed to its naming: for OpenRouter
//! `vendor/model` with Anthropic's dated names shortened (`claude-sonnet-4-5-20250929` →
//! `anthropic/claude-sonnet-4.5`, `claude-3-5-haiku-latest` → `anthropic/claude-3.5-haiku`).

use std::collections::HashMap;

use crate::domain::ProviderId;
use crate::error::CoreError;

/// Where a requested model goes, before credentials are considered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutedModel {
    /// The provider the name selects; `None` when only the system default can serve it.
    pub provider: Option<ProviderId>,
    /// The model name in that provider's naming.
    pub model: String,
}

/// The routing table: family rules plus operator aliases.
#[derive(Debug, Clone, Default)]
pub struct ModelRouter {
    aliases: HashMap<String, String>,
}

const MAX_MODEL_LEN: usize = 256;

impl ModelRouter {
    /// A router with the operator's model aliases (alias → `provider/model`).
    pub fn new(aliases: HashMap<String, String>) -> Self {
        Self { aliases }
    }

    /// Parses `alias=target,alias2=target2` (`BYOK_MODEL_ALIASES`).
    pub fn parse_aliases(spec: &str) -> Result<HashMap<String, String>, String> {
        let mut out = HashMap::new();
        for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (alias, target) = part
                .split_once('=')
                .map(|(a, t)| (a.trim(), t.trim()))
                .filter(|(a, t)| !a.is_empty() && !t.is_empty())
                .ok_or_else(|| format!("alias '{part}' must look like name=provider/model"))?;
            out.insert(alias.to_string(), target.to_string());
        }
        Ok(out)
    }

    /// Routes a requested model name (see the module documentation).
    pub fn route(&self, requested: &str) -> Result<RoutedModel, CoreError> {
        let requested = requested.trim();
        if requested.is_empty()
            || requested.len() > MAX_MODEL_LEN
            || requested
                .chars()
                .any(|c| c.is_control() || c.is_whitespace())
        {
            return Err(CoreError::InvalidInput {
                code: "invalid_model",
                message: "model must be a non-empty name without spaces".into(),
            });
        }
        let name = self
            .aliases
            .get(requested)
            .map_or(requested, String::as_str);
        if let Some((prefix, rest)) = name.split_once('/')
            && let Some(p) = ProviderId::ALL.into_iter().find(|p| p.as_str() == prefix)
        {
            if rest.is_empty() {
                return Err(unknown(requested));
            }
            return Ok(RoutedModel {
                provider: Some(p),
                model: rest.to_string(),
            });
        }
        Ok(RoutedModel {
            provider: family(name),
            model: name.to_string(),
        })
    }

    /// The model name the system default `system` should be asked for.
    /// `Err` when `system` cannot serve this model.
    pub fn system_model(
        &self,
        routed: &RoutedModel,
        system: ProviderId,
        requested: &str,
    ) -> Result<String, CoreError> {
        match routed.provider {
            Some(p) if p == system => Ok(routed.model.clone()),
            // OpenRouter knows these vendors' models under `vendor/model`, and any
            // `org/model` name a client gives it.
            Some(
                ProviderId::Anthropic
                | ProviderId::Openai
                | ProviderId::Cohere
                | ProviderId::Perplexity,
            )
            | None
                if system == ProviderId::Openrouter =>
            {
                Ok(openrouter_name(routed))
            }
            // Groq, Together, HuggingFace names differ from OpenRouter's, and custom/Ollama
            // models live only behind the user's endpoint: the default cannot serve them.
            _ => Err(unknown(requested)),
        }
    }
}

fn unknown(requested: &str) -> CoreError {
    let shown: String = requested.chars().take(80).collect();
    CoreError::NotFound {
        code: "unknown_model",
        message: format!(
            "model '{shown}' is not known: use provider/model (e.g. openai/gpt-4o) or a model \
             of a known family"
        ),
    }
}

/// Well-known models of a provider, as `GET /v1/models` and the console list them (any other
/// model name of a reachable provider works too). Custom and Ollama models live behind the
/// user's endpoint: none is known here.
pub fn known_models(p: ProviderId) -> &'static [&'static str] {
    match p {
        ProviderId::Anthropic => &[
            "claude-opus-4-1",
            "claude-sonnet-4-5",
            "claude-haiku-4-5",
            "claude-3-5-haiku-latest",
        ],
        ProviderId::Openai => &["gpt-4o", "gpt-4o-mini", "gpt-4.1", "o3-mini"],
        ProviderId::Groq => &["groq/llama-3.3-70b-versatile", "groq/llama-3.1-8b-instant"],
        ProviderId::Together => &["together/meta-llama/Llama-3.3-70B-Instruct-Turbo"],
        ProviderId::Perplexity => &["sonar", "sonar-pro"],
        ProviderId::Cohere => &["command-r-plus", "command-a-03-2025"],
        ProviderId::Huggingface => &["huggingface/meta-llama/Llama-3.1-8B-Instruct"],
        ProviderId::Openrouter => &[
            "claude-sonnet-4-5",
            "gpt-4o",
            "openrouter/meta-llama/llama-3.3-70b-instruct",
        ],
        ProviderId::OllamaCloud => &["ollama_cloud/gpt-oss:120b", "ollama_cloud/gpt-oss:20b"],
        ProviderId::Ollama | ProviderId::Custom => &[],
    }
}

/// The provider a bare model name belongs to, by family prefix.
pub fn family(model: &str) -> Option<ProviderId> {
    let m = model.to_ascii_lowercase();
    let starts = |p: &str| m.starts_with(p);
    if starts("claude-") {
        Some(ProviderId::Anthropic)
    } else if starts("gpt-") || starts("chatgpt-") || starts("o1") || starts("o3") || starts("o4") {
        Some(ProviderId::Openai)
    } else if starts("command") {
        Some(ProviderId::Cohere)
    } else if starts("sonar") {
        Some(ProviderId::Perplexity)
    } else {
        None
    }
}

/// OpenRouter's name for a model: `vendor/model`, Anthropic names shortened.
fn openrouter_name(routed: &RoutedModel) -> String {
    let vendor = match routed.provider {
        Some(ProviderId::Anthropic) => Some("anthropic"),
        Some(ProviderId::Openai) => Some("openai"),
        Some(ProviderId::Cohere) => Some("cohere"),
        Some(ProviderId::Perplexity) => Some("perplexity"),
        _ => None,
    };
    match vendor {
        Some("anthropic") => format!("anthropic/{}", short_claude_name(&routed.model)),
        Some(v) => format!("{v}/{}", routed.model),
        None => routed.model.clone(),
    }
}

/// `claude-sonnet-4-5-20250929` → `claude-sonnet-4.5`; `claude-3-5-haiku-latest` →
/// `claude-3.5-haiku`; names without a date or dashed version stay as they are.
pub fn short_claude_name(model: &str) -> String {
    let mut parts: Vec<&str> = model.split('-').collect();
    if parts
        .last()
        .is_some_and(|p| *p == "latest" || (p.len() == 8 && p.bytes().all(|b| b.is_ascii_digit())))
    {
        parts.pop();
    }
    let single_digit = |s: &str| s.len() == 1 && s.as_bytes()[0].is_ascii_digit();
    let mut out: Vec<String> = Vec::with_capacity(parts.len());
    let mut i = 0;
    while i < parts.len() {
        if i + 1 < parts.len() && single_digit(parts[i]) && single_digit(parts[i + 1]) {
            out.push(format!("{}.{}", parts[i], parts[i + 1]));
            i += 2;
        } else {
            out.push(parts[i].to_string());
            i += 1;
        }
    }
    out.join("-")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn router() -> ModelRouter {
        ModelRouter::new(
            ModelRouter::parse_aliases(
                "sonnet=anthropic/claude-sonnet-4-5, fast=groq/llama-3.3-70b-versatile",
            )
            .unwrap(),
        )
    }

    #[test]
    fn explicit_family_alias_and_unknown() {
        let r = router();
        let p = |m: &str| r.route(m).unwrap();
        assert_eq!(p("openai/gpt-4o").provider, Some(ProviderId::Openai));
        assert_eq!(p("openai/gpt-4o").model, "gpt-4o");
        assert_eq!(p("groq/llama-3.3-70b").provider, Some(ProviderId::Groq));
        assert_eq!(
            p("openrouter/anthropic/claude-sonnet-4.5").model,
            "anthropic/claude-sonnet-4.5"
        );
        assert_eq!(
            p("claude-sonnet-4-5-20250929").provider,
            Some(ProviderId::Anthropic)
        );
        assert_eq!(p("gpt-4o-mini").provider, Some(ProviderId::Openai));
        assert_eq!(p("o3-mini").provider, Some(ProviderId::Openai));
        assert_eq!(p("command-r-plus").provider, Some(ProviderId::Cohere));
        assert_eq!(p("sonar-pro").provider, Some(ProviderId::Perplexity));
        assert_eq!(p("sonnet").provider, Some(ProviderId::Anthropic));
        assert_eq!(p("sonnet").model, "claude-sonnet-4-5");
        assert_eq!(p("fast").provider, Some(ProviderId::Groq));
        assert_eq!(p("meta-llama/llama-3.3-70b-instruct").provider, None);
        // The prefix is the whole provider id: `ollama_cloud/…` is not `ollama`.
        assert_eq!(
            p("ollama_cloud/gpt-oss:120b").provider,
            Some(ProviderId::OllamaCloud)
        );
        assert_eq!(p("ollama_cloud/gpt-oss:120b").model, "gpt-oss:120b");
        assert_eq!(p("ollama/llama3.2").provider, Some(ProviderId::Ollama));
        assert!(r.route("").is_err());
        assert!(r.route("a b").is_err());
        assert!(r.route("openai/").is_err());
        assert!(ModelRouter::parse_aliases("novalue").is_err());
    }

    #[test]
    fn system_default_naming() {
        let r = router();
        let sys = |m: &str, d: ProviderId| r.system_model(&r.route(m).unwrap(), d, m);
        assert_eq!(
            sys("claude-sonnet-4-5-20250929", ProviderId::Openrouter).unwrap(),
            "anthropic/claude-sonnet-4.5"
        );
        assert_eq!(
            sys("claude-3-5-haiku-latest", ProviderId::Openrouter).unwrap(),
            "anthropic/claude-3.5-haiku"
        );
        assert_eq!(
            sys("gpt-4o", ProviderId::Openrouter).unwrap(),
            "openai/gpt-4o"
        );
        assert_eq!(
            sys("meta-llama/llama-3.3-70b-instruct", ProviderId::Openrouter).unwrap(),
            "meta-llama/llama-3.3-70b-instruct"
        );
        assert_eq!(sys("gpt-4o", ProviderId::Openai).unwrap(), "gpt-4o");
        assert!(sys("mystery-model", ProviderId::Openai).is_err());
        assert!(
            sys("claude-x", ProviderId::Openai).is_err(),
            "not an aggregator"
        );
        assert!(sys("groq/llama-3.3-70b-versatile", ProviderId::Openrouter).is_err());
        assert!(sys("custom/mine", ProviderId::Openrouter).is_err());
        assert_eq!(short_claude_name("claude-opus-4-1"), "claude-opus-4.1");
        assert_eq!(
            short_claude_name("claude-sonnet-4-20250514"),
            "claude-sonnet-4"
        );
        assert_eq!(
            short_claude_name("claude-3-haiku-20240307"),
            "claude-3-haiku"
        );
    }
}
