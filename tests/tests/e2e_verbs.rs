//! End to end, in network namespaces, the control-plane verbs on a running filter from
//! another process: `block add/del` of a network, `allow add/del` exempting a source
//! from the scanner rule, `top` naming the scanner first, `stats --watch` ending cleanly
//! on Ctrl-C, `block import` of a million entries (timed), and bad input exiting 2 with
//! one line.
//!
//! Needs root and the test tools (`cargo xtask setup --test-tools`: kamailio).

use std::{fmt::Write as _, time::Duration};

use sip_filter::{
    filter::PinnedBans,
    lists::{ListKind, PinnedList},
};
use sip_filter_tests::{
    lab::{
        assert_error_line, assert_one_error_line, counter, json_output, options_probe, sip_filter,
        sip_probe, verb, write_file, LabFixture, Transcript, KAMAILIO_TOOLS, QUICK,
    },
    netns::{Host, CLIENT_V4, LEGIT_CLIENT_V4, SERVER_IFACE, SIGINT},
    privileged,
};

const USER_AGENT: &str = "sip-filter-e2e-verbs";
const SCANNER: &str = "friendly-scanner";
/// How long a probe expected to be answered waits (Kamailio answers in milliseconds;
/// the wait ends with the answer, so a generous bound costs nothing).
const ANSWERED: Duration = Duration::from_secs(10);
/// How long a probe expected to be dropped waits.
const DROPPED: Duration = Duration::from_millis(500);

