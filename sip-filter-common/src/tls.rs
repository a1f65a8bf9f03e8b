//! The TLS ClientHello parser (RFC 8446 §4.1.2, RFC 5246 §7.4.1.2), run unchanged by the
//! XDP program and by host tests, beside the SIP parser and in its style.
//!
//! It reads the first segment of a TLS connection from a [`ScanBuf`]: the record header,
//! the handshake header and the fixed fields up to the extension block in one straight
//! pass, then the extensions, one a loop step and at most [`MAX_EXTENSIONS`] of them (as
//! xdp-tools' `xdp-sni` does), noting where `server_name` and `supported_versions` are.
//! After the walk, two small bounded loops read those two: the highest TLS version the
//! client offers, GREASE values (RFC 8701) skipped, and the first host_name. Nothing is
//! copied or allocated; every loop has a constant bound; every read is masked.
//!
//! Defined limits, all tested:
//! - A field is [`Field::Found`], [`Field::Absent`] (the whole extension block was walked
//!   and it is not there) or [`Field::Unknown`]: not in the bytes held. A post-quantum key
//!   share makes ClientHellos of about 1.5 KB that span two segments, and Chrome shuffles
//!   its extensions, so the SNI may be in the second: the caller judges what it has,
//!   passes the rest and counts it. A field is never guessed from a partial extension.
//! - Beyond [`MAX_EXTENSIONS`] extensions the walk stops ([`Verdict::WalkLimit`]): the
//!   fields not found by then are Unknown, the same answer as a split.
//! - A ClientHello fragmented over several TLS records (legal, rare) is read up to its
//!   first record's end; what lies beyond is Unknown.
//! - [`Verdict::Malformed`] is for what the bytes held prove wrong: a length that points
//!   past the record, the handshake message or the block that holds it, a zero length
//!   the protocol forbids, a duplicate `server_name` or `supported_versions`. A length
//!   that points past the bytes held is [`Verdict::Truncated`] (the rest may be in the
//!   next segment), unless the caller says nothing follows them (`whole`).
//! - The highest version counts only the TLS family (`0x03xx`: SSL 3.0 to TLS 1.3 and
//!   any later TLS): GREASE values, drafts (`0x7fxx`) and other made-up numbers are no
//!   version a server would pick, and counting them would let a client claim TLS 1.3
//!   with a number of its own.
//!
//! Kernel notes. The TLS program (`sip-filter-ebpf/src/tls.rs`) runs it, its state in a
//! per-CPU map value; wired in, it was verified with 59,188 instructions on 6.18 (the
//! whole program: headers, copy, parse, the name's hash and lookups, the ban's
//! bookkeeping). Before that, behind a throwaway program (the payload copied as
//! `sip-filter-ebpf` copies it, then [`parse_in_place`]) the
//! verifiers of 6.1.0-57 (Debian 12) and 6.18 accepted it, with 2,180 and 2,958
//! instructions verified, and BPF_PROG_TEST_RUN gave the host's answers for the
//! fixtures, a split and a 1,000-extension ClientHello (on 6.18, single noisy runs,
//! the copy included: 100-190 ns for 0.2 to 1.6 KB, 370 ns for 32 extensions walked in
//! 2 KB). What to watch when it is wired in:
//! - Wire lengths become offsets of up to 2^24: they are compared with the bytes held
//!   before any read, and every read is masked by [`ScanBuf`], so an offset is never
//!   out of bounds; but LLVM, knowing `len <= SCAN_LEN`, may drop masks after those
//!   comparisons (as it did in the SIP parser on 6.1), hence the laundered `len`.
//! - The preamble ([`parse_in_place`]'s first part) is straight-line code with about
//!   twenty exits, in a loop body of its own; the SNI entry loop (4 steps) and the
//!   four versions of a version step are unrolled, each with a few branches: small,
//!   but the paths of one body multiply, so they are kept apart.
//! - Loop-carried state lives in [`HelloState`] ([`Vol`] fields), which the kernel
//!   should keep in the per-CPU scratch map value, not on the stack.

