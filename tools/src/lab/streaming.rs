//! The lab's HTTP streaming clients (PROTOCOL.md §11), one for each way a
//! page can use that transport, all speaking the same messages:
//!
//! | mode | down (server → client) | up (`POST`s) | connections |
//! |---|---|---|---|
//! | `Stream` | `GET /rally/http`, a framed body, HTTP/1.1 | a second HTTP/1.1 connection | 2 |
//! | `H2Stream` | the same over HTTP/2 (TLS, ALPN `h2`) | streams of the same connection | 1 |
//! | `Sse` | `GET /rally/http?mode=sse`, `text/event-stream`, base64 | a second connection | 2 |
//! | `LongPoll` | `GET /rally/http/ID?wait=1`, again as soon as one answers | a second connection | 2 |
//! | `Poll` | `GET /rally/http/ID` every interval, one at a time | a second connection | 2 |
//!
//! HTTP/1.1 has one request at a time per connection, so a page's browser
//! puts the long-lived GET (or the polls) on one connection and the `POST`s
//! on another; HTTP/2 multiplexes both on one.
//!
//! Up: one `POST` at a time (§11.2), as the protocol asks; the messages
//! written while one is out go together, as frames of one body, in the
//! next. So a caller never waits for the network to send an input (the
//! native client's `send` waits for each `POST`'s answer, a round trip,
//! which would hold the lab's receive loop and skew what it measures).
//!
//! The reading and the posting run in tasks of their own that end when
//! the client is dropped; what they read (or their failure) reaches the
//! caller through a bounded queue.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use base64::Engine;
use bytes::{Bytes, BytesMut};
use http::{header, Method, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use url::Url;

use rally::client::{input_message, States, INPUT_REDUNDANCY};
use rally::protocol::{
    encode_frame, ClientMsg, FrameDecoder, ServerMsg, Welcome, MAX_SERVER_MSG, PROTOCOL_VERSION,
};
use rally::transport::streaming::{HTTP_PATH, SESSION_HEADER};

use super::sse::{Event, SseParser};

/// Server messages read ahead of the caller.
const DOWN_QUEUE: usize = 256;
/// Client messages waiting for the next `POST` (4 s of inputs at 60 Hz);
/// past that an input is dropped here, as a lost datagram would be.
const UP_QUEUE: usize = 256;
/// Largest `POST` body sent (the server takes up to 16 KiB by default).
const POST_BATCH: usize = 8 * 1024;

/// How the client uses HTTP streaming; see the module's table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Stream,
    H2Stream,
    Sse,
    LongPoll,
    Poll(Duration),
}

impl Mode {
    fn query(self) -> &'static str {
        match self {
            Mode::Stream | Mode::H2Stream => "mode=stream",
            Mode::Sse => "mode=sse",
            Mode::LongPoll | Mode::Poll(_) => "mode=poll",
        }
    }
}

/// One HTTP connection's request sender.
enum Link {
    H1(http1::SendRequest<Full<Bytes>>),
    H2(http2::SendRequest<Full<Bytes>>),
}

impl Link {
    async fn request(
        &mut self,
        req: http::Request<Full<Bytes>>,
    ) -> hyper::Result<http::Response<Incoming>> {
        match self {
            Link::H1(s) => {
                s.ready().await?;
                s.send_request(req).await
            }
            Link::H2(s) => {
                s.ready().await?;
                s.send_request(req).await
            }
        }
    }
}

/// Builds the requests for one server.
#[derive(Debug, Clone)]
struct Origin {
    /// `host:port`.
    authority: String,
    /// HTTP/2 takes the authority from the URI (`:authority`), HTTP/1.1
    /// from `Host`.
    h2: bool,
}

impl Origin {
    fn request(
        &self,
        method: Method,
        path: &str,
        body: Bytes,
    ) -> anyhow::Result<http::Request<Full<Bytes>>> {
        let uri = if self.h2 {
            format!("https://{}{path}", self.authority)
        } else {
            path.to_string()
        };
        let mut b = http::Request::builder().method(method).uri(uri);
        if !self.h2 {
            b = b.header(header::HOST, &self.authority);
        }
        if !body.is_empty() {
            b = b.header(header::CONTENT_TYPE, "application/octet-stream");
        }
        Ok(b.body(Full::new(body))?)
    }
}

