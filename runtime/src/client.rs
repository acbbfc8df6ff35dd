//! The client side of the node protocol. Blocking calls for the CLI and the tests ([`append`],
//! [`query`], [`status`]) that follow leaders and retry within a deadline; a blocking
//! [`Link`] with one node; and [`Pipelined`], a non-blocking connection for callers that run
//! many clients on their own mio loop (`replog bench`).

use crate::address::{self, AddressError};
use crate::codec::{self, AppendResult, Frame, MemberRequest, QueriedEntry};
use crate::connection::{self, Closed};
use crate::frame::{self, Inbox};
use crate::limits::{COMMAND_BYTES_MAX, QUERY_ENTRIES_MAX};
use crate::status::StatusReport;
use crate::tls;
use mio::{Interest, Registry, Token};
use std::fmt;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::thread::sleep;
use std::time::{Duration, Instant};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
const RETRY_PAUSE: Duration = Duration::from_millis(100);
const READ_CHUNK_BYTES: usize = 16 * 1024;

/// Why a client call failed. `Display` gives the one-line message the CLI prints.
#[derive(Debug)]
pub enum ClientError {
    /// The target is not an address.
    Address(AddressError),
    /// The command is larger than one frame can carry to the followers; refused before it
    /// is sent, or by the node.
    CommandTooLarge {
        /// The command's size.
        bytes: u64,
        /// The most a command may hold.
        limit: u64,
    },
    /// Talking to a node failed: `doing` names the step ("cannot connect to", "querying", ...).
    Io {
        /// The step, as the start of the message.
        doing: &'static str,
        /// The node.
        address: SocketAddr,
        /// What the OS said.
        error: io::Error,
    },
    /// A non-blocking connection closed.
    Closed {
        /// The node.
        address: SocketAddr,
        /// Why.
        closed: Closed,
    },
    /// The node does not lead; it names the leader when it knows one.
    NotLeader {
        /// The node asked.
        address: SocketAddr,
        /// The leader's address, as the node gave it.
        leader: Option<String>,
    },
    /// The leader refused the append for now (too many uncommitted entries, ...); a retry
    /// may succeed.
    Rejected {
        /// The leader's words.
        reason: String,
    },
    /// No leader accepted the append before the deadline.
    NoLeader {
        /// The node the call started at.
        target: String,
        /// How long it tried.
        waited: Duration,
        /// What went wrong last, if anything answered at all.
        last: Option<Box<ClientError>>,
    },
    /// No leader confirmed a linearizable query before the deadline.
    ReadUnconfirmed {
        /// The node the call started at.
        target: String,
        /// How long it tried.
        waited: Duration,
    },
    /// The append may or may not be in the log; it is never retried blindly.
    OutcomeUnknown(Uncertain),
    /// The node answered with a frame that does not answer the request.
    UnexpectedAnswer {
        /// The node.
        address: SocketAddr,
        /// The frame's kind.
        frame: &'static str,
    },
    /// A conditional append's condition did not hold: the log's last command ID is `last_id`.
    /// Nothing was appended.
    ConditionFailed {
        /// The last command ID in the leader's log.
        last_id: u64,
    },
    /// The node could not serve the request, and said why.
    Failed {
        /// The node.
        address: SocketAddr,
        /// Its words.
        reason: String,
    },
    /// Commands from `from_id` on were asked for, but the node holds IDs from `first_id` on
    /// only: the ones between were trimmed (retention or `replog trim`).
    Trimmed {
        /// The node.
        address: SocketAddr,
        /// The first ID asked for.
        from_id: u64,
        /// The first ID it holds.
        first_id: u64,
    },
    /// No member of the cluster answered within `waited`.
    Unreachable {
        /// The members tried.
        members: Vec<SocketAddr>,
        /// How long it tried.
        waited: Duration,
        /// What went wrong last.
        last: Option<Box<ClientError>>,
    },
}

