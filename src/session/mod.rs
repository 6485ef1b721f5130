//! Session layer: one session per player, written once against the
//! [`TransportRx`] / [`TransportTx`] traits, so the game never knows which
//! transport carries it.
//!
//! The driver runs the Hello handshake, joins the room, then moves messages
//! between the room and the transport by delivery class: reliable events in
//! order, snapshots newest-wins, inputs to the room. It does no socket I/O
//! itself; adapters in `transport/` do.

pub mod rate;

use std::future::Future;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::auth::Claims;
use crate::config::{Limits, HELLO_TIMEOUT};
use crate::metrics::Metrics;
use crate::protocol::{
    encode_snapshot, valid_player_name, valid_room_name, ClientMsg, ErrorCode, ServerMsg,
    PROTOCOL_VERSION,
};
use crate::room::{JoinError, Membership, ReplayError, Rooms, SnapshotSink};
use rate::{TokenBucket, Verdict};

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

    /// Queues one message on the reliable channel, to go out with the next
    /// send or [`TransportTx::flush`]: what a session writes in one turn
    /// (events, then a snapshot) leaves in one write. By default it is sent
    /// at once.
    fn queue_reliable(
        &mut self,
        msg: Bytes,
    ) -> impl Future<Output = Result<(), TransportError>> + Send {
        self.send_reliable(msg)
    }

    /// Sends everything queued, waiting for buffer space.
    fn flush(&mut self) -> impl Future<Output = Result<(), TransportError>> + Send {
        std::future::ready(Ok(()))
    }

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

    /// A path the room may use to send this session's snapshots itself,
    /// without waking the session (see [`SnapshotSink`]); `None` (the
    /// default) sends every snapshot through the session.
    fn snapshot_sink(&self, _metrics: &Arc<Metrics>) -> Option<Arc<dyn SnapshotSink>> {
        None
    }

    /// From now on the sink given by [`TransportTx::snapshot_sink`] sends
    /// nothing: the session is closing and its last messages must be last.
    fn stop_snapshot_sink(&mut self) {}

    /// Sends on the channel the reply belongs to (`Pong` answers a `Ping`).
    fn send_on(
        &mut self,
        channel: Channel,
        msg: Bytes,
    ) -> impl Future<Output = Result<(), TransportError>> + Send;

    /// Keeps an idle connection alive through proxies and NATs (a WebSocket
    /// ping); transports with their own keep-alive do nothing.
    fn keepalive(&mut self) -> impl Future<Output = Result<(), TransportError>> + Send;

    /// Closes the session with a close code and reason (PROTOCOL.md §6),
    /// after flushing what was already sent where the transport allows.
    fn close(&mut self, code: u16, reason: &str) -> impl Future<Output = ()> + Send;
}

/// What a session needs from the server.
pub struct SessionCtx {
    pub rooms: Arc<Rooms>,
    pub metrics: Arc<Metrics>,
    pub limits: Limits,
    /// Cancelled when the server starts shutting down.
    pub shutdown: CancellationToken,
    /// The verified join token of this session, when tokens are required.
    pub claims: Option<Claims>,
}

