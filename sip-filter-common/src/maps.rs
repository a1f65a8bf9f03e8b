//! What the kernel program and userspace exchange through maps: names, pin layout,
//! `#[repr(C)]` keys and values, and the verdict reasons.

use crate::sip::{
    pairing::{Account, ACCOUNT_WORDS},
    Method,
};

/// Where a running filter pins its maps: one directory per interface below this.
pub const PIN_ROOT: &str = "/sys/fs/bpf/sip-filter";

/// Map names, as declared by the kernel program and pinned by the daemon.
pub mod names {
    pub const CONFIG: &str = "SF_CONFIG";
    pub const COUNTERS: &str = "SF_COUNTERS";
    pub const DOMAINS: &str = "SF_DOMAINS";
    pub const OWN_ADDRESSES: &str = "SF_OWN_ADDRS";
    pub const ALLOW_V4: &str = "SF_ALLOW_V4";
    pub const ALLOW_V6: &str = "SF_ALLOW_V6";
    pub const DENY_V4: &str = "SF_DENY_V4";
    pub const DENY_V6: &str = "SF_DENY_V6";
    pub const BANS: &str = "SF_BANS";
    pub const SOURCES: &str = "SF_SOURCES";
    pub const GLOBAL_BUDGET: &str = "SF_GLOBAL";
    /// The arrival time of the untrusted sources' common connection (SYN) budget.
    pub const GLOBAL_CONNECTIONS: &str = "SF_GLOBAL_SYN";
    pub const SCANNER_AGENTS: &str = "SF_SCANNER_UA";
    pub const EVENTS: &str = "SF_EVENTS";
    /// The egress (answers) program's counters.
    pub const ANSWER_COUNTERS: &str = "SF_ANSWER_COUNTERS";
    pub const TRANSACTIONS: &str = "SF_TRANSACTIONS";
    pub const LOCKOUTS: &str = "SF_LOCKOUTS";
    pub const ACCOUNTS: &str = "SF_ACCOUNTS";
    pub const REGISTERED: &str = "SF_REGISTERED";
    /// When the last lockout made so far ends (one entry).
    pub const LOCKS_UNTIL: &str = "SF_LOCKS_UNTIL";
    /// Which sources may hold a registration ([`super::registered_hint`]).
    pub const REGISTERED_HINTS: &str = "SF_REGISTERED_HINTS";
    /// The programs the XDP program enters by tail call, by slot
    /// ([`super::TAIL_CALLED`]). Pinned beside the maps of [`PINNED`] (not among them: no
    /// CLI reads it), because a program array is emptied when no file descriptor or pin
    /// holds it any more.
    pub const PROGRAMS: &str = "SF_PROGRAMS";
    /// The programs the egress program enters by tail call
    /// ([`super::ANSWER_STREAM_PROGRAM_NAME`] in [`super::ANSWER_PROGRAM_SLOT_STREAM`]): a
    /// program array holds programs of one type, and these are TC programs. Pinned like
    /// [`PROGRAMS`], for the same reason.
    pub const ANSWER_PROGRAMS: &str = "SF_ANSWER_PROGRAMS";
    /// Every map a running filter pins, for `stats` and cleanup.
    pub const PINNED: [&str; 17] = [
        CONFIG,
        COUNTERS,
        DOMAINS,
        OWN_ADDRESSES,
        ALLOW_V4,
        ALLOW_V6,
        DENY_V4,
        DENY_V6,
        BANS,
        SOURCES,
        GLOBAL_BUDGET,
        GLOBAL_CONNECTIONS,
        SCANNER_AGENTS,
        ANSWER_COUNTERS,
        // What the answers taught: the `auth` verbs read and change these.
        REGISTERED,
        LOCKOUTS,
        ACCOUNTS,
    ];
}

/// The XDP program's name in the object file.
pub const PROGRAM_NAME: &str = "sip_filter";
/// The TC egress program's name in the object file (and of its clsact filters).
pub const EGRESS_PROGRAM_NAME: &str = "sip_filter_answers";
/// The TC program that reads the answers of a TCP segment leaving from a SIP port, one
/// message per run, entered by tail call from [`EGRESS_PROGRAM_NAME`] and then from
/// itself for the segment's next message (issue 14).
pub const ANSWER_STREAM_PROGRAM_NAME: &str = "sip_filter_answers_tcp";
/// The slots of [`names::ANSWER_PROGRAMS`].
pub const ANSWER_PROGRAM_SLOT_STREAM: u32 = 0;
pub const ANSWER_PROGRAM_SLOTS: u32 = 1;
/// The most messages of one TCP segment leaving from a SIP port the egress program reads
/// (a tail call each, within the kernel's chain of 33); a segment holding more after
/// them counts `AnswerCounters::stream_unread`. More than the 8 requests a segment
/// coming in is judged for: the server's answers to a guesser's pipelined requests
/// leave coalesced, a TSO segment of up to 64 KB at the egress hook.
pub const MAX_ANSWER_STREAM_MESSAGES: u32 = 32;

/// The XDP program for an untrusted source's segments with payload to a SIP-over-TCP
/// port, entered by tail call from [`PROGRAM_NAME`] once the source policy has passed
/// the segment (a TLS port's goes to [`TLS_PROGRAM_NAME`] instead).
pub const TCP_PROGRAM_NAME: &str = "sip_filter_tcp";
/// The XDP program for segments with payload to a TLS port (ClientHellos).
pub const TLS_PROGRAM_NAME: &str = "sip_filter_tls";
/// The slots of [`names::PROGRAMS`]. Each program there is verified apart, with a budget
/// of its own (a million instructions), beside the XDP program's.
pub const PROGRAM_SLOT_TCP: u32 = 0;
pub const PROGRAM_SLOT_TLS: u32 = 1;
/// For an INVITE the request policy passed: destination rules and call budgets (issue
/// 18). Empty until that program exists: the XDP program then goes on without it.
pub const PROGRAM_SLOT_INVITE: u32 = 2;
/// Issue 14: the policies on a message the TCP program parsed (its own budget: the
/// parse and the policies together exceed one program's).
pub const PROGRAM_SLOT_TCP_POLICY: u32 = 3;
pub const PROGRAM_SLOTS: u32 = 4;
/// The programs the daemon loads into [`names::PROGRAMS`], with their slots.
pub const TAIL_CALLED: [(&str, u32); 4] = [
    (TCP_PROGRAM_NAME, PROGRAM_SLOT_TCP),
    (TLS_PROGRAM_NAME, PROGRAM_SLOT_TLS),
    (INVITE_PROGRAM_NAME, PROGRAM_SLOT_INVITE),
    (TCP_POLICY_PROGRAM_NAME, PROGRAM_SLOT_TCP_POLICY),
];
/// Issue 14: the program that runs the request policy on the message the TCP program
/// parsed, then walks on to the segment's next message.
pub const TCP_POLICY_PROGRAM_NAME: &str = "sip_filter_tcp_policy";

/// Capacity of the domain allowlist map.
pub const MAX_DOMAINS: u32 = 4096;
/// Capacity of the server's own address map.
pub const MAX_OWN_ADDRESSES: u32 = 256;
/// Capacity of each static CIDR list (allow and deny, IPv4 and IPv6).
pub const MAX_LIST_ENTRIES: u32 = 1 << 20;
/// Capacity of the dynamic blocklist.
pub const MAX_BANS: u32 = 1 << 20;
/// Sources tracked for rate limits and auto-bans (an LRU map: the least recently seen
/// make room, so a flood of addresses cannot exhaust memory).
pub const MAX_SOURCES: u32 = 1 << 18;
/// Scanner User-Agent prefixes.
pub const MAX_SCANNER_AGENTS: u32 = 256;
/// The longest scanner User-Agent prefix.
pub const MAX_SCANNER_AGENT_LEN: usize = 63;
/// The event ring buffer's size in bytes.
pub const EVENTS_BYTES: u32 = 1 << 18;
/// At most one drop event per source per this interval, so a flood cannot flood
/// userspace.
pub const DROP_EVENT_INTERVAL_NS: u64 = 1_000_000_000;

