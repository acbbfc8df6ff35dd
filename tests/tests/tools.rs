//! The offline log tools on the data folders a real 3-node cluster leaves: `replog dump` prints
//! every command with the ID `query` gave it (text, `--json`, `--from`), and `replog verify`
//! accepts the three folders, names the folder, file and line of a flipped byte (exit 1), and
//! the index where a record rewritten with a good checksum makes the committed prefixes differ
//! (exit 2). Only processes started here are signalled, and every wait is bounded.

use replog_core::{Bytes, Entry, Payload};
use replog_runtime::inspect::{self, Folder, Item};
use replog_tests::netns::LogEntry;
use replog_tests::{serial, TestCluster};
use serde_json::Value;
use std::path::Path;
use std::time::Duration;

const SECOND: Duration = Duration::from_secs(1);

/// The log's first segment file (the whole log in these short runs).
const FIRST_SEGMENT: &str = "log-00000000000000000001.jsonl";

/// What the appends send: single commands and batches (one entry, several IDs).
const APPENDS: [&[&str]; 5] =
    [&["user_login:alice"], &["a", "b", "c"], &["bob"], &["x", "y"], &["user_logout:alice"]];

/// A 3-node cluster that took the appends and was stopped (followers first, so no new leader
/// appends behind the others' backs), and what `query` showed before the stop: (ID, command).
fn stopped_cluster(name: &str) -> (TestCluster, Vec<(u64, String)>) {
    let mut cluster = TestCluster::start(name, 3);
    let leader = cluster.wait_leader(5 * SECOND).expect("a leader");
    let target = cluster.address(leader);
    for commands in APPENDS {
        let mut args = vec!["append", "-t", target.as_str()];
        for command in commands {
            args.extend(["-c", command]);
        }
        let (code, out, err) = cluster.cli(&args);
        assert_eq!(code, 0, "{args:?}: {out}{err}");
    }
    cluster.wait_converged(5 * SECOND);
    let (first_id, log) = cluster.commands_of(leader);
    assert_eq!(first_id, 1);
    let queried: Vec<(u64, String)> =
        log.iter().map(|LogEntry { id, value, .. }| (id.expect("an ID"), value.clone())).collect();
    assert_eq!(queried.len(), APPENDS.iter().map(|commands| commands.len()).sum::<usize>());
    for k in (0..3).filter(|&k| k != leader).chain([leader]) {
        assert!(cluster.stop(k), "{} stops cleanly", cluster.nodes[k].name);
    }
    (cluster, queried)
}

/// (ID, command) of every command in `dump`'s text output: `ID:7 "text"` pairs.
fn text_commands(out: &str) -> Vec<(u64, String)> {
    let mut commands = Vec::new();
    for line in out.lines().filter(|line| line.starts_with("  ")) {
        let tokens: Vec<&str> = line.split_whitespace().collect();
        for pair in tokens.windows(2) {
            if let Some(id) = pair[0].strip_prefix("ID:") {
                let id = id.parse().unwrap_or_else(|_| panic!("an ID in {line:?}"));
                commands.push((id, pair[1].trim_matches('"').to_string()));
            }
        }
    }
    commands
}

/// Every line of `dump --json`'s output, each an object with a `kind`.
fn json_objects(out: &str) -> Vec<Value> {
    let objects: Vec<Value> = out
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{line:?} is no JSON: {e}")))
        .collect();
    assert!(objects.iter().all(|object| object["kind"].is_string()), "{out}");
    objects
}

/// (ID, command) of every command in `dump --json`'s records, and every object.
fn json_commands(out: &str) -> (Vec<(u64, String)>, Vec<Value>) {
    let objects = json_objects(out);
    let mut commands = Vec::new();
    for record in objects.iter().filter(|object| object["kind"] == "record") {
        let command = |object: &Value| {
            (object["id"].as_u64().expect("an ID"), object["data"].as_str().expect("text").to_string())
        };
        match record["type"].as_str() {
            Some("command") => commands.push(command(record)),
            Some("request") => {
                commands.extend(record["commands"].as_array().expect("commands").iter().map(command))
            }
            _ => {}
        }
    }
    (commands, objects)
}

