//! Hardening scenarios against a real server process: resume across
//! transports, graceful shutdown, slow consumers, floods, origins, join
//! tokens, connection limits, extra streams, and certificate renewal.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{dots, within, Server, BOTH};
use rally::client::{Channel, Client, ClientError, ConnectOptions, TransportKind};
use rally::games::dots::{DOWN, UP};
use rally::protocol::{ClientMsg, ErrorCode, ServerMsg};

/// Reads until the connection closes; returns the `Error` codes seen and
/// the close code.
async fn until_closed(c: &mut Client) -> (Vec<u16>, Option<u64>) {
    let mut errors = Vec::new();
    loop {
        match c.recv().await {
            Ok(r) => {
                if let ServerMsg::Error { code, .. } = r.msg {
                    errors.push(code);
                }
            }
            Err(ClientError::Closed { code, .. }) => return (errors, code),
            Err(e) => panic!("unexpected {e}"),
        }
    }
}

/// Waits for the next reliable event (join/leave) on `c`.
async fn next_event(c: &mut Client) -> ServerMsg {
    loop {
        let r = c.recv().await.unwrap();
        if matches!(
            r.msg,
            ServerMsg::PlayerJoined { .. } | ServerMsg::PlayerLeft { .. }
        ) {
            return r.msg;
        }
    }
}

#[tokio::test]
async fn resume_switching_transports_replays_missed_events_exactly_once() {
    let server = Server::start(&[]);
    for (first, second) in [
        (TransportKind::WebTransport, TransportKind::WebSocket),
        (TransportKind::WebSocket, TransportKind::Http),
        (TransportKind::Http, TransportKind::WebTransport),
    ] {
        let room = format!("resume-{first:?}");
        let mut observer = server
            .connect(TransportKind::WebSocket, &room, "observer")
            .await;
        let mut a = server.connect(first, &room, "alice").await;
        let a_id = a.player_id();
        // Roster (observer, alice) → reliable_seq 2 once both are read.
        for _ in 0..3 {
            a.send_input(&[UP]).await.unwrap();
        }
        let mut got = Vec::new();
        within(5, "roster", async {
            while got.len() < 2 {
                got.push(next_event(&mut a).await);
            }
        })
        .await;
        let state = a.resume_state();
        assert_eq!(state.last_seq, 2);
        // The connection drops without Leave.
        drop(a);

        // While alice is away: carol joins, dave joins and leaves.
        let carol = server
            .connect(TransportKind::WebTransport, &room, "carol")
            .await;
        let dave = server
            .connect(TransportKind::WebSocket, &room, "dave")
            .await;
        let (carol_id, dave_id) = (carol.player_id(), dave.player_id());
        dave.leave().await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;

        let mut opts = server.options(second, &room, "alice");
        opts.resume = Some(state.clone());
        let mut a = Client::connect(opts).await.unwrap();
        assert!(a.resumed());
        assert_eq!(a.player_id(), a_id, "same player back");
        assert_eq!(a.welcome().reliable_seq, 2);
        let missed = within(5, "replay", async {
            let mut v = Vec::new();
            for _ in 0..3 {
                v.push(next_event(&mut a).await);
            }
            v
        })
        .await;
        assert_eq!(
            missed,
            vec![
                ServerMsg::PlayerJoined {
                    player_id: carol_id,
                    name: "carol".into()
                },
                ServerMsg::PlayerJoined {
                    player_id: dave_id,
                    name: "dave".into()
                },
                ServerMsg::PlayerLeft { player_id: dave_id },
            ]
        );
        // Nothing is replayed twice: the next reliable event is a new one.
        carol.leave().await.unwrap();
        let next = within(5, "live event", next_event(&mut a)).await;
        assert_eq!(
            next,
            ServerMsg::PlayerLeft {
                player_id: carol_id
            }
        );
        // A full snapshot with alice in it arrives, and she can move again:
        // her input numbering carries on, so the server applies the new one.
        let seq = a.send_input(&[DOWN]).await.unwrap();
        assert_eq!(seq, state.input_seq + 1);
        within(5, "snapshot after resume", async {
            loop {
                if let ServerMsg::Snapshot(s) = a.recv().await.unwrap().msg {
                    if s.ack_seq == seq {
                        assert!(dots(&s).iter().any(|p| p.0 == a_id));
                        break;
                    }
                }
            }
        })
        .await;
        // The observer never saw alice leave.
        let until = tokio::time::Instant::now() + Duration::from_millis(300);
        while let Ok(r) = tokio::time::timeout_at(until, observer.recv()).await {
            assert_ne!(r.unwrap().msg, ServerMsg::PlayerLeft { player_id: a_id });
        }
    }
}

