//! Errors on `/v1/*`, in the format of the API the client speaks.

use actix_web::HttpResponse;
use actix_web::http::StatusCode;
use byok_core::{CoreError, CryptoError, StoreError};
use serde_json::json;

/// Which API the client speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ingress {
    Anthropic,
    OpenAi,
}

/// An error on `/v1/*`.
#[derive(Debug, Clone)]
pub struct GatewayError {
    pub status: StatusCode,
    pub message: String,
    pub retry_after: Option<String>,
    /// The service's own stable code, when it has one (`forbidden_target`, …): OpenAI's
    /// `error.code`, and `error.code` beside Anthropic's `type`.
    pub code: Option<&'static str>,
}

impl GatewayError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            retry_after: None,
            code: None,
        }
    }

    pub fn with_code(mut self, code: &'static str) -> Self {
        self.code = Some(code);
        self
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    /// Anthropic's `error.type` for this status.
    fn anthropic_type(&self) -> &'static str {
        match self.status.as_u16() {
            400 | 409 | 422 => "invalid_request_error",
            401 => "authentication_error",
            403 => "permission_error",
            404 => "not_found_error",
            413 => "request_too_large",
            429 => "rate_limit_error",
            503 | 529 => "overloaded_error",
            504 => "timeout_error",
            _ => "api_error",
        }
    }

    /// OpenAI's `error.type` and `error.code` for this status.
    fn openai_type(&self) -> (&'static str, Option<&'static str>) {
        match self.status.as_u16() {
            400 | 409 | 413 | 422 => ("invalid_request_error", None),
            401 => ("authentication_error", Some("invalid_api_key")),
            403 => ("permission_error", None),
            404 => ("invalid_request_error", Some("model_not_found")),
            429 => ("rate_limit_error", Some("rate_limit_exceeded")),
            503 => ("server_error", Some("service_unavailable")),
            504 => ("server_error", Some("timeout")),
            _ => ("server_error", None),
        }
    }

    /// The stable code of this error: the service's own, else the one OpenAI clients read,
    /// else one named after the status (`bad_request`, `bad_gateway`, `gateway_error`).
    pub fn stable_code(&self) -> &'static str {
        self.code
            .or(self.openai_type().1)
            .unwrap_or(match self.status.as_u16() {
                400 | 409 | 413 | 422 => "bad_request",
                502 => "bad_gateway",
                _ => "gateway_error",
            })
    }

    pub fn response(&self, ingress: Ingress) -> HttpResponse {
        let mut resp = HttpResponse::build(self.status);
        if let Some(r) = &self.retry_after {
            resp.insert_header(("retry-after", r.as_str()));
        }
        let body = match ingress {
            Ingress::Anthropic => match self.code {
                Some(code) => json!({
                    "type": "error",
                    "error": {"type": self.anthropic_type(), "message": self.message, "code": code},
                }),
                None => json!({
                    "type": "error",
                    "error": {"type": self.anthropic_type(), "message": self.message},
                }),
            },
            Ingress::OpenAi => {
                let (kind, code) = self.openai_type();
                let code = self.code.or(code);
                json!({"error": {"message": self.message, "type": kind, "param": null, "code": code}})
            }
        };
        resp.json(body)
    }
}

/// What the caller was doing when core refused: chooses the wording of a refusal, never its
/// status or code (those are decided once, in [`GatewayError::from_core`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Doing {
    /// Resolving the requested model to a route (`RouteResolver::resolve`).
    ResolvingModel,
    /// Anything else (an execution server for an orchestrated request, the model list, …).
    Other,
}

impl From<CoreError> for GatewayError {
    fn from(e: CoreError) -> Self {
        Self::from_core(e, Doing::Other)
    }
}

impl GatewayError {
    /// A core error as the client sees it: status, code and `retry-after` as
    /// [`crate::error::decide`] chose them; only the wording is the gateway's (`doing` words a
    /// tier refusal for the situation).
    pub fn from_core(e: CoreError, doing: Doing) -> Self {
        crate::error::log_cause(&e);
        let d = crate::error::decide(&e, crate::error::Surface::Gateway);
        let message = match e {
            CoreError::UpgradeRequired { required, .. } => match doing {
                Doing::ResolvingModel => format!(
                    "this model needs your own key, which requires the {required} tier or higher"
                ),
                Doing::Other => format!("this requires the {required} tier or higher"),
            },
            CoreError::RateLimited { retry_after_secs } => {
                format!("rate limit reached; retry in {retry_after_secs} s")
            }
            CoreError::Unauthenticated => "invalid or expired gateway token".into(),
            CoreError::OriginRefused => "this origin may not send this request".into(),
            CoreError::InvalidInput { message, .. }
            | CoreError::NotFound { message, .. }
            | CoreError::Conflict { message, .. }
            | CoreError::Forbidden { message, .. }
            | CoreError::Unavailable { message, .. } => message,
            CoreError::Exec(e) => e.to_string(),
            CoreError::TargetForbidden(t) => t.to_string(),
            CoreError::Crypto(CryptoError::UnknownKey | CryptoError::Malformed) => {
                "your stored key cannot be decrypted with the service's ENCRYPTION_KEY; \
                 add it again or ask the operator"
                    .into()
            }
            CoreError::Store(StoreError::Unavailable(_)) => {
                "the service's database is unavailable".into()
            }
            CoreError::Store(StoreError::Conflict(_)) => {
                "the request conflicts with stored data".into()
            }
            CoreError::Crypto(_) | CoreError::Store(_) | CoreError::Internal(_) => {
                "internal error".into()
            }
        };
        Self {
            status: d.status,
            message,
            retry_after: d.retry_after.map(|s| s.to_string()),
            code: d.service_code.then_some(d.code),
        }
    }
}

pub use byok_providers::redact::scrub;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tier_refusals_are_worded_by_the_caller_with_one_status() {
        let refusal = || CoreError::UpgradeRequired {
            current: byok_core::Tier::Free,
            required: byok_core::Tier::Starter,
        };
        let model = GatewayError::from_core(refusal(), Doing::ResolvingModel);
        let other = GatewayError::from(refusal());
        assert_eq!(
            model.message,
            "this model needs your own key, which requires the starter tier or higher"
        );
        assert_eq!(other.message, "this requires the starter tier or higher");
        assert_eq!((model.status, model.code), (other.status, other.code));
        assert_eq!(model.status, StatusCode::FORBIDDEN);
    }

    #[test]
    fn the_gateway_renders_the_one_decision() {
        for (e, status, code) in crate::error::tests::table() {
            let d = crate::error::decide(&e, crate::error::Surface::Gateway);
            let service_code = d.service_code;
            let g = GatewayError::from(e);
            // The same as the management API's, but for core validation errors (400 here) and
            // a model no key can serve (503 here, 409 there).
            let status = if status == 422 && !service_code {
                400
            } else if code == "no_credential" {
                503
            } else {
                status
            };
            assert_eq!(g.status.as_u16(), status, "{code}");
            assert_eq!(g.status, d.status);
            assert_eq!(g.code, service_code.then_some(code));
        }
    }

    #[test]
    fn error_bodies_per_ingress() {
        let e = GatewayError::new(StatusCode::TOO_MANY_REQUESTS, "slow down");
        let a = e.response(Ingress::Anthropic);
        assert_eq!(a.status(), StatusCode::TOO_MANY_REQUESTS);
    }
}
