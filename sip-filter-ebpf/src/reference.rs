//! Reference programs for the benchmark (`cargo xtask bench`), measured beside
//! `sip_filter` on the same frames: what any XDP program costs, what reading the
//! Ethernet/IP/UDP headers costs, what one per-source map update and a counter add to
//! that, what copying the payload and passing over every byte of it costs, and what a
//! call costs (`ref_calls`). In the
//! same object so they are built alike; the daemon never loads or attaches them
//! (`Filter::load` loads `sip_filter` only).

use aya_ebpf::{
    bindings::{xdp_action, TC_ACT_OK},
    macros::{classifier, map, xdp},
    maps::{LruHashMap, PerCpuArray},
    programs::{TcContext, XdpContext},
};
use sip_filter_common::{
    bounded::{repeat, REF_CALLS},
    maps::{SourceKey, MAX_SOURCES},
    scan::{bytes_equal, Vol, BUF_WORDS, ONES},
    ScanBuf, SCAN_LEN,
};

use crate::{
    headers::{parse_headers, Headers, Transport, INGRESS},
    payload::load_payload,
};

const SIP_PORT: u16 = 5060;

/// A bare TC classifier that lets everything through: the floor of BPF_PROG_TEST_RUN's
/// per-repeat cost for the egress program (an skb is built for each run).
#[classifier]
pub fn ref_tc_pass(_ctx: TcContext) -> i32 {
    TC_ACT_OK
}

/// A bare XDP_DROP: the floor of BPF_PROG_TEST_RUN's per-repeat cost.
#[xdp]
pub fn ref_drop(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_DROP
}

/// The real program's header parsing and nothing else. The verdict depends on the
/// parse (drop UDP to port 5060, pass the rest), so it cannot be optimized away.
#[xdp]
pub fn ref_parse_headers(ctx: XdpContext) -> u32 {
    verdict_on(sip_datagram(&ctx).is_some())
}

/// The frame's UDP header, if it goes to the SIP port: where every reference but the
/// bare drop starts, as the real program does.
#[inline(always)]
fn sip_datagram(ctx: &XdpContext) -> Option<Transport> {
    let sip_port = |is_tcp: bool, port: u16| !is_tcp && port == SIP_PORT;
    let Headers::Transport(udp) = parse_headers::<INGRESS>(ctx, sip_port) else {
        return None;
    };
    Some(udp)
}

/// XDP_DROP when `done`, else XDP_PASS: a verdict that depends on the work measured,
/// so that it cannot be optimized away.
#[inline(always)]
fn verdict_on(done: bool) -> u32 {
    if done {
        xdp_action::XDP_DROP
    } else {
        xdp_action::XDP_PASS
    }
}

/// How many bytes of `word` are line feeds: the flags' high bits summed by one multiply
/// (BPF has no popcount).
#[inline(always)]
fn newlines_in(word: u64) -> u64 {
    ((bytes_equal(word, b'\n') >> 7).wrapping_mul(ONES)) >> 56
}

/// Packets per source, in an LRU map as large as the real one's (`SF_SOURCES`).
#[map(name = "REF_SOURCES")]
static REF_SOURCES: LruHashMap<SourceKey, u64> = LruHashMap::with_max_entries(MAX_SOURCES, 0);

#[map(name = "REF_COUNTER")]
static REF_COUNTER: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// Header parsing, then what the least stateful filter does for a packet to the SIP
/// port: one per-source LRU lookup and update (an insert for a new source) and one
/// per-CPU counter.
#[xdp]
pub fn ref_parse_update(ctx: XdpContext) -> u32 {
    let Some(udp) = sip_datagram(&ctx) else {
        return xdp_action::XDP_PASS;
    };
    match REF_SOURCES.get_ptr_mut(&udp.source.address) {
        // SAFETY: a map value; a race with another CPU costs a count, nothing else.
        Some(seen) => unsafe { *seen += 1 },
        None => {
            let _ = REF_SOURCES.insert(&udp.source.address, &1, 0);
        }
    }
    if let Some(counter) = REF_COUNTER.get_ptr_mut(0) {
        // SAFETY: per-CPU, only this CPU touches it while the program runs.
        unsafe { *counter += 1 };
    }
    xdp_action::XDP_DROP
}

/// The scan reference's per-CPU memory: the payload copy and the loop's state (in map
/// memory, like the parser's, so the verifier checks the loop body once).
#[repr(C)]
pub struct RefScan {
    buf: ScanBuf,
    len: Vol<u64>,
    newlines: Vol<u64>,
}

