//! HTTP routes shared by the HTTP/3 and HTTP/1.1 front ends: the game
//! pages, the browser client, `/games`, `/health` and `/cert-hash`.
//!
//! Pure routing: a request line in, a complete response out. The front ends
//! own the sockets.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderMap, Method, Response, StatusCode};
use include_dir::{include_dir, Dir};

use crate::metrics::Metrics;
use crate::shared::Shared;

/// The browser client and the built-in games' pages, embedded so the
/// binary serves them from anywhere.
static CLIENT: Dir<'static> = include_dir!("$CARGO_MANIFEST_DIR/client");

/// The WebTransport session and WebSocket endpoint path.
pub const RALLY_PATH: &str = "/rally";

/// The built-in games that have a page: name, path, title.
pub const GAME_PAGES: [(&str, &str, &str); 3] = [
    ("dots", "/dots", "Dots"),
    ("relay", "/relay", "Relay"),
    ("shooter", "/shooter", "Shooter"),
];

fn content_type(path: &str) -> &'static str {
    let ext = path.rsplit_once('.').map(|(_, e)| e);
    match ext {
        Some("html") | None => "text/html; charset=utf-8",
        Some("js") | Some("mjs") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("json") => "application/json",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("ts") | Some("md") | Some("txt") => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

fn respond(status: StatusCode, ctype: &str, body: impl Into<Bytes>) -> Response<Bytes> {
    let mut resp = Response::new(body.into());
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    // Header values here are static ASCII.
    h.insert(header::CONTENT_TYPE, ctype.parse().expect("static header"));
    h.insert(
        header::CACHE_CONTROL,
        "no-cache".parse().expect("static header"),
    );
    resp
}

fn json(value: serde_json::Value) -> Response<Bytes> {
    let mut resp = respond(StatusCode::OK, "application/json", value.to_string());
    // Public, read-only facts: any page may read them (a game page on another
    // origin needs the certificate hash to open WebTransport).
    resp.headers_mut().insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        "*".parse().expect("static header"),
    );
    resp
}

fn not_found() -> Response<Bytes> {
    respond(
        StatusCode::NOT_FOUND,
        "text/plain; charset=utf-8",
        "not found\n",
    )
}

fn client_file(name: &str) -> Option<Bytes> {
    // include_dir paths are relative and never contain "..": a request for
    // "../x" simply matches nothing.
    CLIENT
        .get_file(name)
        .map(|f| Bytes::from_static(f.contents()))
}

/// The pages a server serves besides the client: the built-in games',
/// `/` for the running game, and a game developer's own files.
pub struct Pages {
    running: String,
    files: HashMap<String, Bytes>,
}

impl Pages {
    /// Pages for a server running `game`, with `extra` files (which take
    /// precedence, `/` included).
    pub fn new(game: &str, extra: Vec<(String, Bytes)>) -> Pages {
        let mut files = HashMap::new();
        for (name, path, _) in GAME_PAGES {
            if let Some(page) = client_file(&format!("games/{name}.html")) {
                files.insert(path.to_string(), page);
            }
        }
        let home = files
            .get(&format!("/{game}"))
            .cloned()
            .or_else(|| client_file("index.html"));
        if let Some(home) = home {
            files.insert("/".into(), home);
        }
        files.extend(extra);
        Pages {
            running: game.to_string(),
            files,
        }
    }

    fn get(&self, path: &str) -> Option<Response<Bytes>> {
        let body = self.files.get(path)?.clone();
        Some(respond(StatusCode::OK, content_type(path), body))
    }

    /// `/games`: which game runs here, and the built-in games' pages.
    fn games(&self) -> serde_json::Value {
        let games: Vec<_> = GAME_PAGES
            .iter()
            .map(|(name, path, title)| serde_json::json!({"name": name, "path": path, "title": title}))
            .collect();
        serde_json::json!({"running": self.running, "games": games})
    }
}

