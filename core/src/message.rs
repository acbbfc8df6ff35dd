//! The messages Raft nodes exchange (Figure 2's RPCs, as one-way messages).

use crate::membership::Membership;
use crate::types::{Bytes, Entry, LogIndex, NodeId, Payload, SnapshotMeta, Term};
use serde::{Deserialize, Serialize};
use std::fmt;

/// A message between two members. `term` is the sender's term, except in a pre-vote request
/// (the term the sender would campaign in) and a granted pre-vote answer (that same term).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Message {
    /// The sender.
    pub from: NodeId,
    /// The receiver; a node ignores messages addressed to another.
    pub to: NodeId,
    /// The sender's term, or the pre-vote term (see above).
    pub term: Term,
    /// What the message says.
    pub body: Body,
}

/// The kinds of message and what each carries.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Body {
    /// RequestVote (§5.2), or the pre-vote that precedes it (dissertation §9.6).
    VoteRequest {
        /// A pre-vote: "would you vote for me?", changing nobody's term or vote.
        pre_vote: bool,
        /// The candidate's last log index, for the up-to-date check (§5.4.1).
        last_log_index: LogIndex,
        /// The candidate's last log term, for the up-to-date check (§5.4.1).
        last_log_term: Term,
        /// The election a leader asked for with `TimeoutNow` (leadership transfer, dissertation
        /// §3.10): voters answer it even while they hear from that leader (their lease would
        /// otherwise ignore it, §4.2.3).
        transfer: bool,
    },
    /// The answer to a `VoteRequest`.
    VoteResponse {
        /// Answers a pre-vote.
        pre_vote: bool,
        /// The vote (or pre-vote) was given.
        granted: bool,
    },
    /// AppendEntries (§5.3); with no entries it is a heartbeat. `seq` is echoed in the answer so
    /// the leader can tell which round of contact a follower confirmed (reads, §6.4 of the
    /// dissertation).
    AppendRequest {
        /// The index of the entry just before `entries`, for the consistency check.
        prev_log_index: LogIndex,
        /// The term of that entry in the leader's log.
        prev_log_term: Term,
        /// Entries from `prev_log_index + 1` on, contiguous; empty for a heartbeat.
        entries: Vec<Entry>,
        /// The leader's commit index (capped at the follower's known match in heartbeats).
        leader_commit: LogIndex,
        /// The leader's heartbeat round, echoed in the answer.
        seq: u64,
    },
    /// The answer to an `AppendRequest`; sent only once what it acknowledges is durable.
    AppendResponse {
        /// Accepted or rejected, with the hint for where to retry.
        outcome: AppendOutcome,
        /// The request's `seq`, echoed.
        seq: u64,
    },
    /// Leadership transfer (dissertation §3.10): the leader tells a follower whose log it has
    /// brought up to date to start an election now, without waiting for its timeout. The
    /// follower acts on it only while its log still ends exactly there: a late one (the leader
    /// gave up and took new entries) must not unseat a working leader.
    TimeoutNow {
        /// The leader's last log index when it asked.
        last_log_index: LogIndex,
        /// Its term.
        last_log_term: Term,
    },
    /// InstallSnapshot (§7, Figure 13), one chunk of it: the leader sends it when a follower
    /// needs entries the leader has compacted. A transfer is named by (`meta`, `total`,
    /// `checksum`), so a follower keeps what it has across lost messages, leader changes and
    /// restarts, and the sender resumes at the offset it reports.
    SnapshotRequest {
        /// What the snapshot covers.
        meta: SnapshotMeta,
        /// The configuration in force at `meta.index` (part of the snapshot, §4.1).
        membership: Membership,
        /// The snapshot's full length in bytes.
        total: u64,
        /// `Snapshot::checksum` of the whole snapshot, checked by the follower once complete.
        checksum: u64,
        /// Where `chunk` starts in the snapshot.
        offset: u64,
        /// Bytes `offset..offset + chunk.len()`; empty in a probe for the follower's offset.
        chunk: Bytes,
    },
    /// The answer to a `SnapshotRequest`. An installed snapshot is acknowledged only once
    /// durable (like an AppendEntries answer).
    SnapshotResponse {
        /// The snapshot answered.
        meta: SnapshotMeta,
        /// How many of its bytes the follower holds, from offset 0: where to resume.
        received: u64,
        /// The follower holds everything through `meta.index`, durably (installed, or it had
        /// it already): the leader's match index may move there.
        installed: bool,
    },
}

/// The follower's answer to AppendEntries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum AppendOutcome {
    /// The follower's log matches the leader's through `match_index`, durably.
    Accepted {
        /// The last index the request covered (prev plus its entries).
        match_index: LogIndex,
    },
    /// The consistency check failed at `prev_log_index` (echoed, to spot stale answers). The
    /// hint lets the leader skip a whole term per round trip (§5.3): the follower holds
    /// `conflict_term` from `conflict_index` on, or (no term) its log ends before
    /// `conflict_index`.
    Rejected {
        /// The request's `prev_log_index`.
        prev_log_index: LogIndex,
        /// Where the follower's conflicting run of `conflict_term` starts, or just past its log.
        conflict_index: LogIndex,
        /// The term the follower holds at `prev_log_index`; `None` if its log is shorter.
        conflict_term: Option<Term>,
    },
}

