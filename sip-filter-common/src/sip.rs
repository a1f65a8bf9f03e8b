//! The SIP parser (RFC 3261 §7), run unchanged by the XDP program and by host tests.
//!
//! It reads a [`ScanBuf`] in one pass over the lines: it finds each line's end a word at
//! a time, and as soon as a line ends classifies it by its header name (compact forms,
//! any case, spaces or tabs before the colon, folded continuation lines) and records
//! where the value is. It records the headers its caller wants ([`HeaderSet`]): the
//! first of each, and of the User-Agent also the last, since a scanner may send two.
//! The kernel wants the User-Agent, To and Route, and passes over the header lines that
//! cannot hold them looking only at line feeds and the byte after each. Nothing is
//! copied or allocated; every loop has a constant bound.
//!
//! Defined limits, all tested:
//! - Only the first [`SCAN_LEN`](crate::scan::SCAN_LEN) bytes are looked at, every line
//!   in them (no line budget an attacker could spend before the User-Agent to pass). A
//!   header beyond them is absent: [`SipMessage::headers_complete`] is then false, and
//!   policy must treat an absent header as "unknown", not as "clean".
//! - The kernel's parses (of the policy's, the stream's or the answer's headers) examine
//!   at most [`MAX_EXAMINED_LINES`] lines; a header section that needs more is marked
//!   [`SipMessage::over_line_budget`], and the policy drops it, never passes it: each
//!   examined line costs a loop step, so a window of short lines the policy must look at
//!   was the cheapest way to spend the filter's CPU. The full parse has no budget.
//! - A line cut by the end of the window is ignored, unless the window holds the whole
//!   datagram (then the datagram's last line needs no line feed).
//! - Empty lines before the start line are skipped (RFC 3261 §7.5).

use crate::{
    bounded::{isolated, repeat},
    domain::HashState,
    ip::{parse_ipv4, parse_ipv6, IpState},
    scan::{
        bytes_equal, first_flagged_byte, low_bytes_mask, word_of, zero_bytes, ScanBuf, Vol,
        ASCII_LOWER, BUF_WORDS, HIGH, SCAN_LEN, TAIL_WORDS,
    },
    scanner::AgentState,
};

/// The most lines the window can hold: a header line is at least a byte and its line
/// feed. It bounds the parse's loop; it is no budget (the module's limits).
pub const MAX_LINES: usize = SCAN_LEN / 2 + 1;
/// The most lines a kernel parse examines, the start line and the empty line included
/// (lines it skips by their first two bytes do not count). Real header sections hold a few
/// dozen such lines: 128 of them in the window average under 16 bytes a line, which only
/// a message built to cost the parser has.
pub const MAX_EXAMINED_LINES: usize = 128;
/// Spaces and tabs the line scan skips around a header's colon (a multiple of 8). A
/// longer run is left at the start of the value, where [`value_of`] skips the rest.
const MAX_WHITESPACE: usize = 24;
/// Longest Request-URI host examined (a DNS name is at most 253 bytes).
pub const MAX_HOST_LEN: usize = 256;

/// A byte range `start..end` of the scan buffer. `end == 0` means absent (no value can
/// end at offset 0: the start line comes first); a present value may be empty.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Span {
    pub start: u16,
    pub end: u16,
}

impl Span {
    pub const ABSENT: Span = Span { start: 0, end: 0 };

    #[inline(always)]
    pub fn new(start: usize, end: usize) -> Self {
        Self {
            start: start as u16,
            end: end as u16,
        }
    }
    #[inline(always)]
    pub fn is_present(self) -> bool {
        self.end != 0
    }
    #[inline(always)]
    pub fn len(self) -> usize {
        usize::from(self.end.saturating_sub(self.start))
    }
    #[inline(always)]
    pub fn is_empty(self) -> bool {
        self.len() == 0
    }
    #[inline(always)]
    pub fn start(self) -> usize {
        usize::from(self.start)
    }
    #[inline(always)]
    pub fn end(self) -> usize {
        usize::from(self.end)
    }
}

/// Request methods: RFC 3261 and its extensions. `None` marks a message that is not a
/// request; the numbers index per-method counters.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    None = 0,
    Invite,
    Ack,
    Bye,
    Cancel,
    Options,
    Register,
    Prack,
    Subscribe,
    Notify,
    Publish,
    Info,
    Refer,
    Message,
    Update,
    Other,
}

impl Method {
    pub const COUNT: usize = 16;
    /// Every method, in counter order.
    pub const ALL: [Method; Self::COUNT] = [
        Method::None,
        Method::Invite,
        Method::Ack,
        Method::Bye,
        Method::Cancel,
        Method::Options,
        Method::Register,
        Method::Prack,
        Method::Subscribe,
        Method::Notify,
        Method::Publish,
        Method::Info,
        Method::Refer,
        Method::Message,
        Method::Update,
        Method::Other,
    ];

    /// The method numbered `n` (see [`Method::ALL`]); `Other` out of range.
    pub fn from_u8(n: u8) -> Method {
        Self::ALL[usize::from(n) & (Self::COUNT - 1)]
    }

    /// The method's name as written on the wire; `other` and `none` for the two catch-alls.
    pub const fn name(self) -> &'static str {
        match self {
            Method::None => "none",
            Method::Invite => "INVITE",
            Method::Ack => "ACK",
            Method::Bye => "BYE",
            Method::Cancel => "CANCEL",
            Method::Options => "OPTIONS",
            Method::Register => "REGISTER",
            Method::Prack => "PRACK",
            Method::Subscribe => "SUBSCRIBE",
            Method::Notify => "NOTIFY",
            Method::Publish => "PUBLISH",
            Method::Info => "INFO",
            Method::Refer => "REFER",
            Method::Message => "MESSAGE",
            Method::Update => "UPDATE",
            Method::Other => "other",
        }
    }

    /// Methods are case-sensitive (RFC 3261 §7.1): `invite` is an extension method.
    /// `first` holds the token's first 8 bytes, `second` the next 8, both masked to it.
    #[inline(always)]
    fn from_token(len: usize, first: u64, second: u64) -> Method {
        const INVITE: u64 = word_of(b"INVITE");
        const ACK: u64 = word_of(b"ACK");
        const BYE: u64 = word_of(b"BYE");
        const CANCEL: u64 = word_of(b"CANCEL");
        const OPTIONS: u64 = word_of(b"OPTIONS");
        const REGISTER: u64 = word_of(b"REGISTER");
        const PRACK: u64 = word_of(b"PRACK");
        const SUBSCRIB: u64 = word_of(b"SUBSCRIB");
        const E: u64 = word_of(b"E");
        const NOTIFY: u64 = word_of(b"NOTIFY");
        const PUBLISH: u64 = word_of(b"PUBLISH");
        const INFO: u64 = word_of(b"INFO");
        const REFER: u64 = word_of(b"REFER");
        const MESSAGE: u64 = word_of(b"MESSAGE");
        const UPDATE: u64 = word_of(b"UPDATE");
        match (len, first) {
            (6, INVITE) => Method::Invite,
            (3, ACK) => Method::Ack,
            (3, BYE) => Method::Bye,
            (6, CANCEL) => Method::Cancel,
            (7, OPTIONS) => Method::Options,
            (8, REGISTER) => Method::Register,
            (5, PRACK) => Method::Prack,
            (9, SUBSCRIB) if second == E => Method::Subscribe,
            (6, NOTIFY) => Method::Notify,
            (7, PUBLISH) => Method::Publish,
            (4, INFO) => Method::Info,
            (5, REFER) => Method::Refer,
            (7, MESSAGE) => Method::Message,
            (6, UPDATE) => Method::Update,
            _ => Method::Other,
        }
    }
}

/// The headers whose values the parser records (the first occurrence of each; for Via
/// that is the topmost).
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Header {
    UserAgent = 0,
    To,
    From,
    CallId,
    CSeq,
    Contact,
    Via,
    ContentLength,
    /// The topmost Route (RFC 3261 §20.34): where a proxy routes an in-dialog request.
    Route,
    /// Authorization or Proxy-Authorization (RFC 3261 §22): a request's credentials.
    Credentials,
    /// WWW-Authenticate or Proxy-Authenticate: an answer's challenge.
    Challenge,
    /// Expires: in a 2xx to a REGISTER, how long the registration lasts.
    Expires,
}

/// Slots of the per-header arrays: a power of two above [`Header::COUNT`], so the kernel
/// can mask an index into range.
const HEADER_SLOTS: usize = 16;

impl Header {
    pub const COUNT: usize = 12;
    pub const ALL: [Header; Self::COUNT] = [
        Header::UserAgent,
        Header::To,
        Header::From,
        Header::CallId,
        Header::CSeq,
        Header::Contact,
        Header::Via,
        Header::ContentLength,
        Header::Route,
        Header::Credentials,
        Header::Challenge,
        Header::Expires,
    ];

