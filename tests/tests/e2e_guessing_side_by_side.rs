//! Password guessing side by side (issue 13): the brute force of the authentication
//! lab's test (a), quick (100 passwords at 10 guesses a second), against sip-filter's
//! built-in rules and against fail2ban's asterisk jail as Debian ships it, each on
//! Kamailio's host (`sip_filter_tests::guessbench`; `cargo xtask bench` runs 500 and
//! reports the figures in BENCHMARKS.md). About a minute.
//!
//! Needs root and the test tools (`cargo xtask setup --test-tools`).

use sip_filter_tests::{
    guessbench::{against_fail2ban, against_sip_filter, Options, FAIL2BAN_MAXRETRY},
    lab::{require_tools, sip_filter, KAMAILIO_TOOLS},
    privileged,
};

/// Failures that lock the account for the guesser (`answers.lockout_failures`), and
/// guesses that may be on their way when the lockout is learnt.
const LOCKOUT_FAILURES: usize = 5;
const IN_FLIGHT: usize = 2;

#[test]
fn a_brute_force_stops_at_the_lockout_with_sip_filter_and_later_with_fail2ban() {
    if !privileged("a_brute_force_stops_at_the_lockout_with_sip_filter_and_later_with_fail2ban") {
        return;
    }
    require_tools(&[KAMAILIO_TOOLS, &["sipp", "fail2ban-server", "iptables"]].concat())
        .unwrap_or_else(|e| panic!("{e:#}"));
    let options = Options::new(true);

    let filter = against_sip_filter(sip_filter(), &options, "e2e-guessing-sip-filter")
        .unwrap_or_else(|e| panic!("{e:#}"));
    println!("{filter}");
    assert!(
        (LOCKOUT_FAILURES..=LOCKOUT_FAILURES + IN_FLIGHT).contains(&filter.guesses.failures_seen),
        "{filter}"
    );
    assert_eq!(filter.guesses.accepted, 0, "{filter}");
    assert!(filter.threshold_to_stop.is_some(), "locked: {filter}");
    assert!(filter.threshold_to_ban.is_some(), "banned: {filter}");

    let fail2ban =
        against_fail2ban(&options, "e2e-guessing-fail2ban").unwrap_or_else(|e| panic!("{e:#}"));
    println!("{fail2ban}");
    // How late fail2ban bans depends on how busy the host is (it polls the log once a
    // second): only that it bans, and lets its threshold through, is certain.
    assert!(
        fail2ban.threshold_to_ban.is_some(),
        "fail2ban bans: {fail2ban}"
    );
    assert!(
        fail2ban.guesses.failures_seen >= FAIL2BAN_MAXRETRY,
        "fail2ban lets its threshold through: {fail2ban}"
    );
}
