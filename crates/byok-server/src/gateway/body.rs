//! What the gateway holds while a request is served: guards that live as long as a response
//! body, the process-wide budget of bytes buffered (request bodies, and answers that must be
//! whole to be translated), and capped reads of request and upstream bodies.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use actix_web::HttpResponse;
use actix_web::body::{BodySize, BoxBody, MessageBody};
use actix_web::web::Bytes;
use byok_providers::upstream::UpstreamResponse;
use futures_util::StreamExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// A response body that keeps `_hold` (a request slot, a budget charge) until it has been
/// sent or dropped (the client went away).
pub(crate) struct Held<T> {
    body: BoxBody,
    _hold: T,
}

impl<T> Held<T> {
    pub(crate) fn new(body: BoxBody, hold: T) -> Self {
        Self { body, _hold: hold }
    }
}

impl<T: Unpin> MessageBody for Held<T> {
    type Error = Box<dyn std::error::Error>;

    fn size(&self) -> BodySize {
        self.body.size()
    }

    fn poll_next(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, Self::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_next(cx)
    }
}

/// Keeps `hold` while the response body streams; a body already in memory gives it back at
/// once (the work it stood for is done).
pub(crate) fn hold_while_streaming<T: Unpin + 'static>(
    resp: HttpResponse,
    hold: T,
) -> HttpResponse {
    resp.map_body(|_, body| {
        if matches!(body.size(), BodySize::None) {
            return body;
        }
        match body.try_into_bytes() {
            Ok(bytes) => BoxBody::new(bytes),
            Err(body) => BoxBody::new(Held::new(body, hold)),
        }
    })
}

/// Why a body could not be buffered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// Over the per-answer cap, or more than the whole budget could ever hold.
    TooLarge,
    /// The budget is spent by other requests at the moment.
    Busy,
    /// The upstream connection failed.
    Broken,
}

/// The bytes buffered at once across all requests, in KiB (`BYOK_RESPONSE_BUFFER_BUDGET_MB`):
/// request bodies as they are read (and their parsed and translated copies), and answers that
/// must be whole to be translated; plus the cap of one such answer.
#[derive(Debug)]
pub struct ResponseBudget {
    kib: Arc<Semaphore>,
    total_kib: usize,
    max_body: usize,
}

impl ResponseBudget {
    /// `max_body`: largest answer buffered; `total`: bytes buffered at once, all requests.
    pub fn new(max_body: usize, total: usize) -> Self {
        let total_kib = total.div_ceil(1024).clamp(1, Semaphore::MAX_PERMITS);
        Self {
            kib: Arc::new(Semaphore::new(total_kib)),
            total_kib,
            max_body,
        }
    }

    pub fn max_body(&self) -> usize {
        self.max_body
    }

    /// KiB currently free.
    pub fn available_kib(&self) -> usize {
        self.kib.available_permits()
    }

    pub(crate) fn charge(&self) -> Charge {
        Charge {
            kib: self.kib.clone(),
            total_kib: self.total_kib,
            permit: None,
        }
    }
}

/// Part of the budget held by one request; given back when dropped.
#[derive(Debug)]
pub(crate) struct Charge {
    kib: Arc<Semaphore>,
    total_kib: usize,
    permit: Option<OwnedSemaphorePermit>,
}

impl Charge {
    fn held_kib(&self) -> usize {
        self.permit
            .as_ref()
            .map_or(0, OwnedSemaphorePermit::num_permits)
    }

    /// Raises the charge to cover `bytes` (never waits).
    pub(crate) fn cover(&mut self, bytes: usize) -> Result<(), Refusal> {
        let need = bytes.div_ceil(1024);
        let held = self.held_kib();
        if need <= held {
            return Ok(());
        }
        if need > self.total_kib {
            return Err(Refusal::TooLarge);
        }
        let more = u32::try_from(need - held).map_err(|_| Refusal::TooLarge)?;
        let permit = self
            .kib
            .clone()
            .try_acquire_many_owned(more)
            .map_err(|_| Refusal::Busy)?;
        match &mut self.permit {
            Some(p) => p.merge(permit),
            None => self.permit = Some(permit),
        }
        Ok(())
    }

    /// Gives back what is above `bytes`.
    pub(crate) fn shrink_to(&mut self, bytes: usize) {
        let keep = bytes.div_ceil(1024);
        if let Some(p) = &mut self.permit {
            let extra = p.num_permits().saturating_sub(keep);
            if extra > 0 {
                drop(p.split(extra));
            }
        }
    }
}

/// What parsing `json` into a `serde_json::Value` and serialising a translated copy costs
/// beyond its bytes: the tree (`VALUE_COST` per JSON value) and a copy of about its size,
/// twice over for slack. One pass over the bytes; only paid where a body is parsed whole.
pub(crate) fn parse_cost(json: &[u8]) -> usize {
    let mut scanner = byok_providers::usage::UsageScanner::new();
    scanner.feed(json);
    json.len()
        .saturating_mul(2)
        .saturating_add(VALUE_COST.saturating_mul(scanner.structure() as usize))
}

