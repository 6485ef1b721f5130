//! Native client: one API over both transports, for games written in Rust,
//! bots, load generation and tests. Game-agnostic, like the browser client:
//! the game's bytes go in (`Hello.app`, inputs, messages) and come out
//! (`Welcome.app`, snapshot payloads, messages); Rally's part — framing,
//! input numbering and redundancy, numbered events, resume and the replay
//! of reliable messages — is done here.
//!
//! WebTransport goes through `wtransport` (an implementation independent of
//! the server's h3 stack) and verifies the server by its certificate hash,
//! as a browser does; WebSocket goes through tokio-tungstenite.
//!
//! A [`Client`] is one session: it notices a silent server (its watchdog,
//! PROTOCOL.md §7.3) and reports the drop. A [`Session`] is a player's
//! place in a room across sessions: it reconnects, resumes, and joins
//! afresh when it must, for as long as the caller wants.

mod http_get;
mod http_link;
pub mod liveness;
mod session;
mod states;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use futures::{SinkExt, StreamExt};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use url::Url;

pub use crate::kind::{Channel, TransportKind};
use crate::protocol::{
    encode_frame, is_numbered, ClientMsg, ErrorCode, FrameDecoder, Inputs, Redirect, ServerMsg,
    Welcome, MAX_SERVER_MSG, PROTOCOL_VERSION, RESUME_TOKEN_LEN,
};
pub use http_get::{fetch_cert_hash, http_get};
pub use liveness::{Backoff, DEFAULT_WATCHDOG};
pub use session::{RetryPolicy, Session, SessionEvent, SessionState};
pub use states::{ApplyDelta, Ignored, States, KEPT_STATES};

use liveness::{Next, Watchdog};

/// Inputs repeated in each `Input` message (the newest plus three before).
pub const INPUT_REDUNDANCY: usize = 4;
/// Reliable `App` messages kept for replay after a resume (PROTOCOL.md §7.2).
pub const REPLAY_KEPT: usize = 256;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("invalid URL: {0}")]
    Url(String),
    #[error("could not connect: {0}")]
    Connect(String),
    #[error("server refused the session: {reason} (code {code})")]
    Refused { code: u16, reason: String },
    #[error("connection closed: {reason} (code {code:?})")]
    Closed { code: Option<u64>, reason: String },
    #[error("protocol error: {0}")]
    Protocol(String),
    #[error("timed out: {0}")]
    Timeout(&'static str),
    /// The watchdog's verdict: nothing arrived from the server for this
    /// long although it was asked (a `Ping`), or a send waited this long.
    #[error("the server was silent for {0:?}")]
    Silent(Duration),
    #[error("{what} of {len} bytes exceeds the server's limit of {max}")]
    TooLarge {
        what: &'static str,
        len: usize,
        max: usize,
    },
    /// Cluster mode: the room is on another node ([`Client::connect`]
    /// follows this itself, up to [`MAX_REDIRECTS`] times).
    #[error("room {} is on node {} ({})", .0.room, .0.node, .0.url)]
    Moved(Box<Redirect>),
}

/// Redirects [`Client::connect`] follows before it gives up.
pub const MAX_REDIRECTS: usize = 3;

#[derive(Debug, Clone)]
pub struct ConnectOptions {
    /// The server's HTTP origin, e.g. `http://127.0.0.1:4433`.
    pub url: Url,
    pub transport: TransportKind,
    pub room: String,
    pub name: String,
    /// The game's join bytes (`Hello.app`).
    pub app: Bytes,
    /// Pin this SHA-256 certificate hash for WebTransport. When `None` and
    /// the URL is `http`, it is fetched from `/cert-hash`; with `https` the
    /// system roots verify the server.
    pub cert_hash: Option<[u8; 32]>,
    pub timeout: Duration,
    /// Sent in `Hello`; only tests set anything but [`PROTOCOL_VERSION`].
    pub protocol_version: u16,
    /// Take back a dropped player instead of joining afresh; when the server
    /// refuses (`resume_failed`), the client joins with `Hello` instead.
    pub resume: Option<ResumeState>,
    /// `Origin` header to send (browsers always do; native clients need not).
    pub origin: Option<String>,
    /// Join token, sent as `?token=` on the session URL.
    pub token: Option<String>,
    /// Why this client is not on a faster transport, sent as `?fallback=`
    /// on the session URL (PROTOCOL.md §1.1); the server counts it.
    pub fallback: Option<String>,
    /// Open the WebTransport connection on this endpoint (UDP socket)
    /// instead of a new one of its own. Only the load generator shares
    /// endpoints: a thousand sockets, each with its own driver task, cost
    /// it more than the server it measures. The endpoint's certificate
    /// pinning applies; `cert_hash` is not used.
    pub wt_endpoint: Option<WtEndpoint>,
    /// How WebTransport datagrams are received.
    pub datagrams: DatagramPath,
    /// The silence watchdog (PROTOCOL.md §7.3): once welcomed, the client
    /// pings a quiet server and [`Client::recv`] fails with
    /// [`ClientError::Silent`] when the server stays silent this long (and
    /// a send that waits this long fails the same way). `None` turns it
    /// off: only the transport's own timeouts (30 s) notice a dead server.
    /// Default [`DEFAULT_WATCHDOG`], 2 s.
    pub watchdog: Option<Duration>,
    /// Ask the server where the room lives (`GET /rooms/NAME`, PROTOCOL.md
    /// §13.2) and connect there: in a cluster the room's node, else this
    /// server. Only over `http://` (development origins); otherwise the
    /// client relies on the `Redirect` a node sends for a room it does not
    /// own. Default on.
    pub locate: bool,
    /// More origins to ask where the room lives when `url` does not answer
    /// (a [`Session`] fills this with the cluster's nodes it learned).
    pub entries: Vec<Url>,
    /// With `resume`: the origin the player was on. When the room is now
    /// located elsewhere (its node died and it was placed anew), the
    /// resume is dropped and the player joins afresh there.
    pub resume_at: Option<Url>,
    /// Take snapshots as deltas (PROTOCOL.md §5.1): inputs go as
    /// `InputAck`, acknowledging the newest snapshot, and
    /// [`Client::recv`] turns deltas back into whole snapshots. Default on;
    /// off, the client sends `Input` and gets whole snapshots.
    pub deltas: bool,
    /// The game's own delta decoder, for a game that encodes its deltas
    /// itself (`Game::delta`, codec 1).
    pub apply_delta: Option<ApplyDelta>,
}

