//! TCP front end: HTTP/1.1 (TLS when a real certificate is configured) with
//! the shared routes, and the WebSocket endpoint at `/rally`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::WebSocketStream;
use tracing::Instrument;

use crate::http::{route, RALLY_PATH};
use crate::kind::TransportKind;
use crate::session;
use crate::shared::{ConnGuard, Shared};
use crate::transport::streaming::{self, Body, HTTP_PATH};
use crate::transport::websocket;
use crate::transport::wire::{Wire, WireIo};

/// Accepts TCP connections until `listener` errors fatally or the task is
/// dropped.
pub async fn serve(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shared: Arc<Shared>,
) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Some(guard) = shared.admit(peer.ip()) else {
            tracing::debug!(%peer, "connection refused: connection limit");
            drop(stream);
            continue;
        };
        let shared = shared.clone();
        let tls = tls.clone();
        let span = tracing::debug_span!("tcp", %peer);
        let handshake_timeout = shared.cfg.limits.handshake_timeout;
        let send_buffer = shared.cfg.limits.tcp_send_buffer;
        shared.tasks.clone().spawn(
            async move {
                // Shared with an upgraded WebSocket, which outlives this task.
                let guard = Arc::new(guard);
                if let Err(e) = stream.set_nodelay(true) {
                    tracing::debug!("set_nodelay: {e}");
                }
                if let Err(e) = socket2::SockRef::from(&stream).set_send_buffer_size(send_buffer) {
                    tracing::debug!("SO_SNDBUF: {e}");
                }
                match tls {
                    None => connection(stream, peer, shared, guard).await,
                    Some(acceptor) => {
                        match tokio::time::timeout(handshake_timeout, acceptor.accept(stream)).await
                        {
                            Ok(Ok(tls)) => connection(tls, peer, shared, guard).await,
                            Ok(Err(e)) => tracing::debug!("TLS handshake failed: {e}"),
                            Err(_) => tracing::debug!("TLS handshake timed out"),
                        }
                    }
                }
            }
            .instrument(span),
        );
    }
}

async fn connection<S>(io: S, peer: SocketAddr, shared: Arc<Shared>, guard: Arc<ConnGuard>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let timeout = shared.cfg.limits.handshake_timeout;
    let stop = shared.tcp_stop.clone();
    let svc = service_fn(move |req| {
        let shared = shared.clone();
        let guard = guard.clone();
        async move { Ok::<_, std::convert::Infallible>(request(req, peer, shared, guard).await) }
    });
    // HTTP/1.1, and HTTP/2 when the client speaks it (ALPN `h2` on TLS):
    // the HTTP streaming transport then shares one connection (§11).
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(timeout)
        .max_buf_size(16 * 1024);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(32)
        .max_header_list_size(16 * 1024);
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), svc);
    tokio::pin!(conn);
    let result = tokio::select! {
        r = conn.as_mut() => r,
        _ = stop.cancelled() => {
            // Finish the request in flight, then close (an upgraded
            // WebSocket runs in its own task and closes itself).
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        tracing::debug!("HTTP connection ended: {e}");
    }
}

async fn request(
    mut req: Request<Incoming>,
    peer: SocketAddr,
    shared: Arc<Shared>,
    guard: Arc<ConnGuard>,
) -> Response<Body> {
    shared
        .metrics
        .http_requests
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let path = req.uri().path();
    if path == RALLY_PATH {
        return upgrade(&mut req, peer, shared, guard, Endpoint::Rally);
    }
    if path == ECHO_PATH && shared.cfg.ws_echo {
        return upgrade(&mut req, peer, shared, guard, Endpoint::Echo);
    }
    if path == HTTP_PATH || path.starts_with(HTTP_PATH) && path[HTTP_PATH.len()..].starts_with('/')
    {
        return streaming::serve(req, shared).await;
    }
    let mut resp = route(req.method(), req.uri().path(), &shared).map(|b| Full::new(b).boxed());
    if let Some(alt) = &shared.alt_svc {
        // Only with a real certificate: browsers may then move to HTTP/3.
        if let Ok(v) = alt.parse() {
            resp.headers_mut().insert(header::ALT_SVC, v);
        }
    }
    resp
}

fn plain(status: StatusCode, body: &'static str) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())).boxed());
    *r.status_mut() = status;
    r
}

