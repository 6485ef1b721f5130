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

/// Time a client has to send `Hello` after its session opens (PROTOCOL.md §8).
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(5);

fn duration(s: &str) -> Result<Duration, humantime::DurationError> {
    humantime::parse_duration(s)
}

/// Hard ceiling on `--max-players-per-room`: rosters and replay windows
/// stay bounded (a full room's roster is 4 000 numbered events).
pub const MAX_PLAYERS_PER_ROOM_CEILING: usize = 4000;

/// A `key=value` pair of `--game-opt`.
fn key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("expected KEY=VALUE, got {s:?}")),
    }
}

#[derive(Debug, Clone, Args)]
pub struct ServeConfig {
    /// A TOML file of settings: every key is a flag's long name (e.g.
    /// `tick-hz = 30`, `allow-origin = ["https://a.example"]`); flags and
    /// `RALLY_*` environment variables override it (docs/rally.toml lists
    /// every key with its default).
    #[arg(long, env = "RALLY_CONFIG")]
    pub config: Option<PathBuf>,

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

    /// An option for the game, `KEY=VALUE` (repeatable; see the game's
    /// documentation, e.g. `payload=200` for `synthetic`).
    #[arg(long = "game-opt", env = "RALLY_GAME_OPT", value_delimiter = ',', value_parser = key_value)]
    pub game_options: Vec<(String, String)>,

    #[command(flatten)]
    pub limits: Limits,

    #[command(flatten)]
    pub cluster: ClusterArgs,

    /// Also serve a WebSocket echo endpoint at `/echo` (same upgrade path,
    /// limits and WebSocket configuration as `/rally`). For conformance
    /// testing (Autobahn cases); off by default.
    #[arg(long, env = "RALLY_WS_ECHO")]
    pub ws_echo: bool,

    /// Origins allowed to open a session (WebSocket upgrade and WebTransport
    /// CONNECT), e.g. `https://game.example`; repeat the flag or separate
    /// with commas; `*` allows any. With the development certificate,
    /// `http(s)://localhost`, `127.0.0.1` and `[::1]` on any port are also
    /// allowed. Requests without an Origin header (native clients) are
    /// allowed: Origin protects browsers, not servers.
    #[arg(long, env = "RALLY_ALLOW_ORIGIN", value_delimiter = ',')]
    pub allow_origin: Vec<String>,

    /// Secret for signed join tokens (HMAC-SHA256). When set, every session
    /// must present `?token=` on its `/rally` URL; mint tokens with
    /// `rally token`.
    #[arg(long, env = "RALLY_TOKEN_SECRET", hide_env_values = true)]
    pub token_secret: Option<String>,

    /// Bearer token of the admin page: with it, `/admin` serves the page
    /// and `/admin/api/state` its data to requests carrying
    /// `Authorization: Bearer TOKEN`; without it both answer 404. Serve
    /// behind TLS in production: the token is a bearer secret.
    #[arg(long, env = "RALLY_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,

    /// How long a dropped player is kept for `Resume`.
    #[arg(long, env = "RALLY_RESUME_WINDOW", default_value = "10s", value_parser = duration)]
    pub resume_window: Duration,

    /// Validity of a generated development certificate (at most 14 days, the
    /// browser limit for hash-pinned certificates).
    #[arg(long, env = "RALLY_DEV_CERT_VALIDITY", default_value = "13days", value_parser = duration)]
    pub dev_cert_validity: Duration,

    /// The next development certificate is made and published (in
    /// `/cert-hash` `hashes`) when this much validity is left; new
    /// connections switch to it when half of that is left.
    #[arg(long, env = "RALLY_DEV_CERT_RENEW_BEFORE", default_value = "2days", value_parser = duration)]
    pub dev_cert_renew_before: Duration,
}

/// Resource limits. Sized for a game: small messages, many sessions, short
/// timeouts. Every field is a flag; defaults are in `rally serve --help` and
/// README.
#[derive(Debug, Clone, Args)]
pub struct Limits {
    /// Most open connections (TCP and QUIC together, sessions or not).
    #[arg(long, env = "RALLY_MAX_CONNECTIONS", default_value_t = 12_000)]
    pub max_connections: usize,

