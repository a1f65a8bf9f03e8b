//! End to end, in network namespaces: a real scanner (sipvicious's svmap) against an
//! address behind the attached filter gets no answer, while a legitimate OPTIONS and
//! REGISTER to an allowed domain reach a SIP responder (Kamailio) and are answered (sipp).
//!
//! Needs root and the test tools (`cargo xtask setup --test-tools`: kamailio,
//! sip-tester, sipvicious).

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::OnceLock,
    time::{Duration, Instant},
};

use serde_json::Value;
use sip_filter_tests::{
    netns::{
        left_by_dead_test, listed_namespaces, own_prefix, run_bounded, Background, Finished, Host,
        Lab, CLIENT_V4, CLIENT_V6, SERVER_IFACE, SERVER_V4, SERVER_V6, SIGINT,
    },
    privileged,
};

const DOMAIN: &str = "pbx.example.test";
const SIP_PORT: u16 = 5060;
/// svmap sends one probe per address and then listens for 3 s (not configurable).
const SVMAP_DEADLINE: Duration = Duration::from_secs(20);
const SIPP_DEADLINE: Duration = Duration::from_secs(20);
const QUICK: Duration = Duration::from_secs(10);

/// The sip-filter binary, built (quick when up to date) by the cargo running the tests.
fn sip_filter() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| {
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("tests/ is inside the workspace");
        let out = Command::new(env!("CARGO"))
            .current_dir(workspace)
            .args([
                "build",
                "-p",
                "sip-filter",
                "--message-format=json-render-diagnostics",
            ])
            .stdin(Stdio::null())
            .stderr(Stdio::inherit())
            .output()
            .expect("cargo runs");
        assert!(out.status.success(), "`cargo build -p sip-filter` failed");
        // Cargo says where the binary is (CARGO_TARGET_DIR may move it).
        let built = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == "sip-filter")
            .find_map(|m| m["executable"].as_str().map(PathBuf::from));
        let binary = built.unwrap_or_else(|| workspace.join("target/debug/sip-filter"));
        assert!(binary.is_file(), "no binary at {}", binary.display());
        binary
    })
}

/// A directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        let parent = std::env::temp_dir();
        sweep_stale(&parent);
        let path = parent.join(format!("{}{tag}", own_prefix()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("a temporary directory");
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Removes what test processes that died before cleaning up left in `parent`.
fn sweep_stale(parent: &Path) {
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    for entry in entries.flatten() {
        if left_by_dead_test(&entry.file_name().to_string_lossy()) {
            eprintln!(
                "removing {}, left by a test process that is gone",
                entry.path().display()
            );
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// A pin root on the host's bpffs, removed on drop (a running daemon removes only its
/// interface directory).
struct PinRoot(PathBuf);

impl PinRoot {
    fn new(tag: &str) -> Self {
        let parent = Path::new("/sys/fs/bpf");
        sweep_stale(parent);
        let path = parent.join(format!("{}{tag}", own_prefix()));
        let _ = std::fs::remove_dir_all(&path);
        PinRoot(path)
    }

    fn arg(&self) -> &str {
        self.0.to_str().expect("a UTF-8 path")
    }
}

impl Drop for PinRoot {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.0) {
            if e.kind() != std::io::ErrorKind::NotFound {
                eprintln!("cannot remove {}: {e}", self.0.display());
            }
        }
    }
}

/// Every command's output, printed if the test fails.
#[derive(Default)]
struct Transcript(Vec<String>);

impl Transcript {
    fn keep(&mut self, step: &str, finished: Finished) -> Finished {
        println!(
            "[{step}] {:.2} s, {}",
            finished.elapsed.as_secs_f64(),
            match finished.code() {
                Some(code) => format!("exit {code}"),
                None => "no exit status".into(),
            }
        );
        self.0.push(format!("===== {step} =====\n{finished}"));
        finished
    }
}

impl Drop for Transcript {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}\n===== end of transcript =====", self.0.join("\n"));
        }
    }
}

/// A SIP responder: every request gets a stateless 200 OK.
fn kamailio_config() -> String {
    format!(
        r#"#!KAMAILIO
debug=2
log_stderror=yes
fork=yes
children=1
dns=no
rev_dns=no
disable_tcp=yes
disable_sctp=yes
listen=udp:{SERVER_V4}:{SIP_PORT}
listen=udp:[{SERVER_V6}]:{SIP_PORT}

# Debian's Kamailio finds its modules in its compiled-in mpath
# (/usr/lib/<multiarch>/kamailio/modules).
loadmodule "sl.so"

request_route {{
    sl_send_reply("200", "OK");
}}
"#
    )
}

