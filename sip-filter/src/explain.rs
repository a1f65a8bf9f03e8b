//! What the running filter knows about one address, for `sip-filter explain`: the allow
//! and deny entries covering it, its ban, its buckets and strikes, read from the pinned
//! maps, whether it is registered and which accounts are locked for it (what the
//! server's answers taught), and the verdict the kernel would give its next packet by the same rules
//! (`judge` in the XDP program: trusted, then denied, then banned, then the content
//! checks and buckets).

use std::{net::IpAddr, path::Path, time::Duration};

use aya::maps::{Array, HashMap, Map, MapData, MapError};
use ipnet::IpNet;
use sip_filter_common::{
    maps::{
        names, Ban, BanReason, Limit, ListEntry, Registration, SourceKey, SourceState,
        CLASS_ANSWERS, CLASS_INVITE, CLASS_OTHER, CLASS_REGISTER, CLASS_TRUSTED, FLAG_DRY_RUN,
        SOURCE_DROP_REASONS,
    },
    FilterConfig, Reason,
};

use crate::{
    filter::{key_to_string, monotonic_now_ns, pinned_config, source_key, FilterError, PinnedBans},
    learnt::{LockScope, Locked, PinnedLearnt},
    lists::{origin_name, ListKind, PinnedList},
};

/// A list entry covering the address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ListMatch {
    pub network: IpNet,
    pub entry: ListEntry,
}

/// A per-source bucket ([`Limit`]) as it stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bucket {
    /// `register`, `invite`, `other`, `answers` or `trusted`.
    pub class: &'static str,
    /// Requests per second, and at once.
    pub rate: u64,
    pub burst: u64,
    /// How many the source may send now.
    pub available: u64,
    /// How long until it admits again (zero while it admits).
    pub admits_in: Duration,
    /// How long until it is full again.
    pub full_in: Duration,
}

/// Strikes toward an automatic ban within the current window.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Strikes {
    /// `unknown_domain`, `rate_overflow`, `auth` (failed passwords) or `enumeration`
    /// (distinct accounts failed or rejected).
    pub rule: &'static str,
    pub hits: u32,
    /// The count that bans (0: the rule is off).
    pub threshold: u32,
    /// Until the window ends and the count starts over.
    pub window_left: Duration,
}

/// Everything the maps say about one address.
#[derive(Clone, Debug)]
pub struct Explanation {
    pub address: IpAddr,
    /// The key its bans and state are kept under: the address, or its IPv6 prefix.
    pub key: SourceKey,
    pub config: FilterConfig,
    pub now_ns: u64,
    /// Allow entries covering the address, the longest (the one the kernel reads) first.
    pub allow: Vec<ListMatch>,
    /// Deny entries covering the address, the longest first.
    pub deny: Vec<ListMatch>,
    pub ban: Option<Ban>,
    /// Its buckets, strike windows and drops; None when the filter tracks nothing for it
    /// (no request lately, or forgotten: the state is an LRU).
    pub state: Option<SourceState>,
    /// The arrival time of the untrusted sources' common budget.
    pub global_arrival_ns: u64,
    /// Its registration, if it holds one that has not expired.
    pub registration: Option<Registration>,
    /// Accounts locked for it, then those locked for every unregistered source (they
    /// apply to it unless it is registered or trusted: see [`Explanation::locked`]).
    pub lockouts: Vec<Locked>,
}

