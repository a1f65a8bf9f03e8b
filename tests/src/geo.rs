//! Country databases in MaxMind's format, written by the tests: each network carries a
//! record laid out as GeoLite2 Country's (`{"country": {"iso_code": "DE"}}`), so the
//! daemon reads them as it reads the real ones.

use std::{collections::BTreeMap, net::IpAddr, path::Path};

use ipnet::IpNet;
use maxminddb_writer::{metadata::IpVersion, paths::IpAddrWithMask, Database};
use sip_filter::{
    bpf_sys::hash_or_trie,
    countries::{self, CountryNetworks, CountrySettings, Written},
    settings::{BanRules, RateLimits},
    Filter, Settings,
};
use sip_filter_common::maps::names;

use crate::packets::{sip_request, udp4_from, udp6_from, SIP_PORT};

pub const XDP_DROP: u32 = 1;
pub const XDP_PASS: u32 = 2;

/// Settings for the verdicts of single packets: the lab's domain, no automatic bans,
/// no rate limits.
pub fn verdict_settings() -> Settings {
    Settings {
        domains: vec!["pbx.example.test".into()],
        ban: BanRules::off(),
        rate_limits: RateLimits::none(),
        ..Settings::default()
    }
}

/// An INVITE to the lab's domain from `source`.
pub fn invite_from(source: IpAddr) -> Vec<u8> {
    let invite = sip_request("INVITE", "sip:100@pbx.example.test", &[]);
    match source {
        IpAddr::V4(v4) => udp4_from(v4.octets(), SIP_PORT, &invite),
        IpAddr::V6(v6) => udp6_from(v6.octets(), SIP_PORT, &invite),
    }
}

/// Writes `networks` as the country entries of `filter`'s deny tries.
pub fn write_networks(filter: &Filter, networks: &CountryNetworks) -> Written {
    let trie = |name| hash_or_trie(filter.map(name).expect("map")).expect("a trie");
    countries::write(
        (names::DENY_V4, trie(names::DENY_V4)),
        (names::DENY_V6, trie(names::DENY_V6)),
        networks,
    )
    .expect("written")
}

/// Reads `settings`' database and writes its networks into `filter`'s deny tries, as
/// the daemon does.
pub fn load_countries(filter: &Filter, settings: &CountrySettings) -> (CountryNetworks, Written) {
    let networks = countries::read(settings).expect("the database reads");
    let written = write_networks(filter, &networks);
    (networks, written)
}

/// Writes an IPv6 database (IPv4 networks in its `::/96` subtree, as GeoLite2 has them)
/// placing each network in its country, to `path`, through a file renamed over it: a
/// reader never sees half a file, as with `geoipupdate`.
pub fn write_country_database(path: &Path, networks: &[(IpNet, &str)]) {
    let mut database = Database::default();
    database.metadata.ip_version = IpVersion::V6;
    database.metadata.database_type = "GeoLite2-Country".into();
    database.metadata.binary_format_major_version = 2;
    database.metadata.languages = vec!["en".into()];
    let mut records = BTreeMap::new();
    for (net, country) in networks {
        let record = *records.entry(*country).or_insert_with(|| {
            let record = BTreeMap::from([(
                "country",
                BTreeMap::from([("iso_code", country.to_string())]),
            )]);
            database.insert_value(record).expect("a record")
        });
        database.insert_node(in_ipv6_tree(*net), record);
    }
    write_bytes(path, &to_bytes(&database));
}

/// Writes `bytes` at `path` through a temporary file renamed over it.
pub fn write_bytes(path: &Path, bytes: &[u8]) {
    let temporary = path.with_extension("partial");
    std::fs::write(&temporary, bytes)
        .unwrap_or_else(|e| panic!("writing {}: {e}", temporary.display()));
    std::fs::rename(&temporary, path)
        .unwrap_or_else(|e| panic!("renaming to {}: {e}", path.display()));
}

fn to_bytes(database: &Database) -> Vec<u8> {
    database
        .write_to(Vec::new())
        .expect("the database serialises")
}

/// Where a network sits in an IPv6 database's tree: an IPv4 network under `::/96`.
fn in_ipv6_tree(net: IpNet) -> IpAddrWithMask {
    match net {
        IpNet::V4(v4) => IpAddrWithMask::new(
            IpAddr::V6(v4.network().to_ipv6_compatible()),
            96 + v4.prefix_len(),
        ),
        IpNet::V6(v6) => IpAddrWithMask::new(IpAddr::V6(v6.network()), v6.prefix_len()),
    }
}

/// A database the size of a real one: `v4` IPv4 and `v6` IPv6 networks (/24s from
/// 1.0.0.0 on, /32s... from 2400::), spread round-robin over `countries`.
pub fn realistic_networks(v4: u32, v6: u32, countries: &[String]) -> Vec<(IpNet, String)> {
    let mut networks = Vec::with_capacity((v4 + v6) as usize);
    for i in 0..v4 {
        // Every other /24, so that neighbours of one country do not merge.
        let base = u32::from_be_bytes([1, 0, 0, 0]) + (i << 9);
        let net = ipnet::Ipv4Net::new(base.into(), 24).expect("a prefix");
        networks.push((
            IpNet::V4(net),
            countries[i as usize % countries.len()].clone(),
        ));
    }
    for i in 0..v6 {
        let base = (0x2400u128 << 112) + (u128::from(i) << 82);
        let net = ipnet::Ipv6Net::new(base.into(), 48).expect("a prefix");
        networks.push((
            IpNet::V6(net),
            countries[i as usize % countries.len()].clone(),
        ));
    }
    networks
}
