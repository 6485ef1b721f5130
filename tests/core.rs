//! Core scenarios against a real server process: both transports in one
//! room, identical snapshots, HTTP over HTTP/3 and HTTP/1.1, certificates,
//! CONNECT routing, the bot command, and protocol errors on both transports.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use bytes::{Buf, Bytes};
use common::{dots, h3_client, snapshot, within, Server, BOTH};
use rally::client::{Channel, Client, ClientError, DatagramPath, TransportKind};
use rally::games::dots::{DOWN, LEFT, RIGHT};
use rally::protocol::{ClientMsg, ErrorCode, ServerMsg, Snapshot};
use sha2::Digest;

/// Plays `client` for `ticks` inputs holding `buttons`, returning every
/// snapshot by tick and the channels snapshots arrived on.
async fn play(
    client: &mut Client,
    buttons: u8,
    inputs: usize,
) -> (BTreeMap<u32, Snapshot>, HashMap<&'static str, usize>) {
    let mut snaps = BTreeMap::new();
    let mut channels = HashMap::new();
    let mut tick = tokio::time::interval(Duration::from_millis(16));
    let mut sent = 0;
    // Keep receiving a little after the last input so others' moves arrive.
    let drain_until = tokio::time::Instant::now() + Duration::from_millis(16 * inputs as u64 + 400);
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(drain_until) => break,
            _ = tick.tick(), if sent < inputs => {
                client.send_input(&[buttons]).await.unwrap();
                sent += 1;
            }
            r = client.recv() => {
                let r = r.unwrap();
                if let ServerMsg::Snapshot(s) = r.msg {
                    let ch = match r.channel { Channel::Reliable => "reliable", Channel::Unreliable => "datagram" };
                    *channels.entry(ch).or_default() += 1;
                    snaps.insert(s.tick, s);
                }
            }
        }
    }
    (snaps, channels)
}

fn position(snaps: &BTreeMap<u32, Snapshot>, id: u32) -> Vec<(f32, f32)> {
    snaps
        .values()
        .filter_map(|s| dots(s).into_iter().find(|p| p.0 == id).map(|p| (p.1, p.2)))
        .collect()
}

#[tokio::test]
async fn webtransport_and_websocket_players_share_a_room_and_see_each_other_move() {
    let server = Server::start(&[]);
    let mut wt = server
        .connect(TransportKind::WebTransport, "mixed", "wt-player")
        .await;
    let mut ws = server
        .connect(TransportKind::WebSocket, "mixed", "ws-player")
        .await;
    let (wt_id, ws_id) = (wt.player_id(), ws.player_id());
    assert_ne!(wt_id, ws_id);

    // WT player moves right, WS player moves down, at the same time.
    let ((wt_snaps, wt_channels), (ws_snaps, _)) = within(20, "playing", async {
        tokio::join!(play(&mut wt, RIGHT, 40), play(&mut ws, DOWN, 40))
    })
    .await;

    // Each sees the other move in the direction it pressed.
    let ws_seen_by_wt = position(&wt_snaps, ws_id);
    let wt_seen_by_ws = position(&ws_snaps, wt_id);
    let (first, last) = (
        ws_seen_by_wt.first().unwrap(),
        ws_seen_by_wt.last().unwrap(),
    );
    assert!(
        last.1 > first.1 + 50.0,
        "WT saw WS move down: {first:?} -> {last:?}"
    );
    let (first, last) = (
        wt_seen_by_ws.first().unwrap(),
        wt_seen_by_ws.last().unwrap(),
    );
    assert!(
        last.0 > first.0 + 50.0,
        "WS saw WT move right: {first:?} -> {last:?}"
    );

    // Snapshots reached the WebTransport player as datagrams.
    assert!(
        wt_channels.get("datagram").copied().unwrap_or(0) > 20,
        "{wt_channels:?}"
    );

    // For every tick both received, the shared snapshot content is identical.
    let common: Vec<u32> = wt_snaps
        .keys()
        .filter(|t| ws_snaps.contains_key(t))
        .copied()
        .collect();
    assert!(common.len() > 20, "only {} common ticks", common.len());
    for t in common {
        let (a, b) = (&wt_snaps[&t], &ws_snaps[&t]);
        assert_eq!(
            (a.server_time_us, &a.payload),
            (b.server_time_us, &b.payload),
            "tick {t}"
        );
    }
}

