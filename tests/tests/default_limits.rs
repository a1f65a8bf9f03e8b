//! The rate limits a new operator gets (the built-in defaults, and the shipped example
//! configuration) against what real SIP traffic does: replayed closed-loop through the
//! real program (`Replayer`, what `sip-filter replay` runs), in real time, since the
//! buckets, windows and bans run on the kernel's clock.
//!
//! Closed loop: every request is a UDP transaction as RFC 3261 (17.1.2) runs it. A
//! request the filter passes is answered after [`ANSWER_DELAY`], and the user agent's next
//! request follows; a dropped one is retransmitted by timer E (500 ms, doubling to 4 s)
//! until timer F (32 s) gives up. Three kinds of traffic:
//! - an office of 50 phones behind one NAT address, cold-booting all at once and within
//!   2 s (REGISTER, the answer to the 401 challenge, then 5 BLF SUBSCRIBEs each), and
//!   re-registering
//!   within 10 s (REGISTER and the answer to the challenge): every phone must be
//!   registered within 30 s, and the address never banned;
//! - a PBX on an allow-listed trunk address qualifying 2,000 extensions with OPTIONS
//!   within a second: never banned, every OPTIONS through within its transaction;
//! - a REGISTER flood from one address, 1,000/s for 2 s (open loop: a flood does not
//!   wait for answers): cut to a small fraction.
//!
//! Timing: every follow-up is scheduled from when its request was actually judged, as a
//! phone's timers start when it sends, so a busy machine only makes the traffic slower
//! (gentler on the filter), never burstier. The bounds have wide slack: 30 s for an
//! office that needs about 2.

use std::{
    cmp::Reverse,
    collections::BinaryHeap,
    net::{IpAddr, Ipv4Addr},
    path::Path,
    time::{Duration, Instant},
};

use ipnet::IpNet;
use sip_filter::{
    config,
    filter::key_to_string,
    replay::{Action, Replayer},
    Capacities, Filter, Settings,
};
use sip_filter_tests::{
    packets::{
        crlf_keepalive, sip_request, sip_response, stun_binding_request, udp4_from, SIP_PORT,
    },
    privileged,
};

const DOMAIN: &str = "pbx.example.test";
const OFFICE: [u8; 4] = [198, 18, 0, 50];
const TRUNK: [u8; 4] = [198, 18, 0, 60];
const FLOODER: [u8; 4] = [198, 18, 0, 66];
const STUN_FLOODER: [u8; 4] = [198, 18, 0, 67];
const PHONES: usize = 50;
const EXTENSIONS: usize = 2000;

/// RFC 3261's T1 (timer E's first interval), T2 (its cap) and timer F (64 T1).
const T1: Duration = Duration::from_millis(500);
const T2: Duration = Duration::from_secs(4);
const TIMER_F: Duration = Duration::from_secs(32);
/// How long the server takes to answer a request that reached it.
const ANSWER_DELAY: Duration = Duration::from_millis(20);
/// What the office must manage in: a phone that takes longer shows as unregistered.
const OFFICE_DEADLINE: Duration = Duration::from_secs(30);
/// The most of the flood that may pass: "a small fraction" of 2,000.
const FLOOD_PASSED_AT_MOST: usize = 200;

/// One request a user agent sends, and resends until it passes or timer F fires.
#[derive(Clone)]
struct Request {
    method: &'static str,
    uri: String,
    /// Headers that make it this request (credentials, Event).
    headers: Vec<String>,
}

/// A user agent: requests in steps; a step's requests go together, the next step once
/// all of them are answered (REGISTER, then its answer to the challenge, then the
/// SUBSCRIBEs).
struct Agent {
    source: [u8; 4],
    steps: Vec<Vec<Request>>,
    starts_after: Duration,
}

/// How a closed-loop run went, per agent and in all.
#[derive(Debug, Default)]
struct Outcome {
    /// When each agent's last step was answered, from the start of the run.
    finished: Vec<Option<Duration>>,
    /// When each agent's second step (for phones: the REGISTER with credentials) passed.
    registered: Vec<Option<Duration>>,
    sent: usize,
    dropped: usize,
    /// Transactions that timer F ended.
    timed_out: usize,
    /// Sources banned at the end, as the filter prints them.
    banned: Vec<String>,
}

impl Outcome {
    fn count(times: &[Option<Duration>]) -> usize {
        times.iter().filter(|t| t.is_some()).count()
    }

