//! `rally soak` end to end, short: churn, drops and resumes on both
//! transports against the `rally` server it starts, with every chat line a
//! bot says coming back to it exactly once, across resumes.

mod common;

use std::process::Command;

#[test]
fn soak_resumes_across_transports_and_loses_no_reliable_message() {
    common::server_bin();
    let out = Command::new(common::tools_bin())
        .args(["soak", "--duration", "5", "--bots", "8", "--rooms", "2"])
        .args(["--settle", "0"])
        .env("RALLY_LOG", "warn")
        .output()
        .expect("run rally-tools soak");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["errors"], 0, "{v}");
    assert!(v["sessions"].as_u64().unwrap() > 8, "churn: {v}");
    assert!(v["drops"].as_u64().unwrap() > 0, "{v}");
    assert!(v["resumes"].as_u64().unwrap() > 0, "{v}");
    assert!(v["snapshots"].as_u64().unwrap() > 0, "{v}");
    let chat = &v["chat"];
    assert!(chat["echoed"].as_u64().unwrap() > 0, "{v}");
    assert!(chat["in_flight_at_drop"].as_u64().unwrap() > 0, "{v}");
    for k in ["duplicated", "skipped", "not_replayed"] {
        assert_eq!(chat[k], 0, "chat.{k}: {v}");
    }
    let sent = chat["sent"].as_u64().unwrap();
    let accounted = chat["echoed"].as_u64().unwrap() + chat["unconfirmed"].as_u64().unwrap();
    assert_eq!(sent, accounted, "every line echoed or unconfirmed: {v}");
    // The server it started: its memory and descriptors were read.
    for k in ["server_before", "server_after", "server_settled"] {
        assert!(v[k]["open_fds"].as_u64().unwrap() > 0, "{k}: {v}");
    }
    assert_eq!(v["server_health"]["game"], "dots", "{v}");
}