/// Why an append's outcome is unknown.
#[derive(Debug)]
pub enum Uncertain {
    /// The node said so (leadership changed before the entry committed), in its words.
    Reported(String),
    /// No answer came before the deadline, after an attempt that may have been appended.
    Deadline {
        /// How long it tried.
        waited: Duration,
        /// What went wrong last.
        last: Option<String>,
    },
    /// The connection broke after the request was sent.
    ConnectionLost {
        /// The node.
        address: SocketAddr,
        /// How it broke.
        error: io::Error,
    },
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::Address(error) => write!(f, "{error}"),
            ClientError::CommandTooLarge { bytes, limit } => {
                write!(f, "a command of {bytes} bytes exceeds the {limit}-byte limit")
            }
            ClientError::Io { doing, address, error } => write!(f, "{doing} {address}: {error}"),
            ClientError::Closed { address, closed } => write!(f, "connection to {address}: {closed}"),
            ClientError::NotLeader { address, leader: Some(_) } => write!(f, "{address} is not the leader"),
            ClientError::NotLeader { address, leader: None } => {
                write!(f, "{address} knows no leader (election in progress?)")
            }
            ClientError::Rejected { reason } => write!(f, "{reason}"),
            ClientError::NoLeader { target, waited, last } => {
                write!(f, "no leader reachable within {:.1}s via {target}: ", waited.as_secs_f64())?;
                match last {
                    Some(last) => write!(f, "{last}"),
                    None => write!(f, "no answer"),
                }
            }
            ClientError::ReadUnconfirmed { target, waited } => write!(
                f,
                "no leader could confirm a linearizable query within {:.1}s via {target}",
                waited.as_secs_f64()
            ),
            ClientError::OutcomeUnknown(uncertain) => write!(f, "outcome unknown: {uncertain}"),
            ClientError::UnexpectedAnswer { address, frame } => {
                write!(f, "unexpected answer from {address} (a {frame} frame)")
            }
            ClientError::Failed { address, reason } => write!(f, "{address} failed: {reason}"),
            ClientError::ConditionFailed { last_id } => {
                write!(f, "condition failed: the last command ID is {last_id}; nothing was appended")
            }
            ClientError::Trimmed { address, from_id, first_id } => write!(
                f,
                "{address} no longer holds ID {from_id}: IDs before {first_id} were trimmed (retention or `replog trim`)"
            ),
            ClientError::Unreachable { members, waited, last } => {
                let members: Vec<String> = members.iter().map(SocketAddr::to_string).collect();
                write!(f, "no member answered within {:.1}s ({})", waited.as_secs_f64(), members.join(", "))?;
                match last {
                    Some(last) => write!(f, ": {last}"),
                    None => Ok(()),
                }
            }
        }
    }
}

impl fmt::Display for Uncertain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Uncertain::Reported(reason) => write!(f, "{reason}"),
            Uncertain::Deadline { waited, last } => {
                write!(f, "no answer within {:.1}s; the command may or may not be in the log", waited.as_secs_f64())?;
                match last {
                    Some(last) => write!(f, " (last: {last})"),
                    None => Ok(()),
                }
            }
            Uncertain::ConnectionLost { address, error } => write!(
                f,
                "lost the connection to {address} after sending ({error}); the command may or may not be in the log: query to check"
            ),
        }
    }
}

impl std::error::Error for ClientError {}

impl From<AddressError> for ClientError {
    fn from(error: AddressError) -> ClientError {
        ClientError::Address(error)
    }
}

/// Where an append landed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Appended {
    /// Position among client commands (what `query` shows as ID).
    pub id: u64,
    /// Raft log index (which also counts the leaders' no-op entries).
    pub index: u64,
    /// The term it was appended in.
    pub term: u64,
    /// The leader that committed it.
    pub leader: SocketAddr,
}

