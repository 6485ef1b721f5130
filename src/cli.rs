//! Command line: `rally [serve]`, `rally cert`, `rally token`. The tools
//! (`rally bot`, `soak`, `load`, `compare`) are the `rally-tools` binary,
//! which `rally` runs for them.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

use crate::config::ServeConfig;

#[derive(Debug, Parser)]
#[command(
    name = "rally",
    version,
    about = "Real-time game server: WebTransport over HTTP/3 on UDP, WebSocket fallback on TCP",
    long_about = "Real-time game server: WebTransport over HTTP/3 on UDP, with a WebSocket \
                  fallback on TCP at the same port number.\n\nWithout a subcommand, `rally` \
                  runs `rally serve` with its defaults. The tools (bot, soak, load, compare) \
                  are the rally-tools binary; `rally TOOL ...` runs it."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub runtime: RuntimeArgs,
}

/// The process's tokio runtime, as every Rally binary takes it.
#[derive(Debug, Clone, Copy, clap::Args)]
pub struct RuntimeArgs {
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

impl RuntimeArgs {
    pub fn build(self) -> anyhow::Result<tokio::runtime::Runtime> {
        let mut builder = match self.runtime {
            RuntimeArg::MultiThread => {
                let mut b = tokio::runtime::Builder::new_multi_thread();
                if let Some(n) = self.worker_threads {
                    b.worker_threads(n.max(1));
                }
                b
            }
            RuntimeArg::CurrentThread => tokio::runtime::Builder::new_current_thread(),
        };
        anyhow::Context::context(builder.enable_all().build(), "starting the tokio runtime")
    }
}

/// Logs to stderr, filtered by `RALLY_LOG` (default `info`).
pub fn init_logging() {
    use tracing_subscriber::EnvFilter;
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("RALLY_LOG").unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
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
    Serve(Box<ServeArgs>),
    /// Create or renew the development certificate and print its SHA-256.
    Cert(CertArgs),
    /// Mint a signed join token for a server started with --token-secret.
    Token(TokenArgs),
    /// Any other command (`bot`, `soak`, `load`, `compare`) is one of the
    /// tools in the `rally-tools` binary beside this one.
    #[command(external_subcommand)]
    Tool(Vec<OsString>),
}

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// The game every room runs: dots, relay, shooter or synthetic
    /// (PROTOCOL.md §12).
    #[arg(long, env = "RALLY_GAME", default_value = "dots",
          value_parser = clap::builder::PossibleValuesParser::new(crate::games::NAMES))]
    pub game: String,
    #[command(flatten)]
    pub config: ServeConfig,
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
