//! Destination rules and per-account call budgets (`[destinations]`, issue 18) in the
//! real XDP program and its INVITE program, fed frames with BPF_PROG_TEST_RUN: the
//! dialled number normalised (`+`, `00`, `011`, `tel:`, separators, user parameters,
//! names), rules by longest prefix (deny, limit per source and per account, allow),
//! budgets per minute and per hour, blocks from every source, dry-run, a reload that
//! keeps what it should, and a restart (the state file) that keeps blocks and meters.

use sip_filter::{
    destinations::{
        account_text, source_text, Action, CallBudgets, DestinationReport, DestinationSettings,
        Rule,
    },
    filter::monotonic_now_ns,
    state::{self, Clocks, State, StateMaps},
    Filter, Settings,
};
use sip_filter_common::{
    maps::{destination_names, CallBudget, DestinationCounters, CALLER_ACCOUNT, CALLER_SOURCE},
    sip::pairing::Account,
    Method, Reason,
};
use sip_filter_tests::{
    geo::{verdict_settings, XDP_DROP, XDP_PASS},
    loaded::fresh,
    packets::{sip_request, transaction, udp4_from, SIP_PORT},
    privileged,
};
use std::sync::atomic::{AtomicU32, Ordering};

fn rule(prefix: &str, action: Action) -> Rule {
    Rule {
        prefix: prefix.to_string(),
        action,
    }
}

fn settings(rules: Vec<Rule>, budgets: CallBudgets) -> Settings {
    Settings {
        allow_hostless_uri: true, // tel: URIs have no host
        destinations: Some(DestinationSettings {
            international_prefixes: vec!["00".into(), "011".into()],
            rules,
            budgets: CallBudgets {
                block_seconds: 3600,
                ..budgets
            },
        }),
        ..verdict_settings()
    }
}

/// The From of the INVITEs the tests send: [`sip_request`]'s, user `alice`.
const FROM_ALICE: &str = "<sip:alice@pbx.example.test>;tag=1";

/// An INVITE to `uri` from `source`: a call of its own (a fresh Call-ID), from
/// [`FROM_ALICE`], with credentials for `account` if given, and a To tag if `in_dialog`.
fn invite(uri: &str, source: [u8; 4], account: Option<&str>, in_dialog: bool) -> Vec<u8> {
    static CALLS: AtomicU32 = AtomicU32::new(0);
    let call_id = format!("call-{}@198.18.0.1", CALLS.fetch_add(1, Ordering::Relaxed));
    let mut request = invite_text(uri, FROM_ALICE, account, &call_id, 1);
    if in_dialog {
        // The builder's To has no tag; a re-INVITE's has one.
        request = request.replace(
            "To: <sip:bob@pbx.example.test>",
            "To: <sip:bob@pbx.example.test>;tag=b1",
        );
    }
    udp4_from(source, SIP_PORT, request.as_bytes())
}

/// An INVITE of the call `call_id` with CSeq `cseq`, From `from` (the header's value),
/// and credentials for `account` if given.
fn call_invite(
    uri: &str,
    source: [u8; 4],
    from: &str,
    account: Option<&str>,
    call_id: &str,
    cseq: u32,
) -> Vec<u8> {
    let request = invite_text(uri, from, account, call_id, cseq);
    udp4_from(source, SIP_PORT, request.as_bytes())
}

fn invite_text(uri: &str, from: &str, account: Option<&str>, call_id: &str, cseq: u32) -> String {
    let credentials = account.map(|user| {
        format!(
            "Proxy-Authorization: Digest username=\"{user}\", realm=\"pbx.example.test\", \
             nonce=\"n1\", uri=\"{uri}\", response=\"00112233445566778899aabbccddeeff\""
        )
    });
    let headers: Vec<&str> = credentials.iter().map(String::as_str).collect();
    String::from_utf8(transaction(&sip_request("INVITE", uri, &headers), cseq))
        .expect("text")
        .replace(&format!("From: {FROM_ALICE}"), &format!("From: {from}"))
        .replace("Call-ID: 1@198.18.0.1", &format!("Call-ID: {call_id}"))
}

