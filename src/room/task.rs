//! One room's task: owns the game, calls it, and carries out what it says.
//!
//! Invariants:
//! - Every game call goes through [`RoomTask::call`], which catches a
//!   panic; after one, the room closes (every player gets `internal`) and
//!   the game is never called again.
//! - Messages a callback sends leave when it returns ([`RoomTask::deliver`]),
//!   resolved against the players present then.
//! - A player's numbered stream is its roster, then, in order, everything
//!   broadcast and everything sent to it; the log numbers them
//!   (`events`), sessions read them, and a latest-only message goes
//!   straight to a transport only behind all of them (`fanout`).
//! - Inputs reach the game once each, in sequence order, at most
//!   [`MAX_INPUTS_PER_TICK`] per player per tick; a player's reliable `App`
//!   messages reach it once each, in order, counted in `client_seq` so that
//!   a resume can say where the client's replay starts.

use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicU32, AtomicU64};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tracing::Instrument;

use super::events::EventLog;
use super::fanout::{Acks, Fanout, LatestQueue, Link, Recipient, Snap, SnapshotRef, NOT_WELCOMED};
use super::ring::Ring;
use super::{
    lock, Command, Departure, EventFeed, JoinError, Membership, ReplayError, ResumeToken,
    RoomConfig, RoomHandle, Rooms, Sink, COMMAND_QUEUE,
};
use crate::game::{
    Ctx, Delivery, Game, Join, MakeGame, Outbox, PlayerId, Reject, RoomInfo, Target, View,
};
use crate::metrics::Metrics;
use crate::protocol::{
    delta, encode_server_app, put_delta_prefix, put_snapshot_prefix, Close, ErrorCode, Inputs,
    ServerMsg, Welcome, DELTA_PREFIX_LEN, MAX_INPUTS_PER_MSG, MAX_SERVER_MSG, PROTOCOL_VERSION,
    SNAPSHOT_HEADER_LEN, SNAPSHOT_PREFIX_LEN,
};

/// Inputs handed to the game per player per tick; the rest of a burst waits
/// for the next tick (the client's redundancy re-sends it) or is dropped.
pub const MAX_INPUTS_PER_TICK: u8 = 8;

/// A room with no players for this long is removed.
const EMPTY_ROOM_LINGER: Duration = Duration::from_secs(10);

/// A player of the room, attached to a session or kept for resume.
struct Player {
    /// `None` while detached.
    link: Option<Link>,
    detached_since: Option<Instant>,
    token: ResumeToken,
    /// Last input handed to the game (0: none yet).
    last_input: u32,
    inputs_this_tick: u8,
    /// Reliable `App` messages of this player handed to the game.
    client_seq: u32,
    /// This player's recent snapshots ([`View::PerPlayer`] only).
    ring: Ring,
}

impl Recipient for Player {
    fn link(&self) -> Option<&Link> {
        self.link.as_ref()
    }

    fn acked_input(&self) -> u32 {
        self.last_input
    }
}

/// The game panicked; the room is closing.
struct Panicked;

struct RoomTask<G: Game> {
    id: u64,
    name: String,
    game: G,
    view: View,
    tick: u32,
    players: BTreeMap<PlayerId, Player>,
    /// The keys of `players`, for [`Ctx::players`] without allocating.
    ids: Vec<PlayerId>,
    next_id: PlayerId,
    /// Numbered events, kept once for every player and read by sessions.
    events: Arc<Mutex<EventLog>>,
    rooms: Arc<Rooms>,
    handle: RoomHandle,
    cfg: RoomConfig,
    metrics: Arc<Metrics>,
    next_attachment: u64,
    fanout: Fanout,
    /// Messages sent by the game's current callback (reused buffer).
    outbox: Outbox,
    /// Where each tick's snapshot bodies are written (reused).
    bodies: BytesMut,
    /// Length of the last snapshot body, to reserve the next batch's arena.
    body_len: usize,
    /// The room's recent snapshots ([`View::Shared`]): delta baselines.
    ring: Ring,
    /// Per player of a snapshot batch, in order: the tick its delta is
    /// against (reused).
    bases: Vec<Option<u32>>,
    /// This snapshot's deltas, one per distinct baseline (reused).
    deltas: Vec<(u32, Snap)>,
    /// Where deltas are written (reused, like `bodies`).
    delta_buf: BytesMut,
    failed: bool,
}

