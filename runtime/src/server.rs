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

use crate::clients::{Clients, Inbound};
use crate::codec::Frame;
use crate::codec::{MemberAction, MemberRequest};
use crate::driver::{Driver, DriverError, Output};
use crate::fs::{RealFs, SyncTimer};
use crate::joining::{cluster_of, fresh_id, spawn_joiner, voters_of};
use crate::limits;
use crate::members::{check_peers, describe_change, describe_membership, legacy_id, Members, MembersError};
use crate::metrics::{Metrics, MetricsServer, Monitor, Observed};
use crate::peers::Peers;
use crate::retention::Retention;
use crate::status::MemberReport;
use crate::status::{PeerReport, Replication, StatusReport};
use crate::storage::{id_text, stored_identity};
use crate::storage::{Identity, OnCorruption, StorageError, StorageOptions};
use crate::tls::{Tls, TlsFiles};
use mio::net::TcpListener;
use mio::{Events, Interest, Poll, Token};
use replog_core::{Config, Event, NodeId, RoleKind, Term};
use replog_core::{MemberRole, Membership, MembershipChange};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::{debug, error, info, warn};

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
    /// Where peers and clients reach it.
    pub address: SocketAddr,
    /// The addresses of the other nodes of a new cluster (`-p`): a fresh node bootstraps with
    /// them once it knows each one's id. Not needed once the configuration lives in the log.
    pub peers: Vec<SocketAddr>,
    /// A fresh node that joins an existing cluster through this member (`--join`) instead of
    /// bootstrapping one: it asks to be added, as a learner promoted once caught up.
    pub join: Option<SocketAddr>,
    /// With `join`: stay a learner (`--learner`).
    pub learner: bool,
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
    /// Serve Prometheus metrics (`/metrics`) and the health check (`/health`) over HTTP here
    /// (`--metrics-addr`).
    pub metrics_address: Option<SocketAddr>,
    /// Mutual TLS on every connection, peer or client (`--tls-cert/--tls-key/--tls-ca`); the
    /// files are re-read on SIGHUP.
    pub tls: Option<TlsFiles>,
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

