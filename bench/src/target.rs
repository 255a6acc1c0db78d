//! The server under test and how to set a run up on it. commandpost creates incidents over its HTTP API and wants
//! tokens on `/sync` (in the `Authorization` header); automerge-repo's sync server has no API and no auth, and takes documents from its peers: the
//! first editor brings a new incident (created locally from the same template) in its first `sync` message.
//! Hocuspocus holds Yjs documents, not Automerge ones: runs against it go through the Yjs peers of [`crate::yjs`],
//! and a document exists as soon as a peer opens it by name.

use anyhow::{Context, bail};
use incident_doc::{Declaration, Editor as Author, Incident, Template};
use serde::Deserialize;
use serde_json::json;
use wire::DocumentId;

use crate::link::Endpoint;

/// The kind of server, with what it takes to use it.
#[derive(Debug, Clone)]
pub enum Server {
    /// commandpost: its HTTP base URL and an admin token (to make write and read tokens and declare incidents).
    Commandpost {
        /// `http://host:port`, no trailing slash.
        api: String,
        /// An admin-scope token.
        token: String,
    },
    /// Any automerge-repo sync server that stores what its peers send (`@automerge/automerge-repo-sync-server`).
    AutomergeRepo,
    /// Hocuspocus (`@hocuspocus/server`), a Yjs server: its peers speak Yjs ([`crate::hocuspocus`]).
    Hocuspocus,
}

/// The server a run talks to.
#[derive(Debug, Clone)]
pub struct Target {
    /// The WebSocket URL of its sync endpoint, without a token.
    pub sync_url: String,
    /// What kind of server it is.
    pub server: Server,
    /// For commandpost's API.
    http: reqwest::Client,
}

/// Where the two kinds of peer connect: editors may write, viewers only read where the server knows scopes.
#[derive(Debug, Clone)]
pub struct Access {
    /// For editors.
    pub editor: Endpoint,
    /// For viewers.
    pub viewer: Endpoint,
}

/// A new incident: its id, and for servers that take documents from peers, the document the first editor brings.
pub struct NewIncident {
    /// The document id.
    pub id: DocumentId,
    /// `Some` when the first editor must bring the document.
    pub seed: Option<Incident>,
}

/// The answer to `POST /api/incidents` that we use.
#[derive(Deserialize)]
struct Declared {
    /// The document id.
    id: String,
}

/// The answer to `POST /api/tokens` that we use.
#[derive(Deserialize)]
struct CreatedToken {
    /// The new token.
    token: String,
}

impl Target {
    /// A target at `sync_url`.
    pub fn new(sync_url: String, server: Server) -> Target {
        Target {
            sync_url,
            server,
            http: reqwest::Client::new(),
        }
    }

    /// A short name for reports.
    pub fn name(&self) -> &'static str {
        match self.server {
            Server::Commandpost { .. } => "commandpost",
            Server::AutomergeRepo => "automerge-repo-sync-server",
            Server::Hocuspocus => "hocuspocus",
        }
    }

    /// Whether the server holds Yjs documents, so that scenarios run with Yjs peers.
    pub fn is_yjs(&self) -> bool {
        matches!(self.server, Server::Hocuspocus)
    }

    /// Endpoints for editors and viewers: on commandpost, with a new write token and a new read token.
    pub async fn access(&self) -> anyhow::Result<Access> {
        match &self.server {
            Server::Commandpost { .. } => {
                let write = self.token("write").await?;
                let read = self.token("read").await?;
                Ok(Access {
                    editor: self.endpoint(Some(write)),
                    viewer: self.endpoint(Some(read)),
                })
            }
            Server::AutomergeRepo | Server::Hocuspocus => Ok(Access {
                editor: self.endpoint(None),
                viewer: self.endpoint(None),
            }),
        }
    }

    fn endpoint(&self, token: Option<(String, String)>) -> Endpoint {
        let (bearer, author) = token.unzip();
        Endpoint {
            url: self.sync_url.clone(),
            bearer,
            author,
        }
    }

    /// Creates a token of `scope` through `POST /api/tokens`; returns it with its name.
    async fn token(&self, scope: &str) -> anyhow::Result<(String, String)> {
        let name = format!("bench-{scope}-{}", DocumentId::random());
        let created: CreatedToken = self
            .api_post("/api/tokens", json!({"name": name, "scope": scope}))
            .await?;
        Ok((created.token, name))
    }

    /// A new incident titled `title`: declared over the HTTP API on commandpost, created locally from the default
    /// template (the document the API would have made, minus the server's incident number) elsewhere.
    pub async fn new_incident(&self, title: &str) -> anyhow::Result<NewIncident> {
        match &self.server {
            Server::Commandpost { .. } => {
                let declared: Declared = self
                    .api_post("/api/incidents", json!({"title": title}))
                    .await?;
                Ok(NewIncident {
                    id: declared.id.parse().context("the declared id")?,
                    seed: None,
                })
            }
            Server::Hocuspocus => bail!("{} holds Yjs documents, not incidents", self.name()),
            Server::AutomergeRepo => {
                let template = default_template()?;
                let incident = Incident::create(
                    &template,
                    &Declaration {
                        name: title.to_owned(),
                        number: None,
                    },
                    &Author::new("bench", chrono::Utc::now()),
                    None,
                )?;
                Ok(NewIncident {
                    id: DocumentId::random(),
                    seed: Some(incident),
                })
            }
        }
    }

    /// commandpost's HTTP API, or an error for servers without one.
    fn api(&self) -> anyhow::Result<(&str, &str)> {
        match &self.server {
            Server::Commandpost { api, token } => Ok((api, token)),
            Server::AutomergeRepo | Server::Hocuspocus => {
                bail!("{} has no HTTP API", self.name())
            }
        }
    }

    /// `POST path` with a JSON body and the admin token; the JSON answer.
    pub async fn api_post<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        body: serde_json::Value,
    ) -> anyhow::Result<T> {
        let (api, token) = self.api()?;
        let response = self
            .http
            .post(format!("{api}{path}"))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .with_context(|| format!("POST {path}"))?;
        let status = response.status();
        if !status.is_success() {
            bail!(
                "POST {path}: {status}: {}",
                response.text().await.unwrap_or_default()
            );
        }
        response
            .json()
            .await
            .with_context(|| format!("POST {path}"))
    }

    /// `GET path` with the admin token; the JSON answer.
    pub async fn api_get<T: serde::de::DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        let (api, token) = self.api()?;
        let response = self
            .http
            .get(format!("{api}{path}"))
            .bearer_auth(token)
            .send()
            .await
            .with_context(|| format!("GET {path}"))?;
        let status = response.status();
        if !status.is_success() {
            bail!("GET {path}: {status}");
        }
        response.json().await.with_context(|| format!("GET {path}"))
    }
}

/// The template commandpost declares incidents from by default.
fn default_template() -> anyhow::Result<Template> {
    incident_doc::template::builtin()
        .into_iter()
        .find(|t| t.id == incident_doc::DEFAULT_TEMPLATE)
        .context("the default template is built in")
}
