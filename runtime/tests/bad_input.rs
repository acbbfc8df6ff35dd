//! Bad input never panics: arbitrary bytes as frames and payloads, and arbitrary damage to a
//! data folder, give an error or a repaired state, never a crash or a huge allocation.

use proptest::prelude::*;
use replog_runtime::fs::RealFs;
use replog_runtime::storage::{Identity, Storage};
use replog_runtime::{codec, frame};
use std::path::PathBuf;

fn identity() -> Identity {
    Identity { name: "fuzz".into(), address: "127.0.0.1:1".into() }
}

fn folder(case: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("replog-fuzz-{case}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_payloads_decode_or_fail(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = codec::decode(&bytes);
        let _ = frame::decode(&bytes);
    }

    #[test]
    fn payloads_with_a_valid_kind_byte_decode_or_fail(kind in prop_oneof![Just(1u8), Just(2), Just(10), Just(11), Just(20), Just(21), Just(23)], rest in proptest::collection::vec(any::<u8>(), 0..128)) {
        let mut bytes = vec![kind];
        bytes.extend(rest);
        let _ = codec::decode(&bytes);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// A valid log with bytes flipped, cut or appended anywhere: opening it either succeeds
    /// (the damage was a torn tail, cut off) or names the file; it never panics.
    #[test]
    fn damaged_logs_are_repaired_or_refused(cut in 0usize..400, flip in proptest::option::of((0usize..400, any::<u8>())), junk in proptest::collection::vec(any::<u8>(), 0..40)) {
        let dir = folder("log");
        let (mut storage, _) = Storage::open(RealFs::new(), &dir, identity()).unwrap();
        storage.save_hard_state(replog_core::HardState { term: replog_core::Term(1), voted_for: None, commit: replog_core::LogIndex(0) }).unwrap();
        let entries: Vec<replog_core::Entry> = (1..=6).map(|i| replog_core::Entry {
            index: replog_core::LogIndex(i),
            term: replog_core::Term(1),
            payload: replog_core::Payload::Command(replog_core::Bytes::from(format!("command {i}").as_str())),
        }).collect();
        storage.append(&entries).unwrap();
        storage.request_sync(true).unwrap();
        drop(storage);
        let log = dir.join(replog_runtime::storage::segment_name(replog_core::LogIndex(1)));
        let mut bytes = std::fs::read(&log).unwrap();
        bytes.truncate(cut.min(bytes.len()));
        if let Some((at, value)) = flip {
            if !bytes.is_empty() {
                let at = at % bytes.len();
                bytes[at] = value;
            }
        }
        bytes.extend(junk);
        std::fs::write(&log, &bytes).unwrap();
        match Storage::open(RealFs::new(), &dir, identity()) {
            Ok((_, recovery)) => prop_assert!(recovery.entries.len() <= 6),
            Err(error) => prop_assert!(error.to_string().contains(".jsonl"), "{error}"),
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
