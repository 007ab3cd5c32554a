//! The execution-server registry over HTTP: legacy paths and JSON, masking, validation, the
//! one-default rule under concurrency.

use byok_tests::db::TestDb;
use byok_tests::server::{Env, TestServer};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

byok_tests::both_backends!(concurrent_make_default);

const SSH_PASSWORD: &str = "CANARYopenai-ssh-password";
const K8S_TOKEN: &str = "eyJ-CANARYopenai-k8s-token";

fn ssh(name: &str) -> Value {
    json!({"name": name, "server_type": "ssh", "workspace_path": "/home/agent/work",
           "connection_config": {"host": "build.example.com", "username": "agent",
                                 "auth_method": "password", "password": SSH_PASSWORD}})
}

async fn put(s: &TestServer, path: &str, token: &str, body: Value) -> byok_tests::server::Resp {
    s.call(Method::PUT, path, Some(token), Some(body)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_masks_validates_and_keeps_secrets() {
    let db = TestDb::sqlite();
    let data = tempfile::tempdir().unwrap();
    let env = Env::new(data.path(), &db.url);
    let s = TestServer::start(env.clone());
    let t = env.create_user("ops@example.com", "starter");

    let r = s.post("/api/v1/execution-servers", &t, ssh("build")).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let id = r.json["id"].as_str().unwrap().to_string();
    let c = &r.json["connection_config"];
    assert_eq!(c["password"], "***masked***");
    assert_eq!(c["port"], 22, "defaults filled in");
    assert_eq!(r.json["server_type"], "ssh");
    assert_eq!(r.json["is_default"], false);
    assert_eq!(r.json["is_active"], true);
    for k in [
        "last_tested_at",
        "test_status",
        "created_at",
        "updated_at",
        "workspace_path",
    ] {
        assert!(r.json.get(k).is_some(), "{k}");
    }
    let raw = std::fs::read(db.sqlite_path().unwrap()).unwrap_or_default();
    let mut wal =
        std::fs::read(format!("{}-wal", db.sqlite_path().unwrap().display())).unwrap_or_default();
    wal.extend(raw);
    assert!(
        !String::from_utf8_lossy(&wal).contains(SSH_PASSWORD),
        "no plaintext secret at rest"
    );

    // A masked placeholder sent back keeps the secret; a new value replaces it.
    let mut back = r.json["connection_config"].clone();
    back["username"] = json!("agent2");
    let r = put(
        &s,
        &format!("/api/v1/execution-servers/{id}"),
        &t,
        json!({"connection_config": back}),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["connection_config"]["username"], "agent2");
    assert_eq!(r.json["connection_config"]["password"], "***masked***");
    let r = put(
        &s,
        &format!("/api/v1/execution-servers/{id}"),
        &t,
        json!({"connection_config": {"host": "build.example.com", "username": "agent", "auth_method": "password", "password": null}}),
    )
    .await;
    assert_eq!(
        r.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "clearing the only password: {}",
        r.text
    );

    let k8s = json!({"name": "cluster", "server_type": "kubernetes", "is_default": true,
                     "connection_config": {"cluster_url": "https://k8s.example.com:6443", "service_account_token": K8S_TOKEN}});
    let r = s.post("/api/v1/execution-servers", &t, k8s).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_eq!(r.json["connection_config"]["namespace"], "default");
    let list = s.get("/api/v1/execution-servers", &t).await.json;
    assert_eq!(list[0]["name"], "cluster", "default first");
    let d = s.get("/api/v1/execution-servers/default", &t).await;
    assert_eq!(d.json["name"], "cluster");

    let cases: Vec<(Value, StatusCode, &str)> = vec![
        (ssh("build"), StatusCode::CONFLICT, "server_name_taken"),
        (
            json!({"name": "x", "server_type": "vm", "connection_config": {}}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_server_type",
        ),
        (
            json!({"name": "x", "server_type": "ssh", "connection_config": {"host": "h", "username": "u", "auth_method": "password", "password": "p", "shell": "zsh"}}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_connection_config",
        ),
        (
            json!({"name": "x", "server_type": "ssh", "connection_config": {"host": "h", "port": 0, "username": "u", "auth_method": "password", "password": "p"}}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_connection_config",
        ),
        (
            json!({"name": "x", "server_type": "ssh", "connection_config": {"host": "h", "port": 65536, "username": "u", "auth_method": "password", "password": "p"}}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_connection_config",
        ),
        (
            json!({"name": "x", "server_type": "local", "connection_config": {}, "workspace_path": "relative/path"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_workspace_path",
        ),
        (
            json!({"name": "", "server_type": "local", "connection_config": {}}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_name",
        ),
        (
            json!({"name": "x", "server_type": "docker", "connection_config": {"endpoint": "ftp://nope"}}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_connection_config",
        ),
        (
            json!({"name": "x", "server_type": "ssh", "connection_config": "nope"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_connection_config",
        ),
    ];
    for (body, status, code) in cases {
        let r = s.post("/api/v1/execution-servers", &t, body.clone()).await;
        assert_eq!(
            (r.status, r.json["code"].as_str()),
            (status, Some(code)),
            "{body}: {}",
            r.text
        );
    }
    let r = s.delete("/api/v1/execution-servers/not-a-uuid", &t).await;
    assert_eq!(
        (r.status, r.json["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("server_not_found"))
    );

    let free = env.create_user("free-ops@example.com", "free");
    let r = s
        .post("/api/v1/execution-servers", &free, ssh("mine"))
        .await;
    assert_eq!(
        (r.status, r.json["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("upgrade_required"))
    );
    let other = env.create_user("other-ops@example.com", "enterprise");
    assert_eq!(
        s.get("/api/v1/execution-servers", &other).await.json,
        json!([])
    );
    assert_eq!(
        s.delete(&format!("/api/v1/execution-servers/{id}"), &other)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        put(
            &s,
            &format!("/api/v1/execution-servers/{id}"),
            &other,
            json!({"name": "x"})
        )
        .await
        .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        s.get("/api/v1/execution-servers/default", &other)
            .await
            .json,
        Value::Null
    );

    let r = s
        .delete(&format!("/api/v1/execution-servers/{id}"), &t)
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        s.delete(&format!("/api/v1/execution-servers/{id}"), &t)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    let logs = s.finish();
    assert!(!logs.contains("CANARYopenai"), "no secret in the logs");
}

async fn concurrent_make_default(kind: byok_tests::db::Kind) {
    let db = TestDb::new(kind).await;
    let data = tempfile::tempdir().unwrap();
    let env = Env::new(data.path(), &db.url);
    let s = TestServer::start(env.clone());
    let t = env.create_user("race@example.com", "starter");
    let mut ids = Vec::new();
    for i in 0..6 {
        let r = s
            .post("/api/v1/execution-servers", &t, json!({"name": format!("local-{i}"), "server_type": "local", "connection_config": {}}))
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        ids.push(r.json["id"].as_str().unwrap().to_string());
    }
    let paths: Vec<String> = ids
        .iter()
        .cycle()
        .take(30)
        .map(|id| format!("/api/v1/execution-servers/{id}"))
        .collect();
    let reqs = paths
        .iter()
        .map(|p| put(&s, p, &t, json!({"is_default": true})));
    for r in futures_util::future::join_all(reqs).await {
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    }
    let list = s.get("/api/v1/execution-servers", &t).await.json;
    let defaults = list
        .as_array()
        .unwrap()
        .iter()
        .filter(|x| x["is_default"] == true)
        .count();
    assert_eq!(defaults, 1, "exactly one default");
    s.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_execution_test_exec_limits_and_policy() {
    let db = TestDb::sqlite();
    let data = tempfile::tempdir().unwrap();
    let env = Env::new(data.path(), &db.url)
        .set("BYOK_ALLOW_LOCAL_EXECUTION", "true")
        .set("BYOK_LOCAL_SANDBOX_UID", "61100");
    let s = TestServer::start(env.clone());
    let t = env.create_user("ent@example.com", "enterprise");
    let r = s
        .post(
            "/api/v1/execution-servers",
            &t,
            json!({"name": "here", "server_type": "local", "connection_config": {}}),
        )
        .await;
    let id = r.json["id"].as_str().unwrap().to_string();
    let base = format!("/api/v1/execution-servers/{id}");

    let r = s
        .call(Method::POST, &format!("{base}/test"), Some(&t), None)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["status"], "success");
    let listed = s.get("/api/v1/execution-servers", &t).await.json;
    assert_eq!(listed[0]["test_status"], "success");
    assert!(listed[0]["last_tested_at"].is_string());

    let exec_path = format!("{base}/exec");
    let exec = |body: Value| s.post(&exec_path, &t, body);
    let r = exec(json!({"command": "echo $NAME; test -n \"$SECRET\" && echo secret-set; echo problem >&2; exit 7",
                        "env": {"NAME": "agent", "SECRET": "CANARYopenai-env-secret"}}))
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["exit_code"], 7);
    assert_eq!(r.json["stdout"], "agent\nsecret-set\n");
    assert_eq!(r.json["stderr"], "problem\n");
    assert!(
        r.json.get("env").is_none() && r.json.get("command").is_none(),
        "nothing echoed back"
    );
    let r = exec(json!({"command": ["cat"], "stdin": "piped in"})).await;
    assert_eq!(r.json["stdout"], "piped in");
    let r = exec(json!({"command": "sleep 20", "timeout_secs": 1})).await;
    assert_eq!(
        (r.json["timed_out"].as_bool(), r.json["exit_code"].is_null()),
        (Some(true), true),
        "{}",
        r.text
    );
    let r = exec(json!({"command": "head -c 10000000 /dev/zero >&2; echo ok"})).await;
    assert_eq!(
        (r.json["truncated"].as_bool(), r.json["stdout"].as_str()),
        (Some(true), Some("ok\n"))
    );
    for bad in [
        json!({"command": ""}),
        json!({"command": []}),
        json!({"command": 5}),
        json!({"command": "true", "timeout_secs": 0}),
        json!({"command": "true", "env": {"1BAD": "x"}}),
        json!({"command": "true", "shell": "zsh"}),
    ] {
        let r = exec(bad.clone()).await;
        assert_eq!(
            r.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{bad}: {}",
            r.text
        );
    }
    // 30 commands a minute per user; the next one is refused with retry-after.
    let mut limited = None;
    for _ in 0..40 {
        let r = exec(json!({"command": ["true"]})).await;
        if r.status == StatusCode::TOO_MANY_REQUESTS {
            limited = Some(r);
            break;
        }
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    }
    let limited = limited.expect("rate limit reached");
    assert_eq!(limited.json["code"], "rate_limited");
    assert!(limited.headers.contains_key("retry-after"));

    // Local execution is for enterprise users only.
    let starter = env.create_user("st@example.com", "starter");
    let r = s
        .post(
            "/api/v1/execution-servers",
            &starter,
            json!({"name": "here", "server_type": "local", "connection_config": {}}),
        )
        .await;
    let sid = r.json["id"].as_str().unwrap().to_string();
    let r = s
        .post(
            &format!("/api/v1/execution-servers/{sid}/exec"),
            &starter,
            json!({"command": "true"}),
        )
        .await;
    assert_eq!(
        (r.status, r.json["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("upgrade_required"))
    );
    let logs = s.finish();
    assert!(
        !logs.contains("CANARYopenai"),
        "the command's environment is not logged"
    );

    // Without the operator's opt-in, local servers cannot run anything.
    let s = TestServer::start(env.clone().unset("BYOK_ALLOW_LOCAL_EXECUTION"));
    let r = s
        .post(&format!("{base}/exec"), &t, json!({"command": "true"}))
        .await;
    assert_eq!(
        (r.status, r.json["code"].as_str()),
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("backend_unavailable")
        )
    );
    s.finish();
}

/// Security review, high 2: a local command ran as the gateway's own user and read its
/// environment, the encryption key and the database. Now it runs sandboxed: another uid, its own
/// PID/mount namespaces, no data directory, a private /tmp, a process limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_commands_cannot_see_the_gateway() {
    /// The sandbox range: 61020 to 61027 (8 runs at once by default).
    const SANDBOX_UIDS: std::ops::Range<u32> = 61_020..61_028;
    let db = TestDb::sqlite();
    let data = tempfile::tempdir().unwrap();
    let env = Env::new(data.path(), &db.url)
        .set("BYOK_ALLOW_LOCAL_EXECUTION", "true")
        .set("BYOK_LOCAL_SANDBOX_UID", "61020")
        .set("BYOK_LOCAL_MAX_PROCESSES", "32")
        .set("DEFAULT_LLM_API_KEY", byok_tests::canary::SYSTEM);
    let s = TestServer::start(env.clone());
    let t = env.create_user("ent@example.com", "enterprise");
    let r = s
        .post(
            "/api/v1/execution-servers",
            &t,
            json!({"name": "here", "server_type": "local", "connection_config": {}}),
        )
        .await;
    let id = r.json["id"].as_str().unwrap().to_string();
    let exec_path = format!("/api/v1/execution-servers/{id}/exec");
    let exec = |command: String, timeout: u64| {
        s.post(
            &exec_path,
            &t,
            json!({"command": command, "timeout_secs": timeout}),
        )
    };
    let key_file = data.path().join("encryption.key");
    let db_file = db.url.trim_start_matches("sqlite://").to_string();
    assert!(key_file.exists() && std::path::Path::new(&db_file).exists());

    // The review's three reads.
    let reads = [
        "cat /proc/$PPID/environ".to_string(),
        format!("cat /proc/{}/environ", s.pid()),
        "cat /proc/[0-9]*/environ".to_string(),
        format!("cat {}", key_file.display()),
        format!("cat {db_file}"),
        format!("ls -la {}", data.path().display()),
    ];
    for cmd in reads {
        let r = exec(cmd.clone(), 10).await;
        assert_eq!(r.status, StatusCode::OK, "{cmd}: {}", r.text);
        let out = format!("{}{}", r.json["stdout"], r.json["stderr"]);
        assert!(
            !out.contains("CANARY") && !out.contains("DEFAULT_LLM_API_KEY"),
            "{cmd} leaked: {out}"
        );
        if !cmd.contains("$PPID") && !cmd.contains("[0-9]") {
            assert_ne!(r.json["exit_code"], 0, "{cmd} must fail: {out}");
        }
    }
    let key = std::fs::read_to_string(&key_file).unwrap();
    let r = exec("ls /".into(), 10).await;
    let listed: Vec<&str> = r.json["stdout"].as_str().unwrap().lines().collect();
    let allowed = [
        "bin", "dev", "etc", "lib", "lib32", "lib64", "libx32", "proc", "sbin", "tmp", "usr",
        "work",
    ];
    assert!(
        listed.iter().all(|d| allowed.contains(d)) && listed.contains(&"usr"),
        "only the system's programs and the sandbox's own directories: {listed:?}"
    );

    // Another uid and gid, nothing privileged.
    let r = exec("id -u; id -g; id -G; hostname".into(), 10).await;
    let out: Vec<String> = r.json["stdout"]
        .as_str()
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    let uid: u32 = out[0].parse().unwrap();
    assert!(SANDBOX_UIDS.contains(&uid), "{out:?}");
    assert_eq!(
        out[1..],
        [uid.to_string(), uid.to_string(), "byok-sandbox".to_string()]
    );
    // The launcher's environment is not the user's to change.
    let r = s
        .post(
            &exec_path,
            &t,
            json!({"command": "true", "env": {"LD_PRELOAD": "/usr/lib/x.so"}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
    let r = exec("cat /proc/self/status | grep -E '^Cap(Eff|Prm)'".into(), 10).await;
    assert!(
        r.json["stdout"]
            .as_str()
            .unwrap()
            .lines()
            .all(|l| l.ends_with("0000000000000000")),
        "no capabilities: {}",
        r.text
    );

    // A private /tmp: what one command writes, the next and the host do not see.
    let r = exec(
        "echo private > /tmp/byok-sandbox-probe && cat /tmp/byok-sandbox-probe".into(),
        10,
    )
    .await;
    assert_eq!(r.json["stdout"], "private\n", "{}", r.text);
    let r = exec("cat /tmp/byok-sandbox-probe".into(), 10).await;
    assert_ne!(r.json["exit_code"], 0);
    assert!(!std::path::Path::new("/tmp/byok-sandbox-probe").exists());

    // A fork bomb is contained: the process limit holds, the service keeps answering, the
    // time limit ends it, and nothing of the sandbox uid survives.
    let bomb = tokio::spawn({
        let req = s.http_post(
            &exec_path,
            &t,
            json!({"command": "b() { b | b & }; b; sleep 3", "timeout_secs": 5}),
        );
        async move {
            let r = req.send().await?;
            let status = r.status();
            r.text().await.map(|text| (status, text))
        }
    });
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let count = || {
        SANDBOX_UIDS
            .map(|uid| {
                std::process::Command::new("pgrep")
                    .args(["-c", "-u", &uid.to_string()])
                    .output()
                    .map(|o| {
                        String::from_utf8_lossy(&o.stdout)
                            .trim()
                            .parse::<u32>()
                            .unwrap_or(0)
                    })
                    .unwrap_or(0)
            })
            .sum::<u32>()
    };
    let during = count();
    assert!(during <= 32, "the process limit holds: {during} processes");
    // Another tenant's run is not affected: it has a uid (and a process count) of its own.
    let other = env.create_user("other@example.com", "enterprise");
    let r = s
        .post(
            "/api/v1/execution-servers",
            &other,
            json!({"name": "mine", "server_type": "local", "connection_config": {}}),
        )
        .await;
    let theirs = format!(
        "/api/v1/execution-servers/{}/exec",
        r.json["id"].as_str().unwrap()
    );
    let r = s
        .post(
            &theirs,
            &other,
            json!({"command": "echo fine; ls /proc | wc -l"}),
        )
        .await;
    assert_eq!(r.json["exit_code"], 0, "{}", r.text);
    assert!(r.json["stdout"].as_str().unwrap().starts_with("fine\n"));
    let r = s.call(Method::GET, "/healthz", None, None).await;
    assert_eq!(r.status, StatusCode::OK, "the service keeps answering");
    let bombed = bomb.await.unwrap().unwrap();
    assert_eq!(bombed.0, StatusCode::OK);
    assert!(
        bombed.1.contains("fork") || bombed.1.contains("Resource temporarily unavailable"),
        "the bomb ran into the process limit: {}",
        bombed.1
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while count() > 0 && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(count(), 0, "every sandbox process is gone");
    let logs = s.finish();
    assert!(!logs.contains(key.trim()));

    // No working sandbox, no local execution: the service refuses to start, saying why.
    let err = match TestServer::try_start(env.clone().set("BYOK_LOCAL_BWRAP", "/nonexistent/bwrap"))
    {
        Ok(s) => {
            s.finish();
            panic!("started without a sandbox")
        }
        Err(e) => e,
    };
    assert!(
        err.contains("BYOK_ALLOW_LOCAL_EXECUTION") && err.contains("bubblewrap"),
        "{err}"
    );
}