    fn last(times: &[Option<Duration>]) -> Option<Duration> {
        times.iter().flatten().max().copied()
    }
}

/// A transaction in flight: whose, which request, when first sent, sends so far.
struct Transaction {
    agent: usize,
    step: usize,
    request: usize,
    first_sent: Option<Instant>,
    sends: u32,
}

/// The filter, loaded and configured with `settings`, ready to judge frames.
fn replayer(settings: &Settings) -> Replayer {
    let mut filter = Filter::load_with(Capacities {
        tracked_sources: settings.tracked_sources,
    })
    .expect("the program loads");
    filter.configure(settings).expect("configured");
    Replayer::new(filter).expect("a replayer")
}

/// Whether the program passes `request` from `source`, judged now.
fn passes(replayer: &mut Replayer, source: [u8; 4], request: &Request) -> bool {
    let headers: Vec<&str> = request.headers.iter().map(String::as_str).collect();
    let frame = udp4_from(
        source,
        SIP_PORT,
        &sip_request(request.method, &request.uri, &headers),
    );
    let verdict = replayer
        .judge(&frame)
        .expect("the program runs")
        .expect("the frame is judged");
    match verdict.action {
        Action::Pass => true,
        Action::Drop => false,
        Action::Other(action) => panic!("XDP action {action}"),
    }
}

fn banned(replayer: &Replayer, settings: &Settings) -> Vec<String> {
    let bans = replayer.filter().bans().expect("the bans are read");
    bans.into_iter()
        .map(|(key, _)| key_to_string(key, u32::from(settings.ipv6_prefix)))
        .collect()
}

/// Runs `agents` closed-loop through a fresh filter configured with `settings`, in
/// real time, until every transaction has passed or timed out.
fn closed_loop(settings: &Settings, agents: &[Agent]) -> Outcome {
    let mut replayer = replayer(settings);
    let mut outcome = Outcome {
        finished: vec![None; agents.len()],
        registered: vec![None; agents.len()],
        ..Outcome::default()
    };
    let mut transactions: Vec<Transaction> = Vec::new();
    // Due time, then the transaction's index: the earliest first.
    let mut due: BinaryHeap<Reverse<(Instant, usize)>> = BinaryHeap::new();
    // Requests of each agent's current step still unanswered.
    let mut pending: Vec<usize> = vec![0; agents.len()];
    let started = Instant::now();
    let start_step = |agent: usize,
                      step: usize,
                      at: Instant,
                      transactions: &mut Vec<Transaction>,
                      due: &mut BinaryHeap<Reverse<(Instant, usize)>>,
                      pending: &mut Vec<usize>| {
        pending[agent] = agents[agent].steps[step].len();
        for request in 0..agents[agent].steps[step].len() {
            due.push(Reverse((at, transactions.len())));
            transactions.push(Transaction {
                agent,
                step,
                request,
                first_sent: None,
                sends: 0,
            });
        }
    };
    for (index, agent) in agents.iter().enumerate() {
        start_step(
            index,
            0,
            started + agent.starts_after,
            &mut transactions,
            &mut due,
            &mut pending,
        );
    }
    while let Some(Reverse((at, index))) = due.pop() {
        if let Some(wait) = at.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let now = Instant::now();
        let transaction = &mut transactions[index];
        let agent = &agents[transaction.agent];
        let request = &agent.steps[transaction.step][transaction.request];
        let first_sent = *transaction.first_sent.get_or_insert(now);
        transaction.sends += 1;
        outcome.sent += 1;
        if passes(&mut replayer, agent.source, request) {
            let (who, step) = (transaction.agent, transaction.step);
            pending[who] -= 1;
            if pending[who] > 0 {
                continue;
            }
            let answered = now + ANSWER_DELAY - started;
            if step == 1 {
                outcome.registered[who] = Some(answered);
            }
            if step + 1 < agent.steps.len() {
                start_step(
                    who,
                    step + 1,
                    now + ANSWER_DELAY,
                    &mut transactions,
                    &mut due,
                    &mut pending,
                );
            } else {
                outcome.finished[who] = Some(answered);
            }
        } else {
            outcome.dropped += 1;
            // Timer E: T1, doubling with every send, at most T2.
            let interval = (T1 * 2u32.pow(transaction.sends.min(4) - 1)).min(T2);
            let next = now + interval;
            if next - first_sent < TIMER_F {
                due.push(Reverse((next, index)));
            } else {
                outcome.timed_out += 1;
            }
        }
    }
    outcome.banned = banned(&replayer, settings);
    outcome
}

