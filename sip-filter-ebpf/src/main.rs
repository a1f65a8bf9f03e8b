//! The sip-filter XDP program: parses Ethernet (with up to two VLAN tags), IPv4/IPv6
//! and UDP, hands SIP payloads to the shared parser, applies the policy, and counts
//! every verdict once, by reason and method.
#![no_std]
#![no_main]

mod headers;

use aya_ebpf::{
    bindings::xdp_action,
    bindings::BPF_F_NO_PREALLOC,
    helpers::generated::{bpf_ktime_get_coarse_ns, bpf_xdp_load_bytes},
    macros::{map, xdp},
    maps::{lpm_trie::Key, Array, HashMap, LpmTrie, PerCpuArray},
    programs::XdpContext,
};
use headers::{parse_headers, Headers, Udp};
use sip_filter_common::{
    bounded::isolated,
    domain::{host_hashes, DOMAIN_EXACT, DOMAIN_WILDCARD, MAX_SUFFIXES},
    maps::{
        Ban, SourceKey, FLAG_ALLOW_HOSTLESS_URI, FLAG_DOMAIN_CHECK,
        FLAG_DROP_NOT_SIP_PAYLOAD, MAX_BANS, MAX_DOMAINS, MAX_LIST_ENTRIES, MAX_OWN_ADDRESSES,
    },
    parse,
    scan::BUF_BYTES,
    Counters, FilterConfig, HostKind, Method, Payload, Reason, Scratch, Span, SCAN_LEN,
};

#[map(name = "SF_CONFIG")]
static CONFIG: Array<FilterConfig> = Array::with_max_entries(1, 0);

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
static ALLOW_V4: LpmTrie<[u8; 4], u8> = LpmTrie::with_max_entries(MAX_LIST_ENTRIES, BPF_F_NO_PREALLOC);
#[map(name = "SF_ALLOW_V6")]
static ALLOW_V6: LpmTrie<[u8; 16], u8> = LpmTrie::with_max_entries(MAX_LIST_ENTRIES, BPF_F_NO_PREALLOC);
#[map(name = "SF_DENY_V4")]
static DENY_V4: LpmTrie<[u8; 4], u8> = LpmTrie::with_max_entries(MAX_LIST_ENTRIES, BPF_F_NO_PREALLOC);
#[map(name = "SF_DENY_V6")]
static DENY_V6: LpmTrie<[u8; 16], u8> = LpmTrie::with_max_entries(MAX_LIST_ENTRIES, BPF_F_NO_PREALLOC);

/// The dynamic blocklist: source key -> expiry and reason.
#[map(name = "SF_BANS")]
static BANS: HashMap<SourceKey, Ban> = HashMap::with_max_entries(MAX_BANS, BPF_F_NO_PREALLOC);

/// Per-CPU scratch: the payload prefix the parser reads.
#[map(name = "SF_SCAN")]
static SCAN: PerCpuArray<Scratch> = PerCpuArray::with_max_entries(1, 0);

#[xdp]
pub fn sip_filter(ctx: XdpContext) -> u32 {
    let (reason, method) = judge(&ctx);
    count(reason, method);
    if reason.is_drop() {
        xdp_action::XDP_DROP
    } else {
        xdp_action::XDP_PASS
    }
}

/// The one place every verdict is counted.
#[inline(always)]
fn count(reason: Reason, method: usize) {
    if let Some(counters) = COUNTERS.get_ptr_mut(0) {
        // SAFETY: a per-CPU value, only touched by this CPU while the program runs.
        let counters = unsafe { &mut *counters };
        // The method comes laundered (unknown to the verifier): mask it into range
        // (Method::COUNT is a power of two).
        if let Some(row) = counters.packets.get_mut(reason as usize) {
            row[method & (Method::COUNT - 1)] += 1;
        }
    }
}

#[inline(always)]
fn bump(field: fn(&mut Counters) -> &mut u64) {
    if let Some(counters) = COUNTERS.get_ptr_mut(0) {
        // SAFETY: as in `count`.
        *field(unsafe { &mut *counters }) += 1;
    }
}

