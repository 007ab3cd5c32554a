#![doc = include_str!("../README.md")]

mod catalogue;
mod probe;

pub use catalogue::{AuthStyle, Catalogue, ProbeSpec, ProviderSpec, WireFormat};
pub use probe::{HttpKeyProber, ProbeOptions};