    /// Classifies a header name of `len` bytes: `first`/`second` hold its first and next
    /// 8 bytes, folded to lower case and masked to the name.
    #[inline(always)]
    fn from_name(len: usize, first: u64, second: u64) -> Option<Header> {
        const USER_AGE: u64 = word_of(b"user-age");
        const NT: u64 = word_of(b"nt");
        const TO: u64 = word_of(b"to");
        const FROM: u64 = word_of(b"from");
        const CALL_ID: u64 = word_of(b"call-id");
        const CSEQ: u64 = word_of(b"cseq");
        const CONTACT: u64 = word_of(b"contact");
        const VIA: u64 = word_of(b"via");
        const CONTENT_: u64 = word_of(b"content-");
        const LENGTH: u64 = word_of(b"length");
        const T: u64 = word_of(b"t");
        const F: u64 = word_of(b"f");
        const I: u64 = word_of(b"i");
        const M: u64 = word_of(b"m");
        const V: u64 = word_of(b"v");
        const L: u64 = word_of(b"l");
        const ROUTE: u64 = word_of(b"route");
        const AUTHORIZ: u64 = word_of(b"authoriz");
        const ATION: u64 = word_of(b"ation");
        const PROXY_AU: u64 = word_of(b"proxy-au");
        const THORIZAT: u64 = word_of(b"thorizat");
        const THENTICA: u64 = word_of(b"thentica");
        const WWW_AUTH: u64 = word_of(b"www-auth");
        const ENTICATE: u64 = word_of(b"enticate");
        const EXPIRES: u64 = word_of(b"expires");
        match (len, first) {
            (10, USER_AGE) if second == NT => Some(Header::UserAgent),
            (2, TO) | (1, T) => Some(Header::To),
            (4, FROM) | (1, F) => Some(Header::From),
            (7, CALL_ID) | (1, I) => Some(Header::CallId),
            (4, CSEQ) => Some(Header::CSeq),
            (7, CONTACT) | (1, M) => Some(Header::Contact),
            (3, VIA) | (1, V) => Some(Header::Via),
            (14, CONTENT_) if second == LENGTH => Some(Header::ContentLength),
            (1, L) => Some(Header::ContentLength),
            (5, ROUTE) => Some(Header::Route),
            // Names longer than 16 bytes are told apart by their first 16.
            (13, AUTHORIZ) if second == ATION => Some(Header::Credentials),
            (19, PROXY_AU) if second == THORIZAT => Some(Header::Credentials),
            (16, WWW_AUTH) if second == ENTICATE => Some(Header::Challenge),
            (18, PROXY_AU) if second == THENTICA => Some(Header::Challenge),
            (7, EXPIRES) => Some(Header::Expires),
            _ => None,
        }
    }
}

/// The Request-URI's scheme.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheme {
    Sip,
    Sips,
    Tel,
    /// A presence URI (RFC 3859, `SUBSCRIBE pres:alice@example.com`): its host is
    /// parsed and judged as a SIP URI's.
    Pres,
    /// An instant-messaging URI (RFC 3860, `MESSAGE im:alice@example.com`): likewise.
    Im,
    /// Any other scheme (`urn:`, …): no host is parsed.
    Other,
}

impl Scheme {
    fn from_u8(n: u8) -> Scheme {
        match n {
            0 => Scheme::Sip,
            1 => Scheme::Sips,
            2 => Scheme::Tel,
            3 => Scheme::Pres,
            4 => Scheme::Im,
            _ => Scheme::Other,
        }
    }
}

/// What the Request-URI's host is.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HostKind {
    /// No host: a `tel:` or other non-SIP URI.
    None,
    /// A name (or something that is not a valid IP literal).
    Name,
    /// An IPv4 literal, in [`RequestUri::address`] as an IPv4-mapped IPv6 address.
    Ipv4,
    /// A bracketed IPv6 literal, in [`RequestUri::address`].
    Ipv6,
}

impl HostKind {
    fn from_u8(n: u8) -> HostKind {
        match n {
            1 => HostKind::Name,
            2 => HostKind::Ipv4,
            3 => HostKind::Ipv6,
            _ => HostKind::None,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequestUri {
    pub scheme: Scheme,
    /// The user part (`sip:user@host`), or the number of a `tel:` URI.
    pub user: Span,
    /// The host, without brackets for IPv6 and without a trailing dot.
    pub host: Span,
    pub host_kind: HostKind,
    /// The parsed address of an IP-literal host.
    pub address: [u8; 16],
    /// The port, 0 when absent.
    pub port: u16,
}

impl RequestUri {
    /// What a response carries in place of a Request-URI.
    pub const NONE: RequestUri = RequestUri {
        scheme: Scheme::Other,
        user: Span::ABSENT,
        host: Span::ABSENT,
        host_kind: HostKind::None,
        address: [0; 16],
        port: 0,
    };
}

/// The start line, as host code likes to match on it ([`SipMessage::start`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartLine {
    Request { method: Method, uri: RequestUri },
    Response { status: u16 },
}

/// What the parser made of a SIP message.
///
/// Flat, not an enum of request and response: every field is set on every path. With
/// an enum, the compiler re-tested the variant after the header pass from a value the
/// 6.1 verifier no longer connected to the first test, walked "response handled as a
/// request", and refused the copy of fields no path had written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SipMessage {
    /// A request's method; [`Method::None`] for a response.
    pub method: Method,
    /// A response's status code; 0 for a request.
    pub status: u16,
    /// A request's Request-URI; [`RequestUri::NONE`] for a response.
    pub uri: RequestUri,
    /// Value spans, indexed by [`Header`] (leading whitespace skipped, trailing CR not
    /// included; a folded value spans its continuation lines).
    pub headers: [Span; Header::COUNT],
    /// User-Agent header lines in the part examined (RFC 3261 allows one).
    pub user_agents: u16,
    /// The last of several User-Agents ([`Span::ABSENT`] unless `user_agents > 1`).
    pub last_user_agent: Span,
    /// The empty line ending the header section was found: every header was examined.
    pub headers_complete: bool,
    /// A kernel parse stopped at [`MAX_EXAMINED_LINES`] before the header section's end.
    pub over_line_budget: bool,
}

impl SipMessage {
    #[inline(always)]
    pub fn header(&self, h: Header) -> Span {
        self.headers[h as usize]
    }
    pub fn is_request(&self) -> bool {
        self.status == 0
    }
    pub fn start(&self) -> StartLine {
        if self.is_request() {
            StartLine::Request {
                method: self.method,
                uri: self.uri,
            }
        } else {
            StartLine::Response {
                status: self.status,
            }
        }
    }
}

/// What a UDP payload on a SIP port is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Payload {
    Sip(SipMessage),
    /// A keep-alive: empty, only CR/LF (RFC 5626 §3.5.1), or a STUN message (RFC 5389),
    /// which SIP outbound also sends to the SIP port.
    Keepalive,
    /// Neither SIP nor a keep-alive.
    NotSip,
}

/// The STUN magic cookie, bytes 4..8 of every RFC 5389 message.
const STUN_MAGIC_COOKIE: u32 = 0x2112_a442;

/// The parser's working memory: the payload and every loop-carried variable (see
/// [`Vol`] for why they live here). The kernel keeps one per CPU in a map value.
#[repr(C)]
pub struct Scratch {
    pub buf: ScanBuf,
    lines: LineState,
    pub ip: IpState,
    pub hash: HashState,
    pub agent: AgentState,
    start: StartState,
}

impl Default for Scratch {
    fn default() -> Self {
        Self::new()
    }
}

impl Scratch {
    pub const fn new() -> Self {
        Self {
            buf: ScanBuf::new(),
            lines: LineState::new(),
            ip: IpState::new(),
            hash: HashState::new(),
            agent: AgentState::new(),
            start: StartState::new(),
        }
    }

    /// Copies a payload in, as the kernel does; returns the bytes held (at most
    /// [`SCAN_LEN`]).
    pub fn fill(&mut self, payload: &[u8]) -> usize {
        let (buf, len) = ScanBuf::from_payload(payload);
        self.buf = buf;
        len
    }
}

