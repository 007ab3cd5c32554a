//! The web console in a real Chromium (Debian's `chromium` and `chromium-driver`, driven with
//! fantoccini; `byok_tests::browser`): the flows people follow, with the mouse and with the
//! keyboard alone, the refusals that protect them (a form posted from another site, the
//! session cookie's flags), and every page audited by axe-core in light and dark, with the
//! keyboard, at 375 px and for its weight. With `BYOK_WRITE_SCREENSHOTS=1` the audit writes
//! the README's screenshots to `docs/images`.
//!
//! One browser for the whole run: `console_in_chromium` is one test of named steps sharing
//! one server and one Chromium; a failing step is reported by name and the others still run.
//! To audit a new page, add one line to [`PAGES`].

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::time::Instant;

use byok_tests::browser::{Browser, Page};
use byok_tests::canary;
use byok_tests::db::TestDb;
use byok_tests::llm::LlmStandIn;
use byok_tests::server::{Env, TestServer};
use byok_tests::sshd::Sshd;
use byok_tests::standin::StandIn;
use fantoccini::cookies::Cookie;
use fantoccini::key::Key;
use futures_util::FutureExt;
use reqwest::StatusCode;
use tokio::io::AsyncWriteExt;

/// Who is signed in when a page is audited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Who {
    Nobody,
    /// The first user: enterprise plan, operator.
    Operator,
    /// A user on the free plan.
    Free,
}

/// Every page the audit visits (axe-core light and dark, keyboard, 375 px, weight, and the
/// screenshots): one line per page. Runs last, so the flows' data is on the pages; `{server}`
/// in a path is the execution server the servers step registered, `{user}` the user the
/// administration step created.
const PAGES: &[(Who, Page)] = &[
    (Who::Nobody, page("sign-in", "/login", true)),
    (
        Who::Nobody,
        page("sign-in-link", "/login/a-sign-in-link-secret", false),
    ),
    (Who::Operator, page("keys", "/keys", true)),
    (
        Who::Operator,
        page("keys-delete", "/keys/groq/delete", false),
    ),
    (Who::Operator, error_page("not-found", "/no-such-page")),
    (Who::Free, page("keys-free", "/keys", true)),
    (Who::Operator, page("servers", "/servers", true)),
    (Who::Operator, page("server-types", "/servers/new", false)),
    (
        Who::Operator,
        page("server-ssh-form", "/servers/new?type=ssh", true),
    ),
    (
        Who::Operator,
        page("server-docker-form", "/servers/new?type=docker", false),
    ),
    (
        Who::Operator,
        page(
            "server-kubernetes-form",
            "/servers/new?type=kubernetes",
            false,
        ),
    ),
    (
        Who::Operator,
        page("server-edit", "/servers/{server}/edit", false),
    ),
    (
        Who::Operator,
        page("server-run", "/servers/{server}/run", false),
    ),
    (
        Who::Operator,
        page("server-delete", "/servers/{server}/delete", false),
    ),
    (Who::Free, page("servers-free", "/servers", false)),
    (Who::Operator, page("tokens", "/tokens", true)),
    (Who::Operator, page("usage", "/usage", true)),
    (Who::Free, page("usage-free", "/usage", false)),
    (
        Who::Operator,
        page("try", "/try?model=openai/gpt-4o-mini", true),
    ),
    (Who::Free, page("try-free", "/try", false)),
    (Who::Operator, page("admin", "/admin", true)),
    (
        Who::Operator,
        page("admin-disable", "/admin/users/{user}/disable", false),
    ),
    (Who::Free, error_page("admin-refused", "/admin")),
];

const fn page(name: &'static str, path: &'static str, screenshot: bool) -> Page {
    Page {
        name,
        path,
        screenshot,
        error: false,
    }
}

/// An error page the audit visits on purpose (no screenshot).
const fn error_page(name: &'static str, path: &'static str) -> Page {
    Page {
        name,
        path,
        screenshot: false,
        error: true,
    }
}

const OPERATOR_EMAIL: &str = "ada@example.com";
const FREE_EMAIL: &str = "grace@example.com";

