//! Per-source state: token buckets (in GCRA form), auto-ban counters, bans, events.

use aya_ebpf::{
    helpers::generated::bpf_ktime_get_coarse_ns,
    macros::map,
    maps::{Array, HashMap, LruHashMap, RingBuf},
};
use sip_filter_common::maps::{
    Ban, BanReason, Event, EventKind, Limit, Reason, SourceKey, SourceState,
    DROP_EVENT_INTERVAL_NS, EVENTS_BYTES, FLAG_DRY_RUN, MAX_SCANNER_AGENTS, MAX_SOURCES,
};
use sip_filter_common::sip::pairing::ACCOUNT_WORDS;

use crate::{bump_indexed, BANS, CONFIG};

/// Sources seen recently (LRU: a flood of addresses evicts the oldest, it cannot fill
/// memory).
#[map(name = "SF_SOURCES")]
static SOURCES: LruHashMap<SourceKey, SourceState> = LruHashMap::with_max_entries(MAX_SOURCES, 0);

/// The arrival time of the untrusted sources' common budget (see [`Limit`]).
#[map(name = "SF_GLOBAL")]
pub static GLOBAL_BUDGET: Array<u64> = Array::with_max_entries(1, 0);

/// The arrival time of the untrusted sources' common connection (SYN) budget: its own,
/// so a SYN flood does not spend the requests' budget, nor requests the SYNs'.
#[map(name = "SF_GLOBAL_SYN")]
pub static GLOBAL_CONNECTIONS: Array<u64> = Array::with_max_entries(1, 0);

/// Scanner User-Agent prefixes: seeded hash -> 1.
#[map(name = "SF_SCANNER_UA")]
pub static SCANNER_AGENTS: HashMap<u64, u8> = HashMap::with_max_entries(MAX_SCANNER_AGENTS, 0);

/// Bans and sampled drops, for the daemon to log.
#[map(name = "SF_EVENTS")]
static EVENTS: RingBuf = RingBuf::with_byte_size(EVENTS_BYTES, 0);

/// What a new source starts from: one zeroed [`SourceState`], never written. A new
/// source is inserted from here, not from a value on the stack: 128 bytes there are in
/// the frame of every function that calls [`state_of`], and took the chain entry point
/// -> request policy -> `ban` to 6.1's 512-byte limit (README). From here, the request
/// policy's frame is 192 bytes and `ban`'s 40.
#[map(name = "SF_FRESH_SOURCE")]
static FRESH_SOURCE: Array<SourceState> = Array::with_max_entries(1, 0);

/// The state of `key`, created on first sight.
#[inline(always)]
pub fn state_of(key: &SourceKey) -> Option<&'static mut SourceState> {
    if let Some(state) = SOURCES.get_ptr_mut(key) {
        // SAFETY: a map value; fields are only counters and times, races cost accuracy.
        return Some(unsafe { &mut *state });
    }
    let fresh = FRESH_SOURCE.get(0)?;
    // BPF_NOEXIST: another CPU may have created it meanwhile; then use theirs.
    let _ = SOURCES.insert(key, fresh, 1);
    // SAFETY: as above.
    SOURCES.get_ptr_mut(key).map(|state| unsafe { &mut *state })
}

/// Admits one request against `limit`, whose arrival time is `arrival`. Exact on
/// average also when both CPUs race: the check reads, the charge is an atomic add, so
/// every admitted request moves the arrival time on by exactly one interval.
#[inline(always)]
pub fn admit(arrival: *mut u64, limit: &Limit, now: u64) -> bool {
    // Plain (volatile) load and store: BPF before v3 has no atomic load instruction.
    // SAFETY: `arrival` points into a map value, 8-byte aligned.
    let mut ahead = unsafe { core::ptr::read_volatile(arrival) };
    if ahead < now {
        // Idle long enough for a full bucket.
        // SAFETY: as above.
        unsafe { core::ptr::write_volatile(arrival, now) };
        ahead = now;
    }
    if ahead - now > limit.tolerance_ns {
        return false;
    }
    // BPF's atomic add (XADD, any kernel); the target offers no AtomicU64::fetch_add.
    // SAFETY: as above.
    unsafe {
        core::intrinsics::atomic_xadd::<u64, u64, { core::intrinsics::AtomicOrdering::Relaxed }>(
            arrival,
            limit.interval_ns,
        );
    }
    true
}

/// Adds one to `counter` (in a hash map value, 8-byte aligned) with BPF's atomic add:
/// one source's packets may be judged on two CPUs at once.
#[inline(always)]
pub fn count_atomically(counter: *mut u64) {
    // SAFETY: `counter` points into a map value, 8-byte aligned.
    unsafe {
        core::intrinsics::atomic_xadd::<u64, u64, { core::intrinsics::AtomicOrdering::Relaxed }>(
            counter, 1,
        );
    }
}

