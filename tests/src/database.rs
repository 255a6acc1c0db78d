//! [`TestDatabase`]: a schema of its own in the PostgreSQL that runs on every machine of this project (database
//! `test` at 127.0.0.1:5432, trust auth), so cluster tests never collide with each other or with earlier runs.

use std::process::Command;

/// The server PostgreSQL tests use, overridable with `COMMANDPOST_TEST_DATABASE_URL` (no query string).
fn server_url() -> String {
    std::env::var("COMMANDPOST_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// A fresh, empty schema, dropped with everything in it when the value is dropped.
pub struct TestDatabase {
    schema: String,
}

impl TestDatabase {
    /// Creates the schema; fails the test with instructions if PostgreSQL cannot be reached (it runs on these
    /// machines and in CI, so a missing database is an error, never a reason to skip).
    pub fn create() -> TestDatabase {
        let schema = format!("cp_cluster_{:012x}", rand::random::<u64>() >> 16);
        psql(&format!("CREATE SCHEMA {schema}")).unwrap_or_else(|e| {
            panic!(
                "PostgreSQL at {} is needed for the cluster tests (start it with \
                 `pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start`): {e}",
                server_url()
            )
        });
        TestDatabase { schema }
    }

    /// The URL a server node uses: the schema chosen through the connection's search path.
    pub fn url(&self) -> String {
        self.url_via(None)
    }

    /// The URL through another address (a [`Proxy`](crate::Proxy) in front of PostgreSQL), same schema.
    pub fn url_via(&self, addr: Option<std::net::SocketAddr>) -> String {
        let mut url = server_url();
        if let Some(addr) = addr {
            url = url.replace("127.0.0.1:5432", &addr.to_string());
        }
        format!("{url}?options=-c%20search_path%3D{}", self.schema)
    }

    /// The tables in the schema, sorted: whether anything created the store.
    pub fn tables(&self) -> Vec<String> {
        psql(&format!(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = '{}' ORDER BY 1",
            self.schema
        ))
        .unwrap_or_else(|e| panic!("listing the tables of {}: {e}", self.schema))
        .lines()
        .map(str::to_owned)
        .collect()
    }

    /// Replays `sql` (a fixture's dump, whose tables are qualified with `__SCHEMA__`) into this schema.
    pub fn load(&self, sql: &str) {
        let sql = sql.replace("__SCHEMA__", &self.schema);
        psql(&sql).unwrap_or_else(|e| panic!("loading SQL into {}: {e}", self.schema));
    }

    /// The address of PostgreSQL itself, for a proxy to forward to.
    pub fn server_addr() -> std::net::SocketAddr {
        std::net::SocketAddr::from(([127, 0, 0, 1], 5432))
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        if let Err(e) = psql(&format!("DROP SCHEMA IF EXISTS {} CASCADE", self.schema)) {
            eprintln!("dropping test schema {}: {e}", self.schema);
        }
    }
}

/// Runs one SQL statement with the `psql` client; returns what it printed, unaligned, without headers.
fn psql(sql: &str) -> Result<String, String> {
    let output = Command::new("psql")
        .arg(server_url())
        .args(["-v", "ON_ERROR_STOP=1", "-q", "-At", "-c", sql])
        .output()
        .map_err(|e| format!("running psql: {e}"))?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).into_owned())
    }
}
