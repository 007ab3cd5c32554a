//! Keycloak: JWTs against an independent OIDC server (`oauth2-mock-server`) and against
//! tokens the tests sign (negative cases, rotation), tiers from claims and the admin API,
//! keys in Keycloak attributes, and the legacy import.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use byok_tests::db::TestDb;
use byok_tests::keycloak::{CLIENT_ID, CLIENT_SECRET, KeycloakStandIn, REALM, SigningKey};
use byok_tests::py_fernet;
use byok_tests::server::{Env, TestServer};
use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection};
use reqwest::StatusCode;
use serde_json::{Value, json};

fn keycloak_env(kc_url: &str, data: &std::path::Path, db: &str) -> Env {
    Env::new(data, db)
        .set("AUTH_MODE", "keycloak")
        .set("KEYCLOAK_URL", kc_url)
        .set("KEYCLOAK_REALM", REALM)
        .set("KEYCLOAK_CLIENT_ID", CLIENT_ID)
        .set("KEYCLOAK_CLIENT_SECRET", CLIENT_SECRET)
        .set("KEYCLOAK_ALLOW_HTTP", "true")
        .set("KEYCLOAK_JWKS_MIN_REFRESH_SECS", "1")
        .set("BYOK_AUTH_CACHE_TTL_SECS", "1")
}

fn uuid() -> String {
    uuid::Uuid::new_v4().to_string()
}

