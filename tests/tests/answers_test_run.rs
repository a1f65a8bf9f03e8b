//! The egress program and its pairing with the ingress program (issue 13), in the
//! kernel with BPF_PROG_TEST_RUN: requests go in through the XDP program, the server's
//! answers go out through the TC program, and the tables check what each answer was
//! taken for and what it led to (lockouts, bans, registrations).

use sip_filter::{
    filter::monotonic_now_ns,
    learnt::{Learnt, LearntMaps, LockScope},
    settings::{AuthRules, BanRules, RateLimits},
    state::{self, Clocks, State, StateMaps},
    Filter, NotSipPolicy, Settings,
};
use sip_filter_common::{
    maps::{AnswerCounters, AnswerKind, MAX_ANSWER_STREAM_MESSAGES, MAX_TRANSACTIONS},
    Method, Reason,
};
use sip_filter_tests::{loaded::configured, packets::*, privileged};
use std::net::IpAddr;

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;
const TC_ACT_OK: u32 = 0;

/// Learning on, with small thresholds; nothing else that bans or limits.
fn settings(auth: AuthRules) -> Settings {
    Settings {
        domains: vec!["pbx.example.test".into()],
        own_addresses: vec![IpAddr::from(SERVER_V4), IpAddr::from(SERVER_V6)],
        allow_example_domains: true,
        not_sip_payload: NotSipPolicy::Drop,
        ban: BanRules::off(),
        rate_limits: RateLimits::none(),
        auth,
        ..Settings::default()
    }
}

/// A request from `client`, through the XDP program: its verdict.
fn request(filter: &Filter, client: [u8; 4], payload: &[u8]) -> u32 {
    filter
        .test_run(&udp4_from(client, SIP_PORT, payload))
        .expect("the XDP program runs")
}

/// An answer to `client`, through the egress program; it must never drop.
fn answer(filter: &Filter, client: [u8; 4], payload: &[u8]) {
    let action = filter
        .test_run_answer(&answer4_to(client, payload))
        .expect("the egress program runs");
    assert_eq!(action, TC_ACT_OK, "the egress program passes every answer");
}

/// The answer counters' change made by `run`.
fn delta(filter: &Filter, run: impl FnOnce()) -> AnswerCounters {
    let before = filter.answer_counters().expect("answer counters read");
    run();
    let after = filter.answer_counters().expect("answer counters read");
    after.since(&before)
}

/// The kinds a change counted, by name, for messages.
fn kinds(change: &AnswerCounters) -> Vec<(&'static str, u64)> {
    AnswerKind::ALL
        .into_iter()
        .filter(|kind| change.of(*kind) != 0)
        .map(|kind| (kind.name(), change.of(kind)))
        .collect()
}

const ALICE: [u8; 4] = [198, 18, 1, 1];

/// More transactions awaiting answers than the table has slots: later requests displace
/// earlier ones (counted), every answer still gets one defined kind (its request's, or
/// unpaired), each surviving transaction pairs exactly once, and nothing is banned.
#[test]
fn a_full_transaction_table_displaces_and_counts() {
    if !privileged("a_full_transaction_table_displaces_and_counts") {
        return;
    }
    // The rules that lock and ban off: this test counts pairing only.
    let filter = configured(&settings(AuthRules {
        lockout_failures: 0,
        ban_failures: 0,
        enumeration_users: 0,
        account_failures: 0,
        ..AuthRules::default()
    }));
    let requests = MAX_TRANSACTIONS as usize + MAX_TRANSACTIONS as usize / 8;
    let call = |i: usize| format!("overflow-{i}");
    let noted = delta(&filter, || {
        for i in 0..requests {
            let payload = register(&format!("u{}", i % 50), &call(i), 1, true);
            assert_eq!(request(&filter, ALICE, &payload), XDP_PASS);
        }
    });
    assert_eq!(noted.requests_noted, requests as u64);
    let displaced = noted.requests_displaced;
    assert!(
        displaced >= (requests - MAX_TRANSACTIONS as usize) as u64 && displaced < requests as u64,
        "{displaced} of {requests} displaced: at least the overflow, by pigeonhole"
    );
    let answered = delta(&filter, || {
        for i in 0..requests {
            let challenge = challenge(false);
            answer(
                &filter,
                ALICE,
                &register_answer(401, "Unauthorized", &call(i), 1, &[&challenge]),
            );
        }
    });
    assert_eq!(
        (
            answered.of(AnswerKind::Failure),
            answered.of(AnswerKind::Unpaired)
        ),
        (requests as u64 - displaced, displaced),
        "each surviving transaction pairs once, each displaced one is unpaired: {:?}",
        kinds(&answered)
    );
    assert!(filter.bans().unwrap().is_empty(), "nothing banned");
}