fn invites(filter: &Filter, reason: Reason) -> u64 {
    filter.counters().expect("counters").packets[reason as usize][Method::Invite as usize]
}

fn destination_counters(filter: &Filter) -> DestinationCounters {
    let map = aya::maps::PerCpuArray::<_, DestinationCounters>::try_from(
        filter.map(destination_names::COUNTERS).expect("map"),
    )
    .expect("a per-CPU array");
    let values = map.get(&0, 0).expect("counters");
    let mut sum = DestinationCounters::default();
    for value in values.iter() {
        sum.invites += value.invites;
        for (total, kind) in sum.dialled.iter_mut().zip(value.dialled) {
            *total += kind;
        }
        sum.unmatched += value.unmatched;
        sum.budget_breaches += value.budget_breaches;
        sum.no_account += value.no_account;
        sum.from_accounts += value.from_accounts;
        sum.repeats += value.repeats;
    }
    sum
}

fn budget_of(filter: &Filter, account: &str) -> Option<CallBudget> {
    let map = aya::maps::HashMap::<_, u64, CallBudget>::try_from(
        filter.map(destination_names::BUDGETS).expect("map"),
    )
    .expect("a hash map");
    map.iter()
        .filter_map(Result::ok)
        .map(|(_, budget)| budget)
        .find(|budget| {
            let (bytes, len) = Account::name_bytes(&budget.name);
            &bytes[..len] == account.as_bytes()
        })
}

const PHONE: [u8; 4] = [198, 18, 0, 10];

/// The dialled number normalised as the kernel reads it, and the rules matched by
/// longest prefix.
#[test]
fn destinations_normalised_and_matched_by_longest_prefix() {
    if !privileged("destinations_normalised_and_matched_by_longest_prefix") {
        return;
    }
    let mut filter = fresh();
    let rules = vec![
        rule("+4490", Action::Deny),
        rule("+1900", Action::Deny),
        rule("+44", Action::Allow),
        rule("0900", Action::Deny),
        rule(
            "+",
            Action::Limit {
                calls_per_minute: 1000,
            },
        ),
    ];
    filter
        .configure(&settings(rules, CallBudgets::default()))
        .expect("configured");
    let denied = Some(Reason::DropDestinationDenied);
    let cases: [(&str, Option<Reason>); 14] = [
        ("sip:+4490123456@pbx.example.test", denied),
        ("sip:004490123456@pbx.example.test", denied),
        ("sip:01144901234@pbx.example.test", denied),
        ("sip:+44-90-1234@pbx.example.test;user=phone", denied),
        ("sip:+44%2090%201234@pbx.example.test", denied),
        ("tel:+1-900-555-0100", denied),
        ("tel:+1-900-555-0100;phone-context=+1", denied),
        (
            "sip:+1(900)5550100;npdi;rn=+12125550000@pbx.example.test",
            denied,
        ),
        ("sip:0900-123456;isub=12@pbx.example.test", denied),
        // +44 is allowed, +4490 is not: the longer prefix wins.
        ("sip:+44207946000@pbx.example.test", None),
        ("sip:0044207946000@pbx.example.test", None),
        // Under the `limit` on every international number, far from its rate.
        ("sip:+4930123456@pbx.example.test", None),
        // National, no rule.
        ("sip:030123456@pbx.example.test", None),
        // A name is no number: the rules do not apply.
        ("sip:alice@pbx.example.test", None),
    ];
    for (uri, expected) in cases {
        let before = expected.map(|reason| invites(&filter, reason));
        let passed = invites(&filter, Reason::PassRequest);
        let verdict = filter
            .test_run(&invite(uri, PHONE, None, false))
            .expect("test run");
        match expected {
            Some(reason) => {
                assert_eq!(verdict, XDP_DROP, "{uri}");
                assert_eq!(invites(&filter, reason), before.unwrap_or(0) + 1, "{uri}");
            }
            None => {
                assert_eq!(verdict, XDP_PASS, "{uri}");
                assert_eq!(invites(&filter, Reason::PassRequest), passed + 1, "{uri}");
            }
        }
    }
    // A re-INVITE (a To tag) belongs to a call already made: not denied.
    let reinvite = invite("sip:+4490123456@pbx.example.test", PHONE, None, true);
    assert_eq!(filter.test_run(&reinvite).expect("run"), XDP_PASS);
    let counters = destination_counters(&filter);
    assert_eq!(counters.invites, 14, "{counters:?}");
    // Nothing, a name, national, international.
    assert_eq!(counters.dialled, [0, 1, 2, 11], "{counters:?}");
    assert_eq!(counters.unmatched, 1, "{counters:?}");
    // Without credentials, each named its From user's account.
    assert_eq!(
        (
            counters.no_account,
            counters.from_accounts,
            counters.repeats
        ),
        (0, 14, 0),
        "{counters:?}"
    );
    // Other methods never meet the rules.
    let options = udp4_from(
        PHONE,
        SIP_PORT,
        &sip_request("OPTIONS", "sip:+4490123456@pbx.example.test", &[]),
    );
    assert_eq!(filter.test_run(&options).expect("run"), XDP_PASS);
    assert_eq!(destination_counters(&filter).invites, 14);
}

