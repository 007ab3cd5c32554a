//! Try it: send a prompt to a model through the gateway, with the badge saying whose key
//! serves it and where agent work would run.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use askama::Template;
use byok_core::CredentialKind;
use byok_core::services::RouteSummary;
use serde::Deserialize;

use super::{Chrome, Notice};
use crate::session::{CsrfForm, SignedIn};
use crate::state::{Console, PromptAnswer};
use crate::web::page;

/// Longest prompt the form takes (the gateway checks it too).
const MAX_PROMPT_CHARS: usize = 8000;

/// Whose key a request for the chosen model would use.
#[derive(Debug)]
struct Badge {
    text: String,
    /// `own` or `platform` (a CSS class and a stable hook for tests).
    kind: &'static str,
    fallback: bool,
}

impl Badge {
    fn of(s: &RouteSummary) -> Self {
        Self {
            text: s.badge(),
            kind: kind_of(s.credential),
            fallback: s.fallback,
        }
    }
}

fn kind_of(c: CredentialKind) -> &'static str {
    match c {
        CredentialKind::User => "own",
        CredentialKind::System => "platform",
    }
}

/// Where agent work would run.
#[derive(Debug)]
struct ServerLine {
    name: String,
    kind: &'static str,
}

/// The answer, as shown.
#[derive(Debug)]
struct Answer {
    text: String,
    model: String,
    tokens: String,
    latency_ms: u64,
    badge: Badge,
    /// The user's key was refused and the platform's key answered.
    fell_back: bool,
}

#[derive(Template)]
#[template(path = "try.html")]
struct TryPage {
    chrome: Chrome,
    csrf: String,
    model: String,
    prompt: String,
    models: Vec<String>,
    badge: Option<Badge>,
    model_error: Option<String>,
    prompt_error: Option<String>,
    server: Option<ServerLine>,
    answer: Option<Answer>,
    max_prompt: usize,
}

#[derive(Debug, Deserialize)]
pub struct TryQuery {
    model: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct TryForm {
    #[serde(default)]
    model: String,
    #[serde(default)]
    prompt: String,
    /// `check` (show the badge only) or `send`.
    #[serde(default)]
    action: String,
}

/// The Try it routes.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/try", web::get().to(show))
        .route("/try", web::post().to(send));
}

/// What the page shows around the form, for `model`.
struct Facts {
    models: Vec<String>,
    badge: Option<Badge>,
    summary: Option<RouteSummary>,
    model_error: Option<String>,
    server: Option<ServerLine>,
    status: StatusCode,
    notice: Option<Notice>,
}

async fn facts(console: &Console, who: &SignedIn, model: &str) -> Facts {
    let p = who.0.principal();
    let mut f = Facts {
        models: Vec::new(),
        badge: None,
        summary: None,
        model_error: None,
        server: None,
        status: StatusCode::OK,
        notice: None,
    };
    match console.routes.reachable_models(&p).await {
        Ok(m) => f.models = m.into_iter().map(|m| m.id).collect(),
        Err(e) => {
            let view = (console.errors)(e);
            f.status = view.status;
            f.notice = Some(Notice::error(view.message));
        }
    }
    if !model.is_empty() {
        match console.routes.summarize(&p, model).await {
            Ok(s) => {
                f.badge = Some(Badge::of(&s));
                f.summary = Some(s);
            }
            Err(e) => {
                // The refusal the gateway would give for this model, next to the field.
                let view = (console.errors)(e);
                f.status = view.status;
                f.model_error = Some(view.message);
            }
        }
    }
    match console.servers.agent_server(&p).await {
        Ok(s) => {
            f.server = s.map(|s| ServerLine {
                name: s.name,
                kind: s.server_type.as_str(),
            });
        }
        Err(e) => {
            let view = (console.errors)(e);
            f.notice = Some(Notice::error(view.message));
        }
    }
    f
}

#[expect(
    clippy::too_many_arguments,
    reason = "the page's parts, each from its own source"
)]
fn render(
    who: &SignedIn,
    f: Facts,
    model: String,
    prompt: String,
    prompt_error: Option<String>,
    answer: Option<Answer>,
    status: StatusCode,
    notice: Option<Notice>,
) -> HttpResponse {
    page(
        status,
        &TryPage {
            chrome: Chrome::signed_in(who, "/try").with_notice(notice.or(f.notice)),
            csrf: who.0.csrf_token.clone(),
            model,
            prompt,
            models: f.models,
            badge: f.badge,
            model_error: f.model_error,
            prompt_error,
            server: f.server,
            answer,
            max_prompt: MAX_PROMPT_CHARS,
        },
    )
}

