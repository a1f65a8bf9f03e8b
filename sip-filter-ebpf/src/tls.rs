//! The stream program for SIP over TLS: entered by tail call from the XDP program
//! (`sip_filter`) for an untrusted source's segment with payload to a TLS port, once the source policy (lists, bans) has passed it; the
//! source's findings wait in the [`Packet`].
//!
//! It judges a connection's ClientHello (issue 14, item 4; README, "TLS"): the
//! segment's first bytes are copied into the scratch buffer as the SIP path copies a
//! datagram's, and read by the one ClientHello parser ([`sip_filter_common::tls`]).
//! A segment that starts no ClientHello (the rest of a handshake, a later record)
//! passes as `pass_segment`. A ClientHello is judged by what its first segment holds:
//! the highest version offered against `tls.min_version`, the server name against
//! its allowlist (the served domains, or `tls.server_names`), and the `tls.no_sni`
//! policy; a field a check needs that is not in the segment (a split ClientHello)
//! passes it, counted `pass_tls_unknown`. What the parser proves wrong is dropped.
//! Every drop counts toward the source's `tls` ban, made by [`conclude`] once the TCP
//! checksum is verified.
//!
//! [`Packet`]: crate::Packet

use aya_ebpf::{
    helpers::generated::bpf_ktime_get_coarse_ns,
    macros::{map, xdp},
    maps::PerCpuArray,
    programs::XdpContext,
};
use sip_filter_common::{
    domain::{DOMAIN_EXACT, DOMAIN_SNI_EXACT, DOMAIN_SNI_WILDCARD, DOMAIN_WILDCARD},
    maps::{
        source_drop_slot, Transport as TransportKind, FLAG_DRY_RUN, TLS_ATTEMPT_SLOTS,
        TLS_DROP_NO_SNI, TLS_SNI_CHECK, TLS_SNI_OWN_LIST,
    },
    sip::MAX_HOST_LEN,
    tls::{self, Field, HelloState, Verdict},
    FilterConfig, Method, Reason, Scratch,
};

use crate::{
    conclude,
    headers::{any_port, parse_headers, Frame, Headers, INGRESS},
    leave_method, leave_pending, leave_reason, leave_transport, name_listed,
    payload::load_payload,
    sources::{count_source_drop, drop_event, state_of},
    CONFIG, PACKET, PENDING_NONE, PENDING_TLS_HIT, SCAN,
};

/// The TLS program's per-CPU memory, beside the scan buffer, not on the stack.
#[repr(C)]
struct TlsScratch {
    /// The ClientHello parser's working memory and results.
    hello: HelloState,
    /// The segment's TCP ports and sequence number: what its retransmissions share.
    /// Loaded only for a refused ClientHello, from `tcp_at`.
    attempt: [u8; 8],
    /// Where the segment's TCP header starts in the packet.
    tcp_at: u32,
}

#[map(name = "SF_TLS_HELLO")]
static HELLO: PerCpuArray<TlsScratch> = PerCpuArray::with_max_entries(1, 0);

#[xdp]
pub fn sip_filter_tls(ctx: XdpContext) -> u32 {
    leave_transport(TransportKind::Tls);
    leave_pending(PENDING_NONE);
    leave_method(Method::None as u32);
    // The verdict goes through memory, like the request policy's: `conclude` (the ban
    // pending, the count, the action) is then verified once.
    leave_reason(hello_verdict(&ctx));
    conclude(&ctx)
}

/// Copies the segment's first bytes, parses them as a ClientHello and judges it.
#[inline(never)]
fn hello_verdict(ctx: &XdpContext) -> Reason {
    let Headers::Transport(segment) = parse_headers::<INGRESS>(ctx, any_port) else {
        return Reason::PassSegment;
    };
    let (Some(scratch), Some(tls_scratch)) = (SCAN.get_ptr_mut(0), HELLO.get_ptr_mut(0)) else {
        return Reason::PassSegment;
    };
    // SAFETY: per-CPU scratch and parse state, used only by this CPU during this run.
    let (scratch, tls_scratch) = unsafe { (&mut *scratch, &mut *tls_scratch) };
    // Where the TCP header is, kept in memory: its first 8 bytes (ports, sequence
    // number) are read only if the ClientHello is refused (`attempt_of`).
    tls_scratch.tcp_at = segment.payload_offset - segment.header_len();
    let Some(len) = load_payload(
        ctx,
        segment.payload_offset,
        segment.payload_len,
        &mut scratch.buf,
    ) else {
        return Reason::PassSegment;
    };
    let hello = &mut tls_scratch.hello;
    // Never `whole`: a segment's stream goes on in the next one.
    tls::parse_in_place(&scratch.buf, hello, len, false);
    match CONFIG.get(0) {
        Some(config) => policy(ctx, config, scratch, hello),
        None => Reason::PassSegment,
    }
}

