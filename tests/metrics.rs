//! `/metrics` against the real binary: real clients on all three transports
//! (WebTransport, WebSocket, HTTP streaming) move the counters they should,
//! by the exact amounts where the test controls the traffic, and the
//! Grafana dashboard in docs/ queries only metrics that the output has.
//! (The adversarial suite parses the same output with the Python
//! `prometheus_client` OpenMetrics parser.)

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use bytes::Bytes;
use common::{within, Server};
use rally::client::{Channel, Client, TransportKind};
use rally::protocol::ClientMsg;

/// One scrape: every sample, by name and labels.
struct Scrape {
    text: String,
    samples: HashMap<(String, BTreeMap<String, String>), f64>,
    /// `# TYPE` names (families).
    families: HashSet<String>,
}

impl Scrape {
    /// `name{labels}`'s value; a missing sample fails the test.
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let key = (
            name.to_string(),
            labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
        *self
            .samples
            .get(&key)
            .unwrap_or_else(|| panic!("no sample {name}{labels:?} in:\n{}", self.text))
    }

    fn t(&self, name: &str, transport: &str) -> f64 {
        self.get(name, &[("transport", transport)])
    }

    fn names(&self) -> HashSet<&str> {
        self.samples.keys().map(|(n, _)| n.as_str()).collect()
    }
}

/// Parses the OpenMetrics text strictly enough for this test: every line
/// is a `#` line or `name{k="v",...} value`, the text ends with `# EOF`,
/// and every sample belongs to a family declared by `# TYPE`.
fn parse(text: &str) -> Scrape {
    assert!(text.ends_with("# EOF\n"), "no # EOF at the end");
    let mut samples = HashMap::new();
    let mut families = HashSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let name = rest.split(' ').next().unwrap();
            families.insert(name.to_string());
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect("name value");
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("value: {line}"));
        let (name, labels) = match series.split_once('{') {
            None => (series, BTreeMap::new()),
            Some((name, rest)) => {
                let rest = rest.strip_suffix('}').expect("closing brace");
                let labels = rest
                    .split(',')
                    .filter(|kv| !kv.is_empty())
                    .map(|kv| {
                        let (k, v) = kv.split_once('=').expect("k=v");
                        let v = v.strip_prefix('"').and_then(|v| v.strip_suffix('"'));
                        (k.to_string(), v.expect("quoted value").to_string())
                    })
                    .collect();
                (name, labels)
            }
        };
        let family = ["_total", "_bucket", "_count", "_sum"]
            .iter()
            .find_map(|s| name.strip_suffix(s).filter(|f| families.contains(*f)))
            .unwrap_or(name);
        assert!(families.contains(family), "{name} has no # TYPE");
        let dup = samples.insert((name.to_string(), labels), value);
        assert!(dup.is_none(), "duplicate sample: {line}");
    }
    Scrape {
        text: text.to_string(),
        samples,
        families,
    }
}

async fn scrape(server: &Server) -> Scrape {
    let (status, body) = rally::client::http_get(&server.url(), "/metrics")
        .await
        .unwrap();
    assert!(status.is_success(), "/metrics: {status}");
    parse(std::str::from_utf8(&body).expect("UTF-8"))
}

async fn connect(
    server: &Server,
    kind: TransportKind,
    name: &str,
    fallback: Option<&str>,
) -> Client {
    let mut opts = server.options(kind, "m", name);
    opts.fallback = fallback.map(str::to_string);
    Client::connect(opts).await.unwrap()
}

/// Reads until `n` snapshots have arrived.
async fn snapshots(c: &mut Client, n: usize) {
    let mut seen = 0;
    while seen < n {
        let r = c.recv().await.unwrap();
        seen += matches!(r.msg, rally::protocol::ServerMsg::Snapshot(_)) as usize;
    }
}

/// Sends `n` pings and reads until their `n` pongs came back.
async fn ping(c: &mut Client, n: usize) {
    for _ in 0..n {
        c.ping(Channel::Reliable).await.unwrap();
    }
    let mut pongs = 0;
    while pongs < n {
        let r = c.recv().await.unwrap();
        pongs += matches!(r.msg, rally::protocol::ServerMsg::Pong { .. }) as usize;
    }
}

