//! The payloads inside frames: the peer handshake, Raft messages, and the client protocol, in
//! a compact binary form. Decoding checks every length against what is left, so a malformed
//! payload is an error, never a panic or a huge allocation.

use crate::limits::REQUEST_COMMANDS_MAX;
use crate::sessions::SessionRefusal;
use crate::status::StatusReport;
use replog_core::{
    AppendOutcome, Body, Bytes, ClientId, ClientRequest, Entry, LogIndex, Membership, Message, NodeId,
    Payload, SnapshotMeta, Term,
};
use std::fmt;

/// Everything that travels on a connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    /// First frame of a peer connection: who is calling (its listen address, name and id),
    /// and the configuration it bootstrapped with, if it has (a fresh node learns from it
    /// whether the cluster it was told of exists already, and with whom).
    Hello {
        address: String,
        name: String,
        id: NodeId,
        bootstrap: Option<Membership>,
        /// The addresses of a new cluster's nodes as the caller was told them (its `-p` flags and
        /// its own address, sorted); empty if it bootstraps nothing. Fresh nodes bootstrap only
        /// if every peer names the same set, so mismatched flags cannot make two clusters.
        cluster: Vec<String>,
    },
    Raft(Message),
    /// Client: append one command; answered by `AppendResult`.
    Append {
        request: u64,
        command: Vec<u8>,
    },
    /// Client: a session's request (exactly once, `sessions.rs`): its commands as one entry,
    /// appended only if `expect_last` (when given) is the log's last command ID. Answered by
    /// `AppendResult`: `Committed` (also for a retry of a committed request), `Refused`, ...
    SessionAppend {
        request: u64,
        client: u64,
        seq: u64,
        /// The commit index the client saw before it first sent this request.
        since: u64,
        expect_last: Option<u64>,
        commands: Vec<Vec<u8>>,
    },
    /// Client: up to `max` entries from `from` on, with the commit index. A linearizable query
    /// is answered by the leader only after it confirmed its leadership with a quorum
    /// (ReadIndex), so it reflects every append acknowledged before it was sent.
    Query {
        from: u64,
        max: u32,
        linearizable: bool,
    },
    /// The answer to a linearizable query at a node that cannot serve it: ask `leader` (when
    /// known) instead, or retry.
    Redirect {
        leader: Option<String>,
    },
    /// Client: the node's status as JSON.
    Status,
    AppendResult {
        request: u64,
        result: AppendResult,
    },
    /// The answer to `Query`: the node's commit and last index, the first index and command ID
    /// it still holds (earlier ones were trimmed), and a page of its log.
    QueryResult {
        commit: u64,
        first: u64,
        first_id: u64,
        last_index: u64,
        entries: Vec<QueriedEntry>,
    },
    /// Client: snapshot and drop the entries before the command with this ID (at most up to
    /// the commit index). Answered by `TrimResult`.
    Trim {
        before_id: u64,
    },
    /// The answer to a request the node could not serve, and why (a query that found damaged
    /// data on disk, ...).
    Failed {
        reason: String,
    },
    /// Client: hand leadership to the member at `to` (empty: the most up-to-date follower).
    /// Answered by `TransferStarted`, or `Redirect` by a node that does not lead.
    TransferLeader {
        to: String,
    },
    /// The answer to `TransferLeader`: the leader is handing over to this member.
    TransferStarted {
        to: String,
    },
    /// The answer to `Trim`: the first index and command ID the node still holds.
    TrimResult {
        first: u64,
        first_id: u64,
    },
    /// The answer to `Status`, as JSON on the wire.
    StatusResult(StatusReport),
    /// Client: change the cluster's membership, one server at a time. Answered by
    /// `MembershipChanged` once the change committed, `Failed` with the reason the leader
    /// refused it (nothing changed), or `Redirect`.
    ChangeMembership(MemberRequest),
    /// The answer to `ChangeMembership`: the configuration entry's index, committed.
    MembershipChanged {
        index: u64,
    },
    /// Client: up to `max` committed client commands from the one with ID `from_id` on, in ID
    /// order. Answered by `CommandsResult`, or `Failed` if IDs from `from_id` on were trimmed.
    /// A linearizable read is answered by the leader only after it confirmed its leadership
    /// with a quorum (ReadIndex), as `Query` is; a non-leader answers `Redirect`.
    ReadCommands {
        from_id: u64,
        max: u32,
        linearizable: bool,
    },
    /// The answer to `ReadCommands`: the first command ID the node still holds (earlier ones
    /// were trimmed), the ID of its last committed command (0 if none), and committed commands
    /// from the asked ID on (empty if it is past `last_id`; at least one otherwise, so a client
    /// paging through always moves on).
    CommandsResult {
        first_id: u64,
        last_id: u64,
        commands: Vec<CommandRecord>,
    },
    /// Client: is the node healthy (a leader confirmed by a quorum within the last election
    /// timeout, and a commit index that moves or has nothing to do; `metrics.rs`)? Answered by
    /// `HealthResult`.
    Health,
    /// The answer to `Health`: healthy, or why not in one line.
    HealthResult {
        ok: bool,
        reason: String,
    },
}

/// One committed client command, by ID: what `ReadCommands` answers with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommandRecord {
    /// Its position among client commands since the log began (`query`'s `ID:`).
    pub id: u64,
    /// The index of the log entry that holds it.
    pub index: u64,
    /// That entry's term.
    pub term: u64,
    /// The command's bytes.
    pub data: Vec<u8>,
}

/// A membership change as a client asks for it: by address (the node finds the member), with
/// the new node's id for an addition (the client asks the new node for it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberRequest {
    pub action: MemberAction,
    /// The member's address (`host:port`, as the node was started with `-a`).
    pub address: String,
    /// For `Add`: the new node's id (its `status` tells it); ignored otherwise.
    pub id: NodeId,
    /// Skip the check that enough voters stay reachable.
    pub force: bool,
}

/// What a `MemberRequest` does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemberAction {
    /// Add as a learner the leader promotes once caught up.
    Add,
    /// Add as a learner that stays one.
    AddLearner,
    /// Make a learner a voter.
    Promote,
    /// Remove a member.
    Remove,
}

