use anyhow::Context;
use clap::Parser;
use rally::cli::{Cli, Command, ServeArgs};
use rally::game::{GameOptions, RoomInfo};

fn main() -> anyhow::Result<()> {
    // A config file becomes RALLY_* variables the flags then read
    // (precedence: flag > environment > file > default).
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if let Some(file) = rally::config::config_path(&argv) {
        let cmd = <Cli as clap::CommandFactory>::command();
        let serve = cmd.find_subcommand("serve").context("the serve command")?;
        rally::config::apply_file(serve, &file)?;
    }
    let cli = Cli::parse();
    rally::cli::init_logging();
    let runtime = cli.runtime;
    // No subcommand means `rally serve` with its defaults and RALLY_* env.
    let command = match cli.command {
        Some(c) => c,
        None => Cli::parse_from(["rally", "serve"])
            .command
            .context("parsing the default serve command")?,
    };
    match command {
        Command::Serve(args) => runtime.build()?.block_on(serve(*args)),
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
        Command::Tool(args) => tool(&args),
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let game = rally::games::builtin(&args.game)
        .with_context(|| format!("no built-in game called {:?}", args.game))?;
    // A bad game option stops the server here, naming it, rather than
    // failing every room later.
    let options = GameOptions::new(args.config.game_options.iter().cloned());
    let info = RoomInfo {
        name: "",
        tick_hz: args.config.tick_hz,
        snapshot_every: args.config.snapshot_every,
        max_players: args.config.max_players_per_room as usize,
        options: &options,
    };
    rally::games::check(&args.game, &info).map_err(anyhow::Error::msg)?;
    rally::Server::builder()
        .config(args.config)
        .game_factory(game)
        .serve()
        .await
}

/// Runs `rally-tools` (next to this binary) for a tool command, as git runs
/// `git-foo`: `rally compare …` is `rally-tools compare …`.
fn tool(args: &[std::ffi::OsString]) -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("locating this binary")?;
    let tools = exe.with_file_name(format!("rally-tools{}", std::env::consts::EXE_SUFFIX));
    let name = args
        .first()
        .map(|a| a.to_string_lossy())
        .unwrap_or_default();
    if !tools.exists() {
        anyhow::bail!(
            "`rally {name}` is in the rally-tools binary, which is not built next to {}: run `cargo build --release --workspace`",
            exe.display()
        );
    }
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt;
        let err = std::process::Command::new(&tools).args(args).exec();
        Err(err).with_context(|| format!("running {}", tools.display()))
    }
    #[cfg(not(unix))]
    {
        let status = std::process::Command::new(&tools)
            .args(args)
            .status()
            .with_context(|| format!("running {}", tools.display()))?;
        std::process::exit(status.code().unwrap_or(1));
    }
}
