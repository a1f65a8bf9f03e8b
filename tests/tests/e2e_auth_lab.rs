//! Learning from the server's answers (issue 13) against a real registrar, in both
//! deployments (`sip_filter_tests::auth_lab`), with the filter's built-in rules: 50
//! phones register with digest authentication from one address and a phone calls
//! another through the registrar (407, then routed), untouched; a brute force with an
//! ordinary User-Agent, paced under the rate limits, gets the account locked after 5
//! failures at Kamailio and its source banned (`auth`); guessers from other addresses
//! lose only that account; an enumeration is banned. On one server a wrong password is
//! re-challenged (401), on the other refused (403), with 404 for unknown users and
//! `stale=true` for expired nonces, which never count.
//!
//! Needs root and the test tools (`cargo xtask setup --test-tools`).

use std::time::{Duration, Instant};

use serde_json::Value;
use sip_filter::settings::AuthRules;
use sip_filter_tests::{
    auth_lab::{
        accounts, brute_force, call, count_events, enumerate, register, register_run,
        wrong_passwords, AuthLab, Client, Credentials, Deployment, Guesses, Pace, Registrar,
        SippOutcome, UnknownUser, WrongPassword,
    },
    lab::{json_output, require_tools, sip_filter, KAMAILIO_TOOLS},
    privileged,
};

/// The filter's configuration beyond the lab's (see [`AuthLab::filter_config`]): its
/// built-in limits but a REGISTER rate that lets the lab's guessers through at 20
/// guesses (40 REGISTERs) a second: these tests check the lab, quickly, not the filter.
const FASTER_REGISTERS: &str = "[rate_limit.register]\nrate = 50\nburst = 200\n";

/// Starts `registrar` in `deployment` and the filter in front of it; runs `checks`;
/// stops the filter and checks that nothing of the lab is left.
fn with_lab(
    test: &str,
    deployment: Deployment,
    registrar: &Registrar,
    extra_config: &str,
    checks: impl FnOnce(&AuthLab),
) {
    if !privileged(test) {
        return;
    }
    require_tools(&[KAMAILIO_TOOLS, &["sipp"]].concat()).unwrap_or_else(|e| panic!("{e:#}"));
    let started = Instant::now();
    let lab = AuthLab::start(deployment, registrar, test).unwrap_or_else(|e| panic!("{e:#}"));
    let (daemon, attached) = lab
        .start_filter(
            sip_filter(),
            &lab.filter_config(&format!("{FASTER_REGISTERS}{extra_config}")),
        )
        .unwrap_or_else(|e| panic!("{e:#}"));
    println!("{attached} ({:.1} s)", started.elapsed().as_secs_f64());
    checks(&lab);
    let stats = lab
        .filter_stats(sip_filter())
        .unwrap_or_else(|e| panic!("{e:#}"));
    println!("filter stats: {stats}");
    lab.tear_down(daemon).unwrap_or_else(|e| panic!("{e:#}"));
    println!("{test}: {:.1} s", started.elapsed().as_secs_f64());
}

/// The registrar's accounts: the office's 50 (1000..1049), the callee's (1050), and
/// spares.
const ACCOUNTS: u32 = 60;

/// 50 accounts register from the office's one address, each challenged once and
/// accepted once; 1000 calls 1050, registered from the callee's address.
fn office_registers_and_calls(lab: &AuthLab) {
    let office = accounts(1000, 50);
    let callee = &accounts(1050, 1)[0];
    let registered = register(lab, Client::Office, "office", &office, None);
    assert_eq!(
        (registered.successful, registered.failed),
        (50, 0),
        "every phone should register:\n{}",
        registered.finished
    );
    let (_, office_v4) = lab.client(Client::Office);
    let events = lab.auth_events();
    assert_eq!(
        count_events(&events, "success", &office_v4),
        50,
        "{events:?}"
    );
    assert_eq!(
        count_events(&events, "challenge", &office_v4),
        50,
        "{events:?}"
    );
    assert_eq!(
        count_events(&events, "failure", &office_v4),
        0,
        "{events:?}"
    );

    let call = call(lab, "call", &office[0], callee).unwrap_or_else(|e| panic!("{e:#}"));
    assert!(call.completed(), "the call should complete:\n{call}");
    // Challenged (407) once, then routed: the callee got the INVITE.
    assert_eq!(call.caller.row(1), 1, "one 407:\n{call}");
    assert_eq!(call.callee.row(0), 1, "one INVITE at the callee:\n{call}");
    println!("50 phones registered; 1000 called 1050");
}

