//! The UDP or TCP checksum, verified before a ban or a count toward a ban (issue 19,
//! class 4: ban poisoning).
//!
//! A spoofed datagram with a scanner's User-Agent, or a train of unknown-domain probes,
//! names a source that did not send it. Checking the checksum does not stop an attacker
//! who computes it, but it does stop acting on what the kernel itself would throw away:
//! a datagram with a wrong checksum never reaches a socket, so it must not ban its
//! claimed source either. The rules are the kernel's (`__udp4_lib_rcv`,
//! `__udp6_lib_rcv`):
//! - IPv4, checksum field 0: no checksum (RFC 768); the kernel accepts it, so may we.
//! - IPv6, checksum field 0: invalid (RFC 8200 §8.1); the kernel drops it.
//! - Otherwise the one's-complement sum of the pseudo-header, the UDP header and the
//!   whole datagram (odd length padded with a zero byte) must be 0xffff.
//! - TCP (`tcp_v4_rcv`, `tcp_v6_rcv`): the same sum over the segment, whose length is
//!   what the IP header leaves after the TCP header's start; 0 is a checksum like any
//!   other (a SYN meets this only under the connection-overflow ban: see `syn_policy`).
//!
//! The sum covers the whole datagram, not only the scan window: it is read with
//! `bpf_xdp_load_bytes` in chunks of [`CHUNK`] bytes into a per-CPU buffer (which also
//! reads the fragments of a multi-buffer frame) and summed with `bpf_csum_diff`, one
//! chunk per `bpf_loop` step ([`repeat`]): the loop body is verified once, whatever the
//! datagram's length. It runs only when a policy left a ban or a count toward a ban
//! pending (see `settle` in main.rs): a request that passes, or a drop that decides
//! nothing about its source, costs nothing here.
//!
//! IPv6 with a routing header: the pseudo-header's destination is the final one, which
//! the header's last entry names while segments are left. The IPv6 header's destination
//! is used: for a packet at its final destination they are the same; otherwise the sum
//! fails and the packet only loses its power to ban (it is still dropped), which is the
//! safe side.

use aya_ebpf::{
    bindings::xdp_md,
    helpers::generated::{bpf_csum_diff, bpf_xdp_get_buff_len, bpf_xdp_load_bytes},
    macros::map,
    maps::PerCpuArray,
    programs::XdpContext,
};
use sip_filter_common::bounded::repeat;

use crate::headers::{
    any_port, link_layer, parse_headers, Headers, ETH_P_IPV4, ETH_P_IPV6, INGRESS,
};

/// Bytes summed per step: `bpf_csum_diff` takes at most 512 (its scratch is 128 words).
const CHUNK: u32 = 512;
const CHUNK_WORDS: usize = (CHUNK / 4) as usize;
/// The largest UDP datagram or TCP segment; the loop's bound.
const MAX_CHUNKS: u32 = 65_536 / CHUNK;

const IPPROTO_UDP: u8 = 17;
const IPPROTO_TCP: u8 = 6;
/// Where the TCP header's checksum sits in the 8 bytes read: bytes 12..20 of the header
/// (data offset, flags, window, then the checksum).
const TCP_CHECKSUM_WORD_AT: u32 = 12;

/// The verification's per-CPU state: what crosses `bpf_loop` steps lives here, not on
/// the stack (see `sip_filter_common::bounded`).
#[repr(C)]
pub struct ChecksumState {
    words: [u32; CHUNK_WORDS],
    /// The running sum (a `__wsum`: 32 bits, not folded).
    sum: u32,
    /// The next byte to sum (offset in the frame), and the end of the datagram.
    next: u32,
    end: u32,
    /// A helper failed: the sum is not to be trusted.
    failed: u32,
    /// The answer: 1 if the checksum is right (or absent, for IPv4).
    verified: u32,
    /// Where the UDP or TCP header starts in the frame ([`locate`]); 0 if it was not
    /// found.
    transport_offset: u32,
    /// 1 if that header is TCP's.
    is_tcp: u32,
}

#[map(name = "SF_CHECKSUM")]
static CHECKSUM: PerCpuArray<ChecksumState> = PerCpuArray::with_max_entries(1, 0);

