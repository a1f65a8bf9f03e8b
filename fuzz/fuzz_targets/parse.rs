//! Arbitrary bytes into the SIP parser (as a whole datagram and as a prefix), the TLS
//! ClientHello parser (as a segment and as a whole stream, and every fourth prefix) and
//! the domain allowlist key; checks the invariants the XDP program relies on, and that
//! the kernel's parse (the User-Agent alone, other lines passed over) finds the same
//! start line and User-Agent as the full parse.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sip_filter_common::{
    domain::allowlist_key,
    parse,
    sip::{parse_wanted, MAX_HOST_LEN, POLICY_HEADERS},
    tls::{self, ClientHello, Field, HelloState, Verdict},
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

fn fuzz_client_hello(data: &[u8], scratch: &Scratch) {
    let mut state = HelloState::new();
    let len = data.len().min(SCAN_LEN);
    let full = {
        tls::parse_in_place(&scratch.buf, &mut state, len, false);
        state.load()
    };
    check_hello(&full, len);
    // The in-place parse of the caller's buffer and the host helper agree.
    assert_eq!(tls::parse_client_hello(data), full);
    let ended = tls::parse_client_hello_whole(data);
    check_hello(&ended, len);
    for cut in (0..len).step_by(4) {
        let part = tls::parse_client_hello(&data[..cut]);
        check_hello(&part, cut);
        check_prefix(&part, &full);
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
        // Every line in the window is examined, by the full parse and by the kernel's.
        let policy = parse_wanted::<POLICY_HEADERS>(&mut scratch, len, whole);
        match (&payload, &policy) {
            (Payload::Sip(full), Payload::Sip(kernel)) => {
                assert_eq!(kernel.start(), full.start());
                assert_eq!(
                    kernel.header(Header::UserAgent),
                    full.header(Header::UserAgent)
                );
                assert_eq!(kernel.user_agents, full.user_agents);
                assert_eq!(kernel.last_user_agent, full.last_user_agent);
            }
            (full, kernel) => assert_eq!(kernel, full),
        }
    }
    fuzz_client_hello(data, &scratch);
    if let Ok(text) = core::str::from_utf8(data) {
        let _ = allowlist_key(text, 0x5eed_5eed_5eed_5eed);
    }
});
