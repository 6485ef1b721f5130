//! The game API end to end, as a game developer uses it: a test game of a
//! few dozen lines, served with `rally::Server::builder()` on real sockets,
//! played by the native client over both transports.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use common::{within, BOTH};
use rally::client::{Channel, Client, ClientError, ConnectOptions, TransportKind};
use rally::config::ServeConfig;
use rally::protocol::{ErrorCode, ServerMsg};
use rally::{Ctx, Delivery, Game, Join, PlayerId, Reject, RoomInfo, To, View};

/// What the test game saw, for the test to check.
#[derive(Default)]
struct Seen {
    /// Every input handed to the game, per player, in order.
    inputs: HashMap<PlayerId, Vec<u32>>,
    /// Every reliable message handed to the game, per player, in order.
    messages: HashMap<PlayerId, Vec<Bytes>>,
}

/// The test game. Each player's snapshot is its own id and how many inputs
/// it sent (per-player views); a reliable message `b"all:..."` is passed to
/// everyone else reliably; `b"burst"` makes the game send the sender 200
/// numbered unreliable messages of 1 KB; input `0xff…` panics; a join named
/// `nobody` is refused.
struct Tally {
    seen: Arc<Mutex<Seen>>,
    next_burst: u32,
}

impl Game for Tally {
    fn view(&self) -> View {
        View::PerPlayer
    }

    fn join(&mut self, _: &mut Ctx<'_>, _: PlayerId, join: Join<'_>) -> Result<(), Reject> {
        match join.name {
            "nobody" => Err(Reject::new("nobody may join")),
            _ => Ok(()),
        }
    }

    fn leave(&mut self, _: &mut Ctx<'_>, _: PlayerId) {}

    fn input(&mut self, _: &mut Ctx<'_>, p: PlayerId, input: &[u8]) -> Result<(), Reject> {
        let n = u32::from_be_bytes(input.try_into().map_err(|_| Reject::new("4 bytes"))?);
        assert_ne!(n, u32::MAX, "told to fail");
        self.seen
            .lock()
            .unwrap()
            .inputs
            .entry(p)
            .or_default()
            .push(n);
        Ok(())
    }

    fn message(
        &mut self,
        ctx: &mut Ctx<'_>,
        p: PlayerId,
        msg: &[u8],
        d: Delivery,
    ) -> Result<(), Reject> {
        if d == Delivery::Reliable {
            let msg = Bytes::copy_from_slice(msg);
            self.seen
                .lock()
                .unwrap()
                .messages
                .entry(p)
                .or_default()
                .push(msg.clone());
            if msg.starts_with(b"all:") {
                let _ = ctx.send_bytes(To::RoomExcept(p), Delivery::Reliable, msg);
            }
        } else if msg == b"burst" {
            for _ in 0..200 {
                self.next_burst += 1;
                let mut m = BytesMut::zeroed(1024);
                m[..4].copy_from_slice(&self.next_burst.to_be_bytes());
                let _ = ctx.send_bytes(To::Player(p), Delivery::Unreliable, m.freeze());
            }
        }
        Ok(())
    }

    fn snapshot_for(&mut self, p: PlayerId, out: &mut BytesMut) {
        let n = self.seen.lock().unwrap().inputs.get(&p).map_or(0, Vec::len);
        out.put_u32(p);
        out.put_u32(n as u32);
    }
}

/// A server running the test game in this process, on real sockets.
struct InProcess {
    url: url::Url,
    seen: Arc<Mutex<Seen>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    dir: std::path::PathBuf,
}

impl InProcess {
    async fn start() -> InProcess {
        let dir = std::env::temp_dir().join(format!("rally-api-{}", rand::random::<u32>()));
        let config = ServeConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            tcp_listen: "127.0.0.1:0".parse().unwrap(),
            cert_dir: dir.clone(),
            resume_window: Duration::from_secs(5),
            ..ServeConfig::default()
        };
        let seen = Arc::new(Mutex::new(Seen::default()));
        let s2 = seen.clone();
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = rally::Server::builder()
            .config(config)
            .game_named("tally", move |_: &RoomInfo<'_>| Tally {
                seen: s2.clone(),
                next_burst: 0,
            })
            .on_ready(move |l| {
                let _ = ready_tx.send(l.tcp);
            });
        tokio::spawn(server.serve_until(async {
            let _ = stopped.await;
        }));
        let tcp = within(10, "server ready", ready_rx).await.unwrap();
        InProcess {
            url: url::Url::parse(&format!("http://{tcp}")).unwrap(),
            seen,
            stop: Some(stop),
            dir,
        }
    }

    async fn connect(&self, t: TransportKind, room: &str, name: &str) -> Client {
        Client::connect(ConnectOptions::new(self.url.clone(), t, room, name))
            .await
            .unwrap()
    }

    async fn health(&self) -> serde_json::Value {
        let (_, body) = rally::client::http_get(&self.url, "/health").await.unwrap();
        serde_json::from_slice(&body).unwrap()
    }
}

