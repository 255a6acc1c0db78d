//! [`Browser`]: a real headless Chromium, driven over WebDriver, for end-to-end tests of the web client.
//!
//! One `chromedriver` per test process serves every session: it is started on first use on a loopback port it
//! picks itself, and it goes away with the test process (see [`start_driver`]). Each [`Browser`] is its own
//! Chromium with a fresh profile directory, so sessions share no storage (localStorage, IndexedDB, service
//! workers), exactly as two people's browsers would not.
//!
//! The helpers wait for conditions with a deadline instead of sleeping, type the way a person does (one key event
//! per character), and on failure say what the page showed: a screenshot saved under
//! `target/test-artifacts/browser/`, the page's text, its URL and its console messages.
//!
//! [`Browser::axe_violations`] runs axe-core (pinned in `tests/js/package-lock.json`) in the page: the accessibility
//! check any browser test can make.
//!
//! Debian's `chromium` and `chromium-driver` packages must be installed (`scripts/test.sh` installs them); without
//! them every browser test fails and says so.

use std::future::Future;
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use fantoccini::elements::Element;
use fantoccini::wd::{Capabilities, TimeoutConfiguration};
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{Value, json};
use tokio::sync::OnceCell;

/// Where Debian's `chromium-driver` package puts the driver.
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// Where Debian's `chromium` package puts the browser.
pub const CHROMIUM: &str = "/usr/bin/chromium";

/// Chromium's flags: headless, and every flag needed to run as root in a container without a GPU, and to keep
/// Chromium from talking to anything but the test server (no sync, updates, QUIC or first-run pages).
const CHROMIUM_FLAGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
];

/// How long chromedriver may take to say which port it listens on.
const DRIVER_START_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a navigation or a script may take.
const PAGE_TIMEOUT: Duration = Duration::from_secs(30);

/// How often the wait helpers look again. Each look is one WebDriver round trip (a few milliseconds).
const POLL_INTERVAL: Duration = Duration::from_millis(10);

/// The tallest full-page screenshot, in CSS pixels.
pub const FULL_PAGE_LIMIT: u32 = 8000;

/// How much of the page's text a failure message quotes.
const PAGE_TEXT_LIMIT: usize = 4000;

/// A browser window's size in CSS pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowSize {
    /// Width of the page's viewport.
    pub width: u32,
    /// Height of the page's viewport.
    pub height: u32,
}

impl WindowSize {
    /// A laptop screen.
    pub const DESKTOP: WindowSize = WindowSize {
        width: 1280,
        height: 900,
    };
    /// A phone held upright (an iPhone 12 to 15's viewport).
    pub const PHONE: WindowSize = WindowSize {
        width: 390,
        height: 844,
    };
}

/// The running chromedriver shared by every session of this test process.
struct Driver {
    /// `http://127.0.0.1:PORT`, chromedriver's WebDriver endpoint.
    url: String,
    /// The shell that runs chromedriver and ends its process group once our end of its stdin closes (see
    /// [`start_driver`]). Never dropped: statics live until the process exits, which is what closes the pipe.
    _guard: Mutex<Child>,
}

/// The shared chromedriver, started by the first test that needs it.
static DRIVER: OnceCell<Driver> = OnceCell::const_new();

/// The shared chromedriver, starting it if this is the first session of the process. A failure is not kept, so
/// every test that needs a browser reports it.
async fn driver() -> anyhow::Result<&'static Driver> {
    DRIVER
        .get_or_try_init(|| async {
            tokio::task::spawn_blocking(start_driver)
                .await
                .context("the thread starting chromedriver panicked")?
        })
        .await
}

/// Fails with what to do when the browser or its driver is not installed.
fn require_installed() -> anyhow::Result<()> {
    for (path, package) in [(CHROMEDRIVER, "chromium-driver"), (CHROMIUM, "chromium")] {
        if !Path::new(path).is_file() {
            bail!(
                "{path} not found: the browser tests need Debian's chromium and chromium-driver packages; \
                 run `bash scripts/test.sh`, which installs them (or `apt-get install chromium chromium-driver`; \
                 {package} is missing)"
            );
        }
    }
    Ok(())
}

