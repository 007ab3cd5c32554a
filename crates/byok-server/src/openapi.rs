//! The OpenAPI 3.1 document, generated from the handlers (committed as `openapi/openapi.json`).

use actix_web::{HttpResponse, get};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

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
        byok::stats, byok::get_settings, byok::put_settings,
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
