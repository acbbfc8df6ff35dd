//! Framing on every TCP connection: `[length u32][crc32 u32][payload]`, big-endian. A frame
//! longer than `FRAME_BYTES_MAX` or whose checksum does not match is an error that closes the
//! connection; nothing in a bad frame is acted on.

use crate::codec::{self, CodecError, Frame};
use std::fmt;

/// The largest payload accepted. Every other size limit on the wire derives from it
/// (`limits.rs`): a full AppendEntries (1 MiB of entries) fits with ample margin, and so does
/// the largest single command.
pub const FRAME_BYTES_MAX: usize = 16 * 1024 * 1024;
/// The frame header: length and checksum.
pub const HEADER_BYTES: usize = 8;

#[derive(Debug, PartialEq, Eq)]
pub enum FrameError {
    TooLarge { bytes: usize },
    Checksum { expected: u32, actual: u32 },
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::TooLarge { bytes } => {
                write!(f, "frame of {bytes} bytes exceeds the {FRAME_BYTES_MAX}-byte limit")
            }
            FrameError::Checksum { expected, actual } => {
                write!(f, "frame checksum mismatch (header {expected:08x}, payload {actual:08x})")
            }
        }
    }
}

impl std::error::Error for FrameError {}

/// Why received bytes did not give a frame: bad framing or a malformed payload. Either way the
/// stream cannot be trusted any more.
#[derive(Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// The length or checksum is wrong.
    Frame(FrameError),
    /// The frame is sound but its payload does not decode.
    Payload(CodecError),
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Frame(error) => write!(f, "{error}"),
            DecodeError::Payload(error) => write!(f, "{error}"),
        }
    }
}

impl std::error::Error for DecodeError {}

/// Received bytes waiting to be cut into frames: `bytes[start..filled]` hold data, and the
/// vector's length is its zeroed capacity, so reads never pay to clear memory again. Shared by
/// the node's connections and the blocking client.
#[derive(Debug, Default)]
pub struct Inbox {
    bytes: Vec<u8>,
    start: usize,
    filled: usize,
    /// The size of the frame `next_frame` returned last, header included (for metrics).
    last_frame_bytes: usize,
}

impl Inbox {
    /// Free space of at least `at_least` bytes to read into (moving unread bytes to the front
    /// or growing first); report what was read with `filled`.
    pub fn room(&mut self, at_least: usize) -> &mut [u8] {
        if self.bytes.len() - self.filled < at_least {
            self.bytes.copy_within(self.start..self.filled, 0);
            (self.start, self.filled) = (0, self.filled - self.start);
            if self.bytes.len() - self.filled < at_least {
                let grown = (self.bytes.len() * 2).max(2 * at_least);
                self.bytes.resize(grown, 0);
            }
        }
        &mut self.bytes[self.filled..]
    }

    pub fn filled(&mut self, read: usize) {
        self.filled += read;
    }

    /// The next complete frame, decoded; `Ok(None)` until one has fully arrived. An error
    /// (checksum, size, malformed payload) means the stream cannot be trusted any more.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, DecodeError> {
        let pending = &self.bytes[self.start..self.filled];
        let Some((range, used)) = decode(pending).map_err(DecodeError::Frame)? else {
            return Ok(None);
        };
        let frame = codec::decode(&pending[range]).map_err(DecodeError::Payload)?;
        self.start += used;
        self.last_frame_bytes = used;
        if self.start == self.filled {
            (self.start, self.filled) = (0, 0);
        }
        Ok(Some(frame))
    }

    /// The size of the frame `next_frame` returned last, header included.
    pub fn last_frame_bytes(&self) -> usize {
        self.last_frame_bytes
    }

    /// Whether received bytes wait to be cut into frames.
    pub fn is_empty(&self) -> bool {
        self.start == self.filled
    }
}

/// Appends one frame holding `payload` to `out`.
pub fn encode(payload: &[u8], out: &mut Vec<u8>) {
    debug_assert!(payload.len() <= FRAME_BYTES_MAX);
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(&crc32fast::hash(payload).to_be_bytes());
    out.extend_from_slice(payload);
}

