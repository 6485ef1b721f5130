//! A player's place in a room across sessions: [`Session`] connects,
//! notices a drop (an error, a close, or the watchdog's silence), and
//! reconnects with capped, jittered backoff — `Resume` while the server may
//! still keep the player, a fresh `Hello` once the resume window has passed
//! (or when the server no longer knows the player) — reporting each step to
//! the game as a [`SessionEvent`].

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use tokio::time::Instant;

use super::liveness::Backoff;
use super::{Client, ClientError, ConnectOptions, Received, ResumeState};
use crate::protocol::ErrorCode;

/// How a [`Session`] reconnects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RetryPolicy {
    pub backoff: Backoff,
    /// Attempts after one drop before giving up; `None` (the default):
    /// for as long as the caller keeps the session.
    pub max_attempts: Option<u32>,
}

/// Where a [`Session`] stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionState {
    /// The first connect is under way.
    Connecting,
    /// A session is open; [`Session::client`] is there.
    Connected,
    /// The last session dropped; attempt `attempt` (1-based) is waiting for
    /// its turn or under way.
    Reconnecting { attempt: u32 },
    /// Given up: an error no retry can help, or the attempts ran out.
    Closed,
}

/// What [`Session::next`] reports.
#[derive(Debug)]
pub enum SessionEvent {
    /// A message from the server.
    Message(Received),
    /// A session is open: `resumed` when it took back the player (else a
    /// fresh join: a new `player_id`, the game's state starts over).
    /// `down_for` is how long the player was without a session (zero for
    /// the first).
    Connected {
        player_id: u32,
        resumed: bool,
        down_for: Duration,
    },
    /// The session dropped (the watchdog's [`ClientError::Silent`] among
    /// the reasons); reconnect attempts follow.
    Dropped(ClientError),
    /// Attempt `attempt` starts after `delay`; `reason` is why the last
    /// one (or the session) failed.
    Reconnecting {
        attempt: u32,
        delay: Duration,
        reason: String,
    },
    /// Given up; [`Session::next`] returns `None` from now on.
    Closed(ClientError),
}

type Connecting = Pin<Box<dyn Future<Output = Result<Client, ClientError>> + Send>>;

/// A reconnecting client; see the module documentation.
pub struct Session {
    opts: ConnectOptions,
    policy: RetryPolicy,
    client: Option<Client>,
    state: SessionState,
    /// What the next attempt resumes, and where (the last server's origin).
    resume: Option<(ResumeState, url::Url)>,
    /// The resume window the server announced in the last `Welcome`.
    resume_window: Duration,
    /// When the last session dropped.
    down_since: Option<Instant>,
    retry_at: Option<Instant>,
    connecting: Option<Connecting>,
    closed_given: bool,
}

impl Session {
    /// A session that connects on the first [`Session::next`].
    pub fn start(opts: ConnectOptions, policy: RetryPolicy) -> Session {
        Session {
            opts,
            policy,
            client: None,
            state: SessionState::Connecting,
            resume: None,
            resume_window: Duration::ZERO,
            down_since: None,
            retry_at: Some(Instant::now()),
            connecting: None,
            closed_given: false,
        }
    }

    /// Connects once, as [`Client::connect`] does (its error is returned,
    /// no retry); drops after that are reconnected.
    pub async fn connect(
        opts: ConnectOptions,
        policy: RetryPolicy,
    ) -> Result<Session, ClientError> {
        let client = Client::connect(opts.clone()).await?;
        Ok(Session::from_client(client, opts, policy))
    }

    /// Takes over a connected client; `opts` are what reconnects use (the
    /// options `client` was connected with).
    pub fn from_client(client: Client, opts: ConnectOptions, policy: RetryPolicy) -> Session {
        let mut s = Session::start(opts, policy);
        s.retry_at = None;
        s.set_client(client);
        s
    }

    pub fn state(&self) -> SessionState {
        self.state
    }

    /// The open session, while [`SessionState::Connected`]: send through
    /// it. A send that fails is a drop the next [`Session::next`] reports
    /// (its `recv` fails too).
    pub fn client(&mut self) -> Option<&mut Client> {
        self.client.as_mut()
    }

    fn set_client(&mut self, c: Client) {
        if !c.nodes().is_empty() {
            // Where to ask for the room if the origin given goes away.
            self.opts.entries = c.nodes().to_vec();
        }
        self.resume_window = Duration::from_millis(c.welcome().resume_window_ms as u64);
        self.client = Some(c);
        self.state = SessionState::Connected;
    }

