//! Runtime bugs the simulator found that are not fixed yet, and how a run steers around each
//! meanwhile so the sweep stays green. Each switch names the bug and a seed that shows it with
//! the switch off: once the runtime is fixed, turn the switch off (and delete it), and the
//! seed must pass.

/// `clients.rs` `take_proposal` puts a round's plain commands before its session appends in
/// one proposal, but `Driver::admit` checks a conditional append's `expect_last` against the
/// log's last command ID without them: the append then lands after more commands than it
/// expected (seed 10: "expecting 1499 commands before it committed at ID 1501"). Meanwhile the
/// frontend proposes a round's session appends first.
pub(crate) const SESSION_APPENDS_FIRST: bool = true;

/// `Driver::release` of a deferred `Action::Apply` (waiting for a sync) computes
/// `ids.first_id` for its session requests after a later `InstallSnapshot` has already been
/// carried out (and `ids.compacted` past them): `first_id` of an index the snapshot covers
/// panics in `command_ids.rs` (seed 259: "an entry holds at least no command:
/// TryFromIntError"). Meanwhile a snapshot chunk reaches a node only once nothing of its waits
/// for a sync (a delay the network may always add).
pub(crate) const SNAPSHOT_WAITS_FOR_SYNC: bool = true;

/// The session table drops a session (idle, or pushed out) between the admission of one of its
/// requests and that request's apply; `SessionTable::apply` then creates the session afresh
/// with that request's outcome alone, so an earlier request of it, within the window, is
/// judged new and appended a second time (seed 3 with this switch off: a command committed
/// twice; seed 20: a node that restarts rebuilds its table with the default limits, keeps the
/// session, and counts the duplicate). Only an older request arriving after a newer one of its
/// session shows it. Meanwhile a session whose acknowledged append is sent again rests (takes
/// no new request) until the probes are done, and the client goes on with another
/// (`workload.rs`, `resend_later`); a request a paused node held can still do it, rarely.
pub(crate) const NO_LATE_DUPLICATES: bool = true;

/// `clients.rs` `on_reply` names the IDs of a committed proposal's entries with
/// `Driver::command_id` when the core's `Reply::Committed` comes. For a proposal of several
/// entries whose first ones committed (and were applied) in an earlier round, retention may
/// have trimmed them meanwhile (`Driver::retain` runs after every round): `command_id` of a
/// trimmed index panics (a debug assertion; "an entry holds at least no command" in release),
/// which stops the server (seed 1433 with this switch off, a run without sessions; before
/// client sessions `command_id` of a trimmed index was a wrong ID, silently). Meanwhile the
/// simulator's frontend takes the IDs of such entries from when they were applied.
pub(crate) const REPLY_IDS_AT_APPLY: bool = true;
