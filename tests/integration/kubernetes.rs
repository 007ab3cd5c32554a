//! The Kubernetes backend against a stand-in of the API server (tests/src/k8s.rs).

use byok_tests::db::TestDb;
use byok_tests::k8s::{KubeStandIn, TOKEN};
use byok_tests::server::{Env, TestServer};
use byok_tests::tls::TestPki;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_are_created_locked_down_read_and_deleted() {
    let api = KubeStandIn::start().await;
    let db = TestDb::sqlite();
    let data = tempfile::tempdir().unwrap();
    let env = Env::new(data.path(), &db.url).set("BYOK_ALLOWED_TARGETS", "127.0.0.1/32");
    let s = TestServer::start(env.clone());
    let t = env.create_user("k8s@example.com", "starter");
    let create = |name: &str, token: &str| {
        s.post(
            "/api/v1/execution-servers",
            &t,
            json!({"name": name, "server_type": "kubernetes", "workspace_path": "/work",
                   "connection_config": {"cluster_url": api.base, "namespace": "agents",
                                         "service_account_token": token}}),
        )
    };
    let r = create("cluster", TOKEN).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_eq!(
        r.json["connection_config"]["service_account_token"],
        "***masked***"
    );
    let id = r.json["id"].as_str().unwrap().to_string();

    let r = s
        .call(
            Method::POST,
            &format!("/api/v1/execution-servers/{id}/test"),
            Some(&t),
            None,
        )
        .await;
    assert_eq!(r.json["status"], "success", "{}", r.text);
    assert_eq!(r.json["details"]["version"], "v1.31.0");
    let reviews: Vec<Value> = api
        .requests()
        .iter()
        .filter(|q| {
            q.path
                .starts_with("/apis/authorization.k8s.io/v1/selfsubjectaccessreviews")
        })
        .map(|q| serde_json::from_slice(&q.body).unwrap())
        .collect();
    assert_eq!(reviews[0]["spec"]["resourceAttributes"]["resource"], "pods");
    assert_eq!(reviews[0]["spec"]["resourceAttributes"]["verb"], "create");
    assert_eq!(
        reviews[0]["spec"]["resourceAttributes"]["namespace"],
        "agents"
    );
    assert_eq!(
        reviews[1]["spec"]["resourceAttributes"]["subresource"],
        "exec"
    );

    let r = s
        .post(
            &format!("/api/v1/execution-servers/{id}/exec"),
            &t,
            json!({"command": "echo hi", "env": {"MODE": "test"}, "timeout_secs": 30}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["exit_code"], 0);
    assert_eq!(r.json["stdout"], "hello from the pod\n");
    let posted = api
        .requests()
        .into_iter()
        .find(|q| q.method == "POST" && q.path.starts_with("/api/v1/namespaces/agents/pods"))
        .unwrap();
    assert_eq!(posted.headers["authorization"], format!("Bearer {TOKEN}"));
    let pod: Value = serde_json::from_slice(&posted.body).unwrap();
    assert_eq!(pod["spec"]["activeDeadlineSeconds"], 30);
    assert_eq!(pod["spec"]["restartPolicy"], "Never");
    assert_eq!(pod["spec"]["securityContext"]["runAsNonRoot"], true);
    let c = &pod["spec"]["containers"][0];
    assert_eq!(c["command"], json!(["/bin/sh", "-c", "echo hi"]));
    assert_eq!(c["workingDir"], "/work");
    assert_eq!(
        c["resources"]["limits"],
        json!({"cpu": "1", "memory": "512Mi"})
    );
    assert_eq!(c["securityContext"]["allowPrivilegeEscalation"], false);
    assert_eq!(c["securityContext"]["capabilities"]["drop"], json!(["ALL"]));
    assert_eq!(pod["metadata"]["labels"]["byok.managed"], "true");
    assert!(
        api.requests().iter().any(|q| q.method == "DELETE"),
        "the pod is deleted"
    );
    let r = s
        .post(
            &format!("/api/v1/execution-servers/{id}/exec"),
            &t,
            json!({"command": "exit 3"}),
        )
        .await;
    assert_eq!(r.json["exit_code"], 3);

    // 401 from the API server: authentication failed. 403 from the access review: failed.
    for (name, token, code) in [
        ("bad-token", "wrong", "auth_failed"),
        ("readonly", "k8s-token-ok-readonly", "forbidden"),
    ] {
        let r = create(name, token).await;
        let sid = r.json["id"].as_str().unwrap().to_string();
        let r = s
            .call(
                Method::POST,
                &format!("/api/v1/execution-servers/{sid}/test"),
                Some(&t),
                None,
            )
            .await;
        assert_eq!(
            (
                r.json["status"].as_str(),
                r.json["details"]["code"].as_str()
            ),
            (Some("failed"), Some(code)),
            "{}",
            r.text
        );
    }
    // A kubeconfig that would run a program or read this host's files is refused, and the
    // program never runs.
    let marker = std::env::temp_dir().join(format!("byok-kube-exec-{}", uuid::Uuid::new_v4()));
    let evil = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: {}\n\
         users:\n- name: u\n  user:\n    exec:\n      apiVersion: client.authentication.k8s.io/v1\n      command: /bin/sh\n      args: [\"-c\", \"touch {}\"]\n\
         contexts:\n- name: x\n  context:\n    cluster: c\n    user: u\ncurrent-context: x\n",
        api.base,
        marker.display()
    );
    let r = s
        .post(
            "/api/v1/execution-servers",
            &t,
            json!({"name": "evil", "server_type": "kubernetes",
                   "connection_config": {"cluster_url": api.base, "kubeconfig": evil}}),
        )
        .await;
    let eid = r.json["id"].as_str().unwrap().to_string();
    let r = s
        .call(
            Method::POST,
            &format!("/api/v1/execution-servers/{eid}/test"),
            Some(&t),
            None,
        )
        .await;
    assert_eq!(
        r.json["details"]["code"], "backend_unavailable",
        "{}",
        r.text
    );
    assert!(
        r.json["message"].as_str().unwrap().contains("exec plugin"),
        "{}",
        r.text
    );
    assert!(!marker.exists(), "the kubeconfig's command must never run");

    // The same cluster through a kubeconfig instead of a token.
    let kubeconfig = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: {}\n\
         users:\n- name: u\n  user:\n    token: {TOKEN}\ncontexts:\n- name: x\n  context:\n    cluster: c\n    user: u\n\
         current-context: x\n",
        api.base
    );
    let r = s
        .post(
            "/api/v1/execution-servers",
            &t,
            json!({"name": "via-kubeconfig", "server_type": "kubernetes",
                     "connection_config": {"cluster_url": api.base, "kubeconfig": kubeconfig}}),
        )
        .await;
    assert_eq!(r.json["connection_config"]["kubeconfig"], "***masked***");
    let kid = r.json["id"].as_str().unwrap().to_string();
    let r = s
        .call(
            Method::POST,
            &format!("/api/v1/execution-servers/{kid}/test"),
            Some(&t),
            None,
        )
        .await;
    assert_eq!(r.json["status"], "success", "{}", r.text);
    // A kubeconfig must name exactly the cluster cluster_url names (what is checked, and handed
    // to an orchestrator with its checked address, is what it can reach).
    let second = kubeconfig.replace(
        "clusters:\n",
        "clusters:\n- name: inside\n  cluster:\n    server: https://kubernetes.default.svc\n",
    );
    for (name, cluster_url, kc) in [
        ("two-clusters", api.base.clone(), second),
        (
            "other-url",
            "https://k8s.example.com".to_string(),
            kubeconfig.clone(),
        ),
    ] {
        let r = s
            .post(
                "/api/v1/execution-servers",
                &t,
                json!({"name": name, "server_type": "kubernetes",
                       "connection_config": {"cluster_url": cluster_url, "kubeconfig": kc}}),
            )
            .await;
        let id = r.json["id"].as_str().unwrap().to_string();
        let r = s
            .call(
                Method::POST,
                &format!("/api/v1/execution-servers/{id}/test"),
                Some(&t),
                None,
            )
            .await;
        assert_eq!(
            r.json["details"]["code"], "backend_unavailable",
            "{name}: {}",
            r.text
        );
        assert!(
            r.json["message"]
                .as_str()
                .unwrap()
                .contains("exactly one cluster"),
            "{name}: {}",
            r.text
        );
    }
    // A namespace the cluster does not have: the API's 404 comes back as unreachable (502).
    let r = s
        .post("/api/v1/execution-servers", &t,
              json!({"name": "nowhere", "server_type": "kubernetes",
                     "connection_config": {"cluster_url": api.base, "namespace": "missing", "service_account_token": TOKEN}}))
        .await;
    let nid = r.json["id"].as_str().unwrap().to_string();
    let r = s
        .post(
            &format!("/api/v1/execution-servers/{nid}/exec"),
            &t,
            json!({"command": "true"}),
        )
        .await;
    assert_eq!(
        (r.status, r.json["code"].as_str()),
        (StatusCode::BAD_GATEWAY, Some("unreachable")),
        "{}",
        r.text
    );
    assert!(r.json["detail"].as_str().unwrap().contains("404"));
    // A cluster outside the allow-list is refused before any request.
    let r = s
        .post("/api/v1/execution-servers", &t,
              json!({"name": "far", "server_type": "kubernetes",
                     "connection_config": {"cluster_url": "https://10.0.0.1:6443", "service_account_token": TOKEN}}))
        .await;
    let far = r.json["id"].as_str().unwrap().to_string();
    let r = s
        .call(
            Method::POST,
            &format!("/api/v1/execution-servers/{far}/test"),
            Some(&t),
            None,
        )
        .await;
    assert_eq!(r.json["details"]["code"], "forbidden_target", "{}", r.text);
    s.finish();
}

