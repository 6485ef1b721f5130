//! Room tick micro-benchmarks on the pure state (`room::state`): one tick of
//! an 84-player room (the S2 room), with and without the snapshot work, and
//! the per-recipient part of a tick's fan-out.
//!
//! `cargo bench --bench room`

use bytes::BytesMut;
use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use rally::protocol::{encode_snapshot, Buttons};
use rally::room::state::{GameParams, RoomState};

const PLAYERS: u32 = 84;

fn room() -> RoomState {
    let mut s = RoomState::new(GameParams {
        tick_hz: 60,
        arena_w: 960.0,
        arena_h: 540.0,
        speed: 240.0,
        max_players: PLAYERS as usize,
    });
    for i in 0..PLAYERS {
        s.join(format!("p{i}")).unwrap();
    }
    s
}

fn tick(c: &mut Criterion) {
    let mut g = c.benchmark_group("room");
    g.throughput(Throughput::Elements(PLAYERS as u64));

    // Every player's input (newest + 3 redundant), then the step.
    let mut s = room();
    let mut seq = 4u32;
    let held = [Buttons(Buttons::RIGHT | Buttons::DOWN); 4];
    g.bench_function("inputs_and_step_84", |bench| {
        bench.iter(|| {
            seq += 1;
            for id in 1..=PLAYERS {
                s.apply_input(id, seq, &held);
            }
            s.step();
        })
    });

    // The room's once-per-tick work: step, snapshot, encode.
    let mut s = room();
    g.bench_function("step_snapshot_encode_84", |bench| {
        bench.iter(|| {
            s.step();
            black_box(s.snapshot(black_box(1_790_000_000_000_000)).encode())
        })
    });

    // The whole pure fan-out of one tick: encode once, then one header +
    // body copy per recipient through a reused buffer.
    let s = room();
    let mut buf = BytesMut::new();
    g.bench_function("tick_fanout_84_recipients", |bench| {
        bench.iter(|| {
            let body = s.snapshot(1_790_000_000_000_000).encode();
            for id in 1..=PLAYERS {
                let ack = s.player(id).map_or(0, |p| p.last_seq);
                encode_snapshot(&mut buf, ack, &body);
                black_box(buf.split().freeze());
            }
        })
    });
    g.finish();
}

criterion_group!(benches, tick);
criterion_main!(benches);
