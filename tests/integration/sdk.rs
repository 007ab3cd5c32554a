//! The official Python SDKs (`anthropic`, `openai`, installed by `make test`) drive the gateway
//! through same-format and translated routes (`tests/python/sdk_check.py`).

use std::process::Command;

use byok_tests::canary;

use crate::gateway::gateway;

fn sdk(args: &[&str]) -> String {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/python/sdk_check.py");
    let out = Command::new(byok_tests::python())
        .arg(script)
        .args(args)
        .output()
        .expect("python not found: set BYOK_TEST_PYTHON (make test does)");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "{args:?} failed (are the anthropic and openai packages installed? make test installs them)\n{stdout}\n{stderr}"
    );
    canary::assert_absent("SDK output", &stdout);
    stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anthropic_sdk_same_format_and_translated() {
    let g = gateway(&[]).await;
    let byok = g.env.create_user("sdk-a@example.com", "starter");
    g.add_key(&byok, "anthropic", canary::ANTHROPIC, None).await;
    let free = g.env.create_user("sdk-b@example.com", "free");
    let base = g.s.base.clone();
    let (b2, t1, t2) = (base.clone(), byok.clone(), free.clone());
    let out = tokio::task::spawn_blocking(move || {
        let mut out = sdk(&["anthropic", &b2, &t1, "claude-sonnet-4-5", "claude-tool-1"]);
        out += &sdk(&[
            "anthropic",
            &b2,
            &t1,
            "claude-sonnet-4-5",
            "claude-tool-1",
            "bearer",
        ]);
        // Free user: served by the OpenRouter default, translated to OpenAI format and back.
        out += &sdk(&["anthropic", &b2, &t2, "claude-sonnet-4-5", "claude-tool-1"]);
        out
    })
    .await
    .unwrap();
    assert_eq!(
        out.matches("ok: anthropic accumulated tool input").count(),
        3,
        "{out}"
    );
    let paths: Vec<String> = g.llm.requests().iter().map(|r| r.path.clone()).collect();
    assert!(
        paths.iter().any(|p| p == "/v1/messages"),
        "same-format route used"
    );
    assert!(
        paths.iter().any(|p| p == "/chat/completions"),
        "translated route used"
    );
    g.s.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_sdk_same_format_and_translated() {
    let g = gateway(&[]).await;
    let t = g.env.create_user("sdk-o@example.com", "starter");
    g.add_key(&t, "openai", canary::OPENAI, None).await;
    g.add_key(&t, "anthropic", canary::ANTHROPIC, None).await;
    let base = g.s.base.clone();
    let out = tokio::task::spawn_blocking(move || {
        let mut out = sdk(&["openai", &base, &t, "gpt-4o", "gpt-tool"]);
        // Claude models through the OpenAI SDK: translated to Anthropic format and back.
        out += &sdk(&["openai", &base, &t, "claude-sonnet-4-5", "claude-tool-1"]);
        out
    })
    .await
    .unwrap();
    assert_eq!(
        out.matches("ok: openai accumulated tool arguments").count(),
        2,
        "{out}"
    );
    let paths: Vec<String> = g.llm.requests().iter().map(|r| r.path.clone()).collect();
    assert!(paths.iter().any(|p| p == "/chat/completions"));
    assert!(paths.iter().any(|p| p == "/v1/messages"));
    g.s.finish();
}

/// Claude Code itself (`make test` installs it with npm), in print mode, through the
/// same-format route (the user's Anthropic key, `ANTHROPIC_API_KEY` → `x-api-key`) and the
/// translated route (the OpenRouter default, `ANTHROPIC_AUTH_TOKEN` → `Authorization: Bearer`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claude_code_through_same_format_and_translated_routes() {
    let claude = std::env::var("BYOK_TEST_CLAUDE").unwrap_or_else(|_| {
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../.tools/claude-code/node_modules/.bin/claude"
        )
        .into()
    });
    assert!(
        std::path::Path::new(&claude).exists(),
        "Claude Code not found at {claude}: run make test (it installs it) or set BYOK_TEST_CLAUDE"
    );
    let g = gateway(&[]).await;
    let byok = g.env.create_user("cc-a@example.com", "starter");
    g.add_key(&byok, "anthropic", canary::ANTHROPIC, None).await;
    let free = g.env.create_user("cc-b@example.com", "free");
    let home = tempfile::tempdir().unwrap();
    let run = |auth_var: &'static str, token: String| {
        let claude = claude.clone();
        let base = g.s.base.clone();
        let home = home.path().to_path_buf();
        tokio::task::spawn_blocking(move || {
            Command::new(&claude)
                .args(["-p", "say hello", "--model", "claude-sonnet-4-5"])
                .env_clear()
                .env("PATH", std::env::var("PATH").unwrap_or_default())
                .env("HOME", &home)
                .env("ANTHROPIC_BASE_URL", &base)
                .env(auth_var, &token)
                .env("DISABLE_TELEMETRY", "1")
                .env("DISABLE_AUTOUPDATER", "1")
                .env("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1")
                .stdin(std::process::Stdio::null())
                .output()
                .unwrap()
        })
    };
    let out = run("ANTHROPIC_API_KEY", byok).await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains(byok_tests::llm::TEXT), "{stdout}");
    assert!(g.llm.requests().iter().any(|r| r.path == "/v1/messages"
        && r.headers.get("x-api-key").map(String::as_str) == Some(canary::ANTHROPIC)));

    let out = run("ANTHROPIC_AUTH_TOKEN", free).await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains(byok_tests::llm::TEXT), "{stdout}");
    let translated = g
        .llm
        .requests()
        .into_iter()
        .filter(|r| r.path == "/chat/completions")
        .collect::<Vec<_>>();
    assert!(
        !translated.is_empty(),
        "Claude Code's request took the translated route"
    );
    assert_eq!(translated[0].json()["model"], "anthropic/claude-sonnet-4.5");
    g.s.finish();
}
