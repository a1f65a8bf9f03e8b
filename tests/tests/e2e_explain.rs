//! End to end, in network namespaces, on a running filter from another process:
//! `sip-filter explain` says why an address is (not) dropped, for an allowed, a
//! denied, a banned (by the filter, for a scanner User-Agent; by hand, an IPv6 /64)
//! and an unknown address, in text and JSON; and the `block` extras: `list --reason
//! --origin --limit`, `flush`, and `import -` from standard input.
//!
//! Needs root and the test tools (`cargo xtask setup --test-tools`: kamailio).

use std::time::Duration;

use serde_json::Value;
use sip_filter_tests::{
    lab::{
        assert_error_line, assert_one_error_line, json_output, options_probe, sip_filter,
        spawn_filter, verb, write_file, LabFixture, PinRoot, Transcript, DOMAIN, KAMAILIO_TOOLS,
        QUICK,
    },
    netns::{Host, Lab, CLIENT_V4, CLIENT_V6, LEGIT_CLIENT_V4, SERVER_IFACE},
    privileged,
};

const USER_AGENT: &str = "sip-filter-e2e-explain";
const SCANNER: &str = "friendly-scanner";
/// A probe expected to be answered waits this long (the wait ends with the answer).
const ANSWERED: Duration = Duration::from_secs(10);
/// A probe expected to be dropped waits this long.
const DROPPED: Duration = Duration::from_millis(500);
/// An operator's deny entry, for an hour, from a feed.
const DENY_FROM_A_FEED: [&str; 7] = [
    "block",
    "add",
    "203.0.113.0/24",
    "--ttl",
    "1h",
    "--reason",
    "feed",
];

/// `explain ADDRESS` in text and in JSON: the verdict line, and the object.
fn explain(
    transcript: &mut Transcript,
    lab: &Lab,
    pins: &PinRoot,
    address: &str,
) -> (String, Value) {
    let text = transcript.keep(
        &format!("explain {address}"),
        verb(lab, pins, &["explain", address], QUICK),
    );
    assert!(text.success(), "{text}");
    let verdict = text
        .stdout
        .lines()
        .find_map(|line| line.strip_prefix("verdict: "))
        .unwrap_or_else(|| panic!("no verdict line:\n{text}"))
        .to_string();
    let json = json_output(&transcript.keep(
        &format!("explain {address} --json"),
        verb(lab, pins, &["explain", address, "--json"], QUICK),
    ));
    transcript.note(format!("explain {address}: {json}"));
    assert_eq!(
        json["verdict"]["text"],
        verdict.as_str(),
        "text and JSON agree"
    );
    (text.stdout, json)
}

fn seconds_left(entry: &Value) -> u64 {
    entry["seconds_left"]
        .as_u64()
        .unwrap_or_else(|| panic!("no seconds_left: {entry}"))
}

