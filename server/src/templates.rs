//! The templates a server offers for new incidents: the built-in ones, a directory's (`templates-dir`) and the
//! store's (uploaded through `PUT /api/templates/{id}`, shared by every node), in that order of precedence, so a
//! team overrides a built-in id by writing a template of the same id.
//!
//! Every source is checked before use: a template that does not parse is refused whole with its `file:line:
//! reason`, and the last good version of that id from that origin keeps serving (or, if it never parsed, the id
//! falls back to a lower origin's template, if any). Refusals are logged once per version of the text and kept
//! in [`Catalog::problems`] for `/healthz` and the admin API.
//!
//! A [`Catalog`] is an immutable snapshot; [`Templates`] swaps in a new one when a reload finds a change (the
//! directory re-read and the store's revision polled every [`RELOAD_EVERY`]). A declaration reads one snapshot,
//! so it never sees half a reload; incidents already declared carry their own layout and never read a template
//! again.

pub mod dir;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use incident_doc::{Template, TemplateError};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::store::{Store, StoreError};

/// How often a server re-reads `templates-dir` and polls the store's template revision: a change reaches new
/// declarations on every node within about this long. Both are cheap (a handful of small files, one row).
pub const RELOAD_EVERY: Duration = Duration::from_secs(1);

/// Where a template came from, in increasing precedence: an id defined by several is served from the last.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Origin {
    /// Compiled into the binary (`templates/`).
    BuiltIn,
    /// A file in `templates-dir`.
    Directory,
    /// Uploaded through the admin API, kept in the store.
    Store,
}

impl Origin {
    /// The name used in the API, the log and the admin page.
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::BuiltIn => "built-in",
            Origin::Directory => "directory",
            Origin::Store => "store",
        }
    }
}

/// One template's text as found, before it is checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    /// The template id (the file name without `.md`).
    pub id: String,
    /// The name errors give: the file name in the directory, `<id>.md` for the store's.
    pub file: String,
    /// The bytes, which must be UTF-8.
    pub text: Vec<u8>,
}

impl Source {
    /// Checks the source: UTF-8 first, then the template format.
    pub fn parse(&self) -> Result<Template, TemplateError> {
        let text = std::str::from_utf8(&self.text).map_err(|e| TemplateError {
            file: self.file.clone(),
            line: 1 + self.text[..e.valid_up_to()]
                .iter()
                .filter(|&&b| b == b'\n')
                .count(),
            reason: "not UTF-8 text".into(),
        })?;
        Template::parse(&self.id, &self.file, text)
    }
}

/// A template on offer.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The parsed template, shared by the snapshots that offer it.
    pub template: Arc<Template>,
    /// Its Markdown, for the admin API and page.
    pub source: Arc<str>,
    /// Where it came from.
    pub origin: Origin,
    /// Its file name (in the directory; `<id>.md` otherwise).
    pub file: String,
    /// The lower origins that define the same id and are hidden by this one (a team's override of a built-in).
    pub overrides: Vec<Origin>,
}

/// A template that was refused, and what serves its id meanwhile.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Problem {
    /// The template id; none when the whole directory could not be read.
    pub id: Option<String>,
    /// Where the refused text came from.
    pub origin: Origin,
    /// `file:line: reason`, or why the directory could not be read.
    pub error: String,
    /// What new declarations of this id get instead: the last good version, or a lower origin's template.
    pub serving: Option<Serving>,
}

/// The template that serves an id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Serving {
    /// Its origin.
    pub origin: Origin,
    /// Its version.
    pub version: String,
}

/// A snapshot of the templates on offer, and of the refused ones.
#[derive(Debug, Default)]
pub struct Catalog {
    /// Built-in ids first in their order (the default first), then the others by id.
    templates: Vec<Loaded>,
    /// Refusals, by origin and id.
    problems: Vec<Problem>,
}

impl Catalog {
    /// The template offered under `id`.
    pub fn get(&self, id: &str) -> Option<&Loaded> {
        self.templates.iter().find(|l| l.template.id == id)
    }

    /// Every template on offer, the default first.
    pub fn templates(&self) -> &[Loaded] {
        &self.templates
    }

    /// Every refusal still standing (fixed files and replaced uploads clear theirs).
    pub fn problems(&self) -> &[Problem] {
        &self.problems
    }

