//! S2, broadcast fan-out: N clients in rooms of ~84 players of the real
//! `dots` game (a ~1 KB snapshot: the 17-byte header and 2 + 12 × 84 bytes
//! of dots) at the tick rate, over Rally's WebSocket, Rally's WebTransport
//! datagrams and the Node.js `ws` peer (which sends the same bytes), one
//! fresh server process per row. Per row: tick-to-receive latency (arrival wall clock −
//! `server_time_us`; same host, same clock), missed snapshots, and the
//! server's CPU time per delivered message and RSS from /proc. The floor
//! rows (`fanout`) send the same bytes to as many sockets from a bare loop:
//! the kernel's own cost of the fan-out, measured the same way.

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use serde::Serialize;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use rally::client::{now_us, Client, ConnectOptions, DatagramPath, TransportKind};
use rally::launch::ServerProcess;
use rally::protocol::ServerMsg;

use super::fanout::{self, FloorKind};
use super::proc::{self, proc_stat, ProcStat};
use super::{f1, f2, fleet, node_peer, print_table, Percentiles, RunInfo, ServerLaunch};
use crate::snapshot_len;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum S2Target {
    /// Rally over WebSocket.
    Ws,
    /// Rally over WebTransport (snapshots as datagrams).
    Wt,
    /// The Node.js `ws` peer (bench/node-peer).
    Peer,
    /// Kernel floor: `writev` of the WebSocket frame to N TCP sockets.
    FloorTcp,
    /// Kernel floor: `sendmsg` of a 1-RTT packet's worth to N recipients.
    FloorUdp,
    /// The same, each packet sealed with AES-128-GCM first.
    FloorUdpAead,
}

