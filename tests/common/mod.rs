//! Test harness: the real `rally` binary on ephemeral ports (started with
//! `rally::launch`, as the tools start it), and helpers to drive native
//! clients against it.
#![allow(dead_code)]

use std::time::Duration;

use rally::client::{Client, ConnectOptions, TransportKind};
use rally::launch::{Launch, ServerProcess};
use rally::protocol::{ServerMsg, Snapshot};
use url::Url;

pub struct Server {
    pub proc: ServerProcess,
    pub port: u16,
    pub cert_sha256: String,
}

impl Server {
    /// `rally serve` (the default game, dots) with `extra` flags.
    pub fn start(extra: &[&str]) -> Server {
        let mut launch = Launch::rally(env!("CARGO_BIN_EXE_rally"));
        launch.args(extra).env(
            "RALLY_LOG",
            std::env::var("RALLY_TEST_LOG").unwrap_or_else(|_| "warn".into()),
        );
        let proc = launch.spawn().expect("start rally serve");
        let l = &proc.listening;
        assert_eq!(
            l.udp.port(),
            l.tcp.port(),
            "UDP and TCP share one port number"
        );
        Server {
            port: l.tcp.port(),
            cert_sha256: l.cert_sha256.clone(),
            proc,
        }
    }

    pub fn url(&self) -> Url {
        self.proc.url()
    }

    pub fn cert_dir(&self) -> std::path::PathBuf {
        self.proc
            .cert_dir()
            .expect("a dev certificate dir")
            .to_path_buf()
    }

    pub async fn connect(&self, transport: TransportKind, room: &str, name: &str) -> Client {
        Client::connect(self.options(transport, room, name))
            .await
            .unwrap_or_else(|e| panic!("{transport:?} connect: {e}"))
    }

    pub async fn health(&self) -> serde_json::Value {
        let (status, body) = rally::client::http_get(&self.url(), "/health")
            .await
            .unwrap();
        assert!(status.is_success());
        serde_json::from_slice(&body).unwrap()
    }

    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    /// Sends SIGTERM and waits up to `secs` for the process to exit.
    pub fn terminate(&mut self, secs: u64) -> Option<std::process::ExitStatus> {
        self.proc.terminate(Duration::from_secs(secs))
    }

    /// Resident set size of the server process, in KiB.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    }

    pub fn options(&self, transport: TransportKind, room: &str, name: &str) -> ConnectOptions {
        ConnectOptions::new(self.url(), transport, room, name)
    }
}

pub const BOTH: [TransportKind; 2] = [TransportKind::WebTransport, TransportKind::WebSocket];

/// Runs `f` with a deadline so a hung test fails instead of hanging CI.
pub async fn within<T>(secs: u64, what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(secs), f)
        .await
        .unwrap_or_else(|_| panic!("timed out: {what}"))
}

/// The snapshot in `msg`, if it is one.
pub fn snapshot(msg: &ServerMsg) -> Option<&Snapshot> {
    match msg {
        ServerMsg::Snapshot(s) => Some(s),
        _ => None,
    }
}

/// The dots players (id, x, y) of a snapshot.
pub fn dots(s: &Snapshot) -> Vec<(u32, f32, f32)> {
    rally::games::dots::players(&s.payload)
        .expect("a dots snapshot")
        .into_iter()
        .map(|(id, d)| (id, d.x, d.y))
        .collect()
}

/// A real HTTP/3 client (h3 over quinn) that trusts the server's dev cert.
pub async fn h3_client(server: &Server) -> (quinn::Endpoint, quinn::Connection) {
    let pem = std::fs::read(server.cert_dir().join("dev.pem")).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pemfile::certs(&mut pem.as_slice()) {
        roots.add(c.unwrap()).unwrap();
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![b"h3".to_vec()];
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap();
    let mut ep = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    ep.set_default_client_config(quinn::ClientConfig::new(std::sync::Arc::new(crypto)));
    let addr = format!("127.0.0.1:{}", server.port).parse().unwrap();
    let conn = ep.connect(addr, "localhost").unwrap().await.unwrap();
    (ep, conn)
}
