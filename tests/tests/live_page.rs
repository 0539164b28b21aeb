//! The registry's page in a real headless Chromium (Debian's `chromium` and `chromium-driver`),
//! driven over chromedriver's W3C WebDriver HTTP API: rows appear and leave without a reload
//! while JavaScript runs, and the page refreshes itself when JavaScript is off. A screenshot
//! goes to `target/artifacts/live-page.png` for CI's artifacts.
//!
//! Loopback only. The browser gets a temporary profile and home, its session is deleted and
//! chromedriver's whole process group (the browser with it) killed on every path.
//!
//! Without `/usr/bin/chromium` or `/usr/bin/chromedriver` these tests fail, naming the package
//! to install (`make test` installs both).

use end_to_end::{eventually, free_port, get, outside_program, post_json, Process, Registry, Status, TempDir};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const GENEROUS: Duration = Duration::from_secs(10);
/// How long a row may take to appear in the page after its registration.
const LIVE: Duration = Duration::from_secs(5);

/// A WebDriver session in a headless Chromium under a chromedriver this test started.
struct Browser {
    http: ureq::Agent,
    base: String,
    session: Option<String>,
    // Fields drop in this order, after `drop` deleted the session: chromedriver's process
    // group, then the profile and home directory.
    driver: Process,
    _home: TempDir,
}

impl Browser {
    /// Starts chromedriver and a browser session; `javascript` off disables scripts in pages.
    fn start(chromedriver: &Path, chromium: &Path, javascript: bool) -> Browser {
        let home = TempDir::new("chromium");
        let port = free_port();
        // Chromium's crash handler and caches write under HOME: keep them in the temporary one.
        let envs = [
            ("HOME", home.path.display().to_string()),
            ("XDG_CONFIG_HOME", home.path.join(".config").display().to_string()),
            ("XDG_CACHE_HOME", home.path.join(".cache").display().to_string()),
        ];
        let driver = Process::start_program(chromedriver, &[format!("--port={port}")], &envs);
        let http: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(60)))
            .http_status_as_error(false)
            .build()
            .into();
        let mut browser =
            Browser { http, base: format!("http://127.0.0.1:{port}"), session: None, driver, _home: home };
        eventually(GENEROUS, || {
            let (_, body) = get(&format!("{}/status", browser.base))?;
            serde_json::from_str::<Value>(&body).ok().filter(|v| v["value"]["ready"] == true)
        })
        .unwrap_or_else(|| panic!("chromedriver never got ready; its log:\n{}", browser.driver.log().join("\n")));

        let mut args: Vec<String> = [
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--window-size=1280,720",
        ]
        .map(String::from)
        .to_vec();
        args.push(format!("--user-data-dir={}", browser._home.path.join("profile").display()));
        if !javascript {
            args.push("--blink-settings=scriptEnabled=false".into());
        }
        let t0 = Instant::now();
        let created = browser.call(
            "POST",
            "/session",
            Some(json!({"capabilities": {"alwaysMatch": {
                "browserName": "chrome",
                "timeouts": {"pageLoad": 30_000, "script": 10_000},
                "goog:chromeOptions": {"binary": chromium.display().to_string(), "args": args},
            }}})),
        );
        let id = created["sessionId"].as_str().unwrap_or_else(|| panic!("no sessionId in {created}")).to_string();
        eprintln!("Chromium {} up in {:?}", created["capabilities"]["browserVersion"], t0.elapsed());
        browser.session = Some(id);
        browser
    }

    /// One WebDriver command: its `value`, or a panic with chromedriver's error.
    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}{path}", self.base);
        let sent = match (method, body) {
            ("GET", _) => self.http.get(&url).call(),
            ("DELETE", _) => self.http.delete(&url).call(),
            (_, body) => self
                .http
                .post(&url)
                .header("Content-Type", "application/json")
                .send(body.unwrap_or_else(|| json!({})).to_string()),
        };
        let mut response = sent.unwrap_or_else(|e| panic!("{method} {path}: {e}; chromedriver log:\n{}", self.log()));
        let status = response.status().as_u16();
        let text = response.body_mut().read_to_string().unwrap_or_default();
        let value: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        assert_eq!(status, 200, "{method} {path}: {text}");
        value["value"].clone()
    }

    fn log(&self) -> String {
        self.driver.log().join("\n")
    }

    fn session_path(&self, path: &str) -> String {
        format!("/session/{}{path}", self.session.as_deref().expect("a session"))
    }

    fn open(&self, url: &str) {
        self.call("POST", &self.session_path("/url"), Some(json!({"url": url})));
    }

    /// Runs `script` (a function body) in the page and returns its result.
    fn run(&self, script: &str) -> Value {
        self.call("POST", &self.session_path("/execute/sync"), Some(json!({"script": script, "args": []})))
    }

    /// The page as a PNG.
    fn screenshot(&self) -> Vec<u8> {
        let encoded = self.call("GET", &self.session_path("/screenshot"), None);
        let png = base64_decode(encoded.as_str().expect("base64 text")).expect("valid base64");
        assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
        png
    }

    /// The rows of the page's table as text, with WebDriver's own element commands, which work
    /// with the page's JavaScript off.
    fn rows(&self) -> Vec<String> {
        let found = self.call(
            "POST",
            &self.session_path("/elements"),
            Some(json!({"using": "css selector", "value": "#registry tbody tr"})),
        );
        found
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .filter_map(|e| e.as_object()?.values().next()?.as_str().map(str::to_string))
            .map(|id| self.call("GET", &self.session_path(&format!("/element/{id}/text")), None))
            .map(|t| t.as_str().unwrap_or_default().to_string())
            .collect()
    }

    /// Saves a screenshot for a failure's diagnosis, if the browser still answers.
    fn save_failure(&self, name: &str) {
        let url = format!("{}{}", self.base, self.session_path("/screenshot"));
        let shot = self.http.get(&url).call().ok().and_then(|mut r| r.body_mut().read_to_string().ok());
        if let Some(png) = shot.and_then(|t| base64_decode(serde_json::from_str::<Value>(&t).ok()?["value"].as_str()?))
        {
            eprintln!("failure screenshot: {}", write_artifact(name, &png).display());
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Some(id) = self.session.take() {
            // Closes the browser; the group kill that follows catches whatever is left.
            let _ = self.http.delete(&format!("{}/session/{id}", self.base)).call();
        }
    }
}