#[test]
fn block_allow_top_and_watch_on_a_running_filter() {
    if !privileged("block_allow_top_and_watch_on_a_running_filter") {
        return;
    }
    let mut rig = LabFixture::start("e2e-verbs", KAMAILIO_TOOLS);
    let maps_dir = rig.pins.maps_dir();
    let (mut daemon, attached) = rig.start_filter();
    rig.transcript.note(attached);
    let run = |transcript: &mut Transcript, args: &[&str]| {
        transcript.keep(&args.join(" "), verb(&rig.lab, &rig.pins, args, QUICK))
    };

    // block add NETWORK drops a source inside it; block del restores it.
    assert_eq!(
        options_probe(&rig.lab, CLIENT_V4, USER_AGENT, ANSWERED),
        Some(200)
    );
    let added = run(
        &mut rig.transcript,
        &[
            "block",
            "add",
            "198.18.0.0/24",
            "--ttl",
            "1h",
            "--reason",
            "feed",
        ],
    );
    assert!(
        added.success() && added.stdout.contains("denied 198.18.0.0/24"),
        "{added}"
    );
    let before = rig.transcript.stats("stats before", &rig.lab, &rig.pins);
    assert_eq!(
        options_probe(&rig.lab, CLIENT_V4, USER_AGENT, DROPPED),
        None,
        "denied"
    );
    let after = rig.transcript.stats("stats after", &rig.lab, &rig.pins);
    assert!(
        counter(&after, "reasons", "drop_denied") > counter(&before, "reasons", "drop_denied"),
        "{after}"
    );
    let listed = json_output(&run(&mut rig.transcript, &["block", "list", "--json"]));
    let entry = listed
        .as_array()
        .and_then(|all| all.iter().find(|e| e["address"] == "198.18.0.0/24"))
        .unwrap_or_else(|| panic!("198.18.0.0/24 not listed: {listed}"))
        .clone();
    assert_eq!(entry["kind"], "deny", "{entry}");
    assert_eq!(entry["origin"], "operator", "{entry}");
    assert_eq!(entry["reason"], "feed", "{entry}");
    assert!(entry["drops"].as_u64() >= Some(1), "{entry}");
    let left = entry["seconds_left"].as_u64().unwrap_or(0);
    assert!((3500..=3600).contains(&left), "about 1 h left: {entry}");
    let deleted = run(&mut rig.transcript, &["block", "del", "198.18.0.0/24"]);
    assert!(
        deleted.success() && deleted.stdout.contains("removed"),
        "{deleted}"
    );
    assert_eq!(
        options_probe(&rig.lab, CLIENT_V4, USER_AGENT, ANSWERED),
        Some(200),
        "after del"
    );

    // allow add: a trusted source is never judged a scanner (nor banned for it).
    let allowed = run(
        &mut rig.transcript,
        &["allow", "add", CLIENT_V4, "--ttl", "10m"],
    );
    assert!(allowed.success(), "{allowed}");
    let allows = json_output(&run(&mut rig.transcript, &["allow", "list", "--json"]));
    assert_eq!(allows[0]["address"], format!("{CLIENT_V4}/32"), "{allows}");
    assert_eq!(allows[0]["origin"], "operator", "{allows}");
    assert_eq!(
        options_probe(&rig.lab, CLIENT_V4, SCANNER, ANSWERED),
        Some(200),
        "an allowed source's scanner User-Agent passes"
    );
    let removed = run(&mut rig.transcript, &["allow", "del", CLIENT_V4]);
    assert!(removed.success(), "{removed}");

    // Now it is a scanner: dropped, banned, and its later probes dropped as banned. A
    // second source sends one unknown-domain probe.
    assert_eq!(
        options_probe(&rig.lab, CLIENT_V4, SCANNER, DROPPED),
        None,
        "a scanner"
    );
    for _ in 0..3 {
        assert_eq!(
            options_probe(&rig.lab, CLIENT_V4, USER_AGENT, DROPPED),
            None,
            "banned"
        );
    }
    let unknown = sip_probe(
        &rig.lab,
        LEGIT_CLIENT_V4.parse().expect("an address"),
        "OPTIONS",
        "sip:100@unknown.example.test",
        USER_AGENT,
        DROPPED,
    )
    .unwrap_or_else(|e| panic!("{e:#}"));
    assert_eq!(unknown, None, "an unknown domain");
    let top = json_output(&run(&mut rig.transcript, &["top", "--json"]));
    let rows = top.as_array().unwrap_or_else(|| panic!("{top}"));
    assert!(rows.len() >= 2, "{top}");
    assert_eq!(rows[0]["source"], CLIENT_V4, "the scanner first: {top}");
    assert_eq!(rows[0]["iface"], SERVER_IFACE, "{top}");
    assert_eq!(rows[0]["reasons"]["drop_scanner"], 1, "{top}");
    assert_eq!(rows[0]["reasons"]["drop_banned"], 3, "{top}");
    assert_eq!(rows[0]["banned"], "scanner", "{top}");
    assert_eq!(rows[1]["source"], LEGIT_CLIENT_V4, "{top}");
    assert_eq!(rows[1]["reasons"]["drop_unknown_domain"], 1, "{top}");
    let table = run(&mut rig.transcript, &["top"]);
    let mut lines = table.stdout.lines();
    let title = lines.next().unwrap_or_default();
    assert_eq!(
        title,
        format!("drops by source on {SERVER_IFACE}"),
        "{table}"
    );
    let first = lines.nth(1).unwrap_or_default();
    assert!(
        first.contains(CLIENT_V4) && first.contains("drop_banned 3") && first.contains("scanner"),
        "{table}"
    );

    // stats --watch prints every interval with rates, and Ctrl-C ends it cleanly.
    let mut watch = rig
        .lab
        .spawn(
            Host::Server,
            "stats --watch",
            sip_filter(),
            &[
                "stats",
                "--watch",
                "--interval",
                "1s",
                "--pin-root",
                rig.pins.arg(),
            ],
            &rig.dir.path().join("watch.log"),
        )
        .unwrap_or_else(|e| panic!("{e:#}"));
    let waited = (|| {
        watch.wait_for_log("per second", QUICK)?;
        std::thread::sleep(Duration::from_millis(1200));
        Ok::<_, String>(())
    })();
    watch.signal(SIGINT);
    let status = watch.wait(QUICK);
    let log = watch.log();
    rig.transcript
        .note(format!("stats --watch printed:\n{log}"));
    waited.unwrap_or_else(|e| panic!("{e}"));
    assert!(
        status.is_some_and(|s| s.success()),
        "stats --watch should exit 0 on Ctrl-C: {status:?}\n{log}"
    );
    assert!(log.matches("per second").count() >= 2, "{log}");

    // Wrong input: one line, exit 2, nothing changed.
    let bad_file = write_file(
        rig.dir.path(),
        "bad.txt",
        "198.51.100.7\n# ok\n198.51.100.300\n",
    );
    let bad_file = bad_file.to_str().expect("a UTF-8 path");
    for (args, mentions) in [
        (vec!["block", "add", "198.18.0.0/33"], "198.18.0.0/33"),
        (vec!["block", "add", "198.51.100.7", "--ttl", "5x"], "5x"),
        (vec!["allow", "add", "not-a-network"], "not-a-network"),
        (vec!["block", "import", bad_file], "line 3"),
        (vec!["block", "list", "--iface", "nosuch0"], "nosuch0"),
        (vec!["top", "--iface", "nosuch0"], "nosuch0"),
    ] {
        let refused = run(&mut rig.transcript, &args);
        assert_one_error_line(&refused, mentions);
    }
    let bans = PinnedBans::open(&maps_dir).expect("bans open");
    assert!(
        !bans
            .list()
            .expect("bans read")
            .iter()
            .any(|(key, _)| { sip_filter::filter::key_to_string(*key, 64) == "198.51.100.7" }),
        "the bad import file's good first line was not imported"
    );

    rig.stop_filter(&mut daemon);
    // No filter loaded any more.
    let none = run(&mut rig.transcript, &["block", "list"]);
    assert_error_line(&none, 3, "no filter is loaded");
    drop(watch);
    rig.tear_down([daemon]);
}