/// One server with stand-ins, its users and the browser sessions the steps keep.
struct Fx {
    s: TestServer,
    _db: TestDb,
    _data: tempfile::TempDir,
    _keys: StandIn,
    _llm: LlmStandIn,
    sshd: Sshd,
    /// The execution server registered by `servers_with_a_real_sshd`.
    server_id: Option<String>,
    /// The user created by `administration`.
    user_id: Option<String>,
    operator: String,
    free: String,
    /// The sign-in link the first start printed.
    link: String,
    sessions: HashMap<Who, Cookie<'static>>,
    /// The keyboard step's session, which `sign_out` ends.
    to_sign_out: Option<Cookie<'static>>,
}

impl Fx {
    async fn start() -> Self {
        let keys = StandIn::start(&[canary::OPENAI, canary::ANTHROPIC, canary::GROQ]).await;
        let db = TestDb::sqlite();
        let data = tempfile::tempdir().unwrap();
        let env = Env::new(data.path(), &db.url)
            .set("BYOK_BOOTSTRAP_ADMIN_EMAIL", OPERATOR_EMAIL)
            .set("BYOK_ALLOWED_TARGETS", "127.0.0.1/32");
        // Key probes go to the key stand-in; OpenAI (an own key) and OpenRouter (the
        // platform's key) answer prompts (and OpenAI's key probe) from the LLM stand-in, for
        // Try it and Usage.
        let llm = LlmStandIn::start().await;
        let env = byok_tests::api::point_providers_at(env, &keys.base)
            .set("BYOK_PROVIDER_OPENAI_BASE_URL", &llm.base)
            .set("BYOK_PROVIDER_OPENROUTER_BASE_URL", &llm.base)
            .set("DEFAULT_LLM_API_KEY", canary::SYSTEM);
        let s = TestServer::start(env.clone());
        let operator = s.admin().to_string();
        let out = s.logs();
        let printed = out
            .lines()
            .map(str::trim)
            .find(|l| l.contains("/login/"))
            .unwrap_or_else(|| panic!("no sign-in link printed at first start:\n{out}"));
        // The link as printed, whole: it must name the address the server really listens on.
        let link = printed[printed.find("http").expect("a URL")..].to_string();
        assert!(
            link.starts_with(&format!("{}/login/", s.base)),
            "{link} is not on {}",
            s.base
        );
        let free = env.create_user(FREE_EMAIL, "free");
        Self {
            s,
            _db: db,
            _data: data,
            _keys: keys,
            _llm: llm,
            sshd: Sshd::start(),
            server_id: None,
            user_id: None,
            operator,
            free,
            link,
            sessions: HashMap::new(),
            to_sign_out: None,
        }
    }
}

/// Runs the steps in order, each to its end even when an earlier one failed; fails at the end
/// naming every failed step (its panic is printed above).
macro_rules! steps {
    ($b:expr, $fx:expr, $($step:ident),+ $(,)?) => {{
        let mut failed: Vec<&str> = Vec::new();
        $(
            let t = Instant::now();
            let ok = AssertUnwindSafe($step($b, $fx)).catch_unwind().await.is_ok();
            eprintln!(
                "console step {}: {} in {} ms",
                stringify!($step),
                if ok { "passed" } else { "FAILED" },
                t.elapsed().as_millis()
            );
            if !ok {
                failed.push(stringify!($step));
            }
        )+
        failed
    }};
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_in_chromium() {
    let started = Instant::now();
    let Some(mut b) = Browser::start().await else {
        return;
    };
    let mut fx = Fx::start().await;
    b.at(&fx.s.base);
    let failed = steps!(
        &mut b,
        &mut fx,
        first_sign_in_with_the_printed_link,
        keys_add_test_delete,
        keyboard_only_sign_in_and_add_a_key,
        free_user_sees_the_upgrade_message,
        servers_with_a_real_sshd,
        tokens_create_and_revoke,
        try_it_own_key_and_platform_key,
        administration,
        cross_site_form_post_is_refused,
        session_cookie_in_the_browser,
        sign_out,
        keycloak_sign_in_round_trip,
        the_audit_catches_a_broken_page,
        every_page_passes_the_audit,
    );
    let problems = std::mem::take(&mut b.problems);
    b.finish().await;
    fx.s.finish();
    eprintln!(
        "console_in_chromium: {:.1} s",
        started.elapsed().as_secs_f64()
    );
    assert!(
        problems.is_empty(),
        "the audit found {} problem(s):\n{}",
        problems.len(),
        problems.join("\n")
    );
    assert!(failed.is_empty(), "failed steps: {}", failed.join(", "));
}

// --- Helpers ------------------------------------------------------------------------------

/// Signs in with a gateway token through the form (mouse), returns the session cookie.
async fn sign_in(b: &Browser, token: &str) -> Cookie<'static> {
    b.forget_cookies().await;
    b.open("/login").await;
    b.fill("#token", token).await;
    b.click("form[action='/login'] button[type=submit]").await;
    b.wait_path("/keys").await;
    b.cookie("byok_session").await.expect("no session cookie")
}

