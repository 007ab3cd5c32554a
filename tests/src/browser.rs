//! A real Chromium for the console's tests: Debian's `chromium`, driven through its
//! `chromium-driver` (WebDriver over plain http on loopback) with fantoccini, and the checks
//! every console page passes there ([`Browser::audit`]): no serious or critical axe-core
//! violation in light and in dark, every control reached by Tab in document order with a
//! visible focus, no horizontal scrolling at 375 px, at most [`MAX_PAGE_BYTES`] with its
//! assets, and (with `BYOK_WRITE_SCREENSHOTS=1`) screenshots in `docs/images`.
//!
//! One browser per test run: the console suite (`tests/integration/console.rs`) is one test
//! whose steps share it. Without Chromium, chromedriver or axe-core the suite fails and says
//! how to install them; `BYOK_TEST_SKIP_BROWSER=1` (by hand only, `make test` never sets it)
//! turns that into a printed skip.

use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::actions::{InputSource, KeyAction, KeyActions};
use fantoccini::elements::Element;
use fantoccini::key::Key;
use fantoccini::wd::WebDriverCompatibleCommand;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

/// No console page, with its stylesheet, script and icon, may weigh more (decoded).
pub const MAX_PAGE_BYTES: u64 = 150 * 1024;
/// The desktop viewport of the checks and the screenshots.
pub const DESKTOP: (u32, u32) = (1280, 800);
/// The small-screen check's viewport (an iPhone's 375 CSS pixels).
pub const MOBILE: (u32, u32) = (375, 812);

/// Chromium's switches: headless, no sandbox (tests run as root in containers), nothing
/// that reaches the network on its own, and a fixed scale for stable screenshots.
const CHROMIUM_ARGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--disable-extensions",
    "--no-first-run",
    "--hide-scrollbars",
    "--force-device-scale-factor=1",
    "--lang=en-US",
    "--window-size=1280,800",
];

/// Runs chromedriver in the background and, when the test process goes away (its end of the
/// stdin pipe closes, whatever the reason), stops chromedriver and the browser with it (the
/// whole process group) and removes the profile.
const WATCHDOG: &str = r#"
"$1" --port="$2" --log-level=WARNING >"$3/chromedriver.log" 2>&1 &
read -r _ || :
trap '' TERM
kill -TERM -$$ 2>/dev/null
wait
sleep 0.3
rm -rf "$3"
"#;

fn env_path(var: &str, candidates: &[&str]) -> Option<PathBuf> {
    if let Ok(p) = std::env::var(var) {
        return Some(PathBuf::from(p)).filter(|p| p.exists());
    }
    candidates.iter().map(PathBuf::from).find(|p| p.exists())
}

/// The repository's root (the parent of the tests crate).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Where screenshots go when `BYOK_WRITE_SCREENSHOTS=1`, else `None`.
pub fn screenshot_dir() -> Option<PathBuf> {
    (std::env::var("BYOK_WRITE_SCREENSHOTS").as_deref() == Ok("1"))
        .then(|| repo_root().join("docs/images"))
}

/// A Chrome DevTools command through chromedriver (`goog/cdp/execute`).
#[derive(Debug)]
struct Cdp {
    cmd: &'static str,
    params: Value,
}

impl WebDriverCompatibleCommand for Cdp {
    fn endpoint(
        &self,
        base: &url::Url,
        session: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        base.join(&format!(
            "session/{}/goog/cdp/execute",
            session.unwrap_or_default()
        ))
    }

    fn method_and_body(&self, _: &url::Url) -> (http::Method, Option<String>) {
        (
            http::Method::POST,
            Some(json!({"cmd": self.cmd, "params": self.params}).to_string()),
        )
    }
}

