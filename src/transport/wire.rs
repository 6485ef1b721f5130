//! A plain-TCP WebSocket connection shared by its session and its room.
//!
//! The session reads and writes through tungstenite on a [`WireIo`]; the
//! room writes each tick's snapshot frame straight to the socket through
//! [`FrameSink`], one `writev` from its tick with no task woken, as a
//! single-threaded server (Node's `ws`) does. With TLS there is no wire: the
//! stream's cipher state belongs to the session alone.
//!
//! Frames stay whole and in order: [`WireIo::poll_write`] takes all of a
//! write or none of it, keeping what the socket does not take in the wire's
//! `pending` queue, and the room writes only when that queue is empty. So
//! the byte stream is always a sequence of whole frames, in the order they
//! were accepted. What a partial room write leaves queued is driven out by
//! the session's next read (the one future a session always polls) or
//! write.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use futures::task::AtomicWaker;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::FrameHeader;

use crate::metrics::Metrics;
use crate::room::DirectSink;

/// Longest WebSocket frame header: 2 bytes, 8 of length (server frames are
/// not masked, RFC 6455 §5.1).
const MAX_FRAME_HEADER: usize = 10;
/// Longest per-recipient head the room writes (a snapshot's type and
/// `ack_seq`).
const MAX_HEAD: usize = 8;

pub struct Wire {
    tcp: TcpStream,
    // std Mutex: held for a non-blocking write at most, never across .await.
    state: Mutex<State>,
    /// The session's reader, woken to drive out what a room write left.
    reader: AtomicWaker,
    /// Most bytes `pending` holds before a session write waits.
    limit: usize,
}

#[derive(Default)]
struct State {
    /// Accepted, not yet taken by the socket; always ends on a frame end.
    pending: BytesMut,
    /// Writes go to `pending` only, until the next flush: the session is
    /// queueing messages to send in one write.
    corked: bool,
    /// The room may write no more: the session is closing (its Error and
    /// close frame must be the last frames), or gone.
    room_stopped: bool,
    /// The write side was shut down.
    shut: bool,
}

