//! Metrics and health. The event loop owns the truth: at cheap points (every tick, and at the
//! events themselves) it publishes into the handles of a prometheus-client registry (atomics;
//! histograms and labelled families take the crate's own short lock) and into the health
//! facts. The HTTP server (`--metrics-addr`) only encodes the registry (`GET /metrics`, the
//! Prometheus text format 0.0.4) and judges the facts by its own clock (`GET /health`), so a
//! scrape never waits for the event loop, and a wedged event loop shows as unhealthy rather
//! than as numbers that stopped moving.
//!
//! Healthy means the cluster can commit, as far as this node can tell (etcd once reported
//! "healthy" while it was read-only): a leader confirmed by a quorum within the last election
//! timeout (on the leader, a majority of voters, itself included, heard from within it; on a
//! follower, its leader heard from within it), and a commit index that moves or has nothing to
//! do (no entry waits longer than [`COMMIT_STALL_MAX`] without the commit index moving).
//! A follower cannot see its leader's quorum: one in the same minority as its leader stays
//! healthy until check-quorum deposes the leader (two rounds of `election_ticks_min` at most)
//! and the leader's last message ages past the election timeout. The simulator checks both
//! bounds (`sim/src/health.rs`).
//!
//! The HTTP server is a small one of our own on `httparse`: a fixed pool of threads, a bounded
//! queue and one deadline per connection ([`MetricsServer`]). tiny_http, used before, spawned a
//! thread per connection without limit and had no timeouts: one client that never read its
//! answers blocked the thread answering everyone, and idle sockets grew the node's threads.

use crate::connection::Violation;
use crate::members::Members;
use prometheus_client::encoding::prometheus_text;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};
use replog_core::{LogIndex, Node, NodeId, RejectReason, Term};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tracing::{debug, info, warn};

/// Entries waiting this long with the commit index not moving make a node unhealthy: a leader
/// that still heartbeats but whose quorum cannot store (a full or hung disk) commits nothing.
pub const COMMIT_STALL_MAX: Duration = Duration::from_secs(5);
/// Marks of the leader's log growth kept for the followers' lag in seconds; older ones are
/// thinned out (the oldest is always kept, so a stuck follower's lag stays exact).
const LAG_MARKS_MAX: usize = 1024;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PeerLabels {
    /// The peer's address (`-a`): stable from the first message on, unlike its name, which is
    /// known only once it has called (`replog_peer_info` maps one to the other).
    peer: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PeerInfoLabels {
    peer: String,
    name: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

/// Every series a node exports, and the health facts. Shared (`Arc`) between the event loop,
/// which publishes, the fsync thread (its latency), and the HTTP workers, which read.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    has_leader: Gauge,
    is_leader: Gauge,
    term: Gauge,
    commit_index: Gauge,
    last_index: Gauge,
    applied_index: Gauge,
    durable_index: Gauge,
    sessions: Gauge,
    leader_changes: Counter,
    proposals_committed: Counter,
    proposals_failed: Family<ReasonLabels, Counter>,
    append_latency: Histogram,
    fsync_latency: Histogram,
    peer_info: Family<PeerInfoLabels, Gauge>,
    peer_sent_bytes: Family<PeerLabels, Counter>,
    peer_sent_messages: Family<PeerLabels, Counter>,
    peer_received_bytes: Family<PeerLabels, Counter>,
    peer_received_messages: Family<PeerLabels, Counter>,
    follower_lag_entries: Family<PeerLabels, Gauge>,
    follower_lag_seconds: Family<PeerLabels, Gauge<f64, AtomicU64>>,
    snapshot_sends: Counter,
    connections_refused: Family<ReasonLabels, Counter>,
    /// What `/health` judges; None until the event loop first published.
    health: Mutex<Option<HealthFacts>>,
}

/// One peer's traffic counters, looked up once per link (no label lookup per message).
#[derive(Clone, Debug)]
pub struct PeerTraffic {
    sent_bytes: Counter,
    sent_messages: Counter,
    received_bytes: Counter,
    received_messages: Counter,
}

impl PeerTraffic {
    /// A message of `bytes` (frame included) queued for the peer.
    pub fn sent(&self, bytes: usize) {
        self.sent_bytes.inc_by(bytes as u64);
        self.sent_messages.inc();
    }

    /// A message of `bytes` (frame included) received from the peer.
    pub fn received(&self, bytes: usize) {
        self.received_bytes.inc_by(bytes as u64);
        self.received_messages.inc();
    }
}

/// Why an append was answered with something other than its commit (`proposals_failed`'s
/// `reason` label).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AppendFailure {
    /// This node does not lead (the client is redirected).
    NotLeader,
    /// The leader refused it for now (too many entries uncommitted or reads pending).
    Overloaded,
    /// Leadership is being handed over.
    Transferring,
    /// The leader refused it for another reason (an empty proposal).
    Rejected,
    /// Leadership changed before it committed: it may or may not be in the log.
    LeadershipLost,
    /// This node lost track of it (a snapshot covers it, or a new leader replaced it).
    LostTrack,
    /// Larger than one frame can carry to the followers.
    TooLarge,
    /// A session refused it (a failed condition, a forgotten session, not ready).
    SessionRefused,
    /// Malformed (a session request with no command or no sequence number).
    Invalid,
}

impl AppendFailure {
    /// Every failure (each has its series from the start, at 0).
    pub const ALL: [AppendFailure; 9] = [
        AppendFailure::NotLeader,
        AppendFailure::Overloaded,
        AppendFailure::Transferring,
        AppendFailure::Rejected,
        AppendFailure::LeadershipLost,
        AppendFailure::LostTrack,
        AppendFailure::TooLarge,
        AppendFailure::SessionRefused,
        AppendFailure::Invalid,
    ];

    /// The failure a core refusal stands for.
    pub fn of_rejection(reason: &RejectReason) -> AppendFailure {
        match reason {
            RejectReason::Overloaded => AppendFailure::Overloaded,
            RejectReason::Transferring => AppendFailure::Transferring,
            RejectReason::Empty | RejectReason::Change(_) => AppendFailure::Rejected,
        }
    }

    /// The `reason` label.
    pub fn label(self) -> &'static str {
        match self {
            AppendFailure::NotLeader => "not_leader",
            AppendFailure::Overloaded => "overloaded",
            AppendFailure::Transferring => "transferring",
            AppendFailure::Rejected => "rejected",
            AppendFailure::LeadershipLost => "leadership_lost",
            AppendFailure::LostTrack => "lost_track",
            AppendFailure::TooLarge => "too_large",
            AppendFailure::SessionRefused => "session_refused",
            AppendFailure::Invalid => "invalid",
        }
    }
}

/// Why a connection was refused or closed by this node (`connections_refused`'s `reason`).
pub fn refusal_label(violation: &Violation) -> &'static str {
    match violation {
        Violation::Undecodable(_) => "undecodable",
        Violation::BadHelloAddress(_) => "bad_hello",
        Violation::Impostor { .. } | Violation::IdentityTaken(_) => "impostor",
        Violation::Misaddressed { .. } => "misaddressed",
        Violation::UnexpectedFrame { .. } => "unexpected_frame",
        Violation::Plaintext => "plaintext",
        Violation::Tls(_) => "tls",
        Violation::CertificateMismatch { .. } => "certificate_mismatch",
        Violation::Silent => "silent",
    }
}

/// The `reason` of a connection refused because too many are open.
pub const REFUSED_LIMIT: &str = "limit";

