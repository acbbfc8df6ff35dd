//! Coverage marks: how often the node took each decision worth seeing in a test or a
//! simulation sweep. The core counts them where it decides, so a driver need not guess from the
//! actions. Counting never changes what the node does.

/// Counters of the node's decisions since it was created (a restarted node starts from zero).
/// Each only grows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Marks {
    /// Real elections started (§5.2): the node raised its term and voted for itself as a
    /// candidate. A pre-vote round that is won counts here when the real election starts.
    pub elections: u64,
    /// Elections that ran out of time: a candidate (not a pre-candidate) started another
    /// campaign (pre-vote or real) without its election in the current term having been won or
    /// lost, typically a split vote (§5.2).
    pub split_votes: u64,
    /// Pre-vote rounds started (dissertation §9.6).
    pub pre_vote_campaigns: u64,
    /// Pre-vote requests this node answered with `granted: false`, stale ones included.
    pub pre_vote_rejections_sent: u64,
    /// Vote requests (real or pre-vote) of a higher term dropped unanswered because this node
    /// is a leader or heard from one within `election_ticks_min` ticks (check-quorum's leader
    /// lease, dissertation §4.2.3).
    pub votes_ignored_by_lease: u64,
    /// Messages from a peer, addressed to this node, with a term below its own (§5.1).
    pub stale_term_messages: u64,
    /// Conflicting log suffixes removed by this node as a follower (§5.3).
    pub truncations: u64,
    /// Times this node stopped leading: a higher term, failed check-quorum (§6.2), or any
    /// other way out of the leader role.
    pub leader_stepdowns: u64,
    /// Elections this node won (§5.2).
    pub became_leader: u64,
    /// As leader: a follower rejected entries it had acknowledged, so it lost them (a disk that
    /// lied about a sync, bit rot, a cut file, an old backup); it is re-replicated.
    pub lost_entries_detected: u64,
    /// Vote requests refused, and elections not started, while this node was repairing a log
    /// that lost committed entries.
    pub repair_refusals: u64,
    /// Snapshots of the driver's state machine that let the log drop a prefix (§7).
    pub compactions: u64,
    /// As leader: snapshot transfers started, because a follower needed compacted entries.
    pub snapshot_transfers: u64,
    /// As leader: snapshot chunks sent (a probe for the follower's offset counts too).
    pub snapshot_chunks_sent: u64,
    /// As follower: transfers resumed from a chunk held before (after a lost message, a leader
    /// change or a restart) instead of starting over.
    pub snapshot_resumes: u64,
    /// As follower: snapshots installed (§7).
    pub snapshots_installed: u64,
    /// As follower: complete snapshots refused because their checksum did not hold (fetched
    /// again from offset 0).
    pub snapshots_corrupt: u64,
    /// As leader: leadership transfers started (§3.10).
    pub transfers_started: u64,
    /// As leader: transfers given up after an election timeout without a new leader;
    /// proposals are taken again.
    pub transfers_aborted: u64,
    /// Elections started on a leader's `TimeoutNow`.
    pub transfer_elections: u64,
    /// Messages dropped because no correct peer could have sent them (`Body::is_well_formed`):
    /// a gap in the entries, a term past the message's, an overflowing index.
    pub malformed_messages: u64,
    /// As leader: entries a follower needed were no longer in memory and were read back from
    /// disk (`Action::ReadLog`).
    pub log_reads: u64,
    /// As follower: snapshots not installed because the log already held what they cover (an
    /// old or duplicated transfer).
    pub snapshots_stale: u64,
    /// Vote requests ignored because the sender is no voter of our configuration (a removed
    /// server, a learner, a stranger; §4.2.3) and its log is not ahead of ours.
    pub votes_from_non_voters: u64,
    /// As leader: membership changes appended (operators' and automatic promotions).
    pub membership_changes: u64,
    /// As leader: learners promoted to voter automatically once caught up (§4.2.1).
    pub promotions: u64,
    /// As leader: membership changes refused (pending, barrier, invalid, unsafe).
    pub changes_refused: u64,
    /// As leader: stepped down because a committed configuration no longer has it as a voter.
    pub removed_stepdowns: u64,
    /// Elections not started because this node is no voter of its configuration.
    pub campaigns_as_non_voter: u64,
}
