//! The sip-filter XDP program: parses Ethernet (with up to two VLAN tags), IPv4/IPv6
//! and UDP or TCP, applies the source policy to every transport, hands SIP datagrams to
//! the shared parser, applies the request policy, and counts every verdict once, by
//! reason and method. Beside it, in `answers`, the TC egress program that watches the
//! server's answers.
#![no_std]
#![no_main]
// For BPF's atomic add (see sources::admit); built with RUSTC_BOOTSTRAP (build.rs).
#![feature(core_intrinsics)]
#![allow(internal_features)]

mod answers;
mod auth;
mod checksum;
mod headers;
mod invite;
mod payload;
mod reference;
mod sources;
mod tcp;
mod tls;

use aya_ebpf::{
    bindings::xdp_action,
    bindings::BPF_F_NO_PREALLOC,
    helpers::generated::{bpf_ktime_get_coarse_ns, bpf_map_lookup_elem},
    macros::{map, xdp},
    maps::{lpm_trie::Key, Array, HashMap, LpmTrie, PerCpuArray, ProgramArray},
    programs::XdpContext,
};
use headers::{parse_headers, Headers, Source, Transport, INGRESS, TCP_ACK, TCP_SYN};
use payload::load_payload;
use sip_filter_common::{
    domain::{host_hashes, DOMAIN_EXACT, DOMAIN_WILDCARD, MAX_SUFFIXES},
    maps::{
        Ban, BanReason, ListEntry, SourceKey, SourceState, Transaction, Transport as TransportKind,
        BAN_SLOTS, CLASS_ANSWERS, CLASS_CONNECTIONS, CLASS_INVITE, CLASS_OTHER, CLASS_REGISTER,
        CLASS_REGISTERED, CLASS_SLOTS, CLASS_TRUSTED, FLAG_ALLOW_HOSTLESS_URI, FLAG_ANSWERS,
        FLAG_DOMAIN_CHECK, FLAG_DROP_FRAGMENTS, FLAG_DROP_NOT_SIP_PAYLOAD, FLAG_DRY_RUN,
        LIST_ORIGIN_COUNTRY, MAX_BANS, MAX_DOMAINS, MAX_LIST_ENTRIES, MAX_OWN_ADDRESSES,
        PROGRAM_SLOTS, PROGRAM_SLOT_INVITE, PROGRAM_SLOT_TCP, PROGRAM_SLOT_TLS,
        SOURCE_DROP_CONNECTION_BUDGET, SOURCE_DROP_CONNECTION_RATE, SOURCE_DROP_GLOBAL_BUDGET,
        SOURCE_DROP_RATE_LIMITED, SOURCE_DROP_SCANNER, SOURCE_DROP_UNKNOWN_DOMAIN,
        TRANSACTION_CREDENTIALED, TRANSPORT_SLOTS,
    },
    scanner::is_scanner,
    sip::{
        looks_like_request,
        pairing::{digest_username, transaction_of, uri_user, Account},
        parse_in_place, routing_of, value_of, Header, Kind, Span, POLICY_HEADERS,
        ROUTING_IN_DIALOG, ROUTING_ROUTED,
    },
    Counters, FilterConfig, HostKind, Method, Reason, Scratch, SCAN_LEN,
};
use sources::{
    admit, ban, count_atomically, count_source_drop, drop_event, hit, state_of, GLOBAL_BUDGET,
    GLOBAL_CONNECTIONS, SCANNER_AGENTS,
};

#[map(name = "SF_CONFIG")]
pub(crate) static CONFIG: Array<FilterConfig> = Array::with_max_entries(1, 0);

#[map(name = "SF_COUNTERS")]
static COUNTERS: PerCpuArray<Counters> = PerCpuArray::with_max_entries(1, 0);

/// Allowed Request-URI domains: seeded host hash -> DOMAIN_EXACT | DOMAIN_WILDCARD.
#[map(name = "SF_DOMAINS")]
static DOMAINS: HashMap<u64, u8> = HashMap::with_max_entries(MAX_DOMAINS, 0);

/// The server's own addresses (IPv4 mapped into IPv6), allowed as IP-literal hosts.
#[map(name = "SF_OWN_ADDRS")]
static OWN_ADDRESSES: HashMap<[u8; 16], u8> = HashMap::with_max_entries(MAX_OWN_ADDRESSES, 0);

/// Static source lists: trusted (allow) and always dropped (deny), by CIDR.
#[map(name = "SF_ALLOW_V4")]
static ALLOW_V4: LpmTrie<[u8; 4], ListEntry> =
    LpmTrie::with_max_entries(MAX_LIST_ENTRIES, BPF_F_NO_PREALLOC);
#[map(name = "SF_ALLOW_V6")]
static ALLOW_V6: LpmTrie<[u8; 16], ListEntry> =
    LpmTrie::with_max_entries(MAX_LIST_ENTRIES, BPF_F_NO_PREALLOC);
#[map(name = "SF_DENY_V4")]
static DENY_V4: LpmTrie<[u8; 4], ListEntry> =
    LpmTrie::with_max_entries(MAX_LIST_ENTRIES, BPF_F_NO_PREALLOC);
#[map(name = "SF_DENY_V6")]
static DENY_V6: LpmTrie<[u8; 16], ListEntry> =
    LpmTrie::with_max_entries(MAX_LIST_ENTRIES, BPF_F_NO_PREALLOC);

/// The dynamic blocklist: source key -> expiry and reason.
#[map(name = "SF_BANS")]
pub static BANS: HashMap<SourceKey, Ban> = HashMap::with_max_entries(MAX_BANS, BPF_F_NO_PREALLOC);

/// The programs entered by tail call (`PROGRAM_SLOT_*`): the stream programs ([`tcp`],
/// [`tls`]) for a segment with payload to a SIP-over-TCP or TLS port, and the INVITE
/// program. Each is verified apart, with a budget of its own, and starts with the
/// findings so far in the [`Packet`] (and, for the INVITE program, the parsed message in
/// the scratch).
#[map(name = "SF_PROGRAMS")]
static PROGRAMS: ProgramArray = ProgramArray::with_max_entries(PROGRAM_SLOTS, 0);

/// Per-CPU scratch: the payload prefix the parser reads.
#[map(name = "SF_SCAN")]
pub(crate) static SCAN: PerCpuArray<Scratch> = PerCpuArray::with_max_entries(1, 0);

#[xdp]
pub fn sip_filter(ctx: XdpContext) -> u32 {
    let verdict = judge(&ctx);
    if verdict & NEEDS_STREAM_PROGRAM != 0 {
        // A TLS port's segment goes straight to the TLS program, by the transport
        // `judge` left in memory (not in its answer: every byte of its frame counts),
        // without a pass through the TCP program. Two calls with a constant slot each:
        // the JIT makes them direct jumps.
        if read_back(|p| &p.transport) == TransportKind::Tls as u32 {
            enter_stream_program(&ctx, PROGRAM_SLOT_TLS);
        } else {
            enter_stream_program(&ctx, PROGRAM_SLOT_TCP);
        }
        return xdp_action::XDP_PASS;
    }
    finish(&ctx, verdict)
}

