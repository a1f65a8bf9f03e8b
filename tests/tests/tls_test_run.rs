//! The TLS ClientHello policy (issue 14, item 4) in the real programs, fed frames with
//! BPF_PROG_TEST_RUN: the XDP program hands an untrusted source's segment to a TLS port
//! on to the TCP program, which hands it to the TLS program. Each case: the verdict,
//! and the one counter it moves. ClientHellos come from the parser's own builder
//! (`sip_filter_common::tls::builder`). Run on 6.1 too (`cargo xtask vm-test`).

use sip_filter::{
    settings::{BanRules, NoSniPolicy, RateLimits, TlsRules, TlsVersion},
    Filter, Settings,
};
use sip_filter_common::{
    maps::{BanReason, Transport},
    tls::{
        builder::{sni, versions, Hello},
        EXTENSION_SERVER_NAME, EXTENSION_SUPPORTED_VERSIONS, NAME_TYPE_HOST_NAME, TLS1_0, TLS1_2,
        TLS1_3,
    },
    Counters, Method, Reason,
};
use sip_filter_tests::{
    loaded::configured,
    packets::{shaped, *},
    privileged,
};

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;
const TLS_PORT: u16 = 5061;
const SERVED: &str = "pbx.example.test";

/// Served domains (the default SNI allowlist), TLS 1.2 at least, no SNI passes; no
/// other rule that a table of one source's frames could trip.
fn settings() -> Settings {
    Settings {
        domains: vec![SERVED.into(), "*.voip.example.test".into()],
        ban: BanRules::off(),
        rate_limits: RateLimits::none(),
        allow: vec!["198.51.100.200/32".parse().expect("a network")],
        tls: TlsRules {
            refused_seconds: 0,
            ..TlsRules::default()
        },
        ..Settings::default()
    }
}

/// A segment of an established connection to the TLS port, from the client.
fn tls4(payload: &[u8]) -> Vec<u8> {
    tcp4_from(CLIENT_V4, TLS_PORT, Segment::Established, payload)
}

fn tls6(payload: &[u8]) -> Vec<u8> {
    tcp6_from(CLIENT_V6, TLS_PORT, Segment::Established, payload)
}

struct Case {
    name: String,
    frame: Vec<u8>,
    reason: Reason,
    /// A count toward a ban not made: the TCP checksum was wrong.
    ban_skipped_bad_checksum: bool,
    /// The transport it is counted under: tls, but for a TLS-looking segment to the
    /// SIP-over-TCP port.
    transport: Transport,
}

fn case(name: impl Into<String>, frame: Vec<u8>, reason: Reason) -> Case {
    Case {
        name: name.into(),
        frame,
        reason,
        ban_skipped_bad_checksum: false,
        transport: Transport::Tls,
    }
}

