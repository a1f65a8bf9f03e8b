//! The allow and deny lists (CIDR tries, one per address family) of a running filter,
//! as the `block` and `allow` verbs edit them: entries from the configuration file and
//! entries operators add at run time, with their expiry ([`ListEntry`]).

use std::{
    net::{Ipv4Addr, Ipv6Addr},
    path::Path,
};

use aya::maps::{lpm_trie::Key, IterableMap, LpmTrie, Map, MapData, MapError};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use sip_filter_common::maps::{
    names, ListEntry, LIST_ORIGIN_CONFIG, LIST_ORIGIN_COUNTRY, LIST_ORIGIN_CROWDSEC,
    LIST_ORIGIN_OPERATOR,
};

use crate::{bpf_sys, filter::FilterError};

/// Which list: trusted sources, or sources whose SIP traffic is always dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ListKind {
    Allow,
    Deny,
}

impl ListKind {
    pub fn name(self) -> &'static str {
        match self {
            ListKind::Allow => "allow",
            ListKind::Deny => "deny",
        }
    }

    /// The IPv4 and IPv6 tries' map names.
    pub fn map_names(self) -> (&'static str, &'static str) {
        match self {
            ListKind::Allow => (names::ALLOW_V4, names::ALLOW_V6),
            ListKind::Deny => (names::DENY_V4, names::DENY_V6),
        }
    }
}

/// How an entry's origin reads in `block list`, `allow list` and `top`.
pub fn origin_name(origin: u32) -> &'static str {
    match origin {
        LIST_ORIGIN_CONFIG => "config",
        LIST_ORIGIN_OPERATOR => "operator",
        LIST_ORIGIN_CROWDSEC => "crowdsec",
        LIST_ORIGIN_COUNTRY => "country",
        _ => "unknown",
    }
}

pub fn v4_key(net: Ipv4Net) -> Key<[u8; 4]> {
    Key::new(u32::from(net.prefix_len()), net.network().octets())
}

pub fn v6_key(net: Ipv6Net) -> Key<[u8; 16]> {
    Key::new(u32::from(net.prefix_len()), net.network().octets())
}

fn v4_net(key: &Key<[u8; 4]>) -> Option<IpNet> {
    Ipv4Net::new(Ipv4Addr::from(key.data()), key.prefix_len() as u8)
        .ok()
        .map(IpNet::V4)
}

fn v6_net(key: &Key<[u8; 16]>) -> Option<IpNet> {
    Ipv6Net::new(Ipv6Addr::from(key.data()), key.prefix_len() as u8)
        .ok()
        .map(IpNet::V6)
}

/// One list of a running filter, opened from its pins.
pub struct PinnedList {
    kind: ListKind,
    v4: LpmTrie<MapData, [u8; 4], ListEntry>,
    v6: LpmTrie<MapData, [u8; 16], ListEntry>,
}

fn open_trie<K: aya::Pod>(
    dir: &Path,
    name: &'static str,
) -> Result<LpmTrie<MapData, K, ListEntry>, FilterError> {
    let map_error = |source| FilterError::Map { name, source };
    let data = MapData::from_pin(dir.join(name)).map_err(map_error)?;
    LpmTrie::try_from(Map::from_map_data(data).map_err(map_error)?).map_err(map_error)
}

fn syscall_error(name: &'static str, call: &'static str, io_error: std::io::Error) -> FilterError {
    FilterError::Map {
        name,
        source: MapError::SyscallError(aya::sys::SyscallError { call, io_error }),
    }
}

/// Does `trie` hold exactly `key`? An LPM lookup would also answer for a shorter prefix
/// covering it; `BPF_MAP_GET_NEXT_KEY` from a key the trie lacks returns the first key,
/// and from one it holds, the one after it.
fn holds_exactly<K: aya::Pod + PartialEq>(
    trie: &LpmTrie<MapData, K, ListEntry>,
    name: &'static str,
    key: &Key<K>,
) -> Result<bool, FilterError> {
    let fd = trie_fd(trie);
    let error = |e| syscall_error(name, "bpf_map_get_next_key", e);
    let Some(first) = bpf_sys::next_key::<Key<K>>(fd, None).map_err(error)? else {
        return Ok(false); // empty
    };
    let same = |a: &Key<K>, b: &Key<K>| a.prefix_len() == b.prefix_len() && a.data() == b.data();
    if same(&first, key) {
        return Ok(true);
    }
    Ok(match bpf_sys::next_key(fd, Some(key)).map_err(error)? {
        None => true, // the last key
        Some(next) => !same(&next, &first),
    })
}

/// The trie's file descriptor (aya's `LpmTrie` hands its map out through `IterableMap`).
fn trie_fd<K: aya::Pod>(trie: &LpmTrie<MapData, K, ListEntry>) -> std::os::fd::BorrowedFd<'_> {
    use std::os::fd::AsFd;
    aya::maps::IterableMap::<Key<K>, ListEntry>::map(trie)
        .fd()
        .as_fd()
}

