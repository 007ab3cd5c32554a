//! Adding a server (choose its type, then its form) and changing one.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use askama::Template;
use byok_core::CoreError;
use byok_core::execution::{ExecutionServer, ServerType, mask_config};
use byok_core::services::{CreateServer, UpdateServer};
use serde::Deserialize;
use serde_json::Value;

use super::fields::{self, FormView, Prefill};
use super::form::{self, FormProblem, ServerInput};
use super::view::{Upgrade, server_id, type_description, type_label, upgrade_for};
use crate::pages::{Chrome, error_page, not_found};
use crate::session::{CsrfForm, SignedIn};
use crate::state::Console;
use crate::web::{page, see_other};

/// A type offered on the chooser.
#[derive(Debug)]
struct TypeChoice {
    id: &'static str,
    label: &'static str,
    description: &'static str,
}

#[derive(Template)]
#[template(path = "server_new.html")]
struct ChoosePage {
    chrome: Chrome,
    upgrade: Option<Upgrade>,
    types: Vec<TypeChoice>,
    error: Option<String>,
}

#[derive(Template)]
#[template(path = "server_form.html")]
struct FormPage {
    chrome: Chrome,
    csrf: String,
    title: String,
    /// `add-server-form` or `edit-server-form`.
    form_id: &'static str,
    action: String,
    /// The type, posted with a new server.
    server_type: &'static str,
    kind_label: &'static str,
    editing: bool,
    form: FormView,
    submit: &'static str,
}

#[derive(Debug, Deserialize)]
pub struct NewQuery {
    #[serde(rename = "type")]
    kind: Option<String>,
}

fn choose(
    console: &Console,
    who: &SignedIn,
    status: StatusCode,
    error: Option<String>,
) -> HttpResponse {
    let p = who.0.principal();
    let types = console
        .servers
        .offered_types(&p)
        .into_iter()
        .map(|k| TypeChoice {
            id: k.as_str(),
            label: type_label(k),
            description: type_description(k),
        })
        .collect();
    page(
        status,
        &ChoosePage {
            chrome: Chrome::signed_in(who, "/servers"),
            upgrade: upgrade_for(p.tier, &console.upgrade_url),
            types,
            error,
        },
    )
}

/// The type the person may add (offered here and allowed by their tier).
fn offered(console: &Console, who: &SignedIn, raw: &str) -> Option<ServerType> {
    let kind = raw.parse::<ServerType>().ok()?;
    console
        .servers
        .offered_types(&who.0.principal())
        .contains(&kind)
        .then_some(kind)
}

/// The heading of the add form.
fn add_title(kind: ServerType) -> &'static str {
    match kind {
        ServerType::Ssh => "Add an SSH server",
        ServerType::Docker => "Add a Docker server",
        ServerType::Kubernetes => "Add a Kubernetes server",
        ServerType::Local => "Add a local sandbox",
    }
}

fn new_form(who: &SignedIn, status: StatusCode, form: FormView) -> HttpResponse {
    let kind = form.kind;
    page(
        status,
        &FormPage {
            chrome: Chrome::signed_in(who, "/servers"),
            csrf: who.0.csrf_token.clone(),
            title: add_title(kind).into(),
            form_id: "add-server-form",
            action: "/servers".into(),
            server_type: kind.as_str(),
            kind_label: type_label(kind),
            editing: false,
            form,
            submit: "Save the server",
        },
    )
}

fn edit_form(
    who: &SignedIn,
    server: &ExecutionServer,
    status: StatusCode,
    form: FormView,
) -> HttpResponse {
    page(
        status,
        &FormPage {
            chrome: Chrome::signed_in(who, "/servers"),
            csrf: who.0.csrf_token.clone(),
            title: format!("Edit “{}”", server.name),
            form_id: "edit-server-form",
            action: format!("/servers/{}/edit", server.id),
            server_type: server.server_type.as_str(),
            kind_label: type_label(server.server_type),
            editing: true,
            form,
            submit: "Save the changes",
        },
    )
}

/// `GET /servers/new[?type=…]`: the type chooser, or the form of the chosen type.
pub async fn new(
    console: web::Data<Console>,
    who: SignedIn,
    q: web::Query<NewQuery>,
) -> HttpResponse {
    let Some(raw) = q.kind.as_deref().filter(|k| !k.is_empty()) else {
        return choose(&console, &who, StatusCode::OK, None);
    };
    match offered(&console, &who, raw) {
        Some(kind) => new_form(
            &who,
            StatusCode::OK,
            fields::view(kind, &Prefill::default()),
        ),
        None => choose(
            &console,
            &who,
            StatusCode::NOT_FOUND,
            Some("That type of server is not available to you here: choose one below.".into()),
        ),
    }
}