impl Frame {
    /// The frame's kind, for messages about it (`append`, `query-result`, ...).
    pub fn name(&self) -> &'static str {
        match self {
            Frame::Hello { .. } => "hello",
            Frame::Raft(_) => "raft",
            Frame::Append { .. } => "append",
            Frame::SessionAppend { .. } => "session-append",
            Frame::Query { .. } => "query",
            Frame::Status => "status",
            Frame::Redirect { .. } => "redirect",
            Frame::AppendResult { .. } => "append-result",
            Frame::QueryResult { .. } => "query-result",
            Frame::Trim { .. } => "trim",
            Frame::Failed { .. } => "failed",
            Frame::TransferLeader { .. } => "transfer-leader",
            Frame::TransferStarted { .. } => "transfer-started",
            Frame::TrimResult { .. } => "trim-result",
            Frame::StatusResult { .. } => "status-result",
            Frame::ChangeMembership(_) => "change-membership",
            Frame::MembershipChanged { .. } => "membership-changed",
            Frame::ReadCommands { .. } => "read-commands",
            Frame::CommandsResult { .. } => "commands-result",
            Frame::Health => "health",
            Frame::HealthResult { .. } => "health-result",
        }
    }
}

/// One entry of a query answer, with the ID users see for a client command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueriedEntry {
    /// The entry.
    pub entry: Entry,
    /// Its position among client commands (`query`'s `ID:`), computed by the node that holds
    /// the log; `None` exactly for the leaders' no-op entries, which are not client commands.
    pub id: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AppendResult {
    /// Committed at Raft `index` in `term`; `id` is the position of its (first) command among
    /// client commands, and `count` how many commands the entry holds (IDs `id..id + count`).
    /// `recognised`: a session's retry the leader answered with the outcome of the append it
    /// repeats (committed before, or already in its log), instead of appending it again.
    Committed { index: u64, term: u64, id: u64, count: u64, recognised: bool },
    /// A session's request refused by the leader; nothing appended.
    Refused(SessionRefusal),
    /// Not the leader; the leader's client address if known.
    NotLeader { leader: Option<String> },
    /// Refused or uncertain; the text says which and what to do.
    Failed { reason: String, retry: bool },
    /// Refused for good: the command is larger than `limit` bytes, the most one frame carries.
    TooLarge { bytes: u64, limit: u64 },
}

/// Why a payload could not be decoded. Any of them means the sender cannot be trusted: the
/// connection closes.
#[derive(Debug, PartialEq, Eq)]
pub enum CodecError {
    /// The payload ends inside a field.
    Truncated,
    /// A flag byte is neither 0 nor 1.
    BadFlag,
    /// A text field is not UTF-8.
    NotUtf8,
    /// A count of entries that the rest of the payload could not hold.
    EntryCountExceedsPayload,
    /// An entry kind other than no-op (0) or command (1).
    UnknownEntryKind,
    /// Bytes left over after the frame.
    TrailingBytes,
    /// A first byte naming no frame.
    UnknownFrameKind,
    /// An append result tag naming no result.
    UnknownAppendResult,
    /// An AppendEntries answer tag naming no outcome.
    UnknownAppendOutcome,
    /// A Raft message tag naming no body.
    UnknownMessageBody,
    /// A query answer's command ID that is missing for a command or present for a no-op.
    CommandIdMismatch,
    /// A status answer that is not a status report (serde's reason).
    BadStatus(String),
    /// A configuration that is not one (serde's reason).
    BadMembership(String),
    /// A membership change naming no action.
    UnknownMemberAction,
    /// A session's request with no command.
    EmptyRequest,
    /// A session refusal tag naming no refusal.
    UnknownRefusal,
    /// A session's request with more commands than `REQUEST_COMMANDS_MAX`.
    TooManyCommands,
}

impl fmt::Display for CodecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("malformed payload: ")?;
        match self {
            CodecError::Truncated => f.write_str("truncated"),
            CodecError::BadFlag => f.write_str("flag is neither 0 nor 1"),
            CodecError::NotUtf8 => f.write_str("text is not UTF-8"),
            CodecError::EntryCountExceedsPayload => f.write_str("entry count exceeds the payload"),
            CodecError::UnknownEntryKind => f.write_str("unknown entry kind"),
            CodecError::TrailingBytes => f.write_str("trailing bytes"),
            CodecError::UnknownFrameKind => f.write_str("unknown frame kind"),
            CodecError::UnknownAppendResult => f.write_str("unknown append result"),
            CodecError::UnknownAppendOutcome => f.write_str("unknown append outcome"),
            CodecError::UnknownMessageBody => f.write_str("unknown message body"),
            CodecError::CommandIdMismatch => f.write_str("command id does not match the entry kind"),
            CodecError::BadStatus(why) => write!(f, "bad status report: {why}"),
            CodecError::BadMembership(why) => write!(f, "bad configuration: {why}"),
            CodecError::UnknownMemberAction => f.write_str("unknown membership change"),
            CodecError::EmptyRequest => f.write_str("a request with no command"),
            CodecError::UnknownRefusal => f.write_str("unknown session refusal"),
            CodecError::TooManyCommands => {
                write!(f, "more than {REQUEST_COMMANDS_MAX} commands in one append")
            }
        }
    }
}

impl std::error::Error for CodecError {}

const HELLO: u8 = 1;
const RAFT: u8 = 2;
const APPEND: u8 = 10;
const QUERY: u8 = 11;
const STATUS: u8 = 12;
const APPEND_RESULT: u8 = 20;
const QUERY_RESULT: u8 = 21;
const STATUS_RESULT: u8 = 22;
const REDIRECT: u8 = 23;
const TRIM: u8 = 13;
const TRIM_RESULT: u8 = 24;
const FAILED: u8 = 25;
const TRANSFER_LEADER: u8 = 14;
const TRANSFER_STARTED: u8 = 26;
const CHANGE_MEMBERSHIP: u8 = 15;
const MEMBERSHIP_CHANGED: u8 = 27;
const SESSION_APPEND: u8 = 16;
const READ_COMMANDS: u8 = 19;
const COMMANDS_RESULT: u8 = 29;
const HEALTH: u8 = 17;
const HEALTH_RESULT: u8 = 28;