/// Appends one command, following leader hints, retrying while no leader is known, until
/// `deadline`. A connection lost after the request was sent makes the outcome unknown: that
/// is reported, never retried (a retry could append the command twice).
pub fn append(target: &str, command: &[u8], deadline: Duration) -> Result<Appended, ClientError> {
    check_size(command)?;
    let started = Instant::now();
    let home = address::parse(target)?;
    let mut address = home;
    let mut last = None;
    while started.elapsed() < deadline {
        let remaining = deadline.saturating_sub(started.elapsed()).max(Duration::from_millis(100));
        let mut session = match Link::open(address, remaining) {
            Ok(session) => session,
            Err(error) => {
                last = Some(error);
                address = home;
                sleep(RETRY_PAUSE);
                continue;
            }
        };
        match session.append(command) {
            Ok(appended) => return Ok(appended),
            Err(ClientError::NotLeader { address: asked, leader: Some(leader) }) => {
                address = address::parse(&leader)?;
                last = Some(ClientError::NotLeader { address: asked, leader: Some(leader) });
            }
            // No leader known there: ask where we started again. A node we were sent to may
            // never learn the next leader (a leader that removed itself is no member any more).
            Err(error @ ClientError::NotLeader { leader: None, .. }) => {
                last = Some(error);
                address = home;
                sleep(RETRY_PAUSE);
            }
            // Nothing was appended: the leader pushed back, or the request never left.
            Err(error @ (ClientError::Rejected { .. } | ClientError::Io { .. })) => {
                last = Some(error);
                sleep(RETRY_PAUSE);
            }
            Err(error) => return Err(error),
        }
    }
    Err(ClientError::NoLeader { target: target.to_string(), waited: deadline, last: last.map(Box::new) })
}

/// The node's whole log as it sees it, with its commit index; each client command carries the
/// ID the node gave it. A linearizable query goes to the leader (following redirects until
/// `timeout`) and reflects every append acknowledged before it started; a plain one is that
/// node's local view.
pub fn query(
    target: &str,
    timeout: Duration,
    linearizable: bool,
) -> Result<(u64, Vec<QueriedEntry>), ClientError> {
    query_log(target, timeout, linearizable).map(|log| (log.commit, log.entries))
}

/// What a node holds of the log (see [`query_log`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueriedLog {
    /// The node's commit index.
    pub commit: u64,
    /// The first command ID it still holds: the ones before were trimmed (1 if none were).
    pub first_id: u64,
    /// Every entry it holds, from its first, each command with its ID.
    pub entries: Vec<QueriedEntry>,
}

/// As [`query`], also saying where the log now starts: entries before `first_id` were
/// trimmed (retention or `replog trim`).
pub fn query_log(target: &str, timeout: Duration, linearizable: bool) -> Result<QueriedLog, ClientError> {
    let started = Instant::now();
    let home = address::parse(target)?;
    let mut address = home;
    let max = QUERY_ENTRIES_MAX;
    let querying = |address| move |error| ClientError::Io { doing: "querying", address, error };
    let (mut session, first) = loop {
        let mut session = Link::open(address, timeout)?;
        let answer = session.call(&Frame::Query { from: 1, max, linearizable }).map_err(querying(address))?;
        match answer {
            Frame::Redirect { leader } => {
                if started.elapsed() >= timeout {
                    return Err(ClientError::ReadUnconfirmed { target: target.to_string(), waited: timeout });
                }
                match leader {
                    Some(leader) => address = address::parse(&leader)?,
                    None => {
                        address = home;
                        sleep(RETRY_PAUSE);
                    }
                }
            }
            answer => break (session, answer),
        }
    };
    let mut entries: Vec<QueriedEntry> = Vec::new();
    let mut commit = 0;
    let mut first_id = None;
    let mut answer = first;
    loop {
        let (c, f, last_index, page) = match answer {
            Frame::QueryResult { commit, first_id, last_index, entries, .. } => {
                (commit, first_id, last_index, entries)
            }
            Frame::Failed { reason } => return Err(ClientError::Failed { address, reason }),
            answer => return Err(ClientError::UnexpectedAnswer { address, frame: answer.name() }),
        };
        commit = commit.max(c);
        let first_id = *first_id.get_or_insert(f);
        let got = page.len();
        entries.extend(page);
        let next = entries.last().map_or(1, |queried| queried.entry.index.0 + 1);
        if got == 0 || next > last_index {
            return Ok(QueriedLog { commit, first_id, entries });
        }
        // Later pages only extend what the first (confirmed) one established.
        answer = session
            .call(&Frame::Query { from: next, max, linearizable: false })
            .map_err(querying(address))?;
    }
}

