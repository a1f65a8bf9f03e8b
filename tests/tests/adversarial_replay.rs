//! The adversarial review of issue 19, replayed: for each class of evasion and false
//! positive it found, captures are written here (Ethernet frames, scapy-style
//! fragments, IPv6 header chains, record-routed calls...), run through the real
//! program by `sip-filter replay --json`, and every packet's verdict, reason and bans
//! are checked. A failure prints the whole capture as a table: case, expected, got.
//!
//! Classes 1, 2, 3, 9 and `tel:` from trusted trunks (part of 7) are fixed: their tests
//! run. Classes 4 to 8 are being fixed on branches of their own: their tests say the
//! fixed behaviour and are `#[ignore]`d until those land; run them with
//! `cargo test -p sip-filter-tests --test adversarial_replay -- --ignored`.
//!
//! Needs root (replay loads the program); in CI (`CI=true`) without it, fails.

use sip_filter_tests::{
    packets::{
        in_dialog, invite_with_sdp,
        shaped::{behind_destination_options, fragments},
        sip_request, udp4_from, udp6_from, SERVER_V4, SERVER_V6, SIP_PORT,
    },
    privileged,
    replay::{banned_at_end, Cases, Expect},
};

/// The served domain; the server is 198.18.0.2 and 2001:db8:5f::2 (its own addresses).
const ALLOWED: &str = "sip:100@pbx.example.test";
/// A domain the server does not serve.
const UNKNOWN: &str = "sip:100@evil.test";
/// The trusted trunk's networks (`[lists] allow`).
const TRUNK_V4: [u8; 4] = [198, 51, 100, 200];
const TRUNK_V6: [u8; 16] = v6(0x7, 1);
/// A denied network (`[lists] deny`).
const DENIED_V4: [u8; 4] = [203, 0, 113, 66];
const DENIED_V6: [u8; 16] = v6(0xdead, 5);

/// The configuration the captures replay under: the served domain, the server's own
/// addresses, a trusted trunk, a denied network, and the default bans and rate limits.
fn config(extra_filter: &str, extra: &str) -> String {
    format!(
        r#"[filter]
domains = ["pbx.example.test", "*.voip.example.test"]
allow_example_domains = true
own_addresses = ["198.18.0.2", "2001:db8:5f::2"]
{extra_filter}

[lists]
allow = ["198.51.100.200/32", "2001:db8:0:7::/64"]
deny = ["203.0.113.66/32", "2001:db8:0:dead::/64"]

{extra}
"#
    )
}

/// An address in 2001:db8:0:`net`::/64 (each `net` a source of its own).
const fn v6(net: u16, host: u8) -> [u8; 16] {
    let [hi, lo] = net.to_be_bytes();
    [
        0x20, 0x01, 0x0d, 0xb8, 0, 0, hi, lo, 0, 0, 0, 0, 0, 0, 0, host,
    ]
}

#[derive(Clone, Copy, PartialEq)]
enum Family {
    V4,
    V6,
}

use Family::{V4, V6};

impl Family {
    fn name(self) -> &'static str {
        match self {
            V4 => "IPv4",
            V6 => "IPv6",
        }
    }

    /// Source number `n` of this family: 198.51.100.`n`, or 2001:db8:0:`n`::1 (a /64 of
    /// its own).
    fn source(self, n: u8) -> Source {
        match self {
            V4 => Source::V4([198, 51, 100, n]),
            V6 => Source::V6(v6(u16::from(n), 1)),
        }
    }

    fn trunk(self) -> Source {
        match self {
            V4 => Source::V4(TRUNK_V4),
            V6 => Source::V6(TRUNK_V6),
        }
    }

    fn denied(self) -> Source {
        match self {
            V4 => Source::V4(DENIED_V4),
            V6 => Source::V6(DENIED_V6),
        }
    }

    /// The server's own address as a SIP host.
    fn server_host(self) -> String {
        match self {
            V4 => std::net::Ipv4Addr::from(SERVER_V4).to_string(),
            V6 => format!("[{}]", std::net::Ipv6Addr::from(SERVER_V6)),
        }
    }
}

