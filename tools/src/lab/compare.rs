//! `rally compare`: runs one scenario over each transport and reports.
//!
//! Per transport: a fresh namespace pair and forwarder (same seed, so the
//! k-th packet of every run meets the same fate), a fresh `rally serve
//! --game synthetic` in the server namespace (the game's payload option
//! sets the snapshot size; the `h2-stream` row's server has the lab's
//! certificate, `cert.rs`), and `rally lab-client` in the client
//! namespace. Without root or namespaces it runs the same children over
//! loopback, unimpaired, and says so. Runtime glue only: the
//! arithmetic is in `stats.rs`, the decisions in `impair.rs`, the output in
//! `report.rs`.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context};
use rally::config::MAX_PLAYERS_PER_ROOM_CEILING;
use rally::launch::{Launch, Listening};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use url::Url;

use super::cert::{self, LabCert};
use super::forward::Forwarder;
use super::impair::{ImpairConfig, DEFAULT_QUEUE_LIMIT};
use super::netns::{self, LabNet, SERVER_ADDR};
use super::probe::{ProbeEvent, ProbeResult};
use super::report::{self, Host, Impairment, Report, Scenario, Timeline, TransportResult, Wire};
use super::stats::{cdf_points, timeline_bins, Dist};
use crate::SNAPSHOT_OVERHEAD;

/// Points per CDF curve in the HTML plots.
const CDF_POINTS: usize = 400;
/// Bins of the staleness timeline in the JSON report, at most...
const TIMELINE_BINS: u64 = 1000;
/// ...and none shorter than 50 ms (three snapshots at 60 Hz).
const TIMELINE_MIN_BIN_US: u64 = 50_000;
/// Port the server uses inside its namespace (it is alone there).
const LAB_PORT: u16 = 4433;
const READY_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LabTransport {
    /// WebTransport, snapshots in datagrams (the server default).
    WtDatagram,
    /// WebTransport, snapshots on the reliable stream (`--wt-snapshots stream`).
    WtStream,
    /// WebSocket over TCP.
    Ws,
    /// HTTP streaming over HTTP/1.1: a framed response body down, POSTs up
    /// on a second connection.
    HttpStream,
    /// HTTP streaming over HTTP/2 with TLS: the stream and the POSTs on one
    /// connection.
    H2Stream,
    /// Server-sent events (text/event-stream, base64 messages); POSTs up.
    Sse,
    /// Long polling: each GET waits for a message; POSTs up.
    LongPoll,
    /// Polling every --poll-interval; POSTs up.
    Poll,
}

/// Every transport, in the order the lab reports them.
pub const ALL_TRANSPORTS: [LabTransport; 8] = [
    LabTransport::WtDatagram,
    LabTransport::WtStream,
    LabTransport::Ws,
    LabTransport::HttpStream,
    LabTransport::H2Stream,
    LabTransport::Sse,
    LabTransport::LongPoll,
    LabTransport::Poll,
];

impl LabTransport {
    pub fn label(self) -> &'static str {
        match self {
            LabTransport::WtDatagram => "wt-datagram",
            LabTransport::WtStream => "wt-stream",
            LabTransport::Ws => "ws",
            LabTransport::HttpStream => "http-stream",
            LabTransport::H2Stream => "h2-stream",
            LabTransport::Sse => "sse",
            LabTransport::LongPoll => "long-poll",
            LabTransport::Poll => "poll",
        }
    }

    /// The lab client's `--transport` for this row.
    fn probe(self) -> &'static str {
        match self {
            LabTransport::WtDatagram | LabTransport::WtStream => "wt",
            other => other.label(),
        }
    }
}

