//! Newtypes for the numbers Raft juggles, so a term can never be used as an index.

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

impl Term {
    pub const ZERO: Term = Term(0);

    pub fn next(self) -> Term {
        Term(self.0 + 1)
    }
}

impl LogIndex {
    pub const ZERO: LogIndex = LogIndex(0);

    pub fn next(self) -> LogIndex {
        LogIndex(self.0 + 1)
    }

    /// The index before this one; index 0 stays 0.
    pub fn prev(self) -> LogIndex {
        LogIndex(self.0.saturating_sub(1))
    }

    pub fn plus(self, n: u64) -> LogIndex {
        LogIndex(self.0 + n)
    }
}

/// An opaque client command, cheap to clone (one allocation shared by every copy).
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Bytes(pub Arc<[u8]>);

impl Bytes {
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn as_slice(&self) -> &[u8] {
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
}

/// One log entry.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Entry {
    pub index: LogIndex,
    pub term: Term,
    pub payload: Payload,
}

impl Entry {
    /// Bytes this entry counts for in message and inflight limits: its payload plus a fixed
    /// header, so empty entries still cost something.
    pub fn size_bytes(&self) -> u64 {
        const HEADER_BYTES: u64 = 24;
        HEADER_BYTES
            + match &self.payload {
                Payload::Noop => 0,
                Payload::Command(data) => data.len() as u64,
            }
    }
}

/// What must survive a crash besides the log (Figure 2, "Persistent state on all servers").
/// `commit` is not needed for safety; it is kept so a restarted node does not show committed
/// entries as uncommitted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct HardState {
    pub term: Term,
    pub voted_for: Option<NodeId>,
    pub commit: LogIndex,
}