#[inline(always)]
#[allow(unexpected_cfgs)] // sip_filter_verifier_regression_6_1, set through build.rs
fn judge(ctx: &XdpContext) -> (Reason, usize) {
    let Some(config) = CONFIG.get(0) else {
        return (Reason::PassUnparsed, Method::None as usize);
    };
    let udp = match parse_headers(ctx) {
        Headers::Udp(udp) => udp,
        Headers::NotUdp => return (Reason::PassNotSip, Method::None as usize),
        Headers::LaterFragment => return (Reason::PassFragment, Method::None as usize),
        Headers::Unparsed => return (Reason::PassUnparsed, Method::None as usize),
    };
    if !config.is_sip_port(udp.dst_port) {
        return (Reason::PassNotSip, Method::None as usize);
    }
    // Sources before content: a denied or banned source costs no parsing.
    if !is_trusted(&udp) {
        if is_denied(&udp) {
            return (Reason::DropDenied, Method::None as usize);
        }
        if is_banned(config, &udp) {
            return (Reason::DropBanned, Method::None as usize);
        }
    }
    if udp.first_fragment {
        bump(|c| &mut c.first_fragments);
    }
    let Some(scratch) = SCAN.get_ptr_mut(0) else {
        return (Reason::PassUnparsed, Method::None as usize);
    };
    // SAFETY: per-CPU scratch, used only by this CPU during this run.
    let scratch = unsafe { &mut *scratch };

    let len = if udp.payload_len > SCAN_LEN as u32 {
        SCAN_LEN as u32
    } else {
        udp.payload_len
    };
    if len > 0 {
        // Written so that 6.1's verifier also sees 1..=BUF_BYTES (it learns no lower
        // bound from a `!= 0` branch). Laundered first: knowing `len` is 1..=SCAN_LEN,
        // LLVM would fold the mask away and pass `len` itself, unbounded below on 6.1.
        let unknown_len = scratch.buf.launder(len as usize) as u32;
        #[cfg(not(sip_filter_verifier_regression_6_1))]
        let load_len = (unknown_len.wrapping_sub(1) & (BUF_BYTES as u32 - 1)) + 1;
        // The form 6.1 refuses (6.18 accepts it), built only by
        // `cargo xtask vm-test --expect-verifier-failure` to show that test catches it.
        #[cfg(sip_filter_verifier_regression_6_1)]
        let load_len = unknown_len & (BUF_BYTES as u32 - 1);
        #[cfg(sip_filter_verifier_regression_6_1)]
        if load_len == 0 {
            return (Reason::PassUnparsed, Method::None as usize);
        }
        // SAFETY: `buf` is BUF_BYTES long and `load_len` at most that.
        let loaded = unsafe {
            bpf_xdp_load_bytes(
                ctx.ctx,
                udp.payload_offset,
                scratch.buf.words.as_mut_ptr().cast(),
                load_len,
            )
        };
        if loaded != 0 {
            return (Reason::PassUnparsed, Method::None as usize);
        }
    }
    scratch.buf.terminate(len as usize);
    let whole = !udp.first_fragment && udp.payload_len <= SCAN_LEN as u32;

    let message = match parse(scratch, len as usize, whole) {
        Payload::Sip(message) => message,
        Payload::Keepalive => return (Reason::PassKeepalive, Method::None as usize),
        Payload::NotSip => {
            let reason = if config.has(FLAG_DROP_NOT_SIP_PAYLOAD) {
                Reason::DropNotSipPayload
            } else {
                Reason::PassNotSipPayload
            };
            return (reason, Method::None as usize);
        }
    };
    if !message.headers_complete {
        bump(|c| &mut c.headers_truncated);
    }
    if !message.is_request() {
        return (Reason::PassResponse, Method::None as usize);
    }
    let (method, uri) = (message.method, message.uri);
    // Parsing ends on many paths, each knowing these values differently; laundered,
    // the policy below is verified once (see ScanBuf::launder).
    let buf = &scratch.buf;
    let method = buf.launder(method as usize);
    let host = Span::new(buf.launder(uri.host.start()), buf.launder(uri.host.end()));
    let host_kind = buf.launder(uri.host_kind as usize);
    if config.has(FLAG_DOMAIN_CHECK) {
        // A loop body of its own, verified once (see sip_filter_common::bounded).
        let address = uri.address;
        isolated(&mut |_| {
            let allowed = host_allowed(config, scratch, host_kind, host, &address);
            scratch.result.set(u64::from(allowed));
            false
        });
        if scratch.result.get() == 0 {
            return (Reason::DropUnknownDomain, method);
        }
    }
    (Reason::PassRequest, method)
}

