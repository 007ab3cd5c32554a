//! The console's sign-in and sessions over HTTP against the real binary (the pages in a
//! real browser are in `console.rs`): single-use links, token sign-in, cookie flags, the
//! same-origin rule on form posts, sessions ended by sign-out, token revocation and a
//! disabled account, and the OpenID Connect round trip against an independent OIDC server.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use byok_tests::db::TestDb;
use byok_tests::server::{Env, TestServer};
use reqwest::StatusCode;
use reqwest::header::{COOKIE, LOCATION, ORIGIN, SET_COOKIE};
use serde_json::json;

/// A client that follows no redirects and keeps no cookies (the test carries them).
fn client() -> reqwest::Client {
    byok_tests::http_client()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

/// The `name=value` of the cookie `name` set by `resp`, and its whole header.
fn set_cookie(resp: &reqwest::Response, name: &str) -> Option<(String, String)> {
    resp.headers()
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&format!("{name}=")))
        .map(|v| (v.split(';').next().unwrap().to_string(), v.to_string()))
}

/// The sign-in link's secret printed at first start.
fn printed_link_secret(s: &TestServer) -> String {
    let out = s.logs();
    let line = out
        .lines()
        .map(str::trim)
        .find(|l| l.contains("/login/"))
        .expect("a sign-in link on stdout");
    assert!(
        line.starts_with(&format!("{}/login/", s.base)),
        "the printed link carries the bound address: {line}"
    );
    line.rsplit('/').next().unwrap().to_string()
}

/// The value of the hidden `csrf` field on a page.
fn csrf_of(html: &str) -> String {
    let at = html.find("name=\"csrf\" value=\"").expect("a csrf field");
    let rest = &html[at + "name=\"csrf\" value=\"".len()..];
    rest[..rest.find('"').unwrap()].to_string()
}

