//! Trace digests and log-prefix fingerprints, with the runtime's FNV-1a (stable on every
//! machine and Rust version).

pub use replog_runtime::fnv::Fnv;
use std::hash::{Hash, Hasher};

/// The hash of one value.
pub fn of<T: Hash + ?Sized>(value: &T) -> u64 {
    let mut hasher = Fnv::default();
    value.hash(&mut hasher);
    hasher.finish()
}

/// Chains a log prefix's fingerprint with the next entry's.
pub fn chain(prefix: u64, entry: u64) -> u64 {
    of(&(prefix, entry))
}