    /// Most open connections from one IP address.
    #[arg(long, env = "RALLY_MAX_CONNECTIONS_PER_IP", default_value_t = 64)]
    pub max_connections_per_ip: usize,

    /// Sustained client messages per second per session (token bucket).
    /// Excess messages are dropped; a peer that keeps sending at twice the
    /// burst is closed with `rate_limited`.
    #[arg(long, env = "RALLY_MAX_MSGS_PER_SEC", default_value_t = 240)]
    pub max_msgs_per_sec: u32,

    /// Token bucket burst: messages a session may send at once.
    #[arg(long, env = "RALLY_MSG_BURST", default_value_t = 120)]
    pub msg_burst: u32,

    /// TCP: time to finish the TLS handshake and send request headers
    /// (slowloris bound).
    #[arg(long, env = "RALLY_HANDSHAKE_TIMEOUT", default_value = "10s", value_parser = duration)]
    pub handshake_timeout: Duration,

    /// A connection with no traffic for this long is closed (QUIC idle
    /// timeout; WebSocket read deadline).
    #[arg(long, env = "RALLY_IDLE_TIMEOUT", default_value = "30s", value_parser = duration)]
    pub idle_timeout: Duration,

    /// Keep-alive interval: QUIC keep-alive and WebSocket pings. Well under
    /// the 60 s idle limit of common proxies and NATs.
    #[arg(long, env = "RALLY_KEEPALIVE", default_value = "10s", value_parser = duration)]
    pub keepalive: Duration,

    /// Each session sends a `Pong` with `client_time_us` 0 this often, even
    /// in a room that sends nothing else, so that a client's silence
    /// watchdog (2 s by default, PROTOCOL.md §7.3) can tell a quiet room
    /// from a dead server. At most half the clients' watchdog; 0 turns it
    /// off.
    #[arg(long, env = "RALLY_HEARTBEAT", default_value = "1s", value_parser = duration)]
    pub heartbeat: Duration,

    /// A peer whose connection accepts nothing for this long is closed with
    /// `too_slow`.
    #[arg(long, env = "RALLY_SLOW_PEER_TIMEOUT", default_value = "5s", value_parser = duration)]
    pub slow_peer_timeout: Duration,

    /// Kernel send buffer of each TCP connection (SO_SNDBUF). Small on
    /// purpose: a WebSocket peer that stops reading then blocks our writes
    /// after about a second of snapshots instead of minutes, and the
    /// slow-peer timeout can act. How much of it may wait unsent is
    /// --tcp-notsent-lowat.
    #[arg(long, env = "RALLY_TCP_SEND_BUFFER", default_value_t = 64 * 1024)]
    pub tcp_send_buffer: usize,

    /// Most bytes each TCP connection leaves unsent in the kernel
    /// (TCP_NOTSENT_LOWAT, Linux): the socket takes no more, and reads as
    /// not writable, past it. A snapshot then waits in Rally's newest-wins
    /// slot instead of in the kernel, so a slow or stalled WebSocket or
    /// HTTP stream reader skips ticks within about this many bytes
    /// (PROTOCOL.md §5). A few snapshots' worth; 0 leaves the kernel's
    /// default (no bound below --tcp-send-buffer).
    #[arg(long, env = "RALLY_TCP_NOTSENT_LOWAT", default_value_t = 16 * 1024)]
    pub tcp_notsent_lowat: u32,

    /// Kernel receive and send buffers of the UDP socket (SO_RCVBUF,
    /// SO_SNDBUF). Every QUIC connection shares it: a burst of handshakes
    /// or of acknowledgements must not overflow it (the kernel's 208 KiB
    /// default dropped ~5 000 packets while 5 000 clients connected). The
    /// kernel caps it at `net.core.rmem_max` / `wmem_max`.
    #[arg(long, env = "RALLY_UDP_BUFFER", default_value_t = 4 * 1024 * 1024)]
    pub udp_buffer: usize,

