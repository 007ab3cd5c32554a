//! Scrubbing credentials out of text that came from a provider (error messages).

use std::sync::atomic::{AtomicU64, Ordering};

const PREFIXES: [&str; 7] = ["sk-", "gsk_", "hf_", "pplx-", "xai-", "AIza", "byok_"];
const MAX_CHARS: usize = 500;

/// Removes `key` itself and anything shaped like a credential (`sk-…`, `gsk_…`, `hf_…`,
/// `pplx-…`, `byok_…`, at a word start) from `message`, then cuts it to 500 characters.
pub fn scrub(message: &str, key: Option<&str>) -> String {
    let mut text = message.to_string();
    if let Some(k) = key.filter(|k| k.len() >= 4) {
        text = text.replace(k, "[redacted]");
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text.as_str();
    let mut at_word_start = true;
    'outer: while !rest.is_empty() {
        if at_word_start {
            for p in PREFIXES {
                if rest.starts_with(p) {
                    let len = rest
                        .char_indices()
                        .find(|(_, c)| {
                            !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '*' | '.'))
                        })
                        .map_or(rest.len(), |(i, _)| i);
                    // A sentence's full stop is not part of the key.
                    let len = rest[..len].trim_end_matches('.').len();
                    if len >= p.len() + 6 {
                        out.push_str("[redacted]");
                        rest = &rest[len..];
                        at_word_start = false;
                        continue 'outer;
                    }
                }
            }
        }
        let mut chars = rest.chars();
        if let Some(c) = chars.next() {
            out.push(c);
            at_word_start = !(c.is_alphanumeric() || c == '_' || c == '-');
        }
        rest = chars.as_str();
    }
    if out.chars().count() > MAX_CHARS {
        out = out.chars().take(MAX_CHARS).collect::<String>() + "…";
    }
    out
}

/// A process-unique id with `prefix` (for tool calls and messages the upstream left unnamed).
pub fn fresh_id(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}{nanos:x}{n:04x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scrub_removes_keys() {
        let m = scrub(
            "Incorrect API key provided: sk-proj-abcdefghijklmnop. You can find gsk_1234567890abc here; mykey123",
            Some("mykey123"),
        );
        assert_eq!(
            m,
            "Incorrect API key provided: [redacted]. You can find [redacted] here; [redacted]"
        );
        assert_eq!(scrub("task-runner failed", None), "task-runner failed");
        assert_ne!(fresh_id("toolu_"), fresh_id("toolu_"));
    }
}
