//! Scanner User-Agents: a request whose User-Agent's product token (the text before the
//! first byte that is no token character: `/`, a space, `(`, `;`, …) is a listed name (case-insensitive), or whose User-Agent
//! starts with a listed prefix (an entry ending in `*`), comes from a scanner. So `sipcli`
//! matches `sipcli/v1.8` but not `SIPClient/2.1 (Android)`, and `sipcli*` both. Entries
//! are stored as seeded hashes of their case-folded bytes, taken eight bytes at a time,
//! with their kind ([`AGENT_TOKEN`], [`AGENT_PREFIX`]) as the value; the kernel hashes
//! the value the same way and looks up each length some entry has.

use crate::{
    bounded::repeat,
    domain::mix,
    maps::{MAX_SCANNER_AGENT_LEN, SCANNER_SLOTS},
    scan::{ascii_lowercase_word, low_bytes_mask, ScanBuf, Vol},
    sip::Span,
};

/// The key of the prefix of `len` bytes, from the hash of its whole words before the
/// last and its last (partial) word, masked to the prefix.
#[inline(always)]
fn finish(hash: u64, last_word: u64, len: usize) -> u64 {
    let h = mix(hash, last_word) ^ len as u64;
    // A finaliser (splitmix64's) so that every input bit reaches every key bit.
    let h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    let h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// An entry's kind (its value in the map): the product token must end after it...
pub const AGENT_TOKEN: u8 = 1;
/// ...or any User-Agent starting with it matches.
pub const AGENT_PREFIX: u8 = 2;

/// An entry as configured: its text without a trailing `*`, and its kind.
pub fn agent_pattern(entry: &str) -> (&str, u8) {
    match entry.strip_suffix('*') {
        Some(prefix) => (prefix, AGENT_PREFIX),
        None => (entry, AGENT_TOKEN),
    }
}

/// Whether `byte`, after a listed name, ends the User-Agent's product token (RFC 3261
/// §20.41: `product / comment`, a product is `token [/ version]`): any byte that is no
/// token character (§25.1), so `friendly-scanner(1.0)` and `friendly-scanner;x` end
/// there as `friendly-scanner/1.0` does.
#[inline(always)]
fn ends_product(byte: u8) -> bool {
    !(byte.is_ascii_alphanumeric()
        || matches!(
            byte,
            b'-' | b'.' | b'!' | b'%' | b'*' | b'_' | b'+' | b'`' | b'\'' | b'~'
        ))
}

/// The key a scanner prefix is stored under, its length and its first byte's slot (see
/// [`first_byte_slot`]); `None` for prefixes the filter cannot match (empty, or longer
/// than [`MAX_SCANNER_AGENT_LEN`]).
pub fn agent_key(prefix: &str, seed: u64) -> Option<(u64, usize, usize)> {
    let bytes = prefix.as_bytes();
    if bytes.is_empty() || bytes.len() > MAX_SCANNER_AGENT_LEN {
        return None;
    }
    let (buf, len) = ScanBuf::from_payload(bytes);
    let last = (len - 1) / 8;
    let hash = (0..last).fold(seed, |h, k| mix(h, ascii_lowercase_word(buf.window(k * 8))));
    let tail = ascii_lowercase_word(buf.window(last * 8)) & low_bytes_mask(len - last * 8);
    Some((finish(hash, tail, len), len, first_byte_slot(bytes[0])))
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

/// Is the User-Agent value in `value` a listed scanner's (see the module's
/// documentation)? `lengths[slot]` has bit `n` set when some entry whose first byte has
/// that slot is `n` bytes long; `listed` looks a key up, once per such length the value
/// is long enough for, and gives the entry's kind.
#[inline(always)]
pub fn is_scanner(
    buf: &ScanBuf,
    state: &mut AgentState,
    value: Span,
    seed: u64,
    lengths: &[u64; SCANNER_SLOTS],
    mut listed: impl FnMut(u64) -> Option<u8>,
) -> bool {
    if value.is_empty() {
        return false;
    }
    let (start, len) = (value.start(), value.len());
    // Lengths this value is long enough for (bit n: n bytes).
    let fits = if len >= 63 {
        u64::MAX
    } else {
        (2u64 << len) - 1
    };
    let lengths = lengths[first_byte_slot(buf.byte(start))] & fits;
    if lengths == 0 {
        return false; // no prefix starts like this User-Agent: one read, no hashing
    }
    state.hash.set(seed);
    state.found.set(false);
    // Two words per step (a step is a call); in each, the lengths ending in it are
    // looked up, then it joins the hash.
    const WORDS_PER_STEP: usize = 2;
    repeat(
        MAX_SCANNER_AGENT_LEN.div_ceil(8 * WORDS_PER_STEP) as u32,
        &mut |step: u32| {
            let mut hash = state.hash.get();
            for w in 0..WORDS_PER_STEP {
                let k = step as usize * WORDS_PER_STEP + w;
                let word = ascii_lowercase_word(buf.window(start + k * 8));
                let ending_here = (lengths >> (k * 8 + 1)) & 0xff;
                for r in 1..=8 {
                    let n = k * 8 + r;
                    if (ending_here >> (r - 1)) & 1 == 0 {
                        continue;
                    }
                    let Some(kind) = listed(finish(hash, word & low_bytes_mask(r), n)) else {
                        continue;
                    };
                    if kind == AGENT_PREFIX || n == len || ends_product(buf.byte(start + n)) {
                        state.found.set(true);
                        return false;
                    }
                }
                // Go on while a longer listed length remains.
                if k >= 7 || lengths >> ((k + 1) * 8 + 1) == 0 {
                    return false;
                }
                hash = mix(hash, word);
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
    use std::collections::HashMap;

    fn scanner(agents: &[&str], value: &str) -> bool {
        let seed = 42;
        let mut keys = HashMap::new();
        let mut lengths = [0u64; SCANNER_SLOTS];
        for agent in agents {
            let (prefix, kind) = agent_pattern(agent);
            let (key, len, slot) = agent_key(prefix, seed).unwrap();
            keys.insert(key, kind);
            lengths[slot] |= 1 << len;
        }
        let mut scratch = Scratch::new();
        let len = scratch.fill(value.as_bytes());
        let Scratch { buf, agent, .. } = &mut scratch;
        is_scanner(buf, agent, Span::new(0, len), seed, &lengths, |k| {
            keys.get(&k).copied()
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
    fn names_match_the_product_token_and_prefixes_any_continuation() {
        let list = ["sipcli", "iwar", "friendly-scanner", "sipvicious*"];
        for (value, expected) in [
            ("sipcli/v1.8", true),
            ("SIPCLI", true),
            ("sipcli 1.8", true),
            ("sipcli\t(x)", true),
            ("SIPClient/2.1 (Android)", false),
            ("iWar", true),
            ("iWARP-phone/1.0", false),
            ("friendly-scanner", true),
            ("friendly-scanners", false),
            ("friendly-scanner(1.0)", true),
            ("friendly-scanner;x", true),
            ("friendly-scanner,sipvicious", true),
            ("friendly-scanner@x", true),
            ("friendly-scanner-2", false),
            ("friendly-scanner.2", false),
            ("friendly-scanner_x", false),
            ("sipvicious", true),
            ("sipvicious-0.3.4", true),
            ("SIPviciousPro/1", true),
            ("sipviciou", false),
        ] {
            assert_eq!(scanner(&list, value), expected, "{value}");
        }
        assert_eq!(agent_pattern("sip*"), ("sip", AGENT_PREFIX));
        assert_eq!(agent_pattern("sip"), ("sip", AGENT_TOKEN));
    }

    #[test]
    fn every_length_matches_at_its_length_only() {
        let agent = "Abcdefghijklmnopqrstuvwxyz-0123456789/ABCDEFGHIJKLMNOPQRSTUVWXYZ";
        for len in 1..=MAX_SCANNER_AGENT_LEN {
            let prefix = &agent[..len];
            let entry = format!("{prefix}*");
            assert!(scanner(&[&entry], agent), "{len}");
            assert!(scanner(&[&entry], &agent.to_lowercase()), "{len} folded");
            assert!(scanner(&[&entry], prefix), "{len} exactly");
            assert!(scanner(&[prefix], prefix), "{len} exactly, as a name");
            assert_eq!(
                scanner(&[prefix], agent),
                len == 37,
                "{len}: as a name, only where the product ends (the `/`)"
            );
            assert!(
                !scanner(&[&entry], &agent[..len - 1]),
                "{len}: value too short"
            );
            let mut other = agent.as_bytes().to_vec();
            other[len - 1] ^= 0x01;
            let other = String::from_utf8(other).unwrap();
            assert!(!scanner(&[&entry], &other), "{len}: last byte differs");
        }
    }

    #[test]
    fn only_letters_fold() {
        assert!(!scanner(&["sip[cli]"], "sip{cli}"));
        assert!(!scanner(&["a@b"], "a`b"));
        assert!(scanner(&["SIP-CLI"], "sip-cli/1.0"));
    }

    #[test]
    fn long_prefixes_are_refused() {
        assert!(agent_key("", 1).is_none());
        assert!(agent_key(&"x".repeat(MAX_SCANNER_AGENT_LEN + 1), 1).is_none());
        assert!(scanner(
            &[&format!("{}*", "y".repeat(MAX_SCANNER_AGENT_LEN))],
            &"Y".repeat(70)
        ));
    }
}
