//! Arbitrary bytes as a TCP segment's payload, walked message by message as the kernel
//! walks it: as the TCP program walks a segment coming in ([`STREAM_HEADERS`], up to
//! [`MAX_STREAM_MESSAGES`]) and as the egress program walks one going out
//! ([`ANSWER_STREAM_HEADERS`], up to [`MAX_ANSWER_STREAM_MESSAGES`]). Each message is
//! parsed from the walk's offset, never whole (a line cut by the segment's end is no
//! line), its end found by [`message_end`]. Checks that every end lies within the
//! segment and after its message's headers, that the walk moves forward and stops
//! within its bound, and that a message whose header section was cut
//! ([`header_section_cut`]) has no end.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sip_filter_common::{
    maps::{MAX_ANSWER_STREAM_MESSAGES, MAX_STREAM_MESSAGES},
    sip::{
        parse_in_place,
        stream::{header_section_cut, message_end, ANSWER_STREAM_HEADERS, STREAM_HEADERS},
        HeaderSet, Kind,
    },
    Scratch,
};

fuzz_target!(|segment: &[u8]| {
    walk::<STREAM_HEADERS>(segment, MAX_STREAM_MESSAGES);
    walk::<ANSWER_STREAM_HEADERS>(segment, MAX_ANSWER_STREAM_MESSAGES);
});

fn walk<const WANTED: HeaderSet>(segment: &[u8], bound: u32) {
    let mut scratch = Scratch::new();
    let mut offset = 0usize;
    for _ in 0..bound {
        let rest = &segment[offset..];
        let len = scratch.fill(rest);
        if parse_in_place::<WANTED>(&mut scratch, len, false) != Kind::Sip {
            return;
        }
        let left = rest.len() as u32;
        let cut = header_section_cut(&scratch, left);
        let Some(end) = message_end(&scratch, left) else {
            return;
        };
        assert!(!cut, "a message with an end had its header section cut");
        // The end lies within the segment, after at least a start line and the empty
        // line: the walk never stands still nor leaves the data.
        assert!(end > 0 && end <= left, "end {end} of {left} bytes");
        // The same bytes judged again, alone: the same end (the scratch is reused, as
        // the kernel's per-CPU one is).
        let message = &rest[..end as usize];
        let len = scratch.fill(message);
        assert_eq!(
            parse_in_place::<WANTED>(&mut scratch, len, false),
            Kind::Sip,
            "the message alone is a message"
        );
        assert_eq!(message_end(&scratch, end), Some(end), "the message alone ends there");
        assert!(!header_section_cut(&scratch, end), "the message alone is whole");
        if end == left {
            return;
        }
        offset += end as usize;
    }
}
