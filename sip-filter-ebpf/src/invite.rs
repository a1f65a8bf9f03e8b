//! The INVITE program (issue 18): entered by tail call from the XDP program's `finish`
//! for an INVITE the request policy passed, with the parsed message in the per-CPU
//! scratch and the source's findings in the [`Packet`]. It applies, in its own verifier
//! budget, the account's call budget and the destination rules to the dialled number
//! ([`sip_filter_common::sip::dialled`]), leaves its reason in the [`Packet`], then goes
//! on as `finish` would have: the answers' bookkeeping if the INVITE still passes, and
//! [`conclude`].
//!
//! A new call is an INVITE outside a dialog (no To tag): a re-INVITE is neither metered
//! nor denied, so a call in progress is never cut. The account is the digest username
//! of the INVITE's credentials, else its From user ([`caller_user`]: a trunk's or an
//! IP-authenticated PBX's INVITEs carry no credentials, nor does a call's first INVITE
//! before the server challenges it). An INVITE naming neither meets the rules and the
//! per-source meters only.
//!
//! A call counts once ([`SeenCall`]): its retransmissions, and the INVITE resent with
//! credentials after a challenge, are not new calls. Only an account the call was not
//! yet charged to is charged for them (the digest username after a From user that
//! differs), so a thief cannot have his calls charged to made-up From users.
//!
//! [`Packet`]: crate::Packet

use aya_ebpf::{
    bindings::BPF_F_NO_PREALLOC,
    helpers::generated::bpf_ktime_get_coarse_ns,
    macros::{map, xdp},
    maps::{lpm_trie::Key, Array, LpmTrie, LruHashMap, PerCpuArray},
    programs::XdpContext,
};
use sip_filter_common::{
    maps::{
        CallBudget, CallKey, CallerKey, Calls, DestinationConfig, DestinationCounters,
        DestinationKey, DestinationRule, EventKind, RuleCounters, SeenCall,
        Transport as TransportKind, CALLER_ACCOUNT, CALLER_SOURCE, CALL_BUDGETS_ON,
        DESTINATION_DENY, DESTINATION_LIMIT, DESTINATION_RULES_ON, FLAG_DRY_RUN, HOUR_NS,
        MAX_CALL_BUDGETS, MAX_CALL_REPEATS, MAX_DESTINATION_CALLERS, MAX_DESTINATION_RULES,
        MAX_SEEN_CALLS, MINUTE_NS, SEEN_CALL_NS,
    },
    sip::{
        dialled::{dialled, Dialled, DialledKind, Dialling},
        find_from_header, has_tag,
        pairing::{
            call_identity, caller_user, decimal, digest_username, from_tag, Account, ACCOUNT_WORDS,
        },
        value_of, Header, Method, Scratch, Span,
    },
    Reason,
};

use crate::{
    answers_bookkeeping, conclude, leave_reason, read_back, sources::emit, tcp, CONFIG, PACKET,
    SCAN,
};

/// The destination rules, by longest prefix of the dialled number's key.
#[map(name = "SF_DEST_RULES")]
static RULES: LpmTrie<DestinationKey, DestinationRule> =
    LpmTrie::with_max_entries(MAX_DESTINATION_RULES, BPF_F_NO_PREALLOC);

#[map(name = "SF_DEST_CONFIG")]
static DESTINATION_CONFIG: Array<DestinationConfig> = Array::with_max_entries(1, 0);

#[map(name = "SF_DEST_COUNTERS")]
static COUNTERS: PerCpuArray<DestinationCounters> = PerCpuArray::with_max_entries(1, 0);

#[map(name = "SF_DEST_RULE_COUNTERS")]
static RULE_COUNTERS: PerCpuArray<RuleCounters> =
    PerCpuArray::with_max_entries(MAX_DESTINATION_RULES, 0);

/// New calls per rule and source, and per rule and account.
#[map(name = "SF_DEST_CALLERS")]
static CALLERS: LruHashMap<CallerKey, Calls> =
    LruHashMap::with_max_entries(MAX_DESTINATION_CALLERS, 0);

/// Each account's call budget, by its key ([`Account::key`]).
#[map(name = "SF_CALL_BUDGETS")]
static BUDGETS: LruHashMap<u64, CallBudget> = LruHashMap::with_max_entries(MAX_CALL_BUDGETS, 0);

