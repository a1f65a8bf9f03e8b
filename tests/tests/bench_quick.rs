//! The benchmark (`cargo xtask bench`) in quick mode, so that it cannot rot: it runs,
//! measures every packet class (each taking the path it names: the bench checks the
//! verdicts), and writes its JSON.

use std::process::Command;

use sip_filter_tests::privileged;

const CLASSES: [&str; 7] = [
    "non-SIP UDP (DNS)",
    "scanner OPTIONS (400 B)",
    "allowed REGISTER",
    "unknown-domain INVITE",
    "allowed INVITE with SDP",
    "allowed OPTIONS over IPv6",
    "banned source",
];

#[test]
fn bench_runs_in_quick_mode() {
    if !privileged("bench_runs_in_quick_mode") {
        return;
    }
    let json = std::env::temp_dir().join(format!("sip-filter-bench-{}.json", std::process::id()));
    let output = Command::new(env!("CARGO_BIN_EXE_bench"))
        .arg("--quick")
        .arg("--json")
        .arg(&json)
        .output()
        .expect("the bench binary starts");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "bench --quick failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    for class in CLASSES {
        assert!(stdout.contains(class), "no line for {class}:\n{stdout}");
    }
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).expect("the JSON was written"))
            .expect("the JSON parses");
    std::fs::remove_file(&json).ok();
    let classes = doc["classes"].as_array().expect("a classes array");
    assert_eq!(classes.len(), CLASSES.len());
    for class in classes {
        for key in ["sip_filter_ns", "ref_drop_ns", "ref_parse_headers_ns"] {
            assert!(class[key].is_u64(), "{key} missing in {class}");
        }
    }
}
