//! `sip-filter replay`: a capture recorded (tcpdump as pcap, dumpcap as pcapng) on the
//! client's side while svmap scanned and sipp sent legitimate requests, replayed
//! through the program, gets the verdicts the attached filter gave the same packets.
//! Captures written by the tests (every link type, a brute force, bad input) are
//! replayed in `replay_captures`, beside the labs: they need no network.
//!
//! Needs root and the test tools (`cargo xtask setup --test-tools`: kamailio,
//! sip-tester, sipvicious, tcpdump, wireshark-common).

use std::{path::Path, process::Command, time::Instant};

use serde_json::Value;
use sip_filter_common::Reason;
use sip_filter_tests::{
    lab::{
        filter_stats, legitimate_calls, sip_filter, sip_probe, stats_json, svmap, LabFixture,
        DOMAIN, LAB_TOOLS, QUICK, SIP_PORT,
    },
    netns::{
        run_bounded, Background, Host, Lab, CLIENT_IFACE, LEGIT_CLIENT_V4, SERVER_V4, SERVER_V6,
        SIGINT,
    },
    privileged,
    replay::replay_lab_json,
};

/// The capture filter: what the server's XDP program is asked about, SIP to it. (The
/// live filter also sees ARP, neighbour discovery and ICMP errors, all `pass_not_sip`,
/// which a capture of SIP leaves out.)
fn sip_to_server() -> String {
    format!("udp dst port {SIP_PORT} and (dst host {SERVER_V4} or dst host {SERVER_V6})")
}

/// A capture program running in the client namespace.
struct Capturing {
    process: Background,
    file: std::path::PathBuf,
}

/// Starts tcpdump (pcap) or dumpcap (pcapng) on the client's interface and waits until
/// it listens.
fn start_capture(lab: &Lab, dir: &Path, pcapng: bool) -> Capturing {
    let (program, file, ready) = if pcapng {
        ("dumpcap", dir.join("capture.pcapng"), "Capturing on")
    } else {
        ("tcpdump", dir.join("capture.pcap"), "listening on")
    };
    let path = file.to_str().expect("a UTF-8 path").to_string();
    let filter = sip_to_server();
    let args: Vec<&str> = if pcapng {
        vec!["-i", CLIENT_IFACE, "-f", &filter, "-w", &path]
    } else {
        // -U: each packet written as it comes, so a stop loses none.
        vec!["-i", CLIENT_IFACE, "-n", "-U", "-w", &path, &filter]
    };
    let mut process = lab
        .spawn(
            Host::Client,
            program,
            program,
            &args,
            &dir.join(format!("{program}.log")),
        )
        .unwrap_or_else(|e| panic!("{e:#}"));
    process
        .wait_for_log(ready, QUICK)
        .unwrap_or_else(|e| panic!("{e}"));
    Capturing { process, file }
}

/// Stops a capture with SIGINT (it flushes and closes the file), within QUICK.
fn stop_capture(capture: &mut Capturing) {
    capture.process.signal(SIGINT);
    let status = capture.process.wait(QUICK);
    assert!(
        status.is_some_and(|s| s.success()),
        "the capture did not stop cleanly on SIGINT ({status:?}):\n{}",
        capture.process.log()
    );
}

fn reasons_of(stats: &Value) -> Vec<(&'static str, u64)> {
    Reason::ALL
        .iter()
        .map(|r| (r.name(), stats["reasons"][r.name()].as_u64().unwrap_or(0)))
        .collect()
}