/// `block import` of 1,000,000 entries (half addresses, half networks) in at most 10 s.
#[test]
fn block_import_of_a_million_entries() {
    if !privileged("block_import_of_a_million_entries") {
        return;
    }
    let mut rig = LabFixture::start("e2e-import", KAMAILIO_TOOLS);
    let maps_dir = rig.pins.maps_dir();
    let (mut daemon, attached) = rig.start_filter();
    rig.transcript.note(attached);

    // 499,999 addresses in 11.0.0.0/8 and the client's; 500,000 /28s in 32.0.0.0/4.
    let mut feed = String::from("# a feed of a million entries\n");
    for i in 0..499_999u32 {
        let _ = writeln!(feed, "{}", std::net::Ipv4Addr::from(0x0b00_0000 + i));
    }
    let _ = writeln!(feed, "{CLIENT_V4}   # the lab's client");
    for i in 0..500_000u32 {
        let _ = writeln!(
            feed,
            "{}/28",
            std::net::Ipv4Addr::from(0x2000_0000 + (i << 4))
        );
    }
    let file = write_file(rig.dir.path(), "feed.txt", &feed);
    assert_eq!(
        options_probe(&rig.lab, CLIENT_V4, USER_AGENT, ANSWERED),
        Some(200)
    );

    let cpu_before = children_cpu();
    let imported = rig.transcript.keep(
        "block import",
        verb(
            &rig.lab,
            &rig.pins,
            &[
                "block",
                "import",
                file.to_str().expect("UTF-8"),
                "--ttl",
                "1d",
            ],
            Duration::from_secs(120),
        ),
    );
    assert!(imported.success(), "{imported}");
    // CPU time is the import's own cost; the wall clock also counts the other processes
    // sharing the machine's cores (the test runner, the VM test, other builds).
    let cpu = children_cpu() - cpu_before;
    let seconds = imported.elapsed.as_secs_f64();
    rig.transcript.note(format!(
        "block import of 1,000,000 entries (500,000 addresses, 500,000 networks): {seconds:.2} s wall, {cpu:.2} s CPU (user + system); it said: {}",
        imported.stdout.trim()
    ));
    let bans = PinnedBans::open(&maps_dir).expect("bans open");
    let deny = PinnedList::open(&maps_dir, ListKind::Deny).expect("deny list open");
    assert_eq!(bans.keys().expect("bans read").len(), 500_000);
    assert_eq!(deny.count().expect("deny list read"), 500_000);
    assert!(
        cpu <= 10.0,
        "1,000,000 entries took {cpu:.2} s of CPU, over 10 s"
    );
    assert!(
        seconds <= 30.0,
        "1,000,000 entries took {seconds:.2} s, over 30 s even on a busy machine"
    );
    assert_eq!(
        options_probe(&rig.lab, CLIENT_V4, USER_AGENT, DROPPED),
        None,
        "the client, banned by the import"
    );

    // The stop saves all of it (read in batches, written as 28-byte records). A debug
    // build on a loaded 2-core machine (the VM test beside it) takes far longer than the
    // release build's figure, which `cargo xtask bench` measures against its target.
    let stopping = std::time::Instant::now();
    rig.stop_filter_within(&mut daemon, STOP_WITH_A_MILLION);
    println!(
        "stop with 500,000 bans and 500,000 deny entries (debug build): {:.2} s",
        stopping.elapsed().as_secs_f64()
    );
    rig.tear_down([daemon]);
}

/// How long the million-entry test waits for the daemon to stop: generous, so only a
/// daemon that ignores SIGINT fails it.
const STOP_WITH_A_MILLION: Duration = Duration::from_secs(120);

/// CPU time (user + system, seconds) of this process's children that have been waited
/// for: the commands `Lab::run` ran.
fn children_cpu() -> f64 {
    // SAFETY: getrusage fills the struct we own.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) };
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    seconds(usage.ru_utime) + seconds(usage.ru_stime)
}
