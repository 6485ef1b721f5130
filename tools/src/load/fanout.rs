//! The kernel's floors for S2: the same snapshot bytes to the same N
//! sockets at the tick rate from a bare loop, in its own process, so that
//! Rally's CPU per message can be read against the kernel's own.
//!
//! - `floor-tcp`: one `writev` per recipient of a WebSocket binary frame —
//!   the frame header and the snapshot's 5-byte per-recipient head, then the
//!   tick's shared body — on a non-blocking NODELAY socket, as Rally's room
//!   writes it (`transport/wire.rs`).
//! - `floor-udp`: one `sendmsg` per recipient of a datagram the size of the
//!   QUIC 1-RTT packet that carries Rally's snapshot (short header with an
//!   8-byte connection id and a 2-byte packet number, a DATAGRAM frame, the
//!   quarter stream id, the message, a 16-byte tag), unsealed.
//! - `floor-udp-aead`: the same packet sealed with AES-128-GCM under a key
//!   per recipient and header-protected (RFC 9001 §5.3, §5.4), as a QUIC
//!   stack does for each datagram; the body is copied into the packet, as
//!   it must be to be encrypted.
//!
//! One thread sends every tick to every recipient (no runtime, no task, no
//! wake-up); a second one accepts or registers recipients. The receivers
//! live in the load process and count what arrives as S2's clients do, so a
//! floor row has delivered/expected, missed and latency like the others.
//!
//! Runtime glue at the edge, like the rest of `load`: nothing in the server
//! depends on it.

use std::collections::HashMap;
use std::io::{IoSlice, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::BytesMut;
use clap::{Args, ValueEnum};
use ring::aead::{self, quic::HeaderProtectionKey, LessSafeKey, Nonce, UnboundKey};
use serde::Serialize;
use socket2::{SockAddr, Socket};
use tokio::io::AsyncReadExt;
use tokio::sync::watch;

use rally::client::now_us;
use rally::launch::{Launch, ServerProcess};
use rally::protocol::{put_snapshot_prefix, snapshot_header, SNAPSHOT_HEADER_LEN};

use super::s2::Tally;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
pub enum FloorKind {
    /// `writev` of a WebSocket frame on TCP.
    Tcp,
    /// `sendmsg` of a 1-RTT packet's worth of bytes, unsealed.
    Udp,
    /// The same, sealed with AES-128-GCM and header-protected.
    UdpAead,
}

impl FloorKind {
    pub fn label(self) -> &'static str {
        match self {
            FloorKind::Tcp => "floor-tcp",
            FloorKind::Udp => "floor-udp",
            FloorKind::UdpAead => "floor-udp-aead",
        }
    }

    fn arg(self) -> &'static str {
        match self {
            FloorKind::Tcp => "tcp",
            FloorKind::Udp => "udp",
            FloorKind::UdpAead => "udp-aead",
        }
    }
}

/// `rally-tools load fanout-floor`: the floor's own process.
#[derive(Debug, Clone, Args)]
pub struct FloorArgs {
    #[arg(long, value_enum)]
    pub kind: FloorKind,
    #[arg(long, default_value_t = 60)]
    pub tick_hz: u16,
    /// The game's payload bytes per snapshot (dots: 2 + 12 × players).
    #[arg(long)]
    pub payload: usize,
}

/// QUIC short header: flags, the destination connection id, the packet
/// number (RFC 9000 §17.3.1). quinn's connection ids are 8 bytes.
const CID_LEN: usize = 8;
const PN_LEN: usize = 2;
const SHORT_HEADER: usize = 1 + CID_LEN + PN_LEN;
/// DATAGRAM frame with a length (type 0x31, a 2-byte varint, RFC 9221 §4),
/// then the quarter stream id of a session on stream 0 (RFC 9297 §2.1).
const FRAME_HEAD: usize = 1 + 2 + 1;
const TAG_LEN: usize = 16;
/// Bytes before the snapshot message in a packet.
const MSG_AT: usize = SHORT_HEADER + FRAME_HEAD;
/// A receiving UDP socket announces itself (and how many recipients it
/// stands for) with this, then a u16.
const REGISTER: &[u8; 5] = b"floor";

