//! Tests of the execution-server registry ([`ServerRegistry`]), over the in-memory store.

use super::*;

use async_trait::async_trait;
use secrecy::ExposeSecret;
use serde_json::json;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::SystemTime;

use crate::execution::{CommandSpec, MASK, mask_config};
use crate::services::window_of;
use crate::testing::{MemServers, ToyCipher};

fn registry() -> ServerRegistry {
    ServerRegistry::new(Arc::new(MemServers::new()), Arc::new(ToyCipher), vec![])
}

fn principal(tier: Tier) -> Principal {
    Principal {
        user_id: UserId::new_random(),
        email: "u@example.com".into(),
        tier,
        token_id: None,
    }
}

#[tokio::test]
async fn operations_are_limited_per_user_per_minute() {
    // The window is aligned to the clock: retry if the run straddled a boundary.
    for _ in 0..3 {
        let window = window_of(SystemTime::now(), EXEC_WINDOW).0;
        let reg = registry();
        let (a, b) = (principal(Tier::Starter), principal(Tier::Starter));
        for _ in 0..EXEC_PER_MINUTE {
            reg.admit_exec(&a).await.unwrap();
        }
        let refused = reg.admit_exec(&a).await;
        reg.admit_exec(&b).await.unwrap();
        if window_of(SystemTime::now(), EXEC_WINDOW).0 != window {
            continue;
        }
        match refused {
            Err(CoreError::RateLimited { retry_after_secs }) => {
                assert!((1..=60).contains(&retry_after_secs), "{retry_after_secs}");
            }
            other => panic!("expected RateLimited, got {other:?}"),
        }
        return;
    }
    panic!("three runs straddled a minute boundary");
}

/// Refuses everything.
struct Closed;

#[async_trait]
impl RateLimiter for Closed {
    async fn hit(&self, _: &str, _: u64, _: Duration) -> RateDecision {
        RateDecision::Limited {
            retry_after: Duration::from_millis(1500),
        }
    }
}

#[tokio::test]
async fn operations_go_through_the_given_rate_limiter() {
    let reg = registry().with_rate_limiter(Arc::new(Closed));
    let who = principal(Tier::Enterprise);
    assert!(matches!(
        reg.admit_exec(&who).await,
        Err(CoreError::RateLimited {
            retry_after_secs: 2
        })
    ));
}

/// A Docker backend that admits every server, finds every one reachable and
/// counts the commands it runs.
#[derive(Default)]
struct Counting(AtomicUsize);

#[async_trait]
impl ExecutionBackend for Counting {
    fn kind(&self) -> ServerType {
        ServerType::Docker
    }
    async fn admit(
        &self,
        _: &ExecutionServer,
        _: &OpenConfig,
    ) -> Result<Option<SocketAddr>, ExecError> {
        Ok(None)
    }
    async fn test(&self, _: &ExecutionServer, _: &OpenConfig) -> Result<ServerTest, ExecError> {
        Ok(ServerTest {
            status: "success",
            message: "reachable".into(),
            details: Value::Null,
        })
    }
    async fn exec(
        &self,
        _: &ExecutionServer,
        _: &OpenConfig,
        _: &ExecRequest,
    ) -> Result<ExecResult, ExecError> {
        self.0.fetch_add(1, Ordering::Relaxed);
        Ok(ExecResult {
            exit_code: Some(0),
            stdout: String::new(),
            stderr: String::new(),
            truncated: false,
            timed_out: false,
            duration_ms: 1,
        })
    }
}

/// A registry over an empty store with the [`Counting`] backend for Docker servers.
fn docker_registry() -> (ServerRegistry, Arc<Counting>) {
    let backend = Arc::new(Counting::default());
    let reg = ServerRegistry::new(
        Arc::new(MemServers::new()),
        Arc::new(ToyCipher),
        vec![backend.clone()],
    );
    (reg, backend)
}

fn docker(name: &str, config: Value, is_default: bool) -> CreateServer {
    CreateServer {
        name: name.into(),
        server_type: "docker".into(),
        connection_config: config,
        workspace_path: None,
        is_default,
    }
}

fn code(e: CoreError) -> String {
    match e {
        CoreError::Conflict { code, .. } | CoreError::NotFound { code, .. } => code.into(),
        CoreError::UpgradeRequired { required, .. } => format!("upgrade to {}", required.as_str()),
        other => format!("{other:?}"),
    }
}