fn b64(v: &Value) -> String {
    URL_SAFE_NO_PAD.encode(v.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwts_are_verified_locally_and_every_forgery_is_refused() {
    let kc = KeycloakStandIn::start().await;
    let db = TestDb::sqlite();
    let data = tempfile::tempdir().unwrap();
    let s = TestServer::start(keycloak_env(&kc.url, data.path(), &db.url));
    assert!(
        s.logs().contains("AUTH_MODE=keycloak"),
        "no bootstrap admin"
    );

    let sub = uuid();
    // Keycloak knows every user whose tokens it signs (gateway tokens re-read the account).
    kc.add_user(&sub, "good@example.com", json!({}));
    let good = kc.token(&sub, json!({"subscription_tier": "starter"}));
    let r = s.get("/api/v1/byok/stats", &good).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["user_tier"], "starter");
    // BYOK needs starter: the tier from the token is enforced.
    let r = s.get("/api/v1/byok/keys", &good).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);

    // A gateway token for a CLI (Claude Code cannot do an OIDC flow), used beside the JWT.
    let r = s
        .post("/api/v1/tokens", &good, json!({"name": "laptop"}))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let gateway_token = r.json["token"].as_str().unwrap().to_string();
    let r = s.get("/api/v1/byok/stats", &gateway_token).await;
    assert_eq!(r.json["user_tier"], "starter", "{}", r.text);

    let now = chrono::Utc::now().timestamp();
    let key = kc.key();
    let stranger = SigningKey::generate("key-1"); // same kid, other key
    let unknown = SigningKey::generate("not-published");
    let claims = |extra: Value| kc.claims(&sub, extra);
    let hs256_with_public_key = {
        let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
        h.kid = Some(key.kid.clone());
        jsonwebtoken::encode(
            &h,
            &claims(json!({})),
            &jsonwebtoken::EncodingKey::from_secret(key.public_pem.as_bytes()).unwrap(),
        )
        .unwrap()
    };
    let alg_none = format!(
        "{}.{}.",
        b64(&json!({"alg": "none", "typ": "JWT", "kid": key.kid})),
        b64(&claims(json!({})))
    );
    let forgeries = [
        ("expired", key.sign(&claims(json!({"exp": now - 120})))),
        (
            "not yet valid",
            key.sign(&claims(json!({"nbf": now + 600}))),
        ),
        (
            "wrong issuer",
            key.sign(&claims(json!({"iss": "https://evil.example/realms/byok"}))),
        ),
        (
            "wrong audience",
            key.sign(&claims(json!({"aud": "other", "azp": "other"}))),
        ),
        ("no subject", key.sign(&claims(json!({"sub": ""})))),
        ("alg none", alg_none),
        ("HS256 keyed with the public key", hs256_with_public_key),
        (
            "signed by another key, same kid",
            stranger.sign(&claims(json!({}))),
        ),
        ("unknown kid", unknown.sign(&claims(json!({})))),
        ("garbage", "a.b.c".to_string()),
        (
            "an ID token, not an access token",
            key.sign(&claims(json!({"typ": "ID"}))),
        ),
    ];
    for (what, token) in &forgeries {
        let r = s.get("/api/v1/byok/stats", token).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{what}: {}", r.text);
        assert!(r.json["code"].is_string(), "{what}: {}", r.text);
    }
    // Garbage tokens with made-up kids cannot make the gateway hammer Keycloak.
    let before = kc.jwks_fetches.load(std::sync::atomic::Ordering::SeqCst);
    for i in 0..30 {
        let t = SigningKey::generate(&format!("made-up-{i}")).sign(&claims(json!({})));
        assert_eq!(
            s.get("/api/v1/byok/stats", &t).await.status,
            StatusCode::UNAUTHORIZED
        );
    }
    let fetched = kc.jwks_fetches.load(std::sync::atomic::Ordering::SeqCst) - before;
    assert!(fetched <= 3, "{fetched} JWKS fetches for 30 unknown kids");

    // Rotation at the issuer: the old key withdrawn, a new one signs.
    let old_token = good.clone();
    let new_key = kc.rotate("key-2", true);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let fresh = new_key.sign(&claims(json!({"subscription_tier": "starter"})));
    let r = s.get("/api/v1/byok/stats", &fresh).await;
    assert_eq!(r.status, StatusCode::OK, "a new kid is fetched: {}", r.text);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let r = s.get("/api/v1/byok/stats", &old_token).await;
    assert_eq!(
        r.status,
        StatusCode::UNAUTHORIZED,
        "the withdrawn key: {}",
        r.text
    );

    // Tier: no claim → the Keycloak attribute (admin API) → else free.
    let pro = uuid();
    kc.add_user(
        &pro,
        "pro@example.com",
        json!({"subscription_tier": ["professional"]}),
    );
    let r = s
        .get(
            "/api/v1/byok/stats",
            &new_key.sign(&kc.claims(&pro, json!({}))),
        )
        .await;
    assert_eq!(r.json["user_tier"], "professional", "{}", r.text);
    let nobody = new_key.sign(&kc.claims(&uuid(), json!({})));
    let r = s.get("/api/v1/byok/stats", &nobody).await;
    assert_eq!(r.json["user_tier"], "free", "{}", r.text);
    let r = s
        .post(
            "/api/v1/byok/keys/add",
            &nobody,
            json!({"provider": "groq", "key": "gsk_0123456789abcdefghijklmnop"}),
        )
        .await;
    assert_eq!(r.json["code"], "upgrade_required", "{}", r.text);

    let logs = s.finish();
    assert!(
        !logs.contains(CLIENT_SECRET),
        "the client secret is never logged"
    );
    assert!(
        !logs.contains(&good[good.len() - 20..]),
        "no token in the logs"
    );
}

