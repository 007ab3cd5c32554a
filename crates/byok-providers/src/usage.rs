//! Token counts of a non-streaming answer, read from its bytes as they pass.
//!
//! [`UsageScanner`] follows the JSON structure of an answer chunk by chunk (depth, strings,
//! escapes; a chunk may end anywhere, inside a key or an escape) and keeps a copy of the
//! top-level `usage` object only, at most [`MAX_USAGE_BYTES`]. OpenAI puts `usage` at the end of
//! a chat completion, Anthropic near the start of a message; a `"usage"` inside a string or a
//! nested object is not it. Nothing else is copied or parsed: the cost is one pass over the
//! bytes, and string contents (almost all of a large answer) are skipped with `memchr`.
//!
//! It also counts the structural bytes (`{`, `[`, `,`, `:` outside strings), about one per
//! JSON value or member: what parsing the answer into a tree would cost beyond its bytes.

use serde::Deserialize;

use crate::stream::StreamUsage;

/// Largest `usage` object kept (a real one is a few hundred bytes).
pub const MAX_USAGE_BYTES: usize = 4096;

const USAGE: &[u8] = b"usage";

/// Token counts in either format (OpenAI `prompt_tokens`/`completion_tokens`, Anthropic
/// `input_tokens` + cache reads/writes, `output_tokens`).
#[derive(Deserialize, Default)]
struct UsageFields {
    prompt_tokens: Option<u64>,
    completion_tokens: Option<u64>,
    #[serde(default)]
    input_tokens: u64,
    #[serde(default)]
    cache_read_input_tokens: u64,
    #[serde(default)]
    cache_creation_input_tokens: u64,
    #[serde(default)]
    output_tokens: u64,
}

impl UsageFields {
    fn totals(&self) -> StreamUsage {
        match self.prompt_tokens {
            Some(p) => StreamUsage {
                input_tokens: p,
                output_tokens: self.completion_tokens.unwrap_or(0),
            },
            None => StreamUsage {
                input_tokens: self
                    .input_tokens
                    .saturating_add(self.cache_read_input_tokens)
                    .saturating_add(self.cache_creation_input_tokens),
                output_tokens: self.output_tokens,
            },
        }
    }
}

/// Where the scanner stands with respect to the top-level `usage` member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Member {
    /// Not at `usage`.
    Other,
    /// Read the key `"usage"`; the `:` comes next.
    Key,
    /// Read `"usage":`; the value comes next.
    Colon,
    /// Inside the `usage` object (copied while it fits).
    Value,
}

/// Follows a JSON answer as it passes and keeps its top-level `usage` object.
#[derive(Debug)]
pub struct UsageScanner {
    depth: u32,
    /// The outermost value is an object (only then are there top-level keys).
    top_object: bool,
    in_string: bool,
    escaped: bool,
    /// At depth 1: the next string is a key.
    expect_key: bool,
    /// Reading a top-level key, which still matches `usage` so far.
    key_matches: bool,
    key_len: usize,
    member: Member,
    usage: Vec<u8>,
    /// The `usage` object was larger than [`MAX_USAGE_BYTES`].
    oversized: bool,
    /// A complete `usage` object was read.
    found: bool,
    structure: u64,
}

impl Default for UsageScanner {
    fn default() -> Self {
        Self::new()
    }
}

impl UsageScanner {
    pub fn new() -> Self {
        Self {
            depth: 0,
            top_object: false,
            in_string: false,
            escaped: false,
            expect_key: false,
            key_matches: false,
            key_len: 0,
            member: Member::Other,
            usage: Vec::new(),
            oversized: false,
            found: false,
            structure: 0,
        }
    }