/// Why a session ended.
#[derive(Debug)]
enum End {
    /// The client sent `Leave`.
    Left,
    /// The peer went away; its player is kept for resume.
    Gone(String),
    /// We end it with an error the peer is told about.
    Error(ErrorCode, String),
    /// The server is stopping.
    Shutdown,
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

fn now_unix() -> u64 {
    now_us() / 1_000_000
}

fn decode(msg: &[u8], max: usize) -> Result<ClientMsg, End> {
    if msg.len() > max {
        return Err(End::Error(
            ErrorCode::MessageTooLarge,
            format!("message of {} bytes exceeds {max}", msg.len()),
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
    let end = tokio::select! {
        end = session(kind, &mut rx, &mut tx, ctx) => end,
        _ = ctx.shutdown.cancelled() => End::Shutdown,
    };
    let closed_by_us = !matches!(end, End::Gone(_));
    // The room may still be ticking with this session's sink: nothing of
    // its may follow the Error and close written next.
    tx.stop_snapshot_sink();
    finish(kind, &mut tx, ctx, end).await;
    if closed_by_us {
        // Read and discard what the peer still sends until it closes (or a
        // short bound): closing a TCP socket with unread input makes the
        // kernel send a reset, which can destroy the Error and close frame
        // we just wrote before the peer reads them (seen with a flooding
        // WebSocket client).
        // Boxed, like the handshake: a state the session passes through
        // once should not size its future for life.
        let _ = Box::pin(tokio::time::timeout(Duration::from_secs(1), async {
            while let Ok(Some(_)) = rx.recv().await {}
        }))
        .await;
    }
    counters.sessions_active.fetch_sub(1, Relaxed);
}

async fn finish<T: TransportTx>(kind: TransportKind, tx: &mut T, ctx: &SessionCtx, end: End) {
    let (code, reason, close_code) = match end {
        End::Left => return tx.close(close_normal(kind), "bye").await,
        End::Gone(why) => return tracing::debug!(%why, "session ended by peer"),
        End::Shutdown => {
            let code = ErrorCode::ShuttingDown;
            // RFC 6455 §7.4.1: 1001 "going away" is what a WebSocket client
            // expects from a server that is stopping.
            let close = match kind {
                TransportKind::WebSocket => 1001,
                TransportKind::WebTransport => code.close_code(),
            };
            (code, "server shutting down".to_string(), close)
        }
        End::Error(code, reason) => (code, reason, code.close_code()),
    };
    ctx.metrics.count_error(code);
    tracing::info!(code = code.name(), %reason, transport = kind.label(), "closing session with error");
    let err = ServerMsg::Error {
        code: code.as_u16(),
        reason,
    };
    // Best effort and bounded: the peer may be gone or not reading.
    let grace = ctx.limits.slow_peer_timeout.min(Duration::from_secs(2));
    let _ = tokio::time::timeout(grace, tx.send_reliable(err.to_bytes())).await;
    let reason = match close_code {
        1001 => "server shutting down",
        _ => code.name(),
    };
    tx.close(close_code, reason).await;
}

fn close_normal(kind: TransportKind) -> u16 {
    match kind {
        TransportKind::WebSocket => 1000,
        TransportKind::WebTransport => 0,
    }
}

/// Handshake then play; owns the membership so it can choose between
/// leaving and detaching (resume) when the session ends.
async fn session<R: TransportRx, T: TransportTx>(
    kind: TransportKind,
    rx: &mut R,
    tx: &mut T,
    ctx: &SessionCtx,
) -> End {
    let deadline = Instant::now() + HELLO_TIMEOUT;
    let mut member = loop {
        let max = ctx.limits.max_client_message as usize;
        // Boxed: the receive future (2.7 KB over WebTransport) would
        // otherwise take its room in the session's future for life.
        let first = Box::pin(tokio::time::timeout_at(deadline, first_message(rx, max)));
        let first = match first.await {
            Err(_) => return End::Error(ErrorCode::HelloTimeout, "no Hello within 5 s".into()),
            Ok(Err(end)) => return end,
            Ok(Ok(m)) => m,
        };
        match admit(first, ctx, tx.snapshot_sink(&ctx.metrics)).await {
            Ok(m) => break m,
            Err(End::Error(ErrorCode::ResumeFailed, reason)) => {
                // Not fatal: tell the client, and let it join afresh.
                ctx.metrics.count_error(ErrorCode::ResumeFailed);
                tracing::debug!(%reason, "resume refused");
                let err = ServerMsg::Error {
                    code: ErrorCode::ResumeFailed.as_u16(),
                    reason,
                };
                if let Err(e) = write(tx, ctx, tx_reliable(err.to_bytes())).await {
                    return e;
                }
            }
            Err(end) => return end,
        }
    };
    let span = tracing::debug_span!("player", id = member.player_id);
    let end = tokio::select! {
        end = play(kind, rx, tx, &mut member, ctx) => end,
        // Token expiry ends the session mid-game.
        _ = expiry(ctx.claims.as_ref()) => End::Error(ErrorCode::TokenExpired, "join token expired".into()),
    };
    span.in_scope(|| tracing::debug!(?end, "session over"));
    match &end {
        // A dropped connection keeps the player for resume.
        End::Gone(_) | End::Shutdown => {}
        _ => member.leave_on_drop(),
    }
    end
}

async fn expiry(claims: Option<&Claims>) {
    match claims {
        Some(c) => {
            let left = c.exp.saturating_sub(now_unix());
            tokio::time::sleep(Duration::from_secs(left)).await
        }
        None => std::future::pending().await,
    }
}

/// Waits for the first reliable message. Datagrams before it are ignored
/// (they may overtake the stream).
async fn first_message<R: TransportRx>(rx: &mut R, max: usize) -> Result<ClientMsg, End> {
    loop {
        match rx.recv().await {
            Ok(Some((_, Channel::Unreliable))) => continue,
            Ok(Some((msg, Channel::Reliable))) => return decode(&msg, max),
            Ok(None) => return Err(End::Gone("closed before Hello".into())),
            Err(e) => return Err(transport_end(e)),
        }
    }
}

fn check_version(version: u16) -> Result<(), End> {
    if version == PROTOCOL_VERSION {
        return Ok(());
    }
    Err(End::Error(
        ErrorCode::UnsupportedVersion,
        format!(
            "protocol version {version} is not supported; this server speaks {PROTOCOL_VERSION}"
        ),
    ))
}

fn check_room(room: &str, ctx: &SessionCtx) -> Result<(), End> {
    match ctx.claims.as_ref().and_then(|c| c.room.as_deref()) {
        Some(allowed) if allowed != room => Err(End::Error(
            ErrorCode::Unauthorized,
            format!("the join token does not allow room '{room}'"),
        )),
        _ => Ok(()),
    }
}

/// Turns the first message into a place in a room: a fresh join for
/// `Hello`, the old player back for `Resume`.
async fn admit(
    first: ClientMsg,
    ctx: &SessionCtx,
    sink: Option<Arc<dyn SnapshotSink>>,
) -> Result<Membership, End> {
    match first {
        ClientMsg::Hello {
            version,
            room,
            name,
        } => {
            check_version(version)?;
            if !valid_room_name(&room) {
                return Err(End::Error(
                    ErrorCode::InvalidName,
                    "invalid room name".into(),
                ));
            }
            if !valid_player_name(&name) {
                return Err(End::Error(
                    ErrorCode::InvalidName,
                    "invalid player name".into(),
                ));
            }
            check_room(&room, ctx)?;
            ctx.rooms
                .join(&room, &name, sink)
                .await
                .map_err(|e| End::Error(e.code(), e.to_string()))
        }
        ClientMsg::Resume {
            version,
            token,
            last_seq,
        } => {
            check_version(version)?;
            let (room, m) = ctx
                .rooms
                .resume(token, last_seq, sink)
                .await
                .map_err(|e| match e {
                    JoinError::UnknownToken | JoinError::Gap(_) => End::Error(
                        ErrorCode::ResumeFailed,
                        format!("{e}; send Hello to join afresh"),
                    ),
                    other => End::Error(other.code(), other.to_string()),
                })?;
            check_room(&room, ctx)?;
            Ok(m)
        }
        other => Err(End::Error(
            ErrorCode::UnexpectedMessage,
            format!("expected Hello or Resume, got {}", msg_name(&other)),
        )),
    }
}

fn msg_name(m: &ClientMsg) -> &'static str {
    match m {
        ClientMsg::Hello { .. } => "Hello",
        ClientMsg::Input { .. } => "Input",
        ClientMsg::Ping { .. } => "Ping",
        ClientMsg::Leave => "Leave",
        ClientMsg::Resume { .. } => "Resume",
    }
}

/// What to write, so one deadline wraps every kind of send.
enum Out {
    Reliable(Bytes),
    Queued(Bytes),
    Flush,
    On(Channel, Bytes),
    Keepalive,
}

fn tx_reliable(msg: Bytes) -> Out {
    Out::Reliable(msg)
}

/// Runs one send with the slow-peer deadline: a connection that accepts
/// nothing for that long is closed with `too_slow`.
async fn deadline<V>(
    ctx: &SessionCtx,
    send: impl Future<Output = Result<V, TransportError>>,
) -> Result<V, End> {
    match tokio::time::timeout(ctx.limits.slow_peer_timeout, send).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(transport_end(e)),
        Err(_) => Err(End::Error(
            ErrorCode::TooSlow,
            format!(
                "the connection accepted nothing for {:?}",
                ctx.limits.slow_peer_timeout
            ),
        )),
    }
}

/// Writes one message with the slow-peer deadline.
async fn write<T: TransportTx>(tx: &mut T, ctx: &SessionCtx, out: Out) -> Result<Carriage, End> {
    let fut = async {
        match out {
            Out::Reliable(m) => tx.send_reliable(m).await.map(|_| Carriage::Stream),
            Out::Queued(m) => tx.queue_reliable(m).await.map(|_| Carriage::Stream),
            Out::Flush => tx.flush().await.map(|_| Carriage::Stream),
            Out::On(ch, m) => tx.send_on(ch, m).await.map(|_| Carriage::Stream),
            Out::Keepalive => tx.keepalive().await.map(|_| Carriage::Stream),
        }
    };
    deadline(ctx, fut).await
}

fn kicked_end(member: &Membership) -> End {
    let code = member.kicked.get().copied().unwrap_or(ErrorCode::Internal);
    let reason = match code {
        ErrorCode::Replaced => "another session resumed this player",
        _ => "removed from the room",
    };
    End::Error(code, reason.into())
}

async fn play<R: TransportRx, T: TransportTx>(
    kind: TransportKind,
    rx: &mut R,
    tx: &mut T,
    member: &mut Membership,
    ctx: &SessionCtx,
) -> End {
    let counters = ctx.metrics.transport(kind);
    // `SnapshotRef::seq` of the last snapshot taken from the slot.
    let mut last_taken: Option<u32> = None;
    let mut snap_buf = BytesMut::new();
    let mut bucket = TokenBucket::new(
        ctx.limits.max_msgs_per_sec,
        ctx.limits.msg_burst,
        std::time::Instant::now(),
    );
    let mut keepalive =
        tokio::time::interval_at(Instant::now() + ctx.limits.keepalive, ctx.limits.keepalive);
    // One receive future for the whole session, polled only when it was
    // woken: see `woken`.
    let inbound = futures::stream::unfold(rx, |rx| async move { Some((rx.recv().await, rx)) });
    let mut inbound = std::pin::pin!(woken::PollWhenWoken::new(inbound));
    // Welcome, the roster and the first snapshot leave in one write.
    let welcome = ServerMsg::Welcome(member.welcome.clone()).to_bytes();
    if let Err(end) = write(tx, ctx, Out::Queued(welcome)).await {
        return end;
    }
    let mut queued = true;
    let mut woken = true;
    loop {
        if woken {
            woken = false;
            // Reliable events first: a join must not be overtaken by the
            // snapshot that already shows the player.
            loop {
                match member.events.read_next() {
                    Ok(Some(msg)) => {
                        if let Err(end) = write(tx, ctx, Out::Queued(msg)).await {
                            return end;
                        }
                        queued = true;
                    }
                    Ok(None) => break,
                    Err(ReplayError::Gone) => return kicked_end(member),
                    Err(ReplayError::Gap | ReplayError::Ahead) => {
                        return End::Error(
                            ErrorCode::TooSlow,
                            "fell too far behind the room's reliable events".into(),
                        )
                    }
                }
            }
            let snap = member.snapshots.borrow_and_update().clone();
            // Wake-ups for events leave the snapshot as it was.
            if !snap.body.is_empty() && last_taken != Some(snap.seq) {
                if let Some(last) = last_taken {
                    let skipped = snap.seq.wrapping_sub(last);
                    if skipped > 1 {
                        counters
                            .snapshots_skipped
                            .fetch_add(skipped as u64 - 1, Relaxed);
                    }
                }
                last_taken = Some(snap.seq);
                // Only the 5-byte header is written per recipient; the body
                // was encoded once by the room.
                match deadline(
                    ctx,
                    tx.send_snapshot(&mut snap_buf, snap.ack_seq, &snap.body),
                )
                .await
                {
                    Ok(carriage) => {
                        counters.snapshots_sent.fetch_add(1, Relaxed);
                        if carriage == Carriage::Stream && kind == TransportKind::WebTransport {
                            counters.snapshots_on_stream.fetch_add(1, Relaxed);
                        }
                    }
                    Err(end) => return end,
                }
            }
            if queued {
                // Whatever carried the snapshot, the events are out only
                // once flushed; then the room may write snapshots itself.
                if let Err(end) = write(tx, ctx, Out::Flush).await {
                    return end;
                }
                member.events.mark_written();
                queued = false;
            }
        }
        tokio::select! {
            biased;
            changed = member.snapshots.changed() => {
                if changed.is_err() {
                    return kicked_end(member);
                }
                woken = true;
            },
            _ = keepalive.tick() => {
                if let Err(end) = write(tx, ctx, Out::Keepalive).await {
                    return end;
                }
            }
            inbound = inbound.next() => {
                let (msg, channel) = match inbound {
                    // The unfold stream never ends; None would mean it did.
                    None => return End::Gone("receive side ended".into()),
                    Some(Ok(Some(m))) => m,
                    Some(Ok(None)) => return End::Gone("peer closed".into()),
                    Some(Err(e)) => return transport_end(e),
                };
                counters.messages_in.fetch_add(1, Relaxed);
                match bucket.take(std::time::Instant::now()) {
                    Verdict::Allow => {}
                    Verdict::Drop => {
                        ctx.metrics.messages_rate_dropped.fetch_add(1, Relaxed);
                        continue;
                    }
                    Verdict::Close => {
                        return End::Error(
                            ErrorCode::RateLimited,
                            format!("more than {} messages per second", ctx.limits.max_msgs_per_sec),
                        )
                    }
                }
                match decode(&msg, ctx.limits.max_client_message as usize) {
                    Err(end) => return end,
                    Ok(ClientMsg::Input { newest_seq, buttons }) => {
                        if !member.input(newest_seq, &buttons) {
                            ctx.metrics.inputs_dropped.fetch_add(1, Relaxed);
                        }
                    }
                    Ok(ClientMsg::Ping { client_time_us }) => {
                        let pong = ServerMsg::Pong { client_time_us, server_time_us: now_us() };
                        if let Err(end) = write(tx, ctx, Out::On(channel, pong.to_bytes())).await {
                            return end;
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
