#![doc = include_str!("../README.md")]

mod local;
mod ssh;

pub use local::LocalBackend;
pub use ssh::{SshBackend, SshOptions};