/// A 404 to an in-dialog request (a phone's stray BYE) says the dialog is gone: not a
/// refused user, and never a step toward an enumeration ban; to an OPTIONS it is one.
#[test]
fn a_404_to_a_bye_refuses_no_user() {
    if !privileged("a_404_to_a_bye_refuses_no_user") {
        return;
    }
    let filter = configured(&settings(AuthRules::default()));
    for (method, expected) in [
        ("BYE", AnswerKind::Other),
        ("NOTIFY", AnswerKind::Other),
        ("OPTIONS", AnswerKind::RejectedUser),
    ] {
        // sip_request's dialog: Call-ID 1@198.18.0.1, CSeq 1.
        let sent = sip_request(method, "sip:bob@pbx.example.test", &[]);
        let not_found = format!(
            "SIP/2.0 404 Not Found\r\nVia: SIP/2.0/UDP 198.18.0.1:40000;branch=z9hG4bK-1\r\n\
             From: <sip:alice@pbx.example.test>;tag=1\r\nTo: <sip:bob@pbx.example.test>;tag=s\r\n\
             Call-ID: 1@198.18.0.1\r\nCSeq: 1 {method}\r\nContent-Length: 0\r\n\r\n"
        );
        let change = delta(&filter, || {
            assert_eq!(request(&filter, ALICE, &sent), XDP_PASS, "{method}");
            answer(&filter, ALICE, not_found.as_bytes());
        });
        assert_eq!(kinds(&change), [(expected.name(), 1)], "a 404 to {method}");
    }
}