/// What one entry's encoding adds to its command: index, term, kind and length. Also its
/// smallest encoding (a no-op), which bounds a claimed count.
pub const ENTRY_BYTES_MIN: usize = 8 + 8 + 1 + 4;
/// What one entry of a query answer adds to its command: the entry's and its command ID's.
pub const QUERIED_ENTRY_BYTES_MIN: usize = ENTRY_BYTES_MIN + 8;
/// An AppendEntries payload besides its entries: frame kind, from, to, term, body kind,
/// previous index and term, leader commit, sequence number, entry count.
pub const APPEND_ENTRIES_HEADER_BYTES: usize = 1 + 8 * 3 + 1 + 8 * 4 + 4;
/// The most bytes a configuration's JSON may take (a change that would make it longer is
/// refused): it travels in snapshot chunks beside their data.
pub const MEMBERSHIP_JSON_BYTES_MAX: usize = 64 * 1024;
/// A snapshot chunk's payload besides its bytes: frame kind, from, to, term, body kind, last
/// index and term, the configuration (length and JSON), total, checksum, offset, length.
pub const SNAPSHOT_REQUEST_HEADER_BYTES: usize =
    1 + 8 * 3 + 1 + 8 * 2 + 4 + MEMBERSHIP_JSON_BYTES_MAX + 8 * 3 + 4;
/// A client's append payload besides its command: frame kind, request id, length.
pub const APPEND_HEADER_BYTES: usize = 1 + 8 + 4;
/// A query answer's payload besides its entries: frame kind, commit, first index, first ID,
/// last index, entry count.
pub const QUERY_RESULT_HEADER_BYTES: usize = 1 + 8 * 4 + 4;
/// What one command of a `CommandsResult` adds to its bytes: ID, index, term, length. Also its
/// smallest encoding, which bounds a claimed count.
pub const COMMAND_RECORD_BYTES_MIN: usize = 8 * 3 + 4;
/// A `CommandsResult` payload besides its commands: frame kind, first ID, last ID, count.
pub const COMMANDS_RESULT_HEADER_BYTES: usize = 1 + 8 * 2 + 4;

impl QueriedEntry {
    /// How many bytes `entry` takes in a query answer.
    pub fn encoded_bytes(entry: &Entry) -> usize {
        QUERIED_ENTRY_BYTES_MIN
            + match &entry.payload {
                Payload::Noop => 0,
                Payload::Command(data) => data.len(),
                Payload::Config(membership) => membership_json(membership).len(),
                Payload::Request(request) => request_extra_bytes(&request.commands),
            }
    }
}

/// What a session's request adds to an entry's encoding beyond `ENTRY_BYTES_MIN`: client, seq
/// and count, and each command with its length. The limits keep it within `COMMAND_BYTES_MAX`,
/// so a request fits wherever the largest command does.
pub fn request_extra_bytes<T: AsRef<[u8]>>(commands: &[T]) -> usize {
    8 + 8 + commands.iter().map(|command| 4 + command.as_ref().len()).sum::<usize>()
}

pub fn encode(frame: &Frame, out: &mut Vec<u8>) {
    match frame {
        Frame::Hello { address, name, id, bootstrap, cluster } => {
            out.push(HELLO);
            put_bytes(out, address.as_bytes());
            put_bytes(out, name.as_bytes());
            put_u64(out, id.0);
            put_bytes(out, &bootstrap.as_ref().map_or_else(Vec::new, membership_json));
            put_bytes(out, cluster.join("\n").as_bytes());
        }
        Frame::ChangeMembership(request) => {
            out.push(CHANGE_MEMBERSHIP);
            out.push(match request.action {
                MemberAction::Add => 0,
                MemberAction::AddLearner => 1,
                MemberAction::Promote => 2,
                MemberAction::Remove => 3,
            });
            put_bytes(out, request.address.as_bytes());
            put_u64(out, request.id.0);
            out.push(u8::from(request.force));
        }
        Frame::MembershipChanged { index } => {
            out.push(MEMBERSHIP_CHANGED);
            put_u64(out, *index);
        }
        Frame::Raft(message) => {
            out.push(RAFT);
            encode_message(message, out);
        }
        Frame::Append { request, command } => {
            out.push(APPEND);
            put_u64(out, *request);
            put_bytes(out, command);
        }
        Frame::SessionAppend { request, client, seq, since, expect_last, commands } => {
            out.push(SESSION_APPEND);
            for value in [*request, *client, *seq, *since] {
                put_u64(out, value);
            }
            out.push(u8::from(expect_last.is_some()));
            put_u64(out, expect_last.unwrap_or(0));
            out.extend_from_slice(&(commands.len() as u32).to_be_bytes());
            for command in commands {
                put_bytes(out, command);
            }
        }
        Frame::Query { from, max, linearizable } => {
            out.push(QUERY);
            put_u64(out, *from);
            out.extend_from_slice(&max.to_be_bytes());
            out.push(u8::from(*linearizable));
        }
        Frame::Redirect { leader } => {
            out.push(REDIRECT);
            put_bytes(out, leader.as_deref().unwrap_or("").as_bytes());
        }
        Frame::Status => out.push(STATUS),
        Frame::AppendResult { request, result } => {
            out.push(APPEND_RESULT);
            put_u64(out, *request);
            match result {
                // One new command: the answer clients of earlier versions read (tag 0).
                AppendResult::Committed { index, term, id, count: 1, recognised: false } => {
                    out.push(0);
                    for value in [*index, *term, *id] {
                        put_u64(out, value);
                    }
                }
                AppendResult::Committed { index, term, id, count, recognised } => {
                    out.push(5);
                    for value in [*index, *term, *id, *count] {
                        put_u64(out, value);
                    }
                    out.push(u8::from(*recognised));
                }
                AppendResult::Refused(refusal) => {
                    out.push(4);
                    put_refusal(out, refusal);
                }
                AppendResult::NotLeader { leader } => {
                    out.push(1);
                    put_bytes(out, leader.as_deref().unwrap_or("").as_bytes());
                }
                AppendResult::Failed { reason, retry } => {
                    out.push(2);
                    out.push(u8::from(*retry));
                    put_bytes(out, reason.as_bytes());
                }
                AppendResult::TooLarge { bytes, limit } => {
                    out.push(3);
                    put_u64(out, *bytes);
                    put_u64(out, *limit);
                }
            }
        }
        Frame::QueryResult { commit, first, first_id, last_index, entries } => {
            out.push(QUERY_RESULT);
            put_u64(out, *commit);
            put_u64(out, *first);
            put_u64(out, *first_id);
            put_u64(out, *last_index);
            put_queried_entries(out, entries);
        }
        Frame::Failed { reason } => {
            out.push(FAILED);
            put_bytes(out, reason.as_bytes());
        }
        Frame::TransferLeader { to } => {
            out.push(TRANSFER_LEADER);
            put_bytes(out, to.as_bytes());
        }
        Frame::TransferStarted { to } => {
            out.push(TRANSFER_STARTED);
            put_bytes(out, to.as_bytes());
        }
        Frame::Trim { before_id } => {
            out.push(TRIM);
            put_u64(out, *before_id);
        }
        Frame::TrimResult { first, first_id } => {
            out.push(TRIM_RESULT);
            put_u64(out, *first);
            put_u64(out, *first_id);
        }
        Frame::StatusResult(report) => {
            out.push(STATUS_RESULT);
            put_bytes(out, report.to_json().as_bytes());
        }
        Frame::ReadCommands { from_id, max, linearizable } => {
            out.push(READ_COMMANDS);
            put_u64(out, *from_id);
            out.extend_from_slice(&max.to_be_bytes());
            out.push(u8::from(*linearizable));
        }
        Frame::CommandsResult { first_id, last_id, commands } => {
            out.push(COMMANDS_RESULT);
            put_u64(out, *first_id);
            put_u64(out, *last_id);
            put_command_records(out, commands);
        }
        Frame::Health => out.push(HEALTH),
        Frame::HealthResult { ok, reason } => {
            out.push(HEALTH_RESULT);
            out.push(u8::from(*ok));
            put_bytes(out, reason.as_bytes());
        }
    }
}