/// Reads what the filter pinned in `dir` knows about `address`.
pub fn explain(dir: &Path, address: IpAddr) -> Result<Explanation, FilterError> {
    let address = address.to_canonical();
    let config = pinned_config(dir)?;
    let key = source_key(address, config.ipv6_prefix);
    let allow = covering(&PinnedList::open(dir, ListKind::Allow)?, address)?;
    let deny = covering(&PinnedList::open(dir, ListKind::Deny)?, address)?;
    let ban = PinnedBans::open(dir)?.get(address)?;
    let state = source_state(dir, &key)?;
    let global_arrival_ns = global_arrival(dir)?;
    let learnt = PinnedLearnt::open(dir)?;
    let now = monotonic_now_ns();
    let registration = learnt
        .maps()
        .registered(now)?
        .into_iter()
        .find(|registered| registered.key == key)
        .map(|registered| registered.registration);
    let lockouts = learnt
        .maps()
        .locked(now)?
        .into_iter()
        .filter(|locked| match locked.scope {
            LockScope::Source(source) => source == key,
            LockScope::Unregistered => true,
        })
        .collect();
    Ok(Explanation {
        address,
        key,
        config,
        // Read last: nothing above is judged as of a time before it was read.
        now_ns: monotonic_now_ns(),
        allow,
        deny,
        ban,
        state,
        global_arrival_ns,
        registration,
        lockouts,
    })
}

/// The entries of `list` covering `address`, longest first: one exact look-up per
/// prefix length (at most 129), not a walk of a list that may hold a million.
fn covering(list: &PinnedList, address: IpAddr) -> Result<Vec<ListMatch>, FilterError> {
    let longest: u8 = match address {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    };
    let mut found = Vec::new();
    for prefix in (0..=longest).rev() {
        let Ok(network) = IpNet::new(address, prefix) else {
            continue;
        };
        let network = network.trunc();
        if let Some(entry) = list.get(network)? {
            found.push(ListMatch { network, entry });
        }
    }
    Ok(found)
}

/// What the kernel keeps for `key` (a look-up from userspace leaves the LRU order be).
fn source_state(dir: &Path, key: &SourceKey) -> Result<Option<SourceState>, FilterError> {
    let map_error = |source| FilterError::Map {
        name: names::SOURCES,
        source,
    };
    let data = MapData::from_pin(dir.join(names::SOURCES)).map_err(map_error)?;
    let map: HashMap<MapData, SourceKey, SourceState> =
        HashMap::try_from(Map::from_map_data(data).map_err(map_error)?).map_err(map_error)?;
    match map.get(key, 0) {
        Ok(value) => Ok(Some(value)),
        Err(MapError::KeyNotFound) => Ok(None),
        Err(e) => Err(map_error(e)),
    }
}

fn global_arrival(dir: &Path) -> Result<u64, FilterError> {
    let map_error = |source| FilterError::Map {
        name: names::GLOBAL_BUDGET,
        source,
    };
    let data = MapData::from_pin(dir.join(names::GLOBAL_BUDGET)).map_err(map_error)?;
    let map: Array<MapData, u64> =
        Array::try_from(Map::from_map_data(data).map_err(map_error)?).map_err(map_error)?;
    map.get(&0, 0).map_err(map_error)
}

/// The classes a source's requests are metered in: trusted sources' one bucket, or the
/// untrusted classes.
const UNTRUSTED_CLASSES: [(&str, usize); 4] = [
    ("register", CLASS_REGISTER),
    ("invite", CLASS_INVITE),
    ("other", CLASS_OTHER),
    ("answers", CLASS_ANSWERS),
];

impl Explanation {
    /// How the key reads: the address, or `PREFIX/len` for IPv6.
    pub fn key_text(&self) -> String {
        key_to_string(self.key, self.config.ipv6_prefix)
    }

    pub fn dry_run(&self) -> bool {
        self.config.has(FLAG_DRY_RUN)
    }

    /// The allow entry that makes it trusted: the longest covering entry, if live (the
    /// kernel reads only the longest; an expired one trusts nobody).
    pub fn trusted_by(&self) -> Option<&ListMatch> {
        self.allow
            .first()
            .filter(|found| found.entry.is_live(self.now_ns))
    }

    /// The deny entry that drops it, likewise; none for a trusted source (the kernel
    /// does not look).
    pub fn denied_by(&self) -> Option<&ListMatch> {
        if self.trusted_by().is_some() {
            return None;
        }
        self.deny
            .first()
            .filter(|found| found.entry.is_live(self.now_ns))
    }

