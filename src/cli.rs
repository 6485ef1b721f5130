//! Command line: `rally [serve]`, `rally cert`, `rally bot`, `rally token`, `rally soak`,
//! `rally compare`, `rally load`.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};
use url::Url;

use crate::config::ServeConfig;

#[derive(Debug, Parser)]
#[command(
    name = "rally",
    version,
    about = "Real-time game server: WebTransport over HTTP/3 on UDP, WebSocket fallback on TCP",
    long_about = "Real-time game server: WebTransport over HTTP/3 on UDP, with a WebSocket \
                  fallback on TCP at the same port number.\n\nWithout a subcommand, `rally` \
                  runs `rally serve` with its defaults."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Tokio runtime flavour for this process (BENCHMARKS.md, "Performance",
    /// has the measurements behind the default).
    #[arg(
        long,
        global = true,
        env = "RALLY_RUNTIME",
        value_enum,
        default_value = "multi-thread"
    )]
    pub runtime: RuntimeArg,
    /// Worker threads of the multi-thread runtime (default: one per core).
    #[arg(long, global = true, env = "RALLY_WORKER_THREADS")]
    pub worker_threads: Option<usize>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RuntimeArg {
    /// Work-stealing scheduler, one worker per core (or --worker-threads).
    MultiThread,
    /// Everything on the main thread.
    CurrentThread,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the game server (the default): HTTP/3 + WebTransport on UDP,
    /// HTTP/1.1 + WebSocket on TCP, both on the same port number.
    Serve(Box<ServeConfig>),
    /// Create or renew the development certificate and print its SHA-256.
    Cert(CertArgs),
    /// Run N native bots in a room and print what they saw as JSON.
    Bot(BotArgs),
    /// Run a load scenario (s1, s2, s3) against a `rally serve` child
    /// process on loopback and print its figures (BENCHMARKS.md).
    Load(crate::load::LoadArgs),
    /// Mint a signed join token for a server started with --token-secret.
    Token(TokenArgs),
    /// Soak test: bots with join/leave churn and resumes on both transports
    /// for a set time; reports server memory and file descriptors.
    Soak(crate::client::soak::SoakArgs),
    /// Compare transports (WebTransport datagrams, WebTransport stream,
    /// WebSocket) on one scenario through an impaired network; see
    /// docs/LAB.md.
    Compare(crate::lab::CompareArgs),
    /// Measuring clients of `rally compare` (internal).
    #[command(hide = true)]
    LabClient(crate::lab::ProbeArgs),
}

#[derive(Debug, clap::Args)]
pub struct TokenArgs {
    /// The server's --token-secret.
    #[arg(long, env = "RALLY_TOKEN_SECRET", hide_env_values = true)]
    pub secret: String,
    /// How long the token is valid, e.g. `1h`.
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    pub ttl: std::time::Duration,
    /// Restrict the token to one room.
    #[arg(long)]
    pub room: Option<String>,
}

#[derive(Debug, clap::Args)]
pub struct CertArgs {
    /// Directory of the development certificate.
    #[arg(long, env = "RALLY_CERT_DIR", default_value = "certs")]
    pub cert_dir: PathBuf,
    /// Print the hash as JSON (the `/cert-hash` body) instead of text.
    #[arg(long)]
    pub json: bool,
    /// Validity of a new certificate (at most 14 days).
    #[arg(long, default_value = "13days", value_parser = humantime::parse_duration)]
    pub validity: std::time::Duration,
    /// Replace the certificate when less than this is left.
    #[arg(long, default_value = "2days", value_parser = humantime::parse_duration)]
    pub renew_before: std::time::Duration,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum TransportArg {
    /// WebTransport (HTTP/3 over QUIC): datagrams + one reliable stream.
    Wt,
    /// WebSocket over TCP.
    Ws,
}

#[derive(Debug, clap::Args)]
pub struct BotArgs {
    /// Server origin; for `wt` over http the certificate hash is fetched
    /// from `/cert-hash` and pinned.
    #[arg(long, default_value = "http://127.0.0.1:4433")]
    pub url: Url,
    #[arg(long, value_enum, default_value = "wt")]
    pub transport: TransportArg,
    #[arg(long, default_value = "lobby")]
    pub room: String,
    /// Number of bots.
    #[arg(long, default_value_t = 1)]
    pub bots: usize,
    /// Seconds to play.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Print one JSON object (otherwise a short text summary).
    #[arg(long)]
    pub json: bool,
    /// Bot names are this prefix followed by the bot's index.
    #[arg(long, default_value = "bot-")]
    pub name_prefix: String,
}
