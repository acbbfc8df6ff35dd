//! Reading the log by command ID: `replog query --from ID [--to ID | --last N] [--json]` and
//! `replog follow` (committed commands as they commit, like `tail -f`).

use replog_runtime::client::ClientError;
use replog_runtime::codec::CommandRecord;
use replog_runtime::reader;
use std::io::{self, Write};
use std::time::Duration;

/// How long `query` waits for a node (and, linearizable, for a leader).
const QUERY_TIMEOUT: Duration = Duration::from_secs(5);
/// Pause between `follow`'s polls that found nothing new.
const FOLLOW_POLL: Duration = Duration::from_millis(25);
/// How long `follow` tries the members when none answers before it says so (then it goes on).
const FOLLOW_UNREACHABLE_AFTER: Duration = Duration::from_secs(5);

/// `query`'s range flags.
#[derive(Clone, Copy, Debug, Default)]
pub struct Range {
    /// `--from ID`.
    pub from: Option<u64>,
    /// `--to ID` (inclusive).
    pub to: Option<u64>,
    /// `--last N`.
    pub last: Option<u64>,
}

impl Range {
    /// Whether any range flag was given (without one, `query` prints the node's log as the
    /// seed did).
    pub fn is_given(&self) -> bool {
        self.from.is_some() || self.to.is_some() || self.last.is_some()
    }
}

/// `query` with range flags (or `--json`): the committed commands of the range, one line each.
pub fn query(target: &str, linearizable: bool, range: Range, json: bool) -> Result<(), String> {
    let from = range.from.unwrap_or(1);
    if let Some(to) = range.to.filter(|&to| to < from) {
        return Err(format!("--to {to} is before --from {from}: give --to at or after --from"));
    }
    let log = reader::read(target, from, range.to, range.last, linearizable, QUERY_TIMEOUT)
        .map_err(|error| error.to_string())?;
    if let Some(n) = range.last {
        // The newest N reach back before what the node still holds.
        if from.max(log.last_id.saturating_sub(n) + 1) < log.first_id {
            eprintln!(
                "note: commands before ID:{} were trimmed on this node (retention or `replog trim`)",
                log.first_id
            );
        }
    }
    let mut out = io::stdout().lock();
    for (position, command) in log.commands.iter().enumerate() {
        emit(&mut out, &line(position + 1, command, json))?;
    }
    flush(&mut out)?;
    if log.commands.is_empty() && from > log.last_id {
        eprintln!("note: no committed command at or after ID {from} yet (last is {})", log.last_id);
    }
    Ok(())
}

/// `follow`: prints committed commands as they commit, from `from` on (default: the next one),
/// until interrupted; keeps trying while no member answers, saying so every few seconds.
pub fn follow(targets: &[String], from: Option<u64>, json: bool) -> Result<(), String> {
    let targets: Vec<&str> = targets.iter().map(|target| target.trim()).filter(|t| !t.is_empty()).collect();
    let mut follow = reader::follow(&targets, from, FOLLOW_POLL)
        .map_err(|error| format!("-t: {error}"))?
        .unreachable_after(FOLLOW_UNREACHABLE_AFTER);
    let mut out = io::stdout().lock();
    let mut position = 0;
    loop {
        match follow.next_batch() {
            Ok(commands) => {
                for command in &commands {
                    position += 1;
                    emit(&mut out, &line(position, command, json))?;
                }
                flush(&mut out)?;
            }
            Err(error @ ClientError::Unreachable { .. }) => {
                let next = follow.next_id().map_or_else(|| "the end".to_string(), |id| format!("ID {id}"));
                eprintln!("replog: {error}; still trying (resuming at {next}; Ctrl-C to stop)");
            }
            Err(error) => return Err(error.to_string()),
        }
    }
}

/// One command as `query` and `follow` print it: the seed's line, or a JSON object.
fn line(position: usize, command: &CommandRecord, json: bool) -> String {
    if json {
        json_line(command)
    } else {
        seed_line(position, command.id, command.term, true, &command.data)
    }
}

/// The seed's line for one command, as `query` without range flags prints it (`main.rs`; the
/// end-to-end tests check the two agree).
pub fn seed_line(position: usize, id: u64, term: u64, committed: bool, data: &[u8]) -> String {
    let text = String::from_utf8_lossy(data);
    format!("  {position}. ID:{id} Term:{term} Committed:{committed} Command:Operation {{ data: {text:?} }}")
}

/// One JSON object: `{"id":..,"index":..,"term":..,"data":".."}`, keys in that order, with
/// `data_hex` (lowercase hex) instead of `data` for a command that is not UTF-8, as the log
/// files do.
pub fn json_line(command: &CommandRecord) -> String {
    let CommandRecord { id, index, term, data } = command;
    match std::str::from_utf8(data) {
        Ok(text) => {
            let text = serde_json::to_string(text).expect("a string serializes");
            format!(r#"{{"id":{id},"index":{index},"term":{term},"data":{text}}}"#)
        }
        Err(_) => {
            let hex: String = data.iter().map(|byte| format!("{byte:02x}")).collect();
            format!(r#"{{"id":{id},"index":{index},"term":{term},"data_hex":"{hex}"}}"#)
        }
    }
}

/// Writes one line; a reader that went away (`| head`) ends the command quietly.
fn emit(out: &mut impl Write, line: &str) -> Result<(), String> {
    writeln!(out, "{line}").or_else(stdout_closed)
}

fn flush(out: &mut impl Write) -> Result<(), String> {
    out.flush().or_else(stdout_closed)
}

fn stdout_closed(error: io::Error) -> Result<(), String> {
    if error.kind() == io::ErrorKind::BrokenPipe {
        std::process::exit(0);
    }
    Err(format!("writing to stdout: {error}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_the_seeds_or_one_json_object() {
        let command = CommandRecord { id: 3, index: 5, term: 2, data: b"user_login:\"alice\"".to_vec() };
        assert_eq!(
            line(1, &command, false),
            r#"  1. ID:3 Term:2 Committed:true Command:Operation { data: "user_login:\"alice\"" }"#
        );
        assert_eq!(line(1, &command, true), r#"{"id":3,"index":5,"term":2,"data":"user_login:\"alice\""}"#);
        let binary = CommandRecord { id: 4, index: 6, term: 2, data: vec![0xff, 0x00, 0x0a] };
        assert_eq!(json_line(&binary), r#"{"id":4,"index":6,"term":2,"data_hex":"ff000a"}"#);
        let parsed: serde_json::Value = serde_json::from_str(&json_line(&command)).unwrap();
        assert_eq!(parsed["data"], "user_login:\"alice\"");
    }
}
