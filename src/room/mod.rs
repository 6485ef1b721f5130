//! Rooms: a directory of rooms created on demand by name, and one task per
//! room that runs the authoritative tick loop.
//!
//! The task owns the pure [`state::RoomState`] and talks to sessions only
//! through bounded channels: a command queue in, and per player a bounded
//! reliable queue and a newest-wins snapshot slot out. It never knows which
//! transport a player uses.

pub mod state;

use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot, watch};
use tracing::Instrument;

use crate::metrics::Metrics;
use crate::protocol::{
    Buttons, ErrorCode, ServerMsg, Welcome, MAX_INPUTS_PER_MSG, PROTOCOL_VERSION,
};
use state::{GameParams, RoomState};

/// A room with no players for this long is removed.
const EMPTY_ROOM_LINGER: Duration = Duration::from_secs(10);
/// Room command queue: joins and inputs of every player in the room.
const COMMAND_QUEUE: usize = 4096;

#[derive(Debug, Clone, Copy)]
pub struct RoomConfig {
    pub game: GameParams,
    pub snapshot_every: u16,
}

/// One tick's snapshot as one recipient will get it: the shared encoded body
/// and the recipient's own acknowledged input.
#[derive(Debug, Clone, Default)]
pub struct SnapshotRef {
    pub tick: u32,
    pub ack_seq: u32,
    /// Encoded `SnapshotBody`, shared by every recipient (empty: none yet).
    pub body: Bytes,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum JoinError {
    #[error("room is full ({0} players)")]
    RoomFull(usize),
    #[error("room is shutting down")]
    Closed,
}

impl JoinError {
    pub fn code(&self) -> ErrorCode {
        match self {
            JoinError::RoomFull(_) => ErrorCode::RoomFull,
            JoinError::Closed => ErrorCode::Internal,
        }
    }
}

enum Command {
    Join {
        name: String,
        reply: oneshot::Sender<Result<Membership, JoinError>>,
    },
    Input {
        player: u32,
        newest_seq: u32,
        len: u8,
        buttons: [Buttons; MAX_INPUTS_PER_MSG],
    },
}

#[derive(Clone)]
struct RoomHandle {
    id: u64,
    cmd: mpsc::Sender<Command>,
    leave: mpsc::Sender<u32>,
}

/// A player's place in a room, held by its session. Dropping it leaves.
pub struct Membership {
    pub player_id: u32,
    pub welcome: Welcome,
    /// Reliable messages for this player, already encoded, in order.
    pub events: mpsc::Receiver<Bytes>,
    /// Newest snapshot for this player (newest wins).
    pub snapshots: watch::Receiver<SnapshotRef>,
    /// Set by the room before it drops this player's queue on purpose.
    pub kicked: Arc<OnceLock<ErrorCode>>,
    room: RoomHandle,
}

impl Membership {
    /// Queues one `Input` message for the room. Inputs are unreliable: when
    /// the room's queue is full the input is dropped (and `false` returned);
    /// the client's redundancy covers it.
    pub fn input(&self, newest_seq: u32, buttons: &[Buttons]) -> bool {
        let len = buttons.len().min(MAX_INPUTS_PER_MSG);
        let mut arr = [Buttons(0); MAX_INPUTS_PER_MSG];
        arr[..len].copy_from_slice(&buttons[..len]);
        self.room
            .cmd
            .try_send(Command::Input {
                player: self.player_id,
                newest_seq,
                len: len as u8,
                buttons: arr,
            })
            .is_ok()
    }
}

impl Drop for Membership {
    fn drop(&mut self) {
        // The leave queue has room for every member (see `Room::spawn`); if
        // it were ever full the room still notices the closed snapshot slot
        // on its next tick.
        let _ = self.room.leave.try_send(self.player_id);
    }
}

/// Directory of live rooms.
pub struct Rooms {
    // std Mutex: held only for map lookups and inserts, never across .await.
    map: Mutex<HashMap<String, RoomHandle>>,
    next_room_id: std::sync::atomic::AtomicU64,
    cfg: RoomConfig,
    metrics: Arc<Metrics>,
}

impl Rooms {
    pub fn new(cfg: RoomConfig, metrics: Arc<Metrics>) -> Arc<Self> {
        Arc::new(Rooms {
            map: Mutex::new(HashMap::new()),
            next_room_id: 1.into(),
            cfg,
            metrics,
        })
    }

