//! The session cookie, the `SignedIn` extractor, and the checks every form post passes
//! (`CsrfForm`).

use std::future::Future;
use std::pin::Pin;

use actix_web::cookie::{Cookie, SameSite, time};
use actix_web::dev::Payload;
use actix_web::http::StatusCode;
use actix_web::{FromRequest, HttpRequest, HttpResponse, ResponseError, web};
use byok_core::services::{ConsoleUser, OpenedSession, constant_time_eq};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::state::Console;
use crate::web::{same_origin, see_other};

/// The session cookie over plain HTTP (development, loopback).
pub const COOKIE_NAME: &str = "byok_session";
/// The session cookie when the public URL is https (`__Host-`: Secure, Path=/, no Domain).
pub const SECURE_COOKIE_NAME: &str = "__Host-byok_session";

pub fn cookie_name(console: &Console) -> &'static str {
    if console.secure() {
        SECURE_COOKIE_NAME
    } else {
        COOKIE_NAME
    }
}

/// The session cookie of `req`, if any.
pub fn presented(req: &HttpRequest, console: &Console) -> Option<SecretString> {
    req.cookie(cookie_name(console))
        .map(|c| SecretString::from(c.value().to_owned()))
        .filter(|c| !c.expose_secret().is_empty())
}

/// The cookie that carries a new session.
pub fn session_cookie(console: &Console, opened: &OpenedSession) -> Cookie<'static> {
    let max_age = (opened.expires_at - chrono::Utc::now())
        .num_seconds()
        .max(0);
    Cookie::build(
        cookie_name(console),
        opened.cookie.expose_secret().to_owned(),
    )
    .path("/")
    .http_only(true)
    .secure(console.secure())
    .same_site(SameSite::Lax)
    .max_age(time::Duration::seconds(max_age))
    .finish()
}

/// The cookie that clears the session cookie.
pub fn cleared_cookie(console: &Console) -> Cookie<'static> {
    let mut c = Cookie::build(cookie_name(console), "")
        .path("/")
        .http_only(true)
        .secure(console.secure())
        .same_site(SameSite::Lax)
        .finish();
    c.make_removal();
    c
}

/// A signed-in person. Pages take it as an argument; without a valid session the request is
/// sent to the sign-in page (and back here afterwards).
#[derive(Debug, Clone)]
pub struct SignedIn(pub ConsoleUser);

/// Why a console request is refused before its handler runs.
#[derive(Debug)]
pub enum Refused {
    /// No valid session: to the sign-in page.
    SignIn { next: String },
    /// A form without this session's CSRF token, or from another origin.
    Forbidden,
    /// The console state is missing (a wiring bug).
    Unavailable,
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Refused::SignIn { .. } => "sign-in required",
            Refused::Forbidden => "forbidden",
            Refused::Unavailable => "console unavailable",
        })
    }
}

