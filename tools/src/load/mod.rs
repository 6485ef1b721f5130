//! `rally load s1|s2|s3`: load scenarios against a real `rally serve` child
//! process on loopback (the `rally` binary beside this one, started with
//! `rally::launch`), with the figures printed as a table and, with
//! `--json`, written to a file (BENCHMARKS.md, "Performance", documents
//! every field).
//!
//! This is runtime glue at the edge (processes, sockets, clocks, /proc), not
//! a server layer: nothing in the server depends on it.

pub mod fanout;
pub mod fleet;
pub mod floor;
pub mod node_peer;
pub mod proc;
pub mod s1;
pub mod s2;
pub mod s3;

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};
use serde::Serialize;

pub use proc::{raise_nofile, Machine};

#[derive(Debug, Args)]
pub struct LoadArgs {
    #[command(subcommand)]
    pub scenario: Scenario,
    /// Also write the figures as JSON to this file.
    #[arg(long, global = true)]
    pub json: Option<PathBuf>,
    /// The `rally` binary to start as the server (default: the one beside
    /// this executable).
    #[arg(long, global = true, env = crate::SERVER_BIN_ENV)]
    pub server_bin: Option<PathBuf>,
    /// Extra argument for `rally serve` (repeatable), e.g.
    /// `--server-arg=--runtime=current-thread`.
    #[arg(long = "server-arg", global = true, allow_hyphen_values = true)]
    pub server_args: Vec<String>,
}

#[derive(Debug, Subcommand)]
pub enum Scenario {
    /// Idle round trip: Ping/Pong over WebTransport datagrams, a
    /// WebTransport stream and WebSocket, beside raw UDP and TCP echo floors.
    S1(s1::S1Args),
    /// The raw UDP and TCP echo floors as their own process (S1 starts it,
    /// so the floors cross processes as Rally's round trips do).
    #[command(hide = true)]
    EchoServer,
    /// S2's kernel floor as its own process: the same bytes to every
    /// recipient at the tick rate from a bare loop (S2 starts it).
    #[command(hide = true)]
    FanoutFloor(fanout::FloorArgs),
    /// Broadcast fan-out: N clients in rooms at the tick rate, Rally over
    /// WebSocket and WebTransport datagrams, and a Node.js `ws` peer.
    S2(s2::S2Args),
    /// Connection scale: ramp idle sessions, measuring RSS per connection,
    /// connect rate and tick jitter.
    S3(s3::S3Args),
}

/// Where the scenarios start the server from, and with what extra flags.
#[derive(Debug, Clone)]
pub struct ServerLaunch {
    /// The `rally` server binary.
    pub bin: PathBuf,
    /// This executable, for the echo floors' process.
    pub tools: PathBuf,
    pub extra: Vec<String>,
}

pub async fn run(args: LoadArgs) -> anyhow::Result<()> {
    let nofile = raise_nofile();
    let launch = || -> anyhow::Result<ServerLaunch> {
        Ok(ServerLaunch {
            bin: crate::server_bin_or(args.server_bin.as_deref())?,
            tools: crate::tools_exe()?,
            extra: args.server_args.clone(),
        })
    };
    let report = match &args.scenario {
        // The floors' own process: no server involved.
        Scenario::EchoServer => return floor::serve_forever(),
        Scenario::FanoutFloor(a) => return fanout::serve_forever(a.clone()),
        Scenario::S1(a) => serde_json::to_value(s1::run(a, &launch()?).await?)?,
        Scenario::S2(a) => serde_json::to_value(s2::run(a, &launch()?).await?)?,
        Scenario::S3(a) => serde_json::to_value(s3::run(a, &launch()?).await?)?,
    };
    tracing::debug!(nofile, "RLIMIT_NOFILE");
    if let Some(path) = args.json {
        std::fs::write(&path, serde_json::to_string_pretty(&report)? + "\n")
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

/// Latency percentiles in microseconds.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Percentiles {
    pub p50_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
    pub samples: usize,
}

impl Percentiles {
    /// From samples in nanoseconds (sorted here).
    pub fn from_ns(samples: &mut [u64]) -> Self {
        samples.sort_unstable();
        let p = |q: f64| crate::bot::percentile(samples, q) as f64 / 1000.0;
        Percentiles {
            p50_us: p(50.0),
            p99_us: p(99.0),
            p999_us: p(99.9),
            max_us: samples.last().copied().unwrap_or(0) as f64 / 1000.0,
            samples: samples.len(),
        }
    }
}

/// Every scenario's report starts with where and when it ran.
#[derive(Debug, Clone, Serialize)]
pub struct RunInfo {
    pub scenario: &'static str,
    pub machine: Machine,
    /// /proc/loadavg (1, 5, 15 min) before and after the run: other work on
    /// the machine shows here, so compare only ratios from one run.
    pub load_before: [f64; 3],
    pub load_after: [f64; 3],
    pub command: String,
    /// RLIMIT_NOFILE (soft) after raising it; children inherit it.
    pub nofile: u64,
}

impl RunInfo {
    pub fn start(scenario: &'static str) -> Self {
        RunInfo {
            scenario,
            machine: Machine::read(),
            load_before: proc::loadavg(),
            load_after: [0.0; 3],
            command: std::env::args().collect::<Vec<_>>().join(" "),
            nofile: raise_nofile(),
        }
    }

    pub fn finish(&mut self) {
        self.load_after = proc::loadavg();
    }
}

/// Prints rows under a header with columns padded to fit.
pub fn print_table(title: &str, header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(c.len());
            }
        }
    }
    println!("\n{title}");
    let line = |cells: Vec<&str>| {
        let s: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{:>w$}", c, w = widths[i]))
            .collect();
        println!("  {}", s.join("  "));
    };
    line(header.to_vec());
    for r in rows {
        line(r.iter().map(|s| s.as_str()).collect());
    }
}

pub fn f1(v: f64) -> String {
    format!("{v:.1}")
}

pub fn f2(v: f64) -> String {
    format!("{v:.2}")
}
