//! Administration (operators only): users (list, create with a sign-in link shown once,
//! disable and enable, tier, role, a new sign-in link) and the service's figures (BYOK
//! adoption, provider mix, fallbacks). Every rule, the operator check included, is core's
//! `Administration`, shared with the CLI; a person without the operator role gets a 403 page.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use askama::Template;
use byok_core::services::{Actor, IssuedLink, ServiceFigures, UserPage};
use byok_core::{CoreError, ProviderId, Role, Tier, User, UserId, UserOrigin};
use secrecy::ExposeSecret;
use serde::Deserialize;
use uuid::Uuid;

use super::{Chrome, MessagePage, Notice};
use crate::frame::ConfirmPage;
use crate::session::{CsrfForm, SignedIn};
use crate::state::Console;
use crate::web::{page, see_other};

/// The window of the usage figures, in days.
const FIGURE_DAYS: u32 = 30;

/// One user's row.
#[derive(Debug)]
struct Row {
    id: String,
    email: String,
    tier: &'static str,
    operator: bool,
    origin: String,
    created: String,
    disabled: bool,
    /// The signed-in operator's own row (no disable, no demotion).
    me: bool,
}

/// A figure tile.
#[derive(Debug)]
struct Figure {
    id: &'static str,
    value: String,
    what: String,
}

/// One provider of the mix.
#[derive(Debug)]
struct MixRow {
    provider: String,
    name: String,
    own: u64,
    platform: u64,
    errors: u64,
    tokens: u64,
    keys: u64,
    /// Bar widths, in percent of the busiest provider.
    own_width: u64,
    platform_width: u64,
}

/// A sign-in link just made, shown once.
#[derive(Debug)]
struct LinkShown {
    email: String,
    url: String,
    expires: String,
    /// A new user (else a new link for an existing one).
    created: bool,
}

/// The create form as last submitted.
#[derive(Debug, Default)]
struct CreateForm {
    email: String,
    tier: String,
    error_email: Option<String>,
}

#[derive(Template)]
#[template(path = "admin.html")]
struct AdminPage {
    chrome: Chrome,
    csrf: String,
    rows: Vec<Row>,
    page: u64,
    pages: u64,
    total: u64,
    tiers: Vec<&'static str>,
    figures: Vec<Figure>,
    mix: Vec<MixRow>,
    days: u32,
    link: Option<LinkShown>,
    form: CreateForm,
}

fn when(t: chrono::DateTime<chrono::Utc>) -> String {
    t.format("%Y-%m-%d").to_string()
}

fn percent(part: u64, whole: u64) -> String {
    (part * 100 + whole / 2)
        .checked_div(whole)
        .map_or_else(|| "—".into(), |p| format!("{p}%"))
}

fn row(u: &User, me: UserId) -> Row {
    Row {
        id: u.id.to_string(),
        email: u.email.clone(),
        tier: u.tier.as_str(),
        operator: u.role == Role::Operator,
        origin: match &u.origin {
            UserOrigin::Local => "local".into(),
            UserOrigin::External { issuer } => issuer.clone(),
            UserOrigin::Unknown => "unknown".into(),
        },
        created: when(u.created_at),
        disabled: !u.is_active(),
        me: u.id == me,
    }
}

