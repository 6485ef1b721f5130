//! Cluster mode: many Rally nodes behind one Redis (`--redis`).
//!
//! Each room lives on exactly one node; clients are told which
//! (`GET /rooms/NAME`, or a `Redirect` answering `Hello`) and connect to it
//! directly, so QUIC needs no cluster-aware load balancer. Redis holds
//! (PROTOCOL.md §13 has the key layout):
//!
//! - `{prefix}:node:{id}` — a node's registration (JSON [`NodeRecord`]):
//!   its URLs, certificate hashes, load and whether it is draining. Written
//!   every third of `--lease-ttl` with that expiry: a node that stops
//!   renewing is gone from the cluster a TTL later.
//! - `{prefix}:nodes` — the set of node ids (members whose registration
//!   expired are pruned when read).
//! - `{prefix}:room:{name}` — the room's lease: the owning node's id, with
//!   the same expiry, renewed by the owner while the room runs and deleted
//!   when it empties.
//!
//! Every change of a lease is one Lua script, so two nodes asked for the
//! same new room in the same instant agree on one owner. Every Redis call
//! is bounded by a timeout; when Redis is unreachable, rooms running here
//! keep running (their leases are renewed again once it is back) and rooms
//! that would need a new lease fail with `unavailable`.

pub mod http;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use redis::aio::ConnectionManager;
use redis::{AsyncCommands, Script};
use serde::{Deserialize, Serialize};

use crate::cert::CertStore;
use crate::config::ClusterArgs;
use crate::metrics::lease_op;
use crate::protocol::{Close, Redirect};
use crate::room::Rooms;

/// Most rooms a node lists with their player counts in its registration
/// (`GET /rooms` shows at most this many per node).
pub const MAX_LISTED_ROOMS: usize = 1000;

/// Node ids: 1–64 of `A–Z a–z 0–9 _ - .`.
pub fn valid_node_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

/// Where clients reach a node, and who it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeAddr {
    pub id: String,
    /// HTTP origin: pages, WebSocket and HTTP streaming (`http://` with the
    /// development certificate, whose pages are served in the clear).
    pub url: String,
    /// The WebTransport session URL (always `https://…/rally`).
    pub wt_url: String,
}

/// A node as registered in Redis.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeRecord {
    #[serde(flatten)]
    pub addr: NodeAddr,
    /// SHA-256 hashes (hex) of the node's development certificates, for
    /// `serverCertificateHashes`; empty with a publicly trusted certificate.
    pub cert_hashes: Vec<String>,
    pub sessions: u64,
    pub rooms: u64,
    pub players: u64,
    /// Cores' worth of CPU the process used since the last registration.
    pub cpu: f64,
    pub draining: bool,
    pub started_unix_ms: u64,
    /// Rooms running here and their players (at most [`MAX_LISTED_ROOMS`]).
    #[serde(default)]
    pub room_players: BTreeMap<String, u32>,
}

impl NodeRecord {
    /// The `Redirect` that sends a client for `room` here.
    pub fn redirect(&self, room: &str) -> Redirect {
        Redirect {
            room: room.to_string(),
            node: self.addr.id.clone(),
            url: self.addr.url.clone(),
            wt_url: self.addr.wt_url.clone(),
            cert_hashes: self
                .cert_hashes
                .iter()
                .filter_map(|h| hex::decode(h).ok()?.try_into().ok())
                .collect(),
        }
    }

    /// What placement compares: sessions, and rooms as a few sessions each
    /// so an empty new room still counts.
    fn load(&self) -> u64 {
        self.sessions + 4 * self.rooms
    }
}

