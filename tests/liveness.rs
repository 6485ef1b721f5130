//! Dead servers (PROTOCOL.md §7.3), with real processes: a server killed
//! with SIGKILL and restarted on the same port 2 s later, and a server
//! frozen with SIGSTOP (no FIN, no QUIC close: only silence tells). The
//! native [`Session`] must notice within about its watchdog window, keep
//! reconnecting with backoff, and play again: a snapshot acknowledging an
//! input sent on the new session.
//!
//! The figures printed (`--nocapture`) are BENCHMARKS.md's "Dead server
//! detection".

mod common;

use std::time::{Duration, Instant};

use rally::client::{
    Backoff, ClientError, RetryPolicy, Session, SessionEvent, SessionState, TransportKind,
    DEFAULT_WATCHDOG,
};
use rally::launch::{Launch, ServerProcess};
use rally::protocol::ServerMsg;

use common::within;

/// A server on a port that stays the same across restarts, with one
/// certificate directory (so the certificate hash stays the same too).
struct Restartable {
    port: u16,
    cert_dir: std::path::PathBuf,
    procs: Vec<ServerProcess>,
}

impl Restartable {
    fn start() -> Restartable {
        let first = Launch::rally(env!("CARGO_BIN_EXE_rally"))
            .env("RALLY_LOG", "warn")
            .spawn()
            .expect("start rally serve");
        Restartable {
            port: first.port(),
            cert_dir: first.cert_dir().expect("a cert dir").to_path_buf(),
            procs: vec![first],
        }
    }

    fn current(&self) -> &ServerProcess {
        self.procs.last().expect("a server")
    }

    fn signal(&self, sig: libc::c_int) {
        // SAFETY: kill(2) on our own child's pid has no memory effects.
        let r = unsafe { libc::kill(self.current().pid() as libc::pid_t, sig) };
        assert_eq!(r, 0, "kill({sig})");
    }

    async fn restart(&mut self) {
        let addr = format!("127.0.0.1:{}", self.port);
        let mut l = Launch::program(env!("CARGO_BIN_EXE_rally"));
        l.args(["serve", "--listen", &addr, "--tcp-listen", &addr])
            .arg("--cert-dir")
            .arg(&self.cert_dir)
            .env("RALLY_LOG", "warn");
        let p = l.spawn_async().await.expect("restart on the same port");
        assert_eq!(p.port(), self.port);
        self.procs.push(p);
    }
}

impl Drop for Restartable {
    fn drop(&mut self) {
        // A stopped process cannot die of SIGKILL until it is continued.
        for p in &self.procs {
            // SAFETY: as above.
            unsafe { libc::kill(p.pid() as libc::pid_t, libc::SIGCONT) };
        }
    }
}

async fn session(server: &Restartable, transport: TransportKind) -> Session {
    let mut opts = common_options(server, transport);
    opts.timeout = Duration::from_secs(3);
    let policy = RetryPolicy {
        backoff: Backoff {
            base: Duration::from_millis(200),
            max: Duration::from_secs(1),
        },
        max_attempts: None,
    };
    let mut s = Session::connect(opts, policy).await.expect("connect");
    play(&mut s).await;
    s
}

fn common_options(server: &Restartable, transport: TransportKind) -> rally::client::ConnectOptions {
    rally::client::ConnectOptions::new(server.current().url(), transport, "liveness", "bot")
}

/// Sends an input and waits for a snapshot that acknowledges it.
async fn play(s: &mut Session) {
    let seq = s
        .client()
        .expect("connected")
        .send_input(&[8])
        .await
        .expect("input");
    loop {
        match s.next().await.expect("an event") {
            SessionEvent::Message(m) => {
                if let ServerMsg::Snapshot(snap) = m.msg {
                    if snap.ack_seq >= seq {
                        return;
                    }
                }
            }
            other => panic!("while playing: {other:?}"),
        }
    }
}

/// Waits for the drop; returns the error and when it came.
async fn dropped(s: &mut Session) -> (ClientError, Instant) {
    loop {
        match s.next().await.expect("an event") {
            SessionEvent::Message(_) => {}
            SessionEvent::Dropped(e) => return (e, Instant::now()),
            other => panic!("before the drop: {other:?}"),
        }
    }
}

