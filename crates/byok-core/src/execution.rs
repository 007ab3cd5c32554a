//! Execution servers: where users' agents run code. Typed, validated connection configs per
//! server type; secret fields are sealed (encrypted) before storage and masked in every
//! response.

use std::collections::BTreeMap;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use uuid::Uuid;

use crate::domain::UserId;
pub use crate::error::ExecError;
use crate::error::{CoreError, CryptoError};
use crate::ports::SecretCipher;

/// Where an SSH server's pinned host-key fingerprint (`SHA256:…`) is kept in its config.
pub const HOST_KEY_FIELD: &str = "host_key_fingerprint";

/// The pinned SSH host-key fingerprint of a (sealed or opened) config.
pub fn pinned_host_key(config: &Value) -> Option<&str> {
    config.get(HOST_KEY_FIELD).and_then(Value::as_str)
}

/// The config with `fingerprint` pinned.
pub fn pin_host_key(stored: &Value, fingerprint: &str) -> Value {
    let mut v = stored.clone();
    if let Some(o) = v.as_object_mut() {
        o.insert(
            HOST_KEY_FIELD.into(),
            Value::String(fingerprint.to_string()),
        );
    }
    v
}

/// What every secret field shows in responses.
pub const MASK: &str = "***masked***";
/// The stored form of a secret field: `{"$sealed": "<Fernet token>"}`.
const SEALED: &str = "$sealed";

/// The kinds of execution server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ServerType {
    Ssh,
    Local,
    Docker,
    Kubernetes,
}

impl ServerType {
    pub fn as_str(self) -> &'static str {
        match self {
            ServerType::Ssh => "ssh",
            ServerType::Local => "local",
            ServerType::Docker => "docker",
            ServerType::Kubernetes => "kubernetes",
        }
    }

    /// The secret fields of this type's config (for `environment`, every value).
    fn secret_fields(self) -> &'static [&'static str] {
        match self {
            ServerType::Ssh => &["password", "private_key", "passphrase"],
            ServerType::Kubernetes => &["service_account_token", "kubeconfig"],
            ServerType::Docker => &["tls_ca", "tls_cert", "tls_key"],
            ServerType::Local => &[],
        }
    }
}

impl FromStr for ServerType {
    type Err = CoreError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "ssh" => Ok(Self::Ssh),
            "local" => Ok(Self::Local),
            "docker" => Ok(Self::Docker),
            "kubernetes" => Ok(Self::Kubernetes),
            _ => Err(invalid(
                "invalid_server_type",
                "server_type must be ssh, local, docker or kubernetes",
            )),
        }
    }
}

fn invalid(code: &'static str, message: impl Into<String>) -> CoreError {
    CoreError::InvalidInput {
        code,
        message: message.into(),
    }
}

fn bad_config(message: impl Into<String>) -> CoreError {
    invalid("invalid_connection_config", message)
}

fn default_port() -> u32 {
    22
}

fn default_image() -> String {
    "python:3.11-slim".into()
}

