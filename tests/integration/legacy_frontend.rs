//! The legacy front end, unmodified: its pages' exact requests (`fetch(url, {credentials:
//! 'include'})`, no Authorization header, only the `session_token` cookie) replayed against the
//! binary, with the session in a real Redis as the legacy backend writes it
//! (`SETEX session:{token} 7200 {json}`), read through a Redis user that may only `GET
//! session:*` (so any write would fail). The pages' callers: `AccountAPIKeys.jsx` and
//! `ProviderKeysSection.jsx` of the legacy repository.

use std::time::Duration;

use byok_tests::api::{point_providers_at, setup, stored_rows};
use byok_tests::canary;
use byok_tests::db::{Kind, TestDb};
use byok_tests::keycloak::{CLIENT_ID, CLIENT_SECRET, KeycloakStandIn, REALM};
use byok_tests::redis::TestRedis;
use byok_tests::server::{Env, Resp, TestServer};
use byok_tests::standin::StandIn;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

byok_tests::both_backends!(the_legacy_pages_work_with_the_session_cookie_only);

/// The legacy front end's own origin (where its pages, and this service under
/// `/api/v1/byok/`, are served).
const APP: &str = "https://app.example.com";
/// Another origin the operator trusts.
const OPS: &str = "https://ops.example.com";
const RO_PASSWORD: &str = "ro-pw-0123456789";

/// A Redis holding sessions, and the URL of a user that may only read them.
fn session_store() -> (TestRedis, String) {
    let redis = TestRedis::start();
    let ok = redis.cli(&[
        "ACL",
        "SETUSER",
        "byok",
        "on",
        &format!(">{RO_PASSWORD}"),
        "resetkeys",
        "~session:*",
        "resetchannels",
        "-@all",
        "+get",
    ]);
    assert_eq!(ok, "OK");
    let url = format!("redis://byok:{RO_PASSWORD}@127.0.0.1:{}/", redis.port);
    (redis, url)
}

/// A session as the legacy backend's SSO callback stores it (`RedisSessionManager.set`).
fn legacy_session(user: Value, tier: &str) -> String {
    json!({
        "user": user,
        "access_token": "eyJhbGciOiJSUzI1NiJ9.eyJleHAiOjE3MDAwMDAwMDB9.expired",
        "id_token": "eyJhbGciOiJSUzI1NiJ9.e30.id",
        "created": 1_700_000_000.25,
        "org_id": null, "org_name": null, "org_role": null,
        "subscription_tier": tier,
    })
    .to_string()
}

/// A legacy page's `fetch(path, {credentials: 'include', ...})`: the cookie, and the headers a
/// browser adds (`Origin` on every non-GET request, fetch metadata).
struct Page<'a> {
    s: &'a TestServer,
    cookie: String,
    origin: &'a str,
}

impl Page<'_> {
    fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        let mut req = self
            .s
            .http
            .request(method.clone(), format!("{}{path}", self.s.base))
            .header("cookie", &self.cookie)
            .header("accept", "*/*")
            .header("referer", format!("{APP}/admin/account/api-keys"))
            .header("sec-fetch-mode", "cors")
            .header("sec-fetch-dest", "empty")
            .header(
                "sec-fetch-site",
                if self.origin == APP {
                    "same-origin"
                } else {
                    "cross-site"
                },
            );
        if method != Method::GET {
            req = req.header("origin", self.origin);
        }
        req
    }

    async fn get(&self, path: &str) -> Resp {
        self.s.send(self.request(Method::GET, path)).await
    }

    /// `POST` with `headers: {'Content-Type': 'application/json'}` and a JSON body.
    async fn post_json(&self, path: &str, body: Value) -> Resp {
        let req = self
            .request(Method::POST, path)
            .header("content-type", "application/json")
            .body(body.to_string());
        self.s.send(req).await
    }

    /// `POST` without a body (the key test).
    async fn post(&self, path: &str) -> Resp {
        self.s.send(self.request(Method::POST, path)).await
    }

    async fn delete(&self, path: &str) -> Resp {
        self.s.send(self.request(Method::DELETE, path)).await
    }
}

