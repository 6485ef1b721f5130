//! The kernel's round-trip estimate of a TCP connection (Linux `TCP_INFO`:
//! `tcpi_rtt` and `tcpi_rttvar`), for the WebSocket and HTTP streaming
//! sessions' RTT samples. Elsewhere there is none, and those sessions take
//! no samples.
//!
//! A session may outlive the HTTP connection it was opened on (HTTP
//! streaming in poll mode), so it reads the socket through a
//! [`SocketProbe`] that the connection clears before its socket closes:
//! a descriptor number is never read after it may have been reused.
//!
//! The probe also tells whether the connection's last write found the
//! socket full ([`SocketProbe::writable`]): an HTTP stream's body takes
//! its next messages only when the socket takes writes again, so that
//! they wait in the session's newest-wins queue rather than in the HTTP
//! server's write buffer (PROTOCOL.md §5, §11.3).

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;

use crate::session::live::PathRtt;

/// The round-trip estimate of the TCP socket `fd`.
#[cfg(target_os = "linux")]
pub fn tcp_rtt(fd: RawFd) -> Option<PathRtt> {
    // SAFETY: `tcp_info` is plain integers, valid when zeroed; getsockopt
    // writes at most `len` bytes into it and reports how many it wrote.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&mut info as *mut libc::tcp_info).cast(),
            &mut len,
        )
    };
    // The kernel has no estimate before the first acknowledged segment.
    if rc != 0 || info.tcpi_rtt == 0 {
        return None;
    }
    Some(PathRtt {
        rtt: Duration::from_micros(info.tcpi_rtt.into()),
        var: Some(Duration::from_micros(info.tcpi_rttvar.into())),
    })
}

#[cfg(not(target_os = "linux"))]
pub fn tcp_rtt(_fd: RawFd) -> Option<PathRtt> {
    None
}

/// A TCP connection's socket, readable for its RTT while the connection
/// lives. Read once a second per session; cleared once, when the
/// connection's I/O is dropped ([`Probed`]).
#[derive(Debug)]
pub struct SocketProbe {
    // std Mutex: held for one getsockopt, or to clear it; never across
    // .await. Held while reading, so the descriptor cannot close meanwhile.
    fd: Mutex<Option<RawFd>>,
    /// The last write found the socket full and nothing was written since.
    blocked: AtomicBool,
    /// Notified when `blocked` clears.
    unblocked: Notify,
}

impl SocketProbe {
    pub fn new(socket: &impl AsRawFd) -> Arc<SocketProbe> {
        Arc::new(SocketProbe {
            fd: Mutex::new(Some(socket.as_raw_fd())),
            blocked: AtomicBool::new(false),
            unblocked: Notify::new(),
        })
    }

    /// The connection's current estimate; `None` once it has closed.
    pub fn rtt(&self) -> Option<PathRtt> {
        let fd = self.fd.lock().unwrap_or_else(|e| e.into_inner());
        tcp_rtt((*fd)?)
    }

    fn clear(&self) {
        *self.fd.lock().unwrap_or_else(|e| e.into_inner()) = None;
        // Nobody writes any more: let no one wait for it.
        self.write_went(false);
    }

    /// Resolves when the connection's last write did not find the socket
    /// full: at once, or when its writer next gets something written
    /// (it retries on its own, woken by the socket).
    pub async fn writable(&self) {
        loop {
            let unblocked = self.unblocked.notified();
            tokio::pin!(unblocked);
            // Registered before the check, so a clear in between wakes us.
            unblocked.as_mut().enable();
            if !self.blocked.load(Ordering::Acquire) {
                return;
            }
            unblocked.await;
        }
    }

    /// Records the outcome of a write: `blocked` when the socket took none.
    fn write_went(&self, blocked: bool) {
        if blocked {
            self.blocked.store(true, Ordering::Release);
        } else if self.blocked.load(Ordering::Relaxed) && self.blocked.swap(false, Ordering::AcqRel)
        {
            self.unblocked.notify_waiters();
        }
    }