use crate::{
    bounded::{isolated, repeat},
    scan::{ScanBuf, Vol, SCAN_LEN},
    sip::Span,
};

/// A TLS record's content type for handshake messages.
pub const CONTENT_TYPE_HANDSHAKE: u8 = 22;
/// The handshake message type of a ClientHello.
pub const HANDSHAKE_CLIENT_HELLO: u8 = 1;
/// Content type, legacy version, length.
pub const RECORD_HEADER_LEN: usize = 5;
/// Message type, 24-bit length.
pub const HANDSHAKE_HEADER_LEN: usize = 4;
/// RFC 8446 §5.1: a record's plaintext is at most 2^14 bytes.
pub const MAX_RECORD_LEN: usize = 1 << 14;
/// A ClientHello's legacy_session_id is at most 32 bytes.
pub const MAX_SESSION_ID_LEN: usize = 32;
/// Extension types the parser reads (IANA TLS ExtensionType values).
pub const EXTENSION_SERVER_NAME: u16 = 0;
pub const EXTENSION_SUPPORTED_VERSIONS: u16 = 43;
/// RFC 6066 §3: the only name type.
pub const NAME_TYPE_HOST_NAME: u8 = 0;
pub const TLS1_0: u16 = 0x0301;
pub const TLS1_2: u16 = 0x0303;
pub const TLS1_3: u16 = 0x0304;
/// Extensions walked at the most (xdp-sni's bound; Chrome sends about 18).
pub const MAX_EXTENSIONS: u32 = 32;
/// Entries of the server_name list examined at the most (RFC 6066 allows one of each
/// name type, and host_name is the only type).
pub const MAX_SERVER_NAMES: usize = 4;

/// Where the client_version is: after the record and handshake headers.
const CLIENT_VERSION_AT: usize = RECORD_HEADER_LEN + HANDSHAKE_HEADER_LEN;
/// Where the session id's length is: after the client_version and the 32-byte random.
const SESSION_ID_AT: usize = CLIENT_VERSION_AT + 2 + 32;
/// Versions read a loop step (one 8-byte window's worth).
const VERSIONS_PER_STEP: usize = 4;
/// supported_versions holds at most 127 versions (its length is one byte, even).
const MAX_VERSIONS: usize = 127;
const VERSION_STEPS: u32 = MAX_VERSIONS.div_ceil(VERSIONS_PER_STEP) as u32;

/// How far the parse got, and why it stopped.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The whole ClientHello was held and read: no field is Unknown.
    Complete = 0,
    /// The bytes held end before the ClientHello does (a split ClientHello, one cut at
    /// [`SCAN_LEN`], or one continued in a second record): fields beyond are Unknown.
    Truncated = 1,
    /// The walk stopped after [`MAX_EXTENSIONS`] extensions: fields beyond are Unknown.
    WalkLimit = 2,
    /// A length or value the bytes held prove wrong (see the module's limits).
    Malformed = 3,
    /// Not a handshake record (content type 22, TLS major version 3) holding a
    /// ClientHello (handshake type 1).
    NotClientHello = 4,
}

/// [`HelloState::verdict`] while the parse goes on.
const IN_PROGRESS: u8 = 0xff;

impl Verdict {
    fn from_u8(n: u8) -> Verdict {
        match n {
            0 => Verdict::Complete,
            1 => Verdict::Truncated,
            2 => Verdict::WalkLimit,
            3 => Verdict::Malformed,
            _ => Verdict::NotClientHello,
        }
    }
}

/// What the ClientHello says of a field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Field<T> {
    Found(T),
    /// Every extension was read and this one is not among them.
    Absent,
    /// Not in the bytes held, beyond the walk's bound, or after a malformed part.
    Unknown,
}

impl<T> Field<T> {
    pub fn is_unknown(&self) -> bool {
        matches!(self, Field::Unknown)
    }
    pub fn found(self) -> Option<T> {
        match self {
            Field::Found(value) => Some(value),
            _ => None,
        }
    }
}

// Field states as the parse state keeps them.
const FIELD_UNKNOWN: u8 = 0;
const FIELD_ABSENT: u8 = 1;
const FIELD_FOUND: u8 = 2;
/// The extension was met in the walk; its contents are not read yet.
const FIELD_MET: u8 = 3;

