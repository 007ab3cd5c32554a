//! The Kubernetes backend (`kube`): each command runs in a fresh, locked-down Pod.
//!
//! Client from `cluster_url` + `service_account_token` (+ `ca_cert`) or from a `kubeconfig`.
//! The cluster URL's host passes the outbound target policy and is connected at the checked
//! address (TLS still verified against the host name); `ca_cert` (PEM) is the CA the API
//! server's certificate must chain to. stdin travels in a Secret owned by the Pod and mounted
//! read-only (so the image needs `/bin/sh`). Test = server version plus a
//! `SelfSubjectAccessReview` for creating pods. Exec = a Pod with `restartPolicy: Never`,
//! `activeDeadlineSeconds`, CPU/memory limits, non-root, no privilege escalation, every
//! capability dropped, the managed labels; then its exit code and logs; then it is deleted.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use byok_core::execution::{
    CommandSpec, ExecError, ExecRequest, ExecResult, ExecutionBackend, ExecutionServer, OpenConfig,
    ServerTest, ServerType,
};
use byok_core::policy::TargetPolicy;
use k8s_openapi::ByteString;
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
};
use k8s_openapi::api::core::v1::{Pod, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{Api, DeleteParams, LogParams, PostParams};
use kube::{Client, Config};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};

use crate::docker::MANAGED_LABEL;

/// Runs commands as Pods on the user's cluster.
#[derive(Debug, Clone)]
pub struct KubernetesBackend {
    policy: TargetPolicy,
}

fn unreachable(e: impl std::fmt::Display) -> ExecError {
    ExecError::Unreachable(format!("the Kubernetes API: {e}"))
}

/// Maps an API error: 401 → auth_failed, anything else → unreachable (with its status).
fn api_error(e: kube::Error) -> ExecError {
    match &e {
        kube::Error::Api(s) if s.code == 401 => ExecError::AuthFailed,
        kube::Error::Api(s) => ExecError::Unreachable(format!(
            "the Kubernetes API answered {}: {}",
            s.code, s.reason
        )),
        _ => unreachable(e),
    }
}

impl KubernetesBackend {
    pub fn new(policy: TargetPolicy) -> Self {
        Self { policy }
    }

    async fn client(&self, config: &OpenConfig) -> Result<(Client, String), ExecError> {
        let (cfg, namespace, _) = self.checked_config(config).await?;
        let client = Client::try_from(cfg).map_err(unreachable)?;
        Ok((client, namespace))
    }

    /// The client configuration for the server, checked: only inline kubeconfig credentials,
    /// the API server's address through the target policy and pinned to the checked address.
    async fn checked_config(
        &self,
        config: &OpenConfig,
    ) -> Result<(Config, String, std::net::SocketAddr), ExecError> {
        let namespace = config
            .public
            .get("namespace")
            .and_then(Value::as_str)
            .unwrap_or("default")
            .to_string();
        let mut cfg = if let Some(kc) = config.secret("kubeconfig") {
            let parsed = kube::config::Kubeconfig::from_yaml(kc.expose_secret()).map_err(|_| {
                ExecError::BackendUnavailable("the kubeconfig cannot be parsed".into())
            })?;
            inline_only(&parsed)?;
            one_cluster(
                &parsed,
                config.public.get("cluster_url").and_then(Value::as_str),
            )?;
            Config::from_custom_kubeconfig(parsed, &kube::config::KubeConfigOptions::default())
                .await
                .map_err(|_| {
                    ExecError::BackendUnavailable("the kubeconfig cannot be used".into())
                })?
        } else {
            let url = config
                .public
                .get("cluster_url")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let mut cfg =
                Config::new(url.parse().map_err(|_| {
                    ExecError::BackendUnavailable("cluster_url is not a URL".into())
                })?);
            cfg.auth_info.token = config.secret("service_account_token").cloned();
            cfg
        };
        cfg.connect_timeout = Some(Duration::from_secs(10));
        cfg.read_timeout = Some(Duration::from_secs(60));
        cfg.default_namespace = namespace.clone();
        // The API server's host passes the target policy.
        let host = cfg
            .cluster_url
            .host()
            .unwrap_or_default()
            .trim_matches(['[', ']'])
            .to_string();
        let port =
            cfg.cluster_url
                .port_u16()
                .unwrap_or(if cfg.cluster_url.scheme_str() == Some("http") {
                    80
                } else {
                    443
                });
        let (_, checked) =
            crate::target::resolve_checked(&self.policy, &host, port, Duration::from_secs(10))
                .await?;
        if let Some(pem) = config.public.get("ca_cert").and_then(Value::as_str) {
            let certs = crate::tls::pem_certificates(pem, "ca_cert")?;
            cfg.root_cert = Some(certs.into_iter().map(|c| c.to_vec()).collect());
        }
        // Connect to the address that was checked (no second lookup a DNS answer could
        // change), verifying TLS against the configured host name.
        if host.parse::<IpAddr>().is_err() {
            let ip = checked.ip();
            if cfg.cluster_url.scheme_str() == Some("https") && cfg.tls_server_name.is_none() {
                cfg.tls_server_name = Some(host.clone());
            }
            cfg.cluster_url = pinned_url(&cfg.cluster_url, ip, port)?;
        }
        // kube 5 retries 429/503/504 by default; a retried pod creation or exec could run a
        // user's command twice, and the registry bounds every operation by its own deadline.
        cfg.default_retry = false;
        Ok((cfg, namespace, checked))
    }
}

