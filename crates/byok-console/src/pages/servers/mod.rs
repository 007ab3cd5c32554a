//! Execution servers: the list with each server's last test, add and edit forms per type,
//! the connection test with the SSH host-key step, the default server, delete, and running a
//! command. Every page calls the core's `ServerRegistry`, as `/api/v1/execution-servers` does.
//!
//! - [`list`]: the list, test, trust a host key, default, delete;
//! - [`edit`]: add (type, then form) and edit;
//! - [`run`]: run a command;
//! - [`fields`]: the form as drawn; [`form`]: the form as posted, the config it sends;
//! - [`view`]: what the pages share.

mod edit;
mod fields;
mod form;
mod list;
mod run;
mod view;

use actix_web::web;

/// The largest add or edit form (secrets of up to 64 KiB each, percent-encoded), as the JSON
/// API's body limit for these bodies.
const FORM_LIMIT: usize = 1024 * 1024;
/// The largest run form (a command of up to 64 KiB, percent-encoded).
const RUN_LIMIT: usize = 256 * 1024;

/// The execution-server routes.
pub fn routes(cfg: &mut web::ServiceConfig) {
    let big = || web::FormConfig::default().limit(FORM_LIMIT);
    cfg.service(
        web::resource("/servers")
            .app_data(big())
            .route(web::get().to(list::list))
            .route(web::post().to(edit::create)),
    )
    .route("/servers/new", web::get().to(edit::new))
    .route("/servers/default", web::post().to(list::choose_default))
    .service(
        web::resource("/servers/{id}/edit")
            .app_data(big())
            .route(web::get().to(edit::edit))
            .route(web::post().to(edit::update)),
    )
    .route("/servers/{id}/test", web::post().to(list::test))
    .route("/servers/{id}/trust", web::post().to(list::trust))
    .route("/servers/{id}/default", web::post().to(list::make_default))
    .route("/servers/{id}/delete", web::get().to(list::confirm_delete))
    .route("/servers/{id}/delete", web::post().to(list::delete))
    .service(
        web::resource("/servers/{id}/run")
            .app_data(web::FormConfig::default().limit(RUN_LIMIT))
            .route(web::get().to(run::form))
            .route(web::post().to(run::run)),
    );
}