async fn sign_in_with_link(
    s: &TestServer,
    http: &reqwest::Client,
    secret: &str,
) -> reqwest::Response {
    http.post(format!("{}/login/link", s.base))
        .header(ORIGIN, &s.base)
        .form(&[("secret", secret)])
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn links_tokens_cookies_and_the_same_origin_rule() {
    let db = TestDb::sqlite();
    let data = tempfile::tempdir().unwrap();
    let s = TestServer::start(Env::new(data.path(), &db.url));
    let http = client();
    let secret = printed_link_secret(&s);

    // The link's page asks for a click (link previews must not use it) and sends no referrer
    // to another site (same-origin: under no-referrer browsers post `Origin: null`).
    let page = http
        .get(format!("{}/login/{secret}", s.base))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    assert_eq!(page.headers()["referrer-policy"], "same-origin");
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        csp.contains("default-src 'self'") && csp.contains("frame-ancestors 'none'"),
        "{csp}"
    );
    assert!(!csp.contains("unsafe-inline"), "{csp}");

    // A post from another site is refused, and the link still works afterwards.
    let evil = http
        .post(format!("{}/login/link", s.base))
        .header(ORIGIN, "http://evil.example")
        .form(&[("secret", secret.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(evil.status(), StatusCode::FORBIDDEN);

    let first = sign_in_with_link(&s, &http, &secret).await;
    assert_eq!(first.status(), StatusCode::SEE_OTHER);
    assert_eq!(first.headers()[LOCATION], "/keys");
    let (cookie, header) = set_cookie(&first, "byok_session").expect("a session cookie");
    let lower = header.to_ascii_lowercase();
    for flag in ["httponly", "samesite=lax", "path=/"] {
        assert!(lower.contains(flag), "{header}");
    }
    assert!(
        !lower.contains("secure"),
        "plain http: no Secure flag: {header}"
    );
    // Single use.
    let again = sign_in_with_link(&s, &http, &secret).await;
    assert_eq!(again.status(), StatusCode::UNAUTHORIZED);
    assert!(set_cookie(&again, "byok_session").is_none());

    let keys = http
        .get(format!("{}/keys", s.base))
        .header(COOKIE, &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(keys.status(), StatusCode::OK);
    let html = keys.text().await.unwrap();
    assert!(
        html.contains("admin@localhost"),
        "the signed-in bar names the user"
    );
    let csrf = csrf_of(&html);

    // A form post without the session's CSRF token, or from another origin, changes nothing.
    let add = |csrf: &str, origin: &str| {
        http.post(format!("{}/keys", s.base))
            .header(COOKIE, &cookie)
            .header(ORIGIN, origin)
            .form(&[
                ("csrf", csrf),
                ("provider", "openai"),
                ("key", "sk-proj-CONSOLEcanary0123456789"),
                ("label", "work"),
            ])
            .send()
    };
    assert_eq!(
        add("wrong", &s.base).await.unwrap().status(),
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        add(&csrf, "http://evil.example").await.unwrap().status(),
        StatusCode::FORBIDDEN
    );
    let listed = s.get("/api/v1/byok/keys", s.admin()).await;
    assert_eq!(listed.json, json!([]), "nothing stored by refused posts");
    let ok = add(&csrf, &s.base).await.unwrap();
    assert_eq!(ok.status(), StatusCode::SEE_OTHER);
    let listed = s.get("/api/v1/byok/keys", s.admin()).await;
    assert_eq!(listed.json[0]["key_preview"], "sk-p...6789");
    let page = http
        .get(format!("{}/keys", s.base))
        .header(COOKIE, &cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        !page.contains("CONSOLEcanary"),
        "the key is never shown again"
    );
    assert!(page.contains("sk-p...6789"));

    // A used link posted from a signed-in browser is refused and leaves its session alone.
    let stale = http
        .post(format!("{}/login/link", s.base))
        .header(ORIGIN, &s.base)
        .header(COOKIE, &cookie)
        .form(&[("secret", secret.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(stale.status(), StatusCode::UNAUTHORIZED);
    let still = http
        .get(format!("{}/keys", s.base))
        .header(COOKIE, &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(
        still.status(),
        StatusCode::OK,
        "the session survives a bad link"
    );

    // Sign-out ends the session server-side: the old cookie no longer works.
    let out = http
        .post(format!("{}/logout", s.base))
        .header(COOKIE, &cookie)
        .header(ORIGIN, &s.base)
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), StatusCode::SEE_OTHER);
    let after = http
        .get(format!("{}/keys", s.base))
        .header(COOKIE, &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(after.status(), StatusCode::SEE_OTHER);
    assert!(
        after.headers()[LOCATION]
            .to_str()
            .unwrap()
            .starts_with("/login")
    );

    // Signing in with a gateway token binds the session to it: revoking it ends the session.
    let issued = s
        .post("/api/v1/tokens", s.admin(), json!({"name": "console"}))
        .await;
    assert!(issued.status.is_success(), "{}", issued.text);
    let token = issued.json["token"].as_str().unwrap().to_string();
    let signed = http
        .post(format!("{}/login", s.base))
        .header(ORIGIN, &s.base)
        .form(&[("token", token.as_str()), ("next", "/keys")])
        .send()
        .await
        .unwrap();
    assert_eq!(signed.status(), StatusCode::SEE_OTHER);
    let (by_token, _) = set_cookie(&signed, "byok_session").unwrap();
    let get = |c: String| {
        http.get(format!("{}/keys", s.base))
            .header(COOKIE, c)
            .send()
    };
    assert_eq!(
        get(by_token.clone()).await.unwrap().status(),
        StatusCode::OK
    );
    let id = issued.json["id"].as_str().unwrap();
    let r = s.delete(&format!("/api/v1/tokens/{id}"), s.admin()).await;
    assert!(r.status.is_success(), "{}", r.text);
    assert_eq!(get(by_token).await.unwrap().status(), StatusCode::SEE_OTHER);

    // A wrong token is refused with a page, not JSON.
    let wrong = http
        .post(format!("{}/login", s.base))
        .header(ORIGIN, &s.base)
        .form(&[("token", "byok_not-a-real-token")])
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    assert!(
        wrong.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );

    // Disabling the account ends its sessions and refuses its tokens.
    let link = s
        .env
        .cli(&["user", "login-link", "--email", "admin@localhost"]);
    assert!(link.status.success(), "{link:?}");
    let link = String::from_utf8_lossy(&link.stdout).to_string();
    let secret = link
        .lines()
        .map(str::trim)
        .find(|l| l.contains("/login/"))
        .unwrap();
    let secret = secret.rsplit('/').next().unwrap().to_string();
    let signed = sign_in_with_link(&s, &http, &secret).await;
    let (cookie, _) = set_cookie(&signed, "byok_session").unwrap();
    assert_eq!(get(cookie.clone()).await.unwrap().status(), StatusCode::OK);
    assert!(
        s.env
            .cli(&["user", "disable", "--email", "admin@localhost"])
            .status
            .success()
    );
    assert_eq!(get(cookie).await.unwrap().status(), StatusCode::SEE_OTHER);
    tokio::time::sleep(Duration::from_millis(5200)).await; // the token cache's TTL
    assert_eq!(
        s.get("/api/v1/byok/keys", s.admin()).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert!(
        s.env
            .cli(&["user", "enable", "--email", "admin@localhost"])
            .status
            .success()
    );
    s.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signing_in_through_an_independent_oidc_server() {
    let Some(oidc) = byok_tests::oidc::MockOidc::start() else {
        panic!("oauth2-mock-server is not installed: make test installs it (tests/oidc)");
    };
    let db = TestDb::sqlite();
    let data = tempfile::tempdir().unwrap();
    let env = Env::new(data.path(), &db.url)
        .set("AUTH_MODE", "keycloak")
        .set("KEYCLOAK_URL", &oidc.url)
        .set("KEYCLOAK_REALM", byok_tests::keycloak::REALM)
        .set("KEYCLOAK_CLIENT_ID", "byok-gateway")
        .set("KEYCLOAK_ALLOW_HTTP", "true")
        .set("KEYCLOAK_OPERATOR_ROLE", "byok-operator");
    let s = TestServer::start(env);
    let http = client();
    let sub = uuid::Uuid::new_v4().to_string();
    oidc.login_claims(json!({
        "sub": sub, "aud": "byok-gateway", "email": "kc-console@example.com",
        "email_verified": true, "subscription_tier": "professional",
        "realm_access": {"roles": ["byok-operator"]}
    }))
    .await;

    let login = http.get(format!("{}/login", s.base)).send().await.unwrap();
    let html = login.text().await.unwrap();
    assert!(
        html.contains("href=\"/login/oidc"),
        "the sign-in page offers the provider: {html}"
    );
    let start = http
        .get(format!("{}/login/oidc?next=/tokens", s.base))
        .send()
        .await
        .unwrap();
    assert_eq!(start.status(), StatusCode::SEE_OTHER);
    let (pending, header) = set_cookie(&start, "byok_oidc").expect("the attempt's cookie");
    assert!(header.to_ascii_lowercase().contains("httponly"), "{header}");
    let to = url::Url::parse(start.headers()[LOCATION].to_str().unwrap()).unwrap();
    let q: std::collections::HashMap<_, _> = to.query_pairs().into_owned().collect();
    assert_eq!(q["response_type"], "code");
    assert_eq!(q["code_challenge_method"], "S256");
    assert_eq!(q["redirect_uri"], format!("{}/login/oidc/callback", s.base));
    assert!(q["state"].len() >= 32 && q["nonce"].len() >= 32);

    // The provider signs the browser in and sends it back with a code.
    let back = http.get(to.as_str()).send().await.unwrap();
    assert!(back.status().is_redirection(), "{}", back.status());
    let callback = back.headers()[LOCATION].to_str().unwrap().to_string();
    assert!(
        callback.starts_with(&format!("{}/login/oidc/callback", s.base)),
        "{callback}"
    );

    // Without the attempt's cookie (another browser), or with another state: refused.
    let stranger = http.get(&callback).send().await.unwrap();
    assert_eq!(stranger.status(), StatusCode::UNAUTHORIZED);
    let forged = callback.replace(&format!("state={}", q["state"]), "state=forged");
    let forged = http
        .get(&forged)
        .header(COOKIE, &pending)
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), StatusCode::UNAUTHORIZED);

    // The same code again with the right cookie: the first use above failed before the
    // exchange, so this one signs in.
    let done = http
        .get(&callback)
        .header(COOKIE, &pending)
        .send()
        .await
        .unwrap();
    assert_eq!(
        done.status(),
        StatusCode::SEE_OTHER,
        "{:?}",
        done.text().await
    );
    assert_eq!(done.headers()[LOCATION], "/tokens");
    let (session, _) = set_cookie(&done, "byok_session").expect("a session");
    let keys = http
        .get(format!("{}/keys", s.base))
        .header(COOKIE, &session)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        keys.contains("kc-console@example.com"),
        "signed in as the provider's user"
    );
    assert!(
        keys.contains("professional"),
        "with the tier the token states"
    );
    assert!(
        keys.contains("operator"),
        "and the operator role the realm grants"
    );

    // A replayed code opens no session (the provider refuses it: its PKCE challenge is used).
    let replay = http
        .get(&callback)
        .header(COOKIE, &pending)
        .send()
        .await
        .unwrap();
    assert!(!replay.status().is_redirection(), "{}", replay.status());
    assert!(set_cookie(&replay, "byok_session").is_none());

    // The return path comes back through the browser's cookie: one planted with another
    // site's address still lands on a page of this service.
    let start = http
        .get(format!("{}/login/oidc?next=/tokens", s.base))
        .send()
        .await
        .unwrap();
    let (pending, _) = set_cookie(&start, "byok_oidc").unwrap();
    let raw = pending.split_once('=').unwrap().1;
    let mut attempt: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(raw).unwrap()).unwrap();
    attempt["next"] = json!("https://evil.example/");
    let planted = format!(
        "byok_oidc={}",
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(&attempt).unwrap())
    );
    let to = start.headers()[LOCATION].to_str().unwrap().to_string();
    let back = http.get(&to).send().await.unwrap();
    let callback = back.headers()[LOCATION].to_str().unwrap().to_string();
    let done = http
        .get(&callback)
        .header(COOKIE, &planted)
        .send()
        .await
        .unwrap();
    assert_eq!(done.status(), StatusCode::SEE_OTHER);
    assert_eq!(done.headers()[LOCATION], "/keys", "never another site");
    s.finish();
}

/// Review finding: a user disabled (or deleted) in Keycloak kept an open console session until
/// its idle or absolute end. A session of a Keycloak user now follows the account like the
/// user's gateway tokens (re-read at most every `BYOK_IDENTITY_REFRESH_SECS`, 1 s here): a
/// tier changed there applies, disabled or deleted there ends the session. (The session is
/// opened with a gateway token of the Keycloak user: the Keycloak stand-in has the admin API
/// but no browser sign-in; an OIDC-opened session takes the same check.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keycloak_users_session_follows_the_account() {
    use byok_tests::keycloak::{CLIENT_ID, CLIENT_SECRET, KeycloakStandIn, REALM};

    let kc = KeycloakStandIn::start().await;
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
        .set("BYOK_IDENTITY_REFRESH_SECS", "1");
    let s = TestServer::start(env);
    let http = client();
    let sub = uuid::Uuid::new_v4().to_string();
    kc.add_user(
        &sub,
        "kc-session@example.com",
        json!({"subscription_tier": ["starter"]}),
    );
    let jwt = kc.token(&sub, json!({}));
    let r = s
        .post("/api/v1/tokens", &jwt, json!({"name": "console"}))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let token = r.json["token"].as_str().unwrap().to_string();
    let sign_in = || {
        let (http, s, token) = (&http, &s, token.clone());
        async move {
            let r = http
                .post(format!("{}/login", s.base))
                .header(ORIGIN, &s.base)
                .form(&[("token", token.as_str())])
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), StatusCode::SEE_OTHER);
            set_cookie(&r, "byok_session").expect("a session").0
        }
    };
    // (status, page) of /keys with this session.
    let keys = |cookie: String| {
        let http = &http;
        let url = format!("{}/keys", s.base);
        async move {
            let r = http.get(url).header(COOKIE, cookie).send().await.unwrap();
            (r.status(), r.text().await.unwrap())
        }
    };
    // Polls /keys until `done` holds (at most 5 s): the answer last seen.
    let eventually = |cookie: String, done: fn(&(StatusCode, String)) -> bool| {
        let keys = &keys;
        async move {
            let deadline = std::time::Instant::now() + Duration::from_secs(5);
            loop {
                let got = keys(cookie.clone()).await;
                if done(&got) || std::time::Instant::now() > deadline {
                    return got;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };

    let session = sign_in().await;
    let (status, page) = keys(session.clone()).await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("starter"), "the tier Keycloak keeps: {page}");

    // A tier changed in Keycloak reaches the open session.
    kc.update_user(
        &sub,
        json!({"attributes": {"subscription_tier": ["professional"]}}),
    );
    let (status, page) = eventually(session.clone(), |(_, p)| p.contains("professional")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("professional"), "the new tier applies");

    // Disabled in Keycloak: the open session ends (to the sign-in page) ...
    kc.update_user(&sub, json!({"enabled": false}));
    let (status, _) = eventually(session.clone(), |(st, _)| *st != StatusCode::OK).await;
    assert_eq!(status, StatusCode::SEE_OTHER, "the session ended");
    // ... for good: enabled again, the old cookie opens nothing (the session was deleted),
    // while a new sign-in works.
    kc.update_user(&sub, json!({"enabled": true}));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(keys(session).await.0, StatusCode::SEE_OTHER);
    let session = sign_in().await;
    assert_eq!(keys(session.clone()).await.0, StatusCode::OK);

    // Deleted in Keycloak: ended too.
    kc.remove_user(&sub);
    let (status, _) = eventually(session, |(st, _)| *st != StatusCode::OK).await;
    assert_eq!(status, StatusCode::SEE_OTHER, "the session ended");
    s.finish();
}
