//! What the kernel program and userspace exchange through maps: names, pin layout,
//! `#[repr(C)]` keys and values, and the verdict reasons.

use crate::sip::Method;

/// Where a running filter pins its maps: one directory per interface below this.
pub const PIN_ROOT: &str = "/sys/fs/bpf/sip-filter";

/// Map names, as declared by the kernel program and pinned by the daemon.
pub mod names {
    pub const CONFIG: &str = "SF_CONFIG";
    pub const COUNTERS: &str = "SF_COUNTERS";
    pub const DOMAINS: &str = "SF_DOMAINS";
    pub const OWN_ADDRESSES: &str = "SF_OWN_ADDRS";
    /// Every map a running filter pins, for `stats` and cleanup.
    pub const PINNED: [&str; 4] = [CONFIG, COUNTERS, DOMAINS, OWN_ADDRESSES];
}

/// The XDP program's name in the object file.
pub const PROGRAM_NAME: &str = "sip_filter";

/// Capacity of the domain allowlist map.
pub const MAX_DOMAINS: u32 = 4096;
/// Capacity of the server's own address map.
pub const MAX_OWN_ADDRESSES: u32 = 256;
/// How many SIP ports can be configured.
pub const MAX_PORTS: usize = 8;

/// Why a packet got its verdict. Every exit of the program counts exactly one.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reason {
    /// Not UDP to a SIP port: other protocols, other ports, non-IP frames.
    PassNotSip = 0,
    /// Headers that could not be parsed (truncated, unknown encapsulation): left to the
    /// kernel's own checks, which drop what is really broken.
    PassUnparsed,
    /// A non-first IP fragment: it carries no UDP header to judge. Without its first
    /// fragment, which is judged, the kernel cannot reassemble it.
    PassFragment,
    /// A keep-alive (CRLF, or STUN) on a SIP port.
    PassKeepalive,
    /// A SIP request that passed every check.
    PassRequest,
    /// A SIP response: the server's peers answering its own requests.
    PassResponse,
    /// A payload on a SIP port that is not SIP, passed by policy.
    PassNotSipPayload,
    /// A payload on a SIP port that is not SIP, dropped by policy (the default).
    DropNotSipPayload,
    /// A request whose Request-URI host is not on the allowlist.
    DropUnknownDomain,
}

impl Reason {
    pub const COUNT: usize = 9;
    pub const ALL: [Reason; Self::COUNT] = [
        Reason::PassNotSip,
        Reason::PassUnparsed,
        Reason::PassFragment,
        Reason::PassKeepalive,
        Reason::PassRequest,
        Reason::PassResponse,
        Reason::PassNotSipPayload,
        Reason::DropNotSipPayload,
        Reason::DropUnknownDomain,
    ];

    /// The name used in `stats` output and metrics labels.
    pub const fn name(self) -> &'static str {
        match self {
            Reason::PassNotSip => "pass_not_sip",
            Reason::PassUnparsed => "pass_unparsed",
            Reason::PassFragment => "pass_fragment",
            Reason::PassKeepalive => "pass_keepalive",
            Reason::PassRequest => "pass_request",
            Reason::PassResponse => "pass_response",
            Reason::PassNotSipPayload => "pass_not_sip_payload",
            Reason::DropNotSipPayload => "drop_not_sip_payload",
            Reason::DropUnknownDomain => "drop_unknown_domain",
        }
    }

    pub const fn is_drop(self) -> bool {
        matches!(self, Reason::DropNotSipPayload | Reason::DropUnknownDomain)
    }
}

/// Per-CPU packet counters, one map entry: `packets[reason][method]`, where the method
/// is [`Method::None`] for everything that is not a SIP request.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Counters {
    pub packets: [[u64; Method::COUNT]; Reason::COUNT],
    /// First fragments of IP datagrams to a SIP port (judged like whole datagrams).
    pub first_fragments: u64,
    /// SIP messages whose header section did not end inside the scanned prefix.
    pub headers_truncated: u64,
}

impl Default for Counters {
    fn default() -> Self {
        Self {
            packets: [[0; Method::COUNT]; Reason::COUNT],
            first_fragments: 0,
            headers_truncated: 0,
        }
    }
}

impl Counters {
    /// Adds `other` to `self` (summing CPUs, or taking deltas with `sub`).
    pub fn add(&mut self, other: &Counters) {
        for (row, other_row) in self.packets.iter_mut().zip(other.packets.iter()) {
            for (cell, other_cell) in row.iter_mut().zip(other_row.iter()) {
                *cell = cell.wrapping_add(*other_cell);
            }
        }
        self.first_fragments = self.first_fragments.wrapping_add(other.first_fragments);
        self.headers_truncated = self.headers_truncated.wrapping_add(other.headers_truncated);
    }

    /// `self - earlier`, counter by counter.
    pub fn since(&self, earlier: &Counters) -> Counters {
        let mut out = *self;
        for (row, earlier_row) in out.packets.iter_mut().zip(earlier.packets.iter()) {
            for (cell, earlier_cell) in row.iter_mut().zip(earlier_row.iter()) {
                *cell = cell.wrapping_sub(*earlier_cell);
            }
        }
        out.first_fragments = out.first_fragments.wrapping_sub(earlier.first_fragments);
        out.headers_truncated = out
            .headers_truncated
            .wrapping_sub(earlier.headers_truncated);
        out
    }

    pub fn reason_total(&self, reason: Reason) -> u64 {
        self.packets[reason as usize].iter().sum()
    }

    /// Requests of `method`, whatever their verdict.
    pub fn method_total(&self, method: Method) -> u64 {
        self.packets.iter().map(|row| row[method as usize]).sum()
    }
}

/// `FilterConfig::flags`: the Request-URI domain check is on (the allowlist is not empty).
pub const FLAG_DOMAIN_CHECK: u32 = 1 << 0;
/// `FilterConfig::flags`: drop non-SIP payloads on SIP ports (otherwise pass them).
pub const FLAG_DROP_NOT_SIP_PAYLOAD: u32 = 1 << 1;
/// `FilterConfig::flags`: let requests whose Request-URI has no host (`tel:`, `urn:`…)
/// through the domain check.
pub const FLAG_ALLOW_HOSTLESS_URI: u32 = 1 << 2;

/// The filter's settings, one entry of an array map.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FilterConfig {
    pub flags: u32,
    /// How many entries of `ports` are used; 0 means none (nothing is inspected).
    pub port_count: u32,
    /// Destination UDP ports that carry SIP.
    pub ports: [u16; MAX_PORTS],
    /// Seed of the domain hash (see [`crate::domain`]).
    pub domain_seed: u64,
}

impl FilterConfig {
    #[inline(always)]
    pub fn is_sip_port(&self, port: u16) -> bool {
        let mut i = 0;
        while i < MAX_PORTS {
            if (i as u32) < self.port_count && self.ports[i] == port {
                return true;
            }
            i += 1;
        }
        false
    }

    pub fn has(&self, flag: u32) -> bool {
        self.flags & flag != 0
    }
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: plain `#[repr(C)]` integers and arrays of them; every bit pattern is valid
    // and the layouts have no padding.
    unsafe impl aya::Pod for super::Counters {}
    // SAFETY: as above; `flags` and `port_count` pad `ports` to 8-byte alignment exactly.
    unsafe impl aya::Pod for super::FilterConfig {}
}
