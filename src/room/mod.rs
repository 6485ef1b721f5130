//! Rooms: a directory of rooms created on demand by name, and one task per
//! room that runs its game's tick loop.
//!
//! The task owns the game (see [`crate::game`]) and talks to sessions only
//! through a bounded command queue in, and out per player: numbered events
//! in the room's event log ([`events`]), snapshots in a newest-wins slot,
//! unreliable messages in a short queue, or straight to the transport
//! ([`fanout`]). It never knows which transport a player uses.
//!
//! Rally's part of the game loop lives here: player ids, the roster and
//! `PlayerJoined`/`PlayerLeft`, input numbering (undoing the clients'
//! redundancy, at most once, in order, at most 8 per player per tick),
//! exactly-once reliable messages in both directions across resumes, the
//! tick clock, snapshots and their fan-out. A game callback that panics
//! closes only its room: its players get `internal`.

#[cfg(test)]
mod delta_sim;
pub mod events;
mod fanout;
mod ring;
mod task;

use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicU32, AtomicU64};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot, watch};

use crate::cluster::Cluster;
use crate::game::{GameOptions, MakeGame};
use crate::kind::TransportKind;
use crate::metrics::Metrics;
use crate::protocol::{Close, ErrorCode, Inputs, Redirect, Welcome, RESUME_TOKEN_LEN};
pub use events::ReplayError;
use events::{Cursor, EventLog};
pub use fanout::{DirectSink, LatestQueue, SnapshotRef, LATEST_QUEUE};

/// Room command queue: joins, inputs and messages of every player in it.
const COMMAND_QUEUE: usize = 4096;

pub type ResumeToken = [u8; RESUME_TOKEN_LEN];

/// What every room of a server shares.
#[derive(Debug, Clone)]
pub struct RoomConfig {
    pub tick_hz: u16,
    pub snapshot_every: u16,
    pub max_players: usize,
    /// How long a dropped player is kept for resume.
    pub resume_window: Duration,
    /// The client limits `Welcome` announces.
    pub max_message: u16,
    pub max_input: u8,
    pub game_options: GameOptions,
}