const T: [(TransportKind, &str); 3] = [
    (TransportKind::WebTransport, "wt"),
    (TransportKind::WebSocket, "ws"),
    (TransportKind::Http, "http"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_move_by_transport_as_real_clients_use_them() {
    let server = Server::start(&[]);
    let before = scrape(&server).await;
    for (_, t) in T {
        assert_eq!(before.t("rally_sessions_opened_total", t), 0.0);
        assert_eq!(before.t("rally_sessions_open", t), 0.0);
    }
    assert_eq!(before.get("rally_rooms", &[]), 0.0);
    assert!(before.families.contains("rally_cluster_lease_ops"));

    within(60, "the scenario", async {
        // One client per transport, two of them reporting a fallback, and a
        // second WebSocket client with a reason the server does not know.
        let mut wt = connect(&server, TransportKind::WebTransport, "wt", None).await;
        let mut ws = connect(&server, TransportKind::WebSocket, "ws", Some("wt_failed")).await;
        let mut http = connect(&server, TransportKind::Http, "http", Some("ws_failed")).await;
        let mut odd = connect(&server, TransportKind::WebSocket, "odd", Some("x{\"y\"}")).await;
        for c in [&mut wt, &mut ws, &mut http, &mut odd] {
            snapshots(c, 3).await;
        }

        let s = scrape(&server).await;
        for (t, n) in [("wt", 1.0), ("ws", 2.0), ("http", 1.0)] {
            assert_eq!(s.t("rally_sessions_opened_total", t), n, "{t}");
            assert_eq!(s.t("rally_sessions_open", t), n, "{t}");
            assert_eq!(s.t("rally_players", t), n, "{t}");
            assert_eq!(s.t("rally_connect_seconds_count", t), n, "{t}");
            // Hello, and nothing else yet.
            assert_eq!(s.t("rally_messages_in_total", t), n, "{t}");
            assert!(s.t("rally_snapshots_sent_total", t) >= 3.0 * n, "{t}");
            // Welcome, roster, snapshots.
            assert!(s.t("rally_messages_out_total", t) >= 5.0 * n, "{t}");
            assert!(s.t("rally_bytes_out_total", t) > s.t("rally_messages_out_total", t));
        }
        assert_eq!(s.get("rally_rooms", &[]), 1.0);
        let fb =
            |t: &str, r: &str| s.get("rally_fallbacks_total", &[("transport", t), ("reason", r)]);
        assert_eq!(fb("ws", "wt_failed"), 1.0);
        assert_eq!(fb("ws", "other"), 1.0);
        assert_eq!(fb("http", "ws_failed"), 1.0);
        assert_eq!(fb("wt", "wt_failed"), 0.0);
        assert_eq!(fb("ws", "wt_timeout"), 0.0);
        assert!(s.get("rally_tick_duration_seconds_count", &[]) > 0.0);
        assert!(s.get("rally_tick_lateness_seconds_count", &[]) > 0.0);

        // Exact traffic: three pings in, three pongs (among snapshots) out.
        let ping_len = ClientMsg::Ping { client_time_us: 1 }.to_bytes().len() as f64;
        for c in [&mut wt, &mut ws, &mut http] {
            ping(c, 3).await;
        }
        let s2 = scrape(&server).await;
        for t in ["wt", "ws", "http"] {
            let d = |name: &str| s2.t(name, t) - s.t(name, t);
            assert_eq!(d("rally_messages_in_total"), 3.0, "{t}");
            assert_eq!(d("rally_bytes_in_total"), 3.0 * ping_len, "{t}");
            assert!(d("rally_messages_out_total") >= 3.0, "{t}");
        }

        // Round-trip samples: one per session per second, on each transport.
        within(10, "an RTT sample on every transport", async {
            loop {
                let s = scrape(&server).await;
                if T.iter()
                    .all(|(_, t)| s.t("rally_rtt_seconds_count", t) > 0.0)
                {
                    // Loopback: every sample well under a second.
                    for (_, t) in T {
                        let le = |b: &str| {
                            s.get("rally_rtt_seconds_bucket", &[("transport", t), ("le", b)])
                        };
                        assert_eq!(le("1.0"), le("+Inf"), "{t}");
                    }
                    break;
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        })
        .await;

        // Resumes: ws drops and comes back on HTTP (another transport), wt
        // drops and comes back on WebTransport (the same).
        let ws_state = ws.resume_state();
        drop(ws);
        let wt_state = wt.resume_state();
        drop(wt);
        tokio::time::sleep(Duration::from_millis(300)).await;
        let mut opts = server.options(TransportKind::Http, "m", "ws");
        opts.resume = Some(ws_state);
        let back = Client::connect(opts).await.unwrap();
        assert!(back.resumed());
        let mut opts = server.options(TransportKind::WebTransport, "m", "wt");
        opts.resume = Some(wt_state);
        let wt_back = Client::connect(opts).await.unwrap();
        assert!(wt_back.resumed());

        // An error: a message the protocol does not know.
        odd.send_raw(Bytes::from_static(&[0x7e, 1, 2]), Channel::Reliable)
            .await
            .unwrap();
        within(5, "the error counted", async {
            loop {
                let s = scrape(&server).await;
                if s.get("rally_errors_total", &[("code", "unknown_message")]) == 1.0 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
        .await;
        // The server ends odd's session after telling it why.
        drop(odd);
        within(5, "odd's session gone", async {
            while scrape(&server).await.t("rally_sessions_open", "ws") > 0.0 {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
        .await;

        let s3 = scrape(&server).await;
        let resumes =
            |t: &str, p: &str| s3.get("rally_resumes_total", &[("transport", t), ("previous", p)]);
        assert_eq!(resumes("http", "other"), 1.0);
        assert_eq!(resumes("wt", "same"), 1.0);
        assert_eq!(resumes("ws", "same") + resumes("ws", "other"), 0.0);
        assert_eq!(resumes("wt", "other") + resumes("http", "same"), 0.0);
        assert_eq!(s3.t("rally_sessions_opened_total", "http"), 2.0);
        assert_eq!(s3.t("rally_sessions_opened_total", "wt"), 2.0);
        // A resume is not a fresh join: no fallback counted for it.
        assert_eq!(
            s3.get(
                "rally_fallbacks_total",
                &[("transport", "http"), ("reason", "ws_failed")]
            ),
            1.0
        );
        // Live now: wt_back, http and back (both HTTP); odd's session ended.
        assert_eq!(s3.t("rally_sessions_open", "wt"), 1.0);
        assert_eq!(s3.t("rally_sessions_open", "http"), 2.0);
        assert_eq!(s3.t("rally_sessions_open", "ws"), 0.0);
        assert_eq!(s3.t("rally_players", "ws"), 0.0);
        // Counters never go back: ended sessions' traffic stays counted.
        for (_, t) in T {
            for name in ["rally_messages_in_total", "rally_bytes_out_total"] {
                assert!(s3.t(name, t) >= s2.t(name, t), "{name} {t}");
            }
        }
        drop((http, back, wt_back));
    })
    .await;
}

/// Every metric the dashboard queries is in the output of a server that has
/// served one session per transport.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_grafana_dashboard_queries_only_metrics_that_exist() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/grafana-dashboard.json");
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).expect("valid JSON");
    let mut exprs = Vec::new();
    collect_exprs(&dashboard, &mut exprs);
    assert!(exprs.len() >= 10, "only {} queries", exprs.len());

    let server = Server::start(&[]);
    let mut clients = Vec::new();
    for (kind, _) in T {
        clients.push(connect(&server, kind, &format!("{kind:?}"), None).await);
    }
    let s = scrape(&server).await;
    let names = s.names();
    let mut queried = HashSet::new();
    for e in &exprs {
        let mut rest = e.as_str();
        while let Some(i) = rest.find("rally_") {
            let tail = &rest[i..];
            let end = tail
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(tail.len());
            queried.insert(tail[..end].to_string());
            rest = &tail[end..];
        }
    }
    for q in &queried {
        let family = ["_total", "_bucket", "_count", "_sum"]
            .iter()
            .find_map(|x| q.strip_suffix(x))
            .unwrap_or(q);
        assert!(
            names.contains(q.as_str()) || s.families.contains(family),
            "the dashboard queries {q}, which /metrics does not have"
        );
    }
    // And the main families are on it.
    for f in [
        "rally_sessions_open",
        "rally_rtt_seconds_bucket",
        "rally_tick_duration_seconds_bucket",
        "rally_errors_total",
        "rally_fallbacks_total",
        "rally_cluster_lease_ops_total",
    ] {
        assert!(queried.contains(f), "the dashboard does not show {f}");
    }
    drop(clients);
}

fn collect_exprs(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, v) in m {
                match (k.as_str(), v) {
                    ("expr", serde_json::Value::String(s)) => out.push(s.clone()),
                    _ => collect_exprs(v, out),
                }
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|v| collect_exprs(v, out)),
        _ => {}
    }
}
