//! Calls through a record-routing proxy (issue 19, item 3), end to end: Kamailio on the
//! server record-routes calls and loose-routes what follows them, sip-filter guards the
//! server's interface (the served domain, the example's rate limits, the default ban
//! rules), and two sipp phones in the client namespace register and make 10 calls, each
//! with a re-INVITE, an UPDATE, an INFO and a BYE. Every in-dialog request carries the
//! other phone's address as its Request-URI and the proxy's Record-Route as its Route:
//! the filter must let them through, count none as an unknown domain and ban neither
//! phone. Requests whose Request-URI and topmost Route both name a foreign host are
//! still dropped as `drop_unknown_domain`.
//!
//! Once with the proxy record-routing by its address (listed in `own_addresses`), once
//! by the served domain (no own addresses, as the example configuration advises).
//!
//! Needs root and the test tools (`cargo xtask setup --test-tools`: kamailio,
//! sip-tester).

use std::{
    net::{SocketAddr, UdpSocket},
    time::{Duration, Instant},
};

use serde_json::Value;
use sip_filter_tests::{
    attack::sipp_outcome,
    lab::{counter, response_status, sip_filter, LabFixture, QUICK, SIP_PORT},
    netns::{Finished, Host, CLIENT_V4, SERVER_V4},
    privileged,
    record_route::{
        blocked, calls, filter_config, foreign_requests, message_rows, register, routed_in_dialog,
        start_lab, ProxyName, CALLEE, CALLEE_V4, CALLER, CALLER_V4,
    },
};

const CALLS: u64 = 10;
/// Calls a second: 3 INVITEs a call stay within the INVITE bucket (5/s, burst 20).
const CALL_RATE: u32 = 2;
/// How long the foreign requests' sender waits for an answer that must not come.
const DROPPED: Duration = Duration::from_millis(700);

/// `sip-filter ARGS --pin-root ...` in the server namespace.
fn cli(rig: &LabFixture, args: &[&str]) -> Finished {
    let mut all = args.to_vec();
    all.extend_from_slice(&["--pin-root", rig.pins.arg()]);
    rig.lab.run(Host::Server, sip_filter(), &all, QUICK)
}

fn json_of(finished: &Finished) -> Value {
    assert!(finished.success(), "{finished}");
    serde_json::from_str(&finished.stdout).unwrap_or_else(|e| panic!("not JSON ({e}):\n{finished}"))
}

/// `top --json`'s row for `address`, if it had drops.
fn drops_of<'a>(top: &'a Value, address: &str) -> Option<&'a Value> {
    top.as_array()?.iter().find(|row| row["source"] == address)
}

/// The received rows of a sipp message table whose label is a request method (not a
/// status code), in order: what reached that phone.
fn requests_received(finished: &Finished) -> Vec<(String, u64)> {
    message_rows(&finished.stdout)
        .into_iter()
        .filter(|row| row.received && !row.label.starts_with(|c: char| c.is_ascii_digit()))
        .map(|row| (row.label, row.count))
        .collect()
}

/// Sends each of `requests` from [`CLIENT_V4`] (no phone) to the proxy and returns what
/// answered them within [`DROPPED`]: how many were sent, and the answers.
fn send_foreign_requests(rig: &LabFixture, proxy_host: &str) -> (usize, Vec<String>) {
    rig.lab
        .in_namespace(Host::Client, || {
            let socket = UdpSocket::bind((CLIENT_V4, 0)).expect("a UDP socket");
            let local = socket.local_addr().expect("its address");
            let proxy: SocketAddr = format!("{SERVER_V4}:{SIP_PORT}")
                .parse()
                .expect("an address");
            let requests = foreign_requests(local, proxy_host);
            for (_, request) in &requests {
                socket.send_to(request.as_bytes(), proxy).expect("sent");
            }
            let mut answers = Vec::new();
            let start = Instant::now();
            let mut buf = [0u8; 4096];
            while let Some(left) = DROPPED.checked_sub(start.elapsed()) {
                if left.is_zero() {
                    break;
                }
                socket.set_read_timeout(Some(left)).expect("a timeout");
                match socket.recv(&mut buf) {
                    Ok(n) => answers.push(format!("{:?}", response_status(&buf[..n]))),
                    Err(_) => break,
                }
            }
            (requests.len(), answers)
        })
        .expect("the client namespace")
}

