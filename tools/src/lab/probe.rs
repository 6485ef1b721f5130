//! `rally lab-client` (hidden): the measuring side of `rally compare`. It
//! runs where the compare process puts it (inside the client namespace),
//! connects N native clients, waits for `go` on stdin, plays for the
//! duration while sampling, and prints JSON lines on stdout:
//! `connected`, `progress` (about once a second), then `result` with the
//! raw samples. The server must run `synthetic` (what `rally compare`
//! starts) or `dots`: both take the one-byte inputs the clients send.
//!
//! WebTransport and WebSocket clients are the native client
//! (`rally::client`); the HTTP streaming ones are the lab's own
//! (`streaming.rs`), one per way a page can use that transport.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncBufReadExt;
use url::Url;

use rally::client::{now_us, Channel, Client, ConnectOptions, TransportKind, INPUT_REDUNDANCY};
use rally::games::{dots, synthetic};
use rally::protocol::{ServerMsg, Welcome};

use super::stats::{AckTracker, TickCoverage, TransitJitter};
use super::streaming::{HttpClient, Mode};
use crate::snapshot_len;

/// Clients connecting at once: enough to be quick, few enough that the
/// handshakes do not queue behind each other on a small machine.
const CONNECT_PARALLELISM: usize = 4;
/// Attempts per client before it counts as not connected.
const CONNECT_ATTEMPTS: usize = 3;
/// Games whose inputs the clients' one-byte inputs are.
const GAMES: [&str; 2] = ["synthetic", "dots"];

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
pub enum ProbeTransport {
    /// WebTransport (the native client).
    Wt,
    /// WebSocket (the native client).
    Ws,
    /// HTTP streaming, `stream` mode over HTTP/1.1 (two connections).
    HttpStream,
    /// HTTP streaming, `stream` mode over HTTP/2 with TLS (one connection);
    /// needs --ca-cert.
    H2Stream,
    /// HTTP streaming, `sse` mode (text/event-stream, base64).
    Sse,
    /// HTTP streaming, `poll` mode, each poll waiting for a message.
    LongPoll,
    /// HTTP streaming, `poll` mode, a poll every --poll-interval.
    Poll,
}

#[derive(Debug, Clone, clap::Args)]
pub struct ProbeArgs {
    /// Server origin.
    #[arg(long)]
    pub url: Url,
    #[arg(long, value_enum)]
    pub transport: ProbeTransport,
    #[arg(long, default_value_t = 1)]
    pub clients: usize,
    /// Seconds to measure after `go`.
    #[arg(long, default_value_t = 5.0)]
    pub duration: f64,
    #[arg(long, default_value = "lab")]
    pub room: String,
    #[arg(long, default_value = "lab-")]
    pub name_prefix: String,
    /// SHA-256 of the server certificate (hex), so connect times do not
    /// include fetching it.
    #[arg(long)]
    pub cert_hash: Option<String>,
    /// PEM certificate to trust as the only root for h2-stream (TLS).
    #[arg(long)]
    pub ca_cert: Option<PathBuf>,
    /// Milliseconds between polls for `poll`.
    #[arg(long, default_value_t = 50)]
    pub poll_interval: u64,
    /// Ask for snapshots as deltas (inputs go as `InputAck`).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub deltas: bool,
    /// The `synthetic` game's `moving` option, if the server was given one:
    /// every snapshot's payload is checked against what the game had at
    /// its tick (PROTOCOL.md §12).
    #[arg(long)]
    pub moving: Option<u32>,
}

/// One line of the probe's stdout.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum ProbeEvent {
    Connected {
        /// Per connected client, from the first attempt to Welcome.
        connect_us: Vec<u64>,
        /// Failed attempts (retried up to three times per client).
        failed: usize,
        /// First connect error, if any.
        error: Option<String>,
    },
    Progress {
        elapsed_s: f64,
        snapshots: u64,
    },
    Result(Box<ProbeResult>),
}

