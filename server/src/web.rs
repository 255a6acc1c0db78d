//! The web UI: the files under `web/` (the page, its scripts and the WebAssembly client built into `web/pkg/`),
//! served at `/`.
//!
//! Release builds embed the files in the binary, so one file is the whole deployment; debug builds read them from
//! the source tree, so the page can be edited without rebuilding the server. Every answer carries an `ETag` and
//! `Cache-Control: no-cache`: browsers revalidate on each load (a new release is picked up at once) and get a 304
//! when nothing changed, which matters for the two-megabyte client on a responder's phone.
//!
//! Every answer also carries a strict content security policy ([`POLICY`]) and `nosniff`: the page shows what
//! anyone with a write token typed, so a script that slipped past the DOM building could still load and run no
//! code but the page's own, send nothing anywhere but this server, and the page cannot be framed.

use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{Html, IntoResponse, Response};
use rust_embed::RustEmbed;

use crate::error::ApiError;

/// The files of `web/`; `pkg/` is there only once `scripts/build-wasm.sh` ran.
#[derive(RustEmbed)]
#[folder = "../web/"]
struct Assets;

/// The compiled client; without it the page cannot run.
const CLIENT: &str = "pkg/client_wasm_bg.wasm";

/// The web UI's content security policy. Scripts are the page's own modules (`'wasm-unsafe-eval'` lets them
/// compile the client; no inline script, no `eval`); styles are `app.css` (the page sets none inline); images are
/// its own and the `data:` favicon; connections go to this origin only (`'self'` covers `ws:`/`wss:` to it, for
/// `/sync`). No plugins, no `<base>` rewriting links, forms submit here only, and no site may frame the page.
pub const POLICY: &str = "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; \
     frame-ancestors 'none'";

/// Whether the WebAssembly client is present, for the startup log.
pub fn client_built() -> bool {
    Assets::get(CLIENT).is_some()
}

/// `GET /<path>`: a file of the web UI, `/` being `index.html`. Unknown paths get the API's JSON 404.
pub async fn asset(uri: Uri, headers: HeaderMap) -> Response {
    let path = match uri.path().trim_start_matches('/') {
        "" => "index.html",
        other => other,
    };
    if path == "index.html" && !client_built() {
        return not_built();
    }
    let Some(file) = Assets::get(path) else {
        return ApiError::NotFound.into_response();
    };
    let etag = format!("\"{}\"", hex::encode(file.metadata.sha256_hash()));
    let cached = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|tag| tag.trim() == etag));
    let mut response = if cached {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        let mut response = file.data.into_owned().into_response();
        if let Ok(mime) = HeaderValue::from_str(file.metadata.mimetype()) {
            response.headers_mut().insert(header::CONTENT_TYPE, mime);
        }
        response
    };
    let headers = response.headers_mut();
    if let Ok(etag) = HeaderValue::from_str(&etag) {
        headers.insert(header::ETAG, etag);
    }
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    protect(headers);
    response
}

/// The security headers of every file of the UI: the [`POLICY`]; `nosniff`, so a file is only ever what its
/// type says; `no-referrer`, so the addresses of incidents (and anything else in the URL) stay here when someone
/// follows a link out of an incident; and `X-Frame-Options` for browsers that predate `frame-ancestors`.
fn protect(headers: &mut HeaderMap) {
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
}

/// The answer at `/` when the server was built without the client: say how to build it rather than serve a page
/// that cannot start.
fn not_built() -> Response {
    let mut response = (
        StatusCode::SERVICE_UNAVAILABLE,
        Html(
            "<!doctype html><meta charset=utf-8><title>commandpost</title>\
             <h1>The web client is not built</h1>\
             <p>This server was built without <code>web/pkg/</code>. Build it with \
             <code>bash scripts/build-wasm.sh</code>, or start the server with \
             <code>bash scripts/serve.sh</code>, which does both. The HTTP API and <code>/sync</code> work \
             without it.</p>",
        ),
    )
        .into_response();
    protect(response.headers_mut());
    response
}

#[cfg(test)]
mod tests {
    /// The service worker caches the page's files for offline reloads by a list of its own: a module missing there
    /// is fetched from a server that may be unreachable, and the page does not start offline.
    #[test]
    fn the_service_worker_caches_every_module_of_the_page() {
        let web = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../web");
        let worker = std::fs::read_to_string(web.join("sw.js")).expect("web/sw.js");
        let modules = std::fs::read_dir(web.join("js")).expect("web/js");
        let mut listed = 0;
        for entry in modules {
            let name = entry.expect("an entry").file_name();
            let name = name.to_string_lossy();
            if name.ends_with(".js") {
                assert!(
                    worker.contains(&format!("\"/js/{name}\"")),
                    "web/sw.js does not cache /js/{name}"
                );
                listed += 1;
            }
        }
        assert!(listed > 10, "{listed} modules");
    }
}
