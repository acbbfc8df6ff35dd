//! `replog append`: one command, or a batch, exactly once through a client session.

use clap::Args;
use replog_runtime::client::ClientError;
use replog_runtime::fnv;
use replog_runtime::session::{Appended, Session};
use std::io::BufRead;
use std::time::Duration;

#[derive(Args, Debug)]
pub struct AppendArgs {
    /// Target node address (any node: followers redirect to the leader; others are tried if it
    /// cannot serve)
    #[arg(short, long, default_value = "127.0.0.1:8080")]
    target: String,
    /// Command to append; give it several times for a batch (committed together, in order)
    #[arg(short, long, required_unless_present = "stdin")]
    command: Vec<String>,
    /// Read the commands from standard input, one a line, and append them as one batch
    #[arg(long, conflicts_with = "command")]
    stdin: bool,
    /// Append only if the last command ID in the log is ID (0: the log holds no command);
    /// otherwise exit 3 naming the last ID, with nothing appended
    #[arg(long, value_name = "ID")]
    expect_last: Option<u64>,
    /// Name the session (any text): with --seq, rerunning the same append (same name and
    /// number) is recognised and answered with the original IDs instead of appending again
    #[arg(long, value_name = "NAME", requires = "seq")]
    client_id: Option<String>,
    /// The append's number in the --client-id session, from 1, one more for each new append
    #[arg(long, value_name = "N", requires = "client_id", value_parser = clap::value_parser!(u64).range(1..))]
    seq: Option<u64>,
    /// Give up after this many seconds without an answer
    #[arg(long, default_value_t = 5.0)]
    timeout: f64,
}

/// Exit status of an append whose condition (`--expect-last`) did not hold.
const EXIT_CONDITION_FAILED: i32 = 3;

pub fn run(args: AppendArgs) -> Result<(), String> {
    let commands = if args.stdin { read_stdin()? } else { args.command };
    if commands.is_empty() {
        return Err("nothing to append (standard input held no line)".into());
    }
    let deadline = Duration::from_secs_f64(args.timeout.max(0.1));
    let mut session = match (&args.client_id, args.seq) {
        (Some(name), Some(seq)) => Session::resume(&[&args.target], session_id(name), seq),
        _ => Session::connect(&[&args.target]),
    }
    .map_err(|e| e.to_string())?;
    let bytes: Vec<&[u8]> = commands.iter().map(String::as_bytes).collect();
    let result = match args.expect_last {
        Some(expected) => session.append_if(expected, &bytes, deadline),
        None => session.append(&bytes, deadline),
    };
    match result {
        Ok(appended) => {
            print_appended(&appended);
            Ok(())
        }
        Err(ClientError::ConditionFailed { last_id }) => {
            eprintln!(
                "error: condition failed: the last command ID is {last_id}, not {}; nothing was appended",
                args.expect_last.unwrap_or(0)
            );
            std::process::exit(EXIT_CONDITION_FAILED);
        }
        Err(error) => Err(error.to_string()),
    }
}

fn print_appended(appended: &Appended) {
    let ids = if appended.count == 1 {
        format!("ID:{}", appended.first_id)
    } else {
        format!("IDs:{}-{}", appended.first_id, appended.last_id())
    };
    let retried = if appended.recognised { ", a retry recognised" } else { "" };
    println!(
        "✅ Committed: {ids} Term:{} (log index {}, leader {}{retried})",
        appended.term, appended.index, appended.leader
    );
}

/// A session id from its name: 16 hex digits are taken as they are, anything else is hashed.
fn session_id(name: &str) -> u64 {
    match u64::from_str_radix(name, 16) {
        Ok(id) if name.len() == 16 && id != 0 => id,
        _ => fnv::of_bytes(name.as_bytes()).max(1),
    }
}

fn read_stdin() -> Result<Vec<String>, String> {
    let mut commands = Vec::new();
    for line in std::io::stdin().lock().lines() {
        let line = line.map_err(|e| format!("reading standard input: {e}"))?;
        commands.push(line);
    }
    Ok(commands)
}
