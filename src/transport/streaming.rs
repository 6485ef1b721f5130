//! HTTP streaming, the third transport (PROTOCOL.md §11): a long-lived
//! response body carries the server's messages down (framed, as SSE
//! events, or fetched by polling), and `POST`s bound to the session by a
//! 128-bit random id carry the client's up.
//!
//! The session itself is the one every transport runs (`session::run`);
//! this adapter turns `POST` bodies into received messages ([`HttpRx`]) and
//! written messages into the downstream ([`HttpTx`]): a bounded queue that
//! the response body, or a poll, drains. A full queue makes the session
//! wait, so snapshots stay newest-wins in its slot, as on WebSocket.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use bytes::{BufMut, Bytes, BytesMut};
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full, Limited, StreamBody};
use hyper::body::{Frame, Incoming};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::Instrument;

use crate::kind::{Channel, TransportKind};
use crate::protocol::{encode_frame, CloseCode, ErrorCode, FrameDecoder, FrameError, ServerMsg};
use crate::session::live::PathRtt;
use crate::session::{self, Carriage, Opening, TransportError, TransportRx, TransportTx};
use crate::shared::Shared;
use crate::transport::tcp_info::SocketProbe;

/// Where a session is opened; `POST`s and polls go to `HTTP_PATH/ID`.
pub const HTTP_PATH: &str = "/rally/http";
/// The response header naming the session.
pub const SESSION_HEADER: &str = "rally-session";
/// Messages waiting for the stream or a poll; beyond it the session waits
/// (and snapshots wait newest-wins in its slot). Small, so that a slow
/// reader gets fresh state rather than a queue of stale snapshots.
const DOWNSTREAM: usize = 16;
/// `POST` bodies queued for the session.
const INBOX: usize = 16;
/// How long a long poll waits for a message.
const LONG_POLL: Duration = Duration::from_secs(25);

pub type Body = BoxBody<Bytes, Infallible>;

/// A session id: 128 random bits.
type SessionId = [u8; 16];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Stream,
    Sse,
    Poll,
}

/// What a `POST` hands the session.
enum Inbound {
    Messages(Vec<Bytes>),
    /// The body broke the framing: the session ends with this code.
    Fault(ErrorCode, String),
}

/// The server's side of one HTTP session, found by id.
struct Entry {
    inbox: mpsc::Sender<Inbound>,
    /// Number of the last `POST` taken. A tokio mutex: held while the
    /// messages are handed over, so a retry cannot overtake them.
    seq: tokio::sync::Mutex<u64>,
    /// Poll mode: the messages waiting to be fetched.
    polled: Option<tokio::sync::Mutex<mpsc::Receiver<Bytes>>>,
    /// When the client last showed life (a `POST` or a poll), in ms since
    /// `born`.
    activity: AtomicU64,
    born: Instant,
}

impl Entry {
    fn touch(&self) {
        self.activity
            .store(self.born.elapsed().as_millis() as u64, Relaxed);
    }

    fn last_seen(&self) -> Instant {
        self.born + Duration::from_millis(self.activity.load(Relaxed))
    }
}

/// Every live HTTP session, by id.
#[derive(Default)]
pub struct HttpSessions {
    // std Mutex: a lookup or an insert, never held across .await.
    map: Mutex<HashMap<SessionId, Arc<Entry>>>,
}

impl HttpSessions {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<SessionId, Arc<Entry>>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn get(&self, id: &SessionId) -> Option<Arc<Entry>> {
        self.map().get(id).cloned()
    }