/// Everything after a `judge`: the policies its verdict asks for, then [`conclude`].
/// Shared with the TCP program, which judges the messages of a segment its own way.
#[inline(always)]
pub(crate) fn finish(ctx: &XdpContext, verdict: u64) -> u32 {
    let method = (verdict >> 32) as usize;
    // The request policy runs here, after `judge` returned, not inside it: the 512-byte
    // stack is shared along the call chain, and parsing's frames are gone by now.
    if verdict & (NEEDS_REQUEST_POLICY | NEEDS_SYN_METER) != 0 {
        // The method waits in memory: a request's and a SYN's then reach `settle` in one
        // state, and the verifier walks it once for both.
        leave_method(method as u32);
        // Each policy leaves its reason in memory, not in a register: the verifier walks
        // the routing policy once, not once for each reason the request policy can give.
        // Two calls in turn, not one inside the other: the stack is shared along the
        // call chain.
        if verdict & NEEDS_REQUEST_POLICY != 0 {
            request_policy();
            if read_back(|p| &p.needs_routing) != 0 {
                routing_policy(routing_of_request());
            }
            // An INVITE that passed meets the destination rules and call budgets in a
            // program of its own (issue 18), which then concludes; an empty slot falls
            // through to here.
            if read_back(|p| &p.reason) == Reason::PassRequest as u32
                && read_back(|p| &p.method) == Method::Invite as u32
            {
                tail_call(ctx, PROGRAM_SLOT_INVITE);
            }
            // A request that passed is noted for its answer, or dropped for a locked
            // account (issue 13).
            if read_back(|p| &p.reason) == Reason::PassRequest as u32 {
                answers_bookkeeping();
            }
        } else {
            syn_policy();
        }
        return conclude(ctx);
    }
    let reason = if verdict & NEEDS_ANSWER_METER != 0 && answer_policy() != 0 {
        // A response or keep-alive over its source's answers bucket.
        Reason::DropRateLimited
    } else {
        reason_from(verdict & 0xff)
    };
    action(reason, method)
}

/// The end of a request's or a SYN's run, with the policies' findings in the
/// [`Packet`]: the ban, or count toward one, that a policy left pending, then the
/// verdict counted and acted on.
#[inline(always)]
pub(crate) fn conclude(ctx: &XdpContext) -> u32 {
    // Made here, where the packet (ctx) is at hand to verify it first, and the parse's
    // frames are gone (see `settle`).
    if read_back(|p| &p.pending) != 0 {
        settle(ctx);
    }
    // Masked like `verdict`'s low byte: 6.1's verifier keeps a comparison's bound only on
    // a value it can see bounded.
    action(
        reason_from(u64::from(read_back(|p| &p.reason) & 0xff)),
        read_back(|p| &p.method) as usize,
    )
}

/// Counts the verdict and turns it into the XDP action.
#[inline(always)]
fn action(reason: Reason, method: usize) -> u32 {
    count(reason, method);
    // Dry-run: every verdict is counted as made, and everything passes. Asked of a drop
    // only: a pass needs no configuration.
    if reason.is_drop() && !CONFIG.get(0).is_some_and(|config| config.has(FLAG_DRY_RUN)) {
        xdp_action::XDP_DROP
    } else {
        xdp_action::XDP_PASS
    }
}

/// Tail-calls the program in `slot` of [`PROGRAMS`]. Returns only if the slot is empty
/// (the object loaded without that program).
#[inline(always)]
pub(crate) fn tail_call(ctx: &XdpContext, slot: u32) {
    // SAFETY: the context is this program's own; on success this never returns.
    let _ = unsafe { PROGRAMS.tail_call(ctx, slot) };
}

/// Tail-calls the stream program in `slot`; if it is missing, the segment is counted as
/// the source policy left it, and passes.
#[inline(always)]
pub(crate) fn enter_stream_program(ctx: &XdpContext, slot: u32) {
    tail_call(ctx, slot);
    count(Reason::PassSegment, Method::None as usize);
}

/// The one place every verdict is counted (the stream programs call it too).
#[inline(always)]
pub(crate) fn count(reason: Reason, method: usize) {
    if let Some(counters) = COUNTERS.get_ptr_mut(0) {
        // SAFETY: a per-CPU value, only touched by this CPU while the program runs.
        let counters = unsafe { &mut *counters };
        // The method comes laundered (unknown to the verifier): mask it into range
        // (Method::COUNT is a power of two).
        if let Some(row) = counters.packets.get_mut(reason as usize) {
            row[method & (Method::COUNT - 1)] += 1;
        }
        count_transport(counters, reason);
    }
}

/// Issue 14: the verdict again in its transport's row (the transport `judge` or a
/// stream program noted), which is then reset: the next packet's starts unknown.
#[inline(always)]
fn count_transport(counters: &mut Counters, reason: Reason) {
    if let Some(packet) = PACKET.get_ptr_mut(0) {
        // SAFETY: per-CPU, used by this CPU during this run only.
        let packet = unsafe { &mut *packet };
        let transport = packet.transport as usize & (TRANSPORT_SLOTS - 1);
        if let Some(cell) = counters.transports[transport].get_mut(reason as usize) {
            *cell += 1;
        }
        packet.transport = TransportKind::Other as u32;
        packet.counted = reason as u32;
    }
}

/// Notes the transport of the packet being judged, for [`count_transport`].
#[inline(always)]
pub(crate) fn leave_transport(transport: TransportKind) {
    if let Some(packet) = PACKET.get_ptr_mut(0) {
        // SAFETY: per-CPU, used by this CPU during this run only.
        unsafe { core::ptr::write_volatile(&mut (*packet).transport, transport as u32) };
    }
}

#[inline(always)]
pub fn bump(field: fn(&mut Counters) -> &mut u64) {
    if let Some(counters) = COUNTERS.get_ptr_mut(0) {
        // SAFETY: as in `count`.
        *field(unsafe { &mut *counters }) += 1;
    }
}

/// Adds one to an entry of a per-ban-reason counter array. The index is masked, not
/// compared: 6.1's verifier forgets a comparison's bound when the value is reloaded
/// from the stack.
#[inline(always)]
pub fn bump_indexed(field: fn(&mut Counters) -> &mut [u64; BAN_SLOTS], index: usize) {
    if let Some(counters) = COUNTERS.get_ptr_mut(0) {
        // SAFETY: as in `count`.
        field(unsafe { &mut *counters })[index & (BAN_SLOTS - 1)] += 1;
    }
}

