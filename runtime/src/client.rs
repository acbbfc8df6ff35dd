//! A blocking client of the node protocol, for the CLI (`append`, `query`, `status`, `bench`).

use crate::codec::{self, AppendResult, Frame};
use crate::frame::{self, Inbox};
use crate::status::StatusReport;
use replog_core::Entry;
use std::fmt;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::thread::sleep;
use std::time::{Duration, Instant};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
const RETRY_PAUSE: Duration = Duration::from_millis(100);
const READ_CHUNK_BYTES: usize = 16 * 1024;

#[derive(Debug)]
pub enum ClientError {
    /// Could not reach a leader before the deadline.
    Unavailable(String),
    /// The request may or may not have taken effect.
    Indeterminate(String),
    /// The node refused, for a reason that retrying will not fix.
    Failed(String),
    Io(String),
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::Unavailable(why) => write!(f, "{why}"),
            ClientError::Indeterminate(why) => write!(f, "outcome unknown: {why}"),
            ClientError::Failed(why) => write!(f, "{why}"),
            ClientError::Io(why) => write!(f, "{why}"),
        }
    }
}

impl std::error::Error for ClientError {}

fn resolve(target: &str) -> Result<SocketAddr, ClientError> {
    target
        .to_socket_addrs()
        .ok()
        .and_then(|mut addresses| addresses.next())
        .ok_or_else(|| ClientError::Io(format!("{target:?} is not an address like 127.0.0.1:8080")))
}

/// One connection to one node.
#[derive(Debug)]
pub struct Connection {
    pub address: SocketAddr,
    stream: TcpStream,
    inbox: Inbox,
    out: Vec<u8>,
}

impl Connection {
    pub fn open(address: SocketAddr, timeout: Duration) -> io::Result<Connection> {
        let stream = TcpStream::connect_timeout(&address, CONNECT_TIMEOUT.min(timeout))?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        Ok(Connection { address, stream, inbox: Inbox::default(), out: Vec::new() })
    }

    pub fn send(&mut self, request: &Frame) -> io::Result<()> {
        self.out.clear();
        frame::encode_with(&mut self.out, |out| codec::encode(request, out));
        self.stream.write_all(&self.out)
    }

    pub fn receive(&mut self) -> io::Result<Frame> {
        loop {
            if let Some(frame) =
                self.inbox.next_frame().map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?
            {
                return Ok(frame);
            }
            let n = self.stream.read(self.inbox.room(READ_CHUNK_BYTES))?;
            if n == 0 {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the node closed the connection"));
            }
            self.inbox.filled(n);
        }
    }

    pub fn call(&mut self, request: &Frame) -> io::Result<Frame> {
        self.send(request)?;
        self.receive()
    }
}

/// Where an append landed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Appended {
    /// Position among client commands (what `query` shows as ID).
    pub id: u64,
    /// Raft log index (which also counts the leaders' no-op entries).
    pub index: u64,
    pub term: u64,
    pub leader: SocketAddr,
}

