//! The origin check of cookie-authenticated writes (CSRF defence): a pure function, so the
//! management API and a web console judge requests the same way.
//!
//! A browser attaches cookies to cross-site requests, so a request that a cookie authenticates
//! may have been sent by another site's page. Browsers send `Origin` with every `POST`, `PUT`,
//! `PATCH` and `DELETE` (same-origin ones included), and `Sec-Fetch-Site` with every request;
//! neither can be set by a page's script. A write is let through only when its `Origin` is this
//! service's own origin or one the operator lists.
//!
//! Origins are compared as `scheme://host[:port]`: scheme and host case-insensitively, the
//! default port (80 for `http`, 443 for `https`) the same as no port. Only `http` and `https`
//! origins are accepted.

/// Whether a cookie-authenticated request with `method` may proceed: a read (`GET`, `HEAD`,
/// `OPTIONS`: nothing changes) always; anything else is a write, as [`write_origin_allowed`]
/// decides. The one rule of the management API's cookie and of the web console's forms; each
/// reads the headers from its framework's request.
pub fn request_origin_allowed(
    method: &str,
    origin: Option<&str>,
    sec_fetch_site: Option<&str>,
    own_origin: &str,
    allowed: &[String],
) -> bool {
    matches!(method, "GET" | "HEAD" | "OPTIONS")
        || write_origin_allowed(origin, sec_fetch_site, own_origin, allowed)
}

/// Whether a cookie-authenticated write (`POST`, `PUT`, `PATCH`, `DELETE`) may proceed.
///
/// - `origin`: the request's `Origin` header, if any. When present it decides: allowed when it
///   equals `own_origin` or one of `allowed`. `Origin: null` (sandboxed frames, some
///   redirects, `file:` pages) and anything that is not `scheme://host[:port]` are refused.
/// - `sec_fetch_site`: the `Sec-Fetch-Site` header, consulted only when `Origin` is absent:
///   `same-origin` is allowed, anything else (or nothing) refused.
/// - `own_origin`: this service's public origin, e.g. `https://byok.example.com` (a path or a
///   trailing slash after it is ignored).
/// - `allowed`: further origins the operator trusts (`BYOK_ALLOWED_ORIGINS`), in the same form;
///   entries that are not an origin never match.
pub fn write_origin_allowed(
    origin: Option<&str>,
    sec_fetch_site: Option<&str>,
    own_origin: &str,
    allowed: &[String],
) -> bool {
    match origin {
        Some(raw) => {
            let Some(presented) = Origin::parse_header(raw) else {
                return false;
            };
            std::iter::once(own_origin)
                .chain(allowed.iter().map(String::as_str))
                .filter_map(Origin::parse_configured)
                .any(|trusted| trusted == presented)
        }
        None => sec_fetch_site.is_some_and(|s| s.trim().eq_ignore_ascii_case("same-origin")),
    }
}

/// Whether `entry` is an origin [`write_origin_allowed`] can match (`http(s)://host[:port]`,
/// an optional path ignored): for checking configured origins at start-up.
pub fn is_valid_origin(entry: &str) -> bool {
    Origin::parse_configured(entry).is_some()
}

/// A normalised origin: lower-case scheme and host, explicit port.
#[derive(Debug, PartialEq, Eq)]
struct Origin {
    scheme: &'static str,
    host: String,
    port: u16,
}

impl Origin {
    /// An `Origin` header: exactly `scheme://host[:port]` (a single trailing `/` tolerated).
    fn parse_header(raw: &str) -> Option<Self> {
        let raw = raw.trim();
        let raw = raw.strip_suffix('/').unwrap_or(raw);
        let (scheme, authority) = raw.split_once("://")?;
        if authority.contains(['/', '?', '#']) {
            return None;
        }
        Self::parse_parts(scheme, authority)
    }

    /// A configured origin or public URL: `scheme://host[:port]`, anything from the first `/`,
    /// `?` or `#` after the host ignored.
    fn parse_configured(raw: &str) -> Option<Self> {
        let (scheme, rest) = raw.trim().split_once("://")?;
        let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        Self::parse_parts(scheme, &rest[..end])
    }

