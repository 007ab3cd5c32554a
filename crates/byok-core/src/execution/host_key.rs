//! SSH host-key pinning: where the trusted fingerprint is kept in a server's config.

use serde_json::Value;

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
