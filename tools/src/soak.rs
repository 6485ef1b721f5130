//! `rally soak`: many bots on both transports with join/leave churn and
//! dropped connections that resume (often on the other transport), for a
//! set time; reports the server's memory and open file descriptors before,
//! after, and after things settle, and every error.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use rand::Rng;
use serde::Serialize;
use tokio::time::Instant;
use url::Url;

use super::{Client, ConnectOptions, ResumeState, TransportKind};
use crate::protocol::{Buttons, ServerMsg};
use crate::session::Channel;

#[derive(Debug, clap::Args)]
pub struct SoakArgs {
    /// Server to soak; without it the command starts its own `rally serve`
    /// (needed to read its memory and file descriptors).
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
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct ProcStats {
    pub rss_kib: u64,
    pub open_fds: u64,
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

struct OwnServer {
    child: Child,
    url: Url,
    dir: PathBuf,
}

impl Drop for OwnServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn start_server(bots: usize) -> anyhow::Result<OwnServer> {
    let dir = std::env::temp_dir().join(format!("rally-soak-{}", std::process::id()));
    let exe = std::env::current_exe().context("locating the rally binary")?;
    let mut child = Command::new(exe)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--tcp-listen",
            "127.0.0.1:0",
        ])
        .arg("--cert-dir")
        .arg(&dir)
        // Every bot comes from 127.0.0.1: lift the per-IP cap accordingly.
        .args(["--max-connections-per-ip", &(bots * 4 + 64).to_string()])
        .env("RALLY_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting rally serve")?;
    let mut line = String::new();
    let out = child.stdout.take().context("server stdout")?;
    BufReader::new(out).read_line(&mut line)?;
    let v: serde_json::Value = serde_json::from_str(&line).context("server listening line")?;
    let tcp = v["tcp"].as_str().context("no tcp address")?;
    Ok(OwnServer {
        child,
        url: Url::parse(&format!("http://{tcp}"))?,
        dir,
    })
}

pub async fn run(args: SoakArgs) -> anyhow::Result<SoakReport> {
    let own = match &args.url {
        Some(_) => None,
        None => Some(start_server(args.bots)?),
    };
    let url = match (&args.url, &own) {
        (Some(u), _) => u.clone(),
        (None, Some(s)) => s.url.clone(),
        (None, None) => bail!("no server"),
    };
    let pid = own.as_ref().map(|s| s.child.id());
    let before = pid.and_then(proc_stats);
    let counters = Arc::new(Counters::default());
    let samples = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let deadline = Instant::now() + Duration::from_secs(args.duration);
    let mut tasks = Vec::new();
    for i in 0..args.bots {
        let (url, counters, samples) = (url.clone(), counters.clone(), samples.clone());
        let room = format!("soak-{}", i % args.rooms.max(1));
        let transport = if i % 2 == 0 {
            TransportKind::WebTransport
        } else {
            TransportKind::WebSocket
        };
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
    // Detached players expire after the resume window (10 s), empty rooms
    // after 10 s more.
    let settled = match pid {
        Some(p) => {
            tokio::time::sleep(Duration::from_secs(22)).await;
            proc_stats(p)
        }
        None => None,
    };
    let health = match super::http_get(&url, "/health").await {
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

/// One bot: sessions of 0.5–3 s, each ending in a Leave (60%) or an abrupt
/// drop (40%; the next session resumes, half the time on the other
/// transport).
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
    let name = format!("soak-{index}");
    while Instant::now() < deadline {
        let mut opts = ConnectOptions::new(url.clone(), transport, &room, &name);
        opts.resume = resume.take();
        let resuming = opts.resume.is_some();
        let mut client = match Client::connect(opts).await {
            Ok(cl) => cl,
            Err(e) => {
                note_error(
                    c,
                    samples,
                    format!("bot {index} {transport:?} connect: {e}"),
                );
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
        let play_for = Duration::from_millis(rand::rng().random_range(500..3000));
        let end = (Instant::now() + play_for).min(deadline);
        let mut tick = tokio::time::interval(Duration::from_millis(16));
        let mut lost = false;
        while Instant::now() < end && !lost {
            tokio::select! {
                _ = tokio::time::sleep_until(end) => {}
                _ = tick.tick() => {
                    let b = Buttons(rand::rng().random_range(0..16u8));
                    if let Err(e) = client.send_input(b).await {
                        note_error(c, samples, format!("bot {index} send: {e}"));
                        lost = true;
                    }
                    if rand::rng().random_ratio(1, 20) {
                        let _ = client.ping(Channel::Unreliable).await;
                    }
                }
                r = client.recv() => match r {
                    Ok(r) => {
                        if let ServerMsg::Snapshot { .. } = r.msg {
                            c.snapshots.fetch_add(1, Relaxed);
                        }
                    }
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
            c.drops.fetch_add(1, Relaxed);
            resume = Some(client.resume_state());
            drop(client);
            if rand::rng().random_bool(0.5) {
                c.transport_switches.fetch_add(1, Relaxed);
                transport = match transport {
                    TransportKind::WebTransport => TransportKind::WebSocket,
                    TransportKind::WebSocket => TransportKind::WebTransport,
                };
            }
        } else {
            match client.leave().await {
                Ok(()) => {
                    c.leaves.fetch_add(1, Relaxed);
                }
                Err(e) => note_error(c, samples, format!("bot {index} leave: {e}")),
            }
        }
    }
}
