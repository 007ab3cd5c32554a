//! What the provider answered, as the client's error: transport failures, error statuses
//! (the upstream message passed on, scrubbed, for a user's own key only) and answers too large
//! to translate.

use actix_web::http::StatusCode;
use byok_core::CredentialKind;
use byok_core::services::Route;
use byok_providers::upstream::UpstreamError;
use serde_json::Value;

use super::body::Refusal;
use super::errors::{GatewayError, scrub};

/// Largest upstream error body read (the rest is ignored).
pub(super) const MAX_ERROR_BODY: usize = 64 * 1024;

pub(super) fn upstream_error(e: UpstreamError, provider: &str) -> GatewayError {
    match e {
        UpstreamError::Refused(core) => core.into(),
        UpstreamError::Timeout => GatewayError::new(
            StatusCode::GATEWAY_TIMEOUT,
            format!("{provider} did not answer in time"),
        ),
        UpstreamError::Connect => GatewayError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("could not connect to {provider}"),
        ),
        UpstreamError::Other => GatewayError::new(
            StatusCode::BAD_GATEWAY,
            format!("the request to {provider} failed"),
        ),
    }
}

/// Maps an upstream error status to what the client gets.
pub(super) fn from_upstream_status(
    status: u16,
    body: &[u8],
    retry_after: Option<String>,
    route: &Route,
    request_id: &str,
) -> GatewayError {
    let provider = route.provider.display_name();
    let upstream_msg = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| {
            v.pointer("/error/message")
                .or_else(|| v.get("message"))
                .or_else(|| v.get("error"))
                .and_then(Value::as_str)
                .map(str::to_owned)
        })
        .map(|m| scrub(&m, route.api_key.as_ref().map(|k| k.expose())))
        .unwrap_or_default();
    let detail = match route.credential {
        _ if upstream_msg.is_empty() => String::new(),
        CredentialKind::User => format!(": {upstream_msg}"),
        // The operator's provider account is not the user's business: its messages (which
        // can quote the key, the account or its limits) go to the log, scrubbed.
        CredentialKind::System => {
            tracing::warn!(
                provider,
                status,
                upstream_message = %upstream_msg,
                "the provider refused a request made with the system default credential"
            );
            format!(" ({})", logged_under(request_id))
        }
    };
    let whose = match route.credential {
        CredentialKind::User => "your stored",
        CredentialKind::System => "the service's",
    };
    let (client_status, message) = match status {
        401 | 403 if route.credential == CredentialKind::System => {
            tracing::error!(
                provider,
                status,
                "the system default credential was rejected"
            );
            (
                StatusCode::BAD_GATEWAY,
                format!(
                    "{provider} rejected the service's default credential ({})",
                    logged_under(request_id)
                ),
            )
        }
        401 => (
            StatusCode::UNAUTHORIZED,
            format!("{provider} rejected {whose} API key (HTTP 401){detail}"),
        ),
        403 => (
            StatusCode::FORBIDDEN,
            format!("{provider} refused {whose} API key (HTTP 403){detail}"),
        ),
        429 => (
            StatusCode::TOO_MANY_REQUESTS,
            format!("{provider} is rate limiting {whose} API key{detail}"),
        ),
        404 => (
            StatusCode::NOT_FOUND,
            format!("{provider}: model or endpoint not found{detail}"),
        ),
        413 => (
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("{provider}: request too large{detail}"),
        ),
        400 | 409 | 422 => (
            StatusCode::BAD_REQUEST,
            format!("{provider} rejected the request{detail}"),
        ),
        502 | 503 | 529 => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{provider} is unavailable or overloaded (HTTP {status})"),
        ),
        504 => (
            StatusCode::GATEWAY_TIMEOUT,
            format!("{provider} timed out (HTTP 504)"),
        ),
        _ => (
            StatusCode::BAD_GATEWAY,
            format!("{provider} failed to answer (HTTP {status})"),
        ),
    };
    GatewayError {
        status: client_status,
        message,
        retry_after: if status == 429 { retry_after } else { None },
        code: None,
    }
}

/// Where a user is told to look for what the system default's provider said.
pub(super) fn logged_under(request_id: &str) -> String {
    format!("the details are in the service's log under request id {request_id}")
}

/// The client's error for a translated answer that could not be buffered.
pub(super) fn refused(why: Refusal, provider: &str, max_body: usize) -> GatewayError {
    match why {
        Refusal::TooLarge => GatewayError::new(
            StatusCode::BAD_GATEWAY,
            format!(
                "{provider}'s answer is too large to translate between API formats \
                 (limit: {max_body} bytes)"
            ),
        )
        .with_code("upstream_response_too_large"),
        Refusal::Busy => GatewayError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            message: "the gateway is holding too many large answers at the moment; retry shortly"
                .into(),
            retry_after: Some("1".into()),
            code: Some("response_buffer_exhausted"),
        },
        Refusal::Broken => GatewayError::new(
            StatusCode::BAD_GATEWAY,
            format!("{provider} sent an incomplete response"),
        ),
    }
}
