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
    packets::{sip_request, udp4_from, SIP_PORT},
    privileged,
};

const DOMAIN: &str = "pbx.example.test";
const OFFICE: [u8; 4] = [198, 18, 0, 50];
const TRUNK: [u8; 4] = [198, 18, 0, 60];
const FLOODER: [u8; 4] = [198, 18, 0, 66];
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