#[repr(C)]
struct LineState {
    /// Where the start line begins: after up to two leading CRLFs.
    origin: Vol<u16>,
    /// Where the start line's content ends (before its CRLF).
    start_line_end: Vol<u16>,
    /// Lines examined so far, the start line included.
    count: Vol<u16>,
    /// Where the next line to look at begins.
    next_line: Vol<u16>,
    /// Where the search for that line's end goes on.
    cursor: Vol<u16>,
    /// Non-zero while lines are being skipped (see [`skip_lines`]).
    skipping: Vol<u16>,
    /// Where skipping goes on: line starts from here on are looked at.
    skip_from: Vol<u16>,
    /// 0x80 when the byte before `skip_from` is a line feed (a line starts there).
    skip_carry: Vol<u64>,
    /// Every header was examined: the empty line was reached, or the whole datagram.
    headers_complete: Vol<u16>,
    /// The scan stopped at the empty line.
    scan_done: Vol<u16>,
    /// The scan stopped at [`MAX_EXAMINED_LINES`].
    over_budget: Vol<u16>,
    /// The header slot a folded continuation line belongs to; `NO_HEADER` for none.
    last_header: Vol<u16>,
    /// User-Agent header lines seen.
    agents: Vol<u16>,
    /// Indexed by [`Header`]; slot [`REPEATED_AGENT`] holds the last of several
    /// User-Agents.
    headers: [Vol<Span>; HEADER_SLOTS],
}

impl LineState {
    const fn new() -> Self {
        Self {
            origin: Vol::new(0),
            start_line_end: Vol::new(0),
            count: Vol::new(0),
            next_line: Vol::new(0),
            cursor: Vol::new(0),
            skipping: Vol::new(0),
            skip_from: Vol::new(0),
            skip_carry: Vol::new(0),
            headers_complete: Vol::new(0),
            scan_done: Vol::new(0),
            over_budget: Vol::new(0),
            last_header: Vol::new(0),
            agents: Vol::new(0),
            headers: [Vol::new(Span::ABSENT); HEADER_SLOTS],
        }
    }
}

/// The start line's fields, as [`parse_start_line`] leaves them: scalars only (a
/// volatile copy of a whole struct compiles to partial register spills that the
/// verifier refuses).
#[repr(C)]
struct StartState {
    valid: Vol<bool>,
    method: Vol<u8>,
    status: Vol<u16>,
    scheme: Vol<u8>,
    user: Vol<Span>,
    host: Vol<Span>,
    host_kind: Vol<u8>,
    port: Vol<u16>,
    address: [Vol<u8>; 16],
}

impl StartState {
    const fn new() -> Self {
        Self {
            valid: Vol::new(false),
            method: Vol::new(0),
            status: Vol::new(0),
            scheme: Vol::new(0),
            user: Vol::new(Span::ABSENT),
            host: Vol::new(Span::ABSENT),
            host_kind: Vol::new(0),
            port: Vol::new(0),
            address: [Vol::new(0); 16],
        }
    }

    fn set_address(&mut self, address: [u8; 16]) {
        for (slot, byte) in self.address.iter_mut().zip(address) {
            slot.set(byte);
        }
    }

    fn address(&self) -> [u8; 16] {
        let mut address = [0u8; 16];
        for (byte, slot) in address.iter_mut().zip(self.address.iter()) {
            *byte = slot.get();
        }
        address
    }

    fn clear_uri(&mut self) {
        self.scheme.set(Scheme::Other as u8);
        self.user.set(Span::ABSENT);
        self.host.set(Span::ABSENT);
        self.host_kind.set(HostKind::None as u8);
        self.port.set(0);
        self.set_address([0; 16]);
    }

    fn load(&self) -> Option<StartFields> {
        if !self.valid.get() {
            return None;
        }
        let address = self.address();
        let uri = RequestUri {
            scheme: Scheme::from_u8(self.scheme.get()),
            user: self.user.get(),
            host: self.host.get(),
            host_kind: HostKind::from_u8(self.host_kind.get()),
            address,
            port: self.port.get(),
        };
        Some((Method::from_u8(self.method.get()), self.status.get(), uri))
    }
}

/// The header slot of the last User-Agent when there are several (RFC 3261 allows one;
/// a scanner may add a harmless one before its own).
const REPEATED_AGENT: usize = Header::COUNT;
const _: () = assert!(REPEATED_AGENT < HEADER_SLOTS);
/// `LineState::last_header` when the last header line is not one we record.
const NO_HEADER: u16 = REPEATED_AGENT as u16 + 1;

/// Which headers a parse records, a bit per [`Header`].
pub type HeaderSet = u16;
/// Every header the parser knows (host tools and tests).
pub const ALL_HEADERS: HeaderSet = (1 << Header::COUNT) - 1;
/// The headers the kernel's policy reads: the User-Agent (scanners); for a request
/// whose Request-URI is not ours, the topmost Route and To, whose tag marks a request
/// inside a dialog ([`routing_of`]); and what pairs the server's answer with the request
/// ([`pairing`]): Call-ID, CSeq, the credentials and the To user.
pub const POLICY_HEADERS: HeaderSet = 1 << Header::UserAgent as u16
    | 1 << Header::To as u16
    | 1 << Header::Route as u16
    | 1 << Header::CallId as u16
    | 1 << Header::CSeq as u16
    | 1 << Header::Credentials as u16;

/// The headers the egress program reads in an answer ([`pairing`]).
pub const ANSWER_HEADERS: HeaderSet = 1 << Header::CallId as u16
    | 1 << Header::CSeq as u16
    | 1 << Header::Challenge as u16
    | 1 << Header::Expires as u16
    | 1 << Header::Contact as u16;

/// How the first two bytes of a header line (folded to lower case) may begin a header:
/// its name's first two letters, or a one-letter compact name ([`COMPACT`] as the
/// second: a colon or a blank follows it).
const COMPACT: u8 = 0;

/// The beginnings a line of `header` may have (see [`Header::from_name`]); unused pairs
/// repeat the first.
const fn header_beginnings(header: Header) -> [(u8, u8); 2] {
    match header {
        Header::UserAgent => [(b'u', b's'); 2],
        Header::To => [(b't', b'o'), (b't', COMPACT)],
        Header::From => [(b'f', b'r'), (b'f', COMPACT)],
        Header::CallId => [(b'c', b'a'), (b'i', COMPACT)],
        Header::CSeq => [(b'c', b's'); 2],
        Header::Contact => [(b'c', b'o'), (b'm', COMPACT)],
        Header::Via => [(b'v', b'i'), (b'v', COMPACT)],
        Header::ContentLength => [(b'c', b'o'), (b'l', COMPACT)],
        Header::Route => [(b'r', b'o'); 2],
        // Authorization, Proxy-Authorization.
        Header::Credentials => [(b'a', b'u'), (b'p', b'r')],
        // WWW-Authenticate, Proxy-Authenticate.
        Header::Challenge => [(b'w', b'w'), (b'p', b'r')],
        Header::Expires => [(b'e', b'x'); 2],
    }
}

/// Beginnings in [`examined_beginnings`]' answer (a set with fewer repeats one: the
/// compiler folds the repeated comparison away).
const EXAMINED_BEGINNINGS: usize = 12;

/// The beginnings (first two bytes, lower case; see [`COMPACT`]) of the header lines a
/// scan for `WANTED` must examine, if it can skip the others: those of the wanted
/// headers ([`header_beginnings`]). `None` for a full parse: every line is examined.
/// Lines that cannot hold a wanted header (Contact, Content-Type, Allow, Accept,
/// Record-Route, … for the policy's headers) are skipped without a step of their own.
const fn examined_beginnings(wanted: HeaderSet) -> Option<[(u8, u8); EXAMINED_BEGINNINGS]> {
    if wanted == ALL_HEADERS {
        return None;
    }
    let mut pairs = [(0u8, 0u8); EXAMINED_BEGINNINGS];
    let mut count = 0;
    let mut h = 0;
    while h < Header::COUNT {
        if wanted & (1 << h) != 0 {
            let beginnings = header_beginnings(Header::ALL[h]);
            let mut b = 0;
            while b < beginnings.len() {
                let pair = beginnings[b];
                let mut known = false;
                let mut k = 0;
                while k < count {
                    known |= pairs[k].0 == pair.0 && pairs[k].1 == pair.1;
                    k += 1;
                }
                if !known {
                    assert!(count < EXAMINED_BEGINNINGS, "more beginnings than slots");
                    pairs[count] = pair;
                    count += 1;
                }
                b += 1;
            }
        }
        h += 1;
    }
    if count == 0 {
        return None;
    }
    let mut k = count;
    while k < EXAMINED_BEGINNINGS {
        pairs[k] = pairs[0];
        k += 1;
    }
    Some(pairs)
}

/// A line's first two bytes (folded to lower case) as one bit of a 64-bit set: a hash
/// of both, chosen so that the beginnings of common headers the kernel does not read
/// (Contact, Content-*, Allow, Accept, Record-Route, Max-Forwards, Supported, Session-
/// Expires, P-*, X-*) fall outside the kernel's sets (`a_wanted_header_is_never_skipped_
/// by_its_first_two_bytes`). A few ASCII operations and no branch: the verifier walks
/// this in every line's step.
#[inline(always)]
const fn beginning_bit(first: u8, second: u8) -> u64 {
    1 << beginning_index(first, second)
}