/// A sipp scenario: one request, answered by a 200 within 4 s (retransmitted meanwhile).
fn sipp_scenario(method: &str, request_uri: &str, extra_headers: &str) -> String {
    format!(
        r#"<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="{method} to {DOMAIN}">
  <send retrans="500">
    <![CDATA[

      {method} {request_uri} SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      Max-Forwards: 70
      From: <sip:alice@{DOMAIN}>;tag=[pid]SIPpTag[call_number]
      To: <sip:alice@{DOMAIN}>
      Call-ID: [call_id]
      CSeq: 1 {method}
      Contact: <sip:alice@[local_ip]:[local_port]>
{extra_headers}      User-Agent: sip-filter-e2e
      Content-Length: 0

    ]]>
  </send>
  <recv response="200" timeout="4000"/>
</scenario>
"#
    )
}

/// One sipp call with `scenario`, from `local_ip` to `target`; its traces stay in `dir`.
fn sipp(
    lab: &Lab,
    dir: &Path,
    name: &str,
    scenario: &str,
    local_ip: &str,
    target: &str,
) -> Finished {
    let run_dir = dir.join(name);
    std::fs::create_dir_all(&run_dir).expect("a sipp directory");
    let file = run_dir.join(format!("{name}.xml"));
    std::fs::write(&file, scenario).expect("the scenario is written");
    let mut command = lab.command(Host::Client, "sipp");
    command.current_dir(&run_dir).args([
        "-sf",
        file.to_str().expect("a UTF-8 path"),
        "-i",
        local_ip,
        "-m",
        "1",
        "-l",
        "1",
        "-recv_timeout",
        "5000",
        "-timeout",
        "15s",
        "-timeout_error",
        "-max_retrans",
        "5",
        "-nostdin",
        "-trace_msg",
        "-trace_err",
        target,
    ]);
    let mut finished = run_bounded(command, SIPP_DEADLINE);
    // The exchanged messages, for the diagnostics.
    if let Ok(entries) = std::fs::read_dir(&run_dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "log") {
                let text = std::fs::read_to_string(&path).unwrap_or_default();
                finished.stdout.push_str(&format!(
                    "\n--- {} ---\n{}",
                    path.file_name().unwrap_or_default().to_string_lossy(),
                    text.trim_end()
                ));
            }
        }
    }
    finished
}

/// svmap against the server's IPv4 address, port 5060; debug output to count probes.
fn svmap(lab: &Lab) -> Finished {
    lab.run(
        Host::Client,
        "svmap",
        &[
            "-vvv",
            "-x",
            CLIENT_V4,
            "-p",
            &SIP_PORT.to_string(),
            SERVER_V4,
        ],
        SVMAP_DEADLINE,
    )
}

/// What one svmap run did: probes sent, answers received, and whether it reported the server.
struct Scan {
    probes: usize,
    answers: usize,
    found: bool,
}

fn scan(finished: &Finished) -> Scan {
    let target = format!("{SERVER_V4}:{SIP_PORT}");
    let log = &finished.stderr;
    Scan {
        probes: log.matches(&format!("sending packet to {target}")).count(),
        answers: log.matches(&format!("got data from {target}")).count(),
        // The result table (stdout) lists each device found.
        found: finished.stdout.contains(&target),
    }
}

/// Fails with what to install when a tool is missing.
fn require_tools(tools: &[&str]) {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dirs: Vec<PathBuf> = std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .collect();
    let missing: Vec<&str> = tools
        .iter()
        .copied()
        .filter(|tool| !dirs.iter().any(|dir| dir.join(tool).is_file()))
        .collect();
    assert!(
        missing.is_empty(),
        "missing {missing:?}: install the test tools with `cargo xtask setup --test-tools` \
         (Debian packages kamailio, sip-tester, sipvicious, iproute2, util-linux)"
    );
}

fn counter(stats: &Value, group: &str, name: &str) -> u64 {
    stats[group][name]
        .as_u64()
        .unwrap_or_else(|| panic!("no {group}.{name} in the stats: {stats}"))
}

