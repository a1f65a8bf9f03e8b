//! `cargo xtask demo`: sip-filter against real attack tools and a real SIP server, in
//! about a minute, leaving nothing behind.
//!
//! The attack lab (`sip_filter_tests::gateway`): an attacker host (198.18.1.10-14,
//! 2001:db8:5f:1::66) and a legitimate client (198.18.1.50) outside, a gateway, and
//! Kamailio behind it (198.18.2.2) as a registrar with digest authentication. The same
//! round runs twice, without the filter and with `sip-filter run --iface gw-outside` on
//! the gateway: svmap scans (IPv4 and IPv6), svwar guesses extensions, svcrack guesses
//! a password, a password guesser with a phone's User-Agent (sipp, 198.18.1.15) guesses
//! it too, under the rate limits, then two sipp floods run while the legitimate client
//! registers and calls. A table compares the two rounds: what reached Kamailio (its own log), what
//! each scanner learned, the legitimate success rate, the bans and the counters.
//!
//! Exit status: 0 when the filter did its job (scanners and the guesser learned nothing,
//! the guesser was banned for its failed passwords, every
//! legitimate registration and call succeeded, everything cleaned up), 1 when not (with
//! why), 2 without root, 130 on Ctrl-C (after cleaning up: running commands are cut
//! short, the lab's processes stopped, its namespaces and pins removed).
//! `cargo run -p sip-filter-tests --bin demo`, as root.

