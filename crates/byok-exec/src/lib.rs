#![doc = include_str!("../README.md")]

mod docker;
mod local;
mod ssh;

pub use docker::{DockerBackend, DockerOptions, MANAGED_LABEL, docker_client};
pub use local::LocalBackend;
pub use ssh::{SshBackend, SshOptions};