/// A `limit` rule meters new calls per minute per source and per account: a source
/// over it is cut, an account over it is cut from every source, others go on.
#[test]
fn destinations_limit_each_source_and_each_account() {
    if !privileged("destinations_limit_each_source_and_each_account") {
        return;
    }
    let mut filter = fresh();
    let rules = vec![rule(
        "+49",
        Action::Limit {
            calls_per_minute: 3,
        },
    )];
    filter
        .configure(&settings(rules, CallBudgets::default()))
        .expect("configured");
    let uri = "sip:+4930123456@pbx.example.test";
    // One source, no credentials: 3 pass, the 4th is cut.
    for call in 0..3 {
        let verdict = filter
            .test_run(&invite(uri, PHONE, None, false))
            .expect("run");
        assert_eq!(verdict, XDP_PASS, "call {call}");
    }
    assert_eq!(
        filter
            .test_run(&invite(uri, PHONE, None, false))
            .expect("run"),
        XDP_DROP
    );
    assert_eq!(invites(&filter, Reason::DropDestinationLimited), 1);
    // A national number is not under the rule.
    let national = invite("sip:030123456@pbx.example.test", PHONE, None, false);
    assert_eq!(filter.test_run(&national).expect("run"), XDP_PASS);
    // Account 1000 from a new source each time: cut at its 4th call, per account.
    for call in 0..3u8 {
        let source = [198, 18, 1, call];
        let verdict = filter
            .test_run(&invite(uri, source, Some("1000"), false))
            .expect("run");
        assert_eq!(verdict, XDP_PASS, "call {call}");
    }
    let fourth = invite(uri, [198, 18, 1, 3], Some("1000"), false);
    assert_eq!(filter.test_run(&fourth).expect("run"), XDP_DROP);
    // Another account, from a source of its own, calls on.
    let other = invite(uri, [198, 18, 2, 1], Some("1001"), false);
    assert_eq!(filter.test_run(&other).expect("run"), XDP_PASS);
    assert_eq!(invites(&filter, Reason::DropDestinationLimited), 2);
    // What `top --destinations` and the metrics read: the rule's calls and drops, by
    // source and by account.
    let report = DestinationReport::read(|name| filter.map(name), monotonic_now_ns())
        .expect("the report reads");
    let [german] = report.rules.as_slice() else {
        panic!("{:?}", report.rules);
    };
    assert_eq!(
        (
            german.prefix.as_str(),
            german.action(),
            german.calls,
            german.dropped
        ),
        ("+49", "limit", 9, 2)
    );
    let phone = report
        .callers
        .iter()
        .find(|(key, calls)| key.kind == CALLER_SOURCE && source_text(&calls.name) == "198.18.0.10")
        .map(|(_, calls)| (calls.calls, calls.dropped));
    assert_eq!(phone, Some((4, 1)));
    let account = report
        .callers
        .iter()
        .find(|(key, calls)| key.kind == CALLER_ACCOUNT && account_text(&calls.name) == "1000")
        .map(|(_, calls)| (calls.calls, calls.dropped));
    assert_eq!(account, Some((4, 1)));
}

