#![doc = include_str!("../README.md")]

mod catalogue;
pub mod net;
mod probe;
pub mod redact;
pub mod sse;
pub mod stream;
pub mod translate;
pub mod upstream;
pub mod usage;

pub use catalogue::{AuthStyle, Catalogue, ChatWire, ProbeSpec, ProviderSpec};
pub use probe::{HttpKeyProber, ProbeOptions};
