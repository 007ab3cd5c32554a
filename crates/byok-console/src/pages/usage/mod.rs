//! Usage: the last 30 days of the signed-in person's gateway requests — totals, a daily chart
//! (own key, platform key, errors) with the same numbers as a table, and a table per
//! provider. It reads the daily totals the store keeps (`UsageRepository::usage_daily`: one
//! row per day, provider and credential), never a request's row.

mod chart;

use std::collections::BTreeMap;

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use askama::Template;
use byok_core::{CredentialKind, DailyUsage, ProviderId};
use chrono::{Days, NaiveDate, Utc};

use super::{Chrome, error_page};
use crate::session::SignedIn;
use crate::state::Console;
use crate::web::page;

/// How many UTC calendar days the page covers, today included.
pub const WINDOW_DAYS: u64 = 30;

/// One day's totals (zero for a day without requests).
#[derive(Debug, Clone, Default)]
pub struct Day {
    /// `2026-11-03`
    pub date: String,
    /// `Nov 3`
    pub short: String,
    pub requests: u64,
    pub own: u64,
    pub platform: u64,
    pub errors: u64,
    own_errors: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
}

impl Day {
    /// Own-key requests that did not fail.
    pub fn own_ok(&self) -> u64 {
        self.own.saturating_sub(self.own_errors)
    }

    /// Platform-key requests that did not fail.
    pub fn platform_ok(&self) -> u64 {
        self.platform
            .saturating_sub(self.errors.saturating_sub(self.own_errors))
    }

    fn stack(&self) -> chart::Stack {
        chart::Stack {
            own: self.own_ok(),
            platform: self.platform_ok(),
            errors: self.errors,
            label: self.short.clone(),
            tip: self.tip(),
        }
    }

    fn tip(&self) -> String {
        format!(
            "{}: {} requests ({} own key, {} platform key, {} errors)",
            self.date,
            grouped(self.requests),
            grouped(self.own),
            grouped(self.platform),
            grouped(self.errors)
        )
    }

    fn add(&mut self, g: &DailyUsage) {
        self.requests += g.requests;
        self.errors += g.errors;
        self.input_tokens += g.input_tokens;
        self.output_tokens += g.output_tokens;
        match g.credential {
            CredentialKind::User => {
                self.own += g.requests;
                self.own_errors += g.errors;
            }
            CredentialKind::System => self.platform += g.requests,
        }
    }
}

/// One provider's totals over the window.
#[derive(Debug, Clone, Default)]
struct ProviderRow {
    id: String,
    name: String,
    requests: u64,
    own: u64,
    platform: u64,
    errors: u64,
    input_tokens: u64,
    output_tokens: u64,
}

/// The window's totals, as the figures show them.
#[derive(Debug, Default)]
struct Totals {
    requests: String,
    own_share: String,
    own: String,
    platform: String,
    errors: String,
    error_rate: String,
    input_tokens: String,
    output_tokens: String,
}

#[derive(Template)]
#[template(path = "usage.html")]
struct UsagePage {
    chrome: Chrome,
    from: String,
    to: String,
    empty: bool,
    totals: Totals,
    days: Vec<Day>,
    providers: Vec<ProviderRow>,
    chart: chart::Chart,
    /// The chart's text alternative.
    summary: String,
}

/// `1234567` → `1,234,567`.
pub fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// [`grouped`] for the template (which passes fields by reference).
pub fn count(n: &u64) -> String {
    grouped(*n)
}

/// `part` of `whole` as a whole percentage (`—` of nothing).
fn percent(part: u64, whole: u64) -> String {
    if whole == 0 {
        return "—".into();
    }
    let p = part as f64 * 100.0 / whole as f64;
    if p > 0.0 && p < 1.0 {
        "<1%".into()
    } else {
        format!("{:.0}%", p)
    }
}

/// The days of the window (oldest first, every day present) and the providers (most
/// requests first) from the store's groups.
fn aggregate(first: NaiveDate, groups: &[DailyUsage]) -> (Vec<Day>, Vec<ProviderRow>) {
    let mut days: Vec<Day> = (0..WINDOW_DAYS)
        .filter_map(|i| first.checked_add_days(Days::new(i)))
        .map(|d| Day {
            date: d.format("%Y-%m-%d").to_string(),
            short: d.format("%b %-d").to_string(),
            ..Day::default()
        })
        .collect();
    let mut providers: BTreeMap<&str, ProviderRow> = BTreeMap::new();
    for g in groups {
        let offset = (g.day - first).num_days();
        if let Some(day) = usize::try_from(offset).ok().and_then(|i| days.get_mut(i)) {
            day.add(g);
        } else {
            // Outside the window (a clock ahead of the database's): not shown.
            continue;
        }
        let p = providers
            .entry(g.provider.as_str())
            .or_insert_with(|| ProviderRow {
                id: g.provider.clone(),
                name: g
                    .provider
                    .parse::<ProviderId>()
                    .map_or_else(|_| g.provider.clone(), |p| p.display_name().to_string()),
                ..ProviderRow::default()
            });
        p.requests += g.requests;
        p.errors += g.errors;
        p.input_tokens += g.input_tokens;
        p.output_tokens += g.output_tokens;
        match g.credential {
            CredentialKind::User => p.own += g.requests,
            CredentialKind::System => p.platform += g.requests,
        }
    }
    let mut providers: Vec<ProviderRow> = providers.into_values().collect();
    providers.sort_by(|a, b| b.requests.cmp(&a.requests).then(a.id.cmp(&b.id)));
    (days, providers)
}

