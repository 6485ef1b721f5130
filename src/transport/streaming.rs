//! HTTP streaming, the third transport (PROTOCOL.md §11): a long-lived
//! response body carries the server's messages down (framed, as SSE
//! events, or fetched by polling), and `POST`s bound to the session by a
//! 128-bit random id carry the client's up.
//!
//! The session itself is the one every transport runs (`session::run`);
//! this adapter turns `POST` bodies into received messages ([`HttpRx`]) and
//! written messages into the downstream ([`HttpTx`]): a queue bounded in
//! bytes that the response body, or a poll, drains, where snapshots are
//! newest-wins and reliable messages are never dropped ([`downstream`]).
//!
//! A session's id is forgotten, and its place (`--max-sessions`) freed, the
//! moment the session ends: a client that saw its stream end gets 404 for
//! any later `POST`. Only in poll mode is the id kept after the end, for
//! polls alone, until the last messages (the `Error`) have been fetched.

mod downstream;

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
use tokio::sync::{mpsc, Notify, OwnedSemaphorePermit};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::kind::{Channel, TransportKind};
use crate::metrics::Metrics;
use crate::protocol::table::ty;
use crate::protocol::{encode_frame, CloseCode, ErrorCode, FrameDecoder, FrameError, ServerMsg};
use crate::session::live::PathRtt;
use crate::session::{self, Carriage, Opening, TransportError, TransportRx, TransportTx};
use crate::shared::Shared;
use crate::transport::tcp_info::SocketProbe;
use downstream::{Class, Downstream, PushError, Taken};

/// Where a session is opened; `POST`s and polls go to `HTTP_PATH/ID`.
pub const HTTP_PATH: &str = "/rally/http";
/// The response header naming the session.
pub const SESSION_HEADER: &str = "rally-session";
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
    polled: Option<Arc<Downstream>>,
    /// One poll at a time, so that polls answer in the order they take.
    poll_turn: tokio::sync::Mutex<()>,
    /// Cancelled when the session ends: `POST`s are 404 from then on.
    ended: CancellationToken,
    /// Poll mode: cancelled when a poll took the last messages of an ended
    /// session.
    fetched: CancellationToken,
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
    /// A session was forgotten.
    removed: Notify,
}

impl HttpSessions {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<SessionId, Arc<Entry>>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn get(&self, id: &SessionId) -> Option<Arc<Entry>> {
        self.map().get(id).cloned()
    }

    fn remove(&self, id: &SessionId) {
        self.map().remove(id);
        self.removed.notify_waiters();
    }

    /// Resolves when no poll-mode session is left: each has had its last
    /// messages fetched (on shutdown: the `Error shutting_down`, §11.4), or
    /// was forgotten after the idle timeout.
    pub async fn polled_drained(&self) {
        loop {
            let removed = self.removed.notified();
            tokio::pin!(removed);
            // Registered before the check, so a removal in between wakes us.
            removed.as_mut().enable();
            if !self.map().values().any(|e| e.polled.is_some()) {
                return;
            }
            removed.await;
        }
    }