/// Everything up to the request policy: headers, source lists, parsing. Not inlined, so
/// its stack is released before the request policy runs (see `sip_filter`).
#[inline(never)]
fn judge(ctx: &XdpContext) -> u64 {
    let Some(config) = CONFIG.get(0) else {
        return verdict(Reason::PassUnparsed, Method::None as usize);
    };
    // The SIP ports: any other is not ours to judge. A datagram's port is asked during
    // the walk, as soon as its header is whole (most of a server's traffic is not SIP);
    // a segment's after it, once: the two lists' check, asked inside the walk, became a
    // BPF function of its own, whose call and return cost every segment ~8 ns on a
    // machine with return-thunk mitigations.
    let udp_port = |is_tcp: bool, port: u16| is_tcp || config.is_sip_port(port);
    let udp = match parse_headers::<INGRESS>(ctx, udp_port) {
        Headers::Transport(transport) => {
            let port = transport.dst_port;
            if transport.is_tcp && !(config.is_tcp_port(port) || config.is_tls_port(port)) {
                return verdict(Reason::PassNotSip, Method::None as usize);
            }
            transport
        }
        Headers::Other => return verdict(Reason::PassNotSip, Method::None as usize),
        Headers::LaterFragment => return verdict(Reason::PassFragment, Method::None as usize),
        Headers::Unparsed => return verdict(Reason::PassUnparsed, Method::None as usize),
        Headers::Unwalkable(source) => {
            return verdict(unwalkable_verdict(config, &source), Method::None as usize)
        }
    };
    leave_transport(if !udp.is_tcp {
        TransportKind::Udp
    } else if config.is_tls_port(udp.dst_port) {
        TransportKind::Tls
    } else {
        TransportKind::Tcp
    });
    // Sources before content: a denied or banned source costs no parsing.
    let source = &udp.source;
    let trusted = is_trusted(&source);
    let key = source_key(config, &source);
    if !trusted {
        if is_denied(config, &source, &key) {
            return verdict(Reason::DropDenied, Method::None as usize);
        }
        if is_banned(&key) {
            return verdict(Reason::DropBanned, Method::None as usize);
        }
    }
    // TCP and TLS: the source policy on every segment (a ban cuts established connections
    // too: there is no conntrack before XDP), then a trusted source's segment passes. An
    // untrusted source's new connection (a SYN without ACK) is metered, by `syn_policy`;
    // its segments with payload go on to the stream programs ([`tcp`], or [`tls`] for
    // a TLS port's); anything else passes.
    if udp.is_tcp {
        let passed = verdict(Reason::PassSegment, Method::None as usize);
        if trusted {
            return passed;
        }
        let next = if udp.tcp_flags() & (TCP_SYN | TCP_ACK) == TCP_SYN {
            NEEDS_SYN_METER
        } else if udp.payload_len != 0 {
            NEEDS_STREAM_PROGRAM
        } else {
            return passed;
        };
        let Some(packet) = PACKET.get_ptr_mut(0) else {
            return passed;
        };
        // SAFETY: per-CPU, used by this CPU during this run only.
        remember(unsafe { &mut *packet }, &udp, &key, false);
        return passed | next;
    }
    // A first fragment from an untrusted source is judged only on what it shows, and
    // only if it shows a whole start line (below); under `fragments = "drop"` not at all.
    // Dropping it is enough: the kernel cannot reassemble the datagram without it.
    let untrusted_fragment = udp.first_fragment && !trusted;
    if udp.first_fragment {
        bump(|c| &mut c.first_fragments);
        if untrusted_fragment && config.has(FLAG_DROP_FRAGMENTS) {
            return verdict(Reason::DropFragment, Method::None as usize);
        }
    }
    let Some(scratch) = SCAN.get_ptr_mut(0) else {
        return verdict(Reason::PassUnparsed, Method::None as usize);
    };
    // SAFETY: per-CPU scratch, used only by this CPU during this run.
    let scratch = unsafe { &mut *scratch };

    let Some(len) = load_payload(ctx, udp.payload_offset, udp.payload_len, &mut scratch.buf) else {
        return verdict(Reason::PassUnparsed, Method::None as usize);
    };
    let whole = !udp.first_fragment && udp.payload_len <= SCAN_LEN as u32;
    // What the policies after the parse need goes to memory before it: a value live
    // across the parse would make the verifier walk the parse once for each of its
    // values.
    let Some(packet) = PACKET.get_ptr_mut(0) else {
        return verdict(Reason::PassUnparsed, Method::None as usize);
    };
    // SAFETY: per-CPU, used by this CPU during this run only.
    let packet = unsafe { &mut *packet };
    remember(packet, &udp, &key, trusted);
    packet.needs_routing = 0;

    match parse_in_place::<POLICY_HEADERS>(scratch, len, whole) {
        Kind::Sip => {}
        // Empty, CRLFs or a request line cut short: what follows is unseen, so a first
        // fragment is never a keep-alive, nor passed as not SIP: an untrusted source's is
        // dropped, a trusted one's passes as the fragment it is.
        Kind::Keepalive | Kind::NotSip if read_back(|p| &p.first_fragment) != 0 => {
            let reason = if read_back(|p| &p.trusted) != 0 {
                Reason::PassFragment
            } else {
                Reason::DropFragment
            };
            return verdict(reason, Method::None as usize);
        }
        Kind::Keepalive => {
            return verdict(Reason::PassKeepalive, Method::None as usize) | NEEDS_ANSWER_METER
        }
        Kind::NotSip => {
            // Starts like a request that a lenient server may still parse: never passed
            // unjudged (an untrusted source's; a trunk's odd payloads follow the policy).
            let reason = if read_back(|p| &p.trusted) == 0 && is_request_lookalike(len) {
                Reason::DropMalformed
            } else if config.has(FLAG_DROP_NOT_SIP_PAYLOAD) {
                Reason::DropNotSipPayload
            } else {
                Reason::PassNotSipPayload
            };
            return verdict(reason, Method::None as usize);
        }
    }
    // The message's fields are read back from scratch memory, one scalar at a time:
    // unknown to the verifier, so the policy below is verified once, not once per way
    // parsing can end.
    if !scratch.headers_complete() {
        bump(|c| &mut c.headers_truncated);
    }
    if !scratch.is_request() {
        return verdict(Reason::PassResponse, Method::None as usize) | NEEDS_ANSWER_METER;
    }
    let method = scratch.method_number();
    verdict(Reason::PassRequest, method) | NEEDS_REQUEST_POLICY
}

/// [`looks_like_request`] on the payload `judge` left in the scratch. Not inlined:
/// `judge`'s frame is on the deepest call chain (see `sip_filter`).
#[inline(never)]
fn is_request_lookalike(len: usize) -> bool {
    match SCAN.get_ptr(0) {
        // SAFETY: per-CPU scratch, used only by this CPU during this run.
        Some(scratch) => looks_like_request(unsafe { &(*scratch).buf }, len),
        None => false,
    }
}

