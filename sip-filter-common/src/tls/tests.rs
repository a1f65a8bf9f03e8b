//! Host tests of the ClientHello parser: hand-built ClientHellos (a small builder),
//! real ones captured from OpenSSL and curl (`data/README.md`), every split of a large
//! one, the walk's bound, malformed lengths, and property tests (no panic on any input,
//! spans always in bounds, generated ClientHellos parse to what was generated).
#![allow(clippy::unwrap_used)]

use super::*;
use proptest::prelude::*;

use super::builder::*;

/// What a TLS 1.2 ClientHello with supported_versions holding `list` offers by it.
fn supported_version_of(list: &[u16]) -> Field<u16> {
    let bytes = Hello::tls12("a.example")
        .with(EXTENSION_SUPPORTED_VERSIONS, versions(list))
        .build();
    parse_client_hello(&bytes).supported_version
}

/// The text a found server_name spans in `bytes`.
fn name_in(bytes: &[u8], hello: &ClientHello) -> Option<String> {
    let span = hello.server_name.found()?;
    assert!(span.end() <= bytes.len().min(SCAN_LEN), "{span:?}");
    Some(String::from_utf8_lossy(&bytes[span.start()..span.end()]).into_owned())
}

/// Offsets inside a built record, for tests that patch a length.
const RECORD_LEN_AT: usize = 3;
const HELLO_LEN_AT: usize = 6;
const SUITES_LEN_AT: usize = SESSION_ID_AT + 1;

/// Where the extension block's length is in a record built from `hello`.
fn block_len_at(hello: &Hello) -> usize {
    SESSION_ID_AT
        + 1
        + hello.session_id.len()
        + 2
        + 2 * hello.suites.len()
        + 1
        + hello.compression.len()
}

/// Where the extension of type `kind` starts (its type) in `bytes`.
fn extension_at(hello: &Hello, kind: u16) -> usize {
    let mut at = block_len_at(hello) + 2;
    for (k, contents) in hello.extensions.as_ref().unwrap() {
        if *k == kind {
            return at;
        }
        at += 4 + contents.len();
    }
    panic!("no extension {kind}");
}

fn set16(bytes: &mut [u8], at: usize, value: u16) {
    bytes[at..at + 2].copy_from_slice(&value.to_be_bytes());
}

// ---------------------------------------------------------------------------------
// What clients send
// ---------------------------------------------------------------------------------

#[test]
fn tls13_hello_offers_1_3_by_supported_versions() {
    let bytes = Hello::tls13("sip.example.com").build();
    let hello = parse_client_hello(&bytes);
    assert_eq!(hello.verdict, Verdict::Complete);
    assert_eq!(hello.record_version, Some(TLS1_0));
    assert_eq!(hello.client_version, Some(TLS1_2));
    assert_eq!(hello.supported_version, Field::Found(TLS1_3));
    assert_eq!(hello.highest_version(), Field::Found(TLS1_3));
    assert_eq!(name_in(&bytes, &hello).as_deref(), Some("sip.example.com"));
    assert_eq!(hello.server_names, 1);
    assert_eq!(hello.extensions, 5);
}

#[test]
fn tls12_hello_is_judged_by_its_client_version() {
    let bytes = Hello::tls12("sip.example.com").build();
    let hello = parse_client_hello(&bytes);
    assert_eq!(hello.verdict, Verdict::Complete);
    assert_eq!(hello.supported_version, Field::Absent);
    assert_eq!(hello.highest_version(), Field::Found(TLS1_2));
}

#[test]
fn the_highest_offered_version_counts_wherever_it_is_in_the_list() {
    for list in [
        [TLS1_2, TLS1_3, TLS1_0],
        [TLS1_3, TLS1_2, TLS1_0],
        [TLS1_0, TLS1_2, TLS1_3],
    ] {
        assert_eq!(
            supported_version_of(&list),
            Field::Found(TLS1_3),
            "{list:x?}"
        );
    }
}

