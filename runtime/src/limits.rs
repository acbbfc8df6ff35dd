//! Size limits on the wire, derived from the frame limit and related to the core's byte
//! accounting at compile time, so that nothing the node accepts can later fail to fit a frame.

use crate::codec::{
    APPEND_ENTRIES_HEADER_BYTES, APPEND_HEADER_BYTES, COMMANDS_RESULT_HEADER_BYTES, COMMAND_RECORD_BYTES_MIN,
    ENTRY_BYTES_MIN, QUERIED_ENTRY_BYTES_MIN, QUERY_RESULT_HEADER_BYTES, SNAPSHOT_REQUEST_HEADER_BYTES,
};
pub use crate::frame::FRAME_BYTES_MAX;
use replog_core::ENTRY_OVERHEAD_BYTES;

/// Entry bytes in one AppendEntries, as the core counts them (`Config::message_bytes_max`):
/// the core's default, set explicitly so the relation below holds for what runs.
pub const MESSAGE_BYTES_MAX: u64 = 1024 * 1024;

/// The largest command a client may append. The core sends an entry larger than
/// `MESSAGE_BYTES_MAX` alone in its AppendEntries, so one command must fit a frame with that
/// message's header; a bigger one could never be replicated.
pub const COMMAND_BYTES_MAX: usize = FRAME_BYTES_MAX - APPEND_ENTRIES_HEADER_BYTES - ENTRY_BYTES_MIN;

/// The most commands one session append (one batch, one entry) may hold: a bound on what a
/// frame of tiny commands expands to in memory (a command costs far more as an object than its
/// 4 bytes on the wire).
pub const REQUEST_COMMANDS_MAX: usize = 10_000;

/// Most entries one query answer carries.
pub const QUERY_ENTRIES_MAX: u32 = 10_000;

/// Most bytes of entries one query answer carries (at least one entry always goes): the rest
/// of a frame after the answer's header.
pub const QUERY_PAGE_BYTES_MAX: usize = FRAME_BYTES_MAX - QUERY_RESULT_HEADER_BYTES;

/// Most bytes of commands one `CommandsResult` carries (at least one command always goes): the
/// rest of a frame after the answer's header.
pub const COMMANDS_PAGE_BYTES_MAX: usize = FRAME_BYTES_MAX - COMMANDS_RESULT_HEADER_BYTES;

// The core counts ENTRY_OVERHEAD_BYTES per entry on top of its command; the encoding adds no
// more, so entries the core fits in MESSAGE_BYTES_MAX encode to at most that many bytes.
const _: () = assert!(ENTRY_BYTES_MIN as u64 <= ENTRY_OVERHEAD_BYTES);
// A full AppendEntries fits a frame.
const _: () = assert!(MESSAGE_BYTES_MAX as usize + APPEND_ENTRIES_HEADER_BYTES <= FRAME_BYTES_MAX);
// A snapshot chunk (at most MESSAGE_BYTES_MAX: the core caps it there) fits a frame.
const _: () = assert!(MESSAGE_BYTES_MAX as usize + SNAPSHOT_REQUEST_HEADER_BYTES <= FRAME_BYTES_MAX);
// A client's append of the largest command fits a frame.
const _: () = assert!(APPEND_HEADER_BYTES + COMMAND_BYTES_MAX <= FRAME_BYTES_MAX);
// The largest command fits a query page alone, so paging always moves on.
const _: () = assert!(QUERIED_ENTRY_BYTES_MIN + COMMAND_BYTES_MAX <= QUERY_PAGE_BYTES_MAX);
// The largest command fits a page of commands alone, so reading by ID always moves on.
const _: () = assert!(COMMAND_RECORD_BYTES_MIN + COMMAND_BYTES_MAX <= COMMANDS_PAGE_BYTES_MAX);

#[cfg(test)]
mod tests {
    use super::*;
    use replog_core::{Config, NodeId};

    #[test]
    fn message_bytes_max_is_the_cores_default() {
        assert_eq!(Config::new(NodeId(1), Vec::new()).message_bytes_max, MESSAGE_BYTES_MAX);
    }
}
