//! The line formats of the data folder, each one JSON object on one line whose last field is a
//! CRC-32 of the bytes before it (`...,"crc":N}`), so a torn or rotten line is always told apart
//! from a good one:
//!
//! - a log record: `{"index":1,"term":1,"type":"command","data":"user_login:alice","crc":N}`
//!   (`"type":"noop"` for leaders' no-ops; `"data_hex"` instead of `"data"` for bytes that are
//!   not UTF-8; `"type":"config","config":{"members":{...}}` for a membership change;
//!   `"type":"request","client":"<16 hex digits>","seq":N,"commands":[{"data":"..."},...]` for a
//!   client session's request, each command with `"data"` or `"data_hex"`);
//! - `snapshot.json`: `{"index":N,"term":T,"config":{...},"data":"..."|"data_hex":"...","crc":N}`;
//! - the header line of `snapshot.partial`:
//!   `{"index":N,"term":T,"config":{...},"total":B,"checksum":C,"crc":N}`, raw bytes after it.
//!
//! `"config"` is the configuration in force (`{"members":{"<id>":{"address":"...","role":
//! "voter"|"learner"|"joining"}}}`); files written before membership changes lack it.

use replog_core::{
    Bytes, ClientId, ClientRequest, Entry, LogIndex, Membership, Payload, Snapshot, SnapshotMeta, Term,
};
use std::io::Write;

/// One log record, with its newline.
pub(crate) fn encode_record(entry: &Entry, out: &mut Vec<u8>) {
    let start = out.len();
    let _ = write!(out, "{{\"index\":{},\"term\":{},", entry.index.0, entry.term.0);
    match &entry.payload {
        Payload::Noop => out.extend_from_slice(b"\"type\":\"noop\""),
        Payload::Command(data) => {
            out.extend_from_slice(b"\"type\":\"command\",");
            encode_data(data.as_slice(), out);
        }
        Payload::Config(membership) => {
            out.extend_from_slice(b"\"type\":\"config\",\"config\":");
            serde_json::to_writer(&mut *out, membership).expect("writing to a Vec cannot fail");
        }
        Payload::Request(request) => {
            let _ = write!(
                out,
                "\"type\":\"request\",\"client\":\"{:016x}\",\"seq\":{},\"commands\":[",
                request.client.0, request.seq
            );
            for (i, command) in request.commands.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                out.push(b'{');
                encode_data(command.as_slice(), out);
                out.push(b'}');
            }
            out.push(b']');
        }
    }
    end_line(start, out);
}

/// `"data":"<text>"` for UTF-8, else `"data_hex":"<hex>"`.
fn encode_data(data: &[u8], out: &mut Vec<u8>) {
    match std::str::from_utf8(data) {
        Ok(text) => {
            out.extend_from_slice(b"\"data\":");
            serde_json::to_writer(&mut *out, text).expect("writing to a Vec cannot fail");
        }
        Err(_) => {
            out.extend_from_slice(b"\"data_hex\":\"");
            for byte in data {
                let _ = write!(out, "{byte:02x}");
            }
            out.push(b'"');
        }
    }
}

/// Appends `,"crc":N}` and the newline to the line that starts at `start`.
pub(crate) fn end_line(start: usize, out: &mut Vec<u8>) {
    let crc = crc32fast::hash(&out[start..]);
    let _ = writeln!(out, ",\"crc\":{crc}}}");
}

