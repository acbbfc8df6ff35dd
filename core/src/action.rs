//! Everything a node asks its driver to do: the only way out.

use crate::membership::{ChangeRefusal, Membership};
use crate::message::{fmt_entries, Message};
use crate::types::{Bytes, Entry, HardState, LogIndex, NodeId, RequestId, Snapshot, SnapshotMeta, Term};
use std::fmt;

/// One thing the driver must do. A step's actions are carried out in the order returned; see
/// the crate documentation for which must be durable before which.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    /// Store term, vote and commit (replacing the previous hard state).
    SaveHardState(HardState),
    /// Remove every log entry at `from` and after (a conflicting suffix, §5.3).
    TruncateLog {
        /// The first index removed; always past the commit index.
        from: LogIndex,
    },
    /// Append entries at the end of the log.
    AppendLog {
        /// Contiguous entries that continue the log as it stands after the earlier actions.
        entries: Vec<Entry>,
    },
    /// Install a leader's snapshot (§7): store it, replacing any earlier one; drop the log
    /// through `snapshot.meta.index` (all of it if the log does not hold that entry with that
    /// term; the core's log is already so); reset the state machine to the snapshot. A storage
    /// action: a crash keeps it or not, in order with the others; a `Sync` follows before the
    /// follower acknowledges it.
    InstallSnapshot {
        /// The snapshot, complete and checked.
        snapshot: Snapshot,
    },
    /// Keep a received chunk of a snapshot in transfer, so a restart resumes the transfer
    /// (`Recovered::partial`). Needs no sync: a lost chunk is fetched again.
    SaveSnapshotChunk {
        /// What the snapshot covers.
        meta: SnapshotMeta,
        /// The configuration it carries.
        membership: Membership,
        /// The snapshot's full length.
        total: u64,
        /// Its checksum.
        checksum: u64,
        /// Where the chunk starts; 0 starts a new transfer, replacing any earlier one.
        offset: u64,
        /// The bytes.
        chunk: Bytes,
    },
    /// Read entries that are no longer in memory from storage, and step them back in with
    /// `Event::LogRead` (after this step's other actions). At least one entry if `from` is in
    /// the log; up to `to`, stopping once `bytes_max` (`Entry::size_bytes`) is passed.
    ReadLog {
        /// The follower that needs them.
        peer: NodeId,
        /// The first index wanted.
        from: LogIndex,
        /// The last index wanted.
        to: LogIndex,
        /// Stop after this many bytes (the first entry always comes).
        bytes_max: u64,
    },
    /// Every storage action before this one must be durable before any action after it is
    /// carried out.
    Sync,
    /// Send a message to a peer. Delivery may fail; Raft retries.
    Send(Message),
    /// These entries are committed: apply them, in order.
    Apply {
        /// The entries after the last applied one, through the commit index, in log order.
        entries: Vec<Entry>,
    },
    /// Answer a client request.
    Reply(Reply),
}

/// The answer to `Event::Propose` or `Event::Read`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Reply {
    /// The proposal's commands are committed at `first..=last` in `term`.
    Committed {
        /// The proposal answered.
        request: RequestId,
        /// The index of its first command.
        first: LogIndex,
        /// The index of its last command.
        last: LogIndex,
        /// The term its entries carry (the leader's).
        term: Term,
    },
    /// The read may be served from state that has applied everything through `index`.
    ReadReady {
        /// The read answered.
        request: RequestId,
        /// The read point: the leader's commit index when leadership was confirmed.
        index: LogIndex,
    },
    /// This node is not the leader; `leader` is the one it knows of, if any. Nothing was done.
    NotLeader {
        /// The request answered.
        request: RequestId,
        /// The leader of the current term as far as this node knows, for a redirect.
        leader: Option<NodeId>,
    },
    /// Refused; nothing was done.
    Rejected {
        /// The request answered.
        request: RequestId,
        /// Why.
        reason: RejectReason,
    },
    /// The leader lost leadership after appending the commands: they may or may not commit.
    Indeterminate {
        /// The proposal answered.
        request: RequestId,
    },
}

/// Why a leader refused a request without doing anything.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RejectReason {
    /// Too many entries uncommitted (or reads pending): retry later.
    Overloaded,
    /// A proposal with no commands.
    Empty,
    /// Leadership is being handed to another node (dissertation §3.10): retry there.
    Transferring,
    /// A membership change the leader refused (dissertation §4.1).
    Change(ChangeRefusal),
}

impl Reply {
    /// The request this reply answers.
    #[must_use]
    pub fn request(&self) -> RequestId {
        match *self {
            Reply::Committed { request, .. }
            | Reply::ReadReady { request, .. }
            | Reply::NotLeader { request, .. }
            | Reply::Rejected { request, .. }
            | Reply::Indeterminate { request } => request,
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::SaveHardState(hs) => {
                write!(f, "save term={} vote=", hs.term)?;
                match hs.voted_for {
                    Some(id) => write!(f, "{id}")?,
                    None => write!(f, "-")?,
                }
                write!(f, " commit={}", hs.commit)
            }
            Action::TruncateLog { from } => write!(f, "truncate from={from}"),
            Action::AppendLog { entries } => {
                write!(f, "append ")?;
                fmt_entries(f, entries)
            }
            Action::InstallSnapshot { snapshot } => write!(
                f,
                "install-snapshot {}/{} bytes={}",
                snapshot.meta.index,
                snapshot.meta.term,
                snapshot.data.len()
            ),
            Action::SaveSnapshotChunk { meta, offset, chunk, total, .. } => write!(
                f,
                "save-snapshot-chunk {}/{} bytes={offset}..{}/{total}",
                meta.index,
                meta.term,
                offset + chunk.len() as u64
            ),
            Action::ReadLog { peer, from, to, bytes_max } => {
                write!(f, "read-log {from}..={to} for {peer} bytes<={bytes_max}")
            }
            Action::Sync => write!(f, "sync"),
            Action::Send(message) => write!(f, "send {message}"),
            Action::Apply { entries } => {
                write!(f, "apply ")?;
                fmt_entries(f, entries)
            }
            Action::Reply(reply) => match reply {
                Reply::Committed { request, first, last, term } => {
                    write!(f, "reply {request} committed {first}..={last} {term}")
                }
                Reply::ReadReady { request, index } => write!(f, "reply {request} read-ready {index}"),
                Reply::NotLeader { request, leader } => match leader {
                    Some(id) => write!(f, "reply {request} not-leader leader={id}"),
                    None => write!(f, "reply {request} not-leader leader=-"),
                },
                Reply::Rejected { request, reason } => write!(f, "reply {request} rejected {reason:?}"),
                Reply::Indeterminate { request } => write!(f, "reply {request} indeterminate"),
            },
        }
    }
}