/// Raw samples of all measured clients together.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct ProbeResult {
    pub rtt_us: Vec<u64>,
    pub staleness_us: Vec<u64>,
    pub jitter_us: Vec<u64>,
    /// RFC 3550 smoothed jitter at the end, one per client.
    pub rfc3550_us: Vec<f64>,
    pub snapshots: u64,
    pub distinct_ticks: u64,
    pub expected_ticks: u64,
    pub out_of_order: u64,
    pub on_datagram: u64,
    pub on_stream: u64,
    pub inputs_sent: u64,
    /// Size of the largest snapshot message seen (17 + payload).
    pub snapshot_bytes: usize,
    /// The game the server runs (`Welcome.game`).
    pub game: String,
    pub tick_hz: u16,
    pub snapshot_every: u16,
    pub errors: u64,
    /// Bytes of the snapshot messages counted (type byte to the end of the
    /// payload: no framing, no encoding).
    #[serde(default)]
    pub snapshot_message_bytes: u64,
    /// Bytes of the messages the clients sent during the measurement.
    #[serde(default)]
    pub sent_message_bytes: u64,
    /// HTTP requests made during the measurement (HTTP streaming only).
    #[serde(default)]
    pub http_requests: Option<u64>,
    /// The first client's snapshots: (µs since the measurement started,
    /// staleness µs), in arrival order.
    #[serde(default)]
    pub timeline: Vec<(u64, u64)>,
    /// Snapshots whose whole state was compared with the `synthetic`
    /// game's state at their tick, and those that differed.
    #[serde(default)]
    pub states_checked: u64,
    #[serde(default)]
    pub state_mismatches: u64,
    /// Snapshots that came as deltas and were made whole; deltas ignored.
    #[serde(default)]
    pub deltas_applied: u64,
    #[serde(default)]
    pub deltas_ignored: u64,
}

impl ProbeResult {
    fn merge(&mut self, o: ProbeResult) {
        self.rtt_us.extend(o.rtt_us);
        self.staleness_us.extend(o.staleness_us);
        self.jitter_us.extend(o.jitter_us);
        self.rfc3550_us.extend(o.rfc3550_us);
        self.snapshots += o.snapshots;
        self.distinct_ticks += o.distinct_ticks;
        self.expected_ticks += o.expected_ticks;
        self.out_of_order += o.out_of_order;
        self.on_datagram += o.on_datagram;
        self.on_stream += o.on_stream;
        self.inputs_sent += o.inputs_sent;
        self.snapshot_bytes = self.snapshot_bytes.max(o.snapshot_bytes);
        self.snapshot_message_bytes += o.snapshot_message_bytes;
        self.sent_message_bytes += o.sent_message_bytes;
        if self.timeline.is_empty() {
            self.timeline = o.timeline;
        }
        self.states_checked += o.states_checked;
        self.state_mismatches += o.state_mismatches;
        self.deltas_applied += o.deltas_applied;
        self.deltas_ignored += o.deltas_ignored;
        if o.tick_hz != 0 {
            self.tick_hz = o.tick_hz;
            self.snapshot_every = o.snapshot_every;
            self.game = o.game;
        }
        self.errors += o.errors;
    }
}

fn emit(ev: &ProbeEvent) {
    // One line per event; the parent reads them in order.
    match serde_json::to_string(ev) {
        Ok(s) => println!("{s}"),
        Err(e) => eprintln!("rally lab-client: cannot encode event: {e}"),
    }
}

/// One measured client: the native client, or the lab's HTTP streaming
/// client.
// One per measured client, never in a hot collection.
#[allow(clippy::large_enum_variant)]
enum Conn {
    Native(Client),
    Http(HttpClient),
}

impl Conn {
    fn welcome(&self) -> &Welcome {
        match self {
            Conn::Native(c) => c.welcome(),
            Conn::Http(c) => c.welcome(),
        }
    }

    /// The next message (a delta made whole), the channel it came on and
    /// its size as it came. Cancel-safe.
    async fn recv(&mut self) -> Result<(ServerMsg, Channel, usize), String> {
        match self {
            Conn::Native(c) => c
                .recv()
                .await
                .map(|r| (r.msg, r.channel, r.wire_len))
                .map_err(|e| e.to_string()),
            Conn::Http(c) => c.recv().await.map(|(m, n)| (m, Channel::Reliable, n)),
        }
    }

