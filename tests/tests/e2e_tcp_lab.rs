//! SIP over TCP end to end (issue 14, "Every SIP transport"): the authentication lab's
//! registrar (`sip_filter_tests::auth_lab`, Kamailio with digest authentication on the
//! filtered host) listening on TCP 5060, every client sipp over TCP (`-t t1`), the
//! filter with its built-in rules in front:
//!
//! - a phone registers (401, then 200) and calls another through the registrar (407,
//!   routed to the callee over TCP, answered, hung up): nothing of theirs is dropped;
//! - a scanner's OPTIONS over TCP (User-Agent `friendly-scanner`, a known scanner's)
//!   from another address never reaches Kamailio, counted `drop_scanner` over tcp, and
//!   its source is banned (`scanner`); the phone keeps registering over TCP;
//! - an INVITE for a domain the server does not serve, over TCP from a third address,
//!   never reaches Kamailio, counted `drop_unknown_domain` over tcp.
//!
//! Needs root and the test tools (`cargo xtask setup --test-tools`: kamailio, sipp).

use std::time::{Duration, Instant};

use serde_json::Value;
use sip_filter_tests::{
    attack::requests_seen,
    auth_lab::{
        accounts, call, register, request_scenario, AuthLab, Client, Credentials, Deployment, Pace,
        Registrar, SippOutcome, SippRun, ORDINARY_USER_AGENT,
    },
    lab::{
        json_array, require_tools, sip_filter, transport_counter, transport_sum, DOMAIN,
        KAMAILIO_TOOLS,
    },
    privileged,
};

/// A known scanner's User-Agent (svmap's), on the filter's built-in list.
const SCANNER_USER_AGENT: &str = "friendly-scanner";
/// A domain the registrar does not serve, nor the filter allow.
const OTHER_DOMAIN: &str = "elsewhere.example.test";
/// How long a client waits for an answer that must not come: Kamailio answers in
/// milliseconds once a request reaches it, and the phone's answers came first.
const SILENCE: Duration = Duration::from_secs(3);

