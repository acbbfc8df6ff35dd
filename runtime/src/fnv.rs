//! FNV-1a, 64-bit: a small hash that is the same on every machine and Rust version (std's
//! hasher promises neither). Node ids derive from it, and the simulator's trace digests and
//! log fingerprints use it too: one implementation.

use std::hash::Hasher;

/// The FNV-1a hasher.
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

/// FNV-1a of raw bytes.
pub fn of_bytes(bytes: &[u8]) -> u64 {
    let mut hasher = Fnv::default();
    hasher.write(bytes);
    hasher.finish()
}