fn encode_message(message: &Message, out: &mut Vec<u8>) {
    put_u64(out, message.from.0);
    put_u64(out, message.to.0);
    put_u64(out, message.term.0);
    match &message.body {
        Body::VoteRequest { pre_vote, last_log_index, last_log_term, transfer } => {
            out.push(0);
            out.push(u8::from(*pre_vote));
            put_u64(out, last_log_index.0);
            put_u64(out, last_log_term.0);
            out.push(u8::from(*transfer));
        }
        Body::TimeoutNow { last_log_index, last_log_term } => {
            out.push(6);
            put_u64(out, last_log_index.0);
            put_u64(out, last_log_term.0);
        }
        Body::VoteResponse { pre_vote, granted } => {
            out.push(1);
            out.push(u8::from(*pre_vote));
            out.push(u8::from(*granted));
        }
        Body::AppendRequest { prev_log_index, prev_log_term, entries, leader_commit, seq } => {
            out.push(2);
            put_u64(out, prev_log_index.0);
            put_u64(out, prev_log_term.0);
            put_u64(out, leader_commit.0);
            put_u64(out, *seq);
            put_entries(out, entries);
        }
        Body::AppendResponse { outcome, seq } => {
            out.push(3);
            put_u64(out, *seq);
            match outcome {
                AppendOutcome::Accepted { match_index } => {
                    out.push(0);
                    put_u64(out, match_index.0);
                }
                AppendOutcome::Rejected { prev_log_index, conflict_index, conflict_term } => {
                    out.push(1);
                    put_u64(out, prev_log_index.0);
                    put_u64(out, conflict_index.0);
                    out.push(u8::from(conflict_term.is_some()));
                    put_u64(out, conflict_term.map_or(0, |t| t.0));
                }
            }
        }
        Body::SnapshotRequest { meta, membership, total, checksum, offset, chunk } => {
            out.push(4);
            put_u64(out, meta.index.0);
            put_u64(out, meta.term.0);
            put_bytes(out, &membership_json(membership));
            put_u64(out, *total);
            put_u64(out, *checksum);
            put_u64(out, *offset);
            put_bytes(out, chunk.as_slice());
        }
        Body::SnapshotResponse { meta, received, installed } => {
            out.push(5);
            put_u64(out, meta.index.0);
            put_u64(out, meta.term.0);
            put_u64(out, *received);
            out.push(u8::from(*installed));
        }
    }
}

fn put_u64(out: &mut Vec<u8>, value: u64) {
    out.extend_from_slice(&value.to_be_bytes());
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
    out.extend_from_slice(bytes);
}

fn put_entries(out: &mut Vec<u8>, entries: &[Entry]) {
    out.extend_from_slice(&(entries.len() as u32).to_be_bytes());
    for entry in entries {
        put_entry(out, entry);
    }
}

/// Each entry followed by its command ID (0 for a no-op: IDs start at 1).
fn put_queried_entries(out: &mut Vec<u8>, entries: &[QueriedEntry]) {
    out.extend_from_slice(&(entries.len() as u32).to_be_bytes());
    for QueriedEntry { entry, id } in entries {
        put_entry(out, entry);
        put_u64(out, id.unwrap_or(0));
    }
}

fn put_entry(out: &mut Vec<u8>, entry: &Entry) {
    put_u64(out, entry.index.0);
    put_u64(out, entry.term.0);
    match &entry.payload {
        Payload::Noop => {
            out.push(0);
            put_bytes(out, &[]);
        }
        Payload::Command(data) => {
            out.push(1);
            put_bytes(out, data.as_slice());
        }
        Payload::Config(membership) => {
            out.push(2);
            put_bytes(out, &membership_json(membership));
        }
        Payload::Request(request) => {
            out.push(3);
            put_request(out, request);
        }
    }
}

/// A session's request: client, seq, then its commands (count, then each as bytes).
fn put_request(out: &mut Vec<u8>, request: &ClientRequest) {
    put_u64(out, request.client.0);
    put_u64(out, request.seq);
    out.extend_from_slice(&(request.commands.len() as u32).to_be_bytes());
    for command in &request.commands {
        put_bytes(out, command.as_slice());
    }
}

