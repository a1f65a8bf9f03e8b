//! Shared by the sip-filter XDP program and its userspace: the SIP and TLS ClientHello
//! parsers, which run unchanged in the kernel and in host tests, and the map types and names.
#![cfg_attr(not(test), no_std)]

pub mod bounded;
pub mod domain;
pub mod ip;
pub mod maps;
pub mod scan;
pub mod scanner;
pub mod sip;
pub mod tls;

pub use maps::{Counters, FilterConfig, Reason};
pub use scan::{ScanBuf, SCAN_LEN};
pub use sip::{
    parse, Header, HostKind, Method, Payload, Scheme, Scratch, SipMessage, Span, StartLine,
};
