//! Ethernet, VLAN, IPv4, IPv6, UDP and TCP headers, read in place with bounds checks,
//! from an XDP frame (requests coming in) or a TC socket buffer (answers going out).

use aya_ebpf::{
    helpers::generated::{bpf_skb_load_bytes, bpf_xdp_load_bytes},
    programs::{TcContext, XdpContext},
};

/// A packet read in place: an XDP frame, or a socket buffer at TC.
pub trait Frame {
    /// Where its bytes start and end (for direct reads, checked by the verifier).
    fn start(&self) -> usize;
    fn end(&self) -> usize;
    /// The frame's length, counting what direct reads cannot reach but [`Frame::load`]
    /// can: a socket buffer's paged data (a locally written TCP segment's payload is
    /// there, after its headers).
    fn frame_len(&self) -> usize;
    /// Copies `len` bytes from `offset` to `to` with the program type's helper (which
    /// also reads what direct reads cannot reach: XDP fragments, non-linear socket
    /// buffers). 0 on success.
    ///
    /// # Safety
    /// `to` must have room for `len` bytes.
    unsafe fn load(&self, offset: u32, to: *mut core::ffi::c_void, len: u32) -> i64;
}

impl Frame for XdpContext {
    #[inline(always)]
    fn start(&self) -> usize {
        self.data()
    }
    #[inline(always)]
    fn end(&self) -> usize {
        self.data_end()
    }
    /// The linear part: loaded without XDP frags support, the program only sees frames
    /// held in one buffer.
    #[inline(always)]
    fn frame_len(&self) -> usize {
        self.data_end() - self.data()
    }
    #[inline(always)]
    unsafe fn load(&self, offset: u32, to: *mut core::ffi::c_void, len: u32) -> i64 {
        // SAFETY: the caller's.
        unsafe { bpf_xdp_load_bytes(self.ctx, offset, to, len) }
    }
}

impl Frame for TcContext {
    #[inline(always)]
    fn start(&self) -> usize {
        self.data()
    }
    #[inline(always)]
    fn end(&self) -> usize {
        self.data_end()
    }
    /// `skb->len`: the linear part and the paged data.
    #[inline(always)]
    fn frame_len(&self) -> usize {
        TcContext::len(self) as usize
    }
    #[inline(always)]
    unsafe fn load(&self, offset: u32, to: *mut core::ffi::c_void, len: u32) -> i64 {
        // SAFETY: the caller's.
        unsafe { bpf_skb_load_bytes(self.skb.skb as *const _, offset, to, len) }
    }
}

/// Which end of a packet is the peer: the source of a request coming in
/// ([`INGRESS`]), or the destination of an answer going out ([`EGRESS`]). The walk
/// reports the peer's address as [`Transport::source`] and the server's port as
/// [`Transport::dst_port`]: a transaction as the server sees it, both ways.
pub type Direction = bool;
pub const INGRESS: Direction = false;
pub const EGRESS: Direction = true;

const ETH_HLEN: usize = 14;
pub const ETH_P_IPV4: u16 = 0x0800;
pub const ETH_P_IPV6: u16 = 0x86dd;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88a8;
const VLAN_HLEN: usize = 4;
/// 802.1Q and 802.1ad (QinQ): an outer and an inner tag.
const MAX_VLAN_TAGS: usize = 2;

const IPPROTO_UDP: u8 = 17;
const IPPROTO_TCP: u8 = 6;
const TCP_HLEN: usize = 20;
/// TCP flags (the header's byte 13).
pub const TCP_SYN: u8 = 0x02;
pub const TCP_ACK: u8 = 0x10;
const IPV6_HLEN: usize = 40;
/// IPv6 extension headers walked before giving up. RFC 8200 §4.1's order has at most 6
/// before the upper layer (Destination Options twice); 8 leaves room for repeats. A
/// longer chain is [`Headers::Unwalkable`], judged by its source, then dropped.
const MAX_IPV6_EXTENSIONS: usize = 8;
const NEXTHDR_HOP: u8 = 0;
const NEXTHDR_ROUTING: u8 = 43;
const NEXTHDR_FRAGMENT: u8 = 44;
const NEXTHDR_AUTH: u8 = 51;
const NEXTHDR_DEST: u8 = 60;
const UDP_HLEN: u32 = 8;

