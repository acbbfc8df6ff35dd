//! One TCP connection: a bounded read buffer cut into frames, and a bounded write buffer
//! drained as the socket accepts it.

use crate::codec::{self, Frame};
use crate::frame::{self, DecodeError, Inbox};
use mio::net::TcpStream;
use replog_core::NodeId;
use std::fmt;
use std::io::{self, Read, Write};
use std::net::SocketAddr;

/// The first byte of every TLS record that opens a handshake (ContentType::Handshake): a
/// connection to a TLS node that starts with anything else is plain text.
const TLS_HANDSHAKE_BYTE: u8 = 0x16;

/// A connection whose unsent bytes exceed this is dropped (peers) or closed (clients): a slow
/// reader may not grow our memory without bound.
pub const OUT_BYTES_MAX: usize = 64 * 1024 * 1024;
const READ_CHUNK_BYTES: usize = 64 * 1024;
const READ_ROUND_BYTES: usize = 1024 * 1024;

#[derive(Debug)]
pub struct Connection {
    pub stream: TcpStream,
    transport: Transport,
    inbound: Inbox,
    outbound: Vec<u8>,
    /// Bytes of `outbound` already written.
    written: usize,
}

/// What carries the frames: the socket itself, or a TLS session over it. The framing above
/// (`inbound`, `outbound`) holds plain text either way.
#[derive(Debug)]
enum Transport {
    Plain,
    Tls {
        session: Box<rustls::Connection>,
        /// No byte has arrived yet (a server checks the first one is a TLS handshake).
        fresh: bool,
    },
}

/// Why a connection must close.
#[derive(Debug)]
pub enum Closed {
    /// The other side closed it.
    Eof,
    /// Reading or writing failed.
    Io(io::Error),
    /// The other side broke the protocol.
    Protocol(Violation),
}

impl fmt::Display for Closed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Closed::Eof => write!(f, "closed by the other side"),
            Closed::Io(error) => write!(f, "{error}"),
            Closed::Protocol(violation) => write!(f, "{violation}"),
        }
    }
}

/// Who is on the other end of an accepted connection, as far as its frames have told.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Caller {
    /// No frame yet: a peer's hello or a client's first request decides.
    Unknown,
    /// A configured peer, after its hello.
    Peer(NodeId),
    /// A client (`append`, `query`, `status`, `bench`).
    Client,
}

/// How the other side broke the protocol. The connection closes with a logged reason; the
/// node keeps serving everyone else.
#[derive(Debug)]
pub enum Violation {
    /// Bytes that are not a frame, or a frame whose payload does not decode.
    Undecodable(DecodeError),
    /// A hello whose address does not parse.
    BadHelloAddress(String),
    /// A hello that claims this node's own id or address (an impostor, or a node started twice
    /// with one folder).
    Impostor {
        /// The name the caller gave.
        name: String,
        /// The address it claimed.
        address: SocketAddr,
    },
    /// A hello that claims the id of a node known at another address (boxed: it is rare, and
    /// would make every `Closed` larger).
    IdentityTaken(Box<TakenIdentity>),
    /// A Raft message whose sender or receiver is not the link's.
    Misaddressed {
        /// The message's sender.
        from: NodeId,
        /// The message's receiver.
        to: NodeId,
        /// The peer whose link carried it.
        link: NodeId,
    },
    /// A TLS node got a first byte that is no TLS handshake: a plain-text client or peer.
    Plaintext,
    /// The TLS session failed: a bad handshake, a certificate from another CA, an expired
    /// one, garbage in the records.
    Tls(rustls::Error),
    /// A peer's hello claims an address (or name) its certificate does not name.
    CertificateMismatch {
        /// The name the caller gave.
        name: String,
        /// The address it claimed.
        address: SocketAddr,
    },
    /// Nothing said who the caller is in time: no first frame (with TLS, maybe no finished
    /// handshake either), and no byte for 10 s or no whole frame in 2 minutes.
    Silent,
    /// A frame this caller may not send (a client request on a peer link, a second hello...).
    UnexpectedFrame {
        /// The frame's name (`append`, `hello`, ...).
        frame: &'static str,
        /// Who sent it.
        caller: Caller,
    },
}