fn default_namespace() -> String {
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
    #[serde(default)]
    volumes: Option<Vec<String>>,
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
enum Incoming {
    Absent,
    Keep,
    Clear,
    Set(SecretString),
}

fn incoming(v: Option<&Value>, field: &str) -> Result<Incoming, CoreError> {
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

/// Validates a config for `kind` (unknown fields, types, ranges, required secrets) without
/// sealing anything. `stored` is the previously stored config (for masked placeholders).
fn validate(kind: ServerType, config: &Value, stored: Option<&Value>) -> Result<(), CoreError> {
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
            if c.volumes
                .iter()
                .flatten()
                .any(|v| v.is_empty() || v.len() > 1024)
            {
                return Err(bad_config("volumes must be non-empty strings"));
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

fn sealed_token(v: &Value) -> Option<&str> {
    v.get(SEALED).and_then(Value::as_str)
}

fn seal_value(
    v: Option<&Value>,
    stored: Option<&Value>,
    field: &str,
    cipher: &dyn SecretCipher,
) -> Result<Option<Value>, CoreError> {
    Ok(match incoming(v, field)? {
        Incoming::Set(secret) => Some(json!({ SEALED: cipher.encrypt(&secret)? })),
        Incoming::Keep | Incoming::Absent => stored.cloned(),
        Incoming::Clear => None,
    })
}

/// Validates `config` for `kind` and returns the form to store: secret fields sealed with
/// `cipher`; a masked placeholder (or an absent field) keeps the stored secret; `null` or ""
/// clears it.
pub fn seal_config(
    kind: ServerType,
    config: &Value,
    stored: Option<&Value>,
    cipher: &dyn SecretCipher,
) -> Result<Value, CoreError> {
    if !config.is_object() {
        return Err(bad_config("connection_config must be an object"));
    }
    validate(kind, config, stored)?;
    let mut out: Map<String, Value> = config.as_object().cloned().unwrap_or_default();
    for field in kind.secret_fields() {
        let prev = stored.and_then(|s| s.get(*field));
        match seal_value(config.get(*field), prev, field, cipher)? {
            Some(v) => {
                out.insert((*field).to_string(), v);
            }
            None => {
                out.remove(*field);
            }
        }
    }
    if kind == ServerType::Docker {
        let prev_env = stored.and_then(|s| s.get("environment"));
        match config.get("environment") {
            Some(Value::Object(env)) => {
                let mut sealed = Map::new();
                for (k, v) in env {
                    if let Some(s) =
                        seal_value(Some(v), prev_env.and_then(|p| p.get(k)), k, cipher)?
                    {
                        sealed.insert(k.clone(), s);
                    }
                }
                out.insert("environment".into(), Value::Object(sealed));
            }
            None => {
                if let Some(p) = prev_env {
                    out.insert("environment".into(), p.clone());
                }
            }
            Some(_) => {
                out.remove("environment");
            }
        }
    }
    if kind == ServerType::Ssh {
        // The pin changes only through trust-host-key, never through a config update.
        out.remove(HOST_KEY_FIELD);
        if let Some(pin) = stored.and_then(|s| s.get(HOST_KEY_FIELD)) {
            out.insert(HOST_KEY_FIELD.into(), pin.clone());
        }
    }
    // Normalise defaults so every stored config is complete.
    let normal = match kind {
        ServerType::Ssh => json!({"port": 22}),
        ServerType::Docker => json!({"image": default_image()}),
        ServerType::Kubernetes => json!({"namespace": default_namespace()}),
        ServerType::Local => json!({}),
    };
    for (k, v) in normal.as_object().into_iter().flatten() {
        out.entry(k.clone()).or_insert_with(|| v.clone());
    }
    Ok(Value::Object(out))
}

/// The stored config as responses show it: every sealed value replaced by [`MASK`].
pub fn mask_config(stored: &Value) -> Value {
    match stored {
        Value::Object(o) if o.contains_key(SEALED) => Value::String(MASK.into()),
        Value::Object(o) => {
            Value::Object(o.iter().map(|(k, v)| (k.clone(), mask_config(v))).collect())
        }
        other => other.clone(),
    }
}

/// The stored config with every sealed value decrypted (for a backend, at the point of use).
pub fn open_config(stored: &Value, cipher: &dyn SecretCipher) -> Result<OpenConfig, CryptoError> {
    fn walk(
        v: &Value,
        cipher: &dyn SecretCipher,
        out: &mut Vec<(String, SecretString)>,
        path: &str,
    ) -> Result<Value, CryptoError> {
        Ok(match v {
            Value::Object(o) if o.contains_key(SEALED) => {
                let token = sealed_token(v).unwrap_or_default();
                out.push((path.to_string(), cipher.decrypt(token)?));
                Value::String(MASK.into())
            }
            Value::Object(o) => {
                let mut m = Map::new();
                for (k, v) in o {
                    let p = if path.is_empty() {
                        k.clone()
                    } else {
                        format!("{path}.{k}")
                    };
                    m.insert(k.clone(), walk(v, cipher, out, &p)?);
                }
                Value::Object(m)
            }
            other => other.clone(),
        })
    }
    let mut secrets = Vec::new();
    let public = walk(stored, cipher, &mut secrets, "")?;
    Ok(OpenConfig { public, secrets })
}

/// Whether every sealed value of a stored config was written by the primary key.
pub fn config_is_current(stored: &Value, cipher: &dyn SecretCipher) -> bool {
    match stored {
        Value::Object(o) if o.contains_key(SEALED) => {
            sealed_token(stored).is_some_and(|t| cipher.is_current(t))
        }
        Value::Object(o) => o.values().all(|v| config_is_current(v, cipher)),
        _ => true,
    }
}

/// The stored config with every sealed value re-encrypted under the primary key.
pub fn reseal_config(stored: &Value, cipher: &dyn SecretCipher) -> Result<Value, CryptoError> {
    Ok(match stored {
        Value::Object(o) if o.contains_key(SEALED) => {
            let token = sealed_token(stored).unwrap_or_default();
            let plain = cipher.decrypt(token)?;
            json!({ SEALED: cipher.encrypt(&plain)? })
        }
        Value::Object(o) => {
            let mut m = Map::new();
            for (k, v) in o {
                m.insert(k.clone(), reseal_config(v, cipher)?);
            }
            Value::Object(m)
        }
        other => other.clone(),
    })
}

/// The stored config with every sealed value replaced by its plaintext: only for handing a
/// server to the orchestrator (sent over TLS, never logged).
pub fn reveal_config(stored: &Value, cipher: &dyn SecretCipher) -> Result<Value, CryptoError> {
    Ok(match stored {
        Value::Object(o) if o.contains_key(SEALED) => {
            let token = sealed_token(stored).unwrap_or_default();
            Value::String(cipher.decrypt(token)?.expose_secret().to_string())
        }
        Value::Object(o) => {
            let mut m = Map::new();
            for (k, v) in o {
                m.insert(k.clone(), reveal_config(v, cipher)?);
            }
            Value::Object(m)
        }
        other => other.clone(),
    })
}

/// A config opened for use: the masked form plus the decrypted secrets by dotted path
/// (`password`, `environment.API_TOKEN`).
pub struct OpenConfig {
    pub public: Value,
    pub secrets: Vec<(String, SecretString)>,
}

impl std::fmt::Debug for OpenConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenConfig")
            .field("public", &self.public)
            .finish_non_exhaustive()
    }
}

impl OpenConfig {
    pub fn secret(&self, path: &str) -> Option<&SecretString> {
        self.secrets.iter().find(|(p, _)| p == path).map(|(_, s)| s)
    }
}

/// A stored execution server (its config sealed).
#[derive(Debug, Clone, PartialEq)]
pub struct ExecutionServer {
    pub id: Uuid,
    pub user_id: UserId,
    pub name: String,
    pub server_type: ServerType,
    /// Sealed: secret fields are `{"$sealed": token}`; never shown as is.
    pub connection_config: Value,
    pub workspace_path: Option<String>,
    pub is_default: bool,
    pub is_active: bool,
    pub last_tested_at: Option<DateTime<Utc>>,
    pub test_status: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Validates a server name: 1–100 printable characters.
pub fn validate_name(name: &str) -> Result<String, CoreError> {
    let n = name.trim();
    if n.is_empty() || n.chars().count() > 100 || n.chars().any(char::is_control) {
        return Err(invalid(
            "invalid_name",
            "name must be 1 to 100 printable characters",
        ));
    }
    Ok(n.to_string())
}

/// Validates a workspace path: absolute, no NUL, at most 1024 bytes.
pub fn validate_workspace(path: &str) -> Result<String, CoreError> {
    let p = path.trim();
    if !p.starts_with('/')
        || p.len() > 1024
        || p.contains('\0')
        || p.contains("/../")
        || p.ends_with("/..")
    {
        return Err(invalid(
            "invalid_workspace_path",
            "workspace_path must be an absolute path without '..'",
        ));
    }
    Ok(p.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::test_support::ToyCipher as Rev;

    #[test]
    fn stdin_is_capped_and_tls_material_must_be_pem_and_paired() {
        let req = |n: usize| {
            ExecRequest::new(
                CommandSpec::Shell("cat".into()),
                BTreeMap::new(),
                Some(SecretString::from("x".repeat(n))),
                10,
            )
        };
        assert!(req(MAX_STDIN).is_ok());
        assert!(req(MAX_STDIN + 1).is_err());
        let ca = "-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----\n";
        let key = "-----BEGIN PRIVATE KEY-----\nAA==\n-----END PRIVATE KEY-----\n";
        let docker = |extra: Value| {
            let mut c = json!({"endpoint": "https://engine.example:2376"});
            for (k, v) in extra.as_object().into_iter().flatten() {
                c[k] = v.clone();
            }
            seal_config(ServerType::Docker, &c, None, &Rev)
        };
        assert!(docker(json!({})).is_err(), "https needs tls_ca");
        assert!(docker(json!({"tls_ca": "hello"})).is_err(), "not PEM");
        assert!(
            docker(json!({"tls_ca": ca, "tls_cert": ca})).is_err(),
            "cert without key"
        );
        let sealed = docker(json!({"tls_ca": ca, "tls_cert": ca, "tls_key": key})).unwrap();
        assert!(!sealed.to_string().contains("PRIVATE KEY"));
        let k8s = |ca: &str| {
            seal_config(
                ServerType::Kubernetes,
                &json!({"cluster_url": "https://k.example", "service_account_token": "t", "ca_cert": ca}),
                None,
                &Rev,
            )
        };
        assert!(k8s("nope").is_err());
        assert!(k8s(ca).is_ok());
    }

    #[test]
    fn ssh_secrets_are_sealed_masked_kept_and_cleared() {
        let c = json!({"host": "h.example", "username": "u", "auth_method": "password", "password": "hunter2"});
        let sealed = seal_config(ServerType::Ssh, &c, None, &Rev).unwrap();
        assert_eq!(sealed["port"], 22);
        assert!(!sealed.to_string().contains("hunter2"));
        let masked = mask_config(&sealed);
        assert_eq!(masked["password"], MASK);
        // The masked placeholder sent back keeps the stored secret.
        let again = seal_config(ServerType::Ssh, &masked, Some(&sealed), &Rev).unwrap();
        assert_eq!(again["password"], sealed["password"]);
        let open = open_config(&again, &Rev).unwrap();
        assert_eq!(open.secret("password").unwrap().expose_secret(), "hunter2");
        // Clearing the only password of a password server is refused.
        let mut cleared = masked.clone();
        cleared["password"] = Value::Null;
        assert!(seal_config(ServerType::Ssh, &cleared, Some(&sealed), &Rev).is_err());
    }

    #[test]
    fn validation_rules() {
        let bad = [
            (
                ServerType::Ssh,
                json!({"host": "h", "username": "u", "auth_method": "password", "password": "p", "extra": 1}),
            ),
            (
                ServerType::Ssh,
                json!({"host": "h", "port": 0, "username": "u", "auth_method": "password", "password": "p"}),
            ),
            (
                ServerType::Ssh,
                json!({"host": "h", "port": 70000, "username": "u", "auth_method": "password", "password": "p"}),
            ),
            (
                ServerType::Ssh,
                json!({"host": "h", "username": "u", "auth_method": "key"}),
            ),
            (
                ServerType::Ssh,
                json!({"host": "h", "username": "u", "auth_method": "key", "private_key": "nope"}),
            ),
            (
                ServerType::Ssh,
                json!({"host": "a b", "username": "u", "auth_method": "password", "password": "p"}),
            ),
            (ServerType::Kubernetes, json!({"cluster_url": "https://k"})),
            (
                ServerType::Kubernetes,
                json!({"cluster_url": "https://k", "namespace": "Bad_NS", "service_account_token": "t"}),
            ),
            (ServerType::Docker, json!({"endpoint": "ftp://x"})),
            (ServerType::Docker, json!({"environment": {"A=B": "x"}})),
            (ServerType::Local, json!({"anything": 1})),
        ];
        for (kind, c) in bad {
            assert!(seal_config(kind, &c, None, &Rev).is_err(), "{c}");
        }
        let env = json!({"endpoint": "unix:///run/podman.sock", "environment": {"TOKEN": "s3cret", "MODE": "x"}});
        let sealed = seal_config(ServerType::Docker, &env, None, &Rev).unwrap();
        assert_eq!(sealed["image"], "python:3.11-slim");
        assert!(!sealed.to_string().contains("s3cret"));
        assert_eq!(mask_config(&sealed)["environment"]["TOKEN"], MASK);
        let open = open_config(&sealed, &Rev).unwrap();
        assert_eq!(
            open.secret("environment.TOKEN").unwrap().expose_secret(),
            "s3cret"
        );
        assert!(validate_workspace("/home/u/work").is_ok());
        assert!(validate_workspace("relative").is_err());
        assert!(validate_workspace("/a/../b").is_err());
        assert!(validate_name(" ").is_err());
    }
}

/// What to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandSpec {
    /// Program and arguments, no shell.
    Argv(Vec<String>),
    /// A line for `sh -c`.
    Shell(String),
}

/// A command to run on an execution server.
#[derive(Debug, Clone)]
pub struct ExecRequest {
    pub command: CommandSpec,
    /// Extra environment (names validated; values may be secrets and are never echoed).
    pub env: BTreeMap<String, SecretString>,
    pub stdin: Option<SecretString>,
    pub timeout: std::time::Duration,
    /// Cap on each of stdout and stderr, in bytes.
    pub max_output: usize,
}

/// The wall-clock limit of a command that names none.
pub const DEFAULT_EXEC_TIMEOUT_SECS: u64 = 60;
/// The longest wall-clock time a command may be given.
pub const MAX_EXEC_TIMEOUT_SECS: u64 = 600;
/// The most input a command may be given (it fits a Kubernetes Secret).
pub const MAX_STDIN: usize = 512 * 1024;
/// The default cap on each output stream.
pub const DEFAULT_MAX_OUTPUT: usize = 1024 * 1024;

impl ExecRequest {
    /// Validates a request: non-empty command (at most 64 KiB), environment names
    /// `[A-Za-z_][A-Za-z0-9_]*`, stdin at most [`MAX_STDIN`], timeout 1–600 s.
    pub fn new(
        command: CommandSpec,
        env: BTreeMap<String, SecretString>,
        stdin: Option<SecretString>,
        timeout_secs: u64,
    ) -> Result<Self, CoreError> {
        let size = match &command {
            CommandSpec::Argv(a) if a.is_empty() || a[0].is_empty() => {
                return Err(invalid("invalid_command", "command must not be empty"));
            }
            CommandSpec::Argv(a) => a.iter().map(String::len).sum::<usize>(),
            CommandSpec::Shell(s) if s.trim().is_empty() => {
                return Err(invalid("invalid_command", "command must not be empty"));
            }
            CommandSpec::Shell(s) => s.len(),
        };
        let has_nul = match &command {
            CommandSpec::Argv(a) => a.iter().any(|x| x.contains('\0')),
            CommandSpec::Shell(s) => s.contains('\0'),
        };
        if size > 64 * 1024 || has_nul {
            return Err(invalid(
                "invalid_command",
                "command must be at most 64 KiB, without NUL",
            ));
        }
        for k in env.keys() {
            let ok = k
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                && k.len() <= 128;
            if !ok {
                return Err(invalid(
                    "invalid_env",
                    "environment names must match [A-Za-z_][A-Za-z0-9_]*",
                ));
            }
        }
        if stdin
            .as_ref()
            .is_some_and(|d| d.expose_secret().len() > MAX_STDIN)
        {
            return Err(invalid("invalid_stdin", "stdin must be at most 512 KiB"));
        }
        if !(1..=MAX_EXEC_TIMEOUT_SECS).contains(&timeout_secs) {
            return Err(invalid(
                "invalid_timeout",
                "timeout_secs must be between 1 and 600",
            ));
        }
        Ok(Self {
            command,
            env,
            stdin,
            timeout: std::time::Duration::from_secs(timeout_secs),
            max_output: DEFAULT_MAX_OUTPUT,
        })
    }
}

/// What a command did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecResult {
    /// `None` when the command was killed (timeout) or died by a signal.
    pub exit_code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    /// Either stream exceeded its cap (the rest was read and dropped).
    pub truncated: bool,
    pub timed_out: bool,
    pub duration_ms: u64,
}

/// What a connection test found.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerTest {
    /// `success`, `failed` (reachable, but refused or unusable) or `error`.
    pub status: &'static str,
    pub message: String,
    pub details: Value,
}

impl ServerTest {
    /// A test that did not succeed, the reason's code in the details: status `failed` when
    /// the server answered and refused the credentials, `error` when it could not be used.
    pub fn from_error(e: &ExecError) -> Self {
        Self {
            status: if matches!(e, ExecError::AuthFailed) {
                "failed"
            } else {
                "error"
            },
            message: e.to_string(),
            details: json!({ "code": e.code() }),
        }
    }
}

/// Runs commands on one kind of execution server.
#[async_trait::async_trait]
pub trait ExecutionBackend: Send + Sync + 'static {
    fn kind(&self) -> ServerType;
    /// Whether this server may be used from this service at all, without running anything:
    /// the address it names, resolved, through the outbound target policy; the endpoint against
    /// the operator's allow-lists; the credentials' restrictions (no kubeconfig that runs
    /// programs or reads local files). The registry calls it before every use of a stored server
    /// (test, exec, trust, hand-off to the orchestrator); `test`/`exec` still check again at
    /// connection time and connect to the checked address.
    /// Returns the checked address the server's connections go to (`None` for servers without
    /// one: a unix socket, the local host), which the orchestrator is told to connect to.
    async fn admit(
        &self,
        server: &ExecutionServer,
        config: &OpenConfig,
    ) -> Result<Option<std::net::SocketAddr>, ExecError>;
    /// Is the server reachable, does authentication work, what is there. MUST NOT fail for
    /// an unreachable server: that is a `ServerTest` with status `error` or `failed`.
    async fn test(
        &self,
        server: &ExecutionServer,
        config: &OpenConfig,
    ) -> Result<ServerTest, ExecError>;
    /// Runs `request`: working directory = the server's workspace path, the wall-clock timeout
    /// enforced, stdout and stderr captured apart and capped.
    async fn exec(
        &self,
        server: &ExecutionServer,
        config: &OpenConfig,
        request: &ExecRequest,
    ) -> Result<ExecResult, ExecError>;
    /// The host key the server presents now (`SHA256:…`), for pinning. Backends without host
    /// keys keep the default.
    async fn host_key(
        &self,
        _server: &ExecutionServer,
        _config: &OpenConfig,
    ) -> Result<String, ExecError> {
        Err(ExecError::BackendUnavailable(
            "this kind of server has no host key to trust".into(),
        ))
    }
}
