//! Administration: what operators do to accounts (list, create with a sign-in link, disable
//! and enable, tier, role) and the service-wide figures they read. The console's
//! administration page and the CLI (`byok-gateway user …`) go through these same rules.
//!
//! Who may: a person with the operator role ([`Role::Operator`]), or the host's command line
//! ([`Actor::Host`]: whoever can run it holds the database and the encryption key already). An
//! operator cannot disable their own account nor take their own operator role away: they
//! would lose, in the middle of their session, the access needed to undo it, and the service
//! could be left with no operator at all. Another operator, or the command line, can.

use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::domain::{Role, Tier, User, UserId};
use crate::error::CoreError;
use crate::ports::{AdoptionStats, StatsRepository, UsageFigures};
use crate::services::sessions::{IssuedLink, SessionService};
use crate::services::tokens::TokenService;

/// Users listed per page.
pub const USERS_PER_PAGE: u64 = 50;

/// Longest window of the service figures, in days.
pub const MAX_FIGURE_DAYS: u32 = 366;

/// Who asks for an administrative action.
#[derive(Debug, Clone, Copy)]
pub enum Actor<'a> {
    /// The host's command line.
    Host,
    /// A signed-in person (they must hold the operator role).
    Person(&'a User),
}

/// One page of users, in email order.
#[derive(Debug, Clone)]
pub struct UserPage {
    pub users: Vec<User>,
    /// 1-based.
    pub page: u64,
    /// At least 1.
    pub pages: u64,
    pub total: u64,
}

/// A user just created, and their first single-use sign-in link (shown once).
#[derive(Debug)]
pub struct CreatedUser {
    pub user: User,
    pub link: IssuedLink,
}

/// The service's figures: BYOK adoption now, and the gateway's usage over a window.
#[derive(Debug, Clone)]
pub struct ServiceFigures {
    pub adoption: AdoptionStats,
    pub usage: UsageFigures,
    /// Start of the usage window.
    pub since: DateTime<Utc>,
    pub days: u32,
}

/// Account administration and the service figures (see the module documentation).
#[derive(Clone)]
pub struct Administration {
    tokens: Arc<TokenService>,
    sessions: SessionService,
    stats: Arc<dyn StatsRepository>,
}

impl std::fmt::Debug for Administration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Administration").finish_non_exhaustive()
    }
}

fn user_not_found() -> CoreError {
    CoreError::NotFound {
        code: "user_not_found",
        message: "no such user".into(),
    }
}

impl Administration {
    /// Accounts through `tokens` (users, tier and disabled flag with their caches) and
    /// `sessions` (sign-in links, ending sessions); figures from `stats`.
    pub fn new(
        tokens: Arc<TokenService>,
        sessions: SessionService,
        stats: Arc<dyn StatsRepository>,
    ) -> Self {
        Self {
            tokens,
            sessions,
            stats,
        }
    }

    /// `Ok` for the host and for operators; `Forbidden` (`operator_required`) for anyone else.
    pub fn authorize(&self, by: Actor<'_>) -> Result<(), CoreError> {
        match by {
            Actor::Host => Ok(()),
            Actor::Person(u) if u.role == Role::Operator && u.is_active() => Ok(()),
            Actor::Person(_) => Err(CoreError::Forbidden {
                code: "operator_required",
                message: "administration is for operators; an operator can give you the role \
                          (byok-gateway user set-role)"
                    .into(),
            }),
        }
    }

    /// Page `page` (1-based; past the end: the last page) of [`USERS_PER_PAGE`] users.
    pub async fn users(&self, by: Actor<'_>, page: u64) -> Result<UserPage, CoreError> {
        self.authorize(by)?;
        let repo = self.tokens.users();
        let total = repo.count().await?;
        let pages = total.div_ceil(USERS_PER_PAGE).max(1);
        let page = page.clamp(1, pages);
        let users = repo
            .list_users((page - 1) * USERS_PER_PAGE, USERS_PER_PAGE)
            .await?;
        Ok(UserPage {
            users,
            page,
            pages,
            total,
        })
    }

