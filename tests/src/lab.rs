//! The end-to-end lab's parts, shared by the e2e test (`tests/e2e_scan.rs`) and the
//! demo (`src/bin/demo.rs`, `cargo xtask demo`): the sip-filter binary, Kamailio as the
//! SIP server, sipvicious's svmap as the scanner, sipp as the legitimate client, and
//! the filter's start, counters and stop, in a [`Lab`]'s two network namespaces.
//!
//! What a user may plausibly get wrong (a missing tool, a failed build, a server or
//! filter that does not start, a filter that does not clean up) comes back as an
//! error; what cannot go wrong short of a broken host (writing a file in our own
//! temporary directory, running `ip`) panics, as in [`crate::netns`].

use std::{
    net::{IpAddr, SocketAddr, UdpSocket},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::OnceLock,
    time::{Duration, Instant},
};

use anyhow::{bail, ensure, Context};
use serde_json::Value;

use crate::netns::{
    ensure_namespaces_gone, left_by_dead_test, own_prefix, run_bounded, Background, Finished, Host,
    Lab, Netns, CLIENT_V4, CLIENT_V6, LEGIT_CLIENT_V4, SERVER_IFACE, SERVER_V4, SERVER_V6, SIGINT,
};

/// The domain the server serves and the filter allows.
pub const DOMAIN: &str = "pbx.example.test";
/// The flag that lets `run` enforce [`DOMAIN`], a reserved example name.
pub const ALLOW_EXAMPLE_DOMAINS: &str = "--allow-example-domains";
pub const SIP_PORT: u16 = 5060;
/// svmap sends one probe per address and then listens for 3 s (not configurable).
const SVMAP_DEADLINE: Duration = Duration::from_secs(20);
const SIPP_DEADLINE: Duration = Duration::from_secs(20);
/// The bound on quick steps: `ip`, `ss`, `sip-filter stats`, attaching, stopping. Every
/// wait under it ends as soon as its event happens (the process exits, the line is
/// logged), so it is generous: a slower, busier machine must not fail a step that
/// takes 1 s here (10 s was outlasted by a stop saving a million bans on a loaded CI).
pub const QUICK: Duration = Duration::from_secs(60);

/// What the lab runs: iproute2, util-linux's nsenter, Kamailio, sipp, sipvicious.
pub const LAB_TOOLS: &[&str] = &["nsenter", "ip", "ss", "kamailio", "sipp", "svmap"];
/// What a lab with Kamailio alone (no sipp, no scanner) runs.
pub const KAMAILIO_TOOLS: &[&str] = &["nsenter", "ip", "ss", "kamailio"];

/// Builds the sip-filter binary (quick when up to date) with the cargo that built this
/// crate, in its profile (the benchmark, a release build, measures a release daemon's
/// CPU; the tests run the debug one), once per process, and says where it is. `quiet`:
/// no cargo status lines.
pub fn sip_filter_binary(quiet: bool) -> anyhow::Result<&'static Path> {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    if let Some(binary) = BINARY.get() {
        return Ok(binary);
    }
    let binary = build_sip_filter(!cfg!(debug_assertions), quiet)?;
    Ok(BINARY.get_or_init(|| binary))
}

/// [`sip_filter_binary`], built with `--release`: what an operator runs, for figures
/// measured on the daemon itself.
pub fn sip_filter_release_binary(quiet: bool) -> anyhow::Result<&'static Path> {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    if let Some(binary) = BINARY.get() {
        return Ok(binary);
    }
    let binary = build_sip_filter(true, quiet)?;
    Ok(BINARY.get_or_init(|| binary))
}

fn build_sip_filter(release: bool, quiet: bool) -> anyhow::Result<PathBuf> {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("tests/ is inside the workspace")?;
    let mut command = Command::new(env!("CARGO"));
    command.current_dir(workspace).args([
        "build",
        "-p",
        "sip-filter",
        "--message-format=json-render-diagnostics",
    ]);
    if release {
        command.arg("--release");
    }
    if quiet {
        command.arg("--quiet");
    }
    let out = command
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("running {}", env!("CARGO")))?;
    ensure!(out.status.success(), "`cargo build -p sip-filter` failed");
    // Cargo says where the binary is (CARGO_TARGET_DIR may move it).
    let built = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == "sip-filter")
        .find_map(|m| m["executable"].as_str().map(PathBuf::from));
    let profile = if release { "release" } else { "debug" };
    let binary = built.unwrap_or_else(|| workspace.join("target").join(profile).join("sip-filter"));
    ensure!(binary.is_file(), "no binary at {}", binary.display());
    Ok(binary)
}

/// Fails with what to install when a tool is missing.
pub fn require_tools(tools: &[&str]) -> anyhow::Result<()> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dirs: Vec<PathBuf> = std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .collect();
    let missing: Vec<&str> = tools
        .iter()
        .copied()
        .filter(|tool| !dirs.iter().any(|dir| dir.join(tool).is_file()))
        .collect();
    ensure!(
        missing.is_empty(),
        "missing {missing:?}: install the test tools with `cargo xtask setup --test-tools` \
         (Debian packages kamailio, sip-tester, sipvicious, iproute2, util-linux, prometheus)"
    );
    Ok(())
}

