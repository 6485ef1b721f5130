//! Runtime glue: certificates, the two front ends on one port number, the
//! shared state they serve from, connection limits, certificate renewal and
//! graceful shutdown.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::{Claims, OriginPolicy, TokenError, TokenKey};
use crate::cert::{self, CertBundle, CertStore, DevCertPolicy};
use crate::config::{ServeConfig, ARENA_H, ARENA_W, SPEED};
use crate::metrics::Metrics;
use crate::protocol::{ErrorCode, ServerMsg};
use crate::room::state::GameParams;
use crate::room::{RoomConfig, Rooms};
use crate::session::{SessionCtx, TransportKind, TransportTx};
use crate::transport::{quic, tcp};

/// What every connection handler reads.
pub struct Shared {
    pub cfg: ServeConfig,
    pub certs: Arc<CertStore>,
    pub rooms: Arc<Rooms>,
    pub metrics: Arc<Metrics>,
    /// One permit per live session, across both transports.
    pub sessions: Arc<Semaphore>,
    /// `Alt-Svc` value advertised over TCP (real certificates only).
    pub alt_svc: Option<String>,
    pub origins: OriginPolicy,
    pub tokens: Option<TokenKey>,
    /// Cancelled when shutdown begins.
    pub shutdown: CancellationToken,
    /// Every connection task, so shutdown can wait for them to drain.
    pub tasks: TaskTracker,
    connections: AtomicUsize,
    // std Mutex: a map update per connection open/close, never across .await.
    per_ip: Mutex<HashMap<IpAddr, usize>>,
}

/// Why a session request is refused before any session exists.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error("origin not allowed")]
    Origin,
    #[error("join token: {0}")]
    Token(#[from] TokenError),
}

impl Refusal {
    pub fn status(&self) -> http::StatusCode {
        match self {
            Refusal::Origin => http::StatusCode::FORBIDDEN,
            Refusal::Token(_) => http::StatusCode::UNAUTHORIZED,
        }
    }
}

/// Holds one slot of the connection limits; dropping it frees the slot.
pub struct ConnGuard {
    shared: Arc<Shared>,
    ip: IpAddr,
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        self.shared.connections.fetch_sub(1, Relaxed);
        let mut map = self.shared.per_ip.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = map.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.ip);
            }
        }
    }
}

impl Shared {
    pub fn session_ctx(&self, claims: Option<Claims>) -> SessionCtx {
        SessionCtx {
            rooms: self.rooms.clone(),
            metrics: self.metrics.clone(),
            limits: self.cfg.limits.clone(),
            shutdown: self.shutdown.clone(),
            claims,
        }
    }

    /// Takes a connection slot for `ip`, or `None` when the total or per-IP
    /// limit is reached (the caller refuses the connection).
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<ConnGuard> {
        let limits = &self.cfg.limits;
        let mut map = self.per_ip.lock().unwrap_or_else(|e| e.into_inner());
        let n = map.entry(ip).or_insert(0);
        if *n >= limits.max_connections_per_ip
            || self.connections.load(Relaxed) >= limits.max_connections
        {
            if *n == 0 {
                map.remove(&ip);
            }
            self.metrics.connections_refused.fetch_add(1, Relaxed);
            return None;
        }
        *n += 1;
        self.connections.fetch_add(1, Relaxed);
        Some(ConnGuard {
            shared: self.clone(),
            ip,
        })
    }

    /// The checks made before a session is opened, identical for the
    /// WebSocket upgrade and the WebTransport CONNECT.
    pub fn authorize(
        &self,
        origin: Option<&str>,
        query: Option<&str>,
    ) -> Result<Option<Claims>, Refusal> {
        let result = self.authorize_inner(origin, query);
        if let Err(e) = &result {
            self.metrics.sessions_forbidden.fetch_add(1, Relaxed);
            tracing::info!(origin, "session refused: {e}");
        }
        result
    }

    fn authorize_inner(
        &self,
        origin: Option<&str>,
        query: Option<&str>,
    ) -> Result<Option<Claims>, Refusal> {
        if !self.origins.allows(origin) {
            return Err(Refusal::Origin);
        }
        let Some(key) = &self.tokens else {
            return Ok(None);
        };
        let token = crate::auth::token_from_query(query).ok_or(TokenError::Missing)?;
        let now = time::OffsetDateTime::now_utc().unix_timestamp().max(0) as u64;
        Ok(Some(key.verify(&token, now)?))
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
        let _ =
            tokio::time::timeout(Duration::from_secs(2), tx.send_reliable(msg.to_bytes())).await;
        tx.close(code.close_code(), code.name()).await;
    }
}

/// Where the server ended up listening.
#[derive(Debug, Clone, Copy)]
pub struct Bound {
    pub udp: SocketAddr,
    pub tcp: SocketAddr,
}

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
pub async fn run(
    cfg: ServeConfig,
    shutdown: impl std::future::Future<Output = ()>,
    on_ready: impl FnOnce(Bound, &CertBundle),
) -> anyhow::Result<()> {
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
        let tcp_tls = rustls_config(certs.clone(), &[b"http/1.1"])?;
        Some(tokio_rustls::TlsAcceptor::from(Arc::new(tcp_tls)))
    };
    let alt_svc = (!dev).then(|| format!("h3=\":{}\"; ma=86400", udp.port()));

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
        resume_window: cfg.resume_window,
    };
    let shared = Arc::new(Shared {
        rooms: Rooms::new(room_cfg),
        metrics,
        sessions: Arc::new(Semaphore::new(cfg.max_sessions)),
        alt_svc,
        origins: OriginPolicy::new(&cfg.allow_origin, dev),
        tokens: cfg
            .token_secret
            .as_ref()
            .map(|s| TokenKey::new(s.as_bytes())),
        shutdown: CancellationToken::new(),
        tasks: TaskTracker::new(),
        connections: AtomicUsize::new(0),
        per_ip: Mutex::new(HashMap::new()),
        certs,
        cfg,
    });

    on_ready(
        Bound {
            udp,
            tcp: tcp_bound,
        },
        &shared.certs.current(),
    );
    tracing::info!(%udp, tcp = %tcp_bound, "listening");

    let quic_task = tokio::spawn(quic::serve(endpoint.clone(), shared.clone()));
    let tcp_task = tokio::spawn(tcp::serve(listener, tls, shared.clone()));
    if dev {
        tokio::spawn(renew_dev_cert(shared.clone(), policy));
    }

    shutdown.await;
    // Stop accepting, tell every session (close codes; GOAWAY on HTTP/3
    // connections), give them a bounded time to drain, then close the
    // endpoint and wait for QUIC to finish.
    tracing::info!("shutting down: no new connections; telling clients");
    tcp_task.abort();
    quic_task.abort();
    shared.shutdown.cancel();
    shared.tasks.close();
    let grace = shared.cfg.limits.shutdown_grace;
    if tokio::time::timeout(grace, shared.tasks.wait())
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
    tracing::info!("shutdown complete");
    Ok(())
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