    /// One user.
    pub async fn user(&self, by: Actor<'_>, id: UserId) -> Result<User, CoreError> {
        self.authorize(by)?;
        self.tokens
            .users()
            .get(id)
            .await?
            .ok_or_else(user_not_found)
    }

    /// The user with this email (normalised first).
    pub async fn find(&self, by: Actor<'_>, email: &str) -> Result<User, CoreError> {
        self.authorize(by)?;
        let email = crate::domain::normalize_email(email)?;
        self.tokens
            .users()
            .find_by_email(&email)
            .await?
            .ok_or_else(user_not_found)
    }

    /// Creates a local user of `tier` and their first sign-in link. `user_exists` (409) when
    /// the email is taken.
    pub async fn create_user(
        &self,
        by: Actor<'_>,
        email: &str,
        tier: Tier,
    ) -> Result<CreatedUser, CoreError> {
        self.authorize(by)?;
        let user = self.tokens.create_user(email, tier).await?;
        let link = self.sessions.issue_link(user.id).await?;
        tracing::info!(user_id = %user.id, tier = tier.as_str(), "user created by an operator");
        Ok(CreatedUser { user, link })
    }

    /// A new single-use sign-in link for an active user.
    pub async fn sign_in_link(&self, by: Actor<'_>, id: UserId) -> Result<IssuedLink, CoreError> {
        self.authorize(by)?;
        self.sessions.issue_link(id).await
    }

    /// Disables an account (its gateway tokens, sign-in links and console sessions stop
    /// working: the tokens at once here and through the change notifier elsewhere, the
    /// sessions are deleted) and returns how many sessions ended; or enables it again (0).
    /// An operator cannot disable themself (`own_account`).
    pub async fn set_disabled(
        &self,
        by: Actor<'_>,
        id: UserId,
        disabled: bool,
    ) -> Result<u64, CoreError> {
        self.authorize(by)?;
        if disabled
            && let Actor::Person(me) = by
            && me.id == id
        {
            return Err(own_account(
                "you cannot disable your own account: you would be signed out with no way \
                 back in; another operator, or byok-gateway user disable, can",
            ));
        }
        if !self.tokens.set_disabled(id, disabled).await? {
            return Err(user_not_found());
        }
        let ended = if disabled {
            self.sessions.end_all(id).await?
        } else {
            0
        };
        tracing::info!(user_id = %id, disabled, sessions_ended = ended, "account state changed");
        Ok(ended)
    }

    /// Changes a user's tier (effective at once here, through the notifier elsewhere).
    pub async fn set_tier(&self, by: Actor<'_>, id: UserId, tier: Tier) -> Result<(), CoreError> {
        self.authorize(by)?;
        if !self.tokens.set_tier(id, tier).await? {
            return Err(user_not_found());
        }
        tracing::info!(user_id = %id, tier = tier.as_str(), "tier changed");
        Ok(())
    }

    /// Changes a user's role (read at every console request: effective at once). An operator
    /// cannot take their own operator role away (`own_account`).
    pub async fn set_role(&self, by: Actor<'_>, id: UserId, role: Role) -> Result<(), CoreError> {
        self.authorize(by)?;
        if role != Role::Operator
            && let Actor::Person(me) = by
            && me.id == id
        {
            return Err(own_account(
                "you cannot remove your own operator role: you would lose this page in the \
                 middle of your session, and the service could be left without an operator; \
                 another operator, or byok-gateway user set-role, can",
            ));
        }
        if !self.tokens.users().set_role(id, role).await? {
            return Err(user_not_found());
        }
        tracing::info!(user_id = %id, role = role.as_str(), "role changed");
        Ok(())
    }