/// Budgets: new calls per minute and per hour for each account, a lower one for
/// international numbers; a breach blocks the account's INVITEs from every source,
/// and only that account's.
#[test]
fn destinations_budgets_block_the_account_from_every_source() {
    if !privileged("destinations_budgets_block_the_account_from_every_source") {
        return;
    }
    let mut filter = fresh();
    let budgets = CallBudgets {
        per_minute: 5,
        per_hour: 0,
        limited_per_minute: 2,
        limited_per_hour: 0,
        block_seconds: 0,
    };
    filter
        .configure(&settings(Vec::new(), budgets))
        .expect("configured");
    let national = "sip:030123456@pbx.example.test";
    let international = "sip:+4930123456@pbx.example.test";
    // Account 2000, national calls: 5 pass, the 6th breaches.
    for call in 0..5u8 {
        let verdict = filter
            .test_run(&invite(national, [198, 18, 3, call], Some("2000"), false))
            .expect("run");
        assert_eq!(verdict, XDP_PASS, "call {call}");
    }
    let sixth = invite(national, [198, 18, 3, 5], Some("2000"), false);
    assert_eq!(filter.test_run(&sixth).expect("run"), XDP_DROP);
    // Blocked now, from any source, whatever it dials.
    let later = invite(national, [198, 18, 3, 99], Some("2000"), false);
    assert_eq!(filter.test_run(&later).expect("run"), XDP_DROP);
    let blocked = budget_of(&filter, "2000").expect("a budget for 2000");
    assert_eq!((blocked.breaches, blocked.drops), (1, 2), "{blocked:?}");
    assert!(blocked.blocked_until_ns > 0);
    // Account 2001, international: cut at its 3rd.
    for call in 0..2u8 {
        let verdict = filter
            .test_run(&invite(
                international,
                [198, 18, 4, call],
                Some("2001"),
                false,
            ))
            .expect("run");
        assert_eq!(verdict, XDP_PASS, "call {call}");
    }
    let third = invite(international, [198, 18, 4, 2], Some("2001"), false);
    assert_eq!(filter.test_run(&third).expect("run"), XDP_DROP);
    // Another account is unaffected; a withheld caller names no account.
    let other = invite(international, [198, 18, 4, 2], Some("2002"), false);
    assert_eq!(filter.test_run(&other).expect("run"), XDP_PASS);
    let anonymous = "\"Anonymous\" <sip:anonymous@anonymous.invalid>;tag=1";
    for call in ["anonymous-1", "anonymous-2", "anonymous-3"] {
        let withheld = call_invite(international, [198, 18, 4, 2], anonymous, None, call, 1);
        assert_eq!(filter.test_run(&withheld).expect("run"), XDP_PASS, "{call}");
    }
    assert_eq!(invites(&filter, Reason::DropCallBudget), 3);
    assert_eq!(destination_counters(&filter).budget_breaches, 2);

    // Per hour: a budget of 3 an hour cuts the 4th.
    let hourly = CallBudgets {
        per_hour: 3,
        ..CallBudgets::default()
    };
    filter
        .configure(&settings(Vec::new(), hourly))
        .expect("reconfigured");
    for call in 0..3u8 {
        let verdict = filter
            .test_run(&invite(national, [198, 18, 5, call], Some("3000"), false))
            .expect("run");
        assert_eq!(verdict, XDP_PASS, "call {call}");
    }
    let fourth = invite(national, [198, 18, 5, 3], Some("3000"), false);
    assert_eq!(filter.test_run(&fourth).expect("run"), XDP_DROP);
    // The reload kept 2000's block.
    assert_eq!(filter.test_run(&later).expect("run"), XDP_DROP);
}

