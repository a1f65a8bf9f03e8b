//! End to end, in network namespaces: a real scanner (sipvicious's svmap) against an
//! address behind the attached filter gets no answer, while a legitimate OPTIONS and
//! REGISTER to an allowed domain reach a SIP responder (Kamailio) and are answered (sipp).
//!
//! Needs root and the test tools (`cargo xtask setup --test-tools`: kamailio,
//! sip-tester, sipvicious).

use std::{process::Command, time::Instant};

use sip_filter_tests::{
    lab::{
        assert_one_error_line, counter, filter_stats, legitimate_calls, scan, sip_filter,
        stats_json, svmap, xdp_attached, LabFixture, PinRoot, ALLOW_EXAMPLE_DOMAINS, DOMAIN,
        LAB_TOOLS, QUICK, SIP_PORT,
    },
    netns::{run_bounded, SERVER_IFACE, SERVER_V4},
    privileged,
};

#[test]
fn svmap_gets_no_answer_while_legitimate_options_and_register_do() {
    if !privileged("svmap_gets_no_answer_while_legitimate_options_and_register_do") {
        return;
    }
    let started = Instant::now();
    let binary = sip_filter();
    println!(
        "sip-filter binary: {} ({:.2} s)",
        binary.display(),
        started.elapsed().as_secs_f64()
    );

    // The lab, and the SIP responder in the foreground inside the server namespace.
    let mut rig = LabFixture::start("e2e-scan", LAB_TOOLS);
    let pin_dir = rig.pins.link_pin(SERVER_IFACE);
    println!(
        "lab {:?}, kamailio listening ({:.2} s)",
        rig.lab.names(),
        started.elapsed().as_secs_f64()
    );

    // Without the filter the scanner finds the server: the lab and the scanner work.
    let open = rig.transcript.keep("svmap, no filter", svmap(&rig.lab));
    let open_scan = scan(&open);
    assert!(
        open.success() && open_scan.probes >= 1 && open_scan.answers >= 1 && open_scan.found,
        "without the filter svmap should find {SERVER_V4}:{SIP_PORT} \
         (probes {}, answers {}):\n{open}",
        open_scan.probes,
        open_scan.answers
    );
    assert!(
        open.stdout.contains("kamailio"),
        "svmap should report Kamailio's Server header:\n{open}"
    );
    println!(
        "svmap without the filter: {} probe(s), {} answer(s), found the server",
        open_scan.probes, open_scan.answers
    );

    // The filter on the server's interface.
    let (mut daemon, attached) = rig.start_filter();
    println!("{attached} ({:.2} s)", started.elapsed().as_secs_f64());
    assert!(pin_dir.exists(), "no link pinned at {}", pin_dir.display());
    assert!(xdp_attached(&rig.lab), "no XDP program on {SERVER_IFACE}");

    // The scanner again: its probe (Request-URI host: the IP literal) is dropped.
    let closed = rig
        .transcript
        .keep("svmap, filter attached", svmap(&rig.lab));
    let closed_scan = scan(&closed);
    assert!(
        closed.success() && closed_scan.probes >= 1,
        "svmap should have run and probed:\n{closed}"
    );
    assert!(
        closed_scan.answers == 0 && !closed_scan.found && closed.stderr.contains("found nothing"),
        "behind the filter svmap should get no answer (answers {}):\n{closed}",
        closed_scan.answers
    );
    println!(
        "svmap behind the filter: {} probe(s), no answer",
        closed_scan.probes
    );

    // Legitimate requests to the allowed domain are answered.
    for (step, target, call) in legitimate_calls(&mut rig.transcript, &rig.lab, rig.dir.path()) {
        assert!(
            call.success(),
            "{step} to {target} should be answered with 200 (sipp exits 0):\n{call}"
        );
    }

    // The counters agree.
    let stats = rig.transcript.keep(
        "sip-filter stats",
        filter_stats(&rig.lab, binary, &rig.pins),
    );
    let json = stats_json(&stats).unwrap_or_else(|e| panic!("{e:#}"));
    println!("stats: {json}");
    // svmap's probe is dropped by its User-Agent (friendly-scanner) before its unknown
    // Request-URI host is looked at; either way it is dropped.
    let dropped = counter(&json, "reasons", "drop_scanner")
        + counter(&json, "reasons", "drop_unknown_domain");
    let scanner_bans = counter(&json, "bans_added", "scanner");
    let passed = counter(&json, "reasons", "pass_request");
    let options_seen = counter(&json, "methods", "OPTIONS");
    let registers_seen = counter(&json, "methods", "REGISTER");
    let probes = u64::try_from(closed_scan.probes).expect("a count");
    assert!(
        dropped >= probes,
        "drop_scanner + drop_unknown_domain {dropped}, but svmap sent {probes} probe(s): {json}"
    );
    assert!(
        scanner_bans >= 1,
        "svmap's source should be banned for its User-Agent: {json}"
    );
    assert!(
        passed >= 3,
        "pass_request {passed}, expected >= 3 (sipp): {json}"
    );
    assert!(
        options_seen >= probes + 2,
        "methods.OPTIONS {options_seen}, expected >= {probes} (svmap) + 2 (sipp): {json}"
    );
    assert!(
        registers_seen >= 1,
        "methods.REGISTER {registers_seen}: {json}"
    );

    // SIGINT detaches the filter and removes its rig.pins.
    rig.stop_filter(&mut daemon);

    // Nothing leaks: processes, pins, namespaces.
    rig.tear_down([daemon]);
    println!("done in {:.2} s", started.elapsed().as_secs_f64());
}