/// What the headers say about a frame.
pub enum Headers {
    /// A UDP datagram or a TCP segment for a port the caller judges.
    Transport(Transport),
    /// Not IP; IP but neither UDP nor TCP; or UDP or TCP for a port the caller does not
    /// judge.
    Other,
    /// A non-first fragment of a UDP datagram or TCP segment.
    LaterFragment,
    /// Truncated or not understood before the source address: left to the kernel.
    Unparsed,
    /// A UDP or TCP (or possibly either) packet from a known source whose transport
    /// header cannot be reached: an IPv6 header chain longer than the walk, or cut short;
    /// a first fragment without a whole transport header; a header whose lengths lie.
    /// Its port is unknown, so the source policy applies, then it is dropped
    /// (`drop_header_chain`).
    Unwalkable(Source),
}

/// Where a packet comes from. Aligned: the program reads the address a word at a time,
/// and the verifier refuses misaligned stack access.
#[derive(Clone, Copy)]
#[repr(C, align(8))]
pub struct Source {
    /// The source address; IPv4 mapped into IPv6 (`::ffff:a.b.c.d`).
    pub address: [u8; 16],
    pub is_ipv4: bool,
}

/// A UDP datagram or a TCP segment.
pub struct Transport {
    /// Where it comes from: kept whole, so the source checks take it by reference rather
    /// than a copy on `judge`'s full stack.
    pub source: Source,
    pub is_tcp: bool,
    /// A TCP segment's data offset and flags: its header's bytes 12 and 13, as one
    /// big-endian word ([`Transport::tcp_flags`], [`Transport::header_len`]); 0 for UDP.
    /// One field, not two: a byte more in this struct grows the egress program's
    /// frame past 6.1's 512-byte stack.
    pub tcp_offset_flags: u16,
    pub dst_port: u16,
    /// Offset of the payload from the start of the frame.
    pub payload_offset: u32,
    /// Payload bytes present in this frame (for UDP, at most what its header claims).
    pub payload_len: u32,
    /// The first fragment of a fragmented datagram: the rest of the payload is elsewhere.
    pub first_fragment: bool,
}

impl Transport {
    /// A TCP segment's flags ([`TCP_SYN`], [`TCP_ACK`], …); 0 for UDP.
    #[inline(always)]
    pub fn tcp_flags(&self) -> u8 {
        self.tcp_offset_flags as u8
    }

    /// The UDP or TCP header's length: it starts this far before the payload.
    #[inline(always)]
    pub fn header_len(&self) -> u32 {
        if self.is_tcp {
            u32::from(self.tcp_offset_flags >> 12) * 4
        } else {
            UDP_HLEN
        }
    }
}

/// Reads the bytes at `offset..offset + N`, if the frame holds them.
#[inline(always)]
pub fn bytes<const N: usize>(ctx: &impl Frame, offset: usize) -> Option<&[u8; N]> {
    let start = ctx.start();
    if start + offset + N > ctx.end() {
        return None;
    }
    // SAFETY: checked against data_end just above; the verifier checks it again.
    Some(unsafe { &*((start + offset) as *const [u8; N]) })
}

#[inline(always)]
fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

/// Ethernet and up to [`MAX_VLAN_TAGS`] VLAN tags: where the header after them starts,
/// and its ethertype (a VLAN one if there were more tags); `None` if cut short.
#[inline(always)]
pub fn link_layer(ctx: &impl Frame) -> Option<(usize, u16)> {
    let eth = bytes::<ETH_HLEN>(ctx, 0)?;
    let mut ethertype = be16(eth, 12);
    let mut offset = ETH_HLEN;
    for _ in 0..MAX_VLAN_TAGS {
        if ethertype != ETH_P_8021Q && ethertype != ETH_P_8021AD {
            break;
        }
        let tag = bytes::<VLAN_HLEN>(ctx, offset)?;
        ethertype = be16(tag, 2);
        offset += VLAN_HLEN;
    }
    Some((offset, ethertype))
}

/// For [`parse_headers`]: every port, for the walks of a packet whose port was judged
/// before (the stream programs, the checksum's).
#[inline(always)]
pub fn any_port(_is_tcp: bool, _port: u16) -> bool {
    true
}

