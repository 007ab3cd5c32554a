//! The add and edit form of an execution server as posted: the connection config it sends
//! to the core (the JSON API's shape), and which field a refusal of the core is about. Every
//! rule about a config is the core's; this file only turns form fields into JSON.

use byok_core::execution::ServerType;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::{Map, Value, json};

/// The form as posted (create and edit). Secret fields are [`SecretString`]s and are never
/// rendered again.
#[derive(Default, Deserialize)]
#[serde(default)]
pub struct ServerInput {
    pub server_type: String,
    pub name: String,
    pub workspace_path: String,
    pub is_default: Option<String>,
    pub is_active: Option<String>,
    // ssh
    pub host: String,
    pub port: String,
    pub username: String,
    pub auth_method: String,
    pub password: Option<SecretString>,
    pub private_key: Option<SecretString>,
    pub passphrase: Option<SecretString>,
    pub clear_passphrase: Option<String>,
    // docker (and the kubernetes image)
    pub endpoint: String,
    pub image: String,
    pub container_name: String,
    /// `NAME=value` lines; the values are secrets.
    pub environment: Option<SecretString>,
    /// `host:container` lines.
    pub volumes: String,
    pub tls_ca: Option<SecretString>,
    pub tls_cert: Option<SecretString>,
    pub tls_key: Option<SecretString>,
    pub clear_tls: Option<String>,
    // kubernetes
    pub cluster_url: String,
    pub namespace: String,
    pub service_account_token: Option<SecretString>,
    pub kubeconfig: Option<SecretString>,
    pub clear_service_account_token: Option<String>,
    pub clear_kubeconfig: Option<String>,
    pub ca_cert: String,
}

impl std::fmt::Debug for ServerInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerInput")
            .field("server_type", &self.server_type)
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// Non-empty, trimmed lines.
pub fn lines(s: &str) -> impl Iterator<Item = &str> {
    s.lines().map(str::trim).filter(|l| !l.is_empty())
}

/// A problem with the form itself (before the core sees it), next to its field.
#[derive(Debug, PartialEq, Eq)]
pub struct FormProblem {
    pub field: &'static str,
    pub message: String,
}

fn problem(field: &'static str, message: impl Into<String>) -> FormProblem {
    FormProblem {
        field,
        message: message.into(),
    }
}

/// A secret field's value as sent to the core: a new value, else `None` (absent: the core
/// keeps a stored value, or has none).
fn typed(s: &Option<SecretString>) -> Option<Value> {
    s.as_ref()
        .map(|s| s.expose_secret())
        .filter(|s| !s.trim().is_empty())
        .map(|s| Value::String(s.replace("\r\n", "\n")))
}

