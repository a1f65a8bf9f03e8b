//! Domain allowlist keys: a seeded hash of a host name, case-folded, computed from the
//! last byte to the first so that one pass also yields the hash of every suffix after a
//! dot, which is what `*.suffix` entries are stored under.
//!
//! The seed is chosen at random by the daemon when it loads the program, so nobody
//! outside can aim for a collision.

use crate::{
    bounded::repeat,
    scan::{ScanBuf, Vol},
    sip::{Scratch, Span, MAX_HOST_LEN},
};

/// Suffixes looked up for wildcard entries: a host of more labels than this matches a
/// wildcard only through its last `MAX_SUFFIXES` suffixes.
pub const MAX_SUFFIXES: usize = 8;

/// Flags of a domain map entry.
pub const DOMAIN_EXACT: u8 = 1;
/// The entry is `*.name`: it matches names ending in `.name`.
pub const DOMAIN_WILDCARD: u8 = 2;

/// FNV-1a's 64-bit prime (also the scanner prefixes' multiplier).
pub(crate) const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// Where [`host_hashes`] leaves the suffix hashes: parser scratch memory (see [`Vol`]).
#[repr(C)]
pub struct HashState {
    /// Hashes of the suffixes after each dot, shortest first.
    suffixes: [Vol<u64>; MAX_SUFFIXES],
    count: Vol<u32>,
    /// The whole host's hash.
    full: Vol<u64>,
}

impl Default for HashState {
    fn default() -> Self {
        Self::new()
    }
}

impl HashState {
    pub const fn new() -> Self {
        Self {
            suffixes: [Vol::new(0); MAX_SUFFIXES],
            count: Vol::new(0),
            full: Vol::new(0),
        }
    }

    /// How many suffix hashes the last [`host_hashes`] left.
    pub fn suffix_count(&self) -> usize {
        self.count.get() as usize
    }

    /// The `i`th suffix hash (masked into range).
    pub fn suffix(&self, i: usize) -> u64 {
        self.suffixes[i & (MAX_SUFFIXES - 1)].get()
    }
}

/// Hashes the host in `span`: FNV-1a over the case-folded bytes, last byte first.
/// Returns the whole host's hash; the suffixes' hashes are left in `state`.
#[inline(always)]
pub fn host_hashes(buf: &ScanBuf, state: &mut HashState, span: Span, seed: u64) -> u64 {
    state.count.set(0);
    state.full.set(seed);
    let (start, len) = (span.start(), span.len());
    // Sixteen bytes per step (a step is a call), the hash carried in memory (see
    // `crate::bounded`).
    const BYTES_PER_STEP: usize = 16;
    repeat((MAX_HOST_LEN / BYTES_PER_STEP) as u32, &mut |step: u32| {
        let mut hash = state.full.get();
        for j in 0..BYTES_PER_STEP {
            let i = step as usize * BYTES_PER_STEP + j;
            if i >= len {
                state.full.set(hash);
                return false;
            }
            let b = buf.byte(start + len - 1 - i);
            if b == b'.' {
                let count = state.count.get();
                if (count as usize) < MAX_SUFFIXES {
                    state.suffixes[count as usize & (MAX_SUFFIXES - 1)].set(hash);
                    state.count.set(count + 1);
                }
            }
            hash = (hash ^ u64::from(b.to_ascii_lowercase())).wrapping_mul(FNV_PRIME);
        }
        state.full.set(hash);
        true
    });
    state.full.get()
}

/// The key a domain allowlist entry is stored under, with its flag: `*.example.test`
/// is the hash of `example.test` flagged [`DOMAIN_WILDCARD`]. `None` for names the
/// allowlist cannot hold (empty, too long, a bare `*`).
pub fn allowlist_key(entry: &str, seed: u64) -> Option<(u64, u8)> {
    let (name, flag) = match entry.strip_prefix("*.") {
        Some(suffix) => (suffix, DOMAIN_WILDCARD),
        None => (entry, DOMAIN_EXACT),
    };
    let name = name.strip_suffix('.').unwrap_or(name);
    if name.is_empty() || name.len() > MAX_HOST_LEN || name.contains('*') {
        return None;
    }
    let mut scratch = Scratch::new();
    let len = scratch.fill(name.as_bytes());
    Some((
        host_hashes(&scratch.buf, &mut scratch.hash, Span::new(0, len), seed),
        flag,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suffix_hashes_equal_hashes_of_suffixes() {
        let seed = 0x1234_5678_9abc_def0;
        let mut scratch = Scratch::new();
        let len = scratch.fill(b"a.PBX.Example.test");
        let full = host_hashes(&scratch.buf, &mut scratch.hash, Span::new(0, len), seed);
        let h = &scratch.hash;
        assert_eq!(h.suffix_count(), 3);
        let key = |s| allowlist_key(s, seed).map(|(k, _)| k);
        assert_eq!(Some(h.suffix(0)), key("test"));
        assert_eq!(Some(h.suffix(1)), key("example.test"));
        assert_eq!(Some(h.suffix(2)), key("pbx.example.TEST"));
        assert_eq!(Some(full), key("a.pbx.example.test."));
        assert_eq!(
            allowlist_key("*.example.test", seed),
            Some((h.suffix(1), DOMAIN_WILDCARD))
        );
    }

    #[test]
    fn seed_changes_every_key() {
        assert_ne!(
            allowlist_key("example.test", 1),
            allowlist_key("example.test", 2)
        );
    }

    #[test]
    fn unusable_entries_are_refused() {
        for bad in ["", "*", "*.", "a.*.test", "."] {
            assert_eq!(allowlist_key(bad, 0), None, "{bad:?}");
        }
    }
}