#[test]
fn explain_allowed_denied_banned_and_unknown() {
    if !privileged("explain_allowed_denied_banned_and_unknown") {
        return;
    }
    let mut rig = LabFixture::start("e2e-explain", KAMAILIO_TOOLS);
    // A slow bucket for other requests: what a source spent shows for many seconds.
    let mut daemon = rig.start_filter_with(&format!(
        "[filter]\ndomains = [\"{DOMAIN}\"]\n\n[rate_limit.other]\nrate = 1\nburst = 50\n"
    ));

    // Allowed: an operator's entry for the legitimate client.
    rig.transcript.verb_ok(
        &rig.lab,
        &rig.pins,
        &["allow", "add", LEGIT_CLIENT_V4, "--ttl", "10m"],
    );
    let (text, json) = explain(&mut rig.transcript, &rig.lab, &rig.pins, LEGIT_CLIENT_V4);
    assert!(
        text.contains(&format!("allow list: {LEGIT_CLIENT_V4}/32 (operator, 9m ")),
        "{text}"
    );
    assert!(
        json["verdict"]["text"]
            .as_str()
            .is_some_and(|v| v.starts_with(&format!(
                "would pass: trusted (allow list {LEGIT_CLIENT_V4}/32, operator)"
            ))),
        "{json}"
    );
    assert_eq!(json["verdict"]["dropped"], false, "{json}");
    assert_eq!(
        json["allow"][0]["address"],
        format!("{LEGIT_CLIENT_V4}/32"),
        "{json}"
    );
    assert_eq!(json["allow"][0]["origin"], "operator", "{json}");
    assert_eq!(json["allow"][0]["effective"], true, "{json}");
    assert!(
        (500..=600).contains(&seconds_left(&json["allow"][0])),
        "{json}"
    );
    assert_eq!(json["buckets"][0]["class"], "trusted", "{json}");

    // Denied: a network from a feed; an address inside it.
    rig.transcript
        .verb_ok(&rig.lab, &rig.pins, &DENY_FROM_A_FEED);
    let (text, json) = explain(&mut rig.transcript, &rig.lab, &rig.pins, "203.0.113.9");
    assert!(
        text.contains("verdict: would be dropped: denied by 203.0.113.0/24 (operator), 59m "),
        "{text}"
    );
    assert_eq!(json["verdict"]["dropped"], true, "{json}");
    assert_eq!(json["verdict"]["reason"], "drop_denied", "{json}");
    let entry = &json["deny"][0];
    assert_eq!(entry["address"], "203.0.113.0/24", "{json}");
    assert_eq!(
        (&entry["origin"], &entry["reason"]),
        (&"operator".into(), &"feed".into()),
        "{json}"
    );
    assert!((3500..=3600).contains(&seconds_left(entry)), "{json}");

    // Banned by the filter: a scanner's User-Agent, then its later probes.
    assert_eq!(
        options_probe(&rig.lab, CLIENT_V4, SCANNER, DROPPED),
        None,
        "a scanner"
    );
    for _ in 0..2 {
        assert_eq!(
            options_probe(&rig.lab, CLIENT_V4, USER_AGENT, DROPPED),
            None,
            "banned"
        );
    }
    let (text, json) = explain(&mut rig.transcript, &rig.lab, &rig.pins, CLIENT_V4);
    assert!(
        text.contains("verdict: would be dropped: banned for scanner, 59m "),
        "{text}"
    );
    assert!(
        text.contains(&format!("ban: {CLIENT_V4} (filter, scanner, ")),
        "{text}"
    );
    assert_eq!(json["verdict"]["reason"], "drop_banned", "{json}");
    let ban = &json["ban"];
    assert_eq!(
        (&ban["reason"], &ban["origin"]),
        (&"scanner".into(), &"filter".into()),
        "{json}"
    );
    assert_eq!(ban["drops"], 2, "{json}");
    assert!((3400..=3600).contains(&seconds_left(ban)), "{json}");
    assert_eq!(json["tracked"], true, "{json}");
    // Remembered for repeat offenders (the built-in rule: doubling within a day).
    assert_eq!(
        (&json["automatic_bans"], &json["last_ban_s"]),
        (&1.into(), &3600.into()),
        "{json}"
    );
    assert!(
        text.contains("banned automatically 1 time(s) (the last for 1h); a new one within 1d of its end lasts 2x as long, up to 7d"),
        "{text}"
    );
    assert_eq!(json["drops"]["drop_scanner"], 1, "{json}");
    assert_eq!(json["drops"]["drop_banned"], 2, "{json}");
    assert!(
        json["allow"].as_array().is_some_and(Vec::is_empty),
        "{json}"
    );

    // Banned by hand, over IPv6: any address of the /64 is explained by its prefix.
    rig.transcript.verb_ok(
        &rig.lab,
        &rig.pins,
        &["block", "add", "2001:db8:77:1::5", "--ttl", "2h"],
    );
    let (text, json) = explain(
        &mut rig.transcript,
        &rig.lab,
        &rig.pins,
        "2001:db8:77:1:aaaa::9",
    );
    assert!(
        text.contains("banned and tracked as 2001:db8:77:1::/64"),
        "{text}"
    );
    assert!(
        text.contains("verdict: would be dropped: banned by hand, 1h 59m"),
        "{text}"
    );
    assert_eq!(json["key"], "2001:db8:77:1::/64", "{json}");
    assert_eq!(json["ban"]["origin"], "operator", "{json}");
    let (_, other) = explain(&mut rig.transcript, &rig.lab, &rig.pins, "2001:db8:77:2::5");
    assert_eq!(other["ban"], Value::Null, "another /64: {other}");

    // A source that spent part of its bucket: 20 OPTIONS answered over IPv6, explained
    // by its /64 with 30 or so of 50 left, refilling at 1 a second.
    for _ in 0..20 {
        assert_eq!(
            options_probe(&rig.lab, CLIENT_V6, USER_AGENT, ANSWERED),
            Some(200)
        );
    }
    let (text, json) = explain(&mut rig.transcript, &rig.lab, &rig.pins, CLIENT_V6);
    assert!(
        text.contains("would pass: neither trusted, denied nor banned"),
        "{text}"
    );
    assert_eq!(json["key"], "2001:db8:5f::/64", "{json}");
    assert_eq!(json["tracked"], true, "{json}");
    let other = json["buckets"]
        .as_array()
        .and_then(|buckets| buckets.iter().find(|b| b["class"] == "other"))
        .unwrap_or_else(|| panic!("no bucket for other requests: {json}"));
    assert_eq!(
        (&other["rate"], &other["burst"]),
        (&1.into(), &50.into()),
        "{json}"
    );
    let available = other["available"].as_u64().unwrap_or(50);
    assert!(
        (30..50).contains(&available),
        "20 of 50 spent, refilling at 1/s: {json}"
    );
    assert!(other["full_in_ms"].as_u64() > Some(1000), "{json}");

    // Unknown: no entry, no ban, not tracked, every bucket full.
    let (text, json) = explain(&mut rig.transcript, &rig.lab, &rig.pins, "192.0.2.77");
    assert!(
        text.contains("verdict: would pass: neither trusted, denied nor banned"),
        "{text}"
    );
    assert!(text.contains("allow list: no entry covers it"), "{text}");
    assert!(text.contains("source state: not tracked"), "{text}");
    assert_eq!(json["verdict"]["dropped"], false, "{json}");
    assert_eq!(json["ban"], Value::Null, "{json}");
    assert_eq!(json["tracked"], false, "{json}");
    assert_eq!(json["registered"], Value::Null, "{json}");
    assert_eq!(json["locked"], Value::Array(Vec::new()), "{json}");
    let buckets = json["buckets"]
        .as_array()
        .unwrap_or_else(|| panic!("{json}"));
    assert_eq!(buckets.len(), 4, "register, invite, other, answers: {json}");
    for bucket in buckets {
        assert_eq!(bucket["available"], bucket["burst"], "full: {json}");
    }

    // Wrong input: one line, exit 2.
    for (address, mentions) in [
        ("not-an-address", "not-an-address"),
        ("198.18.0.0/24", "not a network"),
    ] {
        let refused = rig.transcript.keep(
            &format!("explain {address}"),
            verb(&rig.lab, &rig.pins, &["explain", address], QUICK),
        );
        assert_one_error_line(&refused, mentions);
    }

    rig.stop_filter(&mut daemon);
    let none = rig.transcript.keep(
        "explain, no filter",
        verb(&rig.lab, &rig.pins, &["explain", CLIENT_V4], QUICK),
    );
    assert_error_line(&none, 3, "no filter is loaded");
    rig.tear_down([daemon]);
}