    fn note<T>(&self, poll: Poll<T>) -> Poll<T> {
        self.write_went(poll.is_pending());
        poll
    }
}

/// Clears its probe when dropped.
struct ProbeGuard(Arc<SocketProbe>);

impl Drop for ProbeGuard {
    fn drop(&mut self) {
        self.0.clear();
    }
}

/// A connection's I/O with its probe: reads and writes pass through.
pub struct Probed<S> {
    // Declared first, so dropped first: the probe is cleared before `io`
    // closes the descriptor.
    guard: ProbeGuard,
    io: S,
}

impl<S: AsRawFd> Probed<S> {
    pub fn new(io: S) -> (Probed<S>, Arc<SocketProbe>) {
        let probe = SocketProbe::new(&io);
        let guard = ProbeGuard(probe.clone());
        (Probed { guard, io }, probe)
    }
}

impl<S> Probed<S> {
    /// The I/O without its probe, which is cleared: its new owner reads the
    /// socket itself.
    pub fn into_inner(self) -> S {
        let Probed { guard, io } = self;
        drop(guard);
        io
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Probed<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Probed<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.guard
            .0
            .note(Pin::new(&mut this.io).poll_write(cx, buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.guard
            .0
            .note(Pin::new(&mut this.io).poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    #[tokio::test]
    async fn a_probe_reads_the_kernel_rtt_until_its_connection_closes() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let (mut server, probe) = Probed::new(server);
        // A round trip of data, so the kernel has a sample.
        server.write_all(b"ping").await.unwrap();
        let mut buf = [0u8; 4];
        client.read_exact(&mut buf).await.unwrap();
        client.write_all(b"pong").await.unwrap();
        server.read_exact(&mut buf).await.unwrap();
        let rtt = probe.rtt().expect("an RTT estimate on a live connection");
        assert!(rtt.rtt > Duration::ZERO && rtt.rtt < Duration::from_secs(1));
        assert!(rtt.var.is_some());
        drop(server);
        assert_eq!(
            probe.rtt(),
            None,
            "cleared when the connection's I/O is dropped"
        );
    }

    /// A server side whose socket is full: the client does not read.
    async fn full() -> (Probed<TcpStream>, Arc<SocketProbe>, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let sock = tokio::net::TcpSocket::new_v4().unwrap();
        sock.set_recv_buffer_size(4096).unwrap();
        let client = sock.connect(listener.local_addr().unwrap()).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        socket2::SockRef::from(&server)
            .set_send_buffer_size(4096)
            .unwrap();
        let (mut server, probe) = Probed::new(server);
        probe.writable().await;
        // More than the buffers hold: the write waits.
        let big = vec![7u8; 1 << 20];
        let short = Duration::from_millis(100);
        assert!(tokio::time::timeout(short, server.write_all(&big))
            .await
            .is_err());
        (server, probe, client)
    }

    fn waiter(probe: &Arc<SocketProbe>) -> tokio::task::JoinHandle<()> {
        let probe = probe.clone();
        tokio::spawn(async move { probe.writable().await })
    }

    /// `writable` waits while the last write found the socket full, and
    /// resolves at the next write the socket takes.
    #[tokio::test]
    async fn writable_waits_for_a_full_socket_to_take_a_write() {
        let (mut server, probe, mut client) = full().await;
        let waiting = waiter(&probe);
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!waiting.is_finished(), "the socket is full");
        // The reader drains; the next write goes through.
        tokio::spawn(async move {
            let mut buf = vec![0u8; 64 * 1024];
            while client.read(&mut buf).await.is_ok_and(|n| n > 0) {}
        });
        server.write_all(b"more").await.unwrap();
        tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("woken by the write that went through")
            .unwrap();
    }

    /// Nobody waits for a connection that closed while its socket was full.
    #[tokio::test]
    async fn writable_resolves_when_the_connection_closes() {
        let (server, probe, _client) = full().await;
        let waiting = waiter(&probe);
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!waiting.is_finished(), "the socket is full");
        drop(server);
        tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("released when the connection closes")
            .unwrap();
    }
}
