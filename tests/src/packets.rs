//! Frames for BPF_PROG_TEST_RUN, built with etherparse rather than written as hex.

use etherparse::{PacketBuilder, SingleVlanHeader, VlanHeader};

pub const CLIENT_V4: [u8; 4] = [198, 18, 0, 1];
pub const SERVER_V4: [u8; 4] = [198, 18, 0, 2];
pub const CLIENT_V6: [u8; 16] = [
    0x20, 0x01, 0x0d, 0xb8, 0, 0x5f, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1,
];
pub const SERVER_V6: [u8; 16] = [
    0x20, 0x01, 0x0d, 0xb8, 0, 0x5f, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2,
];
const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 1];
const SERVER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 2];
pub const SIP_PORT: u16 = 5060;
const CLIENT_PORT: u16 = 40000;

fn build(builder: etherparse::PacketBuilderStep<etherparse::UdpHeader>, payload: &[u8]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(builder.size(payload.len()));
    builder
        .write(&mut frame, payload)
        .expect("a frame builds into a Vec");
    frame
}

/// A TCP segment's kind, for [`tcp4_from`] and [`tcp6_from`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Segment {
    /// A connection's first segment (SYN, no ACK).
    Syn,
    /// The answer to a SYN (SYN and ACK): what a client sends when the server connects
    /// to it.
    SynAck,
    /// A segment of an established connection (ACK, PSH when it carries data).
    Established,
}

fn build_tcp(
    builder: etherparse::PacketBuilderStep<etherparse::TcpHeader>,
    segment: Segment,
    payload: &[u8],
) -> Vec<u8> {
    let builder = match segment {
        Segment::Syn => builder.syn(),
        Segment::SynAck => builder.syn().ack(1),
        Segment::Established => builder.ack(1).psh(),
    };
    let mut frame = Vec::with_capacity(builder.size(payload.len()));
    builder
        .write(&mut frame, payload)
        .expect("a frame builds into a Vec");
    frame
}

/// IPv4/TCP from `source` to `dst_port` on the server.
pub fn tcp4_from(source: [u8; 4], dst_port: u16, segment: Segment, payload: &[u8]) -> Vec<u8> {
    build_tcp(
        PacketBuilder::ethernet2(CLIENT_MAC, SERVER_MAC)
            .ipv4(source, SERVER_V4, 64)
            .tcp(CLIENT_PORT, dst_port, 1, 64240),
        segment,
        payload,
    )
}

/// IPv6/TCP from `source` to `dst_port` on the server.
pub fn tcp6_from(source: [u8; 16], dst_port: u16, segment: Segment, payload: &[u8]) -> Vec<u8> {
    build_tcp(
        PacketBuilder::ethernet2(CLIENT_MAC, SERVER_MAC)
            .ipv6(source, SERVER_V6, 64)
            .tcp(CLIENT_PORT, dst_port, 1, 64240),
        segment,
        payload,
    )
}

/// IPv4/UDP from the client to `dst_port` on the server.
pub fn udp4(dst_port: u16, payload: &[u8]) -> Vec<u8> {
    udp4_from(CLIENT_V4, dst_port, payload)
}

/// IPv4/UDP from `source` to `dst_port` on the server.
pub fn udp4_from(source: [u8; 4], dst_port: u16, payload: &[u8]) -> Vec<u8> {
    build(
        PacketBuilder::ethernet2(CLIENT_MAC, SERVER_MAC)
            .ipv4(source, SERVER_V4, 64)
            .udp(CLIENT_PORT, dst_port),
        payload,
    )
}

/// IPv6/UDP from the client to `dst_port` on the server.
pub fn udp6(dst_port: u16, payload: &[u8]) -> Vec<u8> {
    udp6_from(CLIENT_V6, dst_port, payload)
}

/// IPv6/UDP from `source` to `dst_port` on the server.
pub fn udp6_from(source: [u8; 16], dst_port: u16, payload: &[u8]) -> Vec<u8> {
    build(
        PacketBuilder::ethernet2(CLIENT_MAC, SERVER_MAC)
            .ipv6(source, SERVER_V6, 64)
            .udp(CLIENT_PORT, dst_port),
        payload,
    )
}

