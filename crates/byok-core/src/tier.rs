//! The subscription tier: a leaf module (no other module of the crate), so that
//! [`crate::error::CoreError`] can name tiers without an import cycle. The rules that answer
//! with a [`crate::error::CoreError`] (`Tier::require`, parsing) are in `domain/users.rs`
//! (re-exported by [`crate::domain`]).

use std::fmt;

use serde::{Deserialize, Serialize};

/// Subscription tier. Ordered: `trial` = `free` < `starter` < `professional` < `enterprise`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    Trial,
    Free,
    Starter,
    Professional,
    Enterprise,
}

impl Tier {
    /// The tier every BYOK operation (storing, testing and using one's own keys) needs.
    pub const BYOK_MINIMUM: Tier = Tier::Starter;

    /// Every tier, lowest first.
    pub const ALL: [Tier; 5] = [
        Tier::Trial,
        Tier::Free,
        Tier::Starter,
        Tier::Professional,
        Tier::Enterprise,
    ];

    fn rank(self) -> u8 {
        match self {
            Tier::Trial | Tier::Free => 0,
            Tier::Starter => 1,
            Tier::Professional => 2,
            Tier::Enterprise => 3,
        }
    }

    /// Whether this tier is at least `required`.
    pub fn allows(self, required: Tier) -> bool {
        self.rank() >= required.rank()
    }

    /// The lowercase name (`starter`), as stored and sent.
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Trial => "trial",
            Tier::Free => "free",
            Tier::Starter => "starter",
            Tier::Professional => "professional",
            Tier::Enterprise => "enterprise",
        }
    }
}

impl fmt::Display for Tier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
