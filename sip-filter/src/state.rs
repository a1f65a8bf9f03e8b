//! The state file: what a restart must not lose. The dynamic bans (the filter's own and
//! the operator's) and the allow/deny entries an operator added at run time live only
//! in the kernel's maps; the daemon saves them to `STATE_DIR/state.json` periodically
//! and when it stops, and loads them back into the fresh maps when it starts.
//!
//! Kernel expiries are `CLOCK_MONOTONIC_COARSE` nanoseconds, which restart from zero at
//! boot: the file holds wall-clock expiries (Unix milliseconds) instead, converted with
//! one reading of both clocks. The file is written to a temporary name and renamed, so
//! a crash leaves the old file or the new one, never half of one.

use std::{
    io::Write as _,
    net::IpAddr,
    path::{Path, PathBuf},
    time::{SystemTime, UNIX_EPOCH},
};

use aya::maps::{lpm_trie::Key, HashMap, LpmTrie, Map, MapData};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use sip_filter_common::maps::{
    names, Ban, BanReason, ListEntry, SourceKey, LIST_ORIGIN_CONFIG, LIST_ORIGIN_OPERATOR,
};

use crate::{
    filter::{key_to_string, monotonic_now_ns, Filter, FilterError},
    lists::{v4_key, v6_key},
};

/// The file's name inside the state directory.
pub const FILE_NAME: &str = "state.json";
/// The layout version written; a file of another version is set aside, not misread.
const VERSION: u32 = 1;

/// What survives a restart.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    pub version: u32,
    /// When it was taken (Unix ms), for the operator reading the file.
    pub saved_at_unix_ms: u64,
    /// Every unexpired dynamic ban, whoever made it.
    pub bans: Vec<SavedBan>,
    /// Allow and deny entries an operator added at run time (the configuration's own
    /// come from the configuration file).
    pub allow: Vec<SavedEntry>,
    pub deny: Vec<SavedEntry>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedBan {
    /// An IPv4 address, or an IPv6 prefix (`2001:db8:5f:1::/64`).
    pub source: String,
    /// A [`BanReason`] name.
    pub reason: String,
    /// Unix ms; None: until removed.
    pub expires_unix_ms: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedEntry {
    /// A network in CIDR notation.
    pub net: String,
    /// A [`BanReason`] name (manual or feed for deny entries).
    pub reason: String,
    /// Unix ms; None: until removed.
    pub expires_unix_ms: Option<u64>,
}

/// What [`restore`] put back.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Restored {
    pub bans: usize,
    pub allow: usize,
    pub deny: usize,
    /// Expired since the file was written, or unreadable: left out.
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
        // Rounded up: a ban never ends earlier for having been saved.
        Some(Some(
            self.unix_ms.saturating_add(left_ns.div_ceil(1_000_000)),
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
    /// or pinned ones: see [`pinned_maps`]).
    pub fn take(
        maps: &StateMaps<'_>,
        ipv6_prefix: u32,
        clocks: Clocks,
    ) -> Result<Self, FilterError> {
        let map_error = |name| move |source| FilterError::Map { name, source };
        let bans: HashMap<&MapData, SourceKey, Ban> =
            HashMap::try_from(maps.bans).map_err(map_error(names::BANS))?;
        let mut state = State {
            version: VERSION,
            saved_at_unix_ms: clocks.unix_ms,
            ..State::default()
        };
        for (key, ban) in bans.iter().filter_map(Result::ok) {
            if let Some(expires_unix_ms) = clocks.to_wall(ban.expires_ns) {
                state.bans.push(SavedBan {
                    source: key_to_string(key, ipv6_prefix),
                    reason: BanReason::from_u32(ban.reason).name().to_string(),
                    expires_unix_ms,
                });
            }
        }
        state.bans.sort_by(|a, b| a.source.cmp(&b.source));
        for (list, v4, v6, v4_name, v6_name) in [
            (
                &mut state.allow,
                maps.allow_v4,
                maps.allow_v6,
                names::ALLOW_V4,
                names::ALLOW_V6,
            ),
            (
                &mut state.deny,
                maps.deny_v4,
                maps.deny_v6,
                names::DENY_V4,
                names::DENY_V6,
            ),
        ] {
            operator_entries::<[u8; 4]>(v4, v4_name, clocks, list)?;
            operator_entries::<[u8; 16]>(v6, v6_name, clocks, list)?;
        }
        Ok(state)
    }

    /// Reads the file; None when there is none (a first start).
    pub fn load(path: &Path) -> Result<Option<State>, StateError> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(StateError::Read {
                    path: path.to_path_buf(),
                    source,
                })
            }
        };
        let corrupt = |reason: String| StateError::Corrupt {
            path: path.to_path_buf(),
            reason,
        };
        let state: State = serde_json::from_str(&text).map_err(|e| corrupt(e.to_string()))?;
        if state.version != VERSION {
            return Err(corrupt(format!(
                "version {}, expected {VERSION}",
                state.version
            )));
        }
        Ok(Some(state))
    }

    /// Writes the file atomically: a temporary file, flushed, renamed over the old one.
    pub fn save(&self, path: &Path) -> Result<(), StateError> {
        let error = |source| StateError::Write {
            path: path.to_path_buf(),
            source,
        };
        let json = serde_json::to_vec_pretty(self).map_err(|e| error(e.into()))?;
        write_atomically(path, &json).map_err(error)
    }

    /// Adds `newer`'s entries; where both hold a source or network, `newer`'s wins.
    pub fn extend(&mut self, newer: State) {
        fn merge<T>(old: &mut Vec<T>, newer: Vec<T>, key: impl Fn(&T) -> &str) {
            let replaced: std::collections::HashSet<String> =
                newer.iter().map(|item| key(item).to_string()).collect();
            old.retain(|item| !replaced.contains(key(item)));
            old.extend(newer);
        }
        merge(&mut self.bans, newer.bans, |ban| &ban.source);
        merge(&mut self.allow, newer.allow, |entry| &entry.net);
        merge(&mut self.deny, newer.deny, |entry| &entry.net);
    }

    pub fn is_empty(&self) -> bool {
        self.bans.is_empty() && self.allow.is_empty() && self.deny.is_empty()
    }
}

