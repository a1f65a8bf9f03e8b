//! Host tests of the SIP parser: tables of what RFC 3261 allows and operators send, the
//! parser's defined limits, and property tests (no panic on any input, spans always in
//! bounds, generated valid requests parse to what was generated).
#![allow(clippy::unwrap_used)]

use super::*;
use crate::domain::{allowlist_key, host_hashes};
use proptest::prelude::*;
use std::net::{Ipv4Addr, Ipv6Addr};

/// The header sets the kernel's parses read, each skipping the lines of the others.
const KERNEL_HEADER_SETS: [u16; 4] = [
    POLICY_HEADERS,
    ANSWER_HEADERS,
    stream::STREAM_HEADERS,
    stream::ANSWER_STREAM_HEADERS,
];

// ---------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------

/// Parses `payload` as the kernel would (a fresh scratch); returns the result and the
/// bytes the spans index (the payload's first `len` bytes).
fn run(payload: &[u8], whole: bool) -> (Payload, Vec<u8>) {
    let mut scratch = Scratch::new();
    let len = scratch.fill(payload);
    (parse(&mut scratch, len, whole), payload[..len].to_vec())
}

/// A message that parsed as SIP, with the bytes its spans index.
struct Msg {
    msg: SipMessage,
    bytes: Vec<u8>,
}

impl Msg {
    /// The spanned bytes as text; panics if the span is out of bounds.
    fn text(&self, span: Span) -> String {
        assert!(span.start <= span.end, "{span:?}");
        String::from_utf8_lossy(&self.bytes[span.start()..span.end()]).into_owned()
    }
    fn header(&self, h: Header) -> Option<String> {
        let span = self.msg.header(h);
        span.is_present().then(|| self.text(span))
    }
    fn method(&self) -> Method {
        self.msg.method
    }
    fn uri(&self) -> RequestUri {
        match self.msg.start() {
            StartLine::Request { uri, .. } => uri,
            StartLine::Response { status } => panic!("a response ({status}), not a request"),
        }
    }
    fn host(&self) -> Option<String> {
        let host = self.uri().host;
        host.is_present().then(|| self.text(host))
    }
    fn user(&self) -> Option<String> {
        let user = self.uri().user;
        user.is_present().then(|| self.text(user))
    }
    fn status(&self) -> u16 {
        match self.msg.start() {
            StartLine::Response { status } => status,
            StartLine::Request { method, .. } => panic!("a request ({method:?}), not a response"),
        }
    }
    fn complete(&self) -> bool {
        self.msg.headers_complete
    }
    /// The headers that are present.
    fn present(&self) -> Vec<Header> {
        Header::ALL
            .into_iter()
            .filter(|&h| self.msg.header(h).is_present())
            .collect()
    }
}

/// Parses bytes that must be SIP.
fn sip_bytes(payload: &[u8], whole: bool) -> Msg {
    match run(payload, whole) {
        (Payload::Sip(msg), bytes) => Msg { msg, bytes },
        (other, _) => panic!(
            "not SIP ({other:?}): {:?}",
            String::from_utf8_lossy(payload)
        ),
    }
}

/// Parses a whole datagram that must be SIP.
fn sip(text: &str) -> Msg {
    sip_bytes(text.as_bytes(), true)
}

/// What a payload is, as one word.
fn kind(payload: &[u8], whole: bool) -> &'static str {
    match run(payload, whole).0 {
        Payload::Sip(_) => "sip",
        Payload::Keepalive => "keepalive",
        Payload::NotSip => "not sip",
    }
}

/// A request with CRLF line ends and the empty line ending its headers.
fn request(method: &str, uri: &str, headers: &[&str]) -> String {
    let mut text = format!("{method} {uri} SIP/2.0\r\n");
    for h in headers {
        text.push_str(h);
        text.push_str("\r\n");
    }
    text.push_str("\r\n");
    text
}

/// A request to a usual Request-URI.
fn invite(headers: &[&str]) -> String {
    request("INVITE", "sip:bob@biloxi.example.com", headers)
}

const METHODS: [(&str, Method); 14] = [
    ("INVITE", Method::Invite),
    ("ACK", Method::Ack),
    ("BYE", Method::Bye),
    ("CANCEL", Method::Cancel),
    ("OPTIONS", Method::Options),
    ("REGISTER", Method::Register),
    ("PRACK", Method::Prack),
    ("SUBSCRIBE", Method::Subscribe),
    ("NOTIFY", Method::Notify),
    ("PUBLISH", Method::Publish),
    ("INFO", Method::Info),
    ("REFER", Method::Refer),
    ("MESSAGE", Method::Message),
    ("UPDATE", Method::Update),
];

/// RFC 3261 §24.2's INVITE (F1), with its SDP body, an outbound proxy's preloaded
/// Route (§8.1.2), and the credentials and Expires of §24.2's F3 (the INVITE sent again
/// after a 407 challenge). Its WWW-Authenticate has no place in a request, but a parse
/// of every header records it.
const RFC_INVITE: &str = "INVITE sip:bob@biloxi.example.com SIP/2.0\r\n\
Via: SIP/2.0/UDP client.atlanta.example.com:5060;branch=z9hG4bK74bf9\r\n\
Max-Forwards: 70\r\n\
Route: <sip:ss1.atlanta.example.com;lr>\r\n\
From: Alice <sip:alice@atlanta.example.com>;tag=9fxced76sl\r\n\
To: Bob <sip:bob@biloxi.example.com>\r\n\
Call-ID: 3848276298220188511@atlanta.example.com\r\n\
CSeq: 1 INVITE\r\n\
Contact: <sip:alice@client.atlanta.example.com;transport=udp>\r\n\
Proxy-Authorization: Digest username=\"alice\", realm=\"atlanta.example.com\"\r\n\
WWW-Authenticate: Digest realm=\"x\"\r\n\
Expires: 180\r\n\
User-Agent: Acme-Phone/2.1 (build 42)\r\n\
Content-Type: application/sdp\r\n\
Content-Length: 151\r\n\
\r\n\
v=0\r\n\
o=alice 2890844526 2890844526 IN IP4 client.atlanta.example.com\r\n\
s=-\r\n\
c=IN IP4 192.0.2.101\r\n\
t=0 0\r\n\
m=audio 49172 RTP/AVP 0\r\n\
a=rtpmap:0 PCMU/8000\r\n";

/// The values [`RFC_INVITE`] must yield.
const RFC_INVITE_VALUES: [(Header, &str); Header::COUNT] = [
    (Header::UserAgent, "Acme-Phone/2.1 (build 42)"),
    (Header::Route, "<sip:ss1.atlanta.example.com;lr>"),
    (Header::To, "Bob <sip:bob@biloxi.example.com>"),
    (
        Header::From,
        "Alice <sip:alice@atlanta.example.com>;tag=9fxced76sl",
    ),
    (Header::CallId, "3848276298220188511@atlanta.example.com"),
    (Header::CSeq, "1 INVITE"),
    (
        Header::Contact,
        "<sip:alice@client.atlanta.example.com;transport=udp>",
    ),
    (
        Header::Via,
        "SIP/2.0/UDP client.atlanta.example.com:5060;branch=z9hG4bK74bf9",
    ),
    (Header::ContentLength, "151"),
    (
        Header::Credentials,
        "Digest username=\"alice\", realm=\"atlanta.example.com\"",
    ),
    (Header::Challenge, "Digest realm=\"x\""),
    (Header::Expires, "180"),
];

fn assert_rfc_invite(m: &Msg, context: &str) {
    assert_eq!(m.method(), Method::Invite, "{context}");
    assert_eq!(m.host().as_deref(), Some("biloxi.example.com"), "{context}");
    assert_eq!(m.user().as_deref(), Some("bob"), "{context}");
    for (h, value) in RFC_INVITE_VALUES {
        assert_eq!(m.header(h).as_deref(), Some(value), "{context}: {h:?}");
    }
    assert!(m.complete(), "{context}");
}

// ---------------------------------------------------------------------------------
// Start lines
// ---------------------------------------------------------------------------------

#[test]
fn rfc_3261_invite() {
    assert_rfc_invite(&sip(RFC_INVITE), "whole");
    // The headers end at the empty line: the prefix's cut body does not matter.
    assert_rfc_invite(&sip_bytes(RFC_INVITE.as_bytes(), false), "prefix");
    let m = sip(RFC_INVITE);
    assert_eq!(m.uri().scheme, Scheme::Sip);
    assert_eq!(m.uri().host_kind, HostKind::Name);
    assert_eq!(m.uri().port, 0);
}

#[test]
fn every_method() {
    for (name, method) in METHODS {
        let m = sip(&request(name, "sip:bob@biloxi.example.com", &["Via: v"]));
        assert_eq!(m.method(), method, "{name}");
        assert_eq!(method.name(), name);
        assert_eq!(m.host().as_deref(), Some("biloxi.example.com"), "{name}");
        assert_eq!(m.header(Header::Via).as_deref(), Some("v"), "{name}");
    }
}

#[test]
fn extension_and_miscased_methods_are_other() {
    for name in [
        "FOO",
        "X",
        "invite",
        "Invite",
        "iNVITE",
        "register",
        "INVIT",
        "INVITEX",
        "ACKS",
        "SUBSCRIB",
        "SUBSCRIBF",
        "SUBSCRIBEX",
        "subscribe",
        "NOTIFYING",
        "MESSAGES",
        "REGISTERED",
        "UPDATE2",
        "PUBLISH-X",
        "A-VERY-LONG-EXTENSION-METHOD",
    ] {
        let m = sip(&request(name, "sip:bob@biloxi.example.com", &[]));
        assert_eq!(m.method(), Method::Other, "{name}");
        assert_eq!(m.host().as_deref(), Some("biloxi.example.com"), "{name}");
    }
}

#[test]
fn every_status_code() {
    for status in 0..1000u16 {
        let text = format!("SIP/2.0 {status:03} Whatever\r\nVia: v\r\n\r\n");
        if (100..700).contains(&status) {
            let m = sip(&text);
            assert_eq!(m.status(), status);
            assert_eq!(m.method(), Method::None);
            assert_eq!(m.header(Header::Via).as_deref(), Some("v"));
            assert!(m.complete());
        } else {
            assert_eq!(kind(text.as_bytes(), true), "not sip", "{text:?}");
        }
    }
}

#[test]
fn status_line_forms() {
    for (line, status) in [
        ("SIP/2.0 200 OK", 200),
        ("SIP/2.0 180 Ringing", 180),
        ("SIP/2.0 486 Busy Here", 486),
        ("SIP/2.0 200", 200), // no reason phrase
        ("SIP/2.0 200 ", 200),
        ("sip/2.0 404 Not Found", 404), // the version is case-insensitive
        ("Sip/2.0 603 Decline", 603),
    ] {
        let m = sip(&format!(
            "{line}\r\nTo: <sip:bob@biloxi.example.com>;tag=1\r\n\r\n"
        ));
        assert_eq!(m.status(), status, "{line}");
        assert_eq!(
            m.header(Header::To).as_deref(),
            Some("<sip:bob@biloxi.example.com>;tag=1"),
            "{line}"
        );
    }
    for line in [
        "SIP/2.0 20 OK",
        "SIP/2.0 2000 OK",
        "SIP/2.0 2O0 OK",
        "SIP/2.0 -200 OK",
        "SIP/2.0  200 OK",
        "SIP/2.0\t200 OK",
        "SIP/2.0 200\tOK",
        "SIP/2.1 200 OK",
        "SIP/1.0 200 OK",
        "SIP/20 200 OK",
        "SIP/2.0",
        "SIP/2.0 ",
        "SIP/2.0 99 Too Low",
        "SIP/2.0 700 Too High",
        "HTTP/1.1 200 OK",
    ] {
        let text = format!("{line}\r\nVia: v\r\n\r\n");
        assert_eq!(kind(text.as_bytes(), true), "not sip", "{line:?}");
    }
}

