//! The session driver on the in-memory transport under paused time: the
//! handshake, every ending and its close, and what is allowed where —
//! with no sockets and no waiting.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio_util::sync::CancellationToken;

use super::memory::{pair, Delivered, Peer};
use super::*;
use crate::config::Limits;
use crate::game::GameOptions;
use crate::protocol::{ErrorCode, Inputs, Welcome};
use crate::room::{GameFactory, RoomConfig};

fn ctx(limits: Limits) -> Arc<SessionCtx> {
    let metrics = Arc::new(Metrics::default());
    let cfg = RoomConfig {
        tick_hz: 60,
        snapshot_every: 1,
        max_players: 8,
        resume_window: Duration::from_secs(10),
        max_message: limits.max_client_message as u16,
        max_input: limits.max_input_bytes,
        game_options: GameOptions::default(),
    };
    let game: GameFactory = crate::games::builtin("relay").unwrap();
    Arc::new(SessionCtx {
        rooms: Rooms::new(cfg, game, metrics.clone()),
        metrics,
        limits,
        shutdown: CancellationToken::new(),
        claims: None,
        live: Default::default(),
        opening: super::Opening::now(None),
    })
}

/// Starts a session of `kind` (WebTransport-like with datagrams, or
/// WebSocket-like) and returns the client's end.
fn start(kind: TransportKind, ctx: &Arc<SessionCtx>) -> Peer {
    let (rx, tx, peer) = pair(kind == TransportKind::WebTransport);
    let ctx = ctx.clone();
    tokio::spawn(async move { run(kind, rx, tx, &ctx).await });
    peer
}

fn hello(name: &str) -> Bytes {
    ClientMsg::Hello {
        version: PROTOCOL_VERSION,
        room: "r".into(),
        name: name.into(),
        app: Bytes::new(),
    }
    .to_bytes()
}

/// Reads until Welcome.
async fn welcome(peer: &mut Peer) -> Welcome {
    loop {
        match peer.recv().await {
            Some(Delivered::Message(m, _)) => {
                if let Ok(ServerMsg::Welcome(w)) = ServerMsg::decode(&m) {
                    return w;
                }
            }
            other => panic!("no Welcome: {other:?}"),
        }
    }
}

/// Reads until the close: the Error codes seen and the close.
async fn ending(peer: &mut Peer) -> (Vec<u16>, Option<CloseCode>) {
    let mut errors = Vec::new();
    loop {
        match peer.recv().await {
            Some(Delivered::Message(m, _)) => {
                if let Ok(ServerMsg::Error { code, .. }) = ServerMsg::decode(&m) {
                    errors.push(code);
                }
            }
            Some(Delivered::Closed(c)) => return (errors, c),
            None => return (errors, None),
        }
    }
}

fn closed_with(code: ErrorCode) -> (Vec<u16>, Option<CloseCode>) {
    (vec![code.as_u16()], Some(super::memory::error_close(code)))
}

const BOTH: [TransportKind; 2] = [TransportKind::WebTransport, TransportKind::WebSocket];

#[tokio::test(start_paused = true)]
async fn hello_gets_welcome_then_the_numbered_roster() {
    let ctx = ctx(Limits::default());
    for kind in BOTH {
        let mut p = start(kind, &ctx);
        p.send(hello("a"), Channel::Reliable).await;
        let w = welcome(&mut p).await;
        assert_eq!((w.version, w.reliable_seq, w.client_seq), (2, 0, 0));
        assert_eq!(
            (w.max_message, w.max_input, &w.game[..]),
            (256, 32, "relay")
        );
        // Relay has no snapshots.
        assert_eq!(w.snapshot_every, 0);
        let Some(Delivered::Message(m, Channel::Reliable)) = p.recv().await else {
            panic!("no roster")
        };
        assert!(crate::protocol::is_numbered(&m));
    }
}