#[derive(Debug, Clone, clap::Args)]
pub struct CompareArgs {
    /// Transports to compare, in order.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "wt-datagram,wt-stream,ws,http-stream,h2-stream,sse,long-poll,poll"
    )]
    pub transports: Vec<LabTransport>,
    /// Measured clients per transport.
    #[arg(long, default_value_t = 4)]
    pub clients: usize,
    /// Seconds of measurement per transport.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Server tick rate (one snapshot per tick).
    #[arg(long, default_value_t = 60,
          value_parser = clap::value_parser!(u16).range(1..=240))]
    pub tick_hz: u16,
    /// Snapshot size in bytes (at least 21). The server runs the
    /// `synthetic` game with a payload of this minus the 17-byte snapshot
    /// header. Without it, the size a dots room of --clients players would
    /// send (19 + 12 × clients).
    #[arg(long)]
    pub snapshot_bytes: Option<usize>,
    /// Snapshots as deltas against each client's acknowledged state
    /// (`on`), whole (`off`), or both (`on,off`: every transport is
    /// measured once each way, in the same run).
    #[arg(long, value_enum, value_delimiter = ',', default_value = "on")]
    pub delta: Vec<DeltaMode>,
    /// The `synthetic` game's `moving=P` option: P percent of the state's
    /// 12-byte records change each tick, like a room where P percent of the
    /// players move. Without it every byte changes every tick (deltas never
    /// pay). Either way every snapshot is checked against the game's state
    /// at its tick.
    #[arg(long, value_parser = clap::value_parser!(u32).range(0..=100))]
    pub moving: Option<u32>,
    /// Packet loss in percent, each direction.
    #[arg(long, default_value_t = 0.0)]
    pub loss: f64,
    /// Added one-way delay in milliseconds, each direction.
    #[arg(long, default_value_t = 0.0)]
    pub delay: f64,
    /// Delay variation in milliseconds: each packet gets delay ± U(0, jitter);
    /// reorders packets closer together than that.
    #[arg(long, default_value_t = 0.0)]
    pub jitter: f64,
    /// Percent of packets that skip the delay (explicit reordering).
    #[arg(long, default_value_t = 0.0)]
    pub reorder: f64,
    /// Link rate in kbit/s, each direction (serialization delay by size,
    /// drop-tail beyond 200 ms of queue).
    #[arg(long)]
    pub rate: Option<u64>,
    /// Seed of the impairment RNGs.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Milliseconds between two polls of the `poll` row (one at a time: a
    /// poll due while one is out goes when that one answers).
    #[arg(long, default_value_t = 50,
          value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub poll_interval: u64,
    /// Write the JSON report here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Write the HTML report here.
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// Measure an already running server at this origin instead of starting
    /// one (unimpaired; no server CPU or byte counts). Its --wt-snapshots
    /// setting decides the WebTransport carriage for both wt-* rows. It
    /// must run dots or synthetic (the clients send one-byte inputs).
    #[arg(long)]
    pub url: Option<Url>,
    /// The `rally` binary to start as the server (default: the one beside
    /// this executable).
    #[arg(long, env = crate::SERVER_BIN_ENV)]
    pub server_bin: Option<PathBuf>,
}

/// `--delta`: whether the clients ask for deltas.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DeltaMode {
    On,
    Off,
}

impl CompareArgs {
    fn impair_config(&self) -> anyhow::Result<ImpairConfig> {
        let pct = |name: &str, v: f64| {
            if (0.0..=100.0).contains(&v) {
                Ok(v / 100.0)
            } else {
                Err(anyhow!("--{name} must be between 0 and 100"))
            }
        };
        let ms = |name: &str, v: f64| {
            if v >= 0.0 && v.is_finite() {
                Ok(Duration::from_secs_f64(v / 1000.0))
            } else {
                Err(anyhow!("--{name} must be a non-negative number of ms"))
            }
        };
        Ok(ImpairConfig {
            loss: pct("loss", self.loss)?,
            delay: ms("delay", self.delay)?,
            jitter: ms("jitter", self.jitter)?,
            reorder: pct("reorder", self.reorder)?,
            rate_bps: self.rate.map(|k| k * 1000),
            queue_limit: DEFAULT_QUEUE_LIMIT,
        })
    }
}

/// The `synthetic` game's payload bounds (PROTOCOL.md §12; the game clamps
/// to these).
pub const MIN_PAYLOAD: usize = 4;
pub const MAX_PAYLOAD: usize = u16::MAX as usize - 32;

