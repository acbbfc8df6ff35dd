//! Classic Raft bugs that the simulator must catch. They can be switched on only in builds with
//! the `bugs` feature (`Config::bug`); without it `Config::has_bug` is constantly false and the
//! buggy branches compile away.

/// One deliberate protocol bug.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Bug {
    /// Grant votes without the §5.4.1 up-to-date check.
    VoteWithoutLogCheck,
    /// Send a vote before it is durable (§5.2 / Figure 2: persist before responding).
    VoteNotPersisted,
    /// Commit an entry of an earlier term by counting replicas (Figure 8, §5.4.2).
    CommitOldTermByCounting,
    /// Accept AppendEntries without comparing the previous entry's term (§5.3).
    AppendWithoutConsistencyCheck,
    /// Use n/2 instead of n/2+1 as the quorum.
    QuorumOfHalf,
    /// Acknowledge appended entries before they are durable.
    AckBeforePersist,
    /// Election: a candidate counts a granted vote answer from an earlier term (§5.1: stale
    /// answers must be ignored).
    StaleVoteCounted,
    /// Replication: a follower acknowledges its last log index instead of the last index the
    /// AppendEntries covered (§5.3: only the checked prefix is known to match).
    AckLastIndex,
    /// Commit: a follower takes the leader's commit index without capping it at the last entry
    /// the message covered (§5.3 step 5), so it may commit entries that differ from the leader's.
    FollowerCommitPastMatch,
    /// Reads: a leader answers a linearizable read at once, without confirming with a quorum
    /// that it still leads (dissertation §6.4).
    ReadWithoutQuorum,
    /// Reads: a new leader answers reads before committing an entry of its own term, so its
    /// commit index may still lag (dissertation §6.4 step 1).
    ReadBeforeOwnTermCommit,
    /// Availability: a pre-vote round raises the real term (dissertation §9.6: pre-vote must
    /// change nobody's term).
    PreVoteRaisesTerm,
    /// Availability: election timeouts are not randomized (§5.2: randomization breaks ties).
    FixedElectionTimeout,
    /// Snapshots: a follower installs a snapshot without checking it against its own log
    /// (§7, Figure 13: an old snapshot, one its commit index covers, must be ignored, and the
    /// log after a matching last entry kept), so a late, duplicated transfer rolls back
    /// committed entries.
    InstallWithoutLogCheck,
    /// Membership: a leader starts a configuration change before it has committed an entry of
    /// its own term (Ongaro's 2015 single-server change bug: two changes from leaders of
    /// different terms can leave configurations two servers apart, with disjoint majorities).
    ChangeWithoutFirstCommit,
    /// Membership: a leader whose removal has committed keeps leading and keeps counting
    /// itself in quorums of a configuration it is no longer in (§4.2.2).
    RemovedLeaderKeepsLeading,
    /// Membership: a leader counts learners (non-voters) towards commit and election quorums.
    LearnerCountedInQuorum,
}

impl Bug {
    /// Every bug, in a fixed order (the simulator's `--bug` choices and the CI check).
    pub const ALL: [Bug; 17] = [
        Bug::VoteWithoutLogCheck,
        Bug::VoteNotPersisted,
        Bug::CommitOldTermByCounting,
        Bug::AppendWithoutConsistencyCheck,
        Bug::QuorumOfHalf,
        Bug::AckBeforePersist,
        Bug::StaleVoteCounted,
        Bug::AckLastIndex,
        Bug::FollowerCommitPastMatch,
        Bug::ReadWithoutQuorum,
        Bug::ReadBeforeOwnTermCommit,
        Bug::PreVoteRaisesTerm,
        Bug::FixedElectionTimeout,
        Bug::InstallWithoutLogCheck,
        Bug::ChangeWithoutFirstCommit,
        Bug::RemovedLeaderKeepsLeading,
        Bug::LearnerCountedInQuorum,
    ];

    /// Its kebab-case name, as the simulator's `--bug` takes it.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Bug::VoteWithoutLogCheck => "vote-without-log-check",
            Bug::VoteNotPersisted => "vote-not-persisted",
            Bug::CommitOldTermByCounting => "commit-old-term-by-counting",
            Bug::AppendWithoutConsistencyCheck => "append-without-consistency-check",
            Bug::QuorumOfHalf => "quorum-of-half",
            Bug::AckBeforePersist => "ack-before-persist",
            Bug::StaleVoteCounted => "stale-vote-counted",
            Bug::AckLastIndex => "ack-last-index",
            Bug::FollowerCommitPastMatch => "follower-commit-past-match",
            Bug::ReadWithoutQuorum => "read-without-quorum",
            Bug::ReadBeforeOwnTermCommit => "read-before-own-term-commit",
            Bug::PreVoteRaisesTerm => "pre-vote-raises-term",
            Bug::FixedElectionTimeout => "fixed-election-timeout",
            Bug::InstallWithoutLogCheck => "install-without-log-check",
            Bug::ChangeWithoutFirstCommit => "change-without-first-commit",
            Bug::RemovedLeaderKeepsLeading => "removed-leader-keeps-leading",
            Bug::LearnerCountedInQuorum => "learner-counted-in-quorum",
        }
    }

    /// The bug called `name` (see [`Bug::name`]), if there is one.
    #[must_use]
    pub fn from_name(name: &str) -> Option<Bug> {
        Bug::ALL.into_iter().find(|bug| bug.name() == name)
    }
}