/// Waits through the reconnect attempts for a session; returns whether it
/// resumed and how many attempts it took.
async fn reconnected(s: &mut Session) -> (bool, u32) {
    let mut attempts = 0;
    loop {
        match s.next().await.expect("an event") {
            SessionEvent::Reconnecting { attempt, .. } => attempts = attempt,
            SessionEvent::Connected { resumed, .. } => return (resumed, attempts),
            other => panic!("while reconnecting: {other:?}"),
        }
    }
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

async fn kill_and_restart(transport: TransportKind) {
    let mut server = Restartable::start();
    let mut s = session(&server, transport).await;
    server.signal(libc::SIGKILL);
    let killed = Instant::now();
    // Restart 2 s after the kill, while the client notices and retries.
    let restarted = tokio::spawn(async move {
        tokio::time::sleep_until((killed + Duration::from_secs(2)).into()).await;
        server.restart().await;
        server
    });
    let (noticed, resumed, attempts, playing) = within(30, "rejoin after a restart", async {
        let (error, noticed) = dropped(&mut s).await;
        eprintln!("{transport:?}: dropped: {error}");
        let (resumed, attempts) = reconnected(&mut s).await;
        play(&mut s).await;
        (noticed - killed, resumed, attempts, killed.elapsed())
    })
    .await;
    let _server = restarted.await.expect("the restart");
    eprintln!(
        "{transport:?} SIGKILL + restart 2 s later: noticed after {}, playing again after {} ({attempts} attempts)",
        secs(noticed),
        secs(playing)
    );
    // The restarted server does not know the player: a fresh join.
    assert!(!resumed);
    assert!(
        noticed <= DEFAULT_WATCHDOG + Duration::from_millis(1500),
        "noticed after {noticed:?}"
    );
    // Restart at 2 s, at most a second's backoff, then the handshake.
    assert!(
        playing < Duration::from_secs(8),
        "playing after {playing:?}"
    );
}

async fn freeze(transport: TransportKind) {
    let server = Restartable::start();
    let mut s = session(&server, transport).await;
    server.signal(libc::SIGSTOP);
    let stopped = Instant::now();
    let (error, noticed) = within(15, "notice a frozen server", dropped(&mut s)).await;
    let noticed = noticed - stopped;
    eprintln!(
        "{transport:?} SIGSTOP: noticed after {} ({error})",
        secs(noticed)
    );
    assert!(
        matches!(error, ClientError::Silent(_)),
        "the watchdog's verdict, not {error:?}"
    );
    assert!(
        noticed >= DEFAULT_WATCHDOG - Duration::from_millis(100)
            && noticed <= DEFAULT_WATCHDOG + Duration::from_millis(1500),
        "noticed after {noticed:?}"
    );
    // Thawed, the server still keeps the player: the session resumes it.
    tokio::time::sleep(Duration::from_millis(500)).await;
    server.signal(libc::SIGCONT);
    let (resumed, _) = within(20, "resume after the thaw", reconnected(&mut s)).await;
    assert!(resumed, "the player is resumed");
    within(10, "play after the thaw", play(&mut s)).await;
}

#[tokio::test]
async fn webtransport_notices_a_killed_server_and_rejoins_the_restarted_one() {
    kill_and_restart(TransportKind::WebTransport).await;
}

#[tokio::test]
async fn websocket_notices_a_killed_server_and_rejoins_the_restarted_one() {
    kill_and_restart(TransportKind::WebSocket).await;
}

#[tokio::test]
async fn http_notices_a_killed_server_and_rejoins_the_restarted_one() {
    kill_and_restart(TransportKind::Http).await;
}

#[tokio::test]
async fn webtransport_notices_a_frozen_server_by_its_silence_and_resumes() {
    freeze(TransportKind::WebTransport).await;
}

#[tokio::test]
async fn websocket_notices_a_frozen_server_by_its_silence_and_resumes() {
    freeze(TransportKind::WebSocket).await;
}

#[tokio::test]
async fn http_notices_a_frozen_server_by_its_silence_and_resumes() {
    freeze(TransportKind::Http).await;
}

#[tokio::test]
async fn a_replaced_session_gives_up_instead_of_taking_its_player_back() {
    let server = Restartable::start();
    let mut s = session(&server, TransportKind::WebSocket).await;
    // Another client resumes the player: this session is closed `replaced`,
    // and reconnecting would only take the player back and forth.
    let mut opts = common_options(&server, TransportKind::WebSocket);
    opts.resume = Some(s.client().expect("connected").resume_state());
    let other = rally::client::Client::connect(opts).await.expect("resume");
    assert!(other.resumed());
    within(10, "the replaced session closes", async {
        loop {
            match s.next().await.expect("an event") {
                SessionEvent::Message(_) => {}
                SessionEvent::Closed(e) => {
                    let ClientError::Closed { code, .. } = e else {
                        panic!("closed by {e:?}")
                    };
                    assert_eq!(code, Some(4000 + 17), "replaced");
                    break;
                }
                other => panic!("a replaced session: {other:?}"),
            }
        }
    })
    .await;
    assert_eq!(s.state(), SessionState::Closed);
    assert!(s.next().await.is_none());
}