/// Default IPv6 prefix length sources are keyed by: attackers rotate inside their /64.
pub const DEFAULT_IPV6_PREFIX: u32 = 64;

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
    /// A source on the static deny list.
    DropDenied,
    /// A source on the dynamic blocklist (banned, not yet expired).
    DropBanned,
    /// A request whose User-Agent starts with a scanner's.
    DropScanner,
    /// A source over its rate limit for the request's class.
    DropRateLimited,
    /// Untrusted sources together over the global budget.
    DropGlobalBudget,
    /// A first fragment that does not show a whole SIP start line (so it cannot be
    /// judged: a keep-alive's or a request's first bytes alone), or, under
    /// `fragments = "drop"`, any first fragment from an untrusted source. Dropping the
    /// first fragment is enough: the kernel cannot reassemble the datagram without it.
    DropFragment,
    /// A packet whose transport header cannot be reached (an IPv6 header chain longer
    /// than the walk or cut short, a UDP header cut short or lying about its length),
    /// from an untrusted source: its port cannot be known, so it cannot be judged.
    DropHeaderChain,
    /// A payload that starts like a SIP message (a method token and a space, or
    /// `SIP/`) but is not one the parser accepts (extra spaces, another version, a
    /// start line without a line feed in the window, several User-Agents, more header
    /// lines to examine than the parser's budget…): a lenient server might still act on
    /// it, so it is never passed unjudged.
    DropMalformed,
    /// A TCP segment to a SIP port, past the source policy, that starts no message the
    /// filter judges: the handshake, acknowledgements, the continuation of a message,
    /// anything on a TLS port but a ClientHello.
    PassSegment,
    /// A credentialed request for an account locked out for its source (or, across
    /// sources, for every source neither registered nor allow-listed) after failed
    /// passwords: the server's answers taught it (issue 13).
    DropAuthLockout,
    /// Strict mode: a method the operator reserved for registered and allow-listed
    /// sources, from a source that is neither.
    DropUnregistered,
    /// A new TCP connection (a SYN without ACK) to a SIP port from a source over its
    /// connection bucket (`rate_limit.connections`).
    DropConnectionRate,
    /// A new TCP connection to a SIP port while all untrusted sources together are over
    /// their connection budget (`rate_limit.untrusted_connections`).
    DropConnectionBudget,
    // Issue 18: destination rules and call budgets (the INVITE program).
    /// An INVITE dialling a number a `deny` destination rule covers.
    DropDestinationDenied,
    /// An INVITE dialling a number a `limit` destination rule covers, over the rule's
    /// new calls per minute for its source or its account.
    DropDestinationLimited,
    /// An INVITE from an account over its call budget, or blocked after it breached it
    /// (from every source: the account is what is stolen).
    DropCallBudget,
    // Issue 14, item 4: the TLS ClientHello policy (README, "TLS").
    /// A ClientHello whose highest offered version (supported_versions, else the legacy
    /// client_version) is below `tls.min_version`.
    DropTlsVersion,
    /// A ClientHello whose server name (SNI) is not on the TLS name allowlist.
    DropTlsSni,
    /// A ClientHello without a server name, under `tls.no_sni = "drop"`.
    DropTlsNoSni,
    /// A ClientHello the parser proves wrong (a length past its record or message, a
    /// forbidden zero length, a repeated extension...).
    DropTlsMalformed,
    /// A ClientHello that passed every check it could be judged by.
    PassTlsHello,
    /// A ClientHello passed because a field a check needs was not in its first segment
    /// (a split ClientHello, a walk past its bound): judged by what it held.
    PassTlsUnknown,
    // Issue 14, SIP over TCP.
    /// A TCP segment to a SIP-over-TCP port whose payload starts no message (the
    /// continuation of one a previous segment started, or bytes the parser does not
    /// take for a start line): passed, since without the stream it cannot be judged.
    PassContinuation,
    /// The rest of a segment after [`MAX_STREAM_MESSAGES`] messages were judged: passed
    /// unjudged, once per such segment.
    PassStreamLimit,
}

impl Reason {
    pub const COUNT: usize = 33;
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
        Reason::DropDenied,
        Reason::DropBanned,
        Reason::DropScanner,
        Reason::DropRateLimited,
        Reason::DropGlobalBudget,
        Reason::DropFragment,
        Reason::DropHeaderChain,
        Reason::DropMalformed,
        Reason::PassSegment,
        Reason::DropAuthLockout,
        Reason::DropUnregistered,
        Reason::DropConnectionRate,
        Reason::DropConnectionBudget,
        Reason::DropDestinationDenied,
        Reason::DropDestinationLimited,
        Reason::DropCallBudget,
        Reason::DropTlsVersion,
        Reason::DropTlsSni,
        Reason::DropTlsNoSni,
        Reason::DropTlsMalformed,
        Reason::PassTlsHello,
        Reason::PassTlsUnknown,
        Reason::PassContinuation,
        Reason::PassStreamLimit,
    ];

    /// The reason numbered `n` (`Reason::X as u64`).
    #[inline(always)]
    pub fn from_number(n: u64) -> Option<Reason> {
        if n < Self::COUNT as u64 {
            // SAFETY: `repr(u32)` with the discriminants 0..COUNT, in order (a test checks).
            Some(unsafe { core::mem::transmute::<u32, Reason>(n as u32) })
        } else {
            None
        }
    }

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
            Reason::DropDenied => "drop_denied",
            Reason::DropBanned => "drop_banned",
            Reason::DropScanner => "drop_scanner",
            Reason::DropRateLimited => "drop_rate_limited",
            Reason::DropGlobalBudget => "drop_global_budget",
            Reason::DropFragment => "drop_fragment",
            Reason::DropHeaderChain => "drop_header_chain",
            Reason::DropMalformed => "drop_malformed",
            Reason::PassSegment => "pass_segment",
            Reason::DropAuthLockout => "drop_auth_lockout",
            Reason::DropUnregistered => "drop_unregistered",
            Reason::DropConnectionRate => "drop_connection_rate",
            Reason::DropConnectionBudget => "drop_connection_budget",
            Reason::DropDestinationDenied => "drop_destination_denied",
            Reason::DropDestinationLimited => "drop_destination_limited",
            Reason::DropCallBudget => "drop_call_budget",
            Reason::DropTlsVersion => "drop_tls_version",
            Reason::DropTlsSni => "drop_tls_sni",
            Reason::DropTlsNoSni => "drop_tls_no_sni",
            Reason::DropTlsMalformed => "drop_tls_malformed",
            Reason::PassTlsHello => "pass_tls_hello",
            Reason::PassTlsUnknown => "pass_tls_unknown",
            Reason::PassContinuation => "pass_continuation",
            Reason::PassStreamLimit => "pass_stream_limit",
        }
    }

    pub const fn is_drop(self) -> bool {
        matches!(
            self,
            Reason::DropNotSipPayload
                | Reason::DropUnknownDomain
                | Reason::DropDenied
                | Reason::DropBanned
                | Reason::DropScanner
                | Reason::DropRateLimited
                | Reason::DropGlobalBudget
                | Reason::DropFragment
                | Reason::DropHeaderChain
                | Reason::DropMalformed
                | Reason::DropAuthLockout
                | Reason::DropUnregistered
                | Reason::DropConnectionRate
                | Reason::DropConnectionBudget
                | Reason::DropDestinationDenied
                | Reason::DropDestinationLimited
                | Reason::DropCallBudget
                | Reason::DropTlsVersion
                | Reason::DropTlsSni
                | Reason::DropTlsNoSni
                | Reason::DropTlsMalformed
        )
    }
}

/// Why a source is on the dynamic blocklist.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BanReason {
    /// Added by an operator.
    Manual = 0,
    /// Sustained overflow of its rate limit.
    Rate,
    /// A scanner User-Agent.
    Scanner,
    /// Repeated requests for unknown domains.
    Domain,
    /// Imported from a blocklist feed.
    Feed,
    /// Failed passwords, as the server's answers told (issue 13).
    Auth,
    /// Many distinct accounts failed or rejected: a user enumeration (issue 13).
    Enumeration,
    /// Sustained overflow of its connection (SYN) bucket; off unless configured (a
    /// SYN's source address is unproven: README, "Connection rate").
    Connections,
    /// Repeated ClientHellos the TLS policy dropped (issue 14, item 4).
    Tls,
}

impl BanReason {
    pub const COUNT: usize = 9;
    pub const ALL: [BanReason; Self::COUNT] = [
        BanReason::Manual,
        BanReason::Rate,
        BanReason::Scanner,
        BanReason::Domain,
        BanReason::Feed,
        BanReason::Auth,
        BanReason::Enumeration,
        BanReason::Connections,
        BanReason::Tls,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            BanReason::Manual => "manual",
            BanReason::Rate => "rate",
            BanReason::Scanner => "scanner",
            BanReason::Domain => "domain",
            BanReason::Feed => "feed",
            BanReason::Auth => "auth",
            BanReason::Enumeration => "enumeration",
            BanReason::Connections => "connections",
            BanReason::Tls => "tls",
        }
    }

    /// The reason numbered `n`; `Manual` for numbers no version wrote.
    pub fn from_u32(n: u32) -> BanReason {
        Self::ALL
            .get(n as usize)
            .copied()
            .unwrap_or(BanReason::Manual)
    }
}

/// Per-ban-reason counter arrays have this many slots (a power of two, so the kernel can
/// mask an index: a bounds check on a value read back from the stack is lost on 6.1).
pub const BAN_SLOTS: usize = 16;

/// A dynamic blocklist entry, keyed by [`SourceKey`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ban {
    /// When it stops matching, in `CLOCK_MONOTONIC_COARSE` nanoseconds (the kernel's
    /// `bpf_ktime_get_coarse_ns`); `u64::MAX` for never.
    pub expires_ns: u64,
    /// A [`BanReason`].
    pub reason: u32,
    pub _pad: u32,
    /// Packets dropped because of this ban (for `sip-filter top`).
    pub drops: u64,
}

impl Ban {
    /// A ban until `expires_ns`, no drops yet.
    #[inline(always)]
    pub const fn new(expires_ns: u64, reason: BanReason) -> Ban {
        Ban {
            expires_ns,
            reason: reason as u32,
            _pad: 0,
            drops: 0,
        }
    }
}

/// A value in the allow and deny tries: who put the entry there and until when it
/// matches. The kernel ignores an expired entry; the daemon sweeps it out later.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ListEntry {
    /// When it stops matching, in `CLOCK_MONOTONIC_COARSE` nanoseconds; `u64::MAX` for
    /// never.
    pub expires_ns: u64,
    /// A `LIST_ORIGIN_*`: a reload replaces only the configuration's entries.
    pub origin: u32,
    /// A [`BanReason`] for operator deny entries (manual or feed), the country's code
    /// ([`country_tag`]) for country entries, 0 otherwise.
    pub reason: u32,
    /// Packets a deny entry dropped since it was written (for `sip-filter top`). Counted
    /// without atomics: a trie value may sit at a 4-byte boundary, and an atomic add
    /// there could split a cache line; CPUs racing on one entry can lose a few counts.
    pub drops: u64,
}

