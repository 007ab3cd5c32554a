//! Provider keys: status of each provider, add or replace (masked), test, delete, and the
//! fallback policy.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use askama::Template;
use byok_core::services::AddKey;
use byok_core::{CoreError, FallbackPolicy, ProviderId, TestStatus, Tier, UserSettings};
use secrecy::SecretString;
use serde::Deserialize;

use super::{Chrome, Notice, error_page};
use crate::frame::{ConfirmPage, when};
use crate::session::{CsrfForm, SignedIn};
use crate::state::Console;
use crate::web::{page, see_other};

/// One provider's row.
#[derive(Debug)]
struct Row {
    id: &'static str,
    name: &'static str,
    configured: bool,
    status: &'static str,
    status_class: &'static str,
    preview: String,
    label: String,
    endpoint: String,
    last_tested: String,
}

/// The add-or-replace form, as last submitted (never the key).
#[derive(Debug, Default)]
struct AddForm {
    provider: String,
    label: String,
    endpoint: String,
    error_provider: Option<String>,
    error_key: Option<String>,
    error_label: Option<String>,
    error_endpoint: Option<String>,
    error: Option<String>,
}

#[derive(Debug)]
struct ProviderOption {
    id: &'static str,
    name: &'static str,
    format: String,
    needs_endpoint: bool,
}

#[derive(Template)]
#[template(path = "keys.html")]
struct KeysPage {
    chrome: Chrome,
    rows: Vec<Row>,
    options: Vec<ProviderOption>,
    can_add: bool,
    tier: String,
    required_tier: String,
    upgrade_url: String,
    form: AddForm,
    fallback_user_then_system: bool,
    csrf: String,
}

fn status_of(s: Option<TestStatus>) -> (&'static str, &'static str) {
    match s {
        None => ("Saved, not tested", "saved"),
        Some(TestStatus::Valid) => ("Valid", "valid"),
        Some(TestStatus::Invalid) => ("Invalid", "invalid"),
        Some(TestStatus::Error) => ("Unreachable", "unreachable"),
        Some(TestStatus::Unknown) => ("Not checkable", "saved"),
    }
}

async fn render(
    console: &Console,
    who: &SignedIn,
    status: StatusCode,
    notice: Option<Notice>,
    form: AddForm,
) -> HttpResponse {
    let p = who.0.principal();
    let chrome = Chrome::signed_in(who, "/keys").with_notice(notice);
    let keys = match console.vault.list(&p).await {
        Ok(k) => k,
        Err(e) => return error_page(console, chrome, e),
    };
    let settings = match console.routes.settings(&p).await {
        Ok(s) => s,
        Err(e) => return error_page(console, chrome, e),
    };
    let rows = ProviderId::ALL
        .iter()
        .map(|id| {
            let stored = keys.iter().find(|k| k.provider == *id);
            let (status, status_class) = match stored {
                None => ("Not configured", "none"),
                Some(k) => status_of(k.test_status),
            };
            Row {
                id: id.as_str(),
                name: id.display_name(),
                configured: stored.is_some(),
                status,
                status_class,
                preview: stored
                    .map(|k| k.key_preview.as_str().to_string())
                    .unwrap_or_default(),
                label: stored.and_then(|k| k.label.clone()).unwrap_or_default(),
                endpoint: stored.and_then(|k| k.endpoint.clone()).unwrap_or_default(),
                last_tested: when(stored.and_then(|k| k.last_tested)),
            }
        })
        .collect();
    let options = ProviderId::ALL
        .iter()
        .map(|id| ProviderOption {
            id: id.as_str(),
            name: id.display_name(),
            format: id.key_format().describe(),
            needs_endpoint: id.requires_endpoint(),
        })
        .collect();
    page(
        status,
        &KeysPage {
            chrome,
            rows,
            options,
            can_add: p.tier.allows(Tier::BYOK_MINIMUM),
            tier: p.tier.as_str().into(),
            required_tier: Tier::BYOK_MINIMUM.as_str().into(),
            upgrade_url: console.upgrade_url.clone(),
            form,
            fallback_user_then_system: settings.fallback_policy == FallbackPolicy::UserThenSystem,
            csrf: who.0.csrf_token.clone(),
        },
    )
}

#[derive(Debug, Deserialize)]
pub struct KeysQuery {
    done: Option<String>,
    provider: Option<String>,
}

/// The provider-key routes.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/keys", web::get().to(list))
        .route("/keys", web::post().to(add))
        .route("/keys/settings", web::post().to(settings))
        .route("/keys/{provider}/test", web::post().to(test))
        .route("/keys/{provider}/delete", web::get().to(confirm_delete))
        .route("/keys/{provider}/delete", web::post().to(delete));
}

/// `GET /keys`
pub async fn list(
    console: web::Data<Console>,
    who: SignedIn,
    q: web::Query<KeysQuery>,
) -> HttpResponse {
    let name = |raw: Option<&String>| {
        raw.and_then(|p| p.parse::<ProviderId>().ok())
            .map_or("the provider", ProviderId::display_name)
    };
    let notice = match q.done.as_deref() {
        Some("saved") => Some(Notice::ok(format!(
            "Your {} key is saved. Test it to see what the provider says.",
            name(q.provider.as_ref())
        ))),
        Some("deleted") => Some(Notice::ok(format!(
            "Your {} key is deleted.",
            name(q.provider.as_ref())
        ))),
        Some("settings") => Some(Notice::ok("The fallback setting is saved.")),
        _ => None,
    };
    let form = AddForm {
        provider: q
            .provider
            .clone()
            .filter(|_| q.done.is_none())
            .unwrap_or_default(),
        ..AddForm::default()
    };
    render(&console, &who, StatusCode::OK, notice, form).await
}