#[test]
fn supported_versions_outranks_a_higher_legacy_version() {
    // RFC 8446 §4.2.1: with supported_versions present, client_version is ignored.
    let mut hello =
        Hello::tls12("a.example").with(EXTENSION_SUPPORTED_VERSIONS, versions(&[TLS1_0]));
    hello.client_version = TLS1_2;
    let parsed = parse_client_hello(&hello.build());
    assert_eq!(parsed.highest_version(), Field::Found(TLS1_0));
}

#[test]
fn grease_versions_are_skipped() {
    for list in [
        vec![0x0a0a, TLS1_3, TLS1_2],
        vec![TLS1_2, 0xfafa],
        vec![0x7a7a, TLS1_2, 0x1a1a, TLS1_0],
    ] {
        let highest = *list.iter().filter(|v| !is_grease(**v)).max().unwrap();
        assert_eq!(
            supported_version_of(&list),
            Field::Found(highest),
            "{list:x?}"
        );
    }
}

#[test]
fn only_tls_family_versions_count() {
    // A draft of TLS 1.3 and a made-up number are no version a server would pick.
    assert_eq!(
        supported_version_of(&[0x7f1c, 0x0a0a, 0x7e02, TLS1_0]),
        Field::Found(TLS1_0)
    );
    // None at all: supported_versions is there, and offers nothing a server could pick.
    let bytes = Hello::tls12("a.example")
        .with(EXTENSION_SUPPORTED_VERSIONS, versions(&[0x1a1a]))
        .build();
    let hello = parse_client_hello(&bytes);
    assert_eq!(hello.supported_version, Field::Found(0));
    assert_eq!(hello.highest_version(), Field::Found(0));
}

#[test]
fn a_long_version_list_is_read_to_its_end() {
    // 127 versions (the most a one-byte length holds), TLS 1.3 last.
    let mut list = vec![TLS1_0; 126];
    list.push(TLS1_3);
    assert_eq!(supported_version_of(&list), Field::Found(TLS1_3));
    for n in 1..=127 {
        let mut list = vec![TLS1_0; n];
        list[n - 1] = TLS1_2;
        assert_eq!(supported_version_of(&list), Field::Found(TLS1_2), "{n}");
    }
}

#[test]
fn grease_extensions_are_walked_past() {
    let mut hello = Hello::tls13("sip.example.com");
    let extensions = hello.extensions.as_mut().unwrap();
    extensions.insert(0, (0x0a0a, vec![]));
    extensions.insert(2, (0xdada, vec![0]));
    extensions.push((0xfafa, vec![1, 2, 3]));
    let bytes = hello.build();
    let parsed = parse_client_hello(&bytes);
    assert_eq!(parsed.verdict, Verdict::Complete);
    assert_eq!(parsed.supported_version, Field::Found(TLS1_3));
    assert_eq!(name_in(&bytes, &parsed).as_deref(), Some("sip.example.com"));
    assert_eq!(parsed.extensions, 8);
}

#[test]
fn grease_is_0x_a_a_with_both_bytes_equal() {
    let grease: Vec<u16> = (0..=u16::MAX).filter(|v| is_grease(*v)).collect();
    let expected: Vec<u16> = (0..16).map(|i| 0x0a0a + 0x1010 * i).collect();
    assert_eq!(grease, expected);
}

#[test]
fn server_name_good_foreign_and_none() {
    for host in ["sip.example.com", "evil.example.net", "x"] {
        let bytes = Hello::tls13(host).build();
        assert_eq!(
            name_in(&bytes, &parse_client_hello(&bytes)).as_deref(),
            Some(host)
        );
    }
    let bytes = Hello::tls13("").without(EXTENSION_SERVER_NAME).build();
    let hello = parse_client_hello(&bytes);
    assert_eq!(hello.verdict, Verdict::Complete);
    assert_eq!(hello.server_name, Field::Absent);
}

