//! Fuzzes everything that parses peer bytes (protocol version 2): both
//! message decoders and the stream frame reassembler, fed in arbitrary
//! chunks. Any panic is a bug: network input must only ever produce an
//! error.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use rally::protocol::{ClientMsg, FrameDecoder, ServerMsg};

fuzz_target!(|data: &[u8]| {
    let msg = Bytes::copy_from_slice(data);
    if let Ok(m) = ClientMsg::decode(&msg) {
        // Decoding is strict and client encoding canonical: what decodes
        // re-encodes to exactly the same bytes (the game's bytes included).
        assert_eq!(m.to_bytes(), msg);
        if let ClientMsg::Input { inputs, .. } = &m {
            // The inputs view walks exactly the entries it validated.
            assert_eq!(inputs.iter().count(), inputs.len());
        }
    }
    if let Ok(m) = ServerMsg::decode(&msg) {
        // The encoder cuts an Error reason to 200 bytes; every other server
        // message re-encodes exactly.
        if !matches!(m, ServerMsg::Error { .. }) {
            assert_eq!(m.to_bytes(), msg);
        }
    }
    // First byte picks a chunk size, the rest is a byte stream.
    if let Some((&chunk, stream)) = data.split_first() {
        let mut dec = FrameDecoder::new(256);
        for piece in stream.chunks(chunk.max(1) as usize) {
            dec.buffer().extend_from_slice(piece);
            loop {
                match dec.decode() {
                    Ok(Some(frame)) => {
                        let _ = ClientMsg::decode(&frame);
                    }
                    Ok(None) => break,
                    Err(_) => return,
                }
            }
            assert!(dec.pending() <= 2 + 256 + piece.len());
        }
    }
});
