//! The node's event loop: sockets, files and the clock in; the core's actions out, in order.
//!
//! Group commit: every frame that arrived in one poll round is stepped through the core and
//! its storage actions are written at once (to the page cache). At the end of the round one
//! fdatasync is requested from the background fsync thread, which merges requests that arrive
//! while it is busy. Messages before a `Sync` leave at once; everything after a `Sync` waits,
//! in order, until the fsync covering it completes; then the core hears `Event::LogPersisted`.
//! So a leader's AppendEntries are on the wire while its own write is being synced
//! (dissertation §10.2.1), the loop keeps serving while the disk works, and no vote or
//! acknowledgement leaves before the state it vouches for is on disk.

use crate::codec::{AppendResult, Frame};
use crate::connection::{Caller, Closed, Connection, Violation};
use crate::driver::{Driver, DriverError, Output};
use crate::fs::RealFs;
use crate::storage::{Identity, StorageError};
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use replog_core::{Bytes, Config, Event, LogIndex, Message, NodeId, Reply, RequestId};
use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::{debug, info, warn};

/// One logical tick: the core's default timeouts (15-30 ticks, heartbeat 5) become the seed's
/// 150-300 ms election timeout and a 50 ms heartbeat.
pub const TICK: Duration = Duration::from_millis(10);
/// A fresh node started without `--leader` waits this long before its election clock starts,
/// so the seed's walkthrough (node1 with `--leader` first) elects node1.
const FRESH_FOLLOWER_GRACE: Duration = Duration::from_secs(1);
const RECONNECT_MIN: Duration = Duration::from_millis(20);
const RECONNECT_MAX: Duration = Duration::from_secs(1);
/// A round with at most this many readiness events counts as quiet: its fsync runs inline
/// (lowest latency); busier rounds hand it to the fsync thread and keep serving.
const QUIET_ROUND_EVENTS_MAX: usize = 2;
/// Accepted connections (peers' inbound links and clients) beyond this are refused at once.
const CONNECTIONS_MAX: usize = 4096;
/// Most entries one query answer carries.
pub const QUERY_ENTRIES_MAX: u32 = 10_000;

const LISTENER: Token = Token(0);
/// The fsync thread wakes the loop with this token.
const SYNCED: Token = Token(FIRST_ACCEPTED - 1);
/// Outbound peer connections use tokens 1..=peers; accepted connections start here.
const FIRST_ACCEPTED: usize = 1 << 20;

#[derive(Clone, Debug)]
pub struct NodeOptions {
    pub name: String,
    pub address: SocketAddr,
    pub peers: Vec<SocketAddr>,
    /// Start an election at once (`--leader`).
    pub bootstrap: bool,
    pub data_dir: PathBuf,
}

#[derive(Debug)]
pub enum RuntimeError {
    Config(String),
    Storage(StorageError),
    Io(&'static str, io::Error),
}

impl fmt::Display for RuntimeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RuntimeError::Config(why) => write!(f, "{why}"),
            RuntimeError::Storage(error) => write!(f, "storage: {error}"),
            RuntimeError::Io(what, error) => write!(f, "{what}: {error}"),
        }
    }
}

impl std::error::Error for RuntimeError {}

impl From<StorageError> for RuntimeError {
    fn from(error: StorageError) -> RuntimeError {
        RuntimeError::Storage(error)
    }
}

impl From<DriverError> for RuntimeError {
    fn from(error: DriverError) -> RuntimeError {
        match error {
            DriverError::Storage(error) => RuntimeError::Storage(error),
            DriverError::Start(error) => RuntimeError::Config(format!("the data folder's state: {error}")),
        }
    }
}

/// A node's Raft id is derived from its address: every node knows every member's address from
/// its flags, so membership needs no extra exchange. FNV-1a, stable everywhere.
pub fn node_id(address: &SocketAddr) -> NodeId {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in address.to_string().bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    NodeId(hash)
}

#[derive(Debug)]
struct Peer {
    address: SocketAddr,
    name: Option<String>,
    token: Token,
    link: Option<Connection>,
    /// The outbound connection finished connecting and sent its hello.
    ready: bool,
    next_attempt: Instant,
    backoff: Duration,
    dropped: u64,
}

#[derive(Debug)]
struct Accepted {
    link: Connection,
    caller: Caller,
}