/// Tasks that end when dropped.
#[derive(Default)]
struct Tasks(Vec<JoinHandle<()>>);

impl Tasks {
    fn spawn(&mut self, f: impl std::future::Future<Output = ()> + Send + 'static) {
        self.0.push(tokio::spawn(f));
    }
}

impl Drop for Tasks {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
    }
}

async fn tcp(addr: SocketAddr) -> anyhow::Result<TcpStream> {
    let tcp = TcpStream::connect(addr)
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    let _ = tcp.set_nodelay(true);
    Ok(tcp)
}

/// An HTTP/1.1 connection and the task that drives it.
async fn connect_h1(addr: SocketAddr) -> anyhow::Result<(Link, JoinHandle<()>)> {
    let (send, conn) = http1::handshake(TokioIo::new(tcp(addr).await?)).await?;
    let driver = tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!("HTTP/1.1 connection: {e}");
        }
    });
    Ok((Link::H1(send), driver))
}

async fn connect_h2(
    addr: SocketAddr,
    host: &str,
    tls: Arc<rustls::ClientConfig>,
    tasks: &mut Tasks,
) -> anyhow::Result<http2::SendRequest<Full<Bytes>>> {
    let name = rustls::pki_types::ServerName::try_from(host.to_string())
        .map_err(|e| anyhow!("server name {host}: {e}"))?;
    let stream = tokio_rustls::TlsConnector::from(tls)
        .connect(name, tcp(addr).await?)
        .await
        .context("TLS handshake")?;
    if stream.get_ref().1.alpn_protocol() != Some(b"h2") {
        bail!("the server did not choose HTTP/2 (ALPN h2)");
    }
    let (send, conn) = http2::handshake(TokioExecutor::new(), TokioIo::new(stream)).await?;
    tasks.spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!("HTTP/2 connection: {e}");
        }
    });
    Ok(send)
}

type Down = mpsc::Sender<Result<Bytes, String>>;

/// A Rally session over HTTP streaming, joined (Welcome received).
pub struct HttpClient {
    welcome: Welcome,
    down: mpsc::Receiver<Result<Bytes, String>>,
    up: mpsc::Sender<Bytes>,
    next_seq: u32,
    /// The last inputs sent, newest first, for redundancy.
    recent: VecDeque<Bytes>,
    /// Take snapshots as deltas (inputs go as `InputAck`).
    deltas: bool,
    /// Recent whole states, to apply deltas to (PROTOCOL.md §5.1).
    states: States,
    _stream: Option<Link>,
    _tasks: Tasks,
}

