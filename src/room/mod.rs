//! Rooms: a directory of rooms created on demand by name, and one task per
//! room that runs the authoritative tick loop.
//!
//! The task owns the pure [`state::RoomState`] and talks to sessions only
//! through a bounded command queue in, and per player a newest-wins
//! snapshot slot out. It never knows which transport a player uses.
//!
//! Snapshots go straight from the tick to a player's transport when it has
//! a [`SnapshotSink`] that can take one without waiting (a WebTransport
//! datagram, a WebSocket frame on plain TCP): no session task is woken for
//! them. Otherwise, and whenever
//! the sink declines, they go through the player's newest-wins slot to its
//! session.
//!
//! Reliable events (`PlayerJoined`, `PlayerLeft`) are numbered per player and
//! the last [`RoomConfig::replay`] are kept once per room ([`events`]);
//! sessions read them from there (woken through their snapshot slot), so a
//! player whose session drops can resume within the resume window and
//! receive exactly what it missed, and a session that falls that far behind
//! is `too_slow`.

pub mod events;
pub mod state;

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use tokio::sync::{mpsc, oneshot, watch};
use tracing::Instrument;

use crate::protocol::{
    Buttons, ErrorCode, ServerMsg, Welcome, MAX_INPUTS_PER_MSG, PROTOCOL_VERSION, RESUME_TOKEN_LEN,
};
use events::EventLog;
pub use events::ReplayError;
use state::{GameParams, RoomState};

/// A room with no players for this long is removed.
const EMPTY_ROOM_LINGER: Duration = Duration::from_secs(10);
/// Room command queue: joins and inputs of every player in the room.
const COMMAND_QUEUE: usize = 4096;

pub type ResumeToken = [u8; RESUME_TOKEN_LEN];

#[derive(Debug, Clone, Copy)]
pub struct RoomConfig {
    pub game: GameParams,
    pub snapshot_every: u16,
    /// How long a dropped player is kept for resume.
    pub resume_window: Duration,
}

impl RoomConfig {
    /// Reliable events kept for each player's replay, and how far behind
    /// its session may fall: the whole roster of a full room plus headroom.
    pub fn replay(&self) -> usize {
        self.game.max_players + 64
    }
}

/// A player's direct path for snapshots, given by its transport when the
/// session joins. The room calls it from its tick for every snapshot, so it
/// must never wait: it hands the snapshot to the transport at once, or
/// declines (too big for a datagram now, connection gone) and the snapshot
/// takes the slot to the session instead. A `dyn` call per recipient: one
/// room holds players of both transports.
pub trait SnapshotSink: Send + Sync {
    /// Sends this recipient's snapshot (header with `ack_seq`, then the
    /// shared `body`), writing whatever it sends into `arena`, the tick's
    /// one buffer for all recipients. `false`: not sent.
    fn try_send(&self, arena: &mut BytesMut, ack_seq: u32, body: &[u8]) -> bool;

    /// Bytes `try_send` writes into the arena for a body of `body_len`
    /// (none by default), so the room reserves the tick's buffer at once.
    fn arena_bytes(&self, _body_len: usize) -> usize {
        0
    }
}