/// Refuses a user's kubeconfig that would make this host run a program (`exec`, auth
/// providers), read its own files (`tokenFile`, certificate and key paths), use a proxy, or skip
/// TLS verification: only inline credentials (`token`, `*-data`) are accepted.
fn inline_only(kc: &kube::config::Kubeconfig) -> Result<(), ExecError> {
    let refuse = |what: &str| {
        Err(ExecError::BackendUnavailable(format!(
            "the kubeconfig uses {what}; only inline credentials (token, certificate and key data) are accepted"
        )))
    };
    for c in kc.clusters.iter().filter_map(|c| c.cluster.as_ref()) {
        if c.certificate_authority.is_some() {
            return refuse("a certificate-authority file");
        }
        if c.proxy_url.is_some() {
            return refuse("a proxy-url");
        }
        if c.insecure_skip_tls_verify == Some(true) {
            return refuse("insecure-skip-tls-verify");
        }
    }
    for u in kc.auth_infos.iter().filter_map(|a| a.auth_info.as_ref()) {
        if u.exec.is_some() {
            return refuse("an exec plugin");
        }
        if u.auth_provider.is_some() {
            return refuse("an auth-provider");
        }
        if u.token_file.is_some() {
            return refuse("a tokenFile");
        }
        if u.client_certificate.is_some() || u.client_key.is_some() {
            return refuse("certificate or key files");
        }
    }
    Ok(())
}

/// Refuses a kubeconfig that names more than one cluster, or another one than `cluster_url`:
/// what is checked (and handed to the orchestrator with its checked address) is then exactly
/// what the kubeconfig can reach.
fn one_cluster(kc: &kube::config::Kubeconfig, cluster_url: Option<&str>) -> Result<(), ExecError> {
    let refuse = || {
        Err(ExecError::BackendUnavailable(
            "the kubeconfig must name exactly one cluster, the one cluster_url names".into(),
        ))
    };
    let servers: Vec<&str> = kc
        .clusters
        .iter()
        .filter_map(|c| c.cluster.as_ref()?.server.as_deref())
        .collect();
    let same = |a: &str, b: &str| a.trim_end_matches('/') == b.trim_end_matches('/');
    match (servers.as_slice(), cluster_url) {
        ([server], Some(url)) if kc.clusters.len() == 1 && same(server, url) => Ok(()),
        _ => refuse(),
    }
}

/// `url` with its host replaced by `ip` (path kept: some clusters sit behind a path prefix).
fn pinned_url(url: &http::Uri, ip: IpAddr, port: u16) -> Result<http::Uri, ExecError> {
    let authority = std::net::SocketAddr::new(ip, port).to_string();
    let mut parts = url.clone().into_parts();
    parts.authority = Some(
        authority
            .parse()
            .map_err(|_| ExecError::BackendUnavailable("cluster_url is not a URL".into()))?,
    );
    http::Uri::from_parts(parts)
        .map_err(|_| ExecError::BackendUnavailable("cluster_url is not a URL".into()))
}