    /// Deltas made whole, and deltas ignored.
    fn deltas(&self) -> (u64, u64) {
        match self {
            Conn::Native(c) => c.deltas(),
            Conn::Http(c) => c.deltas(),
        }
    }

    /// Sends the next one-byte input; returns its number and the size of
    /// the `Input` message that carried it.
    async fn send_input(&mut self, input: u8) -> Result<(u32, usize), String> {
        match self {
            Conn::Native(c) => {
                let seq = c.send_input(&[input]).await.map_err(|e| e.to_string())?;
                // InputAck carries the 4-byte acknowledgement besides.
                let ack = if c.acknowledges() { 4 } else { 0 };
                Ok((seq, input_msg_len(seq, 1) + ack))
            }
            Conn::Http(c) => c.send_input(&[input]),
        }
    }
}

/// Size of the `Input` message carrying input `seq` when every input is
/// `len` bytes (PROTOCOL.md §4: 6 + count + Σ len, with the last
/// [`INPUT_REDUNDANCY`] inputs repeated).
fn input_msg_len(seq: u32, len: usize) -> usize {
    let n = (seq as usize).clamp(1, INPUT_REDUNDANCY);
    6 + n + n * len
}

/// How the probe's clients connect.
struct Connector {
    url: Url,
    transport: ProbeTransport,
    cert_hash: Option<[u8; 32]>,
    tls: Option<Arc<rustls::ClientConfig>>,
    poll_interval: Duration,
    room: String,
    requests: Arc<AtomicU64>,
    deltas: bool,
}

impl Connector {
    async fn connect(&self, name: String) -> Result<Conn, String> {
        let mode = match self.transport {
            ProbeTransport::Wt | ProbeTransport::Ws => {
                let kind = if self.transport == ProbeTransport::Wt {
                    TransportKind::WebTransport
                } else {
                    TransportKind::WebSocket
                };
                let mut opts = ConnectOptions::new(self.url.clone(), kind, &self.room, &name);
                opts.cert_hash = self.cert_hash;
                opts.deltas = self.deltas;
                // One server, and its connections are counted: no lookup.
                opts.locate = false;
                return Client::connect(opts)
                    .await
                    .map(Conn::Native)
                    .map_err(|e| e.to_string());
            }
            ProbeTransport::HttpStream => Mode::Stream,
            ProbeTransport::H2Stream => Mode::H2Stream,
            ProbeTransport::Sse => Mode::Sse,
            ProbeTransport::LongPoll => Mode::LongPoll,
            ProbeTransport::Poll => Mode::Poll(self.poll_interval),
        };
        let connect = HttpClient::connect(
            &self.url,
            mode,
            self.tls.clone(),
            &self.room,
            &name,
            self.requests.clone(),
            self.deltas,
        );
        // The native client's connect timeout.
        match tokio::time::timeout(Duration::from_secs(10), connect).await {
            Ok(Ok(c)) => Ok(Conn::Http(c)),
            Ok(Err(e)) => Err(format!("{e:#}")),
            Err(_) => Err("timed out: connecting".into()),
        }
    }
}