/// Counts a drop against the source, in its `SOURCE_DROP_*` slot (for `sip-filter top`).
#[inline(always)]
pub fn count_source_drop(state: &mut SourceState, slot: usize) {
    if let Some(cell) = state.drops.get_mut(slot) {
        count_atomically(cell as *mut u64);
    }
}

/// Counts one hit in a window; true when the hits reach `threshold` (then restarts).
#[inline(always)]
pub fn hit(
    window_start: &mut u64,
    hits: &mut u32,
    now: u64,
    window_ns: u64,
    threshold: u32,
) -> bool {
    if threshold == 0 {
        return false;
    }
    if now.wrapping_sub(*window_start) > window_ns {
        *window_start = now;
        *hits = 0;
    }
    *hits += 1;
    if *hits >= threshold {
        *hits = 0;
        return true;
    }
    false
}

/// Bans `key` from now for `length_ns`, longer if it is a repeat offender (in dry-run:
/// counts and reports it only); `transport` (a [`Transport`] number) is the offending
/// packet's. Not inlined, and its event written in place: the 512-byte stack is shared
/// along the call chain.
///
/// [`Transport`]: sip_filter_common::maps::Transport
#[inline(never)]
pub fn ban(key: &SourceKey, source: &[u8; 16], reason: BanReason, transport: u32, length_ns: u64) {
    let (Some(state), Some(config)) = (state_of(key), CONFIG.get(0)) else {
        return;
    };
    let dry_run = config.has(FLAG_DRY_RUN);
    // SAFETY: a helper without arguments.
    let now = unsafe { bpf_ktime_get_coarse_ns() };
    let length_ns =
        config
            .bans
            .repeat_length(length_ns, state.last_ban_ns, state.last_ban_expires_ns, now);
    let expires_ns = now.saturating_add(length_ns);
    if !dry_run {
        if BANS.insert(key, &Ban::new(expires_ns, reason), 0).is_err() {
            return; // full: nothing was banned, nothing to count
        }
        state.bans = state.bans.wrapping_add(1);
        state.last_ban_ns = length_ns;
        state.last_ban_expires_ns = expires_ns;
    }
    bump_indexed(|c| &mut c.bans_added, reason as usize);
    // In dry-run nothing was banned, so the source's next packet would-ban again: report
    // it at most once per interval, like drops, or a scanner flood floods the log. Nor
    // is the would-be ban remembered: it would grow at every report.
    if dry_run && !event_due(state, now) {
        return;
    }
    emit(
        source,
        EventKind::Ban,
        reason as u32,
        0,
        dry_run,
        transport,
        expires_ns,
        &NO_ACCOUNT,
    );
}

/// Whether the source may report an event now: at most one per
/// [`DROP_EVENT_INTERVAL_NS`] (then the interval restarts).
#[inline(always)]
fn event_due(state: &mut SourceState, now: u64) -> bool {
    if now.wrapping_sub(state.last_event_ns) < DROP_EVENT_INTERVAL_NS {
        return false;
    }
    state.last_event_ns = now;
    true
}

/// Reports a drop, at most once per source per [`DROP_EVENT_INTERVAL_NS`].
#[inline(always)]
pub fn drop_event(
    state: &mut SourceState,
    source: &[u8; 16],
    reason: Reason,
    method: usize,
    now: u64,
    dry_run: bool,
    transport: u32,
) {
    if !event_due(state, now) {
        return;
    }
    emit(
        source,
        EventKind::Drop,
        reason as u32,
        method as u32,
        dry_run,
        transport,
        0,
        &NO_ACCOUNT,
    );
}

/// An event's account when it names none.
pub const NO_ACCOUNT: [u64; ACCOUNT_WORDS] = [0; ACCOUNT_WORDS];

/// Writes the event straight into the ring buffer (no copy on the small BPF stack).
/// `transport` is the [`Transport`] number of the packet that made it.
///
/// [`Transport`]: sip_filter_common::maps::Transport
#[inline(always)]
pub fn emit(
    source: &[u8; 16],
    kind: EventKind,
    reason: u32,
    method: u32,
    dry_run: bool,
    transport: u32,
    expires_ns: u64,
    account: &[u64; ACCOUNT_WORDS],
) {
    let Some(mut entry) = EVENTS.reserve::<Event>(0) else {
        crate::bump(|c| &mut c.events_lost);
        return;
    };
    entry.write(Event {
        source: *source,
        kind: kind as u32,
        reason,
        method,
        dry_run: u16::from(dry_run),
        transport: transport as u16,
        expires_ns,
        account: *account,
    });
    entry.submit(0);
}
