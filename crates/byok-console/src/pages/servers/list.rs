//! The servers list and what is done from it: the connection test (with the host-key step),
//! trusting a host key, the default server, deleting.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use askama::Template;
use byok_core::CoreError;
use byok_core::execution::{ExecError, ServerTest, pinned_host_key};
use byok_core::services::UpdateServer;
use serde::Deserialize;
use serde_json::Value;
use uuid::Uuid;

use super::view::{
    ConfirmPage, Summary, Upgrade, capitalise, server_id, status_of, type_label, upgrade_of,
};
use crate::pages::{Chrome, Notice, error_page, not_found};
use crate::session::{CsrfForm, SignedIn, encode};
use crate::state::Console;
use crate::web::{page, see_other};

/// The host-key step of a test: a key to compare and trust, or a changed key.
#[derive(Debug, Clone, Default)]
pub struct HostKeyStep {
    /// The key changed since it was trusted (`host_key_mismatch`).
    pub mismatch: bool,
    /// What the server presents now (`SHA256:…`).
    pub presented: String,
    /// What was trusted before (mismatch only).
    pub pinned: String,
    /// A problem with the trust form (the confirmation box not ticked).
    pub error: Option<String>,
}

/// One detail of a test result (`uname`, `version`…).
#[derive(Debug, Clone)]
pub struct Detail {
    /// `test-detail-<key>`, for the key as the backend names it.
    pub id: String,
    pub label: String,
    pub value: String,
}

/// The outcome of a test (or of trusting a key), shown above the list.
#[derive(Debug, Clone, Default)]
pub struct TestPanel {
    pub server_id: String,
    pub server_name: String,
    /// A CSS class: `success`, `failed`, `error`.
    pub status: &'static str,
    pub label: &'static str,
    pub message: String,
    pub details: Vec<Detail>,
    /// The fingerprint trusted just before this test.
    pub trusted: Option<String>,
    pub host_key: Option<HostKeyStep>,
}

/// Rows of the servers table per page (the default server selector lists every server).
pub const SERVERS_PER_PAGE: usize = 25;

/// A server in the default server selector.
#[derive(Debug, Clone)]
pub struct Choice {
    pub id: String,
    pub name: String,
    pub kind_label: &'static str,
}

#[derive(Template)]
#[template(path = "servers.html")]
struct ServersPage {
    chrome: Chrome,
    csrf: String,
    upgrade: Option<Upgrade>,
    /// This page's rows of the table.
    rows: Vec<Summary>,
    /// Every server, for the default server selector.
    choices: Vec<Choice>,
    default_id: String,
    result: Option<TestPanel>,
    /// 1-based; `pages` is at least 1.
    page: usize,
    pages: usize,
}

/// Which page of the table to show.
#[derive(Debug, Clone, Copy)]
enum At {
    /// This page (1-based; past the end: the last one).
    Page(u64),
    /// The page holding this server (the first page when it is not listed).
    Holding(Uuid),
}

/// The number of pages of `total` rows, and the page `at` shows (both 1-based).
fn page_of(total: usize, at: At, position: impl Fn(Uuid) -> Option<usize>) -> (usize, usize) {
    let pages = total.div_ceil(SERVERS_PER_PAGE).max(1);
    let page = match at {
        At::Page(n) => usize::try_from(n).unwrap_or(usize::MAX).clamp(1, pages),
        At::Holding(id) => position(id).map_or(1, |i| i / SERVERS_PER_PAGE + 1),
    };
    (page, pages)
}

/// The servers page with `status`, a notice and maybe a test result, at page `at` of the table.
async fn render(
    console: &Console,
    who: &SignedIn,
    at: At,
    status: StatusCode,
    notice: Option<Notice>,
    result: Option<TestPanel>,
) -> HttpResponse {
    let p = who.0.principal();
    let chrome = Chrome::signed_in(who, "/servers").with_notice(notice);
    let (list, upgrade) = match console.servers.list(&p).await {
        Ok(list) => (list, None),
        Err(e) => match upgrade_of(&e, &console.upgrade_url) {
            Some(u) => (Vec::new(), Some(u)),
            None => return error_page(console, chrome, e),
        },
    };
    let (page_no, pages) = page_of(list.len(), at, |id| list.iter().position(|s| s.id == id));
    let rows = list
        .iter()
        .skip((page_no - 1) * SERVERS_PER_PAGE)
        .take(SERVERS_PER_PAGE)
        .map(Summary::of)
        .collect::<Vec<_>>();
    let mut result = result;
    if let Some(r) = result.as_mut()
        && r.server_name.is_empty()
    {
        r.server_name = list
            .iter()
            .find(|s| s.id.to_string() == r.server_id)
            .map(|s| s.name.clone())
            .unwrap_or_default();
    }
    page(
        status,
        &ServersPage {
            chrome,
            csrf: who.0.csrf_token.clone(),
            upgrade,
            default_id: list
                .iter()
                .find(|s| s.is_default)
                .map(|s| s.id.to_string())
                .unwrap_or_default(),
            choices: list
                .iter()
                .map(|s| Choice {
                    id: s.id.to_string(),
                    name: s.name.clone(),
                    kind_label: type_label(s.server_type),
                })
                .collect(),
            rows,
            result,
            page: page_no,
            pages,
        },
    )
}

