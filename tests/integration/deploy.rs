//! The packaging: `deploy/kubernetes` rendered by `kubectl kustomize` (offline) and every object
//! parsed into the Kubernetes API types, with the essentials checked; the Dockerfile's rules.

use std::collections::BTreeMap;
use std::path::PathBuf;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use serde_json::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The rendered overlay, one JSON value per object, by `Kind/name`.
fn render(overlay: &str) -> BTreeMap<String, Value> {
    let out = std::process::Command::new("kubectl")
        .args(["kustomize", overlay])
        .current_dir(root())
        .output()
        .expect("kubectl (`make test` installs it)");
    assert!(
        out.status.success(),
        "kubectl kustomize {overlay}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let mut objects = BTreeMap::new();
    for doc in serde_yaml::Deserializer::from_str(&text) {
        let v: Value = serde::Deserialize::deserialize(doc).unwrap();
        if v.is_null() {
            continue;
        }
        let key = format!(
            "{}/{}",
            v["kind"].as_str().unwrap(),
            v["metadata"]["name"].as_str().unwrap()
        );
        assert!(objects.insert(key.clone(), v).is_none(), "{key} twice");
    }
    objects
}

fn typed<T: serde::de::DeserializeOwned + serde::Serialize>(
    objects: &BTreeMap<String, Value>,
    key: &str,
) -> T {
    let v = objects
        .get(key)
        .unwrap_or_else(|| panic!("{key} not rendered; have {:?}", objects.keys()));
    let t: T = serde_json::from_value(v.clone()).unwrap_or_else(|e| panic!("{key}: {e}"));
    // A misspelt field would be dropped silently by the parse: the round trip must give back
    // every field that was written.
    assert_eq!(
        &serde_json::to_value(&t).unwrap(),
        v,
        "{key}: a field is not part of the API"
    );
    t
}

#[test]
fn kustomize_renders_a_production_ready_deployment() {
    for overlay in [
        "deploy/kubernetes/base",
        "deploy/kubernetes/overlays/example",
    ] {
        let objects = render(overlay);
        let ns = if overlay.ends_with("example") {
            let _: Namespace = typed(&objects, "Namespace/byok");
            Some("byok")
        } else {
            None
        };
        for (key, v) in &objects {
            assert_eq!(
                v["metadata"]["namespace"].as_str(),
                ns.filter(|_| !key.starts_with("Namespace/")),
                "{key}"
            );
        }

        let d: Deployment = typed(&objects, "Deployment/byok-gateway");
        let spec = d.spec;
        let pod = spec.template.spec.unwrap();
        assert_eq!(
            spec.replicas, None,
            "{overlay}: the HPA owns the replica count"
        );
        assert_eq!(pod.automount_service_account_token, Some(false));
        let psc = pod.security_context.unwrap();
        assert_eq!(psc.run_as_non_root, Some(true));
        assert!(psc.run_as_user.unwrap() > 0);
        assert_eq!(psc.seccomp_profile.unwrap().type_, "RuntimeDefault");
        assert!(pod.termination_grace_period_seconds.unwrap() >= 35);
        let c = &pod.containers[0];
        assert_eq!(c.args.as_deref(), Some(&["serve".to_string()][..]));
        let sc = c.security_context.clone().unwrap();
        assert_eq!(sc.read_only_root_filesystem, Some(true));
        assert_eq!(sc.allow_privilege_escalation, Some(false));
        assert_eq!(
            sc.capabilities.unwrap().drop.unwrap(),
            vec!["ALL".to_string()]
        );
        let probe_path = |p: &Option<k8s_openapi::api::core::v1::Probe>| {
            p.as_ref()
                .and_then(|p| p.http_get.as_ref())
                .and_then(|h| h.path.clone())
        };
        assert_eq!(probe_path(&c.readiness_probe).as_deref(), Some("/readyz"));
        assert_eq!(probe_path(&c.liveness_probe).as_deref(), Some("/healthz"));
        let res = c.resources.clone().unwrap();
        for (what, map) in [("requests", res.requests), ("limits", res.limits)] {
            let map = map.unwrap_or_else(|| panic!("no resource {what}"));
            assert!(
                map.contains_key("cpu") && map.contains_key("memory"),
                "{what}"
            );
        }
        // Secrets only by reference, never as literal values.
        let env = c.env.clone().unwrap();
        for (var, key) in [
            ("DATABASE_URL", "database-url"),
            ("ENCRYPTION_KEY", "encryption-key"),
            ("KEYCLOAK_CLIENT_SECRET", "keycloak-client-secret"),
        ] {
            let e = env.iter().find(|e| e.name == var).unwrap();
            assert!(e.value.is_none(), "{var} has a literal value");
            let r = e
                .value_from
                .as_ref()
                .and_then(|v| v.secret_key_ref.as_ref())
                .unwrap();
            assert_eq!((r.name.as_str(), r.key.as_str()), ("byok-secrets", key));
        }
        assert!(!objects.keys().any(|k| k.starts_with("Secret/")));
        // Writable paths are emptyDirs (the root filesystem is read-only).
        let mounts: Vec<_> = c
            .volume_mounts
            .clone()
            .unwrap()
            .into_iter()
            .map(|m| m.mount_path)
            .collect();
        assert!(mounts.contains(&"/data".to_string()) && mounts.contains(&"/tmp".to_string()));
        // The usage spool (a database outage) fits in the data volume: an emptyDir over its
        // sizeLimit gets the pod evicted.
        let data_mib: u64 = pod
            .volumes
            .as_ref()
            .unwrap()
            .iter()
            .find(|v| v.name == "data")
            .and_then(|v| v.empty_dir.as_ref())
            .and_then(|e| e.size_limit.as_ref())
            .and_then(|q| q.0.strip_suffix("Mi"))
            .expect("the data emptyDir has a sizeLimit in Mi")
            .parse()
            .unwrap();

        let cm: ConfigMap = typed(&objects, "ConfigMap/byok-gateway-config");
        let data = cm.data.unwrap();
        assert_eq!(data["BYOK_BOOTSTRAP_ADMIN"], "false");
        let spool_mib: u64 = data["BYOK_USAGE_SPOOL_MAX_MB"].parse().unwrap();
        assert!(
            spool_mib + 16 <= data_mib,
            "the usage spool ({spool_mib} MiB) must fit in the data volume ({data_mib} Mi)"
        );
        let drain: u32 = data["BYOK_SHUTDOWN_DRAIN_SECS"].parse().unwrap();
        let timeout: u32 = data["BYOK_SHUTDOWN_TIMEOUT_SECS"].parse().unwrap();
        // + up to 10 s for the last usage flush.
        assert!(
            i64::from(drain + timeout + 10) < pod.termination_grace_period_seconds.unwrap(),
            "the grace period must cover drain + shutdown timeout + usage flush"
        );
        for v in data.values() {
            assert!(
                !v.contains("postgres://"),
                "a connection string in the ConfigMap"
            );
        }

        let svc: Service = typed(&objects, "Service/byok-gateway");
        let sel = svc.spec.unwrap().selector.unwrap();
        let labels = spec.template.metadata.unwrap().labels.unwrap();
        for (k, v) in &sel {
            assert_eq!(
                labels.get(k),
                Some(v),
                "the Service does not select the pods"
            );
        }
        let _: ServiceAccount = typed(&objects, "ServiceAccount/byok-gateway");
        let hpa: HorizontalPodAutoscaler = typed(&objects, "HorizontalPodAutoscaler/byok-gateway");
        let hs = hpa.spec;
        assert!(hs.min_replicas.unwrap() >= 2);
        let metrics_token = env.iter().find(|e| e.name == "BYOK_METRICS_TOKEN").unwrap();
        let r = metrics_token
            .value_from
            .as_ref()
            .and_then(|v| v.secret_key_ref.as_ref())
            .unwrap();
        assert_ne!(
            r.optional,
            Some(true),
            "the ServiceMonitor needs the metrics token"
        );
        assert_eq!(hs.scale_target_ref.name, "byok-gateway");
        let pdb: PodDisruptionBudget = typed(&objects, "PodDisruptionBudget/byok-gateway");
        assert!(pdb.spec.unwrap().min_available.is_some());
        let np: NetworkPolicy = typed(&objects, "NetworkPolicy/byok-gateway");
        let nps = np.spec.unwrap();
        assert_eq!(
            nps.policy_types.unwrap(),
            vec!["Ingress".to_string(), "Egress".to_string()]
        );
        let egress = serde_json::to_string(&nps.egress).unwrap();
        assert!(
            egress.contains("169.254.169.254/32"),
            "metadata address not excluded"
        );
        assert!(
            egress.contains(r#""namespaceSelector":{}"#),
            "in-cluster PostgreSQL/Redis unreachable: ipBlock does not cover pods on every CNI"
        );
        let sm = &objects["ServiceMonitor/byok-gateway"];
        assert_eq!(sm["apiVersion"], "monitoring.coreos.com/v1");
        assert_eq!(sm["spec"]["endpoints"][0]["path"], "/metrics");
        assert_eq!(sm["spec"]["endpoints"][0]["port"], "http");
    }
}

#[test]
fn the_image_runs_as_non_root_without_baked_secrets() {
    let text = std::fs::read_to_string(root().join("Dockerfile")).unwrap();
    let froms: Vec<_> = text.lines().filter(|l| l.starts_with("FROM ")).collect();
    assert!(froms.len() >= 2, "multi-stage build expected");
    let last = text.rsplit("\nFROM ").next().unwrap();
    let user = last
        .lines()
        .find_map(|l| l.strip_prefix("USER "))
        .expect("the runtime stage sets USER");
    assert!(
        !user.starts_with("root") && !user.starts_with("0"),
        "{user}"
    );
    assert!(last.contains(r#"CMD ["serve"]"#));
    for l in text
        .lines()
        .filter(|l| l.starts_with("ENV") || l.starts_with("    "))
    {
        for secret in [
            "ENCRYPTION_KEY",
            "DATABASE_URL",
            "SECRET",
            "PASSWORD",
            "API_KEY",
        ] {
            assert!(!l.contains(secret), "a secret in the image: {l}");
        }
    }
    let ignore = std::fs::read_to_string(root().join(".dockerignore")).unwrap();
    for must in ["target", "data", ".venv", "*.db", ".env"] {
        assert!(
            ignore.lines().any(|l| l == must),
            "{must} not in .dockerignore"
        );
    }
}

/// The runtime image (distroless `cc`) has glibc and libgcc, nothing else: the binary must not
/// need another shared library (zlib, OpenSSL, SQLite are linked in).
#[test]
fn the_binary_needs_only_glibc_and_libgcc() {
    let bin = byok_tests::server::binary();
    let out = std::process::Command::new("ldd")
        .arg(&bin)
        .output()
        .unwrap();
    assert!(out.status.success(), "ldd {}", bin.display());
    let text = String::from_utf8_lossy(&out.stdout);
    const ALLOWED: &[&str] = &[
        "linux-vdso.so",
        "libc.so",
        "libm.so",
        "libgcc_s.so",
        "libpthread.so",
        "libdl.so",
        "librt.so",
        "ld-linux",
    ];
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        assert!(
            ALLOWED.iter().any(|a| line.contains(a)),
            "the image lacks {line}"
        );
    }
}
