//! WebTransport adapter (h3-webtransport): the client's first bidirectional
//! stream is the reliable channel, datagrams are the unreliable one.

use std::sync::Arc;
use std::time::Duration;

use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering::Relaxed;

use bytes::{BufMut, Bytes, BytesMut};
use h3::quic::BidiStream as _;
use h3_datagram::datagram_handler::DatagramReader;
use h3_webtransport::server::{AcceptedBi, WebTransportSession};
use h3_webtransport::stream::{BidiStream, RecvStream, SendStream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::config::{SnapshotCarriage, HELLO_TIMEOUT};
use crate::kind::{Channel, TransportKind};
use crate::metrics::Metrics;
use crate::protocol::{
    encode_frame, Close, CloseCode, ErrorCode, FrameDecoder, FrameError, FRAME_HEADER_LEN,
};
use crate::room::DirectSink;
use crate::session::live::PathRtt;
use crate::session::{self, Carriage, Opening, TransportError, TransportRx, TransportTx};
use crate::shared::Shared;

pub type Session = WebTransportSession<h3_quinn::Connection, Bytes>;
type Send = SendStream<h3_quinn::SendStream<Bytes>, Bytes>;
type Recv = RecvStream<h3_quinn::RecvStream, Bytes>;
type Datagrams = DatagramReader<h3_quinn::datagram::RecvDatagramHandler>;

/// Queued reliable bytes above which `queue` writes them out at once.
const QUEUE_LIMIT: usize = 64 * 1024;

/// Writes `v` as a QUIC variable-length integer (RFC 9000 §16).
fn put_varint(buf: &mut BytesMut, v: u64) {
    match datagram_prefix_len(v * 4) {
        1 => buf.put_u8(v as u8),
        2 => buf.put_u16(0x4000 | v as u16),
        4 => buf.put_u32(0x8000_0000 | v as u32),
        _ => buf.put_u64(0xc000_0000_0000_0000 | v),
    }
}

/// Bytes of the quarter-stream-id prefix before each datagram payload of
/// the session whose CONNECT stream is `stream_id` (RFC 9297 §2.1, a QUIC
/// varint).
pub fn datagram_prefix_len(stream_id: u64) -> usize {
    match stream_id / 4 {
        0..=63 => 1,
        64..=16_383 => 2,
        16_384..=1_073_741_823 => 4,
        _ => 8,
    }
}

/// Every datagram of a session is made here: the session's prefix, then
/// the message (`head` and `body`), written whole into `buf` and split off
/// it, to be handed to quinn as is. (h3-datagram's sender would chain the
/// prefix before the message and copy both into a new buffer, and
/// h3-datagram 0.0.2 writes the prefix as zeros of the right length: right
/// only for a session on stream 0.)
fn datagram(buf: &mut BytesMut, session_id: u64, head: &[u8], body: &[u8]) -> Bytes {
    //= https://www.rfc-editor.org/rfc/rfc9297#section-2.1
    //# Quarter Stream ID: A variable-length integer that contains the
    //# value of the client-initiated bidirectional stream that this
    //# datagram is associated with divided by four
    buf.reserve(datagram_prefix_len(session_id) + head.len() + body.len());
    put_varint(buf, session_id / 4);
    buf.put_slice(head);
    buf.put_slice(body);
    buf.split().freeze()
}

/// A session's datagram path: its connection and its prefix.
#[derive(Clone)]
struct DatagramOut {
    quic: quinn::Connection,
    /// Stream id of the session's CONNECT request.
    session_id: u64,
}

impl DatagramOut {
    /// Whether a message of `len` bytes fits one datagram now. Strictly
    /// below the limit: an exact fit has been seen to fail as TooLarge
    /// (hyperium/h3#209).
    fn fits(&self, len: usize) -> bool {
        self.quic
            .max_datagram_size()
            .is_some_and(|max| len + datagram_prefix_len(self.session_id) < max)
    }

    /// Sends `head` + `body` as one datagram through `buf`; `Ok(false)`
    /// when it is too big for one now.
    fn send(
        &self,
        buf: &mut BytesMut,
        head: &[u8],
        body: &[u8],
    ) -> Result<bool, quinn::SendDatagramError> {
        if !self.fits(head.len() + body.len()) {
            return Ok(false);
        }
        match self
            .quic
            .send_datagram(datagram(buf, self.session_id, head, body))
        {
            Ok(()) => Ok(true),
            Err(quinn::SendDatagramError::TooLarge) => Ok(false),
            Err(e) => Err(e),
        }
    }
}

pub struct WtRx {
    session: Arc<Session>,
    /// Stream id of the CONNECT request: datagrams carry it (divided by 4).
    session_stream: u64,
    recv: Recv,
    decoder: FrameDecoder,
    datagrams: Datagrams,
}

pub struct WtTx {
    send: Send,
    datagrams: DatagramOut,
    /// Frames queued for the next flush.
    queued: BytesMut,
    /// Where datagrams are built (reused).
    scratch: BytesMut,
    /// Send latest-only messages on the stream even when they fit a datagram.
    force_stream: bool,
}

fn closed(e: impl std::fmt::Display) -> TransportError {
    TransportError::Closed(e.to_string())
}

impl TransportRx for WtRx {
    async fn recv(&mut self) -> Result<Option<(Bytes, Channel)>, TransportError> {
        loop {
            match self.decoder.decode() {
                Ok(Some(frame)) => return Ok(Some((frame, Channel::Reliable))),
                Ok(None) => {}
                Err(e @ FrameError::TooLarge { .. }) => {
                    return Err(TransportError::Peer {
                        code: ErrorCode::MessageTooLarge,
                        reason: e.to_string(),
                    })
                }
                Err(e @ FrameError::Empty) => {
                    return Err(TransportError::Peer {
                        code: ErrorCode::BadMessage,
                        reason: e.to_string(),
                    })
                }
            }
            // Every branch is cancel-safe: read_buf appends to the decoder's
            // buffer only when it completes; datagrams and streams are taken
            // only by the poll that returns them.
            //
            // Datagrams first: those that arrived before `Hello` must be
            // taken (and ignored, PROTOCOL.md §1) before the frame holding
            // `Hello` is, not after it at random.
            tokio::select! {
                biased;
                d = self.datagrams.read_datagram() => match d {
                    // RFC 9297 §2.1: a datagram for another (here: no)
                    // stream is not this session's; drop it silently.
                    Ok(d) if d.stream_id().into_inner() != self.session_stream => continue,
                    Ok(d) => return Ok(Some((d.into_payload(), Channel::Unreliable))),
                    Err(e) => return Err(closed(e)),
                },
                n = self.recv.read_buf(self.decoder.buffer()) => match n {
                    Ok(0) if self.decoder.pending() > 0 => {
                        return Err(TransportError::Peer {
                            code: ErrorCode::BadMessage,
                            reason: "the stream ended inside a frame".into(),
                        })
                    }
                    Ok(0) => return Ok(None),
                    Ok(_) => continue,
                    Err(e) => return Err(closed(e)),
                },
                // The client ended the session (its CONNECT stream).
                () = self.session.closed() => return Ok(None),
                bi = self.session.accept_bi() => match bi {
                    Ok(Some(AcceptedBi::BidiStream(..))) => return Err(TransportError::Peer {
                        code: ErrorCode::UnexpectedMessage,
                        reason: "only one bidirectional stream per session is allowed".into(),
                    }),
                    Ok(Some(AcceptedBi::Request(_, mut stream))) => {
                        // Plain HTTP/3 requests on a session's connection
                        // are not served; refuse rather than hang. Spawned:
                        // inline, these futures would sit in every session.
                        tokio::spawn(async move {
                            let resp = http::Response::builder().status(404).body(()).unwrap_or_default();
                            let _ = stream.send_response(resp).await;
                            let _ = stream.finish().await;
                        });
                    }
                    Ok(None) => return Ok(None),
                    Err(e) => return Err(closed(e)),
                },
                uni = self.session.accept_uni() => match uni {
                    Ok(Some(_)) => return Err(TransportError::Peer {
                        code: ErrorCode::UnexpectedMessage,
                        reason: "unidirectional streams are not used by the protocol".into(),
                    }),
                    Ok(None) => return Ok(None),
                    Err(e) => return Err(closed(e)),
                },
            }
        }
    }
}

impl TransportTx for WtTx {
    async fn queue(&mut self, msg: Bytes) -> Result<(), TransportError> {
        encode_frame(&mut self.queued, &msg);
        if self.queued.len() >= QUEUE_LIMIT {
            self.flush().await?;
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<(), TransportError> {
        if self.queued.is_empty() {
            return Ok(());
        }
        let frames = self.queued.split();
        self.send.write_all(&frames).await.map_err(closed)?;
        // Give back the memory of a burst; an idle session holds none.
        if self.queued.capacity() > 4096 {
            self.queued = BytesMut::new();
        }
        Ok(())
    }

    async fn send_latest(&mut self, head: &[u8], body: &[u8]) -> Result<Carriage, TransportError> {
        if !self.force_stream
            && self
                .datagrams
                .send(&mut self.scratch, head, body)
                .map_err(closed)?
        {
            return Ok(Carriage::Datagram);
        }
        let len = head.len() + body.len();
        self.queued.reserve(FRAME_HEADER_LEN + len);
        self.queued.put_u16(len as u16);
        self.queued.put_slice(head);
        self.queued.put_slice(body);
        Ok(Carriage::Stream)
    }

    fn direct_sink(&self, metrics: &Arc<Metrics>) -> Option<Arc<dyn DirectSink>> {
        (!self.force_stream).then(|| {
            Arc::new(DatagramSink {
                out: self.datagrams.clone(),
                stopped: AtomicBool::new(false),
                metrics: metrics.clone(),
            }) as Arc<dyn DirectSink>
        })
    }

    async fn keepalive(&mut self) -> Result<(), TransportError> {
        // QUIC keep-alive (transport config) already does this.
        Ok(())
    }

    fn rtt(&self) -> Option<PathRtt> {
        // quinn's smoothed RTT (RFC 9002 §5.3); it keeps no variation we
        // can read, so the session derives jitter from the samples.
        Some(PathRtt {
            rtt: self.datagrams.quic.rtt(),
            var: None,
        })
    }

    async fn close(&mut self, code: Option<CloseCode>) {
        let quic = self.datagrams.quic.clone();
        let Some(code) = code else {
            return quic.close(quinn::VarInt::from_u32(0), b"");
        };
        // Finish the stream, then give the peer a few round trips to read
        // what is in flight (closing the connection discards unsent stream
        // data) or to close first itself.
        let _ = self.flush().await;
        let _ = tokio::time::timeout(Duration::from_secs(1), self.send.shutdown()).await;
        let grace = (quic.rtt() * 3).clamp(Duration::from_millis(50), Duration::from_secs(1));
        let _ = tokio::time::timeout(grace, quic.closed()).await;
        quic.close(
            quinn::VarInt::from_u32(code.code as u32),
            code.reason.as_bytes(),
        );
    }
}

/// The room's direct path to one session: a datagram per message, handed
/// to quinn from the room's tick. `send_datagram` never waits (a full send
/// buffer drops its oldest datagram: newest wins), so no session task runs
/// per snapshot.
struct DatagramSink {
    out: DatagramOut,
    stopped: AtomicBool,
    metrics: Arc<Metrics>,
}

impl DirectSink for DatagramSink {
    fn arena_bytes(&self, len: usize) -> usize {
        datagram_prefix_len(self.out.session_id) + len
    }

    fn try_send(&self, arena: &mut BytesMut, head: &[u8], body: &[u8]) -> bool {
        // Too big for a datagram now (or the connection gone) leaves the
        // message to the session, which sends it on the stream or ends.
        let sent = !self.stopped.load(Relaxed) && self.out.send(arena, head, body).unwrap_or(false);
        if sent && crate::protocol::table::is_snapshot(head) {
            self.metrics.wt.snapshots_sent.fetch_add(1, Relaxed);
            self.metrics.wt.snapshots_direct.fetch_add(1, Relaxed);
        }
        sent
    }

    fn stop(&self) {
        self.stopped.store(true, Relaxed);
    }
}

/// Waits for the client's reliable stream, serving (refusing) anything else
/// that arrives first.
async fn first_bidi(session: &Session) -> Option<BidiStream<h3_quinn::BidiStream<Bytes>, Bytes>> {
    loop {
        match session.accept_bi().await {
            Ok(Some(AcceptedBi::BidiStream(_, stream))) => return Some(stream),
            Ok(Some(AcceptedBi::Request(_, mut stream))) => {
                let resp = http::Response::builder()
                    .status(404)
                    .body(())
                    .unwrap_or_default();
                let _ = stream.send_response(resp).await;
                let _ = stream.finish().await;
            }
            Ok(None) => return None,
            Err(e) => {
                tracing::debug!("session ended before its stream opened: {e}");
                return None;
            }
        }
    }
}

/// A WebTransport session whose CONNECT was accepted.
pub struct Accepted {
    /// Shared, and behind a pointer from the start: a `Session` is 2.2 KB,
    /// and a value held by an async fn (or moved out of its parameter)
    /// keeps its slot in the future for the whole session.
    pub session: Arc<Session>,
    /// Stream id of the CONNECT request.
    pub connect_stream_id: u64,
    pub quic: quinn::Connection,
    /// The join token's claims, when tokens are required.
    pub claims: Option<crate::auth::Claims>,
    /// The peer, and when its QUIC connection was accepted.
    pub opening: Opening,
}

/// Runs one accepted WebTransport session to its end.
pub async fn run(accepted: Accepted, shared: Arc<Shared>) {
    let Accepted {
        session,
        connect_stream_id,
        quic,
        claims,
        opening,
    } = accepted;
    let kind = TransportKind::WebTransport;
    // Boxed: a transient state, kept out of the session's lasting size.
    let first = Box::pin(tokio::time::timeout(HELLO_TIMEOUT, async {
        tokio::select! {
            stream = first_bidi(&session) => stream,
            // The client ended the session before opening its stream.
            () = session.closed() => None,
        }
    }));
    let stream = match first.await {
        Ok(Some(stream)) => stream,
        Ok(None) => {
            // The client closed its session before opening its stream: a
            // normal end (a browser abandoning the transport race does
            // this), not a timeout. Closed as a clean end is (§2).
            shared
                .metrics
                .transport(kind)
                .sessions_opened
                .fetch_add(1, Relaxed);
            tracing::debug!("the client closed the session before opening its stream");
            quic.close(quinn::VarInt::from_u32(0), b"");
            return;
        }
        Err(_) => {
            let close = Close::error(ErrorCode::HelloTimeout, "no stream within 5 s");
            tracing::info!("no reliable stream within {HELLO_TIMEOUT:?}; closing");
            shared.metrics.count_error(ErrorCode::HelloTimeout);
            if let Some(c) = close.close_code(kind) {
                quic.close(quinn::VarInt::from_u32(c.code as u32), c.reason.as_bytes());
            }
            return;
        }
    };
    let (send, recv) = stream.split();
    let rx = WtRx {
        session: session.clone(),
        session_stream: connect_stream_id,
        recv,
        decoder: FrameDecoder::new(shared.cfg.limits.max_client_message as usize),
        datagrams: session.datagram_reader(),
    };
    let mut tx = WtTx {
        send,
        datagrams: DatagramOut {
            quic,
            session_id: connect_stream_id,
        },
        queued: BytesMut::new(),
        scratch: BytesMut::new(),
        force_stream: shared.cfg.wt_snapshots == SnapshotCarriage::Stream,
    };
    let Ok(_permit) = shared.sessions.clone().try_acquire_owned() else {
        shared.refuse_full(kind, &mut tx).await;
        return;
    };
    session::run(kind, rx, tx, &shared.session_ctx(claims, opening)).await;
}

#[cfg(test)]
mod tests {
    use super::datagram_prefix_len;

    #[test]
    fn prefix_is_the_quarter_stream_id_as_a_varint() {
        let enc = |id: u64| {
            let mut b = bytes::BytesMut::new();
            super::put_varint(&mut b, id / 4);
            assert_eq!(b.len(), datagram_prefix_len(id));
            b.to_vec()
        };
        assert_eq!(enc(0), [0x00]);
        assert_eq!(enc(4), [0x01]);
        assert_eq!(enc(4 * 63), [0x3f]);
        // RFC 9000 §A.1 examples: 494878333 and 15293.
        assert_eq!(enc(4 * 15_293), [0x7b, 0xbd]);
        assert_eq!(enc(4 * 494_878_333), [0x9d, 0x7f, 0x3e, 0x7d]);
    }

    #[test]
    fn prefix_length_follows_quic_varint_sizes() {
        assert_eq!(datagram_prefix_len(0), 1);
        assert_eq!(datagram_prefix_len(252), 1);
        assert_eq!(datagram_prefix_len(256), 2);
        assert_eq!(datagram_prefix_len(4 * 16_384), 4);
        assert_eq!(datagram_prefix_len(4 * 1_073_741_824), 8);
    }
}
