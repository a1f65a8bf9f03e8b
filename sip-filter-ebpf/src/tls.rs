//! The stream program for SIP over TLS: entered by tail call from the XDP program
//! (`sip_filter`), through the TCP program, for an untrusted source's segment with
//! payload to a TLS port, once the source policy (lists, bans) has passed it; the
//! source's findings wait in the [`Packet`].
//!
//! Today it passes every such segment, counted `pass_segment`, as the XDP program did
//! before it existed.
//!
//! [`Packet`]: crate::Packet

use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};
use sip_filter_common::{Method, Reason};

use crate::count;

#[xdp]
pub fn sip_filter_tls(_ctx: XdpContext) -> u32 {
    count(Reason::PassSegment, Method::None as usize);
    xdp_action::XDP_PASS
}
