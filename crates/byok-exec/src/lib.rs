#![doc = include_str!("../README.md")]

mod docker;
mod kubernetes;
mod local;
mod ssh;
mod target;
mod tls;

pub use docker::{DockerBackend, DockerOptions, MANAGED_LABEL, docker_client};
pub use kubernetes::KubernetesBackend;
pub use local::{LocalBackend, LocalSandbox};
pub use ssh::{SshBackend, SshOptions};
