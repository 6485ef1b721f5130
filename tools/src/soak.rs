//! `rally soak`: many bots on both transports with join/leave churn and
//! dropped connections that resume (often on the other transport), for a
//! set time; reports the server's memory and open file descriptors before,
//! after, and after things settle, and every error.
//!
//! The bots play `dots` and chat: each sends a numbered chat line a few
//! times a second, which the game sends back to the whole room, its sender
//! included. Every bot checks its own lines come back exactly once and in
//! order for as long as its player lives — across drops, resumes and
//! transport switches (PROTOCOL.md §7.2: the client replays what the game
//! did not get; §7.1: the server replays what the client did not get).

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use rally::client::{http_get, Channel, Client, ConnectOptions, ResumeState, TransportKind};
use rally::games::dots;
use rally::launch::{Launch, ServerProcess};
use rally::protocol::ServerMsg;
use rand::Rng;
use serde::Serialize;
use tokio::time::Instant;
use url::Url;

/// The transports the bots use, and switch between on a resume.
const TRANSPORTS: [TransportKind; 3] = [
    TransportKind::WebTransport,
    TransportKind::WebSocket,
    TransportKind::Http,
];

#[derive(Debug, clap::Args)]
pub struct SoakArgs {
    /// Server to soak (it must run dots); without it the command starts its
    /// own `rally serve` (needed to read its memory and file descriptors).
    #[arg(long)]
    pub url: Option<Url>,
    /// Seconds of churn.
    #[arg(long, default_value_t = 60)]
    pub duration: u64,
    /// Concurrent bots (half WebTransport, half WebSocket to start with).
    #[arg(long, default_value_t = 40)]
    pub bots: usize,
    /// Rooms the bots spread over.
    #[arg(long, default_value_t = 4)]
    pub rooms: usize,
    /// Seconds to wait after the churn before the last reading of the
    /// server's memory and descriptors: detached players expire after the
    /// resume window (10 s), empty rooms 10 s later.
    #[arg(long, default_value_t = 22)]
    pub settle: u64,
    /// The `rally` binary to start as the server (default: the one beside
    /// this executable).
    #[arg(long, env = crate::SERVER_BIN_ENV)]
    pub server_bin: Option<PathBuf>,
    /// Write the report as JSON to this file too.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

#[derive(Debug, Default)]
struct Counters {
    sessions: AtomicU64,
    fresh_joins: AtomicU64,
    resumes: AtomicU64,
    resume_refused: AtomicU64,
    transport_switches: AtomicU64,
    leaves: AtomicU64,
    drops: AtomicU64,
    snapshots: AtomicU64,
    errors: AtomicU64,
    chat_sent: AtomicU64,
    chat_echoed: AtomicU64,
    chat_duplicated: AtomicU64,
    chat_skipped: AtomicU64,
    chat_unconfirmed: AtomicU64,
    chat_in_flight_at_drop: AtomicU64,
    chat_resent: AtomicU64,
    chat_not_replayed: AtomicU64,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct ProcStats {
    pub rss_kib: u64,
    pub open_fds: u64,
}

/// The chat lines the bots sent and how they came back.
#[derive(Debug, Serialize)]
pub struct ChatReport {
    /// Reliable `App` lines sent.
    pub sent: u64,
    /// Own lines that came back, each exactly once and in order.
    pub echoed: u64,
    /// Own lines that came back again (an error).
    pub duplicated: u64,
    /// Own lines that came back after a later one was skipped (an error).
    pub skipped: u64,
    /// Lines whose echo had not come when the player's life ended: its
    /// `Leave` closed the session before the echo, or the server refused a
    /// resume (the player was gone), or the soak ended. Not an error.
    pub unconfirmed: u64,
    /// Lines without their echo when a bot dropped its connection (each
    /// bot says one line right before an abrupt drop): the resumed session
    /// must bring each back once.
    pub in_flight_at_drop: u64,
    /// Lines the game had not received at a drop, which the client sent
    /// again after the resume (`Resume` → `Welcome.client_seq`).
    pub resent: u64,
    /// Lines a resume could not replay because the client no longer had
    /// them (`Client::lost_messages`; an error).
    pub not_replayed: u64,
}

#[derive(Debug, Serialize)]
pub struct SoakReport {
    pub duration_s: u64,
    pub bots: usize,
    pub sessions: u64,
    pub fresh_joins: u64,
    pub resumes: u64,
    pub resume_refused: u64,
    pub transport_switches: u64,
    pub leaves: u64,
    pub drops: u64,
    pub snapshots: u64,
    pub chat: ChatReport,
    pub errors: u64,
    pub error_samples: Vec<String>,
    /// Server process, when the soak started it.
    pub server_before: Option<ProcStats>,
    pub server_after: Option<ProcStats>,
    /// After the resume window and room linger have passed.
    pub server_settled: Option<ProcStats>,
    pub server_health: serde_json::Value,
}

fn proc_stats(pid: u32) -> Option<ProcStats> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    let open_fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count() as u64;
    Some(ProcStats { rss_kib, open_fds })
}

async fn start_server(args: &SoakArgs) -> anyhow::Result<ServerProcess> {
    let bin = crate::server_bin_or(args.server_bin.as_deref())?;
    let mut launch = Launch::rally(&bin);
    launch
        .args(["--game", "dots"])
        // Every bot comes from 127.0.0.1: lift the per-IP cap accordingly.
        .args([
            "--max-connections-per-ip",
            &(args.bots * 4 + 64).to_string(),
        ])
        .env("RALLY_LOG", "warn");
    launch
        .spawn_async()
        .await
        .with_context(|| format!("starting {} serve", bin.display()))
}

pub async fn run(args: SoakArgs) -> anyhow::Result<SoakReport> {
    let own = match &args.url {
        Some(_) => None,
        None => Some(start_server(&args).await?),
    };
    let url = match (&args.url, &own) {
        (Some(u), _) => u.clone(),
        (None, Some(s)) => s.url(),
        (None, None) => bail!("no server"),
    };
    let pid = own.as_ref().map(ServerProcess::pid);
    let before = pid.and_then(proc_stats);
    let counters = Arc::new(Counters::default());
    let samples = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let deadline = Instant::now() + Duration::from_secs(args.duration);
    let mut tasks = Vec::new();
    for i in 0..args.bots {
        let (url, counters, samples) = (url.clone(), counters.clone(), samples.clone());
        let room = format!("soak-{}", i % args.rooms.max(1));
        let transport = TRANSPORTS[i % TRANSPORTS.len()];
        tasks.push(tokio::spawn(async move {
            churn(i, url, room, transport, deadline, &counters, &samples).await
        }));
    }
    let mut last_report = Instant::now();
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_secs(1)).await;
        if last_report.elapsed() >= Duration::from_secs(10) {
            last_report = Instant::now();
            let stats = pid.and_then(proc_stats);
            eprintln!(
                "soak: {} sessions, {} resumes, {} errors, server {:?}",
                counters.sessions.load(Relaxed),
                counters.resumes.load(Relaxed),
                counters.errors.load(Relaxed),
                stats
            );
        }
    }
    for t in tasks {
        let _ = t.await;
    }
    let after = pid.and_then(proc_stats);
    let settled = match pid {
        Some(p) => {
            tokio::time::sleep(Duration::from_secs(args.settle)).await;
            proc_stats(p)
        }
        None => None,
    };
    let health = match http_get(&url, "/health").await {
        Ok((_, body)) => serde_json::from_slice(&body).unwrap_or_default(),
        Err(e) => serde_json::json!({ "error": e.to_string() }),
    };
    let c = &counters;
    let error_samples = samples.lock().map(|s| s.clone()).unwrap_or_default();
    Ok(SoakReport {
        duration_s: args.duration,
        bots: args.bots,
        sessions: c.sessions.load(Relaxed),
        fresh_joins: c.fresh_joins.load(Relaxed),
        resumes: c.resumes.load(Relaxed),
        resume_refused: c.resume_refused.load(Relaxed),
        transport_switches: c.transport_switches.load(Relaxed),
        leaves: c.leaves.load(Relaxed),
        drops: c.drops.load(Relaxed),
        snapshots: c.snapshots.load(Relaxed),
        chat: ChatReport {
            sent: c.chat_sent.load(Relaxed),
            echoed: c.chat_echoed.load(Relaxed),
            duplicated: c.chat_duplicated.load(Relaxed),
            skipped: c.chat_skipped.load(Relaxed),
            unconfirmed: c.chat_unconfirmed.load(Relaxed),
            in_flight_at_drop: c.chat_in_flight_at_drop.load(Relaxed),
            resent: c.chat_resent.load(Relaxed),
            not_replayed: c.chat_not_replayed.load(Relaxed),
        },
        errors: c.errors.load(Relaxed),
        error_samples,
        server_before: before,
        server_after: after,
        server_settled: settled,
        server_health: health,
    })
}

