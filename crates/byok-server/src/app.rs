//! The actix-web application, assembled: state, extractor configuration, routes, the
//! fallback, middleware. Each part lives in its own module; this one only puts them together.

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::ErrorHandlers;
use actix_web::{App, HttpRequest, HttpResponse, web};

use crate::error::{normalise_error, path_error, query_error};
use crate::middleware::request_log;
use crate::routes;
use crate::state::AppState;

/// The application with every route and middleware.
pub fn build(
    state: web::Data<AppState>,
) -> App<
    impl actix_web::dev::ServiceFactory<
        ServiceRequest,
        Config = (),
        Response = ServiceResponse<impl MessageBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    // The console's Try it prompts go through this gateway.
    let mut console = state.console.clone();
    console.prompts = Some(std::sync::Arc::new(
        crate::gateway::prompt::GatewayPrompts::new(state.get_ref().clone()),
    ));
    let console = web::Data::new(console);
    App::new()
        .app_data(state)
        .app_data(console)
        .app_data(web::PathConfig::default().error_handler(path_error))
        .app_data(web::QueryConfig::default().error_handler(query_error))
        .service(crate::openapi::openapi_json)
        .configure(routes::configure)
        .configure(crate::gateway::configure)
        .configure(byok_console::configure)
        .default_service(web::to(
            |req: HttpRequest, who: Option<byok_console::SignedIn>| async move {
                let path = req.path();
                if path == "/v1" || path.starts_with("/v1/") || path.starts_with("/v1beta") {
                    // LLM clients read errors in their own API's shape only.
                    return crate::gateway::unknown_endpoint(&req);
                }
                if !path.starts_with("/api/") && byok_console::wants_html(&req) {
                    // A person's browser: the console's page.
                    return byok_console::not_found(who).await;
                }
                HttpResponse::NotFound().json(serde_json::json!({
                    "detail": "no such resource", "code": "not_found"
                }))
            },
        ))
        .wrap(ErrorHandlers::new().default_handler(normalise_error))
        .wrap(actix_web::middleware::from_fn(request_log))
}
