//! The offline log tools: `replog dump DATA_DIR` prints what a node's data folder holds with
//! every checksum checked, and `replog verify DATA_DIR...` checks several folders and that
//! their committed prefixes agree. Both read through `replog_runtime::inspect` (the runtime's
//! own decoders, read-only opens) and never write, so they are safe next to a running node,
//! though only a stopped node's folder holds still.

use replog_core::{Entry, MemberRole, Membership, Payload};
use replog_runtime::inspect::{
    self, Comparison, Finding, Folder, Held, IndexFile, Item, Record, Severity, Summary,
};
use replog_runtime::storage::id_text;
use serde_json::{json, Value};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

/// Exit statuses: a damaged record or file; committed prefixes that differ (`verify`); a
/// folder that cannot be read, or bad usage.
pub const EXIT_DAMAGED: i32 = 1;
pub const EXIT_DISAGREE: i32 = 2;
pub const EXIT_UNUSABLE: i32 = 3;

/// `replog dump DATA_DIR [--from ID] [--json]`: the exit status.
pub fn dump(dir: &Path, from: Option<u64>, json: bool) -> i32 {
    let folder = match Folder::open(dir) {
        Ok(folder) => folder,
        Err(error) => {
            eprintln!("replog: {error}");
            return EXIT_UNUSABLE;
        }
    };
    let mut out = Output::new(json);
    out.headers(&folder);
    let mut records = folder.records();
    // With --from, records print from the first holding a command ID at or after it; a
    // segment's header waits for its first printed record.
    let mut started = from.is_none();
    let mut header = None;
    for item in records.by_ref() {
        match item {
            Item::Segment(segment) => {
                let line = out.segment(&segment.file, segment.first.0, segment.index);
                if started {
                    out.line(line);
                } else {
                    header = Some(line);
                }
            }
            Item::Record(record) => {
                started = started || reaches(&record, from.unwrap_or(1));
                if started {
                    if let Some(line) = header.take() {
                        out.line(line);
                    }
                    let covered = record.entry.index <= folder.snapshot_index();
                    let line = out.record(&record, covered);
                    out.line(line);
                }
            }
            Item::Finding(finding) => {
                let line = out.finding(&finding);
                out.line(line);
            }
        }
    }
    let summary = records.summary().clone();
    let line = out.summary(&summary);
    out.line(line);
    out.flush();
    if let Some(from) = from.filter(|_| !started) {
        let last = summary.last_id.map_or_else(|| "unknown".to_string(), |id| format!("ID {id}"));
        eprintln!("note: no record holds a command ID at or after {from} (the last command is {last})");
    }
    if summary.damaged > 0 {
        EXIT_DAMAGED
    } else {
        0
    }
}

/// Whether `record` holds a command whose ID is `from` or later.
fn reaches(record: &Record, from: u64) -> bool {
    let count = record.entry.payload.commands().len() as u64;
    record.first_id.is_some_and(|id| id + count > from)
}

