//! Source countries (`[countries]`) in the real XDP program, fed frames with
//! BPF_PROG_TEST_RUN: a country database written here is read into the deny tries;
//! a denied country's sources are dropped and counted by country, except those on
//! the allow list and registered ones. Run on 6.1 too (`cargo xtask vm-test`);
//! `countries_size.rs` loads a database the size of a real one.

use std::net::IpAddr;

use ipnet::IpNet;
use sip_filter::{
    bpf_sys::{hash_or_trie, trie_entries},
    countries::{self, Country, CountryNetworks, CountrySettings, Written},
    filter::{monotonic_now_ns, source_key},
    Filter, Settings,
};
use sip_filter_common::maps::{names, ListEntry, Registration};
use sip_filter_tests::{
    assert_trie_len,
    geo::{
        invite_from, load_countries, verdict_settings, write_country_database, write_networks,
        XDP_DROP, XDP_PASS,
    },
    lab::TempDir,
    privileged,
};

fn address(text: &str) -> IpAddr {
    text.parse().expect("an address")
}

fn net(text: &str) -> IpNet {
    text.parse().expect("a network")
}

/// Drops counted in the deny tries' entries of `country`.
fn country_drops(filter: &Filter, country: Country) -> u64 {
    fn in_trie<K: aya::Pod>(map: &aya::maps::Map, country: Country) -> u64 {
        trie_entries::<K, ListEntry>(map)
            .expect("entries")
            .iter()
            .filter(|(_, entry)| Country::of_entry(entry) == Some(country))
            .map(|(_, entry)| entry.drops)
            .sum()
    }
    in_trie::<[u8; 4]>(filter.map(names::DENY_V4).expect("map"), country)
        + in_trie::<[u8; 16]>(filter.map(names::DENY_V6).expect("map"), country)
}

/// The kernel's count of the deny tries' entries is what reading them finds (on 6.1,
/// in the VM: trie_len says it cannot tell).
fn assert_counted(filter: &Filter, when: &str) {
    let counted = |name| {
        let map = filter.map(name).expect("map");
        (hash_or_trie(map).expect("a trie"), map)
    };
    let (v4, map) = counted(names::DENY_V4);
    assert_trie_len(
        v4,
        trie_entries::<[u8; 4], ListEntry>(map).unwrap().len(),
        when,
    );
    let (v6, map) = counted(names::DENY_V6);
    assert_trie_len(
        v6,
        trie_entries::<[u8; 16], ListEntry>(map).unwrap().len(),
        when,
    );
}