/// Where a room lives, as `GET /rooms/NAME` answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located {
    pub node: String,
    /// Whether the node asked owns the room (then connect to the origin
    /// asked, which may be a name the node does not know itself by).
    pub here: bool,
    pub url: Url,
    pub cert_hash: Option<[u8; 32]>,
    /// The live nodes' origins.
    pub nodes: Vec<Url>,
}

/// Asks `base` where `room` lives. `Ok(None)` from a server without
/// `/rooms`; `Refused { code: unavailable }` when the cluster cannot
/// place the room now.
pub async fn locate(base: &Url, room: &str) -> Result<Option<Located>, ClientError> {
    if !crate::protocol::valid_room_name(room) {
        // Nowhere to look: `Hello` gets the server's `invalid_name`.
        return Ok(None);
    }
    let path = format!("/rooms/{room}");
    let (status, body) = http_get(base, &path).await?;
    // A server that does not know the endpoint (an older Rally, another
    // implementation of the protocol) is simply where the client connects.
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(&body) else {
        return Ok(None);
    };
    if status == http::StatusCode::SERVICE_UNAVAILABLE && v["error"] == "unavailable" {
        let reason = v["reason"].as_str().unwrap_or("").to_string();
        let code = ErrorCode::Unavailable.as_u16();
        return Err(ClientError::Refused { code, reason });
    }
    let Some(url) = v["url"].as_str().and_then(|u| Url::parse(u).ok()) else {
        return Ok(None);
    };
    if !status.is_success() {
        return Ok(None);
    }
    let cert_hash = v["cert_hashes"][0]
        .as_str()
        .and_then(|h| hex::decode(h).ok()?.try_into().ok());
    let nodes = v["nodes"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|u| Url::parse(u.as_str()?).ok())
                .collect()
        })
        .unwrap_or_default();
    Ok(Some(Located {
        node: v["node"].as_str().unwrap_or("").to_string(),
        here: v["here"].as_bool().unwrap_or(false),
        url,
        cert_hash,
        nodes,
    }))
}

/// How the client receives WebTransport datagrams.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DatagramPath {
    /// Through wtransport (`Connection::receive_datagram`): every datagram
    /// the connection receives is delivered. wtransport's connection driver
    /// task takes each one from QUIC and hands it over, and each of its
    /// turns polls all its streams again: in `rally load s2` that was a
    /// third of the load generator's CPU.
    #[default]
    Driver,
    /// Straight from the QUIC connection (quinn's `read_datagram`), with the
    /// session prefix (RFC 9297) checked here. wtransport's driver then
    /// holds the first datagram it happens to take and, its one-slot queue
    /// full, takes no more and is no longer woken per datagram: this client
    /// may never see that one datagram, the first of the connection. For
    /// load generation, where the server is what is measured.
    Direct,
}

/// A WebTransport client endpoint (one UDP socket) that several clients
/// can share; see [`ConnectOptions::wt_endpoint`].
#[derive(Clone)]
pub struct WtEndpoint(Arc<wtransport::Endpoint<wtransport::endpoint::endpoint_side::Client>>);

impl std::fmt::Debug for WtEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WtEndpoint")
    }
}

impl WtEndpoint {
    /// A client endpoint on an ephemeral port that pins `cert_hash` (or,
    /// without one, verifies the server with the system roots).
    pub fn new(cert_hash: Option<[u8; 32]>) -> Result<Self, ClientError> {
        let builder = wtransport::ClientConfig::builder().with_bind_default();
        let config = match cert_hash {
            Some(h) => builder
                .with_server_certificate_hashes([wtransport::tls::Sha256Digest::new(h)])
                .build(),
            None => builder.with_native_certs().build(),
        };
        wtransport::Endpoint::client(config)
            .map(|e| WtEndpoint(Arc::new(e)))
            .map_err(|e| ClientError::Connect(e.to_string()))
    }
}

