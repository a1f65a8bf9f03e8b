//! The stream program for SIP over TCP: entered by tail call from the XDP program
//! (`sip_filter`) for an untrusted source's segment with payload to a SIP-over-TCP or
//! TLS port, once the source policy (lists, bans) has passed it; the source's findings
//! wait in the [`Packet`]. A TLS port's segment goes on to the TLS program ([`tls`]).
//!
//! Today it passes every other such segment, counted `pass_segment`, as the XDP program
//! did before it existed.
//!
//! [`Packet`]: crate::Packet
//! [`tls`]: crate::tls

use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};
use sip_filter_common::{maps::PROGRAM_SLOT_TLS, Method, Reason};

use crate::{
    count, enter_stream_program,
    headers::{parse_headers, Headers, INGRESS},
    CONFIG,
};

#[xdp]
pub fn sip_filter_tcp(ctx: XdpContext) -> u32 {
    let Headers::Transport(segment) = parse_headers::<INGRESS>(&ctx) else {
        count(Reason::PassSegment, Method::None as usize);
        return xdp_action::XDP_PASS;
    };
    if CONFIG
        .get(0)
        .is_some_and(|config| config.is_tls_port(segment.dst_port))
    {
        enter_stream_program(&ctx, PROGRAM_SLOT_TLS);
        return xdp_action::XDP_PASS;
    }
    count(Reason::PassSegment, Method::None as usize);
    xdp_action::XDP_PASS
}