#[test]
fn malformed_request_lines_are_not_sip() {
    for line in [
        "INVITE",
        "INVITE sip:bob@biloxi.example.com",
        "INVITE sip:bob@biloxi.example.com ",
        "INVITE sip:bob@biloxi.example.com SIP/2.0 ",
        "INVITE sip:bob@biloxi.example.com SIP/2.00",
        "INVITE sip:bob@biloxi.example.com SIP/2.1",
        "INVITE sip:bob@biloxi.example.com SIP/3.0",
        "INVITE sip:bob@biloxi.example.com HTTP/1.1",
        "INVITE sip:bob@biloxi.example.com SIP/2.0 extra",
        "INVITE  sip:bob@biloxi.example.com SIP/2.0",
        "INVITE sip:bob@biloxi.example.com  SIP/2.0",
        " INVITE sip:bob@biloxi.example.com SIP/2.0",
        "INVITE\tsip:bob@biloxi.example.com\tSIP/2.0",
        "INVITE SIP/2.0",
        "",
    ] {
        let text = format!("{line}\r\nVia: v\r\n\r\n");
        assert_eq!(kind(text.as_bytes(), true), "not sip", "{line:?}");
    }
    // The version is case-insensitive (RFC 3261 §7.1).
    let m = sip(&request("OPTIONS", "sip:biloxi.example.com", &[]).replace("SIP/2.0", "sip/2.0"));
    assert_eq!(m.method(), Method::Options);
}

// ---------------------------------------------------------------------------------
// Request-URIs
// ---------------------------------------------------------------------------------

/// The Request-URI as `scheme [user=…] [host=… kind] [port=…]`, absent parts left out;
/// checks that an IP literal's address is the host text's.
fn describe_uri(m: &Msg) -> String {
    let u = m.uri();
    let mut out = format!("{:?}", u.scheme).to_lowercase();
    if let Some(user) = m.user() {
        out.push_str(&format!(" user={user}"));
    }
    if let Some(host) = m.host() {
        let kind = format!("{:?}", u.host_kind).to_lowercase();
        out.push_str(&format!(" host={host} {kind}"));
    }
    if u.port != 0 {
        out.push_str(&format!(" port={}", u.port));
    }
    let expected_address = match (u.host_kind, m.host()) {
        (HostKind::Ipv4, Some(h)) => h.parse::<Ipv4Addr>().unwrap().to_ipv6_mapped().octets(),
        (HostKind::Ipv6, Some(h)) => h.parse::<Ipv6Addr>().unwrap().octets(),
        (HostKind::None, _) => {
            assert_eq!(u.host, Span::ABSENT);
            [0; 16]
        }
        _ => [0; 16],
    };
    assert_eq!(u.address, expected_address, "{out}");
    out
}

#[test]
fn request_uri_forms() {
    // Each row: the Request-URI => what the parser must make of it.
    for row in [
        "sip:alice@atlanta.example.com => sip user=alice host=atlanta.example.com name",
        "sips:alice@atlanta.example.com => sips user=alice host=atlanta.example.com name",
        // Schemes are case-insensitive; the host's case is kept.
        "SIP:Alice@Atlanta.Example.COM => sip user=Alice host=Atlanta.Example.COM name",
        "SiPs:alice@atlanta.example.com => sips user=alice host=atlanta.example.com name",
        "sip:atlanta.example.com => sip host=atlanta.example.com name",
        "sip:registrar => sip host=registrar name",
        // A password is not part of the user.
        "sip:alice:secretword@atlanta.example.com => sip user=alice host=atlanta.example.com name",
        "sip:alice:pw@atlanta.example.com:5061 => sip user=alice host=atlanta.example.com name port=5061",
        "sip:alice@atlanta.example.com:5060 => sip user=alice host=atlanta.example.com name port=5060",
        "sip:atlanta.example.com:1 => sip host=atlanta.example.com name port=1",
        "sip:atlanta.example.com:65535 => sip host=atlanta.example.com name port=65535",
        "sip:atlanta.example.com:00080 => sip host=atlanta.example.com name port=80",
        // A fully qualified name's trailing dot is not part of the host.
        "sip:alice@atlanta.example.com. => sip user=alice host=atlanta.example.com name",
        "sip:atlanta.example.com.:5060 => sip host=atlanta.example.com name port=5060",
        "sip:atlanta.example.com.;transport=tcp => sip host=atlanta.example.com name",
        "sip:. => sip host=. name",
        // Parameters and headers.
        "sip:alice@atlanta.example.com;transport=udp => sip user=alice host=atlanta.example.com name",
        "sip:alice@atlanta.example.com:5060;transport=udp;lr => sip user=alice host=atlanta.example.com name port=5060",
        "sip:alice@atlanta.example.com?Subject=x => sip user=alice host=atlanta.example.com name",
        "sip:atlanta.example.com:5060?Subject=x&Priority=urgent => sip host=atlanta.example.com name port=5060",
        "sip:alice@atlanta.example.com;maddr=239.255.255.1;ttl=15 => sip user=alice host=atlanta.example.com name",
        // A user part with parameters (RFC 3261 §19.1.6), escaped, empty.
        "sip:+12125551212;phone-context=example.com@gw.example.com;user=phone => sip user=+12125551212;phone-context=example.com host=gw.example.com name",
        "sip:%61lice@atlanta.example.com => sip user=%61lice host=atlanta.example.com name",
        "sip:@atlanta.example.com => sip user= host=atlanta.example.com name",
        // IP literals.
        "sip:192.0.2.4 => sip host=192.0.2.4 ipv4",
        "sip:bob@192.0.2.4:5060 => sip user=bob host=192.0.2.4 ipv4 port=5060",
        "sips:bob@192.0.2.4;transport=tcp => sips user=bob host=192.0.2.4 ipv4",
        "sip:[2001:db8::10] => sip host=2001:db8::10 ipv6",
        "sip:bob@[2001:db8::10]:5070 => sip user=bob host=2001:db8::10 ipv6 port=5070",
        "sip:[::1];transport=udp => sip host=::1 ipv6",
        "sip:[2001:DB8:0:0:0:0:0:10]?Subject=x => sip host=2001:DB8:0:0:0:0:0:10 ipv6",
        // Not IP literals: names (which no allowlist holds).
        "sip:256.0.2.4 => sip host=256.0.2.4 name",
        "sip:192.0.2 => sip host=192.0.2 name",
        "sip:192.0.2.4.5 => sip host=192.0.2.4.5 name",
        "sip:[2001:db8::zz] => sip host=2001:db8::zz name",
        "sip:[192.0.2.4] => sip host=192.0.2.4 name",
        "sip:[::ffff:192.0.2.4] => sip host=::ffff:192.0.2.4 name",
        // Non-SIP URIs have no host; a tel: URI's number is its user part.
        "tel:+1-212-555-1212 => tel user=+1-212-555-1212",
        "tel:+12125551212;phone-context=example.com => tel user=+12125551212",
        "TEL:911 => tel user=911",
        "urn:service:sos => other",
        // Presence and IM URIs (RFC 3859, 3860) carry a domain, judged like a SIP URI's.
        "im:alice@atlanta.example.com => im user=alice host=atlanta.example.com name",
        "pres:alice@atlanta.example.com => pres user=alice host=atlanta.example.com name",
        "PRES:alice@[2001:db8::10] => pres user=alice host=2001:db8::10 ipv6",
        "pres:192.0.2.4 => pres host=192.0.2.4 ipv4",
        "presence:alice@atlanta.example.com => other",
    ] {
        let (uri, expected) = row.split_once(" => ").unwrap();
        let m = sip(&request("INVITE", uri, &["Via: v"]));
        assert_eq!(describe_uri(&m), expected, "{uri}");
        assert_eq!(m.header(Header::Via).as_deref(), Some("v"), "{uri}");
    }
}

#[test]
fn ipv4_literal_address_is_mapped() {
    let m = sip(&request("OPTIONS", "sip:198.51.100.7:5060", &[]));
    assert_eq!(m.uri().host_kind, HostKind::Ipv4);
    assert_eq!(
        m.uri().address,
        [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 198, 51, 100, 7]
    );
    assert_eq!(m.uri().address, mapped_ipv4([198, 51, 100, 7]));
}

#[test]
fn invalid_request_uris_are_not_sip() {
    let long_host = "a".repeat(MAX_HOST_LEN + 1);
    let long_uri = format!("sip:{long_host}");
    let long_uri_port = format!("sip:bob@{long_host}:5060");
    for uri in [
        "sip:",
        "sip:a@b@x.example.test",
        "sip:a@b@[::1]",
        "sips:",
        "tel:",
        "sip:alice@",
        "sip:alice@;transport=udp",
        "sip:;transport=udp",
        "sip:?Subject=x",
        "sip::5060",
        "sip:alice@:5060",
        "sip:[2001:db8::10",
        "sip:[]",
        "sip:[]:5060",
        "sip:atlanta.example.com:",
        "sip:atlanta.example.com:65536",
        "sip:atlanta.example.com:99999",
        "sip:atlanta.example.com:123456",
        "sip:atlanta.example.com:50a0",
        "sip:atlanta.example.com:5060:5061",
        "sip:atlanta.example.com:-1",
        "sip:atlanta.example.com: 5060",
        "sip:2001:db8::10",
        "sip:[2001:db8::10]:",
        "sip:[2001:db8::10]:x",
        "nocolon",
        "/index.html",
        &long_uri,
        &long_uri_port,
    ] {
        let text = request("INVITE", uri, &["Via: v"]);
        assert_eq!(kind(text.as_bytes(), true), "not sip", "{uri}");
    }
}

#[test]
fn longest_host_names() {
    // A DNS name is at most 253 bytes; the parser takes hosts of up to MAX_HOST_LEN.
    let label = "a".repeat(63);
    let dns_max = format!("{label}.{label}.{label}.{}", "b".repeat(61));
    assert_eq!(dns_max.len(), 253);
    let m = sip(&request("INVITE", &format!("sip:bob@{dns_max}.:5060"), &[]));
    assert_eq!(m.host().as_deref(), Some(dns_max.as_str()));
    assert_eq!(m.uri().port, 5060);
    let longest = "c".repeat(MAX_HOST_LEN);
    let m = sip(&request("INVITE", &format!("sip:{longest};lr"), &[]));
    assert_eq!(m.host().as_deref(), Some(longest.as_str()));
}

#[test]
fn host_span_hashes_like_the_allowlist_entry() {
    // The kernel hashes the host span; userspace stores allowlist_key of the entry.
    let seed = 0x0123_4567_89ab_cdef;
    for (uri, entry) in [
        ("sip:bob@PBX.Example.Test", "pbx.example.test"),
        ("sip:bob@pbx.example.test.:5060", "pbx.example.test"),
        ("sips:pbx.example.test;transport=tls", "pbx.example.test."),
    ] {
        let text = request("INVITE", uri, &[]);
        let mut scratch = Scratch::new();
        let len = scratch.fill(text.as_bytes());
        let Payload::Sip(msg) = parse(&mut scratch, len, true) else {
            panic!("{uri}");
        };
        let StartLine::Request { uri: parsed, .. } = msg.start() else {
            panic!("{uri}");
        };
        let full = host_hashes(&scratch.buf, &mut scratch.hash, parsed.host, seed);
        assert_eq!(
            Some((full, crate::domain::DOMAIN_EXACT)),
            allowlist_key(entry, seed),
            "{uri}"
        );
        // The suffix after the first dot is the wildcard entry's key.
        assert_eq!(
            Some((scratch.hash.suffix(1), crate::domain::DOMAIN_WILDCARD)),
            allowlist_key("*.example.test", seed),
            "{uri}"
        );
    }
}

// ---------------------------------------------------------------------------------
// Headers
// ---------------------------------------------------------------------------------