/// Becomes `who` again by restoring the session cookie a step saved.
async fn become_(b: &Browser, fx: &Fx, who: Who) {
    b.open("/login").await;
    b.forget_cookies().await;
    if who != Who::Nobody {
        let c = fx
            .sessions
            .get(&who)
            .unwrap_or_else(|| panic!("no saved session for {who:?} (its sign-in step failed)"))
            .clone();
        b.client.add_cookie(c).await.unwrap();
    }
}

/// The page's source, checked for canary secrets.
async fn source_without_secrets(b: &Browser) -> String {
    let html = b.client.source().await.unwrap();
    canary::assert_absent("a console page", &html);
    html
}

/// An HTTP client that shows redirects instead of following them.
fn no_redirects() -> reqwest::Client {
    byok_tests::http_client()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

async fn csrf(b: &Browser) -> String {
    b.el("input[name=csrf]")
        .await
        .attr("value")
        .await
        .unwrap()
        .expect("csrf field")
}

// --- Steps --------------------------------------------------------------------------------

/// The link printed at first start: a page asking for a click, then the keys page as the
/// operator; the link works once.
async fn first_sign_in_with_the_printed_link(b: &mut Browser, fx: &mut Fx) {
    b.forget_cookies().await;
    b.open(&fx.link).await;
    assert!(b.page_text().await.contains("This link signs you in once"));
    assert!(
        b.cookie("byok_session").await.is_none(),
        "opening the link alone must not sign in (link previews)"
    );
    b.click("form[action='/login/link'] button[type=submit]")
        .await;
    b.wait_path("/keys").await;
    assert_eq!(b.text(".who .email").await, OPERATOR_EMAIL);
    assert!(
        b.has(".who .pill.operator").await,
        "the first user is an operator"
    );
    assert!(b.has("nav a[aria-current=page][href='/keys']").await);
    let session = b.cookie("byok_session").await.expect("session cookie");
    fx.sessions.insert(Who::Operator, session);

    // A second use is refused (in a fresh browser state, to keep the session).
    b.forget_cookies().await;
    b.open(&fx.link).await;
    b.click("form[action='/login/link'] button[type=submit]")
        .await;
    b.wait_path("/login/link").await;
    assert_eq!(b.status().await, 401);
    assert!(b.page_text().await.contains("expired or was already used"));
}

/// Add a key (mouse), see the field errors, test it against the provider stand-in, delete it
/// through the confirmation page.
async fn keys_add_test_delete(b: &mut Browser, fx: &mut Fx) {
    become_(b, fx, Who::Operator).await;
    b.open("/keys").await;
    // Nothing chosen: the error sits next to the field.
    b.fill("#key", "sk-whatever").await;
    b.click("#add form button[type=submit]").await;
    b.wait_path("/keys").await;
    // The API's status for an unknown provider, and the field says what to do.
    assert!(b.status().await >= 400, "{}", b.status().await);
    let provider = b.el("#provider").await;
    assert_eq!(
        provider.attr("aria-invalid").await.unwrap().as_deref(),
        Some("true")
    );
    assert!(b.has("#provider-error").await);

    b.choose("#provider", "anthropic").await;
    b.fill("#key", canary::ANTHROPIC).await;
    b.fill("#label", "work").await;
    b.click("#add form button[type=submit]").await;
    b.wait_path("/keys?done=saved").await;
    assert!(
        b.text(".notice.ok")
            .await
            .contains("Anthropic key is saved")
    );
    let row = b.text("#provider-anthropic").await;
    assert!(row.contains("Saved, not tested"), "{row}");
    assert!(row.contains("work"), "{row}");
    source_without_secrets(b).await;

    // Test: the stand-in accepts this key.
    b.click("#provider-anthropic form[action='/keys/anthropic/test'] button")
        .await;
    b.wait_path("/keys/anthropic/test").await;
    let notice = b.text(".notice").await;
    assert!(notice.starts_with("Anthropic: Valid"), "{notice}");
    assert!(b.text("#provider-anthropic").await.contains("Valid"));

    // Delete: a confirmation page first.
    b.click("#provider-anthropic a[href='/keys/anthropic/delete']")
        .await;
    b.wait_path("/keys/anthropic/delete").await;
    assert!(b.text("h1").await.contains("Delete your Anthropic key?"));
    b.click("form[action='/keys/anthropic/delete'] button[type=submit]")
        .await;
    b.wait_path("/keys?done=deleted").await;
    assert!(
        b.text(".notice.ok")
            .await
            .contains("Anthropic key is deleted")
    );
    assert!(
        b.has("#provider-anthropic a[href='/keys?provider=anthropic#add']")
            .await,
        "after deletion the row offers Add again"
    );
    let r = fx.s.get("/api/v1/byok/keys", &fx.operator).await;
    assert!(!r.text.contains("\"anthropic\""), "{}", r.text);
}

/// Sign in with a token and add a key with the keyboard alone: Tab, typing, Arrow keys,
/// Enter and Space; the skip link leads to the content.
async fn keyboard_only_sign_in_and_add_a_key(b: &mut Browser, fx: &mut Fx) {
    b.forget_cookies().await;
    b.open("/login").await;
    b.tab_to("#token").await;
    b.type_text(&fx.operator).await;
    b.press(Key::Enter).await;
    b.wait_path("/keys").await;

    // The skip link is the first stop and moves the focus to the content.
    b.press(Key::Tab).await;
    assert!(
        b.focused("a.skip").await,
        "the first Tab stop is the skip link"
    );
    b.press(Key::Enter).await;
    assert!(b.focused("main#main").await, "the skip link focuses <main>");

    b.tab_to("#provider").await;
    b.arrow_to_option("openai").await;
    b.tab_to("#key").await;
    b.type_text(canary::OPENAI).await;
    b.press(Key::Enter).await;
    b.wait_path("/keys?done=saved").await;
    assert!(
        b.text("#provider-openai")
            .await
            .contains("Saved, not tested"),
        "the key was saved"
    );
    // The row's Test button, pressed with Space.
    b.tab_to("#provider-openai form[action='/keys/openai/test'] button")
        .await;
    b.press(Key::Space).await;
    b.wait_path("/keys/openai/test").await;
    let notice = b.text(".notice").await;
    assert!(notice.starts_with("OpenAI: Valid"), "{notice}");
    source_without_secrets(b).await;
    // This session is the one `sign_out` ends.
    fx.to_sign_out = b.cookie("byok_session").await;
}

/// A free user's keys page says what the upgrade brings, and offers no form to add a key.
async fn free_user_sees_the_upgrade_message(b: &mut Browser, fx: &mut Fx) {
    let c = sign_in(b, &fx.free).await;
    fx.sessions.insert(Who::Free, c);
    let callout = b.text("section[aria-labelledby=upgrade-title]").await;
    assert!(
        callout.contains("starter plan") && callout.contains("You are on the free plan"),
        "{callout}"
    );
    assert!(
        b.has("section[aria-labelledby=upgrade-title] a.button")
            .await
    );
    assert!(!b.has("#add").await, "no add form on the free plan");
    assert!(!b.has(".who .pill.operator").await);
}

/// Register the real sshd (its private key pasted), see its host-key fingerprint, trust it,
/// see the test pass, make it the default and run `uname` on it.
async fn servers_with_a_real_sshd(b: &mut Browser, fx: &mut Fx) {
    become_(b, fx, Who::Operator).await;
    b.open("/servers").await;
    assert!(b.has("#servers-empty").await);
    b.click("#add-server").await;
    b.wait_path("/servers/new").await;
    b.click("#add-ssh").await;
    b.wait_path("/servers/new?type=ssh").await;
    b.fill("#name", "build-box").await;
    b.fill("#host", "127.0.0.1").await;
    b.fill("#port", &fx.sshd.port.to_string()).await;
    b.fill("#username", byok_tests::sshd::USER).await;
    b.choose("#auth_method", "key").await;
    b.fill("#private_key", &fx.sshd.private_key).await;
    b.fill("#workspace_path", "/tmp").await;
    b.click("#save-server").await;
    b.wait_path("/servers?").await;
    let row = b.el("tr[data-server-name='build-box']").await;
    let id = row.attr("id").await.unwrap().unwrap();
    let id = id.strip_prefix("server-").unwrap().to_string();
    fx.server_id = Some(id.clone());
    assert_eq!(
        row.attr("data-server-type").await.unwrap().as_deref(),
        Some("ssh")
    );
    let html = b.client.source().await.unwrap();
    assert!(
        !html.contains("OPENSSH PRIVATE KEY") && !html.contains(fx.sshd.private_key.trim()),
        "the private key is never on a page"
    );

    // The first test stops at the host key: the fingerprint sshd really has.
    b.click(&format!("#test-{id}")).await;
    b.wait_path(&format!("/servers/{id}/test")).await;
    assert!(b.has("#host-key-step").await, "{}", b.page_text().await);
    assert_eq!(b.text("#host-key-fingerprint").await, fx.sshd.fingerprint);
    b.audit_current(page("server-host-key", "", true)).await;
    b.click("#trust-host-key").await;
    b.wait_path(&format!("/servers/{id}/trust")).await;
    assert!(b.has("#trusted-notice").await);
    let result = b.el("#test-result").await;
    assert_eq!(
        result.attr("data-status").await.unwrap().as_deref(),
        Some("success"),
        "{}",
        b.text("#test-result").await
    );
    assert_eq!(b.text("#test-status").await, "Connected");

    // Default, then a command.
    b.open("/servers").await;
    b.click(&format!("#make-default-{id}")).await;
    b.wait_path("/servers").await;
    assert!(b.has(&format!("#default-marker-{id}")).await);
    b.click(&format!("#run-{id}")).await;
    b.wait_path(&format!("/servers/{id}/run")).await;
    b.fill("#command", "uname").await;
    b.click("#run-button").await;
    b.wait_path(&format!("/servers/{id}/run")).await;
    assert_eq!(b.text("#run-exit-code").await, "0");
    assert_eq!(b.text("#run-stdout").await.trim(), "Linux");
    b.audit_current(page("server-run-result", "", false)).await;
}

/// Create a gateway token (shown once, and it works on the API), then revoke it through the
/// confirmation page (and it no longer works).
async fn tokens_create_and_revoke(b: &mut Browser, fx: &mut Fx) {
    become_(b, fx, Who::Operator).await;
    b.open("/tokens").await;
    b.fill("#token-name", "laptop").await;
    b.click("#create-token").await;
    b.wait_path("/tokens").await;
    let token = b.text("#new-token-value").await;
    assert!(token.starts_with("byok_"), "{token}");
    assert!(
        b.text("#new-token")
            .await
            .contains("will not be shown again")
    );
    let r = fx.s.get("/api/v1/byok/keys", &token).await;
    assert_eq!(r.status, StatusCode::OK, "the new token works: {}", r.text);
    b.audit_current(page("tokens-new", "", true)).await;

    // The row of the new token (its prefix is the token's start), then revoke it.
    b.open("/tokens").await;
    assert!(!b.page_text().await.contains(&token), "shown once only");
    let rows = b
        .client
        .find_all(fantoccini::Locator::Css("#tokens tbody tr"))
        .await
        .unwrap();
    let mut id = None;
    for row in rows {
        let prefix = row.attr("data-prefix").await.unwrap().unwrap_or_default();
        if !prefix.is_empty() && token.starts_with(&prefix) {
            id = row.attr("id").await.unwrap();
        }
    }
    let id = id.expect("a row for the new token");
    let id = id.strip_prefix("token-").unwrap();
    b.click(&format!("#revoke-{id}")).await;
    b.wait_path(&format!("/tokens/{id}/revoke")).await;
    b.audit_current(page("token-revoke", "", false)).await;
    b.click(&format!(
        "form[action='/tokens/{id}/revoke'] button[type=submit]"
    ))
    .await;
    b.wait_path("/tokens?done=revoked").await;
    let row = b.el(&format!("#token-{id}")).await;
    assert_eq!(
        row.attr("data-status").await.unwrap().as_deref(),
        Some("revoked")
    );
    let r = fx.s.get("/api/v1/byok/keys", &token).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.text);
}

