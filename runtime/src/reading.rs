//! Reading the log by command ID: the node's side of `ReadCommands`. Client commands are
//! numbered from 1 since the log began (`query`'s `ID:`, stable across trims); a reader asks
//! for the committed ones from an ID on and pages through, or polls past the last to follow
//! the log (`replog follow`). Only committed commands are ever answered: they are final on
//! every node (state machine safety, §5.4.3), so a reader may move between nodes and resume
//! at the next ID without a gap or a duplicate.
//!
//! IDs and entries map through the driver, and this relies on no more than: `command_id(index)`
//! is the ID of the first command the entry at `index` holds (for an entry holding none, the
//! ID the next command takes), and `index_of_command(id)` is the index of the entry holding
//! command `id`. Which commands an entry holds is said by [`commands_of`] alone, so an entry
//! holding several commands (IDs `command_id(index)` to `command_id(index) + k - 1`) needs a
//! change there only.

use crate::codec::{CommandRecord, Frame};
use crate::driver::Driver;
use crate::fs::FileSystem;
use crate::limits::{COMMANDS_PAGE_BYTES_MAX, QUERY_ENTRIES_MAX};
use crate::storage::StorageError;
use replog_core::{Bytes, Payload};
use tracing::warn;

/// What a linearizable read answers with once the leader has confirmed it (ReadIndex).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ReadKind {
    /// A page of the log by index (`Query`).
    Log,
    /// Committed commands by ID (`ReadCommands`).
    Commands,
}

/// The client commands an entry's payload holds, in ID order: the first has the ID
/// `Driver::command_id` gives the entry's index, the next one more, and so on. The leaders'
/// no-ops and configuration entries hold none. This is the one place that knows.
pub(crate) fn commands_of(payload: &Payload) -> Vec<&Bytes> {
    payload.commands().iter().collect()
}

/// The answer to `ReadCommands { from_id, max }`: up to `max` (and `QUERY_ENTRIES_MAX`)
/// committed commands from ID `from_id` on, in ID order, encoding to at most
/// `COMMANDS_PAGE_BYTES_MAX` (at least one goes, so paging moves on). Empty past the last
/// committed command; `Failed` if IDs from `from_id` on were trimmed here, or if the log could
/// not be read (damaged data on disk).
pub(crate) fn commands_page<F: FileSystem>(driver: &mut Driver<F>, from_id: u64, max: u32) -> Frame {
    match read_commands(driver, from_id, max) {
        Ok(frame) => frame,
        Err(error) => {
            warn!("reading commands from ID {from_id}: {error}");
            Frame::Failed { reason: error.to_string() }
        }
    }
}

fn read_commands<F: FileSystem>(
    driver: &mut Driver<F>,
    from_id: u64,
    max: u32,
) -> Result<Frame, StorageError> {
    // IDs start at 1.
    let from_id = from_id.max(1);
    let first_id = driver.first_command_id();
    if from_id < first_id {
        // Not an empty page: a reader must never skip what it asked for without knowing.
        let reason = format!(
            "IDs before {first_id} were trimmed on this node (retention or `replog trim`): it holds IDs from {first_id} on"
        );
        return Ok(Frame::Failed { reason });
    }
    let last_id = last_committed_id(driver)?;
    if from_id > last_id {
        return Ok(Frame::CommandsResult { first_id, last_id, commands: Vec::new() });
    }
    let max = max.clamp(1, QUERY_ENTRIES_MAX) as usize;
    // The entry holding `from_id`; each entry holds at least one command or none, so `max`
    // entries from it hold at least `max` commands or reach the commit index first.
    let from = driver.index_of_command(from_id);
    let commit = driver.node().commit();
    let to = commit.min(from.plus(max as u64 - 1));
    // Entry::size_bytes is at least a command's length, so this reads enough entries; the
    // encoded sizes then decide where the page ends.
    let entries = driver.read_entries(from, to, COMMANDS_PAGE_BYTES_MAX as u64)?;
    let mut commands = Vec::new();
    let mut bytes = 0;
    'entries: for entry in &entries {
        let first = driver.command_id(entry.index);
        for (id, data) in (first..).zip(commands_of(&entry.payload)) {
            if id < from_id {
                continue; // earlier commands of the entry holding `from_id`
            }
            bytes += CommandRecord::encoded_bytes(data.len());
            let full = commands.len() == max || (bytes > COMMANDS_PAGE_BYTES_MAX && !commands.is_empty());
            if full || id > last_id {
                break 'entries;
            }
            let (index, term) = (entry.index.0, entry.term.0);
            commands.push(CommandRecord { id, index, term, data: data.as_slice().to_vec() });
        }
    }
    if commands.first().map(|command| command.id) != Some(from_id) {
        // The ID <-> index mapping disagrees with the entries (or put `from_id`'s entry past
        // the commit index): a bug, but not one to stop the node for on a read path. The
        // reader reports it.
        warn!("reading commands from ID {from_id}: the entry at {from} does not hold it");
        let reason = format!("command {from_id} is not where the log's index says (at {from})");
        return Ok(Frame::Failed { reason });
    }
    Ok(Frame::CommandsResult { first_id, last_id, commands })
}

