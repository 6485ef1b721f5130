//! Session layer: one session per player, written once against the
//! [`TransportRx`] / [`TransportTx`] traits, so the game never knows which
//! transport carries it.
//!
//! The driver runs the Hello handshake, joins the room, then moves messages
//! between the room and the transport by delivery class: reliable events in
//! order, snapshots newest-wins, inputs to the room. It does no socket I/O
//! itself; adapters in `transport/` do.

use std::future::Future;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use futures::StreamExt;

use crate::config::HELLO_TIMEOUT;
use crate::metrics::Metrics;
use crate::protocol::{
    encode_snapshot, valid_player_name, valid_room_name, ClientMsg, ErrorCode, ServerMsg,
    MAX_CLIENT_MSG, PROTOCOL_VERSION,
};
use crate::room::{Membership, Rooms};

mod woken;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TransportKind {
    WebTransport,
    WebSocket,
}

impl TransportKind {
    pub fn label(self) -> &'static str {
        match self {
            TransportKind::WebTransport => "webtransport",
            TransportKind::WebSocket => "websocket",
        }
    }
}

/// Which channel a message travelled on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    /// Ordered and complete: the WebTransport stream, or any WebSocket message.
    Reliable,
    /// May be lost or reordered: WebTransport datagrams.
    Unreliable,
}

/// How a latest-only message was carried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Carriage {
    Datagram,
    /// Did not fit a datagram (or the transport has none): sent reliably.
    Stream,
}

#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The peer broke the protocol below the message layer (framing, size,
    /// text frames); it gets this code.
    #[error("{reason}")]
    Peer { code: ErrorCode, reason: String },
    /// The connection is gone; nothing more can be sent.
    #[error("connection lost: {0}")]
    Closed(String),
}

/// The receiving half of a transport.
pub trait TransportRx: Send {
    /// The next message from the peer; `Ok(None)` when the peer closed.
    /// Must be cancel-safe: a message is either returned or stays queued.
    fn recv(
        &mut self,
    ) -> impl Future<Output = Result<Option<(Bytes, Channel)>, TransportError>> + Send;
}

/// The sending half of a transport.
pub trait TransportTx: Send {
    /// Sends one message on the reliable channel, waiting for buffer space.
    fn send_reliable(
        &mut self,
        msg: Bytes,
    ) -> impl Future<Output = Result<(), TransportError>> + Send;

    /// Sends a latest-only message: a datagram when it fits the current
    /// maximum datagram size, else the reliable channel.
    fn send_latest(
        &mut self,
        msg: Bytes,
    ) -> impl Future<Output = Result<Carriage, TransportError>> + Send;

    /// Sends one recipient's snapshot: its header (`ack_seq`) and the
    /// room's shared, already encoded body, through `buf` (reused across
    /// ticks). The default encodes the message and calls `send_latest`; a
    /// transport that prefixes its own bytes overrides it to copy the body
    /// only once.
    fn send_snapshot(
        &mut self,
        buf: &mut BytesMut,
        ack_seq: u32,
        body: &[u8],
    ) -> impl Future<Output = Result<Carriage, TransportError>> + Send {
        encode_snapshot(buf, ack_seq, body);
        self.send_latest(buf.split().freeze())
    }

    /// Sends on the channel the reply belongs to (`Pong` answers a `Ping`).
    fn send_on(
        &mut self,
        channel: Channel,
        msg: Bytes,
    ) -> impl Future<Output = Result<(), TransportError>> + Send;

    /// Closes the session with a close code and reason (PROTOCOL.md §6),
    /// after flushing what was already sent where the transport allows.
    fn close(&mut self, code: u16, reason: &str) -> impl Future<Output = ()> + Send;
}

/// What a session needs from the server.
pub struct SessionCtx {
    pub rooms: Arc<Rooms>,
    pub metrics: Arc<Metrics>,
}