fn ipv4_of(source: &[u8; 16]) -> [u8; 4] {
    [source[12], source[13], source[14], source[15]]
}

/// On the allow list: trusted, never banned.
#[inline(always)]
fn is_trusted(udp: &Udp) -> bool {
    if udp.is_ipv4 {
        ALLOW_V4.get(Key::new(32, ipv4_of(&udp.source))).is_some()
    } else {
        ALLOW_V6.get(Key::new(128, udp.source)).is_some()
    }
}

#[inline(always)]
fn is_denied(udp: &Udp) -> bool {
    if udp.is_ipv4 {
        DENY_V4.get(Key::new(32, ipv4_of(&udp.source))).is_some()
    } else {
        DENY_V6.get(Key::new(128, udp.source)).is_some()
    }
}

/// On the dynamic blocklist, unexpired. An expired entry is removed here, so it stops
/// matching without help from userspace.
#[inline(always)]
fn is_banned(config: &FilterConfig, udp: &Udp) -> bool {
    let key = if udp.is_ipv4 {
        udp.source
    } else {
        config.ipv6_source_key(udp.source)
    };
    let Some(ban) = BANS.get_ptr(&key) else {
        return false;
    };
    // SAFETY: a map value; a concurrent update at worst gives a stale verdict.
    let (expires_ns, reason) = unsafe { ((*ban).expires_ns, (*ban).reason) };
    // SAFETY: a helper without arguments.
    let now = unsafe { bpf_ktime_get_coarse_ns() };
    if now < expires_ns {
        return true;
    }
    // Only the CPU whose delete succeeds counts the expiry.
    if BANS.remove(&key).is_ok() {
        if let Some(counters) = COUNTERS.get_ptr_mut(0) {
            // SAFETY: per-CPU, as in `count`.
            let expired = unsafe { &mut (*counters).bans_expired };
            // A checked index: the verifier cannot bound a remainder.
            if let Some(slot) = expired.get_mut(reason as usize) {
                *slot += 1;
            }
        }
    }
    false
}

/// Is the Request-URI's host one the server serves?
#[inline(always)]
fn host_allowed(
    config: &FilterConfig,
    scratch: &mut Scratch,
    host_kind: usize,
    host: Span,
    address: &[u8; 16],
) -> bool {
    const NONE: usize = HostKind::None as usize;
    const IPV4: usize = HostKind::Ipv4 as usize;
    const IPV6: usize = HostKind::Ipv6 as usize;
    match host_kind {
        NONE => config.has(FLAG_ALLOW_HOSTLESS_URI),
        IPV4 | IPV6 => OWN_ADDRESSES.get_ptr(address).is_some(),
        _ => {
            let full = host_hashes(&scratch.buf, &mut scratch.hash, host, config.domain_seed);
            if domain_flags(full) & DOMAIN_EXACT != 0 {
                return true;
            }
            let hashes = &scratch.hash;
            let found = scratch.buf.search(MAX_SUFFIXES as u32, 0, |i| {
                if i >= hashes.suffix_count() {
                    return Some(0);
                }
                (domain_flags(hashes.suffix(i)) & DOMAIN_WILDCARD != 0).then_some(1)
            });
            found != 0
        }
    }
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
