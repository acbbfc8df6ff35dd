//! The node's event loop: sockets, files and the clock in; the core's actions out, in order.
//! It owns the driver and two transport parts, and dispatches between them: what connections
//! bring in (`clients.rs` decides what each frame asks for) is stepped through the driver, and
//! what the driver releases goes out, messages to `peers.rs` and replies to `clients.rs`.
//!
//! Group commit: every frame that arrived in one poll round is stepped through the core and
//! its storage actions are written at once (to the page cache). At the end of the round one
//! fdatasync is requested from the background fsync thread, which merges requests that arrive
//! while it is busy. Messages before a `Sync` leave at once; everything after a `Sync` waits,
//! in order, until the fsync covering it completes; then the core hears `Event::LogPersisted`.
//! So a leader's AppendEntries are on the wire while its own write is being synced
//! (dissertation §10.2.1), the loop keeps serving while the disk works, and no vote or
//! acknowledgement leaves before the state it vouches for is on disk.

use crate::address;
use crate::clients::{Clients, Inbound};
use crate::codec::Frame;
use crate::driver::{Driver, DriverError, Output};
use crate::fs::RealFs;
use crate::limits;
use crate::members::{node_id, Members, MembersError};
use crate::peers::Peers;
use crate::retention::Retention;
use crate::status::{PeerReport, Replication, StatusReport};
use crate::storage::{Identity, OnCorruption, StorageError, StorageOptions};
use mio::net::TcpListener;
use mio::{Events, Interest, Poll, Token};
use replog_core::{Config, Event, NodeId, Term};
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
/// A round with at most this many readiness events counts as quiet: its fsync runs inline
/// (lowest latency); busier rounds hand it to the fsync thread and keep serving.
const QUIET_ROUND_EVENTS_MAX: usize = 2;

const LISTENER: Token = Token(0);
/// Outbound peer links use tokens from here up to `SYNCED`.
const FIRST_PEER: Token = Token(1);
/// The fsync thread wakes the loop with this token.
const SYNCED: Token = Token(FIRST_ACCEPTED.0 - 1);
/// Accepted connections use tokens from here on.
const FIRST_ACCEPTED: Token = Token(1 << 20);

/// What a node is started with.
#[derive(Clone, Debug)]
pub struct NodeOptions {
    /// The node's name (`-i`): in logs, hellos and the status.
    pub name: String,
    /// Where peers and clients reach it; also its identity in the cluster.
    pub address: SocketAddr,
    /// The other members' addresses.
    pub peers: Vec<SocketAddr>,
    /// Start an election at once (`--leader`).
    pub bootstrap: bool,
    /// The node's own data folder.
    pub data_dir: PathBuf,
    /// A damaged record before the log's tail is cut and repaired from the cluster instead of
    /// stopping the node (`--repair`).
    pub repair: bool,
    /// When to snapshot and trim the log (`--retain-entries`, `--retain-bytes`).
    pub retention: Retention,
    /// How the log is laid out in segment files (`--segment-bytes`).
    pub storage: StorageOptions,
}

/// Why a node stopped or could not start.
#[derive(Debug)]
pub enum RuntimeError {
    /// The options or the data folder's state make no valid node.
    Config(String),
    /// The peers make no cluster.
    Members(MembersError),
    /// Reading, writing or syncing the data folder failed.
    Storage(StorageError),
    /// A socket or the poller failed, doing what the text says.
    Io(&'static str, io::Error),
}

impl fmt::Display for RuntimeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RuntimeError::Config(why) => write!(f, "{why}"),
            RuntimeError::Members(error) => write!(f, "{error}"),
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
            DriverError::Image(why) => RuntimeError::Config(format!("a snapshot's state: {why}")),
        }
    }
}

/// The loop's state: the driver, the two transport parts, and the clock.
struct Server {
    name: String,
    bootstrap: bool,
    members: Members,
    poll: Poll,
    driver: Driver<RealFs>,
    peers: Peers,
    clients: Clients,
    /// What the driver released, being dispatched (kept to reuse its allocation).
    outputs: Vec<Output>,
    /// What a connection's frames asked for, being handled (kept likewise).
    inbound: Vec<Inbound>,
    started: Instant,
    /// Started with no term and no log: waits `FRESH_FOLLOWER_GRACE` unless bootstrapping.
    fresh: bool,
    /// The leadership last logged.
    last_leader: Option<(Term, Option<NodeId>)>,
}

/// Runs a node until `shutdown` is set (Ctrl-C, SIGTERM) or a fatal error (storage, fsync).
pub fn run(options: NodeOptions, shutdown: Arc<AtomicBool>) -> Result<(), RuntimeError> {
    let mut server = Server::start(options)?;
    // On an error the caller reports it; storage is not closed (after an fsync failure
    // nothing more may be written).
    server.serve(&shutdown)?;
    let Server { driver, name, .. } = server;
    driver.close()?;
    info!("{name} stopped cleanly");
    Ok(())
}