fn note_error(counters: &Counters, samples: &std::sync::Mutex<Vec<String>>, what: String) {
    counters.errors.fetch_add(1, Relaxed);
    if let Ok(mut s) = samples.lock() {
        if s.len() < 20 {
            s.push(what);
        }
    }
}

/// One player's chat, from its join until it leaves or is lost: lines
/// numbered from 1, and the number of the last one that came back.
#[derive(Debug, Default)]
struct Chat {
    sent: u32,
    echoed: u32,
}

impl Chat {
    /// The line to send next.
    fn next_line(&mut self, bot: usize) -> String {
        self.sent += 1;
        format!("soak {bot} line {}", self.sent)
    }

    /// A chat `App` from the game (`id:u32` + text). Own lines must come
    /// back in order, each once.
    fn received(&mut self, me: u32, payload: &[u8], c: &Counters) -> Result<(), String> {
        let Some((id, text)) = payload.split_first_chunk::<4>() else {
            return Err(format!("a chat message of {} bytes", payload.len()));
        };
        if u32::from_be_bytes(*id) != me {
            return Ok(());
        }
        let n: u32 = std::str::from_utf8(text)
            .ok()
            .and_then(|t| t.rsplit(' ').next())
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| format!("not a soak line: {text:?}"))?;
        if n == self.echoed + 1 {
            self.echoed = n;
            c.chat_echoed.fetch_add(1, Relaxed);
            Ok(())
        } else if n <= self.echoed {
            c.chat_duplicated.fetch_add(1, Relaxed);
            Err(format!("line {n} came back again (after {})", self.echoed))
        } else {
            c.chat_skipped.fetch_add(1, Relaxed);
            self.echoed = n;
            Err(format!("line {n} came back after line {}", n - 1))
        }
    }

    /// The player is gone: lines never echoed are unconfirmed.
    fn end(&mut self, c: &Counters) {
        c.chat_unconfirmed
            .fetch_add(self.sent.saturating_sub(self.echoed) as u64, Relaxed);
        *self = Chat::default();
    }
}