/// The ID of the last committed client command; the one before the first held if nothing after
/// the snapshot is committed (0 if there is no command at all).
fn last_committed_id<F: FileSystem>(driver: &mut Driver<F>) -> Result<u64, StorageError> {
    let commit = driver.node().commit();
    if commit <= driver.node().snapshot_meta().index {
        return Ok(driver.first_command_id() - 1);
    }
    // `command_id` of an entry holding no command is the ID the next command takes, so its
    // commands (none or more) end one before `command_id + held`.
    let entry = driver.read_entries(commit, commit, 0)?;
    let held = entry.first().map_or(0, |entry| commands_of(&entry.payload).len() as u64);
    Ok(driver.command_id(commit) + held - 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec;
    use crate::fs::RealFs;
    use crate::limits::FRAME_BYTES_MAX;
    use crate::storage::Identity;
    use replog_core::{ClientId, ClientRequest, Config, Event, LogIndex, NodeId, RequestId};

    /// A single-node driver (in a fresh folder) whose leader's no-op is at index 1, with one
    /// committed command per entry of `commands`.
    fn driver_with(name: &str, commands: &[Vec<u8>]) -> Driver<RealFs> {
        let dir = std::env::temp_dir().join(format!("replog-reading-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let identity = Identity { name: "n1".into(), address: "127.0.0.1:1".into() };
        let (mut driver, _) = Driver::open(Config::new(NodeId(1), Vec::new()), RealFs::new(), &dir, identity)
            .expect("a fresh folder opens");
        driver.step(Event::Campaign).unwrap();
        driver.end_round(true).unwrap();
        driver.on_synced().unwrap();
        for (i, command) in commands.iter().enumerate() {
            propose(&mut driver, i as u64, command);
            driver.end_round(true).unwrap();
            driver.on_synced().unwrap();
        }
        assert_eq!(driver.node().commit(), LogIndex(commands.len() as u64 + 1));
        driver
    }

    fn propose(driver: &mut Driver<RealFs>, request: u64, command: &[u8]) {
        let payloads = vec![Payload::Command(Bytes::from(command.to_vec()))];
        driver.step(Event::Propose { request: RequestId(request), payloads }).unwrap();
    }

    fn texts(count: usize) -> Vec<Vec<u8>> {
        (1..=count).map(|i| format!("c{i}").into_bytes()).collect()
    }

    /// (first_id, last_id, [(id, index, data)]) of an answer, or its failure.
    type Answer = Result<(u64, u64, Vec<(u64, u64, String)>), String>;

    fn read(driver: &mut Driver<RealFs>, from_id: u64, max: u32) -> Answer {
        match commands_page(driver, from_id, max) {
            Frame::CommandsResult { first_id, last_id, commands } => {
                let commands = commands
                    .into_iter()
                    .map(|c| (c.id, c.index, String::from_utf8(c.data).unwrap()))
                    .collect();
                Ok((first_id, last_id, commands))
            }
            Frame::Failed { reason } => Err(reason),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn commands_come_by_id_and_only_committed_ones() {
        let mut empty = driver_with("empty", &[]);
        assert_eq!(read(&mut empty, 1, 10), Ok((1, 0, Vec::new())), "no command yet");
        let mut driver = driver_with("by-id", &texts(5));
        let c = |id: u64| (id, id + 1, format!("c{id}")); // after the no-op at index 1
        assert_eq!(read(&mut driver, 1, 10), Ok((1, 5, (1..=5).map(c).collect())));
        assert_eq!(read(&mut driver, 0, 10), Ok((1, 5, (1..=5).map(c).collect())), "IDs start at 1");
        assert_eq!(read(&mut driver, 3, 2), Ok((1, 5, vec![c(3), c(4)])));
        assert_eq!(read(&mut driver, 5, 0), Ok((1, 5, vec![c(5)])), "at least one");
        assert_eq!(read(&mut driver, 6, 10), Ok((1, 5, Vec::new())), "past the last: empty");
        assert_eq!(read(&mut driver, u64::MAX, 1), Ok((1, 5, Vec::new())));
        // Appended, not durable, so not committed: not shown.
        propose(&mut driver, 99, b"c6");
        assert!(LogIndex(7) > driver.node().commit());
        assert_eq!(read(&mut driver, 5, 10), Ok((1, 5, vec![c(5)])));
        assert_eq!(read(&mut driver, 6, 10), Ok((1, 5, Vec::new())));
        driver.end_round(true).unwrap();
        driver.on_synced().unwrap();
        assert_eq!(read(&mut driver, 6, 10), Ok((1, 6, vec![c(6)])));
    }

    #[test]
    fn an_entry_holding_several_commands_gives_each_its_own_id() {
        let mut driver = driver_with("batch", &texts(5));
        let batch = ClientRequest {
            client: ClientId(1),
            seq: 1,
            commands: ["b6", "b7", "b8"].into_iter().map(Bytes::from).collect(),
        };
        let payloads = vec![Payload::Request(batch)];
        driver.step(Event::Propose { request: RequestId(50), payloads }).unwrap();
        driver.end_round(true).unwrap();
        driver.on_synced().unwrap();
        // The batch is entry 7 (after the no-op and five commands): IDs 6 to 8.
        let at = |id: u64, index: u64, data: &str| (id, index, data.to_string());
        assert_eq!(
            read(&mut driver, 6, 10),
            Ok((1, 8, vec![at(6, 7, "b6"), at(7, 7, "b7"), at(8, 7, "b8")]))
        );
        assert_eq!(read(&mut driver, 7, 1), Ok((1, 8, vec![at(7, 7, "b7")])), "from inside the batch");
        assert_eq!(read(&mut driver, 9, 10), Ok((1, 8, Vec::new())));
        driver_with_more(&mut driver, 51, b"c9");
        assert_eq!(read(&mut driver, 8, 2), Ok((1, 9, vec![at(8, 7, "b8"), at(9, 8, "c9")])));
        assert_eq!(read(&mut driver, 4, 3), Ok((1, 9, vec![at(4, 5, "c4"), at(5, 6, "c5"), at(6, 7, "b6")])));
    }

    fn driver_with_more(driver: &mut Driver<RealFs>, request: u64, command: &[u8]) {
        propose(driver, request, command);
        driver.end_round(true).unwrap();
        driver.on_synced().unwrap();
    }

    #[test]
    fn a_trimmed_start_is_refused_by_name() {
        let mut driver = driver_with("trimmed", &texts(5));
        let before = driver.index_of_command(4);
        driver.trim(before).unwrap();
        assert_eq!(driver.first_command_id(), 4);
        let refused = read(&mut driver, 2, 10).unwrap_err();
        assert!(refused.starts_with("IDs before 4 were trimmed"), "{refused}");
        let c = |id: u64| (id, id + 1, format!("c{id}"));
        assert_eq!(read(&mut driver, 4, 10), Ok((4, 5, vec![c(4), c(5)])));
        // Everything trimmed: the last ID is still known, from the snapshot.
        let before = driver.index_of_command(6);
        driver.trim(before).unwrap();
        assert_eq!(read(&mut driver, 6, 10), Ok((6, 5, Vec::new())));
        assert!(read(&mut driver, 5, 10).is_err());
    }

    #[test]
    fn pages_fit_a_frame_and_always_move_on() {
        // 20 MiB of commands: more than a frame, some read back from disk.
        let big = vec![b'x'; 1024 * 1024];
        let mut driver = driver_with("pages", &vec![big; 20]);
        let mut from_id = 1;
        let mut sizes = Vec::new();
        loop {
            let answer = commands_page(&mut driver, from_id, QUERY_ENTRIES_MAX);
            let mut payload = Vec::new();
            codec::encode(&answer, &mut payload);
            assert!(payload.len() <= FRAME_BYTES_MAX, "a page of {} bytes", payload.len());
            let Frame::CommandsResult { commands, .. } = answer else { panic!("{answer:?}") };
            if commands.is_empty() {
                break;
            }
            assert!(commands.iter().map(|c| c.id).eq(from_id..from_id + commands.len() as u64));
            from_id += commands.len() as u64;
            sizes.push(commands.len());
        }
        assert_eq!(sizes, [15, 5]);
    }
}