#[test]
fn the_first_host_name_is_taken() {
    let bytes = Hello::tls13("")
        .without(EXTENSION_SERVER_NAME)
        .with(
            EXTENSION_SERVER_NAME,
            sni(&[(0, "first.example"), (0, "second.example")]),
        )
        .build();
    let hello = parse_client_hello(&bytes);
    assert_eq!(name_in(&bytes, &hello).as_deref(), Some("first.example"));
    assert_eq!(hello.server_names, 2);
    // An entry of another type first (none is defined) is passed over.
    let bytes = Hello::tls13("")
        .without(EXTENSION_SERVER_NAME)
        .with(
            EXTENSION_SERVER_NAME,
            sni(&[(7, "opaque"), (0, "host.example")]),
        )
        .build();
    assert_eq!(
        name_in(&bytes, &parse_client_hello(&bytes)).as_deref(),
        Some("host.example")
    );
    // Only other types: no host name.
    let bytes = Hello::tls13("")
        .without(EXTENSION_SERVER_NAME)
        .with(EXTENSION_SERVER_NAME, sni(&[(7, "opaque")]))
        .build();
    assert_eq!(parse_client_hello(&bytes).server_name, Field::Absent);
    // More entries than examined, no host_name among the first ones: unknown.
    let many: Vec<(u8, &str)> = (0..MAX_SERVER_NAMES + 1).map(|_| (9, "n")).collect();
    let bytes = Hello::tls13("")
        .without(EXTENSION_SERVER_NAME)
        .with(EXTENSION_SERVER_NAME, sni(&many))
        .build();
    assert_eq!(parse_client_hello(&bytes).server_name, Field::Unknown);
}

#[test]
fn a_hello_without_extensions_is_complete() {
    let mut hello = Hello::tls12("");
    hello.extensions = None;
    hello.client_version = 0x0301;
    let parsed = parse_client_hello(&hello.build());
    assert_eq!(parsed.verdict, Verdict::Complete);
    assert_eq!(parsed.server_name, Field::Absent);
    assert_eq!(parsed.supported_version, Field::Absent);
    assert_eq!(parsed.highest_version(), Field::Found(0x0301));
    // An empty block is the same.
    hello.extensions = Some(vec![]);
    let parsed = parse_client_hello(&hello.build());
    assert_eq!(parsed.verdict, Verdict::Complete);
    assert_eq!(parsed.server_name, Field::Absent);
}

// ---------------------------------------------------------------------------------
// Real ClientHellos (see data/README.md)
// ---------------------------------------------------------------------------------

const OPENSSL_TLS13: &[u8] = include_bytes!("data/openssl-tls13.bin");
const OPENSSL_TLS12: &[u8] = include_bytes!("data/openssl-tls12.bin");
const OPENSSL_NO_SNI: &[u8] = include_bytes!("data/openssl-nosni.bin");
const OPENSSL_FFDHE8192: &[u8] = include_bytes!("data/openssl-ffdhe8192.bin");
const CURL: &[u8] = include_bytes!("data/curl.bin");

#[test]
fn real_client_hellos() {
    // (bytes, highest version, client_version, server name)
    let cases: [(&[u8], u16, Option<&str>); 5] = [
        (OPENSSL_TLS13, TLS1_3, Some("sip.example.com")),
        (OPENSSL_TLS12, TLS1_2, Some("sip.example.com")),
        (OPENSSL_NO_SNI, TLS1_3, None),
        (OPENSSL_FFDHE8192, TLS1_3, Some("sip.example.com")),
        (CURL, TLS1_3, Some("sip.example.com")),
    ];
    for (bytes, highest, name) in cases {
        for parsed in [parse_client_hello(bytes), parse_client_hello_whole(bytes)] {
            assert_eq!(parsed.verdict, Verdict::Complete);
            assert_eq!(parsed.record_version, Some(TLS1_0));
            assert_eq!(parsed.client_version, Some(TLS1_2));
            assert_eq!(parsed.highest_version(), Field::Found(highest));
            assert_eq!(name_in(bytes, &parsed).as_deref(), name);
            if name.is_none() {
                assert_eq!(parsed.server_name, Field::Absent);
            }
        }
    }
    assert_eq!(
        parse_client_hello(OPENSSL_TLS12).supported_version,
        Field::Absent
    );
}

// ---------------------------------------------------------------------------------
// Splits, truncation, the walk's bound
// ---------------------------------------------------------------------------------