impl RoomConfig {
    /// Numbered events kept for replay — broadcasts per room, and personal
    /// events per player — and so how far behind a session may fall: the
    /// whole roster of a full room plus headroom.
    pub fn replay(&self) -> usize {
        self.max_players + 64
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum JoinError {
    #[error("room is full ({0} players)")]
    RoomFull(usize),
    #[error("room is closing")]
    Closed,
    #[error("unknown or expired resume token")]
    UnknownToken,
    #[error("last_seq {last_seq} is beyond the last event sent to this player ({seq})")]
    Ahead { last_seq: u32, seq: u32 },
    #[error("the events after {0} are no longer kept")]
    Gap(u32),
    #[error("{0}")]
    Refused(String),
    /// Cluster mode: the room is owned by another node.
    #[error("room {} is on node {}", .0.room, .0.node)]
    Moved(Box<Redirect>),
    /// Cluster mode: the room cannot be placed now.
    #[error("{0}")]
    Unavailable(String),
}

impl JoinError {
    pub fn close(&self) -> Close {
        let code = match self {
            JoinError::RoomFull(_) => ErrorCode::RoomFull,
            JoinError::Closed => ErrorCode::Internal,
            JoinError::UnknownToken | JoinError::Ahead { .. } | JoinError::Gap(_) => {
                ErrorCode::ResumeFailed
            }
            JoinError::Refused(_) => ErrorCode::JoinRefused,
            JoinError::Unavailable(_) => ErrorCode::Unavailable,
            JoinError::Moved(r) => return Close::Moved(r.clone()),
        };
        Close::error(code, self.to_string())
    }
}

type Sink = Option<Arc<dyn DirectSink>>;
type Reply = oneshot::Sender<Result<Membership, JoinError>>;

enum Command {
    Join {
        name: String,
        app: Bytes,
        sink: Sink,
        reply: Reply,
    },
    Resume {
        player: u32,
        token: ResumeToken,
        last_seq: u32,
        sink: Sink,
        reply: Reply,
    },
    Input {
        player: u32,
        attachment: u64,
        newest_seq: u32,
        inputs: Inputs,
        /// `InputAck.snapshot_tick`.
        snapshot_tick: Option<u32>,
    },
    Message {
        player: u32,
        attachment: u64,
        reliable: bool,
        payload: Bytes,
    },
    /// Close every player with this and stop (cluster mode: the room's
    /// lease went to another node).
    Evict(Close),
}

/// How a session let go of its player.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Departure {
    /// `Leave`, or an error that ends the player: removed now.
    Leave,
    /// The connection dropped: kept for resume until the window ends.
    Detach,
}

#[derive(Clone)]
struct RoomHandle {
    id: u64,
    cmd: mpsc::Sender<Command>,
    leave: mpsc::Sender<(u32, u64, Departure)>,
    /// Players in the room, as of its last tick.
    players: Arc<AtomicU32>,
}

/// A player's place in a room, held by its session. Dropping it detaches
/// the player (kept for resume); [`Membership::leave_on_drop`] removes it.
pub struct Membership {
    pub player_id: u32,
    pub welcome: Welcome,
    /// Numbered events for this player, already encoded, in order.
    pub events: EventFeed,
    /// Newest snapshot for this player (newest wins). Also marked changed
    /// when numbered events or unreliable messages are added: read
    /// `events` first, then this, then `latest`.
    pub snapshots: watch::Receiver<SnapshotRef>,
    /// Unreliable application messages waiting for this session.
    pub latest: Arc<LatestQueue>,
    /// Set by the room before it drops this player's slot on purpose.
    pub kicked: Arc<OnceLock<Close>>,
    /// Tick of the newest snapshot this session wrote to an ordered
    /// channel: the room may send the next as a delta against it.
    delivered: Arc<AtomicU32>,
    room: RoomHandle,
    /// Which attachment of the player this is (resume makes a new one).
    attachment: u64,
    departure: Departure,
}

/// A player's numbered events, read in order from the room's log.
pub struct EventFeed {
    log: Arc<Mutex<EventLog>>,
    player: u32,
    at: Cursor,
    /// Number of the last event read.
    last: u32,
    /// Shared with the room: see [`Membership::events`] and `fanout`.
    written: Arc<AtomicU64>,
}

impl EventFeed {
    /// The next event, if there is one yet. `Gap` when the session fell
    /// further behind than the room keeps; `Gone` once the player was
    /// removed.
    pub fn read_next(&mut self) -> Result<Option<Bytes>, ReplayError> {
        let ev = lock(&self.log).read(self.player, &mut self.at)?;
        if ev.is_some() {
            self.last = self.last.wrapping_add(1);
        }
        Ok(ev)
    }

    /// Notes that `Welcome` and every event read so far are written to the
    /// transport, in order: a message the room writes directly now comes
    /// after them.
    pub fn mark_written(&self) {
        fanout::mark_written(&self.written, self.last);
    }
}

/// The log is only touched under short, non-panicking critical sections;
/// a poisoned lock still holds a consistent log.
fn lock(log: &Mutex<EventLog>) -> std::sync::MutexGuard<'_, EventLog> {
    log.lock().unwrap_or_else(|e| e.into_inner())
}

impl Membership {
    /// The session wrote the snapshot of `tick` to an ordered channel (a
    /// WebSocket): the client will have it before anything written later.
    pub fn delivered(&self, tick: u32) {
        self.delivered
            .fetch_max(tick, std::sync::atomic::Ordering::Release);
    }

    /// Queues one `Input` message for the room. Inputs are unreliable: when
    /// the room's queue is full the input is dropped (and `false` returned);
    /// the client's redundancy covers it.
    /// `snapshot_tick` is `InputAck`'s acknowledgement (`None` for `Input`).
    pub fn input(&self, newest_seq: u32, inputs: Inputs, snapshot_tick: Option<u32>) -> bool {
        let cmd = Command::Input {
            player: self.player_id,
            attachment: self.attachment,
            newest_seq,
            inputs,
            snapshot_tick,
        };
        self.room.cmd.try_send(cmd).is_ok()
    }

    /// Hands an application message to the room. A reliable one waits for
    /// room in the queue (the session reads nothing more meanwhile: back
    /// pressure); an unreliable one is dropped when the queue is full
    /// (`false`). `false` also when the room is gone.
    pub async fn message(&self, reliable: bool, payload: Bytes) -> bool {
        let cmd = Command::Message {
            player: self.player_id,
            attachment: self.attachment,
            reliable,
            payload,
        };
        if reliable {
            self.room.cmd.send(cmd).await.is_ok()
        } else {
            self.room.cmd.try_send(cmd).is_ok()
        }
    }