/// One bot: sessions of 0.5–3 s, each ending in a Leave (60%) or an abrupt
/// drop (40%; the next session resumes, half the time on the other
/// transport). It moves every 16 ms and says a chat line about four times
/// a second.
async fn churn(
    index: usize,
    url: Url,
    room: String,
    mut transport: TransportKind,
    deadline: Instant,
    c: &Counters,
    samples: &std::sync::Mutex<Vec<String>>,
) {
    let mut resume: Option<ResumeState> = None;
    let mut chat = Chat::default();
    let name = format!("soak-{index}");
    while Instant::now() < deadline {
        let mut opts = ConnectOptions::new(url.clone(), transport, &room, &name);
        opts.resume = resume.take();
        let resuming = opts.resume.is_some();
        let sent_before = opts.resume.as_ref().map_or(0, |r| r.sent.last());
        let mut client = match Client::connect(opts).await {
            Ok(cl) => cl,
            Err(e) => {
                note_error(
                    c,
                    samples,
                    format!("bot {index} {transport:?} connect: {e}"),
                );
                // The player, if any, is lost with its session.
                chat.end(c);
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        c.sessions.fetch_add(1, Relaxed);
        match (resuming, client.resumed()) {
            (_, true) => c.resumes.fetch_add(1, Relaxed),
            (true, false) => c.resume_refused.fetch_add(1, Relaxed),
            (false, false) => c.fresh_joins.fetch_add(1, Relaxed),
        };
        if client.resumed() {
            let resent = sent_before.saturating_sub(client.welcome().client_seq);
            c.chat_resent.fetch_add(resent as u64, Relaxed);
        } else {
            chat.end(c);
        }
        let lost_lines = client.lost_messages();
        if lost_lines > 0 {
            c.chat_not_replayed.fetch_add(lost_lines as u64, Relaxed);
            note_error(
                c,
                samples,
                format!("bot {index}: {lost_lines} chat lines not replayed"),
            );
        }
        let me = client.player_id();
        let play_for = Duration::from_millis(rand::rng().random_range(500..3000));
        let end = (Instant::now() + play_for).min(deadline);
        let mut tick = tokio::time::interval(Duration::from_millis(16));
        let mut lost = false;
        while Instant::now() < end && !lost {
            tokio::select! {
                _ = tokio::time::sleep_until(end) => {}
                _ = tick.tick() => {
                    let b = rand::rng().random_range(0..16u8) & dots::ALL;
                    if let Err(e) = client.send_input(&[b]).await {
                        note_error(c, samples, format!("bot {index} send: {e}"));
                        lost = true;
                    }
                    if rand::rng().random_ratio(1, 20) {
                        let _ = client.ping(Channel::Unreliable).await;
                    }
                    if rand::rng().random_ratio(1, 15) {
                        let line = chat.next_line(index);
                        c.chat_sent.fetch_add(1, Relaxed);
                        if let Err(e) = client.send(line.as_bytes(), true).await {
                            note_error(c, samples, format!("bot {index} chat: {e}"));
                            lost = true;
                        }
                    }
                }
                r = client.recv() => match r {
                    Ok(r) => match r.msg {
                        ServerMsg::Snapshot(_) => {
                            c.snapshots.fetch_add(1, Relaxed);
                        }
                        ServerMsg::App { reliable: true, payload } => {
                            if let Err(e) = chat.received(me, &payload, c) {
                                note_error(c, samples, format!("bot {index} chat: {e}"));
                            }
                        }
                        _ => {}
                    },
                    Err(e) => {
                        note_error(c, samples, format!("bot {index} recv: {e}"));
                        lost = true;
                    }
                },
            }
        }
        let roll: u8 = rand::rng().random_range(0..10);
        if lost || roll < 4 {
            // Abrupt drop: resume next time, sometimes on the other transport.
            // A last line right before it is in flight as the connection goes.
            if !lost {
                let line = chat.next_line(index);
                c.chat_sent.fetch_add(1, Relaxed);
                let _ = client.send(line.as_bytes(), true).await;
            }
            c.drops.fetch_add(1, Relaxed);
            c.chat_in_flight_at_drop
                .fetch_add(chat.sent.saturating_sub(chat.echoed) as u64, Relaxed);
            resume = Some(client.resume_state());
            drop(client);
            if rand::rng().random_bool(0.5) {
                c.transport_switches.fetch_add(1, Relaxed);
                // The next of the three: every pair of transports meets.
                let at = TRANSPORTS.iter().position(|t| *t == transport).unwrap_or(0);
                transport = TRANSPORTS[(at + 1) % TRANSPORTS.len()];
            }
        } else {
            match client.leave().await {
                Ok(()) => {
                    c.leaves.fetch_add(1, Relaxed);
                }
                Err(e) => note_error(c, samples, format!("bot {index} leave: {e}")),
            }
            chat.end(c);
        }
    }
    chat.end(c);
}