/// Starts chromedriver on a port it chooses (`--port=0`) and reads the port from its stdout.
///
/// Statics are never dropped, so nothing in this process could stop chromedriver at exit, and a test process that
/// panics or is killed must not leave a driver and its browsers behind. So chromedriver runs under a small shell in
/// a process group of its own; the shell waits for its stdin to close, which happens when this process exits for
/// any reason (the kernel closes our end of the pipe), and then ends the whole group: chromedriver and every
/// Chromium it started.
fn start_driver() -> anyhow::Result<Driver> {
    require_installed()?;
    // `kill 0` signals the shell's whole process group (dash's `kill` takes no negative pid after `--`).
    const SCRIPT: &str = r#""$0" --port=0 </dev/null & cat >/dev/null; kill -s TERM 0"#;
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(SCRIPT)
        .arg(CHROMEDRIVER)
        .process_group(0)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("starting chromedriver")?;
    let stdout = child
        .stdout
        .take()
        .context("chromedriver's stdout is piped")?;
    let (port_tx, port_rx) = std::sync::mpsc::channel();
    // Reads chromedriver's stdout for as long as it runs, so that it never blocks on a full pipe.
    std::thread::spawn(move || {
        let mut seen = Vec::new();
        let mut port_tx = Some(port_tx);
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(tx) = &port_tx {
                let port = line
                    .split_once("started successfully on port ")
                    .and_then(|(_, rest)| rest.trim_end_matches('.').trim().parse::<u16>().ok());
                seen.push(line);
                if let Some(port) = port {
                    let _ = tx.send(Ok(port));
                    port_tx = None;
                }
            }
        }
        if let Some(tx) = port_tx {
            let _ = tx.send(Err(seen.join("\n")));
        }
    });
    let port = match port_rx.recv_timeout(DRIVER_START_TIMEOUT) {
        Ok(Ok(port)) => port,
        Ok(Err(output)) => {
            // Closing the shell's stdin makes it end the process group.
            drop(child.stdin.take());
            bail!("chromedriver exited without saying its port; it printed:\n{output}")
        }
        Err(_) => {
            drop(child.stdin.take());
            bail!("chromedriver did not say its port within {DRIVER_START_TIMEOUT:?}")
        }
    };
    Ok(Driver {
        url: format!("http://127.0.0.1:{port}"),
        _guard: Mutex::new(child),
    })
}

/// The directory of the workspace's build output: `CARGO_TARGET_DIR` when set (relative to the workspace root if
/// relative), else `target/` in the workspace root.
pub fn target_dir() -> PathBuf {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let workspace = manifest_dir
        .parent()
        .map_or_else(|| manifest_dir.join(".."), Path::to_path_buf);
    let configured = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .or_else(|| option_env!("CARGO_TARGET_DIR").map(PathBuf::from));
    match configured {
        Some(dir) if dir.is_absolute() => dir,
        Some(dir) => workspace.join(dir),
        None => workspace.join("target"),
    }
}

/// Where the browser tests save screenshots: `target/test-artifacts/browser/`.
pub fn artifacts_dir() -> PathBuf {
    target_dir().join("test-artifacts").join("browser")
}

/// Where a caret goes in a text field before typing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caret {
    /// Before the first character.
    Start,
    /// After the last character.
    End,
    /// After this many UTF-16 units (clamped to the end), as a click in the middle of the text puts it.
    At(usize),
}

/// Where `npm ci` in `tests/js` puts axe-core's browser bundle.
fn axe_script_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("js/node_modules/axe-core/axe.min.js")
}

/// One accessibility rule a page breaks, as [`Browser::axe_violations`] reports it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct AxeViolation {
    /// axe's rule id (`color-contrast`, `label`, …), which names its documentation page.
    pub id: String,
    /// `serious` or `critical`.
    pub impact: String,
    /// What the rule asks for, in a sentence.
    pub help: String,
    /// A CSS selector of each offending element (through frames and shadow roots, joined by ` >>> `).
    pub targets: Vec<String>,
}