/// A restart: the budgets are taken out, written, read back and restored into a fresh
/// filter (another hash seed). The blocked account stays blocked with its counts, the
/// other's minute meter goes on, and an account whose name filled the 32 bytes kept
/// (it may have been cut) is skipped.
#[test]
fn destinations_budgets_survive_a_restart() {
    if !privileged("destinations_budgets_survive_a_restart") {
        return;
    }
    let budgets = CallBudgets {
        per_minute: 5,
        ..CallBudgets::default()
    };
    let settings = settings(Vec::new(), budgets);
    let mut filter = fresh();
    filter.configure(&settings).expect("configured");
    let national = "sip:030123456@pbx.example.test";
    let call = |filter: &Filter, account: &str, source: u8| {
        filter
            .test_run(&invite(
                national,
                [198, 18, 6, source],
                Some(account),
                false,
            ))
            .expect("run")
    };
    let long = "a-very-long-account-name-of-40-bytes-xyz";
    for source in 0..5 {
        assert_eq!(call(&filter, "2000", source), XDP_PASS);
    }
    assert_eq!(call(&filter, "2000", 5), XDP_DROP, "2000 breaches");
    for source in 0..4 {
        assert_eq!(call(&filter, "2001", source), XDP_PASS);
    }
    for source in 0..6 {
        call(&filter, long, source);
    }

    let dir = std::env::temp_dir().join(format!("sip-filter-budgets-{}", std::process::id()));
    let path = dir.join(state::FILE_NAME);
    let taken = State::take(&StateMaps::of(&filter).expect("maps"), Clocks::now()).expect("taken");
    assert_eq!(taken.call_budgets.len(), 3, "{taken:?}");
    taken.save(&path).expect("saved");
    let saved = State::load(&path).expect("read").expect("there");
    std::fs::remove_dir_all(&dir).expect("removed");
    drop(filter);
    let mut after = fresh();
    after.configure(&settings).expect("configured");
    let restored = state::restore(&mut after, &saved, Clocks::now()).expect("restored");
    assert_eq!(
        (restored.call_budgets, restored.skipped),
        (2, 1),
        "{restored:?}"
    );

    let blocked = budget_of(&after, "2000").expect("2000's budget");
    assert_eq!((blocked.breaches, blocked.drops), (1, 1), "{blocked:?}");
    assert_eq!(call(&after, "2000", 9), XDP_DROP, "2000 is still blocked");
    // 2001 made 4 calls this minute: the 5th passes, the 6th breaches.
    assert_eq!(call(&after, "2001", 9), XDP_PASS);
    assert_eq!(call(&after, "2001", 9), XDP_DROP, "2001's meter went on");
}

/// Dry-run: every destination verdict is counted as made, and the INVITE passes.
#[test]
fn destinations_dry_run_counts_and_passes() {
    if !privileged("destinations_dry_run_counts_and_passes") {
        return;
    }
    let mut filter = fresh();
    let settings = Settings {
        dry_run: true,
        ..settings(
            vec![rule("+4490", Action::Deny)],
            CallBudgets {
                per_minute: 1,
                ..CallBudgets::default()
            },
        )
    };
    filter.configure(&settings).expect("configured");
    let denied = invite("sip:+4490123456@pbx.example.test", PHONE, None, false);
    assert_eq!(filter.test_run(&denied).expect("run"), XDP_PASS);
    assert_eq!(invites(&filter, Reason::DropDestinationDenied), 1);
    let national = "sip:030123456@pbx.example.test";
    for _ in 0..2 {
        let verdict = filter
            .test_run(&invite(national, PHONE, Some("4000"), false))
            .expect("run");
        assert_eq!(verdict, XDP_PASS);
    }
    assert_eq!(invites(&filter, Reason::DropCallBudget), 1);
}

