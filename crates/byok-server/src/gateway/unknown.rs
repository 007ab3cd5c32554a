//! Paths and methods this gateway does not serve under `/v1` (or Gemini's `/v1beta`).

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse};

use super::errors::{GatewayError, Ingress, scrub};

/// What an LLM client gets for a path or method this gateway does not serve under `/v1` (or
/// Gemini's `/v1beta`): a 404 in the shape its SDK parses (Anthropic when it sends Anthropic's
/// headers or calls a messages path, Google's for Gemini, else OpenAI's), and one log line with
/// the method and the path (query dropped, credential-shaped segments scrubbed, bounded) so an
/// operator sees what a client tried.
pub fn unknown_endpoint(req: &HttpRequest) -> HttpResponse {
    let path = req.path();
    let logged = loggable_path(path);
    tracing::info!(method = %req.method().as_str().chars().take(16).collect::<String>(),
        path = %logged, "an LLM client called an endpoint this gateway does not serve");
    let message = "this gateway does not serve this endpoint; it serves POST /v1/messages, \
                   /v1/messages/count_tokens, /v1/chat/completions and GET /v1/models";
    let has = |h: &str| req.headers().contains_key(h);
    if path.starts_with("/v1beta") || has("x-goog-api-key") {
        return HttpResponse::NotFound().json(serde_json::json!({
            "error": {"code": 404, "message": message, "status": "NOT_FOUND"}
        }));
    }
    let ingress = if has("anthropic-version") || has("x-api-key") || path.contains("/messages") {
        Ingress::Anthropic
    } else {
        Ingress::OpenAi
    };
    GatewayError::new(StatusCode::NOT_FOUND, message)
        .with_code("unknown_endpoint")
        .response(ingress)
}

/// `%XX` escapes decoded (invalid ones kept as they are), lossily as UTF-8.
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if b[i] == b'%'
            && let (Some(h), Some(l)) = (
                b.get(i + 1).copied().and_then(hex),
                b.get(i + 2).copied().and_then(hex),
            )
        {
            out.push((h * 16 + l) as u8);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Whether a path segment may be a credential: a run of 20 or more characters of the alphabet
/// keys are written in (`[A-Za-z0-9_.-]`: OpenAI-style, Mistral/Together/Cohere-style bare
/// alphanumerics, JWTs), or a JWT's `eyJ` start.
fn key_shaped(segment: &str) -> bool {
    const MIN_RUN: usize = 20;
    if segment.starts_with("eyJ") {
        return true;
    }
    let mut run = 0;
    for c in segment.chars() {
        if c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.') {
            run += 1;
            if run >= MIN_RUN {
                return true;
            }
        } else {
            run = 0;
        }
    }
    false
}

/// A path as the unknown-endpoint log line shows it: percent-decoded (until stable, so an
/// encoded key is seen as one), each segment between `/` and `:` that may be a credential
/// replaced by `[redacted]`, other credential shapes scrubbed, at most 200 characters.
/// `v1`, `models`, `gemini-2.5-pro:generateContent` stay readable.
fn loggable_path(path: &str) -> String {
    let mut decoded = path.to_string();
    for _ in 0..3 {
        let next = percent_decode(&decoded);
        if next == decoded {
            break;
        }
        decoded = next;
    }
    let mut out = String::with_capacity(decoded.len().min(256));
    for piece in decoded.split_inclusive(['/', ':']) {
        let (segment, sep) = match piece.strip_suffix(['/', ':']) {
            Some(seg) => (seg, &piece[seg.len()..]),
            None => (piece, ""),
        };
        if key_shaped(segment) {
            out.push_str("[redacted]");
        } else {
            out.push_str(segment);
        }
        out.push_str(sep);
    }
    scrub(&out, None).chars().take(200).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logged_paths_keep_endpoints_and_lose_keys() {
        assert_eq!(
            loggable_path("/v1beta/models/gemini-2.5-pro:generateContent"),
            "/v1beta/models/gemini-2.5-pro:generateContent"
        );
        assert_eq!(loggable_path("/v1/responses"), "/v1/responses");
        assert_eq!(
            loggable_path("/v1/sk%2Dproj%2DABCDEFabcdef0123456789/models"),
            "/v1/[redacted]/models"
        );
        assert_eq!(
            loggable_path("/v1/sk%252Dproj%252DABCDEFabcdef0123456789/models"),
            "/v1/[redacted]/models",
            "encoded twice"
        );
        assert_eq!(
            loggable_path("/v1/models/eyJhbGc.x.y"),
            "/v1/models/[redacted]"
        );
        assert_eq!(
            loggable_path("/v1/x:AbCdEfGhIjKlMnOpQrStUvWxYz0123456789abcd/y"),
            "/v1/x:[redacted]/y"
        );
        assert_eq!(loggable_path("/v1/a%2"), "/v1/a%2");
        assert!(loggable_path(&"/v1/a".repeat(100)).chars().count() <= 200);
    }
}
