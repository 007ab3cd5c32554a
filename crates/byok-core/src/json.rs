//! Reading client JSON without ever quoting it back.
//!
//! serde's messages carry the offending value (`invalid type: string "sk-…", expected u32`),
//! and a value can be a key sent in the wrong field. Every client document is read through
//! these functions, whose errors name the field (its path) and what was expected, never a value.

use serde::de::DeserializeOwned;
use serde_json::Value;

/// Why a client document was refused. `message` is safe to show and to log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonProblem {
    /// The bytes are not JSON at all (as opposed to JSON of the wrong shape).
    pub syntax: bool,
    pub message: String,
}

impl std::fmt::Display for JsonProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// Parses `bytes` as a `T`.
pub fn from_slice<'de, T: serde::Deserialize<'de>>(bytes: &'de [u8]) -> Result<T, JsonProblem> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value =
        serde_path_to_error::deserialize(&mut de).map_err(|e| describe(e.path(), e.inner()))?;
    // Trailing characters after the document.
    de.end()
        .map_err(|e| describe(&serde_path_to_error::Track::new().path(), &e))?;
    Ok(value)
}

/// Interprets `value` as a `T`.
pub fn from_value<T: DeserializeOwned>(value: Value) -> Result<T, JsonProblem> {
    serde_path_to_error::deserialize(value).map_err(|e| describe(e.path(), e.inner()))
}

/// As [`from_value`], for a document found at field `at` of a larger one: the paths in the
/// message start with `at`.
pub fn from_value_at<T: DeserializeOwned>(value: Value, at: &str) -> Result<T, JsonProblem> {
    serde_path_to_error::deserialize(value).map_err(|e| describe_at(at, e.path(), e.inner()))
}

/// A field name worth repeating: a short identifier, as schema fields and environment names
/// are (a client may put anything in a key, a credential included; those are never repeated).
fn plain(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 32
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// The field path, with any key that is not a plain identifier hidden.
fn field(path: &serde_path_to_error::Path, drop_last: bool) -> String {
    use serde_path_to_error::Segment;
    let mut out = String::new();
    let n = path.iter().count().saturating_sub(usize::from(drop_last));
    for seg in path.iter().take(n) {
        match seg {
            Segment::Seq { index } => out.push_str(&format!("[{index}]")),
            Segment::Map { key } | Segment::Enum { variant: key } => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(if plain(key) { key } else { "<key>" });
            }
            Segment::Unknown => {}
        }
    }
    out
}

fn describe(path: &serde_path_to_error::Path, e: &serde_json::Error) -> JsonProblem {
    describe_at("", path, e)
}

