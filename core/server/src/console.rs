//! The web console: a few static files embedded in the binary, served at `/` and `/console/`.
//!
//! The console is a client like any other: it speaks the Channel at `/ws`, reads `/health`
//! and `/metrics`, asks `GET /v1/containers` whether a token is needed, and holds no
//! privilege of its own, so its files need no authentication
//! (they hold no data; the token a user signs in with decides what the console can see).
//! The files are plain ES modules, embedded with `include_str!`: no build step, no CDN, and
//! a server that works offline. `core/server/console/README.md` says how they fit together.

use axum::extract::Path;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;
use std::sync::OnceLock;

/// One embedded file.
struct Asset {
    /// Its name under `/console/`.
    name: &'static str,
    /// Its `Content-Type`.
    content_type: &'static str,
    /// Its bytes, as compiled in.
    body: &'static str,
}

/// Every file of the console; anything else under `/console/` is a 404.
const ASSETS: &[Asset] = &[
    asset(
        "index.html",
        "text/html; charset=utf-8",
        include_str!("../console/index.html"),
    ),
    asset(
        "style.css",
        "text/css; charset=utf-8",
        include_str!("../console/style.css"),
    ),
    asset("app.js", JS, include_str!("../console/app.js")),
    asset("channel.js", JS, include_str!("../console/channel.js")),
    asset("dom.js", JS, include_str!("../console/dom.js")),
    asset("chat.js", JS, include_str!("../console/chat.js")),
    asset("sandboxes.js", JS, include_str!("../console/sandboxes.js")),
    asset("operators.js", JS, include_str!("../console/operators.js")),
    asset("terminal.js", JS, include_str!("../console/terminal.js")),
    asset(
        "favicon.svg",
        "image/svg+xml",
        include_str!("../console/favicon.svg"),
    ),
];

const JS: &str = "text/javascript; charset=utf-8";

const fn asset(name: &'static str, content_type: &'static str, body: &'static str) -> Asset {
    Asset {
        name,
        content_type,
        body,
    }
}

/// What the console's pages may load and reach: only this origin (its modules, its
/// stylesheet, `/ws`, `/v1`, `/metrics`), no inline script or style, no framing.
const CSP: &str =
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; \
    connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

/// The console's routes: `/` and `/console/` serve the page, `/console/<file>` its files.
pub(crate) fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(index))
        .route(
            "/console",
            get(|| async { Redirect::permanent("/console/") }),
        )
        .route("/console/", get(index))
        .route("/console/{name}", get(file))
}

async fn index(headers: HeaderMap) -> Response {
    serve("index.html", &headers)
}

async fn file(Path(name): Path<String>, headers: HeaderMap) -> Response {
    serve(&name, &headers)
}

/// A file with its content type, an `ETag` (its bytes' hash), `Cache-Control: no-cache` (the
/// browser revalidates, so a new server binary is picked up at once, and an unchanged file
/// costs a 304), and the security headers.
fn serve(name: &str, headers: &HeaderMap) -> Response {
    let Some((index, asset)) = ASSETS.iter().enumerate().find(|(_, a)| a.name == name) else {
        return crate::http::error_response(&crate::error::Error::Remote {
            kind: crate::error::ErrorKind::NotFound,
            message: format!("no console file {}", crate::http::quoted(name, 128)),
        });
    };
    let etag = &etags()[index];
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag));
    let mut response = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static(asset.content_type),
            )],
            asset.body,
        )
            .into_response()
    };
    let h = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(etag) {
        h.insert(header::ETAG, v);
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

/// The `ETag` of every asset (FNV-1a of its bytes), computed once.
fn etags() -> &'static [String] {
    static ETAGS: OnceLock<Vec<String>> = OnceLock::new();
    ETAGS.get_or_init(|| {
        ASSETS
            .iter()
            .map(|a| {
                let hash = a.body.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
                    (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
                });
                format!("\"{hash:016x}\"")
            })
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_asset_is_reachable_and_every_import_is_embedded() {
        let index = ASSETS[0].body;
        let mut imported: Vec<&str> = Vec::new();
        // Modules import each other by relative path: each import names an asset.
        for asset in ASSETS.iter().filter(|a| a.name.ends_with(".js")) {
            for line in asset.body.lines() {
                if let Some(rest) = line.split("from './").nth(1) {
                    let target = rest.split('\'').next().unwrap_or_default();
                    assert!(
                        ASSETS.iter().any(|a| a.name == target),
                        "{} imports {target}, which is not embedded",
                        asset.name
                    );
                    imported.push(target);
                }
            }
        }
        // Every other file is named by the page or imported by a module: none is dead.
        for asset in &ASSETS[1..] {
            assert!(
                index.contains(&format!("/console/{}", asset.name))
                    || imported.contains(&asset.name),
                "{} is embedded but nothing loads it",
                asset.name
            );
        }
    }

    #[test]
    fn etags_differ_per_file_and_are_quoted() {
        let tags = etags();
        assert_eq!(tags.len(), ASSETS.len());
        for t in tags {
            assert!(t.starts_with('"') && t.ends_with('"'));
        }
        let mut unique = tags.to_vec();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), tags.len());
    }

    #[test]
    fn a_fresh_etag_gets_a_304_and_an_unknown_file_a_404() {
        let mut headers = HeaderMap::new();
        let r = serve("app.js", &headers);
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()[header::CONTENT_TYPE], JS);
        assert!(r.headers()[header::CONTENT_SECURITY_POLICY]
            .to_str()
            .unwrap()
            .contains("script-src 'self'"));
        let etag = r.headers()[header::ETAG].clone();
        headers.insert(header::IF_NONE_MATCH, etag);
        assert_eq!(serve("app.js", &headers).status(), StatusCode::NOT_MODIFIED);
        assert_eq!(
            serve("../Cargo.toml", &HeaderMap::new()).status(),
            StatusCode::NOT_FOUND
        );
    }
}
