//! Test support: isolated databases, the real binary on port 0, a provider stand-in, and
//! canary checks for secrets.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    missing_debug_implementations
)]

pub mod brigade;
pub mod db;
pub mod http;
pub mod k8s;
pub mod keycloak;
pub mod llm;
pub mod oidc;
pub mod server;
pub mod sshd;
pub mod standin;
pub mod tls;

/// Canary secrets: planted by tests, searched for in every log and response body.
pub mod canary {
    pub const OPENAI: &str = "sk-proj-CANARYopenai0123456789abcdefXYZ";
    pub const ANTHROPIC: &str = "sk-ant-api03-CANARYanthropic0123456789xyz";
    pub const OPENROUTER: &str = "sk-or-v1-CANARYopenrouter0123456789abcdef";
    pub const GROQ: &str = "gsk_CANARYgroq0123456789abcdefghijkl";
    pub const CUSTOM: &str = "custom-CANARY-0123456789";
    pub const PERPLEXITY: &str = "pplx-CANARYperplexity0123456789abcd";
    /// The operator's system default key.
    pub const SYSTEM: &str = "sk-or-v1-CANARYsystem0123456789abcdefgh";

    /// The distinctive part of every canary (what a leak would contain).
    pub const MARKERS: &[&str] = &[
        "CANARYopenai",
        "CANARYanthropic",
        "CANARYopenrouter",
        "CANARYgroq",
        "custom-CANARY",
        "CANARYperplexity",
        "CANARYsystem",
    ];

    pub fn assert_absent(what: &str, text: &str) {
        for m in MARKERS {
            assert!(!text.contains(m), "canary secret {m} leaked into {what}");
        }
    }
}

/// The Python interpreter with `cryptography` (set by `make test`).
pub fn python() -> String {
    std::env::var("BYOK_TEST_PYTHON").unwrap_or_else(|_| "python3".into())
}
