//! Responses of the console: security headers on every page, redirects, error pages, and the
//! same-origin check of form posts.

use actix_web::http::StatusCode;
use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, HttpResponseBuilder};
use askama::Template;

/// No inline script or style anywhere; forms post only here; never framed.
pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
    img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; \
    object-src 'none'";

/// Adds the headers every console response carries.
pub fn secured(mut b: HttpResponseBuilder) -> HttpResponseBuilder {
    b.insert_header((header::CONTENT_SECURITY_POLICY, CSP))
        .insert_header((header::X_FRAME_OPTIONS, "DENY"))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        // Sign-in links carry a secret in the path: never sent to another site as a
        // referrer. Not `no-referrer`: under it browsers send `Origin: null` with every form
        // post, even to this origin, and the same-origin check refuses them all.
        .insert_header((header::REFERRER_POLICY, "same-origin"))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header(("cross-origin-opener-policy", "same-origin"))
        .insert_header((
            "permissions-policy",
            "camera=(), microphone=(), geolocation=()",
        ));
    b
}

/// A rendered page with `status`.
pub fn page(status: StatusCode, t: &impl Template) -> HttpResponse {
    match t.render() {
        Ok(html) => secured(HttpResponse::build(status))
            .content_type("text/html; charset=utf-8")
            .body(html),
        Err(e) => {
            tracing::error!(error = %e, "console template failed");
            secured(HttpResponse::InternalServerError())
                .content_type("text/plain; charset=utf-8")
                .body("the page could not be rendered")
        }
    }
}

/// 303 See Other to a path of this service (after a form post).
pub fn see_other(location: &str) -> HttpResponse {
    secured(HttpResponse::SeeOther())
        .insert_header((header::LOCATION, location.to_string()))
        .finish()
}

/// `next` when it is a path of this service (never another host), else `fallback`.
pub fn local_path<'a>(next: Option<&'a str>, fallback: &'a str) -> &'a str {
    match next {
        Some(n)
            if n.starts_with('/')
                && !n.starts_with("//")
                && !n.starts_with("/\\")
                && n.len() <= 512
                && !n.chars().any(|c| c.is_control() || c == '\\') =>
        {
            n
        }
        _ => fallback,
    }
}

/// Whether a form post comes from this origin (or an allowed one): core's
/// `origin::request_origin_allowed` on this request's method and headers (reads always pass).
pub fn same_origin(req: &HttpRequest, own: &str, allowed: &[String]) -> bool {
    let get = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok());
    byok_core::origin::request_origin_allowed(
        req.method().as_str(),
        get("origin"),
        get("sec-fetch-site"),
        own,
        allowed,
    )
}

/// The client's address: the peer, or behind a trusted proxy the address it forwarded
/// (`byok_core::client_addr`, `BYOK_TRUSTED_PROXIES`); `None` when the peer is unknown.
pub fn client_ip(
    req: &HttpRequest,
    proxies: &byok_core::client_addr::TrustedProxies,
) -> Option<std::net::IpAddr> {
    let peer = req.peer_addr()?.ip();
    let forwarded = req
        .headers()
        .get_all(header::X_FORWARDED_FOR)
        .map(header::HeaderValue::as_bytes);
    Some(proxies.client_ip(peer, forwarded))
}

/// Whether the client is a browser asking for a page (`Accept` names `text/html`).
pub fn wants_html(req: &HttpRequest) -> bool {
    req.headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/html"))
}
