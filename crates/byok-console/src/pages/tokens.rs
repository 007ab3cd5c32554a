//! Gateway tokens: create (the token shown once, with ready-to-paste snippets), list with last
//! use, revoke. The same `TokenService` calls as `/api/v1/tokens` (`issue_for`, `list`,
//! `revoke`), so the rules (name, expiry range, the default lifetime, never outliving the
//! token the session was opened with) are the service's.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use askama::Template;
use byok_core::{CoreError, GatewayToken};
use chrono::{DateTime, Utc};
use secrecy::ExposeSecret;
use serde::Deserialize;
use uuid::Uuid;

use super::{Chrome, Notice, error_page};
use crate::frame::ConfirmPage;
use crate::session::{CsrfForm, SignedIn, cleared_cookie, presented};
use crate::state::Console;
use crate::web::{page, see_other};

/// The lifetimes offered besides the service's default, in days.
const PRESET_DAYS: [u32; 3] = [30, 90, 365];
/// Selected when the service's default is "no expiry".
const SAFE_DEFAULT_DAYS: u32 = 90;
/// The placeholder the snippets on the page use; the one-time block fills in the new token.
const PLACEHOLDER_SHELL: &str = "\"$BYOK_TOKEN\"";
const PLACEHOLDER_PYTHON: &str = "os.environ[\"BYOK_TOKEN\"]";

/// One token's row (never the token: its prefix only).
#[derive(Debug)]
struct Row {
    id: Uuid,
    name: String,
    prefix: String,
    created: String,
    last_used: String,
    expires: String,
    /// `active`, `expired` or `revoked`.
    status: &'static str,
    status_class: &'static str,
    /// The token this console session was opened with.
    this_session: bool,
}

/// A way to use a token: a title and a snippet to paste.
#[derive(Debug)]
struct Snippet {
    /// The element id of the code block (copy buttons point at it).
    id: String,
    title: &'static str,
    code: String,
}

/// One choice of the expiry select.
#[derive(Debug)]
struct ExpiryOption {
    value: String,
    label: String,
    selected: bool,
}

/// The create form, as last submitted.
#[derive(Debug, Default)]
struct CreateForm {
    name: String,
    expiry: Option<String>,
    error_name: Option<String>,
    error_expiry: Option<String>,
    error: Option<String>,
}

/// The token just created: shown in this response only.
#[derive(Debug)]
struct Created {
    name: String,
    token: String,
    expires: String,
    snippets: Vec<Snippet>,
}

#[derive(Template)]
#[template(path = "tokens.html")]
struct TokensPage {
    chrome: Chrome,
    rows: Vec<Row>,
    options: Vec<ExpiryOption>,
    form: CreateForm,
    created: Option<Created>,
    snippets: Vec<Snippet>,
    /// When the session's own token caps the lifetime of new ones.
    cap_note: Option<String>,
    csrf: String,
}

fn when(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M UTC").to_string()
}

fn day(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d").to_string()
}

/// The snippets for `url` with `shell` and `python` as the token (the placeholder, or the
/// token as a quoted literal); ids are `{prefix}claude`, `{prefix}openai`, `{prefix}anthropic`.
fn snippets(url: &str, shell: &str, python: &str, id_prefix: &str) -> Vec<Snippet> {
    let import_os = if python == PLACEHOLDER_PYTHON {
        "import os\n"
    } else {
        ""
    };
    vec![
        Snippet {
            id: format!("{id_prefix}claude"),
            title: "Claude Code",
            code: format!("ANTHROPIC_BASE_URL={url} ANTHROPIC_AUTH_TOKEN={shell} claude"),
        },
        Snippet {
            id: format!("{id_prefix}openai"),
            title: "OpenAI SDK (Python)",
            code: format!(
                "{import_os}from openai import OpenAI\n\
                 client = OpenAI(base_url=\"{url}/v1\", api_key={python})\n\
                 reply = client.chat.completions.create(\n    \
                 model=\"gpt-4o\", messages=[{{\"role\": \"user\", \"content\": \"Hello\"}}])\n\
                 print(reply.choices[0].message.content)"
            ),
        },
        Snippet {
            id: format!("{id_prefix}anthropic"),
            title: "Anthropic SDK (Python)",
            code: format!(
                "{import_os}from anthropic import Anthropic\n\
                 client = Anthropic(base_url=\"{url}\", api_key={python})\n\
                 reply = client.messages.create(\n    \
                 model=\"claude-sonnet-4-5\", max_tokens=512,\n    \
                 messages=[{{\"role\": \"user\", \"content\": \"Hello\"}}])\n\
                 print(reply.content[0].text)"
            ),
        },
    ]
}

