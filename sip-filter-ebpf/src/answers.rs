//! The egress program: watches the server's answers leave (issue 13). It observes and
//! never drops: whatever it makes of a packet, the packet goes on (`TC_ACT_OK`).
//!
//! Attached beside the XDP program on every filtered interface (tcx on 6.6 and newer,
//! a clsact qdisc before), it shares the XDP program's maps: the same object, loaded
//! once.

use aya_ebpf::{
    bindings::TC_ACT_OK,
    macros::{classifier, map},
    maps::PerCpuArray,
    programs::TcContext,
};
use sip_filter_common::maps::{AnswerCounters, AnswerKind, ANSWER_SLOTS};

#[map(name = "SF_ANSWER_COUNTERS")]
static ANSWER_COUNTERS: PerCpuArray<AnswerCounters> = PerCpuArray::with_max_entries(1, 0);

#[classifier]
pub fn sip_filter_answers(ctx: TcContext) -> i32 {
    observe(&ctx);
    TC_ACT_OK
}

/// What the packet is; counted.
#[inline(always)]
fn observe(_ctx: &TcContext) {
    count(AnswerKind::NotAnswer);
}

/// The one place the egress program counts.
#[inline(always)]
fn count(kind: AnswerKind) {
    if let Some(counters) = ANSWER_COUNTERS.get_ptr_mut(0) {
        // SAFETY: a per-CPU value, only touched by this CPU while the program runs.
        unsafe { (*counters).kinds[kind as usize & (ANSWER_SLOTS - 1)] += 1 };
    }
}