/// The entry stored exactly at `key`, if there is one.
fn exact<K: aya::Pod + PartialEq>(
    trie: &LpmTrie<MapData, K, ListEntry>,
    name: &'static str,
    key: &Key<K>,
) -> Result<Option<ListEntry>, FilterError> {
    if !holds_exactly(trie, name, key)? {
        return Ok(None);
    }
    // It holds the key, so the longest match is that entry.
    match trie.get(key, 0) {
        Ok(entry) => Ok(Some(entry)),
        Err(MapError::KeyNotFound) => Ok(None),
        Err(source) => Err(FilterError::Map { name, source }),
    }
}

impl PinnedList {
    /// Opens the `kind` list pinned in `dir`.
    pub fn open(dir: &Path, kind: ListKind) -> Result<Self, FilterError> {
        let (v4_name, v6_name) = kind.map_names();
        Ok(Self {
            kind,
            v4: open_trie(dir, v4_name)?,
            v6: open_trie(dir, v6_name)?,
        })
    }

    pub fn kind(&self) -> ListKind {
        self.kind
    }

    /// The entry stored for exactly `net` (not a network covering it).
    pub fn get(&self, net: IpNet) -> Result<Option<ListEntry>, FilterError> {
        let (v4_name, v6_name) = self.kind.map_names();
        match net.trunc() {
            IpNet::V4(net) => exact(&self.v4, v4_name, &v4_key(net)),
            IpNet::V6(net) => exact(&self.v6, v6_name, &v6_key(net)),
        }
    }

    /// Stores `entry` for `net`, replacing what was there.
    pub fn insert(&mut self, net: IpNet, entry: ListEntry) -> Result<(), FilterError> {
        let (v4_name, v6_name) = self.kind.map_names();
        match net.trunc() {
            IpNet::V4(net) => {
                self.v4
                    .insert(&v4_key(net), entry, 0)
                    .map_err(|source| FilterError::Map {
                        name: v4_name,
                        source,
                    })
            }
            IpNet::V6(net) => {
                self.v6
                    .insert(&v6_key(net), entry, 0)
                    .map_err(|source| FilterError::Map {
                        name: v6_name,
                        source,
                    })
            }
        }
    }

    /// Removes exactly `net`; false if it was not there.
    pub fn remove(&mut self, net: IpNet) -> Result<bool, FilterError> {
        let (v4_name, v6_name) = self.kind.map_names();
        let (result, name) = match net.trunc() {
            IpNet::V4(net) => (self.v4.remove(&v4_key(net)), v4_name),
            IpNet::V6(net) => (self.v6.remove(&v6_key(net)), v6_name),
        };
        match result {
            Ok(()) => Ok(true),
            Err(MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::ENOENT) => {
                Ok(false)
            }
            Err(source) => Err(FilterError::Map { name, source }),
        }
    }

    /// Every entry, IPv4 first, each family sorted by network. Read in batches.
    pub fn entries(&self) -> Result<Vec<(IpNet, ListEntry)>, FilterError> {
        let (v4_name, v6_name) = self.kind.map_names();
        let v4: Vec<(Key<[u8; 4]>, ListEntry)> = bpf_sys::entries(IterableMap::map(&self.v4))
            .map_err(|source| FilterError::Map {
                name: v4_name,
                source,
            })?;
        let v6: Vec<(Key<[u8; 16]>, ListEntry)> = bpf_sys::entries(IterableMap::map(&self.v6))
            .map_err(|source| FilterError::Map {
                name: v6_name,
                source,
            })?;
        let mut entries: Vec<(IpNet, ListEntry)> = v4
            .iter()
            .filter_map(|(key, entry)| Some((v4_net(key)?, *entry)))
            .chain(
                v6.iter()
                    .filter_map(|(key, entry)| Some((v6_net(key)?, *entry))),
            )
            .collect();
        entries.sort_unstable_by_key(|(net, _)| *net);
        Ok(entries)
    }

    /// How many entries the list holds (both families).
    pub fn count(&self) -> Result<usize, FilterError> {
        Ok(self.entries()?.len())
    }

    /// Removes operator and CrowdSec entries that expired before `now_ns` (the kernel
    /// already ignores them); the configuration's entries never expire. Returns how many
    /// went.
    pub fn sweep_expired(&mut self, now_ns: u64) -> Result<usize, FilterError> {
        let expired: Vec<IpNet> = self
            .entries()?
            .into_iter()
            .filter(|(_, entry)| entry.origin != LIST_ORIGIN_CONFIG && !entry.is_live(now_ns))
            .map(|(net, _)| net)
            .collect();
        self.remove_many(&expired)
    }

    /// Removes exactly these networks, in batches; returns how many were there.
    pub fn remove_many(&mut self, nets: &[IpNet]) -> Result<usize, FilterError> {
        let (v4_name, v6_name) = self.kind.map_names();
        let mut v4 = Vec::new();
        let mut v6 = Vec::new();
        for net in nets {
            match net.trunc() {
                IpNet::V4(net) => v4.push(v4_key(net)),
                IpNet::V6(net) => v6.push(v6_key(net)),
            }
        }
        let removed_v4 =
            bpf_sys::delete_many(IterableMap::map(&self.v4), &v4).map_err(|source| {
                FilterError::Map {
                    name: v4_name,
                    source,
                }
            })?;
        let removed_v6 =
            bpf_sys::delete_many(IterableMap::map(&self.v6), &v6).map_err(|source| {
                FilterError::Map {
                    name: v6_name,
                    source,
                }
            })?;
        Ok(removed_v4 + removed_v6)
    }
}