impl Body {
    /// Whether the message is one a correct peer could send in `term`: entries contiguous after
    /// the previous index with terms that never decrease and never pass `term`, a snapshot of no
    /// later term whose chunk lies within it, indexes that do not overflow. A node drops one
    /// that is not (a buggy or hostile peer must not make it append a gap or a term from the
    /// future, which its invariant checks would stop on).
    #[must_use]
    pub fn is_well_formed(&self, term: Term) -> bool {
        match self {
            Body::VoteRequest { last_log_term, .. } | Body::TimeoutNow { last_log_term, .. } => {
                *last_log_term <= term
            }
            Body::AppendRequest { prev_log_index, prev_log_term, entries, .. } => {
                let mut expected = *prev_log_index;
                let mut last_term = *prev_log_term;
                *prev_log_term <= term
                    && prev_log_index.0.checked_add(entries.len() as u64).is_some()
                    && entries.iter().all(|entry| {
                        expected = expected.next();
                        if let Payload::Config(membership) = &entry.payload {
                            // A configuration with no voter could never decide anything.
                            if membership.voter_count() == 0 {
                                return false;
                            }
                        }
                        let fits = entry.index == expected && entry.term >= last_term && entry.term <= term;
                        last_term = entry.term;
                        fits
                    })
            }
            Body::SnapshotRequest { meta, membership, total, offset, chunk, .. } => {
                meta.term <= term
                    && membership.voter_count() > 0
                    && meta.index.0 < u64::MAX / 2
                    && offset.checked_add(chunk.len() as u64).is_some_and(|end| end <= *total)
            }
            Body::VoteResponse { .. } | Body::AppendResponse { .. } | Body::SnapshotResponse { .. } => true,
        }
    }

    /// Messages that vouch for durable state: a vote (or a request that counts the sender's own
    /// vote) and an AppendEntries answer. Each must leave only after every storage write before it
    /// is durable; the core puts `Action::Sync` in front of them.
    #[must_use]
    pub fn needs_durable_state(&self) -> bool {
        match self {
            Body::VoteRequest { pre_vote, .. } | Body::VoteResponse { pre_vote, .. } => !pre_vote,
            Body::AppendResponse { .. } | Body::SnapshotResponse { .. } => true,
            // The leader may send entries before its own copy is durable (dissertation §10.2.1):
            // it counts itself in a commit quorum only through Event::LogPersisted.
            Body::AppendRequest { .. } | Body::SnapshotRequest { .. } | Body::TimeoutNow { .. } => false,
        }
    }
}

impl fmt::Display for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}->{} {} ", self.from, self.to, self.term)?;
        match &self.body {
            Body::VoteRequest { pre_vote, last_log_index, last_log_term, transfer } => {
                let kind = if *pre_vote { "PreVote" } else { "RequestVote" };
                write!(f, "{kind} last={last_log_index}/{last_log_term}")?;
                if *transfer {
                    write!(f, " transfer")?;
                }
                Ok(())
            }
            Body::TimeoutNow { last_log_index, last_log_term } => {
                write!(f, "TimeoutNow last={last_log_index}/{last_log_term}")
            }
            Body::VoteResponse { pre_vote, granted } => {
                let kind = if *pre_vote { "PreVoteResponse" } else { "VoteResponse" };
                write!(f, "{kind} granted={granted}")
            }
            Body::AppendRequest { prev_log_index, prev_log_term, entries, leader_commit, seq } => {
                write!(
                    f,
                    "Append prev={prev_log_index}/{prev_log_term} commit={leader_commit} seq={seq} entries="
                )?;
                fmt_entries(f, entries)
            }
            Body::AppendResponse { outcome, seq } => match outcome {
                AppendOutcome::Accepted { match_index } => {
                    write!(f, "AppendResponse ok match={match_index} seq={seq}")
                }
                AppendOutcome::Rejected { prev_log_index, conflict_index, conflict_term } => {
                    write!(f, "AppendResponse reject prev={prev_log_index} hint={conflict_index}")?;
                    if let Some(term) = conflict_term {
                        write!(f, "/{term}")?;
                    }
                    write!(f, " seq={seq}")
                }
            },
            Body::SnapshotRequest { meta, total, checksum, offset, chunk, .. } => write!(
                f,
                "Snapshot {}/{} bytes={offset}..{}/{total} sum={checksum:016x}",
                meta.index,
                meta.term,
                offset + chunk.len() as u64
            ),
            Body::SnapshotResponse { meta, received, installed } => write!(
                f,
                "SnapshotResponse {}/{} received={received}{}",
                meta.index,
                meta.term,
                if *installed { " installed" } else { "" }
            ),
        }
    }
}

/// `[i1/t1 noop, i2/t1 "x"]`, shortened in the middle when long.
pub fn fmt_entries(f: &mut fmt::Formatter<'_>, entries: &[Entry]) -> fmt::Result {
    const SHOWN_MAX: usize = 6;
    write!(f, "[")?;
    for (i, entry) in entries.iter().enumerate() {
        if entries.len() > SHOWN_MAX && i == SHOWN_MAX / 2 {
            write!(f, "..{} more.., ", entries.len() - SHOWN_MAX)?;
        }
        if entries.len() > SHOWN_MAX && i >= SHOWN_MAX / 2 && i < entries.len() - SHOWN_MAX / 2 {
            continue;
        }
        if i > 0 && !(entries.len() > SHOWN_MAX && i == entries.len() - SHOWN_MAX / 2) {
            write!(f, ", ")?;
        }
        write!(f, "{}/{}", entry.index, entry.term)?;
        match &entry.payload {
            Payload::Noop => write!(f, " noop")?,
            Payload::Command(data) => write!(f, " {data:?}")?,
            Payload::Config(membership) => write!(f, " config{membership}")?,
            Payload::Request(request) => {
                write!(f, " {}#{}{:?}", request.client, request.seq, request.commands)?;
            }
        }
    }
    write!(f, "]")
}
