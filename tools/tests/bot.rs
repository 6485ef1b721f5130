//! `rally bot` end to end against the real server: bots of both transports
//! in one room for each built-in game (each game's behaviour, both
//! transports sharing its room), and a clear refusal when the server runs
//! another game than the bots play.

mod common;

use std::process::Command;

use serde_json::Value;

/// Runs one `rally-tools bot --json` command per `(transport, bots)` at
/// the same time, all in `room`, and returns their reports in order.
fn bots(url: &str, game: &str, room: &str, runs: &[(&str, usize)], secs: f64) -> Vec<Value> {
    std::thread::scope(|s| {
        let handles: Vec<_> = runs
            .iter()
            .map(|&(transport, n)| {
                s.spawn(move || {
                    let out = Command::new(common::tools_bin())
                        .args(["bot", "--url", url, "--game", game, "--room", room])
                        .args(["--transport", transport, "--bots", &n.to_string()])
                        .args(["--duration", &secs.to_string(), "--json"])
                        .env("RALLY_LOG", "warn")
                        .output()
                        .expect("run rally-tools bot");
                    assert!(
                        out.status.success(),
                        "{transport}: {}",
                        String::from_utf8_lossy(&out.stderr)
                    );
                    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
                        panic!("{e}: {}", String::from_utf8_lossy(&out.stdout))
                    });
                    assert_eq!(v["transport"], transport, "{v}");
                    assert_eq!(v["game"], game, "{v}");
                    assert_eq!(v["bots"], n, "{v}");
                    v
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

fn rtt_is_measured(v: &Value) {
    let p50 = v["rtt_ms"]["p50"].as_f64().unwrap();
    assert!(p50 > 0.0, "{v}");
    assert!(v["rtt_ms"]["p99"].as_f64().unwrap() >= p50, "{v}");
}

#[test]
fn bot_command_reports_json_for_both_transports_in_one_room() {
    let server = common::server(&[]);
    let url = server.url().to_string();
    for v in bots(&url, "dots", "bots", &[("wt", 2), ("ws", 2)], 3.0) {
        assert_eq!(v["errors"], 0, "{v}");
        // 2 bots × ~3 s × 60 Hz snapshots.
        assert!(v["snapshots_received"].as_u64().unwrap() > 200, "{v}");
        // Its own two bots and the other command's two.
        assert_eq!(v["distinct_players_seen"], 4, "{v}");
        assert_eq!(v["players_seen_from"], "player ids in the snapshots");
        rtt_is_measured(&v);
    }
}

/// Relay: each bot's cursor and numbered notes reach the other three,
/// across transports, the notes in sequence.
#[test]
fn relay_bots_hear_every_other_bot_across_transports() {
    let server = common::server(&["--game", "relay"]);
    let url = server.url().to_string();
    for v in bots(&url, "relay", "relay", &[("wt", 2), ("ws", 2)], 3.0) {
        assert_eq!(v["errors"], 0, "{v}");
        assert_eq!(v["snapshots_received"], 0, "relay has no snapshots: {v}");
        // ~30 cursors a second from each of 3 others, for 2 bots.
        assert!(v["messages_received"].as_u64().unwrap() > 100, "{v}");
        assert_eq!(v["distinct_players_seen"], 4, "{v}");
        rtt_is_measured(&v);
    }
}

/// Shooter: bots that move, aim and fire get their own view of the arena
/// (themselves in it) and no malformed bytes.
#[test]
fn shooter_bots_play_and_see_their_own_view() {
    let server = common::server(&["--game", "shooter"]);
    let url = server.url().to_string();
    for v in bots(&url, "shooter", "arena", &[("wt", 2), ("ws", 2)], 3.0) {
        assert_eq!(v["errors"], 0, "{v}");
        assert!(v["snapshots_received"].as_u64().unwrap() > 200, "{v}");
        // Each bot sees at least itself; the others when within its view.
        let seen = v["distinct_players_seen"].as_u64().unwrap();
        assert!((2..=4).contains(&seen), "{v}");
        rtt_is_measured(&v);
    }
}

/// Synthetic: every reliable message comes back once and in order (the
/// bots count anything else as an error), unreliable ones mostly too.
#[test]
fn synthetic_bots_get_their_echoes() {
    let server = common::server(&["--game", "synthetic", "--game-opt", "payload=100"]);
    let url = server.url().to_string();
    for v in bots(&url, "synthetic", "echo", &[("wt", 2), ("ws", 2)], 3.0) {
        assert_eq!(v["errors"], 0, "{v}");
        assert!(v["snapshots_received"].as_u64().unwrap() > 200, "{v}");
        // 2 reliable and 6 unreliable echoes a second per bot.
        assert!(v["messages_received"].as_u64().unwrap() > 20, "{v}");
        // The roster: own two and the other command's two.
        assert_eq!(v["distinct_players_seen"], 4, "{v}");
        rtt_is_measured(&v);
    }
}

/// Bots that play another game than the server's do not play: each counts
/// an error, and the reason is logged.
#[test]
fn bots_refuse_a_server_running_another_game() {
    let server = common::server(&["--game", "relay"]);
    let out = Command::new(common::tools_bin())
        .args(["bot", "--url", server.url().as_str(), "--bots", "2"])
        .args(["--duration", "1", "--json"])
        .output()
        .expect("run rally-tools bot");
    assert!(out.status.success());
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (v["game"].as_str(), v["errors"].as_u64()),
        (Some("dots"), Some(2))
    );
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(log.contains("the server runs the game \"relay\""), "{log}");
}