/// The `synthetic` payload for a snapshot of `bytes` bytes; without a size,
/// what a dots room of the measured clients would send (`2 + 12 × clients`),
/// as the lab's snapshots were before the game API.
pub fn payload_for(bytes: Option<usize>, clients: usize) -> usize {
    match bytes {
        Some(b) => b.saturating_sub(SNAPSHOT_OVERHEAD),
        None => 2 + 12 * clients,
    }
    .clamp(MIN_PAYLOAD, MAX_PAYLOAD)
}

enum Network {
    Namespaces,
    Loopback(String),
    External(Url),
}

/// Runs the comparison; Ctrl-C or SIGTERM stops it and cleans up (the
/// run's future is dropped: children are killed, namespaces deleted).
pub async fn run(args: CompareArgs) -> anyhow::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        r = run_inner(args) => r,
        _ = tokio::signal::ctrl_c() => {
            eprintln!("\nrally compare: interrupted, cleaning up");
            bail!("interrupted")
        }
        _ = term.recv() => {
            eprintln!("\nrally compare: terminated, cleaning up");
            bail!("terminated")
        }
    }
}

async fn run_inner(args: CompareArgs) -> anyhow::Result<()> {
    if args.clients == 0 {
        bail!("--clients must be at least 1");
    }
    if args.transports.is_empty() {
        bail!("--transports is empty");
    }
    let impair = args.impair_config()?;
    let network = match &args.url {
        Some(u) => Network::External(u.clone()),
        None => match netns::check_support() {
            Ok(()) => Network::Namespaces,
            Err(why) => Network::Loopback(why),
        },
    };
    let impaired = matches!(network, Network::Namespaces);
    let (net_name, net_note) = match &network {
        Network::Namespaces => (
            "namespaces",
            format!(
                "server at {SERVER_ADDR} and clients at {} in two network namespaces joined by TUN devices through the lab's user-space forwarder",
                netns::CLIENT_ADDR
            ),
        ),
        Network::Loopback(why) => ("loopback", format!("{why}; ran unimpaired over loopback")),
        Network::External(u) => (
            "external",
            format!("server at {u} (not started by the lab); unimpaired"),
        ),
    };
    match &network {
        Network::Loopback(why) => {
            eprintln!("rally compare: cannot build the impaired lab network: {why}.");
            eprintln!("rally compare: running UNIMPAIRED over loopback instead.");
        }
        Network::External(u) => {
            eprintln!("rally compare: measuring {u} as it is (no impairment, no server CPU or byte counts).");
        }
        Network::Namespaces => {}
    }
    if args.clients > MAX_PLAYERS_PER_ROOM_CEILING {
        bail!("--clients is at most {MAX_PLAYERS_PER_ROOM_CEILING} (one room)");
    }
    let payload = payload_for(args.snapshot_bytes, args.clients);
    let server_bin = match &network {
        Network::External(_) => PathBuf::new(),
        _ => crate::server_bin_or(args.server_bin.as_deref())?,
    };
    let tools = crate::tools_exe()?;
    let work = TempDir::new()?;
    let h2 = args.transports.contains(&LabTransport::H2Stream);
    if h2 && matches!(network, Network::External(_)) {
        bail!("h2-stream needs the lab's own server (it trusts only the certificate the lab makes); leave it out with --url");
    }
    // One certificate for the run, valid for wherever the lab's server
    // listens (the lab address, or loopback without namespaces).
    let lab_cert = if h2 {
        Some(cert::generate(
            &work.path.join("lab-cert"),
            &[SERVER_ADDR.into(), std::net::Ipv4Addr::LOCALHOST.into()],
        )?)
    } else {
        None
    };

    let mut results = Vec::new();
    let mut snapshot_every = 1;
    let mut snapshot_bytes = SNAPSHOT_OVERHEAD + payload;
    let mut game = String::new();
    if args.delta.is_empty() {
        bail!("--delta is empty");
    }
    let both = args.delta.len() > 1;
    let rows: Vec<(LabTransport, DeltaMode)> = args
        .transports
        .iter()
        .flat_map(|&t| args.delta.iter().map(move |&d| (t, d)))
        .collect();
    for (i, &(t, delta)) in rows.iter().enumerate() {
        // The row's name: the transport, and "/full" for whole snapshots
        // when both are measured.
        let label = match (both, delta) {
            (true, DeltaMode::Off) => format!("{}/full", t.label()),
            _ => t.label().to_string(),
        };
        eprintln!(
            "rally compare: [{}/{}] {label} — {} clients, {} s",
            i + 1,
            rows.len(),
            args.clients,
            args.duration
        );
        let run = RunPlan {
            server_bin: &server_bin,
            tools: &tools,
            args: &args,
            transport: t,
            impair,
            payload,
            cert_dir: work.path.join("certs"),
            lab_cert: lab_cert.as_ref(),
            work: work.path.clone(),
            room: format!("lab-{}-{}", std::process::id(), t.label()),
            deltas: delta == DeltaMode::On,
            label,
        };
        let (r, probe) = match &network {
            Network::Namespaces => run_namespaced(&run).await?,
            Network::Loopback(_) => run_local(&run, None).await?,
            Network::External(u) => run_local(&run, Some(u.clone())).await?,
        };
        if probe.snapshot_every != 0 {
            snapshot_every = probe.snapshot_every;
        }
        if probe.snapshot_bytes != 0 {
            snapshot_bytes = probe.snapshot_bytes;
        }
        if !probe.game.is_empty() {
            game = probe.game.clone();
        }
        results.push(r);
    }
    let external = matches!(network, Network::External(_));

    let scenario = Scenario {
        transports: results.iter().map(|r| r.transport.clone()).collect(),
        clients: args.clients,
        filler_clients: 0,
        players: args.clients,
        game,
        payload_bytes: (!external).then_some(payload),
        duration_s: args.duration,
        poll_interval_ms: args.poll_interval,
        tick_hz: args.tick_hz,
        snapshot_every,
        snapshot_bytes_requested: args.snapshot_bytes,
        snapshot_bytes,
        impairment: Impairment {
            loss_pct: args.loss,
            delay_ms: args.delay,
            jitter_ms: args.jitter,
            reorder_pct: args.reorder,
            rate_kbit: args.rate,
            queue_limit_ms: DEFAULT_QUEUE_LIMIT.as_secs_f64() * 1000.0,
            seed: args.seed,
            applied: impaired,
        },
        network: net_name.into(),
        network_note: net_note,
        server: match &args.url {
            Some(u) => u.to_string(),
            None => format!(
                "{} serve, fresh per transport, --game synthetic --game-opt payload={payload}{} --tick-hz {} --max-players-per-room {} --max-connections-per-ip {}{}",
                server_bin.display(),
                args.moving.map(|p| format!(" --game-opt moving={p}")).unwrap_or_default(),
                args.tick_hz,
                args.clients.max(64),
                (4 * args.clients).max(64),
                if h2 {
                    "; h2-stream's with --cert/--key: a self-signed ECDSA P-256 certificate the lab makes for the run, for the lab address, which its clients take as their only root"
                } else {
                    ""
                }
            ),
        },
        clock: "server and clients run on one host and share its clock: staleness is arrival time minus the snapshot's server_time_us".into(),
        started_unix: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        host: host_info(),
    };
    let report = Report {
        schema: report::SCHEMA,
        scenario,
        results,
    };
    println!("{}", report::table(&report));
    for line in report::reading(&report) {
        println!("  {line}");
    }
    if let Some(p) = &args.json {
        std::fs::write(p, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("writing {}", p.display()))?;
        eprintln!("rally compare: JSON report in {}", p.display());
    }
    if let Some(p) = &args.report {
        std::fs::write(p, report::html(&report))
            .with_context(|| format!("writing {}", p.display()))?;
        eprintln!("rally compare: HTML report in {}", p.display());
    }
    Ok(())
}