/// Appends one command, following leader hints, retrying while no leader is known, until
/// `deadline`. A connection lost after the request was sent makes the outcome unknown: that
/// is reported, never retried (a retry could append the command twice).
pub fn append(target: &str, command: &[u8], deadline: Duration) -> Result<Appended, ClientError> {
    let started = Instant::now();
    let home = resolve(target)?;
    let mut address = home;
    let mut last_problem = String::from("no answer");
    while started.elapsed() < deadline {
        let remaining = deadline.saturating_sub(started.elapsed()).max(Duration::from_millis(100));
        let mut connection = match Connection::open(address, remaining) {
            Ok(connection) => connection,
            Err(error) => {
                last_problem = format!("cannot connect to {address}: {error}");
                address = home;
                sleep(RETRY_PAUSE);
                continue;
            }
        };
        if let Err(error) = connection.send(&Frame::Append { request: 1, command: command.to_vec() }) {
            last_problem = format!("sending to {address}: {error}");
            sleep(RETRY_PAUSE);
            continue;
        }
        match connection.receive() {
            Ok(Frame::AppendResult { result: AppendResult::Committed { index, term, id }, .. }) => {
                return Ok(Appended { index, term, id, leader: address })
            }
            Ok(Frame::AppendResult { result: AppendResult::NotLeader { leader: Some(leader) }, .. }) => {
                last_problem = format!("{address} is not the leader");
                address = resolve(&leader)?;
            }
            Ok(Frame::AppendResult { result: AppendResult::NotLeader { leader: None }, .. }) => {
                last_problem = format!("{address} knows no leader (election in progress?)");
                sleep(RETRY_PAUSE);
            }
            Ok(Frame::AppendResult { result: AppendResult::Failed { reason, retry: true }, .. }) => {
                last_problem = reason;
                sleep(RETRY_PAUSE);
            }
            Ok(Frame::AppendResult { result: AppendResult::Failed { reason, retry: false }, .. }) => {
                return Err(ClientError::Indeterminate(reason))
            }
            Ok(other) => return Err(ClientError::Failed(format!("unexpected answer from {address}: {other:?}"))),
            Err(error) => {
                return Err(ClientError::Indeterminate(format!(
                    "lost the connection to {address} after sending ({error}); the command may or may not be in the log: query to check"
                )))
            }
        }
    }
    Err(ClientError::Unavailable(format!(
        "no leader reachable within {:.1}s via {target}: {last_problem}",
        deadline.as_secs_f64()
    )))
}

/// The node's whole log as it sees it, with its commit index. A linearizable query goes to
/// the leader (following redirects until `timeout`) and reflects every append acknowledged
/// before it started; a plain one is that node's local view.
pub fn query(target: &str, timeout: Duration, linearizable: bool) -> Result<(u64, Vec<Entry>), ClientError> {
    let started = Instant::now();
    let home = resolve(target)?;
    let mut address = home;
    let max = crate::clients::QUERY_ENTRIES_MAX;
    let (mut connection, first) = loop {
        let mut connection = Connection::open(address, timeout)
            .map_err(|e| ClientError::Io(format!("cannot connect to {address}: {e}")))?;
        let answer = connection
            .call(&Frame::Query { from: 1, max, linearizable })
            .map_err(|e| ClientError::Io(format!("querying {address}: {e}")))?;
        match answer {
            Frame::Redirect { leader } => {
                if started.elapsed() >= timeout {
                    return Err(ClientError::Unavailable(format!(
                        "no leader could confirm a linearizable query within {:.1}s via {target}",
                        timeout.as_secs_f64()
                    )));
                }
                match leader {
                    Some(leader) => address = resolve(&leader)?,
                    None => {
                        address = home;
                        sleep(RETRY_PAUSE);
                    }
                }
            }
            answer => break (connection, answer),
        }
    };
    let mut entries = Vec::new();
    let mut commit = 0;
    let mut answer = first;
    loop {
        let Frame::QueryResult { commit: c, last_index, entries: page } = answer else {
            return Err(ClientError::Failed(format!("unexpected answer from {address}")));
        };
        commit = commit.max(c);
        let got = page.len();
        entries.extend(page);
        if got == 0 || entries.len() as u64 >= last_index {
            return Ok((commit, entries));
        }
        // Later pages only extend what the first (confirmed) one established.
        answer = connection
            .call(&Frame::Query { from: entries.len() as u64 + 1, max, linearizable: false })
            .map_err(|e| ClientError::Io(format!("querying {address}: {e}")))?;
    }
}

/// The node's status.
pub fn status(target: &str, timeout: Duration) -> Result<StatusReport, ClientError> {
    let address = resolve(target)?;
    let mut connection = Connection::open(address, timeout)
        .map_err(|e| ClientError::Io(format!("cannot connect to {address}: {e}")))?;
    match connection.call(&Frame::Status).map_err(|e| ClientError::Io(format!("asking {address}: {e}")))? {
        Frame::StatusResult(report) => Ok(report),
        _ => Err(ClientError::Failed(format!("unexpected answer from {address}"))),
    }
}
