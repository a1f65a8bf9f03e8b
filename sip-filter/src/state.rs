//! The state file: what a restart must not lose. The dynamic bans (the filter's own and
//! the operator's), the allow/deny entries an operator added at run time, and what the
//! server's answers taught (registered sources, locked accounts) and the accounts' call
//! budgets (blocks after a breach, meters) live only in the kernel's maps; the daemon saves them to `STATE_DIR/state.bin` periodically
//! and when it stops, and loads them back into the fresh maps when it starts.
//!
//! Kernel expiries are `CLOCK_MONOTONIC_COARSE` nanoseconds, which restart from zero at
//! boot: the file holds wall-clock expiries (Unix milliseconds) instead, converted with
//! one reading of both clocks. The file is written to a temporary name and renamed, so
//! a crash leaves the old file or the new one, never half of one.
//!
//! The format (version 4) is binary, 28 bytes a ban or list entry: a stop with a
//! million bans and a million deny entries writes 56 MB, read out of the maps in
//! batches. Version 3 was the same without the call budgets (its header is 8 bytes
//! shorter), version 2 without the registrations and lockouts either (24 bytes
//! shorter again); both still load. Version 1 was pretty JSON (`state.json`,
//! about 100 bytes an entry, built one string at a time), which took seconds to write
//! at that size; it still loads, and is removed once a `state.bin` holds what it held.
//!
//! ```text
//! header  "SIPFSTAT", version u32, record size u32, saved_at_unix_ms u64,
//!         bans u64, allow u64, deny u64,                     (48 bytes, little-endian)
//!         registered u64, source lockouts u64, account lockouts u64  (+24: version 3)
//!         call budgets u64                                           (+8: version 4)
//! record  address [u8; 16] (IPv4 as ::ffff:a.b.c.d), prefix length u8, family u8 (4|6),
//!         reason u8, 0 u8, expires_unix_ms u64 (u64::MAX: never)       (28 bytes)
//! registration  source address [u8; 16] (IPv4 mapped), account [u8; 32] (zero
//!         padded), expires_unix_ms u64                                   (56 bytes)
//! lockout source address [u8; 16] (zeros across sources), account [u8; 32],
//!         locked_until_unix_ms u64, failures u32, drops u32              (64 bytes)
//! budget  account [u8; 32], blocked_until_unix_ms u64, minute_ends_unix_ms u64,
//!         hour_ends_unix_ms u64 (0: not blocked, no current window), minute calls,
//!         hour calls, limited minute calls, limited hour calls, breaches, drops u32
//!                                                                        (80 bytes)
//! ```
//! Records follow in that order: bans, allow entries, deny entries, registrations,
//! per-source lockouts, lockouts across sources, call budgets. Only what still applies
//! is saved: live registrations, locked accounts (failures that locked nothing yet start
//! over), and call budgets blocked or metering the current hour.
//! Accounts are keyed in the kernel by a hash seeded anew at each start: a lockout or a
//! budget is keyed again from its name, and one whose name filled the 32 bytes the
//! kernel keeps (it may have been cut) cannot be, and is skipped.

use std::{
    net::{IpAddr, Ipv6Addr},
    path::{Path, PathBuf},
    time::{SystemTime, UNIX_EPOCH},
};

use aya::maps::{lpm_trie::Key, Map};
use ipnet::IpNet;
use serde::Deserialize;
use sip_filter_common::{
    maps::{
        destination_names, names, AccountKey, Ban, BanReason, CallBudget, ListEntry, Lockout,
        Registration, SourceKey, HOUR_NS, LIST_ORIGIN_CONFIG, LIST_ORIGIN_OPERATOR, MINUTE_NS,
    },
    sip::pairing::{Account, ACCOUNT_WORDS},
};

use crate::{
    bpf_sys,
    destinations::all_call_budgets,
    filter::{monotonic_now_ns, open_pinned, Filter, FilterError},
    learnt::LearntMaps,
    lists::{v4_key, v6_key},
};

/// The file's name inside the state directory.
pub const FILE_NAME: &str = "state.bin";
/// Version 1's file (JSON), loaded if present and removed once `FILE_NAME` replaces it.
pub const LEGACY_FILE_NAME: &str = "state.json";
/// The layout version written; a file of another version is set aside, not misread.
const VERSION: u32 = 4;
const MAGIC: &[u8; 8] = b"SIPFSTAT";
/// Version 2's header; version 3 adds three counts, version 4 one more.
const HEADER_SIZE_2: usize = 48;
const HEADER_SIZE_3: usize = HEADER_SIZE_2 + 24;
const HEADER_SIZE: usize = HEADER_SIZE_3 + 8;
const RECORD_SIZE: usize = 28;
const REGISTRATION_SIZE: usize = 56;
const LOCKOUT_SIZE: usize = 64;
const CALL_BUDGET_SIZE: usize = 80;
/// A saved expiry of "never".
const NEVER: u64 = u64::MAX;

/// What survives a restart.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct State {
    /// When it was taken (Unix ms): of two files, the later one wins.
    pub saved_at_unix_ms: u64,
    /// Every unexpired dynamic ban, whoever made it.
    pub bans: Vec<SavedBan>,
    /// Allow and deny entries an operator added at run time (the configuration's own
    /// come from the configuration file).
    pub allow: Vec<SavedEntry>,
    pub deny: Vec<SavedEntry>,
    /// Sources holding a registration.
    pub registered: Vec<SavedRegistration>,
    /// Accounts locked for one source, or (no source) for every unregistered one.
    pub lockouts: Vec<SavedLockout>,
    /// Accounts blocked after breaching their call budget, or metering the current hour.
    pub call_budgets: Vec<SavedCallBudget>,
    /// Entries of a version 1 file that did not parse: left out, counted as skipped.
    pub unreadable: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SavedRegistration {
    /// The registered address (its IPv6 prefix is what the kernel keys it by).
    pub source: IpAddr,
    /// The last account registered from it (zero padded).
    pub account: [u64; ACCOUNT_WORDS],
    /// Unix ms; None: never (the kernel always sets one).
    pub expires_unix_ms: Option<u64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SavedLockout {
    /// The source it is locked for; None: every unregistered source.
    pub source: Option<IpAddr>,
    /// The account's name (zero padded).
    pub account: [u64; ACCOUNT_WORDS],
    /// Unix ms; None: never.
    pub locked_until_unix_ms: Option<u64>,
    pub failures: u32,
    pub drops: u32,
}

/// An account's call budget ([`CallBudget`]) with wall-clock times.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SavedCallBudget {
    /// The account's name (zero padded).
    pub account: [u64; ACCOUNT_WORDS],
    /// Unix ms; None: not blocked.
    pub blocked_until_unix_ms: Option<u64>,
    /// When the current minute's and hour's meters end (Unix ms); None: no current
    /// window (its calls are then 0).
    pub minute_ends_unix_ms: Option<u64>,
    pub hour_ends_unix_ms: Option<u64>,
    pub minute_calls: u32,
    pub hour_calls: u32,
    pub limited_minute_calls: u32,
    pub limited_hour_calls: u32,
    pub breaches: u32,
    pub drops: u32,
}