/// Serves one request. `path` excludes the query string; `headers` are the
/// request's (the admin API reads `Authorization`).
pub fn route(
    method: &Method,
    path: &str,
    headers: &HeaderMap,
    shared: &Arc<Shared>,
) -> Response<Bytes> {
    if method != Method::GET && method != Method::HEAD {
        return respond(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain; charset=utf-8",
            "method not allowed\n",
        );
    }
    match path {
        "/health" => json(health(shared)),
        "/metrics" => respond(
            StatusCode::OK,
            crate::metrics::export::CONTENT_TYPE,
            crate::metrics::export::render(shared),
        ),
        "/cert-hash" => json(shared.certs.hash_json()),
        "/games" => json(shared.pages.games()),
        p if p == ADMIN_PATH || p.starts_with("/admin/") => admin(p, headers, shared),
        p => shared
            .pages
            .get(p)
            .or_else(|| {
                let name = p.strip_prefix("/client/")?;
                let body = client_file(name)?;
                Some(respond(StatusCode::OK, content_type(name), body))
            })
            .unwrap_or_else(not_found),
    }
}

/// The admin page (`--admin-token`).
pub const ADMIN_PATH: &str = "/admin";
/// The admin page's data, behind `Authorization: Bearer TOKEN`.
pub const ADMIN_STATE_PATH: &str = "/admin/api/state";

/// `/admin` and `/admin/*`: unknown paths unless `--admin-token` is set.
/// The page is public (it holds no data); the state needs the token.
fn admin(path: &str, headers: &HeaderMap, shared: &Shared) -> Response<Bytes> {
    let Some(admin) = &shared.admin else {
        return not_found();
    };
    match path {
        ADMIN_PATH => {
            let Some(page) = client_file("admin.html") else {
                return not_found();
            };
            let mut resp = respond(StatusCode::OK, "text/html; charset=utf-8", page);
            let h = resp.headers_mut();
            // The page keeps the token in sessionStorage: no other
            // origin's script, no framing, no Referer.
            h.insert(
                header::CONTENT_SECURITY_POLICY,
                header::HeaderValue::from_static(
                    "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; frame-ancestors 'none'",
                ),
            );
            h.insert(
                header::REFERRER_POLICY,
                header::HeaderValue::from_static("no-referrer"),
            );
            resp
        }
        ADMIN_STATE_PATH => {
            let mut resp = if admin.authorized(headers) {
                respond(
                    StatusCode::OK,
                    "application/json",
                    crate::admin::state(shared).to_string(),
                )
            } else {
                shared
                    .metrics
                    .admin_refused
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let why = if headers.contains_key(header::AUTHORIZATION) {
                    "wrong token"
                } else {
                    "no token"
                };
                tracing::warn!(path, "admin API refused: {why}");
                let mut r = respond(
                    StatusCode::UNAUTHORIZED,
                    "text/plain; charset=utf-8",
                    "admin token required: Authorization: Bearer TOKEN\n",
                );
                r.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    header::HeaderValue::from_static("Bearer realm=\"rally-admin\""),
                );
                r
            };
            resp.headers_mut().insert(
                header::CACHE_CONTROL,
                header::HeaderValue::from_static("no-store"),
            );
            resp
        }
        _ => not_found(),
    }
}

fn health(shared: &Shared) -> serde_json::Value {
    serde_json::json!({
        "status": "ok",
        "version": env!("CARGO_PKG_VERSION"),
        "protocol": crate::protocol::PROTOCOL_VERSION,
        "game": shared.rooms.game_name(),
        "rooms": shared.rooms.len(),
        "metrics": Metrics::snapshot(&shared.metrics),
    })
}

/// A JSON answer with `status`, readable from any origin (`/rooms`).
pub(crate) fn json_response(status: StatusCode, value: serde_json::Value) -> Response<Bytes> {
    let mut resp = json(value);
    *resp.status_mut() = status;
    resp
}