/// A page the audit visits: a name (for messages and screenshot files) and its path (which
/// [`Browser::audit`] opens; [`Browser::audit_current`] audits whatever is loaded).
#[derive(Debug, Clone, Copy)]
pub struct Page {
    pub name: &'static str,
    pub path: &'static str,
    /// Whether to write its screenshots (every page is audited).
    pub screenshot: bool,
    /// An error page (a 403 or 404 on purpose), else the page must answer below 400.
    pub error: bool,
}

/// One headless Chromium, its chromedriver, and the page base URL paths are resolved against.
pub struct Browser {
    pub client: Client,
    base: String,
    axe: String,
    watchdog: Child,
    stdin: Option<ChildStdin>,
    started: Instant,
    /// Problems found by audits (checked by the caller at the end).
    pub problems: Vec<String>,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn missing(what: &str) -> Option<Browser> {
    if std::env::var("BYOK_TEST_SKIP_BROWSER").as_deref() == Ok("1") {
        eprintln!("SKIPPED: the console's browser tests ({what}; BYOK_TEST_SKIP_BROWSER=1)");
        return None;
    }
    panic!(
        "{what}: the console's browser tests need Debian's chromium and chromium-driver \
         (apt-get install chromium chromium-driver) and axe-core (npm install --prefix tests/axe); \
         `make test` installs all three. To skip these tests when running by hand, set \
         BYOK_TEST_SKIP_BROWSER=1."
    )
}

impl Browser {
    /// Starts chromedriver and one headless Chromium; `None` only when the browser is missing
    /// and `BYOK_TEST_SKIP_BROWSER=1` allows skipping.
    pub async fn start() -> Option<Self> {
        let Some(driver) = env_path(
            "BYOK_TEST_CHROMEDRIVER",
            &["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"],
        ) else {
            return missing("chromedriver not found");
        };
        let Some(chromium) = env_path(
            "BYOK_TEST_CHROMIUM",
            &["/usr/lib/chromium/chromium", "/usr/bin/chromium"],
        ) else {
            return missing("chromium not found");
        };
        let axe_path = repo_root().join("tests/axe/node_modules/axe-core/axe.min.js");
        let Ok(axe) = std::fs::read_to_string(&axe_path) else {
            return missing(&format!("{} not found", axe_path.display()));
        };
        let started = Instant::now();
        // The profile directory outlives this process only until the watchdog removes it.
        let dir = tempfile::Builder::new()
            .prefix("byok-chromium.")
            .tempdir()
            .unwrap()
            .keep();
        let port = free_port();
        use std::os::unix::process::CommandExt;
        let mut watchdog = Command::new("sh")
            .arg("-c")
            .arg(WATCHDOG)
            .arg("sh")
            .arg(&driver)
            .arg(port.to_string())
            .arg(&dir)
            .process_group(0)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("sh");
        let stdin = watchdog.stdin.take();
        let mut args: Vec<String> = CHROMIUM_ARGS.iter().map(|s| s.to_string()).collect();
        args.push(format!("--user-data-dir={}", dir.join("profile").display()));
        let caps = json!({
            "browserName": "chrome",
            "pageLoadStrategy": "normal",
            "goog:chromeOptions": {"binary": chromium, "args": args},
        });
        let caps = caps.as_object().unwrap().clone();
        let url = format!("http://127.0.0.1:{port}/");
        let deadline = Instant::now() + Duration::from_secs(20);
        let client = loop {
            match ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
                .capabilities(caps.clone())
                .connect(&url)
                .await
            {
                Ok(c) => break c,
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!(
                    "chromedriver ({}) did not start a Chromium session: {e}\n{}",
                    driver.display(),
                    std::fs::read_to_string(dir.join("chromedriver.log")).unwrap_or_default()
                ),
            }
        };
        let b = Self {
            client,
            base: String::new(),
            axe,
            watchdog,
            stdin,
            started,
            problems: Vec::new(),
        };
        b.viewport(DESKTOP).await;
        eprintln!(
            "console browser: Chromium started in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        Some(b)
    }

    /// Resolves paths against `base` (a server's `http://127.0.0.1:port`) from now on.
    pub fn at(&mut self, base: &str) {
        self.base = base.trim_end_matches('/').to_string();
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    fn url(&self, path: &str) -> String {
        if path.starts_with("http://") || path.starts_with("https://") {
            path.to_string()
        } else {
            format!("{}{path}", self.base)
        }
    }

    /// Closes the session (Chromium exits) and stops chromedriver.
    pub async fn finish(mut self) {
        let _ = self.client.clone().close().await;
        eprintln!(
            "console browser: {:.1} s from start to finish",
            self.started.elapsed().as_secs_f64()
        );
        self.stop();
    }

    fn stop(&mut self) {
        // Closing stdin tells the watchdog to stop everything it started.
        drop(self.stdin.take());
        let _ = self.watchdog.wait();
    }

    async fn cdp(&self, cmd: &'static str, params: Value) -> Value {
        self.client
            .issue_cmd(Cdp { cmd, params })
            .await
            .unwrap_or_else(|e| panic!("CDP {cmd}: {e}"))
    }

    /// The viewport, in CSS pixels (`DESKTOP` or `MOBILE`).
    pub async fn viewport(&self, (width, height): (u32, u32)) {
        self.cdp(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": width, "height": height, "deviceScaleFactor": 1,
                   "mobile": width < 600}),
        )
        .await;
    }