/// Try it: the badge says whose key answers a model before anything is sent (the operator's
/// own OpenAI key; the platform's key for Anthropic, where they have none), and the answer
/// carries the badge of the key that answered.
async fn try_it_own_key_and_platform_key(b: &mut Browser, fx: &mut Fx) {
    become_(b, fx, Who::Operator).await;
    for (model, credential, says) in [
        ("openai/gpt-4o-mini", "own", "your OpenAI key"),
        (
            "anthropic/claude-3-5-haiku-latest",
            "platform",
            "the platform's key",
        ),
    ] {
        b.open("/try").await;
        b.fill("#try-model", model).await;
        b.click("#try-check").await;
        b.wait_path("/try").await;
        let badge = b.el("#try-badge").await;
        assert_eq!(
            badge.attr("data-credential").await.unwrap().as_deref(),
            Some(credential),
            "{model}: {}",
            b.page_text().await
        );
        assert!(badge.text().await.unwrap().contains(says), "{model}");
        b.fill("#try-prompt", "Say hello.").await;
        b.click("#try-send").await;
        b.wait_path("/try").await;
        let result = b.el("#try-result-badge").await;
        assert_eq!(
            result.attr("data-credential").await.unwrap().as_deref(),
            Some(credential),
            "{model}: {}",
            b.page_text().await
        );
        assert!(
            b.text("#try-answer").await.contains(byok_tests::llm::TEXT),
            "{model}: the stand-in's answer"
        );
        if credential == "own" {
            b.audit_current(page("try-answer", "", false)).await;
        }
        source_without_secrets(b).await;
    }
    assert!(b.text("#try-server").await.contains("build-box"));
}