#[derive(Clone, Copy)]
enum Source {
    V4([u8; 4]),
    V6([u8; 16]),
}

impl Source {
    /// A UDP frame from this source to `port` on the server, checksum right.
    fn to_port(self, port: u16, payload: &[u8]) -> Vec<u8> {
        match self {
            Source::V4(address) => udp4_from(address, port, payload),
            Source::V6(address) => udp6_from(address, port, payload),
        }
    }

    /// A UDP frame from this source to the SIP port.
    fn sip(self, payload: &[u8]) -> Vec<u8> {
        self.to_port(SIP_PORT, payload)
    }

    /// Another address of the same source (the same IPv4 address, the same /64).
    fn sibling(self) -> Source {
        match self {
            Source::V4(_) => self,
            Source::V6(mut address) => {
                address[15] = 0x99;
                address[8] = 0x42;
                Source::V6(address)
            }
        }
    }
}

fn options(uri: &str) -> Vec<u8> {
    sip_request("OPTIONS", uri, &[])
}

fn with_agent(method: &str, uri: &str, agent: &str) -> Vec<u8> {
    sip_request(method, uri, &[&format!("User-Agent: {agent}")])
}

/// sipvicious's probe: an OPTIONS to a domain not served, with its User-Agent.
fn scanner_probe() -> Vec<u8> {
    with_agent("OPTIONS", UNKNOWN, "friendly-scanner")
}

/// A scanner's probe made larger than one 1000-byte fragment, the User-Agent early.
fn big_scanner_probe() -> Vec<u8> {
    let filler = format!("X-Filler: {}", "f".repeat(1200));
    sip_request(
        "OPTIONS",
        UNKNOWN,
        &["User-Agent: friendly-scanner", &filler],
    )
}

fn reason(name: &'static str) -> Expect {
    Expect::reason(name)
}

fn request(method: &'static str) -> Expect {
    Expect::reason("pass_request").method(method)
}

fn scanner(method: &'static str) -> Expect {
    Expect::reason("drop_scanner")
        .method(method)
        .bans(&["scanner"])
}

fn assert_bans_left(summary: &serde_json::Value, expected: &[(&str, &str)]) {
    let got = banned_at_end(summary);
    let expected: Vec<(String, String)> = expected
        .iter()
        .map(|(s, r)| (s.to_string(), r.to_string()))
        .collect();
    assert_eq!(got, expected, "bans left at the end of the replay");
}

// Class 1: fragments.