/// What a client needs to resume its player after a drop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResumeState {
    pub token: [u8; RESUME_TOKEN_LEN],
    /// Number of the last numbered event received.
    pub last_seq: u32,
    /// Sequence number of the last input sent (client-side only): a resumed
    /// player carries on from it, as the server's ack for it does.
    pub input_seq: u32,
    /// The reliable `App` messages sent and their numbering, for the replay
    /// after the resume.
    pub sent: SentLog,
}

/// The last [`REPLAY_KEPT`] reliable `App` messages sent, numbered from 1
/// over the player's life (PROTOCOL.md §7.2).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SentLog {
    /// Number of the last message sent.
    last: u32,
    kept: VecDeque<Bytes>,
}

impl SentLog {
    /// Records a message as sent (the client does this for every reliable
    /// `App`; a test may record one that never left, as if lost in flight).
    pub fn record(&mut self, payload: Bytes) {
        self.last = self.last.wrapping_add(1);
        if self.kept.len() == REPLAY_KEPT {
            self.kept.pop_front();
        }
        self.kept.push_back(payload);
    }

    /// The messages numbered above `received` that are still kept, oldest
    /// first, and how many above it are not (lost).
    pub fn after(&self, received: u32) -> (Vec<Bytes>, u32) {
        let missing = self.last.wrapping_sub(received);
        if missing as i32 <= 0 {
            return (Vec::new(), 0);
        }
        let have = (missing as usize).min(self.kept.len());
        let out = self
            .kept
            .iter()
            .skip(self.kept.len() - have)
            .cloned()
            .collect();
        (out, missing - have as u32)
    }

    /// Number of the last message sent.
    pub fn last(&self) -> u32 {
        self.last
    }
}

impl ConnectOptions {
    /// The session URL's query (`token=`, `fallback=`), empty without them.
    fn query(&self) -> String {
        let mut q = url::form_urlencoded::Serializer::new(String::new());
        if let Some(t) = &self.token {
            q.append_pair("token", t);
        }
        if let Some(f) = &self.fallback {
            q.append_pair("fallback", f);
        }
        q.finish()
    }

    pub fn new(url: Url, transport: TransportKind, room: &str, name: &str) -> Self {
        ConnectOptions {
            url,
            transport,
            room: room.into(),
            name: name.into(),
            app: Bytes::new(),
            cert_hash: None,
            timeout: Duration::from_secs(10),
            protocol_version: PROTOCOL_VERSION,
            resume: None,
            origin: None,
            token: None,
            fallback: None,
            wt_endpoint: None,
            datagrams: DatagramPath::Driver,
            watchdog: Some(DEFAULT_WATCHDOG),
            locate: true,
            entries: Vec::new(),
            resume_at: None,
            deltas: true,
            apply_delta: None,
        }
    }
}

/// A message from the server and the channel it came on.
#[derive(Debug, Clone, PartialEq)]
pub struct Received {
    /// A `SnapshotDelta` arrives here as the whole `Snapshot` it makes.
    pub msg: ServerMsg,
    pub channel: Channel,
    /// Bytes of the message as it came (a delta's, for a snapshot that
    /// came as one).
    pub wire_len: usize,
}

// One per client, never in a collection: the size difference is harmless.
#[allow(clippy::large_enum_variant)]
enum Conn {
    Wt {
        // Kept so the client endpoint lives as long as the connection.
        _endpoint: WtEndpoint,
        conn: wtransport::Connection,
        send: wtransport::SendStream,
        recv: wtransport::RecvStream,
        decoder: FrameDecoder,
        datagrams: DatagramPath,
    },
    Ws(WebSocketStream<MaybeTlsStream<TcpStream>>),
    Http(Box<http_link::HttpLink>),
}

pub struct Client {
    conn: Conn,
    welcome: Welcome,
    next_seq: u32,
    /// The last inputs sent, newest first, for redundancy.
    recent: VecDeque<Bytes>,
    /// Number of the last numbered event received (PROTOCOL.md §7.1).
    reliable_seq: u32,
    /// Reliable `App` messages sent, for a replay after a resume.
    sent: SentLog,
    /// Reliable `App` messages the last resume could not replay.
    lost: u32,
    /// Whether the last connect resumed a player (rather than joining).
    resumed: bool,
    /// The server origin this session is on.
    url: Url,
    /// The silence window asked for; the watchdog runs once welcomed
    /// (a `Ping` before `Hello` would be `unexpected_message`).
    watchdog_window: Option<Duration>,
    watchdog: Option<Watchdog>,
    /// The cluster's nodes, as the last locate answered.
    nodes: Vec<Url>,
    /// Whether inputs acknowledge snapshots (and so ask for deltas).
    deltas: bool,
    /// Recent whole states, to apply deltas to.
    states: States,
}

/// The message that carries input `seq`, newest first with the ones before
/// it in `recent` (never more than have been numbered: the first is 1): an
/// `Input`, or with `ack` an `InputAck` acknowledging that snapshot tick.
pub fn input_message(seq: u32, recent: &VecDeque<Bytes>, ack: Option<u32>) -> ClientMsg {
    let n = recent.len().min(seq.max(1) as usize);
    let carried: Vec<&[u8]> = recent.iter().take(n).map(|b| &b[..]).collect();
    let inputs = Inputs::encode(&carried);
    match ack {
        Some(snapshot_tick) => ClientMsg::InputAck {
            snapshot_tick,
            newest_seq: seq,
            inputs,
        },
        None => ClientMsg::Input {
            newest_seq: seq,
            inputs,
        },
    }
}

pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// The endpoint URL for `transport` at the server whose origin is `base`.
pub fn endpoint_url(base: &Url, transport: TransportKind) -> Result<Url, ClientError> {
    let host = base
        .host_str()
        .ok_or_else(|| ClientError::Url(format!("{base} has no host")))?;
    let port = base
        .port_or_known_default()
        .ok_or_else(|| ClientError::Url(format!("{base} has no port")))?;
    let host = if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_string()
    };
    let scheme = match (transport, base.scheme()) {
        (TransportKind::WebTransport, _) => "https",
        (TransportKind::WebSocket, "https") => "wss",
        (TransportKind::WebSocket, _) => "ws",
        (TransportKind::Http, s) => s,
    };
    Url::parse(&format!("{scheme}://{host}:{port}/rally"))
        .map_err(|e| ClientError::Url(e.to_string()))
}

fn closed_from_wt(e: wtransport::error::ConnectionError) -> ClientError {
    use wtransport::error::ConnectionError as E;
    match e {
        E::ApplicationClosed(c) => ClientError::Closed {
            code: Some(c.code().into_inner()),
            reason: String::from_utf8_lossy(c.reason()).into_owned(),
        },
        other => ClientError::Closed {
            code: None,
            reason: other.to_string(),
        },
    }
}

impl Client {
    /// Opens a session and completes the Hello/Welcome handshake.
    ///
    /// Goes where the room lives: asks first ([`ConnectOptions::locate`]),
    /// and follows a node's `Redirect` up to [`MAX_REDIRECTS`] times.
    pub async fn connect(opts: ConnectOptions) -> Result<Client, ClientError> {
        let deadline = opts.timeout;
        tokio::time::timeout(deadline, Self::connect_located(opts))
            .await
            .map_err(|_| ClientError::Timeout("connecting"))?
    }

    /// Where the room lives, asked of `opts.url` then `opts.entries`: the
    /// origin to connect to and the answer.
    async fn locate_any(opts: &ConnectOptions) -> Result<Option<(Url, Located)>, ClientError> {
        let mut last = None;
        for base in std::iter::once(&opts.url).chain(&opts.entries) {
            if base.scheme() != "http" {
                continue;
            }
            match locate(base, &opts.room).await {
                Err(e @ ClientError::Connect(_)) => last = Some(e),
                Ok(Some(l)) if l.here => return Ok(Some((base.clone(), l))),
                Ok(Some(l)) => return Ok(Some((l.url.clone(), l))),
                Ok(None) => return Ok(None),
                Err(e) => return Err(e),
            }
        }
        last.map_or(Ok(None), Err)
    }

