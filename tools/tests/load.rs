//! `rally load s1|s2|s3` end to end (`rally-tools load`, starting the
//! `rally` server beside it), with tiny counts: checks the JSON each writes
//! has the documented fields (BENCHMARKS.md, "Performance"). Benchmarks
//! measure; these tests assert no timings.

mod common;

use std::process::Command;

/// Runs `rally load ARGS --json FILE` and returns the JSON it wrote.
fn run_load(args: &[&str]) -> serde_json::Value {
    let out = std::env::temp_dir().join(format!(
        "rally-load-{}-{}.json",
        args[0],
        std::process::id()
    ));
    common::server_bin();
    let status = Command::new(common::tools_bin())
        .arg("load")
        .args(args)
        .arg("--json")
        .arg(&out)
        .env("RALLY_LOG", "warn")
        .status()
        .expect("run rally load");
    assert!(status.success(), "rally load {args:?} failed: {status}");
    let v = serde_json::from_slice(&std::fs::read(&out).expect("JSON file written")).unwrap();
    let _ = std::fs::remove_file(&out);
    v
}

#[test]
fn load_s1_writes_the_documented_json() {
    let v = run_load(&[
        "s1",
        "--round-trips",
        "40",
        "--rounds",
        "2",
        "--warmup",
        "5",
    ]);
    assert_eq!(v["scenario"], "s1");
    assert!(v["machine"]["nproc"].as_u64().unwrap() >= 1);
    for k in ["cpu_model", "mem_total", "kernel"] {
        assert!(v["machine"][k].is_string(), "machine.{k}");
    }
    assert_eq!(v["load_before"].as_array().unwrap().len(), 3);
    assert_eq!(v["load_after"].as_array().unwrap().len(), 3);
    assert_eq!(v["round_trips"], 40);

    let paths = v["paths"].as_array().unwrap();
    let names: Vec<&str> = paths.iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        ["udp_floor", "tcp_floor", "wt_datagram", "wt_stream", "ws"]
    );
    for p in paths {
        let name = p["name"].as_str().unwrap();
        for k in ["p50_us", "p99_us", "p999_us", "max_us"] {
            let x = p[k].as_f64().unwrap_or_else(|| panic!("{name}.{k}"));
            assert!(x > 0.0, "{name}.{k} = {x}");
        }
        assert!(p["p50_us"].as_f64() <= p["p99_us"].as_f64());
        assert!(p["p99_us"].as_f64() <= p["p999_us"].as_f64());
        // Samples plus losses account for every round trip.
        let n = p["samples"].as_u64().unwrap() + p["lost"].as_u64().unwrap();
        assert_eq!(n, 40, "{name}");
        let rally_path = !name.ends_with("_floor");
        assert_eq!(p["floor"].is_string(), rally_path, "{name}.floor");
        for k in ["ratio_p50", "ratio_p99", "ratio_p999"] {
            assert_eq!(p[k].as_f64().is_some(), rally_path, "{name}.{k}");
        }
    }
}

/// `rally load s3` with tiny counts: every session connects, WebTransport
/// clients sharing sockets (`--wt-clients-per-socket`) included, and the
/// JSON carries the per-connection figures.
#[test]
fn load_s3_connects_every_session_on_shared_sockets() {
    let v = run_load(&[
        "s3",
        "--ws",
        "30",
        "--wt",
        "30",
        "--wt-clients-per-socket",
        "8",
        "--room-size",
        "10",
        "--observers",
        "2",
        "--settle",
        "0.2",
    ]);
    assert_eq!(v["scenario"], "s3");
    assert_eq!(v["wt_clients_per_socket"], 8);
    let rows = v["rows"].as_array().unwrap();
    let transports: Vec<&str> = rows
        .iter()
        .map(|r| r["transport"].as_str().unwrap())
        .collect();
    assert_eq!(transports, ["websocket", "webtransport"]);
    for r in rows {
        let t = r["transport"].as_str().unwrap();
        assert_eq!(r["connected"], 30, "{t}");
        assert_eq!(r["connect_failures"], 0, "{t}");
        assert_eq!(
            r["alive_at_end"], 30,
            "{t}: sessions dropped during the run"
        );
        assert!(r["rss_after_kb"].as_u64().unwrap() > 0, "{t}");
        assert!(r["rss_per_conn_kb"].is_number(), "{t}");
        assert_eq!(r["connect_latency"]["samples"], 30, "{t}");
    }
}