    /// Largest client message on any channel (PROTOCOL.md §8), sent to
    /// clients in `Welcome`. Must not exceed --ws-max-message.
    #[arg(long, env = "RALLY_MAX_CLIENT_MESSAGE", default_value_t = 256,
          value_parser = clap::value_parser!(u64).range(64..=65_535))]
    pub max_client_message: u64,

    /// Largest single input of an `Input` message, in bytes (PROTOCOL.md
    /// §4), sent to clients in `Welcome`.
    #[arg(long, env = "RALLY_MAX_INPUT_BYTES", default_value_t = 32)]
    pub max_input_bytes: u8,

    /// WebSocket: largest frame and message the WebSocket layer accepts;
    /// above it the peer gets `message_too_large` from the WebSocket layer.
    #[arg(long, env = "RALLY_WS_MAX_MESSAGE", default_value_t = 4096,
          value_parser = clap::value_parser!(u64).range(256..=1_048_576))]
    pub ws_max_message: u64,

    /// HTTP streaming: largest `POST` body, bytes (PROTOCOL.md §11.2);
    /// larger gets 413.
    #[arg(long, env = "RALLY_HTTP_MAX_POST", default_value_t = 16 * 1024)]
    pub http_max_post: usize,

    /// WebSocket: most bytes buffered for one slow connection before writes
    /// wait (and the slow-peer timeout can act).
    #[arg(long, env = "RALLY_WS_WRITE_BUFFER", default_value_t = 256 * 1024)]
    pub ws_write_buffer: usize,

    /// HTTP/3: largest request header section (SETTINGS_MAX_FIELD_SECTION_SIZE).
    #[arg(long, env = "RALLY_H3_MAX_HEADER", default_value_t = 16 * 1024)]
    pub h3_max_header: u64,

    /// QUIC: concurrent streams the client may open, each direction
    /// (HTTP/3 needs 3 unidirectional; a session uses 1 bidirectional).
    #[arg(long, env = "RALLY_QUIC_MAX_STREAMS", default_value_t = 8)]
    pub quic_max_streams: u32,

    /// QUIC: receive window per stream, bytes.
    #[arg(long, env = "RALLY_QUIC_STREAM_WINDOW", default_value_t = 64 * 1024)]
    pub quic_stream_window: u32,

    /// QUIC: receive window per connection, bytes.
    #[arg(long, env = "RALLY_QUIC_CONNECTION_WINDOW", default_value_t = 256 * 1024)]
    pub quic_connection_window: u32,

    /// QUIC: datagram send buffer per connection, bytes. When full, quinn
    /// drops the oldest datagram, so this bounds snapshot staleness: 4 KiB
    /// is about three ~1 KB snapshots (~50 ms at 60 Hz).
    #[arg(long, env = "RALLY_DATAGRAM_SEND_BUFFER", default_value_t = 4 * 1024)]
    pub datagram_send_buffer: usize,

    /// QUIC: datagram receive buffer per connection, bytes.
    #[arg(long, env = "RALLY_DATAGRAM_RECV_BUFFER", default_value_t = 64 * 1024)]
    pub datagram_recv_buffer: usize,

    /// Time given to sessions to close cleanly on shutdown.
    #[arg(long, env = "RALLY_SHUTDOWN_GRACE", default_value = "3s", value_parser = duration)]
    pub shutdown_grace: Duration,
}

/// Cluster mode (README "Many nodes"; PROTOCOL.md §13). Without `--redis`
/// the server is one process with no extra service.
#[derive(Debug, Clone, Args)]
pub struct ClusterArgs {
    /// Redis URL of the cluster's directory, e.g. `redis://10.0.0.5:6379`
    /// (`rediss://` for TLS). Nodes register there, and each room is owned
    /// by one node through a lease. Unreachable at startup: the server
    /// exits with an error naming it.
    #[arg(long, env = "RALLY_REDIS", hide_env_values = true)]
    pub redis: Option<String>,

    /// Prefix of every Redis key, so clusters can share one Redis.
    #[arg(long, env = "RALLY_REDIS_PREFIX", default_value = "rally")]
    pub redis_prefix: String,

    /// This node's id in the cluster: 1–64 of `A–Z a–z 0–9 _ - .`. Default:
    /// random per process (a restarted node is a new node).
    #[arg(long, env = "RALLY_NODE_ID")]
    pub node_id: Option<String>,

    /// How long a node's registration and its room leases live without a
    /// renewal (renewed every third of it): the time a dead node's rooms
    /// stay unavailable.
    #[arg(long, env = "RALLY_LEASE_TTL", default_value = "5s", value_parser = duration)]
    pub lease_ttl: Duration,

