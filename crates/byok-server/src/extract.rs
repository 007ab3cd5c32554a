//! Management-API bodies, read without ever quoting them back.
//!
//! actix's own `web::Json` reports serde's message, which carries the offending value
//! (`invalid type: string "sk-…"`); a value can be a key sent in the wrong field. These
//! extractors read the body (bounded; a compressed body is refused with 415: a few kilobytes of
//! zstd or gzip can expand to gigabytes before any limit could apply, and these bodies are
//! small), then [`byok_core::json::from_slice`] names the field and the expected type instead.
//!
//! - [`Json<T>`]: a required JSON body.
//! - [`OptionalJson<T>`]: no body at all is `None`; a body that is there must be valid (an
//!   optional body that is wrong is never taken for an absent one).

use std::ops::Deref;

use actix_web::dev::Payload;
use actix_web::http::StatusCode;
use actix_web::http::header::{CONTENT_ENCODING, CONTENT_LENGTH};
use actix_web::{FromRequest, HttpMessage, HttpRequest, web};
use futures_util::StreamExt;
use futures_util::future::LocalBoxFuture;
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// Largest accepted JSON body on the management API.
pub const JSON_LIMIT: usize = 64 * 1024;

/// The largest body of a scope or resource (app data); [`JSON_LIMIT`] without one.
#[derive(Debug, Clone, Copy)]
pub struct JsonLimit(pub usize);

/// A JSON request body of type `T`.
#[derive(Debug)]
pub struct Json<T>(pub T);

impl<T> Json<T> {
    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T> Deref for Json<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

/// An optional JSON request body: `None` when none was sent.
#[derive(Debug)]
pub struct OptionalJson<T>(pub Option<T>);

impl<T> OptionalJson<T> {
    pub fn into_inner(self) -> Option<T> {
        self.0
    }
}

/// What a body read needs from the request, taken before the future runs.
struct BodyRead {
    limit: usize,
    is_json: bool,
    /// Sent with a `Content-Encoding` other than `identity`.
    encoded: bool,
    declared: Option<usize>,
    payload: Payload,
}

impl BodyRead {
    fn new(req: &HttpRequest, payload: &mut Payload) -> Self {
        let content_type = req.content_type().trim().to_ascii_lowercase();
        Self {
            limit: req.app_data::<JsonLimit>().map_or(JSON_LIMIT, |l| l.0),
            is_json: content_type == "application/json" || content_type.ends_with("+json"),
            declared: req
                .headers()
                .get(CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<usize>().ok()),
            encoded: req.headers().get(CONTENT_ENCODING).is_some_and(|v| {
                !v.to_str()
                    .is_ok_and(|e| e.trim().eq_ignore_ascii_case("identity"))
            }),
            payload: payload.take(),
        }
    }

    fn too_large(&self) -> ApiError {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("the body must be at most {} bytes", self.limit),
        )
    }

    /// The whole body, at most `limit` bytes.
    async fn bytes(mut self) -> Result<web::BytesMut, ApiError> {
        if self.encoded {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_content_encoding",
                "send the body uncompressed (no Content-Encoding)",
            ));
        }
        if self.declared.is_some_and(|n| n > self.limit) {
            return Err(self.too_large());
        }
        let mut body = web::BytesMut::new();
        while let Some(chunk) = self.payload.next().await {
            let chunk = chunk.map_err(|_| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_body",
                    "the body could not be read",
                )
            })?;
            if body.len() + chunk.len() > self.limit {
                return Err(self.too_large());
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }
}

fn not_json() -> ApiError {
    ApiError::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
        "send the body as application/json",
    )
}

fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    byok_core::json::from_slice::<T>(body).map_err(|p| {
        if p.syntax {
            ApiError::new(StatusCode::BAD_REQUEST, "invalid_json", p.message)
        } else {
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_request",
                format!("invalid request body: {p}"),
            )
        }
    })
}

impl<T: DeserializeOwned + 'static> FromRequest for Json<T> {
    type Error = actix_web::Error;
    type Future = LocalBoxFuture<'static, Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let read = BodyRead::new(req, payload);
        Box::pin(async move {
            if !read.is_json {
                return Err(not_json().into());
            }
            let body = read.bytes().await?;
            Ok(Json(parse(&body)?))
        })
    }
}

impl<T: DeserializeOwned + 'static> FromRequest for OptionalJson<T> {
    type Error = actix_web::Error;
    type Future = LocalBoxFuture<'static, Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let read = BodyRead::new(req, payload);
        Box::pin(async move {
            let is_json = read.is_json;
            let body = read.bytes().await?;
            if body.iter().all(u8::is_ascii_whitespace) {
                return Ok(OptionalJson(None));
            }
            if !is_json {
                return Err(not_json().into());
            }
            Ok(OptionalJson(Some(parse(&body)?)))
        })
    }
}
