//! SIP over a stream transport (TCP, RFC 3261 §18.3): where a message ends, so that the
//! next one in the same segment can be judged too.
//!
//! Over TCP a message's end is its header section's empty line plus its Content-Length
//! (mandatory there). Both come from the parse ([`parse_in_place`] with
//! [`STREAM_HEADERS`]), and the length is trusted only as far as the bytes at hand: a
//! Content-Length that runs past them ends the walk (the body goes on in a later
//! segment), it never moves a pointer beyond the data (the bug a recent fix to the
//! kernel's own `nf_conntrack_sip` closed).
//!
//! [`parse_in_place`]: super::parse_in_place

use super::{value_of, Header, HeaderSet, Scratch, Span, ANSWER_HEADERS, POLICY_HEADERS};
use crate::{ScanBuf, SCAN_LEN};

/// The headers the kernel records in a message over TCP: the policy's, and the
/// Content-Length that says where the message ends.
pub const STREAM_HEADERS: HeaderSet = POLICY_HEADERS | 1 << Header::ContentLength as u16;

/// The headers the egress program records in an answer leaving over TCP: the answer's
/// ([`ANSWER_HEADERS`]), and the Content-Length that says where the next one starts.
/// Not in [`ANSWER_HEADERS`]: a datagram needs no end, and only TCP pays for it.
pub const ANSWER_STREAM_HEADERS: HeaderSet = ANSWER_HEADERS | 1 << Header::ContentLength as u16;

/// Whether the end of the data cut the header section of the SIP message at the start of
/// the scratch: the parse found a start line but ran out of bytes before the empty
/// line, with the whole rest of the segment (`available` bytes from the message's
/// start) in the scanned window. Not cut: a section that ended, one longer than the
/// window (read as far as it goes, like a long datagram's), one that stopped at the
/// line budget. Call after a parse that found a message ([`super::Kind::Sip`]).
#[inline(always)]
pub fn header_section_cut(scratch: &Scratch, available: u32) -> bool {
    let lines = &scratch.lines;
    lines.scan_done.get() == 0 && lines.over_budget.get() == 0 && available as usize <= SCAN_LEN
}

/// Digits of the longest Content-Length read: more than any segment holds (a longer
/// value ends the walk like one that runs past the data).
pub const MAX_LENGTH_DIGITS: usize = 10;

/// Where the message at the start of the scratch ends, counted from its first byte
/// (leading CRLFs included), if it ends within the `available` bytes from there (the
/// rest of the segment, which may be longer than the scanned window). `None` when the
/// end is beyond them, or unknown: the empty line not within the scanned window or the
/// data, or a Content-Length that is not a number. An absent Content-Length counts as 0
/// (RFC 3261 §18.3 makes it mandatory over TCP; Kamailio reads no body without it).
/// Call after a parse with [`STREAM_HEADERS`] that found a message.
#[inline(always)]
pub fn message_end(scratch: &Scratch, available: u32) -> Option<u32> {
    let lines = &scratch.lines;
    // The empty line ended the scan: the body starts after its line feed.
    if lines.scan_done.get() == 0 {
        return None;
    }
    let body_start = u32::from(lines.next_line.get());
    let buf = &scratch.buf;
    let value = value_of(buf, scratch.header(Header::ContentLength));
    // In a loop body of its own, the answer through memory (see `crate::bounded`): the
    // digits' branches are verified once, not once per way the parse before ended.
    let end = buf.search(1, NO_END, |_| {
        let length = content_length(buf, value)?;
        let end = u64::from(body_start) + length;
        Some(if end <= u64::from(available) {
            end as usize
        } else {
            NO_END
        })
    });
    (end != NO_END).then_some(end as u32)
}

/// [`message_end`]'s answer for none.
const NO_END: usize = u32::MAX as usize;