/// Every prefix of `bytes` must give the full answer or Unknown, field by field, and
/// Truncated (never Malformed) until the last byte.
fn check_every_prefix(bytes: &[u8]) {
    let full = parse_client_hello(bytes);
    assert_eq!(full.verdict, Verdict::Complete);
    let mut buf = ScanBuf::new();
    let mut state = HelloState::new();
    for cut in 0..bytes.len() {
        let (held, len) = ScanBuf::from_payload(&bytes[..cut]);
        buf.clone_from(&held);
        parse_in_place(&buf, &mut state, len, false);
        let part = state.load();
        assert_eq!(part.verdict, Verdict::Truncated, "cut at {cut}");
        assert!(part.record_version.is_none() || part.record_version == full.record_version);
        assert!(part.client_version.is_none() || part.client_version == full.client_version);
        for (seen, whole) in [
            (part.supported_version, full.supported_version),
            (part.highest_version(), full.highest_version()),
        ] {
            assert!(seen.is_unknown() || seen == whole, "cut at {cut}: {seen:?}");
        }
        assert!(
            part.server_name.is_unknown() || part.server_name == full.server_name,
            "cut at {cut}: {:?}",
            part.server_name
        );
        // With nothing to follow, a cut ClientHello is malformed.
        if cut > 0 {
            let ended = parse_client_hello_whole(&bytes[..cut]);
            assert!(
                matches!(ended.verdict, Verdict::Malformed),
                "cut at {cut}: {ended:?}"
            );
        }
    }
}

#[test]
fn every_split_of_a_real_large_hello_is_right_or_unknown() {
    check_every_prefix(OPENSSL_FFDHE8192);
    check_every_prefix(CURL);
}

#[test]
fn every_split_of_a_post_quantum_hello_is_right_or_unknown() {
    for sni_after_key_share in [false, true] {
        let bytes = Hello::post_quantum("sip.example.com", sni_after_key_share).build();
        assert!((1500..SCAN_LEN).contains(&bytes.len()), "{}", bytes.len());
        check_every_prefix(&bytes);
    }
}

#[test]
fn a_first_segment_of_1460_bytes_holds_what_comes_before_the_key_share() {
    // A 1,500-byte MTU leaves 1,460 bytes of TCP payload (without options).
    let early = Hello::post_quantum("sip.example.com", false).build();
    let first = parse_client_hello(&early[..1460]);
    assert_eq!(first.verdict, Verdict::Truncated);
    assert_eq!(name_in(&early, &first).as_deref(), Some("sip.example.com"));
    assert_eq!(first.supported_version, Field::Found(TLS1_3));
    // Chrome shuffles its extensions: the name may be in the second segment.
    let late = Hello::post_quantum("sip.example.com", true).build();
    let first = parse_client_hello(&late[..1460]);
    assert_eq!(first.verdict, Verdict::Truncated);
    assert_eq!(first.server_name, Field::Unknown);
    assert_eq!(first.supported_version, Field::Found(TLS1_3));
}

/// A built ClientHello's handshake message in two records: its first `first` bytes and
/// the rest.
fn in_two_records(record: &[u8], first: usize) -> Vec<u8> {
    let message = &record[RECORD_HEADER_LEN..];
    let mut split = Vec::new();
    for part in [&message[..first], &message[first..]] {
        split.extend([CONTENT_TYPE_HANDSHAKE, 3, 1]);
        split.extend(prefixed16(part));
    }
    split
}

#[test]
fn a_hello_continued_in_a_second_record_is_read_to_the_first_records_end() {
    let split = in_two_records(&Hello::post_quantum("sip.example.com", true).build(), 600);
    for parsed in [parse_client_hello(&split), parse_client_hello_whole(&split)] {
        assert_eq!(parsed.verdict, Verdict::Truncated);
        assert_eq!(parsed.supported_version, Field::Found(TLS1_3));
        assert_eq!(parsed.server_name, Field::Unknown);
    }
}

#[test]
fn a_record_may_end_inside_the_handshake_header() {
    let split = in_two_records(&Hello::tls13("sip.example.com").build(), 2);
    for parsed in [parse_client_hello(&split), parse_client_hello_whole(&split)] {
        assert_eq!(parsed.verdict, Verdict::Truncated);
        assert_eq!(parsed.record_version, Some(TLS1_0));
        assert_eq!(parsed.client_version, None);
        assert_eq!(parsed.highest_version(), Field::Unknown);
    }
}

