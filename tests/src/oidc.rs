//! A real OpenID Connect provider for the single sign-on tests, and a cookie-keeping HTTP client that signs in
//! through it the way a browser does.
//!
//! [`OidcProvider`] runs npm `oidc-provider` (pinned in `tests/js/package.json`, an OpenID-certified
//! implementation) on a loopback port with the test users of `tests/js/oidc-provider.mjs`: alice (groups `sre`,
//! `eng`), bob (`eng`), carol (none), dave (whose `preferred_username` is no usable name). Its signing key is the
//! script's own, so a test can have the next token response carry a bad ID token
//! ([`OidcProvider::next_id_token`]); everything else (discovery, keys, the login page, the code exchange with PKCE)
//! is the provider's.
//!
//! [`SsoClient`] follows the flow without a browser: `GET /auth/oidc/login`, the provider's redirects, its login
//! form (submitted with the user's name), back to the server's callback, each redirect by hand so that a test can
//! see and replay the callback URL.

use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use reqwest::cookie::Jar;
use reqwest::{Method, StatusCode, Url};
use server::config::OidcSettings;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::TestServer;
use crate::js_client::{js_dir, node, require_node_modules};

/// How long the provider may take to start (Node loading its modules on a loaded machine).
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// The client registered in the provider script.
pub const CLIENT_ID: &str = "commandpost";

/// Its secret.
pub const CLIENT_SECRET: &str = "commandpost-secret";

/// The provider, running until dropped.
pub struct OidcProvider {
    /// Killed when the provider is dropped.
    _child: Child,
    /// `http://127.0.0.1:PORT`.
    pub issuer: String,
}

impl OidcProvider {
    /// Starts the provider, allowing the client to redirect to the callback of each server address in `servers`.
    pub async fn start(servers: &[SocketAddr]) -> anyhow::Result<OidcProvider> {
        require_node_modules()?;
        let mut command = Command::new(node()?);
        command.arg(js_dir().join("oidc-provider.mjs"));
        for server in servers {
            command.arg(callback_url(*server));
        }
        let mut child = command
            .current_dir(js_dir())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("starting node oidc-provider.mjs")?;
        let stdout = child.stdout.take().context("the provider's stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let line = tokio::time::timeout(START_TIMEOUT, lines.next_line())
            .await
            .context("the provider did not start in time")??
            .context("the provider exited before listening")?;
        let port: u16 = line
            .strip_prefix("listening ")
            .and_then(|port| port.trim().parse().ok())
            .with_context(|| format!("the provider printed {line:?}, not `listening PORT`"))?;
        // Read to the end, so that the provider never writes into a closed pipe (which kills Node with EPIPE).
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(OidcProvider {
            _child: child,
            issuer: format!("http://127.0.0.1:{port}"),
        })
    }

    /// The `[oidc]` settings of a server at `server` signing in through this provider: `sre` → admin, `eng` →
    /// write, everyone else read.
    pub fn settings(&self, server: SocketAddr) -> OidcSettings {
        OidcSettings {
            issuer_url: self.issuer.clone(),
            client_id: CLIENT_ID.into(),
            client_secret: Some(CLIENT_SECRET.into()),
            redirect_url: callback_url(server),
            scopes: vec![
                "openid".into(),
                "profile".into(),
                "email".into(),
                "groups".into(),
            ],
            display_name: "Test IdP".into(),
            admin: vec!["sre".into()],
            write: vec!["eng".into()],
            default_scope: "read".into(),
            ..OidcSettings::default()
        }
    }

    /// Makes the next token response carry a bad ID token: `wrong-audience`, `expired`, `tampered`,
    /// `wrong-nonce` or `replay` (the ID token of the sign-in before).
    pub async fn next_id_token(&self, mode: &str) -> anyhow::Result<()> {
        let response = reqwest::Client::builder()
            .no_proxy()
            .build()?
            .post(format!("{}/__test/next-id-token", self.issuer))
            .body(mode.to_owned())
            .send()
            .await?;
        anyhow::ensure!(
            response.status() == StatusCode::NO_CONTENT,
            "{}",
            response.status()
        );
        Ok(())
    }
}

/// The callback URL of the server at `addr`.
pub fn callback_url(addr: SocketAddr) -> String {
    format!("http://{addr}/auth/oidc/callback")
}

/// How a sign-in ended.
#[derive(Debug)]
pub enum SignIn {
    /// Signed in: the server sent the browser on to `landing`; `callback` is the URL the provider sent it back to.
    SignedIn {
        /// Where the server sent the browser after setting the cookie.
        landing: String,
        /// The callback URL, with its code and state.
        callback: String,
    },
    /// Refused, with the status of the server's page and the refusal code on it.
    Refused {
        /// The page's status.
        status: StatusCode,
        /// The refusal's code (`data-code` on the page).
        code: String,
        /// The page.
        page: String,
    },
}

/// An HTTP client with a cookie jar, signing in as a browser would.
pub struct SsoClient {
    http: reqwest::Client,
    jar: Arc<Jar>,
}

impl Default for SsoClient {
    fn default() -> Self {
        SsoClient::new()
    }
}

impl SsoClient {
    /// A client with an empty cookie jar (a fresh browser).
    pub fn new() -> SsoClient {
        let jar = Arc::new(Jar::default());
        let http = reqwest::Client::builder()
            .no_proxy()
            .cookie_provider(jar.clone())
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(30))
            .build()
            .expect("building the HTTP client");
        SsoClient { http, jar }
    }