    /// The origin clients reach this node at, e.g.
    /// `https://node-1.game.example:4433`: its host and port are published
    /// for both UDP (WebTransport) and TCP. Default: the listen addresses.
    #[arg(long, env = "RALLY_PUBLIC_URL")]
    pub public_url: Option<url::Url>,
}

impl ServeConfig {
    /// Checks what the flags cannot check one by one.
    pub fn check(&self) -> anyhow::Result<()> {
        let l = &self.limits;
        if l.ws_max_message < l.max_client_message {
            anyhow::bail!(
                "--ws-max-message ({}) is below --max-client-message ({}): WebSocket clients could not send what the protocol allows",
                l.ws_max_message,
                l.max_client_message
            );
        }
        let c = &self.cluster;
        if let Some(id) = &c.node_id {
            if !crate::cluster::valid_node_id(id) {
                anyhow::bail!("--node-id {id:?}: 1-64 characters of A-Z a-z 0-9 _ - .");
            }
        }
        if c.lease_ttl < Duration::from_millis(300) {
            anyhow::bail!(
                "--lease-ttl {:?} is below 300ms: leases would expire between renewals",
                c.lease_ttl
            );
        }
        if let Some(u) = &c.public_url {
            if !matches!(u.scheme(), "http" | "https") || u.host_str().is_none() {
                anyhow::bail!("--public-url {u}: expected http(s)://HOST[:PORT]");
            }
        }
        if self
            .admin_token
            .as_deref()
            .is_some_and(|t| t.trim().is_empty())
        {
            anyhow::bail!(
                "--admin-token is empty: an empty token would open the admin page to anyone"
            );
        }
        Ok(())
    }

    pub fn tick_period(&self) -> Duration {
        Duration::from_secs_f64(1.0 / self.tick_hz as f64)
    }
}

/// The defaults, as the flags define them: parsed from no arguments with
/// the environment ignored. The clap attributes are the one place they are
/// written.
fn clap_defaults<T: clap::FromArgMatches + clap::Args>() -> T {
    let cmd = T::augment_args(clap::Command::new("defaults")).mut_args(|a| a.env(None::<&str>));
    let m = cmd
        .try_get_matches_from(["defaults"])
        .expect("every flag has a default or is optional");
    T::from_arg_matches(&m).expect("the defaults parse")
}

impl Default for ServeConfig {
    fn default() -> Self {
        clap_defaults()
    }
}

impl Default for ClusterArgs {
    fn default() -> Self {
        clap_defaults()
    }
}

impl Default for Limits {
    fn default() -> Self {
        clap_defaults()
    }
}

/// Keys of a config file that are not flags of `cmd`, and values it cannot
/// take as a flag's argument, are errors naming them.
#[derive(Debug, thiserror::Error)]
pub enum ConfigFileError {
    #[error("reading the config file {0}: {1}")]
    Read(std::path::PathBuf, std::io::Error),
    #[error("the config file {0} is not valid TOML: {1}")]
    Toml(std::path::PathBuf, toml::de::Error),
    #[error("unknown key `{key}` in the config file {file} (keys are the flags' long names)")]
    UnknownKey {
        file: std::path::PathBuf,
        key: String,
    },
    #[error("key `{key}` in the config file {file}: {why}")]
    BadValue {
        file: std::path::PathBuf,
        key: String,
        why: &'static str,
    },
}

/// The `--config` file named on the command line (`--config F` or
/// `--config=F`) or by `RALLY_CONFIG`, if any.
pub fn config_path(argv: &[std::ffi::OsString]) -> Option<std::path::PathBuf> {
    let mut it = argv.iter();
    while let Some(a) = it.next() {
        let a = a.to_string_lossy();
        if a == "--config" {
            return it.next().map(Into::into);
        }
        if let Some(v) = a.strip_prefix("--config=") {
            return Some(v.into());
        }
    }
    std::env::var_os("RALLY_CONFIG").map(Into::into)
}