/// An OIDC server written by others (npm `oauth2-mock-server`, RS256, its own token
/// endpoint), laid out like Keycloak: discovery, JWKS, tokens, and key rotation.
/// Security review, medium 3: a gateway token minted under a `starter` JWT kept that tier, and
/// kept working for a user disabled in Keycloak. Gateway tokens of Keycloak users now follow
/// the account, re-read at most every `BYOK_IDENTITY_REFRESH_SECS`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_tokens_follow_the_keycloak_account() {
    let kc = KeycloakStandIn::start().await;
    let db = TestDb::sqlite();
    let data = tempfile::tempdir().unwrap();
    let s = TestServer::start(
        keycloak_env(&kc.url, data.path(), &db.url).set("BYOK_IDENTITY_REFRESH_SECS", "1"),
    );
    let sub = uuid();
    kc.add_user(
        &sub,
        "dev@example.com",
        json!({"subscription_tier": ["starter"]}),
    );
    let jwt = kc.token(&sub, json!({}));
    let r = s.post("/api/v1/tokens", &jwt, json!({"name": "ci"})).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert!(r.json["expires_at"].is_string(), "a default lifetime");
    let token = r.json["token"].as_str().unwrap().to_string();
    let tier_of = |t: String| {
        let s = &s;
        async move {
            let r = s.get("/api/v1/byok/stats", &t).await;
            (r.status, r.json["user_tier"].as_str().map(str::to_owned))
        }
    };
    assert_eq!(
        tier_of(token.clone()).await,
        (StatusCode::OK, Some("starter".into()))
    );
    // Within the bound (1 s here), each change at Keycloak reaches the token.
    let eventually = |want: (StatusCode, Option<String>)| {
        let token = token.clone();
        let tier_of = &tier_of;
        async move {
            let deadline = std::time::Instant::now() + Duration::from_secs(5);
            loop {
                let got = tier_of(token.clone()).await;
                if got == want || std::time::Instant::now() > deadline {
                    return got;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    kc.update_user(&sub, json!({"attributes": {"subscription_tier": ["free"]}}));
    assert_eq!(
        eventually((StatusCode::OK, Some("free".into()))).await,
        (StatusCode::OK, Some("free".into())),
        "downgraded"
    );
    let r = s.get("/api/v1/execution-servers", &token).await;
    assert_eq!(
        (r.status, r.json["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("upgrade_required")),
        "a free user has no execution servers: {}",
        r.text
    );
    kc.update_user(&sub, json!({"enabled": false}));
    assert_eq!(
        eventually((StatusCode::UNAUTHORIZED, None)).await,
        (StatusCode::UNAUTHORIZED, None),
        "disabled"
    );
    kc.update_user(&sub, json!({"enabled": true}));
    assert_eq!(
        eventually((StatusCode::OK, Some("free".into()))).await,
        (StatusCode::OK, Some("free".into())),
        "enabled again"
    );
    kc.remove_user(&sub);
    assert_eq!(
        eventually((StatusCode::UNAUTHORIZED, None)).await,
        (StatusCode::UNAUTHORIZED, None),
        "deleted"
    );
    s.finish();
}

/// Security review, low 6: in `AUTH_MODE=both`, a JWT whose `sub` was a local user's id became
/// that user. External subjects live in their own namespace now.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jwt_subject_never_becomes_a_local_user() {
    let kc = KeycloakStandIn::start().await;
    let db = TestDb::sqlite();
    let data = tempfile::tempdir().unwrap();
    let env = keycloak_env(&kc.url, data.path(), &db.url).set("AUTH_MODE", "both");
    let s = TestServer::start(env.clone());
    let out = env.cli(&[
        "user",
        "create",
        "--email",
        "admin@corp.example",
        "--tier",
        "enterprise",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let local_token = byok_tests::server::token_from(&stdout);
    let local_id = stdout
        .split("(id ")
        .nth(1)
        .and_then(|rest| rest.split(',').next())
        .unwrap()
        .to_string();
    assert!(uuid::Uuid::parse_str(&local_id).is_ok(), "{stdout}");
    // The local user's id as `sub`, with another email and with the same one.
    for email in ["mallory@evil.example", "admin@corp.example"] {
        kc.add_user(
            &local_id,
            email,
            json!({"subscription_tier": ["enterprise"]}),
        );
        let jwt = kc.token(&local_id, json!({"email": email}));
        for path in [
            "/api/v1/tokens",
            "/api/v1/byok/stats",
            "/api/v1/execution-servers",
        ] {
            let r = s.get(path, &jwt).await;
            assert_eq!(
                r.status,
                StatusCode::UNAUTHORIZED,
                "{email} {path}: {}",
                r.text
            );
        }
    }
    let r = s.get("/api/v1/tokens", &local_token).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        r.json.as_array().unwrap().len(),
        1,
        "nothing was minted for the JWT"
    );
    assert!(s.logs().contains("belongs to another identity source"));
    // A genuine Keycloak user still signs in beside it.
    let sub = uuid();
    kc.add_user(&sub, "real@example.com", json!({}));
    let r = s
        .get("/api/v1/byok/stats", &kc.token(&sub, json!({})))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    s.finish();

    // A user stored before origins were recorded (the bootstrap admin of an upgraded service)
    // is not Keycloak's: its tokens are not re-read there (it has no account) and keep working.
    kc.remove_user(&local_id);
    let path = db.url.trim_start_matches("sqlite://");
    byok_tests::run_python(
        "import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); \
         c.execute('UPDATE users SET auth_source = NULL'); c.commit()",
        &[path],
    );
    let s = TestServer::start(env.clone().set("BYOK_IDENTITY_REFRESH_SECS", "1"));
    for _ in 0..3 {
        let r = s.get("/api/v1/tokens", &local_token).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    s.finish();
}

/// An email the identity provider does not vouch for (`email_verified` absent or false) is
/// never stored where it could be looked up: an operator's `--email` does not find that user.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unverified_email_is_not_linked_to_the_user() {
    let kc = KeycloakStandIn::start().await;
    let db = TestDb::sqlite();
    let data = tempfile::tempdir().unwrap();
    let env = keycloak_env(&kc.url, data.path(), &db.url);
    let s = TestServer::start(env.clone());
    let (mallory, alice) = (uuid(), uuid());
    for (sub, verified, email) in [
        (&mallory, json!(false), "boss@corp.example"),
        (&alice, json!(true), "alice@corp.example"),
    ] {
        kc.add_user(sub, email, json!({}));
        let jwt = kc.token(sub, json!({"email": email, "email_verified": verified}));
        let r = s.get("/api/v1/byok/stats", &jwt).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    }
    let set_tier =
        |email: &str| env.cli(&["user", "set-tier", "--email", email, "--tier", "enterprise"]);
    let out = set_tier("boss@corp.example");
    assert!(!out.status.success(), "the unverified email found a user");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no user with email"),
        "{out:?}"
    );
    assert!(set_tier("alice@corp.example").status.success());
    s.finish();
}

/// The identity provider's issuer URL changed (a new Keycloak hostname) but its user ids did
/// not: its users are refused as another identity source until `user rehome-issuer` moves
/// them to the new issuer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_issuer_url_is_adopted_with_rehome_issuer() {
    let old = KeycloakStandIn::start().await;
    let new = KeycloakStandIn::start().await;
    assert_ne!(old.issuer(), new.issuer());
    let db = TestDb::sqlite();
    let data = tempfile::tempdir().unwrap();
    let sub = uuid();
    for kc in [&old, &new] {
        kc.add_user(
            &sub,
            "moved@example.com",
            json!({"subscription_tier": ["starter"]}),
        );
    }
    let s = TestServer::start(keycloak_env(&old.url, data.path(), &db.url));
    let r = s
        .get("/api/v1/byok/stats", &old.token(&sub, json!({})))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    s.finish();

    let env = keycloak_env(&new.url, data.path(), &db.url);
    let s = TestServer::start(env.clone());
    let jwt = new.token(&sub, json!({}));
    let r = s.get("/api/v1/byok/stats", &jwt).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.text);
    assert!(s.logs().contains("belongs to another identity source"));

    let rehome = |from: &str, to: &str| {
        let out = env.cli(&["user", "rehome-issuer", "--from", from, "--to", to]);
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        (out, stdout)
    };
    let (out, stdout) = rehome(&old.issuer(), &new.issuer());
    assert!(out.status.success(), "{out:?}");
    assert!(stdout.contains("moved=1"), "{stdout}");
    let r = s.get("/api/v1/byok/stats", &jwt).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["user_tier"], "starter");
    // Nothing is left to move; `local` and non-URLs are refused.
    let (out, stdout) = rehome(&old.issuer(), &new.issuer());
    assert!(out.status.success(), "{out:?}");
    assert!(stdout.contains("moved=0"), "{stdout}");
    let (out, _) = rehome("local", &new.issuer());
    assert!(!out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("is not an issuer URL"),
        "{out:?}"
    );
    s.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_of_an_independent_oidc_server() {
    let Some(oidc) = byok_tests::oidc::MockOidc::start() else {
        panic!("oauth2-mock-server is not installed: make test installs it (tests/oidc)");
    };
    let db = TestDb::sqlite();
    let data = tempfile::tempdir().unwrap();
    let env = keycloak_env(&oidc.url, data.path(), &db.url).unset("KEYCLOAK_CLIENT_SECRET");
    let s = TestServer::start(env);
    let sub = uuid();
    let token = oidc
        .token(
            json!({"sub": sub, "aud": CLIENT_ID, "email": "oidc@example.com",
                      "subscription_tier": "professional"}),
        )
        .await;
    let r = s.get("/api/v1/byok/stats", &token).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["user_tier"], "professional");
    let other_aud = oidc.token(json!({"sub": sub, "aud": "someone-else"})).await;
    assert_eq!(
        s.get("/api/v1/byok/stats", &other_aud).await.status,
        StatusCode::UNAUTHORIZED
    );
    // Rotation: the server adds a key and signs with it in turn; both are accepted.
    oidc.rotate().await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let mut kids = std::collections::BTreeSet::new();
    for _ in 0..4 {
        let t = oidc
            .token(json!({"sub": sub, "aud": CLIENT_ID, "subscription_tier": "starter"}))
            .await;
        kids.insert(jsonwebtoken::decode_header(&t).unwrap().kid.unwrap());
        let r = s.get("/api/v1/byok/stats", &t).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    }
    assert_eq!(kids.len(), 2, "tokens were signed with both keys");
    s.finish();
}

const KEYS: [(&str, &str); 8] = [
    ("openai", "sk-proj-kcTEST0123456789abcdefghijkl"),
    ("anthropic", "sk-ant-api03-kcTEST0123456789abcdefgh"),
    ("huggingface", "hf_kcTEST0123456789abcdefghijklmn"),
    ("cohere", "cohere-kcTEST0123456789abcdefghij"),
    ("together", "together-kcTEST0123456789abcdefgh"),
    ("perplexity", "pplx-kcTEST0123456789abcdefghijk"),
    ("groq", "gsk_kcTEST0123456789abcdefghijklm"),
    ("openrouter", "sk-or-v1-kcTEST0123456789abcdefgh"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_live_in_keycloak_attributes_in_the_legacy_layout() {
    let kc = KeycloakStandIn::start().await;
    let db = TestDb::sqlite();
    let data = tempfile::tempdir().unwrap();
    let fernet_key = py_fernet::generate_key();
    let env = keycloak_env(&kc.url, data.path(), &db.url)
        .set("BYOK_KEY_STORE", "keycloak")
        .set("ENCRYPTION_KEY", &fernet_key);
    let s = TestServer::start(env);
    let sub = uuid();
    kc.add_user(
        &sub,
        "keys@example.com",
        json!({"department": ["research"], "locale": ["de"], "subscription_tier": ["starter"]}),
    );
    let t = kc.token(&sub, json!({}));

    // Concurrent additions for one user: nothing lost.
    let adds = KEYS.iter().map(|(p, k)| {
        s.post(
            "/api/v1/byok/keys/add",
            &t,
            json!({"provider": p, "key": k, "label": format!("{p} key")}),
        )
    });
    for r in futures_util::future::join_all(adds).await {
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    }
    let user = kc.user(&sub);
    let attrs = &user["attributes"];
    for (p, k) in KEYS {
        let token = attrs[format!("byok_{p}_key")][0].as_str().unwrap();
        assert!(!token.contains("kcTEST"), "stored encrypted");
        assert_eq!(
            py_fernet::decrypt(&fernet_key, token),
            k,
            "legacy-compatible Fernet"
        );
        assert_eq!(attrs[format!("byok_{p}_label")][0], format!("{p} key"));
        assert!(attrs[format!("byok_{p}_added_date")][0].is_string());
        assert_eq!(
            attrs[format!("byok_{p}_preview")][0],
            format!("{}...{}", &k[..4], &k[k.len() - 4..])
        );
    }
    assert_eq!(
        attrs["department"],
        json!(["research"]),
        "foreign attributes survive"
    );
    assert_eq!(attrs["locale"], json!(["de"]));
    assert_eq!(
        user["email"], "keys@example.com",
        "the rest of the user is untouched"
    );

    assert_eq!(
        kc.token_requests.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "one service-account token, reused by every concurrent call"
    );
    let r = s.get("/api/v1/byok/keys", &t).await;
    assert_eq!(r.json.as_array().unwrap().len(), KEYS.len(), "{}", r.text);
    // Keycloak forgets the admin token: the next call gets 401, renews once, and succeeds.
    kc.revoke_admin_tokens();
    let r = s.delete("/api/v1/byok/keys/groq", &t).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(
        kc.token_requests.load(std::sync::atomic::Ordering::SeqCst),
        2
    );
    let attrs = kc.user(&sub)["attributes"].clone();
    assert!(attrs.get("byok_groq_key").is_none() && attrs.get("byok_groq_label").is_none());
    assert!(attrs.get("byok_openai_key").is_some());
    assert_eq!(attrs["department"], json!(["research"]));

    // The service account loses its roles: a clear 503, nothing half-written.
    kc.forbid_admin
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let puts = kc.puts();
    let r = s
        .post(
            "/api/v1/byok/keys/add",
            &t,
            json!({"provider": "groq", "key": KEYS[6].1}),
        )
        .await;
    assert!(
        r.status.is_server_error() && r.status != StatusCode::INTERNAL_SERVER_ERROR,
        "{} {}",
        r.status,
        r.text
    );
    assert!(r.json["code"].is_string(), "{}", r.text);
    assert_eq!(kc.puts(), puts);
    let logs = s.finish();
    assert!(!logs.contains("kcTEST") && !logs.contains(CLIENT_SECRET));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_from_the_legacy_table_and_keycloak_attributes() {
    let kc = KeycloakStandIn::start().await;
    let legacy_db = TestDb::postgres().await;
    let target = TestDb::sqlite();
    let data = tempfile::tempdir().unwrap();
    let legacy_key = py_fernet::generate_key();
    let current_key = py_fernet::generate_key();
    let (alice, bob, carol) = (uuid(), uuid(), uuid());
    // The legacy table, as the Python service created it, written by Python's Fernet.
    let mut conn = AsyncPgConnection::establish(&legacy_db.url).await.unwrap();
    conn.batch_execute(
        "CREATE TABLE user_provider_keys (id uuid PRIMARY KEY, user_id varchar(255) NOT NULL, \
         provider varchar(50) NOT NULL, api_key_encrypted text NOT NULL, enabled boolean DEFAULT true, \
         metadata jsonb DEFAULT '{}', created_at timestamp DEFAULT now(), updated_at timestamp DEFAULT now(), \
         UNIQUE (user_id, provider))",
    )
    .await
    .unwrap();
    let rows = [
        (
            &alice,
            "openai",
            KEYS[0].1,
            true,
            r#"{"name": "work", "added_date": "2024-05-01T10:00:00.123456", "test_status": "valid"}"#,
        ),
        (&alice, "anthropic", KEYS[1].1, true, "{}"),
        (&bob, "groq", KEYS[6].1, false, "{}"),
        (&bob, "nonsense", "x", true, "{}"),
    ];
    for (user, provider, key, enabled, meta) in rows {
        let token = py_fernet::encrypt(&legacy_key, key);
        conn.batch_execute(&format!(
            "INSERT INTO user_provider_keys (id, user_id, provider, api_key_encrypted, enabled, metadata) \
             VALUES ('{}', '{user}', '{provider}', '{token}', {enabled}, '{meta}')",
            uuid()
        ))
        .await
        .unwrap();
    }
    // Carol's key sits in the legacy Keycloak attributes.
    kc.add_user(
        &carol,
        "carol@example.com",
        json!({"byok_openrouter_key": [py_fernet::encrypt(&legacy_key, KEYS[7].1)],
               "byok_openrouter_label": ["mine"], "byok_openrouter_added_date": ["2024-01-02T03:04:05"]}),
    );
    let env = keycloak_env(&kc.url, data.path(), &target.url)
        .set("ENCRYPTION_KEY", &format!("{current_key},{legacy_key}"));
    let run = |extra: &[&str]| {
        let mut args = vec![
            "import-legacy",
            "--from-database",
            legacy_db.url.as_str(),
            "--from-keycloak",
        ];
        args.extend_from_slice(extra);
        let out = env.cli(&args);
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        for (_, k) in KEYS {
            assert!(!stdout.contains(k) && !stderr.contains(k), "no key printed");
        }
        (out.status.success(), stdout, stderr)
    };
    let (ok, stdout, stderr) = run(&[]);
    assert!(ok, "{stdout}{stderr}");
    assert!(
        stdout.contains(
            "read=5 imported=3 unchanged=0 kept_existing=0 disabled=1 invalid=1 undecryptable=0"
        ),
        "{stdout}"
    );
    let (ok, stdout, _) = run(&[]);
    assert!(
        ok && stdout.contains("imported=0 unchanged=3"),
        "idempotent: {stdout}"
    );

    // The imported keys are the users' own, re-encrypted under the current key.
    let s = TestServer::start(env.clone());
    let t = kc.token(&alice, json!({"subscription_tier": "starter"}));
    let r = s.get("/api/v1/byok/keys", &t).await;
    let keys = r.json.as_array().unwrap();
    assert_eq!(keys.len(), 2, "{}", r.text);
    let openai = keys.iter().find(|k| k["provider"] == "openai").unwrap();
    assert_eq!(openai["label"], "work");
    assert_eq!(openai["test_status"], "valid");
    assert_eq!(openai["key_preview"], "sk-p...ijkl");
    let t = kc.token(&carol, json!({"subscription_tier": "starter"}));
    let r = s.get("/api/v1/byok/keys", &t).await;
    assert_eq!(r.json[0]["provider"], "openrouter", "{}", r.text);
    s.finish();

    // Without the legacy key in the ring, nothing is imported and the command says why.
    let data2 = tempfile::tempdir().unwrap();
    let target2 = TestDb::sqlite();
    let env2 =
        keycloak_env(&kc.url, data2.path(), &target2.url).set("ENCRYPTION_KEY", &current_key);
    let out = env2.cli(&["import-legacy", "--from-database", &legacy_db.url]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("legacy ENCRYPTION_KEY"));
}

/// Keycloak behind TLS from a private CA: trusted through `KEYCLOAK_CA_FILE`, refused without
/// it; a plain-http Keycloak URL needs the development opt-in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keycloak_over_tls_with_a_private_ca() {
    let pki = byok_tests::tls::TestPki::new();
    let kc = KeycloakStandIn::start_tls(&pki).await;
    let db = TestDb::sqlite();
    let data = tempfile::tempdir().unwrap();
    let ca = data.path().join("keycloak-ca.pem");
    std::fs::write(&ca, &pki.ca_pem).unwrap();
    let env = keycloak_env(&kc.url, data.path(), &db.url).unset("KEYCLOAK_ALLOW_HTTP");
    let sub = uuid();
    let token = kc.token(&sub, json!({"subscription_tier": "starter"}));

    let s = TestServer::start(env.clone().set("KEYCLOAK_CA_FILE", ca.to_str().unwrap()));
    let r = s.get("/api/v1/byok/stats", &token).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    s.finish();

    let s = TestServer::start(env.clone());
    let r = s.get("/api/v1/byok/stats", &token).await;
    assert_eq!(
        (r.status, r.json["code"].as_str()),
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Some("identity_provider_unavailable")
        ),
        "an unknown CA is not trusted: {}",
        r.text
    );
    s.finish();

    let plain = KeycloakStandIn::start().await;
    let err = TestServer::try_start(
        keycloak_env(&plain.url, data.path(), &db.url).unset("KEYCLOAK_ALLOW_HTTP"),
    )
    .err()
    .expect("http without the opt-in is refused");
    assert!(err.contains("https"), "{err}");
}

/// The admin client against the documented statuses: search by email, 404, 409 on a
/// conflicting email, 403 for a service account without roles, 401 for a wrong secret.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_client_maps_the_documented_statuses() {
    use byok_keycloak::{AdminClient, KeycloakError, KeycloakSettings};
    let kc = KeycloakStandIn::start().await;
    let (a, b) = (uuid(), uuid());
    kc.add_user(&a, "a@example.com", json!({"team": ["x"]}));
    kc.add_user(&b, "b@example.com", json!({}));
    let mut settings = KeycloakSettings::for_testing(&kc.url);
    settings.client_secret = Some(CLIENT_SECRET.to_string().into());
    let admin = AdminClient::new(settings.clone()).unwrap().unwrap();

    let found = admin.find_by_email("a@example.com").await.unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].id(), Some(a.as_str()));
    assert_eq!(found[0].attribute("team").as_deref(), Some("x"));
    assert!(
        admin
            .find_by_email("nobody@example.com")
            .await
            .unwrap()
            .is_empty()
    );
    assert!(matches!(
        admin.get_user(&uuid()).await,
        Err(KeycloakError::NotFound)
    ));
    assert!(matches!(
        admin.get_user("../../realms").await,
        Err(KeycloakError::NotFound)
    ));

    let mut user = admin.get_user(&b).await.unwrap();
    user.0["email"] = json!("a@example.com");
    assert!(matches!(
        admin.put_user(&b, &user).await,
        Err(KeycloakError::Conflict(_))
    ));
    assert_eq!(kc.user(&b)["email"], "b@example.com", "nothing changed");

    kc.forbid_admin
        .store(true, std::sync::atomic::Ordering::SeqCst);
    assert!(matches!(
        admin.get_user(&a).await,
        Err(KeycloakError::Forbidden(403))
    ));

    settings.client_secret = Some("wrong".to_string().into());
    let wrong = AdminClient::new(settings).unwrap().unwrap();
    let err = wrong.get_user(&a).await.unwrap_err();
    assert!(matches!(err, KeycloakError::Forbidden(401)), "{err}");
    assert!(!err.to_string().contains("wrong"));
}