    pub fn len(&self) -> usize {
        self.map().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn parse_id(hex_id: &str) -> Option<SessionId> {
    let mut id = [0u8; 16];
    hex::decode_to_slice(hex_id, &mut id).ok()?;
    Some(id)
}

fn text(status: StatusCode, body: &'static str) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())).boxed());
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

fn no_content() -> Response<Body> {
    let mut r = Response::new(Empty::new().boxed());
    *r.status_mut() = StatusCode::NO_CONTENT;
    r
}

/// The request's `Origin`, when it has one.
fn origin(req: &Request<Incoming>) -> Option<String> {
    req.headers()
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// CORS for an allowed cross-origin page: the response may be read, and
/// the session header too.
fn allow_cors(resp: &mut Response<Body>, origin: Option<&str>) {
    let Some(v) = origin.and_then(|o| HeaderValue::from_str(o).ok()) else {
        return;
    };
    let h = resp.headers_mut();
    h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, v);
    h.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static(SESSION_HEADER),
    );
    h.insert(header::VARY, HeaderValue::from_static("origin"));
}

/// Serves `/rally/http` and everything below it.
/// A session opened here reads its round-trip time through `probe`, the
/// socket of the connection that opened it, while that connection lives.
pub async fn serve(
    req: Request<Incoming>,
    shared: Arc<Shared>,
    probe: &Arc<SocketProbe>,
    opening: Opening,
) -> Response<Body> {
    let origin = origin(&req);
    if req.method() == Method::OPTIONS {
        return preflight(origin.as_deref(), &shared);
    }
    let path = req.uri().path();
    let mut resp = match path.strip_prefix(HTTP_PATH) {
        Some("") if req.method() == Method::GET => {
            open(&req, &shared, origin.as_deref(), probe, opening)
        }
        Some("") => text(StatusCode::METHOD_NOT_ALLOWED, "GET opens a session\n"),
        Some(rest) => match (rest.strip_prefix('/').and_then(parse_id), req.method()) {
            (None, _) => text(StatusCode::NOT_FOUND, "no such session\n"),
            (Some(_), _) if !shared.origins.allows(origin.as_deref()) => {
                text(StatusCode::FORBIDDEN, "origin not allowed\n")
            }
            (Some(id), &Method::POST) => post(id, req, &shared).await,
            (Some(id), &Method::GET) => poll(id, req, &shared).await,
            (Some(_), _) => text(StatusCode::METHOD_NOT_ALLOWED, "POST or GET\n"),
        },
        None => text(StatusCode::NOT_FOUND, "not found\n"),
    };
    if shared.origins.allows(origin.as_deref()) {
        allow_cors(&mut resp, origin.as_deref());
    }
    let h = resp.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

fn preflight(origin: Option<&str>, shared: &Shared) -> Response<Body> {
    if !shared.origins.allows(origin) {
        return text(StatusCode::FORBIDDEN, "origin not allowed\n");
    }
    let mut r = no_content();
    allow_cors(&mut r, origin);
    let h = r.headers_mut();
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET, POST"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("content-type"),
    );
    h.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("600"),
    );
    r
}

fn query_value<'a>(req: &'a Request<Incoming>, key: &str) -> Option<&'a str> {
    req.uri().query()?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (k == key).then_some(v)
    })
}

/// `GET /rally/http`: a new session and its downstream (§11.1).
fn open(
    req: &Request<Incoming>,
    shared: &Arc<Shared>,
    origin: Option<&str>,
    probe: &Arc<SocketProbe>,
    opening: Opening,
) -> Response<Body> {
    let mode = match query_value(req, "mode").unwrap_or("stream") {
        "stream" => Mode::Stream,
        "sse" => Mode::Sse,
        "poll" => Mode::Poll,
        _ => return text(StatusCode::BAD_REQUEST, "mode is stream, sse or poll\n"),
    };
    let claims = match shared.authorize(origin, req.uri().query()) {
        Ok(c) => c,
        Err(refusal) => {
            let body = match refusal {
                crate::shared::Refusal::Origin => "origin not allowed\n",
                crate::shared::Refusal::Token(_) => "missing, invalid or expired join token\n",
            };
            return text(refusal.status(), body);
        }
    };
    let id: SessionId = rand::random();
    let hex_id = hex::encode(id);
    let (inbox_tx, inbox_rx) = mpsc::channel(INBOX);
    let (down_tx, down_rx) = mpsc::channel(DOWNSTREAM);
    let born = Instant::now();
    let (polled, stream) = match mode {
        Mode::Poll => (Some(tokio::sync::Mutex::new(down_rx)), None),
        _ => (None, Some(down_rx)),
    };
    let entry = Arc::new(Entry {
        inbox: inbox_tx,
        seq: tokio::sync::Mutex::new(0),
        polled,
        activity: AtomicU64::new(0),
        born,
    });
    shared.http.map().insert(id, entry.clone());
    let rx = HttpRx {
        inbox: inbox_rx,
        pending: VecDeque::new(),
        entry,
        idle: shared.cfg.limits.idle_timeout,
    };
    let tx = HttpTx {
        down: Some(down_tx),
        queued: Vec::new(),
        keepalive: mode != Mode::Poll,
        probe: probe.clone(),
    };
    let span = tracing::info_span!("http", session = %&hex_id[..8]);
    let shared2 = shared.clone();
    shared.tasks.spawn(
        async move {
            run(id, mode, rx, tx, claims, opening, &shared2).await;
        }
        .instrument(span),
    );
    let mut resp = match (mode, stream) {
        (Mode::Stream, Some(rx)) => body_response("application/octet-stream", framed(rx)),
        (Mode::Sse, Some(rx)) => body_response("text/event-stream", events(&hex_id, rx)),
        _ => Response::new(Empty::new().boxed()),
    };
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&hex_id) {
        h.insert(SESSION_HEADER, v);
    }
    // Proxies (nginx) must pass the stream on as it comes.
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    resp
}

