//! The add and edit form as drawn: its fields per server type, filled from a stored server
//! (its config masked) or from a refused post, never with a secret.

use byok_core::execution::{MASK, ServerType};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Map, Value};

use super::form::{ServerInput, lines};
use super::view::capitalise;

/// A form field as the template draws it. `value` is never a secret.
#[derive(Debug, Clone)]
pub struct Field {
    /// The element id and the form name.
    pub id: &'static str,
    pub label: &'static str,
    /// `text`, `number`, `url`, `password`, `textarea`, `secret-area`, `select`, `checkbox`.
    pub kind: &'static str,
    pub value: String,
    pub checked: bool,
    pub options: Vec<(&'static str, &'static str)>,
    pub optional: bool,
    pub help: String,
    pub error: Option<String>,
    /// A secret with a value stored (edit): empty keeps it.
    pub stored: bool,
    /// The name of a "remove the stored value" checkbox, for optional secrets.
    pub clear: Option<&'static str>,
    pub clear_label: &'static str,
    pub placeholder: &'static str,
    pub full: bool,
}

impl Field {
    fn new(id: &'static str, label: &'static str, kind: &'static str) -> Self {
        Self {
            id,
            label,
            kind,
            value: String::new(),
            checked: false,
            options: Vec::new(),
            optional: false,
            help: String::new(),
            error: None,
            stored: false,
            clear: None,
            clear_label: "",
            placeholder: "",
            full: false,
        }
    }
    fn value(mut self, v: impl Into<String>) -> Self {
        self.value = v.into();
        self
    }
    fn optional(mut self) -> Self {
        self.optional = true;
        self
    }
    fn help(mut self, h: impl Into<String>) -> Self {
        self.help = h.into();
        self
    }
    fn placeholder(mut self, p: &'static str) -> Self {
        self.placeholder = p;
        self
    }
    fn full(mut self) -> Self {
        self.full = true;
        self
    }

    /// Whether option `v` of a select is the chosen one.
    pub fn selected(&self, v: &str) -> bool {
        self.value == v
    }

    /// The ids the input is described by (help, error), for `aria-describedby`.
    pub fn described_by(&self) -> String {
        let mut ids = Vec::new();
        if !self.help.is_empty() || self.stored {
            ids.push(format!("{}-help", self.id));
        }
        if self.error.is_some() {
            ids.push(format!("{}-error", self.id));
        }
        ids.join(" ")
    }
}

/// A group of fields with a heading.
#[derive(Debug, Clone)]
pub struct Section {
    pub id: &'static str,
    pub title: &'static str,
    pub help: &'static str,
    pub fields: Vec<Field>,
}

/// The form as drawn: its sections, and an error that names no field.
#[derive(Debug, Clone)]
pub struct FormView {
    pub kind: ServerType,
    pub sections: Vec<Section>,
    pub error: Option<String>,
}

impl FormView {
    /// The field `id`, if the form has it.
    pub fn field_mut(&mut self, id: &str) -> Option<&mut Field> {
        self.sections
            .iter_mut()
            .flat_map(|s| s.fields.iter_mut())
            .find(|f| f.id == id)
    }

    /// Puts `message` next to field `id`, or above the form when there is no such field.
    pub fn set_error(&mut self, id: Option<&str>, message: String) {
        match id.and_then(|id| self.field_mut(id)) {
            Some(f) => f.error = Some(capitalise(&message)),
            None => self.error = Some(capitalise(&message)),
        }
    }

    /// Whether any field or the form has an error.
    pub fn has_errors(&self) -> bool {
        self.error.is_some()
            || self
                .sections
                .iter()
                .flat_map(|s| &s.fields)
                .any(|f| f.error.is_some())
    }
}

/// What the form starts from: nothing (add), the stored server (edit, its config masked), or
/// what was posted (after a refusal).
#[derive(Debug, Default, Clone)]
pub struct Prefill {
    pub name: String,
    pub workspace_path: String,
    pub is_default: bool,
    pub is_active: bool,
    /// Non-secret config values by field name; secret ones are [`MASK`] when stored.
    pub config: Map<String, Value>,
    /// Editing a stored server (secrets may be kept by leaving them empty).
    pub editing: bool,
    /// Secret fields filled in the refused post (to ask for them again).
    pub retype: Vec<&'static str>,
    /// Environment names whose typed values were dropped (to ask for them again).
    pub retype_env: Vec<String>,
}