fn unix_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// Starts a room for the game `make` makes.
pub(super) fn spawn<M: MakeGame>(make: &M, id: u64, name: &str, rooms: &Arc<Rooms>) -> RoomHandle {
    let cfg = rooms.cfg.clone();
    let (cmd_tx, cmd_rx) = mpsc::channel(COMMAND_QUEUE);
    // Each attachment sends one departure, and attachments per player are
    // serialised by resume; twice the room size is ample.
    let (leave_tx, leave_rx) = mpsc::channel(cfg.max_players * 2 + 16);
    let handle = RoomHandle {
        id,
        cmd: cmd_tx,
        leave: leave_tx,
        players: Default::default(),
    };
    // A root span: the room outlives the session that happened to create it.
    let span = tracing::info_span!(parent: None, "room", room = %name, id);
    let info = RoomInfo {
        name,
        tick_hz: cfg.tick_hz,
        snapshot_every: cfg.snapshot_every,
        max_players: cfg.max_players,
        options: &cfg.game_options,
    };
    let game = match span.in_scope(|| catch_unwind(AssertUnwindSafe(|| make.make(&info)))) {
        Ok(g) => g,
        Err(p) => {
            // No room: the command queue's receiver is dropped with this
            // frame, so the joins that created it fail as `internal`.
            rooms.metrics.game_panics.fetch_add(1, Relaxed);
            tracing::error!(parent: &span, panic = panic_text(&p), "the game failed to start");
            return handle;
        }
    };
    let view = game.view();
    let room = RoomTask {
        id,
        name: name.to_string(),
        game,
        view,
        tick: 0,
        players: BTreeMap::new(),
        ids: Vec::new(),
        next_id: 1,
        events: Arc::new(Mutex::new(EventLog::new(cfg.replay()))),
        rooms: rooms.clone(),
        handle: handle.clone(),
        metrics: rooms.metrics.clone(),
        cfg,
        next_attachment: 1,
        fanout: Fanout::default(),
        outbox: Outbox::default(),
        bodies: BytesMut::new(),
        ring: Ring::default(),
        bases: Vec::new(),
        deltas: Vec::new(),
        delta_buf: BytesMut::new(),
        body_len: 64,
        failed: false,
    };
    tokio::spawn(room.run(cmd_rx, leave_rx).instrument(span));
    handle
}