struct RunPlan<'a> {
    /// The `rally` server binary.
    server_bin: &'a Path,
    /// This executable: `lab-client` is one of its commands.
    tools: &'a Path,
    args: &'a CompareArgs,
    transport: LabTransport,
    impair: ImpairConfig,
    /// The `synthetic` game's snapshot payload.
    payload: usize,
    cert_dir: PathBuf,
    /// The certificate of the `h2-stream` row's server.
    lab_cert: Option<&'a LabCert>,
    work: PathBuf,
    room: String,
    /// The clients ask for deltas.
    deltas: bool,
    /// The row's name in the report.
    label: String,
}

impl RunPlan<'_> {
    fn server_log(&self) -> PathBuf {
        self.work
            .join(format!("serve-{}.log", self.label.replace('/', "-")))
    }

    /// `rally serve` on `listen` (UDP and TCP), as the launch that
    /// `rally::launch` reads the listening line of.
    fn server(&self, listen: &str) -> Launch {
        let carriage = match self.transport {
            LabTransport::WtStream => "stream",
            _ => "datagram",
        };
        let mut l = Launch::program(self.server_bin);
        l.args(["serve", "--listen", listen, "--tcp-listen", listen])
            .arg("--cert-dir")
            .arg(&self.cert_dir)
            .args(["--game", "synthetic", "--game-opt"])
            .arg(format!("payload={}", self.payload));
        if let Some(p) = self.args.moving {
            l.arg("--game-opt").arg(format!("moving={p}"));
        }
        l.arg("--tick-hz")
            .arg(self.args.tick_hz.to_string())
            .arg("--max-players-per-room")
            .arg(self.args.clients.max(64).to_string())
            // HTTP/1.1 rows open two connections per client.
            .arg("--max-connections-per-ip")
            .arg((4 * self.args.clients).max(64).to_string())
            .args(["--wt-snapshots", carriage]);
        if let (LabTransport::H2Stream, Some(c)) = (self.transport, self.lab_cert) {
            // A real certificate: the TCP listener speaks TLS, and HTTP/2.
            l.arg("--cert").arg(&c.cert).arg("--key").arg(&c.key);
        }
        l
    }

    fn probe_args(&self, url: &Url, cert_hash: Option<&str>) -> Vec<String> {
        let mut url = url.clone();
        if self.transport == LabTransport::H2Stream {
            // The same port, over TLS.
            let _ = url.set_scheme("https");
        }
        let mut a = vec![
            "lab-client".into(),
            "--url".into(),
            url.to_string(),
            "--transport".into(),
            self.transport.probe().into(),
            "--poll-interval".into(),
            self.args.poll_interval.to_string(),
            "--clients".into(),
            self.args.clients.to_string(),
            "--duration".into(),
            self.args.duration.to_string(),
            "--room".into(),
            self.room.clone(),
            "--deltas".into(),
            self.deltas.to_string(),
        ];
        if let Some(p) = self.args.moving {
            a.extend(["--moving".into(), p.to_string()]);
        }
        if let Some(h) = cert_hash {
            a.extend(["--cert-hash".into(), h.into()]);
        }
        if let (LabTransport::H2Stream, Some(c)) = (self.transport, self.lab_cert) {
            a.extend(["--ca-cert".into(), c.cert.display().to_string()]);
        }
        a
    }
}