/// The headers of a request coming in ([`INGRESS`]) or an answer going out
/// ([`EGRESS`]): see [`Direction`]. `serves(is_tcp, port)` says whether the server's
/// port is one the caller judges: a UDP datagram or TCP segment for another port ends
/// the walk as [`Headers::Other`] as soon as its header is known to be whole, before
/// anything else of it is read (most of a server's traffic is not SIP, and each read
/// costs: BENCHMARKS.md, `non-SIP UDP`).
#[inline(always)]
pub fn parse_headers<const WAY: Direction>(
    ctx: &impl Frame,
    serves: impl Fn(bool, u16) -> bool,
) -> Headers {
    let Some((offset, ethertype)) = link_layer(ctx) else {
        return Headers::Unparsed;
    };
    match ethertype {
        ETH_P_IPV4 => ipv4::<WAY>(ctx, offset, serves),
        ETH_P_IPV6 => ipv6::<WAY>(ctx, offset, serves),
        ETH_P_8021Q | ETH_P_8021AD => Headers::Unparsed, // a third tag
        _ => Headers::Other,
    }
}

#[inline(always)]
fn ipv4<const WAY: Direction>(
    ctx: &impl Frame,
    offset: usize,
    serves: impl Fn(bool, u16) -> bool,
) -> Headers {
    let Some(ip) = bytes::<20>(ctx, offset) else {
        return Headers::Unparsed;
    };
    let header_len = usize::from(ip[0] & 0x0f) * 4;
    if ip[0] >> 4 != 4 || header_len < 20 {
        return Headers::Unparsed;
    }
    let total_len = usize::from(be16(ip, 2));
    if total_len < header_len {
        return Headers::Unparsed;
    }
    let protocol = ip[9];
    if protocol != IPPROTO_UDP && protocol != IPPROTO_TCP {
        return Headers::Other;
    }
    let fragment = be16(ip, 6);
    let more_fragments = fragment & 0x2000 != 0;
    if fragment & 0x1fff != 0 {
        return Headers::LaterFragment;
    }
    let source = Source {
        address: mapped(ip, if WAY == EGRESS { 16 } else { 12 }),
        is_ipv4: true,
    };
    // The IP total length bounds the payload: Ethernet pads short frames.
    let (at, ip_end) = (offset + header_len, offset + total_len);
    if protocol == IPPROTO_TCP {
        tcp::<WAY>(ctx, at, ip_end, more_fragments, source, serves)
    } else {
        udp::<WAY>(ctx, at, ip_end, more_fragments, source, serves)
    }
}

/// The IPv4 address at `ip[at..at + 4]`, mapped into IPv6.
#[inline(always)]
fn mapped(ip: &[u8; 20], at: usize) -> [u8; 16] {
    [
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0xff,
        0xff,
        ip[at],
        ip[at + 1],
        ip[at + 2],
        ip[at + 3],
    ]
}

#[inline(always)]
fn ipv6<const WAY: Direction>(
    ctx: &impl Frame,
    offset: usize,
    serves: impl Fn(bool, u16) -> bool,
) -> Headers {
    let Some(ip) = bytes::<IPV6_HLEN>(ctx, offset) else {
        return Headers::Unparsed;
    };
    if ip[0] >> 4 != 6 {
        return Headers::Unparsed;
    }
    let ip_end = offset + IPV6_HLEN + usize::from(be16(ip, 4));
    let mut source = Source {
        address: [0; 16],
        is_ipv4: false,
    };
    if WAY == EGRESS {
        source.address.copy_from_slice(&ip[24..40]);
    } else {
        source.address.copy_from_slice(&ip[8..24]);
    }
    let mut next = ip[6];
    let mut at = offset + IPV6_HLEN;
    let mut first_fragment = false;
    // One step per extension header, and one for the UDP header after the last.
    for _ in 0..=MAX_IPV6_EXTENSIONS {
        match next {
            IPPROTO_UDP => return udp::<WAY>(ctx, at, ip_end, first_fragment, source, serves),
            IPPROTO_TCP => return tcp::<WAY>(ctx, at, ip_end, first_fragment, source, serves),
            NEXTHDR_HOP | NEXTHDR_ROUTING | NEXTHDR_DEST => {
                let Some(ext) = bytes::<2>(ctx, at) else {
                    return Headers::Unwalkable(source);
                };
                next = ext[0];
                at += (usize::from(ext[1]) + 1) * 8;
            }
            NEXTHDR_AUTH => {
                let Some(ext) = bytes::<2>(ctx, at) else {
                    return Headers::Unwalkable(source);
                };
                next = ext[0];
                at += (usize::from(ext[1]) + 2) * 4;
            }
            NEXTHDR_FRAGMENT => {
                let Some(ext) = bytes::<8>(ctx, at) else {
                    return Headers::Unwalkable(source);
                };
                let offset_and_flags = be16(ext, 2);
                next = ext[0];
                at += 8;
                if offset_and_flags & 0xfff8 != 0 {
                    return if next == IPPROTO_UDP || next == IPPROTO_TCP {
                        Headers::LaterFragment
                    } else {
                        Headers::Other
                    };
                }
                first_fragment = offset_and_flags & 1 != 0;
            }
            _ => return Headers::Other,
        }
    }
    // Deeper than the walk: whatever it carries, its source is known.
    Headers::Unwalkable(source)
}