async fn the_legacy_pages_work_with_the_session_cookie_only(kind: Kind) {
    let standin = StandIn::start(&[canary::OPENAI]).await;
    let (redis, url) = session_store();
    let doc = legacy_session(json!("dev@example.com"), "starter");
    let key = format!("session:{}", canary::SESSION);
    assert_eq!(redis.cli(&["SET", &key, &doc, "EX", "7200"]), "OK");
    let (setup, env) = setup(kind).await;
    let env = point_providers_at(env, &standin.base)
        .set("BYOK_LEGACY_SESSION_REDIS_URL", &url)
        .set("BYOK_LEGACY_SESSION_CACHE_SECS", "1")
        .set("BYOK_PUBLIC_URL", &format!("{APP}/"))
        .set("BYOK_ALLOWED_ORIGINS", OPS);
    // The user the session's email names (a local user, created with a gateway token).
    let token = env.create_user("dev@example.com", "free");
    let s = TestServer::start(env.clone());
    let page = Page {
        s: &s,
        cookie: format!("session_token={}; theme=dark", canary::SESSION),
        origin: APP,
    };

    // ProviderKeysSection: providers and keys, cache-busted and uncached.
    let ts = chrono::Utc::now().timestamp_millis();
    let r = s
        .send(
            page.request(Method::GET, &format!("/api/v1/byok/providers?_t={ts}"))
                .header("cache-control", "no-cache, no-store, must-revalidate")
                .header("pragma", "no-cache"),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let providers = r.json.as_array().unwrap();
    for p in providers {
        assert!(p["id"].is_string() && p["name"].is_string() && p["configured"] == false);
    }
    let cloud = providers
        .iter()
        .find(|p| p["id"] == "ollama_cloud")
        .unwrap();
    assert_eq!(cloud["name"], "Ollama Cloud");
    let keys = page.get(&format!("/api/v1/byok/keys?_t={ts}")).await;
    assert_eq!(
        (keys.status, keys.json.clone()),
        (StatusCode::OK, json!([]))
    );

    // AccountAPIKeys: stats. The tier is the session's (a local user).
    let stats = page.get("/api/v1/byok/stats").await;
    assert_eq!(stats.status, StatusCode::OK, "{}", stats.text);
    for f in [
        "total_providers",
        "configured_providers",
        "tested_providers",
        "valid_providers",
    ] {
        assert!(stats.json[f].is_u64(), "{f}: {}", stats.text);
    }
    assert_eq!(stats.json["user_tier"], "starter");

    // AccountAPIKeys' add: {provider, key, label: label || null}; it reads response.ok.
    let added = page
        .post_json(
            "/api/v1/byok/keys/add",
            json!({"provider": "openai", "key": canary::OPENAI, "label": null}),
        )
        .await;
    assert_eq!(added.status, StatusCode::OK, "{}", added.text);
    assert_eq!(added.json["provider_name"], "OpenAI");
    let keys = page.get("/api/v1/byok/keys").await;
    assert_eq!(keys.json[0]["provider"], "openai");
    assert_eq!(keys.json[0]["key_preview"], "sk-p...fXYZ");
    assert!(keys.json[0]["last_tested"].is_null());
    assert!(keys.json[0].get("test_status").is_some());

    // The key test: AccountAPIKeys reads `status === 'valid'` and `message`;
    // ProviderKeysSection reads `success` and `provider_name`.
    let tested = page.post("/api/v1/byok/keys/test/openai").await;
    assert_eq!(tested.status, StatusCode::OK, "{}", tested.text);
    assert_eq!(tested.json["status"], "valid");
    assert_eq!(tested.json["success"], true);
    assert_eq!(tested.json["provider_name"], "OpenAI");
    assert!(
        tested.json["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty())
    );
    let seen = standin.requests();
    assert_eq!(
        seen.last().unwrap().headers["authorization"],
        format!("Bearer {}", canary::OPENAI)
    );
    let keys = page.get("/api/v1/byok/keys").await;
    assert_eq!(keys.json[0]["test_status"], "valid");
    assert!(keys.json[0]["last_tested"].is_string());
    let stats = page.get("/api/v1/byok/stats").await;
    assert_eq!(
        (
            &stats.json["configured_providers"],
            &stats.json["tested_providers"],
            &stats.json["valid_providers"]
        ),
        (&json!(1), &json!(1), &json!(1))
    );

    // The same user as their gateway token (the session's email named them).
    let listed = s.get("/api/v1/byok/keys", &token).await;
    assert_eq!(listed.json[0]["provider"], "openai");

    // ProviderKeysSection's add ({provider, key}), from an origin the operator lists.
    let ops = Page {
        s: &s,
        cookie: page.cookie.clone(),
        origin: OPS,
    };
    let r = ops
        .post_json(
            "/api/v1/byok/keys/add",
            json!({"provider": "groq", "key": canary::GROQ}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);

    // Delete: response.ok.
    for provider in ["openai", "groq"] {
        let r = page.delete(&format!("/api/v1/byok/keys/{provider}")).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    }
    assert_eq!(page.get("/api/v1/byok/keys").await.json, json!([]));

    // Another site's page with the user's cookie: every write refused, nothing stored.
    let evil = Page {
        s: &s,
        cookie: page.cookie.clone(),
        origin: "https://evil.example.net",
    };
    let r = evil
        .post_json(
            "/api/v1/byok/keys/add",
            json!({"provider": "anthropic", "key": canary::ANTHROPIC}),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
    assert_eq!(r.json["code"], "origin_refused");
    assert!(r.json["detail"].is_string());
    for r in [
        evil.post("/api/v1/byok/keys/test/openai").await,
        evil.delete("/api/v1/byok/keys/openai").await,
        evil.post_json("/api/v1/tokens", json!({"name": "stolen"}))
            .await,
    ] {
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
    }
    assert_eq!(page.get("/api/v1/byok/keys").await.json, json!([]));
    assert!(stored_rows(&setup).await.is_empty(), "nothing stored");
    let tokens = s.get("/api/v1/tokens", &token).await;
    assert_eq!(tokens.json.as_array().unwrap().len(), 1, "no token minted");

    // Never on the LLM gateway.
    let r = s.send(page.request(Method::GET, "/v1/models")).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.text);

    // No cookie: 401 as before. An unknown session: 401.
    let r = s.call(Method::GET, "/api/v1/byok/keys", None, None).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.json["code"], "unauthenticated");
    let unknown = Page {
        s: &s,
        cookie: "session_token=Unknown_session_0123456789abcdefghijklmnop".into(),
        origin: APP,
    };
    let r = unknown.get("/api/v1/byok/keys").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.text);
    assert_eq!(r.json["code"], "invalid_token");

    // A session that expires in Redis (the legacy TTL, shortened): refused once it is gone,
    // within the cache time (1 s here).
    let short = "Short_lived_session_0123456789abcdefghijk";
    let short_doc = legacy_session(json!({"email": "dev@example.com"}), "starter");
    redis.cli(&["SET", &format!("session:{short}"), &short_doc, "EX", "1"]);
    let brief = Page {
        s: &s,
        cookie: format!("session_token={short}"),
        origin: APP,
    };
    assert_eq!(brief.get("/api/v1/byok/keys").await.status, StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(2300)).await;
    let r = brief.get("/api/v1/byok/keys").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.text);

    // The store was only read: the session is as the legacy backend wrote it, its TTL was not
    // extended, and nothing else was written (the Redis user may only GET anyway).
    assert_eq!(redis.cli(&["GET", &key]), doc);
    let ttl: i64 = redis.cli(&["TTL", &key]).parse().unwrap();
    assert!((1..=7200).contains(&ttl), "{ttl}");
    assert_eq!(redis.cli(&["DBSIZE"]), "1");

    let logs = s.finish();
    assert!(
        !logs.contains(canary::SESSION),
        "the session token is never logged"
    );
    assert!(!logs.contains(short));
    drop(setup);
}

