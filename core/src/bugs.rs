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
}

impl Bug {
    /// Every bug, in a fixed order (the simulator's `--bug` choices and the CI check).
    pub const ALL: [Bug; 6] = [
        Bug::VoteWithoutLogCheck,
        Bug::VoteNotPersisted,
        Bug::CommitOldTermByCounting,
        Bug::AppendWithoutConsistencyCheck,
        Bug::QuorumOfHalf,
        Bug::AckBeforePersist,
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
        }
    }

    /// The bug called `name` (see [`Bug::name`]), if there is one.
    #[must_use]
    pub fn from_name(name: &str) -> Option<Bug> {
        Bug::ALL.into_iter().find(|bug| bug.name() == name)
    }
}