/// Asks the cluster (through `target`, following redirects to the leader) for one membership
/// change, and waits until it commits. Returns the configuration entry's index; an error with
/// the leader's reason if it refused (nothing changed), or if no answer came within `timeout`.
pub fn change_membership(
    target: &str,
    request: &MemberRequest,
    timeout: Duration,
) -> Result<u64, ClientError> {
    let started = Instant::now();
    let mut address = address::parse(target)?;
    // Names are resolved here, never by the node (its event loop must not wait on DNS).
    let member = address::parse(&request.address)?;
    let request = MemberRequest { address: member.to_string(), ..request.clone() };
    let remaining =
        |started: Instant| timeout.saturating_sub(started.elapsed()).max(Duration::from_millis(100));
    loop {
        let mut session = Link::open(address, remaining(started))?;
        let answer = session.call(&Frame::ChangeMembership(request.clone())).map_err(|error| {
            if matches!(error.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) {
                // Sent, unanswered within the timeout: the leader may still commit it.
                let reason = format!(
                    "no answer within {:.1}s: the change may or may not happen; check with `replog member list`",
                    timeout.as_secs_f64()
                );
                return ClientError::Failed { address, reason };
            }
            ClientError::Io { doing: "asking for a membership change at", address, error }
        })?;
        match answer {
            Frame::MembershipChanged { index } => return Ok(index),
            Frame::Redirect { leader: Some(leader) } if started.elapsed() < timeout => {
                address = address::parse(&leader)?;
                sleep(RETRY_PAUSE / 10); // two nodes naming each other must not spin
            }
            Frame::Redirect { leader: None } if started.elapsed() < timeout => sleep(RETRY_PAUSE),
            Frame::Redirect { leader } => return Err(ClientError::NotLeader { address, leader }),
            // A new leader that has not committed in its term yet, or a change still pending:
            // the same request is fine a moment later.
            Frame::Failed { reason } if reason.ends_with("; retry") && started.elapsed() < timeout => {
                sleep(RETRY_PAUSE)
            }
            Frame::Failed { reason } => return Err(ClientError::Failed { address, reason }),
            other => return Err(ClientError::UnexpectedAnswer { address, frame: other.name() }),
        }
    }
}

/// Hands leadership to the member at `to` (`None`: the most up-to-date follower), through the
/// leader (following redirects), then waits until that member leads. Returns its address and
/// how long the hand-over took; an error if it did not lead within `timeout` (the old leader
/// then leads on, taking appends again).
pub fn transfer_leader(
    target: &str,
    to: Option<&str>,
    timeout: Duration,
) -> Result<(String, Duration), ClientError> {
    let started = Instant::now();
    let mut address = address::parse(target)?;
    // Names are resolved here, never by the node (its event loop must not wait on DNS).
    let to_text = match to {
        Some(to) => address::parse(to)?.to_string(),
        None => String::new(),
    };
    let remaining =
        |started: Instant| timeout.saturating_sub(started.elapsed()).max(Duration::from_millis(100));
    let new_leader = loop {
        let mut session = Link::open(address, remaining(started))?;
        let answer = session
            .call(&Frame::TransferLeader { to: to_text.clone() })
            .map_err(|error| ClientError::Io { doing: "asking for a transfer at", address, error })?;
        match answer {
            Frame::TransferStarted { to } => break to,
            Frame::Redirect { leader: Some(leader) } if started.elapsed() < timeout => {
                address = address::parse(&leader)?;
                sleep(RETRY_PAUSE / 10); // two nodes naming each other must not spin
            }
            Frame::Redirect { leader: None } if started.elapsed() < timeout => sleep(RETRY_PAUSE),
            Frame::Redirect { leader } => return Err(ClientError::NotLeader { address, leader }),
            Frame::Failed { reason } => return Err(ClientError::Failed { address, reason }),
            other => return Err(ClientError::UnexpectedAnswer { address, frame: other.name() }),
        }
    };
    while started.elapsed() < timeout {
        let ask = remaining(started).min(Duration::from_millis(500));
        if let Ok(report) = status(&new_leader, ask) {
            if report.role == replog_core::RoleKind::Leader {
                return Ok((new_leader, started.elapsed()));
            }
        }
        sleep(Duration::from_millis(5));
    }
    Err(ClientError::Failed {
        address,
        reason: format!(
            "{new_leader} did not take over within {:.1}s (the leader takes appends again after an election timeout)",
            timeout.as_secs_f64()
        ),
    })
}