#[tokio::test]
async fn snapshot_acknowledges_the_recipients_own_inputs() {
    let server = Server::start(&[]);
    for transport in BOTH {
        let mut c = server.connect(transport, "ack", "me").await;
        for _ in 0..5 {
            c.send_input(&[LEFT]).await.unwrap();
        }
        let acked = within(5, "ack", async {
            loop {
                if let Some(s) = snapshot(&c.recv().await.unwrap().msg) {
                    if s.ack_seq == 5 {
                        return s.ack_seq;
                    }
                }
            }
        })
        .await;
        assert_eq!(acked, 5, "{transport:?}");
    }
}

#[tokio::test]
async fn welcome_is_followed_by_the_roster_and_joins_and_leaves_are_announced() {
    let server = Server::start(&[]);
    let mut a = server
        .connect(TransportKind::WebSocket, "roster", "alice")
        .await;
    let b = server
        .connect(TransportKind::WebTransport, "roster", "bob")
        .await;
    let b_id = b.player_id();
    let mut events = Vec::new();
    within(5, "join event", async {
        while events.len() < 2 {
            match a.recv().await.unwrap().msg {
                m @ ServerMsg::PlayerJoined { .. } => events.push(m),
                ServerMsg::Snapshot { .. } | ServerMsg::Pong { .. } => {}
                other => panic!("unexpected {other:?}"),
            }
        }
    })
    .await;
    assert_eq!(
        events,
        vec![
            ServerMsg::PlayerJoined {
                player_id: a.player_id(),
                name: "alice".into()
            },
            ServerMsg::PlayerJoined {
                player_id: b_id,
                name: "bob".into()
            },
        ]
    );
    b.leave().await.unwrap();
    within(5, "leave event", async {
        loop {
            if let ServerMsg::PlayerLeft { player_id } = a.recv().await.unwrap().msg {
                assert_eq!(player_id, b_id);
                break;
            }
        }
    })
    .await;
}

/// The load generator's datagram path (quinn's `read_datagram`, past
/// wtransport's driver, the session prefix stripped here) loses at most the
/// connection's first datagram.
#[tokio::test]
async fn direct_datagram_path_receives_every_snapshot_and_pong_after_the_first() {
    let server = Server::start(&[]);
    let mut o = server.options(TransportKind::WebTransport, "direct", "d");
    o.datagrams = DatagramPath::Direct;
    let mut c = Client::connect(o).await.unwrap();
    let ticks = within(10, "120 snapshots", async {
        let mut ticks = Vec::new();
        while ticks.len() < 120 {
            let r = c.recv().await.unwrap();
            if let ServerMsg::Snapshot(s) = r.msg {
                assert_eq!(r.channel, Channel::Unreliable);
                ticks.push(s.tick);
            }
        }
        ticks
    })
    .await;
    // Loopback loses nothing: consecutive ticks, one datagram each.
    assert!(ticks.windows(2).all(|w| w[1] == w[0] + 1), "{ticks:?}");
    for _ in 0..20 {
        c.ping(Channel::Unreliable).await.unwrap();
        within(2, "datagram pong", async {
            while !matches!(c.recv().await.unwrap().msg, ServerMsg::Pong { .. }) {}
        })
        .await;
    }
}