#[derive(serde::Deserialize)]
struct Record {
    index: u64,
    term: u64,
    #[serde(rename = "type")]
    kind: String,
    data: Option<String>,
    data_hex: Option<String>,
    config: Option<Membership>,
    client: Option<String>,
    seq: Option<u64>,
    commands: Option<Vec<RecordedCommand>>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RecordedCommand {
    data: Option<String>,
    data_hex: Option<String>,
}

/// Verifies the checksum that ends `{...,"crc":N}` (the line without its newline).
pub(crate) fn checked(line: &str) -> Result<(), String> {
    let at = line.rfind(",\"crc\":").ok_or("record has no checksum")?;
    let digits = line[at + 7..].strip_suffix('}').ok_or("record does not end its object")?;
    let expected: u32 = digits.parse().map_err(|_| "checksum is not a number")?;
    let actual = crc32fast::hash(&line.as_bytes()[..at]);
    if actual != expected {
        return Err(format!("checksum mismatch (recorded {expected}, computed {actual})"));
    }
    Ok(())
}

/// A log record (the line without its newline).
pub(crate) fn decode_record(line: &[u8]) -> Result<Entry, String> {
    let line = std::str::from_utf8(line).map_err(|_| "record is not UTF-8".to_string())?;
    checked(line)?;
    let record: Record = serde_json::from_str(line).map_err(|e| format!("unreadable record: {e}"))?;
    let session = (record.client, record.seq, record.commands);
    let payload = match (record.kind.as_str(), record.data, record.data_hex, record.config, session) {
        ("noop", None, None, None, (None, None, None)) => Payload::Noop,
        ("command", data, data_hex, None, (None, None, None)) => {
            Payload::Command(decode_data(data, data_hex)?)
        }
        ("config", None, None, Some(membership), (None, None, None)) => Payload::Config(membership),
        ("request", None, None, None, (Some(client), Some(seq), Some(commands))) if !commands.is_empty() => {
            let client = u64::from_str_radix(&client, 16).map_err(|_| "request client is not hex")?;
            let commands = commands
                .into_iter()
                .map(|command| decode_data(command.data, command.data_hex))
                .collect::<Result<Vec<Bytes>, String>>()?;
            Payload::Request(ClientRequest { client: ClientId(client), seq, commands })
        }
        _ => return Err("record has an unknown type or payload".into()),
    };
    Ok(Entry { index: LogIndex(record.index), term: Term(record.term), payload })
}

fn decode_data(data: Option<String>, data_hex: Option<String>) -> Result<Bytes, String> {
    match (data, data_hex) {
        (Some(text), None) => Ok(Bytes::from(text.into_bytes())),
        (None, Some(hex)) => {
            if hex.len() % 2 != 0 {
                return Err("odd-length data_hex".into());
            }
            let bytes: Result<Vec<u8>, _> =
                (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16)).collect();
            Ok(Bytes::from(bytes.map_err(|_| "data_hex is not hex")?))
        }
        _ => Err("expected one of data and data_hex".into()),
    }
}

/// The complete, valid records at the start of `bytes`, the first of which must be entry
/// `next_index`, each with where it ends (after its newline). Stops at the first incomplete or
/// damaged record: what a reader of this prefix of a log file could recover.
pub fn scan_records(bytes: &[u8], next_index: u64) -> Vec<(Entry, usize)> {
    let mut records = Vec::new();
    let mut position = 0;
    while let Some(length) = bytes[position..].iter().position(|&b| b == b'\n') {
        let entry = match decode_record(&bytes[position..position + length]) {
            Ok(entry) if entry.index.0 == next_index + records.len() as u64 => entry,
            _ => break,
        };
        position += length + 1;
        records.push((entry, position));
    }
    records
}

/// The whole `snapshot.json`.
pub(crate) fn encode_snapshot(snapshot: &Snapshot) -> Vec<u8> {
    let mut out = Vec::with_capacity(snapshot.data.len() + 64);
    let _ =
        write!(out, "{{\"index\":{},\"term\":{},\"config\":", snapshot.meta.index.0, snapshot.meta.term.0);
    serde_json::to_writer(&mut out, &snapshot.membership).expect("writing to a Vec cannot fail");
    out.push(b',');
    encode_data(snapshot.data.as_slice(), &mut out);
    end_line(0, &mut out);
    out
}

#[derive(serde::Deserialize)]
struct SnapshotRecord {
    index: u64,
    term: u64,
    #[serde(default)]
    config: Membership,
    data: Option<String>,
    data_hex: Option<String>,
}

/// What a `snapshot.json` holds, if it is complete and its checksum holds; why not otherwise.
pub fn decode_snapshot(bytes: &[u8]) -> Result<Snapshot, String> {
    let text = std::str::from_utf8(bytes).map_err(|_| "not UTF-8".to_string())?;
    let line = text.strip_suffix('\n').ok_or("incomplete (no newline at its end)")?;
    checked(line)?;
    let record: SnapshotRecord = serde_json::from_str(line).map_err(|e| format!("unreadable: {e}"))?;
    let meta = SnapshotMeta { index: LogIndex(record.index), term: Term(record.term) };
    Ok(Snapshot { meta, membership: record.config, data: decode_data(record.data, record.data_hex)? })
}

