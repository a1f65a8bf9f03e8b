//! The egress program: watches the server's answers leave (issue 13). It observes and
//! never drops: whatever it makes of a packet, the packet goes on (`TC_ACT_OK`).
//!
//! Attached beside the XDP program on every filtered interface (tcx on 6.6 and newer,
//! a clsact qdisc before), it shares the XDP program's maps: the same object, loaded
//! once. On the SIP server's host, answers leave through the filtered interface; on a
//! gateway in front of it, forwarded answers leave through its outside interface: both
//! are answers going out, from a SIP port to the peer that asked. Answers coming in are
//! never learnt from: anyone can forge them.
//!
//! In steps from the entry point, each verified once and each leaving its
//! findings in per-CPU memory (see the XDP program's `judge`): [`load_answer`] walks
//! the headers, copies the payload and parses it; [`pair_answer`] finds the request it
//! answers and classifies it ([`AnswerKind`]); [`learn`] applies what it means
//! ([`crate::auth`]).
//!
//! A TCP segment with payload leaving from a SIP port may hold several messages (the
//! server's coalesced writes; the answers to a guesser's pipelined requests, which TSO
//! hands this hook as one segment of up to 64 KB): the entry program hands it to
//! [`sip_filter_answers_tcp`] by tail call, which reads one message per run, each
//! bounded by its Content-Length and that by the bytes left in the segment
//! ([`message_end`]), and tail-calls itself for the next, up to
//! [`MAX_ANSWER_STREAM_MESSAGES`] (issue 14).

use aya_ebpf::{
    bindings::TC_ACT_OK,
    helpers::generated::bpf_ktime_get_coarse_ns,
    macros::{classifier, map},
    maps::{PerCpuArray, ProgramArray},
    programs::TcContext,
};
use sip_filter_common::{
    maps::{
        AnswerCounters, AnswerKind, FilterConfig, SourceKey, Transaction, Transport,
        ANSWER_PROGRAM_SLOTS, ANSWER_PROGRAM_SLOT_STREAM, ANSWER_SLOTS, FLAG_ANSWERS,
        MAX_ANSWER_STREAM_MESSAGES, TRANSACTION_CREDENTIALED,
    },
    sip::{
        pairing::{granted_expiry, is_stale, transaction_of},
        parse_in_place,
        stream::{header_section_cut, message_end, ANSWER_STREAM_HEADERS},
        value_of, Header, Kind, Method, ANSWER_HEADERS,
    },
    Scratch, SCAN_LEN,
};

use crate::{
    auth,
    headers::{parse_headers, Headers, Source, EGRESS},
    payload::load_payload,
    source_key, CONFIG,
};

#[map(name = "SF_ANSWER_COUNTERS")]
pub static ANSWER_COUNTERS: PerCpuArray<AnswerCounters> = PerCpuArray::with_max_entries(1, 0);

/// Per-CPU scratch for the answer's payload: the parser's working memory.
#[map(name = "SF_ANSWER_SCAN")]
static ANSWER_SCAN: PerCpuArray<Scratch> = PerCpuArray::with_max_entries(1, 0);

/// What one step leaves for the next.
#[repr(C)]
struct Answer {
    /// The peer (the answer's destination): its source key and address.
    key: SourceKey,
    address: [u8; 16],
    /// The request's note, taken from the transaction table.
    transaction: Transaction,
    /// For a 2xx to a REGISTER: the seconds granted.
    registered_for_s: u32,
    /// The answer's status code.
    status: u32,
    /// The answer's [`Transport`] number, for the events it makes.
    transport: u32,
    /// Over TCP: the segment's payload, where it starts in the frame and its length.
    payload_offset: u32,
    payload_len: u32,
    /// Over TCP: where the message being read starts, from the payload's first byte, and
    /// how many of the segment's messages were read before it.
    stream_offset: u32,
    stream_messages: u32,
    /// [`STREAM_MESSAGE`] if the parse found a SIP message (request or answer), whose
    /// end the walk can look for.
    stream_found: u32,
    /// Where the message after it starts, from its first byte; 0 for none within the
    /// segment.
    stream_next: u32,
}

#[map(name = "SF_ANSWER")]
static ANSWER: PerCpuArray<Answer> = PerCpuArray::with_max_entries(1, 0);

/// The programs the egress program enters by tail call (`ANSWER_PROGRAM_SLOT_*`): a
/// program array of its own, since `SF_PROGRAMS` holds XDP programs.
#[map(name = "SF_ANSWER_PROGRAMS")]
static ANSWER_PROGRAMS: ProgramArray = ProgramArray::with_max_entries(ANSWER_PROGRAM_SLOTS, 0);

