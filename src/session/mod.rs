//! Session layer: one session per player, written once against the
//! [`TransportRx`] / [`TransportTx`] traits, so the game never knows which
//! transport carries it.
//!
//! The driver runs the Hello handshake, joins the room, then moves messages
//! between the room and the transport by delivery class: numbered events in
//! order, snapshots newest-wins, unreliable messages latest-only, inputs and
//! application messages to the room. It does no socket I/O itself; adapters
//! in `transport/` do.

mod counted;
pub mod live;
pub mod memory;
pub mod rate;
mod woken;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures::StreamExt;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::auth::Claims;
use crate::config::{Limits, HELLO_TIMEOUT};
use crate::kind::{Channel, TransportKind};
use crate::metrics::{FallbackReason, Metrics};
use crate::protocol::{
    valid_player_name, valid_room_name, ClientMsg, Close, CloseCode, ErrorCode, ServerMsg,
    APP_UNRELIABLE_HEADER, PROTOCOL_VERSION,
};
use crate::room::{DirectSink, JoinError, Membership, ReplayError, Rooms};
use counted::{CountedRx, CountedTx};
use live::{LiveSessions, PathRtt, SessionInfo};
use rate::{TokenBucket, Verdict};

/// How often a session samples its transport's round-trip time.
pub const RTT_SAMPLE_EVERY: Duration = Duration::from_secs(1);

/// How a latest-only message was carried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Carriage {
    Datagram,
    /// Did not fit a datagram (or the transport has none): queued on the
    /// reliable channel, to leave with the next flush.
    Stream,
}

#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The peer broke the protocol below the message layer (framing, size,
    /// text frames, extra streams); it gets this code.
    #[error("{reason}")]
    Peer { code: ErrorCode, reason: String },
    /// Nothing arrived from the peer for the idle timeout.
    #[error("idle for {0:?}")]
    Idle(Duration),
    /// The peer took none of what waited for it for this long (a
    /// transport that queues latest-only messages without waiting).
    #[error("the connection accepted nothing for {0:?}")]
    Stalled(Duration),
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

/// The sending half of a transport. What a session writes in one turn
/// (events, a snapshot, replies) is queued and leaves in one write at the
/// flush.
pub trait TransportTx: Send {
    /// Queues one message on the reliable channel. It leaves at the next
    /// [`TransportTx::flush`], or earlier when the queue is full (waiting
    /// for buffer space then).
    fn queue(&mut self, msg: Bytes) -> impl Future<Output = Result<(), TransportError>> + Send;

    /// Sends everything queued, waiting for buffer space.
    fn flush(&mut self) -> impl Future<Output = Result<(), TransportError>> + Send;

    /// Sends a latest-only message made of `head` and `body`: a datagram
    /// when it fits the current maximum datagram size, else queued on the
    /// reliable channel.
    fn send_latest(
        &mut self,
        head: &[u8],
        body: &[u8],
    ) -> impl Future<Output = Result<Carriage, TransportError>> + Send;

    /// Keeps an idle connection alive through proxies and NATs (a WebSocket
    /// ping); transports with their own keep-alive do nothing.
    fn keepalive(&mut self) -> impl Future<Output = Result<(), TransportError>> + Send;

    /// Closes the session with a close code and reason (PROTOCOL.md §6),
    /// after flushing what was already queued where the transport allows;
    /// `None` ends it without a close of its own.
    fn close(&mut self, code: Option<CloseCode>) -> impl Future<Output = ()> + Send;

    /// A path the room may use to send this session's latest-only messages
    /// itself, without waking the session (see [`DirectSink`]); `None` (the
    /// default) sends them all through the session.
    fn direct_sink(&self, _metrics: &Arc<Metrics>) -> Option<Arc<dyn DirectSink>> {
        None
    }

    /// The transport's current round-trip estimate of the path, sampled
    /// every [`RTT_SAMPLE_EVERY`]; `None` (the default) when it has none.
    fn rtt(&self) -> Option<PathRtt> {
        None
    }
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
    /// The server's live sessions, where this one is listed while it runs.
    pub live: Arc<LiveSessions>,
    /// Where and when this session's connection came from.
    pub opening: Opening,
}