#[derive(Debug, Deserialize)]
pub struct ListQuery {
    page: Option<u64>,
    done: Option<String>,
    server: Option<String>,
    name: Option<String>,
}

/// `GET /servers`
pub async fn list(
    console: web::Data<Console>,
    who: SignedIn,
    q: web::Query<ListQuery>,
) -> HttpResponse {
    let p = who.0.principal();
    let named = q.server.as_deref().and_then(server_id);
    let name = match named {
        Some(id) => console.servers.get(&p, id).await.ok().map(|s| s.name),
        None => q.name.clone(),
    };
    // A page asked for; else the page of the server just saved, made default or tested.
    let at = match (q.page, named) {
        (Some(n), _) => At::Page(n),
        (None, Some(id)) => At::Holding(id),
        (None, None) => At::Page(1),
    };
    let called = |n: &Option<String>| {
        n.as_ref()
            .map_or_else(|| "The server".to_string(), |n| format!("“{n}”"))
    };
    let notice = match q.done.as_deref() {
        Some("created") => Some(Notice::ok(format!(
            "{} is saved. Test it to check the connection (an SSH server shows its host key \
             for you to compare and trust).",
            called(&name)
        ))),
        Some("saved") => Some(Notice::ok(format!("{} is saved.", called(&name)))),
        Some("deleted") => Some(Notice::ok(format!("{} is deleted.", called(&name)))),
        Some("default") if q.server.as_deref() == Some("none") => Some(Notice::ok(
            "You have no default server now: agent work runs only where a request names a \
             server.",
        )),
        Some("default") => Some(Notice::ok(format!(
            "{} is now your default server.",
            called(&name)
        ))),
        _ => None,
    };
    render(&console, &who, at, StatusCode::OK, notice, None).await
}

/// The details of a test result as shown (never the error code, shown as the message).
fn details_of(details: &Value) -> Vec<Detail> {
    let Some(map) = details.as_object() else {
        return Vec::new();
    };
    map.iter()
        .filter(|(k, _)| k.as_str() != "code")
        .map(|(k, v)| {
            let label = match k.as_str() {
                "uname" => "System (uname -a)".to_string(),
                "host_key_fingerprint" => "Host key".to_string(),
                "version" => "Version".to_string(),
                "api_version" => "API version".to_string(),
                "os" => "Operating system".to_string(),
                "namespace" => "Namespace".to_string(),
                other => other.replace('_', " "),
            };
            let mut value = match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            if value.chars().count() > 2000 {
                value = value.chars().take(2000).collect::<String>() + "…";
            }
            let plain = k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
            Detail {
                id: if plain {
                    format!("test-detail-{k}")
                } else {
                    String::new()
                },
                label,
                value,
            }
        })
        .collect()
}

/// The panel for a test outcome; an unverified host key becomes the host-key step.
fn panel_of(id: Uuid, t: ServerTest) -> TestPanel {
    let (label, status) = status_of(Some(t.status));
    let code = t.details.get("code").and_then(Value::as_str);
    let host_key = match (code, t.details.get("host_key_fingerprint")) {
        (Some("host_key_unverified"), Some(Value::String(fp))) => Some(HostKeyStep {
            presented: fp.clone(),
            ..HostKeyStep::default()
        }),
        _ => None,
    };
    TestPanel {
        server_id: id.to_string(),
        status,
        label,
        message: if host_key.is_some() {
            "The server's host key is not trusted yet: nothing was sent to it.".into()
        } else {
            capitalise(&t.message)
        },
        details: if host_key.is_some() {
            Vec::new()
        } else {
            details_of(&t.details)
        },
        host_key,
        ..TestPanel::default()
    }
}

/// The panel for a changed host key.
fn mismatch_panel(id: Uuid, pinned: String, presented: String) -> TestPanel {
    TestPanel {
        server_id: id.to_string(),
        status: "failed",
        label: "Host key changed",
        message: "The server presented a different host key than the one you trusted. \
                  Nothing was sent to it."
            .into(),
        host_key: Some(HostKeyStep {
            mismatch: true,
            presented,
            pinned,
            error: None,
        }),
        ..TestPanel::default()
    }
}

