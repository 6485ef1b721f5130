//! The user-space link: copies IP packets between the client-side and the
//! server-side TUN devices, one task per direction, each asking its
//! [`Impairer`] what to do with every packet and holding delayed ones in a
//! [`DelayLine`]. Thin I/O around the pure decisions in `impair.rs`; it
//! also counts the connections opened through it (`packet.rs` says which
//! packets open one).

use std::collections::HashSet;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::Serialize;
use tokio::io::unix::AsyncFd;
use tokio::task::JoinHandle;

use super::impair::{DelayLine, DropReason, ImpairConfig, Impairer, Verdict};
use super::packet::{self, Opening, Proto};
use super::tun::{read_packet, write_packet, TunDevice};

/// Bytes a direction may hold in flight (delayed); beyond that packets are
/// dropped and counted as queue drops. 8 MiB is ~1 s of a 64 Mbit/s link.
const MAX_IN_FLIGHT: usize = 8 << 20;
/// Packets read from one device before releasing due ones.
const READ_BATCH: usize = 32;

/// Live counters of one direction (updated by its task, read by anyone).
#[derive(Debug, Default)]
pub struct LinkCounters {
    packets_in: AtomicU64,
    bytes_in: AtomicU64,
    dropped_loss: AtomicU64,
    dropped_queue: AtomicU64,
    packets_out: AtomicU64,
    bytes_out: AtomicU64,
    tcp_opened: AtomicU64,
    quic_opened: AtomicU64,
    /// Flows whose opening packet was seen, so a retransmitted SYN or
    /// Initial is not a second connection. std Mutex: an insert, no
    /// `.await`, and only for opening packets.
    opened: Mutex<HashSet<Opening>>,
}

/// A reading of [`LinkCounters`]. Bytes are whole IP packets (headers
/// included): what the link carried.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct LinkStats {
    /// Packets and bytes offered to the link by the sender.
    pub packets_in: u64,
    pub bytes_in: u64,
    /// Packets dropped by the loss process.
    pub dropped_loss: u64,
    /// Packets dropped because the rate limiter's queue (or the in-flight
    /// bound) was full, or the receiving device refused them.
    pub dropped_queue: u64,
    /// Packets and bytes handed to the receiver.
    pub packets_out: u64,
    pub bytes_out: u64,
    /// TCP connections opened in this direction: distinct source ports
    /// that sent a SYN without ACK (lost or not).
    pub tcp_opened: u64,
    /// QUIC connections opened in this direction: distinct source ports
    /// that sent an Initial packet.
    pub quic_opened: u64,
}

impl LinkCounters {
    pub fn read(&self) -> LinkStats {
        let r = |a: &AtomicU64| a.load(Ordering::Relaxed);
        LinkStats {
            packets_in: r(&self.packets_in),
            bytes_in: r(&self.bytes_in),
            dropped_loss: r(&self.dropped_loss),
            dropped_queue: r(&self.dropped_queue),
            packets_out: r(&self.packets_out),
            bytes_out: r(&self.bytes_out),
            tcp_opened: r(&self.tcp_opened),
            quic_opened: r(&self.quic_opened),
        }
    }