/// `GET /try`: the form, with the badge for `?model=` (else the first reachable model).
pub async fn show(
    console: web::Data<Console>,
    who: SignedIn,
    q: web::Query<TryQuery>,
) -> HttpResponse {
    let asked = q.model.as_deref().map(str::trim).unwrap_or_default();
    let model = if asked.is_empty() {
        console
            .routes
            .reachable_models(&who.0.principal())
            .await
            .ok()
            .and_then(|m| m.into_iter().find(|m| !m.id.ends_with("/*")))
            .map(|m| m.id)
            .unwrap_or_default()
    } else {
        asked.to_string()
    };
    let f = facts(&console, &who, &model).await;
    let status = f.status;
    render(&who, f, model, String::new(), None, None, status, None)
}

/// `POST /try`: shows the badge for the model (`check`), or sends the prompt through the
/// gateway as the signed-in person (`send`) and shows the answer.
pub async fn send(
    console: web::Data<Console>,
    req: HttpRequest,
    CsrfForm { who, form }: CsrfForm<TryForm>,
) -> HttpResponse {
    let model = form.model.trim().to_string();
    let prompt = form.prompt;
    let mut f = facts(&console, &who, &model).await;
    if model.is_empty() {
        let view = console.invalid_field("invalid_model", "Choose a model.");
        f.model_error = Some(view.message);
        f.status = view.status;
    }
    let summary = match (&f.summary, form.action.as_str()) {
        (Some(s), "send") if f.model_error.is_none() => s.clone(),
        _ => {
            let status = f.status;
            return render(&who, f, model, prompt, None, None, status, None);
        }
    };
    if prompt.trim().is_empty() || prompt.chars().count() > MAX_PROMPT_CHARS {
        let why = if prompt.trim().is_empty() {
            "Write a prompt.".to_string()
        } else {
            format!("The prompt is longer than {MAX_PROMPT_CHARS} characters.")
        };
        let view = console.invalid_field("invalid_prompt", why);
        return render(
            &who,
            f,
            model,
            prompt,
            Some(view.message),
            None,
            view.status,
            None,
        );
    }
    let Some(runner) = console.prompts.clone() else {
        return render(
            &who,
            f,
            model,
            prompt,
            None,
            None,
            StatusCode::SERVICE_UNAVAILABLE,
            Some(Notice::error(
                "Sending prompts is not available on this service.",
            )),
        );
    };
    match runner.run(&req, &who.0.principal(), &model, &prompt).await {
        Ok(a) => {
            let answer = answer_of(a, &summary);
            render(
                &who,
                f,
                model,
                prompt,
                None,
                Some(answer),
                StatusCode::OK,
                None,
            )
        }
        // The application's wording and status (a provider's message on the platform's key
        // is already replaced by one naming the request).
        Err(view) => render(
            &who,
            f,
            model,
            prompt,
            None,
            None,
            view.status,
            Some(Notice::error(view.message)),
        ),
    }
}

/// The answer with the badge of the key that actually answered: the one announced, or the
/// platform's after a fallback.
fn answer_of(a: PromptAnswer, announced: &RouteSummary) -> Answer {
    let tokens = match (a.input_tokens, a.output_tokens) {
        (Some(i), Some(o)) => format!("{i} in, {o} out"),
        (Some(i), None) => format!("{i} in"),
        (None, Some(o)) => format!("{o} out"),
        (None, None) => "not reported".into(),
    };
    let fell_back =
        a.credential == CredentialKind::System && announced.credential == CredentialKind::User;
    let badge = if announced.credential == a.credential {
        Badge::of(announced)
    } else {
        // Whose key answered is all that is known: the platform's (a fallback), or the
        // user's (a key stored between the check and the send).
        Badge::of(&RouteSummary {
            credential: a.credential,
            key_label: None,
            key_preview: None,
            fallback: false,
            ..announced.clone()
        })
    };
    Answer {
        text: a.text,
        model: a.model,
        tokens,
        latency_ms: a.latency_ms,
        badge,
        fell_back,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use byok_core::{KeyPreview, ProviderId};

    fn own() -> RouteSummary {
        RouteSummary {
            provider: ProviderId::Openai,
            model: "gpt-4o".into(),
            credential: CredentialKind::User,
            key_label: Some("work".into()),
            key_preview: Some(KeyPreview::from_stored("sk-p...1234".into())),
            fallback: true,
        }
    }

    fn answered(credential: CredentialKind) -> PromptAnswer {
        PromptAnswer {
            text: "hi".into(),
            model: "gpt-4o".into(),
            input_tokens: Some(3),
            output_tokens: None,
            latency_ms: 12,
            credential,
        }
    }

    #[test]
    fn the_result_badge_names_the_key_that_answered() {
        let a = answer_of(answered(CredentialKind::User), &own());
        assert_eq!(a.badge.text, "Using your OpenAI key (work \u{2026}1234)");
        assert_eq!(a.badge.kind, "own");
        assert!(!a.fell_back);
        assert_eq!(a.tokens, "3 in");
        let a = answer_of(answered(CredentialKind::System), &own());
        assert_eq!(a.badge.text, "Using the platform's key");
        assert_eq!(a.badge.kind, "platform");
        assert!(a.fell_back);
    }
}