impl SavedCallBudget {
    /// What still applies of a kernel budget: None when it is neither blocked nor
    /// metering the current hour. A meter whose window has ended is left out (the
    /// kernel would start it afresh on the next call anyway).
    fn of(budget: &CallBudget, clocks: Clocks) -> Option<Self> {
        // A block always ends (now + block_ns); one the kernel saturated ends last.
        let wall = |ns: u64| clocks.to_wall(ns).map(|at| at.unwrap_or(NEVER - 1));
        let blocked_until_unix_ms = wall(budget.blocked_until_ns);
        let minute_ends_unix_ms = wall(budget.minute_start_ns.saturating_add(MINUTE_NS));
        let hour_ends_unix_ms = wall(budget.hour_start_ns.saturating_add(HOUR_NS));
        if blocked_until_unix_ms.is_none() && hour_ends_unix_ms.is_none() {
            return None;
        }
        let (minute, hour) = (minute_ends_unix_ms.is_some(), hour_ends_unix_ms.is_some());
        let kept = |current: bool, calls: u32| if current { calls } else { 0 };
        Some(Self {
            account: budget.name,
            blocked_until_unix_ms,
            minute_ends_unix_ms,
            hour_ends_unix_ms,
            minute_calls: kept(minute, budget.minute_calls),
            hour_calls: kept(hour, budget.hour_calls),
            limited_minute_calls: kept(minute, budget.limited_minute_calls),
            limited_hour_calls: kept(hour, budget.limited_hour_calls),
            breaches: budget.breaches,
            drops: budget.drops,
        })
    }

