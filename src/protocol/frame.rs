//! Length-prefixed framing for the WebTransport reliable stream.
//!
//! A stream is a byte stream: a frame may arrive split across many reads or
//! several frames in one read. Each frame is a big-endian u16 length followed
//! by exactly that many bytes holding one message.

use bytes::{Buf, BufMut, Bytes, BytesMut};

pub const FRAME_HEADER_LEN: usize = 2;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("frame of {len} bytes exceeds the limit of {max}")]
    TooLarge { len: usize, max: usize },
    #[error("empty frame")]
    Empty,
}

/// Appends one frame holding `msg` to `out`.
///
/// Panics if `msg` is longer than 65 535 bytes: callers only frame messages
/// they encoded themselves, bounded by `MAX_SERVER_MSG`.
pub fn encode_frame(out: &mut BytesMut, msg: &[u8]) {
    let len = u16::try_from(msg.len()).expect("frame payload bounded by MAX_SERVER_MSG");
    out.reserve(FRAME_HEADER_LEN + msg.len());
    out.put_u16(len);
    out.put_slice(msg);
}

/// Reassembles frames from a byte stream. Holds at most one partial frame
/// (bounded by `max`) plus whatever one read appended.
#[derive(Debug)]
pub struct FrameDecoder {
    buf: BytesMut,
    max: usize,
}

impl FrameDecoder {
    pub fn new(max: usize) -> Self {
        FrameDecoder {
            buf: BytesMut::with_capacity(FRAME_HEADER_LEN + max.min(4096)),
            max,
        }
    }

    /// Where the caller appends newly read bytes.
    pub fn buffer(&mut self) -> &mut BytesMut {
        &mut self.buf
    }

    /// Bytes received but not yet returned as a frame.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }

    /// The next complete frame's payload; `Ok(None)` means more bytes are
    /// needed. The length is checked before the payload arrives, so a peer
    /// cannot make the server buffer an oversized frame.
    pub fn decode(&mut self) -> Result<Option<Bytes>, FrameError> {
        if self.buf.len() < FRAME_HEADER_LEN {
            return Ok(None);
        }
        let len = u16::from_be_bytes([self.buf[0], self.buf[1]]) as usize;
        if len == 0 {
            return Err(FrameError::Empty);
        }
        if len > self.max {
            return Err(FrameError::TooLarge { len, max: self.max });
        }
        if self.buf.len() < FRAME_HEADER_LEN + len {
            return Ok(None);
        }
        self.buf.advance(FRAME_HEADER_LEN);
        Ok(Some(self.buf.split_to(len).freeze()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(payloads: &[&[u8]]) -> BytesMut {
        let mut out = BytesMut::new();
        for p in payloads {
            encode_frame(&mut out, p);
        }
        out
    }

    #[test]
    fn reassembles_across_every_split_point_byte_by_byte() {
        let wire = frames(&[b"hello", b"x", &[7u8; 300]]);
        let mut dec = FrameDecoder::new(1024);
        let mut got = Vec::new();
        for &b in wire.iter() {
            dec.buffer().put_u8(b);
            while let Some(f) = dec.decode().unwrap() {
                got.push(f);
            }
        }
        assert_eq!(got.len(), 3);
        assert_eq!(&got[0][..], b"hello");
        assert_eq!(&got[1][..], b"x");
        assert_eq!(&got[2][..], &[7u8; 300][..]);
        assert_eq!(dec.pending(), 0);
    }

    #[test]
    fn several_frames_in_one_read() {
        let mut dec = FrameDecoder::new(16);
        dec.buffer()
            .extend_from_slice(&frames(&[b"a", b"bb", b"ccc"]));
        let all: Vec<_> = std::iter::from_fn(|| dec.decode().unwrap()).collect();
        assert_eq!(all, vec![&b"a"[..], &b"bb"[..], &b"ccc"[..]]);
    }

    #[test]
    fn oversized_length_is_refused_before_the_payload_arrives() {
        let mut dec = FrameDecoder::new(16);
        dec.buffer().extend_from_slice(&[0x01, 0x00]);
        assert_eq!(
            dec.decode(),
            Err(FrameError::TooLarge { len: 256, max: 16 })
        );
    }

    #[test]
    fn zero_length_frame_is_an_error() {
        let mut dec = FrameDecoder::new(16);
        dec.buffer().extend_from_slice(&[0, 0]);
        assert_eq!(dec.decode(), Err(FrameError::Empty));
    }
}
