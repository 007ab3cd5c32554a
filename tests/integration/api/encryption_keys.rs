//! `ENCRYPTION_KEY`: a bad key stops start-up; a removed key fails clearly; rotation recovers.

use byok_tests::api::{add, point_providers_at, setup};
use byok_tests::canary;
use byok_tests::db::Kind;
use byok_tests::server::TestServer;
use byok_tests::standin::StandIn;
use reqwest::{Method, StatusCode};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_encryption_key_stops_startup_clearly() {
    let (_setup, env) = setup(Kind::Sqlite).await;
    for bad in ["not-a-fernet-key-CANARYopenai", "", ","] {
        let env = env.clone().set("ENCRYPTION_KEY", bad);
        let err = TestServer::try_start(env)
            .err()
            .expect("must refuse to start");
        if !bad.is_empty() {
            assert!(err.contains("invalid ENCRYPTION_KEY"), "{err}");
        }
        assert!(!err.contains("panicked"), "{err}");
        canary::assert_absent("the start-up error", &err);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removed_keys_fail_clearly_and_rotation_recovers() {
    let standin = StandIn::start(&[canary::OPENAI]).await;
    let (_setup, env) = setup(Kind::Sqlite).await;
    let env = point_providers_at(env, &standin.base);
    let make_key = || {
        let out = env.cli(&["generate-key"]);
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    let (old, new) = (make_key(), make_key());
    let with_key = |k: &str| env.clone().set("ENCRYPTION_KEY", k);

    let s = TestServer::start(with_key(&old));
    let t = with_key(&old).create_user("rot@example.com", "starter");
    assert_eq!(
        add(&s, &t, "openai", canary::OPENAI).await.status,
        StatusCode::OK
    );
    // An execution server's sealed password, written under `old` too.
    let r = s
        .post(
            "/api/v1/execution-servers",
            &t,
            json!({"name": "rot", "server_type": "ssh", "connection_config": {
                "host": "127.0.0.1", "port": 9, "username": "u", "auth_method": "password",
                "password": "rotation-ssh-password"}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let server_test = format!(
        "/api/v1/execution-servers/{}/test",
        r.json["id"].as_str().unwrap()
    );
    s.finish();

    // A key that reads none of the stored keys is a wrong key: refuse to start.
    let err = TestServer::try_start(with_key(&new))
        .err()
        .expect("must refuse to start");
    assert!(
        err.contains("invalid ENCRYPTION_KEY") && err.contains("decrypts none"),
        "{err}"
    );
    assert!(!err.contains("panicked"));

    // During a rotation both keys are in the ring; a key added now is written under `new`.
    let both = format!("{new},{old}");
    let s = TestServer::start(with_key(&both));
    assert_eq!(
        add(&s, &t, "groq", canary::GROQ).await.status,
        StatusCode::OK
    );
    s.finish();

    // Dropping `old` too early: the service starts (some keys are readable), and a key written
    // under `old` fails clearly instead of silently.
    let s = TestServer::start(with_key(&new));
    let r = s
        .call(
            Method::POST,
            "/api/v1/byok/keys/test/openai",
            Some(&t),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(r.json["code"], "key_decryption_failed");
    assert!(
        r.json["detail"]
            .as_str()
            .unwrap()
            .contains("ENCRYPTION_KEY")
    );
    let r = s
        .call(Method::POST, "/api/v1/byok/keys/test/groq", Some(&t), None)
        .await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "keys under the current key still work"
    );
    let r = s.call(Method::POST, &server_test, Some(&t), None).await;
    assert_eq!(r.json["code"], "key_decryption_failed", "{}", r.text);
    assert_eq!(
        s.get("/api/v1/byok/keys", &t).await.status,
        StatusCode::OK,
        "listing never decrypts"
    );
    let logs = s.finish();
    assert!(
        logs.contains("cannot be decrypted"),
        "the log names the problem"
    );

    let out = with_key(&new).cli(&["rotate-keys"]);
    assert!(!out.status.success(), "a row no key can read is a failure");
    assert!(String::from_utf8_lossy(&out.stdout).contains("failed=1"));

    let out = with_key(&both).cli(&["rotate-keys", "--batch-size", "1"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("provider keys: processed=2 rotated=1 already_current=1"),
        "{stdout}"
    );
    assert!(
        stdout.contains("execution servers: processed=1 rotated=1 already_current=0"),
        "{stdout}"
    );

    let s = TestServer::start(with_key(&new));
    let r = s
        .call(
            Method::POST,
            "/api/v1/byok/keys/test/openai",
            Some(&t),
            None,
        )
        .await;
    assert_eq!(r.json["status"], "valid", "{}", r.text);
    // The server's password reads under `new` alone: the test reaches the backend (which
    // refuses the loopback target) instead of failing to decrypt.
    let r = s.call(Method::POST, &server_test, Some(&t), None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["details"]["code"], "forbidden_target", "{}", r.text);
    s.finish();
}