/// A child with piped stdin/stdout, killed when dropped.
struct Proc {
    child: Child,
    /// Where its stderr goes, when not inherited.
    log: Option<PathBuf>,
    stdin: Option<ChildStdin>,
    lines: Lines<BufReader<ChildStdout>>,
    what: &'static str,
}

impl Proc {
    /// Spawns `cmd`; its stderr goes to `log` when given (the server's
    /// banner would break the progress display), else to ours.
    fn spawn(mut cmd: Command, what: &'static str, log: Option<PathBuf>) -> anyhow::Result<Proc> {
        let stderr = match &log {
            Some(p) => Stdio::from(
                std::fs::File::create(p).with_context(|| format!("creating {}", p.display()))?,
            ),
            None => Stdio::inherit(),
        };
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .kill_on_drop(true);
        if std::env::var_os("RALLY_LOG").is_none() {
            cmd.env("RALLY_LOG", "warn");
        }
        let mut child = cmd.spawn().with_context(|| format!("starting {what}"))?;
        let stdout = child.stdout.take().context("piped stdout")?;
        Ok(Proc {
            stdin: child.stdin.take(),
            lines: BufReader::new(stdout).lines(),
            child,
            log,
            what,
        })
    }

    async fn line(&mut self, timeout: Duration) -> anyhow::Result<String> {
        match tokio::time::timeout(timeout, self.lines.next_line()).await {
            Ok(Ok(Some(l))) => Ok(l),
            Ok(Ok(None)) => {
                let status = self.child.wait().await.ok();
                let log = self
                    .log
                    .as_ref()
                    .and_then(|p| std::fs::read_to_string(p).ok())
                    .unwrap_or_default();
                bail!("{} exited early ({status:?}) {log}", self.what)
            }
            Ok(Err(e)) => Err(anyhow!("reading {}: {e}", self.what)),
            Err(_) => bail!("{} said nothing for {timeout:?}", self.what),
        }
    }