/// Failed passwords that lock an account for a source (`answers.lockout_failures`'s
/// default), and the failures a source may see answered past it: guesses already on
/// their way when the lockout was learnt.
const LOCKOUT_FAILURES: usize = 5;
const IN_FLIGHT: usize = 2;

/// Guesses in a brute force: three times the failures that ban a source
/// (`answers.ban_failures`' default, 10), so that the ban, not the end of the list,
/// stops it. The run lasts as long at any rate: the guesses after the ban are dropped.
const BRUTE_FORCE_GUESSES: usize = 30;

/// Users in an enumeration: five times the distinct users that ban a source
/// (`answers.enumeration_users`' default, 10).
const ENUMERATED_USERS: u32 = 50;

/// The attacker guesses `user`'s password [`BRUTE_FORCE_GUESSES`] times, wrong, at 10 a
/// second (a guess is two REGISTERs: under the built-in REGISTER limit, so only the
/// answers can stop it).
/// The account is locked after [`LOCKOUT_FAILURES`] failures reached the server; the
/// attempts the lockout drops count on, and ban the source.
fn guess_until_banned(lab: &AuthLab, user: &str) -> Guesses {
    let guesses = brute_force(
        lab,
        Client::Attacker,
        user,
        &wrong_passwords(BRUTE_FORCE_GUESSES),
        Pace::per_second(10),
    );
    println!("brute force: {guesses}");
    assert!(
        (LOCKOUT_FAILURES..=LOCKOUT_FAILURES + IN_FLIGHT).contains(&guesses.failures_seen),
        "guesses reaching Kamailio should stop at the lockout: {guesses}"
    );
    assert_eq!(guesses.accepted, 0, "{guesses}");
    assert_bans(lab, "auth", 1);
    guesses
}

/// At least `count` bans for `reason` so far (the filter's `stats`).
fn assert_bans(lab: &AuthLab, reason: &str, count: u64) {
    let (made, stats) = bans_made(lab, reason);
    assert!(made >= count, "{count} {reason} ban(s) expected: {stats}");
}

/// No ban for authentication or enumeration so far.
fn assert_no_auth_bans(lab: &AuthLab) {
    for reason in ["auth", "enumeration"] {
        let (made, stats) = bans_made(lab, reason);
        assert_eq!(made, 0, "no {reason} ban expected: {stats}");
    }
}

/// The bans made for `reason` so far, and the stats that say so.
fn bans_made(lab: &AuthLab, reason: &str) -> (u64, Value) {
    let stats = lab
        .filter_stats(sip_filter())
        .unwrap_or_else(|e| panic!("{e:#}"));
    (stats["bans_added"][reason].as_u64().unwrap_or(0), stats)
}

/// `sip-filter auth locked --json`: (account, source) of each lockout, the source
/// None for a lockout of every unregistered source.
fn locked_accounts(lab: &AuthLab) -> Vec<(String, Option<String>)> {
    let listed = json_output(&lab.filter_verb(sip_filter(), &["auth", "locked", "--json"]));
    listed
        .as_array()
        .unwrap_or_else(|| panic!("not an array: {listed}"))
        .iter()
        .map(|row| {
            (
                row["account"].as_str().unwrap_or_default().to_string(),
                row["source"].as_str().map(str::to_string),
            )
        })
        .collect()
}

/// Guesser number `n` (an extra address of the attacker's host) enumerates
/// [`ENUMERATED_USERS`] users from `first` at 10 a second, until banned.
fn enumerate_users(lab: &AuthLab, n: u8, first: u32) -> Guesses {
    let users: Vec<String> = (first..first + ENUMERATED_USERS)
        .map(|u| u.to_string())
        .collect();
    let enumeration = enumerate(lab, Client::Source(n), &users, Pace::per_second(10));
    println!("enumeration: {enumeration}");
    assert!(
        enumeration.answered < u64::from(ENUMERATED_USERS),
        "the enumeration should be cut short: {enumeration}"
    );
    enumeration
}

