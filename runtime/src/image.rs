//! The state machine's image in a snapshot. replog's state machine is the log itself, so what a
//! snapshot must carry is small: how many client commands the entries it covers held (so a
//! command's ID, its number since the log began, stays the same after trimming), and a running
//! digest of those commands (so two nodes' snapshots of the same prefix can be compared, and a
//! snapshot of the wrong entries is caught by the simulator's checker).
//!
//! On disk and on the wire it is one line of JSON: `{"commands":N,"digest":"0123abcd..."}`, and
//! since client sessions, `"sessions":{...}`: the session table at the snapshot's index
//! (`sessions.rs`), which a node that restarts from the snapshot or installs it goes on from.

use crate::sessions::{SessionLimits, SessionTable};
use replog_core::{Bytes, Entry};

/// What the entries through a snapshot's last index amount to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Image {
    /// Client commands among them (no-ops are not commands).
    pub commands: u64,
    /// FNV-1a over each command's length (8 bytes, big-endian) and bytes, in log order.
    pub digest: u64,
}

impl Image {
    /// The image of the empty log.
    pub fn empty() -> Image {
        Image { commands: 0, digest: replog_core::checksum(&[]) }
    }

    /// This image followed by `entries` (which must continue it).
    #[must_use]
    pub fn fold<'a>(mut self, entries: impl IntoIterator<Item = &'a Entry>) -> Image {
        for entry in entries {
            for data in entry.payload.commands() {
                self.commands += 1;
                self.digest = fnv_continue(self.digest, &(data.len() as u64).to_be_bytes());
                self.digest = fnv_continue(self.digest, data.as_slice());
            }
        }
        self
    }

    pub fn encode(&self) -> Bytes {
        Bytes::from(
            format!("{{\"commands\":{},\"digest\":\"{:016x}\"}}", self.commands, self.digest).as_str(),
        )
    }

    /// The image with the session table at the same point (left out while the table is
    /// pristine, so logs without sessions snapshot as before).
    pub fn encode_with(&self, sessions: &SessionTable) -> Bytes {
        if sessions.is_pristine() {
            return self.encode();
        }
        let mut text =
            format!("{{\"commands\":{},\"digest\":\"{:016x}\",\"sessions\":", self.commands, self.digest);
        text.push_str(&sessions.encode().to_string());
        text.push('}');
        Bytes::from(text.into_bytes())
    }

    pub fn decode(bytes: &[u8]) -> Result<Image, String> {
        let wire = decode_wire(bytes)?;
        let digest = u64::from_str_radix(&wire.digest, 16)
            .map_err(|_| format!("snapshot digest {:?} is not hex", wire.digest))?;
        Ok(Image { commands: wire.commands, digest })
    }

    /// The session table a snapshot's image carries (an empty one if it predates sessions).
    pub fn decode_sessions(bytes: &[u8], limits: SessionLimits) -> Result<SessionTable, String> {
        match decode_wire(bytes)?.sessions {
            Some(value) => SessionTable::decode(value, limits),
            None => Ok(SessionTable::new(limits)),
        }
    }
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Wire {
    commands: u64,
    digest: String,
    sessions: Option<serde_json::Value>,
}

fn decode_wire(bytes: &[u8]) -> Result<Wire, String> {
    serde_json::from_slice(bytes).map_err(|e| format!("unreadable snapshot image: {e}"))
}

fn fnv_continue(mut hash: u64, bytes: &[u8]) -> u64 {
    for &byte in bytes {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;
    use replog_core::Payload;
    use replog_core::{LogIndex, Term};

    #[test]
    fn images_count_commands_and_round_trip() {
        let entry = |index, payload| Entry { index: LogIndex(index), term: Term(1), payload };
        let entries = [
            entry(1, Payload::Noop),
            entry(2, Payload::Command("a".into())),
            entry(3, Payload::Command("bc".into())),
        ];
        let image = Image::empty().fold(&entries);
        assert_eq!(image.commands, 2);
        assert_eq!(Image::decode(image.encode().as_slice()).unwrap(), image);
        // Folding in two steps gives the same image as in one.
        assert_eq!(Image::empty().fold(&entries[..2]).fold(&entries[2..]), image);
        assert_ne!(Image::empty().fold(&entries[1..2]).digest, Image::empty().fold(&entries[2..]).digest);
        assert!(Image::decode(b"{\"commands\":1}").is_err());
        assert!(Image::decode(b"{\"commands\":1,\"digest\":\"zz\"}").is_err());
    }
}
