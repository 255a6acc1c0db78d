//! Rebuilds the server when what it embeds changes: the web UI (so a release binary always carries the current
//! `web/`, including a freshly built `web/pkg/`) and the PostgreSQL migrations (`sqlx::migrate!` reads the folder at
//! compile time). Cargo scans a watched directory recursively, so new files count too.

fn main() {
    println!("cargo:rerun-if-changed=../web");
    println!("cargo:rerun-if-changed=migrations");
}