#[test]
fn a_hello_longer_than_the_window_is_truncated_not_malformed() {
    let mut hello = Hello::tls13("sip.example.com");
    hello.push(KEY_SHARE + 1000, vec![0; 3000]);
    hello.push(0x5a5a, vec![]);
    let bytes = hello.build();
    assert!(bytes.len() > SCAN_LEN);
    for parsed in [parse_client_hello(&bytes), parse_client_hello_whole(&bytes)] {
        assert_eq!(parsed.verdict, Verdict::Truncated);
        assert_eq!(parsed.supported_version, Field::Found(TLS1_3));
    }
}

/// A ClientHello with `count` empty extensions, server_name first or last.
fn with_many_extensions(count: usize, sni_first: bool) -> Vec<u8> {
    let mut hello = Hello::tls13("sip.example.com")
        .without(EXTENSION_SERVER_NAME)
        .without(EXTENSION_SUPPORTED_VERSIONS);
    hello.extensions = Some(vec![]);
    let server_name = (EXTENSION_SERVER_NAME, sni(&[(0, "sip.example.com")]));
    let supported = (EXTENSION_SUPPORTED_VERSIONS, versions(&[TLS1_3]));
    let extensions = hello.extensions.as_mut().unwrap();
    if sni_first {
        extensions.push(server_name.clone());
    }
    for i in 0..count - 2 {
        extensions.push((1000 + i as u16, vec![]));
    }
    if !sni_first {
        extensions.push(server_name);
    }
    extensions.push(supported);
    hello.build()
}

#[test]
fn the_walk_stops_at_32_extensions() {
    let bytes = with_many_extensions(1000, true);
    let parsed = parse_client_hello(&bytes);
    assert_eq!(parsed.verdict, Verdict::WalkLimit);
    assert_eq!(parsed.extensions, MAX_EXTENSIONS as usize);
    assert_eq!(name_in(&bytes, &parsed).as_deref(), Some("sip.example.com"));
    assert_eq!(parsed.supported_version, Field::Unknown);
    assert_eq!(parsed.highest_version(), Field::Unknown);
    let parsed = parse_client_hello(&with_many_extensions(1000, false));
    assert_eq!(parsed.verdict, Verdict::WalkLimit);
    assert_eq!(parsed.server_name, Field::Unknown);
    // Exactly 32 are all read; 33 are not.
    let parsed = parse_client_hello(&with_many_extensions(32, false));
    assert_eq!(parsed.verdict, Verdict::Complete);
    assert_eq!(parsed.supported_version, Field::Found(TLS1_3));
    assert!(parsed.server_name.found().is_some());
    let parsed = parse_client_hello(&with_many_extensions(33, true));
    assert_eq!(parsed.verdict, Verdict::WalkLimit);
    assert_eq!(parsed.supported_version, Field::Unknown);
}

// ---------------------------------------------------------------------------------
// Malformed, and not a ClientHello
// ---------------------------------------------------------------------------------

/// A change to a built ClientHello's bytes.
type Patch = Box<dyn Fn(&mut Vec<u8>)>;