/// The TLS policy on a parsed segment (README, "TLS"); a drop leaves a refusal pending
/// toward the source's ban.
#[inline(always)]
fn policy(
    ctx: &XdpContext,
    config: &FilterConfig,
    scratch: &mut Scratch,
    hello: &HelloState,
) -> Reason {
    match hello.verdict() {
        Verdict::NotClientHello => return Reason::PassSegment,
        Verdict::Malformed => return refuse(ctx, config, Reason::DropTlsMalformed),
        Verdict::Complete | Verdict::Truncated | Verdict::WalkLimit => {}
    }
    let rules = &config.tls;
    // A field a check needs that the segment does not hold.
    let mut unknown = false;
    if rules.min_version != 0 {
        match hello.highest_version() {
            Field::Found(version) if version < rules.min_version => {
                return refuse(ctx, config, Reason::DropTlsVersion)
            }
            Field::Found(_) => {}
            Field::Absent | Field::Unknown => unknown = true,
        }
    }
    let check_name = rules.flags & TLS_SNI_CHECK != 0;
    let drop_nameless = rules.flags & TLS_DROP_NO_SNI != 0;
    if check_name || drop_nameless {
        match hello.server_name() {
            Field::Found(name) if check_name => {
                let (exact, wildcard) = if rules.flags & TLS_SNI_OWN_LIST != 0 {
                    (DOMAIN_SNI_EXACT, DOMAIN_SNI_WILDCARD)
                } else {
                    (DOMAIN_EXACT, DOMAIN_WILDCARD)
                };
                // No name we serve is longer than the hash reads.
                if name.len() > MAX_HOST_LEN
                    || !name_listed(scratch, name, config.domain_seed, exact, wildcard)
                {
                    return refuse(ctx, config, Reason::DropTlsSni);
                }
            }
            Field::Found(_) => {}
            Field::Absent if drop_nameless => return refuse(ctx, config, Reason::DropTlsNoSni),
            Field::Absent => {}
            Field::Unknown => unknown = true,
        }
    }
    if unknown {
        Reason::PassTlsUnknown
    } else {
        Reason::PassTlsHello
    }
}

/// A dropped ClientHello: reported (at most one event a second per source), and one
/// refusal toward the `tls` ban left pending, when that rule is on, unless it is a TCP
/// retransmission of one of the source's last refused ones: a client's TCP resends the
/// ClientHello nobody acknowledged several times (a closed connection's, too, while
/// the client opens the next), and its handshake is refused once.
#[inline(always)]
fn refuse(ctx: &XdpContext, config: &FilterConfig, reason: Reason) -> Reason {
    let Some(packet) = PACKET.get_ptr(0) else {
        return reason;
    };
    // SAFETY: per-CPU, written by `judge` before the tail call, and by this program.
    let packet = unsafe { &*packet };
    let Some(state) = state_of(&packet.key) else {
        return reason;
    };
    // Every refused segment, retransmissions too: each is a packet dropped.
    if let Some(slot) = source_drop_slot(reason) {
        count_source_drop(state, slot);
    }
    // SAFETY: a helper without arguments.
    let now = unsafe { bpf_ktime_get_coarse_ns() };
    let dry_run = config.has(FLAG_DRY_RUN);
    drop_event(
        state,
        &packet.source,
        reason,
        Method::None as usize,
        now,
        dry_run,
        packet.transport,
    );
    let rules = &config.tls;
    if rules.refused_ns == 0 || rules.refused_hits == 0 {
        return reason;
    }
    let attempt = attempt_of(ctx);
    let attempt = (attempt >> 32) as u32 ^ attempt as u32;
    let attempt = (attempt >> 16) as u16 ^ attempt as u16;
    if state.tls_attempts.contains(&attempt) {
        return reason;
    }
    // Round the slots: the count of refusals moves on with each one counted.
    state.tls_attempts[state.tls_refusals as usize & (TLS_ATTEMPT_SLOTS - 1)] = attempt;
    leave_pending(PENDING_TLS_HIT);
    reason
}

/// The refused segment's TCP ports and sequence number, as one word (0 if the kernel
/// refused the copy): what its retransmissions share.
#[inline(always)]
fn attempt_of(ctx: &XdpContext) -> u64 {
    let Some(tls_scratch) = HELLO.get_ptr_mut(0) else {
        return 0;
    };
    // SAFETY: per-CPU, used only by this CPU during this run; through the fields, not a
    // reference to the whole: the parse state beside them is borrowed by the policy.
    unsafe {
        let attempt = core::ptr::addr_of_mut!((*tls_scratch).attempt);
        let tcp_at = core::ptr::read_volatile(core::ptr::addr_of!((*tls_scratch).tcp_at));
        // `attempt` has room for the 8 bytes.
        if ctx.load(tcp_at, attempt.cast(), 8) != 0 {
            return 0;
        }
        u64::from_ne_bytes(*attempt)
    }
}
