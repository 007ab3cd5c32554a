//! The pages, one module each, and what every page shares: the frame (`Chrome`: stylesheet,
//! navigation, the signed-in bar, a one-line notice) and the routes.

mod admin;
mod keys;
mod login;
mod try_it;

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use askama::Template;
use byok_core::CoreError;
use byok_core::Role;

use crate::assets;
use crate::session::SignedIn;
use crate::state::Console;
use crate::web::{page, see_other};

/// One entry of the navigation.
#[derive(Debug, Clone)]
pub struct NavItem {
    pub href: &'static str,
    pub label: &'static str,
    pub current: bool,
}

/// The signed-in person, as the frame shows them.
#[derive(Debug, Clone)]
pub struct UserBar {
    pub email: String,
    pub tier: String,
    pub csrf: String,
    pub operator: bool,
}

/// A one-line notice at the top of a page.
#[derive(Debug, Clone)]
pub struct Notice {
    /// `ok`, `error` or `info` (a CSS class).
    pub kind: &'static str,
    pub text: String,
}

impl Notice {
    pub fn ok(text: impl Into<String>) -> Self {
        Self {
            kind: "ok",
            text: text.into(),
        }
    }
    pub fn error(text: impl Into<String>) -> Self {
        Self {
            kind: "error",
            text: text.into(),
        }
    }
}

/// What every page's frame needs.
#[derive(Debug, Clone)]
pub struct Chrome {
    pub css: &'static str,
    pub js: &'static str,
    pub icon: &'static str,
    pub user: Option<UserBar>,
    pub nav: Vec<NavItem>,
    pub notice: Option<Notice>,
}

const PAGES: [(&str, &str); 5] = [
    ("/keys", "Provider keys"),
    ("/servers", "Execution servers"),
    ("/tokens", "Gateway tokens"),
    ("/usage", "Usage"),
    ("/try", "Try it"),
];

impl Chrome {
    /// The frame for someone not signed in.
    pub fn anonymous() -> Self {
        Self {
            css: assets::CSS_PATH.as_str(),
            js: assets::JS_PATH.as_str(),
            icon: assets::ICON_PATH.as_str(),
            user: None,
            nav: Vec::new(),
            notice: None,
        }
    }

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

    pub fn with_notice(mut self, notice: Option<Notice>) -> Self {
        self.notice = notice;
        self
    }
}

/// A page with a title and a paragraph (refusals, not found, errors).
#[derive(Template)]
#[template(path = "message.html")]
pub struct MessagePage {
    pub chrome: Chrome,
    pub title: String,
    pub text: String,
    pub back: Option<(&'static str, &'static str)>,
}

/// 403: a form without this session's token, or posted from another site.
pub fn forbidden() -> HttpResponse {
    page(
        StatusCode::FORBIDDEN,
        &MessagePage {
            chrome: Chrome::anonymous(),
            title: "This form cannot be accepted".into(),
            text: "It came from another site, or from a page older than your session. \
                   Go back, reload the page and try again."
                .into(),
            back: Some(("/", "Back to the console")),
        },
    )
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
        .configure(login::routes)
        .configure(keys::routes)
        .configure(try_it::routes)
        .configure(admin::routes);
}

/// The console's 404 page, for paths the application leaves to it.
pub async fn fallback(who: Option<SignedIn>) -> HttpResponse {
    not_found(who).await
}