    pub fn len(&self) -> usize {
        self.map().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A session id as §11.1 writes it: 32 lowercase hex digits, nothing else
/// (`hex` alone would take uppercase too).
fn parse_id(hex_id: &str) -> Option<SessionId> {
    if !hex_id
        .bytes()
        .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    {
        return None;
    }
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
    // A stream's body waits for its socket (see `Reader`): there a newer
    // snapshot replaces the one waiting. Polls keep up to 16 (§11.3).
    let down = Downstream::new(match mode {
        Mode::Poll => downstream::MAX_LATEST,
        Mode::Stream | Mode::Sse => downstream::STREAM_SNAPSHOTS,
    });
    let ended = CancellationToken::new();
    let entry = Arc::new(Entry {
        inbox: inbox_tx,
        seq: tokio::sync::Mutex::new(0),
        polled: (mode == Mode::Poll).then(|| down.clone()),
        poll_turn: tokio::sync::Mutex::new(()),
        ended: ended.clone(),
        fetched: CancellationToken::new(),
        activity: AtomicU64::new(0),
        born: Instant::now(),
    });
    shared.http.map().insert(id, entry.clone());
    let rx = HttpRx {
        inbox: inbox_rx,
        pending: VecDeque::new(),
        entry: entry.clone(),
        idle: shared.cfg.limits.idle_timeout,
    };
    let tx = HttpTx {
        down: down.clone(),
        ended,
        keepalive: mode != Mode::Poll,
        stall: shared.cfg.limits.slow_peer_timeout,
        stalled: false,
        metrics: shared.metrics.clone(),
        permit: None,
        probe: probe.clone(),
    };
    let span = tracing::info_span!("http", session = %&hex_id[..8]);
    let shared2 = shared.clone();
    shared.tasks.spawn(
        async move {
            run(id, entry, rx, tx, claims, opening, &shared2).await;
        }
        .instrument(span),
    );
    // Made only for a stream: dropping a reader tells the session its
    // stream is gone.
    let reader = || Reader {
        down: down.clone(),
        socket: probe.clone(),
    };
    let mut resp = match mode {
        Mode::Stream => body_response("application/octet-stream", framed(reader())),
        Mode::Sse => body_response("text/event-stream", events(&hex_id, reader())),
        Mode::Poll => Response::new(Empty::new().boxed()),
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

/// The reading end of a stream's downstream: the response body. When the
/// body is dropped (the client went away) the session's next write fails.
struct Reader {
    down: Arc<Downstream>,
    /// The socket of the connection the body is written to.
    socket: Arc<SocketProbe>,
}

impl Drop for Reader {
    fn drop(&mut self) {
        self.down.reader_gone();
    }
}

/// What a stream's body takes next: everything waiting, or `None` at the
/// end. Taken only once the socket takes writes: while it is full (a slow
/// link or reader; at most `--tcp-notsent-lowat` unsent in the kernel),
/// messages wait in the downstream, where the newest snapshot replaces an
/// older one, and not in the HTTP server's write buffer, a FIFO
/// (PROTOCOL.md §5).
async fn next_batch(r: &Reader) -> Option<Vec<Bytes>> {
    r.socket.writable().await;
    let Taken { msgs, .. } = r.down.next().await;
    // Empty only when the writer closed and nothing is left.
    (!msgs.is_empty()).then_some(msgs)
}

/// The downstream as a response body of frames (§2), opened by a
/// keep-alive `Pong` sent at once (§11.1): Firefox resolves `fetch()` only
/// when body bytes arrive, and the client needs the response's
/// `Rally-Session` header before it can `POST` its `Hello`. What waits
/// after that leaves in one piece.
fn framed(reader: Reader) -> Body {
    let opening = ServerMsg::Pong {
        client_time_us: 0,
        server_time_us: crate::client::now_us(),
    };
    let mut first = BytesMut::new();
    encode_frame(&mut first, &opening.to_bytes());
    let first = futures::stream::once(std::future::ready(Ok(Frame::data(first.freeze()))));
    let rest = futures::stream::unfold(reader, |r| async move {
        let msgs = next_batch(&r).await?;
        let mut out = BytesMut::with_capacity(msgs.iter().map(|m| 2 + m.len()).sum());
        for msg in &msgs {
            encode_frame(&mut out, msg);
        }
        Some((Ok(Frame::data(out.freeze())), r))
    });
    StreamBody::new(futures::StreamExt::chain(first, rest)).boxed()
}

/// The downstream as server-sent events: the session id, then a base64
/// event per message.
fn events(id: &str, reader: Reader) -> Body {
    let first = Bytes::from(format!("event: session\ndata: {id}\n\n"));
    let rest = futures::stream::unfold(reader, |r| async move {
        let msgs = next_batch(&r).await?;
        let mut out = String::new();
        for msg in &msgs {
            out.push_str("data: ");
            base64::engine::general_purpose::STANDARD.encode_string(msg, &mut out);
            out.push_str("\n\n");
        }
        Some((Ok(Frame::data(Bytes::from(out))), r))
    });
    let first = futures::stream::once(async move { Ok(Frame::data(first)) });
    StreamBody::new(futures::StreamExt::chain(first, rest)).boxed()
}

/// Runs the session, then forgets it: at once for a stream (its end was
/// the session's), in poll mode once its last messages were fetched or
/// the idle timeout passed. Its place is freed when it ends (see
/// [`HttpTx::end`]).
async fn run(
    id: SessionId,
    entry: Arc<Entry>,
    rx: HttpRx,
    mut tx: HttpTx,
    claims: Option<crate::auth::Claims>,
    opening: Opening,
    shared: &Arc<Shared>,
) {
    let kind = TransportKind::Http;
    match shared.sessions.clone().try_acquire_owned() {
        Ok(permit) => {
            tx.permit = Some(permit);
            session::run(kind, rx, tx, &shared.session_ctx(claims, opening)).await
        }
        Err(_) => shared.refuse_full(kind, &mut tx).await,
    }
    if let Some(down) = &entry.polled {
        // Shutdown too waits here, within its grace: the listener serves
        // polls until no poll-mode session is left (§11.4).
        if !down.ended() {
            tokio::select! {
                _ = entry.fetched.cancelled() => {}
                _ = tokio::time::sleep(shared.cfg.limits.idle_timeout) => {}
            }
        }
    }
    shared.http.remove(&id);
}

/// `POST /rally/http/ID?seq=N` (§11.2).
async fn post(id: SessionId, req: Request<Incoming>, shared: &Arc<Shared>) -> Response<Body> {
    let Some(entry) = shared.http.get(&id).filter(|e| !e.ended.is_cancelled()) else {
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
    let Some(down) = &entry.polled else {
        return text(StatusCode::NOT_FOUND, "this session is not polled\n");
    };
    let wait = query_value(&req, "wait") == Some("1");
    entry.touch();
    let _turn = entry.poll_turn.lock().await;
    let mut taken = down.take();
    if taken.msgs.is_empty() && !taken.ended && wait {
        // No shutdown branch: on shutdown the session ends with an Error,
        // which is what this poll then answers (§11.4).
        if let Ok(t) = tokio::time::timeout(LONG_POLL, down.next()).await {
            taken = t;
        }
        entry.touch();
    }
    if taken.msgs.is_empty() && taken.ended {
        shared.http.remove(&id);
        return text(StatusCode::NOT_FOUND, "the session has ended\n");
    }
    if taken.ended {
        // The last messages: the next poll is 404.
        entry.fetched.cancel();
    }
    let mut out = BytesMut::with_capacity(taken.msgs.iter().map(|m| 2 + m.len()).sum());
    for msg in &taken.msgs {
        encode_frame(&mut out, msg);
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
                biased;
                // Ended (by our side): what POSTs still bring is not read.
                _ = self.entry.ended.cancelled() => return Ok(None),
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
    down: Arc<Downstream>,
    /// The session's `ended` (see [`HttpTx::end`]).
    ended: CancellationToken,
    /// Streams carry a keep-alive; polled sessions do not need one.
    keepalive: bool,
    /// The slow-peer timeout: a reader that takes nothing for this long
    /// while messages wait is `too_slow`.
    stall: Duration,
    /// Set once the stall was reported: what follows (the Error) queues.
    stalled: bool,
    metrics: Arc<Metrics>,
    /// The session's place under `--max-sessions`.
    permit: Option<OwnedSemaphorePermit>,
    /// The socket of the connection that opened the session (its stream's,
    /// in stream and SSE modes); no samples once that connection closed.
    probe: Arc<SocketProbe>,
}

fn gone() -> TransportError {
    TransportError::Closed("the HTTP stream is gone".into())
}

impl HttpTx {
    async fn push(&mut self, msg: Bytes, class: Class) -> Result<(), TransportError> {
        if self.ended.is_cancelled() {
            return Err(gone());
        }
        let stall = (!self.stalled).then_some(self.stall);
        match self.down.push(msg, class, stall).await {
            Ok(dropped) => {
                let m = &self.metrics;
                if dropped.snapshots > 0 {
                    m.transport(TransportKind::Http)
                        .snapshots_skipped
                        .fetch_add(dropped.snapshots, Relaxed);
                }
                if dropped.unreliable > 0 {
                    m.app_unreliable_dropped
                        .fetch_add(dropped.unreliable, Relaxed);
                }
                Ok(())
            }
            Err(PushError::Gone) => Err(gone()),
            Err(PushError::Stalled) => {
                self.stalled = true;
                Err(TransportError::Stalled(self.stall))
            }
        }
    }

    /// The session is over. In this order, so that a client that sees its
    /// stream end finds the session's place free and its id gone (`POST`s
    /// 404, §11.2): the place, the id, then the end of the downstream
    /// (once the reader has taken what waits).
    fn end(&mut self) {
        self.permit = None;
        self.ended.cancel();
        self.down.close();
    }
}

impl Drop for HttpTx {
    fn drop(&mut self) {
        // A session that ended without `close` (its stream was gone).
        self.end();
    }
}

impl TransportTx for HttpTx {
    async fn queue(&mut self, msg: Bytes) -> Result<(), TransportError> {
        self.push(msg, Class::Reliable).await
    }

    async fn flush(&mut self) -> Result<(), TransportError> {
        if self.ended.is_cancelled() {
            return Err(gone());
        }
        self.down.flush();
        Ok(())
    }

    async fn send_latest(&mut self, head: &[u8], body: &[u8]) -> Result<Carriage, TransportError> {
        let mut msg = BytesMut::with_capacity(head.len() + body.len());
        msg.put_slice(head);
        msg.put_slice(body);
        let class = match head.first() {
            Some(&(ty::SNAPSHOT | ty::SNAPSHOT_DELTA)) => Class::Snapshot,
            _ => Class::Unreliable,
        };
        self.push(msg.freeze(), class).await?;
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
        // What waits (the Error last) is the reader's to take; the stream
        // ends after it.
        self.down.flush();
        self.end();
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
        // §11.1: lowercase only, and nothing else.
        let fixed = "0123456789abcdef0123456789abcdef";
        assert!(parse_id(fixed).is_some());
        assert_eq!(parse_id(&fixed.to_uppercase()), None);
        assert_eq!(parse_id(&format!("+{}", &fixed[1..])), None);
        assert_eq!(parse_id(&format!("{fixed}/")), None);
    }
}
