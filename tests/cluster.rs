//! Cluster mode against a real Redis (`redis-server`, started by each test
//! on a free port) and real `rally serve` processes: placement, redirects,
//! lease races, a node's death, a drain, a lost lease and a Redis outage.
//! A missing `redis-server` fails these tests (scripts/test.sh installs it).

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{within, Server};
use rally::client::{
    Client, ClientError, ConnectOptions, RetryPolicy, Session, SessionEvent, TransportKind,
};
use rally::protocol::ErrorCode;
use url::Url;

/// Lease TTL of the test clusters: short, so a dead node's rooms move fast.
const TTL: &str = "1500ms";

struct Redis {
    child: Child,
    port: u16,
}

impl Redis {
    fn start() -> Redis {
        let port = free_port();
        Redis::on_port(port)
    }

    fn on_port(port: u16) -> Redis {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("redis-server could not start ({e}): apt-get install redis-server (scripts/test.sh does)")
            });
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "redis-server did not listen on {port}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Redis { child, port }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    async fn con(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.url())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap()
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn node(redis: &Redis, id: &str) -> Server {
    Server::start(&["--redis", &redis.url(), "--node-id", id, "--lease-ttl", TTL])
}

async fn get_json(url: &Url, path: &str) -> (u16, serde_json::Value) {
    let (status, body) = rally::client::http_get(url, path).await.unwrap();
    let v = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
    (status.as_u16(), v)
}

/// The node a `GET /rooms/NAME` on `via` names for `room`.
async fn owner(via: &Server, room: &str) -> String {
    let (status, v) = get_json(&via.url(), &format!("/rooms/{room}")).await;
    assert_eq!(status, 200, "{v}");
    v["node"].as_str().unwrap().to_string()
}

/// A new room that `via` places on node `id` (`TAG-0`, `TAG-1`, … asked in
/// turn: placement spreads them).
async fn room_on(via: &Server, id: &str, tag: &str) -> String {
    for i in 0..20 {
        let room = format!("{tag}-{i}");
        if owner(via, &room).await == id {
            return room;
        }
    }
    panic!("no {tag}-N room landed on {id}");
}

fn opts(via: &Server, t: TransportKind, room: &str, name: &str, locate: bool) -> ConnectOptions {
    let mut o = ConnectOptions::new(via.url(), t, room, name);
    o.locate = locate;
    o
}