// Bits of `HelloState::known`.
const KNOWN_RECORD_VERSION: u8 = 1;
const KNOWN_CLIENT_VERSION: u8 = 2;

/// A GREASE value (RFC 8701): `0x?A?A` with both bytes equal.
#[inline(always)]
pub const fn is_grease(value: u16) -> bool {
    value & 0x0f0f == 0x0a0a && value >> 8 == value & 0xff
}

/// A version a TLS server could negotiate: the `0x03xx` family, GREASE excluded (no
/// GREASE value is in it).
#[inline(always)]
pub const fn is_tls_version(value: u16) -> bool {
    value >> 8 == 3
}

/// The parse's working memory: every variable that crosses a loop step, and the
/// results (see [`Vol`] for why they live in memory). The kernel keeps it in the
/// per-CPU scratch map value; results are read back through the accessors.
#[repr(C)]
pub struct HelloState {
    verdict: Vol<u8>,
    /// `KNOWN_*` bits: which of the two legacy versions were held.
    known: Vol<u8>,
    record_version: Vol<u16>,
    client_version: Vol<u16>,
    /// Bytes that can be read: those held, up to the first record's end.
    readable: Vol<u32>,
    /// The next extension's header.
    cursor: Vol<u32>,
    /// The end of the extension block (and of the ClientHello).
    extensions_end: Vol<u32>,
    /// Extensions walked.
    extensions: Vol<u16>,
    /// `FIELD_*`, the offset and length of supported_versions' contents, and the
    /// highest TLS version in them (0 if none).
    versions: Vol<u8>,
    versions_at: Vol<u32>,
    versions_len: Vol<u32>,
    highest_version: Vol<u16>,
    /// `FIELD_*`, the offset and length of server_name's contents, the first host_name
    /// and the number of entries.
    names: Vol<u8>,
    names_at: Vol<u32>,
    names_len: Vol<u32>,
    host_name: Vol<Span>,
    name_count: Vol<u8>,
}

impl Default for HelloState {
    fn default() -> Self {
        Self::new()
    }
}

impl HelloState {
    pub const fn new() -> Self {
        Self {
            verdict: Vol::new(IN_PROGRESS),
            known: Vol::new(0),
            record_version: Vol::new(0),
            client_version: Vol::new(0),
            readable: Vol::new(0),
            cursor: Vol::new(0),
            extensions_end: Vol::new(0),
            extensions: Vol::new(0),
            versions: Vol::new(FIELD_UNKNOWN),
            versions_at: Vol::new(0),
            versions_len: Vol::new(0),
            highest_version: Vol::new(0),
            names: Vol::new(FIELD_UNKNOWN),
            names_at: Vol::new(0),
            names_len: Vol::new(0),
            host_name: Vol::new(Span::ABSENT),
            name_count: Vol::new(0),
        }
    }

    /// Field by field: the state is reused (the kernel's is per-CPU).
    fn reset(&mut self) {
        self.verdict.set(IN_PROGRESS);
        self.known.set(0);
        self.record_version.set(0);
        self.client_version.set(0);
        self.readable.set(0);
        self.cursor.set(0);
        self.extensions_end.set(0);
        self.extensions.set(0);
        self.versions.set(FIELD_UNKNOWN);
        self.versions_at.set(0);
        self.versions_len.set(0);
        self.highest_version.set(0);
        self.names.set(FIELD_UNKNOWN);
        self.names_at.set(0);
        self.names_len.set(0);
        self.host_name.set(Span::ABSENT);
        self.name_count.set(0);
    }

    /// Ends the parse with `verdict`, unless it has ended already.
    #[inline(always)]
    fn stop(&mut self, verdict: Verdict) {
        if self.verdict.get() == IN_PROGRESS {
            self.verdict.set(verdict as u8);
        }
    }

