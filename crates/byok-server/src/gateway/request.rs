//! The request for the provider: the client's body passed through (the model renamed, usage
//! asked for) or translated to the other API, and the headers that go with it.

use actix_web::http::StatusCode;
use actix_web::web::Bytes;
use byok_core::services::Route;
use byok_providers::ChatWire;
use byok_providers::translate;
use byok_providers::upstream::ChatTarget;
use serde_json::Value;

use super::body::Charge;
use super::call::Call;
use super::errors::{GatewayError, Ingress};

pub(super) fn wire_of(ingress: Ingress) -> ChatWire {
    match ingress {
        Ingress::Anthropic => ChatWire::Anthropic,
        Ingress::OpenAi => ChatWire::OpenAi,
    }
}

/// Replaces the top-level `model` of a JSON object without touching any other byte of the
/// other members.
pub fn rewrite_model(body: &[u8], model: &str) -> Result<Vec<u8>, GatewayError> {
    rewrite_members(body, Some(model), false)
}

/// Rewrites top-level members: `model` when given; with `ask_usage`, `stream_options` gains
/// `include_usage: true` (so the gateway can record a stream's usage). Every other member is
/// copied byte for byte.
pub fn rewrite_members(
    body: &[u8],
    model: Option<&str>,
    ask_usage: bool,
) -> Result<Vec<u8>, GatewayError> {
    let members: std::collections::BTreeMap<String, &serde_json::value::RawValue> =
        serde_json::from_slice(body)
            .map_err(|_| GatewayError::invalid("the body is not a JSON object"))?;
    let mut out = Vec::with_capacity(body.len() + 64);
    out.push(b'{');
    let mut first = true;
    let mut put = |out: &mut Vec<u8>, k: &str, v: &[u8]| {
        if !first {
            out.push(b',');
        }
        first = false;
        out.extend_from_slice(serde_json::to_string(k).unwrap_or_default().as_bytes());
        out.push(b':');
        out.extend_from_slice(v);
    };
    for (k, v) in &members {
        match (k.as_str(), model) {
            ("model", Some(m)) => put(
                &mut out,
                k,
                serde_json::to_string(m).unwrap_or_default().as_bytes(),
            ),
            ("stream_options", _) if ask_usage => {
                let mut opts: serde_json::Map<String, Value> =
                    serde_json::from_str(v.get()).unwrap_or_default();
                opts.insert("include_usage".into(), Value::Bool(true));
                put(&mut out, k, Value::Object(opts).to_string().as_bytes());
            }
            _ => put(&mut out, k, v.get().as_bytes()),
        }
    }
    if ask_usage && !members.contains_key("stream_options") {
        put(&mut out, "stream_options", br#"{"include_usage":true}"#);
    }
    out.push(b'}');
    Ok(out)
}

/// The body for the provider. A copy (rewritten or translated) is charged to the request's
/// part of the buffer budget first: the copy, and for a translation the parsed tree as well.
pub(super) fn upstream_body(
    call: &Call<'_>,
    route: &Route,
    target: &ChatTarget,
    charge: &mut Charge,
) -> Result<Bytes, GatewayError> {
    if wire_of(call.ingress) == target.wire {
        let rename = (route.model != call.requested_model).then_some(route.model.as_str());
        let ask_usage = asks_usage_for_client(call, target);
        if rename.is_none() && !ask_usage {
            return Ok(call.body.clone());
        }
        charge
            .cover(call.body.len().saturating_mul(2).saturating_add(4096))
            .map_err(super::buffer_refused)?;
        return rewrite_members(call.body, rename, ask_usage).map(Bytes::from);
    }
    super::charge_parse(charge, call.body)?;
    let v: Value = serde_json::from_slice(call.body)
        .map_err(|_| GatewayError::invalid("the body is not valid JSON"))?;
    let translated = match call.ingress {
        Ingress::Anthropic => translate::anthropic_request_to_openai(
            &v,
            &route.model,
            route.provider == byok_core::ProviderId::Openai,
        ),
        Ingress::OpenAi => translate::openai_request_to_anthropic(&v, &route.model),
    };
    serde_json::to_vec(&translated)
        .map(Bytes::from)
        .map_err(|_| GatewayError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error"))
}

/// A same-format OpenAI stream whose client did not ask for usage: the gateway asks for it
/// (and keeps the usage chunk from the client) so the request's tokens can be recorded.
pub(super) fn asks_usage_for_client(call: &Call<'_>, target: &ChatTarget) -> bool {
    call.ingress == Ingress::OpenAi
        && target.wire == ChatWire::OpenAi
        && call.stream
        && !call.include_usage
}

pub(super) fn headers_for(call: &Call<'_>, target: &ChatTarget) -> Vec<(&'static str, String)> {
    let mut h = Vec::new();
    if let Some(tp) = &call.traceparent {
        h.push(("traceparent", tp.clone()));
    }
    if target.wire == ChatWire::Anthropic {
        h.push((
            "anthropic-version",
            call.anthropic_version
                .clone()
                .unwrap_or_else(|| "2023-06-01".to_string()),
        ));
        if let Some(b) = &call.anthropic_beta {
            h.push(("anthropic-beta", b.clone()));
        }
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewrite_model_keeps_other_members_verbatim() {
        let body = br#"{"model":"openai/gpt-4o","messages":[{"role":"user","content":"h\u00e9 1.0e0"}],"temperature":0}"#;
        let out = rewrite_model(body, "gpt-4o").unwrap();
        let s = String::from_utf8(out).unwrap();
        assert!(s.contains(r#""model":"gpt-4o""#));
        assert!(s.contains(r#""content":"h\u00e9 1.0e0""#), "{s}");
        assert!(s.contains(r#""temperature":0"#));
        assert!(rewrite_model(b"[1]", "x").is_err());
    }
}
