//! Server configuration: one struct, from command-line flags or `RALLY_*`
//! environment variables. Every default is documented on its field and in
//! `rally serve --help`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};

/// How WebTransport carries snapshots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum SnapshotCarriage {
    /// Datagrams (the stream only when a snapshot is too big): the default.
    #[default]
    Datagram,
    /// Always the reliable stream: for comparing carriages in the lab.
    Stream,
}

/// Arena size and movement speed are part of the game, not tuning knobs;
/// clients learn them from `Welcome`.
pub const ARENA_W: f32 = 960.0;
pub const ARENA_H: f32 = 540.0;
pub const SPEED: f32 = 240.0;

/// Time a client has to send `Hello` after its session opens (PROTOCOL.md §8).
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(5);

/// Hard ceiling on `--max-players-per-room`: keeps a snapshot of a full room
/// inside one 65 535-byte stream frame (19 + 12 × 4000 bytes).
pub const MAX_PLAYERS_PER_ROOM_CEILING: usize = 4000;

#[derive(Debug, Clone, Args)]
pub struct ServeConfig {
    /// UDP address of the QUIC endpoint (HTTP/3 and WebTransport). Port 0
    /// picks a free port.
    #[arg(long, env = "RALLY_LISTEN", default_value = "127.0.0.1:4433")]
    pub listen: SocketAddr,

    /// TCP address for HTTP/1.1 and WebSocket. Port 0 means "the same port
    /// number as the UDP endpoint".
    #[arg(long, env = "RALLY_TCP_LISTEN", default_value = "127.0.0.1:4433")]
    pub tcp_listen: SocketAddr,

    /// PEM certificate chain. Without it a self-signed development
    /// certificate is used (and created) in --cert-dir.
    #[arg(long, env = "RALLY_CERT", requires = "key")]
    pub cert: Option<PathBuf>,

    /// PEM private key for --cert.
    #[arg(long, env = "RALLY_KEY", requires = "cert")]
    pub key: Option<PathBuf>,

    /// Directory of the development certificate (dev.pem, dev.key).
    #[arg(long, env = "RALLY_CERT_DIR", default_value = "certs")]
    pub cert_dir: PathBuf,

    /// Room simulation rate in ticks per second.
    #[arg(long, env = "RALLY_TICK_HZ", default_value_t = 60,
          value_parser = clap::value_parser!(u16).range(1..=240))]
    pub tick_hz: u16,

    /// Send a snapshot every N ticks (1 = every tick).
    #[arg(long, env = "RALLY_SNAPSHOT_EVERY", default_value_t = 1,
          value_parser = clap::value_parser!(u16).range(1..=240))]
    pub snapshot_every: u16,

    /// Most players in one room; further joins get `room_full`.
    #[arg(long, env = "RALLY_MAX_PLAYERS_PER_ROOM", default_value_t = 64,
          value_parser = clap::value_parser!(u64).range(1..=MAX_PLAYERS_PER_ROOM_CEILING as u64))]
    pub max_players_per_room: u64,

    /// Most concurrent sessions over both transports; further sessions get
    /// `server_full`.
    #[arg(long, env = "RALLY_MAX_SESSIONS", default_value_t = 10_000)]
    pub max_sessions: usize,

    /// How WebTransport sessions carry snapshots. `stream` exists to measure
    /// head-of-line blocking against datagrams (`rally compare`).
    #[arg(
        long,
        env = "RALLY_WT_SNAPSHOTS",
        value_enum,
        default_value = "datagram"
    )]
    pub wt_snapshots: SnapshotCarriage,
}

impl ServeConfig {
    pub fn tick_period(&self) -> Duration {
        Duration::from_secs_f64(1.0 / self.tick_hz as f64)
    }
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            listen: ([127, 0, 0, 1], 4433).into(),
            tcp_listen: ([127, 0, 0, 1], 4433).into(),
            cert: None,
            key: None,
            cert_dir: "certs".into(),
            tick_hz: 60,
            snapshot_every: 1,
            max_players_per_room: 64,
            max_sessions: 10_000,
            wt_snapshots: SnapshotCarriage::Datagram,
        }
    }
}