/// The calls counted lately, to count each once (see the module).
#[map(name = "SF_SEEN_CALLS")]
static SEEN_CALLS: LruHashMap<CallKey, SeenCall> = LruHashMap::with_max_entries(MAX_SEEN_CALLS, 0);

/// The INVITE's findings, in memory rather than on the stack: 6.1 adds up the frames
/// of a call chain, each rounded to 32 bytes, against 512 bytes.
#[repr(C)]
struct Invite {
    /// The normaliser's working memory.
    dialling: Dialling,
    number: Dialled,
    account: Account,
    /// The From header's value.
    from: Span,
    /// The INVITE carries credentials.
    credentialed: u32,
    /// What it is to the meters: a new call, or one counted already and whether its
    /// account is charged now ([`recall_call`]).
    new_call: u32,
    charge_account: u32,
    /// The call, and the INVITE's CSeq number, to remember it by.
    call: CallKey,
    cseq: u32,
}

#[map(name = "SF_INVITE_SCRATCH")]
static INVITE: PerCpuArray<Invite> = PerCpuArray::with_max_entries(1, 0);

#[xdp]
pub fn sip_filter_invite(ctx: XdpContext) -> u32 {
    // Read before `conclude`, whose count resets it.
    let over_tcp = read_back(|p| &p.transport) == TransportKind::Tcp as u32;
    // In turn, not one inside the other: the stack is shared along the call chain.
    if opens_a_call() {
        find_account();
        judge_invite();
    }
    if read_back(|p| &p.reason) == Reason::PassRequest as u32 {
        answers_bookkeeping();
    }
    let action = conclude(&ctx);
    if over_tcp {
        // Entered from the TCP policy program: its walk over the segment goes on.
        return tcp::walk_on_after(&ctx, action);
    }
    action
}

/// Whether the INVITE meets the rules and budgets: they are on, and it is outside a
/// dialog (a re-INVITE belongs to a call already made).
#[inline(never)]
fn opens_a_call() -> bool {
    let (Some(rules_config), Some(scratch)) = (DESTINATION_CONFIG.get(0), SCAN.get_ptr(0)) else {
        return false;
    };
    if rules_config.flags == 0 {
        return false;
    }
    // SAFETY: per-CPU, written by `judge` earlier in this run.
    let scratch = unsafe { &*scratch };
    let buf = &scratch.buf;
    let to = value_of(buf, scratch.header(Header::To));
    if to.is_present() && has_tag(buf, to) {
        return false;
    }
    bump(|c| &mut c.invites);
    true
}