/// A reload keeps a kept prefix's rule number (its counters and meters go on), drops a
/// removed rule, and turns everything off without the table.
#[test]
fn destinations_reload_keeps_kept_rules_and_removes_the_others() {
    if !privileged("destinations_reload_keeps_kept_rules_and_removes_the_others") {
        return;
    }
    let mut filter = fresh();
    let limit = Action::Limit {
        calls_per_minute: 1,
    };
    filter
        .configure(&settings(
            vec![rule("+4490", Action::Deny), rule("+49", limit)],
            CallBudgets::default(),
        ))
        .expect("configured");
    // A new call each time (a resent INVITE is no new call).
    let german = || invite("sip:+4930123456@pbx.example.test", PHONE, None, false);
    assert_eq!(filter.test_run(&german()).expect("run"), XDP_PASS);
    let uk = invite("sip:+4490123456@pbx.example.test", PHONE, None, false);
    assert_eq!(filter.test_run(&uk).expect("run"), XDP_DROP);
    let before = sip_filter::destinations::loaded_rules(&filter).expect("rules");
    // Reloaded with a rule before it: +49 keeps its number, so its meter is still full.
    filter
        .configure(&settings(
            vec![rule("+33", Action::Deny), rule("+49", limit)],
            CallBudgets::default(),
        ))
        .expect("reloaded");
    let after = sip_filter::destinations::loaded_rules(&filter).expect("rules");
    assert_eq!(before["+49"].id, after["+49"].id);
    assert!(!after.contains_key("+4490"));
    assert_eq!(filter.test_run(&german()).expect("run"), XDP_DROP);
    assert_eq!(filter.test_run(&uk).expect("run"), XDP_PASS);
    // +33 took the number +4490 left: it inherits neither its counts nor its callers.
    assert_eq!(after["+33"].id, before["+4490"].id);
    let report = DestinationReport::read(|name| filter.map(name), monotonic_now_ns())
        .expect("the report reads");
    let french = report
        .rules
        .iter()
        .find(|rule| rule.prefix == "+33")
        .expect("+33");
    assert_eq!((french.calls, french.dropped), (0, 0));
    assert!(!report
        .callers
        .iter()
        .any(|(key, _)| key.rule == french.rule.id));
    // Without the table: no rule left, nothing applies.
    filter
        .configure(&Settings {
            allow_hostless_uri: true,
            ..verdict_settings()
        })
        .expect("reloaded");
    assert!(sip_filter::destinations::loaded_rules(&filter)
        .expect("rules")
        .is_empty());
    assert_eq!(filter.test_run(&german()).expect("run"), XDP_PASS);
}

/// Without credentials, the account is the From user (a trunk's or an IP-authenticated
/// PBX's INVITEs): its budget applies, and is the same account its digest username
/// names. With credentials, the digest username wins over the From user. A From
/// without a user, or a withheld caller's, names no account; a `tel:` From names its
/// number.
#[test]
fn destinations_account_is_the_from_user_without_credentials() {
    if !privileged("destinations_account_is_the_from_user_without_credentials") {
        return;
    }
    let mut filter = fresh();
    let budgets = CallBudgets {
        per_minute: 2,
        ..CallBudgets::default()
    };
    filter
        .configure(&settings(Vec::new(), budgets))
        .expect("configured");
    let national = "sip:030123456@pbx.example.test";
    let from = |user: &str| format!("\"Front <desk>\" <sips:{user}@pbx.example.test>;tag=f1");
    let mut calls = 0;
    let mut call = |source: u8, from: &str, account: Option<&str>| {
        calls += 1;
        let call_id = format!("from-{calls}");
        let request = call_invite(national, [198, 18, 7, source], from, account, &call_id, 1);
        filter.test_run(&request).expect("run")
    };
    // 3100 without credentials, from three sources: cut at its 3rd call.
    assert_eq!(call(1, &from("3100"), None), XDP_PASS);
    assert_eq!(call(2, &from("3100"), None), XDP_PASS);
    assert_eq!(call(3, &from("3100"), None), XDP_DROP, "3100's budget");
    // The digest username 3100 is the same account: blocked.
    assert_eq!(call(4, &from("someone"), Some("3100")), XDP_DROP);
    // The digest username wins: 3101 calling as From 3100 is 3101.
    assert_eq!(call(5, &from("3100"), Some("3101")), XDP_PASS);
    // A tel: From names its number, which has a budget of its own.
    for source in 6..8 {
        assert_eq!(call(source, "<tel:+4930555;isub=1>;tag=t", None), XDP_PASS);
    }
    assert_eq!(call(8, "<tel:+4930555>;tag=t", None), XDP_DROP, "+4930555");
    // No user, or a withheld caller: no account, no budget.
    for source in 9..12 {
        assert_eq!(call(source, "<sip:pbx.example.test>;tag=h", None), XDP_PASS);
        let withheld = "\"Anonymous\" <sip:anonymous@anonymous.invalid>;tag=a";
        assert_eq!(call(source, withheld, None), XDP_PASS);
    }
    let blocked = budget_of(&filter, "3100").expect("3100's budget");
    assert_eq!((blocked.breaches, blocked.drops), (1, 2), "{blocked:?}");
    assert_eq!(budget_of(&filter, "3101").map(|b| b.minute_calls), Some(1));
    assert!(budget_of(&filter, "+4930555").is_some_and(|b| b.breaches == 1));
    assert!(budget_of(&filter, "anonymous").is_none());
    let counters = destination_counters(&filter);
    assert_eq!(
        (counters.from_accounts, counters.no_account),
        (6, 6),
        "{counters:?}"
    );
}