/// Decodes standard base64 (with padding), as WebDriver sends screenshots.
fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    };
    let digits: Vec<u8> = text.bytes().filter(|c| !c.is_ascii_whitespace()).collect();
    let chunks = digits.chunks_exact(4);
    if !chunks.remainder().is_empty() {
        return None;
    }
    let mut out = Vec::with_capacity(digits.len() / 4 * 3);
    for chunk in chunks {
        let padding = chunk.iter().rev().take_while(|c| **c == b'=').count();
        let mut bits = 0u32;
        for &c in &chunk[..4 - padding] {
            bits = bits << 6 | u32::from(value(c)?);
        }
        bits <<= 6 * padding as u32;
        out.extend_from_slice(&bits.to_be_bytes()[1..4 - padding]);
    }
    Some(out)
}

/// Writes `bytes` to `target/artifacts/NAME` in the workspace, for CI to keep.
fn write_artifact(name: &str, bytes: &[u8]) -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("target").join("artifacts");
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
    path
}

/// chromedriver and Chromium; a missing one fails the test.
fn programs() -> (PathBuf, PathBuf) {
    let chromium = outside_program("/usr/bin/chromium", "chromium");
    let chromedriver = outside_program("/usr/bin/chromedriver", "chromium-driver");
    (chromedriver, chromium)
}

/// What the page shows, read by a script, and whether the marker set before is still there
/// (a reload would have dropped it).
const READ_PAGE: &str = r#"
    var main = document.getElementById("registry");
    return {
        marker: window.__marker === 1,
        index: main ? Number(main.dataset.index) : null,
        rows: main ? Array.from(main.querySelectorAll("tbody tr")).map(function (tr) { return tr.innerText; }) : [],
    };
"#;

fn row_of<'a>(page: &'a Value, name: &str) -> Option<&'a str> {
    page["rows"].as_array()?.iter().filter_map(Value::as_str).find(|r| r.split_whitespace().next() == Some(name))
}