fn figures(f: &ServiceFigures) -> (Vec<Figure>, Vec<MixRow>) {
    let a = &f.adoption;
    let u = &f.usage;
    let tiles = vec![
        Figure {
            id: "figure-adoption",
            value: percent(a.users_with_keys, a.eligible_users),
            what: format!(
                "BYOK adoption: {} of {} users who may bring keys have one",
                a.users_with_keys, a.eligible_users
            ),
        },
        Figure {
            id: "figure-own-share",
            value: percent(u.own_requests, u.requests),
            what: format!(
                "of {} requests served with users' own keys ({} days)",
                u.requests, f.days
            ),
        },
        Figure {
            id: "figure-fallbacks",
            value: u.fallbacks.to_string(),
            what: format!(
                "fallbacks to the platform's key after a refused own key ({} days)",
                f.days
            ),
        },
        Figure {
            id: "figure-active",
            value: u.active_users.to_string(),
            what: format!(
                "active users, {} of them with their own keys ({} days)",
                u.byok_users, f.days
            ),
        },
        Figure {
            id: "figure-errors",
            value: u.errors.to_string(),
            what: format!("requests answered with an error ({} days)", f.days),
        },
    ];
    let busiest = u
        .by_provider
        .iter()
        .map(byok_core::ports::ProviderMix::requests)
        .max()
        .unwrap_or(0)
        .max(1);
    let mut names: Vec<String> = u.by_provider.iter().map(|p| p.provider.clone()).collect();
    for (p, _) in &a.keys_by_provider {
        if !names.contains(p) {
            names.push(p.clone());
        }
    }
    names.sort();
    let mix = names
        .into_iter()
        .map(|p| {
            let usage = u.by_provider.iter().find(|m| m.provider == p);
            let (own, platform) = usage.map_or((0, 0), |m| (m.own_requests, m.platform_requests));
            MixRow {
                name: p
                    .parse::<ProviderId>()
                    .map_or_else(|_| p.clone(), |id| id.display_name().to_string()),
                own,
                platform,
                errors: usage.map_or(0, |m| m.errors),
                tokens: usage.map_or(0, |m| m.input_tokens + m.output_tokens),
                keys: a
                    .keys_by_provider
                    .iter()
                    .find(|(k, _)| *k == p)
                    .map_or(0, |(_, n)| *n),
                own_width: own * 100 / busiest,
                platform_width: platform * 100 / busiest,
                provider: p,
            }
        })
        .collect();
    (tiles, mix)
}

/// A refusal of the whole page (not an operator, a lost database): the application's status
/// and message.
fn refused(console: &Console, who: &SignedIn, e: CoreError) -> HttpResponse {
    let forbidden = matches!(e, CoreError::Forbidden { .. });
    let view = (console.errors)(e);
    page(
        view.status,
        &MessagePage {
            chrome: Chrome::signed_in(who, "/admin"),
            title: if forbidden {
                "Administration is for operators".into()
            } else {
                "That did not work".into()
            },
            text: view.message,
            back: Some(("/", "Back to the console")),
        },
    )
}

#[allow(clippy::too_many_arguments)]
async fn render(
    console: &Console,
    who: &SignedIn,
    page_no: u64,
    status: StatusCode,
    notice: Option<Notice>,
    link: Option<LinkShown>,
    form: CreateForm,
) -> HttpResponse {
    let me = &who.0.user;
    let users: UserPage = match console.admin.users(Actor::Person(me), page_no).await {
        Ok(u) => u,
        Err(e) => return refused(console, who, e),
    };
    let f = match console.admin.figures(Actor::Person(me), FIGURE_DAYS).await {
        Ok(f) => f,
        Err(e) => return refused(console, who, e),
    };
    let (tiles, mix) = figures(&f);
    page(
        status,
        &AdminPage {
            chrome: Chrome::signed_in(who, "/admin").with_notice(notice),
            csrf: who.0.csrf_token.clone(),
            rows: users.users.iter().map(|u| row(u, me.id)).collect(),
            page: users.page,
            pages: users.pages,
            total: users.total,
            tiers: Tier::ALL.iter().map(|t| t.as_str()).collect(),
            figures: tiles,
            mix,
            days: f.days,
            link,
            form,
        },
    )
}

#[derive(Debug, Deserialize)]
pub struct AdminQuery {
    page: Option<u64>,
    done: Option<String>,
    ended: Option<u64>,
}

/// The administration routes.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/admin", web::get().to(show))
        .route("/admin/users", web::post().to(create))
        .route("/admin/users/{id}/tier", web::post().to(set_tier))
        .route("/admin/users/{id}/role", web::post().to(set_role))
        .route("/admin/users/{id}/disable", web::get().to(confirm_disable))
        .route("/admin/users/{id}/disable", web::post().to(disable))
        .route("/admin/users/{id}/enable", web::post().to(enable))
        .route("/admin/users/{id}/link", web::post().to(new_link));
}

