//! Reference programs for the benchmark (`cargo xtask bench`), measured beside
//! `sip_filter` on the same frames: what any XDP program costs, and what reading the
//! Ethernet/IP/UDP headers costs. In the same object so they are built alike; the
//! daemon never loads or attaches them (`Filter::load` loads `sip_filter` only).

use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};

use crate::headers::{parse_headers, Headers};

const SIP_PORT: u16 = 5060;

/// A bare XDP_DROP: the floor of BPF_PROG_TEST_RUN's per-repeat cost.
#[xdp]
pub fn ref_drop(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_DROP
}

/// The real program's header parsing and nothing else. The verdict depends on the
/// parse (drop UDP to port 5060, pass the rest), so it cannot be optimized away.
#[xdp]
pub fn ref_parse_headers(ctx: XdpContext) -> u32 {
    match parse_headers(&ctx) {
        Headers::Udp(udp) if udp.dst_port == SIP_PORT => xdp_action::XDP_DROP,
        _ => xdp_action::XDP_PASS,
    }
}