/// What a JSON value costs once parsed, beyond its bytes (a `serde_json::Value` is 32 bytes,
/// plus its slot in an array or a map node and a key).
pub(crate) const VALUE_COST: usize = 64;

/// Reads a request body up to `limit` bytes, charging `charge` for the memory it takes as it
/// grows (the announced length at once, else by doubling), so that all requests together never
/// hold more than the budget. Never waits for the budget: a spent budget is refused at once.
pub(crate) async fn read_request(
    mut payload: actix_web::web::Payload,
    announced: Option<usize>,
    limit: usize,
    charge: &mut Charge,
) -> Result<Bytes, RequestRefusal> {
    if announced.is_some_and(|n| n > limit) {
        return Err(RequestRefusal::OverLimit);
    }
    let mut out: Vec<u8> = Vec::new();
    if let Some(n) = announced {
        charge.cover(n).map_err(RequestRefusal::Budget)?;
        out.reserve_exact(n);
    }
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|_| RequestRefusal::Broken)?;
        let len = out.len() + chunk.len();
        if len > limit {
            return Err(RequestRefusal::OverLimit);
        }
        if len > out.capacity() {
            let target = len
                .max(out.capacity().saturating_mul(2))
                .max(8 * 1024)
                .min(limit);
            charge.cover(target).map_err(RequestRefusal::Budget)?;
            out.reserve_exact(target - out.len());
        }
        out.extend_from_slice(&chunk);
    }
    Ok(Bytes::from(out))
}

/// Why a request body was not read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RequestRefusal {
    /// Over `BYOK_MAX_BODY_BYTES`.
    OverLimit,
    /// The buffer budget is spent ([`Refusal::Busy`]) or too small for it ([`Refusal::TooLarge`]).
    Budget(Refusal),
    /// The client's connection failed.
    Broken,
}

/// At most `limit` bytes of a body (the rest is not read); for error bodies.
pub(crate) async fn read_limited(resp: UpstreamResponse, limit: usize) -> Vec<u8> {
    let mut out = Vec::new();
    let mut stream = resp.bytes_stream();
    while let Some(Ok(chunk)) = stream.next().await {
        let room = limit.saturating_sub(out.len());
        out.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if out.len() >= limit {
            break;
        }
    }
    out
}

/// The whole body, or `None` when it fails or exceeds `limit`; for small answers.
pub(crate) async fn read_small(resp: UpstreamResponse, limit: usize) -> Option<Bytes> {
    if resp.content_length().is_some_and(|n| n > limit as u64) {
        return None;
    }
    let mut out = Vec::new();
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.ok()?;
        if out.len() + chunk.len() > limit {
            return None;
        }
        out.extend_from_slice(&chunk);
    }
    Some(Bytes::from(out))
}

/// Reads a whole body under the per-answer cap, charging the budget for the memory it takes
/// as it grows. Every chunk goes through `observe` as well.
pub(crate) async fn read_budgeted(
    resp: UpstreamResponse,
    budget: &ResponseBudget,
    charge: &mut Charge,
    mut observe: impl FnMut(&[u8]),
) -> Result<Vec<u8>, Refusal> {
    let cap = budget.max_body;
    let announced = resp.content_length();
    if announced.is_some_and(|n| n > cap as u64) {
        return Err(Refusal::TooLarge);
    }
    let mut out: Vec<u8> = Vec::new();
    if let Some(n) = announced {
        // Announced and within the cap: one allocation of the right size.
        let n = n as usize;
        charge.cover(n)?;
        out.reserve_exact(n);
    }
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|_| Refusal::Broken)?;
        let len = out.len() + chunk.len();
        if len > cap {
            return Err(Refusal::TooLarge);
        }
        if len > out.capacity() {
            // Grows by doubling (up to the cap), the new capacity charged before it is taken.
            let target = len
                .max(out.capacity().saturating_mul(2))
                .max(8 * 1024)
                .min(cap);
            charge.cover(target)?;
            out.reserve_exact(target - out.len());
        }
        observe(&chunk);
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charges_grow_refuse_and_give_back() {
        let budget = ResponseBudget::new(1 << 20, 64 * 1024);
        let mut a = budget.charge();
        a.cover(10_000).unwrap();
        assert_eq!(budget.available_kib(), 64 - 10);
        a.cover(5_000).unwrap();
        assert_eq!(budget.available_kib(), 54, "already covered");
        let mut b = budget.charge();
        assert_eq!(b.cover(60 * 1024), Err(Refusal::Busy));
        assert_eq!(b.cover(65 * 1024), Err(Refusal::TooLarge), "never fits");
        b.cover(54 * 1024).unwrap();
        assert_eq!(budget.available_kib(), 0);
        b.shrink_to(4 * 1024);
        assert_eq!(budget.available_kib(), 50);
        drop((a, b));
        assert_eq!(budget.available_kib(), 64);
    }
}