fn body_response(ctype: &'static str, body: Body) -> Response<Body> {
    let mut r = Response::new(body);
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(ctype));
    r
}

/// The downstream as a response body of frames (§2).
fn framed(rx: mpsc::Receiver<Bytes>) -> Body {
    let frames = futures::stream::unfold(rx, |mut rx| async move {
        let msg = rx.recv().await?;
        let mut out = BytesMut::with_capacity(2 + msg.len());
        encode_frame(&mut out, &msg);
        Some((Ok(Frame::data(out.freeze())), rx))
    });
    StreamBody::new(frames).boxed()
}

/// The downstream as server-sent events: the session id, then a base64
/// event per message.
fn events(id: &str, rx: mpsc::Receiver<Bytes>) -> Body {
    let first = Bytes::from(format!("event: session\ndata: {id}\n\n"));
    let rest = futures::stream::unfold(rx, |mut rx| async move {
        let msg = rx.recv().await?;
        let b64 = base64::engine::general_purpose::STANDARD.encode(&msg);
        Some((Ok(Frame::data(Bytes::from(format!("data: {b64}\n\n")))), rx))
    });
    let first = futures::stream::once(async move { Ok(Frame::data(first)) });
    StreamBody::new(futures::StreamExt::chain(first, rest)).boxed()
}

/// Runs the session, then forgets it (in poll mode once what is left to
/// fetch, its `Error` included, had its time to be polled).
async fn run(
    id: SessionId,
    mode: Mode,
    rx: HttpRx,
    mut tx: HttpTx,
    claims: Option<crate::auth::Claims>,
    opening: Opening,
    shared: &Arc<Shared>,
) {
    let kind = TransportKind::Http;
    match shared.sessions.clone().try_acquire_owned() {
        Ok(_permit) => session::run(kind, rx, tx, &shared.session_ctx(claims, opening)).await,
        Err(_) => shared.refuse_full(kind, &mut tx).await,
    }
    if mode == Mode::Poll {
        tokio::select! {
            _ = tokio::time::sleep(shared.cfg.limits.idle_timeout) => {}
            _ = shared.shutdown.cancelled() => {}
        }
    }
    shared.http.map().remove(&id);
}