fn calls_through_the_proxy_complete_and_ban_no_phone(name: ProxyName) {
    let test = format!("calls through a proxy record-routing by {}", name.tag());
    if !privileged(&test) {
        return;
    }
    let started = Instant::now();
    let mut rig = start_lab(&format!("e2e-rr-{}", name.tag()), name);
    let mut daemon = rig.start_filter_with(&filter_config(name));

    for (phone, address) in [(CALLER, CALLER_V4), (CALLEE, CALLEE_V4)] {
        let step = format!("REGISTER {} from {address}", phone.extension);
        let registered = rig
            .transcript
            .keep(&step, register(&rig.lab, rig.dir.path(), phone, address));
        assert!(registered.success(), "{step} should succeed:\n{registered}");
    }
    let (caller, callee) = calls(&rig.lab, rig.dir.path(), CALLS as u32, CALL_RATE)
        .unwrap_or_else(|e| panic!("{e:#}"));
    let caller = rig.transcript.keep("caller: calls", caller);
    let callee = rig.transcript.keep("callee: answers and hangs up", callee);
    rig.transcript.note(format!(
        "calls done ({:.2} s since the start)",
        started.elapsed().as_secs_f64()
    ));

    // What the filter did to the phones, and what reached the proxy.
    let stats = rig
        .transcript
        .stats("stats after the calls", &rig.lab, &rig.pins);
    let top = json_of(
        &rig.transcript
            .keep("top --json", cli(&rig, &["top", "--json"])),
    );
    let block_list = json_of(
        &rig.transcript
            .keep("block list --json", cli(&rig, &["block", "list", "--json"])),
    );
    let routed = routed_in_dialog(&rig.kamailio.log());
    rig.transcript
        .note(format!("in-dialog requests the proxy routed: {routed:?}"));
    let unknown_domain = counter(&stats, "reasons", "drop_unknown_domain");
    let phones = [("caller", CALLER_V4), ("callee", CALLEE_V4)];
    let what_the_filter_did = format!(
        "the filter: drop_unknown_domain {unknown_domain}, drop_banned {}; {}; \
         in-dialog requests the proxy routed: {routed:?}",
        counter(&stats, "reasons", "drop_banned"),
        phones
            .iter()
            .map(|(who, address)| format!(
                "{who} {address}: drops {}, bans [{}]",
                drops_of(&top, address).map_or("none".to_string(), |row| row.to_string()),
                blocked(&block_list, address)
                    .iter()
                    .map(|entry| entry.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
            .collect::<Vec<_>>()
            .join("; ")
    );

    // Every call completed on both phones.
    for (who, finished) in [("caller", &caller), ("callee", &callee)] {
        let (completed, made) = sipp_outcome(finished);
        assert!(
            finished.success() && completed == CALLS && made == CALLS,
            "the {who} should complete {CALLS} of {CALLS} calls through the record-routing \
             proxy (by {}), completed {completed} of {made} ({}); {what_the_filter_did}",
            name.tag(),
            finished
                .status
                .map_or("killed at its deadline".to_string(), |s| s.to_string()),
        );
    }
    // Every in-dialog request reached the other phone: the callee got each call's ACK,
    // re-INVITE, its ACK, the UPDATE and the INFO; the caller got each BYE.
    let each = |methods: &[&str]| -> Vec<(String, u64)> {
        methods.iter().map(|m| (m.to_string(), CALLS)).collect()
    };
    assert_eq!(
        requests_received(&callee),
        each(&["INVITE", "ACK", "INVITE", "ACK", "UPDATE", "INFO"]),
        "requests that reached the callee; {what_the_filter_did}"
    );
    assert_eq!(
        requests_received(&caller),
        each(&["BYE"]),
        "requests that reached the caller; {what_the_filter_did}"
    );
    let routed_from = |address: &str| routed.get(address).cloned().unwrap_or_default();
    let expected_from_caller = [
        ("ACK", 2 * CALLS),
        ("INFO", CALLS),
        ("INVITE", CALLS),
        ("UPDATE", CALLS),
    ]
    .into_iter()
    .map(|(m, n)| (m.to_string(), n))
    .collect();
    assert_eq!(
        routed_from(CALLER_V4),
        expected_from_caller,
        "in-dialog requests from the caller the proxy loose-routed"
    );
    assert_eq!(
        routed_from(CALLEE_V4),
        [("BYE".to_string(), CALLS)].into_iter().collect(),
        "in-dialog requests from the callee the proxy loose-routed"
    );
    // None counted as an unknown domain, neither phone dropped or banned.
    assert_eq!(unknown_domain, 0, "{what_the_filter_did}");
    for (who, address) in phones {
        assert!(
            drops_of(&top, address).is_none(),
            "the {who} ({address}) should have no drops: {what_the_filter_did}"
        );
        assert!(
            blocked(&block_list, address).is_empty(),
            "the {who} ({address}) should not be banned: {block_list}"
        );
    }

    // The other way round: a Request-URI and a topmost Route that both name a foreign
    // host are still an unknown domain, in a dialog or not, whatever Route follows.
    let (sent, answers) = send_foreign_requests(&rig, name.host());
    let after = rig
        .transcript
        .stats("stats after the foreign requests", &rig.lab, &rig.pins);
    assert!(
        answers.is_empty(),
        "requests routed to a foreign host should get no answer, got {answers:?}"
    );
    assert_eq!(
        counter(&after, "reasons", "drop_unknown_domain"),
        unknown_domain + sent as u64,
        "each request naming a foreign host as Request-URI and topmost Route should be \
         dropped as drop_unknown_domain: {after}"
    );
    let reached = rig
        .kamailio
        .log()
        .lines()
        .filter(|line| {
            line.contains("sip-request") && line.ends_with(&format!(" from {CLIENT_V4}"))
        })
        .count();
    assert_eq!(reached, 0, "no foreign request should reach the proxy");

    rig.stop_filter(&mut daemon);
    rig.tear_down([daemon]);
    println!("{test}: {:.2} s", started.elapsed().as_secs_f64());
}

#[test]
fn calls_through_a_proxy_record_routing_by_its_address_pass_and_ban_no_phone() {
    calls_through_the_proxy_complete_and_ban_no_phone(ProxyName::Address);
}

#[test]
fn calls_through_a_proxy_record_routing_by_the_served_domain_pass_and_ban_no_phone() {
    calls_through_the_proxy_complete_and_ban_no_phone(ProxyName::Domain);
}
