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
    // No subcommand means `rally serve` with its defaults and RALLY_* env.
    let command = match cli.command {
        Some(c) => c,
        None => Cli::parse_from(["rally", "serve"])
            .command
            .context("parsing the default serve command")?,
    };
    match command {
        Command::Serve(cfg) => runtime.block_on(serve(*cfg)),
        Command::Cert(args) => {
            let policy = rally::cert::DevCertPolicy {
                validity: time::Duration::try_from(args.validity)?,
                renew_before: time::Duration::try_from(args.renew_before)?,
            };
            let (bundle, created) = rally::cert::load_or_create_dev(
                &args.cert_dir,
                time::OffsetDateTime::now_utc(),
                policy,
            )?;
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
        Command::Soak(args) => {
            let json = args.json.clone();
            let report = runtime.block_on(rally::client::soak::run(args))?;
            let text = serde_json::to_string_pretty(&report)?;
            if let Some(path) = json {
                std::fs::write(&path, &text)
                    .with_context(|| format!("writing {}", path.display()))?;
            }
            println!("{text}");
            Ok(())
        }
        Command::Load(args) => runtime.block_on(rally::load::run(args)),
        Command::Compare(args) => runtime.block_on(rally::lab::compare::run(args)),
        Command::LabClient(args) => runtime.block_on(rally::lab::probe::run(args)),
        Command::Token(args) => {
            let exp = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)?
                .as_secs()
                + args.ttl.as_secs();
            let claims = rally::auth::Claims {
                exp,
                room: args.room,
            };
            println!(
                "{}",
                rally::auth::TokenKey::new(args.secret.as_bytes()).sign(&claims)
            );
            Ok(())
        }
    }
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
async fn stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            },
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

async fn serve(cfg: ServeConfig) -> anyhow::Result<()> {
    rally::server::run(cfg, stop_signal(), |bound, cert| {
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
