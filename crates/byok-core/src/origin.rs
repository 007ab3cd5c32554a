//! Same-origin checks for state-changing browser requests (cookie-authenticated).

/// `scheme://host[:port]` with a lower-case scheme and host and the default port dropped;
/// `None` for anything else (`null`, a path, userinfo).
fn normalise(origin: &str) -> Option<String> {
    let origin = origin.trim().trim_end_matches('/');
    let (scheme, rest) = origin.split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    if !matches!(scheme.as_str(), "http" | "https") || rest.is_empty() {
        return None;
    }
    if rest.contains(['/', '@', '?', '#']) {
        return None;
    }
    let rest = rest.to_ascii_lowercase();
    let default = if scheme == "https" { ":443" } else { ":80" };
    let host = rest.strip_suffix(default).unwrap_or(&rest);
    Some(format!("{scheme}://{host}"))
}

/// Whether a write authenticated by a cookie may proceed: its `Origin` is `own_origin` or one
/// of `allowed` (compared as scheme, host and port); without an `Origin` header, only when
/// the browser says `Sec-Fetch-Site: same-origin`. `Origin: null` is refused.
pub fn write_origin_allowed(
    origin: Option<&str>,
    sec_fetch_site: Option<&str>,
    own_origin: &str,
    allowed: &[String],
) -> bool {
    match origin {
        Some(o) => {
            let Some(o) = normalise(o) else {
                return false;
            };
            std::iter::once(own_origin)
                .chain(allowed.iter().map(String::as_str))
                .filter_map(normalise)
                .any(|a| a == o)
        }
        None => sec_fetch_site.is_some_and(|s| s.trim().eq_ignore_ascii_case("same-origin")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins() {
        let own = "http://127.0.0.1:8080";
        assert!(write_origin_allowed(Some(own), None, own, &[]));
        assert!(write_origin_allowed(
            Some("HTTP://127.0.0.1:8080"),
            None,
            own,
            &[]
        ));
        assert!(!write_origin_allowed(
            Some("http://evil.example"),
            Some("same-origin"),
            own,
            &[]
        ));
        assert!(!write_origin_allowed(Some("null"), None, own, &[]));
        assert!(write_origin_allowed(None, Some("same-origin"), own, &[]));
        assert!(!write_origin_allowed(None, Some("cross-site"), own, &[]));
        assert!(!write_origin_allowed(None, None, own, &[]));
        assert!(write_origin_allowed(
            Some("https://app.example.com"),
            None,
            "https://app.example.com:443/",
            &[]
        ));
        assert!(write_origin_allowed(
            Some("https://ui.example.com"),
            None,
            own,
            &["https://ui.example.com".into()]
        ));
    }
}