/// The expiry choices, shortest first: the presets and the service's default lifetime
/// (`default_days`; `None`: tokens issued without a lifetime never expire, and only then is
/// "No expiry" offered). `chosen` is the submitted value; else the default is selected, or
/// 90 days when the default is no expiry.
fn expiry_options(default_days: Option<i64>, chosen: Option<&str>) -> Vec<ExpiryOption> {
    let label = |d: i64| match d {
        1 => "1 day".to_string(),
        365 => "1 year".to_string(),
        d => format!("{d} days"),
    };
    let mut choices: Vec<(i64, String, String)> = PRESET_DAYS
        .iter()
        .map(|d| i64::from(*d))
        .filter(|d| default_days != Some(*d))
        .map(|d| (d, d.to_string(), label(d)))
        .collect();
    choices.push(match default_days {
        Some(d) => (d, "default".into(), format!("{} (the default)", label(d))),
        None => (i64::MAX, "default".into(), "No expiry".into()),
    });
    choices.sort_by_key(|c| c.0);
    let chosen = chosen.map_or_else(
        || match default_days {
            Some(_) => "default".to_string(),
            None => SAFE_DEFAULT_DAYS.to_string(),
        },
        str::to_string,
    );
    choices
        .into_iter()
        .map(|(_, value, label)| ExpiryOption {
            selected: value == chosen,
            value,
            label,
        })
        .collect()
}

/// The service's default lifetime in whole days, if it has one.
fn default_days(console: &Console) -> Option<i64> {
    console
        .tokens
        .default_lifetime()
        .map(|d| d.num_days().max(1))
}

fn row(t: &GatewayToken, now: DateTime<Utc>, session_token: Option<Uuid>) -> Row {
    let (status, status_class) = if t.revoked_at.is_some() {
        ("revoked", "none")
    } else if t.is_active(now) {
        ("active", "valid")
    } else {
        ("expired", "error")
    };
    Row {
        id: t.id,
        name: t.name.clone(),
        prefix: t.prefix.clone(),
        created: when(t.created_at),
        last_used: t.last_used_at.map_or_else(|| "Never".into(), when),
        expires: match (t.expires_at, t.revoked_at) {
            (_, Some(r)) => format!("Revoked {}", day(r)),
            (Some(e), None) => day(e),
            (None, None) => "Never".into(),
        },
        status,
        status_class,
        this_session: session_token == Some(t.id),
    }
}

async fn render(
    console: &Console,
    who: &SignedIn,
    status: StatusCode,
    notice: Option<Notice>,
    form: CreateForm,
    created: Option<Created>,
) -> HttpResponse {
    let chrome = Chrome::signed_in(who, "/tokens").with_notice(notice);
    let tokens = match console.tokens.list(who.0.user.id).await {
        Ok(t) => t,
        Err(e) => return error_page(console, chrome, e),
    };
    let now = Utc::now();
    let session_token = who.0.token_id;
    let cap_note = session_token
        .and_then(|id| tokens.iter().find(|t| t.id == id))
        .and_then(|t| t.expires_at)
        .map(|e| {
            format!(
                "You signed in with a gateway token that expires on {}: a token made here \
                 expires then at the latest.",
                day(e)
            )
        });
    let url = console.public_url.get();
    page(
        status,
        &TokensPage {
            chrome,
            rows: tokens.iter().map(|t| row(t, now, session_token)).collect(),
            options: expiry_options(default_days(console), form.expiry.as_deref()),
            form,
            created,
            snippets: snippets(&url, PLACEHOLDER_SHELL, PLACEHOLDER_PYTHON, "snippet-"),
            cap_note,
            csrf: who.0.csrf_token.clone(),
        },
    )
}

