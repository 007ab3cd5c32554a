//! Connection-config validation: what a client may send for each server type (unknown
//! fields, types, ranges, required secrets), before anything is sealed.

use std::collections::BTreeMap;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::Value;

use crate::error::CoreError;
use crate::execution::server::ServerType;

/// What every secret field shows in responses.
pub const MASK: &str = "***masked***";

pub(crate) fn bad_config(message: impl Into<String>) -> CoreError {
    CoreError::invalid("invalid_connection_config", message)
}

fn default_port() -> u32 {
    22
}

/// The legacy service's default when a client leaves `auth_method` out.
pub(crate) const DEFAULT_AUTH_METHOD: &str = "key";

fn default_auth_method() -> String {
    DEFAULT_AUTH_METHOD.into()
}

pub(crate) fn default_image() -> String {
    "python:3.11-slim".into()
}

pub(crate) fn default_namespace() -> String {
    "default".into()
}

/// SSH connection settings, as a client sends them.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
#[expect(
    dead_code,
    reason = "declared for deny_unknown_fields; secrets are read from the raw JSON"
)]
struct SshInput {
    host: String,
    #[serde(default = "default_port")]
    port: u32,
    username: String,
    #[serde(default = "default_auth_method")]
    auth_method: String,
    #[serde(default)]
    password: Option<Value>,
    #[serde(default)]
    private_key: Option<Value>,
    #[serde(default)]
    passphrase: Option<Value>,
    /// Set only by trusting the presented key; a value sent by a client is ignored.
    #[serde(default)]
    host_key_fingerprint: Option<Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
#[expect(
    dead_code,
    reason = "declared for deny_unknown_fields; secrets are read from the raw JSON"
)]
struct DockerInput {
    #[serde(default = "default_image")]
    image: String,
    #[serde(default)]
    container_name: Option<String>,
    /// A list of `host:container` strings, or the legacy map `{host: container}` (checked by
    /// [`docker_volumes`]).
    #[serde(default)]
    volumes: Option<Value>,
    #[serde(default)]
    environment: Option<BTreeMap<String, Value>>,
    /// `unix:///path/to/docker.sock`, `tcp://host:2376` or `https://host:2376`.
    #[serde(default)]
    endpoint: Option<String>,
    #[serde(default)]
    tls_ca: Option<Value>,
    #[serde(default)]
    tls_cert: Option<Value>,
    #[serde(default)]
    tls_key: Option<Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
#[expect(
    dead_code,
    reason = "declared for deny_unknown_fields; secrets are read from the raw JSON"
)]
struct KubernetesInput {
    cluster_url: String,
    #[serde(default = "default_namespace")]
    namespace: String,
    #[serde(default)]
    service_account_token: Option<Value>,
    #[serde(default)]
    kubeconfig: Option<Value>,
    #[serde(default)]
    ca_cert: Option<String>,
    /// The image commands run in (default `busybox:1.36`).
    #[serde(default)]
    image: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LocalInput {}

fn host_ok(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 253
        && !h
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || "/@?#".contains(c))
}

fn dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// A secret field as sent: a new value, the mask (keep what is stored), or null (clear).
pub(crate) enum Incoming {
    Absent,
    Keep,
    Clear,
    Set(SecretString),
}

pub(crate) fn incoming(v: Option<&Value>, field: &str) -> Result<Incoming, CoreError> {
    match v {
        None => Ok(Incoming::Absent),
        Some(Value::Null) => Ok(Incoming::Clear),
        Some(Value::String(s)) if s == MASK => Ok(Incoming::Keep),
        Some(Value::String(s)) if s.is_empty() => Ok(Incoming::Clear),
        Some(Value::String(s)) if s.len() > 64 * 1024 => {
            Err(bad_config(format!("{field} is too long")))
        }
        Some(Value::String(s)) => Ok(Incoming::Set(SecretString::from(s.clone()))),
        Some(_) => Err(bad_config(format!("{field} must be a string"))),
    }
}

/// The longest volume entry (path or `host:container` string).
const MAX_VOLUME_LEN: usize = 1024;