async fn can(
    client: &Client,
    namespace: &str,
    resource: &str,
    sub: Option<&str>,
) -> Result<bool, ExecError> {
    let review = SelfSubjectAccessReview {
        spec: SelfSubjectAccessReviewSpec {
            resource_attributes: Some(ResourceAttributes {
                namespace: Some(namespace.to_string()),
                verb: Some("create".into()),
                resource: Some(resource.into()),
                subresource: sub.map(str::to_owned),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    let api: Api<SelfSubjectAccessReview> = Api::all(client.clone());
    let answer = api
        .create(&PostParams::default(), &review)
        .await
        .map_err(api_error)?;
    Ok(answer.status.is_some_and(|s| s.allowed))
}

/// Where a command's stdin is mounted.
const STDIN_DIR: &str = "/var/run/byok-stdin";

/// The Secret holding a command's stdin, owned by its Pod.
fn stdin_secret_for(pod: &Pod, name: &str, data: &SecretString) -> Secret {
    let mut map = BTreeMap::new();
    map.insert(
        "stdin".to_string(),
        ByteString(data.expose_secret().as_bytes().to_vec()),
    );
    Secret {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            labels: Some(BTreeMap::from([(
                MANAGED_LABEL.to_string(),
                "true".to_string(),
            )])),
            owner_references: Some(vec![OwnerReference {
                api_version: "v1".into(),
                kind: "Pod".into(),
                name: pod.metadata.name.clone().unwrap_or_default(),
                uid: pod.metadata.uid.clone().unwrap_or_default(),
                ..Default::default()
            }]),
            ..Default::default()
        },
        data: Some(map),
        immutable: Some(true),
        ..Default::default()
    }
}

#[async_trait]
impl ExecutionBackend for KubernetesBackend {
    fn kind(&self) -> ServerType {
        ServerType::Kubernetes
    }

    async fn admit(
        &self,
        _: &ExecutionServer,
        config: &OpenConfig,
    ) -> Result<Option<std::net::SocketAddr>, ExecError> {
        self.checked_config(config)
            .await
            .map(|(_, _, addr)| Some(addr))
    }

    async fn test(
        &self,
        _server: &ExecutionServer,
        config: &OpenConfig,
    ) -> Result<ServerTest, ExecError> {
        let outcome = async {
            let (client, namespace) = self.client(config).await?;
            let version = client.apiserver_version().await.map_err(api_error)?;
            let pods = can(&client, &namespace, "pods", None).await?;
            let exec = can(&client, &namespace, "pods", Some("exec")).await?;
            Ok::<_, ExecError>((version.git_version, namespace, pods, exec))
        }
        .await;
        Ok(match outcome {
            Ok((version, namespace, true, exec)) => ServerTest {
                status: "success",
                message: "the cluster answers and allows creating pods".into(),
                details: json!({"version": version, "namespace": namespace,
                                "can_create_pods": true, "can_exec_pods": exec}),
            },
            Ok((version, namespace, false, exec)) => ServerTest {
                status: "failed",
                message: "the credentials may not create pods in this namespace".into(),
                details: json!({"code": "forbidden", "version": version, "namespace": namespace,
                                "can_create_pods": false, "can_exec_pods": exec}),
            },
            Err(e) => ServerTest::from_error(&e),
        })
    }

    async fn exec(
        &self,
        server: &ExecutionServer,
        config: &OpenConfig,
        request: &ExecRequest,
    ) -> Result<ExecResult, ExecError> {
        let (client, namespace) = self.client(config).await?;
        let image = config
            .public
            .get("image")
            .and_then(Value::as_str)
            .unwrap_or("busybox:1.36");
        let mut command: Vec<String> = match &request.command {
            CommandSpec::Argv(a) => a.clone(),
            CommandSpec::Shell(s) => vec!["/bin/sh".into(), "-c".into(), s.clone()],
        };
        // stdin: a Secret (created after the Pod, owned by it) mounted read-only, and the
        // command run with it as its input. The Pod waits for the volume until it exists.
        let stdin_secret = format!("byok-stdin-{}", uuid::Uuid::new_v4().simple());
        let (volumes, mounts) = if request.stdin.is_some() {
            let mut wrapped = vec![
                "/bin/sh".to_string(),
                "-c".into(),
                format!("exec \"$@\" < {STDIN_DIR}/stdin"),
                "byok-stdin".into(),
            ];
            wrapped.append(&mut command);
            command = wrapped;
            (
                json!([{"name": "stdin", "secret": {"secretName": stdin_secret, "defaultMode": 0o444}}]),
                json!([{"name": "stdin", "mountPath": STDIN_DIR, "readOnly": true}]),
            )
        } else {
            (json!([]), json!([]))
        };
        let env: Vec<Value> = request
            .env
            .iter()
            .map(|(k, v)| json!({"name": k, "value": v.expose_secret()}))
            .collect();
        let mut labels = BTreeMap::new();
        labels.insert(MANAGED_LABEL.to_string(), "true".to_string());
        labels.insert("byok.server".to_string(), server.id.to_string());
        let pod: Pod = serde_json::from_value(json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"generateName": "byok-exec-", "labels": labels},
            "spec": {
                "restartPolicy": "Never",
                "activeDeadlineSeconds": request.timeout.as_secs(),
                "automountServiceAccountToken": false,
                "volumes": volumes,
                "securityContext": {"runAsNonRoot": true, "runAsUser": 65534, "runAsGroup": 65534},
                "containers": [{
                    "name": "run",
                    "image": image,
                    "command": command,
                    "env": env,
                    "workingDir": server.workspace_path,
                    "volumeMounts": mounts,
                    "resources": {"limits": {"cpu": "1", "memory": "512Mi"},
                                  "requests": {"cpu": "100m", "memory": "64Mi"}},
                    "securityContext": {"allowPrivilegeEscalation": false,
                                        "readOnlyRootFilesystem": false,
                                        "capabilities": {"drop": ["ALL"]}}
                }]
            }
        }))
        .map_err(|e| ExecError::BackendUnavailable(format!("pod spec: {e}")))?;
        let pods: Api<Pod> = Api::namespaced(client, &namespace);
        let started = Instant::now();
        let created = pods
            .create(&PostParams::default(), &pod)
            .await
            .map_err(api_error)?;
        let name = created.metadata.name.clone().unwrap_or_default();
        if let Some(data) = &request.stdin {
            let secret = stdin_secret_for(&created, &stdin_secret, data);
            let secrets: Api<Secret> = Api::namespaced(pods.clone().into_client(), &namespace);
            if let Err(e) = secrets.create(&PostParams::default(), &secret).await {
                let _ = pods.delete(&name, &DeleteParams::default()).await;
                return Err(api_error(e));
            }
        }
        let deadline = started + request.timeout + Duration::from_secs(5);
        let mut exit_code = None;
        let mut timed_out = false;
        loop {
            let p = match pods.get(&name).await {
                Ok(p) => p,
                Err(e) => {
                    // Never leave the pod (and its stdin Secret) behind on an API error.
                    let _ = pods.delete(&name, &DeleteParams::default()).await;
                    if request.stdin.is_some() {
                        let secrets: Api<Secret> =
                            Api::namespaced(pods.clone().into_client(), &namespace);
                        let _ = secrets
                            .delete(&stdin_secret, &DeleteParams::default())
                            .await;
                    }
                    return Err(api_error(e));
                }
            };
            let status = p.status.unwrap_or_default();
            let terminated = status
                .container_statuses
                .unwrap_or_default()
                .into_iter()
                .find_map(|c| c.state.and_then(|s| s.terminated));
            if let Some(t) = terminated {
                exit_code = Some(t.exit_code);
                break;
            }
            if status.reason.as_deref() == Some("DeadlineExceeded") || Instant::now() >= deadline {
                timed_out = true;
                break;
            }
            if matches!(status.phase.as_deref(), Some("Failed")) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        // At most one byte more than the cap is read (to know whether it was cut).
        let logs = pods
            .logs(
                &name,
                &LogParams {
                    limit_bytes: Some(request.max_output as i64 + 1),
                    ..LogParams::default()
                },
            )
            .await
            .unwrap_or_default();
        let _ = pods.delete(&name, &DeleteParams::default()).await;
        if request.stdin.is_some() {
            // Owned by the Pod (garbage-collected with it), deleted now all the same.
            let secrets: Api<Secret> = Api::namespaced(pods.into_client(), &namespace);
            let _ = secrets
                .delete(&stdin_secret, &DeleteParams::default())
                .await;
        }
        let cap = request.max_output;
        let truncated = logs.len() > cap;
        let mut end = logs.len().min(cap);
        while !logs.is_char_boundary(end) {
            end -= 1;
        }
        let stdout = logs[..end].to_string();
        Ok(ExecResult {
            exit_code: if timed_out { None } else { exit_code },
            // Kubernetes merges the container's stdout and stderr into one log.
            stdout,
            stderr: String::new(),
            truncated,
            timed_out,
            duration_ms: started.elapsed().as_millis() as u64,
        })
    }
}
