//! The Fernet specification's test vectors (`shared/fernet-spec/`).
//!
//! The `fernet` crate takes no caller-chosen IV, so the "generate" vector is checked as far as
//! its public API allows: the expected token decrypts to `src` at `now`, and a token we encrypt
//! at `now` carries the same version byte and timestamp, has the same length and decrypts back.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers outside #[test] fns

use base64::Engine;
use chrono::DateTime;
use serde::Deserialize;
use std::path::PathBuf;

fn spec_dir() -> PathBuf {
    if let Ok(d) = std::env::var("FERNET_SPEC_DIR") {
        return PathBuf::from(d);
    }
    let here = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    for up in here.ancestors() {
        let candidate = up.join("shared/fernet-spec");
        if candidate.is_dir() {
            return candidate;
        }
        let vendored = up.join("tests/fixtures/fernet-spec");
        if vendored.is_dir() {
            return vendored;
        }
    }
    panic!("fernet-spec vectors not found; set FERNET_SPEC_DIR");
}

fn load<T: for<'de> Deserialize<'de>>(name: &str) -> Vec<T> {
    let text = std::fs::read_to_string(spec_dir().join(name)).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn unix(ts: &str) -> u64 {
    DateTime::parse_from_rfc3339(ts).unwrap().timestamp() as u64
}

fn decode(token: &str) -> Vec<u8> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token.trim_end_matches('='))
        .unwrap()
}

#[derive(Deserialize)]
struct Generate {
    token: String,
    now: String,
    iv: Vec<u8>,
    src: String,
    secret: String,
}

#[derive(Deserialize)]
struct Verify {
    token: String,
    now: String,
    ttl_sec: u64,
    src: String,
    secret: String,
}

#[derive(Deserialize)]
struct Invalid {
    desc: String,
    token: String,
    now: String,
    ttl_sec: u64,
    secret: String,
}

#[test]
fn generate_vectors() {
    let vectors: Vec<Generate> = load("generate.json");
    assert!(!vectors.is_empty());
    for v in vectors {
        let f = fernet::Fernet::new(&v.secret).unwrap();
        let now = unix(&v.now);
        let expected = decode(&v.token);
        assert_eq!(
            &expected[9..25],
            v.iv.as_slice(),
            "vector IV sits after the header"
        );
        let plain = f.decrypt_at_time(&v.token, None, now).unwrap();
        assert_eq!(plain, v.src.as_bytes());
        let ours = f.encrypt_at_time(v.src.as_bytes(), now);
        let ours_bytes = decode(&ours);
        assert_eq!(ours_bytes.len(), expected.len());
        assert_eq!(&ours_bytes[..9], &expected[..9], "version and timestamp");
        assert_eq!(
            f.decrypt_at_time(&ours, None, now).unwrap(),
            v.src.as_bytes()
        );
    }
}

#[test]
fn verify_vectors() {
    let vectors: Vec<Verify> = load("verify.json");
    assert!(!vectors.is_empty());
    for v in vectors {
        let f = fernet::Fernet::new(&v.secret).unwrap();
        let plain = f
            .decrypt_at_time(&v.token, Some(v.ttl_sec), unix(&v.now))
            .unwrap();
        assert_eq!(plain, v.src.as_bytes());
    }
}

#[test]
fn invalid_vectors() {
    let vectors: Vec<Invalid> = load("invalid.json");
    assert!(vectors.len() >= 5);
    for v in vectors {
        let f = fernet::Fernet::new(&v.secret).unwrap();
        assert!(
            f.decrypt_at_time(&v.token, Some(v.ttl_sec), unix(&v.now))
                .is_err(),
            "{} must be rejected",
            v.desc
        );
    }
}
