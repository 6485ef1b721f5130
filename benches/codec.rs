//! Codec micro-benchmarks: what the server does per recipient (the 5-byte
//! header beside the shared body) and what a client does per snapshot and
//! per input (decode).
//!
//! `cargo bench --bench codec`

use bytes::{BufMut, Bytes, BytesMut};
use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use rally::protocol::{put_snapshot_prefix, snapshot_header, ClientMsg, Inputs, ServerMsg};

/// A dots room of 84 players: a 1 027-byte snapshot, the S2 size.
fn body(players: u32) -> Bytes {
    let mut b = BytesMut::new();
    put_snapshot_prefix(&mut b, 12_345, 1_790_000_000_000_000);
    b.put_u16(players as u16);
    for id in 1..=players {
        b.put_u32(id);
        b.put_f32(id as f32 * 3.5);
        b.put_f32(id as f32 * 1.25);
    }
    b.freeze()
}

fn codec(c: &mut Criterion) {
    let encoded = body(84);
    let mut g = c.benchmark_group("codec");
    g.throughput(Throughput::Bytes(encoded.len() as u64 + 5));

    // Per recipient: reuse one buffer, as the session does; split/freeze
    // hands the message on and the drop lets the next reserve reclaim it.
    let mut buf = BytesMut::new();
    g.bench_function("snapshot_header_per_recipient_84", |bench| {
        bench.iter(|| {
            buf.put_slice(&snapshot_header(black_box(42)));
            buf.put_slice(&encoded);
            black_box(buf.split().freeze())
        })
    });

    let mut full = BytesMut::new();
    full.put_slice(&snapshot_header(42));
    full.put_slice(&encoded);
    let full = full.freeze();
    g.bench_function("snapshot_decode_84", |bench| {
        bench.iter(|| ServerMsg::decode(black_box(&full)).unwrap())
    });
    g.finish();

    let input = ClientMsg::Input {
        newest_seq: 1000,
        inputs: Inputs::encode(&[[8u8]; 4]),
    }
    .to_bytes();
    c.bench_function("codec/input_decode", |bench| {
        bench.iter(|| ClientMsg::decode(black_box(&input)).unwrap())
    });
}

criterion_group!(benches, codec);
criterion_main!(benches);
