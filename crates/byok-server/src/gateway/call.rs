//! The request as the handler parsed it, which every step of an attempt reads.

use std::time::Instant;

use actix_web::web::Bytes;
use byok_core::Principal;

use super::errors::Ingress;

/// The request as the handler parsed it.
#[derive(Debug)]
pub struct Call<'a> {
    pub ingress: Ingress,
    pub who: &'a Principal,
    pub requested_model: &'a str,
    pub stream: bool,
    /// OpenAI clients' `stream_options.include_usage`.
    pub include_usage: bool,
    pub body: &'a Bytes,
    pub anthropic_version: Option<String>,
    pub anthropic_beta: Option<String>,
    /// W3C `traceparent` for the upstream call (this request as the parent).
    pub traceparent: Option<String>,
    /// The id the request is logged under: what a user quotes to the operator.
    pub request_id: String,
    pub started: Instant,
}