fn panic_text(p: &Box<dyn std::any::Any + Send>) -> &str {
    p.downcast_ref::<&str>()
        .copied()
        .or_else(|| p.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(not a string)")
}

impl<G: Game> RoomTask<G> {
    async fn run(
        mut self,
        mut cmds: mpsc::Receiver<Command>,
        mut leaves: mpsc::Receiver<(u32, u64, Departure)>,
    ) {
        tracing::info!("room created");
        let period = Duration::from_secs_f64(1.0 / self.cfg.tick_hz as f64);
        let mut ticker = tokio::time::interval(period);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut empty_since = Some(Instant::now());
        while !self.failed {
            tokio::select! {
                biased;
                Some((id, attachment, how)) = leaves.recv() => self.depart(id, attachment, how),
                due = ticker.tick() => {
                    let start = Instant::now();
                    self.tick();
                    let end = Instant::now();
                    // Two clock reads and two histograms per tick, none per
                    // message.
                    self.metrics.tick_lateness.observe(start.saturating_duration_since(due));
                    self.metrics.tick_duration.observe(end - start);
                    // A tick that ran past the next one's start is late.
                    if end.saturating_duration_since(due) > period {
                        self.metrics.ticks_overrun.fetch_add(1, Relaxed);
                    }
                    self.handle.players.store(self.players.len() as u32, Relaxed);
                    match (self.players.is_empty(), empty_since) {
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
        if self.failed {
            tracing::warn!("room closed (its game failed, or it moved)");
        } else {
            tracing::info!("room removed after being empty");
        }
    }

    /// Calls the game with a context; `Err` when it panicked (the room is
    /// then closing, see [`RoomTask::fail`]).
    fn call<R>(&mut self, f: impl FnOnce(&mut G, &mut Ctx<'_>) -> R) -> Result<R, Panicked> {
        if self.failed {
            return Err(Panicked);
        }
        let mut out = std::mem::take(&mut self.outbox);
        let mut ctx = Ctx {
            tick: self.tick,
            tick_hz: self.cfg.tick_hz,
            players: &self.ids,
            out: &mut out,
        };
        let game = &mut self.game;
        let result = catch_unwind(AssertUnwindSafe(|| f(game, &mut ctx)));
        self.outbox = out;
        match result {
            Ok(r) => Ok(r),
            Err(p) => {
                self.outbox.sent.clear();
                self.fail(panic_text(&p).to_string());
                Err(Panicked)
            }
        }
    }

    /// The game panicked: tell every player `internal`, forget them, and
    /// stop. Other rooms are untouched.
    fn fail(&mut self, panic: String) {
        self.metrics.game_panics.fetch_add(1, Relaxed);
        tracing::error!(%panic, players = self.players.len(), "the game panicked; closing the room");
        self.close_all(Close::error(
            ErrorCode::Internal,
            "the game failed; the room was closed",
        ));
    }

    /// Tells every player `close`, forgets them (no resume here), and
    /// stops the room.
    fn close_all(&mut self, close: Close) {
        self.failed = true;
        let mut tokens = self.rooms.tokens();
        for p in std::mem::take(&mut self.players).into_values() {
            tokens.remove(&p.token);
            if let Some(link) = p.link {
                let _ = link.kicked.set(close.clone());
                // Dropping the slot's sender ends the session's wait.
            }
        }
        self.ids.clear();
        drop(tokens);
        self.rooms.remove_if(&self.name, self.id);
    }

    fn command(&mut self, cmd: Command) {
        match cmd {
            Command::Join {
                name,
                app,
                sink,
                reply,
            } => {
                let result = self.join(name, &app, sink);
                if let Err(Ok(mut m)) = reply.send(result) {
                    // The session gave up waiting; undo the join.
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
                attachment,
                newest_seq,
                inputs,
                snapshot_tick,
            } => {
                if let Some(tick) = snapshot_tick {
                    self.ack(player, attachment, tick);
                }
                if !inputs.is_empty() {
                    self.input(player, newest_seq, &inputs);
                }
            }
            Command::Message {
                player,
                attachment,
                reliable,
                payload,
            } => self.message(player, attachment, reliable, &payload),
            Command::Evict(close) => {
                tracing::warn!(players = self.players.len(), code = ?close.code(), "room evicted");
                self.close_all(close);
            }
        }
    }

    fn welcome(
        &mut self,
        player_id: PlayerId,
        token: ResumeToken,
        reliable_seq: u32,
    ) -> Result<Welcome, Panicked> {
        let mut app = BytesMut::new();
        self.call(|g, _| g.welcome(player_id, &mut app))?;
        let client_seq = self.players.get(&player_id).map_or(0, |p| p.client_seq);
        Ok(Welcome {
            version: PROTOCOL_VERSION,
            player_id,
            tick_hz: self.cfg.tick_hz,
            snapshot_every: match self.view {
                View::None => 0,
                _ => self.cfg.snapshot_every,
            },
            tick: self.tick,
            resume_token: token,
            resume_window_ms: self.cfg.resume_window.as_millis().min(u32::MAX as u128) as u32,
            reliable_seq,
            client_seq,
            max_message: self.cfg.max_message,
            max_input: self.cfg.max_input,
            game: self.rooms.game_name().to_string(),
            app: app.freeze(),
        })
    }

    /// A membership for a (re)attached player, whose session sends
    /// `Welcome` (not numbered) and then reads events after
    /// `welcome.reliable_seq`; and the room's side of it.
    fn attach(&mut self, welcome: Welcome, sink: Sink) -> Result<(Membership, Link), JoinError> {
        let player = welcome.player_id;
        let at = lock(&self.events)
            .cursor_after(player, welcome.reliable_seq)
            .map_err(|e| match e {
                ReplayError::Gap => JoinError::Gap(welcome.reliable_seq),
                ReplayError::Ahead | ReplayError::Gone => JoinError::UnknownToken,
            })?;
        let (slot, snapshots) = watch::channel(SnapshotRef::default());
        let written = Arc::new(AtomicU64::new(NOT_WELCOMED));
        // A new attachment starts from a full snapshot (PROTOCOL.md §5.1).
        let delivered = Arc::new(AtomicU32::new(0));
        let latest = Arc::new(LatestQueue::default());
        let kicked = Arc::new(OnceLock::new());
        let attachment = self.next_attachment;
        self.next_attachment += 1;
        let last = welcome.reliable_seq;
        let m = Membership {
            player_id: player,
            welcome,
            events: EventFeed {
                log: self.events.clone(),
                player,
                at,
                last,
                written: written.clone(),
            },
            snapshots,
            latest: latest.clone(),
            kicked: kicked.clone(),
            delivered: delivered.clone(),
            room: self.handle.clone(),
            attachment,
            departure: Departure::Detach,
        };
        let link = Link {
            slot,
            sink,
            written,
            latest,
            kicked,
            attachment,
            delivered,
            acks: Acks::default(),
        };
        Ok((m, link))
    }

    fn join(&mut self, name: String, app: &[u8], sink: Sink) -> Result<Membership, JoinError> {
        if self.players.len() >= self.cfg.max_players {
            return Err(JoinError::RoomFull(self.cfg.max_players));
        }
        let id = self.next_id;
        let join = Join { name: &name, app };
        match self.call(|g, ctx| g.join(ctx, id, join)) {
            Err(Panicked) => return Err(JoinError::Closed),
            Ok(Err(Reject(reason))) => {
                // What a refused join sent is not sent.
                self.outbox.sent.clear();
                return Err(JoinError::Refused(reason.into_owned()));
            }
            Ok(Ok(())) => {}
        }
        // Ids are never reused within a room; 0 means "no player".
        self.next_id = self.next_id.wrapping_add(1).max(1);
        let token: ResumeToken = rand::random();
        let player = Player {
            link: None,
            detached_since: None,
            token,
            last_input: 0,
            inputs_this_tick: 0,
            client_seq: 0,
            ring: Ring::default(),
        };
        self.players.insert(id, player);
        self.ids = self.players.keys().copied().collect();
        self.rooms.add_token(token, &self.name, id, &name);
        // Everyone else learns of the newcomer; then the newcomer's stream
        // starts with the roster, itself included. One message, shared by
        // the broadcast and every later roster.
        let joined = ServerMsg::PlayerJoined {
            player_id: id,
            name,
        }
        .to_bytes();
        lock(&self.events).register(id, joined.clone());
        self.broadcast(joined);
        lock(&self.events).open(id, self.ids.iter().copied());
        let attached = self
            .welcome(id, token, 0)
            .map_err(|Panicked| JoinError::Closed)
            .and_then(|w| self.attach(w, sink));
        let (m, link) = match attached {
            Ok(a) => a,
            Err(e) => {
                self.remove(id, None);
                return Err(e);
            }
        };
        if let Some(p) = self.players.get_mut(&id) {
            p.link = Some(link);
        }
        // What the game sent while the player joined comes after its roster.
        self.deliver();
        tracing::debug!(player_id = id, "player joined");
        Ok(m)
    }

    fn resume(
        &mut self,
        player: PlayerId,
        token: ResumeToken,
        last_seq: u32,
        sink: Sink,
    ) -> Result<Membership, JoinError> {
        if self.players.get(&player).is_none_or(|p| p.token != token) {
            return Err(JoinError::UnknownToken);
        }
        let seq = lock(&self.events).seq(player).unwrap_or(0);
        if last_seq.wrapping_sub(seq) as i32 > 0 {
            return Err(JoinError::Ahead { last_seq, seq });
        }
        let welcome = self
            .welcome(player, token, last_seq)
            .map_err(|Panicked| JoinError::Closed)?;
        let (m, link) = self.attach(welcome, sink)?;
        let Some(p) = self.players.get_mut(&player) else {
            return Err(JoinError::UnknownToken);
        };
        if let Some(old) = p.link.replace(link) {
            // The old session has not noticed its connection died, or the
            // client resumed from elsewhere: the newest session wins.
            let _ = old.kicked.set(Close::error(
                ErrorCode::Replaced,
                "another session resumed this player",
            ));
        }
        p.detached_since = None;
        tracing::debug!(player_id = player, last_seq, "player resumed");
        Ok(m)
    }

    fn depart(&mut self, id: PlayerId, attachment: u64, how: Departure) {
        let Some(p) = self.players.get_mut(&id) else {
            return;
        };
        if p.link.as_ref().is_none_or(|l| l.attachment != attachment) {
            // A stale departure from a session that was replaced by resume.
            return;
        }
        match how {
            Departure::Leave => self.remove(id, None),
            Departure::Detach => {
                tracing::debug!(player_id = id, "player detached; kept for resume");
                p.link = None;
                p.detached_since = Some(Instant::now());
            }
        }
    }

    /// Removes a player; `kick` is what its session is told, if anything.
    fn remove(&mut self, id: PlayerId, kick: Option<Close>) {
        let Some(p) = self.players.remove(&id) else {
            return;
        };
        if let (Some(close), Some(link)) = (kick, &p.link) {
            let _ = link.kicked.set(close);
        }
        self.rooms.tokens().remove(&p.token);
        self.ids = self.players.keys().copied().collect();
        tracing::debug!(player_id = id, "player left");
        self.broadcast(ServerMsg::PlayerLeft { player_id: id }.to_bytes());
        lock(&self.events).left(id);
        if self.call(|g, ctx| g.leave(ctx, id)).is_ok() {
            self.deliver();
        }
    }

    /// The client of `attachment` applied the snapshot of `tick`. A tick
    /// still to come is no acknowledgement.
    fn ack(&mut self, id: PlayerId, attachment: u64, tick: u32) {
        if tick > self.tick {
            return;
        }
        let link = self.players.get_mut(&id).and_then(|p| p.link.as_mut());
        if let Some(link) = link.filter(|l| l.attachment == attachment) {
            link.acks.ack(tick);
        }
    }

    fn input(&mut self, id: PlayerId, newest_seq: u32, inputs: &Inputs) {
        // A detached player's late inputs are still its inputs.
        let Some(p) = self.players.get(&id) else {
            return;
        };
        let (mut last, mut budget) = (p.last_input, MAX_INPUTS_PER_TICK - p.inputs_this_tick);
        // Oldest first: input i (newest first) is number newest_seq - i.
        let mut carried: [&[u8]; MAX_INPUTS_PER_MSG] = [&[]; MAX_INPUTS_PER_MSG];
        let mut n = 0;
        for (slot, bytes) in carried.iter_mut().zip(inputs.iter()) {
            *slot = bytes;
            n += 1;
        }
        for i in (0..n).rev() {
            let (seq, bytes) = (newest_seq.wrapping_sub(i as u32), carried[i]);
            if seq.wrapping_sub(last) as i32 <= 0 {
                continue;
            }
            if budget == 0 {
                break;
            }
            match self.call(|g, ctx| g.input(ctx, id, bytes)) {
                Err(Panicked) => return,
                Ok(Err(reject)) => return self.reject(id, reject),
                Ok(Ok(())) => {}
            }
            last = seq;
            budget -= 1;
            if let Some(p) = self.players.get_mut(&id) {
                p.last_input = seq;
                p.inputs_this_tick = MAX_INPUTS_PER_TICK - budget;
            }
        }
        self.deliver();
    }

    fn message(&mut self, id: PlayerId, attachment: u64, reliable: bool, payload: &[u8]) {
        let Some(p) = self.players.get_mut(&id) else {
            return;
        };
        if p.link.as_ref().is_none_or(|l| l.attachment != attachment) {
            // From a session replaced by a resume: the client re-sends what
            // counts (PROTOCOL.md §7.2).
            return;
        }
        if reliable {
            p.client_seq = p.client_seq.wrapping_add(1);
        }
        let delivery = if reliable {
            Delivery::Reliable
        } else {
            Delivery::Unreliable
        };
        match self.call(|g, ctx| g.message(ctx, id, payload, delivery)) {
            Err(Panicked) => {}
            Ok(Err(reject)) => self.reject(id, reject),
            Ok(Ok(())) => self.deliver(),
        }
    }

    /// The game rejected a player's bytes: it is removed with `bad_message`.
    fn reject(&mut self, id: PlayerId, reject: Reject) {
        self.deliver();
        tracing::info!(player_id = id, reason = %reject, "the game rejected a player's bytes");
        let close = Close::error(ErrorCode::BadMessage, reject.0.into_owned());
        self.remove(id, Some(close));
    }

    /// Adds a numbered event for every player (kept for replay while
    /// detached) and wakes the attached players' sessions to read it.
    fn broadcast(&mut self, msg: Bytes) {
        lock(&self.events).push(msg);
        for link in self.players.values().filter_map(|p| p.link.as_ref()) {
            link.wake();
        }
    }

    /// Carries out what the last callback sent.
    fn deliver(&mut self) {
        if self.outbox.too_large > 0 {
            let n = std::mem::take(&mut self.outbox.too_large);
            self.metrics.app_messages_too_large.fetch_add(n, Relaxed);
        }
        if self.outbox.sent.is_empty() {
            return;
        }
        let mut out = std::mem::take(&mut self.outbox.sent);
        let unreliable = out.iter().any(|o| o.delivery == Delivery::Unreliable);
        if unreliable {
            let len = out.iter().map(|o| o.payload.len() + 1).max().unwrap_or(0);
            self.fanout.begin(&self.events, &self.players, len);
        }
        for o in out.drain(..) {
            match o.delivery {
                Delivery::Reliable => self.send_reliable(&o.to, encode_server_app(&o.payload)),
                Delivery::Unreliable => {
                    for (i, (&id, p)) in self.players.iter().enumerate() {
                        if o.to.includes(id) && self.fanout.unreliable(i, p, &o.payload) {
                            self.metrics.app_unreliable_dropped.fetch_add(1, Relaxed);
                        }
                    }
                }
            }
        }
        if unreliable {
            self.fanout.end(false);
        }
        self.outbox.sent = out;
    }

    fn send_reliable(&mut self, to: &Target, msg: Bytes) {
        if let Target::Room = to {
            return self.broadcast(msg);
        }
        let mut log = lock(&self.events);
        for (&id, p) in &self.players {
            if to.includes(id) && log.push_to(id, msg.clone()) {
                if let Some(link) = &p.link {
                    link.wake();
                }
            }
        }
    }

    fn tick(&mut self) {
        self.tick = self.tick.wrapping_add(1);
        let now = Instant::now();
        let window = self.cfg.resume_window;
        let mut expired = Vec::new();
        for (&id, p) in self.players.iter_mut() {
            p.inputs_this_tick = 0;
            // A session that vanished without its departure being queued.
            if p.link.as_ref().is_some_and(Link::closed) {
                p.link = None;
                p.detached_since = Some(now);
            }
            if p.detached_since.is_some_and(|t| now - t >= window) {
                expired.push(id);
            }
        }
        for id in expired {
            tracing::debug!(player_id = id, "resume window over");
            self.remove(id, None);
        }
        if self.call(|g, ctx| g.tick(ctx)).is_err() {
            return;
        }
        self.deliver();
        let every = self.cfg.snapshot_every as u32;
        if self.tick.is_multiple_of(every) && self.players.values().any(|p| p.link.is_some()) {
            self.snapshot();
        }
    }

    /// Takes this tick's snapshot and sends it to every attached player:
    /// as a delta to those with a baseline still kept (PROTOCOL.md §5.1),
    /// whole to the others.
    fn snapshot(&mut self) {
        let (tick, time) = (self.tick, unix_micros());
        let len = self.body_len + SNAPSHOT_HEADER_LEN;
        // A new attachment's first snapshot: older acknowledgements are
        // another connection's.
        for link in self.players.values_mut().filter_map(|p| p.link.as_mut()) {
            if link.acks.first_tick == 0 {
                link.acks.first_tick = tick;
            }
        }
        match self.view {
            View::None => {}
            View::Shared => {
                let Ok(body) = self.body(tick, time, None) else {
                    return;
                };
                let payload = body.slice(SNAPSHOT_PREFIX_LEN..);
                let full = Snap { delta: false, body };
                // One delta per distinct baseline, not per player.
                self.bases.clear();
                self.bases.extend(
                    self.players
                        .values()
                        .map(|p| p.link.as_ref().and_then(Link::baseline)),
                );
                self.deltas.clear();
                for i in 0..self.bases.len() {
                    let Some(b) = self.bases[i] else { continue };
                    if self.deltas.iter().any(|(t, _)| *t == b) {
                        continue;
                    }
                    let base = self.ring.get(b).cloned();
                    let Ok(snap) = self.delta(tick, time, b, base, &payload) else {
                        return;
                    };
                    self.deltas.push((b, snap.unwrap_or_else(|| full.clone())));
                }
                self.fanout.begin(
                    &self.events,
                    &self.players,
                    full.body.len() + SNAPSHOT_HEADER_LEN,
                );
                for (i, p) in self.players.values().enumerate() {
                    let snap = self.bases[i]
                        .and_then(|b| self.deltas.iter().find(|(t, _)| *t == b))
                        .map_or(&full, |(_, s)| s);
                    self.fanout.snapshot(i, p, tick, snap);
                }
                self.ring.push(tick, payload);
            }
            View::PerPlayer => {
                self.fanout.begin(&self.events, &self.players, len);
                // By index: `body` needs the room, and `ids` is its own.
                for i in 0..self.ids.len() {
                    let id = self.ids[i];
                    let Some(base) = self.players.get(&id).and_then(|p| {
                        let link = p.link.as_ref()?;
                        Some(link.baseline().map(|b| (b, p.ring.get(b).cloned())))
                    }) else {
                        continue;
                    };
                    let Ok(body) = self.body(tick, time, Some(id)) else {
                        return;
                    };
                    let payload = body.slice(SNAPSHOT_PREFIX_LEN..);
                    let delta = match base {
                        Some((b, base)) => match self.delta(tick, time, b, base, &payload) {
                            Ok(d) => d,
                            Err(()) => return,
                        },
                        None => None,
                    };
                    let snap = delta.unwrap_or(Snap { delta: false, body });
                    if let Some(p) = self.players.get_mut(&id) {
                        self.fanout.snapshot(i, &*p, tick, &snap);
                        p.ring.push(tick, payload);
                    }
                }
            }
        }
        self.fanout.end(self.cfg.snapshot_every > 1);
    }

    /// A `SnapshotDelta` body for `payload` against the snapshot of
    /// `base_tick` (`base`: its payload, if the ring still has it): the
    /// game's own delta when it makes one, else Rally's. `Ok(None)` when a
    /// delta would not be smaller than the snapshot (or the baseline is
    /// gone): send it whole. `Err` when the game panicked.
    fn delta(
        &mut self,
        tick: u32,
        time: u64,
        base_tick: u32,
        base: Option<Bytes>,
        payload: &Bytes,
    ) -> Result<Option<Snap>, ()> {
        let Some(base) = base else {
            return Ok(None);
        };
        let mut buf = std::mem::take(&mut self.delta_buf);
        buf.reserve(DELTA_PREFIX_LEN + payload.len() / 2 + 16);
        put_delta_prefix(&mut buf, tick, time, base_tick, delta::CODEC_RALLY);
        let mut out = buf.split_off(buf.len());
        let own = self.call(|g, _| g.delta(&base, payload, &mut out));
        let own = match own {
            Ok(own) => own,
            Err(Panicked) => {
                self.delta_buf = buf;
                return Err(());
            }
        };
        if !own {
            out.clear();
            delta::encode(&base, payload, &mut out);
        }
        let smaller = out.len() < payload.len();
        buf.unsplit(out);
        if own {
            buf[DELTA_PREFIX_LEN - 1] = delta::CODEC_GAME;
        }
        let body = buf.split().freeze();
        self.delta_buf = buf;
        if !smaller {
            return Ok(None);
        }
        self.metrics.snapshot_deltas_encoded.fetch_add(1, Relaxed);
        Ok(Some(Snap { delta: true, body }))
    }

    /// One snapshot body (`tick`, `server_time_us`, the game's payload),
    /// written into the room's reused buffer: no allocation once the
    /// buffer has grown to the snapshot's size and the last tick's bodies
    /// are sent. `Err` when the game panicked or wrote too much.
    fn body(&mut self, tick: u32, time: u64, player: Option<PlayerId>) -> Result<Bytes, ()> {
        let mut buf = std::mem::take(&mut self.bodies);
        buf.reserve(SNAPSHOT_PREFIX_LEN + 64);
        put_snapshot_prefix(&mut buf, tick, time);
        // The game writes into the rest of the same allocation; `unsplit`
        // joins the two again without copying.
        let mut payload = buf.split_off(buf.len());
        let written = self.call(|g, _| match player {
            None => g.snapshot(&mut payload),
            Some(id) => g.snapshot_for(id, &mut payload),
        });
        buf.unsplit(payload);
        let body = buf.split().freeze();
        self.bodies = buf;
        written.map_err(|Panicked| ())?;
        self.body_len = body.len();
        if body.len() + SNAPSHOT_HEADER_LEN > MAX_SERVER_MSG {
            self.metrics.snapshots_too_large.fetch_add(1, Relaxed);
            tracing::warn!(
                bytes = body.len(),
                "snapshot too large for a frame; not sent"
            );
            return Err(());
        }
        Ok(body)
    }
}