/// Every `reason` of `connections_refused` (each has its series from the start, at 0).
const REFUSAL_LABELS: [&str; 10] = [
    REFUSED_LIMIT,
    "undecodable",
    "bad_hello",
    "impostor",
    "misaddressed",
    "unexpected_frame",
    "plaintext",
    "tls",
    "certificate_mismatch",
    "silent",
];

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

impl Metrics {
    /// Every series registered, all zero.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("replog");
        let r = &mut registry;
        let gauge = |r: &mut Registry, name: &str, help: &str| {
            let gauge = Gauge::default();
            r.register(name, help, gauge.clone());
            gauge
        };
        let counter = |r: &mut Registry, name: &str, help: &str| {
            let counter = Counter::default();
            r.register(name, help, counter.clone());
            counter
        };
        let has_leader =
            gauge(r, "has_leader", "1 if this node knows a leader of its term (itself included)");
        let is_leader = gauge(r, "is_leader", "1 if this node leads");
        let term = gauge(r, "term", "The node's current term");
        let commit_index = gauge(r, "commit_index", "The highest log index this node knows committed");
        let last_index = gauge(r, "last_index", "The index of the node's last log entry");
        let applied_index = gauge(r, "applied_index", "The highest log index applied to the state machine");
        let durable_index = gauge(r, "durable_index", "How far the node's log is known fsync'd");
        let sessions = gauge(r, "sessions", "Client sessions in the session table");
        let leader_changes =
            counter(r, "leader_changes", "Leaders seen: each new (term, leader) this node learned of");
        let proposals_committed =
            counter(r, "proposals_committed", "Client appends this node proposed and answered committed");
        let proposals_failed = Family::<ReasonLabels, Counter>::default();
        r.register(
            "proposals_failed",
            "Client appends answered with anything but their commit, by reason",
            proposals_failed.clone(),
        );
        // 0.5 ms .. 16 s and 0.1 ms .. 3.3 s, doubling.
        let append_latency = Histogram::new(exponential_buckets(0.0005, 2.0, 16));
        r.register_with_unit(
            "append_latency",
            "From a client's append arriving at the leader to its commit being answered",
            Unit::Seconds,
            append_latency.clone(),
        );
        let fsync_latency = Histogram::new(exponential_buckets(0.0001, 2.0, 16));
        r.register_with_unit(
            "fsync_latency",
            "One fdatasync of the log (group commit: it covers every write before it)",
            Unit::Seconds,
            fsync_latency.clone(),
        );
        let peer_info = Family::<PeerInfoLabels, Gauge>::default();
        r.register("peer_info", "1 for each peer's address and the name it gave", peer_info.clone());
        let family = |r: &mut Registry, name: &str, help: &str, unit: Option<Unit>| {
            let family = Family::<PeerLabels, Counter>::default();
            match unit {
                Some(unit) => r.register_with_unit(name, help, unit, family.clone()),
                None => r.register(name, help, family.clone()),
            }
            family
        };
        let peer_sent_bytes =
            family(r, "peer_sent", "Bytes of Raft messages queued for each peer", Some(Unit::Bytes));
        let peer_sent_messages = family(r, "peer_sent_messages", "Raft messages queued for each peer", None);
        let peer_received_bytes =
            family(r, "peer_received", "Bytes of Raft messages received from each peer", Some(Unit::Bytes));
        let peer_received_messages =
            family(r, "peer_received_messages", "Raft messages received from each peer", None);
        let follower_lag_entries = Family::<PeerLabels, Gauge>::default();
        r.register(
            "follower_lag_entries",
            "On the leader: its last index minus each follower's match index",
            follower_lag_entries.clone(),
        );
        let follower_lag_seconds = Family::<PeerLabels, Gauge<f64, AtomicU64>>::default();
        r.register_with_unit(
            "follower_lag",
            "On the leader: how long ago it appended the first entry each follower lacks (0: caught up)",
            Unit::Seconds,
            follower_lag_seconds.clone(),
        );
        let snapshot_sends = counter(
            r,
            "snapshot_sends",
            "Snapshot transfers this node started as leader (a follower needed trimmed entries)",
        );
        let connections_refused = Family::<ReasonLabels, Counter>::default();
        r.register(
            "connections_refused",
            "Accepted connections refused or closed by this node, by reason",
            connections_refused.clone(),
        );
        // Series that exist from the start, at 0: an alert on their rate needs no special case
        // for a series that appears only when the first one happens.
        for failure in AppendFailure::ALL {
            let _ = proposals_failed.get_or_create(&ReasonLabels { reason: failure.label() });
        }
        for reason in REFUSAL_LABELS {
            let _ = connections_refused.get_or_create(&ReasonLabels { reason });
        }
        Metrics {
            registry,
            has_leader,
            is_leader,
            term,
            commit_index,
            last_index,
            applied_index,
            durable_index,
            sessions,
            leader_changes,
            proposals_committed,
            proposals_failed,
            append_latency,
            fsync_latency,
            peer_info,
            peer_sent_bytes,
            peer_sent_messages,
            peer_received_bytes,
            peer_received_messages,
            follower_lag_entries,
            follower_lag_seconds,
            snapshot_sends,
            connections_refused,
            health: Mutex::new(None),
        }
    }

    /// The registry in the Prometheus text format (version 0.0.4).
    pub fn encode(&self) -> String {
        let mut text = String::new();
        prometheus_text::encode(&mut text, &self.registry).expect("writing to a String cannot fail");
        text
    }

    /// The counters of the peer at `address`, created on first use.
    pub fn peer_traffic(&self, address: SocketAddr) -> PeerTraffic {
        let labels = PeerLabels { peer: address.to_string() };
        PeerTraffic {
            sent_bytes: self.peer_sent_bytes.get_or_create_owned(&labels),
            sent_messages: self.peer_sent_messages.get_or_create_owned(&labels),
            received_bytes: self.peer_received_bytes.get_or_create_owned(&labels),
            received_messages: self.peer_received_messages.get_or_create_owned(&labels),
        }
    }

    /// The peer at `address` said its name.
    pub fn peer_named(&self, address: SocketAddr, name: &str) {
        self.peer_info
            .get_or_create(&PeerInfoLabels { peer: address.to_string(), name: name.to_string() })
            .set(1);
    }

    /// The peer at `address` no longer goes by `name`.
    pub fn peer_unnamed(&self, address: SocketAddr, name: &str) {
        self.peer_info.remove(&PeerInfoLabels { peer: address.to_string(), name: name.to_string() });
    }

    /// Drops every series of the peer at `address` (it left, or only ever called).
    pub fn forget_peer(&self, address: SocketAddr, name: Option<&str>) {
        let labels = PeerLabels { peer: address.to_string() };
        for family in [
            &self.peer_sent_bytes,
            &self.peer_sent_messages,
            &self.peer_received_bytes,
            &self.peer_received_messages,
        ] {
            family.remove(&labels);
        }
        if let Some(name) = name {
            self.peer_unnamed(address, name);
        }
    }

    /// An append this node proposed committed, `waited` after it arrived.
    pub fn append_committed(&self, waited: Duration) {
        self.proposals_committed.inc();
        self.append_latency.observe(waited.as_secs_f64());
    }

    /// An append was answered without its commit.
    pub fn append_failed(&self, failure: AppendFailure) {
        self.proposals_failed.get_or_create(&ReasonLabels { reason: failure.label() }).inc();
    }

    /// One fdatasync of the log took `took` (called on the fsync thread, or inline).
    pub fn fsync_took(&self, took: Duration) {
        self.fsync_latency.observe(took.as_secs_f64());
    }

    /// A connection was refused or closed for `reason` ([`refusal_label`], [`REFUSED_LIMIT`]).
    pub fn connection_refused(&self, reason: &'static str) {
        self.connections_refused.get_or_create(&ReasonLabels { reason }).inc();
    }

    /// The verdict on the facts last published, judged at `now`: `Err` with the reason in one
    /// line if the node cannot tell that its cluster commits.
    pub fn assess(&self, now: Instant) -> Result<(), String> {
        let facts = self.health.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clone();
        match facts {
            Some(facts) => assess(&facts, now),
            None => Err("the node is starting".to_string()),
        }
    }

    fn publish_health(&self, facts: HealthFacts) {
        *self.health.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(facts);
    }
}

