//! Starting a Rally server as a child process and reading where it
//! listens: what tests, the soak, the lab and the load generator do, and
//! what a game developer's own end-to-end tests can do with their binary.
//!
//! A Rally server prints one JSON line on stdout once it listens
//! (`{"event":"listening","udp":…,"tcp":…,"cert_sha256":…}`, see
//! [`crate::server::Listening`]); this module starts a process, waits for
//! that line and hands back its typed form.

use std::ffi::OsString;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use url::Url;

/// How long a server may take to print its listening line.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);

/// The listening line, parsed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct Listening {
    pub udp: SocketAddr,
    pub tcp: SocketAddr,
    /// SHA-256 of the certificate served now, as hex.
    pub cert_sha256: String,
}

impl Listening {
    pub fn parse(line: &str) -> anyhow::Result<Listening> {
        #[derive(serde::Deserialize)]
        struct Line {
            event: String,
            #[serde(flatten)]
            listening: Listening,
        }
        let l: Line = serde_json::from_str(line.trim())
            .with_context(|| format!("not a listening line: {line:?}"))?;
        if l.event != "listening" {
            bail!("expected the listening event, got {:?}", l.event);
        }
        Ok(l.listening)
    }

    /// The server's HTTP origin (on its TCP address).
    pub fn url(&self) -> Url {
        // A SocketAddr always formats as a valid URL authority.
        Url::parse(&format!("http://{}", self.tcp)).expect("socket address URL")
    }

    /// The certificate hash as bytes, to pin it.
    pub fn cert_hash(&self) -> Option<[u8; 32]> {
        hex::decode(&self.cert_sha256).ok()?.try_into().ok()
    }
}

/// How to start a server: a program and its arguments.
#[derive(Debug, Clone)]
pub struct Launch {
    program: PathBuf,
    args: Vec<OsString>,
    envs: Vec<(OsString, OsString)>,
    /// A development certificate directory made for this launch, removed
    /// when the process is dropped.
    cert_dir: Option<PathBuf>,
    /// Where the child's stderr goes (inherited by default).
    quiet: bool,
}

impl Launch {
    /// `BIN serve` on ephemeral loopback ports (UDP and TCP on one port
    /// number), with a fresh development certificate directory.
    pub fn rally(bin: impl AsRef<Path>) -> Launch {
        let cert_dir = std::env::temp_dir().join(format!(
            "rally-{}-{:08x}",
            std::process::id(),
            rand::random::<u32>()
        ));
        let mut l = Launch::program(bin);
        l.args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--tcp-listen",
            "127.0.0.1:0",
        ]);
        l.arg("--cert-dir").arg(&cert_dir);
        l.cert_dir = Some(cert_dir);
        l
    }

    /// Any program that runs a Rally server and prints the listening line
    /// (e.g. a game's own binary); arguments are added with [`Launch::arg`].
    pub fn program(bin: impl AsRef<Path>) -> Launch {
        Launch {
            program: bin.as_ref().to_path_buf(),
            args: Vec::new(),
            envs: Vec::new(),
            cert_dir: None,
            quiet: false,
        }
    }

    pub fn arg(&mut self, a: impl Into<OsString>) -> &mut Launch {
        self.args.push(a.into());
        self
    }

    pub fn args<I, S>(&mut self, args: I) -> &mut Launch
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    pub fn env(&mut self, k: impl Into<OsString>, v: impl Into<OsString>) -> &mut Launch {
        self.envs.push((k.into(), v.into()));
        self
    }

    /// Discards the server's stderr (its logs).
    pub fn quiet(&mut self) -> &mut Launch {
        self.quiet = true;
        self
    }

    /// The command this launch runs (for a caller that wraps it, e.g. in a
    /// network namespace).
    pub fn command(&self) -> Command {
        let mut cmd = Command::new(&self.program);
        cmd.args(&self.args)
            .envs(self.envs.iter().map(|(k, v)| (k, v)));
        cmd
    }

    /// Starts the server and waits (blocking) for its listening line. A
    /// process that exits before listening is retried a few times: with
    /// port 0 another program may take the TCP port the server picked.
    pub fn spawn(&self) -> anyhow::Result<ServerProcess> {
        let mut last = None;
        for _ in 0..5 {
            match self.spawn_once() {
                Ok(p) => return Ok(p),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| anyhow::anyhow!("never started")))
    }

    /// [`Launch::spawn`] without blocking the async runtime.
    pub async fn spawn_async(&self) -> anyhow::Result<ServerProcess> {
        let me = self.clone();
        tokio::task::spawn_blocking(move || me.spawn())
            .await
            .context("the launching task failed")?
    }

    fn spawn_once(&self) -> anyhow::Result<ServerProcess> {
        let mut cmd = self.command();
        cmd.stdin(Stdio::null()).stdout(Stdio::piped());
        if self.quiet {
            cmd.stderr(Stdio::null());
        }
        let mut child = cmd
            .spawn()
            .with_context(|| format!("starting {}", self.program.display()))?;
        let stdout = child.stdout.take().context("the server's stdout")?;
        // Read on a thread, so that a server that never listens is a
        // timeout (killing it ends the read) rather than a hang.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let read = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(read.map(|n| (n, line)));
        });
        let listening = match rx.recv_timeout(STARTUP_TIMEOUT) {
            Ok(Ok((n, line))) if n > 0 => Listening::parse(&line),
            Ok(Ok(_)) => Err(anyhow::anyhow!(
                "{} exited before listening ({:?})",
                self.program.display(),
                child.wait().ok()
            )),
            Ok(Err(e)) => Err(e.into()),
            Err(_) => Err(anyhow::anyhow!(
                "{} did not listen within {STARTUP_TIMEOUT:?}",
                self.program.display()
            )),
        };
        match listening {
            Ok(listening) => Ok(ServerProcess {
                child,
                listening,
                cert_dir: self.cert_dir.clone(),
            }),
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                Err(e)
            }
        }
    }
}

/// A running server process; killed (and its certificate directory
/// removed) when dropped.
pub struct ServerProcess {
    child: Child,
    pub listening: Listening,
    cert_dir: Option<PathBuf>,
}

impl ServerProcess {
    pub fn url(&self) -> Url {
        self.listening.url()
    }

    pub fn port(&self) -> u16 {
        self.listening.tcp.port()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The development certificate directory, when the launch made one.
    pub fn cert_dir(&self) -> Option<&Path> {
        self.cert_dir.as_deref()
    }

    /// Sends SIGTERM and waits up to `wait` for the process to exit.
    pub fn terminate(&mut self, wait: Duration) -> Option<ExitStatus> {
        // SAFETY: kill(2) on our own child's pid has no memory effects.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
        }
        let deadline = Instant::now() + wait;
        while Instant::now() < deadline {
            if let Ok(Some(st)) = self.child.try_wait() {
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Whether the process has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(dir) = &self.cert_dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_listening_line_parses_and_gives_the_url_and_hash() {
        let hex = "ab".repeat(32);
        let line = format!(
            r#"{{"event":"listening","udp":"127.0.0.1:4433","tcp":"127.0.0.1:4433","cert_sha256":"{hex}"}}"#
        );
        let l = Listening::parse(&line).unwrap();
        assert_eq!(l.url().as_str(), "http://127.0.0.1:4433/");
        assert_eq!(l.cert_hash(), Some([0xab; 32]));
        assert!(Listening::parse(r#"{"event":"other"}"#).is_err());
        assert!(Listening::parse("Rally is up").is_err());
    }
}
