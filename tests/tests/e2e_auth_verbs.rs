//! End to end, in network namespaces, on a running daemon from another process: what
//! the filter learnt from the server's answers (issue 13) as the operator sees it.
//! `auth registered`, `auth locked` and `auth unlock`, `status` and `explain`; a restart
//! and a crash keep the registrations and lockouts (the state file, the pinned maps), a
//! crash the call-budget blocks too.
//! The entries are written into the daemon's pinned maps as the egress program writes
//! them (its classification and the lockouts it makes are answers_test_run.rs's); and,
//! from real answers, Kamailio's registrations and re-challenges as the verbs show them.
//!
//! Needs root and the test tools (`cargo xtask setup --test-tools`: kamailio, sipp).

use std::net::IpAddr;

use serde_json::Value;
use sip_filter::{
    bpf_sys,
    filter::{monotonic_now_ns, open_pinned, pinned_config, source_key},
    learnt::PinnedLearnt,
};
use sip_filter_common::{
    maps::{destination_names, AccountKey, CallBudget, Lockout, Registration, MINUTE_NS},
    sip::pairing::{Account, ACCOUNT_WORDS},
};
use sip_filter_tests::{
    auth_lab::{
        accounts, brute_force, register, wrong_passwords, AuthLab, Client, Deployment, Pace,
        Registrar,
    },
    lab::{
        assert_error_line, assert_one_error_line, json_array, json_output, require_tools,
        sip_filter, verb, LabFixture, PinRoot, Transcript, DOMAIN, KAMAILIO_TOOLS, QUICK,
    },
    netns::{Lab, CLIENT_V4, LEGIT_CLIENT_V4, SIGKILL},
    privileged,
};

/// The name words the kernel keeps for `name`.
fn account(name: &str) -> [u64; ACCOUNT_WORDS] {
    let mut words = [0u64; ACCOUNT_WORDS];
    for (word, chunk) in words.iter_mut().zip(name.as_bytes().chunks(8)) {
        let mut bytes = [0u8; 8];
        bytes[..chunk.len()].copy_from_slice(chunk);
        *word = u64::from_le_bytes(bytes);
    }
    words
}

/// A lockout of `name` until `minutes` from now, as the egress program leaves it.
fn lockout(name: &str, source: Option<IpAddr>, minutes: u64, failures: u32) -> Lockout {
    let now = monotonic_now_ns();
    Lockout {
        window_ns: now,
        locked_until_ns: now + minutes * MINUTE_NS,
        failures,
        drops: 2,
        name: account(name),
        source: source.map_or([0; 16], |address| source_key(address, 128)),
    }
}

/// `name`'s key in the running daemon's maps (hashed with its seed).
fn account_key(pins: &PinRoot, name: &str) -> u64 {
    let seed = pinned_config(&pins.maps_dir()).expect("config").domain_seed;
    Account::key_of_name(&account(name), seed).expect("a short name")
}

/// Registers `LEGIT_CLIENT_V4` (as phone-100, for an hour), locks alice for
/// `CLIENT_V4` and bob for every unregistered source, in the pinned maps.
fn learn(pins: &PinRoot) {
    let dir = pins.maps_dir();
    let key = |name: &str| account_key(pins, name);
    let (phone, guesser): (IpAddr, IpAddr) = (
        LEGIT_CLIENT_V4.parse().expect("an address"),
        CLIENT_V4.parse().expect("an address"),
    );
    let learnt = PinnedLearnt::open(&dir).expect("the maps are pinned");
    let written = learnt
        .maps()
        .put(
            &[(
                source_key(phone, 64),
                Registration {
                    expires_ns: monotonic_now_ns() + 60 * MINUTE_NS,
                    account: account("phone-100"),
                    source: source_key(phone, 128),
                },
            )],
            &[(
                AccountKey {
                    source: source_key(guesser, 64),
                    account: key("alice"),
                },
                lockout("alice", Some(guesser), 10, 5),
            )],
            &[(key("bob"), lockout("bob", None, 15, 20))],
        )
        .expect("written");
    assert_eq!(written, (1, 1, 1));
}

/// `sip-filter ARGS --json`'s array.
fn rows(transcript: &mut Transcript, lab: &Lab, pins: &PinRoot, args: &[&str]) -> Vec<Value> {
    let mut all = args.to_vec();
    all.push("--json");
    json_array(&transcript.keep(&all.join(" "), verb(lab, pins, &all, QUICK)))
}

