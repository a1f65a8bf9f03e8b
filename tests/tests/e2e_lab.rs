//! The attack lab (`sip_filter_tests::gateway`): five network namespaces (attacker,
//! legitimate client, switch, gateway, server) start; Kamailio behind the gateway
//! challenges a REGISTER (401) and accepts it with the right password (200), and an
//! authenticated call completes; with sip-filter on the gateway's outside interface,
//! svmap gets no answer while the legitimate client still registers and calls; then
//! nothing of the lab is left: no namespace, no process, no pins.
//!
//! Needs root and the test tools (`cargo xtask setup --test-tools`).

use std::{path::Path, time::Instant};

use sip_filter_tests::{
    attack::{
        call_scenario, filter_json, legit_sipp, register_scenario, requests_seen, seen_from,
        start_gateway_filter, start_registrar, svmap, svmap_scan, ALICE, BOB, SVMAP_V4,
    },
    gateway::{GatewayLab, Node, OUTSIDE_IFACE, SERVER_V4},
    lab::{
        counter, require_tools, sip_filter, stats_json, stop_filter_in, xdp_attached_in, PinRoot,
        TempDir, Transcript, LAB_TOOLS, SIP_PORT,
    },
    netns::{ensure_namespaces_gone, send_signal, Finished},
    privileged,
};

/// Registers alice and bob, then alice calls bob: each must succeed, and the
/// registrations must have been challenged (401) before they were accepted (200).
fn register_and_call(lab: &GatewayLab, dir: &Path, tag: &str, transcript: &mut Transcript) {
    for account in [ALICE, BOB] {
        let step = format!("REGISTER {} ({tag})", account.extension);
        let name = format!("register-{}-{tag}", account.extension);
        let register = transcript.keep(
            &step,
            legit_sipp(lab, dir, &name, &register_scenario(account), 1, 1),
        );
        assert!(register.success(), "{step} should succeed:\n{register}");
        expect_message_row(&register, "401 <", 1);
        expect_message_row(&register, "200 <", 1);
    }
    let step = format!("call 1000 -> 1001 ({tag})");
    let call = transcript.keep(
        &step,
        legit_sipp(
            lab,
            dir,
            &format!("call-{tag}"),
            &call_scenario(ALICE, BOB),
            1,
            1,
        ),
    );
    assert!(call.success(), "{step} should complete:\n{call}");
    for row in ["407 <", "180 <", "200 <"] {
        expect_message_row(&call, row, 1);
    }
}

/// sipp's message table counted `count` messages on the row starting with `row`
/// (`401 <----------  1  0 ...`); the first such row.
fn expect_message_row(finished: &Finished, row: &str, count: u64) {
    let counted = finished
        .stdout
        .lines()
        .map(str::trim_start)
        .find(|line| line.starts_with(row))
        .and_then(|line| line.split_whitespace().nth(2))
        .and_then(|n| n.parse::<u64>().ok());
    assert_eq!(
        counted,
        Some(count),
        "sipp should have received {count} `{row}`:\n{finished}"
    );
}

#[test]
fn the_gateway_lab_authenticates_calls_blocks_svmap_and_leaves_nothing_behind() {
    if !privileged("the_gateway_lab_authenticates_calls_blocks_svmap_and_leaves_nothing_behind") {
        return;
    }
    require_tools(&[LAB_TOOLS, &["svwar", "svcrack", "sysctl"]].concat())
        .unwrap_or_else(|e| panic!("{e:#}"));
    let started = Instant::now();
    let binary = sip_filter();
    let since = || format!("{:.2} s", started.elapsed().as_secs_f64());

    let lab = GatewayLab::new().expect("the gateway lab builds");
    let namespaces = lab.names();
    let dir = TempDir::new("e2e-lab");
    let pins = PinRoot::new("e2e-lab");
    let pin_dir = pins.link_pin(OUTSIDE_IFACE);
    let mut transcript = Transcript::default();
    println!("gateway lab {namespaces:?} ({})", since());

    let mut kamailio = start_registrar(&lab, &dir.path().join("kamailio-open"))
        .unwrap_or_else(|e| panic!("{e:#}"));
    let kamailio_pid = kamailio.pid();
    println!("kamailio listening ({})", since());

    // Without the filter: through the gateway, the registrar challenges and accepts.
    register_and_call(&lab, dir.path(), "open", &mut transcript);
    let open_scan = transcript.keep("svmap, no filter", svmap(&lab, SVMAP_V4));
    let target = format!("{SERVER_V4}:{SIP_PORT}");
    let open = svmap_scan(&open_scan, false);
    assert!(
        open.found && open.answers >= 1,
        "without the filter svmap should find {target} through the gateway:\n{open_scan}"
    );
    println!(
        "without the filter: registered, called, svmap found the server ({})",
        since()
    );

    // With the filter on the gateway's outside interface.
    let (mut daemon, attached) =
        start_gateway_filter(&lab, binary, &pins, dir.path()).unwrap_or_else(|e| panic!("{e:#}"));
    transcript.note(attached);
    assert!(xdp_attached_in(lab.ns(Node::Gateway), OUTSIDE_IFACE));
    let closed_scan = transcript.keep("svmap, filter attached", svmap(&lab, SVMAP_V4));
    let closed = svmap_scan(&closed_scan, false);
    assert!(
        closed_scan.success() && closed.probes >= 1 && closed.answers == 0 && !closed.found,
        "behind the filter svmap should get no answer (probes {}, answers {}):\n{closed_scan}",
        closed.probes,
        closed.answers
    );
    register_and_call(&lab, dir.path(), "filtered", &mut transcript);
    let stats = stats_json(&transcript.keep("stats", filter_json(&lab, binary, &pins, &["stats"])))
        .unwrap_or_else(|e| panic!("{e:#}"));
    transcript.note(format!("stats: {stats}"));
    assert!(counter(&stats, "reasons", "drop_scanner") >= 1, "{stats}");
    assert_eq!(counter(&stats, "bans_added", "scanner"), 1, "{stats}");
    // What reached Kamailio: svmap's probe only before the filter.
    let seen = requests_seen(&kamailio.log());
    transcript.note(format!("requests Kamailio saw: {seen:?}"));
    assert_eq!(
        seen_from(&seen, "svmap"),
        u64::try_from(open.probes).unwrap(),
        "only the unfiltered scan should have reached Kamailio: {seen:?}"
    );
    println!(
        "with the filter: svmap unanswered, registered, called ({})",
        since()
    );

    // Tear down and check that nothing is left.
    stop_filter_in(lab.ns(Node::Gateway), OUTSIDE_IFACE, &mut daemon, &pin_dir)
        .unwrap_or_else(|e| panic!("{e:#}"));
    drop(daemon);
    kamailio.signal(sip_filter_tests::netns::SIGTERM);
    drop(kamailio);
    let left = lab.pids();
    assert!(left.is_empty(), "processes left in the lab: {left:?}");
    let pin_root = pins.path().to_path_buf();
    drop(pins);
    drop(lab);
    ensure_namespaces_gone(&namespaces).unwrap_or_else(|e| panic!("{e:#}"));
    assert!(!pin_root.exists(), "{} is left", pin_root.display());
    assert!(
        !send_signal(kamailio_pid, 0),
        "Kamailio ({kamailio_pid}) still runs"
    );
    println!("lab removed ({})", since());
}