#[test]
fn on_the_filtered_host_guessers_are_locked_out_then_banned_and_the_office_goes_on() {
    let registrar = Registrar::new(accounts(1000, ACCOUNTS));
    with_lab(
        "e2e-auth-lab-host",
        Deployment::FilteredHost,
        &registrar,
        "",
        |lab| {
            office_registers_and_calls(lab);

            // Issue 13 (a): a brute force of 1000's password: 401 re-challenges.
            let guesses = guess_until_banned(lab, "1000");
            assert_eq!(guesses.forbidden, 0, "{guesses}");

            // Guessers from three more addresses, five guesses each of 1001, at once:
            // each reaches Kamailio five times, the lockout's threshold, and is then
            // locked out of 1001 only (15 failures: under the account's 20).
            let sources = lab.add_sources(4).unwrap_or_else(|e| panic!("{e:#}"));
            std::thread::scope(|scope| {
                let runs: Vec<_> = (1..4)
                    .map(|n| {
                        scope.spawn(move || {
                            let five = wrong_passwords(5);
                            brute_force(lab, Client::Source(n), "1001", &five, Pace::per_second(5))
                        })
                    })
                    .collect();
                for (run, source) in runs.into_iter().zip(&sources[1..]) {
                    let guesses = run.join().expect("a guesser's thread");
                    assert_eq!(guesses.rechallenged, 5, "from {source}: {guesses}");
                    assert_eq!(guesses.failures_seen, 5, "from {source}: {guesses}");
                }
            });
            // The office's 1001 is registered from elsewhere: it goes on.
            let again = register(
                lab,
                Client::Office,
                "office-again",
                &accounts(1000, 5),
                None,
            );
            assert_eq!(again.successful, 5, "{}", again.finished);

            // Issue 13 (d), on a server that hides which users exist (every one is
            // challenged, then re-challenged): the distinct accounts failed ban the
            // source well before the last.
            let enumeration = enumerate_users(lab, 0, 1000);
            assert!(enumeration.failures_seen <= 10 + IN_FLIGHT, "{enumeration}");
        },
    );
}

#[test]
fn behind_the_gateway_403_failures_and_404_enumerations_are_banned_stale_nonces_not() {
    let nonce_lifetime = Duration::from_secs(2);
    let registrar = Registrar::new(accounts(1000, ACCOUNTS))
        .wrong_password(WrongPassword::Forbidden)
        .unknown_user(UnknownUser::NotFound)
        .nonce_expire(nonce_lifetime);
    with_lab(
        "e2e-auth-lab-gateway",
        Deployment::BehindGateway,
        &registrar,
        "",
        |lab| {
            office_registers_and_calls(lab);

            // Phones re-registering with their old nonce after it expired: 401 with
            // stale=true, then accepted with the new one.
            let phones = accounts(1000, 5);
            let mut reregister = register_run("reregister", &phones, Some(nonce_lifetime * 2));
            reregister.extra.push("-trace_msg".into());
            let again = lab.sipp(Client::Office, &reregister);
            assert_eq!(
                (again.successful, again.failed),
                (5, 0),
                "{}",
                again.finished
            );
            let (_, office_v4) = lab.client(Client::Office);
            let events = lab.auth_events();
            assert_eq!(count_events(&events, "stale", &office_v4), 5, "{events:?}");
            // On the wire: the re-challenges say so (sipp's message trace).
            assert_eq!(
                again.finished.stdout.matches("stale=true").count(),
                5,
                "{}",
                again.finished
            );

            // Issue 13 (e): wrong passwords refused with 403 (FreeSWITCH's way) are
            // failures as well; the stale nonces above were not.
            let guesses = guess_until_banned(lab, "1001");
            assert_eq!(guesses.rechallenged + guesses.accepted, 0, "{guesses}");

            // Issue 13 (d): unknown users refused with 404: banned at the tenth
            // distinct user (`answers.enumeration_users`).
            lab.add_sources(1).unwrap_or_else(|e| panic!("{e:#}"));
            let enumeration = enumerate_users(lab, 0, 1100);
            assert!(
                (10..=10 + IN_FLIGHT as u64).contains(&enumeration.users_refused),
                "{enumeration}"
            );
            assert_bans(lab, "enumeration", 1);
        },
    );
}

/// Issue 13 (b): sources guessing one account, and guesses from each.
const GUESSING_SOURCES: u8 = 20;
const GUESSES_PER_SOURCE: usize = 5;

/// One phone registering from `client`, once.
fn register_one(lab: &AuthLab, client: Client, name: &str, phone: &Credentials) -> SippOutcome {
    register(lab, client, name, std::slice::from_ref(phone), None)
}

