//! Request identity and W3C trace context: the id a request is logged under (and echoed in
//! `x-request-id`), and the trace an upstream call continues.

use actix_web::http::header::HeaderName;

pub static REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
pub static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");

/// W3C trace context: the caller's trace (from a valid `traceparent`) or a new one, and this
/// request's own span id, which upstream calls name as their parent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceContext {
    /// 32 lower-case hex digits.
    pub trace_id: String,
    /// 16 lower-case hex digits: this request.
    pub span_id: String,
    /// Trace flags, 2 hex digits (`01` = sampled).
    pub flags: String,
}

impl TraceContext {
    /// Continues a valid version-00 `traceparent` (or a future version's first four fields),
    /// else starts a trace.
    pub fn from_request(header: Option<&str>) -> Self {
        let span_id = format!("{:016x}", rand::random::<u64>());
        if let Some((trace_id, flags)) = header.and_then(parse_traceparent) {
            return Self {
                trace_id,
                span_id,
                flags,
            };
        }
        Self {
            trace_id: uuid::Uuid::from_bytes(rand::random()).simple().to_string(),
            span_id,
            flags: "01".into(),
        }
    }

    /// The `traceparent` header for a call made on behalf of this request.
    pub fn traceparent(&self) -> String {
        format!("00-{}-{}-{}", self.trace_id, self.span_id, self.flags)
    }
}

/// (trace id, flags) of a well-formed `traceparent`: `vv-<32 hex>-<16 hex>-<2 hex>`, lower-case,
/// ids not all zero, version not `ff`; version 00 has exactly four fields.
fn parse_traceparent(raw: &str) -> Option<(String, String)> {
    let raw = raw.trim();
    let mut parts = raw.split('-');
    let (version, trace, parent, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let is_hex = |s: &str, n: usize| {
        s.len() == n
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    let ok = is_hex(version, 2)
        && version != "ff"
        && is_hex(trace, 32)
        && is_hex(parent, 16)
        && is_hex(flags, 2)
        && trace.bytes().any(|b| b != b'0')
        && parent.bytes().any(|b| b != b'0')
        && (version != "00" || parts.next().is_none());
    ok.then(|| (trace.to_string(), flags.to_string()))
}

/// The request's id (as logged and echoed in `x-request-id`), for handlers that pass it on.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

/// A random UUIDv4 from the thread's own generator (no system call per request, unlike the
/// OS-backed `Uuid::new_v4`; request ids need uniqueness, not secrecy).
pub fn new_request_id() -> String {
    let bytes: [u8; 16] = rand::random();
    uuid::Builder::from_random_bytes(bytes)
        .into_uuid()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_is_continued_or_started() {
        let t = TraceContext::from_request(Some(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ));
        assert_eq!(t.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(t.flags, "01");
        assert_ne!(t.span_id, "00f067aa0ba902b7");
        assert!(
            t.traceparent()
                .starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-")
        );
        for bad in [
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "garbage",
        ] {
            let t = TraceContext::from_request(Some(bad));
            assert_ne!(t.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736", "{bad}");
            assert_eq!(t.trace_id.len(), 32);
        }
        // A later version may carry more fields.
        let t = TraceContext::from_request(Some(
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-more",
        ));
        assert_eq!(t.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
    }
}