impl Server {
    fn start(options: NodeOptions) -> Result<Server, RuntimeError> {
        let members = Members::new(options.address, &options.peers).map_err(RuntimeError::Members)?;
        let mut config = Config::new(members.id(), members.peers().map(|(id, _)| id).collect());
        config.seed = members.id().0 ^ u64::from(std::process::id());
        config.message_bytes_max = limits::MESSAGE_BYTES_MAX;
        let poll = Poll::new().map_err(|e| RuntimeError::Io("creating the poller", e))?;
        let waker = mio::Waker::new(poll.registry(), SYNCED)
            .map_err(|e| RuntimeError::Io("creating the waker", e))?;
        let identity = Identity { name: options.name.clone(), address: options.address.to_string() };
        let fs = RealFs::with_background_sync(Arc::new(waker));
        let on_corruption = if options.repair { OnCorruption::Repair } else { OnCorruption::Refuse };
        let (mut driver, opened) = Driver::open_with_options(
            config,
            fs,
            &options.data_dir,
            identity,
            on_corruption,
            options.storage,
        )
        .map_err(|error| match error {
            DriverError::Start(e) => RuntimeError::Config(format!("{}: {e}", options.data_dir.display())),
            error => error.into(),
        })?;
        driver.set_retention(options.retention);
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
            peers: Peers::new(&members, &options.name, FIRST_PEER),
            clients: Clients::new(listener, FIRST_ACCEPTED),
            name: options.name,
            bootstrap: options.bootstrap,
            members,
            poll,
            driver,
            outputs: Vec::new(),
            inbound: Vec::new(),
            started: Instant::now(),
            fresh: opened.fresh,
            last_leader: None,
        })
    }

    fn serve(&mut self, shutdown: &AtomicBool) -> Result<(), RuntimeError> {
        let mut events = Events::with_capacity(1024);
        let mut next_tick = Instant::now() + TICK;
        if self.bootstrap {
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
                    LISTENER => self.clients.accept(self.poll.registry()),
                    SYNCED => self.on_synced()?,
                    token if token < FIRST_ACCEPTED => self.peers.on_event(token, self.poll.registry()),
                    token => self.on_accepted_event(token)?,
                }
            }
            if Instant::now() >= next_tick {
                next_tick += TICK;
                if Instant::now() > next_tick + TICK * 10 {
                    next_tick = Instant::now() + TICK; // far behind (paused?): do not burst
                }
                let waiting = self.fresh && !self.bootstrap && self.started.elapsed() < FRESH_FOLLOWER_GRACE;
                if !waiting {
                    self.step(Event::Tick)?;
                }
                self.peers.reconnect(self.poll.registry());
            }
            if let Some(proposal) = self.clients.take_proposal() {
                self.step(proposal)?;
            }
            // Messages first (a follower's fsync is on the commit path too), then one fsync
            // request for everything the round wrote, then what completed syncs released.
            self.flush();
            self.driver.end_round(!busy)?;
            self.on_synced()?;
            self.flush();
        }
        Ok(())
    }

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
        // Trimming waits until what the syncs released is handled (replies name command IDs).
        self.driver.retain()?;
        self.dispatch();
        Ok(())
    }

    /// Hands what the driver released to the peers and clients.
    fn dispatch(&mut self) {
        let mut outputs = std::mem::take(&mut self.outputs);
        self.driver.take_output(&mut outputs);
        for output in outputs.drain(..) {
            match output {
                Output::Send(message) => self.peers.send(message),
                Output::Reply(reply) => self.clients.on_reply(reply, &self.members, &mut self.driver),
                // The log is the state machine: applying needs no work beyond the commit index,
                // and a snapshot's image (the command count) is the driver's.
                Output::Apply(_) => {}
                Output::Restored(meta) => info!("installed the leader's snapshot through {}", meta.index),
            }
        }
        self.outputs = outputs;
        self.log_leadership();
    }

    /// Serves an accepted connection round by round, doing what each round's frames asked of
    /// the loop, in order, before reading more.
    fn on_accepted_event(&mut self, token: Token) -> Result<(), RuntimeError> {
        let mut inbound = std::mem::take(&mut self.inbound);
        let mut result = Ok(());
        let mut more = true;
        while more && result.is_ok() {
            more = self.clients.on_ready(
                token,
                self.poll.registry(),
                &self.members,
                &mut self.driver,
                &mut inbound,
            );
            // On an error the drain drops what is left: the node stops.
            result = inbound.drain(..).try_for_each(|item| self.on_inbound(item));
        }
        self.inbound = inbound;
        result
    }

    fn on_inbound(&mut self, item: Inbound) -> Result<(), RuntimeError> {
        match item {
            Inbound::Step(event) => self.step(event)?,
            Inbound::Hello { peer, name } => self.peers.named(peer, name),
            Inbound::Status(token) => {
                let report = self.status_report();
                self.clients.answer_status(token, report);
            }
            Inbound::TransferLeader { token, to } => {
                let answer = self.transfer_leader(&to)?;
                self.clients.answer(token, &answer);
            }
            Inbound::Trim { token, before_id } => {
                let before = self.driver.index_of_command(before_id);
                let meta = self.driver.trim(before)?;
                info!("trimmed the log through {} on request (before command {before_id})", meta.index);
                self.dispatch();
                self.clients.answer_trim(token, &self.driver);
            }
        }
        Ok(())
    }

    fn flush(&mut self) {
        self.peers.flush(self.poll.registry());
        self.clients.flush(self.poll.registry());
    }

    fn log_leadership(&mut self) {
        let node = self.driver.node();
        let now = (node.term(), node.leader());
        if self.last_leader == Some(now) {
            return;
        }
        let (term, leader) = now;
        match leader {
            Some(leader) if leader == self.members.id() => {
                info!("{} is leader in term {}", self.name, term.0)
            }
            Some(leader) => info!("term {}: leader is {}", term.0, self.peers.display_name(leader)),
            None if self.last_leader.is_some_and(|(_, l)| l.is_some()) => {
                info!("term {}: no leader known ({})", term.0, node.role_name())
            }
            None => debug!("term {}: {}", term.0, node.role_name()),
        }
        self.last_leader = Some(now);
    }

    /// The status: the core's view, each peer link's state, and how far the log is durable.
    /// Starts a leadership transfer (dissertation §3.10) to the member at `to`, or to the
    /// follower with the highest match index when `to` is empty; the answer for the client.
    fn transfer_leader(&mut self, to: &str) -> Result<Frame, RuntimeError> {
        let node = self.driver.node();
        if !node.is_leader() {
            let leader = node.leader().and_then(|id| self.members.address_of(id)).map(|a| a.to_string());
            return Ok(Frame::Redirect { leader });
        }
        let target = if to.is_empty() {
            // The most up-to-date follower among those answering now (not one just stopped).
            let status = node.status();
            let live = status.peers.iter().filter(|peer| peer.recent_active && peer.replicating);
            match live.max_by_key(|peer| (peer.match_index, std::cmp::Reverse(peer.id))) {
                Some(peer) => Some(peer.id),
                None => {
                    let reason = "no follower is answering: nobody to hand leadership to".to_string();
                    return Ok(Frame::Failed { reason });
                }
            }
        } else {
            match address::parse(to) {
                Ok(address) if address == self.members.address() => {
                    return Ok(Frame::Failed { reason: format!("{to} leads already") })
                }
                Ok(address) => Some(node_id(&address)).filter(|&id| self.members.is_peer(id)),
                Err(error) => return Ok(Frame::Failed { reason: error.to_string() }),
            }
        };
        let Some(target) = target else {
            return Ok(Frame::Failed { reason: format!("{to} is not a member of this cluster") });
        };
        let address = self.members.address_of(target).map_or_else(String::new, |a| a.to_string());
        info!("handing leadership to {address} on request");
        if let Some(other) = self.driver.node().status().transferring_to {
            let other = self.members.address_of(other).map_or_else(String::new, |a| a.to_string());
            return Ok(Frame::Failed { reason: format!("already handing leadership to {other}") });
        }
        self.step(Event::TransferLeadership { to: target })?;
        Ok(Frame::TransferStarted { to: address })
    }

    fn status_report(&self) -> StatusReport {
        let status = self.driver.node().status();
        let peers = self
            .peers
            .states()
            .map(|link| PeerReport {
                address: link.address,
                name: link.name.map(str::to_string),
                outbound_connected: link.connected,
                inbound_connected: self.clients.has_peer(link.id),
                messages_dropped: link.messages_dropped,
                replication: status.peers.iter().find(|p| p.id == link.id).map(|p| Replication {
                    match_index: p.match_index,
                    next_index: p.next_index,
                    replicating: p.replicating,
                }),
            })
            .collect();
        StatusReport {
            name: self.name.clone(),
            address: self.members.address(),
            role: status.role,
            term: status.term,
            leader: status.leader.and_then(|id| self.members.address_of(id)),
            commit: status.commit,
            last_index: status.last_index,
            durable_index: self.driver.storage().durable_known().last,
            first_index: self.driver.node().first_index(),
            first_id: self.driver.first_command_id(),
            cached_bytes: self.driver.node().cached_bytes(),
            peers,
        }
    }
}