/// The chart's text alternative: the totals and the busiest day.
fn summary(days: &[Day], from: &str, to: &str) -> String {
    let sum = |f: fn(&Day) -> u64| days.iter().map(f).sum::<u64>();
    let (requests, own, platform, errors) = (
        sum(|d| d.requests),
        sum(|d| d.own),
        sum(|d| d.platform),
        sum(|d| d.errors),
    );
    let mut text = format!(
        "Requests per day from {from} to {to}: {} in all, {} with your own keys, {} with \
         the platform's key, {} errors.",
        grouped(requests),
        grouped(own),
        grouped(platform),
        grouped(errors)
    );
    if let Some(busiest) = days
        .iter()
        .filter(|d| d.requests > 0)
        .max_by(|a, b| a.requests.cmp(&b.requests).then(b.date.cmp(&a.date)))
    {
        text.push_str(&format!(
            " The busiest day was {} with {} requests.",
            busiest.date,
            grouped(busiest.requests)
        ));
    }
    text
}

fn totals(days: &[Day]) -> Totals {
    let sum = |f: fn(&Day) -> u64| days.iter().map(f).sum::<u64>();
    let requests = sum(|d| d.requests);
    let own = sum(|d| d.own);
    let errors = sum(|d| d.errors);
    Totals {
        requests: grouped(requests),
        own_share: percent(own, requests),
        own: grouped(own),
        platform: grouped(sum(|d| d.platform)),
        errors: grouped(errors),
        error_rate: percent(errors, requests),
        input_tokens: grouped(sum(|d| d.input_tokens)),
        output_tokens: grouped(sum(|d| d.output_tokens)),
    }
}

/// The usage route.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/usage", web::get().to(show));
}

/// `GET /usage`
pub async fn show(console: web::Data<Console>, who: SignedIn) -> HttpResponse {
    let chrome = Chrome::signed_in(&who, "/usage");
    let today = Utc::now().date_naive();
    let first = today
        .checked_sub_days(Days::new(WINDOW_DAYS - 1))
        .unwrap_or(today);
    let groups = match console.usage.usage_daily(who.0.user.id, first).await {
        Ok(g) => g,
        Err(e) => return error_page(&console, chrome, e.into()),
    };
    let (days, providers) = aggregate(first, &groups);
    let from = first.format("%Y-%m-%d").to_string();
    let to = today.format("%Y-%m-%d").to_string();
    page(
        StatusCode::OK,
        &UsagePage {
            chrome,
            empty: days.iter().all(|d| d.requests == 0),
            totals: totals(&days),
            chart: chart::chart(&days.iter().map(Day::stack).collect::<Vec<_>>()),
            summary: summary(&days, &from, &to),
            from,
            to,
            days,
            providers,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn g(day: NaiveDate, provider: &str, credential: CredentialKind, r: u64, e: u64) -> DailyUsage {
        DailyUsage {
            day,
            provider: provider.into(),
            credential,
            requests: r,
            errors: e,
            input_tokens: r * 10,
            output_tokens: r,
        }
    }

    #[test]
    fn numbers_are_grouped_and_shares_rounded() {
        assert_eq!(grouped(0), "0");
        assert_eq!(grouped(999), "999");
        assert_eq!(grouped(1000), "1,000");
        assert_eq!(grouped(1_234_567), "1,234,567");
        assert_eq!(percent(0, 0), "—");
        assert_eq!(percent(1, 3), "33%");
        assert_eq!(percent(1, 1000), "<1%");
        assert_eq!(percent(5, 5), "100%");
    }

    #[test]
    fn groups_become_thirty_days_and_providers() {
        let first = NaiveDate::from_ymd_opt(2026, 11, 3).unwrap();
        let last = first.checked_add_days(Days::new(29)).unwrap();
        let groups = [
            g(first, "openai", CredentialKind::User, 10, 2),
            g(first, "openai", CredentialKind::System, 5, 1),
            g(last, "anthropic", CredentialKind::User, 20, 0),
            g(last, "mystery", CredentialKind::System, 1, 1),
            // Outside the window: ignored.
            g(
                last.succ_opt().unwrap(),
                "openai",
                CredentialKind::User,
                99,
                0,
            ),
        ];
        let (days, providers) = aggregate(first, &groups);
        assert_eq!(days.len(), 30);
        assert_eq!(days[0].date, "2026-11-03");
        assert_eq!(days[0].short, "Nov 3");
        assert_eq!(
            (
                days[0].requests,
                days[0].own,
                days[0].platform,
                days[0].errors
            ),
            (15, 10, 5, 3)
        );
        assert_eq!((days[0].own_ok(), days[0].platform_ok()), (8, 4));
        assert_eq!(days[29].requests, 21);
        assert!(days[1..29].iter().all(|d| d.requests == 0));
        let names: Vec<&str> = providers.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["Anthropic", "OpenAI", "mystery"]);
        assert_eq!((providers[1].own, providers[1].platform), (10, 5));
        let t = totals(&days);
        assert_eq!((t.requests.as_str(), t.own_share.as_str()), ("36", "83%"));
        let s = summary(&days, "2026-11-03", "2026-12-02");
        assert!(
            s.contains("36 in all, 30 with your own keys, 6 with the platform's key, 4 errors")
        );
        assert!(s.contains("busiest day was 2026-12-02 with 21 requests"));
        let c = chart::chart(&days.iter().map(Day::stack).collect::<Vec<_>>());
        assert_eq!(c.bars.len(), 30);
        assert_eq!(c.bars[0].segments.len(), 3);
        assert!(c.bars[1].segments.is_empty());
        let top = c.bars[29].segments.last().unwrap();
        assert!(top.y >= 12.0 - 0.1, "the tallest bar fits under the top");
        assert_eq!(c.y_ticks.last().unwrap().text, "30");
        assert_eq!(c.x_ticks.last().unwrap().text, "Dec 2");
    }
}
