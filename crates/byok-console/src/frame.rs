//! What every page's frame shows (stylesheet, navigation, the signed-in bar, a notice) and
//! the plain message page. A leaf: sessions and pages both use it.

use actix_web::HttpResponse;
use actix_web::http::StatusCode;
use askama::Template;

use crate::assets;
use crate::web::page;

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

/// A confirmation page before a destructive action (the form posts to `action`).
#[derive(Template)]
#[template(path = "confirm.html")]
pub struct ConfirmPage {
    pub chrome: Chrome,
    pub title: String,
    pub text: String,
    pub action: String,
    pub button: String,
    pub back: &'static str,
    pub csrf: String,
}

/// When something happened, as the pages write it (empty when it did not).
pub fn when(t: Option<chrono::DateTime<chrono::Utc>>) -> String {
    t.map(|t| t.format("%Y-%m-%d %H:%M UTC").to_string())
        .unwrap_or_default()
}