/// What the health verdict is drawn from, as the event loop last saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HealthFacts {
    /// This node leads.
    pub leading: bool,
    /// The leader it knows (its address, or its id if the address is unknown), itself when
    /// leading.
    pub leader: Option<String>,
    /// Since when `leader` is what it is (known or unknown).
    pub leader_since: Instant,
    /// When the leadership was last confirmed: on the leader, the moment by which a majority of
    /// voters (itself included) had been heard from in its term; on a follower, when it last
    /// heard from its leader. None: never (the verdict counts from `leader_since`).
    pub confirmed: Option<Instant>,
    /// How long a confirmation holds: the election timeout (its upper bound).
    pub confirm_within: Duration,
    /// The commit index.
    pub commit: LogIndex,
    /// The last index.
    pub last_index: LogIndex,
    /// Entries wait to commit and the commit index has not moved since this moment.
    pub stalled_since: Option<Instant>,
}

/// The health verdict on `facts` at `now`.
pub fn assess(facts: &HealthFacts, now: Instant) -> Result<(), String> {
    let seconds = |since: Instant| Seconds(now.saturating_duration_since(since));
    let Some(leader) = &facts.leader else {
        return Err(format!("no leader known for {}", seconds(facts.leader_since)));
    };
    let heard = facts.confirmed.unwrap_or(facts.leader_since);
    if now.saturating_duration_since(heard) > facts.confirm_within {
        let within = Seconds(facts.confirm_within);
        return Err(if facts.leading {
            format!(
                "leader not confirmed by a quorum for {} (this node leads; a majority of voters must answer within {within})",
                seconds(heard)
            )
        } else {
            format!("leader {leader} not heard from for {} (it must be within {within})", seconds(heard))
        });
    }
    if let Some(since) = facts.stalled_since {
        if now.saturating_duration_since(since) > COMMIT_STALL_MAX {
            return Err(format!(
                "commit stuck at {} for {} with {} entries pending",
                facts.commit.0,
                seconds(since),
                facts.last_index.0.saturating_sub(facts.commit.0)
            ));
        }
    }
    Ok(())
}

/// A duration as operators read it: `3.2 s`, `0.30 s`.
struct Seconds(Duration);

impl fmt::Display for Seconds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let seconds = self.0.as_secs_f64();
        if seconds < 1.0 {
            write!(f, "{seconds:.2} s")
        } else {
            write!(f, "{seconds:.1} s")
        }
    }
}

/// When the leader's log reached each length, marked once a tick: how long ago it appended the
/// first entry a follower lacks.
#[derive(Debug, Default)]
struct LagClock {
    /// (last index, when it was first seen), both increasing.
    marks: VecDeque<(LogIndex, Instant)>,
}

impl LagClock {
    /// The log ends at `last` at `now`. A log that got shorter (a new term's leader starts
    /// over) forgets the marks past its end.
    fn appended(&mut self, last: LogIndex, now: Instant) {
        while self.marks.back().is_some_and(|&(index, _)| index > last) {
            self.marks.pop_back();
        }
        if self.marks.back().is_some_and(|&(index, _)| index == last) {
            return;
        }
        if self.marks.len() >= LAG_MARKS_MAX {
            // Thin out the oldest but one: the oldest gives a stuck follower's lag exactly.
            self.marks.remove(1);
        }
        self.marks.push_back((last, now));
    }

    /// Every follower holds the log through `index`: older marks are of no use.
    fn forget_through(&mut self, index: LogIndex) {
        while self.marks.front().is_some_and(|&(mark, _)| mark <= index) {
            self.marks.pop_front();
        }
    }

    /// When the leader appended entry `match_index + 1` (at the latest), if it has.
    fn behind_since(&self, match_index: LogIndex) -> Option<Instant> {
        self.marks.iter().find(|&&(index, _)| index > match_index).map(|&(_, at)| at)
    }

    fn clear(&mut self) {
        self.marks.clear();
    }
}

/// What the event loop shows the monitor at each tick.
#[derive(Debug)]
pub struct Observed<'a> {
    /// The core.
    pub node: &'a Node,
    /// How far the log is known durable.
    pub durable: LogIndex,
    /// Sessions in the table.
    pub sessions: usize,
    /// Who is who.
    pub members: &'a Members,
}

impl<'a> Observed<'a> {
    /// What `driver` shows now (the server's event loop and the simulator's nodes alike).
    pub fn of<F: crate::fs::FileSystem>(
        driver: &'a crate::driver::Driver<F>,
        members: &'a Members,
    ) -> Observed<'a> {
        Observed {
            node: driver.node(),
            durable: driver.storage().durable_known().last,
            sessions: driver.session_count(),
            members,
        }
    }
}

/// Deliberate health-check bugs, for the simulator's evidence that it catches them. They can be
/// planted only in builds with the `bugs` feature; otherwise the checks compile away.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MonitorBug {
    /// Any contact of the node's term counts as fresh: a confirmation never ages, so a node
    /// cut off from its quorum stays healthy while its term lasts.
    ContactNeverAges,
    /// The stall mark is never cleared once set, neither when the commit index moves nor when
    /// nothing waits: a healthy node turns unhealthy for good 5 s after entries first waited.
    StallNeverCleared,
}

impl MonitorBug {
    /// Every health-check bug.
    pub const ALL: [MonitorBug; 2] = [MonitorBug::ContactNeverAges, MonitorBug::StallNeverCleared];

    /// The bug's name on command lines.
    pub fn name(self) -> &'static str {
        match self {
            MonitorBug::ContactNeverAges => "health-contact-never-ages",
            MonitorBug::StallNeverCleared => "health-stall-never-cleared",
        }
    }
}

/// The event loop's side: what it must remember between ticks to publish rates, lags and the
/// health facts. Owned by the loop; only [`Metrics`] is shared.
#[derive(Debug)]
pub struct Monitor {
    metrics: Arc<Metrics>,
    /// The last message of its term heard from each peer: (that term, when).
    contact: BTreeMap<NodeId, (Term, Instant)>,
    /// The last leadership counted in `leader_changes`.
    leadership: Option<(Term, NodeId)>,
    /// The leader last published (`HealthFacts::leader`) and since when.
    leader: (Option<String>, Instant),
    /// The commit index last seen, and since when entries wait with it not moving.
    commit: LogIndex,
    stalled_since: Option<Instant>,
    /// On the leader: its log's growth in the term `clock_term`.
    clock: LagClock,
    clock_term: Option<Term>,
    /// Followers with lag series now (removed once this node stops leading).
    lagging: BTreeSet<String>,
    /// `Marks::snapshot_transfers` already counted.
    snapshot_transfers: u64,
    /// How long a leader's confirmation holds.
    confirm_within: Duration,
    #[cfg(feature = "bugs")]
    bug: Option<MonitorBug>,
}