/// An HTTPS API server whose certificate chains to the configured `ca_cert` (and fails without
/// it); stdin delivered through a Secret owned by the Pod, then deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_cluster_with_ca_cert_and_stdin_through_a_secret() {
    let pki = TestPki::new();
    let api = KubeStandIn::start_tls(&pki).await;
    let db = TestDb::sqlite();
    let data = tempfile::tempdir().unwrap();
    let env = Env::new(data.path(), &db.url).set("BYOK_ALLOWED_TARGETS", "127.0.0.1/32");
    let s = TestServer::start(env.clone());
    let t = env.create_user("k8s-tls@example.com", "starter");
    let create = |name: &str, ca: Option<&str>| {
        let mut config = json!({"cluster_url": api.base, "service_account_token": TOKEN});
        if let Some(ca) = ca {
            config["ca_cert"] = json!(ca);
        }
        s.post(
            "/api/v1/execution-servers",
            &t,
            json!({"name": name, "server_type": "kubernetes", "connection_config": config}),
        )
    };
    let test = |id: String| {
        let s = &s;
        let t = &t;
        async move {
            s.call(
                Method::POST,
                &format!("/api/v1/execution-servers/{id}/test"),
                Some(t),
                None,
            )
            .await
        }
    };
    let r = create("garbage-ca", Some("not a certificate")).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);

    let r = create("no-ca", None).await;
    let r = test(r.json["id"].as_str().unwrap().to_string()).await;
    assert_eq!(
        (
            r.json["status"].as_str(),
            r.json["details"]["code"].as_str()
        ),
        (Some("error"), Some("unreachable")),
        "an unknown CA is refused: {}",
        r.text
    );
    let other = TestPki::new();
    let r = create("wrong-ca", Some(&other.ca_pem)).await;
    let r = test(r.json["id"].as_str().unwrap().to_string()).await;
    assert_eq!(r.json["details"]["code"], "unreachable", "{}", r.text);

    let r = create("cluster", Some(&pki.ca_pem)).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_eq!(r.json["connection_config"]["ca_cert"], pki.ca_pem);
    let id = r.json["id"].as_str().unwrap().to_string();
    let r = test(id.clone()).await;
    assert_eq!(r.json["status"], "success", "{}", r.text);

    let input = "line one\nline two\n";
    let r = s
        .post(
            &format!("/api/v1/execution-servers/{id}/exec"),
            &t,
            json!({"command": ["cat"], "stdin": input}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["stdout"], input);
    let seen = api.requests();
    let pod_post = seen
        .iter()
        .find(|q| q.method == "POST" && q.path.split('?').next().unwrap().ends_with("/pods"))
        .unwrap();
    let pod: Value = serde_json::from_slice(&pod_post.body).unwrap();
    let c = &pod["spec"]["containers"][0];
    assert_eq!(
        c["command"],
        json!([
            "/bin/sh",
            "-c",
            "exec \"$@\" < /var/run/byok-stdin/stdin",
            "byok-stdin",
            "cat"
        ])
    );
    assert_eq!(c["volumeMounts"][0]["readOnly"], true);
    let secret_name = pod["spec"]["volumes"][0]["secret"]["secretName"]
        .as_str()
        .unwrap()
        .to_string();
    let secret_post = seen
        .iter()
        .find(|q| q.method == "POST" && q.path.split('?').next().unwrap().ends_with("/secrets"))
        .unwrap();
    let secret: Value = serde_json::from_slice(&secret_post.body).unwrap();
    assert_eq!(secret["metadata"]["name"], secret_name);
    assert_eq!(secret["metadata"]["ownerReferences"][0]["kind"], "Pod");
    assert_eq!(
        secret["metadata"]["ownerReferences"][0]["uid"],
        "uid-byok-exec-0"
    );
    assert_eq!(secret["immutable"], true);
    assert!(
        seen.iter().any(|q| q.method == "DELETE"
            && q.path
                .split('?')
                .next()
                .unwrap()
                .ends_with(&format!("/secrets/{secret_name}"))),
        "the stdin secret is deleted"
    );
    s.finish();
}
