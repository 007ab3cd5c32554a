//! Tests of the execution-server registry ([`ServerRegistry`]), over the in-memory store.

use super::*;

use async_trait::async_trait;
use std::time::SystemTime;

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