    /// The kernel budget again, on the clock of `clocks`: the block with the time it had
    /// left, the meters whose window is still current (one that ended since the save
    /// starts afresh, as the kernel would start it); None when nothing applies any more.
    fn to_kernel(self, clocks: Clocks) -> Option<CallBudget> {
        // `to_kernel` treats None as "never": here it means "not blocked" or "no window".
        let kernel = |unix_ms: Option<u64>| unix_ms.and_then(|at| clocks.to_kernel(Some(at)));
        let blocked_until_ns = kernel(self.blocked_until_unix_ms);
        // A window's start is its end less its length; wrapping as the kernel's
        // `now - start` does, should the clock have restarted less than that ago.
        let minute_start_ns =
            kernel(self.minute_ends_unix_ms).map(|end| end.wrapping_sub(MINUTE_NS));
        let hour_start_ns = kernel(self.hour_ends_unix_ms).map(|end| end.wrapping_sub(HOUR_NS));
        if blocked_until_ns.is_none() && hour_start_ns.is_none() {
            return None;
        }
        let kept = |start: Option<u64>, calls: u32| start.map_or(0, |_| calls);
        Some(CallBudget {
            minute_start_ns: minute_start_ns.unwrap_or(0),
            hour_start_ns: hour_start_ns.unwrap_or(0),
            minute_calls: kept(minute_start_ns, self.minute_calls),
            hour_calls: kept(hour_start_ns, self.hour_calls),
            limited_minute_calls: kept(minute_start_ns, self.limited_minute_calls),
            limited_hour_calls: kept(hour_start_ns, self.limited_hour_calls),
            blocked_until_ns: blocked_until_ns.unwrap_or(0),
            breaches: self.breaches,
            drops: self.drops,
            name: self.account,
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SavedBan {
    /// An IPv4 address, or the IPv6 prefix's first address (banned by its prefix).
    pub source: IpAddr,
    pub reason: BanReason,
    /// Unix ms; None: until removed.
    pub expires_unix_ms: Option<u64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SavedEntry {
    pub net: IpNet,
    /// Manual or feed for deny entries.
    pub reason: BanReason,
    /// Unix ms; None: until removed.
    pub expires_unix_ms: Option<u64>,
}

/// What [`restore`] put back.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Restored {
    pub bans: usize,
    pub allow: usize,
    pub deny: usize,
    pub registered: usize,
    pub lockouts: usize,
    pub call_budgets: usize,
    /// Call budgets left out because the configuration has budgets off: an account
    /// blocked before the restart is not blocked by a rule switched off since.
    pub call_budgets_off: usize,
    /// Expired since the file was written, unreadable, or (lockouts, call budgets) an
    /// account whose name may have been cut: left out.
    pub skipped: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("{path}: cannot be read: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not a state file this version understands ({reason})")]
    Corrupt { path: PathBuf, reason: String },
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Filter(#[from] FilterError),
}

/// One reading of both clocks, to convert kernel expiries to wall-clock ones and back.
#[derive(Clone, Copy, Debug)]
pub struct Clocks {
    pub monotonic_ns: u64,
    pub unix_ms: u64,
}

impl Clocks {
    pub fn now() -> Self {
        Self {
            monotonic_ns: monotonic_now_ns(),
            unix_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        }
    }

    /// A kernel expiry as Unix ms: `Some(None)` for never, None if already expired.
    fn to_wall(self, expires_ns: u64) -> Option<Option<u64>> {
        if expires_ns == u64::MAX {
            return Some(None);
        }
        let left_ns = expires_ns
            .checked_sub(self.monotonic_ns)
            .filter(|&n| n > 0)?;
        // Rounded up: a ban never ends earlier for having been saved. Capped below
        // NEVER, which the file reserves.
        Some(Some(
            self.unix_ms
                .saturating_add(left_ns.div_ceil(1_000_000))
                .min(NEVER - 1),
        ))
    }

    /// A saved expiry as a kernel one: `u64::MAX` for never, None if it has passed.
    fn to_kernel(self, expires_unix_ms: Option<u64>) -> Option<u64> {
        let Some(expires) = expires_unix_ms else {
            return Some(u64::MAX);
        };
        let left_ms = expires.checked_sub(self.unix_ms).filter(|&n| n > 0)?;
        Some(
            self.monotonic_ns
                .saturating_add(left_ms.saturating_mul(1_000_000))
                .min(u64::MAX - 1),
        )
    }
}

impl State {
    /// Reads the bans and the operator's list entries out of a filter's maps (its own,
    /// or pinned ones: see [`pinned_maps`]), in batches.
    pub fn take(maps: &StateMaps<'_>, clocks: Clocks) -> Result<Self, FilterError> {
        let mut state = State {
            saved_at_unix_ms: clocks.unix_ms,
            ..State::default()
        };
        // The lists on a thread of their own: reading a million bans and a million deny
        // entries is the kernel's work on each, which a second CPU halves (a stop with
        // both at a million: 2 s allowed).
        let (bans, lists) = std::thread::scope(|scope| {
            let lists = scope.spawn(|| operator_lists(maps, clocks));
            let bans = saved_bans(maps.bans, clocks);
            let lists = lists
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
            (bans, lists)
        });
        state.bans = bans?;
        (state.allow, state.deny) = lists?;
        if let Some(learnt) = &maps.learnt {
            state.take_learnt(learnt, clocks)?;
        }
        if let Some(call_budgets) = maps.call_budgets {
            state.call_budgets = all_call_budgets(call_budgets)?
                .iter()
                .filter_map(|(_, budget)| SavedCallBudget::of(budget, clocks))
                .collect();
        }
        Ok(state)
    }

    /// The live registrations and locked accounts.
    fn take_learnt(&mut self, maps: &LearntMaps<'_>, clocks: Clocks) -> Result<(), FilterError> {
        self.registered = maps
            .all_registrations()?
            .into_iter()
            .filter_map(|(_, registration)| {
                Some(SavedRegistration {
                    source: key_address(registration.source),
                    account: registration.account,
                    expires_unix_ms: clocks.to_wall(registration.expires_ns)?,
                })
            })
            .collect();
        let saved = |source: Option<IpAddr>, lockout: Lockout| {
            Some(SavedLockout {
                source,
                account: lockout.name,
                // 0 (never locked) reads as expired.
                locked_until_unix_ms: clocks.to_wall(lockout.locked_until_ns)?,
                failures: lockout.failures,
                drops: lockout.drops,
            })
        };
        self.lockouts = maps
            .all_source_lockouts()?
            .into_iter()
            .filter_map(|(_, lockout)| saved(Some(key_address(lockout.source)), lockout))
            .chain(
                maps.all_account_lockouts()?
                    .into_iter()
                    .filter_map(|(_, lockout)| saved(None, lockout)),
            )
            .collect();
        Ok(())
    }

    /// Reads a state file of either version; None when there is none (a first start).
    pub fn load(path: &Path) -> Result<Option<State>, StateError> {
        let bytes = match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(StateError::Read {
                    path: path.to_path_buf(),
                    source,
                })
            }
        };
        let parsed = if bytes.starts_with(MAGIC) {
            decode(&bytes)
        } else {
            from_version_1(&bytes)
        };
        parsed.map(Some).map_err(|reason| StateError::Corrupt {
            path: path.to_path_buf(),
            reason,
        })
    }

    /// Writes the file atomically: a temporary file, flushed, renamed over the old one.
    pub fn save(&self, path: &Path) -> Result<(), StateError> {
        write_atomically(path, &self.encode()).map_err(|source| StateError::Write {
            path: path.to_path_buf(),
            source,
        })
    }

    fn encode(&self) -> Vec<u8> {
        let records = self.bans.len() + self.allow.len() + self.deny.len();
        let (per_source, across): (Vec<&SavedLockout>, Vec<&SavedLockout>) = self
            .lockouts
            .iter()
            .partition(|lockout| lockout.source.is_some());
        let mut out = Vec::with_capacity(
            HEADER_SIZE
                + records * RECORD_SIZE
                + self.registered.len() * REGISTRATION_SIZE
                + self.lockouts.len() * LOCKOUT_SIZE
                + self.call_budgets.len() * CALL_BUDGET_SIZE,
        );
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&VERSION.to_le_bytes());
        out.extend_from_slice(&(RECORD_SIZE as u32).to_le_bytes());
        for n in [
            self.saved_at_unix_ms,
            self.bans.len() as u64,
            self.allow.len() as u64,
            self.deny.len() as u64,
            self.registered.len() as u64,
            per_source.len() as u64,
            across.len() as u64,
            self.call_budgets.len() as u64,
        ] {
            out.extend_from_slice(&n.to_le_bytes());
        }
        for ban in &self.bans {
            let full = if ban.source.is_ipv4() { 32 } else { 128 };
            push_record(&mut out, ban.source, full, ban.reason, ban.expires_unix_ms);
        }
        for entry in self.allow.iter().chain(&self.deny) {
            let net = entry.net;
            push_record(
                &mut out,
                net.addr(),
                net.prefix_len(),
                entry.reason,
                entry.expires_unix_ms,
            );
        }
        for registration in &self.registered {
            out.extend_from_slice(&address_bytes(registration.source));
            push_words(&mut out, &registration.account);
            out.extend_from_slice(&registration.expires_unix_ms.unwrap_or(NEVER).to_le_bytes());
        }
        for lockout in per_source.into_iter().chain(across) {
            out.extend_from_slice(&lockout.source.map_or([0; 16], address_bytes));
            push_words(&mut out, &lockout.account);
            out.extend_from_slice(&lockout.locked_until_unix_ms.unwrap_or(NEVER).to_le_bytes());
            out.extend_from_slice(&lockout.failures.to_le_bytes());
            out.extend_from_slice(&lockout.drops.to_le_bytes());
        }
        for budget in &self.call_budgets {
            push_words(&mut out, &budget.account);
            for at in [
                budget.blocked_until_unix_ms,
                budget.minute_ends_unix_ms,
                budget.hour_ends_unix_ms,
            ] {
                out.extend_from_slice(&at.unwrap_or(0).to_le_bytes());
            }
            for n in [
                budget.minute_calls,
                budget.hour_calls,
                budget.limited_minute_calls,
                budget.limited_hour_calls,
                budget.breaches,
                budget.drops,
            ] {
                out.extend_from_slice(&n.to_le_bytes());
            }
        }
        out
    }

    /// Adds `newer`'s entries; where both hold a source or network, `newer`'s wins.
    pub fn extend(&mut self, newer: State) {
        fn merge<T, K: Eq + std::hash::Hash>(
            old: &mut Vec<T>,
            newer: Vec<T>,
            key: impl Fn(&T) -> K,
        ) {
            let replaced: std::collections::HashSet<K> = newer.iter().map(&key).collect();
            old.retain(|item| !replaced.contains(&key(item)));
            old.extend(newer);
        }
        merge(&mut self.bans, newer.bans, |ban| ban.source);
        merge(&mut self.allow, newer.allow, |entry| entry.net);
        merge(&mut self.deny, newer.deny, |entry| entry.net);
        merge(&mut self.registered, newer.registered, |r| r.source);
        merge(&mut self.lockouts, newer.lockouts, |l| {
            (l.source, l.account)
        });
        merge(&mut self.call_budgets, newer.call_budgets, |b| b.account);
        self.unreadable += newer.unreadable;
        self.saved_at_unix_ms = self.saved_at_unix_ms.max(newer.saved_at_unix_ms);
    }

    /// Both files' entries (version 1's and version 2's), the later file's winning where
    /// both hold one; None when there is neither.
    pub fn merged(older_or_newer: Option<State>, other: Option<State>) -> Option<State> {
        match (older_or_newer, other) {
            (Some(a), Some(b)) => {
                let (mut older, newer) = if a.saved_at_unix_ms <= b.saved_at_unix_ms {
                    (a, b)
                } else {
                    (b, a)
                };
                older.extend(newer);
                Some(older)
            }
            (one, None) | (None, one) => one,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.bans.is_empty()
            && self.allow.is_empty()
            && self.deny.is_empty()
            && self.registered.is_empty()
            && self.lockouts.is_empty()
            && self.call_budgets.is_empty()
    }
}

/// The address a ban key stands for: IPv4-mapped keys as IPv4.
fn key_address(key: SourceKey) -> IpAddr {
    let v6 = Ipv6Addr::from(key);
    match v6.to_ipv4_mapped() {
        Some(v4) => IpAddr::V4(v4),
        None => IpAddr::V6(v6),
    }
}

/// An address as the kernel keeps it: IPv4 mapped into IPv6.
fn address_bytes(address: IpAddr) -> [u8; 16] {
    match address {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

fn push_words(out: &mut Vec<u8>, words: &[u64; ACCOUNT_WORDS]) {
    for word in words {
        out.extend_from_slice(&word.to_le_bytes());
    }
}

fn push_record(
    out: &mut Vec<u8>,
    address: IpAddr,
    prefix_len: u8,
    reason: BanReason,
    expires_unix_ms: Option<u64>,
) {
    let family = if address.is_ipv4() { 4 } else { 6 };
    out.extend_from_slice(&address_bytes(address));
    out.extend_from_slice(&[prefix_len, family, reason as u8, 0]);
    out.extend_from_slice(&expires_unix_ms.unwrap_or(NEVER).to_le_bytes());
}

/// A version 4, 3 or 2 file's contents; the reason it is not one.
fn decode(bytes: &[u8]) -> Result<State, String> {
    let u32_at = |at: usize| {
        bytes
            .get(at..at + 4)
            .and_then(|b| b.try_into().ok())
            .map(u32::from_le_bytes)
    };
    let u64_at = |at: usize| {
        bytes
            .get(at..at + 8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_le_bytes)
    };
    let too_short = || format!("{} bytes, shorter than its header", bytes.len());
    let version = u32_at(8).ok_or_else(too_short)?;
    let header_size = match version {
        2 => HEADER_SIZE_2,
        3 => HEADER_SIZE_3,
        VERSION => HEADER_SIZE,
        _ => return Err(format!("version {version}, expected {VERSION}, 3, 2 or 1")),
    };
    let record_size = u32_at(12).ok_or_else(too_short)? as usize;
    if record_size != RECORD_SIZE {
        return Err(format!(
            "records of {record_size} bytes, expected {RECORD_SIZE}"
        ));
    }
    let count = |at| {
        u64_at(at)
            .and_then(|n| usize::try_from(n).ok())
            .ok_or_else(too_short)
    };
    let (saved_at_unix_ms, bans, allow, deny) = (
        u64_at(16).ok_or_else(too_short)?,
        count(24)?,
        count(32)?,
        count(40)?,
    );
    let (registered, per_source, across) = if version == 2 {
        (0, 0, 0)
    } else {
        (count(48)?, count(56)?, count(64)?)
    };
    let call_budgets = if version < 4 { 0 } else { count(72)? };
    let records_end = bans
        .checked_add(allow)
        .and_then(|n| n.checked_add(deny))
        .and_then(|n| n.checked_mul(RECORD_SIZE))
        .and_then(|n| n.checked_add(header_size));
    let registrations_end = registered
        .checked_mul(REGISTRATION_SIZE)
        .and_then(|n| n.checked_add(records_end?));
    let lockouts_end = per_source
        .checked_add(across)
        .and_then(|n| n.checked_mul(LOCKOUT_SIZE))
        .and_then(|n| n.checked_add(registrations_end?));
    let expected = call_budgets
        .checked_mul(CALL_BUDGET_SIZE)
        .and_then(|n| n.checked_add(lockouts_end?));
    let (Some(records_end), Some(registrations_end), Some(lockouts_end), Some(expected)) =
        (records_end, registrations_end, lockouts_end, expected)
    else {
        return Err(format!("{} bytes, but its header counts more", bytes.len()));
    };
    if expected != bytes.len() {
        return Err(format!(
            "{} bytes, but its header counts {bans} bans, {allow} allow and {deny} deny entries, {registered} registrations, {} lockouts and {call_budgets} call budgets",
            bytes.len(),
            per_source + across
        ));
    }
    let mut records = bytes[header_size..records_end]
        .chunks_exact(RECORD_SIZE)
        .map(read_record);
    let mut state = State {
        saved_at_unix_ms,
        ..State::default()
    };
    for (address, _, reason, expires_unix_ms) in records.by_ref().take(bans) {
        state.bans.push(SavedBan {
            source: address,
            reason,
            expires_unix_ms,
        });
    }
    for (list, n) in [(&mut state.allow, allow), (&mut state.deny, deny)] {
        for (address, prefix_len, reason, expires_unix_ms) in records.by_ref().take(n) {
            let net = IpNet::new(address, prefix_len)
                .map_err(|_| format!("{address}/{prefix_len} is not a network"))?;
            list.push(SavedEntry {
                net,
                reason,
                expires_unix_ms,
            });
        }
    }
    for record in bytes[records_end..registrations_end].chunks_exact(REGISTRATION_SIZE) {
        state.registered.push(SavedRegistration {
            source: key_address(bytes_at(record, 0)),
            account: words_at(record, 16),
            expires_unix_ms: expiry(bytes_at(record, 48)),
        });
    }
    for (index, record) in bytes[registrations_end..lockouts_end]
        .chunks_exact(LOCKOUT_SIZE)
        .enumerate()
    {
        state.lockouts.push(SavedLockout {
            source: (index < per_source).then(|| key_address(bytes_at(record, 0))),
            account: words_at(record, 16),
            locked_until_unix_ms: expiry(bytes_at(record, 48)),
            failures: u32::from_le_bytes(bytes_at(record, 56)),
            drops: u32::from_le_bytes(bytes_at(record, 60)),
        });
    }
    for record in bytes[lockouts_end..].chunks_exact(CALL_BUDGET_SIZE) {
        let time = |at| Some(u64::from_le_bytes(bytes_at(record, at))).filter(|&t| t != 0);
        let number = |at| u32::from_le_bytes(bytes_at(record, at));
        state.call_budgets.push(SavedCallBudget {
            account: words_at(record, 0),
            blocked_until_unix_ms: time(32),
            minute_ends_unix_ms: time(40),
            hour_ends_unix_ms: time(48),
            minute_calls: number(56),
            hour_calls: number(60),
            limited_minute_calls: number(64),
            limited_hour_calls: number(68),
            breaches: number(72),
            drops: number(76),
        });
    }
    Ok(state)
}

/// `N` bytes of `record` from `at` (the caller's sizes keep them inside).
fn bytes_at<const N: usize>(record: &[u8], at: usize) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(&record[at..at + N]);
    out
}

/// An account name's words at `at`.
fn words_at(record: &[u8], at: usize) -> [u64; ACCOUNT_WORDS] {
    let mut words = [0u64; ACCOUNT_WORDS];
    for (i, word) in words.iter_mut().enumerate() {
        *word = u64::from_le_bytes(bytes_at(record, at + i * 8));
    }
    words
}

/// A saved expiry: None for never.
fn expiry(bytes: [u8; 8]) -> Option<u64> {
    let expires = u64::from_le_bytes(bytes);
    (expires != NEVER).then_some(expires)
}

/// One record: address, prefix length, reason, expiry.
fn read_record(record: &[u8]) -> (IpAddr, u8, BanReason, Option<u64>) {
    let mut address = [0u8; 16];
    address.copy_from_slice(&record[..16]);
    let v6 = Ipv6Addr::from(address);
    let address = match (record[17], v6.to_ipv4_mapped()) {
        (4, Some(v4)) => IpAddr::V4(v4),
        _ => IpAddr::V6(v6),
    };
    (
        address,
        record[16],
        BanReason::from_u32(u32::from(record[18])),
        expiry(bytes_at(record, 20)),
    )
}

/// Version 1 (JSON), as it was written.
#[derive(Deserialize)]
struct Version1 {
    version: u32,
    saved_at_unix_ms: u64,
    bans: Vec<Version1Ban>,
    allow: Vec<Version1Entry>,
    deny: Vec<Version1Entry>,
}

#[derive(Deserialize)]
struct Version1Ban {
    /// An IPv4 address, or an IPv6 prefix (`2001:db8:5f:1::/64`).
    source: String,
    reason: String,
    expires_unix_ms: Option<u64>,
}

#[derive(Deserialize)]
struct Version1Entry {
    /// A network in CIDR notation.
    net: String,
    reason: String,
    expires_unix_ms: Option<u64>,
}

fn from_version_1(bytes: &[u8]) -> Result<State, String> {
    let file: Version1 = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    if file.version != 1 {
        return Err(format!("version {}, expected {VERSION} or 1", file.version));
    }
    let mut state = State {
        saved_at_unix_ms: file.saved_at_unix_ms,
        ..State::default()
    };
    for ban in file.bans {
        match parse_source(&ban.source) {
            Some(source) => state.bans.push(SavedBan {
                source,
                reason: reason_named(&ban.reason),
                expires_unix_ms: ban.expires_unix_ms,
            }),
            None => state.unreadable += 1,
        }
    }
    for (entries, list) in [(file.allow, &mut state.allow), (file.deny, &mut state.deny)] {
        for entry in entries {
            match entry.net.parse::<IpNet>() {
                Ok(net) => list.push(SavedEntry {
                    net,
                    reason: reason_named(&entry.reason),
                    expires_unix_ms: entry.expires_unix_ms,
                }),
                Err(_) => state.unreadable += 1,
            }
        }
    }
    Ok(state)
}

/// Writes `bytes` to `path` through a temporary file in the same directory, renamed over
/// it once flushed to disk (the directory too), so readers see the old or the new file.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    let temporary = dir.join(name);
    let mut file = std::fs::File::create(&temporary)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&temporary, path)?;
    std::fs::File::open(dir)?.sync_all()
}

/// Sets a state file that cannot be read aside as `NAME.corrupt-UNIXTIME`, so
/// that the daemon can start and write a good one without losing it; returns the new
/// name.
pub fn set_aside(path: &Path) -> std::io::Result<PathBuf> {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".corrupt-{}", Clocks::now().unix_ms / 1000));
    let aside = path.with_file_name(name);
    std::fs::rename(path, &aside)?;
    Ok(aside)
}

