//! Rally's generic snapshot delta (codec 0 of `SnapshotDelta`, PROTOCOL.md
//! §5.1): the new payload as runs copied from the baseline at the same
//! offset and runs of literal bytes. It knows nothing of the game: it works
//! on any payload, and costs nothing where bytes stayed in place (a fixed
//! layout of entities, the usual snapshot), a little more where they moved
//! (an entity inserted before others shifts them: those bytes become
//! literals).
//!
//! Layout: `len` (the new payload's length), then operations until `len`
//! bytes are made, each `copy` (bytes taken from the baseline at the
//! current offset), `lit` and `lit` bytes. Every number is an unsigned
//! LEB128 varint (7 bits a byte, low group first, at most 5 bytes).
//! Decoding checks everything: a copy past the baseline's end, a run past
//! `len`, an operation that makes no progress, trailing bytes, a varint
//! over 32 bits — each is an error, never a panic.

use bytes::{BufMut, BytesMut};

/// Codec byte of Rally's generic delta.
pub const CODEC_RALLY: u8 = 0;
/// Codec byte of a delta the game encoded itself (`Game::delta`); only a
/// client given the game's decoder can apply it.
pub const CODEC_GAME: u8 = 1;

/// A literal run ends where at least this many bytes equal the baseline:
/// a copy operation of fewer would cost more than the bytes it saves.
const MIN_COPY: usize = 3;

/// Why a delta could not be applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DeltaError {
    #[error("delta truncated")]
    Truncated,
    #[error("a varint is longer than 32 bits")]
    Varint,
    #[error("a copy reaches past the baseline")]
    CopyPastBase,
    #[error("a run reaches past the payload's length")]
    PastEnd,
    #[error("an operation makes no progress")]
    Empty,
    #[error("{0} trailing bytes after the delta")]
    Trailing(usize),
}

fn put_varint(out: &mut BytesMut, mut v: usize) {
    while v >= 0x80 {
        out.put_u8((v as u8 & 0x7f) | 0x80);
        v >>= 7;
    }
    out.put_u8(v as u8);
}

fn varint(input: &mut &[u8]) -> Result<usize, DeltaError> {
    let mut v: u64 = 0;
    for i in 0..5 {
        let (&b, rest) = input.split_first().ok_or(DeltaError::Truncated)?;
        *input = rest;
        v |= ((b & 0x7f) as u64) << (7 * i);
        if b & 0x80 == 0 {
            return u32::try_from(v)
                .map(|v| v as usize)
                .map_err(|_| DeltaError::Varint);
        }
    }
    Err(DeltaError::Varint)
}

/// How many bytes from `at` equal the baseline (0 past its end).
fn same_run(base: &[u8], cur: &[u8], at: usize) -> usize {
    let end = base.len().min(cur.len());
    if at >= end {
        return 0;
    }
    base[at..end]
        .iter()
        .zip(&cur[at..end])
        .take_while(|(a, b)| a == b)
        .count()
}

/// Appends the delta that makes `cur` from `base` to `out`.
pub fn encode(base: &[u8], cur: &[u8], out: &mut BytesMut) {
    put_varint(out, cur.len());
    let mut at = 0;
    while at < cur.len() {
        let copy = same_run(base, cur, at);
        let lit_start = at + copy;
        // The literal runs until MIN_COPY bytes in a row equal the
        // baseline, or to the end.
        let mut end = lit_start;
        while end < cur.len() {
            let same = same_run(base, cur, end);
            if same >= MIN_COPY || end + same == cur.len() {
                break;
            }
            end += same.max(1);
        }
        put_varint(out, copy);
        put_varint(out, end - lit_start);
        out.put_slice(&cur[lit_start..end]);
        at = end;
    }
}