#[test]
fn dump_prints_every_command_with_the_id_query_gave_it() {
    let _serial = serial();
    let (cluster, queried) = stopped_cluster("tools-dump");
    for k in 0..3 {
        let dir = cluster.data_dir(k);
        let dir = dir.to_str().expect("a UTF-8 path");
        let (code, out, err) = cluster.cli(&["dump", dir]);
        assert_eq!(code, 0, "{out}{err}");
        assert_eq!(text_commands(&out), queried, "{out}");
        let name = &cluster.nodes[k].name;
        assert!(out.starts_with(&format!("metadata.json: {name} at {}", cluster.address(k))), "{out}");
        assert!(out.contains(&format!("{FIRST_SEGMENT}: from entry 1")), "{out}");
        assert!(out.lines().last().is_some_and(|line| line.starts_with("summary: ok:")), "{out}");
        assert!(out.contains("request client:"), "the appends are session requests: {out}");

        let (code, out, err) = cluster.cli(&["dump", dir, "--json"]);
        assert_eq!(code, 0, "{out}{err}");
        let (commands, objects) = json_commands(&out);
        assert_eq!(commands, queried);
        assert_eq!(objects[0]["kind"], "metadata");
        assert_eq!(objects[0]["name"], name.as_str());
        let summary = objects.last().expect("a summary");
        assert_eq!((summary["kind"].as_str(), summary["damaged"].as_u64()), (Some("summary"), Some(0)));
        assert_eq!(summary["last_id"].as_u64(), queried.last().map(|(id, _)| *id));
        let record = objects.iter().find(|object| object["kind"] == "record").expect("a record");
        assert_eq!((record["line"].as_u64(), record["offset"].as_u64()), (Some(1), Some(0)));
    }

    // --from 3: from the batch holding IDs 2..=4 on, nothing before it.
    let dir = cluster.data_dir(1);
    let (code, out, err) = cluster.cli(&["dump", dir.to_str().unwrap(), "--from", "3", "--json"]);
    assert_eq!(code, 0, "{out}{err}");
    let (commands, _) = json_commands(&out);
    assert_eq!(commands, queried[1..], "{out}");
    let (code, out, _) = cluster.cli(&["dump", dir.to_str().unwrap(), "--from", "5"]);
    assert_eq!(code, 0);
    assert_eq!(text_commands(&out), queried[4..], "{out}");
    let (code, out, err) = cluster.cli(&["dump", dir.to_str().unwrap(), "--from", "99"]);
    assert_eq!((code, text_commands(&out).len()), (0, 0));
    assert!(err.contains("no record holds a command ID at or after 99"), "{err}");
}

/// Rewrites the record of entry `index` in `dir`'s first segment as `entry`, with a good
/// checksum (a disk that lies, or an operator's mistake, not rot).
fn rewrite_record(dir: &Path, entry: &Entry) {
    let folder = Folder::open(dir).expect("a data folder");
    let record = folder
        .records()
        .find_map(|item| match item {
            Item::Record(record) if record.entry.index == entry.index => Some(record),
            _ => None,
        })
        .expect("the record");
    let mut bytes = std::fs::read(&record.file).unwrap();
    let start = record.offset as usize;
    let end = start + bytes[start..].iter().position(|&b| b == b'\n').expect("a whole line") + 1;
    bytes.splice(start..end, inspect::encode_record(entry));
    std::fs::write(&record.file, &bytes).unwrap();
}