/// Shows the outcome of `r` (a test, or a trust then a test) on the list.
async fn show_test(
    console: &Console,
    who: &SignedIn,
    id: Uuid,
    r: Result<ServerTest, CoreError>,
    trusted: Option<String>,
) -> HttpResponse {
    match r {
        Ok(t) => {
            let mut panel = panel_of(id, t);
            panel.trusted = trusted;
            render(
                console,
                who,
                At::Holding(id),
                StatusCode::OK,
                None,
                Some(panel),
            )
            .await
        }
        Err(CoreError::Exec(ExecError::HostKeyMismatch { pinned, presented })) => {
            let panel = mismatch_panel(id, pinned.clone(), presented.clone());
            let view = (console.errors)(CoreError::Exec(ExecError::HostKeyMismatch {
                pinned,
                presented,
            }));
            render(
                console,
                who,
                At::Holding(id),
                view.status,
                None,
                Some(panel),
            )
            .await
        }
        Err(e) => {
            let view = (console.errors)(e);
            render(
                console,
                who,
                At::Holding(id),
                view.status,
                Some(Notice::error(view.message)),
                None,
            )
            .await
        }
    }
}

/// `POST /servers/{id}/test`: tests the connection and shows what the server answered.
pub async fn test(
    console: web::Data<Console>,
    path: web::Path<String>,
    CsrfForm { who, .. }: CsrfForm,
) -> HttpResponse {
    let Some(id) = server_id(&path) else {
        return not_found(Some(who)).await;
    };
    let r = console.servers.test(&who.0.principal(), id).await;
    show_test(&console, &who, id, r, None).await
}

#[derive(Deserialize)]
pub struct TrustForm {
    #[serde(default)]
    fingerprint: String,
    /// Ticked to replace a key trusted before.
    #[serde(default)]
    replace: Option<String>,
}

/// `POST /servers/{id}/trust`: trusts the fingerprint the person compared (the server must
/// present that key now), then tests again.
pub async fn trust(
    console: web::Data<Console>,
    path: web::Path<String>,
    CsrfForm { who, form }: CsrfForm<TrustForm>,
) -> HttpResponse {
    let Some(id) = server_id(&path) else {
        return not_found(Some(who)).await;
    };
    let p = who.0.principal();
    let server = match console.servers.get(&p, id).await {
        Ok(s) => s,
        Err(e) => return error_page(&console, Chrome::signed_in(&who, "/servers"), e),
    };
    let fingerprint = form.fingerprint.trim().to_string();
    if fingerprint.is_empty() {
        let view = console.invalid_field(
            "invalid_fingerprint",
            "No fingerprint was sent: test the server again to see it.",
        );
        return render(
            &console,
            &who,
            At::Holding(id),
            view.status,
            Some(Notice::error(view.message)),
            None,
        )
        .await;
    }
    // Replacing a trusted key takes a ticked box (the form of a changed key has one).
    if let Some(pinned) = pinned_host_key(&server.connection_config)
        && pinned != fingerprint
        && form.replace.is_none()
    {
        let view = console.invalid_field(
            "replacement_not_confirmed",
            "Tick the box to confirm that you replaced this server's host key yourself.",
        );
        let mut panel = mismatch_panel(id, pinned.to_string(), fingerprint);
        if let Some(step) = panel.host_key.as_mut() {
            step.error = Some(view.message);
        }
        return render(
            &console,
            &who,
            At::Holding(id),
            view.status,
            None,
            Some(panel),
        )
        .await;
    }
    match console
        .servers
        .trust_host_key(&p, id, Some(&fingerprint))
        .await
    {
        Ok(_) => {
            let r = console.servers.test(&p, id).await;
            show_test(&console, &who, id, r, Some(fingerprint)).await
        }
        // The server presents another key than the one compared: compare again.
        Err(CoreError::Exec(ExecError::HostKeyMismatch { pinned, presented })) => {
            let view = (console.errors)(CoreError::Exec(ExecError::HostKeyMismatch {
                pinned,
                presented: presented.clone(),
            }));
            let mut panel = match pinned_host_key(&server.connection_config) {
                // A key was trusted before: still the changed-key warning.
                Some(before) if before != presented => {
                    mismatch_panel(id, before.to_string(), presented)
                }
                _ => TestPanel {
                    server_id: id.to_string(),
                    status: "failed",
                    label: "Not trusted",
                    host_key: Some(HostKeyStep {
                        presented,
                        ..HostKeyStep::default()
                    }),
                    ..TestPanel::default()
                },
            };
            panel.message = "The server now presents a different key than the one you \
                             compared, so nothing was trusted. Compare this one before you \
                             trust it."
                .into();
            render(
                &console,
                &who,
                At::Holding(id),
                view.status,
                None,
                Some(panel),
            )
            .await
        }
        Err(e) => {
            let view = (console.errors)(e);
            render(
                &console,
                &who,
                At::Holding(id),
                view.status,
                Some(Notice::error(view.message)),
                None,
            )
            .await
        }
    }
}

