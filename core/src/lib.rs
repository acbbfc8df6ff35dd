//! # replog-core: a pure Raft state machine
//!
//! A [`Node`] has no sockets, files, clock, threads or global randomness. It changes only in
//! [`Node::step`], which takes one [`Event`] and returns the [`Action`]s the driver must carry
//! out. Time arrives as [`Event::Tick`]; randomness (election timeouts) comes from a ChaCha
//! generator seeded by [`Config::seed`]. The same events in the same order give the same actions,
//! byte for byte.
//!
//! ## The driver contract
//!
//! 1. Carry out the actions **in the order returned**, step after step.
//! 2. Storage actions ([`Action::SaveHardState`], [`Action::TruncateLog`],
//!    [`Action::AppendLog`], [`Action::InstallSnapshot`]) may be buffered, but they become
//!    durable **in order**: a crash may lose a suffix of them, never one in the middle.
//!    [`Action::SaveSnapshotChunk`] is a cache and needs no durability at all.
//! 3. [`Action::Sync`]: every storage action before it MUST be durable before any action after
//!    it is carried out. The core places a `Sync` in front of every message that vouches for
//!    stored state: a vote, a vote request (which counts the sender's own vote), and an
//!    AppendEntries answer. So no vote or acknowledgement ever leaves before what it promises is
//!    on disk (Raft §5.2, §5.3, Figure 2).
//! 4. A leader's AppendEntries needs no `Sync`: the leader writes its own log in parallel with
//!    sending it (dissertation §10.2.1). It counts itself towards a commit quorum only once the
//!    driver reports the write durable with [`Event::LogPersisted`]. Drivers therefore MUST sync
//!    promptly (at the latest before waiting for new input) and report each sync with
//!    `Event::LogPersisted { index, term }` of the last entry then durable.
//! 5. A driver may move a storage action earlier or a send later; both only add safety. So
//!    group commit is allowed: run the storage actions of many steps, sync once, then send.
//! 6. A `SaveHardState` that changes only `commit` may be written late or coalesced with
//!    later ones (the commit index is not needed for safety, §5.4), provided the commit index
//!    on disk never exceeds the durable log. Term and vote changes may not be delayed.
//!
//! 7. Log compaction (§7): the driver snapshots its state machine through an index it has
//!    applied (at most [`Node::applied`]), makes the snapshot durable, and only then steps
//!    [`Event::Compact`]; after that step it may delete the entries the snapshot covers. The
//!    core never asks for an entry before [`Node::first_index`] again: a follower that needs
//!    one gets the snapshot, in chunks of [`Config::snapshot_chunk_bytes`].
//! 8. [`Action::InstallSnapshot`] replaces the state machine with the snapshot's image: the
//!    next [`Action::Apply`] continues right after `snapshot.meta.index`.
//! 9. Memory: the core keeps the terms of the whole log but the bytes of only its newest
//!    entries ([`Config::log_cache_bytes_max`]; entries not yet applied always stay). When a
//!    lagging follower needs older ones it asks with [`Action::ReadLog`]; the driver reads them
//!    from storage and steps them back with [`Event::LogRead`] after the rest of that step's
//!    actions (never in the middle: actions stay in order). Any entry from
//!    [`Node::first_index`] to the last one may be asked for; all of them are applied, so
//!    written before. A driver that starts from a long log hands the core the terms
//!    (`Recovered::term_runs`) and only its newest entries.
//!
//! ## A driver loop
//!
//! ```
//! use replog_core::{Action, Config, Event, Node, NodeId, Recovered};
//!
//! let mut node = Node::new(Config::new(NodeId(1), vec![]), Recovered::default()).unwrap();
//! let mut pending = vec![Event::Campaign];
//! while let Some(event) = pending.pop() {
//!     for action in node.step(event) {
//!         match action {
//!             Action::SaveHardState(_)
//!             | Action::TruncateLog { .. }
//!             | Action::AppendLog { .. }
//!             | Action::InstallSnapshot { .. }
//!             | Action::SaveSnapshotChunk { .. } => {
//!                 // write to the log / metadata / snapshot files (buffered)
//!             }
//!             Action::Sync => { /* fsync */ }
//!             Action::ReadLog { .. } => { /* read from storage, step Event::LogRead after */ }
//!             Action::Send(_message) => { /* queue on the peer's connection */ }
//!             Action::Apply { .. } | Action::Reply(_) => { /* state machine, clients */ }
//!         }
//!     }
//!     // Synced everything: tell the node how far its log is durable.
//!     if node.persisted_index() < node.last_index() {
//!         pending.push(Event::LogPersisted { index: node.last_index(), term: node.last_term() });
//!     }
//! }
//! assert!(node.is_leader());
//! assert_eq!(node.commit(), node.last_index());
//! ```
//!
//! ## What holds everywhere (checked with `assert!` at the end of every step)
//!
//! terms and the commit index never go back; `applied <= commit <= last_index`; a leader's log
//! only grows and it never truncates; committed entries are never truncated; no entry's term is
//! ahead of the current term; every change of hard state is handed to the driver in the step
//! that made it.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod action;
mod bugs;
mod candidate;
mod config;
mod event;
mod follower;
mod leader;
mod log;
mod marks;
mod membership;
mod message;
mod node;
mod progress;
pub mod quorum;
mod reconfigure;
mod status;
// Test support, not part of a normal build: the core's own tests enable it (see Cargo.toml).
#[cfg(feature = "testkit")]
pub mod testkit;
mod types;

pub use action::{Action, RejectReason, Reply};
pub use bugs::Bug;
pub use config::{Config, ConfigError};
pub use event::{fmt_payloads, Event};
pub use log::LogError;
pub use marks::Marks;
pub use membership::{ChangeRefusal, Member, MemberRole, Membership, MembershipChange};
pub use message::{AppendOutcome, Body, Message};
pub use node::{Node, Recovered, StartError};
pub use status::{PeerStatus, RoleKind, Status};
pub use types::{
    checksum, Bytes, ClientId, ClientRequest, Entry, HardState, LogIndex, NodeId, PartialSnapshot, Payload,
    RequestId, Snapshot, SnapshotMeta, Term, ENTRY_OVERHEAD_BYTES,
};