/// Puts a state back into a freshly loaded filter whose configuration is written (its
/// IPv6 prefix keys the bans), in batches. Expired entries are left out; an operator
/// entry on a network the configuration lists already is left to the configuration.
pub fn restore(
    filter: &mut Filter,
    state: &State,
    clocks: Clocks,
) -> Result<Restored, FilterError> {
    let mut restored = Restored {
        skipped: state.unreadable,
        ..Restored::default()
    };
    let mut keys = Vec::with_capacity(state.bans.len());
    let mut bans = Vec::with_capacity(state.bans.len());
    for ban in &state.bans {
        match clocks.to_kernel(ban.expires_unix_ms) {
            Some(expires_ns) => {
                keys.push(filter.source_key(ban.source));
                bans.push(Ban::new(expires_ns, ban.reason));
            }
            None => restored.skipped += 1,
        }
    }
    restored.bans = put_many(filter.map_mut(names::BANS)?, names::BANS, &keys, &bans)?;
    for (entries, v4_name, v6_name, count) in [
        (
            &state.allow,
            names::ALLOW_V4,
            names::ALLOW_V6,
            &mut restored.allow,
        ),
        (
            &state.deny,
            names::DENY_V4,
            names::DENY_V6,
            &mut restored.deny,
        ),
    ] {
        let mut v4 = Vec::new();
        let mut v6 = Vec::new();
        for entry in entries {
            let Some(expires_ns) = clocks.to_kernel(entry.expires_unix_ms) else {
                restored.skipped += 1;
                continue;
            };
            let value = ListEntry::from_operator(expires_ns, entry.reason as u32);
            match entry.net.trunc() {
                IpNet::V4(net) => v4.push((v4_key(net), value)),
                IpNet::V6(net) => v6.push((v6_key(net), value)),
            }
        }
        let (put_v4, left_v4) = put_operator_entries(filter.map_mut(v4_name)?, v4_name, v4)?;
        let (put_v6, left_v6) = put_operator_entries(filter.map_mut(v6_name)?, v6_name, v6)?;
        *count += put_v4 + put_v6;
        restored.skipped += left_v4 + left_v6;
    }
    restore_learnt(filter, state, clocks, &mut restored)?;
    restore_call_budgets(filter, state, clocks, &mut restored)?;
    Ok(restored)
}

