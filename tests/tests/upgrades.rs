//! Upgrades keep every incident: each fixture store in `tests/fixtures/stores/` was written by an earlier release
//! of this repository (`scripts/make-fixture-store.sh`, which names the commit in the fixture's `RELEASE`), with the
//! exports that release rendered: a SQLite file, or a PostgreSQL schema dumped as SQL and replayed into a schema of
//! the test's own. Today's server opens a copy, says it upgraded the store's schema, serves every
//! incident with the same exports, keeps serving the upgraded copy after a restart, and `commandpost check` finds it
//! whole; a store from a newer release than this one is refused with a message saying so, and left as it was.

use std::path::{Path, PathBuf};

use reqwest::{Method, StatusCode};
use serde_json::Value;
use tests::{TestDatabase, TestServer};

/// A PostgreSQL fixture's dump.
const POSTGRES: &str = "postgres.sql";

/// Formats compared byte for byte. The JSON export is compared as JSON without `stale`, which says whether a field
/// is overdue *now*, so it changes with the clock, not with the release.
const EXACT: [&str; 3] = ["markdown", "html", "postmortem"];

/// The fixture stores: directories holding a `commandpost.db` or a `postgres.sql`.
fn fixtures() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/stores");
    let mut stores: Vec<PathBuf> = std::fs::read_dir(&root)
        .expect("tests/fixtures/stores")
        .map(|entry| entry.expect("an entry").path())
        .filter(|path| path.join("commandpost.db").is_file() || path.join(POSTGRES).is_file())
        .collect();
    stores.sort();
    assert!(
        !stores.is_empty(),
        "no fixture stores in {}",
        root.display()
    );
    stores
}

/// The incidents a fixture's exports were saved for, by id.
fn exported_ids(fixture: &Path) -> Vec<String> {
    let mut ids: Vec<String> = std::fs::read_dir(fixture.join("exports"))
        .expect("the fixture's exports")
        .filter_map(|entry| {
            let name = entry.ok()?.file_name().to_string_lossy().into_owned();
            name.strip_suffix(".markdown").map(str::to_owned)
        })
        .collect();
    ids.sort();
    ids
}

/// `value` without the clock-dependent `stale` flags, wherever they are.
fn without_stale(value: &mut Value) {
    match value {
        Value::Object(map) => {
            map.remove("stale");
            map.values_mut().for_each(without_stale);
        }
        Value::Array(items) => items.iter_mut().for_each(without_stale),
        _ => {}
    }
}

/// Every incident of `fixture` is listed and exports exactly as the release that wrote it exported it.
async fn serves_as_written(server: &TestServer, token: &str, fixture: &Path) {
    let ids = exported_ids(fixture);
    assert!(ids.len() >= 3, "{ids:?}");
    let (status, list) = server
        .call(Method::GET, "/api/incidents", Some(token), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    let mut listed: Vec<String> = list["incidents"]
        .as_array()
        .expect("incidents")
        .iter()
        .filter_map(|i| i["id"].as_str().map(str::to_owned))
        .collect();
    listed.sort();
    assert_eq!(listed, ids, "{}: the same incidents", fixture.display());
    for id in &ids {
        for format in EXACT {
            let then = std::fs::read(fixture.join(format!("exports/{id}.{format}")))
                .expect("saved export");
            let now = server.export(token, id, format).await;
            assert!(
                then == now,
                "{}: {id}.{format} differs:\n--- then\n{}\n--- now\n{}",
                fixture.display(),
                String::from_utf8_lossy(&then),
                String::from_utf8_lossy(&now)
            );
        }
        let saved =
            std::fs::read(fixture.join(format!("exports/{id}.json"))).expect("saved export");
        let mut then: Value = serde_json::from_slice(&saved).expect("saved JSON");
        let mut now: Value =
            serde_json::from_slice(&server.export(token, id, "json").await).expect("JSON");
        without_stale(&mut then);
        without_stale(&mut now);
        assert_eq!(then, now, "{}: {id}.json", fixture.display());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stores_written_by_earlier_releases_open_upgraded_with_every_incident() {
    for fixture in fixtures() {
        let token = std::fs::read_to_string(fixture.join("admin-token"))
            .expect("the fixture's admin token");
        let token = token.trim();
        // Kept until the end of the case: dropping it drops the schema.
        let mut database = None;
        let (mut server, upgraded) = match std::fs::read_to_string(fixture.join(POSTGRES)) {
            Ok(sql) => {
                let db = database.insert(TestDatabase::create());
                db.load(&sql);
                let config = format!("database-url = {:?}\n", db.url());
                let server = TestServer::start_node(&config, token).await;
                (server, "upgraded the PostgreSQL schema")
            }
            Err(_) => (
                TestServer::start_process_on_copy(&fixture, token).await,
                "upgraded the SQLite store's schema",
            ),
        };
        serves_as_written(&server, token, &fixture).await;
        // Still whole after the upgrade was committed and the server restarted on it.
        server.restart().await;
        serves_as_written(&server, token, &fixture).await;
        server.stop_process().await;
        let log = server.log();
        // And whole by `commandpost check`: every document loads and agrees with its index row.
        let store = match &database {
            Some(db) => ["--database-url".to_owned(), db.url()],
            None => [
                "--data-dir".to_owned(),
                server.data_dir().display().to_string(),
            ],
        };
        let check = tokio::process::Command::new(env!("CARGO_BIN_EXE_commandpost-under-test"))
            .arg("check")
            .args(&store)
            .output()
            .await
            .expect("running commandpost check");
        assert!(
            check.status.success() && check.stdout.is_empty(),
            "{}: check found problems:\n{}{}",
            fixture.display(),
            String::from_utf8_lossy(&check.stdout),
            String::from_utf8_lossy(&check.stderr)
        );
        drop(database);
        assert_eq!(
            log.matches(upgraded).count(),
            1,
            "{}: the upgrade is said once, on the first start:\n{log}",
            fixture.display()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_from_a_newer_release_is_refused_and_left_as_it_was() {
    let fixture = fixtures()
        .into_iter()
        .find(|path| path.join("commandpost.db").is_file())
        .expect("a SQLite fixture");
    let dir = tempfile::tempdir().expect("a directory");
    let db = dir.path().join("commandpost.db");
    std::fs::copy(fixture.join("commandpost.db"), &db).expect("copying the fixture");
    {
        let conn = rusqlite::Connection::open(&db).expect("opening the copy");
        conn.pragma_update(None, "user_version", 999)
            .expect("marking it as from the future");
    }
    let before = std::fs::read(&db).expect("reading the store");
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_commandpost-under-test"))
        .args(["token", "list", "--data-dir"])
        .arg(dir.path())
        .output()
        .await
        .expect("running the command line");
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{err}");
    assert!(
        err.contains("schema version 999") && err.contains("upgrade commandpost"),
        "{err}"
    );
    assert_eq!(
        std::fs::read(&db).expect("reading the store"),
        before,
        "the store is untouched"
    );
}