/// What the front end knows of a session before it runs.
#[derive(Debug, Clone)]
pub struct Opening {
    pub remote: Option<SocketAddr>,
    /// When the connection was accepted, or the request arrived on a
    /// connection that had served others first: `rally_connect_seconds`
    /// runs from here to the `Welcome` written.
    pub started: Instant,
    /// Why the client is not on a faster transport, as its session URL
    /// says (`fallback=`, PROTOCOL.md §1.1).
    pub fallback: Option<FallbackReason>,
}

impl Opening {
    /// A session whose connection starts now.
    pub fn now(remote: Option<SocketAddr>) -> Opening {
        Opening {
            remote,
            started: Instant::now(),
            fallback: None,
        }
    }
}

/// Why a session ended.
#[derive(Debug)]
enum End {
    /// The peer ended its side cleanly (a WebSocket close, the end of the
    /// WebTransport stream or session); its player is kept for resume.
    Ended,
    /// The connection broke; its player is kept for resume.
    Gone(String),
    /// We end it, telling the peer.
    Close(Close),
}

fn fail(code: ErrorCode, reason: impl Into<String>) -> End {
    End::Close(Close::error(code, reason))
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

fn decode(msg: &Bytes, max: usize) -> Result<ClientMsg, End> {
    if msg.len() > max {
        return Err(fail(
            ErrorCode::MessageTooLarge,
            format!("message of {} bytes exceeds {max}", msg.len()),
        ));
    }
    ClientMsg::decode(msg).map_err(|e| fail(e.code(), e.to_string()))
}

fn transport_end(e: TransportError) -> End {
    match e {
        TransportError::Peer { code, reason } => fail(code, reason),
        TransportError::Idle(_) => End::Close(Close::Idle),
        e @ TransportError::Stalled(_) => fail(ErrorCode::TooSlow, e.to_string()),
        TransportError::Closed(why) => End::Gone(why),
    }
}

/// Runs one session to its end over any transport.
pub async fn run<R: TransportRx, T: TransportTx>(
    kind: TransportKind,
    rx: R,
    tx: T,
    ctx: &SessionCtx,
) {
    let counters = ctx.metrics.transport(kind);
    counters.sessions_opened.fetch_add(1, Relaxed);
    counters.sessions_active.fetch_add(1, Relaxed);
    // Listed until this function returns.
    let listed = ctx.live.open(kind, ctx.opening.remote);
    let info = listed.info();
    let mut rx = CountedRx {
        inner: rx,
        info: info.clone(),
    };
    let mut tx = CountedTx {
        inner: tx,
        info: info.clone(),
    };
    let sink = tx.direct_sink(&ctx.metrics);
    let end = tokio::select! {
        end = session(kind, &mut rx, &mut tx, sink.clone(), info, ctx) => end,
        _ = ctx.shutdown.cancelled() => End::Close(Close::Shutdown),
    };
    // The room may still be ticking with this session's sink: nothing of
    // its may follow the Error and close written next.
    if let Some(sink) = &sink {
        sink.stop();
    }
    let closed_by_us = matches!(end, End::Close(_));
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
    drop(listed);
}

/// Tells the peer how its session ended (PROTOCOL.md §6): the `Error`
/// first when there is one, then the transport's close.
pub async fn close_with<T: TransportTx>(
    kind: TransportKind,
    tx: &mut T,
    ctx_metrics: &Metrics,
    grace: Duration,
    close: &Close,
) {
    if let Some(code) = close.code() {
        ctx_metrics.count_error(code);
    }
    if let Some(msg) = close.message() {
        // Best effort and bounded: the peer may be gone or not reading.
        let _ = tokio::time::timeout(grace, async {
            tx.queue(msg.to_bytes()).await?;
            tx.flush().await
        })
        .await;
    }
    tx.close(close.close_code(kind)).await;
}

async fn finish<T: TransportTx>(kind: TransportKind, tx: &mut T, ctx: &SessionCtx, end: End) {
    let close = match end {
        End::Ended => {
            tracing::debug!("session ended by peer");
            // Nothing to tell a peer that left; end what is left of the
            // connection now rather than when its last handle drops
            // (WebTransport: QUIC application code 0, no reason, §2).
            let _ = tokio::time::timeout(Duration::from_secs(1), tx.close(None)).await;
            return;
        }
        // A broken connection is closed by its own stack, with its code.
        End::Gone(why) => return tracing::debug!(%why, "session lost"),
        End::Close(close) => close,
    };
    match &close {
        Close::Bye => tracing::debug!(transport = kind.label(), "session left"),
        Close::Idle => tracing::info!(transport = kind.label(), "closing idle session"),
        Close::Shutdown => tracing::debug!(transport = kind.label(), "closing session: shutdown"),
        Close::Moved(r) => {
            tracing::debug!(room = %r.room, node = %r.node, transport = kind.label(), "room is on another node")
        }
        Close::Error(code, reason) => {
            tracing::info!(code = code.name(), %reason, transport = kind.label(), "closing session with error")
        }
    }
    let grace = ctx.limits.slow_peer_timeout.min(Duration::from_secs(2));
    close_with(kind, tx, &ctx.metrics, grace, &close).await;
}

/// Handshake then play; owns the membership so it can choose between
/// leaving and detaching (resume) when the session ends.
async fn session<R: TransportRx, T: TransportTx>(
    kind: TransportKind,
    rx: &mut R,
    tx: &mut T,
    sink: Option<Arc<dyn DirectSink>>,
    info: &SessionInfo,
    ctx: &SessionCtx,
) -> End {
    let deadline = Instant::now() + HELLO_TIMEOUT;
    let mut member = loop {
        let max = ctx.limits.max_client_message as usize;
        // Boxed: the receive future (2.7 KB over WebTransport) would
        // otherwise take its room in the session's future for life.
        let first = Box::pin(tokio::time::timeout_at(deadline, first_message(rx, max)));
        let first = match first.await {
            Err(_) => return fail(ErrorCode::HelloTimeout, "no Hello within 5 s"),
            Ok(Err(end)) => return end,
            Ok(Ok(m)) => m,
        };
        match admit(kind, first, info, ctx, sink.clone()).await {
            Ok(m) => break m,
            Err(End::Close(Close::Error(ErrorCode::ResumeFailed, reason))) => {
                // Not fatal: tell the client, and let it join afresh.
                ctx.metrics.count_error(ErrorCode::ResumeFailed);
                tracing::debug!(%reason, "resume refused");
                let err = ServerMsg::Error {
                    code: ErrorCode::ResumeFailed.as_u16(),
                    reason,
                };
                if let Err(e) = deadline_for(ctx, async {
                    tx.queue(err.to_bytes()).await?;
                    tx.flush().await
                })
                .await
                {
                    return e;
                }
            }
            Err(end) => return end,
        }
    };
    let span = tracing::debug_span!("player", id = member.player_id);
    let end = tokio::select! {
        end = play(kind, rx, tx, &mut member, info, ctx) => end,
        // Token expiry ends the session mid-game.
        _ = expiry(ctx.claims.as_ref()) => fail(ErrorCode::TokenExpired, "join token expired"),
    };
    span.in_scope(|| tracing::debug!(?end, "session over"));
    match &end {
        // A dropped or idle connection, or a stopping server, keeps the
        // player for resume.
        End::Ended | End::Gone(_) | End::Close(Close::Shutdown | Close::Idle) => {}
        End::Close(_) => member.leave_on_drop(),
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
            Ok(None) => return Err(End::Ended),
            Err(e) => return Err(transport_end(e)),
        }
    }
}