    /// Counts the connection `packet` opens, if it opens a new one.
    fn note_opening(&self, packet: &[u8]) {
        let Some(o) = packet::opening(packet) else {
            return;
        };
        let new = self
            .opened
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(o);
        if new {
            let counter = match o.proto {
                Proto::Tcp => &self.tcp_opened,
                Proto::Quic => &self.quic_opened,
            };
            counter.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl LinkStats {
    /// What happened between `earlier` and `self`.
    pub fn since(&self, earlier: &LinkStats) -> LinkStats {
        LinkStats {
            packets_in: self.packets_in - earlier.packets_in,
            bytes_in: self.bytes_in - earlier.bytes_in,
            dropped_loss: self.dropped_loss - earlier.dropped_loss,
            dropped_queue: self.dropped_queue - earlier.dropped_queue,
            packets_out: self.packets_out - earlier.packets_out,
            bytes_out: self.bytes_out - earlier.bytes_out,
            tcp_opened: self.tcp_opened - earlier.tcp_opened,
            quic_opened: self.quic_opened - earlier.quic_opened,
        }
    }
}

/// The running forwarder; its tasks stop when it is dropped.
pub struct Forwarder {
    pub client_to_server: Arc<LinkCounters>,
    pub server_to_client: Arc<LinkCounters>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Seed of the server→client direction, derived from the run's seed so the
/// two directions draw independent sequences.
pub fn s2c_seed(seed: u64) -> u64 {
    seed ^ 0x9e37_79b9_7f4a_7c15
}

impl Forwarder {
    /// Starts forwarding between the devices. Must run inside a tokio
    /// runtime. The devices' descriptors are duplicated, so the caller keeps
    /// ownership of the devices (and their lifetime).
    pub fn start(
        client: &TunDevice,
        server: &TunDevice,
        c2s: ImpairConfig,
        s2c: ImpairConfig,
        seed: u64,
    ) -> std::io::Result<Forwarder> {
        let client_fd = Arc::new(register(client.fd.try_clone()?)?);
        let server_fd = Arc::new(register(server.fd.try_clone()?)?);
        let client_to_server = Arc::new(LinkCounters::default());
        let server_to_client = Arc::new(LinkCounters::default());
        let tasks = vec![
            tokio::spawn(pump(
                "client→server",
                client_fd.clone(),
                server_fd.clone(),
                Impairer::new(c2s, seed),
                client_to_server.clone(),
            )),
            tokio::spawn(pump(
                "server→client",
                server_fd,
                client_fd,
                Impairer::new(s2c, s2c_seed(seed)),
                server_to_client.clone(),
            )),
        ];
        Ok(Forwarder {
            client_to_server,
            server_to_client,
            tasks,
        })
    }
}

fn register(fd: OwnedFd) -> std::io::Result<AsyncFd<OwnedFd>> {
    // SAFETY: an OwnedFd is open for its whole life and always returns the
    // same descriptor from as_raw_fd; the AsyncFd owns it.
    unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }
        .map_err(|e| e.into_parts().1)
}

#[tracing::instrument(skip_all, fields(direction = name))]
async fn pump(
    name: &'static str,
    src: Arc<AsyncFd<OwnedFd>>,
    dst: Arc<AsyncFd<OwnedFd>>,
    mut impairer: Impairer,
    counters: Arc<LinkCounters>,
) {
    let mut line: DelayLine<Vec<u8>> = DelayLine::new(MAX_IN_FLIGHT);
    let mut buf = vec![0u8; 65_536];
    let add = |a: &AtomicU64, n: u64| a.fetch_add(n, Ordering::Relaxed);
    loop {
        let now = Instant::now();
        while let Some(p) = line.pop_due(now) {
            // A TUN write hands the packet to the kernel's input path; it
            // fails only when the kernel is out of buffers: that is a drop.
            match write_packet(dst.get_ref().as_raw_fd(), &p) {
                Ok(_) => {
                    add(&counters.packets_out, 1);
                    add(&counters.bytes_out, p.len() as u64);
                }
                Err(_) => {
                    add(&counters.dropped_queue, 1);
                }
            }
        }
        let next = line.next_release();
        tokio::select! {
            ready = src.readable() => {
                let mut guard = match ready {
                    Ok(g) => g,
                    Err(e) => {
                        tracing::error!("TUN device unreadable: {e}");
                        return;
                    }
                };
                for _ in 0..READ_BATCH {
                    match guard.try_io(|fd| read_packet(fd.get_ref().as_raw_fd(), &mut buf)) {
                        Ok(Ok(n)) => {
                            add(&counters.packets_in, 1);
                            add(&counters.bytes_in, n as u64);
                            counters.note_opening(&buf[..n]);
                            match impairer.decide(n, Instant::now()) {
                                Verdict::Drop(DropReason::Loss) => {
                                    add(&counters.dropped_loss, 1);
                                }
                                Verdict::Drop(DropReason::Queue) => {
                                    add(&counters.dropped_queue, 1);
                                }
                                Verdict::Deliver(at) => {
                                    if !line.push(at, buf[..n].to_vec()) {
                                        add(&counters.dropped_queue, 1);
                                    }
                                }
                            }
                        }
                        Ok(Err(e)) => {
                            tracing::error!("reading the TUN device: {e}");
                            return;
                        }
                        Err(_would_block) => break,
                    }
                }
            }
            _ = sleep_until(next), if next.is_some() => {}
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    if let Some(at) = at {
        tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await;
    }
}
