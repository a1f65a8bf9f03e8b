//! Quiet under attack, end to end: a flood from 400 addresses of the client namespace,
//! half of them scanners (a ban each) and half asking for an unknown domain (a drop
//! event per source per second, no ban); the daemon logs the first lines of each
//! second one by one and the rest as one aggregated line per class, while every ban is
//! still made.
//!
//! Needs root and the lab's tools (`cargo xtask setup --test-tools`).

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket},
    thread,
    time::{Duration, Instant},
};

use sip_filter_tests::{
    lab::{
        options_uri, server_for, sip_filter, sip_request, start_filter_with_config, write_file,
        LabFixture, DOMAIN, LAB_TOOLS,
    },
    netns::{Background, Host},
    pathbench::{clock_ticks_per_second, process_ticks},
    privileged,
};

/// Flood sources: 198.19.1.1 and up, on the client's interface.
const SOURCES: u32 = 400;
/// Each source sends this many OPTIONS, a round every [`ROUND_GAP`].
const ROUNDS: u32 = 4;
const ROUND_GAP: Duration = Duration::from_millis(700);
/// The daemon's budgets of lines a second (sip_filter::events' constants).
const DROP_LINES_PER_SECOND: usize = 20;
const BAN_LINES_PER_SECOND: usize = 100;
/// Requests for it are dropped, one drop event per source per second, and not banned
/// at once.
const UNKNOWN_DOMAIN_URI: &str = "sip:alice@unknown.example.test";
/// How long the daemon gets to read and log what the kernel sent (a loaded machine).
const PATIENCE: Duration = Duration::from_secs(30);

fn flood_sources() -> Vec<IpAddr> {
    (0..SOURCES)
        .map(|n| IpAddr::V4(Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 19, 1, 1)) + n)))
        .collect()
}

/// The sum of `key=N` over `lines`.
fn sum_of(lines: &[&str], key: &str) -> u64 {
    let prefix = format!(" {key}=");
    lines
        .iter()
        .filter_map(|line| {
            let (_, rest) = line.split_once(&prefix)?;
            rest.split(' ').next()?.parse::<u64>().ok()
        })
        .sum()
}

/// The daemon's CPU time so far, in seconds.
fn cpu_seconds(daemon: &Background) -> f64 {
    process_ticks(daemon.pid()) as f64 / clock_ticks_per_second()
}

