//! End to end, in network namespaces: `sip-filter block add` from another shell bans a
//! source on the running filter (its legitimate OPTIONS goes unanswered and is counted
//! as drop_banned), `block list --json` shows the ban, `block del` lifts it.
//!
//! Needs root and the test tools (`cargo xtask setup --test-tools`: kamailio).

use std::time::Duration;

use serde_json::Value;
use sip_filter_tests::{
    lab::{
        assert_one_error_line, counter, options_probe, sip_filter, LabFixture, PinRoot, Transcript,
        KAMAILIO_TOOLS, QUICK,
    },
    netns::{Finished, Host, Lab, CLIENT_V4, SERVER_IFACE},
    privileged,
};

/// The User-Agent of the probes: no scanner's.
const USER_AGENT: &str = "sip-filter-e2e-block";
/// How long a probe waits for an answer (Kamailio answers in milliseconds).
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

fn block(lab: &Lab, pins: &PinRoot, args: &[&str]) -> Finished {
    let mut all: Vec<&str> = vec!["block"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--pin-root", pins.arg()]);
    lab.run(Host::Server, sip_filter(), &all, QUICK)
}

fn options_from(lab: &Lab, from: &str) -> Option<u16> {
    options_probe(lab, from, USER_AGENT, PROBE_TIMEOUT)
}

/// The entries of `block list --json` for `address`.
fn listed(transcript: &mut Transcript, lab: &Lab, pins: &PinRoot, address: &str) -> Vec<Value> {
    let list = transcript.keep("block list --json", block(lab, pins, &["list", "--json"]));
    assert!(list.success(), "{list}");
    let json: Value = serde_json::from_str(&list.stdout)
        .unwrap_or_else(|e| panic!("block list --json is not JSON ({e}):\n{list}"));
    let entries = json
        .as_array()
        .unwrap_or_else(|| panic!("not an array: {json}"));
    entries
        .iter()
        .filter(|entry| entry["address"] == address)
        .cloned()
        .collect()
}

#[test]
fn block_add_list_del_on_a_running_filter() {
    if !privileged("block_add_list_del_on_a_running_filter") {
        return;
    }
    let mut rig = LabFixture::start("e2e-block", KAMAILIO_TOOLS);
    let (mut daemon, attached) = rig.start_filter();
    rig.transcript.note(attached);

    // Before any ban the source is answered.
    assert_eq!(
        options_from(&rig.lab, CLIENT_V4),
        Some(200),
        "OPTIONS from {CLIENT_V4} before the ban should be answered"
    );

    // Ban it for an hour, from another process.
    let added = rig.transcript.keep(
        "block add",
        block(&rig.lab, &rig.pins, &["add", CLIENT_V4, "--ttl", "1h"]),
    );
    assert!(added.success(), "{added}");
    assert!(
        added.stdout.contains(CLIENT_V4) && added.stdout.contains(SERVER_IFACE),
        "{added}"
    );

    let entries = listed(&mut rig.transcript, &rig.lab, &rig.pins, CLIENT_V4);
    assert_eq!(entries.len(), 1, "one ban for {CLIENT_V4}: {entries:?}");
    let entry = &entries[0];
    assert_eq!(entry["iface"], SERVER_IFACE, "{entry}");
    assert_eq!(entry["reason"], "manual", "{entry}");
    assert_eq!(entry["until_removed"], false, "{entry}");
    assert_eq!(entry["expired"], false, "{entry}");
    let left = entry["seconds_left"].as_u64().unwrap_or(0);
    assert!((3500..=3600).contains(&left), "about 1 h left: {entry}");

    // Its OPTIONS goes unanswered, counted as drop_banned.
    let before = rig
        .transcript
        .stats("stats before the banned OPTIONS", &rig.lab, &rig.pins);
    assert_eq!(
        options_from(&rig.lab, CLIENT_V4),
        None,
        "OPTIONS from banned {CLIENT_V4} should go unanswered"
    );
    let after = rig
        .transcript
        .stats("stats after the banned OPTIONS", &rig.lab, &rig.pins);
    let banned = counter(&after, "reasons", "drop_banned").saturating_sub(counter(
        &before,
        "reasons",
        "drop_banned",
    ));
    assert!(banned >= 1, "drop_banned should count the OPTIONS: {after}");

    // Lifted: answered again.
    let deleted = rig
        .transcript
        .keep("block del", block(&rig.lab, &rig.pins, &["del", CLIENT_V4]));
    assert!(
        deleted.success() && deleted.stdout.contains("unbanned"),
        "{deleted}"
    );
    assert!(
        listed(&mut rig.transcript, &rig.lab, &rig.pins, CLIENT_V4).is_empty(),
        "{CLIENT_V4} still listed after block del"
    );
    assert_eq!(
        options_from(&rig.lab, CLIENT_V4),
        Some(200),
        "OPTIONS from {CLIENT_V4} after block del should be answered"
    );

    // A bad address: one line, exit 2, nothing banned.
    let bad = rig.transcript.keep(
        "block add not-an-address",
        block(&rig.lab, &rig.pins, &["add", "not-an-address"]),
    );
    assert_one_error_line(&bad, "not-an-address");

    rig.stop_filter(&mut daemon);
    rig.tear_down([daemon]);
}