impl Prefill {
    fn text(&self, field: &str) -> String {
        match self.config.get(field) {
            Some(Value::String(s)) if s != MASK => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            _ => String::new(),
        }
    }
    fn stored(&self, field: &str) -> bool {
        self.editing && self.config.get(field).and_then(Value::as_str) == Some(MASK)
    }
    fn lines(&self, field: &str) -> String {
        match self.config.get(field) {
            Some(Value::Array(items)) => items
                .iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join("\n"),
            _ => String::new(),
        }
    }
    /// The environment as `NAME=***masked***` lines (stored values), never a value.
    fn environment(&self) -> String {
        match self.config.get("environment") {
            Some(Value::Object(env)) => env
                .iter()
                .map(|(k, v)| {
                    if v.as_str() == Some(MASK) {
                        format!("{k}={MASK}")
                    } else {
                        format!("{k}=")
                    }
                })
                .collect::<Vec<_>>()
                .join("\n"),
            _ => String::new(),
        }
    }

    /// Marks the secrets `stored` has (masked) as stored here too, so that a refused edit
    /// still says which ones are kept.
    pub fn keep_stored(&mut self, stored: &Prefill) {
        for (k, v) in &stored.config {
            if k != "environment" && v.as_str() == Some(MASK) {
                self.config.insert(k.clone(), v.clone());
            }
        }
    }

    /// What a refused post leaves in the form: every non-secret value, no secret.
    pub fn from_input(input: &ServerInput, kind: ServerType, editing: bool) -> Self {
        let mut config = Map::new();
        let mut put = |k: &str, v: &str| {
            config.insert(k.to_string(), Value::String(v.to_string()));
        };
        let filled = |s: &Option<SecretString>| {
            s.as_ref()
                .is_some_and(|s| !s.expose_secret().trim().is_empty())
        };
        let mut retype = Vec::new();
        let mut retype_env = Vec::new();
        match kind {
            ServerType::Ssh => {
                put("host", &input.host);
                put("port", &input.port);
                put("username", &input.username);
                put("auth_method", &input.auth_method);
                for (name, v) in [
                    ("password", &input.password),
                    ("private_key", &input.private_key),
                    ("passphrase", &input.passphrase),
                ] {
                    if filled(v) {
                        retype.push(name);
                    }
                }
            }
            ServerType::Docker => {
                put("endpoint", &input.endpoint);
                put("image", &input.image);
                put("container_name", &input.container_name);
                config.insert(
                    "volumes".into(),
                    Value::Array(lines(&input.volumes).map(Value::from).collect()),
                );
                if let Some(env) = &input.environment {
                    let mut shown = Map::new();
                    for line in lines(env.expose_secret()) {
                        let (k, v) = line.split_once('=').unwrap_or((line, ""));
                        let k = k.trim();
                        if k.is_empty() {
                            continue;
                        }
                        if v == MASK {
                            shown.insert(k.to_string(), Value::String(MASK.into()));
                        } else {
                            if !v.is_empty() {
                                retype_env.push(k.to_string());
                            }
                            shown.insert(k.to_string(), Value::Null);
                        }
                    }
                    config.insert("environment".into(), Value::Object(shown));
                }
                for (name, v) in [
                    ("tls_ca", &input.tls_ca),
                    ("tls_cert", &input.tls_cert),
                    ("tls_key", &input.tls_key),
                ] {
                    if filled(v) {
                        retype.push(name);
                    }
                }
            }
            ServerType::Kubernetes => {
                put("cluster_url", &input.cluster_url);
                put("namespace", &input.namespace);
                put("image", &input.image);
                put("ca_cert", &input.ca_cert);
                for (name, v) in [
                    ("service_account_token", &input.service_account_token),
                    ("kubeconfig", &input.kubeconfig),
                ] {
                    if filled(v) {
                        retype.push(name);
                    }
                }
            }
            ServerType::Local => {}
        }
        Self {
            name: input.name.clone(),
            workspace_path: input.workspace_path.clone(),
            is_default: input.is_default.is_some(),
            is_active: input.is_active.is_some(),
            config,
            editing,
            retype,
            retype_env,
        }
    }
}

const KEEP: &str = "A value is stored: leave this empty to keep the stored value.";
const RETYPE: &str = "Secrets are never shown back: enter it again.";

/// A secret field: a password input or a masked text area.
fn secret(
    pre: &Prefill,
    id: &'static str,
    label: &'static str,
    kind: &'static str,
    help: &str,
) -> Field {
    let mut f = Field::new(id, label, kind);
    f.stored = pre.stored(id);
    f.help = if pre.retype.contains(&id) {
        RETYPE.to_string()
    } else if f.stored {
        KEEP.to_string()
    } else {
        help.to_string()
    };
    f
}