/// A challenged call (an INVITE without credentials, the server's 407, the INVITE
/// resent with credentials and a higher CSeq) is one new call to the per-source
/// `limit` meter and to the account's budget, however often each INVITE is
/// retransmitted; two Call-IDs are two calls, and a third INVITE of the same call with
/// credentials again is a new one. When the digest username differs from the From
/// user, each account is charged the call once.
#[test]
fn destinations_a_challenged_call_counts_once() {
    if !privileged("destinations_a_challenged_call_counts_once") {
        return;
    }
    let mut filter = fresh();
    let rules = vec![rule(
        "+49",
        Action::Limit {
            calls_per_minute: 2,
        },
    )];
    let budgets = CallBudgets {
        per_minute: 3,
        ..CallBudgets::default()
    };
    filter
        .configure(&settings(rules, budgets))
        .expect("configured");
    let german = "sip:+4930123456@pbx.example.test";
    let from_1000 = "\"Desk\" <sip:1000@pbx.example.test>;tag=d1";
    let run = |request: &[u8]| filter.test_run(request).expect("run");
    // Each INVITE twice: the retransmission counts nothing.
    let challenged_call = |call_id: &str| {
        let first = call_invite(german, PHONE, from_1000, None, call_id, 1);
        let resent = call_invite(german, PHONE, from_1000, Some("1000"), call_id, 2);
        [run(&first), run(&first), run(&resent), run(&resent)]
    };
    assert_eq!(challenged_call("call-a"), [XDP_PASS; 4]);
    assert_eq!(challenged_call("call-b"), [XDP_PASS; 4]);
    // The source's third call is over the rule's 2 a minute.
    let third = call_invite(german, PHONE, from_1000, None, "call-c", 1);
    assert_eq!(run(&third), XDP_DROP);
    assert_eq!(invites(&filter, Reason::DropDestinationLimited), 1);
    // The budget counted two calls (the rule cut the third before it).
    let budget = budget_of(&filter, "1000").expect("1000's budget");
    assert_eq!((budget.minute_calls, budget.breaches), (2, 0), "{budget:?}");
    let counters = destination_counters(&filter);
    assert_eq!(counters.repeats, 6, "{counters:?}");

    // Another source, a national number (no rule): credentials again on the same call
    // (CSeq 3) is a new call, or a sender could reuse one Call-ID for all its calls.
    let source = [198, 18, 8, 1];
    let national = "sip:030123456@pbx.example.test";
    let first = call_invite(national, source, from_1000, Some("1000"), "call-d", 1);
    let again = call_invite(national, source, from_1000, Some("1000"), "call-d", 3);
    assert_eq!(run(&first), XDP_PASS, "1000's 3rd call");
    assert_eq!(
        run(&again),
        XDP_DROP,
        "1000's 4th call breaches its 3 a minute"
    );
    let budget = budget_of(&filter, "1000").expect("1000's budget");
    assert_eq!(budget.breaches, 1, "{budget:?}");

    // From user 2000, digest username 2001: one call to each.
    let source = [198, 18, 8, 2];
    let from_2000 = "<sip:2000@pbx.example.test>;tag=e1";
    let first = call_invite(german, source, from_2000, None, "call-e", 1);
    let resent = call_invite(german, source, from_2000, Some("2001"), "call-e", 2);
    assert_eq!([run(&first), run(&resent), run(&resent)], [XDP_PASS; 3]);
    for account in ["2000", "2001"] {
        let budget = budget_of(&filter, account).expect("a budget");
        assert_eq!(budget.minute_calls, 1, "{account}: {budget:?}");
    }
    let report = DestinationReport::read(|name| filter.map(name), monotonic_now_ns())
        .expect("the report reads");
    let calls_of = |kind, name: &str| {
        report
            .callers
            .iter()
            .find(|(key, calls)| {
                key.kind == kind
                    && if kind == CALLER_SOURCE {
                        source_text(&calls.name) == name
                    } else {
                        account_text(&calls.name) == name
                    }
            })
            .map(|(_, calls)| calls.calls)
    };
    assert_eq!(calls_of(CALLER_SOURCE, "198.18.8.2"), Some(1));
    assert_eq!(calls_of(CALLER_ACCOUNT, "2000"), Some(1));
    assert_eq!(calls_of(CALLER_ACCOUNT, "2001"), Some(1));
}