/// The bit [`beginning_bit`] sets.
#[inline(always)]
const fn beginning_index(first: u8, second: u8) -> u64 {
    let (a, b) = ((first | 0x20) as u64, (second | 0x20) as u64);
    (((a * 9) ^ (b * 4)) >> 3) & 63
}

/// The first bytes of the lines a partial parse examines whatever their name: a folded
/// continuation (space, tab) and the empty line (CR, LF). As bits of a 64-bit set.
const BLANK_OR_LINE_END: u64 = 1 << b' ' | 1 << b'\t' | 1 << b'\r' | 1 << b'\n';

/// 1 when a header line beginning with `first`, `second` must be examined by a parse
/// whose [`examined_beginning_bits`] are `beginnings`, else 0: it may begin a wanted
/// header, continue one (folded) or be the empty line. Arithmetic without a branch, so
/// that [`skip_lines`] can test a line start in each word it looks at.
#[inline(always)]
const fn examined_bit(beginnings: u64, first: u8, second: u8) -> u64 {
    // 1 when `first` is below 64, where the bytes of BLANK_OR_LINE_END are.
    let below_64 = ((first as u64 + 0xc0) >> 8) ^ 1;
    let blank_or_line_end = (BLANK_OR_LINE_END >> (first & 63)) & below_64;
    ((beginnings >> beginning_index(first, second)) & 1) | blank_or_line_end
}

/// The set of [`beginning_bit`]s of [`examined_beginnings`]: a line whose bit is not in
/// it cannot begin a wanted header; one whose bit is may (another beginning can share a
/// bit: such a line is examined for nothing). `None` for a full parse.
const fn examined_beginning_bits(wanted: HeaderSet) -> Option<u64> {
    let Some(beginnings) = examined_beginnings(wanted) else {
        return None;
    };
    let mut bits = 0;
    let mut b = 0;
    while b < EXAMINED_BEGINNINGS {
        let (first, second) = beginnings[b];
        bits |= if second == COMPACT {
            beginning_bit(first, b':') | beginning_bit(first, b' ') | beginning_bit(first, b'\t')
        } else {
            beginning_bit(first, second)
        };
        b += 1;
    }
    Some(bits)
}

/// Classifies and parses a payload of `len` bytes held in `scratch.buf`, recording every
/// header. `whole` says whether the buffer holds the whole datagram (not a first
/// fragment, not cut at [`SCAN_LEN`]).
pub fn parse(scratch: &mut Scratch, len: usize, whole: bool) -> Payload {
    parse_wanted::<ALL_HEADERS>(scratch, len, whole)
}

/// [`parse`], recording only the headers in `WANTED`.
pub fn parse_wanted<const WANTED: HeaderSet>(
    scratch: &mut Scratch,
    len: usize,
    whole: bool,
) -> Payload {
    match parse_in_place::<WANTED>(scratch, len, whole) {
        Kind::Keepalive => Payload::Keepalive,
        Kind::NotSip => Payload::NotSip,
        Kind::Sip => {
            let Some((method, status, uri)) = scratch.start.load() else {
                return Payload::NotSip;
            };
            let buf = &scratch.buf;
            let mut headers = [Span::ABSENT; Header::COUNT];
            for (out, kept) in headers.iter_mut().zip(scratch.lines.headers.iter()) {
                *out = value_of(buf, kept.get());
            }
            Payload::Sip(SipMessage {
                method,
                status,
                uri,
                headers,
                user_agents: scratch.lines.agents.get(),
                last_user_agent: value_of(buf, scratch.repeated_agent()),
                headers_complete: scratch.headers_complete(),
                over_line_budget: scratch.over_line_budget(),
            })
        }
    }
}

/// What [`parse_in_place`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A SIP message: its fields are in the scratch (see [`Scratch::method_number`] and
    /// the accessors beside it).
    Sip,
    Keepalive,
    NotSip,
}

/// [`parse_wanted`], leaving the message's fields in `scratch` instead of returning
/// them: the kernel reads them from there one scalar at a time, rather than holding a
/// copy of the whole message on its 512-byte stack.
pub fn parse_in_place<const WANTED: HeaderSet>(
    scratch: &mut Scratch,
    len: usize,
    whole: bool,
) -> Kind {
    let len = if len > SCAN_LEN { SCAN_LEN } else { len };
    let Scratch {
        buf,
        lines,
        ip,
        start,
        ..
    } = scratch;
    if is_keepalive(buf, len) {
        return Kind::Keepalive;
    }
    scan_lines::<WANTED>(buf, lines, len, whole);
    if lines.count.get() == 0 {
        return Kind::NotSip;
    }
    let start_line = Span::new(
        usize::from(lines.origin.get()),
        usize::from(lines.start_line_end.get()),
    );
    // In a loop body of its own (see `crate::bounded`), results through memory.
    isolated(&mut |_| {
        parse_start_line(buf, ip, start, start_line);
        false
    });
    if !start.valid.get() {
        return Kind::NotSip;
    }
    Kind::Sip
}

/// The fields of the message [`parse_in_place`] left, read one at a time.
impl Scratch {
    /// A response has a status; a request has none.
    pub fn is_request(&self) -> bool {
        self.start.status.get() == 0
    }
    /// A response's status code; 0 for a request.
    pub fn status(&self) -> u16 {
        self.start.status.get()
    }
    /// The request's [`Method`] as a number (`Method::X as usize`).
    pub fn method_number(&self) -> usize {
        usize::from(self.start.method.get())
    }
    /// The Request-URI's host.
    pub fn host(&self) -> Span {
        self.start.host.get()
    }
    /// The Request-URI's user part (a `tel:` URI's number).
    pub fn user(&self) -> Span {
        self.start.user.get()
    }
    /// The Request-URI's [`HostKind`] as a number.
    pub fn host_kind_number(&self) -> usize {
        usize::from(self.start.host_kind.get())
    }
    /// The Request-URI's IP-literal host, parsed.
    pub fn address(&self) -> [u8; 16] {
        self.start.address()
    }
    /// A recorded header's value.
    pub fn header(&self, header: Header) -> Span {
        self.lines.headers[header as usize & (HEADER_SLOTS - 1)].get()
    }
    /// User-Agent header lines seen.
    pub fn agent_count(&self) -> usize {
        usize::from(self.lines.agents.get())
    }
    /// The last of several User-Agents (absent unless [`Scratch::agent_count`] > 1), as
    /// recorded: see [`value_of`].
    pub fn repeated_agent(&self) -> Span {
        self.lines.headers[REPEATED_AGENT].get()
    }
    /// Whether every header was examined.
    pub fn headers_complete(&self) -> bool {
        self.lines.headers_complete.get() != 0
    }
    /// Whether the parse stopped at [`MAX_EXAMINED_LINES`] (see the module's limits).
    pub fn over_line_budget(&self) -> bool {
        self.lines.over_budget.get() != 0
    }
}

