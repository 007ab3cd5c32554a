//! Running a command on a server: a form, then its output, exit code and duration on the
//! same page. The core's exec (its request rules, rate limit and gate) as the JSON API's.

use std::collections::BTreeMap;

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use askama::Template;
use byok_core::CoreError;
use byok_core::execution::{
    CommandSpec, DEFAULT_EXEC_TIMEOUT_SECS, ExecRequest, ExecResult, MAX_EXEC_TIMEOUT_SECS,
};
use serde::Deserialize;

use super::view::{Summary, server_id};
use crate::pages::{Chrome, Notice, error_page, not_found};
use crate::session::{CsrfForm, SignedIn};
use crate::state::Console;
use crate::web::page;

/// The most of each output stream a page shows, counted as escaped HTML (the page stays
/// under its size budget whatever the output holds).
const SHOWN_OUTPUT: usize = 56 * 1024;

/// An output stream as shown.
#[derive(Debug, Default)]
struct Shown {
    text: String,
    /// Cut to fit the page.
    clipped: bool,
    bytes: usize,
}

/// `s` cut so that its escaped HTML stays within `budget` bytes.
fn clip(s: &str, budget: usize) -> Shown {
    let mut used = 0;
    let mut end = s.len();
    for (i, c) in s.char_indices() {
        used += match c {
            '&' | '"' | '\'' => 6,
            '<' | '>' => 4,
            c => c.len_utf8(),
        };
        if used > budget {
            end = i;
            break;
        }
    }
    Shown {
        text: s[..end].to_string(),
        clipped: end < s.len(),
        bytes: s.len(),
    }
}

/// What the command did, as shown.
#[derive(Debug, Default)]
struct Outcome {
    exit_code: String,
    succeeded: bool,
    duration: String,
    timed_out: bool,
    truncated: bool,
    stdout: Shown,
    stderr: Shown,
}

fn outcome_of(r: ExecResult) -> Outcome {
    Outcome {
        exit_code: r
            .exit_code
            .map_or_else(|| "none (killed)".to_string(), |c| c.to_string()),
        succeeded: r.exit_code == Some(0),
        duration: if r.duration_ms < 1000 {
            format!("{} ms", r.duration_ms)
        } else {
            format!("{:.1} s", r.duration_ms as f64 / 1000.0)
        },
        timed_out: r.timed_out,
        truncated: r.truncated,
        stdout: clip(&r.stdout, SHOWN_OUTPUT),
        stderr: clip(&r.stderr, SHOWN_OUTPUT),
    }
}

#[derive(Template)]
#[template(path = "server_run.html")]
struct RunPage {
    chrome: Chrome,
    csrf: String,
    server: Summary,
    command: String,
    timeout: String,
    max_timeout: u64,
    error_command: Option<String>,
    error_timeout: Option<String>,
    /// A host-key problem: point to the test on the list.
    host_key_hint: bool,
    result: Option<Outcome>,
}

fn run_page(
    who: &SignedIn,
    status: StatusCode,
    notice: Option<Notice>,
    p: RunPage,
) -> HttpResponse {
    page(
        status,
        &RunPage {
            chrome: Chrome::signed_in(who, "/servers").with_notice(notice),
            ..p
        },
    )
}

fn blank(who: &SignedIn, server: Summary) -> RunPage {
    RunPage {
        chrome: Chrome::signed_in(who, "/servers"),
        csrf: who.0.csrf_token.clone(),
        server,
        command: String::new(),
        timeout: DEFAULT_EXEC_TIMEOUT_SECS.to_string(),
        max_timeout: MAX_EXEC_TIMEOUT_SECS,
        error_command: None,
        error_timeout: None,
        host_key_hint: false,
        result: None,
    }
}

/// `GET /servers/{id}/run`
pub async fn form(
    console: web::Data<Console>,
    who: SignedIn,
    path: web::Path<String>,
) -> HttpResponse {
    let Some(id) = server_id(&path) else {
        return not_found(Some(who)).await;
    };
    match console.servers.get(&who.0.principal(), id).await {
        Ok(s) => {
            let p = blank(&who, Summary::of(&s));
            run_page(&who, StatusCode::OK, None, p)
        }
        Err(e) => error_page(&console, Chrome::signed_in(&who, "/servers"), e),
    }
}

#[derive(Deserialize)]
pub struct RunForm {
    #[serde(default)]
    command: String,
    #[serde(default)]
    timeout_secs: String,
}

/// `POST /servers/{id}/run`: runs the command and shows what it did.
pub async fn run(
    console: web::Data<Console>,
    path: web::Path<String>,
    CsrfForm { who, form }: CsrfForm<RunForm>,
) -> HttpResponse {
    let Some(id) = server_id(&path) else {
        return not_found(Some(who)).await;
    };
    let principal = who.0.principal();
    let server = match console.servers.get(&principal, id).await {
        Ok(s) => s,
        Err(e) => return error_page(&console, Chrome::signed_in(&who, "/servers"), e),
    };
    let mut p = RunPage {
        command: form.command.clone(),
        timeout: form.timeout_secs.trim().to_string(),
        ..blank(&who, Summary::of(&server))
    };
    if p.timeout.is_empty() {
        p.timeout = DEFAULT_EXEC_TIMEOUT_SECS.to_string();
    }
    let timeout = match p.timeout.parse::<u64>() {
        Ok(n) => n,
        Err(_) => {
            let view = console.invalid_field("invalid_timeout", "Enter a number of seconds.");
            p.error_timeout = Some(view.message);
            return run_page(&who, view.status, None, p);
        }
    };
    let request = match ExecRequest::new(
        CommandSpec::Shell(form.command),
        BTreeMap::new(),
        None,
        timeout,
    ) {
        Ok(r) => r,
        Err(e) => {
            let code = match &e {
                CoreError::InvalidInput { code, .. } => *code,
                _ => "",
            };
            let view = (console.errors)(e);
            if code == "invalid_timeout" {
                p.error_timeout = Some(view.message);
            } else {
                p.error_command = Some(view.message);
            }
            return run_page(&who, view.status, None, p);
        }
    };
    match console.servers.exec(&principal, id, request).await {
        Ok(r) => {
            p.result = Some(outcome_of(r));
            run_page(&who, StatusCode::OK, None, p)
        }
        Err(e) => {
            let view = (console.errors)(e);
            p.host_key_hint = view.code.starts_with("host_key_");
            run_page(&who, view.status, Some(Notice::error(view.message)), p)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_is_clipped_by_its_escaped_size() {
        let plain = clip("hello", 10);
        assert_eq!((plain.text.as_str(), plain.clipped), ("hello", false));
        let angle = clip("<<<<<", 10);
        assert_eq!((angle.text.as_str(), angle.clipped), ("<<", true));
        let wide = clip("ééé", 5);
        assert_eq!(wide.text, "éé");
        assert_eq!(wide.bytes, 6);
    }
}