/// The seed this filter keys accounts with: set once the configuration is written,
/// which restoring follows.
fn account_seed(filter: &Filter) -> Result<u64, FilterError> {
    filter.seed().ok_or(FilterError::Missing {
        what: "configured hash seed",
        name: names::CONFIG,
    })
}

/// Puts the call budgets back, keyed by this filter's hash seed; none if its
/// configuration has budgets off.
fn restore_call_budgets(
    filter: &mut Filter,
    state: &State,
    clocks: Clocks,
    restored: &mut Restored,
) -> Result<(), FilterError> {
    if !crate::destinations::budgets_on(filter)? {
        restored.call_budgets_off = state.call_budgets.len();
        return Ok(());
    }
    let seed = account_seed(filter)?;
    let (mut keys, mut budgets) = (Vec::new(), Vec::new());
    for saved in &state.call_budgets {
        let (Some(budget), Some(account_key)) = (
            saved.to_kernel(clocks),
            Account::key_of_name(&saved.account, seed),
        ) else {
            restored.skipped += 1;
            continue;
        };
        keys.push(account_key);
        budgets.push(budget);
    }
    let name = destination_names::BUDGETS;
    restored.call_budgets = put_many(filter.map_mut(name)?, name, &keys, &budgets)?;
    Ok(())
}

/// Puts the registrations and lockouts back, keyed for this filter: sources by its IPv6
/// prefix, accounts by its hash seed.
fn restore_learnt(
    filter: &mut Filter,
    state: &State,
    clocks: Clocks,
    restored: &mut Restored,
) -> Result<(), FilterError> {
    let mut registrations = Vec::with_capacity(state.registered.len());
    for saved in &state.registered {
        match clocks.to_kernel(saved.expires_unix_ms) {
            Some(expires_ns) => registrations.push((
                filter.source_key(saved.source),
                Registration {
                    expires_ns,
                    account: saved.account,
                    source: address_bytes(saved.source),
                },
            )),
            None => restored.skipped += 1,
        }
    }
    let seed = account_seed(filter)?;
    let (mut per_source, mut across) = (Vec::new(), Vec::new());
    for saved in &state.lockouts {
        let (Some(locked_until_ns), Some(account_key)) = (
            clocks.to_kernel(saved.locked_until_unix_ms),
            Account::key_of_name(&saved.account, seed),
        ) else {
            restored.skipped += 1;
            continue;
        };
        let lockout = Lockout {
            window_ns: clocks.monotonic_ns,
            locked_until_ns,
            failures: saved.failures,
            drops: saved.drops,
            name: saved.account,
            source: saved.source.map_or([0; 16], address_bytes),
        };
        match saved.source {
            Some(source) => per_source.push((
                AccountKey {
                    source: filter.source_key(source),
                    account: account_key,
                },
                lockout,
            )),
            None => across.push((account_key, lockout)),
        }
    }
    let (registered, for_source, everywhere) =
        filter.restore_learnt(&registrations, &per_source, &across)?;
    let last_lock_ends = per_source
        .iter()
        .map(|(_, lockout)| lockout.locked_until_ns)
        .chain(across.iter().map(|(_, lockout)| lockout.locked_until_ns))
        .max();
    if let Some(until) = last_lock_ends {
        filter.extend_locks_until(until)?;
    }
    restored.registered = registered;
    restored.lockouts = for_source + everywhere;
    Ok(())
}