/// `rally load s2` with tiny counts: Rally over both transports and the
/// Node.js `ws` peer (installed by the command with `npm ci`) in one run,
/// every client receiving the fan-out, and Rally's CPU per message
/// compared with the peer's from the same run.
#[test]
fn load_s2_measures_both_transports_and_the_node_peer_in_one_run() {
    let v = run_load(&[
        "s2",
        "--clients",
        "20",
        "--room-size",
        "10",
        "--seconds",
        "1",
        "--warmup",
        "0.5",
    ]);
    assert_eq!(v["scenario"], "s2");
    assert_eq!(v["room_size"], 10);
    let rows = v["rows"].as_array().unwrap();
    let targets: Vec<&str> = rows.iter().map(|r| r["target"].as_str().unwrap()).collect();
    assert_eq!(targets, ["rally-ws", "rally-wt", "node-ws"]);
    for r in rows {
        let t = r["target"].as_str().unwrap();
        assert_eq!(r["clients"], 20, "{t}");
        assert_eq!(r["connected"], 20, "{t}");
        assert_eq!(r["rooms"], 2, "{t}");
        // The dots snapshot of a full room, from both Rally and the peer:
        // 17 bytes of header, 2 + 12 × 10 of dots.
        assert_eq!(r["snapshot_bytes"], 139, "{t}");
        assert!(
            r["delivered"].as_u64().unwrap() > 0,
            "{t}: nothing delivered"
        );
        assert!(r["expected"].as_u64().unwrap() > 0, "{t}");
        assert!(r["latency"]["samples"].as_u64().unwrap() > 0, "{t}");
        // CPU time comes from /proc in clock ticks: a one-second window of
        // a near-idle server may show none, so only its presence is checked.
        assert!(r["cpu_us_per_msg"].as_f64().unwrap() >= 0.0, "{t}");
        assert!(r["server_rss_kb"].as_u64().unwrap() > 0, "{t}");
        let ratio = &r["cpu_ratio_to_peer"];
        assert!(ratio.is_number() || ratio.is_null(), "{t}: {ratio}");
        if t == "node-ws" && ratio.is_number() {
            assert_eq!(ratio.as_f64(), Some(1.0));
        }
    }
}