/// In steady state the room writes each snapshot to the transport itself
/// (a WebSocket frame on plain TCP, a datagram on WebTransport), without
/// waking the session. On WebSocket this was silently lost once (the HTTP
/// server's own I/O wrapper hid the TCP socket from the upgrade, and every
/// snapshot went through the session): only the counter shows it.
#[tokio::test]
async fn the_room_writes_snapshots_itself_on_plain_tcp_and_datagrams() {
    let server = Server::start(&[]);
    let mut ws = server
        .connect(TransportKind::WebSocket, "direct", "ws")
        .await;
    let mut wt = server
        .connect(TransportKind::WebTransport, "direct", "wt")
        .await;
    for c in [&mut ws, &mut wt] {
        within(10, "20 snapshots", async {
            let mut n = 0;
            while n < 20 {
                if let ServerMsg::Snapshot(_) = c.recv().await.unwrap().msg {
                    n += 1;
                }
            }
        })
        .await;
    }
    let h = server.health().await;
    for t in ["websocket", "webtransport"] {
        let m = &h["metrics"][t];
        let (sent, direct) = (
            m["snapshots_sent"].as_u64().unwrap(),
            m["snapshots_direct"].as_u64().unwrap(),
        );
        // The first snapshot follows Welcome through the session; nearly
        // all later ones are direct (a full socket would send one through
        // the session again, so only "some" is asserted).
        assert!(sent >= 20, "{t}: {sent} sent");
        assert!(
            direct > 0,
            "{t}: none of {sent} snapshots written by the room"
        );
    }
}

#[tokio::test]
async fn ping_is_answered_on_the_channel_it_came_on() {
    let server = Server::start(&[]);
    let mut wt = server
        .connect(TransportKind::WebTransport, "ping", "p")
        .await;
    for channel in [Channel::Unreliable, Channel::Reliable] {
        wt.ping(channel).await.unwrap();
        let got = within(5, "pong", async {
            loop {
                let r = wt.recv().await.unwrap();
                if let ServerMsg::Pong { .. } = r.msg {
                    return r.channel;
                }
            }
        })
        .await;
        assert_eq!(got, channel);
    }
}

#[tokio::test]
async fn oversized_snapshots_fall_back_to_the_stream_and_are_counted() {
    // 120 players make a 1459-byte snapshot: larger than any QUIC datagram
    // on a 1500-byte path.
    let server = Server::start(&[
        "--max-players-per-room",
        "200",
        "--max-connections-per-ip",
        "200",
    ]);
    let mut crowd = Vec::new();
    for i in 0..119 {
        crowd.push(
            server
                .connect(TransportKind::WebSocket, "crowd", &format!("c{i}"))
                .await,
        );
    }
    let mut wt = server
        .connect(TransportKind::WebTransport, "crowd", "wt")
        .await;
    let max = wt.max_datagram_size().unwrap();
    let snap = within(10, "big snapshot", async {
        loop {
            let r = wt.recv().await.unwrap();
            if let ServerMsg::Snapshot(s) = r.msg {
                if dots(&s).len() == 120 {
                    return (r.channel, s);
                }
            }
        }
    })
    .await;
    assert_eq!(17 + snap.1.payload.len(), 19 + 12 * 120);
    assert!(19 + 12 * 120 > max, "snapshot must exceed {max}");
    assert_eq!(snap.0, Channel::Reliable);
    let h = server.health().await;
    assert!(
        h["metrics"]["webtransport"]["snapshots_on_stream"]
            .as_u64()
            .unwrap()
            > 0,
        "{h}"
    );
    drop(crowd);
}

// ---- HTTP over both stacks -------------------------------------------------

type H3Send = h3::client::SendRequest<h3_quinn::OpenStreams, Bytes>;

/// One HTTP/3 client connection (control streams opened once).
async fn h3_session(conn: &quinn::Connection) -> H3Send {
    let (mut driver, send) = h3::client::new(h3_quinn::Connection::new(conn.clone()))
        .await
        .unwrap();
    tokio::spawn(async move {
        let _ = std::future::poll_fn(|cx| driver.poll_close(cx)).await;
    });
    send
}

async fn h3_request(send: &mut H3Send, req: http::Request<()>) -> (http::StatusCode, Bytes) {
    let mut stream = send.send_request(req).await.unwrap();
    stream.finish().await.unwrap();
    let resp = stream.recv_response().await.unwrap();
    let mut body = Vec::new();
    while let Some(mut chunk) = stream.recv_data().await.unwrap() {
        body.extend_from_slice(&chunk.copy_to_bytes(chunk.remaining()));
    }
    (resp.status(), body.into())
}