/// Administration: an operator creates a user and gets their sign-in link once; a user who
/// is not an operator sees no Administration entry (the 403 page is audited with the others).
async fn administration(b: &mut Browser, fx: &mut Fx) {
    become_(b, fx, Who::Operator).await;
    b.open("/admin").await;
    b.fill("#new-email", "linus@example.com").await;
    b.choose("#new-tier", "starter").await;
    b.click("#create-user").await;
    b.wait_path("/admin").await;
    let link = b.text("#new-user-link").await;
    assert!(link.contains("/login/"), "{link}");
    b.audit_current(page("admin-new-user", "", false)).await;
    b.open("/admin").await;
    let row = b.el("#users tr[data-email='linus@example.com']").await;
    let id = row.attr("id").await.unwrap().expect("a row id");
    fx.user_id = Some(id.strip_prefix("user-").expect("user-<id>").to_string());
    assert!(
        !b.page_text().await.contains(&link),
        "the link is shown once"
    );
    // The link signs the new user in (a fresh browser state).
    b.forget_cookies().await;
    let path = &link[link.find("/login/").unwrap()..];
    b.open(path).await;
    b.click("form[action='/login/link'] button[type=submit]")
        .await;
    b.wait_path("/keys").await;
    assert_eq!(b.text(".who .email").await, "linus@example.com");
    assert!(
        !b.has("nav a[href='/admin']").await,
        "no Administration entry"
    );
}