/// Issue 13 (b): account 1001's phone registers from the office; 20 other sources
/// guess its password 5 times each, all at once, a guess a second each (each stays
/// under the per-source lockout and ban). Without the per-account rule all 100 would
/// reach Kamailio; they stop at the account's threshold, give or take one guess in
/// flight per source. The account is then locked for every unregistered source (a
/// 21st source with the right password gets nowhere), no source is banned, and the
/// phone keeps registering and calls through Kamailio.
fn twenty_sources_guess_one_account(lab: &AuthLab) {
    let phone = &accounts(1001, 1)[0];
    let callee = &accounts(1050, 1)[0];
    let registered = register_one(lab, Client::Office, "phone", phone);
    assert_eq!(registered.successful, 1, "{}", registered.finished);

    let sources = lab
        .add_sources(GUESSING_SOURCES + 1)
        .unwrap_or_else(|e| panic!("{e:#}"));
    let user = phone.user.as_str();
    let failures: usize = std::thread::scope(|scope| {
        let runs: Vec<_> = (0..GUESSING_SOURCES)
            .map(|n| {
                scope.spawn(move || {
                    let five = wrong_passwords(GUESSES_PER_SOURCE);
                    brute_force(lab, Client::Source(n), user, &five, Pace::per_second(1))
                })
            })
            .collect();
        runs.into_iter()
            .zip(&sources)
            .map(|(run, source)| {
                let guesses = run.join().expect("a guesser's thread");
                println!("from {source}: {guesses}");
                assert_eq!(guesses.accepted, 0, "from {source}: {guesses}");
                guesses.failures_seen
            })
            .sum()
    });
    let without_the_rule = usize::from(GUESSING_SOURCES) * GUESSES_PER_SOURCE;
    // Failures of one account from all sources that lock it for every unregistered one.
    let threshold = AuthRules::default().account_failures as usize;
    println!("{failures} of {without_the_rule} guesses reached Kamailio");
    assert!(
        (threshold..=threshold + usize::from(GUESSING_SOURCES)).contains(&failures),
        "failures of {user} at Kamailio should stop at {threshold} (plus one in flight \
         per source), not {failures}"
    );
    assert_eq!(
        locked_accounts(lab),
        [(user.to_string(), None)],
        "{user} locked for every unregistered source, and nothing else"
    );
    assert_no_auth_bans(lab);

    // Another unregistered source, with the right password: dropped, never judged.
    let outsider = Client::Source(GUESSING_SOURCES);
    let refused = register_one(lab, outsider, "right-password-elsewhere", phone);
    assert_eq!(refused.successful, 0, "{}", refused.finished);
    let events = lab.auth_events();
    let last_source = &sources[usize::from(GUESSING_SOURCES)];
    assert_eq!(
        count_events(&events, "success", last_source),
        0,
        "{events:?}"
    );

    // The phone, registered from the office: registers again, and calls.
    let again = register_one(lab, Client::Office, "phone-again", phone);
    assert_eq!(again.successful, 1, "{}", again.finished);
    let call = call(lab, "locked-account-calls", phone, callee).unwrap_or_else(|e| panic!("{e:#}"));
    assert!(
        call.completed(),
        "the locked account's phone should call:\n{call}"
    );
    assert_no_auth_bans(lab);
}

#[test]
fn on_the_filtered_host_twenty_sources_lock_an_account_whose_phone_still_calls() {
    with_lab(
        "e2e-auth-lab-distributed-host",
        Deployment::FilteredHost,
        &Registrar::new(accounts(1000, ACCOUNTS)),
        "",
        twenty_sources_guess_one_account,
    );
}

#[test]
fn behind_the_gateway_twenty_sources_lock_an_account_whose_phone_still_calls() {
    with_lab(
        "e2e-auth-lab-distributed-gateway",
        Deployment::BehindGateway,
        &Registrar::new(accounts(1000, ACCOUNTS)),
        "",
        twenty_sources_guess_one_account,
    );
}

/// Issue 13 (c) runs 4 times faster than told (two minutes of a failure every 2 s):
/// 30 s of a failure every 0.5 s, with every window and lockout of `[answers]` a
/// quarter of its default, so the same counts fall in the same windows.
const OFFICE_TIME_SCALE: u32 = 4;
const OFFICE_FAILING_FOR: Duration = Duration::from_secs(120 / OFFICE_TIME_SCALE as u64);
const OFFICE_FAILURE_EVERY: Duration = Duration::from_millis(2000 / OFFICE_TIME_SCALE as u64);