/// A field of the per-CPU [`Packet`], read from memory (unknown to the verifier).
#[inline(always)]
pub(crate) fn read_back(field: fn(&Packet) -> &u32) -> u32 {
    match PACKET.get_ptr(0) {
        // SAFETY: per-CPU, written by `judge` earlier in this run.
        Some(packet) => unsafe { core::ptr::read_volatile(field(&*packet)) },
        None => 0,
    }
}

/// What the policies after `judge` need to know of the packet's source, stored in the
/// per-CPU [`Packet`].
#[inline(always)]
fn remember(packet: &mut Packet, transport: &Transport, key: &SourceKey, trusted: bool) {
    packet.source = transport.source.address;
    packet.key = *key;
    packet.trusted = u32::from(trusted);
    packet.first_fragment = u32::from(transport.first_fragment);
}

/// `judge`'s answer: the reason in the low byte, the method number in the high half.
#[inline(always)]
fn verdict(reason: Reason, method: usize) -> u64 {
    reason as u64 | ((method as u64) << 32)
}

/// Set in `judge`'s answer for a request: the request policy decides.
const NEEDS_REQUEST_POLICY: u64 = 1 << 16;

/// Set in `judge`'s answer for a response or a keep-alive: [`answer_policy`] meters it.
const NEEDS_ANSWER_METER: u64 = 1 << 17;

/// Set in `judge`'s answer for a new TCP connection (a SYN without ACK) to a SIP port
/// from an untrusted source: [`syn_policy`] meters it.
const NEEDS_SYN_METER: u64 = 1 << 18;

/// Set in `judge`'s answer for a segment with payload to a SIP-over-TCP or TLS port
/// that the source policy passed: the entry point tail-calls the stream program.
const NEEDS_STREAM_PROGRAM: u64 = 1 << 19;

/// Meters a new connection `judge` passed: the source's connection bucket
/// ([`CLASS_CONNECTIONS`]), then the untrusted sources' common connection budget; leaves
/// its reason in the [`Packet`]. A SYN over the source's bucket counts toward the
/// connection-overflow ban, a rule that is off unless configured: a SYN's source address
/// is unproven (no handshake has happened, and a spoofed flood naming a victim costs
/// nothing to send), so banning on SYNs could ban a victim on every transport (README,
/// "Connection rate"). When it is on, the hit is left pending and [`settle`] counts it
/// only if the TCP checksum is right, as the request path does. Runs from the entry
/// point after `judge` returned, like [`answer_policy`].
#[inline(never)]
fn syn_policy() {
    // One lookup of the `Packet` for the source and both results.
    let Some(packet) = PACKET.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: per-CPU, written by `judge` earlier in this run, used by this CPU only.
    let packet = unsafe { &mut *packet };
    let (reason, pending) = connection_verdict(packet);
    // SAFETY: as above.
    unsafe {
        core::ptr::write_volatile(&mut packet.pending, pending);
        core::ptr::write_volatile(&mut packet.reason, reason as u32);
    }
}

/// [`syn_policy`]'s verdict, and the ban action it leaves pending (`PENDING_*`).
#[inline(always)]
fn connection_verdict(packet: &Packet) -> (Reason, u32) {
    let Some(config) = CONFIG.get(0) else {
        return (Reason::PassSegment, PENDING_NONE);
    };
    // SAFETY: a helper without arguments.
    let now = unsafe { bpf_ktime_get_coarse_ns() };
    let limit = &config.limits[CLASS_CONNECTIONS & (CLASS_SLOTS - 1)];
    if limit.is_set() {
        if let Some(state) = state_of(&packet.key) {
            let arrival = &mut state.arrival_ns[CLASS_CONNECTIONS & (CLASS_SLOTS - 1)] as *mut u64;
            if !admit(arrival, limit, now) {
                count_source_drop(state, SOURCE_DROP_CONNECTION_RATE);
                drop_event(
                    state,
                    &packet.source,
                    Reason::DropConnectionRate,
                    Method::None as usize,
                    now,
                    config.has(FLAG_DRY_RUN),
                    packet.transport,
                );
                let rules = &config.bans;
                let pending =
                    if rules.connection_overflow_ns != 0 && rules.connection_overflow_hits != 0 {
                        PENDING_CONNECTION_HIT
                    } else {
                        PENDING_NONE
                    };
                return (Reason::DropConnectionRate, pending);
            }
        }
    }
    if config.untrusted_connections.is_set() {
        if let Some(arrival) = GLOBAL_CONNECTIONS.get_ptr_mut(0) {
            if !admit(arrival, &config.untrusted_connections, now) {
                if let Some(state) = state_of(&packet.key) {
                    count_source_drop(state, SOURCE_DROP_CONNECTION_BUDGET);
                }
                return (Reason::DropConnectionBudget, PENDING_NONE);
            }
        }
    }
    (Reason::PassSegment, PENDING_NONE)
}

/// Meters a response or keep-alive that `judge` passed, in its source's answers bucket
/// ([`CLASS_ANSWERS`]); trusted sources are not metered. Returns 1 when it is over the
/// bucket: counted against the source and reported like a request over its limit, but
/// never toward the rate-overflow ban (an office answers what its own server asks, and
/// a spoofed answer costs nothing to send: README, "Sizing rate limits"). Reads the
/// source from the [`Packet`] `judge` left in memory, and runs from the entry point
/// after `judge` returned: its frame is not on the parse's call chain.
#[inline(never)]
fn answer_policy() -> u32 {
    let (Some(config), Some(packet)) = (CONFIG.get(0), PACKET.get_ptr(0)) else {
        return 0;
    };
    // SAFETY: per-CPU, written by `judge` earlier in this run.
    let packet = unsafe { &*packet };
    if packet.trusted != 0 {
        return 0;
    }
    let limit = &config.limits[CLASS_ANSWERS & (CLASS_SLOTS - 1)];
    if !limit.is_set() {
        return 0;
    }
    let Some(state) = state_of(&packet.key) else {
        return 0;
    };
    // SAFETY: a helper without arguments.
    let now = unsafe { bpf_ktime_get_coarse_ns() };
    let arrival = &mut state.arrival_ns[CLASS_ANSWERS & (CLASS_SLOTS - 1)] as *mut u64;
    if admit(arrival, limit, now) {
        return 0;
    }
    count_source_drop(state, SOURCE_DROP_RATE_LIMITED);
    drop_event(
        state,
        &packet.source,
        Reason::DropRateLimited,
        Method::None as usize,
        now,
        config.has(FLAG_DRY_RUN),
        packet.transport,
    );
    1
}