fn seconds_left(row: &Value) -> u64 {
    row["seconds_left"]
        .as_u64()
        .unwrap_or_else(|| panic!("no seconds_left: {row}"))
}

/// What `auth registered` and `auth locked` list: the phone, alice for the guesser and
/// bob everywhere (then `more_locked` others).
fn assert_listed(transcript: &mut Transcript, lab: &Lab, pins: &PinRoot, more_locked: usize) {
    let registered = rows(transcript, lab, pins, &["auth", "registered"]);
    assert_eq!(registered.len(), 1, "{registered:?}");
    assert_eq!(registered[0]["address"], LEGIT_CLIENT_V4);
    assert_eq!(registered[0]["account"], "phone-100");
    assert!((3000..=3600).contains(&seconds_left(&registered[0])));
    let locked = rows(transcript, lab, pins, &["auth", "locked"]);
    assert_eq!(locked.len(), 2 + more_locked, "{locked:?}");
    assert_eq!(locked[0]["account"], "alice");
    assert_eq!(locked[0]["source"], CLIENT_V4);
    assert_eq!(locked[0]["failures"], 5);
    assert_eq!(locked[0]["drops"], 2);
    assert!((400..=600).contains(&seconds_left(&locked[0])));
    assert_eq!(locked[1]["account"], "bob");
    assert_eq!(locked[1]["source"], Value::Null);
    assert!((700..=900).contains(&seconds_left(&locked[1])));
}