/// `POST /servers/{id}/default`: makes this server the default.
pub async fn make_default(
    console: web::Data<Console>,
    path: web::Path<String>,
    CsrfForm { who, .. }: CsrfForm,
) -> HttpResponse {
    let Some(id) = server_id(&path) else {
        return not_found(Some(who)).await;
    };
    match console.servers.make_default(&who.0.principal(), id).await {
        Ok(_) => see_other(&format!("/servers?done=default&server={id}")),
        Err(e) => error_page(&console, Chrome::signed_in(&who, "/servers"), e),
    }
}

#[derive(Deserialize)]
pub struct DefaultForm {
    /// A server id, or `none`.
    #[serde(default)]
    server: String,
}

/// `POST /servers/default`: the default selector (a server, or none).
pub async fn choose_default(
    console: web::Data<Console>,
    CsrfForm { who, form }: CsrfForm<DefaultForm>,
) -> HttpResponse {
    let p = who.0.principal();
    let chrome = || Chrome::signed_in(&who, "/servers");
    if form.server == "none" {
        let current = match console.servers.default_server(&p).await {
            Ok(c) => c,
            Err(e) => return error_page(&console, chrome(), e),
        };
        if let Some(c) = current {
            let clear = UpdateServer {
                is_default: Some(false),
                ..UpdateServer::default()
            };
            if let Err(e) = console.servers.update(&p, c.id, clear).await {
                return error_page(&console, chrome(), e);
            }
        }
        return see_other("/servers?done=default&server=none");
    }
    let Some(id) = server_id(&form.server) else {
        let view = console.invalid_field("invalid_server", "Choose a server, or no default.");
        return render(
            &console,
            &who,
            At::Page(1),
            view.status,
            Some(Notice::error(view.message)),
            None,
        )
        .await;
    };
    match console.servers.make_default(&p, id).await {
        Ok(_) => see_other(&format!("/servers?done=default&server={id}")),
        Err(e) => error_page(&console, chrome(), e),
    }
}

/// `GET /servers/{id}/delete`: asks first.
pub async fn confirm_delete(
    console: web::Data<Console>,
    who: SignedIn,
    path: web::Path<String>,
) -> HttpResponse {
    let Some(id) = server_id(&path) else {
        return not_found(Some(who)).await;
    };
    let chrome = Chrome::signed_in(&who, "/servers");
    let server = match console.servers.get(&who.0.principal(), id).await {
        Ok(s) => s,
        Err(e) => return error_page(&console, chrome, e),
    };
    page(
        StatusCode::OK,
        &ConfirmPage {
            chrome,
            title: format!("Delete the server “{}”?", server.name),
            text: if server.is_default {
                "It is your default server: agent work will run only where a request names \
                 a server until you choose another default. Its settings and credentials are \
                 deleted; the machine itself is not touched."
                    .into()
            } else {
                "Its settings and credentials are deleted; the machine itself is not touched. \
                 You can add it again later."
                    .into()
            },
            action: format!("/servers/{id}/delete"),
            button: "Delete the server".into(),
            back: "/servers",
            csrf: who.0.csrf_token.clone(),
        },
    )
}

/// `POST /servers/{id}/delete`
pub async fn delete(
    console: web::Data<Console>,
    path: web::Path<String>,
    CsrfForm { who, .. }: CsrfForm,
) -> HttpResponse {
    let Some(id) = server_id(&path) else {
        return not_found(Some(who)).await;
    };
    let p = who.0.principal();
    let chrome = || Chrome::signed_in(&who, "/servers");
    let name = match console.servers.get(&p, id).await {
        Ok(s) => s.name,
        Err(e) => return error_page(&console, chrome(), e),
    };
    match console.servers.delete(&p, id).await {
        Ok(()) => see_other(&format!("/servers?done=deleted&name={}", encode(&name))),
        Err(e) => error_page(&console, chrome(), e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_of_the_table() {
        let none = |_| None;
        assert_eq!(
            page_of(0, At::Page(1), none),
            (1, 1),
            "an empty list is one page"
        );
        assert_eq!(page_of(25, At::Page(2), none), (1, 1));
        assert_eq!(page_of(26, At::Page(2), none), (2, 2));
        assert_eq!(
            page_of(30, At::Page(0), none),
            (1, 2),
            "before the start: the first"
        );
        assert_eq!(
            page_of(30, At::Page(u64::MAX), none),
            (2, 2),
            "past the end: the last"
        );
        let id = Uuid::new_v4();
        assert_eq!(page_of(30, At::Holding(id), |_| Some(24)), (1, 2));
        assert_eq!(page_of(30, At::Holding(id), |_| Some(25)), (2, 2));
        assert_eq!(
            page_of(30, At::Holding(id), none),
            (1, 2),
            "not listed: the first"
        );
    }
}