impl HttpClient {
    /// Opens a session at the server `url` (`http://HOST:PORT`; for
    /// `H2Stream` the same host and port over TLS, verified with `tls`),
    /// joins `room` as `name`, and returns once Welcome has arrived.
    /// `requests` counts every HTTP request made.
    pub async fn connect(
        url: &Url,
        mode: Mode,
        tls: Option<Arc<rustls::ClientConfig>>,
        room: &str,
        name: &str,
        requests: Arc<AtomicU64>,
        deltas: bool,
    ) -> anyhow::Result<HttpClient> {
        let host = url.host_str().context("the URL has no host")?;
        let port = url.port_or_known_default().context("the URL has no port")?;
        let addr = tokio::net::lookup_host((host.trim_matches(['[', ']']), port))
            .await?
            .next()
            .with_context(|| format!("{host} has no address"))?;
        let origin = Origin {
            authority: url[url::Position::BeforeHost..url::Position::AfterPort].to_string(),
            h2: mode == Mode::H2Stream,
        };
        let mut tasks = Tasks::default();
        let (mut down_link, up_link) = match mode {
            Mode::H2Stream => {
                let tls = tls.context("h2-stream needs a TLS configuration")?;
                let h2 = connect_h2(addr, host.trim_matches(['[', ']']), tls, &mut tasks).await?;
                (Link::H2(h2.clone()), Link::H2(h2))
            }
            _ => {
                // Both at once, as a browser opens a second connection
                // for a request while the first is busy.
                let (down, up) = tokio::join!(connect_h1(addr), connect_h1(addr));
                let ((down, d1), (up, d2)) = (down?, up?);
                tasks.0.extend([d1, d2]);
                (down, up)
            }
        };
        let count = |r: &AtomicU64| r.fetch_add(1, Ordering::Relaxed);
        count(&requests);
        let open = origin.request(
            Method::GET,
            &format!("{HTTP_PATH}?{}", mode.query()),
            Bytes::new(),
        )?;
        let resp = down_link.request(open).await.context("GET /rally/http")?;
        if resp.status() != StatusCode::OK {
            bail!("GET {HTTP_PATH}: HTTP {}", resp.status());
        }
        let header_id = resp
            .headers()
            .get(SESSION_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let (tx, down) = mpsc::channel(DOWN_QUEUE);
        // The connection carrying the stream lives as long as the client.
        let mut keep = None;
        let id = match mode {
            Mode::Stream | Mode::H2Stream => {
                tasks.spawn(read_framed(resp.into_body(), tx.clone()));
                keep = Some(down_link);
                header_id.context("no session header")?
            }
            Mode::Sse => {
                // An EventSource cannot read headers: the id is the first
                // event (§11.1).
                let mut body = resp.into_body();
                let mut parser = SseParser::default();
                let mut events = Vec::new();
                while events.is_empty() {
                    let frame = body
                        .frame()
                        .await
                        .context("the event stream ended before its session event")??;
                    if let Ok(d) = frame.into_data() {
                        parser.feed(&d, &mut events)?;
                    }
                }
                let first = events.remove(0);
                if first.event != "session" {
                    bail!("the first event is {:?}, not session", first.event);
                }
                tasks.spawn(read_sse(body, parser, events, tx.clone()));
                keep = Some(down_link);
                first.data
            }
            Mode::LongPoll | Mode::Poll(_) => {
                // The answer is empty; read it so the connection is free.
                resp.into_body().collect().await?;
                let id = header_id.context("no session header")?;
                let (wait, every) = match mode {
                    Mode::Poll(d) => (false, Some(d)),
                    _ => (true, None),
                };
                let path = format!("{HTTP_PATH}/{id}{}", if wait { "?wait=1" } else { "" });
                tasks.spawn(poll_loop(
                    down_link,
                    origin.clone(),
                    path,
                    every,
                    tx.clone(),
                    requests.clone(),
                ));
                id
            }
        };
        let (up, up_rx) = mpsc::channel(UP_QUEUE);
        tasks.spawn(post_loop(
            up_link,
            origin,
            format!("{HTTP_PATH}/{id}"),
            up_rx,
            tx,
            requests,
        ));
        let hello = ClientMsg::Hello {
            version: PROTOCOL_VERSION,
            room: room.into(),
            name: name.into(),
            app: Bytes::new(),
        };
        up.send(hello.to_bytes())
            .await
            .map_err(|_| anyhow!("the POST task ended"))?;
        let mut client = HttpClient {
            welcome: placeholder_welcome(),
            down,
            up,
            next_seq: 0,
            recent: VecDeque::with_capacity(INPUT_REDUNDANCY),
            deltas,
            states: States::new(None),
            _stream: keep,
            _tasks: tasks,
        };
        match client.recv().await.map_err(|e| anyhow!(e))?.0 {
            ServerMsg::Welcome(w) => client.welcome = w,
            ServerMsg::Error { code, reason } => {
                bail!("server refused the session: {reason} (code {code})")
            }
            other => bail!("expected Welcome, got {other:?}"),
        }
        Ok(client)
    }

    pub fn welcome(&self) -> &Welcome {
        &self.welcome
    }

    /// The next server message and its size as it came; keep-alive
    /// `Pong`s are skipped, deltas made whole (or skipped when they cannot
    /// be, PROTOCOL.md §5.1). Cancel-safe.
    pub async fn recv(&mut self) -> Result<(ServerMsg, usize), String> {
        loop {
            let bytes = match self.down.recv().await {
                Some(Ok(b)) => b,
                Some(Err(e)) => return Err(e),
                None => return Err("the session's tasks ended".into()),
            };
            match ServerMsg::decode(&bytes).map_err(|e| e.to_string())? {
                ServerMsg::Pong {
                    client_time_us: 0, ..
                } => {}
                ServerMsg::Snapshot(s) => {
                    self.states.keep(&s);
                    return Ok((ServerMsg::Snapshot(s), bytes.len()));
                }
                ServerMsg::SnapshotDelta(d) => {
                    if let Ok(s) = self.states.apply(&d) {
                        return Ok((ServerMsg::Snapshot(s), bytes.len()));
                    }
                }
                msg => return Ok((msg, bytes.len())),
            }
        }
    }

    /// Deltas made whole, and deltas ignored.
    pub fn deltas(&self) -> (u64, u64) {
        (self.states.applied, self.states.ignored)
    }

    /// Queues the next input for the next `POST`, with the previous ones
    /// for redundancy, as the native client numbers and repeats them.
    /// Returns its sequence number and the message's size.
    pub fn send_input(&mut self, input: &[u8]) -> Result<(u32, usize), String> {
        self.next_seq = self.next_seq.wrapping_add(1);
        if self.recent.len() == INPUT_REDUNDANCY {
            self.recent.pop_back();
        }
        self.recent.push_front(Bytes::copy_from_slice(input));
        let ack = self.deltas.then(|| self.states.newest());
        let msg = input_message(self.next_seq, &self.recent, ack).to_bytes();
        let len = msg.len();
        match self.up.try_send(msg) {
            Ok(()) | Err(mpsc::error::TrySendError::Full(_)) => Ok((self.next_seq, len)),
            Err(mpsc::error::TrySendError::Closed(_)) => Err("the POST task ended".into()),
        }
    }
}

/// Filled in by the real Welcome before the client is handed out.
fn placeholder_welcome() -> Welcome {
    Welcome {
        version: 0,
        player_id: 0,
        tick_hz: 0,
        snapshot_every: 0,
        tick: 0,
        resume_token: [0; 16],
        resume_window_ms: 0,
        reliable_seq: 0,
        client_seq: 0,
        max_message: 0,
        max_input: 0,
        game: String::new(),
        app: Bytes::new(),
    }
}

/// Hands on every message of `frames` (framed as in §2); returns false when
/// the caller is gone or the framing broke (then it was told).
async fn forward(decoder: &mut FrameDecoder, frames: &[u8], tx: &Down) -> bool {
    decoder.buffer().extend_from_slice(frames);
    loop {
        match decoder.decode() {
            Ok(Some(m)) => {
                if tx.send(Ok(m)).await.is_err() {
                    return false;
                }
            }
            Ok(None) => return true,
            Err(e) => {
                let _ = tx.send(Err(format!("bad framing: {e}"))).await;
                return false;
            }
        }
    }
}

/// The `stream` mode's body.
async fn read_framed(mut body: Incoming, tx: Down) {
    let mut decoder = FrameDecoder::new(MAX_SERVER_MSG);
    loop {
        match body.frame().await {
            Some(Ok(f)) => {
                if let Ok(d) = f.into_data() {
                    if !forward(&mut decoder, &d, &tx).await {
                        return;
                    }
                }
            }
            Some(Err(e)) => {
                let _ = tx.send(Err(format!("the stream broke: {e}"))).await;
                return;
            }
            None => {
                let _ = tx.send(Err("the stream ended".into())).await;
                return;
            }
        }
    }
}

/// The `sse` mode's body: each default event's data is a message in
/// base64 (`events` are those already parsed).
async fn read_sse(mut body: Incoming, mut parser: SseParser, mut events: Vec<Event>, tx: Down) {
    let b64 = base64::engine::general_purpose::STANDARD;
    loop {
        for ev in events.drain(..) {
            if !ev.event.is_empty() {
                continue;
            }
            let msg = match b64.decode(ev.data.as_bytes()) {
                Ok(m) => Ok(Bytes::from(m)),
                Err(e) => Err(format!("an event is not base64: {e}")),
            };
            let bad = msg.is_err();
            if tx.send(msg).await.is_err() || bad {
                return;
            }
        }
        let end = match body.frame().await {
            Some(Ok(f)) => match f.into_data() {
                Ok(d) => parser.feed(&d, &mut events).err().map(|e| e.to_string()),
                Err(_) => None,
            },
            Some(Err(e)) => Some(format!("the event stream broke: {e}")),
            None => Some("the event stream ended".into()),
        };
        if let Some(e) = end {
            let _ = tx.send(Err(e)).await;
            return;
        }
    }
}

/// The `poll` mode: GET `path` again and again, at once after each answer
/// (long polling, `?wait=1`) or every `every` (one at a time: a poll due
/// while one is out goes when that one answers).
async fn poll_loop(
    mut link: Link,
    origin: Origin,
    path: String,
    every: Option<Duration>,
    tx: Down,
    requests: Arc<AtomicU64>,
) {
    let mut tick = every.map(|d| {
        let mut t = tokio::time::interval(d);
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        t
    });
    let mut decoder = FrameDecoder::new(MAX_SERVER_MSG);
    loop {
        if let Some(t) = &mut tick {
            t.tick().await;
        }
        requests.fetch_add(1, Ordering::Relaxed);
        let answer = async {
            let req = origin.request(Method::GET, &path, Bytes::new())?;
            let resp = link.request(req).await?;
            let status = resp.status();
            let body = resp.into_body().collect().await?.to_bytes();
            anyhow::Ok((status, body))
        };
        let body = match answer.await {
            Ok((StatusCode::OK, body)) => body,
            Ok((StatusCode::NOT_FOUND, _)) => {
                let _ = tx.send(Err("the session has ended".into())).await;
                return;
            }
            Ok((s, _)) => {
                let _ = tx.send(Err(format!("a poll answered {s}"))).await;
                return;
            }
            Err(e) => {
                let _ = tx.send(Err(format!("a poll failed: {e:#}"))).await;
                return;
            }
        };
        if !forward(&mut decoder, &body, &tx).await {
            return;
        }
    }
}

/// Sends what `rx` gives as `POST`s to `path`, numbered from 1, one at a
/// time, batching what waits; a failure goes to `fail`.
async fn post_loop(
    mut link: Link,
    origin: Origin,
    path: String,
    mut rx: mpsc::Receiver<Bytes>,
    fail: Down,
    requests: Arc<AtomicU64>,
) {
    let mut seq = 0u64;
    let mut carry: Option<Bytes> = None;
    loop {
        let first = match carry.take() {
            Some(m) => m,
            None => match rx.recv().await {
                Some(m) => m,
                None => return,
            },
        };
        let mut body = BytesMut::new();
        encode_frame(&mut body, &first);
        while let Ok(m) = rx.try_recv() {
            if body.len() + 2 + m.len() > POST_BATCH {
                carry = Some(m);
                break;
            }
            encode_frame(&mut body, &m);
        }
        seq += 1;
        requests.fetch_add(1, Ordering::Relaxed);
        let answer = async {
            let req = origin.request(Method::POST, &format!("{path}?seq={seq}"), body.freeze())?;
            let resp = link.request(req).await?;
            let status = resp.status();
            // Read the (empty) answer so the connection can carry the next.
            resp.into_body().collect().await?;
            anyhow::Ok(status)
        };
        let e = match answer.await {
            Ok(StatusCode::NO_CONTENT) => continue,
            Ok(s) => format!("a POST answered {s}"),
            Err(e) => format!("a POST failed: {e:#}"),
        };
        let _ = fail.send(Err(e)).await;
        return;
    }
}
