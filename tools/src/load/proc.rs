//! Processes under test: start `rally serve` (or the Node peer) as a child,
//! wait for its `listening` line, and read its CPU time and RSS from /proc.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context};
use serde::Serialize;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// Raises the soft RLIMIT_NOFILE to the hard limit (children inherit it) and
/// returns the new soft limit. S2 and S3 hold thousands of sockets in this
/// process and in the server.
pub fn raise_nofile() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 0;
        }
        if lim.rlim_cur < lim.rlim_max {
            let want = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &want) == 0 {
                lim = want;
            }
        }
    }
    lim.rlim_cur
}

/// The host the figures came from.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    pub nproc: usize,
    pub cpu_model: String,
    pub mem_total: String,
    pub kernel: String,
}

impl Machine {
    pub fn read() -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split(':').nth(1))
            .map(|s| s.trim().to_string())
            .unwrap_or_default();
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let mem_kb: u64 = meminfo
            .lines()
            .find(|l| l.starts_with("MemTotal:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        Machine {
            nproc: std::thread::available_parallelism().map_or(0, |n| n.get()),
            cpu_model,
            mem_total: format!("{:.1} GiB", mem_kb as f64 / (1024.0 * 1024.0)),
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .unwrap_or_default()
                .trim()
                .to_string(),
        }
    }
}

pub fn loadavg() -> [f64; 3] {
    let s = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let mut it = s.split_whitespace().map(|v| v.parse().unwrap_or(0.0));
    [
        it.next().unwrap_or(0.0),
        it.next().unwrap_or(0.0),
        it.next().unwrap_or(0.0),
    ]
}

/// CPU time (user + system, all threads) and resident memory of a process.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct ProcStat {
    pub cpu_us: u64,
    pub rss_kb: u64,
}

/// `pid` may be "self".
pub fn proc_stat(pid: &str) -> ProcStat {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name, which is in parentheses and may hold
    // spaces: state is field 3, utime 14, stime 15 (proc(5)).
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let field = |i: usize| {
        f.get(i - 3)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    let cpu_us = (field(14) + field(15)) * 1_000_000 / hz;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss_kb = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    ProcStat { cpu_us, rss_kb }
}

/// A server child process; killed when dropped.
pub struct ServerProc {
    child: Child,
    pub pid: u32,
    pub tcp: SocketAddr,
    pub udp: Option<SocketAddr>,
    pub cert_hash: Option<[u8; 32]>,
    /// Development certificate directory of a `rally serve` child, removed
    /// when it is stopped.
    cert_dir: Option<std::path::PathBuf>,
}

impl ServerProc {
    /// Starts `rally serve` on ephemeral loopback ports with `args` added.
    ///
    /// `--tcp-listen 127.0.0.1:0` means "the UDP port's number", which some
    /// other socket may hold on TCP (thousands of client ports are in use
    /// during a run): the server then exits before listening, and a new
    /// attempt gets a new UDP port.
    pub async fn rally(bin: &Path, args: &[String]) -> anyhow::Result<ServerProc> {
        let mut last = None;
        for _ in 0..5 {
            match Self::rally_once(bin, args).await {
                Ok(p) => return Ok(p),
                Err(e) => {
                    tracing::warn!("rally serve did not start, trying again: {e:#}");
                    last = Some(e);
                }
            }
        }
        Err(last.expect("at least one attempt"))
    }

    async fn rally_once(bin: &Path, args: &[String]) -> anyhow::Result<ServerProc> {
        let cert_dir =
            std::env::temp_dir().join(format!("rally-load-certs-{}", std::process::id()));
        let mut cmd = Command::new(bin);
        cmd.args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--tcp-listen",
            "127.0.0.1:0",
        ])
        .arg("--cert-dir")
        .arg(&cert_dir);
        // Every load client is on 127.0.0.1, and S1 pings as fast as round
        // trips allow: lift the per-IP, total and per-session rate limits
        // (which guard against remote abuse) unless the caller sets them.
        for (flag, value) in [
            ("--max-connections-per-ip", "1000000"),
            ("--max-connections", "1000000"),
            ("--max-sessions", "1000000"),
            ("--max-msgs-per-sec", "10000000"),
            ("--msg-burst", "10000000"),
        ] {
            if !args
                .iter()
                .any(|a| a == flag || a.starts_with(&format!("{flag}=")))
            {
                cmd.args([flag, value]);
            }
        }
        cmd.args(args).env(
            "RALLY_LOG",
            std::env::var("RALLY_LOAD_SERVER_LOG").unwrap_or_else(|_| "warn".into()),
        );
        let mut p = Self::start(cmd, "rally serve").await?;
        p.cert_dir = Some(cert_dir);
        Ok(p)
    }

    /// Starts the raw echo floors (`rally load echo-server`).
    pub async fn echo(bin: &Path) -> anyhow::Result<ServerProc> {
        let mut cmd = Command::new(bin);
        cmd.args(["load", "echo-server"]);
        Self::start(cmd, "echo server").await
    }

    /// Starts the Node.js peer (`node bench/node-peer/server.js`).
    pub async fn node(script: &Path, tick_hz: u16) -> anyhow::Result<ServerProc> {
        let mut cmd = Command::new("node");
        cmd.arg(script).env("PEER_TICK_HZ", tick_hz.to_string());
        Self::start(cmd, "node peer").await
    }

    async fn start(mut cmd: Command, what: &str) -> anyhow::Result<ServerProc> {
        cmd.stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .stdin(Stdio::null())
            .kill_on_drop(true);
        let mut child = cmd.spawn().with_context(|| format!("starting {what}"))?;
        let pid = child.id().context("child has no pid")?;
        let stdout = child.stdout.take().context("piped stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .with_context(|| format!("{what} did not say it was listening"))??
            .with_context(|| format!("{what} exited before listening"))?;
        // Keep draining stdout so the child never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let v: serde_json::Value =
            serde_json::from_str(&line).with_context(|| format!("bad listening line {line:?}"))?;
        if v["event"] != "listening" {
            bail!("unexpected first line from {what}: {line}");
        }
        let tcp = v["tcp"].as_str().context("no tcp address")?.parse()?;
        let udp = v["udp"].as_str().map(|s| s.parse()).transpose()?;
        let cert_hash = match v["cert_sha256"].as_str() {
            Some(h) => {
                let mut out = [0u8; 32];
                hex::decode_to_slice(h, &mut out).context("bad cert hash")?;
                Some(out)
            }
            None => None,
        };
        Ok(ServerProc {
            child,
            pid,
            tcp,
            udp,
            cert_hash,
            cert_dir: None,
        })
    }

    pub fn url(&self) -> url::Url {
        // Both front ends share one port number; the URL names the TCP one.
        url::Url::parse(&format!("http://{}", self.tcp)).expect("socket address is a valid host")
    }

    pub fn stat(&self) -> ProcStat {
        proc_stat(&self.pid.to_string())
    }

    pub async fn stop(mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
        if let Some(dir) = self.cert_dir.take() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}