#[test]
fn a_capture_replays_to_the_verdicts_the_attached_filter_gave() {
    if !privileged("a_capture_replays_to_the_verdicts_the_attached_filter_gave") {
        return;
    }
    let started = Instant::now();
    let binary = sip_filter();

    let mut rig = LabFixture::start("e2e-replay", &[LAB_TOOLS, &["tcpdump", "dumpcap"]].concat());
    let (mut daemon, attached) = rig.start_filter();
    println!("{attached} ({:.2} s)", started.elapsed().as_secs_f64());

    // Both captures record the same traffic, on the client's side: XDP drops packets
    // on the server's interface before a capture there would see them.
    let mut pcap = start_capture(&rig.lab, rig.dir.path(), false);
    let mut pcapng = start_capture(&rig.lab, rig.dir.path(), true);
    let before = stats_json(
        &rig.transcript
            .keep("stats before", filter_stats(&rig.lab, binary, &rig.pins)),
    )
    .unwrap_or_else(|e| panic!("{e:#}"));

    // svmap twice (its probe bans its source; the second is dropped as banned), then
    // legitimate requests, and one for a domain the server does not serve.
    for step in ["svmap", "svmap again"] {
        let scan = rig.transcript.keep(step, svmap(&rig.lab));
        assert!(scan.success(), "{scan}");
    }
    for (step, _, call) in legitimate_calls(&mut rig.transcript, &rig.lab, rig.dir.path()) {
        assert!(call.success(), "{step} should be answered:\n{call}");
    }
    let unknown = sip_probe(
        &rig.lab,
        LEGIT_CLIENT_V4.parse().expect("an address"),
        "OPTIONS",
        "sip:alice@elsewhere.test",
        "sip-filter-e2e",
        std::time::Duration::from_secs(1),
    )
    .unwrap_or_else(|e| panic!("{e:#}"));
    assert_eq!(unknown, None, "an unknown domain should get no answer");

    let after = stats_json(
        &rig.transcript
            .keep("stats after", filter_stats(&rig.lab, binary, &rig.pins)),
    )
    .unwrap_or_else(|e| panic!("{e:#}"));
    stop_capture(&mut pcap);
    stop_capture(&mut pcapng);
    rig.stop_filter(&mut daemon);
    println!(
        "traffic captured ({:.2} s)",
        started.elapsed().as_secs_f64()
    );

    // What the attached filter counted, reason by reason, during the captures.
    let live: Vec<(&str, u64)> = reasons_of(&after)
        .into_iter()
        .zip(reasons_of(&before))
        .map(|((name, after), (_, before))| (name, after - before))
        .collect();
    rig.transcript
        .note(format!("live counter deltas: {live:?}"));
    let count = |counts: &[(&str, u64)], name: &str| {
        counts
            .iter()
            .find(|(n, _)| *n == name)
            .map_or(0, |(_, c)| *c)
    };
    assert!(count(&live, "drop_scanner") >= 1, "{live:?}");
    assert!(count(&live, "drop_banned") >= 1, "{live:?}");
    assert!(count(&live, "pass_request") >= 3, "{live:?}");
    assert!(count(&live, "drop_unknown_domain") >= 1, "{live:?}");

    // The pcap paced as captured, the pcapng as fast as it goes: this traffic is far
    // below every rate limit, so both must give the live verdicts.
    for (capture, extra) in [(&pcap.file, &["--realtime"][..]), (&pcapng.file, &[][..])] {
        let (finished, packets, summary) = replay_lab_json(capture, extra);
        rig.transcript
            .note(format!("{}: {summary}", capture.display()));
        let replayed = reasons_of(&summary);
        for (name, live_count) in &live {
            let replayed_count = count(&replayed, name);
            if *name == "pass_not_sip" {
                // ARP and neighbour discovery reached the live filter, not the capture.
                assert_eq!(replayed_count, 0, "{}", finished);
                continue;
            }
            assert_eq!(
                replayed_count, *live_count,
                "{}: {name}: replayed {replayed_count}, live {live_count}\nlive {live:?}\nreplay {summary}\n{}",
                capture.display(),
                finished.stdout
            );
        }
        assert_eq!(summary["verdicts"]["skipped"], Value::Null, "{summary}");
        assert_eq!(summary["bans_made"]["scanner"], 1, "{summary}");
        assert_eq!(
            summary["banned_at_end"][0]["source"], "198.18.0.1",
            "{summary}"
        );
        // Packet by packet: the ban comes before the banned ones, and the legitimate
        // requests name their method.
        let first = |reason: &str| {
            packets
                .iter()
                .position(|p| p["reason"] == reason)
                .unwrap_or_else(|| panic!("no {reason} packet:\n{}", finished.stdout))
        };
        assert!(first("drop_scanner") < first("drop_banned"));
        assert_eq!(packets[first("drop_scanner")]["bans"][0], "scanner");
        assert_eq!(packets[first("drop_scanner")]["verdict"], "drop");
        assert!(packets.iter().any(|p| p["reason"] == "pass_request"
            && p["method"] == "REGISTER"
            && p["verdict"] == "pass"));
        println!(
            "{}: {} packets replayed, reasons equal to the live filter's ({:.2} s)",
            capture.display(),
            packets.len(),
            started.elapsed().as_secs_f64()
        );
    }

    // The text form, for a person: one line per packet and the summary tables.
    let mut command = Command::new(sip_filter());
    command
        .arg("replay")
        .arg(&pcap.file)
        .args(["--domain", DOMAIN]);
    let text = run_bounded(command, QUICK);
    assert!(text.success(), "{text}");
    println!("{}", text.stdout);
    assert!(
        text.stdout.contains("drop_scanner") && text.stdout.contains("[ban:scanner]"),
        "{text}"
    );

    // Dry-run: the same verdicts counted, nothing dropped, no ban made, so svmap's
    // second probe is a scanner again rather than banned.
    let config = rig.dir.path().join("dry-run.toml");
    std::fs::write(&config, "[filter]\ndry_run = true\n").expect("a config file");
    let config = config.to_str().expect("a UTF-8 path");
    let (finished, packets, summary) = replay_lab_json(&pcap.file, &["--config", config]);
    assert!(
        packets.iter().all(|p| p["verdict"] == "pass"),
        "{}",
        finished.stdout
    );
    assert_eq!(summary["reasons"]["drop_banned"], 0, "{summary}");
    assert_eq!(
        summary["reasons"]["drop_scanner"],
        count(&live, "drop_scanner") + count(&live, "drop_banned"),
        "{summary}"
    );
    assert_eq!(summary["banned_at_end"], Value::Array(vec![]), "{summary}");

    rig.tear_down([daemon, pcap.process, pcapng.process]);
    println!("done in {:.2} s", started.elapsed().as_secs_f64());
}