    fn parse_parts(scheme: &str, authority: &str) -> Option<Self> {
        let (scheme, default_port) = if scheme.eq_ignore_ascii_case("https") {
            ("https", 443)
        } else if scheme.eq_ignore_ascii_case("http") {
            ("http", 80)
        } else {
            return None;
        };
        // No credentials, whitespace or control characters in an origin.
        if authority.is_empty()
            || authority.contains('@')
            || authority
                .chars()
                .any(|c| c.is_whitespace() || c.is_control())
        {
            return None;
        }
        let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
            // An IPv6 literal: `[::1]` or `[::1]:8080`.
            let (inside, after) = rest.split_once(']')?;
            if inside.is_empty() || !inside.chars().all(|c| c.is_ascii_hexdigit() || c == ':') {
                return None;
            }
            let port = match after {
                "" => None,
                p => Some(p.strip_prefix(':')?),
            };
            (format!("[{}]", inside.to_ascii_lowercase()), port)
        } else {
            let (host, port) = match authority.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            };
            if host.is_empty() || host.contains(':') {
                return None;
            }
            (host.to_ascii_lowercase(), port)
        };
        let port = match port {
            None => default_port,
            Some(p) if !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()) => {
                p.parse().ok()?
            }
            Some(_) => return None,
        };
        Some(Self { scheme, host, port })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OWN: &str = "https://byok.example.com";

    fn allowed(origin: Option<&str>, site: Option<&str>, list: &[&str]) -> bool {
        let list: Vec<String> = list.iter().map(|s| (*s).to_string()).collect();
        write_origin_allowed(origin, site, OWN, &list)
    }

    #[test]
    fn own_origin_with_normalised_case_and_default_ports() {
        for o in [
            "https://byok.example.com",
            "HTTPS://BYOK.Example.COM",
            "https://byok.example.com:443",
            "https://byok.example.com/",
            " https://byok.example.com ",
        ] {
            assert!(allowed(Some(o), None, &[]), "{o}");
        }
        assert!(write_origin_allowed(
            Some("http://127.0.0.1:8080"),
            None,
            "http://127.0.0.1:8080/",
            &[]
        ));
        assert!(write_origin_allowed(
            Some("http://localhost"),
            None,
            "http://localhost:80/some/path",
            &[]
        ));
        assert!(write_origin_allowed(
            Some("http://[::1]:8080"),
            None,
            "http://[::1]:8080",
            &[]
        ));
    }

    #[test]
    fn other_origins_are_refused_unless_listed() {
        for o in [
            "https://evil.example.com",
            "http://byok.example.com",
            "https://byok.example.com:8443",
            "https://byok.example.com.evil.com",
            "https://evil.com/https://byok.example.com",
            "https://user@byok.example.com",
            "https://byok.example.com/path",
            "https://byok.example.com?x=1",
            "null",
            "NULL",
            "",
            "byok.example.com",
            "ftp://byok.example.com",
            "https://",
            "https://byok.example.com:",
            "https://byok.example.com:99999",
            "https://byok.example.com:44a",
            "https://byok example.com",
        ] {
            assert!(!allowed(Some(o), None, &[]), "{o:?} must be refused");
        }
        let list = ["https://app.example.com", "http://localhost:3000/"];
        assert!(allowed(Some("https://app.example.com"), None, &list));
        assert!(allowed(Some("https://APP.example.com:443"), None, &list));
        assert!(allowed(Some("http://localhost:3000"), None, &list));
        assert!(!allowed(Some("http://localhost:3001"), None, &list));
        assert!(
            !allowed(Some("null"), None, &["null"]),
            "null never matches"
        );
        assert!(!allowed(
            Some("https://x.com"),
            None,
            &["not an origin", "*"]
        ));
    }

    #[test]
    fn origin_decides_over_sec_fetch_site() {
        assert!(!allowed(
            Some("https://evil.example.com"),
            Some("same-origin"),
            &[]
        ));
        assert!(allowed(Some(OWN), Some("cross-site"), &[]));
    }

    #[test]
    fn without_origin_only_same_origin_fetch_metadata_passes() {
        assert!(allowed(None, Some("same-origin"), &[]));
        assert!(allowed(None, Some(" Same-Origin "), &[]));
        for site in ["same-site", "cross-site", "none", ""] {
            assert!(!allowed(None, Some(site), &[]), "{site}");
        }
        assert!(!allowed(None, None, &[]), "no Origin and no Sec-Fetch-Site");
    }

    #[test]
    fn reads_pass_and_every_other_method_is_a_write() {
        let evil = Some("https://evil.example.com");
        for read in ["GET", "HEAD", "OPTIONS"] {
            assert!(request_origin_allowed(read, evil, None, OWN, &[]), "{read}");
        }
        for write in ["POST", "PUT", "PATCH", "DELETE", "PROPFIND", "get"] {
            assert!(
                !request_origin_allowed(write, evil, None, OWN, &[]),
                "{write}"
            );
            assert!(
                !request_origin_allowed(write, None, None, OWN, &[]),
                "{write}"
            );
            assert!(
                request_origin_allowed(write, Some(OWN), None, OWN, &[]),
                "{write}"
            );
        }
    }

    #[test]
    fn configured_origins_are_checked() {
        assert!(is_valid_origin("https://app.example.com"));
        assert!(is_valid_origin("http://127.0.0.1:8080/"));
        assert!(!is_valid_origin("app.example.com"));
        assert!(!is_valid_origin("*"));
        assert!(!is_valid_origin("null"));
    }
}
