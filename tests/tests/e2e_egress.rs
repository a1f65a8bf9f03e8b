//! End to end, in network namespaces: the egress program that watches the server's
//! answers (issue 13) is attached beside XDP by the real daemon, in each attach mode the
//! kernel has (tcx on 6.6 and newer, a clsact filter on every kernel), and goes with it.
//!
//! For each mode: after start the egress program is attached to the filtered interface
//! (asked of the kernel, and as `status` reports it); Kamailio's answers leaving through
//! that interface raise its counters (`stats`); SIGINT detaches it; after a SIGKILL it
//! stays attached (like the XDP program), a second start replaces it with exactly one
//! attachment, and `unload` leaves nothing of ours attached.
//!
//! Needs root and the test tools (`cargo xtask setup --test-tools`: kamailio, iproute2).

use std::time::Duration;

use serde_json::Value;
use sip_filter_tests::{
    lab::{
        auto_egress_mode, egress_attached_in, sip_filter, sip_probe, spawn_filter, xdp_attached,
        EgressAttached, LabFixture, DOMAIN, KAMAILIO_TOOLS, QUICK,
    },
    netns::{Background, Host, Lab, CLIENT_V4, SERVER_IFACE, SIGKILL},
    privileged,
};

/// OPTIONS sent per check: each answered by Kamailio through the filtered interface.
const PROBES: u64 = 5;
/// How long a probe waits for Kamailio's answer.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

#[test]
fn egress_program_attaches_counts_answers_and_goes_with_the_filter() {
    if !privileged("egress_program_attaches_counts_answers_and_goes_with_the_filter") {
        return;
    }
    // clsact is asked for on every kernel, so the older kernels' path runs on the host
    // too.
    let auto = auto_egress_mode();
    let mut rig = LabFixture::start("e2e-egress", KAMAILIO_TOOLS);
    for (mode, expected) in [("auto", auto), ("clsact", "clsact")] {
        println!("--egress-mode {mode}: expecting {expected}");
        check_mode(&mut rig, mode, expected);
    }
    rig.tear_down([]);
}

fn check_mode(rig: &mut LabFixture, mode: &str, expected: &str) {
    let attached_once = match expected {
        "tcx" => EgressAttached { tcx: 1, clsact: 0 },
        _ => EgressAttached { tcx: 0, clsact: 1 },
    };

    // Started: attached the way `status` says, and counting the answers leaving.
    let mut daemon = start(rig, mode);
    assert_eq!(egress_attached(&rig.lab), attached_once, "{}", daemon.log());
    let status = status_json(rig);
    assert_eq!(status["interfaces"][0]["name"], SERVER_IFACE, "{status}");
    assert_eq!(status["interfaces"][0]["egress"], expected, "{status}");
    assert_answers_counted(rig, "started");

    // SIGINT: detached, the clsact qdisc's filter gone with it.
    rig.stop_filter(&mut daemon);
    assert_eq!(
        egress_attached(&rig.lab),
        EgressAttached::default(),
        "{}",
        daemon.log()
    );
    drop(daemon);

    // SIGKILL: still attached and counting, like the XDP program; a second start takes
    // over with exactly one attachment.
    let mut daemon = start(rig, mode);
    daemon.signal(SIGKILL);
    daemon.wait(QUICK).expect("killed");
    assert_eq!(
        egress_attached(&rig.lab),
        attached_once,
        "left by the crash"
    );
    assert_answers_counted(rig, "after the crash");
    let mut daemon = start(rig, mode);
    assert_eq!(egress_attached(&rig.lab), attached_once, "{}", daemon.log());
    assert_answers_counted(rig, "restarted");

    // unload: nothing of ours attached, no pins.
    let unloaded = rig.transcript.keep(
        &format!("unload ({mode})"),
        cli(&rig.lab, rig.pins.arg(), &["unload"]),
    );
    assert!(unloaded.success(), "{unloaded}");
    daemon.wait(QUICK).expect("unload stops the daemon");
    assert_eq!(egress_attached(&rig.lab), EgressAttached::default());
    assert!(!xdp_attached(&rig.lab), "XDP left after unload");
    assert!(!rig.pins.path().exists(), "pins left after unload");
}

fn start(rig: &mut LabFixture, mode: &str) -> Background {
    let (daemon, attached) = spawn_filter(
        &rig.lab,
        sip_filter(),
        &rig.pins,
        &["--domain", DOMAIN, "--egress-mode", mode],
        &rig.dir.path().join(format!("sip-filter-{mode}.log")),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    rig.transcript.note(attached);
    daemon
}

fn egress_attached(lab: &Lab) -> EgressAttached {
    egress_attached_in(lab.ns(Host::Server), SERVER_IFACE)
}

fn cli(lab: &Lab, pin_root: &str, args: &[&str]) -> sip_filter_tests::netns::Finished {
    let mut all = args.to_vec();
    all.extend_from_slice(&["--pin-root", pin_root]);
    lab.run(Host::Server, sip_filter(), &all, QUICK)
}

fn status_json(rig: &mut LabFixture) -> Value {
    let status = rig.transcript.keep(
        "status --json",
        cli(&rig.lab, rig.pins.arg(), &["status", "--json"]),
    );
    assert!(status.success(), "{status}");
    serde_json::from_str(&status.stdout).unwrap_or_else(|e| panic!("not JSON ({e}):\n{status}"))
}

/// Sends [`PROBES`] OPTIONS, each answered by Kamailio, and checks that the egress
/// program's counters (all kinds) grew by at least as many packets.
fn assert_answers_counted(rig: &mut LabFixture, step: &str) {
    let before = answers_total(rig, &format!("stats ({step}, before)"));
    for _ in 0..PROBES {
        let status = sip_probe(
            &rig.lab,
            CLIENT_V4.parse().expect("an address"),
            "OPTIONS",
            &format!("sip:alice@{DOMAIN}"),
            "sip-filter-e2e-egress",
            PROBE_TIMEOUT,
        )
        .unwrap_or_else(|e| panic!("{e:#}"));
        assert_eq!(status, Some(200), "{step}: Kamailio answers");
    }
    let after = answers_total(rig, &format!("stats ({step}, after)"));
    assert!(
        after >= before + PROBES,
        "{step}: {PROBES} answers left, the counters went from {before} to {after}"
    );
}

/// The egress program's counters, all kinds summed, from `stats --json`.
fn answers_total(rig: &mut LabFixture, step: &str) -> u64 {
    let stats = rig.transcript.stats(step, &rig.lab, &rig.pins);
    stats["answers"]
        .as_object()
        .unwrap_or_else(|| panic!("no answers in {stats}"))
        .values()
        .map(|n| n.as_u64().expect("a count"))
        .sum()
}