/// Asks a node to snapshot and drop its entries before command `before_id` (never past its
/// commit index). Returns the first command ID it still holds. Each node trims its own log:
/// run it against every node to trim the cluster.
pub fn trim(target: &str, before_id: u64, timeout: Duration) -> Result<u64, ClientError> {
    let address = address::parse(target)?;
    let mut session = Link::open(address, timeout)?;
    let answer = session.call(&Frame::Trim { before_id }).map_err(|error| ClientError::Io {
        doing: "trimming",
        address,
        error,
    })?;
    match answer {
        Frame::TrimResult { first_id, .. } => Ok(first_id),
        other => Err(ClientError::UnexpectedAnswer { address, frame: other.name() }),
    }
}

/// The node's status.
pub fn status(target: &str, timeout: Duration) -> Result<StatusReport, ClientError> {
    let address = address::parse(target)?;
    let mut session = Link::open(address, timeout)?;
    match session.call(&Frame::Status).map_err(|error| ClientError::Io { doing: "asking", address, error })? {
        Frame::StatusResult(report) => Ok(report),
        other => Err(ClientError::UnexpectedAnswer { address, frame: other.name() }),
    }
}

/// The node's health verdict: `Ok(Ok(()))` if healthy, `Ok(Err(reason))` if not (a leader
/// confirmed by a quorum within the last election timeout, and a commit index that moves or
/// has nothing to do; see `metrics.rs`).
pub fn health(target: &str, timeout: Duration) -> Result<Result<(), String>, ClientError> {
    let address = address::parse(target)?;
    let mut link = Link::open(address, timeout)?;
    match link.call(&Frame::Health).map_err(|error| ClientError::Io { doing: "asking", address, error })? {
        Frame::HealthResult { ok: true, .. } => Ok(Ok(())),
        Frame::HealthResult { ok: false, reason } => Ok(Err(reason)),
        other => Err(ClientError::UnexpectedAnswer { address, frame: other.name() }),
    }
}

/// A blocking connection to one node: each call waits for its answer. It follows no
/// redirects and retries nothing.
#[derive(Debug)]
pub struct Link {
    address: SocketAddr,
    stream: Stream,
    inbox: Inbox,
    out: Vec<u8>,
    next_request: u64,
}

impl Link {
    /// Connects to the node at `address`; every later call gives up after `timeout`.
    pub fn open(address: SocketAddr, timeout: Duration) -> Result<Link, ClientError> {
        let connect = || -> io::Result<TcpStream> {
            let stream = TcpStream::connect_timeout(&address, CONNECT_TIMEOUT.min(timeout))?;
            stream.set_nodelay(true)?;
            stream.set_read_timeout(Some(timeout))?;
            stream.set_write_timeout(Some(timeout))?;
            Ok(stream)
        };
        let stream =
            connect().map_err(|error| ClientError::Io { doing: "cannot connect to", address, error })?;
        let stream = match tls::client_config() {
            Some(config) => {
                Stream::Tls(Box::new(rustls::StreamOwned::new(tls::dial(&config, address), stream)))
            }
            None => Stream::Plain(stream),
        };
        Ok(Link { address, stream, inbox: Inbox::default(), out: Vec::new(), next_request: 1 })
    }