/// Starts the floor process (`rally-tools load fanout-floor`).
pub async fn spawn(
    tools: &std::path::Path,
    kind: FloorKind,
    tick_hz: u16,
    payload: usize,
) -> anyhow::Result<ServerProcess> {
    let mut launch = Launch::program(tools);
    launch.args([
        "load".to_string(),
        "fanout-floor".into(),
        format!("--kind={}", kind.arg()),
        format!("--tick-hz={tick_hz}"),
        format!("--payload={payload}"),
    ]);
    launch
        .spawn_async()
        .await
        .context("starting the fan-out floor")
}

/// A recipient as the sending loop holds it.
enum Dest {
    Tcp {
        sock: TcpStream,
        /// The rest of a frame the socket took only part of.
        pending: Vec<u8>,
    },
    Udp {
        to: SockAddr,
        /// Per-recipient packet protection, as each QUIC connection has.
        keys: Option<Box<Keys>>,
        pn: u64,
    },
}

struct Keys {
    packet: LessSafeKey,
    header: HeaderProtectionKey,
    iv: [u8; 12],
}

impl Keys {
    /// Keys derived from the connection id, so the receiver can open what
    /// the floor seals (the point is the cost of sealing, not secrecy).
    fn of(cid: u64) -> Keys {
        let mut k = [0x5a; 16];
        k[..8].copy_from_slice(&cid.to_be_bytes());
        let mut h = [0xa5; 16];
        h[8..].copy_from_slice(&cid.to_be_bytes());
        // Invariant: both keys are 16 bytes, AES-128's key length.
        let packet = LessSafeKey::new(UnboundKey::new(&aead::AES_128_GCM, &k).unwrap());
        let header = HeaderProtectionKey::new(&aead::quic::AES_128, &h).unwrap();
        Keys {
            packet,
            header,
            iv: [7; 12],
        }
    }

    /// RFC 9001 §5.3: the IV XOR the packet number.
    fn nonce(&self, pn: u64) -> Nonce {
        let mut n = self.iv;
        for (b, p) in n[4..].iter_mut().zip(pn.to_be_bytes()) {
            *b ^= p;
        }
        Nonce::assume_unique_for_key(n)
    }

    /// Seals `packet[SHORT_HEADER..]` (its last TAG_LEN bytes take the tag)
    /// with the header as associated data, then protects the header.
    fn seal(&self, packet: &mut [u8], pn: u64) {
        let (head, rest) = packet.split_at_mut(SHORT_HEADER);
        let (plain, tag_at) = rest.split_at_mut(rest.len() - TAG_LEN);
        // Invariant: AES-GCM seals any length below 2^36 bytes.
        let tag = self
            .packet
            .seal_in_place_separate_tag(self.nonce(pn), aead::Aad::from(&*head), plain)
            .unwrap();
        tag_at.copy_from_slice(tag.as_ref());
        self.protect_header(packet);
    }

    /// RFC 9001 §5.4.1 (short header): the sample starts 4 bytes after the
    /// packet number's start. Its own inverse.
    fn protect_header(&self, packet: &mut [u8]) {
        let pn_at = 1 + CID_LEN;
        // Invariant: a packet has more than pn_at + 4 + 16 bytes (a message
        // is at least 17), and the sample is 16 bytes.
        let mask = self
            .header
            .new_mask(&packet[pn_at + 4..pn_at + 4 + 16])
            .unwrap();
        packet[0] ^= mask[0] & 0x1f;
        for (b, m) in packet[pn_at..pn_at + PN_LEN].iter_mut().zip(&mask[1..]) {
            *b ^= m;
        }
    }

    /// Removes header protection and opens a packet in place; the message
    /// on success.
    fn open<'a>(&self, packet: &'a mut [u8]) -> Option<&'a [u8]> {
        if packet.len() < MSG_AT + TAG_LEN {
            return None;
        }
        self.protect_header(packet);
        let pn = u16::from_be_bytes([packet[1 + CID_LEN], packet[2 + CID_LEN]]) as u64;
        let (head, rest) = packet.split_at_mut(SHORT_HEADER);
        let plain = self
            .packet
            .open_in_place(self.nonce(pn), aead::Aad::from(&*head), rest)
            .ok()?;
        plain.get(FRAME_HEAD..)
    }
}