impl ListEntry {
    /// An entry from the configuration file (`[lists]`), for as long as it stays there.
    pub const fn from_config() -> ListEntry {
        ListEntry {
            expires_ns: u64::MAX,
            origin: LIST_ORIGIN_CONFIG,
            reason: 0,
            drops: 0,
        }
    }

    /// An entry an operator added: until `expires_ns` (`u64::MAX`: until removed).
    pub const fn from_operator(expires_ns: u64, reason: u32) -> ListEntry {
        ListEntry {
            expires_ns,
            origin: LIST_ORIGIN_OPERATOR,
            reason,
            drops: 0,
        }
    }

    /// A network of a denied country (`[countries]`), tagged with its ISO code so that
    /// its drops are counted by country.
    pub const fn from_country(code: [u8; 2]) -> ListEntry {
        ListEntry {
            expires_ns: u64::MAX,
            origin: LIST_ORIGIN_COUNTRY,
            reason: country_tag(code),
            drops: 0,
        }
    }

    /// Does it still match at `now_ns`?
    #[inline(always)]
    pub const fn is_live(&self, now_ns: u64) -> bool {
        now_ns < self.expires_ns
    }
}

/// [`ListEntry::origin`]: from the configuration file.
pub const LIST_ORIGIN_CONFIG: u32 = 1;
/// [`ListEntry::origin`]: added by an operator at run time (`allow add`, `block add CIDR`,
/// `block import`); kept across reloads and restarts.
pub const LIST_ORIGIN_OPERATOR: u32 = 2;
/// [`ListEntry::origin`]: a CrowdSec decision the daemon's bouncer pulled from a Local
/// API; its bouncer adds, renews and removes these, and only these.
pub const LIST_ORIGIN_CROWDSEC: u32 = 3;
/// [`ListEntry::origin`]: a network of a country the `[countries]` table denies; the
/// daemon compiles these from the country database and replaces only these. A
/// registered source is not dropped by them (the kernel checks).
pub const LIST_ORIGIN_COUNTRY: u32 = 4;

/// A country entry's [`ListEntry::reason`]: its two-letter ISO code, in the low bytes.
pub const fn country_tag(code: [u8; 2]) -> u32 {
    (code[0] as u32) << 8 | code[1] as u32
}

/// The ISO code a [`country_tag`] holds.
pub const fn country_code(tag: u32) -> [u8; 2] {
    [(tag >> 8) as u8, tag as u8]
}

/// The key sources are tracked and banned by: an IPv4 address mapped into IPv6
/// (`::ffff:a.b.c.d`), or an IPv6 address cut to the configured prefix length.
pub type SourceKey = [u8; 16];

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
    /// Bans found expired (and removed) by the kernel, by [`BanReason`].
    pub bans_expired: [u64; BAN_SLOTS],
    /// Bans the kernel added (or, in dry-run, would have added), by [`BanReason`].
    pub bans_added: [u64; BAN_SLOTS],
    /// Events the ring buffer had no room for.
    pub events_lost: u64,
    /// Bans, and counts toward a ban, not made because the packet's UDP checksum was
    /// wrong (or 0 over IPv6): the kernel would have dropped it, so its source address
    /// proves nothing (issue 19, class 4). The packet itself is dropped as judged.
    pub ban_skipped_bad_checksum: u64,
    /// Bans, and counts toward a ban, not made because the packet was a first fragment:
    /// its checksum covers the reassembled datagram, which XDP never sees.
    pub ban_skipped_fragment: u64,
    /// Issue 14: the verdicts of packets to a SIP port again, by transport
    /// ([`Transport`]) and reason (the methods are in `packets`).
    pub transports: [[u64; Reason::COUNT]; TRANSPORT_SLOTS],
}

impl Default for Counters {
    fn default() -> Self {
        Self {
            packets: [[0; Method::COUNT]; Reason::COUNT],
            first_fragments: 0,
            headers_truncated: 0,
            bans_expired: [0; BAN_SLOTS],
            bans_added: [0; BAN_SLOTS],
            events_lost: 0,
            ban_skipped_bad_checksum: 0,
            ban_skipped_fragment: 0,
            transports: [[0; Reason::COUNT]; TRANSPORT_SLOTS],
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
        for (mine, theirs) in self.bans_expired.iter_mut().zip(other.bans_expired) {
            *mine = mine.wrapping_add(theirs);
        }
        for (mine, theirs) in self.bans_added.iter_mut().zip(other.bans_added) {
            *mine = mine.wrapping_add(theirs);
        }
        self.events_lost = self.events_lost.wrapping_add(other.events_lost);
        self.ban_skipped_bad_checksum = self
            .ban_skipped_bad_checksum
            .wrapping_add(other.ban_skipped_bad_checksum);
        self.ban_skipped_fragment = self
            .ban_skipped_fragment
            .wrapping_add(other.ban_skipped_fragment);
        for (row, other_row) in self.transports.iter_mut().zip(other.transports.iter()) {
            for (cell, other_cell) in row.iter_mut().zip(other_row.iter()) {
                *cell = cell.wrapping_add(*other_cell);
            }
        }
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
        for (mine, earlier) in out.bans_expired.iter_mut().zip(earlier.bans_expired) {
            *mine = mine.wrapping_sub(earlier);
        }
        for (mine, earlier) in out.bans_added.iter_mut().zip(earlier.bans_added) {
            *mine = mine.wrapping_sub(earlier);
        }
        out.events_lost = out.events_lost.wrapping_sub(earlier.events_lost);
        out.ban_skipped_bad_checksum = out
            .ban_skipped_bad_checksum
            .wrapping_sub(earlier.ban_skipped_bad_checksum);
        out.ban_skipped_fragment = out
            .ban_skipped_fragment
            .wrapping_sub(earlier.ban_skipped_fragment);
        for (row, earlier_row) in out.transports.iter_mut().zip(earlier.transports.iter()) {
            for (cell, earlier_cell) in row.iter_mut().zip(earlier_row.iter()) {
                *cell = cell.wrapping_sub(*earlier_cell);
            }
        }
        out
    }

    pub fn reason_total(&self, reason: Reason) -> u64 {
        self.packets[reason as usize].iter().sum()
    }

    /// Requests of `method`, whatever their verdict.
    pub fn method_total(&self, method: Method) -> u64 {
        self.packets.iter().map(|row| row[method as usize]).sum()
    }

    /// Verdicts for `reason` on packets that came over `transport`.
    pub fn transport_total(&self, transport: Transport, reason: Reason) -> u64 {
        self.transports[transport as usize][reason as usize]
    }
}

// Issue 14: SIP over TCP, and counters by transport.

/// The transport a verdict was made on, as the kernel notes it for `count`
/// ([`Counters::transports`]).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Transport {
    /// Not known to be to a SIP port: other ports and protocols, unparsed headers, later
    /// fragments (their port is unknown).
    Other = 0,
    Udp = 1,
    Tcp = 2,
    Tls = 3,
}

/// Rows of [`Counters::transports`] (a power of two: the kernel masks the index).
pub const TRANSPORT_SLOTS: usize = 4;

impl Transport {
    pub const ALL: [Transport; TRANSPORT_SLOTS] = [
        Transport::Other,
        Transport::Udp,
        Transport::Tcp,
        Transport::Tls,
    ];

    /// The name in `stats` output and the metrics' `transport` label.
    pub const fn name(self) -> &'static str {
        match self {
            Transport::Other => "other",
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
            Transport::Tls => "tls",
        }
    }
}

/// The most messages of one TCP segment the kernel judges (a tail call each); the rest
/// of a segment that holds more passes, counted `pass_stream_limit`.
pub const MAX_STREAM_MESSAGES: u32 = 8;

/// `FilterConfig::flags`: the Request-URI domain check is on (the allowlist is not empty).
pub const FLAG_DOMAIN_CHECK: u32 = 1 << 0;
/// `FilterConfig::flags`: drop non-SIP payloads on SIP ports (otherwise pass them).
pub const FLAG_DROP_NOT_SIP_PAYLOAD: u32 = 1 << 1;
/// `FilterConfig::flags`: let requests whose Request-URI has no host (`tel:`, `urn:`…)
/// through the domain check.
pub const FLAG_ALLOW_HOSTLESS_URI: u32 = 1 << 2;

/// `FilterConfig::flags`: drops become passes, counted under their reasons; bans are
/// counted but not made.
pub const FLAG_DRY_RUN: u32 = 1 << 3;
/// `FilterConfig::flags`: drop every first fragment of a datagram to a SIP port from an
/// untrusted source (otherwise a first fragment that shows a whole start line is judged).
pub const FLAG_DROP_FRAGMENTS: u32 = 1 << 4;
/// Learn from the server's answers (issue 13): pair them with requests, lock accounts,
/// ban guessers and enumerators, trust registered sources.
pub const FLAG_ANSWERS: u32 = 1 << 5;

/// A token bucket in GCRA form (the "generic cell rate algorithm" of ATM networks): a
/// request is admitted while the source's theoretical arrival time is at most
/// `tolerance_ns` ahead of now, and each admitted request moves it `interval_ns` on.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Limit {
    /// 1 s / rate; 0 means no limit.
    pub interval_ns: u64,
    /// interval × (burst − 1): how far ahead of now the arrival time may run.
    pub tolerance_ns: u64,
}