/// The value of the first From header (`From` or `f`, any case) of the message the
/// parser left in `scratch`, for a parse that does not record it: [`POLICY_HEADERS`]
/// passes over its lines, and only the INVITE program needs it (adding it there would
/// cost every request a line examined). Looked for as [`skip_lines`] does, at the bytes
/// after each line feed, from the start line's end to the empty line or the first zero
/// byte (the payload's end: the words after it are cleared). [`Span::ABSENT`] if there
/// is none there, if the first line named From is no header line (no colon), or if its
/// line is cut by the end of the window. The value ends with its line: a folded
/// continuation is not followed.
#[inline(never)]
pub fn find_from_header(scratch: &Scratch) -> Span {
    let buf = &scratch.buf;
    let from = usize::from(scratch.lines.start_line_end.get());
    let first_word = from >> 3;
    // Where the header line starts: the first line start, after the start line and
    // before the header section's end, whose name is `from` or `f`. Flagged a word at a
    // time, without a branch per line: each byte's flag says what the bytes from it are.
    // Laundered: knowing the words below it, the compiler would drop the masks of the
    // reads, which are what proves them in bounds to the verifier.
    let scan_len = buf.launder(SCAN_LEN);
    let line = buf.search(
        (SCAN_LEN / 8 / FROM_SEARCH_WORDS + 1) as u32,
        SCAN_LEN,
        |i| {
            for w in 0..FROM_SEARCH_WORDS {
                let k = first_word + i * FROM_SEARCH_WORDS + w;
                if k * 8 >= scan_len {
                    return Some(SCAN_LEN);
                }
                let word = buf.word(k);
                // The high bit of each byte that follows a line feed (the 8 bytes from
                // the one before the word's first); in the first word, from the start
                // line's end.
                let mut starts = bytes_equal(buf.window((k * 8).wrapping_sub(1)), b'\n');
                if w == 0 && i == 0 {
                    starts &= u64::MAX << ((from & 7) * 8);
                }
                let zeros = zero_bytes(word);
                if starts | zeros == 0 {
                    continue; // most words: inside a line
                }
                // The empty line, or a zero byte anywhere: the end of the headers.
                let ends = (starts & (bytes_equal(word, b'\r') | bytes_equal(word, b'\n'))) | zeros;
                // Lines starting with an `f`, before the first end: rare, so only
                // words holding one are looked at further.
                let mut candidates = starts & bytes_equal(word | ASCII_LOWER, b'f');
                if ends != 0 {
                    candidates &= (ends & ends.wrapping_neg()).wrapping_sub(1);
                }
                if candidates != 0 {
                    // The byte `n` places on from each byte, lower case (for letters).
                    let ahead = |n: usize| buf.window(k * 8 + n) | ASCII_LOWER;
                    let name_end = |w: u64| {
                        bytes_equal(w, b':') | bytes_equal(w, b' ') | bytes_equal(w, b'\t')
                    };
                    let rom = bytes_equal(ahead(1), b'r')
                        & bytes_equal(ahead(2), b'o')
                        & bytes_equal(ahead(3), b'm')
                        & name_end(buf.window(k * 8 + 4));
                    let named = candidates & (name_end(buf.window(k * 8 + 1)) | rom);
                    if named != 0 {
                        return Some(k * 8 + first_flagged_byte(named));
                    }
                }
                if ends != 0 {
                    return Some(SCAN_LEN);
                }
            }
            None
        },
    );
    if line >= SCAN_LEN {
        return Span::ABSENT;
    }
    // The line's end: its line feed, before the payload's end.
    let newline = find_flagged(buf, line, SCAN_LEN, |w| {
        bytes_equal(w, b'\n') | zero_bytes(w)
    });
    if newline >= SCAN_LEN || buf.byte(newline) != b'\n' {
        return Span::ABSENT;
    }
    // Laundered: knowing them below the window's end, the compiler would drop the masks
    // of the reads near them, and 6.1's verifier learns no bound from comparing two
    // registers (`newline > start`, `at < end`).
    let newline = buf.launder(newline);
    let end = buf.launder(content_end(buf, line, newline as u16));
    match classify_header(buf, line, end) {
        Some((Header::From, value_start)) => value_of(buf, Span::new(value_start, end)),
        _ => Span::ABSENT,
    }
}

/// Words [`find_from_header`] looks at per step.
const FROM_SEARCH_WORDS: usize = 2;

/// [`routing_of`]: the To header has a tag, so the request is inside a dialog.
pub const ROUTING_IN_DIALOG: u32 = 1;
/// [`routing_of`]: the topmost Route holds a SIP URI with a host, now in the start
/// fields in place of the Request-URI's ([`Scratch::host`], [`Scratch::address`], …).
pub const ROUTING_ROUTED: u32 = 2;

/// For a request whose Request-URI names a host that is not ours, parsed with
/// [`POLICY_HEADERS`]: its topmost Route and its To tag, as `ROUTING_*` bits.
///
/// Behind a record-routing proxy, a phone's in-dialog requests (ACK, re-INVITE, BYE,
/// …) carry the peer's Contact as the Request-URI and the proxy in the topmost Route
/// (RFC 3261 §12.2.1.1); a proxy that finds itself there routes on (§16.4). So the
/// topmost Route's host is judged as the Request-URI's would be: this leaves it in the
/// start fields, and the caller asks the same host question again. A request inside a
/// dialog (a To tag) that is not routed to us is still dropped, but is no scanner's
/// first probe. Whitespace around the tag's `;` (legal, never seen) reads as no tag.
///
/// Not inlined: the kernel's 512-byte stack is shared along the call chain, and this
/// runs from a shallow one.
#[inline(never)]
pub fn routing_of(scratch: &mut Scratch) -> u32 {
    let Scratch {
        buf,
        lines,
        ip,
        start,
        ..
    } = scratch;
    let mut found = 0;
    let to = lines.headers[Header::To as usize].get();
    if to.is_present() && has_tag(buf, to) {
        found |= ROUTING_IN_DIALOG;
    }
    let route = lines.headers[Header::Route as usize].get();
    start.valid.set(false);
    // In a loop body of its own, like the start line's parse (see `crate::bounded`).
    isolated(&mut |_| {
        // A route is a name-addr (§20.34): the URI is between the angle brackets.
        let open = find_byte(buf, route.start(), route.end(), b'<');
        if route.is_present() && open < route.end() {
            let close = find_byte(buf, open + 1, route.end(), b'>');
            if close < route.end() {
                let parsed = parse_request_uri(buf, ip, start, open + 1, close).is_some();
                start.valid.set(parsed);
            }
        }
        false
    });
    if start.valid.get() && start.host_kind.get() != HostKind::None as u8 {
        found |= ROUTING_ROUTED;
    }
    found
}

/// Whether a To or From value has a `tag` parameter: `tag` (any case) whose last
/// non-blank byte before is `;` and first after is `=`, with up to 7 spaces or tabs on
/// either side (RFC 3261's SEMI and EQUAL allow them). Where `tag` is spelt is found a
/// word at a time, and only those places are looked at further.
#[inline(always)]
pub fn has_tag(buf: &ScanBuf, value: Span) -> bool {
    const WORDS: usize = 2;
    let (start, end) = (value.start(), value.end());
    let found = buf.search((SCAN_LEN / 8 / WORDS + 1) as u32, 0, |i| {
        for w in 0..WORDS {
            let base = start + (i * WORDS + w) * 8;
            if base + 4 > end {
                return Some(0);
            }
            let lower = |n: usize| buf.window(base + n) | ASCII_LOWER;
            // Where `tag` starts, with a byte after it in the value: at most three places
            // in a word.
            let mut tags = bytes_equal(lower(0), b't')
                & bytes_equal(lower(1), b'a')
                & bytes_equal(lower(2), b'g')
                & low_bytes_mask(end - 3 - base);
            for _ in 0..3 {
                if tags == 0 {
                    break;
                }
                let at = base + first_flagged_byte(tags);
                tags &= tags - 1;
                if at > start && is_tag_parameter(buf, value, at) {
                    return Some(1);
                }
            }
        }
        None
    });
    found != 0
}

/// Whether the `tag` at `at` (after the start of `value`, with a byte after it there)
/// is a parameter's name: a `;` before it and an `=` after it, blanks aside.
#[inline(always)]
fn is_tag_parameter(buf: &ScanBuf, value: Span, at: usize) -> bool {
    let (start, end) = (value.start(), value.end());
    // Before: the 8 bytes up to `tag`, those before the value masked off. The last
    // non-blank among them must be a `;`: flags of disjoint sets compare by their
    // highest bit.
    let back = if at - start >= 8 { 8 } else { at - start };
    let keep = !low_bytes_mask(8 - back);
    let before = buf.window(at.wrapping_sub(8));
    let semis = bytes_equal(before, b';') & keep;
    let others = not_blank(before) & keep & !semis;
    // After: the first non-blank byte must be an `=`.
    let after = buf.window(at + 3) | !low_bytes_mask(end - (at + 3));
    let next = not_blank(after);
    let first = next & next.wrapping_neg();
    semis != 0 && others < semis && first & bytes_equal(after, b'=') != 0
}

/// Longest CR/LF keep-alive (RFC 5626 §3.5.1 sends a double CRLF; some phones send
/// more): bytes beyond this are no keep-alive.
pub const MAX_CRLF_KEEPALIVE: usize = 32;
/// Longest run of zero bytes taken as a NAT ping (some phones send four).
pub const MAX_ZERO_KEEPALIVE: usize = 8;
/// CR and LF bytes skipped before a start line (RFC 3261 §7.5 ignores empty lines
/// there; some stacks send a keep-alive's CRLFs in front of a request).
pub const LEADING_CRLF_BYTES: usize = 16;

/// The high bit of each byte of `w` that is neither CR nor LF.
#[inline(always)]
fn not_crlf(w: u64) -> u64 {
    !(bytes_equal(w, b'\r') | bytes_equal(w, b'\n')) & HIGH
}