#[tokio::test]
async fn health_and_cert_hash_over_http3_and_http11_agree() {
    let server = Server::start(&[]);
    let (_ep, conn) = h3_client(&server).await;
    let mut h3 = h3_session(&conn).await;
    let base = format!("https://localhost:{}", server.port);
    let mut over_h3 = HashMap::new();
    for path in ["/health", "/cert-hash", "/", "/client/rally.js"] {
        let req = http::Request::get(format!("{base}{path}"))
            .body(())
            .unwrap();
        let (status, body) = within(10, path, h3_request(&mut h3, req)).await;
        assert_eq!(status, 200, "HTTP/3 {path}");
        over_h3.insert(path, body);
    }
    for path in ["/health", "/cert-hash", "/", "/client/rally.js"] {
        let (status, body) = rally::client::http_get(&server.url(), path).await.unwrap();
        assert_eq!(status, 200, "HTTP/1.1 {path}");
        if path != "/health" {
            assert_eq!(body, over_h3[path], "same body for {path} on both stacks");
        }
    }
    let health: serde_json::Value = serde_json::from_slice(&over_h3["/health"]).unwrap();
    assert_eq!(health["status"], "ok");
    let hash: serde_json::Value = serde_json::from_slice(&over_h3["/cert-hash"]).unwrap();
    assert_eq!(hash["algorithm"], "sha-256");
    assert_eq!(hash["hex"], server.cert_sha256.as_str());

    let (status, _) = rally::client::http_get(&server.url(), "/nope")
        .await
        .unwrap();
    assert_eq!(status, 404);
}

#[tokio::test]
async fn connect_to_an_unknown_path_gets_404() {
    let server = Server::start(&[]);
    let (_ep, conn) = h3_client(&server).await;
    let req = http::Request::builder()
        .method(http::Method::CONNECT)
        .uri(format!("https://localhost:{}/not-rally", server.port))
        .extension(h3::ext::Protocol::WEB_TRANSPORT)
        .body(())
        .unwrap();
    let mut send = h3_session(&conn).await;
    let status = within(10, "CONNECT", async {
        let mut stream = send.send_request(req).await.unwrap();
        stream.recv_response().await.unwrap().status()
    })
    .await;
    assert_eq!(status, 404);

    // And an independent WebTransport client is refused the same way.
    let opts =
        rally::client::ConnectOptions::new(server.url(), TransportKind::WebTransport, "r", "n");
    let hash = rally::client::fetch_cert_hash(&opts.url).await.unwrap();
    let cfg = wtransport::ClientConfig::builder()
        .with_bind_default()
        .with_server_certificate_hashes([wtransport::tls::Sha256Digest::new(hash)])
        .build();
    let ep = wtransport::Endpoint::client(cfg).unwrap();
    let Err(err) = ep
        .connect(format!("https://127.0.0.1:{}/elsewhere", server.port))
        .await
    else {
        panic!("a session on /elsewhere was accepted");
    };
    assert!(
        matches!(err, wtransport::error::ConnectingError::SessionRejected),
        "{err:?}"
    );
}

