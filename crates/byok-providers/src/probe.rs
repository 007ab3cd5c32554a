//! The HTTP key probe.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use byok_core::policy::TargetPolicy;
use byok_core::ports::{KeyProber, ProbeOutcome};
use byok_core::{ApiKey, CoreError, ProviderId, TestStatus};
use serde_json::json;

use crate::catalogue::{AuthStyle, Catalogue, ProviderSpec};

/// Probe settings.
#[derive(Debug, Clone)]
pub struct ProbeOptions {
    /// Whole-request timeout.
    pub timeout: Duration,
    /// TCP connect timeout.
    pub connect_timeout: Duration,
}

impl Default for ProbeOptions {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(5),
        }
    }
}

/// Probes provider keys over HTTP(S).
#[derive(Debug, Clone)]
pub struct HttpKeyProber {
    catalogue: Catalogue,
    policy: TargetPolicy,
    options: ProbeOptions,
    /// Client for operator-configured (trusted) base URLs.
    client: reqwest::Client,
}

const ANTHROPIC_VERSION: &str = "2023-06-01";

fn builder(options: &ProbeOptions) -> reqwest::ClientBuilder {
    crate::net::http_client_builder()
        .timeout(options.timeout)
        .connect_timeout(options.connect_timeout)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("byok-gateway/", env!("CARGO_PKG_VERSION")))
}

impl HttpKeyProber {
    pub fn new(
        catalogue: Catalogue,
        policy: TargetPolicy,
        options: ProbeOptions,
    ) -> Result<Self, reqwest::Error> {
        let client = builder(&options).build()?;
        Ok(Self {
            catalogue,
            policy,
            options,
            client,
        })
    }

    /// A client pinned to a checked address of a user-supplied endpoint.
    async fn pinned_client(&self, endpoint: &str) -> Result<reqwest::Client, CoreError> {
        let addr = crate::net::check_endpoint(&self.policy, endpoint, self.options.connect_timeout)
            .await?;
        crate::net::pin(builder(&self.options), &addr)
            .build()
            .map_err(|e| CoreError::Internal(Box::new(e)))
    }

    fn request(
        &self,
        client: &reqwest::Client,
        spec: &ProviderSpec,
        url: String,
        key: &ApiKey,
    ) -> reqwest::RequestBuilder {
        let mut req = match spec.probe.body {
            Some(body) => client
                .post(url)
                .header("content-type", "application/json")
                .body(body),
            None => client.get(url),
        };
        req = match spec.auth {
            AuthStyle::Bearer => req.bearer_auth(key.expose()),
            AuthStyle::AnthropicHeaders => match sensitive(key.expose()) {
                Some(v) => req
                    .header("x-api-key", v)
                    .header("anthropic-version", ANTHROPIC_VERSION),
                None => req,
            },
        };
        req
    }
}

/// A header value marked sensitive (kept out of `Debug` output and HPACK tables).
pub(crate) fn sensitive(value: &str) -> Option<reqwest::header::HeaderValue> {
    let mut v = reqwest::header::HeaderValue::from_str(value).ok()?;
    v.set_sensitive(true);
    Some(v)
}

fn host_of(base: &str) -> String {
    url::Url::parse(base)
        .ok()
        .and_then(|u| u.host_str().map(str::to_owned))
        .unwrap_or_default()
}

/// Maps a probe's HTTP status to an outcome.
pub(crate) fn classify(
    provider: ProviderId,
    status: u16,
    accepted: &[u16],
) -> (TestStatus, String) {
    let name = provider.display_name();
    match status {
        200..=299 => (TestStatus::Valid, format!("{name} accepted the key")),
        s if accepted.contains(&s) => (TestStatus::Valid, format!("{name} accepted the key")),
        401 | 403 => (
            TestStatus::Invalid,
            format!("{name} rejected the key (HTTP {status})"),
        ),
        429 => (
            TestStatus::Error,
            format!("{name} is rate limiting requests (HTTP 429); try again later"),
        ),
        404 => (
            TestStatus::Error,
            format!("{name} probe endpoint not found (HTTP 404); check the endpoint"),
        ),
        500..=599 => (
            TestStatus::Error,
            format!("{name} failed to answer (HTTP {status}); try again later"),
        ),
        _ => (
            TestStatus::Error,
            format!("{name} answered the probe unexpectedly (HTTP {status})"),
        ),
    }
}

#[async_trait]
impl KeyProber for HttpKeyProber {
    async fn probe(
        &self,
        provider: ProviderId,
        key: &ApiKey,
        endpoint: Option<&str>,
    ) -> Result<ProbeOutcome, CoreError> {
        let spec = self.catalogue.get(provider);
        let (client, probe_url) = match (endpoint, spec.base_url.as_deref()) {
            (Some(e), _) => (
                self.pinned_client(e).await?,
                format!("{}{}", e.trim_end_matches('/'), spec.probe.path),
            ),
            (None, Some(b)) => (
                self.client.clone(),
                match spec.probe.default_url {
                    Some(abs) if !spec.base_overridden => abs.to_string(),
                    _ => format!("{b}{}", spec.probe.path),
                },
            ),
            (None, None) => {
                return Ok(ProbeOutcome {
                    status: TestStatus::Unknown,
                    message: "no endpoint is configured for this key".into(),
                    details: json!({}),
                });
            }
        };
        let host = host_of(&probe_url);
        let started = Instant::now();
        let result = self.request(&client, spec, probe_url, key).send().await;
        let latency_ms = started.elapsed().as_millis() as u64;
        Ok(match result {
            Ok(resp) => {
                let status = resp.status().as_u16();
                let retry_after = resp
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                let (status_kind, message) =
                    classify(provider, status, spec.probe.accepted_statuses);
                let mut details = json!({
                    "http_status": status, "latency_ms": latency_ms, "endpoint_host": host
                });
                if let Some(r) = retry_after {
                    details["retry_after"] = json!(r);
                }
                ProbeOutcome {
                    status: status_kind,
                    message,
                    details,
                }
            }
            Err(e) => {
                let message = if e.is_timeout() {
                    format!(
                        "{} did not answer within {} s",
                        provider.display_name(),
                        self.options.timeout.as_secs()
                    )
                } else if e.is_connect() {
                    format!("could not connect to {host}")
                } else {
                    format!("the request to {host} failed")
                };
                ProbeOutcome {
                    status: TestStatus::Error,
                    message,
                    details: json!({ "latency_ms": latency_ms, "endpoint_host": host }),
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification() {
        let p = ProviderId::Openai;
        assert_eq!(classify(p, 200, &[]).0, TestStatus::Valid);
        assert_eq!(classify(p, 401, &[]).0, TestStatus::Invalid);
        assert_eq!(classify(p, 403, &[]).0, TestStatus::Invalid);
        assert_eq!(classify(p, 429, &[]).0, TestStatus::Error);
        assert_eq!(classify(p, 503, &[]).0, TestStatus::Error);
        assert_eq!(classify(p, 400, &[]).0, TestStatus::Error);
        assert_eq!(classify(p, 400, &[400]).0, TestStatus::Valid);
    }
}
