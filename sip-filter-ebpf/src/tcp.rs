//! The stream program for SIP over TCP: entered by tail call from the XDP program
//! (`sip_filter`) for an untrusted source's segment with payload to a SIP-over-TCP
//! port, once the source policy (lists, bans) has passed it; the source's findings
//! wait in the [`Packet`]. A TLS port's segment goes to the TLS program ([`tls`])
//! instead, straight from the XDP program.
//!
//! A segment to a SIP-over-TCP port is walked message by message (issue 14): the
//! message at the [`Packet`]'s `stream_offset` is parsed with the parser UDP uses
//! (here), then judged by the same policies (`finish`, `conclude`: scanner, domain,
//! rate classes, bans made after the TCP checksum is verified) in
//! [`sip_filter_tcp_policy`], a program of its own (the parse and the policies
//! together exceed one program's verifier budget). If it passes and another message
//! follows within the segment (its end found by [`message_end`], the Content-Length
//! bounded by the bytes present), the program tail-calls itself for that one: each
//! message is judged and counted once, each run verified once, at most
//! [`MAX_STREAM_MESSAGES`] per segment (the rest passes, `pass_stream_limit`). The
//! segment is dropped if any of its messages is, and the walk stops there. A payload
//! that is only CR/LF (RFC 5626's ping and pong) is a keep-alive; one that starts no
//! message (the continuation of one, a body) passes, `pass_continuation`.
//!
//! The walk's position lives in the [`Packet`] and is zero whenever a run of this
//! program ends other than by tail-calling itself, so a segment's first entry starts at
//! its payload's first byte. An INVITE's run ends in the INVITE program (`finish`
//! tail-calls it), which goes on with the walk in the same way ([`walk_on_after`]).
//!
//! [`Packet`]: crate::Packet
//! [`tls`]: crate::tls

use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};
use sip_filter_common::{
    maps::{
        Transport as TransportKind, MAX_STREAM_MESSAGES, PROGRAM_SLOT_TCP, PROGRAM_SLOT_TCP_POLICY,
        PROGRAM_SLOT_TLS,
    },
    sip::{
        parse_in_place,
        stream::{message_end, STREAM_HEADERS},
        Kind,
    },
    Method, Reason,
};

use crate::{
    bump, count, enter_stream_program, finish,
    headers::{any_port, parse_headers, Headers, INGRESS},
    leave_transport,
    payload::load_payload,
    read_back, tail_call, verdict, CONFIG, NEEDS_ANSWER_METER, NEEDS_REQUEST_POLICY, PACKET, SCAN,
};

#[xdp]
pub fn sip_filter_tcp(ctx: XdpContext) -> u32 {
    let verdict = judge_message(&ctx);
    if verdict == TLS_PORT {
        leave_position(0, 0);
        enter_stream_program(&ctx, PROGRAM_SLOT_TLS);
        return xdp_action::XDP_PASS;
    }
    if verdict == NOTHING {
        return end_walk(Reason::PassSegment);
    }
    if let Some(packet) = PACKET.get_ptr_mut(0) {
        // SAFETY: per-CPU, used by this CPU during this run only.
        unsafe { core::ptr::write_volatile(&mut (*packet).stream_verdict, verdict) };
    }
    tail_call(&ctx, PROGRAM_SLOT_TCP_POLICY);
    // Only if the policy program is missing: the segment passes, as before this one.
    end_walk(Reason::PassSegment)
}

/// The policies on the message [`sip_filter_tcp`] parsed (in the scratch, its verdict in
/// the [`Packet`]): `finish`, as the XDP program runs it after `judge`. Then, if the
/// message passed and another follows, the walk goes on at the next one. A program of
/// its own: the parse and the policies together exceed one program's verifier budget.
///
/// [`Packet`]: crate::Packet
#[xdp]
pub fn sip_filter_tcp_policy(ctx: XdpContext) -> u32 {
    leave_transport(TransportKind::Tcp);
    note_next_message();
    let action = finish(&ctx, read_back_verdict());
    // Through memory too: the walk's end is then verified once, not once for each way
    // the policies end.
    leave_action(action);
    walk_on(&ctx)
}

/// [`walk_on`] after a message's `action`, for the INVITE program, which an INVITE over
/// TCP reaches from this program's `finish` and which concludes it.
#[inline(always)]
pub(crate) fn walk_on_after(ctx: &XdpContext, action: u32) -> u32 {
    leave_action(action);
    walk_on(ctx)
}

/// After a message's verdict: the walk's next step (see [`sip_filter_tcp_policy`]).
/// Not inlined, nor is [`note_next_message`]: the policy program's entry frame is on
/// the policies' call chain, which 6.1 holds to 512 bytes of stack.
#[inline(never)]
fn walk_on(ctx: &XdpContext) -> u32 {
    let next = read_back(|p| &p.stream_next);
    let counted = Reason::from_number(u64::from(read_back(|p| &p.counted) & 0xff));
    // A drop (made, or counted in dry-run) ends the walk: the segment goes with it.
    if next == 0 || counted.is_none_or(Reason::is_drop) {
        leave_position(0, 0);
        return read_back(|p| &p.stream_action);
    }
    let judged = read_back(|p| &p.stream_messages) + 1;
    if judged >= MAX_STREAM_MESSAGES {
        return end_walk(Reason::PassStreamLimit);
    }
    leave_position(read_back(|p| &p.stream_offset) + next, judged);
    tail_call(ctx, PROGRAM_SLOT_TCP);
    // Only if the tail call failed (the kernel's limit of 33 in a chain).
    end_walk(Reason::PassStreamLimit)
}