/// The maps a [`State`] is read from.
pub struct StateMaps<'a> {
    pub bans: &'a Map,
    pub allow_v4: &'a Map,
    pub allow_v6: &'a Map,
    pub deny_v4: &'a Map,
    pub deny_v6: &'a Map,
    /// Registrations and lockouts; None from the pins of a daemon that predates them.
    pub learnt: Option<LearntMaps<'a>>,
    /// The accounts' call budgets; None likewise.
    pub call_budgets: Option<&'a Map>,
}

impl<'a> StateMaps<'a> {
    /// A loaded filter's own maps.
    pub fn of(filter: &'a Filter) -> Result<Self, FilterError> {
        Ok(Self {
            bans: filter.map(names::BANS)?,
            allow_v4: filter.map(names::ALLOW_V4)?,
            allow_v6: filter.map(names::ALLOW_V6)?,
            deny_v4: filter.map(names::DENY_V4)?,
            deny_v6: filter.map(names::DENY_V6)?,
            learnt: Some(LearntMaps::of(filter)?),
            call_budgets: Some(filter.map(destination_names::BUDGETS)?),
        })
    }
}

/// The state maps pinned in `maps_dir`, in [`StateMaps`] order: what a daemon that did
/// not stop cleanly left, for its successor to take over (with
/// [`crate::learnt::PinnedLearnt`] and [`pinned_call_budgets`], which an older daemon
/// did not pin).
pub fn pinned_maps(maps_dir: &Path) -> Result<[Map; 5], FilterError> {
    let open = |name| open_pinned(maps_dir, name);
    Ok([
        open(names::BANS)?,
        open(names::ALLOW_V4)?,
        open(names::ALLOW_V6)?,
        open(names::DENY_V4)?,
        open(names::DENY_V6)?,
    ])
}

/// The call budgets pinned in `maps_dir` (see [`pinned_maps`]).
pub fn pinned_call_budgets(maps_dir: &Path) -> Result<Map, FilterError> {
    open_pinned(maps_dir, destination_names::BUDGETS)
}

impl<'a> From<&'a [Map; 5]> for StateMaps<'a> {
    fn from([bans, allow_v4, allow_v6, deny_v4, deny_v6]: &'a [Map; 5]) -> Self {
        Self {
            bans,
            allow_v4,
            allow_v6,
            deny_v4,
            deny_v6,
            learnt: None,
            call_budgets: None,
        }
    }
}

/// The bans still in force at `clocks`. Visited, not collected first: a million bans
/// would take tens of MB twice.
fn saved_bans(bans: &Map, clocks: Clocks) -> Result<Vec<SavedBan>, FilterError> {
    let mut saved = Vec::new();
    bpf_sys::hash_for_each(bans, |key: &SourceKey, ban: &Ban| {
        if let Some(expires_unix_ms) = clocks.to_wall(ban.expires_ns) {
            saved.push(SavedBan {
                source: key_address(*key),
                reason: BanReason::from_u32(ban.reason),
                expires_unix_ms,
            });
        }
    })
    .map_err(|source| FilterError::Map {
        name: names::BANS,
        source,
    })?;
    Ok(saved)
}

/// The live operator entries of the allow list, and of the deny list.
fn operator_lists(
    maps: &StateMaps<'_>,
    clocks: Clocks,
) -> Result<(Vec<SavedEntry>, Vec<SavedEntry>), FilterError> {
    let mut allow = Vec::new();
    operator_entries::<[u8; 4]>(maps.allow_v4, names::ALLOW_V4, clocks, &mut allow)?;
    operator_entries::<[u8; 16]>(maps.allow_v6, names::ALLOW_V6, clocks, &mut allow)?;
    let mut deny = Vec::new();
    operator_entries::<[u8; 4]>(maps.deny_v4, names::DENY_V4, clocks, &mut deny)?;
    operator_entries::<[u8; 16]>(maps.deny_v6, names::DENY_V6, clocks, &mut deny)?;
    Ok((allow, deny))
}

/// Appends the live operator entries of one trie to `out`.
fn operator_entries<K>(
    map: &Map,
    name: &'static str,
    clocks: Clocks,
    out: &mut Vec<SavedEntry>,
) -> Result<(), FilterError>
where
    K: aya::Pod + Into<IpAddrBytes>,
{
    bpf_sys::trie_for_each(map, |key: &Key<K>, entry: &ListEntry| {
        if entry.origin != LIST_ORIGIN_OPERATOR {
            return;
        }
        let Some(expires_unix_ms) = clocks.to_wall(entry.expires_ns) else {
            return;
        };
        let address: IpAddr = key.data().into().0;
        let Ok(net) = IpNet::new(address, key.prefix_len() as u8) else {
            return;
        };
        out.push(SavedEntry {
            net,
            reason: BanReason::from_u32(entry.reason),
            expires_unix_ms,
        });
    })
    .map_err(|source| FilterError::Map { name, source })
}

/// A trie key's address bytes as an address.
pub struct IpAddrBytes(IpAddr);

impl From<[u8; 4]> for IpAddrBytes {
    fn from(bytes: [u8; 4]) -> Self {
        Self(IpAddr::from(bytes))
    }
}

impl From<[u8; 16]> for IpAddrBytes {
    fn from(bytes: [u8; 16]) -> Self {
        Self(IpAddr::from(bytes))
    }
}

/// Writes `keys[i] -> values[i]` into one of the filter's maps, in batches; returns how
/// many.
fn put_many<K: aya::Pod, V: aya::Pod>(
    map: &Map,
    name: &'static str,
    keys: &[K],
    values: &[V],
) -> Result<usize, FilterError> {
    let data = bpf_sys::hash_or_trie(map).ok_or(FilterError::Missing {
        what: "hash map or LPM trie",
        name,
    })?;
    bpf_sys::update_many(data, keys, values)
        .map_err(|(_, source)| FilterError::Map { name, source })
}

