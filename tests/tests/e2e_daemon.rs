//! End to end, in network namespaces: the daemon's control plane.
//!
//! One daemon attached to two interfaces (the lab's veth pair and a second one): a
//! source banned for what it sent on one interface is dropped on the other. SIGHUP with
//! a good file changes the domains while a ban and a source's bucket stay; SIGHUP with a
//! bad file is refused with one log line and the old configuration keeps working. A
//! restart keeps what operators added, with its TTL and reason: a ban and a denied
//! network (`block add`), a trusted network (`allow add`), an import's ban and network
//! (`block import`); the daemon removes an operator entry once it expired; a corrupt
//! state file is set aside. `status` reports what runs; `unload` stops the daemon, and
//! also removes what a killed daemon left attached; with nothing loaded both exit 2.
//!
//! Needs root and the test tools (`cargo xtask setup --test-tools`: kamailio).

use std::{path::Path, process::Command, time::Duration};

use aya::maps::{HashMap, Map, MapData};
use serde_json::Value;
use sip_filter::{
    filter::source_key,
    lists::{ListKind, PinnedList},
};
use sip_filter_common::maps::{names, SourceState};
use sip_filter_tests::{
    lab::{
        assert_error_line, auto_egress_mode, sip_filter, sip_probe, spawn_filter, write_file,
        xdp_attached, LabFixture, PinRoot, TempDir, Transcript, DOMAIN, KAMAILIO_TOOLS, QUICK,
    },
    netns::{
        run_bounded, Background, Finished, Host, Lab, CLIENT_IFACE, CLIENT_V4, LEGIT_CLIENT_V4,
        SECOND_CLIENT_IFACE, SECOND_CLIENT_V4, SECOND_SERVER_IFACE, SERVER_IFACE, SERVER_V4,
        SIGKILL,
    },
    privileged,
};

/// How long a probe waits for an answer (Kamailio answers in milliseconds).
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// The domain the reloaded configuration allows instead of [`DOMAIN`].
const NEW_DOMAIN: &str = "new.example.test";
/// A bridge in the server namespace: no native XDP, so `--xdp-mode auto` (the default)
/// falls back to generic mode on it.
const BRIDGE: &str = "br-sf";
/// A source banned by hand before the restart (never sends: the ban is what is checked).
const MANUAL_BAN: &str = "203.0.113.50";
/// A network denied by hand before the restart: holds LEGIT_CLIENT_V4 (198.18.0.11).
const DENIED_NET: &str = "198.18.0.8/29";
/// A network trusted by hand before the restart.
const ALLOWED_NET: &str = "192.0.2.0/28";
/// What the imported feed holds: an address (banned) and a network (denied).
const IMPORTED_BAN: &str = "203.0.113.51";
const IMPORTED_NET: &str = "203.0.113.128/25";
/// A network denied for one second: the daemon sweeps it out of the trie.
const EXPIRING_NET: &str = "192.0.2.64/28";

/// A configuration allowing `domain`, with a limit on "other" requests so that every
/// source that sends an OPTIONS has a bucket.
fn config(domain: &str) -> String {
    format!("[filter]\ndomains = [\"{domain}\"]\n\n[rate_limit.other]\nrate = 100\nburst = 200\n")
}

fn cli(lab: &Lab, pins: &PinRoot, args: &[&str]) -> Finished {
    let mut all: Vec<&str> = args.to_vec();
    all.extend_from_slice(&["--pin-root", pins.arg()]);
    lab.run(Host::Server, sip_filter(), &all, QUICK)
}

/// A request from `from` in the client namespace for `uri`: its final status, if any.
fn probe(lab: &Lab, from: &str, uri: &str, user_agent: &str) -> Option<u16> {
    sip_probe(
        lab,
        from.parse().expect("an address"),
        "OPTIONS",
        uri,
        user_agent,
        PROBE_TIMEOUT,
    )
    .unwrap_or_else(|e| panic!("{e:#}"))
}

fn options(lab: &Lab, from: &str, domain: &str) -> Option<u16> {
    probe(
        lab,
        from,
        &format!("sip:alice@{domain}"),
        "sip-filter-e2e-daemon",
    )
}

