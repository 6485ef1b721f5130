//! Test harness: the real `rally` binary on ephemeral ports, and helpers to
//! drive native clients against it.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use rally::client::{Client, ConnectOptions, TransportKind};
use url::Url;

pub struct Server {
    child: Child,
    pub port: u16,
    pub cert_sha256: String,
    pub cert_dir: PathBuf,
}

impl Server {
    pub fn start(extra: &[&str]) -> Server {
        let cert_dir = std::env::temp_dir().join(format!(
            "rally-test-{}-{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        let mut child = Command::new(env!("CARGO_BIN_EXE_rally"))
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--tcp-listen",
                "127.0.0.1:0",
            ])
            .arg("--cert-dir")
            .arg(&cert_dir)
            .args(extra)
            .env(
                "RALLY_LOG",
                std::env::var("RALLY_TEST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn rally serve");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read the listening line");
        let v: serde_json::Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("bad listening line {line:?}: {e}"));
        let udp: std::net::SocketAddr = v["udp"].as_str().unwrap().parse().unwrap();
        let tcp: std::net::SocketAddr = v["tcp"].as_str().unwrap().parse().unwrap();
        assert_eq!(udp.port(), tcp.port(), "UDP and TCP share one port number");
        Server {
            child,
            port: udp.port(),
            cert_sha256: v["cert_sha256"].as_str().unwrap().to_string(),
            cert_dir,
        }
    }

    pub fn url(&self) -> Url {
        Url::parse(&format!("http://127.0.0.1:{}", self.port)).unwrap()
    }

    pub async fn connect(&self, transport: TransportKind, room: &str, name: &str) -> Client {
        let opts = ConnectOptions::new(self.url(), transport, room, name);
        Client::connect(opts)
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
}

impl Server {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM and waits up to `secs` for the process to exit.
    pub fn terminate(&mut self, secs: u64) -> Option<std::process::ExitStatus> {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success());
        let deadline = std::time::Instant::now() + Duration::from_secs(secs);
        while std::time::Instant::now() < deadline {
            if let Some(st) = self.child.try_wait().expect("try_wait") {
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
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

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.cert_dir);
    }
}

pub const BOTH: [TransportKind; 2] = [TransportKind::WebTransport, TransportKind::WebSocket];

/// Runs `f` with a deadline so a hung test fails instead of hanging CI.
pub async fn within<T>(secs: u64, what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(secs), f)
        .await
        .unwrap_or_else(|_| panic!("timed out: {what}"))
}
