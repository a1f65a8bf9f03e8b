//! What a scrape costs at the blocklist's capacity: the exporter counts active bans by
//! walking the map (two syscalls an entry), so a full blocklist (a million entries) is
//! the worst case a scrape meets. Loads the real program; needs root.

use std::time::{Duration, Instant};

use sip_filter::{
    filter::monotonic_now_ns,
    metrics::{Locations, Metrics},
    Filter, Settings,
};
use sip_filter_common::maps::{BanReason, MAX_BANS};
use sip_filter_tests::{lab::PinRoot, privileged};

/// A scrape well inside Prometheus's default scrape timeout (10 s), on 2 shared cores.
const SCRAPE_BUDGET: Duration = Duration::from_secs(8);

#[test]
fn a_scrape_with_a_full_blocklist_stays_inside_the_scrape_timeout() {
    if !privileged("a_scrape_with_a_full_blocklist_stays_inside_the_scrape_timeout") {
        return;
    }
    let mut filter = Filter::load().expect("the XDP program loads");
    filter.configure(&Settings::default()).expect("configured");
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

    let metrics = Metrics::for_pin_root(Locations {
        pin_root: pins.path().to_path_buf(),
        runtime_dir: pins.runtime_dir(),
    })
    .expect("the metrics");
    let scraping = Instant::now();
    let text = metrics.render().expect("rendered");
    let took = scraping.elapsed();
    println!(
        "a scrape with {MAX_BANS} bans: {:.2} s, {} bytes",
        took.as_secs_f64(),
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
    ] {
        assert!(text.lines().any(|l| l == line), "no {line:?} in:\n{text}");
    }
    assert!(
        took < SCRAPE_BUDGET,
        "a scrape took {took:?}, over {SCRAPE_BUDGET:?}"
    );
    drop(filter);
    drop(pins);
}