    async fn event(&mut self, timeout: Duration) -> anyhow::Result<ProbeEvent> {
        let l = self.line(timeout).await?;
        serde_json::from_str(&l).with_context(|| format!("{}: bad line {l:?}", self.what))
    }

    async fn send(&mut self, line: &str) -> anyhow::Result<()> {
        let stdin = self.stdin.as_mut().context("stdin closed")?;
        stdin.write_all(line.as_bytes()).await?;
        stdin.flush().await?;
        Ok(())
    }

    async fn stop(mut self) {
        self.stdin.take();
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }
}

/// Starts the server `cmd` (a [`Launch::command`], perhaps wrapped in a
/// namespace), its stderr in the run's log, and reads its listening line.
async fn start_server(cmd: Command, run: &RunPlan<'_>) -> anyhow::Result<(Proc, Listening)> {
    let mut p = Proc::spawn(cmd, "rally serve", Some(run.server_log()))?;
    let line = p.line(READY_TIMEOUT).await?;
    let l = Listening::parse(&line)?;
    Ok((p, l))
}

async fn await_connected(p: &mut Proc) -> anyhow::Result<(Vec<u64>, usize)> {
    match p.event(READY_TIMEOUT).await? {
        ProbeEvent::Connected {
            connect_us,
            failed,
            error,
        } => {
            if connect_us.is_empty() {
                bail!(
                    "{}: no client could connect: {}",
                    p.what,
                    error.unwrap_or_default()
                );
            }
            if let Some(e) = error {
                eprintln!(
                    "rally compare: {}: {failed} connect attempts failed (retried), first: {e}",
                    p.what
                );
            }
            Ok((connect_us, failed))
        }
        other => bail!("{}: expected connected, got {other:?}", p.what),
    }
}

/// Reads progress until the result, echoing progress to stderr.
async fn await_result(p: &mut Proc, label: &str, duration: f64) -> anyhow::Result<ProbeResult> {
    let tty = std::io::stderr().is_terminal();
    let timeout = Duration::from_secs_f64(duration + 30.0);
    loop {
        match p.event(timeout).await? {
            ProbeEvent::Progress {
                elapsed_s,
                snapshots,
            } => {
                let msg = format!(
                    "  {label}: {elapsed_s:>4.1}/{duration} s, {snapshots} snapshots received"
                );
                if tty {
                    eprint!("\r{msg}");
                } else {
                    eprintln!("{msg}");
                }
            }
            ProbeEvent::Result(r) => {
                if tty {
                    eprintln!();
                }
                return Ok(*r);
            }
            other => bail!("{}: unexpected {other:?}", p.what),
        }
    }
}

/// user + system CPU time of a process, in microseconds.
fn cpu_us(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name; utime and stime are the
    // 14th and 15th fields overall (proc(5)).
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Some((utime + stime) * 1_000_000 / hz)
}

/// Server-side figures of a run, when the lab owns the server.
struct ServerSide {
    cpu_us: Option<u64>,
    wire: Option<Wire>,
    /// TCP and QUIC connections the clients opened over the row.
    connections: Option<u64>,
}