/// What a hello claiming another node's id said, and where that node is known to be.
#[derive(Debug)]
pub struct TakenIdentity {
    /// The name the caller gave.
    pub name: String,
    /// The id it claimed.
    pub id: NodeId,
    /// The address it claimed.
    pub address: SocketAddr,
    /// Where that id is known to be.
    pub known: SocketAddr,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Violation::Undecodable(error) => write!(f, "{error}"),
            Violation::BadHelloAddress(address) => write!(f, "hello with a bad address {address:?}"),
            Violation::Impostor { name, address } => {
                write!(f, "hello from {name} at {address} claims this node's own identity")
            }
            Violation::Plaintext => write!(f, "plain-text connection to a TLS node"),
            Violation::Tls(error) => write!(f, "TLS: {error}"),
            Violation::CertificateMismatch { name, address } => {
                write!(f, "hello from {name} at {address}: its certificate does not name that address")
            }
            Violation::IdentityTaken(taken) => write!(
                f,
                "hello from {} at {} claims the id {} of the node at {}",
                taken.name,
                taken.address,
                crate::storage::id_text(taken.id),
                taken.known
            ),
            Violation::Misaddressed { from, to, link } => {
                write!(f, "message from {from} to {to} on the link of {link}")
            }
            Violation::Silent => write!(f, "no first frame: silent for 10 s, or not whole in 2 minutes"),
            Violation::UnexpectedFrame { frame, caller } => {
                write!(f, "unexpected {frame} frame on a {caller:?} connection")
            }
        }
    }
}

impl Connection {
    pub fn new(stream: TcpStream) -> Connection {
        let _ = stream.set_nodelay(true);
        Connection {
            stream,
            transport: Transport::Plain,
            inbound: Inbox::default(),
            outbound: Vec::new(),
            written: 0,
        }
    }

    /// A connection whose bytes go through the TLS `session` (a server or client side).
    pub fn with_tls(stream: TcpStream, session: rustls::Connection) -> Connection {
        let mut connection = Connection::new(stream);
        connection.transport = Transport::Tls { session: Box::new(session), fresh: true };
        connection
    }

    /// Whether the connection is TLS.
    pub fn is_tls(&self) -> bool {
        matches!(self.transport, Transport::Tls { .. })
    }

    /// Whether the connection can carry frames end to end: always for plain TCP; for TLS once
    /// the handshake is over (on a client, the server may still refuse its certificate then:
    /// that arrives as an alert and closes the connection).
    pub fn is_established(&self) -> bool {
        match &self.transport {
            Transport::Tls { session, .. } => !session.is_handshaking(),
            Transport::Plain => true,
        }
    }