fn put_refusal(out: &mut Vec<u8>, refusal: &SessionRefusal) {
    match refusal {
        SessionRefusal::UnknownSession => out.push(0),
        SessionRefusal::SessionsDropped { commit } => {
            out.push(1);
            put_u64(out, *commit);
        }
        SessionRefusal::Forgotten { oldest } => {
            out.push(2);
            put_u64(out, *oldest);
        }
        SessionRefusal::TooFarAhead { newest, window } => {
            out.push(3);
            put_u64(out, *newest);
            put_u64(out, *window);
        }
        SessionRefusal::ConditionFailed { last_id } => {
            out.push(4);
            put_u64(out, *last_id);
        }
        SessionRefusal::NotReady => out.push(5),
    }
}

/// A configuration on the wire: its JSON (small, rare, and the same text as in the log files).
fn membership_json(membership: &Membership) -> Vec<u8> {
    serde_json::to_vec(membership).expect("a configuration serializes")
}

/// A cursor over a payload that refuses to read past its end.
struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], CodecError> {
        if self.bytes.len() < n {
            return Err(CodecError::Truncated);
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, CodecError> {
        Ok(self.take(1)?[0])
    }

    fn flag(&mut self) -> Result<bool, CodecError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(CodecError::BadFlag),
        }
    }

    fn u32(&mut self) -> Result<u32, CodecError> {
        Ok(u32::from_be_bytes(self.take(4)?.try_into().expect("4 bytes")))
    }

    fn u64(&mut self) -> Result<u64, CodecError> {
        Ok(u64::from_be_bytes(self.take(8)?.try_into().expect("8 bytes")))
    }

    fn bytes(&mut self) -> Result<&'a [u8], CodecError> {
        let len = self.u32()? as usize;
        self.take(len)
    }

    fn text(&mut self) -> Result<String, CodecError> {
        String::from_utf8(self.bytes()?.to_vec()).map_err(|_| CodecError::NotUtf8)
    }

    fn entries(&mut self) -> Result<Vec<Entry>, CodecError> {
        let count = self.count(ENTRY_BYTES_MIN)?;
        (0..count).map(|_| self.entry()).collect()
    }

    fn queried_entries(&mut self) -> Result<Vec<QueriedEntry>, CodecError> {
        let count = self.count(QUERIED_ENTRY_BYTES_MIN)?;
        let mut entries = Vec::with_capacity(count);
        for _ in 0..count {
            let entry = self.entry()?;
            let id = match (&entry.payload, self.u64()?) {
                (Payload::Noop | Payload::Config(_), 0) => None,
                (Payload::Command(_) | Payload::Request(_), id) if id > 0 => Some(id),
                _ => return Err(CodecError::CommandIdMismatch),
            };
            entries.push(QueriedEntry { entry, id });
        }
        Ok(entries)
    }

    /// A count of items that each take at least `bytes_min`, checked against what is left
    /// before anything is allocated for them.
    fn count(&mut self, bytes_min: usize) -> Result<usize, CodecError> {
        let count = self.u32()? as usize;
        if count.saturating_mul(bytes_min) > self.bytes.len() {
            return Err(CodecError::EntryCountExceedsPayload);
        }
        Ok(count)
    }

    fn entry(&mut self) -> Result<Entry, CodecError> {
        let index = LogIndex(self.u64()?);
        let term = Term(self.u64()?);
        let payload = match self.u8()? {
            0 => {
                self.bytes()?;
                Payload::Noop
            }
            1 => Payload::Command(Bytes::from(self.bytes()?)),
            2 => Payload::Config(self.membership()?),
            3 => Payload::Request(self.request()?),
            _ => return Err(CodecError::UnknownEntryKind),
        };
        Ok(Entry { index, term, payload })
    }

    fn refusal(&mut self) -> Result<SessionRefusal, CodecError> {
        Ok(match self.u8()? {
            0 => SessionRefusal::UnknownSession,
            1 => SessionRefusal::SessionsDropped { commit: self.u64()? },
            2 => SessionRefusal::Forgotten { oldest: self.u64()? },
            3 => SessionRefusal::TooFarAhead { newest: self.u64()?, window: self.u64()? },
            4 => SessionRefusal::ConditionFailed { last_id: self.u64()? },
            5 => SessionRefusal::NotReady,
            _ => return Err(CodecError::UnknownRefusal),
        })
    }

    fn request(&mut self) -> Result<ClientRequest, CodecError> {
        let client = ClientId(self.u64()?);
        let seq = self.u64()?;
        let count = self.count(4)?;
        if count == 0 {
            return Err(CodecError::EmptyRequest);
        }
        if count > REQUEST_COMMANDS_MAX {
            return Err(CodecError::TooManyCommands);
        }
        let commands = (0..count).map(|_| self.bytes().map(Bytes::from)).collect::<Result<Vec<_>, _>>()?;
        Ok(ClientRequest { client, seq, commands })
    }

    fn membership(&mut self) -> Result<Membership, CodecError> {
        serde_json::from_slice(self.bytes()?).map_err(|error| CodecError::BadMembership(error.to_string()))
    }

    fn finish<T>(self, value: T) -> Result<T, CodecError> {
        if self.bytes.is_empty() {
            Ok(value)
        } else {
            Err(CodecError::TrailingBytes)
        }
    }
}

