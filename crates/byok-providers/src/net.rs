//! Connecting to user-supplied endpoints under the outbound target policy.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use byok_core::CoreError;
use byok_core::policy::{TargetError, TargetPolicy};

/// A user endpoint whose every resolved address passed the policy.
#[derive(Debug, Clone)]
pub struct CheckedEndpoint {
    /// Host name as written (brackets removed for IPv6 literals).
    pub host: String,
    /// The address connections go to; `None` for IP literals (nothing to pin).
    pub pinned: Option<SocketAddr>,
}

/// Resolves `endpoint`'s host once and checks every address against `policy`.
pub async fn check_endpoint(
    policy: &TargetPolicy,
    endpoint: &str,
    resolve_timeout: Duration,
) -> Result<CheckedEndpoint, CoreError> {
    let url = url::Url::parse(endpoint).map_err(|_| TargetError::InvalidUrl)?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(TargetError::InvalidUrl.into());
    }
    let host = url.host_str().ok_or(TargetError::InvalidUrl)?;
    let port = url.port_or_known_default().ok_or(TargetError::InvalidUrl)?;
    let bare = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let literal = bare.parse::<IpAddr>().ok();
    let addrs: Vec<SocketAddr> = match literal {
        Some(ip) => vec![SocketAddr::new(ip, port)],
        None => tokio::time::timeout(
            resolve_timeout,
            tokio::net::lookup_host((bare.as_str(), port)),
        )
        .await
        .ok()
        .and_then(Result::ok)
        .map(Iterator::collect)
        .unwrap_or_default(),
    };
    let ips: Vec<IpAddr> = addrs.iter().map(SocketAddr::ip).collect();
    policy.check(&bare, &ips)?;
    Ok(CheckedEndpoint {
        pinned: if literal.is_some() {
            None
        } else {
            addrs.first().copied()
        },
        host: bare,
    })
}

/// A `reqwest` client builder with this workspace's TLS crypto (ring) in place: reqwest 0.13
/// uses the process-wide rustls provider and, without one, panics when a client is built.
/// Installing is idempotent (a provider already installed by the embedder is kept).
pub fn http_client_builder() -> reqwest::ClientBuilder {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
}

/// Applies the pin to a client builder. No proxy: a proxy would resolve the name itself and
/// undo the pinning.
pub fn pin(builder: reqwest::ClientBuilder, checked: &CheckedEndpoint) -> reqwest::ClientBuilder {
    let b = builder.no_proxy();
    match checked.pinned {
        Some(addr) => b.resolve(&checked.host, addr),
        None => b,
    }
}