fn check_version(version: u16) -> Result<(), End> {
    if version == PROTOCOL_VERSION {
        return Ok(());
    }
    Err(fail(
        ErrorCode::UnsupportedVersion,
        format!(
            "protocol version {version} is not supported; this server speaks {PROTOCOL_VERSION}"
        ),
    ))
}

fn check_room(room: &str, ctx: &SessionCtx) -> Result<(), End> {
    match ctx.claims.as_ref().and_then(|c| c.room.as_deref()) {
        Some(allowed) if allowed != room => Err(fail(
            ErrorCode::Unauthorized,
            format!("the join token does not allow room '{room}'"),
        )),
        _ => Ok(()),
    }
}

/// Turns the first message into a place in a room: a fresh join for
/// `Hello`, the old player back for `Resume`.
/// Counts it: the session's player, a fresh join's reported fallback, a
/// resume and the transport it came from.
async fn admit(
    kind: TransportKind,
    first: ClientMsg,
    info: &SessionInfo,
    ctx: &SessionCtx,
    sink: Option<Arc<dyn DirectSink>>,
) -> Result<Membership, End> {
    let join_end = |e: JoinError| End::Close(e.close());
    match first {
        ClientMsg::Hello {
            version,
            room,
            name,
            app,
        } => {
            check_version(version)?;
            if !valid_room_name(&room) {
                return Err(fail(ErrorCode::InvalidName, "invalid room name"));
            }
            if !valid_player_name(&name) {
                return Err(fail(ErrorCode::InvalidName, "invalid player name"));
            }
            check_room(&room, ctx)?;
            let m = ctx
                .rooms
                .join(&room, &name, app, sink)
                .await
                .map_err(join_end)?;
            ctx.rooms.note_transport(&m.welcome.resume_token, kind);
            info.set_player(&room, &name, m.player_id);
            if let Some(reason) = ctx.opening.fallback {
                ctx.metrics.count_fallback(kind, reason);
            }
            Ok(m)
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
                .map_err(join_end)?;
            check_room(&room, ctx)?;
            if let Some(noted) = ctx.rooms.note_transport(&token, kind) {
                info.set_player(&room, &noted.name, m.player_id);
                ctx.metrics.count_resume(kind, noted.previous);
            }
            Ok(m)
        }
        other => Err(fail(
            ErrorCode::UnexpectedMessage,
            format!("expected Hello or Resume, got {}", other.name()),
        )),
    }
}

