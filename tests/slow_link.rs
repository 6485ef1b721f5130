//! Slow links on the ordered transports (PROTOCOL.md §5, §11.3): a reader
//! that stops reading for a while and then reads again gets the newest
//! tick within a few snapshots, on WebSocket and on the HTTP stream. What
//! waits for a full socket waits in Rally's newest-wins slot, not in the
//! kernel (`--tcp-notsent-lowat`) or in a user-space write buffer.
//!
//! Each reader is an independent client on a raw socket whose receive
//! buffer is small (4 KiB asked; the kernel doubles it): what the client's
//! own kernel holds is the client's to bound, not the server's. Snapshots
//! are 1 027 bytes (a dots room of 84), 60 a second.
//!
//! Measured here after a 3 s pause, stale snapshots (all ~3 s old) before
//! the first fresh one: 90 (92 KB) on both before `TCP_NOTSENT_LOWAT`; 36
//! on the HTTP stream with it but with the body not waiting for its socket
//! (hyper's write buffer and 16 waiting snapshots); now 21 on WebSocket and
//! 23 on the HTTP stream, the same in every run (the count is set by
//! buffer sizes, not by timing).

mod common;

use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use common::{within, Server};
use futures::{SinkExt, StreamExt};
use rally::protocol::{encode_frame, ClientMsg, ServerMsg};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

/// How long the reader stops reading.
const PAUSE: Duration = Duration::from_secs(3);
/// A snapshot older than this on arrival after the pause is stale: it
/// waited through the pause. A fresh one is a few ms old, and well under a
/// second late on a loaded machine.
const STALE_US: u64 = 1_500_000;
/// The most stale snapshot bytes a resumed reader may get before a fresh
/// one: `--tcp-notsent-lowat` (16 KiB) unsent in the server's kernel, the
/// client's 8 KiB receive buffer and a frame or two waiting in Rally come
/// to ~26 KB (measured: 22–24 KB); 37 KB or more is a FIFO come back.
const MAX_STALE_BYTES: usize = 30 * 1024;

fn server() -> Server {
    Server::start(&[
        "--game",
        "synthetic",
        // 17 + 1010 = 1 027-byte snapshots.
        "--game-opt",
        "payload=1010",
        // The pause must not end the session.
        "--slow-peer-timeout",
        "20s",
    ])
}

/// A TCP connection to the server with a small receive buffer.
async fn small_socket(server: &Server) -> TcpStream {
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    sock.connect(format!("127.0.0.1:{}", server.port).parse().unwrap())
        .await
        .unwrap()
}

fn hello(room: &str) -> Bytes {
    ClientMsg::Hello {
        version: 2,
        room: room.into(),
        name: "reader".into(),
        app: Bytes::new(),
    }
    .to_bytes()
}

/// What a resumed reader got before its first fresh snapshot.
#[derive(Debug, Default)]
struct AfterPause {
    stale: usize,
    stale_bytes: usize,
    /// Age of the oldest stale one, µs.
    oldest_us: u64,
}

impl AfterPause {
    /// Takes one received message; `true` once a fresh snapshot came.
    fn take(&mut self, msg: &Bytes) -> bool {
        let Ok(ServerMsg::Snapshot(s)) = ServerMsg::decode(msg) else {
            return false;
        };
        let age = rally::client::now_us().saturating_sub(s.server_time_us);
        if age < STALE_US {
            return true;
        }
        self.stale += 1;
        self.stale_bytes += msg.len();
        self.oldest_us = self.oldest_us.max(age);
        false
    }

    fn check(&self, what: &str) {
        eprintln!("{what}: {self:?}");
        assert!(
            self.stale_bytes <= MAX_STALE_BYTES,
            "{what}: {} stale snapshots ({} bytes, the oldest {} ms) before a fresh one",
            self.stale,
            self.stale_bytes,
            self.oldest_us / 1000
        );
    }
}