pub async fn run(args: ProbeArgs) -> anyhow::Result<()> {
    let cert_hash = match &args.cert_hash {
        Some(h) => {
            let mut out = [0u8; 32];
            hex::decode_to_slice(h, &mut out).map_err(|e| anyhow::anyhow!("--cert-hash: {e}"))?;
            Some(out)
        }
        None => None,
    };
    let tls = match (&args.ca_cert, args.transport) {
        (Some(ca), _) => Some(super::cert::client_config(ca, &[b"h2"])?),
        (None, ProbeTransport::H2Stream) => anyhow::bail!("h2-stream needs --ca-cert"),
        (None, _) => None,
    };
    let http = !matches!(args.transport, ProbeTransport::Wt | ProbeTransport::Ws);
    let connector = Connector {
        url: args.url.clone(),
        transport: args.transport,
        cert_hash,
        tls,
        poll_interval: Duration::from_millis(args.poll_interval.max(1)),
        room: args.room.clone(),
        requests: Arc::new(AtomicU64::new(0)),
        deltas: args.deltas,
    };
    let connector = &connector;
    let connects = futures::stream::iter(0..args.clients)
        .map(|i| {
            let name = format!("{}{i}", args.name_prefix);
            async move {
                // Retry as a game client would; the time counts every
                // attempt, the failures are reported.
                let t0 = Instant::now();
                let mut failures = Vec::new();
                for _ in 0..CONNECT_ATTEMPTS {
                    match connector.connect(name.clone()).await {
                        Ok(c) => return (Some((c, t0.elapsed().as_micros() as u64)), failures),
                        Err(e) => failures.push(e),
                    }
                }
                (None, failures)
            }
        })
        .buffer_unordered(CONNECT_PARALLELISM)
        .collect::<Vec<_>>()
        .await;
    let mut clients = Vec::new();
    let mut connect_us = Vec::new();
    let mut failed = 0;
    let mut error = None;
    for (c, failures) in connects {
        failed += failures.len();
        if let Some(e) = failures.into_iter().next() {
            error.get_or_insert(e);
        }
        if let Some((client, us)) = c {
            clients.push(client);
            connect_us.push(us);
        }
    }
    if let Some(game) = clients
        .first()
        .map(|c| c.welcome().game.clone())
        .filter(|g| !GAMES.contains(&g.as_str()))
    {
        // A game that would refuse the inputs: say so instead of measuring.
        emit(&ProbeEvent::Connected {
            connect_us: Vec::new(),
            failed,
            error: Some(format!(
                "the server runs the game {game:?}; the lab measures {}",
                GAMES.join(" or ")
            )),
        });
        return Ok(());
    }
    emit(&ProbeEvent::Connected {
        connect_us,
        failed,
        error,
    });

    let mut stdin = tokio::io::BufReader::new(tokio::io::stdin()).lines();

    // Start together when told (or at once when stdin is not a pipe).
    let _ = stdin.next_line().await;
    let duration = Duration::from_secs_f64(args.duration.max(0.0));
    let start = Instant::now();
    // Snapshots the server made before this moment waited in socket
    // buffers while the other clients connected: they are not samples.
    let start_us = now_us();
    let deadline = tokio::time::Instant::now() + duration;
    let requests0 = connector.requests.load(Ordering::Relaxed);
    let snapshots = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(i, c)| {
            let snapshots = snapshots.clone();
            tokio::spawn(measure(c, i, start_us, deadline, snapshots, args.moving))
        })
        .collect();
    let progress = {
        let snapshots = snapshots.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs(1));
            every.tick().await;
            loop {
                every.tick().await;
                emit(&ProbeEvent::Progress {
                    elapsed_s: start.elapsed().as_secs_f64(),
                    snapshots: snapshots.load(Ordering::Relaxed),
                });
            }
        })
    };
    let mut total = ProbeResult::default();
    for t in tasks {
        match t.await {
            Ok(r) => total.merge(r),
            Err(e) => {
                tracing::error!("measuring task failed: {e}");
                total.errors += 1;
            }
        }
    }
    progress.abort();
    if http {
        total.http_requests = Some(connector.requests.load(Ordering::Relaxed) - requests0);
    }
    emit(&ProbeEvent::Result(Box::new(total)));
    Ok(())
}

