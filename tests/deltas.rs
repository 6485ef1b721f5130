//! Snapshot deltas (PROTOCOL.md §5.1) against a real server process: on
//! every transport, what a delta-taking client reconstructs is byte for
//! byte what a client taking whole snapshots got for the same tick; deltas
//! are much smaller; a new session starts whole; per-player views get
//! deltas too.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use common::{within, Server};
use rally::client::{Client, TransportKind};
use rally::protocol::{ServerMsg, SNAPSHOT_HEADER_LEN, SNAPSHOT_PREFIX_LEN};

/// What a client saw: every snapshot's payload by tick, and the bytes each
/// snapshot message had on the wire.
#[derive(Default)]
struct Seen {
    payloads: BTreeMap<u32, Bytes>,
    wire: BTreeMap<u32, usize>,
}

impl Seen {
    fn whole(&self, tick: u32) -> bool {
        self.wire[&tick] == SNAPSHOT_HEADER_LEN + SNAPSHOT_PREFIX_LEN + self.payloads[&tick].len()
    }
}

/// Plays for `dur`: an input every 16 ms (`buttons` cycling so the dot
/// moves and stops), recording every snapshot.
async fn play(client: &mut Client, buttons: &[u8], dur: Duration) -> Seen {
    play_with(client, buttons, dur, |b| vec![b]).await
}

