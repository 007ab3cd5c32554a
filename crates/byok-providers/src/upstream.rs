//! The gateway's upstream HTTP client: one pooled client for operator-configured providers,
//! pinned (and briefly cached) clients for user endpoints, timeouts, no redirects.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use byok_core::policy::TargetPolicy;
use byok_core::{ApiKey, CoreError, ProviderId};

use crate::catalogue::{AuthStyle, Catalogue, ChatWire};
use crate::probe::sensitive;

/// A provider's HTTP response (status, headers, body stream).
pub type UpstreamResponse = reqwest::Response;

/// Upstream timeouts.
#[derive(Debug, Clone)]
pub struct UpstreamOptions {
    pub connect_timeout: Duration,
    /// Streams: longest wait for the response head and between two reads of the body.
    pub idle_timeout: Duration,
    /// Whole-request limit for non-streaming calls.
    pub request_timeout: Duration,
    /// Longest a stream may run in all.
    pub max_stream: Duration,
}

impl Default for UpstreamOptions {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(300),
            request_timeout: Duration::from_secs(600),
            max_stream: Duration::from_secs(3600),
        }
    }
}

/// Where and how to call a provider's chat API.
#[derive(Debug, Clone)]
pub struct ChatTarget {
    pub provider: ProviderId,
    pub wire: ChatWire,
    /// Base URL without trailing slash (the catalogue's, the operator's, or the user's).
    pub base: String,
    pub path: &'static str,
    pub auth: AuthStyle,
    /// Whether `base` is a user endpoint (subject to the target policy).
    pub user_endpoint: bool,
}

impl ChatTarget {
    pub fn url(&self) -> String {
        format!("{}{}", self.base, self.path)
    }

    /// The count-tokens URL (Anthropic only).
    pub fn count_tokens_url(&self) -> Option<String> {
        (self.wire == ChatWire::Anthropic)
            .then(|| format!("{}/v1/messages/count_tokens", self.base))
    }
}

/// Why an upstream call produced no response.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error(transparent)]
    Refused(CoreError),
    #[error("the provider did not answer in time")]
    Timeout,
    #[error("could not connect to the provider")]
    Connect,
    #[error("the request to the provider failed")]
    Other,
}

const PINNED_TTL: Duration = Duration::from_secs(60);
const MAX_PINNED: usize = 1024;

/// The gateway's upstream client.
#[derive(Debug)]
pub struct UpstreamClient {
    catalogue: Catalogue,
    policy: TargetPolicy,
    options: UpstreamOptions,
    client: reqwest::Client,
    pinned: Mutex<HashMap<String, (Instant, reqwest::Client)>>,
    /// `DEFAULT_LLM_BASE_URL`: the system default's base URL, if the operator set one.
    system_base: Option<String>,
}

fn builder(options: &UpstreamOptions) -> reqwest::ClientBuilder {
    crate::net::http_client_builder()
        .connect_timeout(options.connect_timeout)
        .redirect(reqwest::redirect::Policy::none())
        .tcp_nodelay(true)
        .pool_idle_timeout(Duration::from_secs(90))
        .user_agent(concat!("byok-gateway/", env!("CARGO_PKG_VERSION")))
}

impl UpstreamClient {
    pub fn new(
        catalogue: Catalogue,
        policy: TargetPolicy,
        options: UpstreamOptions,
        system_base: Option<String>,
    ) -> Result<Self, reqwest::Error> {
        let client = builder(&options).build()?;
        Ok(Self {
            catalogue,
            policy,
            options,
            client,
            pinned: Mutex::new(HashMap::new()),
            system_base: system_base.map(|b| b.trim_end_matches('/').to_string()),
        })
    }

    pub fn catalogue(&self) -> &Catalogue {
        &self.catalogue
    }

    pub fn options(&self) -> &UpstreamOptions {
        &self.options
    }