/// `GET /admin`
pub async fn show(
    console: web::Data<Console>,
    who: SignedIn,
    q: web::Query<AdminQuery>,
) -> HttpResponse {
    let notice = match q.done.as_deref() {
        Some("tier") => Some(Notice::ok("The tier is changed.")),
        Some("role") => Some(Notice::ok("The role is changed.")),
        Some("disabled") => Some(Notice::ok(format!(
            "The account is disabled: its gateway tokens and sign-in links are refused, and \
             {} console session(s) ended.",
            q.ended.unwrap_or(0)
        ))),
        Some("enabled") => Some(Notice::ok("The account is enabled again.")),
        _ => None,
    };
    render(
        &console,
        &who,
        q.page.unwrap_or(1),
        StatusCode::OK,
        notice,
        None,
        CreateForm::default(),
    )
    .await
}

fn link_shown(console: &Console, email: &str, link: &IssuedLink, created: bool) -> LinkShown {
    LinkShown {
        email: email.to_string(),
        url: format!(
            "{}/login/{}",
            console.public_url.get(),
            link.secret.expose_secret()
        ),
        expires: link.expires_at.format("%Y-%m-%d %H:%M UTC").to_string(),
        created,
    }
}

/// A core refusal of an action, on the page with the application's status and message.
async fn action_failed(console: &Console, who: &SignedIn, e: CoreError) -> HttpResponse {
    if matches!(
        e,
        CoreError::Forbidden {
            code: "operator_required",
            ..
        }
    ) {
        return refused(console, who, e);
    }
    let view = (console.errors)(e);
    render(
        console,
        who,
        1,
        view.status,
        Some(Notice::error(view.message)),
        None,
        CreateForm::default(),
    )
    .await
}

#[derive(Deserialize)]
pub struct CreateUserForm {
    #[serde(default)]
    email: String,
    #[serde(default)]
    tier: String,
}

/// `POST /admin/users`: creates a user and shows their sign-in link once (never in a URL).
pub async fn create(
    console: web::Data<Console>,
    CsrfForm { who, form }: CsrfForm<CreateUserForm>,
) -> HttpResponse {
    let mut echo = CreateForm {
        email: form.email.clone(),
        tier: form.tier.clone(),
        error_email: None,
    };
    let tier = match form.tier.parse::<Tier>() {
        Ok(t) => t,
        Err(e) => return action_failed(&console, &who, e).await,
    };
    match console
        .admin
        .create_user(Actor::Person(&who.0.user), &form.email, tier)
        .await
    {
        Ok(made) => {
            let link = link_shown(&console, &made.user.email, &made.link, true);
            render(
                &console,
                &who,
                1,
                StatusCode::OK,
                Some(Notice::ok(format!(
                    "{} is created on the {} plan.",
                    made.user.email,
                    made.user.tier.as_str()
                ))),
                Some(link),
                CreateForm::default(),
            )
            .await
        }
        Err(
            e @ (CoreError::InvalidInput { .. }
            | CoreError::Conflict {
                code: "user_exists",
                ..
            }),
        ) => {
            let view = (console.errors)(e);
            echo.error_email = Some(view.message);
            render(&console, &who, 1, view.status, None, None, echo).await
        }
        Err(e) => action_failed(&console, &who, e).await,
    }
}

fn user_id(raw: &str) -> Option<UserId> {
    raw.parse::<Uuid>().ok().map(UserId)
}

#[derive(Deserialize)]
pub struct TierForm {
    tier: String,
}

/// `POST /admin/users/{id}/tier`
pub async fn set_tier(
    console: web::Data<Console>,
    id: web::Path<String>,
    CsrfForm { who, form }: CsrfForm<TierForm>,
) -> HttpResponse {
    let Some(id) = user_id(&id) else {
        return super::not_found(Some(who)).await;
    };
    let tier = match form.tier.parse::<Tier>() {
        Ok(t) => t,
        Err(e) => return action_failed(&console, &who, e).await,
    };
    match console
        .admin
        .set_tier(Actor::Person(&who.0.user), id, tier)
        .await
    {
        Ok(()) => see_other("/admin?done=tier"),
        Err(e) => action_failed(&console, &who, e).await,
    }
}

