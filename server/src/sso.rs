//! Single sign-on with OpenID Connect, and the browser sessions it opens.
//!
//! The authorization code flow with PKCE (RFC 7636) against any provider that publishes its discovery document:
//! `GET /auth/oidc/login` sends the browser to the provider with a fresh `state`, `nonce` and PKCE challenge;
//! `GET /auth/oidc/callback` takes them back once, exchanges the code, and has the `openidconnect` crate check the
//! ID token (signature against the provider's published keys, issuer, audience, expiry, nonce). Nothing here
//! parses or checks a token by hand.
//!
//! The sign-in in progress lives in the [`Store`] (table `logins`, by the hash of its `state`, taken once, 10
//! minutes at most), so the provider may send the browser back to any node, and a replayed `state` finds nothing.
//! The `state` is also kept in a cookie bound to the browser that started the sign-in, so a sign-in cannot be
//! finished in another browser (login CSRF).
//!
//! A person's name comes from a configured claim, checked like a token name; their scope from a claim (groups,
//! roles, or the email's domain) mapped by [`OidcSettings`], highest match winning, with a default for people who
//! match nothing, which may be to refuse them. Sessions and tokens share one name space, the names of people:
//! a session of `alice` and a token named `alice` write as the same person (docs/security.md).
//!
//! A session is a 256-bit secret in an `HttpOnly`, `SameSite=Lax` cookie (`Secure` when the redirect URL is
//! https); the store keeps only its SHA-256, with an absolute expiry and a sliding idle timeout. Since a browser
//! attaches a cookie by itself, every state-changing request and the `/sync` upgrade carrying the cookie must come
//! from the server's own origin ([`same_origin`]).

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, HeaderValue, header};
use chrono::{DateTime, Utc};
use openidconnect::core::{
    CoreAuthDisplay, CoreAuthPrompt, CoreAuthenticationFlow, CoreErrorResponseType,
    CoreGenderClaim, CoreJsonWebKey, CoreJweContentEncryptionAlgorithm, CoreJwsSigningAlgorithm,
    CoreProviderMetadata, CoreRevocableToken, CoreRevocationErrorResponse,
    CoreTokenIntrospectionResponse, CoreTokenType,
};
use openidconnect::{
    AdditionalClaims, AuthorizationCode, Client, ClientId, ClientSecret, CsrfToken,
    EmptyExtraTokenFields, EndpointMaybeSet, EndpointNotSet, EndpointSet, IdTokenFields, IssuerUrl,
    Nonce, PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, StandardErrorResponse,
    StandardTokenResponse, TokenResponse,
};
use serde::{Deserialize, Serialize};

use crate::auth::{Scope, hash_token, random_secret, valid_token_name};
use crate::config::OidcSettings;
use crate::error::error_chain;
use crate::store::{SessionRecord, Store, StoreError};

/// The cookie that carries a session's secret.
pub const SESSION_COOKIE: &str = "commandpost_session";

/// The cookie that binds a sign-in in progress to the browser that started it; it holds the OAuth `state`.
pub const STATE_COOKIE: &str = "commandpost_oidc_state";

/// How long a sign-in may take at the provider (typing a password, a second factor).
const LOGIN_TTL: Duration = Duration::from_secs(600);

/// How long the provider's discovery document and keys are used before they are read again, so that a rotated
/// signing key is picked up without a restart.
const DISCOVERY_TTL: Duration = Duration::from_secs(300);

/// Every claim of a verified ID token beyond the standard ones (groups, roles, …), for the scope rules.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExtraClaims {
    /// The claims by name, as the provider sent them.
    #[serde(flatten)]
    claims: serde_json::Map<String, serde_json::Value>,
}

impl AdditionalClaims for ExtraClaims {}

/// The token endpoint's answer, with our claims type.
type TokenAnswer = StandardTokenResponse<
    IdTokenFields<
        ExtraClaims,
        EmptyExtraTokenFields,
        CoreGenderClaim,
        CoreJweContentEncryptionAlgorithm,
        CoreJwsSigningAlgorithm,
    >,
    CoreTokenType,
>;

