//! Newtypes for the numbers Raft juggles, so a term can never be used as an index.

use crate::membership::Membership;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::sync::Arc;

macro_rules! id_newtype {
    ($(#[$doc:meta])* $name:ident, $prefix:literal) => {
        $(#[$doc])*
        #[derive(
            Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
        )]
        #[serde(transparent)]
        pub struct $name(pub u64);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!($prefix, "{}"), self.0)
            }
        }
    };
}

id_newtype!(
    /// A member of the cluster. Drivers map their own names (`node1`) onto these.
    NodeId,
    "n"
);
id_newtype!(
    /// A Raft term (§5.1): a logical clock that only moves forward.
    Term,
    "t"
);
id_newtype!(
    /// A position in the log; the first entry has index 1, index 0 means "before the log".
    LogIndex,
    "i"
);
id_newtype!(
    /// Chosen by the driver for each client request, echoed in the reply.
    RequestId,
    "r"
);
id_newtype!(
    /// A client session (dissertation §6.3): chosen by the client (random), it names the
    /// sequence its requests are numbered in, so a retried request is recognised.
    ClientId,
    "c"
);

impl Term {
    /// The term before any election: a fresh node's term, and the term of "index 0".
    pub const ZERO: Term = Term(0);

    /// The term after this one: what a candidate campaigns in (§5.2).
    #[must_use]
    pub fn next(self) -> Term {
        Term(self.0 + 1)
    }
}

impl LogIndex {
    /// "Before the log": the index of no entry, whose term is [`Term::ZERO`].
    pub const ZERO: LogIndex = LogIndex(0);

    /// The index after this one.
    #[must_use]
    pub fn next(self) -> LogIndex {
        LogIndex(self.0 + 1)
    }

    /// The index before this one; index 0 stays 0.
    #[must_use]
    pub fn prev(self) -> LogIndex {
        LogIndex(self.0.saturating_sub(1))
    }

    /// The index `n` entries after this one.
    #[must_use]
    pub fn plus(self, n: u64) -> LogIndex {
        LogIndex(self.0 + n)
    }
}

/// An opaque client command, cheap to clone (one allocation shared by every copy).
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Bytes(pub Arc<[u8]>);

impl Bytes {
    /// The command's length in bytes.
    #[must_use]
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the command has no bytes (a proposal may still carry it).
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The command's bytes.
    #[must_use]
    pub fn as_slice(&self) -> &[u8] {
        &self.0
    }
}

impl AsRef<[u8]> for Bytes {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl From<&[u8]> for Bytes {
    fn from(bytes: &[u8]) -> Bytes {
        Bytes(Arc::from(bytes))
    }
}

impl From<Vec<u8>> for Bytes {
    fn from(bytes: Vec<u8>) -> Bytes {
        Bytes(Arc::from(bytes))
    }
}

impl From<&str> for Bytes {
    fn from(text: &str) -> Bytes {
        Bytes::from(text.as_bytes())
    }
}

impl fmt::Debug for Bytes {
    /// Shows UTF-8 text as a string, anything else as bytes.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match std::str::from_utf8(&self.0) {
            Ok(text) => write!(f, "{text:?}"),
            Err(_) => write!(f, "{:?}", &self.0[..]),
        }
    }
}

/// What an entry carries.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Payload {
    /// Appended by every new leader so entries of earlier terms can commit (§8, dissertation §6.4).
    Noop,
    /// A client's command.
    Command(Bytes),
    /// A new configuration (dissertation §4.1): in force on every server from the moment the
    /// entry is in its log.
    Config(Membership),
    /// A client session's request (dissertation §6.3): its commands, in order, in one entry so
    /// they commit together or not at all. The core never looks inside; the driver's state
    /// machine keeps the session table that makes retries of `(client, seq)` exactly-once.
    Request(ClientRequest),
}

/// One request of a client session: what a [`Payload::Request`] entry carries.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ClientRequest {
    /// The session.
    pub client: ClientId,
    /// The request's number in its session, from 1; a retry carries the same number.
    pub seq: u64,
    /// The commands, at least one.
    pub commands: Vec<Bytes>,
}

/// Bytes a [`ClientRequest`] counts for beyond its commands' bytes: client and seq, and a
/// length per command.
const REQUEST_OVERHEAD_BYTES: u64 = 16;
const REQUEST_COMMAND_OVERHEAD_BYTES: u64 = 8;

