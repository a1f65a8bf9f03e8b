//! End to end, in network namespaces: `[countries]` with a country database written
//! here that places lab addresses in France and Germany. France denied: its sources
//! get no answer from Kamailio, Germany's and the unplaced ones do; `top` and the
//! metrics count the drops by country. A new database file is picked up by itself; a
//! garbled one keeps the lists loaded, on the periodic look and on SIGHUP; an allow
//! list of countries lets in only those.

use std::time::{Duration, Instant};

use ipnet::IpNet;
use sip_filter::{
    countries::CountryIndex,
    metrics::{Locations, Metrics},
};
use sip_filter_tests::{
    geo::{realistic_networks, write_bytes, write_country_database},
    lab::{json_array, options_probe, sample_sum, verb, write_file, LabFixture, LAB_TOOLS, QUICK},
    netns::{Background, Host, CLIENT_V4},
    privileged,
};

/// Addresses added to the client namespace, in networks the database places.
const FRENCH_V4: &str = "198.18.0.21";
const GERMAN_V4: &str = "198.18.0.37";
const FRENCH_V6: &str = "2001:db8:5f::f:1";

/// An answer is expected within this (Kamailio answers at once; a busy host is slow).
const ANSWERED: Duration = Duration::from_secs(10);
/// A dropped request gets no answer: it is given this long to prove it.
const UNANSWERED: Duration = Duration::from_secs(2);

/// France's and Germany's lab networks (`swapped`: each in the other's), among the
/// networks of other countries elsewhere.
fn database(france: &str, germany: &str) -> Vec<(IpNet, String)> {
    let mut networks = vec![
        (france.parse().unwrap(), "FR".to_string()),
        (germany.parse().unwrap(), "DE".to_string()),
        ("2001:db8:5f::f:0/112".parse().unwrap(), "FR".to_string()),
    ];
    let others: Vec<String> = ["IT", "ES", "US", "CN", "BR"].map(String::from).to_vec();
    networks.extend(realistic_networks(2000, 1000, &others));
    networks
}

fn write_database(path: &std::path::Path, networks: &[(IpNet, String)]) {
    let networks: Vec<(IpNet, &str)> = networks.iter().map(|(n, c)| (*n, c.as_str())).collect();
    write_country_database(path, &networks);
}

fn config(database: &std::path::Path, countries: &str) -> String {
    format!(
        "[filter]\ndomains = [\"pbx.example.test\"]\n\n[daemon]\nsave_interval = \"1s\"\n\n[countries]\ndatabase = \"{}\"\n{countries}\n",
        database.display()
    )
}

/// Whether an OPTIONS from `from` is answered.
fn answered(rig: &mut LabFixture, from: &str) -> bool {
    let answer = options_probe(&rig.lab, from, "country-probe", ANSWERED);
    rig.transcript
        .note(format!("OPTIONS from {from}: {answer:?}"));
    answer.is_some()
}

fn dropped(rig: &mut LabFixture, from: &str) -> bool {
    let answer = options_probe(&rig.lab, from, "country-probe", UNANSWERED);
    rig.transcript
        .note(format!("OPTIONS from {from}: {answer:?}"));
    answer.is_none()
}

/// The daemon's first log line with `needle`, once written; noted in the transcript.
fn logged(rig: &mut LabFixture, daemon: &mut Background, needle: &str) -> String {
    let line = daemon
        .wait_for_log(needle, QUICK)
        .unwrap_or_else(|e| panic!("{e}"));
    rig.transcript.note(line.clone());
    line
}

