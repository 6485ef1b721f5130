//! The room task under paused time, with recording sinks in place of
//! transports: fan-out, ordering against numbered events, resume, the
//! game's messages, and a failing game.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};

use super::*;
use crate::game::{Ctx, Delivery, Game, GameOptions, Join, PlayerId, Reject, RoomInfo, To, View};
use crate::protocol::{ServerMsg, Snapshot, SNAPSHOT_HEADER_LEN};

fn config(max_players: usize) -> RoomConfig {
    RoomConfig {
        tick_hz: 60,
        snapshot_every: 1,
        max_players,
        resume_window: Duration::from_secs(10),
        max_message: 256,
        max_input: 32,
        game_options: GameOptions::default(),
    }
}

fn rooms_with(game: GameFactory) -> (Arc<Rooms>, Arc<Metrics>) {
    let metrics = Arc::new(Metrics::default());
    (Rooms::new(config(8), game, metrics.clone()), metrics)
}

fn dots() -> Arc<Rooms> {
    rooms_with(crate::games::builtin("dots").unwrap()).0
}

/// Records what the room hands it; declines while `decline` is set.
#[derive(Default)]
struct Recorder {
    decline: AtomicBool,
    sent: Mutex<Vec<Bytes>>,
    calls: AtomicU32,
}

impl DirectSink for Recorder {
    fn arena_bytes(&self, len: usize) -> usize {
        len
    }

    fn try_send(&self, arena: &mut BytesMut, head: &[u8], body: &[u8]) -> bool {
        self.calls.fetch_add(1, Relaxed);
        arena.extend_from_slice(head);
        arena.extend_from_slice(body);
        let msg = arena.split().freeze();
        if self.decline.load(Relaxed) {
            return false;
        }
        self.sent.lock().unwrap().push(msg);
        true
    }
}

impl Recorder {
    fn snapshots(&self) -> Vec<Snapshot> {
        let sent = self.sent.lock().unwrap();
        sent.iter()
            .filter_map(|m| match ServerMsg::decode(m) {
                Ok(ServerMsg::Snapshot(s)) => Some(s),
                _ => None,
            })
            .collect()
    }
}

/// What a session does: write `Welcome` and every event there is.
fn written_all(m: &mut Membership) -> Vec<ServerMsg> {
    let mut out = Vec::new();
    while let Some(e) = m.events.read_next().unwrap() {
        out.push(ServerMsg::decode(&e).unwrap());
    }
    m.events.mark_written();
    out
}

async fn join(rooms: &Arc<Rooms>, name: &str, sink: Option<Arc<Recorder>>) -> Membership {
    let sink = sink.map(|s| s as Arc<dyn DirectSink>);
    rooms.join("r", name, Bytes::new(), sink).await.unwrap()
}

fn dots_count(s: &Snapshot) -> usize {
    crate::games::dots::players(&s.payload).unwrap().len()
}

fn slot_snapshot(m: &mut Membership) -> Option<(u32, usize)> {
    let s = m.snapshots.borrow_and_update().clone();
    if s.body.is_empty() {
        return None;
    }
    let (_, _, payload) = crate::protocol::split_snapshot_body(&s.body).unwrap();
    Some((s.tick, crate::games::dots::players(&payload).unwrap().len()))
}

#[tokio::test(start_paused = true)]
async fn snapshots_go_to_the_sink_and_never_wake_the_slot() {
    let rooms = dots();
    let sink = Arc::new(Recorder::default());
    let mut direct = join(&rooms, "d", Some(sink.clone())).await;
    let mut other = join(&rooms, "s", None).await;
    written_all(&mut direct);
    let inputs = crate::protocol::Inputs::encode(&[[8u8], [8], [8]]);
    assert!(direct.input(3, inputs, None));
    tokio::time::sleep(Duration::from_millis(100)).await;

    let sent = sink.snapshots();
    assert!(sent.len() >= 5, "{} snapshots sent directly", sent.len());
    let last = sent.last().unwrap();
    assert_eq!(last.ack_seq, 3, "the recipient's own acknowledged input");
    assert_eq!(dots_count(last), 2);
    let ticks: Vec<u32> = sent.iter().map(|s| s.tick).collect();
    assert!(ticks.windows(2).all(|w| w[1] == w[0] + 1), "{ticks:?}");

    // The session without a sink gets them through its slot; the direct
    // one's slot only ever changed for numbered events.
    assert!(slot_snapshot(&mut other).is_some());
    assert!(slot_snapshot(&mut direct).is_none());
}