/// Applies a TOML config file to `cmd`'s flags with the precedence flag >
/// environment > file > default: each key (a flag's long name, e.g.
/// `tick-hz = 30`) becomes the flag's `RALLY_*` environment variable
/// unless that is already set, so a flag given on the command line still
/// wins. Call it before parsing, before any thread starts (it sets
/// environment variables).
pub fn apply_file(cmd: &clap::Command, file: &std::path::Path) -> Result<(), ConfigFileError> {
    let text = std::fs::read_to_string(file).map_err(|e| ConfigFileError::Read(file.into(), e))?;
    let table: toml::Table =
        toml::from_str(&text).map_err(|e| ConfigFileError::Toml(file.into(), e))?;
    for (key, value) in table {
        let arg = cmd
            .get_arguments()
            .find(|a| a.get_long() == Some(key.as_str()) && a.get_long() != Some("config"));
        let Some(env) = arg.and_then(|a| a.get_env()) else {
            return Err(ConfigFileError::UnknownKey {
                file: file.into(),
                key,
            });
        };
        let bad = |why| ConfigFileError::BadValue {
            file: file.into(),
            key: key.clone(),
            why,
        };
        let as_text = |v: &toml::Value| match v {
            toml::Value::String(s) => Ok(s.clone()),
            toml::Value::Integer(i) => Ok(i.to_string()),
            toml::Value::Float(f) => Ok(f.to_string()),
            toml::Value::Boolean(b) => Ok(b.to_string()),
            _ => Err(bad("expected a string, number or boolean")),
        };
        let value = match &value {
            // Lists (`allow-origin`, `game-opt`) as the flags' comma lists.
            toml::Value::Array(items) => items
                .iter()
                .map(as_text)
                .collect::<Result<Vec<_>, _>>()?
                .join(","),
            v => as_text(v)?,
        };
        if std::env::var_os(env).is_none() {
            // SAFETY-free in edition 2021; done at startup, before threads.
            std::env::set_var(env, value);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, Parser};

    #[derive(Parser)]
    struct Serve {
        #[command(flatten)]
        config: ServeConfig,
    }

    /// The example file lists every key of `rally serve`, each set to its
    /// default or (for those without one) commented out.
    #[test]
    fn the_example_config_file_has_every_key_and_the_defaults() {
        let file = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/rally.toml");
        let text = std::fs::read_to_string(file).unwrap();
        let table: toml::Table = toml::from_str(&text).unwrap();
        let mut cli = crate::cli::Cli::command();
        cli.build();
        let serve = cli.find_subcommand("serve").unwrap();
        for arg in serve.get_arguments() {
            let Some(long) = arg.get_long() else { continue };
            if matches!(long, "config" | "help" | "version") {
                continue;
            }
            let default: Vec<String> = arg
                .get_default_values()
                .iter()
                .map(|v| v.to_string_lossy().into_owned())
                .collect();
            match table.get(long) {
                Some(v) => {
                    let v = match v {
                        toml::Value::String(s) => s.clone(),
                        other => other.to_string(),
                    };
                    let want = default.first().cloned().unwrap_or_else(|| "false".into());
                    assert_eq!(v, want, "`{long}` is not its default");
                }
                None => assert!(
                    default.is_empty() && text.contains(&format!("# {long} =")),
                    "docs/rally.toml lacks `{long}`"
                ),
            }
        }
        for key in table.keys() {
            assert!(
                serve
                    .get_arguments()
                    .any(|a| a.get_long() == Some(key.as_str())),
                "docs/rally.toml has `{key}`, which is no flag"
            );
        }
    }

    #[test]
    fn unknown_keys_and_bad_values_are_named() {
        let dir = std::env::temp_dir().join(format!("rally-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("bad.toml");
        std::fs::write(&f, "speed-of-light = 1\n").unwrap();
        let err = apply_file(&Serve::command(), &f).unwrap_err().to_string();
        assert!(
            err.contains("`speed-of-light`") && err.contains("bad.toml"),
            "{err}"
        );
        std::fs::write(&f, "listen = { a = 1 }\n").unwrap();
        let err = apply_file(&Serve::command(), &f).unwrap_err().to_string();
        assert!(err.contains("`listen`"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn defaults_come_from_the_flags() {
        let d = ServeConfig::default();
        assert_eq!(d.tick_hz, 60);
        assert_eq!(d.limits.max_client_message, 256);
        assert_eq!(d.limits.idle_timeout, Duration::from_secs(30));
        assert_eq!(Limits::default().msg_burst, 120);
    }
}
