//! Policies that are pure rules: where outbound connections may go.

mod target;

pub(crate) use target::in_cidr;
pub use target::{AllowRule, TargetError, TargetPolicy, special_range};
