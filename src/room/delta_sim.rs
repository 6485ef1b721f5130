//! Property test of snapshot deltas end to end, without sockets: the
//! room's baseline rules ([`Acks`], [`Ring`]) and encoder, a network that
//! loses, delays and reorders snapshots and acknowledgements at random,
//! and the client's rules ([`States`]). Every state the client makes whole
//! must be byte for byte the server's state at that tick; a delta against
//! a state the client does not have must be ignored, never applied.

use std::collections::HashMap;

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::fanout::Acks;
use super::ring::Ring;
use crate::client::{Ignored, States};
use crate::protocol::{delta, Snapshot, SnapshotDelta};

enum Sent {
    Whole(Snapshot),
    Delta(SnapshotDelta),
}

/// One run: `ordered` is a WebSocket (nothing lost, in order, the last
/// written snapshot a baseline), else datagrams with `loss_pct` and up to
/// `max_delay` ticks of delay each way (reordering).
fn run(seed: u64, ticks: u32, loss_pct: u32, max_delay: u32, ordered: bool) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut payload: Vec<u8> = (0..rng.random_range(0..200))
        .map(|_| rng.random())
        .collect();
    let mut truth: HashMap<u32, Vec<u8>> = HashMap::new();
    let (mut ring, mut acks, mut delivered) = (Ring::default(), Acks::default(), 0u32);
    let mut states = States::new(None);
    let mut to_client: Vec<(u32, Sent)> = Vec::new();
    let mut to_server: Vec<(u32, u32)> = Vec::new();
    let mut lost_ticks = Vec::new();
    let (mut whole, mut made) = (0u32, 0u32);
    for tick in 1..=ticks {
        // The game: a few bytes change; now and then the payload grows,
        // shrinks, or changes everywhere.
        match rng.random_range(0..20) {
            0 => payload.extend((0..rng.random_range(1..30)).map(|_| rng.random::<u8>())),
            1 => payload.truncate(payload.len().saturating_sub(rng.random_range(1..30))),
            2 => payload.iter_mut().for_each(|b| *b = rng.random()),
            _ => {
                for _ in 0..rng.random_range(0..6) {
                    if !payload.is_empty() {
                        let i = rng.random_range(0..payload.len());
                        payload[i] = rng.random();
                    }
                }
            }
        }
        truth.insert(tick, payload.clone());
        // The room (task.rs `snapshot`, `delta`).
        if acks.first_tick == 0 {
            acks.first_tick = tick;
        }
        let cur = Bytes::from(payload.clone());
        let base = acks.baseline(delivered);
        let sent = match base.and_then(|b| Some((b, ring.get(b)?.clone()))) {
            Some((base_tick, base)) => {
                let mut d = BytesMut::new();
                delta::encode(&base, &cur, &mut d);
                Sent::Delta(SnapshotDelta {
                    ack_seq: 0,
                    tick,
                    server_time_us: 0,
                    base_tick,
                    codec: delta::CODEC_RALLY,
                    delta: d.freeze(),
                })
            }
            None => Sent::Whole(Snapshot {
                ack_seq: 0,
                tick,
                server_time_us: 0,
                payload: cur.clone(),
            }),
        };
        ring.push(tick, cur);
        if ordered {
            to_client.push((tick, sent));
            delivered = tick;
        } else if rng.random_range(0..100) < loss_pct {
            lost_ticks.push(tick);
        } else {
            to_client.push((tick + rng.random_range(0..=max_delay), sent));
        }
        // A server that breaks the rules: a delta against a state the
        // client never received. It must be ignored.
        if let Some(&gone) = lost_ticks.last().filter(|_| tick % 17 == 0) {
            let d = SnapshotDelta {
                ack_seq: 0,
                tick,
                server_time_us: 0,
                base_tick: gone,
                codec: delta::CODEC_RALLY,
                delta: Bytes::from_static(&[0]),
            };
            let newest = states.newest();
            assert_eq!(states.apply(&d).err(), Some(Ignored::NoBaseline));
            assert_eq!(states.newest(), newest);
        }
        // The client: everything due, in arrival order.
        let (due, later): (Vec<_>, Vec<_>) = to_client.drain(..).partition(|(at, _)| *at <= tick);
        to_client = later;
        for (_, m) in due {
            let s = match m {
                Sent::Whole(s) => {
                    states.keep(&s);
                    whole += 1;
                    s
                }
                Sent::Delta(d) => match states.apply(&d) {
                    Ok(s) => {
                        made += 1;
                        s
                    }
                    // §5.1: with a server that follows the rules, every
                    // delta's baseline is a state the client has.
                    Err(e) => panic!("tick {}: delta on {} ignored: {e:?}", d.tick, d.base_tick),
                },
            };
            assert_eq!(&s.payload[..], &truth[&s.tick][..], "tick {}", s.tick);
        }
        // Its acknowledgement of the newest state, over the same network.
        if ordered || rng.random_range(0..100) >= loss_pct {
            let delay = if ordered {
                0
            } else {
                rng.random_range(0..=max_delay)
            };
            to_server.push((tick + delay, states.newest()));
        }
        let (due, later): (Vec<_>, Vec<_>) = to_server.drain(..).partition(|(at, _)| *at <= tick);
        to_server = later;
        for (_, acked) in due {
            if acked <= tick {
                acks.ack(acked);
            }
        }
    }
    assert!(
        whole >= 1 && made + whole >= ticks / 4,
        "{whole} whole, {made} deltas"
    );
    if ordered {
        assert_eq!(
            whole, 1,
            "on an ordered channel only the first snapshot is whole"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]
    #[test]
    fn every_state_made_whole_is_the_servers_under_loss_and_reordering(
        seed in any::<u64>(),
        ticks in 40u32..400,
        loss_pct in 0u32..45,
        max_delay in 0u32..8,
        ordered in any::<bool>(),
    ) {
        run(seed, ticks, loss_pct, max_delay, ordered);
    }
}

#[test]
fn twenty_percent_loss_with_reordering_over_long_runs() {
    for seed in 0..20 {
        run(seed, 2000, 20, 6, false);
    }
}
