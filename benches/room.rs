//! Game-side micro-benchmarks through `rally::game::Harness`: one tick of
//! an 84-player dots room (the S2 room), its shared snapshot against 84
//! per-recipient headers, and a per-player-view game (the shooter) making
//! one payload per recipient: the cost interest management adds.
//!
//! `cargo bench --bench room`

use bytes::{BufMut, BytesMut};
use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use rally::game::Harness;
use rally::games::dots::{Dots, DOWN, RIGHT};
use rally::games::shooter::{Input, Shooter, FIRE, UP};
use rally::protocol::{put_snapshot_prefix, snapshot_header};

const PLAYERS: u32 = 84;

fn tick(c: &mut Criterion) {
    let mut g = c.benchmark_group("room");
    g.throughput(Throughput::Elements(PLAYERS as u64));

    let mut dots = Harness::new(Dots::new);
    for id in 1..=PLAYERS {
        dots.join(id, "p", &[]).unwrap();
    }
    // Every player's input, then the tick.
    g.bench_function("dots_inputs_and_tick_84", |bench| {
        bench.iter(|| {
            for id in 1..=PLAYERS {
                dots.input(id, &[RIGHT | DOWN]).unwrap();
            }
            dots.tick();
        })
    });

    // Shared view: the payload once, then a header and the body per
    // recipient through one reused buffer.
    let mut buf = BytesMut::new();
    g.bench_function("dots_shared_snapshot_fanout_84", |bench| {
        bench.iter(|| {
            let mut body = BytesMut::new();
            put_snapshot_prefix(&mut body, 1, 1_790_000_000_000_000);
            body.extend_from_slice(&dots.snapshot());
            for id in 1..=PLAYERS {
                buf.put_slice(&snapshot_header(id));
                buf.put_slice(&body);
                black_box(buf.split().freeze());
            }
        })
    });

    // Per-player view: a payload per recipient (players and shots within
    // the view radius), then its header.
    let mut shooter = Harness::new(Shooter::new);
    for id in 1..=PLAYERS {
        shooter.join(id, "p", &[]).unwrap();
    }
    for t in 0..30u32 {
        for id in 1..=PLAYERS {
            let input = Input {
                buttons: if t % 10 == 0 { FIRE | UP } else { UP },
                aim: (id as i16).wrapping_mul(700),
                view_tick: t,
            };
            shooter.input(id, &input.encode()).unwrap();
        }
        shooter.tick();
    }
    g.bench_function("shooter_per_player_snapshot_fanout_84", |bench| {
        bench.iter(|| {
            for id in 1..=PLAYERS {
                let payload = shooter.snapshot_for(id);
                buf.put_slice(&snapshot_header(id));
                put_snapshot_prefix(&mut buf, 1, 1_790_000_000_000_000);
                buf.put_slice(&payload);
                black_box(buf.split().freeze());
            }
        })
    });
    g.bench_function("shooter_tick_84", |bench| bench.iter(|| shooter.tick()));
    g.finish();
}

criterion_group!(benches, tick);
criterion_main!(benches);