/// A keep-alive: empty, up to [`MAX_CRLF_KEEPALIVE`] CR/LF bytes, up to
/// [`MAX_ZERO_KEEPALIVE`] zero bytes, or a STUN message.
fn is_keepalive(buf: &ScanBuf, len: usize) -> bool {
    if len == 0 {
        return true;
    }
    let w = buf.word(0);
    if len <= MAX_ZERO_KEEPALIVE && w & low_bytes_mask(len) == 0 {
        return true;
    }
    if len <= MAX_CRLF_KEEPALIVE {
        // Only CR and LF bytes, a word at a time (the bytes after `len` are ignored).
        let mut other = 0;
        for k in 0..MAX_CRLF_KEEPALIVE / 8 {
            other |= not_crlf(buf.word(k)) & low_bytes_mask(len.saturating_sub(k * 8));
        }
        if other == 0 {
            return true;
        }
    }
    // STUN: the two top bits of the type are zero, and the magic cookie follows the length.
    len >= 20 && (w as u8) & 0xc0 == 0 && ((w >> 32) as u32).swap_bytes() == STUN_MAGIC_COOKIE
}

/// Longest method token [`looks_like_request`] takes (`SUBSCRIBE` is 9 bytes).
const MAX_METHOD_LEN: usize = 16;

/// Whether a payload the parser found not to be SIP still starts like a request: after
/// any CR/LF bytes, a method token (letters), spaces or tabs, and a URI scheme (two to
/// five letters and a colon). Such a payload may be parsed by a lenient server (tabs or
/// several spaces as separators, CR-only line ends, `SIP/2.1`, a request line longer
/// than the window, more leading CRLFs than the parser skips), so it is never passed
/// unjudged as "not SIP". HTTP's `GET / HTTP/1.1` has no scheme, and does not.
pub fn looks_like_request(buf: &ScanBuf, len: usize) -> bool {
    // Laundered: knowing `len` below the buffer's size, LLVM would drop the masks of the
    // reads after comparisons with it, and 6.1's verifier refuses the unmasked offsets.
    let len = buf.launder(if len > SCAN_LEN { SCAN_LEN } else { len });
    let start = find_flagged(buf, 0, len, not_crlf);
    let mut method_len = 0;
    for i in 0..=MAX_METHOD_LEN {
        if !buf.byte(start + i).is_ascii_alphabetic() {
            method_len = i;
            break;
        }
    }
    let after_method = start + method_len;
    if method_len == 0 || after_method >= len || not_blank(buf.window(after_method)) & 0x80 != 0 {
        return false;
    }
    let uri = skip_blanks(buf, after_method, len);
    // The scheme: `im:` to `sips:`/`pres:`, letters before the colon.
    let colons = bytes_equal(buf.window(uri), b':') & low_bytes_mask(6);
    if colons == 0 || uri + 3 > len {
        return false;
    }
    let scheme_len = first_flagged_byte(colons);
    for i in 0..5 {
        if i < scheme_len && !buf.byte(uri + i).is_ascii_alphabetic() {
            return false;
        }
    }
    scheme_len >= 2
}

/// The end of a line's content: before the CR of its CRLF, if any.
#[inline(always)]
fn content_end(buf: &ScanBuf, start: usize, newline: u16) -> usize {
    let newline = usize::from(newline);
    if newline > start && buf.byte(newline - 1) == b'\r' {
        newline - 1
    } else {
        newline
    }
}

/// The one pass over the lines. Each step handles one line it has to examine: it finds
/// the line's end, notes the start line's end, classifies a header line, or extends the
/// header before a folded one. Lines that cannot matter are not examined: when only some
/// headers are wanted, header lines whose first two bytes begin none of them
/// ([`must_examine`]) are passed over by [`skip_lines`], which looks only at line feeds
/// and the two bytes after the first in each word (a second line start in the same word
/// is not tested there: it costs a step, without its line end being searched or its
/// name classified, unless it must be examined). The pass
/// stops at the empty line ending the header section, or at the end of the data: not
/// once every wanted header is found, since a second User-Agent may follow.
fn scan_lines<const WANTED: HeaderSet>(
    buf: &ScanBuf,
    lines: &mut LineState,
    len: usize,
    whole: bool,
) {
    for header in lines.headers.iter_mut() {
        header.set(Span::ABSENT);
    }
    lines.count.set(0);
    lines.headers_complete.set(0);
    lines.scan_done.set(0);
    lines.over_budget.set(0);
    lines.last_header.set(NO_HEADER);
    lines.agents.set(0);
    lines.start_line_end.set(0);
    lines.skipping.set(0);
    // RFC 3261 §7.5: CRLFs before the start line are ignored (up to LEADING_CRLF_BYTES).
    const _: () = assert!(LEADING_CRLF_BYTES == 16);
    let (first, second) = (not_crlf(buf.word(0)), not_crlf(buf.word(1)));
    let origin = if first != 0 {
        first_flagged_byte(first)
    } else if second != 0 {
        8 + first_flagged_byte(second)
    } else {
        LEADING_CRLF_BYTES
    } as u16;
    lines.origin.set(origin);
    lines.next_line.set(origin);
    lines.cursor.set(origin);
    // A step per line examined (and one to find the limit reached), one to start each
    // skip, and one per WORDS_PER_STEP or SKIP_WORDS words searched or skipped.
    const STEPS: usize = 2 * (MAX_LINES + 1) + BUF_WORDS / WORDS_PER_STEP + BUF_WORDS / SKIP_WORDS;
    repeat(STEPS as u32, &mut |_| {
        if lines.skipping.get() == 0 {
            let (start, from) = (lines.next_line.get(), lines.cursor.get());
            if usize::from(from) >= len {
                return false;
            }
            if from == start {
                let at = usize::from(start);
                if !must_examine::<WANTED>(lines, buf.byte(at), buf.byte(at + 1)) {
                    // A header line that cannot hold a wanted header, nor continue one:
                    // skip from here, in this same step (a step is a call).
                    lines.last_header.set(NO_HEADER);
                    lines.skip_from.set(start + 1);
                    lines.skip_carry.set(0);
                    lines.skipping.set(1);
                } else if const { examined_beginnings(WANTED).is_some() }
                    && usize::from(lines.count.get()) >= MAX_EXAMINED_LINES
                {
                    lines.over_budget.set(1);
                    return false;
                }
            }
        }
        if lines.skipping.get() != 0 {
            return skip_lines::<WANTED>(buf, lines, len);
        }
        let start = usize::from(lines.next_line.get());
        let from = usize::from(lines.cursor.get());
        // The line's end, in aligned words (one load each); in the first, the bytes
        // before `from` are masked off. The bytes after the payload are zero
        // (`ScanBuf::clear_tail`), and a line feed found beyond it is ignored. Not a
        // nested loop: 6.1 counts the stack of every frame on the way down.
        let first_word = from >> 3;
        let mut newline = usize::MAX;
        let mut hits = bytes_equal(buf.word(first_word), b'\n') & (u64::MAX << ((from & 7) * 8));
        for w in 0..WORDS_PER_STEP {
            if w > 0 {
                hits = bytes_equal(buf.word(first_word + w), b'\n');
            }
            if hits != 0 {
                newline = (first_word + w) * 8 + first_flagged_byte(hits);
                break;
            }
        }
        let at = if newline < len {
            newline
        } else {
            let next = (first_word + WORDS_PER_STEP) * 8;
            if next < len {
                lines.cursor.set(next as u16); // a long line: on in the next step
                return true;
            }
            if !whole {
                return false; // a line cut by the window is ignored
            }
            len // a whole datagram's last line needs no line feed
        };
        lines.next_line.set(at as u16 + 1);
        lines.cursor.set(at as u16 + 1);
        if end_line::<WANTED>(buf, lines, start, at) {
            lines.scan_done.set(1);
            return false;
        }
        at < len
    });
    // Out of data: every header of a whole datagram was seen.
    if lines.scan_done.get() == 0 && lines.over_budget.get() == 0 && whole {
        lines.headers_complete.set(1);
    }
}

/// Words searched for a line end per step: most header lines end within 64 bytes.
const WORDS_PER_STEP: usize = 8;
/// Words [`skip_lines`] looks at per step (more, and 6.18's verifier gives up).
const SKIP_WORDS: usize = 8;

/// Whether the line starting with `first`, `second` must be examined: always in a full
/// parse. When only some headers are wanted ([`examined_beginnings`]): the start line,
/// a line that may hold a wanted header, continue one (folded) or be the empty line.
#[inline(always)]
fn must_examine<const WANTED: HeaderSet>(lines: &LineState, first: u8, second: u8) -> bool {
    let Some(beginnings) = (const { examined_beginning_bits(WANTED) }) else {
        return true;
    };
    lines.count.get() == 0 || examined_bit(beginnings, first, second) != 0
}

