//! Codec micro-benchmarks: what the server does per tick per room (encode
//! the shared body once) and per recipient (the 5-byte header + body copy),
//! and what a client does per snapshot (decode).
//!
//! `cargo bench --bench codec`

use bytes::BytesMut;
use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use rally::protocol::{encode_snapshot, Buttons, ClientMsg, PlayerState, ServerMsg, SnapshotBody};

/// A room of 84 players: a 1 027-byte snapshot, the S2 size.
fn body(players: u32) -> SnapshotBody {
    SnapshotBody {
        tick: 12_345,
        server_time_us: 1_790_000_000_000_000,
        players: (1..=players)
            .map(|id| PlayerState {
                id,
                x: id as f32 * 3.5,
                y: id as f32 * 1.25,
            })
            .collect(),
    }
}

fn codec(c: &mut Criterion) {
    let b = body(84);
    let encoded = b.encode();
    let mut g = c.benchmark_group("codec");
    g.throughput(Throughput::Bytes(encoded.len() as u64 + 5));

    g.bench_function("snapshot_body_encode_84", |bench| {
        bench.iter(|| black_box(&b).encode())
    });

    // Per recipient: reuse one buffer, as the session does; split/freeze
    // hands the message on and the drop lets the next reserve reclaim it.
    let mut buf = BytesMut::new();
    g.bench_function("snapshot_header_per_recipient_84", |bench| {
        bench.iter(|| {
            encode_snapshot(&mut buf, black_box(42), &encoded);
            black_box(buf.split().freeze())
        })
    });

    let mut full = BytesMut::new();
    encode_snapshot(&mut full, 42, &encoded);
    let full = full.freeze();
    g.bench_function("snapshot_decode_84", |bench| {
        bench.iter(|| ServerMsg::decode(black_box(&full)).unwrap())
    });
    g.finish();

    let input = ClientMsg::Input {
        newest_seq: 1000,
        buttons: vec![Buttons(Buttons::RIGHT); 4],
    }
    .to_bytes();
    c.bench_function("codec/input_decode", |bench| {
        bench.iter(|| ClientMsg::decode(black_box(&input)).unwrap())
    });
}

criterion_group!(benches, codec);
criterion_main!(benches);