impl Limit {
    pub const NONE: Limit = Limit {
        interval_ns: 0,
        tolerance_ns: 0,
    };

    /// `rate` per second, bursts of `burst`; no limit when `rate` is 0.
    pub const fn new(rate: u32, burst: u32) -> Limit {
        if rate == 0 {
            return Limit::NONE;
        }
        let interval_ns = 1_000_000_000 / rate as u64;
        let extra = if burst > 0 { burst as u64 - 1 } else { 0 };
        Limit {
            interval_ns,
            tolerance_ns: interval_ns * extra,
        }
    }

    pub const fn is_set(&self) -> bool {
        self.interval_ns != 0
    }
}

/// Request classes with buckets of their own, per source.
pub const CLASS_REGISTER: usize = 0;
pub const CLASS_INVITE: usize = 1;
pub const CLASS_OTHER: usize = 2;
/// Trusted sources' one bucket, all methods.
pub const CLASS_TRUSTED: usize = 3;
/// What an untrusted source sends that is not a request: SIP responses and keep-alives
/// (CRLF, STUN), in one bucket. Trusted sources are not metered in it.
pub const CLASS_ANSWERS: usize = 4;
/// Registered sources (issue 13): a source with a live registration, learnt from the
/// server's 2xx to a credentialed REGISTER, skips the untrusted budget and is metered
/// here instead, for every method. (Slot 5 is the connections class of issue 14.)
pub const CLASS_REGISTERED: usize = 6;
/// New TCP connections (a SYN without ACK) to a SIP port, from an untrusted source.
pub const CLASS_CONNECTIONS: usize = 5;
/// How many classes there are.
pub const CLASS_COUNT: usize = 7;
/// Slots of the per-class arrays (`FilterConfig::limits`, `SourceState::arrival_ns`):
/// a power of two at least [`CLASS_COUNT`], so the kernel can mask a class index (a
/// bounds check on a value read back from the stack is lost on 6.1). The slots past
/// `CLASS_COUNT` stay unused (no limit).
pub const CLASS_SLOTS: usize = 8;
const _: () = assert!(CLASS_SLOTS.is_power_of_two() && CLASS_SLOTS >= CLASS_COUNT);

/// Automatic bans: durations in ns (0: the rule is off) and thresholds.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BanConfig {
    pub scanner_ns: u64,
    pub unknown_domain_ns: u64,
    pub unknown_domain_window_ns: u64,
    pub rate_overflow_ns: u64,
    pub rate_overflow_window_ns: u64,
    pub unknown_domain_hits: u32,
    pub rate_overflow_hits: u32,
    pub connection_overflow_ns: u64,
    pub connection_overflow_window_ns: u64,
    pub connection_overflow_hits: u32,
    /// Repeat offenders: a source banned again within `repeat_window_ns` of its last
    /// automatic ban's end is banned `repeat_factor` times as long as that ban was (0 or 1:
    /// no growth), up to `repeat_max_ns`.
    pub repeat_factor: u32,
    pub repeat_window_ns: u64,
    pub repeat_max_ns: u64,
}

impl BanConfig {
    /// How long a new automatic ban lasts whose rule says `length_ns`, for a source whose
    /// last automatic ban lasted `last_ns` and ended (or ends) at `last_expires_ns`
    /// (0, 0: none remembered). A repeat offender's ban grows by `repeat_factor` each
    /// time, within `repeat_max_ns` and never below the rule's own length.
    #[inline(always)]
    pub fn repeat_length(
        &self,
        length_ns: u64,
        last_ns: u64,
        last_expires_ns: u64,
        now: u64,
    ) -> u64 {
        let forgotten = now > last_expires_ns && now - last_expires_ns > self.repeat_window_ns;
        if self.repeat_factor <= 1 || last_ns == 0 || forgotten {
            return length_ns;
        }
        let ceiling = if self.repeat_max_ns > length_ns {
            self.repeat_max_ns
        } else {
            length_ns
        };
        // Compared before multiplying, so the product cannot overflow (and BPF, which
        // has no 128-bit multiply, needs no overflow check).
        let grown = if last_ns > ceiling / self.repeat_factor as u64 {
            ceiling
        } else {
            last_ns * self.repeat_factor as u64
        };
        if grown < length_ns {
            length_ns
        } else {
            grown
        }
    }
}

/// The rules that learn from the server's answers (issue 13). Durations in ns; a
/// threshold of 0 switches its rule off.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AuthConfig {
    /// Failed passwords of one account from one source within the window that lock the
    /// account for that source, and for how long.
    pub lockout_failures: u32,
    /// Failed passwords from one (unregistered) source, over all its accounts and
    /// including attempts a lockout dropped, that ban it (reason `auth`).
    pub ban_failures: u32,
    pub lockout_window_ns: u64,
    pub lockout_ns: u64,
    pub ban_window_ns: u64,
    pub ban_ns: u64,
    /// Distinct accounts failed or rejected from one (unregistered) source within the
    /// window that ban it (reason `enumeration`).
    pub enumeration_users: u32,
    /// Failed passwords of one account from all sources together within the window that
    /// lock it for every source neither registered nor allow-listed.
    pub account_failures: u32,
    pub enumeration_window_ns: u64,
    pub enumeration_ns: u64,
    pub account_window_ns: u64,
    pub account_lockout_ns: u64,
    /// The longest a registration makes its source `registered`, whatever it was granted.
    pub registration_cap_ns: u64,
    /// Strict mode: bit `Method::X as u32` set for each method dropped from sources
    /// neither registered nor allow-listed. 0: off.
    pub strict_methods: u32,
    pub _pad: u32,
}

/// What the kernel keeps per source (LRU).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SourceState {
    /// Theoretical arrival times, by class (see [`Limit`]).
    pub arrival_ns: [u64; CLASS_SLOTS],
    /// Start of the current unknown-domain and rate-overflow windows.
    pub domain_window_ns: u64,
    pub overflow_window_ns: u64,
    /// The last drop event sent for this source.
    pub last_event_ns: u64,
    pub domain_hits: u32,
    pub overflow_hits: u32,
    /// The transaction (Call-ID and CSeq, hashed) of the last unknown-domain request
    /// counted in `domain_hits`: its retransmissions (UDP's timer A: up to 7 copies in
    /// 32 s; TCP's) count once, so that one request a phone sends for a wrong domain
    /// does not ban its address, and the office behind it.
    pub domain_transaction: u64,
    /// Failed passwords (issue 13) in the current window, and its start.
    pub auth_window_ns: u64,
    /// Distinct accounts failed or rejected in the current window, and its start.
    pub users_window_ns: u64,
    pub auth_failures: u32,
    pub distinct_users: u32,
    /// Start of the current connection-overflow window, and the SYNs over the
    /// connection bucket counted in it.
    pub connection_window_ns: u64,
    pub connection_hits: u32,
    /// Automatic bans of this source while it was remembered (repeat offenders).
    pub bans: u32,
    /// The last automatic ban's length and end (see [`BanConfig::repeat_factor`]).
    pub last_ban_ns: u64,
    pub last_ban_expires_ns: u64,
    /// Requests from this source dropped, by `SOURCE_DROP_*` slot (for `sip-filter top`).
    /// Banned and denied sources' drops are counted in their [`Ban`] and [`ListEntry`],
    /// which the kernel reads anyway: no per-source lookup on those paths.
    pub drops: [u64; SOURCE_DROP_SLOTS],
    /// Start of the current refused-handshake window, and the ClientHellos the TLS
    /// policy dropped in it (issue 14, item 4).
    pub tls_window_ns: u64,
    pub tls_refusals: u32,
    /// The last refused ClientHellos' connections and sequence numbers, folded to 16
    /// bits: their TCP retransmissions are dropped too, but count as one refusal each,
    /// also when a closed connection's retransmissions interleave with the next one's.
    pub tls_attempts: [u16; TLS_ATTEMPT_SLOTS],
    pub _tls_pad: u32,
}

/// [`SourceState::drops`] slots (the kernel checks an index against it).
pub const SOURCE_DROP_SLOTS: usize = 10;
/// The verdict reason each [`SourceState::drops`] slot counts (for `sip-filter top` and
/// `explain`): what the request, connection and TLS policies drop, every TLS refusal
/// among them, since repeated refusals of any kind ban the source (issue 14).
pub const SOURCE_DROP_REASONS: [Reason; SOURCE_DROP_SLOTS] = [
    Reason::DropScanner,
    Reason::DropUnknownDomain,
    Reason::DropRateLimited,
    Reason::DropGlobalBudget,
    Reason::DropConnectionRate,
    Reason::DropConnectionBudget,
    Reason::DropTlsSni,
    Reason::DropTlsNoSni,
    Reason::DropTlsVersion,
    Reason::DropTlsMalformed,
];

/// The [`SourceState::drops`] slot that counts `reason`, if one does: the one table
/// above, read at compile time for the `SOURCE_DROP_*` constants below and at run time
/// where the reason is not known before (a TLS refusal).
#[inline(always)]
pub const fn source_drop_slot(reason: Reason) -> Option<usize> {
    let mut slot = 0;
    while slot < SOURCE_DROP_SLOTS {
        if SOURCE_DROP_REASONS[slot] as u32 == reason as u32 {
            return Some(slot);
        }
        slot += 1;
    }
    None
}

