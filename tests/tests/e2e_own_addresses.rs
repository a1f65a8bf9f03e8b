//! With no `own_addresses` configured, the daemon takes the addresses of the
//! interfaces it is attached to: a request addressed to the server by IP
//! (`OPTIONS sip:100@198.18.0.2`, as a carrier's `INVITE sip:DID@<address>` is) passes
//! the domain check, and an address added to the interface counts after a reload.
//!
//! Needs root and the lab's tools (`cargo xtask setup --test-tools`).

use std::time::Duration;

use sip_filter_tests::{
    lab::{
        sip_filter, sip_probe, start_filter_with_config, write_file, LabFixture, DOMAIN, LAB_TOOLS,
        QUICK,
    },
    netns::{Host, LEGIT_CLIENT_V4, SERVER_IFACE, SERVER_V4, SERVER_V6},
    privileged,
};

/// An address the test adds to the server's interface while the filter runs.
const ADDED_V4: &str = "198.18.0.77";
const PROBE_TIMEOUT: Duration = Duration::from_millis(1500);
const OWN_ADDRESSES_LOGGED: &str = "taken from the interfaces:";

#[test]
fn own_addresses_default_to_the_interfaces_and_follow_a_reload() {
    if !privileged("own_addresses_default_to_the_interfaces_and_follow_a_reload") {
        return;
    }
    let mut rig = LabFixture::start("e2e-own-addresses", LAB_TOOLS);
    let config = write_file(
        rig.dir.path(),
        "sip-filter.toml",
        &format!("[filter]\ndomains = [\"{DOMAIN}\"]\n"),
    );
    let log = rig.dir.path().join("sip-filter.log");
    let (mut daemon, attached) =
        start_filter_with_config(&rig.lab, sip_filter(), &rig.pins, &config, &log)
            .unwrap_or_else(|e| panic!("{e:#}"));
    rig.transcript.note(attached);
    // A plain User-Agent (not a scanner's), so only the domain check decides.
    let options_to = |host: &str| {
        let status = sip_probe(
            &rig.lab,
            LEGIT_CLIENT_V4.parse().expect("an address"),
            "OPTIONS",
            &format!("sip:100@{host}"),
            "Yealink SIP-T46S 66.86.0.15",
            PROBE_TIMEOUT,
        )
        .unwrap_or_else(|e| panic!("{e:#}"));
        format!("OPTIONS sip:100@{host}: {status:?}")
    };
    let answered = |host: &str| format!("OPTIONS sip:100@{host}: Some(200)");
    let unanswered = |host: &str| format!("OPTIONS sip:100@{host}: None");
    assert_eq!(
        options_to(SERVER_V4),
        answered(SERVER_V4),
        "{}",
        daemon.log()
    );
    // Logged before the daemon says it attached.
    let log_text = daemon.log();
    let taken = log_text
        .lines()
        .find(|line| line.contains(OWN_ADDRESSES_LOGGED))
        .unwrap_or_else(|| panic!("no {OWN_ADDRESSES_LOGGED:?} line:\n{log_text}"));
    for address in [SERVER_V4, SERVER_V6] {
        assert!(
            taken.contains(&format!("{address} ({SERVER_IFACE})")),
            "{address} not taken: {taken}"
        );
    }
    // Not (yet) the server's: an unknown domain.
    assert_eq!(
        options_to(ADDED_V4),
        unanswered(ADDED_V4),
        "{}",
        daemon.log()
    );

    rig.lab
        .ip(
            Host::Server,
            &[
                "addr",
                "add",
                &format!("{ADDED_V4}/32"),
                "dev",
                SERVER_IFACE,
            ],
        )
        .unwrap_or_else(|e| panic!("{e:#}"));
    daemon.signal(libc::SIGHUP);
    daemon
        .wait_for_log("configuration reloaded", QUICK)
        .unwrap_or_else(|e| panic!("{e}"));
    let log_text = daemon.log();
    let retaken = log_text
        .lines()
        .rfind(|line| line.contains(OWN_ADDRESSES_LOGGED))
        .unwrap_or_default();
    assert!(
        retaken.contains(&format!("{ADDED_V4} ({SERVER_IFACE})")),
        "the reload did not take {ADDED_V4}:\n{log_text}"
    );
    assert_eq!(options_to(ADDED_V4), answered(ADDED_V4), "{}", daemon.log());

    rig.stop_filter(&mut daemon);
    rig.tear_down([daemon]);
}
