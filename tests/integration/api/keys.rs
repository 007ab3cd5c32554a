//! Provider keys end to end: add, list, probe, delete; tiers and isolation between users;
//! custom endpoints under the target policy; concurrent adds.

use std::time::{Duration, Instant};

use byok_tests::api::{add, point_providers_at, setup, stored_rows, stored_text};
use byok_tests::canary;
use byok_tests::db::Kind;
use byok_tests::server::TestServer;
use byok_tests::standin::StandIn;
use reqwest::{Method, StatusCode};
use serde_json::json;

byok_tests::both_backends!(walkthrough, concurrent_adds);

async fn walkthrough(kind: Kind) {
    let standin = StandIn::start(&[canary::OPENAI]).await;
    let (setup, env) = setup(kind).await;
    let env = point_providers_at(env, &standin.base);
    let s = TestServer::start(env.clone());
    let admin = s.admin().to_string();
    assert_eq!(
        s.get("/api/v1/byok/stats", &admin).await.json["user_tier"],
        "enterprise"
    );

    let token = env.create_user("dev@example.com", "starter");
    let r = add(&s, &token, "openai", canary::OPENAI).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(
        r.json,
        json!({"message": "OpenAI key saved", "provider": "openai", "provider_name": "OpenAI"})
    );

    let keys = s.get("/api/v1/byok/keys", &token).await;
    assert_eq!(keys.status, StatusCode::OK);
    let k = &keys.json[0];
    assert_eq!(k["provider"], "openai");
    assert_eq!(k["provider_name"], "OpenAI");
    assert_eq!(k["key_preview"], "sk-p...fXYZ");
    assert_eq!(k["label"], "test");
    assert!(k["added_date"].is_string());
    assert!(k["last_tested"].is_null());

    let providers = s.get("/api/v1/byok/providers", &token).await;
    let list = providers.json.as_array().unwrap();
    assert_eq!(list.len(), 11);
    let openai = list.iter().find(|p| p["id"] == "openai").unwrap();
    assert_eq!(openai["configured"], true);
    assert_eq!(openai["key_format"], "sk-...");

    let tested = s
        .call(
            Method::POST,
            "/api/v1/byok/keys/test/openai",
            Some(&token),
            None,
        )
        .await;
    assert_eq!(tested.status, StatusCode::OK, "{}", tested.text);
    assert_eq!(tested.json["status"], "valid");
    assert_eq!(tested.json["details"]["http_status"], 200);
    let seen = standin.requests();
    assert_eq!(seen.last().unwrap().path, "/models");
    assert_eq!(seen.last().unwrap().method, "GET");
    assert_eq!(
        seen.last().unwrap().headers["authorization"],
        format!("Bearer {}", canary::OPENAI)
    );
    let keys = s.get("/api/v1/byok/keys", &token).await;
    assert_eq!(keys.json[0]["test_status"], "valid");
    assert!(keys.json[0]["last_tested"].is_string());
    let mut stats = s.get("/api/v1/byok/stats", &token).await.json;
    let usage = stats.as_object_mut().unwrap().remove("usage").unwrap();
    assert_eq!(
        stats,
        json!({"total_providers": 11, "configured_providers": 1, "tested_providers": 1,
               "valid_providers": 1, "user_tier": "starter"}),
        "the legacy fields, unchanged"
    );
    assert_eq!(usage["requests"], 0);
    assert_eq!(usage["by_provider"], json!([]));

    let stored = stored_text(&setup).await;
    assert!(stored.contains("sk-p...fXYZ"), "the preview is stored");
    canary::assert_absent("the database", &stored);
    let rows = stored_rows(&setup).await;
    assert_eq!(rows.len(), 1);
    assert!(
        rows[0].contains("gAAAAA"),
        "the key is stored as a Fernet token"
    );

    let del = s.delete("/api/v1/byok/keys/openai", &token).await;
    assert_eq!(del.status, StatusCode::OK);
    assert_eq!(
        del.json,
        json!({"message": "OpenAI key deleted", "provider": "openai"})
    );
    assert_eq!(s.get("/api/v1/byok/keys", &token).await.json, json!([]));
    let again = s.delete("/api/v1/byok/keys/openai", &token).await;
    assert_eq!(again.status, StatusCode::NOT_FOUND);
    assert_eq!(again.json["code"], "key_not_found");
    let gone = s
        .call(
            Method::POST,
            "/api/v1/byok/keys/test/openai",
            Some(&token),
            None,
        )
        .await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND);
    assert!(
        stored_rows(&setup).await.is_empty(),
        "delete removed the row"
    );
    drop(setup.data);
    s.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tiers_are_enforced_and_users_isolated() {
    let (_setup, env) = setup(Kind::Sqlite).await;
    let env = env.set("BYOK_UPGRADE_URL", "https://example.com/upgrade");
    let s = TestServer::start(env.clone());
    let free = env.create_user("free@example.com", "free");
    let trial = env.create_user("trial@example.com", "trial");
    let a = env.create_user("a@example.com", "starter");
    let b = env.create_user("b@example.com", "professional");
    for who in [&free, &trial] {
        let r = add(&s, who, "openai", canary::OPENAI).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN);
        let tier = s.get("/api/v1/byok/stats", who).await.json["user_tier"].clone();
        assert_eq!(
            r.json,
            json!({
                "detail": "BYOK requires starter tier or higher",
                "code": "upgrade_required",
                "current_tier": tier,
                "required_tier": "starter",
                "upgrade_url": "https://example.com/upgrade"
            })
        );
        let t = s
            .call(
                Method::POST,
                "/api/v1/byok/keys/test/openai",
                Some(who),
                None,
            )
            .await;
        assert_eq!(t.status, StatusCode::FORBIDDEN);
    }
    assert_eq!(s.get("/api/v1/byok/keys", &free).await.json, json!([]));

    assert_eq!(
        add(&s, &a, "groq", canary::GROQ).await.status,
        StatusCode::OK
    );
    assert_eq!(s.get("/api/v1/byok/keys", &b).await.json, json!([]));
    let stolen = s.delete("/api/v1/byok/keys/groq", &b).await;
    assert_eq!(stolen.status, StatusCode::NOT_FOUND);
    let probe = s
        .call(Method::POST, "/api/v1/byok/keys/test/groq", Some(&b), None)
        .await;
    assert_eq!(probe.status, StatusCode::NOT_FOUND);
    assert_eq!(
        s.get("/api/v1/byok/keys", &a)
            .await
            .json
            .as_array()
            .unwrap()
            .len(),
        1
    );

    // A downgrade takes effect (cache TTL is 5 s by default; tier changes evict nothing
    // across processes, so wait it out) and the user can still delete their key.
    let out = env.cli(&[
        "user",
        "set-tier",
        "--email",
        "a@example.com",
        "--tier",
        "free",
    ]);
    assert!(out.status.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = add(&s, &a, "groq", canary::GROQ).await;
        if r.status == StatusCode::FORBIDDEN {
            break;
        }
        assert!(Instant::now() < deadline, "downgrade never took effect");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        s.delete("/api/v1/byok/keys/groq", &a).await.status,
        StatusCode::OK
    );
    s.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_probes_tell_the_truth() {
    let standin = StandIn::start(&[
        canary::OPENAI,
        canary::ANTHROPIC,
        canary::OPENROUTER,
        canary::PERPLEXITY,
    ])
    .await;
    let (_setup, env) = setup(Kind::Sqlite).await;
    let env = point_providers_at(env, &standin.base);
    let s = TestServer::start(env.clone());
    let t = env.create_user("p@example.com", "professional");

    let probe = |provider: &'static str| {
        let s = &s;
        let t = t.clone();
        async move {
            s.call(
                Method::POST,
                &format!("/api/v1/byok/keys/test/{provider}"),
                Some(&t),
                None,
            )
            .await
        }
    };

    add(&s, &t, "anthropic", canary::ANTHROPIC).await;
    let r = probe("anthropic").await;
    assert_eq!(r.json["status"], "valid", "{}", r.text);
    let last = standin.requests().pop().unwrap();
    assert_eq!(
        (last.method.as_str(), last.path.as_str()),
        ("GET", "/v1/models")
    );
    assert_eq!(last.headers["x-api-key"], canary::ANTHROPIC);
    assert_eq!(last.headers["anthropic-version"], "2023-06-01");
    assert!(!last.headers.contains_key("authorization"));

    add(&s, &t, "openrouter", canary::OPENROUTER).await;
    assert_eq!(probe("openrouter").await.json["status"], "valid");
    assert_eq!(
        standin.requests().pop().unwrap().path,
        "/key",
        "OpenRouter's /models is public"
    );

    add(&s, &t, "perplexity", canary::PERPLEXITY).await;
    assert_eq!(probe("perplexity").await.json["status"], "valid");
    let last = standin.requests().pop().unwrap();
    assert_eq!(
        (last.method.as_str(), last.path.as_str()),
        ("POST", "/chat/completions")
    );

    add(&s, &t, "groq", canary::GROQ).await;
    let r = probe("groq").await;
    assert_eq!(r.json["status"], "invalid");
    assert_eq!(r.json["details"]["http_status"], 401);

    for (key, status) in [
        ("sk-proj-ratelimited-0123456789abcdef", 429),
        ("sk-proj-broken-0123456789abcdefghij", 500),
    ] {
        add(&s, &t, "openai", key).await;
        let r = probe("openai").await;
        assert_eq!(r.json["status"], "error", "{status}: {}", r.text);
        assert_eq!(r.json["details"]["http_status"], status);
        if status == 429 {
            assert_eq!(r.json["details"]["retry_after"], "7");
        }
    }
    add(&s, &t, "openai", "sk-proj-slow-0123456789abcdefghijkl").await;
    let r = probe("openai").await;
    assert_eq!(r.json["status"], "error");
    assert!(
        r.json["message"]
            .as_str()
            .unwrap()
            .contains("did not answer")
    );

    let keys = s.get("/api/v1/byok/keys", &t).await.json;
    let status_of = |p: &str| {
        keys.as_array()
            .unwrap()
            .iter()
            .find(|k| k["provider"] == p)
            .unwrap()["test_status"]
            .clone()
    };
    assert_eq!(status_of("anthropic"), "valid");
    assert_eq!(status_of("groq"), "invalid");
    assert_eq!(status_of("openai"), "error");
    let stats = s.get("/api/v1/byok/stats", &t).await.json;
    assert_eq!(
        (
            stats["configured_providers"].as_u64(),
            stats["valid_providers"].as_u64()
        ),
        (Some(5), Some(3))
    );
    s.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_endpoints_pass_the_target_policy() {
    let standin = StandIn::start(&[canary::CUSTOM]).await;
    let (setup_a, env) = setup(Kind::Sqlite).await;
    let s = TestServer::start(env.clone());
    let t = env.create_user("c@example.com", "starter");
    for endpoint in [
        standin.base.clone(),
        "http://169.254.169.254/latest".into(),
        "http://[::1]:9".into(),
        "http://10.0.0.1/v1".into(),
    ] {
        let r = s
            .post(
                "/api/v1/byok/keys/add",
                &t,
                json!({"provider": "custom", "key": canary::CUSTOM, "endpoint": endpoint}),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK);
        let r = s
            .call(
                Method::POST,
                "/api/v1/byok/keys/test/custom",
                Some(&t),
                None,
            )
            .await;
        assert_eq!(
            r.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{endpoint}: {}",
            r.text
        );
        assert_eq!(r.json["code"], "forbidden_target");
    }
    assert!(
        standin.requests().is_empty(),
        "nothing reached the forbidden target"
    );
    s.finish();

    // The operator allow-lists loopback: the same endpoint now works.
    let env = env.set("BYOK_ALLOWED_TARGETS", "127.0.0.1/32");
    let s = TestServer::start(env.clone());
    let r = s
        .post(
            "/api/v1/byok/keys/add",
            &t,
            json!({"provider": "custom", "key": canary::CUSTOM, "endpoint": format!("{}/v1/", standin.base)}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let keys = s.get("/api/v1/byok/keys", &t).await.json;
    assert_eq!(keys[0]["endpoint"], format!("{}/v1", standin.base));
    let r = s
        .call(
            Method::POST,
            "/api/v1/byok/keys/test/custom",
            Some(&t),
            None,
        )
        .await;
    assert_eq!(r.json["status"], "valid", "{}", r.text);
    assert_eq!(standin.requests().pop().unwrap().path, "/v1/models");
    drop(setup_a);
    s.finish();
}

async fn concurrent_adds(kind: Kind) {
    let (setup, env) = setup(kind).await;
    let s = TestServer::start(env.clone());
    let t = env.create_user("cc@example.com", "starter");
    let keys: Vec<String> = (0..24)
        .map(|i| format!("sk-proj-concurrent-{i:02}-0123456789abcdef"))
        .collect();
    let results =
        futures_util::future::join_all(keys.iter().map(|k| add(&s, &t, "openai", k))).await;
    for r in &results {
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    }
    let listed = s.get("/api/v1/byok/keys", &t).await.json;
    let listed = listed.as_array().unwrap();
    assert_eq!(listed.len(), 1, "one row per user and provider");
    let preview = listed[0]["key_preview"].as_str().unwrap();
    assert!(
        keys.iter()
            .any(|k| byok_core::KeyPreview::of(k).as_str() == preview)
    );
    assert_eq!(stored_rows(&setup).await.len(), 1);
    s.finish();
}
