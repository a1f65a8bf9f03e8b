//! IP literals in Request-URIs (RFC 3261 §25.1: `IPv4address`, `IPv6reference`).

use crate::{
    bounded::isolated,
    scan::{bytes_equal, first_flagged_byte, low_bytes_mask, ScanBuf, Vol, HIGH, LOW7, ONES},
    sip::Span,
};

/// Longest IPv6 literal text without brackets (`ffff:…:ffff`, 8 × 4 + 7).
const MAX_IPV6_TEXT: usize = 39;
/// `IpState::gap` when no `::` was seen.
const NO_GAP: u32 = 8;

/// Loop-carried state of the IP literal parsers, kept in the parser's scratch memory
/// (see [`Vol`]).
#[repr(C)]
pub struct IpState {
    groups: [Vol<u16>; 8],
    /// Characters consumed.
    pos: Vol<u32>,
    /// Groups (or octets) completed.
    count: Vol<u32>,
    /// Where `::` stands, in groups; [`NO_GAP`] if nowhere.
    gap: Vol<u32>,
    /// The group or octet being read, and its digits so far.
    value: Vol<u32>,
    digits: Vol<u32>,
    /// The parsed IPv6 address, and whether the text parsed.
    address: [Vol<u8>; 16],
    ok: Vol<bool>,
}

impl Default for IpState {
    fn default() -> Self {
        Self::new()
    }
}

impl IpState {
    pub const fn new() -> Self {
        Self {
            groups: [Vol::new(0); 8],
            pos: Vol::new(0),
            count: Vol::new(0),
            gap: Vol::new(NO_GAP),
            value: Vol::new(0),
            digits: Vol::new(0),
            address: [Vol::new(0); 16],
            ok: Vol::new(false),
        }
    }

    fn reset(&mut self) {
        self.pos.set(0);
        self.count.set(0);
        self.gap.set(NO_GAP);
        self.value.set(0);
        self.digits.set(0);
    }

    /// Ends the group or octet being read. False if there are already `max`.
    #[inline(always)]
    fn push(&mut self, max: u32) -> bool {
        let count = self.count.get();
        if count >= max {
            return false;
        }
        self.groups[(count & 7) as usize].set(self.value.get() as u16);
        self.count.set(count + 1);
        self.value.set(0);
        self.digits.set(0);
        true
    }
}

/// Parses dotted-quad IPv4 text: four decimal octets of 1 to 3 digits.
#[inline(always)]
pub fn parse_ipv4(buf: &ScanBuf, st: &mut IpState, span: Span) -> Option<[u8; 4]> {
    // Not a loop body of its own (its caller's is enough: a call costs), but the answer
    // still goes through scratch memory, so what follows is verified once, not once per
    // way the parse can end.
    let ok = parse_ipv4_into(buf, st, span);
    st.ok.set(ok);
    if st.ok.get() {
        Some([0, 1, 2, 3].map(|i| st.groups[i].get() as u8))
    } else {
        None
    }
}

/// Parses IPv6 text (RFC 4291 §2.2 forms 1 and 2: hex groups with at most one `::`).
/// The embedded-IPv4 form (`::ffff:1.2.3.4`) is not accepted: such a host is then
/// treated as a name, which is never an allowed domain.
#[inline(always)]
pub fn parse_ipv6(buf: &ScanBuf, st: &mut IpState, span: Span) -> Option<[u8; 16]> {
    isolated(&mut |_| {
        let ok = parse_ipv6_into(buf, st, span);
        st.ok.set(ok);
        false
    });
    if st.ok.get() {
        let mut address = [0u8; 16];
        for (out, kept) in address.iter_mut().zip(st.address.iter()) {
            *out = kept.get();
        }
        Some(address)
    } else {
        None
    }
}

/// `'0'` in every byte: XOR-ing it turns ASCII digits into their values.
const ZEROS: u64 = ONES * b'0' as u64;