/// A form on another origin posting to /keys, with the session cookie and even the right CSRF
/// token: 403, nothing stored. The same request from the console's own origin is accepted,
/// so the refusal is the origin check's.
async fn cross_site_form_post_is_refused(b: &mut Browser, fx: &mut Fx) {
    become_(b, fx, Who::Operator).await;
    b.open("/keys").await;
    let csrf = csrf(b).await;
    let target = format!("{}/keys", fx.s.base);
    let html = format!(
        "<!doctype html><title>Elsewhere</title>\
         <form method=post action=\"{target}\">\
         <input name=csrf value=\"{csrf}\"><input name=provider value=groq>\
         <input name=key value=\"{}\"><button id=go>Win a prize</button></form>",
        canary::GROQ
    );
    let evil = byok_tests::http::serve_loopback(None, move |mut io, _| {
        let html = html.clone();
        async move {
            let _ = byok_tests::http::read_request(&mut io).await;
            let resp = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: text/html\r\ncontent-length: {}\r\n\
                 connection: close\r\n\r\n{html}",
                html.len()
            );
            let _ = io.write_all(resp.as_bytes()).await;
            let _ = io.shutdown().await;
        }
    })
    .await;
    b.open(&evil).await;
    b.click("#go").await;
    b.wait_path("/keys").await;
    assert!(
        b.here().await.starts_with(&fx.s.base),
        "back on the console"
    );
    assert_eq!(b.status().await, 403);
    assert!(b.text("h1").await.contains("This form cannot be accepted"));
    let r = fx.s.get("/api/v1/byok/keys", &fx.operator).await;
    assert!(!r.text.contains("\"groq\""), "nothing stored: {}", r.text);

    // The same form by plain HTTP: another Origin, or no Origin and a cross-site fetch.
    let cookie = fx.sessions[&Who::Operator].value().to_string();
    let post = |headers: &[(&str, &str)]| {
        let mut req = no_redirects()
            .post(&target)
            .header("cookie", format!("byok_session={cookie}"))
            .form(&[
                ("csrf", csrf.as_str()),
                ("provider", "groq"),
                ("key", canary::GROQ),
            ]);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        fx.s.send(req)
    };
    let r = post(&[("origin", "http://evil.example")]).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = post(&[("sec-fetch-site", "cross-site")]).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = fx.s.get("/api/v1/byok/keys", &fx.operator).await;
    assert!(!r.text.contains("\"groq\""), "nothing stored: {}", r.text);
    let r = post(&[("origin", fx.s.base.as_str())]).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.text);
    let r = fx.s.get("/api/v1/byok/keys", &fx.operator).await;
    assert!(r.text.contains("\"groq\""), "{}", r.text);
}

