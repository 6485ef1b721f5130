//! S1, idle round trip: one client, sequential Ping/Pong round trips over a
//! WebTransport datagram, the WebTransport stream and WebSocket, interleaved
//! in rounds with raw UDP and TCP echo floors so that machine load drifts
//! hit every path alike.

use std::time::{Duration, Instant};

use clap::Args;
use serde::Serialize;

use rally::client::{Channel, Client, ConnectOptions, DatagramPath, TransportKind};
use rally::protocol::{ClientMsg, ServerMsg};

use super::{f1, f2, floor, print_table, proc, Percentiles, RunInfo, ServerLaunch};

#[derive(Debug, Clone, Args)]
pub struct S1Args {
    /// Round trips per path (split evenly over the rounds).
    #[arg(long, default_value_t = 20_000)]
    pub round_trips: usize,
    /// Rounds: each round runs every path once, in turn.
    #[arg(long, default_value_t = 5)]
    pub rounds: usize,
    /// Unmeasured round trips per path before the first round.
    #[arg(long, default_value_t = 500)]
    pub warmup: usize,
    /// Echo payload of the floors (17 = a Pong, the larger of Ping/Pong).
    #[arg(long, default_value_t = 17)]
    pub floor_bytes: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct PathResult {
    /// `udp_floor`, `tcp_floor`, `wt_datagram`, `wt_stream` or `ws`.
    pub name: &'static str,
    #[serde(flatten)]
    pub rtt: Percentiles,
    /// Round trips with no answer within 1 s (datagrams may be lost).
    pub lost: u64,
    /// The floor this path is compared with (Rally paths only).
    pub floor: Option<&'static str>,
    /// This path's percentile ÷ the floor's, measured in the same run.
    pub ratio_p50: Option<f64>,
    pub ratio_p99: Option<f64>,
    pub ratio_p999: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct S1Report {
    #[serde(flatten)]
    pub info: RunInfo,
    pub round_trips: usize,
    pub rounds: usize,
    pub floor_bytes: usize,
    pub server_args: Vec<String>,
    pub paths: Vec<PathResult>,
}

const PATHS: [&str; 5] = ["udp_floor", "tcp_floor", "wt_datagram", "wt_stream", "ws"];

/// Runs S1 with its client on a current-thread runtime of its own thread,
/// whatever runtime this process has: one client needs no work stealing,
/// and a multi-thread client adds its own cross-thread wake-ups to every
/// round trip (measured here: WebTransport p50 110 µs vs 35 µs, WebSocket
/// 81 vs 19 µs), which would be charged to the server.
pub async fn run(args: &S1Args, launch: &ServerLaunch) -> anyhow::Result<S1Report> {
    let (args, launch) = (args.clone(), launch.clone());
    tokio::task::spawn_blocking(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(measure(&args, &launch))
    })
    .await?
}

async fn measure(args: &S1Args, launch: &ServerLaunch) -> anyhow::Result<S1Report> {
    let mut info = RunInfo::start("s1");
    let echo = proc::echo(&launch.tools).await?;
    let (echo_udp, echo_tcp) = (echo.listening.udp, echo.listening.tcp);
    let server = proc::rally(&launch.bin, &launch.extra).await?;
    let connect = |t: TransportKind, room: &str| {
        let mut o = ConnectOptions::new(server.url(), t, room, "s1");
        // Measured: the session, not a /rooms lookup before it.
        o.locate = false;
        o.cert_hash = server.listening.cert_hash();
        o.datagrams = DatagramPath::Direct;
        // What is measured is the server: no silence watchdog (a timer per
        // receive in the load generator), as before it existed.
        o.watchdog = None;
        Client::connect(o)
    };
    let mut wt = connect(TransportKind::WebTransport, "s1-wt").await?;
    let mut ws = connect(TransportKind::WebSocket, "s1-ws").await?;

    let rounds = args.rounds.max(1);
    let per_round = args.round_trips.div_ceil(rounds);
    let mut samples: Vec<Vec<u64>> = vec![Vec::new(); PATHS.len()];
    let mut lost = [0u64; PATHS.len()];
    for round in 0..=rounds {
        // Round 0 is the warm-up; its samples are dropped.
        let n = if round == 0 { args.warmup } else { per_round };
        for (i, name) in PATHS.iter().enumerate() {
            let (s, l) = match *name {
                "udp_floor" => {
                    let (to, size) = (echo_udp, args.floor_bytes);
                    tokio::task::spawn_blocking(move || floor::udp_round_trips(to, n, size))
                        .await??
                }
                "tcp_floor" => {
                    let (to, size) = (echo_tcp, args.floor_bytes);
                    let s =
                        tokio::task::spawn_blocking(move || floor::tcp_round_trips(to, n, size))
                            .await??;
                    (s, 0)
                }
                "wt_datagram" => rally_round_trips(&mut wt, Channel::Unreliable, n).await?,
                "wt_stream" => rally_round_trips(&mut wt, Channel::Reliable, n).await?,
                _ => rally_round_trips(&mut ws, Channel::Reliable, n).await?,
            };
            if round > 0 {
                samples[i].extend(s);
                lost[i] += l;
            }
        }
    }
    drop((wt, ws));
    drop((server, echo));
    info.finish();

    let pct: Vec<Percentiles> = samples
        .iter_mut()
        .map(|s| Percentiles::from_ns(s))
        .collect();
    let paths: Vec<PathResult> = PATHS
        .iter()
        .enumerate()
        .map(|(i, &name)| {
            let floor = match name {
                "wt_datagram" | "wt_stream" => Some(0),
                "ws" => Some(1),
                _ => None,
            };
            let ratio = |f: fn(&Percentiles) -> f64| {
                floor.map(|fi| f(&pct[i]) / f(&pct[fi]).max(f64::MIN_POSITIVE))
            };
            PathResult {
                name,
                rtt: pct[i],
                lost: lost[i],
                floor: floor.map(|fi| PATHS[fi]),
                ratio_p50: ratio(|p| p.p50_us),
                ratio_p99: ratio(|p| p.p99_us),
                ratio_p999: ratio(|p| p.p999_us),
            }
        })
        .collect();

    let rows: Vec<Vec<String>> = paths
        .iter()
        .map(|p| {
            let r = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.2}x"));
            vec![
                p.name.to_string(),
                f1(p.rtt.p50_us),
                f1(p.rtt.p99_us),
                f1(p.rtt.p999_us),
                f1(p.rtt.max_us),
                p.rtt.samples.to_string(),
                p.lost.to_string(),
                p.floor.unwrap_or("-").to_string(),
                r(p.ratio_p50),
                r(p.ratio_p99),
                r(p.ratio_p999),
            ]
        })
        .collect();
    print_table(
        &format!(
            "S1 idle round trip (µs), load {} → {}",
            f2(info.load_before[0]),
            f2(info.load_after[0])
        ),
        &[
            "path", "p50", "p99", "p99.9", "max", "n", "lost", "floor", "×p50", "×p99", "×p99.9",
        ],
        &rows,
    );
    Ok(S1Report {
        info,
        round_trips: per_round * rounds,
        rounds,
        floor_bytes: args.floor_bytes,
        server_args: launch.extra.clone(),
        paths,
    })
}

/// Sequential Ping/Pong round trips on `channel`, timed with a monotonic
/// clock; the Ping carries a sequence number so a late Pong is not
/// mistaken for the current one. Snapshots in between are skipped.
async fn rally_round_trips(
    client: &mut Client,
    channel: Channel,
    n: usize,
) -> anyhow::Result<(Vec<u64>, u64)> {
    let mut out = Vec::with_capacity(n);
    let mut lost = 0;
    for seq in 0..n as u64 {
        let ping = ClientMsg::Ping {
            client_time_us: seq,
        }
        .to_bytes();
        let t0 = Instant::now();
        client.send_raw(ping, channel).await?;
        let deadline = t0 + Duration::from_secs(1);
        loop {
            match tokio::time::timeout_at(deadline.into(), client.recv()).await {
                Err(_) => {
                    lost += 1;
                    break;
                }
                Ok(r) => {
                    if let ServerMsg::Pong { client_time_us, .. } = r?.msg {
                        if client_time_us == seq {
                            out.push(t0.elapsed().as_nanos() as u64);
                            break;
                        }
                    }
                }
            }
        }
    }
    Ok((out, lost))
}
