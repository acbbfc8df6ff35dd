//! Everything that can happen to a node: the only way in.

use crate::membership::MembershipChange;
use crate::message::Message;
use crate::types::{Entry, LogIndex, NodeId, Payload, RequestId, Snapshot, Term};

/// Formats proposed payloads as a trace shows them: a command as its bytes, a session's
/// request as `client#seq[commands]`.
#[must_use]
pub fn fmt_payloads(payloads: &[Payload]) -> String {
    let shown: Vec<String> = payloads
        .iter()
        .map(|payload| match payload {
            Payload::Command(data) => format!("{data:?}"),
            Payload::Request(request) => format!("{}#{}{:?}", request.client, request.seq, request.commands),
            other => format!("{other:?}"),
        })
        .collect();
    format!("[{}]", shown.join(", "))
}

/// One input to [`Node::step`](crate::Node::step).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Event {
    /// One unit of logical time passed. The driver decides how long a tick is.
    Tick,
    /// A message arrived from a peer.
    Receive(Message),
    /// Clients ask to append these entries, in this order. Answered by one `Reply`.
    Propose {
        /// Chosen by the driver, echoed in the reply.
        request: RequestId,
        /// One entry each, appended contiguously: client payloads only
        /// ([`Payload::is_client`]), never a no-op or a configuration.
        payloads: Vec<Payload>,
    },
    /// A client asks for a linearizable read point (dissertation §6.4, ReadIndex). Answered by
    /// `Reply::ReadReady` once the node has applied everything the read must see.
    Read {
        /// Chosen by the driver, echoed in the reply.
        request: RequestId,
    },
    /// Every log write up to and including the entry (`index`, `term`) is durable.
    LogPersisted {
        /// The last durable entry's index.
        index: LogIndex,
        /// Its term, so a report about an entry since truncated and replaced is ignored.
        term: Term,
    },
    /// The driver made `snapshot` of its state machine through `snapshot.meta.index` (at most
    /// the applied index, and the term of that entry) and it is durable: the core drops the
    /// entries it covers and sends it to followers that need them (§7, log compaction). An
    /// older or equal snapshot than the one the core has is ignored.
    Compact {
        /// The snapshot, durable.
        snapshot: Snapshot,
    },
    /// The entries an `Action::ReadLog` asked for, read from durable storage (empty if they
    /// could not be read: compacted meanwhile).
    LogRead {
        /// The follower they are for.
        peer: NodeId,
        /// Contiguous entries from the requested index on.
        entries: Vec<Entry>,
    },
    /// An operator asks the leader to hand leadership to `to` (dissertation §3.10): it brings
    /// `to`'s log up to date, tells it to campaign (`TimeoutNow`) and refuses proposals
    /// meanwhile, for at most an election timeout. Ignored by a node that does not lead.
    TransferLeadership {
        /// The member to lead next.
        to: NodeId,
    },
    /// An operator asks the leader to change the cluster's membership, one server at a time
    /// (dissertation §4.1). Answered by one `Reply`: `Committed` once the new configuration
    /// entry commits, `Rejected` with [`RejectReason::Change`](crate::RejectReason::Change) if
    /// the leader refuses it (nothing changed), `NotLeader` from a follower.
    ChangeMembership {
        /// Chosen by the driver, echoed in the reply.
        request: RequestId,
        /// The change.
        change: MembershipChange,
        /// Skip the check that the new configuration keeps a live quorum.
        force: bool,
    },
    /// Start an election now (an operator's bootstrap: `replog start --leader`).
    Campaign,
}