/// The connection config the form describes, in the JSON API's shape. `editing`: a stored
/// server is changed (absent secrets keep their stored values; the secrets of an unused SSH
/// sign-in method and the ones ticked for removal are cleared with `null`).
pub fn connection_config(
    kind: ServerType,
    input: &ServerInput,
    editing: bool,
) -> Result<Value, FormProblem> {
    let mut c = Map::new();
    let text = |s: &str| Value::String(s.trim().to_string());
    let set = |c: &mut Map<String, Value>, k: &str, v: Option<Value>| {
        if let Some(v) = v {
            c.insert(k.to_string(), v);
        }
    };
    let clear = |c: &mut Map<String, Value>, k: &str| {
        if editing {
            c.insert(k.to_string(), Value::Null);
        }
    };
    let non_empty = |s: &str| Some(s.trim()).filter(|s| !s.is_empty()).map(text);
    match kind {
        ServerType::Ssh => {
            c.insert("host".into(), text(&input.host));
            let port = input.port.trim();
            if !port.is_empty() {
                let n: u64 = port
                    .parse()
                    .map_err(|_| problem("port", "Enter a number, such as 22."))?;
                c.insert("port".into(), json!(n));
            }
            c.insert("username".into(), text(&input.username));
            let method = match input.auth_method.trim() {
                "" => "key",
                m => m,
            };
            c.insert("auth_method".into(), text(method));
            if method == "password" {
                set(&mut c, "password", typed(&input.password));
                clear(&mut c, "private_key");
                clear(&mut c, "passphrase");
            } else {
                set(&mut c, "private_key", typed(&input.private_key));
                if input.clear_passphrase.is_some() {
                    clear(&mut c, "passphrase");
                } else {
                    set(&mut c, "passphrase", typed(&input.passphrase));
                }
                clear(&mut c, "password");
            }
        }
        ServerType::Docker => {
            set(&mut c, "endpoint", non_empty(&input.endpoint));
            set(&mut c, "image", non_empty(&input.image));
            set(&mut c, "container_name", non_empty(&input.container_name));
            let volumes: Vec<Value> = lines(&input.volumes).map(Value::from).collect();
            if !volumes.is_empty() {
                c.insert("volumes".into(), Value::Array(volumes));
            }
            let mut env = Map::new();
            let raw = input
                .environment
                .as_ref()
                .map(|e| e.expose_secret())
                .unwrap_or_default();
            for (n, line) in raw.lines().enumerate() {
                let line = line.trim_end_matches('\r');
                if line.trim().is_empty() || line.trim_start().starts_with('#') {
                    continue;
                }
                let Some((k, v)) = line.split_once('=') else {
                    return Err(problem(
                        "environment",
                        format!("Line {}: write each variable as NAME=value.", n + 1),
                    ));
                };
                let k = k.trim();
                if env.contains_key(k) {
                    return Err(problem(
                        "environment",
                        format!("Line {}: a variable is set twice.", n + 1),
                    ));
                }
                env.insert(k.to_string(), Value::String(v.to_string()));
            }
            if editing || !env.is_empty() {
                c.insert("environment".into(), Value::Object(env));
            }
            if input.clear_tls.is_some() {
                for f in ["tls_ca", "tls_cert", "tls_key"] {
                    clear(&mut c, f);
                }
            } else {
                set(&mut c, "tls_ca", typed(&input.tls_ca));
                set(&mut c, "tls_cert", typed(&input.tls_cert));
                set(&mut c, "tls_key", typed(&input.tls_key));
            }
        }
        ServerType::Kubernetes => {
            c.insert("cluster_url".into(), text(&input.cluster_url));
            set(&mut c, "namespace", non_empty(&input.namespace));
            set(&mut c, "image", non_empty(&input.image));
            set(
                &mut c,
                "ca_cert",
                Some(input.ca_cert.trim())
                    .filter(|s| !s.is_empty())
                    .map(|s| Value::String(s.replace("\r\n", "\n"))),
            );
            if input.clear_service_account_token.is_some() {
                clear(&mut c, "service_account_token");
            } else {
                set(
                    &mut c,
                    "service_account_token",
                    typed(&input.service_account_token),
                );
            }
            if input.clear_kubeconfig.is_some() {
                clear(&mut c, "kubeconfig");
            } else {
                set(&mut c, "kubeconfig", typed(&input.kubeconfig));
            }
        }
        ServerType::Local => {}
    }
    Ok(Value::Object(c))
}

/// The connection-config fields a form can show, longest first (so `tls_cert` is not taken
/// for a shorter name inside it).
const CONFIG_FIELDS: [&str; 20] = [
    "service_account_token",
    "container_name",
    "auth_method",
    "private_key",
    "cluster_url",
    "environment",
    "kubeconfig",
    "passphrase",
    "namespace",
    "username",
    "password",
    "endpoint",
    "tls_cert",
    "volumes",
    "ca_cert",
    "tls_key",
    "tls_ca",
    "image",
    "host",
    "port",
];

/// The form field a core refusal is about (`None`: the form as a whole). The core's
/// messages name the field (a path such as `connection_config.port`, or the field's name
/// first), never a value.
pub fn field_of(code: &str, message: &str) -> Option<&'static str> {
    match code {
        "invalid_name" | "server_name_taken" => return Some("name"),
        "invalid_workspace_path" => return Some("workspace_path"),
        "invalid_connection_config" => {}
        _ => return None,
    }
    let m = message
        .strip_prefix("connection_config.")
        .or_else(|| message.strip_prefix("connection_config: "))
        .unwrap_or(message);
    let word = |s: &str| -> Option<&'static str> {
        let head: String = s
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        CONFIG_FIELDS.iter().copied().find(|f| *f == head)
    };
    // "auth_method key needs a private_key", "an https:// endpoint needs tls_ca".
    if let Some((_, after)) = m.split_once(" needs ") {
        let after = after.strip_prefix("a ").unwrap_or(after);
        if let Some(f) = word(after) {
            return Some(f);
        }
    }
    // "missing field `host`".
    if let Some((_, quoted)) = m.split_once('`')
        && let Some(f) = word(quoted)
    {
        return Some(f);
    }
    // "host must be …", "port: expected u32", "environment names must …".
    if let Some(f) = word(m) {
        return Some(f);
    }
    // "a service_account_token or a kubeconfig is needed": the first field it names.
    m.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .find_map(|w| CONFIG_FIELDS.iter().copied().find(|f| *f == w))
}

#[cfg(test)]
mod tests {
    use super::*;

    use byok_core::CoreError;
    use byok_core::execution::MASK;
    use byok_core::execution::seal_config;
    use byok_core::testing::ToyCipher;

    fn input() -> ServerInput {
        ServerInput {
            host: "203.0.113.7".into(),
            port: "22".into(),
            username: "agent".into(),
            auth_method: "password".into(),
            password: Some(SecretString::from("CANARY-pw")),
            ..ServerInput::default()
        }
    }