/// The client as discovery makes it: authorization endpoint set, token and userinfo endpoints as the provider
/// published them.
type OidcClient = Client<
    ExtraClaims,
    CoreAuthDisplay,
    CoreGenderClaim,
    CoreJweContentEncryptionAlgorithm,
    CoreJsonWebKey,
    CoreAuthPrompt,
    StandardErrorResponse<CoreErrorResponseType>,
    TokenAnswer,
    CoreTokenIntrospectionResponse,
    CoreRevocableToken,
    CoreRevocationErrorResponse,
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointMaybeSet,
    EndpointMaybeSet,
>;

/// A setting of `[oidc]` that cannot work, reported before the server listens.
#[derive(Debug, thiserror::Error)]
#[error("[oidc] {0}")]
pub struct SettingsError(String);

/// Why a sign-in was refused: each is shown to the person on a page and recorded.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    /// The `state` is unknown, used, expired, or not the one this browser started with.
    #[error(
        "this sign-in is unknown, was already used or has expired, or was started in another browser: start again"
    )]
    State,
    /// The provider answered the authorization request with an error.
    #[error("the provider refused the sign-in: {0}")]
    Provider(String),
    /// The provider could not be reached or read (discovery, the token endpoint).
    #[error("the provider could not be reached or did not answer as expected: {0}")]
    Unreachable(String),
    /// The ID token failed verification (signature, issuer, audience, expiry, nonce).
    #[error("the provider's ID token was refused: {0}")]
    IdToken(String),
    /// The name claim is missing or is not a usable name.
    #[error(
        "your account's {0:?} claim is missing or is not a usable name (1-64 letters, digits or - _ . @, not \
         commandpost): ask an administrator"
    )]
    Name(String),
    /// The name claim is an email the provider has not verified.
    #[error("your email address is not verified by the provider, so it cannot be your name here")]
    UnverifiedEmail,
    /// No rule gives the person a scope and the default is to refuse.
    #[error(
        "your account is not allowed to use this server (no group or role gives access): ask an administrator"
    )]
    NoAccess(String),
    /// Storage failed.
    #[error("storage unavailable, try again")]
    Storage(#[from] StoreError),
}

impl Refusal {
    /// Who was refused, when the ID token was good enough to say (for the audit log).
    pub fn person(&self) -> Option<&str> {
        match self {
            Refusal::NoAccess(name) => Some(name),
            _ => None,
        }
    }

    /// A short stable reason, for the audit record and metrics.
    pub fn code(&self) -> &'static str {
        match self {
            Refusal::State => "state",
            Refusal::Provider(_) => "provider_error",
            Refusal::Unreachable(_) => "provider_unreachable",
            Refusal::IdToken(_) => "id_token",
            Refusal::Name(_) => "name_claim",
            Refusal::UnverifiedEmail => "email_unverified",
            Refusal::NoAccess(_) => "no_access",
            Refusal::Storage(_) => "storage",
        }
    }
}

/// Who signed in, as the provider's claims and our rules make them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Person {
    /// Their name in documents.
    pub name: String,
    /// Their scope.
    pub scope: Scope,
}

/// What a sign-in in progress needs at the callback, stored by the hash of its `state`.
#[derive(Serialize, Deserialize)]
struct Pending {
    /// The nonce the ID token must carry.
    nonce: String,
    /// The PKCE verifier of the challenge sent.
    verifier: String,
    /// Where the browser goes once signed in (a path on this server).
    next: String,
}

/// Single sign-on as configured: the settings checked, the provider's client (discovered on first use and
/// re-read every [`DISCOVERY_TTL`]).
pub struct Sso {
    settings: OidcSettings,
    issuer: IssuerUrl,
    redirect: RedirectUrl,
    /// `scheme://host[:port]` of the redirect URL: the origin the server's pages are served from.
    public_origin: String,
    /// Whether cookies get `Secure` (an https redirect URL).
    secure: bool,
    /// `None` when people who match no rule are refused.
    default_scope: Option<Scope>,
    /// Talks to the provider; follows no redirects (the spec's endpoints answer directly; a redirect could be
    /// steered to an internal address).
    http: reqwest::Client,
    /// The discovered client and when it was discovered.
    client: tokio::sync::Mutex<Option<(Instant, Arc<OidcClient>)>>,
}