/// A first fragment is never a keep-alive; one too short to show a whole request line
/// is dropped (`drop_fragment`), and so the kernel can never reassemble what follows;
/// one showing a whole request line is judged on it. Later fragments pass: without
/// their first they are nothing.
#[test]
fn class_1_fragments() {
    if !privileged("class_1_fragments") {
        return;
    }
    let mut cases = Cases::new();
    for family in [V4, V6] {
        let f = family.name();
        let mut n = 10;
        let mut next = || {
            n += 1;
            family.source(n)
        };
        // scapy: fragment(IP()/UDP()/scan, fragsize=8): the first holds the UDP header.
        let source = next();
        cases.add_all(
            &format!("{f} scanner probe, fragsize 8 (UDP header only first)"),
            fragments(&source.sip(&scanner_probe()), 8),
            reason("drop_fragment"),
            reason("pass_fragment"),
        );
        cases.add(
            format!("{f} the same source afterwards: not banned for a fragment"),
            source.sip(&options(ALLOWED)),
            request("OPTIONS"),
        );
        // A first fragment of CRLFs: the "keep-alive" that carried the request.
        let crlfs_then_probe = [&b"\r\n\r\n\r\n\r\n"[..], &scanner_probe()].concat();
        cases.add_all(
            &format!("{f} four CRLFs then a probe, fragsize 16 (CRLFs first)"),
            fragments(&next().sip(&crlfs_then_probe), 16),
            reason("drop_fragment"),
            reason("pass_fragment"),
        );
        let crlf_then_probe = [&b"\r\n"[..], &scanner_probe()].concat();
        cases.add(
            format!("{f} one CRLF and 6 bytes of a probe, fragsize 16: first"),
            fragments(&next().sip(&crlf_then_probe), 16).remove(0),
            reason("drop_fragment"),
        );
        for (fragsize, shows) in [(16, "the method"), (24, "a request line cut short")] {
            cases.add(
                format!("{f} probe, fragsize {fragsize}: first shows {shows}"),
                fragments(&next().sip(&scanner_probe()), fragsize).remove(0),
                reason("drop_fragment"),
            );
        }
        // Fragments that show a whole request line are judged on what they show.
        let phone = next();
        cases.add_all(
            &format!("{f} a softphone's INVITE with SDP, fragsize 1000"),
            fragments(&phone.sip(&invite_with_sdp(ALLOWED)), 1000),
            request("INVITE"),
            reason("pass_fragment"),
        );
        cases.add_all(
            &format!("{f} an INVITE to a domain not served, fragsize 1000"),
            fragments(&next().sip(&invite_with_sdp(UNKNOWN)), 1000),
            reason("drop_unknown_domain").method("INVITE"),
            reason("pass_fragment"),
        );
        let scanner_source = next();
        cases.add_all(
            &format!("{f} a scanner's large probe, fragsize 1000"),
            fragments(&scanner_source.sip(&big_scanner_probe()), 1000),
            scanner("OPTIONS"),
            reason("pass_fragment"),
        );
        cases.add_all(
            &format!("{f} the banned scanner again, fragsize 8"),
            fragments(&scanner_source.sibling().sip(&scanner_probe()), 8),
            reason("drop_banned"),
            reason("pass_fragment"),
        );
        cases.add(
            format!("{f} a denied source's first fragment"),
            fragments(&family.denied().sip(&options(ALLOWED)), 8).remove(0),
            reason("drop_denied"),
        );
        cases.add(
            format!("{f} a first fragment to another port (DNS): not SIP"),
            fragments(&next().to_port(53, &[0u8; 40]), 8).remove(0),
            reason("pass_not_sip"),
        );
        cases.add(
            format!("{f} a trusted trunk's big INVITE: first fragment judged"),
            fragments(&family.trunk().sip(&invite_with_sdp(ALLOWED)), 1000).remove(0),
            request("INVITE"),
        );
    }
    cases.replay("fragments", &config("", ""), &[]);
}

/// A trusted source's first fragments pass (trusted sources are not held to the
/// fragment policy), but a first fragment is never a keep-alive: one holding only the
/// UDP header, or CRLFs, must not be counted (nor, once keep-alives are metered,
/// metered) as one. Today it is `pass_keepalive`.
#[test]
#[ignore = "finding: a trusted source's first fragment of CRLFs or no payload is counted pass_keepalive (issue 19, class 1)"]
fn class_1_trusted_first_fragments_are_not_keepalives() {
    if !privileged("class_1_trusted_first_fragments_are_not_keepalives") {
        return;
    }
    let mut cases = Cases::new();
    for family in [V4, V6] {
        let f = family.name();
        let trunk = family.trunk();
        cases.add(
            format!("{f} the trunk's INVITE, fragsize 8: the UDP header only"),
            fragments(&trunk.sip(&invite_with_sdp(ALLOWED)), 8).remove(0),
            Expect::passed().except("pass_keepalive"),
        );
        let crlfs_then_invite = [&b"\r\n\r\n\r\n\r\n"[..], &invite_with_sdp(ALLOWED)].concat();
        cases.add(
            format!("{f} the trunk's CRLFs and INVITE, fragsize 16: CRLFs only"),
            fragments(&trunk.sip(&crlfs_then_invite), 16).remove(0),
            Expect::passed().except("pass_keepalive"),
        );
    }
    cases.replay("trusted-fragments", &config("", ""), &[]);
}