/// The account's budget and the destination rules, on an INVITE that opens a call and
/// whose account was found; a drop's reason left in the [`crate::Packet`].
#[inline(never)]
fn judge_invite() {
    let (Some(rules_config), Some(config), Some(scratch), Some(packet), Some(invite)) = (
        DESTINATION_CONFIG.get(0),
        CONFIG.get(0),
        SCAN.get_ptr(0),
        PACKET.get_ptr(0),
        INVITE.get_ptr_mut(0),
    ) else {
        return;
    };
    // SAFETY: per-CPU, written by `judge` earlier in this run; `invite` is ours alone.
    let (scratch, packet, invite) = unsafe { (&*scratch, &*packet, &mut *invite) };
    let account = &invite.account;
    // SAFETY: a helper without arguments.
    let now = unsafe { bpf_ktime_get_coarse_ns() };
    let dry_run = config.has(FLAG_DRY_RUN);
    let budgets = rules_config.has(CALL_BUDGETS_ON) && account.key != 0;
    if budgets && is_blocked(account.key, now) {
        leave_reason(Reason::DropCallBudget);
        return;
    }
    find_number(invite, scratch, rules_config);
    recall_call(invite, scratch, &packet.key, config.domain_seed, now);
    if invite.new_call == 0 {
        bump(|c| &mut c.repeats);
    }
    let (invite, account) = (&*invite, &invite.account);
    let (new_call, charge_account) = (invite.new_call != 0, invite.charge_account != 0);
    let number = &invite.number;
    // Read as a plain number: knowing the enum's range, the compiler would drop the
    // mask the verifier needs to see the index bounded.
    // SAFETY: `DialledKind` is `repr(u32)`; the field is ours.
    bump_dialled(unsafe {
        core::ptr::read_volatile((&number.kind as *const DialledKind).cast::<u32>())
    } as usize);
    let mut limited = number.kind == DialledKind::International;
    let numeric = matches!(
        number.kind,
        DialledKind::National | DialledKind::International
    );
    if numeric && rules_config.has(DESTINATION_RULES_ON) {
        let key = Key::new(number.len * 8, number.key);
        match RULES.get(&key) {
            Some(rule) => {
                let rule = *rule;
                let denied = rule.action == DESTINATION_DENY;
                limited |= rule.action == DESTINATION_LIMIT;
                // Both callers are noted (the report), and both meters charged, for a
                // new call; a call counted already is charged to a new account only.
                let source_over =
                    new_call && note_source(&rule, &packet.key, &packet.source, denied, now);
                let account_over = charge_account && note_account(&rule, account, denied, now);
                let dropped = if denied {
                    Some(Reason::DropDestinationDenied)
                } else if source_over || account_over {
                    Some(Reason::DropDestinationLimited)
                } else {
                    None
                };
                note_rule(rule.id, dropped.is_some());
                if let Some(reason) = dropped {
                    leave_reason(reason);
                    return;
                }
            }
            None => bump(|c| &mut c.unmatched),
        }
    }
    if budgets && charge_account && breaches_budget(rules_config, account, limited, now) {
        bump(|c| &mut c.budget_breaches);
        emit(
            &packet.source,
            EventKind::CallBudget,
            Reason::DropCallBudget as u32,
            Method::Invite as u32,
            dry_run,
            packet.transport,
            now.saturating_add(rules_config.block_ns),
            &account.name,
        );
        leave_reason(Reason::DropCallBudget);
        return;
    }
    remember_call(invite, now);
}

/// The account the INVITE names: the digest username of its credentials, else the user
/// of its From (found here: the request's parse does not record it).
#[inline(never)]
fn find_account() {
    let (Some(config), Some(scratch), Some(invite)) =
        (CONFIG.get(0), SCAN.get_ptr(0), INVITE.get_ptr_mut(0))
    else {
        return;
    };
    // SAFETY: per-CPU, written by `judge` earlier in this run; `invite` is ours alone.
    let (scratch, invite) = unsafe { (&*scratch, &mut *invite) };
    let buf = &scratch.buf;
    let credentials = value_of(buf, scratch.header(Header::Credentials));
    invite.credentialed = u32::from(credentials.is_present());
    invite.from = find_from_header(scratch);
    let username = if credentials.is_present() {
        digest_username(buf, credentials)
    } else {
        Span::ABSENT
    };
    let named = if username.is_empty() {
        caller_user(buf, invite.from)
    } else {
        username
    };
    invite.account = Account::of(buf, named, config.domain_seed);
    if invite.account.key == 0 {
        bump(|c| &mut c.no_account);
    } else if invite.credentialed == 0 {
        bump(|c| &mut c.from_accounts);
    }
}

/// Whether the INVITE is a new call, or one of a call counted lately from its source
/// ([`SeenCall`]); and whether its account is charged.
#[inline(never)]
fn recall_call(invite: &mut Invite, scratch: &Scratch, source: &[u8; 16], seed: u64, now: u64) {
    let buf = &scratch.buf;
    invite.new_call = 1;
    invite.charge_account = u32::from(invite.account.key != 0);
    invite.call = CallKey {
        source: *source,
        call: call_identity(
            buf,
            value_of(buf, scratch.header(Header::CallId)),
            from_tag(buf, invite.from),
            seed,
        ),
    };
    match decimal(buf, value_of(buf, scratch.header(Header::CSeq))) {
        Some(cseq) => invite.cseq = cseq,
        // Without a CSeq number, not one to remember: every such INVITE is a new call.
        None => invite.call.call = 0,
    }
    if invite.call.call == 0 {
        return;
    }
    let Some(seen) = SEEN_CALLS.get_ptr(&invite.call) else {
        return;
    };
    // SAFETY: a map value, copied; races between CPUs cost accuracy only.
    let seen = unsafe { *seen };
    let retransmitted = invite.cseq == seen.cseq;
    let challenged = seen.credentialed == 0 && invite.credentialed != 0 && invite.cseq > seen.cseq;
    if now.wrapping_sub(seen.first_ns) < SEEN_CALL_NS
        && u32::from(seen.repeats) < MAX_CALL_REPEATS
        && (retransmitted || challenged)
    {
        invite.new_call = 0;
        invite.charge_account =
            u32::from(invite.account.key != 0 && invite.account.key != seen.account);
    }
}