fn xdp_attached(lab: &Lab) -> bool {
    let shown = lab.run(
        Host::Server,
        "ip",
        &["link", "show", "dev", SERVER_IFACE],
        QUICK,
    );
    assert!(shown.success(), "{shown}");
    shown.stdout.contains("xdp")
}

#[test]
fn svmap_gets_no_answer_while_legitimate_options_and_register_do() {
    if !privileged("svmap_gets_no_answer_while_legitimate_options_and_register_do") {
        return;
    }
    require_tools(&["nsenter", "ip", "ss", "kamailio", "sipp", "svmap"]);
    let started = Instant::now();
    let binary = sip_filter();
    println!(
        "sip-filter binary: {} ({:.2} s)",
        binary.display(),
        started.elapsed().as_secs_f64()
    );

    // Dropped in reverse: processes, then pins, then files, then the namespaces.
    let lab = Lab::new().expect("the lab builds");
    let namespaces = lab.names();
    let dir = TempDir::new("e2e-scan");
    let pins = PinRoot::new("e2e-scan");
    let pin_dir = pins.0.join(SERVER_IFACE);
    let mut transcript = Transcript::default();
    println!(
        "lab {namespaces:?} ({:.2} s)",
        started.elapsed().as_secs_f64()
    );

    // The SIP responder, in the foreground inside the server namespace.
    let config = dir.0.join("kamailio.cfg");
    std::fs::write(&config, kamailio_config()).expect("the Kamailio config is written");
    let mut kamailio = lab
        .spawn(
            Host::Server,
            "kamailio",
            "kamailio",
            &[
                "-f",
                config.to_str().expect("a UTF-8 path"),
                "-DD",
                "-E",
                "-m",
                "64",
                "-M",
                "8",
            ],
            &dir.0.join("kamailio.log"),
        )
        .expect("kamailio starts (installed by `cargo xtask setup --test-tools`)");
    wait_for_udp_listener(&lab, &mut kamailio);
    println!(
        "kamailio listening ({:.2} s)",
        started.elapsed().as_secs_f64()
    );

    // Without the filter the scanner finds the server: the lab and the scanner work.
    let open = transcript.keep("svmap, no filter", svmap(&lab));
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
    let mut daemon = lab
        .spawn(
            Host::Server,
            "sip-filter run",
            binary,
            &[
                "run",
                "--iface",
                SERVER_IFACE,
                "--domain",
                DOMAIN,
                "--pin-root",
                pins.arg(),
            ],
            &dir.0.join("sip-filter.log"),
        )
        .expect("sip-filter starts");
    let attached = daemon
        .wait_for_log("sip-filter attached to", QUICK)
        .unwrap_or_else(|e| panic!("{e}"));
    println!("{attached} ({:.2} s)", started.elapsed().as_secs_f64());
    assert!(pin_dir.is_dir(), "no pins in {}", pin_dir.display());
    assert!(xdp_attached(&lab), "no XDP program on {SERVER_IFACE}");

    // The scanner again: its probe (Request-URI host: the IP literal) is dropped.
    let closed = transcript.keep("svmap, filter attached", svmap(&lab));
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
    let target_v4 = format!("{SERVER_V4}:{SIP_PORT}");
    let target_v6 = format!("[{SERVER_V6}]:{SIP_PORT}");
    let options = sipp_scenario("OPTIONS", &format!("sip:alice@{DOMAIN}"), "");
    let register = sipp_scenario("REGISTER", &format!("sip:{DOMAIN}"), "      Expires: 60\n");
    let legitimate = [
        ("sipp OPTIONS", "options", &options, CLIENT_V4, &target_v4),
        (
            "sipp REGISTER",
            "register",
            &register,
            CLIENT_V4,
            &target_v4,
        ),
        (
            "sipp OPTIONS over IPv6",
            "options-v6",
            &options,
            CLIENT_V6,
            &target_v6,
        ),
    ];
    for (step, name, scenario, local, target) in legitimate {
        let call = transcript.keep(step, sipp(&lab, &dir.0, name, scenario, local, target));
        assert!(
            call.success(),
            "{step} to {target} should be answered with 200 (sipp exits 0):\n{call}"
        );
    }

    // The counters agree.
    let stats = transcript.keep(
        "sip-filter stats",
        lab.run(
            Host::Server,
            binary,
            &[
                "stats",
                "--json",
                "--iface",
                SERVER_IFACE,
                "--pin-root",
                pins.arg(),
            ],
            QUICK,
        ),
    );
    assert!(stats.success(), "{stats}");
    let json: Value = serde_json::from_str(&stats.stdout)
        .unwrap_or_else(|e| panic!("stats --json is not JSON ({e}):\n{stats}"));
    println!("stats: {json}");
    let dropped = counter(&json, "reasons", "drop_unknown_domain");
    let passed = counter(&json, "reasons", "pass_request");
    let options_seen = counter(&json, "methods", "OPTIONS");
    let registers_seen = counter(&json, "methods", "REGISTER");
    let probes = u64::try_from(closed_scan.probes).expect("a count");
    assert!(
        dropped >= probes,
        "drop_unknown_domain {dropped}, but svmap sent {probes} probe(s): {json}"
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

    // SIGINT detaches the filter and removes its pins.
    daemon.signal(SIGINT);
    let status = daemon
        .wait(QUICK)
        .unwrap_or_else(|| panic!("sip-filter ignored SIGINT:\n{}", daemon.log()));
    assert!(
        status.success(),
        "sip-filter exited with {status}:\n{}",
        daemon.log()
    );
    assert!(
        !pin_dir.exists(),
        "{} is still there after SIGINT:\n{}",
        pin_dir.display(),
        daemon.log()
    );
    assert!(daemon.log().contains("detached"), "{}", daemon.log());
    assert!(
        !xdp_attached(&lab),
        "an XDP program is still on {SERVER_IFACE}"
    );

    // Nothing leaks: processes, pins, namespaces.
    drop(daemon);
    drop(kamailio);
    let left = lab.pids();
    assert!(left.is_empty(), "processes left in the lab: {left:?}");
    let pin_root = pins.0.clone();
    drop(pins);
    assert!(!pin_root.exists(), "{} is still there", pin_root.display());
    drop(lab);
    let listed = listed_namespaces();
    assert!(
        namespaces.iter().all(|ns| !listed.contains(ns)),
        "namespaces left: {listed:?}"
    );
    drop(transcript);
    println!("done in {:.2} s", started.elapsed().as_secs_f64());
}

/// Waits until something listens on UDP 5060 in the server namespace.
fn wait_for_udp_listener(lab: &Lab, kamailio: &mut Background) {
    let start = Instant::now();
    loop {
        let sockets = lab.run(
            Host::Server,
            "ss",
            &["-H", "-u", "-l", "-n", &format!("sport = :{SIP_PORT}")],
            QUICK,
        );
        assert!(sockets.success(), "{sockets}");
        if sockets.stdout.contains(&format!("{SERVER_V4}:{SIP_PORT}")) {
            return;
        }
        if let Some(status) = kamailio.exited() {
            panic!("kamailio exited ({status}):\n{}", kamailio.log());
        }
        assert!(
            start.elapsed() < QUICK,
            "kamailio is not listening after {QUICK:?}:\n{}",
            kamailio.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn stats_without_a_filter_exits_2_and_says_how_to_start_one() {
    // Reads pins only: no root needed.
    let pins = PinRoot::new("stats-none");
    for extra in [&[][..], &["--iface", "veth-server"][..]] {
        let mut command = Command::new(sip_filter());
        command
            .args(["stats", "--json", "--pin-root", pins.arg()])
            .args(extra);
        let stats = run_bounded(command, QUICK);
        assert_eq!(stats.code(), Some(2), "{stats}");
        assert!(
            stats.stderr.contains("no filter is loaded")
                && stats.stderr.contains("sip-filter run --iface"),
            "the error should say how to start a filter:\n{stats}"
        );
        assert!(stats.stdout.is_empty(), "{stats}");
    }
    assert!(!pins.0.exists(), "stats created {}", pins.0.display());
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
        "--pin-root",
        pins.arg(),
    ]);
    let run = run_bounded(command, QUICK);
    assert_eq!(run.code(), Some(2), "{run}");
    let lines: Vec<&str> = run.stderr.trim_end().lines().collect();
    assert!(
        lines.len() == 1 && lines[0].starts_with("error: ") && lines[0].contains("does-not-exist"),
        "expected one `error: ...` line naming the interface:\n{run}"
    );
    assert!(!pins.0.exists(), "a failed run left {}", pins.0.display());
}