/// Writes a frame whose payload is produced by `fill`, without a temporary buffer.
pub fn encode_with(out: &mut Vec<u8>, fill: impl FnOnce(&mut Vec<u8>)) {
    let start = out.len();
    out.extend_from_slice(&[0; HEADER_BYTES]);
    fill(out);
    let payload_len = out.len() - start - HEADER_BYTES;
    let crc = crc32fast::hash(&out[start + HEADER_BYTES..]);
    out[start..start + 4].copy_from_slice(&(payload_len as u32).to_be_bytes());
    out[start + 4..start + 8].copy_from_slice(&crc.to_be_bytes());
}

/// Takes the next complete frame off the front of `buffer`: `Ok(None)` until one has fully
/// arrived. Returns the payload's range within `buffer` and the frame's total length.
pub fn decode(buffer: &[u8]) -> Result<Option<(std::ops::Range<usize>, usize)>, FrameError> {
    if buffer.len() < HEADER_BYTES {
        return Ok(None);
    }
    let len = u32::from_be_bytes(buffer[0..4].try_into().expect("4 bytes")) as usize;
    if len > FRAME_BYTES_MAX {
        return Err(FrameError::TooLarge { bytes: len });
    }
    if buffer.len() < HEADER_BYTES + len {
        return Ok(None);
    }
    let expected = u32::from_be_bytes(buffer[4..8].try_into().expect("4 bytes"));
    let payload = HEADER_BYTES..HEADER_BYTES + len;
    let actual = crc32fast::hash(&buffer[payload.clone()]);
    if actual != expected {
        return Err(FrameError::Checksum { expected, actual });
    }
    Ok(Some((payload, HEADER_BYTES + len)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inbox_cuts_frames_arriving_in_pieces_and_reuses_its_room() {
        let mut wire = Vec::new();
        for request in 0..50u64 {
            encode_with(&mut wire, |out| {
                codec::encode(&Frame::Append { request, command: vec![7; 300] }, out)
            });
        }
        let mut inbox = Inbox::default();
        let mut seen = 0;
        for piece in wire.chunks(97) {
            let room = inbox.room(piece.len());
            room[..piece.len()].copy_from_slice(piece);
            inbox.filled(piece.len());
            while let Some(frame) = inbox.next_frame().unwrap() {
                assert!(matches!(frame, Frame::Append { request, .. } if request == seen));
                seen += 1;
            }
        }
        assert_eq!(seen, 50);
        assert!(inbox.bytes.len() <= 1024, "room is reused, not grown per frame: {}", inbox.bytes.len());
        // A one-byte frame whose checksum is wrong is refused.
        let room = inbox.room(9);
        room[..9].copy_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 9]);
        inbox.filled(9);
        assert!(matches!(inbox.next_frame(), Err(DecodeError::Frame(FrameError::Checksum { .. }))));
    }

    #[test]
    fn round_trip_partial_and_corrupt_frames() {
        let mut wire = Vec::new();
        encode(b"hello", &mut wire);
        encode_with(&mut wire, |out| out.extend_from_slice(b"world!"));
        assert_eq!(decode(&wire[..7]), Ok(None), "header not complete");
        assert_eq!(decode(&wire[..10]), Ok(None), "payload not complete");
        let (range, used) = decode(&wire).unwrap().unwrap();
        assert_eq!(&wire[range], b"hello");
        let (range, _) = decode(&wire[used..]).unwrap().unwrap();
        assert_eq!(&wire[used..][range], b"world!");
        let mut corrupt = wire.clone();
        corrupt[9] ^= 1;
        assert!(matches!(decode(&corrupt), Err(FrameError::Checksum { .. })));
        let huge = ((FRAME_BYTES_MAX + 1) as u32).to_be_bytes();
        assert!(matches!(
            decode(&[huge[0], huge[1], huge[2], huge[3], 0, 0, 0, 0]),
            Err(FrameError::TooLarge { .. })
        ));
    }
}