/// Runs one send with the slow-peer deadline: a connection that accepts
/// nothing for that long is closed with `too_slow`.
async fn deadline_for<V>(
    ctx: &SessionCtx,
    send: impl Future<Output = Result<V, TransportError>>,
) -> Result<V, End> {
    match tokio::time::timeout(ctx.limits.slow_peer_timeout, send).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(transport_end(e)),
        Err(_) => Err(fail(
            ErrorCode::TooSlow,
            format!(
                "the connection accepted nothing for {:?}",
                ctx.limits.slow_peer_timeout
            ),
        )),
    }
}

fn kicked_end(member: &Membership) -> End {
    End::Close(
        member
            .kicked
            .get()
            .cloned()
            .unwrap_or_else(|| Close::error(ErrorCode::Internal, "removed from the room")),
    )
}

/// Writes what the room has for this session: numbered events first (a
/// join must not be overtaken by the snapshot that already shows the
/// player), then the newest snapshot, then unreliable messages; then one
/// flush, after which the room may write to the transport directly.
async fn write_turn<T: TransportTx>(
    kind: TransportKind,
    tx: &mut T,
    member: &mut Membership,
    last_taken: &mut Option<u32>,
    ctx: &SessionCtx,
) -> Result<(), End> {
    let counters = ctx.metrics.transport(kind);
    loop {
        match member.events.read_next() {
            Ok(Some(msg)) => deadline_for(ctx, tx.queue(msg)).await?,
            Ok(None) => break,
            Err(ReplayError::Gone) => return Err(kicked_end(member)),
            Err(ReplayError::Gap | ReplayError::Ahead) => {
                return Err(fail(
                    ErrorCode::TooSlow,
                    "fell too far behind the room's numbered events",
                ))
            }
        }
    }
    let snap = member.snapshots.borrow_and_update().clone();
    let mut delivered = None;
    // Wake-ups for events leave the snapshot as it was.
    if !snap.body.is_empty() && *last_taken != Some(snap.seq) {
        if let Some(last) = *last_taken {
            let skipped = snap.seq.wrapping_sub(last);
            if skipped > 1 {
                counters
                    .snapshots_skipped
                    .fetch_add(skipped as u64 - 1, Relaxed);
            }
        }
        *last_taken = Some(snap.seq);
        // Only the 5-byte header is written per recipient; the body was
        // encoded once by the room.
        let head = if snap.delta {
            crate::protocol::snapshot_delta_header(snap.ack_seq)
        } else {
            crate::protocol::snapshot_header(snap.ack_seq)
        };
        let carriage = deadline_for(ctx, tx.send_latest(&head, &snap.body)).await?;
        counters.snapshots_sent.fetch_add(1, Relaxed);
        // On a WebSocket, what is written arrives, in order: the next
        // delta may start from it (PROTOCOL.md §5.1). On WebTransport it
        // may be a datagram, and the HTTP tier may still drop it (§11.3):
        // there only the client's acknowledgement counts.
        if kind == TransportKind::WebSocket {
            delivered = Some(snap.tick);
        }
        if carriage == Carriage::Stream && kind == TransportKind::WebTransport {
            counters.snapshots_on_stream.fetch_add(1, Relaxed);
        }
    }
    for payload in member.latest.drain() {
        deadline_for(ctx, tx.send_latest(&APP_UNRELIABLE_HEADER, &payload)).await?;
    }
    deadline_for(ctx, tx.flush()).await?;
    member.events.mark_written();
    if let Some(tick) = delivered {
        member.delivered(tick);
    }
    Ok(())
}

