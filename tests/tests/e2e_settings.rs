//! End to end, in network namespaces: settings in one place (issue 17, item 6). The
//! configuration file's `[daemon]` table alone starts the daemon (its interfaces, XDP
//! mode, metrics address, state directory and save interval); a reload that changes one
//! of them says it needs a restart; the flags of `run` override the file; and what
//! `block list` prints as time left (`59m 59s`) is what `block add --ttl` reads.
//!
//! Needs root and `ip`, `nsenter`.

use std::{
    path::Path,
    time::{Duration, Instant},
};

use serde_json::{json, Value};
use sip_filter_tests::{
    lab::{
        require_tools, sip_filter, spawn_run_in, stop_filter_in, tear_down, write_file, PinRoot,
        TempDir, Transcript, DOMAIN, QUICK,
    },
    netns::{Finished, Host, Lab, SERVER_IFACE},
    privileged,
};

/// Where the file says metrics are served, and where the flag moves them.
const FILE_METRICS_ADDR: &str = "127.0.0.1:9185";
const FLAG_METRICS_ADDR: &str = "127.0.0.1:9186";
const BANNED_BY_HOUR: &str = "198.51.100.7";
const BANNED_BY_LISTED_TTL: &str = "198.51.100.8";

/// A configuration whose `[daemon]` table says everything `run` needs.
fn config(mode: &str, state_dir: &Path) -> String {
    format!(
        r#"[daemon]
interfaces = ["{SERVER_IFACE}"]
xdp_mode = "{mode}"
metrics_addr = "{FILE_METRICS_ADDR}"
state_dir = "{}"
save_interval = "1s"

[filter]
domains = ["{DOMAIN}"]
allow_example_domains = true
"#,
        state_dir.display()
    )
}

fn cli(transcript: &mut Transcript, lab: &Lab, pins: &PinRoot, args: &[&str]) -> Finished {
    let mut all: Vec<&str> = args.to_vec();
    all.extend_from_slice(&["--pin-root", pins.arg()]);
    let finished = lab.run(Host::Server, sip_filter(), &all, QUICK);
    transcript.keep(&args.join(" "), finished)
}

fn json_of(finished: &Finished) -> Value {
    assert!(finished.success(), "{finished}");
    serde_json::from_str(&finished.stdout).unwrap_or_else(|e| panic!("not JSON ({e}):\n{finished}"))
}

/// The interfaces and XDP modes `status --json` reports.
fn attached(transcript: &mut Transcript, lab: &Lab, pins: &PinRoot) -> Vec<(String, String)> {
    let status = json_of(&cli(transcript, lab, pins, &["status", "--json"]));
    let interfaces = status["interfaces"].as_array().cloned().unwrap_or_default();
    interfaces
        .iter()
        .map(|iface| (iface["name"].to_string(), iface["mode"].to_string()))
        .collect()
}

/// What [`attached`] says of a filter on the server's interface in `mode`.
fn on_server(mode: &str) -> Vec<(String, String)> {
    vec![(json!(SERVER_IFACE).to_string(), json!(mode).to_string())]
}

/// Whether `/metrics` answers at `address` in the server's namespace.
fn metrics_served(lab: &Lab, address: &str) -> bool {
    lab.in_namespace(Host::Server, || {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .proxy(None)
            .timeout_global(Some(Duration::from_secs(10)))
            .build()
            .into();
        agent
            .get(&format!("http://{address}/metrics"))
            .call()
            .ok()
            .and_then(|mut response| response.body_mut().read_to_string().ok())
            .is_some_and(|body| body.contains("sip_filter_"))
    })
    .unwrap_or_else(|e| panic!("{e:#}"))
}

/// The LEFT cell of `address`'s row in `block list`'s table.
fn time_left(listing: &Finished, address: &str) -> String {
    let mut lines = listing.stdout.lines();
    let header = lines.next().unwrap_or_default();
    let column = header
        .find("LEFT")
        .unwrap_or_else(|| panic!("no LEFT column:\n{listing}"));
    let row = lines
        .find(|line| line.split_whitespace().any(|cell| cell == address))
        .unwrap_or_else(|| panic!("no row for {address}:\n{listing}"));
    row.get(column..)
        .unwrap_or_else(|| panic!("a short row:\n{listing}"))
        .trim()
        .to_string()
}

fn seconds_left(transcript: &mut Transcript, lab: &Lab, pins: &PinRoot, address: &str) -> u64 {
    let list = json_of(&cli(transcript, lab, pins, &["block", "list", "--json"]));
    let entry = list
        .as_array()
        .and_then(|entries| entries.iter().find(|e| e["address"] == address))
        .unwrap_or_else(|| panic!("{address} is not listed: {list}"));
    entry["seconds_left"]
        .as_u64()
        .unwrap_or_else(|| panic!("no time left: {entry}"))
}