    /// Follows the next bytes of the answer.
    pub fn feed(&mut self, bytes: &[u8]) {
        let mut i = 0;
        while i < bytes.len() {
            if self.in_string {
                i = self.string_bytes(bytes, i);
                continue;
            }
            let b = bytes[i];
            i += 1;
            if self.member == Member::Value {
                self.keep(b);
            }
            match b {
                b'"' => {
                    self.in_string = true;
                    if self.depth == 1 && self.member == Member::Colon {
                        self.member = Member::Other;
                    }
                    if self.depth == 1 && self.top_object && self.expect_key {
                        self.expect_key = false;
                        self.key_matches = true;
                        self.key_len = 0;
                    }
                }
                b'{' | b'[' => {
                    self.structure += 1;
                    if self.depth == 0 {
                        self.top_object = b == b'{';
                        self.expect_key = self.top_object;
                    } else if self.depth == 1 && self.member == Member::Colon {
                        if b == b'{' {
                            self.member = Member::Value;
                            self.usage.clear();
                            self.oversized = false;
                            self.found = false;
                            self.keep(b);
                        } else {
                            self.member = Member::Other;
                        }
                    }
                    self.depth = self.depth.saturating_add(1);
                }
                b'}' | b']' => {
                    self.depth = self.depth.saturating_sub(1);
                    if self.depth == 1 && self.member == Member::Value {
                        self.member = Member::Other;
                        self.found = !self.oversized;
                    }
                }
                b',' => {
                    self.structure += 1;
                    if self.depth == 1 {
                        self.expect_key = self.top_object;
                        if self.member != Member::Value {
                            self.member = Member::Other;
                        }
                    }
                }
                b':' => {
                    self.structure += 1;
                    if self.depth == 1 && self.member == Member::Key {
                        self.member = Member::Colon;
                    }
                }
                b' ' | b'\t' | b'\n' | b'\r' => {}
                _ => {
                    // A scalar `usage` (`null`, a number…) is not an object of counts.
                    if self.depth == 1 && self.member == Member::Colon {
                        self.member = Member::Other;
                    }
                }
            }
        }
    }

    /// Inside a string from `bytes[i]`: returns where to continue.
    fn string_bytes(&mut self, bytes: &[u8], mut i: usize) -> usize {
        let reading_key = self.key_matches;
        let copying = self.member == Member::Value && !self.oversized;
        if self.escaped {
            self.escaped = false;
            let b = bytes[i];
            if copying {
                self.keep(b);
            }
            // An escaped key is never spelled `usage` by a provider: treated as another key.
            self.key_matches = false;
            return i + 1;
        }
        if !reading_key && !copying {
            // Nothing to keep: jump to the next quote or backslash.
            match memchr::memchr2(b'"', b'\\', &bytes[i..]) {
                Some(at) => i += at,
                None => return bytes.len(),
            }
        }
        let b = bytes[i];
        if copying {
            self.keep(b);
        }
        match b {
            b'"' => {
                self.in_string = false;
                if reading_key {
                    self.key_matches = false;
                    self.member = if self.key_len == USAGE.len() {
                        Member::Key
                    } else {
                        Member::Other
                    };
                }
            }
            b'\\' => {
                self.escaped = true;
                self.key_matches = false;
            }
            _ => {
                if reading_key {
                    if self.key_len < USAGE.len() && USAGE[self.key_len] == b {
                        self.key_len += 1;
                    } else {
                        self.key_matches = false;
                    }
                }
            }
        }
        i + 1
    }

    fn keep(&mut self, b: u8) {
        if self.oversized {
            return;
        }
        if self.usage.len() >= MAX_USAGE_BYTES {
            self.oversized = true;
            self.usage = Vec::new();
            return;
        }
        self.usage.push(b);
    }

    /// The counts of the top-level `usage` object read so far (zeros without one).
    pub fn usage(&self) -> StreamUsage {
        if !self.found {
            return StreamUsage::default();
        }
        serde_json::from_slice::<UsageFields>(&self.usage)
            .map(|u| u.totals())
            .unwrap_or_default()
    }