/// The WebSocket frame header of an unmasked binary message of `len`
/// bytes (RFC 6455 §5.2).
fn ws_header(len: usize, out: &mut Vec<u8>) {
    out.push(0x82);
    match len {
        0..=125 => out.push(len as u8),
        126..=65_535 => {
            out.push(126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        }
        _ => {
            out.push(127);
            out.extend_from_slice(&(len as u64).to_be_bytes());
        }
    }
}

/// The packet's bytes before the message: short header (connection id
/// `cid`, packet number `pn`), DATAGRAM frame head, quarter stream id 0.
fn packet_head(cid: u64, pn: u64, msg_len: usize, out: &mut Vec<u8>) {
    out.push(0x40 | (PN_LEN as u8 - 1));
    out.extend_from_slice(&cid.to_be_bytes());
    out.extend_from_slice(&(pn as u16).to_be_bytes());
    out.push(0x31);
    out.extend_from_slice(&(0x4000 | (msg_len as u16 + 1)).to_be_bytes());
    out.push(0);
}

/// The floor's process: listens, prints Rally's `listening` line, then
/// sends a tick to every recipient until killed.
pub fn serve_forever(args: FloorArgs) -> anyhow::Result<()> {
    let tcp = TcpListener::bind("127.0.0.1:0")?;
    let udp = UdpSocket::bind("127.0.0.1:0")?;
    let line = rally::server::Listening {
        udp: udp.local_addr()?,
        tcp: tcp.local_addr()?,
        cert_sha256: String::new(),
    };
    // std Mutex: taken once a tick by the sender and once per new recipient
    // by the acceptor, never across a blocking call.
    let dests: Arc<Mutex<Vec<Dest>>> = Arc::default();
    let kind = args.kind;
    {
        let dests = dests.clone();
        std::thread::Builder::new()
            .name("floor-accept".into())
            .spawn(move || accept(kind, tcp, udp, &dests))?;
    }
    println!("{}", line.json());
    send_ticks(&args, &dests)
}

/// Adds recipients: TCP connections, or UDP sockets that register.
fn accept(kind: FloorKind, tcp: TcpListener, udp: UdpSocket, dests: &Mutex<Vec<Dest>>) {
    let lock = || dests.lock().unwrap_or_else(|e| e.into_inner());
    if kind == FloorKind::Tcp {
        for s in tcp.incoming().flatten() {
            if s.set_nodelay(true).is_ok() && s.set_nonblocking(true).is_ok() {
                lock().push(Dest::Tcp {
                    sock: s,
                    pending: Vec::new(),
                });
            }
        }
        return;
    }
    let mut buf = [0u8; 64];
    while let Ok((n, from)) = udp.recv_from(&mut buf) {
        if n != REGISTER.len() + 2 || &buf[..REGISTER.len()] != REGISTER {
            continue;
        }
        let count = u16::from_be_bytes([buf[5], buf[6]]);
        let mut d = lock();
        for _ in 0..count {
            let cid = d.len() as u64;
            d.push(Dest::Udp {
                to: SockAddr::from(from),
                keys: (kind == FloorKind::UdpAead).then(|| Box::new(Keys::of(cid))),
                pn: 0,
            });
        }
    }
}

fn send_ticks(args: &FloorArgs, dests: &Mutex<Vec<Dest>>) -> anyhow::Result<()> {
    // The sending socket: quinn's endpoint socket has 4 MiB buffers too
    // (BENCHMARKS.md, 50103ef).
    let udp = Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None)?;
    udp.set_send_buffer_size(4 << 20)?;
    udp.bind(&SockAddr::from(SocketAddr::from(([127, 0, 0, 1], 0))))?;
    let period = Duration::from_secs_f64(1.0 / args.tick_hz.max(1) as f64);
    let msg_len = SNAPSHOT_HEADER_LEN + rally::protocol::SNAPSHOT_PREFIX_LEN + args.payload;
    let mut body = BytesMut::new();
    let mut head = Vec::with_capacity(64);
    let mut packet = Vec::with_capacity(MSG_AT + msg_len + TAG_LEN);
    let zeros = [0u8; TAG_LEN];
    let mut next = Instant::now() + period;
    for tick in 1u32.. {
        // The tick's shared body: tick, server time, the game's bytes.
        body.clear();
        put_snapshot_prefix(&mut body, tick, now_us());
        body.resize(body.len() + args.payload, 0);
        let mut dests = dests.lock().unwrap_or_else(|e| e.into_inner());
        for (i, d) in dests.iter_mut().enumerate() {
            let ack = snapshot_header(i as u32);
            match d {
                Dest::Tcp { sock, pending } => {
                    if !pending.is_empty() {
                        // Finish the frame the socket took part of; skip
                        // this tick if it still cannot (newest-wins).
                        match sock.write(pending) {
                            Ok(n) => drop(pending.drain(..n)),
                            Err(_) => continue,
                        }
                        if !pending.is_empty() {
                            continue;
                        }
                    }
                    head.clear();
                    ws_header(msg_len, &mut head);
                    head.extend_from_slice(&ack);
                    let parts = [IoSlice::new(&head), IoSlice::new(&body)];
                    let n = sock.write_vectored(&parts).unwrap_or(0);
                    if n > 0 && n < head.len() + body.len() {
                        let mut all = head.clone();
                        all.extend_from_slice(&body);
                        pending.extend_from_slice(&all[n..]);
                    }
                }
                Dest::Udp { to, keys, pn } => {
                    *pn += 1;
                    head.clear();
                    packet_head(i as u64, *pn, msg_len, &mut head);
                    head.extend_from_slice(&ack);
                    // A full send buffer drops the packet, as quinn's
                    // non-blocking socket does.
                    let _ = match keys {
                        None => udp.send_to_vectored_with_flags(
                            &[
                                IoSlice::new(&head),
                                IoSlice::new(&body),
                                IoSlice::new(&zeros),
                            ],
                            to,
                            libc::MSG_DONTWAIT,
                        ),
                        Some(k) => {
                            packet.clear();
                            packet.extend_from_slice(&head);
                            packet.extend_from_slice(&body);
                            packet.extend_from_slice(&zeros);
                            k.seal(&mut packet, *pn);
                            udp.send_to_vectored_with_flags(
                                &[IoSlice::new(&packet)],
                                to,
                                libc::MSG_DONTWAIT,
                            )
                        }
                    };
                }
            }
        }
        drop(dests);
        // Drift-corrected: a late tick is followed at once by the next.
        let now = Instant::now();
        if next > now {
            std::thread::sleep(next - now);
        }
        next += period;
    }
    Ok(())
}