impl Wire {
    /// Wraps an upgraded connection; `limit` bounds the write queue.
    pub fn new(tcp: TcpStream, limit: usize) -> Arc<Wire> {
        Arc::new(Wire {
            tcp,
            state: Mutex::new(State::default()),
            reader: AtomicWaker::new(),
            limit,
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing panics while holding it; a poisoned state is still whole.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The kernel's round-trip estimate of the socket (`TCP_INFO`).
    pub fn rtt(&self) -> Option<crate::session::live::PathRtt> {
        crate::transport::tcp_info::tcp_rtt(std::os::fd::AsRawFd::as_raw_fd(&self.tcp))
    }

    /// Holds the session's writes until its next flush.
    pub fn cork(&self) {
        self.lock().corked = true;
    }

    /// Refuses every room write from now on. Under the lock the room
    /// writes with, so a room frame already written precedes whatever the
    /// session writes after this.
    pub fn stop_room_writes(&self) {
        self.lock().room_stopped = true;
    }

    /// Writes what is queued, as far as the socket takes it now.
    fn drain(&self, st: &mut State) -> io::Result<()> {
        while !st.pending.is_empty() {
            match self.tcp.try_write(&st.pending) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => st.pending.advance(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) => return Err(e),
            }
        }
        // Give back the memory of a burst; an idle connection holds none.
        if st.pending.capacity() > 0 {
            st.pending = BytesMut::new();
        }
        Ok(())
    }

    /// Writes one whole frame made of `parts` now, or nothing: `false` when
    /// something is queued before it or the socket takes none of it.
    fn try_write_frame(&self, parts: [&[u8]; 2]) -> bool {
        let mut st = self.lock();
        if st.room_stopped || st.shut || !st.pending.is_empty() {
            return false;
        }
        let total = parts[0].len() + parts[1].len();
        let n = match self
            .tcp
            .try_write_vectored(&[IoSlice::new(parts[0]), IoSlice::new(parts[1])])
        {
            Ok(n) if n > 0 => n,
            // Full, or broken (the session finds out on its own I/O).
            _ => return false,
        };
        if n < total {
            // The frame has begun on the wire: queue the rest of it and
            // have the session drive it out.
            let (a, b) = (parts[0], parts[1]);
            if n < a.len() {
                st.pending.extend_from_slice(&a[n..]);
                st.pending.extend_from_slice(b);
            } else {
                st.pending.extend_from_slice(&b[n - a.len()..]);
            }
            drop(st);
            self.reader.wake();
        }
        true
    }

    /// Uncorks, and waits until everything queued is written.
    fn poll_drained(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            {
                let mut st = self.lock();
                st.corked = false;
                self.drain(&mut st)?;
                if st.pending.is_empty() {
                    return Poll::Ready(Ok(()));
                }
            }
            ready!(self.tcp.poll_write_ready(cx))?;
        }
    }
}

/// The session's side of a [`Wire`], for tungstenite.
pub struct WireIo {
    wire: Arc<Wire>,
    /// Bytes the HTTP server read past the upgrade request: the first of
    /// the WebSocket stream.
    prefix: Bytes,
}

impl WireIo {
    pub fn new(wire: Arc<Wire>, prefix: Bytes) -> WireIo {
        // A copy: `prefix` is a view of the HTTP server's whole read buffer,
        // which would otherwise stay allocated for the connection's life.
        let prefix = Bytes::copy_from_slice(&prefix);
        WireIo { wire, prefix }
    }
}

impl AsyncRead for WireIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix.split_to(n));
            return Poll::Ready(Ok(()));
        }
        let wire = &self.wire;
        wire.reader.register(cx.waker());
        // Drive out what a room write left queued (registering for write
        // readiness while some is left); a write error shows again on the
        // next write, and a read sees the broken socket too. What the
        // session queued waits for its own flush.
        let corked = wire.lock().corked;
        if !corked {
            let _ = wire.poll_drained(cx);
        }
        loop {
            ready!(wire.tcp.poll_read_ready(cx))?;
            let unfilled = buf.initialize_unfilled();
            match wire.tcp.try_read(unfilled) {
                Ok(n) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl AsyncWrite for WireIo {
    /// Takes all of `buf` or none of it (see the module docs).
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let wire = &self.wire;
        loop {
            {
                let mut st = wire.lock();
                if st.shut {
                    return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
                }
                if st.corked {
                    if st.pending.len() + buf.len() <= wire.limit {
                        st.pending.extend_from_slice(buf);
                        return Poll::Ready(Ok(buf.len()));
                    }
                    // Over the bound: send what is held, then go on.
                    st.corked = false;
                }
                wire.drain(&mut st)?;
                if st.pending.is_empty() {
                    let n = match wire.tcp.try_write(buf) {
                        Ok(n) => n,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
                        Err(e) => return Poll::Ready(Err(e)),
                    };
                    st.pending.extend_from_slice(&buf[n..]);
                    return Poll::Ready(Ok(buf.len()));
                }
                if st.pending.len() + buf.len() <= wire.limit {
                    st.pending.extend_from_slice(buf);
                    return Poll::Ready(Ok(buf.len()));
                }
            }
            ready!(wire.tcp.poll_write_ready(cx))?;
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.wire.poll_drained(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.wire.poll_drained(cx))?;
        self.wire.lock().shut = true;
        Poll::Ready(socket2::SockRef::from(&self.wire.tcp).shutdown(std::net::Shutdown::Write))
    }
}

impl Drop for WireIo {
    fn drop(&mut self) {
        // The session is over: the room must not write any more, even
        // before it hears of the departure.
        self.wire.lock().room_stopped = true;
    }
}

/// The room's direct path to a WebSocket session: one binary frame per
/// message, frame header and the recipient's head on the stack, the body
/// straight from the room's shared buffer.
pub struct FrameSink {
    wire: Arc<Wire>,
    metrics: Arc<Metrics>,
}

impl FrameSink {
    pub fn new(wire: Arc<Wire>, metrics: Arc<Metrics>) -> FrameSink {
        FrameSink { wire, metrics }
    }
}

impl DirectSink for FrameSink {
    fn try_send(&self, _arena: &mut BytesMut, head: &[u8], body: &[u8]) -> bool {
        if head.len() > MAX_HEAD {
            return false;
        }
        let len = head.len() + body.len();
        let header = FrameHeader {
            opcode: OpCode::Data(Data::Binary),
            ..FrameHeader::default()
        };
        let mut buf = [0u8; MAX_FRAME_HEADER + MAX_HEAD];
        let mut out = &mut buf[..];
        if header.format(len as u64, &mut out).is_err() {
            return false;
        }
        let at = MAX_FRAME_HEADER + MAX_HEAD - out.len();
        buf[at..at + head.len()].copy_from_slice(head);
        let sent = self.wire.try_write_frame([&buf[..at + head.len()], body]);
        if sent && crate::protocol::table::is_snapshot(head) {
            self.metrics.ws.snapshots_sent.fetch_add(1, Relaxed);
            self.metrics.ws.snapshots_direct.fetch_add(1, Relaxed);
        }
        sent
    }

    fn stop(&self) {
        self.wire.stop_room_writes();
    }

    fn ordered(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::snapshot_header;
    use futures::{SinkExt, StreamExt};
    use tokio::net::TcpListener;
    use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::WebSocketStream;

    /// A server wire and a client socket connected over loopback, both with
    /// small kernel buffers so that a few frames fill them.
    async fn pair(limit: usize) -> (Arc<Wire>, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let client =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        client.set_recv_buffer_size(4096).unwrap();
        client.connect(&addr.into()).unwrap();
        client.set_nonblocking(true).unwrap();
        let client = TcpStream::from_std(client.into()).unwrap();
        let (server, _) = listener.accept().await.unwrap();
        socket2::SockRef::from(&server)
            .set_send_buffer_size(4096)
            .unwrap();
        // Let the I/O driver see the fresh socket as writable.
        server.writable().await.unwrap();
        (Wire::new(server, limit), client)
    }

    fn sink(wire: &Arc<Wire>) -> FrameSink {
        FrameSink::new(wire.clone(), Arc::new(Metrics::default()))
    }

    fn snapshot(n: u32, len: usize) -> Vec<u8> {
        let mut body = vec![(n % 251) as u8; len];
        body[..4].copy_from_slice(&n.to_be_bytes());
        body
    }

    #[tokio::test]
    async fn room_frames_are_whole_binary_messages() {
        let (wire, client) = pair(1 << 20).await;
        let _io = WireIo::new(wire.clone(), Bytes::new());
        let s = sink(&wire);
        let mut arena = BytesMut::new();
        assert!(s.try_send(&mut arena, &snapshot_header(7), &snapshot(1, 100)));
        assert!(s.try_send(&mut arena, &snapshot_header(8), &snapshot(2, 300)));
        let mut ws = WebSocketStream::from_raw_socket(client, Role::Client, None).await;
        for (ack, n, len) in [(7u32, 1u32, 100usize), (8, 2, 300)] {
            let Some(Ok(Message::Binary(m))) = ws.next().await else {
                panic!("not a binary message")
            };
            assert_eq!(
                m[..],
                [&snapshot_header(ack)[..], &snapshot(n, len)].concat()[..]
            );
        }
    }

    /// Session messages and room frames interleave under back-pressure:
    /// every frame arrives whole, in order, and each room frame arrives
    /// exactly when the room was told it was sent.
    #[tokio::test]
    async fn frames_stay_whole_and_ordered_when_the_socket_is_full() {
        let (wire, client) = pair(64 * 1024).await;
        let io = WireIo::new(wire.clone(), Bytes::new());
        let server = WebSocketStream::from_raw_socket(io, Role::Server, None).await;
        let (mut tx, mut rx) = server.split();
        // The session's read side is always polled, as in a session.
        tokio::spawn(async move { while rx.next().await.is_some() {} });
        let s = sink(&wire);
        // Big frames, so that the socket takes many only in part.
        const LEN: usize = 20_000;
        let writer = tokio::spawn(async move {
            let mut arena = BytesMut::new();
            let mut expected = Vec::new();
            for n in 0..200u32 {
                if n % 3 == 0 {
                    let msg = Bytes::from(format!("reliable {n}").into_bytes());
                    tx.send(Message::Binary(msg)).await.unwrap();
                    expected.push(format!("reliable {n}").into_bytes());
                } else if s.try_send(&mut arena, &snapshot_header(n), &snapshot(n, LEN)) {
                    expected.push([&snapshot_header(n)[..], &snapshot(n, LEN)].concat());
                }
                tokio::task::yield_now().await;
            }
            expected
        });
        let mut ws = WebSocketStream::from_raw_socket(client, Role::Client, None).await;
        // Read slowly at first, so the server side fills up.
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        let mut got = Vec::new();
        let expected = loop {
            tokio::select! {
                m = ws.next() => match m {
                    Some(Ok(Message::Binary(b))) => got.push(b.to_vec()),
                    other => panic!("unexpected {other:?}"),
                },
                _ = tokio::time::sleep(std::time::Duration::from_millis(1)), if writer.is_finished() => {
                    break writer.await.unwrap();
                }
            }
        };
        // What is still on its way.
        while got.len() < expected.len() {
            let m = tokio::time::timeout(std::time::Duration::from_secs(5), ws.next()).await;
            match m {
                Ok(Some(Ok(Message::Binary(b)))) => got.push(b.to_vec()),
                other => panic!(
                    "unexpected {other:?} after {} of {}",
                    got.len(),
                    expected.len()
                ),
            }
        }
        let room = expected.iter().filter(|m| m.len() > LEN).count();
        assert!(room > 10, "the room wrote {room} frames");
        assert!(room < 134, "some room frames must have been declined");
        assert_eq!(got.len(), expected.len());
        assert!(got == expected, "frames differ or are out of order");
    }

    #[tokio::test]
    async fn corked_messages_leave_together_at_the_flush() {
        let (wire, client) = pair(1 << 20).await;
        let io = WireIo::new(wire.clone(), Bytes::new());
        // As the server has it: tungstenite hands every frame on at once.
        let config = WebSocketConfig::default().write_buffer_size(0);
        let mut server = WebSocketStream::from_raw_socket(io, Role::Server, Some(config)).await;
        wire.cork();
        for i in 0..3u8 {
            server
                .feed(Message::Binary(Bytes::from(vec![i; 10])))
                .await
                .unwrap();
        }
        // Held: nothing on the socket, and the room's frame may not jump
        // the queue.
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        let mut probe = [0u8; 1];
        let held = client.try_read(&mut probe);
        assert!(
            matches!(&held, Err(e) if e.kind() == io::ErrorKind::WouldBlock),
            "{held:?}"
        );
        assert!(!sink(&wire).try_send(&mut BytesMut::new(), &snapshot_header(9), &snapshot(9, 10)));
        server.flush().await.unwrap();
        let mut ws = WebSocketStream::from_raw_socket(client, Role::Client, None).await;
        for i in 0..3u8 {
            let Some(Ok(Message::Binary(m))) = ws.next().await else {
                panic!("not a binary message")
            };
            assert_eq!(m[..], [i; 10]);
        }
        // Uncorked again: the room writes straight away.
        assert!(sink(&wire).try_send(&mut BytesMut::new(), &snapshot_header(9), &snapshot(9, 10)));
    }

    #[tokio::test]
    async fn nothing_is_written_once_the_session_is_gone() {
        let (wire, _client) = pair(1 << 20).await;
        let io = WireIo::new(wire.clone(), Bytes::new());
        let s = sink(&wire);
        assert!(s.try_send(&mut BytesMut::new(), &snapshot_header(1), &snapshot(1, 10)));
        drop(io);
        assert!(!s.try_send(&mut BytesMut::new(), &snapshot_header(2), &snapshot(2, 10)));
    }

    /// A closing session's Error and close frame are its last frames: the
    /// room, still ticking, writes nothing after them.
    #[tokio::test]
    async fn the_close_frame_is_last_when_room_writes_stop() {
        let (wire, client) = pair(1 << 20).await;
        let io = WireIo::new(wire.clone(), Bytes::new());
        let mut server = WebSocketStream::from_raw_socket(io, Role::Server, None).await;
        let s = sink(&wire);
        assert!(s.try_send(&mut BytesMut::new(), &snapshot_header(1), &snapshot(1, 10)));
        wire.stop_room_writes();
        server.close(None).await.unwrap();
        assert!(!s.try_send(&mut BytesMut::new(), &snapshot_header(2), &snapshot(2, 10)));
        let mut ws = WebSocketStream::from_raw_socket(client, Role::Client, None).await;
        assert!(matches!(ws.next().await, Some(Ok(Message::Binary(_)))));
        assert!(matches!(ws.next().await, Some(Ok(Message::Close(_)))));
    }

    #[tokio::test]
    async fn bytes_read_with_the_upgrade_come_first() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (wire, mut client) = pair(1 << 20).await;
        let mut io = WireIo::new(wire, Bytes::from_static(b"ab"));
        client.write_all(b"cd").await.unwrap();
        let mut buf = [0u8; 4];
        io.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"abcd");
    }
}
