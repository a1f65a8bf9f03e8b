//! Source countries (`[countries]`): the networks of denied countries, read from a
//! MaxMind-format country database (GeoLite2 Country, DB-IP Country Lite) and compiled
//! into the kernel's deny tries as entries of origin [`LIST_ORIGIN_COUNTRY`], each
//! tagged with its country so that drops are counted by country. Only these entries are
//! replaced when the database or the table changes; the configuration's, operators' and
//! CrowdSec's stay, and a network one of them already holds is left to it.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    fmt,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use aya::maps::{lpm_trie::Key, MapData, MapError};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use maxminddb::{PathElement, Reader, WithinOptions};
use sip_filter_common::maps::{country_code, ListEntry, LIST_ORIGIN_COUNTRY, MAX_LIST_ENTRIES};

use crate::{
    bpf_sys,
    filter::{Filter, FilterError},
    lists::{v4_key, v6_key},
};

/// A country, by its ISO 3166-1 alpha-2 code (upper case).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Country(pub [u8; 2]);

impl fmt::Display for Country {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.0[0] as char, self.0[1] as char)
    }
}

impl Country {
    /// The country of a [`ListEntry::reason`] of origin [`LIST_ORIGIN_COUNTRY`].
    pub fn of_entry(entry: &ListEntry) -> Option<Country> {
        (entry.origin == LIST_ORIGIN_COUNTRY).then(|| Country(country_code(entry.reason)))
    }

    /// An assigned ISO 3166-1 alpha-2 code, in either case (`de`, `DE`), or why not.
    pub fn parse(text: &str) -> Result<Country, String> {
        let upper = text.to_ascii_uppercase();
        if upper == "UK" {
            return Err(format!(
                "{text:?} is not an ISO 3166 country code: the United Kingdom is GB"
            ));
        }
        match all_countries().find(|country| country.0 == upper.as_bytes()) {
            Some(country) => Ok(country),
            None => Err(format!(
                "{text:?} is not an ISO 3166-1 alpha-2 country code (two letters, like DE, US or CN)"
            )),
        }
    }
}

/// Every country a code can name ([`ASSIGNED`]), in alphabetical order.
pub fn all_countries() -> impl Iterator<Item = Country> {
    ASSIGNED
        .split(' ')
        .filter_map(|code| match code.as_bytes() {
            [a, b] => Some(Country([*a, *b])),
            _ => None,
        })
}

/// The assigned ISO 3166-1 alpha-2 codes, and XK (Kosovo), which MaxMind and DB-IP use.
const ASSIGNED: &str = "AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ BA BB BD BE BF BG BH BI \
BJ BL BM BN BO BQ BR BS BT BV BW BY BZ CA CC CD CF CG CH CI CK CL CM CN CO CR CU CV CW CX CY CZ \
DE DJ DK DM DO DZ EC EE EG EH ER ES ET FI FJ FK FM FO FR GA GB GD GE GF GG GH GI GL GM GN GP GQ \
GR GS GT GU GW GY HK HM HN HR HT HU ID IE IL IM IN IO IQ IR IS IT JE JM JO JP KE KG KH KI KM KN \
KP KR KW KY KZ LA LB LC LI LK LR LS LT LU LV LY MA MC MD ME MF MG MH MK ML MM MN MO MP MQ MR MS \
MT MU MV MW MX MY MZ NA NC NE NF NG NI NL NO NP NR NU NZ OM PA PE PF PG PH PK PL PM PN PR PS PT \
PW PY QA RE RO RS RU RW SA SB SC SD SE SG SH SI SJ SK SL SM SN SO SR SS ST SV SX SY SZ TC TD TF \
TG TH TJ TK TL TM TN TO TR TT TV TW TZ UA UG UM US UY UZ VA VC VE VG VI VN VU WF WS XK YE YT ZA \
ZM ZW";

/// The `[countries]` table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CountrySettings {
    /// The MaxMind-format country database the operator keeps up to date.
    pub database: PathBuf,
    /// Countries whose sources are dropped.
    pub deny: Vec<Country>,
    /// If not empty: only these countries' sources (and those the database places in
    /// no country) may reach the server; every other country is denied.
    pub allow: Vec<Country>,
}