/// The form for `kind`, filled from `pre`.
pub fn view(kind: ServerType, pre: &Prefill) -> FormView {
    let mut general = vec![
        Field::new("name", "Name", "text")
            .value(pre.name.clone())
            .help("How you name it, here and in the gateway's x-byok-execution-server header.")
            .placeholder("build-box"),
    ];
    let mut sections = Vec::new();
    match kind {
        ServerType::Ssh => {
            let auth = match pre.text("auth_method").as_str() {
                "password" => "password",
                _ => "key",
            };
            let mut method = Field::new("auth_method", "Sign in with", "select")
                .value(auth)
                .help(
                    "With a private key, fill in the key (and its passphrase if it has one); \
                     with a password, the password. The other method's fields are not used.",
                );
            method.options = vec![("key", "A private key"), ("password", "A password")];
            let mut passphrase = secret(
                pre,
                "passphrase",
                "Key passphrase",
                "password",
                "Only if the private key is encrypted.",
            )
            .optional();
            if passphrase.stored {
                passphrase.clear = Some("clear_passphrase");
                passphrase.clear_label = "Remove the stored passphrase";
            }
            sections.push(Section {
                id: "connection",
                title: "Connection",
                help: "",
                fields: vec![
                    Field::new("host", "Host", "text")
                        .value(pre.text("host"))
                        .placeholder("build.example.com"),
                    Field::new("port", "Port", "number").value({
                        let p = pre.text("port");
                        if p.is_empty() { "22".to_string() } else { p }
                    }),
                    Field::new("username", "Username", "text")
                        .value(pre.text("username"))
                        .placeholder("agent"),
                ],
            });
            sections.push(Section {
                id: "credentials",
                title: "Credentials",
                help: "Stored encrypted, never shown again. The host key is checked before \
                       any credential is sent: the first test shows its fingerprint for you \
                       to compare and trust.",
                fields: vec![
                    method,
                    secret(
                        pre,
                        "private_key",
                        "Private key",
                        "secret-area",
                        "PEM or OpenSSH format (-----BEGIN … PRIVATE KEY-----).",
                    )
                    .full(),
                    passphrase,
                    secret(
                        pre,
                        "password",
                        "Password",
                        "password",
                        "Used when signing in with a password.",
                    ),
                ],
            });
        }
        ServerType::Docker => {
            let mut env = Field::new("environment", "Environment", "textarea")
                .value(pre.environment())
                .optional()
                .full()
                .placeholder("NAME=value")
                .help(if pre.editing {
                    "One NAME=value per line. Values are secrets and never shown: a line \
                     NAME=***masked*** keeps the stored value, a removed line removes the \
                     variable."
                } else {
                    "One NAME=value per line. Values are stored encrypted and never shown \
                     again."
                });
            if !pre.retype_env.is_empty() {
                env.error = Some(format!(
                    "Enter the values of {} again: values are secrets and are not shown back.",
                    pre.retype_env.join(", ")
                ));
            }
            let tls_stored = ["tls_ca", "tls_cert", "tls_key"]
                .iter()
                .any(|f| pre.stored(f));
            let mut tls_ca = secret(
                pre,
                "tls_ca",
                "CA certificate",
                "secret-area",
                "PEM. Needed for an https:// endpoint.",
            )
            .optional()
            .full();
            if tls_stored {
                tls_ca.clear = Some("clear_tls");
                tls_ca.clear_label = "Remove the stored TLS certificates and key";
            }
            sections.push(Section {
                id: "engine",
                title: "Engine and container",
                help: "",
                fields: vec![
                    Field::new("endpoint", "Engine endpoint", "text")
                        .value(pre.text("endpoint"))
                        .optional()
                        .placeholder("unix:///run/docker.sock")
                        .help(
                            "unix:///path/to/docker.sock, tcp://host:2376 or https://host:2376. \
                             Empty: the service's default engine.",
                        ),
                    Field::new("image", "Image", "text")
                        .value(pre.text("image"))
                        .optional()
                        .placeholder("python:3.11-slim")
                        .help("Empty: python:3.11-slim."),
                    Field::new("container_name", "Container name", "text")
                        .value(pre.text("container_name"))
                        .optional(),
                    env,
                    Field::new("volumes", "Volumes", "textarea")
                        .value(pre.lines("volumes"))
                        .optional()
                        .full()
                        .placeholder("/srv/data:/data")
                        .help("One host:container mount per line."),
                ],
            });
            sections.push(Section {
                id: "tls",
                title: "TLS client certificates",
                help: "Only for an engine reached over https:// or tcp:// with TLS. Stored \
                       encrypted, never shown again.",
                fields: vec![
                    tls_ca,
                    secret(
                        pre,
                        "tls_cert",
                        "Client certificate",
                        "secret-area",
                        "PEM, with the client key.",
                    )
                    .optional()
                    .full(),
                    secret(
                        pre,
                        "tls_key",
                        "Client key",
                        "secret-area",
                        "PEM, with the client certificate.",
                    )
                    .optional()
                    .full(),
                ],
            });
        }
        ServerType::Kubernetes => {
            let mut token = secret(
                pre,
                "service_account_token",
                "Service-account token",
                "password",
                "A service account's bearer token, or give a kubeconfig below.",
            )
            .optional();
            if token.stored {
                token.clear = Some("clear_service_account_token");
                token.clear_label = "Remove the stored token";
            }
            let mut kubeconfig = secret(
                pre,
                "kubeconfig",
                "Kubeconfig",
                "secret-area",
                "Instead of (or with) the token.",
            )
            .optional()
            .full();
            if kubeconfig.stored {
                kubeconfig.clear = Some("clear_kubeconfig");
                kubeconfig.clear_label = "Remove the stored kubeconfig";
            }
            sections.push(Section {
                id: "cluster",
                title: "Cluster",
                help: "",
                fields: vec![
                    Field::new("cluster_url", "Cluster URL", "url")
                        .value(pre.text("cluster_url"))
                        .placeholder("https://k8s.example.com:6443"),
                    Field::new("namespace", "Namespace", "text").value({
                        let n = pre.text("namespace");
                        if n.is_empty() && !pre.editing {
                            "default".to_string()
                        } else {
                            n
                        }
                    }),
                    Field::new("image", "Image", "text")
                        .value(pre.text("image"))
                        .optional()
                        .placeholder("busybox:1.36")
                        .help("The image commands run in. Empty: busybox:1.36."),
                    Field::new("ca_cert", "Cluster CA certificate", "textarea")
                        .value(pre.text("ca_cert"))
                        .optional()
                        .full()
                        .placeholder("-----BEGIN CERTIFICATE-----")
                        .help("PEM. Empty: the system's certificate authorities."),
                ],
            });
            sections.push(Section {
                id: "credentials",
                title: "Credentials",
                help: "A token or a kubeconfig is needed. Stored encrypted, never shown again.",
                fields: vec![token, kubeconfig],
            });
        }
        ServerType::Local => {}
    }
    general.push(
        Field::new("workspace_path", "Workspace path", "text")
            .value(pre.workspace_path.clone())
            .optional()
            .placeholder("/home/agent/work")
            .help("An absolute path commands start in."),
    );
    let mut default = Field::new("is_default", "Make it my default server", "checkbox")
        .help("Agent work runs on your default server unless a request names another.");
    default.checked = pre.is_default;
    general.push(default);
    if pre.editing {
        let mut active = Field::new("is_active", "Active", "checkbox")
            .help("An inactive server keeps its settings but runs nothing.");
        active.checked = pre.is_active;
        general.push(active);
    }
    let mut all = vec![Section {
        id: "server",
        title: "Server",
        help: "",
        fields: general,
    }];
    all.extend(sections);
    FormView {
        kind,
        sections: all,
        error: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn a_refused_form_keeps_no_secret() {
        let mut posted = input();
        posted.environment = Some(SecretString::from("TOKEN=CANARY-env\nKEEP=***masked***"));
        let pre = Prefill::from_input(&posted, ServerType::Ssh, false);
        let form = view(ServerType::Ssh, &pre);
        let drawn = format!("{form:?}");
        assert!(!drawn.contains("CANARY"), "{drawn}");
        let pw = form
            .sections
            .iter()
            .flat_map(|s| &s.fields)
            .find(|f| f.id == "password")
            .unwrap();
        assert_eq!(pw.help, RETYPE);
        let pre = Prefill::from_input(&posted, ServerType::Docker, true);
        assert_eq!(pre.retype_env, vec!["TOKEN".to_string()]);
        let drawn = format!("{:?}", view(ServerType::Docker, &pre));
        assert!(!drawn.contains("CANARY"), "{drawn}");
        assert!(drawn.contains("KEEP=***masked***"), "{drawn}");
    }
}