#[tokio::test]
async fn unknown_or_expired_resume_tokens_get_an_error_and_a_fresh_join() {
    let server = Server::start(&["--resume-window", "500ms"]);
    for transport in BOTH {
        // Unknown token: resume_failed, then a fresh join on the same session.
        let mut opts = server.options(transport, "expiry", "ghost");
        opts.resume = Some(rally::client::ResumeState {
            token: [7; 16],
            last_seq: 0,
            input_seq: 0,
            sent: Default::default(),
        });
        let c = Client::connect(opts).await.unwrap();
        assert!(!c.resumed());
        assert_eq!(c.welcome().reliable_seq, 0);

        // Expired: the window passes, the room is told, resume joins afresh.
        let mut watcher = server
            .connect(TransportKind::WebSocket, "expiry", "w")
            .await;
        let a = server.connect(transport, "expiry", "a").await;
        let (a_id, state) = (a.player_id(), a.resume_state());
        drop(a);
        within(5, "player removed after the window", async {
            loop {
                if next_event(&mut watcher).await == (ServerMsg::PlayerLeft { player_id: a_id }) {
                    break;
                }
            }
        })
        .await;
        let mut opts = server.options(transport, "expiry", "a");
        opts.resume = Some(state);
        let c = Client::connect(opts).await.unwrap();
        assert!(!c.resumed());
        assert_ne!(c.player_id(), a_id);
    }
    let errors = &server.health().await["metrics"]["errors"];
    assert!(errors["resume_failed"].as_u64().unwrap() >= 4, "{errors}");
}

#[tokio::test]
async fn a_resumed_player_closes_its_stale_session_with_replaced() {
    let server = Server::start(&[]);
    let mut old = server
        .connect(TransportKind::WebSocket, "replace", "a")
        .await;
    let mut opts = server.options(TransportKind::WebTransport, "replace", "a");
    opts.resume = Some(old.resume_state());
    let new = Client::connect(opts).await.unwrap();
    assert_eq!(new.player_id(), old.player_id());
    let (errors, close) = within(5, "old session closed", until_closed(&mut old)).await;
    assert!(errors.contains(&ErrorCode::Replaced.as_u16()), "{errors:?}");
    assert_eq!(close, Some(ErrorCode::Replaced.close_code() as u64));
}

#[tokio::test]
async fn sigterm_tells_clients_on_both_transports_and_exits_zero() {
    let mut server = Server::start(&[]);
    let mut wt = server
        .connect(TransportKind::WebTransport, "stop", "wt")
        .await;
    let mut ws = server.connect(TransportKind::WebSocket, "stop", "ws").await;
    let readers =
        tokio::spawn(async move { tokio::join!(until_closed(&mut wt), until_closed(&mut ws)) });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let status = tokio::task::spawn_blocking(move || {
        let st = server.terminate(10);
        drop(server);
        st
    })
    .await
    .unwrap()
    .expect("server exits within 10 s of SIGTERM");
    assert!(status.success(), "exit status {status:?}");
    let ((wt_errors, wt_close), (ws_errors, ws_close)) =
        within(10, "clients told", readers).await.unwrap();
    let down = ErrorCode::ShuttingDown;
    assert!(
        wt_errors.contains(&down.as_u16()),
        "WT errors {wt_errors:?}"
    );
    assert_eq!(wt_close, Some(down.close_code() as u64), "WT close");
    assert!(
        ws_errors.contains(&down.as_u16()),
        "WS errors {ws_errors:?}"
    );
    assert_eq!(ws_close, Some(1001), "WS close is 1001 going away");
}

/// Snapshot staleness (arrival − server time) seen by `c` over `dur`, in µs,
/// sorted.
async fn staleness(c: &mut Client, dur: Duration) -> Vec<u64> {
    let mut v = Vec::new();
    let end = tokio::time::Instant::now() + dur;
    while let Ok(r) = tokio::time::timeout_at(end, c.recv()).await {
        if let ServerMsg::Snapshot(s) = r.unwrap().msg {
            v.push(rally::client::now_us().saturating_sub(s.server_time_us));
        }
    }
    v.sort_unstable();
    v
}

