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
//! the headers, copies the payload and parses it; [`pair_answer`] finds the request it answers
//! and classifies it ([`AnswerKind`]); [`learn`] applies what it means
//! ([`crate::auth`]).

use aya_ebpf::{
    bindings::TC_ACT_OK,
    helpers::generated::bpf_ktime_get_coarse_ns,
    macros::{classifier, map},
    maps::PerCpuArray,
    programs::TcContext,
};
use sip_filter_common::{
    maps::{
        AnswerCounters, AnswerKind, FilterConfig, SourceKey, Transaction, Transport, ANSWER_SLOTS,
        FLAG_ANSWERS, TRANSACTION_CREDENTIALED,
    },
    sip::{
        pairing::{granted_expiry, is_stale, transaction_of},
        parse_in_place, value_of, Header, Kind, Method, ANSWER_HEADERS,
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
}

#[map(name = "SF_ANSWER")]
static ANSWER: PerCpuArray<Answer> = PerCpuArray::with_max_entries(1, 0);

#[classifier]
pub fn sip_filter_answers(ctx: TcContext) -> i32 {
    const CHALLENGE: u32 = AnswerKind::Challenge as u32;
    const FAILURE: u32 = AnswerKind::Failure as u32;
    const REJECTED_USER: u32 = AnswerKind::RejectedUser as u32;
    const SUCCESS: u32 = AnswerKind::Success as u32;
    let mut kind = if load_answer(&ctx) {
        pair_answer()
    } else {
        AnswerKind::NotAnswer as u32
    };
    // Each look into the answer's headers is a step of its own: verified once, not
    // once per way the one before it could end (6.1 counts every path).
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
    TC_ACT_OK
}

/// Walks the headers of a packet going out; for one from a SIP port, copies its
/// payload into the scratch and notes the peer. Not inlined: its stack is gone before
/// the parse runs (the 512 bytes are shared along the call chain).
#[inline(never)]
fn load_answer(ctx: &TcContext) -> bool {
    let Some(config) = CONFIG.get(0) else {
        return false;
    };
    if !config.has(FLAG_ANSWERS) {
        return false;
    }
    let Headers::Transport(transport) = parse_headers::<EGRESS>(ctx) else {
        return false;
    };
    let sip_port = if transport.is_tcp {
        config.is_tcp_port(transport.dst_port)
    } else {
        config.is_sip_port(transport.dst_port)
    };
    let (Some(scratch), Some(answer)) = (ANSWER_SCAN.get_ptr_mut(0), ANSWER.get_ptr_mut(0)) else {
        return false;
    };
    if !sip_port {
        return false;
    }
    // SAFETY: per-CPU, used only by this CPU during this run.
    let (scratch, answer) = unsafe { (&mut *scratch, &mut *answer) };
    note_peer(config, &transport.source, answer);
    // Without a branch: the verifier would walk the parse below once for each side.
    const { assert!(Transport::Tcp as u32 == Transport::Udp as u32 + 1) };
    answer.transport = Transport::Udp as u32 + u32::from(transport.is_tcp);
    let Some(len) = load_payload(
        ctx,
        transport.payload_offset,
        transport.payload_len,
        &mut scratch.buf,
    ) else {
        return false;
    };
    // A TCP segment may end inside a message: only a datagram is known whole.
    let whole =
        !transport.is_tcp && !transport.first_fragment && transport.payload_len <= SCAN_LEN as u32;
    parse_in_place::<ANSWER_HEADERS>(scratch, len, whole) == Kind::Sip && !scratch.is_request()
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
    let account = &answer.transaction.account;
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