/// Header lines, each alone in a request (`line => value`), by the header they hold.
const HEADER_LINES: &[(Header, &[&str])] = &[
    (Header::UserAgent, &[
        "User-Agent: Acme/1.0 => Acme/1.0",
        "user-agent: Acme/1.0 => Acme/1.0",
        "USER-AGENT:Acme/1.0 => Acme/1.0",
        "uSeR-aGeNt :\tAcme/1.0 => Acme/1.0",
        "User-Agent\t:  Acme/1.0 => Acme/1.0",
        "User-Agent \t : \t Acme/1.0 (x; y) => Acme/1.0 (x; y)",
        "User-Agent: friendly-scanner => friendly-scanner",
        "User-Agent: a:b:c => a:b:c",
        "User-Agent: trailing   => trailing  ",
        "User-Agent: => ",
        "User-Agent:    => ",
    ]),
    (Header::To, &[
        "To: Bob <sip:bob@biloxi.example.com>;tag=a6c85cf => Bob <sip:bob@biloxi.example.com>;tag=a6c85cf",
        "to: <sip:bob@biloxi.example.com> => <sip:bob@biloxi.example.com>",
        "TO :sip:bob@biloxi.example.com => sip:bob@biloxi.example.com",
        "t: <sip:bob@biloxi.example.com> => <sip:bob@biloxi.example.com>",
        "T\t:\t<sip:bob@biloxi.example.com> => <sip:bob@biloxi.example.com>",
    ]),
    (Header::From, &[
        "From: Alice <sip:alice@atlanta.example.com>;tag=1928301774 => Alice <sip:alice@atlanta.example.com>;tag=1928301774",
        "FROM: <sip:alice@atlanta.example.com> => <sip:alice@atlanta.example.com>",
        "f: <sip:alice@atlanta.example.com> => <sip:alice@atlanta.example.com>",
        "F :<sip:alice@atlanta.example.com> => <sip:alice@atlanta.example.com>",
    ]),
    (Header::CallId, &[
        "Call-ID: a84b4c76e66710@pc33.atlanta.example.com => a84b4c76e66710@pc33.atlanta.example.com",
        "call-id: a84b4c76e66710 => a84b4c76e66710",
        "CALL-ID:a84b4c76e66710 => a84b4c76e66710",
        "Call-Id : a84b4c76e66710 => a84b4c76e66710",
        "i: a84b4c76e66710 => a84b4c76e66710",
        "I:a84b4c76e66710 => a84b4c76e66710",
    ]),
    (Header::CSeq, &[
        "CSeq: 314159 INVITE => 314159 INVITE",
        "cseq: 1 BYE => 1 BYE",
        "CSEQ\t:2 ACK => 2 ACK",
    ]),
    (Header::Contact, &[
        "Contact: <sip:alice@pc33.atlanta.example.com> => <sip:alice@pc33.atlanta.example.com>",
        "contact: * => *",
        "CONTACT : <sip:alice@192.0.2.4:5060>;expires=3600 => <sip:alice@192.0.2.4:5060>;expires=3600",
        "m: <sip:alice@pc33.atlanta.example.com> => <sip:alice@pc33.atlanta.example.com>",
        "M: <sips:alice@[2001:db8::1]:5061> => <sips:alice@[2001:db8::1]:5061>",
    ]),
    (Header::Via, &[
        "Via: SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bK776asdhds => SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bK776asdhds",
        "via: SIP/2.0/TCP 192.0.2.4:5060;branch=z9hG4bK1 => SIP/2.0/TCP 192.0.2.4:5060;branch=z9hG4bK1",
        "VIA:SIP/2.0/UDP [2001:db8::1] => SIP/2.0/UDP [2001:db8::1]",
        "v: SIP/2.0/UDP erlang.bell-telephone.com:5060;branch=z9hG4bK87asdks7 => SIP/2.0/UDP erlang.bell-telephone.com:5060;branch=z9hG4bK87asdks7",
        "V :SIP/2.0/UDP x => SIP/2.0/UDP x",
    ]),
    (Header::ContentLength, &[
        "Content-Length: 349 => 349",
        "content-length:0 => 0",
        "CONTENT-LENGTH \t: 0 => 0",
        "l: 173 => 173",
        "L :  0 => 0",
    ]),
];

#[test]
fn header_lines() {
    for &(header, rows) in HEADER_LINES {
        for row in rows {
            let (line, value) = row.split_once(" => ").unwrap();
            for eol in ["\r\n", "\n"] {
                let m = sip(&invite(&[line]).replace("\r\n", eol));
                assert_eq!(m.header(header).as_deref(), Some(value), "{line:?} {eol:?}");
                assert_eq!(m.present(), [header], "{line:?} {eol:?}");
                assert!(m.complete(), "{line:?}");
            }
            // The same line between others.
            let m = sip(&invite(&["Max-Forwards: 70", line, "Subject: lunch"]));
            assert_eq!(m.header(header).as_deref(), Some(value), "{line:?}");
        }
    }
}

#[test]
fn lines_that_are_not_recorded_headers() {
    for line in [
        "c: application/sdp", // Content-Type, not Contact
        "s: lunch",           // Subject
        "k: 100rel",          // Supported
        "e: gzip",            // Content-Encoding
        "o: presence",        // Event
        "Content-Type: application/sdp",
        "Content-Lengths: 5",
        "Content-Lengt: 5",
        "Call-Info: <http://wwww.example.com/alice/photo.jpg>",
        "Call-IDs: x",
        "X-User-Agent: evil",
        "User-Agents: evil",
        "User-Agen: evil",
        "UserAgent: evil",
        "User_Agent: evil",
        "Subject: User-Agent: evil",
        "Tox: x",
        "Via-Foo: x",
        "Viaa: x",
        "Fromage: x",
        "CSeq2: 1 INVITE",
        "Max-Forwards: 70",
        "To",
        "To x",
        "To x: y",
        "User-Agent evil",
        "User-Agent x: evil",
        ":To: x",
        ": x",
        "User-Agent-And-Then-Some: x",
        // Leading whitespace: a continuation with nothing to continue.
        " User-Agent: evil",
        "\tTo: x",
    ] {
        let m = sip(&invite(&[line]));
        assert_eq!(m.present(), [], "{line:?}");
        assert!(m.complete(), "{line:?}");
    }
}

#[test]
fn whitespace_around_the_colon() {
    // The line scan skips up to MAX_WHITESPACE (24) spaces or tabs before and after the
    // colon; `value_of` skips the rest of a longer run (`long_whitespace_around_the_colon`).
    let ws = " \t".repeat(MAX_WHITESPACE / 2);
    for line in [
        format!("To{ws}:{ws}x"),
        format!("To{ws} : x"),
        format!("To:{ws}  x"),
        format!("To{ws}  :  {ws}x"),
    ] {
        let m = sip(&invite(&[&line]));
        assert_eq!(m.header(Header::To).as_deref(), Some("x"), "{line:?}");
    }
    // A name followed by something else than whitespace and a colon is no header.
    let m = sip(&invite(&[&format!("To{ws}x: y")]));
    assert_eq!(m.header(Header::To), None);
}

#[test]
fn folded_values() {
    // Each row: the header lines, then the value, with line breaks shown as `|`.
    let cases: &[(Header, &str)] = &[
        // The value on the next line.
        (Header::UserAgent, "User-Agent:| Acme/1.0 => Acme/1.0"),
        (Header::UserAgent, "User-Agent:|\t\tAcme/1.0 => Acme/1.0"),
        (Header::UserAgent, "User-Agent:  |  Acme/1.0 => Acme/1.0"),
        (Header::UserAgent, "User-Agent :| Acme/1.0| (build 7) => Acme/1.0| (build 7)"),
        // The value continued.
        (Header::UserAgent, "User-Agent: Acme/1.0| (build 7) => Acme/1.0| (build 7)"),
        (Header::UserAgent, "User-Agent: Acme| 1.0|\t(build 7) => Acme| 1.0|\t(build 7)"),
        (Header::Via, "Via: SIP/2.0/UDP a.example.com| ;branch=z9hG4bK1|To: b => SIP/2.0/UDP a.example.com| ;branch=z9hG4bK1"),
        (Header::To, "t:| <sip:bob@biloxi.example.com> => <sip:bob@biloxi.example.com>"),
        (Header::To, "Subject: I know you're there,| pick up the phone| and talk to me!|To: x => x"),
        // A continuation of an unrecorded header does not extend the one before it.
        (Header::UserAgent, "User-Agent: Acme|Subject: lunch| with Bob => Acme"),
        // Nor does a continuation of a repeated header extend the first.
        (Header::Via, "Via: first|Via: second| ;more => first"),
        (Header::Via, "Via: first| ;more|Via: second| ;more => first| ;more"),
    ];
    for &(header, row) in cases {
        let (lines, value) = row.split_once(" => ").unwrap();
        let lines: Vec<&str> = lines.split('|').collect();
        for eol in ["\r\n", "\n"] {
            let m = sip(&invite(&lines).replace("\r\n", eol));
            let value = value.replace('|', eol);
            assert_eq!(m.header(header), Some(value), "{lines:?} {eol:?}");
            assert!(m.complete(), "{lines:?}");
        }
    }
}

#[test]
fn first_occurrence_is_kept() {
    let m = sip(&invite(&[
        "Via: SIP/2.0/UDP top.example.com;branch=z9hG4bK1",
        "User-Agent: first",
        "v: SIP/2.0/UDP second.example.com;branch=z9hG4bK2",
        "user-agent: second",
        "Via: SIP/2.0/UDP third.example.com;branch=z9hG4bK3",
        "t: <sip:first@example.com>",
        "To: <sip:second@example.com>",
        "l: 0",
        "Content-Length: 12",
    ]));
    assert_eq!(
        m.header(Header::Via).as_deref(),
        Some("SIP/2.0/UDP top.example.com;branch=z9hG4bK1")
    );
    assert_eq!(m.header(Header::UserAgent).as_deref(), Some("first"));
    assert_eq!(
        m.header(Header::To).as_deref(),
        Some("<sip:first@example.com>")
    );
    assert_eq!(m.header(Header::ContentLength).as_deref(), Some("0"));
    // An empty first value is still the first.
    let m = sip(&invite(&["User-Agent:", "User-Agent: second"]));
    assert_eq!(m.header(Header::UserAgent).as_deref(), Some(""));
}

#[test]
fn line_ends() {
    let lf = RFC_INVITE.replace("\r\n", "\n");
    let m = sip(&lf);
    assert_eq!(m.method(), Method::Invite);
    for (h, value) in RFC_INVITE_VALUES {
        assert_eq!(m.header(h).as_deref(), Some(value), "LF: {h:?}");
    }
    assert!(m.complete());
    // Mixed: every other line LF-only.
    let mut mixed = String::new();
    for (i, line) in RFC_INVITE.split_inclusive("\r\n").enumerate() {
        if i % 2 == 1 {
            mixed.push_str(&line.replace("\r\n", "\n"));
        } else {
            mixed.push_str(line);
        }
    }
    assert_rfc_invite(&sip(&mixed), "mixed");
    // A bare CR is not a line end.
    let m = sip(&invite(&["To: a\rUser-Agent: b"]));
    assert_eq!(m.header(Header::To).as_deref(), Some("a\rUser-Agent: b"));
    assert_eq!(m.header(Header::UserAgent), None);
}

#[test]
fn leading_crlfs_are_skipped() {
    let eight_crlfs = "\r\n".repeat(LEADING_CRLF_BYTES / 2);
    for leading in [
        "\r\n",
        "\r\n\r\n",
        "\r\n\r\n\r\n",
        "\n\n\n",
        "\n",
        &eight_crlfs,
    ] {
        let text = format!("{leading}{RFC_INVITE}");
        assert_rfc_invite(&sip(&text), &format!("{leading:?}"));
        assert_rfc_invite(&sip_bytes(text.as_bytes(), false), &format!("{leading:?}"));
        let m = sip(&format!("{leading}SIP/2.0 100 Trying\r\nv: x\r\n\r\n"));
        assert_eq!(m.status(), 100);
        assert_eq!(m.header(Header::Via).as_deref(), Some("x"));
    }
    // The defined limit (`LEADING_CRLF_BYTES`): beyond it, no start line is found.
    for leading in [format!("{eight_crlfs}\n"), "\r\n".repeat(20)] {
        assert_eq!(
            kind(format!("{leading}{RFC_INVITE}").as_bytes(), true),
            "not sip",
            "{leading:?}"
        );
    }
}

#[test]
fn headers_end_at_the_empty_line() {
    // A body line that looks like a header is not one.
    let text = invite(&["Content-Length: 30"]) + "User-Agent: in the body\r\nm=audio 0\r\n";
    let m = sip(&text);
    assert_eq!(m.header(Header::UserAgent), None);
    assert_eq!(m.header(Header::Contact), None);
    assert_eq!(m.header(Header::ContentLength).as_deref(), Some("30"));
    assert!(m.complete());
    // An empty line ends them whether it is LF or CR LF, after LF-ended lines.
    for blank in ["\n", "\r\n"] {
        let text = format!("OPTIONS sip:x SIP/2.0\nTo: a\n{blank}User-Agent: body\n");
        let m = sip(&text);
        assert_eq!(m.header(Header::To).as_deref(), Some("a"), "{blank:?}");
        assert_eq!(m.header(Header::UserAgent), None, "{blank:?}");
        assert!(m.complete());
    }
}