#[tokio::test(start_paused = true)]
async fn what_is_not_allowed_first_gets_its_documented_code() {
    let ctx = ctx(Limits::default());
    let cases: Vec<(Bytes, ErrorCode)> = vec![
        (Bytes::from_static(&[0x7e]), ErrorCode::UnknownMessage),
        (ClientMsg::Leave.to_bytes(), ErrorCode::UnexpectedMessage),
        (
            ClientMsg::Ping { client_time_us: 1 }.to_bytes(),
            ErrorCode::UnexpectedMessage,
        ),
        // Invalid UTF-8 in the name is a decoding error.
        (
            Bytes::from_static(&[0x01, 0, 2, 1, b'r', 1, 0xff]),
            ErrorCode::BadMessage,
        ),
        (
            ClientMsg::Resume {
                version: 1,
                token: [0; 16],
                last_seq: 0,
            }
            .to_bytes(),
            ErrorCode::UnsupportedVersion,
        ),
        (Bytes::from(vec![0x06; 300]), ErrorCode::MessageTooLarge),
    ];
    for kind in BOTH {
        for (msg, code) in &cases {
            let mut p = start(kind, &ctx);
            p.send(msg.clone(), Channel::Reliable).await;
            assert_eq!(ending(&mut p).await, closed_with(*code), "{kind:?} {msg:?}");
        }
    }
}

#[tokio::test(start_paused = true)]
async fn datagrams_before_hello_are_ignored_and_no_hello_times_out() {
    let ctx = ctx(Limits::default());
    let mut p = start(TransportKind::WebTransport, &ctx);
    p.send(Bytes::from_static(&[0x7e]), Channel::Unreliable)
        .await;
    p.send(hello("a"), Channel::Unreliable).await;
    let start = tokio::time::Instant::now();
    assert_eq!(ending(&mut p).await, closed_with(ErrorCode::HelloTimeout));
    assert!(start.elapsed() >= HELLO_TIMEOUT);
}