impl Monitor {
    /// Publishes into `metrics`; a confirmation holds for `confirm_within` (the election
    /// timeout).
    pub fn new(metrics: Arc<Metrics>, confirm_within: Duration, now: Instant) -> Monitor {
        Monitor {
            metrics,
            contact: BTreeMap::new(),
            leadership: None,
            leader: (None, now),
            commit: LogIndex::ZERO,
            stalled_since: None,
            clock: LagClock::default(),
            clock_term: None,
            lagging: BTreeSet::new(),
            snapshot_transfers: 0,
            confirm_within,
            #[cfg(feature = "bugs")]
            bug: None,
        }
    }

    /// Switches on a deliberate bug.
    #[cfg(feature = "bugs")]
    pub fn plant(&mut self, bug: MonitorBug) {
        self.bug = Some(bug);
    }

    #[cfg(feature = "bugs")]
    fn has_bug(&self, bug: MonitorBug) -> bool {
        self.bug == Some(bug)
    }

    #[cfg(not(feature = "bugs"))]
    fn has_bug(&self, _bug: MonitorBug) -> bool {
        false
    }

    /// The shared metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// A message of `term` from peer `from` was stepped into `node`: it counts as contact if
    /// it is of the node's term now (an older one confirms nothing).
    pub fn heard(&mut self, node: &Node, from: NodeId, term: Term, now: Instant) {
        if term == node.term() {
            self.contact.insert(from, (term, now));
        }
    }

    /// The node's view of the leadership, after any step: counts each new (term, leader).
    pub fn leadership(&mut self, term: Term, leader: Option<NodeId>) {
        if let Some(leader) = leader {
            if self.leadership != Some((term, leader)) {
                self.leadership = Some((term, leader));
                self.metrics.leader_changes.inc();
            }
        }
    }

    /// Publishes the gauges, the followers' lag and the health facts (every tick).
    pub fn publish(&mut self, observed: &Observed<'_>, now: Instant) {
        let node = observed.node;
        let metrics = Arc::clone(&self.metrics);
        let (commit, last) = (node.commit(), node.last_index());
        metrics.has_leader.set(i64::from(node.leader().is_some()));
        metrics.is_leader.set(i64::from(node.is_leader()));
        metrics.term.set(gauge_value(node.term().0));
        metrics.commit_index.set(gauge_value(commit.0));
        metrics.last_index.set(gauge_value(last.0));
        metrics.applied_index.set(gauge_value(node.applied().0));
        metrics.durable_index.set(gauge_value(observed.durable.0));
        metrics.sessions.set(gauge_value(observed.sessions as u64));
        let transfers = node.marks().snapshot_transfers;
        // A node replaced at bootstrap starts its marks again from zero.
        metrics.snapshot_sends.inc_by(transfers.saturating_sub(self.snapshot_transfers));
        self.snapshot_transfers = transfers;
        self.publish_lag(observed, now);
        // The commit index moves or has nothing to do.
        if self.has_bug(MonitorBug::StallNeverCleared) {
            self.commit = commit;
            if last > commit && self.stalled_since.is_none() {
                self.stalled_since = Some(now);
            }
        } else if commit != self.commit {
            self.commit = commit;
            self.stalled_since = (last > commit).then_some(now);
        } else if last <= commit {
            self.stalled_since = None;
        } else if self.stalled_since.is_none() {
            self.stalled_since = Some(now);
        }
        let facts = self.facts(observed, now);
        metrics.publish_health(facts);
    }

    /// The health verdict now, on fresh facts (the event loop's answer to `replog health`).
    pub fn assess(&mut self, observed: &Observed<'_>, now: Instant) -> Result<(), String> {
        self.publish(observed, now);
        self.metrics.assess(now)
    }

    fn facts(&mut self, observed: &Observed<'_>, now: Instant) -> HealthFacts {
        let node = observed.node;
        let term = node.term();
        self.contact.retain(|_, (heard_in, _)| *heard_in == term);
        let leader = node.leader().map(|id| {
            observed.members.address_of(id).map_or_else(|| crate::storage::id_text(id), |a| a.to_string())
        });
        if leader != self.leader.0 {
            self.leader = (leader.clone(), now);
        }
        let fresh = self.has_bug(MonitorBug::ContactNeverAges);
        let confirmed = match node.leader() {
            Some(_) if node.is_leader() => {
                let membership = node.membership();
                let mut heard: Vec<Instant> = membership
                    .voters()
                    .filter_map(|id| {
                        if id == node.id() {
                            Some(now)
                        } else {
                            self.contact.get(&id).map(|&(_, at)| if fresh { now } else { at })
                        }
                    })
                    .collect();
                heard.sort_unstable_by(|a, b| b.cmp(a));
                let voters = membership.voter_count();
                (voters > 0).then(|| heard.get(replog_core::quorum::majority(voters) - 1).copied()).flatten()
            }
            Some(leader) => self.contact.get(&leader).map(|&(_, at)| if fresh { now } else { at }),
            None => None,
        };
        HealthFacts {
            leading: node.is_leader(),
            leader,
            leader_since: self.leader.1,
            confirmed,
            confirm_within: self.confirm_within,
            commit: node.commit(),
            last_index: node.last_index(),
            stalled_since: self.stalled_since,
        }
    }

    /// On the leader, each follower's lag in entries and in seconds; elsewhere, none.
    fn publish_lag(&mut self, observed: &Observed<'_>, now: Instant) {
        let node = observed.node;
        let metrics = Arc::clone(&self.metrics);
        if !node.is_leader() {
            for peer in std::mem::take(&mut self.lagging) {
                let labels = PeerLabels { peer };
                metrics.follower_lag_entries.remove(&labels);
                metrics.follower_lag_seconds.remove(&labels);
            }
            self.clock.clear();
            self.clock_term = None;
            return;
        }
        if self.clock_term != Some(node.term()) {
            self.clock.clear();
            self.clock_term = Some(node.term());
        }
        let last = node.last_index();
        self.clock.appended(last, now);
        let status = node.status();
        let caught_up = status.peers.iter().map(|peer| peer.match_index).min().unwrap_or(last);
        self.clock.forget_through(caught_up);
        let mut lagging = BTreeSet::new();
        for peer in &status.peers {
            let Some(address) = observed.members.address_of(peer.id) else {
                continue;
            };
            let labels = PeerLabels { peer: address.to_string() };
            let behind = last.0.saturating_sub(peer.match_index.0);
            let seconds = match self.clock.behind_since(peer.match_index) {
                Some(since) if behind > 0 => now.saturating_duration_since(since).as_secs_f64(),
                _ => 0.0,
            };
            metrics.follower_lag_entries.get_or_create(&labels).set(gauge_value(behind));
            metrics.follower_lag_seconds.get_or_create(&labels).set(seconds);
            lagging.insert(labels.peer);
        }
        for gone in self.lagging.difference(&lagging) {
            let labels = PeerLabels { peer: gone.clone() };
            metrics.follower_lag_entries.remove(&labels);
            metrics.follower_lag_seconds.remove(&labels);
        }
        self.lagging = lagging;
    }
}

/// An index or count as a gauge's value (they stay far below `i64::MAX`).
fn gauge_value(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// Threads answering requests, one connection each at a time.
const HTTP_WORKERS: usize = 4;
/// Accepted connections waiting for a worker; when it is full the acceptor closes a new
/// connection at once.
const HTTP_QUEUE: usize = 32;
/// One connection's whole exchange (waiting in the queue, reading the request, writing the
/// answer), counted from its accept: a client that never finishes its request or never reads
/// the answer holds a worker no longer than this.
const HTTP_DEADLINE: Duration = Duration::from_secs(2);
/// The request line and headers at most; a larger request is answered 431.
const HTTP_HEAD_MAX: usize = 8 * 1024;
/// Headers in a request at most; more are answered 431.
const HTTP_HEADERS_MAX: usize = 32;
/// The longest a worker blocks on a socket before it looks at the stop flag again.
const HTTP_STOP_CHECK: Duration = Duration::from_millis(100);

/// The HTTP server of `--metrics-addr`: `GET /metrics` and `GET /health`, one request per
/// connection. An acceptor thread hands connections to [`HTTP_WORKERS`] workers through a
/// queue of [`HTTP_QUEUE`]; each connection lives at most [`HTTP_DEADLINE`]. Stopped (its
/// threads joined) when dropped.
pub struct MetricsServer {
    address: SocketAddr,
    stop: Arc<AtomicBool>,
    acceptor: Option<JoinHandle<()>>,
    workers: Vec<JoinHandle<()>>,
}

impl fmt::Debug for MetricsServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MetricsServer").field("address", &self.address).finish_non_exhaustive()
    }
}