#[test]
fn lengths_past_their_block_are_malformed() {
    let hello = Hello::tls13("sip.example.com");
    let good = hello.build();
    let block = block_len_at(&hello);
    let sni_at = extension_at(&hello, EXTENSION_SERVER_NAME);
    let versions_at = extension_at(&hello, EXTENSION_SUPPORTED_VERSIONS);
    let cases: Vec<(&str, Patch)> = vec![
        ("record length 0", Box::new(|b| set16(b, RECORD_LEN_AT, 0))),
        (
            "record longer than 2^14",
            Box::new(|b| set16(b, RECORD_LEN_AT, 0x4001)),
        ),
        ("session id of 33", Box::new(|b| b[SESSION_ID_AT] = 33)),
        (
            "no cipher suites",
            Box::new(|b| set16(b, SUITES_LEN_AT + 32, 0)),
        ),
        (
            "odd cipher suites",
            Box::new(|b| set16(b, SUITES_LEN_AT + 32, 7)),
        ),
        ("no compression", Box::new(move |b| b[block - 2] = 0)),
        (
            "handshake shorter than its fields",
            Box::new(|b| b[HELLO_LEN_AT + 2] = 40),
        ),
        (
            "block past the hello",
            Box::new(move |b| set16(b, block, 0x0fff)),
        ),
        (
            "block short of the hello",
            Box::new(move |b| {
                let n = u16::from_be_bytes([b[block], b[block + 1]]);
                set16(b, block, n - 4)
            }),
        ),
        (
            "extension past the block",
            Box::new(move |b| set16(b, sni_at + 2, 0x0fff)),
        ),
        (
            "server_name list of 0",
            Box::new(move |b| set16(b, sni_at + 4, 0)),
        ),
        (
            "server_name list short of its extension",
            Box::new(move |b| {
                let n = u16::from_be_bytes([b[sni_at + 4], b[sni_at + 5]]);
                set16(b, sni_at + 4, n - 1)
            }),
        ),
        ("host_name of 0", Box::new(move |b| set16(b, sni_at + 7, 0))),
        (
            "host_name past its list",
            Box::new(move |b| set16(b, sni_at + 7, 200)),
        ),
        (
            "versions list of 0",
            Box::new(move |b| b[versions_at + 4] = 0),
        ),
        (
            "versions list odd",
            Box::new(move |b| b[versions_at + 4] = 3),
        ),
        (
            "versions list past its extension",
            Box::new(move |b| b[versions_at + 4] = 6),
        ),
    ];
    for (what, patch) in cases {
        let mut bytes = good.clone();
        patch(&mut bytes);
        let parsed = parse_client_hello(&bytes);
        assert_eq!(parsed.verdict, Verdict::Malformed, "{what}: {parsed:?}");
        assert_eq!(
            parse_client_hello_whole(&bytes).verdict,
            Verdict::Malformed,
            "{what}"
        );
    }
}

#[test]
fn empty_server_name_or_versions_extensions_are_malformed() {
    for kind in [EXTENSION_SERVER_NAME, EXTENSION_SUPPORTED_VERSIONS] {
        let bytes = Hello::tls13("a.example")
            .without(kind)
            .with(kind, vec![])
            .build();
        assert_eq!(
            parse_client_hello(&bytes).verdict,
            Verdict::Malformed,
            "{kind}"
        );
    }
}

#[test]
fn a_repeated_extension_is_malformed() {
    for (kind, contents) in [
        (EXTENSION_SERVER_NAME, sni(&[(0, "other.example")])),
        (EXTENSION_SUPPORTED_VERSIONS, versions(&[TLS1_2])),
    ] {
        let bytes = Hello::tls13("a.example").with(kind, contents).build();
        assert_eq!(
            parse_client_hello(&bytes).verdict,
            Verdict::Malformed,
            "{kind}"
        );
    }
}

#[test]
fn fields_found_before_a_malformed_extension_are_kept() {
    let mut hello = Hello::tls13("sip.example.com");
    hello.push(0x1234, vec![]);
    let mut bytes = hello.build();
    let bad = extension_at(&hello, 0x1234);
    set16(&mut bytes, bad + 2, 9);
    let parsed = parse_client_hello(&bytes);
    assert_eq!(parsed.verdict, Verdict::Malformed);
    assert_eq!(name_in(&bytes, &parsed).as_deref(), Some("sip.example.com"));
    assert_eq!(parsed.supported_version, Field::Found(TLS1_3));
}

#[test]
fn a_record_past_the_packet_is_a_split_unless_nothing_follows() {
    // Every length is consistent, and the last 100 bytes are not in the packet.
    let mut bytes = Hello::tls13("sip.example.com")
        .with(0x1234, vec![0; 100])
        .build();
    bytes.truncate(bytes.len() - 100);
    let split = parse_client_hello(&bytes);
    assert_eq!(split.verdict, Verdict::Truncated);
    assert_eq!(name_in(&bytes, &split).as_deref(), Some("sip.example.com"));
    assert_eq!(split.supported_version, Field::Found(TLS1_3));
    assert_eq!(parse_client_hello_whole(&bytes).verdict, Verdict::Malformed);
}

