//! The README's "Write your game" example (`examples/race.rs` and its page)
//! works: built by `cargo test` like every example, started here as a
//! newcomer would run it, and played over both transports.

mod common;

use std::path::PathBuf;

use common::{within, BOTH};
use rally::client::{Client, ConnectOptions};
use rally::launch::Launch;
use rally::protocol::ServerMsg;

/// `target/<profile>/examples/race`, beside this test's own directory.
fn example() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(|deps| deps.parent()).unwrap();
    let bin = dir.join("examples").join("race");
    assert!(
        bin.exists(),
        "{} missing: cargo test builds it",
        bin.display()
    );
    bin
}

#[tokio::test]
async fn the_race_example_serves_its_page_and_crowns_a_winner() {
    let certs = std::env::temp_dir().join(format!("rally-race-{}", std::process::id()));
    let mut launch = Launch::program(example());
    launch
        .args([
            "--listen",
            "127.0.0.1:0",
            "--tcp-listen",
            "127.0.0.1:0",
            "--cert-dir",
        ])
        .arg(&certs);
    let server = launch.spawn_async().await.unwrap();
    let url = server.url();

    let (status, page) = rally::client::http_get(&url, "/").await.unwrap();
    assert_eq!(status, 200);
    assert!(String::from_utf8_lossy(&page).contains("Race to"));

    let [wt, ws] = BOTH.map(|t| ConnectOptions::new(url.clone(), t, "race", "r"));
    let mut fast = Client::connect(wt).await.unwrap();
    let mut watcher = Client::connect(ws).await.unwrap();
    assert_eq!(fast.welcome().game, "race");
    let goal = u16::from_be_bytes(fast.welcome().app[..2].try_into().unwrap());
    for _ in 0..goal {
        fast.send_input(&[1]).await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // Both learn the winner, reliably.
    let fast_id = fast.player_id();
    for c in [&mut fast, &mut watcher] {
        let winner = within(10, "the winner", async {
            loop {
                if let ServerMsg::App {
                    reliable: true,
                    payload,
                } = c.recv().await.unwrap().msg
                {
                    return u32::from_be_bytes(payload[..4].try_into().unwrap());
                }
            }
        })
        .await;
        assert_eq!(winner, fast_id);
    }
    drop(server);
    let _ = std::fs::remove_dir_all(certs);
}