/// The rows of `block list --json ARGS`.
fn list(transcript: &mut Transcript, lab: &Lab, pins: &PinRoot, args: &[&str]) -> Vec<Value> {
    let mut all = vec!["block", "list", "--json"];
    all.extend_from_slice(args);
    let json = json_output(&transcript.keep(&all.join(" "), verb(lab, pins, &all, QUICK)));
    json.as_array()
        .cloned()
        .unwrap_or_else(|| panic!("not an array: {json}"))
}

fn addresses(rows: &[Value]) -> Vec<&str> {
    let mut addresses: Vec<&str> = rows
        .iter()
        .filter_map(|row| row["address"].as_str())
        .collect();
    addresses.sort_unstable();
    addresses
}

#[test]
fn block_list_filters_flush_and_import_from_stdin() {
    if !privileged("block_list_filters_flush_and_import_from_stdin") {
        return;
    }
    let mut rig = LabFixture::start("e2e-flush", KAMAILIO_TOOLS);
    let (mut daemon, attached) = spawn_filter(
        &rig.lab,
        sip_filter(),
        &rig.pins,
        &["--domain", DOMAIN, "--deny", "192.0.2.0/24"],
        &rig.dir.path().join("sip-filter.log"),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    rig.transcript.note(attached);

    // A ban of each origin, and deny entries of the configuration and an operator.
    rig.transcript.verb_ok(
        &rig.lab,
        &rig.pins,
        &["block", "add", "198.51.100.1", "--ttl", "1h"],
    );
    rig.transcript.verb_ok(
        &rig.lab,
        &rig.pins,
        &[
            "block",
            "add",
            "198.51.100.2",
            "--ttl",
            "1h",
            "--reason",
            "feed",
        ],
    );
    rig.transcript
        .verb_ok(&rig.lab, &rig.pins, &DENY_FROM_A_FEED);
    assert_eq!(
        options_probe(&rig.lab, CLIENT_V4, SCANNER, DROPPED),
        None,
        "a scanner"
    );

    let (lab, pins) = (&rig.lab, &rig.pins);
    let all = list(&mut rig.transcript, lab, pins, &[]);
    assert_eq!(all.len(), 5, "{all:?}");
    assert_eq!(
        addresses(&list(&mut rig.transcript, lab, pins, &["--reason", "feed"])),
        ["198.51.100.2", "203.0.113.0/24"]
    );
    assert_eq!(
        addresses(&list(
            &mut rig.transcript,
            lab,
            pins,
            &["--origin", "filter"]
        )),
        [CLIENT_V4]
    );
    assert_eq!(
        addresses(&list(
            &mut rig.transcript,
            lab,
            pins,
            &["--origin", "config"]
        )),
        ["192.0.2.0/24"]
    );
    assert_eq!(
        addresses(&list(
            &mut rig.transcript,
            lab,
            pins,
            &["--origin", "operator", "--reason", "manual"]
        )),
        ["198.51.100.1"]
    );
    let limited = rig.transcript.keep(
        "block list --limit 2",
        verb(lab, pins, &["block", "list", "--limit", "2"], QUICK),
    );
    assert!(limited.success(), "{limited}");
    assert_eq!(
        limited.stdout.lines().count(),
        3,
        "a title and 2 rows: {limited}"
    );
    assert!(limited.stderr.contains("3 more not shown"), "{limited}");
    let none = rig.transcript.keep(
        "block list --reason rate",
        verb(lab, pins, &["block", "list", "--reason", "rate"], QUICK),
    );
    assert!(none.stdout.contains("no matching bans"), "{none}");

    // Flush by reason: the feed's ban and network go, the rest stays.
    let flushed =
        rig.transcript
            .verb_ok(&rig.lab, &rig.pins, &["block", "flush", "--reason", "feed"]);
    assert!(
        flushed.stdout.contains(&format!(
            "flushed 1 bans and 1 denied networks on {SERVER_IFACE}"
        )),
        "{flushed}"
    );
    assert_eq!(
        addresses(&list(&mut rig.transcript, lab, pins, &[])),
        ["192.0.2.0/24", CLIENT_V4, "198.51.100.1"]
    );
    // The configuration's and CrowdSec's entries are not the operator's to flush.
    for origin in ["config", "crowdsec"] {
        let refused = rig.transcript.keep(
            &format!("block flush --origin {origin}"),
            verb(lab, pins, &["block", "flush", "--origin", origin], QUICK),
        );
        assert_one_error_line(
            &refused,
            if origin == "config" {
                "[lists] deny"
            } else {
                "cscli"
            },
        );
    }
    let refused = rig.transcript.keep(
        "block flush --reason nonsense",
        verb(
            lab,
            pins,
            &["block", "flush", "--reason", "nonsense"],
            QUICK,
        ),
    );
    assert_one_error_line(&refused, "nonsense");
    // Flush all: the scanner, banned by the filter, is answered again.
    let flushed = rig
        .transcript
        .verb_ok(&rig.lab, &rig.pins, &["block", "flush"]);
    assert!(
        flushed
            .stdout
            .contains("flushed 2 bans and 0 denied networks"),
        "{flushed}"
    );
    assert_eq!(
        addresses(&list(&mut rig.transcript, lab, pins, &[])),
        ["192.0.2.0/24"],
        "the configuration's entry stays"
    );
    assert_eq!(
        options_probe(lab, CLIENT_V4, USER_AGENT, ANSWERED),
        Some(200),
        "unbanned by the flush"
    );

    // Import from standard input, as from a pipe.
    let feed = write_file(
        rig.dir.path(),
        "feed.txt",
        "# a feed on stdin\n198.51.100.7\n2001:db8:99::1\n198.51.100.64/26\n",
    );
    let piped = |file: &std::path::Path| {
        lab.run(
            Host::Server,
            "/bin/sh",
            &[
                "-c",
                "cat \"$1\" | \"$0\" block import - --ttl 1h --pin-root \"$2\"",
                sip_filter().to_str().expect("UTF-8"),
                file.to_str().expect("UTF-8"),
                pins.arg(),
            ],
            QUICK,
        )
    };
    let imported = rig
        .transcript
        .keep("cat feed | block import -", piped(&feed));
    assert!(imported.success(), "{imported}");
    assert!(
        imported.stdout.contains("imported standard input")
            && imported.stdout.contains("2 bans, 1 denied networks"),
        "{imported}"
    );
    assert_eq!(
        addresses(&list(&mut rig.transcript, lab, pins, &["--reason", "feed"])),
        ["198.51.100.64/26", "198.51.100.7", "2001:db8:99::/64"]
    );
    let bad = write_file(rig.dir.path(), "bad.txt", "198.51.100.8\nnot-an-address\n");
    let refused = rig.transcript.keep("cat bad | block import -", piped(&bad));
    assert_one_error_line(&refused, "standard input line 2");

    rig.stop_filter(&mut daemon);
    rig.tear_down([daemon]);
}
