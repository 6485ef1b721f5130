//! The server, as a library: [`Server::builder`] takes the options (the
//! same type as `rally serve`'s flags), the game and any extra files, and
//! runs the two front ends on one port number, certificate renewal and
//! graceful shutdown.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::{OriginPolicy, TokenKey};
use crate::cert::{self, CertStore, DevCertPolicy};
use crate::cluster::{Cluster, NodeAddr};
use crate::config::ServeConfig;
use crate::game::{GameOptions, MakeGame};
use crate::http::Pages;
use crate::metrics::Metrics;
use crate::protocol::ErrorCode;
use crate::room::{GameFactory, RoomConfig, Rooms};
use crate::shared::Shared;
use crate::transport::{quic, tcp};

fn rustls_config(certs: Arc<CertStore>, alpn: &[&[u8]]) -> anyhow::Result<rustls::ServerConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_cert_resolver(certs);
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(cfg)
}

/// The QUIC endpoint's socket, with kernel buffers of `buffer` bytes each
/// way (as far as the kernel allows: it caps them silently).
pub(crate) fn udp_socket(
    addr: std::net::SocketAddr,
    buffer: usize,
) -> std::io::Result<std::net::UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    let _ = socket.set_recv_buffer_size(buffer);
    let _ = socket.set_send_buffer_size(buffer);
    // Linux reports twice what it grants (the other half is bookkeeping).
    let got = |size: std::io::Result<usize>| size.map_or(0, |n| n / 2);
    let (rcv, snd) = (
        got(socket.recv_buffer_size()),
        got(socket.send_buffer_size()),
    );
    if rcv < buffer || snd < buffer {
        tracing::warn!(
            requested = buffer,
            receive = rcv,
            send = snd,
            "UDP socket buffers capped by the kernel (net.core.rmem_max / wmem_max): \
             bursts of QUIC packets may be dropped"
        );
    }
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

/// QUIC transport limits sized for a game session.
fn transport_config(cfg: &ServeConfig) -> anyhow::Result<quinn::TransportConfig> {
    let l = &cfg.limits;
    let mut t = quinn::TransportConfig::default();
    // HTTP/3 needs the client's control and two QPACK streams; WebTransport
    // adds one bidi stream; a few requests may share the connection.
    t.max_concurrent_uni_streams(l.quic_max_streams.into());
    t.max_concurrent_bidi_streams(l.quic_max_streams.into());
    t.stream_receive_window(l.quic_stream_window.into());
    t.receive_window(l.quic_connection_window.into());
    t.send_window(1024 * 1024);
    // Newest-wins for snapshots: quinn drops the oldest queued datagrams to
    // make room, so the buffer is the staleness bound. 4 KiB holds about
    // three full-size snapshots (~50 ms at 60 Hz) plus a pong; the old
    // 16 KiB let ~250 ms of stale state queue behind a congested path.
    t.datagram_send_buffer_size(l.datagram_send_buffer);
    t.datagram_receive_buffer_size(Some(l.datagram_recv_buffer));
    t.max_idle_timeout(Some(
        cfg.limits
            .idle_timeout
            .try_into()
            .context("--idle-timeout too large for QUIC")?,
    ));
    t.keep_alive_interval(Some(cfg.limits.keepalive));
    Ok(t)
}

/// Renews the development certificate while the server runs: publishes the
/// next certificate when `renew_before` is left, and switches new
/// connections to it when half of that is left.
async fn renew_dev_cert(shared: Arc<Shared>, policy: DevCertPolicy) {
    let check: time::Duration =
        (policy.renew_before / 10i32).clamp(time::Duration::seconds(1), time::Duration::hours(1));
    let check = Duration::try_from(check).unwrap_or(Duration::from_secs(60));
    loop {
        tokio::select! {
            _ = shared.shutdown.cancelled() => return,
            _ = tokio::time::sleep(check) => {}
        }
        let now = time::OffsetDateTime::now_utc();
        let left = shared.certs.current().not_after - now;
        if left <= policy.renew_before && shared.certs.next().is_none() {
            match cert::generate_dev(now, policy.validity) {
                Ok(next) => {
                    tracing::info!(next = %next.sha256_hex(), "publishing the next development certificate");
                    shared.certs.set_next(next);
                }
                Err(e) => tracing::error!("generating the next certificate: {e:#}"),
            }
        }
        if left <= policy.renew_before / 2i32 {
            match shared.certs.promote() {
                Ok(Some(cur)) => {
                    tracing::info!(current = %cur.sha256_hex(), "new connections now get the renewed certificate");
                    if let Err(e) = cert::write_dev(&shared.cfg.cert_dir, &cur) {
                        tracing::error!("saving the renewed certificate: {e:#}");
                    }
                }
                Ok(None) => {}
                Err(e) => tracing::error!("switching certificates: {e:#}"),
            }
        }
    }
}