/// Docker `volumes` in the stored form: a list of `host:container` strings. Accepts that list,
/// or the legacy service's map `{"host_path": "container_path"}` (`Dict[str, str]`), whose
/// entries become `host_path:container_path` (in key order); `null` is no volumes.
pub(crate) fn docker_volumes(v: &Value) -> Result<Option<Vec<String>>, CoreError> {
    let ok = |s: &str| !s.is_empty() && s.len() <= MAX_VOLUME_LEN && !s.contains('\0');
    match v {
        Value::Null => Ok(None),
        Value::Array(items) => items
            .iter()
            .map(|i| match i.as_str() {
                Some(s) if ok(s) => Ok(s.to_string()),
                _ => Err(bad_config("volumes must be non-empty strings")),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        Value::Object(map) => map
            .iter()
            .map(|(host, container)| match container.as_str() {
                // A `:` would make `host:container` ambiguous (it separates the mode too).
                Some(c) if ok(host) && ok(c) && !host.contains(':') && !c.contains(':') => {
                    Ok(format!("{host}:{c}"))
                }
                _ => Err(bad_config(
                    "volumes as a map must map non-empty host paths to non-empty container \
                     paths, without ':'",
                )),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        _ => Err(bad_config(
            "volumes must be a list of \"host:container\" strings or a map of host path to \
             container path",
        )),
    }
}

/// Validates a config for `kind` (unknown fields, types, ranges, required secrets) without
/// sealing anything. `stored` is the previously stored config (for masked placeholders).
pub(crate) fn validate(
    kind: ServerType,
    config: &Value,
    stored: Option<&Value>,
) -> Result<(), CoreError> {
    let has_secret = |field: &str| -> Result<bool, CoreError> {
        Ok(match incoming(config.get(field), field)? {
            Incoming::Set(_) => true,
            Incoming::Keep | Incoming::Absent => stored.is_some_and(|s| s.get(field).is_some()),
            Incoming::Clear => false,
        })
    };
    let parse_err = |p: crate::json::JsonProblem| bad_config(p.message);
    match kind {
        ServerType::Ssh => {
            let c: SshInput = crate::json::from_value_at(config.clone(), "connection_config")
                .map_err(parse_err)?;
            if !host_ok(&c.host) {
                return Err(bad_config("host must be a host name or address"));
            }
            if !(1..=65535).contains(&c.port) {
                return Err(bad_config("port must be between 1 and 65535"));
            }
            if c.username.trim().is_empty() || c.username.len() > 64 {
                return Err(bad_config("username must be 1 to 64 characters"));
            }
            match c.auth_method.as_str() {
                "password" if !has_secret("password")? => {
                    return Err(bad_config("auth_method password needs a password"));
                }
                "key" if !has_secret("private_key")? => {
                    return Err(bad_config("auth_method key needs a private_key"));
                }
                "password" | "key" => {}
                _ => return Err(bad_config("auth_method must be password or key")),
            }
            if let Incoming::Set(k) = incoming(c.private_key.as_ref(), "private_key")?
                && !k.expose_secret().contains("PRIVATE KEY")
            {
                return Err(bad_config(
                    "private_key must be a PEM or OpenSSH private key",
                ));
            }
        }
        ServerType::Docker => {
            let c: DockerInput = crate::json::from_value_at(config.clone(), "connection_config")
                .map_err(parse_err)?;
            if c.image.trim().is_empty()
                || c.image.len() > 255
                || c.image.contains(char::is_whitespace)
            {
                return Err(bad_config("image must be an image reference"));
            }
            if let Some(e) = &c.endpoint {
                let ok = e.starts_with("unix:///")
                    || ((e.starts_with("tcp://")
                        || e.starts_with("https://")
                        || e.starts_with("http://"))
                        && e.len() > 8);
                if !ok {
                    return Err(bad_config(
                        "endpoint must be unix:///path, tcp://host:port or https://host:port",
                    ));
                }
            }
            for (k, v) in c.environment.iter().flatten() {
                if k.is_empty() || k.contains('=') || k.contains('\0') {
                    return Err(bad_config(
                        "environment names must be non-empty, without '='",
                    ));
                }
                incoming(Some(v), "environment value")?;
            }
            for f in ["tls_ca", "tls_cert", "tls_key"] {
                if let Incoming::Set(v) = incoming(config.get(f), f)? {
                    let marker = if f == "tls_key" {
                        "PRIVATE KEY"
                    } else {
                        "BEGIN CERTIFICATE"
                    };
                    if !v.expose_secret().contains(marker) {
                        return Err(bad_config(format!("{f} must be PEM")));
                    }
                }
            }
            if has_secret("tls_cert")? != has_secret("tls_key")? {
                return Err(bad_config("tls_cert and tls_key go together"));
            }
            if c.endpoint
                .as_deref()
                .is_some_and(|e| e.starts_with("https://"))
                && !has_secret("tls_ca")?
            {
                return Err(bad_config("an https:// endpoint needs tls_ca"));
            }
            if let Some(v) = &c.volumes {
                docker_volumes(v)?;
            }
            if c.container_name.as_ref().is_some_and(|n| n.len() > 128) {
                return Err(bad_config("container_name is too long"));
            }
        }
        ServerType::Kubernetes => {
            let c: KubernetesInput =
                crate::json::from_value_at(config.clone(), "connection_config")
                    .map_err(parse_err)?;
            if !(c.cluster_url.starts_with("https://") || c.cluster_url.starts_with("http://"))
                || c.cluster_url.len() > 2048
            {
                return Err(bad_config("cluster_url must be an http(s) URL"));
            }
            if c.ca_cert
                .as_ref()
                .is_some_and(|pem| !pem.contains("BEGIN CERTIFICATE") || pem.len() > 64 * 1024)
            {
                return Err(bad_config("ca_cert must be a PEM certificate bundle"));
            }
            if !dns_label(&c.namespace) {
                return Err(bad_config("namespace must be a DNS label (a-z, 0-9, -)"));
            }
            if !has_secret("service_account_token")? && !has_secret("kubeconfig")? {
                return Err(bad_config(
                    "a service_account_token or a kubeconfig is needed",
                ));
            }
        }
        ServerType::Local => {
            let _: LocalInput = crate::json::from_value_at(config.clone(), "connection_config")
                .map_err(parse_err)?;
        }
    }
    Ok(())
}