/// An accepted connection and its deadline.
type Accepted = (TcpStream, SocketAddr, Instant);

impl MetricsServer {
    /// Listens on `address` (an error if it cannot) and serves from threads of its own.
    pub fn start(address: SocketAddr, metrics: Arc<Metrics>) -> io::Result<MetricsServer> {
        let listener = TcpListener::bind(address)?;
        let address = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let (queue, inbox) = mpsc::sync_channel::<Accepted>(HTTP_QUEUE);
        let inbox = Arc::new(Mutex::new(inbox));
        // On an error below, `queue` is dropped: the workers already started see the channel
        // closed and end.
        let mut workers = Vec::with_capacity(HTTP_WORKERS);
        for k in 0..HTTP_WORKERS {
            let (inbox, metrics, stop) = (Arc::clone(&inbox), Arc::clone(&metrics), Arc::clone(&stop));
            let worker = std::thread::Builder::new()
                .name(format!("replog-scrape-{k}"))
                .spawn(move || work(&inbox, &metrics, &stop))?;
            workers.push(worker);
        }
        let accepting = Arc::clone(&stop);
        let acceptor = std::thread::Builder::new()
            .name("replog-metrics".into())
            .spawn(move || accept(&listener, &queue, &accepting))?;
        info!("metrics at http://{address}/metrics, health at http://{address}/health");
        Ok(MetricsServer { address, stop, acceptor: Some(acceptor), workers })
    }

    /// Where it listens.
    pub fn address(&self) -> SocketAddr {
        self.address
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // The acceptor blocks in accept: a connection of our own wakes it to see the flag.
        let mut wake = self.address;
        if wake.ip().is_unspecified() {
            wake.set_ip(match wake {
                SocketAddr::V4(_) => Ipv4Addr::LOCALHOST.into(),
                SocketAddr::V6(_) => Ipv6Addr::LOCALHOST.into(),
            });
        }
        if let Err(error) = TcpStream::connect_timeout(&wake, Duration::from_secs(1)) {
            // Not joined: the threads end at the next connection to arrive.
            warn!("stopping the metrics server: cannot wake its acceptor at {wake}: {error}");
            return;
        }
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
        // The acceptor dropped the queue: each worker ends once done with its connection.
        for worker in self.workers.drain(..) {
            let _ = worker.join();
        }
    }
}

/// The acceptor: queues each connection for the workers, or closes it at once when the queue
/// is full, so that neither threads nor memory grow with the clients.
fn accept(listener: &TcpListener, queue: &SyncSender<Accepted>, stop: &AtomicBool) {
    loop {
        let accepted = listener.accept();
        if stop.load(Ordering::SeqCst) {
            return;
        }
        match accepted {
            Ok((stream, peer)) => match queue.try_send((stream, peer, Instant::now() + HTTP_DEADLINE)) {
                Ok(()) => {}
                Err(TrySendError::Full(_)) => {
                    debug!("metrics: {HTTP_QUEUE} connections wait already; closed the one from {peer}");
                }
                Err(TrySendError::Disconnected(_)) => {
                    warn!("metrics server: no worker left; no longer listening");
                    return;
                }
            },
            Err(error)
                if matches!(
                    error.kind(),
                    io::ErrorKind::ConnectionAborted
                        | io::ErrorKind::ConnectionReset
                        | io::ErrorKind::Interrupted
                ) =>
            {
                debug!("metrics: accepting a connection: {error}");
            }
            Err(error) => {
                // Out of file descriptors, for one: wait rather than spin.
                warn!("metrics server: accepting a connection: {error}");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

/// A worker: serves queued connections until the acceptor ends (and the queue with it).
fn work(inbox: &Mutex<Receiver<Accepted>>, metrics: &Metrics, stop: &AtomicBool) {
    loop {
        // The lock is held while waiting: the other workers wait for it instead.
        let next = inbox.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).recv();
        let Ok((stream, peer, deadline)) = next else {
            return;
        };
        if stop.load(Ordering::SeqCst) {
            continue; // closed unanswered
        }
        if let Err(error) = serve(stream, deadline, metrics, stop) {
            // The client's doing (a timeout, a reset, a bad request's end), not the server's.
            debug!("metrics: the connection from {peer}: {error}");
        }
    }
}

/// Reads one request, answers it and closes the connection, all by `deadline`.
fn serve(mut stream: TcpStream, deadline: Instant, metrics: &Metrics, stop: &AtomicBool) -> io::Result<()> {
    let mut head = vec![0; HTTP_HEAD_MAX];
    let mut filled = 0;
    let response = loop {
        let mut headers = [httparse::EMPTY_HEADER; HTTP_HEADERS_MAX];
        let mut request = httparse::Request::new(&mut headers);
        match request.parse(&head[..filled]) {
            Ok(httparse::Status::Complete(_)) => {
                let get = request.method == Some("GET");
                let version = request.version.unwrap_or(1);
                break response(version, answer(get, request.path.unwrap_or(""), metrics));
            }
            Ok(httparse::Status::Partial) if filled == head.len() => {
                break response(1, (431, TEXT, format!("the request head is over {HTTP_HEAD_MAX} bytes\n")));
            }
            Ok(httparse::Status::Partial) => {}
            Err(httparse::Error::TooManyHeaders) => {
                break response(1, (431, TEXT, format!("over {HTTP_HEADERS_MAX} headers\n")));
            }
            Err(error) => break response(1, (400, TEXT, format!("bad request: {error}\n"))),
        }
        let read = in_time(&stream, deadline, stop, |mut stream, slice| {
            stream.set_read_timeout(Some(slice))?;
            stream.read(&mut head[filled..])
        })?;
        if read == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "closed before the end of its request"));
        }
        filled += read;
    };
    let mut rest = &response[..];
    while !rest.is_empty() {
        let written = in_time(&stream, deadline, stop, |mut stream, slice| {
            stream.set_write_timeout(Some(slice))?;
            stream.write(rest)
        })?;
        if written == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        rest = &rest[written..];
    }
    // What the client sent beyond the request (a body, more requests) is read and dropped, as
    // far as it has arrived: closing with unread data resets the connection, which can make the
    // client lose the answer.
    stream.set_nonblocking(true)?;
    let mut unread = 0;
    while unread < 64 * 1024 {
        match stream.read(&mut head) {
            Ok(read) if read > 0 => unread += read,
            _ => break,
        }
    }
    Ok(())
}