/// Writes the payload `delta` makes from `base` into `out` (cleared first).
pub fn apply(base: &[u8], delta: &[u8], out: &mut Vec<u8>) -> Result<(), DeltaError> {
    out.clear();
    let mut input = delta;
    let len = varint(&mut input)?;
    // `len` is bounded by the delta's own size: a copy run is at most the
    // baseline, a literal at most the delta.
    if len > base.len() + delta.len() {
        return Err(DeltaError::PastEnd);
    }
    out.reserve(len);
    while out.len() < len {
        let copy = varint(&mut input)?;
        let lit = varint(&mut input)?;
        if copy == 0 && lit == 0 {
            return Err(DeltaError::Empty);
        }
        let at = out.len();
        if at + copy + lit > len {
            return Err(DeltaError::PastEnd);
        }
        let from = base.get(at..at + copy).ok_or(DeltaError::CopyPastBase)?;
        out.extend_from_slice(from);
        let (bytes, rest) = input.split_at_checked(lit).ok_or(DeltaError::Truncated)?;
        out.extend_from_slice(bytes);
        input = rest;
    }
    match input.len() {
        0 => Ok(()),
        n => Err(DeltaError::Trailing(n)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn roundtrip(base: &[u8], cur: &[u8]) -> usize {
        let mut d = BytesMut::new();
        encode(base, cur, &mut d);
        let mut out = Vec::new();
        apply(base, &d, &mut out).unwrap();
        assert_eq!(out, cur);
        d.len()
    }

    #[test]
    fn unchanged_payloads_cost_a_few_bytes() {
        let p = vec![7u8; 1010];
        // len (2 bytes), copy 1010 (2 bytes), lit 0.
        assert_eq!(roundtrip(&p, &p), 5);
        assert_eq!(roundtrip(&[], &[]), 1);
    }

    #[test]
    fn one_changed_entity_costs_its_bytes_and_two_runs() {
        let base: Vec<u8> = (0..1010u32).map(|i| i as u8).collect();
        let mut cur = base.clone();
        cur[500] ^= 1;
        cur[502] ^= 1;
        // len 2 + (copy 2, lit 1, 3 bytes) + (copy 2, lit 1).
        assert_eq!(roundtrip(&base, &cur), 2 + 2 + 1 + 3 + 2 + 1);
    }

    #[test]
    fn growth_shrinking_and_empty_baselines_work() {
        roundtrip(b"abc", b"abcdef");
        roundtrip(b"abcdef", b"abc");
        roundtrip(b"", b"xyz");
        roundtrip(b"xyz", b"");
    }

    #[test]
    fn bad_deltas_are_errors_not_panics() {
        let mut out = Vec::new();
        assert_eq!(apply(b"", &[], &mut out), Err(DeltaError::Truncated));
        // len 4, copy 4 from an empty baseline.
        assert_eq!(
            apply(b"ab", &[4, 4, 0], &mut out),
            Err(DeltaError::CopyPastBase)
        );
        // len 2, copy 0 lit 0.
        assert_eq!(apply(b"ab", &[2, 0, 0], &mut out), Err(DeltaError::Empty));
        // len 1, lit 2.
        assert_eq!(
            apply(b"ab", &[1, 0, 2, 1, 2], &mut out),
            Err(DeltaError::PastEnd)
        );
        // len 1, lit 1 with no byte.
        assert_eq!(apply(b"", &[1, 0, 1], &mut out), Err(DeltaError::Truncated));
        assert_eq!(
            apply(b"a", &[1, 1, 0, 9], &mut out),
            Err(DeltaError::Trailing(1))
        );
        assert_eq!(
            apply(b"", &[0xff, 0xff, 0xff, 0xff, 0x7f], &mut out),
            Err(DeltaError::Varint)
        );
        // A huge announced length is refused before anything is reserved.
        assert_eq!(
            apply(b"", &[0xff, 0xff, 0xff, 0x0f], &mut out),
            Err(DeltaError::PastEnd)
        );
    }

    proptest! {
        #[test]
        fn any_payload_roundtrips(
            base in proptest::collection::vec(any::<u8>(), 0..300),
            edits in proptest::collection::vec((any::<u16>(), any::<u8>()), 0..40),
            grow in proptest::collection::vec(any::<u8>(), 0..20),
            cut in 0usize..40,
        ) {
            let mut cur = base.clone();
            for (at, v) in edits {
                if !cur.is_empty() {
                    let i = at as usize % cur.len();
                    cur[i] = v;
                }
            }
            cur.truncate(cur.len().saturating_sub(cut));
            cur.extend_from_slice(&grow);
            let n = roundtrip(&base, &cur);
            // Never much worse than sending the payload itself.
            prop_assert!(n <= cur.len() + 2 * (cur.len() / MIN_COPY + 1) + 5);
        }

        #[test]
        fn random_deltas_never_panic(
            base in proptest::collection::vec(any::<u8>(), 0..64),
            delta in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let mut out = Vec::new();
            let _ = apply(&base, &delta, &mut out);
        }
    }
}
