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
    build(
        PacketBuilder::ethernet2(CLIENT_MAC, SERVER_MAC)
            .ipv4(CLIENT_V4, SERVER_V4, 64)
            .udp(CLIENT_PORT, dst_port),
        payload,
    )
}

/// IPv6/UDP from the client to `dst_port` on the server.
pub fn udp6(dst_port: u16, payload: &[u8]) -> Vec<u8> {
    build(
        PacketBuilder::ethernet2(CLIENT_MAC, SERVER_MAC)
            .ipv6(CLIENT_V6, SERVER_V6, 64)
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