#[derive(Deserialize)]
pub struct RoleForm {
    role: String,
}

/// `POST /admin/users/{id}/role`
pub async fn set_role(
    console: web::Data<Console>,
    id: web::Path<String>,
    CsrfForm { who, form }: CsrfForm<RoleForm>,
) -> HttpResponse {
    let Some(id) = user_id(&id) else {
        return super::not_found(Some(who)).await;
    };
    let role = match form.role.parse::<Role>() {
        Ok(r) => r,
        Err(e) => return action_failed(&console, &who, e).await,
    };
    match console
        .admin
        .set_role(Actor::Person(&who.0.user), id, role)
        .await
    {
        Ok(()) => see_other("/admin?done=role"),
        Err(e) => action_failed(&console, &who, e).await,
    }
}

/// `GET /admin/users/{id}/disable`: asks first.
pub async fn confirm_disable(
    console: web::Data<Console>,
    who: SignedIn,
    id: web::Path<String>,
) -> HttpResponse {
    let Some(id) = user_id(&id) else {
        return super::not_found(Some(who)).await;
    };
    let user = match console.admin.user(Actor::Person(&who.0.user), id).await {
        Ok(u) => u,
        Err(e) => return refused(&console, &who, e),
    };
    page(
        StatusCode::OK,
        &ConfirmPage {
            chrome: Chrome::signed_in(&who, "/admin"),
            title: format!("Disable {}?", user.email),
            text: "Their gateway tokens and sign-in links stop working and their console \
                   sessions end at once. Their keys, servers and tokens are kept: enabling the \
                   account again restores them."
                .into(),
            action: format!("/admin/users/{id}/disable"),
            button: "Disable the account".into(),
            back: "/admin",
            csrf: who.0.csrf_token.clone(),
        },
    )
}

/// `POST /admin/users/{id}/disable`
pub async fn disable(
    console: web::Data<Console>,
    id: web::Path<String>,
    CsrfForm { who, .. }: CsrfForm,
) -> HttpResponse {
    set_disabled(&console, who, &id, true).await
}

/// `POST /admin/users/{id}/enable`
pub async fn enable(
    console: web::Data<Console>,
    id: web::Path<String>,
    CsrfForm { who, .. }: CsrfForm,
) -> HttpResponse {
    set_disabled(&console, who, &id, false).await
}

async fn set_disabled(console: &Console, who: SignedIn, id: &str, disabled: bool) -> HttpResponse {
    let Some(id) = user_id(id) else {
        return super::not_found(Some(who)).await;
    };
    match console
        .admin
        .set_disabled(Actor::Person(&who.0.user), id, disabled)
        .await
    {
        Ok(ended) if disabled => see_other(&format!("/admin?done=disabled&ended={ended}")),
        Ok(_) => see_other("/admin?done=enabled"),
        Err(e) => action_failed(console, &who, e).await,
    }
}

/// `POST /admin/users/{id}/link`: a new single-use sign-in link, shown once.
pub async fn new_link(
    console: web::Data<Console>,
    id: web::Path<String>,
    CsrfForm { who, .. }: CsrfForm,
) -> HttpResponse {
    let Some(id) = user_id(&id) else {
        return super::not_found(Some(who)).await;
    };
    let by = Actor::Person(&who.0.user);
    let user = match console.admin.user(by, id).await {
        Ok(u) => u,
        Err(e) => return action_failed(&console, &who, e).await,
    };
    match console.admin.sign_in_link(by, id).await {
        Ok(link) => {
            let shown = link_shown(&console, &user.email, &link, false);
            render(
                &console,
                &who,
                1,
                StatusCode::OK,
                None,
                Some(shown),
                CreateForm::default(),
            )
            .await
        }
        Err(e) => action_failed(&console, &who, e).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentages_round_and_survive_zero() {
        assert_eq!(percent(1, 3), "33%");
        assert_eq!(percent(2, 3), "67%");
        assert_eq!(percent(0, 0), "—");
    }
}