/// `drop_fragments = true`: every first fragment from an untrusted source is dropped,
/// whole datagrams and trusted sources' fragments as before.
#[test]
fn class_1_fragments_dropped_by_policy() {
    if !privileged("class_1_fragments_dropped_by_policy") {
        return;
    }
    let mut cases = Cases::new();
    for family in [V4, V6] {
        let f = family.name();
        let phone = family.source(20);
        cases.add_all(
            &format!("{f} a softphone's INVITE with SDP, fragsize 1000"),
            fragments(&phone.sip(&invite_with_sdp(ALLOWED)), 1000),
            reason("drop_fragment"),
            reason("pass_fragment"),
        );
        cases.add_all(
            &format!("{f} scanner probe, fragsize 8"),
            fragments(&family.source(21).sip(&scanner_probe()), 8),
            reason("drop_fragment"),
            reason("pass_fragment"),
        );
        cases.add(
            format!("{f} the softphone's INVITE whole"),
            phone.sip(&invite_with_sdp(ALLOWED)),
            request("INVITE"),
        );
        cases.add(
            format!("{f} a trusted trunk's big INVITE: first fragment judged"),
            fragments(&family.trunk().sip(&invite_with_sdp(ALLOWED)), 1000).remove(0),
            request("INVITE"),
        );
    }
    cases.replay("drop-fragments", &config("drop_fragments = true", ""), &[]);
}

// Class 2: IPv6 extension-header chains.

/// A header chain the parser cannot walk meets the deny list and the bans first, then
/// is dropped (`drop_header_chain`); one it can walk is judged as usual.
#[test]
fn class_2_ipv6_header_chains() {
    if !privileged("class_2_ipv6_header_chains") {
        return;
    }
    let mut cases = Cases::new();
    let chained = |source: Source, count: usize, payload: &[u8]| {
        behind_destination_options(&source.sip(payload), count)
    };
    let banned = V6.source(30);
    cases.add(
        "a scanner's probe bans its /64",
        banned.sip(&scanner_probe()),
        scanner("OPTIONS"),
    );
    for count in [1, 6, 8, 9, 20] {
        cases.add(
            format!("another address of the banned /64, {count} destination options"),
            chained(banned.sibling(), count, &options(ALLOWED)),
            reason("drop_banned"),
        );
    }
    for count in [6, 9] {
        cases.add(
            format!("the denied /64, {count} destination options"),
            chained(V6.denied(), count, &options(ALLOWED)),
            reason("drop_denied"),
        );
    }
    let fresh = V6.source(31);
    cases.add(
        "a fresh /64, 6 destination options, an allowed OPTIONS",
        chained(fresh, 6, &options(ALLOWED)),
        request("OPTIONS"),
    );
    cases.add(
        "a fresh /64, 8 destination options (the walk's limit)",
        chained(fresh, 8, &options(ALLOWED)),
        request("OPTIONS"),
    );
    cases.add(
        "a fresh /64, 9 destination options: cannot be walked",
        chained(fresh, 9, &options(ALLOWED)),
        reason("drop_header_chain"),
    );
    cases.add(
        "a fresh /64, 9 destination options to another port: cannot be known",
        behind_destination_options(&fresh.to_port(53, &[0u8; 40]), 9),
        reason("drop_header_chain"),
    );
    cases.add(
        "a fresh /64, 6 destination options to another port",
        behind_destination_options(&fresh.to_port(53, &[0u8; 40]), 6),
        reason("pass_not_sip"),
    );
    let scanner_source = V6.source(32);
    cases.add(
        "6 destination options before a scanner's probe",
        chained(scanner_source, 6, &scanner_probe()),
        scanner("OPTIONS"),
    );
    cases.add(
        "its /64 is banned, with or without a chain",
        scanner_source.sibling().sip(&options(ALLOWED)),
        reason("drop_banned"),
    );
    cases.add(
        "the trusted trunk's 9 destination options: left to the kernel",
        chained(V6.trunk(), 9, &options(ALLOWED)),
        reason("pass_unparsed"),
    );
    let summary = cases.replay("header-chains", &config("", ""), &[]);
    assert_bans_left(
        &summary,
        &[
            ("2001:db8:0:1e::/64", "scanner"),
            ("2001:db8:0:20::/64", "scanner"),
        ],
    );
}

// Class 3: record-routed in-dialog requests.