/// Which transfer a `snapshot.partial` holds the first bytes of.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct PartialHeader {
    pub(crate) meta: SnapshotMeta,
    pub(crate) membership: Membership,
    pub(crate) total: u64,
    pub(crate) checksum: u64,
}

/// The header line of `snapshot.partial`, with its newline.
pub(crate) fn encode_partial_header(header: &PartialHeader) -> Vec<u8> {
    let mut out = Vec::with_capacity(128);
    let _ = write!(
        out,
        "{{\"index\":{},\"term\":{},\"config\":{},\"total\":{},\"checksum\":{}",
        header.meta.index.0,
        header.meta.term.0,
        serde_json::to_string(&header.membership).expect("a configuration serializes"),
        header.total,
        header.checksum
    );
    end_line(0, &mut out);
    out
}

#[derive(serde::Deserialize)]
struct PartialRecord {
    index: u64,
    term: u64,
    #[serde(default)]
    config: Membership,
    total: u64,
    checksum: u64,
}

/// The header of a `snapshot.partial` and where its data starts; why not, if it is damaged.
pub(crate) fn decode_partial_header(bytes: &[u8]) -> Result<(PartialHeader, usize), String> {
    let length = bytes.iter().position(|&b| b == b'\n').ok_or("header line is incomplete")?;
    let line = std::str::from_utf8(&bytes[..length]).map_err(|_| "header is not UTF-8".to_string())?;
    checked(line)?;
    let record: PartialRecord = serde_json::from_str(line).map_err(|e| format!("unreadable header: {e}"))?;
    let meta = SnapshotMeta { index: LogIndex(record.index), term: Term(record.term) };
    let header =
        PartialHeader { meta, membership: record.config, total: record.total, checksum: record.checksum };
    Ok((header, length + 1))
}

/// A JSON string literal.
pub(crate) fn json_string(text: &str) -> String {
    serde_json::to_string(text).expect("strings serialize")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_requests_round_trip_as_records() {
        let entry = Entry {
            index: LogIndex(3),
            term: Term(2),
            payload: Payload::Request(ClientRequest {
                client: ClientId(u64::MAX),
                seq: 9,
                commands: vec![Bytes::from("text \"quoted\""), Bytes::from(vec![0xff, 0x00])],
            }),
        };
        let mut line = Vec::new();
        encode_record(&entry, &mut line);
        let text = String::from_utf8(line.clone()).unwrap();
        assert!(
            text.contains(r#""type":"request","client":"ffffffffffffffff","seq":9,"commands":[{"data":"#),
            "{text}"
        );
        assert_eq!(decode_record(&line[..line.len() - 1]).unwrap(), entry);
    }

    #[test]
    fn records_and_snapshots_round_trip_and_catch_damage() {
        let entry = Entry {
            index: LogIndex(7),
            term: Term(3),
            payload: Payload::Command(Bytes::from(vec![0xff, 0, b'"'])),
        };
        let mut line = Vec::new();
        encode_record(&entry, &mut line);
        assert_eq!(decode_record(&line[..line.len() - 1]), Ok(entry));
        line[3] ^= 0x01;
        assert!(decode_record(&line[..line.len() - 1]).unwrap_err().contains("checksum"));

        for data in [Bytes::from("text \"quoted\"\n"), Bytes::from(vec![0x80, 1]), Bytes::from("")] {
            let membership = Membership::voters_only([replog_core::NodeId(1), replog_core::NodeId(2)]);
            let meta = SnapshotMeta { index: LogIndex(9), term: Term(2) };
            let snapshot = Snapshot { meta, membership, data };
            let bytes = encode_snapshot(&snapshot);
            assert_eq!(decode_snapshot(&bytes), Ok(snapshot));
            assert!(decode_snapshot(&bytes[..bytes.len() - 1]).is_err(), "a torn snapshot is refused");
        }

        let header = PartialHeader {
            meta: SnapshotMeta { index: LogIndex(4), term: Term(1) },
            membership: Membership::voters_only([replog_core::NodeId(3)]),
            total: 10,
            checksum: 99,
        };
        let mut bytes = encode_partial_header(&header);
        let length = bytes.len();
        bytes.extend_from_slice(b"abc");
        assert_eq!(decode_partial_header(&bytes), Ok((header, length)));
        assert!(decode_partial_header(&bytes[..length - 2]).is_err());
    }
}