/// Runs [`request_verdict`] on the message `judge` left in the scratch; leaves its
/// reason in the [`Packet`].
#[inline(never)]
fn request_policy() {
    leave_pending(PENDING_NONE);
    let (Some(config), Some(scratch)) = (CONFIG.get(0), SCAN.get_ptr_mut(0)) else {
        leave_reason(Reason::PassRequest);
        return;
    };
    // SAFETY: per-CPU scratch, used only by this CPU during this run.
    leave_reason(request_verdict(config, unsafe { &mut *scratch }));
}

/// Stores a policy's reason for the entry point to read back (see `sip_filter`).
#[inline(always)]
pub(crate) fn leave_reason(reason: Reason) {
    if let Some(packet) = PACKET.get_ptr_mut(0) {
        // SAFETY: per-CPU, used by this CPU during this run only.
        unsafe { core::ptr::write_volatile(&mut (*packet).reason, reason as u32) };
    }
}

/// Stores the request's method (`Method::None` for a SYN) while the policies run.
#[inline(always)]
fn leave_method(method: u32) {
    if let Some(packet) = PACKET.get_ptr_mut(0) {
        // SAFETY: per-CPU, used by this CPU during this run only.
        unsafe { core::ptr::write_volatile(&mut (*packet).method, method) };
    }
}

/// Stores the ban action a policy decided on, for [`settle`] to verify and make.
#[inline(always)]
fn leave_pending(action: u32) {
    if let Some(packet) = PACKET.get_ptr_mut(0) {
        // SAFETY: per-CPU, used by this CPU during this run only.
        unsafe { core::ptr::write_volatile(&mut (*packet).pending, action) };
    }
}

/// [`Packet::pending`]: nothing at stake for the source.
const PENDING_NONE: u32 = 0;
/// A scanner User-Agent: ban the source.
const PENDING_SCANNER_BAN: u32 = 1;
/// An unknown-domain request outside a dialog: one hit toward the domain ban.
const PENDING_DOMAIN_HIT: u32 = 2;
/// A request over its rate limit: one hit toward the overflow ban.
const PENDING_RATE_HIT: u32 = 3;
/// A credentialed request for a locked account: one failure toward the `auth` ban.
const PENDING_AUTH_HIT: u32 = 4;
/// A new connection over its source's connection bucket: one hit toward the
/// connection-overflow ban.
const PENDING_CONNECTION_HIT: u32 = 5;
/// A ClientHello the TLS policy dropped: one refusal toward the `tls` ban.
const PENDING_TLS_HIT: u32 = 6;

/// What the request policy (and the stream programs) need from `judge` besides the
/// parsed message.
#[repr(C)]
pub(crate) struct Packet {
    pub(crate) source: [u8; 16],
    pub(crate) key: SourceKey,
    pub(crate) trusted: u32,
    /// A first fragment: the rest of the datagram is unseen.
    first_fragment: u32,
    /// Set by the request policy for a request whose Request-URI is not ours: the
    /// routing policy ([`routing_policy`]) decides.
    needs_routing: u32,
    /// The verdict of the request policy, then of the routing policy.
    pub(crate) reason: u32,
    /// The action on the source the policies decided on (`PENDING_*`), made by
    /// [`settle`] once the packet is known to be one the kernel would accept.
    pending: u32,
    /// The method `judge` found, kept here while the policies run (see `sip_filter`).
    method: u32,
    // Issue 14: transports, and the walk over a TCP segment's messages.
    /// The packet's [`TransportKind`], for [`count_transport`] and events.
    pub(crate) transport: u32,
    /// The reason [`count`] counted last (the TCP program stops at a drop).
    counted: u32,
    /// Where the message being judged starts in the segment's payload, and how many of
    /// the segment's messages were judged before it: 0 on the TCP program's first
    /// entry for a segment, set for its tail calls to itself ([`tcp`]).
    stream_offset: u32,
    stream_messages: u32,
    /// The message's offset in the packet and the bytes from there to the payload's
    /// end, for [`tcp`]'s parse.
    stream_start: u32,
    stream_left: u32,
    /// Where the next message starts, from the message's start; 0 for none.
    stream_next: u32,
    /// The XDP action on the message just judged.
    stream_action: u32,
    /// What the TCP program's parse found (`judge`'s answer), for the policy program.
    stream_verdict: u64,
    /// The request policy's clock reading, for the policies after it in the same run
    /// ([`routing_verdict`], [`answers_bookkeeping`]): a helper call each saved.
    pub(crate) now: u64,
}

/// Per-CPU: hands `judge`'s findings to the request policy through memory, not the
/// 512-byte stack.
#[map(name = "SF_PACKET")]
pub(crate) static PACKET: PerCpuArray<Packet> = PerCpuArray::with_max_entries(1, 0);

/// The verdict on a parsed request: scanner User-Agent, then domain, then
/// [`admission`]. A request whose Request-URI is not ours is left to
/// [`routing_policy`] (`needs_routing`). Inlined into `request_policy`: every function
/// call costs (see BENCHMARKS.md, `call`).
#[inline(always)]
fn request_verdict(config: &FilterConfig, scratch: &mut Scratch) -> Reason {
    let Some(packet) = PACKET.get_ptr_mut(0) else {
        return Reason::PassRequest;
    };
    // SAFETY: per-CPU, written by `judge` just before.
    let packet = unsafe { &mut *packet };
    let trusted = packet.trusted != 0;
    // SAFETY: a helper without arguments.
    let now = unsafe { bpf_ktime_get_coarse_ns() };
    packet.now = now;

    if !trusted && is_scanner_request(config, scratch) {
        if let Some(state) = state_of(&packet.key) {
            count_source_drop(state, SOURCE_DROP_SCANNER);
        }
        if config.bans.scanner_ns != 0 {
            leave_pending(PENDING_SCANNER_BAN);
        }
        return Reason::DropScanner;
    }
    // Not SIP we pass: more User-Agents than the two judged (RFC 3261 allows one; a way
    // to hide a scanner's between two others), or more lines to examine than the
    // parse's budget (sip.rs, MAX_EXAMINED_LINES: a header section built to cost the
    // parser, or to hide a header past its budget).
    if !trusted && (scratch.agent_count() > 2 || scratch.over_line_budget()) {
        return Reason::DropMalformed;
    }
    // Trusted sources (trunks, the office) skip the domain check: a carrier addresses
    // its INVITEs to the server's IP or to its own idea of the domain.
    if !trusted && config.has(FLAG_DOMAIN_CHECK) && !host_allowed(config, scratch) {
        packet.needs_routing = 1;
        return Reason::DropUnknownDomain;
    }
    admission(config, packet, scratch.method_number(), now)
}

