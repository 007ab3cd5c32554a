//! One attempt to serve a request on one route: build the upstream request (pass-through or
//! translated), send it, and turn the answer into the client's response.

use std::time::Instant;

use actix_web::HttpResponse;
use byok_core::CredentialKind;
use byok_core::services::Route;

use super::body::{self, Charge};
use super::call::Call;
use super::errors::GatewayError;
use super::request::{headers_for, upstream_body, wire_of};
use super::respond::{pass_through, stream_response, translated_response};
use super::upstream::{MAX_ERROR_BODY, from_upstream_status, upstream_error};
use crate::state::AppState;

/// What one attempt produced.
#[derive(Debug)]
pub enum Attempt {
    /// A response for the client (success, or an error not worth a fallback).
    Done(HttpResponse),
    /// The user's key failed with 401/403/429 before anything reached the client.
    Retryable(GatewayError),
}

/// Tries `route`. Errors before anything was sent to the client come back as `Err` (or as
/// `Retryable` for a user key that may fall back).
pub async fn attempt(
    state: &AppState,
    call: &Call<'_>,
    route: &Route,
    charge: &mut Charge,
) -> Result<Attempt, GatewayError> {
    let target = state
        .upstream
        .target(
            route.provider,
            route.endpoint.as_deref(),
            route.credential == CredentialKind::System,
        )
        .map_err(GatewayError::from)?;
    let body = upstream_body(call, route, &target, charge)?;
    let headers = headers_for(call, &target);
    let provider_name = route.provider.display_name();
    let sent = Instant::now();
    let resp = state
        .upstream
        .post(
            &target,
            target.url(),
            route.api_key.as_ref(),
            &headers,
            body,
            call.stream,
        )
        .await
        .map_err(|e| upstream_error(e, provider_name))?;
    state
        .metrics
        .upstream_seconds
        .with_label_values(&[route.provider.as_str()])
        .observe(sent.elapsed().as_secs_f64());
    let status = resp.status().as_u16();
    if !(200..300).contains(&status) {
        let retry_after = resp
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = body::read_limited(resp, MAX_ERROR_BODY).await;
        let err = from_upstream_status(status, &body, retry_after, route, &call.request_id);
        if route.credential == CredentialKind::User
            && byok_core::services::is_fallback_status(status)
        {
            return Ok(Attempt::Retryable(err));
        }
        return Err(err);
    }
    let same_wire = wire_of(call.ingress) == target.wire;
    if call.stream {
        return Ok(Attempt::Done(stream_response(
            state, call, route, resp, same_wire,
        )));
    }
    if same_wire {
        return Ok(Attempt::Done(pass_through(state, call, route, resp)));
    }
    translated_response(state, call, route, resp)
        .await
        .map(Attempt::Done)
}