    /// Structural bytes seen (`{`, `[`, `,`, `:` outside strings): about one per JSON value
    /// or object member.
    pub fn structure(&self) -> u64 {
        self.structure
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage_of(body: &[u8]) -> StreamUsage {
        let mut s = UsageScanner::new();
        s.feed(body);
        s.usage()
    }

    fn counts(input: u64, output: u64) -> StreamUsage {
        StreamUsage {
            input_tokens: input,
            output_tokens: output,
        }
    }

    const OPENAI: &str = r#"{"id":"chatcmpl-1","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"say \"usage\":{\"prompt_tokens\":1} \\\" and {\"usage\":{}}"},"usage":{"prompt_tokens":2,"completion_tokens":2},"finish_reason":"stop"}],"usage":{"prompt_tokens":21,"completion_tokens":9,"total_tokens":30,"prompt_tokens_details":{"cached_tokens":0}}}"#;
    const ANTHROPIC: &str = r#"{"id":"msg_1","type":"message","role":"assistant","usage":{"input_tokens":10,"cache_read_input_tokens":5,"cache_creation_input_tokens":1,"output_tokens":7},"content":[{"type":"text","text":"the \"usage\": {\"input_tokens\": 99}"},{"type":"tool_use","id":"t","name":"f","input":{"usage":{"input_tokens":98}}}],"model":"claude","stop_reason":"end_turn"}"#;

    #[test]
    fn reads_both_formats() {
        assert_eq!(usage_of(OPENAI.as_bytes()), counts(21, 9));
        assert_eq!(usage_of(ANTHROPIC.as_bytes()), counts(16, 7));
    }

    #[test]
    fn any_split_gives_the_same_counts() {
        for (body, want) in [(OPENAI, counts(21, 9)), (ANTHROPIC, counts(16, 7))] {
            let body = body.as_bytes();
            for cut in 0..=body.len() {
                let mut s = UsageScanner::new();
                s.feed(&body[..cut]);
                s.feed(&body[cut..]);
                assert_eq!(s.usage(), want, "cut at {cut}");
            }
            // Byte by byte.
            let mut s = UsageScanner::new();
            for b in body {
                s.feed(std::slice::from_ref(b));
            }
            assert_eq!(s.usage(), want);
        }
    }

    #[test]
    fn usage_elsewhere_is_ignored() {
        // Only inside strings and nested objects, or a top-level key that merely starts or
        // ends like it.
        for body in [
            r#"{"content":"\"usage\":{\"prompt_tokens\":5}"}"#,
            r#"{"choices":[{"usage":{"prompt_tokens":5,"completion_tokens":5}}]}"#,
            r#"{"usages":{"prompt_tokens":5},"usag":{"prompt_tokens":5},"xusage":{"prompt_tokens":5}}"#,
            r#"{"us\u0061ge":{"prompt_tokens":5}}"#,
            r#"[{"usage":{"prompt_tokens":5}}]"#,
            r#"["usage",{"prompt_tokens":5}]"#,
            r#"{"a":"usage","b":{"prompt_tokens":5}}"#,
            r#"{"usage":null,"x":{"prompt_tokens":5}}"#,
            r#"{"usage":[{"prompt_tokens":5}]}"#,
            r#"{"usage":"{"prompt_tokens":5}","x":{"prompt_tokens":5}}"#,
            "not json at all \"usage\":{\"prompt_tokens\":5}",
        ] {
            assert_eq!(usage_of(body.as_bytes()), counts(0, 0), "{body}");
        }
    }

    #[test]
    fn spacing_and_key_position_do_not_matter() {
        let body = b"{ \"a\" : [1, {\"usage\": 2}] ,\n \"usage\" :\t{ \"prompt_tokens\" : 3 , \"completion_tokens\" : 4 } }";
        assert_eq!(usage_of(body), counts(3, 4));
        // Keys containing escapes before `usage` do not confuse the scanner.
        let body = br#"{"a\"b":"c\\","usage":{"completion_tokens":1,"prompt_tokens":2}}"#;
        assert_eq!(usage_of(body), counts(2, 1));
    }

    #[test]
    fn an_oversized_or_unfinished_usage_counts_nothing() {
        let big = format!(
            r#"{{"usage":{{"prompt_tokens":1,"pad":"{}"}}}}"#,
            "x".repeat(MAX_USAGE_BYTES)
        );
        let mut s = UsageScanner::new();
        s.feed(big.as_bytes());
        assert_eq!(s.usage(), counts(0, 0));
        assert!(
            s.usage.capacity() <= MAX_USAGE_BYTES * 2,
            "the copy stays bounded"
        );
        assert_eq!(
            usage_of(br#"{"usage":{"prompt_tokens":1,"completion_tokens":2"#),
            counts(0, 0)
        );
    }

    #[test]
    fn counts_structure_outside_strings() {
        let mut s = UsageScanner::new();
        s.feed(br#"{"a":[1,2,3],"b":"{[,:]}"}"#);
        assert_eq!(s.structure(), 7);
    }
}