pub fn decode(payload: &[u8]) -> Result<Frame, CodecError> {
    let mut reader = Reader { bytes: payload };
    let frame = match reader.u8()? {
        HELLO => {
            let (address, name, id) = (reader.text()?, reader.text()?, NodeId(reader.u64()?));
            let bootstrap = reader.bytes()?;
            let bootstrap = if bootstrap.is_empty() {
                None
            } else {
                Some(
                    serde_json::from_slice(bootstrap)
                        .map_err(|e| CodecError::BadMembership(e.to_string()))?,
                )
            };
            let cluster = reader.text()?;
            let cluster = if cluster.is_empty() {
                Vec::new()
            } else {
                cluster.split('\n').map(str::to_string).collect()
            };
            Frame::Hello { address, name, id, bootstrap, cluster }
        }
        CHANGE_MEMBERSHIP => {
            let action = match reader.u8()? {
                0 => MemberAction::Add,
                1 => MemberAction::AddLearner,
                2 => MemberAction::Promote,
                3 => MemberAction::Remove,
                _ => return Err(CodecError::UnknownMemberAction),
            };
            let (address, id, force) = (reader.text()?, NodeId(reader.u64()?), reader.flag()?);
            Frame::ChangeMembership(MemberRequest { action, address, id, force })
        }
        MEMBERSHIP_CHANGED => Frame::MembershipChanged { index: reader.u64()? },
        RAFT => Frame::Raft(decode_message(&mut reader)?),
        APPEND => Frame::Append { request: reader.u64()?, command: reader.bytes()?.to_vec() },
        SESSION_APPEND => {
            let (request, client, seq, since) = (reader.u64()?, reader.u64()?, reader.u64()?, reader.u64()?);
            let conditional = reader.flag()?;
            let expected = reader.u64()?;
            let count = reader.count(4)?;
            if count > REQUEST_COMMANDS_MAX {
                return Err(CodecError::TooManyCommands);
            }
            let commands =
                (0..count).map(|_| reader.bytes().map(<[u8]>::to_vec)).collect::<Result<_, _>>()?;
            Frame::SessionAppend {
                request,
                client,
                seq,
                since,
                expect_last: conditional.then_some(expected),
                commands,
            }
        }
        QUERY => Frame::Query { from: reader.u64()?, max: reader.u32()?, linearizable: reader.flag()? },
        REDIRECT => {
            let leader = reader.text()?;
            Frame::Redirect { leader: (!leader.is_empty()).then_some(leader) }
        }
        STATUS => Frame::Status,
        APPEND_RESULT => {
            let request = reader.u64()?;
            let result = match reader.u8()? {
                0 => AppendResult::Committed {
                    index: reader.u64()?,
                    term: reader.u64()?,
                    id: reader.u64()?,
                    count: 1,
                    recognised: false,
                },
                5 => AppendResult::Committed {
                    index: reader.u64()?,
                    term: reader.u64()?,
                    id: reader.u64()?,
                    count: reader.u64()?,
                    recognised: reader.flag()?,
                },
                1 => {
                    let leader = reader.text()?;
                    AppendResult::NotLeader { leader: (!leader.is_empty()).then_some(leader) }
                }
                2 => {
                    let retry = reader.flag()?;
                    AppendResult::Failed { retry, reason: reader.text()? }
                }
                3 => AppendResult::TooLarge { bytes: reader.u64()?, limit: reader.u64()? },
                4 => AppendResult::Refused(reader.refusal()?),
                _ => return Err(CodecError::UnknownAppendResult),
            };
            Frame::AppendResult { request, result }
        }
        QUERY_RESULT => Frame::QueryResult {
            commit: reader.u64()?,
            first: reader.u64()?,
            first_id: reader.u64()?,
            last_index: reader.u64()?,
            entries: reader.queried_entries()?,
        },
        TRIM => Frame::Trim { before_id: reader.u64()? },
        FAILED => Frame::Failed { reason: reader.text()? },
        TRANSFER_LEADER => Frame::TransferLeader { to: reader.text()? },
        TRANSFER_STARTED => Frame::TransferStarted { to: reader.text()? },
        TRIM_RESULT => Frame::TrimResult { first: reader.u64()?, first_id: reader.u64()? },
        STATUS_RESULT => Frame::StatusResult(
            StatusReport::from_json(&reader.text()?).map_err(|e| CodecError::BadStatus(e.to_string()))?,
        ),
        READ_COMMANDS => {
            Frame::ReadCommands { from_id: reader.u64()?, max: reader.u32()?, linearizable: reader.flag()? }
        }
        COMMANDS_RESULT => Frame::CommandsResult {
            first_id: reader.u64()?,
            last_id: reader.u64()?,
            commands: command_records(&mut reader)?,
        },
        HEALTH => Frame::Health,
        HEALTH_RESULT => Frame::HealthResult { ok: reader.flag()?, reason: reader.text()? },
        _ => return Err(CodecError::UnknownFrameKind),
    };
    reader.finish(frame)
}

fn decode_message(reader: &mut Reader<'_>) -> Result<Message, CodecError> {
    let from = NodeId(reader.u64()?);
    let to = NodeId(reader.u64()?);
    let term = Term(reader.u64()?);
    let body = match reader.u8()? {
        0 => Body::VoteRequest {
            pre_vote: reader.flag()?,
            last_log_index: LogIndex(reader.u64()?),
            last_log_term: Term(reader.u64()?),
            transfer: reader.flag()?,
        },
        6 => Body::TimeoutNow { last_log_index: LogIndex(reader.u64()?), last_log_term: Term(reader.u64()?) },
        1 => Body::VoteResponse { pre_vote: reader.flag()?, granted: reader.flag()? },
        2 => {
            let prev_log_index = LogIndex(reader.u64()?);
            let prev_log_term = Term(reader.u64()?);
            let leader_commit = LogIndex(reader.u64()?);
            let seq = reader.u64()?;
            Body::AppendRequest {
                prev_log_index,
                prev_log_term,
                entries: reader.entries()?,
                leader_commit,
                seq,
            }
        }
        3 => {
            let seq = reader.u64()?;
            let outcome = match reader.u8()? {
                0 => AppendOutcome::Accepted { match_index: LogIndex(reader.u64()?) },
                1 => {
                    let prev_log_index = LogIndex(reader.u64()?);
                    let conflict_index = LogIndex(reader.u64()?);
                    let has_term = reader.flag()?;
                    let term = Term(reader.u64()?);
                    AppendOutcome::Rejected {
                        prev_log_index,
                        conflict_index,
                        conflict_term: has_term.then_some(term),
                    }
                }
                _ => return Err(CodecError::UnknownAppendOutcome),
            };
            Body::AppendResponse { outcome, seq }
        }
        4 => {
            let meta = SnapshotMeta { index: LogIndex(reader.u64()?), term: Term(reader.u64()?) };
            let membership = reader.membership()?;
            let (total, checksum, offset) = (reader.u64()?, reader.u64()?, reader.u64()?);
            let chunk = Bytes::from(reader.bytes()?);
            Body::SnapshotRequest { meta, membership, total, checksum, offset, chunk }
        }
        5 => {
            let meta = SnapshotMeta { index: LogIndex(reader.u64()?), term: Term(reader.u64()?) };
            let received = reader.u64()?;
            let installed = reader.flag()?;
            Body::SnapshotResponse { meta, received, installed }
        }
        _ => return Err(CodecError::UnknownMessageBody),
    };
    Ok(Message { from, to, term, body })
}