/// IPv4/UDP in one 802.1Q tag, or two (802.1ad outer, 802.1Q inner).
pub fn udp4_vlan(double: bool, payload: &[u8]) -> Vec<u8> {
    let outer = SingleVlanHeader {
        vlan_id: 100.try_into().expect("a valid VLAN id"),
        ..Default::default()
    };
    let vlan = if double {
        let inner = SingleVlanHeader {
            vlan_id: 200.try_into().expect("a valid VLAN id"),
            ..Default::default()
        };
        VlanHeader::Double(etherparse::DoubleVlanHeader { outer, inner })
    } else {
        VlanHeader::Single(outer)
    };
    build(
        PacketBuilder::ethernet2(CLIENT_MAC, SERVER_MAC)
            .vlan(vlan)
            .ipv4(CLIENT_V4, SERVER_V4, 64)
            .udp(CLIENT_PORT, SIP_PORT),
        payload,
    )
}

/// Where the UDP (or TCP) header starts in a frame of Ethernet (up to two VLAN tags),
/// then IPv4 (any options) or IPv6 (no extension headers), then UDP or TCP: the frames
/// [`udp4`], [`udp6`], [`udp4_vlan`], [`tcp4_from`] and [`tcp6_from`] build.
pub fn udp_header_at(frame: &[u8]) -> usize {
    let mut at = 12;
    while matches!(
        u16::from_be_bytes([frame[at], frame[at + 1]]),
        raw::ETH_8021Q | raw::ETH_8021AD
    ) {
        at += 4;
    }
    let ethertype = u16::from_be_bytes([frame[at], frame[at + 1]]);
    let ip = at + 2;
    match ethertype {
        raw::ETH_IPV4 => ip + usize::from(frame[ip] & 0x0f) * 4,
        raw::ETH_IPV6 => {
            assert!(
                matches!(frame[ip + 6], raw::UDP | raw::TCP),
                "IPv6 extension headers are not walked"
            );
            ip + 40
        }
        other => panic!("not IP: ethertype {other:#06x}"),
    }
}

/// The frame's UDP checksum field (see [`udp_header_at`] for the frames understood).
pub fn udp_checksum(frame: &[u8]) -> u16 {
    let at = udp_header_at(frame) + 6;
    u16::from_be_bytes([frame[at], frame[at + 1]])
}

/// The frame with its UDP checksum field set to `checksum`, nothing else changed.
pub fn with_udp_checksum(mut frame: Vec<u8>, checksum: u16) -> Vec<u8> {
    let at = udp_header_at(&frame) + 6;
    frame[at..at + 2].copy_from_slice(&checksum.to_be_bytes());
    frame
}

/// The frame with a wrong UDP checksum: neither 0 (none, over IPv4) nor the other
/// one's-complement form of the right sum, so the kernel would drop it.
pub fn with_wrong_udp_checksum(frame: Vec<u8>) -> Vec<u8> {
    let right = udp_checksum(&frame);
    let wrong = right ^ 0x0101;
    assert!(wrong != 0 && wrong != 0xffff, "a checksum that is wrong");
    with_udp_checksum(frame, wrong)
}

/// The TCP frame ([`tcp4_from`], [`tcp6_from`]) with a wrong TCP checksum: the kernel
/// would drop it.
pub fn with_wrong_tcp_checksum(mut frame: Vec<u8>) -> Vec<u8> {
    let at = udp_header_at(&frame) + 16;
    frame[at] ^= 0x01;
    frame
}

/// The frame with byte `index` of its UDP payload changed and the checksum left as it
/// was: what a spoofer who copied a checksum, or a corrupted frame, looks like.
pub fn with_payload_byte_changed(mut frame: Vec<u8>, index: usize) -> Vec<u8> {
    let at = udp_header_at(&frame) + 8 + index;
    frame[at] ^= 0x01;
    frame
}

/// The IPv4 frame with a wrong IP header checksum (the UDP checksum still right: it
/// does not cover the IP header's checksum).
pub fn with_wrong_ipv4_header_checksum(mut frame: Vec<u8>) -> Vec<u8> {
    let ip = udp_header_at(&frame) - 20;
    assert_eq!(frame[ip] >> 4, 4, "an IPv4 frame without options");
    frame[ip + 10] ^= 0x01;
    frame
}