#[test]
fn the_daemon_runs_from_the_file_and_its_flags_override_it() {
    if !privileged("the_daemon_runs_from_the_file_and_its_flags_override_it") {
        return;
    }
    require_tools(&["nsenter", "ip"]).unwrap_or_else(|e| panic!("{e:#}"));
    let lab = Lab::new().expect("the lab builds");
    let dir = TempDir::new("settings");
    let pins = PinRoot::new("settings");
    let mut transcript = Transcript::default();
    let state_dir = dir.path().join("state");
    let config_path = write_file(dir.path(), "sip-filter.toml", &config("skb", &state_dir));
    let config_arg = config_path.to_str().expect("a UTF-8 path");

    // No flag but the file: attached where and how the file says.
    let (mut daemon, line) = spawn_run_in(
        lab.ns(Host::Server),
        sip_filter(),
        &pins,
        &["--config", config_arg],
        &dir.path().join("run-file.log"),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    transcript.note(line);
    assert_eq!(attached(&mut transcript, &lab, &pins), on_server("skb"));
    assert!(
        metrics_served(&lab, FILE_METRICS_ADDR),
        "no metrics at daemon.metrics_addr {FILE_METRICS_ADDR}"
    );
    // Saved every second, in the file's directory.
    let state_file = state_dir.join("state.bin");
    let saving = Instant::now();
    while !state_file.exists() && saving.elapsed() < QUICK {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(state_file.exists(), "no {}", state_file.display());

    // What `block list` prints as time left, `--ttl` reads back.
    let added = cli(
        &mut transcript,
        &lab,
        &pins,
        &["block", "add", BANNED_BY_HOUR, "--ttl", "1h"],
    );
    assert!(added.success(), "{added}");
    let listing = cli(&mut transcript, &lab, &pins, &["block", "list"]);
    assert!(listing.success(), "{listing}");
    let left = time_left(&listing, BANNED_BY_HOUR);
    assert!(left.starts_with("59m "), "{left:?} left of an hour");
    let added = cli(
        &mut transcript,
        &lab,
        &pins,
        &["block", "add", BANNED_BY_LISTED_TTL, "--ttl", &left],
    );
    assert!(added.success(), "{added}");
    let given = sip_filter::duration::parse(&left).expect("what block list prints parses");
    let read_back = seconds_left(&mut transcript, &lab, &pins, BANNED_BY_LISTED_TTL);
    assert!(
        (given.as_secs().saturating_sub(60)..=given.as_secs()).contains(&read_back),
        "--ttl {left:?} left {read_back} s"
    );

    // A reload that changes the mode applies the rest and says the mode needs a restart.
    write_file(dir.path(), "sip-filter.toml", &config("native", &state_dir));
    daemon.signal(libc::SIGHUP);
    let warning = daemon
        .wait_for_log("daemon.xdp_mode (skb to native) changed", QUICK)
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(warning.contains("restart"), "{warning}");
    transcript.note(warning);
    let reloaded = daemon
        .wait_for_log("configuration reloaded", QUICK)
        .unwrap_or_else(|e| panic!("{e}"));
    transcript.note(reloaded);
    assert_eq!(
        attached(&mut transcript, &lab, &pins),
        on_server("skb"),
        "the mode cannot change before a restart"
    );
    stop_filter_in(
        lab.ns(Host::Server),
        SERVER_IFACE,
        &mut daemon,
        &pins.link_pin(SERVER_IFACE),
    )
    .unwrap_or_else(|e| panic!("{e:#}"));

    // Flags override the file: the mode and the metrics address are the flags'; the
    // interfaces and the state directory (the bans kept there) still the file's.
    write_file(dir.path(), "sip-filter.toml", &config("skb", &state_dir));
    let (daemon, line) = spawn_run_in(
        lab.ns(Host::Server),
        sip_filter(),
        &pins,
        &[
            "--config",
            config_arg,
            "--xdp-mode",
            "native",
            "--metrics-addr",
            FLAG_METRICS_ADDR,
        ],
        &dir.path().join("run-flags.log"),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    transcript.note(line);
    assert_eq!(attached(&mut transcript, &lab, &pins), on_server("native"));
    assert!(
        metrics_served(&lab, FLAG_METRICS_ADDR),
        "no metrics at --metrics-addr {FLAG_METRICS_ADDR}"
    );
    assert!(
        !metrics_served(&lab, FILE_METRICS_ADDR),
        "metrics at the file's address too"
    );
    for address in [BANNED_BY_HOUR, BANNED_BY_LISTED_TTL] {
        let left = seconds_left(&mut transcript, &lab, &pins, address);
        assert!(left > 3000, "{address}: {left} s left after the restart");
    }
    tear_down(lab, pins, [daemon]).unwrap_or_else(|e| panic!("{e:#}"));
    drop(transcript);
    drop(dir);
}
