//! Arbitrary bytes into the SIP parser, requests and answers (as a whole datagram and as
//! a prefix), and the domain allowlist key; checks the invariants the XDP program relies
//! on, and that the kernel's parses (the policy's headers alone for a request, the
//! answer's for an answer, each with the Content-Length over TCP, other lines passed
//! over) find the same start line and the
//! same values of the headers they record as the full parse.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sip_filter_common::{
    domain::allowlist_key,
    parse,
    sip::{
        parse_wanted,
        stream::{ANSWER_STREAM_HEADERS, STREAM_HEADERS},
        HeaderSet, ANSWER_HEADERS, MAX_HOST_LEN, POLICY_HEADERS,
    },
    Header, HostKind, Payload, Scheme, Scratch, Span, StartLine, SCAN_LEN,
};

fn check_span(span: Span, len: usize) {
    if span.is_present() {
        assert!(span.start <= span.end, "{span:?}");
        assert!(span.end() <= len, "{span:?} beyond {len}");
    } else {
        assert_eq!(span, Span::ABSENT);
    }
}

fn check(payload: &Payload, len: usize) {
    let Payload::Sip(msg) = payload else {
        return;
    };
    for h in Header::ALL {
        check_span(msg.header(h), len);
    }
    match msg.start() {
        StartLine::Response { status } => assert!((100..700).contains(&status)),
        StartLine::Request { uri, .. } => {
            check_span(uri.user, len);
            check_span(uri.host, len);
            match uri.scheme {
                Scheme::Sip | Scheme::Sips | Scheme::Pres | Scheme::Im => {
                    assert!(!uri.host.is_empty() && uri.host.len() <= MAX_HOST_LEN);
                    assert_ne!(uri.host_kind, HostKind::None);
                }
                Scheme::Tel | Scheme::Other => assert_eq!(uri.host_kind, HostKind::None),
            }
        }
    }
}

/// A parse recording only the headers in `wanted` finds what the full parse finds: the
/// same kind of payload, start line, and values of those headers.
fn same_as_full(full: &Payload, kernel: &Payload, wanted: HeaderSet) {
    match (full, kernel) {
        (Payload::Sip(full), Payload::Sip(kernel)) => {
            assert_eq!(kernel.start(), full.start());
            if kernel.over_line_budget {
                // Stopped at its budget: the first lines only (the policy drops it).
                assert!(!kernel.headers_complete);
                return;
            }
            for h in Header::ALL {
                if wanted & 1 << h as u16 != 0 {
                    assert_eq!(kernel.header(h), full.header(h), "{h:?}");
                }
            }
        }
        (full, kernel) => assert_eq!(kernel, full),
    }
}

fuzz_target!(|data: &[u8]| {
    let mut scratch = Scratch::new();
    let len = scratch.fill(data);
    assert_eq!(len, data.len().min(SCAN_LEN));
    for whole in [false, true] {
        let payload = parse(&mut scratch, len, whole);
        check(&payload, len);
        // The scratch is reused, as the kernel's per-CPU one is: same result again.
        assert_eq!(parse(&mut scratch, len, whole), payload);
        // Every line in the window is examined, by the full parse and by the kernel's:
        // for a request (the policy's headers) and for an answer (the answer's).
        let policy = parse_wanted::<POLICY_HEADERS>(&mut scratch, len, whole);
        same_as_full(&payload, &policy, POLICY_HEADERS);
        if let (Payload::Sip(full), Payload::Sip(kernel)) = (&payload, &policy) {
            if kernel.over_line_budget {
                continue;
            }
            assert_eq!(kernel.user_agents, full.user_agents);
            assert_eq!(kernel.last_user_agent, full.last_user_agent);
        }
        let answer = parse_wanted::<ANSWER_HEADERS>(&mut scratch, len, whole);
        same_as_full(&payload, &answer, ANSWER_HEADERS);
        // Over TCP, with the Content-Length: a request coming in, an answer going out.
        let stream = parse_wanted::<STREAM_HEADERS>(&mut scratch, len, whole);
        same_as_full(&payload, &stream, STREAM_HEADERS);
        let answer_stream = parse_wanted::<ANSWER_STREAM_HEADERS>(&mut scratch, len, whole);
        same_as_full(&payload, &answer_stream, ANSWER_STREAM_HEADERS);
    }
    if let Ok(text) = core::str::from_utf8(data) {
        let _ = allowlist_key(text, 0x5eed_5eed_5eed_5eed);
    }
});
