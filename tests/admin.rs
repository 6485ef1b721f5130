//! The admin page (`--admin-token`) against the real binary: without the
//! flag `/admin` is an unknown path; with it the state needs the bearer
//! token (refusals answered 401 and counted in `/metrics`), and lists real
//! native clients on WebTransport and WebSocket with their transport and
//! RTT, and a history the sampler keeps.

mod common;

use std::time::Duration;

use common::{within, Server};
use rally::client::TransportKind;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const TOKEN: &str = "correct-horse-battery-staple";

/// One HTTP/1.1 response: status, lower-cased header lines, body.
struct Resp {
    status: u16,
    head: String,
    body: String,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
}

/// `GET path` over plain HTTP/1.1, with `Authorization` if given.
async fn get(server: &Server, path: &str, auth: Option<&str>) -> Resp {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", server.port))
        .await
        .unwrap();
    let auth = auth
        .map(|a| format!("Authorization: {a}\r\n"))
        .unwrap_or_default();
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\n{auth}Connection: close\r\n\r\n",
        server.port
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    within(10, path, s.read_to_end(&mut raw)).await.unwrap();
    let raw = String::from_utf8(raw).expect("UTF-8 response");
    let (head, body) = raw.split_once("\r\n\r\n").expect("a header block");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("{head}"));
    Resp {
        status,
        head: head.to_string(),
        body: body.to_string(),
    }
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// `rally_admin_refused_total` in `/metrics`.
async fn refused(server: &Server) -> u64 {
    let text = get(server, "/metrics", None).await.body;
    text.lines()
        .find_map(|l| l.strip_prefix("rally_admin_refused_total"))
        .and_then(|v| v.trim_start_matches("{}").trim().parse().ok())
        .unwrap_or_else(|| panic!("no rally_admin_refused_total in:\n{text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_flag_admin_paths_are_unknown_paths() {
    let server = Server::start(&[]);
    let unknown = get(&server, "/no-such-page", None).await;
    assert_eq!(unknown.status, 404);
    for path in ["/admin", "/admin/", "/admin/api/state", "/admin/x"] {
        for auth in [None, Some(bearer(TOKEN))] {
            let r = get(&server, path, auth.as_deref()).await;
            assert_eq!(r.status, 404, "{path}");
            assert_eq!(r.body, unknown.body, "{path}");
            assert_eq!(r.header("www-authenticate"), None, "{path}");
        }
    }
    assert_eq!(refused(&server).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_state_needs_the_token_and_shows_players_with_transport_and_rtt() {
    let server = Server::start(&["--admin-token", TOKEN]);

    // The page is served without the token: it holds no data.
    let page = get(&server, "/admin", None).await;
    assert_eq!(page.status, 200);
    assert!(page
        .header("content-type")
        .unwrap()
        .starts_with("text/html"));
    assert!(page.body.contains("/client/admin.js"), "{}", page.body);
    assert_eq!(get(&server, "/admin/other", None).await.status, 404);

    // No token, a wrong one, the right one under another scheme, or a
    // prefix of it: 401, never cached, each counted.
    let wrong = [
        None,
        Some(bearer("nope")),
        Some(bearer(&TOKEN[..TOKEN.len() - 1])),
        Some(format!("Basic {TOKEN}")),
    ];
    for auth in &wrong {
        let r = get(&server, "/admin/api/state", auth.as_deref()).await;
        assert_eq!(r.status, 401, "{auth:?}");
        assert!(
            r.header("www-authenticate").unwrap().starts_with("Bearer"),
            "{auth:?}"
        );
        assert_eq!(r.header("cache-control"), Some("no-store"));
        assert!(!r.body.contains(TOKEN));
    }
    assert_eq!(refused(&server).await, wrong.len() as u64);

    within(60, "the players listed", async {
        let mut wt = server
            .connect(TransportKind::WebTransport, "lobby", "wendy")
            .await;
        let mut ws = server
            .connect(TransportKind::WebSocket, "lobby", "walter")
            .await;
        let ids = [
            (wt.player_id(), "webtransport"),
            (ws.player_id(), "websocket"),
        ];
        // Keep both sessions read, as a game client would.
        let readers = [
            tokio::spawn(async move { while wt.recv().await.is_ok() {} }),
            tokio::spawn(async move { while ws.recv().await.is_ok() {} }),
        ];
        let f = |v: &serde_json::Value| v.as_f64();

        // RTT is sampled once a second per session: wait for both.
        let state = loop {
            let r = get(&server, "/admin/api/state", Some(&bearer(TOKEN))).await;
            assert_eq!(r.status, 200, "{}", r.body);
            assert_eq!(r.header("cache-control"), Some("no-store"));
            assert_eq!(r.header("access-control-allow-origin"), None);
            let s = r.json();
            let players = s["players"].as_array().unwrap();
            if players.len() == 2 && players.iter().all(|p| f(&p["rtt_ms"]).is_some()) {
                break s;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        };
        for (id, transport) in ids {
            let p = state["players"]
                .as_array()
                .unwrap()
                .iter()
                .find(|p| p["id"] == id)
                .unwrap_or_else(|| panic!("player {id} not listed: {state}"));
            assert_eq!(p["transport"], transport);
            assert_eq!(p["room"], "lobby");
            let rtt = f(&p["rtt_ms"]).unwrap();
            // Loopback: a real measurement, not a placeholder.
            assert!(rtt > 0.0 && rtt < 1000.0, "{transport} rtt {rtt}");
            assert!(f(&p["jitter_ms"]).is_some_and(|j| j >= 0.0), "{p}");
            assert!(p["remote"].as_str().unwrap().starts_with("127.0.0.1:"));
            assert!(f(&p["connected_for_s"]).unwrap() >= 0.0);
        }
        let names: Vec<_> = state["players"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap())
            .collect();
        assert!(
            names.contains(&"wendy") && names.contains(&"walter"),
            "{names:?}"
        );
        assert_eq!(
            state["rooms"],
            serde_json::json!([{"name": "lobby", "players": 2, "game": "dots"}])
        );
        let node = &state["node"];
        assert_eq!(node["sessions"], 2);
        assert_eq!(node["players"], 2);
        assert_eq!(node["rooms"], 1);
        assert_eq!(node["draining"], false);
        assert_eq!(node["cert_sha256"], server.cert_sha256.as_str());
        assert_eq!(node["url"], format!("http://127.0.0.1:{}", server.port));
        let nodes = state["nodes"].as_array().unwrap();
        assert_eq!(nodes.len(), 1);
        assert_eq!(nodes[0]["local"], true);
        assert_eq!(nodes[0]["id"], node["id"]);

        // The sampler's history shows the two sessions and their traffic
        // (snapshots at the tick rate), and the room's ticks.
        loop {
            let s = get(&server, "/admin/api/state", Some(&bearer(TOKEN)))
                .await
                .json();
            let series = s["series"].as_array().unwrap();
            let last = series.last();
            let ok = last.is_some_and(|l| {
                l["sessions"] == serde_json::json!({"webtransport": 1, "websocket": 1, "http": 0})
                    && f(&l["messages_out_per_sec"]).is_some_and(|m| m > 10.0)
                    && f(&l["tick_p50_ms"]).is_some_and(|t| t > 0.0)
                    && f(&l["tick_p99_ms"]).is_some_and(|t| t >= f(&l["tick_p50_ms"]).unwrap())
            });
            // A history: samples a period apart, oldest first.
            if ok && series.len() >= 3 {
                assert!(series.len() <= 300);
                let t: Vec<u64> = series.iter().map(|p| p["t"].as_u64().unwrap()).collect();
                assert!(
                    t.windows(2).all(|w| (300..5000).contains(&(w[1] - w[0]))),
                    "sample times {t:?}"
                );
                break;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        for r in readers {
            r.abort();
        }
    })
    .await;
    // Refusals only: the authorized requests were not counted.
    assert_eq!(refused(&server).await, wrong.len() as u64);
}

/// A real HTTP/3 client (h3 over quinn) trusting the server's dev
/// certificate (`common::h3_client`): `GET path` with `auth`.
async fn h3_get(server: &Server, path: &str, auth: Option<&str>) -> http::Response<Vec<u8>> {
    use bytes::Buf;
    let (_ep, conn) = common::h3_client(server).await;
    let (mut driver, mut send) = h3::client::new(h3_quinn::Connection::new(conn.clone()))
        .await
        .unwrap();
    let drive = tokio::spawn(async move {
        let _ = std::future::poll_fn(|cx| driver.poll_close(cx)).await;
    });
    let mut req = http::Request::get(format!("https://localhost:{}{path}", server.port));
    if let Some(auth) = auth {
        req = req.header(http::header::AUTHORIZATION, auth);
    }
    let mut stream = send.send_request(req.body(()).unwrap()).await.unwrap();
    stream.finish().await.unwrap();
    let resp = stream.recv_response().await.unwrap();
    let mut body = Vec::new();
    while let Some(mut chunk) = stream.recv_data().await.unwrap() {
        body.extend_from_slice(&chunk.copy_to_bytes(chunk.remaining()));
    }
    drive.abort();
    conn.close(0u32.into(), b"");
    let (parts, ()) = resp.into_parts();
    http::Response::from_parts(parts, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http3_serves_the_same_admin_routes() {
    let server = Server::start(&["--admin-token", TOKEN]);
    within(30, "HTTP/3 requests", async {
        let page = h3_get(&server, "/admin", None).await;
        assert_eq!(page.status(), 200);
        assert!(String::from_utf8_lossy(page.body()).contains("/client/admin.js"));

        let denied = h3_get(&server, "/admin/api/state", Some(&bearer("nope"))).await;
        assert_eq!(denied.status(), 401);
        let h = denied.headers();
        assert!(h["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Bearer"));
        assert_eq!(h["cache-control"], "no-store");

        let ok = h3_get(&server, "/admin/api/state", Some(&bearer(TOKEN))).await;
        assert_eq!(ok.status(), 200);
        assert_eq!(ok.headers()["cache-control"], "no-store");
        let state: serde_json::Value = serde_json::from_slice(ok.body()).unwrap();
        assert_eq!(state["node"]["cert_sha256"], server.cert_sha256.as_str());
    })
    .await;
    assert_eq!(refused(&server).await, 1);
}

#[test]
fn an_empty_token_is_refused_at_startup() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_rally"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--tcp-listen",
            "127.0.0.1:0",
        ])
        .args(["--admin-token", " "])
        .env("RALLY_LOG", "warn")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--admin-token"), "{err}");
}