#[test]
fn auth_verbs_status_explain_and_a_restart() {
    if !privileged("auth_verbs_status_explain_and_a_restart") {
        return;
    }
    let mut rig = LabFixture::start("e2e-auth-verbs", KAMAILIO_TOOLS);
    // Call budgets on: a restart or a crash keeps an account's block only while they
    // are (one with every budget off forgets them: destinations_test_run.rs).
    let config = format!(
        "[filter]\ndomains = [\"{DOMAIN}\"]\n\n[daemon]\nsave_interval = \"1h\"\n\n\
         [destinations]\naccount_calls_per_minute = 10\n"
    );
    let mut daemon = rig.start_filter_with(&config);
    let (lab, pins) = (&rig.lab, &rig.pins);

    // Nothing learnt yet.
    let none = rig.transcript.verb_ok(lab, pins, &["auth", "locked"]);
    assert!(none.stdout.contains("no locked accounts on"), "{none}");
    assert!(rows(&mut rig.transcript, lab, pins, &["auth", "registered"]).is_empty());

    learn(pins);
    assert_listed(&mut rig.transcript, lab, pins, 0);
    let text = rig.transcript.verb_ok(lab, pins, &["auth", "locked"]);
    assert!(text.stdout.starts_with("ACCOUNT"), "{text}");
    assert!(text.stdout.contains("every unregistered source"), "{text}");
    let text = rig.transcript.verb_ok(lab, pins, &["auth", "registered"]);
    assert!(text.stdout.contains("phone-100"), "{text}");

    // status counts them.
    let status = json_output(&rig.transcript.verb_ok(lab, pins, &["status", "--json"]));
    assert_eq!(status["auth"]["registered"], 1, "{status}");
    assert_eq!(status["auth"]["locked_for_source"], 1, "{status}");
    assert_eq!(status["auth"]["locked_everywhere"], 1, "{status}");
    let text = rig.transcript.verb_ok(lab, pins, &["status"]);
    assert!(
        text.stdout.contains(
            "auth:        1 registered source(s); 1 account(s) locked for one source, 1 for every unregistered source"
        ),
        "{text}"
    );

    // explain: the guesser has alice locked, and bob (it is not registered); the phone
    // is registered, so bob's lockout does not apply to it.
    let guesser = json_output(&rig.transcript.verb_ok(
        lab,
        pins,
        &["explain", CLIENT_V4, "--json"],
    ));
    assert_eq!(guesser["registered"], Value::Null, "{guesser}");
    let locked: Vec<(&str, &Value)> = guesser["locked"]
        .as_array()
        .unwrap_or_else(|| panic!("{guesser}"))
        .iter()
        .map(|row| (row["account"].as_str().unwrap_or(""), &row["source"]))
        .collect();
    assert_eq!(
        locked,
        [("alice", &Value::from(CLIENT_V4)), ("bob", &Value::Null)],
        "{guesser}"
    );
    let text = rig.transcript.verb_ok(lab, pins, &["explain", CLIENT_V4]);
    assert!(text.stdout.contains("registered: no"), "{text}");
    assert!(
        text.stdout
            .contains("locked accounts: alice (for this source, 5 failures, 2 drops, "),
        "{text}"
    );
    let phone = json_output(&rig.transcript.verb_ok(
        lab,
        pins,
        &["explain", LEGIT_CLIENT_V4, "--json"],
    ));
    assert_eq!(phone["registered"]["account"], "phone-100", "{phone}");
    assert_eq!(phone["locked"], Value::Array(Vec::new()), "{phone}");

    // A restart keeps them (the state file), keyed under the new daemon's seed...
    rig.stop_filter(&mut daemon);
    let mut daemon = rig.start_filter_with(&config);
    assert_listed(&mut rig.transcript, &rig.lab, &rig.pins, 0);
    // ...and so does a crash: the next daemon takes them over from the pinned maps,
    // carol's lockout too, which no state file holds (the next save is an hour away),
    // and dave's call-budget block (issue 18).
    let carol = account_key(&rig.pins, "carol");
    PinnedLearnt::open(&rig.pins.maps_dir())
        .expect("the maps are pinned")
        .maps()
        .put(&[], &[], &[(carol, lockout("carol", None, 15, 20))])
        .expect("written");
    let budgets = open_pinned(&rig.pins.maps_dir(), destination_names::BUDGETS).expect("pinned");
    let dave = CallBudget {
        blocked_until_ns: monotonic_now_ns() + 10 * MINUTE_NS,
        breaches: 1,
        drops: 3,
        name: account("dave"),
        ..CallBudget::default()
    };
    let written = bpf_sys::hash_or_trie(&budgets)
        .map(|data| bpf_sys::update_many(data, &[account_key(&rig.pins, "dave")], &[dave]));
    assert!(matches!(written, Some(Ok(1))), "{written:?}");
    daemon.signal(SIGKILL);
    daemon.wait(QUICK).expect("killed");
    let mut daemon = rig.start_filter_with(&config);
    let (lab, pins) = (&rig.lab, &rig.pins);
    assert_listed(&mut rig.transcript, lab, pins, 1);
    let top = json_output(
        &rig.transcript
            .verb_ok(lab, pins, &["top", "--destinations", "--json"]),
    );
    let blocked = &top["blocked_accounts"][0];
    assert_eq!(
        (&blocked["account"], &blocked["drops"]),
        (&Value::from("dave"), &Value::from(3)),
        "{top}"
    );
    let carol = rig
        .transcript
        .verb_ok(lab, pins, &["auth", "unlock", "carol"]);
    assert!(carol.stdout.contains("1 lockout(s) lifted"), "{carol}");

    // Unlocking.
    let other = rig.transcript.verb_ok(
        lab,
        pins,
        &["auth", "unlock", "alice", "--source", "192.0.2.9"],
    );
    assert!(
        other.stdout.contains("alice was not locked for 192.0.2.9"),
        "{other}"
    );
    let alice = rig.transcript.verb_ok(
        lab,
        pins,
        &["auth", "unlock", "alice", "--source", CLIENT_V4],
    );
    assert!(
        alice
            .stdout
            .contains(&format!("unlocked alice for {CLIENT_V4} on ")),
        "{alice}"
    );
    assert!(alice.stdout.contains("1 lockout(s) lifted"), "{alice}");
    let bob = rig
        .transcript
        .verb_ok(lab, pins, &["auth", "unlock", "bob"]);
    assert!(
        bob.stdout.contains("unlocked bob for any source on "),
        "{bob}"
    );
    assert!(rows(&mut rig.transcript, lab, pins, &["auth", "locked"]).is_empty());
    let status = json_output(&rig.transcript.verb_ok(lab, pins, &["status", "--json"]));
    assert_eq!(status["auth"]["locked_for_source"], 0, "{status}");
    assert_eq!(status["auth"]["registered"], 1, "{status}");

    // Wrong input: one line, exit 2.
    let refused = rig.transcript.keep(
        "auth unlock --source nonsense",
        verb(
            lab,
            pins,
            &["auth", "unlock", "alice", "--source", "nonsense"],
            QUICK,
        ),
    );
    assert_one_error_line(&refused, "not an IPv4 or IPv6 address");

    rig.stop_filter(&mut daemon);
    for args in [
        ["auth", "locked"].as_slice(),
        &["auth", "registered"],
        &["auth", "unlock", "alice"],
    ] {
        let none = rig.transcript.keep(
            &format!("{}, no filter", args.join(" ")),
            verb(&rig.lab, &rig.pins, args, QUICK),
        );
        assert_error_line(&none, 3, "no filter is loaded");
    }
    rig.tear_down([daemon]);
}