impl std::fmt::Display for AxeViolation {
    /// One line a failing test can print: the rule, how bad, what it asks, where.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} ({}): {} at {}",
            self.id,
            self.impact,
            self.help,
            self.targets.join(", ")
        )
    }
}

/// One headless Chromium with its own profile, driven over WebDriver.
pub struct Browser {
    /// The WebDriver session.
    client: Client,
    /// Names this session's screenshots and failure messages (e.g. `offline-edits-A`).
    name: String,
    /// The profile directory (`--user-data-dir`), removed when the browser is dropped.
    _profile: tempfile::TempDir,
    /// The WebDriver URL of this session, for chromedriver's log endpoint, which fantoccini does not wrap.
    session_url: String,
    /// Console messages read so far: reading chromedriver's log empties it, so they are kept here.
    console: Mutex<Vec<String>>,
}

impl Browser {
    /// Starts a Chromium whose viewport is `size`; `name` names its screenshots and appears in failure messages.
    pub async fn open(name: &str, size: WindowSize) -> anyhow::Result<Browser> {
        let driver = driver().await?;
        let profile = tempfile::Builder::new()
            .prefix("commandpost-chromium-")
            .tempdir()
            .context("creating a Chromium profile directory")?;
        let mut args: Vec<String> = CHROMIUM_FLAGS.iter().map(|f| (*f).to_owned()).collect();
        args.push(format!("--user-data-dir={}", profile.path().display()));
        args.push(format!("--window-size={},{}", size.width, size.height));
        let mut capabilities = Capabilities::new();
        capabilities.insert("browserName".into(), json!("chrome"));
        capabilities.insert(
            "goog:chromeOptions".into(),
            json!({"binary": CHROMIUM, "args": args}),
        );
        capabilities.insert("goog:loggingPrefs".into(), json!({"browser": "ALL"}));
        let client = ClientBuilder::new(HttpConnector::new())
            .capabilities(capabilities)
            .connect(&driver.url)
            .await
            .with_context(|| format!("opening a Chromium session through {}", driver.url))?;
        let session = client
            .session_id()
            .await
            .context("reading the WebDriver session id")?
            .context("chromedriver gave no session id")?;
        let browser = Browser {
            client,
            name: name.to_owned(),
            _profile: profile,
            session_url: format!("{}/session/{session}", driver.url),
            console: Mutex::new(Vec::new()),
        };
        // A page that never finishes loading fails the test in reasonable time, rather than WebDriver's 300 s.
        browser
            .client
            .update_timeouts(TimeoutConfiguration::new(
                Some(PAGE_TIMEOUT),
                Some(PAGE_TIMEOUT),
                Some(Duration::ZERO),
            ))
            .await
            .context("setting the WebDriver timeouts")?;
        browser.resize(size).await?;
        Ok(browser)
    }

    /// The name given to [`Browser::open`].
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The WebDriver client, for what the helpers do not cover.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Makes the page's viewport `size` (CSS pixels): sets the window size, then corrects for any browser frame.
    pub async fn resize(&self, size: WindowSize) -> anyhow::Result<()> {
        self.client
            .set_window_size(size.width, size.height)
            .await
            .context("setting the window size")?;
        let inner = self
            .execute("return [window.innerWidth, window.innerHeight];", vec![])
            .await?;
        let (Some(width), Some(height)) = (inner[0].as_u64(), inner[1].as_u64()) else {
            bail!("window.innerWidth/innerHeight read as {inner}");
        };
        if (width, height) != (u64::from(size.width), u64::from(size.height)) {
            let frame_w = u32::try_from(u64::from(size.width).saturating_sub(width)).unwrap_or(0);
            let frame_h = u32::try_from(u64::from(size.height).saturating_sub(height)).unwrap_or(0);
            self.client
                .set_window_size(size.width + frame_w, size.height + frame_h)
                .await
                .context("setting the window size")?;
        }
        Ok(())
    }

