//! The stylesheet and script, embedded in the binary and served under content-hashed names
//! (cache-busting: a new build gets new names, so they can be cached for a year).

use std::sync::LazyLock;

use actix_web::http::header;
use actix_web::{HttpResponse, web};
use sha2::{Digest, Sha256};

const CSS: &str = include_str!("../assets/console.css");
const JS: &str = include_str!("../assets/console.js");
const ICON: &str = include_str!("../assets/icon.svg");

fn hashed(stem: &str, ext: &str, body: &str) -> String {
    let digest = Sha256::digest(body.as_bytes());
    let mut short = String::with_capacity(10);
    for b in &digest[..5] {
        short.push_str(&format!("{b:02x}"));
    }
    format!("/assets/{stem}.{short}.{ext}")
}

/// The stylesheet's path.
pub static CSS_PATH: LazyLock<String> = LazyLock::new(|| hashed("console", "css", CSS));
/// The script's path.
pub static JS_PATH: LazyLock<String> = LazyLock::new(|| hashed("console", "js", JS));
/// The icon's path.
pub static ICON_PATH: LazyLock<String> = LazyLock::new(|| hashed("icon", "svg", ICON));

/// `GET /assets/{name}`: an embedded asset by its hashed name.
pub async fn serve(name: web::Path<String>) -> HttpResponse {
    let path = format!("/assets/{}", name.into_inner());
    let (body, ctype) = if path == *CSS_PATH {
        (CSS, "text/css; charset=utf-8")
    } else if path == *JS_PATH {
        (JS, "text/javascript; charset=utf-8")
    } else if path == *ICON_PATH {
        (ICON, "image/svg+xml")
    } else {
        return HttpResponse::NotFound()
            .content_type("text/plain; charset=utf-8")
            .body("no such asset");
    };
    HttpResponse::Ok()
        .content_type(ctype)
        .insert_header((header::CACHE_CONTROL, "public, max-age=31536000, immutable"))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .body(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_carry_a_content_hash() {
        assert!(CSS_PATH.starts_with("/assets/console.") && CSS_PATH.ends_with(".css"));
        assert_eq!(CSS_PATH.len(), "/assets/console.0123456789.css".len());
        assert_ne!(*CSS_PATH, hashed("console", "css", "other"));
    }
}
