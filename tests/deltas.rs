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