    /// Opens `base_url/#token=…`, as a sign-in link does, and waits until the page has stored the token
    /// (localStorage `commandpost.token`) and taken it out of the address bar.
    pub async fn sign_in(&self, base_url: &str, token: &str) -> anyhow::Result<()> {
        self.goto(&format!("{base_url}/#token={token}")).await?;
        self.wait_until(
            "the token to be stored (localStorage commandpost.token) and stripped from the address bar",
            crate::DEADLINE,
            || async {
                let url = self.url().await?;
                let stored = self
                    .execute("return localStorage.getItem('commandpost.token');", vec![])
                    .await?;
                Ok((!url.contains("token=") && stored == serde_json::json!(token)).then_some(()))
            },
        )
        .await
    }

    /// Opens incident `id` of the server at `base_url` and waits until the page has rendered it
    /// (`#incident[data-loaded=true]`) and synced it (`#sync-status[data-state=synced]`).
    pub async fn open_incident(&self, base_url: &str, id: &str) -> anyhow::Result<()> {
        self.goto(&format!("{base_url}/#/incidents/{id}")).await?;
        self.wait_until("the incident to load and sync", crate::DEADLINE, || async {
            let state = self
                .execute(
                    "const s = document.querySelector('#sync-status');
                     const i = document.querySelector('#incident');
                     return [s && s.dataset.state, i && i.dataset.loaded];",
                    vec![],
                )
                .await?;
            Ok((state == serde_json::json!(["synced", "true"])).then_some(()))
        })
        .await
    }

    /// Navigates to `url` and waits for the load (for a change of `#fragment` only, for the hash change).
    pub async fn goto(&self, url: &str) -> anyhow::Result<()> {
        self.client
            .goto(url)
            .await
            .with_context(|| format!("{}: navigating to {url}", self.name))
    }

    /// Reloads the page, as the reload button does.
    pub async fn reload(&self) -> anyhow::Result<()> {
        self.client
            .refresh()
            .await
            .with_context(|| format!("{}: reloading", self.name))
    }

    /// The page's address now.
    pub async fn url(&self) -> anyhow::Result<String> {
        Ok(self
            .client
            .current_url()
            .await
            .context("reading the URL")?
            .to_string())
    }

    /// Runs `script` (a function body: `arguments[i]` are `args`, `return` gives the result) in the page.
    pub async fn execute(&self, script: &str, args: Vec<Value>) -> anyhow::Result<Value> {
        self.client
            .execute(script, args)
            .await
            .with_context(|| format!("{}: running a script in the page", self.name))
    }

    /// The first element matching `css`, if any.
    pub async fn find(&self, css: &str) -> anyhow::Result<Option<Element>> {
        let mut found = self
            .client
            .find_all(Locator::Css(css))
            .await
            .with_context(|| format!("{}: looking for {css}", self.name))?;
        Ok(if found.is_empty() {
            None
        } else {
            Some(found.swap_remove(0))
        })
    }

    /// The `value` of the first element matching `css` (an input or textarea), or `None` when there is none.
    pub async fn value(&self, css: &str) -> anyhow::Result<Option<String>> {
        let value = self
            .execute(
                "const el = document.querySelector(arguments[0]); return el ? el.value : null;",
                vec![json!(css)],
            )
            .await?;
        Ok(value.as_str().map(str::to_owned))
    }

    /// The rendered text (`innerText`) of the first element matching `css`, or `None` when there is none.
    pub async fn text(&self, css: &str) -> anyhow::Result<Option<String>> {
        let value = self
            .execute(
                "const el = document.querySelector(arguments[0]); return el ? el.innerText : null;",
                vec![json!(css)],
            )
            .await?;
        Ok(value.as_str().map(str::to_owned))
    }

    /// The rendered text of the first element matching `css` inside the page's `frame`th frame (0 is the first), or
    /// `None` when there is none. Through WebDriver rather than a script of the page, which cannot look into a
    /// sandboxed frame (an origin of its own); back in the page afterwards, whatever happened.
    pub async fn text_in_frame(&self, frame: u16, css: &str) -> anyhow::Result<Option<String>> {
        self.client
            .enter_frame(frame)
            .await
            .with_context(|| format!("{}: entering frame {frame}", self.name))?;
        let text = async {
            match self.client.find_all(Locator::Css(css)).await?.first() {
                Some(element) => element.text().await.map(Some),
                None => Ok(None),
            }
        }
        .await;
        self.client
            .enter_parent_frame()
            .await
            .with_context(|| format!("{}: leaving frame {frame}", self.name))?;
        text.with_context(|| format!("{}: reading {css} in frame {frame}", self.name))
    }