/// [`load_answer`]'s answers: no answer to read (not from a SIP port, no SIP answer);
/// an answer, parsed in the scratch; a TCP segment with payload, for
/// [`sip_filter_answers_tcp`].
const NO_ANSWER: u32 = 0;
const ANSWER_PARSED: u32 = 1;
const TCP_SEGMENT: u32 = 2;

/// [`Answer::stream_found`] for a SIP message.
const STREAM_MESSAGE: u32 = 1;

#[classifier]
pub fn sip_filter_answers(ctx: TcContext) -> i32 {
    let loaded = load_answer(&ctx);
    let kind = if loaded == ANSWER_PARSED {
        pair_answer()
    } else {
        if loaded == TCP_SEGMENT {
            // From here, the program's own frame: a tail call made from a function
            // returns to that function's caller when the program it entered ends.
            enter_stream_program(&ctx);
            // Only if the stream program is missing: the segment counts `not_answer`,
            // unread.
        }
        AnswerKind::NotAnswer as u32
    };
    conclude(kind);
    TC_ACT_OK
}

/// The messages of a TCP segment leaving from a SIP port, one per run: the one at
/// [`Answer::stream_offset`] is parsed, paired and learnt from as a datagram's answer
/// is, except that one whose header section the segment's end cut is not (counted
/// `stream_cut`). Then, if another SIP message follows within the segment, this
/// program tail-calls itself for it, up to [`MAX_ANSWER_STREAM_MESSAGES`] messages
/// (`stream_unread` counts a segment with more). Entered from [`sip_filter_answers`],
/// which noted the segment in the [`Answer`].
#[classifier]
pub fn sip_filter_answers_tcp(ctx: TcContext) -> i32 {
    let kind = if load_stream_message(&ctx) {
        pair_answer()
    } else {
        AnswerKind::NotAnswer as u32
    };
    note_next_message();
    conclude(kind);
    if walk_on() {
        enter_stream_program(&ctx);
        // Only past the kernel's chain of 33 tail calls, which the bound stays within.
        bump_answers(|c| &mut c.stream_unread);
    }
    TC_ACT_OK
}

/// Tail-calls [`sip_filter_answers_tcp`] for the message at [`Answer::stream_offset`].
/// Returns only if it is missing, or past the kernel's chain of tail calls.
#[inline(always)]
fn enter_stream_program(ctx: &TcContext) {
    // SAFETY: the context is this program's own; on success this never returns.
    let _ = unsafe { ANSWER_PROGRAMS.tail_call(ctx, ANSWER_PROGRAM_SLOT_STREAM) };
}

/// What an answer of `kind` (from [`pair_answer`]) means, counted and learnt: the
/// steps both programs end with. Each look into the answer's headers is a step of its
/// own: verified once, not once per way the one before it could end (6.1 counts every
/// path).
#[inline(always)]
fn conclude(mut kind: u32) {
    const CHALLENGE: u32 = AnswerKind::Challenge as u32;
    const FAILURE: u32 = AnswerKind::Failure as u32;
    const REJECTED_USER: u32 = AnswerKind::RejectedUser as u32;
    const SUCCESS: u32 = AnswerKind::Success as u32;
    if matches!(kind, CHALLENGE | FAILURE) && challenge_is_stale() {
        kind = AnswerKind::Stale as u32;
    }
    if kind == SUCCESS {
        note_registration_expiry();
    }
    count_kind(kind);
    if matches!(kind, FAILURE | REJECTED_USER | SUCCESS) {
        learn(kind);
    }
}

/// Walks the headers of a packet going out; for one from a SIP port, notes the peer,
/// and copies a datagram's payload into the scratch and parses it. A TCP segment with
/// payload is noted for [`sip_filter_answers_tcp`] instead. Not inlined: its stack is
/// gone before the parse runs (the 512 bytes are shared along the call chain).
#[inline(never)]
fn load_answer(ctx: &TcContext) -> u32 {
    let Some(config) = CONFIG.get(0) else {
        return NO_ANSWER;
    };
    if !config.has(FLAG_ANSWERS) {
        return NO_ANSWER;
    }
    // Answers from the SIP ports, UDP and TCP (over TLS they are encrypted).
    let sip_port = |is_tcp: bool, port: u16| {
        if is_tcp {
            config.is_tcp_port(port)
        } else {
            config.is_sip_port(port)
        }
    };
    let Headers::Transport(transport) = parse_headers::<EGRESS>(ctx, sip_port) else {
        return NO_ANSWER;
    };
    let (Some(scratch), Some(answer)) = (ANSWER_SCAN.get_ptr_mut(0), ANSWER.get_ptr_mut(0)) else {
        return NO_ANSWER;
    };
    // SAFETY: per-CPU, used only by this CPU during this run.
    let (scratch, answer) = unsafe { (&mut *scratch, &mut *answer) };
    note_peer(config, &transport.source, answer);
    if transport.is_tcp {
        answer.transport = Transport::Tcp as u32;
        // A segment without payload (an acknowledgement) holds no answer.
        if transport.payload_len == 0 {
            return NO_ANSWER;
        }
        // The walk starts at the payload's first byte.
        answer.payload_offset = transport.payload_offset;
        answer.payload_len = transport.payload_len;
        answer.stream_offset = 0;
        answer.stream_messages = 0;
        return TCP_SEGMENT;
    }
    answer.transport = Transport::Udp as u32;
    start_message(answer);
    let Some(len) = load_payload(
        ctx,
        transport.payload_offset,
        transport.payload_len,
        &mut scratch.buf,
    ) else {
        return NO_ANSWER;
    };
    let whole = !transport.first_fragment && transport.payload_len <= SCAN_LEN as u32;
    if parse_in_place::<ANSWER_HEADERS>(scratch, len, whole) == Kind::Sip && !scratch.is_request() {
        ANSWER_PARSED
    } else {
        NO_ANSWER
    }
}