/// Waits until the daemon's log has `needle` `count` times.
fn wait_for_count(daemon: &Background, needle: &str, count: usize) -> String {
    let start = Instant::now();
    loop {
        let log = daemon.log();
        let lines: Vec<&str> = log.lines().filter(|line| line.contains(needle)).collect();
        if lines.len() >= count {
            return lines[count - 1].to_string();
        }
        assert!(
            start.elapsed() < QUICK,
            "{needle:?} not logged {count} times in {QUICK:?}:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The metrics exposition of the filter pinned at the fixture's pin root, as the
/// daemon's exporter renders it.
fn metrics(rig: &LabFixture) -> String {
    Metrics::for_pin_root(Locations {
        pin_root: rig.pins.path().to_path_buf(),
        runtime_dir: rig.pins.runtime_dir(),
    })
    .expect("the exporter builds")
    .render()
    .expect("renders")
}

#[test]
fn countries_are_denied_counted_and_reloaded() {
    if !privileged("countries_are_denied_counted_and_reloaded") {
        return;
    }
    let mut rig = LabFixture::start("e2e-countries", LAB_TOOLS);
    rig.lab
        .add_addresses(
            Host::Client,
            &[
                format!("{FRENCH_V4}/24"),
                format!("{GERMAN_V4}/24"),
                format!("{FRENCH_V6}/64"),
            ],
        )
        .unwrap_or_else(|e| panic!("{e:#}"));
    let path = rig.dir.path().join("GeoLite2-Country.mmdb");
    let first = database("198.18.0.16/28", "198.18.0.32/28");
    write_database(&path, &first);
    // Before the filter: every address is answered (the lab works).
    for from in [FRENCH_V4, GERMAN_V4, FRENCH_V6, CLIENT_V4] {
        assert!(
            answered(&mut rig, from),
            "{from} unanswered without the filter"
        );
    }

    let mut daemon = rig.start_filter_with(&config(&path, "deny = [\"FR\"]"));
    let loaded = logged(&mut rig, &mut daemon, "country lists:");
    assert!(loaded.contains("(FR 2)"), "{loaded}");
    assert!(dropped(&mut rig, FRENCH_V4), "France is denied");
    assert!(dropped(&mut rig, FRENCH_V6), "France is denied over IPv6");
    assert!(answered(&mut rig, GERMAN_V4), "Germany is not");
    assert!(
        answered(&mut rig, CLIENT_V4),
        "an address in no country is not"
    );

    // `top` and the metrics: the drops by country.
    let top = json_array(&rig.transcript.keep(
        "top --json",
        verb(&rig.lab, &rig.pins, &["top", "--json"], QUICK),
    ));
    let france = top
        .iter()
        .find(|row| row["source"] == "country FR")
        .unwrap_or_else(|| panic!("no row for France in {top:?}"));
    assert_eq!(france["denied_by"], "country");
    assert!(france["dropped"].as_u64().unwrap() >= 2, "{france}");
    // `block list`: the country's networks only when asked for.
    let listed = verb(&rig.lab, &rig.pins, &["block", "list", "--json"], QUICK);
    assert!(
        json_array(&listed).is_empty()
            && listed
                .stderr
                .contains("2 networks of denied countries not shown"),
        "{listed}"
    );
    let countries = json_array(&rig.transcript.keep(
        "block list --origin country --json",
        verb(
            &rig.lab,
            &rig.pins,
            &["block", "list", "--origin", "country", "--json"],
            QUICK,
        ),
    ));
    assert_eq!(countries.len(), 2, "{countries:?}");
    assert!(countries
        .iter()
        .all(|row| row["origin"] == "country" && row["reason"] == "FR"));
    // Counted from the daemon's index of its country entries, not by reading the tries.
    let index = CountryIndex::path(&rig.pins.runtime_dir());
    assert!(index.exists(), "no {}", index.display());
    let exposition = metrics(&rig);
    rig.transcript.note(exposition.clone());
    let drops = |exposition: &str, country: &str| {
        sample_sum(
            exposition,
            "sip_filter_country_drops_total",
            &[&format!("country=\"{country}\"")],
        )
    };
    assert!(
        drops(&exposition, "FR").unwrap() >= 2,
        "France's drops counted"
    );
    assert_eq!(drops(&exposition, "DE"), None, "Germany is not denied");
    assert_eq!(
        sample_sum(
            &exposition,
            "sip_filter_country_networks",
            &["country=\"FR\""]
        ),
        Some(2)
    );

    // A new database, renamed over the old one: France and Germany swap networks. The
    // daemon notices it by itself.
    write_database(&path, &database("198.18.0.32/28", "198.18.0.16/28"));
    let reloaded = wait_for_count(&daemon, "country lists:", 2);
    rig.transcript.note(reloaded.clone());
    assert!(reloaded.contains("1 added and 1 removed"), "{reloaded}");
    assert!(
        answered(&mut rig, FRENCH_V4),
        "{FRENCH_V4} is in Germany now"
    );
    assert!(dropped(&mut rig, GERMAN_V4), "{GERMAN_V4} is in France now");

    // A garbled file keeps the lists, on the periodic look and on SIGHUP.
    write_bytes(&path, b"this is not a country database\n");
    let kept = logged(
        &mut rig,
        &mut daemon,
        "the country lists already loaded stay",
    );
    assert!(kept.contains("cannot be read"), "{kept}");
    assert!(dropped(&mut rig, GERMAN_V4), "the lists stay");
    daemon.signal(libc::SIGHUP);
    let refused = logged(&mut rig, &mut daemon, "configuration reload refused");
    assert!(refused.contains("cannot be read"), "{refused}");
    assert!(dropped(&mut rig, GERMAN_V4), "the lists stay");
    assert!(answered(&mut rig, FRENCH_V4), "and so does the rest");

    // Only Germany let in (SIGHUP): France is denied, and every other country of the
    // database; what it places nowhere is not.
    write_database(&path, &first);
    write_file(
        rig.dir.path(),
        "sip-filter.toml",
        &config(&path, "allow = [\"DE\"]"),
    );
    daemon.signal(libc::SIGHUP);
    let reloaded = wait_for_count(&daemon, "configuration reloaded", 1);
    rig.transcript.note(reloaded);
    assert!(dropped(&mut rig, FRENCH_V4), "France is not let in");
    assert!(answered(&mut rig, GERMAN_V4), "Germany is");
    assert!(answered(&mut rig, CLIENT_V4), "an address in no country is");
    let exposition = metrics(&rig);
    assert_eq!(
        sample_sum(
            &exposition,
            "sip_filter_country_networks",
            &["country=\"US\""]
        ),
        Some(600),
        "every other country denied:\n{exposition}"
    );

    rig.stop_filter(&mut daemon);
    assert!(!index.exists(), "the daemon stopped, its index stays");
    rig.tear_down([daemon]);
}