/// [`source_drop_slot`] of a reason that has one (a compile-time error otherwise).
const fn slot_of(reason: Reason) -> usize {
    match source_drop_slot(reason) {
        Some(slot) => slot,
        None => panic!("the reason has no SOURCE_DROP_REASONS slot"),
    }
}
pub const SOURCE_DROP_SCANNER: usize = slot_of(Reason::DropScanner);
pub const SOURCE_DROP_UNKNOWN_DOMAIN: usize = slot_of(Reason::DropUnknownDomain);
pub const SOURCE_DROP_RATE_LIMITED: usize = slot_of(Reason::DropRateLimited);
pub const SOURCE_DROP_GLOBAL_BUDGET: usize = slot_of(Reason::DropGlobalBudget);
pub const SOURCE_DROP_CONNECTION_RATE: usize = slot_of(Reason::DropConnectionRate);
pub const SOURCE_DROP_CONNECTION_BUDGET: usize = slot_of(Reason::DropConnectionBudget);

/// What happened, in an event.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// The first drop from a source in an interval.
    Drop = 0,
    /// The kernel banned a source (or, in dry-run, would have).
    Ban,
    /// An account was locked out after failed passwords (issue 13): for the event's
    /// source, or (an unspecified source, `::`) for every unregistered source.
    Lockout,
    /// A source became registered (a 2xx to its credentialed REGISTER).
    Registered,
    /// An account breached its call budget (issue 18): its INVITEs are dropped from
    /// every source until `expires_ns`; the source is the one whose INVITE breached it.
    CallBudget,
}

/// An event on the ring buffer.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Event {
    /// The source's address (IPv4 mapped into IPv6).
    pub source: [u8; 16],
    /// An [`EventKind`].
    pub kind: u32,
    /// A [`Reason`] for drops, a [`BanReason`] for bans.
    pub reason: u32,
    /// A [`Method`] number.
    pub method: u32,
    /// 1 if the filter is in dry-run (nothing was dropped or banned).
    pub dry_run: u16,
    /// The [`Transport`] number of the packet that made the event (for a lockout or a
    /// registration, the server's answer).
    pub transport: u16,
    /// For bans and lockouts: when they expire (`CLOCK_MONOTONIC_COARSE` ns).
    pub expires_ns: u64,
    /// The account an answer named (zero padded; see [`crate::sip::pairing::Account`]),
    /// or zeros.
    pub account: [u64; ACCOUNT_WORDS],
}

/// The filter's settings, one entry of an array map.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FilterConfig {
    pub flags: u32,
    /// How many entries of `ports` are used; 0 means none (nothing is inspected).
    pub port_count: u32,
    /// Destination UDP ports that carry SIP.
    pub ports: [u16; MAX_PORTS],
    /// Destination TCP ports that carry SIP in the clear, and over TLS.
    pub tcp_ports: [u16; MAX_PORTS],
    pub tls_ports: [u16; MAX_PORTS],
    /// How many entries of `tcp_ports` and `tls_ports` are used.
    pub tcp_port_count: u32,
    pub tls_port_count: u32,
    /// Seed of the domain hash (see [`crate::domain`]).
    pub domain_seed: u64,
    /// IPv6 sources are keyed by this many leading bits (1..=128).
    pub ipv6_prefix: u32,
    pub _pad: u32,
    /// Per-source buckets, by class (`CLASS_*`; unused slots: no limit).
    pub limits: [Limit; CLASS_SLOTS],
    /// The budget of all untrusted sources together.
    pub untrusted_total: Limit,
    /// The connection (SYN) budget of all untrusted sources together.
    pub untrusted_connections: Limit,
    pub bans: BanConfig,
    /// What the server's answers lead to (issue 13).
    pub auth: AuthConfig,
    /// Scanner User-Agent prefix lengths by first byte: bit `n` of entry
    /// [`scanner::first_byte_slot`](crate::scanner::first_byte_slot)`(b)` is set when some
    /// prefix starting with `b` is `n` bytes long. A User-Agent whose first byte starts no
    /// prefix costs one read.
    pub scanner_lengths: [u64; SCANNER_SLOTS],
    /// The TLS ClientHello policy (issue 14, item 4).
    pub tls: TlsConfig,
}

/// The TLS ClientHello policy, for the TLS program (README, "TLS").
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TlsConfig {
    /// ClientHellos dropped within the window that ban their source, and for how long
    /// (0 ns: the rule is off).
    pub refused_ns: u64,
    pub refused_window_ns: u64,
    pub refused_hits: u32,
    /// The lowest version a client must offer (`tls::TLS1_2`...); 0: any.
    pub min_version: u16,
    /// `TLS_*` flags.
    pub flags: u16,
}

/// [`SourceState::tls_attempts`] slots (a power of two, so the kernel can mask an index).
pub const TLS_ATTEMPT_SLOTS: usize = 4;

/// [`TlsConfig::flags`]: the server name is checked against an allowlist.
pub const TLS_SNI_CHECK: u16 = 1 << 0;
/// [`TlsConfig::flags`]: that allowlist is `tls.server_names` (entries flagged
/// [`crate::domain::DOMAIN_SNI_EXACT`], ...), not the served domains.
pub const TLS_SNI_OWN_LIST: u16 = 1 << 1;
/// [`TlsConfig::flags`]: a ClientHello without a server name is dropped.
pub const TLS_DROP_NO_SNI: u16 = 1 << 2;

/// Entries of `FilterConfig::scanner_lengths`.
pub const SCANNER_SLOTS: usize = 32;

impl FilterConfig {
    /// A UDP port that carries SIP.
    #[inline(always)]
    pub fn is_sip_port(&self, port: u16) -> bool {
        listed(&self.ports, self.port_count, port)
    }

    /// A TCP port that carries SIP in the clear.
    #[inline(always)]
    pub fn is_tcp_port(&self, port: u16) -> bool {
        listed(&self.tcp_ports, self.tcp_port_count, port)
    }

    /// A TCP port that carries SIP over TLS.
    #[inline(always)]
    pub fn is_tls_port(&self, port: u16) -> bool {
        listed(&self.tls_ports, self.tls_port_count, port)
    }

    pub fn has(&self, flag: u32) -> bool {
        self.flags & flag != 0
    }

    /// The source key of an IPv6 address: its first `ipv6_prefix` bits.
    #[inline(always)]
    pub fn ipv6_source_key(&self, address: [u8; 16]) -> SourceKey {
        ipv6_prefix_key(address, self.ipv6_prefix)
    }
}

/// Whether `port` is among the first `count` entries of `ports`.
#[inline(always)]
fn listed(ports: &[u16; MAX_PORTS], count: u32, port: u16) -> bool {
    let mut i = 0;
    while i < MAX_PORTS {
        if (i as u32) < count && ports[i] == port {
            return true;
        }
        i += 1;
    }
    false
}