    /// Why the parse stopped.
    pub fn verdict(&self) -> Verdict {
        Verdict::from_u8(self.verdict.get())
    }
    /// The record header's legacy version, once its bytes were held.
    pub fn record_version(&self) -> Option<u16> {
        (self.known.get() & KNOWN_RECORD_VERSION != 0).then(|| self.record_version.get())
    }
    /// The ClientHello's legacy client_version, once its bytes were held.
    pub fn client_version(&self) -> Option<u16> {
        (self.known.get() & KNOWN_CLIENT_VERSION != 0).then(|| self.client_version.get())
    }
    /// The highest TLS version in supported_versions (0 if it holds none: see
    /// [`is_tls_version`]).
    pub fn supported_version(&self) -> Field<u16> {
        match self.versions.get() {
            FIELD_FOUND => Field::Found(self.highest_version.get()),
            FIELD_ABSENT => Field::Absent,
            _ => Field::Unknown,
        }
    }
    /// The highest version the client offers: from supported_versions when it is there
    /// (RFC 8446 §4.2.1: the server then ignores client_version), else client_version.
    pub fn highest_version(&self) -> Field<u16> {
        highest_offered(self.supported_version(), self.client_version())
    }
    /// The first host_name of server_name, as a span of the buffer. Absent also when
    /// the extension holds no entry of type host_name.
    pub fn server_name(&self) -> Field<Span> {
        match self.names.get() {
            FIELD_FOUND => Field::Found(self.host_name.get()),
            FIELD_ABSENT => Field::Absent,
            _ => Field::Unknown,
        }
    }
    /// Entries in server_name's list (read only when the whole extension was held).
    pub fn server_name_count(&self) -> usize {
        usize::from(self.name_count.get())
    }
    /// Extensions walked (GREASE ones included).
    pub fn extensions(&self) -> usize {
        usize::from(self.extensions.get())
    }

    /// The results as one value (host code).
    pub fn load(&self) -> ClientHello {
        ClientHello {
            verdict: self.verdict(),
            record_version: self.record_version(),
            client_version: self.client_version(),
            supported_version: self.supported_version(),
            server_name: self.server_name(),
            server_names: self.server_name_count(),
            extensions: self.extensions(),
        }
    }
}

/// What the parser made of a ClientHello, as host code likes it ([`HelloState::load`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientHello {
    pub verdict: Verdict,
    pub record_version: Option<u16>,
    pub client_version: Option<u16>,
    /// The highest TLS version in supported_versions (0 if it holds none).
    pub supported_version: Field<u16>,
    /// The first host_name: a span of the bytes parsed.
    pub server_name: Field<Span>,
    /// Entries in the server_name list.
    pub server_names: usize,
    /// Extensions walked.
    pub extensions: usize,
}

impl ClientHello {
    /// See [`HelloState::highest_version`].
    pub fn highest_version(&self) -> Field<u16> {
        highest_offered(self.supported_version, self.client_version)
    }
}

/// supported_versions' highest when it is there, else the legacy client_version.
#[inline(always)]
fn highest_offered(supported: Field<u16>, client_version: Option<u16>) -> Field<u16> {
    match (supported, client_version) {
        (Field::Absent, Some(legacy)) => Field::Found(legacy),
        (Field::Absent, None) => Field::Unknown,
        (other, _) => other,
    }
}

/// Parses the start of a TCP stream as the kernel sees a segment: bytes may follow
/// those given, so a length past their end is truncation (host tests, replay, CLI).
/// Only the first [`SCAN_LEN`] bytes are read, as in the kernel.
pub fn parse_client_hello(bytes: &[u8]) -> ClientHello {
    parse_bytes(bytes, false)
}

/// [`parse_client_hello`] for bytes that are all there is (a reassembled stream): a
/// length past their end is malformed.
pub fn parse_client_hello_whole(bytes: &[u8]) -> ClientHello {
    parse_bytes(bytes, bytes.len() <= SCAN_LEN)
}

fn parse_bytes(bytes: &[u8], whole: bool) -> ClientHello {
    let (buf, len) = ScanBuf::from_payload(bytes);
    let mut state = HelloState::new();
    parse_in_place(&buf, &mut state, len, whole);
    state.load()
}