/// Sends what the client sends from [`SECOND_CLIENT_V4`] to the server through
/// `client_iface` (so it arrives on that pair's server end), and checks the route.
fn route_second_client_via(lab: &Lab, client_iface: &str) {
    lab.ip(
        Host::Client,
        &[
            "route",
            "replace",
            &format!("{SERVER_V4}/32"),
            "dev",
            client_iface,
            "table",
            "100",
        ],
    )
    .unwrap_or_else(|e| panic!("{e:#}"));
    let route = lab.run(
        Host::Client,
        "ip",
        &["route", "get", SERVER_V4, "from", SECOND_CLIENT_V4],
        QUICK,
    );
    assert!(
        route.success() && route.stdout.contains(&format!("dev {client_iface}")),
        "{route}"
    );
}

fn start(
    lab: &Lab,
    pins: &PinRoot,
    config: &Path,
    log: &Path,
    transcript: &mut Transcript,
) -> Background {
    let config = config.to_str().expect("a UTF-8 path");
    let (daemon, attached) = spawn_filter(
        lab,
        sip_filter(),
        pins,
        &[
            "--iface",
            SECOND_SERVER_IFACE,
            "--iface",
            BRIDGE,
            "--config",
            config,
            // The state saved, and expired operator entries swept, every second.
            "--save-interval",
            "1",
        ],
        log,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    transcript.note(attached);
    daemon
}

fn status_json(transcript: &mut Transcript, lab: &Lab, pins: &PinRoot) -> Value {
    let status = transcript.keep("status --json", cli(lab, pins, &["status", "--json"]));
    assert!(status.success(), "{status}");
    serde_json::from_str(&status.stdout).unwrap_or_else(|e| panic!("not JSON ({e}):\n{status}"))
}

/// `block list --json` entries for `address`.
fn bans_of(transcript: &mut Transcript, lab: &Lab, pins: &PinRoot, address: &str) -> Vec<Value> {
    listed(transcript, lab, pins, "block", address)
}

/// `VERB list --json` entries (`block` or `allow`) for `address`.
fn listed(
    transcript: &mut Transcript,
    lab: &Lab,
    pins: &PinRoot,
    verb: &str,
    address: &str,
) -> Vec<Value> {
    let list = transcript.keep(
        &format!("{verb} list --json"),
        cli(lab, pins, &[verb, "list", "--json"]),
    );
    assert!(list.success(), "{list}");
    let json: Value = serde_json::from_str(&list.stdout).expect("list --json is JSON");
    json.as_array()
        .expect("an array")
        .iter()
        .filter(|entry| entry["address"] == address)
        .cloned()
        .collect()
}

/// The one entry listed for `address`, checked: an operator's, `reason`, `kind`, with
/// about `hours` left.
fn assert_kept(entries: &[Value], kind: &str, reason: &str, hours: u64) {
    assert_eq!(entries.len(), 1, "{entries:?}");
    let entry = &entries[0];
    assert_eq!(entry["kind"], kind, "{entry}");
    assert_eq!(entry["origin"], "operator", "{entry}");
    assert_eq!(entry["reason"], reason, "{entry}");
    let left = entry["seconds_left"].as_u64().unwrap_or(0);
    assert!(
        (hours * 3600 - 200..=hours * 3600).contains(&left),
        "about {hours} h left: {entry}"
    );
}

fn pinned_map(pins: &PinRoot, name: &str) -> Map {
    let data = MapData::from_pin(pins.maps_dir().join(name))
        .unwrap_or_else(|e| panic!("opening the pinned {name}: {e}"));
    Map::from_map_data(data).expect("a map")
}

/// The kernel's bucket state for `address` (one entry of the pinned SF_SOURCES).
fn source_state(pins: &PinRoot, address: &str) -> Option<SourceState> {
    let sources: HashMap<MapData, [u8; 16], SourceState> =
        HashMap::try_from(pinned_map(pins, names::SOURCES)).expect("the sources map");
    sources
        .get(&source_key(address.parse().expect("an address"), 64), 0)
        .ok()
}

/// Whether the pinned deny list holds exactly `net` (read without sweeping it, unlike
/// `block list`).
fn deny_list_holds(pins: &PinRoot, net: &str) -> bool {
    let deny = PinnedList::open(&pins.maps_dir(), ListKind::Deny).expect("the deny list");
    deny.get(net.parse().expect("a network"))
        .expect("the deny list read")
        .is_some()
}

#[test]
fn daemon_on_two_interfaces_reloads_restarts_and_unloads() {
    if !privileged("daemon_on_two_interfaces_reloads_restarts_and_unloads") {
        return;
    }
    let started = std::time::Instant::now();

    let mut rig = LabFixture::start("e2e-daemon", KAMAILIO_TOOLS);
    rig.lab.add_second_link().expect("the second veth pair");
    rig.lab
        .ip(Host::Server, &["link", "add", BRIDGE, "type", "bridge"])
        .expect("a bridge");
    rig.lab
        .ip(Host::Server, &["link", "set", BRIDGE, "up"])
        .expect("the bridge up");
    let config_file = write_file(rig.dir.path(), "sip-filter.toml", &config(DOMAIN));
    let log = rig.dir.path().join("sip-filter.log");

    // A corrupt state file (of version 1, JSON): set aside with a clear line, the daemon
    // starts anyway.
    std::fs::create_dir_all(rig.pins.state_dir()).unwrap();
    let state_file = rig.pins.state_dir().join("state.json");
    std::fs::write(&state_file, "{ not json").unwrap();

    let mut daemon = start(&rig.lab, &rig.pins, &config_file, &log, &mut rig.transcript);
    let corrupt_line = daemon
        .wait_for_log("state file is corrupt", QUICK)
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(corrupt_line.contains("level=error"), "{corrupt_line}");
    let aside: Vec<_> = std::fs::read_dir(rig.pins.state_dir())
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("state.json.corrupt-")
        })
        .collect();
    assert_eq!(aside.len(), 1, "the corrupt file is kept aside");
    assert_eq!(
        std::fs::read_to_string(aside[0].path()).unwrap(),
        "{ not json"
    );

    // auto mode: native where the driver has it, generic with a warning where not.
    let fallback = daemon
        .wait_for_log("falling back to generic (skb) mode", QUICK)
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        fallback.contains("level=warn") && fallback.contains(&format!("iface={BRIDGE}")),
        "{fallback}"
    );

    // status: every interface and its mode, one program, maps against capacity.
    let status = status_json(&mut rig.transcript, &rig.lab, &rig.pins);
    assert_eq!(status["daemon"]["running"], true, "{status}");
    // nsenter execs the daemon: same pid.
    assert_eq!(status["daemon"]["pid"], daemon.pid(), "{status}");
    let interfaces = status["interfaces"].as_array().expect("interfaces");
    let names_modes: Vec<(String, String)> = interfaces
        .iter()
        .map(|i| {
            (
                i["name"].as_str().unwrap().to_string(),
                i["mode"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        names_modes,
        [
            (BRIDGE.to_string(), "skb".to_string()),
            (SERVER_IFACE.to_string(), "native".to_string()),
            (SECOND_SERVER_IFACE.to_string(), "native".to_string())
        ],
        "{status}"
    );
    let program_id = status["program_id"].as_u64().expect("a program id");
    assert!(program_id > 0);
    assert!(
        interfaces.iter().all(|i| i["program_id"] == program_id),
        "one program on both interfaces: {status}"
    );
    assert_eq!(status["dry_run"], false, "{status}");
    assert_eq!(
        status["config_file"],
        config_file.to_str().unwrap(),
        "{status}"
    );
    let domains_map = status["maps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == names::DOMAINS)
        .cloned()
        .expect("SF_DOMAINS in status");
    assert_eq!(domains_map["entries"], 1, "{status}");
    assert_eq!(domains_map["capacity"], 4096, "{status}");
    let text = rig
        .transcript
        .keep("status", cli(&rig.lab, &rig.pins, &["status"]));
    assert!(text.success(), "{text}");
    let egress = auto_egress_mode();
    for needle in [
        "daemon:      running, pid",
        &format!(
            "interfaces:  {BRIDGE} (skb; egress {egress}), {SERVER_IFACE} (native; egress {egress}), {SECOND_SERVER_IFACE} (native; egress {egress})"
        ),
        "dry-run:     no",
        "SF_BANS",
        "1048576",
    ] {
        assert!(text.stdout.contains(needle), "{needle:?} missing:\n{text}");
    }
    let domains = rig.transcript.keep(
        "domains list",
        cli(&rig.lab, &rig.pins, &["domains", "list"]),
    );
    assert!(
        domains.success() && domains.stdout.trim() == DOMAIN,
        "{domains}"
    );

    // Both interfaces filter: answered where allowed.
    assert_eq!(
        options(&rig.lab, CLIENT_V4, DOMAIN),
        Some(200),
        "via {SERVER_IFACE}"
    );
    route_second_client_via(&rig.lab, SECOND_CLIENT_IFACE);
    assert_eq!(
        options(&rig.lab, SECOND_CLIENT_V4, DOMAIN),
        Some(200),
        "via {SECOND_SERVER_IFACE}"
    );

    // A scanner on the second interface is banned...
    assert_eq!(
        probe(
            &rig.lab,
            SECOND_CLIENT_V4,
            &format!("sip:100@{DOMAIN}"),
            "friendly-scanner"
        ),
        None
    );
    let banned = bans_of(&mut rig.transcript, &rig.lab, &rig.pins, SECOND_CLIENT_V4);
    assert_eq!(banned.len(), 1, "{banned:?}");
    assert_eq!(banned[0]["reason"], "scanner", "{banned:?}");
    // ...and dropped on the first.
    route_second_client_via(&rig.lab, CLIENT_IFACE);
    assert_eq!(
        options(&rig.lab, SECOND_CLIENT_V4, DOMAIN),
        None,
        "the source banned on {SECOND_SERVER_IFACE} should be dropped on {SERVER_IFACE}"
    );
    assert_eq!(
        options(&rig.lab, CLIENT_V4, DOMAIN),
        Some(200),
        "others still pass"
    );

    // SIGHUP with a good file: the new domain passes, the old one is dropped; the ban
    // and CLIENT_V4's bucket are as they were.
    let bucket_before = source_state(&rig.pins, CLIENT_V4).expect("CLIENT_V4 has a bucket");
    write_file(rig.dir.path(), "sip-filter.toml", &config(NEW_DOMAIN));
    daemon.signal(libc::SIGHUP);
    let reloaded = daemon
        .wait_for_log("configuration reloaded", QUICK)
        .unwrap_or_else(|e| panic!("{e}"));
    rig.transcript.note(reloaded);
    assert_eq!(
        source_state(&rig.pins, CLIENT_V4),
        Some(bucket_before),
        "the bucket of {CLIENT_V4} should survive the reload unchanged"
    );
    assert_eq!(
        options(&rig.lab, CLIENT_V4, NEW_DOMAIN),
        Some(200),
        "new domain after reload"
    );
    assert_eq!(
        options(&rig.lab, CLIENT_V4, DOMAIN),
        None,
        "old domain after reload"
    );
    assert_eq!(
        bans_of(&mut rig.transcript, &rig.lab, &rig.pins, SECOND_CLIENT_V4).len(),
        1
    );
    assert_eq!(
        options(&rig.lab, SECOND_CLIENT_V4, NEW_DOMAIN),
        None,
        "still banned"
    );
    let domains = rig.transcript.keep(
        "domains list",
        cli(&rig.lab, &rig.pins, &["domains", "list"]),
    );
    assert!(
        domains.success() && domains.stdout.trim() == NEW_DOMAIN,
        "{domains}"
    );

    // SIGHUP with a bad file: one clear line, and the running configuration stays.
    write_file(
        rig.dir.path(),
        "sip-filter.toml",
        "[filter]\ndomains = [\"a b\"]\n",
    );
    daemon.signal(libc::SIGHUP);
    let refused = daemon
        .wait_for_log("configuration reload refused", QUICK)
        .unwrap_or_else(|e| panic!("{e}"));
    rig.transcript.note(refused.clone());
    assert!(
        refused.contains("level=error")
            && refused.contains("line 2: filter.domains")
            && refused.contains("the running configuration stays"),
        "{refused}"
    );
    assert_eq!(
        options(&rig.lab, CLIENT_V4, NEW_DOMAIN),
        Some(200),
        "kept after a bad reload"
    );
    assert_eq!(
        options(&rig.lab, CLIENT_V4, DOMAIN),
        None,
        "kept after a bad reload"
    );
    let status = status_json(&mut rig.transcript, &rig.lab, &rig.pins);
    assert_eq!(status["reloads"], 1, "{status}");
    assert_eq!(status["reload_failures"], 1, "{status}");
    assert!(
        status["last_reload_error"]
            .as_str()
            .is_some_and(|e| e.contains("filter.domains")),
        "{status}"
    );
    write_file(rig.dir.path(), "sip-filter.toml", &config(NEW_DOMAIN));

    // A restart keeps what operators added, with its TTL and reason; an operator entry
    // that expired is swept out by the daemon (every --save-interval).
    let feed = write_file(
        rig.dir.path(),
        "feed.txt",
        &format!("{IMPORTED_BAN}\n{IMPORTED_NET}  # a feed\n"),
    );
    let feed = feed.to_str().expect("a UTF-8 path");
    for args in [
        vec!["block", "add", MANUAL_BAN, "--ttl", "1h"],
        vec![
            "block", "add", DENIED_NET, "--ttl", "1h", "--reason", "feed",
        ],
        vec!["allow", "add", ALLOWED_NET, "--ttl", "2h"],
        vec!["block", "import", feed, "--ttl", "3h"],
        vec!["block", "add", EXPIRING_NET, "--ttl", "1s"],
    ] {
        let added = rig
            .transcript
            .keep(&args.join(" "), cli(&rig.lab, &rig.pins, &args));
        assert!(added.success(), "{added}");
    }
    assert_eq!(
        options(&rig.lab, LEGIT_CLIENT_V4, NEW_DOMAIN),
        None,
        "denied"
    );
    let swept = daemon
        .wait_for_log("expired operator entr", QUICK)
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(swept.contains("list=deny"), "{swept}");
    assert!(
        !deny_list_holds(&rig.pins, EXPIRING_NET),
        "the expired entry left the trie"
    );
    assert!(deny_list_holds(&rig.pins, DENIED_NET), "the live one stays");
    rig.stop_filter(&mut daemon);
    assert!(!rig.pins.link_pin(SECOND_SERVER_IFACE).exists());
    assert!(
        !xdp_attached_on(&rig.lab, SECOND_SERVER_IFACE) && !xdp_attached_on(&rig.lab, BRIDGE),
        "detached from every interface"
    );
    let saved =
        std::fs::read(rig.pins.state_dir().join("state.bin")).expect("a state file after the stop");
    assert!(saved.starts_with(b"SIPFSTAT"), "the binary state file");
    rig.transcript
        .note(format!("state file: {} bytes", saved.len()));
    assert!(!state_file.exists(), "no state.json is written any more");
    drop(daemon);

    let mut daemon = start(&rig.lab, &rig.pins, &config_file, &log, &mut rig.transcript);
    let manual = bans_of(&mut rig.transcript, &rig.lab, &rig.pins, MANUAL_BAN);
    assert_eq!(manual.len(), 1, "{manual:?}");
    assert_eq!(manual[0]["reason"], "manual");
    let left = manual[0]["seconds_left"].as_u64().unwrap_or(0);
    assert!((3400..=3600).contains(&left), "about 1 h left: {manual:?}");
    assert_eq!(
        bans_of(&mut rig.transcript, &rig.lab, &rig.pins, SECOND_CLIENT_V4).len(),
        1
    );
    assert_eq!(
        options(&rig.lab, SECOND_CLIENT_V4, NEW_DOMAIN),
        None,
        "still banned after restart"
    );
    let denied = bans_of(&mut rig.transcript, &rig.lab, &rig.pins, DENIED_NET);
    assert_kept(&denied, "deny", "feed", 1);
    assert_eq!(
        options(&rig.lab, LEGIT_CLIENT_V4, NEW_DOMAIN),
        None,
        "still denied after restart"
    );
    let allowed = listed(
        &mut rig.transcript,
        &rig.lab,
        &rig.pins,
        "allow",
        ALLOWED_NET,
    );
    assert_kept(&allowed, "allow", "-", 2);
    let imported_ban = bans_of(&mut rig.transcript, &rig.lab, &rig.pins, IMPORTED_BAN);
    assert_kept(&imported_ban, "ban", "feed", 3);
    let imported_net = bans_of(&mut rig.transcript, &rig.lab, &rig.pins, IMPORTED_NET);
    assert_kept(&imported_net, "deny", "feed", 3);
    assert!(bans_of(&mut rig.transcript, &rig.lab, &rig.pins, EXPIRING_NET).is_empty());

    // unload with the daemon alive: stops it, detaches, traffic passes.
    let unloaded = rig
        .transcript
        .keep("unload", cli(&rig.lab, &rig.pins, &["unload"]));
    assert!(
        unloaded.success() && unloaded.stdout.contains("stopped the sip-filter daemon"),
        "{unloaded}"
    );
    let exited = daemon.wait(QUICK).expect("the daemon stopped");
    assert!(exited.success(), "{}", daemon.log());
    assert!(!rig.pins.path().exists(), "pins left after unload");
    assert!(!xdp_attached(&rig.lab) && !xdp_attached_on(&rig.lab, SECOND_SERVER_IFACE));
    assert_eq!(
        options(&rig.lab, SECOND_CLIENT_V4, NEW_DOMAIN),
        Some(200),
        "unloaded: passes"
    );
    drop(daemon);

    // A killed daemon leaves the program attached and filtering through its pins;
    // status says so, and unload removes it.
    let mut daemon = start(&rig.lab, &rig.pins, &config_file, &log, &mut rig.transcript);
    daemon.signal(SIGKILL);
    daemon.wait(QUICK).expect("killed");
    assert!(
        xdp_attached(&rig.lab),
        "the pinned link keeps the program attached"
    );
    assert_eq!(
        options(&rig.lab, SECOND_CLIENT_V4, NEW_DOMAIN),
        None,
        "still filtering"
    );
    let status = status_json(&mut rig.transcript, &rig.lab, &rig.pins);
    assert_eq!(status["daemon"]["running"], false, "{status}");
    let unloaded = rig.transcript.keep(
        "unload after a crash",
        cli(&rig.lab, &rig.pins, &["unload"]),
    );
    assert!(
        unloaded.success() && unloaded.stdout.contains("detached from"),
        "{unloaded}"
    );
    assert!(!rig.pins.path().exists() && !xdp_attached(&rig.lab));
    assert_eq!(
        options(&rig.lab, SECOND_CLIENT_V4, NEW_DOMAIN),
        Some(200),
        "unloaded: passes"
    );

    rig.tear_down([daemon]);
    println!("done in {:.2} s", started.elapsed().as_secs_f64());
}

/// Whether an XDP program is attached to `iface` in the server namespace.
fn xdp_attached_on(lab: &Lab, iface: &str) -> bool {
    let shown = lab.run(Host::Server, "ip", &["link", "show", "dev", iface], QUICK);
    assert!(shown.success(), "{shown}");
    shown.stdout.contains("xdp")
}

#[test]
fn status_unload_and_domains_without_a_filter_exit_3_with_one_line() {
    // Reads pins and the runtime file only: no root needed.
    let pins = PinRoot::new("daemon-none");
    for verb in [&["status"][..], &["unload"], &["domains", "list"]] {
        let mut command = Command::new(sip_filter());
        command.args(verb).args(["--pin-root", pins.arg()]);
        let finished = run_bounded(command, QUICK);
        let line = assert_error_line(&finished, 3, pins.arg());
        assert!(line.starts_with("error: no filter is loaded"), "{finished}");
        assert!(finished.stdout.is_empty(), "{finished}");
    }
    assert!(
        !pins.path().exists(),
        "a verb created {}",
        pins.path().display()
    );
}

/// A verb run by a user who is not root, against a filter's pins it may not read: one
/// line that says so and how (sudo), exit status 4 (not a crash, not "no filter").
#[test]
fn verbs_without_root_say_so_in_one_line() {
    if !privileged("verbs_without_root_say_so_in_one_line") {
        return;
    }
    // Root's pin root, as the daemon leaves it: not readable by others.
    use std::os::unix::fs::PermissionsExt;
    let pins = TempDir::new("not-root");
    std::fs::create_dir(pins.path().join("links")).expect("links/ made");
    std::fs::set_permissions(pins.path(), std::fs::Permissions::from_mode(0o700))
        .expect("mode 0700");
    let root = pins.path().to_str().expect("a UTF-8 path");
    for verb in [
        &["stats"][..],
        &["block", "list"],
        &["status"],
        &["explain", "198.51.100.7"],
        &["auth", "locked"],
        &["auth", "unlock", "1000"],
    ] {
        let mut command = Command::new("setpriv");
        command
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(sip_filter())
            .args(verb)
            .args(["--pin-root", root]);
        let finished = run_bounded(command, QUICK);
        let line = assert_error_line(&finished, 4, "permission denied");
        assert!(
            line.contains(&format!("sudo sip-filter {}", verb[0])),
            "{finished}"
        );
    }
}