/// `POST /rally/http/ID?seq=N` (§11.2).
async fn post(id: SessionId, req: Request<Incoming>, shared: &Arc<Shared>) -> Response<Body> {
    let Some(entry) = shared.http.get(&id) else {
        return text(StatusCode::NOT_FOUND, "no such session\n");
    };
    let Some(n) = query_value(&req, "seq").and_then(|v| v.parse::<u64>().ok()) else {
        return text(StatusCode::BAD_REQUEST, "seq=N is required\n");
    };
    let max = shared.cfg.limits.http_max_post;
    let body = match Limited::new(req.into_body(), max).collect().await {
        Ok(b) => b.to_bytes(),
        // Over the limit (or the client went away while sending).
        Err(_) => return text(StatusCode::PAYLOAD_TOO_LARGE, "POST body too large\n"),
    };
    entry.touch();
    let inbound = match split_frames(body, shared.cfg.limits.max_client_message as usize) {
        Ok(msgs) => Inbound::Messages(msgs),
        Err(Split::Empty) => return text(StatusCode::BAD_REQUEST, "empty body\n"),
        Err(Split::Partial) => {
            return text(StatusCode::BAD_REQUEST, "the body ends inside a frame\n")
        }
        Err(Split::Fatal(code, reason)) => {
            let _ = entry.inbox.send(Inbound::Fault(code, reason)).await;
            return text(
                StatusCode::BAD_REQUEST,
                "bad frame; the session is closed\n",
            );
        }
    };
    let mut last = entry.seq.lock().await;
    if n <= *last {
        // A retry of a POST already taken.
        return no_content();
    }
    if n != *last + 1 {
        return text(StatusCode::CONFLICT, "seq is not the next number\n");
    }
    if entry.inbox.send(inbound).await.is_err() {
        return text(StatusCode::NOT_FOUND, "the session has ended\n");
    }
    *last = n;
    no_content()
}

enum Split {
    Empty,
    Partial,
    Fatal(ErrorCode, String),
}

/// The messages of a `POST` body: whole frames, each within `max`.
fn split_frames(body: Bytes, max: usize) -> Result<Vec<Bytes>, Split> {
    if body.is_empty() {
        return Err(Split::Empty);
    }
    let mut dec = FrameDecoder::new(max);
    dec.buffer().extend_from_slice(&body);
    let mut out = Vec::new();
    loop {
        match dec.decode() {
            Ok(Some(m)) => out.push(m),
            Ok(None) if dec.pending() == 0 => return Ok(out),
            Ok(None) => return Err(Split::Partial),
            Err(e @ FrameError::Empty) => {
                return Err(Split::Fatal(ErrorCode::BadMessage, e.to_string()))
            }
            Err(e @ FrameError::TooLarge { .. }) => {
                return Err(Split::Fatal(ErrorCode::MessageTooLarge, e.to_string()))
            }
        }
    }
}

/// `GET /rally/http/ID[?wait=1]` (§11.3).
async fn poll(id: SessionId, req: Request<Incoming>, shared: &Arc<Shared>) -> Response<Body> {
    let Some(entry) = shared.http.get(&id) else {
        return text(StatusCode::NOT_FOUND, "no such session\n");
    };
    let Some(polled) = &entry.polled else {
        return text(StatusCode::NOT_FOUND, "this session is not polled\n");
    };
    let wait = query_value(&req, "wait") == Some("1");
    entry.touch();
    let mut rx = polled.lock().await;
    let mut out = BytesMut::new();
    let mut ended = false;
    loop {
        match rx.try_recv() {
            Ok(msg) => encode_frame(&mut out, &msg),
            Err(mpsc::error::TryRecvError::Empty) => break,
            Err(mpsc::error::TryRecvError::Disconnected) => {
                ended = true;
                break;
            }
        }
    }
    if out.is_empty() && !ended && wait {
        let first = tokio::select! {
            m = rx.recv() => m,
            _ = tokio::time::sleep(LONG_POLL) => None,
            _ = shared.shutdown.cancelled() => None,
        };
        if let Some(msg) = first {
            encode_frame(&mut out, &msg);
            while let Ok(msg) = rx.try_recv() {
                encode_frame(&mut out, &msg);
            }
        }
        entry.touch();
    }
    if out.is_empty() && (ended || rx.is_closed() && rx.is_empty()) {
        drop(rx);
        shared.http.map().remove(&id);
        return text(StatusCode::NOT_FOUND, "the session has ended\n");
    }
    body_response("application/octet-stream", Full::new(out.freeze()).boxed())
}

/// The session's receiving half: the messages of its `POST`s.
pub struct HttpRx {
    inbox: mpsc::Receiver<Inbound>,
    pending: VecDeque<Bytes>,
    entry: Arc<Entry>,
    idle: Duration,
}