    /// Marks the player as gone for good when this membership is dropped
    /// (no resume).
    pub fn leave_on_drop(&mut self) {
        self.departure = Departure::Leave;
    }
}

impl Drop for Membership {
    fn drop(&mut self) {
        // The departure queue has room for every member (see `task`); if it
        // were ever full the room still notices the closed snapshot slot on
        // its next tick.
        let _ = self
            .room
            .leave
            .try_send((self.player_id, self.attachment, self.departure));
    }
}

/// Starts the room task of one game; the type-erased form of a
/// [`MakeGame`], so the directory and sessions need not know the game type.
trait SpawnRoom: Send + Sync {
    fn spawn(&self, id: u64, name: &str, rooms: &Arc<Rooms>) -> RoomHandle;
}

struct Spawner<M>(M);

impl<M: MakeGame> SpawnRoom for Spawner<M> {
    fn spawn(&self, id: u64, name: &str, rooms: &Arc<Rooms>) -> RoomHandle {
        task::spawn(&self.0, id, name, rooms)
    }
}

/// A game for every room of a server: its name (sent in `Welcome`) and how
/// to make one per room.
#[derive(Clone)]
pub struct GameFactory {
    name: Arc<str>,
    spawner: Arc<dyn SpawnRoom>,
}

impl GameFactory {
    pub fn new(name: &str, make: impl MakeGame) -> GameFactory {
        GameFactory {
            name: name.into(),
            spawner: Arc::new(Spawner(make)),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

impl std::fmt::Debug for GameFactory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("GameFactory").field(&self.name).finish()
    }
}

/// A resumable player, by its resume token.
struct TokenEntry {
    room: String,
    player: u32,
    name: String,
    /// The transport of the player's latest session, noted by the session
    /// layer for its resume metric ([`Rooms::note_transport`]). The room
    /// task never reads it: a game never knows the transport.
    transport: Option<TransportKind>,
}

/// What [`Rooms::note_transport`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Noted {
    /// The player's name, as it joined.
    pub name: String,
    /// The transport noted before (`None` before the first note).
    pub previous: Option<TransportKind>,
}

/// Directory of live rooms and of resumable players.
pub struct Rooms {
    // std Mutex: held only for map lookups and inserts, never across .await.
    map: Mutex<HashMap<String, RoomHandle>>,
    /// Resume token → room name, player and what the session layer noted.
    tokens: Mutex<HashMap<ResumeToken, TokenEntry>>,
    next_room_id: AtomicU64,
    cfg: RoomConfig,
    game: GameFactory,
    metrics: Arc<Metrics>,
    /// Cluster mode: where rooms not running here are placed.
    cluster: OnceLock<Arc<Cluster>>,
}

impl Rooms {
    pub fn new(cfg: RoomConfig, game: GameFactory, metrics: Arc<Metrics>) -> Arc<Self> {
        Arc::new(Rooms {
            map: Mutex::new(HashMap::new()),
            tokens: Mutex::new(HashMap::new()),
            next_room_id: 1.into(),
            cfg,
            game,
            metrics,
            cluster: OnceLock::new(),
        })
    }

    /// Cluster mode: places rooms through `cluster` from now on (once).
    pub fn set_cluster(&self, cluster: Arc<Cluster>) {
        let _ = self.cluster.set(cluster);
    }

    /// The rooms running here, with their players as of their last tick.
    pub fn list(&self) -> Vec<(String, u32)> {
        let map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        map.iter()
            .filter(|(_, h)| !h.cmd.is_closed())
            .map(|(name, h)| (name.clone(), h.players.load(Relaxed)))
            .collect()
    }

    /// Whether `room` runs here.
    pub fn is_local(self: &Arc<Self>, room: &str) -> bool {
        self.handle(room, false).is_some()
    }

    /// Closes `room` here, telling its players `close` (cluster mode: its
    /// lease went to another node).
    pub async fn evict(self: &Arc<Self>, room: &str, close: Close) {
        if let Some(h) = self.handle(room, false) {
            let _ = h.cmd.send(Command::Evict(close)).await;
        }
    }