#[tokio::test(start_paused = true)]
async fn after_joining_hello_resume_and_reliable_only_messages_on_datagrams_are_refused() {
    let ctx = ctx(Limits::default());
    let resume = ClientMsg::Resume {
        version: 2,
        token: [0; 16],
        last_seq: 0,
    }
    .to_bytes();
    let app = ClientMsg::App {
        reliable: true,
        payload: Bytes::from_static(b"x"),
    }
    .to_bytes();
    let cases = [
        (hello("again"), Channel::Reliable),
        (resume.clone(), Channel::Reliable),
        (hello("dg"), Channel::Unreliable),
        (resume, Channel::Unreliable),
        (ClientMsg::Leave.to_bytes(), Channel::Unreliable),
        (app, Channel::Unreliable),
    ];
    for (msg, channel) in cases {
        let mut p = start(TransportKind::WebTransport, &ctx);
        p.send(hello("a"), Channel::Reliable).await;
        welcome(&mut p).await;
        p.send(msg.clone(), channel).await;
        assert_eq!(
            ending(&mut p).await,
            closed_with(ErrorCode::UnexpectedMessage),
            "{msg:?} on {channel:?}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn leave_ends_with_bye_and_each_transports_normal_close() {
    let ctx = ctx(Limits::default());
    for (kind, code) in [
        (TransportKind::WebSocket, 1000),
        (TransportKind::WebTransport, 0),
    ] {
        let mut p = start(kind, &ctx);
        p.send(hello("a"), Channel::Reliable).await;
        welcome(&mut p).await;
        p.send(ClientMsg::Leave.to_bytes(), Channel::Reliable).await;
        let (errors, close) = ending(&mut p).await;
        assert!(errors.is_empty());
        assert_eq!(
            close,
            Some(CloseCode {
                code,
                reason: "bye"
            })
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_peer_that_hangs_up_is_kept_for_resume_and_gets_no_close() {
    let ctx = ctx(Limits::default());
    let mut p = start(TransportKind::WebTransport, &ctx);
    p.send(hello("a"), Channel::Reliable).await;
    let w = welcome(&mut p).await;
    p.hang_up();
    assert_eq!(ending(&mut p).await, (vec![], None));
    // Back, on the other transport, same player.
    let mut q = start(TransportKind::WebSocket, &ctx);
    let resume = ClientMsg::Resume {
        version: 2,
        token: w.resume_token,
        last_seq: 1,
    };
    q.send(resume.to_bytes(), Channel::Reliable).await;
    let again = welcome(&mut q).await;
    assert_eq!((again.player_id, again.reliable_seq), (w.player_id, 1));
}

#[tokio::test(start_paused = true)]
async fn a_resume_beyond_the_last_event_says_so_and_a_hello_still_joins() {
    let ctx = ctx(Limits::default());
    let mut p = start(TransportKind::WebSocket, &ctx);
    p.send(hello("a"), Channel::Reliable).await;
    let w = welcome(&mut p).await;
    p.hang_up();
    let mut q = start(TransportKind::WebSocket, &ctx);
    let resume = ClientMsg::Resume {
        version: 2,
        token: w.resume_token,
        last_seq: 50,
    };
    q.send(resume.to_bytes(), Channel::Reliable).await;
    let Some(Delivered::Message(m, _)) = q.recv().await else {
        panic!()
    };
    let Ok(ServerMsg::Error { code, reason }) = ServerMsg::decode(&m) else {
        panic!()
    };
    assert_eq!(code, ErrorCode::ResumeFailed.as_u16());
    assert!(reason.contains("beyond"), "{reason}");
    q.send(hello("b"), Channel::Reliable).await;
    welcome(&mut q).await;
}

#[tokio::test(start_paused = true)]
async fn inputs_over_the_limit_and_floods_are_closed_with_their_codes() {
    let ctx = ctx(Limits {
        max_input_bytes: 4,
        max_msgs_per_sec: 20,
        msg_burst: 10,
        ..Limits::default()
    });
    for kind in BOTH {
        let mut p = start(kind, &ctx);
        p.send(hello("a"), Channel::Reliable).await;
        welcome(&mut p).await;
        let input = ClientMsg::Input {
            newest_seq: 1,
            inputs: Inputs::encode(&[[0u8; 5]]),
        };
        p.send(input.to_bytes(), Channel::Reliable).await;
        assert_eq!(
            ending(&mut p).await,
            closed_with(ErrorCode::MessageTooLarge)
        );

        let mut p = start(kind, &ctx);
        p.send(hello("b"), Channel::Reliable).await;
        welcome(&mut p).await;
        let ping = ClientMsg::Ping { client_time_us: 1 }.to_bytes();
        for _ in 0..40 {
            p.send(ping.clone(), Channel::Reliable).await;
        }
        let (errors, close) = ending(&mut p).await;
        assert_eq!(
            close,
            Some(super::memory::error_close(ErrorCode::RateLimited))
        );
        assert!(errors.contains(&ErrorCode::RateLimited.as_u16()));
    }
    assert!(ctx.metrics.messages_rate_dropped.load(Relaxed) > 0);
}

#[tokio::test(start_paused = true)]
async fn pongs_answer_on_the_channel_of_the_ping() {
    let ctx = ctx(Limits::default());
    let mut p = start(TransportKind::WebTransport, &ctx);
    p.send(hello("a"), Channel::Reliable).await;
    welcome(&mut p).await;
    for channel in [Channel::Unreliable, Channel::Reliable] {
        p.send(ClientMsg::Ping { client_time_us: 7 }.to_bytes(), channel)
            .await;
        let got = loop {
            match p.recv().await {
                Some(Delivered::Message(m, ch)) => {
                    if let Ok(ServerMsg::Pong {
                        client_time_us: 7, ..
                    }) = ServerMsg::decode(&m)
                    {
                        break ch;
                    }
                }
                other => panic!("{other:?}"),
            }
        };
        assert_eq!(got, channel);
    }
}

#[tokio::test(start_paused = true)]
async fn shutdown_tells_the_peer_with_its_transports_close() {
    let ctx = ctx(Limits::default());
    let mut ws = start(TransportKind::WebSocket, &ctx);
    let mut wt = start(TransportKind::WebTransport, &ctx);
    for p in [&mut ws, &mut wt] {
        p.send(hello("a"), Channel::Reliable).await;
        welcome(p).await;
    }
    ctx.shutdown.cancel();
    let down = ErrorCode::ShuttingDown.as_u16();
    assert_eq!(
        ending(&mut ws).await,
        (
            vec![down],
            Some(CloseCode {
                code: 1001,
                reason: "server shutting down"
            })
        )
    );
    assert_eq!(ending(&mut wt).await, closed_with(ErrorCode::ShuttingDown));
}