/// One tick's snapshot as one recipient will get it: the shared encoded body
/// and the recipient's own acknowledged input.
#[derive(Debug, Clone, Default)]
pub struct SnapshotRef {
    pub tick: u32,
    pub ack_seq: u32,
    /// Encoded `SnapshotBody`, shared by every recipient (empty: none yet).
    pub body: Bytes,
    /// Snapshots put in this slot so far: a session that finds it more
    /// than one past the last it took knows how many were replaced unseen
    /// (those the room sent itself never pass through the slot).
    pub seq: u32,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum JoinError {
    #[error("room is full ({0} players)")]
    RoomFull(usize),
    #[error("room is shutting down")]
    Closed,
    #[error("unknown or expired resume token")]
    UnknownToken,
    #[error("the events after {0} are no longer kept")]
    Gap(u32),
}

impl JoinError {
    pub fn code(&self) -> ErrorCode {
        match self {
            JoinError::RoomFull(_) => ErrorCode::RoomFull,
            JoinError::Closed => ErrorCode::Internal,
            JoinError::UnknownToken | JoinError::Gap(_) => ErrorCode::ResumeFailed,
        }
    }
}

type Sink = Option<Arc<dyn SnapshotSink>>;

enum Command {
    Join {
        name: String,
        sink: Sink,
        reply: oneshot::Sender<Result<Membership, JoinError>>,
    },
    Resume {
        player: u32,
        token: ResumeToken,
        last_seq: u32,
        sink: Sink,
        reply: oneshot::Sender<Result<Membership, JoinError>>,
    },
    Input {
        player: u32,
        newest_seq: u32,
        len: u8,
        buttons: [Buttons; MAX_INPUTS_PER_MSG],
    },
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
}

/// A player's place in a room, held by its session. Dropping it detaches
/// the player (kept for resume); [`Membership::leave`] removes it.
pub struct Membership {
    pub player_id: u32,
    pub welcome: Welcome,
    /// Reliable messages for this player, already encoded, in order.
    pub events: EventFeed,
    /// Newest snapshot for this player (newest wins). Also marked changed
    /// when a reliable event is added: read `events` first.
    pub snapshots: watch::Receiver<SnapshotRef>,
    /// Set by the room before it drops this player's slot on purpose.
    pub kicked: Arc<OnceLock<ErrorCode>>,
    room: RoomHandle,
    /// Which attachment of the player this is (resume makes a new one).
    attachment: u64,
    departure: Departure,
}

/// A player's reliable events, read in order from the room's log.
pub struct EventFeed {
    log: Arc<Mutex<EventLog>>,
    player: u32,
    /// Number of the last event read.
    last: u32,
    /// Number of the last event the session has written to its transport
    /// ([`NOT_WELCOMED`] before `Welcome`), shared with the room: the room
    /// writes a snapshot itself only when the session has nothing reliable
    /// left to write before it.
    written: Arc<AtomicU64>,
}

/// `EventFeed::written` before the session has written `Welcome`.
const NOT_WELCOMED: u64 = u64::MAX;

impl EventFeed {
    /// The next event, if there is one yet. `Gap` when the session fell more
    /// than [`RoomConfig::replay`] events behind; `Gone` once the player was
    /// removed.
    pub fn read_next(&mut self) -> Result<Option<Bytes>, ReplayError> {
        let ev = lock(&self.log).event_after(self.player, self.last)?;
        if ev.is_some() {
            self.last = self.last.wrapping_add(1);
        }
        Ok(ev)
    }

    /// Notes that `Welcome` and every event read so far are written to the
    /// transport, in order: a snapshot the room writes now comes after them.
    pub fn mark_written(&self) {
        self.written.store(self.last as u64, Release);
    }
}

/// The log is only touched under short, non-panicking critical sections;
/// a poisoned lock still holds a consistent log.
fn lock(log: &Mutex<EventLog>) -> std::sync::MutexGuard<'_, EventLog> {
    log.lock().unwrap_or_else(|e| e.into_inner())
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

    /// Marks the player as gone for good when this membership is dropped
    /// (no resume).
    pub fn leave_on_drop(&mut self) {
        self.departure = Departure::Leave;
    }
}

impl Drop for Membership {
    fn drop(&mut self) {
        // The departure queue has room for every member (see `Room::spawn`);
        // if it were ever full the room still notices the closed snapshot
        // slot on its next tick.
        let _ = self
            .room
            .leave
            .try_send((self.player_id, self.attachment, self.departure));
    }
}

/// Directory of live rooms and of resumable players.
pub struct Rooms {
    // std Mutex: held only for map lookups and inserts, never across .await.
    map: Mutex<HashMap<String, RoomHandle>>,
    /// Resume token → room name and player.
    tokens: Mutex<HashMap<ResumeToken, (String, u32)>>,
    next_room_id: std::sync::atomic::AtomicU64,
    cfg: RoomConfig,
}

