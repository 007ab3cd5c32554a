//! Sealing: secret fields of a connection config encrypted before storage (`{"$sealed":
//! token}`), masked in responses, opened for a backend, re-encrypted by key rotation.

use secrecy::{ExposeSecret, SecretString};
use serde_json::{Map, Value, json};

use crate::error::{CoreError, CryptoError};
use crate::execution::config::{
    DEFAULT_AUTH_METHOD, Incoming, MASK, bad_config, default_image, default_namespace,
    docker_volumes, incoming, validate,
};
use crate::execution::host_key::HOST_KEY_FIELD;
use crate::execution::server::ServerType;
use crate::ports::SecretCipher;

/// The stored form of a secret field: `{"$sealed": "<Fernet token>"}`.
const SEALED: &str = "$sealed";

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
    if kind == ServerType::Docker
        && let Some(v) = config.get("volumes")
        && let Some(list) = docker_volumes(v)?
    {
        // The legacy map form is stored as the list form.
        out.insert("volumes".into(), json!(list));
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
        ServerType::Ssh => json!({"port": 22, "auth_method": DEFAULT_AUTH_METHOD}),
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
    /// The decrypted secret at a dotted `path` (`password`, `environment.API_TOKEN`).
    pub fn secret(&self, path: &str) -> Option<&SecretString> {
        self.secrets.iter().find(|(p, _)| p == path).map(|(_, s)| s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::execution::{validate_name, validate_workspace};
    use crate::testing::ToyCipher as Rev;

    #[test]
    fn tls_material_must_be_pem_and_paired() {
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
    fn docker_volumes_in_the_legacy_map_form_are_stored_as_the_list_form() {
        let seal = |volumes: Value| {
            seal_config(ServerType::Docker, &json!({"volumes": volumes}), None, &Rev)
        };
        let stored = seal(json!({"/srv/data": "/workspace", "/home/u/src": "/src"})).unwrap();
        assert_eq!(
            stored["volumes"],
            json!(["/home/u/src:/src", "/srv/data:/workspace"]),
            "host:container, in key order"
        );
        // The list form as accepted before, unchanged; null is no volumes.
        let list = json!(["/srv/data:/workspace:ro"]);
        assert_eq!(seal(list.clone()).unwrap()["volumes"], list);
        assert_eq!(seal(Value::Null).unwrap()["volumes"], Value::Null);
        // A stored list sent back (a PUT of what GET showed) stays as it is.
        let again = seal_config(ServerType::Docker, &stored, Some(&stored), &Rev).unwrap();
        assert_eq!(again["volumes"], stored["volumes"]);
        for bad in [
            json!({"/srv": ""}),
            json!({"": "/w"}),
            json!({"/srv": 5}),
            json!({"C:/data": "/w"}),
            json!({"/srv": "/w:ro"}),
            json!([""]),
            json!([5]),
            json!("/srv:/w"),
            json!(7),
        ] {
            let e = seal(bad.clone()).unwrap_err();
            assert!(
                matches!(
                    &e,
                    CoreError::InvalidInput {
                        code: "invalid_connection_config",
                        ..
                    }
                ),
                "{bad}: {e:?}"
            );
        }
    }

    #[test]
    fn ssh_auth_method_defaults_to_key_as_it_did() {
        let pem = "-----BEGIN OPENSSH PRIVATE KEY-----\nAA==\n-----END OPENSSH PRIVATE KEY-----\n";
        let c = json!({"host": "h.example", "username": "u", "private_key": pem});
        let sealed = seal_config(ServerType::Ssh, &c, None, &Rev).unwrap();
        assert_eq!(sealed["auth_method"], "key", "stored complete");
        assert_eq!(sealed["port"], 22);
        // Omitted means key, which needs a private key (a password alone is not enough).
        let pw = json!({"host": "h.example", "username": "u", "password": "hunter2"});
        let e = seal_config(ServerType::Ssh, &pw, None, &Rev).unwrap_err();
        assert!(e.to_string().contains("private_key"), "{e}");
        // An explicit method is kept.
        let explicit = json!({"host": "h.example", "username": "u", "auth_method": "password", "password": "p"});
        assert_eq!(
            seal_config(ServerType::Ssh, &explicit, None, &Rev).unwrap()["auth_method"],
            "password"
        );
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
