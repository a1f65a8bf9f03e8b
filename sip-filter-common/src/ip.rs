//! IP literals in Request-URIs (RFC 3261 §25.1: `IPv4address`, `IPv6reference`).

use crate::{
    bounded::isolated,
    scan::{ScanBuf, Vol},
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

fn parse_ipv4_into(buf: &ScanBuf, st: &mut IpState, span: Span) -> bool {
    let (start, len) = (span.start(), span.len());
    if !(7..=15).contains(&len) {
        return false;
    }
    st.reset();
    for i in 0..16 {
        if i > len {
            break;
        }
        // The end of the text closes the last octet like a dot.
        let b = if i == len { b'.' } else { buf.byte(start + i) };
        if b == b'.' {
            if st.digits.get() == 0 || st.value.get() > 255 || !st.push(4) {
                return false;
            }
        } else {
            let d = b.wrapping_sub(b'0');
            let digits = st.digits.get();
            if d > 9 || digits >= 3 {
                return false;
            }
            st.value.set(st.value.get() * 10 + u32::from(d));
            st.digits.set(digits + 1);
        }
    }
    st.count.get() == 4
}

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

    #[test]
    fn ipv4_forms() {
        assert_eq!(v4("198.51.100.7"), Some([198, 51, 100, 7]));
        for bad in [
            "1.2.3",
            "1.2.3.4.5",
            "256.1.1.1",
            "1..2.3",
            "1.2.3.",
            "a.b.c.d",
            "1.2.3.0001",
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

        #[test]
        fn ipv6_agrees_with_std_on_any_text(text in "[0-9a-fA-F:]{0,40}") {
            let ours = v6(&text);
            let std = text.parse::<Ipv6Addr>().ok().map(|a| a.octets());
            prop_assert_eq!(ours, std, "{}", text);
        }
    }
}
