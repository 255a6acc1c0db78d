//! Rebuilds the server when the web UI changes, so a release binary always embeds the current `web/` (including a
//! freshly built `web/pkg/`): cargo scans a watched directory recursively.

fn main() {
    println!("cargo:rerun-if-changed=../web");
}
