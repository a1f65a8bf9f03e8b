//! The benchmark (`cargo xtask bench`) in quick mode, so that it cannot rot: it runs,
//! measures every packet class (each taking the path it names: the bench checks the
//! verdicts) beside every reference program, sets the targeted classes against their
//! targets, measures state growth, runs every flood through every packet-path set-up
//! (each must drop some of it, with the legitimate client's calls counted), on both
//! paths (AF_PACKET frames, and live `xdp_frame`s as a NIC gives them), and writes
//! its JSON and its report (the password guessing aside: e2e_guessing_side_by_side runs
//! and checks it). No timing thresholds: the figures are the output.

use std::process::Command;

use sip_filter_tests::privileged;

const CLASSES: [&str; 14] = [
    "non-SIP UDP (DNS)",
    "scanner OPTIONS (400 B)",
    "allowed REGISTER",
    "unknown-domain INVITE",
    "allowed INVITE with SDP",
    "allowed OPTIONS over IPv6",
    "worst case: short To-like lines filling the window",
    "over the line budget: short To-like lines",
    "banned source",
    "SYN to the TCP SIP port",
    "TLS ClientHello (1.5 KB, post-quantum)",
    "scanner OPTIONS over TCP (400 B)",
    "allowed REGISTER over TCP",
    "TCP to a port that is not SIP",
];
const TARGETED: [&str; 9] = [
    "non-SIP UDP (DNS)",
    "scanner OPTIONS (400 B)",
    "allowed REGISTER",
    "allowed INVITE with SDP",
    "SYN to the TCP SIP port",
    "TLS ClientHello (1.5 KB, post-quantum)",
    "scanner OPTIONS over TCP (400 B)",
    "allowed REGISTER over TCP",
    "TCP to a port that is not SIP",
];
const SETUPS: [&str; 4] = ["sip-filter", "iptables", "nftables", "kamailio"];
const FLOODS: [&str; 2] = ["scanner OPTIONS", "REGISTER flood"];

#[test]
fn bench_runs_in_quick_mode() {
    if !privileged("bench_runs_in_quick_mode") {
        return;
    }
    let dir = std::env::temp_dir();
    let json = dir.join(format!("sip-filter-bench-{}.json", std::process::id()));
    let markdown = dir.join(format!("sip-filter-bench-{}.md", std::process::id()));
    let output = Command::new(env!("CARGO_BIN_EXE_bench"))
        .arg("--quick")
        // The password guessing in quick mode is e2e_guessing_side_by_side's run, which
        // checks its outcome: a second run here would add a minute and check nothing.
        .arg("--no-guessing")
        .arg("--json")
        .arg(&json)
        .arg("--markdown")
        .arg(&markdown)
        .output()
        .expect("the bench binary starts");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "bench --quick failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    println!("{stdout}");
    for class in CLASSES {
        assert!(stdout.contains(class), "no line for {class}:\n{stdout}");
    }
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).expect("the JSON was written"))
            .expect("the JSON parses");
    let report = std::fs::read_to_string(&markdown).expect("the report was written");
    std::fs::remove_file(&json).ok();
    std::fs::remove_file(&markdown).ok();

    let classes = doc["classes"].as_array().expect("a classes array");
    assert_eq!(classes.len(), CLASSES.len());
    for class in classes {
        for key in [
            "sip_filter_ns",
            "ref_drop_ns",
            "ref_parse_headers_ns",
            "ref_parse_update_ns",
            "ref_scan_ns",
            "ref_calls_ns",
        ] {
            assert!(class[key].is_u64(), "{key} missing in {class}");
        }
        let targeted = TARGETED.contains(&class["class"].as_str().unwrap());
        assert_eq!(class["target"]["met"].is_boolean(), targeted, "{class}");
    }

    let rows = doc["state_growth"]["rows"]
        .as_array()
        .expect("state growth rows");
    assert_eq!(rows.len(), 3);
    for row in rows {
        for key in [
            "banned_source_ns",
            "denied_source_ns",
            "allowed_REGISTER_ns",
        ] {
            assert!(row[key].is_u64(), "{key} missing in {row}");
        }
    }

    // The allowed INVITE's cost with destination rules, one step at a time (issue 18).
    let steps = doc["destinations"]["steps"]
        .as_array()
        .expect("the INVITE's cost, step by step");
    assert_eq!(steps.len(), 5, "{steps:?}");
    for (i, step) in steps.iter().enumerate() {
        assert!(step["ns"].is_u64(), "{step}");
        assert_eq!(step["added_ns"].is_i64(), i > 0, "{step}");
    }
    assert!(
        report.contains("## An allowed INVITE with destination rules"),
        "{report}"
    );

    let runs = doc["packet_path"]["runs"]
        .as_array()
        .expect("packet path runs");
    for setup in SETUPS {
        for flood in FLOODS {
            let run = runs
                .iter()
                .find(|r| r["setup"] == setup && r["flood"] == flood)
                .unwrap_or_else(|| panic!("no {setup} run with the {flood}: {runs:?}"));
            let sent = run["sent"].as_u64().unwrap();
            let unanswered = run["unanswered"].as_u64().unwrap();
            assert!(sent > 0, "{setup}, {flood}: nothing sent: {run}");
            assert!(unanswered > 0, "{setup}, {flood}: nothing dropped: {run}");
            assert!(run["cpu_seconds"].is_f64(), "{run}");
            assert!(
                run["legit_calls"].as_u64().unwrap() > 0,
                "{setup}, {flood}: the legitimate client's calls were not counted: {run}"
            );
        }
    }
    assert!(!doc["packet_path"]["ratios"].as_array().unwrap().is_empty());
    let nic = &doc["packet_path"]["nic_path"];
    let medians = nic["medians"].as_array().expect("NIC-like path medians");
    for setup in SETUPS {
        for flood in FLOODS {
            let median = medians
                .iter()
                .find(|m| m["setup"] == setup && m["flood"] == flood)
                .unwrap_or_else(|| panic!("no NIC-like {setup} run with the {flood}: {nic}"));
            assert!(
                median["dropped"].as_f64().unwrap() > 0.0,
                "NIC-like path, {setup}, {flood}: nothing dropped: {median}"
            );
            assert!(median["dropped_per_flood_cpu_second"].is_f64(), "{median}");
            assert!(median["legit_calls"].as_u64().unwrap() > 0, "{median}");
        }
    }
    assert!(!nic["ratios"].as_array().unwrap().is_empty());
    for section in [
        "## Per packet",
        "## State growth",
        "## Packet path",
        "## Packet path, NIC-like",
        "Machine: ",
    ] {
        assert!(
            report.contains(section),
            "no {section:?} in the report:\n{report}"
        );
    }
}