    /// The rendered text of every element matching `css`, in document order.
    pub async fn texts(&self, css: &str) -> anyhow::Result<Vec<String>> {
        let value = self
            .execute(
                "return Array.from(document.querySelectorAll(arguments[0]), el => el.innerText);",
                vec![json!(css)],
            )
            .await?;
        Ok(value
            .as_array()
            .map(|all| {
                all.iter()
                    .map(|v| v.as_str().unwrap_or_default().to_owned())
                    .collect()
            })
            .unwrap_or_default())
    }

    /// Attribute `name` of the first element matching `css`; `None` when there is no such element or attribute.
    pub async fn attr(&self, css: &str, name: &str) -> anyhow::Result<Option<String>> {
        let value = self
            .execute(
                "const el = document.querySelector(arguments[0]); return el ? el.getAttribute(arguments[1]) : null;",
                vec![json!(css), json!(name)],
            )
            .await?;
        Ok(value.as_str().map(str::to_owned))
    }

    /// Calls `check` until it returns `Some`, and returns that value. After `timeout`, fails with `what`, the last
    /// thing `check` reported (its error, if it failed), and what the page shows ([`Browser::failure`]).
    ///
    /// An error from `check` does not end the wait: the page may be re-rendering between two looks.
    pub async fn wait_until<T, F, Fut>(
        &self,
        what: &str,
        timeout: Duration,
        mut check: F,
    ) -> anyhow::Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = anyhow::Result<Option<T>>>,
    {
        let deadline = Instant::now() + timeout;
        loop {
            let last_error = match check().await {
                Ok(Some(value)) => return Ok(value),
                Ok(None) => None,
                Err(e) => Some(e),
            };
            if Instant::now() >= deadline {
                let mut message = format!("timed out after {timeout:?} waiting for {what}");
                if let Some(e) = last_error {
                    message.push_str(&format!(" (last check failed: {e:#})"));
                }
                return Err(self.failure(&message).await);
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// Waits until an element matches `css`, and returns it.
    pub async fn wait_for(&self, css: &str, timeout: Duration) -> anyhow::Result<Element> {
        self.wait_until(&format!("an element matching {css}"), timeout, || {
            self.find(css)
        })
        .await
    }

    /// Puts the caret at the start, the end or an offset of the text field matching `css`, focusing it.
    pub async fn place_caret(&self, css: &str, caret: Caret) -> anyhow::Result<()> {
        let found = self
            .execute(
                "const el = document.querySelector(arguments[0]);
                 if (!el) return false;
                 el.focus();
                 const at = Math.min(arguments[1] ?? el.value.length, el.value.length);
                 el.setSelectionRange(at, at);
                 return true;",
                vec![
                    json!(css),
                    match caret {
                        Caret::Start => json!(0),
                        Caret::End => Value::Null,
                        Caret::At(at) => json!(at),
                    },
                ],
            )
            .await?;
        if found != json!(true) {
            return Err(self
                .failure(&format!("no element matching {css} to put the caret in"))
                .await);
        }
        Ok(())
    }

    /// Types `text` into the element matching `css`, one key event per character, as a person does. The element
    /// keeps the caret where it was if it already had the focus (see [`Browser::place_caret`]); otherwise
    /// WebDriver focuses it with the caret at the end.
    pub async fn type_text(&self, css: &str, text: &str) -> anyhow::Result<()> {
        let element = match self.find(css).await? {
            Some(element) => element,
            None => {
                return Err(self
                    .failure(&format!("no element matching {css} to type {text:?} into"))
                    .await);
            }
        };
        let mut buf = [0; 4];
        for (n, ch) in text.chars().enumerate() {
            if let Err(e) = element.send_keys(ch.encode_utf8(&mut buf)).await {
                return Err(self
                    .failure(&format!(
                        "typing {text:?} into {css}: key {n} ({ch:?}) failed: {e}"
                    ))
                    .await);
            }
        }
        Ok(())
    }

    /// Types `text` as [`Browser::type_text`] does, one key every `interval`: a person typing at a steady pace, so
    /// that two pages typing at once interleave their keys with the sync between them.
    pub async fn type_paced(
        &self,
        css: &str,
        text: &str,
        interval: Duration,
    ) -> anyhow::Result<()> {
        let mut buf = [0; 4];
        for ch in text.chars() {
            let started = std::time::Instant::now();
            self.type_text(css, ch.encode_utf8(&mut buf)).await?;
            tokio::time::sleep(interval.saturating_sub(started.elapsed())).await;
        }
        Ok(())
    }

    /// Presses `key` with Control held (and Shift when `shift`) in the element matching `css`: Ctrl+Z and
    /// Ctrl+Shift+Z.
    pub async fn press_ctrl(&self, css: &str, key: char, shift: bool) -> anyhow::Result<()> {
        let Some(element) = self.find(css).await? else {
            return Err(self
                .failure(&format!("no element matching {css} to press Ctrl+{key} in"))
                .await);
        };
        let mut chord = String::from(char::from(fantoccini::key::Key::Control));
        if shift {
            chord.push(char::from(fantoccini::key::Key::Shift));
        }
        chord.push(key);
        // WebDriver holds modifiers until the null key releases them.
        chord.push(char::from(fantoccini::key::Key::Null));
        element
            .send_keys(&chord)
            .await
            .with_context(|| format!("{}: pressing Ctrl+{key} in {css}", self.name))
    }

    /// Presses a special key (Enter, Tab, …) in the element matching `css`.
    pub async fn press(&self, css: &str, key: fantoccini::key::Key) -> anyhow::Result<()> {
        let Some(element) = self.find(css).await? else {
            return Err(self
                .failure(&format!("no element matching {css} to press {key:?} in"))
                .await);
        };
        let key: char = key.into();
        let mut buf = [0; 4];
        element
            .send_keys(key.encode_utf8(&mut buf))
            .await
            .with_context(|| format!("{}: pressing a key in {css}", self.name))
    }

    /// Clicks the first element matching `css`, as a person does (WebDriver refuses a hidden or covered element).
    pub async fn click(&self, css: &str) -> anyhow::Result<()> {
        let Some(element) = self.find(css).await? else {
            return Err(self
                .failure(&format!("no element matching {css} to click"))
                .await);
        };
        element
            .click()
            .await
            .with_context(|| format!("{}: clicking {css}", self.name))?;
        Ok(())
    }

    /// Saves a screenshot of the viewport as `target/test-artifacts/browser/{name}.png` and returns its path.
    pub async fn screenshot(&self, name: &str) -> anyhow::Result<PathBuf> {
        let png = self
            .client
            .screenshot()
            .await
            .with_context(|| format!("{}: taking a screenshot", self.name))?;
        let dir = artifacts_dir();
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png).with_context(|| format!("writing {}", path.display()))?;
        Ok(path)
    }

    /// Saves a screenshot of the whole page, not only what the window shows (capped at [`FULL_PAGE_LIMIT`] pixels
    /// high), as `target/test-artifacts/browser/{name}.png`: the window is made as tall as the page for the shot
    /// and then given its size back. Returns the path.
    pub async fn screenshot_full_page(&self, name: &str) -> anyhow::Result<PathBuf> {
        let size = self
            .execute(
                "return [window.innerWidth, window.innerHeight, document.documentElement.scrollHeight];",
                vec![],
            )
            .await?;
        let read = |n: usize| {
            size[n]
                .as_u64()
                .and_then(|v| u32::try_from(v).ok())
                .with_context(|| format!("the page's size reads as {size}"))
        };
        let window = WindowSize {
            width: read(0)?,
            height: read(1)?,
        };
        let page = WindowSize {
            width: window.width,
            height: read(2)?.min(FULL_PAGE_LIMIT).max(window.height),
        };
        self.resize(page).await?;
        let shot = self.screenshot(name).await;
        self.resize(window).await?;
        shot
    }

    /// The page's accessibility violations of impact serious or critical, as axe-core finds them in the document as
    /// it is now (`tests/js/node_modules/axe-core`, installed by `npm ci` in `tests/js`). Minor and moderate findings
    /// are left out: the bar the browser tests hold every page to is "nothing that stops someone using it".
    ///
    /// axe is injected through WebDriver rather than by a `<script>` of the page: the page's content security policy
    /// rightly allows scripts from its own origin only, and a WebDriver script is not subject to it.
    pub async fn axe_violations(&self) -> anyhow::Result<Vec<AxeViolation>> {
        let path = axe_script_path();
        let axe = std::fs::read_to_string(&path).with_context(|| {
            format!(
                "reading {}: run `npm ci` in tests/js first (scripts/test.sh and CI do)",
                path.display()
            )
        })?;
        // Injected once per page: axe keeps its state on `window`, and a navigation to another document drops it.
        let script = format!(
            "if (!window.axe) {{\n{axe}\n}}\n\
             const results = await window.axe.run(document, {{ resultTypes: ['violations'] }});\n\
             return results.violations\n\
               .filter((v) => v.impact === 'serious' || v.impact === 'critical')\n\
               .map((v) => ({{ id: v.id, impact: v.impact, help: v.help,\n\
                 targets: v.nodes.map((n) => n.target.flat(Infinity).join(' >>> ')) }}));"
        );
        let found = self
            .execute(&format!("return (async () => {{ {script} }})();"), vec![])
            .await
            .context("running axe-core")?;
        serde_json::from_value(found).context("reading axe-core's violations")
    }

    /// Every console message the page logged so far (`LEVEL message`), oldest first.
    pub async fn console(&self) -> Vec<String> {
        let fresh = self.read_console().await.unwrap_or_else(|e| {
            vec![format!(
                "(could not read the console from chromedriver: {e:#})"
            )]
        });
        let mut console = self.console.lock().unwrap_or_else(PoisonError::into_inner);
        console.extend(fresh);
        console.clone()
    }

    /// Reads and empties chromedriver's browser log of this session.
    async fn read_console(&self) -> anyhow::Result<Vec<String>> {
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(10))
            .build()?;
        let answer: Value = http
            .post(format!("{}/se/log", self.session_url))
            .json(&json!({"type": "browser"}))
            .send()
            .await?
            .json()
            .await?;
        let entries = answer["value"]
            .as_array()
            .with_context(|| format!("unexpected log answer {answer}"))?;
        Ok(entries
            .iter()
            .map(|entry| {
                format!(
                    "{} {}",
                    entry["level"].as_str().unwrap_or("?"),
                    entry["message"].as_str().unwrap_or_default()
                )
            })
            .collect())
    }

    /// An error saying `what` went wrong, with what the page shows: a screenshot (saved as
    /// `{name}-failure.png`), the URL, the page's text and its console.
    pub async fn failure(&self, what: &str) -> anyhow::Error {
        let screenshot = match self.screenshot(&format!("{}-failure", self.name)).await {
            Ok(path) => path.display().to_string(),
            Err(e) => format!("(none: {e:#})"),
        };
        let url = self
            .url()
            .await
            .unwrap_or_else(|e| format!("(unknown: {e:#})"));
        let mut text = match self.text("body").await {
            Ok(Some(text)) => text,
            Ok(None) => "(no body)".to_owned(),
            Err(e) => format!("(unreadable: {e:#})"),
        };
        if let Some((cut, _)) = text.char_indices().nth(PAGE_TEXT_LIMIT) {
            text.truncate(cut);
            text.push_str("\n[…]");
        }
        let console = self.console().await;
        anyhow::anyhow!(
            "browser {}: {what}\n  url: {url}\n  screenshot: {screenshot}\n  console:\n    {}\n  page text:\n{text}",
            self.name,
            if console.is_empty() {
                "(empty)".to_owned()
            } else {
                console.join("\n    ")
            }
        )
    }

    /// Ends the session and its Chromium.
    pub async fn close(self) -> anyhow::Result<()> {
        self.client
            .close()
            .await
            .with_context(|| format!("{}: closing the session", self.name))
    }
}
