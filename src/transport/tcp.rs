//! TCP front end: HTTP/1.1 (TLS when a real certificate is configured) with
//! the shared routes, and the WebSocket endpoint at `/rally`.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
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
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::WebSocketStream;
use tracing::Instrument;

use crate::http::{route, RALLY_PATH};
use crate::kind::TransportKind;
use crate::metrics::FallbackReason;
use crate::session::{self, Opening};
use crate::shared::{ConnGuard, Shared};
use crate::transport::streaming::{self, Body, HTTP_PATH};
use crate::transport::tcp_info::{Probed, SocketProbe};
use crate::transport::websocket;
use crate::transport::wire::{Wire, WireIo};

/// One accepted TCP connection, as its requests (and an upgraded WebSocket,
/// which outlives the HTTP connection task) see it.
pub struct TcpConn {
    /// Its slot of the connection limits, freed when the last holder drops.
    _guard: ConnGuard,
    pub peer: SocketAddr,
    /// The socket's RTT while the connection lives.
    pub probe: Arc<SocketProbe>,
    accepted_at: Instant,
    requests: AtomicU64,
}

impl TcpConn {
    /// What a session opened by this request starts from: the connection's
    /// accept for its first request, else the request's arrival (a reused
    /// connection's idle time is not the session's).
    fn opening(&self, first: bool, fallback: Option<FallbackReason>) -> Opening {
        Opening {
            remote: Some(self.peer),
            started: if first {
                self.accepted_at
            } else {
                Instant::now()
            },
            fallback,
        }
    }
}

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
        let notsent_lowat = shared.cfg.limits.tcp_notsent_lowat;
        let accepted_at = Instant::now();
        shared.tasks.clone().spawn(
            async move {
                if let Err(e) = stream.set_nodelay(true) {
                    tracing::debug!("set_nodelay: {e}");
                }
                if let Err(e) = socket2::SockRef::from(&stream).set_send_buffer_size(send_buffer) {
                    tracing::debug!("SO_SNDBUF: {e}");
                }
                if notsent_lowat > 0 {
                    if let Err(e) = set_notsent_lowat(&stream, notsent_lowat) {
                        tracing::debug!("TCP_NOTSENT_LOWAT: {e}");
                    }
                }
                let (stream, probe) = Probed::new(stream);
                // Shared with an upgraded WebSocket, which outlives this task.
                let conn = Arc::new(TcpConn {
                    _guard: guard,
                    peer,
                    probe,
                    accepted_at,
                    requests: AtomicU64::new(0),
                });
                match tls {
                    None => connection(stream, shared, conn, false).await,
                    Some(acceptor) => {
                        match tokio::time::timeout(handshake_timeout, acceptor.accept(stream)).await
                        {
                            Ok(Ok(tls)) => connection(tls, shared, conn, true).await,
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

/// Bounds what `stream` leaves unsent in the kernel to `bytes`: past it a
/// write takes nothing and the socket reads as not writable, so a
/// snapshot waits in Rally's newest-wins slot (WebSocket: the room's slot
/// and the wire; HTTP streaming: the downstream, whose body waits for the
/// socket) instead of in the kernel's FIFO (PROTOCOL.md §5). Linux
/// (since 3.12); elsewhere nothing is set.
#[cfg(target_os = "linux")]
fn set_notsent_lowat(stream: &TcpStream, bytes: u32) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let value = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    // SAFETY: an int option read from a valid pointer of the size given,
    // on a descriptor `stream` owns for the whole call.
    let rc = unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_NOTSENT_LOWAT,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(not(target_os = "linux"))]
fn set_notsent_lowat(_stream: &TcpStream, _bytes: u32) -> std::io::Result<()> {
    Ok(())
}

/// Serves one connection's HTTP: HTTP/1.1, and with `h2` (TLS, where ALPN
/// may choose it) HTTP/2 as well, so that the HTTP streaming transport
/// shares one connection (§11).
///
/// Plain TCP is served by hyper's HTTP/1.1 connection directly, not by
/// hyper-util's `auto` builder: `auto` wraps the I/O in its own private
/// `Rewind` type to sniff the HTTP/2 preface, so an upgraded WebSocket
/// could no longer be downcast to the TCP socket, and every snapshot went
/// through the session instead of the room's `writev` (S2, BENCHMARKS.md).
async fn connection<S>(io: S, shared: Arc<Shared>, conn: Arc<TcpConn>, h2: bool)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let timeout = shared.cfg.limits.handshake_timeout;
    let stop = shared.tcp_stop.clone();
    let svc = service_fn(move |req| {
        let shared = shared.clone();
        let conn = conn.clone();
        async move { Ok::<_, std::convert::Infallible>(request(req, shared, conn).await) }
    });
    let io = TokioIo::new(io);
    let result = if h2 {
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
        let conn = builder.serve_connection_with_upgrades(io, svc);
        until_stopped(conn, &stop, |c| c.graceful_shutdown())
            .await
            .map_err(|e| e.to_string())
    } else {
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(timeout)
            .max_buf_size(16 * 1024);
        let conn = builder.serve_connection(io, svc).with_upgrades();
        until_stopped(conn, &stop, |c| c.graceful_shutdown())
            .await
            .map_err(|e| e.to_string())
    };
    if let Err(e) = result {
        tracing::debug!("HTTP connection ended: {e}");
    }
}

/// Drives an HTTP connection; once `stop` fires, finishes the request in
/// flight and closes (an upgraded WebSocket runs in its own task and
/// closes itself).
async fn until_stopped<C, E>(
    conn: C,
    stop: &tokio_util::sync::CancellationToken,
    shutdown: impl FnOnce(std::pin::Pin<&mut C>),
) -> Result<(), E>
where
    C: std::future::Future<Output = Result<(), E>>,
{
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => r,
        _ = stop.cancelled() => {
            shutdown(conn.as_mut());
            conn.await
        }
    }
}

async fn request(
    mut req: Request<Incoming>,
    shared: Arc<Shared>,
    conn: Arc<TcpConn>,
) -> Response<Body> {
    shared.metrics.http_requests.fetch_add(1, Relaxed);
    let first = conn.requests.fetch_add(1, Relaxed) == 0;
    let path = req.uri().path();
    if path == RALLY_PATH {
        return upgrade(&mut req, shared, conn, first, Endpoint::Rally);
    }
    if path == ECHO_PATH && shared.cfg.ws_echo {
        return upgrade(&mut req, shared, conn, first, Endpoint::Echo);
    }
    if path == HTTP_PATH || path.starts_with(HTTP_PATH) && path[HTTP_PATH.len()..].starts_with('/')
    {
        let fallback = FallbackReason::from_query(req.uri().query());
        let opening = conn.opening(first, fallback);
        return streaming::serve(req, shared, &conn.probe, opening).await;
    }
    let routed = match crate::cluster::http::route(req.method(), path, &shared).await {
        Some(r) => r,
        None => route(req.method(), req.uri().path(), req.headers(), &shared),
    };
    let mut resp = routed.map(|b| Full::new(b).boxed());
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
    shared: Arc<Shared>,
    conn: Arc<TcpConn>,
    first: bool,
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
    let opening = conn.opening(first, FallbackReason::from_query(req.uri().query()));
    let accept = derive_accept_key(key.as_bytes());
    let on_upgrade = hyper::upgrade::on(req);
    let span = tracing::info_span!("ws", peer = %conn.peer);
    shared.tasks.clone().spawn(
        async move {
            let upgraded = match on_upgrade.await {
                Ok(u) => u,
                Err(e) => return tracing::debug!("upgrade failed: {e}"),
            };
            let ws = WsConn {
                shared,
                claims,
                opening,
                conn,
            };
            // Plain TCP: the socket becomes a wire the room can write
            // snapshots to (and whose RTT the session reads). TLS keeps
            // hyper's stream, and the connection's probe.
            match upgraded.downcast::<TokioIo<Probed<TcpStream>>>() {
                Ok(parts) => {
                    let limit = ws.shared.cfg.limits.ws_write_buffer;
                    let wire = Wire::new(parts.io.into_inner().into_inner(), limit);
                    let io = WireIo::new(wire.clone(), parts.read_buf);
                    serve_ws(io, endpoint, ws, Some(wire)).await
                }
                Err(upgraded) => serve_ws(TokioIo::new(upgraded), endpoint, ws, None).await,
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

/// An upgraded WebSocket's session, before it runs.
struct WsConn {
    shared: Arc<Shared>,
    claims: Option<crate::auth::Claims>,
    opening: Opening,
    /// Held for the connection slot, and the probe when there is no wire.
    conn: Arc<TcpConn>,
}

/// Runs an upgraded connection as a WebSocket for `endpoint`; `wire` is the
/// plain-TCP socket under `io`, when there is one.
async fn serve_ws<S>(io: S, endpoint: Endpoint, conn: WsConn, wire: Option<Arc<Wire>>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let config = Some(websocket::config(&conn.shared.cfg.limits));
    let ws = WebSocketStream::from_raw_socket(io, Role::Server, config).await;
    match endpoint {
        Endpoint::Rally => run_ws(ws, conn, wire).await,
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

async fn run_ws<S>(ws: WebSocketStream<S>, conn: WsConn, wire: Option<Arc<Wire>>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let WsConn {
        shared,
        claims,
        opening,
        conn,
    } = conn;
    // Over TLS the kernel's RTT comes through the connection's probe.
    let probe = wire.is_none().then(|| conn.probe.clone());
    let (rx, mut tx) = websocket::split(ws, shared.cfg.limits.idle_timeout, wire, probe);
    let Ok(_permit) = shared.sessions.clone().try_acquire_owned() else {
        shared.refuse_full(TransportKind::WebSocket, &mut tx).await;
        return;
    };
    let ctx = shared.session_ctx(claims, opening);
    session::run(TransportKind::WebSocket, rx, tx, &ctx).await;
}