    /// BYOK adoption now and the gateway's usage over the last `days` UTC days, today
    /// included (1 to [`MAX_FIGURE_DAYS`]), as the usage page counts them.
    pub async fn figures(&self, by: Actor<'_>, days: u32) -> Result<ServiceFigures, CoreError> {
        self.authorize(by)?;
        let days = days.clamp(1, MAX_FIGURE_DAYS);
        let today = Utc::now().date_naive();
        let since = today
            .checked_sub_days(chrono::Days::new(u64::from(days - 1)))
            .unwrap_or(today)
            .and_time(chrono::NaiveTime::MIN)
            .and_utc();
        let adoption = self.stats.adoption_stats().await?;
        let usage = self.stats.usage_figures(since).await?;
        Ok(ServiceFigures {
            adoption,
            usage,
            since,
            days,
        })
    }
}

fn own_account(message: &str) -> CoreError {
    CoreError::Forbidden {
        code: "own_account",
        message: message.into(),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use secrecy::SecretString;

    use super::*;
    use crate::domain::{CredentialKind, ProviderId, UsageRecord};
    use crate::ports::UserRepository;
    use crate::services::SessionPolicy;
    use crate::testing::{MemStats, MemUsers};

    struct Fixture {
        admin: Administration,
        sessions: SessionService,
        mem: Arc<MemUsers>,
        stats: Arc<MemStats>,
    }

    fn fixture() -> Fixture {
        let mem = Arc::new(MemUsers::new());
        let tokens = Arc::new(TokenService::new(
            mem.clone(),
            mem.clone(),
            Duration::from_secs(5),
        ));
        let sessions = SessionService::new(mem.clone(), mem.clone(), SessionPolicy::default());
        let stats = Arc::new(MemStats::new());
        Fixture {
            admin: Administration::new(tokens, sessions.clone(), stats.clone()),
            sessions,
            mem,
            stats,
        }
    }

    async fn person(mem: &MemUsers, email: &str, role: Role) -> User {
        let u = UserRepository::create(mem, email, Tier::Starter)
            .await
            .unwrap();
        mem.set_role(u.id, role).await.unwrap();
        mem.get(u.id).await.unwrap().unwrap()
    }

    #[tokio::test]
    async fn only_operators_and_the_host_administer() {
        let f = fixture();
        let plain = person(&f.mem, "user@example.com", Role::User).await;
        let op = person(&f.mem, "op@example.com", Role::Operator).await;
        let refused = f.admin.users(Actor::Person(&plain), 1).await.unwrap_err();
        assert!(matches!(
            refused,
            CoreError::Forbidden {
                code: "operator_required",
                ..
            }
        ));
        assert!(
            f.admin
                .set_tier(Actor::Person(&plain), plain.id, Tier::Enterprise)
                .await
                .is_err()
        );
        let page = f.admin.users(Actor::Person(&op), 1).await.unwrap();
        assert_eq!((page.total, page.pages, page.users.len()), (2, 1, 2));
        assert_eq!(f.admin.users(Actor::Host, 9).await.unwrap().page, 1);
    }

    #[tokio::test]
    async fn a_created_user_gets_a_link_and_disabling_ends_their_sessions() {
        let f = fixture();
        let op = person(&f.mem, "op@example.com", Role::Operator).await;
        let made = f
            .admin
            .create_user(Actor::Person(&op), " New@Example.com ", Tier::Free)
            .await
            .unwrap();
        assert_eq!(made.user.email, "new@example.com");
        let opened = f.sessions.redeem_link(&made.link.secret).await.unwrap();
        assert!(f.sessions.authenticate(&opened.cookie).await.is_ok());
        let again = f
            .admin
            .create_user(Actor::Person(&op), "new@example.com", Tier::Free)
            .await
            .unwrap_err();
        assert!(matches!(
            again,
            CoreError::Conflict {
                code: "user_exists",
                ..
            }
        ));

        let ended = f
            .admin
            .set_disabled(Actor::Person(&op), made.user.id, true)
            .await
            .unwrap();
        assert_eq!(ended, 1);
        assert!(f.sessions.authenticate(&opened.cookie).await.is_err());
        assert!(
            f.admin
                .sign_in_link(Actor::Person(&op), made.user.id)
                .await
                .is_err()
        );
        f.admin
            .set_disabled(Actor::Host, made.user.id, false)
            .await
            .unwrap();
        let link = f
            .admin
            .sign_in_link(Actor::Person(&op), made.user.id)
            .await
            .unwrap();
        assert!(f.sessions.redeem_link(&link.secret).await.is_ok());
        let bogus = SecretString::from("nope");
        assert!(f.sessions.redeem_link(&bogus).await.is_err());
    }

    #[tokio::test]
    async fn an_operator_keeps_their_own_account_and_role() {
        let f = fixture();
        let op = person(&f.mem, "op@example.com", Role::Operator).await;
        let other = person(&f.mem, "op2@example.com", Role::Operator).await;
        for e in [
            f.admin
                .set_disabled(Actor::Person(&op), op.id, true)
                .await
                .unwrap_err(),
            f.admin
                .set_role(Actor::Person(&op), op.id, Role::User)
                .await
                .unwrap_err(),
        ] {
            assert!(matches!(
                e,
                CoreError::Forbidden {
                    code: "own_account",
                    ..
                }
            ));
        }
        // Another operator can; so can the host.
        f.admin
            .set_role(Actor::Person(&other), op.id, Role::User)
            .await
            .unwrap();
        assert_eq!(f.mem.get(op.id).await.unwrap().unwrap().role, Role::User);
        f.admin
            .set_disabled(Actor::Host, other.id, true)
            .await
            .unwrap();
        // A disabled operator administers nothing.
        let disabled = f.mem.get(other.id).await.unwrap().unwrap();
        assert!(f.admin.users(Actor::Person(&disabled), 1).await.is_err());
    }

    #[tokio::test]
    async fn tier_changes_and_unknown_users() {
        let f = fixture();
        let u = person(&f.mem, "u@example.com", Role::User).await;
        f.admin
            .set_tier(Actor::Host, u.id, Tier::Professional)
            .await
            .unwrap();
        assert_eq!(
            f.mem.get(u.id).await.unwrap().unwrap().tier,
            Tier::Professional
        );
        let nobody = UserId::new_random();
        for e in [
            f.admin
                .set_tier(Actor::Host, nobody, Tier::Free)
                .await
                .unwrap_err(),
            f.admin
                .set_disabled(Actor::Host, nobody, true)
                .await
                .unwrap_err(),
            f.admin
                .set_role(Actor::Host, nobody, Role::User)
                .await
                .unwrap_err(),
        ] {
            assert!(matches!(
                e,
                CoreError::NotFound {
                    code: "user_not_found",
                    ..
                }
            ));
        }
    }

    #[tokio::test]
    async fn figures_count_the_window() {
        let f = fixture();
        let user = UserId::new_random();
        let rec = |credential, fallback, days_ago: i64, status| UsageRecord {
            id: uuid::Uuid::new_v4(),
            user_id: user,
            provider: ProviderId::Openai,
            model: "m".into(),
            credential,
            status,
            input_tokens: 1,
            output_tokens: 1,
            latency_ms: 1,
            at: Utc::now() - chrono::TimeDelta::days(days_ago),
            fallback,
        };
        f.stats.record(rec(CredentialKind::User, false, 1, 429));
        f.stats.record(rec(CredentialKind::System, true, 1, 200));
        f.stats.record(rec(CredentialKind::User, false, 40, 200));
        let figures = f.admin.figures(Actor::Host, 30).await.unwrap();
        assert_eq!(figures.usage.requests, 2);
        assert_eq!(figures.usage.fallbacks, 1);
        assert_eq!(figures.usage.errors, 1);
        assert_eq!(figures.usage.byok_users, 1);
        assert_eq!(figures.days, 30);
    }
}
