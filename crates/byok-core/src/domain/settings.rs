//! A user's gateway settings.

use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::CoreError;

/// What happens when a user's own key fails upstream with 401, 403 or 429.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FallbackPolicy {
    /// Return the provider's error (the default: the platform's credit is never spent silently).
    #[default]
    UserOnly,
    /// Retry once on the system default, before any byte reached the client.
    UserThenSystem,
}

impl FallbackPolicy {
    /// The snake_case name (`user_then_system`), as stored and sent.
    pub fn as_str(self) -> &'static str {
        match self {
            FallbackPolicy::UserOnly => "user_only",
            FallbackPolicy::UserThenSystem => "user_then_system",
        }
    }
}

impl FromStr for FallbackPolicy {
    type Err = CoreError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "user_only" => Ok(Self::UserOnly),
            "user_then_system" => Ok(Self::UserThenSystem),
            _ => Err(CoreError::invalid(
                "invalid_fallback_policy",
                "fallback_policy must be user_only or user_then_system",
            )),
        }
    }
}

/// A user's gateway settings.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserSettings {
    pub fallback_policy: FallbackPolicy,
}