/// No allocation per recipient: a tick's direct snapshots are written one
/// after another into the buffer reserved for all of them.
#[tokio::test(start_paused = true)]
async fn a_ticks_direct_snapshots_share_one_buffer() {
    let rooms = dots();
    let sinks: Vec<Arc<Recorder>> = (0..3).map(|_| Arc::new(Recorder::default())).collect();
    let mut members = Vec::new();
    for (i, sink) in sinks.iter().enumerate() {
        members.push(join(&rooms, &format!("p{i}"), Some(sink.clone())).await);
    }
    members.iter_mut().for_each(|m| {
        written_all(m);
    });
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
    let rooms = dots();
    let sink = Arc::new(Recorder::default());
    sink.decline.store(true, Relaxed);
    let mut m = join(&rooms, "d", Some(sink.clone())).await;
    written_all(&mut m);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(sink.calls.load(Relaxed) >= 2);
    assert!(sink.sent.lock().unwrap().is_empty());
    let snap = m.snapshots.borrow_and_update().clone();
    assert!(
        !snap.body.is_empty(),
        "the declined snapshot is in the slot"
    );
    // Each declined snapshot counted once in the slot: the session can tell
    // how many it never took.
    assert_eq!(snap.seq, sink.calls.load(Relaxed));

    // Accepted again: the slot keeps its last snapshot and the sink carries
    // the new ones.
    sink.decline.store(false, Relaxed);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!sink.sent.lock().unwrap().is_empty());
    let after = m.snapshots.borrow_and_update().clone();
    assert_eq!((after.tick, after.seq), (snap.tick, snap.seq));
}

#[tokio::test(start_paused = true)]
async fn a_detached_player_gets_nothing_and_resume_brings_the_new_sink() {
    let rooms = dots();
    let old = Arc::new(Recorder::default());
    let mut m = join(&rooms, "d", Some(old.clone())).await;
    let token = m.welcome.resume_token;
    let _keep_room = join(&rooms, "x", None).await;
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
    let sink = Some(new.clone() as Arc<dyn DirectSink>);
    let (_, mut m) = rooms.resume(token, 0, sink).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    // Nothing direct before the resumed session has written Welcome and
    // the events it missed.
    assert_eq!(new.calls.load(Relaxed), 0);
    written_all(&mut m);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(old.calls.load(Relaxed), before);
    assert!(new.sent.lock().unwrap().len() >= 2);
}

#[tokio::test(start_paused = true)]
async fn no_direct_snapshot_overtakes_an_event_the_session_has_not_written() {
    let rooms = dots();
    let sink = Arc::new(Recorder::default());
    let mut m = join(&rooms, "d", Some(sink.clone())).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    // Welcome and the roster are not written yet: all via the slot.
    assert_eq!(sink.calls.load(Relaxed), 0);
    assert!(slot_snapshot(&mut m).is_some());

    written_all(&mut m);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let direct = sink.calls.load(Relaxed);
    assert!(direct >= 2);

    // A newcomer's PlayerJoined is due to this session: until it is
    // written, snapshots (which show the newcomer) wait in the slot.
    let _b = join(&rooms, "b", None).await;
    let (tick, _) = slot_snapshot(&mut m).unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(sink.calls.load(Relaxed), direct);
    let (later, players) = slot_snapshot(&mut m).unwrap();
    assert!(later > tick);
    assert_eq!(players, 2);
    written_all(&mut m);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(sink.calls.load(Relaxed) > direct);
}