/// Writes `bytes` to `path` through a temporary file in the same directory, renamed over
/// it once flushed to disk (the directory too), so readers see the old or the new file.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
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

/// Sets a state file that cannot be read aside as `state.json.corrupt-UNIXTIME`, so
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
/// IPv6 prefix keys the bans). Expired entries are left out; an operator entry on a
/// network the configuration lists already is left to the configuration.
pub fn restore(
    filter: &mut Filter,
    state: &State,
    clocks: Clocks,
) -> Result<Restored, FilterError> {
    let mut restored = Restored::default();
    for ban in &state.bans {
        let (Some(address), Some(expires_ns)) = (
            parse_source(&ban.source),
            clocks.to_kernel(ban.expires_unix_ms),
        ) else {
            restored.skipped += 1;
            continue;
        };
        let key = filter.source_key(address);
        filter.set_ban(key, expires_ns, reason_named(&ban.reason))?;
        restored.bans += 1;
    }
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
            let (Ok(net), Some(expires_ns)) = (
                entry.net.parse::<IpNet>(),
                clocks.to_kernel(entry.expires_unix_ms),
            ) else {
                restored.skipped += 1;
                continue;
            };
            let value = ListEntry::from_operator(expires_ns, reason_named(&entry.reason) as u32);
            match net.trunc() {
                IpNet::V4(net) => v4.push((v4_key(net), value)),
                IpNet::V6(net) => v6.push((v6_key(net), value)),
            }
        }
        let (put_v4, left_v4) = put_operator_entries(filter.map_mut(v4_name)?, v4_name, &v4)?;
        let (put_v6, left_v6) = put_operator_entries(filter.map_mut(v6_name)?, v6_name, &v6)?;
        *count += put_v4 + put_v6;
        restored.skipped += left_v4 + left_v6;
    }
    Ok(restored)
}

/// The maps a [`State`] is read from.
pub struct StateMaps<'a> {
    pub bans: &'a Map,
    pub allow_v4: &'a Map,
    pub allow_v6: &'a Map,
    pub deny_v4: &'a Map,
    pub deny_v6: &'a Map,
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
        })
    }
}

