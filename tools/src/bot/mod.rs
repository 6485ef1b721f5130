//! `rally bot`: N native clients that join a room, play a built-in game
//! (`--game`, a [`Behaviour`]), ping, reconnect after drops (resuming), and report what
//! they saw as one JSON object.

pub mod behaviour;

use std::time::Duration;

use rally::client::{
    now_us, Channel, Client, ConnectOptions, RetryPolicy, Session, SessionEvent, TransportKind,
};
use rally::protocol::ServerMsg;
use serde::Serialize;
use tokio::time::{interval, Instant, MissedTickBehavior};
use url::Url;

pub use behaviour::{Action, Behaviour, BotGame, Seen};

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum TransportArg {
    /// WebTransport (HTTP/3 over QUIC): datagrams + one reliable stream.
    Wt,
    /// WebSocket over TCP.
    Ws,
    /// HTTP streaming: a response body down, POSTs up.
    Http,
}

impl TransportArg {
    pub fn kind(self) -> TransportKind {
        match self {
            TransportArg::Wt => TransportKind::WebTransport,
            TransportArg::Ws => TransportKind::WebSocket,
            TransportArg::Http => TransportKind::Http,
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct BotArgs {
    /// Server origin; for `wt` over http the certificate hash is fetched
    /// from `/cert-hash` and pinned.
    #[arg(long, default_value = "http://127.0.0.1:4433")]
    pub url: Url,
    #[arg(long, value_enum, default_value = "wt")]
    pub transport: TransportArg,
    /// The game the server runs (`rally serve --game`): picks what the bots
    /// send and how they read snapshots and messages.
    #[arg(long, value_enum, default_value = "dots")]
    pub game: BotGame,
    #[arg(long, default_value = "lobby")]
    pub room: String,
    /// Number of bots.
    #[arg(long, default_value_t = 1)]
    pub bots: usize,
    /// Seconds to play.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Print one JSON object (otherwise a short text summary).
    #[arg(long)]
    pub json: bool,
    /// Bot names are this prefix followed by the bot's index.
    #[arg(long, default_value = "bot-")]
    pub name_prefix: String,
}

#[derive(Debug, Clone)]
pub struct BotPlan {
    pub url: Url,
    pub transport: TransportKind,
    pub game: BotGame,
    pub room: String,
    pub bots: usize,
    pub duration: Duration,
    pub name_prefix: String,
}

impl From<BotArgs> for BotPlan {
    fn from(a: BotArgs) -> BotPlan {
        BotPlan {
            url: a.url,
            transport: a.transport.kind(),
            game: a.game,
            room: a.room,
            bots: a.bots,
            duration: Duration::from_secs_f64(a.duration.max(0.0)),
            name_prefix: a.name_prefix,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct RttSummary {
    pub p50: f64,
    pub p99: f64,
    pub samples: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct BotReport {
    /// `wt` or `ws`, as given on the command line.
    pub transport: &'static str,
    /// The game the bots played.
    pub game: &'static str,
    pub bots: usize,
    pub snapshots_received: u64,
    /// Application messages (`App` and `AppUnreliable`) received.
    pub messages_received: u64,
    /// Distinct player ids any bot saw (own included), from where
    /// `players_seen_from` says.
    pub distinct_players_seen: usize,
    pub players_seen_from: &'static str,
    pub rtt_ms: RttSummary,
    /// Failed connects, lost sessions that could not be resumed, send
    /// failures, server errors, and game bytes that broke the game's rules.
    pub errors: u64,
    /// Dropped sessions that the bots resumed (PROTOCOL.md §7.1).
    pub resumes: u64,
}

#[derive(Default)]
struct BotOutcome {
    snapshots: u64,
    messages: u64,
    seen: Seen,
    rtts_us: Vec<u64>,
    errors: u64,
    resumes: u64,
}

/// Nearest-rank percentile of sorted samples.
pub fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

pub fn transport_label(t: TransportKind) -> &'static str {
    match t {
        TransportKind::WebTransport => "wt",
        TransportKind::WebSocket => "ws",
        TransportKind::Http => "http",
    }
}

pub async fn run(plan: BotPlan) -> BotReport {
    let tasks: Vec<_> = (0..plan.bots)
        .map(|i| {
            let plan = plan.clone();
            tokio::spawn(async move { one_bot(&plan, i).await })
        })
        .collect();
    let mut total = BotOutcome::default();
    for t in tasks {
        match t.await {
            Ok(o) => {
                total.snapshots += o.snapshots;
                total.messages += o.messages;
                total.seen.players.extend(o.seen.players);
                total.rtts_us.extend(o.rtts_us);
                total.errors += o.errors + o.seen.faults;
                total.resumes += o.resumes;
            }
            Err(e) => {
                tracing::error!("bot task failed: {e}");
                total.errors += 1;
            }
        }
    }
    total.rtts_us.sort_unstable();
    let ms = |us: u64| us as f64 / 1000.0;
    let behaviour = plan.game.behaviour();
    BotReport {
        transport: transport_label(plan.transport),
        game: behaviour.game(),
        bots: plan.bots,
        snapshots_received: total.snapshots,
        messages_received: total.messages,
        distinct_players_seen: total.seen.players.len(),
        players_seen_from: behaviour.players_seen_from(),
        rtt_ms: RttSummary {
            p50: ms(percentile(&total.rtts_us, 50.0)),
            p99: ms(percentile(&total.rtts_us, 99.0)),
            samples: total.rtts_us.len(),
        },
        errors: total.errors,
        resumes: total.resumes,
    }
}

/// Connects, and checks the server runs the game this bot plays: a dots
/// bot reading shooter snapshots would only count faults.
async fn connect(opts: &ConnectOptions, game: &str) -> Result<Client, String> {
    let client = Client::connect(opts.clone())
        .await
        .map_err(|e| format!("connect failed: {e}"))?;
    let theirs = &client.welcome().game;
    if theirs != game {
        return Err(format!(
            "the server runs the game {theirs:?}, these bots play {game:?} (use --game {theirs})"
        ));
    }
    Ok(client)
}

#[tracing::instrument(skip_all, fields(bot = index))]
async fn one_bot(plan: &BotPlan, index: usize) -> BotOutcome {
    let mut out = BotOutcome::default();
    let mut behaviour = plan.game.behaviour();
    let name = format!("{}{index}", plan.name_prefix);
    let mut opts = ConnectOptions::new(plan.url.clone(), plan.transport, &plan.room, &name);
    opts.app = behaviour.hello();
    let client = match connect(&opts, behaviour.game()).await {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!("{e}");
            out.errors += 1;
            return out;
        }
    };
    let hz = client.welcome().tick_hz.max(1);
    behaviour.connected(client.player_id(), hz, false);
    // Drops (the watchdog's silence among them) are reconnected for as long
    // as the bot plays: resumed while the server keeps the player, joined
    // afresh after that (PROTOCOL.md §7.3).
    let mut session = Session::from_client(client, opts, RetryPolicy::default());
    let mut input_tick = interval(Duration::from_secs_f64(1.0 / hz as f64));
    input_tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let mut ping_tick = interval(Duration::from_millis(100));
    ping_tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let deadline = Instant::now() + plan.duration;
    let mut actions = Vec::new();
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => break,
            ev = session.next() => match ev {
                Some(SessionEvent::Message(r)) => match r.msg {
                    ServerMsg::Snapshot(s) => {
                        out.snapshots += 1;
                        behaviour.snapshot(&s, &mut out.seen);
                    }
                    ServerMsg::App { reliable, payload } => {
                        out.messages += 1;
                        behaviour.message(&payload, reliable, &mut out.seen);
                    }
                    ServerMsg::PlayerJoined { player_id, .. } => {
                        behaviour.joined(player_id, &mut out.seen);
                    }
                    ServerMsg::Pong { client_time_us, .. } => {
                        out.rtts_us.push(now_us().saturating_sub(client_time_us));
                    }
                    ServerMsg::Error { code, reason } => {
                        tracing::warn!(code, %reason, "server error");
                        out.errors += 1;
                    }
                    _ => {}
                },
                Some(SessionEvent::Dropped(e)) => tracing::info!("connection lost: {e}; reconnecting"),
                Some(SessionEvent::Reconnecting { attempt, reason, .. }) => {
                    tracing::info!(attempt, "reconnecting ({reason})");
                }
                Some(SessionEvent::Connected { player_id, resumed, .. }) => {
                    if resumed {
                        out.resumes += 1;
                    }
                    behaviour.connected(player_id, hz, resumed);
                }
                Some(SessionEvent::Closed(e)) => {
                    tracing::warn!("gave up: {e}");
                    out.errors += 1;
                    return out;
                }
                None => return out,
            },
            _ = input_tick.tick() => {
                // While reconnecting there is nothing to send on: the
                // behaviour waits (as the game would) rather than lose what
                // it meant to send.
                let Some(client) = session.client() else {
                    continue;
                };
                behaviour.tick(&mut actions);
                for a in actions.drain(..) {
                    let sent = match a {
                        Action::Input(i) => client.send_input(&i).await.map(|_| ()),
                        Action::Message { payload, reliable } => client.send(&payload, reliable).await,
                    };
                    // A failed send is a drop: the session reports it next.
                    if let Err(e) = sent {
                        tracing::info!("send failed: {e}");
                        break;
                    }
                }
            }
            _ = ping_tick.tick() => {
                if let Some(client) = session.client() {
                    if let Err(e) = client.ping(Channel::Unreliable).await {
                        tracing::info!("ping failed: {e}");
                    }
                }
            }
        }
    }
    if let Err(e) = session.leave().await {
        tracing::warn!("leave: {e}");
        out.errors += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::percentile;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&v, 50.0), 50);
        assert_eq!(percentile(&v, 99.0), 99);
        assert_eq!(percentile(&v, 100.0), 100);
        assert_eq!(percentile(&[7], 99.0), 7);
        assert_eq!(percentile(&[], 50.0), 0);
    }
}