/// Answers and the request each pairs with (or not), in order: (what, request sent
/// first (credentials?), the answer, the kind it must count).
type PairingCase = (&'static str, Option<bool>, Vec<u8>, AnswerKind);

fn pairing_cases() -> Vec<PairingCase> {
    let fresh = challenge(false);
    let stale = challenge(true);
    vec![
        (
            "a 401 to a request without credentials is the usual challenge",
            Some(false),
            register_answer(401, "Unauthorized", "c1", 1, &[&fresh]),
            AnswerKind::Challenge,
        ),
        (
            "a 401 with stale=true: an old nonce, not a wrong password",
            Some(true),
            register_answer(401, "Unauthorized", "c2", 1, &[&stale]),
            AnswerKind::Stale,
        ),
        (
            "a 401 to credentials (Asterisk and Kamailio re-challenge a wrong password)",
            Some(true),
            register_answer(401, "Unauthorized", "c3", 1, &[&fresh]),
            AnswerKind::Failure,
        ),
        (
            "a 403 to credentials (FreeSWITCH's wrong password)",
            Some(true),
            register_answer(403, "Forbidden", "c4", 1, &[]),
            AnswerKind::Failure,
        ),
        (
            "a 404 to a request without credentials refuses the user",
            Some(false),
            register_answer(404, "Not Found", "c5", 1, &[]),
            AnswerKind::RejectedUser,
        ),
        (
            "a 2xx to credentials, expiry in Expires",
            Some(true),
            register_answer(200, "OK", "c6", 1, &["Expires: 600"]),
            AnswerKind::Success,
        ),
        (
            "a provisional answer is counted, and keeps the transaction",
            Some(true),
            register_answer(100, "Trying", "c7", 1, &[]),
            AnswerKind::Other,
        ),
        (
            "...whose final answer still pairs",
            None,
            register_answer(401, "Unauthorized", "c7", 1, &[&fresh]),
            AnswerKind::Failure,
        ),
        (
            "a retransmitted final answer counts once",
            None,
            register_answer(401, "Unauthorized", "c7", 1, &[&fresh]),
            AnswerKind::Unpaired,
        ),
        (
            "an answer to no request the filter saw",
            None,
            register_answer(401, "Unauthorized", "never-sent", 1, &[&fresh]),
            AnswerKind::Unpaired,
        ),
        (
            "another CSeq of the same Call-ID is another transaction",
            Some(false),
            register_answer(401, "Unauthorized", "c8", 2, &[&fresh]),
            AnswerKind::Unpaired,
        ),
    ]
}

/// The call ID of the request an answer of [`pairing_cases`] pairs with.
fn call_id_of(what: &str, answer: &[u8]) -> String {
    if what.starts_with("another CSeq") {
        return "c8".into();
    }
    std::str::from_utf8(answer)
        .ok()
        .and_then(|t| t.split("Call-ID: ").nth(1))
        .and_then(|t| t.split("\r\n").next())
        .expect("the answer has a Call-ID")
        .into()
}

#[test]
#[ignore = "writes the fuzz targets' seeds: cargo xtask fuzz --seed"]
fn fuzz_seeds() {
    let mut payloads = Vec::new();
    for (what, credentials, answer, _) in pairing_cases() {
        let call_id = call_id_of(what, &answer);
        payloads.push(register("alice", &call_id, 1, credentials.unwrap_or(true)));
        payloads.push(answer);
    }
    payloads.push(register_answer(
        200,
        "OK",
        "c10",
        1,
        &["Contact: <sip:alice@192.0.2.10>;expires=1800"],
    ));
    assert!(sip_filter_tests::fuzz_seeds::write_seeds(&[], &payloads) > 0);
}

#[test]
fn answers_are_paired_with_requests_and_classified() {
    if !privileged("answers_are_paired_with_requests_and_classified") {
        return;
    }
    let filter = configured(&settings(AuthRules::default()));
    let fresh = challenge(false);
    let cases = pairing_cases();
    let mut failures = Vec::new();
    for (what, credentials, frame, expected) in cases {
        let change = delta(&filter, || {
            if let Some(credentials) = credentials {
                let call_id = call_id_of(what, &frame);
                let verdict = request(&filter, ALICE, &register("alice", &call_id, 1, credentials));
                assert_eq!(verdict, XDP_PASS, "{what}: the request passes");
            }
            answer(&filter, ALICE, &frame);
        });
        let counted = kinds(&change);
        if counted != vec![(expected.name(), 1)] {
            failures.push(format!(
                "{what}: expected {}, counted {counted:?}",
                expected.name()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    // An answer coming in from outside is anyone's: it passes as a response and
    // teaches nothing.
    let change = delta(&filter, || {
        request(&filter, ALICE, &register("alice", "c9", 1, true));
        let forged = register_answer(401, "Unauthorized", "c9", 1, &[&fresh]);
        let verdict = filter
            .test_run(&udp4_from(ALICE, SIP_PORT, &forged))
            .expect("the XDP program runs");
        assert_eq!(verdict, XDP_PASS);
    });
    assert_eq!(
        kinds(&change),
        vec![],
        "a forged answer on ingress counts nothing"
    );
    assert_eq!(change.requests_noted, 1);
}

#[test]
fn failed_passwords_lock_the_account_for_its_source_then_ban_the_source() {
    if !privileged("failed_passwords_lock_the_account_for_its_source_then_ban_the_source") {
        return;
    }
    let rules = AuthRules {
        lockout_failures: 3,
        ban_failures: 6,
        enumeration_users: 0,
        account_failures: 0,
        ..AuthRules::default()
    };
    let filter = configured(&settings(rules));
    let fresh = challenge(false);
    let guess = |client: [u8; 4], user: &str, n: u32| -> u32 {
        let call_id = format!("guess-{user}-{n}");
        let verdict = request(&filter, client, &register(user, &call_id, 1, true));
        if verdict == XDP_PASS {
            answer(
                &filter,
                client,
                &register_answer(401, "Unauthorized", &call_id, 1, &[&fresh]),
            );
        }
        verdict
    };
    // Three wrong passwords for alice lock alice for this source...
    let change = delta(&filter, || {
        for n in 0..3 {
            assert_eq!(
                guess(ALICE, "alice", n),
                XDP_PASS,
                "guess {n} reaches the server"
            );
        }
    });
    assert_eq!(change.of(AnswerKind::Failure), 3);
    assert_eq!(change.lockouts, 1);
    let before = filter.counters().expect("counters").packets[Reason::DropAuthLockout as usize]
        [Method::Register as usize];
    assert_eq!(
        guess(ALICE, "alice", 3),
        XDP_DROP,
        "alice is locked for this source"
    );
    let after = filter.counters().expect("counters").packets[Reason::DropAuthLockout as usize]
        [Method::Register as usize];
    assert_eq!(after - before, 1, "counted as drop_auth_lockout");
    // ...but neither its other accounts, nor alice from elsewhere, nor alice's
    // requests without credentials (which get the challenge a phone needs).
    let office_phone = [198, 18, 1, 2];
    assert_eq!(
        request(&filter, ALICE, &register("bob", "bob-1", 1, true)),
        XDP_PASS
    );
    assert_eq!(
        request(&filter, office_phone, &register("alice", "a-1", 1, true)),
        XDP_PASS
    );
    assert_eq!(
        request(&filter, ALICE, &register("alice", "a-2", 1, false)),
        XDP_PASS
    );
    // The source's failures (3) and the attempts the lockout dropped count toward its
    // ban: at 6 it is banned, and then everything from it is dropped.
    assert_eq!(guess(ALICE, "alice", 4), XDP_DROP);
    assert_eq!(
        guess(ALICE, "bob", 5),
        XDP_PASS,
        "bob's guess is the sixth failure"
    );
    assert_eq!(
        request(&filter, ALICE, &register("carol", "c-1", 1, false)),
        XDP_DROP,
        "the source is banned"
    );
    let bans = filter.counters().expect("counters").bans_added;
    assert_eq!(bans[sip_filter_common::maps::BanReason::Auth as usize], 1);
}

#[test]
fn a_registered_source_loses_only_the_failing_account() {
    if !privileged("a_registered_source_loses_only_the_failing_account") {
        return;
    }
    let rules = AuthRules {
        lockout_failures: 3,
        ban_failures: 5,
        enumeration_users: 3,
        account_failures: 0,
        ..AuthRules::default()
    };
    let filter = configured(&settings(rules));
    let office = [198, 18, 2, 1];
    // One phone registers: the office's address is registered.
    let change = delta(&filter, || {
        request(&filter, office, &register("100", "r-1", 1, true));
        answer(
            &filter,
            office,
            &register_answer(
                200,
                "OK",
                "r-1",
                1,
                &["Contact: <sip:100@198.18.2.1:40000>;expires=1800"],
            ),
        );
    });
    assert_eq!(change.of(AnswerKind::Success), 1);
    assert_eq!(change.registrations, 1);
    // Another phone has a stale password and fails for a long while, and phones with
    // unknown users are refused: the office is never banned, only 101 is locked.
    let fresh = challenge(false);
    for n in 0..12 {
        let call_id = format!("stale-{n}");
        if request(&filter, office, &register("101", &call_id, 1, true)) == XDP_PASS {
            answer(
                &filter,
                office,
                &register_answer(401, "Unauthorized", &call_id, 1, &[&fresh]),
            );
        }
        let user = format!("9{n:02}");
        let call_id = format!("unknown-{n}");
        request(&filter, office, &register(&user, &call_id, 1, false));
        answer(
            &filter,
            office,
            &register_answer(404, "Not Found", &call_id, 1, &[]),
        );
    }
    assert_eq!(
        request(&filter, office, &register("101", "stale-x", 1, true)),
        XDP_DROP,
        "101 is locked for the office"
    );
    assert_eq!(
        request(&filter, office, &register("100", "r-2", 2, true)),
        XDP_PASS,
        "the rest of the office goes on"
    );
    let bans = filter.counters().expect("counters").bans_added;
    assert_eq!(
        bans.iter().sum::<u64>(),
        0,
        "a registered source is never banned"
    );
}

#[test]
fn enumeration_bans_an_unregistered_source() {
    if !privileged("enumeration_bans_an_unregistered_source") {
        return;
    }
    let rules = AuthRules {
        enumeration_users: 5,
        ..AuthRules::default()
    };
    let filter = configured(&settings(rules));
    let scanner = [198, 18, 3, 1];
    let mut refused = 0;
    for n in 0..10 {
        let user = format!("{}", 200 + n);
        let call_id = format!("enum-{n}");
        if request(&filter, scanner, &register(&user, &call_id, 1, false)) != XDP_PASS {
            break;
        }
        answer(
            &filter,
            scanner,
            &register_answer(404, "Not Found", &call_id, 1, &[]),
        );
        refused += 1;
    }
    assert_eq!(refused, 5, "banned at the fifth distinct user refused");
    let bans = filter.counters().expect("counters").bans_added;
    assert_eq!(
        bans[sip_filter_common::maps::BanReason::Enumeration as usize],
        1
    );
}

#[test]
fn an_account_guessed_from_many_sources_is_locked_for_unregistered_ones() {
    if !privileged("an_account_guessed_from_many_sources_is_locked_for_unregistered_ones") {
        return;
    }
    let rules = AuthRules {
        lockout_failures: 0,
        ban_failures: 0,
        enumeration_users: 0,
        account_failures: 4,
        ..AuthRules::default()
    };
    let filter = configured(&settings(rules));
    // The account's real phone registers first.
    let phone = [198, 18, 4, 1];
    request(&filter, phone, &register("500", "p-1", 1, true));
    answer(
        &filter,
        phone,
        &register_answer(200, "OK", "p-1", 1, &["Expires: 3600"]),
    );
    // Four guessers, one wrong password each.
    let fresh = challenge(false);
    let change = delta(&filter, || {
        for n in 0..4u8 {
            let guesser = [198, 18, 5, n + 1];
            let call_id = format!("d-{n}");
            request(&filter, guesser, &register("500", &call_id, 1, true));
            answer(
                &filter,
                guesser,
                &register_answer(401, "Unauthorized", &call_id, 1, &[&fresh]),
            );
        }
    });
    assert_eq!(change.account_lockouts, 1);
    let fifth = [198, 18, 5, 9];
    assert_eq!(
        request(&filter, fifth, &register("500", "d-9", 1, true)),
        XDP_DROP,
        "locked for a new, unregistered source"
    );
    assert_eq!(
        request(&filter, phone, &register("500", "p-2", 2, true)),
        XDP_PASS,
        "the registered phone keeps registering"
    );
}

#[test]
fn strict_mode_reserves_methods_for_registered_and_trusted_sources() {
    if !privileged("strict_mode_reserves_methods_for_registered_and_trusted_sources") {
        return;
    }
    let trunk = [198, 18, 6, 1];
    let mut settings = settings(AuthRules {
        strict_methods: vec![Method::Invite],
        ..AuthRules::default()
    });
    settings.allow = vec!["198.18.6.1/32".parse().expect("a network")];
    let filter = configured(&settings);
    let stranger = [198, 18, 6, 2];
    let phone = [198, 18, 6, 3];
    let invite = sip_request("INVITE", "sip:100@pbx.example.test", &[]);
    assert_eq!(request(&filter, stranger, &invite), XDP_DROP);
    assert_eq!(
        request(
            &filter,
            stranger,
            &sip_request("OPTIONS", "sip:pbx.example.test", &[])
        ),
        XDP_PASS,
        "only the chosen methods"
    );
    assert_eq!(request(&filter, trunk, &invite), XDP_PASS, "trusted");
    request(&filter, phone, &register("300", "s-1", 1, true));
    answer(
        &filter,
        phone,
        &register_answer(200, "OK", "s-1", 1, &["Expires: 60"]),
    );
    assert_eq!(request(&filter, phone, &invite), XDP_PASS, "registered");
    let drops = filter.counters().expect("counters").packets[Reason::DropUnregistered as usize]
        [Method::Invite as usize];
    assert_eq!(drops, 1);
}

/// What the answers taught, as the operator's side sees it: registrations and lockouts
/// are listed, survive a restart through the state file (a new filter, with a new hash
/// seed, drops the same accounts and exempts the same phone), and unlocking lifts them.
#[test]
fn what_was_learnt_is_listed_restored_and_unlocked() {
    if !privileged("what_was_learnt_is_listed_restored_and_unlocked") {
        return;
    }
    let rules = AuthRules {
        lockout_failures: 2,
        ban_failures: 0,
        enumeration_users: 0,
        account_failures: 3,
        ..AuthRules::default()
    };
    let settings = settings(rules);
    let filter = configured(&settings);
    let fresh = challenge(false);
    let fail = |client: [u8; 4], user: &str, call_id: &str| {
        assert_eq!(
            request(&filter, client, &register(user, call_id, 1, true)),
            XDP_PASS,
            "{user}'s guess {call_id} reaches the server"
        );
        answer(
            &filter,
            client,
            &register_answer(401, "Unauthorized", call_id, 1, &[&fresh]),
        );
    };
    let (phone, guesser) = ([198, 18, 8, 1], [198, 18, 8, 2]);
    request(&filter, phone, &register("carol", "p-1", 1, true));
    answer(
        &filter,
        phone,
        &register_answer(200, "OK", "p-1", 1, &["Expires: 3600"]),
    );
    // alice: two failures from one source lock her for it (not across: 2 < 3).
    fail(guesser, "alice", "a-1");
    fail(guesser, "alice", "a-2");
    // carol: one failure from each of three sources locks her for unregistered ones.
    for n in 0..3u8 {
        fail([198, 18, 9, n + 1], "carol", &format!("c-{n}"));
    }

    let learnt = LearntMaps::of(&filter).expect("the maps are there");
    let now = monotonic_now_ns();
    let registered = learnt.registered(now).expect("registrations read");
    assert_eq!(registered.len(), 1, "{registered:?}");
    assert_eq!(registered[0].key, filter.source_key(IpAddr::from(phone)));
    assert_eq!(registered[0].account(), "carol");
    let locked = learnt.locked(now).expect("lockouts read");
    let shown: Vec<(String, LockScope)> = locked
        .iter()
        .map(|locked| (locked.account(), locked.scope))
        .collect();
    assert_eq!(
        shown,
        [
            (
                "alice".to_string(),
                LockScope::Source(filter.source_key(IpAddr::from(guesser)))
            ),
            ("carol".to_string(), LockScope::Unregistered),
        ]
    );
    assert_eq!(
        learnt.count(now).expect("counted"),
        Learnt {
            registered: 1,
            locked_for_source: 1,
            locked_everywhere: 1
        }
    );

    // A restart: taken out, written, read back, restored into a fresh filter.
    let state_dir = std::env::temp_dir().join(format!("sip-filter-learnt-{}", std::process::id()));
    let path = state_dir.join(state::FILE_NAME);
    let taken = State::take(&StateMaps::of(&filter).expect("maps"), Clocks::now()).expect("taken");
    assert_eq!((taken.registered.len(), taken.lockouts.len()), (1, 2));
    taken.save(&path).expect("saved");
    let saved = State::load(&path).expect("read").expect("there");
    std::fs::remove_dir_all(&state_dir).expect("removed");
    assert_eq!(saved, taken);
    drop(filter);
    let mut after = configured(&settings);
    let restored = state::restore(&mut after, &saved, Clocks::now()).expect("restored");
    assert_eq!(
        (restored.registered, restored.lockouts),
        (1, 2),
        "{restored:?}"
    );
    let stranger = [198, 18, 9, 9];
    assert_eq!(
        request(&after, guesser, &register("alice", "a-3", 1, true)),
        XDP_DROP,
        "alice is still locked for the guesser"
    );
    assert_eq!(
        request(&after, stranger, &register("carol", "c-9", 1, true)),
        XDP_DROP,
        "carol is still locked for unregistered sources"
    );
    assert_eq!(
        request(&after, phone, &register("carol", "p-2", 2, true)),
        XDP_PASS,
        "her phone is still registered"
    );

    // Unlocking: alice for the guesser only, then carol everywhere.
    let learnt = LearntMaps::of(&after).expect("the maps are there");
    let guesser_key = after.source_key(IpAddr::from(guesser));
    let now = monotonic_now_ns();
    let stranger_key = after.source_key(IpAddr::from(stranger));
    assert_eq!(
        learnt
            .unlock("alice", Some(stranger_key), now)
            .expect("unlock"),
        0,
        "not locked for another source"
    );
    assert_eq!(
        learnt
            .unlock("alice", Some(guesser_key), now)
            .expect("unlock"),
        1
    );
    assert_eq!(
        request(&after, guesser, &register("alice", "a-4", 1, true)),
        XDP_PASS,
        "alice is unlocked for the guesser"
    );
    assert_eq!(learnt.unlock("carol", None, now).expect("unlock"), 1);
    assert_eq!(
        request(&after, stranger, &register("carol", "c-10", 1, true)),
        XDP_PASS,
        "carol is unlocked"
    );
    assert!(learnt.locked(now).expect("read").is_empty());
}

/// Issue 14: what the egress program learns over TCP. A credentialed request over TCP
/// is noted for its answer, and an answer leaving from the SIP TCP port is paired and
/// learnt, the one starting a segment and those after it
/// (`every_answer_in_a_tcp_segment_is_learnt`); a continuation or a forged answer
/// teaches nothing.
#[test]
fn an_answer_starting_a_tcp_segment_is_learnt() {
    if !privileged("an_answer_starting_a_tcp_segment_is_learnt") {
        return;
    }
    let filter = configured(&settings(AuthRules::default()));
    let fresh = challenge(false);
    let over_tcp = |call_id: &str| {
        let verdict = filter
            .test_run(&tcp4_from(
                ALICE,
                SIP_PORT,
                Segment::Established,
                &register("alice", call_id, 1, true),
            ))
            .expect("the XDP program runs");
        assert_eq!(verdict, XDP_PASS, "{call_id}: the request passes");
    };
    over_tcp("tcp-one");
    let failure = register_answer(401, "Unauthorized", "tcp-one", 1, &[&fresh]);
    let change = delta(&filter, || {
        let action = filter
            .test_run_answer(&answer_tcp4_to(ALICE, &failure))
            .expect("the egress program runs");
        assert_eq!(action, TC_ACT_OK);
    });
    assert_eq!(
        kinds(&change),
        [("failure", 1)],
        "the answer over TCP is learnt"
    );

    over_tcp("tcp-two");
    over_tcp("tcp-three");
    let mut two = register_answer(401, "Unauthorized", "tcp-two", 1, &[&fresh]);
    two.extend(register_answer(
        401,
        "Unauthorized",
        "tcp-three",
        1,
        &[&fresh],
    ));
    let change = delta(&filter, || {
        filter
            .test_run_answer(&answer_tcp4_to(ALICE, &two))
            .expect("the egress program runs");
    });
    assert_eq!(
        kinds(&change),
        [("failure", 2)],
        "both answers in the segment are read"
    );

    // The rest of a message continued from an earlier segment is no answer.
    over_tcp("tcp-four");
    let change = delta(&filter, || {
        filter
            .test_run_answer(&answer_tcp4_to(ALICE, b"nonce=\"abc\"\r\n\r\n"))
            .expect("the egress program runs");
    });
    assert_eq!(
        change.of(AnswerKind::Failure),
        0,
        "a continuation teaches nothing"
    );
    // An answer arriving from outside over TCP is forged: it never counts.
    let forged = register_answer(401, "Unauthorized", "tcp-four", 1, &[&fresh]);
    let change = delta(&filter, || {
        filter
            .test_run(&tcp4_from(ALICE, SIP_PORT, Segment::Established, &forged))
            .expect("the XDP program runs");
    });
    assert_eq!(
        change.of(AnswerKind::Failure),
        0,
        "a forged answer never counts"
    );
    // The transaction is still open for the server's own answer.
    let change = delta(&filter, || {
        filter
            .test_run_answer(&answer_tcp4_to(ALICE, &forged))
            .expect("the egress program runs");
    });
    assert_eq!(kinds(&change), [("failure", 1)]);
}

/// Credentialed REGISTERs of `user` from `client` over TCP, one per Call-ID, each noted
/// for its answer.
fn registers_over_tcp(filter: &Filter, client: [u8; 4], user: &str, call_ids: &[String]) {
    for call_id in call_ids {
        let verdict = filter
            .test_run(&tcp4_from(
                client,
                SIP_PORT,
                Segment::Established,
                &register(user, call_id, 1, true),
            ))
            .expect("the XDP program runs");
        assert_eq!(verdict, XDP_PASS, "{call_id}: the request passes");
    }
}

/// The answer counters' change made by one TCP segment leaving for `client`.
fn segment_to(filter: &Filter, client: [u8; 4], payload: &[u8]) -> AnswerCounters {
    delta(filter, || {
        let action = filter
            .test_run_answer(&answer_tcp4_to(client, payload))
            .expect("the egress program runs");
        assert_eq!(action, TC_ACT_OK, "the egress program passes every segment");
    })
}

/// What a segment's walk counted besides the kinds: (later, cut, unread).
fn walk(change: &AnswerCounters) -> (u64, u64, u64) {
    (change.stream_later, change.stream_cut, change.stream_unread)
}

/// A 401 to the REGISTER `call_id`, `Content-Length` 0: a failed password when the
/// REGISTER carried credentials.
fn unauthorized(call_id: &str) -> Vec<u8> {
    register_answer(401, "Unauthorized", call_id, 1, &[&challenge(false)])
}

/// One row: what the segment holds, the REGISTERs noted before it (by Call-ID), the
/// segment, the kinds it must count, and (later, cut, unread).
struct SegmentRow {
    what: &'static str,
    calls: Vec<String>,
    segment: Vec<u8>,
    kinds: Vec<(&'static str, u64)>,
    walk: (u64, u64, u64),
}

fn calls(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}-{i}")).collect()
}

fn segment_rows() -> Vec<SegmentRow> {
    let two = calls("two", 2);
    let three = calls("three", 3);
    let cut = calls("cut", 3);
    let past = calls("past", 2);
    let body = calls("body", 2);
    let request_first = calls("request-first", 1);
    let join = |parts: &[&[u8]]| parts.concat();

    // A 401, a 2xx with its registration's expiry and a 403 to three credentialed
    // REGISTERs: each read with a state of its own.
    let three_segment = join(&[
        &unauthorized(&three[0]),
        &register_answer(200, "OK", &three[1], 1, &["Expires: 600"]),
        &register_answer(403, "Forbidden", &three[2], 1, &[]),
    ]);
    // The third answer ends before its challenge: the segment's end cut its header
    // section (a `stale=true` might follow), so it is not paired.
    let third = unauthorized(&cut[2]);
    let before_challenge = third
        .windows(4)
        .position(|w| w == b"WWW-")
        .expect("a challenge");
    let cut_segment = join(&[
        &unauthorized(&cut[0]),
        &unauthorized(&cut[1]),
        &third[..before_challenge],
    ]);
    // The second answer's Content-Length runs past the segment (its body goes on in
    // the next): its headers are whole, it is learnt, and the walk ends there.
    let mut long_body = String::from_utf8(unauthorized(&past[1])).expect("text");
    long_body = long_body.replace("Content-Length: 0", "Content-Length: 500") + "v=0\r\no=- 1";
    let past_segment = join(&[&unauthorized(&past[0]), long_body.as_bytes()]);
    // A body the walk steps over by its Content-Length, whose bytes look like a 401.
    let decoy = unauthorized("decoy");
    let mut with_body = String::from_utf8(unauthorized(&body[0])).expect("text");
    with_body = with_body.replace(
        "Content-Length: 0",
        &format!("Content-Length: {}", decoy.len()),
    ) + std::str::from_utf8(&decoy).expect("text");
    let body_segment = join(&[with_body.as_bytes(), &unauthorized(&body[1])]);
    // The server's own request before an answer: the walk goes past it.
    let notify = b"NOTIFY sip:alice@198.18.0.1:40000 SIP/2.0\r\nVia: SIP/2.0/TCP 192.0.2.1\r\n\
        Call-ID: n1\r\nCSeq: 7 NOTIFY\r\nEvent: message-summary\r\nContent-Length: 0\r\n\r\n";
    let request_segment = join(&[notify, &unauthorized(&request_first[0])]);

    vec![
        SegmentRow {
            what: "two 401s to two credentialed REGISTERs",
            calls: two.clone(),
            segment: join(&[&unauthorized(&two[0]), &unauthorized(&two[1])]),
            kinds: vec![("failure", 2)],
            walk: (1, 0, 0),
        },
        SegmentRow {
            what: "a 401, a 200 and a 403",
            calls: three,
            segment: three_segment,
            kinds: vec![("failure", 2), ("success", 1)],
            walk: (2, 0, 0),
        },
        SegmentRow {
            what: "two 401s and a third cut in its headers",
            calls: cut,
            segment: cut_segment,
            kinds: vec![("not_answer", 1), ("failure", 2)],
            walk: (2, 1, 0),
        },
        SegmentRow {
            what: "a 401 and a 401 whose Content-Length runs past the segment",
            calls: past,
            segment: past_segment,
            kinds: vec![("failure", 2)],
            walk: (1, 0, 0),
        },
        SegmentRow {
            what: "a 401 with a body that looks like a 401, and a 401",
            calls: body,
            segment: body_segment,
            kinds: vec![("failure", 2)],
            walk: (1, 0, 0),
        },
        SegmentRow {
            what: "the server's NOTIFY, then a 401",
            calls: request_first,
            segment: request_segment,
            kinds: vec![("not_answer", 1), ("failure", 1)],
            walk: (1, 0, 0),
        },
    ]
}

/// Issue 14: a TCP segment leaving from the SIP port may hold several answers (the
/// server's coalesced writes; a guesser pipelining REGISTERs over one connection gets
/// its 401s back together). Each is read, paired and learnt from, bounded by its
/// Content-Length and that by the segment; one cut in its headers is counted, not
/// learnt; a segment with more than `MAX_ANSWER_STREAM_MESSAGES` has the rest counted.
#[test]
fn every_answer_in_a_tcp_segment_is_learnt() {
    if !privileged("every_answer_in_a_tcp_segment_is_learnt") {
        return;
    }
    // Counting only: nothing locks or bans.
    let filter = configured(&settings(AuthRules {
        lockout_failures: 0,
        ban_failures: 0,
        enumeration_users: 0,
        account_failures: 0,
        ..AuthRules::default()
    }));
    let mut failures = Vec::new();
    for (i, row) in segment_rows().into_iter().enumerate() {
        // A client of its own per row: nothing one row learns reaches another.
        let client = [198, 18, 2, i as u8 + 1];
        registers_over_tcp(&filter, client, "alice", &row.calls);
        let change = segment_to(&filter, client, &row.segment);
        if kinds(&change) != row.kinds || walk(&change) != row.walk {
            failures.push(format!(
                "{}: counted {:?} and (later, cut, unread) {:?}, expected {:?} and {:?}",
                row.what,
                kinds(&change),
                walk(&change),
                row.kinds,
                row.walk
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    // The answer the segment cut: its transaction is still open, and its whole copy
    // (the server's retransmission, or an answer read apart) is learnt.
    let cut_client = [198, 18, 2, 3];
    let change = segment_to(&filter, cut_client, &unauthorized("cut-2"));
    assert_eq!(kinds(&change), [("failure", 1)], "the cut answer, whole");
    // The 401 inside the body was not read as an answer.
    let change = delta(&filter, || {
        request(
            &filter,
            [198, 18, 2, 5],
            &register("alice", "decoy", 1, true),
        );
        answer(&filter, [198, 18, 2, 5], &unauthorized("decoy"));
    });
    assert_eq!(
        kinds(&change),
        [("failure", 1)],
        "the decoy's transaction untouched"
    );

    // More answers than the walk reads: the first MAX_ANSWER_STREAM_MESSAGES are
    // learnt, the segment counts once as unread, and the rest stay open. Short
    // answers: BPF_PROG_TEST_RUN takes a frame of a page at most.
    let bound = MAX_ANSWER_STREAM_MESSAGES as usize;
    let many = calls("many", bound + 2);
    let client = [198, 18, 3, 1];
    registers_over_tcp(&filter, client, "alice", &many);
    let short = |call_id: &str| {
        format!("SIP/2.0 401 U\r\nCall-ID: {call_id}\r\nCSeq: 1 REGISTER\r\nl: 0\r\n\r\n")
    };
    let segment: String = many.iter().map(|call_id| short(call_id)).collect();
    let change = segment_to(&filter, client, segment.as_bytes());
    assert_eq!(
        (kinds(&change), walk(&change)),
        (vec![("failure", bound as u64)], (bound as u64 - 1, 0, 1)),
        "{} answers in {} bytes",
        many.len(),
        segment.len()
    );
    for call_id in &many[bound..] {
        let change = segment_to(&filter, client, short(call_id).as_bytes());
        assert_eq!(kinds(&change), [("failure", 1)], "{call_id} still open");
    }
}