impl TransportRx for HttpRx {
    async fn recv(&mut self) -> Result<Option<(Bytes, Channel)>, TransportError> {
        loop {
            if let Some(m) = self.pending.pop_front() {
                return Ok(Some((m, Channel::Reliable)));
            }
            // Cancel-safe: a POST's messages are taken only by the poll
            // that returns them; the deadline is derived from stored state.
            tokio::select! {
                inbound = self.inbox.recv() => match inbound {
                    Some(Inbound::Messages(m)) => self.pending.extend(m),
                    Some(Inbound::Fault(code, reason)) => {
                        return Err(TransportError::Peer { code, reason })
                    }
                    None => return Ok(None),
                },
                _ = tokio::time::sleep_until(self.entry.last_seen() + self.idle) => {
                    if self.entry.last_seen().elapsed() >= self.idle {
                        return Err(TransportError::Idle(self.idle));
                    }
                }
            }
        }
    }
}

/// The session's sending half: the downstream queue.
pub struct HttpTx {
    /// `None` once closed: the stream ends.
    down: Option<mpsc::Sender<Bytes>>,
    queued: Vec<Bytes>,
    /// Streams carry a keep-alive; polled sessions do not need one.
    keepalive: bool,
    /// The socket of the connection that opened the session (its stream's,
    /// in stream and SSE modes); no samples once that connection closed.
    probe: Arc<SocketProbe>,
}

fn gone() -> TransportError {
    TransportError::Closed("the HTTP stream is gone".into())
}

impl TransportTx for HttpTx {
    async fn queue(&mut self, msg: Bytes) -> Result<(), TransportError> {
        self.queued.push(msg);
        if self.queued.len() >= DOWNSTREAM {
            self.flush().await?;
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<(), TransportError> {
        let down = self.down.as_ref().ok_or_else(gone)?;
        for msg in self.queued.drain(..) {
            down.send(msg).await.map_err(|_| gone())?;
        }
        Ok(())
    }

    async fn send_latest(&mut self, head: &[u8], body: &[u8]) -> Result<Carriage, TransportError> {
        let mut msg = BytesMut::with_capacity(head.len() + body.len());
        msg.put_slice(head);
        msg.put_slice(body);
        self.queue(msg.freeze()).await?;
        Ok(Carriage::Stream)
    }

    async fn keepalive(&mut self) -> Result<(), TransportError> {
        if !self.keepalive {
            return Ok(());
        }
        // A Pong nobody asked for (client_time_us 0): traffic for proxies.
        let pong = ServerMsg::Pong {
            client_time_us: 0,
            server_time_us: crate::client::now_us(),
        };
        self.queue(pong.to_bytes()).await?;
        self.flush().await
    }

    fn rtt(&self) -> Option<PathRtt> {
        self.probe.rtt()
    }

    async fn close(&mut self, _code: Option<CloseCode>) {
        let _ = tokio::time::timeout(Duration::from_secs(2), self.flush()).await;
        // Dropping the sender ends the stream once it is drained.
        self.down = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(msgs: &[&[u8]]) -> Bytes {
        let mut b = BytesMut::new();
        for m in msgs {
            encode_frame(&mut b, m);
        }
        b.freeze()
    }

    #[test]
    fn a_post_body_is_whole_frames_within_the_limit() {
        let got = split_frames(frames(&[b"ab", b"c"]), 16).ok().unwrap();
        assert_eq!(
            got,
            vec![Bytes::from_static(b"ab"), Bytes::from_static(b"c")]
        );
        assert!(matches!(split_frames(Bytes::new(), 16), Err(Split::Empty)));
        let cut = frames(&[b"abc"]).slice(..3);
        assert!(matches!(split_frames(cut, 16), Err(Split::Partial)));
        assert!(matches!(
            split_frames(Bytes::from_static(&[0, 0]), 16),
            Err(Split::Fatal(ErrorCode::BadMessage, _))
        ));
        assert!(matches!(
            split_frames(frames(&[&[7; 20]]), 16),
            Err(Split::Fatal(ErrorCode::MessageTooLarge, _))
        ));
    }

    #[test]
    fn session_ids_are_32_hex_digits() {
        let id: SessionId = rand::random();
        let hex_id = hex::encode(id);
        assert_eq!(hex_id.len(), 32);
        assert_eq!(parse_id(&hex_id), Some(id));
        assert_eq!(parse_id("zz"), None);
        assert_eq!(parse_id(&hex_id[..30]), None);
    }
}
