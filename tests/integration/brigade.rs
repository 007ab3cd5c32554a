//! The orchestrator hand-off against a Brigade stand-in (tests/src/brigade.rs): the task body
//! field by field, secrets only over TLS (or plain http with the operator's opt-in), and the
//! answers as the official Anthropic SDK sees them (tests/python/brigade_check.py).

use byok_tests::brigade::BrigadeStandIn;
use byok_tests::canary;
use byok_tests::db::TestDb;
use byok_tests::server::{Env, TestServer};
use byok_tests::sshd::{self, Sshd};
use byok_tests::tls::TestPki;
use reqwest::StatusCode;
use serde_json::{Value, json};

fn tools() -> Value {
    json!([{"name": "get_weather", "description": "Weather for a city",
            "input_schema": {"type": "object", "properties": {"city": {"type": "string"}},
                             "required": ["city"]}}])
}

fn request(text: &str) -> Value {
    json!({
        "model": "brigade/anthropic/claude-sonnet-4-5",
        "max_tokens": 100, "temperature": 0, "top_p": 0.9, "top_k": 5, "stop_sequences": ["END"],
        "system": [{"type": "text", "text": "You are careful."}, {"type": "text", "text": "Be brief."}],
        "tools": tools(),
        "messages": [
            {"role": "user", "content": "Weather?"},
            {"role": "assistant", "content": [{"type": "text", "text": "Let me check."},
                {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}}]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "sunny"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
                {"type": "text", "text": text}]}
        ]
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_carry_the_contract_and_answers_reach_the_sdk() {
    let pki = TestPki::new();
    let brigade = BrigadeStandIn::start_tls(&pki).await;
    let db = TestDb::sqlite();
    let data = tempfile::tempdir().unwrap();
    let ca = data.path().join("brigade-ca.pem");
    std::fs::write(&ca, &pki.ca_pem).unwrap();
    let sshd = Sshd::start();
    let env = Env::new(data.path(), &db.url)
        .set("BRIGADE_URL", &brigade.url)
        .set("BRIGADE_CA_FILE", ca.to_str().unwrap())
        .set("BYOK_ALLOWED_TARGETS", "127.0.0.1/32")
        .set("DEFAULT_LLM_API_KEY", canary::SYSTEM);
    let s = TestServer::start(env.clone());
    let t = env.create_user("agent@example.com", "starter");

    // The ready check reports the orchestrator.
    let r = s.call(reqwest::Method::GET, "/readyz", None, None).await;
    assert_eq!(
        (r.json["status"].as_str(), r.json["brigade"].as_str()),
        (Some("ready"), Some("ok"))
    );

    // BYOK: the user's Anthropic key and default SSH server go to Brigade.
    let r = s
        .post(
            "/api/v1/byok/keys/add",
            &t,
            json!({"provider": "anthropic", "key": canary::ANTHROPIC}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let r = s
        .post(
            "/api/v1/execution-servers",
            &t,
            json!({"name": "box", "server_type": "ssh", "is_default": true, "workspace_path": "/work",
                   "connection_config": {"host": "127.0.0.1", "port": sshd.port, "username": sshd::USER,
                                         "auth_method": "password", "password": sshd::PASSWORD}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let server_id = r.json["id"].as_str().unwrap().to_string();

    // Not handed over before its host key is trusted: the user is told which key to trust.
    let r = s.post("/v1/messages", &t, request("go on")).await;
    assert_eq!(
        (r.status, r.json["error"]["code"].as_str()),
        (StatusCode::CONFLICT, Some("host_key_unverified")),
        "{}",
        r.text
    );
    assert!(
        r.json["error"]["message"]
            .as_str()
            .unwrap()
            .contains(&sshd.fingerprint)
    );
    assert!(
        brigade.tasks().is_empty(),
        "the orchestrator received nothing"
    );
    let r = s
        .post(
            &format!("/api/v1/execution-servers/{server_id}/trust-host-key"),
            &t,
            json!({"fingerprint": sshd.fingerprint}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);

    let r = s.post("/v1/messages", &t, request("go on")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["content"][0]["text"], "Brigade did it");
    assert_eq!(r.headers["x-byok-credential"], "user");
    assert_eq!(r.headers["x-byok-orchestrator"], "brigade");
    let (seen, task) = brigade.tasks().pop().unwrap();
    assert!(seen.tls, "secrets travel over TLS");
    assert_eq!(seen.request.path, "/api/tasks");
    assert!(task["task_id"].as_str().unwrap().starts_with("task_"));
    assert_eq!(
        seen.request.headers["x-byok-task-id"],
        task["task_id"].as_str().unwrap()
    );
    assert_eq!(task["task_type"], "tool_use");
    assert!(uuid::Uuid::parse_str(task["user_id"].as_str().unwrap()).is_ok());
    assert_eq!(task["agents"], json!([]));
    assert_eq!(task["tools"], tools(), "tools with their full schema");
    let ctx = &task["context"];
    assert_eq!(ctx["system_prompt"], "You are careful.\n\nBe brief.");
    assert_eq!(ctx["model"], "claude-sonnet-4-5");
    assert_eq!(ctx["max_tokens"], 100);
    assert_eq!(ctx["temperature"], 0, "temperature 0 stays 0");
    assert_eq!(
        (ctx["top_p"].as_f64(), ctx["top_k"].as_u64()),
        (Some(0.9), Some(5))
    );
    assert_eq!(ctx["stop_sequences"], json!(["END"]));
    let history = ctx["conversation_history"].as_array().unwrap();
    assert_eq!(history.len(), 3);
    assert_eq!(
        history[0],
        json!({"role": "user", "parts": [{"type": "text", "text": "Weather?"}]})
    );
    assert_eq!(
        history[1]["parts"][1],
        json!({"type": "tool_call", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}})
    );
    assert_eq!(
        history[2]["parts"][0],
        json!({"type": "tool_result", "tool_call_id": "toolu_1", "content": "sunny", "is_error": false})
    );
    assert_eq!(history[2]["parts"][1]["type"], "image", "images are kept");
    assert_eq!(history[2]["parts"][1]["source"]["data"], "iVBORw0KGgo=");
    assert_eq!(
        task["user_config"],
        json!({"subscription_tier": "starter", "email": "agent@example.com", "username": "agent"})
    );
    let llm = &task["llm_config"];
    assert_eq!(llm["provider"], "anthropic");
    assert_eq!(llm["model"], "claude-sonnet-4-5");
    assert_eq!(llm["api_key"], canary::ANTHROPIC);
    assert_eq!(llm["base_url"], "http://127.0.0.1:9");
    assert_eq!(llm["format"], "anthropic");
    assert_eq!(
        (
            llm["is_byok"].as_bool(),
            llm["supports_streaming"].as_bool()
        ),
        (Some(true), Some(true))
    );
    let es = &task["execution_server"];
    assert_eq!(es["id"], server_id.as_str());
    assert_eq!(
        (es["name"].as_str(), es["type"].as_str()),
        (Some("box"), Some("ssh"))
    );
    assert_eq!(es["workspace"], "/work");
    assert_eq!(es["connection"]["host"], "127.0.0.1");
    assert_eq!(
        es["connection"]["password"],
        sshd::PASSWORD,
        "the server's credentials, opened"
    );
    assert_eq!(
        es["connection"]["host_key_fingerprint"],
        sshd.fingerprint.as_str(),
        "the pin travels with the server, for Brigade to verify"
    );
    assert_eq!(
        es["connection"]["checked_address"],
        format!("127.0.0.1:{}", sshd.port),
        "the address the target policy passed, for Brigade to connect to"
    );
    assert_eq!(task["metadata"]["stream"], false);
    assert_eq!(
        task["metadata"]["anthropic_request_id"],
        r.headers["x-request-id"].to_str().unwrap(),
        "the id the request is logged under"
    );
    assert!(task["metadata"]["timestamp"].is_string());

    // A failed task: Brigade echoes the key in its message; the client gets it scrubbed.
    let r = s.post("/v1/messages", &t, request("fail")).await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY, "{}", r.text);
    let msg = r.json["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("agent crashed") && msg.contains("[redacted]"),
        "{msg}"
    );

    // No server when asked for none; a named server; an unknown name is a 404.
    let none = s
        .send(
            s.http_post("/v1/messages", &t, request("x"))
                .header("x-byok-execution-server", "none"),
        )
        .await;
    assert_eq!(none.status, StatusCode::OK, "{}", none.text);
    assert_eq!(
        brigade.tasks().pop().unwrap().1["execution_server"],
        Value::Null
    );
    let named = s
        .send(
            s.http_post("/v1/messages", &t, request("x"))
                .header("x-byok-execution-server", "box"),
        )
        .await;
    assert_eq!(named.status, StatusCode::OK);
    let missing = s
        .send(
            s.http_post("/v1/messages", &t, request("x"))
                .header("x-byok-execution-server", "nope"),
        )
        .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND, "{}", missing.text);
    assert_eq!(missing.json["type"], "error");

    // A key whose endpoint is an internal address: Brigade is never asked to call it.
    let before = brigade.tasks().len();
    let r = s
        .post(
            "/api/v1/byok/keys/add",
            &t,
            json!({"provider": "custom", "key": canary::CUSTOM,
                   "endpoint": "http://169.254.169.254/latest"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let mut body = request("x");
    body["model"] = json!("brigade/custom/some-model");
    let r = s.post("/v1/messages", &t, body).await;
    // Refused as a direct call to that endpoint is: 422 forbidden_target.
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
    assert_eq!(r.json["error"]["code"], "forbidden_target", "{}", r.text);
    assert_eq!(brigade.tasks().len(), before, "no task was sent");

    // The system default: a user without keys or servers (free tier).
    let free = env.create_user("free@example.com", "free");
    let mut body = request("x");
    body["model"] = json!("claude-sonnet-4-5");
    let r = s
        .send(
            s.http_post("/v1/messages", &free, body)
                .header("x-byok-orchestrate", "true"),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.headers["x-byok-credential"], "system");
    let task = brigade.tasks().pop().unwrap().1;
    assert_eq!(task["llm_config"]["provider"], "openrouter");
    assert_eq!(task["llm_config"]["api_key"], canary::SYSTEM);
    assert_eq!(task["llm_config"]["is_byok"], false);
    assert_eq!(task["llm_config"]["format"], "openai");
    assert_eq!(task["execution_server"], Value::Null);
    assert_eq!(task["user_config"]["subscription_tier"], "free");

    // The official SDK: plain, tool use, streaming with a tool call, a failed task, a cut
    // stream, a task that fails mid-stream.
    let out = std::process::Command::new(byok_tests::python())
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/python/brigade_check.py"
        ))
        .arg(&s.base)
        .arg(&t)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let streamed = brigade
        .tasks()
        .into_iter()
        .find(|(seen, _)| seen.request.path == "/api/tasks/stream")
        .unwrap();
    assert_eq!(streamed.1["metadata"]["stream"], true);
    assert_eq!(streamed.0.request.headers["accept"], "text/event-stream");
    let logs = s.finish();
    assert!(
        !logs.contains(sshd::PASSWORD),
        "the server's password is never logged"
    );
}

/// Security review, high 1: the hand-off skipped every execution-server check. Each server a
/// direct use refuses is refused for the orchestrator too, with the same code, and Brigade
/// receives nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hand_off_refuses_every_server_a_direct_use_refuses() {
    let pki = TestPki::new();
    let brigade = BrigadeStandIn::start_tls(&pki).await;
    let db = TestDb::sqlite();
    let data = tempfile::tempdir().unwrap();
    let ca = data.path().join("brigade-ca.pem");
    std::fs::write(&ca, &pki.ca_pem).unwrap();
    let env = Env::new(data.path(), &db.url)
        .set("BRIGADE_URL", &brigade.url)
        .set("BRIGADE_CA_FILE", ca.to_str().unwrap())
        .set("BYOK_ALLOW_LOCAL_EXECUTION", "true")
        .set("BYOK_LOCAL_SANDBOX_UID", "61010")
        .set("BYOK_DOCKER_SOCKETS", "/run/allowed/docker.sock")
        .set("DEFAULT_LLM_API_KEY", canary::SYSTEM);
    let s = TestServer::start(env.clone());
    let t = env.create_user("mallory@example.com", "starter");
    let kubeconfig_exec = "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: https://203.0.113.10\ncontexts:\n- name: c\n  context:\n    cluster: c\n    user: u\ncurrent-context: c\nusers:\n- name: u\n  user:\n    exec:\n      apiVersion: client.authentication.k8s.io/v1\n      command: /bin/sh\n      args: [\"-c\", \"id\"]\n";
    let cases = [
        (
            "metadata",
            json!({"server_type": "ssh", "connection_config": {"host": "169.254.169.254", "username": "root",
                   "auth_method": "password", "password": "CANARY-ssh-metadata"}}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "forbidden_target",
        ),
        (
            "starter-local",
            json!({"server_type": "local", "connection_config": {}}),
            StatusCode::FORBIDDEN,
            "upgrade_required",
        ),
        (
            "other-socket",
            json!({"server_type": "docker", "connection_config": {"endpoint": "unix:///var/run/docker.sock"}}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "forbidden_target",
        ),
        (
            "cluster-internal",
            json!({"server_type": "kubernetes", "connection_config": {"cluster_url": "https://10.96.0.1",
                   "service_account_token": "CANARY-k8s-token"}}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "forbidden_target",
        ),
        (
            "cluster-dns",
            json!({"server_type": "kubernetes", "connection_config": {"cluster_url": "https://kubernetes.default.svc",
                   "service_account_token": "CANARY-k8s-token"}}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "forbidden_target",
        ),
        (
            "kubeconfig-exec",
            json!({"server_type": "kubernetes", "connection_config": {"cluster_url": "https://203.0.113.10",
                   "kubeconfig": kubeconfig_exec}}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "backend_unavailable",
        ),
    ];
    for (name, mut server, status, code) in cases {
        server["name"] = json!(name);
        let r = s.post("/api/v1/execution-servers", &t, server).await;
        assert_eq!(r.status, StatusCode::CREATED, "{name}: {}", r.text);
        let id = r.json["id"].as_str().unwrap().to_string();
        // The direct test reports the same code (as its outcome, or as the refusal).
        let direct = s
            .call(
                reqwest::Method::POST,
                &format!("/api/v1/execution-servers/{id}/test"),
                Some(&t),
                None,
            )
            .await;
        let direct_code = direct.json["details"]["code"]
            .as_str()
            .or(direct.json["code"].as_str());
        assert_eq!(direct_code, Some(code), "{name}: {}", direct.text);
        let r = s
            .send(
                s.http_post("/v1/messages", &t, request("x"))
                    .header("x-byok-execution-server", name),
            )
            .await;
        assert_eq!(
            (r.status, r.json["error"]["code"].as_str()),
            (status, Some(code)),
            "{name}: {}",
            r.text
        );
        assert_eq!(r.json["type"], "error", "in the Anthropic shape");
    }
    assert!(
        brigade.tasks().is_empty(),
        "the orchestrator received nothing"
    );
    // An enterprise user's local server runs here, sandboxed, never through Brigade.
    let boss = env.create_user("boss@example.com", "enterprise");
    let r = s
        .post(
            "/api/v1/execution-servers",
            &boss,
            json!({"name": "here", "server_type": "local", "connection_config": {}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let r = s
        .send(
            s.http_post("/v1/messages", &boss, request("x"))
                .header("x-byok-execution-server", "here"),
        )
        .await;
    assert_eq!(
        (r.status, r.json["error"]["code"].as_str()),
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("backend_unavailable")
        ),
        "{}",
        r.text
    );
    assert!(
        brigade.tasks().is_empty(),
        "the orchestrator received nothing"
    );
    let logs = s.finish();
    assert!(!logs.contains("CANARY-ssh-metadata") && !logs.contains("CANARY-k8s-token"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_to_brigade_needs_the_operator_opt_in() {
    let brigade = BrigadeStandIn::start().await;
    let db = TestDb::sqlite();
    let data = tempfile::tempdir().unwrap();
    let env = Env::new(data.path(), &db.url).set("BRIGADE_URL", &brigade.url);
    let err = TestServer::try_start(env.clone()).err().expect("refused");
    assert!(err.contains("BRIGADE_URL must be https"), "{err}");

    let env = env.set("BRIGADE_ALLOW_HTTP", "true");
    let s = TestServer::start(env.clone());
    assert!(
        s.logs().contains("BRIGADE_ALLOW_HTTP is on"),
        "warned at start-up"
    );
    let t = env.create_user("plain@example.com", "starter");
    let r = s.post("/v1/messages", &t, request("x")).await;
    // No key and no system default: refused before anything is sent.
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.text);
    assert!(brigade.tasks().is_empty());
    // Orchestration unconfigured: a clear 400 in Anthropic's format.
    let s2 = TestServer::start(Env::new(data.path(), &db.url));
    let r = s2.post("/v1/messages", &t, request("x")).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
    assert_eq!(r.json["error"]["type"], "invalid_request_error");
    s2.finish();
    s.finish();
    // Brigade down: ready, but degraded (200), naming the orchestrator.
    let down = TestServer::start(
        env.clone()
            .set("BRIGADE_URL", "http://127.0.0.1:9")
            .set("DEFAULT_LLM_API_KEY", canary::SYSTEM),
    );
    let r = down.call(reqwest::Method::GET, "/readyz", None, None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        (r.json["status"].as_str(), r.json["brigade"].as_str()),
        (Some("degraded"), Some("unreachable"))
    );
    let r = down.post("/v1/messages", &t, request("x")).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.text);
    assert!(
        r.json["error"]["message"]
            .as_str()
            .unwrap()
            .contains("orchestrator")
    );
    down.finish();
}

/// A client that goes away mid-stream cancels the task: the gateway drops its connection to
/// Brigade.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_leaves_cancels_the_task() {
    let brigade = BrigadeStandIn::start().await;
    let db = TestDb::sqlite();
    let data = tempfile::tempdir().unwrap();
    let env = Env::new(data.path(), &db.url)
        .set("BRIGADE_URL", &brigade.url)
        .set("BRIGADE_ALLOW_HTTP", "true")
        .set("DEFAULT_LLM_API_KEY", canary::SYSTEM);
    let s = TestServer::start(env.clone());
    let t = env.create_user("leaver@example.com", "free");
    let mut body = request("slow");
    body["stream"] = json!(true);
    let mut resp = s.http_post("/v1/messages", &t, body).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let first = resp.chunk().await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&first).contains("message_start"));
    drop(resp);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !brigade.cancelled.load(std::sync::atomic::Ordering::SeqCst) {
        assert!(
            std::time::Instant::now() < deadline,
            "Brigade's stream was not cancelled"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    s.finish();
}