/// Looks for the next line [`must_examine`] may accept, eight bytes at a time: only line
/// feeds are looked at, and the two bytes after the first in each word, which are
/// tested as [`must_examine`] tests them (a later line start in the same word is taken
/// untested: lines are mostly longer than a word, and its step tests it). Sets
/// `next_line` to it and ends the skip; false when the data ends first.
#[inline(always)]
fn skip_lines<const WANTED: HeaderSet>(buf: &ScanBuf, lines: &mut LineState, len: usize) -> bool {
    let beginnings = const { examined_beginning_bits(WANTED) }.unwrap_or(u64::MAX);
    let from = usize::from(lines.skip_from.get());
    let first_word = from >> 3;
    // Compared with the end once per step: the words after it are zero up to
    // TAIL_WORDS past it (`ScanBuf::clear_tail`), so no line starts there.
    const _: () = assert!(SKIP_WORDS <= TAIL_WORDS);
    if first_word * 8 >= len {
        return false;
    }
    // The flag of a line start at the first word's byte 0, carried over.
    let mut carry = lines.skip_carry.get() & 0x80;
    // In the first word, line starts before `from` were looked at already.
    let mut keep = u64::MAX << ((from & 7) * 8);
    for w in 0..SKIP_WORDS {
        let k = first_word + w;
        let newlines = bytes_equal(buf.word(k), b'\n');
        // The high bit of each byte that starts a line.
        let starts = ((newlines << 8) | carry) & keep;
        keep = u64::MAX;
        carry = newlines >> 56;
        if starts != 0 {
            // The first line start's flag, cleared unless its line must be examined.
            let first = starts & starts.wrapping_neg();
            let at = k * 8 + first_flagged_byte(starts);
            let examined_mask =
                examined_bit(beginnings, buf.byte(at), buf.byte(at + 1)).wrapping_neg();
            let examined = starts & !(first & !examined_mask);
            if examined != 0 {
                let at = k * 8 + first_flagged_byte(examined);
                if at >= len {
                    return false;
                }
                lines.next_line.set(at as u16);
                lines.cursor.set(at as u16);
                lines.skipping.set(0);
                return true;
            }
        }
    }
    lines.skip_from.set(((first_word + SKIP_WORDS) * 8) as u16);
    lines.skip_carry.set(carry);
    true
}

/// Handles the line from `start` to `at` (its line feed, or the payload's end). True
/// when the scan is done.
#[inline(always)]
fn end_line<const WANTED: HeaderSet>(
    buf: &ScanBuf,
    lines: &mut LineState,
    start: usize,
    at: usize,
) -> bool {
    let count = usize::from(lines.count.get());
    let end = content_end(buf, start, at as u16);
    lines.count.set(count as u16 + 1);
    if count == 0 {
        lines.start_line_end.set(end as u16);
        return false;
    }
    if end <= start {
        lines.headers_complete.set(1); // the empty line
        return true;
    }
    let first = buf.byte(start);
    if first == b' ' || first == b'\t' {
        let last = usize::from(lines.last_header.get());
        if last < usize::from(NO_HEADER) {
            extend_folded(
                buf,
                &mut lines.headers[last & (HEADER_SLOTS - 1)],
                start,
                end,
            );
        }
        return false;
    }
    lines.last_header.set(NO_HEADER);
    if let Some((header, value_start)) = classify_header(buf, start, end) {
        if WANTED & (1 << header as u16) == 0 {
            return false;
        }
        // The first of each header; of several User-Agents, also the last.
        let mut slot = header as usize;
        if header == Header::UserAgent {
            let agents = lines.agents.get();
            lines.agents.set(agents.saturating_add(1));
            if agents > 0 {
                slot = REPEATED_AGENT;
            }
        }
        let kept = &mut lines.headers[slot & (HEADER_SLOTS - 1)];
        if slot == REPEATED_AGENT || !kept.get().is_present() {
            kept.set(Span::new(value_start, end));
            lines.last_header.set(slot as u16);
        }
    }
    false
}

/// A folded line (RFC 3261 §7.3.1) continues the previous header's value.
#[inline(always)]
fn extend_folded(buf: &ScanBuf, value: &mut Vol<Span>, line_start: usize, end: usize) {
    let mut span = value.get();
    if span.is_empty() {
        // `User-Agent:` with the value on the next line.
        span.start = skip_whitespace(buf, line_start, end) as u16;
    }
    span.end = end as u16;
    value.set(span);
}

/// The first byte at or after `start` that is not a space or tab (at most `end`).
/// Looks at up to [`MAX_WHITESPACE`] bytes, a word at a time and without a loop;
/// a longer run counts as ending there.
#[inline(always)]
fn skip_whitespace(buf: &ScanBuf, start: usize, end: usize) -> usize {
    let mut at = start;
    for _ in 0..MAX_WHITESPACE / 8 {
        let other = not_blank(buf.window(at));
        if other != 0 {
            at += first_flagged_byte(other);
            break;
        }
        at += 8;
    }
    at.min(end)
}

/// The header a line holds and where its value starts, if it is one we record.
#[inline(always)]
fn classify_header(buf: &ScanBuf, line_start: usize, end: usize) -> Option<(Header, usize)> {
    let first = buf.window(line_start);
    let second = buf.window(line_start + 8);
    // The name ends at the colon, or at whitespace before it.
    let delimiters = |w: u64| bytes_equal(w, b':') | bytes_equal(w, b' ') | bytes_equal(w, b'\t');
    let in_first = delimiters(first);
    let name_len = if in_first != 0 {
        first_flagged_byte(in_first)
    } else {
        let in_second = delimiters(second);
        if in_second != 0 {
            8 + first_flagged_byte(in_second)
        } else {
            // Proxy-Authorization and Proxy-Authenticate: 19 and 18 bytes.
            let in_third = delimiters(buf.window(line_start + 16));
            if in_third == 0 {
                return None; // longer than any name we record
            }
            16 + first_flagged_byte(in_third)
        }
    };
    if name_len == 0 || line_start + name_len >= end {
        return None;
    }
    let lower_first = (first | ASCII_LOWER) & low_bytes_mask(name_len);
    let lower_second = (second | ASCII_LOWER) & low_bytes_mask(name_len.saturating_sub(8));
    let header = Header::from_name(name_len, lower_first, lower_second)?;
    let colon = skip_whitespace(buf, line_start + name_len, end);
    if colon >= end {
        return None;
    }
    match buf.byte(colon) {
        b':' => Some((header, skip_whitespace(buf, colon + 1, end))),
        // A longer run than the scan skips: the value starts in it, and [`value_of`]
        // finds the colon and the value after it.
        b' ' | b'\t' => Some((header, colon)),
        _ => None,
    }
}

/// A recorded header value without the whitespace the line scan left at its start (a
/// run longer than [`MAX_WHITESPACE`], before or after the colon): bounded by the value,
/// so by the window. Values that start at once cost one byte read.
#[inline(always)]
pub fn value_of(buf: &ScanBuf, value: Span) -> Span {
    if value.is_empty() {
        return value;
    }
    let first = buf.byte(value.start());
    if first != b' ' && first != b'\t' {
        return value;
    }
    let end = value.end();
    let mut at = skip_blanks(buf, value.start(), end);
    if at < end && buf.byte(at) == b':' {
        at = skip_blanks(buf, at + 1, end);
    }
    Span::new(at, end)
}

/// The high bit of each byte of `w` that is neither a space nor a tab.
#[inline(always)]
fn not_blank(w: u64) -> u64 {
    !(bytes_equal(w, b' ') | bytes_equal(w, b'\t')) & HIGH
}

/// The first byte in `from..to` that is not a space or tab; `to` if none.
#[inline(always)]
fn skip_blanks(buf: &ScanBuf, from: usize, to: usize) -> usize {
    find_flagged(buf, from, to, not_blank)
}

/// Finds `needle` in `from..to`, a word at a time; `to` if absent.
#[inline(always)]
pub fn find_byte(buf: &ScanBuf, from: usize, to: usize, needle: u8) -> usize {
    find_flagged(buf, from, to, |w| bytes_equal(w, needle))
}

/// The first byte in `from..to` that `flags` flags (its high bit, as [`bytes_equal`]
/// does), a word at a time; `to` if none.
#[inline(always)]
fn find_flagged(buf: &ScanBuf, from: usize, to: usize, flags: impl Fn(u64) -> u64) -> usize {
    // The first window is looked at here: most searches in a start line (a method, a
    // user part) end in it, and a loop step is a call (see BENCHMARKS.md, `call`).
    let hits = flags(buf.window(from));
    let at = from
        + if hits != 0 {
            first_flagged_byte(hits)
        } else {
            8
        };
    if hits != 0 || at >= to {
        // Through memory, like a search's result: the code after a search is verified
        // once, not once per way it could end.
        return buf.launder(at.min(to));
    }
    // Four windows (32 bytes) per step.
    const WINDOWS: usize = 4;
    let from = from + 8;
    buf.search((BUF_WORDS / WINDOWS) as u32, to, |i| {
        for w in 0..WINDOWS {
            let at = from + (i * WINDOWS + w) * 8;
            if at >= to {
                return Some(to);
            }
            let hits = flags(buf.window(at));
            if hits != 0 {
                return Some((at + first_flagged_byte(hits)).min(to));
            }
        }
        None
    })
}