/// The inputs a [`Probe`] was handed, by player.
type Handed = Arc<Mutex<Vec<(PlayerId, Vec<u8>)>>>;

/// A game that shows what the room does with its calls: it sends each
/// joiner a greeting, echoes messages to their sender, forwards inputs to
/// the room unreliably, and panics on an input of `!`.
struct Probe {
    inputs: Handed,
}

impl Game for Probe {
    fn view(&self) -> View {
        View::PerPlayer
    }

    fn join(&mut self, ctx: &mut Ctx<'_>, player: PlayerId, join: Join<'_>) -> Result<(), Reject> {
        if join.name == "nobody" {
            return Err(Reject::new("no nobodies"));
        }
        let _ = ctx.send(To::Player(player), Delivery::Reliable, b"hi");
        Ok(())
    }

    fn leave(&mut self, _: &mut Ctx<'_>, _: PlayerId) {}

    fn input(&mut self, ctx: &mut Ctx<'_>, player: PlayerId, input: &[u8]) -> Result<(), Reject> {
        if input == b"!" {
            panic!("probe told to fail");
        }
        self.inputs.lock().unwrap().push((player, input.to_vec()));
        let _ = ctx.send(To::Room, Delivery::Unreliable, input);
        Ok(())
    }

    fn message(
        &mut self,
        ctx: &mut Ctx<'_>,
        player: PlayerId,
        msg: &[u8],
        delivery: Delivery,
    ) -> Result<(), Reject> {
        let _ = ctx.send(To::Player(player), delivery, msg);
        Ok(())
    }

    fn snapshot_for(&mut self, player: PlayerId, out: &mut BytesMut) {
        out.extend_from_slice(&player.to_be_bytes());
    }
}

fn probe() -> (Arc<Rooms>, Arc<Metrics>, Handed) {
    let inputs = Arc::new(Mutex::new(Vec::new()));
    let i2 = inputs.clone();
    let factory = GameFactory::new("probe", move |_: &RoomInfo<'_>| Probe {
        inputs: i2.clone(),
    });
    let (rooms, metrics) = rooms_with(factory);
    (rooms, metrics, inputs)
}

#[tokio::test(start_paused = true)]
async fn inputs_reach_the_game_once_in_order_and_at_most_8_a_tick() {
    let (rooms, _, inputs) = probe();
    let mut m = join(&rooms, "a", None).await;
    written_all(&mut m);
    let enc = |seq: u32, n: u32| {
        // Inputs newest first: seq, seq-1, …
        let list: Vec<Vec<u8>> = (0..n).map(|i| (seq - i).to_be_bytes().to_vec()).collect();
        crate::protocol::Inputs::encode(&list)
    };
    // 1..=3, then a redundant repeat of 2..=4, then a reordered old one.
    assert!(m.input(3, enc(3, 3), None));
    assert!(m.input(4, enc(4, 3), None));
    assert!(m.input(2, enc(2, 2), None));
    tokio::time::sleep(Duration::from_millis(20)).await;
    let got: Vec<u32> = inputs
        .lock()
        .unwrap()
        .iter()
        .map(|(_, b)| u32::from_be_bytes(b[..4].try_into().unwrap()))
        .collect();
    assert_eq!(got, vec![1, 2, 3, 4]);

    // A flood within one tick: 10 messages of 8 new inputs each.
    inputs.lock().unwrap().clear();
    tokio::time::sleep(Duration::from_millis(20)).await;
    for k in 1..=10 {
        assert!(m.input(4 + 8 * k, enc(4 + 8 * k, 8), None));
    }
    // The room takes them all before its next tick (time stands still
    // while it has work): the first message's 8 fill the tick's budget, the
    // rest are skipped and, no longer carried, lost.
    tokio::time::sleep(Duration::from_millis(40)).await;
    let got: Vec<u32> = inputs
        .lock()
        .unwrap()
        .iter()
        .map(|(_, b)| u32::from_be_bytes(b[..4].try_into().unwrap()))
        .collect();
    assert_eq!(got, (5..=12).collect::<Vec<_>>());
    // What a newer message carries is handed over next.
    assert!(m.input(90, enc(90, 2), None));
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(inputs.lock().unwrap().len(), 10);
}

