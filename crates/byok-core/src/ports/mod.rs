//! Ports: the traits adapters implement, one file per family. Each documents the contract an
//! adapter MUST keep; the plain data types their signatures need are beside them.
//! Implementations live elsewhere: in-process ones in [`crate::services`] (`LocalRateLimiter`,
//! `NoNotifier`), the others in the adapter crates.

mod crypto;
mod execution;
mod identity;
mod invalidation;
mod keys;
mod legacy_sessions;
mod limits;
mod orchestration;
mod servers;
mod sessions;
mod settings;
mod stats;
mod tokens;
mod usage;
mod users;

pub use crypto::SecretCipher;
pub use execution::ExecutionBackend;
pub use identity::{
    Authenticator, BrowserLogin, BrowserSignIn, DirectoryAccount, ExternalAccount,
    ExternalIdentity, IdentityDirectory, TierSource, TokenVerifier,
};
pub use invalidation::{ChangeNotifier, Invalidation};
pub use keys::{CiphertextRow, KeyProber, KeyRepository, KeyRotationRepository, ProbeOutcome};
pub use legacy_sessions::{LegacySession, LegacySessions};
pub use limits::{RateDecision, RateLimiter};
pub use orchestration::{
    Orchestrator, OrchestratorError, OrchestratorEvent, OrchestratorReply, OrchestratorStream,
    OrchestratorTask, ReplyBlock,
};
pub use servers::{NewServer, ServerChanges, ServerRepository};
pub use sessions::{NewLoginLink, NewSession, SessionRepository, StoredSession};
pub use settings::SettingsRepository;
pub use stats::{AdoptionStats, ProviderMix, StatsRepository, UsageFigures};
pub use tokens::TokenRepository;
pub use usage::{UsageRepository, UsageSink};
pub use users::UserRepository;
