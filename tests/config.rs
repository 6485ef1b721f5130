//! The config file (`rally serve --config FILE`) with the real binary:
//! precedence flag > environment > file > default, and startup errors that
//! name what they are about.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::within;
use rally::client::{Client, TransportKind};
use rally::launch::Launch;

fn temp_dir(what: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "rally-config-{what}-{}-{:08x}",
        std::process::id(),
        rand::random::<u32>()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `rally serve ARGS` that must fail: its exit status and stderr.
fn serve_fails(args: &[&str], envs: &[(&str, &str)]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_rally"))
        .arg("serve")
        .args(args)
        .envs(envs.iter().copied())
        .env("RALLY_LOG", "warn")
        .output()
        .unwrap();
    assert!(!out.status.success(), "rally serve {args:?} started");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The status of an `OPTIONS /rally/http` preflight from `origin`.
async fn preflight(tcp: std::net::SocketAddr, origin: &str) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(tcp).await.unwrap();
    let req = format!(
        "OPTIONS /rally/http HTTP/1.1\r\nHost: {tcp}\r\nOrigin: {origin}\r\n\
         Access-Control-Request-Method: GET\r\nConnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut resp = Vec::new();
    within(10, "preflight", s.read_to_end(&mut resp))
        .await
        .unwrap();
    let resp = String::from_utf8_lossy(&resp);
    resp.split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("{resp}"))
}

#[tokio::test]
async fn flags_beat_the_environment_which_beats_the_file_which_beats_the_defaults() {
    let dir = temp_dir("precedence");
    let file = dir.join("rally.toml");
    std::fs::write(
        &file,
        "# only from the file\n\
         game = \"shooter\"\n\
         # the environment overrides this\n\
         tick-hz = 30\n\
         # a flag overrides this (and the environment)\n\
         snapshot-every = 3\n\
         resume-window = \"7s\"\n\
         allow-origin = [\"https://a.example\", \"https://b.example\"]\n",
    )
    .unwrap();
    let mut launch = Launch::rally(env!("CARGO_BIN_EXE_rally"));
    launch
        .arg("--config")
        .arg(&file)
        .args(["--snapshot-every", "2"])
        .env("RALLY_TICK_HZ", "20")
        .env("RALLY_SNAPSHOT_EVERY", "4")
        .env("RALLY_LOG", "warn");
    let proc = launch.spawn_async().await.expect("start with --config");
    let opts =
        rally::client::ConnectOptions::new(proc.url(), TransportKind::WebSocket, "cfg", "ann");
    let client = within(10, "connect", Client::connect(opts))
        .await
        .expect("connect");
    let welcome = client.welcome().clone();
    assert_eq!(
        welcome.game, "shooter",
        "the file's game (nothing overrides it)"
    );
    assert_eq!(welcome.tick_hz, 20, "the environment beats the file");
    assert_eq!(welcome.snapshot_every, 2, "the flag beats env and file");
    assert_eq!(welcome.resume_window_ms, 7000, "a duration from the file");
    // Not in the file, env or flags: the default (a 256-byte message).
    assert_eq!(welcome.max_message, 256);

    // A list key: both of the file's origins are allowed, others refused
    // (a CORS preflight of the HTTP streaming endpoint says which).
    let tcp = proc.listening.tcp;
    assert_eq!(preflight(tcp, "https://a.example").await, 204);
    assert_eq!(preflight(tcp, "https://b.example").await, 204);
    assert_eq!(preflight(tcp, "https://c.example").await, 403);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn config_file_errors_name_the_file_and_the_key() {
    let dir = temp_dir("errors");
    let file = dir.join("rally.toml");
    let f = file.to_str().unwrap();

    std::fs::write(&file, "tick-hz = 30\nspeed-of-light = 1\n").unwrap();
    let err = serve_fails(&["--config", f], &[]);
    assert!(
        err.contains("unknown key `speed-of-light`") && err.contains(f),
        "{err}"
    );

    // RALLY_CONFIG names the file as well as --config does.
    let err = serve_fails(&[], &[("RALLY_CONFIG", f)]);
    assert!(err.contains("`speed-of-light`"), "{err}");

    std::fs::write(&file, "tick-hz = \"fast\"\n").unwrap();
    let err = serve_fails(&["--config", f], &[]);
    assert!(err.contains("tick-hz") && err.contains("fast"), "{err}");

    std::fs::write(&file, "tick-hz = [30\n").unwrap();
    let err = serve_fails(&["--config", f], &[]);
    assert!(err.contains("not valid TOML") && err.contains(f), "{err}");

    let missing = dir.join("absent.toml");
    let err = serve_fails(&["--config", missing.to_str().unwrap()], &[]);
    assert!(
        err.contains("reading the config file") && err.contains("absent.toml"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A startup error says what it is about: a missing certificate names the
/// file, a taken port names the address.
#[test]
fn startup_errors_name_what_they_are_about() {
    let dir = temp_dir("startup");
    let cert = dir.join("no-such.pem");
    let key = dir.join("no-such.key");
    let err = serve_fails(
        &[
            "--listen",
            "127.0.0.1:0",
            "--cert",
            cert.to_str().unwrap(),
            "--key",
            key.to_str().unwrap(),
        ],
        &[],
    );
    assert!(
        err.contains("no-such.pem") && err.contains("No such file"),
        "{err}"
    );

    let taken = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let err = serve_fails(
        &[
            "--listen",
            &addr,
            "--tcp-listen",
            "127.0.0.1:0",
            "--cert-dir",
            dir.to_str().unwrap(),
        ],
        &[],
    );
    assert!(err.contains(&format!("binding UDP {addr}")), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}