/// Where the next message of the segment starts, if the one in the scratch is a SIP
/// message whose end lies within the segment, into the [`Packet`](crate::Packet)'s
/// `stream_next` (0 for none). First thing in its program, while the verifier has one
/// state to walk it in: after the parse, or after the policies, it would walk it once
/// for each way they can end.
#[inline(never)]
fn note_next_message() {
    let (Some(scratch), Some(packet)) = (SCAN.get_ptr(0), PACKET.get_ptr_mut(0)) else {
        return;
    };
    // SAFETY: per-CPU scratch and packet, used only by this CPU during this run.
    let (scratch, packet) = unsafe { (&*scratch, &mut *packet) };
    let verdict = packet.stream_verdict;
    // A keep-alive's parse leaves the lines of the message before it in the scratch.
    let message = verdict & (NEEDS_REQUEST_POLICY | NEEDS_ANSWER_METER) != 0
        && verdict & 0xff != Reason::PassKeepalive as u64;
    let left = packet.stream_left;
    packet.stream_next = match message_end(scratch, left) {
        Some(end) if message && end != 0 && end < left => end,
        _ => 0,
    };
}

/// The TCP program's verdict on the message, from the [`Packet`](crate::Packet).
#[inline(always)]
fn read_back_verdict() -> u64 {
    match PACKET.get_ptr(0) {
        // SAFETY: per-CPU, written by the TCP program earlier in this chain.
        Some(packet) => unsafe { core::ptr::read_volatile(&(*packet).stream_verdict) },
        None => crate::verdict(Reason::PassSegment, Method::None as usize),
    }
}

/// [`judge_message`]'s answer for a TLS port's segment: the XDP program sends those to
/// the TLS program itself, so none comes here; kept as the TCP program's own guard
/// (never parse a TLS port's bytes as SIP), and as the shape 6.1's verifier walks in a
/// third of the instructions it needs without it (92,127 against 296,709).
const TLS_PORT: u64 = u64::MAX;
/// [`judge_message`]'s answer for nothing to judge: headers that cannot be walked, or
/// the walk's offset past the payload.
const NOTHING: u64 = u64::MAX - 1;

/// Ends the walk with a verdict of its own (no message judged in this run).
#[inline(always)]
fn end_walk(reason: Reason) -> u32 {
    leave_position(0, 0);
    // `count` reset it after the last message's verdict.
    leave_transport(TransportKind::Tcp);
    count(reason, Method::None as usize);
    xdp_action::XDP_PASS
}

/// The XDP action on the message just judged, kept while the walk decides.
#[inline(always)]
fn leave_action(action: u32) {
    if let Some(packet) = PACKET.get_ptr_mut(0) {
        // SAFETY: per-CPU, used by this CPU during this run only.
        unsafe { core::ptr::write_volatile(&mut (*packet).stream_action, action) };
    }
}

/// Where the walk goes on: see [`Packet`]'s `stream_offset`.
#[inline(always)]
fn leave_position(offset: u32, messages: u32) {
    if let Some(packet) = PACKET.get_ptr_mut(0) {
        // SAFETY: per-CPU, used by this CPU during this run only.
        unsafe {
            core::ptr::write_volatile(&mut (*packet).stream_offset, offset);
            core::ptr::write_volatile(&mut (*packet).stream_messages, messages);
        }
    }
}

/// `judge`'s parse for the message at `stream_start`: the same parser, the same
/// verdicts (what `finish` takes), and, for a message the walk can go past, where the
/// next one starts (`stream_next`). Not inlined: its frames are gone when the policies
/// run, as `judge`'s are.
#[inline(never)]
fn judge_message(ctx: &XdpContext) -> u64 {
    // The headers again, here as in `judge`: the header walk's many ends then leave
    // nothing in the entry's frame for the verifier to tell apart.
    let Headers::Transport(segment) = parse_headers::<INGRESS>(ctx, any_port) else {
        return NOTHING;
    };
    if CONFIG
        .get(0)
        .is_some_and(|config| config.is_tls_port(segment.dst_port))
    {
        return TLS_PORT;
    }
    leave_transport(TransportKind::Tcp);
    let offset = read_back(|p| &p.stream_offset);
    if offset >= segment.payload_len {
        return NOTHING;
    }
    let (Some(scratch), Some(packet)) = (SCAN.get_ptr_mut(0), PACKET.get_ptr_mut(0)) else {
        return verdict(Reason::PassUnparsed, Method::None as usize);
    };
    // SAFETY: per-CPU scratch and packet, used only by this CPU during this run.
    let (scratch, packet) = unsafe { (&mut *scratch, &mut *packet) };
    packet.needs_routing = 0;
    packet.stream_start = segment.payload_offset + offset;
    packet.stream_left = segment.payload_len - offset;
    let (start, left) = (packet.stream_start, packet.stream_left);
    let Some(len) = load_payload(ctx, start, left, &mut scratch.buf) else {
        return verdict(Reason::PassUnparsed, Method::None as usize);
    };
    // Never whole: a line cut by the segment's end is no line (the rest comes later).
    match parse_in_place::<STREAM_HEADERS>(scratch, len, false) {
        Kind::Sip => {}
        Kind::Keepalive => {
            return verdict(Reason::PassKeepalive, Method::None as usize) | NEEDS_ANSWER_METER
        }
        Kind::NotSip => return verdict(Reason::PassContinuation, Method::None as usize),
    }
    if !scratch.headers_complete() {
        bump(|c| &mut c.headers_truncated);
    }
    if !scratch.is_request() {
        return verdict(Reason::PassResponse, Method::None as usize) | NEEDS_ANSWER_METER;
    }
    verdict(Reason::PassRequest, scratch.method_number()) | NEEDS_REQUEST_POLICY
}