/// Why a session ended.
#[derive(Debug)]
enum End {
    /// The client sent `Leave`.
    Left,
    /// The peer went away.
    Gone(String),
    /// We end it with an error the peer is told about.
    Error(ErrorCode, String),
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

fn decode(msg: &[u8]) -> Result<ClientMsg, End> {
    if msg.len() > MAX_CLIENT_MSG {
        return Err(End::Error(
            ErrorCode::MessageTooLarge,
            format!("message of {} bytes exceeds {MAX_CLIENT_MSG}", msg.len()),
        ));
    }
    ClientMsg::decode(msg).map_err(|e| End::Error(e.code(), e.to_string()))
}

fn transport_end(e: TransportError) -> End {
    match e {
        TransportError::Peer { code, reason } => End::Error(code, reason),
        TransportError::Closed(why) => End::Gone(why),
    }
}

/// Runs one session to its end over any transport.
pub async fn run<R: TransportRx, T: TransportTx>(
    kind: TransportKind,
    mut rx: R,
    mut tx: T,
    ctx: &SessionCtx,
) {
    let counters = ctx.metrics.transport(kind);
    counters.sessions_opened.fetch_add(1, Relaxed);
    counters.sessions_active.fetch_add(1, Relaxed);
    let end = match tokio::time::timeout(HELLO_TIMEOUT, hello(&mut rx)).await {
        Err(_) => End::Error(ErrorCode::HelloTimeout, "no Hello within 5 s".into()),
        Ok(Err(end)) => end,
        Ok(Ok((room, name))) => match ctx.rooms.join(&room, &name).await {
            Err(e) => End::Error(e.code(), e.to_string()),
            Ok(member) => {
                let span = tracing::info_span!("player", id = member.player_id, %room);
                let _enter = span.enter();
                tracing::debug!(%name, "joined");
                drop(_enter);
                play(kind, &mut rx, &mut tx, member, ctx).await
            }
        },
    };
    match end {
        End::Left => tx.close(close_normal(kind), "bye").await,
        End::Gone(why) => tracing::debug!(%why, "session ended by peer"),
        End::Error(code, reason) => {
            ctx.metrics.count_error(code);
            tracing::info!(code = code.name(), %reason, transport = kind.label(), "closing session with error");
            let err = ServerMsg::Error {
                code: code.as_u16(),
                reason,
            };
            // Best effort: the peer may already be gone.
            let _ = tx.send_reliable(err.to_bytes()).await;
            tx.close(code.close_code(), code.name()).await;
        }
    }
    counters.sessions_active.fetch_sub(1, Relaxed);
}

fn close_normal(kind: TransportKind) -> u16 {
    match kind {
        TransportKind::WebSocket => 1000,
        TransportKind::WebTransport => 0,
    }
}

/// Waits for a valid `Hello` on the reliable channel. Datagrams before it
/// are ignored (they may overtake the stream).
async fn hello<R: TransportRx>(rx: &mut R) -> Result<(String, String), End> {
    loop {
        let (msg, channel) = match rx.recv().await {
            Ok(Some(m)) => m,
            Ok(None) => return Err(End::Gone("closed before Hello".into())),
            Err(e) => return Err(transport_end(e)),
        };
        if channel == Channel::Unreliable {
            continue;
        }
        return match decode(&msg)? {
            ClientMsg::Hello {
                version,
                room,
                name,
            } => {
                if version != PROTOCOL_VERSION {
                    Err(End::Error(
                        ErrorCode::UnsupportedVersion,
                        format!("protocol version {version} is not supported; this server speaks {PROTOCOL_VERSION}"),
                    ))
                } else if !valid_room_name(&room) {
                    Err(End::Error(
                        ErrorCode::InvalidName,
                        "invalid room name".into(),
                    ))
                } else if !valid_player_name(&name) {
                    Err(End::Error(
                        ErrorCode::InvalidName,
                        "invalid player name".into(),
                    ))
                } else {
                    Ok((room, name))
                }
            }
            other => Err(End::Error(
                ErrorCode::UnexpectedMessage,
                format!("expected Hello, got {}", msg_name(&other)),
            )),
        };
    }
}

fn msg_name(m: &ClientMsg) -> &'static str {
    match m {
        ClientMsg::Hello { .. } => "Hello",
        ClientMsg::Input { .. } => "Input",
        ClientMsg::Ping { .. } => "Ping",
        ClientMsg::Leave => "Leave",
    }
}