    /// Its ban, if it has not expired and applies (not to a trusted source).
    pub fn live_ban(&self) -> Option<&Ban> {
        if self.trusted_by().is_some() {
            return None;
        }
        self.ban.as_ref().filter(|ban| self.now_ns < ban.expires_ns)
    }

    /// Its buckets: the trusted one, or the untrusted classes; limits not set are left
    /// out.
    pub fn buckets(&self) -> Vec<Bucket> {
        let classes: Vec<(&'static str, usize)> = if self.trusted_by().is_some() {
            vec![("trusted", CLASS_TRUSTED)]
        } else {
            UNTRUSTED_CLASSES.to_vec()
        };
        classes
            .into_iter()
            .filter_map(|(class, index)| {
                let limit = self.config.limits[index];
                let arrival = self.state.map_or(0, |state| state.arrival_ns[index]);
                bucket(class, &limit, arrival, self.now_ns)
            })
            .collect()
    }

    /// The untrusted sources' common budget, if configured.
    pub fn global_budget(&self) -> Option<Bucket> {
        bucket(
            "untrusted_total",
            &self.config.untrusted_total,
            self.global_arrival_ns,
            self.now_ns,
        )
    }

    /// Strikes toward the automatic bans in their current windows.
    pub fn strikes(&self) -> Vec<Strikes> {
        let Some(state) = &self.state else {
            return Vec::new();
        };
        let (rules, auth) = (&self.config.bans, &self.config.auth);
        [
            (
                "unknown_domain",
                state.domain_hits,
                state.domain_window_ns,
                rules.unknown_domain_window_ns,
                rules.unknown_domain_hits,
            ),
            (
                "rate_overflow",
                state.overflow_hits,
                state.overflow_window_ns,
                rules.rate_overflow_window_ns,
                rules.rate_overflow_hits,
            ),
            // Learnt from the server's answers (issue 13).
            (
                "auth",
                state.auth_failures,
                state.auth_window_ns,
                auth.ban_window_ns,
                auth.ban_failures,
            ),
            (
                "enumeration",
                state.distinct_users,
                state.users_window_ns,
                auth.enumeration_window_ns,
                auth.enumeration_users,
            ),
            // Refused TLS handshakes (issue 14, item 4).
            (
                "tls_refused",
                state.tls_refusals,
                state.tls_window_ns,
                self.config.tls.refused_window_ns,
                self.config.tls.refused_hits,
            ),
        ]
        .into_iter()
        .map(|(rule, hits, start, window, threshold)| {
            // As the kernel's `hit`: a window over is a count of zero.
            let elapsed = self.now_ns.wrapping_sub(start);
            let (hits, window_left) = if elapsed > window {
                (0, Duration::ZERO)
            } else {
                (hits, Duration::from_nanos(window - elapsed))
            };
            Strikes {
                rule,
                hits,
                threshold,
                window_left,
            }
        })
        .collect()
    }

    /// Its requests dropped by reason (the kernel counts them in its state while it
    /// tracks it; banned and denied drops are counted in the ban and the deny entry).
    pub fn drops(&self) -> Vec<(Reason, u64)> {
        let mut drops: Vec<(Reason, u64)> = self
            .state
            .map(|state| {
                SOURCE_DROP_REASONS
                    .iter()
                    .copied()
                    .zip(state.drops)
                    .filter(|(_, n)| *n > 0)
                    .collect()
            })
            .unwrap_or_default();
        if let Some(ban) = self.ban.filter(|ban| ban.drops > 0) {
            drops.push((Reason::DropBanned, ban.drops));
        }
        drops.sort_by_key(|(_, n)| std::cmp::Reverse(*n));
        drops
    }