    pub fn len(&self) -> usize {
        self.map.lock().map(|m| m.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn handle(self: &Arc<Self>, name: &str) -> RoomHandle {
        // A poisoned lock means a panic while holding it; the map itself is
        // still consistent (every operation is a single insert/remove).
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(h) = map.get(name) {
            if !h.cmd.is_closed() {
                return h.clone();
            }
        }
        let id = self.next_room_id.fetch_add(1, Relaxed);
        let h = Room::spawn(id, name.to_string(), self.clone());
        map.insert(name.to_string(), h.clone());
        h
    }

    fn remove_if(&self, name: &str, id: u64) {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if map.get(name).is_some_and(|h| h.id == id) {
            map.remove(name);
        }
    }

    /// Joins `room` (creating it if needed) as `name`. The caller has
    /// validated both names.
    pub async fn join(self: &Arc<Self>, room: &str, name: &str) -> Result<Membership, JoinError> {
        // A room that is just removing itself drops our join; the second
        // attempt finds or creates a live one.
        for _ in 0..3 {
            let h = self.handle(room);
            let (tx, rx) = oneshot::channel();
            let cmd = Command::Join {
                name: name.to_string(),
                reply: tx,
            };
            if h.cmd.send(cmd).await.is_err() {
                continue;
            }
            match rx.await {
                Ok(result) => return result,
                Err(_) => continue,
            }
        }
        Err(JoinError::Closed)
    }
}

struct Outlet {
    events: mpsc::Sender<Bytes>,
    snapshots: watch::Sender<SnapshotRef>,
    kicked: Arc<OnceLock<ErrorCode>>,
}

struct Room {
    id: u64,
    name: String,
    state: RoomState,
    outlets: HashMap<u32, Outlet>,
    rooms: Arc<Rooms>,
    handle: RoomHandle,
    event_queue: usize,
}

fn unix_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

impl Room {
    fn spawn(id: u64, name: String, rooms: Arc<Rooms>) -> RoomHandle {
        let cfg = rooms.cfg;
        let (cmd_tx, cmd_rx) = mpsc::channel(COMMAND_QUEUE);
        // Every member sends at most one leave, and members are capped.
        let (leave_tx, leave_rx) = mpsc::channel(cfg.game.max_players * 2 + 16);
        let handle = RoomHandle {
            id,
            cmd: cmd_tx,
            leave: leave_tx,
        };
        let room = Room {
            id,
            name: name.clone(),
            state: RoomState::new(cfg.game),
            outlets: HashMap::new(),
            rooms,
            handle: handle.clone(),
            // The roster after Welcome must fit, plus headroom for events.
            event_queue: cfg.game.max_players + 256,
        };
        // A root span: the room outlives the session that happened to create it.
        let span = tracing::info_span!(parent: None, "room", room = %name, id);
        tokio::spawn(
            room.run(cmd_rx, leave_rx, cfg.snapshot_every)
                .instrument(span),
        );
        handle
    }

    async fn run(
        mut self,
        mut cmds: mpsc::Receiver<Command>,
        mut leaves: mpsc::Receiver<u32>,
        snapshot_every: u16,
    ) {
        tracing::info!("room created");
        let period = Duration::from_secs_f64(1.0 / self.state.params().tick_hz as f64);
        let mut ticker = tokio::time::interval(period);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut empty_since = Some(Instant::now());
        loop {
            tokio::select! {
                biased;
                Some(id) = leaves.recv() => self.remove(id, None),
                _ = ticker.tick() => {
                    self.tick(snapshot_every);
                    match (self.state.is_empty(), empty_since) {
                        (false, _) => empty_since = None,
                        (true, None) => empty_since = Some(Instant::now()),
                        (true, Some(t)) if t.elapsed() >= EMPTY_ROOM_LINGER => break,
                        (true, Some(_)) => {}
                    }
                }
                Some(cmd) = cmds.recv() => self.command(cmd),
            }
        }
        self.rooms.remove_if(&self.name, self.id);
        tracing::info!("room removed after being empty");
    }

    fn command(&mut self, cmd: Command) {
        match cmd {
            Command::Join { name, reply } => {
                let result = self.join(name);
                if let Err(Ok(m)) = reply.send(result) {
                    // The session gave up waiting; undo the join.
                    self.remove(m.player_id, None);
                }
            }
            Command::Input {
                player,
                newest_seq,
                len,
                buttons,
            } => {
                self.state
                    .apply_input(player, newest_seq, &buttons[..len as usize]);
            }
        }
    }

    fn join(&mut self, name: String) -> Result<Membership, JoinError> {
        let player_id = self
            .state
            .join(name.clone())
            .map_err(|state::JoinError::RoomFull(n)| JoinError::RoomFull(n))?;
        let (ev_tx, ev_rx) = mpsc::channel(self.event_queue);
        let (snap_tx, snap_rx) = watch::channel(SnapshotRef::default());
        let kicked = Arc::new(OnceLock::new());
        let p = self.state.params();
        let welcome = Welcome {
            version: PROTOCOL_VERSION,
            player_id,
            tick_hz: p.tick_hz,
            snapshot_every: self.rooms.cfg.snapshot_every,
            arena_w: p.arena_w,
            arena_h: p.arena_h,
            speed: p.speed,
            tick: self.state.tick(),
        };
        // Welcome, then the roster (self included), then live events: all
        // through the one ordered queue. The queue is sized for the roster.
        let mut first = vec![ServerMsg::Welcome(welcome.clone()).to_bytes()];
        first.extend(self.state.players().map(|(id, pl)| {
            ServerMsg::PlayerJoined {
                player_id: id,
                name: pl.name.clone(),
            }
            .to_bytes()
        }));
        for msg in first {
            // Cannot fail: fresh queue with room for the whole roster.
            let _ = ev_tx.try_send(msg);
        }
        let joined = ServerMsg::PlayerJoined { player_id, name }.to_bytes();
        self.broadcast(joined);
        self.outlets.insert(
            player_id,
            Outlet {
                events: ev_tx,
                snapshots: snap_tx,
                kicked: kicked.clone(),
            },
        );
        tracing::debug!(player_id, "player joined");
        Ok(Membership {
            player_id,
            welcome,
            events: ev_rx,
            snapshots: snap_rx,
            kicked,
            room: self.handle.clone(),
        })
    }

    /// Removes a player; `kick` records why the room dropped it.
    fn remove(&mut self, id: u32, kick: Option<ErrorCode>) {
        if let Some(outlet) = self.outlets.remove(&id) {
            if let Some(code) = kick {
                let _ = outlet.kicked.set(code);
            }
        }
        if self.state.leave(id) {
            tracing::debug!(player_id = id, ?kick, "player left");
            self.broadcast(ServerMsg::PlayerLeft { player_id: id }.to_bytes());
        }
    }

    /// Queues a reliable message for every player. A player whose queue is
    /// full is too slow to keep up and is removed with `too_slow`.
    fn broadcast(&mut self, msg: Bytes) {
        let mut slow = Vec::new();
        for (&id, o) in &self.outlets {
            if let Err(mpsc::error::TrySendError::Full(_)) = o.events.try_send(msg.clone()) {
                slow.push(id);
            }
        }
        for id in slow {
            tracing::info!(
                player_id = id,
                "reliable queue full; disconnecting slow player"
            );
            self.rooms.metrics.count_error(ErrorCode::TooSlow);
            self.remove(id, Some(ErrorCode::TooSlow));
        }
    }

    fn tick(&mut self, snapshot_every: u16) {
        self.state.step();
        // Sessions that vanished without their leave being queued.
        let gone: Vec<u32> = self
            .outlets
            .iter()
            .filter(|(_, o)| o.snapshots.is_closed())
            .map(|(&id, _)| id)
            .collect();
        for id in gone {
            self.remove(id, None);
        }
        if !self.state.tick().is_multiple_of(snapshot_every as u32) || self.outlets.is_empty() {
            return;
        }
        let tick = self.state.tick();
        // Encoded once per tick; each recipient gets a cheap clone.
        let body = self.state.snapshot(unix_micros()).encode();
        for (&id, o) in &self.outlets {
            let ack_seq = self.state.player(id).map_or(0, |p| p.last_seq);
            o.snapshots.send_replace(SnapshotRef {
                tick,
                ack_seq,
                body: body.clone(),
            });
        }
    }
}