/// A request whose Request-URI names no host we serve, judged by its topmost Route and
/// To tag ([`routing_of`]). Routed to us by its topmost Route (RFC 3261
/// §16.4: the record-routed in-dialog requests of phones behind a proxy), it is judged
/// as if the Request-URI named us. Otherwise it is dropped, and counts toward the
/// domain ban unless it is inside a dialog (a To tag): a stale route, a proxy moved or
/// a dialog that outlived ours is no scanner's probe. Called from the entry point,
/// where the verifier's state is small, not from within the request policy: the Route's
/// parse is verified once.
#[inline(never)]
fn routing_policy(routing: u32) {
    leave_reason(routing_verdict(routing));
}

/// [`routing_policy`]'s verdict.
#[inline(always)]
fn routing_verdict(routing: u32) -> Reason {
    let (Some(config), Some(scratch), Some(packet)) =
        (CONFIG.get(0), SCAN.get_ptr_mut(0), PACKET.get_ptr(0))
    else {
        return Reason::DropUnknownDomain;
    };
    // SAFETY: per-CPU scratch and packet, used only by this CPU during this run.
    let (scratch, packet) = unsafe { (&mut *scratch, &*packet) };
    let now = packet.now;
    let method = scratch.method_number();
    if routing & ROUTING_ROUTED != 0 && host_allowed(config, scratch) {
        return admission(config, packet, method, now);
    }
    let (key, source) = (&packet.key, &packet.source);
    if let Some(state) = state_of(key) {
        let dry_run = config.has(FLAG_DRY_RUN);
        count_source_drop(state, SOURCE_DROP_UNKNOWN_DOMAIN);
        drop_event(
            state,
            source,
            Reason::DropUnknownDomain,
            method,
            now,
            dry_run,
            packet.transport,
        );
        // Pending only when the rule is on (a ban length and a threshold): what is
        // pending costs a checksum.
        let rules = &config.bans;
        if routing & ROUTING_IN_DIALOG == 0
            && rules.unknown_domain_ns != 0
            && rules.unknown_domain_hits != 0
        {
            leave_pending(PENDING_DOMAIN_HIT);
        }
    }
    Reason::DropUnknownDomain
}

/// Makes the ban, or the count toward one, that a policy left pending, if the packet is
/// one the kernel would accept (issue 19, class 4: ban poisoning). A first fragment is
/// never acted on: its checksum covers the reassembled datagram, which XDP never sees.
/// Otherwise the UDP or TCP checksum is verified ([`checksum::verify`]); a wrong one (or an
/// IPv6 checksum of 0) leaves the source alone. Either way the packet's verdict stands:
/// it was dropped for what it is. Skips are counted (`ban_skipped_*`).
///
/// Called from the entry point after the policies, with its inputs in memory: nothing
/// here runs on a request that passes, and nothing is added to `judge`, whose stack is
/// full: not even a store of the UDP header's offset into the `Packet` (tried: it grew
/// `judge`'s frame from 248 to 280 bytes, and the code it made lost a bound 6.1's
/// verifier needs in the parse). The headers are walked again instead
/// ([`checksum::verify`]).
#[inline(never)]
fn settle(ctx: &XdpContext) {
    if read_back(|p| &p.first_fragment) != 0 {
        bump(|c| &mut c.ban_skipped_fragment);
        return;
    }
    checksum::verify(ctx);
    if !checksum::verified() {
        bump(|c| &mut c.ban_skipped_bad_checksum);
        return;
    }
    act(read_back(|p| &p.pending));
}

/// Whether the unknown-domain request `judge` left in the scratch is not the one its
/// source's domain count saw last (see [`SourceState::domain_transaction`]), which it
/// then becomes. A request without Call-ID or CSeq always counts.
#[inline(always)]
fn new_domain_transaction(key: &SourceKey, seed: u64) -> bool {
    let (Some(scratch), Some(state)) = (SCAN.get_ptr(0), state_of(key)) else {
        return true;
    };
    // SAFETY: per-CPU scratch, written by this run's parse.
    let id = transaction_of(unsafe { &*scratch }, seed);
    if id != 0 && state.domain_transaction == id {
        return false;
    }
    state.domain_transaction = id;
    true
}

/// The pending action (`PENDING_*`) on a verified packet's source.
#[inline(always)]
fn act(pending: u32) {
    let (Some(config), Some(packet)) = (CONFIG.get(0), PACKET.get_ptr(0)) else {
        return;
    };
    // SAFETY: per-CPU, written by `judge` earlier in this run.
    let packet = unsafe { &*packet };
    let (key, source) = (&packet.key, &packet.source);
    let rules = &config.bans;
    // SAFETY: a helper without arguments.
    let now = unsafe { bpf_ktime_get_coarse_ns() };
    // One more strike in the source's window for a rule: true when it reaches the rule's
    // threshold.
    let strike = |window: fn(&mut SourceState) -> (&mut u64, &mut u32), window_ns, hits| {
        state_of(key).is_some_and(|state| {
            let (start, count) = window(state);
            hit(start, count, now, window_ns, hits)
        })
    };
    let auth_rules = &config.auth;
    let (reason, duration_ns) = match pending {
        PENDING_SCANNER_BAN => (BanReason::Scanner, rules.scanner_ns),
        PENDING_DOMAIN_HIT
            if new_domain_transaction(key, config.domain_seed)
                && strike(
                    |s| (&mut s.domain_window_ns, &mut s.domain_hits),
                    rules.unknown_domain_window_ns,
                    rules.unknown_domain_hits,
                ) =>
        {
            (BanReason::Domain, rules.unknown_domain_ns)
        }
        PENDING_RATE_HIT
            if strike(
                |s| (&mut s.overflow_window_ns, &mut s.overflow_hits),
                rules.rate_overflow_window_ns,
                rules.rate_overflow_hits,
            ) =>
        {
            (BanReason::Rate, rules.rate_overflow_ns)
        }
        // A registered source is never banned for what one of its accounts did.
        PENDING_AUTH_HIT
            if !auth::is_registered(key, now)
                && strike(
                    |s| (&mut s.auth_window_ns, &mut s.auth_failures),
                    auth_rules.ban_window_ns,
                    auth_rules.ban_failures,
                ) =>
        {
            (BanReason::Auth, auth_rules.ban_ns)
        }
        PENDING_CONNECTION_HIT
            if strike(
                |s| (&mut s.connection_window_ns, &mut s.connection_hits),
                rules.connection_overflow_window_ns,
                rules.connection_overflow_hits,
            ) =>
        {
            (BanReason::Connections, rules.connection_overflow_ns)
        }
        // Refused handshakes (issue 14, item 4); a registered source is never banned
        // for what one of its phones' TLS stacks does.
        PENDING_TLS_HIT
            if !auth::is_registered(key, now)
                && strike(
                    |s| (&mut s.tls_window_ns, &mut s.tls_refusals),
                    config.tls.refused_window_ns,
                    config.tls.refused_hits,
                ) =>
        {
            (BanReason::Tls, config.tls.refused_ns)
        }
        _ => return,
    };
    ban(key, source, reason, packet.transport, duration_ns);
}