#[test]
fn what_is_no_client_hello() {
    let server_hello = {
        let mut b = Hello::tls13("a.example").build();
        b[RECORD_HEADER_LEN] = 2;
        b
    };
    let application_data = {
        let mut b = Hello::tls13("a.example").build();
        b[0] = 23;
        b
    };
    let cases: [(&str, &[u8]); 5] = [
        ("SIP", b"OPTIONS sip:a.example SIP/2.0\r\n\r\n"),
        ("SSLv2 compatible", &[0x80, 0x2e, 0x01, 0x03, 0x01]),
        ("record version 2.0", &[22, 2, 0, 0, 5, 1, 0, 0, 1, 0]),
        ("ServerHello", &server_hello),
        ("application data", &application_data),
    ];
    for (what, bytes) in cases {
        assert_eq!(
            parse_client_hello(bytes).verdict,
            Verdict::NotClientHello,
            "{what}"
        );
    }
}

#[test]
fn the_first_bytes_say_no_more_than_they_hold() {
    let bytes = Hello::tls13("a.example").build();
    let parsed = parse_client_hello(&bytes[..0]);
    assert_eq!(parsed.verdict, Verdict::Truncated);
    assert_eq!(parsed.record_version, None);
    let parsed = parse_client_hello(&bytes[..3]);
    assert_eq!(parsed.record_version, Some(TLS1_0));
    assert_eq!(parsed.client_version, None);
    let parsed = parse_client_hello(&bytes[..11]);
    assert_eq!(parsed.client_version, Some(TLS1_2));
    assert_eq!(parsed.highest_version(), Field::Unknown);
}

#[test]
fn a_reused_state_gives_the_answer_of_a_fresh_one() {
    let large = with_many_extensions(1000, true);
    let small = Hello::tls12("b.example").build();
    let mut state = HelloState::new();
    for bytes in [&large[..], &small[..], &large[..], &OPENSSL_TLS13[..40]] {
        let (buf, len) = ScanBuf::from_payload(bytes);
        parse_in_place(&buf, &mut state, len, false);
        assert_eq!(state.load(), parse_client_hello(bytes));
    }
}

// ---------------------------------------------------------------------------------
// Properties
// ---------------------------------------------------------------------------------

/// What any parse must satisfy, whatever the input.
fn check_invariants(bytes: &[u8], parsed: &ClientHello) {
    let held = bytes.len().min(SCAN_LEN);
    if let Field::Found(span) = parsed.server_name {
        assert!(
            span.start < span.end && span.end() <= held,
            "{span:?} of {held}"
        );
    }
    if parsed.verdict == Verdict::Complete {
        assert!(!parsed.server_name.is_unknown());
        assert!(!parsed.supported_version.is_unknown());
        assert!(parsed.client_version.is_some());
    }
    if let Field::Found(version) = parsed.supported_version {
        assert!(version == 0 || is_tls_version(version));
    }
    assert!(parsed.extensions <= MAX_EXTENSIONS as usize);
}

fn arb_extension() -> impl Strategy<Value = (u16, Vec<u8>)> {
    prop_oneof![
        (0u16..16).prop_map(|i| (0x0a0a + 0x1010 * i, vec![])),
        (100u16..200, proptest::collection::vec(any::<u8>(), 0..40)),
        (0usize..1300).prop_map(|n| (KEY_SHARE, key_share(&[(X25519_MLKEM768, n)]))),
    ]
}

fn arb_version() -> impl Strategy<Value = u16> {
    prop_oneof![
        Just(TLS1_3),
        Just(TLS1_2),
        Just(TLS1_0),
        Just(0x0300),
        (0u16..16).prop_map(|i| 0x0a0a + 0x1010 * i),
        any::<u16>(),
    ]
}