/// A SIP request, CRLF line ends, with a correct Content-Length.
pub fn sip_request(method: &str, uri: &str, extra_headers: &[&str]) -> Vec<u8> {
    let mut text = format!(
        "{method} {uri} SIP/2.0\r\nVia: SIP/2.0/UDP 198.18.0.1:40000;branch=z9hG4bK-1\r\nFrom: <sip:alice@pbx.example.test>;tag=1\r\nTo: <sip:bob@pbx.example.test>\r\nCall-ID: 1@198.18.0.1\r\nCSeq: 1 {method}\r\nMax-Forwards: 70\r\n"
    );
    for header in extra_headers {
        text.push_str(header);
        text.push_str("\r\n");
    }
    text.push_str("Content-Length: 0\r\n\r\n");
    text.into_bytes()
}

/// A request's payload (with a `CSeq:` header, as [`sip_request`] and [`in_dialog`]
/// write it) as a new transaction: its CSeq number set to `n`. Not a retransmission of
/// the original, which the domain ban counts once.
pub fn transaction(payload: &[u8], n: u32) -> Vec<u8> {
    let text = String::from_utf8_lossy(payload);
    let at = text.find("\r\nCSeq: ").expect("a CSeq header") + "\r\nCSeq: ".len();
    let digits = text[at..].find(' ').expect("a CSeq number and method");
    format!("{}{n}{}", &text[..at], &text[at + digits..]).into_bytes()
}

/// Lines of [`sip_request`]'s own that the kernel's request parse examines: the start
/// line, To, Call-ID, CSeq and the empty line (Content-Length begins no header it reads).
pub const SIP_REQUEST_EXAMINED_LINES: usize = 5;

/// An OPTIONS whose extra headers are up to `examined` short To headers (`t:1`, lines the
/// kernel's parse must examine), then short lines it skips (`v:1`), filling the scanned
/// window: with `MAX_EXAMINED_LINES - SIP_REQUEST_EXAMINED_LINES`, the parser's worst
/// case within its line budget; with one more, past it.
pub fn short_lines_request(examined: usize) -> Vec<u8> {
    let lines = (sip_filter_common::SCAN_LEN - 300) / "t:1\r\n".len();
    let examined = examined.min(lines);
    let mut headers = vec!["t:1"; examined];
    headers.extend(vec!["v:1"; lines - examined]);
    sip_request("OPTIONS", "sip:100@pbx.example.test", &headers)
}