    /// Merges the layers, lowest precedence first.
    fn build(layers: &[&Layer]) -> Catalog {
        let mut by_id: BTreeMap<&str, Loaded> = BTreeMap::new();
        for layer in layers {
            for (id, good) in &layer.good {
                let overrides = by_id
                    .get(id.as_str())
                    .map(|hidden| {
                        let mut origins = hidden.overrides.clone();
                        origins.push(hidden.origin);
                        origins
                    })
                    .unwrap_or_default();
                by_id.insert(
                    id.as_str(),
                    Loaded {
                        template: good.template.clone(),
                        source: good.source.clone(),
                        origin: layer.origin,
                        file: good.file.clone(),
                        overrides,
                    },
                );
            }
        }
        let builtin_order = |id: &str| {
            incident_doc::template::builtin_sources()
                .iter()
                .position(|(builtin, _)| *builtin == id)
                .unwrap_or(usize::MAX)
        };
        let mut templates: Vec<Loaded> = by_id.into_values().collect();
        templates.sort_by(|a, b| {
            (builtin_order(&a.template.id), &a.template.id)
                .cmp(&(builtin_order(&b.template.id), &b.template.id))
        });
        let serving = |id: &str| {
            templates
                .iter()
                .find(|l| l.template.id == id)
                .map(|l| Serving {
                    origin: l.origin,
                    version: l.template.version.clone(),
                })
        };
        let mut problems = Vec::new();
        for layer in layers {
            if let Some(error) = &layer.unreadable {
                problems.push(Problem {
                    id: None,
                    origin: layer.origin,
                    error: error.clone(),
                    serving: None,
                });
            }
            for (id, error) in &layer.refused {
                problems.push(Problem {
                    id: Some(id.clone()),
                    origin: layer.origin,
                    error: error.to_string(),
                    serving: serving(id),
                });
            }
        }
        Catalog {
            templates,
            problems,
        }
    }
}

/// A template of one origin that parsed.
#[derive(Debug)]
struct Good {
    /// The parsed template.
    template: Arc<Template>,
    /// Its text.
    source: Arc<str>,
    /// Its file name.
    file: String,
}

/// The templates of one origin: the last good version of each id, and the refusal of its current text, if any.
#[derive(Debug)]
struct Layer {
    /// Which origin.
    origin: Origin,
    /// The last version of each id that parsed.
    good: BTreeMap<String, Good>,
    /// The text last read for each id, so an unchanged file is neither parsed nor reported again.
    seen: BTreeMap<String, Vec<u8>>,
    /// Ids whose current text was refused.
    refused: BTreeMap<String, TemplateError>,
    /// Why the whole origin could not be read, the last time it was tried (a directory gone or unreadable);
    /// its templates keep serving.
    unreadable: Option<String>,
    /// Whether the origin has been read once: what it holds at start is logged at DEBUG (every start would
    /// repeat it), what changes later at INFO.
    read_once: bool,
}

impl Layer {
    fn new(origin: Origin) -> Layer {
        Layer {
            origin,
            good: BTreeMap::new(),
            seen: BTreeMap::new(),
            refused: BTreeMap::new(),
            unreadable: None,
            read_once: false,
        }
    }

    /// Brings the layer up to `sources`, the origin's complete current set: new and changed texts are checked,
    /// ids no longer present are dropped. Returns whether anything changed.
    fn update(&mut self, sources: Vec<Source>) -> bool {
        let mut changed = self.unreadable.take().is_some();
        let present: Vec<&str> = sources.iter().map(|s| s.id.as_str()).collect();
        let before = (self.good.len(), self.seen.len());
        self.good.retain(|id, _| present.contains(&id.as_str()));
        self.refused.retain(|id, _| present.contains(&id.as_str()));
        self.seen.retain(|id, _| present.contains(&id.as_str()));
        changed |= before != (self.good.len(), self.seen.len());
        for source in sources {
            if self.seen.get(&source.id) == Some(&source.text) {
                continue;
            }
            changed = true;
            match source.parse() {
                Ok(template) => {
                    let (id, version, origin) =
                        (&template.id, &template.version, self.origin.as_str());
                    if self.read_once {
                        tracing::info!(template = %id, %version, origin, file = %source.file, "template loaded");
                    } else {
                        tracing::debug!(template = %id, %version, origin, file = %source.file, "template loaded");
                    }
                    self.refused.remove(&source.id);
                    self.good.insert(
                        source.id.clone(),
                        Good {
                            template: Arc::new(template),
                            source: Arc::from(String::from_utf8_lossy(&source.text)),
                            file: source.file.clone(),
                        },
                    );
                }
                Err(error) => {
                    let keeps = self.good.get(&source.id).map_or_else(
                        || "nothing of this origin serves the id".to_owned(),
                        |good| {
                            format!(
                                "the last good version ({}) keeps serving",
                                good.template.version
                            )
                        },
                    );
                    tracing::warn!(
                        template = %source.id,
                        origin = self.origin.as_str(),
                        %error,
                        "template refused; {keeps}"
                    );
                    self.refused.insert(source.id.clone(), error);
                }
            }
            self.seen.insert(source.id, source.text);
        }
        self.read_once = true;
        changed
    }