/// The admin client as the identity directory of the legacy session cookie: accounts by exact
/// email, with `enabled`, `emailVerified`, the tier attribute and the realm's issuer as its
/// tokens carry it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_client_finds_accounts_by_email_with_the_realms_issuer() {
    use byok_core::Tier;
    use byok_core::ports::IdentityDirectory;
    use byok_keycloak::{AdminClient, KeycloakSettings};
    let kc = KeycloakStandIn::start().await;
    let (a, b) = (uuid(), uuid());
    kc.add_user(
        &a,
        "a@example.com",
        json!({"subscription_tier": ["professional"]}),
    );
    kc.add_user(&b, "b@example.com", json!({}));
    kc.update_user(&b, json!({"enabled": false, "emailVerified": false}));
    let mut settings = KeycloakSettings::for_testing(&kc.url);
    settings.client_secret = Some(CLIENT_SECRET.to_string().into());
    let admin = AdminClient::new(settings).unwrap().unwrap();

    let found = admin.accounts_by_email("a@example.com").await.unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].subject, a);
    assert_eq!(found[0].issuer, kc.issuer(), "the issuer tokens carry");
    assert!(found[0].enabled && found[0].email_verified);
    assert_eq!(found[0].tier, Some(Tier::Professional));
    let b_found = admin.accounts_by_email("b@example.com").await.unwrap();
    assert!(!b_found[0].enabled && !b_found[0].email_verified);
    assert_eq!(b_found[0].tier, None);
    assert!(
        admin
            .accounts_by_email("nobody@example.com")
            .await
            .unwrap()
            .is_empty()
    );
    // The admin API refusing the service account: unavailable, not "no such account".
    kc.forbid_admin
        .store(true, std::sync::atomic::Ordering::SeqCst);
    assert!(matches!(
        admin.accounts_by_email("a@example.com").await,
        Err(byok_core::CoreError::Unavailable { .. })
    ));
}