/// Dotted-quad text of 7 to 15 bytes, without a loop: the text in two words, its dots
/// found a word at a time, each octet read in one load. (A loop over the bytes keeps
/// its counts in scratch memory for the verifier, and costs several times as much.)
#[inline(always)]
fn parse_ipv4_into(buf: &ScanBuf, st: &mut IpState, span: Span) -> bool {
    let (start, len) = (span.start(), span.len());
    if !(7..=15).contains(&len) {
        return false;
    }
    // The text, every byte after it turned into a dot: its end closes the last octet
    // like one, and the second word always holds a dot.
    let dots = ONES * u64::from(b'.');
    let (low_mask, high_mask) = (
        low_bytes_mask(len.min(8)),
        low_bytes_mask(len.saturating_sub(8)),
    );
    let low = (buf.window(start) & low_mask) | (dots & !low_mask);
    let high = (buf.window(start + 8) & high_mask) | (dots & !high_mask);
    if !(digits_or_dots(low) && digits_or_dots(high)) {
        return false;
    }
    // The first four dots: three in the text, then the one just after it.
    let (mut low_dots, mut high_dots) = (bytes_equal(low, b'.'), bytes_equal(high, b'.'));
    let mut ends = [0usize; 4];
    for end in ends.iter_mut() {
        *end = if low_dots != 0 {
            let at = first_flagged_byte(low_dots);
            low_dots &= low_dots - 1;
            at
        } else {
            // Text of 9 bytes or more with fewer than three dots runs out of them here:
            // the end found (8) is then short of `len`, and the text is refused below.
            let at = 8 + first_flagged_byte(high_dots);
            high_dots &= high_dots.wrapping_sub(1);
            at
        };
    }
    if ends[3] != len {
        return false;
    }
    let mut begin = 0;
    for (i, &end) in ends.iter().enumerate() {
        let Some(octet) = octet(buf, start + begin, end.wrapping_sub(begin)) else {
            return false;
        };
        st.groups[i & 7].set(octet);
        begin = end + 1;
    }
    true
}

/// Whether every byte of `w` is an ASCII digit or a dot.
#[inline(always)]
fn digits_or_dots(w: u64) -> bool {
    // Per byte, `b ^ '0'` is below 10 for digits only: the high bit of its low seven
    // bits plus (128 - 10) says ">= 10", its own high bit says ">= 128".
    let x = w ^ ZEROS;
    let not_digit = ((x & LOW7).wrapping_add(ONES * (0x80 - 10)) | x) & HIGH;
    not_digit & !bytes_equal(w, b'.') == 0
}

/// The value of the `len` digits at `at` (known to be digits): 1 to 3 of them, at most
/// 255.
#[inline(always)]
fn octet(buf: &ScanBuf, at: usize, len: usize) -> Option<u16> {
    if !(1..=3).contains(&len) {
        return None;
    }
    // The digits' values, right-aligned in three bytes: hundreds, tens, ones.
    let digits = (buf.window(at) ^ ZEROS) & low_bytes_mask(len);
    let digits = digits << (8 * (3 - len));
    let value = (digits & 0xff) * 100 + ((digits >> 8) & 0xff) * 10 + ((digits >> 16) & 0xff);
    (value <= 255).then_some(value as u16)
}

#[inline(always)]
fn parse_ipv6_into(buf: &ScanBuf, st: &mut IpState, span: Span) -> bool {
    let (start, len) = (span.start(), span.len());
    if !(2..=MAX_IPV6_TEXT).contains(&len) {
        return false;
    }
    st.reset();
    for _ in 0..=MAX_IPV6_TEXT {
        let i = st.pos.get() as usize;
        if i > len {
            break;
        }
        // The end of the text closes the last group like a colon.
        let b = if i == len { b':' } else { buf.byte(start + i) };
        if b == b':' {
            let had_group = st.digits.get() > 0;
            if had_group && !st.push(8) {
                return false;
            }
            if i == len {
                // The text may end in a group or in the `::` just read.
                let ends_in_gap =
                    st.gap.get() == st.count.get() && buf.byte(start + len - 2) == b':';
                if !had_group && !ends_in_gap {
                    return false;
                }
                break;
            }
            if i + 1 < len && buf.byte(start + i + 1) == b':' {
                if st.gap.get() != NO_GAP {
                    return false;
                }
                st.gap.set(st.count.get());
                st.pos.set(i as u32 + 1);
            } else if !had_group {
                return false; // a leading single ':' or an empty group
            }
        } else {
            let Some(d) = hex_digit(b) else {
                return false;
            };
            let digits = st.digits.get();
            if digits >= 4 {
                return false;
            }
            st.value.set((st.value.get() << 4) | u32::from(d));
            st.digits.set(digits + 1);
        }
        st.pos.set(st.pos.get() + 1);
    }
    let (count, gap) = (st.count.get() as usize, st.gap.get() as usize);
    let shift = if gap == NO_GAP as usize {
        if count != 8 {
            return false;
        }
        0
    } else {
        if count >= 8 {
            return false;
        }
        8 - count
    };
    // Groups before the gap stay in place; those after it move to the end.
    for byte in st.address.iter_mut() {
        byte.set(0);
    }
    for g in 0..8 {
        if g >= count {
            break;
        }
        let value = st.groups[g].get();
        let slot = if g < gap { g } else { g + shift };
        st.address[(2 * slot) & 15].set((value >> 8) as u8);
        st.address[(2 * slot + 1) & 15].set(value as u8);
    }
    true
}

