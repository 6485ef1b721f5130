use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use rally::cli::{BotArgs, Cli, Command, RuntimeArg, TransportArg};
use rally::client::bot::{self, BotPlan};
use rally::client::TransportKind;
use rally::config::ServeConfig;
use tracing_subscriber::EnvFilter;

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("RALLY_LOG").unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let mut builder = match cli.runtime {
        RuntimeArg::MultiThread => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            if let Some(n) = cli.worker_threads {
                b.worker_threads(n.max(1));
            }
            b
        }
        RuntimeArg::CurrentThread => tokio::runtime::Builder::new_current_thread(),
    };
    let runtime = builder
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    match cli
        .command
        .unwrap_or(Command::Serve(ServeConfig::default()))
    {
        Command::Serve(cfg) => runtime.block_on(serve(cfg)),
        Command::Cert(args) => {
            let (bundle, created) =
                rally::cert::load_or_create_dev(&args.cert_dir, time::OffsetDateTime::now_utc())?;
            if args.json {
                println!("{}", bundle.hash_json());
            } else {
                let (cert, key) = rally::cert::dev_paths(&args.cert_dir);
                println!(
                    "{} development certificate\n  certificate: {}\n  key:         {}\n  expires:     {}\n  sha-256:     {}\n  base64:      {}",
                    if created { "created" } else { "kept" },
                    cert.display(),
                    key.display(),
                    bundle.hash_json()["not_after"].as_str().unwrap_or(""),
                    bundle.sha256_hex(),
                    bundle.sha256_base64(),
                );
            }
            Ok(())
        }
        Command::Bot(args) => runtime.block_on(run_bots(args)),
        Command::Load(args) => runtime.block_on(rally::load::run(args)),
    }
}

async fn serve(cfg: ServeConfig) -> anyhow::Result<()> {
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    rally::server::run(cfg, shutdown, |bound, cert| {
        // One machine-readable line on stdout: tests and scripts wait for it.
        println!(
            "{}",
            serde_json::json!({
                "event": "listening",
                "udp": bound.udp.to_string(),
                "tcp": bound.tcp.to_string(),
                "cert_sha256": cert.sha256_hex(),
            })
        );
        eprintln!(
            "Rally is up. Open http://{}/ in Chrome (WebTransport on udp/{}, WebSocket on tcp/{}).",
            bound.tcp,
            bound.udp.port(),
            bound.tcp.port()
        );
    })
    .await
}

async fn run_bots(args: BotArgs) -> anyhow::Result<()> {
    let transport = match args.transport {
        TransportArg::Wt => TransportKind::WebTransport,
        TransportArg::Ws => TransportKind::WebSocket,
    };
    let plan = BotPlan {
        url: args.url,
        transport,
        room: args.room,
        bots: args.bots,
        duration: Duration::from_secs_f64(args.duration.max(0.0)),
        name_prefix: args.name_prefix,
    };
    let report = bot::run(plan).await;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!(
            "{} bots over {}: {} snapshots, {} distinct players, rtt p50 {:.2} ms p99 {:.2} ms, {} errors",
            report.bots,
            report.transport,
            report.snapshots_received,
            report.distinct_players_seen,
            report.rtt_ms.p50,
            report.rtt_ms.p99,
            report.errors
        );
    }
    Ok(())
}