/// A SIP response, `SIP/2.0 <status> <phrase>`, to a request of `method`, CRLF line ends.
pub fn sip_response(status: u16, phrase: &str, method: &str) -> Vec<u8> {
    format!(
        "SIP/2.0 {status} {phrase}\r\nVia: SIP/2.0/UDP 198.18.0.2:5060;branch=z9hG4bK-s1\r\nFrom: <sip:pbx@pbx.example.test>;tag=s1\r\nTo: <sip:100@pbx.example.test>;tag=p1\r\nCall-ID: s1@198.18.0.2\r\nCSeq: 1 {method}\r\nContent-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

/// A CRLF keep-alive ping (RFC 5626 4.4.1: a double CRLF).
pub fn crlf_keepalive() -> Vec<u8> {
    b"\r\n\r\n".to_vec()
}

/// A STUN binding request (RFC 5389): type 0x0001, length 0, magic cookie, id.
pub fn stun_binding_request() -> Vec<u8> {
    let mut out = vec![0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xa4, 0x42];
    out.extend_from_slice(&[7; 12]);
    out
}

/// A `SIP/2.0 200 OK` to the server's OPTIONS, as a phone answers its qualify.
pub fn sip_ok() -> Vec<u8> {
    b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 198.18.0.2:5060;branch=z9hG4bK-q1\r\n\
      From: <sip:pbx.example.test>;tag=q1\r\nTo: <sip:100@pbx.example.test>;tag=p1\r\n\
      Call-ID: q1@198.18.0.2\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
        .to_vec()
}

/// An in-dialog request as a phone behind a record-routing proxy sends it: the peer's
/// Contact as the Request-URI, `routes` as its Route headers (the proxy's first), and a
/// To tag if `to_tag`.
pub fn in_dialog(method: &str, routes: &[&str], to_tag: bool) -> Vec<u8> {
    let routes: String = routes
        .iter()
        .map(|uri| format!("Route: <{uri}>\r\n"))
        .collect();
    let tag = if to_tag { ";tag=b77" } else { "" };
    format!(
        "{method} sip:1001@198.51.100.12:5060;transport=udp SIP/2.0\r\n\
         Via: SIP/2.0/UDP 198.51.100.11:5060;branch=z9hG4bK-7\r\n\
         {routes}\
         From: <sip:1000@pbx.example.test>;tag=a11\r\n\
         To: <sip:1001@pbx.example.test>{tag}\r\n\
         Call-ID: 7@198.51.100.11\r\n\
         CSeq: 2 {method}\r\n\
         Max-Forwards: 70\r\n\
         Content-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

/// Raw frames, for what a packet builder will not make: fragments, IPv4 options, IPv6
/// extension headers, lies in length fields, truncation.
pub mod raw {
    use super::{CLIENT_MAC, CLIENT_V4, CLIENT_V6, SERVER_MAC, SERVER_V4, SERVER_V6};

    pub const ETH_IPV4: u16 = 0x0800;
    pub const ETH_IPV6: u16 = 0x86dd;
    pub const ETH_ARP: u16 = 0x0806;
    pub const ETH_8021Q: u16 = 0x8100;
    pub const ETH_8021AD: u16 = 0x88a8;
    pub const UDP: u8 = 17;
    pub const TCP: u8 = 6;

    pub fn ethernet(ethertype: u16, payload: &[u8]) -> Vec<u8> {
        let mut frame = Vec::new();
        frame.extend_from_slice(&SERVER_MAC);
        frame.extend_from_slice(&CLIENT_MAC);
        frame.extend_from_slice(&ethertype.to_be_bytes());
        frame.extend_from_slice(payload);
        frame
    }

    /// `tags` VLAN tags (802.1ad outside, 802.1Q inside) before `ethertype`.
    pub fn ethernet_tagged(tags: usize, ethertype: u16, payload: &[u8]) -> Vec<u8> {
        let mut inner = Vec::new();
        for i in 0..tags {
            let tpid = if i == 0 && tags > 1 {
                ETH_8021AD
            } else {
                ETH_8021Q
            };
            if i > 0 {
                inner.extend_from_slice(&tpid.to_be_bytes());
            }
            inner.extend_from_slice(&(100 + i as u16).to_be_bytes());
        }
        inner.extend_from_slice(&ethertype.to_be_bytes());
        inner.extend_from_slice(payload);
        let first_tpid = if tags > 1 { ETH_8021AD } else { ETH_8021Q };
        // `inner` starts with the first tag's TCI; its TPID is the frame's ethertype.
        ethernet(first_tpid, &inner)
    }

    pub fn udp(dst_port: u16, payload: &[u8]) -> Vec<u8> {
        udp_claiming(dst_port, payload, payload.len() + 8)
    }

    /// A UDP header whose length field says `claimed` (checksum 0: none, for IPv4).
    pub fn udp_claiming(dst_port: u16, payload: &[u8], claimed: usize) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&40000u16.to_be_bytes());
        out.extend_from_slice(&dst_port.to_be_bytes());
        out.extend_from_slice(&(claimed as u16).to_be_bytes());
        out.extend_from_slice(&0u16.to_be_bytes());
        out.extend_from_slice(payload);
        out
    }

    /// An IPv4 packet: `fragment` is the flags+offset field (0x2000 = more fragments,
    /// low 13 bits = offset in 8-byte units); `options` a multiple of 4 bytes.
    pub fn ipv4(protocol: u8, fragment: u16, options: &[u8], payload: &[u8]) -> Vec<u8> {
        ipv4_from(CLIENT_V4, protocol, fragment, options, payload)
    }

    /// [`ipv4`] from `source`.
    pub fn ipv4_from(
        source: [u8; 4],
        protocol: u8,
        fragment: u16,
        options: &[u8],
        payload: &[u8],
    ) -> Vec<u8> {
        let header_len = 20 + options.len();
        let mut out = vec![0x40 | (header_len / 4) as u8, 0];
        out.extend_from_slice(&((header_len + payload.len()) as u16).to_be_bytes());
        out.extend_from_slice(&[0x12, 0x34]);
        out.extend_from_slice(&fragment.to_be_bytes());
        out.extend_from_slice(&[64, protocol, 0, 0]);
        out.extend_from_slice(&source);
        out.extend_from_slice(&SERVER_V4);
        out.extend_from_slice(options);
        let checksum = internet_checksum(&out);
        out[10..12].copy_from_slice(&checksum.to_be_bytes());
        out.extend_from_slice(payload);
        out
    }

    fn internet_checksum(header: &[u8]) -> u16 {
        let mut sum: u32 = header
            .chunks(2)
            .map(|pair| u32::from(u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)])))
            .sum();
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        !(sum as u16)
    }

    /// An IPv6 packet whose payload starts with `next_header`'s header.
    pub fn ipv6(next_header: u8, payload: &[u8]) -> Vec<u8> {
        ipv6_from(CLIENT_V6, next_header, payload)
    }

    /// [`ipv6`] from `source`.
    pub fn ipv6_from(source: [u8; 16], next_header: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![0x60, 0, 0, 0];
        out.extend_from_slice(&(payload.len() as u16).to_be_bytes());
        out.extend_from_slice(&[next_header, 64]);
        out.extend_from_slice(&source);
        out.extend_from_slice(&SERVER_V6);
        out.extend_from_slice(payload);
        out
    }

    /// A generic extension header (hop-by-hop, routing, destination options) of 8 bytes.
    pub fn ipv6_extension(next_header: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![next_header, 0, 0, 0, 0, 0, 0, 0];
        if next_header != 0 {
            out[2] = 1; // PadN-ish filler; content is not parsed
        }
        out.extend_from_slice(payload);
        out
    }

    /// `count` Destination Options headers (8 bytes each) before `last`'s header.
    pub fn ipv6_destination_options(count: usize, last: u8, payload: &[u8]) -> Vec<u8> {
        const NEXTHDR_DEST: u8 = 60;
        let mut out = payload.to_vec();
        for i in 0..count {
            let next = if i == 0 { last } else { NEXTHDR_DEST };
            out = ipv6_extension(next, &out);
        }
        out
    }

    /// An IPv6 fragment header: `offset` in 8-byte units, `more` fragments follow.
    pub fn ipv6_fragment(next_header: u8, offset: u16, more: bool, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![next_header, 0];
        out.extend_from_slice(&((offset << 3) | u16::from(more)).to_be_bytes());
        out.extend_from_slice(&[0, 0, 0, 7]);
        out.extend_from_slice(payload);
        out
    }
}