// ---------------------------------------------------------------------------------
// Keep-alives and what is not SIP
// ---------------------------------------------------------------------------------

/// A STUN message (RFC 5389 §6): type, length, magic cookie, transaction id, attributes.
fn stun(message_type: u16, attributes: &[u8]) -> Vec<u8> {
    let mut m = Vec::new();
    m.extend_from_slice(&message_type.to_be_bytes());
    m.extend_from_slice(&(attributes.len() as u16).to_be_bytes());
    m.extend_from_slice(&0x2112_a442u32.to_be_bytes());
    m.extend_from_slice(b"\x8a\x1b\x33\x0c\x42\x01\x9d\x77\x61\x5e\x10\x02");
    m.extend_from_slice(attributes);
    m
}

#[test]
fn keepalives() {
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty", vec![]),
        ("CRLF", b"\r\n".to_vec()),
        ("CRLFCRLF", b"\r\n\r\n".to_vec()),
        ("LF", b"\n".to_vec()),
        ("CR", b"\r".to_vec()),
        ("four CRLFs", b"\r\n\r\n\r\n\r\n".to_vec()),
        ("16 bytes of CRLFs", b"\r\n".repeat(8)),
        ("32 bytes of CRLFs", b"\r\n".repeat(MAX_CRLF_KEEPALIVE / 2)),
        ("17 line feeds", vec![b'\n'; 17]),
        ("one NUL", vec![0]),
        ("four NULs (a NAT ping)", vec![0; 4]),
        ("eight NULs", vec![0; MAX_ZERO_KEEPALIVE]),
        ("STUN binding request", stun(0x0001, &[])),
        (
            "STUN binding request with SOFTWARE",
            stun(0x0001, b"\x80\x22\x00\x04test"),
        ),
        (
            "STUN binding success",
            stun(0x0101, b"\x00\x20\x00\x08\x00\x01\xa1\x47\xe1\x12\xa6\x43"),
        ),
    ];
    for (name, payload) in cases {
        for whole in [true, false] {
            assert_eq!(
                run(&payload, whole).0,
                Payload::Keepalive,
                "{name}, whole {whole}"
            );
        }
    }
}

