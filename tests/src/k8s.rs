//! A loopback stand-in for the Kubernetes API server, written to the Kubernetes API reference:
//! `GET /version`, `POST /apis/authorization.k8s.io/v1/selfsubjectaccessreviews`, and Pods
//! (`POST`, `GET`, `GET …/log`, `DELETE`) under `/api/v1/namespaces/{ns}/pods`, with `Status`
//! error bodies (401 for a bad token). A token containing `readonly` may not create pods (the
//! access review says `allowed: false`). Created pods finish at once: exit code 0 and the log
//! `hello from the pod\n`, unless the command mentions `exit 3` (exit code 3). The namespace
//! `missing` does not exist (404). Secrets can be created and deleted; a pod that mounts a
//! Secret as its first volume logs the Secret's `stdin` entry (as `cat` of its stdin would).
//! `start_tls` serves HTTPS with a test PKI's server certificate.

use std::sync::{Arc, Mutex};

use base64::Engine;
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio_rustls::TlsAcceptor;

use crate::http::{Request, read_request, serve_loopback};
use crate::tls::TestPki;

pub const TOKEN: &str = "k8s-token-ok";

pub struct KubeStandIn {
    pub base: String,
    seen: Arc<Mutex<Vec<Request>>>,
}

/// Pods and Secrets the stand-in holds, by name.
#[derive(Default)]
struct Store {
    pods: Vec<(String, Value)>,
    secrets: Vec<(String, Value)>,
}

impl KubeStandIn {
    /// Plain HTTP on loopback.
    pub async fn start() -> Self {
        Self::serve(None).await
    }

    /// HTTPS with the server certificate of `pki` (clients must trust its CA).
    pub async fn start_tls(pki: &TestPki) -> Self {
        Self::serve(Some(TlsAcceptor::from(pki.server_config(false)))).await
    }

    async fn serve(tls: Option<TlsAcceptor>) -> Self {
        let seen: Arc<Mutex<Vec<Request>>> = Arc::default();
        let store: Arc<Mutex<Store>> = Arc::default();
        let record = seen.clone();
        let base = serve_loopback(tls, move |stream, _| {
            let (record, store) = (record.clone(), store.clone());
            async move { handle(stream, &record, &store).await }
        })
        .await;
        Self { base, seen }
    }

    pub fn requests(&self) -> Vec<Request> {
        self.seen.lock().unwrap().clone()
    }
}

async fn handle<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    record: &Mutex<Vec<Request>>,
    store: &Mutex<Store>,
) {
    let (r, mut w) = tokio::io::split(stream);
    let Ok(req) = read_request(r).await else {
        return;
    };
    record.lock().unwrap().push(req.clone());
    let (status, body) = answer(&req, store);
    // Pod logs are plain text; everything else is JSON.
    let (text, kind) = match body {
        Value::String(log) => (log, "text/plain"),
        other => (other.to_string(), "application/json"),
    };
    let head = format!(
        "HTTP/1.1 {status} X\r\ncontent-type: {kind}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        text.len()
    );
    let _ = w.write_all(head.as_bytes()).await;
    let _ = w.write_all(text.as_bytes()).await;
    let _ = w.shutdown().await;
}

fn status(code: u16, reason: &str, message: &str) -> (u16, Value) {
    (
        code,
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
               "message": message, "reason": reason, "code": code}),
    )
}