/// The state maps pinned in `maps_dir`, in [`StateMaps`] order: what a daemon that did
/// not stop cleanly left, for its successor to take over.
pub fn pinned_maps(maps_dir: &Path) -> Result<[Map; 5], FilterError> {
    let open = |name: &'static str| -> Result<Map, FilterError> {
        let map_error = |source| FilterError::Map { name, source };
        let data = MapData::from_pin(maps_dir.join(name)).map_err(map_error)?;
        Map::from_map_data(data).map_err(map_error)
    };
    Ok([
        open(names::BANS)?,
        open(names::ALLOW_V4)?,
        open(names::ALLOW_V6)?,
        open(names::DENY_V4)?,
        open(names::DENY_V6)?,
    ])
}

impl<'a> From<&'a [Map; 5]> for StateMaps<'a> {
    fn from([bans, allow_v4, allow_v6, deny_v4, deny_v6]: &'a [Map; 5]) -> Self {
        Self {
            bans,
            allow_v4,
            allow_v6,
            deny_v4,
            deny_v6,
        }
    }
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
    let trie: LpmTrie<&MapData, K, ListEntry> =
        LpmTrie::try_from(map).map_err(|source| FilterError::Map { name, source })?;
    for (key, entry) in trie.iter().filter_map(Result::ok) {
        if entry.origin != LIST_ORIGIN_OPERATOR {
            continue;
        }
        let Some(expires_unix_ms) = clocks.to_wall(entry.expires_ns) else {
            continue;
        };
        let address: IpAddr = key.data().into().0;
        let Ok(net) = IpNet::new(address, key.prefix_len() as u8) else {
            continue;
        };
        out.push(SavedEntry {
            net: net.to_string(),
            reason: BanReason::from_u32(entry.reason).name().to_string(),
            expires_unix_ms,
        });
    }
    Ok(())
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

/// Inserts operator entries into a trie, except on networks the configuration lists
/// itself (its entry stays the configuration's); returns how many were put and left.
fn put_operator_entries<K: aya::Pod + Eq + std::hash::Hash>(
    map: &mut Map,
    name: &'static str,
    entries: &[(Key<K>, ListEntry)],
) -> Result<(usize, usize), FilterError> {
    let map_error = |source| FilterError::Map { name, source };
    let mut trie: LpmTrie<&mut MapData, K, ListEntry> =
        LpmTrie::try_from(map).map_err(map_error)?;
    let configured: std::collections::HashSet<(u32, K)> = trie
        .iter()
        .filter_map(Result::ok)
        .filter(|(_, entry)| entry.origin == LIST_ORIGIN_CONFIG)
        .map(|(key, _)| (key.prefix_len(), key.data()))
        .collect();
    let mut put = 0;
    for (key, value) in entries {
        if configured.contains(&(key.prefix_len(), key.data())) {
            continue;
        }
        trie.insert(key, value, 0).map_err(map_error)?;
        put += 1;
    }
    Ok((put, entries.len() - put))
}

/// `198.18.0.1` or `2001:db8:5f:1::/64` (as [`key_to_string`] writes them).
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
            version: VERSION,
            saved_at_unix_ms: CLOCKS.unix_ms,
            bans: vec![SavedBan {
                source: "2001:db8:5f:1::/64".into(),
                reason: "scanner".into(),
                expires_unix_ms: Some(CLOCKS.unix_ms + 1000),
            }],
            allow: vec![],
            deny: vec![SavedEntry {
                net: "192.0.2.0/24".into(),
                reason: "feed".into(),
                expires_unix_ms: None,
            }],
        };
        state.save(&path).unwrap();
        assert_eq!(State::load(&path).unwrap(), Some(state.clone()));
        assert!(!dir.join("state.json.tmp").exists());

        std::fs::write(&path, "{\"version\": 1, \"bans\": [").unwrap();
        let error = State::load(&path).unwrap_err();
        assert!(matches!(error, StateError::Corrupt { .. }), "{error}");
        let aside = set_aside(&path).unwrap();
        assert!(!path.exists() && aside.exists());
        assert!(aside.to_string_lossy().contains("state.json.corrupt-"));

        let mut future = state;
        future.version = 99;
        future.save(&path).unwrap();
        assert!(State::load(&path)
            .unwrap_err()
            .to_string()
            .contains("version 99"));
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