fn describe_at(
    prefix: &str,
    path: &serde_path_to_error::Path,
    e: &serde_json::Error,
) -> JsonProblem {
    use serde_json::error::Category;
    let position = if e.line() > 0 {
        format!(" (line {}, column {})", e.line(), e.column())
    } else {
        String::new()
    };
    if matches!(
        e.classify(),
        Category::Syntax | Category::Eof | Category::Io
    ) {
        return JsonProblem {
            syntax: true,
            message: format!("the body is not valid JSON{position}"),
        };
    }
    let raw = e.to_string();
    // serde's own text without the position suffix serde_json appends.
    let text = raw.split(" at line ").next().unwrap_or_default();
    let unknown = text.starts_with("unknown field `");
    let what = if let Some(rest) = text.strip_prefix("missing field `") {
        // A field the schema names: safe.
        format!("missing field `{}`", rest.trim_end_matches('`'))
    } else if let Some(rest) = text.strip_prefix("unknown field `") {
        let name = rest.split('`').next().unwrap_or_default();
        if plain(name) {
            format!("unknown field `{name}`")
        } else {
            "unknown field".to_string()
        }
    } else if let Some((_, expected)) = text.rsplit_once(", expected ")
        && !expected.contains('"')
    {
        // `invalid type: string "…", expected u32`: keep what was expected, drop what came
        // (the last `, expected`: the value itself may contain one).
        format!("expected {expected}")
    } else {
        "invalid value".to_string()
    };
    // An unknown field's path ends with the field itself, named (or not) in `what`.
    let at = match field(path, unknown) {
        f if prefix.is_empty() => f,
        f if f.is_empty() => prefix.to_string(),
        f if f.starts_with('[') => format!("{prefix}{f}"),
        f => format!("{prefix}.{f}"),
    };
    let message = if at.is_empty() {
        format!("{what}{position}")
    } else {
        format!("{at}: {what}{position}")
    };
    JsonProblem {
        syntax: false,
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use serde_json::json;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[expect(dead_code, reason = "only parsed")]
    struct Inner {
        port: u32,
        mode: Mode,
    }

    #[derive(Debug, Deserialize)]
    #[serde(rename_all = "snake_case")]
    enum Mode {
        UserOnly,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[expect(dead_code, reason = "only parsed")]
    struct Outer {
        name: String,
        inner: Inner,
        list: Vec<u8>,
    }

    const SECRET: &str = "sk-proj-CANARY-0123456789";

    fn problem(v: Value) -> String {
        from_value::<Outer>(v).unwrap_err().message
    }

    #[test]
    fn names_the_field_and_the_expected_type_never_the_value() {
        let ok = json!({"name": "n", "inner": {"port": 22, "mode": "user_only"}, "list": [1]});
        assert!(from_value::<Outer>(ok.clone()).is_ok());
        let cases = [
            (
                json!({"name": SECRET, "inner": {"port": SECRET, "mode": "user_only"}, "list": []}),
                "inner.port: expected u32",
            ),
            (
                json!({"name": "n", "inner": {"port": 1, "mode": SECRET}, "list": []}),
                "inner.mode: expected `user_only`",
            ),
            (
                json!({"name": 5, "inner": {"port": 1, "mode": "user_only"}, "list": []}),
                "name: expected a string",
            ),
            (
                json!({"name": "n", "inner": {"port": 1, "mode": "user_only"}, "list": [SECRET]}),
                "list[0]: expected u8",
            ),
            (
                json!({"name": "n", "inner": {"port": 1, "mode": "user_only"}, "list": [], SECRET: 1}),
                "unknown field",
            ),
            (
                json!({"name": "n", "inner": {"port": 1, "mode": "user_only"}, "list": [], "extra": 1}),
                "unknown field `extra`",
            ),
            (
                json!({"inner": {"port": 1, "mode": "user_only"}, "list": []}),
                "missing field `name`",
            ),
        ];
        for (doc, want) in cases {
            let got = problem(doc);
            assert!(got.starts_with(want), "{got} (wanted {want})");
            assert!(!got.contains("CANARY"), "{got}");
        }
        // A value that imitates serde's wording is not taken for it.
        let tricky = format!("x, expected {SECRET}");
        let got = problem(
            json!({"name": "n", "inner": {"port": tricky, "mode": "user_only"}, "list": []}),
        );
        assert_eq!(got, "inner.port: expected u32");
        let got = problem(
            json!({"name": "n", "inner": {"port": 1, "mode": format!("{tricky}\"")}, "list": []}),
        );
        assert!(!got.contains("CANARY"), "{got}");
        let p = from_value_at::<Inner>(json!({"port": SECRET, "mode": "user_only"}), "config")
            .unwrap_err();
        assert_eq!(p.message, "config.port: expected u32");
        let bytes = format!(
            r#"{{"name": "n", "inner": {{"port": "{SECRET}", "mode": "user_only"}}, "list": []}}"#
        );
        let p = from_slice::<Outer>(bytes.as_bytes()).unwrap_err();
        assert!(
            !p.syntax && p.message.starts_with("inner.port: expected u32 (line 1"),
            "{}",
            p.message
        );
        let p = from_slice::<Outer>(format!("{{\"name\": \"{SECRET}").as_bytes()).unwrap_err();
        assert!(p.syntax && !p.message.contains("CANARY"), "{}", p.message);
        let p = from_slice::<Outer>(b"{} trailing").unwrap_err();
        assert!(!p.message.contains("trailing"), "{}", p.message);
    }
}