/// Plays one client until `deadline`, sending an input every tick and
/// sampling every snapshot the server made from `start_us` on.
#[tracing::instrument(skip_all, fields(client = index))]
async fn measure(
    mut client: Conn,
    index: usize,
    start_us: u64,
    deadline: tokio::time::Instant,
    snapshots: Arc<AtomicU64>,
    moving: Option<u32>,
) -> ProbeResult {
    let welcome = client.welcome().clone();
    let mut out = ProbeResult {
        tick_hz: welcome.tick_hz,
        snapshot_every: welcome.snapshot_every,
        game: welcome.game.clone(),
        ..Default::default()
    };
    let hz = welcome.tick_hz.max(1) as f64;
    let mut input_tick = tokio::time::interval(Duration::from_secs_f64(1.0 / hz));
    input_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut acks = AckTracker::default();
    let mut jitter = TransitJitter::default();
    let mut ticks = TickCoverage::default();
    // Walk back and forth across the arena (in dots; synthetic ignores
    // inputs, but Rally acknowledges them all the same).
    let mut buttons = dots::RIGHT;
    let mut held = 0u32;
    let mut want = BytesMut::new();
    let (applied0, ignored0) = client.deltas();
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => break,
            r = client.recv() => match r {
                Ok((msg, channel, wire_len)) => {
                    let now = now_us();
                    match msg {
                        ServerMsg::Snapshot(s) if s.server_time_us < start_us => {}
                        ServerMsg::Snapshot(s) => {
                            snapshots.fetch_add(1, Ordering::Relaxed);
                            out.snapshots += 1;
                            match channel {
                                Channel::Unreliable => out.on_datagram += 1,
                                Channel::Reliable => out.on_stream += 1,
                            }
                            // As it came: a delta's bytes, not the state's.
                            let len = wire_len;
                            out.snapshot_bytes = out.snapshot_bytes.max(snapshot_len(&s));
                            out.snapshot_message_bytes += len as u64;
                            // Every state made whole is the game's at its
                            // tick, byte for byte (PROTOCOL.md §5.1, §12).
                            if out.game == "synthetic" {
                                want.clear();
                                synthetic::payload_at(s.tick, s.payload.len(), moving, &mut want);
                                out.states_checked += 1;
                                if want[..] != s.payload[..] {
                                    out.state_mismatches += 1;
                                    tracing::error!(tick = s.tick, "state differs from the game's");
                                }
                            }
                            acks.acked(s.ack_seq, now, &mut out.rtt_us);
                            let stale = now.saturating_sub(s.server_time_us);
                            out.staleness_us.push(stale);
                            if index == 0 {
                                out.timeline.push((now.saturating_sub(start_us), stale));
                            }
                            if let Some(d) = jitter.arrival(s.server_time_us, now) {
                                out.jitter_us.push(d);
                            }
                            ticks.arrival(s.tick);
                        }
                        ServerMsg::Error { code, reason } => {
                            tracing::warn!(code, %reason, "server error");
                            out.errors += 1;
                        }
                        _ => {}
                    }
                }
                Err(e) => {
                    tracing::warn!("connection lost: {e}");
                    out.errors += 1;
                    break;
                }
            },
            _ = input_tick.tick() => {
                held += 1;
                if held as f64 > hz {
                    held = 0;
                    buttons = if buttons == dots::RIGHT { dots::LEFT } else { dots::RIGHT };
                }
                let at = now_us();
                match client.send_input(buttons).await {
                    Ok((seq, len)) => {
                        acks.sent(seq, at);
                        out.inputs_sent += 1;
                        out.sent_message_bytes += len as u64;
                    }
                    Err(e) => {
                        tracing::warn!("send failed: {e}");
                        out.errors += 1;
                        break;
                    }
                }
            }
        }
    }
    let (applied, ignored) = client.deltas();
    out.deltas_applied = applied - applied0;
    out.deltas_ignored = ignored - ignored0;
    out.rfc3550_us.push(jitter.smoothed_us());
    out.distinct_ticks = ticks.received();
    out.expected_ticks = ticks.expected(welcome.snapshot_every);
    out.out_of_order = ticks.out_of_order();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rally::protocol::{ClientMsg, Inputs};

    #[test]
    fn the_input_size_is_what_the_codec_writes() {
        for seq in 1..=6u32 {
            let n = (seq as usize).min(INPUT_REDUNDANCY);
            let inputs = vec![[1u8]; n];
            let msg = ClientMsg::Input {
                newest_seq: seq,
                inputs: Inputs::encode(&inputs),
            };
            assert_eq!(input_msg_len(seq, 1), msg.to_bytes().len(), "seq {seq}");
        }
    }
}
