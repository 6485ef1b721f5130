//! HTTP routes shared by the HTTP/3 and HTTP/1.1 front ends: the demo page
//! and client files, `/health` and `/cert-hash`.
//!
//! Pure routing: a request line in, a complete response out. The front ends
//! own the sockets.

use std::sync::Arc;

use bytes::Bytes;
use http::{header, Method, Response, StatusCode};
use include_dir::{include_dir, Dir};

use crate::metrics::Metrics;
use crate::server::Shared;

/// The browser client, embedded so the binary serves it from anywhere.
static CLIENT: Dir<'static> = include_dir!("$CARGO_MANIFEST_DIR/client");

/// The WebTransport session and WebSocket endpoint path.
pub const RALLY_PATH: &str = "/rally";

fn content_type(path: &str) -> &'static str {
    match path.rsplit('.').next() {
        Some("html") => "text/html; charset=utf-8",
        Some("js") | Some("mjs") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("json") => "application/json",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("ts") | Some("md") => "text/plain; charset=utf-8",
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

fn file(name: &str) -> Option<Response<Bytes>> {
    // include_dir paths are relative and never contain "..": a request for
    // "../x" simply matches nothing.
    let f = CLIENT.get_file(name)?;
    Some(respond(StatusCode::OK, content_type(name), f.contents()))
}

/// Serves one request. `path` excludes the query string.
pub fn route(method: &Method, path: &str, shared: &Arc<Shared>) -> Response<Bytes> {
    if method != Method::GET && method != Method::HEAD {
        return respond(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain; charset=utf-8",
            "method not allowed\n",
        );
    }
    match path {
        "/" | "/index.html" => file("index.html").unwrap_or_else(not_found),
        "/health" => json(health(shared)),
        "/cert-hash" => json(shared.certs.hash_json()),
        p => match p.strip_prefix("/client/") {
            Some(name) => file(name).unwrap_or_else(not_found),
            None => not_found(),
        },
    }
}

fn health(shared: &Shared) -> serde_json::Value {
    serde_json::json!({
        "status": "ok",
        "version": env!("CARGO_PKG_VERSION"),
        "protocol": crate::protocol::PROTOCOL_VERSION,
        "rooms": shared.rooms.len(),
        "metrics": Metrics::snapshot(&shared.metrics),
    })
}