/// One S2 client's view of a floor message: `ack_seq`, then what a
/// snapshot carries after it.
fn record(t: &mut Tally, msg: &[u8]) {
    let at = SNAPSHOT_HEADER_LEN;
    if msg.len() < at + 12 {
        return;
    }
    let tick = u32::from_be_bytes([msg[at], msg[at + 1], msg[at + 2], msg[at + 3]]);
    let mut time = [0u8; 8];
    time.copy_from_slice(&msg[at + 4..at + 12]);
    t.record(tick, u64::from_be_bytes(time), msg.len());
}

/// N TCP receivers: each reads whole WebSocket frames and counts them.
pub(super) async fn tcp_receivers(
    to: SocketAddr,
    n: usize,
    measuring: Arc<AtomicBool>,
    stop: watch::Receiver<bool>,
) -> Vec<tokio::task::JoinHandle<Tally>> {
    let mut tasks = Vec::with_capacity(n);
    for _ in 0..n {
        let Ok(sock) = tokio::net::TcpStream::connect(to).await else {
            continue;
        };
        let _ = sock.set_nodelay(true);
        let (measuring, mut stop) = (measuring.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut t = Tally::default();
            let mut sock = sock;
            let mut buf = BytesMut::with_capacity(8192);
            loop {
                tokio::select! {
                    biased;
                    _ = stop.changed() => break,
                    r = sock.read_buf(&mut buf) => match r {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {}
                    }
                }
                while let Some((hl, len)) = frame_len(&buf) {
                    if buf.len() < hl + len {
                        break;
                    }
                    let frame = buf.split_to(hl + len);
                    if measuring.load(Relaxed) {
                        record(&mut t, &frame[hl..]);
                    }
                }
                if buf.capacity() < 4096 {
                    buf.reserve(8192);
                }
            }
            t
        }));
    }
    tasks
}

/// An unmasked frame's header length and payload length, if the header is
/// all there.
fn frame_len(b: &[u8]) -> Option<(usize, usize)> {
    match *b.get(1)? {
        126 => Some((4, u16::from_be_bytes([*b.get(2)?, *b.get(3)?]) as usize)),
        127 => {
            let l: [u8; 8] = b.get(2..10)?.try_into().ok()?;
            Some((10, u64::from_be_bytes(l) as usize))
        }
        l => Some((2, l as usize)),
    }
}