/// Clients waiting on one proposal: (connection, client's request id), one per command.
type Waiting = Vec<(Token, u64)>;

struct Server {
    options: NodeOptions,
    id: NodeId,
    poll: Poll,
    listener: TcpListener,
    driver: Driver<RealFs>,
    /// What the driver released, being dispatched (kept to reuse its allocation).
    outputs: Vec<Output>,
    peers: BTreeMap<NodeId, Peer>,
    accepted: BTreeMap<Token, Accepted>,
    next_token: usize,
    /// Appends received this round, proposed together at its end.
    batch: Vec<(Token, u64, Bytes)>,
    proposals: BTreeMap<RequestId, Waiting>,
    /// Linearizable queries waiting for their read to be confirmed: (connection, from, max).
    reads: BTreeMap<RequestId, (Token, u64, u32)>,
    next_request: u64,
    started: Instant,
    fresh: bool,
    last_leader: Option<(replog_core::Term, Option<NodeId>)>,
}

/// Runs a node until `shutdown` is set (Ctrl-C, SIGTERM) or a fatal error (storage, fsync).
pub fn run(options: NodeOptions, shutdown: Arc<AtomicBool>) -> Result<(), RuntimeError> {
    let mut server = Server::start(options)?;
    // On an error the caller reports it; storage is not closed (after an fsync failure
    // nothing more may be written).
    server.serve(&shutdown)?;
    let Server { driver, options, .. } = server;
    driver.close()?;
    info!("{} stopped cleanly", options.name);
    Ok(())
}