/// Notes a request that passed, for the egress program to pair with its answer
/// ([`auth`]); or, for a credentialed request naming an account locked for its source,
/// turns the verdict into `drop_auth_lockout` and leaves one failure toward the
/// source's `auth` ban pending (made by [`settle`] once the packet is verified).
/// Trusted sources are not noted: nothing they do locks or bans. Called from the entry
/// point, after the request policy's frames are gone.
#[inline(never)]
pub(crate) fn answers_bookkeeping() {
    let (Some(config), Some(scratch), Some(packet)) =
        (CONFIG.get(0), SCAN.get_ptr(0), PACKET.get_ptr(0))
    else {
        return;
    };
    // SAFETY: per-CPU, written by `judge` earlier in this run.
    let (scratch, packet) = unsafe { (&*scratch, &*packet) };
    let method = scratch.method_number();
    if !config.has(FLAG_ANSWERS) || packet.trusted != 0 || method == Method::Ack as usize {
        return; // an ACK is never answered
    }
    let buf = &scratch.buf;
    let id = transaction_of(scratch, config.domain_seed);
    if id == 0 {
        answers::bump_answers(|c| &mut c.requests_unpairable);
        return;
    }
    // Credentials the scan could not reach (a header section longer than the scanned
    // prefix) count as credentials: a guesser cannot hide them to have its failures
    // taken for challenges.
    let credentials = value_of(buf, scratch.header(Header::Credentials));
    let credentialed = credentials.is_present() || !scratch.headers_complete();
    let named = if credentials.is_present() {
        digest_username(buf, credentials)
    } else {
        uri_user(buf, value_of(buf, scratch.header(Header::To)))
    };
    let (name, name_len) = Account::name_of(buf, named);
    let now = packet.now;
    // The account's key (a hash) is made only while some lockout may hold.
    if credentialed && name_len != 0 && auth::locks_live(now) {
        let account = Account::from_name(name, name_len, config.domain_seed);
        let registered = auth::is_registered(&packet.key, now);
        if auth::is_locked_out(&packet.key, account.key, registered, now) {
            leave_reason(Reason::DropAuthLockout);
            let rules = &config.auth;
            if rules.ban_failures != 0 && rules.ban_ns != 0 && !registered {
                leave_pending(PENDING_AUTH_HIT);
            }
            return;
        }
    }
    let flags = if credentialed {
        TRANSACTION_CREDENTIALED
    } else {
        0
    };
    let noted = Transaction::new(name, name_len, flags, method as u32);
    if let Some(displaced) = auth::note(&packet.key, id, &noted) {
        answers::bump_answers(|c| &mut c.requests_noted);
        if displaced {
            answers::bump_answers(|c| &mut c.requests_displaced);
        }
    }
}

/// [`routing_of`] the request `judge` left in the scratch: `ROUTING_*` bits.
#[inline(never)]
fn routing_of_request() -> u32 {
    let Some(scratch) = SCAN.get_ptr_mut(0) else {
        return 0;
    };
    // SAFETY: per-CPU scratch, used only by this CPU during this run.
    routing_of(unsafe { &mut *scratch })
}

/// A request that passed the content checks: the source's bucket for the request's
/// class, then the untrusted sources' common budget.
#[inline(always)]
fn admission(config: &FilterConfig, packet: &Packet, method: usize, now: u64) -> Reason {
    let (key, source, trusted) = (&packet.key, &packet.source, packet.trusted != 0);
    let dry_run = config.has(FLAG_DRY_RUN);
    // Registered sources (issue 13) have a class of their own and skip the untrusted
    // budget; in strict mode, only they and trusted ones may send the chosen methods.
    let registered = !trusted && config.has(FLAG_ANSWERS) && auth::is_registered(key, now);
    if !trusted && !registered && config.auth.strict_methods & (1 << (method & 31)) != 0 {
        return Reason::DropUnregistered;
    }
    let class = if trusted {
        CLASS_TRUSTED
    } else if registered {
        CLASS_REGISTERED
    } else if method == Method::Register as usize {
        CLASS_REGISTER
    } else if method == Method::Invite as usize {
        CLASS_INVITE
    } else {
        CLASS_OTHER
    };
    let limit = &config.limits[class & (CLASS_SLOTS - 1)];
    if limit.is_set() {
        if let Some(state) = state_of(key) {
            let arrival = &mut state.arrival_ns[class & (CLASS_SLOTS - 1)] as *mut u64;
            if !admit(arrival, limit, now) {
                if !trusted {
                    count_source_drop(state, SOURCE_DROP_RATE_LIMITED);
                    drop_event(
                        state,
                        &source,
                        Reason::DropRateLimited,
                        method,
                        now,
                        dry_run,
                        packet.transport,
                    );
                    let rules = &config.bans;
                    if rules.rate_overflow_ns != 0 && rules.rate_overflow_hits != 0 {
                        leave_pending(PENDING_RATE_HIT);
                    }
                }
                return Reason::DropRateLimited;
            }
        }
    }
    if !trusted && !registered && config.untrusted_total.is_set() {
        if let Some(arrival) = GLOBAL_BUDGET.get_ptr_mut(0) {
            if !admit(arrival, &config.untrusted_total, now) {
                if let Some(state) = state_of(key) {
                    count_source_drop(state, SOURCE_DROP_GLOBAL_BUDGET);
                }
                return Reason::DropGlobalBudget;
            }
        }
    }
    Reason::PassRequest
}

/// Is the request's User-Agent a scanner's (`sip_filter_common::scanner`)? Of several,
/// the first and the last are judged, in a loop of two steps: verified once.
#[inline(always)]
fn is_scanner_request(config: &FilterConfig, scratch: &mut Scratch) -> bool {
    let agents = if scratch.agent_count() > 1 { 2 } else { 1 };
    let (seed, lengths) = (config.domain_seed, &config.scanner_lengths);
    let (first, last) = (scratch.header(Header::UserAgent), scratch.repeated_agent());
    let Scratch {
        buf, agent: state, ..
    } = scratch;
    let found = buf.search(agents, 0, |i| {
        let agent = value_of(buf, if i == 0 { first } else { last });
        let scanner = agent.is_present()
            && is_scanner(buf, state, agent, seed, lengths, |hash| {
                // SAFETY: a value of a map that userspace only ever writes whole.
                SCANNER_AGENTS.get_ptr(&hash).map(|kind| unsafe { *kind })
            });
        scanner.then_some(1)
    });
    found != 0
}

/// A reason from its number (as `judge` and the request policy hand them over).
#[inline(always)]
fn reason_from(n: u64) -> Reason {
    Reason::from_number(n).unwrap_or(Reason::PassUnparsed)
}