    async fn connect_located(mut opts: ConnectOptions) -> Result<Client, ClientError> {
        let mut nodes = Vec::new();
        let resume_at = opts.resume_at.take();
        let located = if opts.locate && opts.wt_endpoint.is_none() {
            match Self::locate_any(&opts).await {
                Ok(l) => l,
                // Nobody can say where the room is now: try the resume
                // where the player was.
                Err(_) if resume_at.is_some() && opts.resume.is_some() => None,
                Err(e) => return Err(e),
            }
        } else {
            None
        };
        match (located, resume_at) {
            (Some((url, l)), at) => {
                if at.is_some_and(|at| at != url) {
                    // The room was placed anew elsewhere: its players there
                    // are new, so is this one.
                    opts.resume = None;
                }
                if url != opts.url || opts.cert_hash.is_none() {
                    // The answer carries the node's hashes: no /cert-hash.
                    opts.cert_hash = l.cert_hash;
                }
                opts.url = url;
                nodes = l.nodes;
            }
            (None, Some(at)) => opts.url = at,
            (None, None) => {}
        }
        let mut hops = 0;
        loop {
            match Self::connect_inner(opts.clone()).await {
                Ok(mut c) => {
                    c.nodes = nodes;
                    return Ok(c);
                }
                Err(ClientError::Moved(r))
                    if hops < MAX_REDIRECTS && opts.wt_endpoint.is_none() =>
                {
                    hops += 1;
                    tracing::debug!(room = %r.room, node = %r.node, url = %r.url, "following a redirect");
                    opts.url = Url::parse(&r.url).map_err(|e| {
                        ClientError::Protocol(format!("Redirect url {:?}: {e}", r.url))
                    })?;
                    opts.cert_hash = r.cert_hashes.first().copied();
                    opts.resume = None;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// The cluster's nodes' origins, as the last locate answered (empty
    /// without one).
    pub fn nodes(&self) -> &[Url] {
        &self.nodes
    }

    async fn connect_inner(opts: ConnectOptions) -> Result<Client, ClientError> {
        let mut url = endpoint_url(&opts.url, opts.transport)?;
        if let Some(t) = &opts.token {
            url.query_pairs_mut().append_pair("token", t);
        }
        if let Some(f) = &opts.fallback {
            url.query_pairs_mut().append_pair("fallback", f);
        }
        let conn = match opts.transport {
            TransportKind::WebTransport => {
                let endpoint = match &opts.wt_endpoint {
                    Some(e) => e.clone(),
                    None => WtEndpoint::new(match opts.cert_hash {
                        Some(h) => Some(h),
                        None if opts.url.scheme() == "http" => {
                            Some(fetch_cert_hash(&opts.url).await?)
                        }
                        None => None,
                    })?,
                };
                let mut req = wtransport::endpoint::ConnectOptions::builder(url.as_str());
                if let Some(o) = &opts.origin {
                    req = req.add_header("origin", o);
                }
                let req = req.build();
                let conn = match endpoint.0.connect(req.clone()).await {
                    // wtransport 0.7.2 now and then aborts a handshake on
                    // its own with an HTTP/3 frame error (seen twice in CI
                    // as "locally aborted: FrameUnexpectedError"; cause not
                    // found, worth a reproducer upstream). A new connection
                    // is what any retry would do: one, here.
                    Err(wtransport::error::ConnectingError::ConnectionError(
                        wtransport::error::ConnectionError::LocalH3Error(e),
                    )) => {
                        tracing::warn!(
                            "WebTransport handshake aborted locally ({e}); retrying once"
                        );
                        endpoint.0.connect(req).await
                    }
                    other => other,
                }
                .map_err(|e| ClientError::Connect(e.to_string()))?;
                let opening = conn.open_bi().await.map_err(closed_from_wt)?;
                let (send, recv) = opening
                    .await
                    .map_err(|e| ClientError::Connect(e.to_string()))?;
                Conn::Wt {
                    _endpoint: endpoint,
                    conn,
                    send,
                    recv,
                    decoder: FrameDecoder::new(MAX_SERVER_MSG),
                    datagrams: opts.datagrams,
                }
            }
            TransportKind::WebSocket => {
                use tokio_tungstenite::tungstenite::client::IntoClientRequest;
                let mut req = url
                    .as_str()
                    .into_client_request()
                    .map_err(|e| ClientError::Url(e.to_string()))?;
                if let Some(o) = &opts.origin {
                    let v = o
                        .parse()
                        .map_err(|_| ClientError::Url(format!("bad origin {o}")))?;
                    req.headers_mut().insert(http::header::ORIGIN, v);
                }
                // tungstenite zero-fills the free part of its read buffer on
                // every read; its 128 KiB default made that the main cost of
                // a client receiving 60 snapshots a second. Bigger messages
                // still fit: the buffer grows to a frame's length.
                let config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
                    .read_buffer_size(8 * 1024);
                let (ws, _) =
                    tokio_tungstenite::connect_async_with_config(req, Some(config), false)
                        .await
                        .map_err(|e| ClientError::Connect(e.to_string()))?;
                if let MaybeTlsStream::Plain(s) = ws.get_ref() {
                    let _ = s.set_nodelay(true);
                }
                Conn::Ws(ws)
            }
            TransportKind::Http => Conn::Http(Box::new(
                http_link::HttpLink::open(&opts.url, &opts.query(), opts.origin.as_deref()).await?,
            )),
        };
        let mut client = Client {
            deltas: opts.deltas,
            states: States::new(opts.apply_delta.clone()),
            conn,
            welcome: Welcome {
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
            },
            next_seq: 0,
            recent: VecDeque::with_capacity(INPUT_REDUNDANCY),
            reliable_seq: 0,
            sent: SentLog::default(),
            lost: 0,
            resumed: false,
            url: opts.url.clone(),
            watchdog_window: opts.watchdog.filter(|w| !w.is_zero()),
            watchdog: None,
            nodes: Vec::new(),
        };
        let hello = ClientMsg::Hello {
            version: opts.protocol_version,
            room: opts.room.clone(),
            name: opts.name.clone(),
            app: opts.app.clone(),
        };
        let first = match &opts.resume {
            Some(r) => ClientMsg::Resume {
                version: opts.protocol_version,
                token: r.token,
                last_seq: r.last_seq,
            },
            None => hello.clone(),
        };
        client.send_raw(first.to_bytes(), Channel::Reliable).await?;
        client.await_welcome(opts.resume, &hello).await
    }

    /// Reads up to `Welcome`. When `resume` was sent and the server answers
    /// `resume_failed` (not fatal), joins afresh with `hello` on the same
    /// session.
    async fn await_welcome(
        mut self,
        mut resume: Option<ResumeState>,
        hello: &ClientMsg,
    ) -> Result<Client, ClientError> {
        loop {
            let r = self.recv().await?;
            match r.msg {
                ServerMsg::Welcome(w) => {
                    self.reliable_seq = w.reliable_seq;
                    // Deltas start afresh on every session (PROTOCOL.md §5.1).
                    self.states.clear();
                    self.resumed = resume.is_some();
                    if let Some(r) = resume {
                        // A resumed player's inputs carry on from where they
                        // were, and what the game did not get is sent again.
                        self.next_seq = r.input_seq;
                        self.sent = r.sent;
                        let (replay, lost) = self.sent.after(w.client_seq);
                        self.lost = lost;
                        self.welcome = w;
                        for payload in replay {
                            let msg = ClientMsg::App {
                                reliable: true,
                                payload,
                            };
                            self.send_raw(msg.to_bytes(), Channel::Reliable).await?;
                        }
                    } else {
                        self.welcome = w;
                    }
                    self.watchdog = self
                        .watchdog_window
                        .map(|w| Watchdog::new(w, Instant::now()));
                    return Ok(self);
                }
                ServerMsg::Error { code, .. }
                    if code == ErrorCode::ResumeFailed.as_u16() && resume.is_some() =>
                {
                    resume = None;
                    self.send_raw(hello.to_bytes(), Channel::Reliable).await?;
                }
                ServerMsg::Error { code, reason } => {
                    return Err(ClientError::Refused { code, reason })
                }
                ServerMsg::Redirect(r) => return Err(ClientError::Moved(Box::new(r))),
                // Snapshots cannot precede Welcome on the reliable channel,
                // but a datagram may overtake it; skip those.
                _ if r.channel == Channel::Unreliable => continue,
                other => {
                    return Err(ClientError::Protocol(format!(
                        "expected Welcome, got {other:?}"
                    )))
                }
            }
        }
    }

    /// What to pass as [`ConnectOptions::resume`] after this session drops.
    pub fn resume_state(&self) -> ResumeState {
        ResumeState {
            token: self.welcome.resume_token,
            last_seq: self.reliable_seq,
            input_seq: self.next_seq,
            sent: self.sent.clone(),
        }
    }

    /// Reliable `App` messages sent before a drop that the last resume
    /// could not replay (the game never got them): 0 unless more than
    /// [`REPLAY_KEPT`] were in flight.
    pub fn lost_messages(&self) -> u32 {
        self.lost
    }

    /// True when this session took back a player with `Resume`.
    pub fn resumed(&self) -> bool {
        self.resumed
    }

    pub fn welcome(&self) -> &Welcome {
        &self.welcome
    }

    pub fn player_id(&self) -> u32 {
        self.welcome.player_id
    }

    /// The server origin this session is on: where a resume of this player
    /// goes (a fresh join goes where the caller first asked).
    pub fn server_url(&self) -> &Url {
        &self.url
    }

    pub fn transport(&self) -> TransportKind {
        match self.conn {
            Conn::Wt { .. } => TransportKind::WebTransport,
            Conn::Ws(_) => TransportKind::WebSocket,
            Conn::Http(_) => TransportKind::Http,
        }
    }

    /// Largest datagram payload this connection can send now (WebTransport).
    pub fn max_datagram_size(&self) -> Option<usize> {
        match &self.conn {
            Conn::Wt { conn, .. } => conn.max_datagram_size(),
            Conn::Ws(_) | Conn::Http(_) => None,
        }
    }

    /// The next message from the server. Cancel-safe. With the watchdog
    /// on, it also pings a quiet server and fails with
    /// [`ClientError::Silent`] when the server stays silent for the window.
    pub async fn recv(&mut self) -> Result<Received, ClientError> {
        let (bytes, channel, msg) = loop {
            let (bytes, channel) = self.next_bytes().await?;
            let msg =
                ServerMsg::decode(&bytes).map_err(|e| ClientError::Protocol(e.to_string()))?;
            match msg {
                // A Pong nobody asked for is the HTTP stream's keep-alive.
                ServerMsg::Pong {
                    client_time_us: 0, ..
                } => {}
                ServerMsg::Snapshot(s) => {
                    self.states.keep(&s);
                    break (bytes, channel, ServerMsg::Snapshot(s));
                }
                // A delta whose baseline this client does not have is
                // ignored: the next snapshot will do (PROTOCOL.md §5.1).
                ServerMsg::SnapshotDelta(d) => {
                    if let Ok(s) = self.states.apply(&d) {
                        break (bytes, channel, ServerMsg::Snapshot(s));
                    }
                }
                msg => break (bytes, channel, msg),
            }
        };
        // Numbered events arrive only on the reliable channel; counted by
        // the one table (PROTOCOL.md §7.1).
        if channel == Channel::Reliable && is_numbered(&bytes) {
            self.reliable_seq = self.reliable_seq.wrapping_add(1);
        }
        Ok(Received {
            msg,
            channel,
            wire_len: bytes.len(),
        })
    }

    /// Whether inputs go as `InputAck` (snapshots as deltas).
    pub fn acknowledges(&self) -> bool {
        self.deltas
    }

    /// Deltas this client turned into whole snapshots, and deltas it
    /// ignored (no baseline, or undecodable).
    pub fn deltas(&self) -> (u64, u64) {
        (self.states.applied, self.states.ignored)
    }

    /// Acknowledges the newest snapshot without an input (`InputAck` with
    /// none): a client that sends no inputs calls this to get deltas.
    pub async fn send_ack(&mut self) -> Result<(), ClientError> {
        if !self.deltas {
            return Ok(());
        }
        let msg = ClientMsg::InputAck {
            snapshot_tick: self.states.newest(),
            newest_seq: self.next_seq,
            inputs: Inputs::none(),
        };
        self.send_raw(msg.to_bytes(), Channel::Unreliable).await
    }

    /// The next message's bytes, under the watchdog's eye.
    async fn next_bytes(&mut self) -> Result<(Bytes, Channel), ClientError> {
        loop {
            let Some(dog) = &self.watchdog else {
                return self.recv_bytes().await;
            };
            let window = dog.window();
            match dog.next(Instant::now()) {
                Next::Ping => self.keepalive().await?,
                Next::WaitUntil(t) => tokio::select! {
                    biased;
                    r = self.recv_bytes() => return self.heard(r),
                    _ = tokio::time::sleep_until(t) => {}
                },
                // What has already arrived is read before the verdict.
                Next::Silent => tokio::select! {
                    biased;
                    r = self.recv_bytes() => return self.heard(r),
                    _ = std::future::ready(()) => return Err(ClientError::Silent(window)),
                },
            }
        }
    }

    fn heard<T>(&mut self, r: Result<T, ClientError>) -> Result<T, ClientError> {
        if let (Ok(_), Some(dog)) = (&r, &mut self.watchdog) {
            dog.heard(Instant::now());
        }
        r
    }

    /// The watchdog's `Ping`: `client_time_us` 0, so its `Pong` reads as a
    /// keep-alive and is not shown to the caller. A datagram on
    /// WebTransport: it never blocks, and a lost one is followed by another
    /// a quarter window later.
    async fn keepalive(&mut self) -> Result<(), ClientError> {
        let Some(dog) = &mut self.watchdog else {
            return Ok(());
        };
        let now = Instant::now();
        dog.pinged(now);
        let until = dog.deadline().unwrap_or(now + dog.window());
        let ping = ClientMsg::Ping { client_time_us: 0 }.to_bytes();
        let channel = if self.max_datagram_size().is_some() {
            Channel::Unreliable
        } else {
            Channel::Reliable
        };
        // A server that takes nothing (its HTTP answers or its TCP window)
        // must not hold recv() past the verdict.
        match tokio::time::timeout_at(until, self.send_now(ping, channel)).await {
            Ok(r) => r,
            // The next turn of the loop gives the verdict.
            Err(_) => Ok(()),
        }
    }

    async fn recv_bytes(&mut self) -> Result<(Bytes, Channel), ClientError> {
        match &mut self.conn {
            Conn::Wt {
                conn,
                recv,
                decoder,
                datagrams,
                ..
            } => loop {
                match decoder.decode() {
                    Ok(Some(frame)) => return Ok((frame, Channel::Reliable)),
                    Ok(None) => {}
                    Err(e) => return Err(ClientError::Protocol(e.to_string())),
                }
                tokio::select! {
                    n = recv.read_buf(decoder.buffer()) => match n {
                        Ok(0) => return Err(closed_from_wt(conn.closed().await)),
                        Ok(_) => continue,
                        Err(_) => return Err(closed_from_wt(conn.closed().await)),
                    },
                    d = conn.receive_datagram(), if *datagrams == DatagramPath::Driver => match d {
                        Ok(d) => return Ok((d.payload(), Channel::Unreliable)),
                        Err(e) => return Err(closed_from_wt(e)),
                    },
                    d = conn.quic_connection().read_datagram(), if *datagrams == DatagramPath::Direct => match d {
                        Ok(d) => match own_datagram(conn, &d) {
                            Some(at) => return Ok((d.slice(at..), Channel::Unreliable)),
                            None => continue,
                        },
                        Err(_) => return Err(closed_from_wt(conn.closed().await)),
                    },
                }
            },
            Conn::Http(link) => link.recv().await.map(|m| (m, Channel::Reliable)),
            Conn::Ws(ws) => loop {
                match ws.next().await {
                    Some(Ok(Message::Binary(b))) => return Ok((b, Channel::Reliable)),
                    Some(Ok(Message::Close(frame))) => {
                        return Err(ClientError::Closed {
                            code: frame.as_ref().map(|f| u16::from(f.code) as u64),
                            reason: frame.map(|f| f.reason.to_string()).unwrap_or_default(),
                        })
                    }
                    Some(Ok(Message::Text(_))) => {
                        return Err(ClientError::Protocol("server sent a text message".into()))
                    }
                    Some(Ok(_)) => continue,
                    Some(Err(e)) => {
                        return Err(ClientError::Closed {
                            code: None,
                            reason: e.to_string(),
                        })
                    }
                    None => {
                        return Err(ClientError::Closed {
                            code: None,
                            reason: "stream ended".into(),
                        })
                    }
                }
            },
        }
    }

    /// Sends raw bytes as one message on `channel` (tests use this to send
    /// what a well-behaved client would not). On WebSocket both channels are
    /// a binary message. With the watchdog on, a send that waits for the
    /// whole window fails with [`ClientError::Silent`].
    pub async fn send_raw(&mut self, msg: Bytes, channel: Channel) -> Result<(), ClientError> {
        match self.watchdog.as_ref().map(Watchdog::window) {
            Some(window) => tokio::time::timeout(window, self.send_now(msg, channel))
                .await
                .unwrap_or(Err(ClientError::Silent(window))),
            None => self.send_now(msg, channel).await,
        }
    }

    async fn send_now(&mut self, msg: Bytes, channel: Channel) -> Result<(), ClientError> {
        match &mut self.conn {
            Conn::Wt { conn, send, .. } => match channel {
                Channel::Reliable => {
                    let mut frame = BytesMut::new();
                    encode_frame(&mut frame, &msg);
                    send.write_all(&frame)
                        .await
                        .map_err(|_| ClientError::Closed {
                            code: None,
                            reason: "stream write failed".into(),
                        })
                }
                Channel::Unreliable => conn
                    .send_datagram(&msg)
                    .map_err(|e| ClientError::Protocol(format!("datagram: {e}"))),
            },
            Conn::Ws(ws) => ws
                .send(Message::Binary(msg))
                .await
                .map_err(|e| ClientError::Closed {
                    code: None,
                    reason: e.to_string(),
                }),
            Conn::Http(link) => link.send(&msg).await,
        }
    }

    /// Sends the next input (the game's bytes, at most
    /// `Welcome.max_input`), repeating the previous ones for redundancy, on
    /// the unreliable channel. Returns its sequence number.
    pub async fn send_input(&mut self, input: &[u8]) -> Result<u32, ClientError> {
        let max = self.welcome.max_input as usize;
        if input.len() > max {
            return Err(ClientError::TooLarge {
                what: "an input",
                len: input.len(),
                max,
            });
        }
        self.next_seq = self.next_seq.wrapping_add(1);
        if self.recent.len() == INPUT_REDUNDANCY {
            self.recent.pop_back();
        }
        self.recent.push_front(Bytes::copy_from_slice(input));
        let ack = self.deltas.then(|| self.states.newest());
        let msg = input_message(self.next_seq, &self.recent, ack);
        self.send_raw(msg.to_bytes(), Channel::Unreliable).await?;
        Ok(self.next_seq)
    }

    /// Sends an application message to the game: reliable (`App`, on the
    /// stream, numbered and replayed after a resume) or not
    /// (`AppUnreliable`, a datagram on WebTransport when it fits one).
    pub async fn send(&mut self, payload: &[u8], reliable: bool) -> Result<(), ClientError> {
        let max = self.welcome.max_message as usize;
        if payload.len() + 1 > max {
            return Err(ClientError::TooLarge {
                what: "a message",
                len: payload.len() + 1,
                max,
            });
        }
        let payload = Bytes::copy_from_slice(payload);
        if reliable {
            self.sent.record(payload.clone());
        }
        let msg = ClientMsg::App { reliable, payload }.to_bytes();
        // An unreliable message too big for a datagram now travels on the
        // stream, which takes it too (PROTOCOL.md §4).
        let fits = self.max_datagram_size().is_some_and(|max| msg.len() < max);
        let channel = if reliable || !fits {
            Channel::Reliable
        } else {
            Channel::Unreliable
        };
        self.send_raw(msg, channel).await
    }

    /// Sends a `Ping` carrying the current time on `channel`. Its `Pong`
    /// also feeds the watchdog, which then sends no pings of its own.
    pub async fn ping(&mut self, channel: Channel) -> Result<(), ClientError> {
        let msg = ClientMsg::Ping {
            client_time_us: now_us(),
        };
        if let Some(dog) = &mut self.watchdog {
            dog.pinged(Instant::now());
        }
        self.send_raw(msg.to_bytes(), channel).await
    }

    /// Leaves the room and waits (briefly) for the server to close.
    pub async fn leave(mut self) -> Result<(), ClientError> {
        self.send_raw(ClientMsg::Leave.to_bytes(), Channel::Reliable)
            .await?;
        let wait = async {
            loop {
                if let Err(e) = self.recv().await {
                    return e;
                }
            }
        };
        match tokio::time::timeout(Duration::from_secs(2), wait).await {
            Ok(ClientError::Closed { .. }) => Ok(()),
            Ok(other) => Err(other),
            Err(_) => Err(ClientError::Timeout("waiting for the server to close")),
        }
    }
}

/// Where the payload of a QUIC datagram that belongs to this connection's
/// session starts (RFC 9297 §2.1: its quarter-stream-id prefix names the
/// session's CONNECT stream); `None` for anything else, which is dropped
/// as a datagram may be.
fn own_datagram(conn: &wtransport::Connection, quic: &[u8]) -> Option<usize> {
    let d = wtransport::proto::datagram::Datagram::read(quic).ok()?;
    let prefix = quic.len() - d.payload().len();
    (d.qstream_id().into_session_id() == conn.session_id()).then_some(prefix)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sent_log_replays_what_the_server_did_not_get_and_counts_the_rest() {
        let mut log = SentLog::default();
        assert_eq!(log.after(0), (vec![], 0));
        for i in 0..300u32 {
            log.record(Bytes::from(i.to_be_bytes().to_vec()));
        }
        assert_eq!(log.last(), 300);
        assert_eq!(log.after(300), (vec![], 0));
        let (replay, lost) = log.after(298);
        assert_eq!(lost, 0);
        assert_eq!(
            replay,
            vec![
                Bytes::from(298u32.to_be_bytes().to_vec()),
                Bytes::from(299u32.to_be_bytes().to_vec())
            ]
        );
        // Only the last 256 are kept: a server that got 10 lost 34.
        let (replay, lost) = log.after(10);
        assert_eq!(
            (replay.len(), lost),
            (REPLAY_KEPT, 300 - 10 - REPLAY_KEPT as u32)
        );
    }
}
