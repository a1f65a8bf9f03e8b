//! What a scrape costs at the maps' capacity: the exporter reads the blocklist whole to
//! count active bans, so a full blocklist (a million entries) and a million deny
//! entries are the worst case a scrape meets. The deny tries are not read: the kernel
//! counts their entries, and the countries' networks are looked up from the index the
//! daemon keeps; every count is checked against reading the tries whole, through
//! entries written, taken over and removed. Loads the real program; needs root.

use std::{
    net::IpAddr,
    path::Path,
    time::{Duration, Instant},
};

use aya::maps::lpm_trie::Key;
use ipnet::IpNet;
use sip_filter::{
    bpf_sys,
    countries::{Country, CountryIndex, CountryLists, CountrySettings},
    filter::monotonic_now_ns,
    lists::{ListKind, PinnedList},
    metrics::{Locations, Metrics},
    Filter,
};
use sip_filter_common::maps::{names, BanReason, ListEntry, MAX_BANS};
use sip_filter_tests::{
    geo::{invite_from, verdict_settings, write_country_database, XDP_DROP},
    lab::{PinRoot, TempDir},
    privileged,
};

/// Deny entries besides the countries': operator /28s, as `block import` makes them.
const DENY_ENTRIES: u32 = 1_000_000;

/// A scrape well inside Prometheus's default scrape timeout (10 s), on 2 shared cores.
const SCRAPE_BUDGET: Duration = Duration::from_secs(8);