/// The hex SHA-256 hashes `/cert-hash` publishes (current, then next).
pub fn hex_hashes(certs: &CertStore) -> Vec<String> {
    certs.hash_json()["hashes"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|h| h["hex"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// Why the cluster could not answer.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("the cluster directory (Redis) is unreachable: {0}")]
    Redis(String),
    #[error("no live node can take the room")]
    NoNode,
}

/// Claims `KEYS[1]` (a room's lease) for `ARGV[1]` unless a live node
/// holds it: returns the owner. A lease whose node's registration expired
/// (`ARGV[3]` .. owner) is taken over. The owner asking (`ARGV[4]`)
/// extends its own lease. With `ARGV[5]` = "1" the candidate must be
/// registered and not draining, checked in the same atomic step (a node's
/// cached view of the registry may be a little old): otherwise nothing
/// changes and the answer is "".
const CLAIM: &str = r#"
local cur = redis.call('GET', KEYS[1])
if cur and redis.call('EXISTS', ARGV[3] .. cur) == 1 then
  if cur == ARGV[4] then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
  return cur
end
if ARGV[5] == '1' then
  local rec = redis.call('GET', ARGV[3] .. ARGV[1])
  if not rec then return '' end
  local ok, node = pcall(cjson.decode, rec)
  if not ok or node.draining then return '' end
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return ARGV[1]
"#;

/// Renews `KEYS` (room leases) held by `ARGV[1]`, takes back those that
/// expired, and returns the others' keys and owners, flattened.
const RENEW: &str = r#"
local lost = {}
for _, k in ipairs(KEYS) do
  local cur = redis.call('GET', k)
  if cur == ARGV[1] then
    redis.call('PEXPIRE', k, ARGV[2])
  elseif not cur then
    redis.call('SET', k, ARGV[1], 'PX', ARGV[2])
  else
    table.insert(lost, k)
    table.insert(lost, cur)
  end
end
return lost
"#;

/// Deletes `KEYS[1]` if `ARGV[1]` still holds it.
const RELEASE: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"#;

/// Redis, as this node uses it.
pub struct Cluster {
    con: ConnectionManager,
    /// The URL with any password hidden, for messages.
    shown_url: String,
    prefix: String,
    ttl: Duration,
    /// Bound on each Redis call.
    op_timeout: Duration,
    me: NodeAddr,
    /// The development certificates whose hashes clients pin (`None` with
    /// a publicly trusted certificate).
    certs: Option<Arc<CertStore>>,
    started_unix_ms: u64,
    draining: AtomicBool,
    /// Whether the last registration reached Redis (logs only changes).
    healthy: AtomicBool,
    claim: Script,
    renew: Script,
    release: Script,
    /// Rooms placed on other nodes since their last registration, so a
    /// burst of new rooms does not all land on the one node that looked
    /// least loaded.
    placed: Mutex<BTreeMap<String, u64>>,
    cpu: Mutex<CpuClock>,
    /// The registry as last read, reused for [`NODES_FRESH`]: lookups then
    /// cost Redis one command, not three.
    nodes_cache: Mutex<Option<(Instant, Vec<NodeRecord>)>>,
}

/// How long a read of the node registry is reused. Registrations change
/// every third of the lease TTL; placement counts its own placements in
/// between (`placed`).
const NODES_FRESH: Duration = Duration::from_millis(250);

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// `redis://user:secret@host` → `redis://user:***@host`.
fn hide_password(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        _ => url.to_string(),
    }
}

impl Cluster {
    /// Connects to Redis; an error names the URL. `me` is this node.
    pub async fn connect(
        args: &ClusterArgs,
        url: &str,
        me: NodeAddr,
        certs: Option<Arc<CertStore>>,
    ) -> anyhow::Result<Arc<Cluster>> {
        let shown_url = hide_password(url);
        let client = redis::Client::open(url)
            .map_err(|e| anyhow::anyhow!("--redis {shown_url}: not a Redis URL: {e}"))?;
        let op_timeout = (args.lease_ttl / 3).min(Duration::from_secs(1));
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(op_timeout))
            .set_response_timeout(Some(op_timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        let con = tokio::time::timeout(
            Duration::from_secs(5),
            ConnectionManager::new_with_config(client, config),
        )
        .await
        .map_err(|_| anyhow::anyhow!("--redis {shown_url}: no answer within 5 s"))?
        .map_err(|e| anyhow::anyhow!("--redis {shown_url}: cannot connect: {e}"))?;
        let cluster = Arc::new(Cluster {
            con,
            shown_url,
            prefix: args.redis_prefix.clone(),
            ttl: args.lease_ttl,
            op_timeout,
            me,
            certs,
            started_unix_ms: unix_ms(),
            draining: AtomicBool::new(false),
            healthy: AtomicBool::new(true),
            claim: Script::new(CLAIM),
            renew: Script::new(RENEW),
            release: Script::new(RELEASE),
            placed: Mutex::new(BTreeMap::new()),
            cpu: Mutex::new(CpuClock::start()),
            nodes_cache: Mutex::new(None),
        });
        // One round trip now, so a wrong database or password fails here.
        let mut con = cluster.con.clone();
        let pong: Result<String, _> = cluster
            .bounded(redis::cmd("PING").query_async(&mut con))
            .await;
        pong.map_err(|e| anyhow::anyhow!("--redis {}: {e}", cluster.shown_url))?;
        Ok(cluster)
    }

    pub fn me(&self) -> &NodeAddr {
        &self.me
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Relaxed)
    }

    fn node_key(&self, id: &str) -> String {
        format!("{}:node:{id}", self.prefix)
    }

    fn nodes_key(&self) -> String {
        format!("{}:nodes", self.prefix)
    }

    fn room_key(&self, room: &str) -> String {
        format!("{}:room:{room}", self.prefix)
    }

    fn ttl_ms(&self) -> u64 {
        self.ttl.as_millis() as u64
    }

    /// One Redis call, bounded.
    async fn bounded<T>(
        &self,
        op: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, ClusterError> {
        match tokio::time::timeout(self.op_timeout, op).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(ClusterError::Redis(e.to_string())),
            Err(_) => Err(ClusterError::Redis(format!(
                "no answer within {:?}",
                self.op_timeout
            ))),
        }
    }

    /// Counts a lease operation for `/metrics`.
    fn counted<T>(&self, op: &str, r: Result<T, ClusterError>) -> Result<T, ClusterError> {
        lease_op(op, r.is_ok());
        r
    }

    /// Claims `room` for `candidate` unless a live node owns it; the owner,
    /// or "" when the candidate (another node) is gone or draining.
    async fn claim(&self, room: &str, candidate: &str) -> Result<String, ClusterError> {
        let mut con = self.con.clone();
        let mut inv = self.claim.key(self.room_key(room));
        let check = if candidate == self.me.id { "0" } else { "1" };
        inv.arg(candidate)
            .arg(self.ttl_ms())
            .arg(self.node_key(""))
            .arg(&self.me.id)
            .arg(check);
        let r = self.bounded(inv.invoke_async(&mut con)).await;
        self.counted("claim", r)
    }

    /// Cluster mode's answer to a `Hello` for a room not running here:
    /// `None` when this node now owns it (create it), else the owner.
    pub async fn admit(&self, room: &str) -> Result<Option<Redirect>, ClusterError> {
        if self.is_draining() {
            return Ok(Some(self.locate(room).await?.redirect(room)));
        }
        let owner = self.claim(room, &self.me.id).await?;
        if owner == self.me.id {
            return Ok(None);
        }
        match self.node(&owner).await? {
            Some(rec) => Ok(Some(rec.redirect(room))),
            // Its registration expired between the claim and now: it will
            // be taken over by the next claim.
            None => Err(ClusterError::NoNode),
        }
    }

    /// The node that owns `room`, placing it on the least-loaded live node
    /// that is not draining when nobody does.
    pub async fn locate(&self, room: &str) -> Result<NodeRecord, ClusterError> {
        let mut con = self.con.clone();
        let current: Option<String> = self.bounded(con.get(self.room_key(room))).await?;
        let nodes = self.nodes().await?;
        if let Some(owner) = current {
            if let Some(rec) = nodes.iter().find(|n| n.addr.id == owner) {
                return Ok(rec.clone());
            }
            // Not in the registry as read: ask for its record itself (it
            // may have registered since); gone means the lease is stale.
            if let Some(rec) = self.node(&owner).await? {
                return Ok(rec);
            }
        }
        let mut nodes = nodes;
        for _ in 0..3 {
            let candidate = self.pick(&nodes).ok_or(ClusterError::NoNode)?;
            let owner = self.claim(room, &candidate).await?;
            if owner.is_empty() {
                // The candidate began draining or died since the registry
                // was read: read it again and pick another.
                *self.nodes_cache.lock().unwrap_or_else(|e| e.into_inner()) = None;
                nodes = self.nodes().await?;
                nodes.retain(|n| n.addr.id != candidate);
                continue;
            }
            if owner == candidate {
                let mut placed = self.placed.lock().unwrap_or_else(|e| e.into_inner());
                *placed.entry(owner.clone()).or_default() += 1;
            }
            return match nodes.into_iter().find(|n| n.addr.id == owner) {
                Some(rec) => Ok(rec),
                None => self.node(&owner).await?.ok_or(ClusterError::NoNode),
            };
        }
        Err(ClusterError::NoNode)
    }

    /// The least-loaded live node that is not draining, counting rooms
    /// placed on it since it last registered.
    fn pick(&self, nodes: &[NodeRecord]) -> Option<String> {
        let placed = self.placed.lock().unwrap_or_else(|e| e.into_inner());
        nodes
            .iter()
            .filter(|n| !n.draining)
            .min_by_key(|n| {
                let extra = placed.get(&n.addr.id).copied().unwrap_or(0);
                // Ties go to the lower id: deterministic, and the next
                // placement sees this one in `placed`.
                (n.load() + 4 * extra, n.addr.id.clone())
            })
            .map(|n| n.addr.id.clone())
    }

    /// One node's registration, `None` once it expired.
    pub async fn node(&self, id: &str) -> Result<Option<NodeRecord>, ClusterError> {
        let mut con = self.con.clone();
        let raw: Option<String> = self.bounded(con.get(self.node_key(id))).await?;
        Ok(raw.and_then(|r| serde_json::from_str(&r).ok()))
    }

    /// Every live node, by id (a read at most [`NODES_FRESH`] old).
    pub async fn nodes(&self) -> Result<Vec<NodeRecord>, ClusterError> {
        {
            let cache = self.nodes_cache.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((at, nodes)) = &*cache {
                if at.elapsed() < NODES_FRESH {
                    return Ok(nodes.clone());
                }
            }
        }
        let nodes = self.read_nodes().await?;
        *self.nodes_cache.lock().unwrap_or_else(|e| e.into_inner()) =
            Some((Instant::now(), nodes.clone()));
        Ok(nodes)
    }

    /// Every live node, read from Redis now (`GET /rooms`).
    pub async fn read_nodes(&self) -> Result<Vec<NodeRecord>, ClusterError> {
        let mut con = self.con.clone();
        let ids: Vec<String> = self.bounded(con.smembers(self.nodes_key())).await?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<String> = ids.iter().map(|id| self.node_key(id)).collect();
        let raw: Vec<Option<String>> = self.bounded(con.mget(&keys)).await?;
        let mut nodes = Vec::new();
        let mut gone = Vec::new();
        for (id, r) in ids.iter().zip(raw) {
            match r.and_then(|r| serde_json::from_str::<NodeRecord>(&r).ok()) {
                Some(n) => nodes.push(n),
                None => gone.push(id.clone()),
            }
        }
        if !gone.is_empty() {
            // Best effort: the next reader prunes what this one could not.
            let _: Result<u64, _> = self.bounded(con.srem(self.nodes_key(), &gone)).await;
        }
        nodes.sort_by(|a, b| a.addr.id.cmp(&b.addr.id));
        Ok(nodes)
    }

    /// This node's registration now.
    fn record(&self, rooms: &Rooms, sessions: u64) -> NodeRecord {
        let list = rooms.list();
        let players = list.iter().map(|(_, p)| *p as u64).sum();
        let cpu = self.cpu.lock().unwrap_or_else(|e| e.into_inner()).read();
        NodeRecord {
            addr: self.me.clone(),
            cert_hashes: self.certs.as_deref().map(hex_hashes).unwrap_or_default(),
            sessions,
            rooms: list.len() as u64,
            players,
            cpu,
            draining: self.is_draining(),
            started_unix_ms: self.started_unix_ms,
            room_players: list.into_iter().take(MAX_LISTED_ROOMS).collect(),
        }
    }

    /// Registers this node and renews the leases of its rooms; rooms whose
    /// lease another node took (after this node could not reach Redis for
    /// a whole TTL) are closed here with a `Redirect` to their owner.
    pub async fn heartbeat(&self, rooms: &Arc<Rooms>, sessions: u64) {
        let record = self.record(rooms, sessions);
        let names: Vec<String> = rooms.list().into_iter().map(|(n, _)| n).collect();
        let registered = self.register(&record).await;
        let renewed = match registered {
            Ok(()) => self.renew_all(&names).await,
            Err(e) => Err(e),
        };
        match renewed {
            Ok(lost) => {
                if !self.healthy.swap(true, Relaxed) {
                    tracing::info!(redis = %self.shown_url, "cluster directory reachable again");
                }
                self.placed
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .clear();
                for (room, owner) in lost {
                    self.evict(rooms, &room, &owner).await;
                }
            }
            Err(e) => {
                if self.healthy.swap(false, Relaxed) {
                    tracing::warn!(redis = %self.shown_url, error = %e,
                        "cluster directory unreachable; rooms here keep running, new rooms are unavailable");
                }
            }
        }
    }

    async fn register(&self, record: &NodeRecord) -> Result<(), ClusterError> {
        *self.nodes_cache.lock().unwrap_or_else(|e| e.into_inner()) = None;
        let mut con = self.con.clone();
        let json = serde_json::to_string(record).unwrap_or_default();
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("SET")
            .arg(self.node_key(&self.me.id))
            .arg(json)
            .arg("PX")
            .arg(self.ttl_ms())
            .ignore()
            .sadd(self.nodes_key(), &self.me.id)
            .ignore();
        let r: Result<(), _> = self.bounded(pipe.query_async(&mut con)).await;
        self.counted("register", r)
    }

    /// Renews these rooms' leases; the rooms another node holds now, with
    /// that node's id.
    async fn renew_all(&self, rooms: &[String]) -> Result<Vec<(String, String)>, ClusterError> {
        let mut lost = Vec::new();
        let strip = format!("{}:room:", self.prefix);
        for chunk in rooms.chunks(500) {
            let mut con = self.con.clone();
            let mut inv = self.renew.prepare_invoke();
            for room in chunk {
                inv.key(self.room_key(room));
            }
            inv.arg(&self.me.id).arg(self.ttl_ms());
            let r: Result<Vec<String>, _> = self.bounded(inv.invoke_async(&mut con)).await;
            let flat = self.counted("renew", r)?;
            for pair in flat.chunks_exact(2) {
                let room = pair[0].strip_prefix(&strip).unwrap_or(&pair[0]);
                lost.push((room.to_string(), pair[1].clone()));
            }
        }
        Ok(lost)
    }

    async fn evict(&self, rooms: &Arc<Rooms>, room: &str, owner: &str) {
        tracing::warn!(
            room,
            owner,
            "another node holds this room's lease; closing it here"
        );
        lease_op("lost", true);
        let close = match self.node(owner).await {
            Ok(Some(rec)) => Close::Moved(Box::new(rec.redirect(room))),
            _ => Close::error(
                crate::protocol::ErrorCode::Unavailable,
                "the room moved to another node; reconnect",
            ),
        };
        rooms.evict(room, close).await;
    }

    /// A room stopped here: give its lease back (in the background).
    pub fn released(self: &Arc<Self>, room: &str) {
        let this = self.clone();
        let room = room.to_string();
        tokio::spawn(async move { this.release(&room).await });
    }

    async fn release(&self, room: &str) {
        let mut con = self.con.clone();
        let mut inv = self.release.key(self.room_key(room));
        inv.arg(&self.me.id);
        let r: Result<u64, _> = self.bounded(inv.invoke_async(&mut con)).await;
        if let Err(e) = self.counted("release", r) {
            // The lease then simply expires.
            tracing::debug!(room, error = %e, "could not release the room's lease");
        }
    }

    /// Shutdown begins: no new room lands here, and the rooms here are
    /// released so their players, told `shutting_down`, find them anew.
    pub async fn drain(&self, rooms: &Arc<Rooms>, sessions: u64) {
        self.draining.store(true, Relaxed);
        let record = self.record(rooms, sessions);
        if let Err(e) = self.register(&record).await {
            tracing::warn!(error = %e, "could not mark this node draining");
        }
        for (room, _) in rooms.list() {
            self.release(&room).await;
        }
        tracing::info!(node = %self.me.id, "draining: no new rooms here");
    }

    /// Shutdown is complete: this node leaves the cluster.
    pub async fn leave(&self) {
        let mut con = self.con.clone();
        let mut pipe = redis::pipe();
        pipe.del(self.node_key(&self.me.id))
            .ignore()
            .srem(self.nodes_key(), &self.me.id)
            .ignore();
        let r: Result<(), _> = self.bounded(pipe.query_async(&mut con)).await;
        let _ = self.counted("leave", r);
    }

    /// Registers every third of the TTL until `stop` is cancelled.
    pub async fn run(
        self: Arc<Self>,
        shared: Arc<crate::shared::Shared>,
        stop: tokio_util::sync::CancellationToken,
    ) {
        let mut every = tokio::time::interval(self.ttl / 3);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = every.tick() => {}
            }
            let sessions = shared.live.len() as u64;
            self.heartbeat(&shared.rooms, sessions).await;
        }
    }
}