/// Parses the ClientHello at the start of `buf`, which holds `len` bytes of a stream;
/// `whole` says that nothing follows them (a length past them is then malformed, not a
/// split). Results are left in `state`; the verdict is also returned.
pub fn parse_in_place(buf: &ScanBuf, state: &mut HelloState, len: usize, whole: bool) -> Verdict {
    // Laundered: see the module's kernel notes.
    let len = buf.launder(if len > SCAN_LEN { SCAN_LEN } else { len });
    state.reset();
    isolated(&mut |_| {
        match parse_preamble(buf, state, len, whole) {
            Ok(Extensions::Block { start, end }) => {
                state.cursor.set(start as u32);
                state.extensions_end.set(end as u32);
            }
            Ok(Extensions::None) => {
                // A ClientHello may end after its compression methods (RFC 5246 §7.4.1.2).
                state.versions.set(FIELD_ABSENT);
                state.names.set(FIELD_ABSENT);
                state.stop(Verdict::Complete);
            }
            Err(verdict) => state.stop(verdict),
        }
        false
    });
    if state.verdict.get() != IN_PROGRESS {
        return state.verdict();
    }
    repeat(MAX_EXTENSIONS, &mut |_| walk_extension(buf, state));
    if state.verdict.get() == IN_PROGRESS {
        let end = state.extensions_end.get() as usize;
        if state.cursor.get() as usize >= end {
            state.stop(walk_end(end, state.readable.get() as usize));
        } else {
            state.stop(Verdict::WalkLimit);
        }
    }
    let walked_all = state.verdict.get() == Verdict::Complete as u8;
    let readable = state.readable.get() as usize;

    match state.versions.get() {
        FIELD_MET => {
            let at = state.versions_at.get() as usize;
            let size = state.versions_len.get() as usize;
            if at + size <= readable {
                read_versions(buf, state, at, size);
            } else {
                state.versions.set(FIELD_UNKNOWN);
            }
        }
        _ if walked_all => state.versions.set(FIELD_ABSENT),
        _ => {}
    }
    match state.names.get() {
        FIELD_MET => {
            let at = state.names_at.get() as usize;
            let size = state.names_len.get() as usize;
            if at + size <= readable {
                isolated(&mut |_| {
                    read_server_names(buf, state, at, size);
                    false
                });
            } else {
                state.names.set(FIELD_UNKNOWN);
            }
        }
        _ if walked_all => state.names.set(FIELD_ABSENT),
        _ => {}
    }
    state.verdict()
}

/// Where the extension block is, if there is one.
enum Extensions {
    None,
    Block { start: usize, end: usize },
}

/// A field ending at `end` of a block ending at `block_end`, in `readable` bytes held.
#[inline(always)]
fn reach(end: usize, block_end: usize, readable: usize) -> Result<(), Verdict> {
    if end > block_end {
        Err(Verdict::Malformed)
    } else if end > readable {
        Err(Verdict::Truncated)
    } else {
        Ok(())
    }
}

/// The big-endian 16 bits at `at`: one unaligned read (`ScanBuf::window`), not two
/// byte reads.
#[inline(always)]
fn u16_at(buf: &ScanBuf, at: usize) -> u16 {
    (buf.window(at) as u16).swap_bytes()
}

#[inline(always)]
fn u24_at(buf: &ScanBuf, at: usize) -> usize {
    usize::from(buf.byte(at)) << 16 | usize::from(u16_at(buf, at + 1))
}

