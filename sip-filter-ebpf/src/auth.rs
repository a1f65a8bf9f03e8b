//! What the server's answers teach (issue 13), shared by both programs: the ingress
//! program notes each request an untrusted source sends (its transaction, whether it
//! carried credentials, the account it named) and drops credentialed requests for
//! locked accounts; the egress program pairs each final answer with its note and learns:
//! failed passwords lock the account for that source, and across sources; a source's
//! failures, or the distinct accounts it failed or was refused, ban it unless it is
//! registered; a 2xx to a credentialed REGISTER makes its source registered.
//!
//! Everything is keyed by the source key (an IPv4 address, an IPv6 prefix), and by
//! account where it can be: an office behind one NAT address loses only the account
//! that fails, never the address, while it holds a registration.

use aya_ebpf::{
    macros::map,
    maps::{Array, LruHashMap},
};
use sip_filter_common::{
    maps::{
        registered_hint, AccountKey, AnswerCounters, BanReason, EventKind, FilterConfig, Lockout,
        Registration, SourceKey, Transaction, TransactionKey, TransactionSlot, FLAG_DRY_RUN,
        MAX_ACCOUNTS, MAX_REGISTERED, MAX_TRANSACTIONS, REGISTERED_HINT_WORDS,
    },
    sip::pairing::Account,
};

use crate::sources::{ban, emit, hit, state_of};

/// Requests awaiting their final answer, direct-mapped (see [`TransactionSlot`]).
#[map(name = "SF_TRANSACTIONS")]
pub static TRANSACTIONS: Array<TransactionSlot> = Array::with_max_entries(MAX_TRANSACTIONS, 0);

/// Failed passwords per source and account, and lockouts.
#[map(name = "SF_LOCKOUTS")]
static LOCKOUTS: LruHashMap<AccountKey, Lockout> = LruHashMap::with_max_entries(MAX_ACCOUNTS, 0);

/// Failed passwords per account across sources, and lockouts.
#[map(name = "SF_ACCOUNTS")]
static ACCOUNTS: LruHashMap<u64, Lockout> = LruHashMap::with_max_entries(MAX_ACCOUNTS, 0);

/// When the last lockout made so far ends. Until then, credentialed requests are looked up
/// in the lockout tables; after it, nothing can be locked and the lookups are skipped:
/// a request then pays one array read for them, not two hash lookups (see the bench).
#[map(name = "SF_LOCKS_UNTIL")]
static LOCKS_UNTIL: Array<u64> = Array::with_max_entries(1, 0);

/// Whether some lockout may still hold (else [`is_locked_out`] need not be asked).
#[inline(always)]
pub fn locks_live(now: u64) -> bool {
    LOCKS_UNTIL.get(0).is_some_and(|until| now < *until)
}

/// Keeps [`LOCKS_UNTIL`] at the latest lockout's end.
#[inline(always)]
fn note_lock_until(until: u64) {
    if let Some(latest) = LOCKS_UNTIL.get_ptr_mut(0) {
        // SAFETY: a map value. Two CPUs locking at once may keep the earlier of their two
        // ends: the later lockout is then enforced only until the earlier one ends.
        unsafe {
            if *latest < until {
                *latest = until;
            }
        }
    }
}

/// Sources holding a registration.
#[map(name = "SF_REGISTERED")]
static REGISTERED: LruHashMap<SourceKey, Registration> =
    LruHashMap::with_max_entries(MAX_REGISTERED, 0);

/// A byte per hint that a source may hold a registration (see [`registered_hint`]).
#[map(name = "SF_REGISTERED_HINTS")]
static REGISTERED_HINTS: Array<u64> = Array::with_max_entries(REGISTERED_HINT_WORDS, 0);

/// Whether `key` holds a registration that has not expired. Most sources never
/// register: their hint answers with one array read.
#[inline(always)]
pub fn is_registered(key: &SourceKey, now: u64) -> bool {
    let (word, byte) = registered_hint(key);
    if REGISTERED_HINTS
        .get(word)
        .is_some_and(|hints| (hints >> ((byte & 7) * 8)) & 0xff == 0)
    {
        return false;
    }
    match REGISTERED.get_ptr(key) {
        // SAFETY: a map value; a concurrent update at worst gives a stale answer.
        Some(registration) => now < unsafe { (*registration).expires_ns },
        None => false,
    }
}

