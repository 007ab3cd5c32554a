//! One resolution per connection, checked by the outbound target policy.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use byok_core::execution::ExecError;
use byok_core::policy::TargetPolicy;

/// Resolves `host` once (within `timeout`), checks every address against `policy`, and returns
/// the host without IPv6 brackets and the first checked address, which the caller then connects
/// to (no second lookup a DNS answer could change).
pub(crate) async fn resolve_checked(
    policy: &TargetPolicy,
    host: &str,
    port: u16,
    timeout: Duration,
) -> Result<(String, SocketAddr), ExecError> {
    let bare = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let ips: Vec<IpAddr> = match bare.parse::<IpAddr>() {
        Ok(ip) => vec![ip],
        Err(_) => tokio::time::timeout(timeout, tokio::net::lookup_host((bare.as_str(), port)))
            .await
            .ok()
            .and_then(Result::ok)
            .map(|addrs| addrs.map(|a| a.ip()).collect())
            .unwrap_or_default(),
    };
    policy
        .check(&bare, &ips)
        .map_err(|e| ExecError::ForbiddenTarget(e.to_string()))?;
    let ip = ips
        .first()
        .copied()
        .ok_or_else(|| ExecError::Unreachable(format!("{bare} does not resolve")))?;
    Ok((bare, SocketAddr::new(ip, port)))
}