/// Which of `nodes` (by id) a client ended on.
fn on<'a>(c: &Client, nodes: &'a [(&'a str, &Server)]) -> &'a str {
    let port = c.server_url().port().unwrap();
    nodes
        .iter()
        .find(|(_, s)| s.port == port)
        .map(|(id, _)| *id)
        .expect("a node of the cluster")
}

async fn eventually<F, Fut>(secs: u64, what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f().await {
        assert!(Instant::now() < deadline, "not within {secs} s: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rooms_spread_over_nodes_and_every_transport_ends_on_the_owner() {
    let redis = Redis::start();
    let (n1, n2, n3) = (node(&redis, "n1"), node(&redis, "n2"), node(&redis, "n3"));
    let nodes = [("n1", &n1), ("n2", &n2), ("n3", &n3)];

    // Every node answers where a new room goes: the least-loaded live node.
    let mut placed = std::collections::BTreeMap::<String, u32>::new();
    for i in 0..6 {
        *placed
            .entry(owner(&n1, &format!("spread-{i}")).await)
            .or_default() += 1;
    }
    assert_eq!(
        placed.len(),
        3,
        "six new rooms over three idle nodes: {placed:?}"
    );
    // Asked again, through another node, the answer stands.
    for i in 0..6 {
        let room = format!("spread-{i}");
        assert_eq!(owner(&n3, &room).await, owner(&n1, &room).await);
    }

    // A room on n2, entered through n1 on each transport: with a lookup
    // first, and without one (n1 answers Hello with a Redirect).
    let room = "game".to_string();
    let home = owner(&n2, &room).await;
    let mut clients = Vec::new();
    for (i, t) in [
        TransportKind::WebTransport,
        TransportKind::WebSocket,
        TransportKind::Http,
    ]
    .into_iter()
    .enumerate()
    {
        for locate in [true, false] {
            // Through every node in turn, the owner included.
            let entry = nodes[(2 * i + locate as usize) % 3].1;
            let c = within(
                15,
                "connect",
                Client::connect(opts(entry, t, &room, &format!("p{i}{locate}"), locate)),
            )
            .await
            .unwrap_or_else(|e| panic!("{t:?} locate={locate}: {e}"));
            assert_eq!(on(&c, &nodes), home, "{t:?} locate={locate}");
            // Nobody else runs a copy.
            clients.push(c);
        }
    }
    // They all share the room: the last one's roster names all six.
    let last = clients.last_mut().unwrap();
    let mut names = std::collections::BTreeSet::new();
    within(10, "roster", async {
        while names.len() < 6 {
            if let rally::protocol::ServerMsg::PlayerJoined { name, .. } =
                last.recv().await.unwrap().msg
            {
                names.insert(name);
            }
        }
    })
    .await;

    // `GET /rooms` on any node lists the room with its players and owner.
    eventually(5, "the room listed with 6 players", || async {
        let (_, v) = get_json(&n3.url(), "/rooms").await;
        v["rooms"].as_array().is_some_and(|rooms| {
            rooms.iter().any(|r| {
                r["name"] == room.as_str() && r["players"] == 6 && r["node"] == home.as_str()
            })
        }) && v["nodes"].as_array().is_some_and(|n| n.len() == 3)
    })
    .await;

    // Lease operations are counted.
    let (_, body) = rally::client::http_get(&n1.url(), "/metrics")
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&body);
    assert!(
        text.contains(r#"rally_cluster_lease_ops_total{op="claim",result="ok"}"#),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_asked_for_one_new_room_at_once_agree_on_one_owner() {
    let redis = Redis::start();
    let (n1, n2, n3) = (node(&redis, "n1"), node(&redis, "n2"), node(&redis, "n3"));
    let nodes = [("n1", &n1), ("n2", &n2), ("n3", &n3)];
    let mut owners = std::collections::BTreeMap::<String, u32>::new();
    const ROUNDS: usize = 40;
    for i in 0..ROUNDS {
        let room = format!("race-{i}");
        // Hello to all three nodes in the same instant, no lookup: each
        // node tries to claim the room for itself.
        let t = [
            TransportKind::WebSocket,
            TransportKind::WebTransport,
            TransportKind::Http,
        ][i % 3];
        let (a, b, c) = tokio::join!(
            Client::connect(opts(&n1, t, &room, "a", false)),
            Client::connect(opts(&n2, t, &room, "b", false)),
            Client::connect(opts(&n3, t, &room, "c", false)),
        );
        let (a, b, c) = (a.unwrap(), b.unwrap(), c.unwrap());
        let owner = on(&a, &nodes);
        assert_eq!(owner, on(&b, &nodes), "{room}: two owners");
        assert_eq!(owner, on(&c, &nodes), "{room}: two owners");
        *owners.entry(owner.to_string()).or_default() += 1;
        // One room, three players in it.
        let ids: std::collections::BTreeSet<_> =
            [a.player_id(), b.player_id(), c.player_id()].into();
        assert_eq!(ids.len(), 3);
    }
    eprintln!("owners of {ROUNDS} contested rooms: {owners:?}");
    // No room runs on two nodes.
    eventually(5, "every room listed once", || async {
        let (_, v) = get_json(&n1.url(), "/rooms").await;
        let rooms = v["rooms"].as_array().cloned().unwrap_or_default();
        let names: Vec<_> = rooms.iter().map(|r| r["name"].as_str().unwrap()).collect();
        let unique: std::collections::BTreeSet<_> = names.iter().collect();
        names.len() == ROUNDS && unique.len() == ROUNDS
    })
    .await;
}

/// Drives a session until it is connected again; its `resumed` flag.
async fn reconnected(s: &mut Session, secs: u64) -> (bool, Duration) {
    within(secs, "reconnect", async {
        loop {
            match s.next().await {
                Some(SessionEvent::Connected {
                    resumed, down_for, ..
                }) => return (resumed, down_for),
                Some(SessionEvent::Closed(e)) => panic!("session closed: {e}"),
                Some(_) => {}
                None => panic!("session ended"),
            }
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_nodes_rooms_are_recreated_on_a_live_node() {
    let redis = Redis::start();
    let (n1, n2, n3) = (node(&redis, "n1"), node(&redis, "n2"), node(&redis, "n3"));
    // A room placed on n2, joined through n1.
    let room = room_on(&n1, "n2", "doomed").await;
    let mut sessions = Vec::new();
    for (i, t) in [TransportKind::WebTransport, TransportKind::WebSocket]
        .into_iter()
        .enumerate()
    {
        let s = Session::connect(
            opts(&n1, t, &room, &format!("s{i}"), true),
            RetryPolicy::default(),
        )
        .await
        .unwrap();
        sessions.push(s);
    }
    // SIGKILL: no drain, no release; its leases expire after the TTL.
    let pid = n2.pid();
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    let killed = Instant::now();
    for s in &mut sessions {
        let (resumed, _) = reconnected(s, 20).await;
        // The room was recreated elsewhere: a fresh join, as documented.
        assert!(!resumed, "a resume on a node that died");
    }
    let took = killed.elapsed();
    // The lease (1.5 s) and the WebTransport client's watchdog (2 s) bound
    // it, plus backoff.
    assert!(took < Duration::from_secs(6), "{took:?}");
    let now_on = owner(&n3, &room).await;
    assert_ne!(now_on, "n2");
    for s in &mut sessions {
        let c = s.client().unwrap();
        assert_eq!(
            c.server_url().port(),
            Some(if now_on == "n1" { n1.port } else { n3.port })
        );
    }
    eprintln!("rooms of a killed node playing again on {now_on} after {took:?}");
    // The dead node leaves the listing once its registration expires.
    eventually(5, "n2 gone from /rooms", || async {
        let (_, v) = get_json(&n1.url(), "/rooms").await;
        v["nodes"]
            .as_array()
            .is_some_and(|n| n.len() == 2 && n.iter().all(|n| n["id"] != "n2"))
    })
    .await;
    drop(n2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draining_node_gets_no_new_rooms_and_its_players_find_theirs_elsewhere() {
    let redis = Redis::start();
    let (n1, mut n2, n3) = (node(&redis, "n1"), node(&redis, "n2"), node(&redis, "n3"));
    let room = room_on(&n1, "n2", "drain").await;
    let mut sessions = Vec::new();
    for (i, t) in [TransportKind::WebSocket, TransportKind::WebTransport]
        .into_iter()
        .enumerate()
    {
        let o = opts(&n1, t, &room, &format!("d{i}"), true);
        sessions.push(Session::connect(o, RetryPolicy::default()).await.unwrap());
    }
    // SIGTERM, and freeze the node (SIGSTOP) the moment its registration
    // says draining: the cluster then sees a draining node that is alive.
    let mut con = redis.con().await;
    let pid = n2.pid() as i32;
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let t0 = Instant::now();
    loop {
        let rec: Option<String> = redis::cmd("GET")
            .arg("rally:node:n2")
            .query_async(&mut con)
            .await
            .unwrap();
        let rec: serde_json::Value = serde_json::from_str(&rec.expect("n2 registered")).unwrap();
        if rec["draining"] == true {
            unsafe { libc::kill(pid, libc::SIGSTOP) };
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "n2 never said draining"
        );
    }
    let (_, v) = get_json(&n1.url(), "/rooms").await;
    let n2_listed = v["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["id"] == "n2")
        .cloned()
        .expect("a draining node is still listed");
    assert_eq!(n2_listed["draining"], true);
    // No new room lands on it, whoever is asked.
    for i in 0..12 {
        let via = if i % 2 == 0 { &n1 } else { &n3 };
        let got = owner(via, &format!("after-drain-{i}")).await;
        assert_ne!(got, "n2", "a new room placed on a draining node");
    }
    unsafe { libc::kill(pid, libc::SIGCONT) };
    let resumed_at = Instant::now();
    for s in &mut sessions {
        let (resumed, _) = reconnected(s, 15).await;
        assert!(!resumed);
        let port = s.client().unwrap().server_url().port();
        assert!(port == Some(n1.port) || port == Some(n3.port), "{port:?}");
    }
    // The node released the room on its way down: no wait for the lease.
    assert!(
        resumed_at.elapsed() < Duration::from_millis(1500),
        "{:?}",
        resumed_at.elapsed()
    );
    let st = tokio::task::spawn_blocking(move || n2.terminate(10))
        .await
        .unwrap();
    assert!(st.is_some_and(|s| s.success()), "{st:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_whose_lease_went_elsewhere_is_closed_with_a_redirect() {
    let redis = Redis::start();
    let (n1, n2) = (node(&redis, "n1"), node(&redis, "n2"));
    let nodes = [("n1", &n1), ("n2", &n2)];
    let room = "split";
    let mut s = Session::connect(
        opts(&n1, TransportKind::WebTransport, room, "e", false),
        RetryPolicy::default(),
    )
    .await
    .unwrap();
    assert_eq!(on(s.client().unwrap(), &nodes), "n1");
    // As after a partition healed: n2 holds the lease of a room n1 runs.
    let mut con = redis.con().await;
    let _: () = redis::cmd("SET")
        .arg("rally:room:split")
        .arg("n2")
        .arg("PX")
        .arg(60_000)
        .query_async(&mut con)
        .await
        .unwrap();
    let dropped = within(10, "evicted", async {
        loop {
            match s.next().await {
                Some(SessionEvent::Dropped(e)) => return e,
                Some(SessionEvent::Closed(e)) => panic!("closed: {e}"),
                _ => {}
            }
        }
    })
    .await;
    assert!(
        matches!(dropped, ClientError::Closed { code: Some(c), .. } if c == ErrorCode::Moved.close_code() as u64)
            || matches!(dropped, ClientError::Moved(_)),
        "{dropped:?}"
    );
    let (resumed, _) = reconnected(&mut s, 10).await;
    assert!(!resumed);
    assert_eq!(on(s.client().unwrap(), &nodes), "n2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_rooms_survive_a_redis_outage_and_new_rooms_wait_for_it() {
    let mut redis = Redis::start();
    let port = redis.port;
    let n1 = node(&redis, "n1");
    let mut c = Client::connect(opts(&n1, TransportKind::WebSocket, "steady", "s", true))
        .await
        .unwrap();
    redis.stop();
    // The running room keeps playing for longer than its lease.
    let t0 = Instant::now();
    let mut snapshots = 0;
    while t0.elapsed() < Duration::from_secs(3) {
        let m = within(2, "a snapshot during the outage", c.recv())
            .await
            .unwrap();
        if common::snapshot(&m.msg).is_some() {
            snapshots += 1;
        }
    }
    assert!(snapshots > 100, "{snapshots} snapshots in 3 s");
    // A new player may still join it: it runs here.
    Client::connect(opts(&n1, TransportKind::WebTransport, "steady", "t", false))
        .await
        .unwrap();
    // A new room cannot be placed: a clear error, over HTTP and Hello.
    let (status, v) = get_json(&n1.url(), "/rooms/fresh").await;
    assert_eq!(status, 503, "{v}");
    assert_eq!(v["error"], "unavailable");
    match Client::connect(opts(&n1, TransportKind::WebSocket, "fresh", "f", false)).await {
        Err(ClientError::Refused { code, reason }) => {
            assert_eq!(code, ErrorCode::Unavailable.as_u16());
            assert!(reason.contains("unreachable"), "{reason}");
        }
        other => panic!(
            "expected unavailable, got {:?}",
            other.map(|c| c.player_id())
        ),
    }
    // Redis back (empty, as after a restart without persistence): the node
    // registers again, takes its room's lease back, and new rooms work.
    let redis = Redis::on_port(port);
    eventually(10, "new rooms placed again", || async {
        get_json(&n1.url(), "/rooms/fresh").await.0 == 200
    })
    .await;
    let mut con = redis.con().await;
    eventually(5, "the running room's lease taken back", || {
        let mut con = con.clone();
        async move {
            let v: Option<String> = redis::cmd("GET")
                .arg("rally:room:steady")
                .query_async(&mut con)
                .await
                .unwrap();
            v.as_deref() == Some("n1")
        }
    })
    .await;
    let _: Option<String> = redis::cmd("GET")
        .arg("rally:room:steady")
        .query_async(&mut con)
        .await
        .unwrap();
    // And the room never stopped.
    assert!(c.recv().await.is_ok());
}

#[test]
fn a_bad_redis_url_stops_startup_with_an_error_naming_it() {
    let bin = env!("CARGO_BIN_EXE_rally");
    let dead = format!("redis://127.0.0.1:{}", free_port());
    for url in [dead.as_str(), "not a url"] {
        let out = Command::new(bin)
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--tcp-listen",
                "127.0.0.1:0",
            ])
            .args([
                "--cert-dir",
                &std::env::temp_dir()
                    .join("rally-cluster-bad")
                    .to_string_lossy(),
            ])
            .args(["--redis", url])
            .stdout(Stdio::null())
            .output()
            .unwrap();
        assert!(!out.status.success(), "{url}: started anyway");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(&format!("--redis {url}")), "{url}: {err}");
    }
}

/// Percentile of sorted `v` (milliseconds).
fn pct(v: &[f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    (v[i] * 100.0).round() / 100.0
}

async fn redis_info(con: &mut redis::aio::MultiplexedConnection, field: &str) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("all")
        .query_async(con)
        .await
        .unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// Calls per Redis command (`INFO commandstats`).
async fn redis_calls(
    con: &mut redis::aio::MultiplexedConnection,
) -> std::collections::BTreeMap<String, u64> {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(con)
        .await
        .unwrap();
    info.lines()
        .filter_map(|l| {
            let (name, rest) = l.strip_prefix("cmdstat_")?.split_once(':')?;
            let calls = rest
                .strip_prefix("calls=")?
                .split(',')
                .next()?
                .parse()
                .ok()?;
            Some((name.to_string(), calls))
        })
        .collect()
}

/// Joins `rooms` × `per_room` players, each through a node picked at
/// random from `entries`, 16 at a time; the join times (ms) and clients.
async fn join_all(
    entries: &[Url],
    rooms: &[String],
    per_room: usize,
    t: TransportKind,
) -> (Vec<f64>, Vec<Client>) {
    use futures::StreamExt;
    let jobs: Vec<(String, usize)> = rooms
        .iter()
        .flat_map(|r| (0..per_room).map(move |i| (r.clone(), i)))
        .collect();
    let results: Vec<(f64, Client)> = futures::stream::iter(jobs)
        .map(|(room, i)| {
            let entry = entries[rand::random::<u32>() as usize % entries.len()].clone();
            async move {
                let mut o = ConnectOptions::new(entry, t, &room, &format!("b{i}"));
                o.watchdog = None;
                let t0 = Instant::now();
                let c = Client::connect(o).await.unwrap();
                (t0.elapsed().as_secs_f64() * 1000.0, c)
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    let (mut ms, clients): (Vec<f64>, Vec<Client>) = results.into_iter().unzip();
    ms.sort_by(|a, b| a.partial_cmp(b).unwrap());
    (ms, clients)
}

/// BENCHMARKS.md "Cluster": three nodes and one Redis on this machine, 300
/// rooms joined through random nodes, against a single node in the same
/// run; Redis operations per join; the rooms that move when a node dies.
/// Not in CI: `cargo test --release --test cluster -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn cluster_benchmark() {
    const ROOMS: usize = 300;
    const PER_ROOM: usize = 2;
    const ROUNDS: usize = 3;
    let t = TransportKind::WebSocket;
    let redis = Redis::start();
    let ttl = "5s";
    let cluster: Vec<Server> = ["n1", "n2", "n3"]
        .iter()
        .map(|id| {
            Server::start(&[
                "--redis",
                &redis.url(),
                "--node-id",
                id,
                "--lease-ttl",
                ttl,
                "--max-connections-per-ip",
                "10000",
            ])
        })
        .collect();
    let single = Server::start(&["--max-connections-per-ip", "10000"]);
    let entries: Vec<Url> = cluster.iter().map(|s| s.url()).collect();
    let mut con = redis.con().await;
    let memory_before_rooms = redis_info(&mut con, "used_memory").await;

    // Redis's own background: registrations and renewals.
    let c0 = redis_info(&mut con, "total_commands_processed").await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let idle_rate = (redis_info(&mut con, "total_commands_processed").await - c0) as f64 / 3.0;

    // Alternate rounds: a third of the rooms on the cluster, then as many
    // on the single node, three times.
    let mut cluster_ms = Vec::new();
    let mut single_ms = Vec::new();
    let mut clients = Vec::new();
    let mut join_cmds = 0.0;
    let calls_before = redis_calls(&mut con).await;
    let mut joins_secs = 0.0;
    let per = ROOMS / ROUNDS;
    for round in 0..ROUNDS {
        let rooms: Vec<String> = (round * per..(round + 1) * per)
            .map(|i| format!("bench-{i}"))
            .collect();
        let before = redis_info(&mut con, "total_commands_processed").await;
        let t0 = Instant::now();
        let (ms, c) = join_all(&entries, &rooms, PER_ROOM, t).await;
        let secs = t0.elapsed().as_secs_f64();
        joins_secs += secs;
        let after = redis_info(&mut con, "total_commands_processed").await;
        // Minus the background and the two INFO calls.
        join_cmds += (after - before) as f64 - idle_rate * secs - 1.0;
        cluster_ms.extend(ms);
        clients.extend(c);
        let (ms, c) = join_all(&[single.url()], &rooms, PER_ROOM, t).await;
        single_ms.extend(ms);
        clients.extend(c);
    }
    let calls_after = redis_calls(&mut con).await;
    cluster_ms.sort_by(|a, b| a.partial_cmp(b).unwrap());
    single_ms.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let joins = (ROOMS * PER_ROOM) as f64;
    // Per command, over the whole join phase (single-node rounds included:
    // the background runs on through them), per cluster join.
    let per_command: std::collections::BTreeMap<String, f64> = calls_after
        .iter()
        .filter(|(name, _)| !matches!(name.as_str(), "info"))
        .map(|(name, after)| {
            let d = after - calls_before.get(name).copied().unwrap_or(0);
            (name.clone(), (d as f64 / joins * 100.0).round() / 100.0)
        })
        .filter(|(_, v)| *v > 0.0)
        .collect();
    let used_memory = redis_info(&mut con, "used_memory").await;
    let keys: u64 = redis::cmd("DBSIZE").query_async(&mut con).await.unwrap();
    let record_bytes: u64 = redis::cmd("STRLEN")
        .arg("rally:node:n1")
        .query_async(&mut con)
        .await
        .unwrap();
    let lease_bytes: u64 = redis::cmd("MEMORY")
        .arg("USAGE")
        .arg("rally:room:bench-0")
        .query_async(&mut con)
        .await
        .unwrap_or(0);

    // Where the rooms are; then one node dies.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (_, v) = get_json(&entries[0], "/rooms").await;
    let before: std::collections::BTreeMap<String, String> = v["rooms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["name"].as_str().unwrap().to_string(),
                r["node"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(before.len(), ROOMS, "every room listed once");
    let per_node: std::collections::BTreeMap<&str, usize> =
        before.values().fold(Default::default(), |mut m, n| {
            *m.entry(n.as_str()).or_default() += 1;
            m
        });
    let mut cluster = cluster;
    let dead = cluster.remove(1);
    unsafe { libc::kill(dead.pid() as i32, libc::SIGKILL) };
    let killed = Instant::now();
    let live: Vec<Url> = cluster.iter().map(|s| s.url()).collect();
    // Every room of the dead node placed anew (on a lookup), the others
    // untouched.
    let mut moved = 0;
    let mut stayed = 0;
    for (room, node) in &before {
        let (_, v) = loop {
            let (st, v) = get_json(&live[0], &format!("/rooms/{room}")).await;
            if st == 200 && v["node"] != "n2" {
                break (st, v);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        if node == "n2" {
            moved += 1;
        } else {
            assert_eq!(
                v["node"].as_str().unwrap(),
                node,
                "{room} moved off a live node"
            );
            stayed += 1;
        }
    }
    let all_placed = killed.elapsed();
    let report = serde_json::json!({
        "rooms": ROOMS, "players_per_room": PER_ROOM, "transport": "ws", "lease_ttl": ttl,
        "join_ms_cluster": {"p50": pct(&cluster_ms, 0.5), "p99": pct(&cluster_ms, 0.99), "max": pct(&cluster_ms, 1.0)},
        "join_ms_single": {"p50": pct(&single_ms, 0.5), "p99": pct(&single_ms, 0.99), "max": pct(&single_ms, 1.0)},
        "redis_commands_per_join": (join_cmds / joins * 100.0).round() / 100.0,
        "redis_background_commands_per_sec": (idle_rate * 10.0).round() / 10.0,
        "redis_calls_per_join_by_command_incl_background": per_command,
        "cluster_join_phase_secs": (joins_secs * 10.0).round() / 10.0,
        "redis_used_memory_bytes": used_memory, "redis_used_memory_before_rooms": memory_before_rooms, "redis_keys": keys,
        "node_record_bytes_n1": record_bytes, "lease_key_memory_bytes": lease_bytes,
        "rooms_per_node": per_node,
        "node_killed": "n2", "rooms_moved": moved, "rooms_stayed": stayed,
        "all_rooms_placed_again_after_ms": all_placed.as_millis(),
    });
    println!("{report}");
    drop(clients);
}

/// `GET path` with `Authorization: Bearer token` over plain HTTP/1.1.
async fn get_with_token(url: &Url, path: &str, token: &str) -> serde_json::Value {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect((url.host_str().unwrap(), url.port().unwrap()))
        .await
        .unwrap();
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.unwrap();
    let text = String::from_utf8_lossy(&buf);
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    // The body may be chunked: take the JSON object inside.
    let start = body.find('{').unwrap();
    let end = body.rfind('}').unwrap();
    serde_json::from_str(&body[start..=end]).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_page_lists_every_node_of_the_cluster() {
    let redis = Redis::start();
    let n1 = Server::start(&[
        "--redis",
        &redis.url(),
        "--node-id",
        "n1",
        "--lease-ttl",
        TTL,
        "--admin-token",
        "t0ken",
    ]);
    let _n2 = node(&redis, "n2");
    let _c = Client::connect(opts(&n1, TransportKind::WebSocket, "adm", "a", true))
        .await
        .unwrap();
    eventually(5, "both nodes on the admin page", || async {
        let v = get_with_token(&n1.url(), "/admin/api/state", "t0ken").await;
        let ids: Vec<String> = v["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["id"].as_str().unwrap_or("").to_string())
            .collect();
        ids.contains(&"n1".to_string()) && ids.contains(&"n2".to_string()) && ids.len() == 2
    })
    .await;
}
