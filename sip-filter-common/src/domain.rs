//! Domain allowlist keys: a seeded hash of a host name, case-folded, computed from the
//! last label to the first so that one pass also yields the hash of every suffix after
//! a dot, which is what `*.suffix` entries are stored under. Labels are taken up to
//! eight bytes at a time (one load, one case fold, two mixes), from each label's end.
//!
//! The seed is chosen at random by the daemon when it loads the program, so nobody
//! outside can aim for a collision.

use crate::{
    bounded::repeat,
    scan::{ascii_lowercase_word, bytes_equal, first_flagged_byte, low_bytes_mask, ScanBuf, Vol},
    sip::{Scratch, Span, MAX_HOST_LEN},
};

/// Suffixes looked up for wildcard entries: a host of more labels than this matches a
/// wildcard only through its last `MAX_SUFFIXES` suffixes.
pub const MAX_SUFFIXES: usize = 8;

/// Flags of a domain map entry.
pub const DOMAIN_EXACT: u8 = 1;
/// The entry is `*.name`: it matches names ending in `.name`.
pub const DOMAIN_WILDCARD: u8 = 2;
/// The entry is on the TLS server-name allowlist of its own (`tls.server_names`), exact
/// or as a wildcard: the same keys, flags of their own in the same map.
pub const DOMAIN_SNI_EXACT: u8 = 4;
pub const DOMAIN_SNI_WILDCARD: u8 = 8;

/// FNV-1a's 64-bit prime: the multiplier of [`mix`].
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// Takes the next eight bytes into a running hash (domain keys, scanner prefixes).
#[inline(always)]
pub(crate) fn mix(hash: u64, word: u64) -> u64 {
    let h = (hash ^ word).wrapping_mul(FNV_PRIME);
    h ^ (h >> 29)
}

/// Where [`host_hashes`] leaves the suffix hashes: parser scratch memory (see [`Vol`]).
#[repr(C)]
pub struct HashState {
    /// Hashes of the suffixes after each dot, shortest first.
    suffixes: [Vol<u64>; MAX_SUFFIXES],
    count: Vol<u32>,
    /// The whole host's hash (while hashing: the running hash).
    full: Vol<u64>,
    /// While hashing: where the bytes not yet hashed end.
    end: Vol<u32>,
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
            end: Vol::new(0),
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

/// Hashes the host in `span`, case-folded, last label first. Returns the whole host's
/// hash; the suffixes' hashes are left in `state`.
///
/// The hash takes pieces of up to eight bytes, each with its length: a label is cut
/// into pieces from its end, eight bytes long but for its first (0 to 7 bytes, so a
/// short piece ends a label). Every piece is two words into [`mix`] (its length, then
/// its bytes): distinct hosts give distinct word sequences, and a suffix after a dot
/// is hashed exactly as the same name on its own.
#[inline(always)]
pub fn host_hashes(buf: &ScanBuf, state: &mut HashState, span: Span, seed: u64) -> u64 {
    state.count.set(0);
    state.full.set(seed);
    state.end.set(span.end() as u32);
    let start = span.start();
    // A piece per iteration, several per step (a step is a call); every piece but the
    // last takes at least one byte, so a host of MAX_HOST_LEN bytes fits.
    const PIECES_PER_STEP: usize = 4;
    repeat(
        MAX_HOST_LEN.div_ceil(PIECES_PER_STEP) as u32 + 1,
        &mut |_| {
            let mut hash = state.full.get();
            let mut end = state.end.get() as usize;
            for _ in 0..PIECES_PER_STEP {
                // The 8 bytes before `end`, last byte first (those before the host masked
                // off below); a dot among them ends the label there.
                let left = end.saturating_sub(start).min(8);
                let window = buf.window(end.wrapping_sub(8));
                let dots = bytes_equal(window.swap_bytes(), b'.') & low_bytes_mask(left);
                let piece_len = if dots != 0 {
                    first_flagged_byte(dots)
                } else {
                    left
                };
                // The piece: the window's last `piece_len` bytes, moved to its low bytes.
                let piece = if piece_len == 0 {
                    0
                } else {
                    ascii_lowercase_word(window >> ((8 - piece_len) * 8))
                };
                hash = mix(mix(hash, piece_len as u64), piece);
                end -= piece_len;
                if piece_len == 8 {
                    continue; // the label goes on
                }
                if dots == 0 {
                    // The first label ended at the host's start: done.
                    state.full.set(hash);
                    return false;
                }
                // A dot: the hash so far is its suffix's.
                let count = state.count.get();
                if (count as usize) < MAX_SUFFIXES {
                    state.suffixes[count as usize & (MAX_SUFFIXES - 1)].set(hash);
                    state.count.set(count + 1);
                }
                end -= 1;
            }
            state.full.set(hash);
            state.end.set(end as u32);
            true
        },
    );
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

    /// Labels of every length around the piece size, in any case: each suffix's hash is
    /// that suffix's own key, and names that differ only in where their dots are, or
    /// in a piece's length, get different keys.
    #[test]
    fn long_labels_hash_as_their_own_names() {
        let seed = 0x0fed_cba9_8765_4321;
        let key = |s: &str| allowlist_key(s, seed).map(|(k, _)| k);
        for a in 1..20 {
            for b in [1, 7, 8, 9, 16, 17] {
                let first = "Ab".repeat(a).chars().take(a).collect::<String>();
                let second = "cD".repeat(b).chars().take(b).collect::<String>();
                let host = format!("{first}.{second}.TeSt");
                let mut scratch = Scratch::new();
                let len = scratch.fill(host.as_bytes());
                let full = host_hashes(&scratch.buf, &mut scratch.hash, Span::new(0, len), seed);
                let h = &scratch.hash;
                assert_eq!(h.suffix_count(), 2, "{host}");
                assert_eq!(Some(full), key(&host.to_lowercase()), "{host}");
                assert_eq!(Some(h.suffix(0)), key("test"), "{host}");
                assert_eq!(Some(h.suffix(1)), key(&format!("{second}.test")), "{host}");
            }
        }
        let distinct = [
            "ab.c",
            "a.bc",
            "abc",
            "abcdefgh.x",
            "abcdefghx",
            "abcdefgh",
            "abcdefgh.x.y",
            "a.b.c",
            "a..bc",
            "12345678.12345678",
            "1234567812345678",
        ];
        for (i, x) in distinct.iter().enumerate() {
            for y in &distinct[i + 1..] {
                assert_ne!(key(x), key(y), "{x} / {y}");
            }
        }
    }

    /// A host's hash reads only the host's own bytes, wherever it sits in the buffer.
    #[test]
    fn bytes_around_the_host_do_not_count() {
        let seed = 7;
        let alone = allowlist_key("pbx.example.test", seed).map(|(k, _)| k);
        for before in ["", "sip:", "x.", "sip:alice@sub."] {
            let text = format!("{before}pbx.example.test;transport=udp");
            let mut scratch = Scratch::new();
            let len = scratch.fill(text.as_bytes());
            let host = Span::new(before.len(), before.len() + "pbx.example.test".len());
            assert!(host.end() <= len);
            let full = host_hashes(&scratch.buf, &mut scratch.hash, host, seed);
            assert_eq!(Some(full), alone, "{text}");
        }
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