/// Where the server's port is in a UDP or TCP header: the destination of a request,
/// the source of an answer.
#[inline(always)]
const fn server_port_at(way: Direction) -> usize {
    if way == EGRESS {
        0
    } else {
        2
    }
}

#[inline(always)]
fn udp<const WAY: Direction>(
    ctx: &impl Frame,
    offset: usize,
    ip_end: usize,
    first_fragment: bool,
    source: Source,
    serves: impl Fn(bool, u16) -> bool,
) -> Headers {
    // A UDP header cut short, or lengths that lie: the kernel drops such a datagram
    // (or, for a first fragment, could still reassemble it), and its port is unknown.
    let Some(udp) = bytes::<{ UDP_HLEN as usize }>(ctx, offset) else {
        return Headers::Unwalkable(source);
    };
    let udp_len = u32::from(be16(udp, 4));
    let payload_offset = (offset as u32) + UDP_HLEN;
    if udp_len < UDP_HLEN || ip_end < payload_offset as usize {
        return Headers::Unwalkable(source);
    }
    let port = be16(udp, server_port_at(WAY));
    if !serves(false, port) {
        return Headers::Other;
    }
    // All of it, paged data included: the payload is copied with `Frame::load`.
    let frame_end = ctx.frame_len();
    let present = ip_end
        .min(frame_end)
        .saturating_sub(payload_offset as usize) as u32;
    let claimed = udp_len - UDP_HLEN;
    Headers::Transport(Transport {
        source,
        is_tcp: false,
        tcp_offset_flags: 0,
        dst_port: port,
        payload_offset,
        payload_len: claimed.min(present),
        // Also a datagram whose UDP length claims more than the frame holds.
        first_fragment: first_fragment || claimed > present,
    })
}

#[inline(always)]
fn tcp<const WAY: Direction>(
    ctx: &impl Frame,
    offset: usize,
    ip_end: usize,
    first_fragment: bool,
    source: Source,
    serves: impl Fn(bool, u16) -> bool,
) -> Headers {
    // A TCP header cut short, or a data offset that lies: the kernel drops the segment,
    // and its port is unknown.
    let Some(tcp) = bytes::<TCP_HLEN>(ctx, offset) else {
        return Headers::Unwalkable(source);
    };
    let header_len = usize::from(tcp[12] >> 4) * 4;
    let payload_offset = offset + header_len;
    if header_len < TCP_HLEN || ip_end < payload_offset {
        return Headers::Unwalkable(source);
    }
    let port = be16(tcp, server_port_at(WAY));
    if !serves(true, port) {
        return Headers::Other;
    }
    // All of it, paged data included: the payload is copied with `Frame::load`.
    let frame_end = ctx.frame_len();
    Headers::Transport(Transport {
        source,
        is_tcp: true,
        tcp_offset_flags: be16(tcp, 12),
        dst_port: port,
        payload_offset: payload_offset as u32,
        payload_len: ip_end.min(frame_end).saturating_sub(payload_offset) as u32,
        first_fragment,
    })
}
