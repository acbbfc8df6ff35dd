//! Helpers shared by the storage tests: a scratch folder, an identity, entries, file names.

#![allow(dead_code)] // each test file uses its own subset

use replog_core::{Bytes, Entry, HardState, LogIndex, Payload, Term};
use replog_runtime::fs::FileSystem;
use replog_runtime::fs::RealFs;
use replog_runtime::storage::{
    parse_index_name, parse_segment_name, segment_name, Identity, OnCorruption, Recovery, Storage,
    StorageError, StorageOptions,
};
use std::path::{Path, PathBuf};

/// An empty scratch folder for one test, removed when dropped.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("replog-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        Scratch(dir)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    /// The segment files, oldest first.
    pub fn segments(&self) -> Vec<String> {
        self.names().into_iter().filter(|name| parse_segment_name(name).is_some()).collect()
    }

    /// The segment index files, oldest first.
    pub fn indexes(&self) -> Vec<String> {
        self.names().into_iter().filter(|name| parse_index_name(name).is_some()).collect()
    }

    fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(&self.0)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn identity() -> Identity {
    Identity { name: "node1".into(), address: "127.0.0.1:8080".into() }
}

pub fn entry(index: u64, term: u64) -> Entry {
    let data = format!("command {index} of term {term}");
    Entry { index: LogIndex(index), term: Term(term), payload: Payload::Command(Bytes::from(data.as_str())) }
}

pub fn entries(from: u64, to: u64, term: u64) -> Vec<Entry> {
    (from..=to).map(|index| entry(index, term)).collect()
}

/// Segments of a few records each (a record here is about 75 bytes).
pub fn tiny() -> StorageOptions {
    StorageOptions { segment_bytes_max: 200 }
}

pub fn open(dir: &Path, options: StorageOptions) -> Result<(Storage<RealFs>, Recovery), StorageError> {
    Storage::open_with_options(RealFs::new(), dir, identity(), OnCorruption::Refuse, options)
}

pub fn open_repair(dir: &Path, options: StorageOptions) -> Result<(Storage<RealFs>, Recovery), StorageError> {
    Storage::open_with_options(RealFs::new(), dir, identity(), OnCorruption::Repair, options)
}

/// A folder holding entries `1..=last` of term 1, synced, with term 1 saved, closed cleanly.
pub fn written(dir: &Path, last: u64, options: StorageOptions) {
    let (mut storage, _) = open(dir, options).unwrap();
    storage.save_hard_state(HardState { term: Term(1), voted_for: None, commit: LogIndex(0) }).unwrap();
    for index in 1..=last {
        storage.append(&[entry(index, 1)]).unwrap();
        storage.request_sync(true).unwrap();
    }
    storage.close().unwrap();
}

pub fn first_segment() -> String {
    segment_name(LogIndex(1))
}

/// The whole log after the snapshot, read back from the files.
pub fn all_entries<F: FileSystem>(storage: &mut Storage<F>) -> Vec<Entry> {
    storage.read_entries(storage.first_index(), storage.last_index(), u64::MAX).unwrap()
}