impl ResponseError for Refused {
    fn status_code(&self) -> StatusCode {
        match self {
            Refused::SignIn { .. } => StatusCode::SEE_OTHER,
            Refused::Forbidden => StatusCode::FORBIDDEN,
            Refused::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn error_response(&self) -> HttpResponse {
        match self {
            Refused::SignIn { next } => {
                let mut to = String::from("/login");
                if next != "/" {
                    to.push_str("?next=");
                    to.push_str(&encode(next));
                }
                see_other(&to)
            }
            Refused::Forbidden => crate::frame::forbidden(),
            Refused::Unavailable => crate::web::secured(HttpResponse::ServiceUnavailable())
                .content_type("text/plain; charset=utf-8")
                .body("the console is not available"),
        }
    }
}

/// Percent-encodes a path for a query parameter.
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => {
                out.push(char::from(b));
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

impl FromRequest for SignedIn {
    type Error = Refused;
    type Future = Pin<Box<dyn Future<Output = Result<Self, Refused>>>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let console = req.app_data::<web::Data<Console>>().cloned();
        let next = match req.method().as_str() {
            "GET" => req
                .uri()
                .path_and_query()
                .map_or("/".into(), |p| p.as_str().to_owned()),
            _ => "/".into(),
        };
        let origin_ok = console
            .as_ref()
            .is_some_and(|c| same_origin(req, &c.public_url.get(), &c.allowed_origins));
        let cookie = console.as_ref().and_then(|c| presented(req, c));
        Box::pin(async move {
            let console = console.ok_or(Refused::Unavailable)?;
            if !origin_ok {
                return Err(Refused::Forbidden);
            }
            let cookie = cookie.ok_or_else(|| Refused::SignIn { next: next.clone() })?;
            match console.sessions.authenticate(&cookie).await {
                Ok(user) => {
                    tracing::Span::current()
                        .record("user_id", tracing::field::display(user.user.id));
                    Ok(SignedIn(user))
                }
                Err(byok_core::CoreError::Unauthenticated) => Err(Refused::SignIn { next }),
                Err(e) => {
                    let view = (console.errors)(e);
                    tracing::warn!(code = view.code, "console session check failed");
                    Err(Refused::Unavailable)
                }
            }
        })
    }
}

impl SignedIn {
    /// Checks a form's CSRF token against the session's (the origin was checked already).
    fn check_csrf(&self, presented: &str) -> Result<(), Refused> {
        if constant_time_eq(presented, &self.0.csrf_token) {
            Ok(())
        } else {
            Err(Refused::Forbidden)
        }
    }
}

/// A form posted by a signed-in person, with this session's CSRF token: what every form
/// handler takes instead of `SignedIn` and `web::Form`. Before the handler runs, the person
/// is signed in from this origin (`SignedIn`), the body is read as `web::Form` reads it (the
/// route's `FormConfig` limit; an unreadable form is the framework's 4xx, which the
/// application answers with a page), and its `csrf` field must equal the session's token
/// (compared in constant time): a missing or wrong one is refused with the 403 page, like a
/// form from another site.
///
/// `form` is the rest of the form (`()` when it carries only the token). The token is taken
/// out with `#[serde(flatten)]`, under which every value stays text: the fields of `T` are
/// `String`, `Option<String>` or `SecretString`, and pages parse numbers themselves (so a bad
/// one is shown next to its field).
#[derive(Debug)]
pub struct CsrfForm<T = ()> {
    pub who: SignedIn,
    pub form: T,
}

/// A form as posted: the token, and the page's fields.
#[derive(Deserialize)]
struct WithCsrf<T> {
    /// Absent: refused like a wrong one (403), not as an unreadable form.
    #[serde(default)]
    csrf: String,
    #[serde(flatten)]
    form: T,
}

impl<T: DeserializeOwned + 'static> FromRequest for CsrfForm<T> {
    type Error = actix_web::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self, actix_web::Error>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let who = SignedIn::from_request(req, payload);
        let form = web::Form::<WithCsrf<T>>::from_request(req, payload);
        Box::pin(async move {
            // The session and the origin first: a refused request is not read further.
            let who = who.await?;
            let web::Form(posted) = form.await?;
            who.check_csrf(&posted.csrf)?;
            Ok(CsrfForm {
                who,
                form: posted.form,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use actix_web::test::TestRequest;
    use secrecy::ExposeSecret;

    use super::*;

    #[derive(Debug, Deserialize)]
    struct Fields {
        name: String,
        #[serde(default)]
        ticked: Option<String>,
        secret: Option<SecretString>,
    }

    async fn posted<T: DeserializeOwned + 'static>(
        form: &[(&str, &str)],
    ) -> Result<WithCsrf<T>, actix_web::Error> {
        let (req, mut payload) = TestRequest::post().set_form(form).to_http_parts();
        web::Form::<WithCsrf<T>>::from_request(&req, &mut payload)
            .await
            .map(|f| f.0)
    }

    #[actix_web::test]
    async fn the_token_is_taken_out_and_the_fields_stay_text() {
        let f = posted::<Fields>(&[("csrf", "t0k"), ("name", "box"), ("secret", "s3")])
            .await
            .unwrap();
        assert_eq!(f.csrf, "t0k");
        assert_eq!(f.form.name, "box");
        assert_eq!(f.form.ticked, None);
        assert_eq!(f.form.secret.unwrap().expose_secret(), "s3");
        let f = posted::<Fields>(&[("name", "box"), ("ticked", "on")])
            .await
            .unwrap();
        assert_eq!(
            f.csrf, "",
            "a missing token is empty: refused as a wrong one"
        );
        assert_eq!(f.form.ticked.as_deref(), Some("on"));
    }

    #[actix_web::test]
    async fn a_token_only_form_and_an_unreadable_form() {
        let f = posted::<()>(&[("csrf", "t0k"), ("extra", "ignored")])
            .await
            .unwrap();
        assert_eq!(f.csrf, "t0k");
        assert!(posted::<()>(&[]).await.is_ok());
        let Err(missing) = posted::<Fields>(&[("csrf", "t0k")]).await else {
            panic!("a form without a field it needs is unreadable");
        };
        assert_eq!(
            missing.as_response_error().status_code(),
            StatusCode::BAD_REQUEST
        );
    }
}