/// N UDP recipients on sockets of `per` each (as S2's WebTransport clients
/// share endpoints); each socket registers with the floor and reads (and
/// opens, for `sealed`) every packet, tallied per recipient. Returns one
/// task per socket and the number of recipients registered.
pub(super) async fn udp_receivers(
    to: SocketAddr,
    n: usize,
    per: usize,
    sealed: bool,
    measuring: Arc<AtomicBool>,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<(Vec<tokio::task::JoinHandle<Tally>>, usize)> {
    let mut tasks = Vec::new();
    let mut connected = 0;
    let mut left = n;
    while left > 0 {
        let count = left.min(per.max(1));
        left -= count;
        let std_sock = Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None)?;
        std_sock.set_recv_buffer_size(4 << 20)?;
        std_sock.set_nonblocking(true)?;
        std_sock.bind(&SockAddr::from(SocketAddr::from(([127, 0, 0, 1], 0))))?;
        let sock = tokio::net::UdpSocket::from_std(std_sock.into())?;
        let mut reg = REGISTER.to_vec();
        reg.extend_from_slice(&(count as u16).to_be_bytes());
        // Registered once the first packet arrives; ask again until then.
        let mut buf = vec![0u8; 65_536];
        let mut first = None;
        for _ in 0..20 {
            sock.send_to(&reg, to).await?;
            if let Ok(Ok(k)) =
                tokio::time::timeout(Duration::from_millis(250), sock.recv(&mut buf)).await
            {
                first = Some(k);
                break;
            }
        }
        if first.is_none() {
            continue;
        }
        connected += count;
        let (measuring, mut stop) = (measuring.clone(), stop.clone());
        // One task per socket: its tally is that of all its recipients.
        tasks.push(tokio::spawn(async move {
            let mut t: HashMap<u32, Tally> = HashMap::new();
            let mut keys: HashMap<u64, Keys> = HashMap::new();
            loop {
                let k = tokio::select! {
                    biased;
                    _ = stop.changed() => break,
                    r = sock.recv(&mut buf) => match r {
                        Ok(k) => k,
                        Err(_) => break,
                    }
                };
                if !measuring.load(Relaxed) || k < MSG_AT + TAG_LEN + SNAPSHOT_HEADER_LEN {
                    continue;
                }
                let packet = &mut buf[..k];
                let msg = if sealed {
                    let mut cid = [0u8; 8];
                    cid.copy_from_slice(&packet[1..1 + CID_LEN]);
                    let cid = u64::from_be_bytes(cid);
                    let key = keys.entry(cid).or_insert_with(|| Keys::of(cid));
                    match key.open(packet) {
                        Some(m) => m,
                        None => continue,
                    }
                } else {
                    &packet[MSG_AT..k - TAG_LEN]
                };
                let ack = u32::from_be_bytes([msg[1], msg[2], msg[3], msg[4]]);
                record(t.entry(ack).or_default(), msg);
            }
            t.into_values().fold(Tally::default(), Tally::merge)
        }));
    }
    Ok((tasks, connected))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_packet_opens_to_its_message_and_header_protection_hides_the_pn() {
        let keys = Keys::of(3);
        let msg = b"0123456789abcdefghijklmnop";
        let mut p = Vec::new();
        packet_head(3, 0x0102, msg.len(), &mut p);
        p.extend_from_slice(msg);
        p.extend_from_slice(&[0; TAG_LEN]);
        let plain = p.clone();
        keys.seal(&mut p, 0x0102);
        assert_eq!(p.len(), plain.len());
        assert_eq!(p[1..1 + CID_LEN], plain[1..1 + CID_LEN], "cid in the clear");
        assert_ne!(p[MSG_AT..], plain[MSG_AT..]);
        assert_eq!(Keys::of(3).open(&mut p), Some(&msg[..]));
        assert_eq!(Keys::of(4).open(&mut plain.clone()), None);
    }

    #[test]
    fn frame_lengths_follow_rfc_6455() {
        for len in [0, 125, 126, 1027, 65_535, 65_536] {
            let mut h = Vec::new();
            ws_header(len, &mut h);
            assert_eq!(frame_len(&h), Some((h.len(), len)), "{len}");
            assert_eq!(frame_len(&h[..h.len() - 1]), None, "{len}: cut header");
        }
    }
}