/// Verifies the UDP checksum of the packet's datagram, or the TCP checksum of its
/// segment, and the IP header around it (an
/// IPv4 header checksum and an IP length the frame holds, which the kernel checks too);
/// the answer is left in memory, for [`verified`] to read (so the code after the call
/// is verified once, not once per way this one can end).
#[inline(never)]
pub fn verify(ctx: &XdpContext) {
    let Some(state) = CHECKSUM.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: per-CPU, used by this CPU during this run only.
    let state = unsafe { &mut *state };
    state.verified = 0;
    state.failed = 0;
    locate(ctx);
    // SAFETY: written by `locate` just before.
    let (transport_offset, is_tcp) = unsafe {
        (
            core::ptr::read_volatile(&state.transport_offset),
            core::ptr::read_volatile(&state.is_tcp) != 0,
        )
    };
    if transport_offset == 0 {
        return;
    }
    let Some((l3, is_ipv4)) = network_offset(ctx) else {
        return;
    };
    let words = state.words.as_mut_ptr();
    // The transport header: its offset comes from memory, so it is read with the helper,
    // not through a packet pointer the verifier would want bounded.
    let header_at = if is_tcp {
        transport_offset + TCP_CHECKSUM_WORD_AT
    } else {
        transport_offset
    };
    // SAFETY: the buffer holds CHUNK bytes; 8 are written.
    if unsafe { bpf_xdp_load_bytes(ctx.ctx, header_at, words.cast(), 8) } != 0 {
        return;
    }
    // UDP: bytes 4..8 are the length and the checksum. TCP: bytes 16..18 the checksum,
    // and the length is the IP header's (below).
    let [high, low, checksum_high, checksum_low] = state.words[1].to_ne_bytes();
    let (claimed_len, checksum, protocol) = if is_tcp {
        (0, u16::from_be_bytes([high, low]), IPPROTO_TCP)
    } else {
        (
            u32::from(u16::from_be_bytes([high, low])),
            u16::from_be_bytes([checksum_high, checksum_low]),
            IPPROTO_UDP,
        )
    };
    if checksum == 0 && !is_ipv4 && !is_tcp {
        return; // invalid over IPv6: the kernel drops it
    }
    // SAFETY: a helper on the program's own context.
    let frame_len = unsafe { bpf_xdp_get_buff_len(ctx.ctx) };

    // The IP header, in the buffer's first words, then rewritten in place into the
    // pseudo-header (a one's-complement sum does not mind the order of 16-bit words):
    // IPv4: zero, protocol, transport length; source, destination (20 bytes summed, 12
    // of them the pseudo-header, 8 zero).
    // IPv6: 32-bit transport length, three zeros and the next header; source,
    // destination.
    let (ip_len, pseudo_len) = if is_ipv4 {
        // SAFETY: the buffer holds CHUNK bytes; 20 are written.
        if unsafe { bpf_xdp_load_bytes(ctx.ctx, l3, words.cast(), 20) } != 0 {
            return;
        }
        let [version_ihl, _, total_high, total_low] = state.words[0].to_ne_bytes();
        let header_len = u32::from(version_ihl & 0x0f) * 4;
        if header_len < 20 {
            return;
        }
        // The header checksum over the whole header, options included (20..=60 bytes,
        // written so that 6.1's verifier sees the bounds).
        let header_len = ((header_len - 1) & 63) + 1;
        // SAFETY: the buffer holds CHUNK bytes; at most 60 are written.
        if unsafe { bpf_xdp_load_bytes(ctx.ctx, l3, words.cast(), header_len) } != 0 {
            return;
        }
        let summed = ((header_len - 1) | 3) + 1;
        // SAFETY: `summed` (= `header_len`) bytes of the buffer were just written.
        let sum = unsafe { bpf_csum_diff(core::ptr::null_mut(), 0, words, summed, 0) };
        if sum < 0 || fold(sum as u32) != 0xffff {
            return; // a wrong IPv4 header checksum: the kernel drops the packet
        }
        state.words[1] = 0;
        state.words[2] = 0;
        (u32::from(u16::from_be_bytes([total_high, total_low])), 20)
    } else {
        // SAFETY: the buffer holds CHUNK bytes; 40 are written.
        if unsafe { bpf_xdp_load_bytes(ctx.ctx, l3, words.cast(), 40) } != 0 {
            return;
        }
        let [payload_high, payload_low, ..] = state.words[1].to_ne_bytes();
        state.words[1] = u32::from_ne_bytes([0, 0, 0, protocol]);
        (
            40 + u32::from(u16::from_be_bytes([payload_high, payload_low])),
            40,
        )
    };
    // The IP packet must fit in the frame (the kernel drops one cut short), and the
    // transport header in the IP packet (`judge` made sure of that, or the packet is a
    // first fragment and never gets here). A UDP datagram ends where its header says
    // (within the IP packet); a TCP segment where the IP packet does.
    let ip_end = l3 + ip_len;
    if ip_end < transport_offset {
        return;
    }
    let transport_len = if is_tcp {
        ip_end - transport_offset
    } else {
        claimed_len
    };
    let end = transport_offset + transport_len;
    if u64::from(ip_end) > frame_len || end > ip_end || transport_len < 8 {
        return;
    }
    // The pseudo-header's length (and, over IPv4, its protocol): known only now.
    if is_ipv4 {
        let [_, _, length_high, length_low] = transport_len.to_be_bytes();
        state.words[0] = u32::from_ne_bytes([0, protocol, length_high, length_low]);
    } else {
        state.words[0] = transport_len.to_be();
    }
    if checksum == 0 && !is_tcp {
        // IPv4 without a checksum: the kernel accepts it (RFC 768), so may we.
        state.verified = 1;
        return;
    }
    // SAFETY: `pseudo_len` bytes of the buffer are initialized just above.
    let seed = unsafe { bpf_csum_diff(core::ptr::null_mut(), 0, words, pseudo_len, 0) };
    if seed < 0 {
        return;
    }
    state.sum = seed as u32;
    state.next = transport_offset;
    state.end = end;

    let raw = ctx.ctx;
    repeat(
        transport_len.div_ceil(CHUNK).min(MAX_CHUNKS),
        &mut move |_| sum_chunk(raw),
    );

    // What the steps left in memory decides.
    if state.failed != 0 || state.next != state.end {
        return;
    }
    state.verified = u32::from(fold(state.sum) == 0xffff);
}