impl Server {
    fn start(options: NodeOptions) -> Result<Server, RuntimeError> {
        let id = node_id(&options.address);
        let mut peer_ids = Vec::new();
        let mut peers = BTreeMap::new();
        for (i, &address) in options.peers.iter().enumerate() {
            let peer = node_id(&address);
            if address == options.address {
                return Err(RuntimeError::Config(format!("--peers lists this node's own address {address}")));
            }
            if peers.contains_key(&peer) {
                return Err(RuntimeError::Config(format!("--peers lists {address} twice")));
            }
            peer_ids.push(peer);
            peers.insert(
                peer,
                Peer {
                    address,
                    name: None,
                    token: Token(i + 1),
                    link: None,
                    ready: false,
                    next_attempt: Instant::now(),
                    backoff: RECONNECT_MIN,
                    dropped: 0,
                },
            );
        }
        let mut config = Config::new(id, peer_ids);
        config.seed = id.0 ^ u64::from(std::process::id());
        let poll = Poll::new().map_err(|e| RuntimeError::Io("creating the poller", e))?;
        let waker = mio::Waker::new(poll.registry(), SYNCED)
            .map_err(|e| RuntimeError::Io("creating the waker", e))?;
        let identity = Identity { name: options.name.clone(), address: options.address.to_string() };
        let fs = RealFs::with_background_sync(Arc::new(waker));
        let (driver, opened) =
            Driver::open(config, fs, &options.data_dir, identity).map_err(|error| match error {
                DriverError::Start(e) => RuntimeError::Config(format!("{}: {e}", options.data_dir.display())),
                error => error.into(),
            })?;
        for warning in &opened.warnings {
            warn!("recovery: {warning}");
        }
        let hard_state = driver.node().hard_state();
        info!(
            "{} recovered term {} commit {} with {} entries from {}",
            options.name,
            hard_state.term.0,
            hard_state.commit.0,
            opened.entries,
            options.data_dir.display()
        );
        let mut listener = TcpListener::bind(options.address)
            .map_err(|e| RuntimeError::Io("binding the address (is another node using it?)", e))?;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)
            .map_err(|e| RuntimeError::Io("registering", e))?;
        info!("{} listening on {} with peers {:?}", options.name, options.address, options.peers);
        Ok(Server {
            options,
            id,
            poll,
            listener,
            driver,
            outputs: Vec::new(),
            peers,
            accepted: BTreeMap::new(),
            next_token: FIRST_ACCEPTED,
            batch: Vec::new(),
            proposals: BTreeMap::new(),
            reads: BTreeMap::new(),
            next_request: 1,
            started: Instant::now(),
            fresh: opened.fresh,
            last_leader: None,
        })
    }

    fn serve(&mut self, shutdown: &AtomicBool) -> Result<(), RuntimeError> {
        let mut events = Events::with_capacity(1024);
        let mut next_tick = Instant::now() + TICK;
        if self.options.bootstrap {
            self.step(Event::Campaign)?;
        }
        while !shutdown.load(Ordering::Relaxed) {
            let now = Instant::now();
            let timeout = next_tick.saturating_duration_since(now);
            if let Err(error) = self.poll.poll(&mut events, Some(timeout)) {
                if error.kind() != io::ErrorKind::Interrupted {
                    return Err(RuntimeError::Io("polling", error));
                }
            }
            let busy = events.iter().count() > QUIET_ROUND_EVENTS_MAX;
            for event in events.iter() {
                match event.token() {
                    LISTENER => self.accept(),
                    SYNCED => self.on_synced()?,
                    token if token.0 < FIRST_ACCEPTED => self.on_peer_event(token),
                    token => self.on_accepted_event(token)?,
                }
            }
            if Instant::now() >= next_tick {
                next_tick += TICK;
                if Instant::now() > next_tick + TICK * 10 {
                    next_tick = Instant::now() + TICK; // far behind (paused?): do not burst
                }
                let waiting =
                    self.fresh && !self.options.bootstrap && self.started.elapsed() < FRESH_FOLLOWER_GRACE;
                if !waiting {
                    self.step(Event::Tick)?;
                }
                self.reconnect_peers();
            }
            self.propose_batch()?;
            // Messages first (a follower's fsync is on the commit path too), then one fsync
            // request for everything the round wrote, then what completed syncs released.
            self.flush_all();
            self.driver.end_round(!busy)?;
            self.on_synced()?;
            self.flush_all();
        }
        Ok(())
    }

    // ---- the core ----

    fn step(&mut self, event: Event) -> Result<(), RuntimeError> {
        self.driver.step(event)?;
        self.dispatch();
        Ok(())
    }

    /// Releases what waited for completed fsyncs and tells the core how far its log is
    /// durable. An fsync error stops the node: it never acknowledges what is not durable.
    fn on_synced(&mut self) -> Result<(), RuntimeError> {
        self.driver.on_synced()?;
        self.dispatch();
        Ok(())
    }

    /// Hands what the driver released to the peers and clients.
    fn dispatch(&mut self) {
        let mut outputs = std::mem::take(&mut self.outputs);
        self.driver.take_output(&mut outputs);
        for output in outputs.drain(..) {
            match output {
                Output::Send(message) => self.send(message),
                Output::Reply(reply) => self.reply(reply),
                // The log is the state machine: applying needs no work beyond the commit index.
                Output::Apply(_) => {}
            }
        }
        self.outputs = outputs;
        self.log_leadership();
    }

    fn propose_batch(&mut self) -> Result<(), RuntimeError> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let batch = std::mem::take(&mut self.batch);
        let request = RequestId(self.next_request);
        self.next_request += 1;
        let mut waiting = Vec::with_capacity(batch.len());
        let mut commands = Vec::with_capacity(batch.len());
        for (token, client_request, command) in batch {
            waiting.push((token, client_request));
            commands.push(command);
        }
        self.proposals.insert(request, waiting);
        self.step(Event::Propose { request, commands })
    }

    fn query_page(&self, from: u64, max: u32) -> Frame {
        let from = LogIndex(from.max(1));
        let to = from.plus(u64::from(max.clamp(1, QUERY_ENTRIES_MAX)) - 1);
        Frame::QueryResult {
            commit: self.driver.node().commit().0,
            last_index: self.driver.node().last_index().0,
            entries: self.driver.node().entries(from, to),
        }
    }

    fn reply(&mut self, reply: Reply) {
        if let Some((token, from, max)) = self.reads.remove(&reply.request()) {
            let answer = match reply {
                // The node has applied through `index` (the core applies before it replies).
                Reply::ReadReady { .. } => self.query_page(from, max),
                Reply::NotLeader { leader, .. } => Frame::Redirect {
                    leader: leader.and_then(|id| self.address_of(id)).map(|a| a.to_string()),
                },
                _ => Frame::Redirect { leader: None },
            };
            if let Some(accepted) = self.accepted.get_mut(&token) {
                accepted.link.queue(&answer);
            }
            return;
        }
        let Some(waiting) = self.proposals.remove(&reply.request()) else {
            return;
        };
        for (position, (token, client_request)) in waiting.into_iter().enumerate() {
            let result = match &reply {
                Reply::Committed { first, term, .. } => {
                    let index = first.0 + position as u64;
                    AppendResult::Committed { index, term: term.0, id: self.driver.command_id(LogIndex(index)) }
                }
                Reply::NotLeader { leader, .. } => {
                    AppendResult::NotLeader { leader: leader.and_then(|id| self.address_of(id)).map(|a| a.to_string()) }
                }
                Reply::Rejected { reason, .. } => {
                    AppendResult::Failed { reason: format!("rejected by the leader: {reason:?}; retry later"), retry: true }
                }
                Reply::Indeterminate { .. } => AppendResult::Failed {
                    reason: "leadership changed before the entry committed: it may or may not be in the log; query to check"
                        .into(),
                    retry: false,
                },
                Reply::ReadReady { .. } => continue,
            };
            if let Some(accepted) = self.accepted.get_mut(&token) {
                accepted.link.queue(&Frame::AppendResult { request: client_request, result });
            }
        }
    }

    fn address_of(&self, id: NodeId) -> Option<SocketAddr> {
        if id == self.id {
            return Some(self.options.address);
        }
        self.peers.get(&id).map(|peer| peer.address)
    }

    fn log_leadership(&mut self) {
        let now = (self.driver.node().term(), self.driver.node().leader());
        if self.last_leader == Some(now) {
            return;
        }
        let name = |server: &Server, id: Option<NodeId>| match id {
            Some(id) if id == server.id => server.options.name.clone(),
            Some(id) => server
                .peers
                .get(&id)
                .and_then(|p| p.name.clone().or(Some(p.address.to_string())))
                .unwrap_or_default(),
            None => "none".into(),
        };
        match now.1 {
            Some(leader) if leader == self.id => {
                info!("{} is leader in term {}", self.options.name, now.0 .0)
            }
            Some(_) => info!("term {}: leader is {}", now.0 .0, name(self, now.1)),
            None if self.last_leader.is_some_and(|(_, l)| l.is_some()) => {
                info!("term {}: no leader known ({})", now.0 .0, self.driver.node().role_name())
            }
            None => debug!("term {}: {}", now.0 .0, self.driver.node().role_name()),
        }
        self.last_leader = Some(now);
    }

    // ---- peers ----

    fn send(&mut self, message: Message) {
        let Some(peer) = self.peers.get_mut(&message.to) else {
            return;
        };
        match (&mut peer.link, peer.ready) {
            (Some(link), true) => {
                if !link.queue(&Frame::Raft(message)) {
                    peer.dropped += 1; // over the queue limit: Raft retransmits
                }
            }
            _ => peer.dropped += 1, // not connected: Raft retransmits once it is
        }
    }

    fn reconnect_peers(&mut self) {
        let now = Instant::now();
        for peer in self.peers.values_mut() {
            if peer.link.is_some() || now < peer.next_attempt {
                continue;
            }
            peer.next_attempt = now + peer.backoff;
            peer.backoff = (peer.backoff * 2).min(RECONNECT_MAX);
            match TcpStream::connect(peer.address) {
                Ok(mut stream) => {
                    if self
                        .poll
                        .registry()
                        .register(&mut stream, peer.token, Interest::READABLE | Interest::WRITABLE)
                        .is_ok()
                    {
                        peer.link = Some(Connection::new(stream));
                        peer.ready = false;
                    }
                }
                Err(error) => debug!("connecting to {}: {error}", peer.address),
            }
        }
    }

    fn on_peer_event(&mut self, token: Token) {
        let Some((&id, _)) = self.peers.iter().find(|(_, p)| p.token == token) else {
            return;
        };
        let hello =
            Frame::Hello { address: self.options.address.to_string(), name: self.options.name.clone() };
        let peer = self.peers.get_mut(&id).expect("found above");
        let Some(link) = peer.link.as_mut() else {
            return;
        };
        if !peer.ready {
            match link.stream.take_error() {
                Ok(None) if link.stream.peer_addr().is_ok() => {
                    peer.ready = true;
                    peer.backoff = RECONNECT_MIN;
                    link.queue(&hello);
                    info!("connected to peer {}", peer.address);
                }
                Ok(None) => return, // still connecting
                _ => {
                    self.drop_peer(id, "connect failed");
                    return;
                }
            }
        }
        // Peers answer on their own connections; anything readable here is the close.
        let result = link.read().and_then(|_| link.flush());
        if let Err(closed) = result {
            self.drop_peer(id, &closed.to_string());
        }
    }

    fn drop_peer(&mut self, id: NodeId, why: &str) {
        let peer = self.peers.get_mut(&id).expect("known peer");
        if let Some(mut link) = peer.link.take() {
            let _ = self.poll.registry().deregister(&mut link.stream);
            if peer.ready {
                info!("lost connection to peer {}: {why}", peer.address);
            }
        }
        peer.ready = false;
    }

    // ---- accepted connections: peers' inbound links and clients ----

    fn accept(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((mut stream, from)) => {
                    if self.accepted.len() >= CONNECTIONS_MAX {
                        warn!("refusing a connection from {from}: {CONNECTIONS_MAX} connections are open");
                        continue; // dropping the stream closes it
                    }
                    let token = Token(self.next_token);
                    self.next_token += 1;
                    if self
                        .poll
                        .registry()
                        .register(&mut stream, token, Interest::READABLE | Interest::WRITABLE)
                        .is_ok()
                    {
                        self.accepted.insert(
                            token,
                            Accepted { link: Connection::new(stream), caller: Caller::Unknown },
                        );
                    }
                }
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => return,
                Err(error) => {
                    warn!("accept: {error}");
                    return;
                }
            }
        }
    }

    fn on_accepted_event(&mut self, token: Token) -> Result<(), RuntimeError> {
        let outcome = self.serve_connection(token)?;
        let Some(accepted) = self.accepted.get_mut(&token) else {
            return Ok(());
        };
        let outcome = outcome.and_then(|()| accepted.link.flush());
        if let Err(closed) = outcome {
            self.close(token, &closed);
        }
        Ok(())
    }

    /// Reads and handles frames until the socket has nothing more.
    fn serve_connection(&mut self, token: Token) -> Result<Result<(), Closed>, RuntimeError> {
        loop {
            let Some(accepted) = self.accepted.get_mut(&token) else {
                return Ok(Ok(()));
            };
            let more = match accepted.link.read() {
                Ok(more) => more,
                Err(closed) => {
                    // Still act on the complete frames that arrived before the close.
                    self.handle_frames(token)?.ok();
                    return Ok(Err(closed));
                }
            };
            if let Err(closed) = self.handle_frames(token)? {
                return Ok(Err(closed));
            }
            if !more {
                return Ok(Ok(()));
            }
        }
    }

    fn handle_frames(&mut self, token: Token) -> Result<Result<(), Closed>, RuntimeError> {
        loop {
            let accepted = self.accepted.get_mut(&token).expect("present");
            match accepted.link.next_frame() {
                Ok(Some(frame)) => {
                    if let Err(violation) = self.on_frame(token, frame)? {
                        return Ok(Err(Closed::Protocol(violation)));
                    }
                }
                Ok(None) => return Ok(Ok(())),
                Err(closed) => return Ok(Err(closed)),
            }
        }
    }

    fn close(&mut self, token: Token, why: &Closed) {
        if let Some(mut accepted) = self.accepted.remove(&token) {
            let _ = self.poll.registry().deregister(&mut accepted.link.stream);
            let who = accepted.link.stream.peer_addr().map_or("?".into(), |a| a.to_string());
            match why {
                Closed::Protocol(reason) => warn!("closing connection from {who}: {reason}"),
                _ if matches!(accepted.caller, Caller::Peer(_)) => {
                    info!("peer connection from {who} closed: {why}")
                }
                _ => debug!("connection from {who} closed: {why}"),
            }
        }
    }

    /// Handles one frame; `Ok(Err(why))` closes the connection for a protocol violation.
    fn on_frame(&mut self, token: Token, frame: Frame) -> Result<Result<(), Violation>, RuntimeError> {
        let caller = self.accepted[&token].caller;
        match (caller, frame) {
            (Caller::Unknown, Frame::Hello { address, name }) => {
                let Ok(address) = address.parse::<SocketAddr>() else {
                    return Ok(Err(Violation::BadHelloAddress(address)));
                };
                let id = node_id(&address);
                let Some(peer) = self.peers.get_mut(&id) else {
                    return Ok(Err(Violation::UnknownPeer { name, address }));
                };
                peer.name = Some(name.clone());
                info!("peer {name} ({address}) connected");
                self.accepted.get_mut(&token).expect("present").caller = Caller::Peer(id);
            }
            (Caller::Peer(link), Frame::Raft(message)) => {
                if message.from != link || message.to != self.id {
                    return Ok(Err(Violation::Misaddressed { from: message.from, to: message.to, link }));
                }
                self.step(Event::Receive(message))?;
            }
            (Caller::Unknown | Caller::Client, Frame::Append { request, command }) => {
                self.accepted.get_mut(&token).expect("present").caller = Caller::Client;
                self.batch.push((token, request, Bytes::from(command)));
            }
            (Caller::Unknown | Caller::Client, Frame::Query { from, max, linearizable }) => {
                self.accepted.get_mut(&token).expect("present").caller = Caller::Client;
                if linearizable {
                    // ReadIndex (dissertation §6.4): answered once leadership is confirmed.
                    let request = RequestId(self.next_request);
                    self.next_request += 1;
                    self.reads.insert(request, (token, from, max));
                    self.step(Event::Read { request })?;
                } else {
                    let answer = self.query_page(from, max);
                    self.accepted.get_mut(&token).expect("present").link.queue(&answer);
                }
            }
            (Caller::Unknown | Caller::Client, Frame::Status) => {
                self.accepted.get_mut(&token).expect("present").caller = Caller::Client;
                let json = self.status_json();
                self.accepted.get_mut(&token).expect("present").link.queue(&Frame::StatusResult { json });
            }
            (caller, frame) => {
                return Ok(Err(Violation::UnexpectedFrame { frame: frame_name(&frame), caller }))
            }
        }
        Ok(Ok(()))
    }

    fn status_json(&self) -> String {
        let status = self.driver.node().status();
        let progress: BTreeMap<NodeId, &replog_core::PeerStatus> =
            status.peers.iter().map(|p| (p.id, p)).collect();
        let peers: Vec<serde_json::Value> = self
            .peers
            .iter()
            .map(|(id, peer)| {
                let inbound = self.accepted.values().any(|a| a.caller == Caller::Peer(*id));
                let mut value = serde_json::json!({
                    "address": peer.address.to_string(),
                    "name": peer.name,
                    "outbound_connected": peer.ready,
                    "inbound_connected": inbound,
                    "messages_dropped": peer.dropped,
                });
                if let Some(p) = progress.get(id) {
                    value["match_index"] = p.match_index.0.into();
                    value["next_index"] = p.next_index.0.into();
                    value["replicating"] = p.replicating.into();
                }
                value
            })
            .collect();
        serde_json::json!({
            "name": self.options.name,
            "address": self.options.address.to_string(),
            "role": status.role,
            "term": status.term.0,
            "leader": status.leader.and_then(|id| self.address_of(id)).map(|a| a.to_string()),
            "commit": status.commit.0,
            "last_index": status.last_index.0,
            "durable_index": self.driver.storage().durable_known().last.0,
            "peers": peers,
        })
        .to_string()
    }

    fn flush_all(&mut self) {
        let mut failed_peers = Vec::new();
        for (&id, peer) in self.peers.iter_mut() {
            if let (Some(link), true) = (peer.link.as_mut(), peer.ready) {
                if link.has_outbound() {
                    if let Err(closed) = link.flush() {
                        failed_peers.push((id, closed.to_string()));
                    }
                }
            }
        }
        for (id, why) in failed_peers {
            self.drop_peer(id, &why);
        }
        let mut failed = Vec::new();
        for (&token, accepted) in self.accepted.iter_mut() {
            if accepted.link.has_outbound() {
                if let Err(closed) = accepted.link.flush() {
                    failed.push((token, closed));
                }
            }
        }
        for (token, closed) in failed {
            self.close(token, &closed);
        }
    }
}

fn frame_name(frame: &Frame) -> &'static str {
    match frame {
        Frame::Hello { .. } => "hello",
        Frame::Raft(_) => "raft",
        Frame::Append { .. } => "append",
        Frame::Query { .. } => "query",
        Frame::Status => "status",
        Frame::Redirect { .. } => "redirect",
        Frame::AppendResult { .. } => "append-result",
        Frame::QueryResult { .. } => "query-result",
        Frame::StatusResult { .. } => "status-result",
    }
}
