//! Processes under test: start `rally serve`, the echo floors or the Node
//! peer as a child through `rally::launch` (each prints Rally's `listening`
//! line), and read a process's CPU time and RSS from /proc.

use std::path::Path;

use anyhow::Context;
use rally::launch::{Launch, ServerProcess};
use serde::Serialize;

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

/// CPU time and RSS of a child started here.
pub fn stat(p: &ServerProcess) -> ProcStat {
    proc_stat(&p.pid().to_string())
}

/// Starts `BIN serve` on ephemeral loopback ports with `args` added. The
/// launch retries a server that exits before listening: `--tcp-listen
/// 127.0.0.1:0` means "the UDP port's number", which some other socket may
/// hold on TCP (thousands of client ports are in use during a run).
pub async fn rally(bin: &Path, args: &[String]) -> anyhow::Result<ServerProcess> {
    let mut launch = Launch::rally(bin);
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
            launch.args([flag, value]);
        }
    }
    launch.args(args).env(
        "RALLY_LOG",
        std::env::var("RALLY_LOAD_SERVER_LOG").unwrap_or_else(|_| "warn".into()),
    );
    launch
        .spawn_async()
        .await
        .with_context(|| format!("starting {} serve", bin.display()))
}

/// Starts the raw echo floors (`rally-tools load echo-server`).
pub async fn echo(tools: &Path) -> anyhow::Result<ServerProcess> {
    let mut launch = Launch::program(tools);
    launch.args(["load", "echo-server"]);
    launch
        .spawn_async()
        .await
        .context("starting the echo floors")
}

/// Starts the Node.js peer (`node bench/node-peer/server.js`).
pub async fn node(script: &Path, tick_hz: u16) -> anyhow::Result<ServerProcess> {
    let mut launch = Launch::program("node");
    launch.arg(script).env("PEER_TICK_HZ", tick_hz.to_string());
    launch
        .spawn_async()
        .await
        .context("starting the Node peer (is Node.js installed?)")
}
