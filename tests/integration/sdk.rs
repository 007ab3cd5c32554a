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