impl CountrySettings {
    /// Whether the database's `country` is denied.
    fn denies(&self, country: Country) -> bool {
        self.deny.contains(&country) || (!self.allow.is_empty() && !self.allow.contains(&country))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CountryError {
    #[error("the country database {} cannot be read: {source} (a GeoLite2 Country or DB-IP Country Lite .mmdb file is expected: README.md, \"Source countries\")", path.display())]
    Unreadable {
        path: PathBuf,
        source: maxminddb::MaxMindDbError,
    },
    #[error("the country database {} (type {kind:?}) places no network in a country: is it a country database? (README.md, \"Source countries\")", path.display())]
    NoCountries { path: PathBuf, kind: String },
    #[error("the denied countries have {count} IPv{family} networks beside the deny list's {others} other entries, more than the {MAX_LIST_ENTRIES} it holds: deny fewer countries")]
    TooMany {
        family: u8,
        count: usize,
        others: usize,
    },
    #[error("writing the country entries into {name}: {source}")]
    Map {
        name: &'static str,
        source: MapError,
    },
    #[error("recording the country entries in {}: {source}", path.display())]
    Index {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Filter(#[from] FilterError),
}

/// The networks of the denied countries, as the database has them (networks of one
/// country that are siblings are merged).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CountryNetworks {
    pub v4: Vec<(Ipv4Net, Country)>,
    pub v6: Vec<(Ipv6Net, Country)>,
    /// The listed countries the database has no network for (a typo, or a database
    /// of another vendor's codes).
    pub missing: Vec<Country>,
    /// The database's networks (all countries), and how long reading it took.
    pub database_networks: usize,
    pub read_time: Duration,
}

impl CountryNetworks {
    /// Networks of each denied country.
    pub fn per_country(&self) -> BTreeMap<Country, usize> {
        let mut counts = BTreeMap::new();
        let countries = self
            .v4
            .iter()
            .map(|(_, c)| c)
            .chain(self.v6.iter().map(|(_, c)| c));
        for country in countries {
            *counts.entry(*country).or_insert(0) += 1;
        }
        counts
    }
}

/// Reads the networks `settings` deny from its database.
pub fn read(settings: &CountrySettings) -> Result<CountryNetworks, CountryError> {
    let start = Instant::now();
    let path = &settings.database;
    let unreadable = |source| CountryError::Unreadable {
        path: path.clone(),
        source,
    };
    let reader = Reader::open_readfile(path).map_err(unreadable)?;
    // Many networks share a record: decode each record once.
    let mut country_at: HashMap<usize, Option<Country>> = HashMap::new();
    let mut denied: BTreeMap<Country, Vec<IpNet>> = BTreeMap::new();
    let mut seen: HashSet<Country> = HashSet::new();
    let mut database_networks = 0;
    for item in reader
        .networks(WithinOptions::default())
        .map_err(unreadable)?
    {
        let network = item.map_err(unreadable)?;
        let Some(offset) = network.offset() else {
            continue;
        };
        let country = match country_at.get(&offset) {
            Some(country) => *country,
            None => {
                let code: Option<&str> = network
                    .decode_path(&[PathElement::Key("country"), PathElement::Key("iso_code")])
                    .map_err(unreadable)?;
                let country = code.and_then(|code| Country::parse(code).ok());
                country_at.insert(offset, country);
                country
            }
        };
        let Some(country) = country else { continue };
        database_networks += 1;
        seen.insert(country);
        if !settings.denies(country) {
            continue;
        }
        let found = network.network().map_err(unreadable)?;
        if let Ok(net) = IpNet::new(found.network(), found.prefix()) {
            denied.entry(country).or_default().push(net);
        }
    }
    if seen.is_empty() {
        return Err(CountryError::NoCountries {
            path: path.clone(),
            kind: reader.metadata().database_type.clone(),
        });
    }
    let listed = settings.deny.iter().chain(&settings.allow);
    let missing = listed.filter(|c| !seen.contains(c)).copied().collect();
    let (mut v4, mut v6) = (Vec::new(), Vec::new());
    for (country, nets) in denied {
        for net in IpNet::aggregate(&nets) {
            match net {
                IpNet::V4(net) => v4.push((net, country)),
                IpNet::V6(net) => v6.push((net, country)),
            }
        }
    }
    Ok(CountryNetworks {
        v4,
        v6,
        missing,
        database_networks,
        read_time: start.elapsed(),
    })
}

/// What [`write`] changed in the deny tries.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Written {
    pub added: usize,
    pub removed: usize,
    /// Networks another origin (configuration, operator, CrowdSec) already holds.
    pub held_by_others: usize,
}

/// Makes the country entries of the deny tries `deny_v4` and `deny_v6` (named for
/// errors) exactly `networks`: new ones go in before stale ones leave, so no network
/// stays undenied in between; unchanged ones keep their drop counts. Nothing is written
/// if the networks would not fit.
pub fn write(
    deny_v4: (&'static str, &MapData),
    deny_v6: (&'static str, &MapData),
    networks: &CountryNetworks,
) -> Result<Written, CountryError> {
    let v4: Vec<(Key<[u8; 4]>, Country)> = networks
        .v4
        .iter()
        .map(|(net, country)| (v4_key(*net), *country))
        .collect();
    let v6: Vec<(Key<[u8; 16]>, Country)> = networks
        .v6
        .iter()
        .map(|(net, country)| (v6_key(*net), *country))
        .collect();
    let plan_v4 = plan(deny_v4, &v4, 4)?;
    let plan_v6 = plan(deny_v6, &v6, 6)?;
    let v4_written = apply(deny_v4, plan_v4)?;
    let v6_written = apply(deny_v6, plan_v6)?;
    Ok(Written {
        added: v4_written.added + v6_written.added,
        removed: v4_written.removed + v6_written.removed,
        held_by_others: v4_written.held_by_others + v6_written.held_by_others,
    })
}

/// The changes that make one trie's country entries `wanted`.
struct Plan<K> {
    insert: Vec<(Key<K>, ListEntry)>,
    remove: Vec<Key<K>>,
    held_by_others: usize,
}

fn plan<K: aya::Pod + Eq + std::hash::Hash>(
    (name, map): (&'static str, &MapData),
    wanted: &[(Key<K>, Country)],
    family: u8,
) -> Result<Plan<K>, CountryError> {
    let map_error = |source| CountryError::Map { name, source };
    let present: Vec<(Key<K>, ListEntry)> = bpf_sys::entries(map).map_err(map_error)?;
    let by_key: HashMap<(u32, K), ListEntry> = present
        .iter()
        .map(|(key, entry)| ((key.prefix_len(), key.data()), *entry))
        .collect();
    let others = present
        .iter()
        .filter(|(_, entry)| entry.origin != LIST_ORIGIN_COUNTRY)
        .count();
    if others + wanted.len() > MAX_LIST_ENTRIES as usize {
        return Err(CountryError::TooMany {
            family,
            count: wanted.len(),
            others,
        });
    }
    let mut held_by_others = 0;
    let mut insert = Vec::new();
    for (key, country) in wanted {
        match by_key.get(&(key.prefix_len(), key.data())) {
            Some(entry) if entry.origin != LIST_ORIGIN_COUNTRY => held_by_others += 1,
            Some(entry) if Country::of_entry(entry) == Some(*country) => {}
            _ => insert.push((*key, ListEntry::from_country(country.0))),
        }
    }
    let wanted: HashSet<(u32, K)> = wanted
        .iter()
        .map(|(key, _)| (key.prefix_len(), key.data()))
        .collect();
    let remove = present
        .into_iter()
        .filter(|(key, entry)| {
            entry.origin == LIST_ORIGIN_COUNTRY && !wanted.contains(&(key.prefix_len(), key.data()))
        })
        .map(|(key, _)| key)
        .collect();
    Ok(Plan {
        insert,
        remove,
        held_by_others,
    })
}

fn apply<K: aya::Pod>(
    (name, map): (&'static str, &MapData),
    plan: Plan<K>,
) -> Result<Written, CountryError> {
    let map_error = |source| CountryError::Map { name, source };
    let (keys, entries): (Vec<Key<K>>, Vec<ListEntry>) = plan.insert.into_iter().unzip();
    bpf_sys::update_many(map, &keys, &entries).map_err(|(_, source)| map_error(source))?;
    let removed = bpf_sys::delete_many(map, &plan.remove).map_err(map_error)?;
    Ok(Written {
        added: keys.len(),
        removed,
        held_by_others: plan.held_by_others,
    })
}

/// The networks of the country entries the daemon wrote last, with their countries, in
/// `RUNTIME_DIR/countries.bin`: what lets a scrape count each country's networks and
/// drops by looking up these networks alone, where reading the deny tries costs about
/// 0.8 µs an entry of any origin (0.8 s with a million operator entries). A network
/// counts only while the trie holds a country entry of its country there: one that an
/// operator or CrowdSec took over, or removed, does not. Country networks never overlap
/// (the database's are disjoint, and merging keeps them so), so a lookup that finds a
/// country entry of the network's country found the network's own entry.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CountryIndex {
    pub v4: Vec<(Ipv4Net, Country)>,
    pub v6: Vec<(Ipv6Net, Country)>,
}

/// The first line of a country index file, then one 20-byte record a network: the IP
/// version (4 or 6), the prefix length, the country code, the address (16 bytes, an
/// IPv4 address in the first 4).
const INDEX_MAGIC: &[u8] = b"sip-filter country index 1\n";
const INDEX_RECORD: usize = 20;

impl CountryIndex {
    pub const FILE_NAME: &'static str = "countries.bin";

    pub fn path(runtime_dir: &Path) -> PathBuf {
        runtime_dir.join(Self::FILE_NAME)
    }

    fn of(networks: &CountryNetworks) -> Self {
        Self {
            v4: networks.v4.clone(),
            v6: networks.v6.clone(),
        }
    }

    fn to_bytes(&self) -> Vec<u8> {
        let mut bytes =
            Vec::with_capacity(INDEX_MAGIC.len() + INDEX_RECORD * (self.v4.len() + self.v6.len()));
        bytes.extend_from_slice(INDEX_MAGIC);
        let mut record = |version: u8, prefix_len: u8, country: Country, address: &[u8]| {
            let mut padded = [0u8; 16];
            padded[..address.len()].copy_from_slice(address);
            bytes.extend_from_slice(&[version, prefix_len, country.0[0], country.0[1]]);
            bytes.extend_from_slice(&padded);
        };
        for (net, country) in &self.v4 {
            record(4, net.prefix_len(), *country, &net.network().octets());
        }
        for (net, country) in &self.v6 {
            record(6, net.prefix_len(), *country, &net.network().octets());
        }
        bytes
    }

    fn from_bytes(bytes: &[u8]) -> Option<Self> {
        let records = bytes.strip_prefix(INDEX_MAGIC)?;
        if records.len() % INDEX_RECORD != 0 {
            return None;
        }
        let mut index = Self::default();
        for record in records.chunks_exact(INDEX_RECORD) {
            let (version, prefix_len, country) =
                (record[0], record[1], Country([record[2], record[3]]));
            let address: [u8; 16] = record[4..].try_into().ok()?;
            match version {
                4 => {
                    let v4: [u8; 4] = address[..4].try_into().ok()?;
                    index
                        .v4
                        .push((Ipv4Net::new(v4.into(), prefix_len).ok()?, country));
                }
                6 => index
                    .v6
                    .push((Ipv6Net::new(address.into(), prefix_len).ok()?, country)),
                _ => return None,
            }
        }
        Some(index)
    }

    /// The index in `runtime_dir`; None if there is none (no daemon wrote one, or its
    /// last write of the country entries failed: read the tries then). A file that is
    /// not an index is an error.
    pub fn read(runtime_dir: &Path) -> std::io::Result<Option<Self>> {
        let bytes = match std::fs::read(Self::path(runtime_dir)) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        Self::from_bytes(&bytes).map(Some).ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::InvalidData, "not a country index")
        })
    }

    fn write(&self, runtime_dir: &Path) -> std::io::Result<()> {
        crate::state::write_atomically(&Self::path(runtime_dir), &self.to_bytes())
    }

    /// Removes the index in `runtime_dir`, if there is one.
    pub fn remove(runtime_dir: &Path) -> std::io::Result<()> {
        match std::fs::remove_file(Self::path(runtime_dir)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

/// The daemon's view of the country lists: which version of the database file they
/// were compiled from, so that a new one is noticed.
#[derive(Debug, Default)]
pub struct CountryLists {
    loaded: Option<FileVersion>,
    /// The daemon's runtime directory, where each write is recorded ([`CountryIndex`]).
    index_dir: Option<PathBuf>,
}

/// A database read, ready for [`CountryLists::apply`].
pub struct CountryRead {
    networks: CountryNetworks,
    version: Option<FileVersion>,
}

impl CountryLists {
    /// The daemon's: each write of the country entries is recorded in `runtime_dir`
    /// for its exporter ([`CountryIndex`]).
    pub fn indexed_in(runtime_dir: PathBuf) -> Self {
        Self {
            loaded: None,
            index_dir: Some(runtime_dir),
        }
    }

    /// Reads the database `settings` name (nothing without a `[countries]` table).
    pub fn read(settings: Option<&CountrySettings>) -> Result<CountryRead, CountryError> {
        let Some(settings) = settings else {
            return Ok(CountryRead {
                networks: CountryNetworks::default(),
                version: None,
            });
        };
        // Before reading: a file replaced meanwhile is read again at the next look.
        let version = FileVersion::of(&settings.database);
        Ok(CountryRead {
            networks: read(settings)?,
            version,
        })
    }

    /// Writes what was read into `filter`'s deny tries, and logs it.
    pub fn apply(&mut self, filter: &Filter, read: CountryRead) -> Result<Written, CountryError> {
        let names = sip_filter_common::maps::names::DENY_V4;
        let v6_name = sip_filter_common::maps::names::DENY_V6;
        let trie = |name: &'static str| -> Result<&MapData, CountryError> {
            bpf_sys::hash_or_trie(filter.map(name)?).ok_or(CountryError::Map {
                name,
                source: MapError::InvalidName {
                    name: name.to_string(),
                },
            })
        };
        let (deny_v4, deny_v6) = (trie(names)?, trie(v6_name)?);
        // Gone while the tries change, and if writing them fails: scrapes then read the
        // tries themselves, slower but never wrong.
        let index_error = |dir: &Path| {
            let path = CountryIndex::path(dir);
            move |source| CountryError::Index { path, source }
        };
        if let Some(dir) = &self.index_dir {
            CountryIndex::remove(dir).map_err(index_error(dir))?;
        }
        let written = write((names, deny_v4), (v6_name, deny_v6), &read.networks)?;
        if let Some(dir) = &self.index_dir {
            CountryIndex::of(&read.networks)
                .write(dir)
                .map_err(index_error(dir))?;
        }
        self.loaded = read.version;
        let networks = &read.networks;
        if read.version.is_some() {
            let countries = networks
                .per_country()
                .iter()
                .map(|(country, n)| format!("{country} {n}"))
                .collect::<Vec<_>>()
                .join(", ");
            log::info!(networks_v4 = networks.v4.len(), networks_v6 = networks.v6.len(),
                added = written.added, removed = written.removed,
                held_by_others = written.held_by_others,
                read_ms = networks.read_time.as_millis() as u64;
                "country lists: {} IPv4 and {} IPv6 networks denied ({}), {} added and {} removed, read in {} ms from {} networks of the database",
                networks.v4.len(), networks.v6.len(),
                if countries.is_empty() { "none" } else { &countries },
                written.added, written.removed, networks.read_time.as_millis(),
                networks.database_networks);
            for country in &networks.missing {
                log::warn!(country = country.to_string().as_str();
                    "the country database has no network in {country}: is the code right?");
            }
        } else if written.removed > 0 {
            log::info!(removed = written.removed; "country lists removed ({} networks)", written.removed);
        }
        Ok(written)
    }

    /// Reads the database again if its file changed since it was loaded; one that
    /// cannot be read keeps the lists as they are (and is tried again when it changes).
    pub fn reload_if_changed(&mut self, filter: &Filter, settings: Option<&CountrySettings>) {
        let Some(settings) = settings else { return };
        let now = FileVersion::of(&settings.database);
        if now == self.loaded {
            return;
        }
        let database = settings.database.display().to_string();
        log::info!(database = database.as_str(); "the country database {database} changed: reading it again");
        match Self::read(Some(settings)).and_then(|read| self.apply(filter, read)) {
            Ok(_) => {}
            Err(e) => {
                self.loaded = now;
                log::error!(database = database.as_str();
                    "{e}: the country lists already loaded stay until the file changes again or SIGHUP");
            }
        }
    }
}

/// What identifies one version of the database file: a new download (written and
/// renamed over it, as `geoipupdate` does) changes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileVersion {
    modified: Option<std::time::SystemTime>,
    len: u64,
    inode: u64,
}

impl FileVersion {
    /// The file's version now; `None` if it cannot be read.
    pub fn of(path: &Path) -> Option<FileVersion> {
        use std::os::unix::fs::MetadataExt;
        let metadata = std::fs::metadata(path).ok()?;
        Some(FileVersion {
            modified: metadata.modified().ok(),
            len: metadata.len(),
            inode: metadata.ino(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_checked_and_upper_cased() {
        assert_eq!(Country::parse("de"), Ok(Country(*b"DE")));
        assert_eq!(Country::parse("XK"), Ok(Country(*b"XK")));
        assert_eq!(Country(*b"FR").to_string(), "FR");
        for bad in ["", "D", "DEU", "ZZ", "A1", "1", "Ä"] {
            let message = Country::parse(bad).unwrap_err();
            assert!(message.contains("ISO 3166-1 alpha-2"), "{bad}: {message}");
        }
        assert!(Country::parse("uk").unwrap_err().contains("GB"));
        assert_eq!(ASSIGNED.split(' ').count(), 250);
    }

    #[test]
    fn the_index_reads_back_what_was_written() {
        let index = CountryIndex {
            v4: vec![
                ("203.0.113.0/25".parse().unwrap(), Country(*b"FR")),
                ("0.0.0.0/0".parse().unwrap(), Country(*b"IT")),
            ],
            v6: vec![("2001:db8:f0::/48".parse().unwrap(), Country(*b"FR"))],
        };
        let bytes = index.to_bytes();
        assert_eq!(bytes.len(), INDEX_MAGIC.len() + 3 * INDEX_RECORD);
        assert_eq!(CountryIndex::from_bytes(&bytes), Some(index));
        assert_eq!(
            CountryIndex::from_bytes(INDEX_MAGIC),
            Some(CountryIndex::default())
        );
        // Cut short, another file, a family that is neither, a prefix too long.
        assert_eq!(CountryIndex::from_bytes(&bytes[..bytes.len() - 1]), None);
        assert_eq!(CountryIndex::from_bytes(b"not an index"), None);
        let mut bad = bytes.clone();
        bad[INDEX_MAGIC.len()] = 5;
        assert_eq!(CountryIndex::from_bytes(&bad), None);
        let mut bad = bytes;
        bad[INDEX_MAGIC.len() + 1] = 33;
        assert_eq!(CountryIndex::from_bytes(&bad), None);
    }

    #[test]
    fn allow_denies_every_other_country() {
        let settings = CountrySettings {
            database: PathBuf::new(),
            deny: vec![Country(*b"CN")],
            allow: vec![Country(*b"DE")],
        };
        assert!(settings.denies(Country(*b"CN")));
        assert!(settings.denies(Country(*b"FR")));
        assert!(!settings.denies(Country(*b"DE")));
        let deny_only = CountrySettings {
            allow: Vec::new(),
            ..settings
        };
        assert!(!deny_only.denies(Country(*b"FR")));
    }
}