impl Sso {
    /// Checks the settings; nothing is fetched until the first sign-in, so a provider that is down does not keep
    /// the server from starting.
    pub fn new(settings: OidcSettings) -> Result<Sso, SettingsError> {
        let error = |m: String| SettingsError(m);
        let issuer = IssuerUrl::new(settings.issuer_url.clone())
            .map_err(|e| error(format!("issuer-url {:?}: {e}", settings.issuer_url)))?;
        if settings.client_id.is_empty() {
            return Err(error("client-id is required".into()));
        }
        let redirect = RedirectUrl::new(settings.redirect_url.clone())
            .map_err(|e| error(format!("redirect-url {:?}: {e}", settings.redirect_url)))?;
        let url = redirect.url();
        let secure = match url.scheme() {
            "https" => true,
            "http" => false,
            other => {
                return Err(error(format!(
                    "redirect-url: scheme {other} is not http or https"
                )));
            }
        };
        if !url.path().ends_with("/auth/oidc/callback") {
            return Err(error(format!(
                "redirect-url {:?} must end in /auth/oidc/callback, the route that finishes a sign-in",
                settings.redirect_url
            )));
        }
        let public_origin = url.origin().ascii_serialization();
        let default_scope = match settings.default_scope.as_str() {
            "refused" => None,
            other => Some(
                other
                    .parse::<Scope>()
                    .map_err(|e| error(format!("default-scope: {e} (or refused)")))?,
            ),
        };
        for value in settings
            .admin
            .iter()
            .chain(&settings.write)
            .chain(&settings.read)
        {
            if value.is_empty() {
                return Err(error(
                    "an empty value in admin, write or read matches nothing".into(),
                ));
            }
        }
        if settings.name_claim.is_empty() || settings.role_claim.is_empty() {
            return Err(error("name-claim and role-claim name a claim".into()));
        }
        if settings.session_idle > settings.session_lifetime {
            return Err(error("session-idle is longer than session-lifetime".into()));
        }
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| error(format!("an HTTP client: {e}")))?;
        Ok(Sso {
            settings,
            issuer,
            redirect,
            public_origin,
            secure,
            default_scope,
            http,
            client: tokio::sync::Mutex::new(None),
        })
    }

    /// The provider's name for the sign-in button.
    pub fn display_name(&self) -> &str {
        &self.settings.display_name
    }

    /// The origin of the server's own pages.
    pub fn public_origin(&self) -> &str {
        &self.public_origin
    }

    /// The idle timeout of sessions.
    pub fn session_idle(&self) -> Duration {
        self.settings.session_idle
    }

    /// The provider's client, discovered now if not yet or not lately.
    async fn client(&self) -> Result<Arc<OidcClient>, Refusal> {
        let mut cached = self.client.lock().await;
        if let Some((at, client)) = cached.as_ref()
            && at.elapsed() < DISCOVERY_TTL
        {
            return Ok(client.clone());
        }
        let metadata = CoreProviderMetadata::discover_async(self.issuer.clone(), &self.http)
            .await
            .map_err(|e| Refusal::Unreachable(format!("discovery: {}", error_chain(&e))))?;
        let client = OidcClient::from_provider_metadata(
            metadata,
            ClientId::new(self.settings.client_id.clone()),
            self.settings.client_secret.clone().map(ClientSecret::new),
        )
        .set_redirect_uri(self.redirect.clone());
        let client = Arc::new(client);
        *cached = Some((Instant::now(), client.clone()));
        Ok(client)
    }

    /// Starts a sign-in: stores its `state`, nonce and PKCE verifier, and returns the provider's URL to send the
    /// browser to and the `state` (for the browser-binding cookie). `next` is where to land afterwards.
    pub async fn begin(&self, store: &dyn Store, next: &str) -> Result<(String, String), Refusal> {
        let client = self.client().await?;
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let mut request = client
            .authorize_url(
                CoreAuthenticationFlow::AuthorizationCode,
                CsrfToken::new_random,
                Nonce::new_random,
            )
            .set_pkce_challenge(challenge);
        for scope in self
            .settings
            .scopes
            .iter()
            .filter(|s| s.as_str() != "openid")
        {
            request = request.add_scope(openidconnect::Scope::new(scope.clone()));
        }
        let (url, state, nonce) = request.url();
        let pending = Pending {
            nonce: nonce.secret().clone(),
            verifier: verifier.secret().clone(),
            next: safe_next(next).to_owned(),
        };
        let data = serde_json::to_string(&pending)
            .map_err(|e| Refusal::Unreachable(format!("encoding the sign-in: {e}")))?;
        let now = Utc::now();
        let expires = now + chrono::Duration::from_std(LOGIN_TTL).unwrap_or_default();
        store
            .create_login(&hash_token(state.secret()), &data, now, expires)
            .await?;
        Ok((url.to_string(), state.secret().clone()))
    }

    /// Finishes a sign-in: takes the stored one for `state` (once), checks it was started by this browser
    /// (`cookie_state`), exchanges `code`, verifies the ID token and maps its claims. Returns the person and
    /// where to land.
    pub async fn finish(
        &self,
        store: &dyn Store,
        state: &str,
        cookie_state: Option<&str>,
        code: &str,
    ) -> Result<(Person, String), Refusal> {
        // Taken before anything else, so a replayed state is spent even if the rest fails.
        let data = store
            .take_login(&hash_token(state), Utc::now())
            .await?
            .ok_or(Refusal::State)?;
        if cookie_state != Some(state) {
            return Err(Refusal::State);
        }
        let pending: Pending = serde_json::from_str(&data).map_err(|_| Refusal::State)?;
        let client = self.client().await?;
        let answer = client
            .exchange_code(AuthorizationCode::new(code.to_owned()))
            .map_err(|e| Refusal::Unreachable(format!("the token endpoint: {e}")))?
            .set_pkce_verifier(PkceCodeVerifier::new(pending.verifier))
            .request_async(&self.http)
            .await
            .map_err(|e| {
                Refusal::Unreachable(format!("the token endpoint: {}", error_chain(&e)))
            })?;
        let id_token = answer
            .id_token()
            .ok_or_else(|| Refusal::IdToken("the provider sent no ID token".into()))?;
        let verifier = client.id_token_verifier();
        let claims = id_token
            .claims(&verifier, &Nonce::new(pending.nonce))
            .map_err(|e| Refusal::IdToken(error_chain(&e)))?;
        let claims = serde_json::to_value(claims)
            .map_err(|e| Refusal::IdToken(format!("reading its claims: {e}")))?;
        let person = self.person(&claims)?;
        Ok((person, pending.next))
    }

    /// The person the verified claims describe, or why they may not sign in.
    fn person(&self, claims: &serde_json::Value) -> Result<Person, Refusal> {
        let name_claim = &self.settings.name_claim;
        let name = claims
            .get(name_claim)
            .and_then(serde_json::Value::as_str)
            .filter(|name| valid_token_name(name))
            .ok_or_else(|| Refusal::Name(name_claim.clone()))?;
        // An email anyone can type at the provider must not become a name: only a verified one.
        if name_claim == "email"
            && claims.get("email_verified") != Some(&serde_json::Value::Bool(true))
        {
            return Err(Refusal::UnverifiedEmail);
        }
        let values: Vec<&str> = match claims.get(&self.settings.role_claim) {
            Some(serde_json::Value::String(one)) => vec![one.as_str()],
            Some(serde_json::Value::Array(many)) => {
                many.iter().filter_map(serde_json::Value::as_str).collect()
            }
            _ => Vec::new(),
        };
        let matches = |rules: &[String]| {
            rules.iter().any(|rule| {
                values.iter().any(|value| match rule.strip_prefix('@') {
                    Some(domain) => value
                        .rsplit_once('@')
                        .is_some_and(|(_, d)| d.eq_ignore_ascii_case(domain)),
                    None => value == rule,
                })
            })
        };
        let scope = if matches(&self.settings.admin) {
            Some(Scope::Admin)
        } else if matches(&self.settings.write) {
            Some(Scope::Write)
        } else if matches(&self.settings.read) {
            Some(Scope::Read)
        } else {
            self.default_scope
        };
        Ok(Person {
            name: name.to_owned(),
            scope: scope.ok_or_else(|| Refusal::NoAccess(name.to_owned()))?,
        })
    }

    /// Opens a session for `person`: stored by the hash of a new secret, which is returned for the cookie once.
    pub async fn open_session(
        &self,
        store: &dyn Store,
        person: &Person,
        from: Option<String>,
    ) -> Result<(String, SessionRecord), StoreError> {
        let secret = random_secret("cps_");
        let now = Utc::now();
        let lifetime =
            chrono::Duration::from_std(self.settings.session_lifetime).unwrap_or_default();
        let record = SessionRecord {
            id: random_secret("s_"),
            name: person.name.clone(),
            scope: person.scope,
            created_at: now,
            last_used_at: now,
            expires_at: now + lifetime,
            created_from: from,
            revoked_at: None,
        };
        store.create_session(&hash_token(&secret), &record).await?;
        Ok((secret, record))
    }

    /// The live session whose secret hashes to `hash`, renewed (its last use moved to now) when it was last
    /// renewed a while ago; `None` when unknown, ended, past its lifetime or idle for too long.
    pub async fn session(
        &self,
        store: &dyn Store,
        hash: &str,
    ) -> Result<Option<SessionRecord>, StoreError> {
        let Some(record) = store.session_by_hash(hash).await? else {
            return Ok(None);
        };
        let now = Utc::now();
        if !self.live(&record, now) {
            return Ok(None);
        }
        if now - record.last_used_at > touch_interval(self.settings.session_idle) {
            store.touch_session(&record.id, now).await?;
        }
        Ok(Some(record))
    }

    /// Whether `record` is neither ended, past its lifetime, nor idle past the timeout at `now`.
    pub fn live(&self, record: &SessionRecord, now: DateTime<Utc>) -> bool {
        let idle = chrono::Duration::from_std(self.settings.session_idle).unwrap_or_default();
        record.revoked_at.is_none() && now < record.expires_at && now < record.last_used_at + idle
    }

    /// The `Set-Cookie` value that hands a new session's secret to the browser, for as long as it may live.
    pub fn session_cookie(&self, secret: &str) -> HeaderValue {
        self.cookie(
            SESSION_COOKIE,
            secret,
            "/",
            self.settings.session_lifetime.as_secs(),
        )
    }

    /// The `Set-Cookie` value that removes the session cookie.
    pub fn clear_session_cookie(&self) -> HeaderValue {
        self.cookie(SESSION_COOKIE, "", "/", 0)
    }

    /// The `Set-Cookie` value that binds a sign-in in progress to this browser.
    pub fn state_cookie(&self, state: &str) -> HeaderValue {
        self.cookie(STATE_COOKIE, state, "/auth/oidc", LOGIN_TTL.as_secs())
    }

    /// The `Set-Cookie` value that removes the sign-in cookie.
    pub fn clear_state_cookie(&self) -> HeaderValue {
        self.cookie(STATE_COOKIE, "", "/auth/oidc", 0)
    }

    /// `SameSite=Lax` rather than `Strict`: the browser comes back from the provider by a cross-site navigation,
    /// which must carry the sign-in cookie; cross-site requests that change anything are refused by
    /// [`same_origin`] whatever the cookie's mode.
    fn cookie(&self, name: &str, value: &str, path: &str, max_age: u64) -> HeaderValue {
        let secure = if self.secure { "; Secure" } else { "" };
        let text = format!(
            "{name}={value}; Path={path}; Max-Age={max_age}; HttpOnly; SameSite=Lax{secure}"
        );
        // Names, random base58 values and digits: always a valid header value.
        HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static(""))
    }
}