/// Puts a core refusal on the form: next to the field it names, else above the form.
/// Returns the status the application decided.
fn refusal(console: &Console, form: &mut FormView, e: CoreError) -> StatusCode {
    let field = match &e {
        CoreError::InvalidInput { code, message } => form::field_of(code, message),
        CoreError::Conflict { code, .. } => form::field_of(code, ""),
        _ => None,
    };
    let view = (console.errors)(e);
    form.set_error(field, view.message);
    view.status
}

/// Puts a problem of the form itself (found before the core saw it) next to its field, as a
/// core validation error of the config. Returns the status the application decided.
fn problem(console: &Console, form: &mut FormView, p: FormProblem) -> StatusCode {
    let view = console.invalid_field("invalid_connection_config", p.message);
    form.set_error(Some(p.field), view.message);
    view.status
}

fn workspace(raw: &str) -> Option<String> {
    Some(raw.trim().to_string()).filter(|p| !p.is_empty())
}

/// `POST /servers`: adds a server.
pub async fn create(
    console: web::Data<Console>,
    CsrfForm { who, form: input }: CsrfForm<ServerInput>,
) -> HttpResponse {
    let Some(kind) = offered(&console, &who, &input.server_type) else {
        let view = console.invalid_field("invalid_server_type", "Choose a type of server.");
        return choose(&console, &who, view.status, Some(view.message));
    };
    let refused = || fields::view(kind, &Prefill::from_input(&input, kind, false));
    let config = match form::connection_config(kind, &input, false) {
        Ok(c) => c,
        Err(p) => {
            let mut f = refused();
            let status = problem(&console, &mut f, p);
            return new_form(&who, status, f);
        }
    };
    let req = CreateServer {
        name: input.name.clone(),
        server_type: kind.as_str().into(),
        connection_config: config,
        workspace_path: workspace(&input.workspace_path),
        is_default: input.is_default.is_some(),
    };
    match console.servers.create(&who.0.principal(), req).await {
        Ok(s) => see_other(&format!("/servers?done=created&server={}", s.id)),
        Err(e) => {
            let mut f = refused();
            let status = refusal(&console, &mut f, e);
            new_form(&who, status, f)
        }
    }
}

/// What the edit form starts from: the stored server, its config masked.
fn stored_prefill(server: &ExecutionServer) -> Prefill {
    let config = match mask_config(&server.connection_config) {
        Value::Object(o) => o,
        _ => serde_json::Map::new(),
    };
    Prefill {
        name: server.name.clone(),
        workspace_path: server.workspace_path.clone().unwrap_or_default(),
        is_default: server.is_default,
        is_active: server.is_active,
        config,
        editing: true,
        ..Prefill::default()
    }
}

/// `GET /servers/{id}/edit`
pub async fn edit(
    console: web::Data<Console>,
    who: SignedIn,
    path: web::Path<String>,
) -> HttpResponse {
    let Some(id) = server_id(&path) else {
        return not_found(Some(who)).await;
    };
    match console.servers.get(&who.0.principal(), id).await {
        Ok(s) => {
            let f = fields::view(s.server_type, &stored_prefill(&s));
            edit_form(&who, &s, StatusCode::OK, f)
        }
        Err(e) => error_page(&console, Chrome::signed_in(&who, "/servers"), e),
    }
}

/// `POST /servers/{id}/edit`: saves the changes (empty secrets keep the stored ones).
pub async fn update(
    console: web::Data<Console>,
    path: web::Path<String>,
    CsrfForm { who, form: input }: CsrfForm<ServerInput>,
) -> HttpResponse {
    let Some(id) = server_id(&path) else {
        return not_found(Some(who)).await;
    };
    let p = who.0.principal();
    let server = match console.servers.get(&p, id).await {
        Ok(s) => s,
        Err(e) => return error_page(&console, Chrome::signed_in(&who, "/servers"), e),
    };
    let kind = server.server_type;
    let refused = || {
        let mut pre = Prefill::from_input(&input, kind, true);
        pre.keep_stored(&stored_prefill(&server));
        fields::view(kind, &pre)
    };
    let config = match form::connection_config(kind, &input, true) {
        Ok(c) => c,
        Err(p) => {
            let mut f = refused();
            let status = problem(&console, &mut f, p);
            return edit_form(&who, &server, status, f);
        }
    };
    let wants_default = input.is_default.is_some();
    let req = UpdateServer {
        name: Some(input.name.clone()),
        connection_config: Some(config),
        workspace_path: Some(workspace(&input.workspace_path)),
        is_default: (wants_default != server.is_default).then_some(wants_default),
        is_active: Some(input.is_active.is_some()),
    };
    match console.servers.update(&p, id, req).await {
        Ok(_) => see_other(&format!("/servers?done=saved&server={id}")),
        Err(e) => {
            let mut f = refused();
            let status = refusal(&console, &mut f, e);
            edit_form(&who, &server, status, f)
        }
    }
}