/// One read or write (`io`), retried until it does something, in slices of the time left to
/// `deadline` (each at most [`HTTP_STOP_CHECK`], so that a stop is seen): an error once the
/// deadline has passed or the server stops.
fn in_time<T>(
    stream: &TcpStream,
    deadline: Instant,
    stop: &AtomicBool,
    mut io: impl FnMut(&TcpStream, Duration) -> io::Result<T>,
) -> io::Result<T> {
    loop {
        if stop.load(Ordering::SeqCst) {
            return Err(io::Error::other("the metrics server is stopping"));
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            let message = format!("not done within {} s", HTTP_DEADLINE.as_secs_f64());
            return Err(io::Error::new(io::ErrorKind::TimedOut, message));
        }
        match io(stream, left.min(HTTP_STOP_CHECK)) {
            Err(error)
                if matches!(
                    error.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
                ) => {}
            done => return done,
        }
    }
}

/// The answer to a request: the registry, the health verdict, or what is served.
fn answer(get: bool, target: &str, metrics: &Metrics) -> (u16, &'static str, String) {
    let path = target.split('?').next().unwrap_or("");
    match (get, path) {
        (true, "/metrics") => (200, prometheus_text::CONTENT_TYPE, metrics.encode()),
        (true, "/health") => match metrics.assess(Instant::now()) {
            Ok(()) => (200, TEXT, "ok\n".to_string()),
            Err(reason) => (503, TEXT, format!("{reason}\n")),
        },
        (true, _) => (404, TEXT, "not found: GET /metrics or /health\n".to_string()),
        (false, _) => (405, TEXT, "only GET is served\n".to_string()),
    }
}

/// The bytes of a response in HTTP/1.`version`, closing the connection.
fn response(version: u8, (status, content_type, body): (u16, &str, String)) -> Vec<u8> {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "",
    };
    let allow = if status == 405 { "Allow: GET\r\n" } else { "" };
    let length = body.len();
    let head = format!(
        "HTTP/1.{version} {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {length}\r\n\
         {allow}Connection: close\r\n\r\n"
    );
    let mut bytes = head.into_bytes();
    bytes.extend_from_slice(body.as_bytes());
    bytes
}

