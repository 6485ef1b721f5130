//! S3, connection scale: ramp idle sessions (10 000 WebSocket, 5 000
//! WebTransport by default) into rooms, one fresh server per transport, and
//! measure the server's RSS per connection, the connect rate, and how late
//! the room tick loops run while the ramp goes on.
//!
//! "Idle" sessions still join rooms (a session without `Hello` is closed
//! after 5 s), so the server runs with a long snapshot interval
//! (`--snapshot-every 60`: one snapshot a second) to keep the fan-out out of
//! the picture. Tick lateness is seen by observer clients, each alone in its
//! own room: for consecutive snapshots, Δserver_time_us − Δtick × period is
//! how much later than nominal the room's tick ran (skipped ticks included).

use std::sync::atomic::{AtomicU8, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use serde::Serialize;
use tokio::sync::watch;

use rally::client::{Client, ConnectOptions, DatagramPath, TransportKind};
use rally::protocol::ServerMsg;

use super::proc::{self, proc_stat};
use super::{f1, f2, fleet, print_table, Percentiles, RunInfo, ServerLaunch};

#[derive(Debug, Clone, Args)]
pub struct S3Args {
    /// WebSocket sessions to ramp to (0: skip).
    #[arg(long, default_value_t = 10_000)]
    pub ws: usize,
    /// WebTransport sessions to ramp to (0: skip).
    #[arg(long, default_value_t = 5_000)]
    pub wt: usize,
    /// Players per room of the idle sessions.
    #[arg(long, default_value_t = 100)]
    pub room_size: usize,
    /// Server `--snapshot-every` for this scenario (60 at 60 Hz: 1 per s).
    #[arg(long, default_value_t = 60)]
    pub snapshot_every: u16,
    /// Observer clients, each alone in a room, measuring tick lateness (each
    /// adds one sample per snapshot interval, and one room task).
    #[arg(long, default_value_t = 50)]
    pub observers: usize,
    /// Handshakes in flight at once.
    #[arg(long, default_value_t = 64)]
    pub connect_concurrency: usize,
    /// WebTransport clients sharing one UDP socket (client endpoint).
    #[arg(long, default_value_t = 25)]
    pub wt_clients_per_socket: usize,
    /// Seconds to let the server settle before and after the ramp.
    #[arg(long, default_value_t = 2.0)]
    pub settle: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct S3Row {
    pub transport: &'static str,
    pub target: usize,
    pub connected: usize,
    pub connect_failures: u64,
    pub connect_retries: u64,
    pub ramp_s: f64,
    /// Connected sessions ÷ ramp seconds.
    pub connect_rate_per_s: f64,
    /// Time to Welcome per client.
    pub connect_latency: Percentiles,
    pub rss_before_kb: u64,
    pub rss_after_kb: u64,
    /// (RSS after − RSS before) ÷ connected.
    pub rss_per_conn_kb: f64,
    /// Server CPU time over the ramp ÷ connected sessions.
    pub server_cpu_us_per_conn: f64,
    /// Tick lateness (µs) seen by the observers before the ramp.
    pub tick_late_idle: Percentiles,
    /// Tick lateness (µs) seen by the observers during the ramp.
    pub tick_late_ramp: Percentiles,
    /// Sessions still open at the end (a dropped idle session ends its task).
    pub alive_at_end: usize,
    pub loadgen_rss_kb: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct S3Report {
    #[serde(flatten)]
    pub info: RunInfo,
    pub room_size: usize,
    pub snapshot_every: u16,
    pub observers: usize,
    pub wt_clients_per_socket: usize,
    pub server_args: Vec<String>,
    pub rows: Vec<S3Row>,
}

const IDLE: u8 = 0;
const RAMP: u8 = 1;
const DONE: u8 = 2;

/// Lateness samples (ns) by phase: idle, ramp.
async fn observe(
    mut client: Client,
    phase: Arc<AtomicU8>,
    period_us: u64,
    mut stop: watch::Receiver<bool>,
) -> [Vec<u64>; 2] {
    let mut out = [Vec::new(), Vec::new()];
    let mut last: Option<(u32, u64)> = None;
    loop {
        tokio::select! {
            biased;
            _ = stop.changed() => break,
            r = client.recv() => match r {
                Ok(r) => {
                    let ServerMsg::Snapshot(s) = r.msg else { continue };
                    if let Some((tick, t)) = last {
                        if s.tick > tick {
                            let nominal = (s.tick - tick) as u64 * period_us;
                            let late = s.server_time_us.saturating_sub(t).saturating_sub(nominal);
                            let p = phase.load(Relaxed);
                            if p < DONE {
                                out[p as usize].push(late * 1000);
                            }
                        }
                    }
                    last = Some((s.tick, s.server_time_us));
                }
                Err(_) => break,
            }
        }
    }
    out
}

/// An idle session: reads (and drops) whatever the server sends.
async fn idle(mut client: Client, mut stop: watch::Receiver<bool>) -> bool {
    loop {
        tokio::select! {
            biased;
            _ = stop.changed() => return true,
            r = client.recv() => if r.is_err() { return false },
        }
    }
}

async fn one_row(
    transport: TransportKind,
    n: usize,
    args: &S3Args,
    launch: &ServerLaunch,
) -> anyhow::Result<S3Row> {
    let tick_hz = 60u64;
    let mut a = vec![
        "--game=dots".to_string(),
        format!("--max-players-per-room={}", args.room_size.max(1)),
        format!("--max-sessions={}", n + args.observers + 16),
        format!("--snapshot-every={}", args.snapshot_every),
        format!("--tick-hz={tick_hz}"),
    ];
    a.extend(launch.extra.iter().cloned());
    let server = proc::rally(&launch.bin, &a).await?;
    let url = server.url();
    let hash = server.listening.cert_hash();
    let opts = |room: String, name: String| {
        let mut o = ConnectOptions::new(url.clone(), transport, &room, &name);
        // Measured: the session, not a /rooms lookup before it.
        o.locate = false;
        o.cert_hash = hash;
        o.datagrams = DatagramPath::Direct;
        // What is measured is the server: no silence watchdog (a timer per
        // receive in the load generator), as before it existed.
        o.watchdog = None;
        o.timeout = Duration::from_secs(30);
        o
    };
    let phase = Arc::new(AtomicU8::new(IDLE));
    let (stop_tx, stop_rx) = watch::channel(false);
    let period_us = 1_000_000 / tick_hz;
    let observers = fleet::ramp(
        args.observers,
        8,
        |i| opts(format!("s3-obs-{i}"), format!("obs{i}")),
        |_, c| observe(c, phase.clone(), period_us, stop_rx.clone()),
    )
    .await;
    let settle = Duration::from_secs_f64(args.settle);
    // Observers need a few snapshot periods of idle samples.
    let idle_for = settle.max(Duration::from_secs(
        3 * args.snapshot_every as u64 / tick_hz,
    ));
    tokio::time::sleep(idle_for).await;

    let before = proc::stat(&server);
    phase.store(RAMP, Relaxed);
    let room_size = args.room_size.max(1);
    let per_socket = args.wt_clients_per_socket.max(1);
    let endpoints = match transport {
        TransportKind::WebTransport => fleet::wt_endpoints(n, per_socket, hash)?,
        TransportKind::WebSocket | TransportKind::Http => Vec::new(),
    };
    let sessions = fleet::ramp(
        n,
        args.connect_concurrency,
        |i| {
            let mut o = opts(format!("s3-{}", i / room_size), format!("c{i}"));
            o.wt_endpoint = endpoints.get(i / per_socket).cloned();
            o
        },
        |_, c| idle(c, stop_rx.clone()),
    )
    .await;
    phase.store(DONE, Relaxed);
    eprintln!(
        "{}",
        sessions.summary(&format!("s3 {}", transport.label()), n)
    );
    tokio::time::sleep(settle).await;
    let after = proc::stat(&server);
    let loadgen = proc_stat("self");
    let connected = sessions.tasks.len();
    let _ = stop_tx.send(true);
    drop(server);
    let alive = fleet::join_all(sessions.tasks)
        .await
        .into_iter()
        .filter(|&a| a)
        .count();
    let mut idle_ns = Vec::new();
    let mut ramp_ns = Vec::new();
    for [i, r] in fleet::join_all(observers.tasks).await {
        idle_ns.extend(i);
        ramp_ns.extend(r);
    }
    let mut connect_ns = sessions.connect_ns;
    let ramp_s = sessions.elapsed.as_secs_f64();
    Ok(S3Row {
        transport: transport.label(),
        target: n,
        connected,
        connect_failures: sessions.failures,
        connect_retries: sessions.retries,
        ramp_s,
        connect_rate_per_s: connected as f64 / ramp_s.max(1e-9),
        connect_latency: Percentiles::from_ns(&mut connect_ns),
        rss_before_kb: before.rss_kb,
        rss_after_kb: after.rss_kb,
        rss_per_conn_kb: after.rss_kb.saturating_sub(before.rss_kb) as f64
            / connected.max(1) as f64,
        server_cpu_us_per_conn: after.cpu_us.saturating_sub(before.cpu_us) as f64
            / connected.max(1) as f64,
        tick_late_idle: Percentiles::from_ns(&mut idle_ns),
        tick_late_ramp: Percentiles::from_ns(&mut ramp_ns),
        alive_at_end: alive,
        loadgen_rss_kb: loadgen.rss_kb,
    })
}

pub async fn run(args: &S3Args, launch: &ServerLaunch) -> anyhow::Result<S3Report> {
    let mut info = RunInfo::start("s3");
    let mut rows = Vec::new();
    for (t, n) in [
        (TransportKind::WebSocket, args.ws),
        (TransportKind::WebTransport, args.wt),
    ] {
        if n > 0 {
            rows.push(one_row(t, n, args, launch).await?);
        }
    }
    info.finish();
    let table: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.transport.to_string(),
                r.connected.to_string(),
                r.connect_failures.to_string(),
                f1(r.ramp_s),
                f1(r.connect_rate_per_s),
                f1(r.connect_latency.p99_us / 1000.0),
                f1(r.rss_before_kb as f64 / 1024.0),
                f1(r.rss_after_kb as f64 / 1024.0),
                f1(r.rss_per_conn_kb),
                f1(r.server_cpu_us_per_conn),
                f2(r.tick_late_idle.p99_us / 1000.0),
                f2(r.tick_late_ramp.p50_us / 1000.0),
                f2(r.tick_late_ramp.p99_us / 1000.0),
                f2(r.tick_late_ramp.max_us / 1000.0),
            ]
        })
        .collect();
    print_table(
        &format!(
            "S3 connection scale (rooms of {}, snapshot every {} ticks), load {} → {}",
            args.room_size,
            args.snapshot_every,
            f2(info.load_before[0]),
            f2(info.load_after[0])
        ),
        &[
            "transport",
            "conn",
            "failed",
            "ramp s",
            "conn/s",
            "conn p99 ms",
            "rss0 MB",
            "rss1 MB",
            "KB/conn",
            "cpu µs/conn",
            "late idle p99 ms",
            "late ramp p50",
            "p99",
            "max",
        ],
        &table,
    );
    Ok(S3Report {
        info,
        room_size: args.room_size,
        snapshot_every: args.snapshot_every,
        observers: args.observers,
        wt_clients_per_socket: args.wt_clients_per_socket,
        server_args: launch.extra.clone(),
        rows,
    })
}