/// `address` cut to its first `prefix` bits (128 or more keeps it whole).
#[inline(always)]
pub fn ipv6_prefix_key(address: [u8; 16], prefix: u32) -> SourceKey {
    // Two u64 halves: BPF has no 128-bit shifts.
    let [a0, a1, a2, a3, a4, a5, a6, a7, b0, b1, b2, b3, b4, b5, b6, b7] = address;
    let high = u64::from_be_bytes([a0, a1, a2, a3, a4, a5, a6, a7]);
    let low = u64::from_be_bytes([b0, b1, b2, b3, b4, b5, b6, b7]);
    let high_mask = if prefix >= 64 {
        u64::MAX
    } else {
        !(u64::MAX >> prefix)
    };
    let low_mask = if prefix >= 128 {
        u64::MAX
    } else if prefix <= 64 {
        0
    } else {
        !(u64::MAX >> (prefix - 64))
    };
    let (high, low) = (
        (high & high_mask).to_be_bytes(),
        (low & low_mask).to_be_bytes(),
    );
    [
        high[0], high[1], high[2], high[3], high[4], high[5], high[6], high[7], low[0], low[1],
        low[2], low[3], low[4], low[5], low[6], low[7],
    ]
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: plain `#[repr(C)]` integers and arrays of them; every bit pattern is valid
    // and the layouts have no padding.
    unsafe impl aya::Pod for super::Counters {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::AnswerCounters {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::TransactionKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::Transaction {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::Lockout {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::AccountKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::Registration {}
    // SAFETY: as above; explicit padding fields leave no implicit padding.
    unsafe impl aya::Pod for super::FilterConfig {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::Ban {}
    // SAFETY: plain integers, `repr(C)`, no padding.
    unsafe impl aya::Pod for super::ListEntry {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::SourceState {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::Event {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv6Addr;

    /// The hints spread a network's sources over the whole map: IPv4 keys that differ
    /// only in their last bytes, and IPv6 /64 prefixes that differ only in their
    /// fourth group. Keys thrown at random would share a byte 3% of the time here.
    #[test]
    fn registered_hints_spread_neighbouring_sources() {
        let spread = |keys: &mut dyn Iterator<Item = SourceKey>| {
            let mut seen = std::collections::HashSet::new();
            for key in keys {
                let (word, byte) = registered_hint(&key);
                assert!(word < REGISTERED_HINT_WORDS && byte < 8, "{key:?}");
                seen.insert((word, byte));
            }
            seen.len()
        };
        let ipv4 = spread(&mut (0..=u16::MAX).map(|n| {
            let [c, d] = n.to_be_bytes();
            crate::sip::mapped_ipv4([198, 18, c, d])
        }));
        assert!(
            ipv4 > 62_000,
            "{ipv4} of 65,536 IPv4 sources have hints of their own"
        );
        let ipv6 =
            spread(&mut (0..=u16::MAX).map(|n| {
                ipv6_prefix_key(Ipv6Addr::new(0x2001, 0xdb8, 0, n, 0, 0, 0, 1).octets(), 64)
            }));
        assert!(
            ipv6 > 62_000,
            "{ipv6} of 65,536 /64 prefixes have hints of their own"
        );
    }

    #[test]
    fn repeat_offenders_bans_grow_within_the_window_and_the_cap() {
        const S: u64 = 1_000_000_000;
        let rules = BanConfig {
            repeat_factor: 2,
            repeat_window_ns: 86_400 * S,
            repeat_max_ns: 7 * 86_400 * S,
            ..BanConfig::default()
        };
        let now = 1_000_000 * S;
        // A first ban: the rule's length.
        assert_eq!(rules.repeat_length(600 * S, 0, 0, now), 600 * S);
        // Again an hour after the last one ended: twice as long as that one was.
        assert_eq!(
            rules.repeat_length(600 * S, 600 * S, now - 3600 * S, now),
            1200 * S
        );
        // While it still runs (a second rule bans it; the daemon re-bans): grows too.
        assert_eq!(
            rules.repeat_length(600 * S, 1200 * S, now + 60 * S, now),
            2400 * S
        );
        // Up to the cap...
        assert_eq!(
            rules.repeat_length(600 * S, 5 * 86_400 * S, now - S, now),
            7 * 86_400 * S
        );
        // ...but never shorter than the rule itself says (a long rule after a short ban).
        assert_eq!(
            rules.repeat_length(3600 * S, 600 * S, now - S, now),
            3600 * S
        );
        let short_cap = BanConfig {
            repeat_max_ns: 60 * S,
            ..rules
        };
        assert_eq!(
            short_cap.repeat_length(600 * S, 600 * S, now - S, now),
            600 * S
        );
        // Forgotten after the window.
        assert_eq!(
            rules.repeat_length(600 * S, 1200 * S, now - 86_401 * S, now),
            600 * S
        );
        // Off.
        for factor in [0, 1] {
            let off = BanConfig {
                repeat_factor: factor,
                ..rules
            };
            assert_eq!(off.repeat_length(600 * S, 600 * S, now - S, now), 600 * S);
        }
        // Never overflows.
        assert_eq!(
            BanConfig {
                repeat_max_ns: u64::MAX,
                ..rules
            }
            .repeat_length(600 * S, u64::MAX / 2 + 1, u64::MAX, now),
            u64::MAX
        );
    }

    #[test]
    fn a_refused_user_is_one_a_request_reached_for() {
        use AnswerKind::*;
        let kind = |status, credentialed, method: Method| {
            AnswerKind::of(status, credentialed, method as u32)
        };
        assert_eq!(kind(404, false, Method::Register), RejectedUser);
        assert_eq!(kind(403, false, Method::Invite), RejectedUser);
        assert_eq!(kind(404, false, Method::Options), RejectedUser);
        // In-dialog requests: the dialog is gone, nobody was refused.
        for method in [Method::Bye, Method::Notify, Method::Cancel, Method::Update] {
            assert_eq!(kind(404, false, method), Other, "{method:?}");
        }
        assert_eq!(kind(403, true, Method::Bye), Failure, "credentials refused");
        assert_eq!(kind(401, false, Method::Bye), Challenge);
        assert_eq!(kind(200, true, Method::Register), Success);
        assert_eq!(kind(200, false, Method::Register), Other);
    }

    #[test]
    fn reasons_are_numbered_in_order() {
        for (i, reason) in Reason::ALL.iter().enumerate() {
            assert_eq!(*reason as usize, i);
            assert_eq!(Reason::from_number(i as u64), Some(*reason));
        }
        assert_eq!(Reason::from_number(Reason::COUNT as u64), None);
    }

    #[test]
    fn answer_kinds_are_numbered_in_order_and_fit_their_slots() {
        for (i, kind) in AnswerKind::ALL.iter().enumerate() {
            assert_eq!(*kind as usize, i);
        }
        const { assert!(AnswerKind::COUNT <= ANSWER_SLOTS) };
    }

    /// What each tracked source costs in the kernel: the LRU's element is about 64 bytes
    /// besides this (README and the example's `tracked_sources`: about 330 bytes).
    #[test]
    fn source_state_size() {
        assert_eq!(core::mem::size_of::<SourceState>(), 264); // 66 MiB of values at MAX_SOURCES
        assert_eq!(CLASS_REGISTERED, CLASS_COUNT - 1);
        assert_eq!(CLASS_CONNECTIONS, CLASS_REGISTERED - 1);
    }

    #[test]
    fn ipv6_prefix_keys() {
        let a: Ipv6Addr = "2001:db8:5f:1:aaaa:bbbb:cccc:dddd".parse().unwrap();
        let key = |p| Ipv6Addr::from(ipv6_prefix_key(a.octets(), p));
        assert_eq!(key(64), "2001:db8:5f:1::".parse::<Ipv6Addr>().unwrap());
        assert_eq!(key(48), "2001:db8:5f::".parse::<Ipv6Addr>().unwrap());
        assert_eq!(key(80), "2001:db8:5f:1:aaaa::".parse::<Ipv6Addr>().unwrap());
        assert_eq!(key(128), a);
        assert_eq!(key(0), Ipv6Addr::UNSPECIFIED);
    }
}

/// Slots of [`AnswerCounters::kinds`]: a power of two above [`AnswerKind::COUNT`].
pub const ANSWER_SLOTS: usize = 16;

/// What the egress program made of a packet leaving through a filtered interface.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AnswerKind {
    /// Not from a SIP port, not SIP, or a request (the server's own, to a phone).
    NotAnswer = 0,
    /// An answer to no request the ingress program noted: its request came from a
    /// trusted source or before the filter started, was evicted from the full
    /// transaction table, or the answer is to a request the server sent itself.
    Unpaired,
    /// A 401/407 to a request without credentials: the normal first step. Never counted.
    Challenge,
    /// A 401/407 with `stale=true`: good credentials, an old nonce. Not a failure.
    Stale,
    /// A 401/407 without `stale`, or a 403, to a request that carried credentials: a
    /// wrong password.
    Failure,
    /// A 2xx to a request that carried credentials.
    Success,
    /// A 403 or 404 to a request without credentials that names a user to reach (see
    /// [`USER_NAMING_METHODS`]): the server refused the user.
    RejectedUser,
    /// Any other answer to a noted request (1xx, 3xx, 5xx, other 4xx, a 2xx to a
    /// request without credentials).
    Other,
}

impl AnswerKind {
    pub const COUNT: usize = 8;
    pub const ALL: [AnswerKind; Self::COUNT] = [
        AnswerKind::NotAnswer,
        AnswerKind::Unpaired,
        AnswerKind::Challenge,
        AnswerKind::Stale,
        AnswerKind::Failure,
        AnswerKind::Success,
        AnswerKind::RejectedUser,
        AnswerKind::Other,
    ];

    /// The name in `stats` and metric labels.
    pub const fn name(self) -> &'static str {
        match self {
            AnswerKind::NotAnswer => "not_answer",
            AnswerKind::Unpaired => "unpaired",
            AnswerKind::Challenge => "challenge",
            AnswerKind::Stale => "stale",
            AnswerKind::Failure => "failure",
            AnswerKind::Success => "success",
            AnswerKind::RejectedUser => "rejected_user",
            AnswerKind::Other => "other",
        }
    }

    /// The kind of an answer with `status` to a request that did (`credentialed`) or did
    /// not carry credentials; `stale` when its challenge says `stale=true`.
    /// The kind of a final answer `status` to a request of method number `method`
    /// (`stale=true` is looked for apart, in a 401/407 only).
    pub const fn of(status: u16, credentialed: bool, method: u32) -> AnswerKind {
        let names_user = USER_NAMING_METHODS & (1 << (method & 31)) != 0;
        match status {
            401 | 407 | 403 if credentialed => AnswerKind::Failure,
            401 | 407 => AnswerKind::Challenge,
            403 | 404 if names_user => AnswerKind::RejectedUser,
            200..=299 if credentialed => AnswerKind::Success,
            _ => AnswerKind::Other,
        }
    }
}

/// Methods whose 403 or 404 refuses the user they name: requests that reach for a user
/// (a registration, a call, a probe, a subscription, a page), bit `Method::X as u32`. A
/// 404 to an in-dialog BYE or NOTIFY says the dialog is gone, not that the user does not
/// exist: counted toward an enumeration ban, a phone's stray BYEs would ban its office.
pub const USER_NAMING_METHODS: u32 = 1 << Method::Register as u32
    | 1 << Method::Invite as u32
    | 1 << Method::Options as u32
    | 1 << Method::Subscribe as u32
    | 1 << Method::Message as u32;

/// The egress program's counters, per CPU (summed by userspace).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AnswerCounters {
    /// Packets the program saw, by [`AnswerKind`].
    pub kinds: [u64; ANSWER_SLOTS],
    /// Requests the ingress program noted for their answers.
    pub requests_noted: u64,
    /// Requests it could not note: no Call-ID or CSeq in the scanned prefix.
    pub requests_unpairable: u64,
    /// Noted requests that took the slot of another still awaiting its answer (see
    /// [`TransactionSlot`]): that answer will count as unpaired.
    pub requests_displaced: u64,
    /// Accounts locked for one source, and across sources.
    pub lockouts: u64,
    pub account_lockouts: u64,
    /// Registrations learnt (2xx to a credentialed REGISTER).
    pub registrations: u64,
    /// Issue 14, over TCP: messages read after the first of a segment (each also counted
    /// in `kinds`).
    pub stream_later: u64,
    /// Messages over TCP whose header section the segment's end cut: not paired nor
    /// learnt from (a `stale=true` or an `Expires` may be in the part not seen), counted
    /// `not_answer` in `kinds`.
    pub stream_cut: u64,
    /// TCP segments holding more after the [`MAX_ANSWER_STREAM_MESSAGES`] messages read:
    /// the rest is not read.
    pub stream_unread: u64,
}

impl AnswerCounters {
    /// Adds `other` to `self` (summing CPUs).
    pub fn add(&mut self, other: &AnswerCounters) {
        self.combine(other, u64::wrapping_add);
    }

    /// What was counted since `earlier` (a reading of the same counters).
    pub fn since(&self, earlier: &AnswerCounters) -> AnswerCounters {
        let mut change = *self;
        change.combine(earlier, u64::wrapping_sub);
        change
    }

    fn combine(&mut self, other: &AnswerCounters, op: fn(u64, u64) -> u64) {
        for (mine, theirs) in self.kinds.iter_mut().zip(other.kinds) {
            *mine = op(*mine, theirs);
        }
        let AnswerCounters {
            kinds: _,
            requests_noted,
            requests_unpairable,
            requests_displaced,
            lockouts,
            account_lockouts,
            registrations,
            stream_later,
            stream_cut,
            stream_unread,
        } = self;
        *requests_noted = op(*requests_noted, other.requests_noted);
        *requests_unpairable = op(*requests_unpairable, other.requests_unpairable);
        *requests_displaced = op(*requests_displaced, other.requests_displaced);
        *lockouts = op(*lockouts, other.lockouts);
        *account_lockouts = op(*account_lockouts, other.account_lockouts);
        *registrations = op(*registrations, other.registrations);
        *stream_later = op(*stream_later, other.stream_later);
        *stream_cut = op(*stream_cut, other.stream_cut);
        *stream_unread = op(*stream_unread, other.stream_unread);
    }

    pub fn of(&self, kind: AnswerKind) -> u64 {
        self.kinds[kind as usize]
    }

    /// The counters of the walk through TCP segments, by their names in `stats`.
    pub fn stream_rows(&self) -> [(&'static str, u64); 3] {
        [
            ("later_in_segment", self.stream_later),
            ("cut", self.stream_cut),
            ("segments_unread", self.stream_unread),
        ]
    }
}

/// A request the server may answer: what its [`TransactionSlot`] must hold to match.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct TransactionKey {
    /// The requester's [`SourceKey`]: the answer's destination.
    pub source: SourceKey,
    /// [`crate::sip::pairing::transaction_id`].
    pub id: u64,
}

/// What the ingress program noted about a request, for its answer.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Transaction {
    /// The account the request named (its digest username, else its To user): the
    /// first [`crate::sip::pairing::ACCOUNT_BYTES`] of its name, zero padded
    /// ([`Account::name_of`]). Its key is made when its answer is learnt from
    /// ([`Account::from_name`]): not on the request's path.
    pub account: [u64; ACCOUNT_WORDS],
    /// The name's whole length; 0 when the request named no account.
    pub account_len: u32,
    /// `TRANSACTION_*` bits.
    pub flags: u32,
    /// The request's [`Method`] number.
    pub method: u32,
    _pad: u32,
}

impl Transaction {
    pub fn new(name: [u64; ACCOUNT_WORDS], len: usize, flags: u32, method: u32) -> Self {
        Self {
            account: name,
            account_len: len as u32,
            flags,
            method,
            _pad: 0,
        }
    }

    /// The account the request named, keyed with `seed`.
    #[inline(always)]
    pub fn account(&self, seed: u64) -> Account {
        Account::from_name(self.account, self.account_len as usize, seed)
    }
}

/// The request carried Authorization or Proxy-Authorization, or the filter could not see
/// whether it did (its header section went on past the scanned prefix): its 401/407 is a
/// failed password, not a challenge.
pub const TRANSACTION_CREDENTIALED: u32 = 1;

/// One slot of `SF_TRANSACTIONS`, a direct-mapped table (an array indexed by
/// [`TransactionKey::slot`]): noting a request is a write in place, with no allocation
/// nor lock, where an LRU hash map's update cost the request path over 100 ns. A request
/// whose slot holds another transaction still awaiting its answer takes it (counted in
/// `requests_displaced`; that answer then counts as unpaired), so a flood cannot fill
/// the table, only displace: as an LRU's eviction would, at random rather than oldest
/// first, and at random also for an attacker, who cannot compute the seeded slots.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TransactionSlot {
    pub key: TransactionKey,
    pub transaction: Transaction,
    /// 1 while the slot holds a transaction awaiting its final answer, else 0.
    pub live: u64,
}

/// Slots of `SF_TRANSACTIONS` (a power of two). With a thousand transactions awaiting
/// their answers at once, a new one displaces another 1.5% of the time.
pub const MAX_TRANSACTIONS: u32 = 1 << 16;
const _: () = assert!(MAX_TRANSACTIONS.is_power_of_two());

impl TransactionKey {
    /// The slot of `SF_TRANSACTIONS` this transaction is noted in: its id (a seeded hash)
    /// folded with the source.
    #[inline(always)]
    pub fn slot(&self) -> u32 {
        let mut folded = self.id ^ (self.id >> 32);
        for word in self.source.chunks_exact(8) {
            let mut bytes = [0u8; 8];
            bytes.copy_from_slice(word);
            folded ^= u64::from_ne_bytes(bytes);
        }
        (folded ^ (folded >> 32)) as u32 & (MAX_TRANSACTIONS - 1)
    }
}
/// Accounts whose failures are followed at once, per source and across sources (LRU).
pub const MAX_ACCOUNTS: u32 = 1 << 16;
/// Registered sources remembered at once.
pub const MAX_REGISTERED: u32 = 1 << 16;

/// Words of `SF_REGISTERED_HINTS`: a byte per hint, eight to a word (2^20 hints, 1 MiB).
/// With [`MAX_REGISTERED`] sources registered, 6% of the others share a hint with one.
pub const REGISTERED_HINT_WORDS: u32 = 1 << 17;
const _: () = assert!(REGISTERED_HINT_WORDS.is_power_of_two());

/// Where the hint that `key` may hold a registration is kept in `SF_REGISTERED_HINTS`:
/// its word and the byte in it. A byte is set before its source's registration is
/// written (by the egress program, or by the daemon before it attaches) and never
/// cleared, so a byte at 0 means "not registered" for certain, and the ingress program
/// looks `SF_REGISTERED` up only for sources whose byte is set: an array read instead of
/// a hash lookup for every request of a source that never registered (issue 13's
/// bookkeeping cost). A byte, not a bit: two CPUs setting hints in one word at once
/// cannot undo each other's. Unseeded: a sender that picks an address sharing a
/// registered source's byte gains nothing but the lookup it then pays for.
#[inline(always)]
pub fn registered_hint(key: &SourceKey) -> (u32, u32) {
    let mut halves = [0u64; 2];
    for (half, bytes) in halves.iter_mut().zip(key.chunks_exact(8)) {
        let mut word = [0u8; 8];
        word.copy_from_slice(bytes);
        *half = u64::from_ne_bytes(word);
    }
    // Two rounds of fold and multiply, then the top bits: with one, the addresses of
    // an IPv4 /16 fell on a quarter as many bytes (the test below).
    const GOLDEN: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut mixed = halves[0] ^ halves[1].rotate_left(32);
    mixed ^= mixed >> 32;
    mixed = mixed.wrapping_mul(GOLDEN);
    mixed ^= mixed >> 29;
    mixed = mixed.wrapping_mul(GOLDEN);
    let hint = (mixed >> (64 - (REGISTERED_HINT_WORDS.trailing_zeros() + 3))) as u32;
    (hint >> 3, hint & 7)
}

/// An account's failed passwords: per source (key [`AccountKey`] in `SF_LOCKOUTS`) or
/// across sources (key the account's hash in `SF_ACCOUNTS`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Lockout {
    /// Start of the current failure window.
    pub window_ns: u64,
    /// Locked until then (`CLOCK_MONOTONIC_COARSE` ns); 0: not locked.
    pub locked_until_ns: u64,
    /// Failures in the window.
    pub failures: u32,
    /// Credentialed requests dropped by this lockout.
    pub drops: u32,
    /// The account's name (see [`Account`]), for the operator.
    pub name: [u64; ACCOUNT_WORDS],
    /// The source's address (IPv4 mapped), for the operator; zeros across sources.
    pub source: [u8; 16],
}

/// The key of a per-source lockout.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct AccountKey {
    pub source: SourceKey,
    /// [`Account::key`].
    pub account: u64,
}

/// A registered source (`SF_REGISTERED`): the server accepted a credentialed REGISTER
/// from it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Registration {
    /// Registered until then (`CLOCK_MONOTONIC_COARSE` ns), capped.
    pub expires_ns: u64,
    /// The last account registered from it, for the operator.
    pub account: [u64; ACCOUNT_WORDS],
    /// The source's address (IPv4 mapped).
    pub source: [u8; 16],
}