fn to_time(d: Duration) -> time::Duration {
    time::Duration::try_from(d).unwrap_or(time::Duration::days(14))
}

/// Starts the server and runs until `shutdown` resolves, then drains.
/// A Rally server: build one with [`Server::builder`].
///
/// ```no_run
/// # use rally::game::{Ctx, Game, Join, PlayerId, Reject, RoomInfo};
/// # struct MyGame;
/// # impl MyGame { fn new(_: &RoomInfo) -> Self { MyGame } }
/// # impl Game for MyGame {
/// #     fn join(&mut self, _: &mut Ctx, _: PlayerId, _: Join) -> Result<(), Reject> { Ok(()) }
/// #     fn leave(&mut self, _: &mut Ctx, _: PlayerId) {}
/// # }
/// # async fn run() -> anyhow::Result<()> {
/// rally::Server::builder().game(MyGame::new).serve().await
/// # }
/// ```
pub struct Server;

impl Server {
    pub fn builder() -> Builder {
        Builder {
            config: ServeConfig::default(),
            game: None,
            files: Vec::new(),
            on_ready: None,
        }
    }
}

type OnReady = Box<dyn FnOnce(&Listening) + Send>;

/// Configures a [`Server`]: its options (the same as `rally serve`'s), its
/// game, and extra files to serve.
pub struct Builder {
    config: ServeConfig,
    game: Option<GameFactory>,
    files: Vec<(String, Bytes)>,
    on_ready: Option<OnReady>,
}

/// Where a started server listens, and the certificate hash to pin.
#[derive(Debug, Clone)]
pub struct Listening {
    pub udp: SocketAddr,
    pub tcp: SocketAddr,
    pub cert_sha256: String,
}

impl Listening {
    /// The line `rally serve` prints on stdout once it listens: what
    /// scripts and tests wait for (see [`crate::launch`]).
    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "event": "listening",
            "udp": self.udp.to_string(),
            "tcp": self.tcp.to_string(),
            "cert_sha256": self.cert_sha256,
        })
    }
}