async fn run_namespaced(run: &RunPlan<'_>) -> anyhow::Result<(TransportResult, ProbeResult)> {
    let net = LabNet::create().context("creating the lab network")?;
    let fwd = Forwarder::start(
        &net.client_tun,
        &net.server_tun,
        run.impair,
        run.impair,
        run.args.seed,
    )
    .context("starting the forwarder")?;
    let listen = format!("{SERVER_ADDR}:{LAB_PORT}");
    let cmd = net.server_ns.wrap(&run.server(&listen).command());
    let (server, l) = start_server(cmd, run).await?;
    let server_pid = server.child.id();
    let url = l.url();
    let mut cmd = net.client_ns.command(run.tools);
    cmd.args(run.probe_args(&url, Some(&l.cert_sha256)));
    let mut probe = Proc::spawn(cmd, "rally lab-client", None)?;
    let (connect_us, failed) = await_connected(&mut probe).await?;
    let cpu0 = server_pid.and_then(cpu_us);
    let (s2c0, c2s0) = (fwd.server_to_client.read(), fwd.client_to_server.read());
    probe.send("go\n").await?;
    let result = await_result(&mut probe, &run.label, run.args.duration).await?;
    let cpu1 = server_pid.and_then(cpu_us);
    let wire = Wire {
        server_to_client: fwd.server_to_client.read().since(&s2c0),
        client_to_server: fwd.client_to_server.read().since(&c2s0),
    };
    probe.stop().await;
    server.stop().await;
    // Connections opened over the whole row, the connect phase included.
    let opened = fwd.client_to_server.read();
    drop(fwd);
    drop(net);
    let side = ServerSide {
        cpu_us: cpu0.zip(cpu1).map(|(a, b)| b.saturating_sub(a)),
        wire: Some(wire),
        connections: Some(opened.tcp_opened + opened.quic_opened),
    };
    Ok(summarise(run, result, connect_us, failed, side))
}

async fn run_local(
    run: &RunPlan<'_>,
    external: Option<Url>,
) -> anyhow::Result<(TransportResult, ProbeResult)> {
    let mut server = None;
    let (url, cert_hash) = match external {
        Some(u) => {
            let hash = if u.scheme() == "http" {
                rally::client::fetch_cert_hash(&u)
                    .await
                    .ok()
                    .map(hex::encode)
            } else {
                None
            };
            (u, hash)
        }
        None => {
            let cmd = Command::from(run.server("127.0.0.1:0").command());
            let (s, l) = start_server(cmd, run).await?;
            server = Some(s);
            (l.url(), Some(l.cert_sha256))
        }
    };
    let server_pid = server.as_ref().and_then(|s| s.child.id());
    let mut cmd = Command::new(run.tools);
    cmd.args(run.probe_args(&url, cert_hash.as_deref()));
    let mut probe = Proc::spawn(cmd, "rally lab-client", None)?;
    let (connect_us, failed) = await_connected(&mut probe).await?;
    let cpu0 = server_pid.and_then(cpu_us);
    probe.send("go\n").await?;
    let result = await_result(&mut probe, &run.label, run.args.duration).await?;
    let cpu1 = server_pid.and_then(cpu_us);
    probe.stop().await;
    if let Some(s) = server {
        s.stop().await;
    }
    let side = ServerSide {
        cpu_us: cpu0.zip(cpu1).map(|(a, b)| b.saturating_sub(a)),
        wire: None,
        connections: None,
    };
    Ok(summarise(run, result, connect_us, failed, side))
}

