//! A country database the size of a real one (600,000 networks in 250 countries,
//! 8.4 MB, like GeoLite2 Country's file), with 100 countries denied: how long it takes
//! to read and write, the entries it makes, the kernel's cost of an allowed INVITE
//! before and after, and what a scrape of the metrics costs. No timing thresholds: the figures are printed. Kept out of the
//! VM run (`cargo xtask vm-test`), where emulation makes it take minutes.

use std::{net::IpAddr, time::Instant};

use ipnet::IpNet;
use sip_filter::{
    bpf_sys::hash_or_trie,
    countries::{all_countries, Country, CountryLists, CountrySettings},
    metrics::{Locations, Metrics},
    Filter,
};
use sip_filter_common::maps::{names, MAX_LIST_ENTRIES};
use sip_filter_tests::{
    geo::{
        invite_from, load_countries, realistic_networks, verdict_settings, write_country_database,
        XDP_DROP, XDP_PASS,
    },
    lab::{sample_sum, PinRoot, TempDir},
    privileged,
};

/// A database the size of a real one (600,000 networks in 250 countries): read and
/// written with 100 countries denied, the time it takes and the entries it makes are
/// reported; the kernel's cost of an allowed INVITE is measured before and after.
#[test]
fn a_database_the_size_of_a_real_one_loads() {
    if !privileged("a_database_the_size_of_a_real_one_loads") {
        return;
    }
    let dir = TempDir::new("countries-size");
    let database = dir.path().join("countries.mmdb");
    let codes: Vec<String> = all_countries().map(|c| c.to_string()).collect();
    let networks = realistic_networks(400_000, 200_000, &codes);
    let started = Instant::now();
    let written: Vec<(IpNet, &str)> = networks.iter().map(|(n, c)| (*n, c.as_str())).collect();
    write_country_database(&database, &written);
    let size = std::fs::metadata(&database).unwrap().len();
    eprintln!(
        "wrote a country database of {} networks ({} bytes) in {:.1?}",
        networks.len(),
        size,
        started.elapsed()
    );

    let mut filter = Filter::load().expect("the program loads");
    filter.configure(&verdict_settings()).expect("configured");
    let allowed_source = IpAddr::from([1, 0, 2, 7]); // the second /24: codes[1]
    assert_eq!(networks[1].1, codes[1]);
    let invite = invite_from(allowed_source);
    let before = median_ns(&filter, &invite);

    let denied: Vec<Country> = all_countries().step_by(2).take(100).collect();
    assert!(!denied.contains(&Country::parse(&codes[1]).unwrap()));
    let settings = CountrySettings {
        database: database.clone(),
        deny: denied.clone(),
        allow: Vec::new(),
    };
    let started = Instant::now();
    let (loaded, _) = load_countries(&filter, &settings);
    let load_time = started.elapsed();
    let entries = loaded.v4.len() + loaded.v6.len();
    eprintln!(
        "100 denied countries: {} IPv4 and {} IPv6 entries of {} networks; read in {:.1?}, read and written in {load_time:.1?}",
        loaded.v4.len(),
        loaded.v6.len(),
        loaded.database_networks,
        loaded.read_time
    );
    for name in [names::DENY_V4, names::DENY_V6] {
        eprintln!("{name}: {} bytes of kernel memory", memlock(&filter, name));
    }
    assert_eq!(loaded.database_networks, networks.len());
    let expected = networks
        .iter()
        .filter(|(_, code)| denied.contains(&Country::parse(code).unwrap()))
        .count();
    assert_eq!(entries, expected);
    assert!(loaded.v4.len() < MAX_LIST_ENTRIES as usize);

    // The daemon's way: written again (nothing changes) and recorded for the metrics.
    let pins = PinRoot::new("countries-size");
    std::fs::create_dir_all(pins.maps_dir()).expect("the pin directory");
    filter.pin_maps(&pins.maps_dir()).expect("pinned");
    CountryLists::read(Some(&settings))
        .and_then(|read| CountryLists::indexed_in(pins.runtime_dir()).apply(&filter, read))
        .expect("written");
    let metrics = Metrics::for_pin_root(Locations {
        pin_root: pins.path().to_path_buf(),
        runtime_dir: pins.runtime_dir(),
    })
    .expect("the metrics");
    let started = Instant::now();
    let exposition = metrics.render().expect("rendered");
    eprintln!(
        "a scrape with {entries} country networks: {:.1?}",
        started.elapsed()
    );
    assert_eq!(
        sample_sum(&exposition, "sip_filter_country_networks", &[]),
        Some(entries as u64)
    );

    let after = median_ns(&filter, &invite);
    eprintln!(
        "allowed INVITE: {before} ns per packet without the country lists, {after} ns with them"
    );
    assert_eq!(filter.test_run(&invite).unwrap(), XDP_PASS);
    let denied_source = IpAddr::from([1, 0, 0, 7]); // the first /24: codes[0], denied
    assert_eq!(
        filter.test_run(&invite_from(denied_source)).unwrap(),
        XDP_DROP
    );
}

/// What the kernel says map `name` takes (`memlock` in its fdinfo).
fn memlock(filter: &Filter, name: &'static str) -> String {
    use std::os::fd::{AsFd, AsRawFd};
    let data = hash_or_trie(filter.map(name).expect("map")).expect("a trie");
    let fd = data.fd().as_fd().as_raw_fd();
    let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}")).expect("fdinfo");
    info.lines()
        .find_map(|line| line.strip_prefix("memlock:"))
        .map_or_else(|| "(not reported)".to_string(), |n| n.trim().to_string())
}

/// The median of 5 runs of `repeat` packets each, in ns per packet.
fn median_ns(filter: &Filter, frame: &[u8]) -> u128 {
    let mut runs: Vec<u128> = (0..5)
        .map(|_| {
            let (verdict, per_packet) = filter.run(frame, 100_000).expect("runs");
            assert_eq!(verdict, XDP_PASS);
            per_packet.as_nanos()
        })
        .collect();
    runs.sort_unstable();
    runs[2]
}