#[tokio::test]
async fn a_websocket_reader_back_from_a_pause_gets_fresh_snapshots_within_a_few() {
    let server = server();
    let tcp = small_socket(&server).await;
    let url = format!("ws://127.0.0.1:{}/rally", server.port);
    let (mut ws, _) = tokio_tungstenite::client_async(url, tcp).await.unwrap();
    ws.send(Message::Binary(hello("ws"))).await.unwrap();
    // Joined and reading: snapshots arrive fresh.
    let mut fresh = 0;
    within(10, "fresh snapshots before the pause", async {
        while fresh < 30 {
            let Some(Ok(Message::Binary(m))) = ws.next().await else {
                panic!("the WebSocket ended")
            };
            if AfterPause::default().take(&m) {
                fresh += 1;
            }
        }
    })
    .await;
    tokio::time::sleep(PAUSE).await;
    let mut after = AfterPause::default();
    within(10, "a fresh snapshot after the pause", async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Binary(m))) => {
                    if after.take(&m) {
                        break;
                    }
                }
                Some(Ok(_)) => {}
                other => panic!("the WebSocket ended: {other:?}"),
            }
        }
    })
    .await;
    after.check("WebSocket");
}

/// An HTTP/1.1 request on a fresh connection; returns the head and the
/// connection, with any body bytes read past the head.
async fn request(mut tcp: TcpStream, head: &str, body: &[u8]) -> (String, TcpStream, BytesMut) {
    tcp.write_all(head.as_bytes()).await.unwrap();
    tcp.write_all(body).await.unwrap();
    let mut buf = BytesMut::new();
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            buf.advance(end + 4);
            return (head, tcp, buf);
        }
        let n = tcp.read_buf(&mut buf).await.unwrap();
        assert!(n > 0, "the connection closed inside the response head");
    }
}

/// The server's messages out of a chunked response body of §2 frames.
struct StreamBody {
    tcp: TcpStream,
    /// Raw bytes read, not yet parsed as chunks.
    raw: BytesMut,
    /// Body bytes, not yet parsed as frames.
    body: BytesMut,
}

impl StreamBody {
    /// Moves whole chunks from `raw` to `body`.
    fn dechunk(&mut self) {
        loop {
            let Some(eol) = self.raw.windows(2).position(|w| w == b"\r\n") else {
                return;
            };
            let size = std::str::from_utf8(&self.raw[..eol])
                .ok()
                .and_then(|s| usize::from_str_radix(s.split(';').next()?.trim(), 16).ok())
                .expect("a chunk size line");
            if self.raw.len() < eol + 2 + size + 2 {
                return;
            }
            self.raw.advance(eol + 2);
            self.body.extend_from_slice(&self.raw[..size]);
            self.raw.advance(size + 2);
        }
    }

    async fn next(&mut self) -> Bytes {
        loop {
            if self.body.len() >= 2 {
                let len = u16::from_be_bytes([self.body[0], self.body[1]]) as usize;
                if self.body.len() >= 2 + len {
                    self.body.advance(2);
                    return self.body.split_to(len).freeze();
                }
            }
            let n = self.tcp.read_buf(&mut self.raw).await.unwrap();
            assert!(n > 0, "the stream ended");
            self.dechunk();
        }
    }
}

#[tokio::test]
async fn an_http_stream_reader_back_from_a_pause_gets_fresh_snapshots_within_a_few() {
    let server = server();
    let host = format!("127.0.0.1:{}", server.port);
    let (head, tcp, raw) = request(
        small_socket(&server).await,
        &format!("GET /rally/http?mode=stream HTTP/1.1\r\nHost: {host}\r\n\r\n"),
        b"",
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("transfer-encoding: chunked"),
        "{head}"
    );
    let id = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("rally-session")
                .then(|| v.trim().to_string())
        })
        .expect("a Rally-Session header");
    let mut stream = StreamBody {
        tcp,
        raw,
        body: BytesMut::new(),
    };
    stream.dechunk();
    // The Hello, in a POST on a connection of its own.
    let mut post = BytesMut::new();
    encode_frame(&mut post, &hello("http"));
    let (head, _, _) = request(
        TcpStream::connect(&host).await.unwrap(),
        &format!(
            "POST /rally/http/{id}?seq=1 HTTP/1.1\r\nHost: {host}\r\n\
             Content-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
            post.len()
        ),
        &post,
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 204"), "{head}");
    let mut fresh = 0;
    within(10, "fresh snapshots before the pause", async {
        while fresh < 30 {
            if AfterPause::default().take(&stream.next().await) {
                fresh += 1;
            }
        }
    })
    .await;
    tokio::time::sleep(PAUSE).await;
    let mut after = AfterPause::default();
    within(10, "a fresh snapshot after the pause", async {
        while !after.take(&stream.next().await) {}
    })
    .await;
    after.check("HTTP stream");
}