/// A softphone's INVITE with SDP, about 1300 bytes.
pub fn invite_with_sdp(uri: &str) -> Vec<u8> {
    let sdp = "v=0\r\no=- 1 1 IN IP4 198.18.0.1\r\ns=-\r\nc=IN IP4 198.18.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0 8 9 18 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:9 G722/8000\r\na=rtpmap:18 G729/8000\r\na=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\na=ptime:20\r\na=sendrecv\r\n";
    let mut text = format!(
        "INVITE {uri} SIP/2.0\r\nVia: SIP/2.0/UDP 198.18.0.1:5060;branch=z9hG4bK-74bf9;rport\r\nMax-Forwards: 70\r\nFrom: \"Alice\" <sip:alice@pbx.example.test>;tag=9fxced76sl\r\nTo: <sip:bob@pbx.example.test>\r\nCall-ID: 3848276298220188511@198.18.0.1\r\nCSeq: 1 INVITE\r\nContact: <sip:alice@198.18.0.1:5060;transport=udp>\r\nAllow: INVITE, ACK, CANCEL, BYE, NOTIFY, REFER, MESSAGE, OPTIONS, INFO, SUBSCRIBE, UPDATE, PRACK\r\nSupported: replaces, timer, 100rel, path\r\nUser-Agent: Linphone/5.2.0 (belle-sip/5.2.0)\r\nAccept: application/sdp\r\nSession-Expires: 1800\r\nMin-SE: 90\r\nP-Preferred-Identity: <sip:alice@pbx.example.test>\r\nContent-Type: application/sdp\r\n"
    );
    let pad = 1300usize.saturating_sub(text.len() + sdp.len() + 40);
    text.push_str(&format!("X-Filler: {}\r\n", "f".repeat(pad)));
    text.push_str(&format!("Content-Length: {}\r\n\r\n{sdp}", sdp.len()));
    text.into_bytes()
}