/// The session cookie as the browser holds it: HttpOnly, SameSite=Lax, Path=/, not Secure
/// over http, unreadable by scripts (the Set-Cookie itself: `console_sessions.rs`; over https,
/// `__Host-byok_session` with Secure: byok-server's in-process tests).
async fn session_cookie_in_the_browser(b: &mut Browser, fx: &mut Fx) {
    become_(b, fx, Who::Operator).await;
    b.open("/keys").await;
    let c = b.cookie("byok_session").await.expect("session cookie");
    assert_eq!(c.http_only(), Some(true));
    assert_eq!(format!("{:?}", c.same_site()), "Some(Lax)");
    assert_eq!(c.path(), Some("/"));
    assert_ne!(c.secure(), Some(true));
    assert_eq!(
        b.js("return document.cookie;").await,
        serde_json::json!(""),
        "scripts cannot read the session"
    );
}

/// The header's Sign out button ends the session on the server: the old cookie no longer
/// opens a page.
async fn sign_out(b: &mut Browser, fx: &mut Fx) {
    become_(b, fx, Who::Nobody).await;
    let c = fx.to_sign_out.clone().expect("the keyboard step's session");
    b.client.add_cookie(c.clone()).await.unwrap();
    b.open("/keys").await;
    b.wait_path("/keys").await;
    b.click("header form[action='/logout'] button[type=submit]")
        .await;
    b.wait_path("/login?signed_out=1").await;
    assert!(b.text(".notice.ok").await.contains("You are signed out."));
    assert!(b.cookie("byok_session").await.is_none());
    b.client.add_cookie(c).await.unwrap();
    b.open("/keys").await;
    assert_eq!(b.wait_path("/login").await, "/login?next=/keys");
}

