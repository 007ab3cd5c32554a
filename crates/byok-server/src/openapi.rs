//! The OpenAPI 3.1 document, generated from the handlers (committed as `openapi/openapi.json`).

use actix_web::{HttpResponse, get};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};

use crate::auth::SESSION_COOKIE;
use utoipa::{IntoResponses, Modify, OpenApi};

use crate::error::{ErrorBody, UpgradeRequiredBody};
use crate::routes::{byok, health, servers, tokens};

#[derive(Debug, OpenApi)]
#[openapi(
    info(
        title = "BYOK gateway",
        description = "Bring-your-own-key vault and gateway for LLM platforms. Errors on /api/v1 \
                       carry `detail` and a stable `code`."
    ),
    paths(
        health::healthz, health::readyz, health::metrics,
        byok::providers, byok::list_keys, byok::add_key, byok::delete_key, byok::test_key,
        byok::stats, byok::get_settings, byok::put_settings, byok::resolve,
        tokens::create, tokens::list, tokens::revoke,
        servers::list, servers::create, servers::default_server, servers::update, servers::remove,
        servers::test, servers::exec, servers::trust_host_key,
    ),
    components(schemas(ErrorBody, UpgradeRequiredBody)),
    modifiers(&Security),
    tags(
        (name = "byok", description = "Users' provider keys (legacy-compatible paths)"),
        (name = "tokens", description = "The caller's gateway tokens"),
        (name = "execution-servers", description = "Where the caller's agents run code (legacy-compatible paths)"),
        (name = "health", description = "Liveness and readiness"),
    )
)]
pub struct ApiDoc;

/// Errors every authenticated `/api/v1` operation can answer, declared once and listed in each
/// operation's `responses(...)` (the body is always [`ErrorBody`]).
#[derive(Debug, IntoResponses)]
pub enum ApiErrors {
    /// No credential was sent (`unauthenticated`, with `WWW-Authenticate: Bearer`), or the token
    /// is unknown, revoked or expired (`invalid_token`).
    #[response(
        status = 401,
        description = "no credential (`unauthenticated`), or an unknown, revoked or expired \
                       token (`invalid_token`)"
    )]
    Unauthenticated(ErrorBody),
    /// Anything unexpected (`internal_error`), or a stored secret that the configured
    /// `ENCRYPTION_KEY` cannot decrypt (`key_decryption_failed`).
    #[response(
        status = 500,
        description = "`internal_error` (logged with the request id), or \
                       `key_decryption_failed`"
    )]
    Internal(ErrorBody),
    /// The database cannot be reached (`database_unavailable`, with `retry-after`), the
    /// identity provider's keys cannot be fetched (`identity_provider_unavailable`), or the
    /// legacy session store does not answer (`session_store_unavailable`).
    #[response(
        status = 503,
        description = "`database_unavailable` (with `retry-after`), \
                       `identity_provider_unavailable` (Keycloak sign-in), or \
                       `session_store_unavailable` (the legacy session cookie)"
    )]
    Unavailable(ErrorBody),
}

/// Errors of every operation that reads a JSON request body (on top of [`ApiErrors`]; each
/// operation declares its own 422).
#[derive(Debug, IntoResponses)]
pub enum BodyErrors {
    /// The body is not JSON (`invalid_json`) or could not be read (`invalid_body`).
    #[response(
        status = 400,
        description = "the body is not JSON (`invalid_json`) or could not be read \
                       (`invalid_body`)"
    )]
    BadRequest(ErrorBody),
    /// The body is over the limit (`payload_too_large`).
    #[response(
        status = 413,
        description = "the body is over the limit: 64 KiB, 1 MiB on `/exec` \
                       (`payload_too_large`)"
    )]
    PayloadTooLarge(ErrorBody),
    /// The body is not `application/json` (`unsupported_media_type`), or is compressed
    /// (`unsupported_content_encoding`).
    #[response(
        status = 415,
        description = "the body is not `application/json` (`unsupported_media_type`), or is \
                       compressed (`unsupported_content_encoding`)"
    )]
    UnsupportedMediaType(ErrorBody),
}

/// The refusals of the operations that reach an execution server (test, trust-host-key, exec).
#[derive(Debug, IntoResponses)]
pub enum ServerUseErrors {
    /// Too many server operations (`rate_limited`, with `retry-after`).
    #[response(
        status = 429,
        description = "over 30 server operations a minute or 4 at once (`rate_limited`, with \
                       `retry-after`)"
    )]
    RateLimited(ErrorBody),
}

struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        components.add_security_scheme(
            "api_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("x-api-key"))),
        );
        // Declared, not listed on the operations: only the legacy front end's pages use it,
        // and only where the operator enabled it.
        components.add_security_scheme(
            "legacy_session",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
                SESSION_COOKIE,
                "The legacy front end's session cookie, accepted on /api/v1 only when the \
                 operator sets BYOK_LEGACY_SESSION_REDIS_URL and no Authorization or x-api-key \
                 header is sent. Writes with it must come from the service's own origin or \
                 BYOK_ALLOWED_ORIGINS (else 403 `origin_refused`).",
            ))),
        );
    }
}

/// The document as pretty JSON with a trailing newline.
pub fn to_json() -> String {
    let mut s = ApiDoc::openapi()
        .to_pretty_json()
        .unwrap_or_else(|_| "{}".into());
    s.push('\n');
    s
}

/// This OpenAPI document.
#[get("/openapi.json")]
pub async fn openapi_json() -> HttpResponse {
    HttpResponse::Ok().json(ApiDoc::openapi())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use serde_json::Value;

    /// Every operation of the document, as (method, path, operation).
    fn operations(doc: &Value) -> Vec<(String, String, Value)> {
        let mut out = Vec::new();
        for (path, item) in doc["paths"].as_object().into_iter().flatten() {
            for (method, op) in item.as_object().into_iter().flatten() {
                out.push((method.clone(), path.clone(), op.clone()));
            }
        }
        out
    }

    fn doc() -> Value {
        serde_json::from_str(&super::to_json()).unwrap()
    }

    #[test]
    fn operation_ids_are_unique_and_descriptive() {
        let doc = doc();
        let mut seen = BTreeSet::new();
        for (method, path, op) in operations(&doc) {
            let id = op["operationId"].as_str().unwrap().to_string();
            assert!(
                id.contains('_'),
                "{method} {path}: operationId {id} is too vague"
            );
            assert!(
                seen.insert(id.clone()),
                "{method} {path}: operationId {id} is used twice"
            );
        }
    }

    /// OpenAPI requires a description on every response (utoipa 6 leaves it out when none is
    /// written): generators and validators reject a document without one.
    #[test]
    fn every_response_is_described() {
        for (method, path, op) in operations(&doc()) {
            for (status, response) in op["responses"].as_object().unwrap() {
                let described = response["description"]
                    .as_str()
                    .is_some_and(|d| !d.trim().is_empty());
                assert!(described, "{method} {path} {status} has no description");
            }
        }
    }

    #[test]
    fn declared_errors_cover_what_every_operation_can_answer() {
        let doc = doc();
        for (method, path, op) in operations(&doc) {
            let responses = op["responses"].as_object().unwrap();
            let has = |s: &str| responses.contains_key(s);
            if path.starts_with("/api/v1/") {
                for s in ["401", "500", "503"] {
                    assert!(has(s), "{method} {path} does not declare {s}");
                }
            }
            if op.get("requestBody").is_some() {
                for s in ["400", "413", "415", "422"] {
                    assert!(
                        has(s),
                        "{method} {path} reads a body but does not declare {s}"
                    );
                }
            }
        }
        let exec = &doc["paths"]["/api/v1/execution-servers/{id}/exec"]["post"]["responses"];
        for s in ["409", "429", "502", "504"] {
            assert!(exec.get(s).is_some(), "exec does not declare {s}");
        }
    }

    #[test]
    fn ids_are_uuids_and_summaries_are_for_users() {
        let doc = doc();
        for (method, path, op) in operations(&doc) {
            for p in op["parameters"].as_array().into_iter().flatten() {
                if p["name"] == "id" {
                    assert_eq!(p["schema"]["format"], "uuid", "{method} {path}: id");
                }
            }
            let text = format!("{} {}", op["summary"], op["description"]);
            for leak in ["docs/", "[`", "routes::", "crate::"] {
                assert!(!text.contains(leak), "{method} {path}: {leak} in {text}");
            }
        }
    }

    #[test]
    fn enums_and_optional_fields_match_the_handlers() {
        let doc = doc();
        let schemas = &doc["components"]["schemas"];
        for name in [
            "ProviderId",
            "Tier",
            "TestStatus",
            "ServerType",
            "FallbackPolicy",
        ] {
            assert!(schemas[name]["enum"].is_array(), "{name} is not an enum");
        }
        assert!(schemas["UpdateServerRequest"].get("required").is_none());
        let command = &schemas["ExecCommand"]["oneOf"];
        assert_eq!(command[0]["type"], "string");
        assert_eq!(command[1]["items"]["type"], "string");
    }
}