/// Remembers an INVITE that passed: a new call afresh, one counted already with its
/// latest CSeq and account.
#[inline(never)]
fn remember_call(invite: &Invite, now: u64) {
    if invite.call.call == 0 {
        return;
    }
    if invite.new_call != 0 {
        let seen = SeenCall {
            first_ns: now,
            account: invite.account.key,
            cseq: invite.cseq,
            credentialed: invite.credentialed as u16,
            repeats: 0,
        };
        let _ = SEEN_CALLS.insert(&invite.call, &seen, 0);
        return;
    }
    let Some(seen) = SEEN_CALLS.get_ptr_mut(&invite.call) else {
        return;
    };
    // SAFETY: a map value; races between CPUs cost accuracy only.
    let seen = unsafe { &mut *seen };
    seen.cseq = invite.cseq;
    seen.credentialed |= invite.credentialed as u16;
    seen.repeats = seen.repeats.saturating_add(1);
    if invite.charge_account != 0 {
        seen.account = invite.account.key;
    }
}

/// The number the INVITE dials, normalised.
#[inline(never)]
fn find_number(invite: &mut Invite, scratch: &Scratch, config: &DestinationConfig) {
    invite.number = dialled(
        &scratch.buf,
        scratch.user(),
        &config.international,
        &mut invite.dialling,
    );
}

/// Whether the account is blocked after a breach (the INVITE is counted against it).
#[inline(always)]
fn is_blocked(account: u64, now: u64) -> bool {
    let Some(budget) = BUDGETS.get_ptr_mut(&account) else {
        return false;
    };
    // SAFETY: a map value; races between CPUs cost accuracy only.
    let budget = unsafe { &mut *budget };
    if now < budget.blocked_until_ns {
        budget.drops = budget.drops.wrapping_add(1);
        return true;
    }
    false
}

/// Counts a new call against the account's budget; true if it breaches it (the account
/// is then blocked for `block_ns`). `limited`: to an international number or a `limit`
/// rule's prefix, which count against the lower budget too.
#[inline(never)]
fn breaches_budget(config: &DestinationConfig, account: &Account, limited: bool, now: u64) -> bool {
    let Some(budget) = budget_of(account) else {
        return false;
    };
    if now.wrapping_sub(budget.minute_start_ns) >= MINUTE_NS {
        budget.minute_start_ns = now;
        budget.minute_calls = 0;
        budget.limited_minute_calls = 0;
    }
    if now.wrapping_sub(budget.hour_start_ns) >= HOUR_NS {
        budget.hour_start_ns = now;
        budget.hour_calls = 0;
        budget.limited_hour_calls = 0;
    }
    budget.minute_calls = budget.minute_calls.saturating_add(1);
    budget.hour_calls = budget.hour_calls.saturating_add(1);
    let over = |calls: u32, budget: u32| budget != 0 && calls > budget;
    let mut breach =
        over(budget.minute_calls, config.per_minute) || over(budget.hour_calls, config.per_hour);
    if limited {
        budget.limited_minute_calls = budget.limited_minute_calls.saturating_add(1);
        budget.limited_hour_calls = budget.limited_hour_calls.saturating_add(1);
        breach = breach
            || over(budget.limited_minute_calls, config.limited_per_minute)
            || over(budget.limited_hour_calls, config.limited_per_hour);
    }
    if breach {
        budget.blocked_until_ns = now.saturating_add(config.block_ns);
        budget.breaches = budget.breaches.wrapping_add(1);
        budget.drops = budget.drops.wrapping_add(1);
        // The next breach is measured afresh after the block.
        budget.minute_calls = 0;
        budget.hour_calls = 0;
        budget.limited_minute_calls = 0;
        budget.limited_hour_calls = 0;
    }
    breach
}