/// Whether credentialed requests for `account` from `key` are dropped now: the account
/// is locked for this source, or across sources for a source that is not registered.
#[inline(always)]
pub fn is_locked_out(key: &SourceKey, account: u64, registered: bool, now: u64) -> bool {
    let per_source = AccountKey {
        source: *key,
        account,
    };
    if let Some(lockout) = LOCKOUTS.get_ptr_mut(&per_source) {
        // SAFETY: a map value; races cost a count at worst.
        let lockout = unsafe { &mut *lockout };
        if now < lockout.locked_until_ns {
            lockout.drops = lockout.drops.wrapping_add(1);
            return true;
        }
    }
    if registered {
        return false;
    }
    match ACCOUNTS.get_ptr_mut(&account) {
        Some(lockout) => {
            // SAFETY: as above.
            let lockout = unsafe { &mut *lockout };
            if now < lockout.locked_until_ns {
                lockout.drops = lockout.drops.wrapping_add(1);
                return true;
            }
            false
        }
        None => false,
    }
}

/// Notes a request for its answer, in its slot. Returns false if there is no slot, and
/// whether it displaced another transaction awaiting its answer.
#[inline(always)]
pub fn note(key: &SourceKey, id: u64, transaction: &Transaction) -> Option<bool> {
    let key = TransactionKey { source: *key, id };
    let slot = TRANSACTIONS.get_ptr_mut(key.slot())?;
    // SAFETY: a map value. Two CPUs noting into one slot at once may mix their writes;
    // `take` then finds no match, or (as rarely as two equal slots at the same instant)
    // pairs an answer with the other request's account.
    let slot = unsafe { &mut *slot };
    let displaced = slot.live != 0 && slot.key != key;
    *slot = TransactionSlot {
        key,
        transaction: *transaction,
        live: 1,
    };
    Some(displaced)
}

/// The answer's transaction, copied out; a final answer frees its slot (a
/// retransmission of the answer then finds nothing, and counts once).
#[inline(always)]
pub fn take(key: &SourceKey, id: u64, provisional: bool, out: &mut Transaction) -> bool {
    let key = TransactionKey { source: *key, id };
    let Some(slot) = TRANSACTIONS.get_ptr_mut(key.slot()) else {
        return false;
    };
    // SAFETY: a map value; see `note`.
    let slot = unsafe { &mut *slot };
    if slot.live == 0 || slot.key != key {
        return false;
    }
    *out = slot.transaction;
    if !provisional {
        slot.live = 0;
    }
    true
}

/// The lockout entry under `key` in `table`, made from `fresh` if there is none; and
/// whether it was made now.
#[inline(always)]
fn lockout_entry<K>(
    table: &LruHashMap<K, Lockout>,
    key: &K,
    fresh: &Lockout,
) -> Option<(&'static mut Lockout, bool)> {
    let made = table.get_ptr(key).is_none() && table.insert(key, fresh, 1).is_ok();
    // SAFETY: a map value; races cost a count at worst.
    table
        .get_ptr_mut(key)
        .map(|lockout| (unsafe { &mut *lockout }, made))
}

/// One more failure in `lockout`: at `threshold` within `window_ns`, the account is locked
/// for `lock_ns`, reported (an event naming `address`, zeros for every source, and the
/// answer's `transport`) and counted in `locks`.
#[inline(always)]
fn strike(
    lockout: &mut Lockout,
    (window_ns, threshold, lock_ns): (u64, u32, u64),
    locks: &mut u64,
    address: &[u8; 16],
    account: &Account,
    (dry_run, transport): (bool, u32),
    now: u64,
) {
    if !hit(
        &mut lockout.window_ns,
        &mut lockout.failures,
        now,
        window_ns,
        threshold,
    ) {
        return;
    }
    lockout.locked_until_ns = now.saturating_add(lock_ns);
    note_lock_until(lockout.locked_until_ns);
    *locks += 1;
    emit(
        address,
        EventKind::Lockout,
        0,
        0,
        dry_run,
        transport,
        lockout.locked_until_ns,
        &account.name,
    );
}