#[tokio::test(start_paused = true)]
async fn the_games_messages_reach_their_players_in_order_and_numbered() {
    let (rooms, _, _) = probe();
    let mut a = join(&rooms, "a", None).await;
    // Welcome, the roster (a), then the game's greeting, numbered 2.
    let first = written_all(&mut a);
    assert_eq!(
        first,
        vec![
            ServerMsg::PlayerJoined {
                player_id: a.player_id,
                name: "a".into()
            },
            ServerMsg::App {
                reliable: true,
                payload: Bytes::from_static(b"hi")
            },
        ]
    );
    // A reliable message is echoed as a numbered event; an unreliable one
    // goes to the latest queue (no sink).
    assert!(a.message(true, Bytes::from_static(b"r1")).await);
    assert!(a.message(false, Bytes::from_static(b"u1")).await);
    tokio::time::sleep(Duration::from_millis(20)).await;
    let events = written_all(&mut a);
    assert_eq!(
        events,
        vec![ServerMsg::App {
            reliable: true,
            payload: Bytes::from_static(b"r1")
        }]
    );
    assert_eq!(a.latest.drain(), vec![Bytes::from_static(b"u1")]);
    // Per-player views: each slot holds its own id.
    tokio::time::sleep(Duration::from_millis(20)).await;
    let s = a.snapshots.borrow_and_update().clone();
    let (_, _, payload) = crate::protocol::split_snapshot_body(&s.body).unwrap();
    assert_eq!(&payload[..], &a.player_id.to_be_bytes());
}

#[tokio::test(start_paused = true)]
async fn a_refused_join_sends_nothing_and_takes_no_place() {
    let (rooms, _, _) = probe();
    let err = rooms
        .join("r", "nobody", Bytes::new(), None)
        .await
        .err()
        .unwrap();
    assert_eq!(err, JoinError::Refused("no nobodies".into()));
    let mut a = join(&rooms, "a", None).await;
    let roster = written_all(&mut a);
    assert_eq!(roster.len(), 2, "a alone, and its greeting: {roster:?}");
}

#[tokio::test(start_paused = true)]
async fn a_panicking_game_closes_only_its_room_with_internal() {
    let (rooms, metrics, _) = probe();
    let mut a = join(&rooms, "a", None).await;
    let mut other = rooms
        .join("elsewhere", "b", Bytes::new(), None)
        .await
        .unwrap();
    written_all(&mut a);
    written_all(&mut other);
    let inputs = crate::protocol::Inputs::encode(&[b"!"]);
    assert!(a.input(1, inputs, None));
    // The session sees its slot closed, and why.
    let changed = tokio::time::timeout(Duration::from_secs(1), async {
        while a.snapshots.changed().await.is_ok() {}
    })
    .await;
    assert!(changed.is_ok(), "the slot was closed");
    assert_eq!(
        a.kicked.get().and_then(|c| c.code()),
        Some(ErrorCode::Internal)
    );
    assert_eq!(metrics.game_panics.load(Relaxed), 1);
    // The other room plays on, and the failed room's name makes a new one.
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(slot_snapshot_raw(&mut other));
    let mut again = join(&rooms, "a2", None).await;
    assert_eq!(written_all(&mut again).len(), 2);
}

fn slot_snapshot_raw(m: &mut Membership) -> bool {
    !m.snapshots.borrow_and_update().body.is_empty()
}

#[test]
fn the_snapshot_header_is_what_sinks_are_sized_for() {
    assert_eq!(
        SNAPSHOT_HEADER_LEN,
        crate::protocol::snapshot_header(0).len()
    );
}