#[tokio::test]
async fn dev_certificate_is_p256_short_lived_with_the_sans_and_its_hash_is_published() {
    let server = Server::start(&[]);
    let pem = std::fs::read(server.cert_dir().join("dev.pem")).unwrap();
    let der = rustls_pemfile::certs(&mut pem.as_slice())
        .next()
        .unwrap()
        .unwrap();
    let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();

    // ECDSA with the P-256 curve.
    let spki = &cert.tbs_certificate.subject_pki;
    assert_eq!(
        spki.algorithm.algorithm,
        x509_parser::oid_registry::OID_KEY_TYPE_EC_PUBLIC_KEY
    );
    let curve = spki
        .algorithm
        .parameters
        .as_ref()
        .unwrap()
        .as_oid()
        .unwrap();
    assert_eq!(curve, x509_parser::oid_registry::OID_EC_P256);
    assert_eq!(cert.version(), x509_parser::x509::X509Version::V3);

    // At most 14 days in total, and valid now.
    let v = cert.validity();
    let total = v.not_after.timestamp() - v.not_before.timestamp();
    assert!(total <= 14 * 86_400, "validity {total} s");
    assert!(v.is_valid());

    // SANs: localhost, 127.0.0.1, ::1.
    let san = cert.subject_alternative_name().unwrap().unwrap().value;
    use x509_parser::extensions::GeneralName;
    let names: Vec<String> = san
        .general_names
        .iter()
        .map(|n| match n {
            GeneralName::DNSName(d) => d.to_string(),
            GeneralName::IPAddress(b) if b.len() == 4 => {
                std::net::Ipv4Addr::from(<[u8; 4]>::try_from(*b).unwrap()).to_string()
            }
            GeneralName::IPAddress(b) if b.len() == 16 => {
                std::net::Ipv6Addr::from(<[u8; 16]>::try_from(*b).unwrap()).to_string()
            }
            other => format!("{other}"),
        })
        .collect();
    for want in ["localhost", "127.0.0.1", "::1"] {
        assert!(names.iter().any(|n| n == want), "{want} not in {names:?}");
    }

    // The published hash is the SHA-256 of this DER certificate.
    let hex = hex::encode(sha2::Sha256::digest(&der));
    let (_, body) = rally::client::http_get(&server.url(), "/cert-hash")
        .await
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["hex"], hex.as_str());
    assert_eq!(server.cert_sha256, hex);

    // The key file is private.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(server.cert_dir().join("dev.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}

// ---- Protocol errors, on both transports ------------------------------------

async fn expect_error_close(mut c: Client, bytes: Bytes, channel: Channel, want: ErrorCode) {
    c.send_raw(bytes, channel).await.unwrap();
    let (mut got_msg, mut got_close) = (None, None);
    within(10, "error and close", async {
        loop {
            match c.recv().await {
                Ok(r) => {
                    if let ServerMsg::Error { code, .. } = r.msg {
                        got_msg = Some(code);
                    }
                }
                Err(ClientError::Closed { code, .. }) => {
                    got_close = code;
                    break;
                }
                Err(e) => panic!("unexpected {e}"),
            }
        }
    })
    .await;
    assert_eq!(got_msg, Some(want.as_u16()), "error message for {want}");
    assert_eq!(
        got_close,
        Some(want.close_code() as u64),
        "close code for {want}"
    );
}

#[tokio::test]
async fn bad_messages_get_a_documented_error_and_close_code_on_both_transports() {
    let server = Server::start(&[]);
    let cases: Vec<(Bytes, Channel, ErrorCode)> = vec![
        (
            Bytes::from_static(&[0x7e, 1, 2]),
            Channel::Reliable,
            ErrorCode::UnknownMessage,
        ),
        (
            Bytes::from_static(&[0x02, 0, 0]),
            Channel::Reliable,
            ErrorCode::BadMessage,
        ),
        (
            ClientMsg::Hello {
                version: 2,
                room: "x".into(),
                name: "y".into(),
                app: Bytes::new(),
            }
            .to_bytes(),
            Channel::Reliable,
            ErrorCode::UnexpectedMessage,
        ),
        (
            Bytes::from(vec![0x03; 300]),
            Channel::Reliable,
            ErrorCode::MessageTooLarge,
        ),
    ];
    for transport in BOTH {
        for (bytes, channel, want) in &cases {
            let c = server.connect(transport, "errors", "bad").await;
            expect_error_close(c, bytes.clone(), *channel, *want).await;
        }
    }
    // The server is still serving everyone else.
    let mut ok = server
        .connect(TransportKind::WebTransport, "errors", "good")
        .await;
    ok.ping(Channel::Reliable).await.unwrap();
    let errors = &server.health().await["metrics"]["errors"];
    assert_eq!(errors["unknown_message"], 2);
    assert_eq!(errors["message_too_large"], 2);
}