#[inline(always)]
fn hex_digit(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn v6(text: &str) -> Option<[u8; 16]> {
        let (buf, len) = ScanBuf::from_payload(text.as_bytes());
        parse_ipv6(&buf, &mut IpState::new(), Span::new(0, len))
    }
    fn v4(text: &str) -> Option<[u8; 4]> {
        let (buf, len) = ScanBuf::from_payload(text.as_bytes());
        parse_ipv4(&buf, &mut IpState::new(), Span::new(0, len))
    }

    #[test]
    fn ipv6_forms() {
        for text in [
            "::",
            "::1",
            "1::",
            "2001:db8::7",
            "2001:DB8:0:0:0:0:0:7",
            "fe80::1:2",
            "1:2:3:4:5:6:7:8",
            "1:2:3:4:5:6:7::",
            "::2:3:4:5:6:7:8",
        ] {
            let expected: Ipv6Addr = text.parse().unwrap_or_else(|_| panic!("{text}"));
            assert_eq!(v6(text), Some(expected.octets()), "{text}");
        }
        for bad in [
            "",
            ":",
            ":::",
            "1:::2",
            "1::2::3",
            "12345::",
            "1:2:3:4:5:6:7:8:9",
            "g::",
            ":1::",
            "1:",
            "1:2",
        ] {
            assert_eq!(v6(bad), None, "{bad}");
        }
    }

    fn ipv4_by_definition(text: &str) -> Option<[u8; 4]> {
        let parts: Vec<&str> = text.split('.').collect();
        if parts.len() != 4 {
            return None;
        }
        let mut out = [0u8; 4];
        for (o, part) in out.iter_mut().zip(&parts) {
            if !(1..=3).contains(&part.len()) || !part.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            *o = part
                .parse::<u16>()
                .ok()
                .and_then(|v| u8::try_from(v).ok())?;
        }
        Some(out)
    }

    #[test]
    fn ipv4_forms() {
        assert_eq!(v4("198.51.100.7"), Some([198, 51, 100, 7]));
        assert_eq!(v4("255.255.255.255"), Some([255; 4]));
        assert_eq!(v4("0.0.0.0"), Some([0; 4]));
        assert_eq!(v4("001.02.3.040"), Some([1, 2, 3, 40]));
        for bad in [
            "1.2.3",
            "1.2.3.4.5",
            "256.1.1.1",
            "1..2.3",
            "1.2.3.",
            "a.b.c.d",
            "1.2.3.0001",
            "1.2.3.4.",
            ".1.2.3.4",
            "1.2.3.256",
            "1.2.3.4 ",
            "1.2.3.4/",
            "1.2.3.4:",
            "1234.1.1.1",
            "1.2.3.45678",
            // Nine bytes or more with fewer than three dots (found by fuzzing: the dots
            // ran out, and a debug build's overflow check panicked).
            "19.85111.105060",
            "123456789",
            "12345678.9",
        ] {
            assert_eq!(v4(bad), None, "{bad}");
        }
    }

    proptest! {
        #[test]
        fn ipv6_matches_std(octets in any::<[u8; 16]>()) {
            let addr = Ipv6Addr::from(octets);
            // std prints the compressed form; also try the full form.
            let full = addr.segments().map(|s| format!("{s:x}")).join(":");
            prop_assert_eq!(v6(&full), Some(octets));
            let short = addr.to_string();
            if !short.contains('.') {
                prop_assert_eq!(v6(&short), Some(octets));
            }
        }

        #[test]
        fn ipv4_matches_std(octets in any::<[u8; 4]>()) {
            prop_assert_eq!(v4(&Ipv4Addr::from(octets).to_string()), Some(octets));
        }

        /// Any text of digits, dots and a few other bytes: the word-at-a-time parse
        /// agrees with the plain definition (four dot-separated octets of 1 to 3
        /// digits, each at most 255; leading zeros allowed).
        #[test]
        fn ipv4_agrees_with_its_definition(text in "[0-9.:a/ ]{0,17}") {
            prop_assert_eq!(v4(&text), ipv4_by_definition(&text), "{}", text);
        }

        #[test]
        fn ipv6_agrees_with_std_on_any_text(text in "[0-9a-fA-F:]{0,40}") {
            let ours = v6(&text);
            let std = text.parse::<Ipv6Addr>().ok().map(|a| a.octets());
            prop_assert_eq!(ours, std, "{}", text);
        }
    }
}
