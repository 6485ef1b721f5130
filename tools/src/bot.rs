//! `rally bot`: N native clients that join a room, move randomly, ping, and
//! report what they saw as one JSON object.

use std::collections::HashSet;
use std::time::Duration;

use serde::Serialize;
use tokio::time::{interval, Instant, MissedTickBehavior};
use url::Url;

use super::{now_us, Client, ConnectOptions, TransportKind};
use crate::protocol::{Buttons, ServerMsg};
use crate::session::Channel;

#[derive(Debug, Clone)]
pub struct BotPlan {
    pub url: Url,
    pub transport: TransportKind,
    pub room: String,
    pub bots: usize,
    pub duration: Duration,
    pub name_prefix: String,
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
    pub bots: usize,
    pub snapshots_received: u64,
    /// Distinct player ids in any snapshot any bot received (own included).
    pub distinct_players_seen: usize,
    pub rtt_ms: RttSummary,
    pub errors: u64,
    /// Dropped sessions that the bots resumed (PROTOCOL.md §7.1).
    pub resumes: u64,
}

#[derive(Default)]
struct BotOutcome {
    snapshots: u64,
    seen: HashSet<u32>,
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
                total.seen.extend(o.seen);
                total.rtts_us.extend(o.rtts_us);
                total.errors += o.errors;
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
    BotReport {
        transport: transport_label(plan.transport),
        bots: plan.bots,
        snapshots_received: total.snapshots,
        distinct_players_seen: total.seen.len(),
        rtt_ms: RttSummary {
            p50: ms(percentile(&total.rtts_us, 50.0)),
            p99: ms(percentile(&total.rtts_us, 99.0)),
            samples: total.rtts_us.len(),
        },
        errors: total.errors,
        resumes: total.resumes,
    }
}

async fn one_bot(plan: &BotPlan, index: usize) -> BotOutcome {
    let mut out = BotOutcome::default();
    let name = format!("{}{index}", plan.name_prefix);
    let opts = ConnectOptions::new(plan.url.clone(), plan.transport, &plan.room, &name);
    let mut client = match Client::connect(opts.clone()).await {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(bot = index, "connect failed: {e}");
            out.errors += 1;
            return out;
        }
    };
    let hz = client.welcome().tick_hz.max(1) as f64;
    let mut input_tick = interval(Duration::from_secs_f64(1.0 / hz));
    input_tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let mut ping_tick = interval(Duration::from_millis(100));
    ping_tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let deadline = Instant::now() + plan.duration;
    let mut buttons = Buttons(Buttons::RIGHT);
    let mut held_for = 0u32;
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => break,
            r = client.recv() => match r {
                Ok(r) => match r.msg {
                    ServerMsg::Snapshot { body, .. } => {
                        out.snapshots += 1;
                        out.seen.extend(body.players.iter().map(|p| p.id));
                    }
                    ServerMsg::Pong { client_time_us, .. } => {
                        out.rtts_us.push(now_us().saturating_sub(client_time_us));
                    }
                    ServerMsg::Error { code, reason } => {
                        tracing::warn!(bot = index, code, %reason, "server error");
                        out.errors += 1;
                    }
                    _ => {}
                },
                Err(e) => {
                    tracing::info!(bot = index, "connection lost: {e}; resuming");
                    match reconnect(&opts, &client).await {
                        Some(c) => {
                            client = c;
                            out.resumes += 1;
                        }
                        None => {
                            out.errors += 1;
                            return out;
                        }
                    }
                }
            },
            _ = input_tick.tick() => {
                // Hold a random direction for about half a second.
                held_for += 1;
                if held_for as f64 > hz / 2.0 {
                    held_for = 0;
                    let b = rand::random::<u8>() & Buttons::ALL;
                    buttons = Buttons(if b == 0 { Buttons::LEFT } else { b });
                }
                if let Err(e) = client.send_input(buttons).await {
                    tracing::warn!(bot = index, "send failed: {e}");
                    out.errors += 1;
                    return out;
                }
            }
            _ = ping_tick.tick() => {
                if let Err(e) = client.ping(Channel::Unreliable).await {
                    tracing::warn!(bot = index, "ping failed: {e}");
                    out.errors += 1;
                    return out;
                }
            }
        }
    }
    if let Err(e) = client.leave().await {
        tracing::warn!(bot = index, "leave: {e}");
        out.errors += 1;
    }
    out
}

/// Reconnects after a drop with the player's resume state, a few times with
/// exponential backoff. The client falls back to a fresh join by itself when
/// the server no longer has the player.
async fn reconnect(opts: &ConnectOptions, old: &Client) -> Option<Client> {
    let mut opts = opts.clone();
    opts.resume = Some(old.resume_state());
    let mut backoff = Duration::from_millis(100);
    for _ in 0..5 {
        match Client::connect(opts.clone()).await {
            Ok(c) => return Some(c),
            Err(e) => tracing::warn!("reconnect failed: {e}"),
        }
        tokio::time::sleep(backoff).await;
        backoff *= 2;
    }
    None
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
