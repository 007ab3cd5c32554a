//! HTTP routes. Handlers parse, call a core service, and map the result.

pub mod byok;
pub mod health;
pub mod servers;
pub mod tokens;

use actix_web::web;

/// Registers every route.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(health::healthz)
        .service(health::readyz)
        .service(health::metrics)
        .service(
            web::scope("/api/v1/byok")
                .service(byok::providers)
                .service(byok::list_keys)
                .service(byok::add_key)
                .service(byok::delete_key)
                .service(byok::test_key)
                .service(byok::stats)
                .service(byok::resolve)
                .service(byok::get_settings)
                .service(byok::put_settings),
        )
        .service(
            web::scope("/api/v1/execution-servers")
                .service(servers::list)
                .service(servers::create)
                .service(servers::default_server)
                .service(servers::update)
                .service(servers::remove)
                .service(servers::test)
                .service(
                    web::resource("/{id}/exec")
                        .app_data(crate::extract::JsonLimit(servers::EXEC_JSON_LIMIT))
                        .route(web::post().to(servers::exec)),
                )
                .service(servers::trust_host_key),
        )
        .service(
            web::scope("/api/v1/tokens")
                .service(tokens::create)
                .service(tokens::list)
                .service(tokens::revoke),
        );
}
