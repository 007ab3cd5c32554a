//! Services: the business rules, written against the ports.

mod admin;
mod cache;
mod identity;
mod import;
mod invalidation;
mod legacy_sessions;
mod limits;
mod orchestration;
mod rotation;
mod routes;
mod servers;
mod sessions;
mod tokens;
mod vault;

pub use admin::{
    Actor, Administration, CreatedUser, MAX_FIGURE_DAYS, ServiceFigures, USERS_PER_PAGE, UserPage,
};
pub use cache::{DEFAULT_STALE_IF_ERROR, StaleIfError, StaleKind};
pub use identity::{ChainAuthenticator, ExternalAuthenticator, external_user_id};
pub use import::{ImportReport, LegacyKey, import_legacy_keys};
pub use invalidation::{CacheStats, NoNotifier};
pub use legacy_sessions::{DEFAULT_LEGACY_SESSION_TTL, LegacySessionAuthenticator};
pub use limits::{
    ConcurrencyLimit, InFlight, LocalRateLimiter, RateLimits, decide as rate_decision, window_of,
};
pub use orchestration::{
    EXECUTION_SERVER_HEADER, LlmTarget, ORCHESTRATION_HEADER, ORCHESTRATION_PREFIX, build_task,
    conversation_history, infer_task_type, orchestration_requested, strip_orchestration_prefix,
};
pub use rotation::{RotationReport, rotate_all, rotate_servers};
pub use routes::{
    ReachableModel, Resolution, Route, RouteResolver, RouteSummary, SystemDefault,
    is_fallback_status,
};
pub use servers::{
    CHECKED_ADDRESS_FIELD, CreateServer, DEFAULT_MAX_SERVERS_PER_USER, EXEC_PER_MINUTE,
    MAX_IN_FLIGHT_PER_USER, ServerRegistry, UpdateServer,
};
pub use sessions::{
    ConsoleUser, IssuedLink, OpenedSession, SessionPolicy, SessionService, constant_time_eq,
};
pub use tokens::{IssuedToken, TokenAuthenticator, TokenService, hash_token};
pub use vault::{
    AddKey, DEFAULT_CREDENTIAL_TTL, KeySummary, KeyVault, KeyVaultStats, MAX_ENDPOINT_LEN,
    MAX_LABEL_CHARS, ProviderSummary, UserCredential, validate_endpoint,
};
