//! The Docker backend against a real podman API service (started by `make test`).

use byok_tests::db::TestDb;
use std::time::Duration;

use byok_exec::DockerBackend;
use byok_tests::server::{Env, TestServer};
use byok_tests::tls::{TestPki, tls_front_for_unix_socket};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

fn socket() -> String {
    std::env::var("BYOK_TEST_PODMAN_SOCK")
        .expect("BYOK_TEST_PODMAN_SOCK is not set: make test starts podman's API service")
}

/// Containers carrying the managed label, as podman lists them.
fn managed_containers() -> String {
    let out = std::process::Command::new("podman")
        .args(["ps", "-a", "-q", "--filter", "label=byok.managed=true"])
        .output()
        .expect("podman");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// One test, in sequence: the reaper at its end removes every managed container, which would
/// break a Docker test running beside it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_backend_against_podman() {
    containers_run_locked_down_and_leave_nothing_behind().await;
    tls_endpoint_with_client_certificates().await;
    the_reaper_removes_what_a_crash_left_behind().await;
}

async fn containers_run_locked_down_and_leave_nothing_behind() {
    let sock = socket();
    let db = TestDb::sqlite();
    let data = tempfile::tempdir().unwrap();
    let env = Env::new(data.path(), &db.url).set("BYOK_DOCKER_SOCKETS", &sock);
    let s = TestServer::start(env.clone());
    let t = env.create_user("docker@example.com", "starter");
    let r = s
        .post(
            "/api/v1/execution-servers",
            &t,
            json!({"name": "engine", "server_type": "docker", "workspace_path": "/work",
                   "connection_config": {"endpoint": format!("unix://{sock}"), "image": "localtest:latest",
                                         "environment": {"CONFIGURED": "from-config"}}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_eq!(
        r.json["connection_config"]["environment"]["CONFIGURED"],
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

    let exec_path = format!("/api/v1/execution-servers/{id}/exec");
    let exec = |body: Value| s.post(&exec_path, &t, body);
    let r = exec(json!({"command": "pwd; echo $CONFIGURED $EXTRA; echo e >&2; exit 4", "env": {"EXTRA": "x"}})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["exit_code"], 4);
    assert_eq!(r.json["stdout"], "/work\nfrom-config x\n");
    assert_eq!(r.json["stderr"], "e\n");
    // Locked down: no capabilities, no network but loopback.
    let r = exec(json!({"command": "grep CapEff /proc/self/status; ls /sys/class/net"})).await;
    let out = r.json["stdout"].as_str().unwrap();
    assert!(out.contains("CapEff:\t0000000000000000"), "{out}");
    assert_eq!(out.lines().skip(1).collect::<Vec<_>>(), ["lo"], "{out}");
    // stdin reaches the command and ends (cat returns).
    let r = exec(json!({"command": ["cat"], "stdin": "to the container\n"})).await;
    assert_eq!(
        (r.json["exit_code"].as_i64(), r.json["stdout"].as_str()),
        (Some(0), Some("to the container\n")),
        "{}",
        r.text
    );
    // A command that never reads its stdin does not hang the exec.
    let r = exec(json!({"command": "echo ignored", "stdin": "x".repeat(300_000)})).await;
    assert_eq!(r.json["stdout"], "ignored\n", "{}", r.text);
    let r = exec(json!({"command": "cat", "stdin": "x".repeat(600 * 1024)})).await;
    assert_eq!(
        (r.status, r.json["code"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("invalid_stdin")),
        "{}",
        r.text
    );
    let r = exec(json!({"command": "sleep 30", "timeout_secs": 2})).await;
    assert_eq!(
        (r.json["timed_out"].as_bool(), r.json["exit_code"].is_null()),
        (Some(true), true),
        "{}",
        r.text
    );
    assert_eq!(managed_containers(), "", "every container was removed");

    // The service's own engine is out of reach unless the operator listed it.
    for endpoint in ["unix:///var/run/docker.sock", "tcp://127.0.0.1:2375"] {
        let r = s
            .post("/api/v1/execution-servers", &t,
                  json!({"name": endpoint, "server_type": "docker", "connection_config": {"endpoint": endpoint}}))
            .await;
        let other = r.json["id"].as_str().unwrap().to_string();
        let r = s
            .call(
                Method::POST,
                &format!("/api/v1/execution-servers/{other}/test"),
                Some(&t),
                None,
            )
            .await;
        assert_eq!(
            r.json["details"]["code"], "forbidden_target",
            "{endpoint}: {}",
            r.text
        );
    }
    s.finish();
}

/// The engine behind TLS that requires client certificates (`dockerd --tlsverify`): a TLS
/// front on loopback relaying to podman's socket.
async fn tls_endpoint_with_client_certificates() {
    let pki = TestPki::new();
    let addr = tls_front_for_unix_socket(&pki, &socket()).await;
    let db = TestDb::sqlite();
    let data = tempfile::tempdir().unwrap();
    let env = Env::new(data.path(), &db.url).set("BYOK_ALLOWED_TARGETS", "127.0.0.1/32");
    let s = TestServer::start(env.clone());
    let t = env.create_user("docker-tls@example.com", "starter");
    let endpoint = format!("https://{addr}");
    let create = |name: &str, extra: Value| {
        let mut config = json!({"endpoint": endpoint, "image": "localtest:latest"});
        for (k, v) in extra.as_object().unwrap() {
            config[k] = v.clone();
        }
        s.post(
            "/api/v1/execution-servers",
            &t,
            json!({"name": name, "server_type": "docker", "connection_config": config}),
        )
    };
    let test = |id: String| {
        let (s, t) = (&s, &t);
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
    // Refused at registration: https without a CA, a certificate without its key, not PEM.
    for (name, extra) in [
        ("no-ca", json!({})),
        (
            "cert-only",
            json!({"tls_ca": pki.ca_pem, "tls_cert": pki.client_cert_pem}),
        ),
        ("not-pem", json!({"tls_ca": "hello"})),
    ] {
        let r = create(name, extra).await;
        assert_eq!(
            r.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{name}: {}",
            r.text
        );
    }
    let full = json!({"tls_ca": pki.ca_pem, "tls_cert": pki.client_cert_pem,
                      "tls_key": pki.client_key_pem});
    let r = create("engine", full).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    for f in ["tls_ca", "tls_cert", "tls_key"] {
        assert_eq!(r.json["connection_config"][f], "***masked***", "{f}");
    }
    let id = r.json["id"].as_str().unwrap().to_string();
    let r = test(id.clone()).await;
    assert_eq!(r.json["status"], "success", "{}", r.text);
    let r = s
        .post(
            &format!("/api/v1/execution-servers/{id}/exec"),
            &t,
            json!({"command": "echo over tls"}),
        )
        .await;
    assert_eq!(r.json["stdout"], "over tls\n", "{}", r.text);

    // The engine refuses a client without a certificate; a CA that did not sign the
    // engine's certificate refuses the engine.
    let other = TestPki::new();
    for (name, extra) in [
        ("no-client-cert", json!({"tls_ca": pki.ca_pem})),
        (
            "wrong-ca",
            json!({"tls_ca": other.ca_pem, "tls_cert": pki.client_cert_pem,
                            "tls_key": pki.client_key_pem}),
        ),
    ] {
        let r = create(name, extra).await;
        let r = test(r.json["id"].as_str().unwrap().to_string()).await;
        assert_eq!(
            (
                r.json["status"].as_str(),
                r.json["details"]["code"].as_str()
            ),
            (Some("error"), Some("unreachable")),
            "{name}: {}",
            r.text
        );
    }
    // The key material never comes back, in any form.
    let r = s
        .call(Method::GET, "/api/v1/execution-servers", Some(&t), None)
        .await;
    assert!(!r.text.contains("PRIVATE KEY"), "{}", r.text);
    let logs = s.finish();
    assert!(!logs.contains("PRIVATE KEY"));
}

/// Containers a crash left behind (managed label, never removed) are removed by the reaper;
/// unlabelled containers are not touched.
async fn the_reaper_removes_what_a_crash_left_behind() {
    let podman = |args: &[&str]| {
        let out = std::process::Command::new("podman")
            .args(args)
            .output()
            .expect("podman");
        assert!(
            out.status.success(),
            "podman {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let left = podman(&[
        "create",
        "--label",
        "byok.managed=true",
        "localtest:latest",
        "true",
    ]);
    let foreign = podman(&["create", "--label", "other=yes", "localtest:latest", "true"]);
    let docker = byok_exec::docker_client(&socket()).unwrap();
    // Younger than the age given: kept.
    assert_eq!(
        DockerBackend::reap(&docker, Duration::from_secs(3600)).await,
        0
    );
    assert!(managed_containers().contains(&left[..12]));
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        DockerBackend::reap(&docker, Duration::from_secs(1)).await,
        1
    );
    assert_eq!(managed_containers(), "");
    podman(&["rm", "-f", &foreign]);
}