#[tokio::test]
async fn servers_are_the_owners_and_one_of_them_is_the_default() {
    let (reg, _) = docker_registry();
    let who = principal(Tier::Starter);
    let a = reg
        .create(&who, docker("a", json!({}), true))
        .await
        .unwrap();
    let b = reg
        .create(&who, docker("b", json!({}), false))
        .await
        .unwrap();
    let taken = reg.create(&who, docker("a", json!({}), false)).await;
    assert_eq!(code(taken.unwrap_err()), "server_name_taken");

    let ids = |v: Vec<ExecutionServer>| {
        v.into_iter()
            .map(|s| (s.id, s.is_default))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        ids(reg.list(&who).await.unwrap()),
        [(a.id, true), (b.id, false)]
    );
    reg.make_default(&who, b.id).await.unwrap();
    assert_eq!(
        ids(reg.list(&who).await.unwrap()),
        [(b.id, true), (a.id, false)]
    );
    assert_eq!(
        reg.default_server(&who).await.unwrap().map(|s| s.id),
        Some(b.id)
    );

    // A new default takes over from the old one: still exactly one.
    let c = reg
        .create(&who, docker("c", json!({}), true))
        .await
        .unwrap();
    let listed = ids(reg.list(&who).await.unwrap());
    assert_eq!(listed[0], (c.id, true));
    assert_eq!(listed.iter().filter(|(_, default)| *default).count(), 1);

    let other = principal(Tier::Enterprise);
    assert!(reg.list(&other).await.unwrap().is_empty());
    // Names are per owner: another user may use `a`.
    reg.create(&other, docker("a", json!({}), false))
        .await
        .unwrap();
    assert_eq!(
        code(reg.get(&other, a.id).await.unwrap_err()),
        "server_not_found"
    );
    assert_eq!(
        code(reg.make_default(&other, a.id).await.unwrap_err()),
        "server_not_found"
    );
    assert_eq!(
        code(reg.list(&principal(Tier::Free)).await.unwrap_err()),
        "upgrade to starter"
    );
}

#[tokio::test]
async fn a_user_may_register_up_to_the_cap() {
    let (reg, _) = docker_registry();
    let reg = reg.with_max_servers_per_user(2);
    let (who, other) = (principal(Tier::Starter), principal(Tier::Starter));
    let a = reg
        .create(&who, docker("a", json!({}), false))
        .await
        .unwrap();
    reg.create(&who, docker("b", json!({}), false))
        .await
        .unwrap();
    match reg.create(&who, docker("c", json!({}), false)).await {
        Err(CoreError::Conflict { code, message }) => {
            assert_eq!(code, "server_limit");
            assert!(
                message.contains("limit of 2 execution servers"),
                "{message}"
            );
        }
        other => panic!("expected server_limit, got {other:?}"),
    }
    assert_eq!(reg.list(&who).await.unwrap().len(), 2, "nothing stored");
    // The cap is per user.
    reg.create(&other, docker("c", json!({}), false))
        .await
        .unwrap();
    // Deleting one makes room again.
    reg.delete(&who, a.id).await.unwrap();
    reg.create(&who, docker("c", json!({}), false))
        .await
        .unwrap();
    // Zero is not a cap: at least one server.
    assert_eq!(
        registry()
            .with_max_servers_per_user(0)
            .max_servers_per_user(),
        1
    );
    assert_eq!(
        registry().max_servers_per_user(),
        DEFAULT_MAX_SERVERS_PER_USER
    );
}

#[tokio::test]
async fn an_update_keeps_masked_secrets_and_seals_new_ones() {
    let (reg, _) = docker_registry();
    let who = principal(Tier::Starter);
    let env = |token: &str| json!({"environment": {"TOKEN": token}});
    let s = reg
        .create(&who, docker("d", env("first"), false))
        .await
        .unwrap();
    assert!(
        !s.connection_config.to_string().contains("first"),
        "sealed at rest"
    );
    assert_eq!(
        mask_config(&s.connection_config)["environment"]["TOKEN"],
        MASK
    );
    let token = |s: &ExecutionServer| {
        let open = open_config(&s.connection_config, &ToyCipher).unwrap();
        open.secret("environment.TOKEN")
            .map(|t| t.expose_secret().to_string())
    };
    let update = |config: Value| UpdateServer {
        connection_config: Some(config),
        ..UpdateServer::default()
    };

    let kept = reg.update(&who, s.id, update(env(MASK))).await.unwrap();
    assert_eq!(token(&kept).as_deref(), Some("first"));
    let replaced = reg.update(&who, s.id, update(env("second"))).await.unwrap();
    assert_eq!(token(&replaced).as_deref(), Some("second"));
}