/// The gateway-token routes.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/tokens", web::get().to(list))
        .route("/tokens", web::post().to(create))
        .route("/tokens/{id}/revoke", web::get().to(confirm_revoke))
        .route("/tokens/{id}/revoke", web::post().to(revoke));
}

#[derive(Debug, Deserialize)]
pub struct TokensQuery {
    done: Option<String>,
}

/// `GET /tokens`
pub async fn list(
    console: web::Data<Console>,
    who: SignedIn,
    q: web::Query<TokensQuery>,
) -> HttpResponse {
    let notice = match q.done.as_deref() {
        Some("revoked") => Some(Notice::ok(
            "The token is revoked: requests made with it are refused from now on.",
        )),
        _ => None,
    };
    render(
        &console,
        &who,
        StatusCode::OK,
        notice,
        CreateForm::default(),
        None,
    )
    .await
}

#[derive(Debug, Deserialize)]
pub struct CreateTokenForm {
    #[serde(default)]
    name: String,
    #[serde(default)]
    expiry: String,
}

/// `POST /tokens`: creates a token and shows it, this once (200, not a redirect: the token
/// is in this response only, sent `no-store`).
pub async fn create(
    console: web::Data<Console>,
    CsrfForm { who, form }: CsrfForm<CreateTokenForm>,
) -> HttpResponse {
    let mut echo = CreateForm {
        name: form.name.clone(),
        expiry: Some(form.expiry.clone()),
        ..CreateForm::default()
    };
    let days = match form.expiry.as_str() {
        "default" => None,
        d => match d.parse::<u32>() {
            Ok(d) => Some(d),
            Err(_) => {
                let view =
                    console.invalid_field("invalid_expiry", "Choose when the token expires.");
                echo.error_expiry = Some(view.message);
                return render(&console, &who, view.status, None, echo, None).await;
            }
        },
    };
    match console
        .tokens
        .issue_for(&who.0.principal(), &form.name, days)
        .await
    {
        Ok(issued) => {
            let token = issued.token.expose_secret().to_owned();
            let url = console.public_url.get();
            let r = issued.record;
            let created = Created {
                snippets: snippets(&url, &token, &format!("\"{token}\""), "new-token-snippet-"),
                name: r.name,
                expires: r.expires_at.map_or_else(|| "never".into(), day),
                token,
            };
            render(
                &console,
                &who,
                StatusCode::OK,
                None,
                CreateForm::default(),
                Some(created),
            )
            .await
        }
        Err(e @ CoreError::InvalidInput { .. }) => {
            if let CoreError::InvalidInput { code, message } = &e {
                let message = match *code {
                    "invalid_token_name" => {
                        "Give the token a name of 1 to 100 printable characters.".to_string()
                    }
                    "invalid_expiry" => "Choose a lifetime between 1 day and 10 years.".to_string(),
                    _ => message.clone(),
                };
                if code.contains("expiry") {
                    echo.error_expiry = Some(message);
                } else if code.contains("name") {
                    echo.error_name = Some(message);
                } else {
                    echo.error = Some(message);
                }
            }
            let view = (console.errors)(e);
            render(&console, &who, view.status, None, echo, None).await
        }
        Err(e) => {
            let view = (console.errors)(e);
            echo.error = Some(view.message);
            render(&console, &who, view.status, None, echo, None).await
        }
    }
}