fn register(phone: usize, with_credentials: bool) -> Request {
    let mut headers = vec![format!("Contact: <sip:{}@198.18.0.50:5060>", 1000 + phone)];
    if with_credentials {
        headers.push(format!(
            "Authorization: Digest username=\"{0}\", realm=\"{DOMAIN}\", nonce=\"n\", uri=\"sip:{DOMAIN}\", response=\"r\"",
            1000 + phone
        ));
    }
    Request {
        method: "REGISTER",
        uri: format!("sip:{DOMAIN}"),
        headers,
    }
}

/// 50 phones behind [`OFFICE`], starting evenly within `within`: cold-booting
/// (REGISTER, its answer to the challenge, 5 BLF SUBSCRIBEs), or re-registering
/// (REGISTER and the answer).
fn office(within: Duration, cold_boot: bool) -> Vec<Agent> {
    (0..PHONES)
        .map(|phone| {
            let mut steps = vec![vec![register(phone, false)], vec![register(phone, true)]];
            if cold_boot {
                steps.push(
                    (0..5)
                        .map(|key| Request {
                            method: "SUBSCRIBE",
                            uri: format!("sip:{}@{DOMAIN}", 1000 + (phone + key + 1) % PHONES),
                            headers: vec!["Event: dialog".into()],
                        })
                        .collect(),
                );
            }
            Agent {
                source: OFFICE,
                steps,
                starts_after: within * phone as u32 / PHONES as u32,
            }
        })
        .collect()
}

/// A PBX on [`TRUNK`] qualifying 2,000 extensions with OPTIONS within a second.
fn pbx_qualifying() -> Vec<Agent> {
    (0..EXTENSIONS)
        .map(|extension| Agent {
            source: TRUNK,
            steps: vec![vec![Request {
                method: "OPTIONS",
                uri: format!("sip:{}@{DOMAIN}", 2000 + extension),
                headers: Vec::new(),
            }]],
            starts_after: Duration::from_secs(1) * extension as u32 / EXTENSIONS as u32,
        })
        .collect()
}

/// REGISTERs from [`FLOODER`], 1,000 a second for 2 s, not waiting for answers: how
/// many passed, and the bans left.
fn flood(settings: &Settings) -> (usize, Vec<String>) {
    let mut replayer = replayer(settings);
    let request = register(0, false);
    let started = Instant::now();
    let mut passed = 0;
    for sent in 0..2000u32 {
        let at = started + Duration::from_millis(u64::from(sent));
        if let Some(wait) = at.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        if passes(&mut replayer, FLOODER, &request) {
            passed += 1;
        }
    }
    (passed, banned(&replayer, settings))
}

fn seconds(time: Option<Duration>) -> String {
    time.map_or("-".into(), |t| format!("{:.2} s", t.as_secs_f64()))
}

