//! What a node is told at birth: who it is, who its peers are, and every limit it keeps.

use crate::bugs::Bug;
use crate::membership::Membership;
use crate::types::{NodeId, ENTRY_OVERHEAD_BYTES};
use std::collections::BTreeMap;
use std::fmt;

// The defaults of `Config::new`, named so their relations are checked at compile time; `validate`
// checks the same relations for any configuration at run time.
const ELECTION_TICKS_MIN: u32 = 15;
const ELECTION_TICKS_MAX: u32 = 30;
const HEARTBEAT_TICKS: u32 = 5;
const MESSAGE_BYTES_MAX: u64 = 1024 * 1024;
const INFLIGHT_BYTES_MAX: u64 = 16 * 1024 * 1024;
const _: () = assert!(0 < ELECTION_TICKS_MIN && ELECTION_TICKS_MIN < ELECTION_TICKS_MAX);
const _: () = assert!(0 < HEARTBEAT_TICKS && HEARTBEAT_TICKS < ELECTION_TICKS_MIN);
const LOG_CACHE_BYTES_MAX: u64 = 32 * 1024 * 1024;
const _: () = assert!(ENTRY_OVERHEAD_BYTES <= MESSAGE_BYTES_MAX && MESSAGE_BYTES_MAX <= INFLIGHT_BYTES_MAX);
const _: () = assert!(MESSAGE_BYTES_MAX <= LOG_CACHE_BYTES_MAX);

/// A node's configuration. Every limit is named with its unit last and bounds some memory or
/// work; `validate` rejects combinations that could not work.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// This node.
    pub id: NodeId,
    /// The bootstrap configuration's other voters: the cluster starts as `{id} ∪ peers`, all
    /// voters, until the log or a snapshot holds a configuration (then that one is in force,
    /// and these are not consulted again). Ignored when `joining`.
    pub peers: Vec<NodeId>,
    /// The bootstrap members' addresses, the driver's to interpret; carried into the first
    /// configuration entry so later members learn them. Members without one have `""`.
    pub addresses: BTreeMap<NodeId, String>,
    /// A node that joins an existing cluster: no bootstrap configuration. It is no member of
    /// anything (never campaigns, never votes) until a leader's log tells it otherwise.
    pub joining: bool,
    /// The first leader writes the bootstrap configuration into the log, as its term's first
    /// entry (in place of the no-op), when no entry or snapshot holds a configuration yet. A
    /// node that missed the bootstrap, or joined later and compacts, then learns it from the
    /// log. Drivers whose nodes get their configuration only from `peers` set it.
    pub record_bootstrap: bool,
    /// A learner added with promotion ([`MemberRole::Joining`](crate::MemberRole::Joining))
    /// becomes a voter once its log is at most this many entries behind the leader's commit
    /// index (dissertation §4.2.1: a new server must catch up before it counts).
    pub promote_lag_entries_max: u64,
    /// A follower or candidate starts an election after a random timeout drawn from
    /// `[election_ticks_min, election_ticks_max)` ticks without hearing from a leader (§5.2).
    /// Also the leader lease (§4.2.3) and the check-quorum interval (§6.2), in ticks.
    pub election_ticks_min: u32,
    /// The exclusive upper bound of the election timeout, in ticks; above `election_ticks_min`.
    pub election_ticks_max: u32,
    /// A leader sends heartbeats every this many ticks; must be well inside the election timeout.
    pub heartbeat_ticks: u32,
    /// Pre-vote (dissertation §9.6): a node asks whether it could win before it bumps its term,
    /// so a partitioned node cannot force a healthy cluster into a new election when it returns.
    pub pre_vote: bool,
    /// Check-quorum (dissertation §6.2): a leader steps down when it has not heard from a
    /// majority within an election timeout, and followers that heard from a leader recently
    /// ignore vote requests (§4.2.3).
    pub check_quorum: bool,
    /// At most this many entries in one AppendEntries message.
    pub entries_per_message_max: u32,
    /// At most this many entry bytes ([`Entry::size_bytes`](crate::Entry::size_bytes)) in one
    /// AppendEntries message (one entry is always allowed, so an oversized entry still moves).
    /// At least [`ENTRY_OVERHEAD_BYTES`] and at most
    /// `inflight_bytes_max`.
    pub message_bytes_max: u64,
    /// Per follower: at most this many AppendEntries messages unacknowledged.
    pub inflight_messages_max: u32,
    /// Per follower: at most this many entry bytes unacknowledged; at least
    /// `message_bytes_max`, so a full message fits the window.
    pub inflight_bytes_max: u64,
    /// A leader refuses proposals while this many entries are uncommitted, so a slow quorum
    /// pushes back on clients instead of growing memory.
    pub uncommitted_entries_max: u64,
    /// At most this many linearizable reads waiting for confirmation at once.
    pub pending_reads_max: u32,
    /// Bytes (`Entry::size_bytes`) of log entries kept in memory. Older entries that are
    /// applied leave memory and are read back from disk through `Action::ReadLog` (a lagging
    /// follower, a query); entries not yet applied always stay. At least `message_bytes_max`,
    /// so a follower just behind is served from memory.
    pub log_cache_bytes_max: u64,
    /// Snapshot bytes in one InstallSnapshot chunk; at least 1. A chunk never carries more than
    /// `message_bytes_max` either, so it travels like one full AppendEntries.
    pub snapshot_chunk_bytes: u64,
    /// Seeds the node's own random generator (election timeouts). Distinct per node.
    pub seed: u64,
    /// A deliberate bug, for the simulator's evidence only (feature `bugs`).
    #[cfg(feature = "bugs")]
    pub bug: Option<Bug>,
}