/// Forgets what the message before this one (of this segment, or of an earlier packet)
/// left in the [`Answer`]: its request's note, status and expiry.
#[inline(always)]
fn start_message(answer: &mut Answer) {
    answer.transaction = Transaction::default();
    answer.status = 0;
    answer.registered_for_s = 0;
}

/// Copies the segment's payload from [`Answer::stream_offset`] into the scratch and
/// parses the message there; whether it is an answer whose header section the segment
/// holds whole (one that was cut is counted, and not read further). Not inlined: its
/// stack is gone before the pairing runs.
#[inline(never)]
fn load_stream_message(ctx: &TcContext) -> bool {
    let (Some(scratch), Some(answer)) = (ANSWER_SCAN.get_ptr_mut(0), ANSWER.get_ptr_mut(0)) else {
        return false;
    };
    // SAFETY: per-CPU, used only by this CPU during this run.
    let (scratch, answer) = unsafe { (&mut *scratch, &mut *answer) };
    start_message(answer);
    answer.stream_found = 0;
    let offset = answer.stream_offset;
    if offset >= answer.payload_len {
        return false;
    }
    if answer.stream_messages > 0 {
        bump_answers(|c| &mut c.stream_later);
    }
    let left = answer.payload_len - offset;
    let Some(len) = load_payload(ctx, answer.payload_offset + offset, left, &mut scratch.buf)
    else {
        return false;
    };
    // Never whole: a line cut by the segment's end is no line (the rest comes later).
    if parse_in_place::<ANSWER_STREAM_HEADERS>(scratch, len, false) != Kind::Sip {
        return false;
    }
    answer.stream_found = STREAM_MESSAGE;
    if header_section_cut(scratch, left) {
        bump_answers(|c| &mut c.stream_cut);
        return false;
    }
    !scratch.is_request()
}

/// Where the message after the one in the scratch starts, if that one is a SIP message
/// whose end lies within the segment, into [`Answer::stream_next`] (0 for none). A step
/// of its own, while the verifier has one state to walk it in (see the TCP program's
/// `note_next_message`).
#[inline(never)]
fn note_next_message() {
    let (Some(scratch), Some(answer)) = (ANSWER_SCAN.get_ptr(0), ANSWER.get_ptr_mut(0)) else {
        return;
    };
    // SAFETY: per-CPU, used only by this CPU during this run.
    let (scratch, answer) = unsafe { (&*scratch, &mut *answer) };
    let left = answer.payload_len.saturating_sub(answer.stream_offset);
    answer.stream_next = match message_end(scratch, left) {
        Some(end) if answer.stream_found == STREAM_MESSAGE && end != 0 && end < left => end,
        _ => 0,
    };
}

/// After a message: whether the walk goes on to the segment's next, which it notes in
/// the [`Answer`] (one that has another past the bound counts `stream_unread`).
#[inline(never)]
fn walk_on() -> bool {
    let Some(answer) = ANSWER.get_ptr_mut(0) else {
        return false;
    };
    // SAFETY: per-CPU, used only by this CPU during this run.
    let answer = unsafe { &mut *answer };
    if answer.stream_next == 0 {
        return false;
    }
    let read = answer.stream_messages + 1;
    if read >= MAX_ANSWER_STREAM_MESSAGES {
        bump_answers(|c| &mut c.stream_unread);
        return false;
    }
    answer.stream_offset += answer.stream_next;
    answer.stream_messages = read;
    true
}