    /// `prefers-color-scheme` as the page sees it; checks that the page follows.
    pub async fn scheme(&self, dark: bool) {
        let value = if dark { "dark" } else { "light" };
        self.cdp(
            "Emulation.setEmulatedMedia",
            json!({"features": [{"name": "prefers-color-scheme", "value": value}]}),
        )
        .await;
    }

    /// The body's background brightness (0–255): how dark the page really is.
    pub async fn body_brightness(&self) -> f64 {
        let v = self
            .js(
                "const m = getComputedStyle(document.body).backgroundColor.match(/\\d+(\\.\\d+)?/g);
                 return m ? (0.2126 * m[0] + 0.7152 * m[1] + 0.0722 * m[2]) : -1;",
            )
            .await;
        v.as_f64().unwrap_or(-1.0)
    }

    /// Runs `script` (a function body) in the page.
    pub async fn js(&self, script: &str) -> Value {
        self.js_with(script, Vec::new()).await
    }

    pub async fn js_with(&self, script: &str, args: Vec<Value>) -> Value {
        self.client
            .execute(script, args)
            .await
            .unwrap_or_else(|e| panic!("script failed: {e}\n{script}"))
    }

    /// Opens a path of the current server (or an absolute URL) and waits for it to load.
    pub async fn open(&self, path: &str) {
        self.client
            .goto(&self.url(path))
            .await
            .unwrap_or_else(|e| panic!("open {path}: {e}"));
    }

    /// The current path and query.
    pub async fn path(&self) -> String {
        let u = self.client.current_url().await.unwrap();
        match u.query() {
            Some(q) => format!("{}?{q}", u.path()),
            None => u.path().to_string(),
        }
    }

    /// The HTTP status of the current document.
    pub async fn status(&self) -> u16 {
        let v = self
            .js("const n = performance.getEntriesByType('navigation')[0]; return n ? n.responseStatus : 0;")
            .await;
        v.as_u64().unwrap_or(0) as u16
    }