/// With AUTH_MODE=keycloak (a server of its own, against npm's oauth2-mock-server laid out
/// like a Keycloak realm): the sign-in page offers the provider, the browser goes there and
/// comes back signed in as the provider's user, with the tier and operator role it states.
async fn keycloak_sign_in_round_trip(b: &mut Browser, fx: &mut Fx) {
    let oidc = byok_tests::oidc::MockOidc::start()
        .expect("oauth2-mock-server is not installed: make test installs it (tests/oidc)");
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
    oidc.login_claims(serde_json::json!({
        "sub": uuid::Uuid::new_v4().to_string(), "aud": "byok-gateway",
        "email": "kc-user@example.com", "email_verified": true,
        "subscription_tier": "professional", "realm_access": {"roles": ["byok-operator"]}
    }))
    .await;
    b.at(&s.base);
    b.forget_cookies().await;
    let outcome = AssertUnwindSafe(async {
        b.open("/login?next=/keys").await;
        b.audit_current(page("sign-in-keycloak", "/login", false))
            .await;
        b.click("#oidc-sign-in").await;
        b.wait_path("/keys").await;
        assert_eq!(b.text(".who .email").await, "kc-user@example.com");
        assert!(b.text(".who").await.to_lowercase().contains("professional"));
        assert!(b.has(".who .pill.operator").await);
        assert!(b.cookie("byok_session").await.is_some());
    })
    .catch_unwind()
    .await;
    b.forget_cookies().await;
    b.at(&fx.s.base);
    s.finish();
    if let Err(p) = outcome {
        std::panic::resume_unwind(p);
    }
}

/// The audit's own check: a page broken on purpose (a field without a label, a button whose
/// focus is invisible, a control taken out of the Tab order's document order) is reported.
async fn the_audit_catches_a_broken_page(b: &mut Browser, fx: &mut Fx) {
    become_(b, fx, Who::Nobody).await;
    b.open("/login").await;
    b.js("const main = document.querySelector('main');
          const input = document.createElement('input');
          input.id = 'unlabelled';
          main.prepend(input);
          const button = document.createElement('button');
          button.textContent = 'Invisible focus';
          button.id = 'no-outline';
          button.style.outline = 'none';
          button.style.boxShadow = 'none';
          main.append(button);
          const late = document.createElement('button');
          late.textContent = 'Jumps the queue';
          late.tabIndex = 1;
          document.querySelector('footer').append(late);")
        .await;
    let axe = b.axe().await.join("\n");
    assert!(
        axe.contains("axe label (critical)") && axe.contains("#unlabelled"),
        "{axe}"
    );
    let (_, keyboard) = b.keyboard().await;
    let keyboard = keyboard.join("\n");
    assert!(keyboard.contains("positive tabindex"), "{keyboard}");
    b.js("document.querySelector('footer button').remove();")
        .await;
    let (_, keyboard) = b.keyboard().await;
    let keyboard = keyboard.join("\n");
    assert!(
        keyboard.contains("no visible focus on button#no-outline"),
        "{keyboard}"
    );
}

/// Every page of [`PAGES`], as its user.
async fn every_page_passes_the_audit(b: &mut Browser, fx: &mut Fx) {
    let mut current = None;
    for (who, page) in PAGES {
        if current != Some(*who) {
            become_(b, fx, *who).await;
            current = Some(*who);
        }
        let mut path = page.path.to_string();
        for (placeholder, id, step) in [
            ("{server}", &fx.server_id, "servers_with_a_real_sshd"),
            ("{user}", &fx.user_id, "administration"),
        ] {
            if path.contains(placeholder) {
                let Some(id) = id else {
                    panic!("{}: no {placeholder} (the {step} step failed)", page.name)
                };
                path = path.replace(placeholder, id);
            }
        }
        b.open(&path).await;
        let status = b.status().await;
        assert!(
            (status >= 400) == page.error,
            "{}: status {status}",
            page.name
        );
        source_without_secrets(b).await;
        b.audit_current(*page).await;
    }
}
