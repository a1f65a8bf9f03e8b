//! Scanner User-Agents: a request whose User-Agent value starts with a listed prefix
//! (case-insensitive) comes from a scanner. Prefixes are stored as seeded hashes of their
//! case-folded bytes; the kernel hashes the value forward and looks up each length some
//! listed prefix has.

use crate::{
    bounded::repeat,
    maps::{MAX_SCANNER_AGENT_LEN, SCANNER_SLOTS},
    scan::{ScanBuf, Vol},
    sip::Span,
};

const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

#[inline(always)]
fn fold(hash: u64, byte: u8) -> u64 {
    (hash ^ u64::from(byte.to_ascii_lowercase())).wrapping_mul(FNV_PRIME)
}

/// The key a scanner prefix is stored under, its length and its first byte's slot (see
/// [`first_byte_slot`]); `None` for prefixes the filter cannot match (empty, or longer
/// than [`MAX_SCANNER_AGENT_LEN`]).
pub fn agent_key(prefix: &str, seed: u64) -> Option<(u64, usize, usize)> {
    let bytes = prefix.as_bytes();
    if bytes.is_empty() || bytes.len() > MAX_SCANNER_AGENT_LEN {
        return None;
    }
    let key = bytes.iter().fold(seed, |h, b| fold(h, *b));
    Some((key, bytes.len(), first_byte_slot(bytes[0])))
}

/// The slot of a prefix's first byte, case-folded: letters get slots of their own;
/// other bytes may share one (which only costs a lookup, never a miss).
#[inline(always)]
pub fn first_byte_slot(byte: u8) -> usize {
    usize::from(byte.to_ascii_lowercase()) & (SCANNER_SLOTS - 1)
}

/// Where [`is_scanner`] keeps its running hash (parser scratch memory, see [`Vol`]).
#[repr(C)]
pub struct AgentState {
    hash: Vol<u64>,
    found: Vol<bool>,
}

impl Default for AgentState {
    fn default() -> Self {
        Self::new()
    }
}

impl AgentState {
    pub const fn new() -> Self {
        Self {
            hash: Vol::new(0),
            found: Vol::new(false),
        }
    }
}

/// Does the User-Agent value in `value` start with a listed prefix? `lengths[slot]` has
/// bit `n` set when some prefix whose first byte has that slot is `n` bytes long;
/// `listed` looks a key up, once per such length.
#[inline(always)]
pub fn is_scanner(
    buf: &ScanBuf,
    state: &mut AgentState,
    value: Span,
    seed: u64,
    lengths: &[u64; SCANNER_SLOTS],
    mut listed: impl FnMut(u64) -> bool,
) -> bool {
    const BYTES_PER_STEP: usize = 8;
    if value.is_empty() {
        return false;
    }
    let lengths = lengths[first_byte_slot(buf.byte(value.start()))];
    if lengths == 0 {
        return false; // no prefix starts like this User-Agent: one read, no hashing
    }
    state.hash.set(seed);
    state.found.set(false);
    let (start, len) = (value.start(), value.len());
    repeat(
        MAX_SCANNER_AGENT_LEN.div_ceil(BYTES_PER_STEP) as u32,
        &mut |step: u32| {
            let mut hash = state.hash.get();
            for j in 0..BYTES_PER_STEP {
                let i = step as usize * BYTES_PER_STEP + j;
                if i >= len || i >= MAX_SCANNER_AGENT_LEN {
                    return false;
                }
                hash = fold(hash, buf.byte(start + i));
                if (lengths >> ((i + 1) & 63)) & 1 != 0 && listed(hash) {
                    state.found.set(true);
                    return false;
                }
            }
            state.hash.set(hash);
            true
        },
    );
    state.found.get()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::Scratch;
    use std::collections::HashSet;

    fn scanner(agents: &[&str], value: &str) -> bool {
        let seed = 42;
        let mut keys = HashSet::new();
        let mut lengths = [0u64; SCANNER_SLOTS];
        for agent in agents {
            let (key, len, slot) = agent_key(agent, seed).unwrap();
            keys.insert(key);
            lengths[slot] |= 1 << len;
        }
        let mut scratch = Scratch::new();
        let len = scratch.fill(value.as_bytes());
        let Scratch { buf, agent, .. } = &mut scratch;
        is_scanner(buf, agent, Span::new(0, len), seed, &lengths, |k| {
            keys.contains(&k)
        })
    }

    #[test]
    fn prefixes_match_case_insensitively() {
        let list = ["friendly-scanner", "sipcli", "VaxSIPUserAgent"];
        assert!(scanner(&list, "friendly-scanner"));
        assert!(scanner(&list, "Friendly-Scanner/1.0"));
        assert!(scanner(&list, "sipcli/v1.8"));
        assert!(scanner(&list, "vaxsipuseragent/3.1"));
        assert!(!scanner(&list, "Linphone/5.2.0 (belle-sip/5.2.0)"));
        assert!(!scanner(&list, "friendly"), "shorter than the prefix");
        assert!(!scanner(&list, "my friendly-scanner"), "not at the start");
        assert!(!scanner(&[], "friendly-scanner"));
    }

    #[test]
    fn long_prefixes_are_refused() {
        assert!(agent_key("", 1).is_none());
        assert!(agent_key(&"x".repeat(MAX_SCANNER_AGENT_LEN + 1), 1).is_none());
        assert!(scanner(
            &[&"y".repeat(MAX_SCANNER_AGENT_LEN)],
            &"Y".repeat(70)
        ));
    }
}