/// Finds the UDP or TCP header again, with the same walk `judge` made
/// ([`parse_headers`]), and leaves its offset and kind in memory (offset 0 if there is
/// none, or the packet is a first fragment). Walking the headers twice on the rare packet that may ban costs less
/// than carrying one more value out of `judge`, whose stack frame is at its limit.
/// Read back from memory, the offset merges the walk's many ends into one for the
/// verifier. Inlined: as a function of its own, LLVM would hand it `data` and
/// `data_end` as 32-bit values instead of the context, and 6.1's verifier refuses
/// arithmetic on a `pkt_end` that crossed a call.
#[inline(always)]
fn locate(ctx: &XdpContext) {
    let (offset, is_tcp) = match parse_headers::<INGRESS>(ctx, any_port) {
        Headers::Transport(transport) if !transport.first_fragment => (
            transport.payload_offset - transport.header_len(),
            transport.is_tcp,
        ),
        _ => (0, false),
    };
    if let Some(state) = CHECKSUM.get_ptr_mut(0) {
        // SAFETY: per-CPU, used by this CPU during this run only.
        unsafe {
            core::ptr::write_volatile(&mut (*state).transport_offset, offset);
            core::ptr::write_volatile(&mut (*state).is_tcp, u32::from(is_tcp));
        }
    }
}

/// A 32-bit one's-complement sum folded to 16 bits.
#[inline(always)]
fn fold(sum: u32) -> u32 {
    let sum = (sum & 0xffff) + (sum >> 16);
    (sum & 0xffff) + (sum >> 16)
}

/// One step: the next chunk of the datagram into the buffer, then into the sum.
#[inline(always)]
fn sum_chunk(ctx: *mut xdp_md) -> bool {
    let Some(state) = CHECKSUM.get_ptr_mut(0) else {
        return false;
    };
    // SAFETY: per-CPU, used by this CPU during this run only.
    let state = unsafe { &mut *state };
    let (next, end) = (state.next, state.end);
    if next >= end {
        return false;
    }
    let left = end - next;
    let n = if left > CHUNK { CHUNK } else { left };
    // 1..=CHUNK, in a form 6.1's verifier also sees bounded below (see payload.rs).
    let load_len = ((n.wrapping_sub(1)) & (CHUNK - 1)) + 1;
    // The word that will hold the tail of a length that is no multiple of 4 is cleared
    // first: the load leaves its last bytes zero, the padding the checksum asks for.
    // (For a whole chunk this clears word 0, which the load then overwrites.)
    state.words[(load_len as usize >> 2) & (CHUNK_WORDS - 1)] = 0;
    let words = state.words.as_mut_ptr();
    // SAFETY: the buffer holds CHUNK bytes; `load_len` is at most that.
    if unsafe { bpf_xdp_load_bytes(ctx, next, words.cast(), load_len) } != 0 {
        state.failed = 1;
        return false;
    }
    // Rounded up to whole words: 4..=CHUNK.
    let summed = ((load_len - 1) | 3) + 1;
    // SAFETY: `summed` bytes of the buffer are initialized (the load and the cleared word).
    let sum = unsafe { bpf_csum_diff(core::ptr::null_mut(), 0, words, summed, state.sum) };
    if sum < 0 {
        state.failed = 1;
        return false;
    }
    state.sum = sum as u32;
    state.next = next + load_len;
    true
}

/// The answer [`verify`] left: read from memory, unknown to the verifier.
#[inline(always)]
pub fn verified() -> bool {
    match CHECKSUM.get_ptr(0) {
        // SAFETY: per-CPU, written by `verify` earlier in this run.
        Some(state) => (unsafe { core::ptr::read_volatile(&(*state).verified) }) != 0,
        None => false,
    }
}

/// Where the IP header starts, and whether it is IPv4: Ethernet and up to two VLAN tags
/// walked again (cheaper than carrying the offset through the parse, and only done when
/// a ban is at stake).
#[inline(always)]
fn network_offset(ctx: &XdpContext) -> Option<(u32, bool)> {
    match link_layer(ctx)? {
        (offset, ETH_P_IPV4) => Some((offset as u32, true)),
        (offset, ETH_P_IPV6) => Some((offset as u32, false)),
        _ => None,
    }
}
