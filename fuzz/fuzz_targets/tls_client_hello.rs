//! Arbitrary bytes into the TLS ClientHello parser: as a segment and as a whole stream,
//! in place (as the kernel reads it) and through the host helpers, and its prefixes (every
//! one of the headers', and a few more further on); checks the invariants the XDP
//! program relies on.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sip_filter_common::{
    tls::{self, ClientHello, Field, HelloState, Verdict},
    ScanBuf, SCAN_LEN,
};

/// What every ClientHello parse must satisfy: spans within the bytes held, no field
/// Unknown in a complete parse, versions of the TLS family, the walk within its bound.
fn check_hello(hello: &ClientHello, len: usize) {
    if let Field::Found(span) = hello.server_name {
        assert!(
            span.start < span.end && span.end() <= len,
            "{span:?} beyond {len}"
        );
    }
    if let Field::Found(version) = hello.supported_version {
        assert!(
            version == 0 || tls::is_tls_version(version),
            "{version:#06x}"
        );
    }
    if hello.verdict == Verdict::Complete {
        assert!(!hello.server_name.is_unknown() && !hello.supported_version.is_unknown());
        assert!(hello.client_version.is_some());
    }
    assert!(hello.extensions <= tls::MAX_EXTENSIONS as usize);
}

/// A prefix of a ClientHello says nothing its whole would contradict: each field is the
/// same, or Unknown; and it is never malformed where the whole is not.
fn check_prefix(part: &ClientHello, full: &ClientHello) {
    if full.verdict != Verdict::Malformed {
        assert_ne!(part.verdict, Verdict::Malformed, "{part:?} of {full:?}");
    }
    if !matches!(full.verdict, Verdict::Malformed | Verdict::NotClientHello) {
        assert!(part.server_name.is_unknown() || part.server_name == full.server_name);
        assert!(
            part.supported_version.is_unknown() || part.supported_version == full.supported_version
        );
    }
}

/// Every prefix in the first [`EVERY_PREFIX_UP_TO`] bytes (the record and handshake
/// headers, the versions, the session ID's length), then [`FURTHER_CUTS`] cuts further on
/// that the input's hash picks: each input is parsed in linear time (every fourth
/// prefix made long inputs quadratic, at a sixth of the executions), and the fuzzer's
/// mutations move the cuts over the executions.
fn prefix_cuts(data: &[u8], len: usize) -> impl Iterator<Item = usize> {
    let hash = data.iter().fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3)
    });
    let further = len.saturating_sub(EVERY_PREFIX_UP_TO);
    (0..len.min(EVERY_PREFIX_UP_TO)).chain((0..FURTHER_CUTS).filter_map(move |k| {
        let pick = hash.rotate_left(k * 7) ^ u64::from(k);
        (further > 0).then(|| EVERY_PREFIX_UP_TO + (pick % further as u64) as usize)
    }))
}

const EVERY_PREFIX_UP_TO: usize = 48;
const FURTHER_CUTS: u32 = 16;

fn fuzz_client_hello(data: &[u8], buf: &ScanBuf) {
    let mut state = HelloState::new();
    let len = data.len().min(SCAN_LEN);
    let full = {
        tls::parse_in_place(buf, &mut state, len, false);
        state.load()
    };
    check_hello(&full, len);
    // The in-place parse of the caller's buffer and the host helper agree.
    assert_eq!(tls::parse_client_hello(data), full);
    let ended = tls::parse_client_hello_whole(data);
    check_hello(&ended, len);
    for cut in prefix_cuts(data, len) {
        let part = tls::parse_client_hello(&data[..cut]);
        check_hello(&part, cut);
        check_prefix(&part, &full);
    }
}

fuzz_target!(|data: &[u8]| {
    let (buf, len) = ScanBuf::from_payload(data);
    assert_eq!(len, data.len().min(SCAN_LEN));
    fuzz_client_hello(data, &buf);
});