/// `GET /tokens/{id}/revoke`: asks first, and says so when this is the session's own token.
pub async fn confirm_revoke(
    console: web::Data<Console>,
    who: SignedIn,
    id: web::Path<String>,
) -> HttpResponse {
    let chrome = Chrome::signed_in(&who, "/tokens");
    let Ok(id) = Uuid::parse_str(&id) else {
        return super::not_found(Some(who)).await;
    };
    let tokens = match console.tokens.list(who.0.user.id).await {
        Ok(t) => t,
        Err(e) => return error_page(&console, chrome, e),
    };
    let Some(t) = tokens.iter().find(|t| t.id == id && t.revoked_at.is_none()) else {
        return super::not_found(Some(who)).await;
    };
    let mut text = String::from(
        "Programs and tools using this token are refused from now on; the token cannot be \
         restored. Create a new one to replace it.",
    );
    if who.0.token_id == Some(id) {
        text.push_str(" You signed in to this console with this token: revoking it signs you out.");
    }
    page(
        StatusCode::OK,
        &ConfirmPage {
            chrome,
            title: format!("Revoke the token “{}” ({}…)?", t.name, t.prefix),
            text,
            action: format!("/tokens/{id}/revoke"),
            button: "Revoke the token".into(),
            back: "/tokens",
            csrf: who.0.csrf_token.clone(),
        },
    )
}

/// `POST /tokens/{id}/revoke`. Revoking the token this session was opened with ends the
/// session too (the service would refuse it at the next request anyway).
pub async fn revoke(
    console: web::Data<Console>,
    req: HttpRequest,
    id: web::Path<String>,
    CsrfForm { who, .. }: CsrfForm,
) -> HttpResponse {
    let Ok(id) = Uuid::parse_str(&id) else {
        return super::not_found(Some(who)).await;
    };
    if let Err(e) = console.tokens.revoke(who.0.user.id, id).await {
        return error_page(&console, Chrome::signed_in(&who, "/tokens"), e);
    }
    if who.0.token_id != Some(id) {
        return see_other("/tokens?done=revoked");
    }
    if let Some(cookie) = presented(&req, &console)
        && let Err(e) = console.sessions.sign_out(&cookie).await
    {
        tracing::warn!(error = %e, "could not end the session of a revoked token");
    }
    let mut res = see_other("/login?signed_out=1");
    if let Err(e) = res.add_cookie(&cleared_cookie(&console)) {
        tracing::error!(error = %e, "could not clear the session cookie");
    }
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snippets_use_the_url_and_the_placeholder() {
        let s = snippets(
            "https://gw.example.com",
            PLACEHOLDER_SHELL,
            PLACEHOLDER_PYTHON,
            "snippet-",
        );
        assert_eq!(
            s[0].code,
            "ANTHROPIC_BASE_URL=https://gw.example.com ANTHROPIC_AUTH_TOKEN=\"$BYOK_TOKEN\" claude"
        );
        assert!(s[1].code.starts_with("import os\n"));
        assert!(s[1].code.contains(
            "OpenAI(base_url=\"https://gw.example.com/v1\", api_key=os.environ[\"BYOK_TOKEN\"])"
        ));
        assert!(s[2].code.contains(
            "Anthropic(base_url=\"https://gw.example.com\", api_key=os.environ[\"BYOK_TOKEN\"])"
        ));
        let filled = snippets("http://h", "byok_x", "\"byok_x\"", "new-");
        assert_eq!(filled[2].id, "new-anthropic");
        assert!(!filled[1].code.contains("import os"));
        assert!(filled[1].code.contains("api_key=\"byok_x\""));
    }

    fn shown(options: &[ExpiryOption]) -> Vec<(&str, &str, bool)> {
        options
            .iter()
            .map(|o| (o.value.as_str(), o.label.as_str(), o.selected))
            .collect()
    }

    #[test]
    fn expiry_choices_follow_the_service_default() {
        assert_eq!(
            shown(&expiry_options(Some(90), None)),
            [
                ("30", "30 days", false),
                ("default", "90 days (the default)", true),
                ("365", "1 year", false),
            ]
        );
        assert_eq!(
            shown(&expiry_options(Some(7), Some("365"))),
            [
                ("default", "7 days (the default)", false),
                ("30", "30 days", false),
                ("90", "90 days", false),
                ("365", "1 year", true),
            ]
        );
        // "No expiry" only when the service issues such tokens by default; not preselected.
        assert_eq!(
            shown(&expiry_options(None, None)),
            [
                ("30", "30 days", false),
                ("90", "90 days", true),
                ("365", "1 year", false),
                ("default", "No expiry", false),
            ]
        );
    }
}