#[test]
fn a_registration_after_the_page_loaded_appears_without_a_reload() {
    let (chromedriver, chromium) = programs();
    let registry = Registry::start(&[]);
    registry.register_healthy("before-load", &["web"]);
    registry.wait_for("before-load", Status::Passing, GENEROUS);

    let browser = Browser::start(&chromedriver, &chromium, true);
    browser.open(&format!("http://{}/", registry.ui));
    let first = browser.run(&format!("window.__marker = 1; {READ_PAGE}"));
    assert!(row_of(&first, "before-load").is_some_and(|r| r.contains("passing")), "{first:#}");
    assert!(row_of(&first, "live-row").is_none(), "{first:#}");
    let first_index = first["index"].as_u64().unwrap_or_else(|| panic!("no data-index: {first:#}"));
    // The page's script holds a blocking query now.
    eventually(GENEROUS, || registry.watchers().filter(|n| *n >= 1))
        .unwrap_or_else(|| panic!("the page never held a blocking query; console: {}", browser.log()));

    let t0 = Instant::now();
    registry.register_healthy("live-row", &["web", "live"]);
    let shown = eventually(LIVE, || Some(browser.run(READ_PAGE)).filter(|p| row_of(p, "live-row").is_some()));
    let Some(shown) = shown else {
        browser.save_failure("live-page-failure.png");
        panic!("live-row never appeared within {LIVE:?}; the page: {:#}", browser.run(READ_PAGE));
    };
    eprintln!("the row appeared {:?} after the registration", t0.elapsed());
    assert_eq!(shown["marker"], true, "the page was reloaded: {shown:#}");
    assert!(shown["index"].as_u64().is_some_and(|i| i > first_index), "{shown:#}");
    let row = row_of(&shown, "live-row").unwrap();
    assert!(row.contains(&registry.ui.to_string()) && row.contains("web, live"), "{row:?}");

    // Its first health check is a second change; the page keeps following.
    let passing = eventually(LIVE, || {
        Some(browser.run(READ_PAGE)).filter(|p| row_of(p, "live-row").is_some_and(|r| r.contains("passing")))
    });
    let Some(passing) = passing else {
        browser.save_failure("live-page-failure.png");
        panic!("live-row never showed passing; the page: {:#}", browser.run(READ_PAGE));
    };
    assert_eq!(passing["marker"], true, "the page was reloaded: {passing:#}");
    let path = write_artifact("live-page.png", &browser.screenshot());
    eprintln!("screenshot: {}", path.display());

    // A deregistration leaves the page the same way.
    let answer = post_json(&format!("http://{}/deregister", registry.api), &json!({"Name": "before-load"}))
        .expect("registry answers");
    assert_eq!(answer.status, 200);
    let gone = eventually(LIVE, || Some(browser.run(READ_PAGE)).filter(|p| row_of(p, "before-load").is_none()));
    let gone = gone.unwrap_or_else(|| panic!("before-load stayed on the page: {:#}", browser.run(READ_PAGE)));
    assert_eq!(gone["marker"], true, "the page was reloaded: {gone:#}");
    assert!(row_of(&gone, "live-row").is_some(), "{gone:#}");
}

/// The fallback: with JavaScript off, the `noscript` refresh (every 5 s) brings the row.
#[test]
fn without_javascript_the_page_refreshes_itself() {
    let (chromedriver, chromium) = programs();
    let registry = Registry::start(&[]);
    let browser = Browser::start(&chromedriver, &chromium, false);
    browser.open(&format!("http://{}/", registry.ui));
    assert!(browser.rows().is_empty());
    // No script runs, so the page holds no blocking query.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(registry.watchers(), Some(0), "a script ran although JavaScript is off");

    registry.register_healthy("refreshed", &[]);
    let t0 = Instant::now();
    let rows = eventually(Duration::from_secs(10), || {
        Some(browser.rows()).filter(|rows| rows.iter().any(|r| r.starts_with("refreshed")))
    });
    assert!(rows.is_some(), "the page never refreshed itself: {:?}", browser.rows());
    eprintln!("the self-refresh showed the row after {:?}", t0.elapsed());
}