/// The record header, the handshake header and the fixed fields of the ClientHello, up
/// to its extension block.
#[inline(always)]
fn parse_preamble(
    buf: &ScanBuf,
    state: &mut HelloState,
    len: usize,
    whole: bool,
) -> Result<Extensions, Verdict> {
    if len < 1 {
        return Err(Verdict::Truncated);
    }
    // A record header cut short: the rest may follow, unless nothing does.
    let cut = if whole {
        Verdict::Malformed
    } else {
        Verdict::Truncated
    };
    if buf.byte(0) != CONTENT_TYPE_HANDSHAKE {
        return Err(Verdict::NotClientHello);
    }
    if len < 3 {
        return Err(cut);
    }
    let record_version = u16_at(buf, 1);
    if !is_tls_version(record_version) {
        return Err(Verdict::NotClientHello);
    }
    state.record_version.set(record_version);
    state.known.set(KNOWN_RECORD_VERSION);
    if len < RECORD_HEADER_LEN {
        return Err(cut);
    }
    let record_len = usize::from(u16_at(buf, 3));
    if record_len == 0 || record_len > MAX_RECORD_LEN {
        return Err(Verdict::Malformed);
    }
    let record_end = RECORD_HEADER_LEN + record_len;
    if whole && record_end > len {
        return Err(Verdict::Malformed);
    }
    let readable = if record_end < len { record_end } else { len };
    state.readable.set(readable as u32);
    if readable <= RECORD_HEADER_LEN {
        return Err(Verdict::Truncated);
    }
    if buf.byte(RECORD_HEADER_LEN) != HANDSHAKE_CLIENT_HELLO {
        return Err(Verdict::NotClientHello);
    }
    // A record may end inside the handshake header: the message goes on in the next
    // record (RFC 8446 §5.1 allows any fragmentation), so this is no malformation.
    if readable < CLIENT_VERSION_AT {
        return Err(Verdict::Truncated);
    }
    // Past the record's end a ClientHello goes on in the next record: its lengths are
    // judged against its own end, and what the first record does not hold is Unknown.
    let hello_end = CLIENT_VERSION_AT + u24_at(buf, RECORD_HEADER_LEN + 1);
    reach(CLIENT_VERSION_AT + 2, hello_end, readable)?;
    state.client_version.set(u16_at(buf, CLIENT_VERSION_AT));
    state.known.set(KNOWN_RECORD_VERSION | KNOWN_CLIENT_VERSION);

    reach(SESSION_ID_AT + 1, hello_end, readable)?;
    let session_id_len = usize::from(buf.byte(SESSION_ID_AT));
    if session_id_len > MAX_SESSION_ID_LEN {
        return Err(Verdict::Malformed);
    }
    let suites_at = SESSION_ID_AT + 1 + session_id_len;
    reach(suites_at + 2, hello_end, readable)?;
    let suites_len = usize::from(u16_at(buf, suites_at));
    if suites_len == 0 || suites_len % 2 != 0 {
        return Err(Verdict::Malformed);
    }
    let compression_at = suites_at + 2 + suites_len;
    reach(compression_at + 1, hello_end, readable)?;
    let compression_len = usize::from(buf.byte(compression_at));
    if compression_len == 0 {
        return Err(Verdict::Malformed);
    }
    let block_at = compression_at + 1 + compression_len;
    if block_at == hello_end {
        return Ok(Extensions::None);
    }
    reach(block_at + 2, hello_end, readable)?;
    let start = block_at + 2;
    // The block must end where the ClientHello does: servers refuse trailing bytes.
    if start + usize::from(u16_at(buf, block_at)) != hello_end {
        return Err(Verdict::Malformed);
    }
    Ok(Extensions::Block {
        start,
        end: hello_end,
    })
}

/// The walk reached the block's end: complete if the last extension's contents were
/// held too.
#[inline(always)]
fn walk_end(end: usize, readable: usize) -> Verdict {
    if end <= readable {
        Verdict::Complete
    } else {
        Verdict::Truncated
    }
}