/// Inserts operator entries into a trie, except on networks the configuration lists
/// itself (its entry stays the configuration's); returns how many were put and left.
fn put_operator_entries<K: aya::Pod + Eq + std::hash::Hash>(
    map: &Map,
    name: &'static str,
    mut entries: Vec<(Key<K>, ListEntry)>,
) -> Result<(usize, usize), FilterError> {
    let configured: std::collections::HashSet<(u32, K)> =
        bpf_sys::trie_entries::<K, ListEntry>(map)
            .map_err(|source| FilterError::Map { name, source })?
            .into_iter()
            .filter(|(_, entry)| entry.origin == LIST_ORIGIN_CONFIG)
            .map(|(key, _)| (key.prefix_len(), key.data()))
            .collect();
    let all = entries.len();
    entries.retain(|(key, _)| !configured.contains(&(key.prefix_len(), key.data())));
    let (keys, values): (Vec<Key<K>>, Vec<ListEntry>) = entries.into_iter().unzip();
    let put = put_many(map, name, &keys, &values)?;
    Ok((put, all - put))
}

/// `198.18.0.1` or `2001:db8:5f:1::/64` (as version 1 wrote them).
fn parse_source(text: &str) -> Option<IpAddr> {
    text.parse::<IpAddr>()
        .ok()
        .or_else(|| text.parse::<IpNet>().ok().map(|net| net.network()))
}

