//! `rally-tools`: the tools that exercise and measure a Rally server —
//! bots, the soak, the load scenarios and the transport lab. `rally TOOL …`
//! runs `rally-tools TOOL …` (the `rally` binary forwards the commands it
//! does not know), so both spellings work.

use anyhow::Context;
use clap::{Parser, Subcommand};
use rally::cli::RuntimeArgs;
use rally_tools::bot::{self, BotArgs, BotPlan};
use rally_tools::lab::{CompareArgs, ProbeArgs};
use rally_tools::load::LoadArgs;
use rally_tools::soak::SoakArgs;

#[derive(Debug, Parser)]
#[command(
    name = "rally-tools",
    version,
    about = "Rally's tools: bots, soak, load scenarios and the transport lab",
    long_about = "Rally's tools: bots, soak, load scenarios and the transport lab. \
                  `rally TOOL ...` runs `rally-tools TOOL ...`. The tools that start a \
                  server run the `rally` binary beside this one (--server-bin or \
                  RALLY_SERVER_BIN name another)."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// This process's runtime (the server's own is its `--runtime`, e.g.
    /// `rally load --server-arg=--runtime=current-thread`).
    #[command(flatten)]
    runtime: RuntimeArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run N native bots in a room, playing the server's game, and print
    /// what they saw as JSON.
    Bot(BotArgs),
    /// Soak test: bots with join/leave churn and resumes on both transports
    /// for a set time; reports server memory and file descriptors.
    Soak(SoakArgs),
    /// Run a load scenario (s1, s2, s3) against a `rally serve` child
    /// process on loopback and print its figures (BENCHMARKS.md).
    Load(LoadArgs),
    /// Compare transports (WebTransport datagrams and stream, WebSocket,
    /// HTTP/1.1 and HTTP/2 streaming, SSE, long polling, polling) on one
    /// scenario through an impaired network; see docs/LAB.md.
    Compare(CompareArgs),
    /// Measuring clients of `rally compare` (internal).
    #[command(hide = true)]
    LabClient(ProbeArgs),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    rally::cli::init_logging();
    let runtime = cli.runtime.build()?;
    match cli.command {
        Command::Bot(args) => runtime.block_on(run_bots(args)),
        Command::Soak(args) => {
            let json = args.json.clone();
            let report = runtime.block_on(rally_tools::soak::run(args))?;
            let text = serde_json::to_string_pretty(&report)?;
            if let Some(path) = json {
                std::fs::write(&path, &text)
                    .with_context(|| format!("writing {}", path.display()))?;
            }
            println!("{text}");
            Ok(())
        }
        Command::Load(args) => runtime.block_on(rally_tools::load::run(args)),
        Command::Compare(args) => runtime.block_on(rally_tools::lab::compare::run(args)),
        Command::LabClient(args) => runtime.block_on(rally_tools::lab::probe::run(args)),
    }
}

async fn run_bots(args: BotArgs) -> anyhow::Result<()> {
    let json = args.json;
    let report = bot::run(BotPlan::from(args)).await;
    if json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!(
            "{} {} bots over {}: {} snapshots, {} messages, {} distinct players ({}), rtt p50 {:.2} ms p99 {:.2} ms, {} errors",
            report.bots,
            report.game,
            report.transport,
            report.snapshots_received,
            report.messages_received,
            report.distinct_players_seen,
            report.players_seen_from,
            report.rtt_ms.p50,
            report.rtt_ms.p99,
            report.errors
        );
    }
    Ok(())
}