#[test]
fn sip_over_tcp_registers_calls_and_drops_scanners_and_unknown_domains() {
    let test = "sip_over_tcp_registers_calls_and_drops_scanners_and_unknown_domains";
    if !privileged(test) {
        return;
    }
    require_tools(&[KAMAILIO_TOOLS, &["sipp"]].concat()).unwrap_or_else(|e| panic!("{e:#}"));
    let started = Instant::now();
    let [phone, callee]: [Credentials; 2] = accounts(1000, 2)
        .try_into()
        .unwrap_or_else(|_| panic!("two accounts"));
    let registrar = Registrar::new(vec![phone.clone(), callee.clone()]).over_tcp();
    let lab = AuthLab::start(Deployment::FilteredHost, &registrar, "e2e-tcp-lab")
        .unwrap_or_else(|e| panic!("{e:#}"));
    // The unknown domain's sender: an address of its own, neither the phones' nor the
    // scanner's (a ban of either would hide its verdict).
    let sources = lab.add_sources(1).unwrap_or_else(|e| panic!("{e:#}"));
    let (daemon, attached) = lab
        .start_filter(sip_filter(), &lab.filter_config(""))
        .unwrap_or_else(|e| panic!("{e:#}"));
    println!("{attached} ({:.1} s)", started.elapsed().as_secs_f64());

    // The phone registers over TCP, then calls the callee (who registers too).
    let registered = register(
        &lab,
        Client::Office,
        "register",
        std::slice::from_ref(&phone),
        None,
    );
    assert_eq!(
        (registered.successful, registered.failed),
        (1, 0),
        "the phone should register over TCP:\n{}",
        registered.finished
    );
    let call = call(&lab, "call", &phone, &callee).unwrap_or_else(|e| panic!("{e:#}"));
    assert!(
        call.completed(),
        "the call should complete over TCP:\n{call}"
    );
    let stats = filter_stats(&lab);
    let legit_requests = transport_counter(&stats, "tcp", "pass_request");
    // Two REGISTERs a phone (challenged, then with credentials), two INVITEs (the
    // same), two ACKs and a BYE: each a message judged over TCP.
    assert!(legit_requests >= 9, "{stats}");
    assert_eq!(
        transport_sum(&stats, "tcp", "drop_"),
        0,
        "nothing of the phones' was to be dropped: {stats}"
    );
    // Kamailio's answers over TCP are learnt from: its challenges, and the 200s to the
    // credentialed REGISTERs (each phone's registration). Before the egress program
    // read a socket buffer's paged data, a TCP answer's payload went unseen.
    let answers = &stats["answers"];
    let (challenges, successes) = (
        answers["challenge"].as_u64().unwrap_or(0),
        answers["success"].as_u64().unwrap_or(0),
    );
    assert!(
        challenges >= 2 && successes >= 2,
        "the answers over TCP should be read: {answers}"
    );
    println!(
        "registered and called over TCP: {legit_requests} requests passed over tcp, \
         answers learnt: {challenges} challenges, {successes} successes ({:.1} s)",
        started.elapsed().as_secs_f64()
    );

    // A scanner's OPTIONS over TCP: dropped, never answered, its source banned.
    let scan = one_request(
        &lab,
        Client::Attacker,
        "scanner",
        &request_scenario(
            "OPTIONS",
            &format!("sip:100@{DOMAIN}"),
            SCANNER_USER_AGENT,
            200,
        ),
    );
    assert_eq!(
        (scan.successful, scan.failed),
        (0, 1),
        "the scanner's OPTIONS should get no answer:\n{}",
        scan.finished
    );
    let (_, scanner) = lab.client(Client::Attacker);
    let stats = filter_stats(&lab);
    let scanner_drops = transport_counter(&stats, "tcp", "drop_scanner");
    assert_eq!(scanner_drops, 1, "{stats}");
    assert_eq!(stats["bans_added"]["scanner"], 1, "{stats}");
    let bans = json_array(&lab.filter_verb(sip_filter(), &["block", "list", "--json"]));
    assert!(
        bans.iter()
            .any(|ban| ban["address"] == scanner.as_str() && ban["reason"] == "scanner"),
        "{scanner} should be banned for scanning: {bans:?}"
    );
    assert_unseen(&lab, &scanner);

    // The phone keeps registering over TCP, from its own address.
    let again = register(&lab, Client::Office, "register-again", &[phone], None);
    assert_eq!(
        (again.successful, again.failed),
        (1, 0),
        "the phone should register again after the scanner's ban:\n{}",
        again.finished
    );

    // An INVITE for another domain over TCP: dropped, never answered (Kamailio would
    // have challenged it with a 407).
    let other = one_request(
        &lab,
        Client::Source(0),
        "other-domain",
        &request_scenario(
            "INVITE",
            &format!("sip:{}@{OTHER_DOMAIN}", callee.user),
            ORDINARY_USER_AGENT,
            407,
        ),
    );
    assert_eq!(
        (other.successful, other.failed),
        (0, 1),
        "the INVITE for {OTHER_DOMAIN} should get no answer:\n{}",
        other.finished
    );
    let stats = filter_stats(&lab);
    // At least once: the client's kernel retransmits the dropped segment, and each
    // copy is judged again.
    let domain_drops = transport_counter(&stats, "tcp", "drop_unknown_domain");
    assert!(domain_drops >= 1, "{stats}");
    assert_eq!(transport_counter(&stats, "udp", "drop_unknown_domain"), 0);
    assert_unseen(&lab, &sources[0]);
    // One request, however many copies the client's kernel sent (5 within 3 s, the
    // domain ban's threshold): it counts once, and its source is not banned.
    assert_eq!(
        stats["bans_added"]["domain"].as_u64(),
        Some(0),
        "one INVITE banned its source: {stats}"
    );
    println!(
        "over tcp: {} requests passed, {scanner_drops} drop_scanner, {domain_drops} \
         drop_unknown_domain, {} drop_banned; bans added: {}; the phone registered {} \
         times",
        transport_counter(&stats, "tcp", "pass_request"),
        transport_counter(&stats, "tcp", "drop_banned"),
        stats["bans_added"],
        registered.successful + again.successful
    );
    lab.tear_down(daemon).unwrap_or_else(|e| panic!("{e:#}"));
    println!("{test}: {:.1} s", started.elapsed().as_secs_f64());
}

/// One call of `scenario` (a [`request_scenario`]) from `client`, giving up after
/// [`SILENCE`] without its answer.
fn one_request(lab: &AuthLab, client: Client, name: &str, scenario: &str) -> SippOutcome {
    let mut run = SippRun::new(
        name,
        scenario.to_string(),
        vec!["100".to_string()],
        Pace::per_second(1),
    );
    run.recv_timeout = SILENCE;
    lab.sipp(client, &run)
}

/// The filter's `stats --json`, printed.
fn filter_stats(lab: &AuthLab) -> Value {
    let stats = lab
        .filter_stats(sip_filter())
        .unwrap_or_else(|e| panic!("{e:#}"));
    println!("filter stats: {}", stats["transports"]);
    stats
}

/// Kamailio logged no request from `source`.
fn assert_unseen(lab: &AuthLab, source: &str) {
    let seen = requests_seen(&lab.kamailio.log());
    assert!(
        !seen.contains_key(source),
        "a request from {source} reached Kamailio: {seen:?}"
    );
}