#[tokio::test]
async fn wrong_protocol_version_and_bad_names_are_refused_with_clear_errors() {
    let server = Server::start(&[]);
    for transport in BOTH {
        for (room, name, want) in [
            ("ok", "", ErrorCode::InvalidName),
            ("bad room!", "n", ErrorCode::InvalidName),
            ("ok", &"x".repeat(25)[..], ErrorCode::InvalidName),
        ] {
            let opts = rally::client::ConnectOptions::new(server.url(), transport, room, name);
            match Client::connect(opts).await {
                Err(ClientError::Refused { code, .. }) => assert_eq!(code, want.as_u16()),
                Err(e) => panic!("{transport:?} {room:?}/{name:?}: {e}"),
                Ok(_) => panic!("{transport:?} {room:?}/{name:?} was accepted"),
            }
        }
        let mut opts = rally::client::ConnectOptions::new(server.url(), transport, "ok", "old");
        opts.protocol_version = 1;
        match Client::connect(opts).await {
            Err(ClientError::Refused { code, reason }) => {
                assert_eq!(code, ErrorCode::UnsupportedVersion.as_u16());
                assert!(reason.contains("version 1"), "{reason}");
            }
            Err(e) => panic!("{transport:?}: {e}"),
            Ok(_) => panic!("{transport:?}: version 1 was accepted"),
        }
    }
}

#[tokio::test]
async fn wt_snapshots_stream_mode_carries_snapshots_on_the_reliable_stream() {
    let server = Server::start(&["--wt-snapshots", "stream"]);
    let mut wt = server
        .connect(TransportKind::WebTransport, "carriage", "s")
        .await;
    let channels = within(5, "snapshots", async {
        let mut seen = Vec::new();
        while seen.len() < 20 {
            let r = wt.recv().await.unwrap();
            if let ServerMsg::Snapshot(_) = r.msg {
                seen.push(r.channel);
            }
        }
        seen
    })
    .await;
    assert!(
        channels.iter().all(|c| *c == Channel::Reliable),
        "{channels:?}"
    );
    let h = server.health().await;
    let wt_metrics = &h["metrics"]["webtransport"];
    assert!(wt_metrics["snapshots_sent"].as_u64().unwrap() >= 20);
    assert_eq!(
        wt_metrics["snapshots_sent"],
        wt_metrics["snapshots_on_stream"]
    );
}

/// The third transport (PROTOCOL.md §11) joins the same rooms: a player on
/// each of the three sees the others move.
#[tokio::test]
async fn players_on_all_three_transports_share_a_room() {
    let server = Server::start(&[]);
    let kinds = [
        TransportKind::WebTransport,
        TransportKind::WebSocket,
        TransportKind::Http,
    ];
    let mut clients = Vec::new();
    for (i, &t) in kinds.iter().enumerate() {
        clients.push(server.connect(t, "three", &format!("p{i}")).await);
    }
    let ids: Vec<u32> = clients.iter().map(|c| c.player_id()).collect();
    let [a, b, c] = &mut clients[..] else {
        unreachable!()
    };
    let ((sa, _), (sb, _), (sc, _)) = within(20, "playing", async {
        tokio::join!(play(a, RIGHT, 30), play(b, DOWN, 30), play(c, LEFT, 30))
    })
    .await;
    // Everyone sees everyone move as they pressed.
    for snaps in [&sa, &sb, &sc] {
        let moved = |id, dx: f32, dy: f32| {
            let p = position(snaps, id);
            let (f, l) = (p.first().unwrap(), p.last().unwrap());
            (l.0 - f.0) * dx > 40.0 || (l.1 - f.1) * dy > 40.0
        };
        assert!(moved(ids[0], 1.0, 0.0), "WT player moved right");
        assert!(moved(ids[1], 0.0, 1.0), "WS player moved down");
        assert!(moved(ids[2], -1.0, 0.0), "HTTP player moved left");
    }
    let h = server.health().await;
    assert!(
        h["metrics"]["http"]["snapshots_sent"].as_u64().unwrap() > 20,
        "{h}"
    );
}