/// The Node peer (bench/node-peer, installed with `npm ci` like S2 does)
/// speaks protocol 2 as a dots server would, to Rally's own client:
/// Welcome with the dots arena, dots snapshots of the room, Pong, and the
/// refusal of another protocol version.
#[tokio::test]
async fn the_node_peer_speaks_protocol_2_as_a_dots_server() {
    use rally::client::{Channel, Client, ClientError, ConnectOptions, TransportKind};
    use rally::protocol::ServerMsg;
    use rally_tools::load::{node_peer, proc};

    let script = node_peer::prepare(&node_peer::default_dir())
        .await
        .expect("the Node peer and its dependencies");
    let peer = proc::node(&script, 60).await.expect("start the Node peer");
    assert_eq!(peer.listening.cert_hash(), None, "plain ws, no certificate");
    let opts = |name: &str| ConnectOptions::new(peer.url(), TransportKind::WebSocket, "r", name);
    let mut a = Client::connect(opts("a")).await.expect("connect");
    let b = Client::connect(opts("b")).await.expect("connect");
    let w = a.welcome().clone();
    assert_eq!(
        (w.version, w.game.as_str(), w.tick_hz, w.snapshot_every),
        (2, "dots", 60, 1)
    );
    assert_eq!((w.max_message, w.max_input, w.reliable_seq), (256, 32, 0));
    // The dots arena: 960 × 540, 240 units a second.
    let arena: Vec<f32> = w
        .app
        .chunks(4)
        .map(|c| f32::from_be_bytes(c.try_into().unwrap()))
        .collect();
    assert_eq!(arena, [960.0, 540.0, 240.0]);

    a.ping(Channel::Reliable).await.unwrap();
    let (mut pong, mut both) = (false, false);
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    while !(pong && both) {
        let r = tokio::time::timeout_at(deadline, a.recv())
            .await
            .expect("a pong and a snapshot of both players within 5 s")
            .unwrap();
        match r.msg {
            ServerMsg::Pong { client_time_us, .. } => pong = client_time_us > 0,
            ServerMsg::Snapshot(s) => {
                let dots = rally::games::dots::players(&s.payload).expect("a dots payload");
                let ids: Vec<u32> = dots.iter().map(|(id, _)| *id).collect();
                both |=
                    ids.len() == 2 && ids.contains(&w.player_id) && ids.contains(&b.player_id());
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    let mut v1 = opts("old");
    v1.protocol_version = 1;
    match Client::connect(v1).await {
        Err(ClientError::Refused { code: 2, reason }) => assert_eq!(reason, "unsupported_version"),
        Err(e) => panic!("expected unsupported_version, got {e}"),
        Ok(_) => panic!("a version-1 Hello was welcomed"),
    }
}

/// `rally load s2` with the kernel floors beside Rally: each floor's
/// recipients receive the fan-out (the same message bytes as Rally's), and
/// each row carries its CPU per message as a ratio to its floor from the
/// same run (WebSocket rows to `floor-tcp`, datagram rows to the sealed
/// `floor-udp-aead`).
#[test]
fn load_s2_measures_rally_against_the_kernel_floors_in_one_run() {
    let v = run_load(&[
        "s2",
        "--clients",
        "20",
        "--room-size",
        "10",
        "--seconds",
        "1",
        "--warmup",
        "0.5",
        "--wt-clients-per-socket",
        "8",
        "--targets",
        "ws,wt,floor-tcp,floor-udp,floor-udp-aead",
    ]);
    let rows = v["rows"].as_array().unwrap();
    let targets: Vec<&str> = rows.iter().map(|r| r["target"].as_str().unwrap()).collect();
    assert_eq!(
        targets,
        [
            "rally-ws",
            "rally-wt",
            "floor-tcp",
            "floor-udp",
            "floor-udp-aead"
        ]
    );
    for r in rows {
        let t = r["target"].as_str().unwrap();
        assert_eq!(r["connected"], 20, "{t}");
        assert_eq!(r["connect_failures"], 0, "{t}");
        // Rally's dots snapshot of a full room and the floors' message:
        // the same 139 bytes.
        assert_eq!(r["snapshot_bytes"], 139, "{t}");
        let delivered = r["delivered"].as_u64().unwrap();
        let expected = r["expected"].as_u64().unwrap();
        assert!(delivered > 0, "{t}: nothing delivered");
        assert!(delivered <= expected + 20, "{t}: {delivered} > {expected}");
        assert!(r["latency"]["samples"].as_u64().unwrap() > 0, "{t}");
        // /proc counts CPU in clock ticks: a short window of a near-idle
        // sender may show none, so only sanity is checked.
        let cpu = r["cpu_us_per_msg"].as_f64().unwrap();
        assert!(cpu.is_finite() && cpu >= 0.0, "{t}: {cpu}");
        // At most every core of the machine (with a clock tick of slack).
        let pct = r["server_cpu_pct"].as_f64().unwrap();
        let cores = v["machine"]["nproc"].as_f64().unwrap();
        assert!(pct >= 0.0 && pct <= cores * 100.0 + 10.0, "{t}: {pct}%");
        assert!(r["server_rss_kb"].as_u64().unwrap() > 0, "{t}");
        let floor = if t == "rally-ws" || t == "floor-tcp" {
            "floor-tcp"
        } else {
            "floor-udp-aead"
        };
        assert_eq!(r["floor"], floor, "{t}");
        let ratio = &r["cpu_ratio_to_floor"];
        assert!(ratio.is_number() || ratio.is_null(), "{t}: {ratio}");
        if t == floor && ratio.is_number() {
            assert_eq!(ratio.as_f64(), Some(1.0), "{t}");
        }
        // No Node peer in this run.
        assert!(r["cpu_ratio_to_peer"].is_null(), "{t}");
    }
}