impl Config {
    /// Defaults tuned for ticks of 10 ms: an election timeout of 150-300 ms (the seed's), a
    /// heartbeat every 50 ms; pre-vote and check-quorum on; 1 MiB messages, a 16 MiB window.
    #[must_use]
    pub fn new(id: NodeId, peers: Vec<NodeId>) -> Config {
        Config {
            id,
            peers,
            addresses: BTreeMap::new(),
            joining: false,
            record_bootstrap: false,
            promote_lag_entries_max: 256,
            election_ticks_min: ELECTION_TICKS_MIN,
            election_ticks_max: ELECTION_TICKS_MAX,
            heartbeat_ticks: HEARTBEAT_TICKS,
            pre_vote: true,
            check_quorum: true,
            entries_per_message_max: 1024,
            message_bytes_max: MESSAGE_BYTES_MAX,
            inflight_messages_max: 64,
            inflight_bytes_max: INFLIGHT_BYTES_MAX,
            uncommitted_entries_max: 65_536,
            pending_reads_max: 4096,
            snapshot_chunk_bytes: MESSAGE_BYTES_MAX,
            log_cache_bytes_max: LOG_CACHE_BYTES_MAX,
            seed: id.0,
            #[cfg(feature = "bugs")]
            bug: None,
        }
    }

    /// Whether a deliberate bug is switched on; always false without the `bugs` feature.
    #[inline]
    pub(crate) fn has_bug(&self, bug: Bug) -> bool {
        #[cfg(feature = "bugs")]
        return self.bug == Some(bug);
        #[cfg(not(feature = "bugs"))]
        {
            let _ = bug;
            false
        }
    }

    /// How many of `voters` make a quorum: a majority (§5.2).
    pub(crate) fn quorum_of(&self, voters: usize) -> usize {
        if self.has_bug(Bug::QuorumOfHalf) {
            return (voters / 2).max(1);
        }
        crate::quorum::majority(voters)
    }

    /// Every member of the bootstrap configuration, sorted, this node included.
    #[must_use]
    pub fn members(&self) -> Vec<NodeId> {
        let mut all = self.peers.clone();
        all.push(self.id);
        all.sort();
        all
    }