// Issue 18: destination rules and per-account call budgets, applied by the INVITE
// program (`sip_filter_invite`, slot [`PROGRAM_SLOT_INVITE`]) to INVITEs the request
// policy passed.

/// Map names of the destination rules and call budgets.
pub mod destination_names {
    /// The rules, by longest prefix of the dialled number's key
    /// ([`crate::sip::dialled`]): an LPM trie of [`super::DestinationKey`] to
    /// [`super::DestinationRule`].
    pub const RULES: &str = "SF_DEST_RULES";
    /// [`super::DestinationConfig`], one entry.
    pub const CONFIG: &str = "SF_DEST_CONFIG";
    /// Per-CPU [`super::DestinationCounters`], one entry.
    pub const COUNTERS: &str = "SF_DEST_COUNTERS";
    /// Per-CPU [`super::RuleCounters`], indexed by [`super::DestinationRule::id`].
    pub const RULE_COUNTERS: &str = "SF_DEST_RULE_COUNTERS";
    /// New calls per rule and source, and per rule and account
    /// ([`super::CallerKey`] to [`super::Calls`]): the `limit` rules' meters and
    /// `top --destinations`' report.
    pub const CALLERS: &str = "SF_DEST_CALLERS";
    /// Each account's call budget ([`super::CallBudget`], keyed by the account's key).
    pub const BUDGETS: &str = "SF_CALL_BUDGETS";
    /// The INVITE program's per-CPU working memory (the normaliser's, the account and
    /// the number it found).
    pub const SCRATCH: &str = "SF_INVITE_SCRATCH";
    /// The calls counted lately, by source and call ([`super::CallKey`] to
    /// [`super::SeenCall`]): what makes a call count once.
    pub const SEEN_CALLS: &str = "SF_SEEN_CALLS";
    /// The maps a running filter pins for the CLI (`top --destinations`, `stats`).
    pub const PINNED: [&str; 6] = [RULES, CONFIG, COUNTERS, RULE_COUNTERS, CALLERS, BUDGETS];
}