    /// Records that the origin could not be read; what it served keeps serving. Returns whether that is news.
    fn unreadable(&mut self, error: String) -> bool {
        if self.unreadable.as_ref() == Some(&error) {
            return false;
        }
        tracing::warn!(
            origin = self.origin.as_str(),
            %error,
            "templates could not be read; the ones loaded before keep serving"
        );
        self.unreadable = Some(error);
        true
    }
}

/// Every origin's layer, and how far the store's has been read.
#[derive(Debug)]
struct Layers {
    built_in: Layer,
    directory: Layer,
    store: Layer,
    /// The store revision the store layer reflects; a reload that read an older one does not apply it.
    store_revision: Option<i64>,
}

/// The live templates of a server: cheap to clone, shared by the handlers and the reloader.
#[derive(Clone)]
pub struct Templates {
    inner: Arc<Shared>,
}

struct Shared {
    /// `templates-dir`, if configured.
    dir: Option<PathBuf>,
    /// Where uploaded templates live.
    store: Arc<dyn Store>,
    /// The layers, changed only by reloads. A std mutex: it is held only to apply what a reload read, never
    /// across an await.
    layers: Mutex<Layers>,
    /// The snapshot declarations read; replaced whole.
    current: RwLock<Arc<Catalog>>,
}

/// Why the templates could not be loaded when the server started.
#[derive(Debug, thiserror::Error)]
#[error("reading templates-dir {dir}: {error}")]
pub struct DirError {
    /// The configured directory.
    dir: String,
    /// What went wrong.
    error: std::io::Error,
}

impl Templates {
    /// The built-in templates, then `dir`'s and the store's. A directory that cannot be read is an error here
    /// (a mistyped setting should stop the server, not hide a team's templates); a store that does not answer
    /// is logged and read again by the reloader.
    pub async fn load(dir: Option<PathBuf>, store: Arc<dyn Store>) -> Result<Templates, DirError> {
        let mut built_in = Layer::new(Origin::BuiltIn);
        built_in.update(
            incident_doc::template::builtin_sources()
                .iter()
                .map(|(id, text)| Source {
                    id: (*id).to_owned(),
                    file: format!("templates/{id}.md"),
                    text: text.as_bytes().to_vec(),
                })
                .collect(),
        );
        let templates = Templates {
            inner: Arc::new(Shared {
                dir,
                store,
                layers: Mutex::new(Layers {
                    built_in,
                    directory: Layer::new(Origin::Directory),
                    store: Layer::new(Origin::Store),
                    store_revision: None,
                }),
                current: RwLock::new(Arc::default()),
            }),
        };
        if let Some(dir) = &templates.inner.dir {
            let sources = read_dir(dir.clone()).await.map_err(|error| DirError {
                dir: dir.display().to_string(),
                error,
            })?;
            templates.apply(|layers| layers.directory.update(sources));
        }
        if let Err(error) = templates.reload_store().await {
            tracing::warn!(%error, "reading the stored templates; retrying every second");
        }
        // Publishes the first snapshot even when only the built-in templates exist (nothing above changed).
        templates.apply(|_| true);
        Ok(templates)
    }

    /// The templates on offer now.
    pub fn current(&self) -> Arc<Catalog> {
        self.inner
            .current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Re-reads the directory and, if the store's revision moved, the stored templates.
    pub async fn reload(&self) {
        if let Some(dir) = &self.inner.dir {
            match read_dir(dir.clone()).await {
                Ok(sources) => self.apply(|layers| layers.directory.update(sources)),
                Err(error) => self.apply(|layers| {
                    layers
                        .directory
                        .unreadable(format!("reading {}: {error}", dir.display()))
                }),
            }
        }
        if let Err(error) = self.reload_store().await {
            tracing::warn!(%error, "reading the stored templates");
        }
    }

    /// Reads the stored templates if their revision moved since the last read: after an upload on this node,
    /// and on every reload for the others'.
    pub async fn reload_store(&self) -> Result<(), StoreError> {
        let store = &self.inner.store;
        // The revision first: a change made in between is read now and read again next time, never missed.
        let revision = store.templates_revision().await?;
        if self.lock().store_revision == Some(revision) {
            return Ok(());
        }
        let sources = store
            .templates()
            .await?
            .into_iter()
            .map(|t| Source {
                file: format!("{}.md", t.id),
                id: t.id,
                text: t.source.into_bytes(),
            })
            .collect();
        self.apply(|layers| {
            // A slower reload that read an older revision must not undo a newer one's.
            if layers.store_revision.is_some_and(|seen| seen >= revision) {
                return false;
            }
            layers.store_revision = Some(revision);
            layers.store.update(sources)
        });
        Ok(())
    }

    /// Reloads every [`RELOAD_EVERY`] until `stop`.
    pub fn spawn_reloader(&self, stop: CancellationToken) {
        let templates = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(RELOAD_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    _ = tick.tick() => templates.reload().await,
                }
            }
        });
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Layers> {
        self.inner
            .layers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Changes the layers with `change` and, if it says something changed, publishes a new snapshot.
    fn apply(&self, change: impl FnOnce(&mut Layers) -> bool) {
        let mut layers = self.lock();
        if !change(&mut layers) {
            return;
        }
        let catalog = Catalog::build(&[&layers.built_in, &layers.directory, &layers.store]);
        *self
            .inner
            .current
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Arc::new(catalog);
    }
}