/// A Keycloak user the legacy backend signed in, seen here first through its session: created
/// as its JWT would create it (the same user afterwards), Keycloak's tier over the session's,
/// and a disabled or unverified account refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keycloak_users_session_is_matched_to_the_keycloak_account() {
    let kc = KeycloakStandIn::start().await;
    let id = uuid::Uuid::new_v4().to_string();
    kc.add_user(
        &id,
        "kc@example.com",
        json!({"subscription_tier": ["starter"]}),
    );
    let unverified = uuid::Uuid::new_v4().to_string();
    kc.add_user(&unverified, "unverified@example.com", json!({}));
    kc.update_user(&unverified, json!({"emailVerified": false}));
    let (redis, url) = session_store();
    let set = |token: &str, email: &str, tier: &str| {
        let doc = legacy_session(json!({"email": email, "sub": "ignored"}), tier);
        redis.cli(&["SET", &format!("session:{token}"), &doc, "EX", "7200"]);
    };
    set(canary::SESSION, "kc@example.com", "enterprise");
    let db = TestDb::sqlite();
    let data = tempfile::tempdir().unwrap();
    let env = Env::new(data.path(), &db.url)
        .set("AUTH_MODE", "keycloak")
        .set("KEYCLOAK_URL", &kc.url)
        .set("KEYCLOAK_REALM", REALM)
        .set("KEYCLOAK_CLIENT_ID", CLIENT_ID)
        .set("KEYCLOAK_CLIENT_SECRET", CLIENT_SECRET)
        .set("KEYCLOAK_ALLOW_HTTP", "true")
        .set("BYOK_AUTH_CACHE_TTL_SECS", "1")
        .set("BYOK_LEGACY_SESSION_REDIS_URL", &url)
        .set("BYOK_LEGACY_SESSION_CACHE_SECS", "0")
        .set("BYOK_PUBLIC_URL", APP);
    let s = TestServer::start(env);
    let page = Page {
        s: &s,
        cookie: format!("session_token={}", canary::SESSION),
        origin: APP,
    };

    let stats = page.get("/api/v1/byok/stats").await;
    assert_eq!(stats.status, StatusCode::OK, "{}", stats.text);
    assert_eq!(
        stats.json["user_tier"], "starter",
        "Keycloak's tier, not the session's"
    );
    let r = page
        .post_json(
            "/api/v1/byok/keys/add",
            json!({"provider": "openai", "key": canary::OPENAI}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);

    // The same user with a Keycloak access token: the key added through the session is theirs
    // (the user was stored under the realm's issuer, as the token's first sight would).
    let jwt = kc.token(&id, json!({"email": "kc@example.com"}));
    let keys = s.get("/api/v1/byok/keys", &jwt).await;
    assert_eq!(keys.status, StatusCode::OK, "{}", keys.text);
    assert_eq!(keys.json[0]["provider"], "openai");

    // Disabled in Keycloak: the session is refused (the cache is off in this test).
    kc.update_user(&id, json!({"enabled": false}));
    assert_eq!(
        page.get("/api/v1/byok/stats").await.status,
        StatusCode::UNAUTHORIZED
    );

    // An account whose email Keycloak does not vouch for links to nobody.
    let other = "Unverified_session_0123456789abcdefghijk";
    set(other, "unverified@example.com", "starter");
    let r = Page {
        s: &s,
        cookie: format!("session_token={other}"),
        origin: APP,
    }
    .get("/api/v1/byok/keys")
    .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.text);

    let logs = s.finish();
    assert!(!logs.contains(canary::SESSION));
    assert!(!logs.contains("kc@example.com"), "no email in the logs");
}
