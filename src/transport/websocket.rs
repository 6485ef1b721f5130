//! WebSocket adapter: one binary message per protocol message, in order.
//! There is no unreliable channel; snapshots still go newest-wins because
//! the session only reads the newest snapshot when the socket has taken the
//! previous one.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::stream::{SplitSink, SplitStream};
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::error::ProtocolError;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode as WsCloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;

use crate::kind::Channel;
use crate::metrics::Metrics;
use crate::protocol::{CloseCode, ErrorCode};
use crate::room::DirectSink;
use crate::session::live::PathRtt;
use crate::session::{Carriage, TransportError, TransportRx, TransportTx};
use crate::transport::tcp_info::SocketProbe;
use crate::transport::wire::{FrameSink, Wire};

/// WebSocket limits: client messages are tiny, so a frame or message above
/// 4 KiB is refused by tungstenite itself; 256–4096 bytes is refused by the
/// session with `message_too_large`.
///
/// The read buffer is 512 bytes, not tungstenite's 128 KiB: tungstenite
/// zero-fills the free part of it on every read attempt, so 128 KiB cost
/// ~35% of the server's CPU in `rally load s2` and made every connection's
/// buffer resident; at 4 KiB it was still a third of the memory per idle
/// connection (`rally load s3`; 1 KiB → 512 B saved another 0.5 KB). Client
/// messages are at most 256 bytes, and a larger frame grows the buffer to
/// fit.
///
/// tungstenite's write buffer is off: every frame goes straight to the
/// socket, or on plain TCP to the wire (`wire`), which holds queued
/// messages until the session flushes and must see each frame whole. A
/// write buffer would also keep its largest burst allocated.
pub fn config(limits: &crate::config::Limits) -> WebSocketConfig {
    let max = limits.ws_max_message as usize;
    WebSocketConfig::default()
        .read_buffer_size(512)
        .max_message_size(Some(max))
        .max_frame_size(Some(max))
        .write_buffer_size(0)
        .max_write_buffer_size(limits.ws_write_buffer.max(max + 1024))
}

pub struct WsRx<S> {
    stream: SplitStream<WebSocketStream<S>>,
    idle_timeout: Duration,
    /// Any frame from the peer (pongs included) pushes this back.
    idle_deadline: Instant,
}

pub struct WsTx<S> {
    sink: SplitSink<WebSocketStream<S>, Message>,
    /// The plain-TCP socket under tungstenite, when there is one (see
    /// `wire`): corked while messages are queued.
    wire: Option<Arc<Wire>>,
    /// Over TLS, where there is no wire: the TCP connection's socket, read
    /// for its round-trip time.
    probe: Option<Arc<SocketProbe>>,
}

/// Splits a WebSocket into the session's halves. A peer that sends nothing
/// (not even the pongs our keep-alive pings ask for) for `idle_timeout` is
/// considered gone. `wire`, when given, is the plain-TCP socket under `ws`:
/// queued messages are held there until flushed, and the room may write
/// snapshot frames to it. `probe` reads the round-trip time of the TCP
/// connection when there is no wire.
pub fn split<S>(
    ws: WebSocketStream<S>,
    idle_timeout: Duration,
    wire: Option<Arc<Wire>>,
    probe: Option<Arc<SocketProbe>>,
) -> (WsRx<S>, WsTx<S>)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (sink, stream) = ws.split();
    let rx = WsRx {
        stream,
        idle_timeout,
        idle_deadline: Instant::now() + idle_timeout,
    };
    (rx, WsTx { sink, wire, probe })
}

fn ws_error(e: WsError) -> TransportError {
    match e {
        WsError::Capacity(c) => TransportError::Peer {
            code: ErrorCode::MessageTooLarge,
            reason: c.to_string(),
        },
        // A dropped connection, not a misbehaving peer: keep the player
        // for resume.
        WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake) => {
            TransportError::Closed("connection reset without a closing handshake".into())
        }
        WsError::Protocol(p) => TransportError::Peer {
            code: ErrorCode::BadMessage,
            reason: format!("WebSocket protocol error: {p}"),
        },
        other => TransportError::Closed(other.to_string()),
    }
}

impl<S> TransportRx for WsRx<S>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    async fn recv(&mut self) -> Result<Option<(Bytes, Channel)>, TransportError> {
        loop {
            // StreamExt::next is cancel-safe: a message is only taken out
            // when the future completes. The deadline is stored, so being
            // cancelled does not reset it.
            let next = tokio::select! {
                next = self.stream.next() => next,
                _ = tokio::time::sleep_until(self.idle_deadline) => {
                    return Err(TransportError::Idle(self.idle_timeout));
                }
            };
            self.idle_deadline = Instant::now() + self.idle_timeout;
            match next {
                None | Some(Ok(Message::Close(_))) => return Ok(None),
                Some(Err(e)) => return Err(ws_error(e)),
                Some(Ok(Message::Binary(b))) => return Ok(Some((b, Channel::Reliable))),
                Some(Ok(Message::Text(_))) => {
                    return Err(TransportError::Peer {
                        code: ErrorCode::UnexpectedMessage,
                        reason: "text messages are not part of the protocol; send binary".into(),
                    })
                }
                // tungstenite answers pings itself.
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => continue,
            }
        }
    }
}

impl<S> WsTx<S>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    async fn send_now(&mut self, msg: Message) -> Result<(), TransportError> {
        self.sink
            .send(msg)
            .await
            .map_err(|e| TransportError::Closed(e.to_string()))
    }
}

impl<S> TransportTx for WsTx<S>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    async fn queue(&mut self, msg: Bytes) -> Result<(), TransportError> {
        let Some(wire) = &self.wire else {
            // TLS: no wire to hold frames; each goes out as it comes.
            return self.send_now(Message::Binary(msg)).await;
        };
        // tungstenite hands the frame to the wire at once (its own write
        // buffer is off); the corked wire holds it until the flush.
        wire.cork();
        self.sink
            .feed(Message::Binary(msg))
            .await
            .map_err(|e| TransportError::Closed(e.to_string()))
    }

    async fn flush(&mut self) -> Result<(), TransportError> {
        self.sink
            .flush()
            .await
            .map_err(|e| TransportError::Closed(e.to_string()))
    }

    async fn send_latest(&mut self, head: &[u8], body: &[u8]) -> Result<Carriage, TransportError> {
        self.queue(Bytes::from([head, body].concat())).await?;
        Ok(Carriage::Stream)
    }

    fn direct_sink(&self, metrics: &Arc<Metrics>) -> Option<Arc<dyn DirectSink>> {
        let wire = self.wire.clone()?;
        Some(Arc::new(FrameSink::new(wire, metrics.clone())))
    }

    async fn keepalive(&mut self) -> Result<(), TransportError> {
        self.send_now(Message::Ping(Bytes::new())).await
    }

    fn rtt(&self) -> Option<PathRtt> {
        match (&self.wire, &self.probe) {
            (Some(wire), _) => wire.rtt(),
            (None, Some(probe)) => probe.rtt(),
            (None, None) => None,
        }
    }

    async fn close(&mut self, code: Option<CloseCode>) {
        // Bounded: a peer that never reads must not hold the task.
        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), async {
            let _ = self.sink.flush().await;
            if let Some(c) = code {
                let frame = CloseFrame {
                    code: WsCloseCode::from(c.code),
                    reason: c.reason.into(),
                };
                let _ = self.sink.send(Message::Close(Some(frame))).await;
            }
            let _ = self.sink.close().await;
        })
        .await;
    }
}