fn summarise(
    run: &RunPlan<'_>,
    mut p: ProbeResult,
    mut connect_us: Vec<u64>,
    connect_failures: usize,
    side: ServerSide,
) -> (TransportResult, ProbeResult) {
    let rtt_ms = Dist::from_us(&mut p.rtt_us);
    let staleness_ms = Dist::from_us(&mut p.staleness_us);
    let jitter_ms = Dist::from_us(&mut p.jitter_us);
    let connect_ms = Dist::from_us(&mut connect_us);
    let received = p.snapshots;
    let per_snapshot = |v: f64| (received > 0).then(|| v / received as f64);
    // The share of what crossed the link that was not Rally's messages.
    let share = |wire: u64, messages: u64| {
        (wire > 0).then(|| wire.saturating_sub(messages) as f64 / wire as f64)
    };
    let s2c = side.wire.as_ref().map(|w| w.server_to_client.bytes_in);
    let c2s = side.wire.as_ref().map(|w| w.client_to_server.bytes_in);
    let span_us = (run.args.duration * 1e6) as u64;
    let bin_us = (span_us / TIMELINE_BINS).max(TIMELINE_MIN_BIN_US);
    let r = TransportResult {
        transport: run.label.clone(),
        delta: run.deltas,
        states_checked: p.states_checked,
        state_mismatches: p.state_mismatches,
        deltas_applied: p.deltas_applied,
        deltas_ignored: p.deltas_ignored,
        rtt_cdf: cdf_points(&p.rtt_us, CDF_POINTS),
        staleness_cdf: cdf_points(&p.staleness_us, CDF_POINTS),
        rtt_ms,
        staleness_ms,
        jitter_ms,
        rfc3550_jitter_ms: if p.rfc3550_us.is_empty() {
            0.0
        } else {
            p.rfc3550_us.iter().sum::<f64>() / p.rfc3550_us.len() as f64 / 1000.0
        },
        delivered_ratio: if p.expected_ticks == 0 {
            0.0
        } else {
            p.distinct_ticks as f64 / p.expected_ticks as f64
        },
        snapshots_received: received,
        snapshots_distinct: p.distinct_ticks,
        snapshots_expected: p.expected_ticks,
        snapshots_on_datagram: p.on_datagram,
        snapshots_on_stream: p.on_stream,
        out_of_order: p.out_of_order,
        inputs_sent: p.inputs_sent,
        bytes_per_snapshot: s2c.and_then(|b| per_snapshot(b as f64)),
        snapshot_message_bytes: p.snapshot_message_bytes,
        header_share: s2c.and_then(|b| share(b, p.snapshot_message_bytes)),
        upstream_bytes_per_input: c2s
            .filter(|_| p.inputs_sent > 0)
            .map(|b| b as f64 / p.inputs_sent as f64),
        upstream_header_share: c2s.and_then(|b| share(b, p.sent_message_bytes)),
        sent_message_bytes: p.sent_message_bytes,
        wire: side.wire,
        connect_ms,
        connect_failures,
        connections_opened: side.connections,
        connections_per_client: side.connections.map(|c| c as f64 / run.args.clients as f64),
        http_requests: p.http_requests,
        cpu_us_per_msg: side.cpu_us.and_then(|c| per_snapshot(c as f64)),
        server_cpu_ms: side.cpu_us.map(|c| c as f64 / 1000.0),
        errors: p.errors,
        staleness_timeline: Timeline {
            client: 0,
            bin_ms: bin_us as f64 / 1000.0,
            max_ms: timeline_bins(&p.timeline, bin_us, span_us),
        },
        timeline: p
            .timeline
            .iter()
            .map(|&(t, v)| (t as f64 / 1e6, v as f64 / 1000.0))
            .collect(),
    };
    (r, p)
}

fn host_info() -> Host {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into());
    Host {
        nproc: std::thread::available_parallelism().map_or(1, |n| n.get()),
        cpu,
        kernel,
        rally_version: env!("CARGO_PKG_VERSION").into(),
    }
}

/// A scratch directory removed on drop.
struct TempDir {
    path: PathBuf,
}

impl TempDir {
    fn new() -> anyhow::Result<TempDir> {
        let path = std::env::temp_dir().join(format!(
            "rally-compare-{}-{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(TempDir { path })
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::{payload_for, MAX_PAYLOAD, MIN_PAYLOAD};

    #[test]
    fn the_synthetic_payload_makes_the_snapshot_the_requested_size() {
        // Without a size: what a dots room of the clients sends, 2 + 12 × 4.
        assert_eq!(payload_for(None, 4), 50);
        assert_eq!(payload_for(Some(200), 4), 183);
        assert_eq!(payload_for(Some(21), 4), MIN_PAYLOAD);
        assert_eq!(payload_for(Some(3), 4), MIN_PAYLOAD);
        assert_eq!(payload_for(Some(10_000_000), 1), MAX_PAYLOAD);
    }
}