/// A denied country's sources are dropped (`drop_denied`) and counted by country; an
/// allowed country's, and addresses the database places nowhere, pass; the allow list
/// and registered sources take precedence over a country, not over an operator's deny
/// entry; an allow list of countries denies every other one; a new database replaces
/// the country entries and nothing else.
#[test]
fn countries_deny_but_yield_to_allowed_and_registered_sources() {
    if !privileged("countries_deny_but_yield_to_allowed_and_registered_sources") {
        return;
    }
    let dir = TempDir::new("countries-test-run");
    let database = dir.path().join("countries.mmdb");
    write_country_database(
        &database,
        &[
            (net("203.0.113.0/25"), "FR"),
            (net("203.0.113.128/25"), "DE"),
            (net("2001:db8:f0::/48"), "FR"),
            (net("2001:db8:de::/48"), "DE"),
            (net("198.51.100.0/24"), "IT"),
        ],
    );
    let (french, german, italian, nowhere) = (
        address("203.0.113.7"),
        address("203.0.113.200"),
        address("198.51.100.9"),
        address("192.0.2.1"),
    );
    let (french_v6, german_v6) = (address("2001:db8:f0::7"), address("2001:db8:de::7"));
    let (french_trunk, french_phone, french_denied) = (
        address("203.0.113.10"),
        address("203.0.113.11"),
        address("203.0.113.12"),
    );
    // The file denies one French address, and France's IPv6 network itself.
    let file_deny = vec![IpNet::from(french_denied), net("2001:db8:f0::/48")];
    let mut settings = Settings {
        allow: vec![IpNet::from(french_trunk)],
        deny: file_deny.clone(),
        ..verdict_settings()
    };
    let mut filter = Filter::load().expect("the program loads");
    filter.configure(&settings).expect("configured");
    let denying_france = CountrySettings {
        database: database.clone(),
        deny: vec![Country(*b"FR")],
        allow: Vec::new(),
    };
    let (networks, written) = load_countries(&filter, &denying_france);
    assert_counted(&filter, "France denied");
    // France's IPv6 network stays the file's entry.
    assert_eq!(
        written,
        Written {
            added: 1,
            removed: 0,
            held_by_others: 1
        }
    );
    assert_eq!(
        networks.v4,
        [(
            ipnet::Ipv4Net::new([203, 0, 113, 0].into(), 25).unwrap(),
            Country(*b"FR")
        )]
    );
    assert_eq!(networks.v6.len(), 1);
    assert_eq!(networks.database_networks, 5);

    // The phone registered (the egress program learnt it from a 200 to its REGISTER).
    let registered = filter
        .restore_learnt(
            &[(
                source_key(french_phone, 64),
                Registration {
                    expires_ns: monotonic_now_ns() + 3_600_000_000_000,
                    account: [0; sip_filter_common::sip::pairing::ACCOUNT_WORDS],
                    source: source_key(french_phone, 128),
                },
            )],
            &[],
            &[],
        )
        .expect("written");
    assert_eq!(registered.0, 1);

    let verdict =
        |filter: &Filter, source: IpAddr| filter.test_run(&invite_from(source)).expect("runs");
    let assert_verdicts = |filter: &Filter, step: &str, cases: &[(&str, IpAddr, u32)]| {
        for (what, source, expected) in cases {
            assert_eq!(
                verdict(filter, *source),
                *expected,
                "{step}: {what} ({source})"
            );
        }
    };
    assert_verdicts(
        &filter,
        "deny FR",
        &[
            ("France, denied", french, XDP_DROP),
            ("France over IPv6, denied", french_v6, XDP_DROP),
            ("Germany", german, XDP_PASS),
            ("Germany over IPv6", german_v6, XDP_PASS),
            ("Italy", italian, XDP_PASS),
            ("in no country", nowhere, XDP_PASS),
            ("a French trunk on the allow list", french_trunk, XDP_PASS),
            ("a registered French phone", french_phone, XDP_PASS),
            ("a French source on the deny list", french_denied, XDP_DROP),
        ],
    );
    // France's IPv4 network counted its drop; the file's entries count their own.
    assert_eq!(country_drops(&filter, Country(*b"FR")), 1);

    // Only Germany let in: France and Italy are denied, what no country holds passes.
    let only_germany = CountrySettings {
        deny: Vec::new(),
        allow: vec![Country(*b"DE")],
        ..denying_france.clone()
    };
    let (networks, _) = load_countries(&filter, &only_germany);
    assert_counted(&filter, "only Germany allowed");
    assert_eq!(networks.per_country().len(), 2, "{networks:?}");
    assert_verdicts(
        &filter,
        "allow DE",
        &[
            ("France", french, XDP_DROP),
            ("Italy", italian, XDP_DROP),
            ("Germany", german, XDP_PASS),
            ("in no country", nowhere, XDP_PASS),
            ("a registered French phone", french_phone, XDP_PASS),
        ],
    );
    // France's networks were kept, not rewritten: their count goes on.
    assert_eq!(country_drops(&filter, Country(*b"FR")), 2);
    assert_eq!(country_drops(&filter, Country(*b"IT")), 1);

    // A reload of the configuration keeps the country entries; the file's own entries
    // go with it, and the countries, written after (as the daemon does), take back
    // France's IPv6 network.
    settings.deny.clear();
    filter.configure(&settings).expect("reconfigured");
    let (_, written) = load_countries(&filter, &only_germany);
    assert_eq!(
        written,
        Written {
            added: 1,
            removed: 0,
            held_by_others: 0
        }
    );
    assert_eq!(verdict(&filter, french_denied), XDP_DROP, "still in France");
    assert_eq!(
        verdict(&filter, french_v6),
        XDP_DROP,
        "France over IPv6 too"
    );
    assert_eq!(verdict(&filter, italian), XDP_DROP, "Italy still denied");

    // Without the table, the country entries go, and only they.
    settings.deny = file_deny;
    filter.configure(&settings).expect("reconfigured");
    let written = write_networks(&filter, &CountryNetworks::default());
    // France's IPv6 network is the file's again: it stays.
    assert_eq!(written.removed, 2, "France's and Italy's IPv4 networks");
    assert_counted(&filter, "the country entries removed");
    assert_eq!(verdict(&filter, french), XDP_PASS);
    assert_eq!(verdict(&filter, italian), XDP_PASS);
    assert_eq!(
        verdict(&filter, french_denied),
        XDP_DROP,
        "the file's entry stays"
    );
    assert_eq!(
        verdict(&filter, french_v6),
        XDP_DROP,
        "and so does its network"
    );
}

/// A database that cannot be read is refused with its path and the cause.
#[test]
fn unreadable_databases_are_refused_by_name() {
    let dir = TempDir::new("countries-unreadable");
    let missing = CountrySettings {
        database: dir.path().join("absent.mmdb"),
        deny: vec![Country(*b"FR")],
        allow: Vec::new(),
    };
    let garbled_path = dir.path().join("garbled.mmdb");
    std::fs::write(&garbled_path, b"not a database at all\n".repeat(100)).unwrap();
    let garbled = CountrySettings {
        database: garbled_path,
        ..missing.clone()
    };
    for settings in [&missing, &garbled] {
        let message = countries::read(settings).unwrap_err().to_string();
        assert!(
            message.contains(&settings.database.display().to_string())
                && message.contains("cannot be read")
                && message.contains("Source countries"),
            "{message}"
        );
    }
}