/// Whole IP datagrams cut into fragments, and UDP checksums spoiled, as an attacker's
/// tools (scapy's `fragment`, a spoofer) send them. The datagrams come from the
/// builders above, so their UDP checksums are right before they are cut.
pub mod shaped {
    use super::raw::{self, ETH_IPV4, ETH_IPV6, UDP};

    const ETHERNET_LEN: usize = 14;
    const IPV4_LEN: usize = 20;
    const IPV6_LEN: usize = 40;
    const IPV6_FRAGMENT: u8 = 44;

    fn is_ipv6(frame: &[u8]) -> bool {
        frame[12..14] == ETH_IPV6.to_be_bytes()
    }

    /// Where the UDP header of a frame from [`super::udp4_from`] or [`super::udp6_from`]
    /// (no options, no extension headers) starts.
    fn udp_offset(frame: &[u8]) -> usize {
        ETHERNET_LEN + if is_ipv6(frame) { IPV6_LEN } else { IPV4_LEN }
    }

    /// The UDP datagram (header and payload) of such a frame.
    pub fn udp_datagram(frame: &[u8]) -> &[u8] {
        &frame[udp_offset(frame)..]
    }

    /// scapy's `fragment(pkt, fragsize)` for IPv4 and its IPv6 twin (a Fragment header
    /// per piece): the frame's UDP datagram cut into pieces of `fragsize` bytes (a
    /// multiple of 8), in order. With 8 the first holds only the UDP header.
    pub fn fragments(frame: &[u8], fragsize: usize) -> Vec<Vec<u8>> {
        assert!(
            fragsize > 0 && fragsize & 7 == 0,
            "fragments are cut at 8-byte units"
        );
        let datagram = udp_datagram(frame);
        let pieces = datagram.len().div_ceil(fragsize);
        datagram
            .chunks(fragsize)
            .enumerate()
            .map(|(i, piece)| {
                let more = i + 1 < pieces;
                let offset = (i * fragsize / 8) as u16;
                if is_ipv6(frame) {
                    let source: [u8; 16] = frame[22..38].try_into().expect("an IPv6 source");
                    raw::ethernet(
                        ETH_IPV6,
                        &raw::ipv6_from(
                            source,
                            IPV6_FRAGMENT,
                            &raw::ipv6_fragment(UDP, offset, more, piece),
                        ),
                    )
                } else {
                    let source: [u8; 4] = frame[26..30].try_into().expect("an IPv4 source");
                    let flags = if more { 0x2000 } else { 0 };
                    raw::ethernet(
                        ETH_IPV4,
                        &raw::ipv4_from(source, UDP, flags | offset, &[], piece),
                    )
                }
            })
            .collect()
    }

    /// The frame's IPv6 payload (a UDP datagram, or a fragment of one) behind `count`
    /// more Destination Options headers; a UDP checksum stays right (the pseudo-header
    /// names UDP, not the chain).
    pub fn behind_destination_options(frame: &[u8], count: usize) -> Vec<u8> {
        assert!(is_ipv6(frame), "extension headers are IPv6's");
        const DESTINATION_OPTIONS: u8 = 60;
        let source: [u8; 16] = frame[22..38].try_into().expect("an IPv6 source");
        let next_header = frame[ETHERNET_LEN + 6];
        let payload = &frame[ETHERNET_LEN + IPV6_LEN..];
        let chain = raw::ipv6_destination_options(count, next_header, payload);
        raw::ethernet(
            ETH_IPV6,
            &raw::ipv6_from(source, DESTINATION_OPTIONS, &chain),
        )
    }

    /// The frame with its UDP checksum set to `checksum` (0: none, which IPv4 allows
    /// and IPv6 does not).
    pub fn with_udp_checksum(frame: &[u8], checksum: u16) -> Vec<u8> {
        let mut out = frame.to_vec();
        let at = udp_offset(frame) + 6;
        out[at..at + 2].copy_from_slice(&checksum.to_be_bytes());
        out
    }

    /// The frame with a UDP checksum that is wrong (never 0), as a careless spoofer's:
    /// the kernel discards the datagram.
    pub fn with_wrong_udp_checksum(frame: &[u8]) -> Vec<u8> {
        let at = udp_offset(frame) + 6;
        let right = u16::from_be_bytes([frame[at], frame[at + 1]]);
        let wrong = match right.wrapping_add(0x0101) {
            0 | 0xffff => 0x1234,
            wrong => wrong,
        };
        with_udp_checksum(frame, wrong)
    }
}