#[test]
fn stats_without_a_filter_exits_3_and_says_how_to_start_one() {
    // Reads pins only: no root needed.
    let pins = PinRoot::new("stats-none");
    for extra in [&[][..], &["--iface", "veth-server"][..]] {
        let mut command = Command::new(sip_filter());
        command
            .args(["stats", "--json", "--pin-root", pins.arg()])
            .args(extra);
        let stats = run_bounded(command, QUICK);
        assert_eq!(stats.code(), Some(3), "{stats}");
        assert!(
            stats.stderr.contains("no filter is loaded")
                && stats.stderr.contains("sip-filter run --iface"),
            "the error should say how to start a filter:\n{stats}"
        );
        assert!(stats.stdout.is_empty(), "{stats}");
    }
    assert!(
        !pins.path().exists(),
        "stats created {}",
        pins.path().display()
    );
}

#[test]
fn run_on_a_missing_interface_exits_2_with_one_line() {
    if !privileged("run_on_a_missing_interface_exits_2_with_one_line") {
        return;
    }
    let pins = PinRoot::new("run-missing");
    let mut command = Command::new(sip_filter());
    command.args([
        "run",
        "--iface",
        "does-not-exist",
        "--domain",
        DOMAIN,
        ALLOW_EXAMPLE_DOMAINS,
        "--pin-root",
        pins.arg(),
    ]);
    let run = run_bounded(command, QUICK);
    assert_one_error_line(&run, "does-not-exist");
    assert!(
        !pins.path().exists(),
        "a failed run left {}",
        pins.path().display()
    );
}

/// A reserved example domain left in place would drop every real request: `run`
/// refuses to enforce it (exit 2, one line saying what to do) before touching the
/// kernel, unless in dry-run or told so. Needs no root: nothing is loaded.
#[test]
fn run_with_example_domains_exits_2_with_one_line() {
    let pins = PinRoot::new("run-example-domains");
    let run_with = |extra: &[&str]| {
        let mut command = Command::new(sip_filter());
        command
            .args(["run", "--iface", "does-not-exist", "--domain", DOMAIN])
            .args(extra)
            .args(["--pin-root", pins.arg()]);
        run_bounded(command, QUICK)
    };
    let line = assert_one_error_line(&run_with(&[]), "reserved example domains");
    assert!(
        line.contains(DOMAIN) && line.contains("allow_example_domains = true"),
        "{line}"
    );
    // Allowed, it goes on to the next check: the interface.
    assert_one_error_line(&run_with(&[ALLOW_EXAMPLE_DOMAINS]), "does-not-exist");
    assert!(
        !pins.path().exists(),
        "a refused run left {}",
        pins.path().display()
    );
}