async fn play<R: TransportRx, T: TransportTx>(
    kind: TransportKind,
    rx: &mut R,
    tx: &mut T,
    member: &mut Membership,
    info: &SessionInfo,
    ctx: &SessionCtx,
) -> End {
    let counters = ctx.metrics.transport(kind);
    // `SnapshotRef::seq` of the last snapshot taken from the slot.
    let mut last_taken: Option<u32> = None;
    let mut bucket = TokenBucket::new(
        ctx.limits.max_msgs_per_sec,
        ctx.limits.msg_burst,
        std::time::Instant::now(),
    );
    // One timer for the round-trip samples and the keep-alive, so the loop
    // below polls no more timers than before the samples were taken.
    let period = ctx.limits.keepalive.min(RTT_SAMPLE_EVERY);
    let mut housekeeping = tokio::time::interval_at(Instant::now() + period, period);
    let mut keepalive_due = Instant::now() + ctx.limits.keepalive;
    // The heartbeat (PROTOCOL.md §7.3): a Pong nobody asked for, so that a
    // quiet room is not mistaken for a dead server.
    let beat = ctx.limits.heartbeat;
    let mut heartbeat = (!beat.is_zero()).then(|| {
        let mut i = tokio::time::interval_at(Instant::now() + beat, beat);
        i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        i
    });
    // One receive future for the whole session, polled only when it was
    // woken: see `woken`.
    let inbound = futures::stream::unfold(rx, |rx| async move { Some((rx.recv().await, rx)) });
    let mut inbound = std::pin::pin!(woken::PollWhenWoken::new(inbound));
    // Welcome, the roster and the first snapshot leave in one write.
    let welcome = ServerMsg::Welcome(member.welcome.clone()).to_bytes();
    if let Err(end) = deadline_for(ctx, tx.queue(welcome)).await {
        return end;
    }
    if let Err(end) = write_turn(kind, tx, member, &mut last_taken, ctx).await {
        return end;
    }
    counters.connect.observe(ctx.opening.started.elapsed());
    let mut woken = false;
    loop {
        if woken {
            woken = false;
            if let Err(end) = write_turn(kind, tx, member, &mut last_taken, ctx).await {
                return end;
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
            scheduled = housekeeping.tick() => {
                if let Some(sample) = tx.rtt() {
                    info.record_rtt(sample);
                    counters.rtt.observe(sample.rtt);
                }
                // Compared on the timer's own schedule, not the time the
                // tick was served: a tick served late must not push the
                // next keep-alive a whole period later.
                if scheduled >= keepalive_due {
                    keepalive_due = scheduled + ctx.limits.keepalive;
                    if let Err(end) = deadline_for(ctx, tx.keepalive()).await {
                        return end;
                    }
                }
            }
            _ = async {
                match heartbeat.as_mut() {
                    Some(i) => {
                        i.tick().await;
                    }
                    None => std::future::pending().await,
                }
            } => {
                let pong = ServerMsg::Pong {
                    client_time_us: 0,
                    server_time_us: now_us(),
                };
                if let Err(end) = deadline_for(ctx, tx.queue(pong.to_bytes())).await {
                    return end;
                }
                if let Err(end) = deadline_for(ctx, tx.flush()).await {
                    return end;
                }
            }
            inbound = inbound.next() => {
                let (msg, channel) = match inbound {
                    // The unfold stream never ends; None would mean it did.
                    None => return End::Gone("receive side ended".into()),
                    Some(Ok(Some(m))) => m,
                    Some(Ok(None)) => return End::Ended,
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
                        return fail(
                            ErrorCode::RateLimited,
                            format!("more than {} messages per second", ctx.limits.max_msgs_per_sec),
                        )
                    }
                }
                let msg = match decode(&msg, ctx.limits.max_client_message as usize) {
                    Ok(m) => m,
                    Err(end) => return end,
                };
                if let Err(end) = handle(msg, channel, tx, member, ctx).await {
                    return end;
                }
            }
        }
    }
}