/// Budgets switched off: a restart restores none of the saved budgets (an account
/// blocked before it is not blocked by a rule switched off since), and a reload that
/// switches them off forgets every account's budget and block at once.
#[test]
fn destinations_budgets_off_restore_nothing_and_free_the_blocked() {
    if !privileged("destinations_budgets_off_restore_nothing_and_free_the_blocked") {
        return;
    }
    let on = settings(
        Vec::new(),
        CallBudgets {
            per_minute: 1,
            ..CallBudgets::default()
        },
    );
    let off = settings(Vec::new(), CallBudgets::default());
    let national = "sip:030123456@pbx.example.test";
    let call = |filter: &Filter| {
        filter
            .test_run(&invite(national, PHONE, Some("5000"), false))
            .expect("run")
    };
    let mut filter = fresh();
    filter.configure(&on).expect("configured");
    assert_eq!(call(&filter), XDP_PASS);
    assert_eq!(call(&filter), XDP_DROP, "5000 breaches");
    let saved = State::take(&StateMaps::of(&filter).expect("maps"), Clocks::now()).expect("taken");
    assert_eq!(saved.call_budgets.len(), 1, "{saved:?}");

    // A restart with budgets off: nothing restored, and said so.
    let mut after = fresh();
    after.configure(&off).expect("configured");
    let restored = state::restore(&mut after, &saved, Clocks::now()).expect("restored");
    assert_eq!(
        (restored.call_budgets, restored.call_budgets_off),
        (0, 1),
        "{restored:?}"
    );
    assert!(budget_of(&after, "5000").is_none());
    // Budgets on again: 5000 starts afresh.
    after.configure(&on).expect("reloaded");
    assert_eq!(call(&after), XDP_PASS);
    drop(after);

    // A reload that turns budgets off frees the blocked account at once.
    assert!(budget_of(&filter, "5000").is_some_and(|b| b.blocked_until_ns > 0));
    filter.configure(&off).expect("reloaded");
    assert!(budget_of(&filter, "5000").is_none());
    assert_eq!(call(&filter), XDP_PASS);
    assert!(
        DestinationReport::read(|name| filter.map(name), monotonic_now_ns())
            .expect("the report reads")
            .blocked
            .is_empty()
    );
    // On again: not blocked until it breaches anew.
    filter.configure(&on).expect("reloaded");
    assert_eq!(call(&filter), XDP_PASS);
    assert_eq!(call(&filter), XDP_DROP);
}