/// `replog verify DATA_DIR...`: the exit status.
pub fn verify(dirs: &[PathBuf]) -> i32 {
    let mut folders = Vec::with_capacity(dirs.len());
    let mut unusable = false;
    for dir in dirs {
        match Folder::open(dir) {
            Ok(folder) => folders.push(folder),
            Err(error) => {
                eprintln!("replog: {error}");
                unusable = true;
            }
        }
    }
    if unusable {
        println!("verdict: a folder cannot be read (nothing compared)");
        return EXIT_UNUSABLE;
    }
    let comparison = inspect::compare(&folders);
    let mut out = Output::new(false);
    for (folder, check) in folders.iter().zip(&comparison.folders) {
        let state = if check.summary.damaged > 0 { "DAMAGED" } else { "ok" };
        let snapshot = match folder.snapshot_index().0 {
            0 => String::new(),
            index => format!(", snapshot through entry {index}"),
        };
        out.line(format!(
            "{}: {state}: {}, committed through entry {}{snapshot}",
            folder.dir.display(),
            records_text(&check.summary),
            check.committed.0
        ));
        for finding in &check.findings {
            out.line(format!("  {}", out.finding(finding)));
        }
        let kept = check.findings.len() as u64;
        let total = check.summary.damaged + check.summary.warnings;
        if total > kept {
            out.line(format!("  ... and {} more", total - kept));
        }
    }
    out.line(compared_text(&comparison));
    for note in &comparison.notes {
        out.line(format!("note: {note}"));
    }
    let damaged: Vec<String> = folders
        .iter()
        .zip(&comparison.folders)
        .filter(|(_, check)| check.summary.damaged > 0)
        .map(|(folder, _)| folder.dir.display().to_string())
        .collect();
    let status = if let Some(disagreement) = &comparison.disagreement {
        out.line(format!("verdict: the committed prefixes DISAGREE at entry {}:", disagreement.index.0));
        let images = disagreement.held.iter().any(|held| matches!(held, Held::Snapshot { .. }));
        for (folder, held) in folders.iter().zip(&disagreement.held) {
            out.line(format!("  {}: {}", folder.dir.display(), held_text(held, images)));
        }
        EXIT_DISAGREE
    } else if !damaged.is_empty() {
        out.line(format!("verdict: damaged data in {}", damaged.join(", ")));
        EXIT_DAMAGED
    } else {
        out.line("verdict: ok: no damage, and the committed prefixes agree".to_string());
        0
    };
    out.flush();
    status
}

fn compared_text(comparison: &Comparison) -> String {
    if comparison.folders.len() < 2 {
        return "compared: nothing (one folder)".to_string();
    }
    let upto = match comparison.disagreement.as_ref() {
        Some(disagreement) => format!("up to entry {}", disagreement.index.0),
        None => format!("through entry {}", comparison.through.0),
    };
    format!(
        "compared: the committed prefix {upto}: {} entries held by two or more logs, {} snapshot images",
        comparison.entries_compared, comparison.images_compared
    )
}

/// What a folder holds where the folders disagree.
fn held_text(held: &Held, images: bool) -> String {
    match held {
        Held::Entry { record, image } => {
            let mut text = format!(
                "term {} {} ({} line {})",
                record.entry.term.0,
                payload_text(&record.entry, record.first_id),
                file_name(&record.file),
                record.line
            );
            if images {
                match image {
                    Some(image) => text.push_str(&format!(
                        "; its entries through here: {} commands, digest {:016x}",
                        image.commands, image.digest
                    )),
                    None => text.push_str("; its entries through here cannot be counted (damage before)"),
                }
            }
            text
        }
        Held::Snapshot { term, image } => format!(
            "its snapshot ends here: term {}, {} commands, digest {:016x}",
            term.0, image.commands, image.digest
        ),
        Held::Nothing => "nothing to compare (its snapshot covers it, or its record is damaged)".to_string(),
    }
}

/// "12 records (entries 1..=12) in 2 segments, 10 commands (IDs 1..=10), 1 damaged, 0 warnings".
fn records_text(summary: &Summary) -> String {
    let entries = match (summary.first, summary.last) {
        (Some(first), Some(last)) => format!(" (entries {}..={})", first.0, last.0),
        _ => String::new(),
    };
    let ids = match (summary.first_id, summary.last_id, summary.ids_unknown) {
        (Some(first), Some(last), 0) => format!(" (IDs {first}..={last})"),
        (Some(first), Some(last), unknown) => {
            format!(" (IDs {first}..={last} known, {unknown} whose IDs cannot be counted)")
        }
        (_, _, 0) => String::new(),
        (_, _, unknown) => format!(" ({unknown} whose IDs cannot be counted)"),
    };
    format!(
        "{} records{entries} in {} segment(s), {} commands{ids}, {} damaged, {} warning(s)",
        summary.records, summary.segments, summary.commands, summary.damaged, summary.warnings
    )
}