impl Drop for InProcess {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The (player, input count) of the next snapshot `c` receives.
async fn next_view(c: &mut Client) -> (u32, u32) {
    loop {
        if let ServerMsg::Snapshot(s) = c.recv().await.unwrap().msg {
            let p = &s.payload;
            return (
                u32::from_be_bytes(p[..4].try_into().unwrap()),
                u32::from_be_bytes(p[4..8].try_into().unwrap()),
            );
        }
    }
}

async fn next_app(c: &mut Client) -> Bytes {
    loop {
        if let ServerMsg::App {
            reliable: true,
            payload,
        } = c.recv().await.unwrap().msg
        {
            return payload;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joins_inputs_and_per_player_views_on_both_transports() {
    let server = InProcess::start().await;
    let mut a = server.connect(TransportKind::WebTransport, "r", "a").await;
    let mut b = server.connect(TransportKind::WebSocket, "r", "b").await;
    assert_eq!(a.welcome().game, "tally");
    for i in 1..=20u32 {
        a.send_input(&i.to_be_bytes()).await.unwrap();
        b.send_input(&(100 + i).to_be_bytes()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Each player sees its own view: its id and its own input count.
    within(5, "views", async {
        while next_view(&mut a).await != (a.player_id(), 20) {}
        while next_view(&mut b).await != (b.player_id(), 20) {}
    })
    .await;
    // Every input reached the game once, in order, despite the redundancy.
    let seen = server.seen.lock().unwrap();
    assert_eq!(seen.inputs[&a.player_id()], (1..=20).collect::<Vec<_>>());
    assert_eq!(seen.inputs[&b.player_id()], (101..=120).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reliable_messages_cross_a_resume_on_the_other_transport_exactly_once() {
    for (first, second) in [
        (TransportKind::WebTransport, TransportKind::WebSocket),
        (TransportKind::WebSocket, TransportKind::WebTransport),
    ] {
        // A server each: player ids restart in every room.
        let server = InProcess::start().await;
        let room = format!("resume-{first:?}");
        let mut a = server.connect(first, &room, "a").await;
        let mut b = server.connect(TransportKind::WebSocket, &room, "b").await;
        let a_id = a.player_id();
        // a sends 5 and drops right away, and two more were lost in flight
        // (recorded as sent, never written): the resume replays those.
        for i in 0..5 {
            a.send(format!("a{i}").as_bytes(), true).await.unwrap();
        }
        let mut state = a.resume_state();
        drop(a);
        state.sent.record(Bytes::from_static(b"a5"));
        state.sent.record(Bytes::from_static(b"a6"));
        // While a is away, b's messages for everyone pile up for it.
        for i in 0..3 {
            b.send(format!("all:b{i}").as_bytes(), true).await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        let mut opts = ConnectOptions::new(server.url.clone(), second, &room, "a");
        opts.resume = Some(state);
        let mut a = Client::connect(opts).await.unwrap();
        assert!(a.resumed());
        assert_eq!(a.lost_messages(), 0);
        a.send(b"a7", true).await.unwrap();
        // Server → client: b's three, once each, in order.
        let got = within(5, "replay", async {
            let mut v = Vec::new();
            for _ in 0..3 {
                v.push(next_app(&mut a).await);
            }
            v
        })
        .await;
        assert_eq!(got, vec!["all:b0", "all:b1", "all:b2"]);
        // Client → server: the game got a0..a7, each exactly once.
        let want: Vec<Bytes> = (0..8).map(|i| Bytes::from(format!("a{i}"))).collect();
        within(5, "all of a's messages", async {
            loop {
                let got = server.seen.lock().unwrap().messages.get(&a_id).cloned();
                if got.as_ref().is_some_and(|g| g.len() >= 8) {
                    assert_eq!(got.unwrap(), want, "{first:?} -> {second:?}");
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        // And nothing more comes later.
        b.send(b"all:last", true).await.unwrap();
        assert_eq!(within(5, "live", next_app(&mut a)).await, "all:last");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreliable_messages_are_newest_wins_for_a_slow_websocket() {
    let server = InProcess::start().await;
    let mut c = server
        .connect(TransportKind::WebSocket, "burst", "slow")
        .await;
    // Ask for bursts of 200 × 1 KB while not reading: far more than the
    // socket and the server's write buffer hold.
    for _ in 0..10 {
        c.send(b"burst", false).await.unwrap();
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    // Snapshots keep coming: read until the newest message.
    let mut numbers = Vec::new();
    within(10, "the newest message", async {
        while numbers.last() != Some(&2000) {
            let r = c.recv().await.unwrap();
            if let ServerMsg::App {
                reliable: false,
                payload,
            } = r.msg
            {
                assert_eq!(r.channel, Channel::Reliable, "WebSocket has one channel");
                numbers.push(u32::from_be_bytes(payload[..4].try_into().unwrap()));
            }
        }
    })
    .await;
    // In order, the newest arrived, and older ones gave way to it.
    assert!(numbers.windows(2).all(|w| w[0] < w[1]), "out of order");
    assert!(
        numbers.len() < 2000,
        "none were dropped ({})",
        numbers.len()
    );
    let dropped = server.health().await["metrics"]["app_unreliable_dropped"]
        .as_u64()
        .unwrap();
    assert_eq!(dropped as usize, 2000 - numbers.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_join_and_a_failing_game_are_errors_for_their_players_only() {
    let server = InProcess::start().await;
    for t in BOTH {
        match Client::connect(ConnectOptions::new(server.url.clone(), t, "r", "nobody")).await {
            Err(ClientError::Refused { code, reason }) => {
                assert_eq!(code, ErrorCode::JoinRefused.as_u16());
                assert_eq!(reason, "nobody may join");
            }
            other => panic!("{t:?}: {:?}", other.err()),
        }
    }
    let mut doomed = server
        .connect(TransportKind::WebTransport, "doomed", "d")
        .await;
    let mut fine = server.connect(TransportKind::WebSocket, "fine", "f").await;
    doomed.send_input(&u32::MAX.to_be_bytes()).await.unwrap();
    let closed = within(5, "internal", async {
        loop {
            match doomed.recv().await {
                Ok(r) => {
                    if let ServerMsg::Error { code, .. } = r.msg {
                        assert_eq!(code, ErrorCode::Internal.as_u16());
                    }
                }
                Err(ClientError::Closed { code, .. }) => return code,
                Err(e) => panic!("{e}"),
            }
        }
    })
    .await;
    assert_eq!(closed, Some(ErrorCode::Internal.close_code() as u64));
    // The other room plays on.
    fine.send_input(&1u32.to_be_bytes()).await.unwrap();
    within(5, "the other room", async {
        while next_view(&mut fine).await.1 != 1 {}
    })
    .await;
    let m = server.health().await["metrics"].clone();
    assert_eq!(m["game_panics"], 1, "{m}");
    assert_eq!(m["errors"]["join_refused"], 2, "{m}");
}