/// The XDP program for INVITEs the request policy passed.
pub const INVITE_PROGRAM_NAME: &str = "sip_filter_invite";

/// Destination rules that can be loaded.
pub const MAX_DESTINATION_RULES: u32 = 16_384;
/// Rule and caller pairs metered and reported ([`destination_names::CALLERS`]).
pub const MAX_DESTINATION_CALLERS: u32 = 65_536;
/// Accounts whose call budgets are kept.
pub const MAX_CALL_BUDGETS: u32 = 65_536;
/// Calls remembered to count once ([`destination_names::SEEN_CALLS`]): more than the new
/// calls of [`SEEN_CALL_NS`] at a thousand a second. Pushed out sooner (a flood of new
/// Call-IDs), a call's resent INVITE counts again: more, never fewer.
pub const MAX_SEEN_CALLS: u32 = 65_536;
/// How long a call's INVITEs count as one: 64 x T1, how long a client retransmits an
/// INVITE (RFC 3261 Timer B); the challenge's round trip is far shorter.
pub const SEEN_CALL_NS: u64 = 32_000_000_000;
/// INVITEs a remembered call lets pass uncounted: two transactions' retransmissions
/// over UDP (7 sends each within Timer B), and two to spare. A sender that makes its
/// calls look alike gets no more.
pub const MAX_CALL_REPEATS: u32 = 16;
/// The meters' windows: a [`CallBudget`]'s minute and hour, a `limit` rule's minute.
pub const MINUTE_NS: u64 = 60_000_000_000;
pub const HOUR_NS: u64 = 60 * MINUTE_NS;

/// [`DestinationRule::action`]: the INVITE is dropped.
pub const DESTINATION_DENY: u32 = 1;
/// The INVITE passes within the rule's new calls per minute, per source and per account;
/// its account's call budget is the lower, limited one.
pub const DESTINATION_LIMIT: u32 = 2;
/// The INVITE passes (a longer prefix excepted from a shorter `deny` or `limit`).
pub const DESTINATION_ALLOW: u32 = 3;

/// [`DestinationConfig::flags`]: destination rules are loaded.
pub const DESTINATION_RULES_ON: u32 = 1;
/// [`DestinationConfig::flags`]: accounts have call budgets.
pub const CALL_BUDGETS_ON: u32 = 2;

/// The key of [`destination_names::RULES`]: `prefix_len` in bits, then the key bytes.
pub type DestinationKey = [u8; crate::sip::dialled::NUMBER_BYTES];

/// A destination rule (an LPM trie value).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DestinationRule {
    /// `DESTINATION_*`.
    pub action: u32,
    /// The rule's index in [`destination_names::RULE_COUNTERS`] (its order in the
    /// configuration).
    pub id: u32,
    /// For `limit`: new calls per minute, per source and per account.
    pub per_minute: u32,
    pub _pad: u32,
}

/// The destination rules' and call budgets' settings, one entry.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DestinationConfig {
    /// `DESTINATION_RULES_ON`, `CALL_BUDGETS_ON`.
    pub flags: u32,
    pub _pad: u32,
    pub international: crate::sip::dialled::InternationalPrefixes,
    /// New INVITEs per minute and per hour for each account (0: no limit)…
    pub per_minute: u32,
    pub per_hour: u32,
    /// …and, of those, to international numbers and `limit` rules' prefixes.
    pub limited_per_minute: u32,
    pub limited_per_hour: u32,
    /// How long an account that breached its budget stays blocked.
    pub block_ns: u64,
}

impl DestinationConfig {
    #[inline(always)]
    pub fn has(&self, flag: u32) -> bool {
        self.flags & flag != 0
    }
}

/// What the INVITE program counted (per CPU).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DestinationCounters {
    /// INVITEs the program examined.
    pub invites: u64,
    /// By [`crate::sip::dialled::DialledKind`]: nothing dialled, a name, a national and an
    /// international number.
    pub dialled: [u64; 4],
    /// Numbers no rule covers.
    pub unmatched: u64,
    /// Accounts that breached their budget (blocks made).
    pub budget_breaches: u64,
    /// INVITEs that named no account (no budget applies).
    pub no_account: u64,
    /// INVITEs without credentials whose account is their From user.
    pub from_accounts: u64,
    /// INVITEs taken for a call counted already ([`SeenCall`]): retransmissions, and the
    /// INVITE resent with credentials after a challenge. The meters count them once.
    pub repeats: u64,
}

/// One rule's counts (per CPU).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RuleCounters {
    /// INVITEs that dialled a number the rule covers.
    pub calls: u64,
    /// Of those, dropped by the rule (`deny`, or `limit` over its rate).
    pub dropped: u64,
}

/// [`CallerKey::kind`].
pub const CALLER_SOURCE: u32 = 0;
pub const CALLER_ACCOUNT: u32 = 1;

/// A rule and a caller: a source ([`SourceKey`]) or an account (its key in the first 8
/// bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct CallerKey {
    pub rule: u32,
    /// `CALLER_*`.
    pub kind: u32,
    pub caller: [u8; 16],
}

/// A caller's calls to a rule's prefix.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Calls {
    /// The current minute's start and new calls in it (the `limit` rule's meter).
    pub minute_start_ns: u64,
    pub minute_calls: u32,
    /// New calls since the entry was made (the report).
    pub calls: u32,
    /// Of those, dropped.
    pub dropped: u32,
    pub _pad: u32,
    /// The account's name, or the source's address (IPv4 mapped), for the operator.
    pub name: [u64; ACCOUNT_WORDS],
}

/// An account's call budget.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CallBudget {
    pub minute_start_ns: u64,
    pub hour_start_ns: u64,
    /// New INVITEs in the current minute and hour, and of those to international
    /// numbers and `limit` prefixes.
    pub minute_calls: u32,
    pub hour_calls: u32,
    pub limited_minute_calls: u32,
    pub limited_hour_calls: u32,
    /// Blocked until then (`CLOCK_MONOTONIC_COARSE` ns) after a breach.
    pub blocked_until_ns: u64,
    /// Breaches so far, and INVITEs dropped for them.
    pub breaches: u32,
    pub drops: u32,
    /// The account's name, for the operator.
    pub name: [u64; ACCOUNT_WORDS],
}

/// A call from a source: the source's key and the call's identity
/// ([`crate::sip::pairing::call_identity`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct CallKey {
    pub source: SourceKey,
    pub call: u64,
}

/// A call counted lately ([`destination_names::SEEN_CALLS`]). A new INVITE with its
/// identity, within [`SEEN_CALL_NS`] of its first, is the same call if it has the same
/// CSeq (a retransmission) or, first without credentials, now has some and a higher CSeq
/// (the request resent after a challenge, RFC 3261 §22.2); any other is a new call. Only
/// INVITEs that passed are remembered: a dropped one's retransmissions meet the meters
/// again, and are dropped again.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SeenCall {
    /// When it was first counted.
    pub first_ns: u64,
    /// The account charged for it last (0: none): an INVITE naming another is charged to
    /// that one too (a From user, then the digest username after the challenge).
    pub account: u64,
    /// The CSeq number of its last INVITE.
    pub cseq: u32,
    /// Its last INVITE carried credentials.
    pub credentialed: u16,
    /// INVITEs it let pass uncounted (at most [`MAX_CALL_REPEATS`]).
    pub repeats: u16,
}

#[cfg(feature = "user")]
mod destination_pod {
    // SAFETY: plain `#[repr(C)]` integers and arrays of them, explicit padding fields:
    // every bit pattern is valid and there is no implicit padding.
    unsafe impl aya::Pod for super::DestinationRule {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::DestinationConfig {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::DestinationCounters {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::RuleCounters {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::CallerKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::Calls {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::CallBudget {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::CallKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::SeenCall {}
}