/// A record's kind and contents: `command ID:7 "text"`, `request client:... seq:3 ID:8 "a" ID:9
/// "b"`, `noop`, `config voters ...`.
fn payload_text(entry: &Entry, first_id: Option<u64>) -> String {
    let id = |k: usize| first_id.map_or_else(|| "?".to_string(), |id| (id + k as u64).to_string());
    match &entry.payload {
        Payload::Noop => "noop".to_string(),
        Payload::Command(data) => format!("command ID:{} {}", id(0), data_text(data.as_slice())),
        Payload::Config(membership) => format!("config {}", membership_text(membership)),
        Payload::Request(request) => {
            let mut text = format!("request client:{:016x} seq:{}", request.client.0, request.seq);
            for (k, command) in request.commands.iter().enumerate() {
                text.push_str(&format!(" ID:{} {}", id(k), data_text(command.as_slice())));
            }
            text
        }
    }
}

/// A command as text: quoted if UTF-8, else `hex:...`.
fn data_text(data: &[u8]) -> String {
    match std::str::from_utf8(data) {
        Ok(text) => format!("{text:?}"),
        Err(_) => format!("hex:{}", hex(data)),
    }
}

fn hex(data: &[u8]) -> String {
    data.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// `voters 00000000000000ab@127.0.0.1:8080, ...; learners ...`.
fn membership_text(membership: &Membership) -> String {
    let mut groups = Vec::new();
    for (role, name) in
        [(MemberRole::Voter, "voters"), (MemberRole::Learner, "learners"), (MemberRole::Joining, "joining")]
    {
        let members: Vec<String> = membership
            .members
            .iter()
            .filter(|(_, member)| member.role == role)
            .map(|(id, member)| format!("{}@{}", id_text(*id), member.address))
            .collect();
        if !members.is_empty() {
            groups.push(format!("{name} {}", members.join(", ")));
        }
    }
    if groups.is_empty() {
        "none recorded".to_string()
    } else {
        groups.join("; ")
    }
}

fn membership_json(membership: &Membership) -> Value {
    let members: Vec<Value> = membership
        .members
        .iter()
        .map(
            |(id, member)| json!({"id": id_text(*id), "address": member.address, "role": member.role.name()}),
        )
        .collect();
    Value::Array(members)
}

/// A command as JSON fields: `"data"` if UTF-8, else `"data_hex"`, as the log files do.
fn data_json(object: &mut serde_json::Map<String, Value>, data: &[u8]) {
    match std::str::from_utf8(data) {
        Ok(text) => object.insert("data".into(), Value::from(text)),
        Err(_) => object.insert("data_hex".into(), Value::from(hex(data))),
    };
}

fn file_name(path: &Path) -> String {
    path.file_name().map_or_else(|| path.display().to_string(), |name| name.to_string_lossy().into_owned())
}

/// Lines to stdout, as text or JSON objects; a reader that went away (`| head`) ends the
/// command quietly.
struct Output {
    json: bool,
    out: BufWriter<io::StdoutLock<'static>>,
}

impl Output {
    fn new(json: bool) -> Output {
        Output { json, out: BufWriter::new(io::stdout().lock()) }
    }

    fn line(&mut self, line: String) {
        if let Err(error) = writeln!(self.out, "{line}") {
            closed(error);
        }
    }

    fn flush(&mut self) {
        if let Err(error) = self.out.flush() {
            closed(error);
        }
    }

    /// What the folder's one-line files say.
    fn headers(&mut self, folder: &Folder) {
        let dir = &folder.dir;
        if let Some(meta) = &folder.metadata {
            let file = dir.join(replog_runtime::storage::METADATA_FILE);
            let id = meta.id.map(id_text);
            let voted_for = meta.hard_state.voted_for.map(id_text);
            let line = if self.json {
                json!({
                    "kind": "metadata", "file": file, "name": meta.name, "address": meta.address, "id": id,
                    "term": meta.hard_state.term.0, "voted_for": voted_for, "commit": meta.hard_state.commit.0,
                    "bootstrap": meta.bootstrap.as_ref().map(membership_json), "repair_to": meta.repair_to.0,
                })
                .to_string()
            } else {
                let mut line = format!(
                    "{}: {} at {}, id {}, term {}, voted for {}, commit {}",
                    file_name(&file),
                    meta.name,
                    meta.address,
                    id.as_deref().unwrap_or("none (a folder of an earlier version)"),
                    meta.hard_state.term.0,
                    voted_for.as_deref().unwrap_or("nobody"),
                    meta.hard_state.commit.0
                );
                if meta.repair_to.0 > 0 {
                    line.push_str(&format!(", repairing lost entries through {}", meta.repair_to.0));
                }
                let bootstrap =
                    meta.bootstrap.as_ref().map_or_else(|| "none recorded".to_string(), membership_text);
                line.push_str(&format!("\n  bootstrap: {bootstrap}"));
                line
            };
            self.line(line);
        }
        if let Some(snapshot) = &folder.snapshot {
            let file = dir.join(replog_runtime::storage::SNAPSHOT_FILE);
            let image = snapshot.image.as_ref().ok();
            let sessions = snapshot.sessions.as_ref().ok();
            let line = if self.json {
                json!({
                    "kind": "snapshot", "file": file, "index": snapshot.meta.index.0, "term": snapshot.meta.term.0,
                    "config": membership_json(&snapshot.membership), "commands": image.map(|image| image.commands),
                    "digest": image.map(|image| format!("{:016x}", image.digest)), "sessions": sessions,
                    "bytes": snapshot.image_bytes,
                })
                .to_string()
            } else {
                let image = match (&snapshot.image, &snapshot.sessions) {
                    (Ok(image), Ok(sessions)) => format!(
                        "{} commands, digest {:016x}, {sessions} session(s)",
                        image.commands, image.digest
                    ),
                    (Ok(image), Err(why)) => format!(
                        "{} commands, digest {:016x}, session table unreadable ({why})",
                        image.commands, image.digest
                    ),
                    (Err(why), _) => format!("image unreadable ({why})"),
                };
                format!(
                    "{}: through entry {} (term {}): {image}; {} bytes\n  configuration: {}",
                    file_name(&file),
                    snapshot.meta.index.0,
                    snapshot.meta.term.0,
                    snapshot.image_bytes,
                    membership_text(&snapshot.membership)
                )
            };
            self.line(line);
        }
        if let Some(partial) = &folder.partial {
            let file = dir.join(replog_runtime::storage::PARTIAL_FILE);
            let line = if self.json {
                json!({
                    "kind": "partial", "file": file, "index": partial.meta.index.0, "term": partial.meta.term.0,
                    "config": membership_json(&partial.membership), "total": partial.total,
                    "received": partial.received, "checksum": format!("{:016x}", partial.checksum),
                })
                .to_string()
            } else {
                format!(
                    "{}: receiving the snapshot through entry {} (term {}): {} of {} bytes",
                    file_name(&file),
                    partial.meta.index.0,
                    partial.meta.term.0,
                    partial.received,
                    partial.total
                )
            };
            self.line(line);
        }
    }

    fn segment(&self, file: &Path, first: u64, index: IndexFile) -> String {
        let index = match index {
            IndexFile::Absent => "none",
            IndexFile::Read => "read",
            IndexFile::Damaged => "damaged",
        };
        if self.json {
            json!({"kind": "segment", "file": file, "first": first, "index_file": index}).to_string()
        } else {
            format!("{}: from entry {first} (index file: {index})", file_name(file))
        }
    }

    fn record(&self, record: &Record, covered: bool) -> String {
        let entry = &record.entry;
        if !self.json {
            let covered = if covered { "  (covered by the snapshot)" } else { "" };
            return format!(
                "  {} term:{} {}{covered}",
                entry.index.0,
                entry.term.0,
                payload_text(entry, record.first_id)
            );
        }
        let mut object = serde_json::Map::new();
        object.insert("kind".into(), "record".into());
        object.insert("file".into(), json!(record.file));
        object.insert("line".into(), record.line.into());
        object.insert("offset".into(), record.offset.into());
        object.insert("index".into(), entry.index.0.into());
        object.insert("term".into(), entry.term.0.into());
        object.insert("covered".into(), covered.into());
        match &entry.payload {
            Payload::Noop => {
                object.insert("type".into(), "noop".into());
            }
            Payload::Command(data) => {
                object.insert("type".into(), "command".into());
                object.insert("id".into(), json!(record.first_id));
                data_json(&mut object, data.as_slice());
            }
            Payload::Config(membership) => {
                object.insert("type".into(), "config".into());
                object.insert("config".into(), membership_json(membership));
            }
            Payload::Request(request) => {
                object.insert("type".into(), "request".into());
                object.insert("client".into(), format!("{:016x}", request.client.0).into());
                object.insert("seq".into(), request.seq.into());
                let commands: Vec<Value> = request
                    .commands
                    .iter()
                    .enumerate()
                    .map(|(k, command)| {
                        let mut command_object = serde_json::Map::new();
                        command_object.insert("id".into(), json!(record.first_id.map(|id| id + k as u64)));
                        data_json(&mut command_object, command.as_slice());
                        Value::Object(command_object)
                    })
                    .collect();
                object.insert("commands".into(), commands.into());
            }
        }
        Value::Object(object).to_string()
    }

    fn finding(&self, finding: &Finding) -> String {
        let kind = match finding.severity {
            Severity::Damage => "damage",
            Severity::Warning => "warning",
        };
        if self.json {
            json!({
                "kind": kind, "file": finding.file, "line": finding.line, "offset": finding.offset,
                "index": finding.index.map(|index| index.0), "why": finding.why,
            })
            .to_string()
        } else {
            let label = if finding.severity == Severity::Damage { "DAMAGE" } else { "warning" };
            format!("{label}: {finding}")
        }
    }

    fn summary(&self, summary: &Summary) -> String {
        if self.json {
            json!({
                "kind": "summary", "segments": summary.segments, "records": summary.records,
                "first": summary.first.map(|index| index.0), "last": summary.last.map(|index| index.0),
                "commands": summary.commands, "first_id": summary.first_id, "last_id": summary.last_id,
                "ids_unknown": summary.ids_unknown,
                "damaged": summary.damaged, "warnings": summary.warnings,
            })
            .to_string()
        } else {
            let verdict = if summary.damaged > 0 { "DAMAGED" } else { "ok" };
            format!("summary: {verdict}: {}", records_text(summary))
        }
    }
}

fn closed(error: io::Error) {
    if error.kind() == io::ErrorKind::BrokenPipe {
        std::process::exit(0);
    }
    eprintln!("replog: writing to stdout: {error}");
    std::process::exit(EXIT_UNUSABLE);
}

#[cfg(test)]
mod tests {
    use super::*;
    use replog_core::{Bytes, ClientId, ClientRequest, LogIndex, NodeId, Term};
    use std::sync::Arc;

    fn record(payload: Payload, first_id: Option<u64>) -> Record {
        Record {
            entry: Entry { index: LogIndex(4), term: Term(2), payload },
            file: Arc::from(Path::new("/d/log-00000000000000000001.jsonl")),
            line: 4,
            offset: 300,
            first_id,
        }
    }

    #[test]
    fn records_print_as_text_or_one_json_object() {
        let request = Payload::Request(ClientRequest {
            client: ClientId(0xab),
            seq: 3,
            commands: vec![Bytes::from("a"), Bytes::from(vec![0xff])],
        });
        let out = Output { json: false, out: BufWriter::new(io::stdout().lock()) };
        assert_eq!(
            out.record(&record(request.clone(), Some(7)), false),
            r#"  4 term:2 request client:00000000000000ab seq:3 ID:7 "a" ID:8 hex:ff"#
        );
        assert_eq!(
            out.record(&record(Payload::Command(Bytes::from("x")), None), true),
            r#"  4 term:2 command ID:? "x"  (covered by the snapshot)"#
        );
        let config = Payload::Config(Membership::voters_only([NodeId(1)]));
        assert!(out.record(&record(config, None), false).ends_with("config voters 0000000000000001@"));
        drop(out);
        let out = Output { json: true, out: BufWriter::new(io::stdout().lock()) };
        let value: Value = serde_json::from_str(&out.record(&record(request, Some(7)), false)).unwrap();
        assert_eq!(value["kind"], "record");
        assert_eq!(value["commands"][1], json!({"id": 8, "data_hex": "ff"}));
        assert_eq!((value["line"].as_u64(), value["offset"].as_u64()), (Some(4), Some(300)));
        assert!(reaches(&record(Payload::Command(Bytes::from("x")), Some(7)), 7));
        assert!(!reaches(&record(Payload::Command(Bytes::from("x")), Some(7)), 8));
    }
}