    /// The other side's certificate, once a TLS handshake has shown it.
    pub fn peer_certificate(&self) -> Option<&rustls::pki_types::CertificateDer<'static>> {
        match &self.transport {
            Transport::Tls { session, .. } => session.peer_certificates().and_then(|chain| chain.first()),
            Transport::Plain => None,
        }
    }

    /// Reads what is available, at most `READ_ROUND_BYTES` per call so one busy sender cannot
    /// grow the buffer without bound. Returns true if it stopped at that limit: more may be
    /// waiting, and since readiness is edge-triggered the caller must call again.
    pub fn read(&mut self) -> Result<bool, Closed> {
        if self.is_tls() {
            return self.read_tls();
        }
        let mut read = 0;
        while read < READ_ROUND_BYTES {
            match self.stream.read(self.inbound.room(READ_CHUNK_BYTES)) {
                Ok(0) => return Err(Closed::Eof),
                Ok(n) => {
                    self.inbound.filled(n);
                    read += n;
                }
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                Err(error) => return Err(Closed::Io(error)),
            }
        }
        Ok(true)
    }

    /// `read` through the TLS session: raw bytes from the socket into rustls, plain text out
    /// of it into the inbox.
    fn read_tls(&mut self) -> Result<bool, Closed> {
        let Transport::Tls { session, fresh } = &mut self.transport else {
            unreachable!("read_tls on a plain connection");
        };
        let mut buffer = [0u8; 16 * 1024];
        let mut read = 0;
        while read < READ_ROUND_BYTES {
            let n = match self.stream.read(&mut buffer) {
                Ok(0) => return Err(Closed::Eof),
                Ok(n) => n,
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                Err(error) => return Err(Closed::Io(error)),
            };
            if *fresh && matches!(**session, rustls::Connection::Server(_)) && buffer[0] != TLS_HANDSHAKE_BYTE
            {
                return Err(Closed::Protocol(Violation::Plaintext));
            }
            *fresh = false;
            read += n;
            let mut raw = &buffer[..n];
            while !raw.is_empty() {
                session.read_tls(&mut raw).map_err(Closed::Io)?;
                if let Err(error) = session.process_new_packets() {
                    // Tell the other side why (the alert), as far as the socket takes it.
                    let _ = session.write_tls(&mut self.stream);
                    return Err(Closed::Protocol(Violation::Tls(error)));
                }
                loop {
                    match session.reader().read(self.inbound.room(READ_CHUNK_BYTES)) {
                        Ok(0) => return Err(Closed::Eof), // close_notify
                        Ok(n) => self.inbound.filled(n),
                        Err(error) if error.kind() == io::ErrorKind::WouldBlock => break,
                        Err(error) => return Err(Closed::Io(error)),
                    }
                }
            }
        }
        Ok(true)
    }

    /// The next complete frame, decoded; `Ok(None)` when none has fully arrived.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, Closed> {
        self.inbound.next_frame().map_err(|error| Closed::Protocol(Violation::Undecodable(error)))
    }

    /// Queues a frame; false if the queue is over its limit (the frame is not queued).
    pub fn queue(&mut self, frame: &Frame) -> bool {
        self.queue_sized(frame).is_some()
    }

    /// Queues a frame and returns its size (header included); None if the queue is over its
    /// limit (the frame is not queued).
    pub fn queue_sized(&mut self, frame: &Frame) -> Option<usize> {
        if self.outbound.len() - self.written > OUT_BYTES_MAX {
            return None;
        }
        let before = self.outbound.len();
        frame::encode_with(&mut self.outbound, |out| codec::encode(frame, out));
        Some(self.outbound.len() - before)
    }

    /// Whether received plain text waits in the inbox (a whole frame or part of one).
    pub fn has_inbound(&self) -> bool {
        !self.inbound.is_empty()
    }

    /// The size of the frame `next_frame` returned last, header included.
    pub fn last_frame_bytes(&self) -> usize {
        self.inbound.last_frame_bytes()
    }

    pub fn has_outbound(&self) -> bool {
        let tls_pending = match &self.transport {
            Transport::Tls { session, .. } => session.wants_write(),
            Transport::Plain => false,
        };
        self.written < self.outbound.len() || tls_pending
    }

    /// Writes as much as the socket takes.
    pub fn flush(&mut self) -> Result<(), Closed> {
        if let Transport::Tls { session, .. } = &mut self.transport {
            // Plain text into the session as far as it takes it (it buffers a bounded amount,
            // and holds it until the handshake is done), TLS records out to the socket.
            loop {
                if session.wants_write() {
                    match session.write_tls(&mut self.stream) {
                        Ok(0) => return Err(Closed::Eof),
                        Ok(_) => {}
                        Err(error) if error.kind() == io::ErrorKind::WouldBlock => break,
                        Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                        Err(error) => return Err(Closed::Io(error)),
                    }
                } else if self.written < self.outbound.len() {
                    let n = session.writer().write(&self.outbound[self.written..]).map_err(Closed::Io)?;
                    if n == 0 {
                        break;
                    }
                    self.written += n;
                } else {
                    break;
                }
            }
            self.compact();
            return Ok(());
        }
        while self.written < self.outbound.len() {
            match self.stream.write(&self.outbound[self.written..]) {
                Ok(0) => return Err(Closed::Eof),
                Ok(n) => self.written += n,
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => break,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                Err(error) => return Err(Closed::Io(error)),
            }
        }
        self.compact();
        Ok(())
    }

    /// Drops what was written from the front of the buffer.
    fn compact(&mut self) {
        if self.written == self.outbound.len() {
            self.outbound.clear();
            self.written = 0;
        } else if self.written > 1024 * 1024 {
            self.outbound.drain(..self.written);
            self.written = 0;
        }
    }
}