impl Payload {
    /// Bytes it counts for beyond [`ENTRY_OVERHEAD_BYTES`]: a command's length; for a
    /// configuration, a generous bound on its encoding (64 bytes per member plus twice its
    /// address: drivers encode it as JSON).
    #[must_use]
    pub fn size_bytes(&self) -> u64 {
        match self {
            Payload::Noop => 0,
            Payload::Command(data) => data.len() as u64,
            Payload::Config(membership) => {
                membership.members.values().map(|member| 64 + 2 * member.address.len() as u64).sum()
            }
            Payload::Request(request) => {
                REQUEST_OVERHEAD_BYTES
                    + request
                        .commands
                        .iter()
                        .map(|command| REQUEST_COMMAND_OVERHEAD_BYTES + command.len() as u64)
                        .sum::<u64>()
            }
        }
    }

    /// The client commands it carries, in order (each takes one command ID): none for a no-op
    /// or a configuration.
    #[must_use]
    pub fn commands(&self) -> &[Bytes] {
        match self {
            Payload::Noop | Payload::Config(_) => &[],
            Payload::Command(data) => std::slice::from_ref(data),
            Payload::Request(request) => &request.commands,
        }
    }

    /// Whether a client may propose it (a command or a session's request), as opposed to the
    /// entries the protocol writes itself.
    #[must_use]
    pub fn is_client(&self) -> bool {
        matches!(self, Payload::Command(_) | Payload::Request(_))
    }
}

/// Bytes every entry counts for on top of its command in the byte limits
/// ([`Config::message_bytes_max`](crate::Config::message_bytes_max),
/// [`Config::inflight_bytes_max`](crate::Config::inflight_bytes_max)): index (8) and term (8)
/// plus 8 for the payload's kind and length, so empty entries (no-ops) still cost something.
///
/// A driver whose wire encoding of an entry has at most this much overhead can rely on the
/// entries of one AppendEntries encoding to at most `message_bytes_max` bytes (unless the
/// message is a single oversized entry, which always moves).
pub const ENTRY_OVERHEAD_BYTES: u64 = 24;

/// One log entry.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Entry {
    /// Its position in the log, from 1.
    pub index: LogIndex,
    /// The term of the leader that created it (§5.3).
    pub term: Term,
    /// What it carries.
    pub payload: Payload,
}

impl Entry {
    /// Bytes this entry counts for in message and inflight limits: its command plus
    /// [`ENTRY_OVERHEAD_BYTES`].
    #[must_use]
    pub fn size_bytes(&self) -> u64 {
        ENTRY_OVERHEAD_BYTES + self.payload.size_bytes()
    }
}

/// What a snapshot covers (§7, Figure 13): the last entry it replaces, and that entry's term,
/// so the consistency check at the log's new start still works (§5.3).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SnapshotMeta {
    /// The last index the snapshot covers; the log continues at the next one.
    pub index: LogIndex,
    /// The term of the entry at `index`.
    pub term: Term,
}

/// A state-machine image through `meta.index` (§7). `data` is the driver's: the core carries it
/// to followers in chunks and hands it back on install, never looking inside.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Snapshot {
    /// What it covers.
    pub meta: SnapshotMeta,
    /// The configuration in force at `meta.index` (§4.1: the log it replaces held it). Empty in
    /// snapshots written before configurations were replicated: the bootstrap's then holds.
    #[serde(default)]
    pub membership: Membership,
    /// The state machine's image, as the driver encoded it.
    pub data: Bytes,
}

impl Snapshot {
    /// FNV-1a (64-bit) of `data`: a follower checks the assembled chunks against it, so a
    /// corrupted transfer is refused and fetched again instead of installed.
    #[must_use]
    pub fn checksum(&self) -> u64 {
        checksum(self.data.as_slice())
    }
}

/// The first bytes of a snapshot a follower is receiving (a transfer in progress). Kept across
/// a leader change or a restart, so the transfer resumes at `data.len()` instead of starting over.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct PartialSnapshot {
    /// What the snapshot covers.
    pub meta: SnapshotMeta,
    /// The configuration in force at `meta.index`.
    pub membership: Membership,
    /// Its full length in bytes.
    pub total: u64,
    /// Its [`Snapshot::checksum`]: identifies the transfer, and is checked once it is complete.
    pub checksum: u64,
    /// The bytes received so far, from offset 0.
    pub data: Vec<u8>,
}

/// FNV-1a, 64-bit: the same on every machine (std's hasher promises no such thing).
#[must_use]
pub fn checksum(bytes: &[u8]) -> u64 {
    let mut hash = 0xcbf2_9ce4_8422_2325u64;
    for &byte in bytes {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

/// What must survive a crash besides the log (Figure 2, "Persistent state on all servers").
/// `commit` is not needed for safety; it is kept so a restarted node does not show committed
/// entries as uncommitted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct HardState {
    /// The latest term the node has seen (§5.1).
    pub term: Term,
    /// The candidate it voted for in `term`, if any (§5.2).
    pub voted_for: Option<NodeId>,
    /// The highest index it knows committed; may lag on disk (see the crate doc, rule 6).
    pub commit: LogIndex,
}