    /// The next event. Cancel-safe: a game may `select!` it against its
    /// frame timer; a reconnect in progress carries on at the next call.
    pub async fn next(&mut self) -> Option<SessionEvent> {
        loop {
            if let Some(c) = &mut self.client {
                match c.recv().await {
                    Ok(m) => return Some(SessionEvent::Message(m)),
                    Err(e) => {
                        self.resume = Some((c.resume_state(), c.server_url().clone()));
                        self.client = None;
                        self.down_since = Some(Instant::now());
                        if !retry_helps(&e) {
                            return Some(self.close(e));
                        }
                        self.state = SessionState::Reconnecting { attempt: 0 };
                        return Some(SessionEvent::Dropped(e));
                    }
                }
            }
            if self.state == SessionState::Closed {
                if self.closed_given {
                    return None;
                }
                self.closed_given = true;
                return Some(SessionEvent::Closed(ClientError::Closed {
                    code: None,
                    reason: "closed".into(),
                }));
            }
            if let Some(connecting) = &mut self.connecting {
                let r = connecting.as_mut().await;
                self.connecting = None;
                match r {
                    Ok(c) => {
                        let down_for = self
                            .down_since
                            .take()
                            .map_or(Duration::ZERO, |t| t.elapsed());
                        let event = SessionEvent::Connected {
                            player_id: c.player_id(),
                            resumed: c.resumed(),
                            down_for,
                        };
                        self.resume = None;
                        self.set_client(c);
                        return Some(event);
                    }
                    Err(e) if !retry_helps(&e) => return Some(self.close(e)),
                    Err(e) => {
                        if let Some(ev) = self.schedule(e.to_string()) {
                            return Some(ev);
                        }
                        continue;
                    }
                }
            }
            if let Some(t) = self.retry_at {
                tokio::time::sleep_until(t).await;
                self.retry_at = None;
                self.connecting = Some(Box::pin(Client::connect(self.attempt_options())));
                continue;
            }
            // Just dropped: the first attempt.
            if let Some(ev) = self.schedule("dropped".into()) {
                return Some(ev);
            }
        }
    }

    /// Schedules the next attempt and reports it, or gives up.
    fn schedule(&mut self, reason: String) -> Option<SessionEvent> {
        let attempt = match self.state {
            SessionState::Reconnecting { attempt } => attempt + 1,
            _ => 1,
        };
        if self.policy.max_attempts.is_some_and(|max| attempt > max) {
            return Some(self.close(ClientError::Connect(format!(
                "gave up after {} attempts: {reason}",
                attempt - 1
            ))));
        }
        let delay = self.policy.backoff.delay(attempt, rand::random::<f64>());
        self.state = SessionState::Reconnecting { attempt };
        self.retry_at = Some(Instant::now() + delay);
        Some(SessionEvent::Reconnecting {
            attempt,
            delay,
            reason,
        })
    }

    /// The next attempt: a resume on the last server while the player may
    /// still be kept there, a fresh join where the caller asked otherwise.
    /// (A resume the server refuses becomes a join in [`Client::connect`].)
    fn attempt_options(&self) -> ConnectOptions {
        let mut opts = self.opts.clone();
        let within_window = self
            .down_since
            .is_some_and(|t| t.elapsed() < self.resume_window);
        if let (Some((state, url)), true) = (&self.resume, within_window) {
            opts.resume = Some(state.clone());
            if opts.locate {
                // Asked where the room is first: a room placed anew on
                // another node (its node died) is joined afresh there.
                opts.resume_at = Some(url.clone());
            } else {
                opts.url = url.clone();
            }
        }
        opts
    }

    fn close(&mut self, e: ClientError) -> SessionEvent {
        self.state = SessionState::Closed;
        self.closed_given = true;
        self.retry_at = None;
        self.connecting = None;
        SessionEvent::Closed(e)
    }

    /// Leaves the room (when connected) and ends the session.
    pub async fn leave(mut self) -> Result<(), ClientError> {
        match self.client.take() {
            Some(c) => c.leave().await,
            None => Ok(()),
        }
    }
}

/// Whether another attempt could succeed after `e` (see
/// [`ErrorCode::retry_helps`]).
fn retry_helps(e: &ClientError) -> bool {
    let code = match e {
        ClientError::Refused { code, .. } => ErrorCode::from_u16(*code),
        ClientError::Closed { code: Some(c), .. } => ErrorCode::from_close_code(*c),
        _ => None,
    };
    code.is_none_or(ErrorCode::retry_helps)
}