fn header_has_token(req: &Request<Incoming>, name: header::HeaderName, token: &str) -> bool {
    req.headers().get_all(name).iter().any(|v| {
        v.to_str()
            .map(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
            .unwrap_or(false)
    })
}

/// RFC 6455 §4.2: validate the opening handshake and answer 101, then run
/// the session on the upgraded connection.
/// What an upgraded WebSocket connection serves.
#[derive(Debug, Clone, Copy)]
enum Endpoint {
    Rally,
    Echo,
}

/// Conformance-testing echo endpoint (`--ws-echo`).
const ECHO_PATH: &str = "/echo";

fn upgrade(
    req: &mut Request<Incoming>,
    peer: SocketAddr,
    shared: Arc<Shared>,
    guard: Arc<ConnGuard>,
    endpoint: Endpoint,
) -> Response<Body> {
    let is_upgrade = req.method() == http::Method::GET
        && header_has_token(req, header::CONNECTION, "upgrade")
        && header_has_token(req, header::UPGRADE, "websocket");
    if !is_upgrade {
        return plain(StatusCode::UPGRADE_REQUIRED, "WebSocket upgrade required\n");
    }
    if req
        .headers()
        .get(header::SEC_WEBSOCKET_VERSION)
        .map(|v| v.as_bytes())
        != Some(b"13")
    {
        let mut r = plain(StatusCode::BAD_REQUEST, "unsupported WebSocket version\n");
        r.headers_mut().insert(
            header::SEC_WEBSOCKET_VERSION,
            http::HeaderValue::from_static("13"),
        );
        return r;
    }
    let Some(key) = req.headers().get(header::SEC_WEBSOCKET_KEY) else {
        return plain(StatusCode::BAD_REQUEST, "missing Sec-WebSocket-Key\n");
    };
    let origin = req
        .headers()
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok());
    let claims = match shared.authorize(origin, req.uri().query()) {
        Ok(c) => c,
        Err(refusal) => {
            let body = match refusal {
                crate::shared::Refusal::Origin => "origin not allowed\n",
                crate::shared::Refusal::Token(_) => "missing, invalid or expired join token\n",
            };
            return plain(refusal.status(), body);
        }
    };
    let accept = derive_accept_key(key.as_bytes());
    let on_upgrade = hyper::upgrade::on(req);
    let span = tracing::info_span!("ws", %peer);
    shared.tasks.clone().spawn(
        async move {
            let _guard = guard;
            let upgraded = match on_upgrade.await {
                Ok(u) => u,
                Err(e) => return tracing::debug!("upgrade failed: {e}"),
            };
            // Plain TCP: the socket becomes a wire the room can write
            // snapshots to. TLS keeps hyper's stream.
            match upgraded.downcast::<TokioIo<TcpStream>>() {
                Ok(parts) => {
                    let limit = shared.cfg.limits.ws_write_buffer;
                    let wire = Wire::new(parts.io.into_inner(), limit);
                    let io = WireIo::new(wire.clone(), parts.read_buf);
                    serve_ws(io, endpoint, shared, claims, Some(wire)).await
                }
                Err(upgraded) => {
                    serve_ws(TokioIo::new(upgraded), endpoint, shared, claims, None).await
                }
            }
        }
        .instrument(span),
    );
    let mut r = plain(StatusCode::SWITCHING_PROTOCOLS, "");
    let h = r.headers_mut();
    h.insert(
        header::CONNECTION,
        http::HeaderValue::from_static("Upgrade"),
    );
    h.insert(header::UPGRADE, http::HeaderValue::from_static("websocket"));
    if let Ok(v) = accept.parse() {
        h.insert(header::SEC_WEBSOCKET_ACCEPT, v);
    }
    r
}

/// Runs an upgraded connection as a WebSocket for `endpoint`; `wire` is the
/// plain-TCP socket under `io`, when there is one.
async fn serve_ws<S>(
    io: S,
    endpoint: Endpoint,
    shared: Arc<Shared>,
    claims: Option<crate::auth::Claims>,
    wire: Option<Arc<Wire>>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let config = Some(websocket::config(&shared.cfg.limits));
    let ws = WebSocketStream::from_raw_socket(io, Role::Server, config).await;
    match endpoint {
        Endpoint::Rally => run_ws(ws, shared, claims, wire).await,
        Endpoint::Echo => echo(ws).await,
    }
}

/// Echoes data messages back; tungstenite handles control frames, UTF-8
/// validation and the closing handshake, exactly as on `/rally`.
async fn echo<S>(mut ws: WebSocketStream<S>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    while let Some(msg) = ws.next().await {
        let reply = match msg {
            Ok(m @ (Message::Text(_) | Message::Binary(_))) => m,
            Ok(_) => continue,
            Err(e) => return tracing::debug!("echo: {e}"),
        };
        if ws.send(reply).await.is_err() {
            return;
        }
    }
}

async fn run_ws<S>(
    ws: WebSocketStream<S>,
    shared: Arc<Shared>,
    claims: Option<crate::auth::Claims>,
    wire: Option<Arc<Wire>>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let (rx, mut tx) = websocket::split(ws, shared.cfg.limits.idle_timeout, wire);
    let Ok(_permit) = shared.sessions.clone().try_acquire_owned() else {
        shared.refuse_full(TransportKind::WebSocket, &mut tx).await;
        return;
    };
    session::run(
        TransportKind::WebSocket,
        rx,
        tx,
        &shared.session_ctx(claims),
    )
    .await;
}