fn ipv4_of(source: &[u8; 16]) -> [u8; 4] {
    [source[12], source[13], source[14], source[15]]
}

/// The key of a source's bans and state: its IPv4 address, or its IPv6 prefix.
#[inline(always)]
pub(crate) fn source_key(config: &FilterConfig, source: &Source) -> SourceKey {
    if source.is_ipv4 {
        source.address
    } else {
        config.ipv6_source_key(source.address)
    }
}

/// A packet whose transport header cannot be reached: the source policy, then a drop.
/// Its destination port is unknown, so it may be SIP; the kernel drops most such
/// packets itself (a UDP header cut short or lying), and no real stack sends more
/// IPv6 extension headers than the walk takes. Trusted sources keep their pass.
#[inline(never)]
fn unwalkable_verdict(config: &FilterConfig, source: &Source) -> Reason {
    if is_trusted(source) {
        return Reason::PassUnparsed;
    }
    let key = source_key(config, source);
    if is_denied(config, source, &key) {
        return Reason::DropDenied;
    }
    if is_banned(&key) {
        return Reason::DropBanned;
    }
    Reason::DropHeaderChain
}

/// On the allow list: trusted, never banned.
#[inline(always)]
fn is_trusted(source: &Source) -> bool {
    let entry = if source.is_ipv4 {
        ALLOW_V4.get(Key::new(32, ipv4_of(&source.address)))
    } else {
        ALLOW_V6.get(Key::new(128, source.address))
    };
    is_live(entry)
}

/// On the deny list (a live entry); counts the drop in the entry (for `sip-filter top`).
/// A registered source is not dropped by its country's entry (README, "Source
/// countries"); every other entry drops it.
#[inline(always)]
fn is_denied(config: &FilterConfig, source: &Source, key: &SourceKey) -> bool {
    let entry = if source.is_ipv4 {
        list_entry_mut(&DENY_V4, &Key::new(32, ipv4_of(&source.address)))
    } else {
        list_entry_mut(&DENY_V6, &Key::new(128, source.address))
    };
    let Some(entry) = entry else {
        return false;
    };
    // SAFETY: a map value from the lookup helper; races cost a count at worst.
    let entry = unsafe { &mut *entry };
    if !is_live(Some(entry)) {
        return false;
    }
    if entry.origin == LIST_ORIGIN_COUNTRY && is_registered_source(config, key) {
        return false;
    }
    // A plain add, not an atomic one: see `ListEntry::drops`.
    entry.drops = entry.drops.wrapping_add(1);
    true
}

/// Registered now, as the request policy sees it. Out of line: only a country entry's
/// match pays for it, and `judge`'s frame stays as it is.
#[inline(never)]
fn is_registered_source(config: &FilterConfig, key: &SourceKey) -> bool {
    // SAFETY: a helper without arguments.
    config.has(FLAG_ANSWERS) && auth::is_registered(key, unsafe { bpf_ktime_get_coarse_ns() })
}

/// A writable pointer to the trie entry matching `key` (aya's `LpmTrie::get` hands out
/// only shared references).
#[inline(always)]
fn list_entry_mut<K>(trie: &LpmTrie<K, ListEntry>, key: &Key<K>) -> Option<*mut ListEntry> {
    // SAFETY: the map's address is its definition (`LpmTrie` is a transparent wrapper),
    // which is what the lookup helper takes; the key has the map's key layout.
    let found = unsafe {
        bpf_map_lookup_elem(
            trie as *const LpmTrie<K, ListEntry> as *mut core::ffi::c_void,
            key as *const Key<K> as *const core::ffi::c_void,
        )
    };
    (!found.is_null()).then_some(found.cast())
}

/// A list entry that matched and has not expired (operator entries may carry a TTL).
#[inline(always)]
fn is_live(entry: Option<&ListEntry>) -> bool {
    match entry {
        // SAFETY: a helper without arguments.
        Some(entry) => entry.is_live(unsafe { bpf_ktime_get_coarse_ns() }),
        None => false,
    }
}

/// On the dynamic blocklist, unexpired. An expired entry is removed here, so it stops
/// matching without help from userspace.
#[inline(always)]
fn is_banned(key: &SourceKey) -> bool {
    let Some(ban) = BANS.get_ptr_mut(key) else {
        return false;
    };
    // SAFETY: a map value; a concurrent update at worst gives a stale verdict.
    let (expires_ns, reason) = unsafe { ((*ban).expires_ns, (*ban).reason) };
    // SAFETY: a helper without arguments.
    let now = unsafe { bpf_ktime_get_coarse_ns() };
    if now < expires_ns {
        // SAFETY: as above; the field is 8-byte aligned in a hash map value.
        count_atomically(unsafe { &mut (*ban).drops } as *mut u64);
        return true;
    }
    // Only the CPU whose delete succeeds counts the expiry.
    if BANS.remove(key).is_ok() {
        bump_indexed(|c| &mut c.bans_expired, reason as usize);
    }
    false
}

/// Is the Request-URI's host one the server serves?
#[inline(always)]
fn host_allowed(config: &FilterConfig, scratch: &mut Scratch) -> bool {
    const NONE: usize = HostKind::None as usize;
    const IPV4: usize = HostKind::Ipv4 as usize;
    const IPV6: usize = HostKind::Ipv6 as usize;
    match scratch.host_kind_number() {
        NONE => config.has(FLAG_ALLOW_HOSTLESS_URI),
        IPV4 | IPV6 => OWN_ADDRESSES.get_ptr(scratch.address()).is_some(),
        _ => {
            let host = scratch.host();
            name_listed(
                scratch,
                host,
                config.domain_seed,
                DOMAIN_EXACT,
                DOMAIN_WILDCARD,
            )
        }
    }
}

/// Is the host name at `host` in the scratch buffer on the [`DOMAINS`] list whose
/// entries carry the `exact` or `wildcard` flag (the served domains, or the TLS server
/// names)?
#[inline(always)]
fn name_listed(scratch: &mut Scratch, host: Span, seed: u64, exact: u8, wildcard: u8) -> bool {
    let full = host_hashes(&scratch.buf, &mut scratch.hash, host, seed);
    if domain_flags(full) & exact != 0 {
        return true;
    }
    let hashes = &scratch.hash;
    let found = scratch.buf.search(MAX_SUFFIXES as u32, 0, |i| {
        if i >= hashes.suffix_count() {
            return Some(0);
        }
        (domain_flags(hashes.suffix(i)) & wildcard != 0).then_some(1)
    });
    found != 0
}

#[inline(always)]
fn domain_flags(key: u64) -> u8 {
    match DOMAINS.get_ptr(key) {
        // SAFETY: a value of a map that userspace only ever writes whole.
        Some(flags) => unsafe { *flags },
        None => 0,
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