/// What a `-p` peer said in its hello: its id and the new cluster's addresses as it was told.
type PeerHello = (NodeId, Vec<String>);

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
    /// A fresh node of a new cluster waiting to learn its peers' ids: `-p` addresses and, for
    /// each, the id and the cluster it was told of, once it said hello. None once bootstrapped
    /// (or when not bootstrapping).
    awaiting: Option<BTreeMap<SocketAddr, Option<PeerHello>>>,
    /// The new cluster's addresses as this node was told them (`-p` and its own, sorted).
    cluster: Vec<String>,
    /// The configuration last seen in force, to notice changes.
    membership: Membership,
    /// Names peers gave in their hellos, by id.
    names: BTreeMap<NodeId, String>,
    /// When `forget_strangers` looks next.
    next_forget: Instant,
    /// What the metrics and the health check are published from.
    monitor: Monitor,
    /// The TLS identity and the flag SIGHUP sets to re-read its files.
    tls: Option<(Arc<Tls>, Arc<AtomicBool>)>,
    /// The HTTP server of `--metrics-addr`, if asked for; stopped when dropped.
    _metrics_server: Option<MetricsServer>,
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
        check_peers(options.address, &options.peers).map_err(RuntimeError::Members)?;
        // TLS first: a bad or expired certificate stops the start before anything is opened.
        let tls = match options.tls.clone() {
            Some(files) => {
                let tls = Tls::load(files).map_err(|e| RuntimeError::Config(e.to_string()))?;
                let reload = Arc::new(AtomicBool::new(false));
                signal_hook::flag::register(signal_hook::consts::SIGHUP, Arc::clone(&reload))
                    .map_err(|e| RuntimeError::Io("installing the SIGHUP handler", e))?;
                info!(
                    "TLS on: {}, key {}, CA {}",
                    tls.files().cert.display(),
                    tls.files().key.display(),
                    tls.files().ca.display()
                );
                Some((Arc::new(tls), reload))
            }
            None => None,
        };
        // Who this node is: the id its folder recorded; for a folder of an older version, the
        // id derived from its address it always had; for a fresh folder, a new random one.
        let stored = stored_identity(&mut RealFs::new(), &options.data_dir);
        let fresh_folder = stored.is_none();
        let legacy = matches!(stored, Some((None, _)));
        let (id, mut bootstrap) = match stored {
            Some((Some(id), bootstrap)) => (id, bootstrap),
            Some((None, _)) => {
                if options.peers.is_empty() {
                    return Err(RuntimeError::Config(format!(
                        "{}: this data folder is from an earlier version, which kept the cluster's \
                         members only in the -p flags: start it once more with the same -p flags \
                         (it then records them)",
                        options.data_dir.display()
                    )));
                }
                // Every node of such a cluster derived its peers' ids from their addresses.
                let mut voters: Vec<(NodeId, SocketAddr)> =
                    options.peers.iter().map(|&peer| (legacy_id(&peer), peer)).collect();
                voters.push((legacy_id(&options.address), options.address));
                (legacy_id(&options.address), Some(voters_of(&voters)))
            }
            None => (fresh_id(), None),
        };
        if fresh_folder && options.join.is_none() && options.peers.is_empty() {
            // A cluster of one: it knows everything it needs.
            bootstrap = Some(voters_of(&[(id, options.address)]));
        }
        let members = Members::new(id, options.address);
        let mut config = Config::new(id, Vec::new());
        match &bootstrap {
            Some(membership) => {
                config.peers = membership.voters().filter(|&voter| voter != id).collect();
                config.addresses =
                    membership.members.iter().map(|(&id, member)| (id, member.address.clone())).collect();
            }
            // Joining, waiting for its peers' ids, or a member that joined (its configuration
            // is in its log).
            None => config.joining = true,
        }
        config.seed = id.0 ^ u64::from(std::process::id());
        // The first leader writes the bootstrap into the log: a node that missed it (it heard
        // from the leader before it knew every peer's id) or joined later learns it there.
        config.record_bootstrap = true;
        config.message_bytes_max = limits::MESSAGE_BYTES_MAX;
        let poll = Poll::new().map_err(|e| RuntimeError::Io("creating the poller", e))?;
        let waker = mio::Waker::new(poll.registry(), SYNCED)
            .map_err(|e| RuntimeError::Io("creating the waker", e))?;
        let identity = Identity { name: options.name.clone(), address: options.address.to_string() };
        let metrics = Arc::new(Metrics::new());
        let timed = Arc::clone(&metrics);
        let fs = RealFs::with_background_sync(Arc::new(waker))
            .timing_syncs(SyncTimer::new(move |took| timed.fsync_took(took)));
        // A confirmation of the leadership holds for an election timeout (its upper bound).
        let confirm_within = TICK * config.election_ticks_max;
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
        if fresh_folder || legacy {
            driver.storage_mut().record_identity(id, bootstrap.clone())?;
        }
        // A node in no configuration at all (not bootstrapped, never reached by a leader):
        // with -p it waits for its peers' ids to bootstrap; with --join it asks to be added.
        // Also after a restart that came before either finished.
        let in_no_configuration = driver.node().membership().members.is_empty();
        let awaiting = (in_no_configuration && options.join.is_none() && !options.peers.is_empty())
            .then(|| options.peers.iter().map(|&peer| (peer, None)).collect());
        match options.join {
            Some(join) if in_no_configuration => spawn_joiner(join, options.address, id, options.learner),
            Some(_) => info!("{} is in a configuration already: --join ignored", options.name),
            None => {}
        }
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
        info!("{} (id {}) listening on {}", options.name, id_text(id), options.address);
        let metrics_server = match options.metrics_address {
            Some(address) => Some(
                MetricsServer::start(address, Arc::clone(&metrics))
                    .map_err(|e| RuntimeError::Io("binding the metrics address (--metrics-addr)", e))?,
            ),
            None => None,
        };
        let cluster = cluster_of(options.address, &options.peers);
        let hello = Frame::Hello {
            address: options.address.to_string(),
            name: options.name.clone(),
            id,
            bootstrap: driver.storage().bootstrap().cloned(),
            cluster: cluster.clone(),
        };
        let node_tls = tls.as_ref().map(|(tls, _)| Arc::clone(tls));
        let mut peers = Peers::new(hello, FIRST_PEER, SYNCED, Arc::clone(&metrics), node_tls.clone());
        for &peer in &options.peers {
            peers.ensure(peer); // bootstrap peers are dialled before their ids are known
        }
        if awaiting.is_some() {
            info!("{} waits for its peers {:?} to bootstrap a new cluster", options.name, options.peers);
        }
        let mut server = Server {
            peers,
            clients: Clients::new(listener, FIRST_ACCEPTED, Arc::clone(&metrics), node_tls),
            tls,
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
            awaiting,
            cluster,
            membership: Membership::default(),
            names: BTreeMap::new(),
            next_forget: Instant::now(),
            monitor: Monitor::new(metrics, confirm_within, Instant::now()),
            _metrics_server: metrics_server,
        };
        server.note_membership();
        Ok(server)
    }

    /// After a SIGHUP, re-reads the TLS files for new connections; a bad file keeps the old
    /// configuration and says why.
    fn reload_tls_if_asked(&mut self) {
        let Some((tls, reload)) = &self.tls else {
            return;
        };
        if !reload.swap(false, Ordering::Relaxed) {
            return;
        }
        match tls.reload() {
            Ok(()) => {
                // This process's own client connections (a joining node's requests) too.
                crate::tls::set_client_config(std::sync::Arc::clone(&tls.configs().client));
                info!("SIGHUP: TLS certificates re-read from {}", tls.files().cert.display())
            }
            Err(error) => error!("SIGHUP: keeping the current TLS certificates: {error}"),
        }
    }

    /// Follows the configuration in force: learns members' addresses, dials them, logs changes.
    fn note_membership(&mut self) {
        let node = self.driver.node();
        if *node.membership() == self.membership {
            return;
        }
        let membership = node.membership().clone();
        let committed = node.commit() >= node.membership_index();
        self.members.learn_all(&membership);
        for (&id, member) in &membership.members {
            if let Ok(address) = member.address.parse::<SocketAddr>() {
                if id != self.members.id() {
                    self.peers.ensure(address);
                }
                self.driver.storage_mut().label_member(id, member.address.clone());
            }
        }
        let own = membership.members.get(&self.members.id()).map_or("not a member", |m| m.role.name());
        info!(
            "configuration{}: {} ({} here)",
            if committed { "" } else { " (not committed yet)" },
            describe_membership(&membership),
            own
        );
        self.membership = membership;
    }

    /// Once a second: forgets the links, addresses, names and metric series of nodes that are
    /// neither members, nor bootstrap peers, nor connected to this node now. Every hello makes
    /// them (a node being added, a leader calling a fresh node, any caller on a plain port), so
    /// without this they would grow with every caller ever seen.
    fn forget_strangers(&mut self, now: Instant) {
        if now < self.next_forget {
            return;
        }
        self.next_forget = now + Duration::from_secs(1);
        let mut ids: BTreeSet<NodeId> = self.membership.members.keys().copied().collect();
        let mut addresses: BTreeSet<SocketAddr> =
            self.membership.members.values().filter_map(|member| member.address.parse().ok()).collect();
        if let Some(awaiting) = &self.awaiting {
            addresses.extend(awaiting.keys().copied());
        }
        for (id, address) in self.clients.peer_callers() {
            ids.insert(id);
            addresses.insert(address);
        }
        if let Some(voted_for) = self.driver.node().voted_for() {
            ids.insert(voted_for);
            addresses.extend(self.members.address_of(voted_for));
        }
        self.peers.retain(|address| addresses.contains(&address), self.poll.registry());
        self.members.retain(|id| ids.contains(&id));
        self.names.retain(|id, _| ids.contains(id));
        self.driver.storage_mut().retain_labels(|id| ids.contains(&id));
    }

    /// A fresh node of a new cluster learned a peer's id: bootstrap once every `-p` peer's id
    /// is known, or adopt the configuration a peer already bootstrapped with if it lists this
    /// node, or give up bootstrapping if the peers formed a cluster without it.
    fn on_bootstrap_hello(
        &mut self,
        peer: NodeId,
        address: SocketAddr,
        bootstrap: Option<Membership>,
        cluster: Vec<String>,
    ) -> Result<(), RuntimeError> {
        let Some(awaiting) = self.awaiting.as_mut() else {
            return Ok(());
        };
        if bootstrap.is_none() && awaiting.contains_key(&address) && cluster != self.cluster {
            // Two nodes told of different clusters would bootstrap different configurations,
            // and each could elect its own leader: refuse, loudly, until the flags agree.
            warn!(
                "{} was started with -p naming the cluster {:?}, but {address} with {:?}: every node of a \
                 new cluster must name the same nodes; not bootstrapping until they do (fix the flags and \
                 restart the nodes)",
                self.name, self.cluster, cluster
            );
        }
        if let Some(slot) = awaiting.get_mut(&address) {
            *slot = Some((peer, cluster));
        }
        let from_a_peer = awaiting.contains_key(&address);
        let membership = match bootstrap {
            Some(theirs) if theirs.contains(self.members.id()) => theirs,
            // Only the peers it was told of can say the cluster exists without it.
            Some(_) if !from_a_peer => return Ok(()),
            Some(_) => {
                warn!(
                    "{} is new, and its peers already form a cluster without it: it waits to be added \
                     (`replog member add -t {address} --address {}`)",
                    self.name,
                    self.members.address()
                );
                self.awaiting = None;
                return Ok(());
            }
            None if awaiting
                .values()
                .all(|known| known.as_ref().is_some_and(|(_, theirs)| *theirs == self.cluster)) =>
            {
                let mut voters: Vec<(NodeId, SocketAddr)> = awaiting
                    .iter()
                    .map(|(&address, known)| (known.as_ref().expect("all known").0, address))
                    .collect();
                voters.push((self.members.id(), self.members.address()));
                voters_of(&voters)
            }
            None => return Ok(()),
        };
        self.awaiting = None;
        if !self.driver.bootstrap(&membership)? {
            return Ok(()); // it heard from a leader meanwhile: its configuration comes from the log
        }
        info!("{} bootstrapped a new cluster: {}", self.name, describe_membership(&membership));
        self.peers.set_hello(Frame::Hello {
            address: self.members.address().to_string(),
            name: self.name.clone(),
            id: self.members.id(),
            bootstrap: Some(membership),
            cluster: self.cluster.clone(),
        });
        self.started = Instant::now();
        self.note_membership();
        if self.bootstrap {
            self.step(Event::Campaign)?;
        }
        Ok(())
    }

    /// A client's membership change: resolved to ids here (clients name members by address),
    /// decided by the core, answered when it commits.
    fn change_membership(&mut self, token: Token, request: MemberRequest) -> Result<(), RuntimeError> {
        let node = self.driver.node();
        if !node.is_leader() {
            let leader = node.leader().and_then(|id| self.members.address_of(id)).map(|a| a.to_string());
            self.clients.answer(token, &Frame::Redirect { leader });
            return Ok(());
        }
        // `host:port` as the client resolved it: no name lookup on the event loop.
        let address = match request.address.parse::<SocketAddr>() {
            Ok(address) => address.to_string(),
            Err(_) => {
                let reason = format!("{:?} is not an address (ip:port)", request.address);
                self.clients.answer(token, &Frame::Failed { reason });
                return Ok(());
            }
        };
        let membership = node.membership();
        let member = membership.members.iter().find(|(_, m)| m.address == address).map(|(&id, _)| id);
        let change = match (request.action, member) {
            (MemberAction::Add | MemberAction::AddLearner, _) if request.id == NodeId(0) => {
                Err("the new node's id is missing".to_string())
            }
            (MemberAction::Add | MemberAction::AddLearner, _) => Ok(MembershipChange::Add {
                id: request.id,
                address: address.clone(),
                promote: request.action == MemberAction::Add,
            }),
            (MemberAction::Promote, Some(id)) => Ok(MembershipChange::Promote { id }),
            (MemberAction::Remove, Some(id)) => Ok(MembershipChange::Remove { id }),
            (MemberAction::Promote | MemberAction::Remove, None) => {
                Err(format!("{address} is not a member of this cluster (see `replog member list`)"))
            }
        };
        let change = match change.and_then(|change| self.check_change_size(membership, change)) {
            Ok(change) => change,
            Err(reason) => {
                self.clients.answer(token, &Frame::Failed { reason });
                return Ok(());
            }
        };
        info!("membership change asked: {}", describe_change(&change, &self.members));
        let force = request.force;
        let request = self.clients.track_change(token);
        self.step(Event::ChangeMembership { request, change, force })?;
        Ok(())
    }

    /// Refuses a change whose configuration would not fit the wire's limit for one.
    fn check_change_size(
        &self,
        membership: &Membership,
        change: MembershipChange,
    ) -> Result<MembershipChange, String> {
        if let Ok(next) = membership.apply(&change) {
            let bytes = serde_json::to_vec(&next).map_or(usize::MAX, |json| json.len());
            if bytes > crate::codec::MEMBERSHIP_JSON_BYTES_MAX {
                return Err(format!(
                    "the configuration would take {bytes} bytes, more than the {} one message carries",
                    crate::codec::MEMBERSHIP_JSON_BYTES_MAX
                ));
            }
        }
        Ok(change)
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
            self.reload_tls_if_asked();
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
                // Only a follower waits: a fresh node handed leadership (TimeoutNow) in that
                // time must keep time at once, or it sends no heartbeats until it is over.
                let waiting = self.fresh
                    && !self.bootstrap
                    && self.driver.node().role() == RoleKind::Follower
                    && self.started.elapsed() < FRESH_FOLLOWER_GRACE;
                if !waiting {
                    self.step(Event::Tick)?;
                }
                self.peers.reconnect(self.poll.registry());
                self.clients.close_silent(self.poll.registry(), Instant::now());
                self.forget_strangers(Instant::now());
                self.monitor.publish(&Observed::of(&self.driver, &self.members), Instant::now());
            }
            if let Some(proposal) = self.clients.take_proposal(&self.driver) {
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
                Output::Send(message) => self.peers.send(message, &self.members),
                Output::Reply(reply) => self.clients.on_reply(reply, &self.members, &mut self.driver),
                // The log is the state machine: applying needs no work beyond the commit index,
                // and a snapshot's image (the command count) is the driver's.
                Output::Apply(entries) => self.clients.on_applied(&entries, &self.driver),
                Output::Restored(meta) => info!("installed the leader's snapshot through {}", meta.index),
            }
        }
        self.outputs = outputs;
        self.clients.release_waiters(&self.driver);
        self.note_membership();
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
            Inbound::Step(Event::Receive(message)) => {
                let (from, term) = (message.from, message.term);
                self.step(Event::Receive(message))?;
                self.monitor.heard(self.driver.node(), from, term, Instant::now());
            }
            Inbound::Step(event) => self.step(event)?,
            Inbound::Hello { peer, name, address, bootstrap, cluster } => {
                self.members.learn_from_hello(peer, address);
                self.peers.ensure(address);
                self.peers.named(address, name.clone());
                self.names.insert(peer, name);
                self.driver.storage_mut().label_member(peer, address.to_string());
                self.on_bootstrap_hello(peer, address, bootstrap, cluster)?;
            }
            Inbound::ChangeMembership { token, request } => self.change_membership(token, request)?,
            Inbound::Status(token) => {
                let report = self.status_report();
                self.clients.answer_status(token, report);
            }
            Inbound::Health(token) => {
                let verdict = self.monitor.assess(&Observed::of(&self.driver, &self.members), Instant::now());
                let (ok, reason) = match verdict {
                    Ok(()) => (true, String::new()),
                    Err(reason) => (false, reason),
                };
                self.clients.answer(token, &Frame::HealthResult { ok, reason });
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
        self.monitor.leadership(term, leader);
        match leader {
            Some(leader) if leader == self.members.id() => {
                info!("{} is leader in term {}", self.name, term.0)
            }
            Some(leader) => {
                info!("term {}: leader is {}", term.0, self.peers.display_name(leader, &self.members))
            }
            None if self.last_leader.is_some_and(|(_, l)| l.is_some()) => {
                info!("term {}: no leader known ({})", term.0, node.role_name())
            }
            None => debug!("term {}: {}", term.0, node.role_name()),
        }
        self.last_leader = Some(now);
    }

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
            let voter = |id| node.membership().is_voter(id);
            let live =
                status.peers.iter().filter(|peer| peer.answering && peer.replicating && voter(peer.id));
            match live.max_by_key(|peer| (peer.match_index, std::cmp::Reverse(peer.id))) {
                Some(peer) => Some(peer.id),
                None => {
                    let reason = "no follower is answering: nobody to hand leadership to".to_string();
                    return Ok(Frame::Failed { reason });
                }
            }
        } else {
            // `host:port` as the client resolved it: no name lookup on the event loop.
            match to.parse::<SocketAddr>().map_err(|_| format!("{to:?} is not an address (ip:port)")) {
                Ok(address) if address == self.members.address() => {
                    return Ok(Frame::Failed { reason: format!("{to} leads already") })
                }
                Ok(address) => {
                    let text = address.to_string();
                    let membership = node.membership();
                    let found = membership.members.iter().find(|(_, m)| m.address == text);
                    match found {
                        Some((_, member)) if member.role != MemberRole::Voter => {
                            return Ok(Frame::Failed {
                                reason: format!("{to} is a learner: only a voter can lead"),
                            })
                        }
                        found => found.map(|(&id, _)| id),
                    }
                }
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

    /// One row per member of the configuration in force; replication figures on the leader.
    fn member_reports(&self, status: &replog_core::Status) -> Vec<MemberReport> {
        let node = self.driver.node();
        let own = self.members.id();
        let last = node.last_index();
        let leading = node.is_leader();
        node.membership()
            .members
            .iter()
            .map(|(&id, member)| {
                let match_index = if id == own {
                    leading.then(|| node.persisted_index())
                } else {
                    status.peers.iter().find(|peer| peer.id == id).map(|peer| peer.match_index)
                };
                let connected =
                    id == own || member.address.parse().is_ok_and(|address| self.peers.is_connected(address));
                MemberReport {
                    id: id_text(id),
                    name: if id == own { Some(self.name.clone()) } else { self.names.get(&id).cloned() },
                    address: member.address.clone(),
                    role: member.role.name().to_string(),
                    match_index,
                    lag: match_index.map(|index| last.0.saturating_sub(index.0)),
                    connected,
                }
            })
            .collect()
    }

    /// The status: the core's view, each peer link's state, and how far the log is durable.
    fn status_report(&self) -> StatusReport {
        let status = self.driver.node().status();
        let peers = self
            .peers
            .states()
            .map(|link| PeerReport {
                address: link.address,
                name: link.name.map(str::to_string),
                outbound_connected: link.connected,
                inbound_connected: self.members.ids_at(link.address).any(|id| self.clients.has_peer(id)),
                messages_dropped: link.messages_dropped,
                replication: status
                    .peers
                    .iter()
                    .find(|p| self.members.address_of(p.id) == Some(link.address))
                    .map(|p| Replication {
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
            id: id_text(self.members.id()),
            members: self.member_reports(&status),
            members_committed: self.driver.node().commit() >= self.driver.node().membership_index(),
        }
    }
}
