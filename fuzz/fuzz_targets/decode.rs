//! Fuzzes everything that parses peer bytes: both message decoders and the
//! stream frame reassembler, fed in arbitrary chunks. Any panic is a bug:
//! network input must only ever produce an error.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rally::protocol::{ClientMsg, FrameDecoder, ServerMsg};

fuzz_target!(|data: &[u8]| {
    if let Ok(msg) = ClientMsg::decode(data) {
        // Decoding is strict and client encoding canonical: what decodes
        // re-encodes to exactly the same bytes.
        assert_eq!(&msg.to_bytes()[..], data);
    }
    // Server messages may carry NaN floats, so only "never panics" here.
    let _ = ServerMsg::decode(data);
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