/// Notes the peer the answer goes to. Not inlined: the key's computation stays off
/// [`load_answer`]'s frame, which is on the parse's call chain.
#[inline(never)]
fn note_peer(config: &FilterConfig, peer: &Source, answer: &mut Answer) {
    answer.key = source_key(config, peer);
    answer.address = peer.address;
}

/// Finds the request the answer in the scratch answers (taking it from the table if
/// the answer is final) and classifies the answer: an [`AnswerKind`] number.
#[inline(never)]
fn pair_answer() -> u32 {
    let (Some(config), Some(scratch), Some(answer)) =
        (CONFIG.get(0), ANSWER_SCAN.get_ptr(0), ANSWER.get_ptr_mut(0))
    else {
        return AnswerKind::NotAnswer as u32;
    };
    // SAFETY: per-CPU, used only by this CPU during this run.
    let (scratch, answer) = unsafe { (&*scratch, &mut *answer) };
    let id = transaction_of(scratch, config.domain_seed);
    let status = scratch.status();
    let provisional = status < 200;
    if id == 0 || !auth::take(&answer.key, id, provisional, &mut answer.transaction) {
        return AnswerKind::Unpaired as u32;
    }
    if provisional {
        return AnswerKind::Other as u32;
    }
    let credentialed = answer.transaction.flags & TRANSACTION_CREDENTIALED != 0;
    answer.status = u32::from(status);
    AnswerKind::of(status, credentialed, answer.transaction.method) as u32
}

/// Whether the 401/407 in the scratch says `stale=true` (a 403 has no challenge).
#[inline(never)]
fn challenge_is_stale() -> bool {
    let (Some(scratch), Some(answer)) = (ANSWER_SCAN.get_ptr(0), ANSWER.get_ptr(0)) else {
        return false;
    };
    // SAFETY: per-CPU, used only by this CPU during this run.
    let (scratch, answer) = unsafe { (&*scratch, &*answer) };
    if answer.status != 401 && answer.status != 407 {
        return false;
    }
    let buf = &scratch.buf;
    is_stale(buf, value_of(buf, scratch.header(Header::Challenge)))
}

/// For a 2xx to a REGISTER, how long it was granted (`registered_for_s`; else 0).
#[inline(never)]
fn note_registration_expiry() {
    let (Some(scratch), Some(answer)) = (ANSWER_SCAN.get_ptr(0), ANSWER.get_ptr_mut(0)) else {
        return;
    };
    // SAFETY: per-CPU, used only by this CPU during this run.
    let (scratch, answer) = unsafe { (&*scratch, &mut *answer) };
    answer.registered_for_s = 0;
    if answer.transaction.method != Method::Register as u32 {
        return;
    }
    let buf = &scratch.buf;
    answer.registered_for_s = granted_expiry(
        buf,
        value_of(buf, scratch.header(Header::Expires)),
        value_of(buf, scratch.header(Header::Contact)),
    )
    .unwrap_or(0);
}

/// What a failure, a refused user or a success teaches ([`crate::auth`]).
#[inline(never)]
fn learn(kind: u32) {
    let (Some(config), Some(counters), Some(answer)) = (
        CONFIG.get(0),
        ANSWER_COUNTERS.get_ptr_mut(0),
        ANSWER.get_ptr(0),
    ) else {
        return;
    };
    // SAFETY: per-CPU, used only by this CPU during this run.
    let (counters, answer) = unsafe { (&mut *counters, &*answer) };
    // SAFETY: a helper without arguments.
    let now = unsafe { bpf_ktime_get_coarse_ns() };
    let account = &answer.transaction.account(config.domain_seed);
    if kind == AnswerKind::Success as u32 {
        auth::learn_success(
            config,
            counters,
            &answer.key,
            (&answer.address, answer.transport),
            account,
            answer.registered_for_s,
            now,
        );
    } else {
        let failed_password = kind == AnswerKind::Failure as u32;
        auth::learn_failure(
            config,
            counters,
            &answer.key,
            (&answer.address, answer.transport),
            account,
            failed_password,
            now,
        );
    }
}

/// The one place the egress program counts answers, by kind.
#[inline(always)]
fn count_kind(kind: u32) {
    if let Some(counters) = ANSWER_COUNTERS.get_ptr_mut(0) {
        // SAFETY: a per-CPU value, only touched by this CPU while a program runs.
        unsafe { (*counters).kinds[kind as usize & (ANSWER_SLOTS - 1)] += 1 };
    }
}

/// Adds one to a field of the answer counters (both programs count there).
#[inline(always)]
pub fn bump_answers(field: fn(&mut AnswerCounters) -> &mut u64) {
    if let Some(counters) = ANSWER_COUNTERS.get_ptr_mut(0) {
        // SAFETY: a per-CPU value, only touched by this CPU while a program runs.
        *field(unsafe { &mut *counters }) += 1;
    }
}