const TEXT: &str = "text/plain; charset=utf-8";

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(now: Instant) -> HealthFacts {
        HealthFacts {
            leading: true,
            leader: Some("127.0.0.1:8080".into()),
            leader_since: now - Duration::from_secs(60),
            confirmed: Some(now - Duration::from_millis(40)),
            confirm_within: Duration::from_millis(300),
            commit: LogIndex(1234),
            last_index: LogIndex(1251),
            stalled_since: Some(now - Duration::from_secs(1)),
        }
    }

    #[test]
    fn a_confirmed_leader_with_a_moving_commit_is_healthy() {
        let now = Instant::now() + Duration::from_secs(100);
        assert_eq!(assess(&facts(now), now), Ok(()));
        let idle = HealthFacts { stalled_since: None, last_index: LogIndex(1234), ..facts(now) };
        assert_eq!(assess(&idle, now), Ok(()));
        let follower = HealthFacts { leading: false, ..facts(now) };
        assert_eq!(assess(&follower, now), Ok(()));
    }

    #[test]
    fn each_reason_is_one_line_naming_how_long() {
        let now = Instant::now() + Duration::from_secs(100);
        let none = HealthFacts { leader: None, leading: false, confirmed: None, ..facts(now) };
        let none = HealthFacts { leader_since: now - Duration::from_millis(3200), ..none };
        assert_eq!(assess(&none, now), Err("no leader known for 3.2 s".into()));
        let lost = HealthFacts { confirmed: Some(now - Duration::from_millis(1500)), ..facts(now) };
        let reason = assess(&lost, now).unwrap_err();
        assert!(reason.starts_with("leader not confirmed by a quorum for 1.5 s"), "{reason}");
        let silent = HealthFacts { leading: false, ..lost.clone() };
        let reason = assess(&silent, now).unwrap_err();
        assert!(reason.starts_with("leader 127.0.0.1:8080 not heard from for 1.5 s"), "{reason}");
        let stuck = HealthFacts {
            stalled_since: Some(now - Duration::from_secs(5) - Duration::from_millis(1)),
            ..facts(now)
        };
        assert_eq!(assess(&stuck, now), Err("commit stuck at 1234 for 5.0 s with 17 entries pending".into()));
        for reason in [assess(&none, now), assess(&lost, now), assess(&stuck, now)] {
            assert!(!reason.unwrap_err().contains('\n'));
        }
    }

    #[test]
    fn a_leader_never_confirmed_counts_from_when_it_was_learned() {
        let now = Instant::now() + Duration::from_secs(100);
        let fresh =
            HealthFacts { confirmed: None, leader_since: now - Duration::from_millis(100), ..facts(now) };
        assert_eq!(assess(&fresh, now), Ok(()), "within an election timeout of being learned");
        let old = HealthFacts { leader_since: now - Duration::from_millis(700), ..fresh };
        assert!(assess(&old, now).unwrap_err().contains("for 0.70 s"));
    }

    #[test]
    fn the_lag_clock_dates_the_first_missing_entry() {
        let start = Instant::now();
        let at = |ms| start + Duration::from_millis(ms);
        let mut clock = LagClock::default();
        clock.appended(LogIndex(10), at(0));
        clock.appended(LogIndex(10), at(10)); // no growth: no new mark
        clock.appended(LogIndex(15), at(20));
        clock.appended(LogIndex(30), at(30));
        assert_eq!(clock.behind_since(LogIndex(9)), Some(at(0)));
        assert_eq!(clock.behind_since(LogIndex(10)), Some(at(20)));
        assert_eq!(clock.behind_since(LogIndex(14)), Some(at(20)));
        assert_eq!(clock.behind_since(LogIndex(15)), Some(at(30)));
        assert_eq!(clock.behind_since(LogIndex(30)), None, "caught up");
        clock.forget_through(LogIndex(15));
        assert_eq!(clock.behind_since(LogIndex(15)), Some(at(30)));
        // A shorter log (a new leader's) forgets the marks past its end.
        clock.appended(LogIndex(20), at(40));
        assert_eq!(clock.behind_since(LogIndex(15)), Some(at(40)));
    }

    #[test]
    fn the_lag_clock_keeps_its_oldest_mark_when_full() {
        let start = Instant::now();
        let mut clock = LagClock::default();
        for k in 1..=(LAG_MARKS_MAX as u64 * 3) {
            clock.appended(LogIndex(k), start + Duration::from_millis(k));
        }
        assert_eq!(clock.marks.len(), LAG_MARKS_MAX);
        assert_eq!(clock.behind_since(LogIndex(0)), Some(start + Duration::from_millis(1)));
        let newest = LAG_MARKS_MAX as u64 * 3;
        assert_eq!(clock.behind_since(LogIndex(newest - 1)), Some(start + Duration::from_millis(newest)));
    }

    #[test]
    fn the_registry_names_every_series_by_the_conventions() {
        let metrics = Metrics::new();
        let traffic = metrics.peer_traffic("127.0.0.1:8081".parse().unwrap());
        traffic.sent(100);
        traffic.received(40);
        metrics.peer_named("127.0.0.1:8081".parse().unwrap(), "node2");
        metrics.append_committed(Duration::from_millis(3));
        metrics.append_failed(AppendFailure::NotLeader);
        metrics.fsync_took(Duration::from_micros(900));
        metrics.connection_refused(REFUSED_LIMIT);
        let text = metrics.encode();
        for line in [
            "replog_has_leader 0",
            "replog_is_leader 0",
            "replog_term 0",
            "replog_commit_index 0",
            "replog_last_index 0",
            "replog_applied_index 0",
            "replog_durable_index 0",
            "replog_sessions 0",
            "replog_leader_changes_total 0",
            "replog_proposals_committed_total 1",
            "replog_proposals_failed_total{reason=\"not_leader\"} 1",
            "replog_append_latency_seconds_count 1",
            "replog_fsync_latency_seconds_count 1",
            "replog_peer_sent_bytes_total{peer=\"127.0.0.1:8081\"} 100",
            "replog_peer_sent_messages_total{peer=\"127.0.0.1:8081\"} 1",
            "replog_peer_received_bytes_total{peer=\"127.0.0.1:8081\"} 40",
            "replog_peer_received_messages_total{peer=\"127.0.0.1:8081\"} 1",
            "replog_peer_info{peer=\"127.0.0.1:8081\",name=\"node2\"} 1",
            "replog_snapshot_sends_total 0",
            "replog_connections_refused_total{reason=\"limit\"} 1",
            "replog_proposals_failed_total{reason=\"overloaded\"} 0",
            "# TYPE replog_append_latency_seconds histogram",
        ] {
            assert!(text.lines().any(|l| l == line), "no line {line:?} in\n{text}");
        }
    }

    #[test]
    fn every_reason_has_a_series_from_the_start() {
        let text = Metrics::new().encode();
        for failure in AppendFailure::ALL {
            let line = format!("replog_proposals_failed_total{{reason=\"{}\"}} 0", failure.label());
            assert!(text.lines().any(|l| l == line), "no line {line:?} in\n{text}");
        }
        let address = "127.0.0.1:1".parse().unwrap();
        let violations = [
            Violation::BadHelloAddress("x".into()),
            Violation::Impostor { name: "n".into(), address },
            Violation::Misaddressed { from: NodeId(1), to: NodeId(2), link: NodeId(3) },
            Violation::UnexpectedFrame { frame: "hello", caller: crate::connection::Caller::Client },
            Violation::Undecodable(crate::frame::DecodeError::Frame(crate::frame::FrameError::TooLarge {
                bytes: 1,
            })),
        ];
        for reason in violations.iter().map(refusal_label).chain([REFUSED_LIMIT]) {
            let line = format!("replog_connections_refused_total{{reason=\"{reason}\"}} 0");
            assert!(text.lines().any(|l| l == line), "no line {line:?} in\n{text}");
        }
    }

    #[test]
    fn the_monitor_judges_a_real_node() {
        use replog_core::{Bytes, Config, Event, Payload, Recovered, RequestId};
        let start = Instant::now();
        let at = |ms: u64| start + Duration::from_millis(ms);
        let members = Members::new(NodeId(1), "127.0.0.1:8080".parse().unwrap());
        fn observed<'a>(node: &'a Node, members: &'a Members) -> Observed<'a> {
            Observed { node, durable: LogIndex::ZERO, sessions: 0, members }
        }
        let metrics = Arc::new(Metrics::new());
        let mut monitor = Monitor::new(Arc::clone(&metrics), Duration::from_millis(300), at(0));
        let mut node = Node::new(Config::new(NodeId(1), Vec::new()), Recovered::default()).unwrap();
        assert_eq!(
            monitor.assess(&observed(&node, &members), at(1200)),
            Err("no leader known for 1.2 s".into())
        );
        // A single voter: elected at once, and a quorum of itself.
        let _ = node.step(Event::Campaign);
        assert!(node.is_leader());
        monitor.leadership(node.term(), node.leader());
        assert_eq!(monitor.assess(&observed(&node, &members), at(1300)), Ok(()));
        // Its entries never become durable here, so they never commit.
        let payloads = vec![Payload::Command(Bytes::from("x"))];
        let _ = node.step(Event::Propose { request: RequestId(1), payloads });
        let (commit, pending) = (node.commit().0, node.last_index().0 - node.commit().0);
        assert!(pending >= 2, "the leader's no-op and the command");
        assert_eq!(monitor.assess(&observed(&node, &members), at(6000)), Ok(()), "pending for less than 5 s");
        let reason = monitor.assess(&observed(&node, &members), at(6500)).unwrap_err();
        assert_eq!(reason, format!("commit stuck at {commit} for 5.2 s with {pending} entries pending"));
        let text = metrics.encode();
        for line in ["replog_is_leader 1", "replog_leader_changes_total 1", "replog_commit_index 0"] {
            assert!(text.lines().any(|l| l == line), "no line {line:?} in\n{text}");
        }
    }

    /// Sends `request` on a new connection and reads the answer to its end, within 5 s:
    /// (status line, headers in lower case, body); an empty status line if the server closed
    /// without answering.
    fn exchange(address: SocketAddr, request: &[u8]) -> (String, BTreeMap<String, String>, String) {
        let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(5)).expect("connecting");
        stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        stream.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
        let _ = stream.write_all(request); // the server may close before reading it all
        let mut response = Vec::new();
        if let Err(error) = stream.read_to_end(&mut response) {
            assert_ne!(error.kind(), io::ErrorKind::WouldBlock, "no answer within 5 s");
            assert_ne!(error.kind(), io::ErrorKind::TimedOut, "no answer within 5 s");
        }
        let response = String::from_utf8(response).expect("a text answer");
        let Some((head, body)) = response.split_once("\r\n\r\n") else {
            assert!(response.is_empty(), "no end of the head in {response:?}");
            return (String::new(), BTreeMap::new(), String::new());
        };
        let mut lines = head.split("\r\n");
        let status = lines.next().unwrap_or_default().to_string();
        let headers = lines
            .map(|line| {
                let (name, value) = line.split_once(": ").unwrap_or_else(|| panic!("a bad header {line:?}"));
                (name.to_ascii_lowercase(), value.to_string())
            })
            .collect();
        (status, headers, body.to_string())
    }

    fn get(address: SocketAddr, path: &str) -> (String, BTreeMap<String, String>, String) {
        exchange(
            address,
            format!("GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
    }

    /// Facts that make a healthy node now.
    fn healthy_now() -> HealthFacts {
        let now = Instant::now();
        HealthFacts {
            leading: true,
            leader: Some("127.0.0.1:8080".into()),
            leader_since: now,
            confirmed: Some(now),
            confirm_within: Duration::from_secs(600),
            commit: LogIndex(7),
            last_index: LogIndex(7),
            stalled_since: None,
        }
    }

    #[test]
    fn the_server_answers_metrics_and_health_and_refuses_the_rest() {
        let metrics = Arc::new(Metrics::new());
        let server = MetricsServer::start("127.0.0.1:0".parse().unwrap(), Arc::clone(&metrics)).unwrap();
        let address = server.address();
        assert_ne!(address.port(), 0);
        let check = |(status, headers, body): (String, BTreeMap<String, String>, String),
                     expected_status: &str,
                     content_type: &str| {
            assert_eq!(status, expected_status, "{body}");
            assert_eq!(headers["content-type"], content_type);
            assert_eq!(headers["content-length"], body.len().to_string());
            assert_eq!(headers["connection"], "close");
            body
        };
        let text = "text/plain; charset=utf-8";
        let body = check(get(address, "/health"), "HTTP/1.1 503 Service Unavailable", text);
        assert_eq!(body, "the node is starting\n");
        metrics.publish_health(healthy_now());
        assert_eq!(check(get(address, "/health"), "HTTP/1.1 200 OK", text), "ok\n");
        metrics.append_committed(Duration::from_millis(3));
        let body = check(get(address, "/metrics"), "HTTP/1.1 200 OK", prometheus_text::CONTENT_TYPE);
        assert_eq!(body, metrics.encode());
        assert!(body.lines().any(|line| line == "replog_proposals_committed_total 1"), "{body}");
        // HTTP/1.0, as Prometheus and the integration tests scrape, and a query string.
        let answer = exchange(address, b"GET /metrics?x=1 HTTP/1.0\r\n\r\n");
        assert_eq!(check(answer, "HTTP/1.0 200 OK", prometheus_text::CONTENT_TYPE), metrics.encode());
        let body = check(get(address, "/nothing"), "HTTP/1.1 404 Not Found", text);
        assert_eq!(body, "not found: GET /metrics or /health\n");
        let answer = exchange(address, b"POST /metrics HTTP/1.1\r\nContent-Length: 2\r\n\r\nhi");
        assert_eq!(answer.1["allow"], "GET");
        assert_eq!(check(answer, "HTTP/1.1 405 Method Not Allowed", text), "only GET is served\n");
        let answer = exchange(address, b"\x16\x03\x01 not http at all\r\n\r\n");
        assert_eq!(answer.0, "HTTP/1.1 400 Bad Request");
        // A head over 8 KiB is refused (431, or closed if the client loses the answer).
        let huge = format!("GET /metrics HTTP/1.1\r\nX-Big: {}\r\n\r\n", "a".repeat(HTTP_HEAD_MAX));
        let (status, _, _) = exchange(address, huge.as_bytes());
        assert!(status.is_empty() || status == "HTTP/1.1 431 Request Header Fields Too Large", "{status}");
        let many: String = (0..=HTTP_HEADERS_MAX).map(|k| format!("X-{k}: {k}\r\n")).collect();
        let (status, _, _) = exchange(address, format!("GET /health HTTP/1.1\r\n{many}\r\n").as_bytes());
        assert_eq!(status, "HTTP/1.1 431 Request Header Fields Too Large");
        // A request in many small pieces is still one request.
        let mut stream = TcpStream::connect(address).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        for piece in ["GE", "T /hea", "lth HTTP/1.1\r", "\nHost: x\r\n", "\r\n"] {
            stream.write_all(piece.as_bytes()).unwrap();
            std::thread::sleep(Duration::from_millis(20));
        }
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        assert!(
            response.starts_with("HTTP/1.1 200 OK\r\n") && response.ends_with("\r\n\r\nok\n"),
            "{response}"
        );
    }

    /// The threads of this process.
    fn threads() -> usize {
        std::fs::read_dir("/proc/self/task").expect("/proc/self/task").count()
    }

    /// A slow or hostile client ties up a worker for a bounded time at most, and never the
    /// whole server: one that pipelines 5,000 requests and never reads the answers, and 200
    /// idle sockets each holding half a request, while `/health` is asked for from another
    /// socket. Counting the process's threads needs the test alone in its process: it runs
    /// itself again as a child process with only this test.
    #[test]
    fn hostile_clients_neither_stall_health_nor_grow_threads() {
        const ALONE: &str = "REPLOG_METRICS_TEST_ALONE";
        let name = "metrics::tests::hostile_clients_neither_stall_health_nor_grow_threads";
        if std::env::var_os(ALONE).is_none() {
            let mut child = std::process::Command::new(std::env::current_exe().unwrap())
                .args([name, "--exact", "--nocapture", "--test-threads=1"])
                .env(ALONE, "1")
                .stdout(std::process::Stdio::piped())
                .spawn()
                .expect("running the test again alone");
            let mut stdout = child.stdout.take().unwrap();
            let reading = std::thread::spawn(move || {
                let mut text = String::new();
                let _ = stdout.read_to_string(&mut text);
                text
            });
            let started = Instant::now();
            let status = loop {
                if let Some(status) = child.try_wait().unwrap() {
                    break status;
                }
                if started.elapsed() > Duration::from_secs(60) {
                    let _ = child.kill();
                    panic!("the test alone did not end within 60 s");
                }
                std::thread::sleep(Duration::from_millis(20));
            };
            let output = reading.join().unwrap();
            println!("{output}");
            assert!(status.success(), "the test alone failed:\n{output}");
            assert!(output.contains("1 passed"), "the test did not run alone:\n{output}");
            return;
        }
        let before = threads();
        let metrics = Arc::new(Metrics::new());
        metrics.publish_health(healthy_now());
        let server = MetricsServer::start("127.0.0.1:0".parse().unwrap(), metrics).unwrap();
        let address = server.address();
        let most = before + HTTP_WORKERS + 2;
        assert_eq!(get(address, "/health").0, "HTTP/1.1 200 OK", "serving before the clients come");
        let mut peak = threads();
        let connecting = Instant::now();
        // 5,000 pipelined requests, as many as the socket takes without blocking, never read.
        let mut pipelining = TcpStream::connect(address).unwrap();
        let requests = format!("GET /metrics HTTP/1.1\r\nHost: {address}\r\n\r\n").repeat(5000);
        pipelining.set_nonblocking(true).unwrap();
        let mut sent = 0;
        while sent < requests.len() {
            match pipelining.write(&requests.as_bytes()[sent..]) {
                Ok(written) if written > 0 => sent += written,
                _ => break,
            }
        }
        let idle: Vec<TcpStream> = (0..200)
            .map(|_| {
                let mut stream = TcpStream::connect(address).unwrap();
                let _ = stream.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n");
                stream
            })
            .collect();
        peak = peak.max(threads());
        // (A connection the listen backlog had no room for in a burst waits for the client's
        // SYN again, 1 s later: it counts from when they are all connected.)
        println!("the clients connected after {:?}", connecting.elapsed());
        std::thread::sleep(Duration::from_millis(200)); // time for a thread per connection, if any
        peak = peak.max(threads());
        assert!(peak <= most, "{peak} threads with the clients connected, from {before} before the server");
        // A probe from elsewhere: it may be turned away while the queue is full (each waiting
        // connection's deadline is 2 s), never stalled.
        let started = Instant::now();
        let mut tries = 0;
        loop {
            tries += 1;
            let asked = Instant::now();
            let (status, _, body) = get(address, "/health");
            println!("try {tries} at {:?}: {status:?} after {:?}", asked - started, asked.elapsed());
            peak = peak.max(threads());
            if status == "HTTP/1.1 200 OK" {
                assert_eq!(body, "ok\n");
                break;
            }
            assert!(status.is_empty(), "{status} {body}");
            // Each waiting connection's deadline is 2 s; 5 s leaves room for a loaded machine.
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "no answer to /health within 5 s ({tries} tries)"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let answered = started.elapsed();
        assert!(answered < Duration::from_secs(5), "/health answered after {answered:?}");
        println!(
            "/health answered after {answered:?} ({tries} tries), {peak} threads at most, {before} before"
        );
        assert!(peak <= most, "{peak} threads, from {before} before the server");
        drop(idle);
        drop(pipelining);
        drop(server);
    }

    #[test]
    fn dropping_the_server_joins_its_threads_promptly() {
        let server = MetricsServer::start("127.0.0.1:0".parse().unwrap(), Arc::new(Metrics::new())).unwrap();
        let address = server.address();
        // Workers busy with half requests, more connections queued, some just connected.
        let idle: Vec<TcpStream> = (0..HTTP_WORKERS + HTTP_QUEUE + 10)
            .map(|k| {
                let mut stream = TcpStream::connect(address).unwrap();
                if k % 2 == 0 {
                    let _ = stream.write_all(b"GET /metrics HTTP/1.1\r\n");
                }
                stream
            })
            .collect();
        std::thread::sleep(Duration::from_millis(100));
        let dropping = Instant::now();
        drop(server);
        let took = dropping.elapsed();
        assert!(took < Duration::from_secs(3), "dropped after {took:?}");
        assert!(TcpStream::connect(address).is_err(), "still listening after the drop");
        drop(idle);
    }

    #[test]
    fn health_is_unknown_until_published() {
        let metrics = Metrics::new();
        assert_eq!(metrics.assess(Instant::now()), Err("the node is starting".into()));
    }
}