fn reason_named(name: &str) -> BanReason {
    BanReason::ALL
        .into_iter()
        .find(|reason| reason.name() == name)
        .unwrap_or(BanReason::Manual)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLOCKS: Clocks = Clocks {
        monotonic_ns: 5_000_000_000,
        unix_ms: 1_800_000_000_000,
    };

    #[test]
    fn expiries_survive_the_change_of_clock() {
        assert_eq!(CLOCKS.to_wall(u64::MAX), Some(None));
        assert_eq!(CLOCKS.to_wall(CLOCKS.monotonic_ns), None, "expired now");
        assert_eq!(CLOCKS.to_wall(1), None);
        let in_an_hour = CLOCKS.monotonic_ns + 3_600_000_000_000;
        let wall = CLOCKS.to_wall(in_an_hour).unwrap().unwrap();
        assert_eq!(wall, CLOCKS.unix_ms + 3_600_000);

        // After a reboot: the monotonic clock restarted near zero, ten minutes later.
        let after = Clocks {
            monotonic_ns: 20_000_000_000,
            unix_ms: CLOCKS.unix_ms + 600_000,
        };
        assert_eq!(
            after.to_kernel(Some(wall)),
            Some(after.monotonic_ns + 3_000_000_000_000),
            "50 minutes left"
        );
        assert_eq!(after.to_kernel(None), Some(u64::MAX));
        assert_eq!(after.to_kernel(Some(CLOCKS.unix_ms)), None, "passed");
    }

    #[test]
    fn the_file_round_trips_and_bad_files_are_refused() {
        let dir = std::env::temp_dir().join(format!("sip-filter-state-{}", std::process::id()));
        let path = dir.join(FILE_NAME);
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(State::load(&path).unwrap(), None, "no file: a first start");

        let state = State {
            saved_at_unix_ms: CLOCKS.unix_ms,
            bans: vec![
                SavedBan {
                    source: "2001:db8:5f:1::".parse().unwrap(),
                    reason: BanReason::Scanner,
                    expires_unix_ms: Some(CLOCKS.unix_ms + 1000),
                },
                SavedBan {
                    source: "198.18.0.1".parse().unwrap(),
                    reason: BanReason::Rate,
                    expires_unix_ms: None,
                },
            ],
            allow: vec![SavedEntry {
                net: "2001:db8::/32".parse().unwrap(),
                reason: BanReason::Manual,
                expires_unix_ms: Some(7),
            }],
            deny: vec![SavedEntry {
                net: "192.0.2.0/24".parse().unwrap(),
                reason: BanReason::Feed,
                expires_unix_ms: None,
            }],
            registered: vec![SavedRegistration {
                source: "2001:db8:5f:1::7".parse().unwrap(),
                account: account("office-phone-17"),
                expires_unix_ms: Some(CLOCKS.unix_ms + 3_600_000),
            }],
            lockouts: vec![
                SavedLockout {
                    source: Some("198.18.0.9".parse().unwrap()),
                    account: account("alice"),
                    locked_until_unix_ms: Some(CLOCKS.unix_ms + 600_000),
                    failures: 5,
                    drops: 2,
                },
                SavedLockout {
                    source: None,
                    account: account("bob"),
                    locked_until_unix_ms: Some(CLOCKS.unix_ms + 900_000),
                    failures: 20,
                    drops: 0,
                },
            ],
            call_budgets: vec![
                SavedCallBudget {
                    account: account("premium-dialler"),
                    blocked_until_unix_ms: Some(CLOCKS.unix_ms + 3_600_000),
                    breaches: 1,
                    drops: 4,
                    ..SavedCallBudget::default()
                },
                SavedCallBudget {
                    account: account("office-phone-17"),
                    blocked_until_unix_ms: None,
                    minute_ends_unix_ms: Some(CLOCKS.unix_ms + 20_000),
                    hour_ends_unix_ms: Some(CLOCKS.unix_ms + 1_200_000),
                    minute_calls: 3,
                    hour_calls: 9,
                    limited_minute_calls: 1,
                    limited_hour_calls: 2,
                    breaches: 0,
                    drops: 0,
                },
            ],
            unreadable: 0,
        };
        state.save(&path).unwrap();
        assert_eq!(State::load(&path).unwrap(), Some(state.clone()));
        assert_eq!(
            std::fs::metadata(&path).unwrap().len() as usize,
            HEADER_SIZE
                + 4 * RECORD_SIZE
                + REGISTRATION_SIZE
                + 2 * LOCKOUT_SIZE
                + 2 * CALL_BUDGET_SIZE
        );

        // A version 3 file (before call budgets were saved) is this one without the
        // budgets' count and records: the rest loads, no budgets.
        let bytes = std::fs::read(&path).unwrap();
        let mut version_3 = bytes[..bytes.len() - 2 * CALL_BUDGET_SIZE].to_vec();
        version_3[8..12].copy_from_slice(&3u32.to_le_bytes());
        version_3.drain(HEADER_SIZE_3..HEADER_SIZE);
        let old = decode(&version_3).unwrap();
        assert_eq!(
            old,
            State {
                call_budgets: Vec::new(),
                ..state.clone()
            }
        );
        assert!(decode(&version_3[..version_3.len() - 1]).is_err());
        assert!(!dir.join("state.bin.tmp").exists());

        // Cut short: refused, not half read.
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() - 1]).unwrap();
        let error = State::load(&path).unwrap_err();
        assert!(matches!(error, StateError::Corrupt { .. }), "{error}");
        let aside = set_aside(&path).unwrap();
        assert!(!path.exists() && aside.exists());
        assert!(aside.to_string_lossy().contains("state.bin.corrupt-"));

        let mut future = bytes.clone();
        future[8..12].copy_from_slice(&99u32.to_le_bytes());
        std::fs::write(&path, &future).unwrap();
        assert!(State::load(&path)
            .unwrap_err()
            .to_string()
            .contains("version 99"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A budget is saved while blocked or metering the current hour; a minute that has
    /// ended loses its calls; restored after a reboot, each keeps the time it had left.
    #[test]
    fn call_budgets_survive_the_change_of_clock() {
        // Up three hours, so that the windows started after boot.
        const BEFORE: Clocks = Clocks {
            monotonic_ns: 3 * HOUR_NS,
            unix_ms: CLOCKS.unix_ms,
        };
        let now = BEFORE.monotonic_ns;
        let blocked = CallBudget {
            minute_start_ns: now - 2 * MINUTE_NS,
            hour_start_ns: now - 10 * MINUTE_NS,
            minute_calls: 6,
            hour_calls: 6,
            limited_minute_calls: 6,
            limited_hour_calls: 6,
            blocked_until_ns: now + 30 * MINUTE_NS,
            breaches: 1,
            drops: 3,
            name: account("premium-dialler"),
        };
        let saved = SavedCallBudget::of(&blocked, BEFORE).unwrap();
        assert_eq!(
            saved,
            SavedCallBudget {
                account: account("premium-dialler"),
                blocked_until_unix_ms: Some(BEFORE.unix_ms + 1_800_000),
                minute_ends_unix_ms: None,
                hour_ends_unix_ms: Some(BEFORE.unix_ms + 3_000_000),
                minute_calls: 0,
                hour_calls: 6,
                limited_minute_calls: 0,
                limited_hour_calls: 6,
                breaches: 1,
                drops: 3,
            }
        );
        // Neither blocked nor metering the current hour: nothing to keep.
        let idle = CallBudget {
            hour_start_ns: now - 2 * HOUR_NS,
            blocked_until_ns: now - 1,
            ..blocked
        };
        assert_eq!(SavedCallBudget::of(&idle, BEFORE), None);

        // Ten minutes later, after a reboot: the monotonic clock restarted near zero.
        let after = Clocks {
            monotonic_ns: 20_000_000_000,
            unix_ms: BEFORE.unix_ms + 600_000,
        };
        let restored = saved.to_kernel(after).unwrap();
        assert_eq!(
            restored.blocked_until_ns,
            after.monotonic_ns + 20 * MINUTE_NS
        );
        // The hour has 40 minutes left: it started 20 minutes "before" the clock did,
        // which the kernel's wrapping `now - start` reads as 20 minutes ago.
        assert_eq!(
            after.monotonic_ns.wrapping_sub(restored.hour_start_ns),
            20 * MINUTE_NS
        );
        assert_eq!((restored.hour_calls, restored.minute_calls), (6, 0));
        assert_eq!((restored.breaches, restored.drops), (1, 3));
        assert_eq!(restored.name, saved.account);
        // Past both the block and the hour: left out.
        let much_later = Clocks {
            monotonic_ns: after.monotonic_ns,
            unix_ms: BEFORE.unix_ms + 2 * 3_600_000,
        };
        assert_eq!(saved.to_kernel(much_later), None);
    }

    /// The name words of `text`, as the kernel keeps an account.
    fn account(text: &str) -> [u64; ACCOUNT_WORDS] {
        let mut bytes = [0u8; ACCOUNT_WORDS * 8];
        bytes[..text.len()].copy_from_slice(text.as_bytes());
        words_at(&bytes, 0)
    }

    /// A version 2 file (written before registrations and lockouts were saved) loads:
    /// its bans and entries, nothing learnt.
    #[test]
    fn a_version_2_file_still_loads() {
        let mut bytes = Vec::new();
        bytes.extend_from_slice(MAGIC);
        bytes.extend_from_slice(&2u32.to_le_bytes());
        bytes.extend_from_slice(&(RECORD_SIZE as u32).to_le_bytes());
        for n in [CLOCKS.unix_ms, 1, 0, 1] {
            bytes.extend_from_slice(&n.to_le_bytes());
        }
        push_record(
            &mut bytes,
            "198.18.0.1".parse().unwrap(),
            32,
            BanReason::Scanner,
            Some(CLOCKS.unix_ms + 1000),
        );
        push_record(
            &mut bytes,
            "192.0.2.0".parse().unwrap(),
            24,
            BanReason::Feed,
            None,
        );
        assert_eq!(bytes.len(), HEADER_SIZE_2 + 2 * RECORD_SIZE);
        let state = decode(&bytes).unwrap();
        assert_eq!(state.saved_at_unix_ms, CLOCKS.unix_ms);
        assert_eq!(
            state.bans,
            [SavedBan {
                source: "198.18.0.1".parse().unwrap(),
                reason: BanReason::Scanner,
                expires_unix_ms: Some(CLOCKS.unix_ms + 1000),
            }]
        );
        assert_eq!(state.deny[0].net, "192.0.2.0/24".parse::<IpNet>().unwrap());
        assert!(state.registered.is_empty() && state.lockouts.is_empty());
        // Its header's counts must still match its length.
        assert!(decode(&bytes[..bytes.len() - 1]).is_err());
    }

    #[test]
    fn a_version_1_file_still_loads_and_merges_by_age() {
        let dir = std::env::temp_dir().join(format!("sip-filter-state-v1-{}", std::process::id()));
        let path = dir.join(LEGACY_FILE_NAME);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        // As version 1 wrote it.
        let json = r#"{
  "version": 1,
  "saved_at_unix_ms": 1800000000000,
  "bans": [
    { "source": "2001:db8:5f:1::/64", "reason": "scanner", "expires_unix_ms": 1800000001000 },
    { "source": "198.18.0.1", "reason": "feed", "expires_unix_ms": null },
    { "source": "not an address", "reason": "feed", "expires_unix_ms": null }
  ],
  "allow": [],
  "deny": [ { "net": "192.0.2.0/24", "reason": "feed", "expires_unix_ms": null } ]
}"#;
        std::fs::write(&path, json).unwrap();
        let old = State::load(&path).unwrap().unwrap();
        assert_eq!(old.saved_at_unix_ms, 1_800_000_000_000);
        assert_eq!(old.unreadable, 1);
        assert_eq!(
            old.bans,
            [
                SavedBan {
                    source: "2001:db8:5f:1::".parse().unwrap(),
                    reason: BanReason::Scanner,
                    expires_unix_ms: Some(1_800_000_001_000),
                },
                SavedBan {
                    source: "198.18.0.1".parse().unwrap(),
                    reason: BanReason::Feed,
                    expires_unix_ms: None,
                }
            ]
        );
        assert_eq!(old.deny[0].net, "192.0.2.0/24".parse::<IpNet>().unwrap());

        // A later version 2 file wins where both hold a source; the rest of both stays.
        let newer = State {
            saved_at_unix_ms: old.saved_at_unix_ms + 1,
            bans: vec![SavedBan {
                source: "198.18.0.1".parse().unwrap(),
                reason: BanReason::Manual,
                expires_unix_ms: Some(5),
            }],
            ..State::default()
        };
        let merged = State::merged(Some(newer.clone()), Some(old.clone())).unwrap();
        assert_eq!(merged.bans.len(), 2);
        assert!(merged.bans.contains(&newer.bans[0]));
        assert_eq!(merged.deny, old.deny);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn saved_sources_parse_back() {
        assert_eq!(
            parse_source("198.18.0.1"),
            Some("198.18.0.1".parse().unwrap())
        );
        assert_eq!(
            parse_source("2001:db8:5f:1::/64"),
            Some("2001:db8:5f:1::".parse().unwrap())
        );
        assert_eq!(parse_source("nonsense"), None);
        assert_eq!(reason_named("feed"), BanReason::Feed);
        assert_eq!(reason_named("unheard-of"), BanReason::Manual);
    }
}