/// Parses a status line (`SIP/2.0 200 OK`) or a request line (`INVITE uri SIP/2.0`).
/// Method, status and Request-URI: see [`SipMessage`].
type StartFields = (Method, u16, RequestUri);

/// Parses a status line (`SIP/2.0 200 OK`) or a request line (`INVITE uri SIP/2.0`) into
/// `out`, field by field (whole-struct copies cost stack the verifier limits to 512 bytes).
#[inline(always)]
fn parse_start_line(buf: &ScanBuf, ip: &mut IpState, out: &mut StartState, line: Span) {
    out.valid.set(false);
    if parse_start_fields(buf, ip, out, line).is_some() {
        out.valid.set(true);
    }
}

#[inline(always)]
fn parse_start_fields(
    buf: &ScanBuf,
    ip: &mut IpState,
    out: &mut StartState,
    line: Span,
) -> Option<()> {
    const SIP_VERSION: u64 = word_of(b"sip/2.0");
    const SIP_VERSION_SP: u64 = word_of(b"sip/2.0 ");
    let (start, end) = (line.start(), line.end());
    if (buf.window(start) | ASCII_LOWER) == SIP_VERSION_SP {
        out.status.set(parse_status(buf, start + 8, end)?);
        out.method.set(Method::None as u8);
        out.clear_uri();
        return Some(());
    }
    let method_end = find_byte(buf, start, end, b' ');
    let uri_end = find_byte(buf, method_end + 1, end, b' ');
    if method_end == start || uri_end >= end || uri_end == method_end + 1 {
        return None;
    }
    // The version must be exactly SIP/2.0 (any case) and end the line.
    let version = buf.window(uri_end + 1) | ASCII_LOWER;
    if end - (uri_end + 1) != 7 || version & low_bytes_mask(7) != SIP_VERSION {
        return None;
    }
    let method_len = method_end - start;
    let method = Method::from_token(
        method_len,
        buf.window(start) & low_bytes_mask(method_len),
        buf.window(start + 8) & low_bytes_mask(method_len.saturating_sub(8)),
    );
    out.method.set(method as u8);
    out.status.set(0);
    parse_request_uri(buf, ip, out, method_end + 1, uri_end)
}

/// Three digits, 100..=699, followed by a space or the end of the line.
fn parse_status(buf: &ScanBuf, at: usize, end: usize) -> Option<u16> {
    if at + 3 > end || (at + 3 < end && buf.byte(at + 3) != b' ') {
        return None;
    }
    let digit = |i: usize| {
        let d = buf.byte(at + i).wrapping_sub(b'0');
        (d <= 9).then_some(u16::from(d))
    };
    let status = digit(0)? * 100 + digit(1)? * 10 + digit(2)?;
    (100..700).contains(&status).then_some(status)
}

/// Parses a Request-URI into `out` (all but `valid`, `method` and `status`). Inlined
/// into both its callers (the start line, the Route): called from two places, LLVM
/// would make it a function whose frame the start line's call chain has no room for.
#[inline(always)]
fn parse_request_uri(
    buf: &ScanBuf,
    ip: &mut IpState,
    out: &mut StartState,
    start: usize,
    end: usize,
) -> Option<()> {
    const SIP: u64 = word_of(b"sip:");
    const SIPS: u64 = word_of(b"sips:");
    const TEL: u64 = word_of(b"tel:");
    const PRES: u64 = word_of(b"pres:");
    const IM: u64 = word_of(b"im:");
    let head = buf.window(start) | ASCII_LOWER;
    let (scheme, rest) = if head & low_bytes_mask(4) == SIP {
        (Scheme::Sip, start + 4)
    } else if head & low_bytes_mask(5) == SIPS {
        (Scheme::Sips, start + 5)
    } else if head & low_bytes_mask(4) == TEL {
        (Scheme::Tel, start + 4)
    } else if head & low_bytes_mask(5) == PRES {
        (Scheme::Pres, start + 5)
    } else if head & low_bytes_mask(3) == IM {
        (Scheme::Im, start + 3)
    } else {
        (Scheme::Other, find_byte(buf, start, end, b':'))
    };
    if rest >= end {
        return None; // no scheme, or nothing after it
    }
    out.clear_uri();
    out.scheme.set(scheme as u8);
    match scheme {
        Scheme::Tel => {
            out.user
                .set(Span::new(rest, find_byte(buf, rest, end, b';')));
            return Some(());
        }
        Scheme::Other => return Some(()),
        Scheme::Sip | Scheme::Sips | Scheme::Pres | Scheme::Im => {}
    }
    // userinfo "@" is optional; '@' cannot appear unescaped elsewhere in a SIP URI.
    let at = find_byte(buf, rest, end, b'@');
    let host_start = if at < end {
        out.user
            .set(Span::new(rest, find_byte(buf, rest, at, b':')));
        at + 1
    } else {
        rest
    };
    if host_start >= end {
        return None;
    }
    let after_host;
    if buf.byte(host_start) == b'[' {
        let close = find_byte(buf, host_start + 1, end, b']');
        if close >= end {
            return None;
        }
        let host = Span::new(host_start + 1, close);
        out.host.set(host);
        after_host = close + 1;
        if let Some(address) = parse_ipv6(buf, ip, host) {
            out.host_kind.set(HostKind::Ipv6 as u8);
            out.set_address(address);
        } else {
            out.host_kind.set(HostKind::Name as u8);
        }
    } else {
        let host_end = host_end(buf, host_start, end);
        if host_end < end && buf.byte(host_end) == b'@' {
            // `sip:a@b@host`: not a URI, and a way to slip a name past a wildcard.
            return None;
        }
        after_host = host_end;
        let mut name_end = host_end;
        if name_end > host_start + 1 && buf.byte(name_end - 1) == b'.' {
            name_end -= 1; // a fully qualified name's trailing dot
        }
        let host = Span::new(host_start, name_end);
        out.host.set(host);
        if let Some(v4) = parse_ipv4(buf, ip, host) {
            out.host_kind.set(HostKind::Ipv4 as u8);
            out.set_address(mapped_ipv4(v4));
        } else {
            out.host_kind.set(HostKind::Name as u8);
        }
    }
    let host = out.host.get();
    if host.is_empty() || host.len() > MAX_HOST_LEN {
        return None;
    }
    if after_host < end && buf.byte(after_host) == b':' {
        out.port.set(parse_port(buf, after_host + 1, end)?);
    }
    Some(())
}

/// A host name ends at the port's colon, the parameters' `;`, the headers' `?`, or the
/// URI; also at an `@`, which the caller refuses (no host contains one).
#[inline(always)]
fn host_end(buf: &ScanBuf, start: usize, end: usize) -> usize {
    // Four windows (32 bytes) per step: a loop step is a call.
    const WINDOWS: usize = 4;
    buf.search((MAX_HOST_LEN / (8 * WINDOWS) + 1) as u32, end, |i| {
        for w in 0..WINDOWS {
            let at = start + (i * WINDOWS + w) * 8;
            if at >= end {
                return Some(end);
            }
            let v = buf.window(at);
            let hits = bytes_equal(v, b':')
                | bytes_equal(v, b';')
                | bytes_equal(v, b'?')
                | bytes_equal(v, b'@');
            if hits != 0 {
                return Some((at + first_flagged_byte(hits)).min(end));
            }
        }
        None
    })
}

#[inline(always)]
fn parse_port(buf: &ScanBuf, start: usize, end: usize) -> Option<u16> {
    // The first byte that is not a digit ends the port.
    const MAX_DIGITS: usize = 5;
    let digits_end = buf.search(MAX_DIGITS as u32 + 1, start + MAX_DIGITS + 1, |i| {
        let at = start + i;
        (at >= end || buf.byte(at).wrapping_sub(b'0') > 9).then_some(at)
    });
    let digits = digits_end.wrapping_sub(start);
    if digits == 0 || digits > MAX_DIGITS {
        return None;
    }
    if digits_end < end && !matches!(buf.byte(digits_end), b';' | b'?') {
        return None;
    }
    let mut port = 0u32;
    for i in 0..MAX_DIGITS {
        if i < digits {
            port = port * 10 + u32::from(buf.byte(start + i).wrapping_sub(b'0'));
        }
    }
    u16::try_from(port).ok()
}

/// An IPv4 address as an IPv4-mapped IPv6 address (`::ffff:a.b.c.d`).
pub const fn mapped_ipv4(v4: [u8; 4]) -> [u8; 16] {
    [
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, v4[0], v4[1], v4[2], v4[3],
    ]
}

pub mod dialled;
pub mod pairing;
pub mod stream;
#[cfg(test)]
mod tests;
