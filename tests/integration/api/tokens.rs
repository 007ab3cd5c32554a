//! Gateway tokens over HTTP: create, list, revoke, lifetimes, revocation across replicas.

use std::time::{Duration, Instant};

use byok_tests::api::setup;
use byok_tests::db::Kind;
use byok_tests::server::TestServer;
use reqwest::StatusCode;
use serde_json::json;

/// Security review, low 7 (and medium 3): a token created with `expires_in_days: 1` minted
/// one with no expiry. Tokens now get a default lifetime, shown at creation, and a token never
/// mints one that outlives it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_never_outlive_the_token_that_minted_them() {
    let (_setup, env) = setup(Kind::Sqlite).await;
    let s = TestServer::start(env.clone());
    let out = env.cli(&[
        "user",
        "create",
        "--email",
        "life@example.com",
        "--tier",
        "free",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        stdout.contains("it expires "),
        "the lifetime is shown: {stdout}"
    );
    let t = byok_tests::server::token_from(&stdout);
    let days = |r: &byok_tests::server::Resp| {
        let at =
            chrono::DateTime::parse_from_rfc3339(r.json["expires_at"].as_str().unwrap()).unwrap();
        (at.with_timezone(&chrono::Utc) - chrono::Utc::now()).num_hours() as f64 / 24.0
    };
    // Without a lifetime: the default (90 days).
    let r = s
        .post("/api/v1/tokens", &t, json!({"name": "default"}))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert!((89.0..=90.0).contains(&days(&r)), "{}", r.text);
    // A one-day token...
    let r = s
        .post(
            "/api/v1/tokens",
            &t,
            json!({"name": "short", "expires_in_days": 1}),
        )
        .await;
    let short = r.json["token"].as_str().unwrap().to_string();
    let short_expiry = r.json["expires_at"].as_str().unwrap().to_string();
    // ...mints nothing that outlives it, asked or not.
    for body in [
        json!({"name": "child"}),
        json!({"name": "child", "expires_in_days": 3650}),
    ] {
        let r = s.post("/api/v1/tokens", &short, body.clone()).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        assert!(
            r.json["expires_at"].as_str().unwrap() <= short_expiry.as_str(),
            "{body}: {} outlives {short_expiry}",
            r.text
        );
    }
    // A shorter lifetime than the parent's stays shorter.
    let r = s
        .post(
            "/api/v1/tokens",
            &t,
            json!({"name": "week", "expires_in_days": 7}),
        )
        .await;
    let week = r.json["token"].as_str().unwrap().to_string();
    let r = s
        .post(
            "/api/v1/tokens",
            &week,
            json!({"name": "day", "expires_in_days": 1}),
        )
        .await;
    assert!(days(&r) <= 1.0, "{}", r.text);
    s.finish();

    // `0` turns the default off: tokens without a lifetime do not expire.
    let env = env.clone().set("BYOK_TOKEN_LIFETIME_DAYS", "0");
    let s = TestServer::start(env.clone());
    let t = env.create_user("forever@example.com", "free");
    let r = s
        .post("/api/v1/tokens", &t, json!({"name": "forever"}))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert!(r.json["expires_at"].is_null(), "{}", r.text);
    s.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_api_create_list_revoke() {
    let (_setup, env) = setup(Kind::Sqlite).await;
    let s = TestServer::start(env.clone());
    let t = env.create_user("tok@example.com", "free");
    let r = s
        .post(
            "/api/v1/tokens",
            &t,
            json!({"name": "claude code", "expires_in_days": 30}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let new_token = r.json["token"].as_str().unwrap().to_string();
    let id = r.json["id"].as_str().unwrap().to_string();
    assert!(new_token.starts_with(r.json["prefix"].as_str().unwrap()));
    assert!(r.json["expires_at"].is_string());

    let list = s.get("/api/v1/tokens", &new_token).await;
    assert_eq!(list.status, StatusCode::OK);
    assert!(
        !list.text.contains(&new_token),
        "listing never shows a token"
    );
    assert_eq!(list.json.as_array().unwrap().len(), 2);

    // x-api-key works like a bearer token.
    let r = s
        .send(
            s.http
                .get(format!("{}/api/v1/byok/stats", s.base))
                .header("x-api-key", &new_token),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);

    for bad in [
        json!({"name": ""}),
        json!({"name": "x", "expires_in_days": 0}),
        json!({"name": "x", "expires_in_days": 5000}),
    ] {
        let r = s.post("/api/v1/tokens", &t, bad).await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    }
    let r = s.delete("/api/v1/tokens/not-a-uuid", &t).await;
    assert_eq!(
        (r.status, r.json["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("token_not_found"))
    );
    let other = env.create_user("other@example.com", "free");
    assert_eq!(
        s.delete(&format!("/api/v1/tokens/{id}"), &other)
            .await
            .status,
        StatusCode::NOT_FOUND
    );

    let r = s.delete(&format!("/api/v1/tokens/{id}"), &t).await;
    assert_eq!(r.status, StatusCode::OK);
    let r = s.get("/api/v1/byok/stats", &new_token).await;
    assert_eq!(
        r.status,
        StatusCode::UNAUTHORIZED,
        "revocation is immediate on this instance"
    );
    let listed = s.get("/api/v1/tokens", &t).await.json;
    let revoked = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["id"] == id.as_str())
        .unwrap()
        .clone();
    assert_eq!(revoked["active"], false);
    assert!(revoked["revoked_at"].is_string());
    s.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_reaches_other_processes_within_the_cache_ttl() {
    let (_setup, env) = setup(Kind::Postgres).await;
    let env = env.set("BYOK_AUTH_CACHE_TTL_SECS", "1");
    let a = TestServer::start(env.clone());
    let b = TestServer::start(env.clone());
    let t = env.create_user("r@example.com", "free");
    let created = a.post("/api/v1/tokens", &t, json!({"name": "x"})).await;
    let token = created.json["token"].as_str().unwrap().to_string();
    let id = created.json["id"].as_str().unwrap().to_string();
    assert_eq!(
        b.get("/api/v1/byok/stats", &token).await.status,
        StatusCode::OK
    );
    a.delete(&format!("/api/v1/tokens/{id}"), &t).await;
    let revoked_at = Instant::now();
    loop {
        if b.get("/api/v1/byok/stats", &token).await.status == StatusCode::UNAUTHORIZED {
            break;
        }
        assert!(
            revoked_at.elapsed() < Duration::from_secs(5),
            "replica kept accepting a revoked token"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    a.finish();
    b.finish();
}