#[tokio::test]
async fn a_client_that_stops_reading_is_disconnected_as_too_slow_and_others_are_unaffected() {
    let server = Server::start(&[
        "--slow-peer-timeout",
        "1s",
        "--tcp-send-buffer",
        "8192",
        "--max-players-per-room",
        "200",
        "--max-connections-per-ip",
        "200",
    ]);
    // A crowd that reads makes ~1 KB snapshots.
    let mut crowd = Vec::new();
    for i in 0..80 {
        let mut c = server
            .connect(TransportKind::WebSocket, "slow", &format!("c{i}"))
            .await;
        crowd.push(tokio::spawn(async move { while c.recv().await.is_ok() {} }));
    }
    let mut watcher = server
        .connect(TransportKind::WebTransport, "slow", "watcher")
        .await;
    let before = staleness(&mut watcher, Duration::from_secs(2)).await;
    let rss_before = server.rss_kib();

    // The slow client: a WebSocket with a tiny receive buffer that joins and
    // then never reads.
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    let tcp = sock
        .connect(format!("127.0.0.1:{}", server.port).parse().unwrap())
        .await
        .unwrap();
    let url = format!("ws://127.0.0.1:{}/rally", server.port);
    let (mut slow, _) = tokio_tungstenite::client_async(url, tcp).await.unwrap();
    use futures::SinkExt;
    let hello = ClientMsg::Hello {
        version: 2,
        room: "slow".into(),
        name: "slow".into(),
        app: Bytes::new(),
    };
    slow.send(tokio_tungstenite::tungstenite::Message::Binary(
        hello.to_bytes(),
    ))
    .await
    .unwrap();

    let during = staleness(&mut watcher, Duration::from_secs(3)).await;
    let rss_after = server.rss_kib();
    let health = server.health().await;
    assert!(
        health["metrics"]["errors"]["too_slow"].as_u64().unwrap() >= 1,
        "{health}"
    );
    // Its memory stayed bounded: the server did not buffer its backlog.
    assert!(
        rss_after < rss_before + 16 * 1024,
        "RSS {rss_before} KiB -> {rss_after} KiB"
    );
    // Others' latency is unaffected (ratio measured in the same run).
    let p99 = |v: &[u64]| v[v.len() * 99 / 100];
    assert!(
        before.len() > 60 && during.len() > 90,
        "{} / {}",
        before.len(),
        during.len()
    );
    assert!(
        p99(&during) <= p99(&before) * 3 + 5_000,
        "watcher p99 staleness {} µs before, {} µs while a peer was stuck",
        p99(&before),
        p99(&during)
    );
    // The slow peer's connection is gone: draining it ends in a close.
    use futures::StreamExt;
    let ended = within(10, "slow peer closed", async {
        let mut close = None;
        while let Some(m) = slow.next().await {
            match m {
                Ok(tokio_tungstenite::tungstenite::Message::Close(f)) => {
                    close = f.map(|f| u16::from(f.code))
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
        close
    })
    .await;
    // The close frame reaches the peer only if its buffer drained in time;
    // when it does, it carries too_slow.
    if let Some(code) = ended {
        assert_eq!(code, ErrorCode::TooSlow.close_code());
    }
    for c in crowd {
        c.abort();
    }
}

#[tokio::test]
async fn a_message_flood_is_closed_with_rate_limited_on_both_transports() {
    let server = Server::start(&[]);
    for transport in BOTH {
        let mut c = server.connect(transport, "flood", "f").await;
        let ping = ClientMsg::Ping { client_time_us: 1 }.to_bytes();
        for _ in 0..400 {
            if c.send_raw(ping.clone(), Channel::Reliable).await.is_err() {
                break;
            }
        }
        let (errors, close) = within(10, "flood closed", until_closed(&mut c)).await;
        assert!(
            errors.contains(&ErrorCode::RateLimited.as_u16()),
            "{transport:?} {errors:?}"
        );
        assert_eq!(close, Some(ErrorCode::RateLimited.close_code() as u64));
    }
    // A normal client is unaffected.
    let mut ok = server
        .connect(TransportKind::WebTransport, "flood", "ok")
        .await;
    ok.ping(Channel::Reliable).await.unwrap();
    let m = server.health().await["metrics"].clone();
    assert!(m["messages_rate_dropped"].as_u64().unwrap() > 0, "{m}");
}

fn with_origin(mut o: ConnectOptions, origin: &str) -> ConnectOptions {
    o.origin = Some(origin.into());
    o
}

#[tokio::test]
async fn origins_are_checked_identically_on_both_transports() {
    let dev = Server::start(&[]);
    for transport in BOTH {
        let local = format!("http://localhost:{}", dev.port);
        Client::connect(with_origin(dev.options(transport, "o", "ok"), &local))
            .await
            .unwrap();
        let err = Client::connect(with_origin(
            dev.options(transport, "o", "evil"),
            "http://evil.example",
        ))
        .await
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
        assert!(err.contains("could not connect"), "{transport:?}: {err}");
    }
    assert_eq!(dev.health().await["metrics"]["sessions_forbidden"], 2);

    let prod = Server::start(&["--allow-origin", "https://game.example"]);
    for transport in BOTH {
        Client::connect(with_origin(
            prod.options(transport, "o", "ok"),
            "https://game.example",
        ))
        .await
        .unwrap();
        // Dev mode is also on here (dev certificate), so loopback passes too;
        // anything else is refused.
        assert!(Client::connect(with_origin(
            prod.options(transport, "o", "x"),
            "https://other.example"
        ))
        .await
        .is_err());
    }
    // The WebSocket refusal is an HTTP 403.
    let url = format!("ws://127.0.0.1:{}/rally", prod.port);
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut req = url.into_client_request().unwrap();
    req.headers_mut()
        .insert("origin", "https://other.example".parse().unwrap());
    match tokio_tungstenite::connect_async(req).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => assert_eq!(resp.status(), 403),
        other => panic!("expected 403, got {other:?}"),
    }
}

#[tokio::test]
async fn join_tokens_gate_sessions_limit_rooms_and_expire_mid_session() {
    let server = Server::start(&["--token-secret", "s3cret"]);
    let key = rally::auth::TokenKey::new(b"s3cret");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let token = |exp: u64, room: Option<&str>| {
        key.sign(&rally::auth::Claims {
            exp,
            room: room.map(Into::into),
        })
    };
    for transport in BOTH {
        // No token / forged token: refused before any session.
        assert!(Client::connect(server.options(transport, "t", "n"))
            .await
            .is_err());
        let mut o = server.options(transport, "t", "n");
        o.token = Some(
            rally::auth::TokenKey::new(b"wrong").sign(&rally::auth::Claims {
                exp: now + 60,
                room: None,
            }),
        );
        assert!(Client::connect(o).await.is_err());
        // Valid for this room: in.
        let mut o = server.options(transport, "t", "n");
        o.token = Some(token(now + 60, Some("t")));
        Client::connect(o).await.unwrap();
        // Valid but for another room: unauthorized.
        let mut o = server.options(transport, "other", "n");
        o.token = Some(token(now + 60, Some("t")));
        match Client::connect(o).await {
            Err(ClientError::Refused { code, .. }) => {
                assert_eq!(code, ErrorCode::Unauthorized.as_u16())
            }
            other => panic!("{transport:?}: {:?}", other.err()),
        }
        // Expiring during the session: closed with token_expired.
        let mut o = server.options(transport, "t", "short");
        let fresh_now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        o.token = Some(token(fresh_now + 2, None));
        let mut c = Client::connect(o).await.unwrap();
        let (errors, close) = within(10, "expiry", until_closed(&mut c)).await;
        assert!(
            errors.contains(&ErrorCode::TokenExpired.as_u16()),
            "{errors:?}"
        );
        assert_eq!(close, Some(ErrorCode::TokenExpired.close_code() as u64));
    }
    assert!(
        server.health().await["metrics"]["sessions_forbidden"]
            .as_u64()
            .unwrap()
            >= 4
    );
}

#[tokio::test]
async fn per_ip_connection_limit_refuses_the_excess_and_frees_slots() {
    let server = Server::start(&["--max-connections-per-ip", "3"]);
    // No `/rooms` lookup: each client makes exactly its one connection.
    let options = |t, name: &str| {
        let mut o = server.options(t, "lim", name);
        o.locate = false;
        o
    };
    let mut held = Vec::new();
    for i in 0..3 {
        let o = options(TransportKind::WebSocket, &format!("p{i}"));
        held.push(Client::connect(o).await.unwrap());
    }
    assert!(Client::connect(options(TransportKind::WebSocket, "x"))
        .await
        .is_err());
    // Pin the hash so no extra TCP connection is made to fetch it.
    let mut pinned = [0u8; 32];
    hex::decode_to_slice(&server.cert_sha256, &mut pinned).unwrap();
    let mut o = options(TransportKind::WebTransport, "y");
    o.cert_hash = Some(pinned);
    assert!(Client::connect(o.clone()).await.is_err());
    drop(held.pop());
    tokio::time::sleep(Duration::from_millis(300)).await;
    // One slot is free again.
    let z = Client::connect(o).await.unwrap();
    drop(z);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        server.health().await["metrics"]["connections_refused"]
            .as_u64()
            .unwrap()
            >= 2
    );
}

#[tokio::test]
async fn a_second_bidirectional_stream_is_a_protocol_error() {
    let server = Server::start(&[]);
    let hash = rally::client::fetch_cert_hash(&server.url()).await.unwrap();
    let cfg = wtransport::ClientConfig::builder()
        .with_bind_default()
        .with_server_certificate_hashes([wtransport::tls::Sha256Digest::new(hash)])
        .build();
    let ep = wtransport::Endpoint::client(cfg).unwrap();
    let conn = ep
        .connect(format!("https://127.0.0.1:{}/rally", server.port))
        .await
        .unwrap();
    let (mut send, _recv) = conn.open_bi().await.unwrap().await.unwrap();
    let mut frame = bytes::BytesMut::new();
    let hello = ClientMsg::Hello {
        version: 2,
        room: "s".into(),
        name: "n".into(),
        app: Bytes::new(),
    };
    rally::protocol::encode_frame(&mut frame, &hello.to_bytes());
    send.write_all(&frame).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (mut extra, _) = conn.open_bi().await.unwrap().await.unwrap();
    extra.write_all(b"hi").await.unwrap();
    let err = within(5, "closed", conn.closed()).await;
    match err {
        wtransport::error::ConnectionError::ApplicationClosed(c) => {
            assert_eq!(
                c.code().into_inner(),
                ErrorCode::UnexpectedMessage.close_code() as u64
            )
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn the_dev_certificate_is_renewed_while_running_without_dropping_sessions() {
    let server = Server::start(&[
        "--dev-cert-validity",
        "40s",
        "--dev-cert-renew-before",
        "30s",
    ]);
    let first = server.cert_sha256.clone();
    let mut live = server
        .connect(TransportKind::WebTransport, "cert", "live")
        .await;

    // Overlap: /cert-hash lists the current and the next hash.
    let cert_hash = || async {
        let (_, body) = rally::client::http_get(&server.url(), "/cert-hash")
            .await
            .unwrap();
        serde_json::from_slice::<serde_json::Value>(&body).unwrap()
    };
    let overlap = within(30, "next hash published", async {
        loop {
            let v = cert_hash().await;
            if v["hashes"].as_array().unwrap().len() == 2 {
                return v;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    })
    .await;
    assert_eq!(overlap["hex"], first.as_str());
    assert_eq!(overlap["hashes"][0]["hex"], first.as_str());
    let next = overlap["hashes"][1]["hex"].as_str().unwrap().to_string();
    assert_ne!(next, first);

    // Then new connections get the new certificate.
    within(30, "switch to the next certificate", async {
        while cert_hash().await["hex"] != next.as_str() {
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    })
    .await;
    let pin = |hex: &str| {
        let mut h = [0u8; 32];
        hex::decode_to_slice(hex, &mut h).unwrap();
        h
    };
    let mut o = server.options(TransportKind::WebTransport, "cert", "new");
    o.cert_hash = Some(pin(&next));
    Client::connect(o)
        .await
        .expect("the new certificate is served");
    let mut o = server.options(TransportKind::WebTransport, "cert", "old");
    o.cert_hash = Some(pin(&first));
    assert!(
        Client::connect(o).await.is_err(),
        "the old certificate is no longer served"
    );

    // The session opened under the old certificate still works.
    live.ping(Channel::Reliable).await.unwrap();
    within(5, "pong on the live session", async {
        loop {
            if let ServerMsg::Pong { .. } = live.recv().await.unwrap().msg {
                break;
            }
        }
    })
    .await;
}

#[tokio::test]
async fn the_client_message_limit_is_configurable_on_both_transports() {
    let server = Server::start(&["--max-client-message", "64"]);
    for transport in BOTH {
        // 100 bytes: under the default 256, over the configured 64.
        let mut c = server.connect(transport, "limits", "big").await;
        let mut msg = vec![0x03u8; 100];
        msg[0] = 0x03;
        c.send_raw(Bytes::from(msg), Channel::Reliable)
            .await
            .unwrap();
        let (errors, close) = within(5, "too large", until_closed(&mut c)).await;
        assert!(
            errors.contains(&ErrorCode::MessageTooLarge.as_u16()),
            "{transport:?} {errors:?}"
        );
        assert_eq!(close, Some(ErrorCode::MessageTooLarge.close_code() as u64));
    }
    // Within the limit everything works.
    let mut ok = server
        .connect(TransportKind::WebTransport, "limits", "ok")
        .await;
    ok.ping(Channel::Reliable).await.unwrap();
}