/// Runs each case; every case must get its action and move exactly its reason's
/// counter (bans added are asserted by the tests about them).
fn assert_table(filter: &Filter, cases: Vec<Case>, dry_run: bool) {
    let total = cases.len();
    let mut failures = Vec::new();
    for case in cases {
        let before = filter.counters().expect("counters read");
        let action = filter
            .test_run(&case.frame)
            .unwrap_or_else(|e| panic!("{}: BPF_PROG_TEST_RUN failed: {e}", case.name));
        let delta = filter.counters().expect("counters read").since(&before);
        let mut expected = Counters::default();
        expected.packets[case.reason as usize][Method::None as usize] = 1;
        // Every verdict is counted by transport too (issue 14, item 6).
        expected.transports[case.transport as usize][case.reason as usize] = 1;
        expected.ban_skipped_bad_checksum = u64::from(case.ban_skipped_bad_checksum);
        expected.bans_added = delta.bans_added;
        let expected_action = if case.reason.is_drop() && !dry_run {
            XDP_DROP
        } else {
            XDP_PASS
        };
        if action != expected_action || delta != expected {
            let counted: Vec<String> = Reason::ALL
                .iter()
                .filter(|r| delta.reason_total(**r) != 0)
                .map(|r| r.name().to_string())
                .collect();
            failures.push(format!(
                "{}: action {action} (expected {expected_action}); counted {counted:?}, ban_skipped_bad_checksum {} (expected {})",
                case.name,
                delta.ban_skipped_bad_checksum,
                case.reason.name(),
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {total} cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    eprintln!("{total} cases passed");
}

/// A TLS 1.3 ClientHello offering, by supported_versions, `offered` only.
fn offering(offered: &[u16]) -> Hello {
    Hello::tls13(SERVED)
        .without(EXTENSION_SUPPORTED_VERSIONS)
        .with(EXTENSION_SUPPORTED_VERSIONS, versions(offered))
}

/// A TLS 1.2-only ClientHello (no supported_versions) whose client_version is `legacy`.
fn legacy(legacy: u16) -> Hello {
    let mut hello = Hello::tls12(SERVED);
    hello.client_version = legacy;
    hello
}

fn without_sni() -> Hello {
    Hello::tls13(SERVED).without(EXTENSION_SERVER_NAME)
}

/// `hello` with `count` empty extensions of unassigned types before its own.
fn with_extensions(hello: Hello, count: u16) -> Hello {
    let mut hello = hello;
    let own = hello.extensions.take().unwrap_or_default();
    let mut extensions: Vec<(u16, Vec<u8>)> = (0..count).map(|n| (0x7000 + n, vec![])).collect();
    extensions.extend(own);
    hello.extensions = Some(extensions);
    hello
}

fn client_hello_cases() -> Vec<Case> {
    use Reason::*;
    let whole_pq = Hello::post_quantum(SERVED, true).build();
    let foreign_pq = Hello::post_quantum("evil.example.net", false).build();
    assert!(whole_pq.len() > 1500, "{} bytes", whole_pq.len());
    // A ClientHello whose first extension's length points past the extension block.
    let mut past_block = Hello::tls13(SERVED).build();
    // Headers, version, random, a 32-byte session id, 8 suites, 1 compression method.
    let block_len_at = 5 + 4 + 2 + 32 + 1 + 32 + 2 + 2 * 8 + 1 + 1;
    let first_extension_len_at = block_len_at + 2 + 2;
    past_block[first_extension_len_at..first_extension_len_at + 2]
        .copy_from_slice(&0xfff0u16.to_be_bytes());
    // A record length past the segment: the record goes on in the next one.
    let mut record_past_segment = Hello::tls13(SERVED).build();
    record_past_segment[3..5].copy_from_slice(&0x3000u16.to_be_bytes());
    // A server_name list whose length disagrees with its extension's.
    let bad_sni = Hello::tls13(SERVED)
        .without(EXTENSION_SERVER_NAME)
        .with(EXTENSION_SERVER_NAME, {
            let mut contents = sni(&[(NAME_TYPE_HOST_NAME, SERVED)]);
            contents[1] += 1;
            contents
        })
        .build();
    let many = with_extensions(Hello::tls13(SERVED), 1000).build();
    vec![
        case(
            "TLS 1.3, served name",
            tls4(&Hello::tls13(SERVED).build()),
            PassTlsHello,
        ),
        case(
            "TLS 1.2 only (no supported_versions)",
            tls4(&Hello::tls12(SERVED).build()),
            PassTlsHello,
        ),
        case(
            "TLS 1.1 only, by its client_version",
            tls4(&legacy(TLS1_0 + 1).build()),
            DropTlsVersion,
        ),
        case(
            "TLS 1.0 only",
            tls4(&legacy(TLS1_0).build()),
            DropTlsVersion,
        ),
        case(
            "legacy fields say 1.2, supported_versions 1.1 and 1.0",
            tls4(&offering(&[TLS1_0 + 1, TLS1_0]).build()),
            DropTlsVersion,
        ),
        case(
            "supported_versions 1.3 only",
            tls4(&offering(&[TLS1_3]).build()),
            PassTlsHello,
        ),
        case(
            "GREASE and a draft beside 1.2",
            tls4(&offering(&[0x1a1a, 0x7f1c, TLS1_2]).build()),
            PassTlsHello,
        ),
        case(
            "only GREASE and a draft: no TLS version",
            tls4(&offering(&[0x1a1a, 0x7f1c]).build()),
            DropTlsVersion,
        ),
        case(
            "post-quantum, GREASE, 1.7 KB, in one segment",
            tls4(&whole_pq),
            PassTlsHello,
        ),
        case(
            "a wildcard's name",
            tls4(&Hello::tls13("a.voip.example.test").build()),
            PassTlsHello,
        ),
        case(
            "the served name in capitals",
            tls4(&Hello::tls13("PBX.Example.Test").build()),
            PassTlsHello,
        ),
        case(
            "a foreign name",
            tls4(&Hello::tls13("evil.example.net").build()),
            DropTlsSni,
        ),
        case(
            "a served domain's parent (no wildcard)",
            tls4(&Hello::tls13("example.test").build()),
            DropTlsSni,
        ),
        case(
            "no server name (phones set up with an IP address)",
            tls4(&without_sni().build()),
            PassTlsHello,
        ),
        case(
            "split: first segment, name after the key share",
            tls4(&whole_pq[..1000]),
            PassTlsUnknown,
        ),
        case(
            "split: second segment",
            tls4(&whole_pq[1000..]),
            PassSegment,
        ),
        case(
            "split: first segment holds a foreign name",
            tls4(&foreign_pq[..600]),
            DropTlsSni,
        ),
        case(
            "truncated: the record header's first 3 bytes",
            tls4(&whole_pq[..3]),
            PassTlsUnknown,
        ),
        case(
            "truncated: inside the session id",
            tls4(&whole_pq[..50]),
            PassTlsUnknown,
        ),
        case(
            "an extension length past its block",
            tls4(&past_block),
            DropTlsMalformed,
        ),
        case(
            "a record length past the segment",
            tls4(&record_past_segment),
            PassTlsHello,
        ),
        case(
            "a server_name list length past its extension",
            tls4(&bad_sni),
            DropTlsMalformed,
        ),
        case(
            "1,000 extensions (the walk stops at 32)",
            tls4(&many[..1400]),
            PassTlsUnknown,
        ),
        case(
            "an application data record",
            tls4(&[0x17, 3, 3, 0, 5, 1, 2, 3, 4, 5]),
            PassSegment,
        ),
        case(
            "a later handshake record (ClientKeyExchange)",
            tls4(&[0x16, 3, 3, 0, 6, 16, 0, 0, 2, 1, 2]),
            PassSegment,
        ),
        case(
            "SIP in the clear on the TLS port",
            tls4(&sip_request("OPTIONS", "sip:pbx.example.test", &[])),
            PassSegment,
        ),
        case(
            "IPv6, served name",
            tls6(&Hello::tls13(SERVED).build()),
            PassTlsHello,
        ),
        case(
            "IPv6, a foreign name",
            tls6(&Hello::tls13("evil.example.net").build()),
            DropTlsSni,
        ),
        case(
            "IPv6 behind 3 Destination Options headers, served name",
            shaped::behind_destination_options(&tls6(&Hello::tls13(SERVED).build()), 3),
            PassTlsHello,
        ),
        case(
            "IPv6 behind 3 Destination Options headers, TLS 1.0",
            shaped::behind_destination_options(&tls6(&legacy(TLS1_0).build()), 3),
            DropTlsVersion,
        ),
        case(
            "a trusted source is not judged",
            tcp4_from(
                [198, 51, 100, 200],
                TLS_PORT,
                Segment::Established,
                &legacy(TLS1_0).build(),
            ),
            PassSegment,
        ),
        // Judged as SIP over TCP, where it starts no message.
        Case {
            transport: Transport::Tcp,
            ..case(
                "the TCP port is not the TLS port",
                tcp4_from(
                    CLIENT_V4,
                    SIP_PORT,
                    Segment::Established,
                    &legacy(TLS1_0).build(),
                ),
                PassContinuation,
            )
        },
    ]
}

#[test]
fn client_hellos() {
    if privileged("client_hellos") {
        assert_table(&configured(&settings()), client_hello_cases(), false);
    }
}

/// Dry-run: every verdict counted as made, everything passes, no ban.
#[test]
fn client_hellos_in_dry_run() {
    if !privileged("client_hellos_in_dry_run") {
        return;
    }
    let filter = configured(&Settings {
        dry_run: true,
        tls: TlsRules {
            refused_hits: 1,
            refused_seconds: 600,
            ..TlsRules::default()
        },
        ..settings()
    });
    assert_table(&filter, client_hello_cases(), true);
    assert!(
        filter.bans().expect("bans").is_empty(),
        "dry-run bans nothing"
    );
}

/// Each knob of `[tls]` does what it says.
#[test]
fn tls_settings_change_verdicts() {
    use Reason::*;
    if !privileged("tls_settings_change_verdicts") {
        return;
    }
    let strict = configured(&Settings {
        tls: TlsRules {
            min_version: Some(TlsVersion::Tls1_3),
            no_sni: NoSniPolicy::Drop,
            server_names: Some(vec![
                "tls.example.test".into(),
                "*.phones.example.test".into(),
            ]),
            ..settings().tls
        },
        ..settings()
    });
    assert_table(
        &strict,
        vec![
            case(
                "1.3 required: TLS 1.2 only",
                tls4(&Hello::tls12("tls.example.test").build()),
                DropTlsVersion,
            ),
            case(
                "1.3 required: 1.3 offered",
                tls4(&Hello::tls13("tls.example.test").build()),
                PassTlsHello,
            ),
            case(
                "its own list: a name on it",
                tls4(&Hello::tls13("a.phones.example.test").build()),
                PassTlsHello,
            ),
            case(
                "its own list: a served domain not on it",
                tls4(&Hello::tls13(SERVED).build()),
                DropTlsSni,
            ),
            case(
                "no server name, dropped",
                tls4(&without_sni().build()),
                DropTlsNoSni,
            ),
            case(
                "split before the name: unknown",
                tls4(&Hello::post_quantum("tls.example.test", true).build()[..1000]),
                PassTlsUnknown,
            ),
        ],
        false,
    );
    let open = configured(&Settings {
        tls: TlsRules {
            min_version: None,
            server_names: Some(vec![]),
            ..settings().tls
        },
        ..settings()
    });
    assert_table(
        &open,
        vec![
            case("any version", tls4(&legacy(TLS1_0).build()), PassTlsHello),
            case(
                "no name check",
                tls4(&Hello::tls13("evil.example.net").build()),
                PassTlsHello,
            ),
            case(
                "nothing to judge is unknown",
                tls4(&Hello::post_quantum("x", true).build()[..1000]),
                PassTlsHello,
            ),
            case(
                "malformed is still dropped",
                tls4(&{
                    let mut bytes = Hello::tls13(SERVED).build();
                    bytes[43] = 33; // a session id longer than 32 bytes
                    bytes
                }),
                DropTlsMalformed,
            ),
        ],
        false,
    );
}

/// Refused handshakes ban their source (reason `tls`), counted only on a verified TCP
/// checksum, over IPv4 and IPv6.
#[test]
fn refused_handshakes_ban_the_source() {
    use Reason::*;
    if !privileged("refused_handshakes_ban_the_source") {
        return;
    }
    let filter = configured(&Settings {
        tls: TlsRules {
            refused_hits: 3,
            refused_window_seconds: 60,
            refused_seconds: 600,
            ..TlsRules::default()
        },
        ..settings()
    });
    let refused = Hello::tls13("evil.example.net").build();
    // Connection `n`'s ClientHello: each connection from a source port of its own.
    let v4 = |n| {
        on_connection(
            tcp4_from([198, 51, 100, 41], TLS_PORT, Segment::Established, &refused),
            n,
        )
    };
    let mut v6_source = CLIENT_V6;
    v6_source[7] = 0x41; // another /64 than the client's
    let v6 = |n| {
        on_connection(
            tcp6_from(v6_source, TLS_PORT, Segment::Established, &refused),
            n,
        )
    };
    for (family, frame) in [("IPv4", &v4 as &dyn Fn(u16) -> Vec<u8>), ("IPv6", &v6)] {
        let before = filter.counters().expect("counters").bans_added[BanReason::Tls as usize];
        let mut bad_checksum = case(
            format!("{family}: a wrong TCP checksum: no refusal counted"),
            with_wrong_tcp_checksum(frame(9)),
            DropTlsSni,
        );
        bad_checksum.ban_skipped_bad_checksum = true;
        assert_table(
            &filter,
            vec![
                case(format!("{family}: refusal 1"), frame(1), DropTlsSni),
                case(
                    format!("{family}: its TCP retransmission: dropped, not counted"),
                    frame(1),
                    DropTlsSni,
                ),
                bad_checksum,
                case(format!("{family}: refusal 2"), frame(2), DropTlsSni),
                case(
                    format!("{family}: connection 1, closed, resent after 2 opened: not counted"),
                    frame(1),
                    DropTlsSni,
                ),
                case(format!("{family}: refusal 3: banned"), frame(3), DropTlsSni),
                case(format!("{family}: banned"), frame(4), DropBanned),
            ],
            false,
        );
        let after = filter.counters().expect("counters").bans_added[BanReason::Tls as usize];
        assert_eq!(after - before, 1, "{family}: one tls ban");
    }
    let bans = filter.bans().expect("bans");
    let tls_bans = bans
        .iter()
        .filter(|(_, ban)| ban.reason == BanReason::Tls as u32)
        .count();
    assert_eq!(tls_bans, 2, "{bans:?}");
}

/// `frame`, a TCP segment, from source port 40000 + `n`: another connection's. The
/// checksum is updated for the change (RFC 1624), so it stays right.
fn on_connection(mut frame: Vec<u8>, n: u16) -> Vec<u8> {
    let tcp = udp_header_at(&frame);
    let port = u16::from_be_bytes([frame[tcp], frame[tcp + 1]]);
    let new_port = port + n;
    frame[tcp..tcp + 2].copy_from_slice(&new_port.to_be_bytes());
    let checksum = u16::from_be_bytes([frame[tcp + 16], frame[tcp + 17]]);
    // HC' = ~(~HC + ~m + m'), in one's complement arithmetic.
    let mut sum = u32::from(!checksum) + u32::from(!port) + u32::from(new_port);
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    frame[tcp + 16..tcp + 18].copy_from_slice(&(!(sum as u16)).to_be_bytes());
    frame
}