use std::{
    collections::BTreeMap,
    fmt::Display,
    path::Path,
    process::ExitCode,
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use anyhow::Context;
use ipnet::IpNet;
use serde_json::Value;
use sip_filter_tests::{
    attack::{
        add_guesser_address, call_scenario, extensions_found, filter_json, gateway_metrics,
        guess_password, guesses_accepted, legit_sipp, passwords_found, register_scenario,
        requests_seen, role, seen_from, sipp_outcome, start_flood, start_gateway_filter,
        start_registrar, svcrack, svmap, svmap_scan, svwar, ALICE, BOB, FLOOD_V4,
        GATEWAY_METRICS_ADDR, GUESSER_RATE, GUESSER_V4, SVCRACK_V4, SVMAP_V4, SVMAP_V6,
        SVWAR_RANGE, SVWAR_V4, WEAK, WORDLIST,
    },
    auth_lab::ORDINARY_USER_AGENT,
    gateway::{GatewayLab, Node, LEGIT_V4, OUTSIDE_IFACE, SERVER_V4, SERVER_V6},
    lab::{
        require_tools, sample_sum, sip_filter_binary, stats_json, stop_filter_in, PinRoot, Scan,
        TempDir, DOMAIN, LAB_TOOLS, SIP_PORT,
    },
    netns::{interrupt, listed_namespaces, Finished, SIGINT},
};

/// The flood: from each of its two sources, this many REGISTERs at this rate.
const FLOOD_CALLS: u32 = 3000;
const FLOOD_RATE: u32 = 500;
/// The legitimate client: registrations per account, calls, each at this rate.
const LEGIT_REGISTRATIONS: u32 = 5;
const LEGIT_CALLS: u32 = 5;
const LEGIT_RATE: u32 = 2;

fn main() -> ExitCode {
    // SAFETY: geteuid has no preconditions.
    if unsafe { geteuid() } != 0 {
        eprintln!(
            "error: the demo needs root: it creates network namespaces and attaches an XDP \
             program.\nRun it as root: sudo cargo xtask demo"
        );
        return ExitCode::from(2);
    }
    stop_at_ctrl_c();
    let clock = Clock(Instant::now());
    match demo(&clock) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(_) if INTERRUPTED.load(Ordering::Relaxed) => {
            eprintln!("interrupted: the lab is removed");
            ExitCode::from(130)
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// Runs the demo; false when the filter did not behave as it should (already said why).
fn demo(clock: &Clock) -> anyhow::Result<bool> {
    println!(
        "sip-filter demo: sipvicious (svmap, svwar, svcrack), a password guesser with a\n\
         phone's User-Agent and a sipp flood against a SIP registrar (Kamailio, digest\n\
         authentication) behind a gateway, while a legitimate client registers and calls:\n\
         first without sip-filter, then with it on the gateway.\n"
    );
    require_tools(&[LAB_TOOLS, &["svwar", "svcrack", "sysctl"]].concat())?;
    clock.say("building sip-filter");
    let binary = sip_filter_binary(true)?;
    check_interrupted()?;

    clock.say(format!(
        "starting the lab: attacker hosts (svmap {SVMAP_V4} and {SVMAP_V6}, svwar \
         {SVWAR_V4}, svcrack {SVCRACK_V4}, password guesser {GUESSER_V4}, sipp flood {} and \
         {}), legitimate client \
         ({LEGIT_V4}), gateway, server ({SERVER_V4}, {SERVER_V6})",
        FLOOD_V4[0], FLOOD_V4[1]
    ));
    // Dropped in reverse on an early return: processes, then pins, files, namespaces.
    let lab = GatewayLab::new().context("building the lab")?;
    add_guesser_address(&lab)?;
    let namespaces = lab.names();
    let dir = TempDir::new("demo");
    let pins = PinRoot::new("demo");
    let pin_dir = pins.link_pin(OUTSIDE_IFACE);

    let open = Round::run(clock, &lab, dir.path(), "without the filter", "open")?;

    clock.say(format!(
        "attaching the filter on the gateway: sip-filter run --iface {OUTSIDE_IFACE} --config \
         sip-filter.toml (domain {DOMAIN}, REGISTER and INVITE 5/s per source)"
    ));
    let (mut daemon, attached) = start_gateway_filter(&lab, binary, &pins, dir.path())?;
    // The log line's message alone: `ts=... level=info target=... msg="sip-filter attached to ..." iface=...`.
    let attached = attached
        .split_once("msg=\"")
        .and_then(|(_, rest)| rest.split_once('"'))
        .map_or(&*attached, |(message, _)| message);
    clock.say(attached);
    check_interrupted()?;

    let filtered = Round::run(clock, &lab, dir.path(), "with the filter", "filtered")?;

    clock.say("reading the filter's counters and bans: sip-filter stats --json, block list --json");
    let stats = stats_json(&filter_json(&lab, binary, &pins, &["stats"]))?;
    let bans = filter_json(&lab, binary, &pins, &["block", "list"]);
    let bans: Vec<Value> = serde_json::from_str(&bans.stdout)
        .with_context(|| format!("block list --json is not a JSON array:\n{bans}"))?;
    clock.say(format!(
        "scraping the filter's Prometheus exporter: GET http://{GATEWAY_METRICS_ADDR}/metrics"
    ));
    let metrics = gateway_metrics(&lab)?;
    check_interrupted()?;

    clock.say("stopping the filter (SIGINT) and removing the lab");
    let stopped = stop_filter_in(lab.ns(Node::Gateway), OUTSIDE_IFACE, &mut daemon, &pin_dir);
    drop(daemon);
    let left = lab.pids();
    let pin_root = pins.path().to_path_buf();
    drop(pins);
    drop(lab);
    let tmp = dir.path().to_path_buf();
    drop(dir);
    let listed = listed_namespaces();

    println!();
    print_table(&open, &filtered, &stats, &bans, &metrics);
    println!();

    let mut problems = Problems::default();
    open.expect_attacks_worked(&mut problems);
    filtered.expect_attacks_failed(&mut problems);
    if !bans
        .iter()
        .any(|ban| ban["address"] == GUESSER_V4 && ban["reason"] == "auth")
    {
        problems.add(
            "the password guesser was not banned for its failed passwords (reason auth)",
            format!("{bans:?}"),
        );
    }
    for round in [&open, &filtered] {
        round.expect_legit_served(&mut problems);
    }
    if let Err(e) = stopped {
        problems.add("the filter did not stop cleanly", format!("{e:#}"));
    }
    if !left.is_empty() {
        problems.add("processes were left in the lab", format!("{left:?}"));
    }
    if let Some(ns) = namespaces.iter().find(|ns| listed.contains(ns)) {
        problems.add("a namespace is left", ns);
    }
    for path in [pin_root, tmp] {
        if path.exists() {
            problems.add("a directory is left", path.display());
        }
    }

    if problems.0.is_empty() {
        println!(
            "sip-filter did its job: the scanners learned nothing, the password guesser was\n\
             locked out of the account after 5 failed passwords and banned, the flood was cut\n\
             to its sources' rate and banned, every legitimate registration and call succeeded; the\n\
             filter detached and the lab is gone ({:.1} s).\n\
             Next, on a real interface: sudo sip-filter run --iface eth0 --domain YOUR.DOMAIN\n\
             (README.md, \"Using it\").",
            clock.seconds()
        );
        Ok(true)
    } else {
        println!("FAILED: sip-filter did not behave as it should:");
        for (what, _) in &problems.0 {
            println!("  - {what}");
        }
        for (what, details) in &problems.0 {
            println!("\n===== {what} =====\n{}", details.trim_end());
        }
        Ok(false)
    }
}

/// One round: the scanners, then the flood with the legitimate client beside it.
struct Round {
    /// "without the filter", "with the filter".
    when: &'static str,
    svmap_v4: Finished,
    scan_v4: Scan,
    svmap_v6: Finished,
    scan_v6: Scan,
    svwar: Finished,
    svcrack: Finished,
    /// The password guesser with a phone's User-Agent.
    guesser: Finished,
    registrations: Vec<Finished>,
    calls: Finished,
    /// What Kamailio logged receiving: per source, per method.
    seen: BTreeMap<String, BTreeMap<String, u64>>,
}

impl Round {
    fn run(
        clock: &Clock,
        lab: &GatewayLab,
        dir: &Path,
        when: &'static str,
        tag: &str,
    ) -> anyhow::Result<Round> {
        clock.say(format!(
            "{when}: starting Kamailio on {SERVER_V4}:{SIP_PORT}"
        ));
        let kamailio = start_registrar(lab, &dir.join(format!("kamailio-{tag}")))?;
        check_interrupted()?;

        clock.say(format!(
            "{when}: svmap {SERVER_V4} from {SVMAP_V4}, svmap -6 {SERVER_V6} from {SVMAP_V6}"
        ));
        let svmap_v4 = svmap(lab, SVMAP_V4);
        let svmap_v6 = svmap(lab, SVMAP_V6);
        check_interrupted()?;
        clock.say(format!(
            "{when}: svwar, extensions {SVWAR_RANGE}, from {SVWAR_V4}"
        ));
        let svwar = svwar(lab);
        check_interrupted()?;
        clock.say(format!(
            "{when}: svcrack, {} passwords for extension {}, from {SVCRACK_V4}",
            WORDLIST.len(),
            WEAK.extension
        ));
        let svcrack = svcrack(lab, dir, WEAK.extension);
        check_interrupted()?;
        clock.say(format!(
            "{when}: a password guesser with a phone's User-Agent ({ORDINARY_USER_AGENT}): \
             sipp, {} passwords for extension {} at {GUESSER_RATE}/s (under the REGISTER \
             limit), from {GUESSER_V4}",
            WORDLIST.len(),
            WEAK.extension
        ));
        let guesser = guess_password(lab, dir, &format!("guesser-{tag}"))?;
        check_interrupted()?;

        clock.say(format!(
            "{when}: sipp flood, {FLOOD_CALLS} REGISTERs at {FLOOD_RATE}/s from each of {} and \
             {}; meanwhile the legitimate client registers {} and {} ({LEGIT_REGISTRATIONS} \
             times each) and {} calls {} ({LEGIT_CALLS} calls)",
            FLOOD_V4[0],
            FLOOD_V4[1],
            ALICE.extension,
            BOB.extension,
            ALICE.extension,
            BOB.extension
        ));
        let floods = FLOOD_V4
            .iter()
            .enumerate()
            .map(|(i, from)| {
                start_flood(
                    lab,
                    dir,
                    &format!("flood{i}-{tag}"),
                    from,
                    FLOOD_CALLS,
                    FLOOD_RATE,
                )
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let mut registrations = Vec::new();
        for account in [ALICE, BOB] {
            registrations.push(legit_sipp(
                lab,
                dir,
                &format!("register-{}-{tag}", account.extension),
                &register_scenario(account),
                LEGIT_REGISTRATIONS,
                LEGIT_RATE,
            ));
            check_interrupted()?;
        }
        let calls = legit_sipp(
            lab,
            dir,
            &format!("calls-{tag}"),
            &call_scenario(ALICE, BOB),
            LEGIT_CALLS,
            LEGIT_RATE,
        );
        check_interrupted()?;
        let flood_time = Duration::from_secs(u64::from(FLOOD_CALLS / FLOOD_RATE) + 10);
        for mut flood in floods {
            if flood.wait(flood_time).is_none() {
                anyhow::bail!("the flood did not end in {flood_time:?}:\n{}", flood.log());
            }
        }
        let seen = requests_seen(&kamailio.log());
        drop(kamailio);
        Ok(Round {
            when,
            scan_v4: svmap_scan(&svmap_v4, false),
            svmap_v4,
            scan_v6: svmap_scan(&svmap_v6, true),
            svmap_v6,
            svwar,
            svcrack,
            guesser,
            registrations,
            calls,
            seen,
        })
    }

    fn reached(&self, who: &str) -> String {
        seen_from(&self.seen, who).to_string()
    }

    fn reached_total(&self) -> String {
        let total: u64 = self.seen.values().flat_map(|m| m.values()).sum();
        total.to_string()
    }

    fn extensions(&self) -> Vec<String> {
        extensions_found(&self.svwar)
    }

    fn passwords(&self) -> Vec<String> {
        passwords_found(&self.svcrack)
    }

    fn registrations(&self) -> (u64, u64) {
        self.registrations
            .iter()
            .map(sipp_outcome)
            .fold((0, 0), |(ok, all), (o, a)| (ok + o, all + a))
    }

    fn expect_attacks_worked(&self, problems: &mut Problems) {
        for (family, scan, svmap) in [
            ("IPv4", &self.scan_v4, &self.svmap_v4),
            ("IPv6", &self.scan_v6, &self.svmap_v6),
        ] {
            if !scan.found {
                problems.add(
                    format!(
                        "{}, svmap ({family}) did not find the server: the lab is not working",
                        self.when
                    ),
                    svmap,
                );
            }
        }
        let extensions = self.extensions();
        if ![ALICE, BOB, WEAK]
            .iter()
            .all(|a| extensions.iter().any(|e| e == a.extension))
        {
            problems.add(
                format!(
                    "{}, svwar did not find the three extensions: the lab is not working",
                    self.when
                ),
                &self.svwar,
            );
        }
        let cracked = format!("{}:{}", WEAK.extension, WEAK.password);
        if self.passwords() != [cracked] {
            problems.add(
                format!(
                    "{}, svcrack did not find the weak password: the lab is not working",
                    self.when
                ),
                &self.svcrack,
            );
        }
        if guesses_accepted(&self.guesser) == 0 {
            problems.add(
                format!(
                    "{}, the password guesser did not find the weak password: the lab is not \
                     working",
                    self.when
                ),
                &self.guesser,
            );
        }
    }

    fn expect_attacks_failed(&self, problems: &mut Problems) {
        for (family, scan, svmap) in [
            ("IPv4", &self.scan_v4, &self.svmap_v4),
            ("IPv6", &self.scan_v6, &self.svmap_v6),
        ] {
            if scan.found || scan.answers > 0 || scan.probes == 0 {
                problems.add(
                    format!(
                        "{}, svmap ({family}) was not stopped (probes {}, answers {})",
                        self.when, scan.probes, scan.answers
                    ),
                    svmap,
                );
            }
        }
        if !self.extensions().is_empty() {
            problems.add(
                format!("{}, svwar found extensions", self.when),
                &self.svwar,
            );
        }
        if !self.passwords().is_empty() {
            problems.add(
                format!("{}, svcrack found a password", self.when),
                &self.svcrack,
            );
        }
        if guesses_accepted(&self.guesser) > 0 {
            problems.add(
                format!("{}, the password guesser found the password", self.when),
                &self.guesser,
            );
        }
        for who in ["svmap", "svwar", "svcrack"] {
            let reached = seen_from(&self.seen, who);
            if reached > 0 {
                problems.add(
                    format!(
                        "{}, {reached} request(s) of {who} reached Kamailio",
                        self.when
                    ),
                    format!("{:?}", self.seen),
                );
            }
        }
    }

    fn expect_legit_served(&self, problems: &mut Problems) {
        for finished in self.registrations.iter().chain([&self.calls]) {
            let (ok, all) = sipp_outcome(finished);
            if !finished.success() || ok != all || all == 0 {
                problems.add(
                    format!("{}, legitimate sipp: {ok} of {all} succeeded", self.when),
                    finished,
                );
            }
        }
    }
}

fn rate((ok, all): (u64, u64)) -> String {
    if all == 0 {
        return "none made".to_string();
    }
    #[allow(clippy::cast_precision_loss)]
    let percent = ok as f64 * 100.0 / all as f64;
    format!("{ok}/{all} ({percent:.0}%)")
}

fn svmap_cell(scan: &Scan) -> String {
    match (scan.found, &scan.user_agent) {
        (true, Some(agent)) => format!("found: {agent}"),
        (true, None) => "found (no User-Agent)".to_string(),
        (false, _) => format!(
            "nothing ({} probe{}, {} answer{})",
            scan.probes,
            if scan.probes == 1 { "" } else { "s" },
            scan.answers,
            if scan.answers == 1 { "" } else { "s" }
        ),
    }
}

fn list_or_nothing(items: Vec<String>) -> String {
    if items.is_empty() {
        "nothing".to_string()
    } else {
        items.join(", ")
    }
}

/// Who a ban is on: the role of the lab address inside the banned address or prefix.
fn ban_role(address: &str) -> &'static str {
    let Ok(banned) = address
        .parse::<IpNet>()
        .or_else(|_| address.parse::<std::net::IpAddr>().map(IpNet::from))
    else {
        return "other";
    };
    [
        SVMAP_V4,
        SVMAP_V6,
        SVWAR_V4,
        SVCRACK_V4,
        GUESSER_V4,
        FLOOD_V4[0],
        FLOOD_V4[1],
        LEGIT_V4,
    ]
    .into_iter()
    .find(|a| {
        a.parse::<std::net::IpAddr>()
            .is_ok_and(|ip| banned.contains(&ip))
    })
    .map_or("other", role)
}

/// `reason: who address, ...` per ban reason, from `block list --json`.
fn bans_by_reason(bans: &[Value]) -> Vec<String> {
    let mut by_reason: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for ban in bans {
        let address = ban["address"].as_str().unwrap_or("?");
        let reason = ban["reason"].as_str().unwrap_or("?");
        by_reason
            .entry(reason.to_string())
            .or_default()
            .push(format!("{address} ({})", ban_role(address)));
    }
    by_reason
        .into_iter()
        .map(|(reason, who)| format!("{reason}: {}", who.join(", ")))
        .collect()
}

/// The counters of `group` in `stats --json` that are not zero: `name count`.
fn nonzero(stats: &Value, group: &str) -> Vec<String> {
    match &stats[group] {
        Value::Object(counters) => counters
            .iter()
            .filter_map(|(name, count)| Some((name, count.as_u64()?)))
            .filter(|(_, count)| *count > 0)
            .map(|(name, count)| format!("{name} {count}"))
            .collect(),
        _ => Vec::new(),
    }
}

/// The two rounds side by side, then what the filter did in the second.
fn print_table(open: &Round, filtered: &Round, stats: &Value, bans: &[Value], metrics: &str) {
    let both =
        |label: &str, f: &dyn Fn(&Round) -> String| vec![label.to_string(), f(open), f(filtered)];
    let only = |label: &str, value: String| vec![label.to_string(), "-".to_string(), value];
    let mut rows: Vec<Vec<String>> = vec![
        vec![
            String::new(),
            "without sip-filter".to_string(),
            "with sip-filter".to_string(),
        ],
        both("requests that reached Kamailio", &|r| r.reached_total()),
        both("  from svmap (IPv4 + IPv6)", &|r| r.reached("svmap")),
        both("  from svwar", &|r| r.reached("svwar")),
        both("  from svcrack", &|r| r.reached("svcrack")),
        both("  from the password guesser", &|r| {
            r.reached("password guesser")
        }),
        both("  from the sipp flood", &|r| r.reached("sipp flood")),
        both("  from the legitimate client", &|r| r.reached("legitimate")),
        both("svmap learned (IPv4)", &|r| svmap_cell(&r.scan_v4)),
        both("svmap learned (IPv6)", &|r| svmap_cell(&r.scan_v6)),
        both("svwar: extensions found", &|r| {
            list_or_nothing(r.extensions())
        }),
        both("svcrack: passwords found", &|r| {
            list_or_nothing(r.passwords())
        }),
        both(
            "password guesser: password found",
            &|r| match guesses_accepted(&r.guesser) {
                0 => "nothing".to_string(),
                _ => format!("{}:{}", WEAK.extension, WEAK.password),
            },
        ),
        both("legitimate registrations", &|r| rate(r.registrations())),
        both("legitimate calls", &|r| rate(sipp_outcome(&r.calls))),
    ];
    let bans = bans_by_reason(bans);
    for (i, ban) in bans.iter().enumerate() {
        rows.push(only(
            if i == 0 {
                "banned (reason: source)"
            } else {
                ""
            },
            ban.clone(),
        ));
    }
    if bans.is_empty() {
        rows.push(only("banned (reason: source)", "nothing".to_string()));
    }
    rows.push(only(
        "filter: packets dropped / passed",
        format!(
            "{} / {}",
            stats["dropped"].as_u64().unwrap_or(0),
            stats["passed"].as_u64().unwrap_or(0)
        ),
    ));
    for (i, reason) in nonzero(stats, "reasons").into_iter().enumerate() {
        rows.push(only(if i == 0 { "filter: by reason" } else { "" }, reason));
    }
    rows.push(only(
        "filter: bans added",
        list_or_nothing(nonzero(stats, "bans_added")),
    ));
    let series = [
        (
            "sip_filter_packets_total{verdict=\"drop\"}",
            sample_sum(metrics, "sip_filter_packets_total", &["verdict=\"drop\""]).unwrap_or(0),
        ),
        (
            "sip_filter_packets_total{reason=\"drop_scanner\"}",
            sample_sum(
                metrics,
                "sip_filter_packets_total",
                &["reason=\"drop_scanner\""],
            )
            .unwrap_or(0),
        ),
        (
            "sip_filter_packets_total{reason=\"drop_rate_limited\"}",
            sample_sum(
                metrics,
                "sip_filter_packets_total",
                &["reason=\"drop_rate_limited\""],
            )
            .unwrap_or(0),
        ),
        (
            "sip_filter_bans_active",
            sample_sum(metrics, "sip_filter_bans_active", &[]).unwrap_or(0),
        ),
    ];
    for (i, (series, value)) in series.iter().enumerate() {
        rows.push(only(
            if i == 0 { "Prometheus (/metrics)" } else { "" },
            format!("{series} {value}"),
        ));
    }

    let width = |column: usize| {
        rows.iter()
            .map(|row| row[column].chars().count())
            .max()
            .unwrap_or(0)
    };
    let (first, second) = (width(0), width(1));
    for (i, row) in rows.iter().enumerate() {
        println!("{:<first$} | {:<second$} | {}", row[0], row[1], row[2]);
        if i == 0 {
            println!(
                "{}-+-{}-+-{}",
                "-".repeat(first),
                "-".repeat(second),
                "-".repeat(width(2))
            );
        }
    }
}

/// What went wrong, each with the output that shows it.
#[derive(Default)]
struct Problems(Vec<(String, String)>);

impl Problems {
    fn add(&mut self, what: impl Into<String>, details: impl Display) {
        self.0.push((what.into(), details.to_string()));
    }
}

/// Progress lines, with the seconds since the start.
struct Clock(Instant);

impl Clock {
    fn seconds(&self) -> f64 {
        self.0.elapsed().as_secs_f64()
    }

    fn say(&self, what: impl Display) {
        println!("[{:>5.1} s] {what}", self.seconds());
    }
}

/// Ctrl-C: the command running is cut short ([`interrupt`]), the demo stops at its
/// next step and its lab is removed as it unwinds (the lab's processes run in process
/// groups of their own, so the terminal's SIGINT does not reach them).
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

fn check_interrupted() -> anyhow::Result<()> {
    if INTERRUPTED.load(Ordering::Relaxed) {
        anyhow::bail!("interrupted");
    }
    Ok(())
}

extern "C" fn on_sigint(_signal: i32) {
    INTERRUPTED.store(true, Ordering::Relaxed);
    interrupt();
}

fn stop_at_ctrl_c() {
    // SAFETY: the handler only stores to atomics, which is async-signal-safe.
    unsafe {
        signal(SIGINT, on_sigint);
    }
}

extern "C" {
    fn geteuid() -> u32;
    fn signal(signal: i32, handler: extern "C" fn(i32)) -> usize;
}