    /// Waits (up to 10 s) until a new document (not the one the last click or key press was
    /// made on) has loaded at a path starting with `prefix`.
    pub async fn wait_path(&self, prefix: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let p = self.path().await;
            // A document the last click or key press came from is not the one waited for.
            let ready = self
                .js("return window.__byokLeft ? 'stale' : document.readyState;")
                .await;
            if p.starts_with(prefix) && ready == "complete" {
                return p;
            }
            if Instant::now() > deadline {
                let shown = self
                    .js("const h = document.querySelector('h1'), n = document.querySelector('.notice');
                         return (h ? h.textContent : '') + ' | ' + (n ? n.textContent : '');")
                    .await;
                panic!(
                    "still at {p} (readyState {ready}, status {}), expected {prefix}; the page says: {shown}",
                    self.status().await
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The element matching `css`, waiting up to 5 s for it.
    pub async fn el(&self, css: &str) -> Element {
        match self
            .client
            .wait()
            .at_most(Duration::from_secs(5))
            .for_element(Locator::Css(css))
            .await
        {
            Ok(e) => e,
            Err(e) => panic!("no element {css} on {}: {e}", self.here().await),
        }
    }

    /// The current URL.
    pub async fn here(&self) -> String {
        self.client
            .current_url()
            .await
            .map(|u| u.to_string())
            .unwrap_or_default()
    }

    /// Whether an element matches `css` now.
    pub async fn has(&self, css: &str) -> bool {
        !self
            .client
            .find_all(Locator::Css(css))
            .await
            .unwrap_or_default()
            .is_empty()
    }

    /// The text of the element matching `css`.
    pub async fn text(&self, css: &str) -> String {
        self.el(css).await.text().await.unwrap()
    }

    /// The whole page's visible text.
    pub async fn page_text(&self) -> String {
        self.text("body").await
    }

    /// Clicks the element matching `css` (navigations it starts are waited for by the caller).
    pub async fn click(&self, css: &str) {
        let e = self.el(css).await;
        self.leaving().await;
        e.click()
            .await
            .unwrap_or_else(|e| panic!("click {css}: {e}"));
    }

    /// Replaces the value of a field.
    pub async fn fill(&self, css: &str, text: &str) {
        let e = self.el(css).await;
        e.clear().await.unwrap();
        e.send_keys(text).await.unwrap();
    }

    /// Chooses an option of a select by its value.
    pub async fn choose(&self, css: &str, value: &str) {
        self.el(css)
            .await
            .select_by_value(value)
            .await
            .unwrap_or_else(|e| panic!("select {value} in {css}: {e}"));
    }

    /// The value of a cookie the browser holds for the current page, if any.
    pub async fn cookie(&self, name: &str) -> Option<fantoccini::cookies::Cookie<'static>> {
        self.client.get_named_cookie(name).await.ok()
    }

    /// Forgets every cookie (signs the browser out of every server).
    pub async fn forget_cookies(&self) {
        self.client.delete_all_cookies().await.unwrap();
    }

    // --- The keyboard ---------------------------------------------------------------------

    /// Marks the current document, so that [`Browser::wait_path`] waits for the next one.
    async fn leaving(&self) {
        self.js("window.__byokLeft = true;").await;
    }

    /// Presses and releases keys, one after the other.
    pub async fn keys(&self, keys: &[char]) {
        self.leaving().await;
        let mut seq = KeyActions::new("keyboard".into());
        for k in keys {
            seq = seq
                .then(KeyAction::Down { value: *k })
                .then(KeyAction::Up { value: *k });
        }
        self.client
            .perform_actions(seq)
            .await
            .unwrap_or_else(|e| panic!("keys: {e}"));
    }

    /// Presses one key.
    pub async fn press(&self, key: Key) {
        self.keys(&[key.into()]).await;
    }

    /// Types text with the keyboard (into whatever has the focus).
    pub async fn type_text(&self, text: &str) {
        let chars: Vec<char> = text.chars().collect();
        self.keys(&chars).await;
    }

    /// Whether the focused element matches `css`.
    pub async fn focused(&self, css: &str) -> bool {
        self.js_with(
            "const a = document.activeElement; return !!a && a.matches(arguments[0]);",
            vec![json!(css)],
        )
        .await
            == json!(true)
    }

    /// Presses Tab until the focus is on an element matching `css` (at most 80 times).
    pub async fn tab_to(&self, css: &str) {
        for _ in 0..80 {
            if self.focused(css).await {
                return;
            }
            self.press(Key::Tab).await;
        }
        panic!(
            "Tab never reached {css} on {} (focus on {})",
            self.here().await,
            self.js("const a = document.activeElement; return a ? a.outerHTML.slice(0, 120) : '';")
                .await
        );
    }

    /// With the focus on a select: presses ArrowDown until its value is `value`.
    pub async fn arrow_to_option(&self, value: &str) {
        for _ in 0..40 {
            let v = self.js("return document.activeElement.value;").await;
            if v == json!(value) {
                return;
            }
            self.press(Key::Down).await;
        }
        panic!("ArrowDown never chose {value}");
    }

    // --- The audit of a page ---------------------------------------------------------------

    /// Opens `page` and audits it (see [`Browser::audit_current`]).
    pub async fn audit(&mut self, page: Page) {
        self.open(page.path).await;
        self.audit_current(page).await;
    }

    /// Audits the loaded page without reloading it: weight, screenshots, axe-core in light
    /// and dark, the keyboard, and 375 px. Problems are collected in `self.problems`.
    pub async fn audit_current(&mut self, page: Page) {
        let t = Instant::now();
        let name = page.name;
        let weight = self.weight().await;
        if weight > MAX_PAGE_BYTES {
            self.problems.push(format!(
                "{name}: {weight} bytes with its assets (limit {MAX_PAGE_BYTES})"
            ));
        }
        let shots = screenshot_dir().filter(|_| page.screenshot);
        // Light.
        self.scheme(false).await;
        let light = self.body_brightness().await;
        if let Some(dir) = &shots {
            self.screenshot(&dir.join(format!("console-{name}-light.png")))
                .await;
        }
        let v = self.axe().await;
        self.problems
            .extend(v.into_iter().map(|v| format!("{name} (light): {v}")));
        let (stops, k) = self.keyboard().await;
        self.problems
            .extend(k.into_iter().map(|k| format!("{name}: keyboard: {k}")));
        // Dark.
        self.scheme(true).await;
        let dark = self.body_brightness().await;
        if !((0.0..80.0).contains(&dark) && light > 170.0) {
            self.problems.push(format!(
                "{name}: the page does not follow the color scheme \
                 (body brightness {light:.0} light, {dark:.0} dark)"
            ));
        }
        if let Some(dir) = &shots {
            self.screenshot(&dir.join(format!("console-{name}-dark.png")))
                .await;
        }
        let v = self.axe_colours().await;
        self.problems
            .extend(v.into_iter().map(|v| format!("{name} (dark): {v}")));
        self.scheme(false).await;
        // Small screens.
        self.viewport(MOBILE).await;
        let overflow = self.overflow().await;
        self.viewport(DESKTOP).await;
        if !overflow.is_empty() {
            self.problems.push(format!(
                "{name}: wider than {} px (scrolls sideways): {overflow}",
                MOBILE.0
            ));
        }
        eprintln!(
            "console audit: {name} ({weight} bytes, {stops} Tab stops) in {} ms",
            t.elapsed().as_millis()
        );
    }

    /// The decoded size of the document, its stylesheet, script and images.
    pub async fn weight(&self) -> u64 {
        self.js("let n = 0;
             for (const e of performance.getEntriesByType('navigation')) n += e.decodedBodySize;
             for (const e of performance.getEntriesByType('resource')) n += e.decodedBodySize;
             return n;")
            .await
            .as_u64()
            .unwrap_or(0)
    }

    /// Writes a PNG of the viewport (top of the page, no focus ring).
    pub async fn screenshot(&self, path: &Path) {
        self.js(
            "if (document.activeElement) document.activeElement.blur(); window.scrollTo(0, 0);",
        )
        .await;
        let png = self.client.screenshot().await.unwrap();
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, png).unwrap();
        // A third of the size with a palette, when pngquant is installed (docs only).
        let _ = Command::new("pngquant")
            .args([
                "--force",
                "--skip-if-larger",
                "--quality",
                "70-95",
                "--speed",
                "1",
            ])
            .arg("--output")
            .arg(path)
            .arg(path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }

    /// axe-core's serious and critical violations on the loaded page, one line each with the
    /// rule, its help and the elements; minor and moderate ones are printed, not returned.
    pub async fn axe(&self) -> Vec<String> {
        self.axe_rules(None).await
    }

    /// [`Browser::axe`] with only the rules that depend on colours (the dark pass: the other
    /// rules see the same document in both schemes).
    pub async fn axe_colours(&self) -> Vec<String> {
        self.axe_rules(Some(&["color-contrast", "link-in-text-block"]))
            .await
    }

    async fn axe_rules(&self, only: Option<&[&str]>) -> Vec<String> {
        if self.js("return typeof axe;").await != json!("object") {
            self.js(&format!("{}\nreturn typeof axe;", self.axe)).await;
        }
        let r = self
            .client
            .execute_async(
                "const done = arguments[arguments.length - 1];
                 const only = arguments[0];
                 const options = {resultTypes: ['violations']};
                 if (only) options.runOnly = {type: 'rule', values: only};
                 axe.run(document, options).then(
                   r => done(r.violations.map(v => ({
                     id: v.id, impact: v.impact, help: v.help,
                     nodes: v.nodes.slice(0, 5).map(n => n.target.join(' ') + ' — ' + n.failureSummary.replace(/\\s+/g, ' '))
                   }))),
                   e => done({error: String(e)}));",
                vec![json!(only)],
            )
            .await
            .unwrap();
        if let Some(e) = r.get("error") {
            panic!("axe.run failed: {e}");
        }
        let mut out = Vec::new();
        for v in r.as_array().unwrap() {
            let impact = v["impact"].as_str().unwrap_or("unknown");
            let line = format!(
                "axe {} ({impact}): {} — {}",
                v["id"].as_str().unwrap_or(""),
                v["help"].as_str().unwrap_or(""),
                v["nodes"]
                    .as_array()
                    .map(|n| n
                        .iter()
                        .filter_map(Value::as_str)
                        .collect::<Vec<_>>()
                        .join(" | "))
                    .unwrap_or_default()
            );
            if matches!(impact, "serious" | "critical") {
                out.push(line);
            } else {
                eprintln!("console audit: note: {line}");
            }
        }
        out
    }

    /// Presses Tab once per control and checks that the focus visits every link, button and
    /// field of the page in document order (one radio button per group), each with a visible
    /// focus indicator. The number of Tab stops, and the problems, one line each.
    pub async fn keyboard(&self) -> (usize, Vec<String>) {
        let setup = self.js(KEYBOARD_SETUP).await;
        let list = |k: &str| -> Vec<String> {
            setup[k]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap_or("").to_string())
                .collect()
        };
        let expected = list("expected");
        let mut problems = Vec::new();
        let positive = list("positive");
        if !positive.is_empty() {
            // A positive tabindex takes an element out of the document's order.
            problems.push(format!("positive tabindex on {}", positive.join(", ")));
        }
        if expected.is_empty() {
            return (0, problems);
        }
        let tab: char = Key::Tab.into();
        self.keys(&vec![tab; expected.len()]).await;
        let log = self.js(KEYBOARD_RESULT).await;
        let log = log.as_array().unwrap();
        for (i, want) in expected.iter().enumerate() {
            let Some(got) = log.get(i) else {
                problems.push(format!(
                    "Tab #{} left the page or did nothing (expected {want})",
                    i + 1
                ));
                break;
            };
            if got["index"].as_i64() != Some(i as i64) {
                problems.push(format!(
                    "Tab #{} went to {}, expected {want} (order: {})",
                    i + 1,
                    got["what"].as_str().unwrap_or(""),
                    expected.join(", ")
                ));
                break;
            }
            if got["visible"] != json!(true) {
                problems.push(format!("no visible focus on {want}"));
            }
        }
        (expected.len(), problems)
    }

    /// Elements sticking out on the right, when the page is wider than the viewport.
    async fn overflow(&self) -> String {
        self.js(
            "const w = document.documentElement.clientWidth;
             if (document.documentElement.scrollWidth <= w + 1) return '';
             const out = [];
             for (const e of document.querySelectorAll('body *')) {
               const r = e.getBoundingClientRect();
               if (r.right > w + 1 && ![...e.children].some(c => c.getBoundingClientRect().right > w + 1))
                 out.push(e.tagName.toLowerCase() + (e.id ? '#' + e.id : '') + (e.className ? '.' + String(e.className).replace(/ /g, '.') : '') + ' (' + Math.round(r.right) + ' px)');
               if (out.length >= 5) break;
             }
             return document.documentElement.scrollWidth + ' px: ' + out.join(', ');",
        )
        .await
        .as_str()
        .unwrap_or("")
        .to_string()
    }
}

/// Lists what Tab should reach, in order, and records where each Tab lands (with whether the
/// focus is visible there). Starts the sequential focus navigation at the top of the page.
const KEYBOARD_SETUP: &str = r#"
const candidates = 'a[href], area[href], button, input, select, textarea, summary, iframe, [tabindex], [contenteditable="true"]';
const describe = e => {
  let d = e.tagName.toLowerCase();
  if (e.id) d += '#' + e.id;
  if (e.getAttribute('name')) d += '[name=' + e.getAttribute('name') + ']';
  const label = (e.getAttribute('aria-label') || e.textContent || e.value || '').trim().replace(/\s+/g, ' ').slice(0, 40);
  if (label) d += ' "' + label + '"';
  return d;
};
const reachable = e => {
  if (e.disabled || e.type === 'hidden' || e.tabIndex < 0) return false;
  if (e.closest('[hidden], [inert]')) return false;
  const s = getComputedStyle(e);
  if (s.visibility === 'hidden' || s.display === 'none' || e.getClientRects().length === 0) return false;
  const details = e.closest('details');
  if (details && !details.open && !(e.tagName === 'SUMMARY' && e.parentElement === details)) return false;
  if (e.tagName === 'SUMMARY' && e.parentElement.tagName !== 'DETAILS') return false;
  if (e.type === 'radio') {
    const group = [...document.querySelectorAll('input[type=radio]')].filter(r => r.name === e.name && r.form === e.form);
    return (group.find(r => r.checked) || group[0]) === e;
  }
  return true;
};
const expected = [...document.querySelectorAll(candidates)].filter(reachable);
const positive = expected.filter(e => e.tabIndex > 0);
window.__kb = {expected, log: []};
if (!window.__kbListening) {
  window.__kbListening = true;
  document.addEventListener('focusin', ev => {
    const t = ev.target, s = getComputedStyle(t);
    const outline = s.outlineStyle !== 'none' && parseFloat(s.outlineWidth) > 0 && s.outlineColor !== 'rgba(0, 0, 0, 0)';
    window.__kb.log.push({index: window.__kb.expected.indexOf(t), what: describe(t), visible: outline || s.boxShadow !== 'none'});
  }, true);
}
if (document.activeElement) document.activeElement.blur();
// Sequential navigation starts at the top: focus the root for a moment.
const root = document.documentElement;
root.setAttribute('tabindex', '-1');
root.focus({preventScroll: true});
root.removeAttribute('tabindex');
window.__kb.log = [];
return {expected: expected.map(describe), positive: positive.map(describe)};
"#;

const KEYBOARD_RESULT: &str = r#"
const log = window.__kb.log;
if (document.activeElement) document.activeElement.blur();
window.scrollTo(0, 0);
return log;
"#;

impl Drop for Browser {
    fn drop(&mut self) {
        self.stop();
    }
}