/// The Content-Length `value` holds: 0 when absent, `None` when it is no number of at
/// most [`MAX_LENGTH_DIGITS`] digits (blanks may follow them).
#[inline(always)]
fn content_length(buf: &ScanBuf, value: Span) -> Option<u64> {
    let mut length: u64 = 0;
    let mut digits = 0;
    for i in 0..MAX_LENGTH_DIGITS + 1 {
        let at = value.start() + i;
        if at >= value.end() {
            break;
        }
        let byte = buf.byte(at);
        if byte.is_ascii_digit() && digits == i {
            if i == MAX_LENGTH_DIGITS {
                return None;
            }
            length = length * 10 + u64::from(byte - b'0');
            digits += 1;
        } else if byte != b' ' && byte != b'\t' {
            return None;
        }
    }
    if value.is_present() && digits == 0 {
        return None;
    }
    Some(length)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::sip::{parse_in_place, Kind};
    use proptest::prelude::*;

    /// The end of the first message in `segment`, as the kernel finds it.
    fn end_of(segment: &[u8]) -> Option<u32> {
        let mut scratch = Scratch::new();
        let len = scratch.fill(segment);
        match parse_in_place::<STREAM_HEADERS>(&mut scratch, len, false) {
            Kind::Sip => message_end(&scratch, segment.len() as u32),
            other => panic!("{other:?}"),
        }
    }

    fn request(extra: &str, body: &str) -> String {
        format!(
            "OPTIONS sip:pbx.example.com SIP/2.0\r\nVia: SIP/2.0/TCP 192.0.2.1\r\n{extra}\r\n{body}"
        )
    }

    #[test]
    fn a_message_ends_after_its_body() {
        let one = request("Content-Length: 4\r\n", "abcd");
        assert_eq!(end_of(one.as_bytes()), Some(one.len() as u32));
        let two = format!("{one}{}", request("Content-Length: 0\r\n", ""));
        assert_eq!(end_of(two.as_bytes()), Some(one.len() as u32));
    }

    #[test]
    fn the_compact_form_and_blanks_are_read() {
        for header in ["l: 4\r\n", "L:4  \r\n", "content-length :\t4\r\n"] {
            let one = request(header, "abcd");
            assert_eq!(end_of(one.as_bytes()), Some(one.len() as u32), "{header:?}");
        }
    }

    #[test]
    fn an_absent_length_is_zero() {
        let one = request("", "");
        assert_eq!(
            end_of(format!("{one}rest").as_bytes()),
            Some(one.len() as u32)
        );
    }

    #[test]
    fn a_length_past_the_data_ends_the_walk() {
        for header in ["Content-Length: 5\r\n", "Content-Length: 4294967295\r\n"] {
            assert_eq!(
                end_of(request(header, "abcd").as_bytes()),
                None,
                "{header:?}"
            );
        }
    }

    #[test]
    fn a_length_that_is_no_number_ends_the_walk() {
        for header in [
            "Content-Length: -1\r\n",
            "Content-Length: 4x\r\n",
            "Content-Length: 4 4\r\n",
            "Content-Length: 00000000001\r\n",
            "Content-Length:\r\n",
        ] {
            let segment = format!("{}{}", request(header, "abcd"), "x".repeat(64));
            assert_eq!(end_of(segment.as_bytes()), None, "{header:?}");
        }
    }

    #[test]
    fn headers_cut_by_the_segment_end_the_walk() {
        let cut = "OPTIONS sip:pbx.example.com SIP/2.0\r\nVia: SIP/2.0/TCP 192.0.2.1\r\n";
        assert_eq!(end_of(cut.as_bytes()), None);
    }

    /// How the answer at the start of `segment` parses for the egress program: its end,
    /// and whether its header section was cut.
    fn answer_of(segment: &[u8]) -> (Option<u32>, bool) {
        let mut scratch = Scratch::new();
        let len = scratch.fill(segment);
        match parse_in_place::<ANSWER_STREAM_HEADERS>(&mut scratch, len, false) {
            Kind::Sip => (
                message_end(&scratch, segment.len() as u32),
                header_section_cut(&scratch, segment.len() as u32),
            ),
            other => panic!("{other:?}"),
        }
    }

    const ANSWER: &str = "SIP/2.0 401 Unauthorized\r\nCall-ID: a\r\nCSeq: 1 REGISTER\r\n\
                          WWW-Authenticate: Digest realm=\"x\", nonce=\"1\", stale=true\r\n";

    #[test]
    fn an_answer_ends_after_its_body_and_is_whole() {
        for header in ["Content-Length: 3\r\n", "l: 3\r\n"] {
            let one = format!("{ANSWER}{header}\r\nabc");
            let two = format!("{one}SIP/2.0 200 OK\r\n");
            assert_eq!(
                answer_of(two.as_bytes()),
                (Some(one.len() as u32), false),
                "{header:?}"
            );
        }
    }

    #[test]
    fn an_answer_cut_in_its_headers_is_cut() {
        // Cut before its challenge, and within its challenge line.
        let whole = format!("{ANSWER}Content-Length: 0\r\n\r\n");
        for cut in [ANSWER.find("WWW").unwrap(), ANSWER.find("stale").unwrap()] {
            assert_eq!(answer_of(&whole.as_bytes()[..cut]), (None, true), "{cut}");
        }
        // Its body cut is not its headers.
        let body = format!("{ANSWER}Content-Length: 10\r\n\r\nabc");
        assert_eq!(answer_of(body.as_bytes()), (None, false));
    }

    #[test]
    fn a_header_section_longer_than_the_window_is_not_cut() {
        let padding = format!("X-Pad: {}\r\n", "p".repeat(70)).repeat(SCAN_LEN / 70);
        let long = format!("{ANSWER}{padding}Content-Length: 0\r\n\r\n");
        assert!(long.len() > SCAN_LEN);
        assert_eq!(answer_of(long.as_bytes()), (None, false));
    }

    proptest! {
        /// Any cut of a whole answer: cut exactly when the cut falls before its empty
        /// line ends (and after its start line).
        #[test]
        fn an_answer_is_cut_only_before_its_empty_line(cut in 0usize..200) {
            let whole = format!("{ANSWER}Content-Length: 0\r\n\r\n");
            let cut = cut.min(whole.len());
            let start_line = ANSWER.find('\n').unwrap() + 1;
            prop_assume!(cut >= start_line);
            let (end, was_cut) = answer_of(&whole.as_bytes()[..cut]);
            prop_assert_eq!(was_cut, cut < whole.len());
            prop_assert_eq!(end, (cut == whole.len()).then_some(whole.len() as u32));
        }

        /// Any segment: the end found is within the data, and after the headers.
        #[test]
        fn the_end_is_within_the_data(
            length in "[0-9 ]{0,12}",
            body in proptest::collection::vec(any::<u8>(), 0..200),
            tail in proptest::collection::vec(any::<u8>(), 0..200),
        ) {
            let mut segment = request(&format!("Content-Length: {length}\r\n"), "").into_bytes();
            let headers = segment.len() as u32;
            segment.extend(&body);
            segment.extend(&tail);
            if let Some(end) = end_of(&segment) {
                prop_assert!(end <= segment.len() as u32);
                prop_assert!(end >= headers);
            }
        }
    }
}