impl S2Target {
    fn label(self) -> &'static str {
        match self {
            S2Target::Ws => "rally-ws",
            S2Target::Wt => "rally-wt",
            S2Target::Peer => "node-ws",
            S2Target::FloorTcp => FloorKind::Tcp.label(),
            S2Target::FloorUdp => FloorKind::Udp.label(),
            S2Target::FloorUdpAead => FloorKind::UdpAead.label(),
        }
    }

    fn floor_kind(self) -> Option<FloorKind> {
        match self {
            S2Target::FloorTcp => Some(FloorKind::Tcp),
            S2Target::FloorUdp => Some(FloorKind::Udp),
            S2Target::FloorUdpAead => Some(FloorKind::UdpAead),
            _ => None,
        }
    }

    /// The floor a row's CPU per message is divided by: the TCP `writev`
    /// for what sends WebSocket frames, the sealed datagram for what sends
    /// QUIC packets.
    fn floor(self) -> S2Target {
        match self {
            S2Target::Ws | S2Target::Peer | S2Target::FloorTcp => S2Target::FloorTcp,
            S2Target::Wt | S2Target::FloorUdp | S2Target::FloorUdpAead => S2Target::FloorUdpAead,
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct S2Args {
    /// Client counts, one row per count and target.
    #[arg(long, value_delimiter = ',', default_value = "100,500,1000,2000")]
    pub clients: Vec<usize>,
    /// Servers to measure, in this order for each client count; the floors
    /// are `floor-tcp`, `floor-udp` and `floor-udp-aead`.
    #[arg(long, value_delimiter = ',', default_value = "ws,wt,peer")]
    pub targets: Vec<S2Target>,
    /// Players per room: 84 makes a 1 027-byte dots snapshot.
    #[arg(long, default_value_t = 84)]
    pub room_size: usize,
    /// The game Rally runs: `dots` (one shared snapshot per tick, the fast
    /// path) or `shooter` (one snapshot per player: the cost of interest
    /// management). The Node peer always sends one shared snapshot.
    #[arg(long, default_value = "dots", value_parser = ["dots", "shooter"])]
    pub game: String,
    #[arg(long, default_value_t = 60)]
    pub tick_hz: u16,
    /// Measured seconds per row.
    #[arg(long, default_value_t = 10.0)]
    pub seconds: f64,
    /// Seconds after the last client connected before measuring.
    #[arg(long, default_value_t = 2.0)]
    pub warmup: f64,
    /// Handshakes in flight at once while connecting.
    #[arg(long, default_value_t = 32)]
    pub connect_concurrency: usize,
    /// WebTransport clients sharing one UDP socket (client endpoint).
    #[arg(long, default_value_t = 25)]
    pub wt_clients_per_socket: usize,
    /// Directory of the Node.js peer (npm ci is run there if needed).
    #[arg(long)]
    pub peer_dir: Option<std::path::PathBuf>,
    /// Every Rally client sends an input each snapshot, and this percentage
    /// of each room's players hold a button (their dots move; the others
    /// send an idle input): the state changes as in a room where that share
    /// of the players moves. Without it the clients send nothing (no dot
    /// moves, no delta is asked for).
    #[arg(long, value_parser = clap::value_parser!(u32).range(0..=100))]
    pub moving: Option<u32>,
    /// With --moving: inputs go as `InputAck` (snapshots as deltas) or as
    /// `Input` (whole snapshots). `on,off` measures both, one row each.
    #[arg(long, value_delimiter = ',', default_value = "true", action = clap::ArgAction::Set)]
    pub deltas: Vec<bool>,
}

#[derive(Debug, Clone, Serialize)]
pub struct S2Row {
    pub target: &'static str,
    pub clients: usize,
    pub connected: usize,
    pub connect_failures: u64,
    pub connect_retries: u64,
    pub rooms: usize,
    /// The largest snapshot message received (17-byte header + payload).
    pub snapshot_bytes: usize,
    /// Tick-to-receive, over every snapshot every client got in the window.
    pub latency: Percentiles,
    pub delivered: u64,
    /// connected × seconds × tick rate.
    pub expected: u64,
    /// Gaps in the tick numbers each client saw (latest-only skips).
    pub missed: u64,
    pub window_s: f64,
    /// Server CPU (user + system, all threads) as % of one core.
    pub server_cpu_pct: f64,
    /// Server CPU time ÷ snapshots delivered, in microseconds.
    pub cpu_us_per_msg: f64,
    pub server_rss_kb: u64,
    /// This load process's CPU in the window, % of one core: the clients
    /// share the machine with the server.
    pub loadgen_cpu_pct: f64,
    /// cpu_us_per_msg ÷ the Node peer's at the same client count.
    pub cpu_ratio_to_peer: Option<f64>,
    /// The floor row this one is divided by (`floor-tcp` for WebSocket
    /// rows, `floor-udp-aead` for datagram rows).
    pub floor: &'static str,
    /// cpu_us_per_msg ÷ that floor's at the same client count, when it ran.
    pub cpu_ratio_to_floor: Option<f64>,
    /// `--moving`: the share of players that moved each tick.
    pub moving: Option<u32>,
    /// The clients asked for deltas (with `--moving`).
    pub deltas: bool,
    /// Mean bytes of a snapshot message as it came (a delta's when it came
    /// as one): what the server sent per recipient per tick.
    pub wire_bytes_per_snapshot: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct S2Report {
    #[serde(flatten)]
    pub info: RunInfo,
    pub tick_hz: u16,
    pub room_size: usize,
    pub wt_clients_per_socket: usize,
    pub server_args: Vec<String>,
    pub rows: Vec<S2Row>,
}

/// What one recipient saw in the measuring window.
#[derive(Default)]
pub(super) struct Tally {
    lat_ns: Vec<u64>,
    delivered: u64,
    missed: u64,
    last_tick: Option<u32>,
    /// Largest snapshot message seen.
    bytes: usize,
    /// Bytes of the snapshot messages as they came.
    wire: u64,
}

impl Tally {
    /// One snapshot of `bytes` (message length) received now.
    pub(super) fn record(&mut self, tick: u32, server_time_us: u64, bytes: usize) {
        let lat_us = now_us().saturating_sub(server_time_us);
        self.lat_ns.push(lat_us * 1000);
        self.delivered += 1;
        self.bytes = self.bytes.max(bytes);
        match self.last_tick {
            Some(last) if tick > last => self.missed += (tick - last - 1) as u64,
            _ => {}
        }
        self.last_tick = Some(self.last_tick.map_or(tick, |l| l.max(tick)));
    }

    /// Two recipients' tallies as one (their ticks are not compared).
    pub(super) fn merge(mut self, o: Tally) -> Tally {
        self.lat_ns.extend(o.lat_ns);
        self.delivered += o.delivered;
        self.missed += o.missed;
        self.bytes = self.bytes.max(o.bytes);
        self.wire += o.wire;
        self
    }
}

/// `moves`: `None` sends nothing; `Some(true)` an input holding a button
/// (right for a second, then left) after each snapshot, `Some(false)` an
/// idle one.
async fn receive(
    mut client: Client,
    measuring: Arc<AtomicBool>,
    mut stop: watch::Receiver<bool>,
    moves: Option<bool>,
    shooter: bool,
) -> Tally {
    let mut t = Tally::default();
    loop {
        tokio::select! {
            biased;
            _ = stop.changed() => break,
            r = client.recv() => match r {
                Ok(r) => {
                    let ServerMsg::Snapshot(s) = r.msg else { continue };
                    if let Some(m) = moves {
                        let b = match (m, (s.tick / 60) % 2) {
                            (false, _) => 0,
                            (true, 0) => rally::games::dots::RIGHT,
                            (true, _) => rally::games::dots::LEFT,
                        };
                        // The shooter's input is 7 bytes: buttons, aim, view tick.
                        let input = if shooter {
                            rally::games::shooter::Input {
                                buttons: b,
                                aim: 0,
                                view_tick: s.tick,
                            }
                            .encode()
                            .to_vec()
                        } else {
                            vec![b]
                        };
                        if let Err(e) = client.send_input(&input).await {
                            tracing::debug!("input: {e}");
                            break;
                        }
                    }
                    if !measuring.load(Relaxed) {
                        continue;
                    }
                    t.record(s.tick, s.server_time_us, snapshot_len(&s));
                    t.wire += r.wire_len as u64;
                }
                Err(e) => {
                    tracing::debug!("client ended: {e}");
                    break;
                }
            }
        }
    }
    t
}

async fn one_row(
    target: S2Target,
    n: usize,
    deltas: bool,
    args: &S2Args,
    launch: &ServerLaunch,
) -> anyhow::Result<S2Row> {
    let room_size = args.room_size.max(1);
    let measuring = Arc::new(AtomicBool::new(false));
    let (stop_tx, stop_rx) = watch::channel(false);
    let Receivers {
        server,
        tasks,
        connected,
        failures,
        retries,
    } = match target.floor_kind() {
        Some(kind) => floor_receivers(kind, n, args, launch, &measuring, &stop_rx).await?,
        None => clients(target, n, deltas, args, launch, &measuring, &stop_rx).await?,
    };
    tokio::time::sleep(Duration::from_secs_f64(args.warmup)).await;

    let (s0, me0, t0) = (proc::stat(&server), proc_stat("self"), Instant::now());
    measuring.store(true, Relaxed);
    tokio::time::sleep(Duration::from_secs_f64(args.seconds)).await;
    measuring.store(false, Relaxed);
    let (s1, me1, window) = (proc::stat(&server), proc_stat("self"), t0.elapsed());
    let _ = stop_tx.send(true);
    let tallies = fleet::join_all(tasks).await;
    drop(server);

    let mut lat: Vec<u64> = Vec::new();
    let (mut delivered, mut missed, mut bytes, mut wire) = (0, 0, 0, 0);
    for t in tallies {
        lat.extend(t.lat_ns);
        delivered += t.delivered;
        missed += t.missed;
        bytes = bytes.max(t.bytes);
        wire += t.wire;
    }
    let w = window.as_secs_f64();
    let cpu = |a: ProcStat, b: ProcStat| b.cpu_us.saturating_sub(a.cpu_us) as f64;
    Ok(S2Row {
        target: target.label(),
        clients: n,
        connected,
        connect_failures: failures,
        connect_retries: retries,
        rooms: n.div_ceil(room_size),
        snapshot_bytes: bytes,
        latency: Percentiles::from_ns(&mut lat),
        delivered,
        expected: (connected as f64 * w * args.tick_hz as f64).round() as u64,
        missed,
        window_s: w,
        server_cpu_pct: cpu(s0, s1) / (w * 1e6) * 100.0,
        cpu_us_per_msg: cpu(s0, s1) / delivered.max(1) as f64,
        server_rss_kb: s1.rss_kb,
        loadgen_cpu_pct: cpu(me0, me1) / (w * 1e6) * 100.0,
        cpu_ratio_to_peer: None,
        floor: target.floor().label(),
        cpu_ratio_to_floor: None,
        moving: args.moving,
        deltas: deltas && args.moving.is_some(),
        wire_bytes_per_snapshot: wire as f64 / delivered.max(1) as f64,
    })
}

/// A row's sender process and the tasks that tally what its recipients
/// receive.
struct Receivers {
    server: ServerProcess,
    tasks: Vec<JoinHandle<Tally>>,
    connected: usize,
    failures: u64,
    retries: u64,
}

/// Rally or the Node peer, and N clients connected to it.
async fn clients(
    target: S2Target,
    n: usize,
    deltas: bool,
    args: &S2Args,
    launch: &ServerLaunch,
    measuring: &Arc<AtomicBool>,
    stop_rx: &watch::Receiver<bool>,
) -> anyhow::Result<Receivers> {
    let room_size = args.room_size.max(1);
    let server = match target {
        S2Target::Peer => {
            let dir = args.peer_dir.clone().unwrap_or_else(node_peer::default_dir);
            let script = node_peer::prepare(&dir).await?;
            proc::node(&script, args.tick_hz).await?
        }
        _ => {
            let mut a = vec![
                format!("--game={}", args.game),
                format!("--max-players-per-room={room_size}"),
                format!("--max-sessions={}", n + 16),
                format!("--tick-hz={}", args.tick_hz),
            ];
            a.extend(launch.extra.iter().cloned());
            proc::rally(&launch.bin, &a).await?
        }
    };
    let transport = match target {
        S2Target::Wt => TransportKind::WebTransport,
        _ => TransportKind::WebSocket,
    };
    let url = server.url();
    let hash = server.listening.cert_hash();
    let per_socket = args.wt_clients_per_socket.max(1);
    let endpoints = match transport {
        TransportKind::WebTransport => fleet::wt_endpoints(n, per_socket, hash)?,
        TransportKind::WebSocket | TransportKind::Http => Vec::new(),
    };
    let fleet = fleet::ramp(
        n,
        args.connect_concurrency,
        |i| {
            let room = format!("s2-{}", i / room_size);
            let mut o = ConnectOptions::new(url.clone(), transport, &room, &format!("c{i}"));
            // Measured: the session, not a /rooms lookup before it.
            o.locate = false;
            o.cert_hash = hash;
            o.wt_endpoint = endpoints.get(i / per_socket).cloned();
            // The server is what is measured: not wtransport's driver task.
            o.datagrams = DatagramPath::Direct;
            // What is measured is the server: no silence watchdog (a timer per
            // receive in the load generator), as before it existed.
            o.watchdog = None;
            o.timeout = Duration::from_secs(30);
            o.deltas = deltas;
            o
        },
        |i, client| {
            // The first players of each room move.
            let movers = args.moving.map(|p| (p as usize * room_size).div_ceil(100));
            let moves = movers.map(|m| i % room_size < m);
            let shooter = args.game == "shooter";
            receive(client, measuring.clone(), stop_rx.clone(), moves, shooter)
        },
    )
    .await;
    eprintln!("{}", fleet.summary(&format!("s2 {}", target.label()), n));
    Ok(Receivers {
        server,
        connected: fleet.tasks.len(),
        tasks: fleet.tasks,
        failures: fleet.failures,
        retries: fleet.retries,
    })
}

/// A kernel floor's process and N recipients of its fan-out: a TCP
/// connection each, or UDP sockets shared as the WebTransport clients
/// share theirs.
async fn floor_receivers(
    kind: FloorKind,
    n: usize,
    args: &S2Args,
    launch: &ServerLaunch,
    measuring: &Arc<AtomicBool>,
    stop_rx: &watch::Receiver<bool>,
) -> anyhow::Result<Receivers> {
    let payload = 2 + 12 * args.room_size.max(1);
    let server = fanout::spawn(&launch.tools, kind, args.tick_hz, payload).await?;
    let l = &server.listening;
    let (tasks, connected) = match kind {
        FloorKind::Tcp => {
            let t = fanout::tcp_receivers(l.tcp, n, measuring.clone(), stop_rx.clone()).await;
            let c = t.len();
            (t, c)
        }
        FloorKind::Udp | FloorKind::UdpAead => {
            fanout::udp_receivers(
                l.udp,
                n,
                args.wt_clients_per_socket,
                kind == FloorKind::UdpAead,
                measuring.clone(),
                stop_rx.clone(),
            )
            .await?
        }
    };
    eprintln!("s2 {} n={n}: {connected} recipients", kind.label());
    Ok(Receivers {
        server,
        tasks,
        connected,
        failures: (n - connected) as u64,
        retries: 0,
    })
}

pub async fn run(args: &S2Args, launch: &ServerLaunch) -> anyhow::Result<S2Report> {
    let mut info = RunInfo::start("s2");
    let mut rows = Vec::new();
    for &n in &args.clients {
        let first = rows.len();
        for &target in &args.targets {
            // Deltas are Rally's: one row per setting for Rally targets
            // with --moving, one row otherwise.
            let settings: &[bool] = match (target, args.moving) {
                (S2Target::Ws | S2Target::Wt, Some(_)) => &args.deltas,
                _ => &[false],
            };
            for &deltas in settings {
                rows.push(one_row(target, n, deltas, args, launch).await?);
            }
        }
        let peer = rows[first..]
            .iter()
            .find(|r| r.target == S2Target::Peer.label())
            .map(|r| r.cpu_us_per_msg);
        if let Some(p) = peer {
            for r in &mut rows[first..] {
                r.cpu_ratio_to_peer = Some(r.cpu_us_per_msg / p.max(f64::MIN_POSITIVE));
            }
        }
        let floors: Vec<(&str, f64)> = rows[first..]
            .iter()
            .filter(|r| r.target.starts_with("floor-"))
            .map(|r| (r.target, r.cpu_us_per_msg))
            // A floor whose window showed no CPU tick divides nothing.
            .filter(|&(_, cpu)| cpu > 0.0)
            .collect();
        for r in &mut rows[first..] {
            if let Some((_, f)) = floors.iter().find(|(t, _)| *t == r.floor) {
                r.cpu_ratio_to_floor = Some(r.cpu_us_per_msg / f);
            }
        }
    }
    info.finish();
    let table: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                match (r.moving, r.deltas) {
                    (None, _) => r.target.to_string(),
                    (Some(_), true) => format!("{} delta", r.target),
                    (Some(_), false) => format!("{} full", r.target),
                },
                r.clients.to_string(),
                r.connected.to_string(),
                f2(r.latency.p50_us / 1000.0),
                f2(r.latency.p99_us / 1000.0),
                f2(r.latency.max_us / 1000.0),
                r.delivered.to_string(),
                r.expected.to_string(),
                r.missed.to_string(),
                f1(r.server_cpu_pct),
                f2(r.cpu_us_per_msg),
                r.cpu_ratio_to_peer
                    .map_or("-".into(), |v| format!("{v:.2}x")),
                r.cpu_ratio_to_floor
                    .map_or("-".into(), |v| format!("{v:.2}x {}", r.floor)),
                f1(r.server_rss_kb as f64 / 1024.0),
                f1(r.loadgen_cpu_pct),
                f1(r.wire_bytes_per_snapshot),
            ]
        })
        .collect();
    print_table(
        &format!(
            "S2 broadcast fan-out, {} Hz, rooms of {} ({} B snapshots){}, load {} → {}",
            args.tick_hz,
            args.room_size,
            19 + 12 * args.room_size,
            args.moving
                .map(|p| format!(", {p}% of players moving"))
                .unwrap_or_default(),
            f2(info.load_before[0]),
            f2(info.load_after[0])
        ),
        &[
            "target",
            "N",
            "conn",
            "p50 ms",
            "p99 ms",
            "max ms",
            "delivered",
            "expected",
            "missed",
            "srv cpu%",
            "µs/msg",
            "÷peer",
            "÷floor",
            "rss MB",
            "loadgen%",
            "B/snap",
        ],
        &table,
    );
    Ok(S2Report {
        info,
        tick_hz: args.tick_hz,
        room_size: args.room_size,
        wt_clients_per_socket: args.wt_clients_per_socket,
        server_args: launch.extra.clone(),
        rows,
    })
}