/// IPv4/UDP from the server's SIP port to `client`: an answer going out, as the egress
/// program sees it.
pub fn answer4_to(client: [u8; 4], payload: &[u8]) -> Vec<u8> {
    from_server4(SIP_PORT, client, payload)
}

/// IPv4/TCP from the server's SIP port to `client`: an answer over an established
/// connection, as the egress program sees it.
pub fn answer_tcp4_to(client: [u8; 4], payload: &[u8]) -> Vec<u8> {
    build_tcp(
        PacketBuilder::ethernet2(SERVER_MAC, CLIENT_MAC)
            .ipv4(SERVER_V4, client, 64)
            .tcp(SIP_PORT, CLIENT_PORT, 1, 64240),
        Segment::Established,
        payload,
    )
}

/// IPv4/UDP from the server's port `src_port` to `client` (media, when not the SIP
/// port: what most of the egress program's packets are).
pub fn from_server4(src_port: u16, client: [u8; 4], payload: &[u8]) -> Vec<u8> {
    build(
        PacketBuilder::ethernet2(SERVER_MAC, CLIENT_MAC)
            .ipv4(SERVER_V4, client, 64)
            .udp(src_port, CLIENT_PORT),
        payload,
    )
}

/// IPv6/UDP from the server's SIP port to `client`.
pub fn answer6_to(client: [u8; 16], payload: &[u8]) -> Vec<u8> {
    build(
        PacketBuilder::ethernet2(SERVER_MAC, CLIENT_MAC)
            .ipv6(SERVER_V6, client, 64)
            .udp(SIP_PORT, CLIENT_PORT),
        payload,
    )
}

/// A REGISTER of `user` in the registration `call_id`, CSeq `cseq`; with digest
/// credentials for `user` when `credentials` (a guess or the password: the filter never
/// sees which).
pub fn register(user: &str, call_id: &str, cseq: u32, credentials: bool) -> Vec<u8> {
    let authorization = if credentials {
        format!(
            "Authorization: Digest username=\"{user}\", realm=\"pbx.example.test\", \
             nonce=\"4f2a\", uri=\"sip:pbx.example.test\", response=\"00ff\", algorithm=MD5\r\n"
        )
    } else {
        String::new()
    };
    format!(
        "REGISTER sip:pbx.example.test SIP/2.0\r\n\
         Via: SIP/2.0/UDP 198.18.0.1:40000;branch=z9hG4bK-{call_id}-{cseq}\r\n\
         From: <sip:{user}@pbx.example.test>;tag={call_id}\r\n\
         To: <sip:{user}@pbx.example.test>\r\n\
         Call-ID: {call_id}\r\nCSeq: {cseq} REGISTER\r\nMax-Forwards: 70\r\n\
         Contact: <sip:{user}@198.18.0.1:40000>\r\n{authorization}\
         User-Agent: Linphone/5.2.0\r\nExpires: 3600\r\nContent-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

/// The server's answer to [`register`]'s request `call_id`/`cseq`: `status` and
/// `phrase`, with `extra` header lines (a challenge, a Contact with its expiry).
pub fn register_answer(
    status: u16,
    phrase: &str,
    call_id: &str,
    cseq: u32,
    extra: &[&str],
) -> Vec<u8> {
    let mut text = format!(
        "SIP/2.0 {status} {phrase}\r\n\
         Via: SIP/2.0/UDP 198.18.0.1:40000;branch=z9hG4bK-{call_id}-{cseq};rport=40000\r\n\
         From: <sip:user@pbx.example.test>;tag={call_id}\r\n\
         To: <sip:user@pbx.example.test>;tag=srv\r\n\
         Call-ID: {call_id}\r\nCSeq: {cseq} REGISTER\r\n"
    );
    for line in extra {
        text.push_str(line);
        text.push_str("\r\n");
    }
    text.push_str("Content-Length: 0\r\n\r\n");
    text.into_bytes()
}

/// A digest challenge, fresh or (`stale`) for an old nonce.
pub fn challenge(stale: bool) -> String {
    let stale = if stale { ", stale=true" } else { "" };
    format!(
        "WWW-Authenticate: Digest realm=\"pbx.example.test\", nonce=\"9c1e\", \
         algorithm=MD5{stale}"
    )
}