    /// Every refusal of the core's config validation lands on the field it is about.
    #[test]
    fn core_refusals_land_on_their_fields() {
        let cases: [(ServerType, Value, &str); 17] = [
            (
                ServerType::Ssh,
                json!({"host": "a b", "username": "u", "auth_method": "key", "private_key": "-----BEGIN OPENSSH PRIVATE KEY-----"}),
                "host",
            ),
            (
                ServerType::Ssh,
                json!({"host": "h", "port": 70000, "username": "u", "auth_method": "password", "password": "p"}),
                "port",
            ),
            (
                ServerType::Ssh,
                json!({"host": "h", "port": "x", "username": "u", "auth_method": "password", "password": "p"}),
                "port",
            ),
            (
                ServerType::Ssh,
                json!({"host": "h", "username": " ", "auth_method": "password", "password": "p"}),
                "username",
            ),
            (
                ServerType::Ssh,
                json!({"host": "h", "username": "u", "auth_method": "password"}),
                "password",
            ),
            (
                ServerType::Ssh,
                json!({"host": "h", "username": "u", "auth_method": "key"}),
                "private_key",
            ),
            (
                ServerType::Ssh,
                json!({"host": "h", "username": "u", "auth_method": "key", "private_key": "nope"}),
                "private_key",
            ),
            (
                ServerType::Ssh,
                json!({"host": "h", "username": "u", "auth_method": "other"}),
                "auth_method",
            ),
            (
                ServerType::Ssh,
                json!({"username": "u", "auth_method": "key"}),
                "host",
            ),
            (
                ServerType::Docker,
                json!({"endpoint": "ftp://x"}),
                "endpoint",
            ),
            (ServerType::Docker, json!({"image": "a b"}), "image"),
            (
                ServerType::Docker,
                json!({"environment": {"A=B": "x"}}),
                "environment",
            ),
            (
                ServerType::Docker,
                json!({"endpoint": "https://engine.example:2376"}),
                "tls_ca",
            ),
            (ServerType::Docker, json!({"tls_ca": "nope"}), "tls_ca"),
            (
                ServerType::Kubernetes,
                json!({"cluster_url": "ftp://k", "service_account_token": "t"}),
                "cluster_url",
            ),
            (
                ServerType::Kubernetes,
                json!({"cluster_url": "https://k", "namespace": "Bad_NS", "service_account_token": "t"}),
                "namespace",
            ),
            (
                ServerType::Kubernetes,
                json!({"cluster_url": "https://k"}),
                "service_account_token",
            ),
        ];
        for (kind, config, field) in cases {
            match seal_config(kind, &config, None, &ToyCipher) {
                Err(CoreError::InvalidInput { code, message }) => {
                    assert_eq!(field_of(code, &message), Some(field), "{message}");
                }
                other => panic!("{config}: {other:?}"),
            }
        }
        assert_eq!(field_of("invalid_name", "…"), Some("name"));
        assert_eq!(field_of("server_name_taken", "…"), Some("name"));
        assert_eq!(
            field_of("invalid_workspace_path", "…"),
            Some("workspace_path")
        );
        assert_eq!(field_of("upgrade_required", "…"), None);
    }

    #[test]
    fn the_form_becomes_the_api_shape() {
        let c = connection_config(ServerType::Ssh, &input(), false).unwrap();
        assert_eq!(
            c,
            json!({"host": "203.0.113.7", "port": 22, "username": "agent",
                   "auth_method": "password", "password": "CANARY-pw"})
        );
        // Editing: an empty secret is left out (the core keeps the stored one), the other
        // method's secrets are cleared.
        let edit = ServerInput {
            password: Some(SecretString::from("")),
            ..input()
        };
        let c = connection_config(ServerType::Ssh, &edit, true).unwrap();
        assert!(c.get("password").is_none(), "{c}");
        assert_eq!(c["private_key"], Value::Null);
        let bad_port = ServerInput {
            port: "twenty-two".into(),
            ..input()
        };
        assert_eq!(
            connection_config(ServerType::Ssh, &bad_port, false)
                .unwrap_err()
                .field,
            "port"
        );
        let docker = ServerInput {
            environment: Some(SecretString::from(
                "TOKEN=s3cret\r\nMODE=a=b\n\n# note\nKEEP=***masked***",
            )),
            volumes: "/a:/b\n\n /c:/d ".into(),
            ..ServerInput::default()
        };
        let c = connection_config(ServerType::Docker, &docker, true).unwrap();
        assert_eq!(
            c,
            json!({"environment": {"TOKEN": "s3cret", "MODE": "a=b", "KEEP": MASK},
                   "volumes": ["/a:/b", "/c:/d"]})
        );
        let broken = ServerInput {
            environment: Some(SecretString::from("JUSTANAME")),
            ..ServerInput::default()
        };
        assert_eq!(
            connection_config(ServerType::Docker, &broken, false)
                .unwrap_err()
                .field,
            "environment"
        );
    }
}