async fn play<R: TransportRx, T: TransportTx>(
    kind: TransportKind,
    rx: &mut R,
    tx: &mut T,
    mut member: Membership,
    ctx: &SessionCtx,
) -> End {
    let counters = ctx.metrics.transport(kind);
    let mut last_tick_sent: Option<u32> = None;
    let mut snap_buf = BytesMut::new();
    // One receive future for the whole session, polled only when it was
    // woken: see `woken`.
    let inbound = futures::stream::unfold(rx, |rx| async move { Some((rx.recv().await, rx)) });
    let mut inbound = std::pin::pin!(woken::PollWhenWoken::new(inbound));
    loop {
        tokio::select! {
            // Reliable events first: a join must not be overtaken by the
            // snapshot that already shows the player.
            biased;
            ev = member.events.recv() => match ev {
                Some(msg) => {
                    if let Err(e) = tx.send_reliable(msg).await {
                        return transport_end(e);
                    }
                }
                None => {
                    let code = member.kicked.get().copied().unwrap_or(ErrorCode::Internal);
                    return End::Error(code, match code {
                        ErrorCode::TooSlow => "reliable queue overflowed: the client is not reading".into(),
                        _ => "removed from the room".into(),
                    });
                }
            },
            changed = member.snapshots.changed() => {
                if changed.is_err() {
                    let code = member.kicked.get().copied().unwrap_or(ErrorCode::Internal);
                    return End::Error(code, "removed from the room".into());
                }
                let snap = member.snapshots.borrow_and_update().clone();
                if let Some(last) = last_tick_sent {
                    let skipped = snap.tick.wrapping_sub(last) as u64 / member.welcome.snapshot_every.max(1) as u64;
                    if skipped > 1 {
                        counters.snapshots_skipped.fetch_add(skipped - 1, Relaxed);
                    }
                }
                last_tick_sent = Some(snap.tick);
                // Only the 5-byte header is written per recipient; the body
                // was encoded once by the room.
                match tx.send_snapshot(&mut snap_buf, snap.ack_seq, &snap.body).await {
                    Ok(carriage) => {
                        counters.snapshots_sent.fetch_add(1, Relaxed);
                        if carriage == Carriage::Stream && kind == TransportKind::WebTransport {
                            counters.snapshots_on_stream.fetch_add(1, Relaxed);
                        }
                    }
                    Err(e) => return transport_end(e),
                }
            },
            inbound = inbound.next() => {
                let (msg, channel) = match inbound {
                    // The unfold stream never ends; None would mean it did.
                    None => return End::Gone("receive side ended".into()),
                    Some(Ok(Some(m))) => m,
                    Some(Ok(None)) => return End::Gone("peer closed".into()),
                    Some(Err(e)) => return transport_end(e),
                };
                counters.messages_in.fetch_add(1, Relaxed);
                match decode(&msg) {
                    Err(end) => return end,
                    Ok(ClientMsg::Input { newest_seq, buttons }) => {
                        if !member.input(newest_seq, &buttons) {
                            ctx.metrics.inputs_dropped.fetch_add(1, Relaxed);
                        }
                    }
                    Ok(ClientMsg::Ping { client_time_us }) => {
                        let pong = ServerMsg::Pong { client_time_us, server_time_us: now_us() };
                        if let Err(e) = tx.send_on(channel, pong.to_bytes()).await {
                            return transport_end(e);
                        }
                    }
                    Ok(ClientMsg::Leave) if channel == Channel::Reliable => return End::Left,
                    Ok(other) => {
                        return End::Error(
                            ErrorCode::UnexpectedMessage,
                            format!("{} is not allowed here", msg_name(&other)),
                        )
                    }
                }
            }
        }
    }
}