impl Rooms {
    pub fn new(cfg: RoomConfig) -> Arc<Self> {
        Arc::new(Rooms {
            map: Mutex::new(HashMap::new()),
            tokens: Mutex::new(HashMap::new()),
            next_room_id: 1.into(),
            cfg,
        })
    }

    pub fn len(&self) -> usize {
        self.map.lock().map(|m| m.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
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
        let h = Room::spawn(id, name.to_string(), self.clone());
        map.insert(name.to_string(), h.clone());
        Some(h)
    }

    fn remove_if(&self, name: &str, id: u64) {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if map.get(name).is_some_and(|h| h.id == id) {
            map.remove(name);
        }
    }

    fn tokens(&self) -> std::sync::MutexGuard<'_, HashMap<ResumeToken, (String, u32)>> {
        self.tokens.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Joins `room` (creating it if needed) as `name`; snapshots go to
    /// `sink` when it takes them. The caller has validated both names.
    pub async fn join(
        self: &Arc<Self>,
        room: &str,
        name: &str,
        sink: Sink,
    ) -> Result<Membership, JoinError> {
        // A room that is just removing itself drops our join; the second
        // attempt finds or creates a live one.
        for _ in 0..3 {
            let Some(h) = self.handle(room, true) else {
                continue;
            };
            let (tx, rx) = oneshot::channel();
            let cmd = Command::Join {
                name: name.to_string(),
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

    /// Takes back the player holding `token`, replaying the reliable events
    /// after `last_seq`; snapshots go to `sink` from now on.
    pub async fn resume(
        self: &Arc<Self>,
        token: ResumeToken,
        last_seq: u32,
        sink: Sink,
    ) -> Result<(String, Membership), JoinError> {
        let (room, player) = self
            .tokens()
            .get(&token)
            .cloned()
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

struct Outlet {
    /// `None` while detached.
    snapshots: Option<watch::Sender<SnapshotRef>>,
    /// The attached session's direct path, tried before `snapshots`.
    sink: Sink,
    /// The attached session's `EventFeed::written`.
    written: Arc<AtomicU64>,
    kicked: Arc<OnceLock<ErrorCode>>,
    attachment: u64,
    detached_since: Option<Instant>,
    token: ResumeToken,
}

struct Room {
    id: u64,
    name: String,
    state: RoomState,
    outlets: HashMap<u32, Outlet>,
    /// Reliable events, kept once for every player and read by sessions.
    events: Arc<Mutex<EventLog>>,
    rooms: Arc<Rooms>,
    handle: RoomHandle,
    cfg: RoomConfig,
    next_attachment: u64,
    /// Every direct recipient's snapshot of a tick is written here: one
    /// allocation per tick, reused once the transports let go of it (kept
    /// between ticks only when every tick has a snapshot).
    arena: BytesMut,
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
        // Each attachment sends one departure, and attachments per player are
        // serialised by resume; twice the room size is ample.
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
            events: Arc::new(Mutex::new(EventLog::new(cfg.replay()))),
            rooms,
            handle: handle.clone(),
            cfg,
            next_attachment: 1,
            arena: BytesMut::new(),
        };
        // A root span: the room outlives the session that happened to create it.
        let span = tracing::info_span!(parent: None, "room", room = %name, id);
        tokio::spawn(room.run(cmd_rx, leave_rx).instrument(span));
        handle
    }

    async fn run(
        mut self,
        mut cmds: mpsc::Receiver<Command>,
        mut leaves: mpsc::Receiver<(u32, u64, Departure)>,
    ) {
        tracing::info!("room created");
        let period = Duration::from_secs_f64(1.0 / self.state.params().tick_hz as f64);
        let mut ticker = tokio::time::interval(period);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut empty_since = Some(Instant::now());
        loop {
            tokio::select! {
                biased;
                Some((id, attachment, how)) = leaves.recv() => self.depart(id, attachment, how),
                _ = ticker.tick() => {
                    self.tick();
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
            Command::Join { name, sink, reply } => {
                let result = self.join(name, sink);
                if let Err(Ok(m)) = reply.send(result) {
                    // The session gave up waiting; undo the join.
                    let mut m = m;
                    m.leave_on_drop();
                }
            }
            Command::Resume {
                player,
                token,
                last_seq,
                sink,
                reply,
            } => {
                let result = self.resume(player, token, last_seq, sink);
                // If the session gave up, dropping the membership detaches
                // the player again: nothing is lost.
                let _ = reply.send(result);
            }
            Command::Input {
                player,
                newest_seq,
                len,
                buttons,
            } => {
                // A detached player's late inputs are still its inputs.
                self.state
                    .apply_input(player, newest_seq, &buttons[..len as usize]);
            }
        }
    }

    fn welcome(&self, player_id: u32, token: ResumeToken, reliable_seq: u32) -> Welcome {
        let p = self.state.params();
        Welcome {
            version: PROTOCOL_VERSION,
            player_id,
            tick_hz: p.tick_hz,
            snapshot_every: self.cfg.snapshot_every,
            arena_w: p.arena_w,
            arena_h: p.arena_h,
            speed: p.speed,
            tick: self.state.tick(),
            resume_token: token,
            resume_window_ms: self.cfg.resume_window.as_millis().min(u32::MAX as u128) as u32,
            reliable_seq,
        }
    }

    /// A membership for a (re)attached player, whose session sends
    /// `Welcome` (not numbered) and then reads events after
    /// `welcome.reliable_seq`.
    fn attach(&mut self, welcome: &Welcome) -> (Membership, watch::Sender<SnapshotRef>) {
        let (snap_tx, snap_rx) = watch::channel(SnapshotRef::default());
        let written = Arc::new(AtomicU64::new(NOT_WELCOMED));
        let attachment = self.next_attachment;
        self.next_attachment += 1;
        let m = Membership {
            player_id: welcome.player_id,
            welcome: welcome.clone(),
            events: EventFeed {
                log: self.events.clone(),
                player: welcome.player_id,
                last: welcome.reliable_seq,
                written,
            },
            snapshots: snap_rx,
            kicked: Arc::new(OnceLock::new()),
            room: self.handle.clone(),
            attachment,
            departure: Departure::Detach,
        };
        (m, snap_tx)
    }

    fn join(&mut self, name: String, sink: Sink) -> Result<Membership, JoinError> {
        let player_id = self
            .state
            .join(name.clone())
            .map_err(|state::JoinError::RoomFull(n)| JoinError::RoomFull(n))?;
        let token: ResumeToken = rand::random();
        let welcome = self.welcome(player_id, token, 0);
        let (m, snap_tx) = self.attach(&welcome);
        // Everyone else learns of the newcomer; then the newcomer gets the
        // roster, itself included.
        // One message, shared by the broadcast and every later roster.
        let joined = ServerMsg::PlayerJoined { player_id, name }.to_bytes();
        lock(&self.events).register(player_id, joined.clone());
        self.broadcast(joined);
        lock(&self.events).open(player_id, self.state.players().map(|(id, _)| id));
        let outlet = Outlet {
            snapshots: Some(snap_tx),
            sink,
            written: m.events.written.clone(),
            kicked: m.kicked.clone(),
            attachment: m.attachment,
            detached_since: None,
            token,
        };
        self.outlets.insert(player_id, outlet);
        self.rooms
            .tokens()
            .insert(token, (self.name.clone(), player_id));
        tracing::debug!(player_id, "player joined");
        Ok(m)
    }

    fn resume(
        &mut self,
        player: u32,
        token: ResumeToken,
        last_seq: u32,
        sink: Sink,
    ) -> Result<Membership, JoinError> {
        let Some(outlet) = self.outlets.get(&player) else {
            return Err(JoinError::UnknownToken);
        };
        if outlet.token != token {
            return Err(JoinError::UnknownToken);
        }
        match lock(&self.events).check(player, last_seq) {
            Ok(()) => {}
            Err(ReplayError::Ahead | ReplayError::Gone) => return Err(JoinError::UnknownToken),
            Err(ReplayError::Gap) => return Err(JoinError::Gap(last_seq)),
        }
        let welcome = self.welcome(player, token, last_seq);
        let (m, snap_tx) = self.attach(&welcome);
        // Unwrap-free re-lookup: `attach` borrowed self mutably.
        let Some(outlet) = self.outlets.get_mut(&player) else {
            return Err(JoinError::UnknownToken);
        };
        if outlet.snapshots.is_some() {
            // The old session has not noticed its connection died, or the
            // client resumed from elsewhere: the newest session wins.
            let _ = outlet.kicked.set(ErrorCode::Replaced);
        }
        outlet.snapshots = Some(snap_tx);
        outlet.sink = sink;
        outlet.written = m.events.written.clone();
        outlet.kicked = m.kicked.clone();
        outlet.attachment = m.attachment;
        outlet.detached_since = None;
        tracing::debug!(player_id = player, last_seq, "player resumed");
        Ok(m)
    }

    fn depart(&mut self, id: u32, attachment: u64, how: Departure) {
        let Some(outlet) = self.outlets.get_mut(&id) else {
            return;
        };
        if outlet.attachment != attachment {
            // A stale departure from a session that was replaced by resume.
            return;
        }
        match how {
            Departure::Leave => self.remove(id, None),
            Departure::Detach => {
                tracing::debug!(player_id = id, "player detached; kept for resume");
                outlet.snapshots = None;
                outlet.sink = None;
                outlet.detached_since = Some(Instant::now());
            }
        }
    }

    /// Removes a player; `kick` records why the room dropped it.
    fn remove(&mut self, id: u32, kick: Option<ErrorCode>) {
        if let Some(outlet) = self.outlets.remove(&id) {
            if let Some(code) = kick {
                let _ = outlet.kicked.set(code);
            }
            self.rooms.tokens().remove(&outlet.token);
        }
        if self.state.leave(id) {
            tracing::debug!(player_id = id, ?kick, "player left");
            self.broadcast(ServerMsg::PlayerLeft { player_id: id }.to_bytes());
        }
        lock(&self.events).left(id);
    }

    /// Adds a reliable event for every player (kept for replay while
    /// detached) and wakes the attached players' sessions to read it.
    fn broadcast(&mut self, msg: Bytes) {
        lock(&self.events).push(msg);
        for o in self.outlets.values() {
            if let Some(slot) = &o.snapshots {
                slot.send_modify(|_| {});
            }
        }
    }

    fn tick(&mut self) {
        self.state.step();
        let now = Instant::now();
        let window = self.cfg.resume_window;
        let mut expired = Vec::new();
        for (&id, o) in self.outlets.iter_mut() {
            // A session that vanished without its departure being queued.
            if o.snapshots.as_ref().is_some_and(|s| s.is_closed()) {
                o.snapshots = None;
                o.sink = None;
                o.detached_since = Some(now);
            }
            if o.detached_since.is_some_and(|t| now - t >= window) {
                expired.push(id);
            }
        }
        for id in expired {
            tracing::debug!(player_id = id, "resume window over");
            self.remove(id, None);
        }
        let every = self.cfg.snapshot_every as u32;
        if !self.state.tick().is_multiple_of(every) || self.outlets.is_empty() {
            return;
        }
        let tick = self.state.tick();
        // Encoded once per tick; each recipient gets a cheap clone.
        let body = self.state.snapshot(unix_micros()).encode();
        // Room for everything the direct recipients write, in one allocation.
        let need: usize = (self.outlets.values())
            .filter_map(|o| o.sink.as_ref())
            .map(|s| s.arena_bytes(body.len()))
            .sum();
        self.arena.reserve(need);
        for (&id, o) in &self.outlets {
            let Some(slot) = &o.snapshots else { continue };
            let ack_seq = self.state.player(id).map_or(0, |p| p.last_seq);
            if let Some(sink) = &o.sink {
                // Only behind everything reliable the session was to write
                // first: a join must not be overtaken by the snapshot that
                // shows the player (on WebSocket it cannot be, otherwise).
                let seq = lock(&self.events).seq(id);
                let caught_up = seq.is_some_and(|n| o.written.load(Acquire) == n as u64);
                if caught_up && sink.try_send(&mut self.arena, ack_seq, &body) {
                    continue;
                }
            }
            slot.send_modify(|s| {
                s.seq = s.seq.wrapping_add(1);
                s.tick = tick;
                s.ack_seq = ack_seq;
                s.body = body.clone();
            });
        }
        if every > 1 {
            // Snapshots are sparse: do not keep a room-sized buffer between
            // them (what is in flight keeps its part until sent).
            self.arena = BytesMut::new();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{Buttons, SnapshotBody};
    use std::sync::atomic::{AtomicBool, AtomicU32};

    fn rooms() -> Arc<Rooms> {
        Rooms::new(RoomConfig {
            game: GameParams {
                tick_hz: 60,
                arena_w: 960.0,
                arena_h: 540.0,
                speed: 240.0,
                max_players: 8,
            },
            snapshot_every: 1,
            resume_window: Duration::from_secs(10),
        })
    }

    /// Records what the room hands it; declines while `decline` is set.
    #[derive(Default)]
    struct Recorder {
        decline: AtomicBool,
        sent: Mutex<Vec<Bytes>>,
        calls: AtomicU32,
    }

    impl SnapshotSink for Recorder {
        fn arena_bytes(&self, body_len: usize) -> usize {
            crate::protocol::SNAPSHOT_HEADER_LEN + body_len
        }

        fn try_send(&self, arena: &mut BytesMut, ack_seq: u32, body: &[u8]) -> bool {
            self.calls.fetch_add(1, Relaxed);
            crate::protocol::encode_snapshot(arena, ack_seq, body);
            let msg = arena.split().freeze();
            if self.decline.load(Relaxed) {
                return false;
            }
            self.sent.lock().unwrap().push(msg);
            true
        }
    }

    /// What a session does: write `Welcome` and every event there is.
    fn written_all(m: &mut Membership) {
        while m.events.read_next().unwrap().is_some() {}
        m.events.mark_written();
    }

    fn decode(msg: &[u8]) -> (u32, SnapshotBody) {
        match ServerMsg::decode(msg) {
            Ok(ServerMsg::Snapshot { ack_seq, body }) => (ack_seq, body),
            other => panic!("not a snapshot: {other:?}"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn snapshots_go_to_the_sink_and_never_wake_the_slot() {
        let rooms = rooms();
        let sink = Arc::new(Recorder::default());
        let mut direct = rooms.join("r", "d", Some(sink.clone())).await.unwrap();
        let mut other = rooms.join("r", "s", None).await.unwrap();
        written_all(&mut direct);
        assert!(direct.input(3, &[Buttons(8), Buttons(8), Buttons(8)]));
        tokio::time::sleep(Duration::from_millis(100)).await;

        let sent = sink.sent.lock().unwrap().clone();
        assert!(sent.len() >= 5, "{} snapshots sent directly", sent.len());
        let (ack, body) = decode(sent.last().unwrap());
        assert_eq!(ack, 3, "the recipient's own acknowledged input");
        assert_eq!(body.players.len(), 2);
        let ticks: Vec<u32> = sent.iter().map(|m| decode(m).1.tick).collect();
        assert!(ticks.windows(2).all(|w| w[1] == w[0] + 1), "{ticks:?}");

        // The session without a sink gets them through its slot; the
        // direct one's slot only ever changed for reliable events.
        assert!(!other.snapshots.borrow_and_update().body.is_empty());
        assert!(direct.snapshots.borrow_and_update().body.is_empty());
    }

    /// No allocation per recipient: a tick's direct snapshots are written
    /// one after another into the buffer reserved for all of them.
    #[tokio::test(start_paused = true)]
    async fn a_ticks_direct_snapshots_share_one_buffer() {
        let rooms = rooms();
        let sinks: Vec<Arc<Recorder>> = (0..3).map(|_| Arc::new(Recorder::default())).collect();
        let mut members = Vec::new();
        for (i, sink) in sinks.iter().enumerate() {
            members.push(
                rooms
                    .join("r", &format!("p{i}"), Some(sink.clone()))
                    .await
                    .unwrap(),
            );
        }
        members.iter_mut().for_each(written_all);
        tokio::time::sleep(Duration::from_millis(50)).await;
        let last: Vec<Bytes> = sinks
            .iter()
            .map(|s| s.sent.lock().unwrap().last().cloned().unwrap())
            .collect();
        let mut spans: Vec<(usize, usize)> = last
            .iter()
            .map(|b| (b.as_ptr() as usize, b.len()))
            .collect();
        spans.sort();
        assert!(
            spans.windows(2).all(|w| w[0].0 + w[0].1 == w[1].0),
            "not contiguous: {spans:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_declined_snapshot_takes_the_slot_to_the_session() {
        let rooms = rooms();
        let sink = Arc::new(Recorder::default());
        sink.decline.store(true, Relaxed);
        let mut m = rooms.join("r", "d", Some(sink.clone())).await.unwrap();
        written_all(&mut m);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(sink.calls.load(Relaxed) >= 2);
        assert!(sink.sent.lock().unwrap().is_empty());
        let snap = m.snapshots.borrow_and_update().clone();
        assert!(
            !snap.body.is_empty(),
            "the declined snapshot is in the slot"
        );

        // Each declined snapshot counted once in the slot: the session can
        // tell how many it never took.
        assert_eq!(snap.seq, sink.calls.load(Relaxed));

        // Accepted again: the slot keeps its last snapshot and the sink
        // carries the new ones.
        sink.decline.store(false, Relaxed);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!sink.sent.lock().unwrap().is_empty());
        let after = m.snapshots.borrow_and_update().clone();
        assert_eq!((after.tick, after.seq), (snap.tick, snap.seq));
    }

    #[tokio::test(start_paused = true)]
    async fn a_detached_player_gets_nothing_and_resume_brings_the_new_sink() {
        let rooms = rooms();
        let old = Arc::new(Recorder::default());
        let mut m = rooms.join("r", "d", Some(old.clone())).await.unwrap();
        let token = m.welcome.resume_token;
        let _keep_room = rooms.join("r", "x", None).await.unwrap();
        written_all(&mut m);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(old.calls.load(Relaxed) >= 2);
        drop(m);
        tokio::time::sleep(Duration::from_millis(50)).await;
        let before = old.calls.load(Relaxed);
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(
            old.calls.load(Relaxed),
            before,
            "no snapshots while detached"
        );

        let new = Arc::new(Recorder::default());
        let (_, mut m) = rooms.resume(token, 0, Some(new.clone())).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        // Nothing direct before the resumed session has written Welcome
        // and the events it missed.
        assert_eq!(new.calls.load(Relaxed), 0);
        written_all(&mut m);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(old.calls.load(Relaxed), before);
        assert!(new.sent.lock().unwrap().len() >= 2);
    }

    #[tokio::test(start_paused = true)]
    async fn no_direct_snapshot_overtakes_an_event_the_session_has_not_written() {
        let rooms = rooms();
        let sink = Arc::new(Recorder::default());
        let mut m = rooms.join("r", "d", Some(sink.clone())).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        // Welcome and the roster are not written yet: all via the slot.
        assert_eq!(sink.calls.load(Relaxed), 0);
        assert!(!m.snapshots.borrow_and_update().body.is_empty());

        written_all(&mut m);
        tokio::time::sleep(Duration::from_millis(50)).await;
        let direct = sink.calls.load(Relaxed);
        assert!(direct >= 2);

        // A newcomer's PlayerJoined is due to this session: until it is
        // written, snapshots (which show the newcomer) wait in the slot.
        let _b = rooms.join("r", "b", None).await.unwrap();
        let tick = m.snapshots.borrow_and_update().tick;
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(sink.calls.load(Relaxed), direct);
        let slot = m.snapshots.borrow_and_update().clone();
        assert!(slot.tick > tick);
        assert_eq!(decode_body(&slot.body).players.len(), 2);
        written_all(&mut m);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(sink.calls.load(Relaxed) > direct);
    }

    fn decode_body(body: &[u8]) -> SnapshotBody {
        let mut msg = BytesMut::new();
        crate::protocol::encode_snapshot(&mut msg, 0, body);
        decode(&msg).1
    }
}