/// `sip-filter ARGS --json` on the lab's filter, where it runs; its array.
fn lab_rows(lab: &AuthLab, args: &[&str]) -> Vec<Value> {
    let (ns, _) = lab.filter_place();
    let mut all = args.to_vec();
    all.extend(["--json", "--pin-root", lab.pins.arg()]);
    json_array(&ns.run(sip_filter(), &all, QUICK))
}

/// From real answers: Kamailio's digest authentication registers an office's phones and
/// re-challenges a guesser's wrong passwords; the egress program learns both, and the
/// verbs show it (the office registered; the guessed account locked for the guesser).
#[test]
fn what_kamailio_answered_shows_in_the_auth_verbs() {
    if !privileged("what_kamailio_answered_shows_in_the_auth_verbs") {
        return;
    }
    require_tools(&[KAMAILIO_TOOLS, &["sipp"]].concat()).unwrap_or_else(|e| panic!("{e:#}"));
    let registrar = Registrar::new(accounts(1000, 4));
    let lab = AuthLab::start(Deployment::FilteredHost, &registrar, "e2e-auth-verbs-lab")
        .unwrap_or_else(|e| panic!("{e:#}"));
    // The built-in answers rules (5 failures lock an account for a source, 10 ban it);
    // REGISTERs limited above the guesser's pace, so that only the answers stop it.
    let (mut daemon, _) = lab
        .start_filter(
            sip_filter(),
            &lab.filter_config("[rate_limit.register]\nrate = 50\nburst = 200\n"),
        )
        .unwrap_or_else(|e| panic!("{e:#}"));
    let office = register(&lab, Client::Office, "office", &accounts(1000, 3), None);
    assert_eq!(
        (office.successful, office.failed),
        (3, 0),
        "{}",
        office.finished
    );
    // Seven wrong passwords: five fail at Kamailio and lock 1003 for the guesser, the
    // rest are dropped (or were in flight); not enough to ban it.
    let guesses = brute_force(
        &lab,
        Client::Attacker,
        "1003",
        &wrong_passwords(7),
        Pace::per_second(5),
    );
    assert_eq!(guesses.accepted, 0, "{guesses}");

    let (_, office_v4) = lab.client(Client::Office);
    let (_, attacker_v4) = lab.client(Client::Attacker);
    let registered = lab_rows(&lab, &["auth", "registered"]);
    assert_eq!(registered.len(), 1, "{registered:?}");
    assert_eq!(registered[0]["address"], office_v4.as_str());
    assert!(
        ["1000", "1001", "1002"].contains(&registered[0]["account"].as_str().unwrap_or("")),
        "{registered:?}"
    );
    let locked = lab_rows(&lab, &["auth", "locked"]);
    assert_eq!(locked.len(), 1, "{locked:?}");
    assert_eq!(locked[0]["account"], "1003");
    assert_eq!(locked[0]["source"], attacker_v4.as_str());
    let status = lab
        .filter_stats(sip_filter())
        .unwrap_or_else(|e| panic!("{e:#}"));
    println!("filter stats: {status}");

    let (ns, _) = lab.filter_place();
    let unlocked = ns.run(
        sip_filter(),
        &["auth", "unlock", "1003", "--pin-root", lab.pins.arg()],
        QUICK,
    );
    assert!(unlocked.success(), "{unlocked}");
    assert!(
        unlocked.stdout.contains("1 lockout(s) lifted"),
        "{unlocked}"
    );
    assert!(lab_rows(&lab, &["auth", "locked"]).is_empty());
    lab.stop_filter(&mut daemon)
        .unwrap_or_else(|e| panic!("{e:#}"));
}
