//! The SSH backend against a real `sshd` on loopback.

use byok_tests::db::TestDb;
use byok_tests::server::{Env, TestServer};
use byok_tests::sshd::{PASSWORD, Sshd, USER};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

fn gateway() -> (TestServer, Env, TestDb, tempfile::TempDir) {
    let db = TestDb::sqlite();
    let data = tempfile::tempdir().unwrap();
    let env = Env::new(data.path(), &db.url).set("BYOK_ALLOWED_TARGETS", "127.0.0.1/32");
    (TestServer::start(env.clone()), env, db, data)
}

async fn create(
    s: &TestServer,
    t: &str,
    name: &str,
    config: Value,
    workspace: Option<&str>,
) -> String {
    let r = s
        .post(
            "/api/v1/execution-servers",
            t,
            json!({"name": name, "server_type": "ssh", "connection_config": config, "workspace_path": workspace}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    r.json["id"].as_str().unwrap().to_string()
}

async fn test_server(s: &TestServer, t: &str, id: &str) -> byok_tests::server::Resp {
    s.call(
        Method::POST,
        &format!("/api/v1/execution-servers/{id}/test"),
        Some(t),
        None,
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_auth_trust_on_first_use_and_exec() {
    let sshd = Sshd::start();
    let (s, env, _db, _data) = gateway();
    let t = env.create_user("ssh@example.com", "starter");
    let config = json!({"host": "127.0.0.1", "port": sshd.port, "username": USER,
                        "auth_method": "password", "password": PASSWORD});
    let id = create(&s, &t, "box", config, Some("/tmp")).await;

    // No pin yet: the test says so and shows the presented fingerprint; nothing runs.
    let r = test_server(&s, &t, &id).await;
    assert_eq!(r.json["status"], "failed", "{}", r.text);
    assert_eq!(r.json["details"]["code"], "host_key_unverified");
    assert_eq!(
        r.json["details"]["host_key_fingerprint"],
        sshd.fingerprint.as_str()
    );
    let exec_path = format!("/api/v1/execution-servers/{id}/exec");
    let exec = |body: Value| s.post(&exec_path, &t, body);
    let r = exec(json!({"command": "true"})).await;
    assert_eq!(
        (r.status, r.json["code"].as_str()),
        (StatusCode::CONFLICT, Some("host_key_unverified"))
    );

    // A body that is there but wrong never means "trust what is presented" (review): a typo,
    // a form body, a wrong type are refused and nothing is pinned.
    let trust_path = format!("{}/api/v1/execution-servers/{id}/trust-host-key", s.base);
    for (content_type, body, status) in [
        (
            "application/json",
            r#"{"fingerprnt": "SHA256:x"}"#.to_string(),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "application/json",
            r#"{"fingerprint": 5}"#.to_string(),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "application/json",
            "{not json".to_string(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "application/x-www-form-urlencoded",
            format!("fingerprint={}", sshd.fingerprint),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ),
    ] {
        let r = s
            .send(
                s.http
                    .post(&trust_path)
                    .bearer_auth(&t)
                    .header("content-type", content_type)
                    .body(body.clone()),
            )
            .await;
        assert_eq!(r.status, status, "{body}: {}", r.text);
    }
    let r = test_server(&s, &t, &id).await;
    assert_eq!(
        r.json["details"]["code"], "host_key_unverified",
        "nothing was pinned"
    );

    // Trusting another fingerprint than the presented one is refused.
    let r = s
        .post(
            &format!("/api/v1/execution-servers/{id}/trust-host-key"),
            &t,
            json!({"fingerprint": "SHA256:not-it"}),
        )
        .await;
    assert_eq!(
        (r.status, r.json["code"].as_str()),
        (StatusCode::CONFLICT, Some("host_key_mismatch"))
    );
    let r = s
        .post(
            &format!("/api/v1/execution-servers/{id}/trust-host-key"),
            &t,
            json!({"fingerprint": sshd.fingerprint}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(
        r.json["connection_config"]["host_key_fingerprint"],
        sshd.fingerprint.as_str()
    );
    assert_eq!(r.json["connection_config"]["password"], "***masked***");

    let r = test_server(&s, &t, &id).await;
    assert_eq!(r.json["status"], "success", "{}", r.text);
    assert!(
        r.json["details"]["uname"]
            .as_str()
            .unwrap()
            .contains("Linux")
    );

    let r = exec(
        json!({"command": "pwd; echo $GREETING; echo oops >&2; exit 3", "env": {"GREETING": "hi"}}),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["exit_code"], 3);
    assert_eq!(
        r.json["stdout"], "/tmp\nhi\n",
        "workspace_path is the working directory"
    );
    assert_eq!(r.json["stderr"], "oops\n");
    let r = exec(json!({"command": ["cat"], "stdin": "via ssh"})).await;
    assert_eq!(r.json["stdout"], "via ssh");
    let r = exec(json!({"command": "sleep 30", "timeout_secs": 2})).await;
    assert_eq!(r.json["timed_out"], true, "{}", r.text);
    assert!(r.json["exit_code"].is_null());
    let r = exec(json!({"command": "head -c 10000000 /dev/zero >&2; echo done"})).await;
    assert_eq!(
        (r.json["truncated"].as_bool(), r.json["stdout"].as_str()),
        (Some(true), Some("done\n")),
        "10 MB on stderr neither blocks nor overflows"
    );

    // A client cannot move the pin through a config update.
    let cfg = json!({"host": "127.0.0.1", "port": sshd.port, "username": USER, "auth_method": "password",
                     "password": "***masked***", "host_key_fingerprint": "SHA256:forged"});
    let r = s
        .call(
            Method::PUT,
            &format!("/api/v1/execution-servers/{id}"),
            Some(&t),
            Some(json!({"connection_config": cfg})),
        )
        .await;
    assert_eq!(
        r.json["connection_config"]["host_key_fingerprint"],
        sshd.fingerprint.as_str()
    );

    // An SSH host outside the allow-list is refused before any connection.
    let far = create(&s, &t, "metadata", json!({"host": "169.254.169.254", "username": "u", "auth_method": "password", "password": "p"}), None).await;
    let r = test_server(&s, &t, &far).await;
    assert_eq!(
        (
            r.json["status"].as_str(),
            r.json["details"]["code"].as_str()
        ),
        (Some("error"), Some("forbidden_target")),
        "{}",
        r.text
    );
    s.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_auth_wrong_password_and_a_changed_host_key() {
    let mut sshd = Sshd::start();
    let (s, env, _db, _data) = gateway();
    let t = env.create_user("ssh2@example.com", "starter");
    let key_id = create(
        &s,
        &t,
        "by-key",
        json!({"host": "127.0.0.1", "port": sshd.port, "username": USER,
        "auth_method": "key", "private_key": sshd.private_key}),
        None,
    )
    .await;
    let wrong_id = create(
        &s,
        &t,
        "wrong",
        json!({"host": "127.0.0.1", "port": sshd.port, "username": USER,
        "auth_method": "password", "password": "not-the-password"}),
        None,
    )
    .await;
    for id in [&key_id, &wrong_id] {
        let r = s
            .post(
                &format!("/api/v1/execution-servers/{id}/trust-host-key"),
                &t,
                json!({}),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    }
    let r = test_server(&s, &t, &key_id).await;
    assert_eq!(r.json["status"], "success", "{}", r.text);
    let r = s
        .post(
            &format!("/api/v1/execution-servers/{key_id}/exec"),
            &t,
            json!({"command": ["id", "-un"]}),
        )
        .await;
    assert_eq!(r.json["stdout"], format!("{USER}\n"));
    let r = test_server(&s, &t, &wrong_id).await;
    assert_eq!(
        (
            r.json["status"].as_str(),
            r.json["details"]["code"].as_str()
        ),
        (Some("failed"), Some("auth_failed"))
    );

    let old = sshd.fingerprint.clone();
    sshd.restart_with_new_host_key();
    let r = test_server(&s, &t, &key_id).await;
    assert_eq!(
        (r.status, r.json["code"].as_str()),
        (StatusCode::CONFLICT, Some("host_key_mismatch")),
        "{}",
        r.text
    );
    let detail = r.json["detail"].as_str().unwrap();
    assert!(
        detail.contains(&old) && detail.contains(&sshd.fingerprint),
        "{detail}"
    );
    let listed = s.get("/api/v1/execution-servers", &t).await.json;
    let key = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["id"] == key_id.as_str())
        .unwrap();
    assert_eq!(key["test_status"], "failed");
    assert!(
        !s.finish().contains("PRIVATE KEY"),
        "the private key is never logged"
    );
}

/// RSA, ECDSA and ed25519 keys behind a passphrase, in the OpenSSH and the PEM formats; a
/// wrong passphrase is an authentication failure, and no passphrase ever comes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passphrase_protected_rsa_ecdsa_and_ed25519_keys() {
    const PASSPHRASE: &str = "correct horse battery staple";
    let sshd = Sshd::start();
    let (s, env, _db, _data) = gateway();
    let t = env.create_user("ssh-keys@example.com", "starter");
    let keys = [
        ("rsa", false),
        ("rsa", true),
        ("ecdsa", false),
        ("ecdsa", true),
        ("ed25519", false),
    ];
    for (kind, pem) in keys {
        let private_key = sshd.add_client_key(kind, PASSPHRASE, pem);
        let name = format!("{kind}-{}", if pem { "pem" } else { "openssh" });
        for (suffix, passphrase, status) in [
            ("", PASSPHRASE, "success"),
            ("-wrong", "not the passphrase", "failed"),
        ] {
            let id = create(
                &s,
                &t,
                &format!("{name}{suffix}"),
                json!({"host": "127.0.0.1", "port": sshd.port, "username": USER,
                       "auth_method": "key", "private_key": private_key,
                       "passphrase": passphrase}),
                None,
            )
            .await;
            let r = s
                .post(
                    &format!("/api/v1/execution-servers/{id}/trust-host-key"),
                    &t,
                    json!({"fingerprint": sshd.fingerprint}),
                )
                .await;
            assert_eq!(r.status, StatusCode::OK, "{}", r.text);
            assert_eq!(r.json["connection_config"]["passphrase"], "***masked***");
            let r = test_server(&s, &t, &id).await;
            assert_eq!(r.json["status"], status, "{name}{suffix}: {}", r.text);
            if status == "failed" {
                assert_eq!(r.json["details"]["code"], "auth_failed", "{}", r.text);
            }
        }
    }
    let logs = s.finish();
    assert!(!logs.contains("PRIVATE KEY") && !logs.contains(PASSPHRASE));
}

/// Security review, low 5: SSH tests were not rate-limited and shared one session pool: 32
/// parallel tests against a tarpit held another user's test for 19 s. Each user now holds at
/// most a small share of the pool, and every server operation counts against their limits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tarpit_holds_only_its_own_users_share() {
    // Accepts connections and never says a word (an SSH client waits for the banner).
    let tarpit = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let tarpit_port = tarpit.local_addr().unwrap().port();
    let held = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let keep = held.clone();
    std::thread::spawn(move || {
        for conn in tarpit.incoming().flatten() {
            keep.lock().unwrap().push(conn);
        }
    });
    let sshd = Sshd::start();
    let (s, env, _db, _data) = gateway();
    let mallory = env.create_user("mallory@example.com", "starter");
    let alice = env.create_user("alice@example.com", "starter");
    let pit = create(
        &s,
        &mallory,
        "pit",
        json!({"host": "127.0.0.1", "port": tarpit_port, "username": "x",
               "auth_method": "password", "password": "x"}),
        None,
    )
    .await;
    let good = create(
        &s,
        &alice,
        "box",
        json!({"host": "127.0.0.1", "port": sshd.port, "username": USER,
               "auth_method": "password", "password": PASSWORD}),
        None,
    )
    .await;
    let r = s
        .post(
            &format!("/api/v1/execution-servers/{good}/trust-host-key"),
            &alice,
            json!({"fingerprint": sshd.fingerprint}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);

    // 32 tests at once against the tarpit.
    let attacks: Vec<_> = (0..32)
        .map(|_| {
            let req = s
                .http
                .post(format!("{}/api/v1/execution-servers/{pit}/test", s.base))
                .bearer_auth(&mallory);
            tokio::spawn(async move { req.send().await.map(|r| r.status()) })
        })
        .collect();
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    // Alice's test is not stuck behind them: it succeeds while the tarpit still holds them.
    let r = test_server(&s, &alice, &good).await;
    assert_eq!(r.json["status"], "success", "{}", r.text);
    let pending = attacks.iter().filter(|a| !a.is_finished()).count();
    assert!(
        pending >= 1,
        "the tarpit still holds mallory's admitted tests"
    );
    let mut statuses = Vec::new();
    for a in attacks {
        statuses.push(a.await.unwrap().unwrap());
    }
    let refused = statuses
        .iter()
        .filter(|s| **s == StatusCode::TOO_MANY_REQUESTS)
        .count();
    let admitted = statuses.iter().filter(|s| **s == StatusCode::OK).count();
    assert_eq!(
        (admitted, refused),
        (4, 28),
        "four in flight per user, the rest refused: {statuses:?}"
    );
    // Tests count against the per-minute budget of server operations too.
    let mut limited = false;
    for _ in 0..40 {
        let r = test_server(&s, &alice, &good).await;
        if r.status == StatusCode::TOO_MANY_REQUESTS {
            assert!(r.headers.contains_key("retry-after"));
            limited = true;
            break;
        }
    }
    assert!(limited, "the per-minute limit covers tests");
    s.finish();
}