/// Runs every scenario under `settings` (named `name` in the output), prints what
/// happened, and returns the goals missed.
fn judge_defaults(name: &str, settings: &Settings) -> Vec<String> {
    let office_address = Ipv4Addr::from(OFFICE).to_string();
    let trunk_address = Ipv4Addr::from(TRUNK).to_string();
    let mut failures = Vec::new();
    for (scenario, within, cold_boot) in [
        ("cold boot, all at once", Duration::ZERO, true),
        ("cold boot within 2 s", Duration::from_secs(2), true),
        (
            "re-registration within 10 s",
            Duration::from_secs(10),
            false,
        ),
    ] {
        let outcome = closed_loop(settings, &office(within, cold_boot));
        let registered = Outcome::count(&outcome.registered);
        let finished = Outcome::count(&outcome.finished);
        println!(
            "{name}: office of {PHONES}, {scenario}: {registered}/{PHONES} registered (last at {}), {finished}/{PHONES} done (last at {}); {} requests sent, {} dropped, {} timed out; banned: {:?}",
            seconds(Outcome::last(&outcome.registered)),
            seconds(Outcome::last(&outcome.finished)),
            outcome.sent,
            outcome.dropped,
            outcome.timed_out,
            outcome.banned
        );
        if finished < PHONES
            || Outcome::last(&outcome.finished).is_none_or(|last| last > OFFICE_DEADLINE)
        {
            failures.push(format!(
                "{name}: office, {scenario}: {finished}/{PHONES} done within {OFFICE_DEADLINE:?}"
            ));
        }
        if outcome.banned.contains(&office_address) {
            failures.push(format!(
                "{name}: office, {scenario}: its address was banned"
            ));
        }
    }

    let outcome = closed_loop(settings, &pbx_qualifying());
    let qualified = Outcome::count(&outcome.finished);
    println!(
        "{name}: PBX on an allow-listed trunk qualifying {EXTENSIONS} extensions within 1 s: {qualified}/{EXTENSIONS} answered (last at {}); {} dropped; banned: {:?}",
        seconds(Outcome::last(&outcome.finished)),
        outcome.dropped,
        outcome.banned
    );
    if qualified < EXTENSIONS || outcome.banned.contains(&trunk_address) {
        failures.push(format!(
            "{name}: PBX: {qualified}/{EXTENSIONS} qualified, banned: {:?}",
            outcome.banned
        ));
    }

    let (passed, banned) = flood(settings);
    println!(
        "{name}: REGISTER flood, 1000/s for 2 s from one address: {passed} of 2000 passed; banned: {banned:?}"
    );
    if passed > FLOOD_PASSED_AT_MOST {
        failures.push(format!(
            "{name}: flood: {passed} of 2000 passed (at most {FLOOD_PASSED_AT_MOST})"
        ));
    }
    failures
}

/// Trusts the PBX's trunk and serves the lab's domain; everything else as given.
fn site(mut settings: Settings) -> Settings {
    settings.domains = vec![DOMAIN.into()];
    settings.allow = vec![IpNet::from(IpAddr::from(TRUNK))];
    settings
}

