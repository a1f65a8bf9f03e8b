//! What the filter learnt from the server's answers (issue 13): the sources holding a
//! registration (`SF_REGISTERED`) and the accounts locked after failed passwords, for
//! one source (`SF_LOCKOUTS`) or for every unregistered source (`SF_ACCOUNTS`). Read
//! from a loaded filter's own maps or from the pinned ones (the `auth` verbs, `status`,
//! `explain`, metrics, the state file); unlocking removes entries.
//!
//! Expiries are `CLOCK_MONOTONIC_COARSE` nanoseconds, like bans. The kernel leaves an
//! expired entry in place (an LRU makes room when it must): what is listed here is what
//! still applies at `now`.

use std::path::Path;

use aya::maps::Map;
use sip_filter_common::{
    maps::{names, AccountKey, Lockout, Registration, SourceKey},
    sip::pairing::{Account, ACCOUNT_BYTES},
};

use crate::{
    bpf_sys,
    events::account_name,
    filter::{open_pinned, Filter, FilterError},
};

/// The three maps, borrowed from a loaded filter or from [`PinnedLearnt`].
#[derive(Clone, Copy)]
pub struct LearntMaps<'a> {
    pub registered: &'a Map,
    pub lockouts: &'a Map,
    pub accounts: &'a Map,
}

/// The three maps a running filter pinned, opened from another process.
pub struct PinnedLearnt {
    registered: Map,
    lockouts: Map,
    accounts: Map,
}

impl PinnedLearnt {
    /// Opens the maps pinned in `dir`.
    pub fn open(dir: &Path) -> Result<Self, FilterError> {
        Ok(Self {
            registered: open_pinned(dir, names::REGISTERED)?,
            lockouts: open_pinned(dir, names::LOCKOUTS)?,
            accounts: open_pinned(dir, names::ACCOUNTS)?,
        })
    }

    pub fn maps(&self) -> LearntMaps<'_> {
        LearntMaps {
            registered: &self.registered,
            lockouts: &self.lockouts,
            accounts: &self.accounts,
        }
    }
}

/// A source holding a registration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Registered {
    /// What it is kept under: the address, or its IPv6 prefix.
    pub key: SourceKey,
    pub registration: Registration,
}

impl Registered {
    /// The last account registered from it.
    pub fn account(&self) -> String {
        account_name(&self.registration.account)
    }
}

/// Whom a lockout shuts out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LockScope {
    /// One source (its key: the address, or its IPv6 prefix).
    Source(SourceKey),
    /// Every source neither registered nor allow-listed.
    Unregistered,
}

/// A locked account.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Locked {
    pub scope: LockScope,
    /// The account's key in the maps ([`Account::key`]).
    pub account_key: u64,
    pub lockout: Lockout,
}

impl Locked {
    pub fn account(&self) -> String {
        account_name(&self.lockout.name)
    }
}

/// Counts of what still applies, for `status` and metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Learnt {
    pub registered: u64,
    /// Accounts locked for one source, and across sources.
    pub locked_for_source: u64,
    pub locked_everywhere: u64,
}

impl<'a> LearntMaps<'a> {
    /// A loaded filter's own maps.
    pub fn of(filter: &'a Filter) -> Result<Self, FilterError> {
        Ok(Self {
            registered: filter.map(names::REGISTERED)?,
            lockouts: filter.map(names::LOCKOUTS)?,
            accounts: filter.map(names::ACCOUNTS)?,
        })
    }

    /// Every registration, expired or not (batched reads).
    pub fn all_registrations(&self) -> Result<Vec<(SourceKey, Registration)>, FilterError> {
        bpf_sys::hash_entries(self.registered).map_err(|source| FilterError::Map {
            name: names::REGISTERED,
            source,
        })
    }

    /// Every per-source lockout entry, locked or only counting failures.
    pub fn all_source_lockouts(&self) -> Result<Vec<(AccountKey, Lockout)>, FilterError> {
        bpf_sys::hash_entries(self.lockouts).map_err(|source| FilterError::Map {
            name: names::LOCKOUTS,
            source,
        })
    }

    /// Every across-sources lockout entry, by account key.
    pub fn all_account_lockouts(&self) -> Result<Vec<(u64, Lockout)>, FilterError> {
        bpf_sys::hash_entries(self.accounts).map_err(|source| FilterError::Map {
            name: names::ACCOUNTS,
            source,
        })
    }

    /// The registrations that have not expired at `now_ns`, by source key.
    pub fn registered(&self, now_ns: u64) -> Result<Vec<Registered>, FilterError> {
        let mut live: Vec<Registered> = self
            .all_registrations()?
            .into_iter()
            .filter(|(_, registration)| now_ns < registration.expires_ns)
            .map(|(key, registration)| Registered { key, registration })
            .collect();
        live.sort_unstable_by_key(|registered| registered.key);
        Ok(live)
    }

    /// The accounts locked at `now_ns`: per source (by source, then account), then
    /// across sources (by account).
    pub fn locked(&self, now_ns: u64) -> Result<Vec<Locked>, FilterError> {
        let is_locked = |lockout: &Lockout| now_ns < lockout.locked_until_ns;
        let mut per_source: Vec<Locked> = self
            .all_source_lockouts()?
            .into_iter()
            .filter(|(_, lockout)| is_locked(lockout))
            .map(|(key, lockout)| Locked {
                scope: LockScope::Source(key.source),
                account_key: key.account,
                lockout,
            })
            .collect();
        per_source.sort_by_cached_key(|locked| (locked.scope_key(), locked.account()));
        let mut everywhere: Vec<Locked> = self
            .all_account_lockouts()?
            .into_iter()
            .filter(|(_, lockout)| is_locked(lockout))
            .map(|(account_key, lockout)| Locked {
                scope: LockScope::Unregistered,
                account_key,
                lockout,
            })
            .collect();
        everywhere.sort_by_cached_key(Locked::account);
        per_source.extend(everywhere);
        Ok(per_source)
    }

