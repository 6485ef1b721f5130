//! Runtime glue: certificates, the two front ends on one port number, the
//! shared state they serve from, and shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::Semaphore;

use crate::cert::{self, CertBundle};
use crate::config::{ServeConfig, SnapshotCarriage, ARENA_H, ARENA_W, SPEED};
use crate::metrics::Metrics;
use crate::protocol::{ErrorCode, ServerMsg};
use crate::room::state::GameParams;
use crate::room::{RoomConfig, Rooms};
use crate::session::{SessionCtx, TransportKind, TransportTx};
use crate::transport::{quic, tcp};

/// What every connection handler reads.
pub struct Shared {
    pub cert: CertBundle,
    pub rooms: Arc<Rooms>,
    pub metrics: Arc<Metrics>,
    /// One permit per live session, across both transports.
    pub sessions: Arc<Semaphore>,
    /// `Alt-Svc` value advertised over TCP (real certificates only).
    pub alt_svc: Option<String>,
    pub wt_snapshots: SnapshotCarriage,
}

impl Shared {
    pub fn session_ctx(&self) -> SessionCtx {
        SessionCtx {
            rooms: self.rooms.clone(),
            metrics: self.metrics.clone(),
        }
    }

    /// Tells a peer the server is at its session limit, then closes.
    pub async fn refuse_full<T: TransportTx>(&self, kind: TransportKind, tx: &mut T) {
        let code = ErrorCode::ServerFull;
        self.metrics.count_error(code);
        tracing::info!(transport = kind.label(), "session refused: server full");
        let msg = ServerMsg::Error {
            code: code.as_u16(),
            reason: "server is at its session limit".into(),
        };
        let _ = tx.send_reliable(msg.to_bytes()).await;
        tx.close(code.close_code(), code.name()).await;
    }
}

/// Where the server ended up listening.
#[derive(Debug, Clone, Copy)]
pub struct Bound {
    pub udp: SocketAddr,
    pub tcp: SocketAddr,
}

fn rustls_config(cert: &CertBundle, alpn: &[&[u8]]) -> anyhow::Result<rustls::ServerConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_single_cert(cert.chain.clone(), cert.key.clone_key())
        .context("certificate and key do not match")?;
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(cfg)
}

/// QUIC transport limits sized for a game session.
fn transport_config() -> quinn::TransportConfig {
    let mut t = quinn::TransportConfig::default();
    // HTTP/3 needs the client's control and two QPACK streams; WebTransport
    // adds one bidi stream; a few requests may share the connection.
    t.max_concurrent_uni_streams(8u32.into());
    t.max_concurrent_bidi_streams(8u32.into());
    t.stream_receive_window((64u32 * 1024).into());
    t.receive_window((256u32 * 1024).into());
    t.send_window(1024 * 1024);
    // Newest-wins for snapshots: quinn drops the oldest queued datagrams to
    // make room, so the buffer is the staleness bound. 4 KiB holds about
    // three full-size snapshots (~50 ms at 60 Hz) plus a pong; the old
    // 16 KiB let ~250 ms of stale state queue behind a congested path.
    t.datagram_send_buffer_size(4 * 1024);
    t.datagram_receive_buffer_size(Some(64 * 1024));
    t.max_idle_timeout(Some(
        Duration::from_secs(30)
            .try_into()
            .expect("30 s fits a VarInt"),
    ));
    t.keep_alive_interval(Some(Duration::from_secs(10)));
    t
}

/// Starts the server and runs until `shutdown` resolves.
pub async fn run(
    cfg: ServeConfig,
    shutdown: impl std::future::Future<Output = ()>,
    on_ready: impl FnOnce(Bound, &CertBundle),
) -> anyhow::Result<()> {
    let cert = match (&cfg.cert, &cfg.key) {
        (Some(c), Some(k)) => cert::load_pem(c, k)?,
        _ => {
            let (bundle, created) =
                cert::load_or_create_dev(&cfg.cert_dir, time::OffsetDateTime::now_utc())?;
            if created {
                tracing::info!(dir = %cfg.cert_dir.display(), "created development certificate");
            }
            bundle
        }
    };

    let quic_tls = rustls_config(&cert, &[b"h3"])?;
    let quic_crypto = quinn::crypto::rustls::QuicServerConfig::try_from(quic_tls)
        .context("TLS configuration unusable for QUIC")?;
    let mut server_config = quinn::ServerConfig::with_crypto(Arc::new(quic_crypto));
    server_config.transport_config(Arc::new(transport_config()));
    let endpoint = quinn::Endpoint::server(server_config, cfg.listen)
        .with_context(|| format!("binding UDP {}", cfg.listen))?;
    let udp = endpoint.local_addr()?;

    let mut tcp_addr = cfg.tcp_listen;
    if tcp_addr.port() == 0 {
        tcp_addr.set_port(udp.port());
    }
    let listener = tokio::net::TcpListener::bind(tcp_addr)
        .await
        .with_context(|| format!("binding TCP {tcp_addr}"))?;
    let tcp_bound = listener.local_addr()?;

    // Dev certificates are served over plain HTTP: loopback pages are a
    // secure context, and browsers reach WebTransport through the hash.
    let tls = if cert.dev {
        None
    } else {
        let tcp_tls = rustls_config(&cert, &[b"http/1.1"])?;
        Some(tokio_rustls::TlsAcceptor::from(Arc::new(tcp_tls)))
    };
    let alt_svc = (!cert.dev).then(|| format!("h3=\":{}\"; ma=86400", udp.port()));

    let metrics = Arc::new(Metrics::default());
    let room_cfg = RoomConfig {
        game: GameParams {
            tick_hz: cfg.tick_hz,
            arena_w: ARENA_W,
            arena_h: ARENA_H,
            speed: SPEED,
            max_players: cfg.max_players_per_room as usize,
        },
        snapshot_every: cfg.snapshot_every,
    };
    let shared = Arc::new(Shared {
        rooms: Rooms::new(room_cfg, metrics.clone()),
        metrics,
        sessions: Arc::new(Semaphore::new(cfg.max_sessions)),
        alt_svc,
        wt_snapshots: cfg.wt_snapshots,
        cert,
    });

    on_ready(
        Bound {
            udp,
            tcp: tcp_bound,
        },
        &shared.cert,
    );
    tracing::info!(%udp, tcp = %tcp_bound, "listening");

    let quic_task = tokio::spawn(quic::serve(endpoint.clone(), shared.clone()));
    let tcp_task = tokio::spawn(tcp::serve(listener, tls, shared.clone()));

    shutdown.await;
    tracing::info!("shutting down");
    tcp_task.abort();
    endpoint.close(
        quinn::VarInt::from_u32(ErrorCode::ShuttingDown.close_code() as u32),
        ErrorCode::ShuttingDown.name().as_bytes(),
    );
    let _ = tokio::time::timeout(Duration::from_secs(3), endpoint.wait_idle()).await;
    quic_task.abort();
    Ok(())
}