/// The account's budget, made if new.
#[inline(always)]
fn budget_of(account: &Account) -> Option<&'static mut CallBudget> {
    if BUDGETS.get_ptr_mut(&account.key).is_none() {
        let fresh = CallBudget {
            name: account.name,
            ..CallBudget::default()
        };
        // BPF_NOEXIST: another CPU may have made it meanwhile; then theirs is used.
        let _ = BUDGETS.insert(&account.key, &fresh, 1);
    }
    // SAFETY: a map value; races between CPUs cost accuracy only.
    BUDGETS
        .get_ptr_mut(&account.key)
        .map(|budget| unsafe { &mut *budget })
}

/// Notes a new call to `rule`'s prefix from a source; true if over a `limit` rule's
/// calls per minute.
#[inline(never)]
fn note_source(
    rule: &DestinationRule,
    key: &[u8; 16],
    address: &[u8; 16],
    denied: bool,
    now: u64,
) -> bool {
    let mut name = [0u64; ACCOUNT_WORDS];
    for (word, bytes) in name.iter_mut().zip(address.chunks_exact(8)) {
        let mut eight = [0u8; 8];
        eight.copy_from_slice(bytes);
        *word = u64::from_le_bytes(eight);
    }
    meter(rule, CALLER_SOURCE, key, &name, denied, now)
}

/// [`note_source`] for the account.
#[inline(never)]
fn note_account(rule: &DestinationRule, account: &Account, denied: bool, now: u64) -> bool {
    let mut caller = [0u8; 16];
    caller[..8].copy_from_slice(&account.key.to_le_bytes());
    meter(rule, CALLER_ACCOUNT, &caller, &account.name, denied, now)
}

#[inline(always)]
fn meter(
    rule: &DestinationRule,
    kind: u32,
    caller: &[u8; 16],
    name: &[u64; ACCOUNT_WORDS],
    denied: bool,
    now: u64,
) -> bool {
    let key = CallerKey {
        rule: rule.id,
        kind,
        caller: *caller,
    };
    if CALLERS.get_ptr_mut(&key).is_none() {
        let fresh = Calls {
            minute_start_ns: now,
            name: *name,
            ..Calls::default()
        };
        // BPF_NOEXIST: another CPU may have made it meanwhile; then theirs is used.
        let _ = CALLERS.insert(&key, &fresh, 1);
    }
    let Some(calls) = CALLERS.get_ptr_mut(&key) else {
        return false;
    };
    // SAFETY: a map value; races between CPUs cost accuracy only.
    let calls = unsafe { &mut *calls };
    calls.calls = calls.calls.wrapping_add(1);
    if denied {
        calls.dropped = calls.dropped.wrapping_add(1);
        return false;
    }
    if rule.action != DESTINATION_LIMIT {
        return false;
    }
    if now.wrapping_sub(calls.minute_start_ns) >= MINUTE_NS {
        calls.minute_start_ns = now;
        calls.minute_calls = 0;
    }
    if calls.minute_calls >= rule.per_minute {
        calls.dropped = calls.dropped.wrapping_add(1);
        return true;
    }
    calls.minute_calls += 1;
    false
}

#[inline(always)]
fn bump(field: fn(&mut DestinationCounters) -> &mut u64) {
    if let Some(counters) = COUNTERS.get_ptr_mut(0) {
        // SAFETY: per-CPU, used by this CPU during this run only.
        let counter = field(unsafe { &mut *counters });
        *counter = counter.wrapping_add(1);
    }
}

#[inline(always)]
fn bump_dialled(kind: usize) {
    if let Some(counters) = COUNTERS.get_ptr_mut(0) {
        // SAFETY: as above.
        let slot = unsafe { &mut (*counters).dialled[kind & 3] };
        *slot = slot.wrapping_add(1);
    }
}

#[inline(always)]
fn note_rule(id: u32, dropped: bool) {
    if let Some(counters) = RULE_COUNTERS.get_ptr_mut(id) {
        // SAFETY: as above.
        let counters = unsafe { &mut *counters };
        counters.calls = counters.calls.wrapping_add(1);
        if dropped {
            counters.dropped = counters.dropped.wrapping_add(1);
        }
    }
}