    /// The node's address.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Gives up on each later call after `timeout`.
    pub fn set_timeout(&mut self, timeout: Duration) -> io::Result<()> {
        let socket = self.stream.socket();
        socket.set_read_timeout(Some(timeout))?;
        socket.set_write_timeout(Some(timeout))
    }

    /// Appends one command at this node and waits for the commit. A failure to send leaves
    /// the log untouched ([`ClientError::Io`]); a connection lost after sending makes the
    /// outcome unknown.
    pub fn append(&mut self, command: &[u8]) -> Result<Appended, ClientError> {
        check_size(command)?;
        let address = self.address;
        let request = self.next_request;
        self.next_request += 1;
        self.send(&Frame::Append { request, command: command.to_vec() })
            .map_err(|error| ClientError::Io { doing: "sending to", address, error })?;
        match self.receive() {
            Ok(Frame::AppendResult { result, .. }) => appended(result, address),
            Ok(other) => Err(ClientError::UnexpectedAnswer { address, frame: other.name() }),
            Err(error) => Err(ClientError::OutcomeUnknown(Uncertain::ConnectionLost { address, error })),
        }
    }

    /// Sends `request` and waits for the answer.
    pub fn call(&mut self, request: &Frame) -> io::Result<Frame> {
        self.send(request)?;
        self.receive()
    }

    fn send(&mut self, request: &Frame) -> io::Result<()> {
        self.out.clear();
        frame::encode_with(&mut self.out, |out| codec::encode(request, out));
        self.stream.write_all(&self.out)?;
        self.stream.flush()
    }

    fn receive(&mut self) -> io::Result<Frame> {
        loop {
            let next = self.inbox.next_frame().map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            if let Some(frame) = next {
                return Ok(frame);
            }
            let n = self.stream.read(self.inbox.room(READ_CHUNK_BYTES))?;
            if n == 0 {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the node closed the connection"));
            }
            self.inbox.filled(n);
        }
    }
}

/// A blocking connection's bytes: the socket, or a TLS session over it (with the
/// process-wide client configuration, [`tls::set_client_config`]).
#[derive(Debug)]
enum Stream {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl Stream {
    fn socket(&self) -> &TcpStream {
        match self {
            Stream::Plain(stream) => stream,
            Stream::Tls(stream) => &stream.sock,
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(stream) => stream.read(buffer),
            Stream::Tls(stream) => stream.read(buffer),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buffer: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(stream) => stream.write(buffer),
            Stream::Tls(stream) => stream.write(buffer),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(stream) => stream.flush(),
            Stream::Tls(stream) => stream.flush(),
        }
    }
}

/// A non-blocking connection to one node, for a caller that runs many of them on its own mio
/// loop: appends are queued without waiting, and their answers arrive in the order sent. On
/// each readiness event of its token, call [`Pipelined::receive`], take the answers with
/// [`Pipelined::next_answer`] until `None`, and [`Pipelined::flush`]. It follows no redirects.
#[derive(Debug)]
pub struct Pipelined {
    address: SocketAddr,
    connection: connection::Connection,
    next_request: u64,
}

impl Pipelined {
    /// Connects to the node at `address` (waiting up to `timeout`) and registers the
    /// connection with `registry` under `token`.
    pub fn connect(
        address: SocketAddr,
        timeout: Duration,
        registry: &Registry,
        token: Token,
    ) -> Result<Pipelined, ClientError> {
        let stream = TcpStream::connect_timeout(&address, timeout)
            .and_then(|stream| stream.set_nonblocking(true).map(|()| stream))
            .map_err(|error| ClientError::Io { doing: "cannot connect to", address, error })?;
        let mut stream = mio::net::TcpStream::from_std(stream);
        registry
            .register(&mut stream, token, Interest::READABLE | Interest::WRITABLE)
            .map_err(|error| ClientError::Io { doing: "registering the connection to", address, error })?;
        let connection = match tls::client_config() {
            Some(config) => connection::Connection::with_tls(stream, tls::dial(&config, address).into()),
            None => connection::Connection::new(stream),
        };
        Ok(Pipelined { address, connection, next_request: 1 })
    }