impl CommandRecord {
    /// How many bytes a command of `data_bytes` bytes takes in a `CommandsResult`.
    pub fn encoded_bytes(data_bytes: usize) -> usize {
        COMMAND_RECORD_BYTES_MIN + data_bytes
    }
}

fn put_command_records(out: &mut Vec<u8>, commands: &[CommandRecord]) {
    out.extend_from_slice(&(commands.len() as u32).to_be_bytes());
    for CommandRecord { id, index, term, data } in commands {
        put_u64(out, *id);
        put_u64(out, *index);
        put_u64(out, *term);
        put_bytes(out, data);
    }
}

fn command_records(reader: &mut Reader<'_>) -> Result<Vec<CommandRecord>, CodecError> {
    let count = reader.count(COMMAND_RECORD_BYTES_MIN)?;
    let mut commands = Vec::with_capacity(count);
    for _ in 0..count {
        let (id, index, term) = (reader.u64()?, reader.u64()?, reader.u64()?);
        commands.push(CommandRecord { id, index, term, data: reader.bytes()?.to_vec() });
    }
    Ok(commands)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(frame: Frame) {
        let mut out = Vec::new();
        encode(&frame, &mut out);
        assert_eq!(decode(&out), Ok(frame.clone()));
        // Every strict prefix is an error, never a panic.
        for cut in 0..out.len() {
            assert!(decode(&out[..cut]).is_err(), "prefix {cut} of {frame:?} decoded");
        }
    }

    #[test]
    fn every_frame_round_trips_and_prefixes_fail() {
        let entry = |i, t, data: Option<&str>| Entry {
            index: LogIndex(i),
            term: Term(t),
            payload: data.map_or(Payload::Noop, |d| Payload::Command(Bytes::from(d))),
        };
        let message = |body| Message { from: NodeId(1), to: NodeId(2), term: Term(3), body };
        // Sessions: a request entry in AppendEntries, the client's frame, and the answers.
        let request = Entry {
            index: LogIndex(9),
            term: Term(3),
            payload: Payload::Request(ClientRequest {
                client: ClientId(0xfeed),
                seq: 4,
                commands: vec![Bytes::from("a"), Bytes::from(vec![0xff, 0])],
            }),
        };
        round_trip(Frame::Raft(message(Body::AppendRequest {
            prev_log_index: LogIndex(8),
            prev_log_term: Term(3),
            entries: vec![request],
            leader_commit: LogIndex(8),
            seq: 1,
        })));
        for expect_last in [None, Some(0), Some(41)] {
            round_trip(Frame::SessionAppend {
                request: 3,
                client: 0xfeed,
                seq: 4,
                since: 17,
                expect_last,
                commands: vec![b"a".to_vec(), Vec::new()],
            });
        }
        for (count, recognised) in [(1, false), (1, true), (2, false), (2, true)] {
            round_trip(Frame::AppendResult {
                request: 3,
                result: AppendResult::Committed { index: 9, term: 3, id: 12, count, recognised },
            });
        }
        for refusal in [
            SessionRefusal::UnknownSession,
            SessionRefusal::SessionsDropped { commit: 5 },
            SessionRefusal::Forgotten { oldest: 3 },
            SessionRefusal::TooFarAhead { newest: 4, window: 8 },
            SessionRefusal::ConditionFailed { last_id: 12 },
            SessionRefusal::NotReady,
        ] {
            round_trip(Frame::AppendResult { request: 3, result: AppendResult::Refused(refusal) });
        }
        round_trip(Frame::Hello {
            address: "127.0.0.1:8080".into(),
            name: "node1".into(),
            id: NodeId(7),
            bootstrap: None,
            cluster: Vec::new(),
        });
        round_trip(Frame::Hello {
            address: "127.0.0.1:8080".into(),
            name: "node1".into(),
            id: NodeId(7),
            bootstrap: Some(Membership::voters_only([NodeId(7), NodeId(8)])),
            cluster: vec!["127.0.0.1:8080".into(), "127.0.0.1:8081".into()],
        });
        for action in
            [MemberAction::Add, MemberAction::AddLearner, MemberAction::Promote, MemberAction::Remove]
        {
            let address = "127.0.0.1:8083".into();
            round_trip(Frame::ChangeMembership(MemberRequest {
                action,
                address,
                id: NodeId(9),
                force: true,
            }));
        }
        round_trip(Frame::MembershipChanged { index: 12 });
        round_trip(Frame::Raft(message(Body::VoteRequest {
            pre_vote: true,
            last_log_index: LogIndex(4),
            last_log_term: Term(2),
            transfer: true,
        })));
        round_trip(Frame::Raft(message(Body::TimeoutNow {
            last_log_index: LogIndex(9),
            last_log_term: Term(3),
        })));
        round_trip(Frame::Raft(message(Body::VoteResponse { pre_vote: false, granted: true })));
        let meta = SnapshotMeta { index: LogIndex(40), term: Term(3) };
        let mut membership = Membership::voters_only([NodeId(1), NodeId(2)]);
        membership.members.get_mut(&NodeId(2)).expect("member").address = "127.0.0.1:8082".into();
        round_trip(Frame::Raft(message(Body::SnapshotRequest {
            meta,
            membership: membership.clone(),
            total: 9,
            checksum: 0xdead_beef,
            offset: 4,
            chunk: Bytes::from("abcde"),
        })));
        round_trip(Frame::Raft(message(Body::SnapshotResponse { meta, received: 4, installed: true })));
        round_trip(Frame::Raft(message(Body::AppendRequest {
            prev_log_index: LogIndex(1),
            prev_log_term: Term(1),
            entries: vec![
                entry(2, 3, None),
                entry(3, 3, Some("x")),
                Entry { index: LogIndex(4), term: Term(3), payload: Payload::Config(membership) },
            ],
            leader_commit: LogIndex(1),
            seq: 9,
        })));
        round_trip(Frame::Raft(message(Body::AppendResponse {
            outcome: AppendOutcome::Rejected {
                prev_log_index: LogIndex(5),
                conflict_index: LogIndex(3),
                conflict_term: Some(Term(2)),
            },
            seq: 1,
        })));
        round_trip(Frame::Append { request: 7, command: b"user_login:alice".to_vec() });
        round_trip(Frame::Query { from: 1, max: 100, linearizable: true });
        round_trip(Frame::Redirect { leader: Some("127.0.0.1:8081".into()) });
        round_trip(Frame::Redirect { leader: None });
        round_trip(Frame::AppendResult {
            request: 7,
            result: AppendResult::NotLeader { leader: Some("a:1".into()) },
        });
        round_trip(Frame::AppendResult {
            request: 7,
            result: AppendResult::Failed { reason: "x".into(), retry: true },
        });
        round_trip(Frame::AppendResult { request: 7, result: AppendResult::TooLarge { bytes: 9, limit: 8 } });
        round_trip(Frame::Trim { before_id: 9 });
        round_trip(Frame::Failed { reason: "log-0001.jsonl line 3: bad".into() });
        round_trip(Frame::TransferLeader { to: "127.0.0.1:8081".into() });
        round_trip(Frame::TransferLeader { to: String::new() });
        round_trip(Frame::TransferStarted { to: "127.0.0.1:8081".into() });
        round_trip(Frame::TrimResult { first: 12, first_id: 9 });
        round_trip(Frame::QueryResult {
            commit: 1,
            first: 1,
            first_id: 1,
            last_index: 2,
            entries: vec![
                QueriedEntry { entry: entry(1, 1, None), id: None },
                QueriedEntry { entry: entry(2, 1, Some("a")), id: Some(1) },
            ],
        });
        let mut out = Vec::new();
        let noop_with_id = QueriedEntry { entry: entry(1, 1, None), id: Some(1) };
        encode(
            &Frame::QueryResult {
                commit: 1,
                first: 1,
                first_id: 1,
                last_index: 1,
                entries: vec![noop_with_id],
            },
            &mut out,
        );
        assert_eq!(decode(&out), Err(CodecError::CommandIdMismatch));
        round_trip(Frame::StatusResult(StatusReport {
            name: "node1".into(),
            address: "127.0.0.1:8080".parse().unwrap(),
            role: replog_core::RoleKind::Candidate,
            term: Term(2),
            leader: None,
            commit: LogIndex(1),
            last_index: LogIndex(2),
            durable_index: LogIndex(2),
            first_index: LogIndex(1),
            first_id: 1,
            cached_bytes: 40,
            peers: Vec::new(),
            id: "00000000000000ff".into(),
            members: Vec::new(),
            members_committed: false,
        }));
    }

    #[test]
    fn header_constants_match_the_encoding() {
        let entry =
            Entry { index: LogIndex(1), term: Term(1), payload: Payload::Command(Bytes::from("abc")) };
        let mut out = Vec::new();
        let append_entries = |entries| {
            Frame::Raft(Message {
                from: NodeId(1),
                to: NodeId(2),
                term: Term(1),
                body: Body::AppendRequest {
                    prev_log_index: LogIndex(0),
                    prev_log_term: Term(0),
                    entries,
                    leader_commit: LogIndex(0),
                    seq: 1,
                },
            })
        };
        encode(&append_entries(vec![entry.clone()]), &mut out);
        assert_eq!(out.len(), APPEND_ENTRIES_HEADER_BYTES + ENTRY_BYTES_MIN + 3);
        out.clear();
        encode(&Frame::Append { request: 1, command: b"abc".to_vec() }, &mut out);
        assert_eq!(out.len(), APPEND_HEADER_BYTES + 3);
        out.clear();
        let queried = QueriedEntry { entry: entry.clone(), id: Some(1) };
        encode(
            &Frame::QueryResult { commit: 1, first: 1, first_id: 1, last_index: 1, entries: vec![queried] },
            &mut out,
        );
        assert_eq!(out.len(), QUERY_RESULT_HEADER_BYTES + QueriedEntry::encoded_bytes(&entry));
    }

    #[test]
    fn absurd_counts_are_refused_before_allocating() {
        let mut out = vec![QUERY_RESULT];
        out.extend_from_slice(&[0; 32]);
        out.extend_from_slice(&u32::MAX.to_be_bytes());
        assert_eq!(decode(&out), Err(CodecError::EntryCountExceedsPayload));
        assert_eq!(decode(&[99]), Err(CodecError::UnknownFrameKind));
        let mut out = vec![STATUS_RESULT];
        put_bytes(&mut out, b"{}");
        assert!(matches!(decode(&out), Err(CodecError::BadStatus(_))));
    }

    #[test]
    fn reading_commands_round_trips_and_fits_its_header() {
        round_trip(Frame::ReadCommands { from_id: 1, max: 100, linearizable: false });
        round_trip(Frame::ReadCommands { from_id: u64::MAX, max: 0, linearizable: true });
        round_trip(Frame::CommandsResult { first_id: 1, last_id: 0, commands: Vec::new() });
        round_trip(Frame::Health);
        round_trip(Frame::HealthResult { ok: true, reason: String::new() });
        round_trip(Frame::HealthResult { ok: false, reason: "no leader known for 3.2 s".into() });
        let record = |id, data: &[u8]| CommandRecord { id, index: id + 1, term: 2, data: data.to_vec() };
        let commands = vec![record(7, b"user_login:alice"), record(8, b""), record(9, &[0xff, 0, 0xfe])];
        round_trip(Frame::CommandsResult { first_id: 3, last_id: 12, commands });
        let mut out = Vec::new();
        let frame = Frame::CommandsResult { first_id: 1, last_id: 1, commands: vec![record(1, b"abc")] };
        encode(&frame, &mut out);
        assert_eq!(out.len(), COMMANDS_RESULT_HEADER_BYTES + CommandRecord::encoded_bytes(3));
        // A count the payload cannot hold is refused before anything is allocated for it.
        let mut out = vec![COMMANDS_RESULT];
        out.extend_from_slice(&[0; 16]);
        out.extend_from_slice(&u32::MAX.to_be_bytes());
        assert_eq!(decode(&out), Err(CodecError::EntryCountExceedsPayload));
        assert_eq!(Frame::ReadCommands { from_id: 1, max: 1, linearizable: false }.name(), "read-commands");
    }
}