#[derive(Deserialize)]
pub struct AddKeyForm {
    provider: String,
    key: SecretString,
    #[serde(default)]
    label: String,
    #[serde(default)]
    endpoint: String,
}

/// `POST /keys`: add or replace a key.
pub async fn add(
    console: web::Data<Console>,
    CsrfForm { who, form }: CsrfForm<AddKeyForm>,
) -> HttpResponse {
    let mut echo = AddForm {
        provider: form.provider.clone(),
        label: form.label.clone(),
        endpoint: form.endpoint.clone(),
        ..AddForm::default()
    };
    let provider = match form.provider.parse::<ProviderId>() {
        Ok(p) => p,
        Err(e) => {
            // The API's status for an unknown provider; the field says what to do.
            let view = (console.errors)(e);
            echo.error_provider = Some("Choose a provider.".into());
            return render(&console, &who, view.status, None, echo).await;
        }
    };
    let opt = |s: String| Some(s.trim().to_string()).filter(|s| !s.is_empty());
    let req = AddKey {
        provider,
        key: form.key,
        label: opt(form.label),
        endpoint: opt(form.endpoint),
    };
    match console.vault.add(&who.0.principal(), req).await {
        Ok(()) => see_other(&format!("/keys?done=saved&provider={}", provider.as_str())),
        Err(e @ CoreError::InvalidInput { .. }) => {
            let (code, message) = match &e {
                CoreError::InvalidInput { code, message } => (*code, message.clone()),
                _ => ("", String::new()),
            };
            // The message names the field, never the value.
            if code.contains("endpoint") {
                echo.error_endpoint = Some(message);
            } else if code.contains("label") {
                echo.error_label = Some(message);
            } else {
                echo.error_key = Some(message);
            }
            let view = (console.errors)(e);
            render(&console, &who, view.status, None, echo).await
        }
        Err(e) => {
            let view = (console.errors)(e);
            echo.error = Some(view.message);
            render(&console, &who, view.status, None, echo).await
        }
    }
}

/// `POST /keys/{provider}/test`: tests the stored key and shows the provider's answer.
pub async fn test(
    console: web::Data<Console>,
    provider: web::Path<String>,
    CsrfForm { who, .. }: CsrfForm,
) -> HttpResponse {
    let Ok(provider) = provider.parse::<ProviderId>() else {
        return super::not_found(Some(who)).await;
    };
    match console.vault.test(&who.0.principal(), provider).await {
        Ok(outcome) => {
            let text = format!(
                "{}: {} — {}",
                provider.display_name(),
                status_of(Some(outcome.status)).0,
                outcome.message
            );
            let notice = if outcome.status == TestStatus::Valid {
                Notice::ok(text)
            } else {
                Notice::error(text)
            };
            render(
                &console,
                &who,
                StatusCode::OK,
                Some(notice),
                AddForm::default(),
            )
            .await
        }
        Err(e) => {
            let view = (console.errors)(e);
            render(
                &console,
                &who,
                view.status,
                Some(Notice::error(view.message)),
                AddForm::default(),
            )
            .await
        }
    }
}

/// `GET /keys/{provider}/delete`: asks first.
pub async fn confirm_delete(who: SignedIn, provider: web::Path<String>) -> HttpResponse {
    let Ok(provider) = provider.parse::<ProviderId>() else {
        return super::not_found(Some(who)).await;
    };
    page(
        StatusCode::OK,
        &ConfirmPage {
            chrome: Chrome::signed_in(&who, "/keys"),
            title: format!("Delete your {} key?", provider.display_name()),
            text: "Requests for this provider will use the platform's key again (if your \
                   plan allows it). The key cannot be recovered; you can add it again later."
                .into(),
            action: format!("/keys/{}/delete", provider.as_str()),
            button: "Delete the key".into(),
            back: "/keys",
            csrf: who.0.csrf_token.clone(),
        },
    )
}

/// `POST /keys/{provider}/delete`
pub async fn delete(
    console: web::Data<Console>,
    provider: web::Path<String>,
    CsrfForm { who, .. }: CsrfForm,
) -> HttpResponse {
    let Ok(provider) = provider.parse::<ProviderId>() else {
        return super::not_found(Some(who)).await;
    };
    match console.vault.delete(&who.0.principal(), provider).await {
        Ok(()) => see_other(&format!(
            "/keys?done=deleted&provider={}",
            provider.as_str()
        )),
        Err(e) => error_page(&console, Chrome::signed_in(&who, "/keys"), e),
    }
}

#[derive(Deserialize)]
pub struct SettingsForm {
    fallback_policy: String,
}

/// `POST /keys/settings`: the fallback policy.
pub async fn settings(
    console: web::Data<Console>,
    CsrfForm { who, form }: CsrfForm<SettingsForm>,
) -> HttpResponse {
    let policy = match form.fallback_policy.as_str() {
        "user_then_system" => FallbackPolicy::UserThenSystem,
        _ => FallbackPolicy::UserOnly,
    };
    let settings = UserSettings {
        fallback_policy: policy,
    };
    match console
        .routes
        .set_settings(&who.0.principal(), settings)
        .await
    {
        Ok(_) => see_other("/keys?done=settings"),
        Err(e) => error_page(&console, Chrome::signed_in(&who, "/keys"), e),
    }
}
