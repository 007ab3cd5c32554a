//! The pages, one module each, and what every page shares: the frame (`Chrome`: stylesheet,
//! navigation, the signed-in bar, a one-line notice) and the routes.

mod admin;
mod keys;
mod login;
mod oidc;
mod servers;
mod tokens;
mod try_it;
mod usage;

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use byok_core::CoreError;
use byok_core::Role;

use crate::assets;
pub use crate::frame::{Chrome, MessagePage, NavItem, Notice, UserBar, forbidden};
use crate::session::SignedIn;
use crate::state::Console;
use crate::web::{page, see_other};

const PAGES: [(&str, &str); 5] = [
    ("/keys", "Provider keys"),
    ("/servers", "Execution servers"),
    ("/tokens", "Gateway tokens"),
    ("/usage", "Usage"),
    ("/try", "Try it"),
];

impl Chrome {
    /// The frame of a signed-in page; `current` is its path.
    pub fn signed_in(who: &SignedIn, current: &str) -> Self {
        let u = &who.0.user;
        let operator = u.role == Role::Operator;
        let mut nav: Vec<NavItem> = PAGES
            .iter()
            .map(|(href, label)| NavItem {
                href,
                label,
                current: *href == current,
            })
            .collect();
        if operator {
            nav.push(NavItem {
                href: "/admin",
                label: "Administration",
                current: current == "/admin",
            });
        }
        Self {
            user: Some(UserBar {
                email: u.email.clone(),
                tier: u.tier.as_str().to_string(),
                csrf: who.0.csrf_token.clone(),
                operator,
            }),
            nav,
            ..Self::anonymous()
        }
    }
}

/// A core error as a page, with the application's status and message.
pub fn error_page(console: &Console, chrome: Chrome, e: CoreError) -> HttpResponse {
    let view = (console.errors)(e);
    page(
        view.status,
        &MessagePage {
            chrome,
            title: "That did not work".into(),
            text: view.message,
            back: Some(("/", "Back to the console")),
        },
    )
}

/// A page for an error status the framework produced (a form it could not read, a method
/// not allowed), for browsers.
pub fn status_page(status: StatusCode) -> HttpResponse {
    let (title, text) = match status {
        StatusCode::NOT_FOUND => ("Page not found", "There is no page at this address."),
        StatusCode::METHOD_NOT_ALLOWED => (
            "Not possible here",
            "This address does not take that kind of request.",
        ),
        s if s.is_server_error() => (
            "Something went wrong",
            "The service could not complete the request. Try again in a moment.",
        ),
        _ => (
            "The request could not be read",
            "A field was missing or too long. Go back, check the form and try again.",
        ),
    };
    page(
        status,
        &MessagePage {
            chrome: Chrome::anonymous(),
            title: title.into(),
            text: text.into(),
            back: Some(("/", "Back to the console")),
        },
    )
}

async fn home(who: Option<SignedIn>) -> HttpResponse {
    match who {
        Some(_) => see_other("/keys"),
        None => see_other("/login"),
    }
}

async fn not_found(who: Option<SignedIn>) -> HttpResponse {
    let chrome = match &who {
        Some(w) => Chrome::signed_in(w, ""),
        None => Chrome::anonymous(),
    };
    page(
        StatusCode::NOT_FOUND,
        &MessagePage {
            chrome,
            title: "Page not found".into(),
            text: "There is no page at this address.".into(),
            back: Some(("/", "Back to the console")),
        },
    )
}

/// Registers the console's routes (`/`, `/login…`, `/logout`, the pages, `/assets/…`); each
/// page module registers its own.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/", web::get().to(home))
        .route("/assets/{name}", web::get().to(assets::serve))
        // Before the sign-in routes: `/login/{secret}` would take `/login/oidc`.
        .configure(oidc::routes)
        .configure(login::routes)
        .configure(keys::routes)
        .configure(servers::routes)
        .configure(tokens::routes)
        .configure(usage::routes)
        .configure(try_it::routes)
        .configure(admin::routes);
}

/// The console's 404 page, for paths the application leaves to it.
pub async fn fallback(who: Option<SignedIn>) -> HttpResponse {
    not_found(who).await
}