#[map(name = "REF_SCAN")]
static REF_SCAN: PerCpuArray<RefScan> = PerCpuArray::with_max_entries(1, 0);

/// Words per loop call, as the parser's line finder takes them.
const SCAN_WORDS_PER_STEP: usize = 8;

/// Header parsing, then the same copy of the payload the real program makes
/// (`bpf_xdp_load_bytes` of up to `SCAN_LEN` bytes into a per-CPU buffer) and one
/// pass over every copied byte, a word at a time in `bpf_loop` like the parser's first
/// pass, counting line feeds: the floor of any filter that reads the whole payload.
#[xdp]
pub fn ref_scan(ctx: XdpContext) -> u32 {
    let Some(udp) = sip_datagram(&ctx) else {
        return xdp_action::XDP_PASS;
    };
    let Some(scan) = REF_SCAN.get_ptr_mut(0) else {
        return xdp_action::XDP_PASS;
    };
    // SAFETY: per-CPU, used only by this CPU during this run.
    let scan = unsafe { &mut *scan };
    // The same copy as the real program's.
    let len = match load_payload(&ctx, udp.payload_offset, udp.payload_len, &mut scan.buf) {
        Some(len) if len > 0 => len,
        _ => return xdp_action::XDP_PASS,
    };
    scan.len.set(len as u64);
    scan.newlines.set(0);
    let RefScan { buf, len, newlines } = scan;
    repeat(
        (BUF_WORDS / SCAN_WORDS_PER_STEP) as u32,
        &mut |step: u32| {
            let len = len.get() as usize;
            for w in 0..SCAN_WORDS_PER_STEP {
                let k = step as usize * SCAN_WORDS_PER_STEP + w;
                if k * 8 >= len {
                    return false;
                }
                newlines.set(newlines.get() + newlines_in(buf.word(k)));
            }
            true
        },
    );
    verdict_on(newlines.get() > 0)
}

/// Payload words [`ref_scan_in_place`] passes over at most: as many as `ref_scan` copies.
const IN_PLACE_WORDS: usize = SCAN_LEN / 8;
/// Frame offsets a payload can start at and still be read in place (masked, so the
/// verifier knows the pointer's range; a deeper payload is not scanned).
const IN_PLACE_OFFSET_MASK: u32 = 0x3ff;

/// Header parsing, then the same pass as `ref_scan` (line feeds counted a word at a
/// time) over the payload where it lies in the frame: no copy, no `bpf_loop`, so no
/// call, a plain bounded loop. The floor of a filter that reads its packet in place;
/// beside `ref_scan`, what the copy and the loop's calls cost. (Words wholly inside the
/// frame's linear part only: enough for a reference.)
#[xdp]
pub fn ref_scan_in_place(ctx: XdpContext) -> u32 {
    let Some(udp) = sip_datagram(&ctx) else {
        return xdp_action::XDP_PASS;
    };
    let offset = udp.payload_offset & IN_PLACE_OFFSET_MASK;
    if offset != udp.payload_offset {
        return xdp_action::XDP_PASS;
    }
    let (payload, end) = (ctx.data() + offset as usize, ctx.data_end());
    let mut newlines = 0u64;
    for k in 0..IN_PLACE_WORDS {
        let word = payload + k * 8;
        if word + 8 > end {
            break;
        }
        // SAFETY: the 8 bytes at `word` lie before `data_end` (checked just above, and
        // by the verifier again).
        let word = unsafe { core::ptr::read_unaligned(word as *const u64) };
        newlines += newlines_in(word);
    }
    verdict_on(newlines > 0)
}

#[map(name = "REF_CALL_COUNT")]
static REF_CALL_COUNT: PerCpuArray<Vol<u64>> = PerCpuArray::with_max_entries(1, 0);

/// Header parsing, then [`REF_CALLS`] `bpf_loop` steps that each add one to a per-CPU
/// count: what a call and its return cost (each loop step is one, as is each helper and
/// each function the parser keeps out of line). Less `ref_parse_headers`, divided by
/// the steps: the price of one call on this machine.
#[xdp]
pub fn ref_calls(ctx: XdpContext) -> u32 {
    if sip_datagram(&ctx).is_none() {
        return xdp_action::XDP_PASS;
    }
    let Some(count) = REF_CALL_COUNT.get_ptr_mut(0) else {
        return xdp_action::XDP_PASS;
    };
    // SAFETY: per-CPU, used only by this CPU during this run.
    let count = unsafe { &mut *count };
    count.set(0);
    repeat(REF_CALLS, &mut |_| {
        count.set(count.get() + 1);
        true
    });
    verdict_on(count.get() == u64::from(REF_CALLS))
}