#[test]
fn a_flood_from_400_sources_is_logged_in_aggregated_lines() {
    if !privileged("a_flood_from_400_sources_is_logged_in_aggregated_lines") {
        return;
    }
    sip_filter();
    let mut rig = LabFixture::start("e2e-quiet", LAB_TOOLS);
    let sources = flood_sources();
    let cidrs: Vec<String> = sources.iter().map(|a| format!("{a}/32")).collect();
    rig.lab
        .add_addresses(Host::Client, &cidrs)
        .unwrap_or_else(|e| panic!("{e:#}"));
    let config = write_file(
        rig.dir.path(),
        "sip-filter.toml",
        &format!("[filter]\ndomains = [\"{DOMAIN}\"]\n"),
    );
    let log = rig.dir.path().join("sip-filter.log");
    let (daemon, attached) =
        start_filter_with_config(&rig.lab, sip_filter(), &rig.pins, &config, &log)
            .unwrap_or_else(|e| panic!("{e:#}"));
    rig.transcript.note(attached);
    let cpu_before = cpu_seconds(&daemon);

    let flood_started = Instant::now();
    rig.lab
        .in_namespace(Host::Client, || {
            let sockets: Vec<UdpSocket> = sources
                .iter()
                .map(|&source| {
                    UdpSocket::bind(SocketAddr::new(source, 0))
                        .unwrap_or_else(|e| panic!("binding a UDP socket to {source}: {e}"))
                })
                .collect();
            for round in 0..ROUNDS {
                for (n, socket) in sockets.iter().enumerate() {
                    let local = socket.local_addr().expect("a bound socket");
                    let (uri, user_agent) = if n % 2 == 0 {
                        (options_uri(), "friendly-scanner")
                    } else {
                        (UNKNOWN_DOMAIN_URI.to_string(), "sip-filter-e2e")
                    };
                    let request = sip_request(
                        "OPTIONS",
                        &uri,
                        local,
                        &format!("quiet-{n}-{round}"),
                        user_agent,
                    );
                    socket
                        .send_to(request.as_bytes(), server_for(local.ip()))
                        .unwrap_or_else(|e| panic!("sending from {local}: {e}"));
                }
                thread::sleep(ROUND_GAP);
            }
        })
        .unwrap_or_else(|e| panic!("{e:#}"));
    let flood_seconds = flood_started.elapsed().as_secs_f64();

    // Every ban is made, and the kernel's events all read: each ban has its line or is
    // counted in an aggregated one (the ring buffer may have lost some on a loaded
    // machine: the kernel counts those).
    let stats = rig.transcript.stats("after the flood", &rig.lab, &rig.pins);
    let scanner_bans = stats["bans_added"]["scanner"]
        .as_u64()
        .expect("a ban count");
    assert_eq!(scanner_bans, u64::from(SOURCES / 2), "{stats}");
    // Repeated unknown domains may ban too, by the default policy.
    let bans: u64 = stats["bans_added"]
        .as_object()
        .expect("bans by reason")
        .values()
        .filter_map(|count| count.as_u64())
        .sum();
    let lost = stats["events_lost"].as_u64().expect("a lost-event count");
    let deadline = Instant::now() + PATIENCE;
    loop {
        let text = daemon.log();
        let lines: Vec<&str> = text.lines().collect();
        let ban_lines = lines.iter().filter(|l| l.contains(" event=ban ")).count();
        let aggregated = sum_of(
            &lines
                .iter()
                .copied()
                .filter(|l| l.contains(" event=bans_aggregated "))
                .collect::<Vec<_>>(),
            "events",
        );
        if ban_lines as u64 + aggregated + lost >= bans || Instant::now() > deadline {
            break;
        }
        thread::sleep(Duration::from_millis(200));
    }
    // The last second's aggregate is logged when that second is over.
    thread::sleep(Duration::from_millis(1500));
    let cpu = cpu_seconds(&daemon) - cpu_before;
    let text = daemon.log();
    let lines: Vec<&str> = text.lines().collect();
    let with = |needle: &str| -> Vec<&str> {
        lines
            .iter()
            .copied()
            .filter(|l| l.contains(needle))
            .collect()
    };
    let (ban_lines, bans_aggregated) = (with(" event=ban "), with(" event=bans_aggregated "));
    let (drop_lines, drops_aggregated) = (with(" event=drop "), with(" event=drops_aggregated "));
    let context = format!(
        "{} ban lines, {} drop lines, aggregated: {bans_aggregated:#?}\n{drops_aggregated:#?}\n\
         flood {flood_seconds:.1} s; {lost} events lost; stats {stats}",
        ban_lines.len(),
        drop_lines.len(),
    );
    println!(
        "{SOURCES} sources x {ROUNDS} rounds: {} event lines ({} ban, {} drop, {} aggregated); \
         the daemon used {cpu:.2} CPU s over the flood and its logging",
        ban_lines.len() + drop_lines.len() + bans_aggregated.len() + drops_aggregated.len(),
        ban_lines.len(),
        drop_lines.len(),
        bans_aggregated.len() + drops_aggregated.len()
    );

    // The first lines of a second are as ever; the rest is aggregated.
    assert!(
        ban_lines.len() >= BAN_LINES_PER_SECOND,
        "fewer ban lines than a second's budget: {context}"
    );
    assert!(
        !bans_aggregated.is_empty() && !drops_aggregated.is_empty(),
        "{context}"
    );
    let aggregated_bans = sum_of(&bans_aggregated, "events");
    assert!(
        ban_lines.len() as u64 + aggregated_bans <= bans
            && ban_lines.len() as u64 + aggregated_bans + lost >= bans,
        "{bans} bans: {context}"
    );
    assert!(
        bans_aggregated
            .iter()
            .all(|l| l.contains(" reasons=scanner:") && l.contains(" top=\"198.19.")),
        "{context}"
    );
    assert!(
        drops_aggregated
            .iter()
            .all(|l| l.contains(" reasons=drop_unknown_domain:")),
        "{context}"
    );
    // Each second's drop lines within its budget: fewer than one per source.
    assert!(
        drop_lines.len() >= DROP_LINES_PER_SECOND && drop_lines.len() < (SOURCES / 2) as usize,
        "{context}"
    );
    // Far fewer lines than events.
    let events = ban_lines.len() as u64
        + aggregated_bans
        + drop_lines.len() as u64
        + sum_of(&drops_aggregated, "events");
    let event_lines =
        ban_lines.len() + drop_lines.len() + bans_aggregated.len() + drops_aggregated.len();
    assert!(
        (event_lines as u64) * 2 < events,
        "{event_lines} event lines for {events} events: {context}"
    );
}