    /// The node's address.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Queues an append; it leaves with the next [`Pipelined::flush`].
    pub fn queue_append(&mut self, command: Vec<u8>) -> Result<(), ClientError> {
        check_size(&command)?;
        let request = self.next_request;
        self.next_request += 1;
        self.queue(&Frame::Append { request, command })
    }

    /// Queues request `seq` of session `client` (exactly once: see `session.rs`), one command.
    pub fn queue_session_append(
        &mut self,
        client: u64,
        seq: u64,
        command: Vec<u8>,
    ) -> Result<(), ClientError> {
        check_size(&command)?;
        let request = self.next_request;
        self.next_request += 1;
        let commands = vec![command];
        self.queue(&Frame::SessionAppend { request, client, seq, since: 0, expect_last: None, commands })
    }

    fn queue(&mut self, frame: &Frame) -> Result<(), ClientError> {
        if self.connection.queue(frame) {
            return Ok(());
        }
        let error = io::Error::new(io::ErrorKind::WouldBlock, "the send queue is full");
        Err(ClientError::Io { doing: "queueing for", address: self.address, error })
    }

    /// Writes what is queued, as far as the socket takes it.
    pub fn flush(&mut self) -> Result<(), ClientError> {
        self.connection.flush().map_err(|closed| ClientError::Closed { address: self.address, closed })
    }

    /// Reads everything the socket holds.
    pub fn receive(&mut self) -> Result<(), ClientError> {
        loop {
            match self.connection.read() {
                Ok(true) => continue, // stopped at the per-call limit: more may wait
                Ok(false) => return Ok(()),
                Err(closed) => return Err(ClientError::Closed { address: self.address, closed }),
            }
        }
    }

    /// The next answer received, in the order the appends were queued; `None` until another
    /// has fully arrived.
    pub fn next_answer(&mut self) -> Result<Option<Appended>, ClientError> {
        let address = self.address;
        match self.connection.next_frame() {
            Ok(None) => Ok(None),
            Ok(Some(Frame::AppendResult { result, .. })) => appended(result, address).map(Some),
            Ok(Some(other)) => Err(ClientError::UnexpectedAnswer { address, frame: other.name() }),
            Err(closed) => Err(ClientError::Closed { address, closed }),
        }
    }
}

/// What an append's answer means for the caller.
fn appended(result: AppendResult, address: SocketAddr) -> Result<Appended, ClientError> {
    match result {
        AppendResult::Committed { index, term, id, .. } => Ok(Appended { id, index, term, leader: address }),
        AppendResult::Refused(refusal) => Err(ClientError::Rejected { reason: refusal.to_string() }),
        AppendResult::NotLeader { leader } => Err(ClientError::NotLeader { address, leader }),
        AppendResult::Failed { reason, retry: true } => Err(ClientError::Rejected { reason }),
        AppendResult::Failed { reason, retry: false } => {
            Err(ClientError::OutcomeUnknown(Uncertain::Reported(reason)))
        }
        AppendResult::TooLarge { bytes, limit } => Err(ClientError::CommandTooLarge { bytes, limit }),
    }
}

/// Refuses a command no frame could carry to the followers, before it is sent.
fn check_size(command: &[u8]) -> Result<(), ClientError> {
    if command.len() > COMMAND_BYTES_MAX {
        return Err(ClientError::CommandTooLarge {
            bytes: command.len() as u64,
            limit: COMMAND_BYTES_MAX as u64,
        });
    }
    Ok(())
}
