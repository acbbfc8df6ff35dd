//! One TCP connection: a bounded read buffer cut into frames, and a bounded write buffer
//! drained as the socket accepts it.

use crate::codec::{self, Frame};
use crate::frame;
use mio::net::TcpStream;
use std::io::{self, Read, Write};

/// A connection whose unsent bytes exceed this is dropped (peers) or closed (clients): a slow
/// reader may not grow our memory without bound.
pub const OUT_BYTES_MAX: usize = 64 * 1024 * 1024;
const READ_CHUNK_BYTES: usize = 64 * 1024;
const READ_ROUND_BYTES: usize = 1024 * 1024;

#[derive(Debug)]
pub struct Connection {
    pub stream: TcpStream,
    /// Received bytes live in `inbound[start..filled]`; the vector's length is its zeroed
    /// capacity, so reads never pay to clear memory again.
    inbound: Vec<u8>,
    start: usize,
    filled: usize,
    outbound: Vec<u8>,
    /// Bytes of `outbound` already written.
    written: usize,
}

/// Why a connection must close.
#[derive(Debug)]
pub enum Closed {
    Eof,
    Io(io::Error),
    Protocol(String),
}

impl std::fmt::Display for Closed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Closed::Eof => write!(f, "closed by the other side"),
            Closed::Io(error) => write!(f, "{error}"),
            Closed::Protocol(why) => write!(f, "{why}"),
        }
    }
}

impl Connection {
    pub fn new(stream: TcpStream) -> Connection {
        let _ = stream.set_nodelay(true);
        Connection { stream, inbound: Vec::new(), start: 0, filled: 0, outbound: Vec::new(), written: 0 }
    }

    /// Reads what is available, at most `READ_ROUND_BYTES` per call so one busy sender cannot
    /// grow the buffer without bound. Returns true if it stopped at that limit: more may be
    /// waiting, and since readiness is edge-triggered the caller must call again.
    pub fn read(&mut self) -> Result<bool, Closed> {
        let mut read = 0;
        while read < READ_ROUND_BYTES {
            if self.inbound.len() - self.filled < READ_CHUNK_BYTES {
                self.make_room();
            }
            match self.stream.read(&mut self.inbound[self.filled..]) {
                Ok(0) => return Err(Closed::Eof),
                Ok(n) => {
                    self.filled += n;
                    read += n;
                }
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                Err(error) => return Err(Closed::Io(error)),
            }
        }
        Ok(true)
    }

    /// Moves unread bytes to the front, and grows the buffer if that is not enough.
    fn make_room(&mut self) {
        if self.start > 0 {
            self.inbound.copy_within(self.start..self.filled, 0);
            self.filled -= self.start;
            self.start = 0;
        }
        if self.inbound.len() - self.filled < READ_CHUNK_BYTES {
            let grown = (self.inbound.len() * 2).max(READ_CHUNK_BYTES * 2);
            self.inbound.resize(grown, 0);
        }
    }

    /// The next complete frame, decoded; `Ok(None)` when none has fully arrived.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, Closed> {
        let pending = &self.inbound[self.start..self.filled];
        let Some((range, used)) = frame::decode(pending).map_err(|e| Closed::Protocol(e.to_string()))? else {
            return Ok(None);
        };
        let frame = codec::decode(&pending[range]).map_err(|e| Closed::Protocol(e.to_string()))?;
        self.start += used;
        if self.start == self.filled {
            self.start = 0;
            self.filled = 0;
        }
        Ok(Some(frame))
    }

    /// Queues a frame; false if the queue is over its limit (the frame is not queued).
    pub fn queue(&mut self, frame: &Frame) -> bool {
        if self.outbound.len() - self.written > OUT_BYTES_MAX {
            return false;
        }
        frame::encode_with(&mut self.outbound, |out| codec::encode(frame, out));
        true
    }

    pub fn has_outbound(&self) -> bool {
        self.written < self.outbound.len()
    }

    /// Writes as much as the socket takes.
    pub fn flush(&mut self) -> Result<(), Closed> {
        while self.written < self.outbound.len() {
            match self.stream.write(&self.outbound[self.written..]) {
                Ok(0) => return Err(Closed::Eof),
                Ok(n) => self.written += n,
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => break,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                Err(error) => return Err(Closed::Io(error)),
            }
        }
        if self.written == self.outbound.len() {
            self.outbound.clear();
            self.written = 0;
        } else if self.written > 1024 * 1024 {
            self.outbound.drain(..self.written);
            self.written = 0;
        }
        Ok(())
    }
}