#[test]
fn a_scrape_with_a_full_blocklist_stays_inside_the_scrape_timeout() {
    if !privileged("a_scrape_with_a_full_blocklist_stays_inside_the_scrape_timeout") {
        return;
    }
    let mut filter = Filter::load().expect("the XDP program loads");
    filter.configure(&verdict_settings()).expect("configured");
    let pins = PinRoot::new("metrics-full");
    let dir = pins.maps_dir();
    std::fs::create_dir_all(&dir).expect("the pin directory");
    filter.pin_maps(&dir).expect("pinned");

    // Every fourth ban expired (still in the map until its source comes back).
    let now = monotonic_now_ns();
    let filling = Instant::now();
    for n in 0..MAX_BANS {
        let mut key = [0u8; 16];
        key[10..12].copy_from_slice(&[0xff, 0xff]);
        key[12..16].copy_from_slice(&n.to_be_bytes());
        let (expires_ns, reason) = if n % 4 == 0 {
            (now - 1, BanReason::Rate)
        } else {
            (u64::MAX, BanReason::Scanner)
        };
        filter.set_ban(key, expires_ns, reason).expect("a ban");
    }
    println!(
        "{MAX_BANS} bans written in {:.2} s",
        filling.elapsed().as_secs_f64()
    );

    // A million deny entries, and the networks of two denied countries.
    let nets: Vec<Key<[u8; 4]>> = (0..DENY_ENTRIES)
        .map(|i| Key::new(28, (0x2000_0000u32 + (i << 4)).to_be_bytes()))
        .collect();
    let entries = vec![ListEntry::from_operator(u64::MAX, BanReason::Feed as u32); nets.len()];
    let deny_v4 = bpf_sys::hash_or_trie(filter.map(names::DENY_V4).expect("map")).expect("trie");
    bpf_sys::update_many(deny_v4, &nets, &entries).expect("deny entries written");
    let dir = TempDir::new("metrics-full");
    let database = dir.path().join("countries.mmdb");
    write_country_database(
        &database,
        &[
            (net("203.0.113.0/25"), "FR"),
            (net("198.51.100.0/24"), "FR"),
            (net("2001:db8:f0::/48"), "FR"),
            (net("192.0.2.0/24"), "IT"),
            (net("203.0.113.128/25"), "DE"),
        ],
    );
    let settings = CountrySettings {
        database,
        deny: vec![Country(*b"FR"), Country(*b"IT")],
        allow: Vec::new(),
    };
    let runtime_dir = pins.runtime_dir();
    CountryLists::read(Some(&settings))
        .and_then(|read| CountryLists::indexed_in(runtime_dir.clone()).apply(&filter, read))
        .expect("the country lists written");
    assert!(
        CountryIndex::path(&runtime_dir).exists(),
        "the index written"
    );
    for (source, times) in [("203.0.113.7", 3), ("198.51.100.1", 2), ("192.0.2.9", 1)] {
        let source: IpAddr = source.parse().expect("an address");
        for _ in 0..times {
            assert_eq!(filter.test_run(&invite_from(source)).unwrap(), XDP_DROP);
        }
    }

    let metrics = Metrics::for_pin_root(Locations {
        pin_root: pins.path().to_path_buf(),
        runtime_dir: runtime_dir.clone(),
    })
    .expect("the metrics");
    let (text, took, read_whole) = scrape_both_ways(&metrics, &runtime_dir);
    println!(
        "a scrape with {MAX_BANS} bans and {} deny entries: {:.2} s ({:.2} s reading the deny tries whole), {} bytes",
        DENY_ENTRIES + 3,
        took.as_secs_f64(),
        read_whole.as_secs_f64(),
        text.len()
    );
    let expired = u64::from(MAX_BANS.div_ceil(4));
    for line in [
        format!(r#"sip_filter_map_entries{{map="bans"}} {MAX_BANS}"#),
        format!(
            r#"sip_filter_bans_active{{reason="scanner"}} {}"#,
            u64::from(MAX_BANS) - expired
        ),
        r#"sip_filter_bans_active{reason="rate"} 0"#.to_string(),
        format!(
            r#"sip_filter_map_entries{{map="deny_v4"}} {}"#,
            DENY_ENTRIES + 3
        ),
        r#"sip_filter_map_entries{map="deny_v6"} 1"#.to_string(),
        r#"sip_filter_country_networks{country="FR"} 3"#.to_string(),
        r#"sip_filter_country_networks{country="IT"} 1"#.to_string(),
        r#"sip_filter_country_drops_total{country="FR"} 5"#.to_string(),
        r#"sip_filter_country_drops_total{country="IT"} 1"#.to_string(),
    ] {
        assert!(text.lines().any(|l| l == line), "no {line:?} in:\n{text}");
    }
    assert!(
        !text.contains(r#"country="DE""#),
        "Germany is not denied:\n{text}"
    );
    assert!(
        took < SCRAPE_BUDGET,
        "a scrape took {took:?}, over {SCRAPE_BUDGET:?}"
    );

    // An operator takes over a French network (its drops go with the country entry),
    // and removes an Italian one: the counts follow, as they do reading the tries.
    let mut deny = PinnedList::open(&pins.maps_dir(), ListKind::Deny).expect("the deny list");
    deny.insert(
        net("203.0.113.0/25"),
        ListEntry::from_operator(u64::MAX, BanReason::Feed as u32),
    )
    .expect("taken over");
    assert!(deny.remove(net("192.0.2.0/24")).expect("removed"));
    let (text, _, _) = scrape_both_ways(&metrics, &runtime_dir);
    for line in [
        format!(
            r#"sip_filter_map_entries{{map="deny_v4"}} {}"#,
            DENY_ENTRIES + 2
        ),
        r#"sip_filter_country_networks{country="FR"} 2"#.to_string(),
        r#"sip_filter_country_drops_total{country="FR"} 2"#.to_string(),
    ] {
        assert!(text.lines().any(|l| l == line), "no {line:?} in:\n{text}");
    }
    assert!(
        !text.contains(r#"country="IT""#),
        "Italy has no network left:\n{text}"
    );
    drop(filter);
    drop(pins);
}

fn net(text: &str) -> IpNet {
    text.parse().expect("a network")
}

/// Scrapes `metrics` with the country index in `runtime_dir`, then without it (reading
/// the deny tries whole), and checks that both say the same of every map and country;
/// returns the first, how long it took, and how long the second took.
fn scrape_both_ways(metrics: &Metrics, runtime_dir: &Path) -> (String, Duration, Duration) {
    let scraping = Instant::now();
    let indexed = metrics.render().expect("rendered");
    let took = scraping.elapsed();
    let index = CountryIndex::path(runtime_dir);
    let aside = index.with_extension("aside");
    std::fs::rename(&index, &aside).expect("the index set aside");
    let scraping = Instant::now();
    let whole = metrics.render().expect("rendered");
    let read_whole = scraping.elapsed();
    std::fs::rename(&aside, &index).expect("the index back");
    let counts = |text: &str| -> Vec<String> {
        text.lines()
            .filter(|line| {
                line.starts_with("sip_filter_map_entries")
                    || line.starts_with("sip_filter_country_")
            })
            .map(str::to_string)
            .collect()
    };
    assert_eq!(
        counts(&indexed),
        counts(&whole),
        "indexed and read whole differ"
    );
    (indexed, took, read_whole)
}