    pub fn len(&self) -> usize {
        self.map.lock().map(|m| m.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The names of the rooms open now, sorted (the admin page's listing).
    pub fn names(&self) -> Vec<String> {
        let map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        let mut names: Vec<String> = map
            .iter()
            .filter(|(_, h)| !h.cmd.is_closed())
            .map(|(name, _)| name.clone())
            .collect();
        names.sort();
        names
    }

    pub fn game_name(&self) -> &str {
        self.game.name()
    }

    fn handle(self: &Arc<Self>, name: &str, create: bool) -> Option<RoomHandle> {
        // A poisoned lock means a panic while holding it; the map itself is
        // still consistent (every operation is a single insert/remove).
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(h) = map.get(name) {
            if !h.cmd.is_closed() {
                return Some(h.clone());
            }
        }
        if !create {
            return None;
        }
        let id = self.next_room_id.fetch_add(1, Relaxed);
        let h = self.game.spawner.spawn(id, name, self);
        map.insert(name.to_string(), h.clone());
        Some(h)
    }

    fn remove_if(&self, name: &str, id: u64) {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if map.get(name).is_some_and(|h| h.id == id) {
            map.remove(name);
            if let Some(c) = self.cluster.get() {
                c.released(name);
            }
        }
    }

    fn tokens(&self) -> std::sync::MutexGuard<'_, HashMap<ResumeToken, TokenEntry>> {
        self.tokens.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn add_token(&self, token: ResumeToken, room: &str, player: u32, name: &str) {
        let entry = TokenEntry {
            room: room.to_string(),
            player,
            name: name.to_string(),
            transport: None,
        };
        self.tokens().insert(token, entry);
    }

    /// Notes that `kind` now carries the player holding `token` (once per
    /// join or resume, not per message); returns the player's name and the
    /// transport noted before, or `None` if the player is gone.
    pub fn note_transport(&self, token: &ResumeToken, kind: TransportKind) -> Option<Noted> {
        let mut tokens = self.tokens();
        let entry = tokens.get_mut(token)?;
        let previous = entry.transport.replace(kind);
        Some(Noted {
            name: entry.name.clone(),
            previous,
        })
    }

    /// Joins `room` (creating it if needed) as `name` with the game's join
    /// bytes; latest-only messages go to `sink` when it takes them. The
    /// caller has validated both names.
    pub async fn join(
        self: &Arc<Self>,
        room: &str,
        name: &str,
        app: Bytes,
        sink: Sink,
    ) -> Result<Membership, JoinError> {
        if let Some(cluster) = self.cluster.get() {
            if !self.is_local(room) {
                // Claims the room here unless another node owns it.
                match cluster.admit(room).await {
                    Ok(None) => {}
                    Ok(Some(owner)) => return Err(JoinError::Moved(Box::new(owner))),
                    Err(e) => return Err(JoinError::Unavailable(e.to_string())),
                }
            }
        }
        // A room that is just removing itself drops our join; the second
        // attempt finds or creates a live one.
        for _ in 0..3 {
            let Some(h) = self.handle(room, true) else {
                continue;
            };
            let (tx, rx) = oneshot::channel();
            let cmd = Command::Join {
                name: name.to_string(),
                app: app.clone(),
                sink: sink.clone(),
                reply: tx,
            };
            if h.cmd.send(cmd).await.is_err() {
                continue;
            }
            if let Ok(result) = rx.await {
                return result;
            }
        }
        Err(JoinError::Closed)
    }

    /// Takes back the player holding `token`, replaying the numbered events
    /// after `last_seq`; latest-only messages go to `sink` from now on.
    pub async fn resume(
        self: &Arc<Self>,
        token: ResumeToken,
        last_seq: u32,
        sink: Sink,
    ) -> Result<(String, Membership), JoinError> {
        let (room, player) = self
            .tokens()
            .get(&token)
            .map(|e| (e.room.clone(), e.player))
            .ok_or(JoinError::UnknownToken)?;
        let h = self.handle(&room, false).ok_or(JoinError::UnknownToken)?;
        let (tx, rx) = oneshot::channel();
        let cmd = Command::Resume {
            player,
            token,
            last_seq,
            sink,
            reply: tx,
        };
        h.cmd.send(cmd).await.map_err(|_| JoinError::UnknownToken)?;
        let m = rx.await.map_err(|_| JoinError::UnknownToken)??;
        Ok((room, m))
    }
}

#[cfg(test)]
mod tests;