    /// The configuration the cluster starts with (empty for a node that joins).
    #[must_use]
    pub fn bootstrap(&self) -> Membership {
        if self.joining {
            return Membership::default();
        }
        let mut membership = Membership::voters_only(self.members());
        for (id, member) in &mut membership.members {
            member.address = self.addresses.get(id).cloned().unwrap_or_default();
        }
        membership
    }

    /// Checks each limit and the relations between them; [`Node::new`](crate::Node::new) calls
    /// it and refuses a configuration that fails.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut members = self.members();
        let count = members.len();
        members.dedup();
        if members.len() != count {
            return Err(ConfigError("peers must be distinct and must not include the node itself"));
        }
        if self.election_ticks_min == 0 || self.election_ticks_max <= self.election_ticks_min {
            return Err(ConfigError("need 0 < election_ticks_min < election_ticks_max"));
        }
        if self.heartbeat_ticks == 0 || self.heartbeat_ticks >= self.election_ticks_min {
            return Err(ConfigError("need 0 < heartbeat_ticks < election_ticks_min"));
        }
        if self.entries_per_message_max == 0 || self.message_bytes_max < ENTRY_OVERHEAD_BYTES {
            return Err(ConfigError(
                "need entries_per_message_max > 0 and message_bytes_max >= ENTRY_OVERHEAD_BYTES",
            ));
        }
        if self.inflight_messages_max == 0 || self.inflight_bytes_max < self.message_bytes_max {
            return Err(ConfigError(
                "need inflight_messages_max > 0 and inflight_bytes_max >= message_bytes_max",
            ));
        }
        if self.log_cache_bytes_max < self.message_bytes_max {
            return Err(ConfigError("need log_cache_bytes_max >= message_bytes_max"));
        }
        if self.snapshot_chunk_bytes == 0 {
            return Err(ConfigError("need snapshot_chunk_bytes > 0"));
        }
        if self.uncommitted_entries_max == 0 || self.pending_reads_max == 0 {
            return Err(ConfigError("queue limits must be positive"));
        }
        Ok(())
    }
}

/// Why a configuration was refused: the relation it breaks, in words.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConfigError(pub &'static str);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid raft configuration: {}", self.0)
    }
}

impl std::error::Error for ConfigError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        Config::new(NodeId(1), vec![NodeId(2), NodeId(3)]).validate().unwrap();
        Config::new(NodeId(1), vec![]).validate().unwrap();
    }

    #[test]
    fn rejects_self_in_peers_and_bad_timeouts() {
        let mut config = Config::new(NodeId(1), vec![NodeId(1)]);
        assert!(config.validate().is_err());
        config.peers = vec![NodeId(2), NodeId(2)];
        assert!(config.validate().is_err());
        config.peers = vec![NodeId(2)];
        config.heartbeat_ticks = config.election_ticks_min;
        assert!(config.validate().is_err());
        config.heartbeat_ticks = 1;
        config.election_ticks_max = config.election_ticks_min;
        assert!(config.validate().is_err());
    }

    #[test]
    fn rejects_byte_limits_that_do_not_nest() {
        let mut config = Config::new(NodeId(1), vec![NodeId(2)]);
        config.message_bytes_max = ENTRY_OVERHEAD_BYTES - 1;
        assert!(config.validate().is_err(), "a message must hold one entry's overhead");
        config.message_bytes_max = ENTRY_OVERHEAD_BYTES;
        config.validate().unwrap();
        config.snapshot_chunk_bytes = 0;
        assert!(config.validate().is_err(), "a chunk carries at least a byte");
        config.snapshot_chunk_bytes = 1;
        config.inflight_bytes_max = ENTRY_OVERHEAD_BYTES - 1;
        assert!(config.validate().is_err(), "the window must hold a full message");
    }
}