    /// What happens to its next packet to a SIP port, by the kernel's order.
    pub fn verdict(&self) -> Verdict {
        if let Some(trusted) = self.trusted_by() {
            return Verdict {
                reason: None,
                limited: self.exhausted(),
                cause: format!(
                    "trusted (allow list {}, {}): never denied or banned, no scanner or domain check",
                    trusted.network,
                    origin_name(trusted.entry.origin)
                ),
            };
        }
        if let Some(denied) = self.denied_by() {
            return Verdict {
                reason: Some(Reason::DropDenied),
                limited: Vec::new(),
                cause: format!(
                    "denied by {} ({})",
                    denied.network,
                    origin_name(denied.entry.origin)
                ),
            };
        }
        if let Some(ban) = self.live_ban() {
            return Verdict {
                reason: Some(Reason::DropBanned),
                limited: Vec::new(),
                cause: match BanReason::from_u32(ban.reason) {
                    BanReason::Manual => "banned by hand".to_string(),
                    BanReason::Feed => "banned from a feed".to_string(),
                    reason => format!("banned for {}", reason.name()),
                },
            };
        }
        Verdict {
            reason: None,
            limited: self.exhausted(),
            cause: "neither trusted, denied nor banned: its requests are judged on their content (scanner User-Agent, domain) and its rate".to_string(),
        }
    }

    /// Buckets that admit nothing now (the global budget too, for untrusted sources).
    fn exhausted(&self) -> Vec<Bucket> {
        let mut empty: Vec<Bucket> = self
            .buckets()
            .into_iter()
            .filter(|bucket| bucket.available == 0)
            .collect();
        if self.trusted_by().is_none() {
            empty.extend(self.global_budget().filter(|budget| budget.available == 0));
        }
        empty
    }

    /// The accounts whose credentialed requests from it are dropped
    /// (drop_auth_lockout): its own lockouts, and, unless it is registered or trusted,
    /// those of accounts locked for every unregistered source.
    pub fn locked(&self) -> Vec<&Locked> {
        let exempt = self.registration.is_some() || self.trusted_by().is_some();
        self.lockouts
            .iter()
            .filter(|locked| locked.scope != LockScope::Unregistered || !exempt)
            .collect()
    }
}

/// The verdict on an address's next packet.
#[derive(Clone, Debug)]
pub struct Verdict {
    /// The drop reason for every packet (deny list, ban); None when they pass the source
    /// checks.
    pub reason: Option<Reason>,
    /// Buckets that admit nothing now: their class's requests are dropped
    /// (drop_rate_limited, or drop_global_budget) until they refill.
    pub limited: Vec<Bucket>,
    /// Why, in words.
    pub cause: String,
}

/// A bucket's standing at `now`, from its arrival time (see [`Limit`]); None if unset.
fn bucket(class: &'static str, limit: &Limit, arrival_ns: u64, now: u64) -> Option<Bucket> {
    if !limit.is_set() {
        return None;
    }
    let interval = limit.interval_ns;
    let backlog = arrival_ns.saturating_sub(now);
    let available = if backlog > limit.tolerance_ns {
        0
    } else {
        (limit.tolerance_ns - backlog) / interval + 1
    };
    Some(Bucket {
        class,
        rate: 1_000_000_000 / interval,
        burst: limit.tolerance_ns / interval + 1,
        available,
        admits_in: Duration::from_nanos(backlog.saturating_sub(limit.tolerance_ns)),
        full_in: Duration::from_nanos(backlog),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_read_as_gcra_admits() {
        let limit = Limit::new(10, 5); // 100 ms apart, 400 ms of tolerance
        let now = 10_000_000_000;
        let full = bucket("register", &limit, 0, now).unwrap();
        assert_eq!((full.rate, full.burst, full.available), (10, 5, 5));
        assert_eq!(full.full_in, Duration::ZERO);
        // Two admitted just now: three left, full in 200 ms.
        let two = bucket("register", &limit, now + 200_000_000, now).unwrap();
        assert_eq!(two.available, 3);
        assert_eq!(two.full_in, Duration::from_millis(200));
        // Five at once and two more tried: empty, admits again in 100 ms.
        let empty = bucket("register", &limit, now + 500_000_000, now).unwrap();
        assert_eq!(empty.available, 0);
        assert_eq!(empty.admits_in, Duration::from_millis(100));
        assert!(bucket("register", &Limit::NONE, 0, now).is_none());
    }
}