#[test]
fn not_sip() {
    let all_bytes: Vec<u8> = (0..=255).collect();
    let mut no_cookie = stun(0x0001, &[]);
    no_cookie[4] = 0;
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("a word", b"hello".to_vec()),
        ("nine NULs", vec![0; MAX_ZERO_KEEPALIVE + 1]),
        ("NULs", vec![0; 64]),
        ("33 bytes of CR/LF", [b"\r\n".repeat(16), b"\n".to_vec()].concat()),
        ("CRLFs and a NUL", b"\r\n\0".to_vec()),
        ("NULs and a CRLF", b"\0\0\r\n".to_vec()),
        ("0xff", vec![0xff; 1500]),
        ("every byte", all_bytes.clone()),
        ("every byte, reversed", all_bytes.iter().rev().copied().collect()),
        ("line feeds", vec![b'\n'; 100]),
        ("CR LF and a letter", b"\r\n\r\nx".to_vec()),
        ("spaces between CRLFs", b"\r\n \r\n".to_vec()),
        ("HTTP request", b"GET / HTTP/1.1\r\nHost: example.com\r\nUser-Agent: curl/8\r\n\r\n".to_vec()),
        ("HTTP response", b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n".to_vec()),
        ("headers only", b"Via: SIP/2.0/UDP x\r\nTo: y\r\n\r\n".to_vec()),
        ("a method alone", b"INVITE\r\n\r\n".to_vec()),
        ("STUN without the cookie", no_cookie),
        ("STUN too short", stun(0x0001, &[])[..19].to_vec()),
        ("TLS client hello", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03".to_vec()),
        ("RTP", b"\x80\x00\x12\x34\x00\x00\x00\xa0\xde\xad\xbe\xef\xff\xff\xff\xff".to_vec()),
        ("DNS", b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x07example\x03com\x00\x00\x01\x00\x01".to_vec()),
    ];
    for (name, payload) in cases {
        for whole in [true, false] {
            assert_eq!(
                run(&payload, whole).0,
                Payload::NotSip,
                "{name}, whole {whole}"
            );
        }
    }
}

#[test]
fn request_lookalikes() {
    let looks = |payload: &[u8]| {
        let mut scratch = Scratch::new();
        let len = scratch.fill(payload);
        looks_like_request(&scratch.buf, len)
    };
    let long_uri = format!(
        "INVITE sip:{}@example.com SIP/2.0\r\n\r\n",
        "1".repeat(2100)
    );
    let many_crlfs = format!("{}OPTIONS sip:a@b SIP/2.0\r\n\r\n", "\r\n".repeat(40));
    // What a lenient server may still take for a request: judged, never passed unseen.
    for text in [
        "OPTIONS\tsip:100@evil.com SIP/2.0\r\nUser-Agent: friendly-scanner\r\n\r\n",
        "OPTIONS  sip:100@evil.com SIP/2.0\r\n\r\n",
        "OPTIONS sip:100@evil.com SIP/2.0\rUser-Agent: friendly-scanner\r\r",
        "OPTIONS sip:100@evil.com SIP/2.1\r\n\r\n",
        "\n\n\nINVITE\tsips:bob@evil.com SIP/2.0\n\n",
        "invite\ttel:+15551234 SIP/2.0\r\n\r\n",
        "SUBSCRIBE \t pres:alice@evil.com SIP/2.0\r\n\r\n",
        "MESSAGE im:a@b",
        &long_uri,
        &many_crlfs,
    ] {
        assert!(looks(text.as_bytes()), "{text:?}");
        assert_eq!(kind(text.as_bytes(), true), "not sip", "{text:?}");
    }
    for text in [
        "GET / HTTP/1.1\r\nHost: example.com\r\n\r\n",
        "HTTP/1.1 200 OK\r\n\r\n",
        "SIP/2.0 200 OK",
        "INVITE\r\n\r\n",
        "INVITE sip",
        "INVITE :x",
        "INVITE s:x",
        "INVITE si1:x",
        "ABCDEFGHIJKLMNOPQ sip:x",
        "\r\n\r\n",
        "",
        "hello",
        "\x16\x03\x01\x02\x00\x01\x00\x01\x7c\x03\x03",
    ] {
        assert!(!looks(text.as_bytes()), "{text:?}");
    }
}

// ---------------------------------------------------------------------------------
// Whole datagrams, prefixes, and the defined limits
// ---------------------------------------------------------------------------------

#[test]
fn last_line_of_a_whole_datagram_needs_no_line_feed() {
    let text = "INVITE sip:bob@biloxi.example.com SIP/2.0\r\nTo: a\r\nUser-Agent: Acme";
    let m = sip_bytes(text.as_bytes(), true);
    assert_eq!(m.header(Header::UserAgent).as_deref(), Some("Acme"));
    assert!(m.complete());
    // Its CR is not part of the value.
    let m = sip_bytes(format!("{text}\r").as_bytes(), true);
    assert_eq!(m.header(Header::UserAgent).as_deref(), Some("Acme"));
    assert!(m.complete());
    // A whole datagram without the empty line: every header was still seen.
    let m = sip_bytes(format!("{text}\r\n").as_bytes(), true);
    assert_eq!(m.header(Header::UserAgent).as_deref(), Some("Acme"));
    assert!(m.complete());
    // The start line alone.
    for text in ["OPTIONS sip:biloxi.example.com SIP/2.0", "SIP/2.0 200 OK"] {
        let m = sip_bytes(text.as_bytes(), true);
        assert_eq!(m.present(), [], "{text}");
        assert!(m.complete(), "{text}");
    }
}

#[test]
fn line_cut_by_the_window_is_ignored() {
    let text = "INVITE sip:bob@biloxi.example.com SIP/2.0\r\nTo: a\r\nUser-Agent: Acme";
    let m = sip_bytes(text.as_bytes(), false);
    assert_eq!(m.header(Header::To).as_deref(), Some("a"));
    assert_eq!(m.header(Header::UserAgent), None);
    assert!(!m.complete());
    // Complete lines of a prefix are kept, but more may follow.
    let m = sip_bytes(format!("{text}\r\n").as_bytes(), false);
    assert_eq!(m.header(Header::UserAgent).as_deref(), Some("Acme"));
    assert!(!m.complete());
    // A cut start line: nothing to go on.
    for text in ["OPTIONS sip:biloxi.example.com SIP/2.0", "SIP/2.0 200 OK"] {
        assert_eq!(kind(text.as_bytes(), false), "not sip", "{text}");
    }
}

/// A request whose User-Agent line starts at `ua_at` (a padding header before it),
/// followed by more headers; returns it and the User-Agent line's range.
fn padded_request(ua_at: usize) -> (String, core::ops::Range<usize>) {
    let head =
        "INVITE sip:bob@biloxi.example.com SIP/2.0\r\nTo: <sip:bob@biloxi.example.com>\r\nX-Pad: ";
    let pad = ua_at - head.len() - 2;
    let mut text = format!("{head}{}\r\n", "p".repeat(pad));
    assert_eq!(text.len(), ua_at);
    text.push_str("User-Agent: Acme\r\n");
    let ua_end = text.len();
    text.push_str("Via: SIP/2.0/UDP pc33.atlanta.example.com\r\n");
    text.push_str(&format!("X-Tail: {}\r\n\r\n", "t".repeat(200)));
    (text, ua_at..ua_end)
}

#[test]
fn scan_len_limit() {
    // The line feed ending the User-Agent line is the window's last byte: present.
    let (text, ua) = padded_request(SCAN_LEN - "User-Agent: Acme\r\n".len());
    assert_eq!(ua.end, SCAN_LEN);
    assert!(text.len() > SCAN_LEN);
    let m = sip_bytes(text.as_bytes(), false);
    assert_eq!(m.header(Header::UserAgent).as_deref(), Some("Acme"));
    assert_eq!(m.header(Header::Via), None);
    assert!(!m.complete());
    // Its line feed one byte outside: the line is cut, and ignored.
    let (text, ua) = padded_request(SCAN_LEN - "User-Agent: Acme\r\n".len() + 1);
    assert_eq!(ua.end, SCAN_LEN + 1);
    let m = sip_bytes(text.as_bytes(), false);
    assert_eq!(m.header(Header::UserAgent), None);
    assert_eq!(
        m.header(Header::To).as_deref(),
        Some("<sip:bob@biloxi.example.com>")
    );
    assert!(!m.complete());
    // Wholly outside the window.
    for ua_at in [SCAN_LEN - 3, SCAN_LEN, SCAN_LEN + 1, SCAN_LEN + 500] {
        let (text, _) = padded_request(ua_at);
        let m = sip_bytes(text.as_bytes(), false);
        assert_eq!(m.header(Header::UserAgent), None, "{ua_at}");
        assert!(!m.complete(), "{ua_at}");
    }
    // Even if the caller wrongly claims the datagram is whole, nothing past the window
    // is read.
    let (text, _) = padded_request(SCAN_LEN + 10);
    let m = sip_bytes(text.as_bytes(), true);
    assert_eq!(m.header(Header::UserAgent), None);
    for h in Header::ALL {
        let span = m.msg.header(h);
        assert!(span.end() <= SCAN_LEN, "{h:?} {span:?}");
    }
}

/// A request with `filler` one-line headers before its User-Agent line.
fn many_lines(filler: usize) -> String {
    let mut text = String::from("INVITE sip:bob@biloxi.example.com SIP/2.0\r\n");
    for i in 0..filler {
        text.push_str(&format!("X-{i}: {i}\r\n"));
    }
    text.push_str("User-Agent: Acme\r\n\r\n");
    text
}

#[test]
fn every_line_in_the_window_is_examined() {
    // No line budget a scanner could spend to pass: a User-Agent after hundreds of short
    // header lines is found by the full parse as long as it is in the window, and by the
    // kernel's unless the lines it must examine exceed MAX_EXAMINED_LINES; then it stops
    // there, and the policy drops the request.
    let policy = |text: &str, whole: bool| {
        let mut scratch = Scratch::new();
        let len = scratch.fill(text.as_bytes());
        parse_wanted::<POLICY_HEADERS>(&mut scratch, len, whole)
    };
    for (filler, line, over_budget) in [
        (64, "X-{i}: {i}", false),
        (300, "X:{i}", false),
        (300, "t:{i}", true),
        (400, "i:x", true),
        (600, " ", true),
        // Lines that begin no header the policy reads (compact Allow-Events, Content-Type,
        // a bare letter) are skipped: they cost no budget.
        (400, "u:x", false),
        (400, "c:x", false),
        (600, "a", false),
    ] {
        let mut text = String::from("INVITE sip:bob@biloxi.example.com SIP/2.0\r\n");
        for i in 0..filler {
            text.push_str(&line.replace("{i}", &(i % 10).to_string()));
            text.push('\n');
        }
        text.push_str("User-Agent: Acme\r\n\r\n");
        assert!(text.len() < SCAN_LEN, "{filler}");
        for whole in [true, false] {
            let m = sip_bytes(text.as_bytes(), whole);
            assert_eq!(
                m.header(Header::UserAgent).as_deref(),
                Some("Acme"),
                "{filler}"
            );
            assert!(m.complete(), "{filler}");
            let Payload::Sip(kernel) = policy(&text, whole) else {
                panic!("{filler}: not SIP");
            };
            assert_eq!(kernel.over_line_budget, over_budget, "{filler} {line}");
            assert_eq!(kernel.headers_complete, !over_budget, "{filler} {line}");
            if !over_budget {
                assert_eq!(
                    kernel.header(Header::UserAgent),
                    m.msg.header(Header::UserAgent)
                );
            }
        }
    }
    // The most lines a window holds: one byte and a line feed each.
    let mut text = String::from("OPTIONS sip:a@b SIP/2.0\n");
    while text.len() + 2 <= SCAN_LEN - 16 {
        text.push_str("a\n");
    }
    text.push_str("User-Agent: A\n");
    let m = sip_bytes(text.as_bytes(), true);
    assert_eq!(m.header(Header::UserAgent).as_deref(), Some("A"));
    assert!(m.complete());
}

#[test]
fn every_user_agent_is_recorded() {
    // RFC 3261 allows one; the first and the last of several are kept, and counted.
    let m = sip(&invite(&[
        "User-Agent: Acme",
        "To: t",
        "User-Agent: friendly-scanner",
    ]));
    assert_eq!(m.header(Header::UserAgent).as_deref(), Some("Acme"));
    assert_eq!(m.msg.user_agents, 2);
    assert_eq!(m.text(m.msg.last_user_agent), "friendly-scanner");
    let m = sip(&invite(&[
        "User-Agent: a",
        "User-Agent: b",
        "user-agent:  c",
        " folded",
    ]));
    assert_eq!(m.header(Header::UserAgent).as_deref(), Some("a"));
    assert_eq!(m.msg.user_agents, 3);
    assert_eq!(m.text(m.msg.last_user_agent), "c\r\n folded");
    let m = sip(&invite(&["User-Agent: Acme"]));
    assert_eq!(
        (m.msg.user_agents, m.msg.last_user_agent),
        (1, Span::ABSENT)
    );
    // The kernel's parse records them too, after To and Route were found.
    let text = invite(&[
        "To: t",
        "Route: <sip:r;lr>",
        "User-Agent: a",
        "User-Agent: b",
    ]);
    let mut scratch = Scratch::new();
    let len = scratch.fill(text.as_bytes());
    let Payload::Sip(m) = parse_wanted::<POLICY_HEADERS>(&mut scratch, len, true) else {
        panic!("not SIP");
    };
    assert_eq!(m.user_agents, 2);
    assert_eq!(
        &text[m.last_user_agent.start()..m.last_user_agent.end()],
        "b"
    );
}

#[test]
fn long_whitespace_around_the_colon() {
    // Any run of spaces and tabs, before or after the colon, up to the window.
    for ws in [25, 40, 100, 600] {
        let blanks = " \t".repeat(ws / 2);
        for line in [
            format!("User-Agent{blanks}: sipcli/v1.8"),
            format!("User-Agent:{blanks}sipcli/v1.8"),
            format!("User-Agent{blanks}:{blanks}sipcli/v1.8"),
        ] {
            let m = sip(&invite(&[&line]));
            assert_eq!(
                m.header(Header::UserAgent).as_deref(),
                Some("sipcli/v1.8"),
                "{ws}"
            );
        }
    }
    // Not a header: no colon.
    let m = sip(&invite(&[&format!("User-Agent{}", " ".repeat(40))]));
    assert_eq!(m.header(Header::UserAgent).as_deref(), Some(""));
}

#[test]
fn the_policy_parse_examines_only_lines_that_may_hold_the_user_agent() {
    let policy = |text: &str, whole: bool| {
        let mut scratch = Scratch::new();
        let len = scratch.fill(text.as_bytes());
        match parse_wanted::<POLICY_HEADERS>(&mut scratch, len, whole) {
            Payload::Sip(m) => {
                let agent = m.header(Header::UserAgent);
                let value =
                    (agent.is_present()).then(|| text[agent.start()..agent.end()].to_string());
                (value, m.headers_complete)
            }
            other => panic!("{other:?}"),
        }
    };
    for whole in [true, false] {
        // Past the full parse's limit: the lines before the User-Agent are not examined.
        let text = many_lines(100);
        assert_eq!(policy(&text, whole), (Some("Acme".into()), true), "{whole}");
        // 64 lines that may be the User-Agent, then the User-Agent: found (no budget).
        let mut text = String::from("OPTIONS sip:a@b SIP/2.0\r\n");
        for i in 0..64 {
            text.push_str(&format!("Unsupported: x{i}\r\n"));
        }
        text.push_str("User-Agent: Acme\r\n\r\n");
        assert!(text.len() < SCAN_LEN);
        assert_eq!(policy(&text, whole), (Some("Acme".into()), true), "{whole}");
    }
    // Line starts at every offset within a word: the skip finds the User-Agent after
    // each, and its folded continuation.
    for pad in 0..16 {
        let text = format!(
            "OPTIONS sip:a@b SIP/2.0\r\nX-Pad: {}\r\nVia: v\r\nuser-agent :\r\n sipcli\r\nTo: t\r\n\r\n",
            "p".repeat(pad)
        );
        assert_eq!(policy(&text, true), (Some("sipcli".into()), true), "{pad}");
    }
}

/// The kernel's parses examine at most MAX_EXAMINED_LINES lines, counting only the lines
/// they examine: a window of short lines they must look at stops them (the policy drops
/// such a request), lines they skip by their first two bytes do not count, and the full
/// parse has no budget.
#[test]
fn the_kernel_parses_stop_at_their_line_budget() {
    let message = |line: &str, lines: usize| {
        let mut text = String::from("OPTIONS sip:100@pbx.example.test SIP/2.0\r\n");
        for _ in 0..lines {
            text.push_str(line);
            text.push_str("\r\n");
        }
        text.push_str("User-Agent: friendly-scanner\r\n\r\n");
        text
    };
    let parsed = |wanted: fn(&mut Scratch, usize) -> Payload, text: &str| {
        let mut scratch = Scratch::new();
        let len = scratch.fill(text.as_bytes());
        assert!(len == text.len(), "the window holds {text:?}");
        match wanted(&mut scratch, len) {
            Payload::Sip(m) => m,
            other => panic!("{other:?} for {text:?}"),
        }
    };
    let policy = |scratch: &mut Scratch, len| parse_wanted::<POLICY_HEADERS>(scratch, len, true);
    let answer = |scratch: &mut Scratch, len| parse_wanted::<ANSWER_HEADERS>(scratch, len, true);
    let stream = |scratch: &mut Scratch, len| {
        parse_wanted::<{ stream::STREAM_HEADERS }>(scratch, len, false)
    };
    let full = |scratch: &mut Scratch, len| parse(scratch, len, true);
    // The start line, the lines, the User-Agent and the empty line: within the budget
    // up to MAX_EXAMINED_LINES in all.
    let most = MAX_EXAMINED_LINES - 3;
    // The stream's parse examines Content-Length's `co` besides the policy's lines.
    for (line, examined_by_policy, examined_by_stream) in [
        ("t:1", true, true),
        ("i:1", true, true),
        (" 1", true, true),
        ("v:1", false, false),
        ("c:1", false, false),
        ("Co:1", false, true),
    ] {
        for lines in [most, most + 1, 300] {
            let text = message(line, lines);
            let m = parsed(policy, &text);
            let over = examined_by_policy && lines > most;
            assert_eq!(m.over_line_budget, over, "{line:?} x {lines}");
            assert_eq!(m.headers_complete, !over, "{line:?} x {lines}");
            // One line over: the User-Agent was examined, the empty line was not.
            assert_eq!(
                m.header(Header::UserAgent).is_present(),
                !over || lines == most + 1,
                "{line:?} x {lines}"
            );
            assert_eq!(
                parsed(stream, &text).over_line_budget,
                examined_by_stream && lines > most,
                "{line:?} x {lines}"
            );
            let f = parsed(full, &text);
            assert!(
                !f.over_line_budget && f.headers_complete,
                "{line:?} x {lines}"
            );
        }
    }
    // An answer's parse has the same budget: Call-ID's compact `i` lines.
    let mut text = String::from("SIP/2.0 401 Unauthorized\r\n");
    text.push_str(&"i:1\r\n".repeat(200));
    text.push_str("\r\n");
    let m = parsed(answer, &text);
    assert!(m.over_line_budget && !m.headers_complete);
}

/// The policy parse agrees with the full parse wherever its line finding and skipping
/// change hands: the start line's end at every offset within a word, the line to
/// examine right after it, a start line or a run of skipped headers longer than a step
/// looks at, leading CRLFs, and data ending first.
#[test]
fn the_policy_parse_agrees_at_every_offset() {
    let agent_of = |text: &str, whole: bool| {
        let full = run(text.as_bytes(), whole).0;
        let mut scratch = Scratch::new();
        let len = scratch.fill(text.as_bytes());
        let policy = parse_wanted::<POLICY_HEADERS>(&mut scratch, len, whole);
        match (&full, &policy) {
            (Payload::Sip(f), Payload::Sip(p)) => {
                assert_eq!(p.start(), f.start(), "{text:?}");
                assert_eq!(
                    p.header(Header::UserAgent),
                    f.header(Header::UserAgent),
                    "{text:?}"
                );
                let agent = p.header(Header::UserAgent);
                agent
                    .is_present()
                    .then(|| text[agent.start()..agent.end()].to_string())
            }
            _ => {
                assert_eq!(policy, full, "{text:?}");
                None
            }
        }
    };
    for pad in 0..17 {
        let uri = format!("sip:{}@b", "a".repeat(pad));
        for (headers, agent) in [
            ("User-Agent: Acme\r\n\r\n", Some("Acme")),
            ("Via: v\r\nuser-agent: Acme\r\nTo: t\r\n\r\n", Some("Acme")),
            ("\r\nUser-Agent: body\r\n", None),
            ("Via: v\r\n\nUser-Agent: body\r\n", None),
            ("Unsupported: x\r\nUser-Agent: Acme\r\n\r\n", Some("Acme")),
            ("Via: v\nUser-Agent: Acme\n\n", Some("Acme")),
        ] {
            for lead in ["", "\r\n", "\r\n\r\n"] {
                let text = format!("{lead}OPTIONS {uri} SIP/2.0\r\n{headers}");
                for whole in [true, false] {
                    assert_eq!(agent_of(&text, whole).as_deref(), agent, "{text:?}");
                }
            }
        }
    }
    // Longer than a step looks: a start line, and the headers before the User-Agent;
    // and data that ends before any line to examine.
    let long_uri = format!("sip:{}@b", "a".repeat(400));
    let long_text = format!("OPTIONS {long_uri} SIP/2.0\r\nUser-Agent: Acme\r\n\r\n");
    assert_eq!(agent_of(&long_text, true).as_deref(), Some("Acme"));
    // The User-Agent at every offset around where one skip step hands over to the next
    // (a line feed at a word's last byte carries the line start into the next word).
    for pad in 0..300 {
        let text = format!(
            "OPTIONS sip:a@b SIP/2.0\r\nX-Pad: {}\r\nVia: v\r\nUser-Agent: Acme\r\n\r\n",
            "p".repeat(pad)
        );
        assert_eq!(agent_of(&text, true).as_deref(), Some("Acme"), "{pad}");
    }
    for whole in [true, false] {
        assert_eq!(
            agent_of("OPTIONS sip:a@b SIP/2.0\r\nVia: v\r\n", whole),
            None
        );
        assert_eq!(agent_of("OPTIONS sip:a@b SIP/2.0\r\n", whole), None);
        assert_eq!(agent_of("OPTIONS sip:a@b SIP/2.0", whole), None);
    }
}

#[test]
fn scratch_reuse_leaves_nothing_behind() {
    let texts = [
        RFC_INVITE.to_string(),
        request("OPTIONS", "sip:[2001:db8::10]:5070", &[]),
        request("REGISTER", "sip:192.0.2.4", &["To: x"]),
        "SIP/2.0 200 OK\r\nVia: v\r\n\r\n".to_string(),
        request("MESSAGE", "tel:+12125551212", &["t:", " folded"]),
        "\r\n\r\n".to_string(),
        "garbage".to_string(),
        many_lines(100),
        "INVITE sip:a SIP/2.0\r\nUser-Agent: cut".to_string(),
    ];
    let mut scratch = Scratch::new();
    for _ in 0..2 {
        for (i, text) in texts.iter().enumerate() {
            for whole in [true, false] {
                let len = scratch.fill(text.as_bytes());
                let reused = parse(&mut scratch, len, whole);
                assert_eq!(reused, run(text.as_bytes(), whole).0, "{i} {whole}");
            }
        }
    }
}

// ---------------------------------------------------------------------------------
// Properties
// ---------------------------------------------------------------------------------

/// What must hold of any parse: spans in `0..=len`, absent spans exactly absent, the
/// Request-URI's fields consistent with its scheme, statuses in range.
fn check_invariants(payload: &Payload, len: usize) -> Result<(), TestCaseError> {
    let Payload::Sip(msg) = payload else {
        return Ok(());
    };
    let in_bounds = |span: Span| -> Result<(), TestCaseError> {
        if span.is_present() {
            prop_assert!(span.start <= span.end, "{:?}", span);
            prop_assert!(span.end() <= len, "{:?} beyond {}", span, len);
        } else {
            prop_assert_eq!(span, Span::ABSENT);
        }
        Ok(())
    };
    for h in Header::ALL {
        in_bounds(msg.header(h))?;
    }
    match msg.start() {
        StartLine::Response { status } => {
            prop_assert!((100..700).contains(&status));
        }
        StartLine::Request { method, uri } => {
            prop_assert!(method != Method::None);
            in_bounds(uri.user)?;
            in_bounds(uri.host)?;
            match uri.scheme {
                Scheme::Sip | Scheme::Sips | Scheme::Pres | Scheme::Im => {
                    prop_assert!(uri.host.is_present() && !uri.host.is_empty());
                    prop_assert!(uri.host.len() <= MAX_HOST_LEN);
                    prop_assert!(uri.host_kind != HostKind::None);
                }
                Scheme::Tel | Scheme::Other => {
                    prop_assert_eq!(uri.host, Span::ABSENT);
                    prop_assert_eq!(uri.host_kind, HostKind::None);
                    prop_assert_eq!(uri.port, 0);
                }
            }
            if matches!(uri.host_kind, HostKind::None | HostKind::Name) {
                prop_assert_eq!(uri.address, [0; 16]);
            }
        }
    }
    Ok(())
}

/// Loads `payload` over a buffer holding `stale` bytes, as the kernel does (it clears
/// just past where the payload will end, then copies only the payload), and parses it.
fn parse_over_stale(scratch: &mut Scratch, payload: &[u8], stale: u8, whole: bool) -> Payload {
    let len = payload.len().min(SCAN_LEN);
    for w in scratch.buf.words.iter_mut() {
        *w = crate::scan::ONES.wrapping_mul(u64::from(stale));
    }
    scratch.buf.clear_tail(len);
    for (i, &b) in payload[..len].iter().enumerate() {
        let word = &mut scratch.buf.words[i / 8];
        let shift = (i % 8) * 8;
        *word = (*word & !(0xff << shift)) | (u64::from(b) << shift);
    }
    parse(scratch, len, whole)
}

/// Bytes of SIP's vocabulary, to reach deeper than random bytes do.
const TOKENS: &[&[u8]] = &[
    b"INVITE ",
    b"REGISTER ",
    b"SUBSCRIBE ",
    b"sip:",
    b"sips:",
    b"tel:",
    b"urn:",
    b" SIP/2.0",
    b"SIP/2.0 ",
    b"200",
    b"99",
    b"\r\n",
    b"\r\n",
    b"\n",
    b"\r",
    b":",
    b" ",
    b"\t",
    b"@",
    b"[",
    b"]",
    b"::",
    b".",
    b";",
    b"?",
    b"5060",
    b"99999",
    b"192.0.2.1",
    b"2001:db8::1",
    b"example.com",
    b"User-Agent",
    b"To",
    b"t",
    b"v",
    b"Via",
    b"m",
    b"l",
    b"Content-Length",
    b"Call-ID",
    b"CSeq",
    b"\r\nUser-Agent: ",
    b"\r\nuser-agent:",
    b"\r\nTo: ",
    b"\r\nv:",
    b"\nl :",
    b"\r\nCall-ID:\t",
    b"\r\nm: ",
    b"\r\n ",
    b"\r\n\t",
    b"\r\n\r\n",
];

/// Start lines the SIP-like inputs begin with.
const STARTS: &[&[u8]] = &[
    b"",
    b"INVITE sip:bob@biloxi.example.com SIP/2.0\r\n",
    b"OPTIONS sip:[2001:db8::1]:5060 SIP/2.0\r\n",
    b"SIP/2.0 200 OK\r\n",
    b"\r\n\r\nREGISTER sip:192.0.2.1 SIP/2.0\n",
];

/// Bytes left in the kernel's scratch buffer by earlier packets, for the stale-bytes test.
const STALE: &[u8] = b"\n\r :;?@.0123456789abcdef]\xff\x00";

fn sipish() -> impl Strategy<Value = Vec<u8>> {
    let start = prop::sample::select(STARTS);
    let piece = prop_oneof![
        4 => prop::sample::select(TOKENS).prop_map(<[u8]>::to_vec),
        1 => prop::collection::vec(any::<u8>(), 0..8),
        1 => "[a-zA-Z0-9]{1,12}".prop_map(String::into_bytes),
    ];
    (start, prop::collection::vec(piece, 0..400)).prop_map(|(start, pieces)| {
        let mut bytes = start.to_vec();
        for p in pieces {
            bytes.extend_from_slice(&p);
        }
        bytes
    })
}

/// Header names and their compact forms.
const NAMES: [(Header, &str, Option<&str>); Header::COUNT] = [
    (Header::UserAgent, "User-Agent", None),
    (Header::To, "To", Some("t")),
    (Header::From, "From", Some("f")),
    (Header::CallId, "Call-ID", Some("i")),
    (Header::CSeq, "CSeq", None),
    (Header::Contact, "Contact", Some("m")),
    (Header::Via, "Via", Some("v")),
    (Header::ContentLength, "Content-Length", Some("l")),
    (Header::Route, "Route", None),
    (Header::Credentials, "Proxy-Authorization", None),
    (Header::Challenge, "WWW-Authenticate", None),
    (Header::Expires, "Expires", None),
];

/// Unrecorded headers mixed in (with values that mention recorded names).
const EXTRAS: [&str; 4] = [
    "Max-Forwards: 70",
    "Subject: User-Agent: fake",
    "c: application/sdp",
    "k: 100rel",
];

/// How one header line is written.
#[derive(Clone, Debug)]
struct Spelling {
    compact: bool,
    upper: Vec<bool>,
    before: String,
    after: String,
}

fn spelling() -> impl Strategy<Value = Spelling> {
    (
        any::<bool>(),
        // The case of each letter of the longest name (Proxy-Authorization).
        prop::collection::vec(any::<bool>(), 19),
        "[ \t]{0,4}",
        "[ \t]{0,4}",
    )
        .prop_map(|(compact, upper, before, after)| Spelling {
            compact,
            upper,
            before,
            after,
        })
}

#[derive(Clone, Debug)]
enum Host {
    Name(String, bool),
    V4([u8; 4]),
    V6([u8; 16]),
}

impl Host {
    /// As written in the URI, and as the parser must report it.
    fn texts(&self) -> (String, String, HostKind, [u8; 16]) {
        match self {
            Host::Name(name, dot) => (
                format!("{name}{}", if *dot { "." } else { "" }),
                name.clone(),
                HostKind::Name,
                [0; 16],
            ),
            Host::V4(o) => {
                let a = Ipv4Addr::from(*o);
                (
                    a.to_string(),
                    a.to_string(),
                    HostKind::Ipv4,
                    mapped_ipv4(*o),
                )
            }
            Host::V6(o) => {
                let a = Ipv6Addr::from(*o);
                let mut text = a.to_string();
                if text.contains('.') {
                    // The embedded-IPv4 form is not taken as IPv6: write the groups.
                    text = a.segments().map(|s| format!("{s:x}")).join(":");
                }
                (format!("[{text}]"), text, HostKind::Ipv6, *o)
            }
        }
    }
}

fn host() -> impl Strategy<Value = Host> {
    prop_oneof![
        (
            "[a-zA-Z][a-zA-Z0-9-]{0,15}(\\.[a-zA-Z][a-zA-Z0-9-]{0,15}){0,4}",
            any::<bool>()
        )
            .prop_map(|(name, dot)| Host::Name(name, dot)),
        any::<[u8; 4]>().prop_map(Host::V4),
        any::<[u8; 16]>().prop_map(Host::V6),
    ]
}

#[derive(Clone, Debug)]
struct Generated {
    method: usize,
    sips: bool,
    user: Option<String>,
    host: Host,
    port: Option<u16>,
    params: bool,
    ua: Vec<String>,
    /// 0: on one line; 1: the value on the next line; 2: the value continued.
    fold: u8,
    fold_at: usize,
    fold_ws: String,
    spellings: Vec<Spelling>,
    order: Vec<usize>,
    lf: bool,
    leading: usize,
    whole: bool,
}

fn generated() -> impl Strategy<Value = Generated> {
    (
        (
            0..METHODS.len(),
            any::<bool>(),
            prop::option::of("[a-z0-9+.]{1,10}"),
            host(),
            prop::option::of(1..=u16::MAX),
            any::<bool>(),
        ),
        (
            prop::collection::vec("[A-Za-z0-9./_()-]{1,12}", 1..5),
            0..3u8,
            any::<usize>(),
            "[ \t]{1,4}",
        ),
        (
            prop::collection::vec(spelling(), Header::COUNT),
            Just((0..Header::COUNT + EXTRAS.len()).collect::<Vec<_>>()).prop_shuffle(),
            any::<bool>(),
            0..3usize,
            any::<bool>(),
        ),
    )
        .prop_map(
            |(
                (method, sips, user, host, port, params),
                (ua, fold, fold_at, fold_ws),
                (spellings, order, lf, leading, whole),
            )| Generated {
                method,
                sips,
                user,
                host,
                port,
                params,
                ua,
                fold,
                fold_at,
                fold_ws,
                spellings,
                order,
                lf,
                leading,
                whole,
            },
        )
}

/// The message, and the value each recorded header must have.
fn build(g: &Generated) -> (String, Vec<(Header, String)>) {
    let eol = if g.lf { "\n" } else { "\r\n" };
    let (method, _) = METHODS[g.method];
    let (host_text, _, _, _) = g.host.texts();
    let mut uri = String::from(if g.sips { "sips:" } else { "sip:" });
    if let Some(user) = &g.user {
        uri.push_str(user);
        uri.push('@');
    }
    uri.push_str(&host_text);
    if let Some(port) = g.port {
        uri.push_str(&format!(":{port}"));
    }
    if g.params {
        uri.push_str(";transport=udp;lr?Subject=x");
    }
    let ua = g.ua.join(" ");
    let values = [
        ua.clone(),
        "Bob <sip:bob@biloxi.example.com>;tag=8321234356".to_string(),
        "\"Alice\" <sip:alice@atlanta.example.com>;tag=9fxced76sl".to_string(),
        "3848276298220188511@atlanta.example.com".to_string(),
        format!("7 {method}"),
        "<sip:alice@client.atlanta.example.com;transport=udp>".to_string(),
        "SIP/2.0/UDP client.atlanta.example.com:5060;branch=z9hG4bK74bf9".to_string(),
        "0".to_string(),
        "<sip:p1.example.com;lr>, <sip:p2.example.com;lr>".to_string(),
        "Digest username=\"alice\", realm=\"atlanta.example.com\", nonce=\"n\"".to_string(),
        "Digest realm=\"atlanta.example.com\", stale=true".to_string(),
        "3600".to_string(),
    ];
    let mut text = "\r\n".repeat(g.leading);
    text.push_str(&format!("{method} {uri} SIP/2.0{eol}"));
    let mut expected = Vec::new();
    for &i in &g.order {
        let Some(&(header, long, compact)) = NAMES.get(i) else {
            text.push_str(EXTRAS[i - Header::COUNT]);
            text.push_str(eol);
            continue;
        };
        let s = &g.spellings[i];
        let name = match compact {
            Some(c) if s.compact => c,
            _ => long,
        };
        let name: String = name
            .chars()
            .zip(&s.upper)
            .map(|(c, &up)| {
                if up {
                    c.to_ascii_uppercase()
                } else {
                    c.to_ascii_lowercase()
                }
            })
            .collect();
        text.push_str(&format!("{name}{}:{}", s.before, s.after));
        let value = &values[i];
        if header == Header::UserAgent && g.fold == 1 {
            text.push_str(&format!("{eol}{}{value}", g.fold_ws));
            expected.push((header, value.clone()));
        } else if header == Header::UserAgent && g.fold == 2 && g.ua.len() > 1 {
            let k = 1 + g.fold_at % (g.ua.len() - 1);
            let folded = format!(
                "{}{eol}{}{}",
                g.ua[..k].join(" "),
                g.fold_ws,
                g.ua[k..].join(" ")
            );
            text.push_str(&folded);
            expected.push((header, folded));
        } else {
            text.push_str(value);
            expected.push((header, value.clone()));
        }
        text.push_str(eol);
    }
    text.push_str(eol);
    (text, expected)
}

/// RFC 3261 §7.3.1: folding is equivalent to a single space.
fn unfold(value: &str) -> String {
    let mut out = String::new();
    let mut lines = value.split('\n');
    if let Some(first) = lines.next() {
        out.push_str(first.trim_end_matches('\r'));
    }
    for line in lines {
        out.push(' ');
        out.push_str(line.trim_start_matches([' ', '\t']).trim_end_matches('\r'));
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    #[test]
    fn never_panics_and_spans_stay_in_bounds(
        bytes in prop::collection::vec(any::<u8>(), 0..=3000),
        whole in any::<bool>(),
    ) {
        let mut scratch = Scratch::new();
        let len = scratch.fill(&bytes);
        prop_assert_eq!(len, bytes.len().min(SCAN_LEN));
        let payload = parse(&mut scratch, len, whole);
        check_invariants(&payload, len)?;
    }

    #[test]
    fn sipish_bytes_keep_invariants(bytes in sipish(), whole in any::<bool>()) {
        let (payload, kept) = run(&bytes, whole);
        check_invariants(&payload, kept.len())?;
    }

    #[test]
    fn stale_bytes_past_the_payload_change_nothing(
        bytes in prop_oneof![
            sipish(),
            prop::collection::vec(any::<u8>(), 0..=3000),
            cut_request(),
        ],
        stale in prop::sample::select(STALE),
        whole in any::<bool>(),
    ) {
        let fresh = run(&bytes, whole).0;
        let mut scratch = Scratch::new();
        prop_assert_eq!(parse_over_stale(&mut scratch, &bytes, stale, whole), fresh);
        // And a scratch used before gives the same result too.
        let again = parse_over_stale(&mut scratch, &bytes, stale, whole);
        prop_assert_eq!(again, fresh);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    /// The kernel records the User-Agent alone and stops once it has it: it must see the
    /// same start line and the same User-Agent as a parse recording every header.
    #[test]
    fn policy_parse_agrees_with_the_full_parse(
        bytes in prop_oneof![
            sipish(),
            cut_request(),
            generated().prop_map(|g| build(&g).0.into_bytes()),
        ],
        whole in any::<bool>(),
    ) {
        // (The inputs have fewer than MAX_LINES lines: beyond, the full parse stops
        // where the policy parse, examining fewer lines, goes on.)
        let full = run(&bytes, whole).0;
        let mut scratch = Scratch::new();
        let len = scratch.fill(&bytes);
        let policy = parse_wanted::<POLICY_HEADERS>(&mut scratch, len, whole);
        match (full, policy) {
            (Payload::Sip(full), Payload::Sip(policy)) => {
                prop_assert_eq!(policy.start(), full.start());
                // The policy's headers as the full parse finds them; no other.
                for h in Header::ALL {
                    if POLICY_HEADERS & 1 << h as u16 != 0 {
                        prop_assert_eq!(policy.header(h), full.header(h), "{:?}", h);
                    } else {
                        prop_assert!(!policy.header(h).is_present(), "{:?}", h);
                    }
                }
                // Complete when the full parse is; and only then, or once the line after
                // the last of the policy's headers showed it was not folded further.
                let all_found = Header::ALL
                    .iter()
                    .filter(|h| POLICY_HEADERS & 1 << **h as u16 != 0)
                    .all(|h| full.header(*h).is_present());
                prop_assert!(!full.headers_complete || policy.headers_complete);
                prop_assert!(!policy.headers_complete || full.headers_complete || all_found);
                // The From the INVITE program looks for is the full parse's, up to its
                // line's end (the full parse follows a folded value).
                // (An empty first line's value is not moved to a continuation's start.)
                let from = find_from_header(&scratch);
                if !from.is_empty() {
                    let recorded = full.header(Header::From);
                    prop_assert_eq!(from.start, recorded.start, "{:?}", recorded);
                    prop_assert!(from.end <= recorded.end, "{:?} {:?}", from, recorded);
                }
            }
            (full, policy) => prop_assert_eq!(policy, full),
        }
    }
}

/// A generated request cut at any length.
fn cut_request() -> impl Strategy<Value = Vec<u8>> {
    (generated(), any::<prop::sample::Index>()).prop_map(|(g, cut)| {
        let mut bytes = build(&g).0.into_bytes();
        bytes.truncate(cut.index(bytes.len() + 1));
        bytes
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn generated_requests_parse(g in generated()) {
        let (text, expected) = build(&g);
        let m = sip_bytes(text.as_bytes(), g.whole);
        prop_assert_eq!(m.method(), METHODS[g.method].1, "{:?}", text);
        let uri = m.uri();
        prop_assert_eq!(uri.scheme, if g.sips { Scheme::Sips } else { Scheme::Sip });
        let (_, host, kind, address) = g.host.texts();
        prop_assert_eq!(m.host(), Some(host), "{:?}", text);
        prop_assert_eq!(uri.host_kind, kind);
        prop_assert_eq!(uri.address, address);
        prop_assert_eq!(uri.port, g.port.unwrap_or(0));
        prop_assert_eq!(m.user(), g.user.clone());
        for (header, value) in &expected {
            prop_assert_eq!(m.header(*header), Some(value.clone()), "{:?}: {:?}", header, text);
        }
        let ua = m.header(Header::UserAgent).unwrap_or_default();
        prop_assert_eq!(unfold(&ua), g.ua.join(" "), "{:?}", text);
        prop_assert!(m.complete());
        check_invariants(&Payload::Sip(m.msg), text.len())?;
    }

    /// A prefix of a datagram (a first fragment, or the window) never invents a header:
    /// what it finds is what the whole datagram holds, or (a folded value cut short)
    /// the start of it.
    #[test]
    fn prefixes_agree_with_the_whole(g in generated(), cut in any::<prop::sample::Index>()) {
        let (text, _) = build(&g);
        let full = sip_bytes(text.as_bytes(), true).msg;
        let cut = cut.index(text.len() + 1);
        let prefix = &text.as_bytes()[..cut];
        match run(prefix, false).0 {
            Payload::Sip(m) => {
                prop_assert_eq!(m.start(), full.start());
                if m.headers_complete {
                    prop_assert_eq!(m, full);
                }
                for h in Header::ALL {
                    let (p, f) = (m.header(h), full.header(h));
                    if p.is_present() {
                        prop_assert!(f.is_present() && p.end <= f.end, "{:?} {:?}", h, prefix);
                        if !p.is_empty() {
                            prop_assert_eq!(p.start, f.start, "{:?} {:?}", h, prefix);
                        }
                    }
                }
                check_invariants(&Payload::Sip(m), cut)?;
            }
            other => {
                // Only while the start line is incomplete.
                let origin = 2 * g.leading;
                let start_line_end = origin + text[origin..].find('\n').unwrap();
                prop_assert!(cut <= start_line_end, "{:?} for {:?}", other, prefix);
            }
        }
    }
}

// ---------------------------------------------------------------------------------
// Routing: the topmost Route and the To tag of requests not addressed to us
// ---------------------------------------------------------------------------------

/// `routing_of` on `headers`, after the policy's parse, after a request line whose Request-URI is a peer's
/// Contact: the bits, and the host left in the start fields when routed.
fn routing(headers: &str) -> (u32, Option<String>) {
    let text = format!("BYE sip:1001@198.18.0.12:5060 SIP/2.0\r\n{headers}\r\n");
    let mut scratch = Box::new(Scratch::new());
    let len = scratch.fill(text.as_bytes());
    assert_eq!(
        parse_in_place::<POLICY_HEADERS>(&mut scratch, len, true),
        Kind::Sip
    );
    let found = routing_of(&mut scratch);
    let host = (found & ROUTING_ROUTED != 0).then(|| {
        let host = scratch.host();
        text[host.start()..host.end()].to_string()
    });
    (found, host)
}

#[test]
fn routing_finds_the_topmost_route_and_the_to_tag() {
    const BOTH: u32 = ROUTING_IN_DIALOG | ROUTING_ROUTED;
    let cases: &[(&str, &str, u32, Option<&str>)] = &[
        (
            "Kamailio's record-routed BYE",
            "Via: SIP/2.0/UDP 198.18.0.11;branch=z9hG4bK1\r\nRoute: <sip:198.18.0.2;lr>\r\nFrom: <sip:1000@pbx.example.test>;tag=a\r\nTo: <sip:1001@pbx.example.test>;tag=b\r\nCall-ID: 1\r\nCSeq: 2 BYE\r\n",
            BOTH,
            Some("198.18.0.2"),
        ),
        (
            "a domain, parameters, a display name, two routes",
            "Route: \"edge\" <sip:pbx.example.test;lr;ftag=x;did=1>, <sip:core.example.test;lr>\r\nTo: <sip:1001@pbx.example.test>;tag=b\r\n",
            BOTH,
            Some("pbx.example.test"),
        ),
        (
            "the first of two Route lines",
            "To: <sip:b@x>;tag=1\r\nRoute: <sip:first.example.test;lr>\r\nRoute: <sip:second.example.test;lr>\r\n",
            BOTH,
            Some("first.example.test"),
        ),
        (
            "Record-Route is not Route",
            "Record-Route: <sip:evil.test;lr>\r\nTo: <sip:b@x>;tag=1\r\n",
            ROUTING_IN_DIALOG,
            None,
        ),
        (
            "compact To, tag in upper case, lower-case route name",
            "t: <sip:b@x>;TAG=77\r\nroute: <sip:[2001:db8:5f::2]:5060;lr>\r\n",
            BOTH,
            Some("2001:db8:5f::2"),
        ),
        ("a tag but no Route", "To: <sip:b@x>;tag=1\r\n", ROUTING_IN_DIALOG, None),
        ("neither", "To: <sip:b@x>\r\nFrom: <sip:a@x>;tag=2\r\n", 0, None),
        ("a Route without brackets", "Route: sip:198.18.0.2;lr\r\n", 0, None),
        ("a Route never closed", "Route: <sip:198.18.0.2;lr\r\n", 0, None),
        ("a tel: Route has no host", "Route: <tel:+15551234567>\r\n", 0, None),
        ("a tag in the To's URI is no tag", "To: <sip:b@x;tagx=1>\r\n", 0, None),
        ("blanks around the tag's ; and =", "To: <sip:b@x> ; tag = b77\r\n", ROUTING_IN_DIALOG, None),
        ("tabs around them", "To: <sip:b@x>\t;\ttag\t=b77\r\n", ROUTING_IN_DIALOG, None),
        ("7 blanks each side", "To: <sip:b@x>;       tag       =1\r\n", ROUTING_IN_DIALOG, None),
        ("8 blanks before the tag: none seen", "To: <sip:b@x>;        tag=1\r\n", 0, None),
        ("a tag at the value's end is none", "To: <sip:b@x>;tag\r\n", 0, None),
        ("a tag parameter with a longer name", "To: <sip:b@x>;tags=1\r\n", 0, None),
        ("a parameter ending in tag", "To: <sip:b@x>;xtag=1\r\n", 0, None),
        ("tag as a value", "To: <sip:b@x>;a=tag=1\r\n", 0, None),
    ];
    for (name, headers, bits, host) in cases {
        let (found, routed_host) = routing(headers);
        assert_eq!(found, *bits, "{name}");
        assert_eq!(routed_host.as_deref(), *host, "{name}");
    }
}

#[test]
fn routing_reads_lines_after_many_others() {
    // 40 header lines that start with other letters, then the two that matter: the
    // scan skips the others without examining them.
    let padding: String = (0..40)
        .map(|i| format!("X-Pad-{i}: {}\r\n", "v".repeat(20)))
        .collect();
    let (found, host) = routing(&format!(
        "{padding}Route: <sip:pbx.example.test;lr>\r\nTo: <sip:b@x>;tag=1\r\n"
    ));
    assert_eq!(found, ROUTING_IN_DIALOG | ROUTING_ROUTED);
    assert_eq!(host.as_deref(), Some("pbx.example.test"));
}

/// Every name `Header::from_name` knows, long and compact, in any case and however its
/// colon follows, begins a line the kernel's parses examine when they want its header:
/// the skip by a line's first two bytes never hides a wanted header.
#[test]
fn a_wanted_header_is_never_skipped_by_its_first_two_bytes() {
    let names: &[(&str, Header)] = &[
        ("User-Agent", Header::UserAgent),
        ("To", Header::To),
        ("t", Header::To),
        ("From", Header::From),
        ("f", Header::From),
        ("Call-ID", Header::CallId),
        ("i", Header::CallId),
        ("CSeq", Header::CSeq),
        ("Contact", Header::Contact),
        ("m", Header::Contact),
        ("Via", Header::Via),
        ("v", Header::Via),
        ("Content-Length", Header::ContentLength),
        ("l", Header::ContentLength),
        ("Route", Header::Route),
        ("Authorization", Header::Credentials),
        ("Proxy-Authorization", Header::Credentials),
        ("WWW-Authenticate", Header::Challenge),
        ("Proxy-Authenticate", Header::Challenge),
        ("Expires", Header::Expires),
    ];
    let sets: Vec<u16> = KERNEL_HEADER_SETS
        .into_iter()
        .chain([1 << Header::From as u16, 1 << Header::Via as u16])
        .collect();
    for &(name, header) in names {
        for cased in [name.to_string(), name.to_lowercase(), name.to_uppercase()] {
            for separator in [":", " :", "\t:"] {
                let line = format!("{cased}{separator} x");
                let mut scratch = Scratch::new();
                let len = scratch.fill(line.as_bytes());
                assert_eq!(
                    classify_header(&scratch.buf, 0, len).map(|(h, _)| h),
                    Some(header),
                    "{line:?}"
                );
                let bytes = line.as_bytes();
                for &wanted in &sets {
                    let beginnings = examined_beginning_bits(wanted).expect("a kernel set");
                    let examined = beginnings & beginning_bit(bytes[0], bytes[1]) != 0;
                    if wanted & (1 << header as u16) != 0 {
                        assert!(examined, "{line:?} in {wanted:#x}");
                    }
                }
            }
        }
    }
    // And the common lines that begin none of a set's headers are not examined.
    let common = [
        "Contact",
        "Content-Type",
        "Content-Length",
        "Allow",
        "Accept",
        "Record-Route",
        "Require",
        "Max-Forwards",
        "Supported",
        "Session-Expires",
        "Min-SE",
        "Subject",
        "P-Asserted-Identity",
        "X-Filler",
        "Date",
        "Event",
        "Expires",
        "From",
        "Via",
        "Organization",
        "Path",
        "User-Agent",
        "To",
        "Call-ID",
        "CSeq",
        "Route",
        "Authorization",
        "Proxy-Authorization",
        "WWW-Authenticate",
        "m:",
        "l:",
        "c:",
    ];
    for wanted in KERNEL_HEADER_SETS {
        let beginnings = examined_beginning_bits(wanted).expect("a kernel set");
        for line in common {
            let line = format!("{line}: x");
            let mut scratch = Scratch::new();
            let len = scratch.fill(line.as_bytes());
            let header = classify_header(&scratch.buf, 0, len).map(|(h, _)| h);
            let wanted_here = header.is_some_and(|h| wanted & (1 << h as u16) != 0);
            let bytes = line.as_bytes();
            let examined = beginnings & beginning_bit(bytes[0], bytes[1]) != 0;
            // Or it shares a wanted header's beginning (Contact's `co` with Content-Type,
            // Proxy-Authorization's `pr` with Proxy-Authenticate): no hash collision.
            let lower = bytes[..2].to_ascii_lowercase();
            let compact = matches!(lower[1], b':' | b' ' | b'\t');
            let shares = examined_beginnings(wanted).is_some_and(|b| {
                b.iter().any(|&(first, second)| {
                    first == lower[0] && (second == lower[1] || second == COMPACT && compact)
                })
            });
            assert_eq!(examined, wanted_here || shares, "{line:?} in {wanted:#x}");
        }
    }
    assert_eq!(examined_beginnings(ALL_HEADERS), None);
}

/// `skip_lines` tests a line's first two bytes with arithmetic (`examined_bit`): it must
/// agree with the plain test for every pair of bytes, in every kernel set.
#[test]
fn the_branchless_line_test_agrees_with_the_plain_one() {
    for wanted in KERNEL_HEADER_SETS {
        let beginnings = examined_beginning_bits(wanted).expect("a kernel set");
        for first in 0..=u8::MAX {
            for second in 0..=u8::MAX {
                let plain = beginnings & beginning_bit(first, second) != 0
                    || matches!(first, b' ' | b'\t' | b'\r' | b'\n');
                assert_eq!(
                    examined_bit(beginnings, first, second),
                    u64::from(plain),
                    "{first:#x} {second:#x} in {wanted:#x}"
                );
            }
        }
    }
}

/// The From header found in a policy parse's scratch, which does not record it.
fn policy_from(text: &str) -> Option<String> {
    let mut scratch = Scratch::new();
    let len = scratch.fill(text.as_bytes());
    assert_eq!(
        parse_in_place::<POLICY_HEADERS>(&mut scratch, len, true),
        Kind::Sip,
        "{text}"
    );
    assert!(!scratch.header(Header::From).is_present(), "not recorded");
    let from = find_from_header(&scratch);
    from.is_present()
        .then(|| text[from.start()..from.end()].to_string())
}

#[test]
fn from_header_found_where_the_policy_parse_passed_it_over() {
    let request =
        |headers: &str| format!("INVITE sip:+4930123@pbx.example.test SIP/2.0\r\n{headers}\r\n");
    let cases: [(&str, Option<&str>); 11] = [
        (
            "Via: SIP/2.0/UDP 192.0.2.1\r\nFrom: <sip:1000@pbx>;tag=a\r\nTo: <sip:b@pbx>\r\n",
            Some("<sip:1000@pbx>;tag=a"),
        ),
        // Compact, any case, blanks before the colon, CR-less line ends.
        ("f: sip:1000@pbx;tag=a\r\n", Some("sip:1000@pbx;tag=a")),
        ("FROM\t :  <sip:x@pbx>\n", Some("<sip:x@pbx>")),
        ("F:<sip:x@pbx>\r\n", Some("<sip:x@pbx>")),
        // Lines that start like it are not it; the first From is.
        (
            "Foo: 1\r\nFromage: 2\r\nfrom: <sip:y@pbx>\r\nFrom: <sip:z@pbx>\r\n",
            Some("<sip:y@pbx>"),
        ),
        // A folded value ends with its first line.
        ("From: \"A\"\r\n <sip:x@pbx>\r\n", Some("\"A\"")),
        // None in the headers: not in the body after the empty line.
        (
            "To: <sip:b@pbx>\r\nContent-Length: 20\r\n\r\nFrom: <sip:x@pbx>\r\n",
            None,
        ),
        ("To: <sip:b@pbx>\r\n", None),
        // `From` then no colon: not a header line.
        ("From <sip:x@pbx>\r\n", None),
        // A zero byte ends the headers.
        ("To: <sip:b@pbx>\r\nX: \0\r\nFrom: <sip:x@pbx>\r\n", None),
        (
            "Subject: from: no\r\nFrom: <sip:x@pbx>\r\n",
            Some("<sip:x@pbx>"),
        ),
    ];
    for (headers, expected) in cases {
        let text = request(headers);
        assert_eq!(policy_from(&text).as_deref(), expected, "{text:?}");
    }
    // A From line cut by the end of the window is not taken.
    let mut cut = "INVITE sip:1@pbx SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1\r\n".to_string();
    while cut.len() < SCAN_LEN - 20 {
        cut.push_str("X-Pad: 0123456789\r\n");
    }
    cut.push_str("From: <sip:a-long-user-name@pbx.example.test>;tag=1\r\n\r\n");
    let mut scratch = Scratch::new();
    let len = scratch.fill(cut.as_bytes());
    assert_eq!(
        parse_in_place::<POLICY_HEADERS>(&mut scratch, len, false),
        Kind::Sip
    );
    assert_eq!(find_from_header(&scratch), Span::ABSENT);
    // Stale bytes of a longer earlier packet beyond this one's end are not read.
    let mut scratch = Scratch::new();
    let long = format!("{}From: <sip:stale@pbx>\r\n\r\n", "x".repeat(600));
    scratch.fill(long.as_bytes());
    let short = request("To: <sip:b@pbx>\r\n");
    let (buf, len) = ScanBuf::from_payload(short.as_bytes());
    for k in 0..(len / 8 + TAIL_WORDS) {
        scratch.buf.words[k] = buf.words[k];
    }
    assert_eq!(
        parse_in_place::<POLICY_HEADERS>(&mut scratch, len, true),
        Kind::Sip
    );
    assert_eq!(find_from_header(&scratch), Span::ABSENT);
}

/// [`has_tag`] spelt out byte by byte: a `tag` (any case, not at the value's start,
/// with a byte after it) whose last non-blank byte among the 8 before is `;` and whose
/// first non-blank among the 8 after is `=`.
fn has_tag_plain(value: &[u8]) -> bool {
    let blank = |b: &&u8| matches!(**b, b' ' | b'\t');
    (1..value.len()).any(|at| {
        at + 4 <= value.len()
            && value[at..at + 3].eq_ignore_ascii_case(b"tag")
            && value[at.saturating_sub(8)..at]
                .iter()
                .rev()
                .find(|b| !blank(b))
                == Some(&b';')
            && value[at + 3..(at + 11).min(value.len())]
                .iter()
                .find(|b| !blank(b))
                == Some(&b'=')
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4096))]

    /// The word-at-a-time search finds a tag exactly where the plain one does, in
    /// values made of the pieces that matter, at any offset in the buffer.
    #[test]
    fn has_tag_agrees_with_a_plain_search(
        pieces in proptest::collection::vec(
            prop::sample::select(vec!["tag", "TaG", ";", "=", " ", "\t", "x", "ta", "<", ">"]),
            0..24,
        ),
        offset in 0usize..16,
    ) {
        let value = pieces.concat().into_bytes();
        let mut text = vec![b'x'; offset];
        text.extend_from_slice(&value);
        text.extend_from_slice(b"\r\n");
        let (buf, _) = ScanBuf::from_payload(&text);
        let span = Span::new(offset, offset + value.len());
        prop_assert_eq!(
            has_tag(&buf, span),
            has_tag_plain(&value),
            "{:?}",
            String::from_utf8_lossy(&value)
        );
    }
}