/// The default announcement: the JSON line on stdout, a human line on stderr.
fn announce(l: &Listening) {
    println!("{}", l.json());
    eprintln!(
        "Rally is up. Open http://{}/ in a browser (WebTransport on udp/{}, WebSocket on tcp/{}).",
        l.tcp,
        l.udp.port(),
        l.tcp.port()
    );
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
pub async fn stop_signal() {
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

/// A lower-case game name from a type name: `my_game::MyGame` → `mygame`.
fn default_game_name<G>() -> String {
    let full = std::any::type_name::<G>();
    let last = full.rsplit("::").next().unwrap_or(full);
    last.split('<').next().unwrap_or(last).to_ascii_lowercase()
}

impl Builder {
    /// Every option, as `rally serve` takes them (flags, `RALLY_*`
    /// environment variables and their defaults are one type).
    pub fn config(mut self, config: ServeConfig) -> Self {
        self.config = config;
        self
    }

    /// Reads the options from this process's command line and `RALLY_*`
    /// environment, exactly as `rally serve` does (`--help` prints them).
    /// A `--config FILE` (or `RALLY_CONFIG`) is read first: see
    /// [`crate::config::apply_file`]; an unreadable or wrong file ends the
    /// process with a message naming it.
    pub fn config_from_args(self) -> Self {
        #[derive(clap::Parser)]
        struct Args {
            #[command(flatten)]
            config: ServeConfig,
        }
        let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
        if let Some(file) = crate::config::config_path(&argv) {
            let cmd = <Args as clap::CommandFactory>::command();
            if let Err(e) = crate::config::apply_file(&cmd, &file) {
                eprintln!("error: {e}");
                std::process::exit(2);
            }
        }
        let args = <Args as clap::Parser>::parse();
        self.config(args.config)
    }

    /// The game every room of this server runs, made once per room by
    /// `make` (e.g. `MyGame::new` with `fn new(room: &RoomInfo) -> Self`).
    /// Its name, sent to clients in `Welcome.game`, is the type's name in
    /// lower case; [`Builder::game_named`] sets another.
    pub fn game<M: MakeGame>(self, make: M) -> Self {
        let name = default_game_name::<M::Game>();
        self.game_named(&name, make)
    }

    pub fn game_named<M: MakeGame>(mut self, name: &str, make: M) -> Self {
        self.game = Some(GameFactory::new(name, make));
        self
    }

    /// A game already made into a factory (e.g. a built-in one).
    pub fn game_factory(mut self, game: GameFactory) -> Self {
        self.game = Some(game);
        self
    }

    /// Serves `contents` at `path` over HTTP/3 and HTTP/1.1 (content type
    /// from the extension; `/` and paths without one are HTML). A game's
    /// page goes here; it loads the client from `/client/rally.js`.
    pub fn file(mut self, path: &str, contents: impl Into<Bytes>) -> Self {
        self.files.push((path.to_string(), contents.into()));
        self
    }

    /// Called once the server listens (instead of printing the listening
    /// line on stdout and a greeting on stderr).
    pub fn on_ready(mut self, f: impl FnOnce(&Listening) + Send + 'static) -> Self {
        self.on_ready = Some(Box::new(f));
        self
    }

    /// Runs until SIGINT or SIGTERM, then shuts down gracefully.
    pub async fn serve(self) -> anyhow::Result<()> {
        self.serve_until(stop_signal()).await
    }

    /// Runs until `shutdown` resolves, then shuts down gracefully.
    pub async fn serve_until(self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        let game = self
            .game
            .ok_or_else(|| anyhow::anyhow!("no game: call Builder::game before serving"))?;
        let on_ready = self.on_ready.unwrap_or_else(|| Box::new(announce));
        run(self.config, game, self.files, shutdown, on_ready).await
    }
}

async fn run(
    cfg: ServeConfig,
    game: GameFactory,
    files: Vec<(String, Bytes)>,
    shutdown: impl Future<Output = ()>,
    on_ready: OnReady,
) -> anyhow::Result<()> {
    cfg.check()?;
    let policy = DevCertPolicy {
        validity: to_time(cfg.dev_cert_validity),
        renew_before: to_time(cfg.dev_cert_renew_before),
    };
    let cert = match (&cfg.cert, &cfg.key) {
        (Some(c), Some(k)) => cert::load_pem(c, k)?,
        _ => {
            let (bundle, created) =
                cert::load_or_create_dev(&cfg.cert_dir, time::OffsetDateTime::now_utc(), policy)?;
            if created {
                tracing::info!(dir = %cfg.cert_dir.display(), "created development certificate");
            }
            bundle
        }
    };
    let dev = cert.dev;
    let certs = Arc::new(CertStore::new(cert)?);

    let quic_tls = rustls_config(certs.clone(), &[b"h3"])?;
    let quic_crypto = quinn::crypto::rustls::QuicServerConfig::try_from(quic_tls)
        .context("TLS configuration unusable for QUIC")?;
    let mut server_config = quinn::ServerConfig::with_crypto(Arc::new(quic_crypto));
    server_config.transport_config(Arc::new(transport_config(&cfg)?));
    // With port 0 for both, TCP takes the UDP port's number; if another
    // program holds that TCP port, pick another UDP port and try again.
    let pick_both = cfg.listen.port() == 0 && cfg.tcp_listen.port() == 0;
    let mut attempts = 0;
    let (endpoint, udp, listener) = loop {
        attempts += 1;
        let socket = udp_socket(cfg.listen, cfg.limits.udp_buffer)
            .with_context(|| format!("binding UDP {}", cfg.listen))?;
        let runtime = quinn::default_runtime().context("no async runtime for quinn")?;
        let endpoint = quinn::Endpoint::new(
            quinn::EndpointConfig::default(),
            Some(server_config.clone()),
            socket,
            runtime,
        )
        .with_context(|| format!("serving QUIC on UDP {}", cfg.listen))?;
        let udp = endpoint.local_addr()?;
        let mut tcp_addr = cfg.tcp_listen;
        if tcp_addr.port() == 0 {
            tcp_addr.set_port(udp.port());
        }
        match tokio::net::TcpListener::bind(tcp_addr).await {
            Ok(l) => break (endpoint, udp, l),
            Err(e) if pick_both && attempts < 20 && e.kind() == std::io::ErrorKind::AddrInUse => {
                endpoint.close(0u32.into(), b"");
                continue;
            }
            Err(e) => return Err(e).with_context(|| format!("binding TCP {tcp_addr}")),
        }
    };
    let tcp_bound = listener.local_addr()?;

    // Dev certificates are served over plain HTTP: loopback pages are a
    // secure context, and browsers reach WebTransport through the hash.
    let tls = if dev {
        None
    } else {
        // HTTP/2 first: the HTTP streaming transport's stream and POSTs
        // then share one connection (PROTOCOL.md §11).
        let tcp_tls = rustls_config(certs.clone(), &[b"h2", b"http/1.1"])?;
        Some(tokio_rustls::TlsAcceptor::from(Arc::new(tcp_tls)))
    };
    let alt_svc = (!dev).then(|| format!("h3=\":{}\"; ma=86400", udp.port()));

    let metrics = Arc::new(Metrics::default());
    let room_cfg = RoomConfig {
        tick_hz: cfg.tick_hz,
        snapshot_every: cfg.snapshot_every,
        max_players: cfg.max_players_per_room as usize,
        resume_window: cfg.resume_window,
        max_message: cfg.limits.max_client_message as u16,
        max_input: cfg.limits.max_input_bytes,
        game_options: GameOptions::new(cfg.game_options.iter().cloned()),
    };
    let pages = Pages::new(game.name(), files);
    let node = node_addr(&cfg, udp, tcp_bound, dev);
    let rooms = Rooms::new(room_cfg, game, metrics.clone());
    let cluster = match &cfg.cluster.redis {
        Some(url) => {
            let certs = dev.then(|| certs.clone());
            let c = Cluster::connect(&cfg.cluster, url, node.clone(), certs).await?;
            rooms.set_cluster(c.clone());
            tracing::info!(node = %node.id, url = %node.url, "joined the cluster");
            Some(c)
        }
        None => None,
    };
    let shared = Arc::new(Shared {
        rooms,
        node,
        cluster,
        pages,
        http: Default::default(),
        metrics,
        live: Default::default(),
        sessions: Arc::new(Semaphore::new(cfg.max_sessions)),
        alt_svc,
        origins: OriginPolicy::new(&cfg.allow_origin, dev),
        tokens: cfg
            .token_secret
            .as_ref()
            .map(|s| TokenKey::new(s.as_bytes())),
        admin: cfg.admin_token.as_deref().map(crate::admin::Admin::new),
        shutdown: CancellationToken::new(),
        tcp_stop: CancellationToken::new(),
        tasks: TaskTracker::new(),
        connections: AtomicUsize::new(0),
        per_ip: Mutex::new(HashMap::new()),
        certs,
        cfg,
    });

    if let Some(c) = &shared.cluster {
        // Registered before the listening line: a script (or a test) that
        // waits for it finds the node in the cluster.
        c.heartbeat(&shared.rooms, 0).await;
    }
    on_ready(&Listening {
        udp,
        tcp: tcp_bound,
        cert_sha256: shared.certs.current().sha256_hex(),
    });
    tracing::info!(%udp, tcp = %tcp_bound, "listening");

    let quic_task = tokio::spawn(quic::serve(endpoint.clone(), shared.clone()));
    let tcp_task = tokio::spawn(tcp::serve(listener, tls, shared.clone()));
    if dev {
        tokio::spawn(renew_dev_cert(shared.clone(), policy));
    }
    let cluster_stop = CancellationToken::new();
    if let Some(c) = &shared.cluster {
        tokio::spawn(c.clone().run(shared.clone(), cluster_stop.clone()));
    }
    if shared.admin.is_some() {
        tracing::info!("admin page at {}/admin", shared.node.url);
        tokio::spawn(crate::admin::sample(shared.clone()));
    }

    shutdown.await;
    if let Some(c) = &shared.cluster {
        // Draining first: no new room lands here, and the rooms here are
        // free for their players to find elsewhere.
        cluster_stop.cancel();
        c.drain(&shared.rooms, shared.live.len() as u64).await;
    }
    // Stop accepting (QUIC at once, TCP once polled HTTP sessions have
    // their Error), tell every session (close codes; GOAWAY on HTTP/3
    // connections), give them a bounded time to drain, then close the
    // endpoint and wait for QUIC to finish.
    tracing::info!("shutting down: telling clients");
    quic_task.abort();
    shared.shutdown.cancel();
    shared.tasks.close();
    let grace = shared.cfg.limits.shutdown_grace;
    let deadline = tokio::time::Instant::now() + grace;
    // A poll-mode HTTP session fetches its Error shutting_down with a new
    // request (PROTOCOL.md §11.4): TCP goes on serving until each has, or
    // was forgotten, within the grace. Without such sessions this is at
    // once.
    if tokio::time::timeout_at(deadline, shared.http.polled_drained())
        .await
        .is_err()
    {
        tracing::warn!("polled HTTP sessions still waiting after {grace:?}");
    }
    tcp_task.abort();
    shared.tcp_stop.cancel();
    if tokio::time::timeout_at(deadline, shared.tasks.wait())
        .await
        .is_err()
    {
        tracing::warn!("connections still open after {grace:?}; closing them");
    }
    endpoint.close(
        quinn::VarInt::from_u32(ErrorCode::ShuttingDown.close_code() as u32),
        ErrorCode::ShuttingDown.name().as_bytes(),
    );
    let _ = tokio::time::timeout(Duration::from_secs(2), endpoint.wait_idle()).await;
    if let Some(c) = &shared.cluster {
        c.leave().await;
    }
    tracing::info!("shutdown complete");
    Ok(())
}

/// This node's id and the URLs clients reach it at: `--public-url`'s host
/// and port, else the bound addresses (an unspecified address is published
/// as loopback).
fn node_addr(cfg: &ServeConfig, udp: SocketAddr, tcp: SocketAddr, dev: bool) -> NodeAddr {
    let id = cfg.cluster.node_id.clone().unwrap_or_else(|| {
        let n: u64 = rand::random();
        format!("node-{:08x}", n as u32)
    });
    let host_of = |a: SocketAddr| match a.ip() {
        ip if ip.is_unspecified() && a.is_ipv4() => "127.0.0.1".to_string(),
        ip if ip.is_unspecified() => "[::1]".to_string(),
        std::net::IpAddr::V6(ip) => format!("[{ip}]"),
        ip => ip.to_string(),
    };
    let (url, wt_url) = match &cfg.cluster.public_url {
        Some(u) => {
            let host = u.host_str().unwrap_or("localhost");
            let port = u.port_or_known_default().unwrap_or(udp.port());
            let origin = u.origin().ascii_serialization();
            (origin, format!("https://{host}:{port}/rally"))
        }
        None => {
            let scheme = if dev { "http" } else { "https" };
            (
                format!("{scheme}://{}:{}", host_of(tcp), tcp.port()),
                format!("https://{}:{}/rally", host_of(udp), udp.port()),
            )
        }
    };
    NodeAddr { id, url, wt_url }
}

#[cfg(test)]
mod tests {
    /// What the kernel lets a socket have: `net.core.<name>`.
    fn kernel_max(name: &str) -> usize {
        std::fs::read_to_string(format!("/proc/sys/net/core/{name}"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0)
    }

    #[test]
    fn udp_socket_gets_the_buffers_asked_for_up_to_the_kernel_cap() {
        let want = 1 << 20;
        let s = super::udp_socket("127.0.0.1:0".parse().unwrap(), want).unwrap();
        let s = socket2::SockRef::from(&s);
        // Linux reports double what it grants.
        let rcv = s.recv_buffer_size().unwrap() / 2;
        let snd = s.send_buffer_size().unwrap() / 2;
        assert!(rcv >= want.min(kernel_max("rmem_max")), "SO_RCVBUF {rcv}");
        assert!(snd >= want.min(kernel_max("wmem_max")), "SO_SNDBUF {snd}");
    }
}
