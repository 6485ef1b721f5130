//! What every connection handler reads: configuration, certificates,
//! rooms, counters, limits and the checks made before a session opens.
//! The front ends in `transport/` take it; `server` builds it.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::{Claims, OriginPolicy, TokenError, TokenKey};
use crate::cert::CertStore;
use crate::config::ServeConfig;
use crate::http::Pages;
use crate::kind::TransportKind;
use crate::metrics::Metrics;
use crate::protocol::{Close, ErrorCode};
use crate::room::Rooms;
use crate::session::live::LiveSessions;
use crate::session::{close_with, Opening, SessionCtx, TransportTx};

/// What every connection handler reads.
pub struct Shared {
    pub cfg: ServeConfig,
    pub certs: Arc<CertStore>,
    pub rooms: Arc<Rooms>,
    pub metrics: Arc<Metrics>,
    /// The sessions running now, and what ended ones sent and received.
    pub live: Arc<LiveSessions>,
    /// One permit per live session, across both transports.
    pub sessions: Arc<Semaphore>,
    /// `Alt-Svc` value advertised over TCP (real certificates only).
    pub alt_svc: Option<String>,
    pub origins: OriginPolicy,
    pub tokens: Option<TokenKey>,
    /// The admin page's token and history: `None` unless `--admin-token`.
    pub admin: Option<crate::admin::Admin>,
    /// Cancelled when shutdown begins.
    pub shutdown: CancellationToken,
    /// Cancelled when the TCP listener's connections are to close: on
    /// shutdown, once no poll-mode HTTP session has messages left to fetch
    /// (or the grace is spent).
    pub tcp_stop: CancellationToken,
    /// Every connection task, so shutdown can wait for them to drain.
    pub tasks: TaskTracker,
    /// The pages and files served over HTTP.
    pub pages: Pages,
    /// Live HTTP streaming sessions, by id.
    pub http: crate::transport::streaming::HttpSessions,
    /// This node: its id and where clients reach it (`/rooms`).
    pub node: crate::cluster::NodeAddr,
    /// Cluster mode (`--redis`): the directory rooms are placed through.
    pub cluster: Option<Arc<crate::cluster::Cluster>>,
    pub(crate) connections: AtomicUsize,
    // std Mutex: a map update per connection open/close, never across .await.
    pub(crate) per_ip: Mutex<HashMap<IpAddr, usize>>,
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
    pub fn session_ctx(&self, claims: Option<Claims>, opening: Opening) -> SessionCtx {
        SessionCtx {
            rooms: self.rooms.clone(),
            metrics: self.metrics.clone(),
            limits: self.cfg.limits.clone(),
            shutdown: self.shutdown.clone(),
            claims,
            live: self.live.clone(),
            opening,
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
        tracing::info!(transport = kind.label(), "session refused: server full");
        let close = Close::error(ErrorCode::ServerFull, "server is at its session limit");
        close_with(kind, tx, &self.metrics, Duration::from_secs(2), &close).await;
    }
}
