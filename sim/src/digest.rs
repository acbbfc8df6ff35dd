//! FNV-1a: a small, stable hash, the same on every machine and Rust version (std's hasher
//! promises neither), for trace digests and log-prefix fingerprints.

use std::hash::{Hash, Hasher};

#[derive(Clone, Copy, Debug)]
pub struct Fnv(pub u64);

impl Default for Fnv {
    fn default() -> Fnv {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 ^= u64::from(byte);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
}

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