/// One more failure for `source`'s `account`, where `source` is a peer whose address is
/// `address`, answered over `transport` (a [`Transport`] number). `counts_for_source`: a
/// failed password (not a refused user) counts toward the source's `auth` ban.
///
/// [`Transport`]: sip_filter_common::maps::Transport
#[inline(always)]
pub fn learn_failure(
    config: &FilterConfig,
    counters: &mut AnswerCounters,
    key: &SourceKey,
    (address, transport): (&[u8; 16], u32),
    account: &Account,
    counts_for_source: bool,
    now: u64,
) {
    let rules = &config.auth;
    let dry_run = config.has(FLAG_DRY_RUN);
    let registered = is_registered(key, now);
    let mut new_user = false;
    if account.key != 0 {
        let per_source = AccountKey {
            source: *key,
            account: account.key,
        };
        let fresh = Lockout {
            name: account.name,
            source: *address,
            ..Lockout::default()
        };
        if let Some((lockout, made)) = lockout_entry(&LOCKOUTS, &per_source, &fresh) {
            new_user = made;
            if counts_for_source {
                let rule = (
                    rules.lockout_window_ns,
                    rules.lockout_failures,
                    rules.lockout_ns,
                );
                strike(
                    lockout,
                    rule,
                    &mut counters.lockouts,
                    address,
                    account,
                    (dry_run, transport),
                    now,
                );
            }
        }
        if counts_for_source && rules.account_failures != 0 {
            // Distributed guessing: failures of the account from every source.
            let fresh = Lockout {
                name: account.name,
                ..Lockout::default()
            };
            if let Some((lockout, _)) = lockout_entry(&ACCOUNTS, &account.key, &fresh) {
                let rule = (
                    rules.account_window_ns,
                    rules.account_failures,
                    rules.account_lockout_ns,
                );
                let every_source = [0; 16];
                let locks = &mut counters.account_lockouts;
                let event = (dry_run, transport);
                strike(lockout, rule, locks, &every_source, account, event, now);
            }
        }
    }
    // A registered source is never banned for what one of its accounts did.
    if registered {
        return;
    }
    let Some(state) = state_of(key) else {
        return;
    };
    if counts_for_source
        && hit(
            &mut state.auth_window_ns,
            &mut state.auth_failures,
            now,
            rules.ban_window_ns,
            rules.ban_failures,
        )
    {
        ban(key, address, BanReason::Auth, transport, rules.ban_ns);
        return;
    }
    if new_user
        && hit(
            &mut state.users_window_ns,
            &mut state.distinct_users,
            now,
            rules.enumeration_window_ns,
            rules.enumeration_users,
        )
    {
        ban(
            key,
            address,
            BanReason::Enumeration,
            transport,
            rules.enumeration_ns,
        );
    }
}

/// A success for `source`'s `account`: its failures start again from 0; a REGISTER's
/// success (`registered_for_s` > 0) makes the source registered for that long, capped.
/// `address` and `transport` as for [`learn_failure`].
#[inline(always)]
pub fn learn_success(
    config: &FilterConfig,
    counters: &mut AnswerCounters,
    key: &SourceKey,
    (address, transport): (&[u8; 16], u32),
    account: &Account,
    registered_for_s: u32,
    now: u64,
) {
    if account.key != 0 {
        let per_source = AccountKey {
            source: *key,
            account: account.key,
        };
        if let Some(lockout) = LOCKOUTS.get_ptr_mut(&per_source) {
            // SAFETY: a map value; races cost a count at worst.
            unsafe { (*lockout).failures = 0 };
        }
    }
    if registered_for_s == 0 {
        return;
    }
    let granted_ns = u64::from(registered_for_s).saturating_mul(1_000_000_000);
    let registration = Registration {
        expires_ns: now.saturating_add(granted_ns.min(config.auth.registration_cap_ns)),
        account: account.name,
        source: *address,
    };
    let fresh = !is_registered(key, now);
    // The hint first: a CPU that finds the registration finds its hint set too.
    let (word, byte) = registered_hint(key);
    if let Some(hints) = REGISTERED_HINTS.get_ptr_mut(word) {
        // SAFETY: a map value; one byte of it, which only ever goes from 0 to 1.
        unsafe { *hints.cast::<u8>().add((byte & 7) as usize) = 1 };
    }
    if REGISTERED.insert(key, &registration, 0).is_ok() {
        counters.registrations += 1;
        if fresh {
            emit(
                address,
                EventKind::Registered,
                0,
                0,
                config.has(FLAG_DRY_RUN),
                transport,
                registration.expires_ns,
                &account.name,
            );
        }
    }
}