/// Requests routed to us by a topmost Route naming an own address or a served domain
/// are judged as ours; in-dialog ones (a To tag) routed elsewhere are dropped, never
/// counted toward the domain ban; out of a dialog, five unknown domains ban.
#[test]
fn class_3_record_routed_requests() {
    if !privileged("class_3_record_routed_requests") {
        return;
    }
    let mut cases = Cases::new();
    for family in [V4, V6] {
        let f = family.name();
        let phone = family.source(40);
        let server = format!("sip:{};lr", family.server_host());
        for method in ["ACK", "INVITE", "UPDATE", "INFO", "BYE"] {
            cases.add(
                format!("{f} in-dialog {method}, Route: <{server}>"),
                phone.sip(&in_dialog(method, &[&server], true)),
                request(method),
            );
        }
        cases.add(
            format!("{f} in-dialog BYE routed by the served domain, with parameters"),
            phone.sip(&in_dialog(
                "BYE",
                &["sip:pbx.example.test;lr;ftag=a11;did=3"],
                true,
            )),
            request("BYE"),
        );
        cases.add(
            format!("{f} a re-INVITE, two Routes: ours on top"),
            phone.sip(&in_dialog(
                "INVITE",
                &[&server, "sip:proxy.elsewhere.test;lr"],
                true,
            )),
            request("INVITE"),
        );
        cases.add(
            format!("{f} an outbound proxy's preloaded Route (a wildcard domain, no tag)"),
            phone.sip(&in_dialog(
                "INVITE",
                &["sip:edge.voip.example.test;lr"],
                false,
            )),
            request("INVITE"),
        );
        // Ten, over the ban threshold of 5: in a dialog, never banned for.
        for i in 1..=10 {
            cases.add(
                format!("{f} in-dialog BYE routed elsewhere ({i} of 10)"),
                phone.sip(&in_dialog("BYE", &["sip:proxy.elsewhere.test;lr"], true)),
                reason("drop_unknown_domain").method("BYE"),
            );
        }
        cases.add(
            format!("{f} in-dialog INFO, ours only as the second Route"),
            phone.sip(&in_dialog(
                "INFO",
                &["sip:proxy.elsewhere.test;lr", &server],
                true,
            )),
            reason("drop_unknown_domain").method("INFO"),
        );
        cases.add(
            format!("{f} in-dialog ACK, no Route"),
            phone.sip(&in_dialog("ACK", &[], true)),
            reason("drop_unknown_domain").method("ACK"),
        );
        cases.add(
            format!("{f} the phone is not banned for them"),
            phone.sip(&options(ALLOWED)),
            request("OPTIONS"),
        );
        cases.add(
            format!("{f} a Route naming us does not excuse a scanner's User-Agent"),
            family.source(41).sip(&sip_request(
                "OPTIONS",
                UNKNOWN,
                &[
                    &format!("Route: <{server}>"),
                    "User-Agent: friendly-scanner",
                ],
            )),
            scanner("OPTIONS"),
        );
        // Out of a dialog, a foreign Request-URI and a foreign Route count toward the
        // ban: the fifth bans.
        let guesser = family.source(42);
        let foreign = sip_request("INVITE", UNKNOWN, &["Route: <sip:proxy.evil.test;lr>"]);
        for i in 1..=4 {
            cases.add(
                format!("{f} out of a dialog, a foreign URI and Route ({i} of 5)"),
                guesser.sip(&foreign),
                reason("drop_unknown_domain").method("INVITE"),
            );
        }
        cases.add(
            format!("{f} out of a dialog, a foreign URI and Route (5 of 5): banned"),
            guesser.sip(&foreign),
            reason("drop_unknown_domain")
                .method("INVITE")
                .bans(&["domain"]),
        );
        cases.add(
            format!("{f} then the guesser is banned"),
            guesser.sip(&options(ALLOWED)),
            reason("drop_banned"),
        );
    }
    let summary = cases.replay("record-route", &config("", ""), &[]);
    let left = banned_at_end(&summary);
    let mut reasons: Vec<&str> = left.iter().map(|(_, r)| r.as_str()).collect();
    reasons.sort_unstable();
    assert_eq!(
        reasons,
        ["domain", "domain", "scanner", "scanner"],
        "only the scanners and the guessers banned, over IPv4 and IPv6: {left:?}"
    );
}

// Class 7 (part fixed): tel: from trusted trunks.

