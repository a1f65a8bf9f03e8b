//! Arbitrary bytes as a TCP segment's payload, walked message by message as the TCP
//! program walks it: each message parsed from the walk's offset with the kernel's
//! headers ([`STREAM_HEADERS`], never whole: a line cut by the segment's end is no
//! line), its end found by [`message_end`]. Checks that every end lies within the
//! segment and after its message's headers, that the walk moves forward, and that it
//! stops within [`MAX_STREAM_MESSAGES`] messages as the kernel's does.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sip_filter_common::{
    maps::MAX_STREAM_MESSAGES,
    sip::{
        parse_in_place,
        stream::{message_end, STREAM_HEADERS},
        Kind,
    },
    Scratch,
};

fuzz_target!(|segment: &[u8]| {
    let mut scratch = Scratch::new();
    let mut offset = 0usize;
    for _ in 0..MAX_STREAM_MESSAGES {
        let rest = &segment[offset..];
        let len = scratch.fill(rest);
        if parse_in_place::<STREAM_HEADERS>(&mut scratch, len, false) != Kind::Sip {
            return;
        }
        let left = rest.len() as u32;
        let Some(end) = message_end(&scratch, left) else {
            return;
        };
        // The end lies within the segment, after at least a start line and the empty
        // line: the walk never stands still nor leaves the data.
        assert!(end > 0 && end <= left, "end {end} of {left} bytes");
        // The same bytes judged again, alone: the same end (the scratch is reused, as
        // the kernel's per-CPU one is).
        let message = &rest[..end as usize];
        let len = scratch.fill(message);
        assert_eq!(
            parse_in_place::<STREAM_HEADERS>(&mut scratch, len, false),
            Kind::Sip,
            "the message alone is a message"
        );
        assert_eq!(message_end(&scratch, end), Some(end), "the message alone ends there");
        if end == left {
            return;
        }
        offset += end as usize;
    }
});
