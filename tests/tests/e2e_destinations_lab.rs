//! Destination rules and per-account call budgets (issue 18) against a real registrar
//! (`sip_filter_tests::auth_lab`, Kamailio on the filtered host), with sipp phones
//! calling through it with digest authentication: a national call completes; a
//! premium-rate prefix is denied; a burst of international calls from one account is
//! cut at the account's budget while another account keeps calling; the same burst
//! spread over 10 sources is still cut, per account; a restart keeps the blocks (the
//! state file).
//!
//! Needs root and the test tools (`cargo xtask setup --test-tools`).

use std::time::Instant;

use serde_json::Value;
use sip_filter_tests::{
    auth_lab::{
        accounts, call, call_scenario, credentials_line, AuthLab, Client, Credentials, Deployment,
        Pace, Registrar, SippRun,
    },
    lab::{json_output, require_tools, sip_filter, KAMAILIO_TOOLS},
    privileged,
};

/// International calls an account may start a minute: the 6th breaches its budget.
const LIMITED_PER_MINUTE: usize = 5;

fn config() -> String {
    format!(
        "[rate_limit.invite]\nrate = 50\nburst = 200\n\n\
         [destinations]\n\
         account_limited_calls_per_minute = {LIMITED_PER_MINUTE}\n\
         account_block_seconds = 120\n\n\
         [[destinations.rules]]\nprefix = \"+4490\"\naction = \"deny\"\n"
    )
}

/// `sip-filter top --destinations --json` on the lab's filter.
fn destinations(lab: &AuthLab) -> Value {
    json_output(&lab.filter_verb(sip_filter(), &["top", "--destinations", "--json"]))
}

/// The accounts blocked for their budget, with the INVITEs dropped for it.
fn blocked(report: &Value) -> Vec<(String, u64)> {
    report["blocked_accounts"]
        .as_array()
        .unwrap_or_else(|| panic!("no blocked_accounts: {report}"))
        .iter()
        .map(|row| {
            (
                row["account"].as_str().unwrap_or_default().to_string(),
                row["drops"].as_u64().unwrap_or(0),
            )
        })
        .collect()
}

/// The INVITEs dropped for `account`'s block, if it is blocked.
fn drops_of(blocked: &[(String, u64)], account: &str) -> Option<u64> {
    blocked
        .iter()
        .find(|(name, _)| name == account)
        .map(|(_, drops)| *drops)
}

/// Calls from `caller` at `client` to each of `numbers`, five a second, each bounded
/// by sipp's timeouts (the calls past the budget are never answered).
fn calls(lab: &AuthLab, client: Client, name: &str, caller: &Credentials, numbers: &[String]) {
    let injection = numbers
        .iter()
        .map(|number| format!("{};{number}", credentials_line(caller)))
        .collect();
    let mut run = SippRun::new(name, call_scenario(), injection, Pace::per_second(5));
    run.recv_timeout = std::time::Duration::from_secs(3);
    let _ = lab.sipp(client, &run);
}

#[test]
fn destination_rules_and_call_budgets_in_the_lab() {
    let test = "destination_rules_and_call_budgets_in_the_lab";
    if !privileged(test) {
        return;
    }
    require_tools(&[KAMAILIO_TOOLS, &["sipp"]].concat()).unwrap_or_else(|e| panic!("{e:#}"));
    let started = Instant::now();
    let phones = accounts(1000, 10);
    let callee = &phones[9];
    let registrar = Registrar::new(phones.clone());
    let lab = AuthLab::start(Deployment::FilteredHost, &registrar, "destinations")
        .unwrap_or_else(|e| panic!("{e:#}"));
    let (mut daemon, attached) = lab
        .start_filter(sip_filter(), &lab.filter_config(&config()))
        .unwrap_or_else(|e| panic!("{e:#}"));
    println!("{attached} ({:.1} s)", started.elapsed().as_secs_f64());

    // A national call (the callee's extension) completes.
    let national = call(&lab, "national", &phones[0], callee).unwrap_or_else(|e| panic!("{e:#}"));
    assert!(
        national.completed(),
        "the national call should complete:\n{national}"
    );

    // A premium-rate number: its INVITE is dropped before the registrar sees it.
    calls(
        &lab,
        Client::Office,
        "premium",
        &phones[1],
        &["+4490123456".to_string()],
    );
    let report = destinations(&lab);
    let premium = report["rules"]
        .as_array()
        .and_then(|rules| rules.iter().find(|rule| rule["prefix"] == "+4490"))
        .unwrap_or_else(|| panic!("no +4490 row: {report}"));
    assert!(
        premium["dropped"].as_u64().unwrap_or(0) >= 1,
        "the premium-rate INVITE should be denied: {report}"
    );

    // A burst of 10 international calls from account 1002, one source: cut at its
    // budget, and the account blocked.
    let numbers: Vec<String> = (0..10).map(|i| format!("+3312345670{i}")).collect();
    calls(&lab, Client::Office, "burst", &phones[2], &numbers);
    let report = destinations(&lab);
    let blocked_now = blocked(&report);
    let burst = blocked_now
        .iter()
        .find(|(account, _)| account == &phones[2].user)
        .unwrap_or_else(|| panic!("1002 should be blocked: {report}"));
    assert!(burst.1 >= 1, "{report}");
    // Another account keeps calling, from the same office.
    let other = call(&lab, "other", &phones[3], callee).unwrap_or_else(|e| panic!("{e:#}"));
    assert!(other.completed(), "1003's call should complete:\n{other}");

    // The same burst spread over 10 sources, one call each: still cut, per account.
    lab.add_sources(10).unwrap_or_else(|e| panic!("{e:#}"));
    for (i, number) in numbers.iter().enumerate() {
        calls(
            &lab,
            Client::Source(i as u8),
            &format!("spread-{i}"),
            &phones[4],
            std::slice::from_ref(number),
        );
    }
    let report = destinations(&lab);
    let spread = blocked(&report);
    assert!(
        spread.iter().any(|(account, _)| account == &phones[4].user),
        "1004 should be blocked though its calls came from 10 sources: {report}"
    );
    assert!(
        !spread.iter().any(|(account, _)| account == &phones[3].user),
        "1003 made one call: {report}"
    );
    println!("destinations: {report}");

    // A restart (SIGINT, then the same state directory) keeps 1004's block: it is still
    // listed, and its next INVITE is still dropped.
    let drops_before = drops_of(&spread, &phones[4].user).unwrap_or_default();
    lab.stop_filter(&mut daemon)
        .unwrap_or_else(|e| panic!("{e:#}"));
    drop(daemon);
    let (mut daemon, _) = lab
        .start_filter(sip_filter(), &lab.filter_config(&config()))
        .unwrap_or_else(|e| panic!("{e:#}"));
    let report = destinations(&lab);
    assert_eq!(
        drops_of(&blocked(&report), &phones[4].user),
        Some(drops_before),
        "1004 should still be blocked after the restart, its drops kept: {report}"
    );
    calls(
        &lab,
        Client::Office,
        "after-restart",
        &phones[4],
        &numbers[..1],
    );
    let report = destinations(&lab);
    assert!(
        drops_of(&blocked(&report), &phones[4].user).is_some_and(|drops| drops > drops_before),
        "1004's INVITE after the restart should be dropped: {report}"
    );

    lab.stop_filter(&mut daemon)
        .unwrap_or_else(|e| panic!("{e:#}"));
    drop(daemon);
    println!("{test}: {:.1} s", started.elapsed().as_secs_f64());
}