/// A trusted trunk's `tel:` Request-URIs pass (trusted sources skip the domain check);
/// an untrusted source's are unknown domains (`allow_hostless_uri = false`).
#[test]
fn class_7_tel_uris_from_trusted_trunks() {
    if !privileged("class_7_tel_uris_from_trusted_trunks") {
        return;
    }
    let mut cases = Cases::new();
    for family in [V4, V6] {
        let f = family.name();
        for method in ["INVITE", "MESSAGE", "OPTIONS"] {
            cases.add(
                format!("{f} the trunk's {method} to tel:+15551234567"),
                family
                    .trunk()
                    .sip(&sip_request(method, "tel:+15551234567", &[])),
                request(method),
            );
        }
        cases.add(
            format!("{f} the trunk's INVITE to tel: with parameters"),
            family.trunk().sip(&sip_request(
                "INVITE",
                "tel:+1-555-123-4567;phone-context=example.test",
                &[],
            )),
            request("INVITE"),
        );
        cases.add(
            format!("{f} an untrusted source's INVITE to tel:"),
            family
                .source(50)
                .sip(&sip_request("INVITE", "tel:+15551234567", &[])),
            reason("drop_unknown_domain").method("INVITE"),
        );
    }
    cases.replay("tel-trunk", &config("", ""), &[]);
}

// Class 9: scanner User-Agents match the product token.

fn agent_cases(cases: &mut Cases, family: Family, agents: &[(&str, Expect)]) {
    let f = family.name();
    for (i, (agent, expect)) in agents.iter().enumerate() {
        let source = family.source(60 + i as u8);
        cases.add(
            format!("{f} User-Agent: {}", agent.escape_debug()),
            source.sip(&with_agent("OPTIONS", ALLOWED, agent)),
            expect.clone(),
        );
        if expect.makes_bans() {
            cases.add(
                format!("{f} then {}'s source is banned", agent.escape_debug()),
                source.sip(&with_agent("REGISTER", ALLOWED, "Linphone/5.2.0")),
                reason("drop_banned"),
            );
        }
    }
}

/// A listed name matches the User-Agent's product token (before `/`, space or tab),
/// any case; an entry ending in `*` matches as a prefix.
#[test]
fn class_9_scanner_user_agents() {
    if !privileged("class_9_scanner_user_agents") {
        return;
    }
    let by_token = [
        ("SIPClient/2.1 (Android)", request("OPTIONS")),
        ("iWARP-phone/1.0", request("OPTIONS")),
        ("sipsak 0.9.8", request("OPTIONS")),
        ("Phone (not a friendly-scanner)", request("OPTIONS")),
        ("friendly-scanner", scanner("OPTIONS")),
        ("sipcli/v1.8", scanner("OPTIONS")),
        ("SIPCLI/v1.8", scanner("OPTIONS")),
        ("iWar 0.9", scanner("OPTIONS")),
        ("sipvicious\t0.3.4", scanner("OPTIONS")),
    ];
    let mut cases = Cases::new();
    for family in [V4, V6] {
        agent_cases(&mut cases, family, &by_token);
        cases.add(
            format!(
                "{} the trusted trunk is never judged a scanner",
                family.name()
            ),
            family
                .trunk()
                .sip(&with_agent("OPTIONS", ALLOWED, "friendly-scanner")),
            request("OPTIONS"),
        );
    }
    cases.replay("user-agents", &config("", ""), &[]);

    // Entries that ask for prefix matching keep it.
    let by_prefix = [
        ("SIPClient/2.1 (Android)", scanner("OPTIONS")),
        ("sipcli/v1.8", scanner("OPTIONS")),
        ("friendly-scanner", scanner("OPTIONS")),
        ("friendly-scanner-2", request("OPTIONS")),
        ("Linphone/5.2.0 (belle-sip/5.2.0)", request("OPTIONS")),
    ];
    let mut cases = Cases::new();
    for family in [V4, V6] {
        agent_cases(&mut cases, family, &by_prefix);
    }
    cases.replay(
        "user-agent-prefixes",
        &config(
            "",
            "[scanner]\nuser_agents = [\"sipcli*\", \"friendly-scanner\"]",
        ),
        &[],
    );
}
