//! Drops by source, as the kernel counts them, for `sip-filter top`: per source key in
//! its LRU state (`SOURCE_DROP_REASONS`: scanner, unknown domain, rate limit, global
//! budget, connection rate and budget, TLS refusals) and in its ban (banned), per
//! deny entry (denied).

use std::{
    collections::{BTreeMap, HashMap as StdHashMap},
    path::Path,
};

use aya::maps::{HashMap, Map, MapData};
use sip_filter_common::{
    maps::{names, BanReason, SourceKey, SourceState, LIST_ORIGIN_COUNTRY, SOURCE_DROP_REASONS},
    Reason,
};

use crate::{
    countries::Country,
    filter::{key_to_string, FilterError, PinnedBans},
    lists::{origin_name, ListKind, PinnedList},
};

/// A source (an address, an IPv6 prefix, a denied network, or a denied country: all
/// its networks) and its drops.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceDrops {
    pub source: String,
    /// Packets dropped, by reason; only reasons with drops, most first.
    pub reasons: Vec<(Reason, u64)>,
    /// Why it is banned, if it is.
    pub ban: Option<BanReason>,
    /// For a denied network: `config`, `operator`, `crowdsec` or `country`.
    pub denied_by: Option<&'static str>,
}

impl SourceDrops {
    pub fn total(&self) -> u64 {
        self.reasons.iter().map(|(_, n)| n).sum()
    }
}

/// The sources with drops on the filter pinned in `dir`, most dropped first.
pub fn pinned_source_drops(dir: &Path) -> Result<Vec<SourceDrops>, FilterError> {
    let map_error = |source| FilterError::Map {
        name: names::SOURCES,
        source,
    };
    let bans = PinnedBans::open(dir)?;
    let prefix = bans.ipv6_prefix();
    let data = MapData::from_pin(dir.join(names::SOURCES)).map_err(map_error)?;
    let sources: HashMap<MapData, SourceKey, SourceState> =
        HashMap::try_from(Map::from_map_data(data).map_err(map_error)?).map_err(map_error)?;

    let mut by_key: StdHashMap<SourceKey, SourceDrops> = StdHashMap::new();
    let entry = |by_key: &mut StdHashMap<SourceKey, SourceDrops>, key: SourceKey| {
        by_key.entry(key).or_insert_with(|| SourceDrops {
            source: key_to_string(key, prefix),
            reasons: Vec::new(),
            ban: None,
            denied_by: None,
        });
    };
    for item in sources.iter() {
        // The LRU map may drop an entry while we walk it: skip what vanished.
        let Ok((key, state)) = item else { continue };
        if state.drops.iter().all(|n| *n == 0) {
            continue;
        }
        entry(&mut by_key, key);
        if let Some(found) = by_key.get_mut(&key) {
            for (reason, n) in SOURCE_DROP_REASONS.iter().zip(state.drops) {
                if n > 0 {
                    found.reasons.push((*reason, n));
                }
            }
        }
    }
    for (key, ban) in bans.list()? {
        if ban.drops == 0 && !by_key.contains_key(&key) {
            continue;
        }
        entry(&mut by_key, key);
        if let Some(found) = by_key.get_mut(&key) {
            found.ban = Some(BanReason::from_u32(ban.reason));
            if ban.drops > 0 {
                found.reasons.push((Reason::DropBanned, ban.drops));
            }
        }
    }
    let mut all: Vec<SourceDrops> = by_key.into_values().collect();
    // A denied country's networks are one row: the country.
    let mut countries: BTreeMap<Country, u64> = BTreeMap::new();
    for (net, entry) in PinnedList::open(dir, ListKind::Deny)?.entries()? {
        if let Some(country) = Country::of_entry(&entry) {
            *countries.entry(country).or_default() += entry.drops;
        } else if entry.drops > 0 {
            all.push(SourceDrops {
                source: net.to_string(),
                reasons: vec![(Reason::DropDenied, entry.drops)],
                ban: None,
                denied_by: Some(origin_name(entry.origin)),
            });
        }
    }
    for (country, drops) in countries {
        all.push(SourceDrops {
            source: format!("country {country}"),
            reasons: vec![(Reason::DropDenied, drops)],
            ban: None,
            denied_by: Some(origin_name(LIST_ORIGIN_COUNTRY)),
        });
    }
    for source in &mut all {
        source.reasons.sort_by_key(|(_, n)| std::cmp::Reverse(*n));
    }
    all.retain(|source| source.total() > 0);
    all.sort_by(|a, b| b.total().cmp(&a.total()).then(a.source.cmp(&b.source)));
    Ok(all)
}
