//! The Docker backend against a real podman API service (started by `make test`).

use byok_tests::db::TestDb;
use byok_tests::server::{Env, TestServer};
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
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