/// One step of the extension walk: reads the header at the cursor, notes the two
/// extensions the parser reads, moves past the contents. Returns whether to go on.
#[inline(always)]
fn walk_extension(buf: &ScanBuf, state: &mut HelloState) -> bool {
    let at = state.cursor.get() as usize;
    let end = state.extensions_end.get() as usize;
    if at >= end {
        state.stop(walk_end(end, state.readable.get() as usize));
        return false;
    }
    if let Err(verdict) = reach(at + 4, end, state.readable.get() as usize) {
        state.stop(verdict);
        return false;
    }
    // The extension's header, type and length, in one read.
    let header = buf.window(at);
    let kind = (header as u16).swap_bytes();
    let contents_len = ((header >> 16) as u16).swap_bytes();
    let contents_at = at + 4;
    let next = contents_at + usize::from(contents_len);
    if next > end {
        state.stop(Verdict::Malformed);
        return false;
    }
    let (field, field_at, field_len) = match kind {
        EXTENSION_SERVER_NAME => (&mut state.names, &mut state.names_at, &mut state.names_len),
        EXTENSION_SUPPORTED_VERSIONS => (
            &mut state.versions,
            &mut state.versions_at,
            &mut state.versions_len,
        ),
        // GREASE and every other extension: passed over.
        _ => {
            state.extensions.set(state.extensions.get() + 1);
            state.cursor.set(next as u32);
            return true;
        }
    };
    // RFC 8446 §4.2: an extension type appears once.
    if field.get() != FIELD_UNKNOWN {
        state.verdict.set(Verdict::Malformed as u8);
        return false;
    }
    field.set(FIELD_MET);
    field_at.set(contents_at as u32);
    field_len.set(u32::from(contents_len));
    state.extensions.set(state.extensions.get() + 1);
    state.cursor.set(next as u32);
    true
}

/// supported_versions' contents (RFC 8446 §4.2.1), all held: a one-byte length of 2 to
/// 254, even, then the versions, read four a step.
#[inline(always)]
fn read_versions(buf: &ScanBuf, state: &mut HelloState, at: usize, len: usize) {
    let list_len = usize::from(buf.byte(at));
    if len == 0 || list_len < 2 || list_len % 2 != 0 || list_len + 1 != len {
        state.versions.set(FIELD_UNKNOWN);
        state.verdict.set(Verdict::Malformed as u8);
        return;
    }
    let first = at + 1;
    state.highest_version.set(0);
    repeat(VERSION_STEPS, &mut |step: u32| {
        let index = step as usize * VERSIONS_PER_STEP;
        for k in 0..VERSIONS_PER_STEP {
            let offset = 2 * (index + k);
            if offset < list_len {
                let version = u16_at(buf, first + offset);
                if is_tls_version(version) && version > state.highest_version.get() {
                    state.highest_version.set(version);
                }
            }
        }
        2 * (index + VERSIONS_PER_STEP) < list_len
    });
    state.versions.set(FIELD_FOUND);
}

/// server_name's contents (RFC 6066 §3), all held: a two-byte list length, then entries
/// of a type, a two-byte length (not zero) and the name. Records the first host_name.
#[inline(always)]
fn read_server_names(buf: &ScanBuf, state: &mut HelloState, at: usize, len: usize) {
    let end = at + len;
    if len < 2 {
        state.names.set(FIELD_UNKNOWN);
        state.verdict.set(Verdict::Malformed as u8);
        return;
    }
    let list_len = usize::from(u16_at(buf, at));
    if list_len == 0 || list_len + 2 != len {
        state.names.set(FIELD_UNKNOWN);
        state.verdict.set(Verdict::Malformed as u8);
        return;
    }
    let mut entry = at + 2;
    let mut count = 0u8;
    let mut first_host = Span::ABSENT;
    for _ in 0..MAX_SERVER_NAMES {
        if entry >= end {
            break;
        }
        let name_at = entry + 3;
        let name_len = if name_at <= end {
            usize::from(u16_at(buf, entry + 1))
        } else {
            0
        };
        if name_len == 0 || name_at + name_len > end {
            state.names.set(FIELD_UNKNOWN);
            state.verdict.set(Verdict::Malformed as u8);
            return;
        }
        if buf.byte(entry) == NAME_TYPE_HOST_NAME && !first_host.is_present() {
            first_host = Span::new(name_at, name_at + name_len);
        }
        count += 1;
        entry = name_at + name_len;
    }
    state.name_count.set(count);
    if first_host.is_present() {
        state.host_name.set(first_host);
        state.names.set(FIELD_FOUND);
    } else if entry >= end {
        state.names.set(FIELD_ABSENT);
    } else {
        // More entries than examined, none of them a host_name.
        state.names.set(FIELD_UNKNOWN);
    }
}

#[cfg(any(test, feature = "user"))]
pub mod builder;
#[cfg(test)]
mod tests;