/// Reads a template directory off the async workers.
async fn read_dir(dir: PathBuf) -> std::io::Result<Vec<Source>> {
    tokio::task::spawn_blocking(move || dir::read(&dir))
        .await
        .map_err(std::io::Error::other)?
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(id: &str, text: &str) -> Source {
        Source {
            id: id.into(),
            file: format!("{id}.md"),
            text: text.as_bytes().to_vec(),
        }
    }

    fn template(name: &str) -> String {
        format!("# {name}\n\nAbout {name}.\n\n## Title\n<!-- commandpost key=title kind=text -->\n")
    }

    const BROKEN: &str = "# Broken\n\n## Title\n<!-- commandpost key=title kind=list -->\n";

    fn built_in() -> Layer {
        let mut layer = Layer::new(Origin::BuiltIn);
        layer.update(vec![source("incident", &template("General"))]);
        layer
    }

    #[test]
    fn a_refused_text_keeps_the_last_good_version_serving() {
        let mut dir = Layer::new(Origin::Directory);
        assert!(dir.update(vec![source("payments", &template("Payments"))]));
        let good = Catalog::build(&[&built_in(), &dir]);
        let version = good
            .get("payments")
            .expect("served")
            .template
            .version
            .clone();

        assert!(dir.update(vec![source("payments", BROKEN)]));
        assert!(
            !dir.update(vec![source("payments", BROKEN)]),
            "unchanged text is not checked again"
        );
        let catalog = Catalog::build(&[&built_in(), &dir]);
        let served = catalog.get("payments").expect("still served");
        assert_eq!(served.template.version, version);
        assert_eq!(catalog.problems().len(), 1);
        let problem = &catalog.problems()[0];
        assert_eq!(
            problem.error,
            "payments.md:4: unknown kind \"list\" (expected one of text, markdown, status, choice, flag, roles, checklist, timeline, timestamps, questions, deviations, changes)"
        );
        assert_eq!(problem.serving.as_ref().map(|s| &s.version), Some(&version));

        assert!(dir.update(vec![source("payments", &template("Payments v2"))]));
        let fixed = Catalog::build(&[&built_in(), &dir]);
        assert!(fixed.problems().is_empty());
        assert_ne!(
            fixed.get("payments").expect("served").template.version,
            version
        );

        assert!(dir.update(Vec::new()), "a removed file is dropped");
        assert!(
            Catalog::build(&[&built_in(), &dir])
                .get("payments")
                .is_none()
        );
    }

    #[test]
    fn higher_origins_override_an_id_and_a_broken_one_falls_back() {
        let mut store = Layer::new(Origin::Store);
        store.update(vec![source("incident", &template("Ours"))]);
        let catalog = Catalog::build(&[&built_in(), &Layer::new(Origin::Directory), &store]);
        let served = catalog.get("incident").expect("served");
        assert_eq!(
            (served.origin, served.template.name.as_str()),
            (Origin::Store, "Ours")
        );
        assert_eq!(served.overrides, [Origin::BuiltIn]);

        let mut never_good = Layer::new(Origin::Directory);
        never_good.update(vec![source("incident", BROKEN)]);
        let catalog = Catalog::build(&[&built_in(), &never_good]);
        assert_eq!(
            catalog.get("incident").expect("served").origin,
            Origin::BuiltIn
        );
        assert_eq!(
            catalog.problems()[0].serving.as_ref().map(|s| s.origin),
            Some(Origin::BuiltIn)
        );
    }

    #[test]
    fn text_that_is_not_utf8_is_refused_with_its_line() {
        let mut text = b"# Name\n\n".to_vec();
        text.push(0xff);
        let error = Source {
            id: "x".into(),
            file: "x.md".into(),
            text,
        }
        .parse()
        .expect_err("refused");
        assert_eq!(error.to_string(), "x.md:3: not UTF-8 text");
    }
}