/// [`play`] with the game's input bytes made from the buttons by `input`.
async fn play_with(
    client: &mut Client,
    buttons: &[u8],
    dur: Duration,
    input: impl Fn(u8) -> Vec<u8>,
) -> Seen {
    let mut seen = Seen::default();
    let mut every = tokio::time::interval(Duration::from_millis(16));
    let until = tokio::time::Instant::now() + dur;
    let mut n = 0usize;
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(until) => break,
            _ = every.tick() => {
                let b = buttons[(n / 20) % buttons.len()];
                client.send_input(&input(b)).await.unwrap();
                n += 1;
            }
            r = client.recv() => {
                let r = r.unwrap();
                if let ServerMsg::Snapshot(s) = r.msg {
                    seen.wire.insert(s.tick, r.wire_len);
                    seen.payloads.insert(s.tick, s.payload);
                }
            }
        }
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconstructed_states_equal_whole_snapshots_on_every_transport() {
    let server = Server::start(&[]);
    let room = "delta-room";
    // A reference that takes whole snapshots, and one delta-taking client
    // per transport; all of them move now and then.
    let mut opts = server.options(TransportKind::WebSocket, room, "whole");
    opts.deltas = false;
    let mut whole = within(10, "connect", Client::connect(opts)).await.unwrap();
    let mut clients = Vec::new();
    for (t, name) in [
        (TransportKind::WebTransport, "wt"),
        (TransportKind::WebSocket, "ws"),
        (TransportKind::Http, "http"),
    ] {
        clients.push((
            t,
            within(10, "connect", server.connect(t, room, name)).await,
        ));
    }
    let dur = Duration::from_secs(3);
    let reference = tokio::spawn(async move {
        let seen = play(&mut whole, &[0, 8, 0, 1], dur).await;
        (seen, whole.deltas())
    });
    let mut tasks = Vec::new();
    for (i, (t, mut c)) in clients.into_iter().enumerate() {
        let buttons = [[2u8, 0, 4, 0], [0, 1, 0, 8], [4, 4, 0, 2]][i];
        tasks.push(tokio::spawn(async move {
            let seen = play(&mut c, &buttons, dur).await;
            (t, seen, c.deltas())
        }));
    }
    let (reference, (applied, _)) = reference.await.unwrap();
    assert_eq!(applied, 0, "a client that does not ask gets no deltas");
    assert!(
        reference.payloads.len() > 100,
        "{}",
        reference.payloads.len()
    );
    assert!(reference.payloads.keys().all(|&t| reference.whole(t)));
    for task in tasks {
        let (t, seen, (applied, ignored)) = task.await.unwrap();
        // Every state the delta client has for a tick is the whole
        // snapshot's for that tick, byte for byte.
        let mut compared = 0;
        for (tick, payload) in &seen.payloads {
            if let Some(want) = reference.payloads.get(tick) {
                assert_eq!(payload, want, "{t:?} tick {tick}");
                compared += 1;
            }
        }
        assert!(compared > 100, "{t:?}: {compared} ticks compared");
        assert!(applied > 100, "{t:?}: {applied} deltas applied");
        assert_eq!(
            ignored, 0,
            "{t:?}: a server following §5.1 sends no unusable delta"
        );
        // The first snapshot of the session is whole; deltas are much
        // smaller than the whole snapshot (4 dots of 12 bytes, few move).
        let first = *seen.payloads.keys().next().unwrap();
        assert!(seen.whole(first), "{t:?}: first snapshot whole");
        let (delta_bytes, deltas): (usize, usize) = seen
            .wire
            .iter()
            .filter(|(&tick, _)| !seen.whole(tick))
            .fold((0, 0), |(b, n), (_, &w)| (b + w, n + 1));
        let full = SNAPSHOT_HEADER_LEN + SNAPSHOT_PREFIX_LEN + reference.payloads[&first].len();
        let mean = delta_bytes as f64 / deltas.max(1) as f64;
        eprintln!("{t:?}: {deltas} deltas, mean {mean:.1} B vs {full} B whole");
        assert!(
            mean < full as f64,
            "{t:?}: mean delta {mean:.1} B, whole {full} B"
        );
    }
    let health = server.health().await;
    assert!(
        health["metrics"]["snapshot_deltas_encoded"]
            .as_u64()
            .unwrap()
            > 100
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resumed_session_starts_from_a_whole_snapshot_on_another_transport() {
    let server = Server::start(&[]);
    let mut c = within(
        10,
        "connect",
        server.connect(TransportKind::WebSocket, "resume-delta", "p"),
    )
    .await;
    let before = play(&mut c, &[8, 0], Duration::from_millis(800)).await;
    assert!(
        before.payloads.keys().any(|&t| !before.whole(t)),
        "deltas on WebSocket"
    );
    let mut opts = server.options(TransportKind::WebTransport, "resume-delta", "p");
    opts.resume = Some(c.resume_state());
    drop(c);
    let mut c = within(10, "resume", Client::connect(opts)).await.unwrap();
    assert!(c.resumed());
    let after = play(&mut c, &[2, 0], Duration::from_millis(800)).await;
    let first = *after.payloads.keys().next().unwrap();
    assert!(
        after.whole(first),
        "the first snapshot after Resume is whole"
    );
    assert!(
        after.payloads.keys().any(|&t| !after.whole(t)),
        "then deltas"
    );
    assert_eq!(c.deltas().1, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_player_views_get_deltas_too() {
    // The shooter makes one payload per player (interest management).
    let server = Server::start(&["--game", "shooter"]);
    let mut a = within(
        10,
        "connect",
        server.connect(TransportKind::WebTransport, "arena", "a"),
    )
    .await;
    let mut opts = server.options(TransportKind::WebSocket, "arena", "b");
    opts.deltas = false;
    let mut b = within(10, "connect", Client::connect(opts)).await.unwrap();
    let input = |buttons| {
        rally::games::shooter::Input {
            buttons,
            aim: 1000,
            view_tick: 0,
        }
        .encode()
        .to_vec()
    };
    let (sa, sb) = tokio::join!(
        play_with(&mut a, &[8, 0, 2, 0], Duration::from_secs(2), input),
        play_with(&mut b, &[4, 0, 1, 0], Duration::from_secs(2), input),
    );
    let (applied, ignored) = a.deltas();
    assert!(applied > 50, "{applied}");
    assert_eq!(ignored, 0);
    assert!(sb.payloads.keys().all(|&t| sb.whole(t)));
    let small = sa.payloads.keys().filter(|&&t| !sa.whole(t)).count();
    assert!(small > 50, "{small} deltas");
}

/// A game with a delta of its own (`Game::delta`, codec 1): 200 bytes of
/// which only the first 4 (the tick) change; its delta is those 4 bytes.
struct OwnDelta {
    tick: u32,
}

impl rally::Game for OwnDelta {
    fn join(
        &mut self,
        _: &mut rally::Ctx<'_>,
        _: rally::PlayerId,
        _: rally::Join<'_>,
    ) -> Result<(), rally::Reject> {
        Ok(())
    }

    fn leave(&mut self, _: &mut rally::Ctx<'_>, _: rally::PlayerId) {}

    fn input(
        &mut self,
        _: &mut rally::Ctx<'_>,
        _: rally::PlayerId,
        _: &[u8],
    ) -> Result<(), rally::Reject> {
        Ok(())
    }

    fn tick(&mut self, ctx: &mut rally::Ctx<'_>) {
        self.tick = ctx.tick();
    }

    fn snapshot(&mut self, out: &mut bytes::BytesMut) {
        use bytes::BufMut;
        out.put_u32(self.tick);
        out.put_bytes(7, 196);
    }

    fn delta(&mut self, base: &[u8], current: &[u8], out: &mut bytes::BytesMut) -> bool {
        assert_eq!(base[4..], current[4..], "only the tick changes");
        out.extend_from_slice(&current[..4]);
        true
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_game_may_bring_its_own_delta_and_its_clients_their_decoder() {
    let dir = std::env::temp_dir().join(format!("rally-own-delta-{}", rand::random::<u32>()));
    let config = rally::config::ServeConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        tcp_listen: "127.0.0.1:0".parse().unwrap(),
        cert_dir: dir.clone(),
        ..rally::config::ServeConfig::default()
    };
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = rally::Server::builder()
        .config(config)
        .game_named("own-delta", |_: &rally::RoomInfo<'_>| OwnDelta { tick: 0 })
        .on_ready(move |l| {
            let _ = ready_tx.send(l.tcp);
        });
    tokio::spawn(server.serve_until(async {
        let _ = stopped.await;
    }));
    let tcp = within(10, "server ready", ready_rx).await.unwrap();
    let url = url::Url::parse(&format!("http://{tcp}")).unwrap();
    // The game's decoder: the tick replaces the baseline's first 4 bytes.
    let apply = rally::client::ApplyDelta(std::sync::Arc::new(|base: &[u8], d: &[u8]| {
        (d.len() == 4).then(|| [d, &base[4..]].concat())
    }));
    for t in [TransportKind::WebTransport, TransportKind::WebSocket] {
        let mut opts = rally::client::ConnectOptions::new(url.clone(), t, "own", "p");
        opts.apply_delta = Some(apply.clone());
        let mut c = within(10, "connect", Client::connect(opts)).await.unwrap();
        let seen = play(&mut c, &[0], Duration::from_secs(1)).await;
        let (applied, ignored) = c.deltas();
        assert!(applied > 30, "{t:?}: {applied}");
        assert_eq!(ignored, 0);
        for (tick, payload) in &seen.payloads {
            assert_eq!(&payload[..4], &tick.to_be_bytes(), "{t:?}");
            assert!(payload[4..].iter().all(|&b| b == 7) && payload.len() == 200);
        }
        // The game's 4-byte delta behind a 22-byte SnapshotDelta.
        let small = seen.wire.values().filter(|&&w| w == 22 + 4).count();
        assert!(small > 30, "{t:?}: {small} deltas of the game's codec");
    }
    let _ = stop.send(());
    let _ = std::fs::remove_dir_all(dir);
}