fn answer(req: &Request, store: &Mutex<Store>) -> (u16, Value) {
    let token = req
        .headers
        .get("authorization")
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default()
        .to_string();
    if !token.starts_with(TOKEN) {
        return status(401, "Unauthorized", "Unauthorized");
    }
    let path = req.path.split('?').next().unwrap_or_default().to_string();
    if path == "/version" {
        return (
            200,
            json!({"major": "1", "minor": "31", "gitVersion": "v1.31.0", "gitCommit": "standin",
            "gitTreeState": "clean", "buildDate": "2026-01-01T00:00:00Z", "goVersion": "go1.22",
            "compiler": "gc", "platform": "linux/amd64"}),
        );
    }
    if path == "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews" && req.method == "POST" {
        let mut review: Value = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
        review["status"] = json!({"allowed": !token.contains("readonly")});
        return (201, review);
    }
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    // api/v1/namespaces/{ns}/secrets[/{name}]
    if parts.len() >= 5 && parts[0] == "api" && parts[2] == "namespaces" && parts[4] == "secrets" {
        let mut store = store.lock().unwrap();
        return match (req.method.as_str(), parts.get(5)) {
            ("POST", None) => {
                let secret: Value = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
                let name = secret["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                if store.secrets.iter().any(|(n, _)| *n == name) {
                    return status(409, "AlreadyExists", "secrets already exists");
                }
                store.secrets.push((name, secret.clone()));
                (201, secret)
            }
            ("DELETE", Some(name)) => match store.secrets.iter().position(|(n, _)| n == name) {
                Some(i) => (200, store.secrets.remove(i).1),
                None => status(404, "NotFound", "secrets not found"),
            },
            _ => status(405, "MethodNotAllowed", "method not allowed"),
        };
    }
    // api/v1/namespaces/{ns}/pods[/{name}[/log]]
    if parts.len() >= 5 && parts[0] == "api" && parts[2] == "namespaces" && parts[4] == "pods" {
        let ns = parts[3];
        if ns == "missing" {
            return status(404, "NotFound", "namespaces \"missing\" not found");
        }
        match (req.method.as_str(), parts.get(5), parts.get(6)) {
            ("POST", None, None) => {
                let mut pod: Value = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
                let mut store = store.lock().unwrap();
                let name = format!("byok-exec-{}", store.pods.len());
                pod["metadata"]["name"] = json!(name);
                pod["metadata"]["uid"] = json!(format!("uid-{name}"));
                pod["metadata"]["namespace"] = json!(ns);
                let cmd = pod
                    .pointer("/spec/containers/0/command")
                    .map(Value::to_string)
                    .unwrap_or_default();
                let code = if cmd.contains("exit 3") { 3 } else { 0 };
                pod["status"] = json!({"phase": if code == 0 { "Succeeded" } else { "Failed" },
                    "containerStatuses": [{"name": "run", "ready": false, "restartCount": 0, "image": "x", "imageID": "x",
                        "state": {"terminated": {"exitCode": code, "reason": "Completed"}}}]});
                store.pods.push((name, pod.clone()));
                (201, pod)
            }
            ("GET", Some(name), None) => {
                match store.lock().unwrap().pods.iter().find(|(n, _)| n == name) {
                    Some((_, p)) => (200, p.clone()),
                    None => status(404, "NotFound", "pods not found"),
                }
            }
            ("GET", Some(name), Some(&"log")) => {
                (200, Value::String(pod_log(&store.lock().unwrap(), name)))
            }
            ("DELETE", Some(name), None) => {
                let mut store = store.lock().unwrap();
                match store.pods.iter().position(|(n, _)| n == name) {
                    Some(i) => (200, store.pods.remove(i).1),
                    None => status(404, "NotFound", "pods not found"),
                }
            }
            _ => status(405, "MethodNotAllowed", "method not allowed"),
        }
    } else {
        status(
            404,
            "NotFound",
            "the server could not find the requested resource",
        )
    }
}

/// The log of a pod: what its stdin Secret holds, when it mounts one (as `cat` would print),
/// else a fixed line.
fn pod_log(store: &Store, name: &str) -> String {
    let secret_name = store
        .pods
        .iter()
        .find(|(n, _)| n == name)
        .and_then(|(_, p)| p.pointer("/spec/volumes/0/secret/secretName").cloned());
    let Some(Value::String(secret_name)) = secret_name else {
        return "hello from the pod\n".into();
    };
    store
        .secrets
        .iter()
        .find(|(n, _)| *n == secret_name)
        .and_then(|(_, s)| s.pointer("/data/stdin").and_then(Value::as_str))
        .and_then(|b64| base64::engine::general_purpose::STANDARD.decode(b64).ok())
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_else(|| "(stdin secret missing)\n".into())
}
