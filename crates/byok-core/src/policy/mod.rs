//! Policies that are pure rules: where outbound connections may go.

mod target;

pub use target::{AllowRule, TargetError, TargetPolicy, special_range};