    /// How many registrations and lockouts apply at `now_ns`.
    pub fn count(&self, now_ns: u64) -> Result<Learnt, FilterError> {
        let locked = self.locked(now_ns)?;
        let everywhere = locked
            .iter()
            .filter(|locked| locked.scope == LockScope::Unregistered)
            .count() as u64;
        Ok(Learnt {
            registered: self.registered(now_ns)?.len() as u64,
            locked_for_source: locked.len() as u64 - everywhere,
            locked_everywhere: everywhere,
        })
    }

    /// Forgets `account`'s failures and lockouts: for the source keyed `source` only, or
    /// for every source and across sources. Returns how many of the entries removed
    /// were locked at `now_ns` (the others only counted failures).
    pub fn unlock(
        &self,
        account: &str,
        source: Option<SourceKey>,
        now_ns: u64,
    ) -> Result<usize, FilterError> {
        let named = |lockout: &Lockout| same_account(&lockout.name, account);
        let mut lifted = 0;
        let source_keys: Vec<AccountKey> = self
            .all_source_lockouts()?
            .into_iter()
            .filter(|(key, lockout)| named(lockout) && source.is_none_or(|s| s == key.source))
            .map(|(key, lockout)| {
                lifted += usize::from(now_ns < lockout.locked_until_ns);
                key
            })
            .collect();
        remove(self.lockouts, names::LOCKOUTS, &source_keys)?;
        if source.is_none() {
            let account_keys: Vec<u64> = self
                .all_account_lockouts()?
                .into_iter()
                .filter(|(_, lockout)| named(lockout))
                .map(|(key, lockout)| {
                    lifted += usize::from(now_ns < lockout.locked_until_ns);
                    key
                })
                .collect();
            remove(self.accounts, names::ACCOUNTS, &account_keys)?;
        }
        Ok(lifted)
    }

    /// Writes registrations, per-source and across-sources lockouts; returns how many
    /// of each were written. The ingress program looks a registration up only where its
    /// hint is set ([`sip_filter_common::maps::registered_hint`]): the daemon's restore
    /// goes through [`Filter::restore_learnt`], which sets them.
    pub fn put(
        &self,
        registrations: &[(SourceKey, Registration)],
        per_source: &[(AccountKey, Lockout)],
        across: &[(u64, Lockout)],
    ) -> Result<(usize, usize, usize), FilterError> {
        fn put<K: aya::Pod, V: aya::Pod>(
            map: &Map,
            name: &'static str,
            entries: &[(K, V)],
        ) -> Result<usize, FilterError> {
            let data = bpf_sys::hash_or_trie(map).ok_or(FilterError::Missing {
                what: "hash map",
                name,
            })?;
            let (keys, values): (Vec<K>, Vec<V>) = entries.iter().copied().unzip();
            bpf_sys::update_many(data, &keys, &values)
                .map_err(|(_, source)| FilterError::Map { name, source })
        }
        Ok((
            put(self.registered, names::REGISTERED, registrations)?,
            put(self.lockouts, names::LOCKOUTS, per_source)?,
            put(self.accounts, names::ACCOUNTS, across)?,
        ))
    }
}

impl Locked {
    /// Sorts per-source lockouts by source.
    fn scope_key(&self) -> SourceKey {
        match self.scope {
            LockScope::Source(key) => key,
            LockScope::Unregistered => [0xff; 16],
        }
    }
}

/// Whether a lockout's stored name (its first [`ACCOUNT_BYTES`]) is `account`'s.
pub fn same_account(
    stored: &[u64; sip_filter_common::sip::pairing::ACCOUNT_WORDS],
    account: &str,
) -> bool {
    let (bytes, len) = Account::name_bytes(stored);
    let wanted = account.as_bytes();
    len > 0 && bytes[..len] == wanted[..wanted.len().min(ACCOUNT_BYTES)]
}

fn remove<K: aya::Pod>(map: &Map, name: &'static str, keys: &[K]) -> Result<usize, FilterError> {
    if keys.is_empty() {
        return Ok(0);
    }
    let data = bpf_sys::hash_or_trie(map).ok_or(FilterError::Missing {
        what: "hash map",
        name,
    })?;
    bpf_sys::delete_many(data, keys).map_err(|source| FilterError::Map { name, source })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(text: &str) -> [u64; 4] {
        let mut bytes = [0u8; 32];
        let len = text.len().min(32);
        bytes[..len].copy_from_slice(&text.as_bytes()[..len]);
        let mut words = [0u64; 4];
        for (word, chunk) in words.iter_mut().zip(bytes.chunks_exact(8)) {
            *word = u64::from_le_bytes(chunk.try_into().unwrap());
        }
        words
    }

    #[test]
    fn accounts_match_by_their_stored_name() {
        assert!(same_account(&name("alice"), "alice"));
        assert!(!same_account(&name("alice"), "alic"));
        assert!(
            !same_account(&name("alice"), "Alice"),
            "user names are case-sensitive"
        );
        assert!(!same_account(&name(""), ""));
        let long = "a-very-long-account-name-over-32-bytes";
        assert!(
            same_account(&name(long), long),
            "compared as far as it was kept"
        );
    }
}
