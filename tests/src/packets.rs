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
