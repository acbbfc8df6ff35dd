//! Framing on every TCP connection: `[length u32][crc32 u32][payload]`, big-endian. A frame
//! longer than `FRAME_BYTES_MAX` or whose checksum does not match is an error that closes the
//! connection; nothing in a bad frame is acted on.

use std::fmt;

/// The largest payload accepted: room for a full AppendEntries batch (the core's default
/// `message_bytes_max` is 1 MiB) with ample margin.
pub const FRAME_BYTES_MAX: usize = 16 * 1024 * 1024;
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