prop_compose! {
    fn arb_hello()(
        others in proptest::collection::vec(arb_extension(), 0..20),
        offered in proptest::option::of(proptest::collection::vec(arb_version(), 1..40)),
        host in proptest::option::of("[a-z0-9.-]{1,60}"),
        order in any::<u64>(),
        session_id in proptest::collection::vec(any::<u8>(), 0..=32),
    ) -> (Hello, Option<Vec<u16>>, Option<String>) {
        let mut extensions = others;
        if let Some(list) = &offered {
            extensions.push((EXTENSION_SUPPORTED_VERSIONS, versions(list)));
        }
        if let Some(host) = &host {
            extensions.push((EXTENSION_SERVER_NAME, sni(&[(0, host)])));
        }
        // A shuffle from the seed (Chrome shuffles its extensions).
        let n = extensions.len();
        for i in (1..n).rev() {
            let j = ((order >> (i % 48)) as usize ^ i.wrapping_mul(0x9e37)) % (i + 1);
            extensions.swap(i, j);
        }
        let mut hello = Hello::tls12("");
        hello.session_id = session_id;
        hello.extensions = Some(extensions);
        (hello, offered, host)
    }
}

proptest! {
    #[test]
    fn any_bytes_parse_without_panic_and_in_bounds(
        bytes in proptest::collection::vec(any::<u8>(), 0..2200),
    ) {
        for parsed in [parse_client_hello(&bytes), parse_client_hello_whole(&bytes)] {
            check_invariants(&bytes, &parsed);
        }
    }

    #[test]
    fn any_bytes_after_a_handshake_header_parse_in_bounds(
        tail in proptest::collection::vec(any::<u8>(), 0..2200),
        record_len in any::<u16>(),
    ) {
        // Past the first checks, so the fuzzing reaches the walk.
        let mut bytes = vec![CONTENT_TYPE_HANDSHAKE, 3, 1];
        bytes.extend(record_len.to_be_bytes());
        bytes.push(HANDSHAKE_CLIENT_HELLO);
        bytes.extend(tail);
        check_invariants(&bytes, &parse_client_hello(&bytes));
    }

    #[test]
    fn a_generated_hello_parses_to_what_was_generated((hello, offered, host) in arb_hello()) {
        let bytes = hello.build();
        let parsed = parse_client_hello(&bytes);
        check_invariants(&bytes, &parsed);
        let walkable = hello.extensions.as_ref().unwrap().len() <= MAX_EXTENSIONS as usize;
        if bytes.len() > SCAN_LEN || !walkable {
            prop_assert!(matches!(parsed.verdict, Verdict::Truncated | Verdict::WalkLimit));
            return Ok(());
        }
        prop_assert_eq!(parsed.verdict, Verdict::Complete);
        let expected_version = match &offered {
            None => Field::Absent,
            Some(list) => Field::Found(
                list.iter().copied().filter(|v| is_tls_version(*v)).max().unwrap_or(0),
            ),
        };
        prop_assert_eq!(parsed.supported_version, expected_version);
        prop_assert_eq!(name_in(&bytes, &parsed), host);
    }

    #[test]
    fn a_split_generated_hello_is_right_or_unknown(
        (hello, _, _) in arb_hello(),
        cut in any::<proptest::sample::Index>(),
    ) {
        let bytes = hello.build();
        let full = parse_client_hello(&bytes);
        let part = parse_client_hello(&bytes[..cut.index(bytes.len())]);
        check_invariants(&bytes, &part);
        prop_assert_ne!(part.verdict, Verdict::Malformed);
        prop_assert!(part.server_name.is_unknown() || part.server_name == full.server_name);
        prop_assert!(
            part.supported_version.is_unknown() || part.supported_version == full.supported_version
        );
    }

    #[test]
    fn a_mutated_hello_parses_in_bounds(
        flips in proptest::collection::vec((any::<proptest::sample::Index>(), any::<u8>()), 1..8),
    ) {
        let mut bytes = Hello::post_quantum("sip.example.com", false).build();
        for (at, value) in flips {
            let i = at.index(bytes.len());
            bytes[i] = value;
        }
        for parsed in [parse_client_hello(&bytes), parse_client_hello_whole(&bytes)] {
            check_invariants(&bytes, &parsed);
        }
    }
}
