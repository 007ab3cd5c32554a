//! Test support: isolated databases, the real binary on port 0, a provider stand-in, and
//! canary checks for secrets.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    missing_debug_implementations
)]

pub mod api;
pub mod brigade;
pub mod browser;
pub mod db;
pub mod http;
pub mod k8s;
pub mod keycloak;
pub mod llm;
pub mod oidc;
pub mod pg;
pub mod redis;
pub mod server;
pub mod sshd;
pub mod standin;
pub mod tls;

/// Runs each listed test on a fresh SQLite file and on a fresh PostgreSQL database: for every
/// `name`, `sqlite::name` and `postgres::name` call `super::name(kind)` (an `async fn(Kind)`
/// in the calling module). Once per module: it defines the modules `sqlite` and `postgres`.
#[macro_export]
macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::db::Kind::Sqlite).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::db::Kind::Postgres).await;
                }
            )*
        }
    };
}

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
    /// A legacy front end's `session_token` (URL-safe, like `secrets.token_urlsafe(32)`).
    pub const SESSION: &str = "Lg7-CANARYsession_Qw3rTy9uIoP0aSdFgHjKlZx";

    /// The distinctive part of every canary (what a leak would contain).
    pub const MARKERS: &[&str] = &[
        "CANARYopenai",
        "CANARYanthropic",
        "CANARYopenrouter",
        "CANARYgroq",
        "custom-CANARY",
        "CANARYperplexity",
        "CANARYsystem",
        "CANARYsession",
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

/// Runs Python code (`-c`) with arguments and returns its trimmed stdout.
pub fn run_python(code: &str, args: &[&str]) -> String {
    let out = std::process::Command::new(python())
        .arg("-c")
        .arg(code)
        .args(args)
        .output()
        .expect("python not found: set BYOK_TEST_PYTHON (make test does)");
    assert!(
        out.status.success(),
        "python failed (is `cryptography` installed? make test installs it): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// Python's `cryptography.fernet`, as the legacy service used it.
pub mod py_fernet {
    use super::run_python;

    pub fn generate_key() -> String {
        run_python(
            "from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())",
            &[],
        )
    }

    pub fn encrypt(key: &str, plain: &str) -> String {
        run_python(
            "import sys; from cryptography.fernet import Fernet; \
             print(Fernet(sys.argv[1].encode()).encrypt(sys.argv[2].encode()).decode())",
            &[key, plain],
        )
    }

    pub fn decrypt(key: &str, token: &str) -> String {
        run_python(
            "import sys; from cryptography.fernet import Fernet; \
             print(Fernet(sys.argv[1].encode()).decrypt(sys.argv[2].encode()).decode())",
            &[key, token],
        )
    }
}

/// A `reqwest` client builder with ring installed as the process's rustls provider (reqwest
/// 0.13 panics without one).
pub fn http_client() -> reqwest::ClientBuilder {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
}