/// `[answers]` with the built-in windows and lockouts (seconds) divided by
/// [`OFFICE_TIME_SCALE`].
fn answers_scaled_in_time() -> String {
    let built_in = AuthRules::default();
    let keys = [
        ("lockout_window_seconds", built_in.lockout_window_seconds),
        ("lockout_seconds", built_in.lockout_seconds),
        ("ban_window_seconds", built_in.ban_window_seconds),
        ("ban_seconds", built_in.ban_seconds),
        (
            "enumeration_window_seconds",
            built_in.enumeration_window_seconds,
        ),
        ("enumeration_seconds", built_in.enumeration_seconds),
        ("account_window_seconds", built_in.account_window_seconds),
        ("account_lockout_seconds", built_in.account_lockout_seconds),
        (
            "registration_cap_seconds",
            built_in.registration_cap_seconds,
        ),
    ];
    let lines: String = keys
        .iter()
        .map(|(key, seconds)| format!("{key} = {}\n", seconds / OFFICE_TIME_SCALE))
        .collect();
    format!("\n[answers]\n{lines}")
}

/// Issue 13 (c): 50 phones register from the office's one address; one of them
/// (1049: its password changed on the server) then fails every 0.5 s for 30 s, while
/// the other 49 re-register within 2 s, a few seconds after that account was locked.
/// The office is never banned, and only 1049 is locked, for the office only.
fn office_behind_one_address(lab: &AuthLab) {
    let office = accounts(1000, 50);
    let registered = register(lab, Client::Office, "office", &office, None);
    assert_eq!(
        (registered.successful, registered.failed),
        (50, 0),
        "{}",
        registered.finished
    );
    let (failing, others) = office.split_last().expect("50 accounts");
    let (_, office_v4) = lab.client(Client::Office);
    let attempts = (OFFICE_FAILING_FOR.as_millis() / OFFICE_FAILURE_EVERY.as_millis()) as usize;
    let old_password = vec![format!("{}-old", failing.password); attempts];
    let failing_phone = std::thread::scope(|scope| {
        let failing_phone = scope.spawn(|| {
            let every = Pace {
                calls: 1,
                period: OFFICE_FAILURE_EVERY,
            };
            brute_force(lab, Client::Office, &failing.user, &old_password, every)
        });
        // Past the lockout (5 failures), then the office's phones all at once.
        std::thread::sleep(OFFICE_FAILURE_EVERY * 12);
        let mut reregister = register_run("office-reregisters", others, None);
        reregister.pace = Pace {
            calls: others.len() as u32,
            period: Duration::from_secs(2),
        };
        let again = lab.sipp(Client::Office, &reregister);
        assert_eq!(
            (again.successful, again.failed),
            (others.len() as u64, 0),
            "every other phone re-registers:\n{}",
            again.finished
        );
        failing_phone.join().expect("the failing phone's thread")
    });
    println!("the failing phone: {failing_phone}");
    assert!(
        (LOCKOUT_FAILURES..=LOCKOUT_FAILURES + IN_FLIGHT).contains(&failing_phone.failures_seen),
        "the failing account should be locked after {LOCKOUT_FAILURES}: {failing_phone}"
    );
    assert_eq!(failing_phone.accepted, 0, "{failing_phone}");
    assert_no_auth_bans(lab);
    assert_eq!(
        locked_accounts(lab),
        [(failing.user.clone(), Some(office_v4.clone()))],
        "only the failing account, for the office only"
    );
    let explained = json_output(&lab.filter_verb(sip_filter(), &["explain", &office_v4, "--json"]));
    assert_eq!(explained["ban"], Value::Null, "{explained}");
    assert_ne!(explained["registered"], Value::Null, "{explained}");
}

#[test]
fn on_the_filtered_host_an_office_behind_one_address_loses_only_its_failing_account() {
    with_lab(
        "e2e-auth-lab-office-host",
        Deployment::FilteredHost,
        &Registrar::new(accounts(1000, ACCOUNTS)),
        &answers_scaled_in_time(),
        office_behind_one_address,
    );
}

#[test]
fn behind_the_gateway_an_office_behind_one_address_loses_only_its_failing_account() {
    with_lab(
        "e2e-auth-lab-office-gateway",
        Deployment::BehindGateway,
        &Registrar::new(accounts(1000, ACCOUNTS)),
        &answers_scaled_in_time(),
        office_behind_one_address,
    );
}