    /// The chat target for a route: the user's endpoint if any, else (for the system
    /// default) `DEFAULT_LLM_BASE_URL`, else the catalogue's base URL.
    pub fn target(
        &self,
        provider: ProviderId,
        endpoint: Option<&str>,
        system: bool,
    ) -> Result<ChatTarget, CoreError> {
        let spec = self.catalogue.get(provider);
        let (base, user_endpoint) = match (endpoint, system, &self.system_base) {
            (Some(e), _, _) => (e.trim_end_matches('/').to_string(), true),
            (None, true, Some(b)) => (b.clone(), false),
            (None, _, _) => match &spec.base_url {
                Some(b) => (b.clone(), false),
                None => {
                    return Err(CoreError::Unavailable {
                        code: "no_endpoint",
                        message: format!(
                            "no endpoint is configured for your {} key; add it again with an endpoint",
                            provider.display_name()
                        ),
                    });
                }
            },
        };
        Ok(ChatTarget {
            provider,
            wire: spec.chat,
            base,
            path: spec.chat_path,
            auth: spec.auth,
            user_endpoint,
        })
    }

    /// Applies the outbound target policy to a user's endpoint (others are trusted), for
    /// callers that hand the URL to someone else (the orchestrator) instead of calling it.
    pub async fn check_target(&self, target: &ChatTarget) -> Result<(), CoreError> {
        if target.user_endpoint {
            crate::net::check_endpoint(&self.policy, &target.base, self.options.connect_timeout)
                .await?;
        }
        Ok(())
    }

    async fn client_for(&self, target: &ChatTarget) -> Result<reqwest::Client, CoreError> {
        if !target.user_endpoint {
            return Ok(self.client.clone());
        }
        if let Ok(cache) = self.pinned.lock()
            && let Some((at, c)) = cache.get(&target.base)
            && at.elapsed() < PINNED_TTL
        {
            return Ok(c.clone());
        }
        let checked =
            crate::net::check_endpoint(&self.policy, &target.base, self.options.connect_timeout)
                .await?;
        let client = crate::net::pin(builder(&self.options), &checked)
            .build()
            .map_err(|e| CoreError::Internal(Box::new(e)))?;
        if let Ok(mut cache) = self.pinned.lock() {
            if cache.len() >= MAX_PINNED {
                cache.clear();
            }
            cache.insert(target.base.clone(), (Instant::now(), client.clone()));
        }
        Ok(client)
    }

    /// POSTs `body` (JSON) to `url` with the provider's auth and `headers`. Streaming calls get
    /// no whole-request timeout (the idle timeout still applies between reads).
    pub async fn post(
        &self,
        target: &ChatTarget,
        url: String,
        key: Option<&ApiKey>,
        headers: &[(&'static str, String)],
        body: bytes::Bytes,
        stream: bool,
    ) -> Result<reqwest::Response, UpstreamError> {
        let client = self
            .client_for(target)
            .await
            .map_err(UpstreamError::Refused)?;
        let mut req = client
            .post(url)
            .header("content-type", "application/json")
            .body(body);
        if !stream {
            req = req.timeout(self.options.request_timeout);
        }
        if stream {
            req = req.header("accept", "text/event-stream");
        }
        if let Some(key) = key.filter(|k| !k.expose().is_empty()) {
            req = match target.auth {
                AuthStyle::Bearer => req.bearer_auth(key.expose()),
                AuthStyle::AnthropicHeaders => match sensitive(key.expose()) {
                    Some(v) => req.header("x-api-key", v),
                    None => req,
                },
            };
        }
        for (k, v) in headers {
            req = req.header(*k, v.as_str());
        }
        let classify = |e: reqwest::Error| {
            if e.is_timeout() {
                UpstreamError::Timeout
            } else if e.is_connect() {
                UpstreamError::Connect
            } else {
                UpstreamError::Other
            }
        };
        if stream {
            // Streams have no whole-request limit; the response head must still arrive within
            // the idle timeout (the caller applies it between body reads too).
            tokio::time::timeout(self.options.idle_timeout, req.send())
                .await
                .map_err(|_| UpstreamError::Timeout)?
                .map_err(classify)
        } else {
            req.send().await.map_err(classify)
        }
    }
}