/// A directory removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        let parent = std::env::temp_dir();
        sweep_stale(&parent);
        let path = parent.join(format!("{}{tag}", own_prefix()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("a temporary directory");
        TempDir(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
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

/// A pin root on the host's bpffs, removed on drop with the runtime and state
/// directories a daemon derives from its name (`/run/NAME`, `/var/lib/NAME`), so tests
/// never share a daemon's state.
pub struct PinRoot(PathBuf);

impl PinRoot {
    pub fn new(tag: &str) -> Self {
        for parent in ["/sys/fs/bpf", "/run", "/var/lib"] {
            sweep_stale(Path::new(parent));
        }
        let path = Path::new("/sys/fs/bpf").join(format!("{}{tag}", own_prefix()));
        let root = PinRoot(path);
        for dir in root.all_dirs() {
            let _ = std::fs::remove_dir_all(dir);
        }
        root
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// The path as `--pin-root`'s value.
    pub fn arg(&self) -> &str {
        self.0.to_str().expect("a UTF-8 path")
    }

    /// Where the filter's link on `iface` is pinned (its maps: [`PinRoot::maps_dir`]).
    pub fn link_pin(&self, iface: &str) -> PathBuf {
        self.0.join("links").join(iface)
    }

    /// Where the filter's maps are pinned, once for all its interfaces.
    pub fn maps_dir(&self) -> PathBuf {
        self.0.join("maps")
    }

    /// The daemon's runtime directory (`/run/` and the pin root's name).
    pub fn runtime_dir(&self) -> PathBuf {
        Path::new("/run").join(self.0.file_name().expect("a named pin root"))
    }

    /// The daemon's state directory (`/var/lib/` and the pin root's name).
    pub fn state_dir(&self) -> PathBuf {
        Path::new("/var/lib").join(self.0.file_name().expect("a named pin root"))
    }

    fn all_dirs(&self) -> [PathBuf; 3] {
        [self.0.clone(), self.runtime_dir(), self.state_dir()]
    }
}

impl Drop for PinRoot {
    fn drop(&mut self) {
        for dir in self.all_dirs() {
            if let Err(e) = std::fs::remove_dir_all(&dir) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    eprintln!("cannot remove {}: {e}", dir.display());
                }
            }
        }
    }
}

/// The global part of a Kamailio config: log level `debug` on stderr, `children` UDP
/// workers, no DNS, UDP only, listening on port 5060 of each of `addresses`.
pub fn kamailio_globals(debug: u8, children: u8, addresses: &[&str]) -> String {
    let mut text = format!(
        "#!KAMAILIO\ndebug={debug}\nlog_stderror=yes\nfork=yes\nchildren={children}\n\
         dns=no\nrev_dns=no\ndisable_tcp=yes\ndisable_sctp=yes\n"
    );
    text.push_str(&listen_lines("udp", addresses));
    text
}

/// [`kamailio_globals`] with TCP on too: Kamailio also listens on TCP 5060 of each of
/// `addresses` (the TCP labs: `tests/e2e_transports.rs`, `tests/e2e_tcp_lab.rs`).
pub fn kamailio_globals_with_tcp(debug: u8, children: u8, addresses: &[&str]) -> String {
    let globals =
        kamailio_globals(debug, children, addresses).replace("disable_tcp=yes", "disable_tcp=no");
    format!("{globals}{}", listen_lines("tcp", addresses))
}

/// Kamailio's `listen=PROTO:ADDRESS:5060` lines, one per address.
fn listen_lines(proto: &str, addresses: &[&str]) -> String {
    addresses
        .iter()
        .map(|address| {
            if address.contains(':') {
                format!("listen={proto}:[{address}]:{SIP_PORT}\n")
            } else {
                format!("listen={proto}:{address}:{SIP_PORT}\n")
            }
        })
        .collect()
}

/// A SIP responder: every request gets a stateless 200 OK.
fn kamailio_config() -> String {
    let globals = kamailio_globals(2, 1, &[SERVER_V4, SERVER_V6]);
    format!(
        r#"{globals}
# Debian's Kamailio finds its modules in its compiled-in mpath
# (/usr/lib/<multiarch>/kamailio/modules).
loadmodule "sl.so"

request_route {{
    sl_send_reply("200", "OK");
}}
"#
    )
}

/// Starts Kamailio in the foreground inside the server namespace, its config and log
/// in `dir`, and waits until it listens on UDP 5060.
pub fn start_kamailio(lab: &Lab, dir: &Path) -> anyhow::Result<Background> {
    start_kamailio_in(lab.ns(Host::Server), &kamailio_config(), dir, SERVER_V4)
}

/// Starts Kamailio with `config` in the foreground inside `ns`, its config and log in
/// `dir`, and waits until it listens on `address`, UDP 5060.
pub fn start_kamailio_in(
    ns: Netns,
    config: &str,
    dir: &Path,
    address: &str,
) -> anyhow::Result<Background> {
    let text = config;
    let config = dir.join("kamailio.cfg");
    std::fs::write(&config, text).context("writing the Kamailio config")?;
    let mut kamailio = ns
        .spawn(
            "kamailio",
            "kamailio",
            &[
                "-f",
                config.to_str().context("a UTF-8 path")?,
                "-DD",
                "-E",
                "-m",
                "64",
                "-M",
                "8",
            ],
            &dir.join("kamailio.log"),
        )
        .context("kamailio starts (installed by `cargo xtask setup --test-tools`)")?;
    wait_for_udp_listener(ns, address, &mut kamailio)?;
    Ok(kamailio)
}

/// Waits until something listens on `address`, UDP 5060, in `ns`.
pub fn wait_for_udp_listener(
    ns: Netns,
    address: &str,
    kamailio: &mut Background,
) -> anyhow::Result<()> {
    let start = Instant::now();
    loop {
        let sockets = ns.run(
            "ss",
            &["-H", "-u", "-l", "-n", &format!("sport = :{SIP_PORT}")],
            QUICK,
        );
        ensure!(sockets.success(), "{sockets}");
        if sockets.stdout.contains(&format!("{address}:{SIP_PORT}")) {
            return Ok(());
        }
        if let Some(status) = kamailio.exited() {
            bail!("kamailio exited ({status}):\n{}", kamailio.log());
        }
        ensure!(
            start.elapsed() < QUICK,
            "kamailio is not listening after {QUICK:?}:\n{}",
            kamailio.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A sipp scenario: one request, answered by a 200 within 4 s (retransmitted meanwhile).
pub fn sipp_scenario(method: &str, request_uri: &str, extra_headers: &str) -> String {
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

/// The legitimate OPTIONS: `sip:alice@pbx.example.test`.
pub fn options_scenario() -> String {
    sipp_scenario("OPTIONS", &options_uri(), "")
}

pub fn options_uri() -> String {
    format!("sip:alice@{DOMAIN}")
}

/// The legitimate REGISTER: `sip:pbx.example.test`, for 60 s.
pub fn register_scenario() -> String {
    sipp_scenario("REGISTER", &register_uri(), "      Expires: 60\n")
}

pub fn register_uri() -> String {
    format!("sip:{DOMAIN}")
}

/// One sipp call with `scenario`, from `local_ip` in the client namespace to `target`;
/// its traces stay in `dir`/`name` and are appended to the result's stdout.
pub fn sipp(
    lab: &Lab,
    dir: &Path,
    name: &str,
    scenario: &str,
    local_ip: &str,
    target: &str,
) -> Finished {
    sipp_in(
        lab.ns(Host::Client),
        dir,
        name,
        scenario,
        local_ip,
        target,
        &[
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
            "-trace_msg",
        ],
        SIPP_DEADLINE,
    )
}

/// sipp with `scenario` from `local_ip` in `ns` to `target`, with `options` (calls,
/// rate, timeouts), killed at `deadline`; its error traces stay in `dir`/`name` and are
/// appended to the result's stdout.
#[allow(clippy::too_many_arguments)]
pub fn sipp_in(
    ns: Netns,
    dir: &Path,
    name: &str,
    scenario: &str,
    local_ip: &str,
    target: &str,
    options: &[&str],
    deadline: Duration,
) -> Finished {
    let run_dir = dir.join(name);
    std::fs::create_dir_all(&run_dir).expect("a sipp directory");
    let file = run_dir.join(format!("{name}.xml"));
    std::fs::write(&file, scenario).expect("the scenario is written");
    let mut command = ns.command("sipp");
    command
        .current_dir(&run_dir)
        .args(["-sf", file.to_str().expect("a UTF-8 path"), "-i", local_ip])
        .args(options)
        .args(["-nostdin", "-trace_err", target]);
    let mut finished = run_bounded(command, deadline);
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
pub fn svmap(lab: &Lab) -> Finished {
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

/// What one svmap run did: probes sent, answers received, whether it reported the
/// server, and what it sent and learned.
pub struct Scan {
    pub probes: usize,
    pub answers: usize,
    pub found: bool,
    /// The first probe's request line without its `SIP/2.0`: `OPTIONS sip:100@198.18.0.2`.
    pub probe: Option<String>,
    /// The result table's "User Agent" cell: the answer's Server or User-Agent header.
    pub user_agent: Option<String>,
}

pub fn scan(finished: &Finished) -> Scan {
    scan_of(finished, &format!("{SERVER_V4}:{SIP_PORT}"))
}

/// What one svmap run against `target` (`ADDRESS:PORT`, as svmap writes it) did.
pub fn scan_of(finished: &Finished, target: &str) -> Scan {
    let target = target.to_string();
    let log = &finished.stderr;
    // The result table (stdout) lists each device found:
    // | 198.18.0.2:5060 | kamailio (5.6.3 (x86_64/linux)) |
    let row = finished.stdout.lines().find(|line| line.contains(&target));
    Scan {
        probes: log.matches(&format!("sending packet to {target}")).count(),
        // One result line per SIP answer, `PROBED\t->\tTARGET\t->\tUA`, logged both for
        // answers read while scanning and for those read in the final wait (where
        // svmap logs no `got data from`): under load, the only answer can come there.
        answers: log.matches(&format!("\t->\t{target}\t->\t")).count(),
        found: finished.stdout.contains(&target),
        // Logged as a Python literal: packet: 'OPTIONS sip:100@198.18.0.2 SIP/2.0\r\n...
        probe: log
            .split_once("packet: '")
            .and_then(|(_, packet)| packet.split_once(" SIP/2.0"))
            .map(|(line, _)| line.to_string()),
        user_agent: row
            .and_then(|row| row.split('|').map(str::trim).nth(2))
            .filter(|cell| !cell.is_empty())
            .map(str::to_string),
    }
}

/// Starts `sip-filter run --iface veth-server --domain pbx.example.test` inside the
/// server namespace, pinning under `pins`, its log in `log`; returns it once attached,
/// with the line saying so.
pub fn start_filter(
    lab: &Lab,
    binary: &Path,
    pins: &PinRoot,
    log: &Path,
) -> anyhow::Result<(Background, String)> {
    spawn_filter(lab, binary, pins, &["--domain", DOMAIN], log).map_err(anyhow::Error::msg)
}

/// `sip-filter run --iface veth-server EXTRA... --pin-root PINS` in the server namespace,
/// once it says it attached; the error is what went wrong, for the caller to dress.
/// Its runtime and state files go to the pin root's own directories (see [`PinRoot`]).
pub fn spawn_filter(
    lab: &Lab,
    binary: &Path,
    pins: &PinRoot,
    extra: &[&str],
    log: &Path,
) -> Result<(Background, String), String> {
    spawn_filter_in(lab.ns(Host::Server), SERVER_IFACE, binary, pins, extra, log)
}

/// `sip-filter run --iface IFACE EXTRA... --pin-root PINS` in `ns`, once it says it
/// attached; the error is what went wrong, for the caller to dress. With
/// `--allow-example-domains`: every lab serves [`DOMAIN`], a reserved `.test` name.
pub fn spawn_filter_in(
    ns: Netns,
    iface: &str,
    binary: &Path,
    pins: &PinRoot,
    extra: &[&str],
    log: &Path,
) -> Result<(Background, String), String> {
    let mut args = vec!["--iface", iface, ALLOW_EXAMPLE_DOMAINS];
    args.extend_from_slice(extra);
    spawn_run_in(ns, binary, pins, &args, log)
}

/// `sip-filter run ARGS... --pin-root PINS` in `ns`, once it says it attached (to the
/// interfaces its arguments or configuration file name); the error is what went wrong.
pub fn spawn_run_in(
    ns: Netns,
    binary: &Path,
    pins: &PinRoot,
    args: &[&str],
    log: &Path,
) -> Result<(Background, String), String> {
    let mut all = vec!["run"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--pin-root", pins.arg()]);
    let mut daemon = ns
        .spawn("sip-filter run", binary, &all, log)
        .map_err(|e| format!("sip-filter starts: {e:#}"))?;
    let attached = daemon.wait_for_log("sip-filter attached to", QUICK)?;
    Ok((daemon, attached))
}

/// `sip-filter stats --json` for the filter on the server's interface.
pub fn filter_stats(lab: &Lab, binary: &Path, pins: &PinRoot) -> Finished {
    filter_stats_in(lab.ns(Host::Server), SERVER_IFACE, binary, pins)
}

/// `sip-filter stats --json` for the filter on `iface` in `ns`.
pub fn filter_stats_in(ns: Netns, iface: &str, binary: &Path, pins: &PinRoot) -> Finished {
    ns.run(
        binary,
        &[
            "stats",
            "--json",
            "--iface",
            iface,
            "--pin-root",
            pins.arg(),
        ],
        QUICK,
    )
}

/// The JSON a successful [`filter_stats`] printed.
pub fn stats_json(stats: &Finished) -> anyhow::Result<Value> {
    ensure!(stats.success(), "{stats}");
    serde_json::from_str(&stats.stdout)
        .map_err(|e| anyhow::anyhow!("stats --json is not JSON ({e}):\n{stats}"))
}

/// One counter of `stats --json`: `group` is `reasons` or `methods`.
pub fn counter(stats: &Value, group: &str, name: &str) -> u64 {
    stats[group][name]
        .as_u64()
        .unwrap_or_else(|| panic!("no {group}.{name} in the stats: {stats}"))
}

/// One row of `stats --json`'s `transports` (issue 14): the verdicts for `reason`
/// (`drop_scanner`) over `transport` (`udp`, `tcp`, `tls`, `other`); 0 when none were
/// counted (the row lists only the reasons counted).
pub fn transport_counter(stats: &Value, transport: &str, reason: &str) -> u64 {
    assert!(
        stats["transports"][transport].is_object(),
        "no transports.{transport} in the stats: {stats}"
    );
    stats["transports"][transport][reason].as_u64().unwrap_or(0)
}

/// The sum of `transport`'s counters in `stats --json`'s `transports` whose reason
/// starts with `prefix` (`drop_`: every message the filter dropped over it).
pub fn transport_sum(stats: &Value, transport: &str, prefix: &str) -> u64 {
    stats["transports"][transport]
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(reason, _)| reason.starts_with(prefix))
        .filter_map(|(_, count)| count.as_u64())
        .sum()
}

/// The sum of the `reasons` counters of `stats --json` whose name starts with `prefix`
/// (`drop_`: every packet the filter dropped).
pub fn reason_sum(stats: &Value, prefix: &str) -> u64 {
    stats["reasons"]
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(name, _)| name.starts_with(prefix))
        .filter_map(|(_, count)| count.as_u64())
        .sum()
}

/// Whether an XDP program is attached to the server's interface.
pub fn xdp_attached(lab: &Lab) -> bool {
    xdp_attached_in(lab.ns(Host::Server), SERVER_IFACE)
}

/// Whether an XDP program is attached to `iface` in `ns`.
pub fn xdp_attached_in(ns: Netns, iface: &str) -> bool {
    let shown = ns.run("ip", &["link", "show", "dev", iface], QUICK);
    assert!(shown.success(), "{shown}");
    shown.stdout.contains("xdp")
}

/// How many of the filter's egress programs are attached at `iface`'s egress in `ns`:
/// tcx links (asked of the kernel) and clsact filters (`tc filter show`), both found by
/// the program's name (the kernel keeps 15 characters of it).
pub fn egress_attached_in(ns: Netns, iface: &str) -> EgressAttached {
    use aya::programs::{SchedClassifier, TcAttachType};
    use sip_filter_common::maps::EGRESS_PROGRAM_NAME;
    let tcx = ns
        .in_namespace(|| SchedClassifier::query_tcx(iface, TcAttachType::Egress))
        .expect("entering the namespace")
        // A kernel without tcx (before 6.6) refuses the query: none there.
        .map_or(0, |(_, programs)| {
            programs
                .iter()
                .filter(|program| {
                    program.name_as_str().is_some_and(|name| {
                        !name.is_empty() && EGRESS_PROGRAM_NAME.starts_with(name)
                    })
                })
                .count()
        });
    let shown = ns.run("tc", &["filter", "show", "dev", iface, "egress"], QUICK);
    assert!(shown.success(), "{shown}");
    let clsact = shown
        .stdout
        .lines()
        .filter(|line| line.contains(EGRESS_PROGRAM_NAME))
        .count();
    EgressAttached { tcx, clsact }
}

/// How `--egress-mode auto` (the default) attaches the egress program on this kernel:
/// tcx where it has it (6.6 and newer), else a clsact filter.
pub fn auto_egress_mode() -> &'static str {
    use sip_filter::filter::{running_kernel, TCX_KERNEL};
    if running_kernel().is_some_and(|version| version >= TCX_KERNEL) {
        "tcx"
    } else {
        "clsact"
    }
}

/// See [`egress_attached_in`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EgressAttached {
    pub tcx: usize,
    pub clsact: usize,
}

/// Stops the filter with SIGINT and checks that it detached and removed its pins
/// (`pin_dir`, its interface's link pin, see [`PinRoot::link_pin`]).
pub fn stop_filter(lab: &Lab, daemon: &mut Background, pin_dir: &Path) -> anyhow::Result<()> {
    stop_filter_in(lab.ns(Host::Server), SERVER_IFACE, daemon, pin_dir)
}

/// [`stop_filter`] for the filter on `iface` in `ns`.
pub fn stop_filter_in(
    ns: Netns,
    iface: &str,
    daemon: &mut Background,
    pin_dir: &Path,
) -> anyhow::Result<()> {
    stop_filter_in_within(ns, iface, daemon, pin_dir, QUICK)
}

/// [`stop_filter_in`], waiting up to `timeout` for the exit.
pub fn stop_filter_in_within(
    ns: Netns,
    iface: &str,
    daemon: &mut Background,
    pin_dir: &Path,
    timeout: Duration,
) -> anyhow::Result<()> {
    daemon.signal(SIGINT);
    let Some(status) = daemon.wait(timeout) else {
        bail!(
            "sip-filter ignored SIGINT for {}:\n{}",
            format_args!("{} s", timeout.as_secs()),
            daemon.log()
        );
    };
    ensure!(
        status.success(),
        "sip-filter exited with {status}:\n{}",
        daemon.log()
    );
    ensure!(
        !pin_dir.exists(),
        "{} is still there after SIGINT:\n{}",
        pin_dir.display(),
        daemon.log()
    );
    ensure!(daemon.log().contains("detached"), "{}", daemon.log());
    ensure!(
        !xdp_attached_in(ns, iface),
        "an XDP program is still on {iface}"
    );
    Ok(())
}

/// Stops `processes` in order, then removes the pin root and the namespaces, checking
/// that nothing is left: no process in the lab, no pins, no namespace.
pub fn tear_down(
    lab: Lab,
    pins: PinRoot,
    processes: impl IntoIterator<Item = Background>,
) -> anyhow::Result<()> {
    let namespaces = lab.names();
    for process in processes {
        drop(process);
    }
    let left = lab.pids();
    ensure!(left.is_empty(), "processes left in the lab: {left:?}");
    let pin_root = pins.path().to_path_buf();
    drop(pins);
    ensure!(!pin_root.exists(), "{} is still there", pin_root.display());
    drop(lab);
    ensure_namespaces_gone(&namespaces)
}

/// Writes `text` to `dir`/`name` (a configuration file, a scenario) and says where.
pub fn write_file(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    path
}

/// Starts `sip-filter run --iface veth-server --config CONFIG` inside the server
/// namespace, pinning under `pins`, its log in `log`; returns it once attached, with
/// the line saying so. Everything else (domains, limits, lists) comes from the file.
pub fn start_filter_with_config(
    lab: &Lab,
    binary: &Path,
    pins: &PinRoot,
    config: &Path,
    log: &Path,
) -> anyhow::Result<(Background, String)> {
    let path = config.to_str().context("a UTF-8 path")?;
    spawn_filter(lab, binary, pins, &["--config", path], log).map_err(|e| {
        let config = std::fs::read_to_string(config).unwrap_or_default();
        anyhow::anyhow!("{e}\nwith the configuration file:\n{config}")
    })
}

/// A SIP request as a user agent sends it from the UDP socket bound to `local` (its
/// Via and Contact name that address, with `rport`), to the lab's domain.
pub fn sip_request(
    method: &str,
    request_uri: &str,
    local: SocketAddr,
    call_id: &str,
    user_agent: &str,
) -> String {
    format!(
        "{method} {request_uri} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {local};branch=z9hG4bK-{call_id};rport\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:alice@{DOMAIN}>;tag={call_id}\r\n\
         To: <sip:alice@{DOMAIN}>\r\n\
         Call-ID: {call_id}\r\n\
         CSeq: 1 {method}\r\n\
         Contact: <sip:alice@{local}>\r\n\
         Expires: 60\r\n\
         User-Agent: {user_agent}\r\n\
         Content-Length: 0\r\n\r\n"
    )
}

/// The status code of a SIP response (`SIP/2.0 200 OK` -> 200); None for anything else.
pub fn response_status(datagram: &[u8]) -> Option<u16> {
    let rest = datagram.strip_prefix(b"SIP/2.0 ")?;
    let code = std::str::from_utf8(rest.get(..3)?).ok()?;
    code.parse().ok()
}

/// The lab server's SIP address in `local`'s family.
pub fn server_for(local: IpAddr) -> SocketAddr {
    let server: IpAddr = if local.is_ipv4() {
        SERVER_V4.parse().expect("an IPv4 address")
    } else {
        SERVER_V6.parse().expect("an IPv6 address")
    };
    SocketAddr::new(server, SIP_PORT)
}

/// Sends one request (`method` to `request_uri`, with `user_agent`) from `local` in the
/// client namespace to the server, and waits up to `timeout` for a final response:
/// its status, or None if nothing final came back (provisional ones are skipped).
pub fn sip_probe(
    lab: &Lab,
    local: IpAddr,
    method: &str,
    request_uri: &str,
    user_agent: &str,
    timeout: Duration,
) -> anyhow::Result<Option<u16>> {
    lab.in_namespace(Host::Client, || -> anyhow::Result<Option<u16>> {
        let socket = UdpSocket::bind(SocketAddr::new(local, 0))
            .with_context(|| format!("binding a UDP socket to {local}"))?;
        let bound = socket.local_addr()?;
        let call_id = format!("probe-{}-{}", std::process::id(), bound.port());
        let request = sip_request(method, request_uri, bound, &call_id, user_agent);
        socket.send_to(request.as_bytes(), server_for(local))?;
        let start = Instant::now();
        let mut buf = [0u8; 4096];
        while let Some(left) = timeout.checked_sub(start.elapsed()) {
            if left.is_zero() {
                break;
            }
            socket.set_read_timeout(Some(left))?;
            match socket.recv(&mut buf) {
                Ok(n) => match response_status(&buf[..n]) {
                    Some(code) if code >= 200 => return Ok(Some(code)),
                    _ => continue,
                },
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    break
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(None)
    })?
}

/// A cumulative counter of sipp's final statistics screen, which sipp prints to stdout
/// when it ends: `  Successful call        |        0       |     2500     `.
pub fn sipp_counter(stdout: &str, name: &str) -> Option<u64> {
    stdout
        .lines()
        .filter(|line| line.trim_start().starts_with(name))
        .filter_map(|line| line.split('|').nth(2))
        .filter_map(|cell| cell.trim().parse().ok())
        .next_back()
}

/// `sip-filter ARGS --pin-root PINS` in the server namespace: a verb on the running
/// filter from another process, killed at `timeout`.
pub fn verb(lab: &Lab, pins: &PinRoot, args: &[&str], timeout: Duration) -> Finished {
    let mut all: Vec<&str> = args.to_vec();
    all.extend_from_slice(&["--pin-root", pins.arg()]);
    lab.run(Host::Server, sip_filter(), &all, timeout)
}

/// An OPTIONS to the lab's domain from `from` in the client namespace with
/// `user_agent`: its final status, or None if none came within `wait`.
pub fn options_probe(lab: &Lab, from: &str, user_agent: &str, wait: Duration) -> Option<u16> {
    sip_probe(
        lab,
        from.parse().expect("an address"),
        "OPTIONS",
        &options_uri(),
        user_agent,
        wait,
    )
    .unwrap_or_else(|e| panic!("{e:#}"))
}

/// The JSON a command printed, which must have succeeded.
pub fn json_output(finished: &Finished) -> Value {
    assert!(finished.success(), "{finished}");
    serde_json::from_str(&finished.stdout).unwrap_or_else(|e| panic!("not JSON ({e}):\n{finished}"))
}

/// The JSON array a command printed (`block list --json`, `auth locked --json`...),
/// which must have succeeded.
pub fn json_array(finished: &Finished) -> Vec<Value> {
    let json = json_output(finished);
    json.as_array()
        .cloned()
        .unwrap_or_else(|| panic!("not an array: {json}"))
}

/// The sip-filter binary, built (quick when up to date) by the cargo running the tests.
pub fn sip_filter() -> &'static Path {
    sip_filter_binary(false).unwrap_or_else(|e| panic!("{e:#}"))
}

/// Every command's output and every figure a test noted, printed if the test fails.
#[derive(Default)]
pub struct Transcript(Vec<String>);

impl Transcript {
    pub fn keep(&mut self, step: &str, finished: Finished) -> Finished {
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

    pub fn note(&mut self, line: String) {
        println!("{line}");
        self.0.push(line);
    }

    /// [`verb`] `args` (with [`QUICK`]), kept; it must succeed.
    pub fn verb_ok(&mut self, lab: &Lab, pins: &PinRoot, args: &[&str]) -> Finished {
        let finished = self.keep(&args.join(" "), verb(lab, pins, args, QUICK));
        assert!(finished.success(), "{finished}");
        finished
    }

    /// `sip-filter stats --json`, kept.
    pub fn stats(&mut self, step: &str, lab: &Lab, pins: &PinRoot) -> Value {
        let stats = self.keep(step, filter_stats(lab, sip_filter(), pins));
        let json = stats_json(&stats).unwrap_or_else(|e| panic!("{e:#}"));
        self.note(format!("{step}: {json}"));
        json
    }
}

impl Drop for Transcript {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "===== transcript =====\n{}\n===== end of transcript =====",
                self.0.join("\n")
            );
        }
    }
}

/// The legitimate calls of the end-to-end tests, from the client namespace to the
/// allowed domain: sipp OPTIONS and REGISTER over IPv4, OPTIONS over IPv6, each kept in
/// `transcript` as its step; returns each step, its target and how sipp finished.
pub fn legitimate_calls(
    transcript: &mut Transcript,
    lab: &Lab,
    dir: &Path,
) -> Vec<(&'static str, String, Finished)> {
    let target_v4 = format!("{SERVER_V4}:{SIP_PORT}");
    let target_v6 = format!("[{SERVER_V6}]:{SIP_PORT}");
    let (options, register) = (options_scenario(), register_scenario());
    [
        (
            "sipp OPTIONS",
            "options",
            &options,
            LEGIT_CLIENT_V4,
            target_v4.clone(),
        ),
        (
            "sipp REGISTER",
            "register",
            &register,
            LEGIT_CLIENT_V4,
            target_v4,
        ),
        (
            "sipp OPTIONS over IPv6",
            "options-v6",
            &options,
            CLIENT_V6,
            target_v6,
        ),
    ]
    .into_iter()
    .map(|(step, name, scenario, local, target)| {
        let call = transcript.keep(step, sipp(lab, dir, name, scenario, local, &target));
        (step, target, call)
    })
    .collect()
}

/// Asserts a refused input: exit status 2 and one stderr line, `error: ...`, naming
/// `mentions`; returns that line.
pub fn assert_one_error_line(finished: &Finished, mentions: &str) -> String {
    assert_error_line(finished, 2, mentions)
}

/// [`assert_one_error_line`] with another exit status: 3 when no filter is running, 4
/// when a user who is not root is refused (see `sip-filter`'s `cli::exit`).
pub fn assert_error_line(finished: &Finished, status: i32, mentions: &str) -> String {
    assert_eq!(finished.code(), Some(status), "{finished}");
    let lines: Vec<&str> = finished.stderr.trim_end().lines().collect();
    assert!(
        lines.len() == 1 && lines[0].starts_with("error: ") && lines[0].contains(mentions),
        "expected one `error: ...` line naming {mentions:?}:\n{finished}"
    );
    lines[0].to_string()
}

/// The end-to-end tests' set-up: the [`Lab`], a temporary directory and a pin root
/// named after `tag`, a [`Transcript`] and Kamailio answering in the server namespace.
/// On any exit, panics included, the fields drop in order: Kamailio, the transcript
/// (printed on a panic), the pins, the files, the namespaces.
pub struct LabFixture {
    pub kamailio: Background,
    pub transcript: Transcript,
    pub pins: PinRoot,
    pub dir: TempDir,
    pub lab: Lab,
}

impl LabFixture {
    /// Checks that `tools` are installed, builds the lab and starts Kamailio; panics
    /// saying what failed (a test's set-up).
    pub fn start(tag: &str, tools: &[&str]) -> Self {
        Self::start_with(tag, tools, |_| Ok(()), &kamailio_config())
    }

    /// [`LabFixture::start`], with `prepare` run on the lab before Kamailio starts with
    /// `kamailio_config` in the server namespace.
    pub fn start_with(
        tag: &str,
        tools: &[&str],
        prepare: impl FnOnce(&Lab) -> anyhow::Result<()>,
        kamailio_config: &str,
    ) -> Self {
        require_tools(tools).unwrap_or_else(|e| panic!("{e:#}"));
        let lab = Lab::new().expect("the lab builds");
        prepare(&lab).unwrap_or_else(|e| panic!("{e:#}"));
        let dir = TempDir::new(tag);
        let pins = PinRoot::new(tag);
        let transcript = Transcript::default();
        let kamailio =
            start_kamailio_in(lab.ns(Host::Server), kamailio_config, dir.path(), SERVER_V4)
                .unwrap_or_else(|e| panic!("{e:#}"));
        LabFixture {
            kamailio,
            transcript,
            pins,
            dir,
            lab,
        }
    }

    /// [`start_filter`] (`--domain pbx.example.test`, its log in the directory), once
    /// attached, with the line saying so.
    pub fn start_filter(&self) -> (Background, String) {
        start_filter(
            &self.lab,
            sip_filter(),
            &self.pins,
            &self.dir.path().join("sip-filter.log"),
        )
        .unwrap_or_else(|e| panic!("{e:#}"))
    }

    /// [`start_filter_with_config`] with `config` written to `sip-filter.toml` in the
    /// directory (its log there too); notes the line saying it attached.
    pub fn start_filter_with(&mut self, config: &str) -> Background {
        let path = write_file(self.dir.path(), "sip-filter.toml", config);
        let (daemon, attached) = start_filter_with_config(
            &self.lab,
            sip_filter(),
            &self.pins,
            &path,
            &self.dir.path().join("sip-filter.log"),
        )
        .unwrap_or_else(|e| panic!("{e:#}"));
        self.transcript.note(attached);
        daemon
    }

    /// [`stop_filter`]: SIGINT, then checks that it detached and removed its link pin.
    pub fn stop_filter(&self, daemon: &mut Background) {
        self.stop_filter_within(daemon, QUICK);
    }

    /// [`LabFixture::stop_filter`], waiting up to `timeout` for the exit.
    pub fn stop_filter_within(&self, daemon: &mut Background, timeout: Duration) {
        stop_filter_in_within(
            self.lab.ns(Host::Server),
            SERVER_IFACE,
            daemon,
            &self.pins.link_pin(SERVER_IFACE),
            timeout,
        )
        .unwrap_or_else(|e| panic!("{e:#}"));
    }

    /// [`tear_down`]: stops `processes`, then Kamailio, and checks that nothing is left.
    pub fn tear_down(self, processes: impl IntoIterator<Item = Background>) {
        let LabFixture {
            kamailio,
            transcript,
            pins,
            dir,
            lab,
        } = self;
        tear_down(lab, pins, processes.into_iter().chain([kamailio]))
            .unwrap_or_else(|e| panic!("{e:#}"));
        drop(transcript);
        drop(dir);
    }
}

/// In a Prometheus exposition, the sum of the samples of `name` whose labels include every one of `labels`
/// (`reason="drop_scanner"`); None if there is none.
pub fn sample_sum(exposition: &str, name: &str, labels: &[&str]) -> Option<u64> {
    let samples: Vec<u64> = exposition
        .lines()
        .filter_map(|line| {
            let rest = line.strip_prefix(name)?.strip_prefix('{')?;
            let (labelset, value) = rest.rsplit_once("} ")?;
            let pairs: Vec<&str> = labelset.split(',').collect();
            if labels.iter().all(|wanted| pairs.contains(wanted)) {
                value.parse().ok()
            } else {
                None
            }
        })
        .collect();
    (!samples.is_empty()).then(|| samples.iter().sum())
}