/// How stale a session's last use may be before a use writes it again: a tenth of the idle timeout, at most a
/// minute, so a busy page costs one write a minute and the idle timeout is honoured to within a tenth.
fn touch_interval(idle: Duration) -> chrono::Duration {
    chrono::Duration::from_std((idle / 10).min(Duration::from_secs(60))).unwrap_or_default()
}

/// A path on this server to land on after signing in: anything else (another site, `//host`) becomes `/`.
fn safe_next(next: &str) -> &str {
    if next.starts_with('/') && !next.starts_with("//") && !next.contains('\\') {
        next
    } else {
        "/"
    }
}

/// The value of cookie `name` in the request's `Cookie` headers.
pub fn cookie_value(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value.to_owned())
}

/// Whether a request came from the server's own pages: its `Origin` is `public_origin` or the origin of the
/// `Host` it was sent to, or, without `Origin`, its `Sec-Fetch-Site` is `same-origin`. A request with neither
/// header is refused: every browser that sends cookies cross-site sends one of them.
pub fn same_origin(headers: &HeaderMap, public_origin: Option<&str>) -> bool {
    let text = |name| {
        headers
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
    };
    if let Some(origin) = text(header::ORIGIN) {
        if public_origin == Some(origin) {
            return true;
        }
        let host = text(header::HOST);
        return origin.split_once("://").is_some_and(|(scheme, authority)| {
            matches!(scheme, "http" | "https") && Some(authority) == host
        });
    }
    text(axum::http::HeaderName::from_static("sec-fetch-site")) == Some("same-origin")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sso(configure: impl FnOnce(&mut OidcSettings)) -> Sso {
        let mut settings = OidcSettings {
            issuer_url: "https://id.example.com".into(),
            client_id: "commandpost".into(),
            redirect_url: "https://cp.example.com/auth/oidc/callback".into(),
            admin: vec!["sre".into()],
            write: vec!["eng".into(), "@example.com".into()],
            ..OidcSettings::default()
        };
        configure(&mut settings);
        Sso::new(settings).expect("valid settings")
    }

    #[test]
    fn the_highest_matching_rule_wins_and_the_default_may_refuse() {
        let sso = sso(|_| {});
        let person = |claims: serde_json::Value| sso.person(&claims);
        let alice =
            person(serde_json::json!({"preferred_username": "alice", "groups": ["eng", "sre"]}));
        assert_eq!(alice.map(|p| p.scope).ok(), Some(Scope::Admin));
        let bob = person(serde_json::json!({"preferred_username": "bob", "groups": "eng"}));
        assert_eq!(bob.map(|p| p.scope).ok(), Some(Scope::Write));
        let carol = person(serde_json::json!({"preferred_username": "carol", "groups": []}));
        assert!(matches!(carol, Err(Refusal::NoAccess(_))));
        let nameless = person(serde_json::json!({"groups": ["sre"]}));
        assert!(matches!(nameless, Err(Refusal::Name(_))));
        let server =
            person(serde_json::json!({"preferred_username": "commandpost", "groups": ["sre"]}));
        assert!(matches!(server, Err(Refusal::Name(_))));
        let reader = self::sso(|s| s.default_scope = "read".into());
        let carol = reader.person(&serde_json::json!({"preferred_username": "carol"}));
        assert_eq!(carol.map(|p| p.scope).ok(), Some(Scope::Read));
    }

    #[test]
    fn an_email_domain_rule_matches_the_domain_and_needs_a_verified_email() {
        let sso = sso(|s| {
            s.role_claim = "email".into();
            s.name_claim = "email".into();
        });
        let verified = serde_json::json!({"email": "dan@EXAMPLE.com", "email_verified": true});
        assert_eq!(
            sso.person(&verified).map(|p| p.scope).ok(),
            Some(Scope::Write)
        );
        let other = serde_json::json!({"email": "dan@example.com.evil", "email_verified": true});
        assert!(matches!(sso.person(&other), Err(Refusal::NoAccess(_))));
        let unverified = serde_json::json!({"email": "dan@example.com", "email_verified": false});
        assert!(matches!(
            sso.person(&unverified),
            Err(Refusal::UnverifiedEmail)
        ));
    }

    #[test]
    fn settings_that_cannot_work_are_refused() {
        let base = || OidcSettings {
            issuer_url: "https://id.example.com".into(),
            client_id: "cp".into(),
            redirect_url: "https://cp.example.com/auth/oidc/callback".into(),
            ..OidcSettings::default()
        };
        assert!(Sso::new(base()).is_ok());
        for broken in [
            OidcSettings {
                issuer_url: "not a url".into(),
                ..base()
            },
            OidcSettings {
                client_id: String::new(),
                ..base()
            },
            OidcSettings {
                redirect_url: "https://cp.example.com/elsewhere".into(),
                ..base()
            },
            OidcSettings {
                default_scope: "root".into(),
                ..base()
            },
            OidcSettings {
                session_idle: Duration::from_secs(7200),
                session_lifetime: Duration::from_secs(60),
                ..base()
            },
        ] {
            assert!(Sso::new(broken).is_err());
        }
    }

    #[test]
    fn cookies_are_http_only_lax_and_secure_behind_https() {
        let https = sso(|_| {}).session_cookie("cps_secret");
        let https = https.to_str().expect("ASCII");
        assert!(
            https.starts_with("commandpost_session=cps_secret; Path=/; Max-Age=43200"),
            "{https}"
        );
        assert!(
            https.contains("; HttpOnly; SameSite=Lax; Secure"),
            "{https}"
        );
        let plain = sso(|s| s.redirect_url = "http://127.0.0.1:7420/auth/oidc/callback".into());
        let cleared = plain.clear_session_cookie();
        let cleared = cleared.to_str().expect("ASCII");
        assert!(
            cleared.contains("Max-Age=0") && !cleared.contains("Secure"),
            "{cleared}"
        );
        assert_eq!(plain.public_origin(), "http://127.0.0.1:7420");
        let state = plain.state_cookie("st");
        assert!(
            state.to_str().expect("ASCII").contains("Path=/auth/oidc;"),
            "{state:?}"
        );
    }

    #[test]
    fn the_client_secret_stays_out_of_debug_output() {
        let settings = OidcSettings {
            client_secret: Some("hunter2-client-secret".into()),
            ..OidcSettings::default()
        };
        let shown = format!("{settings:?}");
        assert!(
            !shown.contains("hunter2") && shown.contains("client_secret"),
            "{shown}"
        );
    }

    #[test]
    fn landing_paths_stay_on_this_server() {
        assert_eq!(safe_next("/#/incidents/x"), "/#/incidents/x");
        assert_eq!(safe_next("//evil.example"), "/");
        assert_eq!(safe_next("https://evil.example"), "/");
        assert_eq!(safe_next("/\\evil.example"), "/");
    }

    #[test]
    fn same_origin_reads_origin_then_fetch_metadata() {
        let headers = |pairs: &[(&'static str, &'static str)]| {
            let mut map = HeaderMap::new();
            for (name, value) in pairs {
                map.insert(*name, HeaderValue::from_static(value));
            }
            map
        };
        let public = Some("https://cp.example.com");
        assert!(same_origin(
            &headers(&[("origin", "https://cp.example.com")]),
            public
        ));
        assert!(same_origin(
            &headers(&[
                ("origin", "http://127.0.0.1:7420"),
                ("host", "127.0.0.1:7420")
            ]),
            public
        ));
        assert!(!same_origin(
            &headers(&[
                ("origin", "https://evil.example"),
                ("host", "cp.example.com")
            ]),
            public
        ));
        assert!(!same_origin(&headers(&[("origin", "null")]), public));
        assert!(same_origin(
            &headers(&[("sec-fetch-site", "same-origin")]),
            public
        ));
        assert!(!same_origin(
            &headers(&[("sec-fetch-site", "cross-site")]),
            public
        ));
        assert!(!same_origin(&headers(&[]), public));
    }

    #[test]
    fn cookies_are_read_by_name() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; commandpost_session=cps_x; b=2"),
        );
        assert_eq!(
            cookie_value(&headers, SESSION_COOKIE).as_deref(),
            Some("cps_x")
        );
        assert_eq!(cookie_value(&headers, STATE_COOKIE), None);
    }
}