    /// The underlying client, which sends the jar's cookies (the session's among them).
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// A request to `server` with the jar's cookies and, for anything but GET, the server's own `Origin` as a
    /// browser sends it from the server's pages.
    pub fn request(
        &self,
        server: &TestServer,
        method: Method,
        path: &str,
    ) -> reqwest::RequestBuilder {
        let same_origin = method != Method::GET;
        let request = self.http.request(method, server.url(path));
        if same_origin {
            request.header("origin", format!("http://{}", server.addr))
        } else {
            request
        }
    }

    /// The session cookie's value the jar holds for `server`, if any.
    pub fn session_cookie(&self, server: &TestServer) -> Option<String> {
        use reqwest::cookie::CookieStore;
        let url: Url = server.url("/").parse().ok()?;
        let cookies = self.jar.cookies(&url)?;
        cookies
            .to_str()
            .ok()?
            .split(';')
            .filter_map(|pair| pair.trim().split_once('='))
            .find(|(name, _)| *name == server::sso::SESSION_COOKIE)
            .map(|(_, value)| value.to_owned())
    }

    /// Signs in to `server` as `user` through the provider's login page; stops at the server's answer to the
    /// callback.
    pub async fn sign_in(&self, server: &TestServer, user: &str) -> anyhow::Result<SignIn> {
        let mut url = server.url("/auth/oidc/login");
        let mut callback = None;
        for _ in 0..20 {
            let is_callback = url.contains("/auth/oidc/callback");
            if is_callback {
                callback = Some(url.clone());
            }
            let response = self.http.get(&url).send().await?;
            let status = response.status();
            if status.is_redirection() {
                let location = response
                    .headers()
                    .get("location")
                    .context("a redirect without Location")?
                    .to_str()?
                    .to_owned();
                if is_callback {
                    return Ok(SignIn::SignedIn {
                        landing: location,
                        callback: callback.unwrap_or_default(),
                    });
                }
                url = Url::parse(&url)?.join(&location)?.to_string();
                continue;
            }
            let page = response.text().await?;
            if is_callback || url.starts_with(&server.url("/auth/oidc/login")) {
                return Ok(SignIn::Refused {
                    status,
                    code: refusal_code(&page),
                    page,
                });
            }
            // The provider's login form.
            anyhow::ensure!(
                status == StatusCode::OK,
                "the provider answered {status}: {page}"
            );
            let action = form_action(&page).with_context(|| format!("a login form in {page}"))?;
            let target = Url::parse(&url)?.join(&action)?;
            let response = self
                .http
                .post(target.clone())
                .form(&[("prompt", "login"), ("login", user), ("password", "any")])
                .send()
                .await?;
            anyhow::ensure!(
                response.status().is_redirection(),
                "submitting the login form: {}",
                response.status()
            );
            let location = response
                .headers()
                .get("location")
                .context("a redirect without Location")?
                .to_str()?
                .to_owned();
            url = target.join(&location)?.to_string();
        }
        anyhow::bail!("the sign-in went round more than 20 redirects")
    }

    /// Signs in and expects success; returns the callback URL.
    pub async fn signed_in(&self, server: &TestServer, user: &str) -> anyhow::Result<String> {
        match self.sign_in(server, user).await? {
            SignIn::SignedIn { callback, .. } => Ok(callback),
            refused => anyhow::bail!("{user} was refused: {refused:?}"),
        }
    }

    /// `GET /api/session` with the jar's cookie: `(status, body)`.
    pub async fn whoami(
        &self,
        server: &TestServer,
    ) -> anyhow::Result<(StatusCode, serde_json::Value)> {
        let response = self
            .request(server, Method::GET, "/api/session")
            .send()
            .await?;
        let status = response.status();
        let body = response.json().await.unwrap_or(serde_json::Value::Null);
        Ok((status, body))
    }
}

/// The `data-code` of a refusal page.
fn refusal_code(page: &str) -> String {
    page.split_once("data-code=\"")
        .and_then(|(_, rest)| rest.split_once('"'))
        .map(|(code, _)| code.to_owned())
        .unwrap_or_default()
}

/// The `action` of the first form on a page.
fn form_action(page: &str) -> Option<String> {
    let form = &page[page.find("<form")?..];
    let (_, rest) = form.split_once("action=\"")?;
    let (action, _) = rest.split_once('"')?;
    Some(action.replace("&amp;", "&"))
}