#[test]
fn verify_accepts_the_folders_then_names_damage_then_the_first_difference() {
    let _serial = serial();
    let (cluster, _) = stopped_cluster("tools-verify");
    let dirs: Vec<String> = (0..3).map(|k| cluster.data_dir(k).to_str().unwrap().to_string()).collect();
    let verify = |dirs: &[String]| {
        let mut args = vec!["verify"];
        args.extend(dirs.iter().map(String::as_str));
        cluster.cli(&args)
    };
    let (code, out, err) = verify(&dirs);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("verdict: ok"), "{out}");
    for dir in &dirs {
        assert!(out.contains(&format!("{dir}: ok: ")), "{out}");
    }
    // The offline tools open no connection: broken or partial TLS settings in the environment
    // (an expired exported certificate, say) must not turn their verdict into exit 1, "damage".
    for tool in [vec!["verify", dirs[0].as_str()], vec!["dump", dirs[0].as_str()]] {
        let output = std::process::Command::new(replog_tests::replog_binary())
            .args(&tool)
            .env("REPLOG_TLS_CERT", "/nonexistent/cert.pem")
            .env_remove("REPLOG_TLS_KEY")
            .env_remove("REPLOG_TLS_CA")
            .output()
            .expect("running replog");
        assert!(output.status.success(), "{tool:?}: {}", String::from_utf8_lossy(&output.stderr));
    }

    // A flipped byte in node2's third record: dump and verify name the file and line.
    let segment = cluster.data_dir(1).join(FIRST_SEGMENT);
    let good = std::fs::read(&segment).unwrap();
    let mut bytes = good.clone();
    let third = bytes.iter().enumerate().filter(|(_, &b)| b == b'\n').nth(1).expect("three records").0 + 1;
    bytes[third + 12] ^= 0x01;
    std::fs::write(&segment, &bytes).unwrap();
    let at = format!("{} line 3 (byte {third})", segment.display());
    let (code, out, _) = cluster.cli(&["dump", &dirs[1]]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains(&format!("DAMAGE: {at}")) && out.contains("checksum mismatch"), "{out}");
    assert!(out.contains("summary: DAMAGED"), "{out}");
    let (code, out, _) = cluster.cli(&["dump", &dirs[1], "--json"]);
    assert_eq!(code, 1);
    let objects = json_objects(&out);
    let damage = objects.iter().find(|object| object["kind"] == "damage").expect("a damage object");
    assert_eq!((damage["line"].as_u64(), damage["offset"].as_u64()), (Some(3), Some(third as u64)));
    let (code, out, err) = verify(&dirs);
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains(&format!("{}: DAMAGED", dirs[1])) && out.contains(&at), "{out}");
    assert!(out.contains(&format!("verdict: damaged data in {}", dirs[1])), "{out}");
    std::fs::write(&segment, &good).unwrap();

    // node3's entry holding "bob" rewritten as "eve", with a good checksum: the checksums hold,
    // the committed prefixes differ there.
    let folder = Folder::open(&cluster.data_dir(2)).unwrap();
    let mut entry = folder
        .records()
        .find_map(|item| match item {
            Item::Record(record) if record.entry.payload.commands() == [Bytes::from("bob")] => {
                Some(record.entry)
            }
            _ => None,
        })
        .expect("the entry holding bob");
    match &mut entry.payload {
        Payload::Request(request) => request.commands = vec![Bytes::from("eve")],
        payload => *payload = Payload::Command(Bytes::from("eve")),
    }
    rewrite_record(&cluster.data_dir(2), &entry);
    let (code, out, _) = cluster.cli(&["dump", &dirs[2]]);
    assert_eq!(code, 0, "its checksums hold: {out}");
    let (code, out, err) = verify(&dirs);
    assert_eq!(code, 2, "{out}{err}");
    assert!(out.contains(&format!("DISAGREE at entry {}", entry.index.0)), "{out}");
    assert!(out.contains(&format!("{}: term {}", dirs[2], entry.term.0)) && out.contains("\"eve\""), "{out}");
    assert!(out.contains("\"bob\""), "{out}");

    // A folder that is not there: exit 3, as is bad usage.
    let missing = cluster.dir.join("no-such-folder").to_str().unwrap().to_string();
    let (code, _, err) = verify(&[dirs[0].clone(), missing]);
    assert_eq!(code, 3, "{err}");
    assert_eq!(verify(&[]).0, 3);
}