#[test]
fn built_in_defaults_and_the_example_let_offices_in_and_floods_out() {
    if !privileged("built_in_defaults_and_the_example_let_offices_in_and_floods_out") {
        return;
    }
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/sip-filter.toml");
    let mut shipped = config::load(&example).unwrap_or_else(|e| panic!("{e}"));
    // Enforcing, as an operator runs it once past a first look in dry-run.
    shipped.dry_run = false;
    let mut failures = judge_defaults("built-in defaults", &site(Settings::default()));
    failures.extend(judge_defaults("shipped example", &site(shipped)));
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// What one source sent in [`answers_timeline`] and what became of it.
#[derive(Debug, Default)]
struct Tally {
    sent: usize,
    passed: usize,
    /// Passed after the flood's first 2 s (its burst spent).
    passed_late: usize,
    sent_late: usize,
}

/// The answers class (issue 19, class 8) over 20 s, in real time: an office of 50
/// phones behind [`OFFICE`] sends what its server makes it send, compressed (the server
/// qualifies every 5 s where real ones do every 30 to 60 s), and two addresses flood
/// answers at 300/s for 6 s meanwhile, one with `200 OK`s, one with STUN binding
/// requests. The office's timeline, per phone unless said:
/// - 0 s, after a power cut: the answers to the server's qualify OPTIONS, its MWI NOTIFY
///   and the first NOTIFY of 5 BLF subscriptions (7, so 350 at once);
/// - a keep-alive every 15 to 30 s (15 + phone % 16), the first at phone x 0.3 s; CRLF
///   from even phones, STUN from odd ones;
/// - 5, 10 and 15 s: the answer to a qualify round (50 at once);
/// - 8 s: a call to a ring group of all 50 (50 `180 Ringing`), 12 s: one answers
///   (`200 OK`), the others' `200 OK`s to the CANCEL and `487`s (99 at once);
/// - every second from 1.5 s: 10 answers to BLF NOTIFYs of calls (10 at once).
fn answers_timeline() -> Vec<(Duration, [u8; 4], Vec<u8>)> {
    let ms = Duration::from_millis;
    let ok = |method| sip_response(200, "OK", method);
    let mut events = Vec::new();
    for _ in 0..PHONES {
        events.push((Duration::ZERO, OFFICE, ok("OPTIONS")));
        events.extend((0..6).map(|_| (Duration::ZERO, OFFICE, ok("NOTIFY"))));
    }
    for phone in 0..PHONES {
        let keepalive = if phone % 2 == 0 {
            crlf_keepalive()
        } else {
            stun_binding_request()
        };
        let mut at = ms(300 * phone as u64);
        while at < Duration::from_secs(20) {
            events.push((at, OFFICE, keepalive.clone()));
            at += Duration::from_secs(15 + phone as u64 % 16);
        }
    }
    for round in [5, 10, 15] {
        events.extend((0..PHONES).map(|_| (Duration::from_secs(round), OFFICE, ok("OPTIONS"))));
    }
    events.extend((0..PHONES).map(|_| {
        (
            Duration::from_secs(8),
            OFFICE,
            sip_response(180, "Ringing", "INVITE"),
        )
    }));
    events.push((Duration::from_secs(12), OFFICE, ok("INVITE")));
    for _ in 1..PHONES {
        events.push((Duration::from_secs(12), OFFICE, ok("CANCEL")));
        events.push((
            Duration::from_secs(12),
            OFFICE,
            sip_response(487, "Request Terminated", "INVITE"),
        ));
    }
    for second in 1..20 {
        events.extend((0..10).map(|_| (ms(1000 * second + 500), OFFICE, ok("NOTIFY"))));
    }
    // The floods: 300/s from 2 s to 8 s.
    for n in 0..1800u64 {
        let at = Duration::from_secs(2) + ms(n * 10 / 3);
        events.push((at, FLOODER, ok("OPTIONS")));
        events.push((at, STUN_FLOODER, stun_binding_request()));
    }
    // Stable: what is due at once keeps its order.
    events.sort_by_key(|(at, _, _)| *at);
    events
}

/// Runs [`answers_timeline`] under `settings` (named `name`); returns the goals missed.
fn judge_answers(name: &str, settings: &Settings) -> Vec<String> {
    let mut replayer = replayer(settings);
    let mut tallies: Vec<([u8; 4], Tally)> = [OFFICE, FLOODER, STUN_FLOODER]
        .into_iter()
        .map(|source| (source, Tally::default()))
        .collect();
    let started = Instant::now();
    let late = Duration::from_secs(4);
    for (at, source, payload) in answers_timeline() {
        if let Some(wait) = (started + at).checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let frame = udp4_from(source, SIP_PORT, &payload);
        let verdict = replayer
            .judge(&frame)
            .expect("the program runs")
            .expect("the frame is judged");
        let passed = match verdict.action {
            Action::Pass => true,
            Action::Drop => false,
            Action::Other(action) => panic!("XDP action {action}"),
        };
        let Some((_, tally)) = tallies.iter_mut().find(|(s, _)| *s == source) else {
            continue;
        };
        tally.sent += 1;
        tally.passed += usize::from(passed);
        if at >= late {
            tally.sent_late += 1;
            tally.passed_late += usize::from(passed);
        }
    }
    let bans = banned(&replayer, settings);
    let mut failures = Vec::new();
    for (source, tally) in &tallies {
        let address = Ipv4Addr::from(*source).to_string();
        println!(
            "{name}: answers from {address}: {} of {} passed ({} of {} after 4 s); banned: {}",
            tally.passed,
            tally.sent,
            tally.passed_late,
            tally.sent_late,
            bans.contains(&address)
        );
        if bans.contains(&address) {
            failures.push(format!("{name}: {address} banned for answers"));
        }
        if *source == OFFICE {
            if tally.passed != tally.sent {
                failures.push(format!(
                    "{name}: office: {} of its {} answers and keep-alives dropped",
                    tally.sent - tally.passed,
                    tally.sent
                ));
            }
        } else {
            // The built-in bucket (burst 400, 50/s) passes about 400 + 6 x 50 = 700 of
            // 1800, and 50/s of 300/s once its burst is spent: a sixth.
            if tally.passed > 760 || tally.passed_late * 5 > tally.sent_late {
                failures.push(format!(
                    "{name}: flood from {address}: {} of {} passed, {} of {} after 4 s",
                    tally.passed, tally.sent, tally.passed_late, tally.sent_late
                ));
            }
        }
    }
    failures
}

#[test]
fn answers_of_an_office_pass_and_floods_of_answers_are_cut() {
    if !privileged("answers_of_an_office_pass_and_floods_of_answers_are_cut") {
        return;
    }
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/sip-filter.toml");
    let mut shipped = config::load(&example).unwrap_or_else(|e| panic!("{e}"));
    shipped.dry_run = false;
    let mut failures = judge_answers("built-in defaults", &site(Settings::default()));
    failures.extend(judge_answers("shipped example", &site(shipped)));
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