/// Acts on one client message after the handshake.
async fn handle<T: TransportTx>(
    msg: ClientMsg,
    channel: Channel,
    tx: &mut T,
    member: &mut Membership,
    ctx: &SessionCtx,
) -> Result<(), End> {
    match msg {
        ClientMsg::Input { newest_seq, inputs } => {
            let max = ctx.limits.max_input_bytes as usize;
            if inputs.max_len() > max {
                return Err(fail(
                    ErrorCode::MessageTooLarge,
                    format!("an input of {} bytes exceeds {max}", inputs.max_len()),
                ));
            }
            if !member.input(newest_seq, inputs, None) {
                ctx.metrics.inputs_dropped.fetch_add(1, Relaxed);
            }
        }
        ClientMsg::InputAck {
            snapshot_tick,
            newest_seq,
            inputs,
        } => {
            let max = ctx.limits.max_input_bytes as usize;
            if inputs.max_len() > max {
                return Err(fail(
                    ErrorCode::MessageTooLarge,
                    format!("an input of {} bytes exceeds {max}", inputs.max_len()),
                ));
            }
            if !member.input(newest_seq, inputs, Some(snapshot_tick)) {
                ctx.metrics.inputs_dropped.fetch_add(1, Relaxed);
            }
        }
        ClientMsg::App { reliable: true, .. } if channel == Channel::Unreliable => {
            return Err(fail(
                ErrorCode::UnexpectedMessage,
                "App is not allowed on a datagram",
            ))
        }
        ClientMsg::App { reliable, payload } => {
            if !member.message(reliable, payload).await && !reliable {
                ctx.metrics.app_messages_dropped.fetch_add(1, Relaxed);
            }
        }
        ClientMsg::Ping { client_time_us } => {
            let pong = ServerMsg::Pong {
                client_time_us,
                server_time_us: now_us(),
            }
            .to_bytes();
            // The server answers on the channel the Ping came on.
            match channel {
                Channel::Reliable => deadline_for(ctx, tx.queue(pong)).await?,
                Channel::Unreliable => {
                    deadline_for(ctx, tx.send_latest(&pong, &[])).await?;
                }
            }
            deadline_for(ctx, tx.flush()).await?;
            member.events.mark_written();
        }
        ClientMsg::Leave if channel == Channel::Reliable => return Err(End::Close(Close::Bye)),
        other => {
            return Err(fail(
                ErrorCode::UnexpectedMessage,
                format!("{} is not allowed here", other.name()),
            ))
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