/// Process CPU time (`/proc/self/stat`), read as cores used since the
/// last read.
struct CpuClock {
    at: Instant,
    ticks: u64,
}

impl CpuClock {
    fn start() -> CpuClock {
        CpuClock {
            at: Instant::now(),
            ticks: cpu_ticks(),
        }
    }

    fn read(&mut self) -> f64 {
        let now = Instant::now();
        let ticks = cpu_ticks();
        let secs = now.duration_since(self.at).as_secs_f64();
        // SAFETY: sysconf only reads a configuration value.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
        let used = ticks.saturating_sub(self.ticks) as f64 / hz;
        *self = CpuClock { at: now, ticks };
        if secs > 0.0 {
            (used / secs * 100.0).round() / 100.0
        } else {
            0.0
        }
    }
}

/// utime + stime of this process, in clock ticks (0 where unknown).
fn cpu_ticks() -> u64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0;
    };
    // The command name (field 2) may hold spaces; fields after its ')'.
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
        return 0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15, i.e. 11 and 12 after ')'.
    let get = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    get(11) + get(12)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_ids_are_bounded_and_plain() {
        assert!(valid_node_id("node-1.eu_west"));
        assert!(!valid_node_id(""));
        assert!(!valid_node_id(&"a".repeat(65)));
        assert!(!valid_node_id("a:b"));
        assert!(!valid_node_id("a b"));
    }

    #[test]
    fn passwords_are_hidden_in_messages() {
        assert_eq!(
            hide_password("redis://u:secret@h:6379/0"),
            "redis://u:***@h:6379/0"
        );
        assert_eq!(hide_password("redis://h:1"), "redis://h:1");
    }

    #[test]
    fn a_record_redirects_with_its_hashes() {
        let rec = NodeRecord {
            addr: NodeAddr {
                id: "n1".into(),
                url: "http://127.0.0.1:1".into(),
                wt_url: "https://127.0.0.1:1/rally".into(),
            },
            cert_hashes: vec!["ab".repeat(32), "not hex".into()],
            sessions: 0,
            rooms: 0,
            players: 0,
            cpu: 0.0,
            draining: false,
            started_unix_ms: 0,
            room_players: BTreeMap::new(),
        };
        let r = rec.redirect("lobby");
        assert_eq!(r.node, "n1");
        assert_eq!(r.cert_hashes, vec![[0xab; 32]]);
        let json = serde_json::to_value(&rec).unwrap();
        assert_eq!(json["id"], "n1");
        assert_eq!(serde_json::from_value::<NodeRecord>(json).unwrap(), rec);
    }

    #[test]
    fn cpu_ticks_are_read() {
        // Burn CPU for 50 ms (5 ticks at the usual 100 Hz): the count moves.
        let before = cpu_ticks();
        let t = Instant::now();
        let mut x = 0u64;
        while t.elapsed() < Duration::from_millis(50) {
            x = std::hint::black_box(x.wrapping_add(1));
        }
        assert!(cpu_ticks() > before, "{before}");
        assert!(CpuClock::start().read() >= 0.0);
    }
}