#[tokio::test]
async fn the_gate_refuses_inactive_servers_and_low_tiers() {
    let (reg, backend) = docker_registry();
    let who = principal(Tier::Starter);
    let s = reg
        .create(&who, docker("d", json!({}), true))
        .await
        .unwrap();
    let run = || ExecRequest::new(CommandSpec::Shell("true".into()), BTreeMap::new(), None, 10);

    let off = UpdateServer {
        is_active: Some(false),
        ..UpdateServer::default()
    };
    reg.update(&who, s.id, off).await.unwrap();
    let refused = reg.exec(&who, s.id, run().unwrap()).await;
    assert_eq!(code(refused.unwrap_err()), "server_inactive");
    assert_eq!(
        reg.for_orchestration(&who, None).await.unwrap(),
        None,
        "an inactive default is no default"
    );
    let free = Principal {
        tier: Tier::Free,
        ..who.clone()
    };
    let on = UpdateServer {
        is_active: Some(true),
        ..UpdateServer::default()
    };
    reg.update(&who, s.id, on).await.unwrap();
    assert_eq!(
        code(reg.exec(&free, s.id, run().unwrap()).await.unwrap_err()),
        "upgrade to starter"
    );
    assert_eq!(
        backend.0.load(Ordering::Relaxed),
        0,
        "no refused command reached the backend"
    );

    reg.exec(&who, s.id, run().unwrap()).await.unwrap();
    assert_eq!(backend.0.load(Ordering::Relaxed), 1);
    assert_eq!(reg.test(&who, s.id).await.unwrap().status, "success");
    assert_eq!(
        reg.get(&who, s.id).await.unwrap().test_status.as_deref(),
        Some("success")
    );

    // A local server runs for enterprise users only (and only where a backend offers it).
    let local = CreateServer {
        server_type: "local".into(),
        ..docker("l", json!({}), false)
    };
    let l = reg.create(&who, local).await.unwrap();
    assert_eq!(
        code(reg.exec(&who, l.id, run().unwrap()).await.unwrap_err()),
        "upgrade to enterprise"
    );
    let boss = Principal {
        tier: Tier::Enterprise,
        ..who
    };
    let missing = reg.exec(&boss, l.id, run().unwrap()).await.unwrap_err();
    assert!(
        matches!(missing, CoreError::Exec(ExecError::BackendUnavailable(_))),
        "{missing:?}"
    );
}

/// A backend of one type that is never reached.
struct Offers(ServerType);

#[async_trait]
impl ExecutionBackend for Offers {
    fn kind(&self) -> ServerType {
        self.0
    }
    async fn admit(
        &self,
        _: &ExecutionServer,
        _: &OpenConfig,
    ) -> Result<Option<SocketAddr>, ExecError> {
        Err(ExecError::BackendUnavailable("not in this test".into()))
    }
    async fn test(&self, _: &ExecutionServer, _: &OpenConfig) -> Result<ServerTest, ExecError> {
        Err(ExecError::BackendUnavailable("not in this test".into()))
    }
    async fn exec(
        &self,
        _: &ExecutionServer,
        _: &OpenConfig,
        _: &ExecRequest,
    ) -> Result<ExecResult, ExecError> {
        Err(ExecError::BackendUnavailable("not in this test".into()))
    }
}

#[tokio::test]
async fn offered_types_follow_the_backends_and_the_tier() {
    let offering = |kinds: &[ServerType]| {
        ServerRegistry::new(
            Arc::new(MemServers::new()),
            Arc::new(ToyCipher),
            kinds
                .iter()
                .map(|k| Arc::new(Offers(*k)) as Arc<dyn ExecutionBackend>)
                .collect(),
        )
    };
    let all = offering(&[
        ServerType::Local,
        ServerType::Kubernetes,
        ServerType::Ssh,
        ServerType::Docker,
    ]);
    assert!(all.offered_types(&principal(Tier::Free)).is_empty());
    assert_eq!(
        all.offered_types(&principal(Tier::Starter)),
        vec![ServerType::Ssh, ServerType::Docker, ServerType::Kubernetes],
        "local needs enterprise; the order is the pages' one"
    );
    assert_eq!(
        all.offered_types(&principal(Tier::Enterprise)),
        ServerType::ALL.to_vec()
    );
    let remote = offering(&[ServerType::Ssh, ServerType::Docker]);
    assert_eq!(
        remote.offered_types(&principal(Tier::Enterprise)),
        vec![ServerType::Ssh, ServerType::Docker],
        "no backend, no type (local execution off)"
    );
}
