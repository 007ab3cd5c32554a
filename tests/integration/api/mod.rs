//! End-to-end: the real binary on port 0, real databases, a provider stand-in, and canary
//! secrets searched for in every log line and response. The fixtures are in
//! `byok_tests::api`.

mod encryption_keys;
mod keys;
mod operations;
mod tokens;
mod validation;
